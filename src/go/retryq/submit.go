package retryq

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The statements of a submit, the same as libretryq's (src/lib/submit.c). The rules and
// the UPDATE are retryq's SQL functions (its migration 0013), which libretryq and
// SubmitFilter run too: retryq_retry_verdict judges the locked row, retryq_mark_retrying
// starts the retry. All values travel as parameters.
const (
	sqlTimeout = `SELECT set_config('statement_timeout', $1, true)`

	// The runner's response needs the job spec id, model and question of the row. The
	// join is LEFT (FOR UPDATE OF e locks the execution only): a row without a job is
	// still judged like libretryq judges it, with JobID "".
	sqlLockRow = `SELECT e.status, e.retry_count, e.max_retries, e.output_data::text,
       j.jobspec_id, e.model_id, e.question_id,
       retryq_retry_verdict(e.status, e.retry_count, e.max_retries)
  FROM executions e LEFT JOIN jobs j ON j.id = e.job_id
 WHERE e.id = $1 AND e.region = $2
   FOR UPDATE OF e`

	sqlMarkRetrying = `SELECT retry_count FROM retryq_mark_retrying(ARRAY[$1::bigint], ARRAY[$2::text], $3::text)`
)

// DefaultStatementTimeout bounds each statement of a submit (libretryq's default command
// timeout), so a row locked by a long transaction cannot hang the caller.
const DefaultStatementTimeout = 5 * time.Second

// Outcome says what a Submit did.
type Outcome int

const (
	// Queued: committed ('retrying') and the job pushed. The API's 200.
	Queued Outcome = iota + 1
	// CommittedNotQueued: committed, but the push failed (the error is ErrNotQueued);
	// the worker's orphan sweep will enqueue it. The API's 202.
	CommittedNotQueued
	// AlreadyCompleted: the execution is completed; Output holds its stored result and
	// nothing changed. The API's 200.
	AlreadyCompleted
	// InFlight: running, processing, retrying, queued or created; nothing changed. The
	// API's 202.
	InFlight
)

