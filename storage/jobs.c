/*
 * jobs.c: the job queue: enqueue, read and list, the atomic claim, the lease-guarded writes
 * of the worker running a job (heartbeat, progress, resume path, finish, requeue), start-up
 * recovery and cancel.
 *
 * DESIGN: every write a worker makes is one UPDATE guarded by
 * `WHERE id = ? AND state = 'running' AND lease_owner = ?`, so a worker that lost its job
 * (recovered, finished by someone else) changes nothing and gets STORE_ELOST. The claim is
 * one BEGIN IMMEDIATE transaction around `UPDATE ... WHERE id = (oldest queued) AND
 * state = 'queued' RETURNING ...`: the write lock serialises claimers, and the state guard
 * makes a double hand-out impossible even if the locking were weaker. States are stored as
 * their names so the database stays readable with the sqlite3 shell.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store_impl.h"

/* Longest lease a caller may ask for (30 days); keeps now + lease far from overflow. */
#define MAX_LEASE_MS (30LL * 24 * 3600 * 1000)
#define MAX_LIST     1000

static const char *const state_names[] = {
    [STORE_JOB_QUEUED] = "queued",       [STORE_JOB_RUNNING] = "running",
    [STORE_JOB_SUCCEEDED] = "succeeded", [STORE_JOB_FAILED] = "failed",
    [STORE_JOB_CANCELLED] = "cancelled",
};

#define N_STATES ((int)(sizeof(state_names) / sizeof(state_names[0])))

/* Column order read by read_job(); every SELECT and RETURNING of a whole job uses it. */
#define JOB_COLS                                                                             \
    "id, name, spec_json, state, created_at, started_at, finished_at, updated_at, attempt, " \
    "cancel_requested, error, lease_owner, lease_expires_at, resume_path, stage_index, "     \
    "stage_count, stage_op, epoch, n_epochs, batch, n_batches, step, fraction, metrics_json"

static bool state_valid(store_job_state st)
{
    return (int)st >= 0 && (int)st < N_STATES;
}

const char *store_job_state_name(store_job_state st)
{
    return state_valid(st) ? state_names[st] : NULL;
}

int store_job_state_parse(const char *name, store_job_state *st)
{
    if (!name || !st)
        return STORE_EINVAL;
    for (int i = 0; i < N_STATES; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *st = (store_job_state)i;
            return STORE_OK;
        }
    }
    return STORE_EINVAL;
}

bool store_job_state_is_final(store_job_state st)
{
    return st == STORE_JOB_SUCCEEDED || st == STORE_JOB_FAILED || st == STORE_JOB_CANCELLED;
}

void store_job_fini(store_job *j)
{
    if (!j)
        return;
    free(j->name);
    free(j->spec_json);
    free(j->error);
    free(j->lease_owner);
    free(j->resume_path);
    free(j->metrics_json);
    memset(j, 0, sizeof(*j));
}

void store_job_list_free(store_job *jobs, size_t n)
{
    if (!jobs)
        return;
    for (size_t i = 0; i < n; i++)
        store_job_fini(&jobs[i]);
    free(jobs);
}

static bool owner_valid(const char *owner)
{
    return owner && owner[0];
}

/* Fills *j from the current row of `st` (columns in JOB_COLS order). On failure *j is
 * zeroed and nothing leaks. */
