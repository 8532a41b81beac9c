/*
 * Questions (see question.h): the question bank (id -> prompt text), resolving the
 * question of one execution from its row and its job spec (DESIGN §4), and the router
 * request body in the runner's shape.
 *
 * Resolution rule (documented in docs/configuration.md):
 *  - The row's question_id is authoritative: when it is set, it is the question, its
 *    text comes from the bank (or is the id itself when the bank does not know it, as
 *    the runner's retry sends it). questions[question_index] is then only a cross-check:
 *    a different id there sets `mismatch` and a note; an index outside the array, or a
 *    spec that cannot be read at all, only adds a note — the job still runs, because
 *    nothing it needs comes from the spec. When questions[index] is an object-form entry
 *    for the same question, its own text and system_prompt are used.
 *  - Without a row question_id, the question must come from the index: an index outside
 *    the array is QUESTION_ERR_INDEX with exactly "invalid question index: N (total
 *    questions: M)", an unusable spec is QUESTION_ERR_SPEC.
 * Limits: a spec above 1 MiB or nested deeper than 64 levels (counted on the raw text
 * before cJSON sees it) is not parsed; a prompt or system text is at most 64 KiB.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "question.h"
#include "text.h"

#define SPEC_MAX_BYTES (1024 * 1024)
#define SPEC_MAX_DEPTH 64
#define TEXT_MAX_BYTES (64 * 1024)
#define ID_MAX_BYTES 1024

/* The runner's fixed table (runner-app internal/worker/helpers.go, beacon-schema.md);
 * data/questions.json holds the same, and test_question checks that they agree. */
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
    size_t order; /* insertion order: the later of two equal ids wins */
} entry_t;

/* Sorted by id after loading; looked up by binary search. */
struct question_bank {
    entry_t *entries;
    size_t count, cap;
};

static bool bank_append(question_bank_t *bank, const char *id, const char *text)
{
    if (bank->count == bank->cap) {
        size_t cap = bank->cap != 0 ? bank->cap * 2 : 16;
        entry_t *grown = realloc(bank->entries, cap * sizeof *grown);
        if (grown == NULL)
            return false;
        bank->entries = grown;
        bank->cap = cap;
    }
    entry_t *e = &bank->entries[bank->count];
    e->id = strdup(id);
    e->text = strdup(text);
    e->order = bank->count;
    if (e->id == NULL || e->text == NULL) {
        free(e->id);
        free(e->text);
        return false;
    }
    bank->count++;
    return true;
}

static int entry_compare(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c != 0 ? c : x->order < y->order ? -1 : x->order > y->order;
}

/* Sorts by id and keeps only the last-added entry of each id. */
static void bank_finish(question_bank_t *bank)
{
    if (bank->count == 0)
        return;
    qsort(bank->entries, bank->count, sizeof *bank->entries, entry_compare);
    size_t kept = 0;
    for (size_t i = 0; i < bank->count; i++) {
        if (i + 1 < bank->count && strcmp(bank->entries[i].id, bank->entries[i + 1].id) == 0) {
            free(bank->entries[i].id);
            free(bank->entries[i].text);
            continue;
        }
        bank->entries[kept++] = bank->entries[i];
    }
    bank->count = kept;
}

