/*
 * test_api_models.c: the models registry through the real daemon. A short cnn-small job on a
 * tiny IDX dataset (made here) saves weights, which are promoted to a model, downloaded
 * (sha256 checked) and uploaded again under another name; malformed and wrong-architecture
 * uploads are refused with 422 naming the problem; list/show work by id and name; a job
 * naming a file path in "weights" is refused at /model/weights; a transfer job with
 * {"weights": model, "body_only": true} succeeds; a model a running job uses cannot be
 * deleted until the job ends.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        char *g = realloc(b->p, b->cap);
        if (!g)
            abort();
        b->p = g;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void tar_entry(buf *t, const char *name, const void *data, size_t n)
{
    char h[512];
    memset(h, 0, sizeof h);
    snprintf(h, 100, "%s", name);
    snprintf(h + 100, 8, "%07o", 0644);
    snprintf(h + 108, 8, "%07o", 0);
    snprintf(h + 116, 8, "%07o", 0);
    snprintf(h + 124, 12, "%011o", (unsigned)n);
    snprintf(h + 136, 12, "%011o", 0);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    put(t, h, 512);
    put(t, data, n);
    char pad[512] = {0};
    if (n % 512)
        put(t, pad, 512 - n % 512);
}

/* IDX images (n x 8 x 8 bytes: class 0 dark, class 1 bright, a little texture) and labels. */
static void idx_pair(buf *tar, const char *prefix, int n)
{
    buf im = {0}, lb = {0};
    unsigned char h[16];
    be32(h, 0x803);
    be32(h + 4, (uint32_t)n);
    be32(h + 8, 8);
    be32(h + 12, 8);
    put(&im, h, 16);
    be32(h, 0x801);
    be32(h + 4, (uint32_t)n);
    put(&lb, h, 8);
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(i % 2), px[64];
        for (int k = 0; k < 64; k++)
            px[k] = (unsigned char)((c ? 180 : 30) + (k * 7 + i * 13) % 40);
        put(&im, px, 64);
        put(&lb, &c, 1);
    }
    char name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    tar_entry(tar, name, im.p, im.n);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    tar_entry(tar, name, lb.p, lb.n);
    free(im.p);
    free(lb.p);
}

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc(sz > 0 ? (size_t)sz : 1);
    *n = p ? fread(p, 1, (size_t)sz, f) : 0;
    fclose(f);
    return p;
}

static long long upload(const th_daemon *d, const char *query, const char *body, size_t n,
                        th_resp *r)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/models?%s", query);
    th_request(d, "POST", path, "application/octet-stream", body, n, r);
    return r->status == 201 ? th_json_int(r->json, "id", -1) : -1;
}

static bool detail_has(const th_resp *r, const char *needle)
{
    const char *dt = r->json ? th_json_str(r->json, "detail") : NULL;
    bool has = dt && strstr(dt, needle);
    if (!has)
        diag("detail %s lacks '%s'", dt ? dt : "(none)", needle);
    return has;
}

static const char *job_spec(const char *model_extra, int epochs, char *buf_, size_t size)
{
    snprintf(buf_, size,
             "{\"model\": {\"arch\": \"cnn-small\"%s}, \"data\": {\"dataset\": \"tiny\", "
             "\"normalize\": \"none\"}, \"batch_size\": 16, \"stages\": [{\"op\": \"fit\", "
             "\"epochs\": %d, \"lr\": 0.01}, {\"op\": \"save\", \"name\": \"model\"}]}",
             model_extra, epochs);
    return buf_;
}

