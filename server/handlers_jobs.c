/*
 * handlers_jobs.c: the /v1/jobs resource: submit, list, get, cancel, events, checkpoints.
 *
 * Each handler runs a few short storage calls on the HTTP thread's own connection and
 * answers; submit and cancel only poke the worker pool (notify / cancel flag), never wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handlers.h"
#include "json_io.h"
#include "log.h"
#include "workers.h"

/* Answers a storage failure with the status from the one table. */
static void reply_store_error(srv_request *req, srv_reply *rep, int rc, const char *what)
{
    unsigned status = srv_status_for_store(rc);
    char detail[160];
    if (status == 404)
        snprintf(detail, sizeof detail, "%s not found", what);
    else
        snprintf(detail, sizeof detail, "%s: %s", what, store_strerror(rc));
    if (status >= 500)
        srv_log(SRV_LOG_ERROR, "storage error path=%s what=\"%s\" err=%s", req->path, what,
                store_strerror(rc));
    srv_reply_problem(rep, req, status, detail);
}

static bool get_store(srv_request *req, srv_reply *rep, store **s)
{
    int rc = srv_app_store(req->app, s);
    if (rc != 0) {
        srv_reply_problem(rep, req, 503, "storage is unavailable");
        return false;
    }
    return true;
}

/* Parses a decimal id in 1..INT64_MAX; returns false for anything else. */
static bool parse_id(const char *s, int64_t *id)
{
    if (!s || !*s || strlen(s) > 18)
        return false;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v < 1)
        return false;
    *id = v;
    return true;
}

/* Reads query parameter `key` as an integer in [lo, hi] (default `def`). On a bad value
 * answers 422 and returns false. */
static bool query_int(srv_request *req, srv_reply *rep, const char *key, long long lo, long long hi,
                      long long def, long long *out)
{
    const char *v = req->query(req, key);
    *out = def;
    if (!v)
        return true;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        char detail[160];
        snprintf(detail, sizeof detail, "query parameter %s must be an integer in %lld..%lld", key,
                 lo, hi);
        json_t *p = srv_problem_new(422, detail, req->path);
        json_object_set_new(p, "errors",
                            json_pack("[{s:s, s:s}]", "parameter", key, "detail", detail));
        srv_reply_problem_json(rep, 422, p);
        return false;
    }
    *out = x;
    return true;
}

/* The API object of job `j`, with its queue position when queued. */
static json_t *job_json(store *s, const store_job *j)
{
    int64_t pos = -1;
    if (j->state == STORE_JOB_QUEUED) {
        int64_t n = 0;
        if (store_job_count(s, STORE_JOB_QUEUED, j->id, &n) == 0)
            pos = n;
    }
    return srv_job_to_json(j, pos);
}

/* Loads the job named by the {id} capture; answers 404/5xx itself and returns false. */
static bool load_job(srv_request *req, srv_reply *rep, store *s, store_job *j)
{
    int64_t id;
    if (!parse_id(req->params[0], &id)) {
        srv_reply_problem(rep, req, 404, "no job with that id");
        return false;
    }
    int rc = store_job_get(s, id, j);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "job");
        return false;
    }
    return true;
}

static bool is_json_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    static const char want[] = "application/json";
    if (strncasecmp(ct, want, sizeof want - 1) != 0)
        return false;
    char next = ct[sizeof want - 1];
    return next == '\0' || next == ';' || next == ' ';
}

void srv_handle_job_create(srv_request *req, srv_reply *rep)
{
    if (atomic_load(&req->app->shutting_down)) {
        srv_reply_problem(rep, req, 503, "the daemon is shutting down");
        return;
    }
    if (!is_json_type(req->content_type)) {
        srv_reply_problem(rep, req, 415, "the body must be application/json");
        return;
    }
    srv_spec *spec = calloc(1, sizeof *spec);
    srv_spec_errors *errs = calloc(1, sizeof *errs);
    char *text = NULL;
    store_job job;
    memset(&job, 0, sizeof job);
    if (!spec || !errs) {
        srv_reply_problem(rep, req, 503, "out of memory");
        goto done;
    }
    if (req->body_len == 0) {
        srv_reply_problem(rep, req, 400, "the request body is empty; send a job spec");
        goto done;
    }
    if (srv_spec_parse_text(req->body, req->body_len, req->app->fmnist_dir, spec, errs) != 0) {
        srv_reply_problem_json(rep, errs->status == 400 ? 400 : 422,
                               srv_problem_from_spec_errors(errs, req->path));
        goto done;
    }
    text = srv_spec_dump(spec);
    if (!text) {
        srv_reply_problem(rep, req, 503, "out of memory");
        goto done;
    }
    store *s;
    if (!get_store(req, rep, &s))
        goto done;
    int64_t id = 0;
    int rc = store_job_enqueue(s, spec->has_name ? spec->name : NULL, text, &id);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "enqueue");
        goto done;
    }
    srv_log(SRV_LOG_INFO, "job queued job=%lld stages=%zu", (long long)id, spec->eng.n_stages);
    if (req->app->workers)
        srv_workers_notify(req->app->workers);
    rc = store_job_get(s, id, &job);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "job");
        goto done;
    }
    srv_reply_json(rep, 201, job_json(s, &job));
    snprintf(rep->location, sizeof rep->location, "/v1/jobs/%lld", (long long)id);
done:
    store_job_fini(&job);
    free(text);
    srv_spec_fini(spec);
    free(spec);
    free(errs);
}

