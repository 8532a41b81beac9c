package retryq

import (
	"context"
	"errors"
	"net/http"
)

// Sentinel errors. Every error this package returns matches exactly one of them with
// errors.Is (ErrNotQueued also matches ErrPush, the push failure it wraps), and carries
// a sentence that names the execution. HTTPStatus maps them to the runner API's codes.
var (
	// ErrInvalid: an argument breaks the wire format's rules (nothing was touched).
	ErrInvalid = errors.New("retryq: invalid argument")
	// ErrNotFound: no execution with that id and region (the API's 404).
	ErrNotFound = errors.New("retryq: execution not found")
	// ErrNotRetryable: the status is not failed, timeout or error (the API's 400).
	ErrNotRetryable = errors.New("retryq: execution not retryable")
	// ErrMaxRetries: retry_count >= the row's max_retries (the API's 429).
	ErrMaxRetries = errors.New("retryq: no retries left")
	// ErrDatabase: PostgreSQL failed or timed out; nothing was committed unless the
	// message says the COMMIT itself failed.
	ErrDatabase = errors.New("retryq: database error")
	// ErrSchema: the schema lacks the retry columns or refuses status 'retrying'
	// (retryq's migration is not applied: run `retryq migrate`).
	ErrSchema = errors.New("retryq: schema not migrated")
	// ErrPush: the LPUSH failed (Enqueue; also wrapped by ErrNotQueued).
	ErrPush = errors.New("retryq: push failed")
	// ErrNotQueued: Submit committed the retry (the row is 'retrying') but the push
	// failed. Nothing is lost: the worker's orphan sweep enqueues such rows. The retry
	// is accepted, so HTTPStatus answers 202.
	ErrNotQueued = errors.New("retryq: retry committed but its job not queued")
)

// Error is the type of every error this package returns: Kind is one of the sentinels
// above, Err the underlying cause (a driver error, the Pusher's error) or nil.
type Error struct {
	Kind    error
	Message string
	Err     error
}

func (e *Error) Error() string { return e.Message }

// Is reports whether target is the error's kind.
func (e *Error) Is(target error) bool { return target == e.Kind }

// Unwrap returns the cause, so errors.Is and errors.As also see it (a
// context.DeadlineExceeded, a *pq.Error, the Pusher's error).
func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus is the runner API's answer for an error of Submit or Enqueue: nil 200,
// ErrInvalid and ErrNotRetryable 400, ErrNotFound 404, ErrMaxRetries 429, ErrNotQueued
// 202 (accepted: the orphan sweep will run it), ErrDatabase, ErrSchema, ErrPush and a
// cancelled or expired context 503, anything else 500. For a nil error the Outcome
// still matters: InFlight is answered 202.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrNotQueued):
		return http.StatusAccepted
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrNotRetryable):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrMaxRetries):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrDatabase), errors.Is(err, ErrSchema), errors.Is(err, ErrPush),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
