package retryqtest

// The harness of the Go tests: the private PostgreSQL and Redis that
// test/support/services.sh started (their RETRYQ_TEST_* environment, as for every
// integration test), a fresh database per test cloned from the runner's schema and
// migrated by the real `retryq migrate`, and fixtures shaped like the runner's rows.
// Nothing is skipped: a missing variable fails the run with the reason.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/lib/pq"
)

var (
	admin     *sql.DB // the cluster's postgres database, to create and drop ours
	dbCounter int64
)

func TestMain(m *testing.M) {
	for _, v := range []string{"RETRYQ_TEST_ADMIN_URL", "RETRYQ_TEST_TEMPLATE_DB", "RETRYQ_TEST_PG_HOST",
		"RETRYQ_TEST_PG_PORT", "RETRYQ_TEST_REDIS_URL", "RETRYQ_CLI"} {
		if os.Getenv(v) == "" {
			fmt.Fprintf(os.Stderr, "FAIL: %s is not set: run these tests through ctest (test/go/run.sh)\n", v)
			os.Exit(1)
		}
	}
	var err error
	admin, err = sql.Open("postgres", withSSLDisabled(os.Getenv("RETRYQ_TEST_ADMIN_URL")))
	if err == nil {
		err = admin.Ping()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: PostgreSQL at RETRYQ_TEST_ADMIN_URL: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	admin.Close()
	os.Exit(code)
}

// withSSLDisabled: lib/pq defaults to sslmode=require; the test cluster has no TLS.
func withSSLDisabled(u string) string {
	if strings.Contains(u, "sslmode=") {
		return u
	}
	if strings.Contains(u, "?") {
		return u + "&sslmode=disable"
	}
	return u + "?sslmode=disable"
}

// newDatabase creates a database from the runner's schema (the template), applies
// retryq's migration with the real CLI when migrated is true, and drops it when the
// test ends. It returns a pool and the database's URL.
func newDatabase(t *testing.T, migrated bool) (*sql.DB, string) {
	t.Helper()
	name := fmt.Sprintf("go_%d_%d", os.Getpid(), atomic.AddInt64(&dbCounter, 1))
	if _, err := admin.Exec(fmt.Sprintf(`CREATE DATABASE %s TEMPLATE "%s"`, name,
		os.Getenv("RETRYQ_TEST_TEMPLATE_DB"))); err != nil {
		t.Fatalf("CREATE DATABASE %s: %v", name, err)
	}
	url := fmt.Sprintf("postgresql://retryq@%s:%s/%s", os.Getenv("RETRYQ_TEST_PG_HOST"),
		os.Getenv("RETRYQ_TEST_PG_PORT"), name)
	db, err := sql.Open("postgres", withSSLDisabled(url))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		if _, err := admin.Exec(fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name)); err != nil {
			t.Errorf("DROP DATABASE %s: %v", name, err)
		}
	})
	if migrated {
		out, err := exec.Command(os.Getenv("RETRYQ_CLI"), "--database-url", url, "migrate").CombinedOutput()
		if err != nil {
			t.Fatalf("retryq migrate: %v\n%s", err, out)
		}
	}
	return db, url
}

