/*
 * http.c: libmicrohttpd glue: listening socket, access handler, body accumulation, replies.
 *
 * DESIGN: we create the listening socket ourselves (so a bind failure reports errno, e.g.
 * "Address already in use") and hand it to MHD with MHD_OPTION_LISTEN_SOCKET. MHD runs its
 * own polling threads (MHD_USE_AUTO_INTERNAL_THREAD + a pool of --http-threads). Per request:
 * the first access-handler call allocates a req_state (in *con_cls) and rejects an announced
 * Content-Length above --max-body with 413 before keeping any body; body chunks are copied
 * into a buffer that grows up to the cap (a chunked body past the cap is discarded and then
 * answered 413); the final call builds a srv_request, dispatches it and queues the reply.
 * MHD_OPTION_NOTIFY_COMPLETED logs one line per request and frees the state.
 *
 * An answer decided before the body is read (413, 401, 422, 503) is sent at once only when the
 * client is not sending the body yet (it waits for "100 Continue", which the answer replaces)
 * or has none. Otherwise the client is mid-upload, and if we answered and closed, the bytes
 * still arriving would make our TCP stack reset the connection, which can destroy the answer
 * before the client reads it (curl: "Failed sending data to the peer"; RFC 9112 section 9.6
 * asks for a lingering close). So the answer waits in req_state while the body, up to
 * LINGER_MAX bytes, is read and dropped, and goes out on the final call; a longer body is
 * cut off by closing the connection.
 */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "datasets.h"
#include "handlers.h"
#include "json_io.h"
#include "log.h"
#include "metrics_prom.h"
#include "sse.h"

/* MHD accepts this many connections beyond --max-connections, so that requests on them can
 * be answered 503 instead of the connection being refused without a word. */
#define EXTRA_CONNECTIONS 16
/* The most request body read and dropped to deliver an early answer cleanly (above). */
#define LINGER_MAX        ((uint64_t)64 << 20)
#define CORS_ALLOW_ORIGIN "*"
#define CORS_EXPOSE                                                                          \
    "ETag, Location, Link, Retry-After, Idempotent-Replayed, Content-Range, Accept-Ranges, " \
    "Content-Disposition"

struct srv_http {
    struct MHD_Daemon *mhd;
    srv_app *app;
    uint16_t port;
};

typedef struct req_state {
    char *body;
    size_t len, cap;
    bool too_large;
    bool too_slow;    /* the body took longer than --request-timeout */
    bool answered;    /* decided on the first call: the body is dropped */
    srv_reply *early; /* that answer, held until the body has been read (LINGER_MAX) */
    uint64_t dropped; /* body bytes dropped since */
    bool counted;     /* in /metrics' request counts already (send_reply) */
    unsigned status;
    uint64_t bytes;
    struct timespec start;
    char method[16];
    char path[256];
    const char *route; /* matched route pattern (static) or NULL */
    /* POST /v1/datasets: the body streams to disk (datasets.h) */
    srv_upload *upload;
} req_state;

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- replies ------------------------------------------------------------------------------ */

static void reply_reset(srv_reply *r)
{
    free(r->body);
    if (r->fd >= 0)
        close(r->fd);
    memset(r, 0, sizeof *r);
    r->fd = -1;
}

void srv_reply_problem_json(srv_reply *r, unsigned status, json_t *problem)
{
    reply_reset(r);
    r->status = status;
    r->content_type = "application/problem+json";
    r->body = problem ? srv_json_dump(problem, &r->body_len) : NULL;
    json_decref(problem);
    if (!r->body) {
        static const char fallback[] =
            "{\"type\":\"urn:thawd:problem:internal-error\",\"title\":\"Internal server error\","
            "\"status\":500,\"detail\":\"out of memory\"}";
        r->status = 500;
        r->body = strdup(fallback);
        r->body_len = r->body ? strlen(fallback) : 0;
    }
}

void srv_reply_problem(srv_reply *r, const srv_request *req, unsigned status, const char *detail)
{
    srv_reply_problem_json(r, status, srv_problem_new(status, detail, req ? req->path : NULL));
}

