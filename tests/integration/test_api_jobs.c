/*
 * test_api_jobs: the happy path of the jobs API against a real thawd. A small synthetic MLP
 * job is submitted (201 + Location), runs to "succeeded" with progress 1 and metrics, saves
 * weights that are listed with size/sha256 and download as a valid safetensors file; the
 * event log has state, stage, lr_find, epoch and artifact events; the job list filters by
 * state and pages with `after`/`has_more`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "tap.h"

static const char SPEC_A[] =
    "{\"name\":\"alpha\",\"seed\":1,\"batch_size\":32,"
    "\"model\":{\"arch\":\"mlp\",\"hidden\":[32]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":512,\"n_valid\":128,\"features\":16,"
    "\"classes\":4},"
    "\"stages\":[{\"op\":\"lr_find\",\"num_it\":20},"
    "{\"op\":\"fit_one_cycle\",\"epochs\":3,\"lr_max\":0.01},"
    "{\"op\":\"save\",\"name\":\"model\"}]}";

static const char SPEC_SMALL[] =
    "{\"seed\":2,\"model\":{\"arch\":\"mlp\",\"hidden\":[16]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":256,\"n_valid\":64,\"features\":8,"
    "\"classes\":3},"
    "\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":0.01},{\"op\":\"save\"}]}";

static bool is_hex64(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* RFC 3339 UTC with milliseconds: 2026-11-28T01:02:03.456Z */
static bool is_time(const json_t *v)
{
    const char *s = json_string_value(v);
    return s && strlen(s) == 24 && s[4] == '-' && s[10] == 'T' && s[19] == '.' && s[23] == 'Z';
}

/* Ids of a list response's data, newest first, into ids[]; returns the count or -1. */
static int list_ids(const th_resp *r, long long *ids, int cap)
{
    const json_t *data = json_object_get(r->json, "data");
    if (r->status != 200 || !json_is_array(data))
        return -1;
    int n = 0;
    size_t i;
    const json_t *job;
    json_array_foreach(data, i, job)
    {
        if (n < cap)
            ids[n] = th_json_int(job, "id", -1);
        n++;
    }
    return n;
}

static void check_submit_response(const th_resp *r, long long id)
{
    char want_loc[64];
    snprintf(want_loc, sizeof(want_loc), "/v1/jobs/%lld", id);
    is_int(r->status, 201, "POST /v1/jobs -> 201");
    ok(th_media_type_is(r->content_type, "application/json"), "201 body is application/json");
    is_str(r->location, want_loc, "Location names the new job");
    is_str(th_json_str(r->json, "object"), "job", "body is a job object");
    is_str(th_json_str(r->json, "state"), "queued", "a new job is queued");
    ok(is_time(json_object_get(r->json, "created_at")), "created_at is RFC 3339 UTC with ms");
    ok(json_is_null(json_object_get(r->json, "started_at")), "started_at null");
    ok(json_is_null(json_object_get(r->json, "finished_at")), "finished_at null");
    is_int(th_json_int(r->json, "attempt", -1), 0, "attempt 0");
    ok(json_is_false(json_object_get(r->json, "cancel_requested")), "cancel_requested false");
    ok(th_json_int(r->json, "queue_position", -1) >= 0, "queued job has a queue_position");
    ok(json_is_object(json_object_get(r->json, "spec")), "job carries its normalised spec");
}

/* A spec without stages gets the seed workflow, and it runs to the end. */
static void check_default_workflow(th_daemon *d)
{
    static const char *const want[] = {"freeze",  "lr_find",       "fit_one_cycle", "unfreeze",
                                       "lr_find", "fit_one_cycle", "save"};
    th_resp r;
    long long id = th_job_submit(d,
                                 "{\"model\":{\"arch\":\"mlp\",\"hidden\":[32]},"
                                 "\"data\":{\"source\":\"synthetic\",\"n_train\":512}}",
                                 &r);
    const json_t *stages = json_object_get(json_object_get(r.json, "spec"), "stages");
    bool same = json_array_size(stages) == 7;
    for (size_t i = 0; same && i < 7; i++)
        same = th_json_str(json_array_get(stages, i), "op") &&
               strcmp(th_json_str(json_array_get(stages, i), "op"), want[i]) == 0;
    ok(same, "no stages -> the seed workflow freeze, lr_find, fit_one_cycle, unfreeze, lr_find, "
             "fit_one_cycle, save");
    const json_t *lr = json_object_get(json_array_get(stages, 5), "lr_max");
    is_str(th_json_str(lr, "suggestion"), "valley", "  second fit uses the valley suggestion");
    th_resp_fini(&r);
    json_t *job = id > 0 ? th_job_wait(d, id, "succeeded|failed|cancelled", 120, NULL) : NULL;
    is_str(th_json_str(job, "state"), "succeeded", "  the default workflow succeeds");
    if (job && th_json_str(job, "error"))
        diag("error: %s", th_json_str(job, "error"));
    json_decref(job);
}

