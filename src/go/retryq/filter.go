package retryq

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"time"
)

// The retry by filter, the same as libretryq's retryq_submit_filter (src/lib/filter.c):
// one call of retryq's SQL function retryq_retry_by_filter (its migration 0013) per
// chunk, in a transaction of its own, which selects, locks (SKIP LOCKED), judges and
// marks with the very rules and UPDATE of Submit, and records the retry set.
const sqlChunk = `SELECT set_id, execution_id, region, question_index, verdict, attempt, status,
       retry_count, max_retries, model_id, question_id, error_code,
       to_char(failed_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS')
  FROM retryq_retry_by_filter($1::jsonb, $2::bigint, $3::integer, $4::integer, $5::bigint, $6, $7,
       $8, $9::boolean)`

const (
	// DefaultChunk is how many executions one transaction of SubmitFilter takes.
	DefaultChunk = 500
	maxChunk     = 5000
	// chunkTimeout is the least statement timeout of a chunk: it scans executions in id
	// order until it has its rows, which on a large table can take longer than one row.
	chunkTimeout  = 60 * time.Second
	defaultSample = 20
)

// Skip reasons: why a selected execution was not retried (BulkResult.Skipped, and the
// Verdict of a BulkRow that was not retried).
const (
	SkipMaxRetries   = "at_max_retries" // retry_count >= its max_retries
	SkipInFlight     = "in_flight"      // retrying or running by the time it was locked
	SkipLocked       = "locked"         // another transaction (a concurrent Submit) held it
	SkipNotRetryable = "not_retryable"  // no longer failed, timeout or error
	SkipNoQuestion   = "no_question_id" // an old batch row: only the caller knows its index
)

// VerdictRetry is the Verdict of a BulkRow that was retried (or would be, in a dry run).
const VerdictRetry = "retry"

var retryStatuses = map[string]bool{"failed": true, "timeout": true, "error": true}

// Filter selects the executions of SubmitFilter. Every field set narrows the selection;
// Job or Since is required. Strings compare exactly with the stored values.
type Filter struct {
	Job       string    // jobs.jobspec_id; "" = any job
	Model     string    // executions.model_id; "" = any
	Region    string    // executions.region, as stored; "" = any
	Statuses  []string  // of "failed", "timeout", "error"; nil = all three
	ErrorCode string    // output_data's failure.code, else its error_code; "" = any
	Since     time.Time // failed at or after (coalesce(completed_at, created_at)); zero = no bound
	Until     time.Time // failed before; zero = no bound
}

// BulkOptions are SubmitFilter's options; the zero value retries everything selected.
type BulkOptions struct {
	Limit     int    // retry at most this many (the lowest execution ids); 0 = all
	SetName   string // the retry set's name; "" = none
	CreatedBy string // who asks; "" = the OS user
	DryRun    bool   // count and sample only: nothing is locked, changed or pushed
	Sample    int    // rows kept in BulkResult.Sample; 0 = 20
	Chunk     int    // executions per transaction, 1..5000; 0 = DefaultChunk
	// Progress, when set, is called after each chunk with the result so far.
	Progress func(BulkResult)
}

// BulkRow is one selected execution as found, and what became of it.
type BulkRow struct {
	ExecutionID   int64
	Region        string
	ModelID       string
	Status        string // before the retry
	RetryCount    int    // before the retry
	MaxRetries    int
	ErrorCode     string  // "" when the output has none
	QuestionID    *string // nil when NULL
	QuestionIndex *int    // the job's; nil without a question_id
	FailedAt      string  // coalesce(completed_at, created_at), as stored
	Verdict       string  // VerdictRetry or a Skip* reason
	Attempt       int     // the new attempt when retried, else 0
}

// BulkResult is what SubmitFilter did (so far, when given to Progress).
type BulkResult struct {
	DryRun    bool
	SetID     int64 // the retry set created; 0 = none (a dry run, nothing retried)
	Selected  int64 // executions the filter selected (up to the limit)
	Retried   int64 // committed as 'retrying' (a dry run: would be)
	Queued    int64 // of those, pushed
	NotQueued int64 // committed but not pushed: the orphan sweep enqueues them
	Skipped   map[string]int64
	Chunks    int
	Sample    []BulkRow
}

