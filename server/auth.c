/*
 * auth.c: bearer tokens (hashing, parsing, creation), the per-request access decision, stream
 * tickets, the non-loopback start-up rule and the ticket endpoint.
 *
 * DESIGN: a token is `thawd_<id>_<secret>` with a 256-bit random secret, so a plain SHA-256
 * of the secret is a safe at-rest form (no slow KDF needed: nothing to brute-force) and the
 * id makes the lookup one primary-key read; digests are compared in constant time. The
 * SHA-256 here is a small local one: the engine has one, but it is private to engine/ and
 * engine.h is its only public header (STYLE section 2), and storage must not hash (it only
 * sees SQLite). Exposing a hash from the training engine just for auth would couple the two,
 * so auth carries its own 60 lines, checked against FIPS 180-4 and RFC 4231 vectors.
 *
 * Stream tickets are stateless: `<token id>.<expiry ms>.<HMAC-SHA256 hex>` where the MAC
 * covers (job id, token id, expiry) under a 32-byte key drawn once per process. Nothing is
 * stored, so no lock is needed; a restart invalidates all tickets (they live 60 s anyway).
 * A ticket may be reused until it expires (EventSource reconnects with the same URL), and
 * it stops working as soon as its token is revoked.
 */
#include "auth.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "engine.h"
#include "json_io.h"
#include "log.h"

/* ---- SHA-256 (the engine's FIPS 180-4 code) and HMAC-SHA256 (RFC 2104) --------------------- */

static void to_hex(const uint8_t *b, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[b[i] >> 4];
        hex[2 * i + 1] = digits[b[i] & 15];
    }
    hex[2 * n] = '\0';
}

void srv_sha256_hex(const void *data, size_t len, char hex[65])
{
    uint8_t d[32];
    eng_sha256_digest(data, len, d);
    to_hex(d, 32, hex);
}

#define HMAC_MSG_MAX 192 /* the longest message signed here (a ticket) is under 100 bytes */

/* HMAC-SHA256 of a short message (len <= HMAC_MSG_MAX), built on one-shot digests. */
static void hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t len,
                        uint8_t out[32])
{
    uint8_t k[64] = {0}, buf[64 + HMAC_MSG_MAX], inner[32];
    SRV_ASSERT(len <= HMAC_MSG_MAX);
    if (key_len > 64)
        eng_sha256_digest(key, key_len, k);
    else
        memcpy(k, key, key_len);
    for (int i = 0; i < 64; i++)
        buf[i] = k[i] ^ 0x36;
    memcpy(buf + 64, msg, len);
    eng_sha256_digest(buf, 64 + len, inner);
    for (int i = 0; i < 64; i++)
        buf[i] = k[i] ^ 0x5c;
    memcpy(buf + 64, inner, 32);
    eng_sha256_digest(buf, 64 + 32, out);
}

/* Compares n bytes without an early exit, so timing does not reveal the matching prefix. */
static bool ct_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= (uint8_t)(x[i] ^ y[i]);
    return acc == 0;
}

static int fill_random(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- scopes and tokens ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned bit;
} scope_names[] = {
    {"read", SRV_SCOPE_READ},
    {"submit", SRV_SCOPE_SUBMIT},
    {"admin", SRV_SCOPE_ADMIN},
};

int srv_scopes_parse(const char *text, unsigned *mask, char *err, size_t err_size)
{
    *mask = 0;
    if (!text) {
        snprintf(err, err_size, "no scopes given (use read, submit, admin)");
        return -1;
    }
    const char *p = text;
    for (;;) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        const char *q = p + len;
        while (*q == ' ')
            q++;
        if (len == 0 || (*q != ',' && *q != '\0')) {
            snprintf(err, err_size, "'%s' is not a comma-separated list of read, submit, admin",
                     text);
            return -1;
        }
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof scope_names / sizeof scope_names[0]; i++)
            if (strlen(scope_names[i].name) == len && strncmp(scope_names[i].name, p, len) == 0)
                bit = scope_names[i].bit;
        if (!bit) {
            snprintf(err, err_size, "unknown scope '%.*s' (use read, submit, admin)", (int)len, p);
            return -1;
        }
        *mask |= bit;
        if (*q == '\0')
            return 0;
        p = q + 1;
    }
}

