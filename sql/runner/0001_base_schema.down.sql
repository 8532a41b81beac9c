-- Removes the development mirror of the runner's tables (see 0001_base_schema.up.sql).
DROP TABLE IF EXISTS executions;
DROP TABLE IF EXISTS jobs;