static int read_job(const store *s, sqlite3_stmt *st, store_job *j)
{
    const unsigned char *txt;
    int rc;

    memset(j, 0, sizeof(*j));
    j->id = sqlite3_column_int64(st, 0);
    txt = sqlite3_column_text(st, 3);
    if (!txt || store_job_state_parse((const char *)txt, &j->state) != 0) {
        store_logf(s, STORE_LOG_ERROR, "storage: job %lld has an unreadable state",
                   (long long)j->id);
        return STORE_EIO;
    }
    j->created_at = sqlite3_column_int64(st, 4);
    j->started_at = sqlite3_column_int64(st, 5);
    j->finished_at = sqlite3_column_int64(st, 6);
    j->updated_at = sqlite3_column_int64(st, 7);
    j->attempt = sqlite3_column_int(st, 8);
    j->cancel_requested = sqlite3_column_int(st, 9) != 0;
    j->lease_expires_at = sqlite3_column_int64(st, 12);
    j->progress.stage_index = sqlite3_column_int(st, 14);
    j->progress.stage_count = sqlite3_column_int(st, 15);
    txt = sqlite3_column_text(st, 16);
    if (txt) {
        strncpy(j->progress.stage_op, (const char *)txt, sizeof(j->progress.stage_op) - 1);
        j->progress.stage_op[sizeof(j->progress.stage_op) - 1] = '\0';
    }
    j->progress.epoch = sqlite3_column_int(st, 17);
    j->progress.n_epochs = sqlite3_column_int(st, 18);
    j->progress.batch = sqlite3_column_int(st, 19);
    j->progress.n_batches = sqlite3_column_int(st, 20);
    j->progress.step = sqlite3_column_int64(st, 21);
    j->progress.fraction = sqlite3_column_double(st, 22);

    if ((rc = store_col_strdup(st, 1, &j->name)) != 0 ||
        (rc = store_col_strdup(st, 2, &j->spec_json)) != 0 ||
        (rc = store_col_strdup(st, 10, &j->error)) != 0 ||
        (rc = store_col_strdup(st, 11, &j->lease_owner)) != 0 ||
        (rc = store_col_strdup(st, 13, &j->resume_path)) != 0 ||
        (rc = store_col_strdup(st, 23, &j->metrics_json)) != 0) {
        store_job_fini(j);
        return rc;
    }
    if (!j->spec_json) {
        store_job_fini(j);
        return STORE_ENOMEM;
    }
    j->progress.metrics_json = j->metrics_json;
    return STORE_OK;
}

/* Steps a statement that returns at most one job row. Returns STORE_OK with *found set,
 * or an error. Leaves the statement reset. */
static int step_one_job(store *s, sqlite3_stmt *st, const char *what, store_job *out, bool *found)
{
    store_job tmp;
    int rc = sqlite3_step(st);

    *found = false;
    if (rc == SQLITE_DONE) {
        store_stmt_reset(st);
        return STORE_OK;
    }
    if (rc != SQLITE_ROW) {
        rc = store_sqlite_fail(s, rc, what);
        store_stmt_reset(st);
        return rc;
    }
    if ((rc = read_job(s, st, &tmp)) != 0) {
        store_stmt_reset(st);
        return rc;
    }
    /* Run a RETURNING statement to completion so its change is finished before reset. */
    rc = sqlite3_step(st);
    store_stmt_reset(st);
    if (rc != SQLITE_DONE) {
        store_job_fini(&tmp);
        return store_sqlite_fail(s, rc, what);
    }
    *found = true;
    if (out)
        *out = tmp;
    else
        store_job_fini(&tmp);
    return STORE_OK;
}

/* Looks up a job's state: STORE_OK and *st, STORE_ENOTFOUND, or an error. */
static int job_state(store *s, int64_t id, store_job_state *state)
{
    static const char sql[] = "SELECT state FROM jobs WHERE id = ?1";
    sqlite3_stmt *st;
    const unsigned char *txt;
    int rc = store_stmt(s, STMT_JOB_EXISTS, sql, &st);

    if (rc)
        return rc;
    store_bind_i64(st, 1, id, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        rc = STORE_ENOTFOUND;
    } else if (rc != SQLITE_ROW) {
        rc = store_sqlite_fail(s, rc, "read job state");
    } else {
        txt = sqlite3_column_text(st, 0);
        rc = txt && store_job_state_parse((const char *)txt, state) == 0 ? STORE_OK : STORE_EIO;
    }
out:
    store_stmt_reset(st);
    return rc;
}

/* After a guarded UPDATE matched no row: STORE_ENOTFOUND if the job does not exist,
 * otherwise `otherwise` (STORE_ELOST or STORE_ECONFLICT). */
static int explain_miss(store *s, int64_t id, int otherwise)
{
    store_job_state state;
    int rc = job_state(s, id, &state);

    return rc == STORE_OK ? otherwise : rc;
}

/* Steps a bound UPDATE (no RETURNING) to completion and reports whether it changed a row. */
static int step_update(store *s, sqlite3_stmt *st, const char *what, bool *changed)
{
    int rc = sqlite3_step(st);

    *changed = false;
    store_stmt_reset(st);
    if (rc != SQLITE_DONE)
        return store_sqlite_fail(s, rc, what);
    *changed = sqlite3_changes(s->db) > 0;
    return STORE_OK;
}

