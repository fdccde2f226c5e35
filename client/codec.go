package client

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"slices"
	"sync"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// Fast JSON for what a client sends and reads most: objects, lists, write
// results, watch events, work items and their completions.
//
// encoding/json goes through reflection and fills an object's spec and
// status one reflect.Value at a time; at thousands of pods a second (the
// scheduling bench, a simulator of thousands of nodes) that is much of a
// client's cost. These decoders read the same JSON with api.JSONReader and
// the encoders write it with api.AppendObject and api.AppendTree. Anything
// out of the ordinary (an unknown field, bad JSON, a type the fast path
// does not know) goes to encoding/json, so results and errors are always
// its own.

// encodeBody encodes a request body as json.Marshal does, objects, trees
// and completions without reflection.
func encodeBody(body any) ([]byte, error) {
	var b []byte
	var err error
	switch v := body.(type) {
	case api.Object:
		b, err = api.AppendObject(make([]byte, 0, 512), &v)
	case map[string]any:
		b, err = api.AppendTree(make([]byte, 0, 256), v)
	case workflow.Result:
		b, err = appendResult(make([]byte, 0, 256), &v)
	case rawJSON:
		return v, nil
	default:
		return json.Marshal(body)
	}
	if err != nil {
		return json.Marshal(body) // its error messages are not always the appenders'
	}
	return api.EscapeHTML(b, 0), nil
}

// appendResult appends r as json.Marshal encodes it with HTML escaping off.
func appendResult(b []byte, r *workflow.Result) ([]byte, error) {
	return appendResultMembers(append(b, '{'), r, false)
}

