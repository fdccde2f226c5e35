// Command shimcmd is a stand-in for `skiff shim` in the runtime's tests:
// `shimcmd shim ARGS...` runs runtime.ShimMain(ARGS), exactly as the skiff
// binary is to wire its hidden subcommand.
package main

import (
	"fmt"
	"os"

	"skiff.dev/skiff/agent/runtime"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "shim" {
		fmt.Fprintln(os.Stderr, "usage: shimcmd shim -root R -id ID ...")
		os.Exit(2)
	}
	os.Exit(runtime.ShimMain(os.Args[2:]))
}