void srv_scopes_format(unsigned mask, char *buf, size_t size)
{
    size_t n = 0;
    if (size == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof scope_names / sizeof scope_names[0]; i++) {
        if (!(mask & scope_names[i].bit))
            continue;
        int w = snprintf(buf + n, size - n, "%s%s", n ? "," : "", scope_names[i].name);
        if (w < 0 || (size_t)w >= size - n)
            return;
        n += (size_t)w;
    }
}

static bool is_hex_lower(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

int srv_token_parse(const char *token, int64_t *id, char secret[65])
{
    static const char prefix[] = "thawd_";
    if (!token || strncmp(token, prefix, sizeof prefix - 1) != 0)
        return -1;
    const char *p = token + sizeof prefix - 1;
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || digits > 18 || p[0] == '0' || p[digits] != '_')
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < digits; i++)
        v = v * 10 + (p[i] - '0');
    const char *s = p + digits + 1;
    if (strlen(s) != 64 || !is_hex_lower(s, 64))
        return -1;
    *id = v;
    memcpy(secret, s, 65);
    return 0;
}

int srv_token_create(store *s, const char *name, unsigned mask, char token[SRV_TOKEN_MAX],
                     int64_t *id, char *err, size_t err_size)
{
    uint8_t raw[32];
    char secret[65], digest[65], scopes[32];
    token[0] = '\0';
    *id = 0;
    if (mask == 0 || (mask & ~(unsigned)SRV_SCOPE_ALL_)) {
        snprintf(err, err_size, "a token needs at least one of read, submit, admin");
        return STORE_EINVAL;
    }
    if (fill_random(raw, sizeof raw) != 0) {
        snprintf(err, err_size, "getrandom failed: %s", strerror(errno));
        return -1;
    }
    to_hex(raw, sizeof raw, secret);
    srv_sha256_hex(secret, 64, digest);
    srv_scopes_format(mask, scopes, sizeof scopes);
    int rc = store_token_create(s, name, scopes, digest, id);
    if (rc != 0) {
        snprintf(err, err_size, "cannot store the token: %s", store_strerror(rc));
        return rc;
    }
    snprintf(token, SRV_TOKEN_MAX, "thawd_%lld_%s", (long long)*id, secret);
    memset(secret, 0, sizeof secret);
    return 0;
}

/* ---- stream tickets ------------------------------------------------------------------------- */

static pthread_once_t ticket_once = PTHREAD_ONCE_INIT;
static uint8_t ticket_key[32]; /* written once under ticket_once, read-only afterwards */
static bool ticket_key_ok;     /* likewise */

static void ticket_key_init(void)
{
    ticket_key_ok = fill_random(ticket_key, sizeof ticket_key) == 0;
}

static void ticket_mac(int64_t job_id, int64_t token_id, int64_t expires, char hex[65])
{
    char msg[96];
    uint8_t mac[32];
    int n = snprintf(msg, sizeof msg, "thawd stream ticket v1\n%lld\n%lld\n%lld", (long long)job_id,
                     (long long)token_id, (long long)expires);
    hmac_sha256(ticket_key, sizeof ticket_key, msg, (size_t)n, mac);
    to_hex(mac, sizeof mac, hex);
}

int srv_ticket_issue(int64_t job_id, int64_t token_id, int64_t now, char ticket[SRV_TICKET_MAX],
                     int64_t *expires_ms)
{
    char mac[65];
    ticket[0] = '\0';
    if (pthread_once(&ticket_once, ticket_key_init) != 0 || !ticket_key_ok)
        return -1;
    int64_t exp = now + SRV_TICKET_TTL_MS;
    ticket_mac(job_id, token_id, exp, mac);
    snprintf(ticket, SRV_TICKET_MAX, "%lld.%lld.%s", (long long)token_id, (long long)exp, mac);
    *expires_ms = exp;
    return 0;
}

/* Reads a run of 1..18 digits ending at `end` (a char); advances *p past `end`. */
static bool read_num(const char **p, char end, int64_t *out)
{
    size_t digits = strspn(*p, "0123456789");
    if (digits == 0 || digits > 18 || (*p)[digits] != end)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < digits; i++)
        v = v * 10 + ((*p)[i] - '0');
    *out = v;
    *p += digits + 1;
    return true;
}

