/*
 * handlers.h: the request/reply types shared by http.c, routes.c and the handlers.
 *
 * Handlers see no libmicrohttpd types: they read a srv_request and fill a srv_reply, which
 * http.c turns into an MHD response. Every handler answers (a body or a problem); none
 * trains or waits on a worker.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "app.h"

#define SRV_ROUTE_MAX_PARAMS 2

typedef struct srv_request {
    srv_app *app;
    const char *method;       /* borrowed from MHD for the callback */
    const char *path;         /* URL path without the query string */
    const char *content_type; /* may be NULL */
    const char *body;         /* the accumulated body (may be NULL when empty) */
    size_t body_len;
    const char *params[SRV_ROUTE_MAX_PARAMS]; /* path captures ({id}, {name}), NUL-terminated */
    size_t n_params;
    /* Query-string lookup: returns the value of `key` (borrowed) or NULL. */
    const char *(*query)(const struct srv_request *req, const char *key);
    void *conn; /* opaque for `query` and `header` */
    /* Request-header lookup (case-insensitive name): the value (borrowed) or NULL. */
    const char *(*header)(const struct srv_request *req, const char *name);
    const char *route;         /* the matched route pattern (static), set by srv_route_dispatch */
    const char *authorization; /* Authorization header (borrowed from MHD), or NULL */
    int64_t token_id;          /* set by the auth check: the caller's token, 0 = none */
} srv_request;

#define SRV_REPLY_MAX_HEADERS 6

typedef struct srv_reply {
    unsigned status;
    const char *content_type; /* static string */
    char *body;               /* caller owns, free with free(); NULL = empty */
    size_t body_len;
    int fd; /* >= 0: send this file (takes ownership) instead of body */
    uint64_t fd_size;
    char location[96];     /* Location header when non-empty */
    char allow[64];        /* Allow header when non-empty */
    char disposition[160]; /* Content-Disposition header when non-empty */
    uint64_t fd_offset;    /* first byte of the file to send (Range) */
    /* ETag of the representation; empty = http.c derives a strong one from the body of a
     * 200 reply and answers If-None-Match with 304 itself. */
    char etag[80];
    bool no_etag; /* never add an ETag (e.g. volatile bodies such as /metrics) */
    /* More response headers (name and value are copied), added by srv_reply_header. */
    size_t n_headers;
    char header_name[SRV_REPLY_MAX_HEADERS][32];
    char header_value[SRV_REPLY_MAX_HEADERS][160];
    /* Server-Sent Events: stream job `stream_job`'s events with ids > stream_after instead
     * of a body, with a heartbeat comment every stream_heartbeat_ms. */
    bool stream;
    int64_t stream_job, stream_after;
    int stream_heartbeat_ms;
    char www_authenticate[224]; /* WWW-Authenticate header when non-empty (401, 403) */
} srv_reply;

/* Adds a response header (both strings copied, truncated to fit); at most
 * SRV_REPLY_MAX_HEADERS, further ones are dropped with a warning. */
void srv_reply_header(srv_reply *r, const char *name, const char *value);

/* Sets a JSON reply; takes ownership of `body` (a reference), even on failure (which
 * becomes a 500 problem). */
void srv_reply_json(srv_reply *r, unsigned status, json_t *body);
/* Sets a problem+json reply for `status` with `detail` (may be NULL) for `req`'s path. */
void srv_reply_problem(srv_reply *r, const srv_request *req, unsigned status, const char *detail);
/* Sets a problem+json reply from a built problem object (takes ownership). */
void srv_reply_problem_json(srv_reply *r, unsigned status, json_t *problem);

typedef void (*srv_handler)(srv_request *req, srv_reply *rep);

/* Finds the route for req->method and req->path, fills req->params and calls the handler;
 * answers 404 (no route) or 405 with Allow (wrong method) itself. */
void srv_route_dispatch(srv_request *req, srv_reply *rep);

/* handlers_health.c */
void srv_handle_healthz(srv_request *req, srv_reply *rep);
void srv_handle_readyz(srv_request *req, srv_reply *rep);
void srv_handle_metrics(srv_request *req, srv_reply *rep);
void srv_handle_openapi(srv_request *req, srv_reply *rep);
/* handlers_jobs.c */
void srv_handle_job_create(srv_request *req, srv_reply *rep);
void srv_handle_job_list(srv_request *req, srv_reply *rep);
void srv_handle_job_get(srv_request *req, srv_reply *rep);
void srv_handle_job_cancel(srv_request *req, srv_reply *rep);
void srv_handle_job_events(srv_request *req, srv_reply *rep);
void srv_handle_job_checkpoints(srv_request *req, srv_reply *rep);
void srv_handle_job_checkpoint_get(srv_request *req, srv_reply *rep);
void srv_handle_job_retry(srv_request *req, srv_reply *rep);
void srv_handle_job_delete(srv_request *req, srv_reply *rep);
void srv_handle_job_metrics(srv_request *req, srv_reply *rep);
void srv_handle_job_lr_find(srv_request *req, srv_reply *rep);
void srv_handle_job_lr_find_svg(srv_request *req, srv_reply *rep);
void srv_handle_job_summary(srv_request *req, srv_reply *rep);
/* handlers_datasets.c (POST /v1/datasets is streamed by http.c, see datasets.h) */
void srv_handle_dataset_create(srv_request *req, srv_reply *rep);
void srv_handle_dataset_import(srv_request *req, srv_reply *rep);
void srv_handle_dataset_list(srv_request *req, srv_reply *rep);
void srv_handle_dataset_get(srv_request *req, srv_reply *rep);
void srv_handle_dataset_delete(srv_request *req, srv_reply *rep);
/* handlers_models.c (POST /v1/models is streamed by http.c through srv_upload, models.h) */
void srv_handle_model_create(srv_request *req, srv_reply *rep);
void srv_handle_model_list(srv_request *req, srv_reply *rep);
void srv_handle_model_get(srv_request *req, srv_reply *rep);
void srv_handle_model_file(srv_request *req, srv_reply *rep);
void srv_handle_model_delete(srv_request *req, srv_reply *rep);
void srv_handle_model_promote(srv_request *req, srv_reply *rep);
