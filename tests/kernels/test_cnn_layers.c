/*
 * test_cnn_layers.c: the CNN operator-table entries (conv2d, batchnorm1d/2d, pools,
 * flatten): setup shapes and errors, parameter names, init, and that forward/backward call
 * the kernels with the layers.h conventions (grads set only when trainable, dx only when
 * asked, frozen conv costs no weight-gradient GEMM). Prints TAP.
 */
#include <stdlib.h>
#include <string.h>

#include "im2col.h"
#include "kernels.h"
#include "layers.h"
#include "refs.h"
#include "rng.h"
#include "tap.h"

/* A layer with its own parameter/gradient storage and aux sized for N. */
typedef struct owned_layer {
    eng_layer l;
    float *store[ENG_LAYER_MAX_PARAMS], *gstore[ENG_LAYER_MAX_PARAMS];
    size_t n;
} owned_layer;

static int make(owned_layer *o, const eng_layer_ops *ops, eng_layer_cfg cfg, size_t ndim,
                const size_t *shape, size_t N, eng_stats *stats, eng_error *err)
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
    o->l.stats = stats;
    int rc = ops->setup(&o->l, err);
    if (rc)
        return rc;
    o->n = ops->n_params ? ops->n_params(&o->l) : 0;
    for (size_t i = 0; i < o->n; i++) {
        eng_param_info info;
        ops->param_info(&o->l, i, &info);
        size_t cnt = 1;
        for (size_t d = 0; d < info.ndim; d++)
            cnt *= info.shape[d];
        o->store[i] = o->l.param[i] = test_alloc(cnt);
        o->gstore[i] = test_alloc(cnt);
        o->l.grad[i] = info.is_buffer ? NULL : o->gstore[i];
        o->l.trainable[i] = !info.is_buffer;
    }
    o->l.aux = ops->aux_size ? test_alloc(ops->aux_size(&o->l, N)) : NULL;
    return 0;
}

static void destroy(owned_layer *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->store[i]), free(o->gstore[i]);
    free(o->l.aux);
}

