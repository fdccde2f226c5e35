package store

import (
	"fmt"
	"strconv"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/fieldpath"
)

// record is one revision as stored. Field names are short because there are
// many of them; Entry is the readable form.
type record struct {
	Rev     int64          `json:"r"`
	Time    int64          `json:"t"` // unix milliseconds
	Changer string         `json:"c"`
	Cause   string         `json:"w,omitempty"`
	Gen     int64          `json:"g,omitempty"`
	Created int64          `json:"n,omitempty"` // on snapshots: when the object was created, unix ms
	Full    map[string]any `json:"s,omitempty"` // snapshot of the body
	Snap    bool           `json:"f,omitempty"` // this is a snapshot (Full may be empty)
	Patch   []fieldpath.Op `json:"p,omitempty"` // or the patch from the previous revision
	Deleted bool           `json:"x,omitempty"`
}

// append appends r encoded as encoding/json encodes it (HTML escaping
// off).
func (r *record) append(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"r":`...)
	b = strconv.AppendInt(b, r.Rev, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, r.Time, 10)
	b = append(b, `,"c":`...)
	b = api.AppendString(b, r.Changer)
	if r.Cause != "" {
		b = append(b, `,"w":`...)
		b = api.AppendString(b, r.Cause)
	}
	if r.Gen != 0 {
		b = append(b, `,"g":`...)
		b = strconv.AppendInt(b, r.Gen, 10)
	}
	if r.Created != 0 {
		b = append(b, `,"n":`...)
		b = strconv.AppendInt(b, r.Created, 10)
	}
	if len(r.Full) > 0 {
		b = append(b, `,"s":`...)
		if b, err = api.AppendTree(b, r.Full); err != nil {
			return b, err
		}
	}
	if r.Snap {
		b = append(b, `,"f":true`...)
	}
	if len(r.Patch) > 0 {
		b = append(b, `,"p":[`...)
		for i, op := range r.Patch {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"p":`...)
			b = api.AppendString(b, op.Path)
			if op.Value != nil {
				b = append(b, `,"v":`...)
				if b, err = api.AppendTree(b, op.Value); err != nil {
					return b, err
				}
			}
			if op.Delete {
				b = append(b, `,"d":true`...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if r.Deleted {
		b = append(b, `,"x":true`...)
	}
	return append(b, '}'), nil
}

// Entry is one line of an object's history.
type Entry struct {
	Rev     int64     `json:"rev"`
	Time    time.Time `json:"time"`
	Changer string    `json:"changer"`
	Cause   string    `json:"cause"`
}

func (r *record) entry() Entry {
	return Entry{Rev: r.Rev, Time: time.UnixMilli(r.Time).UTC(), Changer: r.Changer, Cause: r.Cause}
}

// body is the versioned content of an object: everything but its meta
// counters. Patches are computed between bodies.
func body(o *api.Object) map[string]any {
	b := o.Body()
	if o.Meta.Owner != "" {
		b["owner"] = o.Meta.Owner
	}
	if o.Meta.Deleting != nil {
		b["deleting"] = o.Meta.Deleting.UTC().Format(time.RFC3339Nano)
	}
	return b
}

// fromBody fills o's labels, spec, status and owner from a body.
func fromBody(o *api.Object, b map[string]any) error {
	o.Labels, o.Spec, o.Status, o.Meta.Owner, o.Meta.Deleting = nil, nil, nil, "", nil
	for k, v := range b {
		switch k {
		case "labels":
			m, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("labels: %T in history", v)
			}
			o.Labels = make(map[string]string, len(m))
			for lk, lv := range m {
				s, _ := lv.(string)
				o.Labels[lk] = s
			}
		case "spec":
			o.Spec, _ = v.(map[string]any)
		case "status":
			o.Status, _ = v.(map[string]any)
		case "owner":
			o.Meta.Owner, _ = v.(string)
		case "deleting":
			s, _ := v.(string)
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return fmt.Errorf("deleting: %q in history", s)
			}
			o.Meta.Deleting = &t
		default:
			return fmt.Errorf("unknown part %q in history", k)
		}
	}
	return nil
}

// replay rebuilds the object at the last of recs, which must start with a
// snapshot (or a deletion) and be consecutive. It returns ok=false if the
// object did not exist at that revision.
func replay(ref api.Ref, recs []record) (obj api.Object, ok bool, err error) {
	var cur map[string]any
	var created, gen int64
	exists := false
	for i, r := range recs {
		switch {
		case r.Deleted:
			cur, exists = nil, false
		case r.Snap || r.Full != nil:
			cur, exists, created = r.Full, true, r.Created
			if cur == nil {
				cur = map[string]any{}
			}
		case !exists:
			return api.Object{}, false, fmt.Errorf("%s: revision %d is a patch with no base (history damaged)", ref, r.Rev)
		default:
			next, err := fieldpath.Apply(cur, r.Patch)
			if err != nil {
				return api.Object{}, false, fmt.Errorf("%s: revision %d: %v (history damaged)", ref, r.Rev, err)
			}
			m, _ := next.(map[string]any)
			cur = m
		}
		if r.Gen != 0 {
			gen = r.Gen
		}
		if i == len(recs)-1 && exists {
			obj = api.Object{Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name}
			if err := fromBody(&obj, cur); err != nil {
				return api.Object{}, false, fmt.Errorf("%s: revision %d: %v", ref, r.Rev, err)
			}
			obj.Meta.Revision = r.Rev
			obj.Meta.Generation = gen
			obj.Meta.Created = time.UnixMilli(created).UTC()
			obj.Meta.Updated = time.UnixMilli(r.Time).UTC()
			return obj, true, nil
		}
	}
	return api.Object{}, false, nil
}
