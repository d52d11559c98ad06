/*
 * layer_pool.c: max, average, adaptive average, adaptive max and adaptive concat pooling
 * over NCHW tensors, forward and backward.
 *
 * DESIGN: every kernel works plane by plane (one (n, c) pair at a time, [IH, IW] in and
 * [OH, OW] out), with the window of each output clamped to the image once, so the inner
 * loops have no bounds tests. Max pooling stores the flat in-plane index of each maximum so
 * the backward pass is a scatter-add and never compares floats again. Adaptive windows use
 * PyTorch's start = floor(i*In/Out), end = ceil((i+1)*In/Out).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine.h"
#include "kernels.h"
#include "layers.h"
#include "par.h"
#include "util.h"

int eng_pool2d_geom_init(eng_pool2d_geom *g, size_t C, size_t IH, size_t IW, size_t KH, size_t KW,
                         size_t SH, size_t SW, size_t PH, size_t PW)
{
    if (!g || !C || !IH || !IW || !KH || !KW || !SH || !SW)
        return ENG_EINVAL;
    /* int32 indices address one plane. */
    if (IH > INT32_MAX / IW || KH > INT32_MAX || KW > INT32_MAX)
        return ENG_EINVAL;
    if (2 * PH > KH || 2 * PW > KW)
        return ENG_EINVAL;
    if (KH > IH + 2 * PH || KW > IW + 2 * PW)
        return ENG_ESHAPE;
    *g = (eng_pool2d_geom){.C = C,
                           .IH = IH,
                           .IW = IW,
                           .KH = KH,
                           .KW = KW,
                           .SH = SH,
                           .SW = SW,
                           .PH = PH,
                           .PW = PW,
                           .OH = (IH + 2 * PH - KH) / SH + 1,
                           .OW = (IW + 2 * PW - KW) / SW + 1};
    return 0;
}

/* Window of output o clamped to the image: [*lo, *hi). The unclamped window is
 * [o*S - P, o*S - P + K); *full is its length clipped to the padded input (for
 * count_include_pad, PyTorch divides by the window size clipped to In + P on the far side). */
static void window(size_t o, size_t K, size_t S, size_t P, size_t In, size_t *lo, size_t *hi,
                   size_t *full)
{
    size_t start = o * S;   /* in padded coordinates */
    size_t end = start + K; /* exclusive, padded coordinates */
    if (end > In + 2 * P)
        end = In + 2 * P;
    *full = end - start;
    *lo = start > P ? start - P : 0;
    *hi = end > P ? end - P : 0;
    if (*hi > In)
        *hi = In;
}

/* Adaptive window of output i: [floor(i*In/Out), ceil((i+1)*In/Out)). */
static void ada_window(size_t i, size_t In, size_t Out, size_t *lo, size_t *hi)
{
    *lo = i * In / Out;
    *hi = ((i + 1) * In + Out - 1) / Out;
}

static void set_or_add(float *dst, size_t n, bool accumulate)
{
    if (!accumulate)
        memset(dst, 0, n * sizeof(float));
}

/* ---- max pooling ------------------------------------------------------------------------- */

/* Max over rows [h0, h1) x columns [w0, w1) of plane x [IH, IW] (non-empty window). */
static float plane_max(const float *x, size_t IW, size_t h0, size_t h1, size_t w0, size_t w1,
                       int32_t *arg)
{
    size_t best = h0 * IW + w0;
    float m = x[best];
    for (size_t ih = h0; ih < h1; ih++)
        for (size_t iw = w0; iw < w1; iw++) {
            float v = x[ih * IW + iw];
            /* NaN propagates like PyTorch: once the max is NaN it stays */
            if (v > m || (isnan(v) && !isnan(m))) {
                m = v;
                best = ih * IW + iw;
            }
        }
    *arg = (int32_t)best;
    return m;
}

