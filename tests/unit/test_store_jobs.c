/*
 * test_store_jobs.c: the job queue on one connection: enqueue/get/list/count with cursors
 * and filters, claim order, lease ownership, cancel in each state, finish, requeue,
 * recover and progress.
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage.h"
#include "store_tmpdir.h"
#include "tap.h"

#define LEASE_MS 60000

static int db_seq;

/* A fresh database file per test; exits on failure (nothing else can run). */
static store *fresh_store(void)
{
    char path[1024];
    store *s = NULL;
    int rc;

    snprintf(path, sizeof(path), "%s/jobs-%d.db", tmpdir, ++db_seq);
    rc = store_open(path, NULL, NULL, &s);
    if (rc != STORE_OK) {
        printf("Bail out! store_open(%s): %s\n", path, store_strerror(rc));
        exit(1);
    }
    return s;
}

static int64_t enqueue(store *s, const char *name)
{
    int64_t id = 0;
    int rc = store_job_enqueue(s, name, "{\"spec\":true}", &id);

    if (rc != STORE_OK)
        diag("enqueue failed: %s", store_strerror(rc));
    return id;
}

static int64_t claim_id(store *s, const char *owner)
{
    store_job j;
    int64_t id;

    if (store_job_claim(s, owner, LEASE_MS, &j) != STORE_OK)
        return 0;
    id = j.id;
    store_job_fini(&j);
    return id;
}

static store_job_state state_of(store *s, int64_t id)
{
    store_job j;
    store_job_state st;

    if (store_job_get(s, id, &j) != STORE_OK)
        return (store_job_state)-1;
    st = j.state;
    store_job_fini(&j);
    return st;
}

static void test_state_names(void)
{
    store_job_state st;

    is_str(store_job_state_name(STORE_JOB_QUEUED), "queued", "name of queued");
    is_str(store_job_state_name(STORE_JOB_CANCELLED), "cancelled", "name of cancelled");
    ok(store_job_state_name((store_job_state)42) == NULL, "out-of-range state has no name");
    is_int(store_job_state_parse("running", &st), STORE_OK, "parse running");
    is_int(st, STORE_JOB_RUNNING, "parsed running");
    is_int(store_job_state_parse("RUNNING", &st), STORE_EINVAL, "parse is exact");
    is_int(store_job_state_parse(NULL, &st), STORE_EINVAL, "parse NULL");
    ok(!store_job_state_is_final(STORE_JOB_RUNNING) && store_job_state_is_final(STORE_JOB_FAILED),
       "is_final");
}

static void test_enqueue_get(void)
{
    store *s = fresh_store();
    store_job j;
    int64_t a, b, id = -1;

    a = enqueue(s, "first");
    b = enqueue(s, NULL);
    ok(a > 0 && b > a, "ids increase (%lld, %lld)", (long long)a, (long long)b);

    is_int(store_job_get(s, b, &j), STORE_OK, "get");
    is_int(j.id, b, "id");
    ok(j.name == NULL, "NULL name stays NULL");
    is_str(j.spec_json, "{\"spec\":true}", "spec_json copied");
    is_int(j.state, STORE_JOB_QUEUED, "new job is queued");
    ok(j.created_at > 1600000000000LL, "created_at is ms since the epoch");
    is_int(j.updated_at, j.created_at, "updated_at = created_at");
    ok(j.started_at == 0 && j.finished_at == 0, "not started, not finished");
    is_int(j.attempt, 0, "attempt 0");
    ok(!j.cancel_requested && !j.error && !j.lease_owner && !j.resume_path,
       "no cancel, error, lease or resume path");
    is_int(j.progress.stage_index, -1, "stage_index -1 before the first stage");
    ok(j.metrics_json == NULL && j.progress.metrics_json == NULL, "no metrics yet");
    store_job_fini(&j);
    ok(j.spec_json == NULL && j.id == 0, "fini zeroes the job");
    store_job_fini(NULL);

    is_int(store_job_get(s, b + 100, &j), STORE_ENOTFOUND, "unknown id -> ENOTFOUND");
    is_int(store_job_get(s, 0, &j), STORE_EINVAL, "id 0 -> EINVAL");
    is_int(store_job_get(s, a, NULL), STORE_EINVAL, "NULL out -> EINVAL");
    is_int(store_job_get(NULL, a, &j), STORE_EINVAL, "NULL store -> EINVAL");
    is_int(store_job_enqueue(s, "x", NULL, &id), STORE_EINVAL, "NULL spec -> EINVAL");
    is_int(store_job_enqueue(NULL, "x", "{}", &id), STORE_EINVAL, "NULL store -> EINVAL");
    is_int(id, -1, "id untouched on failure");
    store_close(s);
}

