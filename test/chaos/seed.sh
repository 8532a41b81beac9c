#!/usr/bin/env bash
# Sourced by the chaos scripts (chaos.sh, faults.sh): executions as the API leaves them.
# seed_executions <job id> <n>: n executions of that job in 'retrying' (attempt 1, one
# 'retrying' history entry), regions and questions cycling over three values.
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
