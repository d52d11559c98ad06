/*
 * handlers_jobs.c: the /v1/jobs resource: submit (validation, dry run, idempotency,
 * priority), list, get (the dashboard's detail: queue position, stage timeline, ETA), cancel,
 * retry, delete, events (JSON pages or a live SSE stream), checkpoints (with Range).
 * Metrics history and lr_find results are in handlers_results.c.
 *
 * Each handler runs a few short storage calls on the HTTP thread's own connection and
 * answers; submit and cancel only poke the worker pool (notify / cancel flag), never wait.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datasets.h"
#include "handlers.h"
#include "jobs_view.h"
#include "json_io.h"
#include "log.h"
#include "models.h"
#include "sse.h"
#include "workers.h"

/* Deepest JSON nesting a job spec may use (it needs 4); deeper bodies get 400. */
#define MAX_JSON_DEPTH 32
#define PRIORITY_MIN   -100
#define PRIORITY_MAX   100

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

/* The API object of job `j` (list form: no stage timeline). */
static json_t *job_json(store *s, const store_job *j)
{
    return srv_job_view(s, j, false);
}

/* The API object of job `j` with its stage timeline (single-job answers). */
static json_t *job_detail(store *s, const store_job *j)
{
    return srv_job_view(s, j, true);
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

/* Deepest nesting of arrays/objects in JSON text (strings skipped). */
static int json_depth(const char *t, size_t len)
{
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = t[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return max;
}

/* A 64-hex-digit fingerprint of the request (four FNV-1a 64 lanes over the body and the
 * priority), bound to an Idempotency-Key: a retry must send the same request. */
static void request_fingerprint(const char *body, size_t len, char out[65])
{
    uint64_t h[4] = {0xcbf29ce484222325ULL, 0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL,
                     0x165667b19e3779f9ULL};
    for (size_t i = 0; i < len; i++)
        for (int k = 0; k < 4; k++)
            h[k] = (h[k] ^ (unsigned char)body[i]) * 0x100000001b3ULL;
    snprintf(out, 65, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, h[0], h[1], h[2],
             h[3]);
}

/* Adds one field error to a new 422 problem and answers it. */
static void reply_field_error(srv_request *req, srv_reply *rep, const char *pointer,
                              const char *detail)
{
    json_t *p = srv_problem_new(422, detail, req->path);
    json_object_set_new(p, "errors",
                        json_pack("[{s:s, s:s}]", "pointer", pointer, "detail", detail));
    srv_reply_problem_json(rep, 422, p);
}

/* The stages the job will run, for a dry run: index, op and the planned epochs. */
static json_t *planned_stages(const json_t *norm)
{
    json_t *out = json_array();
    json_t *stages = json_object_get(norm, "stages");
    for (size_t i = 0; out && i < json_array_size(stages); i++) {
        json_t *st = json_array_get(stages, i);
        json_t *o = json_pack("{s:i, s:O}", "index", (int)i, "op", json_object_get(st, "op"));
        json_t *ep = json_object_get(st, "epochs");
        if (o && ep)
            json_object_set(o, "epochs", ep);
        json_array_append_new(out, o);
    }
    return out;
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
    const char *dry = req->query(req, "dry_run");
    bool dry_run = dry && (strcmp(dry, "true") == 0 || strcmp(dry, "1") == 0);
    if (dry && !dry_run && strcmp(dry, "false") != 0 && strcmp(dry, "0") != 0) {
        json_t *p =
            srv_problem_new(422, "query parameter dry_run must be true or false", req->path);
        json_object_set_new(
            p, "errors",
            json_pack("[{s:s, s:s}]", "parameter", "dry_run", "detail", "must be true or false"));
        srv_reply_problem_json(rep, 422, p);
        return;
    }
    const char *idem = req->header ? req->header(req, "Idempotency-Key") : NULL;
    if (idem && (!idem[0] || strlen(idem) > 255)) {
        srv_reply_problem(rep, req, 400, "the Idempotency-Key header must be 1..255 characters");
        return;
    }
    srv_spec *spec = calloc(1, sizeof *spec);
    srv_spec_errors *errs = calloc(1, sizeof *errs);
    char *text = NULL;
    json_t *root = NULL;
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
    if (json_depth(req->body, req->body_len) > MAX_JSON_DEPTH) {
        char detail[96];
        snprintf(detail, sizeof detail, "the JSON is nested deeper than %d levels", MAX_JSON_DEPTH);
        srv_reply_problem(rep, req, 400, detail);
        goto done;
    }
    json_error_t jerr;
    root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char detail[256];
        snprintf(detail, sizeof detail, "invalid JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        srv_reply_problem(rep, req, 400, detail);
        goto done;
    }
    /* priority is a submission option, not part of the training spec */
    long long priority = 0;
    json_t *pr = json_is_object(root) ? json_object_get(root, "priority") : NULL;
    if (pr) {
        if (!json_is_integer(pr) || json_integer_value(pr) < PRIORITY_MIN ||
            json_integer_value(pr) > PRIORITY_MAX) {
            reply_field_error(req, rep, "/priority", "must be an integer in -100..100");
            goto done;
        }
        priority = json_integer_value(pr);
        json_object_del(root, "priority");
    }
    srv_spec_registry reg = srv_spec_registry_of(req->app);
    int parsed = srv_spec_parse_reg(root, req->app->fmnist_dir, &reg, spec, errs);
    if (parsed != 0) {
        srv_reply_problem_json(rep, errs->status == 400 ? 400 : 422,
                               srv_problem_from_spec_errors(errs, req->path));
        goto done;
    }
    if (dry_run) {
        json_t *o = json_pack("{s:s, s:b, s:I, s:O, s:o}", "object", "job.dry_run", "valid", 1,
                              "priority", (json_int_t)priority, "spec", spec->normalized, "stages",
                              planned_stages(spec->normalized));
        srv_reply_json(rep, 200, o);
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
    char fp[65];
    request_fingerprint(req->body, req->body_len, fp);
    store_submit sub = {
        .name = spec->has_name ? spec->name : NULL,
        .spec_json = text,
        .priority = (int32_t)priority,
        .idempotency_key = idem,
        .request_sha256 = idem ? fp : NULL,
    };
    int64_t id = 0;
    bool replayed = false;
    int rc = store_job_submit(s, &sub, &id, &replayed);
    if (rc == STORE_ECONFLICT) {
        srv_reply_problem(rep, req, 422,
                          "this Idempotency-Key was already used with a different request");
        goto done;
    }
    if (rc != 0) {
        reply_store_error(req, rep, rc, "enqueue");
        goto done;
    }
    if (!replayed) {
        srv_log(SRV_LOG_INFO, "job queued job=%lld stages=%zu priority=%lld", (long long)id,
                spec->eng.n_stages, priority);
        if (req->app->workers)
            srv_workers_notify(req->app->workers);
    }
    rc = store_job_get(s, id, &job);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "job");
        goto done;
    }
    srv_reply_json(rep, 201, job_detail(s, &job));
    snprintf(rep->location, sizeof rep->location, "/v1/jobs/%lld", (long long)id);
    if (replayed)
        srv_reply_header(rep, "Idempotent-Replayed", "true");
done:
    json_decref(root);
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

/* The status poll: the document comes from the per-thread cache of jobs_view.c, revalidated
 * against the database's version (one indexed read when nothing changed). */
void srv_handle_job_get(srv_request *req, srv_reply *rep)
{
    store *s;
    int64_t id;
    if (!parse_id(req->params[0], &id)) {
        srv_reply_problem(rep, req, 404, "no job with that id");
        return;
    }
    if (!get_store(req, rep, &s))
        return;
    char *body = NULL;
    size_t len = 0;
    int rc = srv_job_doc(s, id, &body, &len, rep->etag);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "job");
        return;
    }
    rep->status = 200;
    rep->content_type = "application/json";
    rep->body = body;
    rep->body_len = len;
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
    if (job.state == STORE_JOB_CANCELLED &&
        store_event_add(s, id, "info", "state", "job cancelled while queued",
                        "{\"state\":\"cancelled\"}", NULL) == 0)
        srv_sse_notify(req->app->sse, id);
    srv_reply_json(rep, 200, job_detail(s, &job));
    store_job_fini(&job);
}

