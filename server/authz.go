package server

import (
	"strings"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
)

// Authorization by identity kind, the rule every later refinement (field
// ownership, node restriction) narrows:
//
//	                   labels, spec, delete, rollback   status   tokens
//	operator admin     yes                              no       yes
//	operator edit      yes                              no       no
//	operator view      no                               no       no
//	controller, node   no                               yes      no
//
// Everyone authenticated may read.

func kindOf(tok Token) string { k, _, _ := strings.Cut(tok.Identity, ":"); return k }

// authorizeIntent checks a write of operator intent: labels and spec.
func authorizeIntent(tok Token, ref api.Ref) error {
	switch kindOf(tok) {
	case identity.Operator:
		if tok.Role == RoleView {
			return forbidden("%s has the view role and may not change %s", tok.Identity, ref)
		}
		return nil
	default:
		return forbidden("%s may not change the labels or spec of %s: they are operator intent (controllers and nodes write status)", tok.Identity, ref)
	}
}

// authorizeStatus checks a write of observed state.
func authorizeStatus(tok Token, ref api.Ref) error {
	if kindOf(tok) == identity.Operator {
		return forbidden("%s may not write the status of %s: status is written by controllers and nodes; change spec or labels instead", tok.Identity, ref)
	}
	return nil
}

func authorizeAdmin(tok Token, what string) error {
	if kindOf(tok) != identity.Operator || tok.Role != RoleAdmin {
		return forbidden("%s may not %s: that needs an operator token with the admin role", tok.Identity, what)
	}
	return nil
}
