package server

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// countingReader counts the reads of a request body.
type countingReader struct {
	strings.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.Reader.Read(p)
}

// A list request beyond MaxListsInFlight waits for a slot without reading
// its body, and gives up when its client does.
func TestApplyListWaitsForASlot(t *testing.T) {
	s := &Server{lists: make(chan struct{}, 1)}
	s.lists <- struct{}{} // the one slot is taken
	body := &countingReader{Reader: *strings.NewReader(`{"items":[]}`)}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r := httptest.NewRequest("POST", "/v1/apply/list", body).WithContext(ctx)
	err := s.applyList(httptest.NewRecorder(), r, Token{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("applyList with no slot free = %v, want the client's deadline", err)
	}
	if body.reads != 0 {
		t.Errorf("the body was read %d times while waiting for a slot", body.reads)
	}
	if len(s.lists) != 1 {
		t.Errorf("%d slots taken after giving up, want 1 (the other's)", len(s.lists))
	}
}
