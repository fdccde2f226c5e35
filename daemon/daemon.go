// Package daemon is the composition root of skiff's long-running processes:
// it starts (or connects to) etcd, builds the store, the CA and the API
// server, bootstraps the first admin token and serves until told to stop.
// Only cmd/skiff's daemons import it; it holds wiring, not logic.
package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/agent"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/server"
	"skiff.dev/skiff/store"
)

// DefaultListen is the API address when none is given.
const DefaultListen = "127.0.0.1:7443"

// Options configure Run. Zero values are the defaults stated on each field.
type Options struct {
	// DataDir holds etcd's data, certificates, the admin token and the
	// client config. Required.
	DataDir string
	// Listen is the API address; default DefaultListen. Port 0 picks one.
	Listen string
	// EtcdEndpoints, when set, uses an external etcd cluster instead of
	// the embedded member.
	EtcdEndpoints []string
	// Name is this server's name, shown by skiff servers; with a cluster
	// of embedded members, its etcd member's name. Default: the name in
	// its peer bundle, else "skiff" for a lone server (its member's name
	// ever since), else (external etcd) the host name.
	Name string
	// InitialCluster, when set, makes the embedded member one of a new
	// etcd cluster: "a=https://10.0.0.1:2380,b=...,c=...", the same on
	// every server, with this server's bundle in PeerBundle (pki.go).
	InitialCluster string
	// PeerBundle is this server's bundle from skiff server pki; default
	// DATA/peer.bundle.
	PeerBundle string
	// Join, when set, is a join bundle (from skiff server add): the
	// embedded member joins the running cluster it names.
	Join string
	// PeerListen is the etcd peer address (HOST:PORT) of a member of a
	// cluster; default the host and port of its peer URL.
	PeerListen string
	// APIURL is the URL the other servers (and clients) reach this
	// server's API at, registered under /skiff/servers/NAME. Default: from
	// the listen address; a listen host of 0.0.0.0 or :: gives the host of
	// the peer URL in a cluster, else loopback.
	APIURL string
	// UserConfig, when set, is a client config path to write too (skiff up
	// writes ~/.config/skiff/config). It is written if absent, or replaced
	// if it belongs to this same cluster; another cluster's is left alone.
	UserConfig string
	// Agent, when set, also runs a node agent in this process (skiff up),
	// with its data in DataDir/agent.
	Agent *AgentOptions
	// PodPrefix is the cluster's IPv6 pod prefix, used when the cluster
	// is first started; "" picks a random ULA /48. Later starts may omit
	// it or repeat it, not change it.
	PodPrefix string
	// Builtins names the built-in controllers to run; nil means
	// server.DefaultBuiltins (admission, scheduler, agent).
	Builtins []string
	// NodeLease is how long a node counts as alive after a heartbeat, and
	// FailoverMargin how much longer the servers wait before moving its
	// failover:fast pods; defaults server.DefaultNodeLease and
	// server.DefaultFailoverMargin. Agents learn the lease from the
	// servers. Tests shorten both.
	NodeLease, FailoverMargin time.Duration
	// Ready is called once the API serves.
	Ready func(Info)
	Log   *slog.Logger
}

// Info describes a running server.
type Info struct {
	URL        string // https://HOST:PORT
	ConfigPath string // DataDir/config
	UserConfig string // the user config written, or "" if left alone
	Note       string // why the user config was left alone
}

const prefix = "/skiff"

