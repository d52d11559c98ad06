/*
 * conv_tap.c: convolution as one GEMM per kernel tap over the whole batch (conv_tap.h).
 *
 * DESIGN. A convolution is a sum over its KH*KW taps: for tap (kh, kw) every output
 * position o = (oh, ow) reads the input at (oh*SH + kh - PH, ow*SW + kw - PW), so
 *   y[:, o] += W_t [OC, IC] * x[:, i(o, t)]     for the o whose i(o, t) is inside the image.
 * With the batch as the fastest-varying index (x kept as xt [IC][positions][N]), the valid
 * outputs of one tap and one output row form a contiguous block of columns, and so do the
 * inputs they read: each tap is a handful of GEMMs with M = OC, K = IC and N-times-wider
 * blocks than one image gives. Strides > 1 are handled by splitting the input into its
 * SH*SW phases (rows u*SH + a, columns v*SW + b): a tap reads a single phase, shifted by a
 * whole number of phase positions, so a stride-S convolution is again shifted blocks.
 *
 * Against im2col + GEMM this skips the products with the zero padding, which on small maps
 * are most of them (a 3x3 padding-1 kernel on a 2x2 map: 16 of 36 taps-times-positions
 * are inside the image, on 4x4: 100 of 144), needs no unfolded copy, and when the work is
 * split by output channels each thread reads only its rows of the weights and runs GEMMs
 * as wide as the whole batch (im2col split by images gives each thread the full weight
 * matrix and a thin column matrix, where OpenBLAS spends its time packing). The price is
 * a transpose of the input and output and a relayout of the weights per call, cheap on the
 * small maps this is used for.
 *
 * The weights W_t [OC, IC] of a tap are w [OC, IC, KH, KW] at stride KH*KW, which no GEMM
 * reads, so they are copied tap-major. On these layers the weights are much larger than the
 * activations (resnet18's layer4 3x3: 9.4 MB of weights, 0.25 MB of input at batch 32), and
 * a whole tap-major copy went out to memory and was read back by every tap's GEMMs: about a
 * tenth of a fastai-frozen step's time. Each thread therefore copies a block of the weights
 * at a time, about WT_BLOCK_FLOATS, and runs every tap's GEMMs on it while it is in its
 * cache: for the forward, up to 128 output by 128 input channels, the GEMMs summing over the
 * input channels a block at a time; for the input gradient, whose threads own input
 * channels, B output channels restricted to the part's input channels, the GEMMs summing
 * over the output channels (K = B); for the weight gradient, larger blocks of whole rows.
 *
 * Scratch: xt [IC*IH*IW*N] (phases one after the other, each [IC][Hu*Wv][N]) |
 * yt [OC][OH*OW][N] | dxt (as xt) | one weight block per compute thread,
 * [KH*KW][rows][columns] of the block. The backward pass keeps dy in yt and computes
 * dx_phase[:, i(o, t)] += W_t^T * dy[:, o] into dxt, then dW_t += dy[:, o] * x_phase[:,
 * i(o, t)]^T into the weight blocks, from which each block is added into dw.
 */
#include "conv_tap.h"

#include <string.h>

#include "gemm.h"
#include "par.h"
#include "util.h"

/* Positions of phase a of an axis of length In with stride S: rows a, a+S, ... < In. */
static size_t phase_len(size_t In, size_t S, size_t a)
{
    return In > a ? (In - a + S - 1) / S : 0;
}

/* Floats of xt before phase (a, b) (phases in row-major (a, b) order). */
static size_t phase_offset(const eng_conv2d_geom *g, size_t N, size_t a, size_t b)
{
    size_t pos = 0;
    for (size_t i = 0; i < g->SH; i++)
        for (size_t j = 0; j < g->SW; j++) {
            if (i == a && j == b)
                return pos * g->IC * N;
            pos += phase_len(g->IH, g->SH, i) * phase_len(g->IW, g->SW, j);
        }
    return pos * g->IC * N;
}

/* Tap offset d = k - P as phase + whole phase steps: d = q*S + a with 0 <= a < S. */
static void split_offset(size_t k, size_t P, size_t S, size_t *a, ptrdiff_t *q)
{
    ptrdiff_t d = (ptrdiff_t)k - (ptrdiff_t)P, s = (ptrdiff_t)S;
    ptrdiff_t r = ((d % s) + s) % s;
    *a = (size_t)r;
    *q = (d - r) / s;
}

