/*
 * thawd_bench.c: thawd's side of bench/torch_ref.py (DESIGN.md section 8, bench/README.md).
 *
 * Builds the same models through the engine's internal API (M1 `cnn-small` on 1x28x28,
 * resnet18 with torchvision's head on 3x64x64, 10 classes, the architectures' PyTorch /
 * torchvision initialisation), the same fastai Adam, and times the daemon's own training
 * step (eng_trainer_step: forward, softmax cross-entropy, backward down to the lowest
 * trainable layer, Adam with 1cycle-style hypers re-set every step) in the four modes:
 *   train          freeze_to(0): everything trains
 *   frozen_bn      freeze_to(-1) with train_bn: body BatchNorm params and the head train
 *   frozen_nograd  freeze_to(-1) without train_bn: only the head trains; no backward
 *                  through the body (the engine stops at the lowest trainable layer)
 *   infer          eng_trainer_forward in eval mode
 * Inputs are one fixed batch of N(0, 1) values from a fixed seed. Every (model, batch, mode)
 * runs in a fresh process (this program re-executed with --child), so peak RSS is per mode.
 * Prints the "thawd-bench/1" JSON document on stdout and a table on stderr.
 *
 * usage: thawd-bench [--models m1,resnet18] [--modes train,frozen_bn,frozen_nograd,infer]
 *                    [--batches 64,128,256] [--repeats 7] [--iters 10] [--warmup 3]
 *                    [--threads 2] [--layers]
 * --layers adds a profile per layer to each config's run (on stderr: wall time per step of
 * each layer's forward and backward, eng_trainer.layer_s), for finding where a step goes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arch.h"
#include "build_config.h"
#include "dataset.h"
#include "git_version.h"
#include "kernels.h"
#include "model.h"
#include "rng.h"
#include "train.h"

#define CLASSES    10
#define MAX_LIST   16
#define LINE_BYTES 4096

static const char *const models_all[] = {"m1", "resnet18"};
static const char *const modes_all[] = {"train", "frozen_bn", "frozen_nograd", "infer"};

typedef struct opts {
    const char *models[MAX_LIST];
    size_t n_models;
    const char *modes[MAX_LIST];
    size_t n_modes;
    size_t batches[MAX_LIST];
    size_t n_batches;
    long repeats, iters, warmup, threads;
    bool layers; /* --layers */
    const char *child[3];
} opts;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_sorted(const double *v, size_t n)
{
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Splits a comma list in place into out[] (at most MAX_LIST). Returns the count or -1. */
static int split(char *s, const char **out)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (n == MAX_LIST)
            return -1;
        out[n++] = tok;
    }
    return n;
}

static int in_list(const char *v, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v, list[i]) == 0)
            return 1;
    return 0;
}

static int parse_long(const char *s, long min, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min)
        return -1;
    *out = v;
    return 0;
}

static int usage(const char *msg)
{
    fprintf(stderr,
            "thawd-bench: %s\nusage: thawd-bench [--models m1,resnet18] [--modes "
            "train,frozen_bn,frozen_nograd,infer] [--batches 64,128,256] [--repeats 7] "
            "[--iters 10] [--warmup 3] [--threads 2] [--layers]\n",
            msg);
    return 2;
}

static int parse_args(int argc, char **argv, opts *o)
{
    static char models_buf[256] = "m1,resnet18",
                modes_buf[256] = "train,frozen_bn,frozen_nograd,infer";
    char batches_buf[256] = "";
    memset(o, 0, sizeof(*o));
    o->repeats = 7;
    o->iters = 10;
    o->warmup = 3;
    o->threads = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--child") == 0) {
            if (i + 3 >= argc)
                return usage("--child needs MODEL BATCH MODE");
            o->child[0] = argv[i + 1];
            o->child[1] = argv[i + 2];
            o->child[2] = argv[i + 3];
            i += 3;
            continue;
        }
        if (strcmp(a, "--layers") == 0) {
            o->layers = true;
            continue;
        }
        if (i + 1 >= argc)
            return usage("option without a value");
        const char *v = argv[++i];
        long *num = NULL, min = 1;
        char *buf = NULL;
        if (strcmp(a, "--models") == 0)
            buf = models_buf;
        else if (strcmp(a, "--modes") == 0)
            buf = modes_buf;
        else if (strcmp(a, "--batches") == 0)
            buf = batches_buf;
        else if (strcmp(a, "--repeats") == 0)
            num = &o->repeats;
        else if (strcmp(a, "--iters") == 0)
            num = &o->iters;
        else if (strcmp(a, "--warmup") == 0) {
            num = &o->warmup;
            min = 0;
        } else if (strcmp(a, "--threads") == 0)
            num = &o->threads;
        else
            return usage("unknown option");
        if (buf) {
            if (strlen(v) >= 255)
                return usage("list too long");
            strcpy(buf, v);
        } else if (parse_long(v, min, num))
            return usage("bad number");
    }
    int n = split(models_buf, o->models);
    if (n <= 0)
        return usage("bad --models");
    o->n_models = (size_t)n;
    for (size_t i = 0; i < o->n_models; i++)
        if (!in_list(o->models[i], models_all, 2))
            return usage("unknown model (m1, resnet18)");
    n = split(modes_buf, o->modes);
    if (n <= 0)
        return usage("bad --modes");
    o->n_modes = (size_t)n;
    for (size_t i = 0; i < o->n_modes; i++)
        if (!in_list(o->modes[i], modes_all, 4))
            return usage("unknown mode (train, frozen_bn, frozen_nograd, infer)");
    if (batches_buf[0]) {
        const char *b[MAX_LIST];
        n = split(batches_buf, b);
        if (n <= 0)
            return usage("bad --batches");
        for (int i = 0; i < n; i++) {
            long v;
            if (parse_long(b[i], 1, &v) || v > 65536)
                return usage("--batches: comma list of positive integers");
            o->batches[i] = (size_t)v;
        }
        o->n_batches = (size_t)n;
    }
    return 0;
}

