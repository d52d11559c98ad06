/*
 * checkkernels.c: every fast CNN kernel against its naive reference (dav1d checkasm style),
 * printing TAP. Random shapes from a fixed seed plus hand-picked stride/padding/odd-size edge
 * cases; results are compared by normalised MSE, not bit for bit.
 *
 * `checkkernels --bench` instead times the fast kernels on M1's shapes (median of repeats,
 * GFLOPS for the GEMM-based ones) and asserts nothing about time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "im2col.h"
#include "kernels.h"
#include "refs.h"
#include "tap.h"

#define TOL 1e-9 /* NMSE of float kernels against double references */

/* ---- im2col / col2im --------------------------------------------------------------------- */

/* im2col by its definition, for the check. */
static void naive_im2col(const eng_conv2d_geom *g, const float *x, float *col, size_t ldcol)
{
    for (size_t ic = 0; ic < g->IC; ic++)
        for (size_t kh = 0; kh < g->KH; kh++)
            for (size_t kw = 0; kw < g->KW; kw++)
                for (size_t oh = 0; oh < g->OH; oh++)
                    for (size_t ow = 0; ow < g->OW; ow++) {
                        long ih = (long)(oh * g->SH + kh) - (long)g->PH;
                        long iw = (long)(ow * g->SW + kw) - (long)g->PW;
                        float v = 0.0f;
                        if (ih >= 0 && iw >= 0 && ih < (long)g->IH && iw < (long)g->IW)
                            v = x[(ic * g->IH + (size_t)ih) * g->IW + (size_t)iw];
                        col[((ic * g->KH + kh) * g->KW + kw) * ldcol + oh * g->OW + ow] = v;
                    }
}

/* eng_col2im_set's sum for input (ih, iw) of a 3x3, stride-2, padding-1 kernel, written out
 * in the order the kernel promises (that of eng_col2im onto zeros, bit for bit): within a
 * kernel row kw = 2 then kw = 0 (+ 0.0f when kw = 0 falls past the last output column), and
 * kernel row kh = 0 before kh = 2. */
static float k3s2p1_row_sum(const eng_conv2d_geom *g, const float *c, size_t ldcol, size_t kh,
                            size_t oh, size_t iw)
{
    const float *r = c + 3 * kh * ldcol + oh * g->OW; /* kw = 0; kw at r + kw * ldcol */
    if (iw % 2 == 0)
        return r[ldcol + iw / 2];
    const size_t ow = iw / 2;
    return r[2 * ldcol + ow] + (ow + 1 < g->OW ? r[ow + 1] : 0.0f);
}

static void naive_col2im_set_k3s2p1(const eng_conv2d_geom *g, const float *col, size_t ldcol,
                                    float *dx)
{
    for (size_t ic = 0; ic < g->IC; ic++)
        for (size_t ih = 0; ih < g->IH; ih++)
            for (size_t iw = 0; iw < g->IW; iw++) {
                const float *c = col + ic * 9 * ldcol;
                const size_t k = ih / 2;
                float v;
                if (ih % 2 == 0)
                    v = k3s2p1_row_sum(g, c, ldcol, 1, k, iw);
                else if (k + 1 < g->OH)
                    v = k3s2p1_row_sum(g, c, ldcol, 0, k + 1, iw) +
                        k3s2p1_row_sum(g, c, ldcol, 2, k, iw);
                else
                    v = k3s2p1_row_sum(g, c, ldcol, 2, k, iw);
                dx[(ic * g->IH + ih) * g->IW + iw] = v;
            }
}

static void check_im2col(test_rng *r, const eng_conv2d_geom *g, const char *name)
{
    const size_t K = eng_conv2d_kdim(g), P = g->OH * g->OW;
    const size_t in = g->IC * g->IH * g->IW;
    const bool k3s2p1 =
        g->KH == 3 && g->KW == 3 && g->SH == 2 && g->SW == 2 && g->PH == 1 && g->PW == 1;
    /* column layouts: one image (ldcol = P), spare columns, image 1 of a chunk of three */
    const size_t lds[3] = {P, P + 3, 3 * P}, offs[3] = {0, 0, P};
    float *x = test_alloc(in), *c = test_alloc(K * P), *dx = test_alloc(in);
    float *base = test_alloc(in);
    for (int t = 0; t < 3; t++) {
        const size_t ld = lds[t], off = offs[t];
        float *col = test_alloc(K * ld), *want = test_alloc(K * ld);
        test_fill(r, x, in, -1, 1);
        /* the columns outside the image's must survive: fill both with the same sentinel */
        for (size_t i = 0; i < K * ld; i++)
            col[i] = want[i] = 7.0f;
        eng_im2col(g, x, col + off, ld);
        naive_im2col(g, x, want + off, ld);
        ok(memcmp(col, want, K * ld * sizeof(float)) == 0, "im2col %s: exact, ldcol %zu at %zu",
           name, ld, off);

        /* eng_col2im_set == eng_col2im onto zeros, value for value, whatever dx held */
        test_fill(r, col, K * ld, -1, 1);
        for (size_t i = 0; i < K * ld; i += 5) /* signed zeros: +0 + -0 is +0, -0 + -0 is -0 */
            col[i] = i % 2 ? -0.0f : 0.0f;
        memset(base, 0, in * sizeof(float));
        eng_col2im(g, col + off, ld, base);
        test_fill(r, dx, in, -9, 9);
        eng_col2im_set(g, col + off, ld, dx);
        size_t same = 0;
        for (size_t i = 0; i < in; i++)
            same += dx[i] == base[i];
        is_int(same, in, "col2im_set %s: overwrites with col2im's sums, ldcol %zu at %zu", name, ld,
               off);
        if (k3s2p1) {
            naive_col2im_set_k3s2p1(g, col + off, ld, base);
            ok(memcmp(dx, base, in * sizeof(float)) == 0,
               "col2im_set %s: the promised order bit for bit, ldcol %zu at %zu", name, ld, off);
        }
        free(col), free(want);
    }

    /* col2im is the adjoint: <im2col(x), c> == <x, col2im(c)>, and it adds to dx. */
    float *col = test_alloc(K * P);
    test_fill(r, c, K * P, -1, 1);
    test_fill(r, base, in, -1, 1);
    memcpy(dx, base, in * sizeof(float));
    eng_im2col(g, x, col, P);
    eng_col2im(g, c, P, dx);
    double lhs = 0.0, rhs = 0.0, scale = 0.0;
    for (size_t i = 0; i < K * P; i++) {
        lhs += (double)col[i] * (double)c[i];
        scale += fabs((double)col[i] * (double)c[i]);
    }
    for (size_t i = 0; i < in; i++)
        rhs += (double)x[i] * ((double)dx[i] - (double)base[i]);
    is_near(lhs, rhs, 1e-5 * (scale + 1.0), "col2im %s: adjoint of im2col, accumulates", name);
    free(x), free(col), free(c), free(dx), free(base);
}

