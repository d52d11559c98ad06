/*
 * artifacts.c: the files a job wrote (weights, checkpoints), with size and sha256.
 *
 * (job_id, kind, name) is unique. Re-adding replaces the old row with a new one (new id,
 * new created_at), so "oldest first" lists the current files in the order they were last
 * written.
 */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store_impl.h"

#define SHA256_HEX_LEN 64
#define MAX_ARTIFACTS  100000 /* a sanity bound on one job's list */

void store_artifact_fini(store_artifact *a)
{
    if (!a)
        return;
    free(a->kind);
    free(a->name);
    free(a->path);
    free(a->sha256);
    memset(a, 0, sizeof(*a));
}

void store_artifact_list_free(store_artifact *a, size_t n)
{
    if (!a)
        return;
    for (size_t i = 0; i < n; i++)
        store_artifact_fini(&a[i]);
    free(a);
}

static bool sha256_valid(const char *hex)
{
    size_t i;

    if (!hex)
        return false;
    for (i = 0; hex[i]; i++) {
        if (i >= SHA256_HEX_LEN ||
            !((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return false;
    }
    return i == SHA256_HEX_LEN;
}

int store_artifact_add(store *s, int64_t job_id, const char *kind, const char *name,
                       const char *path, int64_t size, const char *sha256)
{
    static const char sql[] = "INSERT OR REPLACE INTO artifacts (job_id, created_at, kind, name,"
                              " path, size, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    sqlite3_stmt *st;
    int rc;

    if (!s || job_id <= 0 || !kind || !kind[0] || !name || !name[0] || !path || !path[0] ||
        size < 0 || !sha256_valid(sha256))
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_ARTIFACT_UPSERT, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, job_id, &rc);
    store_bind_i64(st, 2, store_now_ms(), &rc);
    store_bind_text(st, 3, kind, &rc);
    store_bind_text(st, 4, name, &rc);
    store_bind_text(st, 5, path, &rc);
    store_bind_i64(st, 6, size, &rc);
    store_bind_text(st, 7, sha256, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind artifact");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        rc = STORE_ENOTFOUND; /* no such job */
    else if (rc != SQLITE_DONE)
        rc = store_sqlite_fail(s, rc, "record artifact");
    else
        rc = STORE_OK;
out:
    store_stmt_reset(st);
    return rc;
}

static int read_artifact(sqlite3_stmt *st, store_artifact *a)
{
    int rc;

    memset(a, 0, sizeof(*a));
    a->id = sqlite3_column_int64(st, 0);
    a->job_id = sqlite3_column_int64(st, 1);
    a->created_at = sqlite3_column_int64(st, 2);
    a->size = sqlite3_column_int64(st, 6);
    if ((rc = store_col_strdup(st, 3, &a->kind)) != 0 ||
        (rc = store_col_strdup(st, 4, &a->name)) != 0 ||
        (rc = store_col_strdup(st, 5, &a->path)) != 0 ||
        (rc = store_col_strdup(st, 7, &a->sha256)) != 0)
        store_artifact_fini(a);
    return rc;
}

int store_artifact_list(store *s, int64_t job_id, store_artifact **out, size_t *n)
{
    static const char sql[] = "SELECT id, job_id, created_at, kind, name, path, size, sha256"
                              " FROM artifacts WHERE job_id = ?1 ORDER BY id";
    store_artifact *arr = NULL, *grown;
    sqlite3_stmt *st;
    size_t got = 0, cap = 0;
    int rc;

    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n || job_id <= 0)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_ARTIFACT_LIST, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, job_id, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto fail;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (got == cap) {
            cap = cap ? cap * 2 : 8;
            if (cap > MAX_ARTIFACTS) {
                store_logf(s, STORE_LOG_ERROR, "storage: job %lld has too many artifacts",
                           (long long)job_id);
                rc = STORE_EIO;
                goto fail;
            }
            grown = realloc(arr, cap * sizeof(*arr));
            if (!grown) {
                rc = STORE_ENOMEM;
                goto fail;
            }
            arr = grown;
        }
        if ((rc = read_artifact(st, &arr[got])) != 0)
            goto fail;
        got++;
    }
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "list artifacts");
        goto fail;
    }
    store_stmt_reset(st);
    if (got == 0) {
        free(arr);
        arr = NULL;
    }
    *out = arr;
    *n = got;
    return STORE_OK;
fail:
    store_stmt_reset(st);
    store_artifact_list_free(arr, got);
    return rc;
}
