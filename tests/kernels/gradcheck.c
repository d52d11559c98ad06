/*
 * gradcheck.c: finite-difference gradient checks of the CNN kernels' backward passes (kann
 * kad_check_grad, ggml GRAD mode), printing TAP.
 *
 * For each layer, the scalar L = sum(y * r) for a fixed random r is evaluated in double;
 * every input and parameter element is nudged by +-h and (L(+h) - L(-h)) / (2h) is compared
 * with the analytic gradient the backward kernels give for dy = r. h is the float actually
 * added (the rounded difference), so the quotient is exact up to rounding of L. Shapes are
 * small so every element is checked. Max pooling uses well-separated input values (gaps of
 * 5h) so no nudge changes which element is the maximum.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "im2col.h"
#include "kernels.h"
#include "refs.h"
#include "tap.h"

typedef enum gc_kind {
    GC_CONV,
    GC_BN_TRAIN,
    GC_MAXPOOL,
    GC_AVGPOOL,
    GC_ADA_AVG,
    GC_ADA_MAX,
    GC_CONCAT,
} gc_kind;

#define GC_MAX_T 4

typedef struct gc_case {
    gc_kind kind;
    const char *name;
    /* conv / pool geometry or bn / adaptive dims (only the kind's member is used) */
    eng_conv2d_geom cg;
    eng_pool2d_geom pg;
    eng_bn_dims bd;
    eng_adapool_dims ad;
    size_t N;
    bool cip;
    /* tensors: t[0] is the input x, the rest parameters; g[i] their analytic gradients */
    size_t nt, tn[GC_MAX_T];
    const char *tname[GC_MAX_T];
    float *t[GC_MAX_T], *g[GC_MAX_T];
    size_t yn;
    float *y, *r, *col, *tmp, *mean, *invstd;
    int32_t *idx;
    eng_conv2d_scratch s;
} gc_case;

static void forward(gc_case *c)
{
    switch (c->kind) {
    case GC_CONV:
        eng_conv2d_forward(&c->cg, c->N, c->t[0], c->t[1], c->t[2], c->y, &c->s);
        break;
    case GC_BN_TRAIN:
        if (eng_batchnorm_train_forward(&c->bd, c->t[0], c->t[1], c->t[2], c->y, c->mean, c->invstd,
                                        NULL, NULL, ENG_BN_MOMENTUM, ENG_BN_EPS, NULL))
            abort(); /* the cases have N*S >= 2 */
        break;
    case GC_MAXPOOL:
        eng_maxpool2d_forward(&c->pg, c->N, c->t[0], c->y, c->idx);
        break;
    case GC_AVGPOOL:
        eng_avgpool2d_forward(&c->pg, c->N, c->cip, c->t[0], c->y);
        break;
    case GC_ADA_AVG:
        eng_adaptive_avgpool2d_forward(&c->ad, c->t[0], c->y);
        break;
    case GC_ADA_MAX:
        eng_adaptive_maxpool2d_forward(&c->ad, c->t[0], c->y, c->idx);
        break;
    case GC_CONCAT:
        eng_adaptive_concatpool2d_forward(&c->ad, c->t[0], c->y, c->idx);
        break;
    }
}

static void backward(gc_case *c)
{
    switch (c->kind) {
    case GC_CONV:
        eng_conv2d_backward_input(&c->cg, c->N, c->t[1], c->r, c->g[0], false, &c->s);
        eng_conv2d_backward_weight(&c->cg, c->N, c->t[0], c->r, c->g[1], false, &c->s);
        eng_conv2d_backward_bias(&c->cg, c->N, c->r, c->g[2], false);
        break;
    case GC_BN_TRAIN:
        eng_batchnorm_train_backward(&c->bd, c->t[0], c->r, c->t[1], c->mean, c->invstd, c->g[0],
                                     c->g[1], c->g[2], false);
        break;
    case GC_MAXPOOL:
        eng_maxpool2d_backward(&c->pg, c->N, c->r, c->idx, c->g[0], false);
        break;
    case GC_AVGPOOL:
        eng_avgpool2d_backward(&c->pg, c->N, c->cip, c->r, c->g[0], false);
        break;
    case GC_ADA_AVG:
        eng_adaptive_avgpool2d_backward(&c->ad, c->r, c->g[0], false);
        break;
    case GC_ADA_MAX:
        eng_adaptive_maxpool2d_backward(&c->ad, c->r, c->idx, c->g[0], false);
        break;
    case GC_CONCAT:
        eng_adaptive_concatpool2d_backward(&c->ad, c->r, c->idx, c->g[0], false);
        break;
    }
}

