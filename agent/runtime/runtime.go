//go:build linux

package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options configure a Runtime.
type Options struct {
	// Root is the state root: one directory per container (bundle, overlay
	// upper/work, shim state, logs) under Root/containers, and runc's own
	// state under Root/runc. Every parent of Root must be searchable by other
	// users (o+x): the container's user-namespaced root has to reach the
	// bundle.
	Root string
	// Runc is the runc binary; default "runc" from PATH.
	Runc string
	// Shim is the per-container shim binary: skiff-shim (cmd/skiff-shim),
	// or the skiff binary itself with ShimArgs ["shim"]. Default
	// os.Executable() with ["shim"], for a binary whose main runs ShimMain
	// on `shim`.
	Shim string
	// ShimArgs are the arguments before the shim's own: ["shim"] for
	// `skiff shim`, none for skiff-shim. Default ["shim"] when Shim is
	// empty, none otherwise.
	ShimArgs []string
	// LogMaxBytes rotates a container log file at this size; default
	// 10 MiB. Three files are kept (the current one and two rotated ones).
	LogMaxBytes int64
}

// Spec is what the agent asks of one container.
type Spec struct {
	// ID is unique per container on the node: letters, digits, '-', '_' and
	// '.', starting with a letter or digit, at most 128 characters.
	ID string
	// Rootfs is the read-only image root, used as the overlay's lower
	// directory; it is never written.
	Rootfs string
	// Args is the resolved argv (the agent merges image entrypoint/cmd and
	// pod command/args).
	Args []string
	Env  []string
	// Cwd is the working directory inside the container; default "/".
	Cwd string
	// UID and GID are inside the user namespace; the agent never passes 0
	// unless the pod was granted root.
	UID, GID uint32
	// Hostname defaults to ID.
	Hostname string
	// NetNS is the path of the pod's network namespace to join ("" = a new
	// empty one, with only a loopback device that is down).
	NetNS string
	// UserNS are the host IDs the container's 0..Size-1 map to (UIDs and
	// GIDs alike); pod-unique. Required; HostID must not be 0.
	UserNS IDRange
	// CPUMilli limits CPU time (1000 = one CPU); 0 = no limit.
	CPUMilli int64
	// MemoryBytes limits memory; 0 = no limit.
	MemoryBytes int64
	// Labels are stored with the container (pod ref, container name,
	// revision) for re-adoption.
	Labels map[string]string
	// ResolvConf is the content of the container's /etc/resolv.conf; ""
	// derives one from the host's, without loopback name servers.
	ResolvConf string
	// ExtraHosts are lines ("IP name...") added to the container's
	// /etc/hosts.
	ExtraHosts []string
	// Privileges weaken the default sandbox; the zero value keeps it whole.
	Privileges Privileges
}

// IDRange is a range of host IDs: HostID..HostID+Size-1.
type IDRange struct{ HostID, Size uint32 }

// Container statuses reported in State.Status.
const (
	StatusRunning = "running"
	StatusExited  = "exited"
	StatusUnknown = "unknown"
)

// State is what the runtime knows of one container.
type State struct {
	ID     string
	Labels map[string]string
	// Status is "running" (the container's init is alive), "exited" (its
	// shim recorded the exit) or "unknown" (neither: e.g. the start did not
	// finish, or the shim was killed, or the node rebooted).
	Status string
	// Pid is the host pid of the container's init (0 if it never started).
	Pid int
	// ExitCode is the exit status, or 128+signal when the init was killed
	// by a signal; -1 unless Status is "exited".
	ExitCode              int
	StartedAt, FinishedAt time.Time
}

// ErrNotFound is returned (wrapped) for a container ID that has no state
// under Root.
var ErrNotFound = errors.New("container not found")

// ErrRunning is returned (wrapped) by Remove for a container that still
// runs.
var ErrRunning = errors.New("container is running")

const (
	defaultLogMax = 10 << 20
	logKeep       = 3
	logName       = "container.log"
)

