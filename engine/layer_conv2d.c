/*
 * layer_conv2d.c: 2-D convolution as im2col + sgemm, forward and the three separately
 * callable backward parts (weight, bias, input).
 *
 * DESIGN: the batch is processed in chunks of s->nb images. A chunk's images are unfolded
 * side by side into col [K, m*P] (K = IC*KH*KW, P = OH*OW, m <= nb images), so a single GEMM
 *   forward       tmp [OC, m*P]  = w [OC, K] * col [K, m*P]
 *   weight grad   dw  [OC, K]   += dyc [OC, m*P] * col^T
 *   input grad    col [K, m*P]   = w^T * dyc [OC, m*P], then col2im per image
 * covers the chunk; tmp/dyc are the chunk's outputs in channel-major order, so they are
 * scattered to / gathered from NCHW. With one image per chunk the GEMM works on the NCHW
 * tensors in place. A 1x1 stride-1 unpadded convolution needs no unfolding at all: the image
 * [IC, H*W] already is its column matrix.
 *
 * The layer entry splits the batch into eng_par_threads() contiguous parts (par.h), each with
 * its own scratch, run on the engine's compute threads with single-threaded GEMMs; the
 * weight gradient is summed over the parts' partial sums in part order, so results do not
 * depend on timing (they do depend on the thread budget, by float rounding only).
 */
#include <math.h>
#include <string.h>

#include "conv_tap.h"
#include "gemm.h"
#include "kernels.h"
#include "layers.h"
#include "par.h"
#include "util.h"
#include "winograd.h"

size_t eng_conv2d_col_floats(const eng_conv2d_geom *g, size_t nb)
{
    return eng_conv2d_kdim(g) * nb * g->OH * g->OW;
}

size_t eng_conv2d_tmp_floats(const eng_conv2d_geom *g, size_t nb)
{
    return nb > 1 ? g->OC * nb * g->OH * g->OW : 0;
}

/* A 1x1, stride 1, unpadded convolution: im2col would be a copy. */
static bool is_pointwise(const eng_conv2d_geom *g)
{
    return g->KH == 1 && g->KW == 1 && g->SH == 1 && g->SW == 1 && g->PH == 0 && g->PW == 0;
}

/* Unfolds images x [m, IC, IH, IW] into col [K, m*P] (image i at column offset i*P). */
static void unfold_chunk(const eng_conv2d_geom *g, size_t m, const float *x, float *col)
{
    const size_t P = g->OH * g->OW, in = g->IC * g->IH * g->IW;
    for (size_t i = 0; i < m; i++)
        eng_im2col(g, x + i * in, col + i * P, m * P);
}

/* Gathers dy [m, OC, P] into dyc [OC, m*P]. */
static void gather_chunk(size_t OC, size_t P, size_t m, const float *dy, float *dyc)
{
    for (size_t i = 0; i < m; i++)
        for (size_t oc = 0; oc < OC; oc++)
            memcpy(dyc + oc * m * P + i * P, dy + (i * OC + oc) * P, P * sizeof(float));
}

void eng_conv2d_forward(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                        const float *b, float *y, const eng_conv2d_scratch *s)
{
    eng_conv2d_forward_epi(g, N, x, w, b, y, s, NULL);
}