static void test_conv(test_rng *r)
{
    const size_t N = 3, shape[3] = {2, 9, 8};
    eng_layer_cfg cfg = {
        .conv = {.IC = 2, .OC = 4, .KH = 3, .KW = 3, .stride = 2, .pad = 1, .bias = true}};
    eng_stats st = {0};
    eng_error err = {0};
    owned_layer o;
    is_int(make(&o, &eng_layer_conv2d, cfg, 3, shape, N, &st, &err), 0, "conv2d: setup");
    ok(o.l.out_ndim == 3 && o.l.out_shape[0] == 4 && o.l.out_shape[1] == 5 && o.l.out_shape[2] == 4,
       "conv2d: output [4, 5, 4]");
    eng_param_info info;
    eng_layer_conv2d.param_info(&o.l, 0, &info);
    ok(strcmp(info.suffix, "weight") == 0 && info.ndim == 4 && info.shape[1] == 2 && !info.no_wd,
       "conv2d: weight [OC, IC, KH, KW] with weight decay");
    eng_layer_conv2d.param_info(&o.l, 1, &info);
    ok(strcmp(info.suffix, "bias") == 0 && info.no_wd, "conv2d: bias without weight decay");
    eng_rng rng;
    eng_rng_seed(&rng, 1, 0);
    eng_layer_conv2d.init(&o.l, &rng);
    bool in_bound = true;
    for (size_t i = 0; i < 4 * 18; i++)
        in_bound &= fabsf(o.l.param[0][i]) <= 1.0f / sqrtf(18.0f);
    ok(in_bound && o.l.param[0][0] != o.l.param[0][1], "conv2d: init U(-1/sqrt(fan_in), ..)");

    size_t in = N * o.l.in_size, out = N * o.l.out_size;
    float *x = test_alloc(in), *y = test_alloc(out), *y_ref = test_alloc(out);
    float *dy = test_alloc(out), *dx = test_alloc(in), *dx_ref = test_alloc(in);
    float *dw_ref = test_alloc(4 * 18), *db_ref = test_alloc(4);
    test_fill(r, x, in, -1, 1);
    test_fill(r, dy, out, -1, 1);
    eng_conv2d_geom g;
    eng_conv2d_geom_init(&g, 2, 9, 8, 4, 3, 3, 2, 2, 1, 1);
    eng_conv2d_ref_forward(&g, N, x, o.l.param[0], o.l.param[1], y_ref);
    eng_conv2d_ref_backward_input(&g, N, dy, o.l.param[0], dx_ref);
    eng_conv2d_ref_backward_weight(&g, N, x, dy, dw_ref, db_ref);

    eng_fwd_args fa = {.N = N, .x = x, .y = y, .train = true};
    eng_layer_conv2d.forward(&o.l, &fa);
    CLOSE(y, y_ref, out, 1e-9, "conv2d layer: forward");
    ok(st.gemm_calls >= 1 && st.flops == 2ull * 4 * 18 * 20 * N, "conv2d layer: forward flops");

    eng_bwd_args ba = {.N = N, .x = x, .y = y, .dy = dy, .dx = dx};
    eng_layer_conv2d.backward(&o.l, &ba);
    CLOSE(o.l.grad[0], dw_ref, 4 * 18, 1e-9, "conv2d layer: weight grad set");
    CLOSE(o.l.grad[1], db_ref, 4, 1e-9, "conv2d layer: bias grad set");
    CLOSE(dx, dx_ref, in, 1e-9, "conv2d layer: dx");

    /* frozen, lowest layer: no weight GEMM, no input GEMM, grads untouched */
    o.l.trainable[0] = o.l.trainable[1] = false;
    memset(o.l.grad[0], 0, 4 * 18 * sizeof(float));
    st = (eng_stats){0};
    ba.dx = NULL;
    eng_layer_conv2d.backward(&o.l, &ba);
    ok(st.gemm_calls == 0 && o.l.grad[0][0] == 0.0f, "conv2d layer: frozen + no dx costs no GEMM");
    /* frozen but dx needed: only the input GEMMs */
    ba.dx = dx;
    eng_layer_conv2d.backward(&o.l, &ba);
    ok(st.flops == 2ull * 18 * 20 * 4 * N && o.l.grad[0][0] == 0.0f,
       "conv2d layer: frozen weight skips the weight GEMM");
    destroy(&o);

    cfg.conv.IC = 3;
    is_int(make(&o, &eng_layer_conv2d, cfg, 3, shape, N, &st, &err), ENG_ESHAPE,
           "conv2d: channel mismatch refused");
    ok(err.text[0] != '\0', "conv2d: error text set (%s)", err.text);
    cfg.conv.IC = 2;
    cfg.conv.KH = 12;
    cfg.conv.pad = 0;
    is_int(make(&o, &eng_layer_conv2d, cfg, 3, shape, N, &st, &err), ENG_ESHAPE,
           "conv2d: kernel larger than input refused");
    free(x), free(y), free(y_ref), free(dy), free(dx), free(dx_ref), free(dw_ref), free(db_ref);
}

