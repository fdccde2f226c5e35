// Package backup runs skiff backup and skiff restore with the real binary:
// a cluster's objects and histories are backed up, restored into a fresh
// data directory and served again, identical.
package backup

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/test/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// pod is a pod manifest whose greeting and labels vary.
func pod(ns, name, greeting, tier string) string {
	return fmt.Sprintf(`kind: Pod
name: %s
namespace: %s
labels: {app: %s, tier: %s}
spec:
  containers:
    - name: app
      image: busybox:1
      command: [httpd, -f, -p, "8080", -h, /www]
      env: {GREETING: %s}
      resources: {cpu: 250m, memory: 64Mi}
  failover: manual
`, name, ns, name, tier, greeting)
}

const grant = `kind: Grant
name: media
spec:
  namespaces: [media]
  privileges: ["hostPath:/srv/media:ro"]
`

// state is everything an operator can read of some objects: each one
// (or its absence), its history, each revision's content and its diff to
// the current object.
type state map[string]string

func readState(t *testing.T, c *testcluster.Cluster, refs []api.Ref) state {
	t.Helper()
	ctx := context.Background()
	cl := c.Client("")
	s := state{}
	put := func(k string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		s[k] = string(b)
	}
	for _, ref := range refs {
		name := strings.ToLower(ref.Kind) + "/" + ref.Name
		hist, err := cl.History(ctx, ref, nil)
		if err != nil {
			t.Fatalf("history of %s: %v", ref, err)
		}
		put(ref.String()+" history", hist)
		o, err := cl.Get(ctx, ref)
		if err != nil {
			put(ref.String(), err.Error())
		} else {
			put(ref.String(), o)
		}
		for _, e := range hist {
			at, err := cl.At(ctx, ref, e.Rev)
			if err != nil {
				put(fmt.Sprintf("%s@%d", ref, e.Rev), err.Error())
				continue
			}
			put(fmt.Sprintf("%s@%d", ref, e.Rev), at)
			if o.Name != "" {
				out, errs, _ := c.Run("", "diff", "-n", ref.Namespace, name, fmt.Sprint(e.Rev))
				s[fmt.Sprintf("%s diff %d", ref, e.Rev)] = out + errs
			}
		}
	}
	for _, k := range api.Kinds() {
		l, err := cl.List(ctx, k.Name, "", "")
		if err != nil {
			t.Fatal(err)
		}
		put("list "+k.Name, l.Items)
	}
	return s
}

