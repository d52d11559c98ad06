/*
 * handlers_models.c: the models registry over HTTP: streamed upload of a safetensors file
 * with its architecture, promotion of a job's checkpoint, list, show, download, delete; and
 * resolving a job's "model": {"weights": name or id} to the registered file.
 *
 * DESIGN: a job spec sent over HTTP may not name a file (a remote user must not make the
 * daemon open paths of its choosing): weights come only from this registry, whose files
 * live under DATA/models and were checked by the engine (eng_weights_check: the header
 * parses and the tensor names and shapes fit the architecture, whole or body only) before
 * the row was added. Both ways in end in register_file: the checked file is placed at
 * DATA/models/m-<sha256 prefix>-<ms>.safetensors (an upload is renamed from the staging dir
 * of srv_upload; a promoted checkpoint is hard-linked, which is safe because the engine
 * replaces checkpoint files by rename and never rewrites one in place, or copied where a
 * link is impossible), then the row is added; if the row cannot be added the file is
 * removed. Job specs store the model's id, and the store refuses to delete a model a queued
 * or running job names, so what a queued job loads cannot change under it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "models.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* Names: as datasets', plus at least one non-digit (so a name is never mistaken for an id). */
static bool name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    bool digits_only = true;
    if (n < 1 || n > 64 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
        if (c < '0' || c > '9')
            digits_only = false;
    }
    return !digits_only;
}

#define NAME_RULE "1..64 characters of [A-Za-z0-9._-], not starting with '.' and not only digits"

static bool arch_ok(const char *a)
{
    for (size_t i = 0; a && i < eng_arch_count(); i++)
        if (eng_arch_name(i) && strcmp(eng_arch_name(i), a) == 0)
            return true;
    return false;
}

static void arch_list(char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t i = 0; i < eng_arch_count(); i++) {
        size_t l = strlen(buf);
        if (eng_arch_name(i))
            snprintf(buf + l, size - l, "%s%s", l ? ", " : "", eng_arch_name(i));
    }
}

static bool parse_id(const char *s, int64_t *id)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v <= 0 || s[0] == '+' || s[0] == ' ' || s[0] == '-')
        return false;
    *id = v;
    return true;
}

/* Finds the model of a path segment: an id when it is all digits, else a name. */
static int lookup(store *s, const char *seg, store_model *m)
{
    int64_t id;
    if (parse_id(seg, &id))
        return store_model_get(s, id, NULL, m);
    return name_ok(seg) ? store_model_get(s, 0, seg, m) : STORE_ENOTFOUND;
}