int srv_ticket_verify(const char *ticket, int64_t job_id, int64_t now, int64_t *token_id)
{
    int64_t tid, exp;
    char mac[65];
    const char *p = ticket;
    if (!p || pthread_once(&ticket_once, ticket_key_init) != 0 || !ticket_key_ok)
        return -1;
    if (!read_num(&p, '.', &tid) || !read_num(&p, '.', &exp) || strlen(p) != 64 ||
        !is_hex_lower(p, 64))
        return -1;
    if (exp <= now || exp > now + SRV_TICKET_TTL_MS)
        return -1;
    ticket_mac(job_id, tid, exp, mac);
    if (!ct_equal(mac, p, 64))
        return -1;
    *token_id = tid;
    return 0;
}

/* ---- host check ----------------------------------------------------------------------------- */

int srv_auth_host_is_loopback(const char *host, bool *loopback, char *err, size_t err_size)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_size, "cannot resolve --host %s: %s", host, gai_strerror(rc));
        return -1;
    }
    bool all = res != NULL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        bool lo = false;
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)ai->ai_addr;
            lo = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
        } else if (ai->ai_family == AF_INET6) {
            const struct in6_addr *a =
                &((const struct sockaddr_in6 *)(const void *)ai->ai_addr)->sin6_addr;
            lo = IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
        }
        all = all && lo;
    }
    freeaddrinfo(res);
    *loopback = all;
    return 0;
}

/* ---- decisions ------------------------------------------------------------------------------ */

int srv_auth_enabled(store *s, srv_auth_mode mode, bool *on)
{
    *on = mode == SRV_AUTH_REQUIRED;
    if (mode != SRV_AUTH_AUTO)
        return 0;
    int64_t n = 0;
    int rc = store_token_count_active(s, &n);
    if (rc != 0) {
        *on = true; /* fail closed */
        return rc;
    }
    *on = n > 0;
    return 0;
}

__attribute__((format(printf, 4, 5))) static void deny(srv_auth_result *res, unsigned status,
                                                       const char *error, const char *fmt, ...)
{
    va_list ap;
    res->status = status;
    res->error = error;
    va_start(ap, fmt);
    vsnprintf(res->detail, sizeof res->detail, fmt, ap);
    va_end(ap);
}

/* Checks a token row against the secret that was sent and the scope needed. */
static void check_row(store *s, const store_token *t, const char *secret, unsigned need,
                      int64_t now, srv_auth_result *res)
{
    char digest[65];
    unsigned mask = 0;
    char err[128];
    srv_sha256_hex(secret, 64, digest);
    /* The stored digest is compared before anything else so that a caller without the
     * secret learns nothing about the row (not even whether it was revoked). */
    if (!t->secret_sha256 || strlen(t->secret_sha256) != 64 ||
        !ct_equal(digest, t->secret_sha256, 64)) {
        deny(res, 401, "invalid_token", "%s", "the bearer token is not valid");
        return;
    }
    if (t->revoked_at != 0) {
        deny(res, 401, "invalid_token", "%s", "the bearer token has been revoked");
        return;
    }
    if (srv_scopes_parse(t->scopes, &mask, err, sizeof err) != 0)
        mask = 0; /* a row we cannot read grants nothing */
    if (!(mask & (need | SRV_SCOPE_ADMIN))) {
        const char *name = need == SRV_SCOPE_READ     ? "read"
                           : need == SRV_SCOPE_SUBMIT ? "submit"
                                                      : "admin";
        deny(res, 403, "insufficient_scope", "this request needs a token with the %s scope", name);
        res->scope = name;
        res->token_id = t->id;
        return;
    }
    res->token_id = t->id;
    if (now - t->last_used_at >= 60000) {
        int rc = store_token_touch(s, t->id, now);
        if (rc != 0)
            srv_log(SRV_LOG_WARN, "cannot record token use token=%lld err=%s", (long long)t->id,
                    store_strerror(rc));
    }
}

