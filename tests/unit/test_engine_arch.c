/* test_engine_arch: the vision architectures and what they share with the engine:
 * resnet18/34 and cnn-small parameter counts, state_dict names, layer groups and heads;
 * finite-difference gradients of the residual BasicBlock (with and without downsample,
 * and with frozen children); freezing that skips work (GEMM and FLOP counters of a
 * cnn-small step, frozen vs unfrozen); the trainer's per-layer profile (eng_trainer.layer_s:
 * the slots that ran, not the others, and the same weights as without it); strict and body_only
 * weight loading with I64 num_batches_tracked; the summary text and totals; eng_net prediction. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch.h"
#include "dataset.h"
#include "kernels.h"
#include "model.h"
#include "par.h"
#include "safetensors.h"
#include "tap.h"
#include "train.h"

static eng_rng rng;

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * eng_rng_normal(&rng);
}

static eng_model *build(const char *arch, eng_head_kind hk, size_t C, size_t H, size_t W,
                        size_t classes, bool train_bn)
{
    eng_model_spec s;
    eng_model_spec_defaults(&s);
    snprintf(s.arch, sizeof(s.arch), "%s", arch);
    s.head.kind = hk;
    size_t shape[3] = {C, H, W};
    eng_model *m = NULL;
    eng_error err = {0};
    eng_rng r;
    eng_rng_seed(&r, 1, 2);
    int rc = eng_model_create(&s, 3, shape, classes, train_bn, &r, &m, &err);
    if (rc)
        diag("build %s: %s", arch, err.text);
    return m;
}

static uint64_t count(const eng_model *m, int group)
{
    uint64_t n = 0;
    for (size_t i = 0; i < m->n_params; i++)
        if (!m->params[i].info.is_buffer && (group < 0 || m->params[i].group == (unsigned)group))
            n += m->params[i].count;
    return n;
}

static bool has(const eng_model *m, const char *name, size_t ndim, size_t d0)
{
    const eng_param *p = eng_model_find(m, name);
    return p && p->info.ndim == ndim && (ndim == 0 || p->info.shape[0] == d0);
}

static void test_counts(void)
{
    eng_model *m = build("resnet18", ENG_HEAD_TORCHVISION, 3, 224, 224, 1000, true);
    ok(m != NULL, "resnet18 (torchvision head) builds for 3x224x224");
    if (!m)
        return;
    is_int((long long)count(m, -1), 11689512LL, "resnet18 has 11,689,512 parameters");
    is_int((long long)(count(m, 0) + count(m, 1)), 11176512LL, "resnet18 body: 11,176,512");
    is_int((long long)m->n_params, 122LL, "resnet18 state_dict has 122 tensors");
    is_int((long long)m->n_groups, 3LL, "resnet: 3 layer groups");
    ok(has(m, "conv1.weight", 4, 64) && has(m, "bn1.running_var", 1, 64) &&
           has(m, "layer1.0.conv1.weight", 4, 64) &&
           has(m, "layer2.0.downsample.0.weight", 4, 128) &&
           has(m, "layer2.0.downsample.1.num_batches_tracked", 0, 0) &&
           has(m, "layer4.1.bn2.bias", 1, 512) && has(m, "fc.weight", 2, 1000) &&
           has(m, "fc.bias", 1, 1000) && !eng_model_find(m, "layer1.0.downsample.0.weight"),
       "resnet18 names are torchvision's");
    ok(eng_model_find(m, "layer2.1.conv1.weight")->group == 0 &&
           eng_model_find(m, "layer3.0.conv1.weight")->group == 1 &&
           eng_model_find(m, "fc.weight")->group == 2,
       "groups follow _resnet_split: stem..layer2 | layer3, layer4 | head");
    ok(strcmp(m->params[0].name, "conv1.weight") == 0 &&
           strcmp(m->params[m->n_params - 1].name, "fc.bias") == 0 &&
           strcmp(m->params[6].name, "layer1.0.conv1.weight") == 0 &&
           strcmp(m->params[11].name, "layer1.0.bn1.num_batches_tracked") == 0,
       "tensors are in state_dict order");
    is_int((long long)m->layers[m->n_layers - 1].out_size, 1000LL, "logits");
    eng_model_destroy(m);

    m = build("resnet34", ENG_HEAD_TORCHVISION, 3, 64, 64, 1000, true);
    ok(m && count(m, -1) == 21797672ull && count(m, 0) + count(m, 1) == 21284672ull &&
           m->n_params == 218,
       "resnet34: 21,797,672 parameters, body 21,284,672, 218 tensors");
    eng_model_destroy(m);

    m = build("resnet34", ENG_HEAD_DEFAULT, 1, 32, 32, 10, true);
    ok(m && count(m, 2) == 527360ull + 512ull * 10 && has(m, "head.2.bias", 1, 1024) &&
           has(m, "head.4.weight", 2, 512) && has(m, "head.8.weight", 2, 10) &&
           !eng_model_find(m, "head.8.bias") && has(m, "conv1.weight", 4, 64) &&
           eng_model_find(m, "conv1.weight")->info.shape[1] == 1,
       "resnet34 + fastai head: 527,360 + 512*n_out head params, 1 input channel");
    if (m) {
        const eng_param *hb = eng_model_find(m, "head.2.bias");
        const eng_param *hw = eng_model_find(m, "head.4.weight");
        double ss = 0;
        for (size_t i = 0; i < hw->count; i++)
            ss += (double)m->w[hw->offset + i] * (double)m->w[hw->offset + i];
        is_near(m->w[hb->offset], 1e-3, 1e-9, "head BN bias is 1e-3");
        is_near(sqrt(ss / (double)hw->count), sqrt(2.0 / 1024), 0.002,
                "head Linear: kaiming_normal std sqrt(2/fan_in)");
        const eng_param *c1 = eng_model_find(m, "conv1.weight");
        ss = 0;
        for (size_t i = 0; i < c1->count; i++)
            ss += (double)m->w[c1->offset + i] * (double)m->w[c1->offset + i];
        is_near(sqrt(ss / (double)c1->count), sqrt(2.0 / (64 * 49)), 0.004,
                "resnet conv: kaiming_normal(fan_out) std sqrt(2/(OC*KH*KW))");
    }
    eng_model_destroy(m);

    m = build("cnn-small", ENG_HEAD_DEFAULT, 1, 28, 28, 10, true);
    ok(m != NULL, "cnn-small builds for 1x28x28");
    if (!m)
        return;
    /* convs 288 + 9216 + 18432 + 36864 + 73728, BNs 2*(32+32+64+64+128), linear 1290 */
    is_int((long long)count(m, -1), 288 + 9216 + 18432 + 36864 + 73728 + 640 + 1290LL,
           "cnn-small parameter count");
    ok(has(m, "0.0.0.weight", 4, 32) && has(m, "0.0.1.running_mean", 1, 32) &&
           has(m, "0.1.3.weight", 4, 64) && has(m, "0.2.4.num_batches_tracked", 0, 0) &&
           has(m, "1.3.weight", 2, 10) && has(m, "1.3.bias", 1, 10),
       "cnn-small names are nn.Sequential(body, head)'s");
    ok(eng_model_find(m, "0.1.3.weight")->group == 0 &&
           eng_model_find(m, "0.2.0.weight")->group == 1 &&
           eng_model_find(m, "1.3.weight")->group == 2 && m->n_groups == 3,
       "cnn-small groups: stem+group1 | group2 | head");
    eng_model_destroy(m);

    m = build("cnn-small", ENG_HEAD_FASTAI, 3, 20, 20, 5, true);
    ok(m && has(m, "1.2.weight", 1, 256) && has(m, "1.4.weight", 2, 512) &&
           has(m, "1.8.weight", 2, 5),
       "cnn-small with a fastai head, 3 channels, 20x20");
    eng_model_destroy(m);

    eng_model_spec s;
    eng_model_spec_defaults(&s);
    snprintf(s.arch, sizeof(s.arch), "cnn-small");
    s.in_channels = 3;
    size_t shape[3] = {1, 28, 28};
    eng_error err = {0};
    eng_rng_seed(&rng, 3, 3);
    int rc = eng_model_create(&s, 3, shape, 4, true, &rng, &m, &err);
    ok(rc == ENG_ESHAPE && strcmp(err.field, "model.in_channels") == 0,
       "in_channels 3 vs 1-channel data is refused: %s", err.text);
    s.in_channels = 0;
    shape[1] = shape[2] = 0;
    rc = eng_model_create(&s, 3, shape, 4, true, &rng, &m, &err);
    ok(rc != 0 && m == NULL, "an empty image is refused: %s", err.text);
    size_t flat[1] = {16};
    rc = eng_model_create(&s, 1, flat, 4, true, &rng, &m, &err);
    ok(rc == ENG_ESHAPE && strstr(err.text, "[C, H, W]"), "cnn-small on tabular data: %s",
       err.text);
}

