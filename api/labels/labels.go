// Package labels validates label keys and values and implements label
// selectors, using Kubernetes-compatible syntax:
//
//	app=web,tier!=db,env in (prod,staging),env notin (dev),gpu,!legacy
//
// It is for matching objects by their labels (scheduling, services, CLI
// filters). It is not a general expression language: there are no
// numeric comparisons (Kubernetes' "gt"/"lt"), no OR, and no field
// selectors.
package labels

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// ValidateKey reports whether k is a valid label key: an optional DNS
// subdomain prefix and a slash ("example.com/"), then a name of 1-63
// letters, digits, '-', '_' or '.', starting and ending with a letter or
// digit.
func ValidateKey(k string) error {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name = prefix
	}
	reason := ""
	switch {
	case k == "":
		reason = "must not be empty"
	case strings.Contains(name, "/"):
		reason = `may contain at most one "/"`
	case hasPrefix && prefix == "":
		reason = `prefix before "/" must not be empty`
	case hasPrefix && !isSubdomain(prefix):
		reason = `prefix before "/" must be a DNS subdomain like "example.com" (lowercase letters, digits, '-' and '.', at most 253 characters)`
	case name == "" && hasPrefix:
		reason = `name after "/" must not be empty`
	default:
		reason = checkName(name)
	}
	if reason != "" {
		return fmt.Errorf("invalid label key %q: %s", k, reason)
	}
	return nil
}

// ValidateValue reports whether v is a valid label value: empty, or 1-63
// letters, digits, '-', '_' or '.', starting and ending with a letter or
// digit.
func ValidateValue(v string) error {
	if v == "" {
		return nil
	}
	if reason := checkName(v); reason != "" {
		return fmt.Errorf("invalid label value %q: %s", v, reason)
	}
	return nil
}

// checkName returns why s is not a valid name part, or "".
func checkName(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if len(s) > 63 {
		return fmt.Sprintf("is %d characters long, max 63", len(s))
	}
	for _, r := range s {
		if !isAlnum(r) && r != '-' && r != '_' && r != '.' {
			return fmt.Sprintf("may contain only letters, digits, '-', '_' and '.', found %q", r)
		}
	}
	if !isAlnum(rune(s[0])) || !isAlnum(rune(s[len(s)-1])) {
		return "must start and end with a letter or digit"
	}
	return ""
}

