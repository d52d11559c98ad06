/*
 * test_api_errors: every bad request gets the right RFC 9457 problem from a real thawd
 * (started with a small --max-body): invalid JSON 400, validation errors 422 with the JSON
 * pointer of the offending field, 415, 413, 404 for unknown ids, 409 for cancelling a
 * finished job. Afterwards the daemon still serves and still runs a valid job.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tap.h"

#define MAX_BODY 4096

#define DATA  "\"data\":{\"source\":\"synthetic\",\"n_train\":256,\"n_valid\":64,\"features\":8}"
#define MODEL "\"model\":{\"arch\":\"mlp\",\"hidden\":[16]}"

static const char VALID[] =
    "{" MODEL "," DATA ",\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":0.01},{\"op\":\"save\"}]}";

/* A body that must be refused with 422 naming `pointer`. */
typedef struct bad_spec {
    const char *what;
    const char *body;
    const char *pointer;
} bad_spec;

static const bad_spec bad_specs[] = {
    {"unknown top-level field", "{\"modle\":{\"arch\":\"mlp\"}}", "/modle"},
    {"unknown stage field", "{" MODEL ",\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"bogus\":1}]}",
     "/stages/0/bogus"},
    {"unknown model field", "{\"model\":{\"arch\":\"mlp\",\"depth\":3}}", "/model/depth"},
    {"unknown data field", "{" MODEL ",\"data\":{\"source\":\"synthetic\",\"rows\":5}}",
     "/data/rows"},
    {"negative epochs", "{" MODEL ",\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":-1}]}",
     "/stages/0/epochs"},
    {"zero epochs in a later stage",
     "{" MODEL ",\"stages\":[{\"op\":\"freeze\"},{\"op\":\"fit\",\"epochs\":0}]}",
     "/stages/1/epochs"},
    {"epochs as a string", "{" MODEL ",\"stages\":[{\"op\":\"fit\",\"epochs\":\"3\"}]}",
     "/stages/0/epochs"},
    {"missing epochs", "{" MODEL ",\"stages\":[{\"op\":\"fit_one_cycle\"}]}", "/stages/0/epochs"},
    {"unknown stage op", "{" MODEL ",\"stages\":[{\"op\":\"fly\"}]}", "/stages/0/op"},
    {"missing stage op", "{" MODEL ",\"stages\":[{\"epochs\":1}]}", "/stages/0/op"},
    {"unknown architecture", "{\"model\":{\"arch\":\"transformer-xxl\"}}", "/model/arch"},
    {"batch_size 0", "{" MODEL ",\"batch_size\":0}", "/batch_size"},
    {"batch_size too large", "{" MODEL ",\"batch_size\":4097}", "/batch_size"},
    {"negative seed", "{" MODEL ",\"seed\":-1}", "/seed"},
    {"dropout 1", "{\"model\":{\"arch\":\"mlp\",\"dropout\":1}}", "/model/dropout"},
    {"too many hidden layers", "{\"model\":{\"arch\":\"mlp\",\"hidden\":[1,1,1,1,1,1,1,1,1]}}",
     "/model/hidden"},
    {"unknown data source", "{" MODEL ",\"data\":{\"source\":\"imagenet\"}}", "/data/source"},
    {"one class", "{" MODEL ",\"data\":{\"source\":\"synthetic\",\"classes\":1}}", "/data/classes"},
    {"bad optimizer", "{" MODEL ",\"optimizer\":{\"type\":\"lion\"}}", "/optimizer/type"},
    {"empty stages", "{" MODEL ",\"stages\":[]}", "/stages"},
    {"bad save name", "{" MODEL ",\"stages\":[{\"op\":\"save\",\"name\":\".hidden\"}]}",
     "/stages/0/name"},
    {"save name with a slash", "{" MODEL ",\"stages\":[{\"op\":\"save\",\"name\":\"a/b\"}]}",
     "/stages/0/name"},
    {"negative lr", "{" MODEL ",\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":-0.1}]}",
     "/stages/0/lr"},
    {"slice lo > hi",
     "{" MODEL ",\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":1,\"lr_max\":{\"slice\":[0.1,"
     "0.01]}}]}",
     "/stages/0/lr_max"},
    {"suggestion without lr_find",
     "{" MODEL ",\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":1,\"lr_max\":{\"suggestion\":"
     "\"valley\"}}]}",
     "/stages/0/lr_max"},
    {"unknown suggestion",
     "{" MODEL ",\"stages\":[{\"op\":\"lr_find\"},{\"op\":\"fit_one_cycle\",\"epochs\":1,"
     "\"lr_max\":{\"suggestion\":\"best\"}}]}",
     "/stages/1/lr_max"},
    {"pct_start 1",
     "{" MODEL ",\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":1,"
     "\"pct_start\":1}]}",
     "/stages/0/pct_start"},
    {"freeze_to without n", "{" MODEL ",\"stages\":[{\"op\":\"freeze_to\"}]}", "/stages/0/n"},
    {"name too long",
     "{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"," MODEL
     "}",
     "/name"},
};

