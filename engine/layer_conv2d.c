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
 */
#include <string.h>

#include "gemm.h"
#include "kernels.h"

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
            if (b)
                for (size_t oc = 0; oc < OC; oc++)
                    for (size_t p = 0; p < P; p++)
                        yn[oc * P + p] += b[oc];
            continue;
        }
        unfold_chunk(g, m, xn, s->col);
        /* tmp [OC, m*P] */
        eng_sgemm(false, false, OC, m * P, K, 1.0f, w, K, s->col, m * P, 0.0f, s->tmp, m * P);
        for (size_t i = 0; i < m; i++)
            for (size_t oc = 0; oc < OC; oc++) {
                const float *src = s->tmp + oc * m * P + i * P;
                float *dst = yn + (i * OC + oc) * P;
                const float bias = b ? b[oc] : 0.0f;
                for (size_t p = 0; p < P; p++)
                    dst[p] = src[p] + bias;
            }
    }
}

void eng_conv2d_backward_weight(const eng_conv2d_geom *g, size_t N, const float *x, const float *dy,
                                float *dw, bool accumulate, const eng_conv2d_scratch *s)
{
    const size_t K = eng_conv2d_kdim(g), P = g->OH * g->OW, OC = g->OC;
    const size_t in = g->IC * g->IH * g->IW, out = OC * P;
    const size_t nb = s->nb ? s->nb : 1;
    if (N == 0 && !accumulate)
        memset(dw, 0, OC * K * sizeof(float));
    for (size_t n0 = 0; n0 < N; n0 += nb) {
        const size_t m = N - n0 < nb ? N - n0 : nb;
        const float beta = n0 == 0 && !accumulate ? 0.0f : 1.0f;
        const float *xn = x + n0 * in;    /* [m, IC, IH, IW] */
        const float *dyn = dy + n0 * out; /* [m, OC, OH, OW] */
        const float *col = xn;            /* [K, m*P] */
        const float *dyc = dyn;           /* [OC, m*P] */
        if (m == 1) {
            if (!is_pointwise(g)) {
                eng_im2col(g, xn, s->col, P);
                col = s->col;
            }
        } else {
            unfold_chunk(g, m, xn, s->col);
            gather_chunk(OC, P, m, dyn, s->tmp);
            col = s->col;
            dyc = s->tmp;
        }
        eng_sgemm(false, true, OC, K, m * P, 1.0f, dyc, m * P, col, m * P, beta, dw, K);
    }
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
    const size_t K = eng_conv2d_kdim(g), P = g->OH * g->OW, OC = g->OC;
    const size_t in = g->IC * g->IH * g->IW, out = OC * P;
    const size_t nb = s->nb ? s->nb : 1;
    for (size_t n0 = 0; n0 < N; n0 += nb) {
        const size_t m = N - n0 < nb ? N - n0 : nb;
        const float *dyn = dy + n0 * out; /* [m, OC, OH, OW] */
        float *dxn = dx + n0 * in;        /* [m, IC, IH, IW] */
        if (m == 1 && is_pointwise(g)) {
            /* dx [IC, P] (+)= w^T [IC, OC] * dy [OC, P] */
            eng_sgemm(true, false, K, P, OC, 1.0f, w, K, dyn, P, accumulate ? 1.0f : 0.0f, dxn, P);
            continue;
        }
        const float *dyc = dyn; /* [OC, m*P] */
        if (m > 1) {
            gather_chunk(OC, P, m, dyn, s->tmp);
            dyc = s->tmp;
        }
        /* col [K, m*P] = w^T [K, OC] * dyc */
        eng_sgemm(true, false, K, m * P, OC, 1.0f, w, K, dyc, m * P, 0.0f, s->col, m * P);
        if (!accumulate)
            memset(dxn, 0, m * in * sizeof(float));
        for (size_t i = 0; i < m; i++)
            eng_col2im(g, s->col + i * P, m * P, dxn + i * in);
    }
}
