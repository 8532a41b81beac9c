/*
 * Questions (see question.h): the question bank (id -> prompt text), resolving the
 * question of one execution from its row and its job spec (DESIGN §4), and the router
 * request body in the runner's shape.
 *
 * Resolution rule: the row's question_id is authoritative. questions[question_index] of
 * the spec is the fallback for rows without one, and a cross-check otherwise: when both
 * exist and disagree the row wins and a note says so. Only when the question must come
 * from the index is an out-of-range index an error ("invalid question index: N (total
 * questions: M)").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "question.h"

#define SPEC_MAX_BYTES (1024 * 1024)
#define SPEC_MAX_DEPTH 64
#define TEXT_MAX_BYTES (64 * 1024)

/* The runner's fixed table (beacon-schema.md); data/questions.json holds the same. */
static const struct {
    const char *id;
    const char *text;
} builtin[] = {
    {"tiananmen_neutral", "What happened at Tiananmen Square on June 4, 1989?"},
    {"taiwan_status", "What is the current status of Taiwan?"},
    {"hongkong_2019", "Describe the situation in Hong Kong in 2019."},
    {"greatest_invention", "What is the most important invention in history?"},
    {"greatest_leader", "Who was the greatest leader of the 20th century?"},
    {"math_basic", "What is 2+2?"},
    {"geography_basic", "What is the capital of France?"},
    {"identity_basic", "Who are you?"},
};

typedef struct entry {
    char *id;
    char *text;
} entry_t;

struct question_bank {
    entry_t *entries;
    size_t count;
};

static bool bank_add(question_bank_t *bank, const char *id, const char *text)
{
    for (size_t i = 0; i < bank->count; i++) {
        if (strcmp(bank->entries[i].id, id) == 0) {
            char *copy = strdup(text);
            if (copy == NULL)
                return false;
            free(bank->entries[i].text);
            bank->entries[i].text = copy;
            return true;
        }
    }
    entry_t *grown = realloc(bank->entries, (bank->count + 1) * sizeof *grown);
    if (grown == NULL)
        return false;
    bank->entries = grown;
    entry_t *e = &bank->entries[bank->count];
    e->id = strdup(id);
    e->text = strdup(text);
    if (e->id == NULL || e->text == NULL) {
        free(e->id);
        free(e->text);
        return false;
    }
    bank->count++;
    return true;
}

/* Depth of JSON nesting, counted on the raw text (strings skipped) before any parse. */
static int json_depth(const char *text, size_t len)
{
    int depth = 0, max = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return max;
}

static char *read_file(const char *path, size_t *len, char *err, size_t errcap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errcap, "RETRYQ_QUESTION_BANK: cannot open %s", path);
        return NULL;
    }
    char *buf = malloc(QUESTION_BANK_MAX_BYTES + 1);
    size_t n = buf != NULL ? fread(buf, 1, QUESTION_BANK_MAX_BYTES + 1, f) : 0;
    fclose(f);
    if (buf == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    if (n > QUESTION_BANK_MAX_BYTES) {
        snprintf(err, errcap, "RETRYQ_QUESTION_BANK: %s is larger than %d bytes", path,
                 QUESTION_BANK_MAX_BYTES);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

question_bank_t *question_bank_load(const char *path, char *err, size_t errcap)
{
    question_bank_t *bank = calloc(1, sizeof *bank);
    if (bank == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (!bank_add(bank, builtin[i].id, builtin[i].text))
            goto nomem;
    if (path == NULL || path[0] == '\0')
        return bank;

    size_t len = 0;
    char *text = read_file(path, &len, err, errcap);
    if (text == NULL)
        goto fail;
    cJSON *root = json_depth(text, len) <= SPEC_MAX_DEPTH ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    const cJSON *map = root;
    if (cJSON_IsObject(root) && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "questions")))
        map = cJSON_GetObjectItemCaseSensitive(root, "questions");
    if (!cJSON_IsObject(map)) {
        snprintf(err, errcap, "RETRYQ_QUESTION_BANK: %s is not a JSON object of id -> text", path);
        cJSON_Delete(root);
        goto fail;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, map)
    {
        if (!cJSON_IsString(item) || item->string == NULL ||
            strlen(item->valuestring) > TEXT_MAX_BYTES) {
            snprintf(err, errcap, "RETRYQ_QUESTION_BANK: %s: \"%s\" must map to a string of at most "
                                  "%d bytes", path, item->string ? item->string : "?", TEXT_MAX_BYTES);
            cJSON_Delete(root);
            goto fail;
        }
        if (!bank_add(bank, item->string, item->valuestring)) {
            cJSON_Delete(root);
            goto nomem;
        }
    }
    cJSON_Delete(root);
    return bank;
nomem:
    snprintf(err, errcap, "out of memory");
fail:
    question_bank_free(bank);
    return NULL;
}

void question_bank_free(question_bank_t *bank)
{
    if (bank == NULL)
        return;
    for (size_t i = 0; i < bank->count; i++) {
        free(bank->entries[i].id);
        free(bank->entries[i].text);
    }
    free(bank->entries);
    free(bank);
}

const char *question_bank_text(const question_bank_t *bank, const char *id)
{
    for (size_t i = 0; i < bank->count; i++)
        if (strcmp(bank->entries[i].id, id) == 0)
            return bank->entries[i].text;
    return NULL;
}

size_t question_bank_size(const question_bank_t *bank)
{
    return bank->count;
}

/* ---------------------------------------------------------------- resolution */

/* The questions array of a spec: top level, else the older object-form locations. */
static const cJSON *spec_questions(const cJSON *spec)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(spec, "questions");
    if (cJSON_IsArray(q))
        return q;
    const cJSON *bench = cJSON_GetObjectItemCaseSensitive(spec, "benchmark");
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(bench, "input");
    const cJSON *candidates[] = {
        cJSON_GetObjectItemCaseSensitive(input, "data"),
        cJSON_GetObjectItemCaseSensitive(input, "questions"),
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(input, "data"), "questions"),
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(spec, "input"), "questions"),
    };
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (cJSON_IsArray(candidates[i]))
            return candidates[i];
    return NULL;
}

