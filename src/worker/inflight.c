/*
 * The in-flight indexes (see inflight.h): two chained hash tables whose chains run
 * through the entries the jobs embed. A table starts with INFLIGHT_FIRST buckets and
 * doubles when it holds as many entries as buckets.
 */
#include <stdlib.h>
#include <string.h>

#include "inflight.h"

#define INFLIGHT_FIRST 256 /* buckets of a table at start */

enum { INFLIGHT_KEY = 0, INFLIGHT_PAYLOAD = 1 }; /* the index of chain[], hash[], linked[] */

typedef struct inflight_table {
    inflight_entry_t **slots;
    size_t cap, n;
} inflight_table_t;

struct inflight {
    inflight_table_t table[2];
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t key_hash(int64_t execution_id, int attempt)
{
    return mix64((uint64_t)execution_id * 64 + (uint64_t)(unsigned)attempt);
}

static uint64_t payload_hash(const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return mix64(h);
}

/* Moves the table's entries into `cap` new buckets (a power of two). */
static bool table_alloc(inflight_table_t *t, int which, size_t cap)
{
    inflight_entry_t **slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return false;
    for (size_t i = 0; i < t->cap; i++) {
        inflight_entry_t *e = t->slots[i];
        while (e != NULL) {
            inflight_entry_t *next = e->chain[which];
            size_t slot = (size_t)(e->hash[which] & (cap - 1));
            e->chain[which] = slots[slot];
            slots[slot] = e;
            e = next;
        }
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return true;
}

static void table_add(inflight_t *ix, int which, inflight_entry_t *e, uint64_t hash)
{
    inflight_table_t *t = &ix->table[which];
    if (t->n >= t->cap && t->cap <= SIZE_MAX / 4)
        table_alloc(t, which, t->cap * 2);
    size_t slot = (size_t)(hash & (t->cap - 1));
    e->hash[which] = hash;
    e->chain[which] = t->slots[slot];
    t->slots[slot] = e;
    e->linked[which] = true;
    t->n++;
}

static void table_remove(inflight_t *ix, int which, inflight_entry_t *e)
{
    if (!e->linked[which])
        return;
    inflight_table_t *t = &ix->table[which];
    for (inflight_entry_t **p = &t->slots[e->hash[which] & (t->cap - 1)]; *p != NULL;
         p = &(*p)->chain[which]) {
        if (*p == e) {
            *p = e->chain[which];
            break;
        }
    }
    e->chain[which] = NULL;
    e->linked[which] = false;
    t->n--;
}

static const inflight_entry_t *table_bucket(const inflight_t *ix, int which, uint64_t hash)
{
    const inflight_table_t *t = &ix->table[which];
    return t->slots[hash & (t->cap - 1)];
}

inflight_t *inflight_new(void)
{
    inflight_t *ix = calloc(1, sizeof *ix);
    if (ix == NULL)
        return NULL;
    if (!table_alloc(&ix->table[INFLIGHT_KEY], INFLIGHT_KEY, INFLIGHT_FIRST) ||
        !table_alloc(&ix->table[INFLIGHT_PAYLOAD], INFLIGHT_PAYLOAD, INFLIGHT_FIRST)) {
        inflight_free(ix);
        return NULL;
    }
    return ix;
}

void inflight_free(inflight_t *ix)
{
    if (ix == NULL)
        return;
    free(ix->table[INFLIGHT_KEY].slots);
    free(ix->table[INFLIGHT_PAYLOAD].slots);
    free(ix);
}

void inflight_add_payload(inflight_t *ix, inflight_entry_t *e, const char *payload, size_t len)
{
    e->payload = payload;
    e->len = len;
    table_add(ix, INFLIGHT_PAYLOAD, e, payload_hash(payload, len));
}

bool inflight_held(const inflight_t *ix, const char *payload, size_t len)
{
    uint64_t h = payload_hash(payload, len);
    for (const inflight_entry_t *e = table_bucket(ix, INFLIGHT_PAYLOAD, h); e != NULL;
         e = e->chain[INFLIGHT_PAYLOAD])
        if (e->hash[INFLIGHT_PAYLOAD] == h && e->len == len && memcmp(e->payload, payload, len) == 0)
            return true;
    return false;
}

bool inflight_twin(const inflight_t *ix, const retryq_job_t *req)
{
    uint64_t h = key_hash(req->execution_id, req->retry_attempt);
    for (const inflight_entry_t *e = table_bucket(ix, INFLIGHT_KEY, h); e != NULL;
         e = e->chain[INFLIGHT_KEY])
        if (e->req != req && e->req->execution_id == req->execution_id &&
            e->req->retry_attempt == req->retry_attempt && strcmp(e->req->region, req->region) == 0)
            return true;
    return false;
}

void inflight_add_key(inflight_t *ix, inflight_entry_t *e, const retryq_job_t *req)
{
    e->req = req;
    table_add(ix, INFLIGHT_KEY, e, key_hash(req->execution_id, req->retry_attempt));
}

void inflight_remove(inflight_t *ix, inflight_entry_t *e)
{
    table_remove(ix, INFLIGHT_KEY, e);
    table_remove(ix, INFLIGHT_PAYLOAD, e);
}
