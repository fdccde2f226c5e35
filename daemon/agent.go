package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"skiff.dev/skiff/agent"
	"skiff.dev/skiff/agent/image"
	"skiff.dev/skiff/agent/netns"
	"skiff.dev/skiff/agent/runtime"
	"skiff.dev/skiff/agent/sim"
	"skiff.dev/skiff/client"
)

// AgentOptions configure a node agent.
type AgentOptions struct {
	// DataDir holds the agent's state, images and containers. Required.
	DataDir string
	// Name is the node's name; default the host name.
	Name string
	// Client reaches the API as node:NAME. When nil, the agent joins:
	// Servers, Token and CAHash (from `skiff token create --node`) are
	// used once, and what they give is kept in DataDir/config. Servers
	// lists every server of the cluster (the agent fails over between
	// them, see package client); given on a later start, it replaces the
	// list kept (the CA and token stay).
	Client  *client.Client
	Servers []string
	Token   string
	CAHash  string
	Labels  map[string]string
	Address string
	// EgressRange is the IPv4 range of pods' egress addresses; default
	// agent.DefaultEgressRange.
	EgressRange        string
	InsecureRegistries []string
	Log                *slog.Logger
	// Attach, when set, is given the agent's API handler (logs, exec).
	Attach func(node string, a *agent.Agent)
	// Listen, for a joined agent, is where it serves its own API (logs,
	// exec, image imports) to the servers; "" serves none.
	Listen string
	// Simulate, when above 0, runs that many simulated nodes instead of
	// a real one (package agent/sim): Servers, Token (a simulator token)
	// and CAHash are needed at every start, nothing is kept, and neither
	// root nor DataDir is. NamePrefix, if given, must be the token's.
	Simulate   int
	NamePrefix string
	// SimHeartbeat is a simulated node's heartbeat period; default
	// sim.DefaultHeartbeat.
	SimHeartbeat time.Duration
}

// NodeName is the default node name: the host name as a DNS label.
func NodeName() string {
	h, _ := os.Hostname()
	h = strings.ToLower(strings.Split(h, ".")[0])
	var b strings.Builder
	for _, r := range h {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	if s := strings.Trim(b.String(), "-"); s != "" {
		return s
	}
	return "node"
}

// RunAgent runs a node agent until ctx ends.
func RunAgent(ctx context.Context, o AgentOptions) error {
	if o.Simulate > 0 {
		return runSimulator(ctx, o)
	}
	if o.DataDir == "" {
		return errors.New("agent: no data directory (--data DIR)")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if os.Geteuid() != 0 {
		return errors.New("agent: must run as root (it creates namespaces and runs runc)")
	}
	if err := os.MkdirAll(o.DataDir, 0o711); err != nil {
		return err
	}
	// Containers in user namespaces reach their root file systems through
	// this directory and its parents: others may search (not list) them.
	for d := o.DataDir; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("agent: make %s searchable: %w", d, err)
			}
		}
	}
	c := o.Client
	var caPEM []byte
	if c == nil {
		// A joined agent keeps its node name and settings with its config:
		// later starts need --data alone, and no server.
		if err := keptSettings(&o); err != nil {
			return err
		}
		cfg, err := agentConfig(ctx, &o)
		if err != nil {
			return err
		}
		caPEM = []byte(cfg.CA)
		if c, err = client.New(cfg); err != nil {
			return err
		}
		if o.Name == "" {
			o.Name = NodeName()
		}
		if err := keepSettings(o); err != nil {
			return err
		}
	}
	if o.Name == "" {
		o.Name = NodeName()
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	shim, shimArgs, why := shimCommand(exe)
	if why != "" {
		o.Log.Warn("not using skiff-shim; containers start through skiff shim, which takes longer", "why", why)
	}
	rt, err := runtime.New(runtime.Options{Root: filepath.Join(o.DataDir, "runtime"), Shim: shim, ShimArgs: shimArgs})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	imgs, err := image.Open(image.Options{Dir: filepath.Join(o.DataDir, "images"), Insecure: o.InsecureRegistries})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	var egress netip.Prefix
	if o.EgressRange != "" {
		if egress, err = netip.ParsePrefix(o.EgressRange); err != nil || !egress.Addr().Is4() || egress.Bits() > 20 || egress.Masked() != egress {
			return fmt.Errorf("agent: --egress-range %q: want an IPv4 prefix of /20 or larger with its host bits zero, e.g. 10.127.0.0/16", o.EgressRange)
		}
	}
	underlay := o.Address
	if underlay == "" {
		underlay = agent.UnderlayAddress()
	}
	pods, err := netns.Open("")
	if err != nil {
		return fmt.Errorf("agent: pod networking: %w", err)
	}
	defer pods.Close()
	a, err := agent.New(agent.Options{Name: o.Name, DataDir: o.DataDir, Client: c, Runtime: rt,
		Images: imageStore{imgs}, Labels: o.Labels, Address: underlay, Network: pods, EgressRange: egress, Log: o.Log})
	if err != nil {
		return err
	}
	defer a.Close()
	if o.Attach != nil {
		o.Attach(o.Name, a)
	}
	if o.Listen != "" && caPEM != nil {
		// The node's API needs a certificate from the server; a node that
		// starts with no server runs its pods first and serves later.
		go func() {
			for ctx.Err() == nil {
				url, stop, err := serveAgentAPI(ctx, o.Listen, o.Address, o.Name, o.DataDir, c, caPEM, a.Handler())
				if err == nil {
					a.SetAPIURL(url)
					o.Log.Info("agent API serving", "url", url)
					<-ctx.Done()
					stop()
					return
				}
				o.Log.Warn("agent API not serving yet", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Second):
				}
			}
		}()
	}
	o.Log.Info("agent running", "node", o.Name, "data", o.DataDir)
	return a.Run(ctx)
}

