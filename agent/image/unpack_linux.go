//go:build linux

package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// errTooLarge is returned (wrapped) when a layer would unpack to more than
// the budget the applier was given.
var errTooLarge = errors.New("unpacked size exceeds MaxUnpackBytes")

// useOpenat2 selects how parent directories are resolved. With openat2
// (Linux 5.6+) every path is resolved by the kernel with RESOLVE_IN_ROOT, so
// symlinks met on the way are followed as if the rootfs were "/" and can
// never lead outside it. Without it (old kernels, seccomp filters that deny
// openat2) every component is opened with O_NOFOLLOW and an entry whose
// parent is a symlink is refused. Tests flip it to exercise both.
var useOpenat2 = sync.OnceValue(func() bool {
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
})

// disableOpenat2 forces the component-wise fallback (tests).
var disableOpenat2 bool

// applier applies layer tar streams, in order, to one root filesystem
// directory. It never writes outside that directory: every parent path is
// resolved inside the root (see useOpenat2) and every final path component is
// created, replaced or changed with *at calls that do not follow symlinks.
type applier struct {
	root    int   // fd of the rootfs directory
	max     int64 // budget for uncompressed layer bytes, all layers together
	used    int64 // uncompressed layer bytes read so far
	skipped int   // device nodes and FIFOs not created
	owners  bool  // apply uid/gid from the headers (only root can)
	inRoot  bool  // resolve parents with openat2 RESOLVE_IN_ROOT

	entries int // tar entries read, all layers together

	// Per layer. Paths are kept as 128-bit keyed hashes: a layer of a
	// million entries costs tens of megabytes, not gigabytes.
	seed      [2]maphash.Seed
	seen      map[pathKey]bool // paths created by this layer
	ancestors map[pathKey]bool // parents of paths created by this layer
	dirs      []*tar.Header    // directory metadata, applied at the end of the layer
}

// maxEntries bounds the tar entries of an image, all layers together;
// MaxUnpackBytes alone would allow millions of empty files.
const maxEntries = 1 << 21

type pathKey [2]uint64

func (a *applier) key(p string) pathKey {
	return pathKey{maphash.String(a.seed[0], p), maphash.String(a.seed[1], p)}
}

func newApplier(rootfs string, max int64) (*applier, error) {
	fd, err := unix.Open(rootfs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rootfs, Err: err}
	}
	if err := unix.Fchmod(fd, 0o755); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "chmod", Path: rootfs, Err: err}
	}
	return &applier{root: fd, max: max, owners: os.Geteuid() == 0, inRoot: useOpenat2() && !disableOpenat2,
		seed: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}, nil
}

func (a *applier) Close() error { return unix.Close(a.root) }

// Sync flushes the root's filesystem, so a rootfs renamed into place after
// a crash is complete.
func (a *applier) Sync() error { return unix.Syncfs(a.root) }

// countingReader charges every byte read against the applier's budget.
type countingReader struct {
	r io.Reader
	a *applier
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.a.used += int64(n)
	if c.a.used > c.a.max {
		return n, errTooLarge
	}
	return n, err
}

// Apply applies one uncompressed layer (a tar stream) on top of what is
// already in the root. It reads r to its end.
func (a *applier) Apply(r io.Reader) error {
	cr := &countingReader{r: r, a: a}
	tr := tar.NewReader(cr)
	a.seen = map[pathKey]bool{}
	a.ancestors = map[pathKey]bool{}
	a.dirs = nil
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return a.budgetErr(fmt.Errorf("reading layer: %w", err))
		}
		if a.entries++; a.entries > maxEntries {
			return fmt.Errorf("more than %d entries", maxEntries)
		}
		if err := a.entry(tr, hdr); err != nil {
			return a.budgetErr(fmt.Errorf("entry %s: %w", quote(hdr.Name), err))
		}
	}
	// Whatever follows the end-of-archive marker still counts (and is
	// hashed by the caller, which verifies the layer's diff ID).
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return a.budgetErr(fmt.Errorf("reading layer: %w", err))
	}
	for _, hdr := range a.dirs {
		if err := a.dirMeta(hdr); err != nil {
			return fmt.Errorf("entry %s: %w", quote(hdr.Name), err)
		}
	}
	return nil
}

// quote quotes a name for an error message, shortening hostile ones.
func quote(name string) string {
	if len(name) > 200 {
		name = name[:200] + "..."
	}
	return strconv.Quote(name)
}

func (a *applier) budgetErr(err error) error {
	if errors.Is(err, errTooLarge) || a.used > a.max {
		return fmt.Errorf("%w (%d bytes)", errTooLarge, a.max)
	}
	return err
}

