package api

import (
	"errors"
	"os"
	"strings"
	"testing"
)

const goodPod = `kind: Pod
name: web
namespace: default
labels: {app: web}
spec:
  containers:
    - name: app
      image: busybox:1
      command: [httpd, -f, -p, "8080", -h, /www]
      env: {GREETING: hello}
      resources: {cpu: 250m, memory: 64Mi}
  restart: always
  failover: manual
`

func TestParseManifestsExample(t *testing.T) {
	f, err := os.Open("../examples/pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, err := ParseManifests("pod.yaml", f, "")
	if err != nil {
		t.Fatalf("examples/pod.yaml: %v", err)
	}
	if len(objs) != 1 || objs[0].Ref() != (Ref{Kind: "Pod", Namespace: "default", Name: "web"}) {
		t.Fatalf("got %+v", objs)
	}
	spec, err := DecodeSpecAs[PodSpec](&objs[0])
	if err != nil {
		t.Fatal(err)
	}
	c := spec.Containers[0]
	if c.Resources.CPU.Milli() != 250 || c.Resources.Memory.Bytes() != 64<<20 || c.Env["GREETING"] != "hello" {
		t.Errorf("decoded container = %+v", c)
	}
	if got := strings.Join(c.Command, " "); got != "httpd -f -p 8080 -h /www" {
		t.Errorf("command = %q", got)
	}
}

func TestParseManifestsDefaultsAndNamespace(t *testing.T) {
	in := "kind: pods\nname: a\nspec:\n  containers: [{name: c, image: busybox}]\n---\nkind: no\nname: n1\n"
	objs, err := ParseManifests("m.yaml", strings.NewReader(in), "prod")
	if err != nil {
		t.Fatal(err)
	}
	if objs[0].Kind != "Pod" || objs[0].Namespace != "prod" {
		t.Errorf("pod = %s in %q, want Pod in prod", objs[0].Kind, objs[0].Namespace)
	}
	if objs[0].Spec["restart"] != "always" || objs[0].Spec["failover"] != "manual" {
		t.Errorf("defaults not filled: %v", objs[0].Spec)
	}
	if objs[1].Kind != "Node" || objs[1].Namespace != "" {
		t.Errorf("node = %s in %q, want cluster-scoped Node", objs[1].Kind, objs[1].Namespace)
	}
}

func TestParseManifestsErrors(t *testing.T) {
	pod := func(container string) string {
		return "kind: Pod\nname: web\nspec:\n  containers:\n    - name: app\n      image: busybox:1\n" + container
	}
	tests := []struct {
		name, in string
		want     string // the whole one-line error
	}{
		{"unknown field", pod("      imagee: x\n"),
			`m.yaml:7: pod/web: spec.containers[0].imagee: unknown field (did you mean image?)`},
		{"wrong type", pod("      command: httpd\n"),
			`m.yaml:7: pod/web: spec.containers[0].command: expected a list, got "httpd"`},
		{"number for string", pod("      command: [httpd, -p, 8080]\n"),
			`m.yaml:7: pod/web: spec.containers[0].command[2]: expected a string, got number 8080 (quote it: "8080")`},
		{"bad memory", pod("      resources: {memory: 64MB}\n"),
			`m.yaml:7: pod/web: spec.containers[0].resources.memory: "64MB" is not a quantity (use 64Mi)`},
		{"bad cpu", pod("      resources:\n        cpu: 2 cores\n"),
			`m.yaml:8: pod/web: spec.containers[0].resources.cpu: `},
		{"bad name", "kind: Pod\nname: Web_1\nspec: {containers: [{name: a, image: b}]}\n",
			`m.yaml:2: pod/Web_1: name: "Web_1" has upper-case letters`},
		{"bad label", "kind: Pod\nname: w\nlabels: {\"a b\": x}\nspec: {containers: [{name: a, image: b}]}\n",
			`m.yaml:3: pod/w: labels["a b"]: `},
		{"duplicate document", goodPod + "---\n" + goodPod,
			`m.yaml:15: pod/web: defined twice in one manifest (first at line 1)`},
		{"duplicate key", "kind: Pod\nname: w\nname: v\n", `m.yaml:3: name: defined twice`},
		{"empty", "", `m.yaml: no objects found (the manifest is empty)`},
		{"only separators", "---\n---\n", `m.yaml: no objects found (the manifest is empty)`},
		{"unknown kind", "kind: Pood\nname: w\n", `m.yaml:1: pood/w: kind: unknown kind "Pood"`},
		{"missing kind", "name: w\n", `m.yaml:1: kind: missing`},
		{"no containers", "kind: Pod\nname: w\nspec: {}\n", `m.yaml:3: pod/w: spec.containers: a pod needs at least one container`},
		{"duplicate container", pod("    - name: app\n      image: x\n"),
			`m.yaml:7: pod/web: spec.containers[1].name: "app" is already the name of containers[0]`},
		{"bad restart", "kind: Pod\nname: w\nspec: {containers: [{name: a, image: b}], restart: sometimes}\n",
			`pod/w: spec.restart: "sometimes" is not one of always, on-failure, never`},
		{"namespace on node", "kind: Node\nname: n\nnamespace: x\n", `m.yaml:3: node/n: namespace: Node is cluster-scoped`},
		{"bad yaml", "kind: Pod\n  name: [\n", `m.yaml:2: not valid YAML`},
		{"bad env name", pod("      env: {1X: y}\n"), `spec.containers[0].env["1X"]: not a valid environment variable name`},
		{"bad image", pod("")[:len(pod(""))-len("busybox:1\n")] + "Busybox:1\n", `spec.containers[0].image: "Busybox:1": repository names are lower-case`},
		{"root user", pod("      user: \"0\"\n"), `spec.containers[0].user: uid 0 (root) needs the root privilege`},
		{"bad user", pod("      user: web\n"), `spec.containers[0].user: "web" is not UID[:GID]`},
		{"after unknown", pod("      after: [db]\n"), `spec.containers[0].after[0]: "db" is not another container of this pod`},
		{"after cycle", pod("      after: [b]\n    - name: b\n      image: x\n      requires: [app]\n"), `spec.containers: start order has a cycle: app, b`},
		{"bad privilege", "kind: Grant\nname: g\nspec: {namespaces: [media], privileges: [hostPath:srv]}\n",
			`grant/g: spec.privileges[0]: "hostPath:srv": host paths are absolute`},
		{"bad duration", "kind: Controller\nname: c\nspec: {steps: [{name: s, kind: Pod, timeout: soon}]}\n",
			`controller/c: spec.steps[0].timeout: "soon" is not a duration`},
		{"bad field ref", "kind: Controller\nname: c\nspec: {owns: [Pod.status]}\n",
			`controller/c: spec.owns[0]: "Pod.status" is not KIND:FIELD`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := ParseManifests("m.yaml", strings.NewReader(tt.in), "")
			if err == nil {
				t.Fatalf("accepted: %+v", objs)
			}
			if objs != nil {
				t.Errorf("returned objects with an error: %+v", objs)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error\n  %s\nwant it to contain\n  %s", msg, tt.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error is not ErrInvalid")
			}
		})
	}
}

