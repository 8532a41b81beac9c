/*
 * Questions: turns an execution's question (its own question_id, or question_index into
 * the job spec) into prompt text through the question bank, and builds the router's
 * request body. Pure functions: no I/O besides loading the bank file at start-up.
 */
#ifndef RETRYQ_WORKER_QUESTION_H
#define RETRYQ_WORKER_QUESTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define QUESTION_BANK_MAX_BYTES (4 * 1024 * 1024)

typedef struct question_bank question_bank_t;

/* Loads a JSON object {"id": "text", ...} (or {"questions": {...}}) from path; NULL path
 * gives the built-in bank (the runner's eight known ids). NULL on error with err filled. */
question_bank_t *question_bank_load(const char *path, char *err, size_t errcap);
void question_bank_free(question_bank_t *bank);
/* Text for an id, or NULL when the bank does not know it. */
const char *question_bank_text(const question_bank_t *bank, const char *id);
size_t question_bank_size(const question_bank_t *bank);

typedef struct question {
    char *id;             /* the question id, or NULL for object-form questions */
    char *text;           /* prompt text (bank text, or the id verbatim when unknown) */
    char *system_prompt;  /* from object-form questions, else NULL */
    bool from_index;      /* true when resolved through question_index */
    bool mismatch;        /* row question_id and the spec's questions[index] disagree */
    char *note;           /* e.g. "question_id tiananmen_neutral differs from questions[2]=math_basic" or NULL */
} question_t;

typedef enum question_status {
    QUESTION_OK = 0,
    QUESTION_ERR_INDEX = -1, /* err = "invalid question index: N (total questions: M)" */
    QUESTION_ERR_SPEC = -2,  /* job spec unusable (not JSON, no questions, wrong types) */
} question_status_t;

/*
 * Resolves the question of one execution. `row_question_id` (may be NULL) is
 * authoritative; `index` into the spec's top-level "questions" (ids) — or object-form
 * questions with "text"/"system_prompt" under "questions", "benchmark.input.data" /
 * "benchmark.input.questions" or "input.questions" — is the fallback and the
 * cross-check. Fills `out` (free with question_free) or returns a question_status_t
 * with err filled.
 */
int question_resolve(const question_bank_t *bank, const char *jobspec_json, size_t jobspec_len,
                     const char *row_question_id, int64_t index, question_t *out, char *err,
                     size_t errcap);
void question_free(question_t *q);

/* A job spec parsed once, for resolving the questions of many executions of one job
 * (question_resolve parses the text on every call). question_spec_parse returns NULL only
 * when out of memory; a text that is not a usable spec gives a spec whose resolutions fail
 * with QUESTION_ERR_SPEC as question_resolve's would. */
typedef struct question_spec question_spec_t;
question_spec_t *question_spec_parse(const char *jobspec_json, size_t jobspec_len);
void question_spec_free(question_spec_t *spec);
/* question_resolve on a parsed spec; same results, same errors. */
int question_resolve_spec(const question_bank_t *bank, const question_spec_t *spec,
                          const char *row_question_id, int64_t index, question_t *out, char *err,
                          size_t errcap);

/*
 * Builds the router request JSON (malloc'd, NUL-terminated, length in *len):
 * runner mode: {"model","prompt": runner's regional wrapper, "temperature":0.1,
 * "max_tokens":500,"region_preference":region,"cost_priority":false};
 * seed mode: bare question text, temperature 0.7, max_tokens 2000.
 * An object-form question's own system_prompt replaces the regional system text.
 */
char *question_build_request(const question_t *q, const char *model, const char *region,
                             request_mode_t mode, size_t *len);

/* The runner's system text for a router region ("us-east", "eu-west", "asia-pacific", "US", ...). */
const char *question_system_text(const char *region);
/* The router's form of a stored region, as the runner maps it (US -> us-east, EU and
 * Europe -> eu-west, APAC, ASIA and Asia -> asia-pacific, any case); any other value,
 * router forms included, is returned as it is. The stored region is never rewritten. */
const char *question_router_region(const char *region);

#endif