/* ---- one config, in the child ------------------------------------------------------------ */

/* FLOPs per step by bench/README.md's rules: forward 2*MACs of every conv and linear; once
 * more for the weight gradient when the weight trains; once more for the input gradient when
 * any parameter that runs earlier trains. */
static double count_flops(const eng_model *m, size_t N, const char *mode)
{
    bool train = strcmp(mode, "train") == 0, infer = strcmp(mode, "infer") == 0;
    unsigned head = (unsigned)m->n_groups - 1;
    double total = 0.0;
    bool flows = false;
    for (size_t i = 0; i < m->n_layers; i++) {
        const eng_layer *l = &m->layers[i];
        bool w_train = !infer && (train || l->group == head);
        bool any = false;
        size_t np = l->ops->n_params ? l->ops->n_params(l) : 0;
        for (size_t k = 0; k < np && !infer; k++) /* infer: nothing trains */
            any = any || l->trainable[k];
        if (l->ops == &eng_layer_conv2d) {
            double f = 2.0 * (double)l->out_size *
                       (double)(l->cfg.conv.IC * l->cfg.conv.KH * l->cfg.conv.KW);
            total += f * (1 + w_train + flows);
        } else if (l->ops == &eng_layer_linear) {
            double f = 2.0 * (double)l->cfg.dense.in * (double)l->cfg.dense.out;
            total += f * (1 + w_train + flows);
        } else if (l->ops == &eng_layer_basic_block) {
            /* conv1 3x3 IC->OC, conv2 3x3 OC->OC, downsample 1x1 IC->OC, all at the output
             * resolution; conv1 runs first, the others after bn1 (which may train). */
            double IC = (double)l->cfg.block.IC, OC = (double)l->cfg.block.OC;
            double out = (double)l->out_size; /* OC*OH*OW */
            bool later = flows || any;
            total += 2.0 * out * IC * 9.0 * (1 + w_train + flows);
            total += 2.0 * out * OC * 9.0 * (1 + w_train + later);
            if (l->cfg.block.stride != 1 || l->cfg.block.IC != l->cfg.block.OC)
                total += 2.0 * out * IC * (1 + w_train + later);
        }
        if (any)
            flows = true;
    }
    return total * (double)N;
}

/* The --layers table on stderr: per layer, ms per step of its forward and backward (a fused
 * step under its first layer) and the share of the profiled time. */