/* Outputs o in [0, Out) whose phase position o + q lies in [0, Len): [*lo, *hi). */
static void valid_outputs(ptrdiff_t q, size_t Len, size_t Out, size_t *lo, size_t *hi)
{
    ptrdiff_t l = q < 0 ? -q : 0, h = (ptrdiff_t)Len - q;
    if (h > (ptrdiff_t)Out)
        h = (ptrdiff_t)Out;
    if (h < l)
        h = l;
    *lo = (size_t)l;
    *hi = (size_t)h;
}

/* Where tap (kh, kw) reads and writes: its phase of xt (offset, row stride), the valid
 * output rectangle and the shift into the phase; its GEMM blocks come from tap_block. */
typedef struct tap_span {
    size_t phase_off, ld_in, Wv;
    size_t oh_lo, oh_hi, ow_lo, ow_hi;
    ptrdiff_t qh, qw;
    bool merged; /* whole rows on both sides with the same row length: one block */
} tap_span;

static tap_span tap_span_of(const eng_conv2d_geom *g, size_t N, size_t kh, size_t kw)
{
    tap_span s;
    size_t a, b;
    split_offset(kh, g->PH, g->SH, &a, &s.qh);
    split_offset(kw, g->PW, g->SW, &b, &s.qw);
    const size_t Hu = phase_len(g->IH, g->SH, a);
    s.Wv = phase_len(g->IW, g->SW, b);
    valid_outputs(s.qh, Hu, g->OH, &s.oh_lo, &s.oh_hi);
    valid_outputs(s.qw, s.Wv, g->OW, &s.ow_lo, &s.ow_hi);
    s.phase_off = phase_offset(g, N, a, b);
    s.ld_in = Hu * s.Wv * N;
    s.merged = s.ow_lo == 0 && s.ow_hi == g->OW && s.Wv == g->OW && s.qw == 0;
    return s;
}

/* GEMM blocks of a span (0 when no output reads the tap). */
static size_t tap_nblocks(const tap_span *s)
{
    if (s->oh_lo == s->oh_hi || s->ow_lo == s->ow_hi)
        return 0;
    return s->merged ? 1 : s->oh_hi - s->oh_lo;
}

/* Block i: ncols columns at *out_col of yt [., OH*OW*N] and *in_col of the phase. */
static size_t tap_block(const eng_conv2d_geom *g, size_t N, const tap_span *s, size_t i,
                        size_t *out_col, size_t *in_col)
{
    if (s->merged) {
        *out_col = s->oh_lo * g->OW * N;
        *in_col = (size_t)((ptrdiff_t)s->oh_lo + s->qh) * s->Wv * N;
        return (s->oh_hi - s->oh_lo) * g->OW * N;
    }
    const size_t oh = s->oh_lo + i;
    *out_col = (oh * g->OW + s->ow_lo) * N;
    *in_col = ((size_t)((ptrdiff_t)oh + s->qh) * s->Wv + (size_t)((ptrdiff_t)s->ow_lo + s->qw)) * N;
    return (s->ow_hi - s->ow_lo) * N;
}

/* Columns per tap GEMM of M x K (of ncols): OpenBLAS's small-matrix kernel (gemm.h: GEMMs of
 * M*N*K <= small, on the SkylakeX-family cores) reads the operands in place, without packing
 * them. The tap GEMMs of the forward (M = K = 128) and of the input gradient (M = the part's
 * input channels, K = 32) are just above that size at 64 columns and more; split into GEMMs of
 * a power-of-two number of columns under it (32 or 64 here), they ran faster on Cooperlake
 * (resnet18 b32, 1 thread, the tap layers' forward ~16.7 -> ~14.8 ms, input gradient ~16.3 ->
 * ~15.0 ms per step) and 2.5% slower on the Haswell kernels, which have no such kernel (so:
 * all the columns there). Every column is the same sum either way, but the small kernel's
 * bits differ from the packed one's. At least 16 columns, else all of them. */
