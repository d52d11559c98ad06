/*
 * layer_block.c: torchvision's residual BasicBlock as one composite layer kind:
 *   out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
 * conv1 is 3x3 with the block's stride, conv2 3x3 stride 1 (both pad 1, no bias); the
 * shortcut is the identity, or downsample = conv 1x1 stride s (no bias) + BN when the stride
 * is not 1 or the channel count changes (torchvision's rule).
 *
 * DESIGN. The children are ordinary conv2d / batchnorm2d layers built on the fly as
 * eng_layer values whose parameters, gradients, trainable flags and scratch point into the
 * block's own, so the block reuses their kernels, GEMM counters and freezing rules. Parameter
 * order and names are torchvision's state_dict order: conv1.weight, bn1.{weight, bias,
 * running_mean, running_var, num_batches_tracked}, conv2.weight, bn2.*, downsample.0.weight,
 * downsample.1.*. The backward pass computes only what is needed: the main path below conv2
 * only when a lower parameter trains or the input gradient is asked for; the shortcut's
 * input gradient is added into dx with the conv kernel's accumulate flag.
 *
 * aux layout for a batch of N (each [N x out_size] unless said): what the backward pass
 * reads,
 *   c1 conv1 out | a1 relu(bn1) out | c2 conv2 out | cd downsample conv out (if any) |
 *   three BN areas of 2*OC+1 (batch statistics) | the three convs' own aux before their
 *   scratch (the conv2d layer's cache of frozen Winograd weights, kept from call to call),
 * then the scratch (scratch_size; the trainer's shared region when l->scratch is set):
 *   g, t1, t2 backward temporaries (g also holds the downsample BN output during forward) |
 *   the conv scratch shared by the three convs.
 * a1 is read only by conv2's weight gradient: while that weight is frozen (and bn1 + ReLU
 * run fused, which recompute the mask from c1), the forward pass writes a1 to t1 instead,
 * so that plane is never touched (fastai's freeze keeps one plane less per block). In eval
 * mode bn1 + ReLU run in conv1's output pass (eng_bn_relu_epilogue): c1 is not written.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"
#include "layers.h"
#include "par.h"
#include "util.h"

enum { CH_CONV1, CH_BN1, CH_CONV2, CH_BN2, CH_DSCONV, CH_DSBN, CH_N };

static const size_t ch_param0[CH_N] = {0, 1, 6, 7, 12, 13};
static const size_t ch_nparam[CH_N] = {1, 5, 1, 5, 1, 5};
static const char *const ch_name[CH_N] = {"conv1", "bn1",          "conv2",
                                          "bn2",   "downsample.0", "downsample.1"};

static bool has_ds(const eng_layer *l)
{
    return l->cfg.block.stride != 1 || l->cfg.block.IC != l->cfg.block.OC;
}

static size_t block_out(const eng_layer *l, size_t N)
{
    return N * l->out_size;
}

static size_t bn_scratch(const eng_layer *l)
{
    return 2 * l->cfg.block.OC + 1;
}

/* Builds child k without its scratch; returns setup's code. The input shape is the block's
 * for conv1 and the downsample conv, [OC, OH, OW] for the others. */
static int child_make(const eng_layer *l, int k, eng_layer *c, eng_error *err)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%.30s.%s", l->name, ch_name[k]);
    const size_t OC = l->cfg.block.OC;
    c->stats = l->stats;
    c->rng = l->rng;
    if (k == CH_CONV1 || k == CH_DSCONV) {
        c->in_ndim = l->in_ndim;
        memcpy(c->in_shape, l->in_shape, sizeof(c->in_shape));
        c->in_size = l->in_size;
    } else {
        c->in_ndim = 3;
        c->in_shape[0] = OC;
        c->in_shape[1] = l->out_shape[1];
        c->in_shape[2] = l->out_shape[2];
        c->in_size = l->out_size;
    }
    if (k == CH_CONV1 || k == CH_CONV2 || k == CH_DSCONV) {
        bool ds = k == CH_DSCONV;
        c->ops = &eng_layer_conv2d;
        c->cfg.conv.IC = k == CH_CONV2 ? OC : l->cfg.block.IC;
        c->cfg.conv.OC = OC;
        c->cfg.conv.KH = c->cfg.conv.KW = ds ? 1 : 3;
        c->cfg.conv.stride = k == CH_CONV2 ? 1 : l->cfg.block.stride;
        c->cfg.conv.pad = ds ? 0 : 1;
        c->cfg.conv.bias = false;
    } else {
        c->ops = &eng_layer_batchnorm2d;
        c->cfg.norm.C = OC;
        c->cfg.norm.eps = ENG_BN_EPS;
        c->cfg.norm.momentum = ENG_BN_MOMENTUM;
    }
    for (size_t j = 0; j < ch_nparam[k]; j++) {
        c->param[j] = l->param[ch_param0[k] + j];
        c->grad[j] = l->grad[ch_param0[k] + j];
        c->trainable[j] = l->trainable[ch_param0[k] + j];
    }
    return c->ops->setup(c, err);
}