/* ---- BasicBlock finite differences ----------------------------------------------------- */

typedef struct blk {
    eng_layer l;
    float *w, *g, *aux;
    size_t n_floats;
} blk;

static void blk_make(blk *b, size_t IC, size_t OC, size_t stride, size_t H, size_t N)
{
    memset(b, 0, sizeof(*b));
    eng_layer *l = &b->l;
    l->ops = &eng_layer_basic_block;
    snprintf(l->name, sizeof(l->name), "layer");
    l->cfg.block.IC = IC;
    l->cfg.block.OC = OC;
    l->cfg.block.stride = stride;
    l->in_ndim = 3;
    l->in_shape[0] = IC;
    l->in_shape[1] = l->in_shape[2] = H;
    l->in_size = IC * H * H;
    if (l->ops->setup(l, NULL) != 0)
        abort();
    size_t np = l->ops->n_params(l), off[ENG_LAYER_MAX_PARAMS], tot = 0;
    for (size_t i = 0; i < np; i++) {
        eng_param_info info;
        l->ops->param_info(l, i, &info);
        size_t c = 1;
        for (size_t d = 0; d < info.ndim; d++)
            c *= info.shape[d];
        off[i] = tot;
        tot += c;
    }
    b->w = calloc(tot, sizeof(float));
    b->g = calloc(tot, sizeof(float));
    b->n_floats = tot;
    for (size_t i = 0; i < np; i++) {
        eng_param_info info;
        l->ops->param_info(l, i, &info);
        l->param[i] = b->w + off[i];
        l->grad[i] = info.is_buffer ? NULL : b->g + off[i];
        l->trainable[i] = !info.is_buffer;
    }
    l->ops->init(l, &rng);
    /* BN affine params away from 1/0 so their gradients matter */
    for (size_t i = 0; i < np; i++) {
        eng_param_info info;
        l->ops->param_info(l, i, &info);
        if (info.is_norm) {
            size_t c = info.shape[0];
            for (size_t k = 0; k < c; k++)
                l->param[i][k] += 0.3f * eng_rng_normal(&rng);
        }
    }
    b->aux = calloc(l->ops->aux_size(l, N), sizeof(float));
    l->aux = b->aux;
}