/* Output columns [*lo, *hi) whose window lies inside the image width (no clamping). */
static void interior_cols(const eng_pool2d_geom *g, size_t *lo, size_t *hi)
{
    size_t l = (g->PW + g->SW - 1) / g->SW; /* ow*SW >= PW */
    size_t h = g->IW + g->PW >= g->KW ? (g->IW + g->PW - g->KW) / g->SW + 1 : 0;
    if (h > g->OW)
        h = g->OW;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* Output row oh of one plane, for the columns [c0, c1) whose windows are not clipped in
 * width: the window is scanned in plane_max's order (rows, then columns) with every column
 * of the row range updated together, so the loop over ow has no branches and vectorises;
 * the update rule is plane_max's (strictly greater, or the first NaN). */
static void max_row_interior(const eng_pool2d_geom *g, const float *xp, size_t h0, size_t h1,
                             size_t c0, size_t c1, float *yr, int32_t *ir)
{
    const size_t S = g->SW, P = g->PW, IW = g->IW;
    for (size_t ow = c0; ow < c1; ow++) {
        yr[ow] = -INFINITY;
        ir[ow] = (int32_t)(h0 * IW + ow * S - P);
    }
    for (size_t ih = h0; ih < h1; ih++)
        for (size_t kw = 0; kw < g->KW; kw++) {
            /* column ow reads x[ih][ow*S + kw - P] = src[(ow - c0)*S]; c0*S >= P */
            const size_t first = ih * IW + c0 * S + kw - P;
            const float *src = xp + first;
            for (size_t ow = c0; ow < c1; ow++) {
                float v = src[(ow - c0) * S], m = yr[ow];
                int take = (v > m) | ((v != v) & (m == m));
                yr[ow] = take ? v : m;
                ir[ow] = take ? (int32_t)(first + (ow - c0) * S) : ir[ow];
            }
        }
}

/* Output ow of row oh through plane_max (a window clipped in width). */
static void max_one(const eng_pool2d_geom *g, const float *xp, size_t h0, size_t h1, size_t ow,
                    float *yr, int32_t *ir)
{
    size_t w0, w1, fw;
    window(ow, g->KW, g->SW, g->PW, g->IW, &w0, &w1, &fw);
    yr[ow] = plane_max(xp, g->IW, h0, h1, w0, w1, &ir[ow]);
}

/* The max-pooling forward loops are also built for AVX2 on x86-64 with GCC, picked at load
 * time (ifunc), as im2col.c's: compares and selects in a fixed order, the same results. */

/* Largest IH*OW of a plane the row-max pass below keeps on the stack. */
#define FLAT_MAX 4096

/* A plane whose rows are exactly OW*SW wide (resnet's 3x3/2 pooling of even maps): output
 * column ow of row ih starts at flat index (ih*OW + ow)*SW - PW, so the maxima over each
 * input row's window columns are one long strided pass over the plane, j = ih*OW + ow
 * (entries of clipped columns read a neighbouring row and are never used); then every output
 * takes the maximum of those row maxima over its window rows. Both passes scan in plane_max's
 * order (rows, then columns within a row) with its update rule, so the results and indices
 * are plane_max's; the clipped border columns go through plane_max itself. */
ENG_SIMD_AVX2 static void max_plane_flat(const eng_pool2d_geom *g, size_t c0, size_t c1,
                                         const float *xp, float *yp, int32_t *ip)
{
    float hm[FLAT_MAX];
    int32_t hi[FLAT_MAX];
    const size_t S = g->SW, P = g->PW, OW = g->OW;
    const size_t j0 = c0, j1 = (g->IH - 1) * OW + c1; /* every j a used output reads */
    for (size_t j = j0; j < j1; j++) {
        hm[j] = -INFINITY;
        hi[j] = (int32_t)(j * S - P);
    }
    for (size_t kw = 0; kw < g->KW; kw++) {
        const float *src = xp + j0 * S + kw - P; /* src[(j - j0)*S] = xp[j*S + kw - P] */
        const int32_t first = (int32_t)(j0 * S + kw - P);
        for (size_t j = j0; j < j1; j++) {
            float v = src[(j - j0) * S], m = hm[j];
            int32_t vi = first + (int32_t)((j - j0) * S), mi = hi[j];
            int take = (v > m) | ((v != v) & (m == m));
            hm[j] = take ? v : m;
            hi[j] = take ? vi : mi;
        }
    }
    for (size_t oh = 0; oh < g->OH; oh++) {
        size_t h0, h1, fh;
        window(oh, g->KH, g->SH, g->PH, g->IH, &h0, &h1, &fh);
        float *yr = yp + oh * OW;
        int32_t *ir = ip + oh * OW;
        for (size_t ow = c0; ow < c1; ow++) {
            yr[ow] = -INFINITY;
            ir[ow] = hi[h0 * OW + ow];
        }
        for (size_t ih = h0; ih < h1; ih++) {
            const float *hr = hm + ih * OW;
            const int32_t *hir = hi + ih * OW;
            for (size_t ow = c0; ow < c1; ow++) {
                float v = hr[ow], m = yr[ow];
                int32_t vi = hir[ow], mi = ir[ow];
                int take = (v > m) | ((v != v) & (m == m));
                yr[ow] = take ? v : m;
                ir[ow] = take ? vi : mi;
            }
        }
        for (size_t ow = 0; ow < c0; ow++)
            max_one(g, xp, h0, h1, ow, yr, ir);
        for (size_t ow = c1; ow < OW; ow++)
            max_one(g, xp, h0, h1, ow, yr, ir);
    }
}

void eng_maxpool2d_forward(const eng_pool2d_geom *g, size_t N, const float *x, float *y,
                           int32_t *idx)
{
    const size_t IP = g->IH * g->IW, OP = g->OH * g->OW;
    size_t c0, c1;
    interior_cols(g, &c0, &c1);
    const bool flat = g->IW == g->OW * g->SW && g->IH * g->OW <= FLAT_MAX && c1 > c0;
    for (size_t pl = 0; pl < N * g->C; pl++) {
        const float *xp = x + pl * IP; /* [IH, IW] */
        float *yp = y + pl * OP;       /* [OH, OW] */
        int32_t *ip = idx + pl * OP;   /* [OH, OW] */
        if (flat) {
            max_plane_flat(g, c0, c1, xp, yp, ip);
            continue;
        }
        for (size_t oh = 0; oh < g->OH; oh++) {
            size_t h0, h1, fh;
            window(oh, g->KH, g->SH, g->PH, g->IH, &h0, &h1, &fh);
            float *yr = yp + oh * g->OW;
            int32_t *ir = ip + oh * g->OW;
            for (size_t ow = 0; ow < c0; ow++)
                max_one(g, xp, h0, h1, ow, yr, ir);
            max_row_interior(g, xp, h0, h1, c0, c1, yr, ir);
            for (size_t ow = c1; ow < g->OW; ow++)
                max_one(g, xp, h0, h1, ow, yr, ir);
        }
    }
}

/* dx planes [P_in] (+)= dy planes [P_out] scattered through idx. */
static void scatter_planes(size_t planes, size_t IP, size_t OP, const float *dy, const int32_t *idx,
                           float *dx, bool accumulate)
{
    set_or_add(dx, planes * IP, accumulate);
    for (size_t pl = 0; pl < planes; pl++) {
        const float *gp = dy + pl * OP;
        const int32_t *ip = idx + pl * OP;
        float *dxp = dx + pl * IP;
        for (size_t o = 0; o < OP; o++)
            dxp[ip[o]] += gp[o];
    }
}

void eng_maxpool2d_backward(const eng_pool2d_geom *g, size_t N, const float *dy, const int32_t *idx,
                            float *dx, bool accumulate)
{
    scatter_planes(N * g->C, g->IH * g->IW, g->OH * g->OW, dy, idx, dx, accumulate);
}

/* ---- average pooling --------------------------------------------------------------------- */

void eng_avgpool2d_forward(const eng_pool2d_geom *g, size_t N, bool count_include_pad,
                           const float *x, float *y)
{
    const size_t IP = g->IH * g->IW, OP = g->OH * g->OW;
    for (size_t pl = 0; pl < N * g->C; pl++) {
        const float *xp = x + pl * IP;
        float *yp = y + pl * OP;
        for (size_t oh = 0; oh < g->OH; oh++) {
            size_t h0, h1, fh;
            window(oh, g->KH, g->SH, g->PH, g->IH, &h0, &h1, &fh);
            for (size_t ow = 0; ow < g->OW; ow++) {
                size_t w0, w1, fw;
                window(ow, g->KW, g->SW, g->PW, g->IW, &w0, &w1, &fw);
                float s = 0.0f;
                for (size_t ih = h0; ih < h1; ih++)
                    for (size_t iw = w0; iw < w1; iw++)
                        s += xp[ih * g->IW + iw];
                size_t cnt = count_include_pad ? fh * fw : (h1 - h0) * (w1 - w0);
                yp[oh * g->OW + ow] = s / (float)cnt;
            }
        }
    }
}

void eng_avgpool2d_backward(const eng_pool2d_geom *g, size_t N, bool count_include_pad,
                            const float *dy, float *dx, bool accumulate)
{
    const size_t IP = g->IH * g->IW, OP = g->OH * g->OW;
    set_or_add(dx, N * g->C * IP, accumulate);
    for (size_t pl = 0; pl < N * g->C; pl++) {
        const float *gp = dy + pl * OP;
        float *dxp = dx + pl * IP;
        for (size_t oh = 0; oh < g->OH; oh++) {
            size_t h0, h1, fh;
            window(oh, g->KH, g->SH, g->PH, g->IH, &h0, &h1, &fh);
            for (size_t ow = 0; ow < g->OW; ow++) {
                size_t w0, w1, fw;
                window(ow, g->KW, g->SW, g->PW, g->IW, &w0, &w1, &fw);
                size_t cnt = count_include_pad ? fh * fw : (h1 - h0) * (w1 - w0);
                const float v = gp[oh * g->OW + ow] / (float)cnt;
                for (size_t ih = h0; ih < h1; ih++)
                    for (size_t iw = w0; iw < w1; iw++)
                        dxp[ih * g->IW + iw] += v;
            }
        }
    }
}

/* ---- adaptive pooling -------------------------------------------------------------------- */

/* One plane: x [IH, IW] -> y [OH, OW]. */
/* sum(x[0..n)) in 8 interleaved partial sums added pairwise: a loop the compiler vectorises
 * (one running sum it may not reorder waits on every add: M1's global pooling of 7x7 planes
 * took 0.34 ms per batch of 128, 2.4% of an inference step). */
ENG_SIMD_AVX2 static float lane_sum(const float *x, size_t n)
{
    float p[8] = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (size_t i = 0; i < 8; i++)
            p[i] += x[k + i];
    for (size_t i = 0; k < n; k++, i++)
        p[i] += x[k];
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

static void ada_avg_plane(const eng_adapool_dims *d, const float *x, float *y)
{
    if (d->OH == 1 && d->OW == 1) { /* global pooling: one contiguous window */
        y[0] = lane_sum(x, d->IH * d->IW) / (float)(d->IH * d->IW);
        return;
    }
    for (size_t oh = 0; oh < d->OH; oh++) {
        size_t h0, h1;
        ada_window(oh, d->IH, d->OH, &h0, &h1);
        for (size_t ow = 0; ow < d->OW; ow++) {
            size_t w0, w1;
            ada_window(ow, d->IW, d->OW, &w0, &w1);
            float s = 0.0f;
            for (size_t ih = h0; ih < h1; ih++)
                for (size_t iw = w0; iw < w1; iw++)
                    s += x[ih * d->IW + iw];
            y[oh * d->OW + ow] = s / (float)((h1 - h0) * (w1 - w0));
        }
    }
}

/* One plane: dx [IH, IW] += spread of dy [OH, OW]. */
static void ada_avg_plane_back(const eng_adapool_dims *d, const float *dy, float *dx)
{
    for (size_t oh = 0; oh < d->OH; oh++) {
        size_t h0, h1;
        ada_window(oh, d->IH, d->OH, &h0, &h1);
        for (size_t ow = 0; ow < d->OW; ow++) {
            size_t w0, w1;
            ada_window(ow, d->IW, d->OW, &w0, &w1);
            const float v = dy[oh * d->OW + ow] / (float)((h1 - h0) * (w1 - w0));
            for (size_t ih = h0; ih < h1; ih++)
                for (size_t iw = w0; iw < w1; iw++)
                    dx[ih * d->IW + iw] += v;
        }
    }
}

static void ada_max_plane(const eng_adapool_dims *d, const float *x, float *y, int32_t *idx)
{
    for (size_t oh = 0; oh < d->OH; oh++) {
        size_t h0, h1;
        ada_window(oh, d->IH, d->OH, &h0, &h1);
        for (size_t ow = 0; ow < d->OW; ow++) {
            size_t w0, w1;
            ada_window(ow, d->IW, d->OW, &w0, &w1);
            y[oh * d->OW + ow] = plane_max(x, d->IW, h0, h1, w0, w1, &idx[oh * d->OW + ow]);
        }
    }
}

void eng_adaptive_avgpool2d_forward(const eng_adapool_dims *d, const float *x, float *y)
{
    const size_t IP = d->IH * d->IW, OP = d->OH * d->OW;
    for (size_t pl = 0; pl < d->N * d->C; pl++)
        ada_avg_plane(d, x + pl * IP, y + pl * OP);
}

/* Global pooling's backward: every element of plane pl gets dy[pl] / IP, written (or added)
 * in one pass instead of a zeroing pass and an adding one. */
ENG_SIMD_AVX2 static void ada_avg_global_back(size_t planes, size_t IP, const float *dy, float *dx,
                                              bool accumulate)
{
    for (size_t pl = 0; pl < planes; pl++) {
        const float v = dy[pl] / (float)IP;
        float *dxp = dx + pl * IP;
        if (accumulate)
            for (size_t s = 0; s < IP; s++)
                dxp[s] += v;
        else
            for (size_t s = 0; s < IP; s++)
                dxp[s] = v;
    }
}

void eng_adaptive_avgpool2d_backward(const eng_adapool_dims *d, const float *dy, float *dx,
                                     bool accumulate)
{
    const size_t IP = d->IH * d->IW, OP = d->OH * d->OW;
    if (OP == 1) {
        ada_avg_global_back(d->N * d->C, IP, dy, dx, accumulate);
        return;
    }
    set_or_add(dx, d->N * d->C * IP, accumulate);
    for (size_t pl = 0; pl < d->N * d->C; pl++)
        ada_avg_plane_back(d, dy + pl * OP, dx + pl * IP);
}

void eng_adaptive_maxpool2d_forward(const eng_adapool_dims *d, const float *x, float *y,
                                    int32_t *idx)
{
    const size_t IP = d->IH * d->IW, OP = d->OH * d->OW;
    for (size_t pl = 0; pl < d->N * d->C; pl++)
        ada_max_plane(d, x + pl * IP, y + pl * OP, idx + pl * OP);
}

void eng_adaptive_maxpool2d_backward(const eng_adapool_dims *d, const float *dy, const int32_t *idx,
                                     float *dx, bool accumulate)
{
    scatter_planes(d->N * d->C, d->IH * d->IW, d->OH * d->OW, dy, idx, dx, accumulate);
}

void eng_adaptive_concatpool2d_forward(const eng_adapool_dims *d, const float *x, float *y,
                                       int32_t *idx)
{
    const size_t C = d->C, IP = d->IH * d->IW, OP = d->OH * d->OW;
    for (size_t n = 0; n < d->N; n++)
        for (size_t c = 0; c < C; c++) {
            const float *xp = x + (n * C + c) * IP;
            ada_max_plane(d, xp, y + (n * 2 * C + c) * OP, idx + (n * C + c) * OP);
            ada_avg_plane(d, xp, y + (n * 2 * C + C + c) * OP);
        }
}

void eng_adaptive_concatpool2d_backward(const eng_adapool_dims *d, const float *dy,
                                        const int32_t *idx, float *dx, bool accumulate)
{
    const size_t C = d->C, IP = d->IH * d->IW, OP = d->OH * d->OW;
    set_or_add(dx, d->N * C * IP, accumulate);
    for (size_t n = 0; n < d->N; n++)
        for (size_t c = 0; c < C; c++) {
            float *dxp = dx + (n * C + c) * IP;
            const float *gmax = dy + (n * 2 * C + c) * OP;
            const int32_t *ip = idx + (n * C + c) * OP;
            for (size_t o = 0; o < OP; o++)
                dxp[ip[o]] += gmax[o];
            ada_avg_plane_back(d, dy + (n * 2 * C + C + c) * OP, dxp);
        }
}

/* ---- operator-table entries -------------------------------------------------------------- */

static int need_chw(const eng_layer *l, eng_error *err)
{
    if (l->in_ndim != 3)
        return eng_err_set(err, ENG_ESHAPE, NULL, "layer %s: %s expects an input [C, H, W]",
                           l->name, l->ops->kind);
    return 0;
}

static void set_out(eng_layer *l, size_t C, size_t H, size_t W)
{
    l->out_ndim = 3;
    l->out_shape[0] = C;
    l->out_shape[1] = H;
    l->out_shape[2] = W;
    l->out_size = C * H * W;
}

static eng_pool2d_geom pool_geom(const eng_layer *l)
{
    eng_pool2d_geom g = {0};
    int rc = eng_pool2d_geom_init(&g, l->in_shape[0], l->in_shape[1], l->in_shape[2],
                                  l->cfg.pool.KH, l->cfg.pool.KW, l->cfg.pool.stride,
                                  l->cfg.pool.stride, l->cfg.pool.pad, l->cfg.pool.pad);
    ENG_ASSERT(rc == 0);
    return g;
}

static int pool_setup(eng_layer *l, eng_error *err)
{
    eng_pool2d_geom g;
    int rc = need_chw(l, err);
    if (rc)
        return rc;
    rc = eng_pool2d_geom_init(&g, l->in_shape[0], l->in_shape[1], l->in_shape[2], l->cfg.pool.KH,
                              l->cfg.pool.KW, l->cfg.pool.stride, l->cfg.pool.stride,
                              l->cfg.pool.pad, l->cfg.pool.pad);
    if (rc)
        return eng_err_set(err, rc, NULL,
                           "layer %s: %s %zux%zu stride %zu pad %zu does not fit a %zux%zu input "
                           "(pad must be at most half the kernel, sizes non-zero)",
                           l->name, l->ops->kind, l->cfg.pool.KH, l->cfg.pool.KW,
                           l->cfg.pool.stride, l->cfg.pool.pad, l->in_shape[1], l->in_shape[2]);
    set_out(l, g.C, g.OH, g.OW);
    return 0;
}

/* aux: the int32 argmax index of every output */
static size_t maxpool_aux_size(const eng_layer *l, size_t N)
{
    return N * l->out_size;
}

/* Max pooling split over the compute threads by image ranges (par.h): images are
 * independent, so the split does not change the results. */
typedef struct maxpool_job {
    eng_pool2d_geom g;
    size_t N;
    const float *x, *dy;
    float *y, *dx;
    int32_t *idx;
} maxpool_job;

static size_t pool_parts(size_t N)
{
    size_t T = eng_par_threads();
    return T < N ? T : (N ? N : 1);
}

static void maxpool_forward_part(void *ctx, size_t p, size_t T)
{
    const maxpool_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->N, p, T, &lo, &hi);
    const size_t in = j->g.C * j->g.IH * j->g.IW, out = j->g.C * j->g.OH * j->g.OW;
    eng_maxpool2d_forward(&j->g, hi - lo, j->x + lo * in, j->y + lo * out, j->idx + lo * out);
}

static void maxpool_forward(eng_layer *l, const eng_fwd_args *a)
{
    maxpool_job j = {
        .g = pool_geom(l), .N = a->N, .x = a->x, .y = a->y, .idx = (int32_t *)(void *)l->aux};
    eng_par_run(pool_parts(a->N), maxpool_forward_part, &j);
}

static void maxpool_backward_part(void *ctx, size_t p, size_t T)
{
    const maxpool_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->N, p, T, &lo, &hi);
    const size_t in = j->g.C * j->g.IH * j->g.IW, out = j->g.C * j->g.OH * j->g.OW;
    eng_maxpool2d_backward(&j->g, hi - lo, j->dy + lo * out, j->idx + lo * out, j->dx + lo * in,
                           false);
}

