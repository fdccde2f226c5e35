package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"skiff.dev/skiff/agent"
	"skiff.dev/skiff/agent/image"
	"skiff.dev/skiff/agent/runtime"
	"skiff.dev/skiff/client"
)

// AgentOptions configure a node agent.
type AgentOptions struct {
	// DataDir holds the agent's state, images and containers. Required.
	DataDir string
	// Name is the node's name; default the host name.
	Name string
	// Client reaches the API as node:NAME. When nil, the agent joins:
	// Server, Token and CAHash (from `skiff token create --node`) are used
	// once, and what they give is kept in DataDir/config.
	Client             *client.Client
	Server, Token      string
	CAHash             string
	Labels             map[string]string
	Address            string
	InsecureRegistries []string
	Log                *slog.Logger
	// Attach, when set, is given the agent's API handler (logs, exec).
	Attach func(node string, a *agent.Agent)
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
	if o.DataDir == "" {
		return errors.New("agent: no data directory (--data DIR)")
	}
	if o.Name == "" {
		o.Name = NodeName()
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
	if c == nil {
		cfg, err := agentConfig(ctx, o)
		if err != nil {
			return err
		}
		if c, err = client.New(cfg); err != nil {
			return err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	rt, err := runtime.New(runtime.Options{Root: filepath.Join(o.DataDir, "runtime"), Shim: exe, ShimArgs: []string{"shim"}})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	imgs, err := image.Open(image.Options{Dir: filepath.Join(o.DataDir, "images"), Insecure: o.InsecureRegistries})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a, err := agent.New(agent.Options{Name: o.Name, DataDir: o.DataDir, Client: c, Runtime: rt,
		Images: imageStore{imgs}, Labels: o.Labels, Address: o.Address, Log: o.Log})
	if err != nil {
		return err
	}
	defer a.Close()
	if o.Attach != nil {
		o.Attach(o.Name, a)
	}
	o.Log.Info("agent running", "node", o.Name, "data", o.DataDir)
	return a.Run(ctx)
}

// agentConfig returns the agent's client config: the one it kept, or a
// new one from joining with a token and a pinned CA hash.
func agentConfig(ctx context.Context, o AgentOptions) (client.Config, error) {
	path := filepath.Join(o.DataDir, "config")
	if cfg, err := client.LoadConfig(path); err == nil {
		return cfg, nil // joined before: no server needed to start
	}
	if o.Server == "" || o.Token == "" || o.CAHash == "" {
		return client.Config{}, errors.New("agent: not joined yet: give --server, --token and --ca-hash (skiff token create --node NAME prints the command)")
	}
	ca, err := agent.FetchCA(ctx, o.Server, o.CAHash)
	if err != nil {
		return client.Config{}, err
	}
	cfg := client.Config{Servers: []string{o.Server}, Token: o.Token, CA: string(ca)}
	if err := cfg.Save(path); err != nil {
		return client.Config{}, err
	}
	return cfg, nil
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