// newRedis connects to the harness's Redis; the connection closes when the test ends.
func newRedis(t *testing.T) *redisConn {
	t.Helper()
	rc, err := dialRedis(os.Getenv("RETRYQ_TEST_REDIS_URL"))
	if err != nil {
		t.Fatalf("Redis at RETRYQ_TEST_REDIS_URL: %v", err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

var unsafeQueueChars = regexp.MustCompile(`[^A-Za-z0-9_]`)

// queueName is a queue of this test alone.
func queueName(t *testing.T) string {
	return fmt.Sprintf("go_%d_%s", os.Getpid(), unsafeQueueChars.ReplaceAllString(t.Name(), "_"))
}

// runnerFailure is output_data exactly as the runner writes a failed execution
// (beacon-schema.md: error, error_code, failure{...}); its "error" is what
// original_error must end up holding.
func runnerFailure(region, message string) string {
	failure := map[string]interface{}{
		"error":      "hybrid error: " + message,
		"error_code": "ROUTER_TIMEOUT",
		"failure": map[string]interface{}{
			"stage": "router_http_timeout", "component": "hybrid_router", "subcomponent": "inference",
			"code": "ROUTER_TIMEOUT", "type": "timeout", "region": region, "model": "llama3.2-1b",
			"message": message, "transient": true,
		},
	}
	b, _ := json.Marshal(failure)
	return string(b)
}

// fixture is one executions row to insert. Zero values are the runner's own: no
// original_error, the column defaults for retry_history.
type fixture struct {
	Status        string
	Region        string
	QuestionID    string // "" = NULL (old batch rows)
	Model         string // "" = llama3.2-1b
	RetryCount    int
	MaxRetries    int    // 0 = the column default (3)
	Output        string // JSON text; "" = NULL
	OriginalError string // "" = NULL, as the runner leaves it
	NullHistory   bool   // retry_history NULL instead of the default '[]'
}

// insertJob inserts a jobs row with the given spec; returns its id and jobspec_id.
func insertJob(t *testing.T, db *sql.DB, spec string) (int64, string) {
	t.Helper()
	specID := fmt.Sprintf("spec-%s-%d", unsafeQueueChars.ReplaceAllString(t.Name(), "_"), time.Now().UnixNano())
	var id int64
	if err := db.QueryRow(`INSERT INTO jobs (jobspec_id, jobspec_data) VALUES ($1, $2::jsonb) RETURNING id`,
		specID, spec).Scan(&id); err != nil {
		t.Fatalf("insert job: %v", err)
	}
	return id, specID
}

func insertExecution(t *testing.T, db *sql.DB, jobID int64, f fixture) int64 {
	t.Helper()
	if f.Model == "" {
		f.Model = "llama3.2-1b"
	}
	if f.MaxRetries == 0 {
		f.MaxRetries = 3
	}
	var id int64
	err := db.QueryRow(`INSERT INTO executions (job_id, provider_id, region, status, question_id,
            model_id, retry_count, max_retries, output_data, original_error, started_at)
        VALUES ($1, 'router', $2, $3, NULLIF($4, ''), $5, $6, $7, NULLIF($8, '')::jsonb,
            NULLIF($9, ''), now() - interval '10 minutes') RETURNING id`,
		jobID, f.Region, f.Status, f.QuestionID, f.Model, f.RetryCount, f.MaxRetries, f.Output,
		f.OriginalError).Scan(&id)
	if err != nil {
		t.Fatalf("insert execution %+v: %v", f, err)
	}
	if f.NullHistory {
		mustExec(t, db, `UPDATE executions SET retry_history = NULL WHERE id = $1`, id)
	}
	return id
}

func mustExec(t *testing.T, db *sql.DB, query string, args ...interface{}) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// rowJSON is the whole row as JSON text, minus the named columns: "nothing else changed"
// is rowJSON before == rowJSON after.
func rowJSON(t *testing.T, db *sql.DB, id int64, except ...string) string {
	t.Helper()
	var s string
	if err := db.QueryRow(`SELECT (to_jsonb(e) - $2::text[])::text FROM executions e WHERE id = $1`,
		id, "{"+strings.Join(except, ",")+"}").Scan(&s); err != nil {
		t.Fatalf("row %d: %v", id, err)
	}
	return s
}

// history is the row's retry_history (nil when NULL).
func history(t *testing.T, db *sql.DB, id int64) []map[string]interface{} {
	t.Helper()
	var raw sql.NullString
	if err := db.QueryRow(`SELECT retry_history::text FROM executions WHERE id = $1`, id).Scan(&raw); err != nil {
		t.Fatalf("history of %d: %v", id, err)
	}
	if !raw.Valid {
		return nil
	}
	var h []map[string]interface{}
	if err := json.Unmarshal([]byte(raw.String), &h); err != nil {
		t.Fatalf("history of %d is not an array of objects: %s", id, raw.String)
	}
	return h
}

// column reads one expression of the row as text ("" for NULL).
func column(t *testing.T, db *sql.DB, id int64, expr string) string {
	t.Helper()
	var v sql.NullString
	if err := db.QueryRow(`SELECT (`+expr+`)::text FROM executions WHERE id = $1`, id).Scan(&v); err != nil {
		t.Fatalf("%s of %d: %v", expr, id, err)
	}
	return v.String
}

// decodedJob is a job read back from Redis, decoded with encoding/json (numbers as
// json.Number, so an id is compared exactly).
type decodedJob map[string]interface{}

func queueJobs(t *testing.T, rc *redisConn, queue string) []decodedJob {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	items, err := rc.lrange(ctx, queue)
	if err != nil {
		t.Fatalf("LRANGE %s: %v", queue, err)
	}
	jobs := make([]decodedJob, len(items))
	for i, it := range items {
		dec := json.NewDecoder(strings.NewReader(it))
		dec.UseNumber()
		if err := dec.Decode(&jobs[i]); err != nil {
			t.Fatalf("job %q on %s is not JSON: %v", it, queue, err)
		}
	}
	return jobs
}
