// Package quickstart runs the README's quick start with the real skiff
// binary: `skiff up` with embedded etcd, then the CLI as an operator would
// type it, across a restart.
package quickstart

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/test/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

type cluster = testcluster.Cluster

func startUp(t *testing.T, data string) *cluster { return testcluster.Up(t, data) }

type pod struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	Spec   struct {
		Containers []struct {
			Env map[string]string `json:"env"`
		} `json:"containers"`
	} `json:"spec"`
	Meta struct {
		Revision   int64 `json:"revision"`
		Generation int64 `json:"generation"`
	} `json:"meta"`
}

func pods(c *cluster) []pod {
	var ps []pod
	if err := json.Unmarshal([]byte(c.OK("", "get", "pods", "-o", "json")), &ps); err != nil {
		panic(err)
	}
	return ps
}

func readExample(t *testing.T) string {
	b, err := os.ReadFile("../../examples/pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestQuickStart(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	c := startUp(t, data)
	example := readExample(t)

	if out := c.OK("", "apply", "-f", "../../examples/pod.yaml"); out != "pod/web created (rev 1)\n" {
		t.Fatalf("apply printed %q", out)
	}
	ps := pods(c)
	if len(ps) != 1 || ps[0].Name != "web" || ps[0].Spec.Containers[0].Env["GREETING"] != "hello" || ps[0].Meta.Revision != 1 {
		t.Fatalf("get pods -o json = %+v", ps)
	}

	edited := strings.Replace(example, "GREETING: hello", "GREETING: bonjour", 1)
	if out := c.OK(edited, "apply", "-f", "-"); out != "pod/web configured (rev 2)\n" {
		t.Fatalf("apply of the edit printed %q", out)
	}
	if out := c.OK(edited, "apply", "-f", "-"); out != "pod/web unchanged (rev 2)\n" {
		t.Fatalf("apply of the same edit printed %q", out)
	}

	var hist []struct {
		Rev     int64     `json:"rev"`
		Time    time.Time `json:"time"`
		Changer string    `json:"changer"`
		Cause   string    `json:"cause"`
	}
	if err := json.Unmarshal([]byte(c.OK("", "history", "pod/web", "-o", "json")), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Rev != 1 || hist[1].Rev != 2 || hist[1].Changer != "operator:admin" || hist[1].Cause != "apply" || hist[1].Time.IsZero() {
		t.Fatalf("history = %+v", hist)
	}
	if out := c.OK("", "history", "pod/web"); !strings.Contains(out, "CHANGER") || strings.Count(out, "operator:admin") != 2 {
		t.Errorf("history table:\n%s", out)
	}

	diff := c.OK("", "diff", "pod/web", "1")
	if !strings.Contains(diff, `spec.containers[0].env.GREETING: "hello" → "bonjour"`) || strings.Count(diff, "\n") != 2 {
		t.Errorf("diff pod/web 1:\n%s", diff)
	}

	if out := c.OK("", "rollback", "pod/web", "--to", "1"); out != "pod/web rolled back to revision 1 (rev 3)\n" {
		t.Fatalf("rollback printed %q", out)
	}
	if ps := pods(c); ps[0].Spec.Containers[0].Env["GREETING"] != "hello" || ps[0].Meta.Revision != 3 || ps[0].Meta.Generation != 3 {
		t.Fatalf("after rollback: %+v", ps[0])
	}
	if out := c.OK("", "history", "pod/web", "--changer", "!operator:*"); strings.Contains(out, "operator:admin") {
		t.Errorf("history excluding operators still lists them:\n%s", out)
	}

	// Bad manifests: one line naming the field, and nothing changes.
	bad := map[string]struct{ manifest, want string }{
		"unknown field": {strings.Replace(example, "image: busybox:1", "image: busybox:1\n      imagee: x", 1), "spec.containers[0].imagee: unknown field"},
		"wrong type":    {strings.Replace(example, `command: [httpd, -f, -p, "8080", -h, /www]`, "command: httpd", 1), "spec.containers[0].command: expected a list"},
		"bad quantity":  {strings.Replace(example, "memory: 64Mi", "memory: 64MB", 1), `spec.containers[0].resources.memory: "64MB" is not a quantity (use 64Mi)`},
		"duplicate doc": {strings.Replace(example, "hello", "hi", 1) + "---\n" + example, "pod/web: defined twice"},
		"empty file":    {"", "no objects found"},
	}
	for name, tt := range bad {
		_, errs, code := c.Run(tt.manifest, "apply", "-f", "-")
		if code == 0 {
			t.Errorf("%s: apply succeeded", name)
		}
		if !strings.Contains(errs, tt.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%s: stderr %q, want one line containing %q", name, errs, tt.want)
		}
	}
	if ps := pods(c); len(ps) != 1 || ps[0].Meta.Revision != 3 {
		t.Fatalf("bad manifests changed the store: %+v", ps)
	}

	// A view-only operator can read but not write.
	viewCfg := c.ConfigWithToken(c.Token("--operator", "auditor", "--role", "view"))
	c.OK("", "--config", viewCfg, "get", "pods")
	_, errs, code := c.Run(edited, "--config", viewCfg, "apply", "-f", "-")
	if code == 0 || !strings.Contains(errs, "operator:auditor has the view role") {
		t.Errorf("view operator apply: exit %d, %q", code, errs)
	}

	// Everything survives a restart of skiff up.
	c.Stop()
	c = startUp(t, data)
	if ps := pods(c); len(ps) != 1 || ps[0].Meta.Revision != 3 || ps[0].Spec.Containers[0].Env["GREETING"] != "hello" {
		t.Fatalf("after restart: %+v", ps)
	}
	if out := c.OK("", "history", "pod/web"); strings.Count(out, "\n") != 4 || !strings.Contains(out, "rollback to 1") {
		t.Errorf("history after restart:\n%s", out)
	}
	if diff2 := c.OK("", "diff", "pod/web", "1", "2"); diff2 != diff {
		t.Errorf("diff after restart:\n%s\nbefore:\n%s", diff2, diff)
	}

	// Delete runs the pod's deletion workflow and keeps history; rollback
	// brings the pod back.
	if out := c.OK("", "delete", "pod/web"); out != "pod/web deleted (rev 5)\n" {
		t.Errorf("delete printed %q", out)
	}
	if _, errs, code := c.Run("", "get", "pod", "web"); code == 0 || !strings.Contains(errs, "pod/web: not found") {
		t.Errorf("get after delete: exit %d, %q", code, errs)
	}
	c.OK("", "rollback", "pod/web", "--to", "2")
	if out := c.OK("", "history", "pod/web"); !strings.Contains(out, "delete requested") || !strings.Contains(out, "controller:workflow  delete: stopped") {
		t.Errorf("history after delete:\n%s", out)
	}
	if ps := pods(c); len(ps) != 1 || ps[0].Spec.Containers[0].Env["GREETING"] != "bonjour" || ps[0].Meta.Revision != 6 {
		t.Fatalf("rollback after delete: %+v", ps)
	}
	c.Stop()
}

func TestUpRefusesSecondProcessOnSameData(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	c := startUp(t, data)
	cmd := exec.Command(testcluster.Binary, "up", "--data", data, "--listen", "127.0.0.1:0")
	cmd.Env = c.Env
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another skiff process") {
		t.Errorf("second skiff up on the same data: %v, %s", err, out)
	}
	c.Stop()
}

// TestPodPrefix: the cluster's pod prefix is checked before anything is
// served, fixed at the first start, and a later --pod-prefix may repeat it
// but not change it.
func TestPodPrefix(t *testing.T) {
	bad := []struct{ prefix, want string }{
		{"10.0.0.0/8", "is not IPv6"},
		{"fe80::/48", "neither unique local (fc00::/7) nor global unicast (2000::/3)"},
		{"fd00:1:2:3::/64", "too small: give a /56 or larger"},
		{"fd00:1:2::", "an address, not a prefix"},
	}
	for _, tt := range bad {
		cmd := exec.Command(testcluster.Binary, "server", "--data", filepath.Join(t.TempDir(), "data"),
			"--listen", "127.0.0.1:0", "--pod-prefix", tt.prefix)
		out, err := cmd.CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err == nil || !strings.Contains(lines[len(lines)-1], tt.want) || !strings.Contains(lines[len(lines)-1], "--pod-prefix") {
			t.Errorf("skiff server --pod-prefix %s: %v\n%s\nwant a last line naming --pod-prefix and %q", tt.prefix, err, out, tt.want)
		}
	}

	data := filepath.Join(t.TempDir(), "data")
	c := testcluster.Up(t, data, "--pod-prefix", "fd00:5c:1::/48")
	c.Stop()
	c = testcluster.Up(t, data, "--pod-prefix", "fd00:5c:1::/48")
	c.Stop()
	cmd := exec.Command(testcluster.Binary, "up", "--agent=false", "--data", data, "--listen", "127.0.0.1:0", "--pod-prefix", "fd00:5c:2::/48")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "this cluster already uses pod prefix fd00:5c:1::/48") {
		t.Errorf("a second start with another --pod-prefix: %v\n%s", err, out)
	}
}
