/*
 * test_api_examples: replays every api-spec/examples/<operation>.request.json against a real
 * thawd and checks the answer against <operation>.response.json: the status (x-status), the
 * media type (x-headers Content-Type), Location when the example has one, and that each
 * top-level member of the example's value is present in the real body.
 *
 * Example files are OpenAPI Example Objects (summary, value) with replay extensions:
 * request: "x-request": {"method", "path", "headers", "fixture"}; the path may hold {id}
 * and {name}. fixture "finished" = the job created by replaying createJob, once it has
 * succeeded ({name} = its first weights file); "running" = a long job, running.
 * response: "x-status", "x-headers".
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tap.h"

static const char SPEC_LONG[] =
    "{\"name\":\"long\",\"model\":{\"arch\":\"mlp\",\"hidden\":[256,256]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":20000,\"n_valid\":256,\"features\":32},"
    "\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":200,\"lr_max\":0.001}]}";

typedef struct fixtures {
    long long finished_id; /* from replaying createJob; 0 until then */
    char weights_name[128];
} fixtures;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Replaces every `key` in `s` (in place, cap bytes) with `val`. */
static void substitute(char *s, size_t cap, const char *key, const char *val)
{
    char *p;
    while ((p = strstr(s, key)) != NULL) {
        char rest[1024];
        snprintf(rest, sizeof(rest), "%s", p + strlen(key));
        snprintf(p, cap - (size_t)(p - s), "%s%s", val, rest);
    }
}

static void find_weights(const th_daemon *d, fixtures *fx)
{
    char path[96];
    snprintf(path, sizeof(path), "/v1/jobs/%lld/checkpoints", fx->finished_id);
    th_resp r;
    th_get(d, path, &r);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(r.json, "data"), i, c)
    {
        const char *kind = th_json_str(c, "kind"), *name = th_json_str(c, "name");
        if (kind && name && strcmp(kind, "weights") == 0 && !fx->weights_name[0])
            snprintf(fx->weights_name, sizeof(fx->weights_name), "%s", name);
    }
    th_resp_fini(&r);
}

