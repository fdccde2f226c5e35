package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"skiff.dev/skiff/client"
)

// MaxServers bounds Config.Servers: server i has the underlay address
// ::(1+i), below the nodes' ::11.
const MaxServers = 7

// ServerPort and PeerPort are where each server of a multi-server lab
// listens on its underlay address: the API, and its etcd member's peers.
const (
	ServerPort = 7443
	PeerPort   = 2380
)

// Server is one skiff server of the lab.
type Server struct {
	// Name is the server's name, its etcd member's: "server" in a
	// one-server lab, s1, s2, ... otherwise.
	Name string
	// Namespace is the server's network namespace (PREFIX-s1); the zero
	// Namespace in a one-server lab, whose server runs in the root
	// namespace on the bridge.
	Namespace
	// Underlay is its address on the bridge; URL its API's,
	// https://[Underlay]:PORT; PeerURL its etcd member's ("" in a
	// one-server lab).
	Underlay netip.Addr
	URL      string
	PeerURL  string
	// Dir is its data directory; Log its log file.
	Dir string
	Log string

	veth  string     // "" in the root namespace
	mu    sync.Mutex // guards proc
	proc  *proc
	extra []string // its flags besides --data and --listen, for restarts
}

func (s *Server) running() *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// Running tells whether the server's process runs.
func (s *Server) Running() bool {
	p := s.running()
	return p != nil && !p.exited()
}

// serverFlags are the flags every server of the lab gets from Config.
func (l *Lab) serverFlags() []string {
	var argv []string
	if l.cfg.PodPrefix != "" {
		argv = append(argv, "--pod-prefix", l.cfg.PodPrefix)
	}
	if l.cfg.NodeLease > 0 {
		argv = append(argv, "--node-lease", l.cfg.NodeLease.String())
	}
	if l.cfg.FailoverMargin > 0 {
		argv = append(argv, "--failover-margin", l.cfg.FailoverMargin.String())
	}
	return argv
}

// startServers runs the lab's servers, waits until each serves, and
// writes the lab's client config listing them all.
func (l *Lab) startServers(ctx context.Context) error {
	if l.cfg.Servers <= 1 {
		s := &Server{Name: "server", Underlay: l.BridgeAddr, Dir: filepath.Join(l.Dir, "server"), Log: l.logPath("server"),
			extra: l.serverFlags()}
		l.servers = []*Server{s}
		if err := l.runServer(ctx, s, net.JoinHostPort(l.BridgeAddr.String(), "0")); err != nil {
			return err
		}
		return l.writeConfig()
	}
	var peers []string
	for i := 1; i <= l.cfg.Servers; i++ {
		name := fmt.Sprintf("s%d", i)
		addr := hostAddr(l.Underlay, 1+i)
		s := &Server{
			Name:      name,
			Namespace: Namespace{Name: l.Prefix + "-" + name, Path: netnsPath(l.Prefix + "-" + name)},
			Underlay:  addr,
			PeerURL:   "https://" + net.JoinHostPort(addr.String(), fmt.Sprint(PeerPort)),
			Dir:       filepath.Join(l.Dir, "servers", name),
			Log:       l.logPath(name),
			veth:      l.Prefix + name,
		}
		l.servers = append(l.servers, s)
		peers = append(peers, name+"="+s.PeerURL)
	}
	initial := strings.Join(peers, ",")
	// The cluster CA and every member's peer bundle, made up front: the
	// members must trust each other before there is an etcd to keep a
	// CA in.
	pki := filepath.Join(l.Dir, "pki")
	if out, err := l.Skiff("server", "pki", "--initial-cluster", initial, "--out", pki); err != nil {
		return fmt.Errorf("lab: %w\n%s", err, out)
	}
	for _, s := range l.servers {
		err := l.makeHost(s.Namespace.Name, s.veth, hostSetup{
			sysctls: [][2]string{{"net/ipv6/conf/all/accept_dad", "0"}, {"net/ipv6/conf/default/accept_dad", "0"}},
			addrs:   []netip.Prefix{netip.PrefixFrom(s.Underlay, l.Underlay.Bits())},
		})
		if err != nil {
			return fmt.Errorf("lab: server %s: %w", s.Name, err)
		}
		s.extra = append(l.serverFlags(), "--name", s.Name,
			"--peer-listen", net.JoinHostPort(s.Underlay.String(), fmt.Sprint(PeerPort)),
			"--initial-cluster", initial, "--peer-bundle", filepath.Join(pki, s.Name+".bundle"))
	}
	// The members wait for each other: start them all, then wait.
	errs := make([]error, len(l.servers))
	var wg sync.WaitGroup
	for i, s := range l.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.runServer(ctx, s, net.JoinHostPort(s.Underlay.String(), fmt.Sprint(ServerPort)))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return l.writeConfig()
}

