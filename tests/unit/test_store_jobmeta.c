/*
 * test_store_jobmeta.c: the v1 API additions to the job store (jobmeta.c): submission with
 * priorities and idempotency keys, queue position and claim order under priorities, the
 * step rate, retry and delete by state, per-batch metrics (batched writes, replace on
 * replay, NaN as NULL), and the recovery event of store_job_recover.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"
#include "tap.h"

#define LEASE_MS 60000

static const char SHA_A[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char SHA_B[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static int64_t submit(store *s, int32_t priority, const char *key, const char *sha, bool *replayed)
{
    store_submit sub = {
        .spec_json = "{}", .priority = priority, .idempotency_key = key, .request_sha256 = sha};
    int64_t id = 0;
    bool rep = false;
    int rc = store_job_submit(s, &sub, &id, &rep);
    if (replayed)
        *replayed = rep;
    return rc == 0 ? id : rc;
}

static void test_submit_and_priority(store *s)
{
    bool rep = true;
    int64_t a = submit(s, 0, NULL, NULL, &rep);
    ok(a > 0 && !rep, "submit without a key");
    int64_t b = submit(s, 5, "k1", SHA_A, &rep);
    ok(b > a && !rep, "submit with a key");
    int64_t b2 = submit(s, 5, "k1", SHA_A, &rep);
    ok(b2 == b && rep, "same key, same hash: the first job, replayed");
    is_int(submit(s, 5, "k1", SHA_B, NULL), STORE_ECONFLICT, "same key, other hash: conflict");
    is_int(submit(s, 0, "k2", "short", NULL), STORE_EINVAL, "a key needs a 64-hex hash");
    is_int(submit(s, 0, "", SHA_A, NULL), STORE_EINVAL, "an empty key is invalid");
    int64_t c = submit(s, 5, NULL, NULL, NULL);

    store_job_extra x;
    is_int(store_job_extra_get(s, b, &x), 0, "extra of b");
    is_int(x.priority, 5, "b has priority 5");
    is_int(x.queue_position, 0, "b (priority 5, oldest) is first");
    store_job_extra_get(s, c, &x);
    is_int(x.queue_position, 1, "c (priority 5, newer) is second");
    store_job_extra_get(s, a, &x);
    is_int(x.queue_position, 2, "a (priority 0) is last although oldest");
    is_int(store_job_extra_get(s, 999, &x), STORE_ENOTFOUND, "extra of a missing job");

    store_job j;
    is_int(store_job_claim(s, "w1", LEASE_MS, &j), 0, "claim");
    is_int(j.id, b, "the claim takes the highest priority first");
    store_job_extra_get(s, b, &x);
    is_int(x.queue_position, -1, "a running job has no queue position");
    is_int(store_job_set_rate(s, b, "w1", 12.5), 0, "set the step rate");
    store_job_extra_get(s, b, &x);
    is_near(x.step_rate, 12.5, 1e-9, "the step rate reads back");
    is_int(store_job_set_rate(s, b, "w2", 1.0), STORE_ELOST, "another owner: lost");
    is_int(store_job_set_rate(s, b, "w1", (double)NAN), STORE_EINVAL, "NaN rate: invalid");
    double total = 0;
    is_int(store_job_count_running_rate(s, &total), 0, "sum of running rates");
    is_near(total, 12.5, 1e-9, "the sum counts the running job");

    is_int(store_job_retry(s, b), STORE_ECONFLICT, "retry a running job: conflict");
    is_int(store_job_delete(s, b), STORE_ECONFLICT, "delete a running job: conflict");
    is_int(store_job_delete(s, a), STORE_ECONFLICT, "delete a queued job: conflict");
    is_int(store_job_finish(s, b, "w1", STORE_JOB_FAILED, "boom"), 0, "b fails");
    is_int(store_job_retry(s, b), 0, "retry a failed job");
    store_job_fini(&j);
    is_int(store_job_get(s, b, &j), 0, "get b");
    ok(j.state == STORE_JOB_QUEUED && j.error == NULL && j.finished_at == 0,
       "retried: queued, error and finished_at cleared");
    is_int(j.attempt, 1, "retried: attempt kept");
    store_job_fini(&j);
    is_int(store_job_retry(s, 999), STORE_ENOTFOUND, "retry a missing job");
    store_job_cancel(s, a, NULL);
    store_batch_metric m = {.step = 1, .loss = 1.0, .created_at = 1};
    is_int(store_batch_metrics_add(s, a, &m, 1), 0, "a metric row for a");
    store_event_add(s, a, "info", "state", "x", NULL, NULL);
    is_int(store_job_delete(s, a), 0, "delete a cancelled job");
    is_int(store_job_get(s, a, &j), STORE_ENOTFOUND, "deleted job is gone");
    store_event *ev = NULL;
    size_t n = 9;
    bool more;
    store_event_list(s, a, 0, 10, &ev, &n, &more);
    is_int((long long)n, 0, "its events are gone");
    store_event_list_free(ev, n);
    store_batch_metric *rows = NULL;
    store_batch_metrics_list(s, a, &rows, &n);
    is_int((long long)n, 0, "its metrics are gone");
    free(rows);
    is_int(store_job_delete(s, a), STORE_ENOTFOUND, "delete again: not found");
    is_int(submit(s, 0, "k1", SHA_B, NULL), STORE_ECONFLICT, "the key stays bound to b");
    /* deleting a job frees its key */
    int64_t e = submit(s, 0, "k3", SHA_A, NULL);
    store_job_cancel(s, e, NULL);
    is_int(store_job_delete(s, e), 0, "delete a job submitted with a key");
    int64_t f = submit(s, 0, "k3", SHA_B, &rep);
    ok(f > e && !rep, "its key is free again");
}

