/*
 * registry.c: what the registry tables' calls share (datasets, models, tokens, artifacts):
 * the fetch loop, in which a bound statement is stepped, each row handed to the type's
 * mapping function, a list grown as rows come, and the statement released (reset when
 * cached, finalized when prepared for the call) on every path, so the typed get and list
 * functions only bind and map columns; and the sha256 check of the values they store.
 */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store_impl.h"

bool store_sha256_hex_valid(const char *hex)
{
    size_t i = 0;
    for (; hex && hex[i]; i++)
        if (i >= 64 || !((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return false;
    return i == 64;
}

int store_prepare(store *s, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? 0 : store_sqlite_fail(s, rc, "prepare statement");
}

void store_query_done(const store_query *q)
{
    if (q->cached)
        store_stmt_reset(q->st);
    else
        (void)sqlite3_finalize(q->st); /* repeats a failed step's error, handled already */
}

int store_query_id_or_name(store *s, const char *sql_by_id, const char *sql_by_name, int64_t id,
                           const char *name, const char *what, store_query *q)
{
    memset(q, 0, sizeof(*q));
    q->what = what;
    int rc = store_prepare(s, name ? sql_by_name : sql_by_id, &q->st);
    if (rc)
        return rc;
    if (name)
        store_bind_text(q->st, 1, name, &q->bind_rc);
    else
        store_bind_i64(q->st, 1, id, &q->bind_rc);
    return 0;
}

int store_row_get(store *s, const store_query *q, store_row_fn map, void *row)
{
    int rc;
    if (q->bind_rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, q->bind_rc, "bind");
    } else {
        rc = sqlite3_step(q->st);
        if (rc == SQLITE_ROW)
            rc = map(q->st, row);
        else if (rc == SQLITE_DONE)
            rc = STORE_ENOTFOUND;
        else
            rc = store_sqlite_fail(s, rc, q->what);
    }
    store_query_done(q);
    return rc;
}

int store_rows_list(store *s, const store_query *q, size_t elem_size, size_t max, store_row_fn map,
                    store_rows_free_fn free_rows, void **out, size_t *n, bool *has_more)
{
    char *arr = NULL;
    size_t got = 0, cap = 0;
    int rc = q->bind_rc;
    *out = NULL;
    *n = 0;
    if (has_more)
        *has_more = false;
    if (rc != SQLITE_OK) {
        rc = store_sqlite_fail(s, rc, "bind");
        goto fail;
    }
    while ((rc = sqlite3_step(q->st)) == SQLITE_ROW) {
        if (got == max) {
            if (has_more) {
                *has_more = true;
                rc = SQLITE_DONE;
                break;
            }
            store_logf(s, STORE_LOG_ERROR, "storage: %s: more than %zu rows", q->what, max);
            rc = STORE_EIO;
            goto fail;
        }
        if (got == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            ncap = ncap > max ? max : ncap;
            char *g = realloc(arr, ncap * elem_size);
            if (!g) {
                rc = STORE_ENOMEM;
                goto fail;
            }
            arr = g;
            cap = ncap;
        }
        if ((rc = map(q->st, arr + got * elem_size)) != 0)
            goto fail;
        got++;
    }
    if (rc != SQLITE_DONE) {
        rc = store_sqlite_fail(s, rc, q->what);
        goto fail;
    }
    store_query_done(q);
    *out = arr;
    *n = got;
    return STORE_OK;
fail:
    store_query_done(q);
    free_rows(arr, got);
    return rc;
}