static void test_bn(test_rng *r)
{
    const size_t N = 4, shape[3] = {3, 2, 5};
    eng_layer_cfg cfg = {.norm = {.C = 3, .eps = 1e-5f, .momentum = 0.1f}};
    eng_error err = {0};
    owned_layer o;
    is_int(make(&o, &eng_layer_batchnorm2d, cfg, 3, shape, N, NULL, &err), 0, "batchnorm2d: setup");
    static const char *names[] = {"weight", "bias", "running_mean", "running_var",
                                  "num_batches_tracked"};
    bool names_ok = o.n == 5;
    for (size_t i = 0; i < o.n && names_ok; i++) {
        eng_param_info info;
        eng_layer_batchnorm2d.param_info(&o.l, i, &info);
        names_ok = strcmp(info.suffix, names[i]) == 0 && info.no_wd && info.is_norm == (i < 2) &&
                   info.is_buffer == (i >= 2);
    }
    ok(names_ok, "batchnorm2d: PyTorch state_dict names, norm params and buffers");
    eng_layer_batchnorm2d.init(&o.l, NULL);
    ok(o.l.param[0][0] == 1 && o.l.param[1][0] == 0 && o.l.param[2][0] == 0 &&
           o.l.param[3][0] == 1 && o.l.param[4][0] == 0,
       "batchnorm2d: init 1, 0, 0, 1, 0");
    const size_t n = N * 30;
    float *x = test_alloc(n), *y = test_alloc(n), *y_ref = test_alloc(n), *dy = test_alloc(n);
    float *dx = test_alloc(n), *dx_ref = test_alloc(n), *dg = test_alloc(3), *db = test_alloc(3);
    float rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1};
    test_fill(r, x, n, -1, 2);
    test_fill(r, dy, n, -1, 1);
    eng_bn_dims d = {N, 3, 10};
    ref_bn_train_forward(&d, x, NULL, NULL, 0.1f, 1e-5f, y_ref, NULL, NULL, rm, rv);
    ref_bn_train_backward(&d, x, dy, NULL, 1e-5f, dx_ref, dg, db);
    eng_fwd_args fa = {.N = N, .x = x, .y = y, .train = true};
    eng_layer_batchnorm2d.forward(&o.l, &fa);
    CLOSE(y, y_ref, n, 1e-9, "batchnorm2d layer: train forward");
    CLOSE(o.l.param[3], rv, 3, 1e-9, "batchnorm2d layer: running var updated");
    ok(o.l.param[4][0] == 1.0f, "batchnorm2d layer: num_batches_tracked 1");
    eng_bwd_args ba = {.N = N, .x = x, .y = y, .dy = dy, .dx = dx};
    o.l.trainable[1] = false;
    o.l.grad[1][0] = 42.0f;
    eng_layer_batchnorm2d.backward(&o.l, &ba);
    CLOSE(dx, dx_ref, n, 1e-8, "batchnorm2d layer: dx");
    CLOSE(o.l.grad[0], dg, 3, 1e-8, "batchnorm2d layer: dgamma");
    ok(o.l.grad[1][0] == 42.0f, "batchnorm2d layer: untrainable beta grad untouched");
    fa.train = false;
    eng_layer_batchnorm2d.forward(&o.l, &fa);
    ref_bn_eval_forward(&d, x, NULL, NULL, rm, rv, 1e-5f, y_ref);
    CLOSE(y, y_ref, n, 1e-9, "batchnorm2d layer: eval forward uses running stats");
    ok(o.l.param[4][0] == 1.0f, "batchnorm2d layer: eval leaves num_batches_tracked");
    destroy(&o);

    /* batchnorm1d with a batch of one in training: running stats, no crash */
    const size_t s1[1] = {3};
    is_int(make(&o, &eng_layer_batchnorm1d, cfg, 1, s1, 1, NULL, &err), 0, "batchnorm1d: setup");
    eng_layer_batchnorm1d.init(&o.l, NULL);
    float x1[3] = {1, 2, 3}, y1[3], dy1[3] = {1, 1, 1}, dx1[3];
    fa = (eng_fwd_args){.N = 1, .x = x1, .y = y1, .train = true};
    eng_layer_batchnorm1d.forward(&o.l, &fa);
    ok(fabsf(y1[1] - 2.0f / sqrtf(1.0f + 1e-5f)) < 1e-6f && o.l.param[4][0] == 0.0f,
       "batchnorm1d: a batch of one falls back to running stats");
    ba = (eng_bwd_args){.N = 1, .x = x1, .y = y1, .dy = dy1, .dx = dx1};
    eng_layer_batchnorm1d.backward(&o.l, &ba);
    ok(fabsf(dx1[0] - 1.0f / sqrtf(1.0f + 1e-5f)) < 1e-6f, "batchnorm1d: matching backward");
    destroy(&o);
    is_int(make(&o, &eng_layer_batchnorm2d, cfg, 1, s1, 1, NULL, &err), ENG_ESHAPE,
           "batchnorm2d: 1-d input refused");
    cfg.norm.eps = 0;
    is_int(make(&o, &eng_layer_batchnorm1d, cfg, 1, s1, 1, NULL, &err), ENG_EINVAL,
           "batchnorm1d: eps 0 refused");
    free(x), free(y), free(y_ref), free(dy), free(dx), free(dx_ref), free(dg), free(db);
}

