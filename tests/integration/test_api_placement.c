/*
 * test_api_placement: --http-cpus and --worker-cpus. A daemon pinned to one CPU (the first
 * this test may run on, CPU 0 unless the test itself is pinned elsewhere) serves and trains
 * as usual, and its HTTP and worker threads really are restricted to that CPU (read
 * from /proc/PID/task/TID/status); a list naming no usable CPU, or not a list at all, stops
 * the start with a message naming the option.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tap.h"

static const char SPEC_SMALL[] =
    "{\"name\":\"small\",\"model\":{\"arch\":\"mlp\",\"hidden\":[16]},"
    "\"data\":{\"source\":\"synthetic\",\"n_train\":256,\"n_valid\":64,\"features\":8},"
    "\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":0.01},{\"op\":\"save\"}]}";

/* The first CPU in this process's affinity list (/proc/self/status), or 0. */
static int first_cpu(void)
{
    char buf[256];
    int cpu = 0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(buf, sizeof buf, f))
        if (strncmp(buf, "Cpus_allowed_list:", 18) == 0)
            cpu = atoi(buf + 18 + strspn(buf + 18, " \t"));
    if (f)
        fclose(f);
    return cpu;
}

static char cpu_list[16]; /* the CPU the daemon is pinned to, as a list of one: "0" */

/* Counts the daemon's threads named `comm` and how many of them may run only on cpu_list. */
static void count_threads(const th_daemon *d, const char *comm, int *n, int *on0)
{
    char path[400], buf[256];
    *n = *on0 = 0;
    snprintf(path, sizeof path, "/proc/%d/task", (int)d->pid);
    DIR *dir = opendir(path);
    if (!dir)
        return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/comm", (int)d->pid, e->d_name);
        FILE *f = fopen(path, "r");
        bool match = f && fgets(buf, sizeof buf, f) && strncmp(buf, comm, strlen(comm)) == 0;
        if (f)
            fclose(f);
        if (!match)
            continue;
        (*n)++;
        snprintf(path, sizeof path, "/proc/%d/task/%s/status", (int)d->pid, e->d_name);
        f = fopen(path, "r");
        while (f && fgets(buf, sizeof buf, f)) {
            if (strncmp(buf, "Cpus_allowed_list:", 18) == 0) {
                char *v = buf + 18;
                v += strspn(v, " \t");
                if (strncmp(v, cpu_list, strlen(cpu_list)) == 0 && v[strlen(cpu_list)] == '\n')
                    (*on0)++;
            }
        }
        if (f)
            fclose(f);
    }
    closedir(dir);
}

int main(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "placement") != 0) {
        ok(0, "temp dir");
        return done_testing();
    }

    /* ---- bad lists stop the start ---- */
    static const char *const bad_syntax[] = {"--http-cpus", "1-", NULL};
    int rc = th_daemon_run_once(&d, bad_syntax, 20);
    ok(rc != 0 && th_daemon_log_contains(&d, "--http-cpus: '1-' is not a CPU list"),
       "--http-cpus 1- is refused (exit %d)", rc);
    static const char *const bad_http[] = {"--http-cpus", "1023", NULL};
    rc = th_daemon_run_once(&d, bad_http, 20);
    ok(rc != 0 && th_daemon_log_contains(&d, "--http-cpus 1023: names no CPU"),
       "--http-cpus 1023 (no such CPU here) is refused (exit %d)", rc);
    static const char *const bad_worker[] = {"--worker-cpus", "1023", NULL};
    rc = th_daemon_run_once(&d, bad_worker, 20);
    ok(rc != 0 && th_daemon_log_contains(&d, "--worker-cpus 1023: names no CPU"),
       "--worker-cpus 1023 is refused (exit %d)", rc);

    /* ---- pinned to one CPU: works, and the threads are where they were asked to be ---- */
    snprintf(cpu_list, sizeof cpu_list, "%d", first_cpu());
    const char *const args[] = {"--workers",
                                "1",
                                "--blas-threads",
                                "1",
                                "--http-threads",
                                "1",
                                "--http-cpus",
                                cpu_list,
                                "--worker-cpus",
                                cpu_list,
                                NULL};
    if (th_daemon_start(&d, args, 20) != 0) {
        ok(0, "daemon starts with --http-cpus %s --worker-cpus %s", cpu_list, cpu_list);
        th_daemon_fini(&d, true);
        return done_testing();
    }
    char startup[64];
    snprintf(startup, sizeof startup, "http_cpus=%s worker_cpus=%s", cpu_list, cpu_list);
    ok(th_daemon_log_contains(&d, startup), "the start-up line shows both");
    long long id = th_job_submit(&d, SPEC_SMALL, NULL);
    json_t *job = id > 0 ? th_job_wait(&d, id, "succeeded|failed|cancelled", 60, NULL) : NULL;
    is_str(th_json_str(job, "state"), "succeeded", "a job runs and succeeds");
    json_decref(job);
    /* one HTTP thread, which has served by now (each pins itself on its first request) */
    for (int i = 0; i < 8; i++) {
        th_resp r;
        th_get(&d, "/healthz", &r);
        th_resp_fini(&r);
    }
    int n = 0, on0 = 0;
    count_threads(&d, "MHD-", &n, &on0); /* MHD-single with one thread */
    is_int(n, 1, "found the HTTP thread");
    is_int(on0, 1, "it is restricted to CPU %s", cpu_list);
    /* the worker thread carries the process name; the others named thawd are main and the
     * engine's threads, which are not pinned: at least the worker must be */
    count_threads(&d, "thawd", &n, &on0);
    ok(on0 >= 1, "a thread named thawd (the worker) is restricted to CPU %s (%d of %d)", cpu_list,
       on0, n);

    is_int(th_daemon_stop(&d, 30), 0, "SIGTERM -> exit 0");
    ok(th_daemon_fini(&d, tap_failed > 0), "no sanitizer report in the daemon's log");
    return done_testing();
}