int main(void)
{
    th_daemon d;
    if (th_daemon_init(&d, "models") != 0)
        return 1;
    ok(th_daemon_start(&d, NULL, 60) == 0, "daemon starts");
    th_resp r;
    char spec[1024], path[256], file[700], sha[65];

    /* a tiny IDX dataset: 32 training and 8 test images of 1x8x8 in 2 classes */
    buf tar = {0};
    idx_pair(&tar, "train", 32);
    idx_pair(&tar, "t10k", 8);
    char z[1024] = {0};
    put(&tar, z, sizeof z);
    th_request(&d, "POST", "/v1/datasets?format=idx&name=tiny", "application/x-tar", tar.p, tar.n,
               &r);
    long long ds = r.status == 202 ? th_json_int(r.json, "id", -1) : -1;
    th_resp_fini(&r);
    /* accepted as "processing"; the daemon's processing thread makes it ready */
    bool ready = false;
    snprintf(path, sizeof path, "/v1/datasets/%lld", ds);
    for (int i = 0; i < 600 && ds > 0 && !ready; i++) {
        th_get(&d, path, &r);
        const char *st = th_json_str(r.json, "state");
        ready = st && strcmp(st, "ready") == 0;
        bool processing = st && strcmp(st, "processing") == 0;
        th_resp_fini(&r);
        if (!processing)
            break;
        th_sleep_ms(100);
    }
    ok(ready, "the tiny dataset is registered (202, then ready)");
    free(tar.p);

    /* a short job that saves weights */
    long long job = th_job_submit(&d, job_spec("", 1, spec, sizeof spec), NULL);
    json_t *j = job > 0 ? th_job_wait(&d, job, "succeeded|failed", 300, NULL) : NULL;
    ok(j && strcmp(th_json_str(j, "state"), "succeeded") == 0, "the cnn-small job succeeds");
    json_decref(j);

    /* promote its saved weights */
    snprintf(path, sizeof path, "/v1/jobs/%lld/checkpoints/model/promote", job);
    th_post_json(&d, path, "{\"name\": \"small-a\"}", &r);
    long long a = r.status == 201 ? th_json_int(r.json, "id", -1) : -1;
    ok(a > 0, "promote -> 201 (%ld)", r.status);
    json_t *src = r.json ? json_object_get(r.json, "source") : NULL;
    json_t *shape = r.json ? json_object_get(r.json, "in_shape") : NULL;
    ok(r.json && strcmp(th_json_str(r.json, "arch"), "cnn-small") == 0 &&
           strcmp(th_json_str(r.json, "fit"), "full") == 0 &&
           th_json_int(r.json, "num_classes", 0) == 2 &&
           json_integer_value(json_array_get(shape, 0)) == 1 &&
           strcmp(th_json_str(src, "type"), "job") == 0 && th_json_int(src, "job_id", 0) == job &&
           strcmp(th_json_str(src, "checkpoint"), "model") == 0,
       "the model records arch, full fit, 1 input channel, 2 classes and its job");
    char a_sha[65] = "";
    snprintf(a_sha, sizeof a_sha, "%s", r.json ? th_json_str(r.json, "sha256") : "");
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/models/%lld", a);
    ok(strcmp(r.location, loc) == 0, "Location is %s", loc);
    th_resp_fini(&r);
    th_post_json(&d, path, "{\"name\": \"small-a\"}", &r);
    ok(th_is_problem(&r, 409, "conflict"), "promoting to a taken name -> 409");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/checkpoints/nope/promote", job);
    th_post_json(&d, path, "{\"name\": \"small-x\"}", &r);
    ok(th_is_problem(&r, 404, "not-found"), "an unknown checkpoint -> 404");
    th_resp_fini(&r);
    th_post_json(&d, "/v1/jobs/999999/checkpoints/model/promote", "{\"name\": \"small-x\"}", &r);
    ok(th_is_problem(&r, 404, "not-found"), "an unknown job -> 404");
    th_resp_fini(&r);

    /* download it: the bytes are the job's checkpoint */
    snprintf(file, sizeof file, "%s/small-a.safetensors", d.dir);
    snprintf(path, sizeof path, "/v1/models/%lld/file", a);
    long st = th_download(&d, path, file, &r);
    ok(st == 200 && th_media_type_is(r.content_type, "application/octet-stream"),
       "download -> 200 octet-stream");
    th_resp_fini(&r);
    ok(th_sha256_file(file, sha) == 0 && strcmp(sha, a_sha) == 0,
       "the downloaded file's sha256 is the model's");
    snprintf(path, sizeof path, "/v1/jobs/%lld/checkpoints", job);
    th_get(&d, path, &r);
    json_t *cks = r.json ? json_object_get(r.json, "data") : NULL;
    bool same = false;
    for (size_t i = 0; i < json_array_size(cks); i++) {
        json_t *c = json_array_get(cks, i);
        if (strcmp(th_json_str(c, "name"), "model") == 0)
            same = strcmp(th_json_str(c, "sha256"), a_sha) == 0;
    }
    ok(same, "and the job's checkpoint's");
    th_resp_fini(&r);

    /* upload the downloaded file under another name */
    size_t n = 0;
    char *weights = read_file(file, &n);
    ok(weights && n > 1000, "read the downloaded file back");
    long long b = upload(&d, "name=small-b&arch=cnn-small", weights, n, &r);
    ok(b > 0 && b != a, "upload -> 201 (%ld)", r.status);
    src = r.json ? json_object_get(r.json, "source") : NULL;
    ok(r.json && strcmp(th_json_str(r.json, "sha256"), a_sha) == 0 &&
           th_json_int(r.json, "size", 0) == (long long)n &&
           strcmp(th_json_str(src, "type"), "upload") == 0 &&
           strcmp(th_json_str(r.json, "fit"), "full") == 0,
       "the upload has the same sha256, its size, source upload, a full fit");
    th_resp_fini(&r);
    upload(&d, "name=small-b&arch=cnn-small", weights, n, &r);
    ok(th_is_problem(&r, 409, "conflict"), "a taken name -> 409");
    th_resp_fini(&r);
    char sha_q[128];
    snprintf(sha_q, sizeof sha_q, "name=small-c&arch=cnn-small&sha256=%064d", 0);
    upload(&d, sha_q, weights, n, &r);
    ok(th_is_problem(&r, 422, "validation-error") && detail_has(&r, "checksum"),
       "a wrong ?sha256= -> 422 checksum mismatch");
    th_resp_fini(&r);

    /* refused uploads */
    upload(&d, "name=junk&arch=cnn-small", "this is not a safetensors file", 30, &r);
    ok(th_is_problem(&r, 422, "validation-error") && detail_has(&r, "not a valid safetensors"),
       "a malformed file -> 422 naming the problem");
    th_resp_fini(&r);
    upload(&d, "name=wrong&arch=resnet18", weights, n, &r);
    ok(th_is_problem(&r, 422, "validation-error") && detail_has(&r, "resnet18") &&
           detail_has(&r, "conv1.weight"),
       "cnn-small weights as resnet18 -> 422 naming the missing tensor");
    th_resp_fini(&r);
    upload(&d, "name=noarch", weights, n, &r);
    ok(th_is_problem(&r, 422, "validation-error") && detail_has(&r, "arch"), "no ?arch= -> 422");
    th_resp_fini(&r);
    upload(&d, "name=123&arch=cnn-small", weights, n, &r);
    ok(th_is_problem(&r, 422, "validation-error"), "an all-digit name -> 422");
    th_resp_fini(&r);
    free(weights);

    /* list and show */
    th_get(&d, "/v1/models", &r);
    json_t *data = r.json ? json_object_get(r.json, "data") : NULL;
    ok(r.status == 200 && json_array_size(data) == 2 &&
           th_json_int(json_array_get(data, 0), "id", 0) == b &&
           th_json_int(json_array_get(data, 1), "id", 0) == a,
       "list: both, newest first");
    th_resp_fini(&r);
    th_get(&d, "/v1/models?limit=1", &r);
    data = r.json ? json_object_get(r.json, "data") : NULL;
    ok(json_array_size(data) == 1 && json_is_true(json_object_get(r.json, "has_more")),
       "limit=1: one, has_more");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/models?limit=1&after=%lld", b);
    th_get(&d, path, &r);
    data = r.json ? json_object_get(r.json, "data") : NULL;
    ok(json_array_size(data) == 1 && th_json_int(json_array_get(data, 0), "id", 0) == a &&
           json_is_false(json_object_get(r.json, "has_more")),
       "after the newest: the older one, no more");
    th_resp_fini(&r);
    th_get(&d, "/v1/models/small-b", &r);
    ok(r.status == 200 && th_json_int(r.json, "id", 0) == b, "show by name");
    th_resp_fini(&r);
    th_get(&d, "/v1/models/424242", &r);
    ok(th_is_problem(&r, 404, "not-found"), "an unknown id -> 404");
    th_resp_fini(&r);

    /* job specs: no file paths over HTTP */
    th_post_json(&d, "/v1/jobs", job_spec(", \"weights\": \"/etc/passwd\"", 1, spec, sizeof spec),
                 &r);
    ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/model/weights"),
       "a file path in weights -> 422 at /model/weights");
    th_resp_fini(&r);
    th_post_json(&d, "/v1/jobs", job_spec(", \"weights\": \"no-such-model\"", 1, spec, sizeof spec),
                 &r);
    ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/model/weights"),
       "an unknown model -> 422 at /model/weights");
    th_resp_fini(&r);
    th_post_json(&d, "/v1/jobs",
                 "{\"model\": {\"arch\": \"resnet18\", \"weights\": \"small-b\"}, \"data\": "
                 "{\"dataset\": \"tiny\"}}",
                 &r);
    ok(th_is_problem(&r, 422, "validation-error") && th_problem_has_pointer(&r, "/model/weights"),
       "a cnn-small model in a resnet18 job -> 422 at /model/weights");
    th_resp_fini(&r);

    /* transfer: the uploaded model's body, a fresh head */
    long long t = th_job_submit(
        &d, job_spec(", \"weights\": \"small-b\", \"body_only\": true", 1, spec, sizeof spec), &r);
    json_t *w = r.json ? json_object_get(json_object_get(json_object_get(r.json, "spec"), "model"),
                                         "weights")
                       : NULL;
    ok(t > 0 && json_integer_value(w) == b, "the stored spec names the model by id");
    th_resp_fini(&r);
    j = t > 0 ? th_job_wait(&d, t, "succeeded|failed", 300, NULL) : NULL;
    ok(j && strcmp(th_json_str(j, "state"), "succeeded") == 0,
       "a transfer job with body_only succeeds");
    json_decref(j);

    /* delete is refused while a running job uses the model */
    char extra[64];
    snprintf(extra, sizeof extra, ", \"weights\": %lld", a);
    long long u = th_job_submit(&d, job_spec(extra, 200, spec, sizeof spec), NULL);
    j = u > 0 ? th_job_wait_step(&d, u, 1, 300) : NULL;
    ok(j != NULL, "a long job using small-a runs");
    json_decref(j);
    snprintf(path, sizeof path, "/v1/models/%lld", a);
    th_request(&d, "DELETE", path, NULL, NULL, 0, &r);
    ok(th_is_problem(&r, 409, "conflict"), "delete while a job uses it -> 409");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", u);
    th_post_json(&d, path, NULL, &r);
    th_resp_fini(&r);
    j = th_job_wait(&d, u, "cancelled|succeeded|failed", 300, NULL);
    ok(j != NULL, "the job ends");
    json_decref(j);
    snprintf(path, sizeof path, "/v1/models/%lld", a);
    th_request(&d, "DELETE", path, NULL, NULL, 0, &r);
    ok(r.status == 204, "then delete -> 204 (%ld)", r.status);
    th_resp_fini(&r);
    th_get(&d, path, &r);
    ok(th_is_problem(&r, 404, "not-found"), "and it is gone");
    th_resp_fini(&r);
    th_request(&d, "DELETE", "/v1/models/small-b", NULL, NULL, 0, &r);
    ok(r.status == 204, "delete by name -> 204");
    th_resp_fini(&r);
    snprintf(file, sizeof file, "%s/models", d.data_dir);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", file);
    ok(system(cmd) == 0, "no model files are left");

    ok(th_daemon_stop(&d, 30) == 0, "daemon exits 0");
    ok(th_daemon_fini(&d, false), "no sanitizer reports");
    return done_testing();
}