// cleanPath maps a tar entry name to a path relative to the root: it is
// cleaned as if it were absolute, so ".." can never climb above the root and
// a leading "/" is dropped. "" is the root itself.
func cleanPath(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("NUL byte in path")
	}
	return strings.TrimPrefix(path.Clean("/"+name), "/"), nil
}

func splitPath(rel string) (dir, base string) {
	dir, base = path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	return dir, base
}

func (a *applier) entry(tr *tar.Reader, hdr *tar.Header) error {
	rel, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		// The root itself: only its metadata can change.
		if hdr.Typeflag == tar.TypeDir {
			h := *hdr
			h.Name = ""
			a.dirs = append(a.dirs, &h)
		}
		return nil
	}
	dir, base := splitPath(rel)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(dir, base)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = a.mkdir(rel, hdr)
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		err = a.file(rel, hdr, tr)
	case tar.TypeSymlink:
		err = a.symlink(rel, hdr)
	case tar.TypeLink:
		err = a.hardlink(rel, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		a.skipped++
		return nil
	default:
		// Global PAX headers, vendor extensions: nothing to create.
		return nil
	}
	if err != nil {
		return err
	}
	a.seen[a.key(rel)] = true
	for d := dir; d != ""; d, _ = splitPath(d) {
		if a.ancestors[a.key(d)] {
			break
		}
		a.ancestors[a.key(d)] = true
	}
	return nil
}

// openDir opens the directory rel (relative to the root), resolving it
// inside the root. With create, missing directories are made (0755, owned by
// the unpacking user).
func (a *applier) openDir(rel string, create bool) (int, error) {
	if rel == "" {
		rel = "."
	}
	fd, err := a.resolve(rel)
	if err == nil || !create {
		return fd, err
	}
	var sp *symlinkParentError
	if errors.As(err, &sp) {
		return -1, err
	}
	if err != unix.ENOENT || rel == "." {
		return -1, fmt.Errorf("parent %s: %w", quote(rel), err)
	}
	parent, base := splitPath(rel)
	pfd, err := a.openDir(parent, true)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil && err != unix.EEXIST {
		return -1, err
	}
	fd, err = unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("parent %s is not a directory, nor a symlink to one inside the image: %w", quote(rel), err)
	}
	if err := unix.Fchmod(fd, 0o755); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// resolve opens an existing directory inside the root.
func (a *applier) resolve(rel string) (int, error) {
	if a.inRoot {
		how := &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
		}
		for {
			fd, err := unix.Openat2(a.root, rel, how)
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			return fd, err
		}
	}
	// Component by component, never following a symlink.
	fd, err := unix.Openat(a.root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if rel == "." {
		return fd, nil
	}
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR || err == unix.ELOOP {
			var st unix.Stat_t
			if unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = &symlinkParentError{strings.Join(parts[:i+1], "/")}
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// symlinkParentError refuses a path under a symlink when parents cannot be
// resolved inside the root (no openat2).
type symlinkParentError struct{ path string }

func (e *symlinkParentError) Error() string {
	return fmt.Sprintf("%s is a symlink, and symlinks in parent paths are not followed on this kernel (no openat2)", quote(e.path))
}

// clearAt removes whatever is at base in pfd, unless keepDir and it is a
// directory; it reports whether a directory was kept.
func clearAt(pfd int, base string, keepDir bool) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if keepDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return true, nil
	}
	return false, removeAt(pfd, base)
}

// removeAt removes base in pfd and, if it is a directory, everything under
// it, without following symlinks.
func removeAt(pfd int, base string) error {
	err := unix.Unlinkat(pfd, base, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
}

// readDirNames lists a directory fd without taking ownership of it.
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

func (a *applier) mkdir(rel string, hdr *tar.Header) error {
	dir, base := splitPath(rel)
	pfd, err := a.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	kept, err := clearAt(pfd, base, true)
	if err != nil {
		return err
	}
	if !kept {
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return err
		}
	}
	h := *hdr
	h.Name = rel
	a.dirs = append(a.dirs, &h)
	return nil
}

