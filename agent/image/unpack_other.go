//go:build !linux

package image

import (
	"errors"
	"io"
)

var errTooLarge = errors.New("unpacked size exceeds MaxUnpackBytes")

// applier needs Linux (openat2 and friends); elsewhere unpacking fails.
type applier struct{ skipped int }

func newApplier(rootfs string, max int64) (*applier, error) {
	return nil, errors.New("unpacking images needs Linux")
}

func (a *applier) Apply(r io.Reader) error { return errors.ErrUnsupported }
func (a *applier) Sync() error             { return nil }
func (a *applier) Close() error            { return nil }