static void maxpool_backward(eng_layer *l, const eng_bwd_args *a)
{
    if (!a->dx)
        return;
    maxpool_job j = {
        .g = pool_geom(l), .N = a->N, .dy = a->dy, .dx = a->dx, .idx = (int32_t *)(void *)l->aux};
    eng_par_run(pool_parts(a->N), maxpool_backward_part, &j);
}

static void avgpool_forward(eng_layer *l, const eng_fwd_args *a)
{
    eng_pool2d_geom g = pool_geom(l);
    eng_avgpool2d_forward(&g, a->N, true, a->x, a->y);
}

static void avgpool_backward(eng_layer *l, const eng_bwd_args *a)
{
    eng_pool2d_geom g = pool_geom(l);
    if (a->dx)
        eng_avgpool2d_backward(&g, a->N, true, a->dy, a->dx, false);
}

const eng_layer_ops eng_layer_maxpool2d = {
    .kind = "maxpool2d",
    .setup = pool_setup,
    .aux_size = maxpool_aux_size,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
};

const eng_layer_ops eng_layer_avgpool2d = {
    .kind = "avgpool2d",
    .setup = pool_setup,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
};

/* Adaptive kinds: cfg.pool.KH x KW is the output size (0 = 1). */
static eng_adapool_dims ada_dims(const eng_layer *l, size_t N)
{
    return (eng_adapool_dims){N,
                              l->in_shape[0],
                              l->in_shape[1],
                              l->in_shape[2],
                              l->cfg.pool.KH ? l->cfg.pool.KH : 1,
                              l->cfg.pool.KW ? l->cfg.pool.KW : 1};
}