static void blk_free(blk *b)
{
    free(b->w);
    free(b->g);
    free(b->aux);
}

static double blk_loss(blk *b, size_t N, const float *x, float *y, const float *R)
{
    eng_fwd_args f = {.N = N, .x = x, .y = y, .train = true};
    b->l.ops->forward(&b->l, &f);
    double s = 0;
    for (size_t i = 0; i < N * b->l.out_size; i++)
        s += (double)y[i] * (double)R[i];
    return s;
}

/* max relative error of analytic vs central-difference gradients over sampled entries */
static void check_block(size_t IC, size_t OC, size_t stride, bool freeze_conv1, const char *what)
{
    const size_t N = 3, H = 6;
    blk b;
    blk_make(&b, IC, OC, stride, H, N);
    eng_layer *l = &b.l;
    if (freeze_conv1)
        l->trainable[0] = l->trainable[1] = l->trainable[2] = false; /* conv1, bn1 affine */
    size_t in = N * l->in_size, out = N * l->out_size;
    float *x = malloc(in * sizeof(float)), *y = malloc(out * sizeof(float));
    float *R = malloc(out * sizeof(float)), *dx = malloc(in * sizeof(float));
    fill(x, in, 1.0f);
    fill(R, out, 1.0f);
    memset(b.g, 0, b.n_floats * sizeof(float));
    blk_loss(&b, N, x, y, R);
    eng_bwd_args ba = {N, x, y, R, dx};
    l->ops->backward(l, &ba);
    float *saved_g = malloc(b.n_floats * sizeof(float));
    memcpy(saved_g, b.g, b.n_floats * sizeof(float));
    const float h = 2e-3f;
    double worst = 0;
    size_t checked = 0, kinks = 0, skipped_frozen_nonzero = 0;
    size_t np = l->ops->n_params(l);
    for (size_t p = 0; p <= np; p++) {
        float *t, *g;
        size_t n;
        if (p == np) {
            t = x, g = dx, n = in;
        } else {
            eng_param_info info;
            l->ops->param_info(l, p, &info);
            if (info.is_buffer)
                continue;
            n = 1;
            for (size_t d = 0; d < info.ndim; d++)
                n *= info.shape[d];
            t = l->param[p];
            g = saved_g + (size_t)(l->param[p] - b.w);
            if (!l->trainable[p]) {
                for (size_t k = 0; k < n; k++)
                    skipped_frozen_nonzero += g[k] != 0.0f;
                continue;
            }
        }
        for (size_t k = 0; k < n; k += n / 7 + 1) {
            /* central differences with h and h/2; where they disagree a ReLU kink lies
             * within h of the point and the difference quotient means nothing: skip it */
            double num[2];
            for (int hi = 0; hi < 2; hi++) {
                float hh = hi ? h / 2 : h, keep = t[k];
                t[k] = keep + hh;
                double lp = blk_loss(&b, N, x, y, R);
                t[k] = keep - hh;
                double lm = blk_loss(&b, N, x, y, R);
                t[k] = keep;
                num[hi] = (lp - lm) / (2.0 * (double)hh);
            }
            if (fabs(num[0] - num[1]) > 1e-2 * (fabs(num[0]) + 1e-1)) {
                kinks++;
                continue;
            }
            double err = fabs(num[1] - (double)g[k]) / (fabs(num[1]) + fabs((double)g[k]) + 1e-1);
            worst = err > worst ? err : worst;
            checked++;
        }
    }
    ok(worst < 2e-2 && checked > 20 && kinks <= checked / 3 && skipped_frozen_nonzero == 0,
       "BasicBlock %s: gradients match finite differences (worst rel err %.2g over %zu, %zu "
       "near a kink)",
       what, worst, checked, kinks);
    free(saved_g);
    free(x);
    free(y);
    free(R);
    free(dx);
    blk_free(&b);
}

