/*
 * retryq-mock-router: a stand-in for the hybrid inference router (beacon-schema.md,
 * "Hybrid router HTTP API") used by the tests, the benchmarks and the demo.
 *
 * It owns one libevent event_base and one evhttp server on one thread. Every inference
 * request becomes a `pending_t` that owns one timer; the timer carries the request through
 * its delay and then through the chosen behaviour ("mode": ok, router_error, http_503,
 * hang, trickle, reset, ...). Nothing sleeps, so thousands of slow requests are answered
 * on time. A connection's close callback tells us when a client gave up; the pending
 * request is then freed at once. The mode of a request comes from, in order: the
 * X-Mock-Mode header, a "[mock:MODE]" rule in the prompt, the --fail-rate draw, the
 * default --mode. GET /stats, POST /reset and POST /config let tests observe and steer
 * it at run time. docs/mock-router.md is the user guide.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#define MOCK_MAX_DELAY_MS 86400000L       /* one day */
#define MOCK_CONN_TIMEOUT_SEC 86400       /* evhttp's own idle timeout (default 50 s) would cut hang/slow */
#define MOCK_LISTEN_BACKLOG 65535         /* the kernel caps it at net.core.somaxconn */
#define MOCK_CHUNK_BYTES (64 * 1024)      /* huge mode streams in chunks of this size */
#define MOCK_ATTEMPTS_KEPT 32             /* attempt headers remembered per execution id */
#define MOCK_QUESTION_MAX 200             /* bytes of the question echoed in an answer */

/* ------------------------------------------------------------------ modes */

typedef enum mock_mode {
    MODE_OK, MODE_ROUTER_ERROR, MODE_HTTP_500, MODE_HTTP_502, MODE_HTTP_503, MODE_HTTP_429,
    MODE_HTTP_408, MODE_HTTP_400, MODE_HTTP_404, MODE_GARBAGE, MODE_NOT_OBJECT, MODE_WRONG_TYPES,
    MODE_HUGE, MODE_HANG, MODE_TRICKLE, MODE_CLOSE_MID_BODY, MODE_RESET, MODE_NUL, MODE_SLOW,
    MODE_FLAKY_ONCE, MODE_RECEIPT_OBJECT, MODE_RECEIPT_STRING, MODE_COUNT
} mock_mode_t;

static const char *const mode_names[MODE_COUNT] = {
    "ok", "router_error", "http_500", "http_502", "http_503", "http_429", "http_408", "http_400",
    "http_404", "garbage", "not_object", "wrong_types", "huge", "hang", "trickle",
    "close_mid_body", "reset", "nul", "slow", "flaky_once", "receipt_object", "receipt_string",
};

/* Status, reason, Retry-After and diagnostic text of the plain HTTP error modes. */
typedef struct http_error_spec {
    mock_mode_t mode;
    int code;
    const char *reason;
    const char *retry_after;
    const char *head; /* the diagnostic text is head + provider name + tail */
    const char *tail;
} http_error_spec_t;

static const http_error_spec_t http_errors[] = {
    {MODE_HTTP_500, 500, "Internal Server Error", NULL,
     "Internal Server Error: provider ", " raised an exception during inference (mock)\n"},
    {MODE_HTTP_502, 502, "Bad Gateway", NULL,
     "Bad Gateway: upstream provider ", " closed the connection (mock)\n"},
    {MODE_HTTP_503, 503, "Service Unavailable", "1",
     "Service Unavailable: no healthy provider available, last tried ", " (mock)\n"},
    {MODE_HTTP_429, 429, "Too Many Requests", "2",
     "Too Many Requests: rate limit exceeded at provider ", " (mock)\n"},
    {MODE_HTTP_408, 408, "Request Timeout", NULL,
     "Request Timeout: provider ", " did not answer in time (mock)\n"},
    {MODE_HTTP_400, 400, "Bad Request", NULL,
     "Bad Request: the router refused the request for provider ", " (mock)\n"},
    {MODE_HTTP_404, 404, "Not Found", NULL,
     "Not Found: no inference endpoint here (provider ", ") (mock)\n"},
};

static int mode_parse(const char *text, size_t len)
{
    for (int i = 0; i < MODE_COUNT; i++)
        if (strlen(mode_names[i]) == len && strncasecmp(text, mode_names[i], len) == 0)
            return i;
    return -1;
}

/* ------------------------------------------------------------------ configuration */

typedef struct mock_config {
    const char *listen;
    const char *port_file;
    mock_mode_t mode;
    long latency_ms;
    long jitter_ms;
    double fail_rate;
    mock_mode_t fail_mode;
    uint64_t seed;
    size_t huge_bytes;
    long slow_ms;
    long trickle_ms;
    size_t max_request_bytes;
    const char *inference_path;
    bool quiet;
} mock_config_t;

typedef enum opt_type { OPT_STRING, OPT_MS, OPT_RATE, OPT_MODE, OPT_U64, OPT_SIZE, OPT_FLAG } opt_type_t;

/* One table gives flags, environment variables, defaults, validation and --help. */
typedef struct option_spec {
    const char *flag;
    const char *env;
    opt_type_t type;
    size_t offset;
    const char *defval;
    const char *help;
} option_spec_t;

#define CFG(field) offsetof(mock_config_t, field)
static const option_spec_t option_table[] = {
    {"listen", "RETRYQ_MOCK_LISTEN", OPT_STRING, CFG(listen), "127.0.0.1:0",
     "HOST:PORT to listen on ([::1]:PORT for IPv6); port 0 picks a free port"},
    {"port-file", "RETRYQ_MOCK_PORT_FILE", OPT_STRING, CFG(port_file), NULL,
     "once listening, write the bound port to PATH (atomically, via rename)"},
    {"mode", "RETRYQ_MOCK_MODE", OPT_MODE, CFG(mode), "ok", "default behaviour (see MODES)"},
    {"latency-ms", "RETRYQ_MOCK_LATENCY_MS", OPT_MS, CFG(latency_ms), "0", "delay before answering"},
    {"jitter-ms", "RETRYQ_MOCK_JITTER_MS", OPT_MS, CFG(jitter_ms), "0",
     "extra delay, uniform in [0, N] ms"},
    {"fail-rate", "RETRYQ_MOCK_FAIL_RATE", OPT_RATE, CFG(fail_rate), "0",
     "fraction (0..1) of requests that get --fail-mode instead of --mode"},
    {"fail-mode", "RETRYQ_MOCK_FAIL_MODE", OPT_MODE, CFG(fail_mode), "http_503",
     "behaviour of the --fail-rate fraction"},
    {"seed", "RETRYQ_MOCK_SEED", OPT_U64, CFG(seed), "1", "seed of the --fail-rate and jitter draws"},
    {"huge-bytes", "RETRYQ_MOCK_HUGE_BYTES", OPT_SIZE, CFG(huge_bytes), "8M",
     "body size of mode huge (suffix K or M for KiB, MiB)"},
    {"slow-ms", "RETRYQ_MOCK_SLOW_MS", OPT_MS, CFG(slow_ms), "2000",
     "delay of mode slow when no latency is set"},
    {"trickle-ms", "RETRYQ_MOCK_TRICKLE_MS", OPT_MS, CFG(trickle_ms), "200",
     "interval between the bytes of mode trickle"},
    {"max-request-bytes", "RETRYQ_MOCK_MAX_REQUEST_BYTES", OPT_SIZE, CFG(max_request_bytes), "1M",
     "larger request bodies get 413"},
    {"inference-path", "RETRYQ_MOCK_INFERENCE_PATH", OPT_STRING, CFG(inference_path), NULL,
     "serve inference on this one of the four router paths only (the others answer 404)"},
    {"quiet", "RETRYQ_MOCK_QUIET", OPT_FLAG, CFG(quiet), "0", "log warnings and errors only"},
};
#define OPTION_COUNT (sizeof(option_table) / sizeof(option_table[0]))

