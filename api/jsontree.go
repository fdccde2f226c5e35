package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Fast JSON for objects as the store keeps them.
//
// Every write encodes an object and every change is decoded again by each
// watch, and encoding/json fills a map[string]any through reflection, one
// reflect.Value per key and element. These functions read and write the
// same JSON directly: UnmarshalObject decodes what encoding/json would
// into an Object, and AppendTree encodes a JSON tree byte for byte as
// encoding/json does with HTML escaping off. Anything out of the ordinary
// (a field an Object does not have, invalid UTF-8, a lone surrogate, a
// value that is not a plain JSON tree) is left to encoding/json, so the
// result, errors included, is always encoding/json's.

// UnmarshalObject decodes a JSON object into o, as json.Unmarshal does.
func UnmarshalObject(data []byte, o *Object) error {
	*o = Object{}
	d := treeDecoder{data: data}
	if d.object(o) && d.end() {
		return nil
	}
	*o = Object{}
	return json.Unmarshal(data, o)
}

// DecodeTree decodes JSON into a generic tree (map[string]any, []any,
// string, float64, bool, nil), as json.Unmarshal into an any does.
func DecodeTree(data []byte) (any, error) {
	d := treeDecoder{data: data}
	if v, ok := d.value(); ok && d.end() {
		return v, nil
	}
	var v any
	err := json.Unmarshal(data, &v)
	return v, err
}

// treeDecoder reads JSON; each method returns false on anything it does
// not handle, and the caller falls back to encoding/json.
type treeDecoder struct {
	data  []byte
	i     int
	depth int
}

// maxDepth is encoding/json's limit of nesting; deeper input is its to
// refuse.
const maxDepth = 10000

func (d *treeDecoder) skipSpace() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *treeDecoder) end() bool {
	d.skipSpace()
	return d.i == len(d.data)
}

// next skips space and consumes c.
func (d *treeDecoder) next(c byte) bool {
	d.skipSpace()
	if d.i < len(d.data) && d.data[d.i] == c {
		d.i++
		return true
	}
	return false
}

func (d *treeDecoder) peek() byte {
	d.skipSpace()
	if d.i < len(d.data) {
		return d.data[d.i]
	}
	return 0
}

// literal consumes null, true or false.
func (d *treeDecoder) literal(s string) bool {
	if len(d.data)-d.i >= len(s) && string(d.data[d.i:d.i+len(s)]) == s {
		d.i += len(s)
		return true
	}
	return false
}

// members reads the members of an object, calling member after each key
// with the decoder at its value.
func (d *treeDecoder) members(member func(key []byte) bool) bool {
	return d.sequence('{', '}', func() bool {
		d.skipSpace()
		key, ok := d.stringBytes()
		return ok && d.next(':') && member(key)
	})
}

// elements reads the elements of an array, calling elem with the decoder
// at each.
func (d *treeDecoder) elements(elem func() bool) bool {
	return d.sequence('[', ']', elem)
}

// sequence reads an object or an array: the opening bracket, items
// separated by commas, the closing one.
func (d *treeDecoder) sequence(opening, closing byte, item func() bool) bool {
	if !d.next(opening) {
		return false
	}
	if d.depth++; d.depth > maxDepth {
		return false
	}
	defer func() { d.depth-- }()
	if d.next(closing) {
		return true
	}
	for {
		if !item() {
			return false
		}
		if d.next(',') {
			continue
		}
		return d.next(closing)
	}
}

// object decodes an Object; unknown or differently cased fields are not
// handled (encoding/json matches field names case-insensitively).
func (d *treeDecoder) object(o *Object) bool {
	return d.members(func(key []byte) bool {
		switch string(key) {
		case "kind":
			return d.str(&o.Kind)
		case "name":
			return d.str(&o.Name)
		case "namespace":
			return d.str(&o.Namespace)
		case "labels":
			return d.labels(&o.Labels)
		case "spec":
			return d.tree(&o.Spec)
		case "status":
			return d.tree(&o.Status)
		case "meta":
			return d.meta(&o.Meta)
		}
		return false
	})
}

func (d *treeDecoder) meta(m *Meta) bool {
	if d.peek() == 'n' {
		return d.literal("null")
	}
	return d.members(func(key []byte) bool {
		switch string(key) {
		case "revision":
			return d.int(&m.Revision)
		case "generation":
			return d.int(&m.Generation)
		case "created":
			return d.time(&m.Created)
		case "updated":
			return d.time(&m.Updated)
		case "owner":
			return d.str(&m.Owner)
		case "deleting":
			if d.peek() == 'n' {
				m.Deleting = nil
				return d.literal("null")
			}
			var t time.Time
			if !d.time(&t) {
				return false
			}
			m.Deleting = &t
			return true
		}
		return false
	})
}

// str decodes a string into s; null leaves s as it is.
func (d *treeDecoder) str(s *string) bool {
	switch d.peek() {
	case 'n':
		return d.literal("null")
	case '"':
		v, ok := d.string()
		*s = v
		return ok
	}
	return false
}