/* The 3x3 stride-2 padding-1 unfolding on the sizes its vector kernels treat apart: rows of
 * 1..16 columns (two rows per vector), 17..32 (one), over 32 (16-column chunks), odd and even
 * widths and heights, maps under 16 floats. */
static void check_im2col_k3s2p1(test_rng *r)
{
    static const size_t hs[] = {1, 2, 3, 4, 5, 6, 8, 12, 14, 15, 16};
    static const size_t ws[] = {1, 2, 3, 7, 8, 9, 13, 14, 15, 16, 17, 28, 31, 32, 33, 34, 65};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
        for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++) {
            eng_conv2d_geom g;
            char name[64];
            snprintf(name, sizeof name, "3x3 s2 p1 2x%zux%zu", hs[i], ws[j]);
            if (eng_conv2d_geom_init(&g, 2, hs[i], ws[j], 1, 3, 3, 2, 2, 1, 1)) {
                ok(false, "conv %s: geometry accepted", name);
                continue;
            }
            check_im2col(r, &g, name);
        }
}

/* ---- conv2d ------------------------------------------------------------------------------ */

static void check_conv(test_rng *r, const eng_conv2d_geom *g, size_t N, bool bias, const char *name)
{
    const size_t in = N * g->IC * g->IH * g->IW, out = N * g->OC * g->OH * g->OW;
    const size_t wn = g->OC * eng_conv2d_kdim(g);
    float *x = test_alloc(in), *w = test_alloc(wn), *b = test_alloc(g->OC);
    float *dy = test_alloc(out), *y = test_alloc(out), *y_ref = test_alloc(out);
    float *dx = test_alloc(in), *dx_ref = test_alloc(in), *pre = test_alloc(in > wn ? in : wn);
    float *dw = test_alloc(wn), *dw_ref = test_alloc(wn);
    float *db = test_alloc(g->OC), *db_ref = test_alloc(g->OC);
    test_fill(r, x, in, -1, 1);
    test_fill(r, w, wn, -0.5f, 0.5f);
    test_fill(r, b, g->OC, -1, 1);
    test_fill(r, dy, out, -1, 1);
    test_fill(r, pre, in > wn ? in : wn, -1, 1);
    eng_conv2d_ref_forward(g, N, x, w, bias ? b : NULL, y_ref);
    eng_conv2d_ref_backward_input(g, N, dy, w, dx_ref);
    eng_conv2d_ref_backward_weight(g, N, x, dy, dw_ref, db_ref);

    size_t nbs[3] = {1, 2, N}; /* one image per GEMM, pairs (ragged tail if N odd), all */
    for (size_t t = 0; t < 3; t++) {
        size_t nb = nbs[t];
        if (t > 0 && (nb > N || (t == 2 && N <= 2)))
            continue;
        float *col = test_alloc(eng_conv2d_col_floats(g, nb));
        float *tmp = test_alloc(eng_conv2d_tmp_floats(g, nb));
        eng_conv2d_scratch s = {.col = col, .tmp = nb > 1 ? tmp : NULL, .nb = nb};

        eng_conv2d_forward(g, N, x, w, bias ? b : NULL, y, &s);
        CLOSE(y, y_ref, out, TOL, "conv %s nb=%zu: forward%s", name, nb, bias ? " + bias" : "");

        eng_conv2d_backward_weight(g, N, x, dy, dw, false, &s);
        CLOSE(dw, dw_ref, wn, TOL, "conv %s nb=%zu: weight grad", name, nb);
        memcpy(dw, pre, wn * sizeof(float));
        eng_conv2d_backward_weight(g, N, x, dy, dw, true, &s);
        for (size_t i = 0; i < wn; i++)
            dw[i] -= pre[i];
        CLOSE(dw, dw_ref, wn, 1e-8, "conv %s nb=%zu: weight grad accumulates", name, nb);

        eng_conv2d_backward_input(g, N, w, dy, dx, false, &s);
        CLOSE(dx, dx_ref, in, TOL, "conv %s nb=%zu: input grad", name, nb);
        memcpy(dx, pre, in * sizeof(float));
        eng_conv2d_backward_input(g, N, w, dy, dx, true, &s);
        for (size_t i = 0; i < in; i++)
            dx[i] -= pre[i];
        CLOSE(dx, dx_ref, in, 1e-8, "conv %s nb=%zu: input grad accumulates", name, nb);
        /* both in one pass: the bits of the two separate calls, accumulating or not */
        for (int acc = 0; acc < 2; acc++) {
            float *dw2 = test_alloc(wn), *dx2 = test_alloc(in);
            memcpy(dw, pre, wn * sizeof(float));
            memcpy(dx, pre, in * sizeof(float));
            memcpy(dw2, pre, wn * sizeof(float));
            memcpy(dx2, pre, in * sizeof(float));
            eng_conv2d_backward_weight(g, N, x, dy, dw, acc, &s);
            eng_conv2d_backward_input(g, N, w, dy, dx, acc, &s);
            eng_conv2d_backward_weight_input(g, N, x, w, dy, dw2, acc, dx2, acc, &s);
            is_int(memcmp(dw, dw2, wn * sizeof(float)) == 0 &&
                       memcmp(dx, dx2, in * sizeof(float)) == 0,
                   1, "conv %s nb=%zu: weight and input grads in one pass, acc %d: same bits", name,
                   nb, acc);
            free(dw2), free(dx2);
        }
        free(col), free(tmp);
    }
    eng_conv2d_backward_bias(g, N, dy, db, false);
    CLOSE(db, db_ref, g->OC, TOL, "conv %s: bias grad", name);
    for (size_t i = 0; i < g->OC; i++)
        db[i] = 1.0f;
    eng_conv2d_backward_bias(g, N, dy, db, true);
    for (size_t i = 0; i < g->OC; i++)
        db[i] -= 1.0f;
    CLOSE(db, db_ref, g->OC, 1e-8, "conv %s: bias grad accumulates", name);
    free(x), free(w), free(b), free(dy), free(y), free(y_ref), free(dx), free(dx_ref);
    free(pre), free(dw), free(dw_ref), free(db), free(db_ref);
}

