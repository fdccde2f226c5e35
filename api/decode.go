package api

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
)

var sprintf = fmt.Sprintf

// checker is implemented by string types that validate their own syntax
// (quantities, durations, names). Decode calls Check after decoding.
type checker interface {
	Check() error
}

// validator is implemented by typed specs with rules that span fields.
// Errors it returns carry paths relative to the spec.
type validator interface {
	Validate() error
}

// defaulter is implemented by typed specs that fill in defaults.
type defaulter interface {
	Default()
}

// decodeInto strictly decodes a generic JSON tree into the value rv points
// to. Unknown fields, wrong types and values that fail their own Check are
// errors naming the field path.
func decodeInto(v any, rv reflect.Value, path string) error {
	t := rv.Type()
	if v == nil {
		// null leaves the zero value, as an absent field would.
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			rv.Set(reflect.New(t.Elem()))
		}
		return decodeInto(v, rv.Elem(), path)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return typeErr(path, "an object", v)
		}
		fields := structFields(t)
		keys := sortedKeys(m)
		for _, k := range keys {
			idx, ok := fields[k]
			if !ok {
				return fieldErr(joinKey(path, k), "unknown field%s", suggest(k, fields))
			}
			if err := decodeInto(m[k], rv.Field(idx), join(path, k)); err != nil {
				return err
			}
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return typeErr(path, "a map", v)
		}
		if t.Key().Kind() != reflect.String {
			return fmt.Errorf("decode %s: map key type %s not supported", path, t.Key())
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for _, k := range sortedKeys(m) {
			ev := reflect.New(t.Elem()).Elem()
			if err := decodeInto(m[k], ev, joinKey(path, k)); err != nil {
				return err
			}
			out.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), ev)
		}
		rv.Set(out)
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			return typeErr(path, "a list", v)
		}
		out := reflect.MakeSlice(t, len(l), len(l))
		for i, e := range l {
			if err := decodeInto(e, out.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		rv.Set(out)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			if f, isNum := v.(float64); isNum {
				return fieldErr(path, "expected a string, got number %s (quote it: \"%s\")", fmtNum(f), fmtNum(f))
			}
			return typeErr(path, "a string", v)
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return typeErr(path, "true or false", v)
		}
		rv.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return typeErr(path, "a whole number", v)
		}
		if rv.OverflowInt(int64(f)) {
			return fieldErr(path, "%s is out of range", fmtNum(f))
		}
		rv.SetInt(int64(f))
	case reflect.Float64:
		f, ok := v.(float64)
		if !ok {
			return typeErr(path, "a number", v)
		}
		rv.SetFloat(f)
	case reflect.Interface:
		rv.Set(reflect.ValueOf(v))
	default:
		return fmt.Errorf("decode %s: type %s not supported", path, t)
	}
	if c, ok := rv.Addr().Interface().(checker); ok && !rv.IsZero() {
		if err := c.Check(); err != nil {
			return &FieldError{Path: path, Reason: err.Error()}
		}
	}
	return nil
}

// structFields maps a struct type's JSON field names to field indexes;
// computed once per type (specs are decoded on every placement), and
// read-only.
func structFields(t reflect.Type) map[string]int {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]int)
	}
	f, _ := fieldCache.LoadOrStore(t, computeFields(t))
	return f.(map[string]int)
}

var fieldCache sync.Map // reflect.Type → map[string]int

func computeFields(t reflect.Type) map[string]int {
	fields := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = i
	}
	return fields
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// suggest names the closest known field, for typos.
func suggest(k string, fields map[string]int) string {
	best, bestD := "", 3
	for f := range fields {
		if d := editDistance(strings.ToLower(k), strings.ToLower(f)); d < bestD || (d == bestD && f < best && best != "") {
			best, bestD = f, d
		}
	}
	if best == "" {
		known := make([]string, 0, len(fields))
		for f := range fields {
			known = append(known, f)
		}
		sort.Strings(known)
		return " (known: " + strings.Join(known, ", ") + ")"
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func typeErr(path, want string, got any) error {
	return fieldErr(path, "expected %s, got %s", want, describe(got))
}

func describe(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case float64:
		return "number " + fmtNum(v)
	case bool:
		return strconv.FormatBool(v)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// joinKey appends a map key, quoting keys that are not plain identifiers so
// the path stays unambiguous (env["A.B"]).
func joinKey(path, key string) string {
	plain := key != ""
	for i, r := range key {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			plain = false
			break
		}
	}
	if plain {
		return join(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}
