/*
 * test_api_health: /healthz, unknown routes (404 problem) and wrong methods (405 + Allow)
 * against a real thawd; a clean SIGTERM shutdown with exit 0 and no sanitizer reports.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

/* True when the comma-separated Allow header value lists `method`. */
static bool allow_has(const char *allow, const char *method)
{
    size_t n = strlen(method);
    const char *p = allow;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t k = strcspn(p, ", ");
        if (k == n && strncmp(p, method, n) == 0)
            return true;
        p += k;
    }
    return false;
}

static void check_405(th_daemon *d, const char *method, const char *path, const char *allowed)
{
    th_resp r;
    th_request(d, method, path, NULL, NULL, 0, &r);
    ok(th_is_problem(&r, 405, "method-not-allowed"), "%s %s -> 405 method-not-allowed problem",
       method, path);
    ok(allow_has(r.allow, allowed), "%s %s: Allow \"%s\" lists %s", method, path, r.allow, allowed);
    th_resp_fini(&r);
}

int main(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "health") != 0 || th_daemon_start(&d, NULL, 20) != 0) {
        ok(0, "daemon starts and logs its ready line");
        th_daemon_fini(&d, true);
        return done_testing();
    }
    ok(d.port > 0, "ready line names the bound port (%d)", d.port);

    th_resp r;
    th_get(&d, "/healthz", &r);
    is_int(r.status, 200, "GET /healthz -> 200");
    ok(th_media_type_is(r.content_type, "application/json"), "/healthz is application/json (%s)",
       r.content_type);
    is_str(th_json_str(r.json, "status"), "ok", "/healthz body {\"status\":\"ok\"}");
    th_resp_fini(&r);

    static const char *const unknown[] = {"/nope", "/v1", "/v1/jobz", "/v1/jobs/1/bogus",
                                          "/healthz/extra"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        th_get(&d, unknown[i], &r);
        ok(th_is_problem(&r, 404, "not-found"), "GET %s -> 404 not-found problem", unknown[i]);
        th_resp_fini(&r);
    }

    check_405(&d, "DELETE", "/healthz", "GET");
    check_405(&d, "POST", "/healthz", "GET");
    check_405(&d, "PUT", "/v1/jobs", "POST");
    check_405(&d, "DELETE", "/v1/jobs", "GET");
    check_405(&d, "GET", "/v1/jobs/1/cancel", "POST");
    check_405(&d, "PATCH", "/v1/jobs/1", "GET");

    /* The daemon still answers after the errors above. */
    th_get(&d, "/healthz", &r);
    is_int(r.status, 200, "GET /healthz still 200");
    th_resp_fini(&r);

    ok(th_daemon_log_contains(&d, "/healthz"), "requests are logged (one line per request)");

    ok(th_daemon_log_contains(&d, "path=/healthz") && th_daemon_log_contains(&d, "status=200") &&
           th_daemon_log_contains(&d, "bytes=") && th_daemon_log_contains(&d, "ms="),
       "request log lines carry method, path, status, bytes, ms");

    /* Bad option values: exit 2 with a message naming the option (the running daemon holds
     * the data dir, but option checks come first). */
    static const char *const bad_opts[][3] = {
        {"--workers", "0", "workers"},
        {"--log-level", "loud", "log-level"},
        {"--max-body", "-5", "max-body"},
        {"--http-threads", "x", "http-threads"},
    };
    for (size_t i = 0; i < sizeof(bad_opts) / sizeof(bad_opts[0]); i++) {
        const char *const extra[] = {bad_opts[i][0], bad_opts[i][1], NULL};
        is_int(th_daemon_run_once(&d, extra, 20), 2, "%s %s -> exit 2", bad_opts[i][0],
               bad_opts[i][1]);
        ok(th_daemon_log_contains(&d, bad_opts[i][2]), "  the message names %s", bad_opts[i][2]);
    }

    /* Options also come from THAWD_<NAME>; the command line wins over the environment. */
    setenv("THAWD_HTTP_THREADS", "many", 1);
    is_int(th_daemon_run_once(&d, NULL, 20), 2, "THAWD_HTTP_THREADS=many -> exit 2");
    unsetenv("THAWD_HTTP_THREADS");
    setenv("THAWD_WORKERS", "0", 1);
    static const char *const one_worker[] = {"--workers", "1", NULL};
    is_int(th_daemon_run_once(&d, one_worker, 20), 1,
           "THAWD_WORKERS=0 --workers 1: options accepted, then exit 1 on the busy data dir");
    unsetenv("THAWD_WORKERS");

    is_int(th_daemon_stop(&d, 20), 0, "SIGTERM -> exit status 0");

    /* SIGINT stops it cleanly too. */
    if (th_daemon_start(&d, NULL, 20) == 0)
        is_int(th_daemon_stop_sig(&d, SIGINT, 20), 0, "SIGINT -> exit status 0");
    else
        ok(0, "daemon restarts on its data dir");

    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report in the daemon's log");

    /* Repeated signals during shutdown do not kill it. OpenBLAS starts its threads before
     * main() with the signals unblocked, so run it with two of them: a signal may land on
     * one of those threads, which must not take the default action. */
    th_daemon d2;
    if (th_daemon_init(&d2, "health-signals") != 0)
        return done_testing();
    setenv("OPENBLAS_NUM_THREADS", "2", 1);
    if (th_daemon_start(&d2, NULL, 20) == 0) {
        /* A running job makes the shutdown last long enough for the later signals to
         * arrive while it is under way (the job is checkpointed and requeued). */
        th_resp jr;
        th_post_json(&d2, "/v1/jobs",
                     "{\"model\":{\"arch\":\"mlp\"},\"data\":{\"source\":\"synthetic\","
                     "\"n_train\":200000,\"features\":64},\"stages\":[{\"op\":\"fit\","
                     "\"epochs\":50}]}",
                     &jr);
        is_int(jr.status, 201, "long job accepted");
        th_resp_fini(&jr);
        for (int i = 0; i < 100; i++) {
            th_get(&d2, "/v1/jobs/1", &jr);
            const char *st = jr.json ? json_string_value(json_object_get(jr.json, "state")) : NULL;
            bool running = st && strcmp(st, "running") == 0;
            th_resp_fini(&jr);
            if (running)
                break;
            usleep(50 * 1000);
        }
        for (int i = 0; i < 5; i++) {
            kill(d2.pid, SIGTERM);
            usleep(20 * 1000);
        }
        is_int(th_daemon_stop(&d2, 20), 0, "five SIGTERMs in a row -> exit status 0");
    } else {
        ok(0, "daemon starts with two BLAS threads");
    }
    unsetenv("OPENBLAS_NUM_THREADS");
    ok(th_daemon_fini(&d2, tap_failed > 0), "no sanitizer report after repeated signals");
    return done_testing();
}
