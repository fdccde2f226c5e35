package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"skiff.dev/skiff/api/quantity"
)

// PodSpec is what an operator asks of a pod.
//
// A pod is mutable: any field may change. Whether a change restarts
// containers in place or moves the pod is decided by which fields changed.
type PodSpec struct {
	Containers []Container `json:"containers"`
	// Restart is the restart policy for containers that exit: always
	// (default), on-failure or never.
	Restart string `json:"restart,omitempty"`
	// Failover says what happens when the pod's node vanishes: manual
	// (default; wait for an operator) or fast (reschedule after the lease).
	Failover string `json:"failover,omitempty"`
	// Privileges weaken the default sandbox, each one only if a Grant
	// allows it for the pod's namespace (and labels): root, hostUser,
	// capability:NAME, device:/dev/PATH, hostPath:/PATH[:ro], hostNetwork,
	// writableRoot, unconfined.
	Privileges []Privilege `json:"privileges,omitempty"`
	// Placement says which nodes may run the pod and which it prefers.
	Placement *Placement `json:"placement,omitempty"`
	// KeepImages are images the pod's node keeps while it runs the pod,
	// besides its containers' own: a PinnedDeployment's pods name both
	// its versions' images, so that moving back never waits on a pull.
	KeepImages []string `json:"keepImages,omitempty"`
}

// Has reports whether the pod requests privilege p (by its kind for
// parameterised ones: Has("root")).
func (p *PodSpec) Has(priv string) bool {
	for _, x := range p.Privileges {
		if string(x) == priv {
			return true
		}
	}
	return false
}