static json_t *model_to_json(const store_model *m)
{
    json_t *o = json_object();
    char t[40], url[64];
    srv_time_format(m->created_at, t, sizeof t);
    json_object_set_new(o, "object", json_string("model"));
    json_object_set_new(o, "id", json_integer(m->id));
    json_object_set_new(o, "name", json_string(m->name));
    json_object_set_new(o, "arch", json_string(m->arch));
    json_object_set_new(o, "fit", json_string(m->fit));
    json_t *shape = m->in_shape_json ? json_loads(m->in_shape_json, 0, NULL) : NULL;
    json_object_set_new(o, "in_shape", shape ? shape : json_null());
    json_object_set_new(o, "num_classes",
                        m->num_classes > 0 ? json_integer(m->num_classes) : json_null());
    json_object_set_new(o, "size", json_integer(m->size));
    json_object_set_new(o, "sha256", json_string(m->sha256));
    json_object_set_new(o, "created_at", json_string(t));
    json_t *src = json_object();
    if (m->source_job_id > 0) {
        json_object_set_new(src, "type", json_string("job"));
        json_object_set_new(src, "job_id", json_integer(m->source_job_id));
        json_object_set_new(src, "checkpoint", json_string(m->source_checkpoint));
    } else {
        json_object_set_new(src, "type", json_string("upload"));
    }
    json_object_set_new(o, "source", src);
    snprintf(url, sizeof url, "/v1/models/%lld/file", (long long)m->id);
    json_object_set_new(o, "download_url", json_string(url));
    return o;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Copies src to a new file dst (O_EXCL), fsync'd. 0 or -1. */
static int copy_file(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    int out = in >= 0 ? open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
    char *buf = out >= 0 ? malloc(65536) : NULL;
    ssize_t r = -1;
    while (buf && (r = read(in, buf, 65536)) > 0)
        if (write_all(out, buf, (size_t)r) != 0) {
            r = -1;
            break;
        }
    int rc = buf && r == 0 && fsync(out) == 0 ? 0 : -1;
    free(buf);
    if (out >= 0 && close(out) != 0)
        rc = -1;
    if (in >= 0)
        close(in);
    if (rc && out >= 0)
        unlink(dst);
    return rc;
}

/* Runs the engine's check of `file` against `arch`. Returns 0, or an HTTP status with msg. */
static unsigned check_weights(const char *file, const char *arch, eng_weights_info *info, char *msg,
                              size_t msz)
{
    eng_model_spec spec;
    eng_model_spec_defaults(&spec);
    snprintf(spec.arch, sizeof spec.arch, "%s", arch);
    snprintf(spec.weights, sizeof spec.weights, "%s", file);
    eng_error err = {{0}, {0}};
    int rc = eng_weights_check(&spec, info, &err);
    if (rc == 0)
        return 0;
    if (rc == ENG_EFORMAT)
        snprintf(msg, msz, "not a valid safetensors file: %s", err.text);
    else if (rc == ENG_ESHAPE)
        snprintf(msg, msz, "the weights do not fit %s: %s", arch, err.text);
    else
        snprintf(msg, msz, "the weights could not be checked: %s", err.text);
    return rc == ENG_EFORMAT || rc == ENG_ESHAPE || rc == ENG_EINVAL ? 422 : 500;
}

/* Places `src` (checked; `info` from check_weights) in DATA/models (rename when `move`,
 * else hard link or copy) and adds the row. On success fills *out (caller frees with
 * store_model_fini) and returns 0; otherwise an HTTP status with msg (src is left alone). */
static unsigned register_file(srv_app *app, const char *src, bool move, const char *name,
                              const char *arch, const eng_weights_info *info, uint64_t size,
                              const char *sha256, int64_t job_id, const char *ckpt,
                              store_model *out, char *msg, size_t msz)
{
    char dir[SRV_CONFIG_STR_MAX + 16], final[SRV_CONFIG_STR_MAX + 96];
    snprintf(dir, sizeof dir, "%s/models", app->cfg->data_dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(msg, msz, "cannot create the models directory: %s", strerror(errno));
        return 500;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(final, sizeof final, "%s/m-%.12s-%lld%03ld.safetensors", dir, sha256,
             (long long)ts.tv_sec, ts.tv_nsec / 1000000);
    int placed = move ? rename(src, final) : link(src, final);
    if (placed != 0 && !move)
        placed = copy_file(src, final);
    if (placed != 0) {
        snprintf(msg, msz, "cannot place the model file: %s", strerror(errno));
        return 500;
    }
    char shape[64];
    if (info->in_ndim == 1)
        snprintf(shape, sizeof shape, "[%zu]", info->in_shape[0]);
    else
        snprintf(shape, sizeof shape, "[%zu,null,null]", info->in_shape[0]);
    char fit[8], name_c[65], arch_c[32], sha_c[65], ckpt_c[ENG_NAME_MAX + 1];
    snprintf(fit, sizeof fit, "%s", info->fit == ENG_WEIGHTS_FIT_FULL ? "full" : "body");
    snprintf(name_c, sizeof name_c, "%s", name);
    snprintf(arch_c, sizeof arch_c, "%s", arch);
    snprintf(sha_c, sizeof sha_c, "%s", sha256);
    snprintf(ckpt_c, sizeof ckpt_c, "%s", ckpt ? ckpt : "");
    store_model m = {
        .name = name_c,
        .arch = arch_c,
        .fit = fit,
        .in_shape_json = shape,
        .num_classes = info->fit == ENG_WEIGHTS_FIT_FULL ? (int64_t)info->n_classes : 0,
        .path = final,
        .size = (int64_t)size,
        .sha256 = sha_c,
        .source_job_id = job_id,
        .source_checkpoint = job_id > 0 ? ckpt_c : NULL,
    };
    store *s;
    int64_t id = 0;
    int rc = srv_app_store(app, &s);
    if (rc == 0)
        rc = store_model_add(s, &m, &id);
    if (rc == 0)
        rc = store_model_get(s, id, NULL, out);
    if (rc != 0) {
        if (!move || rename(final, src) != 0) /* an upload goes back to its stage */
            unlink(final);
        snprintf(msg, msz, "%s",
                 rc == STORE_ECONFLICT ? "a model with this name exists"
                                       : "the model could not be recorded");
        return rc == STORE_ECONFLICT ? 409 : 500;
    }
    srv_log(SRV_LOG_INFO, "model registered id=%lld name=%s arch=%s fit=%s size=%llu",
            (long long)id, name, arch, fit, (unsigned long long)size);
    return 0;
}

static void reply_model(srv_reply *rep, const store_model *m)
{
    srv_reply_json(rep, 201, model_to_json(m));
    snprintf(rep->location, sizeof rep->location, "/v1/models/%lld", (long long)m->id);
}

/* ---- upload (driven by srv_upload in handlers_datasets.c) ---------------------------------- */

typedef struct upload_ctx {
    srv_app *app;
    char name[65];
    char arch[32];
} upload_ctx;

static int upload_begin(srv_request *req, void **ctx, srv_reply *rep)
{
    *ctx = NULL;
    const char *name = req->query(req, "name");
    const char *arch = req->query(req, "arch");
    char list[256], d[400];
    if (!name_ok(name)) {
        srv_reply_problem(rep, req, 422, "?name= is required: " NAME_RULE);
        return -1;
    }
    if (!arch_ok(arch)) {
        arch_list(list, sizeof list);
        snprintf(d, sizeof d, "?arch= is required: one of %s", list);
        srv_reply_problem(rep, req, 422, d);
        return -1;
    }
    store *s;
    store_model existing;
    if (srv_app_store(req->app, &s) == 0 && store_model_get(s, 0, name, &existing) == 0) {
        store_model_fini(&existing);
        srv_reply_problem(rep, req, 409, "a model with this name exists");
        return -1;
    }
    upload_ctx *u = calloc(1, sizeof *u);
    if (!u) {
        srv_reply_problem(rep, req, 500, "out of memory");
        return -1;
    }
    u->app = req->app;
    snprintf(u->name, sizeof u->name, "%s", name);
    snprintf(u->arch, sizeof u->arch, "%s", arch);
    *ctx = u;
    return 0;
}

static void upload_finish(void *ctx, const char *file, uint64_t size, const char *sha256,
                          srv_request *req, srv_reply *rep)
{
    upload_ctx *u = ctx;
    char msg[512];
    eng_weights_info info;
    store_model m;
    unsigned st = check_weights(file, u->arch, &info, msg, sizeof msg);
    if (st == 0)
        st = register_file(u->app, file, true, u->name, u->arch, &info, size, sha256, 0, NULL, &m,
                           msg, sizeof msg);
    if (st) {
        srv_reply_problem(rep, req, st, msg);
        return;
    }
    reply_model(rep, &m);
    store_model_fini(&m);
}

static void upload_destroy(void *ctx)
{
    free(ctx);
}

const srv_upload_kind srv_model_upload = {
    .route = "/v1/models",
    .begin = upload_begin,
    .finish = upload_finish,
    .destroy = upload_destroy,
};

/* The route-table entry for POST /v1/models: http.c streams this route's body through
 * srv_upload, so reaching the handler means the body was buffered instead (a bug). */
void srv_handle_model_create(srv_request *req, srv_reply *rep)
{
    srv_reply_problem(rep, req, 500, "the upload was not streamed");
}

/* ---- promote ------------------------------------------------------------------------------- */

void srv_handle_model_promote(srv_request *req, srv_reply *rep)
{
    int64_t job_id;
    char msg[512];
    if (!parse_id(req->params[0], &job_id)) {
        srv_reply_problem(rep, req, 404, "no job with that id");
        return;
    }
    json_error_t jerr;
    json_t *body =
        req->body ? json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!json_is_object(body)) {
        json_decref(body);
        srv_reply_problem(rep, req, 400, "the body must be a JSON object: {\"name\": ...}");
        return;
    }
    const char *key;
    json_t *val;
    json_object_foreach(body, key, val)
    {
        if (strcmp(key, "name") != 0) {
            snprintf(msg, sizeof msg, "unknown field '%.60s' (only name)", key);
            srv_reply_problem(rep, req, 422, msg);
            json_decref(body);
            return;
        }
    }
    char name[65];
    const char *nv = json_string_value(json_object_get(body, "name"));
    bool nok = name_ok(nv);
    snprintf(name, sizeof name, "%s", nok ? nv : "");
    json_decref(body);
    if (!nok) {
        srv_reply_problem(rep, req, 422, "name is required: " NAME_RULE);
        return;
    }
    store *s;
    store_job job;
    store_artifact *a = NULL;
    size_t n = 0;
    memset(&job, 0, sizeof job);
    int rc = srv_app_store(req->app, &s);
    if (rc == 0)
        rc = store_job_get(s, job_id, &job);
    if (rc) {
        srv_reply_problem(rep, req, rc == STORE_ENOTFOUND ? 404 : srv_status_for_store(rc),
                          rc == STORE_ENOTFOUND ? "no job with that id" : store_strerror(rc));
        return;
    }
    json_t *spec = json_loads(job.spec_json, 0, NULL);
    const char *arch = json_string_value(json_object_get(json_object_get(spec, "model"), "arch"));
    char arch_c[32];
    snprintf(arch_c, sizeof arch_c, "%s", arch ? arch : "mlp");
    json_decref(spec);
    store_job_fini(&job);
    rc = store_artifact_list(s, job_id, &a, &n);
    if (rc) {
        srv_reply_problem(rep, req, srv_status_for_store(rc), store_strerror(rc));
        return;
    }
    const store_artifact *hit = NULL;
    for (size_t i = 0; i < n; i++)
        if (a[i].name && strcmp(a[i].name, req->params[1]) == 0)
            hit = &a[i];
    store_model existing;
    unsigned st = 0;
    eng_weights_info info;
    store_model m;
    if (!hit || !hit->path) {
        st = 404;
        snprintf(msg, sizeof msg, "this job has no checkpoint with that name");
    } else if (store_model_get(s, 0, name, &existing) == 0) {
        store_model_fini(&existing);
        st = 409;
        snprintf(msg, sizeof msg, "a model with this name exists");
    } else if (access(hit->path, R_OK) != 0) {
        st = 404;
        snprintf(msg, sizeof msg, "the checkpoint file is gone");
    } else {
        st = check_weights(hit->path, arch_c, &info, msg, sizeof msg);
        if (st == 0)
            st = register_file(req->app, hit->path, false, name, arch_c, &info, (uint64_t)hit->size,
                               hit->sha256, job_id, hit->name, &m, msg, sizeof msg);
    }
    store_artifact_list_free(a, n);
    if (st) {
        srv_reply_problem(rep, req, st, msg);
        return;
    }
    reply_model(rep, &m);
    store_model_fini(&m);
}

/* ---- list, show, download, delete --------------------------------------------------------- */

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
        srv_reply_problem(rep, req, 422, detail);
        return false;
    }
    *out = x;
    return true;
}

