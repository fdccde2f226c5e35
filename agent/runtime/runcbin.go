//go:build linux

package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// runcSeals are the seals runc itself puts on the copy of its binary it
// runs a container's init from (RUNC_MEMFD_SEALS in runc's
// libcontainer/nsenter/cloned_binary.c): nothing can write, grow, shrink
// or unseal it. runc checks for exactly these.
const runcSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// sealedRunc copies the runc binary at path into a sealed memfd, once per
// Runtime, and returns it open. Runc is then run from it (as
// /proc/self/fd/N).
//
// Why: against CVE-2019-5736 (a container overwriting the host's runc
// through /proc/self/exe of `runc init`), runc 1.1 makes every init run
// from a binary the container cannot write: as root it bind-mounts its
// own binary read-only on a temporary file of the host's mount table,
// remounts it, opens it and unmounts it again, and execs itself once more
// from that; failing that, it copies itself into a sealed memfd. That is
// three mount-table changes and one more exec of a 10 MB binary for every
// container start and every `runc exec`. A runc whose /proc/self/exe is
// already a memfd with exactly these seals skips all of it (runc's
// is_self_cloned): the init then runs from this copy, which no one can
// write either. It is the protection runc's own memfd path gives, shared
// by the node's containers instead of one copy each (what runc's
// contrib/cmd/memfd-bind does for a whole host); and unlike the read-only
// bind mount runc 1.1 picks as root, the file a container could reach is
// not the host's runc itself.
func sealedRunc(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	// MFD_EXEC says outright that the file is to be executed (kernels
	// with vm.memfd_noexec); older kernels do not know the flag.
	fd, err := unix.MemfdCreate("runc", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("runc", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd for runc: %w", err)
	}
	f := os.NewFile(uintptr(fd), "runc")
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("copy runc into a memfd: %w", err)
	}
	if err := unix.Fchmod(fd, 0o555); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, runcSeals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal runc's memfd: %w", err)
	}
	if seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0); err != nil || seals != runcSeals {
		f.Close()
		return nil, fmt.Errorf("runc's memfd has seals %#x, not %#x: %v", seals, runcSeals, err)
	}
	return f, nil
}
