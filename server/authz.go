package server

import (
	"slices"
	"strings"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/ownership"
)

// Authorization has two layers.
//
// By identity kind and role, what a request may attempt:
//
//	                   apply, delete, rollback        status   work   tokens   image imports
//	operator admin     yes                            no       no     yes      yes
//	operator edit      yes                            no       no     no       yes
//	edit on NS...      namespaced objects in NS...    no       no     no       no
//	operator view      no                             no       no     no       no
//	controller:NAME    its own Controller object      yes      yes    no       no
//	node:NAME          its own Node object            yes      yes    no       no
//	simulator:PREFIX   as node:PREFIX-DIGITS, for each of those nodes
//
// "edit on NS..." is an edit token confined to namespaces (Token.Namespaces,
// skiff token create --role edit --namespace NS): it writes, execs into and
// reads logs of namespaced objects in those namespaces only, and writes no
// cluster-scoped object (Node, Grant, Controller: a Grant would let it
// weaken the sandbox of its own pods). An edit token without namespaces is
// cluster-wide.
//
// Then by field ownership, what a write may change: every changed field
// must belong to the writer (ownership.Registry.CheckWrite). Operators own
// labels and spec; each status field has at most one controller owning it;
// nodes write what the agent controller owns.
//
// A simulator (simulator.go) acts for the hollow nodes named PREFIX-DIGITS
// (identity.Simulates): each of its requests about a Node or a pod is made
// as the node concerned, node:PREFIX-00042, and so meets every rule of
// nodes; it takes the work of all its nodes in one long poll. Tokens keep
// simulated and real nodes apart (Tokens.disjointNodes).
//
// Everyone authenticated may read, except: controllers see only the fields
// they declared they read or own; nodes read only their pods and Node
// objects (nodeMayRead); an edit token confined to namespaces reads
// namespaced objects only in them, and so lists and watches them one
// namespace at a time, while it reads cluster-scoped objects (the Nodes its
// pods run on, the Grants that admit them) like everyone (scopeMayRead).

func identityOf(tok Token) identity.Identity {
	kind, name, _ := strings.Cut(tok.Identity, ":")
	return identity.Identity{Kind: kind, Name: name}
}

// selfRegistration reports whether ref is id's own registration: a
// controller's Controller object or a node's Node object.
func selfRegistration(id identity.Identity, ref api.Ref) bool {
	return id.Kind == identity.Controller && ref.Kind == "Controller" && ref.Name == id.Name ||
		id.Kind == identity.Node && ref.Kind == "Node" && ref.Name == id.Name
}

// authorizeApply checks who may create or replace an object's intent.
func authorizeApply(tok Token, ref api.Ref) error {
	id := identityOf(tok)
	if id.Kind == identity.Operator {
		if tok.Role == RoleView {
			return forbidden("%s has the view role and may not change %s", tok.Identity, ref)
		}
		return scopeMayWrite(tok, ref, "change")
	}
	if selfRegistration(id, ref) {
		return nil
	}
	if id.Kind == identity.Node && ref.Kind == "Node" {
		return forbidden("%s may not write %s: a node registers only its own Node", tok.Identity, ref)
	}
	return forbidden("%s may not change the labels or spec of %s: they are operator intent (controllers and nodes write the status fields they own)", tok.Identity, ref)
}

// authorizeDelete checks who may delete or roll back.
func authorizeDelete(tok Token, ref api.Ref, verb string) error {
	id := identityOf(tok)
	if id.Kind != identity.Operator {
		return forbidden("%s may not %s %s: only operators do", tok.Identity, verb, ref)
	}
	if tok.Role == RoleView {
		return forbidden("%s has the view role and may not %s %s", tok.Identity, verb, ref)
	}
	return scopeMayWrite(tok, ref, verb)
}

// confinement says which namespaces tok is confined to, for errors:
// "operator:alice is confined to namespaces media, web".
func confinement(tok Token) string {
	if len(tok.Namespaces) == 1 {
		return tok.Identity + " is confined to namespace " + tok.Namespaces[0]
	}
	return tok.Identity + " is confined to namespaces " + strings.Join(tok.Namespaces, ", ")
}

// scopeMayWrite checks that an edit token confined to namespaces writes
// (verb: change, delete, roll back) only namespaced objects in them.
func scopeMayWrite(tok Token, ref api.Ref, verb string) error {
	if len(tok.Namespaces) == 0 {
		return nil
	}
	if k, err := api.LookupKind(ref.Kind); err == nil && !k.Namespaced {
		return forbidden("%s and may not %s %s: it is cluster-scoped, which needs a cluster-wide edit or admin token", confinement(tok), verb, ref)
	}
	if !slices.Contains(tok.Namespaces, ref.Namespace) {
		return forbidden("%s and may not %s %s/%s in namespace %s%s", confinement(tok), verb, strings.ToLower(ref.Kind), ref.Name, ref.Namespace, namespaceHint(tok, ref.Namespace))
	}
	return nil
}

// namespaceHint suggests one of tok's namespaces when a request names the
// default one, which is what the CLI does without -n.
func namespaceHint(tok Token, ns string) string {
	if ns != api.DefaultNamespace {
		return ""
	}
	return ": pass -n " + tok.Namespaces[0]
}