static size_t small_cols(size_t M, size_t K, size_t ncols, size_t small)
{
    size_t c = 16;
    if (M * K * c > small)
        return ncols;
    while (M * K * 2 * c <= small)
        c *= 2;
    return c;
}

/* Floats a weight block aims for: 640 KB, in a core's L2 cache beside the GEMM's packed
 * operands. The weight gradient's blocks are larger (WG_BLOCK_FLOATS, 2.5 MB): its GEMMs
 * have the block's channels as M and only a tap's columns as K, and at M = 32 they ran at
 * 70-79 GFLOPS against 92 at M = 128 (N = 512, K = 32-128); the block is written once and
 * read once by the re-layout into dw, so it need not stay in L2. */
#define WT_BLOCK_FLOATS (160 * 1024)
#define WG_BLOCK_FLOATS (640 * 1024)

/* Channels per weight block of about `floats`: B with KH*KW*B*max(IC, OC) about that, a
 * multiple of 16 (whole GEMM kernel rows) when it is at least 16. */
static size_t block_len(const eng_conv2d_geom *g, size_t floats)
{
    const size_t C = g->IC > g->OC ? g->IC : g->OC;
    size_t b = floats / (g->KH * g->KW * C);
    if (b >= 16)
        b -= b % 16;
    return b ? b : 1;
}

static size_t block_floats(const eng_conv2d_geom *g)
{
    return g->KH * g->KW * block_len(g, WG_BLOCK_FLOATS) * (g->IC > g->OC ? g->IC : g->OC);
}

/* The forward's weight blocks: BO output by BI input channels, at most 128 of each and
 * about WT_BLOCK_FLOATS, the GEMMs summing over the input channels a block at a time
 * (M = K = 128 ran at 104 GFLOPS against 91 for M = 32, K = 512 with the whole rows). */
static void fwd_blocks(const eng_conv2d_geom *g, size_t *BO, size_t *BI)
{
    const size_t KK = g->KH * g->KW;
    *BI = g->IC < 128 ? g->IC : 128;
    size_t bo = WT_BLOCK_FLOATS / (KK * *BI);
    if (bo >= 16)
        bo -= bo % 16;
    if (bo > 128)
        bo = 128;
    *BO = bo ? bo : 1;
    ENG_ASSERT(KK * *BO * *BI <= block_floats(g));
}

size_t eng_convtap_scratch_floats(const eng_conv2d_geom *g, size_t N)
{
    return 2 * g->IC * g->IH * g->IW * N + g->OC * g->OH * g->OW * N +
           eng_par_threads() * block_floats(g);
}

size_t eng_convtap_macs(const eng_conv2d_geom *g, size_t N)
{
    size_t pairs = 0;
    for (size_t kh = 0; kh < g->KH; kh++)
        for (size_t kw = 0; kw < g->KW; kw++) {
            tap_span s = tap_span_of(g, 1, kh, kw);
            pairs += (s.oh_hi - s.oh_lo) * (s.ow_hi - s.ow_lo);
        }
    return pairs * N * g->OC * g->IC;
}

typedef struct tap_job {
    const eng_conv2d_geom *g;
    size_t N;
    const float *src; /* x (forward) or dy (input gradient), NCHW */
    const float *w, *b;
    float *dst; /* y or dx, NCHW */
    bool accumulate;
    const float *x; /* backward: the forward input, for the weight gradient (NULL: none) */
    float *dw;      /* backward: [OC, IC, KH, KW] (NULL: none) */
    bool accumulate_dw;
    float *xt, *yt, *wt, *dxt;
    size_t small; /* eng_sgemm_small_mnk() */
} tap_job;

static size_t taps(const eng_conv2d_geom *g)
{
    return g->KH * g->KW;
}

/* The scratch's layout (eng_convtap_scratch_floats): xt [IC*IH*IW*N], yt [OC*OH*OW*N],
 * dxt [IC*IH*IW*N] (backward only), then the weight blocks wt. */
static void set_scratch(tap_job *j, float *scratch)
{
    const eng_conv2d_geom *g = j->g;
    j->xt = scratch;
    j->yt = j->xt + g->IC * g->IH * g->IW * j->N;
    j->dxt = j->yt + g->OC * g->OH * g->OW * j->N;
    j->wt = j->dxt + g->IC * g->IH * g->IW * j->N;
}