// Files in a container's state directory.
const (
	fileSpec    = "spec.json"    // the Spec, written before anything else
	fileShim    = "shim.json"    // shim pid + start time, written by the shim
	fileStarted = "started.json" // container pid + start time, written by the shim
	fileExit    = "exit.json"    // exit code and times, written by the shim
	fileShimLog = "shim.log"     // the shim's own stderr
	fileRuncLog = "runc.log"     // runc --log (JSON)
	dirBundle   = "bundle"
	dirUpper    = "upper"
	dirWork     = "work"
	dirEtc      = "etc"
	dirLog      = "log"
	dirSys      = "sys"    // sysfs of a joined network namespace the host owns
	fileUserNS  = "userns" // pin of a joined pod user namespace
)

// Runtime runs containers with runc, one shim per container. All of its
// state is on disk under Options.Root, so a new Runtime on the same Root
// (after the agent restarted) sees every container the old one started.
type Runtime struct {
	root     string
	runc     string
	shim     string
	shimArgs []string
	logMax   int64
	// runcFile is a sealed copy of runc (sealedRunc), nil where one
	// could not be made: runc then protects itself, at a cost per start.
	runcFile *os.File

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// New checks the options and prepares Root.
func New(o Options) (*Runtime, error) {
	if o.Root == "" {
		return nil, errors.New("runtime: Options.Root is required")
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, err
	}
	r := &Runtime{root: root, logMax: o.LogMaxBytes, locks: map[string]*sync.Mutex{}}
	if r.logMax <= 0 {
		r.logMax = defaultLogMax
	}
	runc := o.Runc
	if runc == "" {
		runc = "runc"
	}
	if r.runc, err = exec.LookPath(runc); err != nil {
		return nil, fmt.Errorf("runtime: runc: %w", err)
	}
	if r.runc, err = filepath.Abs(r.runc); err != nil {
		return nil, err
	}
	// Without a sealed copy runc still runs, making its own for each
	// container; only slower.
	r.runcFile, _ = sealedRunc(r.runc)
	r.shim, r.shimArgs = o.Shim, o.ShimArgs
	if r.shim == "" {
		if r.shim, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("runtime: shim binary: %w", err)
		}
		if r.shimArgs == nil {
			r.shimArgs = []string{"shim"}
		}
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{root, 0o711}, {r.containersDir(), 0o711}, {r.runcRoot(), 0o700}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	// The container's root is an unprivileged user on the host: it must be
	// able to walk down to its bundle.
	for p := filepath.Dir(root); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return nil, fmt.Errorf("runtime: root %s: parent %s has mode %o; user-namespaced containers need every parent of the root searchable by others (o+x)", root, p, fi.Mode().Perm())
		}
		if p == "/" {
			break
		}
	}
	return r, nil
}

func (r *Runtime) containersDir() string    { return filepath.Join(r.root, "containers") }
func (r *Runtime) runcRoot() string         { return filepath.Join(r.root, "runc") }
func (r *Runtime) dir(id string) string     { return filepath.Join(r.containersDir(), id) }
func (r *Runtime) path(id, f string) string { return filepath.Join(r.dir(id), f) }

// lock serializes Start, Stop and Remove of one container in this process.
func (r *Runtime) lock(id string) func() {
	r.mu.Lock()
	l, ok := r.locks[id]
	if !ok {
		l = &sync.Mutex{}
		r.locks[id] = l
	}
	r.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func validID(id string) error {
	if id == "" || len(id) > 128 || id == "." || id == ".." {
		return fmt.Errorf("invalid container id %q", id)
	}
	for i, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_' || c == '.')
		if !ok {
			return fmt.Errorf("invalid container id %q: letters, digits, '-', '_' and '.' only, starting with a letter or digit", id)
		}
	}
	return nil
}

