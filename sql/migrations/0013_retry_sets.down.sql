-- retryq 0013 (down): remove retry sets and the shared retry functions.
--
-- The sets and their members are deleted; the executions they retried are not touched
-- (a member still 'retrying' is finished by the worker as any retry is). After this,
-- retryq_submit of a retryq that has 0013 answers "run `retryq migrate`": roll back to
-- 12 only together with the retryq version before retry sets, whose submit carries its
-- own SQL. No BEGIN/COMMIT here: `retryq migrate` runs this file in one transaction.
-- Idempotent.

DROP FUNCTION IF EXISTS retryq_retry_by_filter(jsonb, bigint, integer, integer, bigint, text, text, text, boolean);
DROP TYPE IF EXISTS retryq_candidate;
DROP FUNCTION IF EXISTS retryq_set_progress(bigint[]);
DROP FUNCTION IF EXISTS retryq_set_slices(bigint[]);
DROP FUNCTION IF EXISTS retryq_member_state(text, integer, integer);
DROP TABLE IF EXISTS retryq_set_members;
DROP TABLE IF EXISTS retryq_sets;
DROP FUNCTION IF EXISTS retryq_output_tokens(jsonb, text);
DROP FUNCTION IF EXISTS retryq_question_ids(jsonb);
DROP FUNCTION IF EXISTS retryq_error_code(jsonb);
DROP FUNCTION IF EXISTS retryq_mark_retrying(bigint[], text[], text);
DROP FUNCTION IF EXISTS retryq_retry_verdict(text, integer, integer);