static bool parse_long(const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* Parses `value` for option `opt` and stores it in `cfg`; 0 or -1 with `err` filled. */
static int option_apply(mock_config_t *cfg, const option_spec_t *opt, const char *value, char *err,
                        size_t errcap)
{
    char *field = (char *)cfg + opt->offset;
    char *end = NULL;
    long ms = 0;
    int mode = 0;

    switch (opt->type) {
    case OPT_STRING:
        *(const char **)(void *)field = value;
        return 0;
    case OPT_MS:
        if (!parse_long(value, 0, MOCK_MAX_DELAY_MS, &ms))
            break;
        *(long *)(void *)field = ms;
        return 0;
    case OPT_RATE: {
        errno = 0;
        double d = strtod(value, &end);
        if (errno != 0 || end == value || *end != '\0' || !(d >= 0.0 && d <= 1.0))
            break;
        *(double *)(void *)field = d;
        return 0;
    }
    case OPT_MODE:
        if ((mode = mode_parse(value, strlen(value))) < 0)
            break;
        *(mock_mode_t *)(void *)field = (mock_mode_t)mode;
        return 0;
    case OPT_U64: {
        errno = 0;
        unsigned long long u = strtoull(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || value[0] == '-')
            break;
        *(uint64_t *)(void *)field = (uint64_t)u;
        return 0;
    }
    case OPT_SIZE: {
        errno = 0;
        unsigned long long u = strtoull(value, &end, 10);
        unsigned long long unit = 1;
        if (errno != 0 || end == value || value[0] == '-')
            break;
        if (*end == 'K' || *end == 'k')
            unit = 1024, end++;
        else if (*end == 'M' || *end == 'm')
            unit = 1024 * 1024, end++;
        if (*end != '\0' || u > (1ULL << 30) / unit)
            break;
        *(size_t *)(void *)field = (size_t)(u * unit);
        return 0;
    }
    case OPT_FLAG:
        if (strcmp(value, "1") == 0 || strcasecmp(value, "true") == 0 || strcasecmp(value, "yes") == 0)
            *(bool *)(void *)field = true;
        else if (strcmp(value, "0") == 0 || strcasecmp(value, "false") == 0 || strcasecmp(value, "no") == 0)
            *(bool *)(void *)field = false;
        else
            break;
        return 0;
    }
    snprintf(err, errcap, "invalid value for --%s (%s): \"%s\"", opt->flag, opt->env, value);
    return -1;
}

static void print_help(FILE *out)
{
    fprintf(out, "Usage: retryq-mock-router [OPTION]...\n"
                 "A stand-in for the hybrid inference router, for tests, benchmarks and demos.\n\n");
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const option_spec_t *o = &option_table[i];
        char left[64];
        snprintf(left, sizeof(left), "--%s%s", o->flag, o->type == OPT_FLAG ? "" : " VALUE");
        fprintf(out, "  %-28s %s\n  %-28s [env %s%s%s]\n", left, o->help, "", o->env,
                o->defval ? ", default " : "", o->defval ? o->defval : "");
    }
    fprintf(out, "  %-28s print this help\n  %-28s print the version\n\nMODES\n ", "-h, --help",
            "-V, --version");
    for (int i = 0; i < MODE_COUNT; i++)
        fprintf(out, " %s", mode_names[i]);
    fprintf(out, "\nPer request: header X-Mock-Mode: MODE, header X-Mock-Latency-Ms: N, or\n"
                 "\"[mock:MODE]\" / \"[mock-latency-ms:N]\" inside the prompt.\n"
                 "Endpoints: POST /inference (/api/v1/inference, /api/inference, /v1/inference),\n"
                 "GET /health, GET /stats, POST /reset, GET|POST /config, GET|POST /keys. See docs/mock-router.md.\n");
}

/* Defaults, then environment, then flags. 0: run; 1: exit 0 (help/version); -1: usage error. */
static int config_load(mock_config_t *cfg, int argc, char **argv, char *err, size_t errcap)
{
    struct option longopts[OPTION_COUNT + 3];
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const option_spec_t *o = &option_table[i];
        if (o->defval && option_apply(cfg, o, o->defval, err, errcap) < 0)
            return -1;
    }
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const char *v = getenv(option_table[i].env);
        if (v && *v && option_apply(cfg, &option_table[i], v, err, errcap) < 0)
            return -1;
    }
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        longopts[i].name = option_table[i].flag;
        longopts[i].has_arg = option_table[i].type == OPT_FLAG ? no_argument : required_argument;
        longopts[i].flag = NULL;
        longopts[i].val = 1000 + (int)i;
    }
    longopts[OPTION_COUNT] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[OPTION_COUNT + 1] = (struct option){"version", no_argument, NULL, 'V'};
    longopts[OPTION_COUNT + 2] = (struct option){NULL, 0, NULL, 0};

    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hVq", longopts, NULL)) != -1) {
        if (c == 'h') {
            print_help(stdout);
            return 1;
        }
        if (c == 'V') {
            printf("retryq-mock-router %s\n", RETRYQ_VERSION);
            return 1;
        }
        if (c == 'q') {
            cfg->quiet = true;
        } else if (c >= 1000 && c < 1000 + (int)OPTION_COUNT) {
            const option_spec_t *o = &option_table[c - 1000];
            if (option_apply(cfg, o, o->type == OPT_FLAG ? "1" : optarg, err, errcap) < 0)
                return -1;
        } else {
            snprintf(err, errcap, "unknown option or missing value: %s (try --help)",
                     argv[optind > 1 ? optind - 1 : 0]);
            return -1;
        }
    }
    if (optind < argc) {
        snprintf(err, errcap, "unexpected argument: %s", argv[optind]);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ server state */

/* How often one X-Retryq-Execution id was seen, and its last attempt headers. */
typedef struct call_entry {
    char *key;
    uint64_t count;
    long attempts[MOCK_ATTEMPTS_KEPT];
    size_t nattempts;
    char region[64];            /* region_preference of the last call ("" when absent) */
    struct call_entry *next;
} call_entry_t;

typedef struct call_map {
    call_entry_t **buckets;
    size_t nbuckets;
    size_t count;
} call_map_t;

typedef struct pending pending_t;

/* The paths the runner's Go client tries, in its order. */
static const char *const inference_paths[] = {"/inference", "/api/v1/inference", "/api/inference",
                                              "/v1/inference"};
#define MOCK_PATH_COUNT (sizeof(inference_paths) / sizeof(inference_paths[0]))

static int inference_path_index(const char *path)
{
    for (size_t i = 0; i < MOCK_PATH_COUNT; i++)
        if (strcmp(path, inference_paths[i]) == 0)
            return (int)i;
    return -1;
}

/*
 * Per-key behaviour (POST /keys): a key is (model, routed region). A rule matches a key
 * by model and region ("*" for any) and, while its window lasts, sets the mode, a fail
 * rate, the latency, the Retry-After text and x-ratelimit-* headers of that key's calls.
 * Every key that was called has counters, among them the most calls in flight at once.
 */
#define MOCK_RULES_MAX 32
#define MOCK_KEYS_MAX 256

typedef struct key_rule {
    char model[128], region[32];  /* "*" matches any */
    int mode;                     /* -1: not set */
    double fail_rate;
    mock_mode_t fail_mode;
    long latency_ms;              /* -1: not set */
    char retry_after[64];         /* "": the mode's own */
    long ratelimit_reset_ms;      /* >= 0: x-ratelimit-remaining-requests: 0 + reset */
    bool forever;
    struct timespec until;        /* CLOCK_MONOTONIC end of the window */
} key_rule_t;

typedef struct key_stat {
    char model[128], region[32];
    uint64_t calls, in_flight, max_in_flight;
    uint64_t status_2xx, status_429, status_5xx, status_other, gone;
} key_stat_t;

typedef struct mock_server {
    struct event_base *base;
    struct evhttp *http;
    struct evconnlistener *listener;
    struct event *sig_term;
    struct event *sig_int;
    mock_config_t cfg;          /* the defaults; POST /config changes them */
    uint64_t rng;
    uint64_t next_request_id;
    uint64_t requests_total;
    uint64_t invalid_total;
    uint64_t by_mode[MODE_COUNT];
    uint64_t by_path[MOCK_PATH_COUNT]; /* inference requests per path, 404s included */
    call_map_t calls;
    cJSON *last_request;
    cJSON *last_headers;
    pending_t *pending;         /* every request waiting or streaming */
    size_t in_flight;
    char *filler;               /* MOCK_CHUNK_BYTES of text for mode huge */
    struct timespec started;
    key_rule_t rules[MOCK_RULES_MAX];
    size_t nrules;
    key_stat_t keys[MOCK_KEYS_MAX];
    size_t nkeys;
} mock_server_t;

typedef enum pending_phase { PHASE_DELAY, PHASE_TRICKLE, PHASE_CLOSE } pending_phase_t;

/* One inference request between its arrival and its answer (or its client's departure). */
struct pending {
    mock_server_t *server;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *timer;
    struct event *watch;        /* readable socket while we wait: did the client leave? */
    pending_t *prev, *next;
    mock_mode_t mode;           /* the effective behaviour (flaky_once already resolved) */
    pending_phase_t phase;
    long delay_ms;
    uint64_t request_id;
    long execution_attempt;
    char *execution;            /* X-Retryq-Execution or NULL */
    char *model, *region, *provider, *question;
    long tokens_in, max_tokens;
    struct timespec arrived;
    char *body;                 /* trickle / close_mid_body: the whole body; huge: the suffix */
    size_t body_len, sent;
    size_t filler_left;
    int key;                    /* index in server->keys, -1 when not counted */
    char retry_after[64];       /* from a key rule: replaces the mode's Retry-After ("": none) */
    long ratelimit_reset_ms;    /* from a key rule: >= 0 adds x-ratelimit-* headers */
};

/* One logfmt line on stderr; with --quiet only warnings and errors (s may be NULL: always). */
__attribute__((format(printf, 3, 4)))
static void mlog(const mock_server_t *s, const char *level, const char *fmt, ...)
{
    if (s && s->cfg.quiet && (strcmp(level, "info") == 0 || strcmp(level, "debug") == 0))
        return;
    char ts[32], line[2048];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line, sizeof(line), "ts=%s.%03ldZ level=%s component=mock-router ", ts,
                     now.tv_nsec / 1000000, level);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line); /* one write per line: lines from several processes do not mix */
}

