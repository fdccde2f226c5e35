package workflow

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"

	"skiff.dev/skiff/api/fieldpath"
)

// readHashMarshal is readHash as it was first written, with json.Marshal:
// read hashes are stored with step completions, so a new server must
// compute the same hash for the same inputs, or every step would run
// again after an upgrade.
func readHashMarshal(s *Step, body map[string]any) string {
	h := sha256.New()
	for _, rp := range s.Reads {
		h.Write([]byte(rp.String()))
		h.Write([]byte{1})
		for _, p := range fieldpath.Expand(body, rp) {
			v, _ := fieldpath.Get(body, p)
			b, _ := json.Marshal(v)
			h.Write([]byte(p.String()))
			h.Write([]byte{0})
			h.Write(b)
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func TestReadHashStable(t *testing.T) {
	var reads []fieldpath.Path
	for _, r := range []string{"spec.containers[*].resources", "spec.placement", "labels", "status.evicted", "spec.missing"} {
		p, err := fieldpath.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		reads = append(reads, p)
	}
	s := &Step{Name: "schedule", Reads: reads}
	bodies := []string{
		`{}`,
		`{"spec":{"containers":[{"name":"a","resources":{"cpu":"100m","memory":"128Mi"}},{"name":"b"}]}}`,
		`{"labels":{"app":"<web> & \"api\"","line":"a\u2028b\u2029c","é":"ü"},"spec":{"placement":{"nodeSelector":{"region":"home"},"spread":"zone"}}}`,
		`{"spec":{"containers":[{"resources":{"cpu":0.1,"memory":1e21,"n":-0,"big":12345678901234567890}}],"placement":null},"status":{"evicted":{"from":"n1","at":"2026-11-25T00:00:00Z","ok":true,"list":[1,"x",null,{}]}}}`,
	}
	for _, b := range bodies {
		var body map[string]any
		if err := json.Unmarshal([]byte(b), &body); err != nil {
			t.Fatal(err)
		}
		if got, want := readHash(s, body), readHashMarshal(s, body); got != want {
			t.Errorf("readHash(%s) = %s, json.Marshal gives %s", b, got, want)
		}
	}
}
