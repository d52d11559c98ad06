/*
 * storage.c: opening and closing a connection, the connection settings and their check,
 * the per-connection statement cache, error mapping and logging.
 *
 * DESIGN: one `store` is one sqlite3 connection, opened with SQLITE_OPEN_NOMUTEX because
 * the contract is one connection per thread; sharing a handle between threads is a bug
 * (its cached statements and open transactions are per connection state). Every connection
 * gets busy_timeout first (so the WAL switch and migrations wait instead of failing), then
 * journal_mode=WAL, synchronous=FULL and foreign_keys=ON, and each is read back: a setting
 * that did not take (an old library, a read-only directory) fails the open with STORE_EIO
 * instead of silently weakening durability. Statements are prepared lazily, once per
 * connection, with SQLITE_PREPARE_PERSISTENT, and finalized at close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "store_impl.h"

const char *store_strerror(int code)
{
    switch (code) {
    case STORE_OK:
        return "success";
    case STORE_ENOMEM:
        return "out of memory";
    case STORE_EINVAL:
        return "invalid argument";
    case STORE_EIO:
        return "database error";
    case STORE_ENOTFOUND:
        return "not found";
    case STORE_ECONFLICT:
        return "conflicting state";
    case STORE_ELOST:
        return "lease lost";
    case STORE_EVERSION:
        return "database schema is newer than this build";
    default:
        return "unknown storage error";
    }
}

void store_logf(const store *s, store_log_level level, const char *fmt, ...)
{
    char buf[512];
    va_list ap;

    if (!s || !s->log)
        return;
    va_start(ap, fmt);
    /* Truncation is acceptable for a log line; the result is always NUL-terminated. */
    (void)vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    s->log(level, buf, s->log_user);
}

int store_sqlite_fail(const store *s, int rc, const char *what)
{
    const char *msg = s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    int primary = rc & 0xff;

    store_logf(
        s, primary == SQLITE_BUSY || primary == SQLITE_LOCKED ? STORE_LOG_WARN : STORE_LOG_ERROR,
        "storage: %s failed: %s (sqlite rc=%d)", what, msg, rc);
    if (primary == SQLITE_NOMEM)
        return STORE_ENOMEM;
    if (primary == SQLITE_TOOBIG)
        return STORE_EINVAL;
    return STORE_EIO;
}

int store_stmt(store *s, enum store_stmt_id id, const char *sql, sqlite3_stmt **st)
{
    int rc;

    *st = NULL;
    if (!s->stmts[id]) {
        rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->stmts[id], NULL);
        if (rc != SQLITE_OK) {
            s->stmts[id] = NULL;
            return store_sqlite_fail(s, rc, "prepare");
        }
    }
    *st = s->stmts[id];
    return STORE_OK;
}

void store_stmt_reset(sqlite3_stmt *st)
{
    if (!st)
        return;
    /* sqlite3_reset() repeats the error of the last step, which the caller already
     * handled; clear_bindings() only fails on misuse. Neither result adds information. */
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
}

void store_bind_i64(sqlite3_stmt *st, int idx, int64_t v, int *rc)
{
    if (*rc == SQLITE_OK)
        *rc = sqlite3_bind_int64(st, idx, (sqlite3_int64)v);
}

void store_bind_double(sqlite3_stmt *st, int idx, double v, int *rc)
{
    if (*rc == SQLITE_OK)
        *rc = sqlite3_bind_double(st, idx, v);
}

void store_bind_text(sqlite3_stmt *st, int idx, const char *v, int *rc)
{
    if (*rc != SQLITE_OK)
        return;
    *rc = v ? sqlite3_bind_text(st, idx, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, idx);
}

int store_col_strdup(sqlite3_stmt *st, int col, char **out)
{
    const unsigned char *txt;
    int len;

    *out = NULL;
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return STORE_OK;
    txt = sqlite3_column_text(st, col);
    if (!txt)
        return STORE_ENOMEM; /* non-NULL column, so a NULL pointer means the copy failed */
    len = sqlite3_column_bytes(st, col);
    *out = malloc((size_t)len + 1);
    if (!*out)
        return STORE_ENOMEM;
    memcpy(*out, txt, (size_t)len);
    (*out)[len] = '\0';
    return STORE_OK;
}

static int run_simple(store *s, enum store_stmt_id id, const char *sql, const char *what)
{
    sqlite3_stmt *st;
    int rc = store_stmt(s, id, sql, &st);

    if (rc)
        return rc;
    rc = sqlite3_step(st);
    store_stmt_reset(st);
    if (rc != SQLITE_DONE)
        return store_sqlite_fail(s, rc, what);
    return STORE_OK;
}

int store_tx_begin(store *s)
{
    return run_simple(s, STMT_BEGIN_IMMEDIATE, "BEGIN IMMEDIATE", "BEGIN IMMEDIATE");
}

int store_tx_commit(store *s)
{
    int rc = run_simple(s, STMT_COMMIT, "COMMIT", "COMMIT");

    if (rc)
        store_tx_rollback(s);
    return rc;
}

void store_tx_rollback(store *s)
{
    int rc;

    /* SQLite may already have rolled back by itself (e.g. after SQLITE_FULL). */
    if (sqlite3_get_autocommit(s->db))
        return;
    rc = run_simple(s, STMT_ROLLBACK, "ROLLBACK", "ROLLBACK");
    if (rc)
        store_logf(s, STORE_LOG_ERROR, "storage: rollback failed: %s", store_strerror(rc));
}

