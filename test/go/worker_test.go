package retryqtest

// The cross-language test: retryq.Submit (Go) moves rows shaped like the runner's to
// 'retrying' and pushes their jobs; the C worker (retryq-worker, against the mock router)
// completes them; the rows are right. A third row's push fails after its commit, as when
// Redis is down: the worker's orphan sweep must find it and complete it too, which is
// what ErrNotQueued promises the caller. Each row must end completed with its retrying
// entry and exactly one outcome entry for the attempt, original_error holding the
// runner's first error, and the router called once per row.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"retryq.dev/retryq"
)

// needEnv returns the variables, failing the test (not skipping it) when one is unset.
func needEnv(t *testing.T, names ...string) []string {
	t.Helper()
	vals := make([]string, len(names))
	for i, n := range names {
		if vals[i] = os.Getenv(n); vals[i] == "" {
			t.Fatalf("%s is not set: run through ctest (test/go/run.sh worker)", n)
		}
	}
	return vals
}

// waitFor polls cond every 20 ms until it holds or the deadline passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// startRouter runs the mock router on a free port and returns its base URL.
func startRouter(t *testing.T, bin string) string {
	t.Helper()
	portFile := filepath.Join(t.TempDir(), "router.port")
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--port-file", portFile, "--quiet")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("mock router: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var port string
	if !waitFor(10*time.Second, func() bool {
		b, err := os.ReadFile(portFile)
		port = strings.TrimSpace(string(b))
		return err == nil && port != ""
	}) {
		t.Fatal("the mock router wrote no port file within 10 s")
	}
	return "http://127.0.0.1:" + port
}

