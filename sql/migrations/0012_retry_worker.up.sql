-- retryq 0012 (up): make the retry statuses legal and index the orphan sweep.
--
-- Numbered after the runner's own migrations (0010 retry tracking, 0011 trace spans) and
-- recorded by `retryq migrate` in retryq_schema_migrations, never in the runner's
-- schema_migrations (see docs/schema.md). No BEGIN/COMMIT here: `retryq migrate` runs
-- this file in one transaction (apply it by hand with `psql -1 -v ON_ERROR_STOP=1 -f`).
-- Idempotent: running it twice leaves the same schema.

-- 1. The runner's 0010 must be in place: this migration and retryq itself use its
--    columns. Fail with a clear message instead of half-applying.
DO $$
DECLARE
    missing text;
BEGIN
    IF to_regclass('executions') IS NULL THEN
        RAISE EXCEPTION 'retryq migration 0012 needs the runner''s executions table, which does not exist'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run the runner''s migrations (up to 0010_add_retry_tracking) first.';
    END IF;
    SELECT string_agg(wanted.name, ', ' ORDER BY wanted.ord) INTO missing
      FROM unnest(ARRAY['retry_count', 'max_retries', 'last_retry_at', 'retry_history',
                        'original_error']) WITH ORDINALITY AS wanted(name, ord)
     WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = to_regclass('executions')
                          AND a.attname = wanted.name AND a.attnum > 0 AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'retryq migration 0012 needs the runner''s migration 0010 (add_retry_tracking): executions has no column %', missing
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run the runner''s migrations up to 0010_add_retry_tracking, then `retryq migrate` again.';
    END IF;
END
$$;

-- 2. Widen the status check without blocking the runner. The old set stays; retryq adds
--    exactly the statuses that retryq and the runner's retry handler write: 'retrying'
--    (a retry is queued or running), 'timeout' (the router did not answer in time) and
--    'error' (which the runner's 0010 index and retry handler already treat as
--    retryable). Statuses the API merely tolerates as "in flight" ('processing',
--    'queued', 'created') are not added: nothing writes them to executions.
--    a) A row whose status is outside the new set would make the new check fail: refuse
--       with a clear message before anything changes (this reads the table without an
--       exclusive lock).
--    b) Wait at most 10 s for the table lock (a long transaction of the runner's would
--       otherwise make every later query queue behind this migration), then swap the
--       check NOT VALID: a catalogue change, the exclusive lock is held only until the
--       commit that follows at once. New and updated rows are checked from then on.
--    c) After the commit, `retryq migrate` validates the existing rows (the part after
--       the "after commit" line below) under a lock that lets the runner read and write.
DO $$
DECLARE
    outside text;
BEGIN
    SELECT string_agg(format('%L (%s rows)', status, n), ', ' ORDER BY status) INTO outside
      FROM (SELECT status, count(*) AS n FROM executions
             WHERE status IS NOT NULL
               AND status NOT IN ('pending', 'running', 'completed', 'failed', 'cancelled',
                                  'retrying', 'timeout', 'error')
             GROUP BY status) AS s;
    IF outside IS NOT NULL THEN
        RAISE EXCEPTION 'retryq migration 0012 cannot widen chk_executions_status: executions holds statuses outside the new set: %', outside
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Nothing was changed. Map those rows to a status of the set (pending, running, completed, failed, cancelled, retrying, timeout, error), or add their status to this migration''s check, then run `retryq migrate` again.';
    END IF;
END
$$;
SELECT set_config('lock_timeout', '10s', true);
ALTER TABLE executions DROP CONSTRAINT IF EXISTS chk_executions_status;
ALTER TABLE executions ADD CONSTRAINT chk_executions_status
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled',
                      'retrying', 'timeout', 'error')) NOT VALID;
COMMENT ON CONSTRAINT chk_executions_status ON executions IS
    'Widened by retryq migration 0012 (retrying, timeout, error); its down migration restores the runner''s set.';

-- 3. The worker's orphan sweep: executions left 'retrying' whose job Redis lost, oldest
--    retry first (WHERE status = 'retrying' ... ORDER BY last_retry_at NULLS FIRST).
--    Partial, so it only holds the handful of rows currently being retried.
CREATE INDEX IF NOT EXISTS idx_executions_retrying
    ON executions (last_retry_at NULLS FIRST) WHERE status = 'retrying';

-- retryq: after commit
-- Runs after the commit above, in its own transaction, and again on every `retryq
-- migrate` while this is the current version. First: a later migration of the runner's
-- that rebuilds chk_executions_status without retryq's statuses would make every retry
-- fail its check, so say so. Then validate the existing rows (a no-op once validated).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'executions'::regclass AND conname = 'chk_executions_status'
                      AND pg_get_constraintdef(oid) LIKE '%''retrying''%'
                      AND pg_get_constraintdef(oid) LIKE '%''timeout''%'
                      AND pg_get_constraintdef(oid) LIKE '%''error''%') THEN
        RAISE EXCEPTION 'chk_executions_status does not admit retryq''s statuses (retrying, timeout, error): a later migration rebuilt or dropped it'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add retrying, timeout and error to the runner''s new check (docs/schema.md), or widen it again with psql -1 -v ON_ERROR_STOP=1 -f sql/migrations/0012_retry_worker.up.sql.';
    END IF;
END
$$;
ALTER TABLE executions VALIDATE CONSTRAINT chk_executions_status;
