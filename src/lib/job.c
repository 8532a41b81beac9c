/*
 * The wire format of one job (DESIGN §2): init, decode, validate and encode.
 *
 * cJSON parses the text and unescapes strings. Two small scans of the raw text add what
 * cJSON cannot give: the nesting depth, measured before parsing (cJSON allows 1000
 * levels, a job allows 16), and the raw token of each known field, so that integers are
 * read exactly from their digits (cJSON keeps numbers as doubles) and a string that an
 * escaped NUL ("\u0000") would silently cut short is refused.
 *
 * Integers: a JSON number must be written as a plain integer (optional '-', digits, no
 * fraction, no exponent; exactly what Go's json.Marshal writes for an int). A number
 * above 2^53-1 is refused because most JSON readers (JavaScript, cJSON, Go into
 * interface{}) would round it; such an execution_id must be sent as a decimal string,
 * which is read exactly up to INT64_MAX. The encoder follows the same rule.
 * Whitespace between tokens is what cJSON skips (any byte <= 0x20); anything else after
 * the object is refused. An empty "enqueued_at" or "id" means the same as an absent one
 * (as "" does in retryq_job_t). A known field given twice is refused.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define JOB_MAX_DEPTH 16
#define JSON_SAFE_INTEGER INT64_C(9007199254740991) /* 2^53 - 1 */

enum field {
    F_EXECUTION_ID,
    F_REGION,
    F_QUESTION_INDEX,
    F_RETRY_ATTEMPT,
    F_DELIVERY,
    F_ENQUEUED_AT,
    F_ID,
    F_COUNT
};

/* What each known field is; `rule` is the sentence every rejection of it uses. */
static const struct field_info {
    const char *name;
    bool is_string;
    bool required;
    bool accepts_string; /* an integer that may also come as a decimal string */
    const char *rule;    /* NULL: built at run time (retry_attempt names max retries) */
} fields[F_COUNT] = {
    [F_EXECUTION_ID] = {"execution_id", false, true, true, "must be a positive integer that fits int64"},
    [F_REGION] = {"region", true, true, false, "must be a string of 1..128 bytes"},
    [F_QUESTION_INDEX] = {"question_index", false, true, false, "must be an integer >= 0 and <= 2147483647"},
    [F_RETRY_ATTEMPT] = {"retry_attempt", false, true, false, NULL},
    [F_DELIVERY] = {"delivery", false, false, false, "must be an integer from 0 to 1000"},
    [F_ENQUEUED_AT] = {"enqueued_at", true, false, false, "must be an RFC 3339 timestamp of at most 40 bytes"},
    [F_ID] = {"id", true, false, false, "must be a string of at most 64 printable ASCII characters"},
};

/* One known member found in the payload: cJSON's item and its raw value token. */
typedef struct member {
    const cJSON *item; /* NULL when absent */
    int index;         /* position among the object's members */
    const char *token;
    size_t token_len;
} member_t;

/* The field values before they are checked and narrowed into a retryq_job_t. */
typedef struct job_fields {
    int64_t num[F_COUNT];
    const char *str[F_COUNT]; /* NULL only when a struct's buffer lacks its NUL */
} job_fields_t;

static int rule_error(retryq_error_t *err, enum field f, int max_retries)
{
    if (fields[f].rule == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "%s: must be an integer from 1 to %d (max retries)",
                        fields[f].name, max_retries);
    return rq_error(err, RETRYQ_ERR_INVALID, "%s: %s", fields[f].name, fields[f].rule);
}

static int effective_max_retries(int max_retries)
{
    if (max_retries <= 0)
        return RETRYQ_DEFAULT_MAX_RETRIES;
    return max_retries > RETRYQ_MAX_ATTEMPT ? RETRYQ_MAX_ATTEMPT : max_retries;
}

/* ------------------------------------------------------------ raw-text scans */