func (d *treeDecoder) int(n *int64) bool {
	if d.peek() == 'n' {
		return d.literal("null")
	}
	start := d.i
	if !d.number() {
		return false
	}
	v, err := strconv.ParseInt(string(d.data[start:d.i]), 10, 64)
	*n = v
	return err == nil
}

func (d *treeDecoder) time(t *time.Time) bool {
	if d.peek() != '"' {
		return false // null and the rest: encoding/json's
	}
	start := d.i
	if _, ok := d.stringBytes(); !ok {
		return false
	}
	return t.UnmarshalJSON(d.data[start:d.i]) == nil
}

func (d *treeDecoder) labels(l *map[string]string) bool {
	if d.peek() == 'n' {
		*l = nil
		return d.literal("null")
	}
	if *l == nil {
		*l = map[string]string{}
	}
	return d.members(func(key []byte) bool {
		if d.peek() != '"' {
			return false
		}
		v, ok := d.string()
		(*l)[internKey(key)] = v
		return ok
	})
}

// tree decodes an object into m (null sets nil), merging into a map
// already there as encoding/json does.
func (d *treeDecoder) tree(m *map[string]any) bool {
	if d.peek() == 'n' {
		*m = nil
		return d.literal("null")
	}
	if *m == nil {
		*m = map[string]any{}
	}
	return d.fill(*m)
}

func (d *treeDecoder) fill(m map[string]any) bool {
	return d.members(func(key []byte) bool {
		v, ok := d.value()
		m[internKey(key)] = v
		return ok
	})
}

func (d *treeDecoder) value() (any, bool) {
	switch c := d.peek(); {
	case c == '{':
		m := map[string]any{}
		return m, d.fill(m)
	case c == '[':
		l := []any{}
		ok := d.elements(func() bool {
			v, ok := d.value()
			l = append(l, v)
			return ok
		})
		return l, ok
	case c == '"':
		return d.string()
	case c == 'n':
		return nil, d.literal("null")
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == '-' || c >= '0' && c <= '9':
		start := d.i
		if !d.number() {
			return nil, false
		}
		f, err := strconv.ParseFloat(string(d.data[start:d.i]), 64)
		return f, err == nil
	}
	return nil, false
}

// number consumes a JSON number.
func (d *treeDecoder) number() bool {
	digits := func() int {
		n := 0
		for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	if d.i < len(d.data) && d.data[d.i] == '-' {
		d.i++
	}
	if d.i < len(d.data) && d.data[d.i] == '0' {
		d.i++
	} else if digits() == 0 {
		return false
	}
	if d.i < len(d.data) && d.data[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return false
		}
	}
	if d.i < len(d.data) && (d.data[d.i] == 'e' || d.data[d.i] == 'E') {
		d.i++
		if d.i < len(d.data) && (d.data[d.i] == '+' || d.data[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

func (d *treeDecoder) string() (string, bool) {
	b, ok := d.stringBytes()
	if !ok {
		return "", false
	}
	return string(b), true
}

// stringBytes consumes a string and returns its contents, unescaped; the
// bytes are the input's when there was nothing to unescape.
func (d *treeDecoder) stringBytes() ([]byte, bool) {
	if d.i >= len(d.data) || d.data[d.i] != '"' {
		return nil, false
	}
	d.i++
	start := d.i
	ascii := true
	for d.i < len(d.data) {
		switch c := d.data[d.i]; {
		case c == '"':
			s := d.data[start:d.i]
			d.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\':
			return d.unescape(start)
		case c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
		d.i++
	}
	return nil, false
}

// unescape finishes a string with escapes that began at start.
func (d *treeDecoder) unescape(start int) ([]byte, bool) {
	out := append([]byte(nil), d.data[start:d.i]...)
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			d.i++
			return out, utf8.Valid(out)
		case c < 0x20:
			return nil, false
		case c != '\\':
			out = append(out, c)
			d.i++
			continue
		}
		if d.i+1 >= len(d.data) {
			return nil, false
		}
		e := d.data[d.i+1]
		d.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return nil, false
			}
			if utf16.IsSurrogate(r) {
				// Only a valid pair; encoding/json makes a lone one U+FFFD.
				if d.i+1 >= len(d.data) || d.data[d.i] != '\\' || d.data[d.i+1] != 'u' {
					return nil, false
				}
				d.i += 2
				r2, ok := d.hex4()
				if r = utf16.DecodeRune(r, r2); !ok || r == utf8.RuneError {
					return nil, false
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, false
		}
	}
	return nil, false
}

func (d *treeDecoder) hex4() (rune, bool) {
	if d.i+4 > len(d.data) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(d.data[d.i:d.i+4]), 16, 32)
	d.i += 4
	return rune(n), err == nil
}

// internKey returns a map key as a string, the same string for the keys
// every object has, so that decoding them allocates nothing.
func internKey(b []byte) string {
	if s, ok := commonKeys[string(b)]; ok {
		return s
	}
	return string(b)
}

var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"containers", "name", "image", "resources", "cpu", "memory", "command", "args", "env",
		"phase", "node", "ip", "message", "state", "restarts", "startedAt", "exitCode", "finishedAt",
		"admission", "evicted", "reason", "at", "placement", "nodeSelector", "spread", "failover", "restart",
		"privileges", "ports", "volumes", "capacity", "cpuMilli", "memoryBytes", "pods", "network", "podPrefix",
		"address", "agentURL", "reachability", "unreachableSince", "drain", "taints", "unschedulable", "key", "value", "effect"} {
		m[k] = k
	}
	return m
}()

