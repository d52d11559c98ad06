/*
 * test_api_datasets_import.c: imports are copied by the processing thread, not on the HTTP
 * thread. POST /v1/datasets/import only checks the path and answers 202 "processing" with
 * the bytes not yet copied (size 0 for a directory, sha256 all zeros); processing copies
 * them, records the real size and sha256, and reads the dataset. A file import's sha256 is
 * the file's. A link inside an imported directory fails the dataset. An import left
 * processing before its copy finished (marker .import still there, a partial copy beside
 * it) is copied again at the next start.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "harness.h"
#include "tap.h"

#define ZERO_SHA "0000000000000000000000000000000000000000000000000000000000000000"

static char root[700];

static const char *jstr(const json_t *o, const char *key)
{
    const char *v = th_json_str(o, key);
    return v ? v : "";
}

/* A CSV of `rows` rows of two features and a yes/no label. */
static void write_csv(const char *rel, int rows)
{
    char p[900];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    if (!f)
        return;
    fprintf(f, "f1,f2,label\n");
    for (int i = 0; i < rows; i++)
        fprintf(f, "%d,%d,%s\n", i % 2 * 4 + i % 3, i % 5, i % 2 ? "yes" : "no");
    fclose(f);
}

static long file_size(const char *rel)
{
    char p[900];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", root, rel);
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

/* GET /v1/datasets/{id} until it is no longer "processing" (at most 60 s). */
static json_t *wait_processed(const th_daemon *d, long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/datasets/%lld", id);
    for (int i = 0; i < 600; i++) {
        th_resp r;
        th_get(d, path, &r);
        json_t *j = r.status == 200 && r.json ? json_incref(r.json) : NULL;
        th_resp_fini(&r);
        if (!j || strcmp(jstr(j, "state"), "processing") != 0)
            return j;
        json_decref(j);
        th_sleep_ms(100);
    }
    diag("dataset %lld still processing after 60 s", id);
    return NULL;
}

/* POST /v1/datasets/import; the 202 body (caller decrefs) or NULL. */
static json_t *import(const th_daemon *d, const char *path, const char *format, const char *name)
{
    char body[512];
    snprintf(body, sizeof body, "{\"path\":\"%s\",\"format\":\"%s\",\"name\":\"%s\"}", path, format,
             name);
    th_resp r;
    th_post_json(d, "/v1/datasets/import", body, &r);
    json_t *j = r.status == 202 && r.json ? json_incref(r.json) : NULL;
    if (!j)
        diag("import %s answered %ld: %s", path, r.status, r.body ? r.body : "");
    th_resp_fini(&r);
    return j;
}

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

int main(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "datasets-import") != 0)
        return 1;
    snprintf(root, sizeof root, "%s/import", d.dir);
    mkdir(root, 0755);
    const char *extra[] = {"--import-root", root, NULL};
    ok(th_daemon_start(&d, extra, 60) == 0, "daemon starts");

    /* a directory: 202 before any byte is copied */
    char p[900];
    snprintf(p, sizeof p, "%s/tab", root);
    mkdir(p, 0755);
    write_csv("tab/train.csv", 300);
    write_csv("tab/test.csv", 40);
    json_t *j = import(&d, "tab", "csv", "tab");
    long long tab_id = j ? th_json_int(j, "id", -1) : -1;
    ok(j && strcmp(jstr(j, "state"), "processing") == 0, "directory import -> 202 processing");
    ok(j && th_json_int(j, "size", -1) == 0 && strcmp(jstr(j, "sha256"), ZERO_SHA) == 0,
       "the 202 comes before the copy: size 0, sha256 pending (%s)", j ? jstr(j, "sha256") : "");
    json_decref(j);
    j = tab_id > 0 ? wait_processed(&d, tab_id) : NULL;
    char tab_sha[65] = "";
    snprintf(tab_sha, sizeof tab_sha, "%s", j ? jstr(j, "sha256") : "");
    ok(j && strcmp(jstr(j, "state"), "ready") == 0 && th_json_int(j, "n_train", 0) == 300 &&
           th_json_int(j, "n_test", 0) == 40,
       "copied and read in the background: ready, 300 + 40 rows");
    ok(j && th_json_int(j, "size", -1) == file_size("tab/train.csv") + file_size("tab/test.csv"),
       "size recorded after the copy (%lld)", j ? th_json_int(j, "size", -1) : -1);
    ok(strlen(tab_sha) == 64 && strcmp(tab_sha, ZERO_SHA) != 0, "sha256 recorded after the copy");
    json_decref(j);

    /* a file: its sha256 is the file's */
    json_t *f = import(&d, "tab/train.csv", "csv", "one");
    long long one_id = f ? th_json_int(f, "id", -1) : -1;
    ok(f && th_json_int(f, "size", -1) == file_size("tab/train.csv") &&
           strcmp(jstr(f, "sha256"), ZERO_SHA) == 0,
       "file import -> 202 with the file's size, sha256 pending");
    json_decref(f);
    f = one_id > 0 ? wait_processed(&d, one_id) : NULL;
    char want[65] = "";
    snprintf(p, sizeof p, "%s/tab/train.csv", root);
    th_sha256_file(p, want);
    ok(f && strcmp(jstr(f, "state"), "ready") == 0 && strcmp(jstr(f, "sha256"), want) == 0,
       "file import ready with the file's sha256");
    json_decref(f);

    /* a link inside the directory: found by the copy, so the dataset fails */
    snprintf(p, sizeof p, "%s/linked", root);
    mkdir(p, 0755);
    write_csv("linked/train.csv", 20);
    snprintf(p, sizeof p, "%s/linked/test.csv", root);
    if (symlink("/etc/hostname", p) != 0)
        diag("symlink failed");
    json_t *l = import(&d, "linked", "csv", "linked");
    long long l_id = l ? th_json_int(l, "id", -1) : -1;
    json_decref(l);
    l = l_id > 0 ? wait_processed(&d, l_id) : NULL;
    ok(l && strcmp(jstr(l, "state"), "failed") == 0 && strstr(jstr(l, "error"), "link"),
       "a link inside an imported directory -> failed (%s)", l ? jstr(l, "error") : "");
    json_decref(l);

    /* a multi-file format from a plain file is still refused at once */
    th_resp r;
    th_post_json(&d, "/v1/datasets/import",
                 "{\"path\":\"tab/train.csv\",\"format\":\"idx\",\"name\":\"bad\"}", &r);
    ok(r.status == 422, "a plain file for a multi-file format -> 422 (%ld)", r.status);
    th_resp_fini(&r);

    /* restart: an import whose copy did not finish is copied again */
    ok(th_daemon_stop(&d, 30) == 0, "daemon stops");
    char q[256], ddir[700] = "";
    snprintf(q, sizeof q, "SELECT dir FROM datasets WHERE id = %lld", tab_id);
    sql(&d, q, ddir, sizeof ddir);
    snprintf(p, sizeof p, "%s/.import", ddir);
    FILE *m = fopen(p, "w");
    bool marked = m && fputs("tab\n", m) >= 0;
    if (m)
        fclose(m);
    snprintf(p, sizeof p, "%s/test.csv", ddir);
    unlink(p); /* the copy had not got to it */
    snprintf(p, sizeof p, "%s/partial.csv", ddir);
    FILE *pf = fopen(p, "w");
    if (pf) {
        fputs("f1,f2,label\n1,2,", pf); /* a file cut off mid-copy */
        fclose(pf);
    }
    snprintf(q, sizeof q,
             "UPDATE datasets SET state = 'processing', info_json = '{}', size = 0, sha256 = '%s' "
             "WHERE id = %lld",
             ZERO_SHA, tab_id);
    ok(marked && sql(&d, q, NULL, 0), "left processing with its copy unfinished");
    ok(th_daemon_start(&d, extra, 60) == 0, "daemon restarts");
    j = wait_processed(&d, tab_id);
    ok(j && strcmp(jstr(j, "state"), "ready") == 0 && th_json_int(j, "n_test", 0) == 40 &&
           strcmp(jstr(j, "sha256"), tab_sha) == 0,
       "copied again at the start: ready, same sha256");
    json_decref(j);
    snprintf(p, sizeof p, "%s/partial.csv", ddir);
    ok(access(p, F_OK) != 0, "the partial copy was cleared first");
    snprintf(p, sizeof p, "%s/.import", ddir);
    ok(access(p, F_OK) != 0, "the marker is gone once copied");

    ok(th_daemon_stop(&d, 30) == 0, "daemon stops cleanly");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report");
    return done_testing();
}
