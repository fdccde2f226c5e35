package api

import (
	"fmt"
	"strings"

	"skiff.dev/skiff/api/labels"
)

// GrantSpec lets pods in some namespaces (and optionally with some labels)
// request privileges that weaken the default sandbox. A privilege is only
// ever given to a pod that both requests it and is granted it.
type GrantSpec struct {
	// Namespaces the grant applies to; "*" means all.
	Namespaces []string `json:"namespaces"`
	// PodSelector narrows the grant to pods whose labels match.
	PodSelector string      `json:"podSelector,omitempty"`
	Privileges  []Privilege `json:"privileges"`
}

func (g *GrantSpec) Validate() error {
	if len(g.Namespaces) == 0 {
		return &FieldError{Path: "namespaces", Reason: `missing (list namespaces, or "*" for all)`}
	}
	for i, ns := range g.Namespaces {
		if ns == "*" {
			continue
		}
		if err := ValidateName(ns); err != nil {
			return &FieldError{Path: fmt.Sprintf("namespaces[%d]", i), Reason: err.Error()}
		}
	}
	if _, err := labels.Parse(g.PodSelector); err != nil {
		return &FieldError{Path: "podSelector", Reason: err.Error()}
	}
	if len(g.Privileges) == 0 {
		return &FieldError{Path: "privileges", Reason: "missing"}
	}
	return nil
}

// Privilege is one weakening of the default sandbox, as a pod requests it
// and a grant allows it: root, hostUser, capability:NAME, device:/dev/PATH,
// hostPath:/PATH[:ro], hostNetwork, writableRoot, unconfined.
type Privilege string

var simplePrivileges = []string{"root", "hostUser", "hostNetwork", "writableRoot", "unconfined"}

func (p Privilege) Check() error {
	s := string(p)
	for _, sp := range simplePrivileges {
		if s == sp {
			return nil
		}
	}
	name, arg, ok := strings.Cut(s, ":")
	switch {
	case ok && name == "capability":
		if arg == "" || strings.ToUpper(arg) != arg || strings.ContainsAny(arg, " /") {
			return fmt.Errorf("%q: capability names are upper-case, like capability:NET_ADMIN", s)
		}
		return nil
	case ok && name == "device":
		if !strings.HasPrefix(arg, "/dev/") || strings.Contains(arg, "..") {
			return fmt.Errorf("%q: devices are paths under /dev/, like device:/dev/fuse", s)
		}
		return nil
	case ok && name == "hostPath":
		path := strings.TrimSuffix(arg, ":ro")
		if !strings.HasPrefix(path, "/") || strings.Contains(path, "..") || strings.Contains(path, ":") {
			return fmt.Errorf("%q: host paths are absolute, like hostPath:/srv/media:ro", s)
		}
		return nil
	}
	return fmt.Errorf("%q is not a privilege (known: %s, capability:NAME, device:/dev/PATH, hostPath:/PATH[:ro])", s, strings.Join(simplePrivileges, ", "))
}

// Allows reports whether the grant lets a pod in namespace ns with these
// labels have privilege p. A hostPath grant covers the path and everything
// below it; a read-only grant (":ro") covers only read-only requests.
func (g *GrantSpec) Allows(ns string, podLabels map[string]string, p Privilege) bool {
	nsOK := false
	for _, n := range g.Namespaces {
		if n == "*" || n == ns {
			nsOK = true
		}
	}
	if !nsOK {
		return false
	}
	if sel, err := labels.Parse(g.PodSelector); err != nil || !sel.Matches(podLabels) {
		return false
	}
	for _, gp := range g.Privileges {
		if gp == p || hostPathCovers(string(gp), string(p)) {
			return true
		}
	}
	return false
}

// hostPathCovers reports whether a granted hostPath covers a requested one.
func hostPathCovers(granted, requested string) bool {
	gp, ok1 := strings.CutPrefix(granted, "hostPath:")
	rp, ok2 := strings.CutPrefix(requested, "hostPath:")
	if !ok1 || !ok2 {
		return false
	}
	gro, rro := strings.HasSuffix(gp, ":ro"), strings.HasSuffix(rp, ":ro")
	gp, rp = strings.TrimSuffix(gp, ":ro"), strings.TrimSuffix(rp, ":ro")
	if gro && !rro {
		return false
	}
	return rp == gp || strings.HasPrefix(rp, strings.TrimSuffix(gp, "/")+"/")
}

// HostPath splits a hostPath privilege into its path and whether it is
// read-only; ok is false for other privileges.
func (p Privilege) HostPath() (path string, readOnly, ok bool) {
	rest, ok := strings.CutPrefix(string(p), "hostPath:")
	if !ok {
		return "", false, false
	}
	return strings.TrimSuffix(rest, ":ro"), strings.HasSuffix(rest, ":ro"), true
}

// Arg returns the argument of a parameterised privilege
// ("capability:NET_ADMIN" → "capability", "NET_ADMIN").
func (p Privilege) Arg() (kind, arg string) {
	k, a, _ := strings.Cut(string(p), ":")
	return k, a
}