static void test_pools(test_rng *r)
{
    const size_t N = 2, shape[3] = {3, 7, 6};
    eng_error err = {0};
    owned_layer o;
    eng_layer_cfg cfg = {.pool = {.KH = 3, .KW = 3, .stride = 2, .pad = 1}};
    const size_t in = N * 3 * 7 * 6;
    float *x = test_alloc(in), *y = test_alloc(in), *dx = test_alloc(in), *dy = test_alloc(in);
    float *want = test_alloc(in);
    test_fill_distinct(r, x, in, 0.01f);
    test_fill(r, dy, in, -1, 1);

    is_int(make(&o, &eng_layer_maxpool2d, cfg, 3, shape, N, NULL, &err), 0, "maxpool2d: setup");
    ok(o.l.out_shape[0] == 3 && o.l.out_shape[1] == 4 && o.l.out_shape[2] == 3,
       "maxpool2d: output [3, 4, 3]");
    eng_fwd_args fa = {.N = N, .x = x, .y = y, .train = true};
    eng_bwd_args ba = {.N = N, .x = x, .y = y, .dy = dy, .dx = dx};
    eng_layer_maxpool2d.forward(&o.l, &fa);
    eng_pool2d_geom g;
    eng_pool2d_geom_init(&g, 3, 7, 6, 3, 3, 2, 2, 1, 1);
    ref_maxpool2d_forward(&g, N, x, want);
    CLOSE(y, want, N * o.l.out_size, 1e-12, "maxpool2d layer: forward");
    eng_layer_maxpool2d.backward(&o.l, &ba);
    ref_maxpool2d_backward(&g, N, x, dy, want);
    CLOSE(dx, want, in, 1e-12, "maxpool2d layer: backward");
    destroy(&o);

    is_int(make(&o, &eng_layer_avgpool2d, cfg, 3, shape, N, NULL, &err), 0, "avgpool2d: setup");
    eng_layer_avgpool2d.forward(&o.l, &fa);
    ref_avgpool2d_forward(&g, N, true, x, want);
    CLOSE(y, want, N * o.l.out_size, 1e-9, "avgpool2d layer: forward (count_include_pad)");
    destroy(&o);
    cfg.pool.pad = 2;
    is_int(make(&o, &eng_layer_maxpool2d, cfg, 3, shape, N, NULL, &err), ENG_EINVAL,
           "maxpool2d: pad above half the kernel refused");

    cfg = (eng_layer_cfg){.pool = {.KH = 0, .KW = 0}};
    is_int(make(&o, &eng_layer_adaptive_concatpool2d, cfg, 3, shape, N, NULL, &err), 0,
           "concat pool: setup");
    ok(o.l.out_ndim == 3 && o.l.out_shape[0] == 6 && o.l.out_size == 6,
       "concat pool: output [2C, 1, 1] by default");
    eng_layer_adaptive_concatpool2d.forward(&o.l, &fa);
    eng_adapool_dims ad = {N, 3, 7, 6, 1, 1};
    for (size_t i = 0; i < N; i++) {
        ad.N = 1;
        ref_adaptive_maxpool2d_forward(&ad, x + i * 126, want + i * 6);
        ref_adaptive_avgpool2d_forward(&ad, x + i * 126, want + i * 6 + 3);
    }
    CLOSE(y, want, N * 6, 1e-9, "concat pool layer: forward [max | avg]");
    destroy(&o);

    cfg.pool.KH = 2;
    cfg.pool.KW = 3;
    is_int(make(&o, &eng_layer_adaptive_avgpool2d, cfg, 3, shape, N, NULL, &err), 0,
           "adaptive avg: setup");
    ok(o.l.out_shape[1] == 2 && o.l.out_shape[2] == 3, "adaptive avg: output size from cfg");
    eng_layer_adaptive_avgpool2d.forward(&o.l, &fa);
    ad = (eng_adapool_dims){N, 3, 7, 6, 2, 3};
    ref_adaptive_avgpool2d_forward(&ad, x, want);
    CLOSE(y, want, N * o.l.out_size, 1e-9, "adaptive avg layer: forward");
    destroy(&o);

    is_int(make(&o, &eng_layer_flatten, cfg, 3, shape, N, NULL, &err), 0, "flatten: setup");
    ok(o.l.out_ndim == 1 && o.l.out_size == 126, "flatten: [C*H*W]");
    eng_layer_flatten.forward(&o.l, &fa);
    ok(memcmp(y, x, in * sizeof(float)) == 0, "flatten: forward copies");
    eng_layer_flatten.backward(&o.l, &ba);
    ok(memcmp(dx, dy, in * sizeof(float)) == 0, "flatten: backward copies");
    destroy(&o);
    free(x), free(y), free(dx), free(dy), free(want);
}

int main(void)
{
    test_rng r = {0x6c61796572ull};
    test_conv(&r);
    test_bn(&r);
    test_pools(&r);
    return done_testing();
}
