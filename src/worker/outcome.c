/*
 * The outcome documents (see outcome.h): cJSON trees built with every addition checked,
 * printed unformatted. The failure documents follow the runner's frame
 * {"error", "error_code", "retry_attempt", "failure": {...}}, so a row a retry wrote reads
 * like one the runner wrote itself.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "outcome.h"

/* The text of a document built with every addition checked (`complete`); NULL when one
 * failed (out of memory): a document with a field missing is never stored. */
static char *checked_json(cJSON *obj, bool complete)
{
    char *text = obj != NULL && complete ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return text;
}

char *outcome_history_entry(const outcome_job_t *job, int64_t at_ms, int64_t duration_ms)
{
    char ts[48];
    rq_format_rfc3339(at_ms, ts, sizeof ts);
    cJSON *e = cJSON_CreateObject();
    bool ok = e != NULL;
    ok = ok && cJSON_AddNumberToObject(e, "attempt", job->attempt) != NULL;
    ok = ok && cJSON_AddStringToObject(e, "status", job->history_status) != NULL;
    ok = ok && cJSON_AddStringToObject(e, "timestamp", ts) != NULL;
    ok = ok && cJSON_AddStringToObject(e, "worker", job->worker) != NULL;
    if (job->provider != NULL)
        ok = ok && cJSON_AddStringToObject(e, "provider", job->provider) != NULL;
    else
        ok = ok && cJSON_AddNullToObject(e, "provider") != NULL;
    ok = ok && cJSON_AddNumberToObject(e, "duration_ms", (double)duration_ms) != NULL;
    if (job->error != NULL)
        ok = ok && cJSON_AddStringToObject(e, "error", job->error) != NULL;
    else
        ok = ok && cJSON_AddNullToObject(e, "error") != NULL;
    if (job->delivery > 0)
        ok = ok && cJSON_AddNumberToObject(e, "delivery", job->delivery) != NULL;
    if (job->question != NULL && job->question->note != NULL)
        ok = ok && cJSON_AddStringToObject(e, "note", job->question->note) != NULL;
    return checked_json(e, ok);
}

/* {"error", "error_code", "failure": {stage, component, subcomponent, code, type, region,
 * model, message}} with retry_attempt: the frame of every failure document. */
static cJSON *failure_frame(const outcome_job_t *job, const char *error, const char *code,
                            const char *stage, const char *component, const char *subcomponent,
                            const char *type, const char *region, const char *message,
                            cJSON **failure)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *f = cJSON_CreateObject();
    if (o == NULL || f == NULL || !cJSON_AddItemToObject(o, "failure", f)) {
        cJSON_Delete(o);
        cJSON_Delete(f);
        return NULL;
    }
    bool ok = true;
    ok = ok && cJSON_AddStringToObject(o, "error", error) != NULL;
    ok = ok && cJSON_AddStringToObject(o, "error_code", code) != NULL;
    ok = ok && cJSON_AddNumberToObject(o, "retry_attempt", job->attempt) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "stage", stage) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "component", component) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "subcomponent", subcomponent) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "code", code) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "type", type) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "region", region) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "model", job->model != NULL ? job->model : "") != NULL;
    ok = ok && cJSON_AddStringToObject(f, "message", message) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    *failure = f;
    return o;
}

char *outcome_input_failure(const outcome_job_t *job, const char *code, const char *type)
{
    const char *error = job->error != NULL ? job->error : "unknown error";
    cJSON *f = NULL;
    cJSON *o = failure_frame(job, error, code, "retry", "retryq", "worker", type, job->region,
                             error, &f);
    if (o == NULL)
        return NULL;
    return checked_json(o, cJSON_AddBoolToObject(f, "transient", false) != NULL);
}

/*
 * output_data of a router failure in the runner's exact vocabulary (its HybridExecutor):
 * error "hybrid error: <message>", error_code ROUTER_*, and a failure document whose
 * stage, type and code follow the kind of failure, with the router-form region (or the
 * router's metadata.region), http_status and url for HTTP errors, the provider, its
 * metadata's provider_type and failure, and whether the failure is transient.
 */
