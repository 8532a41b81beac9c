/*
 * libFuzzer target: the job spec and the question (question_resolve, then
 * question_build_request in both request modes). A job spec is whatever jobs.jobspec_data
 * holds, so it is untrusted text.
 *
 * Input layout: byte 0 = flags (bit 0: the row has a question_id, bit 1: seed mode,
 * bit 2: the bank comes from the input, bits 3-5: the region), bytes 1-2 = question_index
 * (signed 16 bits, so negative and out-of-range indexes are tried), then the rest: the
 * row's question_id up to the first NUL byte, then the job spec. When bit 2 is set the
 * spec part is also loaded as a question bank file (through a memfd), so the bank
 * parser is fuzzed with the same bytes.
 *
 * Invariants: the status is one of the three documented values; a failure has a
 * one-line message; a success has prompt text, and the request built from it is a JSON
 * object whose prompt contains that text and whose model and region are the ones given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "question.h"

static question_bank_t *builtin_bank;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    (void)argc;
    (void)argv;
    builtin_bank = question_bank_load(NULL, err, sizeof err);
    FUZZ_ASSERT(builtin_bank != NULL);
    FUZZ_ASSERT(question_bank_size(builtin_bank) == 8);
    return 0;
}

/* Loads `text` as a bank file; NULL when the bank refuses it (with a message). */
static question_bank_t *bank_from(const char *text, size_t len)
{
    char path[64], err[512];
    int fd = memfd_create("fuzz-bank", 0);
    FUZZ_ASSERT(fd >= 0);
    FUZZ_ASSERT(len == 0 || write(fd, text, len) == (ssize_t)len);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    err[0] = '\0';
    question_bank_t *bank = question_bank_load(path, err, sizeof err);
    close(fd);
    if (bank == NULL) {
        FUZZ_ASSERT(err[0] != '\0');
        return NULL;
    }
    /* the eight built-in ids are always there, the file only adds or replaces */
    FUZZ_ASSERT(question_bank_size(bank) >= 8);
    FUZZ_ASSERT(question_bank_text(bank, "math_basic") != NULL);
    return bank;
}

static void check_request(const question_t *q, const char *region, request_mode_t mode)
{
    size_t len = 0;
    char *body = question_build_request(q, "llama3.2-1b", region, mode, &len);
    FUZZ_ASSERT(body != NULL);
    FUZZ_ASSERT(strlen(body) == len);
    cJSON *req = cJSON_Parse(body);
    FUZZ_ASSERT(cJSON_IsObject(req));
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(req, "prompt");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(req, "model");
    const cJSON *pref = cJSON_GetObjectItemCaseSensitive(req, "region_preference");
    FUZZ_ASSERT(cJSON_IsString(prompt) && strstr(prompt->valuestring, q->text) != NULL);
    FUZZ_ASSERT(cJSON_IsString(model) && strcmp(model->valuestring, "llama3.2-1b") == 0);
    if (region[0] != '\0')
        FUZZ_ASSERT(cJSON_IsString(pref) && strcmp(pref->valuestring, region) == 0);
    else
        FUZZ_ASSERT(pref == NULL);
    cJSON_Delete(req);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const regions[] = {"us-east", "eu-west", "asia-pacific", "US",
                                          "Europe",  "ASIA",    "",             "mars-1"};
    if (size < 3)
        return 0;
    uint8_t flags = data[0];
    int64_t index = (int16_t)((uint16_t)data[1] << 8 | data[2]);
    const char *region = regions[(flags >> 3) & 7];
    const uint8_t *rest = data + 3;
    size_t rest_len = size - 3;
    const uint8_t *nul = memchr(rest, '\0', rest_len);
    char *row_id = NULL;
    const uint8_t *spec = rest;
    size_t spec_len = rest_len;
    if (nul != NULL) {
        row_id = strndup((const char *)rest, (size_t)(nul - rest));
        FUZZ_ASSERT(row_id != NULL);
        spec = nul + 1;
        spec_len = rest_len - (size_t)(nul - rest) - 1;
    }
    /* exact-size copy (no NUL): question_resolve takes a length */
    char *spec_copy = malloc(spec_len > 0 ? spec_len : 1);
    FUZZ_ASSERT(spec_copy != NULL);
    memcpy(spec_copy, spec, spec_len);

    question_bank_t *bank = (flags & 4) ? bank_from(spec_copy, spec_len) : NULL;
    question_t q;
    char err[300];
    memset(err, 0x55, sizeof err);
    int rc = question_resolve(bank != NULL ? bank : builtin_bank, spec_copy, spec_len,
                              (flags & 1) ? row_id : NULL, index, &q, err, sizeof err);
    FUZZ_ASSERT(rc == QUESTION_OK || rc == QUESTION_ERR_INDEX || rc == QUESTION_ERR_SPEC);
    if (rc == QUESTION_OK) {
        FUZZ_ASSERT(q.text != NULL);
        if ((flags & 1) && row_id != NULL && row_id[0] != '\0') {
            /* the row's question_id is authoritative (DESIGN §4) */
            FUZZ_ASSERT(q.id != NULL && strcmp(q.id, row_id) == 0);
            FUZZ_ASSERT(!q.from_index);
        }
        check_request(&q, region, (flags & 2) ? REQUEST_MODE_SEED : REQUEST_MODE_RUNNER);
        question_free(&q);
    } else {
        FUZZ_ASSERT(memchr(err, '\0', sizeof err) != NULL);
        FUZZ_ASSERT(err[0] != '\0' && strchr(err, '\n') == NULL);
        if (rc == QUESTION_ERR_INDEX)
            FUZZ_ASSERT(strncmp(err, "invalid question index: ", 24) == 0);
    }
    question_bank_free(bank);
    free(spec_copy);
    free(row_id);
    return 0;
}
