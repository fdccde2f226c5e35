package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/agent/runtime"
	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// fakeRuntime keeps containers in memory.
type fakeRuntime struct {
	mu      sync.Mutex
	running map[string]runtime.Spec
	exited  map[string]int
	starts  []string // container names, in start order
	stops   []string
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{running: map[string]runtime.Spec{}, exited: map[string]int{}}
}

func (f *fakeRuntime) Start(_ context.Context, s runtime.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[s.ID] = s
	f.starts = append(f.starts, s.Labels["container"])
	return nil
}

func (f *fakeRuntime) Stop(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.running[id]; ok {
		f.stops = append(f.stops, s.Labels["container"])
		delete(f.running, id)
		f.exited[id] = 143
	}
	return nil
}

func (f *fakeRuntime) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.exited, id)
	return nil
}

func (f *fakeRuntime) State(id string) (runtime.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.running[id]; ok {
		return runtime.State{ID: id, Status: runtime.StatusRunning}, nil
	}
	if code, ok := f.exited[id]; ok {
		return runtime.State{ID: id, Status: runtime.StatusExited, ExitCode: code, FinishedAt: time.Unix(1700000000, 0)}, nil
	}
	return runtime.State{}, runtime.ErrNotFound
}

func (f *fakeRuntime) CreatePodNetNS(name string, _ runtime.IDRange) (string, error) {
	return "/run/fake/" + name, nil
}
func (f *fakeRuntime) RemovePodNetNS(string) error { return nil }

// exit makes a running container exit with code.
func (f *fakeRuntime) exit(container string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, s := range f.running {
		if s.Labels["container"] == container {
			delete(f.running, id)
			f.exited[id] = code
		}
	}
}

type fakeImages struct{ roots []string }

func (f *fakeImages) Pull(_ context.Context, ref string) (Image, error) {
	if ref == "missing:1" {
		return Image{}, errors.New("pull missing:1: manifest unknown")
	}
	return Image{Digest: "sha256:" + ref, Rootfs: "/nonexistent", Cmd: []string{"sh"}}, nil
}

func (f *fakeImages) GC(roots []string) ([]string, error) { f.roots = roots; return nil, nil }