// runSimulator runs o.Simulate simulated nodes until ctx ends.
func runSimulator(ctx context.Context, o AgentOptions) error {
	if len(o.Servers) == 0 || o.Token == "" || o.CAHash == "" {
		return errors.New("agent --simulate: give --server, --token and --ca-hash (skiff token create --simulator PREFIX prints the command)")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	ca, err := agent.FetchCAFrom(ctx, o.Servers, o.CAHash)
	if err != nil {
		return err
	}
	cfg := client.Config{Servers: o.Servers, Token: o.Token, CA: string(ca)}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	id, _, err := c.Whoami(wctx)
	cancel()
	if err != nil {
		return fmt.Errorf("join %s: %w", strings.Join(o.Servers, ","), err)
	}
	prefix := sim.Prefix(id)
	switch {
	case prefix == "":
		return fmt.Errorf("agent --simulate: the token is for %s, not a simulator (skiff token create --simulator PREFIX makes one)", id)
	case o.NamePrefix != "" && o.NamePrefix != prefix:
		return fmt.Errorf("agent --simulate: the token is for simulator %s, not --name-prefix %s", prefix, o.NamePrefix)
	}
	s, err := sim.New(sim.Options{Config: cfg, Prefix: prefix, Nodes: o.Simulate, Heartbeat: o.SimHeartbeat, Labels: o.Labels, Log: o.Log})
	if err != nil {
		return err
	}
	o.Log.Info("simulating nodes", "nodes", o.Simulate, "first", s.Node(1), "last", s.Node(o.Simulate))
	return s.Run(ctx)
}

// agentConfig returns the agent's client config: the one it kept, or a
// new one from joining with a token and a pinned CA hash. Joining also
// asks the server whom the token is for: that is the node's name (and
// --name, if given, must be it).
func agentConfig(ctx context.Context, o *AgentOptions) (client.Config, error) {
	path := filepath.Join(o.DataDir, "config")
	if _, err := os.Stat(path); err == nil {
		cfg, err := client.LoadConfig(path)
		if err != nil {
			return client.Config{}, fmt.Errorf("agent: %w", err)
		}
		if o.Token != "" && o.Token != cfg.Token {
			o.Log.Warn("joined before: --token and --ca-hash are ignored; remove the config to join anew", "config", path)
		}
		if len(o.Servers) > 0 && !slices.Equal(o.Servers, cfg.Servers) {
			// The servers given replace those kept: they are checked
			// against the kept CA like any other.
			cfg.Servers = o.Servers
			if err := cfg.Save(path); err != nil {
				return client.Config{}, err
			}
			o.Log.Info("servers replaced", "servers", strings.Join(cfg.Servers, ","), "config", path)
		}
		return cfg, nil // joined before: no server needed to start
	}
	if len(o.Servers) == 0 || o.Token == "" || o.CAHash == "" {
		return client.Config{}, errors.New("agent: not joined yet: give --server, --token and --ca-hash (skiff token create --node NAME prints the command)")
	}
	ca, err := agent.FetchCAFrom(ctx, o.Servers, o.CAHash)
	if err != nil {
		return client.Config{}, err
	}
	cfg := client.Config{Servers: o.Servers, Token: o.Token, CA: string(ca)}
	joined := strings.Join(o.Servers, ",")
	c, err := client.New(cfg)
	if err != nil {
		return client.Config{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	id, _, err := c.Whoami(wctx)
	cancel()
	if err != nil {
		return client.Config{}, fmt.Errorf("join %s: %w", joined, err)
	}
	name, ok := strings.CutPrefix(id, "node:")
	if !ok {
		return client.Config{}, fmt.Errorf("join %s: the token is for %s, not a node (skiff token create --node NAME makes one)", joined, id)
	}
	if o.Name != "" && o.Name != name {
		return client.Config{}, fmt.Errorf("join %s: the token is for node %s, not --name %s", joined, name, o.Name)
	}
	o.Name = name
	// The name first: a config without it would make the next start
	// another node.
	if err := keepSettings(*o); err != nil {
		return client.Config{}, err
	}
	if err := cfg.Save(path); err != nil {
		return client.Config{}, err
	}
	return cfg, nil
}

// agentSettings are what a joined agent keeps in DataDir/agent.json besides
// its client config: what it was started with, for starts with --data
// alone.
type agentSettings struct {
	Name               string            `json:"name"`
	Labels             map[string]string `json:"labels,omitempty"`
	Address            string            `json:"address,omitempty"`
	EgressRange        string            `json:"egressRange,omitempty"`
	InsecureRegistries []string          `json:"insecureRegistries,omitempty"`
}

func settingsPath(o AgentOptions) string { return filepath.Join(o.DataDir, "agent.json") }

// keptSettings fills what o leaves unset from the settings kept. The node
// name cannot change: the pods this data directory holds are that node's.
func keptSettings(o *AgentOptions) error {
	b, err := os.ReadFile(settingsPath(*o))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	var k agentSettings
	if err := json.Unmarshal(b, &k); err != nil {
		return fmt.Errorf("agent: %s: %w", settingsPath(*o), err)
	}
	switch {
	case o.Name == "":
		o.Name = k.Name
	case k.Name != "" && o.Name != k.Name:
		return fmt.Errorf("agent: %s is node %s's, not --name %s's", o.DataDir, k.Name, o.Name)
	}
	if len(o.Labels) == 0 {
		o.Labels = k.Labels
	}
	if o.Address == "" {
		o.Address = k.Address
	}
	if o.EgressRange == "" {
		o.EgressRange = k.EgressRange
	}
	if len(o.InsecureRegistries) == 0 {
		o.InsecureRegistries = k.InsecureRegistries
	}
	return nil
}

// keepSettings writes o's settings to DataDir/agent.json, atomically.
func keepSettings(o AgentOptions) error {
	b, err := json.MarshalIndent(agentSettings{Name: o.Name, Labels: o.Labels, Address: o.Address, EgressRange: o.EgressRange,
		InsecureRegistries: o.InsecureRegistries}, "", "  ")
	if err != nil {
		return err
	}
	tmp := settingsPath(o) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := os.Rename(tmp, settingsPath(o)); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// hasTag reports whether an image reference names a tag.
func hasTag(ref string) bool {
	i := strings.LastIndex(ref, ":")
	return i > strings.LastIndex(ref, "/")
}

// imageStore adapts the image store to what the agent needs.
type imageStore struct{ s *image.Store }

// Import imports an image archive and returns "NAME@DIGEST" of each image.
func (i imageStore) Import(ctx context.Context, path, name string) ([]string, error) {
	imgs, err := i.s.Import(ctx, path, name)
	var out []string
	for _, img := range imgs {
		out = append(out, img.Name+"@"+img.Digest)
	}
	return out, err
}

// GC removes images no root reaches.
func (i imageStore) GC(roots []string) ([]string, error) { return i.s.GC(roots) }

// Pull uses the local copy of an image named by digest or by a tag other
// than latest (like Kubernetes' IfNotPresent): a node needs no registry to
// start what it has, and tags are taken to be immutable. latest is always
// asked for.
func (i imageStore) Pull(ctx context.Context, ref string) (agent.Image, error) {
	img, ok := i.s.Get(ref)
	if !ok || (!strings.Contains(ref, "@") && (strings.HasSuffix(ref, ":latest") || !hasTag(ref))) {
		var err error
		if img, err = i.s.Pull(ctx, ref); err != nil {
			return agent.Image{}, err
		}
	}
	return agent.Image{Digest: img.Digest, Rootfs: img.Rootfs, Entrypoint: img.Config.Entrypoint,
		Cmd: img.Config.Cmd, Env: img.Config.Env, WorkingDir: img.Config.WorkingDir, User: img.Config.User}, nil
}

// shimCommand picks the per-container shim for the skiff executable exe:
// skiff-shim next to it (cmd/skiff-shim, as `make build` and `make
// install` put it) when that is an executable file that speaks this
// build's shim protocol, which starts in a fraction of the time of the
// whole skiff binary; else `skiff shim`, so a lone skiff binary works too,
// and so does one beside a skiff-shim left from another version (why says
// why it was passed over; "" if it was used or there is none).
func shimCommand(exe string) (shim string, args []string, why string) {
	small := filepath.Join(filepath.Dir(exe), "skiff-shim")
	fi, err := os.Stat(small)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return exe, []string{"shim"}, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, small, "-protocol").Output()
	if got := strings.TrimSpace(string(out)); err != nil || got != runtime.ShimProtocolLine {
		if err != nil {
			got = err.Error()
		}
		return exe, []string{"shim"}, fmt.Sprintf("%s answers -protocol with %q, not %q: it is from another build of skiff; install both from one build (make install)",
			small, got, runtime.ShimProtocolLine)
	}
	return small, nil, ""
}
