/*
 * test_api_restart: durability across daemon restarts. With one worker, a running job and a
 * queued one survive SIGTERM (exit 0, checkpoint written) and both finish after a restart
 * on the same data dir, the first resumed from its checkpoint (attempt 2) and each run to
 * completion exactly once. A second daemon on a busy data dir exits 1. After kill -9 a
 * running job is recovered and finishes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "tap.h"

/* A few seconds of training (about 4 s on an idle core): still running when we stop the
 * daemon right after its first batch, short enough to finish after the restart. */
static const char SPEC_LONG[] =
    "{\"name\":\"resumable\",\"batch_size\":64,\"model\":{\"arch\":\"mlp\",\"hidden\":[256]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":20000,\"n_valid\":256,\"features\":32,"
    "\"classes\":4},"
    "\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":16,\"lr_max\":0.003},{\"op\":\"save\"}]}";
#define LONG_EPOCHS 16

static const char SPEC_SMALL[] =
    "{\"name\":\"queued\",\"model\":{\"arch\":\"mlp\",\"hidden\":[16]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":256,\"n_valid\":64,\"features\":8},"
    "\"stages\":[{\"op\":\"fit\",\"epochs\":2,\"lr\":0.01},{\"op\":\"save\"}]}";

static const char *const ONE_WORKER[] = {"--workers", "1", NULL};

/* What a job's event log says about its history. */
typedef struct history {
    int running;          /* state events entering "running" */
    int queued_after_run; /* state events back to "queued" after a run */
    int final_states;     /* state events entering a final state */
    bool resumed;         /* a running event after a requeue says it resumed */
    bool interrupted;     /* some event mentions the interruption */
    int epochs[64];       /* epoch events per epoch index of stage 0 */
    int weights;          /* artifact events of kind weights */
} history;

static const char *event_state(const json_t *ev)
{
    const char *st = th_json_str(json_object_get(ev, "data"), "state");
    return st ? st : "";
}

static bool read_history(const th_daemon *d, long long id, history *h)
{
    memset(h, 0, sizeof(*h));
    json_t *events = th_job_events_final(d, id, 10);
    if (!events)
        return false;
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        const char *type = th_json_str(ev, "type");
        const char *msg = th_json_str(ev, "message");
        const json_t *data = json_object_get(ev, "data");
        if (msg && strstr(msg, "interrupt"))
            h->interrupted = true;
        if (!type)
            continue;
        if (strcmp(type, "state") == 0) {
            const char *st = event_state(ev);
            if (strcmp(st, "running") == 0) {
                h->running++;
                if (h->queued_after_run > 0 && (json_is_true(json_object_get(data, "resumed")) ||
                                                (msg && strstr(msg, "resum"))))
                    h->resumed = true;
            } else if (strcmp(st, "queued") == 0 && h->running > 0) {
                h->queued_after_run++;
            } else if (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0 ||
                       strcmp(st, "cancelled") == 0) {
                h->final_states++;
            }
        } else if (strcmp(type, "epoch") == 0) {
            long long e = th_json_int(data, "epoch", -1);
            if (th_json_int(data, "stage", 0) == 0 && e >= 0 && e < 64)
                h->epochs[e]++;
        } else if (strcmp(type, "artifact") == 0) {
            const char *kind = th_json_str(data, "kind");
            if (kind && strcmp(kind, "weights") == 0)
                h->weights++;
        }
    }
    json_decref(events);
    return true;
}

static int count_weights(const th_daemon *d, long long id)
{
    char path[96];
    snprintf(path, sizeof(path), "/v1/jobs/%lld/checkpoints", id);
    th_resp r;
    th_get(d, path, &r);
    int n = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(r.json, "data"), i, c)
    {
        const char *kind = th_json_str(c, "kind");
        if (kind && strcmp(kind, "weights") == 0)
            n++;
    }
    th_resp_fini(&r);
    return n;
}

static void check_finished(const json_t *job, const char *what, int attempt)
{
    is_str(th_json_str(job, "state"), "succeeded", "%s succeeded", what);
    is_int(th_json_int(job, "attempt", -1), attempt, "%s attempt %d", what, attempt);
    is_near(th_json_num(job, "progress", -1), 1.0, 1e-9, "%s progress 1", what);
    ok(json_is_null(json_object_get(job, "error")), "%s error null", what);
    ok(json_is_null(json_object_get(job, "queue_position")), "%s queue_position null", what);
    const char *s = th_json_str(job, "started_at"), *f = th_json_str(job, "finished_at");
    ok(s && f && strcmp(s, f) <= 0, "%s started_at <= finished_at", what);
}

