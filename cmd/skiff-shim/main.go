// Command skiff-shim is skiff's per-container supervisor on its own: the
// node agent runs one per container (see package agent/runtime, "The
// shim"), `skiff-shim -root R -id ID ...`.
//
// It is the same code as the hidden `skiff shim`, in a binary that links
// only the runtime package: a few MB and well under a millisecond of
// package initialisation, where the whole skiff binary (etcd, gRPC, the
// API server) spends ~13 ms of CPU starting before the shim's first line
// runs, on every container start. The agent uses skiff-shim when it sits
// next to the skiff executable and `skiff shim` otherwise, so a lone skiff
// binary keeps working. `make build` builds both into bin/.
package main

import (
	"os"

	"skiff.dev/skiff/agent/runtime"
)

func main() {
	os.Exit(runtime.ShimMain(os.Args[1:]))
}
