/*
 * libFuzzer target: the wire format (DESIGN §2). Any bytes go through retryq_job_decode
 * (what the worker does with every payload popped from Redis). A payload that decodes
 * must also validate, encode, and decode again to exactly the same job: the encoder and
 * the decoder agree on every job the decoder accepts. A refusal must come with a code
 * and a one-line reason (it becomes the dead-list reason).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "retryq/retryq.h"

static void check_refusal(int rc, const retryq_error_t *err)
{
    FUZZ_ASSERT(rc == RETRYQ_ERR_INVALID || rc == RETRYQ_ERR_TOO_LARGE);
    FUZZ_ASSERT(err->code == rc);
    FUZZ_ASSERT(memchr(err->message, '\0', sizeof err->message) != NULL);
    FUZZ_ASSERT(err->message[0] != '\0');
    FUZZ_ASSERT(strchr(err->message, '\n') == NULL);
}

static void check_same(const retryq_job_t *a, const retryq_job_t *b)
{
    FUZZ_ASSERT(a->execution_id == b->execution_id);
    FUZZ_ASSERT(strcmp(a->region, b->region) == 0);
    FUZZ_ASSERT(a->question_index == b->question_index);
    FUZZ_ASSERT(a->retry_attempt == b->retry_attempt);
    FUZZ_ASSERT(a->delivery == b->delivery);
    FUZZ_ASSERT(strcmp(a->enqueued_at, b->enqueued_at) == 0);
    FUZZ_ASSERT(strcmp(a->id, b->id) == 0);
}

/* The rules of §2 on a decoded job, checked independently of the library. */
static void check_rules(const retryq_job_t *job, int max_retries)
{
    size_t n = strnlen(job->region, sizeof job->region);
    FUZZ_ASSERT(n >= 1 && n <= RETRYQ_MAX_REGION);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT((unsigned char)job->region[i] >= 0x20 && job->region[i] != 0x7f);
    FUZZ_ASSERT(job->execution_id > 0);
    FUZZ_ASSERT(job->question_index >= 0 && job->question_index <= INT32_MAX);
    FUZZ_ASSERT(job->retry_attempt >= 1 && job->retry_attempt <= max_retries);
    FUZZ_ASSERT(job->delivery >= 0 && job->delivery <= RETRYQ_MAX_ATTEMPT);
    FUZZ_ASSERT(strnlen(job->enqueued_at, sizeof job->enqueued_at) <= RETRYQ_MAX_TIMESTAMP);
    FUZZ_ASSERT(strnlen(job->id, sizeof job->id) <= RETRYQ_MAX_JOB_ID);
}

static void round_trip(const retryq_job_t *job)
{
    char buf[2048];
    retryq_job_t again;
    retryq_error_t err;
    int n = retryq_job_encode(job, buf, sizeof buf);
    FUZZ_ASSERT(n > 0 && (size_t)n < sizeof buf);
    FUZZ_ASSERT(strlen(buf) == (size_t)n);
    int rc = retryq_job_decode(buf, (size_t)n, RETRYQ_MAX_ATTEMPT, &again, &err);
    if (rc != RETRYQ_OK)
        fprintf(stderr, "re-decoding %s failed: %s\n", buf, err.message);
    FUZZ_ASSERT(rc == RETRYQ_OK);
    check_same(job, &again);
    /* a buffer one byte short must be refused, never overrun */
    char *tight = malloc((size_t)n);
    FUZZ_ASSERT(tight != NULL);
    FUZZ_ASSERT(retryq_job_encode(job, tight, (size_t)n) < 0);
    free(tight);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int bounds[] = {0, 1, 3, RETRYQ_MAX_ATTEMPT};
    /* an exact-size heap copy, so ASan sees any read past the payload */
    char *payload = malloc(size > 0 ? size : 1);
    FUZZ_ASSERT(payload != NULL);
    if (size > 0)
        memcpy(payload, data, size);
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        retryq_job_t job;
        retryq_error_t err;
        memset(&err, 0x55, sizeof err);
        int rc = retryq_job_decode(payload, size, bounds[b], &job, &err);
        if (rc != RETRYQ_OK) {
            check_refusal(rc, &err);
            continue;
        }
        int max = bounds[b] <= 0 ? RETRYQ_DEFAULT_MAX_RETRIES : bounds[b];
        check_rules(&job, max);
        FUZZ_ASSERT(retryq_job_validate(&job, bounds[b], NULL) == RETRYQ_OK);
        round_trip(&job);
    }
    free(payload);
    return 0;
}
