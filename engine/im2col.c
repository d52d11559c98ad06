/*
 * im2col.c: convolution geometry, im2col/col2im, and the naive direct convolution that the
 * kernel checks use as the reference for the im2col + GEMM path.
 *
 * DESIGN: im2col walks the column buffer row by row (one row per (ic, kh, kw)) so that its
 * writes are sequential. For each row the range of output columns whose input column falls
 * inside the image is the same for every output row, so it is computed once per (kw) and the
 * inner loop has no bounds test: zeros left of it, a strided (or, at stride 1, contiguous)
 * copy, zeros right of it (stride 2 has its own loop, which the compiler vectorises). col2im
 * mirrors this with additions. The 3x3 stride-2 padding-1 kernels of resnets have their own
 * row functions, which handle a kernel row's three columns in one pass.
 */
#include "im2col.h"

#include <stdint.h>
#include <string.h>

#include "engine.h"
#include "util.h"

/* The unfolding loops are also built for AVX2 on x86-64 with GCC, picked at load time (ifunc);
 * they only move and add floats in a fixed order, so both bodies give the same bits. */

/* Upper bound on any one buffer we agree to describe, in floats (2^40 = 4 TiB). */
#define GEOM_MAX_FLOATS ((size_t)1 << 40)

static bool mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > GEOM_MAX_FLOATS / a)
        return false;
    *out = a * b;
    return *out <= GEOM_MAX_FLOATS;
}

int eng_conv2d_geom_init(eng_conv2d_geom *g, size_t IC, size_t IH, size_t IW, size_t OC, size_t KH,
                         size_t KW, size_t SH, size_t SW, size_t PH, size_t PW)
{
    size_t t;
    if (!g || !IC || !IH || !IW || !OC || !KH || !KW || !SH || !SW)
        return ENG_EINVAL;
    if (IH > GEOM_MAX_FLOATS || IW > GEOM_MAX_FLOATS || PH > GEOM_MAX_FLOATS ||
        PW > GEOM_MAX_FLOATS || KH > GEOM_MAX_FLOATS || KW > GEOM_MAX_FLOATS)
        return ENG_EINVAL;
    if (KH > IH + 2 * PH || KW > IW + 2 * PW)
        return ENG_ESHAPE;
    size_t OH = (IH + 2 * PH - KH) / SH + 1, OW = (IW + 2 * PW - KW) / SW + 1;
    /* Every buffer the kernels touch must be describable: image, column, weight, output. */
    if (!mul_ok(IC, IH, &t) || !mul_ok(t, IW, &t) || !mul_ok(IC, KH, &t) || !mul_ok(t, KW, &t) ||
        !mul_ok(t, OH, &t) || !mul_ok(t, OW, &t) || !mul_ok(OC, IC, &t) || !mul_ok(t, KH, &t) ||
        !mul_ok(t, KW, &t) || !mul_ok(OC, OH, &t) || !mul_ok(t, OW, &t))
        return ENG_EINVAL;
    *g = (eng_conv2d_geom){.IC = IC,
                           .IH = IH,
                           .IW = IW,
                           .OC = OC,
                           .KH = KH,
                           .KW = KW,
                           .SH = SH,
                           .SW = SW,
                           .PH = PH,
                           .PW = PW,
                           .OH = OH,
                           .OW = OW};
    return 0;
}

/* Output columns [*lo, *hi) whose input column ow*SW + kw - PW lies inside [0, IW). */
static void valid_range(size_t k, size_t S, size_t P, size_t In, size_t Out, size_t *lo, size_t *hi)
{
    /* lo = ceil((P - k) / S) when P > k, else 0. */
    size_t l = P > k ? (P - k + S - 1) / S : 0;
    /* hi - 1 = floor((In - 1 + P - k) / S) when In - 1 + P >= k. */
    size_t h = In - 1 + P >= k ? (In - 1 + P - k) / S + 1 : 0;
    if (h > Out)
        h = Out;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* dst[i] = src[2i], i < n (a stride-2 row; a constant stride lets the compiler vectorise). */
static void copy_stride2(size_t n, const float *restrict src, float *restrict dst)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = src[2 * i];
}