func TestBackupRestore(t *testing.T) {
	a := testcluster.Up(t, filepath.Join(t.TempDir(), "data"))
	refs := []api.Ref{
		{Kind: "Pod", Namespace: "default", Name: "web"},
		{Kind: "Pod", Namespace: "default", Name: "api"},
		{Kind: "Pod", Namespace: "team", Name: "web"},
		{Kind: "Pod", Namespace: "default", Name: "gone"},
		{Kind: "Grant", Name: "media"},
	}
	apply := func(manifest string) { a.OK(manifest, "apply", "-f", "-") }
	apply(pod("default", "web", "hello", "front"))
	apply(pod("default", "web", "bonjour", "front"))
	apply(pod("default", "web", "hallo", "edge"))
	apply(pod("default", "api", "v1", "back"))
	apply(pod("default", "api", "v2", "back"))
	a.OK("", "rollback", "pod/api", "--to", "1")
	apply(pod("team", "web", "one", "front"))
	apply(pod("team", "web", "two", "front"))
	apply(pod("default", "gone", "x", "tmp"))
	apply(pod("default", "gone", "y", "tmp"))
	a.OK("", "delete", "pod/gone")
	apply(grant)
	viewer := a.Token("--operator", "watcher", "--role", "view")

	// Only an admin takes backups.
	file := filepath.Join(t.TempDir(), "cluster.tar")
	if _, errs, code := a.Run("", "--config", a.ConfigWithToken(viewer), "backup", file); code == 0 || !strings.Contains(errs, "admin") {
		t.Errorf("backup with a view token: exit %d, stderr %q; want refused, naming the admin role", code, errs)
	}

	// Back up a cluster at rest: the state read before and after the
	// backup is the same, so the backup holds exactly that.
	before := readState(t, a, refs)
	out := a.OK("", "backup", file)
	if again := readState(t, a, refs); !reflect.DeepEqual(again, before) {
		t.Fatalf("the cluster changed while it was backed up; compare:\n%v\n%v", before, again)
	}
	if !strings.Contains(out, "saved to "+file) || !strings.Contains(out, "Pod 3") || !strings.Contains(out, "Grant 1") {
		t.Errorf("backup printed:\n%s", out)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp left behind: %v", file, err)
	}
	var m struct {
		Format       string         `json:"format"`
		EtcdRevision int64          `json:"etcdRevision"`
		Objects      map[string]int `json:"objects"`
		Revisions    int            `json:"revisions"`
	}
	if err := json.Unmarshal([]byte(a.OK("", "backup", "inspect", file, "-o", "json")), &m); err != nil {
		t.Fatal(err)
	}
	// Revisions: web 3, api 3, team/web 2, gone 3 and its deletion, the
	// grant 1, and whatever controllers wrote to the pods.
	if m.Format != "skiff-backup/1" || m.Objects["Pod"] != 3 || m.Objects["Grant"] != 1 || m.Revisions < 12 || m.EtcdRevision == 0 {
		t.Errorf("manifest: %+v", m)
	}
	lastRev := func(c *testcluster.Cluster, ref api.Ref) int64 {
		h, err := c.Client("").History(context.Background(), ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		return h[len(h)-1].Rev
	}
	webRev, goneRev := lastRev(a, refs[0]), lastRev(a, refs[3])
	oldConfig := a.Config()
	a.Stop()

	// A damaged backup is refused, and leaves nothing behind.
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	damaged := filepath.Join(t.TempDir(), "damaged.tar")
	if err := os.WriteFile(damaged, b, 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "restored")
	if _, errs, code := a.Run("", "restore", damaged, "--data", fresh); code == 0 || !strings.Contains(errs, "checksum") {
		t.Errorf("restore of a damaged backup: exit %d, stderr %q; want refused with a checksum error", code, errs)
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("restore of a damaged backup left %s behind (%v)", fresh, err)
	}
	if _, errs, code := a.Run("", "backup", "inspect", damaged); code == 0 || !strings.Contains(errs, "checksum") {
		t.Errorf("inspect of a damaged backup: exit %d, stderr %q", code, errs)
	}

	// Restore writes over nothing: the old data directory is refused.
	if _, errs, code := a.Run("", "restore", file, "--data", a.Data); code == 0 || !strings.Contains(errs, "not empty") {
		t.Errorf("restore into the cluster's own data directory: exit %d, stderr %q; want refused", code, errs)
	}

	out = a.OK("", "restore", file, "--data", fresh)
	if !strings.Contains(out, "admin.token") || !strings.Contains(out, "Pod 3") {
		t.Errorf("restore printed:\n%s", out)
	}
	r := testcluster.Up(t, fresh)
	if after := readState(t, r, refs); !reflect.DeepEqual(after, before) {
		for k, v := range before {
			if after[k] != v {
				t.Errorf("after restore, %s:\n got  %s\n want %s", k, after[k], v)
			}
		}
		for k, v := range after {
			if _, ok := before[k]; !ok {
				t.Errorf("after restore, %s is new: %s", k, v)
			}
		}
	}

	// The tokens of before the backup still work (the viewer's too); the
	// restored server writes on from the old revisions.
	oldConfig.Servers = []string{r.URL}
	old, err := client.New(oldConfig)
	if err != nil {
		t.Fatal(err)
	}
	if id, _, err := old.Whoami(context.Background()); err != nil || id != "operator:admin" {
		t.Errorf("the old admin token on the restored server: %q, %v", id, err)
	}
	if _, errs, code := r.Run("", "--config", r.ConfigWithToken(viewer), "get", "pods"); code != 0 {
		t.Errorf("the viewer's token on the restored server: %s", errs)
	}
	if out := r.OK(pod("default", "web", "again", "edge"), "apply", "-f", "-"); out != fmt.Sprintf("pod/web configured (rev %d)\n", webRev+1) {
		t.Errorf("first write after restore printed %q, want rev %d", out, webRev+1)
	}
	if out := r.OK(pod("default", "gone", "back", "tmp"), "apply", "-f", "-"); out != fmt.Sprintf("pod/gone created (rev %d)\n", goneRev+1) {
		t.Errorf("re-creating the deleted pod after restore printed %q, want rev %d", out, goneRev+1)
	}
	l, err := r.Client("").List(context.Background(), "Pod", "", "")
	if err != nil || l.Revision <= m.EtcdRevision {
		t.Errorf("the restored store's revision %d (%v) is not past the backup's %d", l.Revision, err, m.EtcdRevision)
	}
}
