package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is one process the lab started: the server, the registry or an
// agent.
//
//	starting ──► running ──exits or is stopped──► exited (done closed)
type proc struct {
	name  string // "server", "registry", "n1"
	log   string // its stdout and stderr
	cmd   *exec.Cmd
	start uint64        // its start time in clock ticks, to tell it from a reused pid
	done  chan struct{} // closed when it has exited; err is set then
	err   error
}

// startProc starts argv with its output in logPath, inside the network
// namespace at nsPath ("" for the root namespace), with Pdeathsig SIGKILL
// and a process group of its own. See the package doc for why the
// goroutine that starts it stays locked to its thread while it runs.
func startProc(name, nsPath, logPath string, argv []string, env []string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restore, err := saveNetNS()
		if err != nil {
			runtime.UnlockOSThread()
			started <- err
			return
		}
		if nsPath != "" {
			if err := enterNetNS(nsPath); err != nil {
				if restore() == nil {
					runtime.UnlockOSThread()
				}
				started <- err
				return
			}
		}
		err = cmd.Start()
		back := restore()
		started <- err
		if err != nil {
			if back == nil {
				runtime.UnlockOSThread()
			}
			return
		}
		// The child's Pdeathsig follows this thread: keep it until the
		// child is gone.
		p.err = cmd.Wait()
		close(p.done)
		if back == nil {
			runtime.UnlockOSThread()
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.start, _ = procStart(cmd.Process.Pid)
	return p, nil
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited tells whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs and waits.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	p.cmd.Process.Kill()
	<-p.done
}

// tail returns about the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		f.Seek(-max, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// procStart reads a process's start time (clock ticks since boot) from
// /proc/PID/stat; with the pid it names one process for good.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3 of stat(5), starttime field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, errors.New("zombie")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// alive tells whether pid is still the process that started at start.
func alive(pid int, start uint64) bool {
	s, err := procStart(pid)
	return err == nil && (start == 0 || s == start)
}

// killAndWait SIGKILLs the processes and waits up to 5 s for them to be
// gone (or zombies, which hold nothing).
func killAndWait(pids map[int]uint64) {
	for pid, start := range pids {
		if alive(pid, start) {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for pid, start := range pids {
		for alive(pid, start) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// pidsInNetNS returns the processes (pid → start time) whose network
// namespace is one of inodes.
func pidsInNetNS(inodes map[uint64]bool) map[int]uint64 {
	out := map[int]uint64{}
	if len(inodes) == 0 {
		return out
	}
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil || !inodes[st.Ino] {
			continue
		}
		if start, err := procStart(pid); err == nil {
			out[pid] = start
		}
	}
	return out
}

// nsInode is the inode of a namespace file (a pin or /proc/PID/ns/net).
func nsInode(path string) (uint64, bool) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0, false
	}
	var fs unix.Statfs_t
	if unix.Statfs(path, &fs) != nil || fs.Type != unix.NSFS_MAGIC {
		return 0, false
	}
	return st.Ino, true
}