static void sigterm_case(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "restart") != 0 || th_daemon_start(&d, ONE_WORKER, 20) != 0) {
        ok(0, "daemon starts");
        th_daemon_fini(&d, true);
        return;
    }
    long long a = th_job_submit(&d, SPEC_LONG, NULL);
    long long b = th_job_submit(&d, SPEC_SMALL, NULL);
    ok(a > 0 && b > 0, "submitted job A (%lld, long) and B (%lld)", a, b);
    json_t *run = a > 0 ? th_job_wait_step(&d, a, 1, 60) : NULL;
    ok(run != NULL, "A is running");
    json_decref(run);

    /* Busy data dir: a second daemon must refuse it. */
    int second = th_daemon_run_once(&d, NULL, 20);
    is_int(second, 1, "a second daemon on the same data dir exits 1");
    ok(th_daemon_log_contains(&d, "lock") || th_daemon_log_contains(&d, "another"),
       "  with a message about the lock");

    char path[96];
    th_resp r;
    snprintf(path, sizeof(path), "/v1/jobs/%lld", b);
    th_get(&d, path, &r);
    is_str(th_json_str(r.json, "state"), "queued", "B is queued behind A");
    th_resp_fini(&r);

    is_int(th_daemon_stop(&d, 30), 0, "SIGTERM while A runs -> exit 0");

    char ckpt[800];
    snprintf(ckpt, sizeof(ckpt), "%s/jobs/%lld/checkpoint.safetensors", d.data_dir, a);
    size_t n_tensors = 0;
    ok(th_safetensors_valid(ckpt, &n_tensors), "A's checkpoint.safetensors was written");

    if (th_daemon_start(&d, ONE_WORKER, 20) != 0) {
        ok(0, "daemon restarts on the same data dir");
        th_daemon_fini(&d, true);
        return;
    }
    json_t *ja = th_job_wait(&d, a, "succeeded|failed|cancelled", 120, NULL);
    json_t *jb = th_job_wait(&d, b, "succeeded|failed|cancelled", 120, NULL);
    check_finished(ja, "A", 2);
    check_finished(jb, "B", 1);
    json_decref(ja);
    json_decref(jb);

    history h;
    ok(read_history(&d, a, &h), "A's events");
    is_int(h.running, 2, "A entered running twice");
    is_int(h.queued_after_run, 1, "A went back to queued once (the interruption)");
    ok(h.interrupted, "A's events mention the interruption");
    ok(h.resumed, "A's second run says it resumed from the checkpoint");
    is_int(h.final_states, 1, "A reached a final state once");
    bool once = true;
    for (int e = 0; e < LONG_EPOCHS; e++)
        if (h.epochs[e] != 1) {
            diag("epoch %d reported %d times", e, h.epochs[e]);
            once = false;
        }
    ok(once, "each of A's %d epochs ran to completion exactly once", LONG_EPOCHS);
    is_int(h.weights, 1, "A saved its weights once");
    is_int(count_weights(&d, a), 1, "A lists one weights file");

    ok(read_history(&d, b, &h), "B's events");
    is_int(h.running, 1, "B ran once");
    is_int(h.final_states, 1, "B reached a final state once");
    is_int(h.epochs[0] + h.epochs[1], 2, "B's two epochs each once");
    is_int(count_weights(&d, b), 1, "B lists one weights file");

    th_get(&d, "/v1/jobs?state=succeeded", &r);
    is_int(json_array_size(json_object_get(r.json, "data")), 2, "both listed as succeeded");
    th_resp_fini(&r);
    th_get(&d, "/v1/jobs?state=running", &r);
    is_int(json_array_size(json_object_get(r.json, "data")), 0, "nothing left running");
    th_resp_fini(&r);

    is_int(th_daemon_stop(&d, 30), 0, "second SIGTERM -> exit 0");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report (sigterm case)");
}

static void kill9_case(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "kill9") != 0 || th_daemon_start(&d, ONE_WORKER, 20) != 0) {
        ok(0, "daemon starts");
        th_daemon_fini(&d, true);
        return;
    }
    long long c = th_job_submit(&d, SPEC_LONG, NULL);
    json_t *run = c > 0 ? th_job_wait_step(&d, c, 1, 60) : NULL;
    ok(run != NULL, "job C is running");
    json_decref(run);
    th_daemon_kill9(&d);
    ok(d.pid == 0, "kill -9 while C runs");

    if (th_daemon_start(&d, ONE_WORKER, 20) != 0) {
        ok(0, "daemon restarts after kill -9");
        th_daemon_fini(&d, true);
        return;
    }
    json_t *jc = th_job_wait(&d, c, "succeeded|failed|cancelled", 120, NULL);
    check_finished(jc, "C (recovered)", 2);
    json_decref(jc);
    history h;
    ok(read_history(&d, c, &h), "C's events");
    is_int(h.running, 2, "C entered running twice (before and after the crash)");
    bool all = true;
    for (int e = 0; e < LONG_EPOCHS; e++)
        all = all && h.epochs[e] >= 1;
    ok(all, "every epoch of C completed");
    is_int(count_weights(&d, c), 1, "C lists one weights file");

    is_int(th_daemon_stop(&d, 30), 0, "SIGTERM -> exit 0");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report (kill -9 case)");
}

int main(void)
{
    sigterm_case();
    kill9_case();
    return done_testing();
}