static double loss(gc_case *c)
{
    forward(c);
    double L = 0.0;
    for (size_t i = 0; i < c->yn; i++)
        L += (double)c->y[i] * (double)c->r[i];
    return L;
}

static void add_tensor(gc_case *c, const char *name, size_t n)
{
    c->tname[c->nt] = name;
    c->tn[c->nt] = n;
    c->t[c->nt] = test_alloc(n);
    c->g[c->nt] = test_alloc(n);
    c->nt++;
}

/* Runs the check; h is the nudge, tol the allowed max error relative to max |gradient|. */
static void run(test_rng *rng, gc_case *c, float h, double tol)
{
    c->r = test_alloc(c->yn);
    c->y = test_alloc(c->yn);
    test_fill(rng, c->r, c->yn, -1, 1);
    if (c->kind == GC_MAXPOOL || c->kind == GC_ADA_MAX || c->kind == GC_CONCAT)
        test_fill_distinct(rng, c->t[0], c->tn[0], 5 * h);
    else
        test_fill(rng, c->t[0], c->tn[0], -1, 1);
    for (size_t k = 1; k < c->nt; k++)
        test_fill(rng, c->t[k], c->tn[k], 0.5f, 1.5f);
    forward(c);
    backward(c);
    for (size_t k = 0; k < c->nt; k++) {
        double worst = 0.0, gmax = 0.0;
        size_t at = 0;
        for (size_t i = 0; i < c->tn[k]; i++) {
            float *p = &c->t[k][i], v = *p;
            *p = v + h;
            float hp = *p - v;
            double lp = loss(c);
            *p = v - h;
            float hm = v - *p;
            double lm = loss(c);
            *p = v;
            double num = (lp - lm) / ((double)hp + (double)hm);
            double e = fabs(num - (double)c->g[k][i]);
            if (e > worst) {
                worst = e;
                at = i;
            }
            if (fabs((double)c->g[k][i]) > gmax)
                gmax = fabs((double)c->g[k][i]);
        }
        double rel = worst / (gmax > 1e-3 ? gmax : 1e-3);
        if (!ok(rel <= tol, "gradcheck %s: d/d%s (%zu elements, max err %.2e of max |g| %.3g)",
                c->name, c->tname[k], c->tn[k], rel, gmax))
            diag("  worst element %zu: analytic %.7g", at, (double)c->g[k][at]);
    }
    for (size_t k = 0; k < c->nt; k++)
        free(c->t[k]), free(c->g[k]);
    free(c->r), free(c->y), free(c->col), free(c->tmp), free(c->mean), free(c->invstd);
    free(c->idx);
}

static void conv_case(test_rng *rng, const char *name, size_t N, size_t IC, size_t IH, size_t IW,
                      size_t OC, size_t K, size_t S, size_t P, size_t nb)
{
    gc_case c = {.kind = GC_CONV, .name = name, .N = N};
    if (eng_conv2d_geom_init(&c.cg, IC, IH, IW, OC, K, K, S, S, P, P)) {
        ok(false, "gradcheck %s: geometry", name);
        return;
    }
    add_tensor(&c, "x", N * IC * IH * IW);
    add_tensor(&c, "w", OC * eng_conv2d_kdim(&c.cg));
    add_tensor(&c, "b", OC);
    c.yn = N * OC * c.cg.OH * c.cg.OW;
    c.col = test_alloc(eng_conv2d_col_floats(&c.cg, nb));
    c.tmp = test_alloc(eng_conv2d_tmp_floats(&c.cg, nb));
    c.s = (eng_conv2d_scratch){c.col, c.tmp, nb};
    run(rng, &c, 1e-2f, 2e-3);
}