// Container is one process tree of a pod.
type Container struct {
	Name  Name   `json:"name"`
	Image string `json:"image"`
	// Command replaces the image's entrypoint and arguments when set.
	Command    []string          `json:"command,omitempty"`
	Args       []string          `json:"args,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	// User is "UID[:GID]" inside the pod's user namespace; default the
	// image's user, or 1000 when the image says root. uid 0 needs the
	// root privilege.
	User      string    `json:"user,omitempty"`
	Resources Resources `json:"resources,omitempty"`
	// After lists containers of this pod that start before this one;
	// Requires also makes this one wait for them and fail if they do not
	// start (a sidecar that must run first).
	After    []Name `json:"after,omitempty"`
	Requires []Name `json:"requires,omitempty"`
}

// Resources are a container's limits.
type Resources struct {
	CPU    CPU    `json:"cpu,omitempty"`
	Memory Memory `json:"memory,omitempty"`
}

// CPU is a CPU quantity as written in a manifest ("250m", "2").
type CPU string

func (c CPU) Check() error { _, err := quantity.ParseCPU(string(c)); return err }

// Milli returns the quantity in millicores; zero if unset.
func (c CPU) Milli() int64 { m, _ := quantity.ParseCPU(string(c)); return m }

// Memory is a byte quantity as written in a manifest ("64Mi").
type Memory string

func (m Memory) Check() error { _, err := quantity.ParseBytes(string(m)); return err }

// Bytes returns the quantity in bytes; zero if unset.
func (m Memory) Bytes() int64 { b, _ := quantity.ParseBytes(string(m)); return b }

// Restart policies.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Failover modes.
const (
	FailoverManual = "manual"
	FailoverFast   = "fast"
)

func (p *PodSpec) Default() {
	if p.Restart == "" {
		p.Restart = RestartAlways
	}
	if p.Failover == "" {
		p.Failover = FailoverManual
	}
}

func (p *PodSpec) Validate() error {
	if len(p.Containers) == 0 {
		return &FieldError{Path: "containers", Reason: "a pod needs at least one container"}
	}
	// Paths are built only for errors: pods are validated on every
	// create, admission and placement.
	path := func(i int, field string) string { return fmt.Sprintf("containers[%d].%s", i, field) }
	seen := map[Name]int{}
	for i, c := range p.Containers {
		if c.Name == "" {
			return &FieldError{Path: path(i, "name"), Reason: "missing"}
		}
		if j, dup := seen[c.Name]; dup {
			return &FieldError{Path: path(i, "name"), Reason: fmt.Sprintf("%q is already the name of containers[%d]", c.Name, j)}
		}
		seen[c.Name] = i
		if err := validateImage(c.Image); err != nil {
			return &FieldError{Path: path(i, "image"), Reason: err.Error()}
		}
		if c.User != "" {
			if err := validateUser(c.User, p.Has("root")); err != nil {
				return &FieldError{Path: path(i, "user"), Reason: err.Error()}
			}
		}
		for k := range c.Env {
			if !isEnvName(k) {
				return &FieldError{Path: joinKey(path(i, "env"), k), Reason: "not a valid environment variable name (letters, digits and _, not starting with a digit)"}
			}
		}
	}
	for i, c := range p.Containers {
		for _, f := range [...]struct {
			field string
			deps  []Name
		}{{"after", c.After}, {"requires", c.Requires}} {
			for j, d := range f.deps {
				if _, ok := seen[d]; !ok || d == c.Name {
					return &FieldError{Path: fmt.Sprintf("%s[%d]", path(i, f.field), j),
						Reason: fmt.Sprintf("%q is not another container of this pod", d)}
				}
			}
		}
	}
	if cycle := containerCycle(p.Containers); cycle != "" {
		return &FieldError{Path: "containers", Reason: "start order has a cycle: " + cycle}
	}
	for i, img := range p.KeepImages {
		if err := validateImage(img); err != nil {
			return &FieldError{Path: fmt.Sprintf("keepImages[%d]", i), Reason: err.Error()}
		}
	}
	seenPriv := map[Privilege]int{}
	for i, pr := range p.Privileges {
		if j, dup := seenPriv[pr]; dup {
			return &FieldError{Path: fmt.Sprintf("privileges[%d]", i), Reason: fmt.Sprintf("%q is already privileges[%d]", pr, j)}
		}
		seenPriv[pr] = i
	}
	if err := oneOf(p.Restart, RestartAlways, RestartOnFailure, RestartNever); err != nil {
		return &FieldError{Path: "restart", Reason: err.Error()}
	}
	if err := oneOf(p.Failover, FailoverManual, FailoverFast); err != nil {
		return &FieldError{Path: "failover", Reason: err.Error()}
	}
	if p.Placement != nil {
		if err := p.Placement.Validate(); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return &FieldError{Path: join("placement", fe.Path), Reason: fe.Reason}
			}
			return &FieldError{Path: "placement", Reason: err.Error()}
		}
	}
	return nil
}

// StartOrder returns the containers in the order they start: each after
// the ones it names in after and requires, otherwise in spec order.
func (p *PodSpec) StartOrder() []Container {
	done := map[Name]bool{}
	var out []Container
	for len(out) < len(p.Containers) {
		progress := false
		for _, c := range p.Containers {
			if done[c.Name] {
				continue
			}
			ready := true
			for _, d := range append(append([]Name(nil), c.After...), c.Requires...) {
				if !done[d] {
					ready = false
				}
			}
			if ready {
				done[c.Name] = true
				out = append(out, c)
				progress = true
			}
		}
		if !progress {
			return p.Containers // a cycle; Validate refuses it
		}
	}
	return out
}

// containerCycle names a cycle in the containers' start order, or "".
func containerCycle(cs []Container) string {
	if !hasCycle(cs) {
		return ""
	}
	var names []string
	for _, c := range cs {
		if len(c.After)+len(c.Requires) > 0 {
			names = append(names, string(c.Name))
		}
	}
	return strings.Join(names, ", ")
}

func hasCycle(cs []Container) bool {
	ordered := false
	for _, c := range cs {
		ordered = ordered || len(c.After)+len(c.Requires) > 0
	}
	if !ordered { // most pods: nothing to walk
		return false
	}
	deps := map[Name][]Name{}
	for _, c := range cs {
		deps[c.Name] = append(append([]Name(nil), c.After...), c.Requires...)
	}
	state := map[Name]int{}
	var visit func(n Name) bool
	visit = func(n Name) bool {
		state[n] = 1
		for _, d := range deps[n] {
			if state[d] == 1 || state[d] == 0 && visit(d) {
				return true
			}
		}
		state[n] = 2
		return false
	}
	for _, c := range cs {
		if state[c.Name] == 0 && visit(c.Name) {
			return true
		}
	}
	return false
}

// validateUser checks "UID[:GID]"; uid 0 needs the root privilege.
func validateUser(u string, root bool) error {
	uid, gid, hasGID := strings.Cut(u, ":")
	n, err := strconv.Atoi(uid)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q is not UID[:GID] with numbers from 0 to 65535", u)
	}
	if hasGID {
		if g, err := strconv.Atoi(gid); err != nil || g < 0 || g > 65535 {
			return fmt.Errorf("%q is not UID[:GID] with numbers from 0 to 65535", u)
		}
	}
	if n == 0 && !root {
		return fmt.Errorf("uid 0 (root) needs the root privilege: request it in spec.privileges, and an operator must grant it (see docs/security.md)")
	}
	return nil
}

func oneOf(v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
}

// validateImage checks the shape of an image reference: [host[:port]/]path[:tag][@digest].
// Whether it exists is the node's business.
func validateImage(ref string) error {
	if ref == "" {
		return errors.New("missing")
	}
	if strings.ContainsAny(ref, " \t\n") {
		return fmt.Errorf("%q is not an image reference: it contains white space", ref)
	}
	name, digest, hasDigest := strings.Cut(ref, "@")
	if hasDigest && !strings.HasPrefix(digest, "sha256:") {
		return fmt.Errorf("%q: digest must start with sha256:", ref)
	}
	path := name
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		path = name[:i]
		if tag := name[i+1:]; tag == "" || len(tag) > 128 {
			return fmt.Errorf("%q: tag must be 1 to 128 characters", ref)
		}
	}
	if path == "" {
		return fmt.Errorf("%q is not an image reference", ref)
	}
	repo := path
	if host, rest, ok := strings.Cut(path, "/"); ok && (strings.ContainsAny(host, ".:") || host == "localhost") {
		repo = rest
	}
	if repo != strings.ToLower(repo) {
		return fmt.Errorf("%q: repository names are lower-case", ref)
	}
	return nil
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
