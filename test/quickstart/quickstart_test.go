// Package quickstart runs the README's quick start with the real skiff
// binary: `skiff up` with embedded etcd, then the CLI as an operator would
// type it, across a restart.
package quickstart

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// skiffBin is built once for the package.
var skiffBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skiff-quickstart-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	skiffBin = filepath.Join(dir, "skiff")
	build := exec.Command("go", "build", "-o", skiffBin, "../../cmd/skiff")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build skiff:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster is one `skiff up` process.
type cluster struct {
	t      *testing.T
	data   string
	env    []string
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	url    string
}

func startUp(t *testing.T, data string) *cluster {
	t.Helper()
	c := &cluster{t: t, data: data, stderr: &bytes.Buffer{}}
	home := filepath.Join(filepath.Dir(data), "home")
	c.env = append(os.Environ(), "HOME="+home, "SKIFF_CONFIG="+filepath.Join(data, "config"))
	c.cmd = exec.Command(skiffBin, "up", "--data", data, "--listen", "127.0.0.1:0")
	c.cmd.Env = c.env
	c.cmd.Stderr = c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "skiff is up at ") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		c.url = strings.Fields(line)[4]
	case <-time.After(60 * time.Second):
		t.Fatalf("skiff up did not say it was ready; stderr:\n%s", c.stderr)
	}
	return c
}

// stop sends Ctrl-C and expects a clean exit.
func (c *cluster) stop() {
	c.t.Helper()
	c.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			c.t.Fatalf("skiff up exited with %v after Ctrl-C; stderr:\n%s", err, c.stderr)
		}
	case <-time.After(30 * time.Second):
		c.t.Fatalf("skiff up did not stop within 30s of Ctrl-C")
	}
}