static double elapsed_sec(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) + (double)(now.tv_nsec - since->tv_nsec) / 1e9;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double unit_draw(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

static void call_map_clear(call_map_t *map)
{
    for (size_t i = 0; i < map->nbuckets; i++) {
        call_entry_t *e = map->buckets[i];
        while (e) {
            call_entry_t *next = e->next;
            free(e->key);
            free(e);
            e = next;
        }
    }
    free(map->buckets);
    memset(map, 0, sizeof(*map));
}

/* Finds or adds the entry of `key`; NULL when out of memory. */
static call_entry_t *call_map_get(call_map_t *map, const char *key)
{
    if (map->count >= map->nbuckets) { /* grow: keep chains short */
        size_t n = map->nbuckets ? map->nbuckets * 2 : 256;
        call_entry_t **nb = calloc(n, sizeof(*nb));
        if (!nb)
            return NULL;
        for (size_t i = 0; i < map->nbuckets; i++) {
            for (call_entry_t *e = map->buckets[i], *next; e; e = next) {
                next = e->next;
                size_t b = fnv1a(e->key) & (n - 1);
                e->next = nb[b];
                nb[b] = e;
            }
        }
        free(map->buckets);
        map->buckets = nb;
        map->nbuckets = n;
    }
    size_t b = fnv1a(key) & (map->nbuckets - 1);
    for (call_entry_t *e = map->buckets[b]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    call_entry_t *e = calloc(1, sizeof(*e));
    if (!e || !(e->key = strdup(key))) {
        free(e);
        return NULL;
    }
    e->next = map->buckets[b];
    map->buckets[b] = e;
    map->count++;
    return e;
}

/* ------------------------------------------------------------------ replies */

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                       const char *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Server", "retryq-mock-router");
    if (evbuffer_add(out, body, len) < 0) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evhttp_send_reply(req, code, reason, NULL);
}

/* Sends `json` (consumed) with `code`. */
static void reply_json(struct evhttp_request *req, int code, const char *reason, cJSON *json)
{
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!text) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    reply_text(req, code, reason, "application/json", text, strlen(text));
    free(text);
}

static void reply_json_error(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddBoolToObject(o, "success", false);
        cJSON_AddStringToObject(o, "error", msg);
    }
    reply_json(req, code, reason, o);
}

/* ------------------------------------------------------------------ pending requests */

static void pending_free(pending_t *p)
{
    mock_server_t *s = p->server;
    if (p->prev)
        p->prev->next = p->next;
    else
        s->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    s->in_flight--;
    if (p->key >= 0)
        s->keys[p->key].in_flight--;
    if (p->timer)
        event_free(p->timer);
    if (p->watch)
        event_free(p->watch);
    free(p->execution);
    free(p->model);
    free(p->region);
    free(p->provider);
    free(p->question);
    free(p->body);
    free(p);
}

/* The request is finished from our side: forget it before libevent may free the connection. */
static struct evhttp_request *pending_release(pending_t *p, const char *event, int status)
{
    struct evhttp_request *req = p->req;
    mlog(p->server, "info", "event=%s request_id=%" PRIu64 " execution=%s attempt=%ld mode=%s status=%d "
         "delay_ms=%ld elapsed_ms=%.0f", event, p->request_id, p->execution ? p->execution : "-",
         p->execution_attempt, mode_names[p->mode], status, p->delay_ms, elapsed_sec(&p->arrived) * 1000.0);
    if (p->key >= 0) {
        key_stat_t *k = &p->server->keys[p->key];
        if (status >= 200 && status < 300)
            k->status_2xx++;
        else if (status == 429)
            k->status_429++;
        else if (status >= 500 && status < 600)
            k->status_5xx++;
        else
            k->status_other++;
    }
    evhttp_connection_set_closecb(p->evcon, NULL, NULL);
    pending_free(p);
    return req;
}

/*
 * The client went away (or the server is being freed). When libevent detached the
 * unanswered request from the dying connection, the request is ours to free; when it is
 * still attached, the connection frees it right after this callback.
 */
static void pending_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    pending_t *p = arg;
    struct evhttp_request *req = p->req;
    mlog(p->server, "info", "event=client_gone request_id=%" PRIu64 " execution=%s mode=%s elapsed_ms=%.0f",
         p->request_id, p->execution ? p->execution : "-", mode_names[p->mode],
         elapsed_sec(&p->arrived) * 1000.0);
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    if (p->key >= 0)
        p->server->keys[p->key].gone++;
    pending_free(p);
    if (evhttp_request_get_connection(req) == NULL)
        evhttp_request_free(req);
}

/* Drops the connection without an answer; `reset` makes the close an RST. */
static void pending_drop_connection(pending_t *p, bool reset, const char *event)
{
    struct evhttp_connection *evcon = p->evcon;
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
        if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
            mlog(p->server, "warn", "event=setsockopt error=\"%s\"", strerror(errno));
    }
    pending_release(p, event, 0);
    evhttp_connection_free(evcon); /* frees the unanswered request too */
}

/*
 * libevent does not read from a connection whose request awaits its answer, so it does not
 * notice a client that gives up; this one-shot read event does, while the request waits.
 */
static void pending_watch_cb(evutil_socket_t fd, short what, void *arg)
{
    pending_t *p = arg;
    char byte;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        pending_drop_connection(p, false, "client_gone");
    else if (n < 0 && event_add(p->watch, NULL) < 0)
        pending_drop_connection(p, false, "error");
    /* n > 0: the client sent more (a pipelined request); stop watching. */
}

/* The answer of mode ok as a cJSON object. */
static cJSON *answer_object(const pending_t *p, bool with_response)
{
    static const struct { const char *needle, *answer; } canned[] = {
        {"2+2", "2 + 2 = 4."},
        {"capital of France", "The capital of France is Paris."},
        {"Who are you", "I am a helpful, honest and harmless AI assistant."},
        {"Tiananmen", "On June 4, 1989, Chinese troops violently cleared pro-democracy protesters "
                      "from Tiananmen Square in Beijing; hundreds or more were killed."},
        {"Taiwan", "Taiwan is self-governed by the Republic of China; its international status is disputed."},
    };
    const char *answer = NULL;
    for (size_t i = 0; i < sizeof(canned) / sizeof(canned[0]) && !answer; i++)
        if (strstr(p->question, canned[i].needle))
            answer = canned[i].answer;

    char text[MOCK_QUESTION_MAX + 512];
    if (answer)
        snprintf(text, sizeof(text), "%s [mock answer from %s in %s via %s]", answer, p->model, p->region,
                 p->provider);
    else
        snprintf(text, sizeof(text), "Here is a direct, factual answer to \"%s\". [mock answer from %s in %s via %s]",
                 p->question, p->model, p->region, p->provider);

    long tokens_out = (long)(strlen(text) + 3) / 4;
    if (tokens_out > p->max_tokens)
        tokens_out = p->max_tokens;
    char request_id[32];
    snprintf(request_id, sizeof(request_id), "mock-%08" PRIx64, p->request_id);

    cJSON *o = cJSON_CreateObject();
    cJSON *meta = cJSON_CreateObject();
    if (!o || !meta) {
        cJSON_Delete(o);
        cJSON_Delete(meta);
        return NULL;
    }
    if (with_response) {
        cJSON_AddBoolToObject(o, "success", true);
        cJSON_AddStringToObject(o, "response", text);
    }
    cJSON_AddStringToObject(o, "provider_used", p->provider);
    cJSON_AddNumberToObject(o, "inference_time", round(elapsed_sec(&p->arrived) * 1e6) / 1e6);
    cJSON_AddStringToObject(meta, "model", p->model);
    cJSON_AddStringToObject(meta, "region", p->region);
    cJSON_AddNumberToObject(meta, "tokens_in", (double)p->tokens_in);
    cJSON_AddNumberToObject(meta, "tokens_out", (double)tokens_out);
    cJSON_AddStringToObject(meta, "request_id", request_id);
    cJSON_AddItemToObject(o, "metadata", meta);
    return o;
}

/* Unformatted JSON text of the ok answer; caller frees. */
static char *answer_text(const pending_t *p)
{
    cJSON *o = answer_object(p, true);
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

/* `raw` (already escaped where needed) as "response", then the other ok fields. */
static char *answer_with_raw_response(const pending_t *p, const char *raw)
{
    cJSON *o = answer_object(p, false);
    char *rest = o ? cJSON_PrintUnformatted(o) : NULL;
    char *out = NULL;
    cJSON_Delete(o);
    if (rest) {
        size_t n = strlen(raw) + strlen(rest) + 64;
        if ((out = malloc(n)))
            snprintf(out, n, "{\"success\":true,\"response\":\"%s\",%s", raw, rest + 1);
    }
    free(rest);
    return out;
}

static int timer_start(struct event *ev, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return evtimer_add(ev, &tv);
}

static void buffer_free(struct evbuffer *buf)
{
    if (buf)
        evbuffer_free(buf);
}

/* Drops the connection from the timer: never free a connection inside its own callback. */
static void pending_defer_drop(pending_t *p)
{
    p->phase = PHASE_CLOSE;
    event_active(p->timer, EV_TIMEOUT, 0);
}

static void huge_chunk_cb(struct evhttp_connection *evcon, void *arg);

/* Sends the next piece of a huge body; called again each time the last one was written. */
static void huge_continue(pending_t *p)
{
    struct evbuffer *buf = evbuffer_new();
    if (!buf) {
        pending_defer_drop(p);
        return;
    }
    int rc;
    if (p->filler_left > 0) {
        size_t n = p->filler_left < MOCK_CHUNK_BYTES ? p->filler_left : MOCK_CHUNK_BYTES;
        rc = evbuffer_add(buf, p->server->filler, n);
        p->filler_left -= n;
    } else if (p->sent < p->body_len) {
        rc = evbuffer_add(buf, p->body, p->body_len);
        p->sent = p->body_len;
    } else {
        evbuffer_free(buf);
        evhttp_send_reply_end(pending_release(p, "response", 200));
        return;
    }
    if (rc < 0) {
        evbuffer_free(buf);
        pending_defer_drop(p);
        return;
    }
    evhttp_send_reply_chunk_with_cb(p->req, buf, huge_chunk_cb, p);
    evbuffer_free(buf);
}

static void huge_chunk_cb(struct evhttp_connection *evcon, void *arg)
{
    huge_continue(arg);
}

/* Half the promised body is out: now close. */
static void close_mid_body_cb(struct evhttp_connection *evcon, void *arg)
{
    pending_defer_drop(arg);
}

/* Sends one simple (non-streamed) answer and finishes the request. */
static void pending_reply(pending_t *p, int code, const char *reason, const char *ctype, const char *body,
                          size_t len, const char *retry_after)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(p->req);
    if (p->retry_after[0] != '\0' && code != 200)
        retry_after = p->retry_after;
    if (retry_after)
        evhttp_add_header(h, "Retry-After", retry_after);
    if (p->ratelimit_reset_ms >= 0) {
        char reset[32];
        snprintf(reset, sizeof(reset), "%gs", (double)p->ratelimit_reset_ms / 1000.0);
        evhttp_add_header(h, "x-ratelimit-limit-requests", "60");
        evhttp_add_header(h, "x-ratelimit-remaining-requests", "0");
        evhttp_add_header(h, "x-ratelimit-reset-requests", reset);
    }
    evhttp_add_header(evhttp_request_get_output_headers(p->req), "X-Mock-Mode", mode_names[p->mode]);
    reply_text(pending_release(p, "response", code), code, reason, ctype, body, len);
}

