package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/lab"
	"skiff.dev/skiff/test/testimage"
)

// serveVersion is a busybox httpd whose page says its version. The shell
// handles SIGTERM, so a pod stops at once rather than after the stop grace
// (httpd as PID 1 ignores it).
const serveVersion = `[sh, -c, 'echo "$VERSION" > /tmp/index.html; trap "exit 0" TERM; httpd -f -p 8080 -h /tmp & wait']`

// badCommand names a program the image does not have.
const badCommand = `[htpd, -f, -p, "8080"]`

// pdManifest is a PinnedDeployment of pods running a command (serveVersion)
// with $VERSION v1 (previous) or v2 (next).
func pdManifest(replicas, percent int, prevImage, nextImage, nextCmd string) string {
	tmpl := func(version, image, cmd string) string {
		return fmt.Sprintf(`      labels: {app: web, version: %s}
      spec:
        containers:
          - name: web
            image: %q
            env: {VERSION: %s}
            command: %s
            resources: {memory: 16Mi}
`, version, image, version, cmd)
	}
	return fmt.Sprintf(`kind: PinnedDeployment
name: web
spec:
  replicas: %d
  nextPercent: %d
  templates:
    previous:
%s    next:
%s`, replicas, percent, tmpl("v1", prevImage, serveVersion), tmpl("v2", nextImage, nextCmd))
}

// readyWatch counts the ready pods of pinneddeployment/web as the API
// shows them to a user (phase Running, every container running, not being
// deleted), and remembers the fewest seen once armed.
type readyWatch struct {
	mu     sync.Mutex
	ready  map[string]bool
	armed  bool
	least  int
	leastT string // what was happening then
	moment string
}