static char *read_bank_file(const char *path, size_t *len, char *err, size_t errcap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errcap, "question bank \"%s\": cannot open it", path);
        return NULL;
    }
    char *buf = malloc(QUESTION_BANK_MAX_BYTES + 1);
    size_t n = buf != NULL ? fread(buf, 1, QUESTION_BANK_MAX_BYTES + 1, f) : 0;
    bool failed = ferror(f) != 0;
    fclose(f);
    if (buf == NULL) {
        snprintf(err, errcap, "question bank: out of memory");
        return NULL;
    }
    if (failed || n > QUESTION_BANK_MAX_BYTES) {
        snprintf(err, errcap, "question bank \"%s\": %s", path,
                 failed ? "read error" : "larger than 4 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Adds the file's {"id": "text", ...} (or {"questions": {...}}) over the built-in ids. */
static int bank_merge_file(question_bank_t *bank, const char *path, char *err, size_t errcap)
{
    size_t len = 0;
    char *text = read_bank_file(path, &len, err, errcap);
    if (text == NULL)
        return -1;
    int rc = -1;
    cJSON *root = NULL;
    if (rq_json_too_deep(text, len, SPEC_MAX_DEPTH) < len) {
        snprintf(err, errcap, "question bank \"%s\": nested deeper than %d levels", path,
                 SPEC_MAX_DEPTH);
        goto cleanup;
    }
    root = cJSON_ParseWithLength(text, len);
    const cJSON *map = root;
    if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "questions")))
        map = cJSON_GetObjectItemCaseSensitive(root, "questions");
    if (!cJSON_IsObject(map)) {
        snprintf(err, errcap, "question bank \"%s\": %s", path,
                 root == NULL
                     ? "not valid JSON"
                     : "must be a JSON object {\"id\": \"text\", ...} or {\"questions\": {...}}");
        goto cleanup;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, map)
    {
        const char *id = item->string != NULL ? item->string : "";
        size_t id_len = strlen(id);
        if (id_len == 0 || id_len > ID_MAX_BYTES || !text_is_clean(id, id_len)) {
            snprintf(err, errcap,
                     "question bank \"%s\": ids must be 1 to %d bytes of UTF-8 (\"%.40s\")", path,
                     ID_MAX_BYTES, id);
            goto cleanup;
        }
        size_t text_len = cJSON_IsString(item) ? strlen(item->valuestring) : 0;
        if (text_len == 0 || text_len > TEXT_MAX_BYTES ||
            !text_is_clean(item->valuestring, text_len)) {
            snprintf(err, errcap,
                     "question bank \"%s\": \"%.40s\" must map to a non-empty string of at most %d "
                     "bytes of UTF-8",
                     path, id, TEXT_MAX_BYTES);
            goto cleanup;
        }
        if (!bank_append(bank, id, item->valuestring)) {
            snprintf(err, errcap, "question bank: out of memory");
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    cJSON_Delete(root);
    free(text);
    return rc;
}

question_bank_t *question_bank_load(const char *path, char *err, size_t errcap)
{
    question_bank_t *bank = calloc(1, sizeof *bank);
    if (bank == NULL) {
        snprintf(err, errcap, "question bank: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
        if (!bank_append(bank, builtin[i].id, builtin[i].text)) {
            snprintf(err, errcap, "question bank: out of memory");
            goto fail;
        }
    }
    if (path != NULL && path[0] != '\0' && bank_merge_file(bank, path, err, errcap) < 0)
        goto fail;
    bank_finish(bank);
    return bank;
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
    if (bank == NULL || id == NULL)
        return NULL;
    size_t lo = 0, hi = bank->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(id, bank->entries[mid].id);
        if (c == 0)
            return bank->entries[mid].text;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

size_t question_bank_size(const question_bank_t *bank)
{
    return bank != NULL ? bank->count : 0;
}

/* ---------------------------------------------------------------- resolution */

/* The questions array of a spec: the top-level ids, else the older object-form places. */
static const cJSON *spec_questions(const cJSON *spec)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(spec, "questions");
    if (cJSON_IsArray(q))
        return q;
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(spec, "benchmark"), "input");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(input, "data");
    const cJSON *candidates[] = {
        data,
        cJSON_GetObjectItemCaseSensitive(input, "questions"),
        cJSON_GetObjectItemCaseSensitive(data, "questions"),
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(spec, "input"),
                                         "questions"),
    };
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (cJSON_IsArray(candidates[i]))
            return candidates[i];
    return NULL;
}

