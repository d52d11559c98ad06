/*
 * events.c: a job's append-only event log (state changes, stages, epochs, messages).
 *
 * Event ids come from INTEGER PRIMARY KEY AUTOINCREMENT, so they increase over the whole
 * database and are never reused, which makes them safe SSE Last-Event-IDs and cursors.
 */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store_impl.h"

#define MAX_LIST     1000
#define MAX_TYPE_LEN 32

void store_event_fini(store_event *e)
{
    if (!e)
        return;
    free(e->level);
    free(e->type);
    free(e->message);
    free(e->data_json);
    memset(e, 0, sizeof(*e));
}

void store_event_list_free(store_event *ev, size_t n)
{
    if (!ev)
        return;
    for (size_t i = 0; i < n; i++)
        store_event_fini(&ev[i]);
    free(ev);
}

static bool level_valid(const char *level)
{
    return level && (strcmp(level, "info") == 0 || strcmp(level, "warn") == 0 ||
                     strcmp(level, "error") == 0);
}

/* Types are short lowercase identifiers ("state", "lr_find"); the set is the server's. */
static bool type_valid(const char *type)
{
    size_t len;

    if (!type)
        return false;
    len = strlen(type);
    if (len == 0 || len > MAX_TYPE_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!((type[i] >= 'a' && type[i] <= 'z') || type[i] == '_' || type[i] == '.'))
            return false;
    }
    return true;
}

int store_event_add(store *s, int64_t job_id, const char *level, const char *type,
                    const char *message, const char *data_json, int64_t *id)
{
    static const char sql[] = "INSERT INTO events (job_id, created_at, level, type, message,"
                              " data_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id";
    sqlite3_stmt *st;
    int64_t new_id;
    int rc;

    if (!s || job_id <= 0 || !level_valid(level) || !type_valid(type) || !message)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_EVENT_INSERT, sql, &st)) != 0)
        return rc;
    store_bind_i64(st, 1, job_id, &rc);
    store_bind_i64(st, 2, store_now_ms(), &rc);
    store_bind_text(st, 3, level, &rc);
    store_bind_text(st, 4, type, &rc);
    store_bind_text(st, 5, message, &rc);
    store_bind_text(st, 6, data_json, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind event");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
        rc = STORE_ENOTFOUND; /* no such job */
        goto out;
    }
    if (rc != SQLITE_ROW) {
        rc = store_sqlite_fail(s, rc, "insert event");
        goto out;
    }
    new_id = sqlite3_column_int64(st, 0);
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "insert event");
        goto out;
    }
    if (id)
        *id = new_id;
    rc = STORE_OK;
out:
    store_stmt_reset(st);
    return rc;
}

static int read_event(sqlite3_stmt *st, store_event *e)
{
    int rc;

    memset(e, 0, sizeof(*e));
    e->id = sqlite3_column_int64(st, 0);
    e->job_id = sqlite3_column_int64(st, 1);
    e->created_at = sqlite3_column_int64(st, 2);
    if ((rc = store_col_strdup(st, 3, &e->level)) != 0 ||
        (rc = store_col_strdup(st, 4, &e->type)) != 0 ||
        (rc = store_col_strdup(st, 5, &e->message)) != 0 ||
        (rc = store_col_strdup(st, 6, &e->data_json)) != 0)
        store_event_fini(e);
    return rc;
}

int store_event_list(store *s, int64_t job_id, int64_t after_id, size_t limit, store_event **out,
                     size_t *n, bool *has_more)
{
    static const char sql[] = "SELECT id, job_id, created_at, level, type, message, data_json"
                              " FROM events WHERE job_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
    store_event *ev = NULL;
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
    if (!s || !out || !n || !has_more || job_id <= 0 || after_id < 0 || limit < 1 ||
        limit > MAX_LIST)
        return STORE_EINVAL;
    if ((rc = store_stmt(s, STMT_EVENT_LIST, sql, &st)) != 0)
        return rc;
    ev = calloc(limit, sizeof(*ev));
    if (!ev)
        return STORE_ENOMEM;
    store_bind_i64(st, 1, job_id, &rc);
    store_bind_i64(st, 2, after_id, &rc);
    store_bind_i64(st, 3, (int64_t)limit + 1, &rc);
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto fail;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (got == limit) {
            more = true;
            break;
        }
        if ((rc = read_event(st, &ev[got])) != 0)
            goto fail;
        got++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, "list events");
        goto fail;
    }
    store_stmt_reset(st);
    if (got == 0) {
        free(ev);
        ev = NULL;
    }
    *out = ev;
    *n = got;
    *has_more = more;
    return STORE_OK;
fail:
    store_stmt_reset(st);
    store_event_list_free(ev, got);
    return rc;
}