// Run serves until ctx is cancelled, then shuts down cleanly.
func Run(ctx context.Context, o Options) error {
	if o.DataDir == "" {
		return errors.New("no data directory (--data DIR)")
	}
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	lock, err := lockDataDir(o.DataDir)
	if err != nil {
		return err
	}
	defer lock.Close()

	member, err := clusterSetup(o)
	if err != nil {
		return err
	}
	var kv *clientv3.Client
	var local *store.Embedded // nil with an external etcd
	switch {
	case len(o.EtcdEndpoints) > 0:
		if kv, err = store.Dial(o.EtcdEndpoints); err != nil {
			return err
		}
		defer kv.Close()
		if o.Name == "" {
			o.Name = NodeName()
		}
	default:
		eo := store.EmbeddedOptions{Dir: filepath.Join(o.DataDir, "etcd"), Name: o.Name, Log: o.Log}
		if member != nil {
			eo.Name, eo.Cluster = member.name, &member.opts
		}
		if local, err = store.StartEmbedded(ctx, eo); err != nil {
			return err
		}
		defer local.Close()
		kv = local.Client
		o.Name = local.Status().Name
	}

	var ca *server.CA
	if member != nil {
		if ca, err = server.AdoptCA(ctx, kv, prefix, []byte(member.bundle.CACert), []byte(member.bundle.CAKey)); err != nil {
			return err
		}
	}
	if _, err := server.EnsureNetwork(ctx, kv, prefix, o.PodPrefix); err != nil {
		return err
	}
	if ca == nil {
		if ca, err = server.EnsureCA(ctx, kv, prefix); err != nil {
			return err
		}
	}
	pki := filepath.Join(o.DataDir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pki, "ca.crt"), ca.CertPEM, 0o644); err != nil {
		return err
	}
	tokens := server.NewTokens(kv, prefix)
	adminToken, err := bootstrapAdmin(ctx, kv, tokens, o.DataDir)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another skiff running? pick another address with --listen)", o.Listen, err)
	}
	apiURL, err := o.apiURL(ln.Addr().(*net.TCPAddr), member)
	if err != nil {
		ln.Close()
		return err
	}
	hosts := server.Hosts(o.Listen)
	if u, err := url.Parse(apiURL); err == nil && !slices.Contains(hosts, u.Hostname()) {
		hosts = append(hosts, u.Hostname())
	}
	cert, err := ca.ServerCert(pki, hosts)
	if err != nil {
		ln.Close()
		return fmt.Errorf("server certificate: %w", err)
	}
	st := store.New(kv, store.Options{Prefix: prefix})
	// This server as the others see it (skiff servers), before it
	// campaigns for the controllers under its name.
	self := server.ServerRecord{Name: o.Name, APIURL: apiURL}
	var members *server.Membership
	if local != nil {
		members = server.NewMembership(kv, prefix, self, local, ca)
	} else {
		members = server.NewMembership(kv, prefix, self, nil, ca)
		if err := members.CheckName(ctx); err != nil {
			ln.Close()
			return err
		}
	}
	orch, err := server.NewOrchestrator(st, kv, prefix, o.Log, o.Builtins)
	if err == nil {
		orch.SetNodeLease(o.NodeLease, o.FailoverMargin)
	}
	if err != nil {
		return err
	}
	// A lone embedded member has no other server to elect against: it
	// leads without an election (SetIdentity with no name). Members of a
	// cluster, and servers sharing an external etcd, campaign by name.
	lone := local != nil && !local.Clustered()
	if lone {
		orch.SetIdentity("", apiURL)
	} else {
		orch.SetIdentity(o.Name, apiURL)
	}
	orchCtx, stopOrch := context.WithCancel(ctx)
	orchDone := make(chan struct{})
	go func() { orch.Run(orchCtx); close(orchDone) }()
	defer func() { stopOrch(); <-orchDone }()
	api := server.New(st, tokens, orch)
	api.SetTLS(ca, cert)
	if lone {
		members.SetControllerLeader(func(context.Context) (string, string, error) { return o.Name, apiURL, nil })
	} else {
		members.SetControllerLeader(func(ctx context.Context) (string, string, error) { return server.Leader(ctx, kv, prefix) })
	}
	api.SetMembership(members)
	advCtx, stopAdv := context.WithCancel(ctx)
	advDone := make(chan struct{})
	go func() { members.Advertise(advCtx, o.Log); close(advDone) }()
	defer func() { stopAdv(); <-advDone }()
	srv := &http.Server{
		Handler:           api,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()

	info := Info{URL: apiURL, ConfigPath: filepath.Join(o.DataDir, "config")}
	cfg := client.Config{Servers: []string{info.URL}, Token: adminToken, CA: string(ca.CertPEM)}
	if adminToken != "" {
		if err := cfg.Save(info.ConfigPath); err != nil {
			return fmt.Errorf("write client config: %w", err)
		}
		if o.UserConfig != "" {
			info.UserConfig, info.Note = writeUserConfig(o.UserConfig, cfg)
		}
	}
	agentDone := make(chan error, 1)
	agentRunning := false
	if o.Agent != nil {
		agentRunning = true
		ao := *o.Agent
		if ao.Name == "" {
			ao.Name = NodeName()
		}
		if ao.DataDir == "" {
			ao.DataDir = filepath.Join(o.DataDir, "agent")
		}
		if ao.Log == nil {
			ao.Log = o.Log
		}
		nodeTok, err := localNodeToken(ctx, tokens, o.DataDir, ao.Name)
		if err != nil {
			return err
		}
		c, err := client.New(client.Config{Servers: []string{info.URL}, Token: nodeTok, CA: string(ca.CertPEM)})
		if err != nil {
			return err
		}
		ao.Client = c
		ao.Attach = func(node string, a *agent.Agent) { api.AttachNode(node, a.Handler()) }
		go func() { agentDone <- RunAgent(ctx, ao) }()
	}
	if o.Ready != nil {
		o.Ready(info)
	}

	var memberGone <-chan struct{}
	if local != nil {
		memberGone = local.Done()
	}
	select {
	case err := <-serveErr:
		return fmt.Errorf("api server: %w", err)
	case <-memberGone:
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(sctx)
		cancel()
		return fmt.Errorf("this server's etcd member %s stopped: it was removed from the cluster (skiff server remove), or failed (see %s). "+
			"A removed member cannot come back with its data: move %s away and join anew (skiff server add)",
			o.Name, filepath.Join(o.DataDir, "etcd", "etcd.log"), o.DataDir)
	case err := <-agentDone:
		agentRunning = false
		if err != nil {
			o.Log.Error("local agent stopped; the server goes on without it", "err", err)
		}
		<-ctx.Done()
	case <-ctx.Done():
	}
	o.Log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if agentRunning {
		select {
		case <-agentDone:
		case <-time.After(15 * time.Second):
			o.Log.Warn("local agent did not stop within 15s")
		}
	}
	return nil
}