func newTestAgent(t *testing.T) (*Agent, *fakeRuntime, *fakeImages) {
	t.Helper()
	rt, imgs := newFakeRuntime(), &fakeImages{}
	a, err := New(Options{Name: "n1", DataDir: filepath.Join(t.TempDir(), "agent"), Runtime: rt, Images: imgs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, rt, imgs
}

func startItem(gen int64, spec map[string]any) *workflow.WorkItem {
	return &workflow.WorkItem{ID: "x", Step: "start", Kind: "Pod", Namespace: "default", Name: "web",
		Generation: gen, Object: map[string]any{"spec": spec}}
}

func podSpec(env string, restart string) map[string]any {
	return map[string]any{"restart": restart, "containers": []any{
		map[string]any{"name": "app", "image": "img:1", "env": map[string]any{"A": env}, "after": []any{"side"}},
		map[string]any{"name": "side", "image": "img:1"},
	}}
}

func (a *Agent) pod(t *testing.T) *podRecord {
	t.Helper()
	p, err := a.st.get("default", "web")
	if err != nil || p == nil {
		t.Fatalf("pod record: %v %v", p, err)
	}
	return p
}

func TestStartOrderAndInPlaceRestart(t *testing.T) {
	a, rt, _ := newTestAgent(t)
	ctx := context.Background()
	writes, err := a.step(ctx, startItem(1, podSpec("1", "always")))
	if err != nil {
		t.Fatal(err)
	}
	if writes["status.phase"] != "Running" {
		t.Errorf("phase = %v", writes["status.phase"])
	}
	if !reflect.DeepEqual(rt.starts, []string{"side", "app"}) {
		t.Errorf("start order %v, want side before app (app is after side)", rt.starts)
	}
	// Generation 2 changes only app's env: only app restarts.
	if _, err := a.step(ctx, startItem(2, podSpec("2", "always"))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rt.stops, []string{"app"}) || !reflect.DeepEqual(rt.starts, []string{"side", "app", "app"}) {
		t.Errorf("stops %v, starts %v: want only app restarted", rt.stops, rt.starts)
	}
	p := a.pod(t)
	if p.Containers["app"].Restarts != 1 || p.Containers["side"].Restarts != 0 {
		t.Errorf("restarts app %d side %d, want 1 and 0", p.Containers["app"].Restarts, p.Containers["side"].Restarts)
	}
	// The same generation again changes nothing.
	a.step(ctx, startItem(2, podSpec("2", "always")))
	if len(rt.starts) != 3 {
		t.Errorf("re-running the start step restarted containers: %v", rt.starts)
	}
}

func TestRestartPolicies(t *testing.T) {
	for _, tt := range []struct {
		policy    string
		code      int
		restarted bool
		phase     string
	}{
		{api.RestartAlways, 0, true, "Running"},
		{api.RestartOnFailure, 1, true, "Running"},
		{api.RestartOnFailure, 0, false, "Running"},
		{api.RestartNever, 1, false, "Running"},
	} {
		t.Run(tt.policy, func(t *testing.T) {
			a, rt, _ := newTestAgent(t)
			ctx := context.Background()
			if _, err := a.step(ctx, startItem(1, podSpec("1", tt.policy))); err != nil {
				t.Fatal(err)
			}
			rt.exit("app", tt.code)
			a.supervise(ctx) // records the exit; the first restart waits 1s
			p := a.pod(t)
			if got := *p.Containers["app"].ExitCode; got != tt.code {
				t.Errorf("recorded exit code %d, want %d", got, tt.code)
			}
			p.Containers["app"].NextStart = time.Now().Add(-time.Second)
			a.st.put(p)
			a.supervise(ctx)
			p = a.pod(t)
			if restarted := p.Containers["app"].Restarts == 1; restarted != tt.restarted {
				t.Errorf("restarted = %v, want %v", restarted, tt.restarted)
			}
			if !tt.restarted && p.Status["phase"] != tt.phase {
				t.Errorf("phase = %v, want %v", p.Status["phase"], tt.phase)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	for i, w := range want {
		if got := backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if backoff(30) != 5*time.Minute {
		t.Errorf("backoff is not capped at 5m: %v", backoff(30))
	}
}

func TestImagePins(t *testing.T) {
	a, _, imgs := newTestAgent(t)
	ctx := context.Background()
	for gen, img := range []string{"img:1", "img:2", "img:3", "img:4"} {
		spec := map[string]any{"containers": []any{map[string]any{"name": "app", "image": img}}}
		if _, err := a.step(ctx, startItem(int64(gen+1), spec)); err != nil {
			t.Fatal(err)
		}
	}
	a.collectImages()
	roots := map[string]bool{}
	for _, r := range imgs.roots {
		roots[r] = true
	}
	for _, img := range []string{"img:2", "img:3", "img:4"} {
		if !roots[img] {
			t.Errorf("%s (one of the last 3 generations) is not pinned: %v", img, imgs.roots)
		}
	}
	if roots["img:1"] {
		t.Errorf("img:1 is still pinned after 3 newer generations")
	}
}

func TestPullFailureIsTheStepsError(t *testing.T) {
	a, _, _ := newTestAgent(t)
	spec := map[string]any{"containers": []any{map[string]any{"name": "app", "image": "missing:1"}}}
	_, err := a.step(context.Background(), startItem(1, spec))
	if err == nil || err.Error() != "container app: pull missing:1: manifest unknown" {
		t.Errorf("err = %v", err)
	}
	if msg := a.pod(t).Status["message"]; msg != "app: pull missing:1: manifest unknown" {
		t.Errorf("status message = %v", msg)
	}
}

func TestResolveUser(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/:/bin/sh\nweb:x:1500:1600::/:/bin/sh\n"), 0o644)
	for _, tt := range []struct {
		user     string
		uid, gid uint32
		err      bool
	}{
		{"", DefaultUID, DefaultUID, false},
		{"root", DefaultUID, DefaultUID, false},
		{"0", DefaultUID, DefaultUID, false},
		{"42", 42, 42, false},
		{"42:7", 42, 7, false},
		{"web", 1500, 1600, false},
		{"nobody-here", 0, 0, true},
	} {
		uid, gid, err := resolveUser(root, tt.user)
		if (err != nil) != tt.err || !tt.err && (uid != tt.uid || gid != tt.gid) {
			t.Errorf("resolveUser(%q) = %d:%d, %v", tt.user, uid, gid, err)
		}
	}
}

func TestResolveArgs(t *testing.T) {
	img := Image{Entrypoint: []string{"/entry"}, Cmd: []string{"serve"}}
	for _, tt := range []struct {
		c    api.Container
		want []string
	}{
		{api.Container{}, []string{"/entry", "serve"}},
		{api.Container{Args: []string{"debug"}}, []string{"/entry", "debug"}},
		{api.Container{Command: []string{"sh", "-c", "x"}}, []string{"sh", "-c", "x"}},
		{api.Container{Command: []string{"sh"}, Args: []string{"-x"}}, []string{"sh", "-x"}},
	} {
		if got := resolveArgs(img, tt.c); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("resolveArgs(%+v) = %v, want %v", tt.c, got, tt.want)
		}
	}
}
