/*
 * handlers.h: the request/reply types shared by http.c, routes.c and the handlers.
 *
 * Handlers see no libmicrohttpd types: they read a srv_request and fill a srv_reply, which
 * http.c turns into an MHD response. Every handler answers (a body or a problem); none
 * trains or waits on a worker.
 */
#pragma once

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
    void *conn; /* opaque for `query` */
} srv_request;

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
} srv_reply;

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
/* handlers_jobs.c */
void srv_handle_job_create(srv_request *req, srv_reply *rep);
void srv_handle_job_list(srv_request *req, srv_reply *rep);
void srv_handle_job_get(srv_request *req, srv_reply *rep);
void srv_handle_job_cancel(srv_request *req, srv_reply *rep);
void srv_handle_job_events(srv_request *req, srv_reply *rep);
void srv_handle_job_checkpoints(srv_request *req, srv_reply *rep);
void srv_handle_job_checkpoint_get(srv_request *req, srv_reply *rep);
