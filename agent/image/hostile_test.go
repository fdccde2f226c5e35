//go:build linux

package image

import (
	"archive/tar"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func statOf(fi os.FileInfo) *syscall.Stat_t { return fi.Sys().(*syscall.Stat_t) }

func getxattr(p, name string) ([]byte, error) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// hostNames are host paths hostile layers aim at; none may appear or change.
var hostNames = []string{
	"/etc/evil", "/etc/skiff-evil-dotdot", "/etc/skiff-evil-abs", "/tmp/skiff-evil-chain",
	"/tmp/skiff-evil-target", "/evil", "/x", "/skiff-evil",
}

type hostSnapshot map[string]string

func snapshotHost(t *testing.T) hostSnapshot {
	t.Helper()
	snap := hostSnapshot{}
	for _, p := range append([]string{"/etc/passwd", "/etc/shadow", "/etc"}, hostNames...) {
		fi, err := os.Lstat(p)
		if err != nil {
			snap[p] = "absent"
			continue
		}
		st := statOf(fi)
		snap[p] = fi.Mode().String() + " " + fi.ModTime().String() + " " +
			strings.Join([]string{itoa(st.Ino), itoa(uint64(st.Nlink)), itoa(uint64(st.Size))}, "/")
	}
	return snap
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// checkContained asserts that, in tmp (the parent of the store's Dir), only
// the store exists, and that no file with a hostile name exists anywhere in
// tmp except inside an unpacked rootfs.
func checkContained(t *testing.T, tmp string, s *Store, before hostSnapshot) {
	t.Helper()
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "cache" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %q, want only cache", tmp, names)
	}
	ents, _ = os.ReadDir(s.dir)
	for _, e := range ents {
		switch e.Name() {
		case "blobs", "rootfs", "tmp", indexFile:
		default:
			t.Errorf("unexpected %s in the store directory", e.Name())
		}
	}
	if ents, _ := os.ReadDir(s.tmpDir()); len(ents) != 0 {
		t.Errorf("store tmp/ not empty after the import: %d entries", len(ents))
	}
	rootfsDir := s.rootfsDir() + string(filepath.Separator)
	filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		base := d.Name()
		hostile := base == "passwd" || base == "shadow" || base == "x" || strings.Contains(base, "evil")
		if hostile && !strings.HasPrefix(p, rootfsDir) {
			t.Errorf("%s created outside any rootfs", p)
		}
		return nil
	})
	after := snapshotHost(t)
	for p, v := range before {
		if after[p] != v {
			t.Errorf("host %s changed: %s -> %s", p, v, after[p])
			if v == "absent" {
				os.Remove(p)
			}
		}
	}
}

type hostileCase struct {
	name    string
	entries []entry
	max     int64
	refuse  string // substring of the import error; "" means the import succeeds
	// with the component-wise fallback instead of openat2, if different
	refuseFallback *string
	check          func(t *testing.T, rootfs string)
}

func ptr(s string) *string { return &s }