/* A job whose loss diverges ends "failed" with an error message. */
static void check_failed_job(th_daemon *d)
{
    static const char spec[] = "{" MODEL "," DATA ",\"stages\":[{\"op\":\"fit\",\"epochs\":2,"
                               "\"lr\":1e30},{\"op\":\"save\"}]}";
    long long id = th_job_submit(d, spec, NULL);
    json_t *job = id > 0 ? th_job_wait(d, id, "succeeded|failed|cancelled", 60, NULL) : NULL;
    is_str(th_json_str(job, "state"), "failed", "a diverging job (lr 1e30) fails");
    const char *error = th_json_str(job, "error");
    ok(error && *error, "  with an error message: %s", error ? error : "(null)");
    ok(json_is_string(json_object_get(job, "finished_at")), "  finished_at set");
    ok(th_json_num(job, "progress", 1) < 1.0, "  progress below 1");
    json_decref(job);

    th_resp r;
    th_get(d, "/v1/jobs?state=failed", &r);
    const json_t *data = json_object_get(r.json, "data");
    ok(json_array_size(data) == 1 && th_json_int(json_array_get(data, 0), "id", -1) == id,
       "state=failed lists it");
    th_resp_fini(&r);

    json_t *events = th_job_events_final(d, id, 10);
    bool error_level = false;
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        const char *level = th_json_str(ev, "level");
        if (level && strcmp(level, "error") == 0)
            error_level = true;
    }
    ok(error_level, "  its events include an error-level event");
    json_decref(events);

    char path[96];
    snprintf(path, sizeof(path), "/v1/jobs/%lld/checkpoints", id);
    th_get(d, path, &r);
    bool weights = false;
    json_t *c;
    json_array_foreach(json_object_get(r.json, "data"), i, c)
    {
        const char *kind = th_json_str(c, "kind");
        if (kind && strcmp(kind, "weights") == 0)
            weights = true;
    }
    ok(r.status == 200 && !weights, "  no weights saved");
    th_resp_fini(&r);

    snprintf(path, sizeof(path), "/v1/jobs/%lld/cancel", id);
    th_post_json(d, path, NULL, &r);
    ok(th_is_problem(&r, 409, "conflict"), "cancel a failed job -> 409 conflict");
    th_resp_fini(&r);
}

