/*
 * test_api_cancel: POST /v1/jobs/{id}/cancel against a real thawd with one worker. A queued
 * job is cancelled at once and never runs; a running job gets cancel_requested and then
 * stops (its step does not advance by more than one epoch's batches after the cancel
 * returned); cancelling either again is a 409; the worker is free for the next job.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tap.h"

/* Long enough (many epochs of many batches) to still be running when we cancel it. */
static const char SPEC_LONG[] =
    "{\"name\":\"long\",\"batch_size\":64,\"model\":{\"arch\":\"mlp\",\"hidden\":[256,256]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":20000,\"n_valid\":256,\"features\":32,"
    "\"classes\":4},"
    "\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":200,\"lr_max\":0.001},{\"op\":\"save\"}]}";

static const char SPEC_SMALL[] =
    "{\"name\":\"small\",\"model\":{\"arch\":\"mlp\",\"hidden\":[16]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":256,\"n_valid\":64,\"features\":8},"
    "\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":0.01},{\"op\":\"save\"}]}";

static bool events_mention(const th_daemon *d, long long id, const char *type, const char *word,
                           bool wait_final)
{
    json_t *events = wait_final ? th_job_events_final(d, id, 10) : th_job_events(d, id);
    bool found = false;
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        const char *t = th_json_str(ev, "type");
        if (!t || strcmp(t, type) != 0)
            continue;
        char *txt = json_dumps(ev, 0);
        if (txt && strstr(txt, word))
            found = true;
        free(txt);
    }
    json_decref(events);
    return found;
}

/* Highest epoch index among a job's epoch events, -1 when none. */
static long long max_epoch_event(const th_daemon *d, long long id)
{
    json_t *events = th_job_events_final(d, id, 10);
    long long best = -1;
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        const char *t = th_json_str(ev, "type");
        long long e = th_json_int(json_object_get(ev, "data"), "epoch", -1);
        if (t && strcmp(t, "epoch") == 0 && e > best)
            best = e;
    }
    json_decref(events);
    return best;
}