// run runs the CLI and returns stdout, stderr and the exit code.
func (c *cluster) run(stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(skiffBin, args...)
	cmd.Env = c.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// ok runs the CLI and fails the test unless it succeeds.
func (c *cluster) ok(stdin string, args ...string) string {
	c.t.Helper()
	out, errs, code := c.run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("skiff %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

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

func (c *cluster) pods() []pod {
	c.t.Helper()
	var ps []pod
	if err := json.Unmarshal([]byte(c.ok("", "get", "pods", "-o", "json")), &ps); err != nil {
		c.t.Fatal(err)
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

	if out := c.ok("", "apply", "-f", "../../examples/pod.yaml"); out != "pod/web created (rev 1)\n" {
		t.Fatalf("apply printed %q", out)
	}
	ps := c.pods()
	if len(ps) != 1 || ps[0].Name != "web" || ps[0].Spec.Containers[0].Env["GREETING"] != "hello" || ps[0].Meta.Revision != 1 {
		t.Fatalf("get pods -o json = %+v", ps)
	}

	edited := strings.Replace(example, "GREETING: hello", "GREETING: bonjour", 1)
	if out := c.ok(edited, "apply", "-f", "-"); out != "pod/web configured (rev 2)\n" {
		t.Fatalf("apply of the edit printed %q", out)
	}
	if out := c.ok(edited, "apply", "-f", "-"); out != "pod/web unchanged (rev 2)\n" {
		t.Fatalf("apply of the same edit printed %q", out)
	}

	var hist []struct {
		Rev     int64     `json:"rev"`
		Time    time.Time `json:"time"`
		Changer string    `json:"changer"`
		Cause   string    `json:"cause"`
	}
	if err := json.Unmarshal([]byte(c.ok("", "history", "pod/web", "-o", "json")), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Rev != 1 || hist[1].Rev != 2 || hist[1].Changer != "operator:admin" || hist[1].Cause != "apply" || hist[1].Time.IsZero() {
		t.Fatalf("history = %+v", hist)
	}
	if out := c.ok("", "history", "pod/web"); !strings.Contains(out, "CHANGER") || strings.Count(out, "operator:admin") != 2 {
		t.Errorf("history table:\n%s", out)
	}

	diff := c.ok("", "diff", "pod/web", "1")
	if !strings.Contains(diff, `spec.containers[0].env.GREETING: "hello" → "bonjour"`) || strings.Count(diff, "\n") != 2 {
		t.Errorf("diff pod/web 1:\n%s", diff)
	}

	if out := c.ok("", "rollback", "pod/web", "--to", "1"); out != "pod/web rolled back to revision 1 (rev 3)\n" {
		t.Fatalf("rollback printed %q", out)
	}
	if ps := c.pods(); ps[0].Spec.Containers[0].Env["GREETING"] != "hello" || ps[0].Meta.Revision != 3 || ps[0].Meta.Generation != 3 {
		t.Fatalf("after rollback: %+v", ps[0])
	}
	if out := c.ok("", "history", "pod/web", "--changer", "!operator:*"); strings.Contains(out, "operator:admin") {
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
		_, errs, code := c.run(tt.manifest, "apply", "-f", "-")
		if code == 0 {
			t.Errorf("%s: apply succeeded", name)
		}
		if !strings.Contains(errs, tt.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%s: stderr %q, want one line containing %q", name, errs, tt.want)
		}
	}
	if ps := c.pods(); len(ps) != 1 || ps[0].Meta.Revision != 3 {
		t.Fatalf("bad manifests changed the store: %+v", ps)
	}

	// A view-only operator can read but not write.
	viewTok := strings.TrimSpace(c.ok("", "token", "create", "--operator", "auditor", "--role", "view"))
	cfg, err := os.ReadFile(filepath.Join(data, "config"))
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Token string `yaml:"token"`
	}
	if err := yaml.Unmarshal(cfg, &parsed); err != nil || parsed.Token == "" {
		t.Fatalf("client config: %v", err)
	}
	admin := parsed.Token
	viewCfg := filepath.Join(t.TempDir(), "view-config")
	if err := os.WriteFile(viewCfg, bytes.Replace(cfg, []byte(admin), []byte(viewTok), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("", "--config", viewCfg, "get", "pods")
	_, errs, code := c.run(edited, "--config", viewCfg, "apply", "-f", "-")
	if code == 0 || !strings.Contains(errs, "operator:auditor has the view role") {
		t.Errorf("view operator apply: exit %d, %q", code, errs)
	}

	// Everything survives a restart of skiff up.
	c.stop()
	c = startUp(t, data)
	if ps := c.pods(); len(ps) != 1 || ps[0].Meta.Revision != 3 || ps[0].Spec.Containers[0].Env["GREETING"] != "hello" {
		t.Fatalf("after restart: %+v", ps)
	}
	if out := c.ok("", "history", "pod/web"); strings.Count(out, "\n") != 4 || !strings.Contains(out, "rollback to 1") {
		t.Errorf("history after restart:\n%s", out)
	}
	if diff2 := c.ok("", "diff", "pod/web", "1", "2"); diff2 != diff {
		t.Errorf("diff after restart:\n%s\nbefore:\n%s", diff2, diff)
	}

	// Delete keeps history; rollback brings the pod back.
	if out := c.ok("", "delete", "pod/web"); out != "pod/web deleted (rev 4)\n" {
		t.Errorf("delete printed %q", out)
	}
	if _, errs, code := c.run("", "get", "pod", "web"); code == 0 || !strings.Contains(errs, "pod/web: not found") {
		t.Errorf("get after delete: exit %d, %q", code, errs)
	}
	c.ok("", "rollback", "pod/web", "--to", "2")
	if ps := c.pods(); len(ps) != 1 || ps[0].Spec.Containers[0].Env["GREETING"] != "bonjour" || ps[0].Meta.Revision != 5 {
		t.Fatalf("rollback after delete: %+v", ps)
	}
	c.stop()
}

func TestUpRefusesSecondProcessOnSameData(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	c := startUp(t, data)
	cmd := exec.Command(skiffBin, "up", "--data", data, "--listen", "127.0.0.1:0")
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another skiff process") {
		t.Errorf("second skiff up on the same data: %v, %s", err, out)
	}
	c.stop()
}