void eng_conv2d_forward_epi(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                            const float *b, float *y, const eng_conv2d_scratch *s,
                            const eng_epilogue *epi)
{
    const size_t K = eng_conv2d_kdim(g), P = g->OH * g->OW, OC = g->OC;
    const size_t in = g->IC * g->IH * g->IW, out = OC * P;
    const size_t nb = s->nb ? s->nb : 1;
    for (size_t n0 = 0; n0 < N; n0 += nb) {
        const size_t m = N - n0 < nb ? N - n0 : nb;
        const float *xn = x + n0 * in; /* [m, IC, IH, IW] */
        float *yn = y + n0 * out;      /* [m, OC, OH, OW] */
        if (m == 1) {
            const float *col = xn; /* [K, P] */
            if (!is_pointwise(g)) {
                eng_im2col(g, xn, s->col, P);
                col = s->col;
            }
            eng_sgemm(false, false, OC, P, K, 1.0f, w, K, col, P, 0.0f, yn, P);
            for (size_t oc = 0; oc < OC && (b || epi); oc++) {
                if (b)
                    for (size_t p = 0; p < P; p++)
                        yn[oc * P + p] += b[oc];
                if (epi)
                    eng_epilogue_plane(epi, oc, yn + oc * P, yn + oc * P, P);
            }
            continue;
        }
        unfold_chunk(g, m, xn, s->col);
        /* tmp [OC, m*P] */
        eng_sgemm(false, false, OC, m * P, K, 1.0f, w, K, s->col, m * P, 0.0f, s->tmp, m * P);
        for (size_t i = 0; i < m; i++)
            for (size_t oc = 0; oc < OC; oc++) {
                const float *src = s->tmp + oc * m * P + i * P;
                float *dst = yn + (i * OC + oc) * P;
                if (epi && !b) { /* the epilogue as the copy */
                    eng_epilogue_plane(epi, oc, src, dst, P);
                    continue;
                }
                const float bias = b ? b[oc] : 0.0f;
                for (size_t p = 0; p < P; p++)
                    dst[p] = src[p] + bias;
                if (epi) /* while dst is in the cache */
                    eng_epilogue_plane(epi, oc, dst, dst, P);
            }
    }
}

void eng_conv2d_backward_weight(const eng_conv2d_geom *g, size_t N, const float *x, const float *dy,
                                float *dw, bool accumulate, const eng_conv2d_scratch *s)
{
    eng_conv2d_backward_weight_input(g, N, x, NULL, dy, dw, accumulate, NULL, false, s);
}

void eng_conv2d_backward_bias(const eng_conv2d_geom *g, size_t N, const float *dy, float *db,
                              bool accumulate)
{
    const size_t P = g->OH * g->OW, OC = g->OC;
    for (size_t oc = 0; oc < OC; oc++) {
        double acc = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *src = dy + (n * OC + oc) * P;
            float part = 0.0f; /* one plane in float (vectorisable), planes summed in double */
            for (size_t p = 0; p < P; p++)
                part += src[p];
            acc += (double)part;
        }
        db[oc] = accumulate ? db[oc] + (float)acc : (float)acc;
    }
}

void eng_conv2d_backward_input(const eng_conv2d_geom *g, size_t N, const float *w, const float *dy,
                               float *dx, bool accumulate, const eng_conv2d_scratch *s)
{
    eng_conv2d_backward_weight_input(g, N, NULL, w, dy, NULL, false, dx, accumulate, s);
}

