package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/server"
)

// A token revoked through another server sharing the cluster's etcd is
// refused here too, though this server verified it before.
func TestRevokedElsewhere(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	temp, secret := e.token("operator:temp", "edit")
	for range 3 {
		if id, _, err := temp.Whoami(ctx); err != nil || id != "operator:temp" {
			t.Fatalf("whoami with a new token: %q %v", id, err)
		}
	}
	other := server.NewTokens(e.kv.Client, prefix)
	if err := other.Revoke(ctx, strings.Split(secret, ".")[1]); err != nil {
		t.Fatalf("revoke on the other server: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, err := temp.Whoami(ctx)
		if err != nil {
			wantError(t, "whoami with a token revoked elsewhere", err, 401, "unauthenticated")
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a token revoked on another server is still accepted after 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
