package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// RecordDir holds one directory per lab, named for its prefix: owner (the
// owner's pid and start time) and lab.json (what the lab made).
const RecordDir = "/run/skiff-lab"

// record is what a lab made, saved before each thing is made, so that a
// lab whose owner died can be undone by another process.
type record struct {
	Prefix string `json:"prefix"`
	// Dir is the lab's directory; with OwnsDir it is removed whole,
	// otherwise only Made (paths inside it) is.
	Dir     string   `json:"dir"`
	OwnsDir bool     `json:"ownsDir"`
	Made    []string `json:"made,omitempty"`
	// Namespaces are names under /run/netns; Links are in the root
	// namespace.
	Namespaces []string `json:"namespaces,omitempty"`
	Links      []string `json:"links,omitempty"`
	// NodeDirs are agents' data directories, with runc state under
	// runtime/runc.
	NodeDirs []string  `json:"nodeDirs,omitempty"`
	Procs    []procRec `json:"procs,omitempty"`

	mu   sync.Mutex // guards the fields above while the lab runs
	path string
}

type procRec struct {
	Name  string `json:"name"`
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// claimRecord makes /run/skiff-lab/PREFIX (failing if it exists) and
// writes the owner file: this process.
func claimRecord(prefix string) (*record, error) {
	if err := os.MkdirAll(RecordDir, 0o755); err != nil {
		return nil, err
	}
	dir := filepath.Join(RecordDir, prefix)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	start, err := procStart(os.Getpid())
	if err != nil {
		os.Remove(dir)
		return nil, err
	}
	owner := fmt.Sprintf("%d %d\n", os.Getpid(), start)
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(owner), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r := &record{Prefix: prefix, path: filepath.Join(dir, "lab.json")}
	return r, r.update(func(*record) {})
}

// update changes the record under its lock and saves it.
func (r *record) update(fn func(*record)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r)
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := r.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("lab record: %w", err)
	}
	return os.Rename(tmp, r.path)
}

func (r *record) addNamespace(n string) error {
	return r.update(func(r *record) { r.Namespaces = append(r.Namespaces, n) })
}

func (r *record) addLink(n string) error {
	return r.update(func(r *record) { r.Links = append(r.Links, n) })
}

func (r *record) addProc(p *proc) error {
	return r.update(func(r *record) { r.Procs = append(r.Procs, procRec{p.name, p.pid(), p.start}) })
}

// ownerAlive reads the owner file of the record directory dir.
func ownerAlive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "owner"))
	if err != nil {
		// Being made right now, or half removed: look again later
		// unless it is old.
		fi, serr := os.Stat(dir)
		return serr == nil && time.Since(fi.ModTime()) < time.Minute
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	return err1 == nil && err2 == nil && alive(pid, start)
}

// CleanupStale removes every lab whose owner process is dead: its
// processes, runc containers, mounts, namespaces, links, directories and
// record. Labs of live owners are left alone. Start calls it.
func CleanupStale() error {
	ents, err := os.ReadDir(RecordDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		dir := filepath.Join(RecordDir, e.Name())
		if !e.IsDir() || ownerAlive(dir) {
			continue
		}
		r := &record{Prefix: e.Name(), path: filepath.Join(dir, "lab.json")}
		if b, err := os.ReadFile(r.path); err == nil {
			if err := json.Unmarshal(b, r); err != nil {
				errs = append(errs, fmt.Errorf("lab %s: %s: %w", e.Name(), r.path, err))
			}
		}
		r.Prefix = e.Name()
		if err := r.teardown(); err != nil {
			errs = append(errs, fmt.Errorf("stale lab %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// teardown undoes everything the record lists (see the package doc for
// the order), then removes the record. Things already gone are no error.
func (r *record) teardown() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error

	// The lab's own processes, if its owner could not stop them.
	pids := map[int]uint64{}
	for _, p := range r.Procs {
		if p.Start != 0 { // without a start time, the pid may be anyone's by now
			pids[p.Pid] = p.Start
		}
	}
	killAndWait(pids)

	// Whatever still runs in the nodes' namespaces: shims, pod namespace
	// holders, anything tests started there.
	nodeNS := map[uint64]bool{}
	for _, n := range r.Namespaces {
		if ino, ok := nsInode(netnsPath(n)); ok {
			nodeNS[ino] = true
		}
	}
	killAndWait(pidsInNetNS(nodeNS))

	// Containers, through runc, which also removes their cgroups.
	for _, d := range r.NodeDirs {
		if err := deleteContainers(filepath.Join(d, "runtime", "runc")); err != nil {
			errs = append(errs, err)
		}
	}

	dirs := r.dirs()
	// Anything left in the pods' namespaces, pinned under the agents'
	// data directories.
	podNS := map[uint64]bool{}
	for _, m := range mountsUnder(dirs) {
		if ino, ok := nsInode(m); ok {
			podNS[ino] = true
		}
	}
	killAndWait(pidsInNetNS(podNS))

	if err := unmountUnder(dirs); err != nil {
		errs = append(errs, err)
	}
	for _, n := range r.Namespaces {
		if err := deleteNetNS(n); err != nil {
			errs = append(errs, err)
		}
	}
	// Deleting a namespace deletes its end of a veth and so the other;
	// deleting them here covers namespaces something still holds.
	for i := len(r.Links) - 1; i >= 0; i-- {
		if err := deleteLink(r.Links[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if r.Dir != "" {
		remove := r.Made
		if r.OwnsDir {
			remove = []string{r.Dir}
		}
		for _, d := range remove {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 && r.path != "" {
		os.RemoveAll(filepath.Dir(r.path))
	}
	return errors.Join(errs...)
}

// dirs are the directories whose mounts the lab owns: Dir, also under
// its real path.
func (r *record) dirs() []string {
	if r.Dir == "" {
		return nil
	}
	out := []string{r.Dir}
	if real, err := filepath.EvalSymlinks(r.Dir); err == nil && real != r.Dir {
		out = append(out, real)
	}
	return out
}

// deleteContainers runs `runc delete --force` on every container in a
// runc root (one directory per container).
func deleteContainers(root string) error {
	ents, err := os.ReadDir(root)
	if err != nil || len(ents) == 0 {
		return nil
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return fmt.Errorf("%d containers in %s, and no runc to delete them: %w", len(ents), root, err)
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		out, err := exec.CommandContext(ctx, runc, "--root", root, "delete", "--force", e.Name()).CombinedOutput()
		cancel()
		if err != nil {
			if _, serr := os.Stat(filepath.Join(root, e.Name())); serr == nil {
				errs = append(errs, fmt.Errorf("runc --root %s delete --force %s: %v: %s", root, e.Name(), err, strings.TrimSpace(string(out))))
			}
		}
	}
	return errors.Join(errs...)
}

// mountsUnder lists the mount points at or under any of dirs, deepest
// first.
func mountsUnder(dirs []string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		for _, d := range dirs {
			if mp == d || strings.HasPrefix(mp, d+"/") {
				out = append(out, mp)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder lazily unmounts everything at or under dirs, stacked
// mounts included.
func unmountUnder(dirs []string) error {
	for range 10 {
		ms := mountsUnder(dirs)
		if len(ms) == 0 {
			return nil
		}
		for _, m := range ms {
			unix.Unmount(m, unix.MNT_DETACH)
		}
	}
	if ms := mountsUnder(dirs); len(ms) > 0 {
		return fmt.Errorf("still mounted: %s", strings.Join(ms, ", "))
	}
	return nil
}