typedef struct conv_case {
    const char *name;
    size_t N, IC, IH, IW, OC, KH, KW, SH, SW, PH, PW;
} conv_case;

static const conv_case conv_cases[] = {
    {"1x1 pointwise", 3, 5, 6, 7, 4, 1, 1, 1, 1, 0, 0},
    {"1x1 s2 downsample", 3, 4, 9, 8, 6, 1, 1, 2, 2, 0, 0},
    {"3x3 s1 p1", 2, 3, 8, 8, 5, 3, 3, 1, 1, 1, 1},
    {"3x3 s2 p1 odd", 3, 2, 9, 7, 3, 3, 3, 2, 2, 1, 1},
    {"3x3 s2 p1 28x28 (M1)", 2, 3, 28, 28, 4, 3, 3, 2, 2, 1, 1},
    {"3x3 s2 p1 6x5", 2, 2, 6, 5, 3, 3, 3, 2, 2, 1, 1},
    {"3x3 s2 p1 1x2", 2, 2, 1, 2, 3, 3, 3, 2, 2, 1, 1},
    {"7x7 s2 p3 stem", 2, 3, 13, 11, 4, 7, 7, 2, 2, 3, 3},
    {"kernel = padded input", 2, 2, 3, 4, 3, 5, 6, 1, 1, 1, 1},
    {"stride > kernel", 2, 2, 11, 10, 3, 3, 2, 4, 3, 0, 0},
    {"5x2 s(2,3) p(2,1)", 3, 3, 10, 9, 2, 5, 2, 2, 3, 2, 1},
    {"pad > kernel", 2, 2, 4, 5, 3, 2, 2, 1, 1, 3, 3},
    {"1x1 image 3x3 p1", 4, 3, 1, 1, 2, 3, 3, 1, 1, 1, 1},
    {"N=1", 1, 3, 6, 5, 2, 3, 3, 1, 2, 1, 0},
};

static void check_conv_all(test_rng *r)
{
    eng_conv2d_geom g;
    is_int(eng_conv2d_geom_init(&g, 0, 5, 5, 1, 3, 3, 1, 1, 1, 1), ENG_EINVAL, "conv geom: IC 0");
    is_int(eng_conv2d_geom_init(&g, 1, 5, 5, 1, 3, 3, 0, 1, 1, 1), ENG_EINVAL,
           "conv geom: stride 0");
    is_int(eng_conv2d_geom_init(&g, 1, 2, 5, 1, 5, 3, 1, 1, 1, 1), ENG_ESHAPE,
           "conv geom: kernel taller than padded input");
    is_int(eng_conv2d_geom_init(&g, (size_t)1 << 30, (size_t)1 << 30, 4, 1, 1, 1, 1, 1, 0, 0),
           ENG_EINVAL, "conv geom: absurd size");
    is_int(eng_conv2d_geom_init(&g, 2, 28, 28, 4, 3, 3, 2, 2, 1, 1), 0, "conv geom: valid");
    ok(g.OH == 14 && g.OW == 14, "conv geom: 28x28 k3 s2 p1 gives 14x14");

    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++) {
        const conv_case *c = &conv_cases[i];
        if (eng_conv2d_geom_init(&g, c->IC, c->IH, c->IW, c->OC, c->KH, c->KW, c->SH, c->SW, c->PH,
                                 c->PW)) {
            ok(false, "conv %s: geometry accepted", c->name);
            continue;
        }
        check_im2col(r, &g, c->name);
        check_conv(r, &g, c->N, i % 2 == 0, c->name);
    }
    for (int t = 0; t < 12; t++) {
        size_t IC = test_rng_range(r, 1, 5), OC = test_rng_range(r, 1, 6);
        size_t IH = test_rng_range(r, 1, 12), IW = test_rng_range(r, 1, 12);
        size_t KH = test_rng_range(r, 1, 5), KW = test_rng_range(r, 1, 5);
        size_t SH = test_rng_range(r, 1, 3), SW = test_rng_range(r, 1, 3);
        size_t PH = test_rng_range(r, 0, 3), PW = test_rng_range(r, 0, 3);
        if (eng_conv2d_geom_init(&g, IC, IH, IW, OC, KH, KW, SH, SW, PH, PW)) {
            t--; /* kernel larger than the padded input: draw again */
            continue;
        }
        char name[96];
        snprintf(name, sizeof name, "random %zux%zux%zu->%zu k%zux%zu s%zux%zu p%zux%zu", IC, IH,
                 IW, OC, KH, KW, SH, SW, PH, PW);
        check_im2col(r, &g, name);
        check_conv(r, &g, test_rng_range(r, 1, 5), t % 2 == 1, name);
    }
}

