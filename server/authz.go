package server

import (
	"strings"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/ownership"
)

// Authorization has two layers.
//
// By identity kind and role, what a request may attempt:
//
//	                   apply, delete, rollback        status   work   tokens
//	operator admin     yes                            no       no     yes
//	operator edit      yes                            no       no     no
//	operator view      no                             no       no     no
//	controller:NAME    its own Controller object      yes      yes    no
//	node:NAME          its own Node object            yes      yes    no
//
// Then by field ownership, what a write may change: every changed field
// must belong to the writer (ownership.Registry.CheckWrite). Operators own
// labels and spec; each status field has at most one controller owning it;
// nodes write what the agent controller owns.
//
// Everyone authenticated may read; controllers see only the fields they
// declared they read or own.

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
		return nil
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
	return nil
}

// nodeMayRead restricts what a node identity reads, as Kubernetes'
// NodeRestriction does: the pods placed on it, and Node objects (it routes
// to the others); nothing else.
func nodeMayRead(tok Token, o *api.Object) error {
	id := identityOf(tok)
	if id.Kind != identity.Node {
		return nil
	}
	switch o.Kind {
	case "Node":
		return nil
	case "Pod":
		if n, _ := o.Status["node"].(string); n == id.Name {
			return nil
		}
		return forbidden("%s may not read %s: it is not placed on node %s", tok.Identity, o.Ref(), id.Name)
	}
	return forbidden("%s may not read %s: nodes read only their pods and Node objects", tok.Identity, o.Ref())
}

// nodeMayList checks that a node lists only kinds it may read.
func nodeMayList(tok Token, kind string) error {
	if id := identityOf(tok); id.Kind == identity.Node && kind != "Pod" && kind != "Node" {
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