// apiURL is the URL this server's API is reached at: o.APIURL, else the
// listen address made dialable. A listen host of 0.0.0.0 or :: says
// nothing of how others reach this server; in a cluster the host of its
// peer URL does.
func (o Options) apiURL(ln *net.TCPAddr, member *clusterMember) (string, error) {
	if o.APIURL != "" {
		u, err := url.Parse(o.APIURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return "", fmt.Errorf("--api-url %q: want https://HOST:PORT", o.APIURL)
		}
		return strings.TrimSuffix(o.APIURL, "/"), nil
	}
	if member != nil && ln.IP.IsUnspecified() {
		peers, _ := store.ParseInitialCluster(member.bundle.InitialCluster)
		if h := store.PeerHost(member.bundle.Self(peers)); h != "" {
			return "https://" + net.JoinHostPort(h, strconv.Itoa(ln.Port)), nil
		}
	}
	return "https://" + advertise(ln), nil
}

// advertise turns a listen address into one clients can dial.
func advertise(a *net.TCPAddr) string {
	if a.IP.IsUnspecified() {
		if a.IP.To4() != nil {
			return fmt.Sprintf("127.0.0.1:%d", a.Port)
		}
		return fmt.Sprintf("[::1]:%d", a.Port)
	}
	return a.String()
}

// bootstrapAdmin creates the first admin token once per cluster and keeps
// its secret in DATA/admin.token (mode 0600). It returns the secret this
// data directory holds, or "" if the cluster was bootstrapped elsewhere.
func bootstrapAdmin(ctx context.Context, kv *clientv3.Client, tokens *server.Tokens, dir string) (string, error) {
	path := filepath.Join(dir, "admin.token")
	if b, err := os.ReadFile(path); err == nil {
		secret := strings.TrimSpace(string(b))
		if _, err := tokens.Verify(ctx, secret); err == nil {
			return secret, nil
		}
		return "", fmt.Errorf("%s holds a token this cluster does not know (revoked, or a data directory from another cluster)", path)
	}
	key := prefix + "/bootstrap"
	resp, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, time.Now().UTC().Format(time.RFC3339))).Commit()
	if err != nil {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	if !resp.Succeeded {
		return "", nil // another server of this cluster did it
	}
	secret, _, err := tokens.Create(ctx, identity.Identity{Kind: identity.Operator, Name: "admin"}, server.RoleAdmin, "bootstrap")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write admin token: %w", err)
	}
	return secret, nil
}

// localNodeToken returns the token of the agent running in this process,
// kept in DATA/node.token, creating it on first start.
func localNodeToken(ctx context.Context, tokens *server.Tokens, dir, node string) (string, error) {
	path := filepath.Join(dir, "node.token")
	if b, err := os.ReadFile(path); err == nil {
		secret := strings.TrimSpace(string(b))
		if tok, err := tokens.Verify(ctx, secret); err == nil && tok.Identity == "node:"+node {
			return secret, nil
		}
	}
	secret, _, err := tokens.Create(ctx, identity.Identity{Kind: identity.Node, Name: node}, "", "skiff up")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", err
	}
	return secret, nil
}

func writeUserConfig(path string, cfg client.Config) (written, note string) {
	if old, err := client.LoadConfig(path); err == nil && !bytes.Equal([]byte(old.CA), []byte(cfg.CA)) {
		return "", fmt.Sprintf("%s belongs to another cluster and was left alone; use SKIFF_CONFIG to pick this one", path)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		if _, statErr := os.Stat(path); statErr == nil {
			return "", fmt.Sprintf("%s is not a skiff config (%v) and was left alone", path, err)
		}
	}
	if err := cfg.Save(path); err != nil {
		return "", fmt.Sprintf("could not write %s: %v", path, err)
	}
	return path, ""
}
