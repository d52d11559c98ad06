/*
 * jobmeta.c: what the v1 API adds around the job queue: submission with a priority and an
 * idempotency key, queue position under priorities, retry and delete of finished jobs, the
 * measured step rate, and the per-batch metrics history.
 *
 * DESIGN: these statements are prepared per call (not in the connection's statement cache)
 * because they run at most a few times per request or per flush; the per-batch metrics are
 * written in batches (one transaction per flush), so a fsync per training step is avoided.
 * Idempotency keys live 24 hours; expired ones are dropped in the submitting transaction.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store_impl.h"

#define IDEMPOTENCY_TTL_MS (24LL * 3600 * 1000)
#define MAX_METRICS_LIST   100000

/* Prepares `sql` on s (uncached). */
static int prepare(store *s, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    if (rc != SQLITE_OK) {
        *st = NULL;
        return store_sqlite_fail(s, rc, "prepare");
    }
    return STORE_OK;
}

/* Finalizes a statement prepared by prepare(); its error, if any, was already reported by
 * the failing step. */
static void finalize(sqlite3_stmt *st)
{
    (void)sqlite3_finalize(st);
}

static bool sha_valid(const char *h)
{
    if (!h || strlen(h) != 64)
        return false;
    for (const char *p = h; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

int store_job_submit(store *s, const store_submit *sub, int64_t *id, bool *replayed)
{
    sqlite3_stmt *st = NULL;
    int64_t now = store_now_ms();
    int rc;

    if (id)
        *id = 0;
    if (replayed)
        *replayed = false;
    if (!s || !sub || !sub->spec_json || !id || !replayed)
        return STORE_EINVAL;
    if (sub->idempotency_key && (!sub->idempotency_key[0] || strlen(sub->idempotency_key) > 255 ||
                                 !sha_valid(sub->request_sha256)))
        return STORE_EINVAL;
    if ((rc = store_tx_begin(s)) != 0)
        return rc;
    if (sub->idempotency_key) {
        if ((rc = prepare(s, "DELETE FROM idempotency_keys WHERE created_at < ?1", &st)) != 0)
            goto fail;
        store_bind_i64(st, 1, now - IDEMPOTENCY_TTL_MS, &rc);
        if (rc != SQLITE_OK || (rc = sqlite3_step(st)) != SQLITE_DONE) {
            rc = store_sqlite_fail(s, rc, "expire idempotency keys");
            goto fail;
        }
        finalize(st);
        st = NULL;
        if ((rc = prepare(s, "SELECT request_sha256, job_id FROM idempotency_keys WHERE key = ?1",
                          &st)) != 0)
            goto fail;
        store_bind_text(st, 1, sub->idempotency_key, &rc);
        if (rc != SQLITE_OK) {
            rc = store_sqlite_fail(s, rc, "bind");
            goto fail;
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const unsigned char *h = sqlite3_column_text(st, 0);
            bool same = h && strcmp((const char *)h, sub->request_sha256) == 0;
            int64_t old = sqlite3_column_int64(st, 1);
            finalize(st);
            st = NULL;
            store_tx_rollback(s);
            if (!same)
                return STORE_ECONFLICT;
            *id = old;
            *replayed = true;
            return STORE_OK;
        }
        if (rc != SQLITE_DONE) {
            rc = store_sqlite_fail(s, rc, "read idempotency key");
            goto fail;
        }
        finalize(st);
        st = NULL;
    }
    if ((rc = prepare(s,
                      "INSERT INTO jobs (name, spec_json, state, created_at, updated_at, priority)"
                      " VALUES (?1, ?2, 'queued', ?3, ?3, ?4) RETURNING id",
                      &st)) != 0)
        goto fail;
    store_bind_text(st, 1, sub->name, &rc);
    store_bind_text(st, 2, sub->spec_json, &rc);
    store_bind_i64(st, 3, now, &rc);
    store_bind_i64(st, 4, sub->priority, &rc);
    if (rc != SQLITE_OK || (rc = sqlite3_step(st)) != SQLITE_ROW) {
        rc = store_sqlite_fail(s, rc, "insert job");
        goto fail;
    }
    *id = sqlite3_column_int64(st, 0);
    if ((rc = sqlite3_step(st)) != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "insert job");
        goto fail;
    }
    finalize(st);
    st = NULL;
    if (sub->idempotency_key) {
        if ((rc = prepare(s,
                          "INSERT INTO idempotency_keys (key, request_sha256, job_id, created_at)"
                          " VALUES (?1, ?2, ?3, ?4)",
                          &st)) != 0)
            goto fail;
        store_bind_text(st, 1, sub->idempotency_key, &rc);
        store_bind_text(st, 2, sub->request_sha256, &rc);
        store_bind_i64(st, 3, *id, &rc);
        store_bind_i64(st, 4, now, &rc);
        if (rc != SQLITE_OK || (rc = sqlite3_step(st)) != SQLITE_DONE) {
            rc = store_sqlite_fail(s, rc, "insert idempotency key");
            goto fail;
        }
        finalize(st);
        st = NULL;
    }
    if ((rc = store_tx_commit(s)) != 0) {
        *id = 0;
        return rc;
    }
    return STORE_OK;
fail:
    finalize(st);
    store_tx_rollback(s);
    *id = 0;
    return rc;
}

/* Runs a one-row, one-integer-column query with up to three integer parameters. */
static int query_i64(store *s, const char *sql, const int64_t *args, int n_args, int64_t *out,
                     bool *found)
{
    sqlite3_stmt *st;
    int rc = prepare(s, sql, &st);
    if (rc)
        return rc;
    for (int i = 0; i < n_args; i++)
        store_bind_i64(st, i + 1, args[i], &rc);
    if (rc != SQLITE_OK) {
        finalize(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = STORE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = STORE_OK;
    } else {
        rc = store_sqlite_fail(s, rc, "query");
    }
    finalize(st);
    return rc;
}

int store_job_extra_get(store *s, int64_t id, store_job_extra *out)
{
    sqlite3_stmt *st;
    int rc;

    if (out)
        memset(out, 0, sizeof(*out));
    if (!s || id <= 0 || !out)
        return STORE_EINVAL;
    if ((rc = prepare(s,
                      "SELECT priority, step_rate, state,"
                      " (SELECT count(*) FROM jobs o WHERE o.state = 'queued' AND"
                      "  (o.priority > j.priority OR (o.priority = j.priority AND o.id < j.id)))"
                      " FROM jobs j WHERE id = ?1",
                      &st)) != 0)
        return rc;
    store_bind_i64(st, 1, id, &rc);
    if (rc != SQLITE_OK) {
        finalize(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *state = sqlite3_column_text(st, 2);
        out->priority = sqlite3_column_int(st, 0);
        out->step_rate = sqlite3_column_double(st, 1);
        out->queue_position =
            state && strcmp((const char *)state, "queued") == 0 ? sqlite3_column_int64(st, 3) : -1;
        rc = STORE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = STORE_ENOTFOUND;
    } else {
        rc = store_sqlite_fail(s, rc, "read job extra");
    }
    finalize(st);
    return rc;
}

int store_job_set_rate(store *s, int64_t id, const char *owner, double steps_per_second)
{
    sqlite3_stmt *st;
    int rc;

    if (!s || id <= 0 || !owner || !owner[0] || !isfinite(steps_per_second) || steps_per_second < 0)
        return STORE_EINVAL;
    if ((rc = prepare(s,
                      "UPDATE jobs SET step_rate = ?1 WHERE id = ?2 AND state = 'running'"
                      " AND lease_owner = ?3",
                      &st)) != 0)
        return rc;
    store_bind_double(st, 1, steps_per_second, &rc);
    store_bind_i64(st, 2, id, &rc);
    store_bind_text(st, 3, owner, &rc);
    if (rc != SQLITE_OK || (rc = sqlite3_step(st)) != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "set step rate");
        finalize(st);
        return rc;
    }
    rc = sqlite3_changes(s->db) > 0 ? STORE_OK : STORE_ELOST;
    finalize(st);
    return rc;
}

/* The state of job `id` into *state; STORE_ENOTFOUND when there is none. */
static int read_state(store *s, int64_t id, store_job_state *state)
{
    sqlite3_stmt *st;
    int rc = prepare(s, "SELECT state FROM jobs WHERE id = ?1", &st);
    if (rc)
        return rc;
    store_bind_i64(st, 1, id, &rc);
    if (rc != SQLITE_OK) {
        finalize(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        rc = t && store_job_state_parse((const char *)t, state) == 0 ? STORE_OK : STORE_EIO;
    } else if (rc == SQLITE_DONE) {
        rc = STORE_ENOTFOUND;
    } else {
        rc = store_sqlite_fail(s, rc, "read job state");
    }
    finalize(st);
    return rc;
}

int store_job_retry(store *s, int64_t id)
{
    sqlite3_stmt *st = NULL;
    store_job_state state;
    int rc;

    if (!s || id <= 0)
        return STORE_EINVAL;
    if ((rc = store_tx_begin(s)) != 0)
        return rc;
    if ((rc = read_state(s, id, &state)) != 0)
        goto fail;
    if (state != STORE_JOB_FAILED && state != STORE_JOB_CANCELLED) {
        rc = STORE_ECONFLICT;
        goto fail;
    }
    if ((rc = prepare(s,
                      "UPDATE jobs SET state = 'queued', error = NULL, finished_at = 0,"
                      " cancel_requested = 0, lease_owner = NULL, lease_expires_at = 0,"
                      " step_rate = 0, updated_at = ?1 WHERE id = ?2",
                      &st)) != 0)
        goto fail;
    store_bind_i64(st, 1, store_now_ms(), &rc);
    store_bind_i64(st, 2, id, &rc);
    if (rc != SQLITE_OK || (rc = sqlite3_step(st)) != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "retry job");
        goto fail;
    }
    finalize(st);
    return store_tx_commit(s);
fail:
    finalize(st);
    store_tx_rollback(s);
    return rc;
}

int store_job_delete(store *s, int64_t id)
{
    sqlite3_stmt *st = NULL;
    store_job_state state;
    int rc;

    if (!s || id <= 0)
        return STORE_EINVAL;
    if ((rc = store_tx_begin(s)) != 0)
        return rc;
    if ((rc = read_state(s, id, &state)) != 0)
        goto fail;
    if (!store_job_state_is_final(state)) {
        rc = STORE_ECONFLICT;
        goto fail;
    }
    /* Children first: this does not rely on the connection's foreign_keys setting. */
    static const char *const sqls[] = {
        "DELETE FROM batch_metrics WHERE job_id = ?1",
        "DELETE FROM idempotency_keys WHERE job_id = ?1",
        "DELETE FROM events WHERE job_id = ?1",
        "DELETE FROM artifacts WHERE job_id = ?1",
        "DELETE FROM jobs WHERE id = ?1",
    };
    for (size_t i = 0; i < sizeof sqls / sizeof sqls[0]; i++) {
        if ((rc = prepare(s, sqls[i], &st)) != 0)
            goto fail;
        store_bind_i64(st, 1, id, &rc);
        if (rc != SQLITE_OK || (rc = sqlite3_step(st)) != SQLITE_DONE) {
            rc = store_sqlite_fail(s, rc, "delete job");
            goto fail;
        }
        finalize(st);
        st = NULL;
    }
    return store_tx_commit(s);
fail:
    finalize(st);
    store_tx_rollback(s);
    return rc;
}

int store_job_count_running_rate(store *s, double *total_rate)
{
    sqlite3_stmt *st;
    int rc;

    if (!s || !total_rate)
        return STORE_EINVAL;
    *total_rate = 0;
    if ((rc = prepare(s, "SELECT coalesce(sum(step_rate), 0) FROM jobs WHERE state = 'running'",
                      &st)) != 0)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *total_rate = sqlite3_column_double(st, 0);
        rc = STORE_OK;
    } else {
        rc = store_sqlite_fail(s, rc, "sum step rate");
    }
    finalize(st);
    return rc;
}

/* ---- per-batch metrics --------------------------------------------------------------------- */

static void bind_real_or_null(sqlite3_stmt *st, int idx, double v, int *rc)
{
    if (*rc != SQLITE_OK)
        return;
    *rc = isfinite(v) ? sqlite3_bind_double(st, idx, v) : sqlite3_bind_null(st, idx);
}

int store_batch_metrics_add(store *s, int64_t job_id, const store_batch_metric *rows, size_t n)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (!s || job_id <= 0 || (!rows && n))
        return STORE_EINVAL;
    if (n == 0)
        return STORE_OK;
    int64_t found_id = 0;
    bool found = false;
    if ((rc = store_tx_begin(s)) != 0)
        return rc;
    if ((rc = query_i64(s, "SELECT id FROM jobs WHERE id = ?1", &job_id, 1, &found_id, &found)) !=
        0)
        goto fail;
    if (!found) {
        rc = STORE_ENOTFOUND;
        goto fail;
    }
    if ((rc = prepare(s,
                      "INSERT OR REPLACE INTO batch_metrics (job_id, step, stage, epoch, batch,"
                      " loss, smooth_loss, lr, mom, created_at)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                      &st)) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const store_batch_metric *m = &rows[i];
        rc = SQLITE_OK;
        store_bind_i64(st, 1, job_id, &rc);
        store_bind_i64(st, 2, m->step, &rc);
        store_bind_i64(st, 3, m->stage, &rc);
        store_bind_i64(st, 4, m->epoch, &rc);
        store_bind_i64(st, 5, m->batch, &rc);
        bind_real_or_null(st, 6, m->loss, &rc);
        bind_real_or_null(st, 7, m->smooth_loss, &rc);
        bind_real_or_null(st, 8, m->lr, &rc);
        bind_real_or_null(st, 9, m->mom, &rc);
        store_bind_i64(st, 10, m->created_at, &rc);
        if (rc != SQLITE_OK || (rc = sqlite3_step(st)) != SQLITE_DONE) {
            rc = store_sqlite_fail(s, rc, "insert batch metric");
            goto fail;
        }
        /* reset() repeats the last step's result, which was SQLITE_DONE */
        (void)sqlite3_reset(st);
    }
    finalize(st);
    return store_tx_commit(s);
fail:
    finalize(st);
    store_tx_rollback(s);
    return rc;
}

static double col_real(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? (double)NAN
                                                       : sqlite3_column_double(st, col);
}

int store_batch_metrics_list(store *s, int64_t job_id, store_batch_metric **out, size_t *n)
{
    sqlite3_stmt *st = NULL;
    store_batch_metric *rows = NULL;
    size_t len = 0, cap = 0;
    int rc;

    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (!s || job_id <= 0 || !out || !n)
        return STORE_EINVAL;
    if ((rc = prepare(s,
                      "SELECT step, stage, epoch, batch, loss, smooth_loss, lr, mom, created_at"
                      " FROM batch_metrics WHERE job_id = ?1 ORDER BY stage, step LIMIT ?2",
                      &st)) != 0)
        return rc;
    store_bind_i64(st, 1, job_id, &rc);
    store_bind_i64(st, 2, MAX_METRICS_LIST, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto fail;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : 256;
            store_batch_metric *r = realloc(rows, nc * sizeof *r);
            if (!r) {
                rc = STORE_ENOMEM;
                goto fail;
            }
            rows = r;
            cap = nc;
        }
        store_batch_metric *m = &rows[len++];
        m->step = sqlite3_column_int64(st, 0);
        m->stage = sqlite3_column_int(st, 1);
        m->epoch = sqlite3_column_int(st, 2);
        m->batch = sqlite3_column_int(st, 3);
        m->loss = col_real(st, 4);
        m->smooth_loss = col_real(st, 5);
        m->lr = col_real(st, 6);
        m->mom = col_real(st, 7);
        m->created_at = sqlite3_column_int64(st, 8);
    }
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "list batch metrics");
        goto fail;
    }
    finalize(st);
    *out = rows;
    *n = len;
    return STORE_OK;
fail:
    finalize(st);
    free(rows);
    return rc;
}
