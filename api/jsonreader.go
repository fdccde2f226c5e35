package api

// JSONReader decodes JSON documents that carry objects and trees, such as
// the API's answers ({"op": ..., "object": {...}}) and watch events,
// without reflection, for decoders of such documents outside this
// package. Each method reads one value where the reader stands, as
// encoding/json decodes it into the Go type the method names, and returns
// false on anything it does not handle: bad JSON, and also what
// encoding/json would take that the method does not (a differently cased
// or unknown field of an Object, a lone surrogate). After false the
// reader is spent: the caller decodes the whole document with
// encoding/json instead, as UnmarshalObject does, so that the result,
// errors included, is always encoding/json's.
type JSONReader struct{ d treeDecoder }

// NewJSONReader returns a reader at the start of data. What it decodes
// does not hold on to data.
func NewJSONReader(data []byte) JSONReader { return JSONReader{d: treeDecoder{data: data}} }

// Members reads an object, calling member after each key with the reader
// at its value. null is not an object here: check Null first where it
// may come.
func (r *JSONReader) Members(member func(key []byte) bool) bool { return r.d.members(member) }

// Elements reads an array, calling elem with the reader at each element.
func (r *JSONReader) Elements(elem func() bool) bool { return r.d.elements(elem) }

// Null consumes a null if one comes next, and reports whether it did.
func (r *JSONReader) Null() bool { return r.d.peek() == 'n' && r.d.literal("null") }

// String reads a string into s; null leaves s as it is.
func (r *JSONReader) String(s *string) bool { return r.d.str(s) }

// Int reads an integer into n; null leaves n as it is.
func (r *JSONReader) Int(n *int64) bool { return r.d.int(n) }

// Object reads an Object into o, over what o holds, as encoding/json
// does; null leaves o as it is.
func (r *JSONReader) Object(o *Object) bool {
	if r.d.peek() == 'n' {
		return r.d.literal("null")
	}
	return r.d.object(o)
}

// Tree reads a JSON object into m, merging into a map already there;
// null sets m to nil.
func (r *JSONReader) Tree(m *map[string]any) bool { return r.d.tree(m) }

// End reports whether only space is left.
func (r *JSONReader) End() bool { return r.d.end() }