// scopeMayRead checks that an edit token confined to namespaces reaches
// namespaced objects (to read, list, watch, or reach a pod's logs and exec)
// only in them; ns "" means all namespaces, which a list or watch must
// then narrow. Cluster-scoped kinds it reads like any operator.
func scopeMayRead(tok Token, k api.KindInfo, ns string) error {
	if len(tok.Namespaces) == 0 || !k.Namespaced {
		return nil
	}
	if ns == "" {
		return forbidden("%s and may not read %s in all namespaces: name one with -n %s", confinement(tok), k.Plural, tok.Namespaces[0])
	}
	if !slices.Contains(tok.Namespaces, ns) {
		return forbidden("%s and may not reach %s in namespace %s%s", confinement(tok), k.Plural, ns, namespaceHint(tok, ns))
	}
	return nil
}

// authorizeImageImport checks who may import images onto a node. A node's
// images serve the pods of every namespace (a pod whose registry is out of
// reach runs the image imported under its name), so a token confined to
// namespaces may not.
func authorizeImageImport(tok Token) error {
	if id := identityOf(tok); id.Kind != identity.Operator || tok.Role == RoleView {
		return forbidden("%s may not import images: operators with the edit or admin role do", tok.Identity)
	}
	if len(tok.Namespaces) > 0 {
		return forbidden("%s and may not import images: a node's images serve every namespace's pods, so that needs a cluster-wide edit or admin token", confinement(tok))
	}
	return nil
}

// nodeMayRead restricts what a node identity reads, as Kubernetes'
// NodeRestriction does: the pods placed on it, and Node objects (it routes
// to the others); nothing else.
func nodeMayRead(tok Token, o *api.Object) error {
	id := identityOf(tok)
	if id.Kind != identity.Node && id.Kind != identity.Simulator {
		return nil
	}
	switch o.Kind {
	case "Node":
		return nil
	case "Pod":
		n, _ := o.Status["node"].(string)
		switch {
		case id.Kind == identity.Node && n == id.Name, id.Kind == identity.Simulator && identity.Simulates(id.Name, n):
			return nil
		case id.Kind == identity.Simulator:
			return forbidden("%s may not read %s: it is not placed on one of its nodes (%s)", tok.Identity, o.Ref(), identity.SimulatedNode(id.Name, 1)+"…")
		}
		return forbidden("%s may not read %s: it is not placed on node %s", tok.Identity, o.Ref(), id.Name)
	}
	return forbidden("%s may not read %s: nodes read only their pods and Node objects", tok.Identity, o.Ref())
}

// nodeMayList checks that a node lists only kinds it may read.
func nodeMayList(tok Token, kind string) error {
	if id := identityOf(tok); (id.Kind == identity.Node || id.Kind == identity.Simulator) && kind != "Pod" && kind != "Node" {
		return forbidden("%s may not list %s objects: nodes read only their pods and Node objects", tok.Identity, kind)
	}
	return nil
}

// nodeMayWrite restricts a node's status writes to the pods placed on it
// and its own Node.
func nodeMayWrite(tok Token, o *api.Object) error {
	id := identityOf(tok)
	if id.Kind != identity.Node {
		return nil
	}
	if o.Kind == "Node" && o.Name != id.Name {
		return forbidden("%s may not write the status of %s: a node writes only its own Node", tok.Identity, o.Ref())
	}
	return nodeMayRead(tok, o)
}

// authorizeStatus checks a write of observed state before ownership.
func authorizeStatus(tok Token, ref api.Ref) error {
	if identityOf(tok).Kind == identity.Operator {
		return forbidden("%s may not write the status of %s: status is written by controllers and nodes; change spec or labels instead", tok.Identity, ref)
	}
	return nil
}

func authorizeAdmin(tok Token, what string) error {
	if identityOf(tok).Kind != identity.Operator || tok.Role != RoleAdmin {
		return forbidden("%s may not %s: that needs an operator token with the admin role", tok.Identity, what)
	}
	return nil
}

// checkFields enforces field ownership on a change of obj from old to new.
func checkFields(owners *ownership.Registry, tok Token, cur *api.Object, next *api.Object) error {
	var old map[string]any
	managed, manager := "", ""
	if cur != nil {
		old = bodyOf(cur)
		managed = cur.Meta.Owner
	}
	id := identityOf(tok)
	if selfRegistration(id, next.Ref()) {
		// A controller's or node's own registration object is its to write.
		managed, manager = strings.ToLower(next.Kind)+"/"+next.Name, tok.Identity
	}
	if err := owners.CheckWrite(next.Kind, next.Ref().String(), id, managed, manager, old, bodyOf(next)); err != nil {
		return &statusError{kind: errForbidden, msg: err.Error()}
	}
	return nil
}

// stripFor returns what identity may see of obj: controllers see only the
// fields they declared; everyone else sees it whole.
func stripFor(owners *ownership.Registry, tok Token, obj api.Object) api.Object {
	id := identityOf(tok)
	if id.Kind != identity.Controller {
		return obj
	}
	out := obj
	setBody(&out, owners.Strip(obj.Kind, id.Name, bodyOf(&obj)))
	return out
}
