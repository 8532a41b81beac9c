/*
 * The Redis key names of one queue (DESIGN §3). Every key but the pending list carries
 * the queue name in braces, a cluster hash tag, so one queue's keys share a slot.
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
