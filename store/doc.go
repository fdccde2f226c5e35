// Package store is skiff's versioned object store on etcd.
//
// Every write of an object makes a new revision {rev, time, changer, cause,
// patch}. The current object lives under one key; its revisions live under
// keys of their own, delta-encoded: a revision holds the patch from the one
// before it, and every SnapshotEvery-th revision (and every re-creation) holds
// the whole object instead, so that reading revision N never replays more
// than SnapshotEvery records. History is kept forever by default.
//
// Keys (P is the prefix, "/skiff" by default; NS is "_" for cluster-scoped kinds):
//
//	P/o/KIND/NS/NAME          the current object, JSON
//	P/h/KIND/NS/NAME/REV      revision REV (12 decimal digits), JSON
//
// Writes are compare-and-swap transactions on the object's etcd mod revision,
// so two writers never both succeed from the same starting point: a writer
// that named the revision it expects gets ErrConflict, one that did not is
// retried on the newer object. An acknowledged write is in etcd's quorum.
// A store remembers the objects it lately wrote or read (known.go), so a
// write usually reads nothing first: its compare proves what was remembered
// current (when it fails, the object is read and the write tried again).
//
// The store knows nothing of kinds beyond their names, nor of who may write
// what: validation is api's job and authorization the server's.
package store