// AppendTree appends v, a JSON tree, encoded as json.Marshal encodes it
// with HTML escaping off (json.Encoder.SetEscapeHTML(false)): map keys
// sorted, floats as encoding/json formats them. Ints, which trees built in
// Go hold (a count in a status), are trees too. Any other value that is
// not a plain tree is encoded by encoding/json.
func AppendTree(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendString(b, x), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case float64:
		return appendFloat(b, x)
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case map[string]any:
		if x == nil {
			return append(b, "null"...), nil
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			var err error
			if b, err = AppendTree(b, x[k]); err != nil {
				return b, err
			}
		}
		return append(b, '}'), nil
	case []any:
		if x == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = AppendTree(b, e); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	}
	return appendMarshal(b, v)
}

// AppendObject appends o encoded as json.Marshal encodes it with HTML
// escaping off.
func AppendObject(b []byte, o *Object) ([]byte, error) {
	var err error
	b = append(b, `{"kind":`...)
	b = appendString(b, o.Kind)
	b = append(b, `,"name":`...)
	b = appendString(b, o.Name)
	if o.Namespace != "" {
		b = append(b, `,"namespace":`...)
		b = appendString(b, o.Namespace)
	}
	if len(o.Labels) > 0 {
		b = append(b, `,"labels":{`...)
		keys := make([]string, 0, len(o.Labels))
		for k := range o.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, o.Labels[k])
		}
		b = append(b, '}')
	}
	if len(o.Spec) > 0 {
		b = append(b, `,"spec":`...)
		if b, err = AppendTree(b, o.Spec); err != nil {
			return b, err
		}
	}
	if len(o.Status) > 0 {
		b = append(b, `,"status":`...)
		if b, err = AppendTree(b, o.Status); err != nil {
			return b, err
		}
	}
	b = append(b, `,"meta":{"revision":`...)
	b = strconv.AppendInt(b, o.Meta.Revision, 10)
	b = append(b, `,"generation":`...)
	b = strconv.AppendInt(b, o.Meta.Generation, 10)
	b = append(b, `,"created":`...)
	if b, err = appendTime(b, o.Meta.Created); err != nil {
		return b, err
	}
	b = append(b, `,"updated":`...)
	if b, err = appendTime(b, o.Meta.Updated); err != nil {
		return b, err
	}
	if o.Meta.Owner != "" {
		b = append(b, `,"owner":`...)
		b = appendString(b, o.Meta.Owner)
	}
	if o.Meta.Deleting != nil {
		b = append(b, `,"deleting":`...)
		if b, err = appendTime(b, *o.Meta.Deleting); err != nil {
			return b, err
		}
	}
	return append(b, "}}"...), nil
}

// appendTime appends t as time.Time.MarshalJSON does, failing as it
// does on times RFC 3339 cannot say.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	return append(b, '"'), err
}

// appendMarshal appends what encoding/json makes of v, HTML unescaped.
func appendMarshal(b []byte, v any) ([]byte, error) {
	var buf jsonBuffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return b, err
	}
	return append(b, buf[:len(buf)-1]...), nil // without Encode's newline
}

// EscapeHTML turns b[start:], JSON written by this package's appenders,
// into the bytes json.Marshal writes: encoding/json escapes <, > and & in
// strings by default, the appenders write them as they are (as an Encoder
// with SetEscapeHTML(false) does). For what must match json.Marshal byte
// for byte: stored hashes and records, request bodies. b is returned as it
// is when it holds none of them, as it nearly always does.
func EscapeHTML(b []byte, start int) []byte {
	j := b[start:]
	if bytes.IndexByte(j, '<') < 0 && bytes.IndexByte(j, '>') < 0 && bytes.IndexByte(j, '&') < 0 {
		return b
	}
	var esc bytes.Buffer
	json.HTMLEscape(&esc, j)
	return append(b[:start], esc.Bytes()...)
}

type jsonBuffer []byte

func (j *jsonBuffer) Write(p []byte) (int, error) {
	*j = append(*j, p...)
	return len(p), nil
}

var errUnsupportedFloat = errors.New("json: unsupported value: NaN or infinite float")

// appendFloat formats a float64 as encoding/json does.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, errUnsupportedFloat
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// AppendString appends s quoted as encoding/json quotes it with HTML
// escaping off.
func AppendString(b []byte, s string) []byte { return appendString(b, s) }

func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
