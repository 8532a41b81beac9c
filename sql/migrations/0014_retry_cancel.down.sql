-- retryq 0014 (down): remove cancelling; 0013's functions as they were.
--
-- Executions a cancel restored stay as they are (their 'cancelled' history entries too);
-- the members' cancelled_at goes, so such members read as 'other' again. Tombstones left
-- in {Q}:cancelled are not PostgreSQL's: an older worker ignores them (the janitor of a
-- newer one trims them). No BEGIN/COMMIT here: `retryq migrate` runs this file in one
-- transaction. Idempotent.

DROP FUNCTION IF EXISTS retryq_cancel_restore(bigint[], text[], integer[], text);

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

DROP FUNCTION IF EXISTS retryq_member_state(text, integer, integer, timestamptz);
ALTER TABLE retryq_set_members DROP COLUMN IF EXISTS cancelled_at;