/* Part p's weight block. */
static float *block_of(const tap_job *j, size_t p)
{
    return j->wt + p * block_floats(j->g);
}

/* The re-layout loops are also built for AVX2 on x86-64 with GCC, picked at load time
 * (ifunc), as im2col.c's: they only move and add floats, so both bodies give the same bits. */

#if defined(__GNUC__) && !defined(__clang__)
/* Four floats as one GCC vector (16 bytes: SSE2 in the default body, VEX in the AVX2 one),
 * moved through memcpy so that no alignment is assumed. */
typedef float tap_v4 __attribute__((vector_size(16)));
typedef int tap_v4i __attribute__((vector_size(16)));

static inline tap_v4 load4(const float *p)
{
    tap_v4 v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* Columns of the 4x4 matrix with rows r[0..3], as rows (unpack, then move pairs). */
static inline void transpose4(tap_v4 r[4])
{
    const tap_v4i lo = {0, 4, 1, 5}, hi = {2, 6, 3, 7}, lo2 = {0, 1, 4, 5}, hi2 = {2, 3, 6, 7};
    tap_v4 t0 = __builtin_shuffle(r[0], r[1], lo), t1 = __builtin_shuffle(r[0], r[1], hi);
    tap_v4 t2 = __builtin_shuffle(r[2], r[3], lo), t3 = __builtin_shuffle(r[2], r[3], hi);
    r[0] = __builtin_shuffle(t0, t2, lo2);
    r[1] = __builtin_shuffle(t0, t2, hi2);
    r[2] = __builtin_shuffle(t1, t3, lo2);
    r[3] = __builtin_shuffle(t1, t3, hi2);
}
#define TAP_VEC4 1
#else
#define TAP_VEC4 0
#endif

/* dst [t][i] (rows ld apart) = src [i][t] for i < n, t < KK: one kernel row of w out to its
 * taps, the reads contiguous. With KK = 9 and GCC, four elements at a time: taps 0-3 and 4-7
 * of four elements are two 4x4 transposes (four loads and four stores each), tap 8 is
 * copied alone (measured on a 512x512x9 kernel: 1.02 ms one tap at a time, 0.45-1.0 with the
 * taps of an element innermost, 0.62-0.72 with the transposes). */
ENG_SIMD_AVX2
static void row_untap(const float *restrict src, size_t n, size_t KK, float *restrict dst,
                      size_t ld)
{
    size_t i = 0;
#if TAP_VEC4
    if (KK == 9)
        for (; i + 4 <= n; i += 4) {
            const float *s = src + i * 9;
            for (size_t t0 = 0; t0 < 8; t0 += 4) {
                tap_v4 r[4] = {load4(s + t0), load4(s + 9 + t0), load4(s + 18 + t0),
                               load4(s + 27 + t0)};
                transpose4(r);
                for (size_t k = 0; k < 4; k++)
                    memcpy(dst + (t0 + k) * ld + i, &r[k], sizeof(r[k]));
            }
            for (size_t k = 0; k < 4; k++)
                dst[8 * ld + i + k] = s[k * 9 + 8];
        }
#endif
    for (; i < n; i++)
        for (size_t t = 0; t < KK; t++)
            dst[t * ld + i] = src[i * KK + t];
}

/* The inverse, into a kernel row: dst [i][t] (+)= src [t][i] (rows ld apart); the writes
 * contiguous (dw's scatter: 1.0 -> 0.4 ms on a 512x512x9 kernel). One loop, inlined with
 * KK = 9 and `accumulate` as constants for 3x3 kernels, so the compiler unrolls the taps. */
static inline __attribute__((always_inline)) void retap(const float *restrict src, size_t ld,
                                                        size_t n, size_t KK, float *restrict dst,
                                                        bool accumulate)
{
    for (size_t i = 0; i < n; i++)
        for (size_t t = 0; t < KK; t++) {
            const float s = src[t * ld + i];
            dst[i * KK + t] = accumulate ? dst[i * KK + t] + s : s;
        }
}

ENG_SIMD_AVX2
static void row_retap(const float *restrict src, size_t ld, size_t n, size_t KK,
                      float *restrict dst, bool accumulate)
{
    if (KK == 9 && accumulate)
        retap(src, ld, n, 9, dst, true);
    else if (KK == 9)
        retap(src, ld, n, 9, dst, false);
    else
        retap(src, ld, n, KK, dst, accumulate);
}

/* The activations' transposes between NCHW planes and the kernel's [channel][position][image]
 * rows: d [(u*V + v)*N + n] = p_n [u*rs + v*S] for the N images' planes p_n (ps floats apart)
 * and positions u < U, v < V, and back. Four images at a time; with S = 1 (S <= 2 into the
 * rows) their positions are read (written) as vectors and turned around by 4x4 transposes,
 * where one image at a time with scalar loads and stores took about 2% of the time of
 * resnet18's conv_tap layers; the rest goes an image at a time. */
ENG_SIMD_AVX2
static void planes_to_rows(const float *restrict p, size_t ps, size_t U, size_t V, size_t rs,
                           size_t S, float *restrict d, size_t N)
{
    for (size_t n = 0; n < N; n += 4) {
        const size_t K = N - n < 4 ? N - n : 4;
        for (size_t u = 0; u < U; u++) {
            const float *pu = p + n * ps + u * rs;
            float *du = d + u * V * N + n;
            size_t q = 0;
#if TAP_VEC4
            const tap_v4i even = {0, 2, 5, 7}; /* stride 2: 0, 2 of [0..3], 4, 6 of [3..6] */
            if (K == 4 && S <= 2)
                for (; q + 4 <= V; q += 4) {
                    tap_v4 r[4];
                    for (size_t k = 0; k < 4; k++) {
                        const float *pk = pu + k * ps + q * S;
                        r[k] =
                            S == 1 ? load4(pk) : __builtin_shuffle(load4(pk), load4(pk + 3), even);
                    }
                    transpose4(r);
                    for (size_t m = 0; m < 4; m++)
                        memcpy(du + (q + m) * N, &r[m], sizeof(r[m]));
                }
#endif
            for (size_t k = 0; k < K; k++) /* an image at a time: a plane's row in order */
                for (size_t i = q; i < V; i++)
                    du[i * N + k] = pu[k * ps + i * S];
        }
    }
}

/* The inverse: p_n [u*rs + v*S] = d [(u*V + v)*N + n] + bias, or += d [..] when accumulating. */
ENG_SIMD_AVX2
static void rows_to_planes(const float *restrict d, size_t N, size_t U, size_t V, size_t rs,
                           size_t S, float *restrict p, size_t ps, bool accumulate, bool add_bias,
                           float bias)
{
    for (size_t n = 0; n < N; n += 4) {
        const size_t K = N - n < 4 ? N - n : 4;
        for (size_t u = 0; u < U; u++) {
            float *pu = p + n * ps + u * rs;
            const float *du = d + u * V * N + n;
            size_t q = 0;
#if TAP_VEC4
            if (K == 4 && S == 1)
                for (; q + 4 <= V; q += 4) {
                    tap_v4 r[4] = {load4(du + q * N), load4(du + (q + 1) * N),
                                   load4(du + (q + 2) * N), load4(du + (q + 3) * N)};
                    transpose4(r);
                    for (size_t k = 0; k < 4; k++) {
                        float *o = pu + k * ps + q;
                        tap_v4 v = r[k];
                        if (accumulate)
                            v += load4(o);
                        else if (add_bias)
                            v += bias;
                        memcpy(o, &v, sizeof(v));
                    }
                }
#endif
            for (size_t k = 0; k < K; k++)
                for (size_t i = q; i < V; i++) {
                    float *o = pu + k * ps + i * S;
                    const float v = du[i * N + k];
                    *o = accumulate ? *o + v : add_bias ? v + bias : v;
                }
        }
    }
}

/* wb [t][oc - o0][ic - lo] = w [oc][ic][t] for oc in [o0, o1), ic in [lo, hi): per oc the
 * contiguous run of w holding those input channels. */
static void weights_runs(const tap_job *j, size_t o0, size_t o1, size_t lo, size_t hi, float *wb)
{
    const size_t IC = j->g->IC, KK = taps(j->g), n = hi - lo;
    for (size_t oc = o0; oc < o1; oc++) {
        const float *src = j->w + (oc * IC + lo) * KK;
        if (oc + 2 < o1) /* the run two rows ahead fetched (also for whole rows) */
            for (size_t k = 0; k < n * KK; k += 16)
                __builtin_prefetch(src + 2 * IC * KK + k);
        row_untap(src, n, KK, wb + (oc - o0) * n, (o1 - o0) * n);
    }
}

/* Channels [lo, hi) of x [N, IC, IH, IW] into xt (every phase), and back (xt_to_input), a
 * channel and a phase at a time. The planes of consecutive images are IC*IH*IW floats apart,
 * on these layers a multiple of 4 KB, so that 32 images' planes fall into the same L1 set:
 * going over all of them for each position thrashed it (the writes of the input gradient's:
 * 3.6% of a frozen step); four at a time they stay, and so does the channel's block of xt
 * (IH*IW*N floats). A phase of a stride-1 convolution is the whole plane, one run of
 * positions. x non-NULL: x into xt; else dxt into dx (j->dst, j->accumulate). */
static void planes_xt(const tap_job *j, const float *x, size_t ic)
{
    const eng_conv2d_geom *g = j->g;
    const size_t N = j->N, IC = g->IC, IP = g->IH * g->IW;
    size_t off = 0; /* floats of xt before phase (a, b) */
    for (size_t a = 0; a < g->SH; a++)
        for (size_t b = 0; b < g->SW; b++) {
            const size_t Hu = phase_len(g->IH, g->SH, a), Wv = phase_len(g->IW, g->SW, b);
            const bool whole = g->SH == 1 && g->SW == 1;
            const size_t U = whole ? 1 : Hu, V = whole ? IP : Wv, rs = g->SH * g->IW;
            const size_t at = ic * IP + a * g->IW + b, row = off + ic * Hu * Wv * N;
            if (x)
                planes_to_rows(x + at, IC * IP, U, V, rs, g->SW, j->xt + row, N);
            else
                rows_to_planes(j->dxt + row, N, U, V, rs, g->SW, j->dst + at, IC * IP,
                               j->accumulate, false, 0.0f);
            off += Hu * Wv * IC * N;
        }
}

static void input_to_xt(const tap_job *j, const float *x, size_t lo, size_t hi)
{
    for (size_t ic = lo; ic < hi; ic++)
        planes_xt(j, x, ic);
}

static void xt_to_input(const tap_job *j, size_t lo, size_t hi)
{
    for (size_t ic = lo; ic < hi; ic++)
        planes_xt(j, NULL, ic);
}

/* ---- forward ----------------------------------------------------------------------------- */

static void fwd_transpose_part(void *ctx, size_t p, size_t T)
{
    const tap_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->g->IC, p, T, &lo, &hi);
    input_to_xt(j, j->src, lo, hi);
}

