package api

import (
	"errors"
	"strings"
	"testing"
)

func TestPlacementValidation(t *testing.T) {
	pod := func(placement string) string {
		return "kind: Pod\nname: web\nspec:\n  containers: [{name: app, image: busybox:1}]\n  placement:\n" + placement
	}
	tests := []struct {
		name, in string
		want     string // the whole one-line error
	}{
		{"bad score", pod("    score: pack\n"),
			`m.yaml:6: pod/web: spec.placement.score: "pack" is not one of spread, binpack`},
		{"empty selector key", pod("    nodeSelector: {\"\": home}\n"),
			`m.yaml:6: pod/web: spec.placement.nodeSelector: a key is empty: name the node label to match, like "region: home"`},
		{"bad selector key", pod("    nodeSelector: {\"a b\": home}\n"),
			`m.yaml:6: pod/web: spec.placement.nodeSelector["a b"]: invalid label key "a b": may contain only letters, digits, '-', '_' and '.', found ' '`},
		{"bad selector value", pod("    nodeSelector: {region: \"-home\"}\n"),
			`m.yaml:6: pod/web: spec.placement.nodeSelector.region: invalid label value "-home": must start and end with a letter or digit`},
		{"selector value not a string", pod("    nodeSelector: {gpu: true}\n"),
			`m.yaml:6: pod/web: spec.placement.nodeSelector.gpu: expected a string, got true`},
		{"bad effect", pod("    tolerations: [{key: dedicated, effect: NoExec}]\n"),
			`m.yaml:6: pod/web: spec.placement.tolerations[0].effect: "NoExec" is not one of NoSchedule, NoExecute (or leave it out to match both)`},
		{"toleration without key", pod("    tolerations: [{value: gpu}]\n"),
			`m.yaml:6: pod/web: spec.placement.tolerations[0].key: missing: name the taint's key`},
		{"unknown toleration field", pod("    tolerations: [{key: gpu, operator: Exists}]\n"),
			`m.yaml:6: pod/web: spec.placement.tolerations[0].operator: unknown field (known: effect, key, value)`},
		{"bad spread", pod("    spread: \"/zone\"\n"),
			`m.yaml:6: pod/web: spec.placement.spread: invalid label key "/zone": prefix before "/" must not be empty (spread names a node label, like zone)`},
		{"unknown placement field", pod("    affinity: {}\n"),
			`m.yaml:6: pod/web: spec.placement.affinity: unknown field (known: nodeSelector, score, spread, tolerations)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := ParseManifests("m.yaml", strings.NewReader(tt.in), "")
			if err == nil {
				t.Fatalf("accepted: %+v", objs)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n  %s\nwant\n  %s", got, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error is not ErrInvalid")
			}
		})
	}
}

func TestPlacementAccepted(t *testing.T) {
	in := `kind: Pod
name: web
spec:
  containers: [{name: app, image: busybox:1}]
  placement:
    nodeSelector: {region: home, example.com/disk: ssd}
    tolerations:
      - {key: dedicated, value: gpu, effect: NoSchedule}
      - {key: spot}
    score: binpack
    spread: zone
`
	objs, err := ParseManifests("m.yaml", strings.NewReader(in), "")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := DecodeSpecAs[PodSpec](&objs[0])
	if err != nil {
		t.Fatal(err)
	}
	p := spec.Placement
	if p == nil || p.NodeSelector["example.com/disk"] != "ssd" || p.Score != ScoreBinpack || p.Spread != "zone" || len(p.Tolerations) != 2 {
		t.Fatalf("placement = %+v", p)
	}
	gpu := Taint{Key: "dedicated", Value: "gpu", Effect: NoSchedule}
	if !p.Tolerations[0].Tolerates(gpu) || !p.Tolerations[1].Tolerates(Taint{Key: "spot", Effect: NoExecute}) ||
		p.Tolerations[1].Tolerates(gpu) || p.Tolerations[0].Tolerates(Taint{Key: "dedicated", Value: "db", Effect: NoSchedule}) {
		t.Errorf("tolerations %+v match the wrong taints", p.Tolerations)
	}
	if gpu.String() != "dedicated=gpu:NoSchedule" || (Taint{Key: "spot", Effect: NoExecute}).String() != "spot:NoExecute" {
		t.Errorf("taints print as %s and %s", gpu, Taint{Key: "spot", Effect: NoExecute})
	}
	// A pod without placement stores none.
	objs, _ = ParseManifests("m.yaml", strings.NewReader("kind: Pod\nname: w\nspec: {containers: [{name: a, image: b}]}\n"), "")
	if _, ok := objs[0].Spec["placement"]; ok {
		t.Errorf("a pod without placement stores %v", objs[0].Spec["placement"])
	}
}