// BatchPusher is a Pusher that can push many values with one LPUSH (go-redis:
// rdb.LPush(ctx, key, values...)). SubmitFilter uses it when Push implements it, else one
// LPush per job. Values are given in the order the worker should take them.
type BatchPusher interface {
	Pusher
	LPushMany(ctx context.Context, key string, values []string) error
}

// SubmitFilter is Client{DB: db, Push: push}.SubmitFilter.
func SubmitFilter(ctx context.Context, db *sql.DB, push Pusher, f Filter, opts BulkOptions) (BulkResult, error) {
	c := Client{DB: db, Push: push}
	return c.SubmitFilter(ctx, f, opts)
}

// SubmitFilter retries every execution f selects, with Submit's rules (status failed,
// timeout or error; retry_count below the row's own max_retries; not in flight) and its
// UPDATE. It works in execution id order, one transaction per chunk: the chunk's rows
// that no other transaction holds are locked (FOR UPDATE SKIP LOCKED: it never waits
// for a concurrent Submit nor doubles one, whose row is counted SkipLocked), judged as they
// are now, marked 'retrying' and recorded as members of one retry set (created with the
// first retry); after the commit the chunk's jobs are pushed. A job's QuestionIndex is
// the position of the row's question_id in its job spec's questions.
//
// Errors: ErrInvalid for a bad filter or option, ErrNotFound for an unknown job,
// ErrSchema when retryq's migration 0013 is missing, ErrDatabase. When a push fails it
// stops after that chunk with ErrNotQueued: those rows are committed (NotQueued) and the
// worker's orphan sweep enqueues them. The result counts what was done, also on error.
func (c *Client) SubmitFilter(ctx context.Context, f Filter, opts BulkOptions) (BulkResult, error) {
	res := BulkResult{DryRun: opts.DryRun, Skipped: map[string]int64{SkipMaxRetries: 0, SkipInFlight: 0,
		SkipLocked: 0, SkipNotRetryable: 0, SkipNoQuestion: 0}}
	filter, err := filterDocument(f, opts)
	if err != nil {
		return res, err
	}
	queue := c.Queue
	if queue == "" {
		queue = DefaultQueue
	}
	if err := checkQueue(queue); err != nil {
		return res, err
	}
	if c.DB == nil || (c.Push == nil && !opts.DryRun) {
		return res, invalid("retry by filter: a DB and a Pusher are required")
	}
	b := bulk{c: c, ctx: ctx, res: &res, filter: filter, opts: opts, queue: queue,
		by: opts.CreatedBy, chunk: opts.Chunk, sample: opts.Sample}
	if b.by == "" {
		b.by = osUser()
	}
	if b.chunk == 0 {
		b.chunk = DefaultChunk
	}
	if b.sample == 0 {
		b.sample = defaultSample
	}
	for more := true; more; {
		more, err = b.runChunk()
		res.Chunks++
		if err != nil {
			return res, err
		}
		if opts.Progress != nil {
			opts.Progress(res)
		}
	}
	return res, nil
}

