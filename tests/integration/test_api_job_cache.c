/*
 * test_api_job_cache: GET /v1/jobs/{id} is served from a per-HTTP-thread cache of the
 * serialised document (server/jobs_view.c), revalidated against the database's version.
 * These checks fail if the cache ever serves a stale document. The daemon runs with one HTTP
 * thread, so every request goes through the same cache (and the same storage connection as
 * the cancels, the case of a connection's own writes):
 * - a job's progress becomes visible while it trains, and its ETag changes with it;
 * - an ETag from before a change gets 200 with the new document, never 304;
 * - two answers with the same ETag have the same body (the tag belongs to the body served);
 * - a cancelled queued job reads cancelled at once, and the job behind it moves up;
 * - a running job reads cancel_requested at once after the cancel, then cancelled;
 * - a change made by another process (sqlite3 on the database file) is visible at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "harness.h"
#include "tap.h"

/* Long enough (many epochs of many batches) to still be running when we look at it. */
static const char SPEC_LONG[] =
    "{\"name\":\"long\",\"batch_size\":64,\"model\":{\"arch\":\"mlp\",\"hidden\":[256,256]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":20000,\"n_valid\":256,\"features\":32,"
    "\"classes\":4},"
    "\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":200,\"lr_max\":0.001},{\"op\":\"save\"}]}";

static const char SPEC_SMALL[] =
    "{\"name\":\"small\",\"model\":{\"arch\":\"mlp\",\"hidden\":[16]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":256,\"n_valid\":64,\"features\":8},"
    "\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":0.01},{\"op\":\"save\"}]}";

#define MAX_SEEN 64

/* Answers seen so far: an ETag must always name the same body. */
typedef struct seen {
    char etag[MAX_SEEN][128];
    char *body[MAX_SEEN];
    int n;
    int mismatches;
} seen;

static void seen_add(seen *s, const th_resp *r)
{
    if (r->status != 200 || !r->etag[0] || !r->body)
        return;
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->etag[i], r->etag) == 0) {
            if (strcmp(s->body[i], r->body) != 0) {
                s->mismatches++;
                diag("ETag %s was served with two different bodies", r->etag);
            }
            return;
        }
    }
    if (s->n == MAX_SEEN)
        return;
    snprintf(s->etag[s->n], sizeof s->etag[0], "%s", r->etag);
    s->body[s->n] = strdup(r->body);
    if (s->body[s->n])
        s->n++;
}

static void seen_fini(seen *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->body[i]);
    s->n = 0;
}

/* GET /v1/jobs/{id}, optionally with If-None-Match; records a 200 in `sn`. */
static int get_job(const th_daemon *d, long long id, const char *inm, seen *sn, th_resp *r)
{
    char path[64], hdr[200];
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    const char *const headers[] = {hdr, NULL};
    if (inm)
        snprintf(hdr, sizeof hdr, "If-None-Match: %s", inm);
    int rc = th_request_ex(d, "GET", path, inm ? headers : NULL, NULL, NULL, 0, r);
    if (sn)
        seen_add(sn, r);
    return rc;
}

static bool cancel(const th_daemon *d, long long id)
{
    char path[64];
    th_resp r;
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", id);
    th_post_json(d, path, NULL, &r);
    bool okk = r.status == 200;
    th_resp_fini(&r);
    return okk;
}

/* Renames job `id` from outside the daemon, as another process sharing the database would. */
static bool rename_outside(const th_daemon *d, long long id, const char *name)
{
    char p[700];
    snprintf(p, sizeof p, "%s/thawd.db", d->data_dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    bool okk = sqlite3_open(p, &db) == SQLITE_OK && sqlite3_busy_timeout(db, 5000) == SQLITE_OK &&
               sqlite3_prepare_v2(db, "UPDATE jobs SET name = ?1 WHERE id = ?2", -1, &st, NULL) ==
                   SQLITE_OK &&
               sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC) == SQLITE_OK &&
               sqlite3_bind_int64(st, 2, id) == SQLITE_OK && sqlite3_step(st) == SQLITE_DONE &&
               sqlite3_changes(db) == 1;
    if (!okk)
        diag("sqlite3: %s", db ? sqlite3_errmsg(db) : "cannot open");
    sqlite3_finalize(st);
    sqlite3_close(db);
    return okk;
}