/* Floats of conv scratch: the largest need of the three convs. */
static size_t conv_scratch_size(const eng_layer *l, size_t N)
{
    size_t best = 0;
    for (int k = CH_CONV1; k <= CH_DSCONV; k++) {
        eng_layer c;
        if ((k == CH_BN1 || k == CH_BN2) || (k == CH_DSCONV && !has_ds(l)))
            continue;
        int rc = child_make(l, k, &c, NULL);
        ENG_ASSERT(rc == 0);
        size_t s = c.ops->scratch_size(&c, N);
        best = s > best ? s : best;
    }
    return best;
}

/* Floats of conv child k's own aux before its scratch (its cache of frozen Winograd weights,
 * kept in the block's aux); 0 for a downsample the block does not have. */
static size_t conv_kept(const eng_layer *l, int k)
{
    eng_layer c;
    if (k == CH_DSCONV && !has_ds(l))
        return 0;
    int rc = child_make(l, k, &c, NULL);
    ENG_ASSERT(rc == 0);
    return c.ops->aux_size(&c, 1) - c.ops->scratch_size(&c, 1);
}

typedef struct block_bufs {
    float *c1, *a1, *c2, *cd, *g, *t1, *t2, *bn[3], *conv;
    float *cc[3]; /* conv1, conv2, downsample.0 caches */
} block_bufs;

/* Floats of aux before the scratch. */
static size_t kept_floats(const eng_layer *l, size_t N)
{
    return (has_ds(l) ? 4 : 3) * block_out(l, N) + 3 * bn_scratch(l) + conv_kept(l, CH_CONV1) +
           conv_kept(l, CH_CONV2) + conv_kept(l, CH_DSCONV);
}

/* Whether a1 lives in t1 (see the top comment). */
static bool a1_scratch(const eng_layer *l)
{
    return !l->unfused && !l->trainable[6];
}

static block_bufs bufs(const eng_layer *l, size_t N)
{
    block_bufs b = {0};
    const size_t o = block_out(l, N);
    float *p = l->aux;
    b.c1 = p, p += o;
    b.a1 = p, p += o;
    b.c2 = p, p += o;
    if (has_ds(l))
        b.cd = p, p += o;
    for (int i = 0; i < 3; i++)
        b.bn[i] = p, p += bn_scratch(l);
    b.cc[0] = p, p += conv_kept(l, CH_CONV1);
    b.cc[1] = p, p += conv_kept(l, CH_CONV2);
    b.cc[2] = p, p += conv_kept(l, CH_DSCONV);
    if (l->scratch)
        p = l->scratch;
    b.g = p, p += o;
    b.t1 = p, p += o;
    b.t2 = p, p += o;
    b.conv = p;
    if (a1_scratch(l))
        b.a1 = b.t1;
    return b;
}

/* Child k ready to run, with its scratch. N is the batch the aux was laid out for. */
static void child(const eng_layer *l, int k, const block_bufs *b, eng_layer *c)
{
    int rc = child_make(l, k, c, NULL);
    ENG_ASSERT(rc == 0);
    if (k == CH_BN1)
        c->aux = b->bn[0];
    else if (k == CH_BN2)
        c->aux = b->bn[1];
    else if (k == CH_DSBN)
        c->aux = b->bn[2];
    else { /* a conv: its cache in the block's aux, the block's conv scratch */
        c->aux = b->cc[k == CH_CONV1 ? 0 : k == CH_CONV2 ? 1 : 2];
        c->scratch = b->conv;
    }
}

