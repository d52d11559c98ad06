/*
 * datasets.c: the dataset registry. Rows only: the server writes the files (atomically,
 * before the row exists) and removes them after the row is deleted.
 *
 * A dataset is added in state "processing" once its files are on disk; the server's
 * processing thread then checks them and calls store_dataset_finish ("ready" with the
 * engine's info, or "failed" with the reader's message). A processing row is never deleted.
 *
 * DESIGN: these calls are rare (uploads, imports, listings), so each prepares its statement
 * per call instead of using the connection's statement cache. Whether a job uses a dataset
 * is answered by SQLite's json_extract on the stored spec text: storage still never parses
 * specs itself, and the check and the delete share one BEGIN IMMEDIATE transaction, so a
 * dataset cannot vanish under a job that was queued before the delete.
 */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store_impl.h"

#define COLS "id, created_at, name, format, dir, size, sha256, info_json, state, error"

void store_dataset_fini(store_dataset *d)
{
    if (!d)
        return;
    free(d->name);
    free(d->format);
    free(d->dir);
    free(d->sha256);
    free(d->info_json);
    free(d->state);
    free(d->error);
    memset(d, 0, sizeof(*d));
}

void store_dataset_list_free(store_dataset *d, size_t n)
{
    if (!d)
        return;
    for (size_t i = 0; i < n; i++)
        store_dataset_fini(&d[i]);
    free(d);
}

static int add_row(store *s, const char *name, const char *format, const char *dir, int64_t size,
                   const char *sha256, const char *info_json, const char *state, int64_t *id)
{
    static const char sql[] = "INSERT INTO datasets (name, format, dir, size, sha256, info_json,"
                              " created_at, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    sqlite3_stmt *st = NULL;
    int rc;
    if (!s || !name || !name[0] || !format || !format[0] || !dir || !dir[0] || size < 0 ||
        !store_sha256_hex_valid(sha256) || !info_json || !info_json[0])
        return STORE_EINVAL;
    if ((rc = store_prepare(s, sql, &st)) != 0)
        return rc;
    store_bind_text(st, 1, name, &rc);
    store_bind_text(st, 2, format, &rc);
    store_bind_text(st, 3, dir, &rc);
    store_bind_i64(st, 4, size, &rc);
    store_bind_text(st, 5, sha256, &rc);
    store_bind_text(st, 6, info_json, &rc);
    store_bind_i64(st, 7, store_now_ms(), &rc);
    store_bind_text(st, 8, state, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind dataset");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        if (id)
            *id = sqlite3_last_insert_rowid(s->db);
        rc = STORE_OK;
    } else if (rc == SQLITE_CONSTRAINT ||
               sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_UNIQUE) {
        rc = STORE_ECONFLICT;
    } else {
        rc = store_sqlite_fail(s, rc, "insert dataset");
    }
out:
    (void)sqlite3_finalize(st); /* repeats the step's error, handled above */
    return rc;
}

int store_dataset_add(store *s, const char *name, const char *format, const char *dir, int64_t size,
                      const char *sha256, const char *info_json, int64_t *id)
{
    return add_row(s, name, format, dir, size, sha256, info_json, "ready", id);
}

int store_dataset_add_processing(store *s, const char *name, const char *format, const char *dir,
                                 int64_t size, const char *sha256, int64_t *id)
{
    return add_row(s, name, format, dir, size, sha256, "{}", "processing", id);
}

/* Steps and finalizes st, an UPDATE of dataset `id` guarded by state = 'processing' (bind_rc:
 * its binds' rc). The guard makes it a no-op on a row that is not processing: then tell "not
 * processing" (STORE_ECONFLICT) from "no such row" (STORE_ENOTFOUND) by looking again. */
