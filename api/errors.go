package api

import "errors"

// ErrInvalid marks every validation and decoding error, so callers can map
// it to one answer (HTTP 400) without matching strings.
var ErrInvalid = errors.New("invalid")

// FieldError says which field of an object is wrong and why.
type FieldError struct {
	Path   string // field path, e.g. spec.containers[0].resources.memory
	Reason string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldErr(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Reason: sprintf(format, args...)}
}