/* A block whose scratch lives in a region of its own (as the trainer shares one between
 * layers) computes exactly what it computes with the scratch at the end of its aux, and
 * leaves that end of aux alone; with every conv weight frozen too (fastai's freeze: the
 * block then keeps relu(bn1) in its scratch). Sizes reach Winograd (8 -> 8 on 8x8), the tap
 * kernel (8 -> 16, stride 2, 4x4 outputs) and the strided 1x1 downsample. */
static void check_block_scratch(size_t IC, size_t OC, size_t stride, bool frozen_convs,
                                const char *what)
{
    const size_t N = 3, H = 8;
    blk a, b;
    blk_make(&a, IC, OC, stride, H, N);
    blk_make(&b, IC, OC, stride, H, N);
    memcpy(b.w, a.w, a.n_floats * sizeof(float));
    const size_t ns = b.l.ops->scratch_size(&b.l, N), na = b.l.ops->aux_size(&b.l, N);
    float *scratch = calloc(ns, sizeof(float));
    b.l.scratch = scratch;
    for (size_t i = na - ns; i < na; i++)
        b.aux[i] = 12345.0f;
    if (frozen_convs)
        for (size_t k = 0; k < 18; k += 6) /* conv1, conv2, downsample.0 weights */
            a.l.trainable[k] = b.l.trainable[k] = false;
    size_t in = N * a.l.in_size, out = N * a.l.out_size;
    float *x = malloc(in * sizeof(float)), *dy = malloc(out * sizeof(float));
    float *y[2], *dx[2];
    fill(x, in, 1.0f);
    fill(dy, out, 1.0f);
    blk *bl[2] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        y[k] = malloc(out * sizeof(float));
        dx[k] = malloc(in * sizeof(float));
        eng_fwd_args fa = {.N = N, .x = x, .y = y[k], .train = true};
        bl[k]->l.ops->forward(&bl[k]->l, &fa);
        eng_bwd_args ba = {N, x, y[k], dy, dx[k]};
        bl[k]->l.ops->backward(&bl[k]->l, &ba);
    }
    size_t untouched = 0;
    for (size_t i = na - ns; i < na; i++)
        untouched += b.aux[i] == 12345.0f;
    ok(memcmp(y[0], y[1], out * sizeof(float)) == 0 &&
           memcmp(dx[0], dx[1], in * sizeof(float)) == 0 &&
           memcmp(a.g, b.g, a.n_floats * sizeof(float)) == 0 && untouched == ns && ns > 0 &&
           ns < na,
       "BasicBlock %s: scratch in a region of its own gives the same output and gradients and "
       "leaves aux's scratch part alone (%zu of %zu floats)",
       what, untouched, ns);
    for (int k = 0; k < 2; k++) {
        free(y[k]);
        free(dx[k]);
    }
    free(x);
    free(dy);
    free(scratch);
    blk_free(&a);
    blk_free(&b);
}

/* max |a - b| / max |b| */
static double max_rel(const float *a, const float *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return m > 0 ? d / m : d;
}

/* The block on 3 compute threads (its parts' paths, one image each, including the
 * downsample's input gradient) against 1 thread: every entry of the output, the input
 * gradient and the parameter gradients (the finite-difference check samples a few, which on
 * a strided 1x1 downsample can all miss the pixels it reads). */
