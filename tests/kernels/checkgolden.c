/*
 * checkgolden.c: thawd's CNN kernels against PyTorch's outputs and gradients, recorded by
 * tools/gen_kernel_golden.py into tests/data/kernels/NAME.bin (format described there).
 *
 * Usage: checkgolden DIR (meson passes the source tree's tests/data/kernels). Prints TAP.
 * Each tensor must match within 1e-4 of its largest magnitude (PyTorch ran in float64 on
 * the same float32 inputs, so this measures our float32 rounding only).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "im2col.h"
#include "kernels.h"
#include "tap.h"

#define GOLDEN_TOL     1e-4
#define GOLDEN_MAX_T   24
#define GOLDEN_MAX_DIM 4

typedef struct golden_tensor {
    char name[32];
    uint32_t ndim, dims[GOLDEN_MAX_DIM];
    size_t n;
    float *data;
} golden_tensor;

typedef struct golden {
    size_t nt;
    golden_tensor t[GOLDEN_MAX_T];
} golden;

static void golden_free(golden *g)
{
    for (size_t i = 0; i < g->nt; i++)
        free(g->t[i].data);
    g->nt = 0;
}

static bool read_u32(FILE *f, uint32_t *v)
{
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4)
        return false;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return true;
}

/* Loads DIR/NAME.bin; returns false (with a diagnostic) on any format problem. */
static bool golden_load(golden *g, const char *dir, const char *name)
{
    char path[1024];
    char magic[8];
    uint32_t count;
    g->nt = 0;
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        diag("cannot open %s", path);
        return false;
    }
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "THKG0001", 8) != 0 || !read_u32(f, &count) ||
        count > GOLDEN_MAX_T)
        goto fail;
    for (uint32_t i = 0; i < count; i++) {
        golden_tensor *t = &g->t[g->nt];
        uint32_t len;
        if (!read_u32(f, &len) || len >= sizeof t->name || fread(t->name, 1, len, f) != len)
            goto fail;
        t->name[len] = '\0';
        if (!read_u32(f, &t->ndim) || t->ndim > GOLDEN_MAX_DIM)
            goto fail;
        t->n = 1;
        for (uint32_t d = 0; d < t->ndim; d++) {
            if (!read_u32(f, &t->dims[d]) || t->dims[d] > (1u << 20))
                goto fail;
            t->n *= t->dims[d];
        }
        t->data = malloc((t->n ? t->n : 1) * sizeof(float));
        if (!t->data)
            goto fail;
        g->nt++;
        for (size_t k = 0; k < t->n; k++) {
            uint32_t bits;
            if (!read_u32(f, &bits))
                goto fail;
            memcpy(&t->data[k], &bits, sizeof bits);
        }
    }
    fclose(f);
    return true;
fail:
    diag("malformed golden file %s", path);
    fclose(f);
    golden_free(g);
    return false;
}

/* The tensor called `name` with exactly n elements, or NULL (with a diagnostic). */
static float *get(const golden *g, const char *name, size_t n)
{
    for (size_t i = 0; i < g->nt; i++)
        if (strcmp(g->t[i].name, name) == 0) {
            if (g->t[i].n != n) {
                diag("tensor %s has %zu elements, expected %zu", name, g->t[i].n, n);
                return NULL;
            }
            return g->t[i].data;
        }
    diag("tensor %s missing", name);
    return NULL;
}

/* cfg value i as size_t */
static size_t cfgv(const golden *g, size_t i)
{
    for (size_t k = 0; k < g->nt; k++)
        if (strcmp(g->t[k].name, "cfg") == 0 && i < g->t[k].n)
            return (size_t)g->t[k].data[i];
    return 0;
}

static void match(const float *got, const float *want, size_t n, const char *file, const char *what)
{
    double worst = 0.0, scale = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (!(e <= worst)) {
            worst = e;
            at = i;
        }
        if (fabs((double)want[i]) > scale)
            scale = fabs((double)want[i]);
    }
    double rel = worst / (scale > 1e-12 ? scale : 1e-12);
    if (!ok(rel <= GOLDEN_TOL, "%s: %s matches PyTorch (max err %.2e of max |%s| %.3g)", file, what,
            rel, what, scale))
        diag("  element %zu: got %.9g want %.9g", at, (double)got[at], (double)want[at]);
}

static float *zeros(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p)
        abort();
    return p;
}