static void test_list_and_count(void)
{
    store *s = fresh_store();
    store_job *jobs = NULL;
    store_job_state running = STORE_JOB_RUNNING, queued = STORE_JOB_QUEUED;
    store_job_state bogus = (store_job_state)99;
    size_t n = 99;
    bool more = false;
    int64_t ids[5], count = -1;

    for (int i = 0; i < 5; i++)
        ids[i] = enqueue(s, "j");

    is_int(store_job_list(s, NULL, 0, 2, &jobs, &n, &more), STORE_OK, "list page 1");
    ok(n == 2 && jobs[0].id == ids[4] && jobs[1].id == ids[3] && more,
       "page 1: newest two, has_more");
    store_job_list_free(jobs, n);
    is_int(store_job_list(s, NULL, ids[3], 2, &jobs, &n, &more), STORE_OK, "list page 2");
    ok(n == 2 && jobs[0].id == ids[2] && jobs[1].id == ids[1] && more,
       "page 2: ids below the cursor");
    store_job_list_free(jobs, n);
    is_int(store_job_list(s, NULL, ids[1], 2, &jobs, &n, &more), STORE_OK, "list page 3");
    ok(n == 1 && jobs[0].id == ids[0] && !more, "page 3: last job, no more");
    store_job_list_free(jobs, n);
    is_int(store_job_list(s, NULL, ids[0], 2, &jobs, &n, &more), STORE_OK, "list past the end");
    ok(n == 0 && jobs == NULL && !more, "empty page");
    is_int(store_job_list(s, NULL, 0, 5, &jobs, &n, &more), STORE_OK, "list exactly all");
    ok(n == 5 && !more, "limit equal to the count: has_more false");
    store_job_list_free(jobs, n);

    is_int(claim_id(s, "w"), ids[0], "claim takes the oldest");
    is_int(store_job_list(s, &running, 0, 10, &jobs, &n, &more), STORE_OK, "filter running");
    ok(n == 1 && jobs[0].id == ids[0] && jobs[0].state == STORE_JOB_RUNNING && !more,
       "only the running job");
    store_job_list_free(jobs, n);
    is_int(store_job_list(s, &queued, 0, 3, &jobs, &n, &more), STORE_OK, "filter queued");
    ok(n == 3 && jobs[0].id == ids[4] && jobs[2].id == ids[2] && more, "queued, newest first");
    store_job_list_free(jobs, n);

    is_int(store_job_count(s, STORE_JOB_QUEUED, 0, &count), STORE_OK, "count queued");
    is_int(count, 4, "queue depth 4");
    is_int(store_job_count(s, STORE_JOB_QUEUED, ids[3], &count), STORE_OK, "queue position");
    is_int(count, 2, "two queued jobs ahead of ids[3]");
    is_int(store_job_count(s, STORE_JOB_QUEUED, ids[1], &count), STORE_OK, "position of next");
    is_int(count, 0, "nothing ahead of the next job");
    is_int(store_job_count(s, STORE_JOB_SUCCEEDED, 0, &count), STORE_OK, "count succeeded");
    is_int(count, 0, "none succeeded");

    is_int(store_job_list(s, NULL, 0, 0, &jobs, &n, &more), STORE_EINVAL, "limit 0");
    is_int(store_job_list(s, NULL, 0, 1001, &jobs, &n, &more), STORE_EINVAL, "limit 1001");
    is_int(store_job_list(s, NULL, -1, 10, &jobs, &n, &more), STORE_EINVAL, "negative cursor");
    is_int(store_job_list(s, &bogus, 0, 10, &jobs, &n, &more), STORE_EINVAL, "unknown state");
    is_int(store_job_list(s, NULL, 0, 10, NULL, &n, &more), STORE_EINVAL, "NULL out");
    is_int(store_job_list(s, NULL, 0, 10, &jobs, NULL, &more), STORE_EINVAL, "NULL n");
    is_int(store_job_list(s, NULL, 0, 10, &jobs, &n, NULL), STORE_EINVAL, "NULL has_more");
    is_int(store_job_count(s, bogus, 0, &count), STORE_EINVAL, "count unknown state");
    is_int(store_job_count(s, STORE_JOB_QUEUED, 0, NULL), STORE_EINVAL, "count NULL out");
    store_job_list_free(NULL, 0);
    store_close(s);
}

