/*
 * store_impl.h: private to storage/. The connection struct, the per-connection prepared
 * statement cache, bind/column helpers, transactions, the sqlite -> STORE_* mapping and the
 * registry tables' row-fetch helpers (registry.c) shared by the storage/ sources.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "storage.h"

/* One slot per SQL statement text; each is prepared on first use and kept until close. */
enum store_stmt_id {
    STMT_BEGIN_IMMEDIATE,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_JOB_INSERT,
    STMT_JOB_GET,
    STMT_JOB_EXISTS,
    STMT_JOB_LIST_ALL,
    STMT_JOB_LIST_STATE,
    STMT_JOB_COUNT,
    STMT_JOB_CLAIM,
    STMT_JOB_HEARTBEAT,
    STMT_JOB_PROGRESS,
    STMT_JOB_SET_RESUME,
    STMT_JOB_FINISH,
    STMT_JOB_REQUEUE,
    STMT_JOB_RECOVER_REQUEUE,
    STMT_JOB_RECOVER_CANCEL,
    STMT_JOB_CANCEL,
    STMT_EVENT_INSERT,
    STMT_EVENT_LIST,
    STMT_ARTIFACT_UPSERT,
    STMT_ARTIFACT_LIST,
    STMT_TOKEN_INSERT,
    STMT_TOKEN_GET,
    STMT_TOKEN_LIST,
    STMT_TOKEN_REVOKE,
    STMT_TOKEN_TOUCH,
    STMT_TOKEN_COUNT_ACTIVE,
    STMT_COUNT_
};

/* Busy timeout applied to every connection. */
#define STORE_BUSY_TIMEOUT_MS 5000

struct store {
    sqlite3 *db;
    store_log_fn log;
    void *log_user;
    sqlite3_stmt *stmts[STMT_COUNT_]; /* lazily prepared, finalized by store_close() */
};

/* Formats a message and hands it to the connection's log sink (no-op without one). */
__attribute__((format(printf, 3, 4))) void store_logf(const store *s, store_log_level level,
                                                      const char *fmt, ...);

/* Maps an sqlite3 result code to a STORE_* code and logs `what` with sqlite's message.
 * SQLITE_NOMEM -> STORE_ENOMEM, SQLITE_TOOBIG -> STORE_EINVAL, anything else -> STORE_EIO. */
int store_sqlite_fail(const store *s, int rc, const char *what);

/* Returns in *st the cached statement `id` (preparing `sql` on first use). */
int store_stmt(store *s, enum store_stmt_id id, const char *sql, sqlite3_stmt **st);

/* Resets a cached statement and clears its bindings (text is bound SQLITE_STATIC, so no
 * borrowed pointer outlives the call). Safe with NULL. */
void store_stmt_reset(sqlite3_stmt *st);

/* Bind helpers: do nothing once *rc is not SQLITE_OK, so a run of binds is checked once.
 * Text is bound SQLITE_STATIC (callers reset before returning); NULL text binds NULL. */
void store_bind_i64(sqlite3_stmt *st, int idx, int64_t v, int *rc);
void store_bind_double(sqlite3_stmt *st, int idx, double v, int *rc);
void store_bind_text(sqlite3_stmt *st, int idx, const char *v, int *rc);

/* Copies a TEXT column into *out (NULL when the column is NULL). STORE_ENOMEM on failure. */
int store_col_strdup(sqlite3_stmt *st, int col, char **out);

/* Write transactions: BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy
 * timeout), so a transaction never fails half-way with SQLITE_BUSY on lock upgrade. */
int store_tx_begin(store *s);
int store_tx_commit(store *s);
/* Rolls back if a transaction is open; failures are logged, never returned. */
void store_tx_rollback(store *s);

/* Milliseconds since the Unix epoch from CLOCK_REALTIME. */
int64_t store_now_ms(void);

/* ---- the registry tables' shared code (registry.c) ----------------------------------------- */

/* True when hex is 64 lowercase hex digits (a sha256 as the registries store it). */
bool store_sha256_hex_valid(const char *hex);

/* Maps the current row of a statement into *row (one element of the caller's type,
 * overwritten whole): 0, or a STORE_* code after freeing whatever it copied. */
typedef int (*store_row_fn)(sqlite3_stmt *st, void *row);
/* Frees rows[0..n) and the array (the type's _list_free); NULL-safe. */
typedef void (*store_rows_free_fn)(void *rows, size_t n);

/* A bound query for store_row_get / store_rows_list, which release it: a cached statement
 * (store_stmt; reset) or one prepared for the call (store_prepare; finalized). */
typedef struct store_query {
    sqlite3_stmt *st;
    bool cached;
    int bind_rc;      /* the bind helpers' rc: not SQLITE_OK fails the query as "bind" */
    const char *what; /* names the query in the log ("get dataset") */
} store_query;

/* Prepares `sql` for one call (the caller finalizes it, or a query helper does). */
int store_prepare(store *s, const char *sql, sqlite3_stmt **st);
/* Releases q->st as its kind wants: reset (cached) or finalize. */
void store_query_done(const store_query *q);
/* Prepares for one call the SELECT of a row by name (sql_by_name, when name != NULL) or by
 * id (sql_by_id), binding it as ?1, into *q. 0 or the prepare's STORE_* code. */
int store_query_id_or_name(store *s, const char *sql_by_id, const char *sql_by_name, int64_t id,
                           const char *name, const char *what, store_query *q);
/* Steps q once: its row mapped into *row, STORE_ENOTFOUND when there is none, or the
 * bind's, map's or sqlite's code (logged). Releases q. */
int store_row_get(store *s, const store_query *q, store_row_fn map, void *row);
/* Steps q to its end, mapping each row into a new array of elem_size elements: *out (NULL
 * when there are no rows; the caller frees it with free_rows) and *n. A row past `max` sets
 * *has_more and stops when has_more is not NULL, else fails with STORE_EIO (logged: a
 * sanity bound). Releases q; on failure frees what was mapped. */
int store_rows_list(store *s, const store_query *q, size_t elem_size, size_t max, store_row_fn map,
                    store_rows_free_fn free_rows, void **out, size_t *n, bool *has_more);

/* Brings the schema to store_schema_version() (schema.c). */
int store_schema_migrate(store *s);