func (s *Spec) validate() error {
	if err := validID(s.ID); err != nil {
		return err
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return fmt.Errorf("container %s: no command", s.ID)
	}
	if !filepath.IsAbs(s.Rootfs) {
		return fmt.Errorf("container %s: rootfs %q is not an absolute path", s.ID, s.Rootfs)
	}
	if strings.ContainsAny(s.Rootfs, ",:\\\n") {
		return fmt.Errorf("container %s: rootfs %q: ',', ':' and '\\' are not supported in an overlay lower directory", s.ID, s.Rootfs)
	}
	if fi, err := os.Stat(s.Rootfs); err != nil {
		return fmt.Errorf("container %s: rootfs: %w", s.ID, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("container %s: rootfs %s is not a directory", s.ID, s.Rootfs)
	}
	if s.Cwd != "" && !filepath.IsAbs(s.Cwd) {
		return fmt.Errorf("container %s: cwd %q is not absolute", s.ID, s.Cwd)
	}
	if !s.Privileges.HostUser {
		if s.UserNS.Size == 0 {
			return fmt.Errorf("container %s: UserNS.Size is 0: a user namespace is required", s.ID)
		}
		if s.UserNS.HostID == 0 {
			return fmt.Errorf("container %s: UserNS.HostID is 0: the container's root must not be the host's root", s.ID)
		}
		if uint64(s.UserNS.HostID)+uint64(s.UserNS.Size) > 1<<32-1 {
			return fmt.Errorf("container %s: UserNS range overflows", s.ID)
		}
		if s.UID >= s.UserNS.Size || s.GID >= s.UserNS.Size {
			return fmt.Errorf("container %s: uid %d / gid %d outside the user namespace's %d IDs", s.ID, s.UID, s.GID, s.UserNS.Size)
		}
	}
	if s.UID == 0 && !s.Privileges.Root {
		return fmt.Errorf("container %s: uid 0 without the root privilege", s.ID)
	}
	if err := s.Privileges.validate(s.ID); err != nil {
		return err
	}
	if s.CPUMilli < 0 || s.MemoryBytes < 0 {
		return fmt.Errorf("container %s: negative resource limit", s.ID)
	}
	if s.NetNS != "" {
		if _, err := os.Stat(s.NetNS); err != nil {
			return fmt.Errorf("container %s: network namespace: %w", s.ID, err)
		}
	}
	return nil
}

// readyMsg is what the shim reports on its ready pipe: the container's pid
// once it runs, or why it does not.
type readyMsg struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// Start prepares the bundle, the overlay root (a per-container upper/work
// over s.Rootfs) and config.json, starts the container's shim, and returns
// once the container's process runs, or with the error why it does not.
// A failed Start leaves nothing behind.
func (r *Runtime) Start(ctx context.Context, s Spec) (err error) {
	if err := s.validate(); err != nil {
		return err
	}
	defer r.lock(s.ID)()
	dir := r.dir(s.ID)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("container %s already exists", s.ID)
		}
		return fmt.Errorf("container %s: %w", s.ID, err)
	}
	var shimCmd *exec.Cmd
	defer func() {
		if err == nil {
			return
		}
		if shimCmd != nil && shimCmd.Process != nil {
			shimCmd.Process.Kill()
		}
		r.cleanup(context.Background(), s.ID)
	}()
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	if err := writeJSONMode(filepath.Join(dir, fileSpec), &s, 0o600); err != nil {
		return fmt.Errorf("container %s: %w", s.ID, err)
	}
	if err := r.prepare(&s); err != nil {
		return fmt.Errorf("container %s: %w", s.ID, err)
	}

	// The shim: its own session, stdio to shim.log, fd 3 the ready pipe.
	logf, err := os.OpenFile(filepath.Join(dir, fileShimLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	args := append(append([]string(nil), r.shimArgs...),
		"-root", r.root, "-id", s.ID, "-runc", r.runc,
		"-log-max", strconv.FormatInt(r.logMax, 10), "-ready-fd", "3")
	extra := []*os.File{pw}
	if r.runcFile != nil {
		args = append(args, "-runc-fd", "4")
		extra = append(extra, r.runcFile)
	}
	shimCmd = exec.Command(r.shim, args...)
	shimCmd.Stdout, shimCmd.Stderr = logf, logf
	shimCmd.ExtraFiles = extra
	shimCmd.Dir = "/"
	shimCmd.Env = shimEnv()
	shimCmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := shimCmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("container %s: start shim: %w", s.ID, err)
	}
	pw.Close()
	// Reap the shim while we live; if we die first, init does.
	go shimCmd.Wait()

	msgc := make(chan readyMsg, 1)
	go func() {
		var m readyMsg
		b, _ := io.ReadAll(pr)
		if err := json.Unmarshal(b, &m); err != nil || m.Pid == 0 && m.Error == "" {
			m.Error = "shim exited before the container started"
			if tail := tailFile(filepath.Join(dir, fileShimLog), 2048); tail != "" {
				m.Error += ": " + tail
			}
		}
		msgc <- m
	}()
	select {
	case m := <-msgc:
		if m.Error != "" {
			return fmt.Errorf("container %s: %s", s.ID, m.Error)
		}
		shimCmd = nil // it runs the container now
		return nil
	case <-ctx.Done():
		// Let the shim get to a stable point (runc create/start take
		// moments) so that the cleanup finds whatever it made; kill its
		// process group (it and runc) if it takes too long.
		select {
		case <-msgc:
		case <-time.After(30 * time.Second):
			syscall.Kill(-shimCmd.Process.Pid, syscall.SIGKILL)
		}
		return fmt.Errorf("container %s: start: %w", s.ID, ctx.Err())
	}
}

