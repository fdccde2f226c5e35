//go:build linux

package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exec runs args in a running container with `runc exec`: same user,
// working directory, environment, capabilities (none), seccomp profile and
// namespaces as the container's process. It returns the process's exit
// code (128+signal if killed). err is non-nil only when the process could
// not be run (or ctx ended: the process is then signalled through runc).
//
// With tty, the process gets a terminal (runc passes on our 80x24, a
// moment after the start); stdout receives its output (with the
// terminal's \r\n line ends) and stderr is unused.
func (r *Runtime) Exec(ctx context.Context, id string, args []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) (exitCode int, err error) {
	if len(args) == 0 {
		return -1, fmt.Errorf("container %s: exec: no command", id)
	}
	st, err := r.State(id)
	if err != nil {
		return -1, err
	}
	if st.Status != StatusRunning {
		return -1, fmt.Errorf("container %s is not running (%s)", id, st.Status)
	}
	logf, err := os.CreateTemp(r.dir(id), ".exec-*.log")
	if err != nil {
		return -1, err
	}
	logPath := logf.Name()
	logf.Close()
	defer os.Remove(logPath)

	runcArgs := []string{"--root", r.runcRoot(), "--log", logPath, "--log-format", "json", "exec"}
	if tty {
		runcArgs = append(runcArgs, "--tty")
	}
	runcArgs = append(runcArgs, id)
	runcArgs = append(runcArgs, args...)
	cmd := exec.Command(r.runcExe(), runcArgs...)
	cmd.Args[0] = "runc"
	cmd.Env = shimEnv()
	cmd.Dir = "/"
	// Do not wait long for a stdin that never ends once the process is
	// gone.
	cmd.WaitDelay = 2 * time.Second

	if tty {
		exitCode, err = r.execTTY(ctx, id, cmd, logPath, stdin, stdout)
	} else {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
		exitCode, err = r.execWait(ctx, id, cmd, logPath, cmd.Start)
	}
	if err != nil && strings.Contains(err.Error(), "setns") {
		if _, serr := os.Stat(r.path(id, dirSys)); serr == nil {
			err = fmt.Errorf("%w (the container joined a network namespace that its user namespace does not own; runc before 1.2 cannot exec into such a container: create pod network namespaces with CreatePodNetNS)", err)
		}
	}
	return exitCode, err
}

func (r *Runtime) execWait(ctx context.Context, id string, cmd *exec.Cmd, logPath string, start func() error) (int, error) {
	if err := start(); err != nil {
		return -1, fmt.Errorf("container %s: exec: %w", id, err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	var err error
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		// runc exec passes the signal on to the process.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-waitErr:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			err = <-waitErr
		}
		if err == nil {
			return 0, nil
		}
		return -1, fmt.Errorf("container %s: exec: %w", id, ctx.Err())
	}
	if msg := runcLogError(logPath); msg != "" {
		return -1, fmt.Errorf("container %s: %s", id, runcError([]byte(msg), err))
	}
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		return cmd.ProcessState.ExitCode(), nil
	}
	return -1, fmt.Errorf("container %s: exec: %w", id, err)
}

// runcLogError returns the last error runc logged, if any.
func runcLogError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			last = e.Msg
		}
	}
	return strings.TrimSpace(last)
}

// execTTY runs `runc exec --tty` with a pseudo-terminal of ours as its
// stdio: runc then relays between it and the container's own terminal
// (which it creates), and exits with the process's status. We relay
// between our terminal's master side and stdin/stdout.
func (r *Runtime) execTTY(ctx context.Context, id string, cmd *exec.Cmd, logPath string, stdin io.Reader, stdout io.Writer) (int, error) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("container %s: exec: open pty: %w", id, err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return -1, fmt.Errorf("container %s: exec: unlock pty: %w", id, err)
	}
	r1, _, errno := unix.Syscall(unix.SYS_IOCTL, master.Fd(), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	sfd := int(r1)
	if errno != 0 {
		err = errno
		// Older kernels: open the slave by name.
		n, nerr := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
		if nerr != nil {
			return -1, fmt.Errorf("container %s: exec: pty: %w", id, err)
		}
		sfd, err = unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("container %s: exec: pty: %w", id, err)
		}
	}
	slave := os.NewFile(uintptr(sfd), "pty")
	unix.IoctlSetWinsize(sfd, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80})
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave

	outDone := make(chan struct{})
	started := false
	start := func() error {
		err := cmd.Start()
		slave.Close()
		if err != nil {
			return err
		}
		started = true
		go func() {
			defer close(outDone)
			if stdout == nil {
				stdout = io.Discard
			}
			// Reads fail with EIO once runc (the last user of the
			// slave) is gone and the buffer is drained.
			io.Copy(stdout, master)
		}()
		if stdin != nil {
			go io.Copy(master, stdin)
		}
		return nil
	}
	code, err := r.execWait(ctx, id, cmd, logPath, start)
	if started {
		select {
		case <-outDone:
		case <-time.After(2 * time.Second):
		}
	}
	return code, err
}