void eng_conv2d_backward_weight_input(const eng_conv2d_geom *g, size_t N, const float *x,
                                      const float *w, const float *dy, float *dw, bool acc_dw,
                                      float *dx, bool acc_dx, const eng_conv2d_scratch *s)
{
    const size_t K = eng_conv2d_kdim(g), P = g->OH * g->OW, OC = g->OC;
    const size_t in = g->IC * g->IH * g->IW, out = OC * P;
    const size_t nb = s->nb ? s->nb : 1;
    if (dw && N == 0 && !acc_dw)
        memset(dw, 0, OC * K * sizeof(float));
    if (!dw && !dx)
        return;
    for (size_t n0 = 0; n0 < N; n0 += nb) {
        const size_t m = N - n0 < nb ? N - n0 : nb;
        const float *dyn = dy + n0 * out; /* [m, OC, OH, OW] */
        const float *dyc = dyn;           /* [OC, m*P], gathered once for both GEMMs */
        if (m > 1) {
            gather_chunk(OC, P, m, dyn, s->tmp);
            dyc = s->tmp;
        }
        if (dw) {                          /* dw (+)= dyc * col^T */
            const float *xn = x + n0 * in; /* [m, IC, IH, IW] */
            const float *col = xn;         /* [K, m*P] */
            if (m > 1 || !is_pointwise(g)) {
                if (m > 1)
                    unfold_chunk(g, m, xn, s->col);
                else
                    eng_im2col(g, xn, s->col, P);
                col = s->col;
            }
            const float beta = n0 == 0 && !acc_dw ? 0.0f : 1.0f;
            eng_sgemm(false, true, OC, K, m * P, 1.0f, dyc, m * P, col, m * P, beta, dw, K);
        }
        if (!dx)
            continue;
        float *dxn = dx + n0 * in; /* [m, IC, IH, IW] */
        if (m == 1 && is_pointwise(g)) {
            /* dx [IC, P] (+)= w^T [IC, OC] * dy [OC, P] */
            eng_sgemm(true, false, K, P, OC, 1.0f, w, K, dyn, P, acc_dx ? 1.0f : 0.0f, dxn, P);
            continue;
        }
        /* col [K, m*P] = w^T [K, OC] * dyc (the weight GEMM is done with the unfolded x) */
        eng_sgemm(true, false, K, m * P, OC, 1.0f, w, K, dyc, m * P, 0.0f, s->col, m * P);
        for (size_t i = 0; i < m; i++) /* _set: no zeroing pass over dx */
            if (acc_dx)
                eng_col2im(g, s->col + i * P, m * P, dxn + i * in);
            else
                eng_col2im_set(g, s->col + i * P, m * P, dxn + i * in);
    }
}

/* ---- operator-table entry ---------------------------------------------------------------- */

/* Images per GEMM: enough that one GEMM has about 512 output columns (small late-stage
 * feature maps otherwise make thin GEMMs; 1024, half the column matrix in cache as often,
 * measured 10-20% slower on resnet18's layer2.0.conv1 and downsample), never more than the
 * images of one part. Depends only on the geometry and the part size so that aux_size and
 * forward agree. */
static size_t conv_nb(const eng_conv2d_geom *g, size_t N)
{
    size_t P = g->OH * g->OW, nb = (512 + P - 1) / P;
    if (P >= 512) /* one image is a wide enough GEMM: write NCHW directly, no scatter copy */
        nb = 1;
    if (nb > N)
        nb = N;
    return nb ? nb : 1;
}

/* Parts the batch is split into (par.h): one per compute thread, at most one per image. */
static size_t conv_parts(size_t N)
{
    size_t T = eng_par_threads();
    return T < N ? T : (N ? N : 1);
}

/* Largest part of a batch of N split in T. */
static size_t part_max(size_t N, size_t T)
{
    return (N + T - 1) / T;
}

/* Geometry from cfg and the per-sample input shape [IC, IH, IW] (validated by setup). */
static eng_conv2d_geom conv_geom(const eng_layer *l)
{
    eng_conv2d_geom g = {0};
    int rc = eng_conv2d_geom_init(
        &g, l->cfg.conv.IC, l->in_shape[1], l->in_shape[2], l->cfg.conv.OC, l->cfg.conv.KH,
        l->cfg.conv.KW, l->cfg.conv.stride, l->cfg.conv.stride, l->cfg.conv.pad, l->cfg.conv.pad);
    ENG_ASSERT(rc == 0);
    return g;
}

static int conv_setup(eng_layer *l, eng_error *err)
{
    eng_conv2d_geom g;
    if (l->in_ndim != 3 || l->in_shape[0] != l->cfg.conv.IC)
        return eng_err_set(err, ENG_ESHAPE, NULL,
                           "layer %s: conv2d expects input [%zu, H, W], got %zu dims (C = %zu)",
                           l->name, l->cfg.conv.IC, l->in_ndim, l->in_shape[0]);
    int rc = eng_conv2d_geom_init(
        &g, l->cfg.conv.IC, l->in_shape[1], l->in_shape[2], l->cfg.conv.OC, l->cfg.conv.KH,
        l->cfg.conv.KW, l->cfg.conv.stride, l->cfg.conv.stride, l->cfg.conv.pad, l->cfg.conv.pad);
    if (rc)
        return eng_err_set(err, rc, NULL,
                           "layer %s: conv2d %zux%zu stride %zu pad %zu does not fit a %zux%zu "
                           "input (or a size is 0)",
                           l->name, l->cfg.conv.KH, l->cfg.conv.KW, l->cfg.conv.stride,
                           l->cfg.conv.pad, l->in_shape[1], l->in_shape[2]);
    l->out_ndim = 3;
    l->out_shape[0] = g.OC;
    l->out_shape[1] = g.OH;
    l->out_shape[2] = g.OW;
    l->out_size = g.OC * g.OH * g.OW;
    return 0;
}

