-- retryq 0013 (up): the SQL of a retry in one place, and retry sets.
--
-- 1. The rules and the one UPDATE of a retry become functions that every caller runs:
--    retryq_submit (C) and Submit (Go) for one execution, retryq_submit_filter (C) and
--    SubmitFilter (Go) for many. Four callers, one text: they cannot drift apart.
-- 2. Retry sets: what one retry by filter selected and submitted (retryq_sets,
--    retryq_set_members), and their progress computed from the executions' own state
--    (retryq_set_progress), so PostgreSQL stays the record of truth.
-- Only retryq's own objects: the runner's tables are read and updated, never altered
-- (no foreign key or trigger points at executions). No BEGIN/COMMIT here: `retryq
-- migrate` runs this file in one transaction. Idempotent. See docs/schema.md.

-- What a retry request may do with an execution, from its status, retry_count and
-- max_retries (the row's own): 'retry'; 'completed' (the API answers with the stored
-- output); 'in_flight' (running, processing, retrying, queued, created: the API's 202);
-- 'not_retryable' (any status but failed, timeout, error, e.g. pending or cancelled);
-- 'at_max_retries' (retry_count >= max_retries).
CREATE OR REPLACE FUNCTION retryq_retry_verdict(p_status text, p_retry_count integer,
                                                p_max_retries integer)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_status = 'completed' THEN 'completed'
        WHEN p_status IN ('running', 'processing', 'retrying', 'queued', 'created') THEN 'in_flight'
        WHEN p_status IS NULL OR p_status NOT IN ('failed', 'timeout', 'error') THEN 'not_retryable'
        WHEN p_retry_count >= p_max_retries THEN 'at_max_retries'
        ELSE 'retry'
    END
$$;

-- The one statement that starts a retry: retry_count + 1, last_retry_at, status
-- 'retrying', one {attempt, timestamp, status: "retrying"} history entry (the timestamp
-- is the job's enqueued_at, so the two can be matched) and original_error keeping the
-- runner's failure text (output_data.error, which the worker's outcome will replace).
-- Callers lock the rows and judge them first; the verdict in the WHERE makes a row that
-- is not retryable unchangeable even so. Returns the new retry_count (the job's attempt)
-- of each row changed.
CREATE OR REPLACE FUNCTION retryq_mark_retrying(p_ids bigint[], p_regions text[], p_timestamp text)
RETURNS TABLE (execution_id bigint, retry_count integer) LANGUAGE sql VOLATILE AS $$
    UPDATE executions e
       SET retry_count = e.retry_count + 1, last_retry_at = now(), status = 'retrying',
           original_error = coalesce(e.original_error, e.output_data->>'error'),
           retry_history = coalesce(e.retry_history, '[]'::jsonb) || jsonb_build_array(
               jsonb_build_object('attempt', e.retry_count + 1, 'timestamp', p_timestamp,
                                  'status', 'retrying'))
      FROM unnest(p_ids, p_regions) AS t(id, region)
     WHERE e.id = t.id AND e.region = t.region
       AND retryq_retry_verdict(e.status, e.retry_count, e.max_retries) = 'retry'
    RETURNING e.id::bigint, e.retry_count
$$;

-- The error code of an execution's output_data: failure.code (the runner's and the
-- worker's document: ROUTER_TIMEOUT, ROUTER_HTTP_503, ..., or retryq's own bad_job_spec,
-- poison, ...), else the top-level error_code. NULL when there is none.
CREATE OR REPLACE FUNCTION retryq_error_code(p_output jsonb)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(p_output->'failure'->>'code', p_output->>'error_code')
$$;

-- The question ids of a job spec, in order: its top-level questions (ids, or objects with
-- an id). A job's question_index is the position of the row's question_id among them
-- (from 0); the worker takes the row's question_id anyway and the index is only its
-- cross-check, so an id the spec does not list gets 0. A row without a question_id has
-- no index that retryq could know.
CREATE OR REPLACE FUNCTION retryq_question_ids(p_spec jsonb)
RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(p_spec->'questions') = 'array' THEN ARRAY(
        SELECT coalesce(q.v->>'id', q.v #>> '{}')
          FROM jsonb_array_elements(p_spec->'questions') WITH ORDINALITY AS q(v, ord)
         ORDER BY q.ord) END
$$;

-- Token usage of a successful output (the worker keeps the router's metadata): `in` or
-- `out`, from metadata.tokens_in/tokens_out, else metadata.usage.prompt_tokens/
-- completion_tokens, else metadata.usage.input_tokens/output_tokens. NULL when none is a
-- JSON number.
CREATE OR REPLACE FUNCTION retryq_output_tokens(p_output jsonb, p_direction text)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'number' THEN (v #>> '{}')::numeric END
      FROM (SELECT coalesce(
                p_output #> ARRAY['metadata', 'tokens_' || p_direction],
                p_output #> ARRAY['metadata', 'usage',
                                  CASE p_direction WHEN 'in' THEN 'prompt_tokens' ELSE 'completion_tokens' END],
                p_output #> ARRAY['metadata', 'usage', p_direction || 'put_tokens']) AS v) AS t
$$;

-- ------------------------------------------------------------------ retry sets

CREATE TABLE IF NOT EXISTS retryq_sets (
    id bigserial PRIMARY KEY,
    name text,
    filter jsonb NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE retryq_sets IS
    'retryq: one retry by filter (retryq retry --job ...): its filter, who and when (migration 0013).';

-- One row per execution a set retried. attempt is the retry_count the retry gave it;
-- previous_status the status it had before (failed, timeout or error), kept so that a
-- cancel can put it back. No foreign key to executions: the runner's table stays as it is.
CREATE TABLE IF NOT EXISTS retryq_set_members (
    set_id bigint NOT NULL REFERENCES retryq_sets (id) ON DELETE CASCADE,
    execution_id bigint NOT NULL,
    region varchar(100) NOT NULL,
    attempt integer NOT NULL CHECK (attempt >= 1),
    previous_status varchar(50) NOT NULL,
    PRIMARY KEY (set_id, execution_id)
);
COMMENT ON TABLE retryq_set_members IS
    'retryq: the executions a retry set retried, at which attempt, and their status before (migration 0013).';
CREATE INDEX IF NOT EXISTS idx_retryq_set_members_execution ON retryq_set_members (execution_id);

-- Where a member (execution, attempt) stands, from the execution itself: 'open' (still
-- retrying at this attempt), 'completed', 'failed' (failed, timeout or error at this
-- attempt), 'superseded' (a later retry took over: retry_count > attempt), 'cancelled',
-- 'other' (the row is gone, or holds a status or count no retry leads to).
CREATE OR REPLACE FUNCTION retryq_member_state(p_status text, p_retry_count integer, p_attempt integer)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_retry_count IS NULL OR p_retry_count < p_attempt THEN 'other'
        WHEN p_retry_count > p_attempt THEN 'superseded'
        WHEN p_status = 'retrying' THEN 'open'
        WHEN p_status = 'completed' THEN 'completed'
        WHEN p_status IN ('failed', 'timeout', 'error') THEN 'failed'
        WHEN p_status = 'cancelled' THEN 'cancelled'
        ELSE 'other'
    END
$$;

-- The progress of the given sets' members of one model in one region, and of each whole
-- set. finished_last_minute counts members whose outcome the worker wrote in the last
-- minute (the worker sets completed_at with every outcome; executions have no
-- updated_at): the rate behind an ETA. Functions, not views: a view would pin the
-- runner's columns (no migration of the runner's could drop or retype them), a function
-- body does not.
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
     CROSS JOIN LATERAL (SELECT retryq_member_state(e.status, e.retry_count, m.attempt) AS state) AS s
     WHERE m.set_id = ANY (p_sets)
     GROUP BY m.set_id, e.model_id, m.region
$$;

CREATE OR REPLACE FUNCTION retryq_set_progress(p_sets bigint[])
RETURNS TABLE (set_id bigint, total bigint, open bigint, completed bigint, failed bigint,
               superseded bigint, cancelled bigint, other bigint, finished_last_minute bigint)
LANGUAGE sql STABLE AS $$
    SELECT p.set_id, sum(p.total)::bigint, sum(p.open)::bigint, sum(p.completed)::bigint,
           sum(p.failed)::bigint, sum(p.superseded)::bigint, sum(p.cancelled)::bigint,
           sum(p.other)::bigint, sum(p.finished_last_minute)::bigint
      FROM retryq_set_slices(p_sets) AS p
     GROUP BY p.set_id
$$;

-- ------------------------------------------------------------------ retry by filter

-- One selected execution and what became of it (the rows of retryq_retry_by_filter).
DO $$
BEGIN
    IF to_regtype('retryq_candidate') IS NULL THEN
        CREATE TYPE retryq_candidate AS (
            set_id bigint,            -- the set the chunk's retries joined (NULL: none)
            execution_id bigint,
            region text,
            question_index integer,   -- the question_id's place in the spec (retryq_question_ids),
                                      -- 0 when not listed, NULL without a question_id
            verdict text,             -- 'retry', or why not: at_max_retries, in_flight, locked,
                                      -- not_retryable, no_question_id
            attempt integer,          -- the new retry_count when it was retried, else NULL
            status text,              -- as found (before the retry)
            retry_count integer,      -- as found
            max_retries integer,
            model_id text,
            question_id text,
            error_code text,          -- retryq_error_code(output_data)
            failed_at timestamp       -- coalesce(completed_at, created_at)
        );
    END IF;
END
$$;

-- One chunk of a retry by filter, in the caller's transaction. Selects up to p_size
-- executions after id p_after (in id order) that match p_filter, locks each one that no
-- other transaction holds (FOR UPDATE SKIP LOCKED: a concurrent single retry is never
-- blocked, and the row it holds is its to retry: 'locked'), judges the locked rows again
-- as they are now (retryq_retry_verdict), retries at most p_want of them (NULL: all) with
-- retryq_mark_retrying, and records them as members of set p_set, created on the first
-- retry when p_set is NULL (name p_set_name, by p_created_by). Returns every selected row
-- up to the p_want-th retried one. With p_dry_run nothing is locked or written.
--
-- p_filter: {"job": jobspec_id, "model", "region", "statuses": [failed|timeout|error...]
-- (default all three), "error_code", "since", "until" (RFC 3339; on the time the
-- execution failed: coalesce(completed_at, created_at), compared in the session's time
-- zone, in which the runner writes these columns with now())}; job or since is required.
-- Other keys (limit, ...) are kept in the set's filter and ignored here.
CREATE OR REPLACE FUNCTION retryq_retry_by_filter(
    p_filter jsonb, p_after bigint, p_size integer, p_want integer, p_set bigint,
    p_set_name text, p_created_by text, p_timestamp text, p_dry_run boolean)
RETURNS SETOF retryq_candidate
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_custom_plan -- the absent filters fold away in each chunk's plan
AS $$
DECLARE
    v_job text := p_filter->>'job';
    v_job_id integer;
    v_model text := p_filter->>'model';
    v_region text := p_filter->>'region';
    v_code text := p_filter->>'error_code';
    v_since timestamp;
    v_until timestamp;
    v_statuses text[] := ARRAY['failed', 'timeout', 'error'];
    v_candidates bigint[];
    v_locked bigint[];
    v_rows retryq_candidate[];
    v_ids bigint[];
    v_attempts integer[];
    v_set bigint := p_set;
BEGIN
    IF jsonb_typeof(p_filter) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the filter must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_filter ? 'statuses' THEN
        IF jsonb_typeof(p_filter->'statuses') IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'statuses must be an array'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_statuses := ARRAY(SELECT jsonb_array_elements_text(p_filter->'statuses'));
    END IF;
    IF cardinality(v_statuses) = 0 OR NOT v_statuses <@ ARRAY['failed', 'timeout', 'error'] THEN
        RAISE EXCEPTION 'statuses must be among failed, timeout and error (got %)',
            array_to_string(v_statuses, ', ') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_since := (p_filter->>'since')::timestamptz AT TIME ZONE current_setting('TimeZone');
    v_until := (p_filter->>'until')::timestamptz AT TIME ZONE current_setting('TimeZone');
    IF v_job IS NULL AND v_since IS NULL THEN
        RAISE EXCEPTION 'give a job (jobspec_id) or a since time'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_size IS NULL OR p_size < 1 OR p_size > 5000 THEN
        RAISE EXCEPTION 'the chunk size must be from 1 to 5000 (got %)', p_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_job IS NOT NULL THEN
        SELECT j.id INTO v_job_id FROM jobs j WHERE j.jobspec_id = v_job;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no job with jobspec_id %', quote_literal(v_job)
                USING ERRCODE = 'no_data_found';
        END IF;
    END IF;

    -- 1. The chunk's candidates, from the statement's snapshot.
    v_candidates := ARRAY(
        SELECT e.id FROM executions e
         WHERE e.id > p_after AND e.status = ANY (v_statuses)
           AND (v_job_id IS NULL OR e.job_id = v_job_id)
           AND (v_model IS NULL OR e.model_id = v_model)
           AND (v_region IS NULL OR e.region = v_region)
           AND (v_code IS NULL OR retryq_error_code(e.output_data) = v_code)
           AND (v_since IS NULL OR coalesce(e.completed_at, e.created_at) >= v_since)
           AND (v_until IS NULL OR coalesce(e.completed_at, e.created_at) < v_until)
         ORDER BY e.id LIMIT p_size);

    -- 2. Lock what nobody else holds; a row held elsewhere is that transaction's.
    IF p_dry_run THEN
        v_locked := v_candidates;
    ELSE
        v_locked := ARRAY(SELECT e.id FROM executions e WHERE e.id = ANY (v_candidates)
                             FOR UPDATE SKIP LOCKED);
    END IF;

    -- 3. Judge each row as it is now (a new statement: it sees what committed meanwhile,
    --    and a locked row cannot change), then cut after the p_want-th retry. The job
    --    specs' question ids are read once per job, not once per row.
    WITH specs AS MATERIALIZED (
        SELECT j.id, retryq_question_ids(j.jobspec_data) AS ids FROM jobs j
         WHERE j.id IN (SELECT e.job_id FROM executions e WHERE e.id = ANY (v_candidates)))
    SELECT array_agg(ROW(NULL, c.execution_id, c.region, c.question_index, c.verdict, NULL,
                         c.status, c.retry_count, c.max_retries, c.model_id, c.question_id,
                         c.error_code, c.failed_at)::retryq_candidate ORDER BY c.execution_id)
      INTO v_rows
      FROM (SELECT k.*, count(*) FILTER (WHERE k.verdict = 'retry')
                            OVER (ORDER BY k.execution_id) AS retries
              FROM (SELECT c.id AS execution_id, e.region::text AS region,
                           CASE WHEN e.question_id IS NOT NULL
                                THEN coalesce(array_position(q.ids, e.question_id::text) - 1, 0)
                           END AS question_index,
                           CASE WHEN NOT (c.id = ANY (v_locked)) THEN 'locked'
                                WHEN e.id IS NULL THEN 'not_retryable'
                                ELSE CASE retryq_retry_verdict(e.status, e.retry_count, e.max_retries)
                                    WHEN 'retry' THEN
                                        CASE WHEN NOT (e.status = ANY (v_statuses)) THEN 'not_retryable'
                                             WHEN e.question_id IS NULL THEN 'no_question_id'
                                             ELSE 'retry' END
                                    WHEN 'completed' THEN 'not_retryable'
                                    ELSE retryq_retry_verdict(e.status, e.retry_count, e.max_retries)
                                END
                           END AS verdict,
                           e.status::text AS status, e.retry_count, e.max_retries,
                           e.model_id::text AS model_id, e.question_id::text AS question_id,
                           retryq_error_code(e.output_data) AS error_code,
                           coalesce(e.completed_at, e.created_at) AS failed_at
                      FROM unnest(v_candidates) AS c(id)
                      LEFT JOIN executions e ON e.id = c.id
                      LEFT JOIN specs q ON q.id = e.job_id) AS k) AS c
     WHERE p_want IS NULL OR c.retries < p_want OR (c.retries = p_want AND c.verdict = 'retry');

    -- 4. Retry the rows judged 'retry', and record them in the set.
    IF NOT p_dry_run AND EXISTS (SELECT 1 FROM unnest(v_rows) AS r WHERE r.verdict = 'retry') THEN
        IF v_set IS NULL THEN
            INSERT INTO retryq_sets (name, filter, created_by)
            VALUES (p_set_name, p_filter, coalesce(p_created_by, current_user))
            RETURNING id INTO v_set;
        END IF;
        SELECT array_agg(m.execution_id), array_agg(m.retry_count) INTO v_ids, v_attempts
          FROM retryq_mark_retrying(
                   ARRAY(SELECT r.execution_id FROM unnest(v_rows) AS r
                          WHERE r.verdict = 'retry' ORDER BY r.execution_id),
                   ARRAY(SELECT r.region FROM unnest(v_rows) AS r
                          WHERE r.verdict = 'retry' ORDER BY r.execution_id),
                   p_timestamp) AS m;
        INSERT INTO retryq_set_members (set_id, execution_id, region, attempt, previous_status)
        SELECT v_set, r.execution_id, r.region, m.attempt, r.status
          FROM unnest(v_rows) AS r
          JOIN unnest(v_ids, v_attempts) AS m(execution_id, attempt) USING (execution_id);
    END IF;

    RETURN QUERY
    SELECT CASE WHEN m.attempt IS NOT NULL THEN v_set END, r.execution_id, r.region,
           r.question_index,
           CASE WHEN r.verdict = 'retry' AND NOT p_dry_run AND m.attempt IS NULL
                THEN 'not_retryable' ELSE r.verdict END,
           m.attempt, r.status, r.retry_count, r.max_retries, r.model_id, r.question_id,
           r.error_code, r.failed_at
      FROM unnest(v_rows) AS r
      LEFT JOIN unnest(v_ids, v_attempts) AS m(execution_id, attempt) USING (execution_id)
     ORDER BY r.execution_id;
END
$$;
