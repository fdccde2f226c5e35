package identity

import "testing"

func TestFilter(t *testing.T) {
	tests := []struct {
		patterns []string
		changer  string
		want     bool
	}{
		{nil, "operator:alice", true},
		{[]string{"operator:*"}, "operator:alice", true},
		{[]string{"operator:*"}, "controller:scheduler", false},
		{[]string{"operator"}, "operator:bob", true},
		{[]string{"!controller:scheduler"}, "controller:scheduler", false},
		{[]string{"!controller:scheduler"}, "controller:ipam", true},
		{[]string{"!controller:scheduler"}, "operator:alice", true},
		{[]string{"controller:*", "!controller:scheduler"}, "controller:ipam", true},
		{[]string{"controller:*", "!controller:scheduler"}, "controller:scheduler", false},
		{[]string{"controller:*,node:*"}, "node:n2", true},
		{[]string{"controller:*", "node:*"}, "operator:alice", false},
		{[]string{"!node"}, "node:n1", false},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.patterns)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", tt.patterns, err)
		}
		if got := f.Match(tt.changer); got != tt.want {
			t.Errorf("ParseFilter(%q).Match(%q) = %v, want %v", tt.patterns, tt.changer, got, tt.want)
		}
	}
}

func TestFilterErrors(t *testing.T) {
	for _, p := range [][]string{{""}, {"!"}, {"operator:[a"}} {
		if _, err := ParseFilter(p); err == nil {
			t.Errorf("ParseFilter(%q) succeeded, want error", p)
		}
	}
}

func TestParse(t *testing.T) {
	good := []string{"operator:alice", "controller:scheduler", "node:n2", "operator:alice@example.com"}
	for _, s := range good {
		id, err := Parse(s)
		if err != nil || id.String() != s {
			t.Errorf("Parse(%q) = %v, %v", s, id, err)
		}
	}
	bad := []string{"", "alice", "user:alice", "operator:", "operator:Alice", "operator:a b"}
	for _, s := range bad {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) succeeded, want error", s)
		}
	}
}

func TestSimulates(t *testing.T) {
	tests := []struct {
		prefix, node string
		want         bool
	}{
		{"sim", "sim-00001", true},
		{"sim", "sim-1", true},
		{"sim", SimulatedNode("sim", 123456), true},
		{"sim", "sim-", false},
		{"sim", "sim", false},
		{"sim", "sim-a-00001", false}, // simulator sim-a's
		{"sim-a", "sim-a-00001", true},
		{"sim", "simx-00001", false},
		{"sim", "n1", false},
		{"sim", "sim-0001x", false},
		{"", "-00001", false},
	}
	for _, tt := range tests {
		if got := Simulates(tt.prefix, tt.node); got != tt.want {
			t.Errorf("Simulates(%q, %q) = %v, want %v", tt.prefix, tt.node, got, tt.want)
		}
	}
	if got := SimulatedNode("sim", 7); got != "sim-00007" {
		t.Errorf("SimulatedNode(sim, 7) = %q, want sim-00007", got)
	}
	if _, err := Parse("simulator:sim"); err != nil {
		t.Errorf("Parse(simulator:sim): %v", err)
	}
}