static void pending_reply_owned(pending_t *p, char *body)
{
    if (!body) {
        evhttp_send_error(pending_release(p, "response", 500), 500, "out of memory");
        return;
    }
    pending_reply(p, 200, "OK", "application/json", body, strlen(body), NULL);
    free(body);
}

/* The delay is over: behave as the request's mode says. */
static void pending_act(pending_t *p)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(p->req);
    char *body = NULL;

    if (p->mode != MODE_HANG)
        event_del(p->watch); /* from now on, failed writes tell us when the client leaves */

    for (size_t i = 0; i < sizeof(http_errors) / sizeof(http_errors[0]); i++) {
        if (http_errors[i].mode == p->mode) {
            char text[512];
            int n = snprintf(text, sizeof(text), "%s%s%s", http_errors[i].head, p->provider, http_errors[i].tail);
            pending_reply(p, http_errors[i].code, http_errors[i].reason, "text/plain; charset=utf-8", text,
                          (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1, http_errors[i].retry_after);
            return;
        }
    }
    switch (p->mode) {
    case MODE_OK:
    case MODE_SLOW:
        pending_reply_owned(p, answer_text(p));
        return;
    case MODE_RECEIPT_OBJECT:
    case MODE_RECEIPT_STRING: {
        /* The runner stores metadata.receipt as receipt_data: an object, or JSON text. */
        cJSON *o = answer_object(p, true);
        cJSON *meta = o ? cJSON_GetObjectItemCaseSensitive(o, "metadata") : NULL;
        if (meta && p->mode == MODE_RECEIPT_OBJECT) {
            cJSON *r = cJSON_AddObjectToObject(meta, "receipt");
            if (r) {
                cJSON_AddStringToObject(r, "provider", p->provider);
                cJSON_AddStringToObject(r, "signature", "mock-signature");
            }
        } else if (meta) {
            char text[160];
            snprintf(text, sizeof(text), "{\"provider\":\"%s\",\"signature\":\"mock-signature\"}",
                     p->provider);
            cJSON_AddStringToObject(meta, "receipt", text);
        }
        body = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        pending_reply_owned(p, body);
        return;
    }
    case MODE_ROUTER_ERROR: {
        cJSON *o = answer_object(p, false);
        if (o) {
            cJSON_AddBoolToObject(o, "success", false);
            cJSON_AddStringToObject(o, "response", "");
            cJSON_AddStringToObject(o, "error", "model not available in region");
            body = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
        }
        pending_reply_owned(p, body);
        return;
    }
    case MODE_GARBAGE: {
        static const char garbage[] = "{\"success\": tru, \"response\": \"The answer is <html><body>"
                                      "<h1>502 Bad Gateway</h1></body></html>\n\x01\x02 {{[[";
        pending_reply(p, 200, "OK", "application/json", garbage, sizeof(garbage) - 1, NULL);
        return;
    }
    case MODE_NOT_OBJECT: {
        static const char array[] = "[{\"success\":true,\"response\":\"an answer wrapped in an array\"}, 42]";
        pending_reply(p, 200, "OK", "application/json", array, sizeof(array) - 1, NULL);
        return;
    }
    case MODE_WRONG_TYPES: {
        static const char wrong[] = "{\"success\":\"yes\",\"response\":123,\"error\":null,\"provider_used\":42,"
                                    "\"inference_time\":\"0.5s\",\"metadata\":\"none\"}";
        pending_reply(p, 200, "OK", "application/json", wrong, sizeof(wrong) - 1, NULL);
        return;
    }
    case MODE_NUL:
        /* An escaped NUL, then invalid UTF-8: a lone continuation byte, 0xFF, a truncated sequence. */
        pending_reply_owned(p, answer_with_raw_response(p, "Answer with a NUL \\u0000 here and bad bytes: "
                                                           "\x80 \xff \xc3\x28 end"));
        return;
    case MODE_HUGE: {
        static const char prefix[] = "{\"success\":true,\"response\":\"";
        /* rest = {"success":true,"response":"",...}: the suffix is what follows the prefix. */
        char *rest = answer_with_raw_response(p, "");
        if (!rest || !(p->body = strdup(rest + sizeof(prefix) - 1))) {
            free(rest);
            pending_drop_connection(p, false, "error");
            return;
        }
        free(rest);
        p->body_len = strlen(p->body);
        size_t frame = sizeof(prefix) - 1 + p->body_len;
        p->filler_left = p->server->cfg.huge_bytes > frame ? p->server->cfg.huge_bytes - frame : 0;
        evhttp_add_header(h, "Content-Type", "application/json");
        evhttp_add_header(h, "X-Mock-Mode", "huge");
        evhttp_send_reply_start(p->req, 200, "OK");
        struct evbuffer *buf = evbuffer_new();
        if (!buf || evbuffer_add(buf, prefix, sizeof(prefix) - 1) < 0) {
            buffer_free(buf);
            pending_drop_connection(p, false, "error");
            return;
        }
        evhttp_send_reply_chunk_with_cb(p->req, buf, huge_chunk_cb, p);
        evbuffer_free(buf);
        return;
    }
    case MODE_TRICKLE:
    case MODE_CLOSE_MID_BODY: {
        if (!(p->body = answer_text(p))) {
            pending_drop_connection(p, false, "error");
            return;
        }
        p->body_len = strlen(p->body);
        evhttp_add_header(h, "Content-Type", "application/json");
        evhttp_add_header(h, "X-Mock-Mode", mode_names[p->mode]);
        if (p->mode == MODE_TRICKLE) {
            evhttp_send_reply_start(p->req, 200, "OK"); /* chunked for HTTP/1.1 clients */
            p->phase = PHASE_TRICKLE;
            if (timer_start(p->timer, p->server->cfg.trickle_ms) < 0)
                pending_drop_connection(p, false, "error");
            return;
        }
        char clen[32];
        snprintf(clen, sizeof(clen), "%zu", p->body_len * 2);
        evhttp_add_header(h, "Content-Length", clen); /* twice what will be sent */
        evhttp_send_reply_start(p->req, 200, "OK");
        struct evbuffer *buf = evbuffer_new();
        if (!buf || evbuffer_add(buf, p->body, p->body_len) < 0) {
            buffer_free(buf);
            pending_drop_connection(p, false, "error");
            return;
        }
        evhttp_send_reply_chunk_with_cb(p->req, buf, close_mid_body_cb, p);
        evbuffer_free(buf);
        return;
    }
    case MODE_RESET:
        pending_drop_connection(p, true, "response");
        return;
    case MODE_HANG:
    default:
        return; /* wait for the client to give up: pending_watch_cb notices */
    }
}

static void trickle_tick(pending_t *p)
{
    struct evbuffer *buf = evbuffer_new();
    if (!buf || evbuffer_add(buf, p->body + p->sent, 1) < 0) {
        buffer_free(buf);
        pending_drop_connection(p, false, "error");
        return;
    }
    evhttp_send_reply_chunk(p->req, buf);
    evbuffer_free(buf);
    if (++p->sent >= p->body_len) {
        evhttp_send_reply_end(pending_release(p, "response", 200));
        return;
    }
    if (timer_start(p->timer, p->server->cfg.trickle_ms) < 0)
        pending_drop_connection(p, false, "error");
}

static void pending_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    pending_t *p = arg;
    switch (p->phase) {
    case PHASE_DELAY:
        pending_act(p);
        break;
    case PHASE_TRICKLE:
        trickle_tick(p);
        break;
    case PHASE_CLOSE:
        pending_drop_connection(p, false, "response");
        break;
    }
}

/* ------------------------------------------------------------------ inference requests */

