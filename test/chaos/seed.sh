#!/usr/bin/env bash
# Sourced by the chaos scripts (chaos.sh, faults.sh): executions as the API leaves them.
# seed_executions <job id> <n>: n executions of that job in 'retrying' (attempt 1, one
# 'retrying' history entry), regions and questions cycling over three values.
# seed_job_file <job id> <file>: the jobs of those executions, one JSON a line, as the
# runner pushes them (for `retryq enqueue --from FILE`).
seed_executions() {
  sql -v job="$1" -v n="$2" <<'SQL' >/dev/null
INSERT INTO executions (job_id, provider_id, region, status, question_id, model_id, retry_count,
                        last_retry_at, retry_history, original_error)
SELECT :job, 'router', (ARRAY['us-east','eu-west','asia-pacific'])[1 + i % 3], 'retrying',
       (ARRAY['identity_basic','math_basic','geography_basic'])[1 + i % 3], 'llama3.2-1b', 1, now(),
       jsonb_build_array(jsonb_build_object('attempt', 1, 'status', 'retrying',
                                            'timestamp', to_char(now(), 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))),
       'provider unavailable'
FROM generate_series(0, :n - 1) AS i;
SQL
}

seed_job_file() {
  sql -c "SELECT json_build_object('execution_id', id, 'region', region,
            'question_index', (id - 1) % 3, 'retry_attempt', 1)::text
          FROM executions WHERE job_id = $1 ORDER BY id" >"$2"
}