void srv_reply_json(srv_reply *r, unsigned status, json_t *body)
{
    reply_reset(r);
    char *text = body ? srv_json_dump(body, &r->body_len) : NULL;
    json_decref(body);
    if (!text) {
        srv_reply_problem(r, NULL, 500, "out of memory building the response");
        return;
    }
    r->status = status;
    r->content_type = "application/json";
    r->body = text;
}

void srv_reply_header(srv_reply *r, const char *name, const char *value)
{
    if (r->n_headers >= SRV_REPLY_MAX_HEADERS) {
        srv_log(SRV_LOG_WARN, "response header dropped name=%s", name);
        return;
    }
    snprintf(r->header_name[r->n_headers], sizeof r->header_name[0], "%s", name);
    snprintf(r->header_value[r->n_headers], sizeof r->header_value[0], "%s", value);
    r->n_headers++;
}

void srv_http_etag(const char *body, size_t len, char out[80])
{
    uint64_t a = 0xcbf29ce484222325ULL, b = 0x84222325cbf29ce4ULL;
    for (size_t i = 0; i < len; i++) {
        a = (a ^ (unsigned char)body[i]) * 0x100000001b3ULL;
        b = (b ^ (unsigned char)body[i]) * 0x100000001b3ULL;
    }
    snprintf(out, 80, "\"%016" PRIx64 "%016" PRIx64 "\"", a, b);
}

/* Does an If-None-Match header value match `etag`? ("*", or a list; W/ prefixes compare
 * weakly as RFC 9110 section 13.1.2 asks.) */
static bool etag_matches(const char *inm, const char *etag)
{
    size_t el = strlen(etag);
    const char *p = inm;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, el) == 0 && (p[el] == '\0' || p[el] == ',' || p[el] == ' '))
            return true;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

static bool is_get(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

/* Queues `rep` on `conn`; frees what `rep` owns. Returns MHD_YES/MHD_NO. */
static enum MHD_Result send_reply(srv_http *h, struct MHD_Connection *conn, req_state *st,
                                  srv_reply *rep)
{
    struct MHD_Response *resp;
    if (!rep->no_etag && !rep->stream && rep->status == 200 && is_get(st->method)) {
        if (!rep->etag[0] && rep->fd < 0)
            srv_http_etag(rep->body ? rep->body : "", rep->body_len, rep->etag);
        const char *inm =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
        if (rep->etag[0] && inm && etag_matches(inm, rep->etag)) {
            free(rep->body);
            rep->body = NULL;
            rep->body_len = 0;
            if (rep->fd >= 0)
                close(rep->fd);
            rep->fd = -1;
            rep->status = 304;
            rep->content_type = NULL;
        }
    }
    if (rep->stream) {
        resp = srv_sse_response(h->app->sse, conn, rep->stream_job, rep->stream_after,
                                rep->stream_heartbeat_ms);
        st->bytes = 0;
    } else if (rep->fd >= 0) {
        resp = MHD_create_response_from_fd_at_offset64(rep->fd_size, rep->fd, rep->fd_offset);
        if (resp)
            rep->fd = -1; /* MHD owns and closes it now */
        st->bytes = rep->fd_size;
    } else {
        resp = MHD_create_response_from_buffer(rep->body_len, rep->body ? rep->body : (void *)"",
                                               rep->body ? MHD_RESPMEM_MUST_FREE
                                                         : MHD_RESPMEM_PERSISTENT);
        if (resp)
            rep->body = NULL; /* MHD frees it */
        st->bytes = rep->body_len;
    }
    if (!resp) {
        reply_reset(rep);
        st->status = 500;
        return MHD_NO;
    }
    bool ok = true;
    if (rep->content_type)
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rep->content_type) ==
              MHD_YES;
    if (rep->location[0])
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, rep->location) == MHD_YES;
    if (rep->allow[0])
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rep->allow) == MHD_YES;
    if (rep->disposition[0])
        ok &= MHD_add_response_header(resp, "Content-Disposition", rep->disposition) == MHD_YES;
    if (rep->etag[0] && !rep->no_etag)
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, rep->etag) == MHD_YES;
    for (size_t i = 0; i < rep->n_headers; i++)
        ok &= MHD_add_response_header(resp, rep->header_name[i], rep->header_value[i]) == MHD_YES;
    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ORIGIN)) {
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN,
                                      CORS_ALLOW_ORIGIN) == MHD_YES;
        ok &=
            MHD_add_response_header(resp, "Access-Control-Expose-Headers", CORS_EXPOSE) == MHD_YES;
    }
    if (rep->stream) {
        ok &= MHD_add_response_header(resp, "X-Accel-Buffering", "no") == MHD_YES;
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") == MHD_YES;
    } else if (rep->etag[0] && !rep->no_etag) {
        /* cacheable only after revalidation: pollers send If-None-Match and get 304 */
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") == MHD_YES;
    } else {
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_YES;
    }

    if (rep->www_authenticate[0])
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                      rep->www_authenticate) == MHD_YES;
    if (!ok)
        srv_log(SRV_LOG_WARN, "could not add a response header path=%s", st->path);
    st->status = rep->status;
    /* counted before the client can have the answer, so a /metrics it sends next sees it */
    srv_prom_request(h->app->prom, st->method, st->route, st->status);
    st->counted = true;
    enum MHD_Result r = MHD_queue_response(conn, rep->status, resp);
    MHD_destroy_response(resp);
    reply_reset(rep);
    return r;
}

