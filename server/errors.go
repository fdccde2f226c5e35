package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/store"
)

var (
	errUnauthenticated = errors.New("unauthenticated")
	errForbidden       = errors.New("forbidden")
	errNotFound        = errors.New("not found")
	errTooLarge        = errors.New("request too large")
	errMethod          = errors.New("method not allowed")
	errConflict        = errors.New("conflict")
	// errPassedOn: a request passed to the leader got no answer; it may
	// have been carried out there.
	errPassedOn = errors.New("passed on, no answer")
	// errStopping: this server is shutting down; the request was not
	// carried out (a 503: clients try another server). Not logged: every
	// request in flight at a shutdown gets it.
	errStopping = &statusError{kind: errUnavailable, msg: "this server is stopping: try another server"}
)

// statusError is an error with its HTTP answer chosen where it was made.
type statusError struct {
	kind error
	msg  string
}

func (e *statusError) Error() string        { return e.msg }
func (e *statusError) Is(target error) bool { return target == e.kind }

func forbidden(format string, args ...any) error {
	return &statusError{kind: errForbidden, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{api.ErrInvalid}, args...)...)
}

// ErrorBody is the JSON answer to every failed request.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"` // invalid, unauthenticated, forbidden, not_found, exists, conflict, too_large, unavailable, internal
}

// httpStatus is the one place that maps error kinds to HTTP answers, for
// a request of method.
func httpStatus(method string, err error) (int, string) {
	switch {
	case errors.Is(err, errUnauthenticated):
		return http.StatusUnauthorized, "unauthenticated"
	case errors.Is(err, errForbidden):
		return http.StatusForbidden, "forbidden"
	case errors.Is(err, errTooLarge), errors.Is(err, store.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed, "method_not_allowed"
	case errors.Is(err, api.ErrInvalid):
		return http.StatusBadRequest, "invalid"
	case errors.Is(err, store.ErrConflict), errors.Is(err, errConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, store.ErrExists):
		return http.StatusConflict, "exists"
	case errors.Is(err, store.ErrNotFound), errors.Is(err, errNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, errPassedOn):
		// 502, which clients take as "outcome unknown", not 503 ("not
		// carried out, try another server").
		return http.StatusBadGateway, "unavailable"
	case method != http.MethodGet && method != http.MethodHead && etcdTimedOut(err):
		// etcd took the write and gave up waiting for it: it may still be
		// committed (a proposal queued towards a leader out of reach is
		// delivered once the link is back). 504: the outcome is unknown,
		// which clients do not take for "not carried out".
		return http.StatusGatewayTimeout, "unavailable"
	case etcdUnavailable(err): // errUnavailable too; see quorum.go
		return http.StatusServiceUnavailable, "unavailable"
	}
	return http.StatusInternalServerError, "internal"
}

func writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, body := errorAnswer(r, err)
	writeJSON(w, status, body)
}

// errorAnswer is the answer to request r that failed with err: its
// status and body. It logs the failures that are the server's to report.
func errorAnswer(r *http.Request, err error) (int, ErrorBody) {
	status, code := httpStatus(r.Method, err)
	msg := err.Error()
	if status == http.StatusBadRequest {
		// "invalid: x" reads badly; the code already says it.
		if s, ok := stripPrefix(msg, api.ErrInvalid.Error()+": "); ok {
			msg = s
		}
	}
	switch {
	case status < 500 || r.Context().Err() != nil || errors.Is(err, errStopping):
		// (A request whose client went away, or that a shutdown ended,
		// failed for that reason: nothing to report.)
	case status == http.StatusServiceUnavailable:
		// Not carried out, and the client tries another server: an
		// election or a lost quorum, which the servers' own logs tell.
		slog.Warn("request refused", "method", r.Method, "path", r.URL.Path, "err", err)
	default:
		slog.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	return status, ErrorBody{Error: msg, Code: code}
}

func stripPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
