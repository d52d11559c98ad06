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
 * row functions, which handle a kernel row's three columns in one pass, and (with GCC) vector
 * kernels which split or weave whole rows, or pairs of rows, with shuffles. eng_col2im_set
 * writes col2im's sums onto a zeroed image without the zeroing pass.
 */
#include "im2col.h"

#include <stdint.h>
#include <string.h>

#include "engine.h"
#include "util.h"

/* The unfolding loops are also built for AVX2 (and the vector kernels for AVX-512) on x86-64
 * with GCC, picked at load time (ifunc); they only move and add floats in a fixed order, so
 * all bodies give the same bits. */

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

/* eng_im2col by rows: any geometry (the 3x3 stride-2 padding-1 one goes to the vector
 * kernels below where they are built). */
ENG_SIMD_AVX2 static void im2col_any(const eng_conv2d_geom *g, const float *x, float *col,
                                     size_t ldcol)
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

/* eng_col2im_set of a 3x3, stride-2, padding-1 kernel, one input row at a time (the widths
 * the vector kernels below do not take, and compilers without them). */
static void col2im_set_k3s2p1_rows(const eng_conv2d_geom *g, const float *col, size_t ldcol,
                                   float *dx)
{
    const size_t IH = g->IH, IW = g->IW, OH = g->OH, OW = g->OW;
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

/* ---- 3x3, stride 2, padding 1: rows as 16-float vectors (GCC) ------------------------------ */

/* The row functions above work one output row at a time: rows of OW = 7 or 14 floats, where
 * per-row overhead and scalar de-interleaving dominate. The kernels below move whole vectors
 * of 16 floats (the GNU C vector extension): an input row's 32 columns split into their 16
 * even and 16 odd columns, or a kernel row's even- and odd-column sums woven back, each by one
 * two-vector shuffle (vpermt2ps in the AVX-512 body). Rows of at most 16 floats go two to a
 * vector. They need GCC's __builtin_shuffle, which also takes lane numbers computed at run
 * time (clang's does not); other compilers keep the row functions. */
#if defined(__GNUC__) && !defined(__clang__)
#define IM2COL_VEC 1

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
/* the same vectors at any float address, for whole-vector loads and stores */
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
#define SHUF16(a, b, ...) __builtin_shuffle(a, b, (v16i){__VA_ARGS__})
#define EVEN16            0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define ODD16             1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
/* a[15], b[0..14]: b shifted up by one lane, a's last lane in front */
#define SHR16  15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30
#define IOTA16 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15

/* Input floats to prefetch ahead of the row being unfolded (4 KiB, the best of 128..4096
 * floats on the 28x28 layer: with the hardware prefetcher alone the row loads wait). */
#define PF_AHEAD 1024

/* The helpers take vectors by pointer: a 64-byte vector argument would have a different ABI
 * in the baseline and the AVX-512 bodies (they are inlined anyway). */

/* *v = p[0..n) and zeros, n < 16 (the rare vector at the end of a buffer). */
__attribute__((noinline, cold)) static void load_part(v16 *v, const float *p, size_t n)
{
    float t[16] = {0};
    memcpy(t, p, n * sizeof(float));
    memcpy(v, t, sizeof t);
}

/* p[0..n) = v[0..n), n <= 16 (the rare vector that may not run over). */
__attribute__((noinline, cold)) static void store_part(float *p, const v16 *v, size_t n)
{
    memcpy(p, v, n * sizeof(float));
}

/* *v = p[0..15], of which only the first `n` are read (the lanes from n on come out 0): whole
 * vectors never read past the buffers we are given. */
static inline void load16(v16 *v, const float *p, size_t n)
{
    if (__builtin_expect(n >= 16, 1))
        *v = *(const v16u *)p;
    else
        load_part(v, p, n);
}

/* m[l] = all ones for the lanes l of a row's last 16-column chunk with
 * 16 * (chunks - 1) + l < n, else 0. */
static inline void lanes_below(v16i *m, size_t chunks, size_t n)
{
    for (int l = 0; l < 16; l++)
        (*m)[l] = 16 * (chunks - 1) + (size_t)l < n ? -1 : 0;
}

/* The kernel-column rows kw = 0, 1, 2 (d, d + ld, d + 2 * ld) of output rows, 16 columns
 * from d on, of which the first n are wanted: all 16 when `full` (the caller knows the rest
 * is rewritten later); else, with `back`, as the 16 floats that end at d + n, the first 16 - n
 * of them reloaded (already written, final) and merged in by a shuffle; else exactly n (a
 * plane under 16 floats). */
static inline void put3(float *d, size_t ld, const v16 *sh, const v16 *e, const v16 *o, size_t n,
                        bool full, bool back)
{
    if (__builtin_expect(full, 1)) {
        *(v16u *)d = *sh;
        *(v16u *)(d + ld) = *e;
        *(v16u *)(d + 2 * ld) = *o;
    } else if (back) {
        const v16i iota = {IOTA16};
        /* lane l: old float l while l < 16 - n, then lane l - (16 - n) of the new vector */
        const v16i tail = iota + ((iota >= (int)(16 - n)) & (int)n);
        float *w = d + n - 16;
        *(v16u *)w = __builtin_shuffle(*(const v16u *)w, *sh, tail);
        *(v16u *)(w + ld) = __builtin_shuffle(*(const v16u *)(w + ld), *e, tail);
        *(v16u *)(w + 2 * ld) = __builtin_shuffle(*(const v16u *)(w + 2 * ld), *o, tail);
    } else {
        store_part(d, sh, n);
        store_part(d + ld, e, n);
        store_part(d + 2 * ld, o, n);
    }
}

/* eng_im2col of a 3x3, stride-2, padding-1 kernel, rows of any width. Input row ih feeds
 * kernel row kh = 1 of output row ih/2 when even, kh = 2 of output row (ih-1)/2 and kh = 0 of
 * output row (ih+1)/2 when odd; in each such output row, kw = 1 takes the input row's even
 * columns E, kw = 2 its odd columns O (0 past an odd-width row) and kw = 0 the odd columns
 * shifted right by one (0 in front). So each input row is split into E and O once, 16 output
 * columns at a time, and stored 3 or 6 times. The rows of a (kh, kw) plane [OH*OW] are
 * written in order, so a row's last vector may run over into the next rows (rewritten later)
 * unless it would leave the plane: a plane's last rows are stored with put3's `back`. Output
 * row 0 of kh = 0, and OH - 1 of kh = 2 when IH is odd, read the padding (zeros). */
ENG_SIMD_AVX512 static void im2col_k3s2p1(const eng_conv2d_geom *g, const float *x, float *col,
                                          size_t ldcol)
{
    const size_t IH = g->IH, IW = g->IW, OH = g->OH, OW = g->OW, P = OH * OW;
    const size_t J = (OW + 15) / 16 * 16; /* output columns in whole 16-column chunks */
    const float *xend = x + g->IC * IH * IW;
    v16i keep; /* odd columns inside the row */
    lanes_below(&keep, J / 16, IW / 2);
    for (size_t ic = 0; ic < g->IC; ic++) {
        /* the kw = 0 rows of kernel rows kh = 0, 1, 2: planes [OH*OW] */
        float *r0 = col + ic * 9 * ldcol, *r1 = r0 + 3 * ldcol, *r2 = r0 + 6 * ldcol;
        for (size_t kw = 0; kw < 3; kw++)
            memset(r0 + kw * ldcol, 0, OW * sizeof(float));
        const float *src = x + ic * IH * IW; /* input row ih [IW] */
        for (size_t ih = 0; ih < IH; ih++, src += IW) {
            /* the output rows this input row feeds: at da + oa (and db + ob) */
            float *da, *db = NULL;
            size_t oa, ob = 0;
            if (ih % 2 == 0) {
                da = r1, oa = ih / 2 * OW;
            } else {
                da = r2, oa = (ih - 1) / 2 * OW;
                if ((ih + 1) / 2 < OH)
                    db = r0, ob = oa + OW;
            }
            v16 prev = {0}; /* the previous chunk's odd columns */
            for (size_t j = 0; j < J; j += 16) {
                const float *s = src + 2 * j;
                __builtin_prefetch(s + PF_AHEAD);
                __builtin_prefetch(s + PF_AHEAD + 16);
                const size_t avail = (size_t)(xend - s);
                v16 lo, hi;
                load16(&lo, s, avail);
                load16(&hi, s + 16, avail > 16 ? avail - 16 : 0);
                const v16 e = SHUF16(lo, hi, EVEN16);
                v16 o = SHUF16(lo, hi, ODD16);
                if (j + 16 == J)
                    o = (v16)((v16i)o & keep);
                const v16 sh = SHUF16(prev, o, SHR16);
                prev = o;
                const size_t n = OW - j < 16 ? OW - j : 16;
                put3(da + oa + j, ldcol, &sh, &e, &o, n, oa + j + 16 <= P, oa + j + n >= 16);
                if (db)
                    put3(db + ob + j, ldcol, &sh, &e, &o, n, ob + j + 16 <= P, ob + j + n >= 16);
            }
        }
        if (IH % 2)
            for (size_t kw = 0; kw < 3; kw++)
                memset(r2 + kw * ldcol + (OH - 1) * OW, 0, OW * sizeof(float));
    }
}

/* im2col_k3s2p1 for rows of at most 16 columns (OW <= 8): two input rows of the same parity
 * at a time, whose output rows follow each other in their planes, so that one vector holds
 * both (lanes [0, OW) and [OW, 2 * OW)): kernel row kh = 1 of output rows 2p, 2p + 1 takes
 * input rows 4p, 4p + 2; kh = 2 of output rows 2p, 2p + 1 and kh = 0 of output rows 2p + 1,
 * 2p + 2 take input rows 4p + 1, 4p + 3. The lanes are gathered by shuffles with lane numbers
 * computed once per call. */
ENG_SIMD_AVX512 static void im2col_k3s2p1_pairs(const eng_conv2d_geom *g, const float *x,
                                                float *col, size_t ldcol)
{
    const size_t IH = g->IH, IW = g->IW, OH = g->OH, OW = g->OW, P = OH * OW;
    const float *xend = x + g->IC * IH * IW;
    /* lane l < 2 * OW is output column t of the first (l < OW) or the second input row, whose
     * vectors are lanes 0..15 and 16..31 of the shuffles; kw = 1 takes column 2t (ie), kw = 2
     * column 2t + 1 (io, 0 past the row), kw = 0 column 2t - 1 (is, 0 for t = 0) */
    v16i ie, keep_o, keep_s;
    for (int l = 0; l < 16; l++) {
        const size_t u = (size_t)l, t = u < OW ? u : u - OW;
        const bool in = u < 2 * OW;
        ie[l] = in ? (int)((u < OW ? 0 : 16) + 2 * t) : 0;
        keep_o[l] = in && t < IW / 2 ? -1 : 0;
        keep_s[l] = in && t > 0 ? -1 : 0;
    }
    const v16i io = ie + 1, is = (ie - 1) & 31;
    for (size_t ic = 0; ic < g->IC; ic++) {
        /* the kw = 0 rows of kernel rows kh = 0, 1, 2: planes [OH*OW] */
        float *r0 = col + ic * 9 * ldcol, *r1 = r0 + 3 * ldcol, *r2 = r0 + 6 * ldcol;
        for (size_t kw = 0; kw < 3; kw++)
            memset(r0 + kw * ldcol, 0, OW * sizeof(float));
        const float *xc = x + ic * IH * IW; /* [IH, IW] */
        for (size_t h = 0; h < IH; h += 4) {
            for (size_t par = 0; par < 2 && h + par < IH; par++) {
                const bool has_b = h + par + 2 < IH;
                const float *sa = xc + (h + par) * IW, *sb = has_b ? sa + 2 * IW : sa;
                __builtin_prefetch(sa + PF_AHEAD);
                __builtin_prefetch(sa + PF_AHEAD + 16);
                v16 a, b; /* without a second row, b is a's copy and its lanes go unused */
                load16(&a, sa, (size_t)(xend - sa));
                load16(&b, sb, (size_t)(xend - sb));
                const v16 e = __builtin_shuffle(a, b, ie);
                const v16 o = (v16)((v16i)__builtin_shuffle(a, b, io) & keep_o);
                const v16 sh = (v16)((v16i)__builtin_shuffle(a, b, is) & keep_s);
                const size_t oh = h / 2, rows = has_b ? 2 : 1, off = oh * OW;
                float *d = par ? r2 : r1; /* output rows oh (, oh + 1) */
                put3(d + off, ldcol, &sh, &e, &o, rows * OW, off + 16 <= P, off + rows * OW >= 16);
                if (par) { /* kernel row kh = 0 of output rows oh + 1 (, oh + 2) */
                    const size_t r = oh + 1 < OH ? (oh + 2 < OH && has_b ? 2 : 1) : 0;
                    if (r)
                        put3(r0 + off + OW, ldcol, &sh, &e, &o, r * OW, off + OW + 16 <= P,
                             off + OW + r * OW >= 16);
                }
            }
        }
        if (IH % 2)
            for (size_t kw = 0; kw < 3; kw++)
                memset(r2 + kw * ldcol + (OH - 1) * OW, 0, OW * sizeof(float));
    }
}

/* The kernel-column rows kw = 0, 1, 2 of a kernel row r (planes r, r + ld, r + 2 * ld
 * [P]) from plane offset `off` on: *v1, *v2 = 16 floats at off, *v0 = 16 floats at off + 1.
 * Reads stay inside the planes (reading on into the rest of the column buffer costs cache
 * lines): a vector that would leave its plane is loaded as the plane's last 16 floats and
 * shifted down, its lanes past the plane then hold other columns of the plane (unused). */
static inline void load3(const float *r, size_t ld, size_t off, size_t P, v16 *v0, v16 *v1, v16 *v2)
{
    if (__builtin_expect(off + 17 <= P, 1)) {
        *v0 = *(const v16u *)(r + off + 1);
        *v1 = *(const v16u *)(r + ld + off);
        *v2 = *(const v16u *)(r + 2 * ld + off);
    } else if (P >= 16) {
        const v16i iota = {IOTA16};
        const int s = (int)(off + 16 - P); /* 0 .. 15: lanes to shift down */
        const float *e = r + P - 16;
        *v0 = __builtin_shuffle(*(const v16u *)e, iota + (s + 1));
        *v1 = __builtin_shuffle(*(const v16u *)(e + ld), iota + s);
        *v2 = __builtin_shuffle(*(const v16u *)(e + 2 * ld), iota + s);
    } else {
        load_part(v0, r + off + 1, P - off - 1);
        load_part(v1, r + ld + off, P - off);
        load_part(v2, r + 2 * ld + off, P - off);
    }
}

/* dst[0..8) = v[0..8) and dst[n-8..n) = v[8..16): a row of n (8 <= n <= 16) floats, exactly. */
static inline void put_row(float *dst, size_t n, const v16 *v)
{
    *(v8u *)dst = __builtin_shufflevector(*v, *v, 0, 1, 2, 3, 4, 5, 6, 7);
    *(v8u *)(dst + n - 8) = __builtin_shufflevector(*v, *v, 8, 9, 10, 11, 12, 13, 14, 15);
}

/* col2im_set_k3s2p1 for rows of 8 to 16 columns (OW <= 8): two input rows of the same parity
 * at a time, whose kernel rows follow each other in their planes, so that one vector holds
 * both (lanes [0, OW) and [OW, 2 * OW)): input rows 4p, 4p + 2 take kernel row kh = 1 of
 * output rows 2p, 2p + 1; input rows 4p + 1, 4p + 3 take kh = 0 of output rows 2p + 1, 2p + 2
 * (where inside the map; added first) and kh = 2 of output rows 2p, 2p + 1. Each input row is
 * woven from its lanes by a shuffle with lane numbers computed once per call and written as
 * two overlapping halves. The sums are col2im_row_set_k3s2p1's, lane by lane. */
ENG_SIMD_AVX512 static void col2im_set_k3s2p1_pairs(const eng_conv2d_geom *g, const float *col,
                                                    size_t ldcol, float *dx)
{
    const size_t IH = g->IH, IW = g->IW, OH = g->OH, OW = g->OW, P = OH * OW;
    /* keep0: lanes with a0[t + 1] in their row; second: the second row's lanes; z0, z1: input
     * columns 0..7 and IW-8..IW-1 of the first and the second row, from the even-column sums
     * (lanes 0..15) and the odd-column sums (16..31) */
    v16i keep0, second, z0, z1;
    for (int l = 0; l < 16; l++) {
        const size_t u = (size_t)l, t = u < OW ? u : u - OW, q = u < 8 ? u : IW - 16 + u;
        keep0[l] = u < 2 * OW && t + 1 < OW ? -1 : 0;
        second[l] = u >= OW ? -1 : 0;
        z0[l] = (int)(q % 2 ? 16 + q / 2 : q / 2);
        z1[l] = z0[l] + (int)OW;
    }
    for (size_t ic = 0; ic < g->IC; ic++) {
        const float *c = col + ic * 9 * ldcol; /* kernel row kh at c + 3 * kh * ldcol */
        float *d = dx + ic * IH * IW;          /* [IH, IW] */
        for (size_t h = 0; h < IH; h += 4) {
            const size_t k = h / 2; /* output rows k, k + 1 */
            v16 a0, a1, a2, ev, od;
            /* input rows h, h + 2: kh = 1 */
            load3(c + 3 * ldcol, ldcol, k * OW, P, &a0, &a1, &a2);
            a0 = (v16)((v16i)a0 & keep0);
            ev = a1, od = a2 + a0;
            v16 w = __builtin_shuffle(ev, od, z0);
            put_row(d + h * IW, IW, &w);
            if (h + 2 < IH) {
                w = __builtin_shuffle(ev, od, z1);
                put_row(d + (h + 2) * IW, IW, &w);
            }
            if (h + 1 >= IH)
                break;
            /* input rows h + 1, h + 3: kh = 2 (b) after kh = 0 (a) where present */
            v16 b0, b1, b2;
            load3(c + 6 * ldcol, ldcol, k * OW, P, &b0, &b1, &b2);
            b0 = (v16)((v16i)b0 & keep0);
            ev = b1, od = b2 + b0;
            if (k + 1 < OH) {
                load3(c, ldcol, (k + 1) * OW, P, &a0, &a1, &a2);
                a0 = (v16)((v16i)a0 & keep0);
                v16 ev2 = a1 + b1, od2 = (a2 + a0) + od;
                if (k + 2 >= OH) { /* the second row has no kh = 0 term */
                    ev2 = (v16)(((v16i)ev2 & ~second) | ((v16i)ev & second));
                    od2 = (v16)(((v16i)od2 & ~second) | ((v16i)od & second));
                }
                ev = ev2, od = od2;
            }
            w = __builtin_shuffle(ev, od, z0);
            put_row(d + (h + 1) * IW, IW, &w);
            if (h + 3 < IH) {
                w = __builtin_shuffle(ev, od, z1);
                put_row(d + (h + 3) * IW, IW, &w);
            }
        }
    }
}
#endif /* IM2COL_VEC */

/* ---- entry points ------------------------------------------------------------------------ */

/* Not cloned themselves: a call from one clone to another goes straight to the clone of the
 * same target, which would keep the kernels above from their AVX-512 bodies. */

static bool is_k3s2p1(const eng_conv2d_geom *g)
{
    return g->KH == 3 && g->KW == 3 && g->SH == 2 && g->SW == 2 && g->PH == 1 && g->PW == 1;
}

void eng_im2col(const eng_conv2d_geom *g, const float *x, float *col, size_t ldcol)
{
#ifdef IM2COL_VEC
    if (is_k3s2p1(g)) { /* the 3x3 stride-2 convolutions of resnets */
        if (g->IW <= 16)
            im2col_k3s2p1_pairs(g, x, col, ldcol);
        else
            im2col_k3s2p1(g, x, col, ldcol);
        return;
    }
#endif
    im2col_any(g, x, col, ldcol);
}

void eng_col2im_set(const eng_conv2d_geom *g, const float *col, size_t ldcol, float *dx)
{
    if (is_k3s2p1(g)) {
        /* pairs of rows of 8..16 columns (put_row needs 8); a one-row vector version for
         * wider rows measured no faster on the 28x28 layer (col2im 0.61-0.65 against
         * 0.58-0.59 ms per 64 images, the whole backward 6.48-6.60 against 6.47-6.61 ms) */
#ifdef IM2COL_VEC
        if (g->IW >= 8 && g->IW <= 16) {
            col2im_set_k3s2p1_pairs(g, col, ldcol, dx);
            return;
        }
#endif
        col2im_set_k3s2p1_rows(g, col, ldcol, dx);
        return;
    }
    memset(dx, 0, g->IC * g->IH * g->IW * sizeof(float));
    eng_col2im(g, col, ldcol, dx);
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