/* Replays one example pair; `op` is the operation name. */
static void replay(th_daemon *d, const char *dir, const char *op, fixtures *fx)
{
    char path_req[1024], path_resp[1024];
    snprintf(path_req, sizeof(path_req), "%s/%s.request.json", dir, op);
    snprintf(path_resp, sizeof(path_resp), "%s/%s.response.json", dir, op);
    json_error_t err;
    json_t *req = json_load_file(path_req, 0, &err);
    json_t *resp = json_load_file(path_resp, 0, &err);
    if (!ok(req && resp, "%s: request and response examples parse", op)) {
        json_decref(req);
        json_decref(resp);
        return;
    }
    const json_t *xr = json_object_get(req, "x-request");
    const char *method = th_json_str(xr, "method");
    const char *tmpl = th_json_str(xr, "path");
    const char *fixture = th_json_str(xr, "fixture");
    const char *ct = th_json_str(json_object_get(xr, "headers"), "Content-Type");
    long long want_status = th_json_int(resp, "x-status", -1);
    if (!ok(method && tmpl && want_status > 0, "%s: x-request method/path and x-status", op))
        goto out;

    char path[1024];
    snprintf(path, sizeof(path), "%s", tmpl);
    char idbuf[32] = "";
    long long running_id = 0;
    if (fixture && strcmp(fixture, "finished") == 0) {
        if (!ok(fx->finished_id > 0, "%s: the createJob job exists for {id}", op))
            goto out;
        snprintf(idbuf, sizeof(idbuf), "%lld", fx->finished_id);
    } else if (fixture && strcmp(fixture, "running") == 0) {
        running_id = th_job_submit(d, SPEC_LONG, NULL);
        json_t *job = running_id > 0 ? th_job_wait_step(d, running_id, 1, 60) : NULL;
        ok(job != NULL, "%s: a running job for {id}", op);
        json_decref(job);
        snprintf(idbuf, sizeof(idbuf), "%lld", running_id);
    } else if (fixture) {
        ok(0, "%s: unknown fixture \"%s\"", op, fixture);
        goto out;
    }
    if (idbuf[0])
        substitute(path, sizeof(path), "{id}", idbuf);
    if (strstr(path, "{name}")) {
        if (!ok(fx->weights_name[0], "%s: a weights file for {name}", op))
            goto out;
        substitute(path, sizeof(path), "{name}", fx->weights_name);
    }

    char *body = NULL;
    const json_t *value = json_object_get(req, "value");
    if (value)
        body = json_dumps(value, JSON_COMPACT);
    const json_t *xh = json_object_get(resp, "x-headers");
    const char *want_ct = th_json_str(xh, "Content-Type");
    th_resp r;
    if (want_ct && strstr(want_ct, "octet-stream")) {
        char file[800];
        snprintf(file, sizeof(file), "%s/%s.bin", d->dir, op);
        th_download(d, path, file, &r);
    } else {
        th_request(d, method, path, ct, body, body ? strlen(body) : 0, &r);
    }
    free(body);

    is_int(r.status, want_status, "%s: %s %s -> %lld", op, method, path, want_status);
    if (want_ct)
        ok(th_media_type_is(r.content_type, want_ct), "%s: Content-Type %s (got \"%s\")", op,
           want_ct, r.content_type);
    if (th_json_str(xh, "Location")) {
        char want_loc[64];
        snprintf(want_loc, sizeof(want_loc), "/v1/jobs/%lld", th_json_int(r.json, "id", -1));
        is_str(r.location, want_loc, "%s: Location names the new job", op);
    }
    json_t *want_value = json_object_get(resp, "value");
    if (json_is_object(want_value)) {
        const char *key;
        json_t *v;
        bool all = json_is_object(r.json);
        json_object_foreach(want_value, key, v)
        {
            if (!json_object_get(r.json, key)) {
                diag("%s: member \"%s\" missing from the response", op, key);
                all = false;
            }
        }
        ok(all, "%s: the response has every member of the example", op);
        const char *want_obj = th_json_str(want_value, "object");
        if (want_obj)
            is_str(th_json_str(r.json, "object"), want_obj, "%s: object \"%s\"", op, want_obj);
    }

    if (strcmp(op, "createJob") == 0 && r.status == 201) {
        fx->finished_id = th_json_int(r.json, "id", -1);
        json_t *job = th_job_wait(d, fx->finished_id, "succeeded|failed|cancelled", 120, NULL);
        is_str(th_json_str(job, "state"), "succeeded", "createJob: the example job succeeds");
        json_decref(job);
        find_weights(d, fx);
    }
    th_resp_fini(&r);
    if (running_id > 0) {
        json_t *job = th_job_wait(d, running_id, "succeeded|failed|cancelled", 60, NULL);
        ok(job != NULL, "%s: the running job reaches a final state", op);
        json_decref(job);
    }
out:
    json_decref(req);
    json_decref(resp);
}

int main(void)
{
    const char *root = getenv("THAWD_SOURCE_ROOT");
    char dir[900];
    snprintf(dir, sizeof(dir), "%s/api-spec/examples", root ? root : ".");
    DIR *dh = opendir(dir);
    if (!ok(dh != NULL, "open %s", dir))
        return done_testing();
    char *ops[64];
    size_t n_ops = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL && n_ops < 64) {
        const char *suffix = ".request.json";
        size_t n = strlen(de->d_name), k = strlen(suffix);
        if (n > k && strcmp(de->d_name + n - k, suffix) == 0)
            ops[n_ops++] = strndup(de->d_name, n - k);
    }
    closedir(dh);
    qsort(ops, n_ops, sizeof(ops[0]), cmp_str);
    ok(n_ops >= 8, "%zu request examples (one per operation)", n_ops);

    th_daemon d;
    if (th_daemon_init(&d, "examples") != 0 || th_daemon_start(&d, NULL, 20) != 0) {
        ok(0, "daemon starts");
        th_daemon_fini(&d, true);
        return done_testing();
    }
    fixtures fx = {0};
    /* createJob first: it makes the job the other examples refer to. */
    for (size_t i = 0; i < n_ops; i++)
        if (strcmp(ops[i], "createJob") == 0)
            replay(&d, dir, ops[i], &fx);
    for (size_t i = 0; i < n_ops; i++)
        if (strcmp(ops[i], "createJob") != 0)
            replay(&d, dir, ops[i], &fx);
    for (size_t i = 0; i < n_ops; i++)
        free(ops[i]);

    is_int(th_daemon_stop(&d, 30), 0, "SIGTERM -> exit 0");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report in the daemon's log");
    return done_testing();
}
