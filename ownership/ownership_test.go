package ownership

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"skiff.dev/skiff/api/fieldpath"
	"skiff.dev/skiff/api/identity"
)

func fields(t *testing.T, ss ...string) []Field {
	t.Helper()
	var out []Field
	for _, s := range ss {
		f, err := ParseField(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	return out
}

func ctl(t *testing.T, name string, owns, reads []string) Controller {
	t.Helper()
	return Controller{Name: name, Owns: fields(t, owns...), Reads: fields(t, reads...)}
}

func path(t *testing.T, s string) fieldpath.Path {
	t.Helper()
	p, err := fieldpath.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseField(t *testing.T) {
	good := []string{"Pod:status.node", "Pod:status", "Node:status.conditions[0].ready", `Pod:labels["app.kubernetes.io/name"]`, "Pod:spec"}
	for _, s := range good {
		f, err := ParseField(s)
		if err != nil {
			t.Errorf("ParseField(%q): %v", s, err)
			continue
		}
		if got := f.String(); got != s {
			t.Errorf("ParseField(%q).String() = %q", s, got)
		}
	}
	bad := []struct{ in, want string }{
		{"", "not KIND:PATH"},
		{"status.node", "not KIND:PATH"},
		{":status.node", "kind missing"},
		{"Pod:", "path missing"},
		{"pod status:node", "letters and digits"},
		{"Pod:status.", "key missing"},
		{"Pod:status..node", "unexpected"},
		{"Pod:status.0", "starts with a digit"},
	}
	for _, c := range bad {
		_, err := ParseField(c.in)
		if err == nil {
			t.Errorf("ParseField(%q) succeeded", c.in)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"`+c.in+`"`) {
			t.Errorf("ParseField(%q) = %q, want it to name the input and say %q", c.in, err, c.want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"Pod:status", "Pod:status.node", true},
		{"Pod:status.node", "Pod:status", true},
		{"Pod:status.node", "Pod:status.node", true},
		{"Pod:status.a", "Pod:status.ab", false},
		{"Pod:status.a", "Pod:status.b", false},
		{"Pod:status.node", "Node:status.node", false},
		{"Pod:status.list[0]", "Pod:status.list[1]", false},
		{"Pod:status.list", "Pod:status.list[1].x", true},
	}
	for _, c := range cases {
		a, b := fields(t, c.a)[0], fields(t, c.b)[0]
		if got := a.Overlaps(b); got != c.want {
			t.Errorf("%s overlaps %s = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestOwnershipConflicts(t *testing.T) {
	r, err := New(ctl(t, "scheduler", []string{"Pod:status.node"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		c    Controller
		want []string // lines of the error, each a substring; nil = accepted
	}{
		{"same field", ctl(t, "rogue", []string{"Pod:status.node"}, nil),
			[]string{"controller:rogue may not own Pod:status.node: it is owned by controller:scheduler (fields have one owner)"}},
		{"wider field", ctl(t, "rogue", []string{"Pod:status"}, nil),
			[]string{"controller:rogue may not own Pod:status: it overlaps Pod:status.node, owned by controller:scheduler (fields have one owner)"}},
		{"narrower field", ctl(t, "rogue", []string{"Pod:status.node.name"}, nil),
			[]string{"controller:rogue may not own Pod:status.node.name: it overlaps Pod:status.node, owned by controller:scheduler"}},
		{"other kind", ctl(t, "rogue", []string{"Node:status.node"}, nil), nil},
		{"sibling", ctl(t, "rogue", []string{"Pod:status.nodes"}, nil), nil},
		{"spec", ctl(t, "rogue", []string{"Pod:spec.replicas"}, nil),
			[]string{"controller:rogue may not own Pod:spec.replicas: labels and spec are operator intent"}},
		{"labels", ctl(t, "rogue", []string{"Pod:labels"}, nil),
			[]string{"controller:rogue may not own Pod:labels: labels and spec are operator intent"}},
		{"all problems at once", ctl(t, "rogue", []string{"Pod:spec", "Pod:status.node", "Pod:labels.app"}, nil),
			[]string{
				"controller:rogue may not own Pod:spec: labels and spec",
				"controller:rogue may not own Pod:status.node: it is owned by controller:scheduler",
				"controller:rogue may not own Pod:labels.app: labels and spec",
			}},
		{"bad name", ctl(t, "Rogue", []string{"Pod:status.x"}, nil), []string{`controller name "Rogue"`}},
		{"empty name", ctl(t, "", []string{"Pod:status.x"}, nil), []string{"controller name missing"}},
		{"bad field", Controller{Name: "rogue", Reads: []Field{{Kind: "Pod"}}}, []string{`controller:rogue may not read "Pod:" (entry 0): path missing`}},
		{"root field", Controller{Name: "rogue", Owns: []Field{{Kind: "Pod"}}}, []string{`controller:rogue may not own "Pod:" (entry 0): path missing`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			next, err := r.With(c.c)
			if c.want == nil {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if _, ok := next.Get(c.c.Name); !ok {
					t.Fatalf("%s not registered", c.c.Name)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if next != nil {
				t.Error("returned a registry with the error")
			}
			if !errors.Is(err, ErrRejected) {
				t.Errorf("%v does not match ErrRejected", err)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(c.want) {
				t.Fatalf("got %d lines, want %d:\n%v", len(lines), len(c.want), err)
			}
			for i, w := range c.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d = %q, want %q", i, lines[i], w)
				}
			}
		})
	}
	// The registry r itself is unchanged by refused and accepted With calls.
	if got := len(r.Controllers()); got != 1 {
		t.Errorf("r has %d controllers after With calls, want 1", got)
	}
}

func TestReRegister(t *testing.T) {
	r, err := New(
		ctl(t, "scheduler", []string{"Pod:status.node"}, []string{"Pod:spec"}),
		ctl(t, "agent", []string{"Pod:status.phase"}, []string{"Pod:status.node"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	// The scheduler may widen its own field: the overlap with its old
	// registration does not count.
	r2, err := r.With(ctl(t, "scheduler", []string{"Pod:status.node", "Pod:status.placement"}, []string{"Pod:spec", "Node:status"}))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := r2.Get("scheduler")
	if want := fields(t, "Pod:status.node", "Pod:status.placement"); !reflect.DeepEqual(got.Owns, want) {
		t.Errorf("owns = %v, want %v", got.Owns, want)
	}
	if o, ok := r2.Owner("Pod", path(t, "status.placement.zone")); !ok || o != "scheduler" {
		t.Errorf("owner of status.placement.zone = %q, %v", o, ok)
	}
	if len(r2.Controllers()) != 2 {
		t.Errorf("re-registration added a controller: %v", r2.Controllers())
	}
	// The old snapshot is untouched.
	if _, ok := r.Owner("Pod", path(t, "status.placement")); ok {
		t.Error("old registry sees the new field")
	}
	// Giving a field up frees it for another controller.
	r3, err := r2.With(ctl(t, "scheduler", []string{"Pod:status.placement"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r3.With(ctl(t, "other", []string{"Pod:status.node"}, nil)); err != nil {
		t.Errorf("freed field: %v", err)
	}
	if _, err := r2.With(ctl(t, "other", []string{"Pod:status.node"}, nil)); err == nil {
		t.Error("field still owned in r2, yet accepted")
	}
	// Without frees fields too.
	r4 := r2.Without("scheduler")
	if _, ok := r4.Get("scheduler"); ok {
		t.Error("Without kept the controller")
	}
	if _, ok := r4.Owner("Pod", path(t, "status.node")); ok {
		t.Error("Without kept the fields")
	}
	if r4.Without("nobody") != r4 {
		t.Error("Without of an unknown name made a new registry")
	}
}

func TestCycles(t *testing.T) {
	cases := []struct {
		name string
		ctls []Controller
		want string // "" = accepted
	}{
		{"two", []Controller{
			ctl(t, "a", []string{"Pod:status.x"}, []string{"Pod:status.y"}),
			ctl(t, "b", []string{"Pod:status.y"}, []string{"Pod:status.x"}),
		}, "read/write cycle: controller:a writes Pod:status.x, read by controller:b; controller:b writes Pod:status.y, read by controller:a"},
		{"two, registered in the other order", []Controller{
			ctl(t, "b", []string{"Pod:status.y"}, []string{"Pod:status.x"}),
			ctl(t, "a", []string{"Pod:status.x"}, []string{"Pod:status.y"}),
		}, "read/write cycle: controller:a writes Pod:status.x, read by controller:b; controller:b writes Pod:status.y, read by controller:a"},
		{"three", []Controller{
			ctl(t, "c", []string{"Pod:status.z"}, []string{"Pod:status.y"}),
			ctl(t, "a", []string{"Pod:status.x"}, []string{"Pod:status.z"}),
			ctl(t, "b", []string{"Pod:status.y"}, []string{"Pod:status.x"}),
		}, "read/write cycle: controller:a writes Pod:status.x, read by controller:b; controller:b writes Pod:status.y, read by controller:c; controller:c writes Pod:status.z, read by controller:a"},
		{"read of a wider field", []Controller{
			ctl(t, "a", []string{"Pod:status.x"}, []string{"Node:status"}),
			ctl(t, "b", []string{"Node:status.ready"}, []string{"Pod:status"}),
		}, "read/write cycle: controller:a writes Pod:status.x, read by controller:b; controller:b writes Node:status.ready, read by controller:a"},
		{"chain", []Controller{
			ctl(t, "a", []string{"Pod:status.x"}, []string{"Pod:spec"}),
			ctl(t, "b", []string{"Pod:status.y"}, []string{"Pod:status.x"}),
			ctl(t, "c", []string{"Pod:status.z"}, []string{"Pod:status.x", "Pod:status.y"}),
		}, ""},
		{"reads its own field", []Controller{
			ctl(t, "a", []string{"Pod:status.x"}, []string{"Pod:status.x", "Pod:status"}),
		}, ""},
		{"same field names, other kind", []Controller{
			ctl(t, "a", []string{"Pod:status.x"}, []string{"Node:status.y"}),
			ctl(t, "b", []string{"Pod:status.y"}, []string{"Pod:status.x"}),
		}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := New(c.ctls...)
			if c.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if len(r.Controllers()) != len(c.ctls) {
					t.Errorf("registered %d of %d", len(r.Controllers()), len(c.ctls))
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrRejected) {
				t.Errorf("%v does not match ErrRejected", err)
			}
			if err.Error() != c.want {
				t.Errorf("got  %s\nwant %s", err, c.want)
			}
		})
	}
}

func TestCycleAmongOtherProblems(t *testing.T) {
	r, err := New(ctl(t, "a", []string{"Pod:status.x"}, []string{"Pod:status.y"}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.With(ctl(t, "b", []string{"Pod:status.y", "Pod:spec"}, []string{"Pod:status.x"}))
	var rej *RejectedError
	if !errors.As(err, &rej) || len(rej.Problems) != 2 || rej.Controller != "b" {
		t.Fatalf("got %v, want two problems of b", err)
	}
	if !strings.Contains(rej.Problems[1].Error(), "read/write cycle") {
		t.Errorf("second problem %q, want the cycle", rej.Problems[1])
	}
}

func TestQueries(t *testing.T) {
	r, err := New(
		ctl(t, "scheduler", []string{"Pod:status.node"}, []string{"Pod:spec"}),
		ctl(t, "agent", []string{"Pod:status.phase", "Pod:status.containers"}, []string{"Pod:status.node"}),
		ctl(t, "ipam", []string{"Pod:status.ip"}, nil),
	)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range r.Controllers() {
		names = append(names, c.Name)
	}
	if want := []string{"agent", "ipam", "scheduler"}; !slices.Equal(names, want) {
		t.Errorf("Controllers() = %v, want %v", names, want)
	}
	// Results do not alias the registry.
	c, _ := r.Get("scheduler")
	c.Owns[0].Path[1] = fieldpath.Key("hijacked")
	r.Controllers()[0].Owns[0].Kind = "Node"
	if o, ok := r.Owner("Pod", path(t, "status.node")); !ok || o != "scheduler" {
		t.Error("mutating Get's result changed the registry")
	}
	if c, _ := r.Get("agent"); c.Owns[0].Kind != "Pod" {
		t.Error("mutating Controllers' result changed the registry")
	}

	owners := []struct {
		kind, path string
		want       string
		ok         bool
	}{
		{"Pod", "status.node", "scheduler", true},
		{"Pod", "status.node.name", "scheduler", true},
		{"Pod", "status.containers[0].state", "agent", true},
		{"Pod", "status", "", false},
		{"Pod", "status.nodes", "", false},
		{"Pod", "spec", "", false},
		{"Node", "status.node", "", false},
	}
	for _, o := range owners {
		got, ok := r.Owner(o.kind, path(t, o.path))
		if got != o.want || ok != o.ok {
			t.Errorf("Owner(%s, %s) = %q, %v, want %q, %v", o.kind, o.path, got, ok, o.want, o.ok)
		}
	}

	writers := []struct {
		field string
		want  []string
	}{
		{"Pod:status", []string{"agent", "ipam", "scheduler"}},
		{"Pod:status.node", []string{"scheduler"}},
		{"Pod:status.node.name", []string{"scheduler"}},
		{"Pod:spec", nil},
		{"Node:status", nil},
	}
	for _, w := range writers {
		if got := r.Writers(fields(t, w.field)[0]); !slices.Equal(got, w.want) {
			t.Errorf("Writers(%s) = %v, want %v", w.field, got, w.want)
		}
	}

	if _, ok := r.Get("nobody"); ok {
		t.Error("Get(nobody) found something")
	}
}

func TestZeroRegistry(t *testing.T) {
	var nilReg *Registry
	for _, r := range []*Registry{nilReg, {}} {
		if len(r.Controllers()) != 0 || len(r.Writers(Field{Kind: "Pod", Path: path(t, "status")})) != 0 {
			t.Error("empty registry lists something")
		}
		if _, ok := r.Owner("Pod", path(t, "status.node")); ok {
			t.Error("empty registry has an owner")
		}
		next, err := r.With(ctl(t, "scheduler", []string{"Pod:status.node"}, nil))
		if err != nil {
			t.Fatal(err)
		}
		if o, _ := next.Owner("Pod", path(t, "status.node")); o != "scheduler" {
			t.Errorf("owner %q", o)
		}
		if got := r.Strip("Pod", "scheduler", map[string]any{"status": map[string]any{"node": "n1"}}); got == nil || len(got) != 0 {
			t.Errorf("Strip on empty registry = %v", got)
		}
		if err := r.CheckWrite("Pod", "pod/web", identity.Identity{Kind: identity.Operator, Name: "alice"}, "", "", nil, map[string]any{"spec": map[string]any{"x": 1.0}}); err != nil {
			t.Error(err)
		}
	}
}

func TestCheckWrite(t *testing.T) {
	r, err := New(
		ctl(t, "scheduler", []string{"Pod:status.node"}, []string{"Pod:spec"}),
		ctl(t, "agent", []string{"Pod:status.phase", "Pod:status.containers"}, []string{"Pod:status.node"}),
		ctl(t, "pinned", []string{"PinnedDeployment:status.pods"}, []string{"PinnedDeployment:spec"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	id := func(s string) identity.Identity {
		i, err := identity.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	base := map[string]any{
		"labels": map[string]any{"app": "web"},
		"spec":   map[string]any{"image": "nginx", "cpu": 1.0},
		"status": map[string]any{"node": "n1", "phase": "Running"},
	}
	with := func(section, key string, v any) map[string]any {
		b := fieldpath.DeepCopy(base).(map[string]any)
		m, _ := b[section].(map[string]any)
		if m == nil {
			m = map[string]any{}
			b[section] = m
		}
		m[key] = v
		return b
	}
	cases := []struct {
		name             string
		writer           string
		managedBy, mgr   string
		old, new         map[string]any
		ref              string
		want             string // "" = allowed
		wantField, owner string
	}{
		{name: "controller writes its own field", writer: "controller:scheduler", old: base, new: with("status", "node", "n2")},
		{name: "controller writes below its own field", writer: "controller:scheduler", old: base, new: with("status", "node", map[string]any{"name": "n2"})},
		{name: "controller writes another's field", writer: "controller:scheduler", old: base, new: with("status", "phase", "Failed"),
			want: "controller:scheduler may not write status.phase of pod/web: it is owned by controller:agent", wantField: "status.phase", owner: "controller:agent"},
		{name: "controller writes an unowned status field", writer: "controller:scheduler", old: base, new: with("status", "ip", "10.0.0.1"),
			want: "controller:scheduler may not write status.ip of pod/web: no controller owns it"},
		{name: "controller writes spec", writer: "controller:scheduler", old: base, new: with("spec", "image", "caddy"),
			want: "controller:scheduler may not write spec.image of pod/web: no controller owns it; only operators write unowned fields"},
		{name: "controller writes labels", writer: "controller:agent", old: base, new: with("labels", "x", "y"),
			want: "controller:agent may not write labels.x of pod/web: no controller owns it"},
		{name: "operator writes spec", writer: "operator:alice", old: base, new: with("spec", "image", "caddy")},
		{name: "operator writes labels", writer: "operator:alice", old: base, new: with("labels", "tier", "front")},
		{name: "operator creates", writer: "operator:alice", old: nil, new: map[string]any{"labels": map[string]any{"a": "b"}, "spec": map[string]any{"image": "nginx"}}},
		{name: "operator writes an owned status field", writer: "operator:alice", old: base, new: with("status", "node", "n2"),
			want: "operator:alice may not write status.node of pod/web: it is owned by controller:scheduler", owner: "controller:scheduler"},
		{name: "operator writes an unowned status field", writer: "operator:alice", old: base, new: with("status", "ip", "10.0.0.1"),
			want: "operator:alice may not write status.ip of pod/web: status is observed state, written by controllers and nodes"},
		{name: "operator creates with status", writer: "operator:alice", old: nil, new: base,
			want: "operator:alice may not write status.node of pod/web: it is owned by controller:scheduler"},
		{name: "operator edits spec of a managed object", writer: "operator:alice", managedBy: "pinneddeployment/web", mgr: "controller:pinned",
			ref: "pod/web-1", old: base, new: with("spec", "image", "caddy"),
			want: "operator:alice may not write spec.image of pod/web-1: owned by pinneddeployment/web: edit that instead"},
		{name: "operator edits labels of a managed object", writer: "operator:alice", managedBy: "pinneddeployment/web", mgr: "controller:pinned",
			ref: "pod/web-1", old: base, new: with("labels", "app", "other"),
			want: "owned by pinneddeployment/web: edit that instead"},
		{name: "manager edits spec of its managed object", writer: "controller:pinned", managedBy: "pinneddeployment/web", mgr: "controller:pinned",
			old: base, new: with("spec", "image", "caddy")},
		{name: "manager creates its managed object", writer: "controller:pinned", managedBy: "pinneddeployment/web", mgr: "controller:pinned",
			old: nil, new: map[string]any{"labels": map[string]any{"app": "web"}, "spec": map[string]any{"image": "nginx"}, "owner": "pinneddeployment/web"}},
		{name: "manager writes another's status", writer: "controller:pinned", managedBy: "pinneddeployment/web", mgr: "controller:pinned",
			old: base, new: with("status", "node", "n9"),
			want: "controller:pinned may not write status.node of pod/web: it is owned by controller:scheduler"},
		{name: "other controller edits spec of a managed object", writer: "controller:scheduler", managedBy: "pinneddeployment/web", mgr: "controller:pinned",
			old: base, new: with("spec", "image", "caddy"),
			want: "controller:scheduler may not write spec.image of pod/web: it is owned by controller:pinned"},
		{name: "node writes an agent field", writer: "node:n1", old: base, new: with("status", "phase", "Failed")},
		{name: "node writes an agent list field", writer: "node:n1", old: base, new: with("status", "containers", []any{map[string]any{"ready": true}})},
		{name: "node writes another field", writer: "node:n1", old: base, new: with("status", "node", "n2"),
			want: "node:n1 may not write status.node of pod/web: it is owned by controller:scheduler", owner: "controller:scheduler"},
		{name: "first violation in path order", writer: "operator:alice", old: base,
			new:  map[string]any{"labels": map[string]any{"app": "x"}, "spec": base["spec"], "status": map[string]any{"node": "n2", "phase": "Failed"}},
			want: "status.node of pod/web: it is owned by controller:scheduler"},
		{name: "no change", writer: "operator:alice", old: base, new: base},
		{name: "controller removes its own field", writer: "controller:scheduler", old: base,
			new: map[string]any{"labels": base["labels"], "spec": base["spec"], "status": map[string]any{"phase": "Running"}}},
		{name: "empty status appears, one owner below", writer: "controller:scheduler", old: map[string]any{}, new: map[string]any{"status": map[string]any{}},
			want: "controller:scheduler may not write status of pod/web: it is owned by controller:agent"},
		{name: "store metadata is not checked", writer: "operator:alice", old: base,
			new: map[string]any{"labels": base["labels"], "spec": base["spec"], "status": base["status"], "owner": "pinneddeployment/web"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref := c.ref
			if ref == "" {
				ref = "pod/web"
			}
			old, new := fieldpath.DeepCopy(c.old), fieldpath.DeepCopy(c.new)
			var oldMap, newMap map[string]any
			if old != nil {
				oldMap = old.(map[string]any)
			}
			if new != nil {
				newMap = new.(map[string]any)
			}
			err := r.CheckWrite("Pod", ref, id(c.writer), c.managedBy, c.mgr, oldMap, newMap)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("allowed")
			}
			if !errors.Is(err, ErrNotOwner) {
				t.Errorf("%v does not match ErrNotOwner", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("got  %s\nwant %s", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			var ne *NotOwnerError
			if !errors.As(err, &ne) {
				t.Fatalf("%T is not a *NotOwnerError", err)
			}
			if ne.Writer != c.writer || ne.Object != ref {
				t.Errorf("writer %q object %q, want %q %q", ne.Writer, ne.Object, c.writer, ref)
			}
			if c.wantField != "" && ne.Field != c.wantField {
				t.Errorf("field %q, want %q", ne.Field, c.wantField)
			}
			if c.owner != "" && ne.Owner != c.owner {
				t.Errorf("owner %q, want %q", ne.Owner, c.owner)
			}
			if c.managedBy != "" && strings.HasPrefix(c.writer, "operator:") && ne.Managed != c.managedBy {
				t.Errorf("managed %q, want %q", ne.Managed, c.managedBy)
			}
		})
	}
}

// Field writes applied copy-on-write (fieldpath.ApplyEdits, as the
// orchestrator applies a step's writes) leave the new body sharing what
// they did not touch with the old one; CheckWrite still sees every
// changed field, also those below a written map or list.
func TestCheckWriteOfFieldWrites(t *testing.T) {
	r, err := New(
		ctl(t, "scheduler", []string{"Pod:status.node"}, nil),
		ctl(t, "agent", []string{"Pod:status.phase", "Pod:status.containers"}, []string{"Pod:status.node"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	base := func() map[string]any {
		return map[string]any{
			"labels": map[string]any{"app": "web"},
			"spec":   map[string]any{"image": "nginx", "ports": []any{80.0}},
			"status": map[string]any{"node": "n1", "phase": "Running", "containers": []any{map[string]any{"ready": true}}},
		}
	}
	for _, tc := range []struct {
		name, writer string
		ops          []fieldpath.Op
		want         string // "" = allowed
	}{
		{"own field", "controller:scheduler", []fieldpath.Op{{Path: "status.node", Value: "n2"}}, ""},
		{"own field, same value, beside another's", "controller:scheduler",
			[]fieldpath.Op{{Path: "status", Value: map[string]any{"node": "n1", "phase": "Running", "containers": []any{map[string]any{"ready": true}}}}}, ""},
		{"status replaced, dropping another's field", "controller:scheduler",
			[]fieldpath.Op{{Path: "status", Value: map[string]any{"node": "n2", "containers": []any{map[string]any{"ready": true}}}}},
			"controller:scheduler may not write status.phase of pod/web: it is owned by controller:agent"},
		{"status deleted", "controller:scheduler", []fieldpath.Op{{Path: "status", Delete: true}},
			"controller:scheduler may not write status.containers[0].ready of pod/web: it is owned by controller:agent"},
		{"list element replaced by its owner", "node:n1", []fieldpath.Op{{Path: "status.containers[0]", Value: map[string]any{"ready": false}}}, ""},
		{"another's list element replaced", "controller:scheduler", []fieldpath.Op{{Path: "status.containers[0]", Value: map[string]any{"ready": true, "x": 1.0}}},
			"controller:scheduler may not write status.containers[0].x of pod/web: it is owned by controller:agent"},
		{"own field replaced by a map", "controller:scheduler", []fieldpath.Op{{Path: "status.node", Value: map[string]any{"name": "n2"}}}, ""},
		{"two writes, second another's", "controller:scheduler",
			[]fieldpath.Op{{Path: "status.node", Value: "n2"}, {Path: "status.phase", Value: "Failed"}},
			"controller:scheduler may not write status.phase of pod/web: it is owned by controller:agent"},
		{"spec by a controller", "controller:scheduler", []fieldpath.Op{{Path: "spec.ports[0]", Value: 81.0}},
			"controller:scheduler may not write spec.ports of pod/web: no controller owns it; only operators write unowned fields"},
		{"unowned status field created", "node:n1", []fieldpath.Op{{Path: "status.extra.a", Value: 1.0}},
			"node:n1 may not write status.extra.a of pod/web: no controller owns it; a controller writes only the status fields it declares in owns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := identity.Parse(tc.writer)
			if err != nil {
				t.Fatal(err)
			}
			es, err := fieldpath.Edits(tc.ops)
			if err != nil {
				t.Fatal(err)
			}
			old := base()
			shared, err := fieldpath.ApplyEdits(old, es)
			if err != nil {
				t.Fatal(err)
			}
			copied, err := fieldpath.Apply(old, tc.ops)
			if err != nil {
				t.Fatal(err)
			}
			got := r.CheckWrite("Pod", "pod/web", id, "", "", old, shared.(map[string]any))
			again := r.CheckWrite("Pod", "pod/web", id, "", "", base(), copied.(map[string]any))
			if fmt.Sprint(got) != fmt.Sprint(again) {
				t.Errorf("shared trees: %v; copied trees: %v", got, again)
			}
			if tc.want == "" && got != nil || tc.want != "" && (got == nil || got.Error() != tc.want) {
				t.Errorf("got  %v\nwant %s", got, tc.want)
			}
			if !reflect.DeepEqual(old, base()) {
				t.Errorf("the old body changed: %v", old)
			}
		})
	}
}

func TestCheckWriteUnknownWriter(t *testing.T) {
	r, _ := New()
	err := r.CheckWrite("Pod", "pod/web", identity.Identity{}, "", "", nil, map[string]any{"spec": map[string]any{"a": 1.0}})
	if !errors.Is(err, ErrNotOwner) {
		t.Errorf("zero identity: %v", err)
	}
}

func TestStrip(t *testing.T) {
	r, err := New(
		ctl(t, "scheduler", []string{"Pod:status.node"}, []string{"Pod:spec.resources", "Pod:labels", "Pod:spec.missing.deep", "Node:status"}),
		ctl(t, "agent", []string{"Pod:status.phase"}, []string{"Pod:spec.containers[1].image", "Pod:status.node"}),
		ctl(t, "wide", []string{"Pod:status.ip"}, []string{"Pod:spec", "Pod:spec.containers[0].image", "Pod:status.phase"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	body := map[string]any{
		"labels": map[string]any{"app": "web"},
		"spec": map[string]any{
			"resources": map[string]any{"cpu": "1", "memory": "1Gi"},
			"containers": []any{
				map[string]any{"name": "a", "image": "nginx"},
				map[string]any{"name": "b", "image": "redis", "args": []any{"-v"}},
			},
			"secret": "s3cr3t",
		},
		"status": map[string]any{"node": "n1", "phase": "Running", "ip": "10.0.0.1"},
		"owner":  "pinneddeployment/web",
	}
	orig := fieldpath.DeepCopy(body)
	cases := []struct {
		kind, ctl string
		want      map[string]any
	}{
		{"Pod", "scheduler", map[string]any{
			"labels": map[string]any{"app": "web"},
			"spec":   map[string]any{"resources": map[string]any{"cpu": "1", "memory": "1Gi"}},
			"status": map[string]any{"node": "n1"},
		}},
		{"Pod", "agent", map[string]any{
			"spec":   map[string]any{"containers": []any{nil, map[string]any{"image": "redis"}}},
			"status": map[string]any{"node": "n1", "phase": "Running"},
		}},
		{"Pod", "wide", map[string]any{
			"spec":   fieldpath.DeepCopy(body["spec"]),
			"status": map[string]any{"phase": "Running", "ip": "10.0.0.1"},
		}},
		{"Node", "agent", map[string]any{}},
		{"Node", "scheduler", map[string]any{"status": fieldpath.DeepCopy(body["status"])}}, // declared Node:status
		{"Pod", "nobody", map[string]any{}},
	}
	for _, c := range cases {
		got := r.Strip(c.kind, c.ctl, body)
		if got == nil {
			t.Errorf("Strip(%s, %s) = nil", c.kind, c.ctl)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Strip(%s, %s) =\n%v\nwant\n%v", c.kind, c.ctl, got, c.want)
		}
		// Mutating the result leaves the input alone.
		mutate(got)
		if !reflect.DeepEqual(body, orig) {
			t.Fatalf("mutating Strip(%s, %s) changed the input", c.kind, c.ctl)
		}
	}
	if got := r.Strip("Pod", "scheduler", nil); got == nil || len(got) != 0 {
		t.Errorf("Strip of nil = %v", got)
	}
	// A list index beyond the list is missing, not an error.
	short := map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"image": "x"}}}}
	if got := r.Strip("Pod", "agent", short); len(got) != 0 {
		t.Errorf("Strip with a short list = %v", got)
	}
}

// Strip with wildcard paths keeps what the paths Expand to, as grafting
// each expanded path would, and shares nothing with the body.
func TestStripWildcards(t *testing.T) {
	reads := []string{"Pod:spec.containers[*].image", "Pod:spec.containers[*].ports[*].port", "Pod:spec.volumes[*]",
		"Pod:status.containers[*]", "Pod:spec.containers[0].name", "Pod:spec.none[*].x"}
	r, err := New(ctl(t, "agent", []string{"Pod:status.containers[*].ready"}, reads))
	if err != nil {
		t.Fatal(err)
	}
	body := map[string]any{
		"spec": map[string]any{
			"containers": []any{
				map[string]any{"name": "a", "image": "nginx", "ports": []any{map[string]any{"port": 80.0, "name": "http"}, "odd"}},
				"not a map",
				map[string]any{"name": "c", "ports": []any{}},
				map[string]any{"image": "redis", "ports": []any{map[string]any{"name": "x"}, map[string]any{"port": 6379.0}}},
			},
			"volumes": []any{map[string]any{"name": "v"}, nil},
			"none":    "scalar",
		},
		"status": map[string]any{"containers": []any{map[string]any{"ready": true, "restarts": 1.0}}},
	}
	orig := fieldpath.DeepCopy(body)
	want := map[string]any{}
	c, _ := r.Get("agent")
	for _, f := range append(c.Reads, c.Owns...) {
		for _, p := range fieldpath.Expand(body, f.Path) {
			graft(want, body, p)
		}
	}
	got := r.Strip("Pod", "agent", body)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Strip =\n%v\nwant\n%v", got, want)
	}
	mutate(got)
	if !reflect.DeepEqual(body, orig) {
		t.Errorf("mutating Strip's result changed the input")
	}
}

// mutate changes every map and list in v in place.
func mutate(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			mutate(x)
			if _, ok := x.(map[string]any); !ok {
				if _, ok := x.([]any); !ok {
					v[k] = "mutated"
				}
			}
		}
		v["added"] = true
	case []any:
		for i, x := range v {
			mutate(x)
			if x == nil {
				v[i] = "mutated"
			}
		}
	}
}