static void check_conv(const golden *G, const char *file)
{
    size_t N = cfgv(G, 0), bias = cfgv(G, 11);
    eng_conv2d_geom g;
    if (!ok(eng_conv2d_geom_init(&g, cfgv(G, 1), cfgv(G, 2), cfgv(G, 3), cfgv(G, 4), cfgv(G, 5),
                                 cfgv(G, 6), cfgv(G, 7), cfgv(G, 8), cfgv(G, 9), cfgv(G, 10)) == 0,
            "%s: geometry", file))
        return;
    size_t in = N * g.IC * g.IH * g.IW, out = N * g.OC * g.OH * g.OW;
    size_t wn = g.OC * eng_conv2d_kdim(&g);
    float *x = get(G, "x", in), *w = get(G, "w", wn), *b = bias ? get(G, "b", g.OC) : NULL;
    float *dy = get(G, "dy", out), *y_w = get(G, "y", out), *dx_w = get(G, "dx", in);
    float *dw_w = get(G, "dw", wn), *db_w = bias ? get(G, "db", g.OC) : NULL;
    if (!ok(x && w && dy && y_w && dx_w && dw_w && (!bias || (b && db_w)), "%s: tensors", file))
        return;
    float *y = zeros(out), *dx = zeros(in), *dw = zeros(wn), *db = zeros(g.OC);
    float *col = zeros(eng_conv2d_col_floats(&g, 2)), *tmp = zeros(eng_conv2d_tmp_floats(&g, 2));
    eng_conv2d_scratch s = {col, tmp, 2};
    eng_conv2d_forward(&g, N, x, w, b, y, &s);
    match(y, y_w, out, file, "y");
    eng_conv2d_backward_input(&g, N, w, dy, dx, false, &s);
    match(dx, dx_w, in, file, "dx");
    eng_conv2d_backward_weight(&g, N, x, dy, dw, false, &s);
    match(dw, dw_w, wn, file, "dw");
    if (bias) {
        eng_conv2d_backward_bias(&g, N, dy, db, false);
        match(db, db_w, g.OC, file, "db");
    }
    free(y), free(dx), free(dw), free(db), free(col), free(tmp);
}

static void check_bn(const golden *G, const char *file)
{
    eng_bn_dims d = {cfgv(G, 0), cfgv(G, 1), cfgv(G, 2)};
    size_t n = d.N * d.C * d.S, C = d.C;
    float *x = get(G, "x", n), *gm = get(G, "gamma", C), *bt = get(G, "beta", C);
    float *rm0 = get(G, "running_mean0", C), *rv0 = get(G, "running_var0", C);
    float *dy = get(G, "dy", n), *y_w = get(G, "y", n), *dx_w = get(G, "dx", n);
    float *dg_w = get(G, "dgamma", C), *db_w = get(G, "dbeta", C);
    float *rm_w = get(G, "running_mean", C), *rv_w = get(G, "running_var", C);
    float *nbt_w = get(G, "num_batches_tracked", 1), *ye_w = get(G, "y_eval", n);
    if (!ok(x && gm && bt && rm0 && rv0 && dy && y_w && dx_w && dg_w && db_w && rm_w && rv_w &&
                nbt_w && ye_w,
            "%s: tensors", file))
        return;
    float *y = zeros(n), *dx = zeros(n), *mean = zeros(C), *is = zeros(C), *rm = zeros(C);
    float *rv = zeros(C), *dg = zeros(C), *db = zeros(C);
    memcpy(rm, rm0, C * sizeof(float));
    memcpy(rv, rv0, C * sizeof(float));
    int64_t nbt = 0;
    is_int(eng_batchnorm_train_forward(&d, x, gm, bt, y, mean, is, rm, rv, ENG_BN_MOMENTUM,
                                       ENG_BN_EPS, &nbt),
           0, "%s: train forward", file);
    match(y, y_w, n, file, "y");
    match(rm, rm_w, C, file, "running_mean");
    match(rv, rv_w, C, file, "running_var");
    is_int(nbt, (long long)nbt_w[0], "%s: num_batches_tracked", file);
    eng_batchnorm_train_backward(&d, x, dy, gm, mean, is, dx, dg, db, false);
    match(dx, dx_w, n, file, "dx");
    match(dg, dg_w, C, file, "dgamma");
    match(db, db_w, C, file, "dbeta");
    eng_batchnorm_eval_forward(&d, x, gm, bt, rm, rv, ENG_BN_EPS, y);
    match(y, ye_w, n, file, "y_eval");
    free(y), free(dx), free(mean), free(is), free(rm), free(rv), free(dg), free(db);
}