func isAlnum(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

// isSubdomain reports whether s is a DNS-1123 subdomain.
func isSubdomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for part := range strings.SplitSeq(s, ".") {
		if part == "" || len(part) > 63 || part[0] == '-' || part[len(part)-1] == '-' {
			return false
		}
		for _, r := range part {
			if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Selector selects label sets. The zero value selects everything. A
// Selector is immutable and safe for concurrent use.
type Selector struct {
	reqs []requirement // sorted, see canonical
}

type operator int

const (
	opIn        operator = iota // key=value, key in (a,b)
	opNotIn                     // key!=value, key notin (a,b)
	opExists                    // key
	opNotExists                 // !key
)

type requirement struct {
	key    string
	op     operator
	values []string // sorted, unique; only for opIn and opNotIn
}

func (r requirement) matches(l map[string]string) bool {
	v, ok := l[r.key]
	switch r.op {
	case opExists:
		return ok
	case opNotExists:
		return !ok
	case opIn:
		return ok && slices.Contains(r.values, v)
	default:
		return !ok || !slices.Contains(r.values, v)
	}
}

func (r requirement) String() string {
	switch {
	case r.op == opExists:
		return r.key
	case r.op == opNotExists:
		return "!" + r.key
	case len(r.values) == 1 && r.values[0] != "" && r.op == opIn:
		return r.key + "=" + r.values[0]
	case len(r.values) == 1 && r.values[0] != "":
		return r.key + "!=" + r.values[0]
	case r.op == opIn:
		return r.key + " in (" + strings.Join(r.values, ",") + ")"
	default:
		return r.key + " notin (" + strings.Join(r.values, ",") + ")"
	}
}

// Matches reports whether labels l satisfy every requirement of s. A nil
// map is an empty label set.
func (s Selector) Matches(l map[string]string) bool {
	for _, r := range s.reqs {
		if !r.matches(l) {
			return false
		}
	}
	return true
}

// Empty reports whether s has no requirements and so matches everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// String returns the canonical form of s, which Parse accepts:
// requirements sorted by key, "==" written as "=", single-value sets
// written as "=" or "!=", set values sorted and deduplicated. An equality
// on the empty value is written "key in ()", as "key=" is rejected by
// Parse.
func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// FromMap returns a selector that matches label sets containing every
// key/value pair of m. It does not validate m; use ValidateKey and
// ValidateValue first if m comes from a user.
func FromMap(m map[string]string) Selector {
	reqs := make([]requirement, 0, len(m))
	for k, v := range m {
		reqs = append(reqs, requirement{key: k, op: opIn, values: []string{v}})
	}
	return canonical(reqs)
}

func canonical(reqs []requirement) Selector {
	slices.SortStableFunc(reqs, func(a, b requirement) int {
		return cmp.Or(strings.Compare(a.key, b.key), strings.Compare(a.String(), b.String()))
	})
	return Selector{reqs: reqs}
}

// Parse parses a selector such as
//
//	app=web,tier!=db,env in (prod, staging),env notin (dev),gpu,!legacy
//
// "==" is accepted as "=". The empty string (or only spaces) selects
// everything. Keys and values are checked with ValidateKey and
// ValidateValue. As in Kubernetes, "key in ()" and empty items such as
// "key in (a,)" stand for the empty value; "key=" is rejected because it
// is almost always a missing value.
func Parse(s string) (Selector, error) {
	p := parser{src: s}
	var reqs []requirement
	if p.peek().kind == tokEnd {
		return Selector{}, nil
	}
	for {
		r, err := p.requirement()
		if err != nil {
			return Selector{}, fmt.Errorf("selector %q: %w", s, err)
		}
		reqs = append(reqs, r)
		switch t := p.next(); t.kind {
		case tokEnd:
			return canonical(reqs), nil
		case tokComma:
		default:
			return Selector{}, fmt.Errorf(`selector %q: expected "," or end after %q, found %s`, s, r.String(), t)
		}
	}
}

type tokKind int

const (
	tokEnd tokKind = iota
	tokIdent
	tokEq // "=" or "=="
	tokNeq
	tokNot
	tokOpen
	tokClose
	tokComma
)

type token struct {
	kind tokKind
	text string
	pos  int // byte offset
}

func (t token) String() string {
	if t.kind == tokEnd {
		return "end of input"
	}
	return fmt.Sprintf("%q at column %d", t.text, t.pos+1)
}

type parser struct {
	src string
	pos int
}

func (p *parser) next() token {
	for p.pos < len(p.src) && strings.IndexByte(" \t\n\r", p.src[p.pos]) >= 0 {
		p.pos++
	}
	start, rest := p.pos, p.src[p.pos:]
	for _, op := range []struct {
		text string
		kind tokKind
	}{{"==", tokEq}, {"!=", tokNeq}, {"=", tokEq}, {"!", tokNot}, {"(", tokOpen}, {")", tokClose}, {",", tokComma}} {
		if strings.HasPrefix(rest, op.text) {
			p.pos += len(op.text)
			return token{op.kind, op.text, start}
		}
	}
	if rest == "" {
		return token{tokEnd, "", start}
	}
	n := strings.IndexAny(rest, " \t\n\r=!(),")
	if n < 0 {
		n = len(rest)
	}
	p.pos += n
	return token{tokIdent, rest[:n], start}
}

func (p *parser) peek() token {
	saved := p.pos
	defer func() { p.pos = saved }()
	return p.next()
}

func (p *parser) requirement() (requirement, error) {
	t := p.next()
	op := opExists
	if t.kind == tokNot {
		op, t = opNotExists, p.next()
	}
	if t.kind != tokIdent {
		return requirement{}, fmt.Errorf("expected a label key, found %s", t)
	}
	if err := ValidateKey(t.text); err != nil {
		return requirement{}, fmt.Errorf("%w (column %d)", err, t.pos+1)
	}
	r := requirement{key: t.text, op: op}
	next := p.peek()
	if op == opNotExists || next.kind == tokEnd || next.kind == tokComma {
		return r, nil
	}
	p.next()
	switch {
	case next.kind == tokEq || next.kind == tokNeq:
		if r.op = opIn; next.kind == tokNeq {
			r.op = opNotIn
		}
		v := p.next()
		if v.kind != tokIdent {
			if v.kind == tokEnd || v.kind == tokComma {
				return r, fmt.Errorf("value missing after %q", next.text)
			}
			return r, fmt.Errorf("expected a value after %q, found %s", next.text, v)
		}
		if err := ValidateValue(v.text); err != nil {
			return r, fmt.Errorf("%w (column %d)", err, v.pos+1)
		}
		r.values = []string{v.text}
		return r, nil
	case next.kind == tokIdent && (next.text == "in" || next.text == "notin"):
		if r.op = opIn; next.text == "notin" {
			r.op = opNotIn
		}
		values, err := p.values(next.text)
		r.values = values
		return r, err
	}
	return r, fmt.Errorf(`expected "=", "!=", "in", "notin", "," or end after key %q, found %s`, r.key, next)
}

// values parses "(a, b)" after "in" or "notin".
func (p *parser) values(op string) ([]string, error) {
	if t := p.next(); t.kind != tokOpen {
		return nil, fmt.Errorf("expected \"(\" after %q, found %s", op, t)
	}
	var values []string
	for {
		v := ""
		if t := p.peek(); t.kind == tokIdent {
			p.next()
			if err := ValidateValue(t.text); err != nil {
				return nil, fmt.Errorf("%w (column %d)", err, t.pos+1)
			}
			v = t.text
		}
		values = append(values, v)
		switch t := p.next(); t.kind {
		case tokClose:
			slices.Sort(values)
			return slices.Compact(values), nil
		case tokComma:
		case tokEnd:
			return nil, fmt.Errorf(`missing ")" after values of %q`, op)
		default:
			return nil, fmt.Errorf(`expected "," or ")" in values of %q, found %s`, op, t)
		}
	}
}
