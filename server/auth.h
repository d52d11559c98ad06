/*
 * auth.h: API bearer tokens, scopes, the per-request access check and stream tickets.
 *
 * Tokens look like `thawd_<id>_<64 hex digits>`: <id> is the row id in storage (so a lookup is
 * one primary-key read), the hex part is 32 bytes from getrandom(). Storage keeps only the
 * SHA-256 of the hex part; requests are checked by hashing what was sent and comparing the
 * digests in constant time. Scopes: read (GET), submit (create/cancel/retry jobs, uploads),
 * admin (everything). A stream ticket is a short-lived HMAC over (job, token, expiry) that
 * lets a browser EventSource, which cannot send headers, open one job's event stream.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../storage/storage.h"
#include "config.h"
#include "handlers.h"

/* Scope bits of a token. SRV_SCOPE_ADMIN grants every other scope. */
enum {
    SRV_SCOPE_READ = 1u << 0,
    SRV_SCOPE_SUBMIT = 1u << 1,
    SRV_SCOPE_ADMIN = 1u << 2,
    SRV_SCOPE_ALL_ = (1u << 3) - 1,
};

/* What a route needs (the access column of routes.c). The zero value demands admin, so a
 * route row that forgets the column fails closed. */
typedef enum srv_access {
    SRV_ACCESS_ADMIN = 0,
    SRV_ACCESS_PUBLIC, /* no credentials ever (/healthz, /readyz) */
    SRV_ACCESS_READ,   /* read scope */
    SRV_ACCESS_SUBMIT, /* submit scope */
    SRV_ACCESS_STREAM, /* read scope; or, for an SSE request (Accept: text/event-stream or
                        * ?stream=true), a ?ticket= for the job in params[0] */
} srv_access;

#define SRV_TOKEN_MAX     96  /* "thawd_" + 19 digits + "_" + 64 hex + NUL fits */
#define SRV_TICKET_MAX    128 /* "<token id>.<expiry ms>.<64 hex>" + NUL fits */
#define SRV_TICKET_TTL_MS 60000

/* ---- building blocks (pure; thread-safe) ---------------------------------------------------- */

/* SHA-256 of `len` bytes as 64 lowercase hex digits plus NUL. */
void srv_sha256_hex(const void *data, size_t len, char hex[65]);

/* Parses a comma-separated scope list ("read,submit"; spaces around names allowed, order and
 * repeats free) into *mask. Returns 0, or -1 with a message naming the bad part in err. */
int srv_scopes_parse(const char *text, unsigned *mask, char *err, size_t err_size);
/* The canonical text of a mask ("read,submit", "admin"); "" for 0. */
void srv_scopes_format(unsigned mask, char *buf, size_t size);

/* Splits `token` into its id and secret (64 hex digits + NUL). Returns 0, or -1 when it is
 * not of the form thawd_<id>_<secret>. */
int srv_token_parse(const char *token, int64_t *id, char secret[65]);

/* Creates a token: a fresh secret from getrandom(), its SHA-256 stored with `name` and
 * `mask` through `s`. On success writes the whole token (shown once; never stored) into
 * token[SRV_TOKEN_MAX] and its id into *id, and returns 0. Returns a STORE_* code from
 * storage, or -1 when getrandom() failed (message in err). `s` is borrowed. */
int srv_token_create(store *s, const char *name, unsigned mask, char token[SRV_TOKEN_MAX],
                     int64_t *id, char *err, size_t err_size);

/* Issues a ticket for job `job_id`'s event stream on behalf of token `token_id` (0 when auth
 * is off), valid until now_ms + SRV_TICKET_TTL_MS (*expires_ms). Returns 0 or -1 (no random
 * key: getrandom failed). */
int srv_ticket_issue(int64_t job_id, int64_t token_id, int64_t now_ms, char ticket[SRV_TICKET_MAX],
                     int64_t *expires_ms);
/* Checks a ticket for job `job_id` at now_ms: well-formed, not expired, MAC matches. Sets
 * *token_id to the token it was issued for. Returns 0 or -1. */
int srv_ticket_verify(const char *ticket, int64_t job_id, int64_t now_ms, int64_t *token_id);

/* True when every address `host` resolves to (numerically or through the resolver) is a
 * loopback address (127.0.0.0/8, ::1, ::ffff:127.x). Returns 0 and sets *loopback, or -1
 * with the resolver's message in err. */
int srv_auth_host_is_loopback(const char *host, bool *loopback, char *err, size_t err_size);

/* ---- decisions ------------------------------------------------------------------------------ */

typedef struct srv_auth_result {
    unsigned status;   /* 0 = allowed; else 401, 403 or 500 */
    int64_t token_id;  /* the caller's token (0 when auth is off or on a public route) */
    const char *error; /* "invalid_token", "insufficient_scope" or NULL (static) */
    const char *scope; /* the scope that was missing (403), static */
    char detail[160];  /* for the problem body */
} srv_auth_result;

/* Is auth enforced right now? REQUIRED: yes. INSECURE_NONE: no. AUTO: when `s` holds at
 * least one active token. Returns 0 and sets *on, or a STORE_* code. */
int srv_auth_enabled(store *s, srv_auth_mode mode, bool *on);

/* Decides one request: `authorization` is the Authorization header (NULL when absent),
 * `ticket` the ?ticket= value (NULL when absent; used only for SRV_ACCESS_STREAM, with
 * `job_id` the job of the route). Stamps the token's last use (at most once a minute).
 * Never fails open: a storage error gives status 500. */
void srv_auth_decide(store *s, srv_auth_mode mode, const char *authorization, srv_access access,
                     const char *ticket, int64_t job_id, int64_t now_ms, srv_auth_result *res);

/* The dispatcher's hook: decides `req` for a route needing `access` (using the calling
 * thread's store and req->authorization / ?ticket=). Returns true and sets req->token_id
 * when allowed; otherwise fills `rep` with the 401/403/500 problem (and WWW-Authenticate)
 * and returns false. */
bool srv_auth_check(srv_request *req, srv_access access, srv_reply *rep);

/* Start-up rule, called once by main before listening: a non-loopback --host needs an
 * active token (or --auth insecure-none); when it has one, --auth auto becomes required so
 * that revoking the last token cannot open the daemon. Returns 0; 1 when the daemon must
 * refuse to start (message in err, exit 2); -1 on a resolver or storage failure (message
 * in err). */
int srv_auth_startup_check(srv_config *cfg, store *s, char *err, size_t err_size);

/* POST /v1/jobs/{id}/events/ticket: a stream ticket for that job (read scope). */
void srv_handle_job_events_ticket(srv_request *req, srv_reply *rep);

/* `thawd token ...` (cli_token.c): argv after "token". Returns the exit status (0 ok, 1
 * failure, 2 bad usage). */
int srv_cli_token(int argc, char **argv);
