/*
 * metrics_prom.h: counters behind GET /metrics (Prometheus text exposition format 0.0.4).
 *
 * The HTTP layer counts each finished request by route pattern and status; the /metrics
 * handler adds gauges read at scrape time (jobs by state, queue depth, step rate, open
 * streams and connections). Thread-safe.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "app.h"

/* Returns 0 and *out (free with srv_prom_destroy), or -1 on ENOMEM. */
int srv_prom_create(srv_prom **out);
void srv_prom_destroy(srv_prom *p);

/* Counts one finished request; `route` is a static route pattern or NULL ("unmatched"). */
void srv_prom_request(srv_prom *p, const char *method, const char *route, unsigned status);

/* Connections currently open (maintained by http.c). */
void srv_prom_connection(srv_prom *p, int delta);
long srv_prom_connections(srv_prom *p);

/* Renders the request counters as Prometheus text appended to *buf (a malloc'd string of
 * *len bytes that is grown; the caller frees it). Returns 0 or -1 on ENOMEM. */
int srv_prom_render_requests(srv_prom *p, char **buf, size_t *len);