int main(void)
{
    th_daemon d;
    static const char *const args[] = {"--max-body", "4096", NULL};
    if (th_daemon_init(&d, "errors") != 0 || th_daemon_start(&d, args, 20) != 0) {
        ok(0, "daemon starts");
        th_daemon_fini(&d, true);
        return done_testing();
    }

    th_resp r;
    /* ---- 400 invalid-json ---- */
    static const char *const not_json[] = {"{\"model\": ", "{model: 1}", "", "{\"a\":1}}",
                                           "{\"name\":\"\xff\xfe\"}"};
    for (size_t i = 0; i < sizeof(not_json) / sizeof(not_json[0]); i++) {
        th_post_json(&d, "/v1/jobs", not_json[i], &r);
        ok(th_is_problem(&r, 400, "invalid-json"), "malformed JSON #%zu -> 400 invalid-json", i);
        th_resp_fini(&r);
    }
    {
        char deep[2601];
        memset(deep, '[', 2600);
        deep[2600] = '\0';
        th_post_json(&d, "/v1/jobs", deep, &r);
        ok(th_is_problem(&r, 400, "invalid-json"), "2600 nested arrays -> 400 invalid-json");
        th_resp_fini(&r);
        static const char with_nul[] = "{\"name\":\"a\0b\"}";
        th_request(&d, "POST", "/v1/jobs", "application/json", with_nul, sizeof(with_nul) - 1, &r);
        ok(th_is_problem(&r, 400, "invalid-json"), "NUL byte in the body -> 400 invalid-json");
        th_resp_fini(&r);
    }

    /* ---- 422 validation-error with a pointer ---- */
    th_post_json(&d, "/v1/jobs", "[1,2]", &r);
    ok(th_is_problem(&r, 422, "validation-error"), "a JSON array body -> 422 validation-error");
    th_resp_fini(&r);
    for (size_t i = 0; i < sizeof(bad_specs) / sizeof(bad_specs[0]); i++) {
        th_post_json(&d, "/v1/jobs", bad_specs[i].body, &r);
        ok(th_is_problem(&r, 422, "validation-error"), "%s -> 422 validation-error",
           bad_specs[i].what);
        ok(th_problem_has_pointer(&r, bad_specs[i].pointer), "%s: errors[].pointer %s",
           bad_specs[i].what, bad_specs[i].pointer);
        if (i == 0) {
            is_str(th_json_str(r.json, "instance"), "/v1/jobs", "problem instance is the path");
            ok(th_json_str(r.json, "detail") != NULL, "problem has a detail");
        }
        th_resp_fini(&r);
    }

    /* ---- 415 ---- */
    th_request(&d, "POST", "/v1/jobs", "text/plain", VALID, strlen(VALID), &r);
    ok(th_is_problem(&r, 415, "unsupported-media-type"), "text/plain -> 415");
    th_resp_fini(&r);
    th_request(&d, "POST", "/v1/jobs", "application/x-www-form-urlencoded", VALID, strlen(VALID),
               &r);
    ok(th_is_problem(&r, 415, "unsupported-media-type"), "form encoding -> 415");
    th_resp_fini(&r);
    th_request(&d, "POST", "/v1/jobs", NULL, VALID, strlen(VALID), &r);
    ok(r.status == 415 || r.status == 400, "no Content-Type -> 415 (got %ld)", r.status);
    ok(th_media_type_is(r.content_type, "application/problem+json"), "  as a problem");
    th_resp_fini(&r);

    /* ---- 413 ---- */
    {
        size_t n = MAX_BODY * 3;
        char *big = malloc(n + 1);
        memset(big, ' ', n);
        big[0] = '{';
        big[n - 1] = '}';
        big[n] = '\0';
        th_post_json(&d, "/v1/jobs", big, &r);
        ok(th_is_problem(&r, 413, "payload-too-large"), "body of %zu > --max-body -> 413", n);
        th_resp_fini(&r);
        free(big);
    }

    /* ---- 404 for unknown ids ---- */
    static const char *const unknown[][2] = {
        {"GET", "/v1/jobs/999999"},
        {"POST", "/v1/jobs/999999/cancel"},
        {"GET", "/v1/jobs/999999/events"},
        {"GET", "/v1/jobs/999999/checkpoints"},
        {"GET", "/v1/jobs/999999/checkpoints/model"},
        {"GET", "/v1/jobs/abc"},
        {"GET", "/v1/jobs/0"},
        {"GET", "/v1/jobs/-1"},
        {"GET", "/v1/jobs/99999999999999999999999"},
    };
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        th_request(&d, unknown[i][0], unknown[i][1], NULL, NULL, 0, &r);
        ok(th_is_problem(&r, 404, "not-found"), "%s %s -> 404 not-found", unknown[i][0],
           unknown[i][1]);
        th_resp_fini(&r);
    }

    /* ---- a valid job still runs; charset parameter accepted; 409 on cancel ---- */
    th_request(&d, "POST", "/v1/jobs", "application/json; charset=utf-8", VALID, strlen(VALID), &r);
    is_int(r.status, 201, "application/json; charset=utf-8 accepted");
    long long id = th_json_int(r.json, "id", -1);
    th_resp_fini(&r);
    th_get(&d, "/healthz", &r);
    is_int(r.status, 200, "/healthz still 200 after the bad requests");
    th_resp_fini(&r);
    json_t *job = id > 0 ? th_job_wait(&d, id, "succeeded|failed|cancelled", 120, NULL) : NULL;
    is_str(th_json_str(job, "state"), "succeeded", "a valid job still succeeds");
    json_decref(job);
    if (id > 0) {
        char path[96];
        snprintf(path, sizeof(path), "/v1/jobs/%lld/cancel", id);
        th_post_json(&d, path, NULL, &r);
        ok(th_is_problem(&r, 409, "conflict"), "cancel a finished job -> 409 conflict");
        th_resp_fini(&r);
        snprintf(path, sizeof(path), "/v1/jobs/%lld", id);
        th_get(&d, path, &r);
        is_str(th_json_str(r.json, "state"), "succeeded", "the refused cancel changed nothing");
        th_resp_fini(&r);
    }

    check_failed_job(&d);

    is_int(th_daemon_stop(&d, 30), 0, "SIGTERM -> exit 0");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report in the daemon's log");
    return done_testing();
}