// shimEnv is the environment of a shim: a clean one, with PATH for runc.
func shimEnv() []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return []string{"PATH=" + path}
}

// Stop sends SIGTERM to the container's init, waits up to grace for it to
// exit, then sends SIGKILL. A container that already exited, or that does
// not exist, is no error.
//
// The init of a PID namespace ignores SIGTERM unless it handles it (as
// with Docker), so a program that does not trap TERM is killed after grace.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	if err := validID(id); err != nil {
		return err
	}
	defer r.lock(id)()
	st, err := r.State(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Status != StatusRunning {
		return nil
	}
	if err := r.signal(id, unix.SIGTERM); err != nil {
		return err
	}
	if grace > 0 {
		tctx, cancel := context.WithTimeout(ctx, grace)
		done := r.waitStopped(tctx, id)
		cancel()
		if done {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("container %s: stop: %w", id, ctx.Err())
		}
	}
	if err := r.signal(id, unix.SIGKILL); err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !r.waitStopped(tctx, id) {
		return fmt.Errorf("container %s: still running 10s after SIGKILL", id)
	}
	return nil
}

// signal sends sig to the container's init through a pidfd, which pins
// the process: the start time is checked after opening it, so a recycled
// pid is never signalled.
func (r *Runtime) signal(id string, sig unix.Signal) error {
	var st startedRecord
	if err := readJSON(r.path(id, fileStarted), &st); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	fd, err := unix.PidfdOpen(st.Pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("container %s: pidfd_open: %w", id, err)
	}
	defer unix.Close(fd)
	if !procAlive(st.Pid, st.PidStart) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("container %s: signal %v: %w", id, sig, err)
	}
	return nil
}

// waitStopped waits until the container is no longer running (its exit is
// recorded, or nothing of it is left alive) or ctx is done.
func (r *Runtime) waitStopped(ctx context.Context, id string) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := r.State(id)
		if err != nil || st.Status != StatusRunning {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// Remove deletes a stopped container: runc delete, unmount its root and
// /etc files, remove its state directory. Removing a container that does
// not exist is no error; removing a running one is (ErrRunning).
func (r *Runtime) Remove(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	defer r.lock(id)()
	st, err := r.State(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Status == StatusRunning {
		return fmt.Errorf("container %s: %w; stop it first", id, ErrRunning)
	}
	return r.cleanup(ctx, id)
}

// cleanup forcibly removes whatever exists of a container.
func (r *Runtime) cleanup(ctx context.Context, id string) error {
	dir := r.dir(id)
	var errs []error
	if out, err := r.runcCmd(ctx, "delete", "--force", id).CombinedOutput(); err != nil {
		if !strings.Contains(string(out), "not exist") {
			errs = append(errs, fmt.Errorf("runc delete: %v: %s", err, strings.TrimSpace(string(out))))
		}
	}
	// A shim still draining logs (or stuck) goes too.
	var sh shimRecord
	if readJSON(filepath.Join(dir, fileShim), &sh) == nil {
		deadline := time.Now().Add(3 * time.Second)
		for procAlive(sh.Pid, sh.PidStart) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if fd, err := unix.PidfdOpen(sh.Pid, 0); err == nil {
			if procAlive(sh.Pid, sh.PidStart) {
				unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			}
			unix.Close(fd)
		}
	}
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("container %s: remove: %w", id, errors.Join(errs...))
	}
	return nil
}

func (r *Runtime) runcCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.runcExe(), append([]string{"--root", r.runcRoot()}, args...)...)
	cmd.Args[0] = "runc"
	cmd.Env = shimEnv()
	return cmd
}

