/*
 * test_api_v1: the v1 API additions against a real thawd with one worker: operations
 * endpoints (/readyz, /metrics, /openapi.yaml), submission (dry run, Idempotency-Key,
 * priority, field errors, JSON depth), the job detail (stage timeline, ETag + If-None-Match
 * -> 304, CORS), metrics history with downsampling, lr_find as JSON and SVG, events (pages
 * with Link, Server-Sent Events read as a client would, reconnect with Last-Event-ID,
 * heartbeats, live delivery), queue position under priorities, retry, delete, checkpoint
 * Range downloads, and kill -9 recovery as the job's events tell it.
 */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

/* lr_find, then a one-cycle fit at the valley suggestion with a slice, then save. */
static const char SPEC_LR[] =
    "{\"name\":\"lr\",\"model\":{\"arch\":\"mlp\",\"hidden\":[16]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":512,\"n_valid\":64,\"features\":8},"
    "\"stages\":[{\"op\":\"lr_find\",\"num_it\":20},{\"op\":\"fit_one_cycle\",\"epochs\":2,"
    "\"lr_max\":{\"suggestion\":\"valley\",\"slice_divide\":10}},{\"op\":\"save\"}]}";

/* Minutes of training: runs through the queue and recovery checks, then is cancelled. */
static const char SPEC_LONG[] =
    "{\"name\":\"long\",\"batch_size\":64,\"model\":{\"arch\":\"mlp\",\"hidden\":[256]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":16000,\"n_valid\":256,\"features\":32,"
    "\"classes\":4},\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":400,\"lr_max\":0.003},"
    "{\"op\":\"save\"}]}";

static const char SPEC_TINY[] =
    "{\"name\":\"tiny\",\"model\":{\"arch\":\"mlp\",\"hidden\":[8]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":128,\"n_valid\":32,\"features\":4},"
    "\"stages\":[{\"op\":\"fit\",\"epochs\":1}]}";

static const char *const ONE_WORKER[] = {"--workers", "1", NULL};

static bool contains(const th_resp *r, const char *needle)
{
    return r->body && strstr(r->body, needle) != NULL;
}

static void operations(th_daemon *d)
{
    th_resp r;
    th_get(d, "/readyz", &r);
    is_int(r.status, 200, "/readyz: 200 while serving");
    ok(r.json &&
           strcmp(th_json_str(r.json, "status") ? th_json_str(r.json, "status") : "", "ready") == 0,
       "/readyz: status ready");
    th_resp_fini(&r);
    th_get(d, "/openapi.yaml", &r);
    is_int(r.status, 200, "/openapi.yaml: 200");
    ok(th_media_type_is(r.content_type, "application/yaml"), "/openapi.yaml: application/yaml");
    ok(r.body && strncmp(r.body, "openapi: 3.1", 12) == 0,
       "/openapi.yaml: an OpenAPI 3.1 document");
    th_resp_fini(&r);
    th_get(d, "/metrics", &r);
    is_int(r.status, 200, "/metrics: 200");
    ok(th_media_type_is(r.content_type, "text/plain"), "/metrics: text/plain");
    ok(contains(&r, "thawd_jobs{state=\"queued\"}"), "/metrics: jobs by state");
    ok(contains(&r, "thawd_queue_depth "), "/metrics: queue depth");
    ok(contains(&r, "thawd_train_steps_per_second "), "/metrics: step rate");
    ok(contains(&r, "thawd_http_requests_total{method=\"GET\",route=\"/readyz\",code=\"200\"} 1"),
       "/metrics: requests by route and status");
    th_resp_fini(&r);
}

