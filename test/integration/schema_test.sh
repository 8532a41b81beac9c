#!/usr/bin/env bash
# The development schema (sql/runner) mirrors the runner's production tables column for
# column (docs/schema.md, /work/shared/beacon-schema.md): types, lengths, defaults,
# nullability, no updated_at on executions, the narrow chk_executions_status and the
# 0010 indexes. The services harness built what the tests rely on: retryq_template
# unmigrated, retryq migrated, Redis with AOF (everysec) on loopback. The migration
# files applied by psql (-1, ON_ERROR_STOP) are idempotent both ways.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../support/lib.sh
source "$here/../support/lib.sh"
need_env RETRYQ_TEST_ADMIN_URL RETRYQ_TEST_PG_HOST RETRYQ_TEST_PG_PORT RETRYQ_TEST_REDIS_URL RETRYQ_TEST_TEMPLATE_DB
root=$(cd "$here/../.." && pwd)
base="postgresql://retryq@${RETRYQ_TEST_PG_HOST}:${RETRYQ_TEST_PG_PORT}"

columns() { # <db> <table>: name|type|length|default|nullable, sorted by name
  psql "$base/$1" -X -At -F'|' -v t="$2" <<'SQL'
SELECT column_name, data_type, coalesce(character_maximum_length::text, '-'),
       coalesce(column_default, '-'), is_nullable
  FROM information_schema.columns WHERE table_name = :'t' ORDER BY column_name;
SQL
}

status_check() { # <db>
  psql "$base/$1" -X -At -c "SELECT pg_get_constraintdef(oid) FROM pg_constraint
    WHERE conrelid = 'executions'::regclass AND conname = 'chk_executions_status'" |
    grep -o "'[a-z]*'" | tr -d "'" | sort | paste -sd, -
}

expected_executions="completed_at|timestamp without time zone|-|-|YES
created_at|timestamp without time zone|-|now()|YES
id|integer|-|nextval('executions_id_seq'::regclass)|NO
is_content_refusal|boolean|-|false|YES
is_substantive|boolean|-|false|YES
is_technical_error|boolean|-|false|YES
job_id|integer|-|-|YES
last_retry_at|timestamp with time zone|-|-|YES
max_retries|integer|-|3|NO
model_id|character varying|50|'llama3.2-1b'::character varying|YES
original_error|text|-|-|YES
output_data|jsonb|-|-|YES
provider_id|character varying|255|-|NO
question_id|character varying|255|-|YES
receipt_data|jsonb|-|-|YES
region|character varying|100|-|NO
response_classification|character varying|50|'unknown'::character varying|YES
response_length|integer|-|0|YES
retry_count|integer|-|0|NO
retry_history|jsonb|-|'[]'::jsonb|YES
started_at|timestamp without time zone|-|-|YES
status|character varying|50|'pending'::character varying|YES
system_prompt|text|-|-|YES"
expected_jobs="created_at|timestamp without time zone|-|now()|YES
id|integer|-|nextval('jobs_id_seq'::regclass)|NO
jobspec_data|jsonb|-|-|NO
jobspec_id|character varying|255|-|NO
status|character varying|50|'queued'::character varying|YES
updated_at|timestamp without time zone|-|now()|YES"

tmpl=$RETRYQ_TEST_TEMPLATE_DB
check_eq "executions mirrors the runner's columns" "$expected_executions" "$(columns "$tmpl" executions)"
check_eq "jobs mirrors the runner's columns" "$expected_jobs" "$(columns "$tmpl" jobs)"
check_eq "executions has no updated_at" "" "$(columns "$tmpl" executions | grep '^updated_at|' || true)"
check_eq "jobspec_id is unique" "1" "$(psql "$base/$tmpl" -X -At -c "SELECT count(*) FROM pg_constraint
  WHERE conrelid = 'jobs'::regclass AND contype = 'u' AND pg_get_constraintdef(oid) = 'UNIQUE (jobspec_id)'")"