// runcExe is the runc binary to run: the sealed copy if there is one.
func (r *Runtime) runcExe() string {
	if r.runcFile == nil {
		return r.runc
	}
	return fdPath(int(r.runcFile.Fd()))
}

// fdPath names one of this process's open files by a path that stays
// right in a child until it execs: /proc/self/fd would be the child's own
// table, which os/exec may rearrange.
func fdPath(fd int) string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd) }

// State reports one container; an unknown id gives an error wrapping
// ErrNotFound.
func (r *Runtime) State(id string) (State, error) {
	if err := validID(id); err != nil {
		return State{}, err
	}
	dir := r.dir(id)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return State{}, fmt.Errorf("container %s: %w", id, ErrNotFound)
		}
		return State{}, err
	}
	st := State{ID: id, Status: StatusUnknown, ExitCode: -1}
	var spec Spec
	if readJSON(filepath.Join(dir, fileSpec), &spec) == nil {
		st.Labels = spec.Labels
	}
	var ex exitRecord
	if readJSON(filepath.Join(dir, fileExit), &ex) == nil {
		st.Status, st.Pid, st.ExitCode = StatusExited, ex.Pid, ex.ExitCode
		st.StartedAt, st.FinishedAt = ex.StartedAt, ex.FinishedAt
		return st, nil
	}
	var started startedRecord
	if readJSON(filepath.Join(dir, fileStarted), &started) != nil {
		return st, nil
	}
	st.Pid, st.StartedAt = started.Pid, started.StartedAt
	var sh shimRecord
	shimAlive := readJSON(filepath.Join(dir, fileShim), &sh) == nil && procAlive(sh.Pid, sh.PidStart)
	if procAlive(started.Pid, started.PidStart) {
		st.Status = StatusRunning
		return st, nil
	}
	if shimAlive {
		// The init is gone and its shim is writing exit.json: look again.
		for i := 0; i < 100 && procAlive(sh.Pid, sh.PidStart); i++ {
			if readJSON(filepath.Join(dir, fileExit), &ex) == nil {
				st.Status, st.ExitCode, st.FinishedAt = StatusExited, ex.ExitCode, ex.FinishedAt
				return st, nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		if readJSON(filepath.Join(dir, fileExit), &ex) == nil {
			st.Status, st.ExitCode, st.FinishedAt = StatusExited, ex.ExitCode, ex.FinishedAt
		}
	}
	return st, nil
}

// List reports every container under Root, exited ones not yet removed
// included, sorted by ID. This is how an agent restarted after kill -9
// re-adopts its containers.
func (r *Runtime) List() ([]State, error) {
	ents, err := os.ReadDir(r.containersDir())
	if err != nil {
		return nil, err
	}
	var out []State
	for _, e := range ents {
		if !e.IsDir() || validID(e.Name()) != nil {
			continue
		}
		st, err := r.State(e.Name())
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Logs returns the container's log files, oldest first. Each line of them
// is one record: "RFC3339Nano stdout|stderr LINE".
func (r *Runtime) Logs(id string) (paths []string) {
	if validID(id) != nil {
		return nil
	}
	dir := r.path(id, dirLog)
	for i := logKeep - 1; i >= 0; i-- {
		p := filepath.Join(dir, logFileName(i))
		if _, err := os.Stat(p); err == nil {
			paths = append(paths, p)
		}
	}
	return paths
}

func logFileName(i int) string {
	if i == 0 {
		return logName
	}
	return logName + "." + strconv.Itoa(i)
}
