/*
 * test_api_transfer.c: the mission's workflow end to end through the real daemon.
 *
 * 1. A source job trains cnn-small from scratch on Fashion-MNIST's classes {1, 3, 5, 7, 8, 9}
 *    (the auto-registered "fashion-mnist" dataset, relabelled 0-5, 100 images per class)
 *    and saves "source"; that checkpoint is promoted to the model "source-body".
 * 2. A transfer job loads the model's body into a fresh cnn-small with a 4-class head and runs
 *    the seed workflow by hand on the first 20 training images of {0, 2, 4, 6}: freeze,
 *    lr_find, fit_one_cycle at the valley suggestion, unfreeze, fit_one_cycle with
 *    slice(1e-4, 1e-2), save "final". Validation is the test split of those classes; to keep
 *    the test short the test registers its own Fashion-MNIST subset ("fmnist-few": the first
 *    30 training and 25 test images of every class) for it.
 * 3. A head-only job (freeze, fit_one_cycle, save) on the same data.
 * 4. A job without "stages" (the default seed workflow) on the subset.
 * Checks: every job succeeds; the frozen fit shows training in events and metrics; lr_find
 * gives a curve and suggestions (JSON and SVG); the stage timeline lists every stage with
 * times; the summary shows the freezing; the final weights download and `thawd predict`
 * gives one row per input image; the body's conv weights changed after unfreeze and are
 * bit-identical to the source after head-only training (a small safetensors reader below).
 *
 * Skipped when Debian's dataset-fashion-mnist is not installed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "harness.h"
#include "tap.h"

#define FMNIST_DIR   "/usr/share/datasets/fashion-mnist"
#define N_TRAIN_EACH 30 /* training images per class in fmnist-few */
#define N_TEST_EACH  25 /* test images per class in fmnist-few */
#define N_PREDICT    6  /* test images written for thawd predict */

/* ---- a growing byte buffer ---------------------------------------------------------------- */

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        unsigned char *g = realloc(b->p, b->cap);
        if (!g)
            abort(); /* a test helper: running out of memory here is not worth handling */
        b->p = g;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_be32(buf *b, uint32_t v)
{
    unsigned char p[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    put(b, p, 4);
}

/* ---- Fashion-MNIST subset as an IDX tar -------------------------------------------------- */

/* Reads a whole gzip'd (or plain) file; NULL on error. */
static unsigned char *read_gz(const char *path, size_t *n)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return NULL;
    buf b = {0};
    unsigned char chunk[1 << 16];
    int got;
    while ((got = gzread(f, chunk, sizeof chunk)) > 0)
        put(&b, chunk, (size_t)got);
    int bad = got < 0;
    gzclose(f);
    if (bad) {
        free(b.p);
        return NULL;
    }
    *n = b.n;
    return b.p;
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

typedef struct split {
    unsigned char *images, *labels; /* whole files */
    size_t n;                       /* samples */
} split;

static bool split_load(split *s, const char *prefix)
{
    char p1[256], p2[256];
    size_t ni = 0, nl = 0;
    snprintf(p1, sizeof p1, "%s/%s-images-idx3-ubyte.gz", FMNIST_DIR, prefix);
    snprintf(p2, sizeof p2, "%s/%s-labels-idx1-ubyte.gz", FMNIST_DIR, prefix);
    s->images = read_gz(p1, &ni);
    s->labels = read_gz(p2, &nl);
    if (!s->images || !s->labels || ni < 16 || nl < 8)
        return false;
    s->n = get_be32(s->labels + 4);
    return get_be32(s->images + 4) == s->n && ni == 16 + s->n * 784 && nl == 8 + s->n &&
           get_be32(s->images + 8) == 28 && get_be32(s->images + 12) == 28;
}

/* The first `each` samples of every class, in file order, as IDX images + labels. */
static void subset_idx(const split *s, int each, buf *im, buf *lb)
{
    int taken[10] = {0}, total = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->labels[8 + i] < 10 && taken[s->labels[8 + i]]++ < each)
            total++;
    put_be32(im, 0x803);
    put_be32(im, (uint32_t)total);
    put_be32(im, 28);
    put_be32(im, 28);
    put_be32(lb, 0x801);
    put_be32(lb, (uint32_t)total);
    memset(taken, 0, sizeof taken);
    for (size_t i = 0; i < s->n; i++) {
        unsigned char c = s->labels[8 + i];
        if (c < 10 && taken[c]++ < each) {
            put(im, s->images + 16 + i * 784, 784);
            put(lb, &c, 1);
        }
    }
}

