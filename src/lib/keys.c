/*
 * The Redis key names of one queue (DESIGN §3), flow control's included. Every key but
 * the pending list carries the queue name in braces, a cluster hash tag, so one queue's
 * keys share a slot.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

int retryq_keys_init(retryq_keys_t *keys, const char *queue, retryq_error_t *err)
{
    size_t n = queue != NULL ? strlen(queue) : 0;
    if (keys == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "queue keys: missing");
    if (n == 0 || n > RETRYQ_MAX_QUEUE_NAME)
        return rq_error(err, RETRYQ_ERR_INVALID, "queue name: must be 1..%d bytes",
                        RETRYQ_MAX_QUEUE_NAME);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)queue[i];
        if (c <= 0x20 || c >= 0x7f || c == '{' || c == '}')
            return rq_error(err, RETRYQ_ERR_INVALID,
                            "queue name: must be printable ASCII without spaces or braces");
    }
    memset(keys, 0, sizeof *keys);
    memcpy(keys->pending, queue, n);
    snprintf(keys->processing_prefix, sizeof keys->processing_prefix, "{%s}:processing:", queue);
    snprintf(keys->workers, sizeof keys->workers, "{%s}:workers", queue);
    snprintf(keys->delayed, sizeof keys->delayed, "{%s}:delayed", queue);
    snprintf(keys->dead, sizeof keys->dead, "{%s}:dead", queue);
    snprintf(keys->flow_paused, sizeof keys->flow_paused, "{%s}:flow:paused", queue);
    snprintf(keys->flow_breakers, sizeof keys->flow_breakers, "{%s}:flow:breakers", queue);
    snprintf(keys->flow_keys, sizeof keys->flow_keys, "{%s}:flow:keys", queue);
    snprintf(keys->paused, sizeof keys->paused, "{%s}:paused", queue);
    snprintf(keys->cancelled, sizeof keys->cancelled, "{%s}:cancelled", queue);
    return RETRYQ_OK;
}

int retryq_keys_processing(const retryq_keys_t *keys, const char *worker_id, char *buf, size_t cap)
{
    if (keys == NULL || worker_id == NULL || worker_id[0] == '\0' || buf == NULL)
        return RETRYQ_ERR_INVALID;
    int n = snprintf(buf, cap, "%s%s", keys->processing_prefix, worker_id);
    if (n < 0 || (size_t)n >= cap)
        return RETRYQ_ERR_TOO_LARGE;
    return n;
}

int retryq_keys_taken(const retryq_keys_t *keys, const char *worker_id, char *buf, size_t cap)
{
    if (keys == NULL || worker_id == NULL || worker_id[0] == '\0' || buf == NULL)
        return RETRYQ_ERR_INVALID;
    int n = snprintf(buf, cap, "{%s}:taken:%s", keys->pending, worker_id);
    if (n < 0 || (size_t)n >= cap)
        return RETRYQ_ERR_TOO_LARGE;
    return n;
}

int retryq_keys_flow(const retryq_keys_t *keys, retryq_flow_kind_t kind, const char *flow_key,
                     char *buf, size_t cap)
{
    static const char *const kinds[] = {"pause", "permits", "bucket"};
    if (keys == NULL || flow_key == NULL || buf == NULL || (unsigned)kind >= sizeof kinds / sizeof kinds[0])
        return RETRYQ_ERR_INVALID;
    int n = snprintf(buf, cap, "{%s}:flow:%s:%s", keys->pending, kinds[kind], flow_key);
    if (n < 0 || (size_t)n >= cap)
        return RETRYQ_ERR_TOO_LARGE;
    return n;
}
