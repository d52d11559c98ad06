/*
 * test_store_schema.c: opening a store: connection settings, schema creation and
 * user_version, idempotent reopen, refusing a newer schema, durability of a committed
 * enqueue across connections, and bad arguments.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage.h"
#include "store_tmpdir.h"
#include "tap.h"

static int n_logs;

static void count_log(store_log_level level, const char *msg, void *user)
{
    (void)level;
    (void)msg;
    (void)user;
    n_logs++;
}

static void db_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
}

/* Writes PRAGMA user_version straight into the file header (a 4-byte big-endian integer at
 * offset 60 of the SQLite file format), as a newer thawd would have left it. */
static bool stamp_user_version(const char *path, uint32_t v)
{
    unsigned char be[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 8), (unsigned char)v};
    FILE *f = fopen(path, "r+b");
    bool okay;

    if (!f)
        return false;
    okay = fseek(f, 60, SEEK_SET) == 0 && fwrite(be, 1, 4, f) == 4;
    return fclose(f) == 0 && okay;
}

static void test_settings_and_schema(void)
{
    char path[1024];
    store *s = NULL;
    store_info info;

    db_path(path, sizeof(path), "settings.db");
    is_int(store_open(path, count_log, NULL, &s), STORE_OK, "open creates a fresh database");
    ok(s != NULL, "open returns a handle");
    if (!s)
        return;
    is_int(store_get_info(s, &info), STORE_OK, "store_get_info");
    is_str(info.journal_mode, "wal", "journal_mode is wal");
    is_int(info.synchronous, 2, "synchronous is FULL (2)");
    ok(info.foreign_keys, "foreign_keys is on");
    is_int(info.busy_timeout_ms, 5000, "busy_timeout is 5000 ms");
    ok(store_schema_version() >= 1, "schema version is at least 1");
    is_int(info.schema_version, store_schema_version(), "user_version is the build's version");
    ok(info.sqlite_version && strncmp(info.sqlite_version, "3.", 2) == 0, "sqlite version %s",
       info.sqlite_version ? info.sqlite_version : "(null)");
    is_int(store_get_info(NULL, &info), STORE_EINVAL, "get_info(NULL) is EINVAL");
    is_int(store_get_info(s, NULL), STORE_EINVAL, "get_info(s, NULL) is EINVAL");
    store_close(s);
}

static void test_reopen_and_durability(void)
{
    char path[1024];
    store *a = NULL, *b = NULL, *c = NULL;
    store_job j;
    store_info info;
    int64_t id = 0;

    db_path(path, sizeof(path), "durable.db");
    if (store_open(path, NULL, NULL, &a) != STORE_OK) {
        ok(false, "open durable.db");
        return;
    }
    is_int(store_job_enqueue(a, "kept", "{\"x\":1}", &id), STORE_OK, "enqueue on connection A");
    ok(id > 0, "enqueue sets a positive id");

    is_int(store_open(path, NULL, NULL, &b), STORE_OK, "second connection B on the same file");
    is_int(store_job_get(b, id, &j), STORE_OK, "B sees A's committed job while A is open");
    is_str(j.spec_json, "{\"x\":1}", "spec as enqueued");
    store_job_fini(&j);
    store_close(a);
    store_close(b);

    is_int(store_open(path, NULL, NULL, &c), STORE_OK, "reopen after both closed");
    if (!c)
        return;
    is_int(store_get_info(c, &info), STORE_OK, "get_info after reopen");
    is_int(info.schema_version, store_schema_version(), "reopen keeps user_version");
    is_str(info.journal_mode, "wal", "reopen keeps wal");
    is_int(store_job_get(c, id, &j), STORE_OK, "job survives close and reopen");
    is_str(j.name, "kept", "name survives");
    is_int(j.state, STORE_JOB_QUEUED, "state survives");
    store_job_fini(&j);
    store_close(c);
}

static void test_newer_schema_refused(void)
{
    char path[1024], wal[1100];
    store *s = NULL;

    db_path(path, sizeof(path), "newer.db");
    if (store_open(path, NULL, NULL, &s) != STORE_OK) {
        ok(false, "open newer.db");
        return;
    }
    store_close(s);
    s = NULL;
    snprintf(wal, sizeof(wal), "%s-wal", path);
    ok(access(wal, F_OK) != 0, "closing the last connection checkpoints and removes the WAL");
    ok(stamp_user_version(path, (uint32_t)store_schema_version() + 1),
       "stamp user_version one above ours");
    n_logs = 0;
    is_int(store_open(path, count_log, NULL, &s), STORE_EVERSION, "newer schema -> EVERSION");
    ok(s == NULL, "no handle on EVERSION");
    ok(n_logs > 0, "the refusal is logged");
    store_close(s);

    ok(stamp_user_version(path, (uint32_t)store_schema_version()), "stamp our version back");
    is_int(store_open(path, NULL, NULL, &s), STORE_OK, "current version opens again");
    store_close(s);
}

static void test_bad_open(void)
{
    char path[1024];
    store *s = (store *)&s; /* poison: open must reset it */
    FILE *f;

    is_int(store_open(NULL, NULL, NULL, &s), STORE_EINVAL, "NULL path is EINVAL");
    ok(s == NULL, "out is NULL after a failed open");
    is_int(store_open("", NULL, NULL, &s), STORE_EINVAL, "empty path is EINVAL");
    is_int(store_open("x.db", NULL, NULL, NULL), STORE_EINVAL, "NULL out is EINVAL");

    db_path(path, sizeof(path), "no/such/dir/x.db");
    n_logs = 0;
    is_int(store_open(path, count_log, NULL, &s), STORE_EIO, "missing directory is EIO");
    ok(n_logs > 0, "the open failure is logged");

    db_path(path, sizeof(path), "garbage.db");
    f = fopen(path, "wb");
    if (f) {
        for (int i = 0; i < 256; i++)
            fputs("this is not a database. ", f);
        fclose(f);
    }
    is_int(store_open(path, NULL, NULL, &s), STORE_EIO, "a non-database file is EIO");
    ok(s == NULL, "no handle for a non-database file");

    is_int(store_open(":memory:", NULL, NULL, &s), STORE_OK, "in-memory database opens");
    if (s) {
        store_info info;
        is_int(store_get_info(s, &info), STORE_OK, "get_info in memory");
        is_str(info.journal_mode, "memory", "in-memory journal_mode is memory");
        is_int(info.schema_version, store_schema_version(), "in-memory schema migrated");
    }
    store_close(s);
    store_close(NULL);
    ok(true, "store_close(NULL) is a no-op");
}

static void test_strerror(void)
{
    int codes[] = {STORE_OK,        STORE_ENOMEM,    STORE_EINVAL, STORE_EIO,
                   STORE_ENOTFOUND, STORE_ECONFLICT, STORE_ELOST,  STORE_EVERSION};
    int n = (int)(sizeof(codes) / sizeof(codes[0]));
    bool distinct = true;

    for (int i = 0; i < n; i++)
        for (int k = i + 1; k < n; k++)
            if (strcmp(store_strerror(codes[i]), store_strerror(codes[k])) == 0)
                distinct = false;
    ok(distinct, "every STORE_* code has its own message");
    ok(store_strerror(-1000) != NULL, "unknown codes still get a message");
}

int main(void)
{
    make_tmpdir();
    test_settings_and_schema();
    test_reopen_and_durability();
    test_newer_schema_refused();
    test_bad_open();
    test_strerror();
    remove_tmpdir();
    return done_testing();
}