static void check_block_threads(size_t IC, size_t OC, size_t stride, const char *what)
{
    const size_t N = 3, H = 8;
    blk a, b;
    blk_make(&a, IC, OC, stride, H, N);
    eng_par_set_threads(3); /* before b's aux is sized */
    blk_make(&b, IC, OC, stride, H, N);
    memcpy(b.w, a.w, a.n_floats * sizeof(float));
    size_t in = N * a.l.in_size, out = N * a.l.out_size;
    float *x = malloc(in * sizeof(float)), *dy = malloc(out * sizeof(float));
    float *y[2], *dx[2];
    fill(x, in, 1.0f);
    fill(dy, out, 1.0f);
    blk *bl[2] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        eng_par_set_threads(k ? 3 : 1);
        y[k] = malloc(out * sizeof(float));
        dx[k] = malloc(in * sizeof(float));
        eng_fwd_args fa = {.N = N, .x = x, .y = y[k], .train = true};
        bl[k]->l.ops->forward(&bl[k]->l, &fa);
        eng_bwd_args ba = {N, x, y[k], dy, dx[k]};
        bl[k]->l.ops->backward(&bl[k]->l, &ba);
    }
    eng_par_set_threads(1);
    double e = fmax(max_rel(y[1], y[0], out), max_rel(dx[1], dx[0], in));
    e = fmax(e, max_rel(b.g, a.g, a.n_floats));
    ok(e < 1e-5, "BasicBlock %s on 3 threads: output and all gradients as on 1 (rel diff %.2g)",
       what, e);
    for (int k = 0; k < 2; k++) {
        free(y[k]);
        free(dx[k]);
    }
    free(x);
    free(dy);
    blk_free(&a);
    blk_free(&b);
}

/* ---- freezing saves work ---------------------------------------------------------------- */

static void test_freeze_work(void)
{
    const size_t N = 8, classes = 4;
    eng_dataset d = {0};
    d.n_train = N;
    d.in_ndim = 3;
    d.in_shape[0] = 1;
    d.in_shape[1] = d.in_shape[2] = 12;
    d.in_size = 144;
    d.n_classes = classes;
    d.x_train = malloc(N * 144 * sizeof(float));
    d.y_train = malloc(N * sizeof(int32_t));
    fill(d.x_train, N * 144, 1.0f);
    for (size_t i = 0; i < N; i++)
        d.y_train[i] = (int32_t)(i % classes);
    uint32_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    eng_opt_spec opt;
    eng_opt_spec_defaults(&opt);
    uint64_t flops[3] = {0}, calls[3] = {0}, fwd = 0, fwd_calls = 0;
    /* analytic forward FLOPs of the GEMMs: conv 2*N*OC*OH*OW*IC*9, linear 2*N*in*out */
    uint64_t conv0 = 0, head = 2ull * N * 128 * classes;
    for (int mode = 0; mode < 3; mode++) {
        eng_model *m = build("cnn-small", ENG_HEAD_DEFAULT, 1, 12, 12, classes, mode != 2);
        eng_trainer t;
        eng_error err;
        if (!m || eng_trainer_init(&t, m, &d, &opt, N, 1, &err) != 0) {
            ok(0, "trainer");
            return;
        }
        if (mode == 0) {
            for (size_t i = 0; i < m->n_layers; i++) {
                const eng_layer *l = &m->layers[i];
                if (l->ops != &eng_layer_conv2d)
                    continue;
                uint64_t f = 2ull * N * l->out_size * l->cfg.conv.IC * 9;
                if (i == 0)
                    conv0 = f;
            }
            m->stats = (eng_stats){0};
            eng_trainer_forward(&t, d.x_train, N, true);
            fwd = m->stats.flops;
            fwd_calls = m->stats.gemm_calls;
        }
        eng_model_freeze_to(m, mode == 0 ? 0 : -1);
        m->stats = (eng_stats){0};
        eng_trainer_step(&t, idx, N);
        flops[mode] = m->stats.flops;
        calls[mode] = m->stats.gemm_calls;
        eng_trainer_fini(&t);
        eng_model_destroy(m);
    }
    diag("cnn-small 12x12 batch 8: forward %llu FLOPs; step unfrozen %llu, frozen %llu, "
         "frozen without BN %llu",
         (unsigned long long)fwd, (unsigned long long)flops[0], (unsigned long long)flops[1],
         (unsigned long long)flops[2]);
    is_int((long long)flops[0], (long long)(3 * fwd - conv0),
           "unfrozen step: forward + weight grads + input grads above the first conv");
    is_int((long long)flops[1], (long long)(fwd + head + (fwd - conv0)),
           "frozen, train_bn: no weight-grad GEMMs in groups 0-1 (input grads to the stem BN)");
    is_int((long long)flops[2], (long long)(fwd + head),
           "frozen, train_bn=false: no backward below the head at all");
    is_int((long long)calls[2], (long long)(fwd_calls + 1), "... one backward GEMM (head dW)");
    ok(flops[2] < flops[1] && flops[1] < flops[0], "frozen steps cost less");
    free(d.x_train);
    free(d.y_train);
}