void srv_handle_model_list(srv_request *req, srv_reply *rep)
{
    long long limit, after;
    if (!query_int(req, rep, "limit", 1, 100, 20, &limit) ||
        !query_int(req, rep, "after", 0, INT64_MAX, 0, &after))
        return;
    store *s;
    store_model *arr = NULL;
    size_t n = 0;
    bool more = false;
    int rc = srv_app_store(req->app, &s);
    if (rc == 0)
        rc = store_model_list(s, after, (size_t)limit, &arr, &n, &more);
    if (rc) {
        srv_reply_problem(rep, req, srv_status_for_store(rc), store_strerror(rc));
        return;
    }
    json_t *o = json_object(), *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, model_to_json(&arr[i]));
    store_model_list_free(arr, n);
    json_object_set_new(o, "object", json_string("list"));
    json_object_set_new(o, "data", data);
    json_object_set_new(o, "has_more", json_boolean(more));
    srv_reply_json(rep, 200, o);
}

/* Looks up params[0]; on failure answers and returns false. */
static bool load_model(srv_request *req, srv_reply *rep, store **s, store_model *m)
{
    int rc = srv_app_store(req->app, s);
    if (rc == 0)
        rc = lookup(*s, req->params[0], m);
    if (rc) {
        srv_reply_problem(rep, req, rc == STORE_ENOTFOUND ? 404 : srv_status_for_store(rc),
                          rc == STORE_ENOTFOUND ? "no such model" : store_strerror(rc));
        return false;
    }
    return true;
}