static int block_setup(eng_layer *l, eng_error *err)
{
    const size_t IC = l->cfg.block.IC, OC = l->cfg.block.OC;
    if (IC == 0 || OC == 0 || l->cfg.block.stride == 0)
        return eng_err_set(err, ENG_EINVAL, NULL, "layer %s: block needs channels and a stride",
                           l->name);
    if (l->in_ndim != 3 || l->in_shape[0] != IC)
        return eng_err_set(err, ENG_ESHAPE, NULL,
                           "layer %s: block expects input [%zu, H, W], got %zu dims (C = %zu)",
                           l->name, IC, l->in_ndim, l->in_shape[0]);
    eng_layer c;
    int rc = child_make(l, CH_CONV1, &c, err);
    if (rc)
        return rc;
    l->out_ndim = 3;
    memcpy(l->out_shape, c.out_shape, sizeof(l->out_shape));
    l->out_size = c.out_size;
    for (int k = CH_BN1; k < CH_N; k++) {
        if (k >= CH_DSCONV && !has_ds(l))
            break;
        rc = child_make(l, k, &c, err);
        if (rc)
            return rc;
        if (c.out_size != l->out_size)
            return eng_err_set(err, ENG_ESHAPE, NULL, "layer %s: %s output does not match", l->name,
                               ch_name[k]);
    }
    return 0;
}

static size_t block_n_params(const eng_layer *l)
{
    return has_ds(l) ? 18 : 12;
}

static void block_param_info(const eng_layer *l, size_t i, eng_param_info *info)
{
    int k = CH_N - 1;
    while (ch_param0[k] > i)
        k--;
    eng_layer c;
    int rc = child_make(l, k, &c, NULL);
    ENG_ASSERT(rc == 0);
    eng_param_info ci;
    c.ops->param_info(&c, i - ch_param0[k], &ci);
    *info = ci;
    snprintf(info->suffix, sizeof(info->suffix), "%s.%.24s", ch_name[k], ci.suffix);
}

/* torchvision's ResNet init: convs kaiming_normal(fan_out, relu), std = sqrt(2 / fan_out)
 * with fan_out = OC*KH*KW; BatchNorm weight 1, bias 0 (running stats 1 / 0). */
static void block_init(eng_layer *l, eng_rng *rng)
{
    for (int k = 0; k < CH_N; k++) {
        if (k >= CH_DSCONV && !has_ds(l))
            break;
        eng_layer c;
        int rc = child_make(l, k, &c, NULL);
        ENG_ASSERT(rc == 0);
        if (c.ops == &eng_layer_conv2d) {
            size_t fan_out = c.cfg.conv.OC * c.cfg.conv.KH * c.cfg.conv.KW;
            size_t n = fan_out * c.cfg.conv.IC;
            float sd = sqrtf(2.0f / (float)fan_out);
            for (size_t i = 0; i < n; i++)
                c.param[0][i] = sd * eng_rng_normal(rng);
        } else {
            c.ops->init(&c, rng);
        }
    }
}

static size_t block_scratch_size(const eng_layer *l, size_t N)
{
    return 3 * block_out(l, N) + conv_scratch_size(l, N);
}

static size_t block_aux_size(const eng_layer *l, size_t N)
{
    return kept_floats(l, N) + block_scratch_size(l, N);
}

static void run_fwd(eng_layer *c, size_t N, const float *x, float *y, bool train)
{
    eng_fwd_args a = {.N = N, .x = x, .y = y, .train = train};
    c->ops->forward(c, &a);
}

static void run_bwd(eng_layer *c, size_t N, const float *x, const float *dy, float *dx)
{
    eng_bwd_args a = {.N = N, .x = x, .y = NULL, .dy = dy, .dx = dx};
    c->ops->backward(c, &a);
}

static void relu_inplace(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = v[i] > 0.0f ? v[i] : 0.0f;
}