// filterDocument checks f and opts and returns the filter as retryq_retry_by_filter reads it.
func filterDocument(f Filter, opts BulkOptions) (string, error) {
	if f.Job == "" && f.Since.IsZero() {
		return "", invalid("retry by filter: give a job (jobspec_id) or a since time, or both")
	}
	statuses := f.Statuses
	if statuses == nil {
		statuses = []string{"failed", "timeout", "error"}
	}
	if len(statuses) == 0 {
		return "", invalid("retry by filter: statuses must be among failed, timeout and error")
	}
	for _, s := range statuses {
		if !retryStatuses[s] {
			return "", invalid("retry by filter: statuses must be among failed, timeout and error (got %q)", s)
		}
	}
	if !f.Until.IsZero() && !f.Until.After(f.Since) {
		return "", invalid("retry by filter: until must come after since")
	}
	if opts.Limit < 0 || opts.Chunk < 0 || opts.Chunk > maxChunk || opts.Sample < 0 {
		return "", invalid("retry by filter: the limit must be >= 0 and the chunk from 1 to %d", maxChunk)
	}
	doc := map[string]interface{}{"statuses": statuses}
	for key, v := range map[string]string{"job": f.Job, "model": f.Model, "region": f.Region, "error_code": f.ErrorCode} {
		if v != "" {
			doc[key] = v
		}
	}
	if !f.Since.IsZero() {
		doc["since"] = f.Since.UTC().Format(TimestampLayout)
	}
	if !f.Until.IsZero() {
		doc["until"] = f.Until.UTC().Format(TimestampLayout)
	}
	if opts.Limit > 0 {
		doc["limit"] = opts.Limit
	}
	b, err := json.Marshal(doc)
	return string(b), err
}

func osUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

// bulk is one SubmitFilter.
type bulk struct {
	c                 *Client
	ctx               context.Context
	res               *BulkResult
	filter, queue, by string
	opts              BulkOptions
	chunk, sample     int
	after             int64
	jobs              []Job // the chunk's retried rows
	chunkRows         int
	now               string        // the chunk's enqueued_at and history timestamp
	timeout           time.Duration // a chunk's statement timeout
}