func hostileCases() []hostileCase {
	return []hostileCase{
		{
			name: "dotdot",
			entries: []entry{
				{name: "../../etc/passwd", body: "evil\n"},
				{name: "../../../../../../../../../../etc/skiff-evil-dotdot", body: "evil"},
				{name: "a/../../b/../../evil", body: "evil"},
			},
			check: func(t *testing.T, root string) {
				wantFile(t, root, "etc/passwd", "evil\n")
				wantFile(t, root, "etc/skiff-evil-dotdot", "evil")
				wantFile(t, root, "evil", "evil")
			},
		},
		{
			name: "absolute",
			entries: []entry{
				{name: "/etc/shadow", body: "evil"},
				{name: "/etc/skiff-evil-abs", body: "evil"},
				{name: "//skiff-evil", body: "evil"},
			},
			check: func(t *testing.T, root string) {
				wantFile(t, root, "etc/shadow", "evil")
				wantFile(t, root, "etc/skiff-evil-abs", "evil")
				wantFile(t, root, "skiff-evil", "evil")
			},
		},
		{
			name: "symlink parent to host etc",
			entries: []entry{
				{name: "etc", typ: tar.TypeSymlink, link: "/etc"},
				{name: "etc/evil", body: "evil"},
			},
			refuse: `"etc/evil"`,
		},
		{
			name: "symlink parent to host etc, relative",
			entries: []entry{
				{name: "etc", typ: tar.TypeSymlink, link: "../../../../../../../../etc"},
				{name: "etc/evil", body: "evil"},
			},
			refuse: `"etc/evil"`,
		},
		{
			name: "symlink chain inside the image",
			entries: []entry{
				{name: "real/", typ: tar.TypeDir},
				{name: "l2", typ: tar.TypeSymlink, link: "../../../../real"},
				{name: "l1", typ: tar.TypeSymlink, link: "l2"},
				{name: "l1/evil", body: "evil"},
			},
			refuseFallback: ptr("symlink"),
			check: func(t *testing.T, root string) {
				wantFile(t, root, "real/evil", "evil")
				wantLink(t, root, "l1", "l2")
			},
		},
		{
			name: "symlink chain to host tmp",
			entries: []entry{
				{name: "h2", typ: tar.TypeSymlink, link: "/tmp"},
				{name: "h1", typ: tar.TypeSymlink, link: "h2"},
				{name: "h1/skiff-evil-chain", body: "evil"},
			},
			refuse: `"h1/skiff-evil-chain"`,
		},
		{
			name: "file replaces symlink",
			entries: []entry{
				{name: "victim", typ: tar.TypeSymlink, link: "/tmp/skiff-evil-target"},
				{name: "victim", body: "evil"},
				{name: "dir-victim", typ: tar.TypeSymlink, link: "/tmp"},
				{name: "dir-victim", typ: tar.TypeDir},
			},
			check: func(t *testing.T, root string) {
				wantFile(t, root, "victim", "evil")
				if fi, err := os.Lstat(filepath.Join(root, "dir-victim")); err != nil || !fi.IsDir() {
					t.Errorf("dir-victim: %v %v, want a directory", fi, err)
				}
			},
		},
		{
			name: "hardlink to absolute path",
			entries: []entry{
				{name: "etc/passwd", body: "root:x:0:0::/:/bin/sh\n"},
				{name: "evil-link", typ: tar.TypeLink, link: "/etc/passwd"},
				{name: "evil-link2", typ: tar.TypeLink, link: "../../../../etc/passwd"},
			},
			check: func(t *testing.T, root string) {
				a, _ := os.Stat(filepath.Join(root, "etc/passwd"))
				for _, l := range []string{"evil-link", "evil-link2"} {
					b, err := os.Stat(filepath.Join(root, l))
					if err != nil || !os.SameFile(a, b) {
						t.Errorf("%s is not the image's etc/passwd: %v", l, err)
					}
				}
			},
		},
		{
			name: "hardlink outside",
			entries: []entry{
				{name: "evil", typ: tar.TypeLink, link: "../../x"},
			},
			refuse: "hardlink target",
		},
		{
			name: "hardlink through symlink to host",
			entries: []entry{
				{name: "hostetc", typ: tar.TypeSymlink, link: "/etc"},
				{name: "evil", typ: tar.TypeLink, link: "hostetc/passwd"},
			},
			refuse: "hardlink target",
		},
		{
			name: "hardlink to directory",
			entries: []entry{
				{name: "d/", typ: tar.TypeDir},
				{name: "evil", typ: tar.TypeLink, link: "d"},
			},
			refuse: "is a directory",
		},
		{
			name: "devices and fifo",
			entries: []entry{
				{name: "dev/evil-null", typ: tar.TypeChar},
				{name: "dev/evil-sda", typ: tar.TypeBlock},
				{name: "evil-fifo", typ: tar.TypeFifo},
				{name: "ok", body: "ok"},
			},
			check: func(t *testing.T, root string) {
				for _, p := range []string{"dev/evil-null", "dev/evil-sda", "evil-fifo"} {
					if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
						t.Errorf("%s created: %v", p, err)
					}
				}
				wantFile(t, root, "ok", "ok")
			},
		},
		{
			name:    "file larger than MaxUnpackBytes",
			max:     1 << 20,
			entries: []entry{{name: "evil-big", size: 2 << 20}},
			refuse:  "exceeds MaxUnpackBytes",
		},
		{
			name:    "files together larger than MaxUnpackBytes",
			max:     1 << 20,
			entries: []entry{{name: "evil-1", size: 600 << 10}, {name: "evil-2", size: 600 << 10}},
			refuse:  "exceeds MaxUnpackBytes",
		},
		{
			name: "whiteouts aimed outside",
			entries: []entry{
				{name: "../../../.wh.cache"},
				{name: "../.wh.rootfs"},
				{name: "../../.wh.sha256"},
				{name: "ok", body: "ok"},
			},
			check: func(t *testing.T, root string) { wantFile(t, root, "ok", "ok") },
		},
		{
			name:    "whiteout of dotdot",
			entries: []entry{{name: "a/.wh..."}},
			refuse:  "invalid whiteout",
		},
		{
			name: "file under a file",
			entries: []entry{
				{name: "f", body: "f"},
				{name: "f/evil", body: "evil"},
			},
			refuse: `"f/evil"`,
		},
	}
}