static void submission(th_daemon *d)
{
    th_resp r;
    th_post_json(d, "/v1/jobs", "{\"priority\":\"high\",\"data\":{\"source\":\"synthetic\"}}", &r);
    ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/priority"),
       "priority of the wrong type: 422 at /priority");
    th_resp_fini(&r);
    th_post_json(d, "/v1/jobs", "{\"priority\":101}", &r);
    ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/priority"),
       "priority out of range: 422 at /priority");
    th_resp_fini(&r);
    char deep[200];
    int n = 0;
    n += snprintf(deep + n, sizeof deep - (size_t)n, "{\"name\":");
    for (int i = 0; i < 40; i++)
        deep[n++] = '[';
    for (int i = 0; i < 40; i++)
        deep[n++] = ']';
    snprintf(deep + n, sizeof deep - (size_t)n, "}");
    th_post_json(d, "/v1/jobs", deep, &r);
    ok(th_is_problem(&r, 400, "invalid-json"), "JSON nested 41 levels: 400");
    th_resp_fini(&r);
    th_post_json(d, "/v1/jobs?dry_run=maybe", SPEC_LR, &r);
    ok(th_is_problem(&r, 422, "validation-error"), "dry_run=maybe: 422");
    th_resp_fini(&r);

    th_post_json(d, "/v1/jobs?dry_run=true", SPEC_LR, &r);
    is_int(r.status, 200, "dry run: 200");
    json_t *stages = json_object_get(r.json, "stages");
    is_int((long long)json_array_size(stages), 3, "dry run: three planned stages");
    ok(json_is_object(json_object_get(r.json, "spec")) &&
           json_is_object(json_object_get(json_object_get(r.json, "spec"), "optimizer")),
       "dry run: the normalised spec has the defaults filled");
    ok(th_json_str(json_array_get(stages, 1), "op") &&
           strcmp(th_json_str(json_array_get(stages, 1), "op"), "fit_one_cycle") == 0,
       "dry run: stage 1 is fit_one_cycle");
    th_resp_fini(&r);
    th_get(d, "/v1/jobs", &r);
    is_int((long long)json_array_size(json_object_get(r.json, "data")), 0,
           "a dry run creates no job");
    th_resp_fini(&r);
}

/* Submits SPEC_LR twice with one Idempotency-Key; returns the job id. */
static long long idempotent_submit(th_daemon *d)
{
    const char *const key[] = {"Idempotency-Key: test-key-1", NULL};
    th_resp r1, r2, r3;
    th_request_ex(d, "POST", "/v1/jobs", key, "application/json", SPEC_LR, strlen(SPEC_LR), &r1);
    is_int(r1.status, 201, "submit with Idempotency-Key: 201");
    long long id = th_json_int(r1.json, "id", -1);
    th_request_ex(d, "POST", "/v1/jobs", key, "application/json", SPEC_LR, strlen(SPEC_LR), &r2);
    is_int(r2.status, 201, "the same request again: 201");
    is_int(th_json_int(r2.json, "id", -2), id, "the same request again: the same job");
    char v[32];
    ok(th_resp_header(&r2, "Idempotent-Replayed", v, sizeof v) && strcmp(v, "true") == 0,
       "the replay says Idempotent-Replayed: true");
    th_request_ex(d, "POST", "/v1/jobs", key, "application/json", SPEC_TINY, strlen(SPEC_TINY),
                  &r3);
    ok(th_is_problem(&r3, 422, "validation-error"), "the key with another request: 422");
    th_resp_fini(&r1);
    th_resp_fini(&r2);
    th_resp_fini(&r3);
    th_resp r;
    th_get(d, "/v1/jobs", &r);
    is_int((long long)json_array_size(json_object_get(r.json, "data")), 1,
           "one job exists after three submissions with the key");
    th_resp_fini(&r);
    return id;
}

