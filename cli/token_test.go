package cli

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"skiff.dev/skiff/client"
)

// tokenServer fakes the token endpoints: it records token requests and
// lists three tokens. It returns a client config path for it.
func tokenServer(t *testing.T, requests *[]map[string]any) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		json.NewDecoder(r.Body).Decode(&req)
		*requests = append(*requests, req)
		w.Write([]byte(`{"token":"skiff.0123.secret"}`))
	})
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`[
			{"id":"a1","identity":"operator:alice","role":"edit","namespaces":["media","web"],"createdBy":"operator:admin"},
			{"id":"b2","identity":"operator:ed","role":"edit","createdBy":"operator:admin"},
			{"id":"c3","identity":"node:n1","createdBy":"operator:admin"}]`))
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	cfg := client.Config{
		Servers: []string{srv.URL},
		Token:   "test-token",
		CA:      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})),
	}
	path := filepath.Join(t.TempDir(), "config")
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTokenCreateNamespaces(t *testing.T) {
	var requests []map[string]any
	cfg := tokenServer(t, &requests)

	// Refused before asking the server.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--operator", "alice", "--namespace", "media"}, "--namespace confines only the edit role; the admin role is cluster-wide (add --role edit)"},
		{[]string{"--operator", "alice", "--role", "admin", "--namespace", "media"}, "the admin role is cluster-wide"},
		{[]string{"--operator", "alice", "--role", "view", "-n", "media"}, "the view role is cluster-wide"},
		{[]string{"--controller", "c", "--namespace", "media"}, "--namespace confines only operator tokens"},
		{[]string{"--node", "n1", "--namespace", "media"}, "--namespace confines only operator tokens"},
		{[]string{"--operator", "alice", "--role", "edit", "--namespace", "Media"}, `--namespace "Media" has upper-case letters`},
		{[]string{"--operator", "alice", "--role", "edit", "--namespace", "media", "--namespace", "a_b"}, `--namespace "a_b" is not a DNS label`},
	} {
		_, errs, code := runCLI(t, cfg, "", append([]string{"token", "create"}, c.args...)...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("token create %q: exit %d, %q; want an error containing %q", c.args, code, errs, c.want)
		}
	}
	if len(requests) != 0 {
		t.Errorf("refused token requests reached the server: %v", requests)
	}

	out, errs, code := runCLI(t, cfg, "", "token", "create", "--operator", "alice", "--role", "edit", "--namespace", "media", "--namespace", "web")
	if code != 0 || out != "skiff.0123.secret\n" {
		t.Fatalf("token create: exit %d, %q %s", code, out, errs)
	}
	want := map[string]any{"identity": "operator:alice", "role": "edit", "namespaces": []any{"media", "web"}}
	if len(requests) != 1 || !reflect.DeepEqual(requests[0], want) {
		t.Errorf("token create sent %v, want %v", requests, want)
	}
	// Without --namespace no namespaces are sent, and the global -n
	// default ("default") does not leak into the token.
	requests = nil
	if _, errs, code := runCLI(t, cfg, "", "token", "create", "--operator", "ed", "--role", "edit"); code != 0 {
		t.Fatalf("token create without namespaces: exit %d %s", code, errs)
	}
	if want := map[string]any{"identity": "operator:ed", "role": "edit"}; len(requests) != 1 || !reflect.DeepEqual(requests[0], want) {
		t.Errorf("token create without namespaces sent %v, want %v", requests, want)
	}

	out, errs, code = runCLI(t, cfg, "", "token", "list")
	if code != 0 {
		t.Fatalf("token list: exit %d %s", code, errs)
	}
	rows := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		rows[f[0]] = f
	}
	for id, want := range map[string][]string{
		"ID": {"ID", "IDENTITY", "ROLE", "NAMESPACES", "CREATED", "BY", "AGE"},
		"a1": {"a1", "operator:alice", "edit", "media,web", "operator:admin"},
		"b2": {"b2", "operator:ed", "edit", "all", "operator:admin"},
		"c3": {"c3", "node:n1", "-", "-", "operator:admin"},
	} {
		if got := rows[id]; len(got) < len(want) || !reflect.DeepEqual(got[:len(want)], want) {
			t.Errorf("token list row %s: %q, want it to start %q\n%s", id, got, want, out)
		}
	}
}

// TestTokenCreateSimulator: a simulator token is printed as the skiff
// agent --simulate command that runs its nodes.
func TestTokenCreateSimulator(t *testing.T) {
	var requests []map[string]any
	cfg := tokenServer(t, &requests)
	out, errs, code := runCLI(t, cfg, "", "token", "create", "--simulator", "sim")
	if code != 0 || !strings.HasPrefix(out, "skiff agent --simulate 100 --server https://") ||
		!strings.Contains(out, " --token skiff.0123.secret --ca-hash sha256:") {
		t.Fatalf("token create --simulator: exit %d, %q %s", code, out, errs)
	}
	if want := map[string]any{"identity": "simulator:sim", "role": ""}; len(requests) != 1 || !reflect.DeepEqual(requests[0], want) {
		t.Errorf("token create --simulator sent %v, want %v", requests, want)
	}
	if _, errs, code := runCLI(t, cfg, "", "token", "create", "--simulator", "sim", "--node", "n1"); code == 0 || !strings.Contains(errs, "exactly one of") {
		t.Errorf("--simulator with --node: exit %d, %q", code, errs)
	}
}