/* im2col of one input row src [IW] for a 3-wide, column-stride-2, column-padding-1 kernel:
 * the kw = 0, 1, 2 rows of the column buffer take iw = 2*ow - 1, 2*ow and 2*ow + 1, i.e. the
 * odd columns shifted right by one (0 in front), the even columns and the odd columns (0 at
 * the end of an odd-width row). One de-interleaving pass (vectorised) fills the last two. */
static void im2col_row_k3s2p1(size_t IW, size_t OW, const float *restrict src, float *restrict d0,
                              float *restrict d1, float *restrict d2)
{
    const size_t h = IW / 2; /* full (even, odd) pairs; OW = h, or h + 1 when IW is odd */
    for (size_t k = 0; k < h; k++) {
        d1[k] = src[2 * k];
        d2[k] = src[2 * k + 1];
    }
    if (IW % 2) {
        d1[h] = src[IW - 1];
        d2[h] = 0.0f;
    }
    d0[0] = 0.0f;
    copy_stride2(OW - 1, src + 1, d0 + 1);
}

ENG_SIMD_AVX2 void eng_im2col(const eng_conv2d_geom *g, const float *x, float *col, size_t ldcol)
{
    const size_t IH = g->IH, IW = g->IW, OH = g->OH, OW = g->OW;
    const size_t SH = g->SH, SW = g->SW, PH = g->PH, PW = g->PW;
    if (g->KW == 3 && SW == 2 && PW == 1) { /* the 3x3 stride-2 convolutions of resnets */
        for (size_t ic = 0; ic < g->IC; ic++)
            for (size_t kh = 0; kh < g->KH; kh++) {
                float *rows = col + (ic * g->KH + kh) * 3 * ldcol; /* kw = 0, 1, 2 */
                size_t oh_lo, oh_hi;
                valid_range(kh, SH, PH, IH, OH, &oh_lo, &oh_hi);
                for (size_t kw = 0; kw < 3; kw++) {
                    memset(rows + kw * ldcol, 0, oh_lo * OW * sizeof(float));
                    memset(rows + kw * ldcol + oh_hi * OW, 0, (OH - oh_hi) * OW * sizeof(float));
                }
                for (size_t oh = oh_lo; oh < oh_hi; oh++) {
                    float *d0 = rows + oh * OW;
                    im2col_row_k3s2p1(IW, OW, x + (ic * IH + oh * SH + kh - PH) * IW, d0,
                                      d0 + ldcol, d0 + 2 * ldcol);
                }
            }
        return;
    }
    size_t r = 0;
    for (size_t ic = 0; ic < g->IC; ic++) {
        const float *xc = x + ic * IH * IW; /* [IH, IW] */
        for (size_t kh = 0; kh < g->KH; kh++) {
            size_t oh_lo, oh_hi;
            valid_range(kh, SH, PH, IH, OH, &oh_lo, &oh_hi);
            for (size_t kw = 0; kw < g->KW; kw++, r++) {
                float *row = col + r * ldcol; /* [OH*OW] */
                size_t ow_lo, ow_hi;
                valid_range(kw, SW, PW, IW, OW, &ow_lo, &ow_hi);
                memset(row, 0, oh_lo * OW * sizeof(float));
                for (size_t oh = oh_lo; oh < oh_hi; oh++) {
                    float *dst = row + oh * OW;
                    /* ih = oh*SH + kh - PH, in range for oh in [oh_lo, oh_hi) */
                    const float *src = xc + (oh * SH + kh - PH) * IW;
                    size_t ow = 0;
                    for (; ow < ow_lo; ow++)
                        dst[ow] = 0.0f;
                    if (SW == 1 && ow_hi > ow_lo) {
                        memcpy(dst + ow_lo, src + (ow_lo + kw - PW),
                               (ow_hi - ow_lo) * sizeof(float));
                        ow = ow_hi;
                    } else if (SW == 2 && ow_hi > ow_lo) {
                        copy_stride2(ow_hi - ow_lo, src + (2 * ow_lo + kw - PW), dst + ow_lo);
                        ow = ow_hi;
                    } else {
                        for (; ow < ow_hi; ow++)
                            dst[ow] = src[ow * SW + kw - PW];
                    }
                    for (ow = ow_hi; ow < OW; ow++)
                        dst[ow] = 0.0f;
                }
                memset(row + oh_hi * OW, 0, (OH - oh_hi) * OW * sizeof(float));
            }
        }
    }
}

