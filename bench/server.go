package bench

import (
	"context"
	"fmt"
	"log/slog"

	"skiff.dev/skiff/client"
	"skiff.dev/skiff/daemon"
)

// server is an API server the bench runs in its own process (embedded
// etcd in dir, TLS on loopback), with an admin client.
type server struct {
	info  daemon.Info
	cfg   client.Config
	admin *client.Client
	stop  func() // stops the server and waits for it
}

// startServer starts a server in this process and waits until it serves.
// ctx should outlive a cancelled bench: stop ends the server.
func startServer(ctx context.Context, dir string, log *slog.Logger) (*server, error) {
	srvCtx, cancel := context.WithCancel(ctx)
	ready := make(chan daemon.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(srvCtx, daemon.Options{DataDir: dir, Listen: "127.0.0.1:0",
			Log: log, Ready: func(i daemon.Info) { ready <- i }})
	}()
	s := &server{stop: func() { cancel(); <-done }}
	select {
	case s.info = <-ready:
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("server: %w", err)
	}
	var err error
	if s.cfg, err = client.LoadConfig(s.info.ConfigPath); err == nil {
		s.admin, err = client.New(s.cfg)
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}