/* The id a spec entry names: a string, or an object's "id". NULL for text-only objects. */
static const char *entry_id(const cJSON *item)
{
    if (cJSON_IsString(item))
        return item->valuestring;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
    return cJSON_IsString(id) ? id->valuestring : NULL;
}

static const char *object_string(const cJSON *item, const char *key)
{
    const cJSON *v = cJSON_IsObject(item) ? cJSON_GetObjectItemCaseSensitive(item, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool usable_text(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= TEXT_MAX_BYTES;
}

static bool set_copy(char **slot, const char *s)
{
    free(*slot);
    *slot = s != NULL ? strdup(s) : NULL;
    return s == NULL || *slot != NULL;
}

/* Parses a spec within the limits; NULL with why filled when it cannot be used. */
static cJSON *parse_spec(const char *json, size_t len, char *why, size_t cap)
{
    if (json == NULL) {
        snprintf(why, cap, "job spec is missing");
        return NULL;
    }
    if (len > SPEC_MAX_BYTES) {
        snprintf(why, cap, "job spec is larger than %d bytes", SPEC_MAX_BYTES);
        return NULL;
    }
    if (rq_json_too_deep(json, len, SPEC_MAX_DEPTH) < len) {
        snprintf(why, cap, "job spec is nested deeper than %d levels", SPEC_MAX_DEPTH);
        return NULL;
    }
    cJSON *spec = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(spec)) {
        snprintf(why, cap, "job spec is not a JSON object");
        cJSON_Delete(spec);
        return NULL;
    }
    return spec;
}

/* The row has a question_id: it wins; the spec is a cross-check (see the top). */
static int resolve_by_row(const question_bank_t *bank, const cJSON *questions, const char *spec_why,
                          const char *row_id, int64_t index, question_t *out)
{
    int total = questions != NULL ? cJSON_GetArraySize(questions) : 0;
    const cJSON *item =
        index >= 0 && index < total ? cJSON_GetArrayItem(questions, (int)index) : NULL;
    const char *bank_text = question_bank_text(bank, row_id);
    const char *row_text = bank_text != NULL ? bank_text : row_id;
    const char *spec_id = entry_id(item), *spec_text = object_string(item, "text");
    char note[512] = "";

    if (!set_copy(&out->id, row_id) || !set_copy(&out->text, row_text))
        return -1;
    if (spec_why != NULL) {
        snprintf(note, sizeof note, "%s; used the row's question_id %s", spec_why, row_id);
    } else if (questions == NULL) {
        snprintf(note, sizeof note,
                 "job spec has no questions array; used the row's question_id %s", row_id);
    } else if (item == NULL) {
        snprintf(note, sizeof note,
                 "question_index %lld is outside the spec's %d questions; used the row's "
                 "question_id %s",
                 (long long)index, total, row_id);
    } else if (spec_id != NULL ? strcmp(spec_id, row_id) != 0
                               : spec_text != NULL && strcmp(spec_text, row_text) != 0) {
        out->mismatch = true;
        snprintf(note, sizeof note, "question_id %s differs from questions[%lld]=%.100s; used %s",
                 row_id, (long long)index, spec_id != NULL ? spec_id : spec_text, row_id);
    } else if (cJSON_IsObject(item)) {
        /* the same question in object form: its own wording and system prompt */
        const char *system = object_string(item, "system_prompt");
        if (usable_text(spec_text) && !set_copy(&out->text, spec_text))
            return -1;
        if (usable_text(system) && !set_copy(&out->system_prompt, system))
            return -1;
    }
    if (note[0] != '\0' && !set_copy(&out->note, note))
        return -1;
    return 0;
}

/* No row question_id: questions[index] is the question. */
static int resolve_by_index(const question_bank_t *bank, const cJSON *questions, int64_t index,
                            question_t *out, char *err, size_t errcap)
{
    if (questions == NULL) {
        snprintf(err, errcap, "job spec has no questions array");
        return QUESTION_ERR_SPEC;
    }
    int total = cJSON_GetArraySize(questions);
    if (index < 0 || index >= total) {
        snprintf(err, errcap, "invalid question index: %lld (total questions: %d)",
                 (long long)index, total);
        return QUESTION_ERR_INDEX;
    }
    const cJSON *item = cJSON_GetArrayItem(questions, (int)index);
    const char *id = entry_id(item), *text = object_string(item, "text");
    const char *system = object_string(item, "system_prompt");
    if (!cJSON_IsString(item) && !cJSON_IsObject(item)) {
        snprintf(err, errcap, "questions[%lld] is neither a string nor an object",
                 (long long)index);
        return QUESTION_ERR_SPEC;
    }
    if (text == NULL && id != NULL)
        text = question_bank_text(bank, id) != NULL ? question_bank_text(bank, id) : id;
    if (!usable_text(text) || (id != NULL && strlen(id) > ID_MAX_BYTES)) {
        snprintf(err, errcap, "questions[%lld] has no text, or it is empty or longer than %d bytes",
                 (long long)index, TEXT_MAX_BYTES);
        return QUESTION_ERR_SPEC;
    }
    out->from_index = true;
    if (!set_copy(&out->id, id) || !set_copy(&out->text, text) ||
        (usable_text(system) && !set_copy(&out->system_prompt, system))) {
        snprintf(err, errcap, "out of memory");
        return QUESTION_ERR_SPEC;
    }
    return QUESTION_OK;
}

struct question_spec {
    cJSON *json;    /* NULL when the text was not a usable spec */
    char why[128];  /* then: why */
};

question_spec_t *question_spec_parse(const char *jobspec_json, size_t jobspec_len)
{
    question_spec_t *spec = calloc(1, sizeof *spec);
    if (spec != NULL)
        spec->json = parse_spec(jobspec_json, jobspec_len, spec->why, sizeof spec->why);
    return spec;
}

void question_spec_free(question_spec_t *spec)
{
    if (spec == NULL)
        return;
    cJSON_Delete(spec->json);
    free(spec);
}

int question_resolve_spec(const question_bank_t *bank, const question_spec_t *spec,
                          const char *row_question_id, int64_t index, question_t *out, char *err,
                          size_t errcap)
{
    memset(out, 0, sizeof *out);
    bool have_row = row_question_id != NULL && row_question_id[0] != '\0';
    const cJSON *questions = spec->json != NULL ? spec_questions(spec->json) : NULL;
    int rc;
    if (have_row) {
        rc = resolve_by_row(bank, questions, spec->json == NULL ? spec->why : NULL, row_question_id,
                            index, out);
        if (rc < 0) {
            snprintf(err, errcap, "out of memory");
            rc = QUESTION_ERR_SPEC;
        }
    } else if (spec->json == NULL) {
        snprintf(err, errcap, "%s", spec->why);
        rc = QUESTION_ERR_SPEC;
    } else {
        rc = resolve_by_index(bank, questions, index, out, err, errcap);
    }
    if (rc != QUESTION_OK)
        question_free(out);
    return rc;
}

int question_resolve(const question_bank_t *bank, const char *jobspec_json, size_t jobspec_len,
                     const char *row_question_id, int64_t index, question_t *out, char *err,
                     size_t errcap)
{
    question_spec_t *spec = question_spec_parse(jobspec_json, jobspec_len);
    if (spec == NULL) {
        memset(out, 0, sizeof *out);
        snprintf(err, errcap, "out of memory");
        return QUESTION_ERR_SPEC;
    }
    int rc = question_resolve_spec(bank, spec, row_question_id, index, out, err, errcap);
    question_spec_free(spec);
    return rc;
}

void question_free(question_t *q)
{
    if (q == NULL)
        return;
    free(q->id);
    free(q->text);
    free(q->system_prompt);
    free(q->note);
    memset(q, 0, sizeof *q);
}

/* ---------------------------------------------------------------- the request */

/*
 * The runner's regional system text, word for word (runner-app
 * internal/worker/helpers.go, formatRegionalPrompt): its table maps us-east, us-central,
 * us-west, US to "the US"; eu-west, eu-central, EU to "Europe"; asia-pacific,
 * asia-southeast, APAC, ASIA to "Asia"; anything else to "the US". retryq also accepts
 * "Europe" and "Asia" (older rows store them) and compares case-insensitively.
 */
#define RUNNER_SYSTEM_TEXT(place)                                                              \
    "You are a helpful, honest, and harmless AI assistant based in " place ". Answer questions "  \
    "directly and factually. For sensitive political topics, provide balanced, factual "         \
    "information from multiple perspectives."

const char *question_system_text(const char *region)
{
    static const char *const europe[] = {"eu-west", "eu-central", "EU", "Europe"};
    static const char *const asia[] = {"asia-pacific", "asia-southeast", "APAC", "ASIA"};
    if (region != NULL) {
        for (size_t i = 0; i < sizeof europe / sizeof europe[0]; i++)
            if (strcasecmp(region, europe[i]) == 0)
                return RUNNER_SYSTEM_TEXT("Europe");
        for (size_t i = 0; i < sizeof asia / sizeof asia[0]; i++)
            if (strcasecmp(region, asia[i]) == 0)
                return RUNNER_SYSTEM_TEXT("Asia");
    }
    return RUNNER_SYSTEM_TEXT("the US");
}

const char *question_router_region(const char *region)
{
    static const char *const forms[][2] = {
        {"US", "us-east"},         {"EU", "eu-west"},   {"Europe", "eu-west"},
        {"APAC", "asia-pacific"}, {"ASIA", "asia-pacific"},
    };
    if (region == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        if (strcasecmp(region, forms[i][0]) == 0)
            return forms[i][1];
    return region;
}

char *question_build_request(const question_t *q, const char *model, const char *region,
                             request_mode_t mode, size_t *len)
{
    if (q == NULL || q->text == NULL || model == NULL)
        return NULL;
    cJSON *req = cJSON_CreateObject();
    char *prompt = NULL, *body = NULL;
    if (req == NULL)
        return NULL;
    if (mode == REQUEST_MODE_SEED && q->system_prompt == NULL) {
        prompt = strdup(q->text);
    } else {
        /* "system\n<system>\nuser\n<question>\nassistant\n", as the runner sends it; the
         * seed mode keeps an object-form question's own system_prompt the same way */
        const char *system =
            q->system_prompt != NULL ? q->system_prompt : question_system_text(region);
        size_t n = strlen(system) + strlen(q->text) + sizeof "system\n\nuser\n\nassistant\n";
        prompt = malloc(n);
        if (prompt != NULL)
            snprintf(prompt, n, "system\n%s\nuser\n%s\nassistant\n", system, q->text);
    }
    if (prompt == NULL || cJSON_AddStringToObject(req, "model", model) == NULL ||
        cJSON_AddStringToObject(req, "prompt", prompt) == NULL ||
        cJSON_AddNumberToObject(req, "temperature", mode == REQUEST_MODE_SEED ? 0.7 : 0.1) ==
            NULL ||
        cJSON_AddNumberToObject(req, "max_tokens", mode == REQUEST_MODE_SEED ? 2000 : 500) ==
            NULL ||
        (region != NULL && region[0] != '\0' &&
         cJSON_AddStringToObject(req, "region_preference", region) == NULL) ||
        cJSON_AddFalseToObject(req, "cost_priority") == NULL)
        goto cleanup;
    body = cJSON_PrintUnformatted(req);
    if (body != NULL && len != NULL)
        *len = strlen(body);
cleanup:
    free(prompt);
    cJSON_Delete(req);
    return body;
}
