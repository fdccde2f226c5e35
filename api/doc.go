// Package api defines skiff's objects: the common envelope every object shares
// (kind, name, namespace, labels, spec, status, meta), the registry of kinds,
// each kind's typed spec, and the strict decoding and validation that turns a
// manifest into an object or into one error naming the field and the reason.
//
// Objects travel and are stored in their generic form (spec and status are
// JSON trees), so the store, history and diffs never need to know a kind. A
// kind's typed form is produced by Decode when code needs it, and the canonical
// generic form of a spec is always the re-encoding of its typed form: defaults
// filled in, empty fields left out.
//
// Not here: storage, authorization or field ownership; those live in store and
// server and only use the vocabulary defined here.
package api