static void tar_entry(buf *t, const char *name, const buf *data)
{
    char h[512];
    memset(h, 0, sizeof h);
    snprintf(h, 100, "%s", name);
    snprintf(h + 100, 8, "%07o", 0644);
    snprintf(h + 108, 8, "%07o", 0);
    snprintf(h + 116, 8, "%07o", 0);
    snprintf(h + 124, 12, "%011o", (unsigned)data->n);
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
    put(t, data->p, data->n);
    char pad[512] = {0};
    if (data->n % 512)
        put(t, pad, 512 - data->n % 512);
}

/* ---- safetensors ---------------------------------------------------------------------------- */

typedef struct st_file {
    unsigned char *bytes;
    size_t n;
    json_t *header;            /* the JSON header object */
    const unsigned char *data; /* start of the data area */
} st_file;

static bool st_open(st_file *f, const char *path)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return false;
    buf b = {0};
    unsigned char chunk[1 << 16];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, fp)) > 0)
        put(&b, chunk, got);
    fclose(fp);
    f->bytes = b.p;
    f->n = b.n;
    if (f->n < 8)
        return false;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | f->bytes[i];
    if (hl > f->n - 8)
        return false;
    f->header = json_loadb((const char *)f->bytes + 8, (size_t)hl, 0, NULL);
    f->data = f->bytes + 8 + hl;
    return json_is_object(f->header);
}

static void st_close(st_file *f)
{
    json_decref(f->header);
    free(f->bytes);
    memset(f, 0, sizeof *f);
}

/* The bytes of tensor `name` and its rank, or NULL when absent or out of bounds. */
static const unsigned char *st_tensor(const st_file *f, const char *name, size_t *len, size_t *rank)
{
    json_t *t = json_object_get(f->header, name);
    json_t *off = json_object_get(t, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2)
        return NULL;
    json_int_t a = json_integer_value(json_array_get(off, 0));
    json_int_t b = json_integer_value(json_array_get(off, 1));
    size_t area = f->n - (size_t)(f->data - f->bytes);
    if (a < 0 || b < a || (size_t)b > area)
        return NULL;
    *len = (size_t)(b - a);
    *rank = json_array_size(json_object_get(t, "shape"));
    return f->data + a;
}

/* Compares every 4-d tensor of the body (names starting with "0.": cnn-small's conv weights)
 * of `a` and `b`; sets the count of conv weights and how many are bit-identical. */
static void compare_body_convs(const st_file *a, const st_file *b, int *n_conv, int *n_same)
{
    const char *name;
    json_t *v;
    *n_conv = *n_same = 0;
    json_object_foreach(a->header, name, v)
    {
        size_t la, lb, ra, rb;
        if (strncmp(name, "0.", 2) != 0)
            continue;
        const unsigned char *pa = st_tensor(a, name, &la, &ra);
        const unsigned char *pb = st_tensor(b, name, &lb, &rb);
        if (!pa || ra != 4)
            continue;
        (*n_conv)++;
        if (pb && la == lb && memcmp(pa, pb, la) == 0)
            (*n_same)++;
    }
}

/* ---- small helpers ---------------------------------------------------------------------- */

static json_t *get_json(const th_daemon *d, const char *path)
{
    th_resp r;
    th_get(d, path, &r);
    json_t *j = r.status == 200 && r.json ? json_incref(r.json) : NULL;
    if (!j)
        diag("GET %s -> %ld", path, r.status);
    th_resp_fini(&r);
    return j;
}

static bool job_ok(const th_daemon *d, long long id, const char *what)
{
    json_t *j = id > 0 ? th_job_wait(d, id, "succeeded|failed|cancelled", 600, NULL) : NULL;
    const char *st = j ? th_json_str(j, "state") : NULL;
    bool good = st && strcmp(st, "succeeded") == 0;
    if (!good)
        diag("%s job %lld ended %s: %s", what, id, st ? st : "(no answer)",
             j && th_json_str(j, "error") ? th_json_str(j, "error") : "");
    json_decref(j);
    return good;
}