/* ---- batchnorm --------------------------------------------------------------------------- */

static void check_bn(test_rng *r, size_t N, size_t C, size_t S, float offset, bool affine,
                     const char *name)
{
    const eng_bn_dims d = {N, C, S};
    const size_t n = N * C * S;
    float *x = test_alloc(n), *dy = test_alloc(n), *y = test_alloc(n), *y_ref = test_alloc(n);
    float *dx = test_alloc(n), *dx_ref = test_alloc(n), *pre = test_alloc(n);
    float *gamma = test_alloc(C), *beta = test_alloc(C), *mean = test_alloc(C);
    float *invstd = test_alloc(C), *mean_ref = test_alloc(C), *invstd_ref = test_alloc(C);
    float *rm = test_alloc(C), *rv = test_alloc(C), *rm_ref = test_alloc(C);
    float *rv_ref = test_alloc(C), *dg = test_alloc(C), *db = test_alloc(C);
    float *dg_ref = test_alloc(C), *db_ref = test_alloc(C);
    test_fill(r, x, n, offset - 2.0f, offset + 2.0f);
    test_fill(r, dy, n, -1, 1);
    test_fill(r, pre, n, -1, 1);
    test_fill(r, gamma, C, 0.5f, 1.5f);
    test_fill(r, beta, C, -1, 1);
    test_fill(r, rm, C, -1, 1);
    test_fill(r, rv, C, 0.5f, 2);
    memcpy(rm_ref, rm, C * sizeof(float));
    memcpy(rv_ref, rv, C * sizeof(float));
    const float *gp = affine ? gamma : NULL, *bp = affine ? beta : NULL;

    int64_t nbt = 5;
    int rc = eng_batchnorm_train_forward(&d, x, gp, bp, y, mean, invstd, rm, rv, ENG_BN_MOMENTUM,
                                         ENG_BN_EPS, &nbt);
    ref_bn_train_forward(&d, x, gp, bp, ENG_BN_MOMENTUM, ENG_BN_EPS, y_ref, mean_ref, invstd_ref,
                         rm_ref, rv_ref);
    is_int(rc, 0, "bn %s: train forward returns 0", name);
    CLOSE(y, y_ref, n, TOL, "bn %s: train forward y", name);
    CLOSE(mean, mean_ref, C, TOL, "bn %s: batch mean", name);
    CLOSE(invstd, invstd_ref, C, TOL, "bn %s: batch invstd", name);
    CLOSE(rm, rm_ref, C, TOL, "bn %s: running mean", name);
    CLOSE(rv, rv_ref, C, TOL, "bn %s: running var (unbiased)", name);
    is_int(nbt, 6, "bn %s: num_batches_tracked incremented", name);

    /* dx cancels to ~0 for tiny batches: measure it against the size of dy*gamma*invstd */
    float *kdy = test_alloc(n);
    for (size_t i = 0; i < N; i++)
        for (size_t c = 0; c < C; c++)
            for (size_t s = 0; s < S; s++)
                kdy[(i * C + c) * S + s] =
                    dy[(i * C + c) * S + s] * invstd_ref[c] * (affine ? gamma[c] : 1.0f);
    ref_bn_train_backward(&d, x, dy, gp, ENG_BN_EPS, dx_ref, dg_ref, db_ref);
    eng_batchnorm_train_backward(&d, x, dy, gp, mean, invstd, dx, dg, db, false);
    double e = test_scaled_mse(dx, dx_ref, kdy, n);
    ok(e <= 1e-9, "bn %s: train backward dx (error %.2e of |dy*gamma*invstd|)", name, e);
    CLOSE(dg, dg_ref, C, TOL, "bn %s: dgamma", name);
    CLOSE(db, db_ref, C, TOL, "bn %s: dbeta", name);
    memcpy(dx, pre, n * sizeof(float));
    for (size_t c = 0; c < C; c++)
        dg[c] = db[c] = 1.0f;
    eng_batchnorm_train_backward(&d, x, dy, gp, mean, invstd, dx, dg, db, true);
    for (size_t i = 0; i < n; i++)
        dx[i] -= pre[i];
    for (size_t c = 0; c < C; c++)
        dg[c] -= 1.0f, db[c] -= 1.0f;
    e = test_scaled_mse(dx, dx_ref, kdy, n);
    ok(e <= 1e-9, "bn %s: train backward accumulates dx (error %.2e)", name, e);
    CLOSE(dg, dg_ref, C, 1e-8, "bn %s: accumulates dgamma", name);
    CLOSE(db, db_ref, C, 1e-8, "bn %s: accumulates dbeta", name);
    eng_batchnorm_train_backward(&d, x, dy, gp, mean, invstd, NULL, dg, NULL, false);
    CLOSE(dg, dg_ref, C, TOL, "bn %s: dgamma alone (dx and dbeta skipped)", name);

    /* eval mode with the updated running stats */
    eng_batchnorm_eval_forward(&d, x, gp, bp, rm, rv, ENG_BN_EPS, y);
    ref_bn_eval_forward(&d, x, gp, bp, rm, rv, ENG_BN_EPS, y_ref);
    CLOSE(y, y_ref, n, TOL, "bn %s: eval forward", name);
    for (size_t c = 0; c < C; c++) {
        double is = 1.0 / sqrt((double)rv[c] + (double)ENG_BN_EPS), sg = 0.0, sgx = 0.0;
        for (size_t i = 0; i < N; i++)
            for (size_t s = 0; s < S; s++) {
                size_t j = (i * C + c) * S + s;
                dx_ref[j] = (float)((double)dy[j] * is * (affine ? (double)gamma[c] : 1.0));
                sg += (double)dy[j];
                sgx += (double)dy[j] * ((double)x[j] - (double)rm[c]) * is;
            }
        dg_ref[c] = (float)sgx;
        db_ref[c] = (float)sg;
    }
    eng_batchnorm_eval_backward(&d, x, dy, gp, rm, rv, ENG_BN_EPS, dx, dg, db, false);
    CLOSE(dx, dx_ref, n, TOL, "bn %s: eval backward dx", name);
    CLOSE(dg, dg_ref, C, 1e-8, "bn %s: eval backward dgamma", name);
    CLOSE(db, db_ref, C, TOL, "bn %s: eval backward dbeta", name);

    /* in place: y aliases x */
    memcpy(y, x, n * sizeof(float));
    eng_batchnorm_train_forward(&d, y, gp, bp, y, mean, invstd, NULL, NULL, ENG_BN_MOMENTUM,
                                ENG_BN_EPS, NULL);
    ref_bn_train_forward(&d, x, gp, bp, ENG_BN_MOMENTUM, ENG_BN_EPS, y_ref, NULL, NULL, NULL, NULL);
    CLOSE(y, y_ref, n, TOL, "bn %s: train forward in place", name);

    free(x), free(dy), free(y), free(y_ref), free(dx), free(dx_ref), free(pre), free(gamma);
    free(beta), free(mean), free(invstd), free(mean_ref), free(invstd_ref), free(rm), free(rv);
    free(rm_ref), free(rv_ref), free(dg), free(db), free(dg_ref), free(db_ref), free(kdy);
}

