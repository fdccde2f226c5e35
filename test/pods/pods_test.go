// Package pods_test runs real pods: `skiff up` with its node agent, an
// image built from Debian's busybox-static and pushed to a registry on
// loopback, runc, overlayfs and user namespaces, driven through the CLI.
package pods_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"skiff.dev/skiff/test/testcluster"
	"skiff.dev/skiff/test/testimage"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running pods needs root (runc, user and network namespaces); CI runs as root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("no runc (scripts/install-deps.sh installs it)")
	}
}

type podStatus struct {
	Meta struct {
		Revision   int64 `json:"revision"`
		Generation int64 `json:"generation"`
	} `json:"meta"`
	Status struct {
		Phase      string `json:"phase"`
		Node       string `json:"node"`
		Message    string `json:"message"`
		Containers []struct {
			Name     string `json:"name"`
			State    string `json:"state"`
			Restarts int    `json:"restarts"`
			ExitCode *int   `json:"exitCode"`
		} `json:"containers"`
	} `json:"status"`
}

func getPod(t *testing.T, c *testcluster.Cluster, name string) podStatus {
	t.Helper()
	var p podStatus
	out, errs, code := c.Run("", "get", "pod", name, "-o", "json")
	if code != 0 {
		t.Fatalf("get pod %s: %s", name, errs)
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitPod polls until cond holds for the pod, or fails with its why.
func waitPod(t *testing.T, c *testcluster.Cluster, name, what string, cond func(podStatus) bool) podStatus {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		p := getPod(t, c, name)
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			why, _, _ := c.Run("", "why", "pod/"+name)
			t.Fatalf("pod/%s: %s did not happen within 90s; status %+v\n%s", name, what, p.Status, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (p podStatus) container(name string) (state string, restarts int, exit *int) {
	for _, c := range p.Status.Containers {
		if c.Name == name {
			return c.State, c.Restarts, c.ExitCode
		}
	}
	return "absent", -1, nil
}

func running(p podStatus) bool { return p.Status.Phase == "Running" }

const webPod = `kind: Pod
name: web
spec:
  containers:
    - name: app
      image: IMAGE
      command: [sh, -c, 'echo "$GREETING" > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']
      env: {GREETING: hello}
      resources: {cpu: 250m, memory: 64Mi}
    - name: side
      image: IMAGE
      command: [sh, -c, 'while true; do wget -qO- http://127.0.0.1:8080/index.html; sleep 0.3; done']
`

// exec runs skiff exec and returns stdout and the exit code.
func execIn(t *testing.T, c *testcluster.Cluster, pod, container string, cmd ...string) (string, int) {
	t.Helper()
	out, errs, code := c.Run("", append([]string{"exec", pod, "-c", container, "--"}, cmd...)...)
	if code != 0 && strings.HasPrefix(errs, "skiff:") {
		t.Fatalf("skiff exec %s: %s", strings.Join(cmd, " "), errs)
	}
	return out, code
}

// containerPid reads the host pid of a running container from the
// runtime's state under the agent's data directory.
func containerPid(t *testing.T, data, pod, container string) int {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(data, "agent", "runtime", "containers", "default_"+pod+"_"+container+"_*", "started.json"))
	if len(matches) == 0 {
		t.Fatalf("no runtime state for %s/%s", pod, container)
	}
	b, err := os.ReadFile(matches[len(matches)-1])
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Pid == 0 {
		t.Fatalf("started.json %s: %s", matches[0], b)
	}
	return st.Pid
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestPodLifecycle(t *testing.T) {
	requireRoot(t)
	reg := testimage.StartRegistry(t)
	image := reg.Push(t, "skiff/busybox:1", testimage.BusyboxImage(t))
	data := filepath.Join(t.TempDir(), "data")
	up := func() *testcluster.Cluster {
		return testcluster.Up(t, data, "--agent=true", "--node-name", "n1", "--insecure-registry", reg.Addr)
	}
	c := up()
	t.Cleanup(func() { cleanupPods(t, data) })
	manifest := strings.ReplaceAll(webPod, "IMAGE", image)
	c.OK(manifest, "apply", "-f", "-")
	p := waitPod(t, c, "web", "Running", running)
	if p.Status.Node != "n1" {
		t.Errorf("node = %q, want n1", p.Status.Node)
	}

	// Two containers share the pod's network: side fetches app's page.
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs := c.OK("", "logs", "web", "-c", "side", "--tail", "5")
		if strings.Contains(logs, "stdout hello") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("side never fetched app's page; its logs:\n%s", logs)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The default sandbox, seen from inside.
	if out, code := execIn(t, c, "web", "app", "id", "-u"); code != 0 || strings.TrimSpace(out) == "0" || strings.TrimSpace(out) != "1000" {
		t.Errorf("id -u = %q (exit %d), want 1000", out, code)
	}
	if _, code := execIn(t, c, "web", "app", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exit code passthrough: %d, want 7", code)
	}
	for _, cmd := range [][]string{
		{"mount", "-t", "tmpfs", "x", "/tmp"},
		{"unshare", "-r", "true"},
		{"touch", "/x"},
		{"sh", "-c", "echo b > /proc/sysrq-trigger"},
		{"ping", "-c", "1", "-W", "1", "127.0.0.1"},
	} {
		if _, code := execIn(t, c, "web", "app", cmd...); code == 0 {
			t.Errorf("%s succeeded inside a default pod", strings.Join(cmd, " "))
		}
	}
	if _, code := execIn(t, c, "web", "app", "touch", "/tmp/x"); code != 0 {
		t.Errorf("writing /tmp failed: exit %d", code)
	}
	pid := containerPid(t, data, "web", "app")
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "Uid:") {
			f := strings.Fields(l)
			if uid, _ := strconv.Atoi(f[1]); uid == 0 || uid < 1<<20 {
				t.Errorf("container's host uid is %d: want one from the pod's range, never 0", uid)
			}
		}
	}

	// Change env: app restarts in place, side does not, same node.
	edited := strings.Replace(manifest, "GREETING: hello", "GREETING: bonjour", 1)
	c.OK(edited, "apply", "-f", "-")
	p = waitPod(t, c, "web", "app restarted with the new env", func(p podStatus) bool {
		st, r, _ := p.container("app")
		return p.Meta.Generation == 2 && st == "running" && r == 1
	})
	if _, r, _ := p.container("side"); r != 0 || p.Status.Node != "n1" {
		t.Errorf("side restarts %d (want 0), node %s", r, p.Status.Node)
	}
	waitLogs(t, c, "web", "side", "stdout bonjour")
	// Roll back: the image is on the node already, so it is quick.
	c.OK("", "rollback", "pod/web", "--to", "1")
	waitPod(t, c, "web", "app restarted for the rollback", func(p podStatus) bool {
		_, r, _ := p.container("app")
		return p.Meta.Generation == 3 && r == 2 && running(p)
	})
	waitLogs(t, c, "web", "side", "stdout hello")

	// An image imported from an OCI archive runs with no registry at all.
	imported := reg.Addr + "/imported/busybox:1"
	archive := testimage.WriteOCIArchive(t, testimage.BusyboxImage(t), imported)
	if out := c.OK("", "image", "import", archive); !strings.Contains(out, imported+"@sha256:") || !strings.Contains(out, "on node n1") {
		t.Errorf("image import printed %q", out)
	}
	c.OK("kind: Pod\nname: offline\nspec:\n  containers:\n    - name: main\n      image: "+imported+"\n      command: [sleep, '600']\n", "apply", "-f", "-")
	waitPod(t, c, "offline", "Running from the imported image", running)
	c.OK("", "delete", "pod/offline")

	// A job that ends while the agent is down: its exit code is not lost.
	job := strings.NewReplacer("name: web", "name: job", "restart: always", "").Replace(
		"kind: Pod\nname: job\nspec:\n  restart: never\n  containers:\n    - name: main\n      image: " + image + "\n      command: [sh, -c, 'sleep 4; exit 3']\n")
	c.OK(job, "apply", "-f", "-")
	waitPod(t, c, "job", "Running", running)
	appPid := containerPid(t, data, "web", "app")

	// kill -9 of skiff up (server and agent): containers keep running.
	c.Kill()
	time.Sleep(5 * time.Second) // the job ends meanwhile
	if !alive(appPid) {
		t.Fatalf("container app died with the agent")
	}
	c = up()
	p = waitPod(t, c, "job", "exit code 3 reported", func(p podStatus) bool {
		_, _, code := p.container("main")
		return code != nil && *code == 3 && p.Status.Phase == "Failed"
	})
	p = getPod(t, c, "web")
	if _, r, _ := p.container("app"); r != 2 || !running(p) || containerPid(t, data, "web", "app") != appPid {
		t.Errorf("web after agent restart: restarts %d, phase %s: want the same container re-adopted", r, p.Status.Phase)
	}

	// Delete: containers stop and nothing is left behind.
	c.OK("", "delete", "pod/web", "pod/job")
	if alive(appPid) {
		t.Errorf("container app still runs after delete")
	}
	left, _ := filepath.Glob(filepath.Join(data, "agent", "runtime", "containers", "default_web_*"))
	if len(left) > 0 {
		t.Errorf("runtime state left after delete: %v", left)
	}
	c.Stop()
}

func waitLogs(t *testing.T, c *testcluster.Cluster, pod, container, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs := c.OK("", "logs", pod, "-c", container, "--tail", "3")
		if strings.Contains(logs, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs of %s/%s never showed %q:\n%s", pod, container, want, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cleanupPods kills whatever containers a failed test left running.
func cleanupPods(t *testing.T, data string) {
	states, _ := filepath.Glob(filepath.Join(data, "agent", "runtime", "containers", "*", "started.json"))
	for _, s := range states {
		b, _ := os.ReadFile(s)
		var st struct {
			Pid int `json:"pid"`
		}
		if json.Unmarshal(b, &st) == nil && st.Pid > 0 {
			syscall.Kill(st.Pid, syscall.SIGKILL)
		}
	}
	shims, _ := filepath.Glob(filepath.Join(data, "agent", "runtime", "containers", "*", "shim.json"))
	for _, s := range shims {
		b, _ := os.ReadFile(s)
		var st struct {
			Pid int `json:"pid"`
		}
		if json.Unmarshal(b, &st) == nil && st.Pid > 0 {
			syscall.Kill(st.Pid, syscall.SIGKILL)
		}
	}
	exec.Command("sh", "-c", "grep -o ' "+data+"[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l").Run()
}