/* ---- the per-layer profile ---------------------------------------------------------------- */

/* One cnn-small step with and without eng_trainer.layer_s: the profile fills the slots of the
 * layers that ran a pass (a fused ReLU's stay 0; with train_bn=false no body backward) and
 * changes no result. */
static void test_profile(void)
{
    const size_t N = 8, classes = 4, in = 144;
    eng_dataset d = {0};
    d.n_train = N;
    d.in_ndim = 3;
    d.in_shape[0] = 1;
    d.in_shape[1] = d.in_shape[2] = 12;
    d.in_size = in;
    d.n_classes = classes;
    d.x_train = malloc(N * in * sizeof(float));
    d.y_train = malloc(N * sizeof(int32_t));
    fill(d.x_train, N * in, 1.0f);
    for (size_t i = 0; i < N; i++)
        d.y_train[i] = (int32_t)(i % classes);
    uint32_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    eng_opt_spec opt;
    eng_opt_spec_defaults(&opt);
    for (int frozen = 0; frozen < 2; frozen++) {
        eng_model *m[2] = {build("cnn-small", ENG_HEAD_DEFAULT, 1, 12, 12, classes, !frozen),
                           build("cnn-small", ENG_HEAD_DEFAULT, 1, 12, 12, classes, !frozen)};
        eng_trainer t[2];
        eng_error err;
        if (!m[0] || !m[1] || eng_trainer_init(&t[0], m[0], &d, &opt, N, 1, &err) ||
            eng_trainer_init(&t[1], m[1], &d, &opt, N, 1, &err)) {
            ok(0, "trainer");
            return;
        }
        const size_t L = m[0]->n_layers;
        double *prof = calloc(2 * L + 1, sizeof(double));
        t[1].layer_s = prof;
        for (int k = 0; k < 2; k++) {
            eng_model_freeze_to(m[k], frozen ? -1 : 0);
            eng_trainer_step(&t[k], idx, N);
        }
        bool convs = true, relus = true, body_bwd = false;
        size_t lo = eng_model_lowest_trainable(m[1]);
        for (size_t i = 0; i < L; i++) {
            const eng_layer *l = &m[1]->layers[i];
            if (l->ops == &eng_layer_conv2d)
                convs = convs && prof[2 * i] > 0.0 && (frozen || prof[2 * i + 1] > 0.0);
            if (l->ops == &eng_layer_relu && i > 0 && eng_bn_relu_pair(&m[1]->layers[i - 1], l))
                relus = relus && prof[2 * i] == 0.0 && prof[2 * i + 1] == 0.0;
            if (i < lo && prof[2 * i + 1] != 0.0)
                body_bwd = true;
        }
        const char *what = frozen ? "train_bn=false" : "unfrozen";
        ok(convs, "%s: every conv's forward%s timed", what, frozen ? "" : " and backward");
        ok(relus, "%s: the ReLUs fused into their BatchNorm have no time of their own", what);
        ok(!body_bwd, "%s: no backward time below the lowest trainable layer (%zu)", what, lo);
        ok(prof[2 * L] > 0.0, "%s: the optimizer step timed", what);
        ok(memcmp(m[0]->w, m[1]->w, m[0]->n_floats * sizeof(float)) == 0,
           "%s: the same weights with the profile on", what);
        free(prof);
        for (int k = 0; k < 2; k++) {
            eng_trainer_fini(&t[k]);
            eng_model_destroy(m[k]);
        }
    }
    free(d.x_train);
    free(d.y_train);
}

/* ---- weights ----------------------------------------------------------------------------- */

