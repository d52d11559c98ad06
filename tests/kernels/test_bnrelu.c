/*
 * test_bnrelu.c: BatchNorm + ReLU run as one step (eng_bn_relu_forward/backward, layers.h)
 * against the unfused reference, the batchnorm and relu layers' own ops run one after the
 * other (with the residual add and the ReLU mask written out by hand). Covers training and
 * eval mode, BatchNorm 2d and 1d, frozen affine parameters with and without an input
 * gradient, the residual input and the stored masked gradient of the BasicBlock, channel
 * counts that do not divide over 3 threads, planes that are not a multiple of the reduction
 * lanes, and sizes on both sides of the threshold where the work is split. Then whole models
 * (cnn-small, resnet18): training steps in the three training modes and eval forwards with
 * the pairs fused must give the same weights, statistics and logits as with every layer's
 * `unfused` flag set (which also keeps a convolution from running the pair in its output
 * pass, eng_bn_relu_epilogue, in eval mode; that is checked on its own first, on each of the
 * convolution's paths). The fused arithmetic is the unfused one, so the tolerances are tight.
 * Prints TAP.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "kernels.h"
#include "layers.h"
#include "model.h"
#include "par.h"
#include "refs.h"
#include "tap.h"
#include "train.h"

/* A layer with parameters, gradients and aux of its own, sized for N. */
typedef struct lay {
    eng_layer l;
    size_t n, cnt[ENG_LAYER_MAX_PARAMS];
} lay;

static void make(lay *o, const eng_layer_ops *ops, eng_layer_cfg cfg, size_t ndim,
                 const size_t *shape, size_t N)
{
    memset(o, 0, sizeof(*o));
    o->l.ops = ops;
    o->l.cfg = cfg;
    strcpy(o->l.name, "t");
    o->l.in_ndim = ndim;
    o->l.in_size = 1;
    for (size_t i = 0; i < ndim; i++) {
        o->l.in_shape[i] = shape[i];
        o->l.in_size *= shape[i];
    }
    eng_error err;
    if (ops->setup(&o->l, &err) != 0) {
        diag("setup failed: %s", err.text);
        abort();
    }
    o->n = ops->n_params ? ops->n_params(&o->l) : 0;
    for (size_t i = 0; i < o->n; i++) {
        eng_param_info info;
        ops->param_info(&o->l, i, &info);
        o->cnt[i] = 1;
        for (size_t d = 0; d < info.ndim; d++)
            o->cnt[i] *= info.shape[d];
        o->l.param[i] = test_alloc(o->cnt[i]);
        o->l.grad[i] = info.is_buffer ? NULL : test_alloc(o->cnt[i]);
        o->l.trainable[i] = !info.is_buffer;
    }
    o->l.aux = ops->aux_size ? test_alloc(ops->aux_size(&o->l, N)) : NULL;
}

/* Same parameters, trainable flags and aux contents as `src`. */
static void copy_state(lay *dst, const lay *src, size_t N)
{
    for (size_t i = 0; i < src->n; i++) {
        memcpy(dst->l.param[i], src->l.param[i], src->cnt[i] * sizeof(float));
        dst->l.trainable[i] = src->l.trainable[i];
    }
    if (src->l.aux)
        memcpy(dst->l.aux, src->l.aux, src->l.ops->aux_size(&src->l, N) * sizeof(float));
}

static void destroy(lay *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->l.param[i]);
        free(o->l.grad[i]);
    }
    free(o->l.aux);
}

typedef struct bn_case {
    size_t N, C, H, W; /* W = 0: batchnorm1d over [C] (H ignored) */
    bool train;        /* forward mode */
    bool affine_trains, want_dx, residual, want_g;
} bn_case;

