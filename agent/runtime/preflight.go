//go:build linux

package runtime

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
)

// ErrExecFormat is wrapped by Start's error for a command that is not a
// program this machine can run.
var ErrExecFormat = syscall.ENOEXEC

// checkExecutable looks the command up in the image as the container's
// exec would (PATH from env), and checks it is a program for this machine,
// so that Start reports "executable file not found" or "exec format error"
// instead of a container that exits at once. Errors wrap exec.ErrNotFound,
// fs.ErrNotExist or ErrExecFormat.
func checkExecutable(rootfs, arg0 string, env []string, cwd string) error {
	p, err := lookPathIn(rootfs, arg0, env, cwd)
	if err != nil {
		return err
	}
	return checkFormat(rootfs, arg0, p, 0)
}

func lookPathIn(rootfs, arg0 string, env []string, cwd string) (string, error) {
	if strings.Contains(arg0, "/") {
		p := arg0
		if !path.IsAbs(p) {
			p = path.Join(cwd, p)
		}
		if err := isExecutable(rootfs, p); err != nil {
			return "", fmt.Errorf("exec: %q: %w", arg0, err)
		}
		return p, nil
	}
	pathEnv := defaultPath
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		if !path.IsAbs(d) {
			d = path.Join(cwd, d)
		}
		p := path.Join(d, arg0)
		if isExecutable(rootfs, p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: %w", arg0, exec.ErrNotFound)
}

func isExecutable(rootfs, p string) error {
	fi, err := resolveStat(rootfs, p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}

// checkFormat checks that the program at p (a path in the container) is an
// ELF file for this machine whose interpreter exists, or a script whose
// interpreter passes the same check.
func checkFormat(rootfs, arg0, p string, depth int) error {
	hp, err := resolveIn(rootfs, p)
	if err != nil {
		return fmt.Errorf("exec: %q: %w", arg0, err)
	}
	f, err := os.Open(hp)
	if err != nil {
		return fmt.Errorf("exec: %q: %w", arg0, err)
	}
	defer f.Close()
	head := make([]byte, 256)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("#!")):
		if depth > 4 {
			return fmt.Errorf("exec: %q: %w (too many script interpreters)", arg0, ErrExecFormat)
		}
		line, _, _ := bytes.Cut(head[2:], []byte("\n"))
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			return fmt.Errorf("exec: %q: %w (empty #! line)", arg0, ErrExecFormat)
		}
		interp := fields[0]
		if err := isExecutable(rootfs, interp); err != nil {
			return fmt.Errorf("exec: %q: its interpreter %s: %w", arg0, interp, err)
		}
		return checkFormat(rootfs, arg0, interp, depth+1)
	case bytes.HasPrefix(head, []byte(elf.ELFMAG)):
		ef, err := elf.NewFile(f)
		if err != nil {
			return fmt.Errorf("exec: %q: %w (%v)", arg0, ErrExecFormat, err)
		}
		if !machineOK(ef.Machine) {
			return fmt.Errorf("exec: %q: %w (built for %v, this machine is %s)", arg0, ErrExecFormat, ef.Machine, goruntime.GOARCH)
		}
		for _, prog := range ef.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b, err := io.ReadAll(prog.Open())
			if err != nil {
				return fmt.Errorf("exec: %q: %w (%v)", arg0, ErrExecFormat, err)
			}
			interp := string(bytes.TrimRight(b, "\x00"))
			if _, err := resolveStat(rootfs, interp); err != nil {
				return fmt.Errorf("exec: %q: no such file or directory (its ELF interpreter %s is missing from the image): %w", arg0, interp, fs.ErrNotExist)
			}
		}
		return nil
	default:
		return fmt.Errorf("exec: %q: %w", arg0, ErrExecFormat)
	}
}

// resolveStat stats p in rootfs; errors are bare (ENOENT, ENOTDIR...):
// host paths mean nothing to the container's owner.
func resolveStat(rootfs, p string) (os.FileInfo, error) {
	hp, err := resolveIn(rootfs, p)
	if err == nil {
		var fi os.FileInfo
		if fi, err = os.Stat(hp); err == nil {
			return fi, nil
		}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return nil, err
}

func machineOK(m elf.Machine) bool {
	switch goruntime.GOARCH {
	case "amd64":
		return m == elf.EM_X86_64 || m == elf.EM_386
	case "386":
		return m == elf.EM_386
	case "arm64":
		return m == elf.EM_AARCH64 || m == elf.EM_ARM
	case "arm":
		return m == elf.EM_ARM
	}
	return true
}

// resolveIn resolves path p inside rootfs as if rootfs were "/": symlinks,
// absolute or relative, never lead outside it. It returns the host path.
func resolveIn(rootfs, p string) (string, error) {
	todo := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
	cur := "" // resolved so far, relative to rootfs, no leading slash
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = strings.TrimPrefix(path.Dir("/"+cur), "/")
			continue
		}
		next := path.Join(cur, c)
		fi, err := os.Lstat(filepath.Join(rootfs, next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", syscall.ELOOP
		}
		target, err := os.Readlink(filepath.Join(rootfs, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = ""
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return filepath.Join(rootfs, cur), nil
}
