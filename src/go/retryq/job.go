package retryq

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Limits of the wire format (version 1), the same as libretryq's (retryq.h).
const (
	DefaultQueue  = "retry_queue"
	MaxPayload    = 64 * 1024 // bytes of one job's JSON text
	MaxRegion     = 128       // bytes of a region name
	MaxQueueName  = 200       // bytes of a queue name
	MaxJobID      = 64        // bytes of the optional "id" field
	MaxTimestamp  = 40        // bytes of the optional "enqueued_at" field
	MaxAttempt    = 1000      // sanity ceiling of retry_attempt; the row's max_retries is the real bound
	maxSafeNumber = 1<<53 - 1 // larger execution ids travel as decimal strings
)

// TimestampLayout is the form of enqueued_at and of the history entry's timestamp:
// RFC 3339, UTC, milliseconds (libretryq writes the same).
const TimestampLayout = "2006-01-02T15:04:05.000Z07:00"

// Job is one retry job. The first four fields are required and are exactly what the
// runner's queue design pushes; EnqueuedAt and ID are optional and filled by Enqueue
// when empty.
type Job struct {
	ExecutionID   int64  // > 0
	Region        string // the execution's stored region, 1..128 bytes, no control characters
	QuestionIndex int    // >= 0; index into the job spec's questions
	RetryAttempt  int    // the row's retry_count after the increment, 1..MaxAttempt
	EnqueuedAt    string // RFC 3339; "" = now
	ID            string // "<execution_id>:<retry_attempt>"; "" = that
}

// Pusher is what Submit and Enqueue need from a Redis client: LPUSH one value onto a
// list. See the package documentation for go-redis and redigo.
type Pusher interface {
	LPush(ctx context.Context, key string, value string) error
}

// PusherFunc adapts a function to Pusher.
type PusherFunc func(ctx context.Context, key string, value string) error

// LPush calls f.
func (f PusherFunc) LPush(ctx context.Context, key string, value string) error {
	return f(ctx, key, value)
}

func invalid(format string, args ...interface{}) error {
	return &Error{Kind: ErrInvalid, Message: fmt.Sprintf(format, args...)}
}

// checkRequest checks what a caller passes to Submit: the three fields the caller chooses.
func checkRequest(executionID int64, region string, questionIndex int) error {
	if executionID <= 0 {
		return invalid("execution_id: must be a positive integer that fits int64")
	}
	if len(region) == 0 || len(region) > MaxRegion {
		return invalid("region: must be a string of 1..%d bytes", MaxRegion)
	}
	for i := 0; i < len(region); i++ {
		if c := region[i]; c < 0x20 || c == 0x7f {
			return invalid("region: must not contain control characters")
		}
	}
	if !utf8.ValidString(region) {
		return invalid("region: must be valid UTF-8")
	}
	if questionIndex < 0 || int64(questionIndex) > math.MaxInt32 {
		return invalid("question_index: must be an integer >= 0 and <= %d", math.MaxInt32)
	}
	return nil
}

// Validate checks the job against the wire format's rules (DESIGN §2), as the worker
// will: the same rules and the same sentences as libretryq.
func (j Job) Validate() error {
	if err := checkRequest(j.ExecutionID, j.Region, j.QuestionIndex); err != nil {
		return err
	}
	if j.RetryAttempt < 1 || j.RetryAttempt > MaxAttempt {
		return invalid("retry_attempt: must be an integer from 1 to %d (max retries)", MaxAttempt)
	}
	if j.EnqueuedAt != "" {
		if _, err := time.Parse(time.RFC3339Nano, j.EnqueuedAt); err != nil || len(j.EnqueuedAt) > MaxTimestamp {
			return invalid("enqueued_at: must be an RFC 3339 timestamp of at most %d bytes", MaxTimestamp)
		}
	}
	if len(j.ID) > MaxJobID {
		return invalid("id: must be a string of at most %d printable ASCII characters", MaxJobID)
	}
	for i := 0; i < len(j.ID); i++ {
		if c := j.ID[i]; c < 0x20 || c > 0x7e {
			return invalid("id: must be a string of at most %d printable ASCII characters", MaxJobID)
		}
	}
	return nil
}