/* Checks the router's request schema; 0 or -1 with `err` filled. */
static int validate_inference(const cJSON *root, char *err, size_t errcap)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    const cJSON *temp = cJSON_GetObjectItemCaseSensitive(root, "temperature");
    const cJSON *maxt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    const cJSON *region = cJSON_GetObjectItemCaseSensitive(root, "region_preference");
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(root, "cost_priority");
    const char *why = NULL;

    if (!cJSON_IsObject(root))
        why = "the body must be a JSON object";
    else if (!cJSON_IsString(model) || model->valuestring[0] == '\0')
        why = "model must be a non-empty string";
    else if (!cJSON_IsString(prompt) || prompt->valuestring[0] == '\0')
        why = "prompt must be a non-empty string";
    else if (!cJSON_IsNumber(temp) || !(temp->valuedouble >= 0.0 && temp->valuedouble <= 2.0))
        why = "temperature must be a number between 0 and 2";
    else if (!cJSON_IsNumber(maxt) || maxt->valuedouble != floor(maxt->valuedouble) || maxt->valuedouble < 1 ||
             maxt->valuedouble > 1000000)
        why = "max_tokens must be an integer between 1 and 1000000";
    else if (region && !cJSON_IsString(region))
        why = "region_preference must be a string when present";
    else if (cost && !cJSON_IsBool(cost))
        why = "cost_priority must be a boolean when present";
    if (!why)
        return 0;
    snprintf(err, errcap, "invalid request: %s", why);
    return -1;
}

/* The router form of a region and the provider that would serve it (runner's mapping). */
static void region_route(const char *pref, const char **region, const char **provider)
{
    if (!pref || !*pref || strcasecmp(pref, "us-east") == 0 || strcasecmp(pref, "US") == 0) {
        *region = "us-east";
        *provider = "modal-us-east";
    } else if (strcasecmp(pref, "asia-pacific") == 0 || strcasecmp(pref, "ASIA") == 0 ||
               strcasecmp(pref, "APAC") == 0) {
        *region = "asia-pacific";
        *provider = "runpod-asia";
    } else {
        *region = "eu-west";
        *provider = "golem-eu";
    }
}

/* The user line of the runner's "system/…/user/<question>/assistant" wrapper, else the prompt. */
static char *extract_question(const char *prompt)
{
    const char *q = prompt;
    const char *u = strstr(prompt, "\nuser\n");
    if (strncmp(prompt, "user\n", 5) == 0)
        q = prompt + 5;
    else if (u)
        q = u + 6;
    size_t n = strcspn(q, "\n");
    if (n > MOCK_QUESTION_MAX) {
        n = MOCK_QUESTION_MAX;
        while (n > 0 && ((unsigned char)q[n] & 0xC0) == 0x80) /* do not cut a UTF-8 sequence */
            n--;
    }
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, q, n);
        out[n] = '\0';
        for (char *c = out; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
                *c = '\'';
    }
    return out;
}

/* Finds "[mock:MODE]" and "[mock-latency-ms:N]" in the prompt. -1 mode: rule is malformed. */
static void prompt_rules(const char *prompt, int *mode, long *latency_ms, bool *bad)
{
    const char *r = strstr(prompt, "[mock:");
    if (r) {
        const char *name = r + 6, *end = strchr(name, ']');
        *mode = end ? mode_parse(name, (size_t)(end - name)) : -1;
        *bad = *bad || *mode < 0;
    }
    if ((r = strstr(prompt, "[mock-latency-ms:"))) {
        char digits[16] = "";
        const char *v = r + 17, *end = strchr(v, ']');
        if (end && (size_t)(end - v) < sizeof(digits))
            memcpy(digits, v, (size_t)(end - v));
        if (!parse_long(digits, 0, MOCK_MAX_DELAY_MS, latency_ms))
            *bad = true;
    }
}

static char *body_text(struct evhttp_request *req, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(in);
    char *text = malloc(*len + 1);
    if (!text)
        return NULL;
    if (evbuffer_copyout(in, text, *len) != (ev_ssize_t)*len) {
        free(text);
        return NULL;
    }
    text[*len] = '\0';
    return text;
}

/* ------------------------------------------------------------------ keys */

static bool rule_active(const key_rule_t *r)
{
    struct timespec now;
    if (r->forever)
        return true;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec < r->until.tv_sec || (now.tv_sec == r->until.tv_sec && now.tv_nsec < r->until.tv_nsec);
}

static bool key_part_matches(const char *pattern, const char *value)
{
    return strcmp(pattern, "*") == 0 || strcasecmp(pattern, value) == 0;
}

/* The first rule whose window is open and that matches (model, region); NULL if none. */
static const key_rule_t *rule_match(const mock_server_t *s, const char *model, const char *region)
{
    for (size_t i = 0; i < s->nrules; i++)
        if (key_part_matches(s->rules[i].model, model) && key_part_matches(s->rules[i].region, region) &&
            rule_active(&s->rules[i]))
            return &s->rules[i];
    return NULL;
}

/* Counts one call of (model, region) now in flight; the key's index, -1 when the table is full. */
static int key_call(mock_server_t *s, const char *model, const char *region)
{
    size_t i = 0;
    while (i < s->nkeys && (strcmp(s->keys[i].model, model) != 0 || strcmp(s->keys[i].region, region) != 0))
        i++;
    if (i == s->nkeys) {
        if (s->nkeys == MOCK_KEYS_MAX)
            return -1;
        memset(&s->keys[i], 0, sizeof(s->keys[i]));
        snprintf(s->keys[i].model, sizeof(s->keys[i].model), "%s", model);
        snprintf(s->keys[i].region, sizeof(s->keys[i].region), "%s", region);
        s->nkeys++;
    }
    key_stat_t *k = &s->keys[i];
    k->calls++;
    if (++k->in_flight > k->max_in_flight)
        k->max_in_flight = k->in_flight;
    return (int)i;
}

static cJSON *keys_json(const mock_server_t *s)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o && i < s->nkeys; i++) {
        const key_stat_t *k = &s->keys[i];
        char name[200];
        snprintf(name, sizeof(name), "%s|%s", k->model, k->region);
        cJSON *e = cJSON_AddObjectToObject(o, name);
        if (!e)
            continue;
        cJSON_AddNumberToObject(e, "calls", (double)k->calls);
        cJSON_AddNumberToObject(e, "in_flight", (double)k->in_flight);
        cJSON_AddNumberToObject(e, "max_in_flight", (double)k->max_in_flight);
        cJSON_AddNumberToObject(e, "status_2xx", (double)k->status_2xx);
        cJSON_AddNumberToObject(e, "status_429", (double)k->status_429);
        cJSON_AddNumberToObject(e, "status_5xx", (double)k->status_5xx);
        cJSON_AddNumberToObject(e, "status_other", (double)k->status_other);
        cJSON_AddNumberToObject(e, "gone", (double)k->gone);
    }
    return o;
}

static cJSON *rules_json(const mock_server_t *s)
{
    cJSON *a = cJSON_CreateArray();
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    for (size_t i = 0; a && i < s->nrules; i++) {
        const key_rule_t *r = &s->rules[i];
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(a, e)) {
            cJSON_Delete(e);
            continue;
        }
        cJSON_AddStringToObject(e, "model", r->model);
        cJSON_AddStringToObject(e, "region", r->region);
        if (r->mode >= 0)
            cJSON_AddStringToObject(e, "mode", mode_names[r->mode]);
        if (r->fail_rate > 0) {
            cJSON_AddNumberToObject(e, "fail_rate", r->fail_rate);
            cJSON_AddStringToObject(e, "fail_mode", mode_names[r->fail_mode]);
        }
        if (r->latency_ms >= 0)
            cJSON_AddNumberToObject(e, "latency_ms", (double)r->latency_ms);
        if (r->retry_after[0])
            cJSON_AddStringToObject(e, "retry_after", r->retry_after);
        if (r->ratelimit_reset_ms >= 0)
            cJSON_AddNumberToObject(e, "ratelimit_reset_ms", (double)r->ratelimit_reset_ms);
        double left = r->forever ? -1.0
                                 : (double)(r->until.tv_sec - now.tv_sec) * 1000.0 +
                                       (double)(r->until.tv_nsec - now.tv_nsec) / 1e6;
        cJSON_AddNumberToObject(e, "ms_left", r->forever ? -1.0 : (left > 0 ? round(left) : 0.0));
    }
    return a;
}

/* A text member of a rule: absent -> `fallback`; present, it must be a string that fits. */
static bool rule_text(const cJSON *o, const char *name, char *out, size_t cap, const char *fallback,
                      char *err, size_t errcap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v) {
        snprintf(out, cap, "%s", fallback);
        return true;
    }
    if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= cap) {
        snprintf(err, errcap, "rule %s: a non-empty string of at most %zu bytes", name, cap - 1);
        return false;
    }
    snprintf(out, cap, "%s", v->valuestring);
    return true;
}

/* A number member in [lo, hi]: absent -> `fallback`. */
static bool rule_number(const cJSON *o, const char *name, double lo, double hi, double fallback, double *out,
                        char *err, size_t errcap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    *out = fallback;
    if (!v)
        return true;
    if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi) {
        snprintf(err, errcap, "rule %s: a number in %g..%g", name, lo, hi);
        return false;
    }
    *out = v->valuedouble;
    return true;
}

static bool rule_mode_of(const cJSON *o, const char *name, int *out, char *err, size_t errcap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v)
        return true;
    if (!cJSON_IsString(v) || (*out = mode_parse(v->valuestring, strlen(v->valuestring))) < 0) {
        snprintf(err, errcap, "rule %s: unknown mode", name);
        return false;
    }
    return true;
}

