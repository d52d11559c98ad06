/*
 * models.c: the models registry (pretrained weights). Rows only: the server writes each
 * model's file under the data dir (atomically, before the row exists) and removes it after
 * the row is deleted.
 *
 * DESIGN: as datasets.c, each call prepares its statement (these calls are rare). Whether a
 * job uses a model is answered by SQLite's json_extract on the stored spec text (the
 * server's normalised spec names a registered model by id in "model"."weights"; a local
 * path, as `thawd run` keeps, is text and never equals an id), and the check and the delete
 * share one BEGIN IMMEDIATE transaction, so a model cannot vanish under a queued job.
 */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store_impl.h"

#define COLS                                                                            \
    "id, created_at, name, arch, fit, in_shape_json, num_classes, path, size, sha256, " \
    "source_job_id, source_checkpoint"

void store_model_fini(store_model *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->arch);
    free(m->fit);
    free(m->in_shape_json);
    free(m->path);
    free(m->sha256);
    free(m->source_checkpoint);
    memset(m, 0, sizeof(*m));
}

void store_model_list_free(store_model *m, size_t n)
{
    if (!m)
        return;
    for (size_t i = 0; i < n; i++)
        store_model_fini(&m[i]);
    free(m);
}

static bool nonempty(const char *s)
{
    return s && s[0];
}

int store_model_add(store *s, const store_model *m, int64_t *id)
{
    static const char sql[] =
        "INSERT INTO models (name, arch, fit, in_shape_json, num_classes, path, size, sha256,"
        " source_job_id, source_checkpoint, created_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    sqlite3_stmt *st = NULL;
    int rc;
    if (id)
        *id = 0;
    if (!s || !m || !nonempty(m->name) || !nonempty(m->arch) || !nonempty(m->fit) ||
        (strcmp(m->fit, "full") != 0 && strcmp(m->fit, "body") != 0) || !nonempty(m->path) ||
        m->size < 0 || m->num_classes < 0 || !store_sha256_hex_valid(m->sha256) ||
        m->source_job_id < 0 || (m->source_job_id > 0) != nonempty(m->source_checkpoint) ||
        (m->in_shape_json && !m->in_shape_json[0]))
        return STORE_EINVAL;
    if ((rc = store_prepare(s, sql, &st)) != 0)
        return rc;
    store_bind_text(st, 1, m->name, &rc);
    store_bind_text(st, 2, m->arch, &rc);
    store_bind_text(st, 3, m->fit, &rc);
    store_bind_text(st, 4, m->in_shape_json, &rc);
    store_bind_i64(st, 5, m->num_classes, &rc);
    store_bind_text(st, 6, m->path, &rc);
    store_bind_i64(st, 7, m->size, &rc);
    store_bind_text(st, 8, m->sha256, &rc);
    store_bind_i64(st, 9, m->source_job_id, &rc);
    store_bind_text(st, 10, m->source_job_id > 0 ? m->source_checkpoint : NULL, &rc);
    store_bind_i64(st, 11, store_now_ms(), &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind model");
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
        rc = store_sqlite_fail(s, rc, "insert model");
    }
out:
    (void)sqlite3_finalize(st); /* repeats the step's error, handled above */
    return rc;
}

static int read_row(sqlite3_stmt *st, void *row)
{
    store_model *m = row;
    int rc;
    memset(m, 0, sizeof(*m));
    m->id = sqlite3_column_int64(st, 0);
    m->created_at = sqlite3_column_int64(st, 1);
    m->num_classes = sqlite3_column_int64(st, 6);
    m->size = sqlite3_column_int64(st, 8);
    m->source_job_id = sqlite3_column_int64(st, 10);
    if ((rc = store_col_strdup(st, 2, &m->name)) != 0 ||
        (rc = store_col_strdup(st, 3, &m->arch)) != 0 ||
        (rc = store_col_strdup(st, 4, &m->fit)) != 0 ||
        (rc = store_col_strdup(st, 5, &m->in_shape_json)) != 0 ||
        (rc = store_col_strdup(st, 7, &m->path)) != 0 ||
        (rc = store_col_strdup(st, 9, &m->sha256)) != 0 ||
        (rc = store_col_strdup(st, 11, &m->source_checkpoint)) != 0)
        store_model_fini(m);
    return rc;
}