/* Does the Accept header ask for an event stream? */
static bool wants_stream(srv_request *req)
{
    const char *acc = req->header ? req->header(req, "Accept") : NULL;
    const char *q = req->query(req, "stream");
    return (acc && strstr(acc, "text/event-stream")) || (q && strcmp(q, "true") == 0);
}

void srv_handle_job_events(srv_request *req, srv_reply *rep)
{
    store *s;
    store_job job;
    memset(&job, 0, sizeof job);
    long long after, limit, heartbeat;
    if (!query_int(req, rep, "after", 0, INT64_MAX, 0, &after) ||
        !query_int(req, rep, "limit", 1, 1000, 100, &limit) ||
        !query_int(req, rep, "heartbeat", 1, 60, 15, &heartbeat))
        return;
    if (!get_store(req, rep, &s) || !load_job(req, rep, s, &job))
        return;
    if (wants_stream(req)) {
        /* a reconnecting EventSource resends the last id it saw */
        const char *last = req->header ? req->header(req, "Last-Event-ID") : NULL;
        if (last && *last) {
            char *end;
            errno = 0;
            long long v = strtoll(last, &end, 10);
            if (errno || *end || v < 0) {
                store_job_fini(&job);
                srv_reply_problem(rep, req, 400, "Last-Event-ID must be an event id");
                return;
            }
            after = v;
        }
        rep->status = 200;
        rep->content_type = "text/event-stream";
        rep->stream = true;
        rep->stream_job = job.id;
        rep->stream_after = after;
        rep->stream_heartbeat_ms = (int)heartbeat * 1000;
        store_job_fini(&job);
        return;
    }
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
    int64_t ev_last = 0;
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(data, srv_event_to_json(&ev[i]));
        ev_last = ev[i].id;
    }
    store_event_list_free(ev, n);
    json_t *body = json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", more);
    if (more && n > 0) {
        char link[160];
        snprintf(link, sizeof link, "</v1/jobs/%s/events?after=%lld&limit=%lld>; rel=\"next\"",
                 req->params[0], (long long)ev_last, limit);
        srv_reply_json(rep, 200, body);
        srv_reply_header(rep, "Link", link);
        return;
    }
    srv_reply_json(rep, 200, body);
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