static void block_forward(eng_layer *l, const eng_fwd_args *a)
{
    const size_t N = a->N, o = block_out(l, N);
    block_bufs b = bufs(l, N);
    eng_layer c;
    eng_fwd_args fa = {.N = N, .train = a->train};
    eng_layer bn1;
    child(l, CH_BN1, &b, &bn1);
    child(l, CH_CONV1, &b, &c);
    /* eval: bn1 + ReLU in conv1's output pass, its arrays in t2 (free during the forward;
     * too small only for one value per channel) */
    eng_epilogue epi;
    if (!l->unfused && o >= eng_bn_relu_epilogue_floats(&bn1) &&
        eng_bn_relu_epilogue(&bn1, a->train, &epi, b.t2)) {
        fa.x = a->x, fa.y = b.a1, fa.epi = &epi;
        c.ops->forward(&c, &fa);
        fa.epi = NULL;
    } else {
        run_fwd(&c, N, a->x, b.c1, a->train);
        if (l->unfused) {
            run_fwd(&bn1, N, b.c1, b.a1, a->train);
            relu_inplace(b.a1, o);
        } else {
            fa.x = b.c1, fa.y = b.a1;
            eng_bn_relu_forward(&bn1, &fa, NULL);
        }
    }
    child(l, CH_CONV2, &b, &c);
    run_fwd(&c, N, b.a1, b.c2, a->train);
    const float *sc = a->x;
    if (has_ds(l)) {
        child(l, CH_DSCONV, &b, &c);
        run_fwd(&c, N, a->x, b.cd, a->train);
        child(l, CH_DSBN, &b, &c);
        run_fwd(&c, N, b.cd, b.g, a->train);
        sc = b.g;
    }
    child(l, CH_BN2, &b, &c);
    if (l->unfused) {
        run_fwd(&c, N, b.c2, a->y, a->train);
        for (size_t i = 0; i < o; i++) {
            float v = a->y[i] + sc[i];
            a->y[i] = v > 0.0f ? v : 0.0f;
        }
    } else {
        fa.x = b.c2, fa.y = a->y;
        eng_bn_relu_forward(&c, &fa, sc); /* relu(bn2(c2) + shortcut) */
    }
}

/* dx += the downsample conv's input gradient for dy (its BN's input gradient): the images
 * split over the compute threads as conv2d splits them, each part in chunks of nb images
 * per GEMM with its own column and gather buffers, as the conv2d layer lays its scratch out
 * (one image per GEMM gave layer4.0's 1x1 conv GEMMs of 4 columns). */
typedef struct ds_job {
    eng_conv2d_geom g;
    size_t N, nb;
    const float *w, *dy;
    float *dx, *scratch;
} ds_job;

/* Floats of one part's buffers. */
static size_t ds_part_floats(const ds_job *j)
{
    return eng_conv2d_col_floats(&j->g, j->nb) + eng_conv2d_tmp_floats(&j->g, j->nb);
}

static void ds_dx_part(void *ctx, size_t p, size_t T)
{
    const ds_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->N, p, T, &lo, &hi);
    const size_t in = j->g.IC * j->g.IH * j->g.IW, out = j->g.OC * j->g.OH * j->g.OW;
    float *base = j->scratch + p * ds_part_floats(j);
    eng_conv2d_scratch s = {
        .col = base, .tmp = base + eng_conv2d_col_floats(&j->g, j->nb), .nb = j->nb};
    eng_conv2d_backward_input(&j->g, hi - lo, j->w, j->dy + lo * out, j->dx + lo * in, true, &s);
}

static bool any_trainable(const eng_layer *l, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (l->trainable[i])
            return true;
    return false;
}