/* The fashion-mnist source: runs when Debian's files are installed, else 422. */
static void check_fashion_mnist(th_daemon *d)
{
    static const char spec[] =
        "{\"model\":{\"arch\":\"mlp\",\"hidden\":[32]},\"batch_size\":64,"
        "\"data\":{\"source\":\"fashion-mnist\",\"classes\":[0,1],\"per_class_limit\":100},"
        "\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":0.01},{\"op\":\"save\"}]}";
    struct stat st;
    bool have = stat("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", &st) == 0 ||
                stat("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte", &st) == 0;
    th_resp r;
    th_post_json(d, "/v1/jobs", spec, &r);
    if (!have) {
        ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/data"),
           "fashion-mnist without its files -> 422");
        th_resp_fini(&r);
        return;
    }
    is_int(r.status, 201, "fashion-mnist job accepted");
    long long id = th_json_int(r.json, "id", -1);
    th_resp_fini(&r);
    json_t *job = id > 0 ? th_job_wait(d, id, "succeeded|failed|cancelled", 120, NULL) : NULL;
    is_str(th_json_str(job, "state"), "succeeded", "  a 2-class fashion-mnist job succeeds");
    if (job && th_json_str(job, "error"))
        diag("error: %s", th_json_str(job, "error"));
    double acc = th_json_num(json_object_get(job, "metrics"), "accuracy", -1);
    ok(acc > 0.5, "  it learns something (accuracy %.3f)", acc);
    json_decref(job);
}