static void check_bn_all(test_rng *r)
{
    check_bn(r, 4, 3, 25, 0.0f, true, "2d 4x3x5x5");
    check_bn(r, 8, 5, 1, 0.0f, true, "1d 8x5");
    check_bn(r, 2, 1, 1, 0.0f, true, "1d N=2 (smallest batch)");
    check_bn(r, 1, 2, 9, 0.0f, true, "2d N=1 3x3");
    check_bn(r, 6, 4, 7, 100.0f, true, "2d mean 100 (cancellation)");
    check_bn(r, 5, 3, 4, 0.0f, false, "2d affine=false");
    for (int t = 0; t < 4; t++) {
        size_t N = test_rng_range(r, 1, 9), C = test_rng_range(r, 1, 6);
        size_t S = test_rng_range(r, 1, 30);
        if (N * S < 2)
            S = 2;
        char name[64];
        snprintf(name, sizeof name, "random %zux%zux%zu", N, C, S);
        check_bn(r, N, C, S, test_rng_uniform(r, -3, 3), true, name);
    }
    /* one value per channel: refused, nothing written */
    eng_bn_dims d1 = {1, 2, 1};
    float x[2] = {1, 2}, y[2] = {9, 9}, m[2] = {9, 9}, is[2] = {9, 9}, rm[2] = {0, 0};
    float rv[2] = {1, 1};
    int64_t nbt = 0;
    int rc = eng_batchnorm_train_forward(&d1, x, NULL, NULL, y, m, is, rm, rv, ENG_BN_MOMENTUM,
                                         ENG_BN_EPS, &nbt);
    is_int(rc, ENG_ESHAPE, "bn: one value per channel in training gives ENG_ESHAPE");
    ok(y[0] == 9 && m[0] == 9 && rm[0] == 0 && rv[0] == 1 && nbt == 0,
       "bn: nothing written on ENG_ESHAPE");
}

/* ---- pooling ----------------------------------------------------------------------------- */

static void check_pool(test_rng *r, const eng_pool2d_geom *g, size_t N, const char *name)
{
    const size_t in = N * g->C * g->IH * g->IW, out = N * g->C * g->OH * g->OW;
    float *x = test_alloc(in), *dy = test_alloc(out), *y = test_alloc(out);
    float *y_ref = test_alloc(out), *dx = test_alloc(in), *dx_ref = test_alloc(in);
    float *pre = test_alloc(in);
    int32_t *idx = calloc(out, sizeof(int32_t));
    if (!idx)
        abort();
    test_fill_distinct(r, x, in, 0.01f);
    test_fill(r, dy, out, -1, 1);
    test_fill(r, pre, in, -1, 1);

    eng_maxpool2d_forward(g, N, x, y, idx);
    ref_maxpool2d_forward(g, N, x, y_ref);
    ok(memcmp(y, y_ref, out * sizeof(float)) == 0, "maxpool %s: forward exact", name);
    bool idx_ok = true;
    for (size_t o = 0; o < out; o++) {
        size_t pl = o / (g->OH * g->OW);
        idx_ok &= idx[o] >= 0 && (size_t)idx[o] < g->IH * g->IW &&
                  x[pl * g->IH * g->IW + (size_t)idx[o]] == y[o];
    }
    ok(idx_ok, "maxpool %s: indices point at the maxima", name);
    eng_maxpool2d_backward(g, N, dy, idx, dx, false);
    ref_maxpool2d_backward(g, N, x, dy, dx_ref);
    CLOSE(dx, dx_ref, in, TOL, "maxpool %s: backward", name);
    memcpy(dx, pre, in * sizeof(float));
    eng_maxpool2d_backward(g, N, dy, idx, dx, true);
    for (size_t i = 0; i < in; i++)
        dx[i] -= pre[i];
    CLOSE(dx, dx_ref, in, 1e-8, "maxpool %s: backward accumulates", name);

    test_fill(r, x, in, -1, 1);
    for (int cip = 0; cip < 2; cip++) {
        eng_avgpool2d_forward(g, N, cip, x, y);
        ref_avgpool2d_forward(g, N, cip, x, y_ref);
        CLOSE(y, y_ref, out, TOL, "avgpool %s count_include_pad=%d: forward", name, cip);
        eng_avgpool2d_backward(g, N, cip, dy, dx, false);
        ref_avgpool2d_backward(g, N, cip, dy, dx_ref);
        CLOSE(dx, dx_ref, in, TOL, "avgpool %s count_include_pad=%d: backward", name, cip);
    }
    memcpy(dx, pre, in * sizeof(float));
    eng_avgpool2d_backward(g, N, true, dy, dx, true);
    for (size_t i = 0; i < in; i++)
        dx[i] -= pre[i];
    CLOSE(dx, dx_ref, in, 1e-8, "avgpool %s: backward accumulates", name);
    free(x), free(dy), free(y), free(y_ref), free(dx), free(dx_ref), free(pre), free(idx);
}