static void block_backward(eng_layer *l, const eng_bwd_args *a)
{
    const size_t N = a->N, o = block_out(l, N);
    block_bufs b = bufs(l, N);
    eng_layer c;
    const bool need_lower = a->dx || any_trainable(l, 0, 6);
    const bool need_main = need_lower || any_trainable(l, 6, 12);
    const bool ds = has_ds(l);
    const bool need_ds = ds && (a->dx || any_trainable(l, 12, 18));

    /* Through the final ReLU: g = dy where the output is positive, stored when the shortcut
     * needs it. Fused, bn2's backward masks dy itself and stores g on the way. */
    const bool keep_g = need_ds || (!ds && a->dx);
    const bool fuse = !l->unfused;
    if (!(need_main && fuse) && (keep_g || need_main))
        for (size_t i = 0; i < o; i++) {
            const float d = a->dy[i]; /* unconditional load: a select, not a branch */
            b.g[i] = a->y[i] > 0.0f ? d : 0.0f;
        }

    if (need_main) {
        const bool conv2_w = l->trainable[6];
        child(l, CH_BN2, &b, &c);
        float *t1 = conv2_w || need_lower ? b.t1 : NULL;
        if (fuse) {
            eng_bwd_args ba = {.N = N, .x = b.c2, .y = a->y, .dy = a->dy, .dx = t1};
            eng_bn_relu_backward(&c, &ba, keep_g ? b.g : NULL);
        } else {
            run_bwd(&c, N, b.c2, b.g, t1);
        }
        if (conv2_w || need_lower) {
            child(l, CH_CONV2, &b, &c); /* x = a1 is read only for the weight gradient */
            run_bwd(&c, N, conv2_w ? b.a1 : NULL, b.t1, need_lower ? b.t2 : NULL);
        }
    }
    if (need_lower) {
        const bool conv1_w = l->trainable[0];
        child(l, CH_BN1, &b, &c);
        float *t1 = conv1_w || a->dx ? b.t1 : NULL;
        if (fuse) { /* through relu(bn1): t2 masked inside bn1's backward */
            eng_bwd_args ba = {.N = N, .x = b.c1, .y = NULL, .dy = b.t2, .dx = t1};
            eng_bn_relu_backward(&c, &ba, NULL);
        } else {
            for (size_t i = 0; i < o; i++)
                if (!(b.a1[i] > 0.0f))
                    b.t2[i] = 0.0f;
            run_bwd(&c, N, b.c1, b.t2, t1);
        }
        if (conv1_w || a->dx) {
            child(l, CH_CONV1, &b, &c);
            run_bwd(&c, N, a->x, b.t1, a->dx); /* sets dx */
        }
    }
    if (need_ds) {
        const bool dsw = l->trainable[12];
        child(l, CH_DSBN, &b, &c);
        run_bwd(&c, N, b.cd, b.g, dsw || a->dx ? b.t1 : NULL);
        child(l, CH_DSCONV, &b, &c);
        if (dsw)
            run_bwd(&c, N, a->x, b.t1, NULL); /* weight gradient only */
        if (a->dx) {
            ds_job j = {.N = N, .w = c.param[0], .dy = b.t1, .dx = a->dx, .scratch = b.conv};
            int rc = eng_conv2d_geom_init(&j.g, c.cfg.conv.IC, l->in_shape[1], l->in_shape[2],
                                          c.cfg.conv.OC, 1, 1, c.cfg.conv.stride, c.cfg.conv.stride,
                                          0, 0);
            ENG_ASSERT(rc == 0);
            const size_t T = eng_par_threads() < N ? eng_par_threads() : (N ? N : 1);
            const size_t P = j.g.OH * j.g.OW, Np = (N + T - 1) / T;
            /* about 512 columns per GEMM, conv2d's chunk (its scratch holds T such parts) */
            j.nb = P >= 512 ? 1 : (512 + P - 1) / P;
            j.nb = j.nb < Np ? j.nb : (Np ? Np : 1);
            ENG_ASSERT(T * ds_part_floats(&j) <= conv_scratch_size(l, N));
            eng_par_run(T, ds_dx_part, &j);
            for (size_t p = 0; p < T; p++) {
                size_t lo, hi;
                eng_par_range(N, p, T, &lo, &hi);
                for (size_t n0 = lo; n0 < hi; n0 += j.nb)
                    eng_stats_gemm(l->stats, eng_conv2d_kdim(&j.g),
                                   (hi - n0 < j.nb ? hi - n0 : j.nb) * P, j.g.OC);
            }
        }
    } else if (!ds && a->dx) {
        for (size_t i = 0; i < o; i++) /* identity shortcut */
            a->dx[i] += b.g[i];
    }
}

const eng_layer_ops eng_layer_basic_block = {
    .kind = "basic_block",
    .setup = block_setup,
    .n_params = block_n_params,
    .param_info = block_param_info,
    .init = block_init,
    .aux_size = block_aux_size,
    .scratch_size = block_scratch_size,
    .forward = block_forward,
    .backward = block_backward,
};