/* Parses a single "bytes=a-b" / "bytes=a-" / "bytes=-n" range against a file of `size`
 * bytes. Returns 1 with [*first, *last], 0 when the header is not a single byte range we
 * serve (ignored: the whole file is sent, as RFC 9110 allows), -1 when unsatisfiable. */
static int parse_range(const char *h, uint64_t size, uint64_t *first, uint64_t *last)
{
    if (strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return 0;
    const char *p = h + 6;
    char *end;
    if (*p == '-') {
        errno = 0;
        unsigned long long n = strtoull(p + 1, &end, 10);
        if (errno || *end || end == p + 1)
            return 0;
        if (n == 0 || size == 0)
            return -1;
        *first = n >= size ? 0 : size - n;
        *last = size - 1;
        return 1;
    }
    errno = 0;
    unsigned long long a = strtoull(p, &end, 10);
    if (errno || end == p || *end != '-')
        return 0;
    p = end + 1;
    unsigned long long b = size ? size - 1 : 0;
    if (*p) {
        b = strtoull(p, &end, 10);
        if (errno || *end)
            return 0;
        if (b < a)
            return 0;
    }
    if (a >= size)
        return -1;
    if (b >= size)
        b = size - 1;
    *first = a;
    *last = b;
    return 1;
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
    uint64_t size = (uint64_t)sb.st_size, first = 0, last = size ? size - 1 : 0;
    snprintf(rep->etag, sizeof rep->etag, "\"%.64s\"", hit->sha256 ? hit->sha256 : "");
    const char *range = req->header ? req->header(req, "Range") : NULL;
    const char *if_range = req->header ? req->header(req, "If-Range") : NULL;
    if (range && if_range && strcmp(if_range, rep->etag) != 0)
        range = NULL; /* the client's copy is another file: send it whole */
    int rr = range ? parse_range(range, size, &first, &last) : 0;
    if (rr < 0) {
        close(fd);
        char cr[64];
        snprintf(cr, sizeof cr, "bytes */%" PRIu64, size);
        srv_reply_problem(rep, req, 416, "the range is outside the file");
        srv_reply_header(rep, "Content-Range", cr);
        store_artifact_list_free(a, n);
        return;
    }
    rep->content_type = "application/octet-stream";
    rep->fd = fd;
    srv_reply_header(rep, "Accept-Ranges", "bytes");
    if (rr > 0) {
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, first, last, size);
        srv_reply_header(rep, "Content-Range", cr);
        rep->status = 206;
        rep->fd_offset = first;
        rep->fd_size = last - first + 1;
    } else {
        rep->status = 200;
        rep->fd_size = size;
    }
    snprintf(rep->disposition, sizeof rep->disposition,
             "attachment; filename=\"%.100s.safetensors\"", hit->name);
    store_artifact_list_free(a, n);
}