static void detail_and_polling(th_daemon *d, long long id)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    th_resp r;
    th_get(d, path, &r);
    is_int(r.status, 200, "job detail: 200");
    json_t *stages = json_object_get(r.json, "stages");
    is_int((long long)json_array_size(stages), 3, "detail: three stages in the timeline");
    bool all_done = true;
    for (size_t i = 0; i < json_array_size(stages); i++) {
        json_t *s = json_array_get(stages, i);
        all_done = all_done && th_json_str(s, "state") &&
                   strcmp(th_json_str(s, "state"), "done") == 0 && th_json_str(s, "started_at") &&
                   th_json_str(s, "finished_at") && th_json_int(s, "index", -1) == (long long)i;
    }
    ok(all_done, "detail: every stage done with start and end times");
    ok(json_is_integer(json_object_get(r.json, "priority")), "detail: priority");
    ok(json_is_null(json_object_get(r.json, "eta_seconds")), "detail: no ETA once finished");
    ok(r.etag[0] == '"', "detail: a strong ETag");
    char inm[160];
    snprintf(inm, sizeof inm, "If-None-Match: %s", r.etag);
    th_resp_fini(&r);
    const char *const h304[] = {inm, "Origin: http://dashboard.example", NULL};
    th_request_ex(d, "GET", path, h304, NULL, NULL, 0, &r);
    is_int(r.status, 304, "If-None-Match with the ETag: 304");
    is_int((long long)r.body_len, 0, "304: no body");
    char v[128];
    ok(th_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof v) && strcmp(v, "*") == 0,
       "CORS: Access-Control-Allow-Origin on a cross-origin poll");
    ok(th_resp_header(&r, "Access-Control-Expose-Headers", v, sizeof v) && strstr(v, "ETag"),
       "CORS: ETag is exposed to the dashboard");
    th_resp_fini(&r);
    const char *const hold[] = {"If-None-Match: \"0000\"", NULL};
    th_request_ex(d, "GET", path, hold, NULL, NULL, 0, &r);
    is_int(r.status, 200, "a stale ETag: 200 with the body");
    th_resp_fini(&r);
    const char *const pre[] = {"Origin: http://dashboard.example",
                               "Access-Control-Request-Method: DELETE", NULL};
    th_request_ex(d, "OPTIONS", path, pre, NULL, NULL, 0, &r);
    is_int(r.status, 204, "CORS preflight: 204");
    ok(th_resp_header(&r, "Access-Control-Allow-Methods", v, sizeof v) && strstr(v, "GET") &&
           strstr(v, "DELETE"),
       "preflight lists the path's methods");
    ok(th_resp_header(&r, "Access-Control-Allow-Headers", v, sizeof v) &&
           strstr(v, "If-None-Match") && strstr(v, "Authorization"),
       "preflight allows the polling and auth headers");
    th_resp_fini(&r);
}