/* Output channels [lo, hi), a weight block at a time: its weights, every tap's GEMMs; then
 * y with the bias. */
static void fwd_gemm_part(void *ctx, size_t p, size_t T)
{
    const tap_job *j = ctx;
    const eng_conv2d_geom *g = j->g;
    const size_t N = j->N, OC = g->OC, IC = g->IC, P = g->OH * g->OW, PN = P * N;
    size_t lo, hi;
    eng_par_range(OC, p, T, &lo, &hi);
    if (lo == hi)
        return;
    float *wb = block_of(j, p);
    memset(j->yt + lo * PN, 0, (hi - lo) * PN * sizeof(float));
    size_t BO, BI;
    fwd_blocks(g, &BO, &BI);
    for (size_t o0 = lo; o0 < hi; o0 += BO) {
        const size_t bo = hi - o0 < BO ? hi - o0 : BO;
        float *yt = j->yt + o0 * PN;
        for (size_t i0 = 0; i0 < IC; i0 += BI) {
            const size_t bi = IC - i0 < BI ? IC - i0 : BI;
            weights_runs(j, o0, o0 + bo, i0, i0 + bi, wb);
            for (size_t t = 0; t < taps(g); t++) {
                const tap_span sp = tap_span_of(g, N, t / g->KW, t % g->KW);
                const float *wt = wb + t * bo * bi; /* W_t [o0.., i0..] */
                const float *xt = j->xt + sp.phase_off + i0 * sp.ld_in;
                for (size_t i = 0, nb = tap_nblocks(&sp); i < nb; i++) {
                    size_t oc_col, ic_col, nc = tap_block(g, N, &sp, i, &oc_col, &ic_col);
                    for (size_t c0 = 0, C = small_cols(bo, bi, nc, j->small); c0 < nc; c0 += C)
                        eng_sgemm(false, false, bo, nc - c0 < C ? nc - c0 : C, bi, 1.0f, wt, bi,
                                  xt + ic_col + c0, sp.ld_in, 1.0f, yt + oc_col + c0, PN);
                }
            }
        }
    }
    for (size_t oc = lo; oc < hi; oc++) {
        const float *s = j->yt + oc * PN;
        const float bias = j->b ? j->b[oc] : 0.0f;
        rows_to_planes(s, N, 1, P, 0, 1, j->dst + oc * P, OC * P, false, true, bias);
    }
}

