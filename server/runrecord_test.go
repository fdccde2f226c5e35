package server_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/server"
)

// A run that ended is in etcd: another server (or this one restarted)
// shows it as this one does.
func TestRunsOutliveTheServer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	if _, err := e.admin.Apply(ctx, pod("default", "web", "nginx:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	other, err := server.NewOrchestrator(e.st, e.kv.Client, prefix, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		here, err := e.admin.Runs(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		there, err := other.Runs(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if len(here) == 1 && here[0].State != "running" && len(there) == 1 {
			if there[0].ID != here[0].ID || there[0].State != here[0].State || len(there[0].Steps) != len(here[0].Steps) {
				t.Errorf("the other server shows run %s %s with %d steps, this one %s %s with %d",
					there[0].ID, there[0].State, len(there[0].Steps), here[0].ID, here[0].State, len(here[0].Steps))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: this server shows %d runs, the other %d", len(here), len(there))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
