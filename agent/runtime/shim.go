//go:build linux

package runtime

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ShimProtocol numbers what the agent and the shim expect of each other:
// the shim's flags, its ready and state files, its control socket. Bump it
// with any change to them: an agent runs a skiff-shim next to it only if
// the shim answers `skiff-shim -protocol` with this line (one left from an
// older install does not), and `skiff shim`, its own code, otherwise.
const ShimProtocol = 1

// ShimProtocolLine is what `skiff-shim -protocol` prints.
var ShimProtocolLine = fmt.Sprintf("skiff-shim protocol %d", ShimProtocol)

// ShimMain is the container shim: `skiff-shim -root R -id ID -runc RUNC
// -log-max N -ready-fd 3` (cmd/skiff-shim), or the same after `skiff
// shim`. Runtime.Start runs it, one per container, in its own session; it
// outlives the agent. It returns the process's exit code.
//
// The shim makes itself a child subreaper, runs `runc run --detach` with
// the container's stdout and stderr as pipes to itself, reports the
// container's pid (or the error) on the ready fd, then waits
// for the container's init (reparented to it), writes exit.json (exit code
// and times, atomically) before anything else, drains the output into the
// log files and exits.
func ShimMain(args []string) int {
	if len(args) == 1 && args[0] == "-protocol" {
		// The agent asks a skiff-shim found next to it which protocol it
		// speaks before using it (see ShimProtocol).
		fmt.Println(ShimProtocolLine)
		return 0
	}
	fl := flag.NewFlagSet("shim", flag.ContinueOnError)
	root := fl.String("root", "", "runtime state root")
	id := fl.String("id", "", "container id")
	runc := fl.String("runc", "runc", "runc binary")
	logMax := fl.Int64("log-max", defaultLogMax, "rotate the container log at this size")
	readyFD := fl.Int("ready-fd", -1, "fd to report the container's pid or start error on")
	runcFD := fl.Int("runc-fd", -1, "fd of a sealed copy of runc to run instead of -runc")
	hold := fl.Bool("hold", false, "internal: wait for stdin to close (pins new namespaces for CreatePodNetNS)")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *hold {
		return holdMain()
	}
	if *root == "" || validID(*id) != nil {
		fmt.Fprintln(os.Stderr, "skiff shim: -root and a valid -id are required")
		return 2
	}
	s := &shim{
		root:    *root,
		id:      *id,
		runc:    *runc,
		logMax:  *logMax,
		dir:     filepath.Join(*root, "containers", *id),
		runcDir: filepath.Join(*root, "runc"),
	}
	if *readyFD >= 0 {
		s.ready = os.NewFile(uintptr(*readyFD), "ready")
	}
	if *runcFD >= 0 {
		// Moved out of the way of the fds os/exec arranges in runc's
		// processes, and closed at their exec: runc is run by its path
		// in this process's table (see fdPath).
		if fd, err := unix.FcntlInt(uintptr(*runcFD), unix.F_DUPFD_CLOEXEC, 64); err == nil {
			s.runc = fdPath(fd)
		}
		unix.Close(*runcFD)
	}
	if err := s.run(); err != nil {
		s.logf("%v", err)
		s.report(readyMsg{Error: err.Error()})
		return 1
	}
	return 0
}

type shim struct {
	root, id, runc, dir, runcDir string
	logMax                       int64
	ready                        *os.File
}

func (s *shim) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s skiff shim %s: %s\n", time.Now().UTC().Format(time.RFC3339Nano), s.id, fmt.Sprintf(format, args...))
}

func (s *shim) report(m readyMsg) {
	if s.ready == nil {
		return
	}
	json.NewEncoder(s.ready).Encode(m)
	s.ready.Close()
	s.ready = nil
}

func (s *shim) runcCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(s.runc, append([]string{"--root", s.runcDir,
		"--log", filepath.Join(s.dir, fileRuncLog), "--log-format", "json"}, args...)...)
	cmd.Args[0] = "runc"
	cmd.Dir = filepath.Join(s.dir, dirBundle)
	return cmd
}