/* col2im of one kernel row of a 3-wide, column-stride-2, column-padding-1 kernel into the
 * input row dst [IW]: rows c0, c1, c2 [OW] (kw = 0, 1, 2) land on iw = 2*ow - 1, 2*ow and
 * 2*ow + 1, so input pair (2k, 2k+1) receives c1[k] and c2[k] + c0[k+1] (c0[0] falls in the
 * padding). One pass of gap-free interleaved additions, which the compiler vectorises, instead
 * of three strided read-modify-write passes. */
static void col2im_row_k3s2p1(size_t IW, size_t OW, const float *restrict c0,
                              const float *restrict c1, const float *restrict c2,
                              float *restrict dst)
{
    /* pairs with both entries inside the row and c0[k+1] present */
    size_t kmax = IW / 2 < OW - 1 ? IW / 2 : OW - 1, k = 0;
    for (; k < kmax; k++) {
        dst[2 * k] += c1[k];
        dst[2 * k + 1] += c2[k] + c0[k + 1];
    }
    for (; k < OW; k++) {
        if (2 * k < IW)
            dst[2 * k] += c1[k];
        if (2 * k + 1 < IW)
            dst[2 * k + 1] += c2[k] + (k + 1 < OW ? c0[k + 1] : 0.0f);
    }
}

ENG_SIMD_AVX2 void eng_col2im(const eng_conv2d_geom *g, const float *col, size_t ldcol, float *dx)
{
    const size_t IH = g->IH, IW = g->IW, OH = g->OH, OW = g->OW;
    const size_t SH = g->SH, SW = g->SW, PH = g->PH, PW = g->PW;
    if (g->KW == 3 && SW == 2 && PW == 1) { /* the 3x3 stride-2 convolutions of resnets */
        for (size_t ic = 0; ic < g->IC; ic++)
            for (size_t kh = 0; kh < g->KH; kh++) {
                const float *rows = col + (ic * g->KH + kh) * 3 * ldcol; /* kw = 0, 1, 2 */
                size_t oh_lo, oh_hi;
                valid_range(kh, SH, PH, IH, OH, &oh_lo, &oh_hi);
                for (size_t oh = oh_lo; oh < oh_hi; oh++) {
                    const float *c0 = rows + oh * OW;
                    col2im_row_k3s2p1(IW, OW, c0, c0 + ldcol, c0 + 2 * ldcol,
                                      dx + (ic * IH + oh * SH + kh - PH) * IW);
                }
            }
        return;
    }
    size_t r = 0;
    for (size_t ic = 0; ic < g->IC; ic++) {
        float *dxc = dx + ic * IH * IW; /* [IH, IW] */
        for (size_t kh = 0; kh < g->KH; kh++) {
            size_t oh_lo, oh_hi;
            valid_range(kh, SH, PH, IH, OH, &oh_lo, &oh_hi);
            for (size_t kw = 0; kw < g->KW; kw++, r++) {
                const float *row = col + r * ldcol; /* [OH*OW] */
                size_t ow_lo, ow_hi;
                valid_range(kw, SW, PW, IW, OW, &ow_lo, &ow_hi);
                for (size_t oh = oh_lo; oh < oh_hi; oh++) {
                    const float *src = row + oh * OW;
                    float *dst = dxc + (oh * SH + kh - PH) * IW; /* input row ih */
                    /* iw = ow*SW + kw - PW, >= 0 for ow >= ow_lo */
                    if (SW == 1) {
                        for (size_t ow = ow_lo; ow < ow_hi; ow++)
                            dst[ow + kw - PW] += src[ow];
                    } else {
                        for (size_t ow = ow_lo; ow < ow_hi; ow++)
                            dst[ow * SW + kw - PW] += src[ow];
                    }
                }
            }
        }
    }
}

/* The input row dst [IW] of a 3x3, stride-2, padding-1 convolution's col2im, written (not
 * added) from its kernel rows: the row of input row 2k comes from kernel row kh = 1 of output
 * row k only (p1 = its kw = 0, 1, 2 rows), that of row 2k + 1 from kh = 0 of output row k + 1
 * (p0, or NULL past the last output row) and kh = 2 of output row k (p2, or NULL). Each
 * element is the sum eng_col2im would add onto 0, in its order (kh = 0 before kh = 2; within
 * a kernel row, kw = 2 then kw = 0), so the results are the same. */