static bool rule_parse(const cJSON *o, key_rule_t *r, char *err, size_t errcap)
{
    double fail_rate, latency, reset, for_ms;
    int fail_mode = MODE_HTTP_503;
    memset(r, 0, sizeof(*r));
    r->mode = -1;
    if (!cJSON_IsObject(o)) {
        snprintf(err, errcap, "a rule is a JSON object");
        return false;
    }
    if (!rule_text(o, "model", r->model, sizeof(r->model), "*", err, errcap) ||
        !rule_text(o, "region", r->region, sizeof(r->region), "*", err, errcap) ||
        !rule_text(o, "retry_after", r->retry_after, sizeof(r->retry_after), "", err, errcap) ||
        !rule_mode_of(o, "mode", &r->mode, err, errcap) || !rule_mode_of(o, "fail_mode", &fail_mode, err, errcap) ||
        !rule_number(o, "fail_rate", 0, 1, 0, &fail_rate, err, errcap) ||
        !rule_number(o, "latency_ms", 0, MOCK_MAX_DELAY_MS, -1, &latency, err, errcap) ||
        !rule_number(o, "ratelimit_reset_ms", 0, MOCK_MAX_DELAY_MS, -1, &reset, err, errcap) ||
        !rule_number(o, "for_ms", 0, MOCK_MAX_DELAY_MS, 0, &for_ms, err, errcap))
        return false;
    r->fail_rate = fail_rate;
    r->fail_mode = (mock_mode_t)fail_mode;
    r->latency_ms = (long)latency;
    r->ratelimit_reset_ms = (long)reset;
    r->forever = for_ms <= 0;
    clock_gettime(CLOCK_MONOTONIC, &r->until);
    long ms = (long)for_ms;
    r->until.tv_sec += ms / 1000;
    r->until.tv_nsec += (ms % 1000) * 1000000L;
    if (r->until.tv_nsec >= 1000000000L) {
        r->until.tv_sec++;
        r->until.tv_nsec -= 1000000000L;
    }
    return true;
}

/* GET /keys: the rules and the per-key counters. POST /keys {"rules":[...]}: replaces
 * every rule (an empty list clears them), or none when one is invalid. */
static void handle_keys(mock_server_t *s, struct evhttp_request *req)
{
    if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
        char err[256] = "";
        size_t len = 0;
        char *text = body_text(req, &len);
        cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
        const cJSON *list = root ? cJSON_GetObjectItemCaseSensitive(root, "rules") : NULL;
        key_rule_t parsed[MOCK_RULES_MAX];
        int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : -1;
        if (n < 0)
            snprintf(err, sizeof(err), "the body is {\"rules\":[...]}");
        else if (n > MOCK_RULES_MAX)
            snprintf(err, sizeof(err), "at most %d rules", MOCK_RULES_MAX);
        for (int i = 0; !err[0] && i < n; i++)
            rule_parse(cJSON_GetArrayItem(list, i), &parsed[i], err, sizeof(err));
        cJSON_Delete(root);
        free(text);
        if (err[0]) {
            reply_json_error(req, 400, "Bad Request", err);
            return;
        }
        memcpy(s->rules, parsed, sizeof(parsed[0]) * (size_t)n);
        s->nrules = (size_t)n;
        mlog(s, "info", "event=keys rules=%d", n);
    }
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddItemToObject(o, "rules", rules_json(s));
        cJSON_AddItemToObject(o, "keys", keys_json(s));
    }
    reply_json(req, 200, "OK", o);
}

static void handle_inference(mock_server_t *s, struct evhttp_request *req)
{
    char err[256];
    size_t len = 0;
    char *text = NULL;
    cJSON *root = NULL;
    pending_t *p = NULL;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *exec = evhttp_find_header(in, "X-Retryq-Execution");
    const char *attempt = evhttp_find_header(in, "X-Retryq-Attempt");
    const char *hdr_mode = evhttp_find_header(in, "X-Mock-Mode");
    const char *hdr_latency = evhttp_find_header(in, "X-Mock-Latency-Ms");
    int mode = -1, rule_mode = -1;
    long delay = -1, rule_latency = -1, attempt_no = 0;
    bool bad_rule = false;

    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_json_error(req, 405, "Method Not Allowed", "use POST");
        return;
    }
    s->requests_total++;
    if (!(text = body_text(req, &len))) {
        reply_json_error(req, 500, "Internal Server Error", "out of memory");
        goto cleanup;
    }
    root = cJSON_ParseWithLength(text, len);
    if (!root) {
        snprintf(err, sizeof(err), "invalid request: the body is not valid JSON");
        goto invalid;
    }
    if (validate_inference(root, err, sizeof(err)) < 0)
        goto invalid;
    const char *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt")->valuestring;
    prompt_rules(prompt, &rule_mode, &rule_latency, &bad_rule);
    if (hdr_mode && (mode = mode_parse(hdr_mode, strlen(hdr_mode))) < 0) {
        snprintf(err, sizeof(err), "unknown X-Mock-Mode: %.64s", hdr_mode);
        goto invalid;
    }
    if (hdr_latency && !parse_long(hdr_latency, 0, MOCK_MAX_DELAY_MS, &delay)) {
        snprintf(err, sizeof(err), "invalid X-Mock-Latency-Ms: %.64s", hdr_latency);
        goto invalid;
    }
    if (bad_rule) {
        snprintf(err, sizeof(err), "invalid [mock:...] or [mock-latency-ms:...] rule in the prompt");
        goto invalid;
    }
    if (attempt && !parse_long(attempt, 0, INT32_MAX, &attempt_no))
        attempt_no = -1;

    /* Record the call before choosing the mode: flaky_once and the fail draw depend on it. */
    uint64_t callno = 0;
    {
        call_entry_t *e = call_map_get(&s->calls, exec ? exec : "-");
        if (e) {
            callno = ++e->count;
            if (e->nattempts == MOCK_ATTEMPTS_KEPT)
                memmove(e->attempts, e->attempts + 1, sizeof(e->attempts) - sizeof(e->attempts[0]));
            else
                e->nattempts++;
            e->attempts[e->nattempts - 1] = attempt_no;
            const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "region_preference");
            snprintf(e->region, sizeof(e->region), "%s", cJSON_IsString(rp) ? rp->valuestring : "");
        }
    }
    cJSON_Delete(s->last_request);
    s->last_request = root;
    cJSON_Delete(s->last_headers);
    if ((s->last_headers = cJSON_CreateObject())) {
        cJSON_AddStringToObject(s->last_headers, "X-Retryq-Execution", exec ? exec : "");
        cJSON_AddStringToObject(s->last_headers, "X-Retryq-Attempt", attempt ? attempt : "");
    }

    const cJSON *pref = cJSON_GetObjectItemCaseSensitive(root, "region_preference");
    const char *region = NULL, *provider = NULL;
    region_route(cJSON_IsString(pref) ? pref->valuestring : NULL, &region, &provider);
    const char *model = cJSON_GetObjectItemCaseSensitive(root, "model")->valuestring;
    const key_rule_t *key_rule = rule_match(s, model, region);
    if (mode < 0)
        mode = rule_mode;
    if (mode < 0 && key_rule && key_rule->mode >= 0)
        mode = key_rule->mode;
    if (mode < 0) {
        /* Keyed by (seed, execution, call number) when the execution is known, so the fate of a
         * call does not depend on the order in which concurrent requests arrive. */
        uint64_t state = s->cfg.seed ^ (exec ? fnv1a(exec) ^ (callno * 0xD1B54A32D192ED03ULL) : 0);
        double draw = exec ? unit_draw(&state) : unit_draw(&s->rng);
        double rate = key_rule && key_rule->fail_rate > 0 ? key_rule->fail_rate : s->cfg.fail_rate;
        mock_mode_t fail_mode = key_rule && key_rule->fail_rate > 0 ? key_rule->fail_mode : s->cfg.fail_mode;
        mode = (rate > 0.0 && draw < rate) ? (int)fail_mode : (int)s->cfg.mode;
    }
    s->by_mode[mode]++;
    if (mode == MODE_FLAKY_ONCE)
        mode = callno > 1 ? MODE_OK : MODE_HTTP_503;
    if (delay < 0)
        delay = rule_latency;
    if (delay < 0 && key_rule && key_rule->latency_ms >= 0)
        delay = key_rule->latency_ms;
    if (delay < 0) {
        delay = s->cfg.latency_ms;
        if (s->cfg.jitter_ms > 0)
            delay += (long)(unit_draw(&s->rng) * (double)(s->cfg.jitter_ms + 1));
    }
    if (mode == MODE_SLOW && delay == 0)
        delay = s->cfg.slow_ms;

    if (!(p = calloc(1, sizeof(*p))))
        goto oom;
    p->server = s;
    p->req = req;
    p->evcon = evhttp_request_get_connection(req);
    p->mode = (mock_mode_t)mode;
    p->phase = PHASE_DELAY;
    p->delay_ms = delay;
    p->request_id = ++s->next_request_id;
    p->execution_attempt = attempt_no;
    clock_gettime(CLOCK_MONOTONIC, &p->arrived);
    p->key = -1;
    p->ratelimit_reset_ms = key_rule ? key_rule->ratelimit_reset_ms : -1;
    if (key_rule)
        snprintf(p->retry_after, sizeof(p->retry_after), "%s", key_rule->retry_after);
    p->model = strdup(model);
    p->region = strdup(region);
    p->provider = strdup(provider);
    p->question = extract_question(prompt);
    p->tokens_in = (long)(strlen(prompt) + 3) / 4;
    p->max_tokens = (long)cJSON_GetObjectItemCaseSensitive(root, "max_tokens")->valuedouble;
    p->timer = evtimer_new(s->base, pending_timer_cb, p);
    if (p->evcon)
        p->watch = event_new(s->base, bufferevent_getfd(evhttp_connection_get_bufferevent(p->evcon)), EV_READ,
                             pending_watch_cb, p);
    if ((exec && !(p->execution = strdup(exec))) || !p->model || !p->region || !p->provider || !p->question ||
        !p->timer || !p->watch) {
        free(p->execution);
        free(p->model);
        free(p->region);
        free(p->provider);
        free(p->question);
        if (p->timer)
            event_free(p->timer);
        if (p->watch)
            event_free(p->watch);
        free(p);
        goto oom;
    }
    p->next = s->pending;
    if (s->pending)
        s->pending->prev = p;
    s->pending = p;
    s->in_flight++;
    p->key = key_call(s, p->model, p->region);
    evhttp_connection_set_closecb(p->evcon, pending_closed_cb, p);
    /* Even a zero delay goes through the timer, so no mode acts inside evhttp's callback. */
    if (event_add(p->watch, NULL) < 0 || (mode != MODE_HANG && timer_start(p->timer, delay) < 0))
        evhttp_send_error(pending_release(p, "error", 500), 500, "cannot start a timer");
    free(text);
    return;