int store_job_enqueue(store *s, const char *name, const char *spec_json, int64_t *id)
{
    static const char sql[] = "INSERT INTO jobs (name, spec_json, state, created_at, updated_at)"
                              " VALUES (?1, ?2, 'queued', ?3, ?3) RETURNING id";
    sqlite3_stmt *st;
    int64_t new_id;
    int rc;

    if (!s || !spec_json)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_INSERT, sql, &st)) != 0)
        return rc;
    store_bind_text(st, 1, name, &rc);
    store_bind_text(st, 2, spec_json, &rc);
    store_bind_i64(st, 3, store_now_ms(), &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind job");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        rc = store_sqlite_fail(s, rc, "insert job");
        goto out;
    }
    new_id = sqlite3_column_int64(st, 0);
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "insert job");
        goto out;
    }
    if (id)
        *id = new_id;
    rc = STORE_OK;
out:
    store_stmt_reset(st);
    return rc;
}

int store_job_get(store *s, int64_t id, store_job *out)
{
    static const char sql[] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1";
    sqlite3_stmt *st;
    bool found;
    int rc;

    if (out)
        memset(out, 0, sizeof(*out));
    if (!s || !out || id <= 0)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_GET, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, id, &rc);
    if (rc != SQLITE_OK) {
        store_stmt_reset(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    if ((rc = step_one_job(s, st, "read job", out, &found)) != 0)
        return rc;
    return found ? STORE_OK : STORE_ENOTFOUND;
}

int store_job_version(store *s, int64_t id, uint64_t *version)
{
    static const char sql[] = "SELECT state FROM jobs WHERE id = ?1";
    sqlite3_stmt *st;
    unsigned int dv = 0;
    int rc;

    if (version)
        *version = 0;
    if (!s || !version || id <= 0)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_EXISTS, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, id, &rc);
    if (rc != SQLITE_OK) {
        store_stmt_reset(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    /* While the statement sits on its row the read transaction is open, so the pager's data
     * version is the one that transaction saw (it is refreshed when a transaction starts). */
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        rc = sqlite3_file_control(s->db, "main", SQLITE_FCNTL_DATA_VERSION, &dv);
        rc = rc == SQLITE_OK ? STORE_OK : store_sqlite_fail(s, rc, "read data version");
    } else if (rc == SQLITE_DONE) {
        rc = STORE_ENOTFOUND;
    } else {
        rc = store_sqlite_fail(s, rc, "read job state");
    }
    store_stmt_reset(st);
    if (rc == STORE_OK)
        *version = (uint64_t)dv;
    return rc;
}

int store_job_list(store *s, const store_job_state *state, int64_t before_id, size_t limit,
                   store_job **out, size_t *n, bool *has_more)
{
    static const char sql_all[] =
        "SELECT " JOB_COLS " FROM jobs WHERE id < ?1 ORDER BY id DESC LIMIT ?2";
    static const char sql_state[] = "SELECT " JOB_COLS " FROM jobs WHERE state = ?3 AND id < ?1"
                                    " ORDER BY id DESC LIMIT ?2";
    store_job *jobs = NULL;
    sqlite3_stmt *st;
    size_t got = 0;
    bool more = false;
    int rc;

    if (out)
        *out = NULL;
    if (n)
        *n = 0;
    if (has_more)
        *has_more = false;
    if (!s || !out || !n || !has_more || before_id < 0 || limit < 1 || limit > MAX_LIST)
        return STORE_EINVAL;
    if (state && !state_valid(*state))
        return STORE_EINVAL;
    rc = state ? store_stmt(s, STMT_JOB_LIST_STATE, sql_state, &st)
               : store_stmt(s, STMT_JOB_LIST_ALL, sql_all, &st);
    if (rc)
        return rc;
    jobs = calloc(limit, sizeof(*jobs));
    if (!jobs)
        return STORE_ENOMEM;
    store_bind_i64(st, 1, before_id > 0 ? before_id : INT64_MAX, &rc);
    store_bind_i64(st, 2, (int64_t)limit + 1, &rc);
    if (state)
        store_bind_text(st, 3, state_names[*state], &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto fail;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (got == limit) {
            more = true;
            break;
        }
        if ((rc = read_job(s, st, &jobs[got])) != 0)
            goto fail;
        got++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "list jobs");
        goto fail;
    }
    store_stmt_reset(st);
    if (got == 0) {
        free(jobs);
        jobs = NULL;
    }
    *out = jobs;
    *n = got;
    *has_more = more;
    return STORE_OK;
fail:
    store_stmt_reset(st);
    store_job_list_free(jobs, got);
    return rc;
}