static void test_claim(void)
{
    store *s = fresh_store();
    store_job j;
    int64_t a, b;

    is_int(store_job_claim(s, "w1", LEASE_MS, &j), STORE_ENOTFOUND, "empty queue -> ENOTFOUND");
    ok(j.id == 0 && j.spec_json == NULL, "out zeroed when nothing was claimed");

    a = enqueue(s, "a");
    b = enqueue(s, "b");
    is_int(store_job_claim(s, "w1", LEASE_MS, &j), STORE_OK, "claim");
    is_int(j.id, a, "oldest first");
    is_int(j.state, STORE_JOB_RUNNING, "claimed job is running");
    is_str(j.lease_owner, "w1", "lease owner");
    is_int(j.attempt, 1, "attempt 1");
    ok(j.started_at >= j.created_at, "started_at set");
    is_int(j.lease_expires_at, j.started_at + LEASE_MS, "lease = start + lease_ms");
    is_str(j.spec_json, "{\"spec\":true}", "claim returns the spec");
    store_job_fini(&j);
    is_int(claim_id(s, "w2"), b, "next claim gets the next job");
    is_int(store_job_claim(s, "w1", LEASE_MS, &j), STORE_ENOTFOUND, "drained -> ENOTFOUND");

    enqueue(s, "c");
    is_int(store_job_claim(s, NULL, LEASE_MS, &j), STORE_EINVAL, "NULL owner");
    is_int(store_job_claim(s, "", LEASE_MS, &j), STORE_EINVAL, "empty owner");
    is_int(store_job_claim(s, "w", 0, &j), STORE_EINVAL, "lease 0");
    is_int(store_job_claim(s, "w", -5, &j), STORE_EINVAL, "negative lease");
    is_int(store_job_claim(s, "w", INT64_MAX, &j), STORE_EINVAL, "absurd lease");
    is_int(store_job_claim(s, "w", LEASE_MS, NULL), STORE_EINVAL, "NULL out");
    is_int(state_of(s, b + 1), STORE_JOB_QUEUED, "rejected claims leave the job queued");
    store_close(s);
}