/* ---- access handler ----------------------------------------------------------------------- */

/* --http-cpus: MHD starts its pool threads itself, so each pins itself on its first request
 * (srv_http_start checked that the list is usable). */
static void pin_thread(const srv_http *h)
{
    static _Thread_local bool pinned;
    const char *cpus = h->app->cfg->http_cpus;
    if (pinned || !cpus[0])
        return;
    pinned = true;
    if (srv_cpus_pin_self(cpus) != 0)
        srv_log(SRV_LOG_WARN, "cannot pin an HTTP thread cpus=%s err=%s", cpus, strerror(errno));
}

static const char *query_lookup(const srv_request *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

static const char *header_lookup(const srv_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

/* The announced Content-Length: 1 with *n, 0 when none is announced, -1 when it is no number. */
static int content_length(struct MHD_Connection *conn, unsigned long long *n)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return 0;
    char *end;
    errno = 0;
    *n = strtoull(cl, &end, 10);
    return errno || *end || end == cl ? -1 : 1;
}

/* Is the client sending a body right now, one it does not wait for "100 Continue" to send
 * and short enough to read and drop (LINGER_MAX)? */
static bool body_to_linger(struct MHD_Connection *conn)
{
    const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    if (expect && strncasecmp(expect, "100-continue", 12) == 0)
        return false; /* the answer takes the place of "100 Continue" */
    unsigned long long n = 0;
    int announced = content_length(conn, &n);
    if (announced != 0)
        return announced > 0 && n > 0 && n <= LINGER_MAX;
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) !=
           NULL;
}

