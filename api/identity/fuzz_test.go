package identity

import (
	"path"
	"testing"
)

// FuzzFilter: changer patterns never panic, and a filter that parsed
// answers for any changer; an exclusion always wins over an inclusion.
func FuzzFilter(f *testing.F) {
	f.Add("operator:*", "!controller:scheduler", "operator:alice")
	f.Add("controller:*,node:*", "!node", "node:n1")
	f.Add("[a-", "", "x")
	f.Add("operator:[!a]*", "!operator:b*", "operator:bob")
	f.Fuzz(func(t *testing.T, include, exclude, changer string) {
		f, err := ParseFilter([]string{include, exclude})
		if err != nil {
			return
		}
		if !f.Match(changer) {
			return
		}
		for _, p := range f.exclude {
			if ok, _ := path.Match(p, changer); ok {
				t.Fatalf("%q matched although the exclusion %q covers it", changer, p)
			}
		}
	})
}