static void test_lease(void)
{
    store *s = fresh_store();
    store_progress p = {.stage_index = 0, .stage_count = 1, .stage_op = "fit"};
    store_job j;
    bool cancel = true;
    int64_t id = enqueue(s, "l"), queued = enqueue(s, "q"), expires;

    if (claim_id(s, "w1") != id) {
        ok(false, "claim for the lease test");
        store_close(s);
        return;
    }
    is_int(store_job_heartbeat(s, id, "w1", LEASE_MS, &cancel), STORE_OK, "owner heartbeat");
    ok(!cancel, "no cancel requested");
    is_int(store_job_get(s, id, &j), STORE_OK, "get");
    expires = j.lease_expires_at;
    store_job_fini(&j);
    is_int(store_job_heartbeat(s, id, "w1", 100 * LEASE_MS, NULL), STORE_OK,
           "heartbeat with a longer lease (NULL cancel flag allowed)");
    is_int(store_job_get(s, id, &j), STORE_OK, "get");
    ok(j.lease_expires_at > expires, "heartbeat extends the lease");
    store_job_fini(&j);

    is_int(store_job_heartbeat(s, id, "w2", LEASE_MS, &cancel), STORE_ELOST, "other heartbeat");
    is_int(store_job_progress(s, id, "w2", &p), STORE_ELOST, "other progress");
    is_int(store_job_set_resume(s, id, "w2", "/ck"), STORE_ELOST, "other set_resume");
    is_int(store_job_finish(s, id, "w2", STORE_JOB_SUCCEEDED, NULL), STORE_ELOST, "other finish");
    is_int(store_job_requeue(s, id, "w2"), STORE_ELOST, "other requeue");
    is_int(state_of(s, id), STORE_JOB_RUNNING, "still running under w1");

    is_int(store_job_heartbeat(s, queued, "w1", LEASE_MS, &cancel), STORE_ELOST,
           "heartbeat on a queued job");
    is_int(store_job_progress(s, queued, "w1", &p), STORE_ELOST, "progress on a queued job");
    is_int(store_job_heartbeat(s, 9999, "w1", LEASE_MS, &cancel), STORE_ENOTFOUND,
           "heartbeat on an unknown job");
    is_int(store_job_finish(s, 9999, "w1", STORE_JOB_FAILED, "x"), STORE_ENOTFOUND,
           "finish an unknown job");
    is_int(store_job_heartbeat(s, id, NULL, LEASE_MS, &cancel), STORE_EINVAL, "NULL owner");
    is_int(store_job_heartbeat(s, id, "w1", 0, &cancel), STORE_EINVAL, "lease 0");
    is_int(store_job_finish(s, id, "w1", STORE_JOB_RUNNING, NULL), STORE_EINVAL,
           "finish to a non-final state");
    is_int(store_job_finish(s, id, "w1", (store_job_state)77, NULL), STORE_EINVAL,
           "finish to an unknown state");
    is_int(store_job_set_resume(s, id, "w1", NULL), STORE_EINVAL, "NULL resume path");
    is_int(store_job_set_resume(s, id, "w1", ""), STORE_EINVAL, "empty resume path");

    is_int(store_job_finish(s, id, "w1", STORE_JOB_FAILED, "out of memory"), STORE_OK,
           "owner finishes");
    is_int(store_job_get(s, id, &j), STORE_OK, "get finished");
    is_int(j.state, STORE_JOB_FAILED, "failed");
    is_str(j.error, "out of memory", "error message kept");
    ok(j.finished_at >= j.started_at && j.finished_at > 0, "finished_at set");
    ok(j.lease_owner == NULL && j.lease_expires_at == 0, "lease cleared");
    store_job_fini(&j);
    is_int(store_job_heartbeat(s, id, "w1", LEASE_MS, &cancel), STORE_ELOST,
           "heartbeat after finish");
    is_int(store_job_finish(s, id, "w1", STORE_JOB_SUCCEEDED, NULL), STORE_ELOST, "finish twice");
    store_close(s);
}