// runServer starts s listening on listen and waits until it says it is up.
func (l *Lab) runServer(ctx context.Context, s *Server, listen string) error {
	argv := append([]string{l.binary, "server", "--data", s.Dir, "--listen", listen}, s.extra...)
	// A restarted server says it is up again: look past what it said.
	var from int64
	if fi, err := os.Stat(s.Log); err == nil {
		from = fi.Size()
	}
	p, err := startProc(s.Name, s.Path, s.Log, argv, l.env)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	if err := l.rec.addProc(p); err != nil {
		return err
	}
	const ready = "skiff is up at "
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		b, _ := os.ReadFile(p.log)
		if int64(len(b)) >= from {
			b = b[from:]
		}
		if i := bytes.Index(b, []byte(ready)); i >= 0 {
			if f := strings.Fields(string(b[i+len(ready):])); len(f) > 0 {
				s.URL = f[0]
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("lab: skiff server %s exited: %v", s.Name, p.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: skiff server %s did not say it was up: %w", s.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// writeConfig writes the lab's client config: a server's admin config,
// listing every server.
func (l *Lab) writeConfig() error {
	var cfg client.Config
	var err error
	for _, s := range l.servers {
		if cfg, err = client.LoadConfig(filepath.Join(s.Dir, "config")); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("lab: no server wrote a client config: %w", err)
	}
	cfg.Servers = l.URLs()
	l.URL = cfg.Servers[0]
	return cfg.Save(l.ConfigPath)
}

// Servers returns the lab's servers, in order (s1, s2, ...).
func (l *Lab) Servers() []*Server { return append([]*Server(nil), l.servers...) }

// ServerByName returns the server of that name, or nil.
func (l *Lab) ServerByName(name string) *Server {
	for _, s := range l.servers {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// URLs are the API URLs of every server, in order: what the lab's client
// config and every agent list.
func (l *Lab) URLs() []string {
	var out []string
	for _, s := range l.servers {
		out = append(out, s.URL)
	}
	return out
}

// KillServer kills a server with SIGKILL, as a crash or a power cut
// would, and waits until it is gone. Its data stays: StartServer starts
// it again.
func (l *Lab) KillServer(name string) error {
	s := l.ServerByName(name)
	if s == nil {
		return fmt.Errorf("lab: no server %s", name)
	}
	p := s.running()
	if p == nil || p.exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return nil
}

// StopServer stops a server with SIGTERM (SIGKILL after 10 s).
func (l *Lab) StopServer(name string) error {
	s := l.ServerByName(name)
	if s == nil {
		return fmt.Errorf("lab: no server %s", name)
	}
	if p := s.running(); p != nil {
		p.stop(10 * time.Second)
	}
	return nil
}

// StartServer starts a stopped or killed server again on its data
// directory, at the same address, and waits until it serves. A member of
// a cluster catches up with the others on its own.
func (l *Lab) StartServer(ctx context.Context, name string) error {
	s := l.ServerByName(name)
	if s == nil {
		return fmt.Errorf("lab: no server %s", name)
	}
	if s.Running() {
		return fmt.Errorf("lab: server %s is running", name)
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return fmt.Errorf("lab: server %s: %w", name, err)
	}
	return l.runServer(ctx, s, u.Host)
}

// ServersStatus asks the lab's servers (whichever serves first, as the
// lab's client config lists them) for the control plane's state: GET
// /v1/servers, what `skiff servers` shows.
func (l *Lab) ServersStatus(ctx context.Context) (client.Servers, error) {
	cfg, err := client.LoadConfig(l.ConfigPath)
	if err != nil {
		return client.Servers{}, err
	}
	c, err := client.New(cfg)
	if err != nil {
		return client.Servers{}, err
	}
	return c.Servers(ctx)
}

// EtcdLeader is the name of the etcd raft leader in st, or "".
func EtcdLeader(st client.Servers) string {
	for _, s := range st.Servers {
		if s.EtcdLeader {
			return s.Name
		}
	}
	return ""
}

// Leaders waits until the cluster has a controllers' leader and an etcd
// raft leader, and returns their names.
func (l *Lab) Leaders(ctx context.Context) (controllers, etcd string, err error) {
	for {
		st, err := l.ServersStatus(ctx)
		if err == nil && st.ControllerLeader != "" && EtcdLeader(st) != "" {
			return st.ControllerLeader, EtcdLeader(st), nil
		}
		if err == nil {
			err = fmt.Errorf("no leader yet: controllers %q, etcd %q", st.ControllerLeader, EtcdLeader(st))
		}
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("lab: leaders: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
