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

-- 2. Widen the status check. The old set stays; retryq adds exactly the statuses that
--    retryq and the runner's retry handler write: 'retrying' (a retry is queued or
--    running), 'timeout' (the router did not answer in time) and 'error' (which the
--    runner's 0010 index and retry handler already treat as retryable). Statuses the
--    API merely tolerates as "in flight" ('processing', 'queued', 'created') are not
--    added: nothing writes them to executions.
ALTER TABLE executions DROP CONSTRAINT IF EXISTS chk_executions_status;
ALTER TABLE executions ADD CONSTRAINT chk_executions_status
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled',
                      'retrying', 'timeout', 'error'));
COMMENT ON CONSTRAINT chk_executions_status ON executions IS
    'Widened by retryq migration 0012 (retrying, timeout, error); its down migration restores the runner''s set.';

-- 3. The worker's orphan sweep: executions left 'retrying' whose job Redis lost, oldest
--    retry first (WHERE status = 'retrying' ... ORDER BY last_retry_at NULLS FIRST).
--    Partial, so it only holds the handful of rows currently being retried.
CREATE INDEX IF NOT EXISTS idx_executions_retrying
    ON executions (last_retry_at NULLS FIRST) WHERE status = 'retrying';