static int ada_setup_common(eng_layer *l, eng_error *err, size_t factor)
{
    int rc = need_chw(l, err);
    if (rc)
        return rc;
    eng_adapool_dims d = ada_dims(l, 1);
    if (d.OH > (size_t)1 << 20 || d.OW > (size_t)1 << 20 || d.IH > INT32_MAX / d.IW)
        return eng_err_set(err, ENG_EINVAL, NULL, "layer %s: %s output %zux%zu is too large",
                           l->name, l->ops->kind, d.OH, d.OW);
    set_out(l, factor * d.C, d.OH, d.OW);
    return 0;
}

static int ada_avg_setup(eng_layer *l, eng_error *err)
{
    return ada_setup_common(l, err, 1);
}

static int ada_concat_setup(eng_layer *l, eng_error *err)
{
    return ada_setup_common(l, err, 2);
}

static void ada_avg_forward(eng_layer *l, const eng_fwd_args *a)
{
    eng_adapool_dims d = ada_dims(l, a->N);
    eng_adaptive_avgpool2d_forward(&d, a->x, a->y);
}

static void ada_avg_backward(eng_layer *l, const eng_bwd_args *a)
{
    eng_adapool_dims d = ada_dims(l, a->N);
    if (a->dx)
        eng_adaptive_avgpool2d_backward(&d, a->dy, a->dx, false);
}