// checkQueue applies libretryq's rule for queue names.
func checkQueue(queue string) error {
	if len(queue) == 0 || len(queue) > MaxQueueName {
		return invalid("queue name: must be 1..%d bytes", MaxQueueName)
	}
	for i := 0; i < len(queue); i++ {
		if c := queue[i]; c <= 0x20 || c >= 0x7f || c == '{' || c == '}' {
			return invalid("queue name: must be printable ASCII without spaces or braces")
		}
	}
	return nil
}

// withDefaults fills the optional fields the way libretryq's retryq_job_init does.
func (j Job) withDefaults(now time.Time) Job {
	if j.EnqueuedAt == "" {
		j.EnqueuedAt = now.UTC().Format(TimestampLayout)
	}
	if j.ID == "" {
		j.ID = fmt.Sprintf("%d:%d", j.ExecutionID, j.RetryAttempt)
	}
	return j
}

// jsonString writes s as a JSON string without Go's HTML escaping.
func jsonString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a string always encodes
	b.Truncate(b.Len() - 1) // Encode adds a newline
}

// Encode validates the job and returns its wire form, compact, with the fields in
// libretryq's order; optional fields only when set. An execution id above 2^53-1 is
// written as a decimal string, which the worker reads exactly.
func (j Job) Encode() (string, error) {
	if err := j.Validate(); err != nil {
		return "", err
	}
	var b bytes.Buffer
	b.WriteString(`{"execution_id":`)
	if j.ExecutionID > maxSafeNumber {
		jsonString(&b, strconv.FormatInt(j.ExecutionID, 10))
	} else {
		b.WriteString(strconv.FormatInt(j.ExecutionID, 10))
	}
	b.WriteString(`,"region":`)
	jsonString(&b, j.Region)
	b.WriteString(`,"question_index":`)
	b.WriteString(strconv.Itoa(j.QuestionIndex))
	b.WriteString(`,"retry_attempt":`)
	b.WriteString(strconv.Itoa(j.RetryAttempt))
	if j.EnqueuedAt != "" {
		b.WriteString(`,"enqueued_at":`)
		jsonString(&b, j.EnqueuedAt)
	}
	if j.ID != "" {
		b.WriteString(`,"id":`)
		jsonString(&b, j.ID)
	}
	b.WriteByte('}')
	if b.Len() > MaxPayload {
		return "", invalid("payload: %d bytes is over the limit of %d", b.Len(), MaxPayload)
	}
	return b.String(), nil
}

// Enqueue pushes one job onto the queue ("" = DefaultQueue) with LPUSH; the worker takes
// the oldest first. EnqueuedAt (now) and ID are filled when empty. It returns the job as
// pushed. An invalid job or queue name is ErrInvalid and nothing is pushed; a failed push
// is ErrPush wrapping the Pusher's error.
//
// Enqueue alone does not make a retry: the worker acts on a job only when its execution
// is 'retrying' with retry_count equal to the job's retry_attempt. Submit does both.
func Enqueue(ctx context.Context, push Pusher, queue string, job Job) (Job, error) {
	if queue == "" {
		queue = DefaultQueue
	}
	if err := checkQueue(queue); err != nil {
		return job, err
	}
	job = job.withDefaults(time.Now())
	payload, err := job.Encode()
	if err != nil {
		return job, err
	}
	if push == nil {
		return job, invalid("enqueue: no Pusher given")
	}
	if err := push.LPush(ctx, queue, payload); err != nil {
		return job, &Error{Kind: ErrPush, Err: err,
			Message: fmt.Sprintf("[RETRY] LPUSH %s failed for job %s: %v", queue, job.ID, err)}
	}
	return job, nil
}