int store_job_count(store *s, store_job_state state, int64_t before_id, int64_t *count)
{
    static const char sql[] = "SELECT count(*) FROM jobs WHERE state = ?1 AND id < ?2";
    sqlite3_stmt *st;
    int rc;

    if (count)
        *count = 0;
    if (!s || !count || !state_valid(state) || before_id < 0)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_COUNT, sql, &st)) != 0)
        return rc;
    store_bind_text(st, 1, state_names[state], &rc);
    store_bind_i64(st, 2, before_id > 0 ? before_id : INT64_MAX, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        rc = store_sqlite_fail(s, rc, "count jobs");
        goto out;
    }
    *count = sqlite3_column_int64(st, 0);
    rc = STORE_OK;
out:
    store_stmt_reset(st);
    return rc;
}

int store_job_claim(store *s, const char *owner, int64_t lease_ms, store_job *out)
{
    static const char sql[] =
        "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_expires_at = ?2 + ?3,"
        " attempt = attempt + 1,"
        " started_at = CASE WHEN started_at = 0 THEN ?2 ELSE started_at END, updated_at = ?2"
        " WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY priority DESC, id"
        " LIMIT 1)"
        " AND state = 'queued' RETURNING " JOB_COLS;
    sqlite3_stmt *st;
    bool found;
    int rc;

    if (out)
        memset(out, 0, sizeof(*out));
    if (!s || !out || !owner_valid(owner) || lease_ms < 1 || lease_ms > MAX_LEASE_MS)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_CLAIM, sql, &st)) != 0)
        return rc;
    if ((rc = store_tx_begin(s)) != 0)
        return rc;
    store_bind_text(st, 1, owner, &rc);
    store_bind_i64(st, 2, store_now_ms(), &rc);
    store_bind_i64(st, 3, lease_ms, &rc);
    if (rc != SQLITE_OK) {
        store_stmt_reset(st);
        rc = store_sqlite_fail(s, rc, "bind");
        goto fail;
    }
    if ((rc = step_one_job(s, st, "claim job", out, &found)) != 0)
        goto fail;
    if ((rc = store_tx_commit(s)) != 0) {
        store_job_fini(out);
        return rc;
    }
    return found ? STORE_OK : STORE_ENOTFOUND;
fail:
    store_tx_rollback(s);
    return rc;
}

int store_job_heartbeat(store *s, int64_t id, const char *owner, int64_t lease_ms,
                        bool *cancel_requested)
{
    static const char sql[] = "UPDATE jobs SET lease_expires_at = ?1 + ?2, updated_at = ?1"
                              " WHERE id = ?3 AND state = 'running' AND lease_owner = ?4"
                              " RETURNING cancel_requested";
    sqlite3_stmt *st;
    bool found = false, cancel = false;
    int rc;

    if (cancel_requested)
        *cancel_requested = false;
    if (!s || id <= 0 || !owner_valid(owner) || lease_ms < 1 || lease_ms > MAX_LEASE_MS)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_HEARTBEAT, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, store_now_ms(), &rc);
    store_bind_i64(st, 2, lease_ms, &rc);
    store_bind_i64(st, 3, id, &rc);
    store_bind_text(st, 4, owner, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        found = true;
        cancel = sqlite3_column_int(st, 0) != 0;
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "heartbeat");
        goto out;
    }
    rc = STORE_OK;
out:
    store_stmt_reset(st);
    if (rc)
        return rc;
    if (!found)
        return explain_miss(s, id, STORE_ELOST);
    if (cancel_requested)
        *cancel_requested = cancel;
    return STORE_OK;
}

static bool progress_valid(const store_progress *p)
{
    if (!p || !memchr(p->stage_op, '\0', sizeof(p->stage_op)))
        return false;
    if (p->stage_index < -1 || p->stage_count < 0 || p->epoch < 0 || p->n_epochs < 0 ||
        p->batch < 0 || p->n_batches < 0 || p->step < 0)
        return false;
    return isfinite(p->fraction) && p->fraction >= 0.0 && p->fraction <= 1.0;
}