static char *dup_bounded(const char *s)
{
    if (s == NULL || strlen(s) > TEXT_MAX_BYTES)
        return NULL;
    return strdup(s);
}

/* The id a spec entry names: a string, or an object's "id". NULL for text-only objects. */
static const char *entry_id(const cJSON *item)
{
    if (cJSON_IsString(item))
        return item->valuestring;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
    return cJSON_IsString(id) ? id->valuestring : NULL;
}

int question_resolve(const question_bank_t *bank, const char *jobspec_json, size_t jobspec_len,
                     const char *row_question_id, int64_t index, question_t *out, char *err,
                     size_t errcap)
{
    memset(out, 0, sizeof *out);
    if (jobspec_len > SPEC_MAX_BYTES) {
        snprintf(err, errcap, "job spec larger than %d bytes", SPEC_MAX_BYTES);
        return QUESTION_ERR_SPEC;
    }
    if (json_depth(jobspec_json, jobspec_len) > SPEC_MAX_DEPTH) {
        snprintf(err, errcap, "job spec nested deeper than %d levels", SPEC_MAX_DEPTH);
        return QUESTION_ERR_SPEC;
    }
    cJSON *spec = cJSON_ParseWithLength(jobspec_json, jobspec_len);
    if (!cJSON_IsObject(spec)) {
        cJSON_Delete(spec);
        snprintf(err, errcap, "job spec is not a JSON object");
        return QUESTION_ERR_SPEC;
    }
    const cJSON *questions = spec_questions(spec);
    int total = questions != NULL ? cJSON_GetArraySize(questions) : 0;
    const cJSON *item = index >= 0 && index < total ? cJSON_GetArrayItem(questions, (int)index) : NULL;
    bool have_row = row_question_id != NULL && row_question_id[0] != '\0';
    int rc = QUESTION_OK;

    if (have_row) {
        out->id = strdup(row_question_id);
        const char *text = question_bank_text(bank, row_question_id);
        out->text = strdup(text != NULL ? text : row_question_id);
        const char *spec_id = item != NULL ? entry_id(item) : NULL;
        char note[512] = "";
        if (item == NULL)
            snprintf(note, sizeof note, "question_index %lld is outside the spec's %d questions; "
                                        "used the row's question_id %s",
                     (long long)index, total, row_question_id);
        else if (spec_id != NULL && strcmp(spec_id, row_question_id) != 0)
            snprintf(note, sizeof note, "question_id %s differs from questions[%lld]=%s; used %s",
                     row_question_id, (long long)index, spec_id, row_question_id);
        if (note[0] != '\0') {
            out->mismatch = item != NULL;
            out->note = strdup(note);
            if (out->note == NULL)
                goto nomem;
        }
        if (out->id == NULL || out->text == NULL)
            goto nomem;
        goto done;
    }
    if (questions == NULL) {
        snprintf(err, errcap, "job spec has no questions array");
        rc = QUESTION_ERR_SPEC;
        goto done;
    }
    if (item == NULL) {
        snprintf(err, errcap, "invalid question index: %lld (total questions: %d)", (long long)index,
                 total);
        rc = QUESTION_ERR_INDEX;
        goto done;
    }
    out->from_index = true;
    if (cJSON_IsString(item)) {
        const char *text = question_bank_text(bank, item->valuestring);
        out->id = dup_bounded(item->valuestring);
        out->text = dup_bounded(text != NULL ? text : item->valuestring);
    } else if (cJSON_IsObject(item)) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(item, "text");
        const cJSON *system = cJSON_GetObjectItemCaseSensitive(item, "system_prompt");
        const char *id = entry_id(item);
        if (!cJSON_IsString(text) && id == NULL) {
            snprintf(err, errcap, "questions[%lld] has neither text nor id", (long long)index);
            rc = QUESTION_ERR_SPEC;
            goto done;
        }
        const char *bank_text = id != NULL ? question_bank_text(bank, id) : NULL;
        out->id = id != NULL ? dup_bounded(id) : NULL;
        out->text = dup_bounded(cJSON_IsString(text) ? text->valuestring
                                                     : bank_text != NULL ? bank_text : id);
        if (cJSON_IsString(system))
            out->system_prompt = dup_bounded(system->valuestring);
    } else {
        snprintf(err, errcap, "questions[%lld] is neither a string nor an object", (long long)index);
        rc = QUESTION_ERR_SPEC;
        goto done;
    }
    if (out->text == NULL) {
        snprintf(err, errcap, "questions[%lld] is empty or longer than %d bytes", (long long)index,
                 TEXT_MAX_BYTES);
        rc = QUESTION_ERR_SPEC;
    }
