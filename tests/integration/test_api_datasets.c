/*
 * test_api_datasets.c: the dataset registry through the real daemon: the demo dataset on a
 * fresh start, uploads (CSV, an image folder as a tar, checksums, the size cap, an upload
 * cut off mid-way, a tar escaping its root), imports under --import-root (CIFAR-10, path
 * escapes), show/list/delete (refused while a job uses it), and one short training job on
 * each format (IDX, CIFAR-10, CSV, image folder). Uploads and imports answer 202 with the
 * dataset "processing"; it becomes "ready", or "failed" with the reader's message and no
 * files left; jobs may not name a failed dataset; a dataset left "processing" by a previous
 * process is processed again at the next start.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <sqlite3.h>

#include "harness.h"
#include "tap.h"

static char root[700];

/* A string member, or "" when it is missing or not a string. */
static const char *jstr(const json_t *o, const char *key)
{
    const char *v = th_json_str(o, key);
    return v ? v : "";
}

/* ---- files --------------------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        b->p = realloc(b->p, b->cap);
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

/* An 8x8 gray PNG whose pixels are `v` (+ a gradient). */
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

static void tar_entry(buf *t, const char *name, char type, const void *data, size_t n)
{
    char h[512];
    memset(h, 0, sizeof h);
    snprintf(h, 100, "%s", name);
    snprintf(h + 100, 8, "%07o", 0644);
    snprintf(h + 108, 8, "%07o", 0);
    snprintf(h + 116, 8, "%07o", 0);
    snprintf(h + 124, 12, "%011o", (unsigned)n);
    snprintf(h + 136, 12, "%011o", 0);
    h[156] = type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    put(t, h, 512);
    if (n) {
        put(t, data, n);
        char pad[512] = {0};
        if (n % 512)
            put(t, pad, 512 - n % 512);
    }
}

static void tar_end(buf *t)
{
    char z[1024] = {0};
    put(t, z, sizeof z);
}

static void csv_text(buf *b, int rows)
{
    put(b, "f1,f2,label\n", 12);
    for (int i = 0; i < rows; i++) {
        char line[64];
        int c = i % 2;
        int n = snprintf(line, sizeof line, "%d.%d,%d,%s\n", c * 4 + i % 3, i % 7, -c * 3,
                         c ? "yes" : "no");
        put(b, line, (size_t)n);
    }
}

static void write_file(const char *rel, const void *d, size_t n)
{
    char p[900];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(d, 1, n, f) != n)
        diag("cannot write %s", p);
    if (f)
        fclose(f);
}

static void cifar(const char *rel, int n, int shift)
{
    buf b = {0};
    unsigned char rec[3073];
    for (int i = 0; i < n; i++) {
        rec[0] = (unsigned char)(i % 2);
        for (int k = 1; k < 3073; k++)
            rec[k] = (unsigned char)(rec[0] * 120 + (k + i + shift) % 50);
        put(&b, rec, sizeof rec);
    }
    write_file(rel, b.p, b.n);
    free(b.p);
}

static size_t tmp_entries(const th_daemon *d)
{
    char p[900];
    snprintf(p, sizeof p, "%s/datasets/.tmp", d->data_dir);
    DIR *dir = opendir(p);
    size_t n = 0;
    struct dirent *e;
    while (dir && (e = readdir(dir)))
        n += e->d_name[0] != '.';
    if (dir)
        closedir(dir);
    return n;
}

static long long upload(const th_daemon *d, const char *query, const char *ctype, const buf *b,
                        const char *const *headers, th_resp *r)
{
    char path[300];
    snprintf(path, sizeof path, "/v1/datasets?%s", query);
    th_request_ex(d, "POST", path, headers, ctype, b->p, b->n, r);
    return r->status == 202 ? th_json_int(r->json, "id", -1) : -1;
}

/* Polls GET /v1/datasets/{id} until it is no longer "processing" (at most 60 s). Returns
 * the dataset object (caller decrefs) or NULL. */