func wantFile(t *testing.T, root, rel, body string) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, rel))
	if err != nil || !fi.Mode().IsRegular() {
		t.Errorf("%s: %v, want a regular file", rel, err)
		return
	}
	b, _ := os.ReadFile(filepath.Join(root, rel))
	if string(b) != body {
		t.Errorf("%s = %q, want %q", rel, b, body)
	}
}

func wantLink(t *testing.T, root, rel, target string) {
	t.Helper()
	if l, err := os.Readlink(filepath.Join(root, rel)); err != nil || l != target {
		t.Errorf("%s -> %q (%v), want %q", rel, l, err, target)
	}
}

func TestHostileLayers(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		mode := "openat2"
		if fallback {
			mode = "fallback"
		} else if !useOpenat2() {
			t.Log("openat2 is unavailable here: only the fallback is tested")
			continue
		}
		t.Run(mode, func(t *testing.T) {
			disableOpenat2 = fallback
			defer func() { disableOpenat2 = false }()
			for _, c := range hostileCases() {
				t.Run(c.name, func(t *testing.T) { runHostile(t, c, fallback) })
			}
		})
	}
}

func runHostile(t *testing.T, c hostileCase, fallback bool) {
	before := snapshotHost(t)
	tmp := t.TempDir()
	s := openStore(t, Options{Dir: filepath.Join(tmp, "cache"), MaxUnpackBytes: c.max})
	img := imageOf(t, testConfig, layerOf(t, makeTar(t, c.entries...)))
	layoutDir := writeLayout(t, img, "hostile/img:1")
	imgs, err := s.Import(context.Background(), layoutDir, "")
	refuse := c.refuse
	if fallback && c.refuseFallback != nil {
		refuse = *c.refuseFallback
	}
	switch {
	case refuse == "" && err != nil:
		t.Errorf("import refused: %v", err)
	case refuse != "" && err == nil:
		t.Errorf("import succeeded, want it refused with %q", refuse)
	case refuse != "" && (!strings.Contains(err.Error(), refuse) || !strings.HasPrefix(err.Error(), "import "+layoutDir+": ")):
		t.Errorf("import error %q, want one mentioning %q", err, refuse)
	}
	if err != nil {
		t.Logf("refused: %v", err)
		if ents, _ := os.ReadDir(s.rootfsDir()); len(ents) != 0 {
			t.Errorf("a refused image left a rootfs")
		}
		if len(s.List()) != 0 {
			t.Errorf("a refused image is listed")
		}
	} else if refuse == "" && c.check != nil {
		c.check(t, imgs[0].Rootfs)
	}
	if c.name == "devices and fifo" && err == nil && imgs[0].Skipped != 3 {
		t.Errorf("Skipped = %d, want 3", imgs[0].Skipped)
	}
	checkContained(t, tmp, s, before)
}