static size_t conv_n_params(const eng_layer *l)
{
    return l->cfg.conv.bias ? 2 : 1;
}

static void conv_param_info(const eng_layer *l, size_t i, eng_param_info *info)
{
    memset(info, 0, sizeof(*info));
    if (i == 0) {
        strcpy(info->suffix, "weight");
        info->ndim = 4;
        info->shape[0] = l->cfg.conv.OC;
        info->shape[1] = l->cfg.conv.IC;
        info->shape[2] = l->cfg.conv.KH;
        info->shape[3] = l->cfg.conv.KW;
    } else {
        strcpy(info->suffix, "bias");
        info->ndim = 1;
        info->shape[0] = l->cfg.conv.OC;
        info->no_wd = true;
    }
}

/* PyTorch's nn.Conv2d default: kaiming_uniform(a=sqrt(5)), i.e. U(-b, b) with
 * b = 1/sqrt(fan_in), fan_in = IC*KH*KW; the bias uses the same bound. (Architectures that
 * want torchvision's kaiming_normal(fan_out) overwrite this.) */
static void conv_init(eng_layer *l, eng_rng *rng)
{
    size_t K = l->cfg.conv.IC * l->cfg.conv.KH * l->cfg.conv.KW, OC = l->cfg.conv.OC;
    float bound = 1.0f / sqrtf((float)K);
    for (size_t i = 0; i < OC * K; i++)
        l->param[0][i] = (2.0f * eng_rng_uniform(rng) - 1.0f) * bound;
    if (l->cfg.conv.bias)
        for (size_t i = 0; i < OC; i++)
            l->param[1][i] = (2.0f * eng_rng_uniform(rng) - 1.0f) * bound;
}

/* Winograd F(2x2, 3x3) (winograd.h) for the 3x3 stride-1 padding-1 convolutions with
 * enough channels for its 16 GEMMs of K = IC (forward) or K = OC (input gradient), and
 * OC x IC outputs (weight gradient), to be efficient, on images of at least 6x6 (a 4x4 or 2x2 map
 * is one to four tiles, where the weight transform, 16*OC*IC floats per call, costs more than it
 * saves: resnet18's last stages at 64x64 inputs); the stem (IC = 1 or 3) stays with im2col. */
static bool use_wino(const eng_conv2d_geom *g)
{
    return eng_wino_applies(g) && g->IC >= 8 && g->OC >= 8 && g->OH >= 6 && g->OW >= 6;
}

/* The Winograd variant (winograd.h): F(4x4, 3x3) where it needs fewer products. */
static size_t wino_t(const eng_conv2d_geom *g)
{
    return eng_wino_pick(g->OH, g->OW);
}

/* aux, for T = conv_parts(N) parts of at most Np = ceil(N/T) images, nb = conv_nb(Np):
 *   T x max(col [K, nb*P] + tmp [OC, nb*P],   per-part scratch: im2col (everything
 *           Winograd V + M + dU [E, OC, IC])   without Winograd) or Winograd
 *   (T-1) x dw [OC, K]                        weight-gradient partial sums of parts 1..T-1
 *   U [E, OC, IC]                             Winograd weights (E = 16 or 36), when used */
static size_t part_floats(const eng_conv2d_geom *g, size_t nb, size_t nbw)
{
    size_t f = eng_conv2d_col_floats(g, nb) + eng_conv2d_tmp_floats(g, nb);
    if (use_wino(g)) { /* forward and input gradient need less than the weight gradient */
        size_t w = eng_wino_wgrad_scratch_floats_t(wino_t(g), g->IC, g->OC, g->OH, g->OW, nbw);
        f = w > f ? w : f;
    }
    return f;
}