static void free_rows(void *rows, size_t n)
{
    store_model_list_free(rows, n);
}

int store_model_get(store *s, int64_t id, const char *name, store_model *out)
{
    store_query q;
    int rc;
    if (out)
        memset(out, 0, sizeof(*out));
    if (!s || !out || (!name && id <= 0))
        return STORE_EINVAL;
    if ((rc = store_query_id_or_name(s, "SELECT " COLS " FROM models WHERE id = ?1",
                                     "SELECT " COLS " FROM models WHERE name = ?1", id, name,
                                     "get model", &q)) != 0)
        return rc;
    return store_row_get(s, &q, read_row, out);
}

int store_model_list(store *s, int64_t before_id, size_t limit, store_model **out, size_t *n,
                     bool *has_more)
{
    store_query q = {.what = "list models"};
    void *rows;
    int rc;
    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (has_more)
        *has_more = false;
    if (!s || !out || !n || limit < 1 || limit > 1000 || before_id < 0)
        return STORE_EINVAL;
    if ((rc = store_prepare(s,
                            "SELECT " COLS " FROM models WHERE ?1 = 0 OR id < ?1"
                            " ORDER BY id DESC LIMIT ?2",
                            &q.st)) != 0)
        return rc;
    store_bind_i64(q.st, 1, before_id, &q.bind_rc);
    store_bind_i64(q.st, 2, (int64_t)limit + 1, &q.bind_rc); /* one more tells has_more */
    bool more = false;
    rc = store_rows_list(s, &q, sizeof(store_model), limit, read_row, free_rows, &rows, n, &more);
    *out = rows;
    if (has_more)
        *has_more = more;
    return rc;
}

int store_model_delete(store *s, int64_t id, int64_t *n_jobs, char **out_path)
{
    sqlite3_stmt *st = NULL;
    char *path = NULL;
    int rc;
    if (n_jobs)
        *n_jobs = 0;
    if (out_path)
        *out_path = NULL;
    if (!s || id <= 0)
        return STORE_EINVAL;
    if ((rc = store_tx_begin(s)) != 0)
        return rc;
    if ((rc = store_prepare(s, "SELECT path FROM models WHERE id = ?1", &st)) != 0)
        goto fail;
    store_bind_i64(st, 1, id, &rc);
    rc = rc == SQLITE_OK ? sqlite3_step(st) : rc;
    if (rc == SQLITE_DONE) {
        rc = STORE_ENOTFOUND;
        goto fail;
    }
    if (rc != SQLITE_ROW || (rc = store_col_strdup(st, 0, &path)) != 0) {
        rc = rc == STORE_ENOMEM ? rc : store_sqlite_fail(s, rc, "find model");
        goto fail;
    }
    (void)sqlite3_finalize(st); /* the step succeeded */
    st = NULL;
    if ((rc = store_prepare(s,
                            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') AND"
                            " json_valid(spec_json) AND"
                            " json_type(spec_json, '$.model.weights') = 'integer' AND"
                            " json_extract(spec_json, '$.model.weights') = ?1",
                            &st)) != 0)
        goto fail;
    store_bind_i64(st, 1, id, &rc);
    rc = rc == SQLITE_OK ? sqlite3_step(st) : rc;
    if (rc != SQLITE_ROW) {
        rc = store_sqlite_fail(s, rc, "count jobs using a model");
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
    if ((rc = store_prepare(s, "DELETE FROM models WHERE id = ?1", &st)) != 0)
        goto fail;
    store_bind_i64(st, 1, id, &rc);
    rc = rc == SQLITE_OK ? sqlite3_step(st) : rc;
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "delete model");
        goto fail;
    }
    (void)sqlite3_finalize(st); /* the step succeeded */
    st = NULL;
    if ((rc = store_tx_commit(s)) != 0)
        goto fail_nodb;
    if (out_path)
        *out_path = path;
    else
        free(path);
    return STORE_OK;
fail:
    (void)sqlite3_finalize(st); /* the error was handled above */
    store_tx_rollback(s);
fail_nodb:
    free(path);
    return rc;
}
