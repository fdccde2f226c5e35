package server

import (
	"bytes"
	"compress/flate"
	"encoding/json"

	"skiff.dev/skiff/workflow"
)

// Run records are stored in etcd deflated: their JSON repeats step names,
// states and times, and shrinks about five times, and every pod has one,
// so they are much of what etcd writes, logs and maps into memory.
// Records stored as plain JSON (before this) are read as they are.

// runEncoder deflates run records; it is not safe for concurrent use.
type runEncoder struct {
	buf bytes.Buffer
	fw  *flate.Writer
}

// encode returns rec as stored.
func (e *runEncoder) encode(rec *workflow.RunRecord) (string, error) {
	e.buf.Reset()
	if e.fw == nil {
		e.fw, _ = flate.NewWriter(&e.buf, flate.BestSpeed)
	} else {
		e.fw.Reset(&e.buf)
	}
	if err := json.NewEncoder(e.fw).Encode(rec); err != nil {
		return "", err
	}
	if err := e.fw.Close(); err != nil {
		return "", err
	}
	return e.buf.String(), nil
}

// decodeRun reads a stored run record, deflated or plain JSON.
func decodeRun(b []byte, rec *workflow.RunRecord) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, rec)
	}
	return json.NewDecoder(flate.NewReader(bytes.NewReader(b))).Decode(rec)
}