/* aux: int32 argmax of the max half, N*C*OH*OW */
static size_t ada_concat_aux_size(const eng_layer *l, size_t N)
{
    return N * l->out_size / 2;
}

static void ada_concat_forward(eng_layer *l, const eng_fwd_args *a)
{
    eng_adapool_dims d = ada_dims(l, a->N);
    eng_adaptive_concatpool2d_forward(&d, a->x, a->y, (int32_t *)(void *)l->aux);
}

static void ada_concat_backward(eng_layer *l, const eng_bwd_args *a)
{
    eng_adapool_dims d = ada_dims(l, a->N);
    if (a->dx)
        eng_adaptive_concatpool2d_backward(&d, a->dy, (const int32_t *)(void *)l->aux, a->dx,
                                           false);
}

const eng_layer_ops eng_layer_adaptive_avgpool2d = {
    .kind = "adaptive_avgpool2d",
    .setup = ada_avg_setup,
    .forward = ada_avg_forward,
    .backward = ada_avg_backward,
};

const eng_layer_ops eng_layer_adaptive_concatpool2d = {
    .kind = "adaptive_concatpool2d",
    .setup = ada_concat_setup,
    .aux_size = ada_concat_aux_size,
    .forward = ada_concat_forward,
    .backward = ada_concat_backward,
};

/* ---- flatten ----------------------------------------------------------------------------- */

static int flatten_setup(eng_layer *l, eng_error *err)
{
    (void)err; /* every shape flattens */
    l->out_ndim = 1;
    l->out_shape[0] = l->in_size;
    l->out_size = l->in_size;
    return 0;
}

static void flatten_forward(eng_layer *l, const eng_fwd_args *a)
{
    if (a->y != a->x)
        memcpy(a->y, a->x, a->N * l->in_size * sizeof(float));
}

static void flatten_backward(eng_layer *l, const eng_bwd_args *a)
{
    if (a->dx && a->dx != a->dy)
        memcpy(a->dx, a->dy, a->N * l->in_size * sizeof(float));
}

const eng_layer_ops eng_layer_flatten = {
    .kind = "flatten",
    .setup = flatten_setup,
    .forward = flatten_forward,
    .backward = flatten_backward,
};