int64_t store_now_ms(void)
{
    struct timespec ts;

    /* CLOCK_REALTIME always exists; clock_gettime fails only for an invalid clock id. */
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs a constant PRAGMA that returns one row and copies its first column as text. */
static int pragma_text(store *s, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    const unsigned char *txt;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return store_sqlite_fail(s, rc, sql);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        rc = store_sqlite_fail(s, rc, sql);
        goto fail;
    }
    txt = sqlite3_column_text(st, 0);
    if (!txt) {
        rc = STORE_ENOMEM;
        goto fail;
    }
    snprintf(out, cap, "%s", (const char *)txt);
    rc = STORE_OK;
fail:
    /* finalize() only repeats the error of the last step, handled above. */
    (void)sqlite3_finalize(st);
    return rc;
}

static int pragma_int(store *s, const char *sql, int *out)
{
    char buf[32];
    int rc = pragma_text(s, sql, buf, sizeof(buf));

    if (rc)
        return rc;
    *out = atoi(buf);
    return STORE_OK;
}

/* True when the connection's main database is in memory or a private temporary file:
 * SQLite keeps such databases in journal_mode=memory and they cannot be durable anyway. */
static bool is_memory_db(store *s)
{
    const char *fn = sqlite3_db_filename(s->db, "main");

    return !fn || !fn[0];
}

static int apply_settings(store *s)
{
    char mode[16];
    int rc, v;

    rc = sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK)
        return store_sqlite_fail(s, rc, "busy_timeout");
    rc = sqlite3_exec(s->db, "PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store_sqlite_fail(s, rc, "connection pragmas");
    rc = pragma_text(s, "PRAGMA journal_mode=WAL", mode, sizeof(mode));
    if (rc)
        return rc;

    if (strcmp(mode, "wal") != 0 && !(is_memory_db(s) && strcmp(mode, "memory") == 0)) {
        store_logf(s, STORE_LOG_ERROR, "storage: journal_mode is %s, wanted wal", mode);
        return STORE_EIO;
    }
    if (is_memory_db(s))
        store_logf(s, STORE_LOG_WARN, "storage: in-memory database, nothing is durable");
    if ((rc = pragma_int(s, "PRAGMA synchronous", &v)) != 0)
        return rc;
    if (v != 2) {
        store_logf(s, STORE_LOG_ERROR, "storage: synchronous is %d, wanted 2 (FULL)", v);
        return STORE_EIO;
    }
    if ((rc = pragma_int(s, "PRAGMA foreign_keys", &v)) != 0)
        return rc;
    if (v != 1) {
        store_logf(s, STORE_LOG_ERROR, "storage: foreign_keys is off (library built without?)");
        return STORE_EIO;
    }
    if ((rc = pragma_int(s, "PRAGMA busy_timeout", &v)) != 0)
        return rc;
    if (v != STORE_BUSY_TIMEOUT_MS) {
        store_logf(s, STORE_LOG_ERROR, "storage: busy_timeout is %d ms, wanted %d", v,
                   STORE_BUSY_TIMEOUT_MS);
        return STORE_EIO;
    }
    return STORE_OK;
}

int store_open(const char *path, store_log_fn log, void *log_user, store **out)
{
    store *s;
    int rc;

    if (!out)
        return STORE_EINVAL;
    *out = NULL;
    if (!path || !path[0])
        return STORE_EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return STORE_ENOMEM;
    s->log = log;
    s->log_user = log_user;

    if (!sqlite3_threadsafe()) {
        store_logf(s, STORE_LOG_ERROR, "storage: SQLite was built without thread support");
        rc = STORE_EIO;
        goto fail;
    }
    rc = sqlite3_open_v2(path, &s->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                             SQLITE_OPEN_EXRESCODE,
                         NULL);
    if (rc != SQLITE_OK) {
        /* Even on failure sqlite3_open_v2 usually returns a handle carrying the message. */
        store_logf(s, STORE_LOG_ERROR, "storage: cannot open %s: %s", path,
                   s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        rc = (rc & 0xff) == SQLITE_NOMEM ? STORE_ENOMEM : STORE_EIO;
        goto fail;
    }
    if ((rc = apply_settings(s)) != 0)
        goto fail;
    if ((rc = store_schema_migrate(s)) != 0)
        goto fail;
    *out = s;
    return STORE_OK;
fail:
    store_close(s);
    return rc;
}

void store_close(store *s)
{
    int rc;

    if (!s)
        return;
    for (int i = 0; i < STMT_COUNT_; i++) {
        /* finalize() repeats the statement's last error, already handled at the call. */
        (void)sqlite3_finalize(s->stmts[i]);
        s->stmts[i] = NULL;
    }
    if (s->db) {
        rc = sqlite3_close(s->db);
        if (rc != SQLITE_OK)
            store_logf(s, STORE_LOG_ERROR, "storage: close failed: %s", sqlite3_errmsg(s->db));
    }
    free(s);
}

int store_get_info(store *s, store_info *out)
{
    int rc, v;

    if (!s || !out)
        return STORE_EINVAL;
    memset(out, 0, sizeof(*out));
    out->sqlite_version = sqlite3_libversion();
    if ((rc = pragma_text(s, "PRAGMA journal_mode", out->journal_mode,
                          sizeof(out->journal_mode))) != 0)
        return rc;
    if ((rc = pragma_int(s, "PRAGMA synchronous", &out->synchronous)) != 0)
        return rc;
    if ((rc = pragma_int(s, "PRAGMA foreign_keys", &v)) != 0)
        return rc;
    out->foreign_keys = v != 0;
    if ((rc = pragma_int(s, "PRAGMA busy_timeout", &out->busy_timeout_ms)) != 0)
        return rc;
    return pragma_int(s, "PRAGMA user_version", &out->schema_version);
}