static void check_pool(const golden *G, const char *file, bool is_max)
{
    size_t N = cfgv(G, 0);
    bool cip = cfgv(G, 10) != 0;
    eng_pool2d_geom g;
    if (!ok(eng_pool2d_geom_init(&g, cfgv(G, 1), cfgv(G, 2), cfgv(G, 3), cfgv(G, 4), cfgv(G, 5),
                                 cfgv(G, 6), cfgv(G, 7), cfgv(G, 8), cfgv(G, 9)) == 0,
            "%s: geometry", file))
        return;
    size_t in = N * g.C * g.IH * g.IW, out = N * g.C * g.OH * g.OW;
    float *x = get(G, "x", in), *dy = get(G, "dy", out), *y_w = get(G, "y", out);
    float *dx_w = get(G, "dx", in);
    if (!ok(x && dy && y_w && dx_w, "%s: tensors", file))
        return;
    float *y = zeros(out), *dx = zeros(in);
    int32_t *idx = calloc(out, sizeof(int32_t));
    if (!idx)
        abort();
    if (is_max) {
        eng_maxpool2d_forward(&g, N, x, y, idx);
        eng_maxpool2d_backward(&g, N, dy, idx, dx, false);
    } else {
        eng_avgpool2d_forward(&g, N, cip, x, y);
        eng_avgpool2d_backward(&g, N, cip, dy, dx, false);
    }
    match(y, y_w, out, file, "y");
    match(dx, dx_w, in, file, "dx");
    free(y), free(dx), free(idx);
}

typedef enum ada_kind { ADA_AVG, ADA_MAX, ADA_CONCAT } ada_kind;

static void check_adaptive(const golden *G, const char *file, ada_kind kind)
{
    eng_adapool_dims d = {cfgv(G, 0), cfgv(G, 1), cfgv(G, 2), cfgv(G, 3), cfgv(G, 4), cfgv(G, 5)};
    size_t in = d.N * d.C * d.IH * d.IW, out = d.N * d.C * d.OH * d.OW;
    size_t yn = kind == ADA_CONCAT ? 2 * out : out;
    float *x = get(G, "x", in), *dy = get(G, "dy", yn), *y_w = get(G, "y", yn);
    float *dx_w = get(G, "dx", in);
    if (!ok(x && dy && y_w && dx_w, "%s: tensors", file))
        return;
    float *y = zeros(yn), *dx = zeros(in);
    int32_t *idx = calloc(out, sizeof(int32_t));
    if (!idx)
        abort();
    if (kind == ADA_AVG) {
        eng_adaptive_avgpool2d_forward(&d, x, y);
        eng_adaptive_avgpool2d_backward(&d, dy, dx, false);
    } else if (kind == ADA_MAX) {
        eng_adaptive_maxpool2d_forward(&d, x, y, idx);
        eng_adaptive_maxpool2d_backward(&d, dy, idx, dx, false);
    } else {
        eng_adaptive_concatpool2d_forward(&d, x, y, idx);
        eng_adaptive_concatpool2d_backward(&d, dy, idx, dx, false);
    }
    match(y, y_w, yn, file, "y");
    match(dx, dx_w, in, file, "dx");
    free(y), free(dx), free(idx);
}

int main(int argc, char **argv)
{
    static const char *conv[] = {"conv_3x3_s1_p1_bias", "conv_3x3_s2_p1", "conv_1x1_s2_bias",
                                 "conv_5x3_s2x1_p2x0_bias", "conv_7x7_s2_p3"};
    static const char *bn[] = {"bn2d_train", "bn1d_train"};
    static const char *maxp[] = {"maxpool_k3_s2_p1", "maxpool_k2_s2"};
    static const char *avgp[] = {"avgpool_k3_s2_p1", "avgpool_k3_s2_p1_nopad"};
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR (tests/data/kernels)\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    golden G = {0};
#define EACH(list, call)                                              \
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {       \
        if (ok(golden_load(&G, dir, list[i]), "%s: loaded", list[i])) \
            call;                                                     \
        golden_free(&G);                                              \
    }
    EACH(conv, check_conv(&G, conv[i]))
    EACH(bn, check_bn(&G, bn[i]))
    EACH(maxp, check_pool(&G, maxp[i], true))
    EACH(avgp, check_pool(&G, avgp[i], false))
    static const char *ada[] = {"adaptive_avg_7x9_3x4", "adaptive_max_7x9_3x4",
                                "concat_pool_7x7_1x1", "concat_pool_5x6_2x2"};
    static const ada_kind adak[] = {ADA_AVG, ADA_MAX, ADA_CONCAT, ADA_CONCAT};
    EACH(ada, check_adaptive(&G, ada[i], adak[i]))
#undef EACH
    return done_testing();
}
