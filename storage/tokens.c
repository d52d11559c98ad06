/*
 * tokens.c: API bearer tokens: create, get, list, revoke, last-use stamp, active count.
 *
 * DESIGN: storage keeps only what the server hands it: a name, a scope list and the hex
 * SHA-256 of the token's secret. It never sees a secret and never interprets the scopes, so
 * the boundary of STYLE section 2 holds (hashing lives in server/auth.c). Revocation is a
 * timestamp rather than a delete so `thawd token list` can still show who had access.
 */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store_impl.h"

#define TOKEN_NAME_MAX 64
#define MAX_TOKENS     100000 /* a sanity bound on the list */

void store_token_fini(store_token *t)
{
    if (!t)
        return;
    free(t->name);
    free(t->scopes);
    free(t->secret_sha256);
    memset(t, 0, sizeof(*t));
}

void store_token_list_free(store_token *t, size_t n)
{
    if (!t)
        return;
    for (size_t i = 0; i < n; i++)
        store_token_fini(&t[i]);
    free(t);
}

int store_token_create(store *s, const char *name, const char *scopes, const char *secret_sha256,
                       int64_t *id)
{
    static const char sql[] = "INSERT INTO tokens (name, scopes, secret_sha256, created_at)"
                              " VALUES (?1, ?2, ?3, ?4)";
    sqlite3_stmt *st;
    int rc;

    if (id)
        *id = 0;
    if (!s || !id || !name || !name[0] || strlen(name) > TOKEN_NAME_MAX || !scopes || !scopes[0] ||
        !store_sha256_hex_valid(secret_sha256))
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_TOKEN_INSERT, sql, &st)) != 0)
        return rc;
    store_bind_text(st, 1, name, &rc);
    store_bind_text(st, 2, scopes, &rc);
    store_bind_text(st, 3, secret_sha256, &rc);
    store_bind_i64(st, 4, store_now_ms(), &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind token");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "create token");
        goto out;
    }
    *id = sqlite3_last_insert_rowid(s->db);
    rc = STORE_OK;
out:
    store_stmt_reset(st);
    return rc;
}

#define TOKEN_COLUMNS "id, name, scopes, secret_sha256, created_at, last_used_at, revoked_at"

static int read_token(sqlite3_stmt *st, void *row)
{
    store_token *t = row;
    int rc;

    memset(t, 0, sizeof(*t));
    t->id = sqlite3_column_int64(st, 0);
    t->created_at = sqlite3_column_int64(st, 4);
    t->last_used_at = sqlite3_column_int64(st, 5);
    t->revoked_at = sqlite3_column_int64(st, 6);
    if ((rc = store_col_strdup(st, 1, &t->name)) != 0 ||
        (rc = store_col_strdup(st, 2, &t->scopes)) != 0 ||
        (rc = store_col_strdup(st, 3, &t->secret_sha256)) != 0)
        store_token_fini(t);
    return rc;
}

static void free_tokens(void *rows, size_t n)
{
    store_token_list_free(rows, n);
}

int store_token_get(store *s, int64_t id, store_token *out)
{
    static const char sql[] = "SELECT " TOKEN_COLUMNS " FROM tokens WHERE id = ?1";
    store_query q = {.cached = true, .what = "get token"};
    int rc;

    if (out)
        memset(out, 0, sizeof(*out));
    if (!s || !out || id <= 0)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_TOKEN_GET, sql, &q.st)) != 0)
        return rc;
    store_bind_i64(q.st, 1, id, &q.bind_rc);
    return store_row_get(s, &q, read_token, out);
}

int store_token_list(store *s, store_token **out, size_t *n)
{
    static const char sql[] = "SELECT " TOKEN_COLUMNS " FROM tokens ORDER BY id";
    store_query q = {.cached = true, .what = "list tokens"};
    void *rows;
    int rc;

    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_TOKEN_LIST, sql, &q.st)) != 0)
        return rc;
    rc = store_rows_list(s, &q, sizeof(store_token), MAX_TOKENS, read_token, free_tokens, &rows, n,
                         NULL);
    *out = rows;
    return rc;
}

int store_token_revoke(store *s, int64_t id)
{
    static const char sql[] = "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at = 0";
    store_token t;
    sqlite3_stmt *st;
    int rc;

    if (!s || id <= 0)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_TOKEN_REVOKE, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, id, &rc);
    store_bind_i64(st, 2, store_now_ms(), &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        store_stmt_reset(st);
        return rc;
    }
    rc = sqlite3_step(st);
    store_stmt_reset(st);
    if (rc != SQLITE_DONE)
        return store_sqlite_fail(s, rc, "revoke token");
    if (sqlite3_changes(s->db) == 1)
        return STORE_OK;
    /* Nothing changed: either no such token or it was revoked already. */
    rc = store_token_get(s, id, &t);
    store_token_fini(&t);
    return rc == STORE_OK ? STORE_ECONFLICT : rc;
}

int store_token_touch(store *s, int64_t id, int64_t when_ms)
{
    static const char sql[] = "UPDATE tokens SET last_used_at = max(last_used_at, ?2)"
                              " WHERE id = ?1";
    sqlite3_stmt *st;
    int rc;

    if (!s || id <= 0 || when_ms < 0)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_TOKEN_TOUCH, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, id, &rc);
    store_bind_i64(st, 2, when_ms, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        rc = store_sqlite_fail(s, rc, "touch token");
    else
        rc = sqlite3_changes(s->db) == 1 ? STORE_OK : STORE_ENOTFOUND;
out:
    store_stmt_reset(st);
    return rc;
}

int store_token_count_active(store *s, int64_t *count)
{
    static const char sql[] = "SELECT count(*) FROM tokens WHERE revoked_at = 0";
    sqlite3_stmt *st;
    int rc;

    if (count)
        *count = 0;
    if (!s || !count)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_TOKEN_COUNT_ACTIVE, sql, &st)) != 0)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *count = sqlite3_column_int64(st, 0);
        rc = STORE_OK;
    } else {
        rc = store_sqlite_fail(s, rc, "count tokens");
    }
    store_stmt_reset(st);
    return rc;
}
