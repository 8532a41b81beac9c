package retryq

// Tests that need no server: the wire format (encoding, each validation rule with
// libretryq's sentence), Enqueue through a recording Pusher, the error kinds and their
// HTTP codes, and Submit refusing bad arguments before it touches the database. Submit
// against PostgreSQL and Redis is tested in test/go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a Pusher that keeps what it was given, or fails with err.
type recorder struct {
	keys, values []string
	err          error
}

func (r *recorder) LPush(_ context.Context, key, value string) error {
	if r.err != nil {
		return r.err
	}
	r.keys = append(r.keys, key)
	r.values = append(r.values, value)
	return nil
}

func TestEncodeWireForm(t *testing.T) {
	cases := []struct {
		job  Job
		want string
	}{
		{Job{ExecutionID: 42, Region: "us-east", QuestionIndex: 3, RetryAttempt: 1},
			`{"execution_id":42,"region":"us-east","question_index":3,"retry_attempt":1}`},
		{Job{ExecutionID: 7, Region: "eu-west", QuestionIndex: 0, RetryAttempt: 2,
			EnqueuedAt: "2026-12-02T17:00:00.000Z", ID: "7:2"},
			`{"execution_id":7,"region":"eu-west","question_index":0,"retry_attempt":2,` +
				`"enqueued_at":"2026-12-02T17:00:00.000Z","id":"7:2"}`},
		// No HTML escaping, quotes escaped, UTF-8 kept.
		{Job{ExecutionID: 1, Region: `a<b>&"c"\é`, QuestionIndex: 0, RetryAttempt: 1},
			`{"execution_id":1,"region":"a<b>&\"c\"\\é","question_index":0,"retry_attempt":1}`},
		// Above 2^53-1 the id travels as a decimal string.
		{Job{ExecutionID: 1 << 53, Region: "US", QuestionIndex: 0, RetryAttempt: 1000},
			`{"execution_id":"9007199254740992","region":"US","question_index":0,"retry_attempt":1000}`},
		{Job{ExecutionID: 1<<53 - 1, Region: "US", QuestionIndex: 0, RetryAttempt: 1},
			`{"execution_id":9007199254740991,"region":"US","question_index":0,"retry_attempt":1}`},
	}
	for _, c := range cases {
		got, err := c.job.Encode()
		if err != nil || got != c.want {
			t.Errorf("Encode(%+v) = %s, %v; want %s", c.job, got, err, c.want)
		}
	}
}

func TestValidateRules(t *testing.T) {
	ok := Job{ExecutionID: 1, Region: "us-east", QuestionIndex: 0, RetryAttempt: 1}
	cases := []struct {
		name string
		edit func(*Job)
		want string // start of the message; "" = valid
	}{
		{"valid", func(j *Job) {}, ""},
		{"zero id", func(j *Job) { j.ExecutionID = 0 }, "execution_id: must be a positive integer"},
		{"negative id", func(j *Job) { j.ExecutionID = -4 }, "execution_id: must be a positive integer"},
		{"empty region", func(j *Job) { j.Region = "" }, "region: must be a string of 1..128 bytes"},
		{"region of 128 bytes", func(j *Job) { j.Region = strings.Repeat("r", 128) }, ""},
		{"region of 129 bytes", func(j *Job) { j.Region = strings.Repeat("r", 129) }, "region: must be a string of 1..128 bytes"},
		{"region with a newline", func(j *Job) { j.Region = "us\neast" }, "region: must not contain control characters"},
		{"region with DEL", func(j *Job) { j.Region = "us\x7f" }, "region: must not contain control characters"},
		{"region not UTF-8", func(j *Job) { j.Region = "us\xff" }, "region: must be valid UTF-8"},
		{"negative index", func(j *Job) { j.QuestionIndex = -1 }, "question_index: must be an integer >= 0"},
		{"index above int32", func(j *Job) { j.QuestionIndex = 1 << 31 }, "question_index: must be an integer >= 0"},
		{"attempt 0", func(j *Job) { j.RetryAttempt = 0 }, "retry_attempt: must be an integer from 1 to 1000"},
		{"attempt 1000", func(j *Job) { j.RetryAttempt = 1000 }, ""},
		{"attempt 1001", func(j *Job) { j.RetryAttempt = 1001 }, "retry_attempt: must be an integer from 1 to 1000"},
		{"offset timestamp", func(j *Job) { j.EnqueuedAt = "2026-12-02T18:00:00+01:00" }, ""},
		{"bad timestamp", func(j *Job) { j.EnqueuedAt = "yesterday" }, "enqueued_at: must be an RFC 3339 timestamp"},
		{"id of 65 bytes", func(j *Job) { j.ID = strings.Repeat("1", 65) }, "id: must be a string of at most 64"},
		{"id with a tab", func(j *Job) { j.ID = "1:\t1" }, "id: must be a string of at most 64"},
	}
	for _, c := range cases {
		j := ok
		c.edit(&j)
		err := j.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", c.name, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.Is(err, ErrInvalid)):
			t.Errorf("%s: got %v, want ErrInvalid %q", c.name, err, c.want)
		}
	}
}