void srv_auth_decide(store *s, srv_auth_mode mode, const char *authorization, srv_access access,
                     const char *ticket, int64_t job_id, int64_t now, srv_auth_result *res)
{
    memset(res, 0, sizeof *res);
    if (access == SRV_ACCESS_PUBLIC)
        return;
    bool on = true;
    if (srv_auth_enabled(s, mode, &on) != 0) {
        deny(res, 500, NULL, "%s", "cannot read the token table");
        return;
    }
    if (!on)
        return;

    store_token t;
    memset(&t, 0, sizeof t);
    if (access == SRV_ACCESS_STREAM && !authorization && ticket) {
        int64_t tid = 0;
        if (srv_ticket_verify(ticket, job_id, now, &tid) != 0 || tid <= 0) {
            deny(res, 401, "invalid_token", "%s",
                 "the stream ticket is not valid for this job or has expired");
            return;
        }
        int rc = store_token_get(s, tid, &t);
        if (rc == STORE_OK && t.revoked_at == 0)
            res->token_id = tid;
        else if (rc == STORE_OK || rc == STORE_ENOTFOUND)
            deny(res, 401, "invalid_token", "%s", "the token behind this ticket was revoked");
        else
            deny(res, 500, NULL, "%s", "cannot read the token table");
        store_token_fini(&t);
        return;
    }
    if (!authorization) {
        deny(res, 401, NULL, "%s",
             access == SRV_ACCESS_STREAM
                 ? "this endpoint needs Authorization: Bearer <token> or a ?ticket= from "
                   "POST /v1/jobs/{id}/events/ticket"
                 : "this endpoint needs a token: send Authorization: Bearer <token>");
        return;
    }
    const char *p = authorization;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t')) {
        deny(res, 401, NULL, "%s", "only the Bearer authorization scheme is supported");
        return;
    }
    p += 6;
    while (*p == ' ' || *p == '\t')
        p++;
    char tok[SRV_TOKEN_MAX + 1];
    size_t len = strcspn(p, " \t");
    const char *rest = p + len;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    int64_t id = 0;
    char secret[65];
    if (len == 0 || len >= sizeof tok || *rest != '\0') {
        deny(res, 401, "invalid_token", "%s", "the bearer token is malformed");
        return;
    }
    memcpy(tok, p, len);
    tok[len] = '\0';
    if (srv_token_parse(tok, &id, secret) != 0) {
        deny(res, 401, "invalid_token", "%s",
             "the bearer token is malformed (expected thawd_<id>_<secret>)");
        return;
    }
    int rc = store_token_get(s, id, &t);
    if (rc == STORE_ENOTFOUND) {
        deny(res, 401, "invalid_token", "%s", "the bearer token is not valid");
    } else if (rc != STORE_OK) {
        deny(res, 500, NULL, "%s", "cannot read the token table");
    } else {
        unsigned need = access == SRV_ACCESS_SUBMIT  ? SRV_SCOPE_SUBMIT
                        : access == SRV_ACCESS_ADMIN ? SRV_SCOPE_ADMIN
                                                     : SRV_SCOPE_READ;
        check_row(s, &t, secret, need, now, res);
    }
    store_token_fini(&t);
    memset(secret, 0, sizeof secret);
    memset(tok, 0, sizeof tok);
}