static json_t *wait_processed(const th_daemon *d, long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/datasets/%lld", id);
    for (int i = 0; i < 600; i++) {
        th_resp r;
        th_get(d, path, &r);
        json_t *j = r.status == 200 && r.json ? json_incref(r.json) : NULL;
        th_resp_fini(&r);
        if (!j)
            return NULL;
        if (strcmp(jstr(j, "state"), "processing") != 0)
            return j;
        json_decref(j);
        th_sleep_ms(100);
    }
    diag("dataset %lld still processing after 60 s", id);
    return NULL;
}

/* An upload answered 202 + Location with state "processing", then processed: the final
 * object (caller decrefs) or NULL. */
static json_t *upload_wait(const th_daemon *d, const char *query, const char *ctype, const buf *b,
                           const char *const *headers)
{
    th_resp r;
    long long id = upload(d, query, ctype, b, headers, &r);
    bool accepted = id > 0 && strstr(r.location, "/v1/datasets/") &&
                    strcmp(jstr(r.json, "state"), "processing") == 0;
    if (!accepted)
        diag("upload %s answered %ld: %s", query, r.status, r.body ? r.body : "");
    th_resp_fini(&r);
    return accepted ? wait_processed(d, id) : NULL;
}

static bool is_state(const json_t *j, const char *state)
{
    return j && strcmp(jstr(j, "state"), state) == 0;
}

/* Entries of DATA/datasets that are not hidden: one directory per dataset with files. */
static size_t dataset_dirs(const th_daemon *d)
{
    char p[900];
    snprintf(p, sizeof p, "%s/datasets", d->data_dir);
    DIR *dir = opendir(p);
    size_t n = 0;
    struct dirent *e;
    while (dir && (e = readdir(dir)))
        n += e->d_name[0] != '.';
    if (dir)
        closedir(dir);
    return n;
}