static void test_metrics(store *s)
{
    int64_t id = submit(s, 0, NULL, NULL, NULL);
    store_batch_metric rows[300];
    for (int i = 0; i < 300; i++) {
        rows[i] = (store_batch_metric){.step = i + 1,
                                       .stage = i < 100 ? 0 : 1,
                                       .epoch = 0,
                                       .batch = i,
                                       .loss = i == 7 ? (double)NAN : 0.5 * i,
                                       .smooth_loss = 1,
                                       .lr = 1e-3,
                                       .mom = 0.9,
                                       .created_at = 1000 + i};
    }
    is_int(store_batch_metrics_add(s, id, rows, 300), 0, "300 rows in one call");
    rows[5].loss = 42;
    is_int(store_batch_metrics_add(s, id, &rows[5], 1), 0, "a replayed step");
    store_batch_metric *out = NULL;
    size_t n = 0;
    is_int(store_batch_metrics_list(s, id, &out, &n), 0, "list");
    is_int((long long)n, 300, "replay replaced, not added");
    ok(out && out[5].loss == 42 && isnan(out[7].loss), "replaced value; NaN read back as NaN");
    ok(out && out[299].step == 300 && out[299].stage == 1 && out[299].created_at == 1299,
       "last row intact");
    free(out);
    is_int(store_batch_metrics_add(s, 999, rows, 1), STORE_ENOTFOUND, "unknown job");
    is_int(store_batch_metrics_add(s, id, NULL, 1), STORE_EINVAL, "NULL rows");
}

static void test_recover_event(store *s)
{
    int64_t id = submit(s, 0, NULL, NULL, NULL);
    store_job j;
    /* claim until we hold `id` (others may be queued ahead) */
    while (store_job_claim(s, "crashed", LEASE_MS, &j) == 0) {
        bool mine = j.id == id;
        store_job_fini(&j);
        if (mine)
            break;
    }
    int64_t n = 0;
    is_int(store_job_recover(s, &n), 0, "recover");
    ok(n >= 1, "recovered at least the job we held");
    store_event *ev = NULL;
    size_t k = 0;
    bool more;
    store_event_list(s, id, 0, 10, &ev, &k, &more);
    ok(k == 1 && ev[0].data_json && strstr(ev[0].data_json, "\"recovered\":true") &&
           strstr(ev[0].data_json, "\"state\":\"queued\""),
       "the recovered job got a state event saying so");
    store_event_list_free(ev, k);
}

int main(void)
{
    store *s = NULL;
    if (store_open(":memory:", NULL, NULL, &s) != 0) {
        ok(0, "open");
        return done_testing();
    }
    test_submit_and_priority(s);
    test_metrics(s);
    test_recover_event(s);
    store_close(s);
    return done_testing();
}