static void metrics_and_lr_find(th_daemon *d, long long id)
{
    char path[128];
    th_resp r;
    snprintf(path, sizeof path, "/v1/jobs/%lld/metrics", id);
    th_get(d, path, &r);
    is_int(r.status, 200, "metrics: 200");
    json_t *epochs = json_object_get(r.json, "epochs");
    json_t *batches = json_object_get(r.json, "batches");
    is_int((long long)json_array_size(epochs), 2, "metrics: one row per epoch");
    ok(json_is_number(json_object_get(json_array_get(epochs, 1), "valid_loss")),
       "metrics: epoch rows carry valid_loss");
    long long total = th_json_int(batches, "total", 0);
    ok(total >= 20 + 2 * 8, "metrics: every batch recorded (lr_find and fit), got %lld", total);
    is_int((long long)json_array_size(json_object_get(batches, "data")), total,
           "metrics: all rows when under max_points");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/metrics?max_points=4", id);
    th_get(d, path, &r);
    batches = json_object_get(r.json, "batches");
    ok(json_array_size(json_object_get(batches, "data")) <= 4 &&
           json_array_size(json_object_get(batches, "data")) >= 2,
       "max_points=4: at most 4 points");
    ok(th_json_int(batches, "bucket", 0) > 1, "max_points=4: rows averaged in buckets");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/metrics?max_points=1", id);
    th_get(d, path, &r);
    ok(th_is_problem(&r, 422, "validation-error"), "max_points=1: 422");
    th_resp_fini(&r);

    snprintf(path, sizeof path, "/v1/jobs/%lld/lr_find", id);
    th_get(d, path, &r);
    is_int(r.status, 200, "lr_find: 200");
    json_t *res = json_array_get(json_object_get(r.json, "data"), 0);
    is_int(th_json_int(res, "stage", -1), 0, "lr_find: result of stage 0");
    ok(json_array_size(json_object_get(res, "points")) >= 5, "lr_find: the curve");
    double valley = th_json_num(json_object_get(res, "suggestions"), "valley", NAN);
    ok(valley > 0, "lr_find: a valley suggestion");
    json_t *used = json_array_get(json_object_get(res, "used_by"), 0);
    is_int(th_json_int(used, "stage", -1), 1, "lr_find: used by stage 1");
    is_near(th_json_num(used, "lr", NAN), valley, valley * 1e-6, "the LR used is the valley");
    is_near(json_number_value(json_array_get(json_object_get(used, "lr_slice"), 0)), valley / 10,
            valley * 1e-6, "the slice starts at valley / slice_divide");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/lr_find.svg", id);
    th_get(d, path, &r);
    is_int(r.status, 200, "lr_find.svg: 200");
    ok(th_media_type_is(r.content_type, "image/svg+xml"), "lr_find.svg: image/svg+xml");
    ok(contains(&r, "<svg") && contains(&r, "<polyline") && contains(&r, "class=\"used\""),
       "lr_find.svg: the curve and the LR used");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/lr_find.svg?index=3", id);
    th_get(d, path, &r);
    ok(th_is_problem(&r, 404, "not-found"), "lr_find.svg of a missing result: 404");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/summary", id);
    th_get(d, path, &r);
    is_int(r.status, 200, "summary: 200");
    /* mlp 8 -> 16 -> 4: (8 * 16 + 16) + (16 * 4 + 4) parameters */
    is_int(th_json_int(r.json, "total_params", -1), 212, "summary: total parameters");
    json_t *ish = json_object_get(r.json, "input_shape");
    ok(json_integer_value(json_array_get(ish, 0)) == 64 &&
           json_integer_value(json_array_get(ish, 1)) == 8,
       "summary: input shape batch x features");
    ok(th_json_str(r.json, "text") && strstr(th_json_str(r.json, "text"), "Total params: 212"),
       "summary: fastai's table as text");
    th_resp_fini(&r);
    th_get(d, "/v1/jobs/99999/summary", &r);
    ok(th_is_problem(&r, 404, "not-found"), "summary of an unknown job: 404");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/lr_find.svg?index=x", id);
    th_get(d, path, &r);
    ok(th_is_problem(&r, 422, "validation-error"), "lr_find.svg?index=x: 422");
    th_resp_fini(&r);
}

static void events_and_sse(th_daemon *d, long long id)
{
    char path[128];
    th_resp r;
    snprintf(path, sizeof path, "/v1/jobs/%lld/events?limit=2", id);
    th_get(d, path, &r);
    char link[256];
    ok(th_resp_header(&r, "Link", link, sizeof link) && strstr(link, "rel=\"next\"") &&
           strstr(link, "after="),
       "events page: Link rel=next");
    th_resp_fini(&r);

    json_t *all = th_job_events_final(d, id, 30);
    size_t n_all = json_array_size(all);
    snprintf(path, sizeof path, "/v1/jobs/%lld/events", id);
    th_sse_read(d, path, NULL, 0, 20000, &r);
    is_int(r.status, 200, "SSE: 200");
    ok(th_media_type_is(r.content_type, "text/event-stream"), "SSE: text/event-stream");
    json_t *evs = th_sse_parse(r.body ? r.body : "", NULL);
    is_int((long long)json_array_size(evs), (long long)n_all,
           "SSE of a finished job: every event, then the stream ends");
    ok(contains(&r, "retry: "), "SSE: a retry field");
    bool ids_ok = true, same = true;
    for (size_t i = 0; i < json_array_size(evs); i++) {
        json_t *e = json_array_get(evs, i);
        const char *sid = th_json_str(e, "id");
        json_t *data = json_object_get(e, "data");
        long long jid = th_json_int(json_array_get(all, i), "id", -1);
        ids_ok = ids_ok && sid && atoll(sid) == th_json_int(data, "id", -2);
        same = same && jid == th_json_int(data, "id", -3) && th_json_str(e, "event") &&
               th_json_str(data, "type") &&
               strcmp(th_json_str(e, "event"), th_json_str(data, "type")) == 0;
    }
    ok(ids_ok, "SSE: each record's id is its event id");
    ok(same, "SSE: the same events, in order, as the JSON list");
    th_resp_fini(&r);
    if (n_all > 3) {
        char last[64];
        const char *cut = th_json_str(json_array_get(evs, 2), "id");
        snprintf(last, sizeof last, "Last-Event-ID: %s", cut ? cut : "0");
        const char *const h[] = {last, NULL};
        th_sse_read(d, path, h, 0, 20000, &r);
        json_t *rest = th_sse_parse(r.body ? r.body : "", NULL);
        is_int((long long)json_array_size(rest), (long long)n_all - 3,
               "reconnect with Last-Event-ID: only the later events");
        ok(th_json_int(json_object_get(json_array_get(rest, 0), "data"), "id", 0) >
               (cut ? atoll(cut) : 0),
           "reconnect: replay starts after the last id seen");
        json_decref(rest);
        th_resp_fini(&r);
    }
    const char *const bad[] = {"Last-Event-ID: abc", NULL};
    th_sse_read(d, path, bad, 0, 5000, &r);
    ok(th_is_problem(&r, 400, "invalid-json") || r.status == 400, "Last-Event-ID: abc -> 400");
    th_resp_fini(&r);
    json_decref(evs);
    json_decref(all);
}

