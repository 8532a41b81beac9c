-- retryq 0012 (down): restore the runner's status check without failing on live rows.
--
-- The old check refuses 'retrying', 'timeout' and 'error', so rows in those statuses are
-- mapped first (docs/schema.md, "Rolling back"):
--   * status becomes 'failed' - a status the runner's API can still retry;
--   * one retry_history entry records the change: {"status": "failed", "timestamp",
--     "previous_status", "migration": "0012_retry_worker.down", "error"}; a row that was
--     'retrying' had an attempt in progress, which can now never be recorded (the worker
--     only writes to rows still 'retrying'), so its entry also carries that "attempt" and
--     closes it; a 'timeout' or 'error' row already has its attempt's outcome, so its
--     entry has no "attempt" and never counts as a second outcome;
--   * original_error, output_data, retry_count and every other column are left as they
--     are (original_error keeps the first error; a rollback is not one).
-- No BEGIN/COMMIT here: `retryq migrate` runs this file in one transaction. Idempotent.

DO $$
BEGIN
    IF to_regclass('executions') IS NULL THEN
        RETURN; -- nothing to map; the constraint statements below report the missing table
    END IF;
    IF EXISTS (SELECT 1 FROM pg_attribute
                WHERE attrelid = to_regclass('executions') AND attname = 'retry_history'
                  AND attnum > 0 AND NOT attisdropped)
       AND EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = to_regclass('executions') AND attname = 'retry_count'
                      AND attnum > 0 AND NOT attisdropped) THEN
        UPDATE executions
           SET status = 'failed',
               retry_history = coalesce(retry_history, '[]'::jsonb) || jsonb_build_array(
                   jsonb_build_object(
                       'status', 'failed',
                       'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                       'previous_status', status,
                       'migration', '0012_retry_worker.down',
                       'error', CASE WHEN status = 'retrying'
                                THEN 'retry abandoned: retryq migration 0012 was rolled back while attempt '
                                     || retry_count || ' was pending'
                                ELSE 'status ' || status || ' is not allowed without retryq migration 0012; mapped to failed'
                                END)
                   || CASE WHEN status = 'retrying'
                           THEN jsonb_build_object('attempt', retry_count)
                           ELSE '{}'::jsonb END)
         WHERE status IN ('retrying', 'timeout', 'error');
    ELSE
        -- The runner's 0010 was rolled back first: there is no history to write to.
        UPDATE executions SET status = 'failed' WHERE status IN ('retrying', 'timeout', 'error');
    END IF;
END
$$;

DROP INDEX IF EXISTS idx_executions_retrying;

SELECT set_config('lock_timeout', '10s', true);
ALTER TABLE executions DROP CONSTRAINT IF EXISTS chk_executions_status;
ALTER TABLE executions ADD CONSTRAINT chk_executions_status
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')) NOT VALID;

-- retryq: after commit
ALTER TABLE executions VALIDATE CONSTRAINT chk_executions_status;
