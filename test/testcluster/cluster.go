// Package testcluster runs the real skiff binary for tests: it builds it
// once, starts `skiff up` on a fresh data directory with a free port, and
// runs CLI commands against it as an operator would type them.
package testcluster

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"skiff.dev/skiff/agent/netns"
	"skiff.dev/skiff/client"
)

// Binary is the skiff binary Build made.
var Binary string

// Build compiles cmd/skiff and cmd/skiff-shim into a temporary directory,
// as `make build` puts them side by side (agents then run skiff-shim for
// each container); call it from TestMain and the returned cleanup after
// m.Run.
func Build() (cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "skiff-test-bin-")
	if err != nil {
		return nil, err
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	Binary = filepath.Join(dir, "skiff")
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/skiff", "./cmd/skiff-shim")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("build skiff: %w", err)
	}
	return func() { os.RemoveAll(dir) }, nil
}

// Main is a TestMain that builds the binary first.
func Main(m *testing.M) {
	cleanup, err := Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// Cluster is one `skiff up` process.
type Cluster struct {
	t      *testing.T
	Data   string
	Env    []string
	cmd    *exec.Cmd
	stderr *LockedBuffer
	URL    string
}

// Up starts `skiff up` on data, with extra flags, and waits until it
// says it is ready. It runs no local agent unless flags say --agent=true:
// an agent would pull the images of the tests' pods from the internet.
func Up(t *testing.T, data string, flags ...string) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Data: data, stderr: &LockedBuffer{}}
	home := filepath.Join(filepath.Dir(data), "home")
	c.Env = append(os.Environ(), "HOME="+home, "SKIFF_CONFIG="+filepath.Join(data, "config"))
	c.cmd = exec.Command(Binary, append([]string{"up", "--data", data, "--listen", "127.0.0.1:0", "--agent=false"}, flags...)...)
	for _, f := range flags {
		if f == "--agent=true" || f == "--agent" {
			KeepHostNetwork(t)
		}
	}
	c.cmd.Env = c.Env
	c.cmd.Stderr = c.stderr
	// If the test binary dies (a timeout, a crash), so does skiff up.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
		c.URL = strings.Fields(line)[4]
	case <-time.After(60 * time.Second):
		t.Fatalf("skiff up did not say it was ready; stderr:\n%s", c.stderr)
	}
	return c
}

// Kill ends skiff up with SIGKILL, as a crash would.
func (c *Cluster) Kill() {
	c.t.Helper()
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// Stop sends Ctrl-C and expects a clean exit.
func (c *Cluster) Stop() {
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

// Run runs the CLI and returns stdout, stderr and the exit code.
func (c *Cluster) Run(stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(Binary, args...)
	cmd.Env = c.Env
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

// OK runs the CLI and fails the test unless it succeeds.
func (c *Cluster) OK(stdin string, args ...string) string {
	c.t.Helper()
	out, errs, code := c.Run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("skiff %s: exit %d: %s\nskiff up's log, last lines:\n%s", strings.Join(args, " "), code, errs, c.LogTail(30))
	}
	return out
}

// Config returns the admin client config skiff up wrote.
func (c *Cluster) Config() client.Config {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Data, "config"))
	if err != nil {
		c.t.Fatal(err)
	}
	var cfg client.Config
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		c.t.Fatal(err)
	}
	return cfg
}

// Client returns a Go client with the given token (the admin's if "").
func (c *Cluster) Client(token string) *client.Client {
	c.t.Helper()
	cfg := c.Config()
	if token != "" {
		cfg.Token = token
	}
	cl, err := client.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// Token creates a token with the CLI: "--operator", "alice", "--role", "view".
func (c *Cluster) Token(args ...string) string {
	c.t.Helper()
	return strings.TrimSpace(c.OK("", append([]string{"token", "create"}, args...)...))
}

// ConfigWithToken writes a client config that uses another token and
// returns its path.
func (c *Cluster) ConfigWithToken(token string) string {
	c.t.Helper()
	cfg := c.Config()
	cfg.Token = token
	p := filepath.Join(c.t.TempDir(), "config")
	if err := cfg.Save(p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// KeepHostNetwork puts back, when t ends, what an agent running in this
// machine's own network namespace changes there for its pods: it turns on
// forwarding and adds the egress table `ip skiff` (pod veths and routes
// go with the pods). Tests that run an agent outside a namespace of their
// own call it before starting one.
func KeepHostNetwork(t testing.TB) {
	restore, err := netns.KeepHost()
	if err != nil {
		t.Fatalf("save the host's network: %v", err)
	}
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Errorf("put the host's network back: %v", err)
		}
	})
}

// LogTail returns the last n lines skiff up logged (server and agent).
func (c *Cluster) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(c.stderr.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// LockedBuffer collects a child process's output while a test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// LogWriter sends what is written to it, a line at a time, to the test's
// log: give it as a lab's Config.Log.
type LogWriter struct{ T testing.TB }

func (w LogWriter) Write(b []byte) (int, error) {
	w.T.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