static void print_layers(const eng_model *m, const double *prof, double steps, const char *model,
                         size_t N, const char *mode, long threads)
{
    const size_t L = m->n_layers;
    double total = 0.0;
    for (size_t i = 0; i <= 2 * L; i++)
        total += prof[i];
    fprintf(stderr, "\n%s batch %zu %s, %ld threads: ms per step by layer (%.3f ms profiled)\n",
            model, N, mode, threads, 1e3 * total / steps);
    fprintf(stderr, "%-4s %-12s %-26s %-12s %9s %9s %6s\n", "#", "layer", "kind", "output",
            "forward", "backward", "share");
    for (size_t i = 0; i < L; i++) {
        const eng_layer *l = &m->layers[i];
        if (prof[2 * i] == 0.0 && prof[2 * i + 1] == 0.0)
            continue; /* ran inside the step of the layer before it */
        /* the kinds of the layers that ran inside this one's step, e.g. batchnorm2d+relu */
        char kind[64], shape[32] = "";
        size_t o = (size_t)snprintf(kind, sizeof(kind), "%s", l->ops->kind), last = i;
        for (size_t k = i + 1; k < L && prof[2 * k] == 0.0 && prof[2 * k + 1] == 0.0; k++) {
            if (o < sizeof(kind))
                o += (size_t)snprintf(kind + o, sizeof(kind) - o, "+%s", m->layers[k].ops->kind);
            last = k;
        }
        const eng_layer *out = &m->layers[last];
        o = 0;
        for (size_t k = 0; k < out->out_ndim && o < sizeof(shape); k++)
            o += (size_t)snprintf(shape + o, sizeof(shape) - o, k ? "x%zu" : "%zu",
                                  out->out_shape[k]);
        fprintf(stderr, "%-4zu %-12s %-26s %-12s %9.3f %9.3f %5.1f%%\n", i, l->name, kind, shape,
                1e3 * prof[2 * i] / steps, 1e3 * prof[2 * i + 1] / steps,
                100.0 * (prof[2 * i] + prof[2 * i + 1]) / total);
    }
    fprintf(stderr, "%-4s %-12s %-26s %-12s %9s %9.3f %5.1f%%\n", "", "optimizer", "", "", "",
            1e3 * prof[2 * L] / steps, 100.0 * prof[2 * L] / total);
}

