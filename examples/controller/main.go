// Command controller is a runnable example of an external skiff controller:
// it registers a step that "mounts" a network volume for pods before the
// storage target, with a configurable delay and failure rate, so you can
// watch a slow or failing step with `skiff why`.
//
//	skiff token create --controller nfs > /tmp/nfs.token
//	go run ./examples/controller --token-file /tmp/nfs.token --delay 5s
//	skiff apply -f examples/pod.yaml && skiff why pod/web
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/workflow"
)

func main() {
	config := flag.String("config", client.DefaultConfigPath(), "client config (for the server address and CA)")
	tokenFile := flag.String("token-file", "", "file holding this controller's token (skiff token create --controller nfs)")
	delay := flag.Duration("delay", time.Second, "how long a mount takes")
	failRate := flag.Float64("fail", 0, "share of mounts that fail, 0 to 1")
	flag.Parse()
	if err := run(*config, *tokenFile, *delay, *failRate); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

func run(config, tokenFile string, delay time.Duration, failRate float64) error {
	cfg, err := client.LoadConfig(config)
	if err != nil {
		return err
	}
	if tokenFile == "" {
		return errors.New("--token-file is required: skiff token create --controller nfs > nfs.token")
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return err
	}
	cfg.Token = strings.TrimSpace(string(tok))
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// Register: one step before storage, owning the status field it writes
	// and reading the spec it works from.
	reg := api.Object{Kind: "Controller", Name: "nfs", Spec: map[string]any{
		"owns":  []any{"Pod:status.volumes.nfs"},
		"reads": []any{"Pod:spec.containers"},
		"steps": []any{map[string]any{
			"name": "mount-nfs", "kind": "Pod", "phase": "up", "where": "cluster",
			"after": []any{"scheduled"}, "before": []any{"storage"}, "requiredBy": []any{"storage"},
			"timeout": (delay + 30*time.Second).String(),
		}},
	}}
	if _, err := c.Apply(ctx, reg, 0); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	fmt.Println("registered controller/nfs; waiting for work (Ctrl-C stops)")
	return c.Serve(ctx, map[string]client.StepFunc{
		"mount-nfs": func(ctx context.Context, it *workflow.WorkItem, log func(string, map[string]any)) (map[string]any, error) {
			log("mounting", map[string]any{"server": "nfs.example:/export", "delay": delay.String()})
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if rand.Float64() < failRate {
				return nil, errors.New("mount nfs.example:/export: connection refused")
			}
			log("mounted", nil)
			return map[string]any{"status.volumes.nfs": map[string]any{"server": "nfs.example:/export", "mounted": true}}, nil
		},
	})
}