static int save_model(const eng_model *m, const char *path, const char *skip, const char *extra)
{
    eng_st_tensor *t = calloc(m->n_params + 1, sizeof(*t));
    size_t k = 0;
    static float one = 1.0f;
    for (size_t i = 0; i < m->n_params; i++) {
        if (skip && strcmp(m->params[i].name, skip) == 0)
            continue;
        t[k].name = m->params[i].name;
        t[k].ndim = m->params[i].info.ndim;
        memcpy(t[k].shape, m->params[i].info.shape, sizeof(m->params[i].info.shape));
        t[k].data = m->w + m->params[i].offset;
        k++;
    }
    if (extra)
        t[k++] = (eng_st_tensor){.name = extra, .ndim = 1, .shape = {1}, .data = &one};
    eng_error err;
    int rc = eng_st_write(path, t, k, NULL, 0, NULL, NULL, &err);
    free(t);
    return rc;
}

static void test_weights(void)
{
    char path[] = "/tmp/thawd_arch_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    eng_model *a = build("cnn-small", ENG_HEAD_DEFAULT, 1, 16, 16, 6, true);
    const eng_param *nbt = eng_model_find(a, "0.1.4.num_batches_tracked");
    a->w[nbt->offset] = 7.0f;
    ok(save_model(a, path, NULL, NULL) == 0, "save cnn-small");
    eng_st_file *f = NULL;
    eng_error err = {0};
    ok(eng_st_read(path, &f, &err) == 0, "read back");
    if (f) {
        const eng_st_entry *e = eng_st_find(f, "0.1.4.num_batches_tracked");
        float v = 0;
        ok(e && strcmp(e->dtype, "I64") == 0 && e->end - e->begin == 8 &&
               eng_st_copy(f, e, &v, 1, &err) == 0 && v == 7.0f,
           "num_batches_tracked is written as I64 and read back as 7");
        e = eng_st_find(f, "0.1.4.running_var");
        ok(e && strcmp(e->dtype, "F32") == 0, "running_var stays F32");
        eng_st_close(f);
    }
    eng_model *b = build("cnn-small", ENG_HEAD_DEFAULT, 1, 16, 16, 6, true);
    int rc = eng_st_load_model(path, b, false, &err);
    ok(rc == 0 && memcmp(a->w, b->w, a->n_floats * sizeof(float)) == 0,
       "strict load restores every tensor");

    save_model(a, path, "0.2.3.weight", NULL);
    rc = eng_st_load_model(path, b, false, &err);
    ok(rc == ENG_ESHAPE && strstr(err.text, "missing tensor \"0.2.3.weight\""), "missing: %s",
       err.text);
    save_model(a, path, NULL, "0.9.weight");
    rc = eng_st_load_model(path, b, false, &err);
    ok(rc == ENG_ESHAPE && strstr(err.text, "unexpected tensor \"0.9.weight\""), "unexpected: %s",
       err.text);
    save_model(a, path, NULL, NULL);
    eng_model *c = build("cnn-small", ENG_HEAD_DEFAULT, 1, 16, 16, 3, true);
    rc = eng_st_load_model(path, c, false, &err);
    ok(rc == ENG_ESHAPE && strstr(err.text, "\"1.3.weight\"") && strstr(err.text, "[6x128]") &&
           strstr(err.text, "[3x128]"),
       "shape mismatch names the tensor and both shapes: %s", err.text);
    const eng_param *hw = eng_model_find(c, "1.3.weight");
    float head0 = c->w[hw->offset];
    rc = eng_st_load_model(path, c, true, &err);
    const eng_param *bw = eng_model_find(c, "0.2.3.weight");
    ok(rc == 0 && c->w[hw->offset] == head0 &&
           memcmp(c->w + bw->offset, a->w + eng_model_find(a, "0.2.3.weight")->offset,
                  bw->count * sizeof(float)) == 0 &&
           c->w[eng_model_find(c, "0.1.4.num_batches_tracked")->offset] == 7.0f,
       "body_only loads the body and keeps the fresh head (the transfer case)");
    eng_model_destroy(c);
    eng_model *r = build("resnet18", ENG_HEAD_DEFAULT, 1, 32, 32, 6, true);
    rc = eng_st_load_model(path, r, true, &err);
    ok(rc == ENG_ESHAPE && strstr(err.text, "missing tensor \"conv1.weight\""),
       "a body of another architecture is refused: %s", err.text);
    eng_model_destroy(r);

    /* a truncated file and a bad dtype are rejected with a clear error */
    FILE *fp = fopen(path, "r+b");
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fclose(fp);
    ok(truncate(path, len - 3) == 0, "truncate");
    rc = eng_st_load_model(path, b, false, &err);
    ok(rc == ENG_EFORMAT, "truncated file: %s", err.text);
    eng_model_destroy(a);
    eng_model_destroy(b);
    unlink(path);
}