void eng_convtap_forward(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                         const float *b, float *y, float *scratch)
{
    if (N == 0)
        return;
    tap_job j = {
        .g = g, .N = N, .src = x, .w = w, .b = b, .dst = y, .small = eng_sgemm_small_mnk()};
    set_scratch(&j, scratch);
    const size_t T = eng_par_threads();
    eng_par_run(T < g->IC ? T : g->IC, fwd_transpose_part, &j);
    eng_par_run(T < g->OC ? T : g->OC, fwd_gemm_part, &j);
}

/* ---- backward: input and weight gradients ----------------------------------------------- */

/* dy into dyt [OC][OH*OW][N] for output channels [lo, hi); x into xt for the weight
 * gradient, input channels [lo, hi) of the same split of IC. */
static void bwd_transpose_part(void *ctx, size_t p, size_t T)
{
    const tap_job *j = ctx;
    const size_t OC = j->g->OC, N = j->N, P = j->g->OH * j->g->OW;
    size_t lo, hi;
    eng_par_range(OC, p, T, &lo, &hi);
    for (size_t oc = lo; oc < hi; oc++) {
        float *d = j->yt + oc * P * N;
        planes_to_rows(j->src + oc * P, OC * P, 1, P, 0, 1, d, N);
    }
    if (j->dw) {
        eng_par_range(j->g->IC, p, T, &lo, &hi);
        input_to_xt(j, j->x, lo, hi);
    }
}