char *outcome_router_failure(const outcome_job_t *job, const router_outcome_t *out, const char *path)
{
    char code_buf[32];
    const char *code = router_failure_code(out->failure, out->http_status, code_buf, sizeof code_buf);
    const char *message = out->error != NULL ? out->error : "router call failed";
    cJSON *meta = out->metadata_json != NULL ? cJSON_Parse(out->metadata_json) : NULL;
    const cJSON *meta_region = cJSON_GetObjectItemCaseSensitive(meta, "region");
    const char *region = cJSON_IsString(meta_region) && meta_region->valuestring[0] != '\0'
                             ? meta_region->valuestring
                             : job->router_region;
    bool transient = out->verdict == ROUTER_TRANSIENT || out->failure == ROUTER_FAILURE_TIMEOUT ||
                     out->failure == ROUTER_FAILURE_NETWORK ||
                     (out->failure == ROUTER_FAILURE_HTTP && out->http_status >= 500);
    cJSON *f = NULL;
    cJSON *o = failure_frame(job, job->error != NULL ? job->error : message, code,
                             router_failure_stage(out->failure), "hybrid_router", "inference",
                             router_failure_type(out->failure), region != NULL ? region : "",
                             message, &f);
    if (o == NULL) {
        cJSON_Delete(meta);
        return NULL;
    }
    bool ok = true;
    if (out->http_status > 0 && out->failure == ROUTER_FAILURE_HTTP)
        ok = ok && cJSON_AddNumberToObject(f, "http_status", (double)out->http_status) != NULL;
    if (path != NULL && out->failure == ROUTER_FAILURE_HTTP)
        ok = ok && cJSON_AddStringToObject(f, "url", path) != NULL;
    if (out->error_code != NULL) /* retryq's finer reason: too_large, rate_limited, ... */
        ok = ok && cJSON_AddStringToObject(f, "retryq_reason", out->error_code) != NULL;
    if (out->provider != NULL)
        ok = ok && cJSON_AddStringToObject(f, "provider", out->provider) != NULL;
    static const char *const copied[][2] = {{"provider_type", "provider_type"}, {"failure", "router_failure"}};
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++) {
        cJSON *item = cJSON_DetachItemFromObjectCaseSensitive(meta, copied[i][0]);
        if (item != NULL && !cJSON_AddItemToObject(f, copied[i][1], item)) {
            cJSON_Delete(item);
            ok = false;
        }
    }
    ok = ok && cJSON_AddBoolToObject(f, "transient", transient) != NULL;
    if (out->failure == ROUTER_FAILURE_ROUTER && out->error != NULL)
        ok = ok && cJSON_AddStringToObject(o, "router_error", out->error) != NULL;
    cJSON_Delete(meta);
    return checked_json(o, ok);
}

char *outcome_hybrid_error(const char *message)
{
    char *text = NULL;
    if (asprintf(&text, "hybrid error: %s", message) < 0)
        return NULL;
    return text;
}

char *outcome_success(const outcome_job_t *job, const router_outcome_t *out)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    bool ok = true;
    ok = ok && cJSON_AddStringToObject(o, "response", out->response != NULL ? out->response : "") != NULL;
    if (out->provider != NULL) {
        ok = ok && cJSON_AddStringToObject(o, "provider", out->provider) != NULL;
        ok = ok && cJSON_AddStringToObject(o, "provider_used", out->provider) != NULL;
    }
    ok = ok && cJSON_AddNumberToObject(o, "inference_sec", out->inference_sec) != NULL;
    cJSON *meta = out->metadata_json != NULL ? cJSON_Parse(out->metadata_json) : NULL;
    if (meta == NULL)
        meta = cJSON_CreateObject();
    if (meta == NULL || !cJSON_AddItemToObject(o, "metadata", meta)) {
        cJSON_Delete(meta);
        ok = false;
    }
    ok = ok && cJSON_AddNumberToObject(o, "retry_attempt", job->attempt) != NULL;
    if (job->question != NULL && job->question->id != NULL)
        ok = ok && cJSON_AddStringToObject(o, "question_id", job->question->id) != NULL;
    return checked_json(o, ok);
}