int main(void)
{
    th_daemon d;
    seen sn;
    memset(&sn, 0, sizeof sn);
    static const char *const args[] = {"--workers", "1", "--http-threads", "1", NULL};
    if (th_daemon_init(&d, "job_cache") != 0 || th_daemon_start(&d, args, 20) != 0) {
        ok(0, "daemon starts");
        th_daemon_fini(&d, true);
        return done_testing();
    }
    th_resp r;
    char etag[128];

    long long lng = th_job_submit(&d, SPEC_LONG, NULL);
    long long q1 = th_job_submit(&d, SPEC_SMALL, NULL);
    long long q2 = th_job_submit(&d, SPEC_SMALL, NULL);
    ok(lng > 0 && q1 > 0 && q2 > 0, "submitted a long job (%lld) and two small ones", lng);
    if (lng <= 0 || q1 <= 0 || q2 <= 0)
        goto stop;
    json_t *running = th_job_wait_step(&d, lng, 1, 60);
    ok(running != NULL, "long job is running and training");
    json_decref(running);

    /* ---- an unchanged queued job: the cached answer and 304 ---- */
    get_job(&d, q2, NULL, &sn, &r);
    is_int(th_json_int(r.json, "queue_position", -1), 1, "second small job at queue_position 1");
    snprintf(etag, sizeof etag, "%s", r.etag);
    ok(etag[0] != '\0', "it has an ETag");
    th_resp_fini(&r);
    get_job(&d, q2, etag, &sn, &r);
    is_int(r.status, 304, "If-None-Match with that ETag while nothing changed: 304");
    th_resp_fini(&r);

    /* ---- cancel the first queued job: both documents change at once ---- */
    ok(cancel(&d, q1), "cancel the first queued job -> 200");
    get_job(&d, q1, NULL, &sn, &r);
    is_str(th_json_str(r.json, "state"), "cancelled", "GET right after the cancel: cancelled");
    ok(json_is_null(json_object_get(r.json, "queue_position")), "  queue_position null");
    th_resp_fini(&r);
    get_job(&d, q2, etag, &sn, &r);
    is_int(r.status, 200, "the job behind it: the old ETag gets 200, not 304");
    is_int(th_json_int(r.json, "queue_position", -1), 0, "  and queue_position 0");
    ok(strcmp(r.etag, etag) != 0, "  with a new ETag");
    th_resp_fini(&r);

    /* ---- progress of the running job: visible, and the ETag follows it ---- */
    get_job(&d, lng, NULL, &sn, &r);
    long long step0 = th_json_int(r.json, "step", -1);
    snprintf(etag, sizeof etag, "%s", r.etag);
    th_resp_fini(&r);
    long long step = step0;
    int polls = 0;
    double t0 = th_now();
    while (step <= step0 && th_now() - t0 < 60) {
        get_job(&d, lng, NULL, &sn, &r);
        step = th_json_int(r.json, "step", -1);
        th_resp_fini(&r);
        polls++;
    }
    ok(step > step0, "progress becomes visible while polling: step %lld -> %lld (%d polls)", step0,
       step, polls);
    get_job(&d, lng, etag, &sn, &r);
    is_int(r.status, 200, "the ETag from before the progress gets 200");
    ok(th_json_int(r.json, "step", -1) > step0, "  with the newer step (%lld)",
       th_json_int(r.json, "step", -1));
    ok(strcmp(r.etag, etag) != 0, "  and another ETag");
    th_resp_fini(&r);

    /* ---- a change from another process ---- */
    get_job(&d, q2, NULL, &sn, &r);
    snprintf(etag, sizeof etag, "%s", r.etag);
    th_resp_fini(&r);
    ok(rename_outside(&d, q2, "renamed-outside"), "renamed the queued job with sqlite3");
    get_job(&d, q2, etag, &sn, &r);
    is_int(r.status, 200, "the old ETag gets 200 after the outside change");
    is_str(th_json_str(r.json, "name"), "renamed-outside", "  and the new name");
    th_resp_fini(&r);

    /* ---- cancel the running job ---- */
    ok(cancel(&d, lng), "cancel the running job -> 200");
    get_job(&d, lng, NULL, &sn, &r);
    ok(json_is_true(json_object_get(r.json, "cancel_requested")),
       "GET right after the cancel: cancel_requested true");
    th_resp_fini(&r);
    json_t *job = th_job_wait(&d, lng, "succeeded|failed|cancelled", 60, NULL);
    is_str(th_json_str(job, "state"), "cancelled", "the running job ends cancelled");
    json_decref(job);
    get_job(&d, lng, NULL, &sn, &r);
    is_str(th_json_str(r.json, "state"), "cancelled", "and reads cancelled on the next GET");
    ok(json_is_string(json_object_get(r.json, "finished_at")), "  with finished_at");
    snprintf(etag, sizeof etag, "%s", r.etag);
    th_resp_fini(&r);
    get_job(&d, lng, etag, &sn, &r);
    is_int(r.status, 304, "a finished job is stable: 304");
    th_resp_fini(&r);

    ok(sn.n >= 5, "collected %d distinct answers", sn.n);
    is_int(sn.mismatches, 0, "no ETag was served with two different bodies");

stop:
    seen_fini(&sn);
    is_int(th_daemon_stop(&d, 30), 0, "SIGTERM -> exit 0");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report in the daemon's log");
    return done_testing();
}
