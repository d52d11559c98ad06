/*
 * routes.c: the route table {method, path pattern, handler} and dispatch.
 *
 * Patterns are '/'-separated; a segment "{...}" captures one non-empty segment. A path that
 * matches a pattern under another method gets 405 with an Allow header listing the methods
 * that would match; a path matching nothing gets 404. OPTIONS on a known path is a CORS
 * preflight: 204 with the methods of that path, before any auth check (browsers send no
 * credentials on a preflight).
 */
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "handlers.h"

/* `access` is what the caller's bearer token must grant once auth is on (auth.h): GETs need
 * read, actions on jobs need submit, anything destructive needs admin. A row without it gets
 * 0 = SRV_ACCESS_ADMIN, so a new route fails closed until someone decides. */
typedef struct route {
    const char *method;
    const char *pattern;
    srv_handler handler;
    srv_access access;
} route;

static const route routes[] = {
    {"GET", "/healthz", srv_handle_healthz, SRV_ACCESS_PUBLIC},
    {"GET", "/readyz", srv_handle_readyz, SRV_ACCESS_PUBLIC},
    {"GET", "/metrics", srv_handle_metrics, SRV_ACCESS_READ},
    {"GET", "/openapi.yaml", srv_handle_openapi, SRV_ACCESS_PUBLIC},
    {"POST", "/v1/jobs", srv_handle_job_create, SRV_ACCESS_SUBMIT},
    {"GET", "/v1/jobs", srv_handle_job_list, SRV_ACCESS_READ},
    {"GET", "/v1/jobs/{id}", srv_handle_job_get, SRV_ACCESS_READ},
    {"POST", "/v1/jobs/{id}/cancel", srv_handle_job_cancel, SRV_ACCESS_SUBMIT},
    {"GET", "/v1/jobs/{id}/events", srv_handle_job_events, SRV_ACCESS_STREAM},
    {"POST", "/v1/jobs/{id}/events/ticket", srv_handle_job_events_ticket, SRV_ACCESS_READ},
    {"GET", "/v1/jobs/{id}/checkpoints", srv_handle_job_checkpoints, SRV_ACCESS_READ},
    {"GET", "/v1/jobs/{id}/checkpoints/{name}", srv_handle_job_checkpoint_get, SRV_ACCESS_READ},
    {"DELETE", "/v1/jobs/{id}", srv_handle_job_delete, SRV_ACCESS_ADMIN},
    {"POST", "/v1/jobs/{id}/retry", srv_handle_job_retry, SRV_ACCESS_SUBMIT},
    {"GET", "/v1/jobs/{id}/metrics", srv_handle_job_metrics, SRV_ACCESS_READ},
    {"GET", "/v1/jobs/{id}/lr_find", srv_handle_job_lr_find, SRV_ACCESS_READ},
    {"GET", "/v1/jobs/{id}/lr_find.svg", srv_handle_job_lr_find_svg, SRV_ACCESS_READ},
    {"GET", "/v1/jobs/{id}/summary", srv_handle_job_summary, SRV_ACCESS_READ},
    {"POST", "/v1/datasets", srv_handle_dataset_create, SRV_ACCESS_SUBMIT},
    {"GET", "/v1/datasets", srv_handle_dataset_list, SRV_ACCESS_READ},
    {"POST", "/v1/datasets/import", srv_handle_dataset_import, SRV_ACCESS_ADMIN},
    {"GET", "/v1/datasets/{id}", srv_handle_dataset_get, SRV_ACCESS_READ},
    {"DELETE", "/v1/datasets/{id}", srv_handle_dataset_delete, SRV_ACCESS_ADMIN},
    {"POST", "/v1/models", srv_handle_model_create, SRV_ACCESS_SUBMIT},
    {"GET", "/v1/models", srv_handle_model_list, SRV_ACCESS_READ},
    {"GET", "/v1/models/{id}", srv_handle_model_get, SRV_ACCESS_READ},
    {"GET", "/v1/models/{id}/file", srv_handle_model_file, SRV_ACCESS_READ},
    {"DELETE", "/v1/models/{id}", srv_handle_model_delete, SRV_ACCESS_ADMIN},
    {"POST", "/v1/jobs/{id}/checkpoints/{name}/promote", srv_handle_model_promote,
     SRV_ACCESS_SUBMIT},
};

/* Matches `path` against `pattern`; on success stores up to SRV_ROUTE_MAX_PARAMS captures
 * into caps (each at most 127 bytes + NUL). */
static bool match(const char *pattern, const char *path, char caps[][128], size_t *n_caps)
{
    *n_caps = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p != '/' || *s != '/')
            return false;
        p++;
        s++;
        size_t plen = strcspn(p, "/"), slen = strcspn(s, "/");
        if (plen > 0 && p[0] == '{') {
            if (slen == 0 || slen >= 128 || *n_caps >= SRV_ROUTE_MAX_PARAMS)
                return false;
            memcpy(caps[*n_caps], s, slen);
            caps[*n_caps][slen] = '\0';
            (*n_caps)++;
        } else if (plen != slen || strncmp(p, s, plen) != 0) {
            return false;
        }
        p += plen;
        s += slen;
    }
    return *p == '\0' && *s == '\0';
}

void srv_route_dispatch(srv_request *req, srv_reply *rep)
{
    static _Thread_local char caps[SRV_ROUTE_MAX_PARAMS][128];
    char allow[64] = "";
    bool options = strcmp(req->method, "OPTIONS") == 0;
    bool path_known = false;
    bool head = strcmp(req->method, "HEAD") == 0;
    size_t n;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (!match(routes[i].pattern, req->path, caps, &n))
            continue;
        path_known = true;
        if (!options && (strcmp(routes[i].method, req->method) == 0 ||
                         (head && strcmp(routes[i].method, "GET") == 0))) {
            for (size_t k = 0; k < n; k++)
                req->params[k] = caps[k];
            req->n_params = n;
            req->route = routes[i].pattern;
            if (srv_auth_check(req, routes[i].access, rep))
                routes[i].handler(req, rep);
            return;
        }
        if (!strstr(allow, routes[i].method)) {
            size_t l = strlen(allow);
            snprintf(allow + l, sizeof allow - l, "%s%s", l ? ", " : "", routes[i].method);
        }
    }
    if (!path_known) {
        char detail[160];
        snprintf(detail, sizeof detail, "no route for %.100s", req->path);
        srv_reply_problem(rep, req, 404, detail);
        return;
    }
    if (options) {
        rep->status = 204;
        size_t l = strlen(allow);
        snprintf(allow + l, sizeof allow - l, ", OPTIONS");
        snprintf(rep->allow, sizeof rep->allow, "%s", allow);
        srv_reply_header(rep, "Access-Control-Allow-Methods", allow);
        srv_reply_header(rep, "Access-Control-Allow-Headers",
                         "Authorization, Content-Type, Idempotency-Key, If-None-Match, "
                         "Last-Event-ID, Range");
        srv_reply_header(rep, "Access-Control-Max-Age", "600");
        return;
    }
    char detail[160];
    snprintf(detail, sizeof detail, "%.16s is not allowed here; allowed: %s", req->method, allow);
    srv_reply_problem(rep, req, 405, detail);
    snprintf(rep->allow, sizeof rep->allow, "%s", allow);
}
