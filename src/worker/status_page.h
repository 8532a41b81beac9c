/*
 * The status page served at "/": one self-contained HTML page for people (no scripts,
 * no external assets, inline CSS and an inline SVG sparkline) that refreshes itself every
 * 5 s. It shows a banner while the queue is paused (id="paused": who, since when, why),
 * the queue depths, this worker's in-flight jobs and outcomes, the paused
 * flow-control keys and open circuit breakers (with cause, reason and time left), the
 * active and recent retry sets (page_sets.h: progress bar, outcome counts, ETA), the
 * success and failure rates, throughput over the last 5 minutes and the last errors.
 * The figures are the ones /metrics serves, read from the same memory; every number sits
 * in an element with a stable id (e.g. id="q-pending") so tests and scrapers can find
 * it; the flow-control rows have classes (flow-pause, flow-key, flow-reason, ...), the retry sets'
 * rows too (set, set-id, set-percent, set-open, set-eta, ...).
 */
#ifndef RETRYQ_WORKER_STATUS_PAGE_H
#define RETRYQ_WORKER_STATUS_PAGE_H

#include <stddef.h>

struct evbuffer;
struct worker;

void status_page_write(const struct worker *w, struct evbuffer *out);

/* Appends `len` bytes of text HTML-escaped (& < > " ' become entities); invalid UTF-8 and
 * control characters other than tab and newline become U+FFFD. */
void status_page_escape(struct evbuffer *out, const char *text, size_t len);

#endif
