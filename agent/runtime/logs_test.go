//go:build linux

package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLogRotation(t *testing.T) {
	r := &Runtime{root: t.TempDir()}
	dir := r.path("c", dirLog)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	w, err := openLogWriter(dir, 200, logKeep)
	if err != nil {
		t.Fatal(err)
	}
	w.now = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC) }
	// Each record: 28 bytes of timestamp, " stdout ", 20 x, "\n": 57 bytes,
	// so three per file.
	for i := 0; i < 40; i++ {
		copyLines(w, "stdout", strings.NewReader(strings.Repeat("x", 20)+"\n"))
	}
	w.Close()
	paths := r.Logs("c")
	if len(paths) != 3 || !strings.HasSuffix(paths[0], ".2") || !strings.HasSuffix(paths[1], ".1") || !strings.HasSuffix(paths[2], logName) {
		t.Fatalf("Logs = %v", paths)
	}
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		if len(b) > 200 || len(b) == 0 {
			t.Errorf("%s has %d bytes, max 200", p, len(b))
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if l != "2025-01-02T03:04:05.0000006Z stdout xxxxxxxxxxxxxxxxxxxx" {
				t.Errorf("record %q", l)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, logFileName(3))); err == nil {
		t.Error("a fourth log file was kept")
	}
}

func TestCopyLinesLongAndPartial(t *testing.T) {
	dir := t.TempDir()
	w, _ := openLogWriter(dir, 1<<30, logKeep)
	long := strings.Repeat("y", maxRecord+10)
	copyLines(w, "stderr", strings.NewReader(long+"\nlast line without newline"))
	w.Close()
	b, _ := os.ReadFile(filepath.Join(dir, logName))
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d records, want 3 (a long line split in two, and the last)", len(lines))
	}
	var got string
	for _, l := range lines[:2] {
		f := strings.SplitN(l, " ", 3)
		if f[1] != "stderr" {
			t.Errorf("stream %q", f[1])
		}
		got += f[2]
	}
	if got != long || !strings.HasSuffix(lines[2], " stderr last line without newline") {
		t.Errorf("records do not add up to the input")
	}
}

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/bin/prog"), []byte("x"), 0o755)
	os.Symlink("/usr/bin", filepath.Join(root, "bin"))
	os.Symlink("../../../../../../etc/passwd", filepath.Join(root, "usr/bin/escape"))
	os.Symlink("/../../usr/bin/prog", filepath.Join(root, "abs"))
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), nil, 0o644)
	for in, want := range map[string]string{
		"/bin/prog":        "usr/bin/prog",
		"/abs":             "usr/bin/prog",
		"/usr/bin/escape":  "etc/passwd",
		"/bin/../bin/prog": "usr/bin/prog",
	} {
		got, _ := resolveIn(root, in)
		if got != filepath.Join(root, want) {
			t.Errorf("resolveIn(%s) = %s, want %s", in, got, filepath.Join(root, want))
		}
	}
}