typedef struct pool_case {
    const char *name;
    size_t N, C, IH, IW, KH, KW, SH, SW, PH, PW;
} pool_case;

static const pool_case pool_cases[] = {
    {"k2 s2", 2, 3, 8, 8, 2, 2, 2, 2, 0, 0},
    {"k3 s2 p1 (resnet)", 2, 2, 9, 10, 3, 3, 2, 2, 1, 1},
    {"k3 s1 p1", 1, 3, 5, 6, 3, 3, 1, 1, 1, 1},
    {"k3 s3 odd", 2, 2, 10, 7, 3, 3, 3, 3, 0, 0},
    {"k1 s2", 2, 2, 5, 5, 1, 1, 2, 2, 0, 0},
    {"k4 s2 p2", 2, 2, 7, 9, 4, 4, 2, 2, 2, 2},
    {"k2 s3 p1", 2, 1, 8, 11, 2, 2, 3, 3, 1, 1},
    {"k3x2 s(2,1) p(1,0)", 3, 2, 6, 5, 3, 2, 2, 1, 1, 0},
    {"1x1 image", 3, 2, 1, 1, 1, 1, 1, 1, 0, 0},
    {"k2 p1 on 1x1", 2, 2, 1, 1, 2, 2, 1, 1, 1, 1},
};

typedef struct ada_case {
    const char *name;
    size_t N, C, IH, IW, OH, OW;
} ada_case;

static const ada_case ada_cases[] = {
    {"7x7->1x1", 3, 4, 7, 7, 1, 1},     {"7x9->3x4", 2, 3, 7, 9, 3, 4},
    {"5x5->5x5", 2, 2, 5, 5, 5, 5},     {"3x2->5x4 (up)", 2, 2, 3, 2, 5, 4},
    {"10x10->3x3", 1, 3, 10, 10, 3, 3}, {"1x1->2x2", 2, 2, 1, 1, 2, 2},
    {"28x28->1x1", 2, 2, 28, 28, 1, 1},
};

static void check_adaptive(test_rng *r, const eng_adapool_dims *d, const char *name)
{
    const size_t C = d->C, in = d->N * C * d->IH * d->IW, out = d->N * C * d->OH * d->OW;
    const size_t OP = d->OH * d->OW, IP = d->IH * d->IW;
    float *x = test_alloc(in), *dy = test_alloc(2 * out), *y = test_alloc(2 * out);
    float *y_ref = test_alloc(2 * out), *dx = test_alloc(in), *dx_ref = test_alloc(in);
    float *tmp = test_alloc(in), *pre = test_alloc(in);
    int32_t *idx = calloc(out, sizeof(int32_t));
    if (!idx)
        abort();
    test_fill_distinct(r, x, in, 0.01f);
    test_fill(r, dy, 2 * out, -1, 1);
    test_fill(r, pre, in, -1, 1);

    eng_adaptive_avgpool2d_forward(d, x, y);
    ref_adaptive_avgpool2d_forward(d, x, y_ref);
    CLOSE(y, y_ref, out, TOL, "adaptive avg %s: forward", name);
    eng_adaptive_avgpool2d_backward(d, dy, dx, false);
    ref_adaptive_avgpool2d_backward(d, dy, dx_ref);
    CLOSE(dx, dx_ref, in, TOL, "adaptive avg %s: backward", name);
    memcpy(dx, pre, in * sizeof(float));
    eng_adaptive_avgpool2d_backward(d, dy, dx, true);
    for (size_t i = 0; i < in; i++)
        dx[i] -= pre[i];
    CLOSE(dx, dx_ref, in, 1e-6, "adaptive avg %s: backward accumulates", name);

    eng_adaptive_maxpool2d_forward(d, x, y, idx);
    ref_adaptive_maxpool2d_forward(d, x, y_ref);
    ok(memcmp(y, y_ref, out * sizeof(float)) == 0, "adaptive max %s: forward exact", name);
    eng_adaptive_maxpool2d_backward(d, dy, idx, dx, false);
    ref_adaptive_maxpool2d_backward(d, x, dy, dx_ref);
    CLOSE(dx, dx_ref, in, TOL, "adaptive max %s: backward", name);

    /* concat = [max | avg] on channels, per sample */
    eng_adaptive_concatpool2d_forward(d, x, y, idx);
    eng_adapool_dims d1 = *d;
    d1.N = 1;
    for (size_t n = 0; n < d->N; n++) {
        ref_adaptive_maxpool2d_forward(&d1, x + n * C * IP, y_ref + n * 2 * C * OP);
        ref_adaptive_avgpool2d_forward(&d1, x + n * C * IP, y_ref + (n * 2 + 1) * C * OP);
    }
    CLOSE(y, y_ref, 2 * out, TOL, "concat pool %s: forward (max then avg)", name);
    for (size_t n = 0; n < d->N; n++) {
        ref_adaptive_maxpool2d_backward(&d1, x + n * C * IP, dy + n * 2 * C * OP,
                                        dx_ref + n * C * IP);
        ref_adaptive_avgpool2d_backward(&d1, dy + (n * 2 + 1) * C * OP, tmp + n * C * IP);
    }
    for (size_t i = 0; i < in; i++)
        dx_ref[i] += tmp[i];
    eng_adaptive_concatpool2d_backward(d, dy, idx, dx, false);
    CLOSE(dx, dx_ref, in, TOL, "concat pool %s: backward", name);
    memcpy(dx, pre, in * sizeof(float));
    eng_adaptive_concatpool2d_backward(d, dy, idx, dx, true);
    for (size_t i = 0; i < in; i++)
        dx[i] -= pre[i];
    CLOSE(dx, dx_ref, in, 1e-8, "concat pool %s: backward accumulates", name);
    free(x), free(dy), free(y), free(y_ref), free(dx), free(dx_ref), free(tmp), free(pre);
    free(idx);
}