func (w *readyWatch) event(ev client.Event) {
	p := ev.Object
	if p.Meta.Owner != api.PinnedOwner("web") {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ok := ev.Type != "deleted" && p.Meta.Deleting == nil && running(p)
	cs, _ := p.Status["containers"].([]any)
	for _, c := range cs {
		if m, _ := c.(map[string]any); m["state"] != "running" {
			ok = false
		}
	}
	if ok {
		w.ready[p.Name] = true
	} else {
		delete(w.ready, p.Name)
	}
	if w.armed && len(w.ready) < w.least {
		w.least, w.leastT = len(w.ready), w.moment
	}
}

func (w *readyWatch) arm(moment string, replicas int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.moment = moment
	if !w.armed {
		w.armed, w.least, w.leastT = true, replicas, moment
	}
}

// TestPinnedDeployment: a 10-replica PinnedDeployment of busybox httpd
// moves 0 → 30 → 100 %, then aborts back to 0 %, with never fewer than 9
// pods ready; at 100 % every node keeps the previous version's image, and
// aborting downloads nothing; its history is exactly the operator's moves and the pinned
// controller's status; operators cannot edit its pods; a broken next
// version stalls at its first pod, says why, and leaves the previous
// version's pods alone.
func TestPinnedDeployment(t *testing.T) {
	l, c := startLab(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	image := pushBusybox(t, l)
	image2, digest1 := pushVersion2(t, l)
	const replicas = 10

	w := &readyWatch{ready: map[string]bool{}}
	list, err := c.List(ctx, "Pod", "default", "")
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go c.Watch(wctx, "Pod", "default", list.Revision, func(ev client.Event) error { w.event(ev); return nil })

	apply(t, l, pdManifest(replicas, 0, image, image2, serveVersion))
	rolloutStatus(t, l, "created at 0%")
	ranV1 := map[string]bool{}
	for _, p := range checkVersions(t, c, ctx, map[string]int{"v1": replicas}) {
		ranV1[str(p.Status["node"])] = true
	}

	for _, step := range []struct {
		percent int
		want    map[string]int
	}{{30, map[string]int{"v1": 7, "v2": 3}}, {100, map[string]int{"v2": 10}}} {
		w.arm(fmt.Sprintf("moving to %d%%", step.percent), replicas)
		if out, err := l.Skiff("rollout", "set", "pd/web", "--next-percent", fmt.Sprint(step.percent)); err != nil {
			t.Fatalf("rollout set %d: %v\n%s", step.percent, err, out)
		}
		rolloutStatus(t, l, fmt.Sprintf("at %d%%", step.percent))
		checkVersions(t, c, ctx, step.want)
	}
	// Every node that ran v1 keeps its image, though none runs it now;
	// so moving back downloads nothing from the registry.
	for node := range ranV1 {
		if !hasImage(t, l.NodeByName(node), digest1) {
			t.Errorf("node %s ran v1 and no longer has its image %s at 100%% next", node, digest1)
		}
	}
	blobsBefore := blobDownloads(t, l)
	w.arm("aborting", replicas)
	if out, err := l.Skiff("rollout", "abort", "pd/web"); err != nil {
		t.Fatalf("rollout abort: %v\n%s", err, out)
	}
	rolloutStatus(t, l, "aborted")
	pods := checkVersions(t, c, ctx, map[string]int{"v1": replicas})
	if n := blobDownloads(t, l) - blobsBefore; n != 0 {
		t.Errorf("aborting from 100%% to 0%% downloaded %d blobs from the registry, want none", n)
	}
	time.Sleep(500 * time.Millisecond) // the last events reach the watch
	w.mu.Lock()
	least, when := w.least, w.leastT
	w.mu.Unlock()
	t.Logf("fewest ready pods while moving: %d (%s)", least, when)
	if least < replicas-1 {
		t.Errorf("only %d pods were ready while %s, want at least %d", least, when, replicas-1)
	}

	// The pods serve their version: one fetches another's page.
	ip := str(pods[1].Status["ip"])
	if out, err := l.Skiff("exec", pods[0].Name, "--", "timeout", "5", "wget", "-q", "-O", "-", "http://["+ip+"]:8080/"); err != nil || strings.TrimSpace(out) != "v1" {
		t.Errorf("%s fetching %s's page: %q, %v; want v1", pods[0].Name, pods[1].Name, out, err)
	}

	// An operator editing one of its pods is told to edit the
	// PinnedDeployment.
	edit := fmt.Sprintf(`kind: Pod
name: %s
labels: {app: web, version: v1}
spec:
  containers:
    - {name: web, image: %q, command: [sleep, "600"]}
`, pods[0].Name, image)
	out, err := l.SkiffIn(edit, "apply", "-f", "-")
	if err == nil || !strings.Contains(fmt.Sprint(out, err), "owned by pinneddeployment/web: edit that instead") {
		t.Errorf("editing a pod of pd/web: %v\n%s\nwant a refusal saying to edit pinneddeployment/web", err, out)
	}

	// History: the operator's moves, then the controller's status writes,
	// and nothing else.
	ref := api.Ref{Kind: "PinnedDeployment", Namespace: "default", Name: "web"}
	ops, err := c.History(ctx, ref, []string{"operator:*"})
	if err != nil {
		t.Fatal(err)
	}
	var percents []int
	for _, en := range ops {
		obj, err := c.At(ctx, ref, en.Rev)
		if err != nil {
			t.Fatal(err)
		}
		spec, _ := api.DecodeSpecAs[api.PinnedDeploymentSpec](&obj)
		percents = append(percents, spec.NextPercent)
	}
	if fmt.Sprint(percents) != "[0 30 100 0]" {
		t.Errorf("operator revisions set nextPercent %v, want [0 30 100 0] (apply, set 30, set 100, abort)", percents)
	}
	others, err := c.History(ctx, ref, []string{"!operator:*"})
	if err != nil {
		t.Fatal(err)
	}
	all, _ := c.History(ctx, ref, nil)
	for _, en := range others {
		if en.Changer != "controller:pinned" || en.Cause != "step rollout" {
			t.Errorf("revision %d by %s (%s): want only the operator and controller:pinned's rollout step", en.Rev, en.Changer, en.Cause)
		}
	}
	if len(ops)+len(others) != len(all) || len(others) == 0 {
		t.Errorf("history has %d revisions: %d by operators, %d by others", len(all), len(ops), len(others))
	}

	// A broken next version stalls at its first pod.
	prevNames := map[string]int64{}
	for _, p := range pods {
		prevNames[p.Name] = p.Meta.Generation
	}
	apply(t, l, pdManifest(replicas, 0, image, image2, badCommand))
	rolloutStatus(t, l, "with a broken next template at 0%")
	if out, err := l.Skiff("rollout", "set", "pd/web", "--next-percent", "30"); err != nil {
		t.Fatalf("rollout set 30: %v\n%s", err, out)
	}
	out, err = l.Skiff("rollout", "status", "pd/web", "--timeout", "90s")
	if err == nil || !strings.Contains(out, "stalled: pod/web-") || !strings.Contains(out, `exec: "htpd": executable file not found`) ||
		!strings.Contains(out, "$ skiff why pod/web-") {
		t.Errorf("rollout status of a broken next version: %v\n%s\nwant it stalled, with the pod, the reason and its why", err, out)
	}
	obj, err := c.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := obj.Status["next"].(map[string]any); st["current"] != float64(1) || st["ready"] != float64(0) {
		t.Errorf("stalled: next %v, want 1 pod, none ready", st)
	}
	now := checkVersions(t, c, ctx, map[string]int{"v1": replicas, "v2": 1})
	for _, p := range now {
		if p.Labels["version"] != "v1" {
			continue
		}
		if gen, ok := prevNames[p.Name]; !ok || gen != p.Meta.Generation || restarts(p) != 0 {
			t.Errorf("previous pod %s changed while next stalled (generation %d, restarts %d)", p.Name, p.Meta.Generation, restarts(p))
		}
	}
	if out, err := l.Skiff("rollout", "abort", "pd/web"); err != nil {
		t.Fatalf("rollout abort: %v\n%s", err, out)
	}
	rolloutStatus(t, l, "aborted the broken version")
	pods = checkVersions(t, c, ctx, map[string]int{"v1": replicas})

	// A pod deleted under it is replaced.
	if out, err := l.Skiff("delete", "pod/"+pods[0].Name); err != nil {
		t.Fatalf("delete a pod of pd/web: %v\n%s", err, out)
	}
	waitGone(t, c, ctx, pods[0].Name)
	rolloutStatus(t, l, "after a pod was deleted")
	waitVersions(t, c, ctx, map[string]int{"v1": replicas})

	// Rollback to the revision that set 100% brings that spec back, then
	// promote makes next the previous version without touching the pods.
	rev100 := ops[2].Rev
	if out, err := l.Skiff("rollback", "pd/web", "--to", fmt.Sprint(rev100)); err != nil {
		t.Fatalf("rollback pd/web --to %d: %v\n%s", rev100, err, out)
	}
	rolloutStatus(t, l, fmt.Sprintf("rolled back to revision %d", rev100))
	before := checkVersions(t, c, ctx, map[string]int{"v2": replicas})
	if out, err := l.Skiff("rollout", "promote", "pd/web"); err != nil {
		t.Fatalf("rollout promote: %v\n%s", err, out)
	}
	rolloutStatus(t, l, "promoted")
	after := checkVersions(t, c, ctx, map[string]int{"v2": replicas})
	for i := range after {
		if after[i].Name != before[i].Name || restarts(after[i]) != restarts(before[i]) {
			t.Errorf("promote changed pod %s (restarts %d) into %s (restarts %d)", before[i].Name, restarts(before[i]), after[i].Name, restarts(after[i]))
		}
	}
	obj, err = c.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if spec, _ := api.DecodeSpecAs[api.PinnedDeploymentSpec](&obj); spec.NextPercent != 0 || spec.Templates.Previous.Labels["version"] != "v2" {
		t.Errorf("after promote: nextPercent %d, previous template labels %v; want 0 and version v2", spec.NextPercent, spec.Templates.Previous.Labels)
	}

	// Deleting it deletes its pods.
	if out, err := l.Skiff("delete", "pd/web"); err != nil {
		t.Fatalf("delete pd/web: %v\n%s", err, out)
	}
	for _, p := range after {
		waitGone(t, c, ctx, p.Name)
	}
}

// waitVersions waits until checkVersions would pass.
func waitVersions(t *testing.T, c *client.Client, ctx context.Context, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := c.List(ctx, "Pod", "default", "app=web")
		got := map[string]int{}
		if err == nil {
			for _, p := range list.Items {
				if p.Meta.Deleting == nil && running(p) {
					got[p.Labels["version"]]++
				}
			}
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("running pods by version: %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rolloutStatus runs skiff rollout status until the rollout is complete.
func rolloutStatus(t *testing.T, l *lab.Lab, what string) {
	t.Helper()
	start := time.Now()
	out, err := l.Skiff("rollout", "status", "pd/web", "--timeout", "90s")
	if err != nil || !strings.Contains(out, "complete") {
		t.Fatalf("rollout %s: %v\n%s", what, err, out)
	}
	t.Logf("rollout %s: complete in %s", what, time.Since(start).Round(time.Millisecond))
}

// checkVersions checks how many running pods of pd/web run each version,
// and returns them sorted by name.
func checkVersions(t *testing.T, c *client.Client, ctx context.Context, want map[string]int) []api.Object {
	t.Helper()
	list, err := c.List(ctx, "Pod", "default", "app=web")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	var pods []api.Object
	for _, p := range list.Items {
		if p.Meta.Deleting != nil {
			continue
		}
		if p.Meta.Owner != api.PinnedOwner("web") {
			t.Errorf("pod %s has owner %q, want pinneddeployment/web", p.Name, p.Meta.Owner)
		}
		got[p.Labels["version"]]++
		pods = append(pods, p)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		b, _ := json.Marshal(got)
		t.Fatalf("pods by version: %s, want %v", b, want)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods
}

// pushVersion2 pushes a second version of the test image (its config
// differs) and returns its reference and the first version's digest.
func pushVersion2(t *testing.T, l *lab.Lab) (ref, digest1 string) {
	t.Helper()
	base := testimage.BusyboxImage(t)
	d, err := base.Digest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Env = append(append([]string(nil), cfg.Env...), "IMAGE_VERSION=2")
	v2, err := mutate.Config(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ref, err = l.PushImage("busybox:v2", v2); err != nil {
		t.Fatal(err)
	}
	return ref, d.String()
}

// hasImage reports whether a node's image store holds the image with a
// manifest digest.
func hasImage(t *testing.T, n *lab.Node, digest string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Dir, "images", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Images map[string]json.RawMessage `json:"images"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	_, ok := idx.Images[digest]
	return ok
}

// blobDownloads counts the blobs the lab's registry served so far.
func blobDownloads(t *testing.T, l *lab.Lab) int {
	t.Helper()
	n, err := l.BlobDownloads()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