ENG_SIMD_AVX2 static void col2im_row_set_k3s2p1(size_t IW, size_t OW, size_t ldcol,
                                                const float *restrict p0, const float *restrict p1,
                                                const float *restrict p2, float *restrict dst)
{
    /* the kernel rows in eng_col2im's order (p1 never comes with p0 or p2) */
    const float *a = p0 ? p0 : (p1 ? p1 : p2), *b = p0 ? p2 : NULL;
    if (!a) {
        memset(dst, 0, IW * sizeof(float));
        return;
    }
    const float *a0 = a, *a1 = a + ldcol, *a2 = a + 2 * ldcol;
    /* full pairs (2j, 2j + 1) inside the row with a0[j + 1] present */
    size_t kmax = IW / 2 < OW - 1 ? IW / 2 : OW - 1, j = 0;
    if (b) {
        const float *b0 = b, *b1 = b + ldcol, *b2 = b + 2 * ldcol;
        for (; j < kmax; j++) {
            dst[2 * j] = a1[j] + b1[j];
            dst[2 * j + 1] = (a2[j] + a0[j + 1]) + (b2[j] + b0[j + 1]);
        }
        for (size_t iw = 2 * j; iw < IW; iw++) {
            const size_t k = iw / 2;
            float v = 0.0f;
            if (k < OW && iw % 2 == 0)
                v = a1[k] + b1[k];
            else if (k < OW)
                v = (a2[k] + (k + 1 < OW ? a0[k + 1] : 0.0f)) +
                    (b2[k] + (k + 1 < OW ? b0[k + 1] : 0.0f));
            dst[iw] = v;
        }
        return;
    }
    for (; j < kmax; j++) {
        dst[2 * j] = a1[j];
        dst[2 * j + 1] = a2[j] + a0[j + 1];
    }
    for (size_t iw = 2 * j; iw < IW; iw++) {
        const size_t k = iw / 2;
        float v = 0.0f;
        if (k < OW && iw % 2 == 0)
            v = a1[k];
        else if (k < OW)
            v = a2[k] + (k + 1 < OW ? a0[k + 1] : 0.0f);
        dst[iw] = v;
    }
}

void eng_col2im_set(const eng_conv2d_geom *g, const float *col, size_t ldcol, float *dx)
{
    const size_t IH = g->IH, IW = g->IW, OH = g->OH, OW = g->OW;
    if (!(g->KH == 3 && g->KW == 3 && g->SH == 2 && g->SW == 2 && g->PH == 1 && g->PW == 1)) {
        memset(dx, 0, g->IC * IH * IW * sizeof(float));
        eng_col2im(g, col, ldcol, dx);
        return;
    }
    for (size_t ic = 0; ic < g->IC; ic++) {
        const float *c = col + ic * 9 * ldcol; /* kernel row kh at c + 3 * kh * ldcol */
        for (size_t ih = 0; ih < IH; ih++) {
            /* ih = 2 * oh + kh - 1 */
            const size_t k = ih / 2;
            const float *p0 = NULL, *p1 = NULL, *p2 = NULL;
            if (ih % 2 == 0) {
                if (k < OH)
                    p1 = c + 3 * ldcol + k * OW;
            } else {
                if (k + 1 < OH)
                    p0 = c + (k + 1) * OW;
                if (k < OH)
                    p2 = c + 6 * ldcol + k * OW;
            }
            col2im_row_set_k3s2p1(IW, OW, ldcol, p0, p1, p2, dx + (ic * IH + ih) * IW);
        }
    }
}

/* ---- naive references -------------------------------------------------------------------- */

/* Input position of output index o and kernel index k, or -1 when it falls in the padding. */
static ptrdiff_t in_pos(size_t o, size_t k, size_t S, size_t P, size_t In)
{
    ptrdiff_t i = (ptrdiff_t)(o * S + k) - (ptrdiff_t)P;
    return i >= 0 && i < (ptrdiff_t)In ? i : -1;
}

