package pods_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"skiff.dev/skiff/test/testcluster"
	"skiff.dev/skiff/test/testimage"
)

// TestPrivilegesNeedGrantAndRequest checks the double opt-in: a pod gets a
// host path (/srv/x, as in the issue) only if it asks for it and an
// operator's Grant allows it.
func TestPrivilegesNeedGrantAndRequest(t *testing.T) {
	requireRoot(t)
	// Made before the cluster, so that it is removed after the cluster and
	// its pods are gone.
	host, marker := hostDir(t, "/srv/x")
	c, data, image := nodeCluster(t)
	file := filepath.Join(host, marker)

	pod := func(name, privileges string) string {
		m := "kind: Pod\nname: " + name + "\nspec:\n  containers:\n    - name: main\n      image: " + image +
			"\n      command: [sleep, '600']\n"
		if privileges != "" {
			m += "  privileges: [" + privileges + "]\n"
		}
		return m
	}

	// Requested, not granted: refused at admission, naming what is missing.
	c.OK(pod("asks", `"hostPath:`+host+`:ro"`), "apply", "-f", "-")
	deadline := time.Now().Add(30 * time.Second)
	for {
		why := c.OK("", "why", "pod/asks")
		if strings.Contains(why, "privilege hostPath:"+host+":ro is not granted to pods in namespace default") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("why pod/asks does not name the missing grant:\n%s", why)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if p := getPod(t, c, "asks"); p.Status.Node != "" || p.Status.Phase == "Running" {
		t.Errorf("an ungranted pod was placed or ran: %+v", p.Status)
	}

	grant := "kind: Grant\nname: srv-x\nspec:\n  namespaces: [default]\n  privileges: [\"hostPath:" + host + ":ro\"]\n"
	c.OK(grant, "apply", "-f", "-")

	// Granted, not requested: no such mount.
	c.OK(pod("plain", ""), "apply", "-f", "-")
	waitPod(t, c, "plain", "Running", running)
	if out, code := execIn(t, c, "plain", "main", "cat", file); code == 0 {
		t.Errorf("a pod that did not request the host path reads it: %q", out)
	}

	// Granted and requested (the first pod, retried): mounted read-only.
	c.OK(pod("asks", `"hostPath:`+host+`:ro"`)+"  restart: always\n", "apply", "-f", "-")
	waitPod(t, c, "asks", "Running", running)
	if out, code := execIn(t, c, "asks", "main", "cat", file); code != 0 || out != "from the host\n" {
		t.Errorf("reading the granted host path: %q, exit %d", out, code)
	}
	written := file + "-written"
	t.Cleanup(func() { os.Remove(written) })
	if _, code := execIn(t, c, "asks", "main", "touch", written); code == 0 {
		t.Errorf("a read-only host path is writable")
	}
	if _, err := os.Stat(written); err == nil {
		t.Errorf("the container wrote into the host directory")
	}

	// Removing the grant keeps the pod running, marked.
	c.OK("", "delete", "grant/srv-x")
	deadline = time.Now().Add(30 * time.Second)
	for {
		why := c.OK("", "why", "pod/asks")
		if strings.Contains(why, "running with privileges no longer granted: hostPath:"+host+":ro") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("why pod/asks does not say its privileges are no longer granted:\n%s", why)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if p := getPod(t, c, "asks"); !running(p) {
		t.Errorf("removing the grant stopped the pod: %+v", p.Status)
	}
	// ... but once its container ends, it is not restarted with them.
	time.Sleep(11 * time.Second) // the agent asks about grants every 10s
	syscall.Kill(containerPid(t, data, "asks", "main"), syscall.SIGKILL)
	p := waitPod(t, c, "asks", "the container not restarted", func(p podStatus) bool {
		st, _, _ := p.container("main")
		return st == "exited" && strings.Contains(p.Status.Message, "not restarted: it runs with privileges no longer granted")
	})
	time.Sleep(3 * time.Second) // past the first restart backoff
	if st, r, _ := getPod(t, c, "asks").container("main"); st != "exited" || r != 0 {
		t.Errorf("after the grant was removed the container came back: %s, %d restarts (%+v)", st, r, p.Status)
	}
	c.OK("", "delete", "pod/asks", "pod/plain")
	c.Stop()
}

// TestHostNetwork: granted and requested, a pod's containers share the
// node's network namespace instead of having their own.
func TestHostNetwork(t *testing.T) {
	c, data, image := nodeCluster(t)
	c.OK("kind: Grant\nname: hostnet\nspec:\n  namespaces: [default]\n  privileges: [hostNetwork]\n", "apply", "-f", "-")
	for _, name := range []string{"host", "own"} {
		m := "kind: Pod\nname: " + name + "\nspec:\n  containers:\n    - name: main\n      image: " + image + "\n      command: [sleep, '600']\n"
		if name == "host" {
			m += "  privileges: [hostNetwork]\n"
		}
		c.OK(m, "apply", "-f", "-")
		waitPod(t, c, name, "Running", running)
	}
	// The agent runs inside skiff up: its network namespace is the node's.
	agentNS, _ := os.Readlink("/proc/self/ns/net")
	for name, wantHost := range map[string]bool{"host": true, "own": false} {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", containerPid(t, data, name, "main")))
		if err != nil {
			t.Fatal(err)
		}
		if (ns == agentNS) != wantHost {
			t.Errorf("pod %s: network namespace %s, node's %s; want shared = %v", name, ns, agentNS, wantHost)
		}
	}
	c.OK("", "delete", "pod/host", "pod/own")
	c.Stop()
}

// TestHostUser: granted and requested, a container runs without a user
// namespace, as the same uid on the host; still with no capabilities.
func TestHostUser(t *testing.T) {
	c, data, image := nodeCluster(t)
	c.OK("kind: Grant\nname: hostuser\nspec:\n  namespaces: [default]\n  privileges: [hostUser]\n", "apply", "-f", "-")
	c.OK("kind: Pod\nname: hu\nspec:\n  privileges: [hostUser]\n  containers:\n    - name: main\n      image: "+image+"\n      command: [sleep, '600']\n", "apply", "-f", "-")
	waitPod(t, c, "hu", "Running", running)
	pid := containerPid(t, data, "hu", "main")
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if !strings.Contains(string(status), "\nUid:\t1000\t") {
		t.Errorf("host uid of a hostUser container is not 1000:\n%s", status)
	}
	if !strings.Contains(string(status), "\nCapEff:\t0000000000000000") {
		t.Errorf("a hostUser container has capabilities:\n%s", status)
	}
	self, _ := os.Readlink("/proc/self/ns/user")
	if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid)); ns != self {
		t.Errorf("hostUser container in user namespace %s, host's is %s", ns, self)
	}
	c.OK("", "delete", "pod/hu")
	c.Stop()
}