void srv_handle_model_get(srv_request *req, srv_reply *rep)
{
    store *s;
    store_model m;
    if (!load_model(req, rep, &s, &m))
        return;
    srv_reply_json(rep, 200, model_to_json(&m));
    store_model_fini(&m);
}

void srv_handle_model_file(srv_request *req, srv_reply *rep)
{
    store *s;
    store_model m;
    if (!load_model(req, rep, &s, &m))
        return;
    int fd = open(m.path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        srv_log(SRV_LOG_ERROR, "model file unreadable id=%lld path=%s err=%s", (long long)m.id,
                m.path, strerror(errno));
        if (fd >= 0)
            close(fd);
        store_model_fini(&m);
        srv_reply_problem(rep, req, 500, "the model's file cannot be read");
        return;
    }
    rep->status = 200;
    rep->content_type = "application/octet-stream";
    rep->fd = fd;
    rep->fd_size = (uint64_t)sb.st_size;
    snprintf(rep->etag, sizeof rep->etag, "\"%.64s\"", m.sha256);
    snprintf(rep->disposition, sizeof rep->disposition,
             "attachment; filename=\"%.64s.safetensors\"", m.name);
    store_model_fini(&m);
}

void srv_handle_model_delete(srv_request *req, srv_reply *rep)
{
    store *s;
    store_model m;
    if (!load_model(req, rep, &s, &m))
        return;
    int64_t users = 0, id = m.id;
    char *path = NULL;
    store_model_fini(&m);
    int rc = store_model_delete(s, id, &users, &path);
    if (rc == STORE_ECONFLICT) {
        char msg[128];
        snprintf(msg, sizeof msg, "the model is used by %lld queued or running job(s)",
                 (long long)users);
        srv_reply_problem(rep, req, 409, msg);
        return;
    }
    if (rc) {
        srv_reply_problem(rep, req, rc == STORE_ENOTFOUND ? 404 : srv_status_for_store(rc),
                          rc == STORE_ENOTFOUND ? "no such model" : store_strerror(rc));
        return;
    }
    if (path && unlink(path) != 0)
        srv_log(SRV_LOG_WARN, "cannot remove model file path=%s err=%s", path, strerror(errno));
    srv_log(SRV_LOG_INFO, "model deleted id=%lld", (long long)id);
    free(path);
    rep->status = 204;
}

/* ---- resolver ------------------------------------------------------------------------------ */

int srv_model_resolve(void *user, int64_t id, const char *name, srv_model_ref *out)
{
    srv_app *app = user;
    store *s;
    store_model m;
    memset(out, 0, sizeof *out);
    int rc = srv_app_store(app, &s);
    if (rc == 0)
        rc = name ? (name_ok(name) ? store_model_get(s, 0, name, &m) : STORE_ENOTFOUND)
                  : store_model_get(s, id, NULL, &m);
    if (rc)
        return rc == STORE_ENOTFOUND ? -1 : -2;
    out->id = m.id;
    snprintf(out->name, sizeof out->name, "%s", m.name);
    snprintf(out->arch, sizeof out->arch, "%s", m.arch);
    snprintf(out->path, sizeof out->path, "%s", m.path);
    out->body_fit_only = strcmp(m.fit, "body") == 0;
    store_model_fini(&m);
    return 0;
}

srv_spec_registry srv_spec_registry_of(srv_app *app)
{
    srv_spec_registry r = {.dataset = srv_dataset_resolve, .model = srv_model_resolve, .user = app};
    return r;
}