static size_t skip_space(const char *t, size_t len, size_t i)
{
    while (i < len && (unsigned char)t[i] <= 0x20)
        i++;
    return i;
}

/* t[i] is an opening quote; returns the index just past the closing quote. */
static size_t skip_string(const char *t, size_t len, size_t i)
{
    for (i++; i < len && t[i] != '"'; i++)
        if (t[i] == '\\')
            i++;
    return i < len ? i + 1 : len;
}

/* Deepest nesting of objects and arrays. The text need not be valid JSON. */
static int json_depth(const char *t, size_t len)
{
    int depth = 0, deepest = 0;
    size_t i = 0;
    while (i < len) {
        if (t[i] == '"') {
            i = skip_string(t, len, i);
            continue;
        }
        if (t[i] == '{' || t[i] == '[') {
            if (++depth > deepest)
                deepest = depth;
        } else if (t[i] == '}' || t[i] == ']') {
            depth--;
        }
        i++;
    }
    return deepest;
}

/* Index just past the value that starts at t[i]; cJSON has already accepted the text. */
static size_t skip_value(const char *t, size_t len, size_t i)
{
    if (t[i] == '"')
        return skip_string(t, len, i);
    if (t[i] != '{' && t[i] != '[') {
        while (i < len && (unsigned char)t[i] > 0x20 && strchr(",}]", t[i]) == NULL)
            i++;
        return i;
    }
    int depth = 0;
    while (i < len) {
        char c = t[i];
        if (c == '"') {
            i = skip_string(t, len, i);
            continue;
        }
        i++;
        if (c == '{' || c == '[')
            depth++;
        else if ((c == '}' || c == ']') && --depth == 0)
            break;
    }
    return i;
}

/* Records the raw value token of every known member, walking the top-level object once. */
static void find_tokens(const char *t, size_t len, member_t members[F_COUNT])
{
    const char *open = memchr(t, '{', len);
    size_t i = (size_t)(open - t) + 1;
    for (int index = 0;; index++) {
        i = skip_space(t, len, i);
        if (i >= len || t[i] != '"')
            return;
        i = skip_space(t, len, skip_string(t, len, i)) + 1; /* past the ':' */
        i = skip_space(t, len, i);
        size_t end = skip_value(t, len, i);
        for (int f = 0; f < F_COUNT; f++) {
            if (members[f].item != NULL && members[f].index == index) {
                members[f].token = t + i;
                members[f].token_len = end - i;
            }
        }
        i = skip_space(t, len, end) + 1; /* past the ',' or '}' */
    }
}

/* True when a raw string token holds a NUL byte or the escape \u0000. */
static bool has_nul(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\0')
            return true;
        if (s[i] == '\\') {
            if (i + 5 < n && memcmp(s + i + 1, "u0000", 5) == 0)
                return true;
            i++;
        }
    }
    return false;
}

/* ------------------------------------------------------------ field readers */

/* Exactly "-"? ("0" | [1-9][0-9]*) over all of s[0..n), within ±INT64_MAX. */
static bool parse_decimal(const char *s, size_t n, bool allow_minus, int64_t *out)
{
    bool negative = n > 0 && s[0] == '-' && allow_minus;
    size_t i = negative ? 1 : 0;
    uint64_t v = 0;
    if (i == n || (s[i] == '0' && n - i > 1))
        return false;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = negative ? -(int64_t)v : (int64_t)v;
    return true;
}

/* The one reader of integer fields: a plain JSON integer within ±(2^53-1) or, where
 * the field allows it, a decimal string of any positive int64. */