static void test_cancel(void)
{
    store *s = fresh_store();
    store_job j;
    bool cancel = false;
    int64_t q, r;

    q = enqueue(s, "queued");
    r = enqueue(s, "running");
    /* claim takes q first; put it back so r is the running one. */
    store_job_cancel(s, q, NULL);
    if (claim_id(s, "w1") != r) {
        ok(false, "claim for the cancel test");
        store_close(s);
        return;
    }
    is_int(state_of(s, q), STORE_JOB_CANCELLED, "queued -> cancelled at once (out NULL)");
    is_int(store_job_get(s, q, &j), STORE_OK, "get cancelled");
    ok(j.finished_at > 0 && !j.cancel_requested, "finished_at set, no cancel_requested flag");
    store_job_fini(&j);

    is_int(store_job_cancel(s, r, &j), STORE_OK, "cancel running");
    is_int(j.state, STORE_JOB_RUNNING, "still running");
    ok(j.cancel_requested, "cancel_requested set");
    is_int(j.finished_at, 0, "not finished");
    store_job_fini(&j);
    is_int(store_job_cancel(s, r, &j), STORE_OK, "cancel running again is fine");
    store_job_fini(&j);
    is_int(store_job_heartbeat(s, r, "w1", LEASE_MS, &cancel), STORE_OK, "heartbeat");
    ok(cancel, "heartbeat reports the cancel");
    is_int(store_job_finish(s, r, "w1", STORE_JOB_CANCELLED, NULL), STORE_OK,
           "worker ends it cancelled");
    is_int(state_of(s, r), STORE_JOB_CANCELLED, "cancelled");

    is_int(store_job_cancel(s, r, &j), STORE_ECONFLICT, "cancel a final job -> ECONFLICT");
    ok(j.id == 0, "out zeroed on conflict");
    is_int(store_job_cancel(s, q, NULL), STORE_ECONFLICT, "cancel a cancelled job");
    is_int(store_job_cancel(s, 4242, &j), STORE_ENOTFOUND, "cancel unknown");
    is_int(store_job_cancel(s, 0, &j), STORE_EINVAL, "cancel id 0");
    is_int(store_job_cancel(NULL, q, &j), STORE_EINVAL, "cancel NULL store");
    store_close(s);
}

static void test_requeue_recover(void)
{
    store *s = fresh_store();
    store_job j;
    int64_t a = enqueue(s, "a"), b = enqueue(s, "b"), c = enqueue(s, "c"), n = -1, first_start;

    is_int(claim_id(s, "w1"), a, "claim a");
    is_int(store_job_set_resume(s, a, "w1", "/data/jobs/1/checkpoint.safetensors"), STORE_OK,
           "set resume path");
    is_int(store_job_requeue(s, a, "w1"), STORE_OK, "requeue a");
    is_int(store_job_get(s, a, &j), STORE_OK, "get a");
    is_int(j.state, STORE_JOB_QUEUED, "a is queued again");
    ok(j.lease_owner == NULL && j.lease_expires_at == 0, "lease cleared");
    is_str(j.resume_path, "/data/jobs/1/checkpoint.safetensors", "resume path kept");
    is_int(j.attempt, 1, "attempt kept");
    first_start = j.started_at;
    store_job_fini(&j);

    is_int(store_job_claim(s, "w2", LEASE_MS, &j), STORE_OK, "claim again");
    is_int(j.id, a, "the requeued job is still the oldest");
    is_int(j.attempt, 2, "attempt counts claims");
    is_int(j.started_at, first_start, "started_at is the first start");
    is_str(j.resume_path, "/data/jobs/1/checkpoint.safetensors", "claim sees the resume path");
    store_job_fini(&j);
    is_int(store_job_requeue(s, a, "w1"), STORE_ELOST, "old owner cannot requeue");

    is_int(claim_id(s, "w1"), b, "claim b");
    is_int(claim_id(s, "w1"), c, "claim c");
    is_int(store_job_cancel(s, c, NULL), STORE_OK, "cancel requested on c");
    is_int(store_job_finish(s, b, "w1", STORE_JOB_SUCCEEDED, NULL), STORE_OK, "b succeeded");

    /* Now a (w2) and c (w1, cancel requested) are running: a crash leaves them so. */
    is_int(store_job_recover(s, &n), STORE_OK, "recover");
    is_int(n, 1, "one job requeued");
    is_int(store_job_get(s, a, &j), STORE_OK, "get a");
    ok(j.state == STORE_JOB_QUEUED && j.attempt == 2 && j.lease_owner == NULL,
       "a queued, attempt kept, lease cleared");
    is_str(j.resume_path, "/data/jobs/1/checkpoint.safetensors", "a keeps its resume path");
    store_job_fini(&j);
    is_int(store_job_get(s, c, &j), STORE_OK, "get c");
    ok(j.state == STORE_JOB_CANCELLED && j.finished_at > 0,
       "c had a cancel request: it ends cancelled instead of re-running");
    store_job_fini(&j);
    is_int(state_of(s, b), STORE_JOB_SUCCEEDED, "finished jobs untouched");
    is_int(store_job_heartbeat(s, a, "w2", LEASE_MS, NULL), STORE_ELOST,
           "the dead owner lost its lease");
    is_int(store_job_recover(s, &n), STORE_OK, "recover again");
    is_int(n, 0, "nothing left to recover");
    is_int(store_job_recover(s, NULL), STORE_EINVAL, "recover NULL out");

    /* requeue of a running job whose cancel was requested also ends it. */
    is_int(claim_id(s, "w3"), a, "claim a once more");
    is_int(store_job_cancel(s, a, NULL), STORE_OK, "request cancel");
    is_int(store_job_requeue(s, a, "w3"), STORE_OK, "requeue on shutdown");
    is_int(state_of(s, a), STORE_JOB_CANCELLED, "requeue honours the cancel request");
    store_close(s);
}