// routerCalls is the mock router's count of inference calls per execution id.
func routerCalls(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/stats")
	if err != nil {
		t.Fatalf("router stats: %v", err)
	}
	defer resp.Body.Close()
	var stats struct {
		Calls map[string]float64 `json:"calls"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		t.Fatalf("router stats: %v", err)
	}
	return stats.Calls
}

// tail prints the last lines of a log, for a failing test.
func tail(t *testing.T, path string, n int) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	var lines []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("last lines of %s:\n%s", path, strings.Join(lines, "\n"))
}

// logHas reports whether one line of the log holds every part.
func logHas(t *testing.T, path string, parts ...string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("worker log: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

func TestWorkerCompletesGoSubmits(t *testing.T) {
	vals := needEnv(t, "RETRYQ_WORKER_BIN", "RETRYQ_MOCK_ROUTER_BIN", "RETRYQ_TEST_REDIS_URL")
	workerBin, routerBin, redisURL := vals[0], vals[1], vals[2]
	db, dbURL := newDatabase(t, true)
	rc := newRedis(t)
	router := startRouter(t, routerBin)
	queue := queueName(t)
	jobID, _ := insertJob(t, db, `{"id":"go-e2e","version":"v1","questions":["math_basic","identity_basic"]}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Rows as the runner leaves them: original_error NULL, the failure in output_data.
	// (Attempts stay within the worker's default --max-retries 3.)
	type row struct {
		name      string
		f         fixture
		msg       string // the runner's failure message (output_data.error = "hybrid error: " + msg)
		index     int
		pushFails bool
		id        int64
		res       retryq.Result
	}
	failing := retryq.PusherFunc(func(context.Context, string, string) error {
		return errors.New("connection refused (Redis down)")
	})
	rows := []*row{
		{name: "router timeout, max_retries 1", msg: "router timeout after 120s",
			f: fixture{Status: "failed", Region: "us-east", QuestionID: "math_basic", MaxRetries: 1}, index: 0},
		{name: "timeout, max_retries 5, null question_id (by index)", msg: "cold start",
			f: fixture{Status: "timeout", Region: "eu-west", MaxRetries: 5, RetryCount: 1}, index: 1},
		{name: "max_retries 5, attempt 4 (above the worker's default --max-retries 3)", msg: "overloaded",
			f: fixture{Status: "failed", Region: "us-east", QuestionID: "identity_basic", MaxRetries: 5, RetryCount: 3}, index: 1},
		{name: "push failed after commit (orphan sweep)", msg: "503 from provider", pushFails: true,
			f: fixture{Status: "error", Region: "asia-pacific", QuestionID: "identity_basic", MaxRetries: 3}, index: 1},
	}
	for _, r := range rows {
		r.f.Output = runnerFailure(r.f.Region, r.msg)
		r.id = insertExecution(t, db, jobID, r.f)
		c := retryq.Client{DB: db, Push: rc, Queue: queue}
		if r.pushFails {
			c.Push = failing
		}
		var err error
		r.res, err = c.Submit(ctx, r.id, r.f.Region, r.index)
		switch {
		case r.pushFails && (!errors.Is(err, retryq.ErrNotQueued) || r.res.Outcome != retryq.CommittedNotQueued):
			t.Fatalf("%s: got %v, %v; want ErrNotQueued", r.name, r.res.Outcome, err)
		case !r.pushFails && (err != nil || r.res.Outcome != retryq.Queued):
			t.Fatalf("%s: got %v, %v; want Queued", r.name, r.res.Outcome, err)
		}
	}
	if jobs := queueJobs(t, rc, queue); len(jobs) != 3 {
		t.Fatalf("queue holds %d jobs, want 3", len(jobs))
	}

	// The worker runs until every row has left 'retrying' (a short orphan age, so the
	// sweep picks up the unqueued row at once), then is stopped with SIGTERM.
	logPath := filepath.Join(t.TempDir(), "worker.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	worker := exec.Command(workerBin, "--database-url", dbURL, "--redis-url", redisURL, "--queue", queue,
		"--router-url", router, "--http-addr", "off", "--orphan-age-ms", "100", "--orphan-interval-ms", "200",
		"--heartbeat-ms", "200", "--lease-ms", "1000", "--timeout-ms", "10000", "--log-level", "debug")
	worker.Stdout, worker.Stderr = logFile, logFile
	if err := worker.Start(); err != nil {
		t.Fatalf("retryq-worker: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- worker.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = worker.Process.Kill()
			<-exited
		}
	}()
	settled := waitFor(60*time.Second, func() bool {
		var left int
		err := db.QueryRow(`SELECT count(*) FROM executions WHERE status = 'retrying'`).Scan(&left)
		return err == nil && left == 0
	})
	_ = worker.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("worker exit: %v", err)
			tail(t, logPath, 40)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the worker did not stop within 30 s of SIGTERM")
	}
	if !settled {
		tail(t, logPath, 60)
		t.Fatalf("rows still 'retrying' after 60 s")
	}

	calls := routerCalls(t, router)
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			attempt := r.res.RetryAttempt
			got := column(t, db, r.id, "status || ' ' || retry_count || ' ' || (completed_at IS NOT NULL)")
			if want := "completed " + strconv.Itoa(attempt) + " true"; got != want {
				t.Errorf("status, retry_count, completed_at set: %q, want %q", got, want)
			}
			if got, want := column(t, db, r.id, "original_error"), "hybrid error: "+r.msg; got != want {
				t.Errorf("original_error %q, want %q", got, want)
			}
			if got := column(t, db, r.id, "output_data ?& array['response','provider','metadata']"); got != "true" {
				t.Errorf("output_data lacks the runner's success keys: %s", column(t, db, r.id, "output_data"))
			}
			if got := column(t, db, r.id, "provider_id = output_data->>'provider_used'"); got != "true" {
				t.Errorf("provider_id is not the provider used")
			}
			var retrying, outcomes []map[string]interface{}
			for _, entry := range history(t, db, r.id) {
				if entry["status"] == "retrying" {
					retrying = append(retrying, entry)
				} else {
					outcomes = append(outcomes, entry)
				}
			}
			if len(retrying) != 1 || retrying[0]["attempt"] != float64(attempt) ||
				retrying[0]["timestamp"] != r.res.Job.EnqueuedAt {
				t.Errorf("retrying entries %v: want one for attempt %d at %s", retrying, attempt, r.res.Job.EnqueuedAt)
			}
			if len(outcomes) != 1 || outcomes[0]["attempt"] != float64(attempt) || outcomes[0]["status"] != "success" {
				t.Errorf("outcome entries %v: want exactly one success for attempt %d", outcomes, attempt)
			}
			if n := calls[fmt.Sprint(r.id)]; n != 1 {
				t.Errorf("router called %v times for execution %d, want once", n, r.id)
			}
			if r.pushFails && !logHas(t, logPath, "sweep.orphan", fmt.Sprintf("execution_id=%d ", r.id)) {
				t.Errorf("no sweep.orphan line for execution %d: its job came from elsewhere", r.id)
			}
		})
	}
	if t.Failed() {
		tail(t, logPath, 60)
	}
}
