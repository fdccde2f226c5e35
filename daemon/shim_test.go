package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"skiff.dev/skiff/agent/runtime"
)

// The agent runs skiff-shim when it is an executable next to skiff that
// speaks this build's shim protocol, and `skiff shim` otherwise.
func TestShimCommand(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "skiff")
	small := filepath.Join(dir, "skiff-shim")
	check := func(what, wantShim string, wantArgs []string, whyHas string) {
		t.Helper()
		shim, args, why := shimCommand(exe)
		if shim != wantShim || !slices.Equal(args, wantArgs) {
			t.Errorf("%s: shim %q %q, want %q %q", what, shim, args, wantShim, wantArgs)
		}
		if whyHas == "" && why != "" || !strings.Contains(why, whyHas) {
			t.Errorf("%s: why %q, want it to say %q", what, why, whyHas)
		}
	}
	script := func(body string, mode os.FileMode) {
		t.Helper()
		os.Remove(small)
		if err := os.WriteFile(small, []byte("#!/bin/sh\n"+body), mode); err != nil {
			t.Fatal(err)
		}
	}
	check("no skiff-shim", exe, []string{"shim"}, "")
	script("echo '"+runtime.ShimProtocolLine+"'\n", 0o644)
	check("skiff-shim not executable", exe, []string{"shim"}, "")
	script("echo '"+runtime.ShimProtocolLine+"'\n", 0o755)
	check("skiff-shim of this build", small, nil, "")
	script("echo 'skiff-shim protocol 0'\n", 0o755)
	check("skiff-shim of another protocol", exe, []string{"shim"}, "another build")
	script("echo 'flag provided but not defined: -protocol' >&2; exit 2\n", 0o755)
	check("skiff-shim older than -protocol", exe, []string{"shim"}, "another build")
	os.Remove(small)
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	check("skiff-shim a directory", exe, []string{"shim"}, "")
}