/* Answers with `rep`, decided on the first call: at once, or after the body (DESIGN above). */
static enum MHD_Result answer_early(srv_http *h, struct MHD_Connection *conn, req_state *st,
                                    srv_reply *rep)
{
    st->answered = true;
    if (body_to_linger(conn) && (st->early = malloc(sizeof *st->early)) != NULL) {
        *st->early = *rep; /* takes over what rep owns */
        st->status = rep->status;
        return MHD_YES;
    }
    return send_reply(h, conn, st, rep);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    srv_http *h = cls;
    req_state *st = *con_cls;
    srv_reply rep;
    memset(&rep, 0, sizeof rep);
    rep.fd = -1;

    if (!st) {
        srv_log_set_thread_name("http");
        pin_thread(h);
        st = calloc(1, sizeof *st);
        if (!st)
            return MHD_NO; /* drop the connection: nothing else we can do without memory */
        clock_gettime(CLOCK_MONOTONIC, &st->start);
        snprintf(st->method, sizeof st->method, "%s", method);
        snprintf(st->path, sizeof st->path, "%s", url);
        *con_cls = st;

        /* Over the connection budget: answer 503 at once instead of queueing work. */
        if (srv_prom_connections(h->app->prom) > h->app->cfg->max_connections) {
            srv_request req = {.path = st->path};
            srv_reply_problem(&rep, &req, 503, "too many connections; retry later");
            srv_reply_header(&rep, MHD_HTTP_HEADER_RETRY_AFTER, "1");
            return answer_early(h, conn, st, &rep);
        }

        if (srv_upload_route(method, url)) { /* streamed upload: its own cap and checks */
            srv_request req = {
                .app = h->app,
                .method = method,
                .path = st->path,
                .content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                            MHD_HTTP_HEADER_CONTENT_TYPE),
                .query = query_lookup,
                .conn = conn,
                .header = header_lookup,
                .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_AUTHORIZATION),
                .route = srv_upload_route(method, url),
            };
            st->route = req.route;
            if (srv_upload_begin(&req, &st->upload, &rep) == 0)
                return MHD_YES;
            return answer_early(h, conn, st, &rep);
        }
        /* Reject an announced oversized body before reading any of it. */
        unsigned long long n = 0;
        int announced = content_length(conn, &n);
        if (announced < 0 || (announced > 0 && n > h->app->cfg->max_body)) {
            char detail[128];
            snprintf(detail, sizeof detail, "the request body is larger than %zu bytes",
                     h->app->cfg->max_body);
            srv_request req = {.path = st->path};
            srv_reply_problem(&rep, &req, 413, detail);
            return answer_early(h, conn, st, &rep);
        }
        return MHD_YES;
    }
    if (st->answered) {
        if (st->early && *upload_data_size == 0) { /* the body is in: answer now */
            rep = *st->early;
            free(st->early);
            st->early = NULL;
            return send_reply(h, conn, st, &rep);
        }
        st->dropped += *upload_data_size;
        *upload_data_size = 0; /* answered at once: MHD discards the rest itself */
        return st->dropped > LINGER_MAX ? MHD_NO : MHD_YES; /* too long: cut it off */
    }
    if (st->upload && *upload_data_size > 0) {
        srv_upload_write(st->upload, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (!st->too_slow && h->app->cfg->request_timeout > 0 &&
            ms_since(&st->start) > 1000.0 * h->app->cfg->request_timeout) {
            st->too_slow = true; /* discard the rest, answer 408 at the end */
            free(st->body);
            st->body = NULL;
            st->len = st->cap = 0;
        }
        if (st->too_slow)
            return MHD_YES;
        if (st->too_large || n > h->app->cfg->max_body - st->len) {
            st->too_large = true; /* keep consuming, answer 413 at the end */
            return MHD_YES;
        }
        if (st->len + n > st->cap) {
            size_t cap = st->cap ? st->cap : 4096;
            while (cap < st->len + n)
                cap *= 2;
            if (cap > h->app->cfg->max_body)
                cap = h->app->cfg->max_body;
            char *b = realloc(st->body, cap);
            if (!b) {
                st->too_large = true;
                return MHD_YES;
            }
            st->body = b;
            st->cap = cap;
        }
        memcpy(st->body + st->len, upload_data, n);
        st->len += n;
        return MHD_YES;
    }
    (void)upload_data;

    /* Final call: answer. */
    srv_request req = {
        .app = h->app,
        .method = method,
        .path = st->path,
        .content_type =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .body = st->body,
        .body_len = st->len,
        .query = query_lookup,
        .conn = conn,
        .header = header_lookup,
        .authorization =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
    };
    if (st->upload) {
        req.route = st->route;
        srv_upload_finish(st->upload, &req, &rep);
    } else if (st->too_slow) {
        char detail[128];
        snprintf(detail, sizeof detail, "the request body took longer than %d s to arrive",
                 h->app->cfg->request_timeout);
        srv_reply_problem(&rep, &req, 408, detail);
    } else if (st->too_large) {
        char detail[128];
        snprintf(detail, sizeof detail, "the request body is larger than %zu bytes",
                 h->app->cfg->max_body);
        srv_reply_problem(&rep, &req, 413, detail);
    } else {
        srv_route_dispatch(&req, &rep);
        st->route = req.route;
    }
    return send_reply(h, conn, st, &rep);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)conn;
    (void)socket_ctx;
    srv_http *h = cls;
    srv_prom_connection(h->app->prom, toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    req_state *st = *con_cls;
    if (!st)
        return;
    *con_cls = NULL;
    srv_http *h = cls;
    if (!st->counted) /* ended without a queued response */
        srv_prom_request(h->app->prom, st->method, st->route, st->status);
    srv_log(toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? SRV_LOG_INFO : SRV_LOG_WARN,
            "request method=%s path=%s status=%u bytes=%llu ms=%.1f%s", st->method, st->path,
            st->status, (unsigned long long)st->bytes, ms_since(&st->start),
            toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted=1");
    if (st->early) { /* the client left before its body was in */
        reply_reset(st->early);
        free(st->early);
    }
    srv_upload_destroy(st->upload); /* removes what an aborted or failed upload left */
    free(st->body);
    free(st);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    /* The format is libmicrohttpd's own, not ours and not from the network. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    vsnprintf(msg, sizeof msg, fmt, ap);
#pragma GCC diagnostic pop
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    srv_log(SRV_LOG_WARN, "mhd: %s", msg);
}

/* ---- start / stop ------------------------------------------------------------------------- */

static int open_listener(const char *host, int port, int *family, char *err, size_t err_size)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_size, "cannot resolve --host %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
            continue;
        }
        *family = ai->ai_family;
        break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, err_size, "cannot listen on %s:%d: %s", host, port, strerror(saved));
    return fd;
}