int store_job_progress(store *s, int64_t id, const char *owner, const store_progress *p)
{
    static const char sql[] =
        "UPDATE jobs SET stage_index = ?1, stage_count = ?2, stage_op = ?3, epoch = ?4,"
        " n_epochs = ?5, batch = ?6, n_batches = ?7, step = ?8, fraction = ?9,"
        " metrics_json = coalesce(?10, metrics_json), updated_at = ?11"
        " WHERE id = ?12 AND state = 'running' AND lease_owner = ?13";
    sqlite3_stmt *st;
    bool changed = false;
    int rc;

    if (!s || id <= 0 || !owner_valid(owner) || !progress_valid(p))
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_PROGRESS, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, p->stage_index, &rc);
    store_bind_i64(st, 2, p->stage_count, &rc);
    store_bind_text(st, 3, p->stage_op, &rc);
    store_bind_i64(st, 4, p->epoch, &rc);
    store_bind_i64(st, 5, p->n_epochs, &rc);
    store_bind_i64(st, 6, p->batch, &rc);
    store_bind_i64(st, 7, p->n_batches, &rc);
    store_bind_i64(st, 8, p->step, &rc);
    store_bind_double(st, 9, p->fraction, &rc);
    store_bind_text(st, 10, p->metrics_json, &rc);
    store_bind_i64(st, 11, store_now_ms(), &rc);
    store_bind_i64(st, 12, id, &rc);
    store_bind_text(st, 13, owner, &rc);
    if (rc != SQLITE_OK) {
        store_stmt_reset(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    if ((rc = step_update(s, st, "record progress", &changed)) != 0)
        return rc;
    return changed ? STORE_OK : explain_miss(s, id, STORE_ELOST);
}

int store_job_set_resume(store *s, int64_t id, const char *owner, const char *path)
{
    static const char sql[] = "UPDATE jobs SET resume_path = ?1, updated_at = ?2"
                              " WHERE id = ?3 AND state = 'running' AND lease_owner = ?4";
    sqlite3_stmt *st;
    bool changed = false;
    int rc;

    if (!s || id <= 0 || !owner_valid(owner) || !path || !path[0])
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_SET_RESUME, sql, &st)) != 0)
        return rc;
    store_bind_text(st, 1, path, &rc);
    store_bind_i64(st, 2, store_now_ms(), &rc);
    store_bind_i64(st, 3, id, &rc);
    store_bind_text(st, 4, owner, &rc);
    if (rc != SQLITE_OK) {
        store_stmt_reset(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    if ((rc = step_update(s, st, "set resume path", &changed)) != 0)
        return rc;
    return changed ? STORE_OK : explain_miss(s, id, STORE_ELOST);
}

int store_job_finish(store *s, int64_t id, const char *owner, store_job_state state,
                     const char *error)
{
    static const char sql[] =
        "UPDATE jobs SET state = ?1, error = ?2, finished_at = ?3, updated_at = ?3,"
        " lease_owner = NULL, lease_expires_at = 0"
        " WHERE id = ?4 AND state = 'running' AND lease_owner = ?5";
    sqlite3_stmt *st;
    bool changed = false;
    int rc;

    if (!s || id <= 0 || !owner_valid(owner) || !store_job_state_is_final(state))
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_FINISH, sql, &st)) != 0)
        return rc;
    store_bind_text(st, 1, state_names[state], &rc);
    store_bind_text(st, 2, error, &rc);
    store_bind_i64(st, 3, store_now_ms(), &rc);
    store_bind_i64(st, 4, id, &rc);
    store_bind_text(st, 5, owner, &rc);
    if (rc != SQLITE_OK) {
        store_stmt_reset(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    if ((rc = step_update(s, st, "finish job", &changed)) != 0)
        return rc;
    return changed ? STORE_OK : explain_miss(s, id, STORE_ELOST);
}

/* A running job goes back to the queue, unless its cancel was requested: then nobody wants
 * it run again, so it ends as cancelled. Used by requeue (one job) and recover (all). */
#define REQUEUE_SET                                                           \
    "state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,"  \
    " finished_at = CASE WHEN cancel_requested THEN ?1 ELSE finished_at END," \
    " lease_owner = NULL, lease_expires_at = 0, updated_at = ?1"

int store_job_requeue(store *s, int64_t id, const char *owner)
{
    static const char sql[] =
        "UPDATE jobs SET " REQUEUE_SET " WHERE id = ?2 AND state = 'running' AND lease_owner = ?3";
    sqlite3_stmt *st;
    bool changed = false;
    int rc;

    if (!s || id <= 0 || !owner_valid(owner))
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_REQUEUE, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, store_now_ms(), &rc);
    store_bind_i64(st, 2, id, &rc);
    store_bind_text(st, 3, owner, &rc);
    if (rc != SQLITE_OK) {
        store_stmt_reset(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    if ((rc = step_update(s, st, "requeue job", &changed)) != 0)
        return rc;
    return changed ? STORE_OK : explain_miss(s, id, STORE_ELOST);
}

/* Adds one event to each job left running, saying what recovery does with it, so the job's
 * log shows the crash. Runs inside store_job_recover's transaction, before its updates. */
static int recover_events(store *s, int64_t now)
{
    static const char sql[] =
        "INSERT INTO events (job_id, created_at, level, type, message, data_json)"
        " SELECT id, ?1, 'warn', 'state', CASE WHEN cancel_requested"
        "  THEN 'job recovered after the daemon stopped unexpectedly; cancelled as requested'"
        "  ELSE 'job recovered after the daemon stopped unexpectedly; queued to resume' END,"
        " json_object('state', CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,"
        "  'recovered', json('true'), 'attempt', attempt,"
        "  'resume', CASE WHEN resume_path IS NULL THEN json('false') ELSE json('true') END)"
        " FROM jobs WHERE state = 'running'";
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return store_sqlite_fail(s, rc, "prepare recovery events");
    rc = sqlite3_bind_int64(st, 1, now);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? STORE_OK : store_sqlite_fail(s, rc, "add recovery events");
    /* finalize() only repeats the step's error, handled above */
    (void)sqlite3_finalize(st);
    return rc;
}

int store_job_recover(store *s, int64_t *n_requeued)
{
    static const char sql_requeue[] =
        "UPDATE jobs SET " REQUEUE_SET " WHERE state = 'running' AND NOT cancel_requested";
    static const char sql_cancel[] =
        "UPDATE jobs SET " REQUEUE_SET " WHERE state = 'running' AND cancel_requested";
    sqlite3_stmt *st_q, *st_c;
    int64_t now = store_now_ms(), requeued = 0, cancelled = 0;
    bool changed = false;
    int rc;

    if (n_requeued)
        *n_requeued = 0;
    if (!s || !n_requeued)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_RECOVER_REQUEUE, sql_requeue, &st_q)) != 0 ||
        (rc = store_stmt(s, STMT_JOB_RECOVER_CANCEL, sql_cancel, &st_c)) != 0)
        return rc;
    if ((rc = store_tx_begin(s)) != 0)
        return rc;
    if ((rc = recover_events(s, now)) != 0)
        goto fail;
    store_bind_i64(st_q, 1, now, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto fail;
    }
    if ((rc = step_update(s, st_q, "recover jobs", &changed)) != 0)
        goto fail;
    requeued = changed ? sqlite3_changes64(s->db) : 0;
    store_bind_i64(st_c, 1, now, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto fail;
    }
    if ((rc = step_update(s, st_c, "recover cancelled jobs", &changed)) != 0)
        goto fail;
    cancelled = changed ? sqlite3_changes64(s->db) : 0;
    if ((rc = store_tx_commit(s)) != 0)
        return rc;
    if (requeued || cancelled)
        store_logf(s, STORE_LOG_INFO, "storage: recovered jobs requeued=%lld cancelled=%lld",
                   (long long)requeued, (long long)cancelled);
    *n_requeued = requeued;
    return STORE_OK;
