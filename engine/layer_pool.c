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

void eng_maxpool2d_forward(const eng_pool2d_geom *g, size_t N, const float *x, float *y,
                           int32_t *idx)
{
    const size_t IP = g->IH * g->IW, OP = g->OH * g->OW;
    for (size_t pl = 0; pl < N * g->C; pl++) {
        const float *xp = x + pl * IP; /* [IH, IW] */
        float *yp = y + pl * OP;       /* [OH, OW] */
        int32_t *ip = idx + pl * OP;   /* [OH, OW] */
        for (size_t oh = 0; oh < g->OH; oh++) {
            size_t h0, h1, fh;
            window(oh, g->KH, g->SH, g->PH, g->IH, &h0, &h1, &fh);
            for (size_t ow = 0; ow < g->OW; ow++) {
                size_t w0, w1, fw;
                window(ow, g->KW, g->SW, g->PW, g->IW, &w0, &w1, &fw);
                yp[oh * g->OW + ow] = plane_max(xp, g->IW, h0, h1, w0, w1, &ip[oh * g->OW + ow]);
            }
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
static void ada_avg_plane(const eng_adapool_dims *d, const float *x, float *y)
{
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

void eng_adaptive_avgpool2d_backward(const eng_adapool_dims *d, const float *dy, float *dx,
                                     bool accumulate)
{
    const size_t IP = d->IH * d->IW, OP = d->OH * d->OW;
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
