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

#define MAX_ARTIFACTS 100000 /* a sanity bound on one job's list */

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

int store_artifact_add(store *s, int64_t job_id, const char *kind, const char *name,
                       const char *path, int64_t size, const char *sha256)
{
    static const char sql[] = "INSERT OR REPLACE INTO artifacts (job_id, created_at, kind, name,"
                              " path, size, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    sqlite3_stmt *st;
    int rc;

    if (!s || job_id <= 0 || !kind || !kind[0] || !name || !name[0] || !path || !path[0] ||
        size < 0 || !store_sha256_hex_valid(sha256))
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

static int read_artifact(sqlite3_stmt *st, void *row)
{
    store_artifact *a = row;
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

static void free_artifacts(void *rows, size_t n)
{
    store_artifact_list_free(rows, n);
}

int store_artifact_list(store *s, int64_t job_id, store_artifact **out, size_t *n)
{
    static const char sql[] = "SELECT id, job_id, created_at, kind, name, path, size, sha256"
                              " FROM artifacts WHERE job_id = ?1 ORDER BY id";
    store_query q = {.cached = true, .what = "list artifacts"};
    void *rows;
    int rc;

    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n || job_id <= 0)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_ARTIFACT_LIST, sql, &q.st)) != 0)
        return rc;
    store_bind_i64(q.st, 1, job_id, &q.bind_rc);
    rc = store_rows_list(s, &q, sizeof(store_artifact), MAX_ARTIFACTS, read_artifact,
                         free_artifacts, &rows, n, NULL);
    *out = rows;
    return rc;
}
