//go:build linux

package runtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkStart runs containers of `true` to their end (Start, exit,
// Remove) through each shim binary, and reports, besides the time, the
// CPU that the shim, runc and the container took per container ("cpu-ms/op",
// from the reaped children's rusage: steadier than the time on a busy
// machine). "skiff shim" is the whole skiff binary as the shim, built
// here, as the agent runs it when no skiff-shim sits next to skiff.
func BenchmarkStart(b *testing.B) {
	needRoot(b)
	skiff := filepath.Join(b.TempDir(), "skiff")
	if out, err := exec.Command("go", "build", "-o", skiff, "skiff.dev/skiff/cmd/skiff").CombinedOutput(); err != nil {
		b.Fatalf("build skiff: %v\n%s", err, out)
	}
	for _, bc := range []struct {
		name string
		o    Options
	}{
		{"skiff-shim", Options{Shim: testShim}},
		{"skiff_shim", Options{Shim: skiff, ShimArgs: []string{"shim"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r, _ := newTestRuntimeWith(b, bc.o)
			waitChildren(b)
			before := childrenCPU()
			n := 0
			for i := 0; b.Loop(); i++ {
				s := testSpec(b, "true")
				if err := r.Start(b.Context(), s); err != nil {
					b.Fatal(err)
				}
				for {
					st, err := r.State(s.ID)
					if err != nil {
						b.Fatal(err)
					}
					if st.Status == StatusExited {
						break
					}
					time.Sleep(time.Millisecond)
				}
				if err := r.Remove(b.Context(), s.ID); err != nil {
					b.Fatal(err)
				}
				n++
			}
			waitChildren(b)
			b.ReportMetric(float64(childrenCPU()-before)/float64(time.Millisecond)/float64(n), "cpu-ms/op")
		})
	}
}

// childrenCPU is the user and system CPU of this process's reaped children.
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitChildren waits (up to 5 s) until this process has no child left, so
// that every shim's CPU is in childrenCPU.
func waitChildren(b *testing.B) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		tasks, _ := filepath.Glob("/proc/self/task/*/children")
		busy := false
		for _, p := range tasks {
			if c, _ := os.ReadFile(p); len(strings.TrimSpace(string(c))) > 0 {
				busy = true
			}
		}
		if !busy {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatal("children still running after 5 s")
}