static int read_int(const member_t *m, enum field f, int max_retries, int64_t *out,
                    retryq_error_t *err)
{
    if (fields[f].accepts_string && cJSON_IsString(m->item)) {
        const char *s = m->item->valuestring;
        if (has_nul(m->token, m->token_len) || !parse_decimal(s, strlen(s), false, out))
            return rule_error(err, f, max_retries);
        return RETRYQ_OK;
    }
    if (!cJSON_IsNumber(m->item) || m->token == NULL ||
        !parse_decimal(m->token, m->token_len, true, out))
        return rule_error(err, f, max_retries);
    if (*out > JSON_SAFE_INTEGER || *out < -JSON_SAFE_INTEGER)
        return fields[f].accepts_string
                   ? rq_error(err, RETRYQ_ERR_INVALID,
                              "%s: numbers above 2^53-1 must be sent as a decimal string",
                              fields[f].name)
                   : rule_error(err, f, max_retries);
    return RETRYQ_OK;
}

static int read_string(const member_t *m, enum field f, const char **out, retryq_error_t *err)
{
    if (!cJSON_IsString(m->item))
        return rule_error(err, f, 0);
    if (m->token == NULL || has_nul(m->token, m->token_len))
        return rq_error(err, RETRYQ_ERR_INVALID, "%s: must not contain NUL (\\u0000)", fields[f].name);
    *out = m->item->valuestring;
    return RETRYQ_OK;
}

static int read_fields(const member_t m[F_COUNT], int max_retries, job_fields_t *out,
                       retryq_error_t *err)
{
    int rc = RETRYQ_OK;
    for (int f = 0; f < F_COUNT && rc == RETRYQ_OK; f++) {
        out->str[f] = "";
        if (m[f].item == NULL)
            rc = fields[f].required
                     ? rq_error(err, RETRYQ_ERR_INVALID, "%s: is required", fields[f].name)
                     : RETRYQ_OK;
        else if (fields[f].is_string)
            rc = read_string(&m[f], (enum field)f, &out->str[f], err);
        else
            rc = read_int(&m[f], (enum field)f, max_retries, &out->num[f], err);
    }
    return rc;
}

/* Finds the known members among the object's children; a known name twice is refused. */
static int map_members(const cJSON *root, member_t members[F_COUNT], retryq_error_t *err)
{
    int index = 0;
    for (const cJSON *c = root->child; c != NULL; c = c->next, index++) {
        for (int f = 0; f < F_COUNT; f++) {
            if (strcmp(c->string, fields[f].name) != 0)
                continue;
            if (members[f].item != NULL)
                return rq_error(err, RETRYQ_ERR_INVALID, "%s: appears more than once", fields[f].name);
            members[f].item = c;
            members[f].index = index;
        }
    }
    return RETRYQ_OK;
}

static cJSON *parse_object(const char *payload, size_t len, retryq_error_t *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(payload, len, &end, false);
    if (root == NULL) {
        rq_error(err, RETRYQ_ERR_INVALID, "payload: not valid JSON");
        return NULL;
    }
    if (skip_space(payload, len, (size_t)(end - payload)) != len)
        rq_error(err, RETRYQ_ERR_INVALID, "payload: unexpected text after the JSON value");
    else if (!cJSON_IsObject(root))
        rq_error(err, RETRYQ_ERR_INVALID, "payload: must be a JSON object");
    else
        return root;
    cJSON_Delete(root);
    return NULL;
}

/* ------------------------------------------------------------ the rules */

static int check_region(const char *region, retryq_error_t *err)
{
    size_t n = region != NULL ? strlen(region) : 0;
    if (n == 0 || n > RETRYQ_MAX_REGION)
        return rule_error(err, F_REGION, 0);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)region[i];
        if (c < 0x20 || c == 0x7f)
            return rq_error(err, RETRYQ_ERR_INVALID, "region: must not contain control characters");
    }
    if (!rq_utf8_valid(region, n))
        return rq_error(err, RETRYQ_ERR_INVALID, "region: must be valid UTF-8");
    return RETRYQ_OK;
}

static bool timestamp_ok(const char *s)
{
    return s != NULL && (s[0] == '\0' || (strlen(s) <= RETRYQ_MAX_TIMESTAMP && rq_parse_rfc3339(s) >= 0));
}