static void check_pool_all(test_rng *r)
{
    eng_pool2d_geom g;
    is_int(eng_pool2d_geom_init(&g, 1, 5, 5, 3, 3, 2, 2, 2, 1), ENG_EINVAL,
           "pool geom: padding above half the kernel");
    is_int(eng_pool2d_geom_init(&g, 1, 5, 5, 3, 3, 0, 2, 1, 1), ENG_EINVAL, "pool geom: stride 0");
    is_int(eng_pool2d_geom_init(&g, 1, 2, 2, 5, 5, 1, 1, 1, 1), ENG_ESHAPE,
           "pool geom: kernel larger than padded input");
    for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++) {
        const pool_case *c = &pool_cases[i];
        if (eng_pool2d_geom_init(&g, c->C, c->IH, c->IW, c->KH, c->KW, c->SH, c->SW, c->PH,
                                 c->PW)) {
            ok(false, "pool %s: geometry accepted", c->name);
            continue;
        }
        check_pool(r, &g, c->N, c->name);
    }
    for (int t = 0; t < 6; t++) {
        size_t KH = test_rng_range(r, 1, 4), KW = test_rng_range(r, 1, 4);
        size_t C = test_rng_range(r, 1, 3), IH = test_rng_range(r, 1, 11);
        size_t IW = test_rng_range(r, 1, 11), SH = test_rng_range(r, 1, 3);
        size_t SW = test_rng_range(r, 1, 3);
        size_t PH = test_rng_range(r, 0, KH / 2), PW = test_rng_range(r, 0, KW / 2);
        if (eng_pool2d_geom_init(&g, C, IH, IW, KH, KW, SH, SW, PH, PW)) {
            t--;
            continue;
        }
        char name[96];
        snprintf(name, sizeof name, "random %zux%zux%zu k%zux%zu s%zux%zu p%zux%zu", C, IH, IW, KH,
                 KW, SH, SW, PH, PW);
        check_pool(r, &g, test_rng_range(r, 1, 3), name);
    }
    /* a NaN in a window wins, as in PyTorch */
    eng_pool2d_geom_init(&g, 1, 2, 2, 2, 2, 2, 2, 0, 0);
    float xn[4] = {1.0f, NAN, 3.0f, 2.0f}, yn[1];
    int32_t in[1];
    eng_maxpool2d_forward(&g, 1, xn, yn, in);
    ok(isnan(yn[0]) && in[0] == 1, "maxpool: NaN propagates");

    for (size_t i = 0; i < sizeof ada_cases / sizeof ada_cases[0]; i++) {
        const ada_case *c = &ada_cases[i];
        eng_adapool_dims d = {c->N, c->C, c->IH, c->IW, c->OH, c->OW};
        check_adaptive(r, &d, c->name);
    }
    for (int t = 0; t < 4; t++) {
        eng_adapool_dims d = {test_rng_range(r, 1, 3),  test_rng_range(r, 1, 3),
                              test_rng_range(r, 1, 13), test_rng_range(r, 1, 13),
                              test_rng_range(r, 1, 6),  test_rng_range(r, 1, 6)};
        char name[64];
        snprintf(name, sizeof name, "random %zux%zu->%zux%zu", d.IH, d.IW, d.OH, d.OW);
        check_adaptive(r, &d, name);
    }
}