void srv_handle_job_list(srv_request *req, srv_reply *rep)
{
    store_job_state st;
    const char *state = req->query(req, "state");
    if (state && store_job_state_parse(state, &st) != 0) {
        const char *detail =
            "query parameter state must be queued, running, succeeded, failed or cancelled";
        json_t *p = srv_problem_new(422, detail, req->path);
        json_object_set_new(p, "errors",
                            json_pack("[{s:s, s:s}]", "parameter", "state", "detail", detail));
        srv_reply_problem_json(rep, 422, p);
        return;
    }
    long long limit, after;
    if (!query_int(req, rep, "limit", 1, 100, 20, &limit) ||
        !query_int(req, rep, "after", 0, INT64_MAX, 0, &after))
        return;
    store *s;
    if (!get_store(req, rep, &s))
        return;
    store_job *jobs = NULL;
    size_t n = 0;
    bool more = false;
    int rc = store_job_list(s, state ? &st : NULL, after, (size_t)limit, &jobs, &n, &more);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "job list");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, job_json(s, &jobs[i]));
    store_job_list_free(jobs, n);
    srv_reply_json(rep, 200,
                   json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", more));
}

void srv_handle_job_get(srv_request *req, srv_reply *rep)
{
    store *s;
    store_job job;
    memset(&job, 0, sizeof job);
    if (!get_store(req, rep, &s) || !load_job(req, rep, s, &job))
        return;
    srv_reply_json(rep, 200, job_json(s, &job));
    store_job_fini(&job);
}

void srv_handle_job_cancel(srv_request *req, srv_reply *rep)
{
    store *s;
    int64_t id;
    if (!parse_id(req->params[0], &id)) {
        srv_reply_problem(rep, req, 404, "no job with that id");
        return;
    }
    if (!get_store(req, rep, &s))
        return;
    store_job job;
    memset(&job, 0, sizeof job);
    int rc = store_job_cancel(s, id, &job);
    if (rc == STORE_ECONFLICT) {
        store_job_fini(&job);
        store_job cur;
        memset(&cur, 0, sizeof cur);
        char detail[128];
        if (store_job_get(s, id, &cur) == 0)
            snprintf(detail, sizeof detail, "job %lld is already %s", (long long)id,
                     store_job_state_name(cur.state));
        else
            snprintf(detail, sizeof detail, "job %lld can no longer be cancelled", (long long)id);
        store_job_fini(&cur);
        srv_reply_problem(rep, req, 409, detail);
        return;
    }
    if (rc != 0) {
        store_job_fini(&job);
        reply_store_error(req, rep, rc, "job");
        return;
    }
    if (job.state == STORE_JOB_RUNNING && req->app->workers)
        srv_workers_cancel(req->app->workers, id);
    srv_log(SRV_LOG_INFO, "job cancel job=%lld state=%s", (long long)id,
            store_job_state_name(job.state));
    srv_reply_json(rep, 200, job_json(s, &job));
    store_job_fini(&job);
}

void srv_handle_job_events(srv_request *req, srv_reply *rep)
{
    store *s;
    store_job job;
    memset(&job, 0, sizeof job);
    long long after, limit;
    if (!query_int(req, rep, "after", 0, INT64_MAX, 0, &after) ||
        !query_int(req, rep, "limit", 1, 1000, 100, &limit))
        return;
    if (!get_store(req, rep, &s) || !load_job(req, rep, s, &job))
        return;
    store_event *ev = NULL;
    size_t n = 0;
    bool more = false;
    int rc = store_event_list(s, job.id, after, (size_t)limit, &ev, &n, &more);
    store_job_fini(&job);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "events");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, srv_event_to_json(&ev[i]));
    store_event_list_free(ev, n);
    srv_reply_json(rep, 200,
                   json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", more));
}

void srv_handle_job_checkpoints(srv_request *req, srv_reply *rep)
{
    store *s;
    store_job job;
    memset(&job, 0, sizeof job);
    if (!get_store(req, rep, &s) || !load_job(req, rep, s, &job))
        return;
    store_artifact *a = NULL;
    size_t n = 0;
    int rc = store_artifact_list(s, job.id, &a, &n);
    store_job_fini(&job);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "checkpoints");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, srv_artifact_to_json(&a[i]));
    store_artifact_list_free(a, n);
    srv_reply_json(rep, 200,
                   json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", 0));
}

void srv_handle_job_checkpoint_get(srv_request *req, srv_reply *rep)
{
    store *s;
    store_job job;
    memset(&job, 0, sizeof job);
    if (!get_store(req, rep, &s) || !load_job(req, rep, s, &job))
        return;
    store_artifact *a = NULL;
    size_t n = 0;
    int rc = store_artifact_list(s, job.id, &a, &n);
    store_job_fini(&job);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "checkpoints");
        return;
    }
    const store_artifact *hit = NULL;
    for (size_t i = 0; i < n; i++)
        if (a[i].name && strcmp(a[i].name, req->params[1]) == 0)
            hit = &a[i];
    if (!hit || !hit->path) {
        store_artifact_list_free(a, n);
        srv_reply_problem(rep, req, 404, "this job has no checkpoint with that name");
        return;
    }
    int fd = open(hit->path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        srv_log(SRV_LOG_WARN, "checkpoint file unreadable path=%s err=%s", hit->path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        store_artifact_list_free(a, n);
        srv_reply_problem(rep, req, 404, "the checkpoint file is gone");
        return;
    }
    rep->status = 200;
    rep->content_type = "application/octet-stream";
    rep->fd = fd;
    rep->fd_size = (uint64_t)sb.st_size;
    snprintf(rep->disposition, sizeof rep->disposition,
             "attachment; filename=\"%.100s.safetensors\"", hit->name);
    store_artifact_list_free(a, n);
}