// dirMeta applies a directory entry's owner, mode, xattrs and mtime; it runs
// after the whole layer so that a read-only directory can still be filled
// (when not root) and its mtime is not disturbed by its children.
func (a *applier) dirMeta(hdr *tar.Header) error {
	var fd int
	var err error
	if hdr.Name == "" {
		fd, err = unix.Openat(a.root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		dir, base := splitPath(hdr.Name)
		pfd, perr := a.openDir(dir, false)
		if perr != nil {
			return nil // replaced or removed later in the layer
		}
		fd, err = unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(pfd)
	}
	if err != nil {
		return nil // replaced by a non-directory later in the layer
	}
	defer unix.Close(fd)
	if err := a.meta(fd, hdr); err != nil {
		return err
	}
	return unix.Futimes(fd, mtime(hdr))
}

// meta sets owner, mode and the allowed xattrs on an open file or directory.
// Owner comes first: chown clears setuid/setgid and file capabilities.
func (a *applier) meta(fd int, hdr *tar.Header) error {
	if a.chown(hdr) {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !allowedXattr(name) {
			continue
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil && err != unix.ENOTSUP && err != unix.EPERM {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	return nil
}

// chown reports whether hdr's owner should be applied: only when unpacking
// as root, and only for ids that fit (-1 would mean "leave unchanged").
func (a *applier) chown(hdr *tar.Header) bool {
	return a.owners && hdr.Uid >= 0 && hdr.Gid >= 0 && int64(hdr.Uid) < 1<<32-1 && int64(hdr.Gid) < 1<<32-1
}

// allowedXattr admits file capabilities and user xattrs. Everything else
// (trusted.overlay.* in particular, which would steer overlayfs, and
// security labels) is dropped.
func allowedXattr(name string) bool {
	if name == "security.capability" {
		return true
	}
	return strings.HasPrefix(name, "user.") && !strings.HasPrefix(name, "user.overlay.")
}

func mtime(hdr *tar.Header) []unix.Timeval {
	tv := unix.NsecToTimeval(hdr.ModTime.UnixNano())
	if hdr.ModTime.IsZero() {
		tv = unix.Timeval{}
	}
	return []unix.Timeval{tv, tv}
}

func (a *applier) file(rel string, hdr *tar.Header, r io.Reader) error {
	if hdr.Size < 0 {
		return errors.New("negative size")
	}
	if hdr.Size > a.max-a.used {
		return errTooLarge
	}
	dir, base := splitPath(rel)
	pfd, err := a.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if _, err := clearAt(pfd, base, false); err != nil {
		return err
	}
	// O_EXCL after clear: a fresh inode, never a write through a symlink or
	// into a hardlinked file.
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	if _, err := io.CopyN(f, r, hdr.Size); err != nil {
		return err
	}
	if err := a.meta(fd, hdr); err != nil {
		return err
	}
	return unix.Futimes(fd, mtime(hdr))
}

func (a *applier) symlink(rel string, hdr *tar.Header) error {
	if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 {
		return errors.New("invalid symlink target")
	}
	dir, base := splitPath(rel)
	pfd, err := a.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if _, err := clearAt(pfd, base, false); err != nil {
		return err
	}
	// The target is stored as is: it is resolved inside the container.
	if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
		return err
	}
	if a.chown(hdr) {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	ts := unix.NsecToTimespec(unix.TimevalToNsec(mtime(hdr)[0]))
	return unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

func (a *applier) hardlink(rel string, hdr *tar.Header) error {
	target, err := cleanPath(hdr.Linkname)
	if err != nil {
		return err
	}
	if target == "" {
		return errors.New("hardlink to the root directory")
	}
	if target == rel {
		return nil
	}
	tdir, tbase := splitPath(target)
	tfd, err := a.openDir(tdir, false)
	if err != nil {
		return fmt.Errorf("hardlink target %s: %w", quote(target), err)
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hardlink target %s: %w", quote(target), err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hardlink target %s is a directory", quote(target))
	}
	dir, base := splitPath(rel)
	pfd, err := a.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if _, err := clearAt(pfd, base, false); err != nil {
		return err
	}
	// flags 0: a symlink target is linked itself, not followed.
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return fmt.Errorf("hardlink to %s: %w", quote(target), err)
	}
	return nil
}

// whiteout applies ".wh.NAME" (delete NAME from lower layers) and
// ".wh..wh..opq" (hide everything lower layers put in dir).
func (a *applier) whiteout(dir, base string) error {
	if base == whiteoutOpaque {
		fd, err := a.openDir(dir, false)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil
		}
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return a.opaque(fd, dir)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other AUFS metadata
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("invalid whiteout %s", quote(base))
	}
	target := path.Join(dir, name)
	if a.seen[a.key(target)] {
		return nil // whiteouts only hide lower layers
	}
	fd, err := a.openDir(dir, false)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return removeAt(fd, name)
}

// opaque removes everything under the directory fd (at rel) that this layer
// did not create.
func (a *applier) opaque(fd int, rel string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(rel, n)
		if k := a.key(p); !a.seen[k] && !a.ancestors[k] {
			if err := removeAt(fd, n); err != nil {
				return err
			}
			continue
		}
		cfd, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // not a directory: keep it
		}
		err = a.opaque(cfd, p)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}