static int update_processing(store *s, sqlite3_stmt *st, int bind_rc, int64_t id, const char *what)
{
    int rc = bind_rc == SQLITE_OK ? sqlite3_step(st) : bind_rc;
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, what);
        (void)sqlite3_finalize(st); /* repeats the step's error, handled above */
        return rc;
    }
    int changed = sqlite3_changes(s->db);
    (void)sqlite3_finalize(st); /* the step succeeded */
    if (changed > 0)
        return STORE_OK;
    store_dataset d;
    rc = store_dataset_get(s, id, NULL, &d);
    store_dataset_fini(&d);
    return rc == STORE_OK ? STORE_ECONFLICT : rc;
}

int store_dataset_finish(store *s, int64_t id, const char *info_json, const char *error)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (!s || id <= 0 || (info_json && !info_json[0]) || (!info_json && (!error || !error[0])))
        return STORE_EINVAL;
    if ((rc = store_prepare(s,
                            info_json
                                ? "UPDATE datasets SET state = 'ready', info_json = ?2, error ="
                                  " NULL WHERE id = ?1 AND state = 'processing'"
                                : "UPDATE datasets SET state = 'failed', error = ?2"
                                  " WHERE id = ?1 AND state = 'processing'",
                            &st)) != 0)
        return rc;
    store_bind_i64(st, 1, id, &rc);
    store_bind_text(st, 2, info_json ? info_json : error, &rc);
    return update_processing(s, st, rc, id, "finish dataset");
}

int store_dataset_set_content(store *s, int64_t id, int64_t size, const char *sha256)
{
    sqlite3_stmt *st = NULL;
    int rc;
    if (!s || id <= 0 || size < 0 || !store_sha256_hex_valid(sha256))
        return STORE_EINVAL;
    if ((rc = store_prepare(s,
                            "UPDATE datasets SET size = ?2, sha256 = ?3"
                            " WHERE id = ?1 AND state = 'processing'",
                            &st)) != 0)
        return rc;
    store_bind_i64(st, 1, id, &rc);
    store_bind_i64(st, 2, size, &rc);
    store_bind_text(st, 3, sha256, &rc);
    return update_processing(s, st, rc, id, "set dataset content");
}

static int read_id(sqlite3_stmt *st, void *row)
{
    *(int64_t *)row = sqlite3_column_int64(st, 0);
    return 0;
}

static void free_ids(void *ids, size_t n)
{
    (void)n; /* plain values */
    free(ids);
}

int store_dataset_list_processing(store *s, int64_t **ids, size_t *n)
{
    store_query q = {.what = "list processing datasets"};
    void *rows;
    int rc;
    if (ids)
        *ids = NULL;
    if (n)
        *n = 0;
    if (!s || !ids || !n)
        return STORE_EINVAL;
    if ((rc = store_prepare(s,
                            "SELECT id FROM datasets WHERE state = 'processing' ORDER BY id"
                            " LIMIT 10000",
                            &q.st)) != 0)
        return rc;
    rc = store_rows_list(s, &q, sizeof(int64_t), 10000, read_id, free_ids, &rows, n, NULL);
    *ids = rows;
    return rc;
}

static int read_row(sqlite3_stmt *st, void *row)
{
    store_dataset *d = row;
    int rc;
    memset(d, 0, sizeof(*d));
    d->id = sqlite3_column_int64(st, 0);
    d->created_at = sqlite3_column_int64(st, 1);
    d->size = sqlite3_column_int64(st, 5);
    if ((rc = store_col_strdup(st, 2, &d->name)) != 0 ||
        (rc = store_col_strdup(st, 3, &d->format)) != 0 ||
        (rc = store_col_strdup(st, 4, &d->dir)) != 0 ||
        (rc = store_col_strdup(st, 6, &d->sha256)) != 0 ||
        (rc = store_col_strdup(st, 7, &d->info_json)) != 0 ||
        (rc = store_col_strdup(st, 8, &d->state)) != 0 ||
        (rc = store_col_strdup(st, 9, &d->error)) != 0)
        store_dataset_fini(d);
    return rc;
}

static void free_rows(void *rows, size_t n)
{
    store_dataset_list_free(rows, n);
}

