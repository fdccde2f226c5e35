package api

import "testing"

func TestGrantAllows(t *testing.T) {
	g := GrantSpec{Namespaces: []string{"media"}, PodSelector: "app=jellyfin",
		Privileges: []Privilege{"hostPath:/srv/media:ro", "capability:NET_ADMIN", "hostPath:/data"}}
	web := map[string]string{"app": "jellyfin"}
	tests := []struct {
		ns     string
		labels map[string]string
		p      Privilege
		want   bool
	}{
		{"media", web, "hostPath:/srv/media:ro", true},
		{"media", web, "hostPath:/srv/media/films:ro", true},
		{"media", web, "hostPath:/srv/media", false},     // granted read-only
		{"media", web, "hostPath:/srv/mediax:ro", false}, // not below /srv/media
		{"media", web, "hostPath:/data/x", true},
		{"media", web, "hostPath:/data:ro", true},
		{"media", web, "capability:NET_ADMIN", true},
		{"media", web, "capability:SYS_ADMIN", false},
		{"media", web, "root", false},
		{"default", web, "capability:NET_ADMIN", false},
		{"media", map[string]string{"app": "other"}, "capability:NET_ADMIN", false},
	}
	for _, tt := range tests {
		if got := g.Allows(tt.ns, tt.labels, tt.p); got != tt.want {
			t.Errorf("Allows(%s, %v, %s) = %v, want %v", tt.ns, tt.labels, tt.p, got, tt.want)
		}
	}
	all := GrantSpec{Namespaces: []string{"*"}, Privileges: []Privilege{"root"}}
	if !all.Allows("anything", nil, "root") {
		t.Error(`namespaces ["*"] does not cover every namespace`)
	}
}

func TestPrivilegeRequests(t *testing.T) {
	spec := func(privs ...Privilege) *PodSpec {
		return &PodSpec{Containers: []Container{{Name: "a", Image: "b", User: "0"}}, Privileges: privs,
			Restart: RestartAlways, Failover: FailoverManual}
	}
	if err := spec().Validate(); err == nil {
		t.Error("uid 0 without the root privilege was accepted")
	}
	if err := spec("root").Validate(); err != nil {
		t.Errorf("uid 0 with the root privilege: %v", err)
	}
	if err := spec("root", "root").Validate(); err == nil {
		t.Error("a privilege requested twice was accepted")
	}
}
