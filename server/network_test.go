package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/server"
	"skiff.dev/skiff/store"
)

// Servers of a new cluster start together, each with no --pod-prefix: one
// random prefix wins and every server takes it, none refuses to start.
func TestEnsureNetworkConcurrentStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbeddedOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for round := 0; round < 10; round++ {
		prefix := fmt.Sprintf("/round%d", round)
		got := make([]string, 5)
		errs := make([]error, 5)
		var wg sync.WaitGroup
		for i := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := server.EnsureNetwork(ctx, e.Client, prefix, "")
				got[i], errs[i] = n.PodPrefix, err
			}()
		}
		wg.Wait()
		for i := range got {
			if errs[i] != nil {
				t.Fatalf("round %d, server %d: %v", round, i, errs[i])
			}
			if got[i] != got[0] {
				t.Fatalf("round %d: servers took pod prefixes %v, want one", round, got)
			}
		}
	}
}
