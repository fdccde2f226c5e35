//go:build linux

package runtime

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Shared by the root-only tests: built once in TestMain.
var (
	testShim   string // the skiff-shim binary (cmd/skiff-shim)
	testRootfs string // a busybox root filesystem
	testTmp    string // parent of per-test runtime roots (mode 0711)
	skipReason string // why root-only tests skip
)

const helperEnv = "SKIFF_RUNTIME_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	// The test binary is also `skiff shim`, wired as cmd/skiff wires it:
	// a Runtime with default Options runs it so (TestShimFallback).
	if len(os.Args) > 1 && os.Args[1] == "shim" {
		os.Exit(ShimMain(os.Args[2:]))
	}
	code := func() int {
		cleanup, err := setupRootTests()
		if err != nil {
			skipReason = err.Error()
		}
		defer cleanup()
		return m.Run()
	}()
	os.Exit(code)
}

func setupRootTests() (func(), error) {
	nop := func() {}
	if os.Geteuid() != 0 {
		return nop, fmt.Errorf("needs root (real runc, overlayfs, user namespaces); run go test as root")
	}
	if _, err := exec.LookPath("go"); err != nil {
		return nop, fmt.Errorf("needs the go tool to build cmd/skiff-shim: %v", err)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return nop, fmt.Errorf("needs runc (apt-get install runc): %v", err)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return nop, fmt.Errorf("needs busybox-static (apt-get install busybox-static): %v", err)
	}
	tmp, err := os.MkdirTemp("", "skiff-runtime-test-")
	if err != nil {
		return nop, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	// The containers' (unprivileged) roots must reach their bundles.
	if err := os.Chmod(tmp, 0o711); err != nil {
		return cleanup, err
	}
	testTmp = tmp
	testShim = filepath.Join(tmp, "skiff-shim")
	build := exec.Command("go", "build", "-o", testShim, "skiff.dev/skiff/cmd/skiff-shim")
	if out, err := build.CombinedOutput(); err != nil {
		return cleanup, fmt.Errorf("build shim: %v\n%s", err, out)
	}
	testRootfs = filepath.Join(tmp, "rootfs")
	if err := makeBusyboxRootfs(testRootfs, busybox); err != nil {
		return cleanup, fmt.Errorf("busybox rootfs: %v", err)
	}
	return cleanup, nil
}

// makeBusyboxRootfs builds a minimal image: /bin/busybox and a symlink per
// applet, /www for httpd, a text file that is executable but no program.
func makeBusyboxRootfs(dir, busybox string) error {
	for _, d := range []string{"bin", "etc", "www", "mnt", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return err
	}
	for _, a := range strings.Fields(string(out)) {
		if a == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return err
		}
	}
	files := map[string]string{
		"www/index.html": "hello from httpd\n",
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/:/bin/sh\n",
		"etc/group":      "root:x:0:\ntty:x:5:\napp:x:1000:\n",
		"bin/notaprog":   "this is text, not a program\n",
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			return err
		}
	}
	return os.Chmod(dir, 0o755)
}

func needRoot(t testing.TB) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

var idSeq atomic.Int32

// testID is a container id unique to this run (cgroups are global).
func testID(t testing.TB) string {
	var b [3]byte
	rand.Read(b[:])
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 30 {
		name = name[:30]
	}
	return fmt.Sprintf("%s-%d-%s", name, idSeq.Add(1), hex.EncodeToString(b[:]))
}

var userNSSeq atomic.Uint32

// testUserNS is a fresh 65536-ID host range per container.
func testUserNS() IDRange {
	n := userNSSeq.Add(1)
	return IDRange{HostID: 200000 + n*65536, Size: 65536}
}

// newTestRuntime returns a Runtime on a fresh root; at the end of the test
// it stops and removes every container and checks that nothing is left
// mounted.
func newTestRuntime(t testing.TB) (*Runtime, string) {
	t.Helper()
	return newTestRuntimeWith(t, Options{Shim: testShim})
}

// newTestRuntimeWith is newTestRuntime with other Options (Root is set).
func newTestRuntimeWith(t testing.TB, o Options) (*Runtime, string) {
	t.Helper()
	needRoot(t)
	root, err := os.MkdirTemp(testTmp, "root-")
	if err != nil {
		t.Fatal(err)
	}
	o.Root = root
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sts, _ := r.List()
		for _, st := range sts {
			r.Stop(context.Background(), st.ID, 0)
			if err := r.Remove(context.Background(), st.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if mps, _ := mountsUnder(root); len(mps) > 0 {
			t.Errorf("still mounted after removing every container: %v", mps)
		}
		os.RemoveAll(root)
	})
	return r, root
}

func testRuntimeOn(t testing.TB, root string) *Runtime {
	t.Helper()
	r, err := New(Options{Root: root, Shim: testShim})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testSpec(t testing.TB, args ...string) Spec {
	return Spec{
		ID:       testID(t),
		Rootfs:   testRootfs,
		Args:     args,
		Env:      []string{"PATH=/bin"},
		UID:      1000,
		GID:      1000,
		UserNS:   testUserNS(),
		Labels:   map[string]string{"pod": "default/web", "container": "app"},
		Hostname: "web-0",
	}
}

func startOK(t *testing.T, r *Runtime, s Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Start(ctx, s); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

// waitExited polls until the container has exited.
func waitExited(t *testing.T, r *Runtime, id string, within time.Duration) State {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := r.State(id)
		if err != nil {
			t.Fatalf("State: %v", err)
		}
		if st.Status == StatusExited {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not exit within %v: %+v\nshim log: %s", id, within, st, tailFile(r.path(id, fileShimLog), 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readLogs returns the container's log records.
func readLogs(t *testing.T, r *Runtime, id string) []string {
	t.Helper()
	var recs []string
	for _, p := range r.Logs(id) {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			recs = append(recs, sc.Text())
		}
		f.Close()
	}
	return recs
}

// helperMain is the test binary run as a throwaway agent: it starts one
// container and then waits to be killed.
func helperMain() int {
	var in struct {
		Options Options
		Spec    Spec
	}
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := New(in.Options)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := r.Start(context.Background(), in.Spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("started")
	time.Sleep(time.Hour)
	return 0
}