func TestParseManifestsGoodKinds(t *testing.T) {
	in := `kind: Grant
name: media-hostpath
spec:
  namespaces: [media]
  podSelector: app=jellyfin
  privileges: ["hostPath:/srv/media:ro", "capability:NET_ADMIN", "device:/dev/fuse", root]
---
kind: Controller
name: nfs
spec:
  owns: [Pod:status.volumes.nfs]
  reads: [Pod:spec.volumes]
  steps:
    - name: mount-nfs
      kind: Pod
      phase: up
      where: node
      before: [storage]
      requiredBy: [storage]
      timeout: 30s
---
kind: Node
name: n1
labels: {region: home}
spec:
  taints: [{key: gpu, value: "true", effect: NoSchedule}]
`
	objs, err := ParseManifests("m.yaml", strings.NewReader(in), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 3 {
		t.Fatalf("got %d objects", len(objs))
	}
	ctl, err := DecodeSpecAs[ControllerSpec](&objs[1])
	if err != nil {
		t.Fatal(err)
	}
	if ctl.Steps[0].Timeout.Value().Seconds() != 30 || ctl.Steps[0].Where != "node" {
		t.Errorf("step = %+v", ctl.Steps[0])
	}
}

func TestDecodeObject(t *testing.T) {
	o, err := DecodeObject([]byte(`{"kind":"Pod","name":"w","spec":{"containers":[{"name":"a","image":"b"}]},"meta":{"revision":9}}`))
	if err != nil {
		t.Fatal(err)
	}
	if o.Namespace != "default" || o.Meta.Revision != 0 {
		t.Errorf("got %+v", o)
	}
	for _, bad := range []string{`{"kind":"Pod"`, `{"kind":"Pod","name":"w"} {}`, `{"kind":"Pod","name":"w","spec":{"containers":[]}}`, `{"kind":"Pod","name":"w","extra":1}`} {
		if _, err := DecodeObject([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeObject(%s) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestLookupKind(t *testing.T) {
	for _, s := range []string{"pod", "pods", "po", "Pod", "PODS"} {
		if k, err := LookupKind(s); err != nil || k.Name != "Pod" {
			t.Errorf("LookupKind(%q) = %v, %v", s, k.Name, err)
		}
	}
	for _, s := range []string{"node", "nodes", "no"} {
		if k, err := LookupKind(s); err != nil || k.Name != "Node" {
			t.Errorf("LookupKind(%q) = %v, %v", s, k.Name, err)
		}
	}
	if _, err := LookupKind("deployment"); err == nil {
		t.Error("LookupKind(deployment) succeeded")
	}
}

func TestValidateName(t *testing.T) {
	for _, s := range []string{"a", "web", "web-1", "1a", strings.Repeat("a", 63)} {
		if err := ValidateName(s); err != nil {
			t.Errorf("ValidateName(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "-a", "a-", "a_b", "A", "a.b", strings.Repeat("a", 64)} {
		if err := ValidateName(s); err == nil {
			t.Errorf("ValidateName(%q) succeeded", s)
		}
	}
}