void eng_conv2d_ref_forward(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                            const float *b, float *y)
{
    for (size_t n = 0; n < N; n++)
        for (size_t oc = 0; oc < g->OC; oc++)
            for (size_t oh = 0; oh < g->OH; oh++)
                for (size_t ow = 0; ow < g->OW; ow++) {
                    double acc = b ? (double)b[oc] : 0.0;
                    for (size_t ic = 0; ic < g->IC; ic++)
                        for (size_t kh = 0; kh < g->KH; kh++) {
                            ptrdiff_t ih = in_pos(oh, kh, g->SH, g->PH, g->IH);
                            if (ih < 0)
                                continue;
                            for (size_t kw = 0; kw < g->KW; kw++) {
                                ptrdiff_t iw = in_pos(ow, kw, g->SW, g->PW, g->IW);
                                if (iw < 0)
                                    continue;
                                acc += (double)x[((n * g->IC + ic) * g->IH + (size_t)ih) * g->IW +
                                                 (size_t)iw] *
                                       (double)w[((oc * g->IC + ic) * g->KH + kh) * g->KW + kw];
                            }
                        }
                    y[((n * g->OC + oc) * g->OH + oh) * g->OW + ow] = (float)acc;
                }
}

void eng_conv2d_ref_backward_input(const eng_conv2d_geom *g, size_t N, const float *dy,
                                   const float *w, float *dx)
{
    /* Gather form: each input element sums the outputs it contributed to. */
    for (size_t n = 0; n < N; n++)
        for (size_t ic = 0; ic < g->IC; ic++)
            for (size_t ih = 0; ih < g->IH; ih++)
                for (size_t iw = 0; iw < g->IW; iw++) {
                    double acc = 0.0;
                    for (size_t kh = 0; kh < g->KH; kh++) {
                        /* oh*SH = ih + PH - kh */
                        if (ih + g->PH < kh || (ih + g->PH - kh) % g->SH)
                            continue;
                        size_t oh = (ih + g->PH - kh) / g->SH;
                        if (oh >= g->OH)
                            continue;
                        for (size_t kw = 0; kw < g->KW; kw++) {
                            if (iw + g->PW < kw || (iw + g->PW - kw) % g->SW)
                                continue;
                            size_t ow = (iw + g->PW - kw) / g->SW;
                            if (ow >= g->OW)
                                continue;
                            for (size_t oc = 0; oc < g->OC; oc++)
                                acc += (double)dy[((n * g->OC + oc) * g->OH + oh) * g->OW + ow] *
                                       (double)w[((oc * g->IC + ic) * g->KH + kh) * g->KW + kw];
                        }
                    }
                    dx[((n * g->IC + ic) * g->IH + ih) * g->IW + iw] = (float)acc;
                }
}

void eng_conv2d_ref_backward_weight(const eng_conv2d_geom *g, size_t N, const float *x,
                                    const float *dy, float *dw, float *db)
{
    for (size_t oc = 0; oc < g->OC; oc++) {
        for (size_t ic = 0; ic < g->IC; ic++)
            for (size_t kh = 0; kh < g->KH; kh++)
                for (size_t kw = 0; kw < g->KW; kw++) {
                    double acc = 0.0;
                    for (size_t n = 0; n < N; n++)
                        for (size_t oh = 0; oh < g->OH; oh++) {
                            ptrdiff_t ih = in_pos(oh, kh, g->SH, g->PH, g->IH);
                            if (ih < 0)
                                continue;
                            for (size_t ow = 0; ow < g->OW; ow++) {
                                ptrdiff_t iw = in_pos(ow, kw, g->SW, g->PW, g->IW);
                                if (iw < 0)
                                    continue;
                                acc += (double)x[((n * g->IC + ic) * g->IH + (size_t)ih) * g->IW +
                                                 (size_t)iw] *
                                       (double)dy[((n * g->OC + oc) * g->OH + oh) * g->OW + ow];
                            }
                        }
                    dw[((oc * g->IC + ic) * g->KH + kh) * g->KW + kw] = (float)acc;
                }
        if (db) {
            double acc = 0.0;
            for (size_t n = 0; n < N; n++)
                for (size_t p = 0; p < g->OH * g->OW; p++)
                    acc += (double)dy[(n * g->OC + oc) * g->OH * g->OW + p];
            db[oc] = (float)acc;
        }
    }
}