fail:
    store_stmt_reset(st_q);
    store_stmt_reset(st_c);
    store_tx_rollback(s);
    return rc;
}

int store_job_cancel(store *s, int64_t id, store_job *out)
{
    static const char sql[] =
        "UPDATE jobs SET"
        " state = CASE state WHEN 'queued' THEN 'cancelled' ELSE state END,"
        " finished_at = CASE state WHEN 'queued' THEN ?1 ELSE finished_at END,"
        " cancel_requested = CASE state WHEN 'running' THEN 1 ELSE cancel_requested END,"
        " updated_at = ?1"
        " WHERE id = ?2 AND state IN ('queued', 'running') RETURNING " JOB_COLS;
    sqlite3_stmt *st;
    bool found;
    int rc;

    if (out)
        memset(out, 0, sizeof(*out));
    if (!s || id <= 0)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_JOB_CANCEL, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, store_now_ms(), &rc);
    store_bind_i64(st, 2, id, &rc);
    if (rc != SQLITE_OK) {
        store_stmt_reset(st);
        return store_sqlite_fail(s, rc, "bind");
    }
    if ((rc = step_one_job(s, st, "cancel job", out, &found)) != 0)
        return rc;
    return found ? STORE_OK : explain_miss(s, id, STORE_ECONFLICT);
}