/* Per-tap GEMMs over the whole batch (conv_tap.h) for outputs of at most 4x4 (resnet18's
 * layer3/layer4 3x3 convolutions at 64x64 inputs), where im2col multiplies mostly padding
 * (on 2x2 maps 20 of 36 products) and its per-image GEMMs are too thin. Measured faster
 * from 2 images on (CPU time, 2 threads: layer4 3x3 forward 2.1 -> 1.2 ms at N = 2) and
 * slower for a single image, which im2col runs on one thread. Monotone in N, so that aux
 * sized for the largest batch covers every smaller one. Forward, input and weight
 * gradients. */
static bool use_tap(const eng_conv2d_geom *g, size_t N)
{
    return !use_wino(g) && g->KH * g->KW > 1 && g->OH * g->OW <= 16 && N >= 2;
}

/* The parts' scratch for a batch of N (the layout below). */
static size_t parts_floats(const eng_conv2d_geom *g, size_t N)
{
    size_t T = conv_parts(N), Np = part_max(N, T);
    size_t nb = conv_nb(g, Np), nbw = eng_wino_chunk_t(wino_t(g), g->IC, g->OC, g->OH, g->OW, Np);
    return T * part_floats(g, nb, nbw) + (T - 1) * g->OC * eng_conv2d_kdim(g) +
           (use_wino(g) ? eng_wino_npos(wino_t(g)) * g->OC * g->IC : 0);
}

/* The scratch (scratch_size), enough for every batch up to N: parts_floats grows with N, and
 * where the tap kernel runs (every batch from 2 images on) the parts run only for a single
 * image. */
static size_t conv_scratch_size(const eng_layer *l, size_t N)
{
    eng_conv2d_geom g = conv_geom(l);
    if (!use_tap(&g, N))
        return parts_floats(&g, N);
    size_t f = parts_floats(&g, 1), tap = eng_convtap_scratch_floats(&g, N);
    return f > tap ? f : tap;
}

/* The Winograd weights of a frozen weight, kept from call to call (aux before the scratch):
 *   header [16]: forward U valid, input-gradient U valid, E, OC, IC (as floats) |
 *   copy of w [OC, IC, 3, 3] | forward U [E][OC][IC] | input-gradient U [E][IC][OC].
 * While the weight trains (it changes every step) the cache is not used nor touched. A
 * frozen weight (fastai's freeze, inference) gives the same U every step: transforming it
 * cost about 0.6 ms per 128x128 kernel and direction. A U is valid while the header
 * matches and the copy equals w bit for bit (checked on every call: loading weights,
 * unfreezing and training, or a reused arena invalidate it), so stale weights are never
 * used. */
#define CACHE_HEAD 16

static size_t cache_floats(const eng_conv2d_geom *g)
{
    if (!use_wino(g))
        return 0;
    return CACHE_HEAD + g->OC * g->IC * 9 + 2 * eng_wino_npos(wino_t(g)) * g->OC * g->IC;
}

static size_t conv_aux_size(const eng_layer *l, size_t N)
{
    eng_conv2d_geom g = conv_geom(l);
    return cache_floats(&g) + conv_scratch_size(l, N);
}

/* The scratch: the trainer's shared region, else aux after the cache. */
static float *conv_scratch(const eng_layer *l)
{
    if (l->scratch)
        return l->scratch;
    eng_conv2d_geom g = conv_geom(l);
    return l->aux + cache_floats(&g);
}

/* The cached U of one direction (transposed: the input gradient's) when the layer's weight is
 * frozen, with *valid saying whether it holds the current weights' transform (if not, the
 * caller computes it there and sets *valid = 1); NULL when not cached. */
