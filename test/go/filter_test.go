package retryqtest

// retryq.SubmitFilter against a migrated clone of the runner's schema and the harness's
// Redis, on rows shaped like the runner's: a row retried by filter changes exactly as its
// twin retried by Submit (the one SQL function both call), with its job's attempt,
// question index and timestamp; rows at their own max_retries, in flight, completed or
// without a question_id are skipped with their reason; the C CLI's dry run and Go's
// select and judge the same rows; chunks and the limit; a row locked elsewhere is
// skipped, not waited for; a push that fails stops after the chunk it committed
// (ErrNotQueued); bad filters, an unknown job and an unmigrated schema are refused.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"testing"
	"time"

	"retryq.dev/retryq"
)

// filterRows inserts the mixed rows of the filter tests and returns the ids of those a
// retry by filter must retry, in id order.
func filterRows(t *testing.T, e *env) []int64 {
	t.Helper()
	failure := runnerFailure("us-east", "context deadline exceeded")
	var want []int64
	for i, f := range []fixture{
		{Status: "failed", QuestionID: "math_basic", Output: failure},
		{Status: "timeout", QuestionID: "identity_basic", Output: failure, RetryCount: 1},
		{Status: "error", QuestionID: "tiananmen_neutral", Output: failure, MaxRetries: 5, RetryCount: 4},
		{Status: "failed", QuestionID: "math_basic", Output: failure, MaxRetries: 1, RetryCount: 1}, // at max
		{Status: "failed", QuestionID: "", Output: failure},                                         // no question_id
		{Status: "retrying", QuestionID: "math_basic", RetryCount: 1},                               // not selected
		{Status: "completed", QuestionID: "math_basic"},                                             // not selected
		{Status: "failed", QuestionID: "unknown_q", Output: failure, Model: "mistral-7b"},           // index 0
	} {
		f.Region = "us-east"
		id := insertExecution(t, e.db, e.jobID, f)
		if i == 0 || i == 1 || i == 2 || i == 7 {
			want = append(want, id)
		}
	}
	return want
}

func retriedIDs(res retryq.BulkResult) []int64 {
	var ids []int64
	for _, r := range res.Sample {
		if r.Verdict == retryq.VerdictRetry {
			ids = append(ids, r.ExecutionID)
		}
	}
	return ids
}

