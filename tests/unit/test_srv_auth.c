/*
 * test_srv_auth.c: server/auth.c: SHA-256 vectors, scope lists, token parsing, token creation
 * (only the hash is stored), every branch of the access decision (auth off/auto/required,
 * missing, malformed, unknown, wrong secret, revoked, wrong scope, admin, tickets), stream
 * tickets (job binding, expiry, tampering), loopback detection and the start-up rule.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "tap.h"

static const int64_t NOW = 1764300000000LL; /* a fixed clock for the decisions */

static void decide(store *s, srv_auth_mode mode, const char *authz, srv_access access,
                   srv_auth_result *res)
{
    srv_auth_decide(s, mode, authz, access, NULL, 0, NOW, res);
}

static void test_sha256(void)
{
    char hex[65];
    srv_sha256_hex("", 0, hex);
    is_str(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256('')");
    srv_sha256_hex("abc", 3, hex);
    is_str(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "sha256('abc')");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    srv_sha256_hex(two, strlen(two), hex);
    is_str(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
           "sha256 of the 56-byte two-block vector");
    char million[1000];
    memset(million, 'a', sizeof million);
    srv_sha256_hex(million, 64, hex);
    is_str(hex, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb",
           "sha256 of 64 'a' (exactly one block)");
}

static void test_scopes(void)
{
    unsigned m = 0;
    char err[128], buf[32];
    ok(srv_scopes_parse("read", &m, err, sizeof err) == 0 && m == SRV_SCOPE_READ, "read");
    ok(srv_scopes_parse("submit, read,read", &m, err, sizeof err) == 0 &&
           m == (SRV_SCOPE_READ | SRV_SCOPE_SUBMIT),
       "list with spaces and repeats");
    srv_scopes_format(m, buf, sizeof buf);
    is_str(buf, "read,submit", "canonical text");
    ok(srv_scopes_parse("admin", &m, err, sizeof err) == 0 && m == SRV_SCOPE_ADMIN, "admin");
    ok(srv_scopes_parse("write", &m, err, sizeof err) != 0 && strstr(err, "write"),
       "unknown scope named in the message: %s", err);
    ok(srv_scopes_parse("", &m, err, sizeof err) != 0, "empty list refused");
    ok(srv_scopes_parse("read,", &m, err, sizeof err) != 0, "trailing comma refused");
    ok(srv_scopes_parse("read submit", &m, err, sizeof err) != 0, "missing comma refused");
    ok(srv_scopes_parse(NULL, &m, err, sizeof err) != 0, "NULL refused");
    srv_scopes_format(0, buf, sizeof buf);
    is_str(buf, "", "empty mask formats as empty");
}

static void test_token_parse(void)
{
    int64_t id = 0;
    char secret[65];
    const char *hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    char tok[128];
    snprintf(tok, sizeof tok, "thawd_42_%s", hex);
    ok(srv_token_parse(tok, &id, secret) == 0 && id == 42 && strcmp(secret, hex) == 0,
       "well-formed token");
    snprintf(tok, sizeof tok, "thawd_042_%s", hex);
    ok(srv_token_parse(tok, &id, secret) != 0, "leading zero in the id refused");
    snprintf(tok, sizeof tok, "thawd__%s", hex);
    ok(srv_token_parse(tok, &id, secret) != 0, "missing id refused");
    snprintf(tok, sizeof tok, "thawd_1_%.63s", hex);
    ok(srv_token_parse(tok, &id, secret) != 0, "short secret refused");
    snprintf(tok, sizeof tok, "thawd_1_%sA", hex);
    ok(srv_token_parse(tok, &id, secret) != 0, "long secret refused");
    snprintf(tok, sizeof tok, "thawd_1_%.63sG", hex);
    ok(srv_token_parse(tok, &id, secret) != 0, "non-hex secret refused");
    snprintf(tok, sizeof tok, "ghp_1_%s", hex);
    ok(srv_token_parse(tok, &id, secret) != 0, "other prefix refused");
    ok(srv_token_parse(NULL, &id, secret) != 0, "NULL refused");
}

static void test_tickets(void)
{
    char t[SRV_TICKET_MAX], bad[SRV_TICKET_MAX + 8];
    int64_t exp = 0, tid = -1;
    ok(srv_ticket_issue(7, 3, NOW, t, &exp) == 0, "issue a ticket");
    is_int(exp, NOW + SRV_TICKET_TTL_MS, "expires after the TTL");
    ok(srv_ticket_verify(t, 7, NOW + 1000, &tid) == 0 && tid == 3, "verifies for its job");
    ok(srv_ticket_verify(t, 8, NOW + 1000, &tid) != 0, "refused for another job");
    ok(srv_ticket_verify(t, 7, exp, &tid) != 0, "refused at expiry");
    ok(srv_ticket_verify(t, 7, NOW - SRV_TICKET_TTL_MS, &tid) != 0,
       "refused when it claims to live longer than the TTL");
    snprintf(bad, sizeof bad, "%s", t);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
    ok(srv_ticket_verify(bad, 7, NOW + 1000, &tid) != 0, "tampered MAC refused");
    snprintf(bad, sizeof bad, "4%s", t);
    ok(srv_ticket_verify(bad, 7, NOW + 1000, &tid) != 0, "changed token id refused");
    ok(srv_ticket_verify("1.2.zz", 7, NOW, &tid) != 0, "malformed ticket refused");
    ok(srv_ticket_verify("", 7, NOW, &tid) != 0, "empty ticket refused");
}

static void test_loopback(void)
{
    bool lo = false;
    char err[256];
    ok(srv_auth_host_is_loopback("127.0.0.1", &lo, err, sizeof err) == 0 && lo,
       "127.0.0.1 is loopback");
    ok(srv_auth_host_is_loopback("127.3.4.5", &lo, err, sizeof err) == 0 && lo,
       "127.3.4.5 is loopback");
    ok(srv_auth_host_is_loopback("::1", &lo, err, sizeof err) == 0 && lo, "::1 is loopback");
    ok(srv_auth_host_is_loopback("0.0.0.0", &lo, err, sizeof err) == 0 && !lo,
       "0.0.0.0 is not loopback");
    ok(srv_auth_host_is_loopback("::", &lo, err, sizeof err) == 0 && !lo, ":: is not loopback");
    ok(srv_auth_host_is_loopback("10.1.2.3", &lo, err, sizeof err) == 0 && !lo,
       "10.1.2.3 is not loopback");
    ok(srv_auth_host_is_loopback("::ffff:127.0.0.1", &lo, err, sizeof err) == 0 && lo,
       "v4-mapped 127.0.0.1 is loopback");
}

int main(void)
{
    char dir[512], path[600], authz[200], token_read[SRV_TOKEN_MAX], token_admin[SRV_TOKEN_MAX],
        token_rs[SRV_TOKEN_MAX], err[512];
    const char *base = getenv("TMPDIR");
    store *s = NULL;
    srv_auth_result r;
    int64_t id_read = 0, id_admin = 0, id_rs = 0;
    bool on = true;

    test_sha256();
    test_scopes();
    test_token_parse();
    test_tickets();
    test_loopback();

    snprintf(dir, sizeof dir, "%s/thawd-auth-XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(dir)) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    snprintf(path, sizeof path, "%s/t.db", dir);
    if (store_open(path, NULL, NULL, &s) != STORE_OK) {
        printf("Bail out! store_open failed\n");
        return 1;
    }

    /* No tokens: auto is off, required is on, insecure-none is off. */
    ok(srv_auth_enabled(s, SRV_AUTH_AUTO, &on) == 0 && !on, "auto without tokens: off");
    ok(srv_auth_enabled(s, SRV_AUTH_REQUIRED, &on) == 0 && on, "required: on");
    decide(s, SRV_AUTH_AUTO, NULL, SRV_ACCESS_ADMIN, &r);
    is_int(r.status, 0, "auth off: anonymous admin route allowed");
    decide(s, SRV_AUTH_REQUIRED, NULL, SRV_ACCESS_READ, &r);
    ok(r.status == 401 && r.error == NULL, "required without a header: 401, no error code");

    /* Tokens: only the hash is stored. */
    ok(srv_token_create(s, "reader", SRV_SCOPE_READ, token_read, &id_read, err, sizeof err) == 0,
       "create a read token");
    ok(srv_token_create(s, "root", SRV_SCOPE_ADMIN, token_admin, &id_admin, err, sizeof err) == 0,
       "create an admin token");
    ok(srv_token_create(s, "ci", SRV_SCOPE_READ | SRV_SCOPE_SUBMIT, token_rs, &id_rs, err,
                        sizeof err) == 0,
       "create a read,submit token");
    {
        char t0[SRV_TOKEN_MAX];
        int64_t id0 = -1;
        ok(srv_token_create(s, "none", 0, t0, &id0, err, sizeof err) != 0 && id0 == 0 &&
               t0[0] == '\0',
           "a token without scopes is refused");
    }
    ok(strncmp(token_read, "thawd_", 6) == 0 && strlen(token_read) == 6 + 1 + 1 + 64,
       "token shape thawd_<id>_<64 hex>: %.12s...", token_read);
    ok(strcmp(token_read + 8, token_admin + 8) != 0, "secrets differ");
    {
        store_token t;
        char digest[65];
        store_token_get(s, id_read, &t);
        srv_sha256_hex(token_read + 8, 64, digest);
        ok(t.secret_sha256 && strcmp(t.secret_sha256, digest) == 0 &&
               !strstr(t.secret_sha256, token_read + 8),
           "the row holds sha256(secret), not the secret");
        is_str(t.scopes, "read", "scopes stored canonically");
        store_token_fini(&t);
    }
    ok(srv_auth_enabled(s, SRV_AUTH_AUTO, &on) == 0 && on, "auto with a token: on");
    ok(srv_auth_enabled(s, SRV_AUTH_INSECURE_NONE, &on) == 0 && !on, "insecure-none: off");

    /* Decisions with auth on (auto). */
    decide(s, SRV_AUTH_AUTO, NULL, SRV_ACCESS_PUBLIC, &r);
    is_int(r.status, 0, "public route needs nothing");
    decide(s, SRV_AUTH_AUTO, NULL, SRV_ACCESS_READ, &r);
    ok(r.status == 401 && r.error == NULL, "no header: 401 without error code");
    decide(s, SRV_AUTH_AUTO, "Basic dXNlcjpwYXNz", SRV_ACCESS_READ, &r);
    ok(r.status == 401 && r.error == NULL, "Basic scheme: 401 without error code");
    decide(s, SRV_AUTH_AUTO, "Bearer nonsense", SRV_ACCESS_READ, &r);
    ok(r.status == 401 && r.error && strcmp(r.error, "invalid_token") == 0,
       "malformed token: invalid_token");
    snprintf(authz, sizeof authz, "Bearer %s extra", token_read);
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_READ, &r);
    is_int(r.status, 401, "trailing garbage after the token: 401");
    snprintf(authz, sizeof authz, "Bearer thawd_999_%s", token_read + 8);
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_READ, &r);
    ok(r.status == 401 && r.error && strcmp(r.error, "invalid_token") == 0,
       "unknown id: invalid_token");
    snprintf(authz, sizeof authz, "Bearer thawd_%lld_%s", (long long)id_read, token_admin + 8);
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_READ, &r);
    ok(r.status == 401 && strstr(r.detail, "not valid"), "another token's secret: 401");

    snprintf(authz, sizeof authz, "Bearer %s", token_read);
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_READ, &r);
    ok(r.status == 0 && r.token_id == id_read, "read token on a read route");
    snprintf(authz, sizeof authz, "  bearer\t%s  ", token_read);
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_READ, &r);
    is_int(r.status, 0, "scheme is case-insensitive, blanks tolerated");
    snprintf(authz, sizeof authz, "Bearer %s", token_read);
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_SUBMIT, &r);
    ok(r.status == 403 && r.error && strcmp(r.error, "insufficient_scope") == 0 && r.scope &&
           strcmp(r.scope, "submit") == 0,
       "read token on a submit route: 403 insufficient_scope scope=submit");
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_ADMIN, &r);
    ok(r.status == 403 && r.scope && strcmp(r.scope, "admin") == 0, "read token: no admin");
    snprintf(authz, sizeof authz, "Bearer %s", token_rs);
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_SUBMIT, &r);
    is_int(r.status, 0, "read,submit token on a submit route");
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_ADMIN, &r);
    is_int(r.status, 403, "read,submit token on an admin route: 403");
    snprintf(authz, sizeof authz, "Bearer %s", token_admin);
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_SUBMIT, &r);
    is_int(r.status, 0, "admin grants submit");
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_READ, &r);
    is_int(r.status, 0, "admin grants read");
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_ADMIN, &r);
    is_int(r.status, 0, "admin on an admin route");
    {
        store_token t;
        store_token_get(s, id_admin, &t);
        is_int(t.last_used_at, NOW, "use recorded");
        store_token_fini(&t);
    }

    /* Stream tickets through the decision. */
    {
        char t[SRV_TICKET_MAX], anon[SRV_TICKET_MAX];
        int64_t exp;
        srv_ticket_issue(5, id_read, NOW, t, &exp);
        srv_auth_decide(s, SRV_AUTH_AUTO, NULL, SRV_ACCESS_STREAM, t, 5, NOW + 10, &r);
        ok(r.status == 0 && r.token_id == id_read, "ticket opens its job's stream");
        srv_auth_decide(s, SRV_AUTH_AUTO, NULL, SRV_ACCESS_STREAM, t, 6, NOW + 10, &r);
        ok(r.status == 401 && r.error && strcmp(r.error, "invalid_token") == 0,
           "ticket refused for another job");
        srv_auth_decide(s, SRV_AUTH_AUTO, NULL, SRV_ACCESS_READ, t, 5, NOW + 10, &r);
        is_int(r.status, 401, "ticket ignored on a non-stream route");
        srv_auth_decide(s, SRV_AUTH_AUTO, NULL, SRV_ACCESS_STREAM, t, 5, exp + 1, &r);
        is_int(r.status, 401, "expired ticket refused");
        srv_ticket_issue(5, 0, NOW, anon, &exp);
        srv_auth_decide(s, SRV_AUTH_AUTO, NULL, SRV_ACCESS_STREAM, anon, 5, NOW + 10, &r);
        is_int(r.status, 401, "a ticket issued while auth was off is refused once it is on");
        snprintf(authz, sizeof authz, "Bearer %s", token_read);
        srv_auth_decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_STREAM, NULL, 5, NOW + 10, &r);
        is_int(r.status, 0, "stream route also takes a read token");

        /* Revocation: the token and its tickets stop working. */
        is_int(store_token_revoke(s, id_read), STORE_OK, "revoke the read token");
        srv_auth_decide(s, SRV_AUTH_AUTO, NULL, SRV_ACCESS_STREAM, t, 5, NOW + 10, &r);
        is_int(r.status, 401, "ticket of a revoked token refused");
    }
    snprintf(authz, sizeof authz, "Bearer %s", token_read);
    decide(s, SRV_AUTH_AUTO, authz, SRV_ACCESS_READ, &r);
    ok(r.status == 401 && strstr(r.detail, "revoked"), "revoked token: 401 (%s)", r.detail);
    decide(s, SRV_AUTH_INSECURE_NONE, authz, SRV_ACCESS_ADMIN, &r);
    is_int(r.status, 0, "insecure-none lets everything through");

    /* Start-up rule. */
    {
        srv_config cfg;
        srv_config_defaults(&cfg);
        snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
        is_int(srv_auth_startup_check(&cfg, s, err, sizeof err), 0, "loopback: starts");
        is_int(cfg.auth, SRV_AUTH_AUTO, "loopback keeps auto");
        snprintf(cfg.host, sizeof cfg.host, "0.0.0.0");
        is_int(srv_auth_startup_check(&cfg, s, err, sizeof err), 0,
               "non-loopback with active tokens: starts");
        is_int(cfg.auth, SRV_AUTH_REQUIRED, "... and auto becomes required");

        store_token_revoke(s, id_admin);
        store_token_revoke(s, id_rs);
        cfg.auth = SRV_AUTH_AUTO;
        is_int(srv_auth_startup_check(&cfg, s, err, sizeof err), 1,
               "non-loopback without tokens: refused");
        ok(strstr(err, "0.0.0.0") && strstr(err, "thawd token create") &&
               strstr(err, "--auth insecure-none"),
           "the message says what to do: %s", err);
        cfg.auth = SRV_AUTH_REQUIRED;
        is_int(srv_auth_startup_check(&cfg, s, err, sizeof err), 1,
               "required without tokens on a non-loopback host: refused too");
        cfg.auth = SRV_AUTH_INSECURE_NONE;
        is_int(srv_auth_startup_check(&cfg, s, err, sizeof err), 0, "insecure-none: starts anyway");
    }

    store_close(s);
    unlink(path);
    snprintf(path, sizeof path, "%s/t.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/t.db-shm", dir);
    unlink(path);
    rmdir(dir);
    return done_testing();
}