static float *cached_u(const eng_layer *l, const eng_conv2d_geom *g, bool transposed, float **valid)
{
    if (l->trainable[0] || !use_wino(g) || !l->aux)
        return NULL;
    const size_t E = eng_wino_npos(wino_t(g)), n = g->OC * g->IC * 9;
    float *h = l->aux, *wc = h + CACHE_HEAD;
    const float *w = l->param[0];
    if (h[2] != (float)E || h[3] != (float)g->OC || h[4] != (float)g->IC ||
        memcmp(wc, w, n * sizeof(float)) != 0) {
        memcpy(wc, w, n * sizeof(float));
        h[0] = h[1] = 0.0f;
        h[2] = (float)E;
        h[3] = (float)g->OC;
        h[4] = (float)g->IC;
    }
    *valid = h + (transposed ? 1 : 0);
    return wc + n + (transposed ? E * g->OC * g->IC : 0);
}

typedef struct conv_job {
    const eng_layer *l;
    eng_conv2d_geom g;
    size_t N, T, nb, nbw;
    bool wino;
    float *base; /* conv_scratch */
    float *U;    /* Winograd weights, prepared before the parts run */
    const float *x, *dy;
    float *y, *dx, *dw;
    bool want_dw;
    const eng_epilogue *epi; /* forward: on each output plane, or NULL */
} conv_job;

static float *part_base(const conv_job *j, size_t p)
{
    return j->base + p * part_floats(&j->g, j->nb, j->nbw);
}

static eng_conv2d_scratch part_scratch(const conv_job *j, size_t p)
{
    float *base = part_base(j, p);
    return (eng_conv2d_scratch){.col = base,
                                .tmp =
                                    j->nb > 1 ? base + eng_conv2d_col_floats(&j->g, j->nb) : NULL,
                                .nb = j->nb};
}

static float *dw_partial(const conv_job *j, size_t p)
{
    return j->base + j->T * part_floats(&j->g, j->nb, j->nbw) +
           (p - 1) * j->g.OC * eng_conv2d_kdim(&j->g);
}

static conv_job conv_job_make(const eng_layer *l, size_t N)
{
    conv_job j = {.l = l, .g = conv_geom(l), .N = N, .base = conv_scratch(l)};
    j.T = conv_parts(N);
    j.nb = conv_nb(&j.g, part_max(N, j.T));
    j.nbw = eng_wino_chunk_t(wino_t(&j.g), j.g.IC, j.g.OC, j.g.OH, j.g.OW, part_max(N, j.T));
    j.wino = use_wino(&j.g);
    if (j.wino)
        j.U = j.base + j.T * part_floats(&j.g, j.nb, j.nbw) +
              (j.T - 1) * j.g.OC * eng_conv2d_kdim(&j.g);
    return j;
}

static void forward_part(void *ctx, size_t p, size_t T)
{
    const conv_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->N, p, T, &lo, &hi);
    const eng_conv2d_geom *g = &j->g;
    const size_t in = g->IC * g->IH * g->IW, P = g->OH * g->OW, out = g->OC * P;
    const float *b = j->l->cfg.conv.bias ? j->l->param[1] : NULL;
    if (!j->wino) {
        eng_conv2d_scratch s = part_scratch(j, p);
        eng_conv2d_forward_epi(g, hi - lo, j->x + lo * in, j->l->param[0], b, j->y + lo * out, &s,
                               j->epi);
        return;
    }
    /* the epilogue in the output transform; with a bias, after it in the bias pass */
    const bool epi = j->epi && !b;
    eng_wino_conv_relu_t(wino_t(g), g->IC, g->OC, g->OH, g->OW, hi - lo, j->x + lo * in, j->U,
                         j->y + lo * out, part_base(j, p), j->nbw, epi ? j->epi->scale : NULL,
                         epi ? j->epi->shift : NULL);
    if (b)
        for (size_t n = lo; n < hi; n++)
            for (size_t oc = 0; oc < g->OC; oc++) {
                float *yp = j->y + n * out + oc * P;
                for (size_t i = 0; i < P; i++)
                    yp[i] += b[oc];
                if (j->epi)
                    eng_epilogue_plane(j->epi, oc, yp, yp, P);
            }
}

