/*
 * Redis Cluster helpers (see cluster.h): hash slots, CLUSTER SLOTS answers, redirections.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "internal.h"

uint16_t cluster_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc = (uint16_t)(crc ^ ((unsigned)(unsigned char)buf[i] << 8));
        for (int bit = 0; bit < 8; bit++)
            crc = (uint16_t)((crc & 0x8000u) != 0 ? ((unsigned)crc << 1) ^ 0x1021u : (unsigned)crc << 1);
    }
    return crc;
}

int cluster_keyslot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1)
            return cluster_crc16(open + 1, (size_t)(close - open - 1)) & (CLUSTER_SLOTS - 1);
    }
    return cluster_crc16(key, len) & (CLUSTER_SLOTS - 1);
}

/* One node entry of CLUSTER SLOTS: [endpoint, port, id, metadata...]. An endpoint that
 * is NULL (Redis 7 with cluster-preferred-endpoint-type unknown-endpoint: "the endpoint
 * the question went to"), empty or "?" is the node asked. */
static bool node_entry(const redisReply *e, const char *asked, char *host, size_t cap, int *port)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        (e->element[0]->type != REDIS_REPLY_STRING && e->element[0]->type != REDIS_REPLY_NIL) ||
        e->element[1]->type != REDIS_REPLY_INTEGER || e->element[1]->integer < 1 ||
        e->element[1]->integer > 65535)
        return false;
    const redisReply *endpoint = e->element[0];
    bool named = endpoint->type == REDIS_REPLY_STRING && endpoint->str[0] != '\0' &&
                 strcmp(endpoint->str, "?") != 0;
    const char *h = named ? endpoint->str : asked;
    if (!rq_copy(host, cap, h))
        return false;
    *port = (int)e->element[1]->integer;
    return true;
}

static void remember(cluster_node_t *seen, int cap, int *count, const char *host, int port)
{
    for (int i = 0; i < *count; i++)
        if (seen[i].port == port && strcmp(seen[i].host, host) == 0)
            return;
    if (*count < cap && rq_copy(seen[*count].host, sizeof seen[*count].host, host)) {
        seen[*count].port = port;
        (*count)++;
    }
}

bool cluster_slot_owner(const redisReply *r, int slot, const char *asked, char *host,
                        size_t host_cap, int *port, cluster_node_t *seen, int seen_cap,
                        int *seen_count)
{
    bool found = false;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return false;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *range = r->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
            range->element[0]->type != REDIS_REPLY_INTEGER ||
            range->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        for (size_t n = 2; n < range->elements; n++) {
            char h[256];
            int p;
            if (!node_entry(range->element[n], asked, h, sizeof h, &p))
                continue;
            if (seen != NULL)
                remember(seen, seen_cap, seen_count, h, p);
            if (n == 2 && !found && slot >= range->element[0]->integer &&
                slot <= range->element[1]->integer && rq_copy(host, host_cap, h)) {
                *port = p;
                found = true;
            }
        }
    }
    return found;
}

bool cluster_redirect_parse(const char *error, cluster_redirect_kind_t *kind, int *slot,
                            char *host, size_t host_cap, int *port)
{
    size_t skip;
    if (strncmp(error, "MOVED ", 6) == 0) {
        *kind = CLUSTER_MOVED;
        skip = 6;
    } else if (strncmp(error, "ASK ", 4) == 0) {
        *kind = CLUSTER_ASK;
        skip = 4;
    } else {
        return false;
    }
    char *end;
    long s = strtol(error + skip, &end, 10);
    if (end == error + skip || *end != ' ' || s < 0 || s >= CLUSTER_SLOTS)
        return false;
    const char *addr = end + 1, *colon = strrchr(addr, ':');
    if (colon == NULL)
        return false;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || p < 1 || p > 65535)
        return false;
    const char *h = addr, *h_end = colon;
    if (h_end > h && *h == '[' && h_end[-1] == ']') { /* [v6]:port */
        h++;
        h_end--;
    }
    size_t n = (size_t)(h_end - h);
    if (n >= host_cap)
        return false;
    memcpy(host, h, n);
    host[n] = '\0';
    *slot = (int)s;
    *port = (int)p;
    return true;
}

bool cluster_retry_later(const char *error)
{
    return strncmp(error, "ASK ", 4) == 0 || strncmp(error, "TRYAGAIN", 8) == 0 ||
           strncmp(error, "CLUSTERDOWN", 11) == 0;
}
