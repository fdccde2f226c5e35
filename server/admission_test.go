package server_test

import (
	"context"
	"fmt"
	"testing"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// TestAdmitPrivileges: the admit step passes a pod that asks for no
// privilege, refuses one that asks for a privilege no Grant allows in its
// namespace, and passes one whose privileges are granted, logging them.
func TestAdmitPrivileges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	withPrivileges := func(name string, privileges ...any) api.Object {
		o := pod("default", name, "busybox:1", nil)
		if len(privileges) > 0 {
			o.Spec["privileges"] = privileges
		}
		return o
	}
	if _, err := e.admin.Apply(ctx, api.Object{Kind: "Grant", Name: "default-root", Spec: map[string]any{
		"namespaces": []any{"default"}, "privileges": []any{"root"}}}, 0); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		pod        api.Object
		state, why string
		logged     string // the privileges logged as granted
	}{
		{pod: withPrivileges("plain"), state: workflow.Done},
		{pod: withPrivileges("rooted", "root"), state: workflow.Done, logged: "[root]"},
		{pod: withPrivileges("net", "root", "hostNetwork"), state: workflow.Failed,
			why: "privilege hostNetwork is not granted to pods in namespace default: an operator grants it with a Grant (see docs/security.md)"},
	} {
		if _, err := e.admin.Apply(ctx, tt.pod, 0); err != nil {
			t.Fatalf("apply pod/%s: %v", tt.pod.Name, err)
		}
		s := e.podStep(tt.pod.Name, 1, "admit")
		if s.State != tt.state || s.Reason != tt.why {
			t.Errorf("pod/%s: admit %s: %q\nwant %s: %q", tt.pod.Name, s.State, s.Reason, tt.state, tt.why)
		}
		logged := ""
		for _, l := range s.Log {
			if l.Msg == "privileges granted" {
				logged = fmt.Sprint(l.Attrs["privileges"])
			}
		}
		if logged != tt.logged {
			t.Errorf("pod/%s: admit logged privileges %q, want %q", tt.pod.Name, logged, tt.logged)
		}
	}
}