/* ---- summary and prediction --------------------------------------------------------------- */

static void test_summary_predict(void)
{
    eng_model_spec s;
    eng_model_spec_defaults(&s);
    snprintf(s.arch, sizeof(s.arch), "resnet18");
    s.head.kind = ENG_HEAD_TORCHVISION;
    size_t shape[3] = {3, 32, 32};
    eng_net *n = NULL;
    eng_error err = {0};
    int rc = eng_net_create(&s, 3, shape, 1000, 0, true, &n, &err);
    ok(rc == 0, "eng_net resnet18: %s", err.text);
    if (rc)
        return;
    eng_summary *sm = NULL;
    ok(eng_net_summary(n, 16, &sm, &err) == 0, "summary");
    char *txt = malloc(1 << 16);
    size_t len = eng_summary_text(sm, txt, 1 << 16);
    ok(len < (1 << 16) && strstr(txt, "ResNet (Input shape: 16 x 3 x 32 x 32)") &&
           strstr(txt, "Total params: 11,689,512\n") &&
           strstr(txt, "Total trainable params: 11,689,512\n") && strstr(txt, "Model unfrozen"),
       "resnet18 summary header and totals");
    ok(strstr(txt, "\n                     16 x 64 x 16 x 16   \nConv2d               "
                   "                     9408       True      ") != NULL,
       "stem conv row in fastai's layout");
    ok(sm->n_groups == 3 && sm->group_params[2] == 513000 &&
           strcmp(sm->group_first[1], "layer3.0.conv1") == 0,
       "summary groups");
    eng_net_freeze_to(n, -1);
    eng_summary_destroy(sm);
    eng_net_summary(n, 16, &sm, &err);
    /* frozen with train_bn: BN rows stay trainable; by module, as fastai counts */
    uint64_t bn = 0;
    for (size_t i = 0; i < sm->n_rows; i++)
        if (strcmp(sm->rows[i].type, "BatchNorm2d") == 0 && sm->rows[i].group < 2)
            bn += sm->rows[i].params;
    ok(sm->trainable_params == 513000 + bn && sm->frozen_idx == 2, "frozen totals");
    eng_summary_text(sm, txt, 1 << 16);
    ok(strstr(txt, "Model frozen up to parameter group #2") != NULL, "frozen state line");
    char small[40];
    size_t need = eng_summary_text(sm, small, sizeof(small));
    ok(need == strlen(txt) && strlen(small) == sizeof(small) - 1, "snprintf-like truncation");
    eng_summary_destroy(sm);
    free(txt);

    /* prediction is the eval forward: equal to the trainer's, in batches */
    size_t N = 66, in = eng_net_in_size(n);
    float *x = malloc(N * in * sizeof(float)), *lg = malloc(N * 1000 * sizeof(float));
    fill(x, N * in, 1.0f);
    ok(eng_net_predict(n, x, N, lg, &err) == 0, "predict 66 samples");
    float one[1000];
    eng_net_predict(n, x + 65 * in, 1, one, &err);
    double md = 0;
    for (int i = 0; i < 1000; i++)
        md = fmax(md, fabs((double)one[i] - (double)lg[65 * 1000 + i]));
    ok(md < 1e-4, "batching changes a row only by rounding (max diff %.2g)", md);
    eng_softmax_rows(one, 1, 1000);
    double sum = 0;
    for (int i = 0; i < 1000; i++)
        sum += (double)one[i];
    is_near(sum, 1.0, 1e-5, "softmax rows sum to 1");
    free(x);
    free(lg);
    eng_net_destroy(n);
}

int main(void)
{
    eng_rng_seed(&rng, 42, 0);
    test_counts();
    check_block(3, 4, 2, false, "with downsample (stride 2, 3->4)");
    check_block(4, 4, 1, false, "identity shortcut");
    check_block(4, 6, 1, false, "downsample 4->6");
    check_block(4, 6, 1, true, "downsample 4->6, conv1+bn1 frozen");
    check_block_threads(3, 4, 2, "with downsample (stride 2, 3->4)");
    check_block_threads(8, 16, 2, "8->16 stride 2 (tap)");
    check_block_scratch(8, 8, 1, false, "8->8 (Winograd)");
    check_block_scratch(8, 8, 1, true, "8->8 (Winograd), convs frozen");
    check_block_scratch(8, 16, 2, false, "8->16 stride 2 (tap)");
    check_block_scratch(8, 16, 2, true, "8->16 stride 2 (tap), convs frozen");
    test_freeze_work();
    test_profile();
    test_weights();
    test_summary_predict();
    return done_testing();
}
