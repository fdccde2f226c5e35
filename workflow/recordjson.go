package workflow

import (
	"strconv"
	"time"

	"skiff.dev/skiff/api"
)

// AppendJSON appends r encoded as json.Marshal encodes it, byte for byte,
// without reflection: the recorder encodes every run that ends, and
// encoding/json's reflection over the steps and their log lines was much
// of its cost. A log attribute that is not a plain JSON tree is encoded
// by encoding/json (api.AppendTree); it fails where encoding/json fails (a
// time past year 9999, a NaN, a value it cannot encode).
func (r *RunRecord) AppendJSON(b []byte) ([]byte, error) {
	start := len(b)
	b = append(b, `{"id":`...)
	b = api.AppendString(b, r.ID)
	b = append(b, `,"object":`...)
	b = api.AppendString(b, r.Object)
	b = append(b, `,"kind":`...)
	b = api.AppendString(b, r.Kind)
	b = appendOptString(b, `,"namespace":`, r.Namespace)
	b = append(b, `,"name":`...)
	b = api.AppendString(b, r.Name)
	b = append(b, `,"generation":`...)
	b = strconv.AppendInt(b, r.Generation, 10)
	b = append(b, `,"phase":`...)
	b = api.AppendString(b, r.Phase)
	b = append(b, `,"target":`...)
	b = api.AppendString(b, r.Target)
	b = append(b, `,"state":`...)
	b = api.AppendString(b, r.State)
	b = appendOptString(b, `,"reason":`, r.Reason)
	b = appendOptString(b, `,"cause":`, r.Cause)
	var err error
	b = append(b, `,"started":`...)
	if b, err = appendTime(b, r.Started); err != nil {
		return b, err
	}
	if b, err = appendOptTime(b, `,"finished":`, r.Finished); err != nil {
		return b, err
	}
	b = append(b, `,"steps":`...)
	if r.Steps == nil {
		b = append(b, "null"...)
	} else if b, err = appendList(b, r.Steps, (*StepRecord).appendJSON); err != nil {
		return b, err
	}
	b = append(b, '}')
	return api.EscapeHTML(b, start), nil
}

// appendJSON appends s as encoding/json does, HTML escaping aside.
func (s *StepRecord) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"name":`...)
	b = api.AppendString(b, s.Name)
	b = appendOptString(b, `,"controller":`, s.Controller)
	if s.Target {
		b = append(b, `,"target":true`...)
	}
	b = appendOptString(b, `,"where":`, s.Where)
	b = append(b, `,"state":`...)
	b = api.AppendString(b, s.State)
	if s.Optional {
		b = append(b, `,"optional":true`...)
	}
	var err error
	if b, err = appendOptTime(b, `,"started":`, s.Started); err != nil {
		return b, err
	}
	if b, err = appendOptTime(b, `,"finished":`, s.Finished); err != nil {
		return b, err
	}
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(s.Attempts), 10)
	b = appendOptStrings(b, `,"waitingOn":`, s.WaitingOn)
	b = appendOptString(b, `,"reason":`, s.Reason)
	if len(s.Log) > 0 {
		b = append(b, `,"log":`...)
		if b, err = appendList(b, s.Log, (*LogLine).appendJSON); err != nil {
			return b, err
		}
	}
	b = appendOptStrings(b, `,"writes":`, s.Writes)
	b = appendOptStrings(b, `,"after":`, s.After)
	b = appendOptStrings(b, `,"requires":`, s.Requires)
	b = appendOptStrings(b, `,"wants":`, s.Wants)
	b = appendOptString(b, `,"readHash":`, s.ReadHash)
	return append(b, '}'), nil
}

// appendJSON appends l as encoding/json does, HTML escaping aside.
func (l *LogLine) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"time":`...)
	b, err := appendTime(b, l.Time)
	if err != nil {
		return b, err
	}
	if l.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(l.Attempt), 10)
	}
	b = append(b, `,"msg":`...)
	b = api.AppendString(b, l.Msg)
	if len(l.Attrs) > 0 {
		b = append(b, `,"attrs":`...)
		if b, err = api.AppendTree(b, l.Attrs); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// appendList appends l as an array of what appendElem makes of each.
func appendList[T any](b []byte, l []T, appendElem func(*T, []byte) ([]byte, error)) ([]byte, error) {
	b = append(b, '[')
	for i := range l {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendElem(&l[i], b); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// appendOptString appends a member tagged omitempty.
func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return api.AppendString(append(b, key...), s)
}

// appendOptStrings appends a []string member tagged omitempty.
func appendOptStrings(b []byte, key string, l []string) []byte {
	if len(l) == 0 {
		return b
	}
	b = append(b, key...)
	b = append(b, '[')
	for i, s := range l {
		if i > 0 {
			b = append(b, ',')
		}
		b = api.AppendString(b, s)
	}
	return append(b, ']')
}

// appendOptTime appends a *time.Time member tagged omitempty.
func appendOptTime(b []byte, key string, t *time.Time) ([]byte, error) {
	if t == nil {
		return b, nil
	}
	return appendTime(append(b, key...), *t)
}

// appendTime appends t as time.Time.MarshalJSON does, failing as it does
// on times RFC 3339 cannot say.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	return append(b, '"'), err
}
