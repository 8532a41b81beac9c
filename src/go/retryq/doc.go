// Package retryq is the runner's side of retryq: the retry request of the runner's API
// (POST /api/v1/executions/{id}/retry-question) done durably, in Go, with the standard
// library only.
//
// Submit does what libretryq's retryq_submit does, in one transaction: it locks the
// execution by id and region, decides whether it may be retried (status failed, timeout
// or error, retry_count below the row's own max_retries), moves it to 'retrying' with
// one history entry and the original error kept, commits, and then pushes one job onto
// the Redis list that retryq-worker consumes. Enqueue pushes a job on its own. The wire
// format and the Redis keys are described in retryq's docs/protocol.md.
//
// The package talks to PostgreSQL through database/sql (bring any driver: lib/pq, pgx's
// stdlib) and to Redis through Pusher, a one-method interface, so it imports no client
// library. Adapting a Redis client is one line with PusherFunc. With go-redis
// (github.com/redis/go-redis/v9, *redis.Client):
//
//	push := retryq.PusherFunc(func(ctx context.Context, key, value string) error { return rdb.LPush(ctx, key, value).Err() })
//
// With redigo (github.com/gomodule/redigo/redis) on one connection c (a redigo
// connection is not safe for concurrent use: with a *redis.Pool, take one per call):
//
//	push := retryq.PusherFunc(func(ctx context.Context, key, value string) error { _, err := redis.DoContext(c, ctx, "LPUSH", key, value); return err })
//
// In the runner's handler:
//
//	res, err := retryq.Submit(ctx, db, push, executionID, req.Region, *req.QuestionIndex)
//	if err != nil && !errors.Is(err, retryq.ErrNotQueued) {
//		c.JSON(retryq.HTTPStatus(err), gin.H{"error": err.Error()})
//		return
//	}
//	// res.Outcome: Queued or CommittedNotQueued (the retry will run), AlreadyCompleted
//	// (res.Output holds the stored result), InFlight (nothing changed: answer 202).
//
// SubmitFilter retries every execution a Filter selects (a job spec id and/or a time
// range, narrowed by model, region, status and error code) with the same rules and the
// same UPDATE, in transactions of 500 rows that skip rows another retry holds, and
// records them as one retry set, as `retryq retry --job/--since` does. Both run retryq's
// SQL functions (its migration 0013): run `retryq migrate` before this package serves
// retries.
//
// Do not also start the runner's in-process RetryService goroutine: the worker runs the
// inference, and running both runs it twice.
package retryq