static bool job_id_ok(const char *s)
{
    if (s == NULL || strlen(s) > RETRYQ_MAX_JOB_ID)
        return false;
    for (; *s != '\0'; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

static bool in_range(int64_t v, int64_t lo, int64_t hi)
{
    return v >= lo && v <= hi;
}

static int check_fields(const job_fields_t *f, int max_retries, retryq_error_t *err)
{
    if (!in_range(f->num[F_EXECUTION_ID], 1, INT64_MAX))
        return rule_error(err, F_EXECUTION_ID, max_retries);
    int rc = check_region(f->str[F_REGION], err);
    if (rc != RETRYQ_OK)
        return rc;
    if (!in_range(f->num[F_QUESTION_INDEX], 0, INT32_MAX))
        return rule_error(err, F_QUESTION_INDEX, max_retries);
    if (!in_range(f->num[F_RETRY_ATTEMPT], 1, max_retries))
        return rule_error(err, F_RETRY_ATTEMPT, max_retries);
    if (!in_range(f->num[F_DELIVERY], 0, RETRYQ_MAX_ATTEMPT))
        return rule_error(err, F_DELIVERY, max_retries);
    if (!timestamp_ok(f->str[F_ENQUEUED_AT]))
        return rule_error(err, F_ENQUEUED_AT, max_retries);
    if (!job_id_ok(f->str[F_ID]))
        return rule_error(err, F_ID, max_retries);
    return RETRYQ_OK;
}

/* Narrows checked fields into the job. */
static void store_fields(const job_fields_t *f, retryq_job_t *job)
{
    memset(job, 0, sizeof *job);
    job->execution_id = f->num[F_EXECUTION_ID];
    job->question_index = f->num[F_QUESTION_INDEX];
    job->retry_attempt = (int32_t)f->num[F_RETRY_ATTEMPT];
    job->delivery = (int32_t)f->num[F_DELIVERY];
    rq_copy(job->region, sizeof job->region, f->str[F_REGION]);
    rq_copy(job->enqueued_at, sizeof job->enqueued_at, f->str[F_ENQUEUED_AT]);
    rq_copy(job->id, sizeof job->id, f->str[F_ID]);
}

/* A struct's string, or NULL when its buffer holds no NUL (so no rule can pass). */
static const char *terminated(const char *buf, size_t cap)
{
    return memchr(buf, '\0', cap) != NULL ? buf : NULL;
}

static void fields_of_job(const retryq_job_t *job, job_fields_t *f)
{
    memset(f, 0, sizeof *f);
    f->num[F_EXECUTION_ID] = job->execution_id;
    f->num[F_QUESTION_INDEX] = job->question_index;
    f->num[F_RETRY_ATTEMPT] = job->retry_attempt;
    f->num[F_DELIVERY] = job->delivery;
    f->str[F_REGION] = terminated(job->region, sizeof job->region);
    f->str[F_ENQUEUED_AT] = terminated(job->enqueued_at, sizeof job->enqueued_at);
    f->str[F_ID] = terminated(job->id, sizeof job->id);
}

/* ------------------------------------------------------------ public API */

int retryq_job_init(retryq_job_t *job, int64_t execution_id, const char *region,
                    int64_t question_index, int32_t retry_attempt, retryq_error_t *err)
{
    char id[RETRYQ_MAX_JOB_ID + 1], now[RETRYQ_MAX_TIMESTAMP + 1];
    job_fields_t f = {0};
    if (job == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "job: missing");
    snprintf(id, sizeof id, "%" PRId64 ":%" PRId32, execution_id, retry_attempt);
    rq_format_rfc3339(rq_now_ms(), now, sizeof now);
    f.num[F_EXECUTION_ID] = execution_id;
    f.num[F_QUESTION_INDEX] = question_index;
    f.num[F_RETRY_ATTEMPT] = retry_attempt;
    f.str[F_REGION] = region;
    f.str[F_ENQUEUED_AT] = now;
    f.str[F_ID] = id;
    int rc = check_fields(&f, RETRYQ_MAX_ATTEMPT, err);
    if (rc == RETRYQ_OK)
        store_fields(&f, job);
    return rc;
}

int retryq_job_decode(const char *payload, size_t len, int max_retries, retryq_job_t *job,
                      retryq_error_t *err)
{
    member_t members[F_COUNT] = {{0}};
    job_fields_t f = {0};
    max_retries = effective_max_retries(max_retries);
    if (payload == NULL || job == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "payload: missing");
    if (len > RETRYQ_MAX_PAYLOAD)
        return rq_error(err, RETRYQ_ERR_TOO_LARGE, "payload: %zu bytes is over the limit of %d",
                        len, RETRYQ_MAX_PAYLOAD);
    if (json_depth(payload, len) > JOB_MAX_DEPTH)
        return rq_error(err, RETRYQ_ERR_INVALID, "payload: nested deeper than %d levels", JOB_MAX_DEPTH);
    cJSON *root = parse_object(payload, len, err);
    if (root == NULL)
        return RETRYQ_ERR_INVALID;
    int rc = map_members(root, members, err);
    if (rc == RETRYQ_OK) {
        find_tokens(payload, len, members);
        rc = read_fields(members, max_retries, &f, err);
    }
    if (rc == RETRYQ_OK)
        rc = check_fields(&f, max_retries, err);
    if (rc == RETRYQ_OK)
        store_fields(&f, job);
    cJSON_Delete(root);
    return rc;
}

int retryq_job_validate(const retryq_job_t *job, int max_retries, retryq_error_t *err)
{
    job_fields_t f;
    if (job == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "job: missing");
    fields_of_job(job, &f);
    return check_fields(&f, effective_max_retries(max_retries), err);
}

/* ------------------------------------------------------------ encoding */

/* Output into a fixed buffer; `len` keeps counting past `cap` so overflow is detected once. */
typedef struct out {
    char *buf;
    size_t cap;
    size_t len;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->len + n < o->cap)
        memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void put_text(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_int(out_t *o, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    put(o, tmp, (size_t)n);
}

/* A JSON string. Valid jobs hold no control characters, but they are escaped anyway. */
static void put_string(out_t *o, const char *s)
{
    put(o, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(o, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(o, esc, 6);
        } else {
            put(o, s, 1);
        }
    }
    put(o, "\"", 1);
}

int retryq_job_encode(const retryq_job_t *job, char *buf, size_t cap)
{
    if (buf == NULL || retryq_job_validate(job, RETRYQ_MAX_ATTEMPT, NULL) != RETRYQ_OK)
        return RETRYQ_ERR_INVALID;
    out_t o = {buf, cap, 0};
    put_text(&o, "{\"execution_id\":");
    if (job->execution_id > JSON_SAFE_INTEGER) {
        char id[24];
        snprintf(id, sizeof id, "%" PRId64, job->execution_id);
        put_string(&o, id);
    } else {
        put_int(&o, job->execution_id);
    }
    put_text(&o, ",\"region\":");
    put_string(&o, job->region);
    put_text(&o, ",\"question_index\":");
    put_int(&o, job->question_index);
    put_text(&o, ",\"retry_attempt\":");
    put_int(&o, job->retry_attempt);
    if (job->delivery > 0) {
        put_text(&o, ",\"delivery\":");
        put_int(&o, job->delivery);
    }
    if (job->enqueued_at[0] != '\0') {
        put_text(&o, ",\"enqueued_at\":");
        put_string(&o, job->enqueued_at);
    }
    if (job->id[0] != '\0') {
        put_text(&o, ",\"id\":");
        put_string(&o, job->id);
    }
    put(&o, "}", 1);
    if (o.len >= cap || o.len > INT32_MAX)
        return RETRYQ_ERR_TOO_LARGE;
    buf[o.len] = '\0';
    return (int)o.len;
}
