// Command skiff is the one binary of skiff: CLI, API server and (soon) node
// agent. It only picks a subcommand; package cli does the rest.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"skiff.dev/skiff/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