/* One eng_stats_gemm per chunk GEMM, as the kernels issue them: M x (images*P) x K. */
static void conv_count(const conv_job *j, size_t M, size_t K, bool weight)
{
    size_t P = j->g.OH * j->g.OW;
    for (size_t p = 0; p < j->T; p++) {
        size_t lo, hi;
        eng_par_range(j->N, p, j->T, &lo, &hi);
        for (size_t n0 = lo; n0 < hi; n0 += j->nb) {
            size_t cols = (hi - n0 < j->nb ? hi - n0 : j->nb) * P;
            if (weight)
                eng_stats_gemm(j->l->stats, M, K, cols);
            else
                eng_stats_gemm(j->l->stats, M, cols, K);
        }
    }
}

/* Output channels [lo, hi) of the forward Winograd weights U [E][OC][IC]: transformed into
 * the part's scratch (the Winograd weight-gradient scratch holds E*OC*IC floats) and copied
 * into place, so the transform no longer runs on one thread while the others wait. */
static void wino_weights_part(void *ctx, size_t p, size_t T)
{
    const conv_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->g.OC, p, T, &lo, &hi);
    const size_t IC = j->g.IC, OC = j->g.OC, rows = hi - lo;
    if (rows == 0)
        return;
    ENG_ASSERT(eng_wino_npos(wino_t(&j->g)) * rows * IC <= part_floats(&j->g, j->nb, j->nbw));
    const size_t E = eng_wino_npos(wino_t(&j->g));
    float *tmp = part_base(j, p); /* [E][rows][IC] */
    eng_wino_weights_t(wino_t(&j->g), rows, IC, j->l->param[0] + lo * IC * 9, false, tmp);
    for (size_t rc = 0; rc < E; rc++)
        memcpy(j->U + (rc * OC + lo) * IC, tmp + rc * rows * IC, rows * IC * sizeof(float));
}

/* The input-gradient Winograd weights U [E][IC][OC] (the transposed, rotated kernel), split
 * the same way: the layer's output channels [lo, hi), which are this U's input channels
 * (its columns), transformed into the part's scratch and copied into place. */
static void wino_weights_t_part(void *ctx, size_t p, size_t T)
{
    const conv_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->g.OC, p, T, &lo, &hi);
    const size_t IC = j->g.IC, OC = j->g.OC, cols = hi - lo;
    if (cols == 0)
        return;
    const size_t E = eng_wino_npos(wino_t(&j->g));
    ENG_ASSERT(E * cols * IC <= part_floats(&j->g, j->nb, j->nbw));
    float *tmp = part_base(j, p); /* [E][IC][cols] */
    eng_wino_weights_t(wino_t(&j->g), cols, IC, j->l->param[0] + lo * IC * 9, true, tmp);
    for (size_t r = 0; r < E * IC; r++)
        memcpy(j->U + r * OC + lo, tmp + r * cols, cols * sizeof(float));
}

static void conv_forward(eng_layer *l, const eng_fwd_args *a)
{
    conv_job j = conv_job_make(l, a->N);
    j.x = a->x;
    j.y = a->y;
    j.epi = a->epi;
    if (use_tap(&j.g, a->N)) {
        eng_convtap_forward(&j.g, a->N, a->x, l->param[0], l->cfg.conv.bias ? l->param[1] : NULL,
                            a->y, j.base);
        const size_t P = j.g.OH * j.g.OW; /* the tap kernel's maps are small: a pass after it */
        for (size_t n = 0; a->epi && n < a->N; n++)
            for (size_t oc = 0; oc < j.g.OC; oc++)
                eng_epilogue_plane(a->epi, oc, a->y + (n * j.g.OC + oc) * P,
                                   a->y + (n * j.g.OC + oc) * P, P);
    } else {
        float *valid = NULL, *U = j.wino ? cached_u(l, &j.g, false, &valid) : NULL;
        if (U)
            j.U = U;
        if (j.wino && (!U || *valid != 1.0f))
            eng_par_run(j.T, wino_weights_part, &j);
        if (U)
            *valid = 1.0f;
        eng_par_run(j.T, forward_part, &j);
    }
    /* Winograd does fewer multiplications; the counters keep the direct convolution's */
    conv_count(&j, j.g.OC, eng_conv2d_kdim(&j.g), false);
}