int main(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "jobs") != 0 || th_daemon_start(&d, NULL, 20) != 0) {
        ok(0, "daemon starts");
        th_daemon_fini(&d, true);
        return done_testing();
    }

    /* ---- submit and watch one job ---- */
    th_resp r;
    long long a = th_job_submit(&d, SPEC_A, &r);
    ok(a > 0, "job A submitted (id %lld)", a);
    if (a <= 0) {
        th_resp_fini(&r);
        goto stop;
    }
    check_submit_response(&r, a);
    is_str(th_json_str(r.json, "name"), "alpha", "name echoed");
    const json_t *spec = json_object_get(r.json, "spec");
    is_int(th_json_int(spec, "batch_size", -1), 32, "spec keeps batch_size");
    is_str(th_json_str(json_object_get(spec, "optimizer"), "type"), "adam",
           "spec is normalised: optimizer defaults filled in");
    is_int(json_array_size(json_object_get(spec, "stages")), 3, "spec keeps the 3 stages");
    th_resp_fini(&r);

    th_watch w = {0};
    json_t *job = th_job_wait(&d, a, "succeeded|failed|cancelled", 120, &w);
    ok(job != NULL, "job A finishes");
    is_str(th_json_str(job, "state"), "succeeded", "job A succeeded");
    if (job && strcmp(th_json_str(job, "state"), "succeeded") != 0)
        diag("error: %s", th_json_str(job, "error") ? th_json_str(job, "error") : "(null)");
    is_near(th_json_num(job, "progress", -1), 1.0, 1e-9, "progress reaches 1");
    ok(th_json_int(job, "step", -1) > 0, "step counts training batches (%lld)",
       th_json_int(job, "step", -1));
    const json_t *m = json_object_get(job, "metrics");
    ok(json_is_number(json_object_get(m, "train_loss")) &&
           json_is_number(json_object_get(m, "valid_loss")) &&
           json_is_number(json_object_get(m, "accuracy")),
       "metrics has train_loss, valid_loss, accuracy");
    double acc = th_json_num(m, "accuracy", -1);
    ok(acc >= 0 && acc <= 1, "accuracy in [0, 1] (%.3f)", acc);
    ok(is_time(json_object_get(job, "started_at")) && is_time(json_object_get(job, "finished_at")),
       "started_at and finished_at set");
    ok(json_is_null(json_object_get(job, "error")), "error null");
    ok(json_is_null(json_object_get(job, "queue_position")), "queue_position null once finished");
    is_int(th_json_int(job, "attempt", -1), 1, "attempt 1");
    json_decref(job);

    /* ---- events ---- */
    json_t *events = th_job_events_final(&d, a, 10);
    ok(events != NULL, "events list");
    bool saw_running_event = false, ordered = true, shaped = true;
    int n_stage = 0, n_epoch = 0, n_lr = 0, n_art = 0, n_state = 0;
    long long prev = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        long long eid = th_json_int(ev, "id", -1);
        if (eid <= prev)
            ordered = false;
        prev = eid;
        const char *type = th_json_str(ev, "type");
        if (!type || !th_json_str(ev, "level") || !th_json_str(ev, "message") ||
            !is_time(json_object_get(ev, "created_at")) || !json_object_get(ev, "data"))
            shaped = false;
        if (!type)
            continue;
        if (strcmp(type, "stage") == 0)
            n_stage++;
        else if (strcmp(type, "epoch") == 0)
            n_epoch++;
        else if (strcmp(type, "lr_find") == 0)
            n_lr++;
        else if (strcmp(type, "artifact") == 0)
            n_art++;
        else if (strcmp(type, "state") == 0) {
            n_state++;
            char *txt = json_dumps(ev, 0);
            if (txt && strstr(txt, "running"))
                saw_running_event = true;
            free(txt);
        }
    }
    ok(ordered, "events oldest first (ids increasing)");
    ok(shaped, "every event has id, created_at, level, type, message, data");
    ok(n_stage >= 3, "stage events (%d)", n_stage);
    is_int(n_epoch, 3, "one epoch event per epoch of fit_one_cycle");
    is_int(n_lr, 1, "one lr_find event");
    ok(n_art >= 1, "artifact event for the save (%d)", n_art);
    ok(n_state >= 2, "state events (%d)", n_state);
    ok(w.saw_running || saw_running_event, "job was seen running (poll %d, events %d)",
       w.saw_running, saw_running_event);

    if (json_array_size(events) >= 3) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/jobs/%lld/events?limit=2", a);
        th_get(&d, path, &r);
        is_int(json_array_size(json_object_get(r.json, "data")), 2, "events limit=2 -> 2 events");
        ok(json_is_true(json_object_get(r.json, "has_more")), "events has_more true");
        long long second =
            th_json_int(json_array_get(json_object_get(r.json, "data"), 1), "id", -1);
        th_resp_fini(&r);
        snprintf(path, sizeof(path), "/v1/jobs/%lld/events?limit=1&after=%lld", a, second);
        th_get(&d, path, &r);
        is_int(th_json_int(json_array_get(json_object_get(r.json, "data"), 0), "id", -1),
               th_json_int(json_array_get(events, 2), "id", -2),
               "events after= continues with the next event");
        th_resp_fini(&r);
        size_t total = json_array_size(events);
        snprintf(path, sizeof(path), "/v1/jobs/%lld/events?limit=%zu", a, total);
        th_get(&d, path, &r);
        is_int(json_array_size(json_object_get(r.json, "data")), total,
               "events limit = count: every event");
        ok(json_is_false(json_object_get(r.json, "has_more")), "  and has_more false");
        th_resp_fini(&r);
        snprintf(path, sizeof(path), "/v1/jobs/%lld/events?after=%lld", a,
                 th_json_int(json_array_get(events, total - 1), "id", 0));
        th_get(&d, path, &r);
        is_int(json_array_size(json_object_get(r.json, "data")), 0,
               "events after the last one: empty");
        ok(json_is_false(json_object_get(r.json, "has_more")), "  and has_more false");
        th_resp_fini(&r);
    }
    json_decref(events);

    /* ---- checkpoints ---- */
    char path[256];
    snprintf(path, sizeof(path), "/v1/jobs/%lld/checkpoints", a);
    th_get(&d, path, &r);
    is_int(r.status, 200, "GET checkpoints -> 200");
    is_str(th_json_str(r.json, "object"), "list", "checkpoints is a list");
    const json_t *weights = NULL;
    json_t *c;
    json_array_foreach(json_object_get(r.json, "data"), i, c)
    {
        const char *kind = th_json_str(c, "kind");
        if (kind && strcmp(kind, "weights") == 0) {
            ok(weights == NULL, "one weights entry (no duplicates)");
            weights = c;
        }
    }
    ok(weights != NULL, "checkpoints list the saved weights");
    is_str(th_json_str(weights, "name"), "model", "weights named after the save stage");
    long long size = th_json_int(weights, "size", -1);
    ok(size > 8, "size %lld", size);
    const char *sha = th_json_str(weights, "sha256");
    ok(is_hex64(sha), "sha256 is 64 lowercase hex chars");
    ok(is_time(json_object_get(weights, "created_at")), "checkpoint created_at");
    char want_url[128];
    snprintf(want_url, sizeof(want_url), "/v1/jobs/%lld/checkpoints/model", a);
    is_str(th_json_str(weights, "download_url"), want_url, "download_url");

    const char *url = th_json_str(weights, "download_url");
    if (url) {
        char file[700];
        snprintf(file, sizeof(file), "%s/download.safetensors", d.dir);
        th_resp dl;
        is_int(th_download(&d, url, file, &dl), 200, "download -> 200");
        ok(th_media_type_is(dl.content_type, "application/octet-stream"),
           "download is application/octet-stream (%s)", dl.content_type);
        th_resp_fini(&dl);
        struct stat st;
        ok(stat(file, &st) == 0 && (long long)st.st_size == size,
           "downloaded size matches the listed size");
        char hex[65] = "";
        ok(th_sha256_file(file, hex) == 0 && sha && strcmp(hex, sha) == 0,
           "downloaded sha256 matches the listed sha256");
        size_t n_tensors = 0;
        ok(th_safetensors_valid(file, &n_tensors), "download is a valid safetensors file");
        ok(n_tensors >= 2, "it holds the MLP's tensors (%zu)", n_tensors);
    }
    /* Every other listed file (the resumable checkpoint) downloads intact too. */
    json_array_foreach(json_object_get(r.json, "data"), i, c)
    {
        const char *kind = th_json_str(c, "kind"), *u = th_json_str(c, "download_url");
        if (!kind || strcmp(kind, "weights") == 0)
            continue;
        ok(strcmp(kind, "checkpoint") == 0, "other entries are of kind checkpoint (%s)", kind);
        char file[700];
        snprintf(file, sizeof(file), "%s/other.safetensors", d.dir);
        th_resp dl;
        is_int(u ? th_download(&d, u, file, &dl) : -1, 200, "download %s -> 200", u ? u : "?");
        th_resp_fini(&dl);
        char hex[65] = "";
        const char *want = th_json_str(c, "sha256");
        ok(th_sha256_file(file, hex) == 0 && want && strcmp(hex, want) == 0,
           "  its sha256 matches the list");
        size_t n_tensors = 0;
        ok(th_safetensors_valid(file, &n_tensors), "  and it is a valid safetensors file");
    }
    th_resp_fini(&r);

    snprintf(path, sizeof(path), "/v1/jobs/%lld/checkpoints/nosuch", a);
    th_get(&d, path, &r);
    ok(th_is_problem(&r, 404, "not-found"), "unknown checkpoint -> 404 problem");
    th_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/jobs/%lld/checkpoints/..%%2Fthawd.db", a);
    th_get(&d, path, &r);
    ok(r.status == 404 || r.status == 400 || r.status == 422,
       "traversal in checkpoint name refused (%ld)", r.status);
    th_resp_fini(&r);

    snprintf(path, sizeof(path), "/v1/jobs/%lld", a);
    th_get(&d, path, &r);
    is_int(r.status, 200, "GET /v1/jobs/{id} -> 200");
    is_int(th_json_int(r.json, "id", -1), a, "GET returns that job");
    th_resp_fini(&r);

    /* ---- list, filter, paginate ---- */
    long long b = th_job_submit(&d, SPEC_SMALL, NULL);
    th_resp rc;
    long long cc = th_job_submit(&d, SPEC_SMALL, &rc);
    ok(b > a && cc > b, "jobs B (%lld) and C (%lld) get increasing ids", b, cc);
    ok(th_json_int(rc.json, "queue_position", -1) >= 0, "C has a queue_position when created");
    th_resp_fini(&rc);
    json_t *jb = th_job_wait(&d, b, "succeeded|failed|cancelled", 120, NULL);
    json_t *jc = th_job_wait(&d, cc, "succeeded|failed|cancelled", 120, NULL);
    is_str(th_json_str(jb, "state"), "succeeded", "job B succeeded");
    is_str(th_json_str(jc, "state"), "succeeded", "job C succeeded");
    json_decref(jb);
    json_decref(jc);

    long long ids[8];
    th_get(&d, "/v1/jobs?limit=2", &r);
    is_str(th_json_str(r.json, "object"), "list", "job list object");
    ok(list_ids(&r, ids, 8) == 2 && ids[0] == cc && ids[1] == b, "limit=2: C, B (newest first)");
    ok(json_is_true(json_object_get(r.json, "has_more")), "has_more true");
    th_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/jobs?limit=2&after=%lld", b);
    th_get(&d, path, &r);
    ok(list_ids(&r, ids, 8) == 1 && ids[0] == a, "after=B: A");
    ok(json_is_false(json_object_get(r.json, "has_more")), "has_more false on the last page");
    th_resp_fini(&r);
    th_get(&d, "/v1/jobs", &r);
    is_int(list_ids(&r, ids, 8), 3, "default list has all 3 jobs");
    th_resp_fini(&r);
    th_get(&d, "/v1/jobs?limit=3", &r);
    is_int(list_ids(&r, ids, 8), 3, "limit=3 with exactly 3 jobs: 3 jobs");
    ok(json_is_false(json_object_get(r.json, "has_more")), "  and has_more false");
    th_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/jobs?state=succeeded&limit=1&after=%lld", cc);
    th_get(&d, path, &r);
    ok(list_ids(&r, ids, 8) == 1 && ids[0] == b, "state filter with a cursor: B");
    ok(json_is_true(json_object_get(r.json, "has_more")), "  has_more true (A is left)");
    th_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/jobs?after=%lld", a);
    th_get(&d, path, &r);
    is_int(list_ids(&r, ids, 8), 0, "after the oldest job: empty page");
    th_resp_fini(&r);
    th_get(&d, "/v1/jobs?state=succeeded", &r);
    is_int(list_ids(&r, ids, 8), 3, "state=succeeded: 3 jobs");
    th_resp_fini(&r);
    th_get(&d, "/v1/jobs?state=failed", &r);
    is_int(list_ids(&r, ids, 8), 0, "state=failed: none");
    ok(json_is_false(json_object_get(r.json, "has_more")), "empty list has_more false");
    th_resp_fini(&r);
    th_get(&d, "/v1/jobs?state=queued&limit=5", &r);
    is_int(list_ids(&r, ids, 8), 0, "state=queued: none");
    th_resp_fini(&r);

    static const char *const bad_queries[] = {"/v1/jobs?state=bogus", "/v1/jobs?limit=0",
                                              "/v1/jobs?limit=101", "/v1/jobs?limit=abc",
                                              "/v1/jobs?after=-5x"};
    for (size_t k = 0; k < sizeof(bad_queries) / sizeof(bad_queries[0]); k++) {
        th_get(&d, bad_queries[k], &r);
        ok((r.status == 400 || r.status == 422) &&
               th_media_type_is(r.content_type, "application/problem+json"),
           "GET %s -> 400/422 problem (got %ld)", bad_queries[k], r.status);
        th_resp_fini(&r);
    }

    static const char *const bad_event_queries[] = {"/events?limit=0", "/events?limit=1001",
                                                    "/events?after=x"};
    for (size_t k = 0; k < sizeof(bad_event_queries) / sizeof(bad_event_queries[0]); k++) {
        snprintf(path, sizeof(path), "/v1/jobs/%lld%s", a, bad_event_queries[k]);
        th_get(&d, path, &r);
        ok((r.status == 400 || r.status == 422) &&
               th_media_type_is(r.content_type, "application/problem+json"),
           "GET %s -> 400/422 problem (got %ld)", path, r.status);
        th_resp_fini(&r);
    }

    check_default_workflow(&d);
    check_fashion_mnist(&d);

stop:
    is_int(th_daemon_stop(&d, 30), 0, "SIGTERM -> exit 0");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report in the daemon's log");
    return done_testing();
}