/* Queue under priorities, live SSE, heartbeats, retry and delete conflicts. */
static void queue_and_actions(th_daemon *d, long long done_id, long long *long_id)
{
    long long l = th_job_submit(d, SPEC_LONG, NULL);
    json_t *run = l > 0 ? th_job_wait_step(d, l, 1, 60) : NULL;
    ok(run != NULL, "a long job is running");
    json_decref(run);
    *long_id = l;
    long long p0 = th_job_submit(d, SPEC_TINY, NULL);
    char body[600];
    snprintf(body, sizeof body, "{\"priority\":5,%s", SPEC_TINY + 1);
    long long p5 = th_job_submit(d, body, NULL);
    th_resp r;
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%lld", p5);
    th_get(d, path, &r);
    is_int(th_json_int(r.json, "queue_position", -1), 0, "priority 5 is first in the queue");
    is_int(th_json_int(r.json, "priority", -1), 5, "the job shows its priority");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld", p0);
    th_get(d, path, &r);
    is_int(th_json_int(r.json, "queue_position", -1), 1, "priority 0, submitted first, is second");
    th_resp_fini(&r);

    /* heartbeats while the job waits */
    snprintf(path, sizeof path, "/v1/jobs/%lld/events?heartbeat=1", p0);
    th_sse_read(d, path, NULL, 0, 2600, &r);
    int comments = 0;
    json_t *evs = th_sse_parse(r.body ? r.body : "", &comments);
    ok(comments >= 1, "SSE heartbeat comments on a quiet stream (%d)", comments);
    json_decref(evs);
    th_resp_fini(&r);

    /* live: wait for events that do not exist yet */
    json_t *now = th_job_events(d, l);
    int have = (int)json_array_size(now);
    json_decref(now);
    snprintf(path, sizeof path, "/v1/jobs/%lld/events", l);
    th_sse_read(d, path, NULL, have + 2, 60000, &r);
    evs = th_sse_parse(r.body ? r.body : "", NULL);
    ok((int)json_array_size(evs) >= have + 2, "SSE delivers events as they happen (%zu of %d)",
       json_array_size(evs), have + 2);
    json_decref(evs);
    th_resp_fini(&r);

    snprintf(path, sizeof path, "/v1/jobs/%lld", l);
    th_request(d, "DELETE", path, NULL, NULL, 0, &r);
    ok(th_is_problem(&r, 409, "conflict"), "delete a running job: 409");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/retry", p0);
    th_post_json(d, path, NULL, &r);
    ok(th_is_problem(&r, 409, "conflict"), "retry a queued job: 409");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/retry", done_id);
    th_post_json(d, path, NULL, &r);
    ok(th_is_problem(&r, 409, "conflict"), "retry a succeeded job: 409");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", p0);
    th_post_json(d, path, NULL, &r);
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/retry", p0);
    th_post_json(d, path, NULL, &r);
    is_int(r.status, 200, "retry a cancelled job: 200");
    ok(th_json_str(r.json, "state") && strcmp(th_json_str(r.json, "state"), "queued") == 0,
       "retried job is queued again");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/retry", 999999LL);
    th_post_json(d, path, NULL, &r);
    ok(th_is_problem(&r, 404, "not-found"), "retry an unknown job: 404");
    th_resp_fini(&r);
}