// hostDir makes dir on the host, with its missing parents, and puts a marker
// file reading "from the host" in it, named uniquely so that a directory
// that was already there is left as it was. Cleanup removes the marker and
// whatever of dir and its parents the test made, even if it fails.
func hostDir(t *testing.T, dir string) (string, string) {
	t.Helper()
	var made []string // outermost first
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !os.IsNotExist(err) {
			t.Fatal(err)
		}
		made = append([]string{d}, made...)
	}
	marker := fmt.Sprintf("skiff-test-%d", os.Getpid())
	t.Cleanup(func() {
		os.Remove(filepath.Join(dir, marker))
		for i := len(made) - 1; i >= 0; i-- {
			if err := os.Remove(made[i]); err != nil {
				t.Errorf("removing %s, which the test made: %v", made[i], err)
			}
		}
	})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, marker), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, marker
}

// nodeCluster starts a registry holding the busybox test image and skiff up
// with its agent as node n1; it cleans up whatever pods leave behind.
func nodeCluster(t *testing.T) (c *testcluster.Cluster, data, image string) {
	t.Helper()
	requireRoot(t)
	reg := testimage.StartRegistry(t)
	image = reg.Push(t, "skiff/busybox:1", testimage.BusyboxImage(t))
	data = filepath.Join(t.TempDir(), "data")
	c = testcluster.Up(t, data, "--agent=true", "--node-name", "n1", "--insecure-registry", reg.Addr)
	t.Cleanup(func() { cleanupPods(t, data) })
	return c, data, image
}