int srv_http_start(srv_app *app, srv_http **out, char *err, size_t err_size)
{
    const srv_config *cfg = app->cfg;
    *out = NULL;
    if (cfg->http_cpus[0] && srv_cpus_usable(cfg->http_cpus) != 0) {
        snprintf(err, err_size, "--http-cpus %s: names no CPU this process may run on",
                 cfg->http_cpus);
        return -1;
    }
    int family = AF_INET;
    int fd = open_listener(cfg->host, cfg->port, &family, err, err_size);
    if (fd < 0)
        return -1;
    srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        close(fd);
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    h->app = app;
    if (srv_prom_create(&app->prom) != 0 || srv_sse_create(app, &app->sse) != 0) {
        srv_prom_destroy(app->prom);
        app->prom = NULL;
        close(fd);
        free(h);
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    if (family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, (void *)h,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->http_threads,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->conn_timeout, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(cfg->max_connections + EXTRA_CONNECTIONS), MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)65536, MHD_OPTION_NOTIFY_COMPLETED, on_completed, (void *)h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, (void *)h, MHD_OPTION_END);
    if (!h->mhd) {
        srv_sse_destroy(app->sse);
        srv_prom_destroy(app->prom);
        app->sse = NULL;
        app->prom = NULL;
        close(fd);
        free(h);
        snprintf(err, err_size, "cannot start the HTTP server on %s:%d (see the mhd log line)",
                 cfg->host, cfg->port);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    if (h->port == 0) {
        /* Fall back to the socket itself if this MHD build does not report the port. */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
    }
    *out = h;
    return 0;
}

uint16_t srv_http_port(const srv_http *h)
{
    return h->port;
}

void srv_http_stop(srv_http *h)
{
    if (!h)
        return;
    srv_sse_shutdown(h->app->sse); /* suspended streams must be resumed before the stop */
    MHD_stop_daemon(h->mhd);       /* closes the listening socket and joins the pool threads */
    /* app->sse and app->prom stay until srv_app_fini: workers may still notify the hub */
    free(h);
}