int main(void)
{
    th_daemon d;
    static const char *const args[] = {"--workers", "1", NULL};
    if (th_daemon_init(&d, "cancel") != 0 || th_daemon_start(&d, args, 20) != 0) {
        ok(0, "daemon starts");
        th_daemon_fini(&d, true);
        return done_testing();
    }

    long long lng = th_job_submit(&d, SPEC_LONG, NULL);
    long long q = th_job_submit(&d, SPEC_SMALL, NULL);
    long long q2 = th_job_submit(&d, SPEC_SMALL, NULL);
    ok(lng > 0 && q > 0 && q2 > 0, "submitted a long job (%lld) and two small ones", lng);
    if (lng <= 0 || q <= 0 || q2 <= 0)
        goto stop;

    /* Wait until the long job trains, so the small one is surely still queued behind it. */
    json_t *running = th_job_wait_step(&d, lng, 1, 60);
    ok(running != NULL, "long job is running and training");
    long long batches = th_json_int(running, "batches", -1);
    ok(batches > 1, "running job reports batches per epoch (%lld)", batches);
    json_decref(running);

    /* ---- cancel the queued job ---- */
    char path[128];
    th_resp r;
    snprintf(path, sizeof(path), "/v1/jobs/%lld", q);
    th_get(&d, path, &r);
    is_str(th_json_str(r.json, "state"), "queued", "small job is queued behind the long one");
    is_int(th_json_int(r.json, "queue_position", -1), 0, "  at queue_position 0");
    th_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/jobs/%lld", q2);
    th_get(&d, path, &r);
    is_int(th_json_int(r.json, "queue_position", -1), 1, "the next queued job is at position 1");
    th_resp_fini(&r);

    snprintf(path, sizeof(path), "/v1/jobs/%lld/cancel", q);
    th_post_json(&d, path, NULL, &r);
    is_int(r.status, 200, "cancel queued job -> 200");
    is_str(th_json_str(r.json, "object"), "job", "cancel returns the job object");
    is_str(th_json_str(r.json, "state"), "cancelled", "a queued job is cancelled at once");
    ok(json_is_null(json_object_get(r.json, "queue_position")), "  queue_position null");
    th_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/jobs/%lld", q2);
    th_get(&d, path, &r);
    is_int(th_json_int(r.json, "queue_position", -1), 0,
           "the job queued behind it moves up to queue_position 0");
    th_resp_fini(&r);

    /* ---- cancel the running job ---- */
    snprintf(path, sizeof(path), "/v1/jobs/%lld/cancel", lng);
    th_post_json(&d, path, NULL, &r);
    is_int(r.status, 200, "cancel running job -> 200");
    const char *st = th_json_str(r.json, "state");
    ok(st && (strcmp(st, "running") == 0 || strcmp(st, "cancelled") == 0),
       "running job answers running (or already cancelled): %s", st ? st : "(null)");
    ok(json_is_true(json_object_get(r.json, "cancel_requested")), "cancel_requested true");
    long long step_at_cancel = th_json_int(r.json, "step", -1);
    long long epoch_at_cancel = th_json_int(r.json, "epoch", -1);
    th_resp_fini(&r);
    ok(step_at_cancel >= 1, "step at cancel %lld", step_at_cancel);

    json_t *job = th_job_wait(&d, lng, "succeeded|failed|cancelled", 60, NULL);
    is_str(th_json_str(job, "state"), "cancelled", "running job ends cancelled");
    long long final_step = th_json_int(job, "step", -1);
    ok(final_step >= step_at_cancel && final_step <= step_at_cancel + batches,
       "it stopped promptly: step %lld after cancel at %lld (<= one epoch of %lld batches)",
       final_step, step_at_cancel, batches);
    ok(th_json_num(job, "progress", 2) < 1.0, "cancelled job did not complete (progress %.3f)",
       th_json_num(job, "progress", 2));
    ok(json_is_string(json_object_get(job, "finished_at")), "finished_at set");
    json_decref(job);

    /* The cancelled job's files: no weights saved (the save stage never ran). */
    snprintf(path, sizeof(path), "/v1/jobs/%lld/checkpoints", lng);
    th_get(&d, path, &r);
    is_int(r.status, 200, "checkpoints of a cancelled job -> 200");
    bool has_weights = false;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(r.json, "data"), i, c)
    {
        const char *kind = th_json_str(c, "kind");
        if (kind && strcmp(kind, "weights") == 0)
            has_weights = true;
    }
    ok(!has_weights, "no weights saved for the cancelled job");
    th_resp_fini(&r);
    ok(events_mention(&d, lng, "state", "cancelled", true), "events record the cancellation");
    long long last_epoch = max_epoch_event(&d, lng);
    ok(last_epoch <= epoch_at_cancel,
       "no epoch completed after the one running at cancel (last epoch event %lld, epoch at "
       "cancel %lld)",
       last_epoch, epoch_at_cancel);

    /* ---- cancelling again is a conflict ---- */
    snprintf(path, sizeof(path), "/v1/jobs/%lld/cancel", lng);
    th_post_json(&d, path, NULL, &r);
    ok(th_is_problem(&r, 409, "conflict"), "cancel a cancelled running job -> 409");
    th_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/jobs/%lld/cancel", q);
    th_post_json(&d, path, NULL, &r);
    ok(th_is_problem(&r, 409, "conflict"), "cancel a cancelled queued job -> 409");
    th_resp_fini(&r);

    /* ---- the worker is free; the cancelled queued job never ran ---- */
    long long s = th_job_submit(&d, SPEC_SMALL, NULL);
    json_t *sj = s > 0 ? th_job_wait(&d, s, "succeeded|failed|cancelled", 60, NULL) : NULL;
    is_str(th_json_str(sj, "state"), "succeeded", "the next job runs and succeeds");
    json_decref(sj);

    snprintf(path, sizeof(path), "/v1/jobs/%lld", q);
    th_get(&d, path, &r);
    is_str(th_json_str(r.json, "state"), "cancelled", "cancelled queued job stays cancelled");
    ok(json_is_null(json_object_get(r.json, "started_at")), "  and never started");
    is_int(th_json_int(r.json, "attempt", -1), 0, "  attempt 0");
    is_int(th_json_int(r.json, "step", -1), 0, "  step 0");
    th_resp_fini(&r);
    ok(!events_mention(&d, q, "state", "running", false), "  no running state event");
    if (!events_mention(&d, q, "state", "cancelled", false))
        diag("note: the queued job's events do not record its cancellation");

    th_get(&d, "/v1/jobs?state=cancelled", &r);
    is_int(json_array_size(json_object_get(r.json, "data")), 2, "state=cancelled lists both");
    th_resp_fini(&r);

stop:
    is_int(th_daemon_stop(&d, 30), 0, "SIGTERM -> exit 0");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report in the daemon's log");
    return done_testing();
}
