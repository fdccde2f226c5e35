// Command skiff is the one binary of skiff: CLI, API server and (soon) node
// agent. It only picks a subcommand; package cli does the rest.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"skiff.dev/skiff/agent/runtime"
	"skiff.dev/skiff/cli"
)

func main() {
	// The per-container supervisor is this same binary; it must start
	// lean, before any command-line machinery.
	if len(os.Args) > 1 && os.Args[1] == "shim" {
		os.Exit(runtime.ShimMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