static void test_progress(void)
{
    store *s = fresh_store();
    store_progress p = {.stage_index = 2,
                        .stage_count = 7,
                        .stage_op = "fit_one_cycle",
                        .epoch = 1,
                        .n_epochs = 3,
                        .batch = 5,
                        .n_batches = 10,
                        .step = 35,
                        .fraction = 0.4375,
                        .metrics_json = "{\"train_loss\":0.5,\"accuracy\":0.9}"};
    store_progress bad;
    store_job j;
    int64_t id = enqueue(s, "p");

    if (claim_id(s, "w") != id) {
        ok(false, "claim for the progress test");
        store_close(s);
        return;
    }
    is_int(store_job_progress(s, id, "w", &p), STORE_OK, "record progress");
    is_int(store_job_get(s, id, &j), STORE_OK, "get");
    ok(j.progress.stage_index == 2 && j.progress.stage_count == 7, "stage index and count");
    is_str(j.progress.stage_op, "fit_one_cycle", "stage op");
    ok(j.progress.epoch == 1 && j.progress.n_epochs == 3 && j.progress.batch == 5 &&
           j.progress.n_batches == 10 && j.progress.step == 35,
       "epoch, batch and step");
    ok(j.progress.fraction == 0.4375, "fraction round-trips exactly");
    is_str(j.metrics_json, "{\"train_loss\":0.5,\"accuracy\":0.9}", "metrics_json");
    ok(j.progress.metrics_json == j.metrics_json, "progress.metrics_json points at the copy");
    store_job_fini(&j);

    p.batch = 6;
    p.step = 36;
    p.metrics_json = NULL;
    is_int(store_job_progress(s, id, "w", &p), STORE_OK, "progress without metrics");
    is_int(store_job_get(s, id, &j), STORE_OK, "get");
    is_int(j.progress.step, 36, "step updated");
    is_str(j.metrics_json, "{\"train_loss\":0.5,\"accuracy\":0.9}",
           "NULL metrics keep the last recorded ones");
    store_job_fini(&j);

    bad = p;
    bad.fraction = (double)NAN;
    is_int(store_job_progress(s, id, "w", &bad), STORE_EINVAL, "NaN fraction");
    bad.fraction = 1.5;
    is_int(store_job_progress(s, id, "w", &bad), STORE_EINVAL, "fraction > 1");
    bad = p;
    memset(bad.stage_op, 'x', sizeof(bad.stage_op));
    is_int(store_job_progress(s, id, "w", &bad), STORE_EINVAL, "unterminated stage_op");
    bad = p;
    bad.stage_index = -2;
    is_int(store_job_progress(s, id, "w", &bad), STORE_EINVAL, "stage_index < -1");
    bad = p;
    bad.step = -1;
    is_int(store_job_progress(s, id, "w", &bad), STORE_EINVAL, "negative step");
    is_int(store_job_progress(s, id, "w", NULL), STORE_EINVAL, "NULL progress");
    store_close(s);
}

int main(void)
{
    make_tmpdir();
    test_state_names();
    test_enqueue_get();
    test_list_and_count();
    test_claim();
    test_lease();
    test_cancel();
    test_requeue_recover();
    test_progress();
    remove_tmpdir();
    return done_testing();
}
