package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// startRegistry runs Debian's docker-registry on a free port of the
// bridge address, storage in Dir/registry, and waits until it answers.
func (l *Lab) startRegistry(ctx context.Context) error {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return fmt.Errorf("lab: registry: %w", err)
	}
	dir := filepath.Join(l.Dir, "registry")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(l.BridgeAddr.String(), "0"))
	if err != nil {
		return fmt.Errorf("lab: registry port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %q\n",
		filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	p, err := startProc("registry", "", l.logPath("registry"), []string{bin, "serve", cfgPath}, l.env)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.registry = p
	l.mu.Unlock()
	if err := l.rec.addProc(p); err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: time.Second}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		resp, err := hc.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			l.Registry = addr
			return nil
		}
		if p.exited() {
			return fmt.Errorf("lab: docker-registry exited: %v", p.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: docker-registry on %s did not answer: %v", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PushImage writes img to the lab's registry as repo:tag
// ("skiff/busybox:1") and returns the reference pods name it by
// ("[fd..::1]:PORT/skiff/busybox:1").
func (l *Lab) PushImage(repoTag string, img v1.Image) (string, error) {
	if l.Registry == "" {
		return "", fmt.Errorf("lab: no registry (Config.Registry)")
	}
	ref, err := name.ParseReference(l.Registry+"/"+repoTag, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, remote.WithTransport(&http.Transport{Proxy: nil})); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref.String(), nil
}
