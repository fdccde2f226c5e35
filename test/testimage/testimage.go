// Package testimage makes what image and pod tests need without the
// internet: a small OCI image built from Debian's busybox-static, archives
// of it, and a real registry (Debian's docker-registry) on loopback.
package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BusyboxPath is where Debian's busybox-static puts its binary.
const BusyboxPath = "/bin/busybox"

// applets are linked to busybox in the image.
var applets = []string{"sh", "ls", "cat", "echo", "id", "sleep", "httpd", "wget", "timeout", "mount", "unshare",
	"touch", "ping", "nc", "env", "mkdir", "true", "false", "kill", "ps", "hostname", "grep", "date", "rm"}

// Busybox returns a one-layer image: /bin/busybox, its applets as
// symlinks, /www/index.html, /etc/passwd, and a config running sh. It
// needs Debian's busybox-static.
func Busybox() (v1.Image, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("no %s (Debian's busybox-static; scripts/install-deps.sh installs it): %w", BusyboxPath, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mod := time.Unix(1700000000, 0)
	dir := func(n string) { tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mod}) }
	file := func(n string, mode int64, b []byte) {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(b)), ModTime: mod})
		tw.Write(b)
	}
	dir("bin/")
	file("bin/busybox", 0o755, bin)
	for _, a := range applets {
		tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: mod})
	}
	dir("www/")
	file("www/index.html", 0o644, []byte("hello from skiff\n"))
	dir("etc/")
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/:/bin/sh\nweb:x:1500:1500:web:/www:/bin/sh\n"))
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"sh"}
	cfg.Config.Env = []string{"PATH=/bin"}
	return mutate.ConfigFile(img, cfg)
}

// BusyboxImage is Busybox for tests: it skips the test when busybox-static
// is not installed.
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skipf("no %s (Debian's busybox-static; scripts/install-deps.sh installs it)", BusyboxPath)
	}
	img, err := Busybox()
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// WriteOCIArchive writes img as an OCI image layout, tarred, with the
// reference name in its index annotations, and returns the file's path.
func WriteOCIArchive(t testing.TB, img v1.Image, ref string) string {
	t.Helper()
	dir := t.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": ref})); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	root := filepath.Join(dir, "layout")
	err = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = rel
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tw.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Registry is a docker-registry process serving on loopback.
type Registry struct {
	Addr string // 127.0.0.1:PORT
	cmd  *exec.Cmd
}

// NewRegistry runs Debian's docker-registry (binary bin) on a free
// loopback port, with its configuration and storage in dir, and returns
// once it answers. Stop ends it.
func NewRegistry(bin, dir string) (*Registry, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("docker-registry: %w", err)
	}
	r := &Registry{Addr: addr, cmd: cmd}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return r, nil
		}
		if time.Now().After(deadline) {
			r.Stop()
			return nil, fmt.Errorf("docker-registry on %s did not answer: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartRegistry is NewRegistry for tests: storage in a temporary
// directory, stopped when the test ends, the test skipped when the package
// is not installed.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skipf("no docker-registry (Debian's docker-registry; scripts/install-deps.sh installs it)")
	}
	r, err := NewRegistry(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// Stop ends the registry; safe to call twice.
func (r *Registry) Stop() {
	if r.cmd.Process != nil && r.cmd.ProcessState == nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}

// PushImage writes img to the registry as repo:tag and returns the
// reference.
func (r *Registry) PushImage(repoTag string, img v1.Image) (string, error) {
	ref, err := name.ParseReference(r.Addr+"/"+repoTag, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref.String(), nil
}

// Push is PushImage for tests.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := r.PushImage(repoTag, img)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// Pusher is a registry tests push to (lab.Lab is one).
type Pusher interface {
	PushImage(tag string, img v1.Image) (string, error)
}

// PushBusybox pushes the busybox image as tag (e.g. "busybox:e2e") and
// returns its reference; the test skips without busybox, like
// BusyboxImage.
func PushBusybox(t testing.TB, p Pusher, tag string) string {
	t.Helper()
	ref, err := p.PushImage(tag, BusyboxImage(t))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