/* Input channels [lo, hi): dxt rows = sum over taps of W_t^T dy blocks, summed over blocks
 * of output channels (the GEMMs' K), then into dx. Blocking over output channels reads w in
 * runs of whole rows (the part's input channels) and gives GEMMs as tall as the part's
 * channels (M = 512, K = 32 ran at 101 GFLOPS against 86-91 for M = 32, K = 512 from input-
 * channel blocks, whose weights were short runs a row of w apart). The block length does not
 * depend on the thread count, so neither do the sums' order and the results. */
static void bwd_input_part(void *ctx, size_t p, size_t T)
{
    const tap_job *j = ctx;
    const eng_conv2d_geom *g = j->g;
    const size_t N = j->N, OC = g->OC, PN = g->OH * g->OW * N;
    size_t lo, hi;
    eng_par_range(g->IC, p, T, &lo, &hi);
    if (lo == hi)
        return;
    for (size_t a = 0; a < g->SH; a++) /* rows lo.. of every phase: inputs no tap reads stay 0 */
        for (size_t b = 0; b < g->SW; b++) {
            size_t len = phase_len(g->IH, g->SH, a) * phase_len(g->IW, g->SW, b) * N;
            memset(j->dxt + phase_offset(g, N, a, b) + lo * len, 0,
                   (hi - lo) * len * sizeof(float));
        }
    float *wb = block_of(j, p);
    const size_t n = hi - lo;
    for (size_t o0 = 0, B = block_len(g, WT_BLOCK_FLOATS); o0 < OC; o0 += B) {
        const size_t b = OC - o0 < B ? OC - o0 : B;
        weights_runs(j, o0, o0 + b, lo, hi, wb);
        for (size_t t = 0; t < taps(g); t++) {
            const tap_span sp = tap_span_of(g, N, t / g->KW, t % g->KW);
            const float *wt = wb + t * b * n; /* W_t [o0.., lo..hi) */
            float *dxt = j->dxt + sp.phase_off + lo * sp.ld_in;
            for (size_t i = 0, nb = tap_nblocks(&sp); i < nb; i++) {
                size_t oc_col, ic_col, nc = tap_block(g, N, &sp, i, &oc_col, &ic_col);
                for (size_t c0 = 0, C = small_cols(n, b, nc, j->small); c0 < nc; c0 += C)
                    eng_sgemm(true, false, n, nc - c0 < C ? nc - c0 : C, b, 1.0f, wt, n,
                              j->yt + o0 * PN + oc_col + c0, PN, 1.0f, dxt + ic_col + c0, sp.ld_in);
            }
        }
    }
    xt_to_input(j, lo, hi);
}