static void checkpoints_and_delete(th_daemon *d, long long id)
{
    char path[160];
    th_resp r;
    snprintf(path, sizeof path, "/v1/jobs/%lld/checkpoints", id);
    th_get(d, path, &r);
    json_t *model = NULL;
    json_t *data = json_object_get(r.json, "data");
    for (size_t i = 0; i < json_array_size(data); i++)
        if (th_json_str(json_array_get(data, i), "name") &&
            strcmp(th_json_str(json_array_get(data, i), "name"), "model") == 0)
            model = json_incref(json_array_get(data, i));
    th_resp_fini(&r);
    ok(model != NULL, "the job saved 'model'");
    long long size = th_json_int(model, "size", 0);
    char sha[80];
    snprintf(sha, sizeof sha, "\"%s\"",
             th_json_str(model, "sha256") ? th_json_str(model, "sha256") : "");
    json_decref(model);
    snprintf(path, sizeof path, "/v1/jobs/%lld/checkpoints/model", id);
    const char *const range[] = {"Range: bytes=0-7", NULL};
    th_request_ex(d, "GET", path, range, NULL, NULL, 0, &r);
    is_int(r.status, 206, "Range bytes=0-7: 206");
    is_int((long long)r.body_len, 8, "206: eight bytes");
    char v[128], want[128];
    snprintf(want, sizeof want, "bytes 0-7/%lld", size);
    ok(th_resp_header(&r, "Content-Range", v, sizeof v) && strcmp(v, want) == 0,
       "206: Content-Range %s", want);
    ok(strcmp(r.etag, sha) == 0, "checkpoint ETag is its sha256");
    th_resp_fini(&r);
    char tail[64];
    snprintf(tail, sizeof tail, "Range: bytes=%lld-", size - 4);
    const char *const rt[] = {tail, NULL};
    th_request_ex(d, "GET", path, rt, NULL, NULL, 0, &r);
    is_int((long long)r.body_len, 4, "Range from size-4: the last four bytes");
    th_resp_fini(&r);
    snprintf(tail, sizeof tail, "Range: bytes=%lld-", size + 10);
    th_request_ex(d, "GET", path, rt, NULL, NULL, 0, &r);
    ok(th_is_problem(&r, 416, "range-not-satisfiable"), "a range past the end: 416 problem");
    ok(th_resp_header(&r, "Content-Range", v, sizeof v) && strncmp(v, "bytes */", 8) == 0,
       "416: Content-Range bytes */size");
    th_resp_fini(&r);
    char inm[120];
    snprintf(inm, sizeof inm, "If-None-Match: %s", sha);
    const char *const hi[] = {inm, NULL};
    th_request_ex(d, "GET", path, hi, NULL, NULL, 0, &r);
    is_int(r.status, 304, "checkpoint with If-None-Match its sha256: 304");
    th_resp_fini(&r);

    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    th_request(d, "DELETE", path, NULL, NULL, 0, &r);
    is_int(r.status, 204, "delete a finished job: 204");
    th_resp_fini(&r);
    th_get(d, path, &r);
    ok(th_is_problem(&r, 404, "not-found"), "deleted job: 404");
    th_resp_fini(&r);
    th_request(d, "DELETE", path, NULL, NULL, 0, &r);
    ok(th_is_problem(&r, 404, "not-found"), "delete again: 404");
    th_resp_fini(&r);
    char dir[800];
    snprintf(dir, sizeof dir, "%s/jobs/%lld", d->data_dir, id);
    struct stat sb;
    ok(stat(dir, &sb) != 0, "the job's files are gone");
}