static int run_child(const opts *o)
{
    const char *model = o->child[0], *mode = o->child[2];
    long batch;
    if (!in_list(model, models_all, 2) || !in_list(mode, modes_all, 4) ||
        parse_long(o->child[1], 1, &batch))
        return usage("bad --child arguments");
    size_t N = (size_t)batch;
    bool m1 = strcmp(model, "m1") == 0;
    size_t in_shape[3] = {m1 ? 1 : 3, m1 ? 28 : 64, m1 ? 28 : 64};
    size_t in_size = in_shape[0] * in_shape[1] * in_shape[2];
    bool train_bn = strcmp(mode, "frozen_nograd") != 0;
    int rc = 1;
    eng_error err = {{0}, {0}};
    eng_model *m = NULL;
    eng_trainer t;
    bool t_ready = false;
    double *prof = NULL; /* --layers: eng_trainer.layer_s, from the first timed step */

    double load_before = 0.0, load_after = 0.0;
    if (getloadavg(&load_before, 1) != 1) /* optional field: 0 when unavailable */
        load_before = 0.0;
    eng_blas_set_threads((int)o->threads);
    /* One fixed batch: the loader copies it into the trainer each step (as the daemon's
     * assembly of an already-decoded batch; well under 1% of a step here). */
    eng_dataset d;
    memset(&d, 0, sizeof(d));
    d.n_train = N;
    d.in_ndim = 3;
    memcpy(d.in_shape, in_shape, sizeof(in_shape));
    d.in_size = in_size;
    d.n_classes = CLASSES;
    d.std = 1.0f;
    d.x_train = malloc(N * in_size * sizeof(float));
    d.y_train = malloc(N * sizeof(int32_t));
    if (!d.x_train || !d.y_train) {
        fprintf(stderr, "thawd-bench: out of memory\n");
        goto done;
    }
    eng_rng r;
    eng_rng_seed(&r, 0, 1);
    for (size_t i = 0; i < N * in_size; i++)
        d.x_train[i] = eng_rng_normal(&r);
    for (size_t i = 0; i < N; i++)
        d.y_train[i] = (int32_t)(eng_rng_uniform(&r) * CLASSES) % CLASSES;

    eng_model_spec ms;
    eng_model_spec_defaults(&ms);
    snprintf(ms.arch, sizeof(ms.arch), "%s", m1 ? "cnn-small" : "resnet18");
    if (!m1)
        ms.head.kind = ENG_HEAD_TORCHVISION;
    eng_opt_spec os;
    eng_opt_spec_defaults(&os); /* fastai Adam: 0.9, 0.99, eps 1e-5, wd 0.01 */
    os.train_bn = train_bn;
    eng_rng init;
    eng_rng_seed(&init, 0, 0);
    if (eng_model_create(&ms, 3, in_shape, CLASSES, train_bn, &init, &m, &err) ||
        eng_trainer_init(&t, m, &d, &os, N, 0, &err)) {
        fprintf(stderr, "thawd-bench: %s\n", err.text);
        goto done;
    }
    t_ready = true;
    for (size_t i = 0; i < N; i++)
        t.perm[i] = (uint32_t)i;
    bool infer = strcmp(mode, "infer") == 0;
    eng_model_freeze_to(m, strcmp(mode, "train") == 0 ? 0 : -1);
    double flops = count_flops(m, N, mode);

    if (o->layers && !(prof = calloc(2 * m->n_layers + 1, sizeof(double))))
        goto done;
    long step_no = 0;
    const long total = o->warmup + o->repeats * o->iters;
    double *times = calloc((size_t)o->repeats, sizeof(double));
    if (!times)
        goto done;
    for (long s = 0, rep = -1; s < total; s++) {
        long k = s - o->warmup;
        if (k >= 0 && k % o->iters == 0) {
            if (rep >= 0)
                times[rep] = now() - times[rep];
            rep++;
            times[rep] = now();
            t.layer_s = prof;
        }
        if (infer) {
            memcpy(t.act[0], d.x_train, N * in_size * sizeof(float));
            eng_trainer_forward(&t, t.act[0], N, false);
            continue;
        }
        step_no++;
        for (size_t g = 0; g < t.opt.n_groups; g++) {
            t.opt.h[g].lr = 1e-4f;
            t.opt.h[g].mom = 0.85f + 0.1f * (float)(step_no % 10) / 10.0f;
        }
        eng_trainer_step(&t, t.perm, N);
    }
    times[o->repeats - 1] = now() - times[o->repeats - 1];

    double ips[MAX_LIST * 64], gf[MAX_LIST * 64], steps[MAX_LIST * 64];
    size_t R = (size_t)o->repeats < sizeof(ips) / sizeof(ips[0]) ? (size_t)o->repeats
                                                                 : sizeof(ips) / sizeof(ips[0]);
    for (size_t i = 0; i < R; i++) {
        steps[i] = times[i] / (double)o->iters;
        ips[i] = (double)N / steps[i];
        gf[i] = flops / steps[i] / 1e9;
    }
    free(times);
    qsort(ips, R, sizeof(double), cmp_double);
    qsort(gf, R, sizeof(double), cmp_double);
    qsort(steps, R, sizeof(double), cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (getloadavg(&load_after, 1) != 1)
        load_after = 0.0;
    printf("{\"model\": \"%s\", \"batch\": %zu, \"mode\": \"%s\", \"threads\": %ld, "
           "\"input\": [%zu, %zu, %zu], \"classes\": %d, "
           "\"images_per_s\": {\"median\": %.3f, \"min\": %.3f, \"max\": %.3f}, "
           "\"step_ms_median\": %.4f, "
           "\"gflops\": {\"median\": %.3f, \"min\": %.3f, \"max\": %.3f}, "
           "\"flops_per_step\": %.0f, \"flops_per_image\": %.1f, \"peak_rss_mib\": %.2f, "
           "\"repeats\": %ld, \"iters\": %ld, \"warmup\": %ld, "
           "\"loadavg\": [%.2f, %.2f]}\n",
           model, N, mode, o->threads, in_shape[0], in_shape[1], in_shape[2], CLASSES,
           median_sorted(ips, R), ips[0], ips[R - 1], 1e3 * median_sorted(steps, R),
           median_sorted(gf, R), gf[0], gf[R - 1], flops, flops / (double)N,
           (double)ru.ru_maxrss / 1024.0, o->repeats, o->iters, o->warmup, load_before, load_after);
    if (prof)
        print_layers(m, prof, (double)(o->repeats * o->iters), model, N, mode, o->threads);
    rc = 0;
done:
    free(prof);
    if (t_ready)
        eng_trainer_fini(&t);
    eng_model_destroy(m);
    free(d.x_train);
    free(d.y_train);
    return rc;
}

/* ---- driver ------------------------------------------------------------------------------ */

/* Runs one config in a fresh process; copies its JSON line into `line`. Returns 0, or -1
 * with `line` holding an error message. */
static int spawn_child(const opts *o, const char *self, const char *model, size_t batch,
                       const char *mode, char *line, size_t size)
{
    char nb[32], rep[32], it[32], wu[32], th[32];
    snprintf(nb, sizeof(nb), "%zu", batch);
    snprintf(rep, sizeof(rep), "%ld", o->repeats);
    snprintf(it, sizeof(it), "%ld", o->iters);
    snprintf(wu, sizeof(wu), "%ld", o->warmup);
    snprintf(th, sizeof(th), "%ld", o->threads);
    int fd[2];
    if (pipe(fd)) {
        snprintf(line, size, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(line, size, "fork: %s", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        char exe[4096], mo[32], md[32]; /* execv wants writable strings */
        snprintf(exe, sizeof(exe), "%s", self);
        snprintf(mo, sizeof(mo), "%s", model);
        snprintf(md, sizeof(md), "%s", mode);
        char *args[] = {exe, "--child",  mo, nb,          md, "--repeats", rep, "--iters",
                        it,  "--warmup", wu, "--threads", th, NULL,        NULL};
        if (o->layers)
            args[13] = "--layers";
        execv(self, args);
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    line[0] = 0;
    if (f) {
        char buf[LINE_BYTES];
        while (fgets(buf, sizeof(buf), f))
            if (buf[0] == '{')
                snprintf(line, size, "%s", buf);
        fclose(f);
    } else {
        close(fd[0]);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || line[0] != '{') {
        snprintf(line, size, "child failed (status %d)", status);
        return -1;
    }
    line[strcspn(line, "\n")] = 0;
    return 0;
}

/* Pulls a number that follows `key` (e.g. "\"median\": ") after `from` in a JSON line. */
static double field(const char *line, const char *from, const char *key)
{
    const char *p = strstr(line, from);
    p = p ? strstr(p, key) : NULL;
    return p ? strtod(p + strlen(key), NULL) : 0.0;
}

static void host_json(char *buf, size_t size)
{
    struct utsname u;
    char cpu[128] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char l[512];
        while (fgets(l, sizeof(l), f))
            if (strncmp(l, "model name", 10) == 0) {
                const char *c = strchr(l, ':');
                if (c) {
                    snprintf(cpu, sizeof(cpu), "%s", c + 2);
                    cpu[strcspn(cpu, "\n\"\\")] = 0;
                }
                break;
            }
        fclose(f);
    }
    if (uname(&u))
        memset(&u, 0, sizeof(u));
    snprintf(buf, size, "{\"machine\": \"%s\", \"cpus\": %ld, \"kernel\": \"%s\", \"cpu\": \"%s\"}",
             u.machine, sysconf(_SC_NPROCESSORS_ONLN), u.release, cpu);
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    if (o.child[0])
        return run_child(&o);

    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        fprintf(stderr, "thawd-bench: cannot find my own executable\n");
        return 1;
    }
    self[n] = 0;
    char host[1024], date[64];
    host_json(host, sizeof(host));
    time_t tt = time(NULL);
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S+00:00", &tm);
    printf("{\n \"schema\": \"thawd-bench/1\",\n \"implementation\": \"thawd\",\n"
           " \"version\": \"%s\",\n \"date\": \"%s\",\n \"host\": %s,\n \"threads\": %ld,\n"
           " \"settings\": {\"repeats\": %ld, \"iters\": %ld, \"warmup\": %ld},\n"
           " \"entries\": [",
           THAWD_GIT_DESCRIBE, date, host, o.threads, o.repeats, o.iters, o.warmup);
    fprintf(stderr, "%-9s %5s %-13s %10s %20s %8s %9s\n", "model", "batch", "mode", "images/s",
            "(min..max)", "GFLOPS", "RSS MiB");
    int failed = 0, first = 1;
    for (size_t mi = 0; mi < o.n_models; mi++) {
        bool m1 = strcmp(o.models[mi], "m1") == 0;
        size_t def_m1[] = {64, 128, 256}, def_r[] = {32};
        const size_t *bs = o.n_batches ? o.batches : m1 ? def_m1 : def_r;
        size_t nbs = o.n_batches ? o.n_batches : m1 ? 3 : 1;
        for (size_t bi = 0; bi < nbs; bi++)
            for (size_t k = 0; k < o.n_modes; k++) {
                char line[LINE_BYTES];
                printf("%s\n  ", first ? "" : ",");
                first = 0;
                if (spawn_child(&o, self, o.models[mi], bs[bi], o.modes[k], line, sizeof(line))) {
                    failed = 1;
                    printf("{\"model\": \"%s\", \"batch\": %zu, \"mode\": \"%s\", \"error\": "
                           "\"%s\"}",
                           o.models[mi], bs[bi], o.modes[k], line);
                    fprintf(stderr, "%-9s %5zu %-13s  error: %s\n", o.models[mi], bs[bi],
                            o.modes[k], line);
                    continue;
                }
                printf("%s", line);
                fflush(stdout);
                fprintf(stderr, "%-9s %5zu %-13s %10.1f %9.1f..%-9.1f %8.1f %9.1f\n", o.models[mi],
                        bs[bi], o.modes[k], field(line, "images_per_s", "\"median\": "),
                        field(line, "images_per_s", "\"min\": "),
                        field(line, "images_per_s", "\"max\": "),
                        field(line, "gflops", "\"median\": "), field(line, "peak_rss_mib", ": "));
            }
    }
    printf("\n ]\n}\n");
    return failed;
}