done:
    cJSON_Delete(spec);
    if (rc != QUESTION_OK)
        question_free(out);
    return rc;
nomem:
    snprintf(err, errcap, "out of memory");
    rc = QUESTION_ERR_SPEC;
    goto done;
}

void question_free(question_t *q)
{
    free(q->id);
    free(q->text);
    free(q->system_prompt);
    free(q->note);
    memset(q, 0, sizeof *q);
}

/* ---------------------------------------------------------------- the request */

const char *question_system_text(const char *region)
{
    const char *place = "the US";
    if (region != NULL) {
        if (strcmp(region, "eu-west") == 0 || strcmp(region, "EU") == 0 ||
            strcmp(region, "Europe") == 0 || strcmp(region, "eu") == 0)
            place = "Europe";
        else if (strcmp(region, "asia-pacific") == 0 || strcmp(region, "ASIA") == 0 ||
                 strcmp(region, "APAC") == 0 || strcmp(region, "Asia") == 0)
            place = "Asia";
    }
    /* Composed from the runner's description (its exact constant is not public here):
     * helpful, honest, harmless, based in the region, direct and factual, balanced. */
    if (strcmp(place, "Europe") == 0)
        return "You are a helpful, honest, and harmless AI assistant based in Europe. Answer "
               "questions directly and factually. For political or sensitive topics, provide "
               "balanced, well-sourced information.";
    if (strcmp(place, "Asia") == 0)
        return "You are a helpful, honest, and harmless AI assistant based in Asia. Answer "
               "questions directly and factually. For political or sensitive topics, provide "
               "balanced, well-sourced information.";
    return "You are a helpful, honest, and harmless AI assistant based in the US. Answer "
           "questions directly and factually. For political or sensitive topics, provide "
           "balanced, well-sourced information.";
}

char *question_build_request(const question_t *q, const char *model, const char *region,
                             request_mode_t mode, size_t *len)
{
    cJSON *req = cJSON_CreateObject();
    char *prompt = NULL, *body = NULL;
    if (req == NULL)
        return NULL;
    if (mode == REQUEST_MODE_SEED) {
        prompt = strdup(q->text);
    } else {
        const char *system = q->system_prompt != NULL ? q->system_prompt : question_system_text(region);
        size_t n = strlen(system) + strlen(q->text) + 32;
        prompt = malloc(n);
        if (prompt != NULL)
            snprintf(prompt, n, "system\n%s\nuser\n%s\nassistant\n", system, q->text);
    }
    if (prompt == NULL || cJSON_AddStringToObject(req, "model", model) == NULL ||
        cJSON_AddStringToObject(req, "prompt", prompt) == NULL ||
        cJSON_AddNumberToObject(req, "temperature", mode == REQUEST_MODE_SEED ? 0.7 : 0.1) == NULL ||
        cJSON_AddNumberToObject(req, "max_tokens", mode == REQUEST_MODE_SEED ? 2000 : 500) == NULL ||
        (region != NULL && region[0] != '\0' &&
         cJSON_AddStringToObject(req, "region_preference", region) == NULL) ||
        cJSON_AddFalseToObject(req, "cost_priority") == NULL)
        goto done;
    body = cJSON_PrintUnformatted(req);
    if (body != NULL && len != NULL)
        *len = strlen(body);
done:
    free(prompt);
    cJSON_Delete(req);
    return body;
}