// runChunk runs one transaction and pushes its jobs; more says whether the selection may
// go on.
func (b *bulk) runChunk() (more bool, err error) {
	b.timeout = b.c.timeout()
	if b.timeout < chunkTimeout {
		b.timeout = chunkTimeout
	}
	var txOpts *sql.TxOptions
	if b.opts.DryRun {
		txOpts = &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	tx, err := b.c.DB.BeginTx(b.ctx, txOpts)
	if err != nil {
		return false, b.sqlError(err, "BEGIN")
	}
	defer func() { _ = tx.Rollback() }() // after a commit: sql.ErrTxDone, ignored
	if _, err := tx.ExecContext(b.ctx, sqlTimeout, strconv.FormatInt(b.timeout.Milliseconds(), 10)); err != nil {
		return false, b.sqlError(err, "setting the statement timeout")
	}
	before := *b.res
	before.Skipped = copyCounts(b.res.Skipped)
	rows, err := b.query(tx)
	if err == nil {
		err = b.read(rows)
	}
	if err != nil {
		b.restore(before)
		return false, err
	}
	more = b.chunkRows == b.chunk && (b.opts.Limit == 0 || b.res.Retried < int64(b.opts.Limit))
	if len(b.jobs) == 0 {
		return more, nil // a dry run, or nothing retried: the deferred rollback ends it
	}
	if err := tx.Commit(); err != nil {
		b.restore(before)
		return false, b.sqlError(err, "COMMIT (the chunk's retries may or may not be recorded)")
	}
	return more, b.push()
}

func (b *bulk) query(tx *sql.Tx) (*sql.Rows, error) {
	now := time.Now().UTC().Format(TimestampLayout)
	var want, set sql.NullInt64
	if b.opts.Limit > 0 {
		want = sql.NullInt64{Int64: int64(b.opts.Limit) - b.res.Retried, Valid: true}
	}
	if b.res.SetID != 0 {
		set = sql.NullInt64{Int64: b.res.SetID, Valid: true}
	}
	name := sql.NullString{String: b.opts.SetName, Valid: b.opts.SetName != ""}
	rows, err := tx.QueryContext(b.ctx, sqlChunk, b.filter, b.after, b.chunk, want, set, name, b.by, now,
		b.opts.DryRun)
	if err != nil {
		return nil, b.sqlError(err, "selecting and retrying a chunk")
	}
	b.jobs = b.jobs[:0]
	b.chunkRows = 0
	b.now = now
	return rows, nil
}

// read counts the chunk's rows and builds the jobs of those retried.
func (b *bulk) read(rows *sql.Rows) error {
	defer rows.Close()
	for rows.Next() {
		var set, attempt, index sql.NullInt64
		var r BulkRow
		var model, status, questionID, code, failedAt sql.NullString
		if err := rows.Scan(&set, &r.ExecutionID, &r.Region, &index, &r.Verdict, &attempt, &status,
			&r.RetryCount, &r.MaxRetries, &model, &questionID, &code, &failedAt); err != nil {
			return b.sqlError(err, "reading a chunk")
		}
		r.ModelID, r.Status, r.ErrorCode, r.FailedAt = model.String, status.String, code.String, failedAt.String
		r.Attempt = int(attempt.Int64)
		if questionID.Valid {
			q := questionID.String
			r.QuestionID = &q
		}
		if index.Valid {
			i := int(index.Int64)
			r.QuestionIndex = &i
		}
		b.chunkRows++
		b.res.Selected++
		if r.ExecutionID > b.after {
			b.after = r.ExecutionID
		}
		if len(b.res.Sample) < b.sample {
			b.res.Sample = append(b.res.Sample, r)
		}
		if r.Verdict != VerdictRetry {
			if _, known := b.res.Skipped[r.Verdict]; !known {
				r.Verdict = SkipNotRetryable
			}
			b.res.Skipped[r.Verdict]++
			continue
		}
		b.res.Retried++
		if b.opts.DryRun {
			continue
		}
		if b.res.SetID == 0 {
			b.res.SetID = set.Int64
		}
		if r.QuestionIndex == nil {
			return invalid("[RETRY] retry by filter: execution %d was retried without a question index; "+
				"nothing of its chunk was committed", r.ExecutionID)
		}
		job := Job{ExecutionID: r.ExecutionID, Region: r.Region, QuestionIndex: *r.QuestionIndex,
			RetryAttempt: r.Attempt, EnqueuedAt: b.now}.withDefaults(time.Now())
		if err := job.Validate(); err != nil {
			return invalid("[RETRY] retry by filter: execution %d cannot become a job (%v); nothing of "+
				"its chunk was committed", r.ExecutionID, err)
		}
		b.jobs = append(b.jobs, job)
	}
	if err := rows.Err(); err != nil {
		return b.sqlError(err, "reading a chunk")
	}
	return nil
}

// push sends the committed chunk's jobs, detached from the caller's cancellation as
// Submit's push is: they are committed whatever happens next.
func (b *bulk) push() error {
	pushCtx, cancel := context.WithTimeout(context.Background(), b.c.timeout())
	defer cancel()
	ctx := detached{pushCtx, b.ctx}
	payloads := make([]string, 0, len(b.jobs))
	for _, j := range b.jobs {
		p, err := j.Encode()
		if err != nil {
			return err // validated in read: cannot happen
		}
		payloads = append(payloads, p)
	}
	var err error
	queued := 0
	if many, ok := b.c.Push.(BatchPusher); ok {
		if err = many.LPushMany(ctx, b.queue, payloads); err == nil {
			queued = len(payloads)
		}
	} else {
		for _, p := range payloads {
			if err = b.c.Push.LPush(ctx, b.queue, p); err != nil {
				break
			}
			queued++
		}
	}
	b.res.Queued += int64(queued)
	b.res.NotQueued += int64(len(payloads) - queued)
	if err != nil {
		return &Error{Kind: ErrNotQueued, Err: &Error{Kind: ErrPush, Err: err, Message: err.Error()},
			Message: fmt.Sprintf("[RETRY] retry by filter: %d execution(s) of retry set %d are 'retrying' "+
				"but their jobs were not queued: %v; the worker's orphan sweep will enqueue them; stopped "+
				"before the rest of the selection", b.res.NotQueued, b.res.SetID, err)}
	}
	return nil
}

// restore puts the counts back as they were before a chunk that was rolled back.
func (b *bulk) restore(before BulkResult) {
	sample := b.res.Sample[:len(before.Sample)]
	*b.res = before
	b.res.Sample = sample
}

func (b *bulk) sqlError(err error, what string) error {
	return classify(err, "[RETRY] retry by filter", what, b.timeout)
}

func copyCounts(m map[string]int64) map[string]int64 {
	c := make(map[string]int64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
