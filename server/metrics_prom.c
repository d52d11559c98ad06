/*
 * metrics_prom.c: request counters for /metrics (see metrics_prom.h).
 *
 * DESIGN: the label space is small and fixed (route patterns x methods x statuses), so the
 * counters are a flat array searched linearly under one mutex; a scrape copies it.
 */
#include "metrics_prom.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES 256

typedef struct series {
    const char *route; /* static */
    char method[8];
    unsigned status;
    uint64_t count;
} series;

struct srv_prom {
    pthread_mutex_t mu; /* guards: s, n */
    series s[MAX_SERIES];
    size_t n;
    uint64_t dropped;
    atomic_long connections;
};

int srv_prom_create(srv_prom **out)
{
    *out = NULL;
    srv_prom *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return -1;
    }
    atomic_init(&p->connections, 0);
    *out = p;
    return 0;
}

void srv_prom_destroy(srv_prom *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void srv_prom_request(srv_prom *p, const char *method, const char *route, unsigned status)
{
    if (!p)
        return;
    route = route ? route : "unmatched";
    pthread_mutex_lock(&p->mu);
    size_t i;
    for (i = 0; i < p->n; i++)
        if (p->s[i].route == route && p->s[i].status == status &&
            strncmp(p->s[i].method, method, sizeof p->s[i].method - 1) == 0)
            break;
    if (i == p->n && p->n < MAX_SERIES) {
        p->s[i].route = route;
        snprintf(p->s[i].method, sizeof p->s[i].method, "%s", method);
        p->s[i].status = status;
        p->n++;
    }
    if (i < p->n)
        p->s[i].count++;
    else
        p->dropped++;
    pthread_mutex_unlock(&p->mu);
}

void srv_prom_connection(srv_prom *p, int delta)
{
    if (p)
        atomic_fetch_add(&p->connections, delta);
}

long srv_prom_connections(srv_prom *p)
{
    return p ? atomic_load(&p->connections) : 0;
}

static int append(char **buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int append(char **buf, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    char *b = realloc(*buf, *len + (size_t)n + 1);
    if (!b)
        return -1;
    *buf = b;
    va_start(ap, fmt);
    vsnprintf(b + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
    return 0;
}

int srv_prom_render_requests(srv_prom *p, char **buf, size_t *len)
{
    series *copy = malloc(sizeof p->s);
    if (!copy)
        return -1;
    pthread_mutex_lock(&p->mu);
    size_t n = p->n;
    memcpy(copy, p->s, n * sizeof *copy);
    pthread_mutex_unlock(&p->mu);
    int rc = append(buf, len,
                    "# HELP thawd_http_requests_total HTTP requests answered, by route and "
                    "status.\n# TYPE thawd_http_requests_total counter\n");
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = append(
            buf, len, "thawd_http_requests_total{method=\"%s\",route=\"%s\",code=\"%u\"} %llu\n",
            copy[i].method, copy[i].route, copy[i].status, (unsigned long long)copy[i].count);
    free(copy);
    return rc;
}