func (s *shim) run() error {
	// Nothing of the agent's session reaches us; SIGTERM still ends the
	// shim (not the container).
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set child subreaper: %w", err)
	}
	me := os.Getpid()
	start, err := procStart(me)
	if err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(s.dir, fileShim), shimRecord{Pid: me, PidStart: start}); err != nil {
		return err
	}
	lw, err := openLogWriter(filepath.Join(s.dir, dirLog), s.logMax, logKeep)
	if err != nil {
		return err
	}
	defer lw.Close()

	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return err
	}
	// One runc process creates and starts the container (`run
	// --detach`, rather than `create` and then `start`: a process fewer
	// per container). Its init is reparented to us when runc exits; if it
	// exits at once it stays our zombie until we reap it below, so its
	// pid cannot be reused before we read its start time.
	pidFile := filepath.Join(s.dir, "init.pid")
	run := s.runcCmd("run", "--detach", "--bundle", filepath.Join(s.dir, dirBundle), "--pid-file", pidFile, s.id)
	run.Stdout, run.Stderr = outW, errW // the container's stdio
	err = run.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		return fmt.Errorf("runc run: %w", err)
	}
	if err := run.Wait(); err != nil {
		// runc printed why on stderr; its init is gone, so EOF is near.
		errR.SetReadDeadline(time.Now().Add(2 * time.Second))
		msg, _ := io.ReadAll(io.LimitReader(errR, 64<<10))
		s.runcCmd("delete", "--force", s.id).Run()
		return fmt.Errorf("%s", runcError(msg, err))
	}

	// From here on the container may write.
	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); copyLines(lw, "stdout", outR) }()
	go func() { defer copies.Done(); copyLines(lw, "stderr", errR) }()

	b, err := os.ReadFile(pidFile)
	if err != nil {
		s.runcCmd("delete", "--force", s.id).Run()
		return fmt.Errorf("runc run: pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		s.runcCmd("delete", "--force", s.id).Run()
		return fmt.Errorf("runc run: pid file: %w", err)
	}
	pidStart, err := procStart(pid)
	if err != nil {
		s.runcCmd("delete", "--force", s.id).Run()
		return fmt.Errorf("container init %d: %w", pid, err)
	}
	startedAt := time.Now().UTC()
	if err := writeJSON(filepath.Join(s.dir, fileStarted), startedRecord{Pid: pid, PidStart: pidStart, StartedAt: startedAt}); err != nil {
		// The container runs: keep supervising it, but say so.
		s.logf("write %s: %v", fileStarted, err)
	}
	s.report(readyMsg{Pid: pid})

	// Reap everything reparented to us; the container's init is the one
	// that matters. No other child of ours is running now.
	var ws unix.WaitStatus
	for {
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// ECHILD: the init is not our child after all (should not
			// happen); we can tell nothing of how it ended.
			return fmt.Errorf("wait for container init %d: %w", pid, err)
		}
		if wpid == pid {
			break
		}
	}
	ex := exitRecord{Pid: pid, StartedAt: startedAt, FinishedAt: time.Now().UTC()}
	switch {
	case ws.Exited():
		ex.ExitCode = ws.ExitStatus()
	case ws.Signaled():
		ex.Signal = int(ws.Signal())
		ex.ExitCode = 128 + ex.Signal
	default:
		ex.ExitCode = -1
	}
	// First of all: the exit code must survive whatever comes next.
	if err := writeJSON(filepath.Join(s.dir, fileExit), ex); err != nil {
		s.logf("write %s: %v", fileExit, err)
		return err
	}

	// The init's death killed its PID namespace, so the pipes close; do
	// not wait forever if something else holds them.
	done := make(chan struct{})
	go func() { copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.logf("container output still open 5s after exit; not logged further")
	}
	for {
		if wpid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); wpid <= 0 || err != nil {
			break
		}
	}
	return nil
}

// runcError makes a one-line error of what runc printed.
func runcError(out []byte, err error) string {
	msg := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
		msg = strings.TrimSpace(msg[i+1:])
	}
	if msg == "" {
		return "runc: " + err.Error()
	}
	for _, p := range []string{"runc run failed: ", "runc create failed: ", "runc start failed: ", "unable to start container process: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}
