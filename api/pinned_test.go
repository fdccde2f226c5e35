package api

import (
	"strings"
	"testing"
)

func TestPinnedSplit(t *testing.T) {
	for _, tc := range []struct {
		replicas, percent int
		rounding          string
		prev, next        int
	}{
		{10, 30, RoundNearest, 7, 3},
		{10, 0, RoundNearest, 10, 0},
		{10, 100, RoundNearest, 0, 10},
		{5, 50, RoundNearest, 2, 3},
		{5, 50, RoundUp, 2, 3},
		{5, 50, RoundDown, 3, 2},
		{3, 10, RoundNearest, 3, 0},
		{3, 10, RoundUp, 2, 1},
		{0, 50, RoundNearest, 0, 0},
	} {
		s := PinnedDeploymentSpec{Replicas: tc.replicas, NextPercent: tc.percent, Rounding: tc.rounding}
		if p, n := s.Split(); p != tc.prev || n != tc.next {
			t.Errorf("%d replicas at %d%% rounding %s: split %d/%d, want %d/%d", tc.replicas, tc.percent, tc.rounding, p, n, tc.prev, tc.next)
		}
	}
}

func TestPinnedValidate(t *testing.T) {
	base := func(extra string) string {
		return `kind: PinnedDeployment
name: web
spec:
  replicas: 3
` + extra
	}
	ok := base(`  nextPercent: 30
  templates:
    previous: {labels: {app: web, version: v1}, spec: {containers: [{name: web, image: "busybox:1"}]}}
    next: {labels: {app: web, version: v2}, spec: {containers: [{name: web, image: "busybox:2"}]}}
`)
	objs, err := ParseManifests("pd.yaml", strings.NewReader(ok), "default")
	if err != nil {
		t.Fatalf("a valid PinnedDeployment: %v", err)
	}
	spec, err := DecodeSpecAs[PinnedDeploymentSpec](&objs[0])
	if err != nil {
		t.Fatal(err)
	}
	if spec.Rounding != RoundNearest || spec.Surge() != 1 || spec.Templates.Next.Spec.Restart != RestartAlways {
		t.Errorf("defaults: rounding %q, surge %d, next restart %q", spec.Rounding, spec.Surge(), spec.Templates.Next.Spec.Restart)
	}
	if sel := SelectorString(spec.Selector()); sel != "app=web" {
		t.Errorf("selector %q, want app=web", sel)
	}
	if imgs := spec.Images(); strings.Join(imgs, " ") != "busybox:1 busybox:2" {
		t.Errorf("images %v", imgs)
	}
	for _, tc := range []struct{ name, manifest, want string }{
		{"percent", base(`  nextPercent: 130
  templates:
    previous: {labels: {app: web}, spec: {containers: [{name: web, image: "busybox:1"}]}}
    next: {labels: {app: web}, spec: {containers: [{name: web, image: "busybox:1"}]}}
`), "spec.nextPercent: 130 is not a percentage from 0 to 100"},
		{"rounding", base(`  rounding: half
  templates:
    previous: {labels: {app: web}, spec: {containers: [{name: web, image: "busybox:1"}]}}
    next: {labels: {app: web}, spec: {containers: [{name: web, image: "busybox:1"}]}}
`), `spec.rounding: "half" is not one of nearest, up, down`},
		{"surge", base(`  maxSurge: 0
  templates:
    previous: {labels: {app: web}, spec: {containers: [{name: web, image: "busybox:1"}]}}
    next: {labels: {app: web}, spec: {containers: [{name: web, image: "busybox:1"}]}}
`), "spec.maxSurge: 0: at least 1 pod"},
		{"template spec", base(`  templates:
    previous: {labels: {app: web}, spec: {containers: [{name: web, image: "busybox:1"}]}}
    next: {labels: {app: web}, spec: {containers: [{name: web}]}}
`), "spec.templates.next.spec.containers[0].image: missing"},
		{"no shared label", base(`  templates:
    previous: {labels: {app: web}, spec: {containers: [{name: web, image: "busybox:1"}]}}
    next: {labels: {app: api}, spec: {containers: [{name: web, image: "busybox:1"}]}}
`), "share no label"},
		{"no labels", base(`  templates:
    previous: {spec: {containers: [{name: web, image: "busybox:1"}]}}
    next: {labels: {app: web}, spec: {containers: [{name: web, image: "busybox:1"}]}}
`), "spec.templates.previous.labels: missing"},
	} {
		_, err := ParseManifests("pd.yaml", strings.NewReader(tc.manifest), "default")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