/* Output channels [lo, hi), a block at a time: dW_t rows = sum over column blocks of
 * dy block * x block^T into the part's weight block, then into dw [OC, IC, KH, KW]. */
static void bwd_weight_part(void *ctx, size_t p, size_t T)
{
    const tap_job *j = ctx;
    const eng_conv2d_geom *g = j->g;
    const size_t N = j->N, IC = g->IC, KK = taps(g), PN = g->OH * g->OW * N;
    size_t lo, hi;
    eng_par_range(g->OC, p, T, &lo, &hi);
    float *wb = block_of(j, p);
    for (size_t o0 = lo, B = block_len(g, WG_BLOCK_FLOATS); o0 < hi; o0 += B) {
        const size_t b = hi - o0 < B ? hi - o0 : B;
        for (size_t t = 0; t < KK; t++) {
            const tap_span sp = tap_span_of(g, N, t / g->KW, t % g->KW);
            float *dwt = wb + t * b * IC; /* rows o0.. of dW_t [OC, IC] */
            memset(dwt, 0, b * IC * sizeof(float));
            for (size_t i = 0, nb = tap_nblocks(&sp); i < nb; i++) {
                size_t oc_col, ic_col, nc = tap_block(g, N, &sp, i, &oc_col, &ic_col);
                eng_sgemm(false, true, b, IC, nc, 1.0f, j->yt + o0 * PN + oc_col, PN,
                          j->xt + sp.phase_off + ic_col, sp.ld_in, 1.0f, dwt, IC);
            }
        }
        for (size_t oc = o0; oc < o0 + b; oc++)
            row_retap(wb + (oc - o0) * IC, b * IC, IC, KK, j->dw + oc * IC * KK, j->accumulate_dw);
    }
}

void eng_convtap_backward(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                          const float *dy, float *dw, bool accumulate_dw, float *dx,
                          bool accumulate_dx, float *scratch)
{
    if (!dw && !dx)
        return;
    if (N == 0) {
        if (dw && !accumulate_dw)
            memset(dw, 0, g->OC * g->IC * taps(g) * sizeof(float));
        return;
    }
    tap_job j = {.g = g,
                 .N = N,
                 .src = dy,
                 .w = w,
                 .dst = dx,
                 .accumulate = accumulate_dx,
                 .x = x,
                 .dw = dw,
                 .accumulate_dw = accumulate_dw,
                 .small = eng_sgemm_small_mnk()};
    set_scratch(&j, scratch);
    const size_t T = eng_par_threads(), C = g->OC > g->IC ? g->OC : g->IC;
    eng_par_run(T < C ? T : C, bwd_transpose_part, &j);
    if (dx)
        eng_par_run(T < g->IC ? T : g->IC, bwd_input_part, &j);
    if (dw)
        eng_par_run(T < g->OC ? T : g->OC, bwd_weight_part, &j);
}

void eng_convtap_backward_input(const eng_conv2d_geom *g, size_t N, const float *w, const float *dy,
                                float *dx, bool accumulate, float *scratch)
{
    eng_convtap_backward(g, N, NULL, w, dy, NULL, false, dx, accumulate, scratch);
}