/* Parses a positive decimal id (the route capture); 0 when it is not one. */
static int64_t param_id(const char *s)
{
    int64_t v = 0;
    if (!s || !*s || strlen(s) > 18)
        return 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* Is this an SSE request (what a ticket is for)? EventSource always sends Accept:
 * text/event-stream; ?stream=true is the handler's other spelling. */
static bool wants_stream(const srv_request *req)
{
    const char *q = req->query ? req->query(req, "stream") : NULL;
    const char *acc = req->conn
                          ? MHD_lookup_connection_value((struct MHD_Connection *)req->conn,
                                                        MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT)
                          : NULL;
    return (acc && strstr(acc, "text/event-stream")) || (q && strcmp(q, "true") == 0);
}

bool srv_auth_check(srv_request *req, srv_access access, srv_reply *rep)
{
    srv_auth_result res;
    memset(&res, 0, sizeof res);
    req->token_id = 0;
    if (access == SRV_ACCESS_PUBLIC)
        return true;
    store *s = NULL;
    if (srv_app_store(req->app, &s) != 0) {
        srv_reply_problem(rep, req, 503, "storage is unavailable");
        return false;
    }
    const char *ticket = NULL;
    int64_t job_id = 0;
    if (access == SRV_ACCESS_STREAM && wants_stream(req)) {
        ticket = req->query ? req->query(req, "ticket") : NULL;
        job_id = req->n_params > 0 ? param_id(req->params[0]) : 0;
    }
    srv_auth_decide(s, req->app->cfg->auth, req->authorization, access, ticket, job_id, now_ms(),
                    &res);
    if (res.status == 0) {
        req->token_id = res.token_id;
        return true;
    }
    if (res.status >= 500)
        srv_log(SRV_LOG_ERROR, "auth check failed path=%s", req->path);
    else
        srv_log(SRV_LOG_INFO, "auth denied status=%u path=%s token=%lld error=%s", res.status,
                req->path, (long long)res.token_id, res.error ? res.error : "none");
    srv_reply_problem(rep, req, res.status, res.detail);
    if (res.status == 401 && res.error)
        snprintf(rep->www_authenticate, sizeof rep->www_authenticate,
                 "Bearer realm=\"thawd\", error=\"%s\", error_description=\"%s\"", res.error,
                 strstr(res.detail, "ticket")    ? "invalid or expired stream ticket"
                 : strstr(res.detail, "revoked") ? "token revoked"
                                                 : "invalid token");
    else if (res.status == 401)
        snprintf(rep->www_authenticate, sizeof rep->www_authenticate, "Bearer realm=\"thawd\"");
    else if (res.status == 403)
        snprintf(rep->www_authenticate, sizeof rep->www_authenticate,
                 "Bearer realm=\"thawd\", error=\"insufficient_scope\", scope=\"%s\"", res.scope);
    return false;
}

int srv_auth_startup_check(srv_config *cfg, store *s, char *err, size_t err_size)
{
    bool loopback = false;
    int64_t active = 0;
    if (srv_auth_host_is_loopback(cfg->host, &loopback, err, err_size) != 0)
        return -1;
    int rc = store_token_count_active(s, &active);
    if (rc != 0) {
        snprintf(err, err_size, "cannot read the token table: %s", store_strerror(rc));
        return -1;
    }
    if (!loopback && cfg->auth == SRV_AUTH_INSECURE_NONE) {
        srv_log(SRV_LOG_WARN,
                "auth is off on a non-loopback address host=%s (--auth "
                "insecure-none): anyone who can reach it controls the daemon",
                cfg->host);
        return 0;
    }
    if (!loopback && active == 0) {
        snprintf(err, err_size,
                 "refusing to listen on %s without authentication: it is not a loopback "
                 "address and no API token exists. Create one with `thawd token create --name "
                 "NAME --scope admin --data-dir %s`, or pass --auth insecure-none to serve "
                 "without tokens",
                 cfg->host, cfg->data_dir);
        return 1;
    }
    if (!loopback && cfg->auth == SRV_AUTH_AUTO)
        cfg->auth = SRV_AUTH_REQUIRED; /* revoking the last token must not open the daemon */
    bool on = cfg->auth == SRV_AUTH_REQUIRED || (cfg->auth == SRV_AUTH_AUTO && active > 0);
    srv_log(SRV_LOG_INFO, "auth mode=%s enabled=%s active_tokens=%lld loopback=%s",
            cfg->auth == SRV_AUTH_REQUIRED        ? "required"
            : cfg->auth == SRV_AUTH_INSECURE_NONE ? "insecure-none"
                                                  : "auto",
            on ? "yes" : "no", (long long)active, loopback ? "yes" : "no");
    return 0;
}

/* ---- POST /v1/jobs/{id}/events/ticket -------------------------------------------------------- */

void srv_handle_job_events_ticket(srv_request *req, srv_reply *rep)
{
    int64_t id = req->n_params > 0 ? param_id(req->params[0]) : 0;
    if (id <= 0) {
        srv_reply_problem(rep, req, 404, "no job with that id");
        return;
    }
    store *s = NULL;
    if (srv_app_store(req->app, &s) != 0) {
        srv_reply_problem(rep, req, 503, "storage is unavailable");
        return;
    }
    store_job job;
    memset(&job, 0, sizeof job);
    int rc = store_job_get(s, id, &job);
    store_job_fini(&job);
    if (rc != 0) {
        unsigned status = srv_status_for_store(rc);
        srv_reply_problem(rep, req, status, status == 404 ? "job not found" : store_strerror(rc));
        return;
    }
    char ticket[SRV_TICKET_MAX], expires[40], url[256];
    int64_t exp = 0;
    if (srv_ticket_issue(id, req->token_id, now_ms(), ticket, &exp) != 0) {
        srv_log(SRV_LOG_ERROR, "cannot issue a stream ticket: no random key");
        srv_reply_problem(rep, req, 500, "cannot issue a stream ticket");
        return;
    }
    srv_time_format(exp, expires, sizeof expires);
    snprintf(url, sizeof url, "/v1/jobs/%lld/events?stream=true&ticket=%s", (long long)id, ticket);
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:I, s:s}", "object", "stream_ticket", "ticket",
                          ticket, "job_id", (json_int_t)id, "expires_at", expires, "expires_in",
                          (json_int_t)(SRV_TICKET_TTL_MS / 1000), "stream_url", url);
    srv_reply_json(rep, 200, o);
}