static void bn_case(test_rng *rng, const char *name, size_t N, size_t C, size_t S)
{
    gc_case c = {.kind = GC_BN_TRAIN, .name = name, .bd = {N, C, S}};
    add_tensor(&c, "x", N * C * S);
    add_tensor(&c, "gamma", C);
    add_tensor(&c, "beta", C);
    c.yn = N * C * S;
    c.mean = test_alloc(C);
    c.invstd = test_alloc(C);
    run(rng, &c, 4e-3f, 2e-3);
}

static void pool_case(test_rng *rng, gc_kind kind, const char *name, size_t N, size_t C, size_t IH,
                      size_t IW, size_t K, size_t S, size_t P, bool cip)
{
    gc_case c = {.kind = kind, .name = name, .N = N, .cip = cip};
    if (eng_pool2d_geom_init(&c.pg, C, IH, IW, K, K, S, S, P, P)) {
        ok(false, "gradcheck %s: geometry", name);
        return;
    }
    add_tensor(&c, "x", N * C * IH * IW);
    c.yn = N * C * c.pg.OH * c.pg.OW;
    c.idx = calloc(c.yn, sizeof(int32_t));
    if (!c.idx)
        abort();
    run(rng, &c, 1e-2f, 2e-3);
}

static void ada_case(test_rng *rng, gc_kind kind, const char *name, size_t N, size_t C, size_t IH,
                     size_t IW, size_t OH, size_t OW)
{
    gc_case c = {.kind = kind, .name = name, .ad = {N, C, IH, IW, OH, OW}};
    add_tensor(&c, "x", N * C * IH * IW);
    c.yn = N * C * OH * OW * (kind == GC_CONCAT ? 2 : 1);
    c.idx = calloc(N * C * OH * OW, sizeof(int32_t));
    if (!c.idx)
        abort();
    run(rng, &c, 1e-2f, 2e-3);
}

int main(void)
{
    test_rng rng = {0x67726164ull};
    conv_case(&rng, "conv 3x3 s2 p1", 2, 3, 5, 6, 4, 3, 2, 1, 1);
    conv_case(&rng, "conv 3x3 s1 p1 nb=2", 3, 2, 4, 4, 3, 3, 1, 1, 2);
    conv_case(&rng, "conv 1x1 pointwise", 2, 3, 3, 4, 2, 1, 1, 0, 1);
    bn_case(&rng, "batchnorm2d train", 3, 2, 16);
    bn_case(&rng, "batchnorm1d train", 6, 3, 1);
    bn_case(&rng, "batchnorm1d train N=3", 3, 4, 1);
    pool_case(&rng, GC_MAXPOOL, "maxpool k3 s2 p1", 2, 2, 7, 6, 3, 2, 1, false);
    pool_case(&rng, GC_MAXPOOL, "maxpool k2 s2", 1, 3, 6, 6, 2, 2, 0, false);
    pool_case(&rng, GC_AVGPOOL, "avgpool k3 s2 p1", 2, 2, 7, 6, 3, 2, 1, true);
    pool_case(&rng, GC_AVGPOOL, "avgpool k3 s2 p1 no pad count", 2, 2, 7, 6, 3, 2, 1, false);
    ada_case(&rng, GC_ADA_AVG, "adaptive avg 7x5->3x2", 2, 2, 7, 5, 3, 2);
    ada_case(&rng, GC_ADA_MAX, "adaptive max 7x5->3x2", 2, 2, 7, 5, 3, 2);
    ada_case(&rng, GC_CONCAT, "concat pool 5x5->1x1", 2, 3, 5, 5, 1, 1);
    ada_case(&rng, GC_CONCAT, "concat pool 6x5->2x2", 1, 2, 6, 5, 2, 2);
    return done_testing();
}
