/*
 * handlers_health.c: operations endpoints: GET /healthz (liveness: the process answers),
 * GET /readyz (readiness: storage answers, workers run, not shutting down), GET /metrics
 * (Prometheus text format 0.0.4) and GET /openapi.yaml (the API description, embedded at
 * build time).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "json_io.h"
#include "metrics_prom.h"
#include "sse.h"

/* api-spec/openapi.yaml, embedded by server/embed_file.py (openapi_blob.c). */
extern const char srv_openapi_yaml[];
extern const size_t srv_openapi_yaml_len;

void srv_handle_healthz(srv_request *req, srv_reply *rep)
{
    (void)req;
    srv_reply_json(rep, 200, json_pack("{s:s}", "status", "ok"));
}

void srv_handle_readyz(srv_request *req, srv_reply *rep)
{
    store *s = NULL;
    int64_t n = 0;
    bool db = srv_app_store(req->app, &s) == 0 && store_job_count(s, STORE_JOB_QUEUED, 0, &n) == 0;
    bool draining = atomic_load(&req->app->shutting_down);
    bool workers = req->app->workers != NULL;
    if (!db || draining || !workers) {
        const char *why = draining ? "the daemon is shutting down"
                          : !db    ? "storage does not answer"
                                   : "no training workers";
        srv_reply_problem(rep, req, 503, why);
        srv_reply_header(rep, "Retry-After", "5");
        return;
    }
    srv_reply_json(rep, 200,
                   json_pack("{s:s, s:{s:s, s:s}}", "status", "ready", "checks", "storage", "ok",
                             "workers", "ok"));
    rep->no_etag = true;
}

static int add(char **buf, size_t *len, const char *text)
{
    size_t n = strlen(text);
    char *b = realloc(*buf, *len + n + 1);
    if (!b)
        return -1;
    memcpy(b + *len, text, n + 1);
    *buf = b;
    *len += n;
    return 0;
}

void srv_handle_metrics(srv_request *req, srv_reply *rep)
{
    store *s;
    if (srv_app_store(req->app, &s) != 0) {
        srv_reply_problem(rep, req, 503, "storage is unavailable");
        return;
    }
    char *buf = NULL;
    size_t len = 0;
    char line[256];
    int rc = add(&buf, &len,
                 "# HELP thawd_jobs Jobs in the store, by state.\n# TYPE thawd_jobs gauge\n");
    int64_t queued = 0;
    for (int st = STORE_JOB_QUEUED; rc == 0 && st <= STORE_JOB_CANCELLED; st++) {
        int64_t n = 0;
        if (store_job_count(s, (store_job_state)st, 0, &n) != 0) {
            rc = -1;
            break;
        }
        if (st == STORE_JOB_QUEUED)
            queued = n;
        snprintf(line, sizeof line, "thawd_jobs{state=\"%s\"} %lld\n",
                 store_job_state_name((store_job_state)st), (long long)n);
        rc = add(&buf, &len, line);
    }
    double rate = 0;
    if (rc == 0 && store_job_count_running_rate(s, &rate) != 0)
        rc = -1;
    if (rc == 0) {
        snprintf(line, sizeof line,
                 "# HELP thawd_queue_depth Jobs waiting for a worker.\n"
                 "# TYPE thawd_queue_depth gauge\nthawd_queue_depth %lld\n",
                 (long long)queued);
        rc = add(&buf, &len, line);
    }
    if (rc == 0) {
        snprintf(line, sizeof line,
                 "# HELP thawd_train_steps_per_second Training batches per second, summed over "
                 "running jobs.\n# TYPE thawd_train_steps_per_second gauge\n"
                 "thawd_train_steps_per_second %.6g\n",
                 rate);
        rc = add(&buf, &len, line);
    }
    if (rc == 0) {
        snprintf(line, sizeof line,
                 "# HELP thawd_event_streams Open Server-Sent Events streams.\n"
                 "# TYPE thawd_event_streams gauge\nthawd_event_streams %zu\n"
                 "# HELP thawd_http_connections Open HTTP connections.\n"
                 "# TYPE thawd_http_connections gauge\nthawd_http_connections %ld\n",
                 srv_sse_count(req->app->sse), srv_prom_connections(req->app->prom));
        rc = add(&buf, &len, line);
    }
    if (rc == 0 && req->app->prom)
        rc = srv_prom_render_requests(req->app->prom, &buf, &len);
    if (rc != 0) {
        free(buf);
        srv_reply_problem(rep, req, 503, "cannot collect the metrics");
        return;
    }
    rep->status = 200;
    rep->content_type = "text/plain; version=0.0.4; charset=utf-8";
    rep->body = buf;
    rep->body_len = len;
    rep->no_etag = true;
}

void srv_handle_openapi(srv_request *req, srv_reply *rep)
{
    char *copy = malloc(srv_openapi_yaml_len + 1);
    if (!copy) {
        srv_reply_problem(rep, req, 503, "out of memory");
        return;
    }
    memcpy(copy, srv_openapi_yaml, srv_openapi_yaml_len + 1);
    rep->status = 200;
    rep->content_type = "application/yaml";
    rep->body = copy;
    rep->body_len = srv_openapi_yaml_len;
}