static bool same(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* The fused pair against the two layers' ops on the same inputs. */
static void check_case(test_rng *r, const bn_case *k)
{
    const bool is2d = k->W != 0;
    const size_t shape[3] = {k->C, k->H, k->W}, N = k->N, C = k->C;
    eng_layer_cfg cfg = {.norm = {.C = C, .eps = ENG_BN_EPS, .momentum = ENG_BN_MOMENTUM}};
    const eng_layer_ops *ops = is2d ? &eng_layer_batchnorm2d : &eng_layer_batchnorm1d;
    lay ref, fu, act;
    make(&ref, ops, cfg, is2d ? 3 : 1, shape, N);
    make(&fu, ops, cfg, is2d ? 3 : 1, shape, N);
    make(&act, &eng_layer_relu, (eng_layer_cfg){0}, is2d ? 3 : 1, shape, N);
    for (size_t i = 0; i < ref.n; i++)
        test_fill(r, ref.l.param[i], ref.cnt[i], 0.5f, 1.5f); /* positive: valid running_var */
    ref.l.param[1][0] = -3.0f; /* a channel mostly cut off by the ReLU */
    ref.l.trainable[0] = ref.l.trainable[1] = k->affine_trains;
    copy_state(&fu, &ref, N);
    ok(eng_bn_relu_pair(&fu.l, &act.l) && !eng_bn_relu_pair(&act.l, &fu.l),
       "the pair is recognised, in that order only");

    const size_t n = N * ref.l.in_size;
    float *x = test_alloc(n), *res = test_alloc(n), *dy = test_alloc(n);
    float *z = test_alloc(n), *y_ref = test_alloc(n), *g_ref = test_alloc(n);
    float *dx_ref = test_alloc(n), *y = test_alloc(n), *g = test_alloc(n), *dx = test_alloc(n);
    test_fill(r, x, n, -2, 3);
    test_fill(r, res, n, -1, 1);
    test_fill(r, dy, n, -1, 1);

    /* reference: bn, (+ res), relu; backward: mask, bn */
    eng_fwd_args fa = {.N = N, .x = x, .y = z, .train = k->train};
    ref.l.ops->forward(&ref.l, &fa);
    if (k->residual)
        for (size_t i = 0; i < n; i++)
            z[i] += res[i];
    fa = (eng_fwd_args){.N = N, .x = z, .y = y_ref, .train = k->train};
    act.l.ops->forward(&act.l, &fa);
    eng_bwd_args ba = {.N = N, .x = z, .y = y_ref, .dy = dy, .dx = g_ref};
    act.l.ops->backward(&act.l, &ba);
    ba = (eng_bwd_args){.N = N, .x = x, .y = z, .dy = g_ref, .dx = k->want_dx ? dx_ref : NULL};
    ref.l.ops->backward(&ref.l, &ba);

    /* fused in place (no residual): on a copy of x, with its own copy of the state */
    bool inplace_ok = true;
    if (!k->residual) {
        lay ip;
        make(&ip, ops, cfg, is2d ? 3 : 1, shape, N);
        copy_state(&ip, &fu, N);
        memcpy(g, x, n * sizeof(float));
        fa = (eng_fwd_args){.N = N, .x = g, .y = g, .train = k->train};
        eng_bn_relu_forward(&ip.l, &fa, NULL);
        inplace_ok = same(g, y_ref, n) && same(ip.l.aux, ref.l.aux, 2 * C + 1);
        destroy(&ip);
    }

    /* fused */
    fa = (eng_fwd_args){.N = N, .x = x, .y = y, .train = k->train};
    eng_bn_relu_forward(&fu.l, &fa, k->residual ? res : NULL);
    /* the mask from the stored output where the block needs it, else recomputed from x */
    const bool from_y = k->residual || k->want_g;
    ba = (eng_bwd_args){
        .N = N, .x = x, .y = from_y ? y : NULL, .dy = dy, .dx = k->want_dx ? dx : NULL};
    eng_bn_relu_backward(&fu.l, &ba, k->want_g ? g : NULL);

    char what[160];
    snprintf(what, sizeof(what), "%s N=%zu C=%zu S=%zu %s%s%s%s%s%s", is2d ? "bn2d" : "bn1d", N, C,
             is2d ? k->H * k->W : (size_t)1, k->train ? "train" : "eval",
             k->affine_trains ? " affine-trains" : " affine-frozen", k->want_dx ? " dx" : "",
             k->residual ? " +res" : "", k->want_g ? " g" : "",
             from_y ? " mask-from-y" : " mask-from-x");
    double e;
    ok(test_close(y, y_ref, n, 1e-14, &e), "%s: forward (nmse %.2g, %s)", what, e,
       same(y, y_ref, n) ? "bit-exact" : "not bit-exact");
    if (!k->residual)
        ok(inplace_ok, "%s: forward in place is exact", what);
    bool state = true;
    for (size_t i = 0; i < ref.n; i++)
        state &= same(fu.l.param[i], ref.l.param[i], ref.cnt[i]);
    ok(state && same(fu.l.aux, ref.l.aux, 2 * C + 1),
       "%s: running statistics, batch count, saved mean/invstd and mode", what);
    if (k->want_dx)
        ok(test_close(dx, dx_ref, n, 1e-12, &e), "%s: input gradient (nmse %.2g, %s)", what, e,
           same(dx, dx_ref, n) ? "bit-exact" : "not bit-exact");
    if (k->affine_trains)
        ok(test_close(fu.l.grad[0], ref.l.grad[0], C, 1e-12, &e) &&
               test_close(fu.l.grad[1], ref.l.grad[1], C, 1e-12, &e),
           "%s: gamma and beta gradients", what);
    else
        ok(fu.l.grad[0][0] == 0.0f && fu.l.grad[1][C - 1] == 0.0f,
           "%s: frozen gamma and beta get no gradient", what);
    if (k->want_g)
        ok(same(g, g_ref, n), "%s: the stored masked gradient is exact", what);

    free(x), free(res), free(dy), free(z), free(y_ref), free(g_ref), free(dx_ref);
    free(y), free(g), free(dx);
    destroy(&ref);
    destroy(&fu);
    destroy(&act);
}

static void test_kernels(void)
{
    test_rng r = {0xb17e5eedull};
    static const bn_case cases[] = {
        /* above the split threshold: 7 channels over 3 threads; S = 1024 */
        {5, 7, 32, 32, true, true, true, false, false},
        {5, 7, 32, 32, false, true, true, false, false},
        /* fewer channels than threads; S = 49 (lane tail) */
        {40, 2, 23, 31, true, true, true, true, true},
        /* frozen affine with an input gradient (train_bn false, lower layers training) */
        {6, 5, 7, 7, true, false, true, false, false},
        /* lowest trainable layer: no input gradient */
        {6, 5, 7, 7, true, true, false, false, false},
        /* the block's bn2: residual and stored g, train and eval, with and without dx */
        {4, 9, 11, 13, true, true, true, true, true},
        {4, 9, 11, 13, false, true, true, true, true},
        {4, 9, 11, 13, true, false, false, true, true},
        {4, 9, 11, 13, false, false, true, true, false},
        /* below the threshold: one part */
        {3, 2, 4, 4, true, true, true, false, false},
        /* batchnorm1d: S = 1 */
        {37, 5, 0, 0, true, true, true, false, false},
        {37, 5, 0, 0, false, true, true, false, true},
        /* a batch of one into batchnorm1d: forward falls back to the running statistics */
        {1, 3, 0, 0, true, true, true, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&r, &cases[i]);
}

/* Statistics of data with |mean| >> std (the cancellation case): the long-plane path and the
 * short-plane path against the double-precision reference. */
static void test_offset_stats(void)
{
    test_rng r = {0x0ff5e7ull};
    for (size_t S = 4; S <= 400; S *= 10) {
        const size_t N = 6, C = 2, n = N * C * S;
        const size_t shape[3] = {C, S, 1};
        eng_layer_cfg cfg = {.norm = {.C = C, .eps = ENG_BN_EPS, .momentum = ENG_BN_MOMENTUM}};
        lay o;
        make(&o, &eng_layer_batchnorm2d, cfg, 3, shape, N);
        for (size_t c = 0; c < C; c++) {
            o.l.param[0][c] = o.l.param[3][c] = 1.0f;
            o.l.param[1][c] = o.l.param[2][c] = 0.0f;
        }
        float *x = test_alloc(n), *y = test_alloc(n), *yr = test_alloc(n);
        float mean[2], invstd[2], rm[2] = {0, 0}, rv[2] = {1, 1};
        for (size_t i = 0; i < n; i++) /* std about 0.03 around 1000 (channel 0), -200 (1) */
            x[i] = ((i / S) % C ? -200.0f : 1000.0f) + test_rng_uniform(&r, -0.05f, 0.05f);
        eng_bn_dims d = {N, C, S};
        ref_bn_train_forward(&d, x, o.l.param[0], o.l.param[1], ENG_BN_MOMENTUM, ENG_BN_EPS, yr,
                             mean, invstd, rm, rv);
        eng_fwd_args fa = {.N = N, .x = x, .y = y, .train = true};
        eng_bn_relu_forward(&o.l, &fa, NULL);
        double worst = 0.0;
        for (size_t c = 0; c < C; c++) {
            worst = fmax(worst, fabs((double)o.l.aux[C + c] / (double)invstd[c] - 1.0));
            worst = fmax(worst, fabs((double)o.l.param[3][c] / (double)rv[c] - 1.0));
        }
        ok(worst < 1e-3,
           "S=%zu: invstd and running_var of mean 1000 / std 0.03 data (rel err %.2g)", S, worst);
        free(x), free(y), free(yr);
        destroy(&o);
    }
}

/* ---- conv2d with the BatchNorm + ReLU epilogue ------------------------------------------- */

/* A conv2d forward with an epilogue (running statistics, eng_bn_relu_epilogue) against the
 * conv's plain output followed by the pair's forward, on each of the conv's paths: im2col
 * with one image per GEMM (the stem's 28x28) and with several (the stride-2 6x6), Winograd
 * F(4x4) and F(2x2), the per-tap kernel of small maps, with and without a bias, frozen
 * (Winograd weight cache) and trainable. Bit for bit: the same expression per element. */
static void check_conv_epilogue(test_rng *r, size_t IC, size_t OC, size_t H, size_t S, bool bias,
                                bool frozen)
{
    const size_t N = 5;
    const size_t ishape[3] = {IC, H, H};
    lay cv;
    make(&cv, &eng_layer_conv2d,
         (eng_layer_cfg){
             .conv = {.IC = IC, .OC = OC, .KH = 3, .KW = 3, .stride = S, .pad = 1, .bias = bias}},
         3, ishape, N);
    cv.l.trainable[0] = !frozen;
    const size_t oshape[3] = {OC, cv.l.out_shape[1], cv.l.out_shape[2]};
    lay bn;
    make(&bn, &eng_layer_batchnorm2d,
         (eng_layer_cfg){.norm = {.C = OC, .eps = 1e-5f, .momentum = 0.1f}}, 3, oshape, N);
    test_fill(r, cv.l.param[0], cv.cnt[0], -0.5f, 0.5f);
    if (bias)
        test_fill(r, cv.l.param[1], cv.cnt[1], -1, 1);
    test_fill(r, bn.l.param[0], OC, 0.5f, 1.5f);
    test_fill(r, bn.l.param[1], OC, -0.5f, 0.5f);
    test_fill(r, bn.l.param[2], OC, -0.3f, 0.3f);
    test_fill(r, bn.l.param[3], OC, 0.2f, 2.0f);
    const size_t in = N * cv.l.in_size, out = N * cv.l.out_size;
    float *x = test_alloc(in), *z = test_alloc(out), *y_ref = test_alloc(out);
    float *y = test_alloc(out), *buf = test_alloc(eng_bn_relu_epilogue_floats(&bn.l));
    test_fill(r, x, in, -1, 1);
    eng_fwd_args fa = {.N = N, .x = x, .y = z, .train = false};
    cv.l.ops->forward(&cv.l, &fa);
    fa = (eng_fwd_args){.N = N, .x = z, .y = y_ref, .train = false};
    eng_bn_relu_forward(&bn.l, &fa, NULL);
    eng_epilogue epi;
    const bool whole = eng_bn_relu_epilogue(&bn.l, false, &epi, buf);
    test_fill(r, y, out, -9, 9);
    for (int k = 0; k < 2; k++) { /* twice: the second call on a frozen weight uses the cache */
        fa = (eng_fwd_args){.N = N, .x = x, .y = y, .train = false, .epi = &epi};
        cv.l.ops->forward(&cv.l, &fa);
    }
    ok(whole && same(y, y_ref, out),
       "conv %zu->%zu %zux%zu s%zu bias %d frozen %d + BN + ReLU epilogue: bit-exact", IC, OC, H, H,
       S, bias, frozen);
    ok(!eng_bn_relu_epilogue(&bn.l, true, &epi, buf),
       "training mode: no epilogue (batch statistics; a backward follows)");
    free(x), free(z), free(y_ref), free(y), free(buf);
    destroy(&cv);
    destroy(&bn);
}

static void test_conv_epilogue(void)
{
    test_rng r = {0xe9170c0eull};
    for (int bias = 0; bias < 2; bias++) {
        check_conv_epilogue(&r, 1, 8, 28, 1, bias, false);   /* im2col, one image per GEMM */
        check_conv_epilogue(&r, 8, 16, 12, 2, bias, false);  /* im2col, images side by side */
        check_conv_epilogue(&r, 16, 32, 28, 2, bias, bias);  /* M1's stride-2 geometry */
        check_conv_epilogue(&r, 16, 12, 12, 1, bias, bias);  /* Winograd F(4x4) */
        check_conv_epilogue(&r, 16, 12, 17, 1, bias, !bias); /* F(4x4): rows of 16 + a tail */
        check_conv_epilogue(&r, 12, 16, 6, 1, bias, !bias);  /* Winograd F(2x2), even */
        check_conv_epilogue(&r, 12, 16, 7, 1, bias, bias);   /* F(2x2), odd */
        check_conv_epilogue(&r, 8, 8, 4, 1, bias, false);    /* per-tap kernel */
    }
}

/* ---- whole models ------------------------------------------------------------------------ */

typedef struct run {
    eng_dataset *d;
    eng_model *m;
    eng_trainer t;
} run;

static int run_open(run *u, const char *arch, size_t Cin, size_t HW, bool unfused, bool train_bn,
                    int32_t freeze)
{
    memset(u, 0, sizeof(*u));
    eng_data_spec ds;
    eng_data_spec_defaults(&ds);
    ds.n_train = 16;
    ds.n_valid = 8;
    ds.features = (uint32_t)(Cin * HW * HW);
    ds.classes = 3;
    ds.noise = 1.0f;
    if (eng_dataset_load(&ds, &u->d, NULL))
        return -1;
    u->d->in_ndim = 3; /* the synthetic features as images */
    u->d->in_shape[0] = Cin;
    u->d->in_shape[1] = u->d->in_shape[2] = HW;
    eng_model_spec ms;
    eng_model_spec_defaults(&ms);
    snprintf(ms.arch, sizeof(ms.arch), "%s", arch);
    eng_rng rng;
    eng_rng_seed(&rng, 7, 7);
    if (eng_model_create(&ms, 3, u->d->in_shape, 3, train_bn, &rng, &u->m, NULL))
        return -1;
    for (size_t i = 0; i < u->m->n_layers; i++)
        u->m->layers[i].unfused = unfused;
    eng_model_freeze_to(u->m, freeze);
    eng_opt_spec os;
    eng_opt_spec_defaults(&os);
    return eng_trainer_init(&u->t, u->m, u->d, &os, 4, 3, NULL);
}

static void run_close(run *u)
{
    if (u->m)
        eng_trainer_fini(&u->t);
    eng_model_destroy(u->m);
    eng_dataset_destroy(u->d);
}

/* Largest |a - b| relative to max(1, |b|). */
static double rel_err(const float *a, const float *b, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / fmax(1.0, fabs((double)b[i]));
        worst = d > worst || isnan(d) ? d : worst;
    }
    return worst;
}

static void check_model(const char *arch, size_t Cin, size_t HW, const char *mode)
{
    const bool train_bn = strcmp(mode, "frozen_nograd") != 0;
    const int32_t freeze = strcmp(mode, "train") == 0 ? 0 : -1;
    run fu, un;
    int rc = run_open(&fu, arch, Cin, HW, false, train_bn, freeze);
    rc |= run_open(&un, arch, Cin, HW, true, train_bn, freeze);
    ok(rc == 0, "%s %s: fused and unfused models and trainers", arch, mode);
    if (rc) {
        run_close(&fu);
        run_close(&un);
        return;
    }
    const uint32_t idx[2][4] = {{0, 5, 9, 14}, {3, 2, 11, 7}};
    float loss_f = 0.0f, loss_u = 0.0f;
    for (int s = 0; s < 2; s++) {
        loss_f = eng_trainer_step(&fu.t, idx[s], 4);
        loss_u = eng_trainer_step(&un.t, idx[s], 4);
    }
    const size_t n = fu.m->n_floats;
    double ew = rel_err(fu.m->w, un.m->w, n), eg = rel_err(fu.m->g, un.m->g, n);
    ok(loss_f == loss_u && ew <= 1e-6 && eg <= 1e-6,
       "%s %s: two steps give the same loss, weights, statistics and gradients (%s; err %.2g, "
       "%.2g)",
       arch, mode, same(fu.m->w, un.m->w, n) && same(fu.m->g, un.m->g, n) ? "bit-exact" : "close",
       ew, eg);
    const size_t C = fu.m->n_classes;
    float lf[4 * 3], lu[4 * 3];
    memcpy(lf, eng_trainer_forward(&fu.t, fu.d->x_valid, 4, false), sizeof(lf));
    memcpy(lu, eng_trainer_forward(&un.t, un.d->x_valid, 4, false), sizeof(lu));
    ok(C == 3 && rel_err(lf, lu, 4 * C) <= 1e-6, "%s %s: eval logits agree (err %.2g)", arch, mode,
       rel_err(lf, lu, 4 * C));
    run_close(&fu);
    run_close(&un);
}

int main(void)
{
    eng_par_set_threads(3);
    test_kernels();
    test_offset_stats();
    test_conv_epilogue();
    static const char *const modes[] = {"train", "frozen_bn", "frozen_nograd"};
    for (int i = 0; i < 3; i++) {
        check_model("cnn-small", 1, 12, modes[i]);
        if (i < 2) /* resnet18's frozen_nograd forward is cnn-small's path; 11M parameters */
            check_model("resnet18", 3, 16, modes[i]);
    }
    return done_testing();
}