check_eq "executions.job_id references jobs" "1" "$(psql "$base/$tmpl" -X -At -c "SELECT count(*) FROM pg_constraint
  WHERE conrelid = 'executions'::regclass AND contype = 'f' AND confrelid = 'jobs'::regclass")"
check_eq "jobs status check" "cancelled,completed,created,failed,queued,running" "$(psql "$base/$tmpl" -X -At -c \
  "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'chk_jobs_status'" |
  grep -o "'[a-z]*'" | tr -d "'" | sort | paste -sd, -)"
check_eq "template: the runner's narrow status check" "cancelled,completed,failed,pending,running" "$(status_check "$tmpl")"
check_eq "template: the runner's 0010 partial index" "1" "$(psql "$base/$tmpl" -X -At -c "SELECT count(*) FROM pg_indexes
  WHERE indexname = 'idx_executions_status_retry' AND indexdef LIKE '%(status, retry_count)%WHERE%failed%timeout%error%'")"
check_eq "template: the runner's 0010 retry_count index" "1" "$(psql "$base/$tmpl" -X -At -c "SELECT count(*) FROM pg_indexes
  WHERE indexname = 'idx_executions_retry_count'")"
check_eq "template: no retryq sweep index" "0" "$(psql "$base/$tmpl" -X -At -c "SELECT count(*) FROM pg_indexes
  WHERE indexname = 'idx_executions_retrying'")"
check_eq "retryq db: migrated by services.sh" "cancelled,completed,error,failed,pending,retrying,running,timeout" \
  "$(status_check retryq)"

# The files as an operator would apply them with psql: twice up, twice down, up again.
new_db() { # a bare clone, no `retryq migrate` (lib.sh's new_database migrates)
  local name="t_schema_$$_${#t_dbs[@]}"
  psql "$RETRYQ_TEST_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$name\" TEMPLATE \"$tmpl\"" >/dev/null
  t_dbs+=("$name")
  DB="$base/$name"
}
apply() { psql "$DB" -X -q -1 -v ON_ERROR_STOP=1 -c 'SET client_min_messages = warning' -f "$1" >/dev/null; }
new_db
up=$root/sql/migrations/0012_retry_worker.up.sql
down=$root/sql/migrations/0012_retry_worker.down.sql
check "psql: up applies" apply "$up"
check "psql: up applies again" apply "$up"
check_eq "psql: widened once" "cancelled,completed,error,failed,pending,retrying,running,timeout" "$(status_check "${DB##*/}")"
sql -c "INSERT INTO jobs (jobspec_id, jobspec_data) VALUES ('s', '{}')" >/dev/null
sql -c "INSERT INTO executions (job_id, provider_id, region, status, retry_count) VALUES (1, 'p', 'US', 'retrying', 1)" >/dev/null
check "psql: down applies with a retrying row" apply "$down"
check "psql: down applies again" apply "$down"
check_eq "psql: retrying row mapped" "failed|1|retrying" "$(sql -F'|' -c \
  "SELECT status, retry_count, retry_history->-1->>'previous_status' FROM executions")"
check_eq "psql: narrow again" "cancelled,completed,failed,pending,running" "$(status_check "${DB##*/}")"
check "psql: up after down" apply "$up"

# The Redis the harness started: AOF every second, loopback only.
rconf() { redis-cli -u "$RETRYQ_TEST_REDIS_URL" --no-auth-warning CONFIG GET "$1" | sed -n 2p; }
check_eq "redis appendonly" "yes" "$(rconf appendonly)"
check_eq "redis appendfsync" "everysec" "$(rconf appendfsync)"
check_eq "redis bind" "127.0.0.1" "$(rconf bind)"
check_eq "redis maxmemory-policy" "noeviction" "$(rconf maxmemory-policy)"
check_eq "postgres max_connections" "200" "$(psql "$RETRYQ_TEST_ADMIN_URL" -X -At -c 'SHOW max_connections')"

t_finish
