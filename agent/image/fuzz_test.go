//go:build linux

package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fuzzSeeds are the hostile layers, as tar bytes.
func fuzzSeeds(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	for _, c := range hostileCases() {
		es := c.entries
		for i := range es {
			if es[i].size > 512 {
				es[i].size = 512 // keep the corpus small
			}
		}
		name := strings.NewReplacer(" ", "-", ",", "").Replace(c.name)
		seeds[name] = trimTrailer(makeTar(t, es...))
	}
	seeds["whiteouts"] = trimTrailer(makeTar(t,
		entry{name: "a/keep", body: "k"}, entry{name: "opq/old", body: "o"},
		entry{name: "a/.wh.keep"}, entry{name: "opq/.wh..wh..opq"}, entry{name: "opq/new", body: "n"}))
	seeds["dir-modes"] = trimTrailer(makeTar(t,
		entry{name: "ro/", typ: tar.TypeDir, mode: 0o555}, entry{name: "ro/f", body: "f", mode: 0o4755, uid: 7, gid: 7},
		entry{name: "./", typ: tar.TypeDir, mode: 0o700}))
	return seeds
}

// trimTrailer drops the end-of-archive blocks, which the reader does not
// need; the corpus is smaller for it.
func trimTrailer(b []byte) []byte {
	if n := len(b) - 1024; n >= 0 && !bytes.ContainsFunc(b[n:], func(r rune) bool { return r != 0 }) {
		return b[:n]
	}
	return b
}

// FuzzUnpack feeds arbitrary bytes to the layer applier. Whatever it does
// with them, it must not panic and must not create, change or remove
// anything outside the root filesystem.
func FuzzUnpack(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b, false)
	}
	// Metadata operations are much cheaper on tmpfs; fuzzing wants speed.
	base := os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() && unix.Access("/dev/shm", unix.W_OK) == nil {
		base = "/dev/shm"
	}
	base, err := os.MkdirTemp(base, "skiff-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { removeAll(base) })
	f.Fuzz(func(t *testing.T, data []byte, fallback bool) {
		outer, err := os.MkdirTemp(base, "")
		if err != nil {
			t.Fatal(err)
		}
		defer removeAll(outer)
		a := filepath.Join(outer, "a")
		b := filepath.Join(a, "b")
		root := filepath.Join(b, "rootfs")
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		sentinels := []string{filepath.Join(outer, "s0"), filepath.Join(a, "s1"), filepath.Join(b, "s2")}
		for _, s := range sentinels {
			os.WriteFile(s, []byte("sentinel"), 0o644)
		}
		before := candidates(data)

		ap, err := newApplier(root, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if fallback {
			ap.inRoot = false
		}
		_ = ap.Apply(bytes.NewReader(data))
		ap.Close()

		// Inside outer: only a, b, the sentinels (unchanged) and rootfs.
		allowed := map[string]bool{outer: true, a: true, b: true, root: true}
		for _, s := range sentinels {
			allowed[s] = true
			if got, err := os.ReadFile(s); err != nil || string(got) != "sentinel" {
				t.Fatalf("sentinel %s: %q, %v", s, got, err)
			}
		}
		filepath.WalkDir(outer, func(p string, d fs.DirEntry, err error) error {
			if !allowed[p] {
				t.Fatalf("created outside the rootfs: %s", p)
			}
			if p == root {
				return filepath.SkipDir
			}
			return nil
		})
		// Around the host: names the tar mentions did not appear.
		for p, existed := range before {
			if _, err := os.Lstat(p); err == nil && !existed {
				os.RemoveAll(p)
				t.Fatalf("created on the host: %s", p)
			}
		}
	})
}

// candidates lists host paths an escaping entry of data would most likely
// create (its names and link names, by base name, in /, /etc and /tmp) and
// whether each exists now.
func candidates(data []byte) map[string]bool {
	out := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(data))
	for range 1000 {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		for _, n := range []string{hdr.Name, hdr.Linkname} {
			base := path.Base(path.Clean("/" + n))
			if base == "/" || base == "." || base == ".." || strings.ContainsRune(base, 0) {
				continue
			}
			for _, dir := range []string{"/", "/etc", "/tmp"} {
				p := filepath.Join(dir, base)
				_, err := os.Lstat(p)
				out[p] = err == nil
			}
		}
	}
	return out
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzUnpack from the hostile
// cases: SKIFF_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SKIFF_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set SKIFF_WRITE_FUZZ_SEEDS=1 to regenerate testdata/fuzz/FuzzUnpack")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzUnpack")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range fuzzSeeds(t) {
		for _, fallback := range []bool{false, true} {
			if fallback && !strings.Contains(name, "link") {
				continue // the fallback only differs in resolving parents
			}
			file := name
			if fallback {
				file += "-fallback"
			}
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\n", b, fallback)
			if err := os.WriteFile(filepath.Join(dir, file), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