/* Every stage of the timeline is done, in spec order, with both times and seconds >= 0. */
static bool timeline_complete(const json_t *job, const char *const *ops, size_t n_ops)
{
    json_t *tl = json_object_get(job, "stages");
    if (json_array_size(tl) != n_ops) {
        diag("timeline has %zu stages, want %zu", json_array_size(tl), n_ops);
        return false;
    }
    for (size_t i = 0; i < n_ops; i++) {
        json_t *s = json_array_get(tl, i);
        const char *op = th_json_str(s, "op"), *state = th_json_str(s, "state");
        if (!op || strcmp(op, ops[i]) != 0 || !state || strcmp(state, "done") != 0 ||
            !th_json_str(s, "started_at") || !th_json_str(s, "finished_at") ||
            !(th_json_num(s, "seconds", -1) >= 0)) {
            diag("timeline stage %zu: op %s state %s", i, op ? op : "-", state ? state : "-");
            return false;
        }
    }
    return true;
}

int main(void)
{
    if (access(FMNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("1..0 # SKIP dataset-fashion-mnist is not installed\n");
        return 0;
    }
    th_daemon d;
    if (th_daemon_init(&d, "transfer") != 0)
        return 1;
    if (!ok(th_daemon_start(&d, NULL, 60) == 0, "daemon starts"))
        goto out;
    th_resp r;
    char path[256], spec[2048], file_final[700], file_head[700], file_source[700], idx[700];

    /* ---- the data: the auto-registered dataset and a small subset registered here ---- */
    json_t *dl = get_json(&d, "/v1/datasets?limit=100");
    bool found = false;
    for (size_t i = 0; dl && i < json_array_size(json_object_get(dl, "data")); i++) {
        const char *nm = th_json_str(json_array_get(json_object_get(dl, "data"), i), "name");
        found |= nm && strcmp(nm, "fashion-mnist") == 0;
    }
    json_decref(dl);
    ok(found, "fashion-mnist is registered at start-up");

    split tr = {0}, te = {0};
    bool loaded = split_load(&tr, "train") && split_load(&te, "t10k");
    if (!ok(loaded, "the Fashion-MNIST files read"))
        goto out;
    buf tar = {0}, im = {0}, lb = {0};
    subset_idx(&tr, N_TRAIN_EACH, &im, &lb);
    tar_entry(&tar, "train-images-idx3-ubyte", &im);
    tar_entry(&tar, "train-labels-idx1-ubyte", &lb);
    im.n = lb.n = 0;
    subset_idx(&te, N_TEST_EACH, &im, &lb);
    tar_entry(&tar, "t10k-images-idx3-ubyte", &im);
    tar_entry(&tar, "t10k-labels-idx1-ubyte", &lb);
    char zeros[1024] = {0};
    put(&tar, zeros, sizeof zeros);
    th_request(&d, "POST", "/v1/datasets?format=idx&name=fmnist-few", "application/x-tar",
               (const char *)tar.p, tar.n, &r);
    /* accepted (202) as "processing"; poll until the processing thread is done with it */
    long long ds = r.status == 202 ? th_json_int(r.json, "id", -1) : -1;
    snprintf(path, sizeof path, "/v1/datasets/%lld", ds);
    for (int i = 0; i < 600 && ds > 0; i++) {
        th_resp_fini(&r);
        th_get(&d, path, &r);
        const char *st = th_json_str(r.json, "state");
        if (!st || strcmp(st, "processing") != 0)
            break;
        th_sleep_ms(100);
    }
    ok(r.status == 200 && th_json_str(r.json, "state") &&
           strcmp(th_json_str(r.json, "state"), "ready") == 0 &&
           th_json_int(r.json, "n_test", 0) == 10 * N_TEST_EACH,
       "the subset fmnist-few is registered (%ld)", r.status);
    json_t *stats = r.json ? json_object_get(r.json, "stats") : NULL;
    double mean = json_number_value(json_array_get(json_object_get(stats, "mean"), 0));
    double sd = json_number_value(json_array_get(json_object_get(stats, "std"), 0));
    ok(mean > 0 && sd > 0, "it has stored statistics (mean %.4f std %.4f)", mean, sd);
    th_resp_fini(&r);

    /* the input of thawd predict: the first N_PREDICT test images of classes 0, 2, 4, 6 */
    snprintf(idx, sizeof idx, "%s/few.idx", d.dir);
    buf in = {0};
    put_be32(&in, 0x803);
    put_be32(&in, N_PREDICT);
    put_be32(&in, 28);
    put_be32(&in, 28);
    for (size_t i = 0, k = 0; i < te.n && k < N_PREDICT; i++)
        if (te.labels[8 + i] % 2 == 0 && te.labels[8 + i] <= 6) {
            put(&in, te.images + 16 + i * 784, 784);
            k++;
        }
    FILE *fp = fopen(idx, "wb");
    ok(fp && fwrite(in.p, 1, in.n, fp) == in.n && fclose(fp) == 0, "wrote %s", idx);
    free(in.p);
    free(tar.p);
    free(im.p);
    free(lb.p);
    free(tr.images);
    free(tr.labels);
    free(te.images);
    free(te.labels);

    /* ---- 1. the source job and its promotion ---- */
    long long src = th_job_submit(
        &d,
        "{\"name\": \"source\", \"model\": {\"arch\": \"cnn-small\"}, \"batch_size\": 32,"
        " \"data\": {\"dataset\": \"fashion-mnist\", \"classes\": [1, 3, 5, 7, 8, 9],"
        " \"per_class_limit\": 100, \"valid\": {\"pct\": 0.2, \"seed\": 0}},"
        " \"stages\": [{\"op\": \"fit_one_cycle\", \"epochs\": 1, \"lr_max\": 0.003},"
        " {\"op\": \"save\", \"name\": \"source\"}]}",
        NULL);
    /* the default seed workflow, queued behind it: no "stages" at all */
    long long dflt = th_job_submit(&d,
                                   "{\"name\": \"defaults\", \"model\": {\"arch\": \"mlp\","
                                   " \"hidden\": [32]}, \"batch_size\": 16,"
                                   " \"data\": {\"dataset\": \"fmnist-few\"}}",
                                   NULL);
    ok(job_ok(&d, src, "source"), "the source job succeeds");
    snprintf(path, sizeof path, "/v1/jobs/%lld/checkpoints/source/promote", src);
    th_post_json(&d, path, "{\"name\": \"source-body\"}", &r);
    long long model = r.status == 201 ? th_json_int(r.json, "id", -1) : -1;
    ok(model > 0 && strcmp(th_json_str(r.json, "arch"), "cnn-small") == 0 &&
           th_json_int(r.json, "num_classes", 0) == 6,
       "promoted to the model source-body (%ld): cnn-small, 6 classes", r.status);
    th_resp_fini(&r);
    snprintf(file_source, sizeof file_source, "%s/source.safetensors", d.dir);
    snprintf(path, sizeof path, "/v1/models/%lld/file", model);
    is_int(th_download(&d, path, file_source, &r), 200, "the model's file downloads");
    th_resp_fini(&r);

    /* ---- 2. the transfer job and 3. the head-only job ---- */
    const char *data_few = "\"data\": {\"dataset\": \"fmnist-few\", \"classes\": [0, 2, 4, 6],"
                           " \"per_class_limit\": 20, \"valid\": {\"split\": \"test\"}}";
    snprintf(
        spec, sizeof spec,
        "{\"name\": \"transfer\", \"batch_size\": 8, \"model\": {\"arch\": \"cnn-small\","
        " \"weights\": \"source-body\", \"body_only\": true}, %s,"
        " \"stages\": [{\"op\": \"freeze\"}, {\"op\": \"lr_find\", \"num_it\": 30},"
        " {\"op\": \"fit_one_cycle\", \"epochs\": 1, \"lr_max\": {\"suggestion\": \"valley\"}},"
        " {\"op\": \"unfreeze\"},"
        " {\"op\": \"fit_one_cycle\", \"epochs\": 1, \"lr_max\": {\"slice\": [1e-4, 1e-2]}},"
        " {\"op\": \"save\", \"name\": \"final\"}]}",
        data_few);
    long long xfer = th_job_submit(&d, spec, NULL);
    snprintf(spec, sizeof spec,
             "{\"name\": \"head-only\", \"batch_size\": 8, \"model\": {\"arch\": \"cnn-small\","
             " \"weights\": \"source-body\", \"body_only\": true}, %s,"
             " \"stages\": [{\"op\": \"freeze\"},"
             " {\"op\": \"fit_one_cycle\", \"epochs\": 1, \"lr_max\": 0.01},"
             " {\"op\": \"save\", \"name\": \"head\"}]}",
             data_few);
    long long head = th_job_submit(&d, spec, NULL);
    ok(job_ok(&d, xfer, "transfer"), "the transfer job succeeds");
    ok(job_ok(&d, head, "head-only"), "the head-only job succeeds");
    ok(job_ok(&d, dflt, "default-stages"), "the job without stages (the seed workflow) succeeds");

    /* the frozen fit (stage 2) trained: an epoch event and per-batch metrics of that stage */
    json_t *ev = th_job_events_final(&d, xfer, 30);
    bool epoch2 = false;
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i), *data = json_object_get(e, "data");
        const char *type = th_json_str(e, "type");
        if (type && strcmp(type, "epoch") == 0 && th_json_int(data, "stage", -1) == 2 &&
            th_json_num(data, "train_loss", -1) > 0 && th_json_num(data, "accuracy", -1) >= 0)
            epoch2 = true;
    }
    json_decref(ev);
    ok(epoch2, "an epoch event of the frozen fit_one_cycle (stage 2) with losses and accuracy");
    snprintf(path, sizeof path, "/v1/jobs/%lld/metrics?max_points=100000", xfer);
    json_t *m = get_json(&d, path);
    json_t *batches = json_object_get(json_object_get(m, "batches"), "data");
    int b2 = 0, b4 = 0;
    for (size_t i = 0; i < json_array_size(batches); i++) {
        json_t *b = json_array_get(batches, i);
        long long st = th_json_int(b, "stage", -1);
        if (th_json_num(b, "loss", -1) > 0 && th_json_num(b, "lr", -1) > 0)
            b2 += st == 2, b4 += st == 4;
    }
    is_int(b2, 10, "the frozen fit recorded 10 batches (80 images, batch 8) with loss and lr");
    is_int(b4, 10, "so did the unfrozen fit");
    json_decref(m);

    /* lr_find: a curve, suggestions, and the stage that used the valley */
    snprintf(path, sizeof path, "/v1/jobs/%lld/lr_find", xfer);
    json_t *lf = get_json(&d, path);
    json_t *res = json_array_get(json_object_get(lf, "data"), 0);
    json_t *sug = json_object_get(res, "suggestions");
    json_t *used = json_array_get(json_object_get(res, "used_by"), 0);
    ok(json_array_size(json_object_get(lf, "data")) == 1 &&
           json_is_true(json_object_get(res, "ok")) && th_json_int(res, "stage", -1) == 1,
       "one lr_find result, of stage 1, ok");
    ok(json_array_size(json_object_get(res, "points")) >= 10, "its curve has %zu points",
       json_array_size(json_object_get(res, "points")));
    double valley = th_json_num(sug, "valley", -1);
    ok(valley > 1e-7 && valley < 10 && th_json_num(sug, "minimum", -1) > 0 &&
           th_json_num(sug, "steep", -1) > 0,
       "suggestions valley %.3g, minimum and steep", valley);
    ok(th_json_int(used, "stage", -1) == 2 && th_json_str(used, "suggestion") &&
           strcmp(th_json_str(used, "suggestion"), "valley") == 0 &&
           th_json_num(used, "lr", -1) == valley,
       "stage 2 used the valley as its lr_max");
    json_decref(lf);
    snprintf(path, sizeof path, "/v1/jobs/%lld/lr_find.svg", xfer);
    th_get(&d, path, &r);
    ok(r.status == 200 && th_media_type_is(r.content_type, "image/svg+xml") && r.body &&
           strstr(r.body, "<svg"),
       "lr_find.svg is an SVG plot (%ld)", r.status);
    th_resp_fini(&r);

    /* the stage timeline and the summaries */
    snprintf(path, sizeof path, "/v1/jobs/%lld", xfer);
    json_t *job = get_json(&d, path);
    const char *ops[] = {"freeze", "lr_find", "fit_one_cycle", "unfreeze", "fit_one_cycle", "save"};
    ok(timeline_complete(job, ops, 6), "the timeline lists all 6 stages done, with times");
    json_decref(job);
    snprintf(path, sizeof path, "/v1/jobs/%lld", dflt);
    job = get_json(&d, path);
    const char *dops[] = {"freeze",  "lr_find",       "fit_one_cycle", "unfreeze",
                          "lr_find", "fit_one_cycle", "save"};
    ok(timeline_complete(job, dops, 7), "the default job ran the 7 stages of the seed workflow");
    json_decref(job);

    snprintf(path, sizeof path, "/v1/jobs/%lld/summary", head);
    json_t *sm = get_json(&d, path);
    json_t *layers = json_object_get(sm, "layers");
    int frozen_conv = 0, trainable_bn = 0, conv = 0;
    bool head_trainable = false;
    for (size_t i = 0; i < json_array_size(layers); i++) {
        json_t *l = json_array_get(layers, i);
        const char *type = th_json_str(l, "type");
        bool tr_ = json_is_true(json_object_get(l, "trainable"));
        if (type && strcmp(type, "Conv2d") == 0)
            conv++, frozen_conv += !tr_;
        if (type && strcmp(type, "BatchNorm2d") == 0)
            trainable_bn += tr_;
        if (type && strcmp(type, "Linear") == 0)
            head_trainable = tr_;
    }
    ok(th_json_int(sm, "frozen_idx", -1) == 2 && conv == 5 && frozen_conv == 5 &&
           trainable_bn == 5 && head_trainable,
       "head-only summary: frozen up to group 2, convs frozen, BatchNorm and head trainable");
    ok(th_json_str(sm, "text") && strstr(th_json_str(sm, "text"), "frozen"),
       "its text says the model is frozen");
    json_decref(sm);
    snprintf(path, sizeof path, "/v1/jobs/%lld/summary", xfer);
    sm = get_json(&d, path);
    ok(th_json_int(sm, "frozen_idx", -1) == 0 && th_json_int(sm, "non_trainable_params", -1) == 0,
       "transfer summary: unfrozen at the end");
    json_decref(sm);

    /* ---- the weights ---- */
    snprintf(file_final, sizeof file_final, "%s/final.safetensors", d.dir);
    snprintf(file_head, sizeof file_head, "%s/head.safetensors", d.dir);
    snprintf(path, sizeof path, "/v1/jobs/%lld/checkpoints/final", xfer);
    is_int(th_download(&d, path, file_final, &r), 200, "final.safetensors downloads");
    th_resp_fini(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/checkpoints/head", head);
    is_int(th_download(&d, path, file_head, &r), 200, "head.safetensors downloads");
    th_resp_fini(&r);

    st_file fs, ff, fh;
    bool o1 = st_open(&fs, file_source), o2 = st_open(&ff, file_final);
    bool o3 = st_open(&fh, file_head); /* all three opened, so all three can be closed */
    ok(o1 && o2 && o3, "the three safetensors files parse");
    int n_conv = 0, n_same = 0;
    compare_body_convs(&fs, &fh, &n_conv, &n_same);
    ok(n_conv == 5 && n_same == 5, "head-only training left all %d body conv weights bit-identical",
       n_conv);
    compare_body_convs(&fs, &ff, &n_conv, &n_same);
    ok(n_conv == 5 && n_same == 0, "after unfreeze every body conv weight changed (%d of %d same)",
       n_same, n_conv);
    size_t l6 = 0, l4 = 0, rk = 0;
    ok(st_tensor(&fs, "1.3.weight", &l6, &rk) && st_tensor(&ff, "1.3.weight", &l4, &rk) &&
           l6 == 6 * 128 * 4 && l4 == 4 * 128 * 4,
       "the source head has 6 outputs, the transferred one 4");
    st_close(&fs);
    st_close(&ff);
    st_close(&fh);

    /* thawd predict on the final weights: one row per image, 4 logits each */
    const char *bin = getenv("THAWD_BIN");
    char cmd[2400];
    snprintf(cmd, sizeof cmd,
             "'%s' predict --arch cnn-small --weights '%s' --input '%s' --mean %.6f --std %.6f",
             bin ? bin : "thawd", file_final, idx, mean, sd);
    FILE *pp = popen(cmd, "r");
    char line[1024];
    int rows = 0, good_rows = 0;
    while (pp && fgets(line, sizeof line, pp)) {
        int n, cls, used_ = 0;
        float v[4];
        rows++;
        if (sscanf(line, "%d\t%d\t%f %f %f %f%n", &n, &cls, &v[0], &v[1], &v[2], &v[3], &used_) ==
                6 &&
            n == rows - 1 && cls >= 0 && cls < 4 && (line[used_] == '\n' || !line[used_]))
            good_rows++;
        else
            diag("predict row: %s", line);
    }
    int st = pp ? pclose(pp) : -1;
    ok(st == 0 && rows == N_PREDICT && good_rows == N_PREDICT,
       "thawd predict: %d rows of index, class and 4 logits (exit %d)", good_rows, st);

out:;
    bool clean = th_daemon_stop(&d, 60) == 0;
    ok(clean, "daemon exits 0 on SIGTERM");
    ok(th_daemon_fini(&d, !clean), "no sanitizer reports");
    return done_testing();
}