int store_dataset_get(store *s, int64_t id, const char *name, store_dataset *out)
{
    store_query q;
    int rc;
    if (out)
        memset(out, 0, sizeof(*out));
    if (!s || !out || (!name && id <= 0))
        return STORE_EINVAL;
    if ((rc = store_query_id_or_name(s, "SELECT " COLS " FROM datasets WHERE id = ?1",
                                     "SELECT " COLS " FROM datasets WHERE name = ?1", id, name,
                                     "get dataset", &q)) != 0)
        return rc;
    return store_row_get(s, &q, read_row, out);
}

int store_dataset_list(store *s, store_dataset **out, size_t *n)
{
    store_query q = {.what = "list datasets"};
    void *rows;
    int rc;
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || !out || !n)
        return STORE_EINVAL;
    if ((rc = store_prepare(s, "SELECT " COLS " FROM datasets ORDER BY id", &q.st)) != 0)
        return rc;
    rc = store_rows_list(s, &q, sizeof(store_dataset), SIZE_MAX / sizeof(store_dataset), read_row,
                         free_rows, &rows, n, NULL);
    *out = rows;
    return rc;
}

int store_dataset_delete(store *s, int64_t id, int64_t *n_jobs, char **out_dir)
{
    sqlite3_stmt *st = NULL;
    char *dir = NULL;
    int rc;
    if (n_jobs)
        *n_jobs = 0;
    if (out_dir)
        *out_dir = NULL;
    if (!s || id <= 0)
        return STORE_EINVAL;
    if ((rc = store_tx_begin(s)) != 0)
        return rc;
    if ((rc = store_prepare(s, "SELECT dir, state FROM datasets WHERE id = ?1", &st)) != 0)
        goto fail;
    store_bind_i64(st, 1, id, &rc);
    rc = rc == SQLITE_OK ? sqlite3_step(st) : rc;
    if (rc == SQLITE_DONE) {
        rc = STORE_ENOTFOUND;
        goto fail;
    }
    if (rc != SQLITE_ROW || (rc = store_col_strdup(st, 0, &dir)) != 0) {
        rc = rc == STORE_ENOMEM ? rc : store_sqlite_fail(s, rc, "find dataset");
        goto fail;
    }
    const unsigned char *state = sqlite3_column_text(st, 1);
    if (state && strcmp((const char *)state, "processing") == 0) {
        rc = STORE_ECONFLICT; /* the processing thread owns its files until it finishes */
        goto fail;
    }
    (void)sqlite3_finalize(st); /* the step succeeded */
    st = NULL;
    if ((rc = store_prepare(s,
                            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') AND"
                            " json_valid(spec_json) AND"
                            " json_extract(spec_json, '$.data.dataset') = ?1",
                            &st)) != 0)
        goto fail;
    store_bind_i64(st, 1, id, &rc);
    rc = rc == SQLITE_OK ? sqlite3_step(st) : rc;
    if (rc != SQLITE_ROW) {
        rc = store_sqlite_fail(s, rc, "count jobs using a dataset");
        goto fail;
    }
    int64_t users = sqlite3_column_int64(st, 0);
    (void)sqlite3_finalize(st); /* the step succeeded */
    st = NULL;
    if (users > 0) {
        if (n_jobs)
            *n_jobs = users;
        rc = STORE_ECONFLICT;
        goto fail;
    }
    if ((rc = store_prepare(s, "DELETE FROM datasets WHERE id = ?1", &st)) != 0)
        goto fail;
    store_bind_i64(st, 1, id, &rc);
    rc = rc == SQLITE_OK ? sqlite3_step(st) : rc;
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "delete dataset");
        goto fail;
    }
    (void)sqlite3_finalize(st); /* the step succeeded */
    st = NULL;
    if ((rc = store_tx_commit(s)) != 0)
        goto fail_nodb;
    if (out_dir)
        *out_dir = dir;
    else
        free(dir);
    return STORE_OK;
fail:
    (void)sqlite3_finalize(st); /* the error was handled above */
    store_tx_rollback(s);
fail_nodb:
    free(dir);
    return rc;
}