func TestEnqueueFillsOptionalFields(t *testing.T) {
	var r recorder
	before := time.Now().UTC().Truncate(time.Millisecond)
	job, err := Enqueue(context.Background(), &r, "", Job{ExecutionID: 9, Region: "asia-pacific",
		QuestionIndex: 2, RetryAttempt: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.keys) != 1 || r.keys[0] != DefaultQueue {
		t.Fatalf("pushed to %v, want [%s]", r.keys, DefaultQueue)
	}
	var wire map[string]interface{}
	if err := json.Unmarshal([]byte(r.values[0]), &wire); err != nil {
		t.Fatalf("payload %s: %v", r.values[0], err)
	}
	if wire["id"] != "9:3" || job.ID != "9:3" {
		t.Errorf("id = %v / %q, want 9:3", wire["id"], job.ID)
	}
	at, err := time.Parse(time.RFC3339Nano, job.EnqueuedAt)
	if err != nil || at.Before(before) || time.Since(at) > time.Minute || wire["enqueued_at"] != job.EnqueuedAt ||
		!strings.HasSuffix(job.EnqueuedAt, "Z") {
		t.Errorf("enqueued_at %q (payload %v) is not now in UTC", job.EnqueuedAt, wire["enqueued_at"])
	}
	// Given values are kept, the queue name is honoured.
	_, err = Enqueue(context.Background(), &r, "other_q", Job{ExecutionID: 9, Region: "EU",
		QuestionIndex: 0, RetryAttempt: 1, EnqueuedAt: "2026-01-01T00:00:00Z", ID: "mine"})
	if err != nil || r.keys[1] != "other_q" || !strings.Contains(r.values[1], `"enqueued_at":"2026-01-01T00:00:00Z","id":"mine"`) {
		t.Errorf("second push: %v %v %v", err, r.keys, r.values)
	}
}

func TestEnqueueRefusesBeforePushing(t *testing.T) {
	var r recorder
	good := Job{ExecutionID: 1, Region: "us-east", QuestionIndex: 0, RetryAttempt: 1}
	for _, q := range []string{"has space", "{braces}", strings.Repeat("q", 201), "tab\tq"} {
		if _, err := Enqueue(context.Background(), &r, q, good); !errors.Is(err, ErrInvalid) ||
			!strings.HasPrefix(err.Error(), "queue name: ") {
			t.Errorf("queue %q: got %v", q, err)
		}
	}
	bad := good
	bad.Region = ""
	if _, err := Enqueue(context.Background(), &r, "", bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty region: got %v", err)
	}
	if _, err := Enqueue(context.Background(), nil, "", good); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil pusher: got %v", err)
	}
	if len(r.values) != 0 {
		t.Errorf("pushed %v", r.values)
	}
}

func TestEnqueuePushFailure(t *testing.T) {
	cause := errors.New("dial tcp 127.0.0.1:1: connection refused")
	push := PusherFunc(func(ctx context.Context, key, value string) error { return cause })
	_, err := Enqueue(context.Background(), push, "", Job{ExecutionID: 5, Region: "US", RetryAttempt: 1})
	if !errors.Is(err, ErrPush) || !errors.Is(err, cause) || HTTPStatus(err) != 503 ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("got %v (status %d)", err, HTTPStatus(err))
	}
}

func TestHTTPStatus(t *testing.T) {
	wrapped := func(kind error) error { return &Error{Kind: kind, Message: "x"} }
	notQueued := &Error{Kind: ErrNotQueued, Message: "x", Err: wrapped(ErrPush)}
	cases := []struct {
		err  error
		want int
	}{
		{nil, 200},
		{wrapped(ErrInvalid), 400},
		{wrapped(ErrNotRetryable), 400},
		{wrapped(ErrNotFound), 404},
		{wrapped(ErrMaxRetries), 429},
		{notQueued, 202},
		{wrapped(ErrDatabase), 503},
		{wrapped(ErrSchema), 503},
		{wrapped(ErrPush), 503},
		{context.DeadlineExceeded, 503},
		{fmt.Errorf("handler: %w", wrapped(ErrMaxRetries)), 429},
		{errors.New("something else"), 500},
	}
	for _, c := range cases {
		if got := HTTPStatus(c.err); got != c.want {
			t.Errorf("HTTPStatus(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	if !errors.Is(notQueued, ErrPush) || errors.Is(notQueued, ErrDatabase) {
		t.Errorf("ErrNotQueued must match ErrPush and nothing else")
	}
}

// Bad arguments are refused before the database is used: a nil DB is never reached.
func TestSubmitRefusesBadArguments(t *testing.T) {
	var r recorder
	ctx := context.Background()
	cases := []struct {
		id     int64
		region string
		index  int
	}{{0, "us-east", 0}, {1, "", 0}, {1, "us\x00east", 0}, {1, "us-east", -1}}
	for _, c := range cases {
		res, err := Submit(ctx, nil, &r, c.id, c.region, c.index)
		if !errors.Is(err, ErrInvalid) || HTTPStatus(err) != 400 || res.Outcome != 0 {
			t.Errorf("Submit(%d, %q, %d) = %+v, %v", c.id, c.region, c.index, res, err)
		}
	}
	if _, err := Submit(ctx, nil, &r, 1, "us-east", 0); !errors.Is(err, ErrInvalid) ||
		!strings.Contains(err.Error(), "DB and a Pusher") {
		t.Errorf("nil DB: got %v", err)
	}
	c := Client{Push: &r, Queue: "bad queue"}
	if _, err := c.Submit(ctx, 1, "us-east", 0); !errors.Is(err, ErrInvalid) ||
		!strings.HasPrefix(err.Error(), "queue name: ") {
		t.Errorf("bad queue: got %v", err)
	}
}

func TestOutcomeNames(t *testing.T) {
	want := map[Outcome]string{Queued: "queued", CommittedNotQueued: "committed_not_queued",
		AlreadyCompleted: "already_completed", InFlight: "in_flight", 0: "outcome(0)"}
	for o, s := range want {
		if o.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(o), o.String(), s)
		}
	}
}
