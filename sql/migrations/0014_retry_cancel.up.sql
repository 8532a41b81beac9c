-- retryq 0014 (up): cancelling retries (retryq cancel, retryq sets cancel).
--
-- A cancel decides in Redis which jobs will never run (a tombstone in {Q}:cancelled that
-- the worker's pop respects; docs/reliability.md), then puts their executions back as
-- they were before the retry, with these functions:
-- 1. retryq_mark_retrying (0013's, replaced) records in its 'retrying' history entry what
--    a cancel needs to undo it: previous_status, previous_last_retry_at, and whether it
--    filled original_error (original_error_filled); and the last_retry_at it set (the
--    database's now(); the entry's timestamp is the job's enqueued_at, the client's clock),
--    which a cancel of a later retry made by the runner's API puts back. Extra keys of an
--    entry are ignored by the runner, whose entries are {attempt, timestamp, status, error?}.
-- 2. retryq_cancel_restore: the guarded restore of one chunk, with a 'cancelled' entry.
-- 3. retryq_set_members.cancelled_at, and retryq_member_state with it, so a set reports
--    its cancelled members as 'cancelled' (the restored row alone would read as 'other').
-- Only retryq's own objects; the runner's tables are updated, never altered. No
-- BEGIN/COMMIT here: `retryq migrate` runs this file in one transaction. Idempotent.

CREATE OR REPLACE FUNCTION retryq_mark_retrying(p_ids bigint[], p_regions text[], p_timestamp text)
RETURNS TABLE (execution_id bigint, retry_count integer) LANGUAGE sql VOLATILE AS $$
    UPDATE executions e
       SET retry_count = e.retry_count + 1, last_retry_at = now(), status = 'retrying',
           original_error = coalesce(e.original_error, e.output_data->>'error'),
           retry_history = coalesce(e.retry_history, '[]'::jsonb) || jsonb_build_array(
               jsonb_build_object('attempt', e.retry_count + 1, 'timestamp', p_timestamp,
                                  'status', 'retrying',
                                  'previous_status', e.status,
                                  'previous_last_retry_at', e.last_retry_at,
                                  'last_retry_at', now(),
                                  'original_error_filled',
                                  e.original_error IS NULL AND e.output_data->>'error' IS NOT NULL))
      FROM unnest(p_ids, p_regions) AS t(id, region)
     WHERE e.id = t.id AND e.region = t.region
       AND retryq_retry_verdict(e.status, e.retry_count, e.max_retries) = 'retry'
    RETURNING e.id::bigint, e.retry_count
$$;

ALTER TABLE retryq_set_members ADD COLUMN IF NOT EXISTS cancelled_at timestamptz;
COMMENT ON COLUMN retryq_set_members.cancelled_at IS
    'retryq: when a cancel put this member''s execution back as it was before the retry (migration 0014).';

-- A member's state as in 0013, and 'cancelled' once a cancel restored it (whatever the
-- execution did afterwards: a new retry of it belongs to whoever made it).
CREATE OR REPLACE FUNCTION retryq_member_state(p_status text, p_retry_count integer, p_attempt integer,
                                               p_cancelled_at timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_cancelled_at IS NOT NULL THEN 'cancelled'
                ELSE retryq_member_state(p_status, p_retry_count, p_attempt) END
$$;

CREATE OR REPLACE FUNCTION retryq_set_slices(p_sets bigint[])
RETURNS TABLE (set_id bigint, model_id text, region text, total bigint, open bigint,
               completed bigint, failed bigint, superseded bigint, cancelled bigint,
               other bigint, finished_last_minute bigint)
LANGUAGE sql STABLE AS $$
    SELECT m.set_id, e.model_id::text, m.region::text,
           count(*),
           count(*) FILTER (WHERE s.state = 'open'),
           count(*) FILTER (WHERE s.state = 'completed'),
           count(*) FILTER (WHERE s.state = 'failed'),
           count(*) FILTER (WHERE s.state = 'superseded'),
           count(*) FILTER (WHERE s.state = 'cancelled'),
           count(*) FILTER (WHERE s.state = 'other'),
           count(*) FILTER (WHERE s.state IN ('completed', 'failed')
                              AND e.completed_at >= localtimestamp - interval '1 minute')
      FROM retryq_set_members m
      LEFT JOIN executions e ON e.id = m.execution_id
     CROSS JOIN LATERAL (SELECT retryq_member_state(e.status, e.retry_count, m.attempt,
                                                    m.cancelled_at) AS state) AS s
     WHERE m.set_id = ANY (p_sets)
     GROUP BY m.set_id, e.model_id, m.region
$$;

-- Puts executions back as they were before retry `attempt`, whose job a cancel stopped
-- in Redis. Each row is locked; only a row still 'retrying' at that attempt changes (the
-- worker's outcome guard in reverse: a row the worker finished, or a later retry took,
-- is left as it is: 'finished'). A restored row gets
--   status        the status before the retry: the retrying entry's previous_status, else
--                 the status a retry set recorded for the member, else the status of the
--                 last outcome (failed, timeout, error) of attempt - 1, else 'failed'
--                 (a retry is only ever made from failed, timeout or error);
--   retry_count   attempt - 1: the attempt that did not run does not count;
--   last_retry_at the entry's previous_last_retry_at when recorded; else, for attempt 1,
--                 NULL (a row never retried has none); else what the retrying entry of
--                 attempt - 1 recorded as its last_retry_at (retryq's), else that entry's
--                 timestamp (the runner's), else unchanged (a value that is not a
--                 timestamp counts as none: a foreign entry cannot make the cancel fail);
--   original_error NULL again when the retry filled it (original_error_filled);
--   retry_history one {attempt, timestamp: p_timestamp, status: "cancelled"} entry more;
-- output_data and every other column are untouched. Set members of that execution and
-- attempt get cancelled_at. Returns one row per input: outcome 'cancelled' (with the
-- restored status), 'finished' (with the status found) or 'not_found'.
CREATE OR REPLACE FUNCTION retryq_cancel_restore(p_ids bigint[], p_regions text[],
                                                 p_attempts integer[], p_timestamp text)
RETURNS TABLE (execution_id bigint, region text, attempt integer, outcome text, status text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    r record;
    e record;
    h jsonb;
    v_status text;
    v_last timestamptz;
    v_text text;
BEGIN
    FOR r IN SELECT t.id, t.region, t.attempt
               FROM unnest(p_ids, p_regions, p_attempts) AS t(id, region, attempt) ORDER BY t.id
    LOOP
        execution_id := r.id;
        region := r.region;
        attempt := r.attempt;
        SELECT x.status, x.retry_count, x.last_retry_at, x.retry_history INTO e
          FROM executions x WHERE x.id = r.id AND x.region = r.region FOR UPDATE;
        IF NOT FOUND THEN
            outcome := 'not_found';
            status := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF e.status IS DISTINCT FROM 'retrying' OR e.retry_count IS DISTINCT FROM r.attempt THEN
            outcome := 'finished';
            status := e.status;
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- The newest retrying entry of this attempt (retryq's carries what to restore).
        SELECT x.v INTO h
          FROM jsonb_array_elements(CASE WHEN jsonb_typeof(e.retry_history) = 'array'
                                         THEN e.retry_history ELSE '[]'::jsonb END)
               WITH ORDINALITY AS x(v, ord)
         WHERE x.v->>'status' = 'retrying' AND x.v->>'attempt' = r.attempt::text
         ORDER BY x.ord DESC LIMIT 1;
        v_status := h->>'previous_status';
        IF v_status IS NULL OR v_status NOT IN ('failed', 'timeout', 'error') THEN
            SELECT m.previous_status INTO v_status FROM retryq_set_members m
             WHERE m.execution_id = r.id AND m.attempt = r.attempt AND m.cancelled_at IS NULL
               AND m.previous_status IN ('failed', 'timeout', 'error')
             ORDER BY m.set_id DESC LIMIT 1;
        END IF;
        IF v_status IS NULL THEN
            SELECT x.v->>'status' INTO v_status
              FROM jsonb_array_elements(CASE WHEN jsonb_typeof(e.retry_history) = 'array'
                                             THEN e.retry_history ELSE '[]'::jsonb END)
                   WITH ORDINALITY AS x(v, ord)
             WHERE x.v->>'attempt' = (r.attempt - 1)::text
               AND x.v->>'status' IN ('failed', 'timeout', 'error')
             ORDER BY x.ord DESC LIMIT 1;
        END IF;
        v_status := coalesce(v_status, 'failed');
        IF h IS NOT NULL AND h ? 'previous_last_retry_at' THEN
            v_last := (h->>'previous_last_retry_at')::timestamptz;
        ELSIF r.attempt = 1 THEN
            v_last := NULL;
        ELSE
            SELECT coalesce(x.v->>'last_retry_at', x.v->>'timestamp') INTO v_text
              FROM jsonb_array_elements(CASE WHEN jsonb_typeof(e.retry_history) = 'array'
                                             THEN e.retry_history ELSE '[]'::jsonb END)
                   WITH ORDINALITY AS x(v, ord)
             WHERE x.v->>'status' = 'retrying' AND x.v->>'attempt' = (r.attempt - 1)::text
             ORDER BY x.ord DESC LIMIT 1;
            BEGIN
                v_last := v_text::timestamptz;
            EXCEPTION WHEN data_exception THEN
                v_last := NULL;
            END;
            v_last := coalesce(v_last, e.last_retry_at);
        END IF;
        UPDATE executions x
           SET status = v_status, retry_count = r.attempt - 1, last_retry_at = v_last,
               original_error = CASE WHEN (h->>'original_error_filled')::boolean IS TRUE
                                     THEN NULL ELSE x.original_error END,
               retry_history = coalesce(x.retry_history, '[]'::jsonb) || jsonb_build_array(
                   jsonb_build_object('attempt', r.attempt, 'timestamp', p_timestamp,
                                      'status', 'cancelled'))
         WHERE x.id = r.id;
        UPDATE retryq_set_members m SET cancelled_at = now()
         WHERE m.execution_id = r.id AND m.attempt = r.attempt AND m.cancelled_at IS NULL;
        outcome := 'cancelled';
        status := v_status;
        RETURN NEXT;
    END LOOP;
END
$$;