func TestSubmitFilterRetriesLikeSubmit(t *testing.T) {
	e := newEnv(t)
	want := filterRows(t, e)
	// The twin of the first row, retried by Submit.
	twin := insertExecution(t, e.db, e.jobID, fixture{Status: "failed", Region: "us-east",
		QuestionID: "math_basic", Output: runnerFailure("us-east", "context deadline exceeded")})
	if _, err := e.client.Submit(ctxT(t), twin, "us-east", 1); err != nil {
		t.Fatal(err)
	}
	twinJobs := len(queueJobs(t, e.rc, e.client.Queue))

	progress := 0
	res, err := e.client.SubmitFilter(ctxT(t), retryq.Filter{Job: e.specID},
		retryq.BulkOptions{SetName: "go", CreatedBy: "go-test", Progress: func(retryq.BulkResult) { progress++ }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Selected != 6 || res.Retried != 4 || res.Queued != 4 || res.Chunks != 1 || progress != 1 ||
		res.Skipped[retryq.SkipMaxRetries] != 1 || res.Skipped[retryq.SkipNoQuestion] != 1 || res.SetID == 0 {
		t.Fatalf("result %+v (progress called %d times)", res, progress)
	}
	if got := retriedIDs(res); !reflect.DeepEqual(got, want) {
		t.Fatalf("retried %v, want %v", got, want)
	}
	// Exactly the columns and history entry Submit writes.
	except := []string{"id", "created_at", "started_at", "last_retry_at", "retry_history"}
	if a, b := rowJSON(t, e.db, want[0], except...), rowJSON(t, e.db, twin, except...); a != b {
		t.Errorf("retried by filter:\n%s\nby Submit:\n%s", a, b)
	}
	ha, hb := history(t, e.db, want[0]), history(t, e.db, twin)
	ts := ha[len(ha)-1]["timestamp"]
	for _, k := range []string{"timestamp", "last_retry_at"} { // the times of each one's own retry
		delete(ha[len(ha)-1], k)
		delete(hb[len(hb)-1], k)
	}
	if !reflect.DeepEqual(ha, hb) {
		t.Errorf("history by filter %v, by Submit %v", ha, hb)
	}
	// The jobs: one per retried row, pushed in one LPUSH (BatchPusher), in id order.
	jobs := queueJobs(t, e.rc, e.client.Queue)[:4] // LPUSH: the newest first, the twin's last
	if len(queueJobs(t, e.rc, e.client.Queue)) != 4+twinJobs {
		t.Fatalf("queue holds %d jobs", len(queueJobs(t, e.rc, e.client.Queue)))
	}
	wantIndex := map[int64]string{want[0]: "1", want[1]: "0", want[2]: "2", want[3]: "0"}
	wantAttempt := map[int64]string{want[0]: "1", want[1]: "2", want[2]: "5", want[3]: "1"}
	for i, j := range jobs {
		id, _ := j["execution_id"].(json.Number).Int64()
		if id != want[3-i] || j["question_index"].(json.Number).String() != wantIndex[id] ||
			j["retry_attempt"].(json.Number).String() != wantAttempt[id] {
			t.Errorf("job %d: %v", i, j)
		}
		if id == want[0] && j["enqueued_at"] != ts {
			t.Errorf("job enqueued_at %v, history timestamp %v", j["enqueued_at"], ts)
		}
	}
	var members, name, by string
	if err := e.db.QueryRow(`SELECT string_agg(m.execution_id::text || ':' || m.attempt || ':' || m.previous_status, ','
	        ORDER BY m.execution_id), s.name, s.created_by FROM retryq_set_members m JOIN retryq_sets s ON s.id = m.set_id
	         WHERE s.id = $1 GROUP BY s.name, s.created_by`, res.SetID).Scan(&members, &name, &by); err != nil {
		t.Fatal(err)
	}
	wantMembers := fmt.Sprintf("%d:1:failed,%d:2:timeout,%d:5:error,%d:1:failed", want[0], want[1], want[2], want[3])
	if members != wantMembers || name != "go" || by != "go-test" {
		t.Errorf("set %d: members %s (want %s), name %q, by %q", res.SetID, members, wantMembers, name, by)
	}
}

// The C CLI's dry run and Go's select and judge the same rows, by the same SQL.
func TestSubmitFilterMatchesTheCLI(t *testing.T) {
	db, url := newDatabase(t, true)
	e := &env{db: db, rc: newRedis(t)}
	e.jobID, e.specID = insertJob(t, db, spec)
	e.client = retryq.Client{DB: db, Push: e.rc, Queue: queueName(t)}
	filterRows(t, e)
	since := time.Now().Add(-time.Hour)
	goRes, err := e.client.SubmitFilter(ctxT(t), retryq.Filter{Job: e.specID, Since: since, Statuses: []string{"failed", "error"}},
		retryq.BulkOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(os.Getenv("RETRYQ_CLI"), "--database-url", url, "--redis-url", os.Getenv("RETRYQ_TEST_REDIS_URL"),
		"retry", "--job", e.specID, "--since", since.UTC().Format(time.RFC3339), "--status", "failed,error",
		"--dry-run", "--json").Output()
	if err != nil {
		t.Fatalf("retryq retry --dry-run: %v", err)
	}
	var cli struct {
		Selected, Retried int64
		Skipped           map[string]int64
		Sample            []struct {
			ExecutionID int64 `json:"execution_id"`
			Verdict     string
		}
	}
	if err := json.Unmarshal(out, &cli); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if cli.Selected != goRes.Selected || cli.Retried != goRes.Retried || !reflect.DeepEqual(cli.Skipped, goRes.Skipped) ||
		len(cli.Sample) != len(goRes.Sample) {
		t.Fatalf("CLI %+v, Go %+v", cli, goRes)
	}
	for i, r := range goRes.Sample {
		if cli.Sample[i].ExecutionID != r.ExecutionID || cli.Sample[i].Verdict != r.Verdict {
			t.Errorf("row %d: CLI %+v, Go %+v", i, cli.Sample[i], r)
		}
	}
	if goRes.SetID != 0 || len(queueJobs(t, e.rc, e.client.Queue)) != 0 {
		t.Errorf("the dry run made set %d or pushed", goRes.SetID)
	}
	// For real, in chunks of 2, a limit of 2, through a plain one-job Pusher.
	pushes := 0
	c := e.client
	c.Push = retryq.PusherFunc(func(ctx context.Context, key, value string) error { pushes++; return e.rc.LPush(ctx, key, value) })
	res, err := c.SubmitFilter(ctxT(t), retryq.Filter{Job: e.specID}, retryq.BulkOptions{Chunk: 2, Limit: 2})
	if err != nil || res.Retried != 2 || res.Queued != 2 || pushes != 2 || res.Chunks != 1 {
		t.Fatalf("limit 2 in chunks of 2: %+v, %d pushes, %v", res, pushes, err)
	}
}

func TestSubmitFilterSkipsALockedRow(t *testing.T) {
	e := newEnv(t)
	want := filterRows(t, e)
	lockRow(t, e.db, want[1])
	start := time.Now()
	res, err := e.client.SubmitFilter(ctxT(t), retryq.Filter{Job: e.specID}, retryq.BulkOptions{})
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
	if res.Skipped[retryq.SkipLocked] != 1 || res.Retried != 3 || res.Sample[1].Verdict != retryq.SkipLocked {
		t.Fatalf("result %+v", res)
	}
	if got := column(t, e.db, want[1], "status"); got != "timeout" {
		t.Errorf("the locked row became %s", got)
	}
}

func TestSubmitFilterPushFails(t *testing.T) {
	e := newEnv(t)
	want := filterRows(t, e)
	c := e.client
	c.Push = retryq.PusherFunc(func(context.Context, string, string) error { return errors.New("connection refused") })
	res, err := c.SubmitFilter(ctxT(t), retryq.Filter{Job: e.specID}, retryq.BulkOptions{Chunk: 2})
	if !errors.Is(err, retryq.ErrNotQueued) || !errors.Is(err, retryq.ErrPush) || retryq.HTTPStatus(err) != 202 {
		t.Fatalf("got %v", err)
	}
	if res.Retried != 2 || res.NotQueued != 2 || res.Queued != 0 || res.Chunks != 1 {
		t.Fatalf("result %+v", res)
	}
	// The first chunk is committed ('retrying', for the orphan sweep); nothing after it.
	for i, wantStatus := range []string{"retrying", "retrying", "error", "failed"} {
		if got := column(t, e.db, want[i], "status"); got != wantStatus {
			t.Errorf("row %d: status %s, want %s", want[i], got, wantStatus)
		}
	}
}

func TestSubmitFilterRefusals(t *testing.T) {
	e := newEnv(t)
	for name, f := range map[string]retryq.Filter{
		"no job, no since":   {Model: "mistral-7b"},
		"status completed":   {Job: e.specID, Statuses: []string{"completed"}},
		"until before since": {Since: time.Now(), Until: time.Now().Add(-time.Hour)},
	} {
		if _, err := e.client.SubmitFilter(ctxT(t), f, retryq.BulkOptions{}); !errors.Is(err, retryq.ErrInvalid) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	if _, err := e.client.SubmitFilter(ctxT(t), retryq.Filter{Job: e.specID}, retryq.BulkOptions{Chunk: 5001}); !errors.Is(err, retryq.ErrInvalid) {
		t.Errorf("chunk 5001: got %v", err)
	}
	if _, err := e.client.SubmitFilter(ctxT(t), retryq.Filter{Job: "no-such-job"}, retryq.BulkOptions{}); !errors.Is(err, retryq.ErrNotFound) {
		t.Errorf("unknown job: got %v", err)
	}
	db, _ := newDatabase(t, false)
	c := retryq.Client{DB: db, Push: e.rc, Queue: e.client.Queue}
	if _, err := c.SubmitFilter(ctxT(t), retryq.Filter{Job: e.specID}, retryq.BulkOptions{}); !errors.Is(err, retryq.ErrSchema) {
		t.Errorf("unmigrated: got %v", err)
	}
}