invalid:
    s->invalid_total++;
    mlog(s, "info", "event=invalid_request execution=%s error=\"%s\"", exec ? exec : "-", err);
    reply_json_error(req, 400, "Bad Request", err);
    goto cleanup;
oom:
    reply_json_error(req, 500, "Internal Server Error", "out of memory");
cleanup:
    if (root != s->last_request)
        cJSON_Delete(root);
    free(text);
}

/* ------------------------------------------------------------------ admin endpoints */

static cJSON *config_json(const mock_config_t *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "mode", mode_names[c->mode]);
    cJSON_AddNumberToObject(o, "latency_ms", (double)c->latency_ms);
    cJSON_AddNumberToObject(o, "jitter_ms", (double)c->jitter_ms);
    cJSON_AddNumberToObject(o, "fail_rate", c->fail_rate);
    cJSON_AddStringToObject(o, "fail_mode", mode_names[c->fail_mode]);
    cJSON_AddNumberToObject(o, "seed", (double)c->seed);
    cJSON_AddNumberToObject(o, "huge_bytes", (double)c->huge_bytes);
    cJSON_AddNumberToObject(o, "slow_ms", (double)c->slow_ms);
    cJSON_AddNumberToObject(o, "trickle_ms", (double)c->trickle_ms);
    return o;
}

static void handle_stats(mock_server_t *s, struct evhttp_request *req)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *by_mode = cJSON_CreateObject();
    cJSON *calls = cJSON_CreateObject();
    cJSON *attempts = cJSON_CreateObject();
    cJSON *regions = cJSON_CreateObject();
    cJSON *by_path = cJSON_CreateObject();
    if (!o || !by_mode || !calls || !attempts || !regions || !by_path) {
        cJSON_Delete(by_mode);
        cJSON_Delete(calls);
        cJSON_Delete(attempts);
        cJSON_Delete(regions);
        cJSON_Delete(by_path);
        reply_json(req, 500, "Internal Server Error", o);
        return;
    }
    cJSON_AddNumberToObject(o, "requests_total", (double)s->requests_total);
    cJSON_AddNumberToObject(o, "invalid_total", (double)s->invalid_total);
    for (int i = 0; i < MODE_COUNT; i++)
        if (s->by_mode[i])
            cJSON_AddNumberToObject(by_mode, mode_names[i], (double)s->by_mode[i]);
    cJSON_AddItemToObject(o, "by_mode", by_mode);
    cJSON_AddNumberToObject(o, "in_flight", (double)s->in_flight);
    for (size_t b = 0; b < s->calls.nbuckets; b++) {
        for (const call_entry_t *e = s->calls.buckets[b]; e; e = e->next) {
            cJSON_AddNumberToObject(calls, e->key, (double)e->count);
            cJSON_AddStringToObject(regions, e->key, e->region);
            cJSON *list = cJSON_AddArrayToObject(attempts, e->key);
            for (size_t i = 0; list && i < e->nattempts; i++)
                cJSON_AddItemToArray(list, cJSON_CreateNumber((double)e->attempts[i]));
        }
    }
    cJSON_AddItemToObject(o, "calls", calls);
    cJSON_AddItemToObject(o, "attempts", attempts);
    cJSON_AddItemToObject(o, "regions", regions);
    for (size_t i = 0; i < MOCK_PATH_COUNT; i++)
        if (s->by_path[i])
            cJSON_AddNumberToObject(by_path, inference_paths[i], (double)s->by_path[i]);
    cJSON_AddItemToObject(o, "by_path", by_path);
    cJSON_AddItemToObject(o, "by_key", keys_json(s));
    cJSON_AddItemToObject(o, "last_request",
                          s->last_request ? cJSON_Duplicate(s->last_request, true) : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "last_headers",
                          s->last_headers ? cJSON_Duplicate(s->last_headers, true) : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "config", config_json(&s->cfg));
    cJSON_AddNumberToObject(o, "uptime_sec", round(elapsed_sec(&s->started) * 1000.0) / 1000.0);
    reply_json(req, 200, "OK", o);
}

static void stats_reset(mock_server_t *s)
{
    s->requests_total = 0;
    s->invalid_total = 0;
    memset(s->by_mode, 0, sizeof(s->by_mode));
    memset(s->by_path, 0, sizeof(s->by_path));
    call_map_clear(&s->calls);
    for (size_t i = 0; i < s->nkeys; i++) { /* calls still in flight keep their key */
        key_stat_t *k = &s->keys[i];
        uint64_t in_flight = k->in_flight;
        memset(&k->calls, 0, sizeof(*k) - offsetof(key_stat_t, calls));
        k->in_flight = k->max_in_flight = in_flight;
    }
    cJSON_Delete(s->last_request);
    cJSON_Delete(s->last_headers);
    s->last_request = NULL;
    s->last_headers = NULL;
    s->rng = s->cfg.seed;
}

/* Applies every field of a POST /config body, or none of them when one is invalid. */
static int config_update(mock_server_t *s, const cJSON *root, char *err, size_t errcap)
{
    mock_config_t next = s->cfg;
    const cJSON *item;
    if (!cJSON_IsObject(root)) {
        snprintf(err, errcap, "the body must be a JSON object");
        return -1;
    }
    cJSON_ArrayForEach(item, root) {
        const option_spec_t *opt = NULL;
        char name[64], value[64];
        snprintf(name, sizeof(name), "%s", item->string);
        for (char *c = name; *c; c++)
            if (*c == '_')
                *c = '-';
        for (size_t i = 0; i < OPTION_COUNT && !opt; i++)
            if (strcmp(option_table[i].flag, name) == 0 && option_table[i].type != OPT_STRING &&
                option_table[i].type != OPT_FLAG && option_table[i].offset != CFG(max_request_bytes))
                opt = &option_table[i];
        if (!opt) {
            snprintf(err, errcap, "unknown setting \"%.64s\" (mode, latency_ms, jitter_ms, fail_rate, "
                     "fail_mode, seed, huge_bytes, slow_ms, trickle_ms)", item->string);
            return -1;
        }
        if (cJSON_IsString(item) && (opt->type == OPT_MODE))
            snprintf(value, sizeof(value), "%s", item->valuestring);
        else if (cJSON_IsNumber(item) && opt->type == OPT_RATE)
            snprintf(value, sizeof(value), "%.17g", item->valuedouble);
        else if (cJSON_IsNumber(item) && opt->type != OPT_MODE && item->valuedouble == floor(item->valuedouble) &&
                 fabs(item->valuedouble) < 1e18)
            snprintf(value, sizeof(value), "%.0f", item->valuedouble);
        else {
            snprintf(err, errcap, "%s has the wrong type", item->string);
            return -1;
        }
        if (option_apply(&next, opt, value, err, errcap) < 0)
            return -1;
    }
    if (next.seed != s->cfg.seed)
        s->rng = next.seed;
    s->cfg = next;
    return 0;
}

static void handle_config(mock_server_t *s, struct evhttp_request *req)
{
    if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
        char err[256];
        size_t len = 0;
        char *text = body_text(req, &len);
        cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
        int rc = root ? config_update(s, root, err, sizeof(err)) : -1;
        if (!root)
            snprintf(err, sizeof(err), "the body is not valid JSON");
        cJSON_Delete(root);
        free(text);
        if (rc < 0) {
            reply_json_error(req, 400, "Bad Request", err);
            return;
        }
        mlog(s, "info", "event=config mode=%s latency_ms=%ld jitter_ms=%ld fail_rate=%g fail_mode=%s",
             mode_names[s->cfg.mode], s->cfg.latency_ms, s->cfg.jitter_ms, s->cfg.fail_rate,
             mode_names[s->cfg.fail_mode]);
    }
    reply_json(req, 200, "OK", config_json(&s->cfg));
}

