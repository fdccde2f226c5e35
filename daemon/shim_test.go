package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The agent runs skiff-shim when it is an executable next to skiff, and
// `skiff shim` otherwise.
func TestShimCommand(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "skiff")
	small := filepath.Join(dir, "skiff-shim")
	check := func(what, wantShim string, wantArgs []string) {
		t.Helper()
		shim, args := shimCommand(exe)
		if shim != wantShim || !slices.Equal(args, wantArgs) {
			t.Errorf("%s: shim %q %q, want %q %q", what, shim, args, wantShim, wantArgs)
		}
	}
	check("no skiff-shim", exe, []string{"shim"})
	if err := os.WriteFile(small, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("skiff-shim not executable", exe, []string{"shim"})
	if err := os.Chmod(small, 0o755); err != nil {
		t.Fatal(err)
	}
	check("skiff-shim executable", small, nil)
	os.Remove(small)
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	check("skiff-shim a directory", exe, []string{"shim"})
}