// appendResultMembers appends r's members and closes the JSON object;
// after says whether members come before them.
func appendResultMembers(b []byte, r *workflow.Result, after bool) ([]byte, error) {
	if r.Err != "" {
		if after {
			b = append(b, ',')
		}
		b = append(b, `"error":`...)
		b = api.AppendString(b, r.Err)
		after = true
	}
	if len(r.Writes) > 0 {
		if after {
			b = append(b, ',')
		}
		b = append(b, `"writes":`...)
		var err error
		if b, err = api.AppendTree(b, r.Writes); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// decodeAnswer decodes an answer's body into out as
// json.NewDecoder(body).Decode(out) does: the first JSON value, whatever
// follows it unread.
func decodeAnswer(data []byte, out any) error {
	tried, ok := readAnswer(data, out)
	if ok {
		return nil
	}
	if tried {
		reflect.ValueOf(out).Elem().SetZero() // undo the fast path's partial work
	}
	return json.NewDecoder(bytes.NewReader(data)).Decode(out)
}

// readAnswer decodes the answers that carry objects or work items without
// reflection. It says whether out is of a type it knows, and whether it
// decoded data.
func readAnswer(data []byte, out any) (tried, ok bool) {
	r := api.NewJSONReader(data)
	switch v := out.(type) {
	case *api.Object:
		ok = r.Object(v)
	case *WriteResult:
		ok = readWriteResult(&r, v)
	case *ListResult:
		ok = readList(&r, v)
	case *[]workflow.WorkItem:
		ok = readWorkItems(&r, v)
	case *applyListAnswer:
		ok = readApplyList(&r, v)
	case *[]workDone:
		ok = readWorkDone(&r, v)
	default:
		return false, false
	}
	// Decode stops at the end of the value; anything after it but space
	// (unseen in answers) is left to it.
	return true, ok && r.End()
}

func readWriteResult(r *api.JSONReader, w *WriteResult) bool {
	return r.Members(func(key []byte) bool {
		switch string(key) {
		case "op":
			return r.String(&w.Op)
		case "object":
			return r.Object(&w.Object)
		}
		return false
	})
}

func readList(r *api.JSONReader, l *ListResult) bool {
	items := false
	return r.Members(func(key []byte) bool {
		switch string(key) {
		case "items":
			// A second "items" would decode over the first's objects,
			// as encoding/json reuses a slice: left to it.
			if items {
				return false
			}
			items = true
			if r.Null() {
				l.Items = nil
				return true
			}
			l.Items = []api.Object{}
			return r.Elements(func() bool {
				l.Items = append(l.Items, api.Object{})
				return r.Object(&l.Items[len(l.Items)-1])
			})
		case "revision":
			return r.Int(&l.Revision)
		}
		return false
	})
}

func readApplyList(r *api.JSONReader, a *applyListAnswer) bool {
	items := false
	return r.Members(func(key []byte) bool {
		switch string(key) {
		case "items":
			if items || r.Null() { // as readList: a second one is encoding/json's
				return false
			}
			items = true
			a.Items = []WriteResult{}
			return r.Elements(func() bool {
				a.Items = append(a.Items, WriteResult{})
				return readWriteResult(r, &a.Items[len(a.Items)-1])
			})
		case "error":
			return readListError(r, &a.Error)
		}
		return false
	})
}

// readListError reads the error of an item of a list answer into a new
// *e. A second one, or null, is left to encoding/json.
func readListError(r *api.JSONReader, e **applyListError) bool {
	if *e != nil || r.Null() {
		return false
	}
	*e = &applyListError{}
	return r.Members(func(key []byte) bool {
		switch string(key) {
		case "error":
			return r.String(&(*e).Error)
		case "code":
			return r.String(&(*e).Code)
		case "status":
			var n int64
			ok := r.Int(&n)
			(*e).Status = int(n)
			return ok
		}
		return false
	})
}

// readWorkDone reads the answer of POST /v1/work/done.
func readWorkDone(r *api.JSONReader, items *[]workDone) bool {
	return readSlice(r, items, func(d *workDone) bool {
		return r.Members(func(key []byte) bool {
			switch string(key) {
			case "id":
				return r.String(&d.ID)
			case "error":
				return readListError(r, &d.Error)
			}
			return false
		})
	})
}

func readWorkItems(r *api.JSONReader, items *[]workflow.WorkItem) bool {
	return readSlice(r, items, func(it *workflow.WorkItem) bool { return readWorkItem(r, it) })
}

// readSlice reads an array into items as encoding/json does into a
// slice: each element with read, a null one left zero.
func readSlice[T any](r *api.JSONReader, items *[]T, read func(*T) bool) bool {
	if r.Null() {
		return true // as encoding/json: nil, and items start nil
	}
	*items = []T{}
	return r.Elements(func() bool {
		*items = append(*items, *new(T))
		if r.Null() {
			return true
		}
		return read(&(*items)[len(*items)-1])
	})
}

func readWorkItem(r *api.JSONReader, it *workflow.WorkItem) bool {
	return r.Members(func(key []byte) bool {
		switch string(key) {
		case "id":
			return r.String(&it.ID)
		case "run":
			return r.String(&it.Run)
		case "step":
			return r.String(&it.Step)
		case "controller":
			return r.String(&it.Controller)
		case "where":
			return r.String(&it.Where)
		case "node":
			return r.String(&it.Node)
		case "kind":
			return r.String(&it.Kind)
		case "namespace":
			return r.String(&it.Namespace)
		case "name":
			return r.String(&it.Name)
		case "generation":
			return r.Int(&it.Generation)
		case "phase":
			return r.String(&it.Phase)
		case "attempt":
			n := int64(it.Attempt)
			ok := r.Int(&n)
			it.Attempt = int(n)
			return ok && int64(it.Attempt) == n // an int of 32 bits: encoding/json's to refuse
		case "timeout":
			n := int64(it.Timeout)
			ok := r.Int(&n)
			it.Timeout = time.Duration(n)
			return ok
		case "object":
			return r.Tree(&it.Object)
		}
		return false
	})
}

// watchLine is a line of a watch stream: an event, or the error that ends
// the stream.
type watchLine struct {
	Event
	Error string `json:"error"`
}

// decodeWatchLine decodes a line as json.Unmarshal does into a fresh
// watchLine.
func decodeWatchLine(data []byte, ev *watchLine) error {
	if readWatchLine(data, ev) {
		return nil
	}
	*ev = watchLine{}
	return json.Unmarshal(data, ev)
}

// readWatchLine decodes a line without reflection, and reports whether it
// did.
func readWatchLine(data []byte, ev *watchLine) bool {
	*ev = watchLine{}
	r := api.NewJSONReader(data)
	return r.Members(func(key []byte) bool {
		switch string(key) {
		case "type":
			return r.String(&ev.Type)
		case "object":
			return r.Object(&ev.Object)
		case "revision":
			return r.Int(&ev.Revision)
		case "error":
			return r.String(&ev.Error)
		}
		return false
	}) && r.End()
}

// Answers' bodies are read into pooled buffers (nothing decoded holds on
// to them): small ones for answers of an object, large ones apart for
// lists and batches of work, so that a large buffer is not taken by a
// small answer and grown again, step by step, by the next batch.
var (
	smallBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
	largeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
)

// maxKept bounds the buffers kept for the next answer.
const maxKept = 4 << 20

// decodeBody reads an answer's body and decodes it into out, as
// json.NewDecoder(body).Decode(out) does.
func decodeBody(body io.Reader, out any) error {
	sp := smallBuffers.Get().(*[]byte)
	defer smallBuffers.Put(sp)
	b, err := io.ReadFull(body, (*sp)[:cap(*sp)])
	data := (*sp)[:b]
	switch err {
	case io.EOF, io.ErrUnexpectedEOF:
		err = nil // all of it
	case nil: // more to come
		lp := largeBuffers.Get().(*[]byte)
		defer func() {
			if cap(data) <= maxKept {
				*lp = data[:0]
				largeBuffers.Put(lp)
			}
		}()
		data, err = readAll(body, append((*lp)[:0], data...))
	}
	if err != nil {
		// A body cut short: the decoder fails as it did reading it, or
		// succeeds if the value was whole before the break.
		return json.NewDecoder(io.MultiReader(bytes.NewReader(data), errReader{err})).Decode(out)
	}
	return decodeAnswer(data, out)
}

// readAll appends what r holds to b, until EOF.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b)) // double: a batch of work is read in a few steps
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// errReader fails every read with its error.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