static void backward_part(void *ctx, size_t p, size_t T)
{
    const conv_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->N, p, T, &lo, &hi);
    eng_conv2d_scratch s = part_scratch(j, p);
    const size_t in = j->g.IC * j->g.IH * j->g.IW, out = j->g.OC * j->g.OH * j->g.OW;
    /* part 0 writes the weight gradient, the others partial sums (reduced later) */
    float *dw = j->want_dw ? (p == 0 ? j->dw : dw_partial(j, p)) : NULL;
    float *dx = j->dx ? j->dx + lo * in : NULL;
    if (!j->wino) { /* both gradients in one pass over the chunks */
        eng_conv2d_backward_weight_input(&j->g, hi - lo, j->x + lo * in, j->l->param[0],
                                         j->dy + lo * out, dw, false, dx, false, &s);
        return;
    }
    if (dw)
        eng_wino_wgrad_t(wino_t(&j->g), j->g.IC, j->g.OC, j->g.OH, j->g.OW, hi - lo, j->x + lo * in,
                         j->dy + lo * out, dw, false, part_base(j, p), j->nbw);
    if (dx) /* the transposed convolution, from the same scratch after dw */
        eng_wino_conv_t(wino_t(&j->g), j->g.OC, j->g.IC, j->g.OH, j->g.OW, hi - lo,
                        j->dy + lo * out, j->U, dx, false, part_base(j, p), j->nbw);
}

static void conv_backward(eng_layer *l, const eng_bwd_args *a)
{
    conv_job j = conv_job_make(l, a->N);
    j.x = a->x;
    j.dy = a->dy;
    const bool tap = use_tap(&j.g, a->N); /* both gradients from conv_tap.h, no parts */
    j.dx = tap ? NULL : a->dx;
    j.want_dw = !tap && l->trainable[0];
    j.dw = l->grad[0];
    if (j.wino && j.dx) {
        float *valid = NULL, *U = cached_u(l, &j.g, true, &valid);
        if (U)
            j.U = U;
        if (!U || *valid != 1.0f)
            eng_par_run(j.T, wino_weights_t_part, &j);
        if (U)
            *valid = 1.0f;
    }
    if (j.want_dw || j.dx)
        eng_par_run(j.T, backward_part, &j);
    if (j.want_dw) {
        /* fixed-order reduction of the partial sums: results do not depend on timing */
        size_t n = j.g.OC * eng_conv2d_kdim(&j.g);
        for (size_t p = 1; p < j.T; p++) {
            const float *part = dw_partial(&j, p);
            for (size_t i = 0; i < n; i++)
                j.dw[i] += part[i];
        }
        conv_count(&j, j.g.OC, eng_conv2d_kdim(&j.g), true);
    }
    if (l->cfg.conv.bias && l->trainable[1])
        eng_conv2d_backward_bias(&j.g, a->N, a->dy, l->grad[1], false);
    if (tap && (l->trainable[0] || a->dx)) {
        eng_convtap_backward(&j.g, a->N, a->x, l->param[0], a->dy,
                             l->trainable[0] ? l->grad[0] : NULL, false, a->dx, false, j.base);
        if (l->trainable[0])
            conv_count(&j, j.g.OC, eng_conv2d_kdim(&j.g), true);
    }
    if (a->dx)
        conv_count(&j, eng_conv2d_kdim(&j.g), j.g.OC, false);
}

const eng_layer_ops eng_layer_conv2d = {
    .kind = "conv2d",
    .setup = conv_setup,
    .n_params = conv_n_params,
    .param_info = conv_param_info,
    .init = conv_init,
    .aux_size = conv_aux_size,
    .scratch_size = conv_scratch_size,
    .forward = conv_forward,
    .backward = conv_backward,
};
