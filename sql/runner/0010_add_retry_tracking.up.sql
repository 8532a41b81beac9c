-- Mirror of the runner's migration 0010 (retry tracking), as deployed in production.
-- It adds the retry columns and two indexes, but it does NOT widen
-- chk_executions_status: on this schema an UPDATE to 'retrying', 'timeout' or 'error'
-- fails with SQLSTATE 23514. retryq's migration 0012 (sql/migrations/) fixes that;
-- keeping this file faithful is what lets the tests prove it.

ALTER TABLE executions ADD COLUMN IF NOT EXISTS retry_count integer NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS max_retries integer NOT NULL DEFAULT 3;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS last_retry_at timestamp with time zone;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS retry_history jsonb DEFAULT '[]'::jsonb;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS original_error text;

CREATE INDEX IF NOT EXISTS idx_executions_retry_count ON executions (retry_count);
CREATE INDEX IF NOT EXISTS idx_executions_status_retry ON executions (status, retry_count)
    WHERE status IN ('failed', 'timeout', 'error');
