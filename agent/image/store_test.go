//go:build linux

package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func openStore(t testing.TB, o Options) *Store {
	t.Helper()
	if o.Dir == "" {
		o.Dir = filepath.Join(t.TempDir(), "cache")
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var wantConfig = Config{
	Entrypoint: testConfig.Entrypoint,
	Cmd:        testConfig.Cmd,
	Env:        testConfig.Env,
	WorkingDir: testConfig.WorkingDir,
	User:       testConfig.User,
}

// checkBusybox checks an imported or pulled busybox image.
func checkBusybox(t *testing.T, s *Store, img Image, wantName, wantDigest string) {
	t.Helper()
	if img.Name != wantName {
		t.Errorf("Name = %q, want %q", img.Name, wantName)
	}
	if img.Digest != wantDigest {
		t.Errorf("Digest = %q, want %q", img.Digest, wantDigest)
	}
	if !reflect.DeepEqual(img.Config, wantConfig) {
		t.Errorf("Config = %+v, want %+v", img.Config, wantConfig)
	}
	if !filepath.IsAbs(img.Rootfs) || !strings.HasPrefix(img.Rootfs, s.dir) {
		t.Errorf("Rootfs = %q, want an absolute path under %s", img.Rootfs, s.dir)
	}
	fi, err := os.Stat(filepath.Join(img.Rootfs, "bin/busybox"))
	if err != nil {
		t.Fatalf("rootfs: %v", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("bin/busybox mode %v, want an executable file", fi.Mode())
	}
	if l, err := os.Readlink(filepath.Join(img.Rootfs, "bin/sh")); err != nil || l != "busybox" {
		t.Errorf("bin/sh -> %q, %v; want busybox", l, err)
	}
	if fi, err := os.Stat(filepath.Join(img.Rootfs, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("tmp: %v %v, want drwxrwxrwt", fi.Mode(), err)
	}
	if img.Size < fi.Size() {
		t.Errorf("Size = %d, want at least busybox's size", img.Size)
	}
	if got, ok := s.Get(wantName); !ok || !reflect.DeepEqual(got, img) {
		t.Errorf("Get(%q) = %+v, %v; want %+v", wantName, got, ok, img)
	}
	if got, ok := s.Get(wantDigest); !ok || got.Digest != wantDigest {
		t.Errorf("Get(%q) = %+v, %v", wantDigest, got, ok)
	}
}

func TestImportLayoutAndDockerSave(t *testing.T) {
	img := busyboxImage(t)
	want := digestOf(t, img)
	ctx := context.Background()

	t.Run("layout dir", func(t *testing.T) {
		s := openStore(t, Options{})
		dir := writeLayout(t, img, "example.com/tools/busybox:1")
		imgs, err := s.Import(ctx, dir, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 1 {
			t.Fatalf("Import returned %d images", len(imgs))
		}
		checkBusybox(t, s, imgs[0], "example.com/tools/busybox:1", want)
	})

	t.Run("layout tar", func(t *testing.T) {
		s := openStore(t, Options{})
		archive := tarDir(t, writeLayout(t, img, "1")) // a bare tag is no name
		_, err := s.Import(ctx, archive, "")
		if err == nil || !strings.Contains(err.Error(), "--name") || !strings.HasPrefix(err.Error(), "import "+archive+": ") {
			t.Fatalf("Import without a name: %v; want an error saying to pass --name", err)
		}
		imgs, err := s.Import(ctx, archive, "busybox:1")
		if err != nil {
			t.Fatal(err)
		}
		checkBusybox(t, s, imgs[0], "docker.io/library/busybox:1", want)
	})

	t.Run("docker save", func(t *testing.T) {
		s := openStore(t, Options{})
		archive := filepath.Join(t.TempDir(), "busybox.tar")
		tag, _ := name.NewTag("registry.local:5000/busybox:1.36")
		if err := tarball.WriteToFile(archive, tag, img); err != nil {
			t.Fatal(err)
		}
		// docker save manifests are rebuilt from manifest.json; ask
		// go-containerregistry what the digest is.
		saved, err := tarball.ImageFromPath(archive, nil)
		if err != nil {
			t.Fatal(err)
		}
		imgs, err := s.Import(ctx, archive, "")
		if err != nil {
			t.Fatal(err)
		}
		checkBusybox(t, s, imgs[0], "registry.local:5000/busybox:1.36", digestOf(t, saved))

		// The same image under another name shares the rootfs.
		again, err := s.Import(ctx, archive, "other/name")
		if err != nil {
			t.Fatal(err)
		}
		if again[0].Name != "docker.io/other/name:latest" || again[0].Rootfs != imgs[0].Rootfs {
			t.Errorf("reimport = %+v", again[0])
		}
		if n := len(s.List()); n != 2 {
			t.Errorf("List has %d images, want 2", n)
		}

		// A store reopened on the same directory knows both.
		s2 := openStore(t, Options{Dir: s.dir})
		if got := s2.List(); !reflect.DeepEqual(got, s.List()) {
			t.Errorf("reopened List = %+v, want %+v", got, s.List())
		}
	})

	t.Run("errors", func(t *testing.T) {
		s := openStore(t, Options{})
		bogus := filepath.Join(t.TempDir(), "x.tar")
		os.WriteFile(bogus, []byte("not a tar at all, not even close......"), 0o600)
		for _, p := range []string{bogus, filepath.Join(t.TempDir(), "missing.tar"), t.TempDir()} {
			_, err := s.Import(ctx, p, "a:1")
			if err == nil || !strings.HasPrefix(err.Error(), "import "+p+": ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("Import(%s) = %v; want a one-line error naming the archive", p, err)
			}
		}
	})
}

func TestOwnershipAndModes(t *testing.T) {
	requireRoot(t)
	s := openStore(t, Options{})
	layer := makeTar(t,
		entry{name: "usr/bin/su", body: "x", mode: 0o4755, uid: 0, gid: 0},
		entry{name: "usr/bin/wall", body: "x", mode: 0o2755, uid: 0, gid: 5},
		entry{name: "home/app/", typ: '5', mode: 0o750, uid: 1000, gid: 1000},
		entry{name: "home/app/data", body: "d", mode: 0o600, uid: 1000, gid: 1000},
		entry{name: "home/app/link", typ: '2', link: "/etc/passwd", uid: 1000, gid: 1000},
		entry{name: "ping", body: "p", mode: 0o755, xattrs: map[string]string{
			"trusted.overlay.opaque": "y", "user.overlay.redirect": "/x", "user.note": "hi"}},
	)
	imgs, err := s.Import(context.Background(), writeLayout(t, imageOf(t, testConfig, layerOf(t, layer)), "x/y:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	root := imgs[0].Rootfs
	for _, c := range []struct {
		path     string
		mode     os.FileMode
		uid, gid uint32
	}{
		{"usr/bin/su", 0o755 | os.ModeSetuid, 0, 0},
		{"usr/bin/wall", 0o755 | os.ModeSetgid, 0, 5},
		{"home/app", 0o750 | os.ModeDir, 1000, 1000},
		{"home/app/data", 0o600, 1000, 1000},
	} {
		fi, err := os.Lstat(filepath.Join(root, c.path))
		if err != nil {
			t.Fatal(err)
		}
		st := statOf(fi)
		if fi.Mode() != c.mode || st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", c.path, fi.Mode(), st.Uid, st.Gid, c.mode, c.uid, c.gid)
		}
	}
	fi, err := os.Lstat(filepath.Join(root, "home/app/link"))
	if err != nil || fi.Mode()&os.ModeSymlink == 0 || statOf(fi).Uid != 1000 {
		t.Errorf("home/app/link: %v %v", fi, err)
	}
	for _, x := range []string{"trusted.overlay.opaque", "user.overlay.redirect"} {
		if _, err := getxattr(filepath.Join(root, "ping"), x); err == nil {
			t.Errorf("xattr %s was applied", x)
		}
	}
}

// pushed is an image pushed to a test registry.
type pushed struct {
	reg    *registry
	ref    string // as the test writes it
	digest string
	img    v1.Image
}

func pushBusybox(t *testing.T, reg *registry, repo string) pushed {
	t.Helper()
	img := busyboxImage(t)
	ref := reg.addr + "/" + repo
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return pushed{reg: reg, ref: ref, digest: digestOf(t, img), img: img}
}

// countingProxy fronts a registry and counts blob downloads.
func countingProxy(t *testing.T, reg *registry) (addr string, blobGets *atomic.Int64) {
	t.Helper()
	target, _ := url.Parse("http://" + reg.addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	blobGets = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			blobGets.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), blobGets
}

func TestPull(t *testing.T) {
	reg := startRegistry(t)
	p := pushBusybox(t, reg, "busybox:1")
	ctx := context.Background()

	// Not in Insecure: HTTPS only, even on loopback.
	strict := openStore(t, Options{})
	_, err := strict.Pull(ctx, p.ref)
	if err == nil || !strings.Contains(err.Error(), "HTTPS") || !strings.HasPrefix(err.Error(), "pull "+p.ref+": ") {
		t.Fatalf("pull over plain HTTP without Insecure: %v; want an HTTPS error", err)
	}
	t.Logf("without Insecure: %v", err)

	s := openStore(t, Options{Insecure: []string{reg.addr}})
	img, err := s.Pull(ctx, p.ref)
	if err != nil {
		t.Fatal(err)
	}
	checkBusybox(t, s, img, p.ref, p.digest)

	// Unknown tag: the registry's answer, in one line.
	_, err = s.Pull(ctx, reg.addr+"/busybox:nope")
	if err == nil || err.Error() != "pull "+reg.addr+"/busybox:nope: manifest unknown" {
		t.Errorf("pull of unknown tag: %v", err)
	}

	// By digest, while the registry is up and once it is down: local.
	byDigest := reg.addr + "/busybox@" + p.digest
	if got, err := s.Pull(ctx, byDigest); err != nil || got.Digest != p.digest || got.Name != byDigest {
		t.Errorf("Pull(%s) = %+v, %v", byDigest, got, err)
	}

	reg.stop()
	again, err := s.Pull(ctx, p.ref)
	if err != nil {
		t.Fatalf("pull with the registry down: %v", err)
	}
	if !reflect.DeepEqual(again, img) {
		t.Errorf("pull with the registry down = %+v, want %+v", again, img)
	}
	if _, err := s.Pull(ctx, p.digest); err != nil {
		t.Errorf("pull of a bare local digest: %v", err)
	}
	_, err = s.Pull(ctx, reg.addr+"/unknown:1")
	if err == nil || !strings.HasPrefix(err.Error(), "pull "+reg.addr+"/unknown:1: registry "+reg.addr+" unreachable") ||
		!strings.Contains(err.Error(), "not in the store") {
		t.Errorf("pull of an unknown image with the registry down: %v", err)
	}
	t.Logf("registry down: %v", err)
}

func TestPullIndex(t *testing.T) {
	reg := startRegistry(t)
	img := busyboxImage(t)
	other := imageOf(t, v1.Config{Cmd: []string{"nope"}}, layerOf(t, makeTar(t, entry{name: "other", body: "x"})))
	otherArch := "s390x"
	if runtime.GOARCH == otherArch {
		otherArch = "riscv64"
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, "application/vnd.oci.image.index.v1+json"),
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch}}},
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	ref := reg.addr + "/multi:1"
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, Options{Insecure: []string{reg.addr}})
	got, err := s.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkBusybox(t, s, got, ref, digestOf(t, img))
	idxDigest, _ := idx.Digest()
	if byIdx, ok := s.Get(idxDigest.String()); !ok || byIdx.Digest != got.Digest {
		t.Errorf("Get(index digest) = %+v, %v", byIdx, ok)
	}
}

func TestPullConcurrent(t *testing.T) {
	reg := startRegistry(t)
	p := pushBusybox(t, reg, "busybox:1")
	proxy, blobGets := countingProxy(t, reg)
	s := openStore(t, Options{Insecure: []string{proxy}})
	ref := proxy + "/busybox:1"

	const n = 8
	var wg sync.WaitGroup
	imgs := make([]Image, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			imgs[i], errs[i] = s.Pull(context.Background(), ref)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("pull %d: %v", i, errs[i])
		}
		if !reflect.DeepEqual(imgs[i], imgs[0]) {
			t.Errorf("pull %d = %+v, pull 0 = %+v", i, imgs[i], imgs[0])
		}
	}
	if imgs[0].Digest != p.digest {
		t.Errorf("digest %s, pushed %s", imgs[0].Digest, p.digest)
	}
	// One config and one layer: each downloaded once.
	if got := blobGets.Load(); got != 2 {
		t.Errorf("%d blob downloads, want 2", got)
	}
	// Pulling again resolves the tag but downloads nothing.
	if _, err := s.Pull(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if got := blobGets.Load(); got != 2 {
		t.Errorf("%d blob downloads after a second pull, want 2", got)
	}
}

func TestWhiteouts(t *testing.T) {
	s := openStore(t, Options{})
	l1 := makeTar(t,
		entry{name: "a/keep", body: "k"},
		entry{name: "a/del", body: "d"},
		entry{name: "a/deldir/x", body: "x"},
		entry{name: "opq/old1", body: "o"},
		entry{name: "opq/sub/old2", body: "o"},
		entry{name: "other/x", body: "x"},
	)
	l2 := makeTar(t,
		entry{name: "a/.wh.del"},
		entry{name: "a/.wh.deldir"},
		entry{name: "a/.wh.never-existed"},
		entry{name: "opq/new", body: "n"}, // before the marker: still this layer's
		entry{name: "opq/.wh..wh..opq"},
		entry{name: "opq/sub/new2", body: "n"},
		entry{name: ".wh.other"},
		entry{name: "fresh", body: "f"},
		entry{name: ".wh.fresh"}, // same layer: does not hide it
	)
	img := imageOf(t, testConfig, layerOf(t, l1), layerOf(t, l2))
	imgs, err := s.Import(context.Background(), writeLayout(t, img, "x/wh:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	got := listTree(t, imgs[0].Rootfs)
	want := []string{"a/", "a/keep", "fresh", "opq/", "opq/new", "opq/sub/", "opq/sub/new2"}
	if !slices.Equal(got, want) {
		t.Errorf("rootfs = %q, want %q", got, want)
	}
}

func TestGC(t *testing.T) {
	s := openStore(t, Options{})
	ctx := context.Background()
	a := busyboxImage(t)
	b := imageOf(t, testConfig, append(mustLayers(t, a), layerOf(t, makeTar(t, entry{name: "extra", body: "e"})))...)
	ia, err := s.Import(ctx, writeLayout(t, a, "x/a:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	ib, err := s.Import(ctx, writeLayout(t, b, "x/b:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	removed, err := s.GC([]string{"x/a:1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("removed %q", removed)
	bl := mustLayers(t, b)
	extra, _ := bl[1].Digest()
	cfgB, _ := b.ConfigName()
	want := []string{"blob " + cfgB.String(), "blob " + extra.String(), "blob " + ib[0].Digest, "name docker.io/x/b:1", "rootfs " + ib[0].Digest}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("GC removed %q, want %q", removed, want)
	}
	if _, err := os.Stat(ib[0].Rootfs); !os.IsNotExist(err) {
		t.Errorf("b's rootfs still there: %v", err)
	}
	if _, ok := s.Get("x/b:1"); ok {
		t.Error("b still in the store")
	}
	if _, err := os.Stat(filepath.Join(ia[0].Rootfs, "bin/busybox")); err != nil {
		t.Errorf("a's rootfs: %v", err)
	}
	if got, ok := s.Get("x/a:1"); !ok || !reflect.DeepEqual(got, ia[0]) {
		t.Errorf("a: %+v %v", got, ok)
	}
	// a's blobs are all kept: unpacking again from them would work.
	for _, d := range []string{ia[0].Digest} {
		if _, err := os.Stat(s.blobPath(d)); err != nil {
			t.Errorf("a's manifest blob: %v", err)
		}
	}
	// Roots by digest; an unknown root is ignored, a bad one refused.
	if removed, err := s.GC([]string{ia[0].Digest, "x/unknown:1"}); err != nil || len(removed) != 0 {
		t.Errorf("GC by digest removed %q, %v", removed, err)
	}
	if _, err := s.GC([]string{"UPPER CASE is not a reference"}); err == nil {
		t.Error("GC with a bad root: no error")
	}
	if removed, err := s.GC(nil); err != nil || len(removed) != 5 { // name, rootfs, 3 blobs
		t.Errorf("GC() removed %q, %v", removed, err)
	}
	if len(s.List()) != 0 {
		t.Errorf("List after GC(): %+v", s.List())
	}
}

func mustLayers(t testing.TB, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// listTree lists a tree's paths ("dir/" for directories), sorted.
func listTree(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestImportArchiveVariants(t *testing.T) {
	img := busyboxImage(t)
	ctx := context.Background()
	dir := t.TempDir()

	// docker save | gzip
	plain := filepath.Join(dir, "busybox.tar")
	tag, _ := name.NewTag("busybox:1")
	if err := tarball.MultiWriteToFile(plain, map[name.Tag]v1.Image{tag: img}); err != nil {
		t.Fatal(err)
	}
	gz := filepath.Join(dir, "busybox.tar.gz")
	gzipFile(t, plain, gz)
	s := openStore(t, Options{})
	imgs, err := s.Import(ctx, gz, "")
	if err != nil {
		t.Fatal(err)
	}
	if imgs[0].Name != "docker.io/library/busybox:1" {
		t.Errorf("Name = %q", imgs[0].Name)
	}

	// Two images: --name is refused, both names are kept without it.
	other := imageOf(t, testConfig, layerOf(t, makeTar(t, entry{name: "x", body: "x"})))
	tag2, _ := name.NewTag("example.com/other:2")
	two := filepath.Join(dir, "two.tar")
	if err := tarball.MultiWriteToFile(two, map[name.Tag]v1.Image{tag: img, tag2: other}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, two, "xy:1"); err == nil || !strings.Contains(err.Error(), "holds 2") {
		t.Errorf("--name with two images: %v", err)
	}
	imgs, err = s.Import(ctx, two, "")
	if err != nil || len(imgs) != 2 {
		t.Fatalf("Import of two images = %+v, %v", imgs, err)
	}

	// A docker tar whose layer is a symlink to itself must not hang or
	// crash the reader.
	loop := filepath.Join(dir, "loop.tar")
	f, _ := os.Create(loop)
	tw := tar.NewWriter(f)
	manifest := `[{"Config":"c.json","RepoTags":["loop:1"],"Layers":["l.tar"]}]`
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Size: int64(len(manifest)), Mode: 0o644})
	tw.Write([]byte(manifest))
	tw.WriteHeader(&tar.Header{Name: "c.json", Typeflag: tar.TypeSymlink, Linkname: "l.tar"})
	tw.WriteHeader(&tar.Header{Name: "l.tar", Typeflag: tar.TypeSymlink, Linkname: "c.json"})
	tw.Close()
	f.Close()
	if _, err := s.Import(ctx, loop, ""); err == nil || !strings.Contains(err.Error(), "link loop") {
		t.Errorf("Import of a link loop: %v", err)
	}
}

func gzipFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(in)
	zw.Close()
	if err := os.WriteFile(dst, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReopenRecovers(t *testing.T) {
	s := openStore(t, Options{})
	imgs, err := s.Import(context.Background(), writeLayout(t, busyboxImage(t), "x/a:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	// Leftovers of a crash, and a rootfs removed behind the store's back.
	os.MkdirAll(filepath.Join(s.tmpDir(), "unpack-123", "rootfs", "ro"), 0o755)
	os.Chmod(filepath.Join(s.tmpDir(), "unpack-123", "rootfs", "ro"), 0o555)
	os.WriteFile(filepath.Join(s.dir, indexFile+".42.tmp"), []byte("{"), 0o600)
	if err := os.RemoveAll(imgs[0].Rootfs); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, Options{Dir: s.dir})
	if ents, _ := os.ReadDir(s2.tmpDir()); len(ents) != 0 {
		t.Errorf("tmp/ not emptied: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(s.dir, indexFile+".42.tmp")); !os.IsNotExist(err) {
		t.Errorf("stale index temp file kept: %v", err)
	}
	if _, ok := s2.Get("x/a:1"); ok {
		t.Error("an image whose rootfs is gone is still listed")
	}
	// Importing again restores it (its blobs were kept).
	if _, err := s2.Import(context.Background(), writeLayout(t, busyboxImage(t), "x/a:1"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(imgs[0].Rootfs, "bin/busybox")); err != nil {
		t.Error(err)
	}
	// A corrupt index is an error, not an empty store.
	os.WriteFile(filepath.Join(s.dir, indexFile), []byte("{nope"), 0o600)
	if _, err := Open(Options{Dir: s.dir}); err == nil || !strings.Contains(err.Error(), indexFile) {
		t.Errorf("Open with a corrupt index: %v", err)
	}
}