/* Runs one SQL statement on the stopped daemon's database; true on success. */
static bool sql(const th_daemon *d, const char *stmt, char *out, size_t osz)
{
    char p[900];
    snprintf(p, sizeof p, "%s/thawd.db", d->data_dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    bool okk = sqlite3_open(p, &db) == SQLITE_OK &&
               sqlite3_prepare_v2(db, stmt, -1, &st, NULL) == SQLITE_OK;
    int rc = okk ? sqlite3_step(st) : SQLITE_ERROR;
    okk = rc == SQLITE_DONE || rc == SQLITE_ROW;
    if (out && osz) {
        out[0] = '\0';
        if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
            snprintf(out, osz, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return okk;
}

/* Does `dir` hold an image decode cache (.cache-*.bin)? */
static bool has_cache(const char *dir)
{
    DIR *dd = opendir(dir);
    struct dirent *e;
    bool found = false;
    while (dd && (e = readdir(dd)))
        found |= strncmp(e->d_name, ".cache-", 7) == 0;
    if (dd)
        closedir(dd);
    return found;
}

static bool train(const th_daemon *d, const char *data_json, const char *what)
{
    char spec[1024];
    snprintf(spec, sizeof spec,
             "{\"batch_size\":8,\"data\":%s,\"stages\":[{\"op\":\"fit\",\"epochs\":1,"
             "\"lr\":0.01}]}",
             data_json);
    th_resp r;
    long long id = th_job_submit(d, spec, &r);
    if (id <= 0)
        diag("%s: submit answered %ld: %s", what, r.status, r.body ? r.body : "");
    th_resp_fini(&r);
    if (id <= 0)
        return false;
    json_t *j = th_job_wait(d, id, "succeeded|failed|cancelled", 120, NULL);
    bool okk = j && strcmp(jstr(j, "state"), "succeeded") == 0;
    if (!okk)
        diag("%s: job ended %s: %s", what, j ? jstr(j, "state") : "?", j ? jstr(j, "error") : "");
    json_decref(j);
    return okk;
}

int main(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "datasets") != 0)
        return 1;
    snprintf(root, sizeof root, "%s/import", d.dir);
    mkdir(root, 0755);
    const char *extra[] = {"--import-root", root, "--max-upload", "300000", NULL};
    ok(th_daemon_start(&d, extra, 60) == 0, "daemon starts");
    th_resp r;

    /* demo dataset */
    bool have_fmnist =
        access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) == 0;
    th_get(&d, "/v1/datasets", &r);
    json_t *list = r.json ? json_object_get(r.json, "data") : NULL;
    json_t *first = list ? json_array_get(list, 0) : NULL;
    if (have_fmnist) {
        ok(first && strcmp(jstr(first, "name"), "fashion-mnist") == 0 &&
               th_json_int(first, "n_train", 0) == 60000 &&
               json_array_size(json_object_get(first, "classes")) == 10,
           "fresh start registered Fashion-MNIST (60000 training images, 10 classes)");
    } else {
        ok(true, "# SKIP dataset-fashion-mnist not installed");
    }
    th_resp_fini(&r);

    /* CSV upload with its checksum */
    buf csv = {0};
    csv_text(&csv, 200);
    char sha[65];
    write_file("up.csv", csv.p, csv.n);
    char p[900];
    snprintf(p, sizeof p, "%s/up.csv", root);
    th_sha256_file(p, sha);
    char hdr[100];
    snprintf(hdr, sizeof hdr, "X-Content-SHA256: %s", sha);
    const char *hs[] = {hdr, NULL};
    long long csv_id = upload(&d, "format=csv&name=tab", "text/csv", &csv, hs, &r);
    ok(csv_id > 0 && strstr(r.location, "/v1/datasets/") &&
           strcmp(jstr(r.json, "state"), "processing") == 0 && !json_object_get(r.json, "classes"),
       "CSV upload -> 202 + Location, state processing, no classes yet (%ld)", r.status);
    th_resp_fini(&r);
    json_t *dj0 = csv_id > 0 ? wait_processed(&d, csv_id) : NULL;
    ok(is_state(dj0, "ready") && json_is_null(json_object_get(dj0, "error")),
       "CSV dataset becomes ready");
    ok(dj0 && strcmp(jstr(dj0, "sha256"), sha) == 0 &&
           th_json_int(dj0, "size", 0) == (long long)csv.n,
       "sha256 and size recorded");
    json_t *cls = dj0 ? json_object_get(dj0, "classes") : NULL;
    ok(json_array_size(cls) == 2 && strcmp(jstr(json_array_get(cls, 0), "name"), "no") == 0 &&
           th_json_int(json_array_get(cls, 1), "train", 0) == 100,
       "classes from the labels with counts");
    json_decref(dj0);

    const char *bad_sha[] = {"X-Content-SHA256: "
                             "00000000000000000000000000000000000000000000000000000000000000ff",
                             NULL};
    upload(&d, "format=csv&name=tab2", "text/csv", &csv, bad_sha, &r);
    ok(th_is_problem(&r, 422, "validation-error") && strstr(r.body, "checksum mismatch"),
       "wrong checksum -> 422");
    th_resp_fini(&r);
    upload(&d, "format=csv&name=tab", "text/csv", &csv, NULL, &r);
    ok(th_is_problem(&r, 409, "conflict"), "same name -> 409");
    th_resp_fini(&r);
    buf big = {0};
    csv_text(&big, 30000);
    upload(&d, "format=csv&name=big", "text/csv", &big, NULL, &r);
    ok(th_is_problem(&r, 413, "payload-too-large"), "over --max-upload -> 413 (%zu bytes)", big.n);
    th_resp_fini(&r);
    buf junk = {0};
    put(&junk, "a,b\n1,2\n", 8);
    size_t dirs0 = dataset_dirs(&d);
    json_t *jk =
        upload_wait(&d, "format=cifar10&name=junk", "application/octet-stream", &junk, NULL);
    ok(is_state(jk, "failed") && strstr(jstr(jk, "error"), "not a whole number") &&
           !json_object_get(jk, "classes"),
       "malformed CIFAR upload -> 202, then failed naming the problem");
    ok(dataset_dirs(&d) == dirs0, "a failed dataset leaves no files");
    long long junk_id = th_json_int(jk, "id", -1);
    json_decref(jk);
    char spec0[128];
    snprintf(spec0, sizeof spec0, "{\"data\":{\"dataset\":\"junk\"}}");
    th_job_submit(&d, spec0, &r);
    ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/data/dataset") &&
           strstr(r.body, "junk") && strstr(r.body, "failed processing"),
       "a job naming a failed dataset -> 422 at /data/dataset naming it");
    th_resp_fini(&r);
    upload(&d, "format=idx&name=one", "application/octet-stream", &junk, NULL, &r);
    ok(th_is_problem(&r, 422, "validation-error") && strstr(r.body, "tar archive"),
       "a single non-tar file for a multi-file format -> 422 at once");
    th_resp_fini(&r);
    upload(&d, "name=x", "application/octet-stream", &junk, NULL, &r);
    ok(r.status == 422 && strstr(r.body, "format"), "missing format -> 422");
    th_resp_fini(&r);

    /* an upload cut off mid-way leaves nothing */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d.port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
        char req[256];
        int n = snprintf(req, sizeof req,
                         "POST /v1/datasets?format=csv&name=cut HTTP/1.1\r\nHost: x\r\n"
                         "Content-Type: text/csv\r\nContent-Length: 200000\r\n\r\n");
        ssize_t w1 = write(s, req, (size_t)n), w2 = write(s, big.p, 50000);
        ok(w1 == n && w2 == 50000, "sent headers and part of the body");
        th_sleep_ms(300);
    }
    if (s >= 0)
        close(s);
    bool clean = false;
    for (int i = 0; i < 50 && !clean; i++) {
        th_sleep_ms(100);
        clean = tmp_entries(&d) == 0;
    }
    ok(clean, "interrupted upload: no partial file left");
    th_get(&d, "/v1/datasets", &r);
    list = r.json ? json_object_get(r.json, "data") : NULL;
    bool found_cut = false;
    for (size_t i = 0; i < json_array_size(list); i++)
        found_cut |= strcmp(jstr(json_array_get(list, i), "name"), "cut") == 0;
    ok(!found_cut && json_array_size(list) == (have_fmnist ? 3u : 2u),
       "interrupted upload: nothing registered");
    th_resp_fini(&r);

    /* image folder as a tar */
    buf tar = {0};
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 12; i++) {
            buf png = {0};
            png_gray(&png, (unsigned char)(c * 150 + i));
            char name[64];
            snprintf(name, sizeof name, "./shapes/%s/%02d.png", c ? "light" : "dark", i);
            tar_entry(&tar, name, '0', png.p, png.n);
            free(png.p);
        }
    tar_end(&tar);
    json_t *ij = upload_wait(&d, "format=images-tar&name=shapes", "application/x-tar", &tar, NULL);
    long long img_id = is_state(ij, "ready") ? th_json_int(ij, "id", -1) : -1;
    json_t *shape = ij ? json_object_get(ij, "shape") : NULL;
    ok(img_id > 0 && json_integer_value(json_array_get(shape, 0)) == 1 &&
           json_integer_value(json_array_get(shape, 1)) == 8,
       "image folder tar -> 202, then ready, 1x8x8");
    json_decref(ij);
    /* a corrupt image: failed with the file named, and no decode cache or files left */
    buf badimg = {0};
    for (int i = 0; i < 3; i++) {
        buf png = {0};
        png_gray(&png, (unsigned char)(i * 40));
        char name[64];
        snprintf(name, sizeof name, "c%d/%02d.png", i % 2, i);
        tar_entry(&badimg, name, '0', png.p, i == 2 ? png.n / 2 : png.n);
        free(png.p);
    }
    tar_end(&badimg);
    dirs0 = dataset_dirs(&d);
    json_t *bj =
        upload_wait(&d, "format=images-tar&name=badimg", "application/x-tar", &badimg, NULL);
    ok(is_state(bj, "failed") && strstr(jstr(bj, "error"), "02.png"),
       "a truncated PNG -> failed naming the file: %s", bj ? jstr(bj, "error") : "?");
    ok(dataset_dirs(&d) == dirs0, "the failed image folder leaves no files or cache");
    long long badimg_id = th_json_int(bj, "id", -1);
    json_decref(bj);
    buf evil = {0};
    tar_entry(&evil, "../../escape.png", '0', "x", 1);
    tar_end(&evil);
    json_t *ej = upload_wait(&d, "format=images-tar&name=evil", "application/x-tar", &evil, NULL);
    ok(is_state(ej, "failed") && strstr(jstr(ej, "error"), "escapes"),
       "tar entry with '..' -> failed");
    json_decref(ej);
    snprintf(p, sizeof p, "%s/escape.png", d.dir);
    ok(access(p, F_OK) != 0, "nothing written outside");
    buf lnk = {0};
    tar_entry(&lnk, "a/b.png", '2', NULL, 0);
    tar_end(&lnk);
    json_t *lj = upload_wait(&d, "format=images-tar&name=lnk", "application/x-tar", &lnk, NULL);
    ok(is_state(lj, "failed") && strstr(jstr(lj, "error"), "link"), "tar symlink -> failed");
    json_decref(lj);

    /* import: CIFAR-10 directory */
    snprintf(p, sizeof p, "%s/cifar", root);
    mkdir(p, 0755);
    cifar("cifar/data_batch_1.bin", 24, 0);
    cifar("cifar/test_batch.bin", 8, 3);
    th_post_json(&d, "/v1/datasets/import",
                 "{\"path\":\"cifar\",\"format\":\"cifar10\",\"name\":\"c10\"}", &r);
    long long c10_id = r.status == 202 ? th_json_int(r.json, "id", -1) : -1;
    ok(c10_id > 0 && strstr(r.location, "/v1/datasets/"), "import CIFAR-10 directory -> 202 (%ld)",
       r.status);
    th_resp_fini(&r);
    json_t *cj = c10_id > 0 ? wait_processed(&d, c10_id) : NULL;
    ok(is_state(cj, "ready") && th_json_int(cj, "n_train", 0) == 24 &&
           th_json_int(cj, "n_test", 0) == 8,
       "imported CIFAR-10 becomes ready (24 + 8)");
    json_decref(cj);
    const char *escapes[] = {"{\"path\":\"../x\",\"format\":\"csv\",\"name\":\"e1\"}",
                             "{\"path\":\"/etc\",\"format\":\"csv\",\"name\":\"e2\"}",
                             "{\"path\":\"cifar/../../x\",\"format\":\"csv\",\"name\":\"e3\"}",
                             "{\"path\":\"out/passwd\",\"format\":\"csv\",\"name\":\"e4\"}",
                             "{\"path\":\"out\",\"format\":\"csv\",\"name\":\"e5\"}"};
    snprintf(p, sizeof p, "%s/out", root);
    if (symlink("/etc", p) != 0)
        diag("symlink failed");
    for (int i = 0; i < 5; i++) {
        th_post_json(&d, "/v1/datasets/import", escapes[i], &r);
        ok(r.status == 422, "path escape %d refused: %s", i, r.body ? r.body : "");
        th_resp_fini(&r);
    }
    th_post_json(&d, "/v1/datasets/import",
                 "{\"path\":\"nope\",\"format\":\"csv\",\"name\":\"e6\"}", &r);
    ok(r.status == 404, "missing path -> 404");
    th_resp_fini(&r);

    /* show */
    char path[128];
    snprintf(path, sizeof path, "/v1/datasets/%lld", c10_id);
    th_get(&d, path, &r);
    ok(r.status == 200 && strcmp(jstr(r.json, "format"), "cifar10") == 0, "GET /v1/datasets/{id}");
    th_resp_fini(&r);
    th_get(&d, "/v1/datasets/9999", &r);
    ok(th_is_problem(&r, 404, "not-found"), "unknown dataset -> 404");
    th_resp_fini(&r);

    /* job options validated against the dataset */
    th_job_submit(&d, "{\"data\":{\"dataset\":\"nope\"}}", &r);
    ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/data/dataset"),
       "unknown dataset in a job -> 422 at /data/dataset");
    th_resp_fini(&r);
    char lspec[900];
    snprintf(lspec, sizeof lspec, "{\"data\":{\"path\":\"%s/cifar\",\"format\":\"cifar10\"}}",
             root);
    th_job_submit(&d, lspec, &r);
    ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/data/path"),
       "a local data path in a job -> 422 at /data/path (thawd run only)");
    th_resp_fini(&r);
    char spec[256];
    snprintf(spec, sizeof spec, "{\"data\":{\"dataset\":%lld,\"classes\":[\"no\",\"maybe\"]}}",
             csv_id);
    th_job_submit(&d, spec, &r);
    ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/data/classes/1"),
       "unknown class name -> 422 at /data/classes/1");
    th_resp_fini(&r);

    /* one short job per format */
    char dj[256];
    if (have_fmnist)
        ok(train(&d,
                 "{\"dataset\":\"fashion-mnist\",\"classes\":[0,\"Trouser\"],"
                 "\"per_class_limit\":40,\"augment\":{\"flip\":true,\"pad_crop\":2}}",
                 "idx"),
           "IDX (Fashion-MNIST) job succeeds");
    snprintf(dj, sizeof dj, "{\"dataset\":%lld,\"normalize\":\"dataset\"}", c10_id);
    ok(train(&d, dj, "cifar10"), "CIFAR-10 job succeeds");
    snprintf(dj, sizeof dj, "{\"dataset\":%lld,\"valid\":{\"pct\":0.25,\"seed\":1}}", csv_id);
    ok(train(&d, dj, "csv"), "CSV job succeeds");
    snprintf(dj, sizeof dj,
             "{\"dataset\":%lld,\"valid\":{\"pct\":0.25,\"seed\":1},\"image_size\":[6,6]}", img_id);
    ok(train(&d, dj, "images"), "image folder job succeeds (resized to 6x6)");

    /* delete: refused while a job uses the dataset */
    snprintf(spec, sizeof spec,
             "{\"data\":{\"dataset\":%lld,\"valid\":{\"pct\":0.25}},\"batch_size\":2,"
             "\"stages\":[{\"op\":\"fit\",\"epochs\":100000}]}",
             csv_id);
    long long job = th_job_submit(&d, spec, &r);
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/datasets/%lld", csv_id);
    th_request(&d, "DELETE", path, NULL, NULL, 0, &r);
    ok(th_is_problem(&r, 409, "conflict"), "delete while a job uses it -> 409");
    th_resp_fini(&r);
    char cpath[64];
    snprintf(cpath, sizeof cpath, "/v1/jobs/%lld/cancel", job);
    th_post_json(&d, cpath, NULL, &r);
    th_resp_fini(&r);
    json_t *j = th_job_wait(&d, job, "cancelled|failed|succeeded", 60, NULL);
    json_decref(j);
    th_request(&d, "DELETE", path, NULL, NULL, 0, &r);
    ok(r.status == 204, "delete after the job ended -> 204");
    th_resp_fini(&r);
    th_get(&d, path, &r);
    ok(r.status == 404, "deleted dataset is gone");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/datasets/%lld", junk_id);
    th_request(&d, "DELETE", path, NULL, NULL, 0, &r);
    ok(r.status == 204, "a failed dataset can be deleted");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/datasets/%lld", badimg_id);
    th_get(&d, path, &r);
    ok(r.status == 200 && is_state(r.json, "failed"), "failed datasets are listed as failed");
    th_resp_fini(&r);

    /* restart recovery: a dataset left processing is processed again at the next start */
    ok(th_daemon_stop(&d, 30) == 0, "daemon stops");
    char q[200], ddir[700] = "";
    snprintf(q, sizeof q, "SELECT dir FROM datasets WHERE id = %lld", img_id);
    sql(&d, q, ddir, sizeof ddir);
    ok(ddir[0] && has_cache(ddir), "the image folder has its decode cache");
    DIR *dd = opendir(ddir);
    struct dirent *e;
    while (dd && (e = readdir(dd))) {
        if (strncmp(e->d_name, ".cache-", 7) == 0) {
            char cp[900];
            snprintf(cp, sizeof cp, "%s/%s", ddir, e->d_name);
            unlink(cp);
        }
    }
    if (dd)
        closedir(dd);
    snprintf(q, sizeof q,
             "UPDATE datasets SET state = 'processing', info_json = '{}' WHERE id = %lld", img_id);
    ok(sql(&d, q, NULL, 0) && !has_cache(ddir), "marked processing as if interrupted");
    ok(th_daemon_start(&d, extra, 60) == 0, "daemon restarts");
    json_t *rj = wait_processed(&d, img_id);
    ok(is_state(rj, "ready") && json_array_size(json_object_get(rj, "classes")) == 2 &&
           has_cache(ddir),
       "re-processed to ready at start, cache rebuilt");
    json_decref(rj);

    free(csv.p);
    free(big.p);
    free(junk.p);
    free(tar.p);
    free(badimg.p);
    free(evil.p);
    free(lnk.p);
    ok(th_daemon_stop(&d, 30) == 0, "daemon stops cleanly");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report");
    return done_testing();
}