func (o Outcome) String() string {
	switch o {
	case Queued:
		return "queued"
	case CommittedNotQueued:
		return "committed_not_queued"
	case AlreadyCompleted:
		return "already_completed"
	case InFlight:
		return "in_flight"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Result is what a Submit found and did: what the runner's response carries. It is
// filled for every outcome and also for ErrNotRetryable and ErrMaxRetries (so a 429 can
// say retry_count and max_retries); it is zero for the other errors.
type Result struct {
	Outcome       Outcome
	ExecutionID   int64
	Region        string
	QuestionIndex int
	// Status is the execution's status after the call: "retrying" when a retry was
	// committed, else the status found.
	Status string
	// RetryAttempt is the attempt of the job (Queued, CommittedNotQueued); 0 otherwise.
	RetryAttempt int
	RetryCount   int     // retry_count after the call (the response's retry_attempt)
	MaxRetries   int     // the row's max_retries
	JobID        string  // jobs.jobspec_id of the execution's job ("" when it has none)
	ModelID      string  // executions.model_id ("" when NULL)
	QuestionID   *string // executions.question_id; nil when NULL (old batch rows)
	// Output is the stored output_data (AlreadyCompleted; nil when NULL).
	Output json.RawMessage
	// Job is the job pushed (Queued) or to be pushed (CommittedNotQueued).
	Job Job
}

// Client submits retries. DB and Push are required; the zero values of the rest mean
// DefaultQueue and DefaultStatementTimeout. A Client is safe for concurrent use when
// its Pusher is (*sql.DB is).
type Client struct {
	DB               *sql.DB
	Push             Pusher
	Queue            string        // "" = DefaultQueue ("retry_queue")
	StatementTimeout time.Duration // 0 = DefaultStatementTimeout
}

// Submit is Client{DB: db, Push: push}.Submit: the default queue and timeout.
func Submit(ctx context.Context, db *sql.DB, push Pusher, executionID int64, region string,
	questionIndex int) (Result, error) {
	c := Client{DB: db, Push: push}
	return c.Submit(ctx, executionID, region, questionIndex)
}

// row is what the locked row holds.
type row struct {
	status     sql.NullString
	retryCount int
	maxRetries int
	output     sql.NullString
	jobID      sql.NullString
	modelID    sql.NullString
	questionID sql.NullString
	verdict    string // retryq_retry_verdict: retry, completed, in_flight, not_retryable, at_max_retries
}

// Submit retries one question of one execution: the runner's retry request, done
// safely. In one transaction it locks the execution by id AND region (the region must
// equal the stored string); none -> ErrNotFound; completed -> AlreadyCompleted with the
// stored output; running, processing, retrying, queued, created -> InFlight; any other
// status but failed, timeout, error -> ErrNotRetryable; retry_count >= the row's
// max_retries -> ErrMaxRetries. Otherwise one UPDATE sets retry_count + 1, last_retry_at
// = now(), status 'retrying', appends {"attempt":n,"timestamp":…,"status":"retrying"}
// (with previous_status, previous_last_retry_at, last_retry_at and original_error_filled,
// what a cancel needs to undo it) to retry_history and keeps the original error (original_error, else the runner's
// output_data.error); COMMIT; then the job is pushed (Queued). Refusals change nothing.
//
// The row lock replaces the runner's Redis NX key: concurrent submits for one execution
// queue behind the lock, then see 'retrying' and report InFlight, so one job is pushed.
// When the push fails after the commit the result is CommittedNotQueued with an error
// matching ErrNotQueued: the row stays 'retrying', submitting again reports InFlight,
// and the worker's orphan sweep enqueues the job (the caller may also push res.Job).
func (c *Client) Submit(ctx context.Context, executionID int64, region string,
	questionIndex int) (Result, error) {
	if err := checkRequest(executionID, region, questionIndex); err != nil {
		return Result{}, err
	}
	queue := c.Queue
	if queue == "" {
		queue = DefaultQueue
	}
	if err := checkQueue(queue); err != nil {
		return Result{}, err
	}
	if c.DB == nil || c.Push == nil {
		return Result{}, invalid("submit: a DB and a Pusher are required")
	}
	s := submission{ctx: ctx, id: executionID, region: region, questionIndex: questionIndex}
	res, proceed, err := s.lockAndJudge(c.DB, c.timeout())
	if err != nil || !proceed {
		return res, err
	}
	res.Job = Job{ExecutionID: executionID, Region: region, QuestionIndex: questionIndex,
		RetryAttempt: res.RetryCount + 1}.withDefaults(time.Now())
	if err := res.Job.Validate(); err != nil { // an attempt over MaxAttempt
		_ = s.tx.Rollback()
		return Result{}, err
	}
	if err := s.markRetrying(res.Job); err != nil {
		return Result{}, err
	}
	res.RetryAttempt, res.RetryCount, res.Status = res.Job.RetryAttempt, res.Job.RetryAttempt, "retrying"

	// Committed: the execution is 'retrying' at this attempt whatever happens next, so
	// the job is pushed even when the caller has gone meanwhile (a closed HTTP request
	// cancels its context): the push keeps the caller's values, not its cancellation,
	// and is bounded by the statement timeout instead.
	pushCtx, cancel := context.WithTimeout(context.Background(), c.timeout())
	defer cancel()
	if _, err := Enqueue(detached{pushCtx, ctx}, c.Push, queue, res.Job); err != nil {
		res.Outcome = CommittedNotQueued
		return res, &Error{Kind: ErrNotQueued, Err: err, Message: fmt.Sprintf(
			"[RETRY] execution %d (%s) is 'retrying' (attempt %d of %d) but its job was not "+
				"queued: %v; the worker's orphan sweep will enqueue it",
			executionID, region, res.RetryAttempt, res.MaxRetries, err)}
	}
	res.Outcome = Queued
	return res, nil
}

// detached is a context with the deadline and cancellation of its own Context and the
// values of another.
type detached struct {
	context.Context
	values context.Context
}

func (d detached) Value(key interface{}) interface{} { return d.values.Value(key) }

func (c *Client) timeout() time.Duration {
	if c.StatementTimeout > 0 {
		return c.StatementTimeout
	}
	return DefaultStatementTimeout
}

// submission is one Submit's transaction.
type submission struct {
	ctx           context.Context
	id            int64
	region        string
	questionIndex int
	tx            *sql.Tx
	timeout       time.Duration
}

// lockAndJudge begins, locks the row and decides. When proceed is true the
// transaction stays open for markRetrying; otherwise it has been rolled back.
func (s *submission) lockAndJudge(db *sql.DB, timeout time.Duration) (Result, bool, error) {
	s.timeout = timeout
	tx, err := db.BeginTx(s.ctx, nil)
	if err != nil {
		return Result{}, false, s.sqlError(err, "BEGIN")
	}
	s.tx = tx
	ms := strconv.FormatInt(timeout.Milliseconds(), 10)
	if _, err := tx.ExecContext(s.ctx, sqlTimeout, ms); err != nil {
		return s.fail(err, "setting the statement timeout")
	}
	var r row
	err = tx.QueryRowContext(s.ctx, sqlLockRow, s.id, s.region).Scan(&r.status, &r.retryCount,
		&r.maxRetries, &r.output, &r.jobID, &r.modelID, &r.questionID, &r.verdict)
	if errors.Is(err, sql.ErrNoRows) {
		_ = tx.Rollback()
		return Result{}, false, &Error{Kind: ErrNotFound, Message: fmt.Sprintf(
			"[RETRY] no execution %d in region '%s' (the region must match the stored value "+
				"exactly, e.g. 'us-east')", s.id, s.region)}
	}
	if err != nil {
		return s.fail(err, "locking the execution")
	}
	res, proceed, err := s.judge(&r)
	if !proceed {
		_ = tx.Rollback() // refusals change nothing
	}
	return res, proceed, err
}

// judge decides what the found row allows.
func (s *submission) judge(r *row) (Result, bool, error) {
	res := Result{ExecutionID: s.id, Region: s.region, QuestionIndex: s.questionIndex, Status: r.status.String,
		RetryCount: r.retryCount, MaxRetries: r.maxRetries, JobID: r.jobID.String,
		ModelID: r.modelID.String}
	if r.questionID.Valid {
		q := r.questionID.String
		res.QuestionID = &q
	}
	switch status := r.status.String; r.verdict {
	case "completed":
		res.Outcome = AlreadyCompleted
		if r.output.Valid {
			res.Output = json.RawMessage(r.output.String)
		}
		return res, false, nil
	case "in_flight":
		res.Outcome = InFlight
		return res, false, nil
	case "not_retryable":
		if !r.status.Valid {
			status = "(null)"
		}
		return res, false, &Error{Kind: ErrNotRetryable, Message: fmt.Sprintf(
			"[RETRY] execution %d (%s) has status '%s': only failed, timeout and error "+
				"executions can be retried", s.id, s.region, status)}
	case "at_max_retries":
		return res, false, &Error{Kind: ErrMaxRetries, Message: fmt.Sprintf(
			"[RETRY] execution %d (%s) has no retries left: retry_count %d >= max_retries %d",
			s.id, s.region, r.retryCount, r.maxRetries)}
	}
	return res, true, nil
}

// markRetrying runs the UPDATE, checks that it left retry_count at the job's attempt,
// and commits.
func (s *submission) markRetrying(job Job) error {
	var count int
	err := s.tx.QueryRowContext(s.ctx, sqlMarkRetrying, s.id, s.region, job.EnqueuedAt).Scan(&count)
	if err != nil {
		_, _, err = s.fail(err, "marking the execution retrying")
		return err
	}
	if count != job.RetryAttempt {
		_ = s.tx.Rollback()
		return &Error{Kind: ErrDatabase, Message: fmt.Sprintf(
			"[RETRY] execution %d: the update did not leave retry_count at %d", s.id, job.RetryAttempt)}
	}
	if err := s.tx.Commit(); err != nil {
		return s.sqlError(err, "COMMIT (the retry may or may not be recorded)")
	}
	return nil
}

// fail rolls back and classifies err.
func (s *submission) fail(err error, what string) (Result, bool, error) {
	_ = s.tx.Rollback()
	return Result{}, false, s.sqlError(err, what)
}

// sqlState is implemented by the drivers' error types (lib/pq's *pq.Error, pgx's
// *pgconn.PgError), so the SQLSTATE is read without importing a driver.
type sqlState interface{ SQLState() string }

// sqlError classifies a failed statement of this submit (see classify).
func (s *submission) sqlError(err error, what string) error {
	return classify(err, fmt.Sprintf("[RETRY] execution %d", s.id), what, s.timeout)
}

// classify turns a failed statement into an Error by SQLSTATE, with libretryq's sentences
// (src/lib/statement.c) about `subject`: 23514 and 42P01/42703/42883 are ErrSchema, 57014
// the statement timeout, class 22 ErrInvalid, P0002 ErrNotFound, the rest ErrDatabase.
func classify(err error, subject, what string, timeout time.Duration) error {
	state := ""
	var st sqlState
	if errors.As(err, &st) {
		state = st.SQLState()
	}
	text := strings.Join(strings.Fields(err.Error()), " ")
	e := &Error{Kind: ErrDatabase, Err: err}
	missing := state == "42P01" || state == "42703"
	switch {
	case state == "23514":
		e.Kind = ErrSchema
		e.Message = fmt.Sprintf("%s: the database refuses status 'retrying' (%s): "+
			"the schema is not migrated; run `retryq migrate`", subject, text)
	case state == "42883" || (missing && strings.Contains(text, "retryq")):
		e.Kind = ErrSchema
		e.Message = fmt.Sprintf("%s: %s: retryq's tables and functions are missing or out of date; "+
			"run `retryq migrate`", subject, text)
	case missing:
		e.Kind = ErrSchema
		e.Message = fmt.Sprintf("%s: %s: the runner's schema lacks retry tracking "+
			"(its migration 0010); migrate the runner, then run `retryq migrate`", subject, text)
	case state == "57014":
		e.Message = fmt.Sprintf("%s: %s timed out after %d ms (is the row locked "+
			"by a long transaction?): %s", subject, what, timeout.Milliseconds(), text)
	case strings.HasPrefix(state, "22"):
		e.Kind = ErrInvalid
		e.Message = fmt.Sprintf("%s: %s", subject, text)
	case state == "P0002":
		e.Kind = ErrNotFound
		e.Message = fmt.Sprintf("%s: %s", subject, text)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		e.Message = fmt.Sprintf("%s: %s stopped by the caller's context: %s", subject, what, text)
	case state != "":
		e.Message = fmt.Sprintf("%s: %s failed: %s SQLSTATE %s", subject, what, text, state)
	default:
		e.Message = fmt.Sprintf("%s: %s failed: %s", subject, what, text)
	}
	return e
}
