package retryqtest

// retryq.Submit against a migrated clone of the runner's schema and the harness's
// Redis, on rows shaped like the runner's: every answer of the runner's retry request
// (404 unknown id or other region, 200 completed with the stored output, 202 in flight,
// 400 not retryable including 'pending', 429 at the row's own max_retries 1 and 5), the
// success path (exactly the documented columns change, the history entry, original_error
// copied from output_data.error, the job on the list decoded and checked), a push that
// fails after the commit, a lock held elsewhere, an unmigrated schema, a database that is
// down, and concurrent submits of one row (one job).

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"retryq.dev/retryq"
)

const spec = `{"id":"go-submit","version":"v1","questions":["identity_basic","math_basic","tiananmen_neutral"]}`

// env is one test's database, job, queue and pusher.
type env struct {
	db     *sql.DB
	rc     *redisConn
	jobID  int64
	specID string
	client retryq.Client
}

func newEnv(t *testing.T) *env {
	db, _ := newDatabase(t, true)
	e := &env{db: db, rc: newRedis(t)}
	e.jobID, e.specID = insertJob(t, db, spec)
	e.client = retryq.Client{DB: db, Push: e.rc, Queue: queueName(t)}
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// refused checks a submit that must change nothing and push nothing.
func (e *env) refused(t *testing.T, id int64, region string, wantErr error, wantStatus int) (retryq.Result, error) {
	t.Helper()
	before := rowJSON(t, e.db, id)
	res, err := e.client.Submit(ctxT(t), id, region, 1)
	if wantErr == nil && err != nil || wantErr != nil && !errors.Is(err, wantErr) {
		t.Fatalf("Submit(%d, %q): error %v, want %v", id, region, err, wantErr)
	}
	if got := retryq.HTTPStatus(err); wantStatus != 0 && got != wantStatus {
		t.Errorf("HTTPStatus = %d, want %d", got, wantStatus)
	}
	if after := rowJSON(t, e.db, id); after != before {
		t.Errorf("the row changed:\nbefore %s\nafter  %s", before, after)
	}
	if jobs := queueJobs(t, e.rc, e.client.Queue); len(jobs) != 0 {
		t.Errorf("pushed %v", jobs)
	}
	return res, err
}

func TestSubmitRefusals(t *testing.T) {
	e := newEnv(t)
	failure := runnerFailure("us-east", "router timeout after 120s")

	t.Run("unknown execution is 404", func(t *testing.T) {
		_, err := e.client.Submit(ctxT(t), 999999, "us-east", 0)
		if !errors.Is(err, retryq.ErrNotFound) || retryq.HTTPStatus(err) != 404 ||
			!strings.Contains(err.Error(), "no execution 999999 in region 'us-east'") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("the region must equal the stored string", func(t *testing.T) {
		id := insertExecution(t, e.db, e.jobID, fixture{Status: "failed", Region: "us-east", Output: failure})
		e.refused(t, id, "US", retryq.ErrNotFound, 404)
		e.refused(t, id, "eu-west", retryq.ErrNotFound, 404)
	})
	t.Run("completed returns the stored output", func(t *testing.T) {
		out := `{"response": "4", "provider": "golem-us", "metadata": {"receipt": "r1"}}`
		id := insertExecution(t, e.db, e.jobID, fixture{Status: "completed", Region: "us-east",
			QuestionID: "math_basic", Output: out, RetryCount: 1})
		res, _ := e.refused(t, id, "us-east", nil, 200)
		var got, want interface{}
		_ = json.Unmarshal(res.Output, &got)
		_ = json.Unmarshal([]byte(out), &want)
		gotText, _ := json.Marshal(got)
		wantText, _ := json.Marshal(want)
		if res.Outcome != retryq.AlreadyCompleted || string(gotText) != string(wantText) ||
			res.Status != "completed" || res.RetryCount != 1 || res.JobID != e.specID {
			t.Errorf("got %+v (output %s)", res, res.Output)
		}
	})
	t.Run("completed without output", func(t *testing.T) {
		id := insertExecution(t, e.db, e.jobID, fixture{Status: "completed", Region: "eu-west"})
		res, _ := e.refused(t, id, "eu-west", nil, 200)
		if res.Outcome != retryq.AlreadyCompleted || res.Output != nil {
			t.Errorf("got %+v", res)
		}
	})
	for _, status := range []string{"running", "retrying"} {
		t.Run(status+" is in flight (202, nothing changes)", func(t *testing.T) {
			id := insertExecution(t, e.db, e.jobID, fixture{Status: status, Region: "asia-pacific",
				RetryCount: 1, Output: failure})
			res, _ := e.refused(t, id, "asia-pacific", nil, 200)
			if res.Outcome != retryq.InFlight || res.Status != status || res.RetryCount != 1 || res.RetryAttempt != 0 {
				t.Errorf("got %+v", res)
			}
		})
	}
	for _, status := range []string{"pending", "cancelled"} {
		t.Run(status+" is not retryable (400)", func(t *testing.T) {
			id := insertExecution(t, e.db, e.jobID, fixture{Status: status, Region: "us-east"})
			_, err := e.refused(t, id, "us-east", retryq.ErrNotRetryable, 400)
			if !strings.Contains(err.Error(), "has status '"+status+"'") {
				t.Errorf("message %q does not name the status", err)
			}
		})
	}
	for _, max := range []int{1, 5} {
		t.Run(fmt.Sprintf("max_retries %d bounds the retries (429)", max), func(t *testing.T) {
			id := insertExecution(t, e.db, e.jobID, fixture{Status: "failed", Region: "us-east",
				RetryCount: max, MaxRetries: max, Output: failure})
			res, err := e.refused(t, id, "us-east", retryq.ErrMaxRetries, 429)
			if res.RetryCount != max || res.MaxRetries != max || !strings.Contains(err.Error(), "no retries left") {
				t.Errorf("got %+v, %v", res, err)
			}
		})
	}
}

// submitted checks one successful submit of a failed row: exactly the documented
// columns changed, the new history entry, original_error, the job on the list.
func (e *env) submitted(t *testing.T, f fixture, questionIndex int, wantOriginal string) retryq.Result {
	t.Helper()
	id := insertExecution(t, e.db, e.jobID, f)
	changed := []string{"retry_count", "last_retry_at", "status", "retry_history", "original_error"}
	before, historyBefore := rowJSON(t, e.db, id, changed...), history(t, e.db, id)
	res, err := e.client.Submit(ctxT(t), id, f.Region, questionIndex)
	if err != nil || retryq.HTTPStatus(err) != 200 {
		t.Fatalf("Submit: %v", err)
	}
	attempt := f.RetryCount + 1
	if res.Outcome != retryq.Queued || res.Status != "retrying" || res.RetryAttempt != attempt ||
		res.RetryCount != attempt || res.MaxRetries != f.MaxRetries || res.ExecutionID != id ||
		res.Region != f.Region || res.QuestionIndex != questionIndex || res.JobID != e.specID ||
		res.ModelID != f.Model || (res.QuestionID == nil) != (f.QuestionID == "") ||
		(res.QuestionID != nil && *res.QuestionID != f.QuestionID) {
		t.Errorf("result %+v", res)
	}

	if after := rowJSON(t, e.db, id, changed...); after != before {
		t.Errorf("other columns changed:\nbefore %s\nafter  %s", before, after)
	}
	if got := column(t, e.db, id, "status"); got != "retrying" {
		t.Errorf("status %q", got)
	}
	if got := column(t, e.db, id, "retry_count"); got != strconv.Itoa(attempt) {
		t.Errorf("retry_count %s, want %d", got, attempt)
	}
	if got := column(t, e.db, id, "last_retry_at > now() - interval '1 minute'"); got != "true" {
		t.Errorf("last_retry_at not set to now")
	}
	if got := column(t, e.db, id, "original_error"); got != wantOriginal {
		t.Errorf("original_error %q, want %q", got, wantOriginal)
	}
	h := history(t, e.db, id)
	if len(h) != len(historyBefore)+1 {
		t.Fatalf("history %v: want one entry appended to %v", h, historyBefore)
	}
	last := h[len(h)-1]
	// The runner's three keys, and what a cancel needs to undo the retry (migration 0014).
	if len(last) != 7 || last["attempt"] != float64(attempt) || last["status"] != "retrying" ||
		last["timestamp"] != res.Job.EnqueuedAt || last["previous_status"] != f.Status {
		t.Errorf("history entry %v: want {attempt %d, timestamp %s, status retrying, previous_status %s, "+
			"previous_last_retry_at, last_retry_at, original_error_filled}", last, attempt, res.Job.EnqueuedAt, f.Status)
	}
	if _, err := time.Parse(time.RFC3339Nano, res.Job.EnqueuedAt); err != nil {
		t.Errorf("timestamp %q is not RFC 3339", res.Job.EnqueuedAt)
	}

	jobs := queueJobs(t, e.rc, e.client.Queue)
	if len(jobs) != 1 {
		t.Fatalf("queue holds %v, want one job", jobs)
	}
	j := jobs[0]
	if len(j) != 6 || j["execution_id"] != json.Number(itoa64(id)) || j["region"] != f.Region ||
		j["question_index"] != json.Number(itoa64(int64(questionIndex))) ||
		j["retry_attempt"] != json.Number(itoa64(int64(attempt))) || j["enqueued_at"] != res.Job.EnqueuedAt ||
		j["id"] != itoa64(id)+":"+itoa64(int64(attempt)) {
		t.Errorf("job %v does not match the submit (%+v)", j, res.Job)
	}
	if _, err := e.rc.do(ctxT(t), "DEL", e.client.Queue); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestSubmitSuccess(t *testing.T) {
	e := newEnv(t)
	msg := "router timeout after 120s"
	cases := []struct {
		name     string
		f        fixture
		index    int
		original string
	}{
		{"failed row with max_retries 1 (the runner's shape)",
			fixture{Status: "failed", Region: "us-east", QuestionID: "math_basic", MaxRetries: 1,
				Output: runnerFailure("us-east", msg)}, 1, "hybrid error: " + msg},
		{"timeout row with max_retries 5, fourth attempt (above the worker's default 3)",
			fixture{Status: "timeout", Region: "eu-west", QuestionID: "identity_basic", MaxRetries: 5,
				RetryCount: 3, Model: "mistral-7b", Output: runnerFailure("eu-west", msg)}, 0, "hybrid error: " + msg},
		{"error row with a null question_id (old batch row)",
			fixture{Status: "error", Region: "ASIA", MaxRetries: 3, Output: runnerFailure("asia-pacific", msg)},
			2, "hybrid error: " + msg},
		{"an original_error already kept is not overwritten",
			fixture{Status: "failed", Region: "us-east", QuestionID: "math_basic", MaxRetries: 3, RetryCount: 1,
				OriginalError: "first failure", Output: `{"error": "hybrid error: second failure"}`},
			1, "first failure"},
		{"no output_data and a NULL history",
			fixture{Status: "failed", Region: "us-east", QuestionID: "math_basic", MaxRetries: 3,
				NullHistory: true}, 1, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.f.Model == "" {
				c.f.Model = "llama3.2-1b"
			}
			res := e.submitted(t, c.f, c.index, c.original)
			// Submitting again while the retry is queued changes nothing (the API's 202).
			again, err := e.client.Submit(ctxT(t), res.ExecutionID, res.Region, c.index)
			if err != nil || again.Outcome != retryq.InFlight || again.RetryCount != res.RetryCount {
				t.Errorf("second submit: %+v, %v", again, err)
			}
			if jobs := queueJobs(t, e.rc, e.client.Queue); len(jobs) != 0 {
				t.Errorf("second submit pushed %v", jobs)
			}
		})
	}

	t.Run("the last retry of a max_retries 1 row, then 429", func(t *testing.T) {
		f := fixture{Status: "failed", Region: "us-east", QuestionID: "math_basic", MaxRetries: 1,
			Model: "llama3.2-1b", Output: runnerFailure("us-east", msg)}
		res := e.submitted(t, f, 1, "hybrid error: "+msg)
		// The worker records a failure; the runner's UI asks again.
		mustExec(t, e.db, `UPDATE executions SET status = 'failed' WHERE id = $1`, res.ExecutionID)
		e.refused(t, res.ExecutionID, "us-east", retryq.ErrMaxRetries, 429)
	})
}

func TestSubmitPushFailsAfterCommit(t *testing.T) {
	e := newEnv(t)
	id := insertExecution(t, e.db, e.jobID, fixture{Status: "failed", Region: "us-east",
		QuestionID: "math_basic", MaxRetries: 1, Output: runnerFailure("us-east", "boom")})
	cause := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	c := e.client
	c.Push = retryq.PusherFunc(func(context.Context, string, string) error { return cause })
	res, err := c.Submit(ctxT(t), id, "us-east", 1)
	if !errors.Is(err, retryq.ErrNotQueued) || !errors.Is(err, retryq.ErrPush) || !errors.Is(err, cause) ||
		retryq.HTTPStatus(err) != 202 {
		t.Fatalf("got %v (HTTP %d)", err, retryq.HTTPStatus(err))
	}
	for _, want := range []string{"is 'retrying' (attempt 1 of 1)", "connection refused", "orphan sweep will enqueue it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if res.Outcome != retryq.CommittedNotQueued || res.RetryAttempt != 1 || res.Job.RetryAttempt != 1 ||
		res.Job.Validate() != nil || res.Status != "retrying" {
		t.Errorf("result %+v", res)
	}
	if got := column(t, e.db, id, "status || ' ' || retry_count || ' ' || original_error"); got != "retrying 1 hybrid error: boom" {
		t.Errorf("row: %s", got)
	}
	// The row is committed: asking again is answered "in flight", and still nothing is pushed.
	again, err := e.client.Submit(ctxT(t), id, "us-east", 1)
	if err != nil || again.Outcome != retryq.InFlight {
		t.Errorf("second submit: %+v, %v", again, err)
	}
	if jobs := queueJobs(t, e.rc, e.client.Queue); len(jobs) != 0 {
		t.Errorf("pushed %v", jobs)
	}
}

// lockRow locks the execution in a transaction of its own, rolled back when the test
// ends (or earlier by the caller).
func lockRow(t *testing.T, db *sql.DB, id int64) *sql.Tx {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.Exec(`SELECT 1 FROM executions WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	return tx
}

// A caller that goes away after the commit (a closed HTTP request cancels its context)
// still gets its job pushed: the push keeps the caller's values, not its cancellation.
func TestSubmitPushesAfterTheCallerIsGone(t *testing.T) {
	e := newEnv(t)
	id := insertExecution(t, e.db, e.jobID, fixture{Status: "failed", Region: "us-east",
		QuestionID: "math_basic", Output: runnerFailure("us-east", "boom")})
	type key struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "request-42"))
	defer cancel()
	c := e.client
	c.Push = retryq.PusherFunc(func(pctx context.Context, k, v string) error {
		cancel() // the caller leaves between the commit and the push
		if pctx.Err() != nil || pctx.Value(key{}) != "request-42" {
			return errors.New("the push context was cancelled or lost the caller's values")
		}
		if _, ok := pctx.Deadline(); !ok {
			return errors.New("the push context has no deadline")
		}
		return e.rc.LPush(pctx, k, v)
	})
	res, err := c.Submit(ctx, id, "us-east", 1)
	if err != nil || res.Outcome != retryq.Queued {
		t.Fatalf("got %v, %v", res.Outcome, err)
	}
	if jobs := queueJobs(t, e.rc, c.Queue); len(jobs) != 1 {
		t.Errorf("queue holds %v, want one job", jobs)
	}
}

func TestSubmitLockHeldElsewhere(t *testing.T) {
	e := newEnv(t)
	id := insertExecution(t, e.db, e.jobID, fixture{Status: "failed", Region: "us-east",
		QuestionID: "math_basic", Output: runnerFailure("us-east", "boom")})
	before := rowJSON(t, e.db, id)
	tx := lockRow(t, e.db, id)
	c := e.client
	c.StatementTimeout = 300 * time.Millisecond
	start := time.Now()
	_, err := c.Submit(ctxT(t), id, "us-east", 1)
	if !errors.Is(err, retryq.ErrDatabase) || retryq.HTTPStatus(err) != 503 ||
		!strings.Contains(err.Error(), "timed out after 300 ms") || time.Since(start) > 5*time.Second {
		t.Fatalf("got %v after %v", err, time.Since(start))
	}
	_ = tx.Rollback()
	if after := rowJSON(t, e.db, id); after != before {
		t.Errorf("row changed: %s", after)
	}
	// The caller's own deadline is honoured too.
	lockRow(t, e.db, id)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = e.client.Submit(ctx, id, "us-east", 1)
	if !errors.Is(err, retryq.ErrDatabase) || retryq.HTTPStatus(err) != 503 {
		t.Fatalf("context deadline: got %v", err)
	}
}

func TestSubmitSchemaNotMigrated(t *testing.T) {
	db, _ := newDatabase(t, false) // the runner's schema: 'retrying' is refused
	rc := newRedis(t)
	jobID, _ := insertJob(t, db, spec)
	id := insertExecution(t, db, jobID, fixture{Status: "failed", Region: "us-east",
		QuestionID: "math_basic", Output: runnerFailure("us-east", "boom")})
	before := rowJSON(t, db, id)
	c := retryq.Client{DB: db, Push: rc, Queue: queueName(t)}
	_, err := c.Submit(ctxT(t), id, "us-east", 1)
	if !errors.Is(err, retryq.ErrSchema) || retryq.HTTPStatus(err) != 503 ||
		!strings.Contains(err.Error(), "run `retryq migrate`") {
		t.Fatalf("got %v", err)
	}
	if after := rowJSON(t, db, id); after != before {
		t.Errorf("row changed: %s", after)
	}
	if jobs := queueJobs(t, rc, c.Queue); len(jobs) != 0 {
		t.Errorf("pushed %v", jobs)
	}
}

func TestSubmitDatabaseDown(t *testing.T) {
	db, err := sql.Open("postgres", "postgresql://retryq@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pushed := 0
	push := retryq.PusherFunc(func(context.Context, string, string) error { pushed++; return nil })
	_, err = retryq.Submit(ctxT(t), db, push, 1, "us-east", 0)
	if !errors.Is(err, retryq.ErrDatabase) || retryq.HTTPStatus(err) != 503 || pushed != 0 {
		t.Fatalf("got %v, %d pushes", err, pushed)
	}
}

// Concurrent submits of one row: the row lock lets exactly one through; the others wait
// for its commit and see 'retrying'. One job is pushed. So that they really overlap, the
// row is locked by another transaction until all n wait on it, then released.
func TestSubmitConcurrent(t *testing.T) {
	e := newEnv(t)
	id := insertExecution(t, e.db, e.jobID, fixture{Status: "failed", Region: "us-east",
		QuestionID: "math_basic", MaxRetries: 5, Output: runnerFailure("us-east", "boom")})
	const n = 8
	e.db.SetMaxOpenConns(n + 2)
	holder := lockRow(t, e.db, id)
	results := make([]retryq.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = e.client.Submit(context.Background(), id, "us-east", 1)
		}(i)
	}
	waiting := func() bool {
		var k int
		err := e.db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		                         AND wait_event_type = 'Lock'`).Scan(&k)
		return err == nil && k == n
	}
	for deadline := time.Now().Add(10 * time.Second); !waiting(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the %d submits did not all wait on the row lock within 10 s", n)
		}
	}
	_ = holder.Rollback()
	wg.Wait()
	queued, inFlight := 0, 0
	for i := range results {
		switch {
		case errs[i] != nil:
			t.Errorf("submit %d: %v", i, errs[i])
		case results[i].Outcome == retryq.Queued:
			queued++
		case results[i].Outcome == retryq.InFlight:
			inFlight++
		}
	}
	if queued != 1 || inFlight != n-1 {
		t.Errorf("%d queued, %d in flight; want 1 and %d", queued, inFlight, n-1)
	}
	if jobs := queueJobs(t, e.rc, e.client.Queue); len(jobs) != 1 {
		t.Errorf("queue holds %d jobs, want 1: %v", len(jobs), jobs)
	}
	if got := column(t, e.db, id, "retry_count"); got != "1" {
		t.Errorf("retry_count %s, want 1", got)
	}
	if h := history(t, e.db, id); len(h) != 1 {
		t.Errorf("history %v, want one entry", h)
	}
}

func itoa64(v int64) string { return strconv.FormatInt(v, 10) }