void srv_handle_job_retry(srv_request *req, srv_reply *rep)
{
    store *s;
    int64_t id;
    if (!parse_id(req->params[0], &id)) {
        srv_reply_problem(rep, req, 404, "no job with that id");
        return;
    }
    if (atomic_load(&req->app->shutting_down)) {
        srv_reply_problem(rep, req, 503, "the daemon is shutting down");
        return;
    }
    if (!get_store(req, rep, &s))
        return;
    int rc = store_job_retry(s, id);
    store_job job;
    memset(&job, 0, sizeof job);
    if (rc == STORE_ECONFLICT) {
        char detail[128];
        if (store_job_get(s, id, &job) == 0)
            snprintf(detail, sizeof detail,
                     "job %lld is %s; only failed or cancelled jobs can be retried", (long long)id,
                     store_job_state_name(job.state));
        else
            snprintf(detail, sizeof detail, "job %lld cannot be retried", (long long)id);
        store_job_fini(&job);
        srv_reply_problem(rep, req, 409, detail);
        return;
    }
    if (rc != 0) {
        reply_store_error(req, rep, rc, "job");
        return;
    }
    if (store_event_add(s, id, "info", "state", "job queued again by a retry request",
                        "{\"state\":\"queued\",\"retry\":true}", NULL) != 0)
        srv_log(SRV_LOG_WARN, "retry event not stored job=%lld", (long long)id);
    srv_sse_notify(req->app->sse, id);
    if (req->app->workers)
        srv_workers_notify(req->app->workers);
    srv_log(SRV_LOG_INFO, "job retry job=%lld", (long long)id);
    rc = store_job_get(s, id, &job);
    if (rc != 0) {
        reply_store_error(req, rep, rc, "job");
        return;
    }
    srv_reply_json(rep, 200, job_detail(s, &job));
    store_job_fini(&job);
}

/* Removes a job's directory: the engine writes only plain files into it. */
static void remove_job_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT)
            srv_log(SRV_LOG_WARN, "cannot open job files path=%s err=%s", dir, strerror(errno));
        return;
    }
    struct dirent *e;
    char path[SRV_CONFIG_STR_MAX + 400];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            srv_log(SRV_LOG_WARN, "cannot remove path=%s err=%s", path, strerror(errno));
    }
    closedir(d);
    if (rmdir(dir) != 0)
        srv_log(SRV_LOG_WARN, "cannot remove path=%s err=%s", dir, strerror(errno));
}

void srv_handle_job_delete(srv_request *req, srv_reply *rep)
{
    store *s;
    int64_t id;
    if (!parse_id(req->params[0], &id)) {
        srv_reply_problem(rep, req, 404, "no job with that id");
        return;
    }
    if (!get_store(req, rep, &s))
        return;
    int rc = store_job_delete(s, id);
    if (rc == STORE_ECONFLICT) {
        char detail[128];
        snprintf(detail, sizeof detail,
                 "job %lld has not finished; cancel it first, then delete it", (long long)id);
        srv_reply_problem(rep, req, 409, detail);
        return;
    }
    if (rc != 0) {
        reply_store_error(req, rep, rc, "job");
        return;
    }
    char dir[SRV_CONFIG_STR_MAX + 48];
    snprintf(dir, sizeof dir, "%s/%lld", req->app->jobs_dir, (long long)id);
    remove_job_dir(dir);
    srv_log(SRV_LOG_INFO, "job deleted job=%lld", (long long)id);
    rep->status = 204;
}