/* ---- bench ------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define REPEATS 5

typedef enum bench_op { B_FWD, B_WGRAD, B_IGRAD } bench_op;

static double bench_conv_op(const eng_conv2d_geom *g, size_t N, bench_op op, const float *x,
                            const float *w, float *y, float *dx, float *dw,
                            const eng_conv2d_scratch *s)
{
    double t[REPEATS];
    for (int i = 0; i < REPEATS; i++) {
        double t0 = now_s();
        if (op == B_FWD)
            eng_conv2d_forward(g, N, x, w, NULL, y, s);
        else if (op == B_WGRAD)
            eng_conv2d_backward_weight(g, N, x, y, dw, false, s);
        else
            eng_conv2d_backward_input(g, N, w, y, dx, false, s);
        t[i] = now_s() - t0;
    }
    qsort(t, REPEATS, sizeof t[0], cmp_double);
    return t[REPEATS / 2];
}

static int run_bench(void)
{
    /* M1 (cnn-small) at batch 32: its five convolutions */
    static const struct {
        const char *name;
        size_t IC, HW, OC, S;
    } layers[] = {
        {"stem 1->32 28x28", 1, 28, 32, 1},   {"32->32 28x28", 32, 28, 32, 1},
        {"32->64 s2 ->14x14", 32, 28, 64, 2}, {"64->64 14x14", 64, 14, 64, 1},
        {"64->128 s2 ->7x7", 64, 14, 128, 2},
    };
    const size_t N = 32;
    static const char *opname[] = {"fwd", "wgrad", "igrad"};
    test_rng r = {42};
    printf("# conv2d (im2col + eng_sgemm), batch %zu, median of %d\n", N, REPEATS);
    printf("# %-20s %-6s %6s %10s %8s\n", "layer", "op", "nb", "ms", "GFLOPS");
    for (size_t li = 0; li < sizeof layers / sizeof layers[0]; li++) {
        eng_conv2d_geom g;
        if (eng_conv2d_geom_init(&g, layers[li].IC, layers[li].HW, layers[li].HW, layers[li].OC, 3,
                                 3, layers[li].S, layers[li].S, 1, 1))
            return 1;
        const size_t in = N * g.IC * g.IH * g.IW, out = N * g.OC * g.OH * g.OW;
        const size_t wn = g.OC * eng_conv2d_kdim(&g);
        float *x = test_alloc(in), *w = test_alloc(wn), *y = test_alloc(out);
        float *dx = test_alloc(in), *dw = test_alloc(wn);
        test_fill(&r, x, in, -1, 1);
        test_fill(&r, w, wn, -1, 1);
        test_fill(&r, y, out, -1, 1);
        const double flops = 2.0 * (double)(g.OC * eng_conv2d_kdim(&g) * g.OH * g.OW * N);
        size_t nbs[2] = {1, 8};
        for (size_t t = 0; t < 2; t++) {
            float *col = test_alloc(eng_conv2d_col_floats(&g, nbs[t]));
            float *tmp = test_alloc(eng_conv2d_tmp_floats(&g, nbs[t]));
            eng_conv2d_scratch s = {col, tmp, nbs[t]};
            for (int op = 0; op < 3; op++) {
                double sec = bench_conv_op(&g, N, (bench_op)op, x, w, y, dx, dw, &s);
                printf("  %-20s %-6s %6zu %10.3f %8.1f\n", layers[li].name, opname[op], nbs[t],
                       sec * 1e3, flops / sec * 1e-9);
            }
            free(col), free(tmp);
        }
        free(x), free(w), free(y), free(dx), free(dw);
    }

    /* memory-bound kernels on M1's largest activation: [32, 32, 28, 28] */
    const size_t C = 32, HW = 28, n = N * C * HW * HW;
    float *x = test_alloc(n), *y = test_alloc(n), *dx = test_alloc(n);
    float *gm = test_alloc(C), *bt = test_alloc(C), *mean = test_alloc(C), *is = test_alloc(C);
    float *rm = test_alloc(C), *rv = test_alloc(C), *dg = test_alloc(C), *db = test_alloc(C);
    int32_t *idx = calloc(n, sizeof(int32_t));
    if (!idx)
        return 1;
    test_fill(&r, x, n, -1, 1);
    eng_bn_dims d = {N, C, HW * HW};
    eng_pool2d_geom pg;
    eng_pool2d_geom_init(&pg, C, HW, HW, 3, 3, 2, 2, 1, 1);
    eng_adapool_dims ad = {N, C, HW, HW, 1, 1};
    printf("# memory-bound kernels on [%zu, %zu, %zu, %zu], median of %d\n", N, C, HW, HW, REPEATS);
    for (int k = 0; k < 5; k++) {
        static const char *kname[] = {"bn train fwd", "bn train bwd", "maxpool k3s2p1 fwd",
                                      "maxpool bwd", "concat pool fwd+bwd"};
        double t[REPEATS];
        for (int i = 0; i < REPEATS; i++) {
            double t0 = now_s();
            if (k == 0)
                (void)eng_batchnorm_train_forward(&d, x, gm, bt, y, mean, is, rm, rv, 0.1f, 1e-5f,
                                                  NULL); /* M >= 2: cannot fail */
            else if (k == 1)
                eng_batchnorm_train_backward(&d, x, y, gm, mean, is, dx, dg, db, false);
            else if (k == 2)
                eng_maxpool2d_forward(&pg, N, x, y, idx);
            else if (k == 3)
                eng_maxpool2d_backward(&pg, N, y, idx, dx, false);
            else {
                eng_adaptive_concatpool2d_forward(&ad, x, y, idx);
                eng_adaptive_concatpool2d_backward(&ad, y, idx, dx, false);
            }
            t[i] = now_s() - t0;
        }
        qsort(t, REPEATS, sizeof t[0], cmp_double);
        printf("  %-22s %8.3f ms  %6.2f GB/s (input+output)\n", kname[k], t[REPEATS / 2] * 1e3,
               2.0 * (double)(n * sizeof(float)) / t[REPEATS / 2] * 1e-9);
    }
    free(x), free(y), free(dx), free(gm), free(bt), free(mean), free(is), free(rm), free(rv);
    free(dg), free(db), free(idx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return run_bench();
    if (argc > 1) {
        fprintf(stderr, "usage: %s [--bench]\n", argv[0]);
        return 2;
    }
    test_rng r = {0x7468617764ull}; /* fixed seed: the same shapes every run */
    check_conv_all(&r);
    check_bn_all(&r);
    check_pool_all(&r);
    check_im2col_k3s2p1(&r);
    return done_testing();
}
