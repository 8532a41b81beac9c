-- The runner's `jobs` and `executions` tables as they stand after the runner's own
-- migrations up to 0009 (init, indexes and status checks, question_id, multi-model,
-- response classification). This is a development and test mirror of the production
-- schema described in docs/schema.md; retryq never applies it to a real database.
-- Column names, types, defaults and the constraint name chk_executions_status must
-- stay identical to production: retryq's migration 0012 replaces that constraint by name.

CREATE TABLE IF NOT EXISTS jobs (
    id           serial PRIMARY KEY,
    jobspec_id   varchar(255) NOT NULL UNIQUE,
    jobspec_data jsonb NOT NULL,
    status       varchar(50) DEFAULT 'queued',
    created_at   timestamp without time zone DEFAULT now(),
    updated_at   timestamp without time zone DEFAULT now(),
    CONSTRAINT chk_jobs_status
        CHECK (status IN ('created', 'queued', 'running', 'completed', 'failed', 'cancelled'))
);

CREATE TABLE IF NOT EXISTS executions (
    id           serial PRIMARY KEY,
    job_id       integer REFERENCES jobs (id),
    provider_id  varchar(255) NOT NULL,
    region       varchar(100) NOT NULL,
    status       varchar(50) DEFAULT 'pending',
    started_at   timestamp without time zone,
    completed_at timestamp without time zone,
    output_data  jsonb,
    receipt_data jsonb,
    created_at   timestamp without time zone DEFAULT now(),
    -- later runner migrations: per-question rows and the model each row holds
    question_id  varchar(255),
    model_id     varchar(50) DEFAULT 'llama3.2-1b',
    -- runner migration 0009: response classification
    is_substantive          boolean DEFAULT false,
    is_content_refusal      boolean DEFAULT false,
    is_technical_error      boolean DEFAULT false,
    response_classification varchar(50) DEFAULT 'unknown',
    response_length         integer DEFAULT 0,
    system_prompt           text,
    -- No updated_at column: executions never had one.
    CONSTRAINT chk_executions_status
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled'))
);

CREATE INDEX IF NOT EXISTS idx_jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS idx_executions_job_id ON executions (job_id);
CREATE INDEX IF NOT EXISTS idx_executions_status ON executions (status);
CREATE INDEX IF NOT EXISTS idx_executions_region ON executions (region);
CREATE INDEX IF NOT EXISTS idx_executions_model_region ON executions (model_id, region);
CREATE INDEX IF NOT EXISTS idx_executions_dedup_with_question
    ON executions (job_id, region, model_id, question_id);
