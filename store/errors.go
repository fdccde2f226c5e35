package store

import (
	"errors"
	"fmt"

	"skiff.dev/skiff/api"
)

// Error kinds. Errors returned by the store wrap one of these; the server
// maps them to HTTP status codes in one place.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflict")
	ErrTooLarge = errors.New("too large")
)

// ConflictError says that a write expected another revision.
type ConflictError struct {
	Ref         api.Ref
	Expected    int64
	Actual      int64  // 0 if the object does not exist
	LastChanger string // who made the actual revision, when known
}

func (e *ConflictError) Error() string {
	if e.Actual == 0 {
		return fmt.Sprintf("%s: expected revision %d, but the object does not exist", e.Ref, e.Expected)
	}
	by := ""
	if e.LastChanger != "" {
		by = " by " + e.LastChanger
	}
	return fmt.Sprintf("%s: expected revision %d, but it is at revision %d (changed%s); get it again and retry",
		e.Ref, e.Expected, e.Actual, by)
}

func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

func notFound(ref api.Ref) error { return fmt.Errorf("%s: %w", ref, ErrNotFound) }