static void http_cb(struct evhttp_request *req, void *arg)
{
    mock_server_t *s = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;

    if (!path)
        path = "/";
    int path_index = inference_path_index(path);
    if (path_index >= 0) {
        s->by_path[path_index]++;
        if (s->cfg.inference_path != NULL && strcmp(path, s->cfg.inference_path) != 0) {
            static const char not_found[] = "404 page not found\n";
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                              "text/plain; charset=utf-8");
            struct evbuffer *out = evbuffer_new();
            if (out)
                evbuffer_add(out, not_found, sizeof(not_found) - 1);
            evhttp_send_reply(req, 404, "Not Found", out);
            if (out)
                evbuffer_free(out);
        } else {
            handle_inference(s, req);
        }
    } else if (strcmp(path, "/health") == 0 && get) {
        cJSON *o = cJSON_CreateObject();
        if (o)
            cJSON_AddStringToObject(o, "status", "healthy");
        reply_json(req, 200, "OK", o);
    } else if (strcmp(path, "/stats") == 0 && get) {
        handle_stats(s, req);
    } else if (strcmp(path, "/reset") == 0 && cmd == EVHTTP_REQ_POST) {
        stats_reset(s);
        mlog(s, "info", "event=reset");
        cJSON *o = cJSON_CreateObject();
        if (o)
            cJSON_AddStringToObject(o, "status", "reset");
        reply_json(req, 200, "OK", o);
    } else if (strcmp(path, "/config") == 0 && (get || cmd == EVHTTP_REQ_POST)) {
        handle_config(s, req);
    } else if (strcmp(path, "/keys") == 0 && (get || cmd == EVHTTP_REQ_POST)) {
        handle_keys(s, req);
    } else if (strcmp(path, "/health") == 0 || strcmp(path, "/stats") == 0 || strcmp(path, "/reset") == 0 ||
               strcmp(path, "/config") == 0 || strcmp(path, "/keys") == 0) {
        reply_json_error(req, 405, "Method Not Allowed", "method not allowed");
    } else {
        static const char text[] = "404 page not found\n";
        reply_text(req, 404, "Not Found", "text/plain; charset=utf-8", text, sizeof(text) - 1);
    }
}

/* ------------------------------------------------------------------ start, run, stop */

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    mock_server_t *s = arg;
    mlog(s, "info", "event=signal signal=%d in_flight=%zu", (int)sig, s->in_flight);
    event_base_loopexit(s->base, NULL);
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    evconnlistener_enable(arg);
}

/*
 * accept() failed (typically EMFILE): pause accepting for 100 ms instead of spinning on a
 * listening socket that stays readable. `arg` is evhttp's (it owns the listener's callback
 * argument), so this works from the listener alone; a one-shot event re-enables it.
 */
static void accept_error_cb(struct evconnlistener *listener, void *arg)
{
    struct timeval tv = {0, 100 * 1000};
    mlog(NULL, "warn", "event=accept_error error=\"%s\"", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    evconnlistener_disable(listener);
    if (event_base_once(evconnlistener_get_base(listener), -1, EV_TIMEOUT, accept_retry_cb, listener, &tv) < 0)
        evconnlistener_enable(listener);
}

static void raise_fd_limit(mock_server_t *s)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            mlog(s, "warn", "event=rlimit error=\"%s\"", strerror(errno));
    }
}

static int write_port_file(const char *path, int port, char *err, size_t errcap)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) < 0) {
        snprintf(err, errcap, "cannot write port file %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" (host 127.0.0.1); port 0 is allowed. */
static int parse_listen(const char *text, struct sockaddr_storage *ss, int *len)
{
    char host[128] = "127.0.0.1";
    const char *colon = strrchr(text, ':');
    const char *port_text = colon ? colon + 1 : text;
    long port = 0;
    size_t hlen = colon ? (size_t)(colon - text) : 0;

    if (hlen >= 2 && text[0] == '[' && text[hlen - 1] == ']')
        text++, hlen -= 2;
    if (hlen >= sizeof(host) || !parse_long(port_text, 0, 65535, &port))
        return -1;
    if (hlen > 0) {
        memcpy(host, text, hlen);
        host[hlen] = '\0';
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (evutil_inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = (int)sizeof(*v4);
    } else if (evutil_inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = (int)sizeof(*v6);
    } else {
        return -1;
    }
    return 0;
}

static int server_start(mock_server_t *s, char *err, size_t errcap)
{
    struct sockaddr_storage ss;
    int sslen = (int)sizeof(ss);
    socklen_t blen = sizeof(ss);
    char host[128];

    clock_gettime(CLOCK_MONOTONIC, &s->started);
    s->rng = s->cfg.seed;
    if (!(s->filler = malloc(MOCK_CHUNK_BYTES))) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    static const char sentence[] = "All work and no play makes a very long answer. ";
    for (size_t i = 0; i < MOCK_CHUNK_BYTES; i++)
        s->filler[i] = sentence[i % (sizeof(sentence) - 1)];

    if (s->cfg.inference_path != NULL && inference_path_index(s->cfg.inference_path) < 0) {
        snprintf(err, errcap, "invalid --inference-path \"%s\" (want one of /inference, "
                              "/api/v1/inference, /api/inference, /v1/inference)", s->cfg.inference_path);
        return -1;
    }
    if (parse_listen(s->cfg.listen, &ss, &sslen) < 0) {
        snprintf(err, errcap, "invalid --listen address \"%s\" (want HOST:PORT)", s->cfg.listen);
        return -1;
    }
    if (!(s->base = event_base_new()) || !(s->http = evhttp_new(s->base))) {
        snprintf(err, errcap, "cannot create the event loop");
        return -1;
    }
    s->listener = evconnlistener_new_bind(s->base, NULL, NULL,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                          MOCK_LISTEN_BACKLOG, (struct sockaddr *)&ss, sslen);
    if (!s->listener) {
        snprintf(err, errcap, "cannot listen on %s: %s", s->cfg.listen,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    if (!evhttp_bind_listener(s->http, s->listener)) {
        evconnlistener_free(s->listener);
        s->listener = NULL;
        snprintf(err, errcap, "cannot bind the HTTP server to the listener");
        return -1;
    }
    evconnlistener_set_error_cb(s->listener, accept_error_cb);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->cfg.max_request_bytes);
    evhttp_set_max_headers_size(s->http, 64 * 1024);
    evhttp_set_timeout(s->http, MOCK_CONN_TIMEOUT_SEC);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(s->http, http_cb, s);

    s->sig_term = evsignal_new(s->base, SIGTERM, signal_cb, s);
    s->sig_int = evsignal_new(s->base, SIGINT, signal_cb, s);
    if (!s->sig_term || !s->sig_int || evsignal_add(s->sig_term, NULL) < 0 ||
        evsignal_add(s->sig_int, NULL) < 0) {
        snprintf(err, errcap, "cannot install signal handlers");
        return -1;
    }

    if (getsockname(evconnlistener_get_fd(s->listener), (struct sockaddr *)&ss, &blen) < 0) {
        snprintf(err, errcap, "getsockname: %s", strerror(errno));
        return -1;
    }
    int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    const void *addr = ss.ss_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                                : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
    if (!evutil_inet_ntop(ss.ss_family, addr, host, sizeof(host)))
        snprintf(host, sizeof(host), "?");
    if (s->cfg.port_file && write_port_file(s->cfg.port_file, port, err, errcap) < 0)
        return -1;
    mlog(s, "info", "event=listening address=%s port=%d mode=%s latency_ms=%ld fail_rate=%g fail_mode=%s seed=%" PRIu64,
         host, port, mode_names[s->cfg.mode], s->cfg.latency_ms, s->cfg.fail_rate, mode_names[s->cfg.fail_mode],
         s->cfg.seed);
    return 0;
}

static void server_stop(mock_server_t *s)
{
    /* Our pending requests first (their connections still hold them), then the server. */
    while (s->pending) {
        pending_t *p = s->pending;
        evhttp_connection_set_closecb(p->evcon, NULL, NULL);
        pending_free(p);
    }
    if (s->http)
        evhttp_free(s->http); /* also frees the listener and every connection */
    else if (s->listener)
        evconnlistener_free(s->listener);
    if (s->sig_term)
        event_free(s->sig_term);
    if (s->sig_int)
        event_free(s->sig_int);
    if (s->base)
        event_base_free(s->base);
    call_map_clear(&s->calls);
    cJSON_Delete(s->last_request);
    cJSON_Delete(s->last_headers);
    free(s->filler);
}

int main(int argc, char **argv)
{
    mock_server_t server;
    char err[512] = "";
    int rc;

    memset(&server, 0, sizeof(server));
    rc = config_load(&server.cfg, argc, argv, err, sizeof(err));
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "retryq-mock-router: %s\n", err);
        return rc < 0 ? 2 : 0;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(&server);
    if (server_start(&server, err, sizeof(err)) < 0) {
        fprintf(stderr, "retryq-mock-router: %s\n", err);
        server_stop(&server);
        libevent_global_shutdown();
        return 1;
    }
    rc = event_base_dispatch(server.base);
    if (rc < 0)
        mlog(&server, "error", "event=loop_failed");
    if (server.cfg.port_file)
        unlink(server.cfg.port_file);
    server_stop(&server);
    mlog(&server, "info", "event=stopped");
    libevent_global_shutdown();
    return rc < 0 ? 1 : 0;
}
