/*
 * test_api_datasets_stop.c: SIGTERM while a big uploaded dataset is being processed (an
 * image folder of many small PNGs as a tar: unpacking and decoding take a while). The
 * daemon stops the processing instead of finishing it first, exits 0, leaves the dataset
 * "processing", and the next start processes it again to "ready".
 *
 * The upload is large enough that its processing outlasts the few milliseconds between the
 * daemon logging that it started and the signal's arrival by a wide margin; the test
 * checks the outcome (the "stopped" log line, the row's state), never a duration.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include <sqlite3.h>

#include "harness.h"
#include "tap.h"

#define N_IMAGES 8000

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        char *p = realloc(b->p, b->cap);
        if (!p)
            abort(); /* test fixture: out of memory */
        b->p = p;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void png_chunk(buf *b, const char *type, const unsigned char *d, uint32_t n)
{
    unsigned char h[8];
    be32(h, n);
    memcpy(h + 4, type, 4);
    put(b, h, 8);
    if (n)
        put(b, d, n);
    uLong crc = crc32(0, (const Bytef *)type, 4);
    crc = crc32(crc, d, n);
    be32(h, (uint32_t)crc);
    put(b, h, 4);
}

/* An 8x8 gray PNG: pixels v + x. */
static void png_gray(buf *b, unsigned char v)
{
    put(b, "\x89PNG\r\n\x1a\n", 8);
    unsigned char ihdr[13] = {0, 0, 0, 8, 0, 0, 0, 8, 8, 0, 0, 0, 0};
    png_chunk(b, "IHDR", ihdr, 13);
    unsigned char raw[8 * 9], z[256];
    for (int y = 0; y < 8; y++) {
        raw[y * 9] = 0;
        for (int x = 0; x < 8; x++)
            raw[y * 9 + 1 + x] = (unsigned char)(v + x);
    }
    uLongf zn = sizeof z;
    compress(z, &zn, raw, sizeof raw);
    png_chunk(b, "IDAT", z, (uint32_t)zn);
    png_chunk(b, "IEND", NULL, 0);
}

static void tar_entry(buf *t, const char *name, const void *data, size_t n)
{
    char h[512];
    memset(h, 0, sizeof h);
    snprintf(h, 100, "%s", name);
    snprintf(h + 100, 8, "%07o", 0644);
    snprintf(h + 108, 8, "%07o", 0);
    snprintf(h + 116, 8, "%07o", 0);
    snprintf(h + 124, 12, "%011o", (unsigned)n);
    snprintf(h + 136, 12, "%011o", 0);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    put(t, h, 512);
    put(t, data, n);
    char pad[512] = {0};
    if (n % 512)
        put(t, pad, 512 - n % 512);
}

/* One column of the stopped daemon's database, as text ("" when absent). */
static void sql_text(const th_daemon *d, const char *stmt, char *out, size_t osz)
{
    char p[900];
    snprintf(p, sizeof p, "%s/thawd.db", d->data_dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    out[0] = '\0';
    if (sqlite3_open(p, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, stmt, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, osz, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* GET /v1/datasets/{id} until it is no longer "processing" (at most 120 s): the object
 * (caller decrefs) or NULL. */
static json_t *wait_processed(const th_daemon *d, long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/datasets/%lld", id);
    for (int i = 0; i < 1200; i++) {
        th_resp r;
        th_get(d, path, &r);
        json_t *j = r.status == 200 && r.json ? json_incref(r.json) : NULL;
        th_resp_fini(&r);
        if (!j)
            return NULL;
        const char *st = th_json_str(j, "state");
        if (!st || strcmp(st, "processing") != 0)
            return j;
        json_decref(j);
        th_sleep_ms(100);
    }
    diag("dataset %lld still processing after 120 s", id);
    return NULL;
}

int main(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "datasets-stop") != 0)
        return 1;
    const char *extra[] = {"--max-upload", "100000000", NULL};
    ok(th_daemon_start(&d, extra, 60) == 0, "daemon starts");

    buf tar = {0}, png = {0};
    for (int i = 0; i < N_IMAGES; i++) {
        char name[64];
        png.n = 0;
        png_gray(&png, (unsigned char)(i % 2 ? 180 + i % 50 : i % 50));
        snprintf(name, sizeof name, "%s/%05d.png", i % 2 ? "light" : "dark", i);
        tar_entry(&tar, name, png.p, png.n);
    }
    char z[1024] = {0};
    put(&tar, z, sizeof z);

    th_resp r;
    th_request_ex(&d, "POST", "/v1/datasets?name=many&format=images-tar", NULL, "application/x-tar",
                  tar.p, tar.n, &r);
    long long id = r.status == 202 ? th_json_int(r.json, "id", -1) : -1;
    ok(id > 0, "a %zu-byte image folder upload is accepted (%ld)", tar.n, r.status);
    th_resp_fini(&r);

    /* SIGTERM once the processing thread has started on it */
    char started[64], stopped[64];
    snprintf(started, sizeof started, "dataset processing id=%lld ", id);
    snprintf(stopped, sizeof stopped, "dataset processing stopped id=%lld ", id);
    for (int i = 0; i < 3000 && !th_daemon_log_contains(&d, started); i++)
        th_sleep_ms(10);
    ok(th_daemon_log_contains(&d, started), "processing started");
    is_int(th_daemon_stop_sig(&d, SIGTERM, 60), 0, "SIGTERM during processing: exit 0");
    ok(th_daemon_log_contains(&d, stopped), "the processing was stopped, not finished first");
    ok(!th_daemon_log_contains(&d, "dataset ready id="), "nothing became ready");
    char q[128], state[64];
    snprintf(q, sizeof q, "SELECT state FROM datasets WHERE id = %lld", id);
    sql_text(&d, q, state, sizeof state);
    is_str(state, "processing", "the dataset is left processing for the next start");

    ok(th_daemon_start(&d, extra, 60) == 0, "daemon restarts");
    json_t *j = wait_processed(&d, id);
    const char *st = j ? th_json_str(j, "state") : NULL;
    is_str(st ? st : "", "ready", "processed again to ready at the next start");
    is_int((int)th_json_int(j, "n_train", -1), N_IMAGES, "with every image");
    ok(j && json_array_size(json_object_get(j, "classes")) == 2, "in its 2 classes");
    json_decref(j);

    free(tar.p);
    free(png.p);
    ok(th_daemon_stop(&d, 60) == 0, "daemon stops cleanly");
    ok(th_daemon_fini(&d, true), "no sanitizer report");
    return done_testing();
}