/* kill -9 while the long job runs; after the restart it runs again (attempt 2) and its
 * events say it was recovered; then it is cancelled to keep the test short. */
static void recovery(th_daemon *d, long long l)
{
    json_t *run = th_job_wait_step(d, l, 1, 60);
    ok(run != NULL, "the long job runs before the crash");
    json_decref(run);
    th_daemon_kill9(d);
    if (th_daemon_start(d, ONE_WORKER, 20) != 0) {
        ok(0, "daemon restarts after kill -9");
        return;
    }
    json_t *j = th_job_wait_step(d, l, 1, 120);
    ok(j != NULL, "the recovered job runs again after the restart");
    ok(th_json_int(j, "attempt", 0) >= 2, "as a second attempt");
    json_decref(j);
    char path[96];
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", l);
    th_resp r;
    th_post_json(d, path, NULL, &r);
    th_resp_fini(&r);
    j = th_job_wait(d, l, "succeeded|failed|cancelled", 120, NULL);
    json_decref(j);
    json_t *evs = th_job_events_final(d, l, 30);
    bool recovered = false;
    for (size_t i = 0; i < json_array_size(evs); i++) {
        json_t *data = json_object_get(json_array_get(evs, i), "data");
        if (json_is_true(json_object_get(data, "recovered")))
            recovered = true;
    }
    ok(recovered, "its events record the recovery after the crash");
    json_decref(evs);
}

static void *term_later(void *arg)
{
    const th_daemon *d = arg;
    th_sleep_ms(500);
    kill(d->pid, SIGTERM);
    return NULL;
}

/* SIGTERM while a client holds a live (mostly suspended) event stream: the daemon ends the
 * stream and still exits 0 (suspended connections are resumed before MHD stops). */
static void shutdown_with_stream(th_daemon *d)
{
    long long id = th_job_submit(d, SPEC_LONG, NULL);
    json_t *run = id > 0 ? th_job_wait_step(d, id, 1, 60) : NULL;
    ok(run != NULL, "a job runs while a client streams its events");
    json_decref(run);
    char path[96];
    snprintf(path, sizeof path, "/v1/jobs/%lld/events?after=999999999", id);
    pthread_t t;
    bool started = pthread_create(&t, NULL, term_later, d) == 0;
    th_resp r;
    th_sse_read(d, path, NULL, 0, 60000, &r);
    if (started)
        pthread_join(t, NULL);
    /* the stream ends cleanly or is cut when MHD stops; either way the read returns */
    ok(r.body && strstr(r.body, "retry: "), "the stream had started");
    th_resp_fini(&r);
    /* wait for the exit without a second signal (the harness's stop would send one) */
    int status = -1;
    for (int i = 0; i < 600 && d->pid > 0; i++) {
        pid_t w = waitpid(d->pid, &status, WNOHANG);
        if (w == d->pid)
            d->pid = 0;
        else
            th_sleep_ms(100);
    }
    ok(d->pid == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "the daemon exits 0 after ending the stream");
}

int main(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "v1") != 0 || th_daemon_start(&d, ONE_WORKER, 20) != 0) {
        ok(0, "daemon starts");
        th_daemon_fini(&d, true);
        return done_testing();
    }
    operations(&d);
    submission(&d);
    long long id = idempotent_submit(&d);
    json_t *j = id > 0 ? th_job_wait(&d, id, "succeeded|failed|cancelled", 120, NULL) : NULL;
    ok(j && strcmp(th_json_str(j, "state") ? th_json_str(j, "state") : "", "succeeded") == 0,
       "the lr_find job succeeds");
    json_decref(j);
    detail_and_polling(&d, id);
    metrics_and_lr_find(&d, id);
    events_and_sse(&d, id);
    long long l = 0;
    queue_and_actions(&d, id, &l);
    checkpoints_and_delete(&d, id);
    if (l > 0)
        recovery(&d, l);
    shutdown_with_stream(&d);
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report");
    return done_testing();
}
