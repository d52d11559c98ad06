/*
 * winograd.c: 3x3, stride-1, padding-1 convolution by Winograd's minimal filtering
 * F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
 *
 * DESIGN. Each 2x2 block of outputs (a tile) is computed from the 4x4 input patch around it:
 *   Y = A^T [ (G g G^T) .* (B^T d B) ] A
 * with
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 * so a tile costs 16 multiplies per (oc, ic) pair instead of 36. Summed over the input
 * channels, the element-wise products become 16 independent GEMMs, one per position e of
 * the 4x4 transformed tile:  M[e] [OC, T] = U[e] [OC, IC] * V[e] [IC, T]  over a chunk of
 * T tiles, which OpenBLAS runs at its usual speed. Chunks of whole images keep V and M
 * (16 x (IC + OC) x T floats) small enough to stay in the L2 cache (eng_wino_chunk).
 * The input gradient of such a convolution is the same convolution of dy with the weights
 * transposed (ic <-> oc) and rotated by 180 degrees, so eng_wino_weights can prepare U for it.
 *
 * The weight gradient follows from the same formula read backwards: with Z = U .* V per
 * tile, dZ = A dY A^T (the adjoint of the output transform; dY is 0 outside the image), so
 *   dU[e] [OC, IC] = sum over tiles of dZ[e] [OC, T] * V[e]^T [T, IC]   (16 GEMMs per chunk)
 *   dw = G^T dU G                                                          per (oc, ic)
 * The chunks' products are summed in the 16 x OC x IC accumulator in chunk order (beta = 1),
 * then transformed once: 2.25x fewer multiplies than the im2col GEMM dw += dy * col^T. V is
 * recomputed from x rather than kept from the forward pass: keeping it would cost 4x the
 * layer's input in memory for a transform that reads x once.
 *
 * F(4x4, 3x3) (below) does the same with 6x6 tiles and 36 positions, 2.25x fewer multiplies
 * than F(2x2) per output; eng_wino_pick chooses it for the forward and input-gradient
 * convolutions of large enough maps.
 */
#include "winograd.h"

#include <stdint.h>
#include <string.h>

#include "gemm.h"
#include "util.h"

/* Smallest map edge on which variant 4's weight gradient runs as F(4x4) (wgrad_variant): that
 * of eng_wino_pick, so variant 4's layers take F(4x4) for all three passes. */
#define WGRAD4_MIN 12

/* The transforms are element-wise loops over short rows (7 to 64 tiles) that the compiler
 * vectorises; on x86-64 with GCC they are also built for AVX2 and AVX-512 and picked at load
 * time (ifunc): AVX2 about 5% less CPU per M1 frozen_bn step, 2% per training step, than
 * SSE2 alone; AVX-512 (one vector per row of 16 tiles) another 0.5-1 ms per direction of
 * M1's 64 -> 64 convolution at batch 128. Without FMA (in neither clone's target; C17 mode
 * also keeps GCC from contracting) and without reassociation, every clone computes the same
 * bits. */

bool eng_wino_applies(const eng_conv2d_geom *g)
{
    return g->KH == 3 && g->KW == 3 && g->SH == 1 && g->SW == 1 && g->PH == 1 && g->PW == 1;
}

size_t eng_wino_tiles(size_t H, size_t W)
{
    return eng_wino_tiles_t(2, H, W);
}

size_t eng_wino_chunk(size_t C_in, size_t C_out, size_t H, size_t W, size_t N)
{
    return eng_wino_chunk_t(2, C_in, C_out, H, W, N);
}

size_t eng_wino_scratch_floats(size_t C_in, size_t C_out, size_t H, size_t W, size_t nb)
{
    return eng_wino_scratch_floats_t(2, C_in, C_out, H, W, nb);
}

size_t eng_wino_wgrad_scratch_floats(size_t C_in, size_t C_out, size_t H, size_t W, size_t nb)
{
    return eng_wino_wgrad_scratch_floats_t(2, C_in, C_out, H, W, nb);
}

void eng_wino_weights(size_t OC, size_t IC, const float *w, bool transpose_flip, float *U)
{
    eng_wino_weights_t(2, OC, IC, w, transpose_flip, U);
}

void eng_wino_conv(size_t C_in, size_t C_out, size_t H, size_t W, size_t N, const float *x,
                   const float *U, float *y, bool accumulate, float *scratch, size_t nb)
{
    eng_wino_conv_t(2, C_in, C_out, H, W, N, x, U, y, accumulate, scratch, nb);
}

void eng_wino_wgrad(size_t C_in, size_t C_out, size_t H, size_t W, size_t N, const float *x,
                    const float *dy, float *dw, bool accumulate, float *scratch, size_t nb)
{
    eng_wino_wgrad_t(2, C_in, C_out, H, W, N, x, dy, dw, accumulate, scratch, nb);
}

/* weights2's reference: one kernel at a time (eng_wino_weights_naive_t) */
static void weights2_naive(size_t OC, size_t IC, const float *w, bool transpose_flip, float *U)
{
    /* output channels of the transformed convolution: OC, or IC when transposed */
    const size_t RO = transpose_flip ? IC : OC, RI = transpose_flip ? OC : IC;
    for (size_t o = 0; o < RO; o++)
        for (size_t i = 0; i < RI; i++) {
            float g[3][3];
            for (size_t kh = 0; kh < 3; kh++)
                for (size_t kw = 0; kw < 3; kw++)
                    g[kh][kw] = transpose_flip ? w[((i * IC + o) * 3 + (2 - kh)) * 3 + (2 - kw)]
                                               : w[((o * IC + i) * 3 + kh) * 3 + kw];
            float q[4][3]; /* G g */
            for (size_t c = 0; c < 3; c++) {
                q[0][c] = g[0][c];
                q[1][c] = 0.5f * (g[0][c] + g[1][c] + g[2][c]);
                q[2][c] = 0.5f * (g[0][c] - g[1][c] + g[2][c]);
                q[3][c] = g[2][c];
            }
            for (size_t r = 0; r < 4; r++) { /* (G g) G^T */
                float u[4] = {q[r][0], 0.5f * (q[r][0] + q[r][1] + q[r][2]),
                              0.5f * (q[r][0] - q[r][1] + q[r][2]), q[r][2]};
                for (size_t c = 0; c < 4; c++)
                    U[((r * 4 + c) * RO + o) * RI + i] = u[c];
            }
        }
}

/* Floats of the zero-padded copy of one input plane, (2*TH + 2) x (2*TW + 2); it also holds
 * the gradient transform's 2*TH x 2*TW plane and 4 x TW rows. */
static size_t pad_floats(size_t H, size_t W)
{
    return (2 * ((H + 1) / 2) + 4) * (2 * ((W + 1) / 2) + 2);
}

/* One row of TW tiles of B^T d B: the row b = p + q (add) or p - q of B^T d, p and q rows of
 * the de-interleaved padded plane (even columns pE[0..TW], odd pO[0..TW]; tile tx covers
 * columns 2tx .. 2tx+3 = E[tx], O[tx], E[tx+1], O[tx+1]), gives positions v0..v3[tx].
 * Unit-stride loops, which the compiler vectorises; b is not stored (reloading a row just
 * written, shifted by one float, stalls on store forwarding). */
ENG_SIMD_AVX512 static void row_tiles(size_t TW, const float *restrict pE, const float *restrict pO,
                                      const float *restrict qE, const float *restrict qO, bool add,
                                      float *restrict v0, float *restrict v1, float *restrict v2,
                                      float *restrict v3)
{
    if (add)
        for (size_t tx = 0; tx < TW; tx++) {
            const float e0 = pE[tx] + qE[tx], o0 = pO[tx] + qO[tx];
            const float e1 = pE[tx + 1] + qE[tx + 1], o1 = pO[tx + 1] + qO[tx + 1];
            v0[tx] = e0 - e1;
            v1[tx] = o0 + e1;
            v2[tx] = e1 - o0;
            v3[tx] = o0 - o1;
        }
    else
        for (size_t tx = 0; tx < TW; tx++) {
            const float e0 = pE[tx] - qE[tx], o0 = pO[tx] - qO[tx];
            const float e1 = pE[tx + 1] - qE[tx + 1], o1 = pO[tx + 1] - qO[tx + 1];
            v0[tx] = e0 - e1;
            v1[tx] = o0 + e1;
            v2[tx] = e1 - o0;
            v3[tx] = o0 - o1;
        }
}

/* V[e][c][n*T + t] for the m images x [C, H, W] of a chunk. Each plane is first copied into
 * a zero border (pad, 1 pixel left/top, 1-2 right/bottom) with every padded row stored
 * de-interleaved: its TW+1 even columns, then its TW+1 odd columns. The transform then has no
 * bounds tests and no strided reads: per row of tiles, the 4 rows of B^T d are row sums or
 * differences of the plane, and each gives 4 of the 16 positions (row_tiles). */
ENG_SIMD_AVX512 static void input_transform(size_t C, size_t H, size_t W, size_t m, const float *x,
                                            float *V, size_t ldv, float *pad)
{
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, T = TH * TW, PW = 2 * TW + 2, HW = TW + 1;
    memset(pad, 0, (2 * TH + 2) * PW * sizeof(float));
    for (size_t n = 0; n < m; n++)
        for (size_t c = 0; c < C; c++) {
            const float *xc = x + (n * C + c) * H * W;
            for (size_t h = 0; h < H; h++) {
                /* padded column j holds x column j - 1: x's even columns are odd ones */
                float *rowE = pad + (h + 1) * PW, *rowO = rowE + HW;
                const float *xr = xc + h * W;
                for (size_t k = 0; k < W / 2; k++) {
                    rowO[k] = xr[2 * k];
                    rowE[k + 1] = xr[2 * k + 1];
                }
                if (W % 2)
                    rowO[W / 2] = xr[W - 1];
            }
            float *vc = V + c * ldv + n * T;
            for (size_t ty = 0; ty < TH; ty++) {
                const float *r0 = pad + 2 * ty * PW, *r1 = r0 + PW, *r2 = r1 + PW, *r3 = r2 + PW;
                /* rows of B^T d: r0 - r2, r1 + r2, r2 - r1, r1 - r3 */
                const float *P[4] = {r0, r1, r2, r1}, *Q[4] = {r2, r2, r1, r3};
                for (size_t r = 0; r < 4; r++) {
                    float *v = vc + r * 4 * C * ldv + ty * TW;
                    row_tiles(TW, P[r], P[r] + HW, Q[r], Q[r] + HW, r == 1, v, v + C * ldv,
                              v + 2 * C * ldv, v + 3 * C * ldv);
                }
            }
        }
}

/* The output map of eng_wino_conv_relu_t on one value: v * a + b, then the ReLU (written as
 * in the BatchNorm kernel, so that both give the same bits). */
static inline float affine_relu(float v, float a, float b)
{
    const float z = v * a + b;
    return z > 0.0f ? z : 0.0f;
}

/* A^T M A for one row of TW tiles: m points at position 0 of the row's first tile, positions
 * es apart, tiles contiguous. Writes the two output rows de-interleaved: even columns of row
 * 0 in o0E[tx], odd in o0O[tx], likewise o1E/o1O (unit-stride, vectorised). */
static void out_tiles(size_t TW, const float *restrict m, size_t es, float *restrict o0E,
                      float *restrict o0O, float *restrict o1E, float *restrict o1O)
{
    for (size_t tx = 0; tx < TW; tx++) {
        float a0[4], a1[4]; /* A^T M */
        for (size_t k = 0; k < 4; k++) {
            float m0 = m[k * es + tx], m1 = m[(4 + k) * es + tx];
            float m2 = m[(8 + k) * es + tx], m3 = m[(12 + k) * es + tx];
            a0[k] = m0 + m1 + m2;
            a1[k] = m1 - m2 - m3;
        }
        o0E[tx] = a0[0] + a0[1] + a0[2];
        o0O[tx] = a0[1] - a0[2] - a0[3];
        o1E[tx] = a1[0] + a1[1] + a1[2];
        o1O[tx] = a1[1] - a1[2] - a1[3];
    }
}

/* out_tiles for even planes written without accumulation: the two output rows go straight
 * to y0 and y1 (2*TW floats each), interleaved in registers; with `aff`, mapped by
 * affine_relu(., a, b). */
static inline void out_tiles_y(size_t TW, const float *restrict m, size_t es, float *restrict y0,
                               float *restrict y1, bool aff, float a, float b)
{
    for (size_t tx = 0; tx < TW; tx++) {
        float a0[4], a1[4]; /* A^T M */
        for (size_t k = 0; k < 4; k++) {
            float m0 = m[k * es + tx], m1 = m[(4 + k) * es + tx];
            float m2 = m[(8 + k) * es + tx], m3 = m[(12 + k) * es + tx];
            a0[k] = m0 + m1 + m2;
            a1[k] = m1 - m2 - m3;
        }
        float v[4] = {a0[0] + a0[1] + a0[2], a0[1] - a0[2] - a0[3], a1[0] + a1[1] + a1[2],
                      a1[1] - a1[2] - a1[3]};
        if (aff)
            for (size_t k = 0; k < 4; k++)
                v[k] = affine_relu(v[k], a, b);
        y0[2 * tx] = v[0];
        y0[2 * tx + 1] = v[1];
        y1[2 * tx] = v[2];
        y1[2 * tx + 1] = v[3];
    }
}

/* dst[w] (+)= the w-th column of a row stored de-interleaved as E[TW], O[TW], w < W; with
 * `aff` (not accumulating) mapped by affine_relu(., a, b). */
static inline void row_store(size_t W, const float *restrict E, const float *restrict O,
                             float *restrict dst, bool accumulate, bool aff, float a, float b)
{
    const size_t h = W / 2;
    if (accumulate) {
        for (size_t k = 0; k < h; k++) {
            dst[2 * k] += E[k];
            dst[2 * k + 1] += O[k];
        }
        if (W % 2)
            dst[W - 1] += E[h];
    } else if (aff) {
        for (size_t k = 0; k < h; k++) {
            dst[2 * k] = affine_relu(E[k], a, b);
            dst[2 * k + 1] = affine_relu(O[k], a, b);
        }
        if (W % 2)
            dst[W - 1] = affine_relu(E[h], a, b);
    } else {
        for (size_t k = 0; k < h; k++) {
            dst[2 * k] = E[k];
            dst[2 * k + 1] = O[k];
        }
        if (W % 2)
            dst[W - 1] = E[h];
    }
}

/* y (+)= A^T M A for the m images x [C, H, W] of a chunk, one row of tiles at a time into
 * the 2*TH x 2*TW plane `buf` (rows de-interleaved, reads of M contiguous across tiles), then
 * interleaved into y; with scale (not accumulating), mapped as eng_wino_conv_relu_t says. */
ENG_SIMD_AVX512 static void output_transform(size_t C, size_t H, size_t W, size_t m, const float *M,
                                             size_t ldm, float *y, bool accumulate, float *buf,
                                             const float *scale, const float *shift)
{
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, T = TH * TW, BW = 2 * TW;
    const bool aff = scale != NULL;
    for (size_t n = 0; n < m; n++)
        for (size_t c = 0; c < C; c++) {
            float *yc = y + (n * C + c) * H * W;
            const float *mc = M + c * ldm + n * T;
            const size_t es = C * ldm; /* stride between the 16 positions */
            const float a = aff ? scale[c] : 1.0f, b = aff ? shift[c] : 0.0f;
            if (!accumulate && H % 2 == 0 && W % 2 == 0) {
                for (size_t ty = 0; ty < TH; ty++)
                    out_tiles_y(TW, mc + ty * TW, es, yc + 2 * ty * W, yc + (2 * ty + 1) * W, aff,
                                a, b);
                continue;
            }
            for (size_t ty = 0; ty < TH; ty++) {
                float *o0 = buf + 2 * ty * BW, *o1 = o0 + BW;
                out_tiles(TW, mc + ty * TW, es, o0, o0 + TW, o1, o1 + TW);
            }
            for (size_t h = 0; h < H; h++)
                row_store(W, buf + h * BW, buf + h * BW + TW, yc + h * W, accumulate, aff, a, b);
        }
}

/* The column half of A dY A^T for one row of TW tiles, for the row s = ka * a + kc * c of
 * A dY (a, c: the tile rows of dY, de-interleaved; ka, kc constants in {-1, 0, 1} after
 * inlining): positions o0..o3[tx] = s0, s0 + s1, s0 - s1, -s1. */
static inline void grad_cols(size_t TW, const float *restrict aE, const float *restrict aO,
                             const float *restrict cE, const float *restrict cO, float ka, float kc,
                             float *restrict o0, float *restrict o1, float *restrict o2,
                             float *restrict o3)
{
    for (size_t tx = 0; tx < TW; tx++) {
        const float s0 = ka * aE[tx] + kc * cE[tx], s1 = ka * aO[tx] + kc * cO[tx];
        o0[tx] = s0;
        o1[tx] = s0 + s1;
        o2[tx] = s0 - s1;
        o3[tx] = -s1;
    }
}

/* E[k] = src[2k], O[k] = src[2k + 1] for k < n. */
static void deinterleave(size_t n, const float *restrict src, float *restrict E, float *restrict O)
{
    for (size_t k = 0; k < n; k++) {
        E[k] = src[2 * k];
        O[k] = src[2 * k + 1];
    }
}

/* D[e][c][n*T + t] = (A dY A^T)[e] of the 2x2 tiles of the m images dy [C, H, W] of a chunk
 * (the adjoint of output_transform). Odd planes are first copied into the zeroed 2*TH x 2*TW
 * plane `buf`, whose last row/column then stays 0; even planes are read in place. Each pair
 * of rows is de-interleaved into rows after the plane in buf, then transformed with
 * unit-stride loops (grad_cols). buf: pad_floats(H, W). */
ENG_SIMD_AVX512 static void grad_transform(size_t C, size_t H, size_t W, size_t m, const float *dy,
                                           float *D, size_t ldd, float *buf)
{
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, T = TH * TW, BW = 2 * TW;
    const bool even = H % 2 == 0 && W % 2 == 0;
    float *rows = buf + 2 * TH * BW; /* 4 x TW: two tile rows, de-interleaved */
    if (!even)
        memset(buf, 0, 2 * TH * BW * sizeof(float));
    for (size_t n = 0; n < m; n++)
        for (size_t c = 0; c < C; c++) {
            const float *plane = dy + (n * C + c) * H * W;
            if (!even) {
                for (size_t h = 0; h < H; h++)
                    memcpy(buf + h * BW, plane + h * W, W * sizeof(float));
                plane = buf;
            }
            float *dc = D + c * ldd + n * T;
            const size_t es = C * ldd; /* stride between the 16 positions */
            for (size_t ty = 0; ty < TH; ty++) {
                float *aE = rows, *aO = aE + TW, *cE = aO + TW, *cO = cE + TW;
                deinterleave(TW, plane + 2 * ty * BW, aE, aO);
                deinterleave(TW, plane + (2 * ty + 1) * BW, cE, cO);
                /* rows of A dY: a, a + c, a - c, -c */
                float *o = dc + ty * TW;
                grad_cols(TW, aE, aO, cE, cO, 1.0f, 0.0f, o, o + es, o + 2 * es, o + 3 * es);
                o += 4 * es;
                grad_cols(TW, aE, aO, cE, cO, 1.0f, 1.0f, o, o + es, o + 2 * es, o + 3 * es);
                o += 4 * es;
                grad_cols(TW, aE, aO, cE, cO, 1.0f, -1.0f, o, o + es, o + 2 * es, o + 3 * es);
                o += 4 * es;
                grad_cols(TW, aE, aO, cE, cO, 0.0f, -1.0f, o, o + es, o + 2 * es, o + 3 * es);
            }
        }
}

/* dw (+)= G^T acc G per (oc, ic), acc [16][C_out][C_in]. */
/* the reference, one kernel at a time (eng_wino_wgrad_finish_naive_t) */
static void wgrad_finish2_naive(size_t C_in, size_t C_out, const float *acc, float *dw,
                                bool accumulate)
{
    /* G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1] */
    const size_t es = C_out * C_in;
    for (size_t o = 0; o < C_out; o++)
        for (size_t i = 0; i < C_in; i++) {
            const float *a = acc + o * C_in + i;
            float q[3][4]; /* G^T acc */
            for (size_t c = 0; c < 4; c++) {
                const float m0 = a[c * es], m1 = a[(4 + c) * es];
                const float m2 = a[(8 + c) * es], m3 = a[(12 + c) * es];
                q[0][c] = m0 + 0.5f * (m1 + m2);
                q[1][c] = 0.5f * (m1 - m2);
                q[2][c] = 0.5f * (m1 + m2) + m3;
            }
            float *g = dw + (o * C_in + i) * 9;
            for (size_t r = 0; r < 3; r++) {
                const float v[3] = {q[r][0] + 0.5f * (q[r][1] + q[r][2]),
                                    0.5f * (q[r][1] - q[r][2]),
                                    0.5f * (q[r][1] + q[r][2]) + q[r][3]};
                for (size_t k = 0; k < 3; k++)
                    g[r * 3 + k] = accumulate ? g[r * 3 + k] + v[k] : v[k];
            }
        }
}

/* ---- F(4x4, 3x3) ------------------------------------------------------------------------- */

/* F(4x4, 3x3) works like F(2x2, 3x3) above with 6x6 input tiles at a stride of 4 and 36
 * transformed positions; a 4x4 output tile costs 36 multiplies per (oc, ic) pair instead of
 * 64 (F(2x2, 3x3)) or 144 (direct). The matrices (interpolation points 0, +-1, +-2, inf):
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
 *          0 4 0 -5 0 1]
 *   G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * The forward and input-gradient convolutions use it where eng_wino_pick says, the weight
 * gradient only on maps of at least WGRAD4_MIN (wgrad_variant).
 * Each plane is first split into arrays over its tiles, one per position in the tile, so that
 * both halves of every transform (rows, then columns) are unit-stride loops over the tiles of
 * the plane. */

/* B^T applied to six vectors of n tiles: o0 = 4 d0 - 5 d2 + d4; o1, o2 = (d4 - 4 d2) +- (d3 -
 * 4 d1); o3, o4 = (d4 - d2) +- 2 (d3 - d1); o5 = 4 d1 - 5 d3 + d5. */
ENG_SIMD_AVX512 static void bt6(size_t n, const float *restrict d0, const float *restrict d1,
                                const float *restrict d2, const float *restrict d3,
                                const float *restrict d4, const float *restrict d5,
                                float *restrict o0, float *restrict o1, float *restrict o2,
                                float *restrict o3, float *restrict o4, float *restrict o5)
{
    for (size_t t = 0; t < n; t++) {
        const float a = d4[t] - 4.0f * d2[t], b = d3[t] - 4.0f * d1[t];
        const float c = d4[t] - d2[t], e = 2.0f * (d3[t] - d1[t]);
        o0[t] = 4.0f * d0[t] - 5.0f * d2[t] + d4[t];
        o1[t] = a + b;
        o2[t] = a - b;
        o3[t] = c + e;
        o4[t] = c - e;
        o5[t] = 4.0f * d1[t] - 5.0f * d3[t] + d5[t];
    }
}

/* A^T applied to six vectors: y0 = m0 + (m1 + m2) + (m3 + m4); y1 = (m1 - m2) + 2 (m3 - m4);
 * y2 = (m1 + m2) + 4 (m3 + m4); y3 = (m1 - m2) + 8 (m3 - m4) + m5. */
ENG_SIMD_AVX512 static void at6(size_t n, const float *restrict m0, const float *restrict m1,
                                const float *restrict m2, const float *restrict m3,
                                const float *restrict m4, const float *restrict m5,
                                float *restrict y0, float *restrict y1, float *restrict y2,
                                float *restrict y3)
{
    for (size_t t = 0; t < n; t++) {
        const float s1 = m1[t] + m2[t], d1 = m1[t] - m2[t];
        const float s2 = m3[t] + m4[t], d2 = m3[t] - m4[t];
        y0[t] = m0[t] + s1 + s2;
        y1[t] = d1 + 2.0f * d2;
        y2[t] = s1 + 4.0f * s2;
        y3[t] = d1 + 8.0f * d2 + m5[t];
    }
}

/* at6, each output then mapped by affine_relu(., a, b) (eng_wino_conv_relu_t) */
ENG_SIMD_AVX512 static void at6_relu(size_t n, const float *restrict m0, const float *restrict m1,
                                     const float *restrict m2, const float *restrict m3,
                                     const float *restrict m4, const float *restrict m5,
                                     float *restrict y0, float *restrict y1, float *restrict y2,
                                     float *restrict y3, float a, float b)
{
    for (size_t t = 0; t < n; t++) {
        const float s1 = m1[t] + m2[t], d1 = m1[t] - m2[t];
        const float s2 = m3[t] + m4[t], d2 = m3[t] - m4[t];
        y0[t] = affine_relu(m0[t] + s1 + s2, a, b);
        y1[t] = affine_relu(d1 + 2.0f * d2, a, b);
        y2[t] = affine_relu(s1 + 4.0f * s2, a, b);
        y3[t] = affine_relu(d1 + 8.0f * d2 + m5[t], a, b);
    }
}

/* A (the adjoint of A^T) applied to four vectors: z0 = y0, z1, z2 = (y0 + y2) +- (y1 + y3),
 * z3, z4 = (y0 + 4 y2) +- 2 (y1 + 4 y3), z5 = y3. */
ENG_SIMD_AVX512 static void a4(size_t n, const float *restrict y0, const float *restrict y1,
                               const float *restrict y2, const float *restrict y3,
                               float *restrict z0, float *restrict z1, float *restrict z2,
                               float *restrict z3, float *restrict z4, float *restrict z5)
{
    for (size_t t = 0; t < n; t++) {
        const float p = y0[t] + y2[t], q = y1[t] + y3[t];
        const float r = y0[t] + 4.0f * y2[t], s = 2.0f * (y1[t] + 4.0f * y3[t]);
        z0[t] = y0[t];
        z1[t] = p + q;
        z2[t] = p - q;
        z3[t] = r + s;
        z4[t] = r - s;
        z5[t] = y3[t];
    }
}

/* Four floats as one vector (the GNU C vector extension) for the 4x4 transposes that split a
 * row into its four phases (columns 4k + b) and interleave them back: a stride-4 scatter or
 * gather as whole-vector loads, shuffles and stores. */
typedef float wv4 __attribute__((vector_size(16)));
typedef int32_t wi4 __attribute__((vector_size(16)));
#if defined(__clang__)
#define SHUF(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define SHUF(a, b, i, j, k, l) __builtin_shuffle(a, b, (wi4){i, j, k, l})
#endif

static inline wv4 wload(const float *p)
{
    wv4 v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void wstore(float *p, wv4 v)
{
    memcpy(p, &v, sizeof(v));
}

/* r[b][k] = v[k][b] for the 4x4 block v[0..3] */
static inline void transpose4(const wv4 *v, wv4 *r)
{
    const wv4 t0 = SHUF(v[0], v[1], 0, 4, 1, 5), t1 = SHUF(v[2], v[3], 0, 4, 1, 5);
    const wv4 t2 = SHUF(v[0], v[1], 2, 6, 3, 7), t3 = SHUF(v[2], v[3], 2, 6, 3, 7);
    r[0] = SHUF(t0, t1, 0, 1, 4, 5);
    r[1] = SHUF(t0, t1, 2, 3, 6, 7);
    r[2] = SHUF(t2, t3, 0, 1, 4, 5);
    r[3] = SHUF(t2, t3, 2, 3, 6, 7);
}

static size_t tiles4(size_t H, size_t W)
{
    return ((H + 3) / 4) * ((W + 3) / 4);
}

/* Floats of the F(4x4) work area for chunks of up to nb images: the input transform's 24
 * arrays ph of (TH + 1) x TW and 36 of nb x T tiles, or the output transform's 40 arrays of
 * nb x T (the gradient transform's 16 of T and 24 of nb x T need less). */
static size_t work4_floats(size_t H, size_t W, size_t nb)
{
    const size_t TH = (H + 3) / 4, TW = (W + 3) / 4, in = 24 * (TH + 1) * TW + 36 * nb * TH * TW;
    return in > 40 * nb * TH * TW ? in : 40 * nb * TH * TW;
}

/* u = G g for one column g0..g2 of the kernel; multiplies by 1/6 (no divisions: the weight
 * transforms run every step). */
static inline void g6(float g0, float g1, float g2, float *u)
{
    const float s6 = 1.0f / 6.0f;
    u[0] = 0.25f * g0;
    u[1] = -(g0 + g1 + g2) * s6;
    u[2] = -(g0 - g1 + g2) * s6;
    u[3] = (0.25f * g0 + 0.5f * g1 + g2) * s6;
    u[4] = (0.25f * g0 - 0.5f * g1 + g2) * s6;
    u[5] = g2;
}

/* The weight transforms run every step (forward and input gradient): WL kernels at a time,
 * consecutive columns i of U, so that the arithmetic runs across the lanes (each lane through
 * the same operations in the same order as one kernel alone: the same bits) and each of U's
 * 36 (16) positions gets WL contiguous floats instead of one float per kernel. The loops run
 * along o inside for the transposed kernel, whose lanes are then rows of w read in turn
 * (o outside, each pass would read 36 bytes of every row's lines). */
#define WL 16

/* Lanes [0, nl) of kernels (o, i0 + lane) of w as g[kh * 3 + kw][lane], flipped and
 * transposed when asked; the other lanes 0. */
static void load_lanes(size_t IC, const float *w, bool transpose_flip, size_t o, size_t i0,
                       size_t nl, float g[9][WL])
{
    for (size_t l = 0; l < WL; l++)
        for (size_t k = 0; k < 9; k++)
            g[k][l] = l >= nl          ? 0.0f
                      : transpose_flip ? w[((i0 + l) * IC + o) * 9 + (8 - k)]
                                       : w[(o * IC + i0 + l) * 9 + k];
}

/* g6 across the lanes */
static inline void g6_lanes(const float *restrict g0, const float *restrict g1,
                            const float *restrict g2, float u[6][WL])
{
    const float s6 = 1.0f / 6.0f;
    for (size_t l = 0; l < WL; l++) {
        u[0][l] = 0.25f * g0[l];
        u[1][l] = -(g0[l] + g1[l] + g2[l]) * s6;
        u[2][l] = -(g0[l] - g1[l] + g2[l]) * s6;
        u[3][l] = (0.25f * g0[l] + 0.5f * g1[l] + g2[l]) * s6;
        u[4][l] = (0.25f * g0[l] - 0.5f * g1[l] + g2[l]) * s6;
        u[5][l] = g2[l];
    }
}

/* weights4's reference: one kernel at a time (eng_wino_weights_naive_t) */
static void weights4_naive(size_t OC, size_t IC, const float *w, bool transpose_flip, float *U)
{
    const size_t RO = transpose_flip ? IC : OC, RI = transpose_flip ? OC : IC;
    for (size_t o = 0; o < RO; o++)
        for (size_t i = 0; i < RI; i++) {
            float g[3][3];
            for (size_t kh = 0; kh < 3; kh++)
                for (size_t kw = 0; kw < 3; kw++)
                    g[kh][kw] = transpose_flip ? w[((i * IC + o) * 3 + (2 - kh)) * 3 + (2 - kw)]
                                               : w[((o * IC + i) * 3 + kh) * 3 + kw];
            float q[3][6]; /* (G g)^T: q[c] = G g[.][c] */
            for (size_t c = 0; c < 3; c++)
                g6(g[0][c], g[1][c], g[2][c], q[c]);
            for (size_t r = 0; r < 6; r++) { /* (G g) G^T, row r */
                float u[6];
                g6(q[0][r], q[1][r], q[2][r], u);
                for (size_t c = 0; c < 6; c++)
                    U[((r * 6 + c) * RO + o) * RI + i] = u[c];
            }
        }
}

/* the F(2x2) u = G g across the lanes, as weights2_naive */
static inline void g4_lanes(const float *restrict g0, const float *restrict g1,
                            const float *restrict g2, float u[4][WL])
{
    for (size_t l = 0; l < WL; l++) {
        u[0][l] = g0[l];
        u[1][l] = 0.5f * (g0[l] + g1[l] + g2[l]);
        u[2][l] = 0.5f * (g0[l] - g1[l] + g2[l]);
        u[3][l] = g2[l];
    }
}

/* U of kernels (o, i0 .. i0 + WL) for variant t: u = G g G^T per kernel, WL kernels at once,
 * with g6_lanes (t = 4) or g4_lanes (t = 2) as the one-dimensional G. */
ENG_SIMD_AVX512 static void weights_lanes(size_t t, size_t IC, size_t RO, size_t RI, const float *w,
                                          bool transpose_flip, size_t o, size_t i0, float *U)
{
    const size_t n = t + 2, nl = RI - i0 < WL ? RI - i0 : WL;
    float g[9][WL], q[3][6][WL], u[6][WL]; /* q[c] = G g[.][c] */
    load_lanes(IC, w, transpose_flip, o, i0, nl, g);
    for (size_t c = 0; c < 3; c++) {
        if (t == 4)
            g6_lanes(g[c], g[3 + c], g[6 + c], q[c]);
        else
            g4_lanes(g[c], g[3 + c], g[6 + c], q[c]);
    }
    for (size_t r = 0; r < n; r++) { /* (G g) G^T, row r */
        if (t == 4)
            g6_lanes(q[0][r], q[1][r], q[2][r], u);
        else
            g4_lanes(q[0][r], q[1][r], q[2][r], u);
        for (size_t c = 0; c < n; c++)
            memcpy(U + ((r * n + c) * RO + o) * RI + i0, u[c], nl * sizeof(float));
    }
}

/* V[e][c][n*T + t] (e = 6k + j) of the m images x [C, H, W] of a chunk. Each plane, padded by
 * 1 pixel left/top, is split in one pass into ph[k][j] [TH + 1][TW] (k < 4, j < 6):
 * ph[k][j][ty][tx] = padded row 4ty + k, column 4tx + j (positions outside stay 0). The tile
 * arrays d[k][j] [TH][TW] are then ph[k % 4][j] shifted by k / 4 tile rows, with no gather of
 * the overlapping tiles; B^T is applied down the tile rows (k) into r[i][j], then along the
 * columns (j) straight into V: unit-stride passes over the T tiles of the plane (rows) and
 * over the m x T tiles of a channel's m images (columns: they are contiguous in V, r holds
 * them all). Per plane that had been 12 calls of bt6 over T tiles, one AVX-512 vector and a
 * call's overhead each on M1's 14x14 maps (T = 16); over m x T tiles (80 on M1's 64 -> 64
 * layer, 5 images per chunk), with output_transform4 and grad_transform4 likewise, that
 * layer's eng_wino_conv_t on 64 images, 1 thread, went 4.4 -> 3.4 ms (no change on 28x28).
 * Splitting the rows into phases with 4x4 transposes only, no scalar tails, was slower. */
ENG_SIMD_AVX512 static void input_transform4(size_t C, size_t H, size_t W, size_t m, const float *x,
                                             float *V, size_t ldv, float *work)
{
    const size_t TH = (H + 3) / 4, TW = (W + 3) / 4, T = TH * TW, mT = m * T;
    const size_t PS = (TH + 1) * TW;     /* floats of one ph[k][j] */
    float *ph = work, *r = ph + 24 * PS; /* ph [4][6][PS], r [6][6][m * T] */
    memset(ph, 0, 24 * PS * sizeof(float));
    const size_t es = C * ldv;
    for (size_t c = 0; c < C; c++) {
        for (size_t n = 0; n < m; n++) {
            const float *xc = x + (n * C + c) * H * W;
            /* the plane after this one, read ahead: x is not in the caches at M1's batch
             * sizes (M1 train b64, 1 thread: this function 2170 -> 1650 samples of perf
             * record, grad_transform4 900 -> 630) */
            const float *nx = n + 1 < m ? xc + C * H * W : c + 1 < C ? x + (c + 1) * H * W : NULL;
            for (size_t h = 0; h < H; h++) {
                /* x[h][w] is padded row h + 1, column pc = w + 1: ph[.][pc % 4][pc / 4], and
                 * for pc % 4 < 2 also ph[.][pc % 4 + 4][pc / 4 - 1] */
                float *P = ph + ((h + 1) % 4) * 6 * PS + ((h + 1) / 4) * TW;
                const float *xr = xc + h * W;
                for (size_t w = 0; nx && w < W; w += 16)
                    __builtin_prefetch(nx + h * W + w);
                size_t q = 0;
                /* blocks of 4 tiles: x columns 4q .. 4q + 15 are padded phases 1, 2, 3, 0
                 * (the latter of the next tile) of tiles q .. q + 3; phase 1 is also phase 5
                 * of the tile before, phase 0 phase 4 */
                for (; 4 * q + 16 <= W && q + 4 < TW; q += 4) {
                    wv4 v[4], ph4[4];
                    for (size_t i = 0; i < 4; i++)
                        v[i] = wload(xr + 4 * q + 4 * i);
                    transpose4(v, ph4);
                    wstore(P + PS + q, ph4[0]);
                    wstore(P + 2 * PS + q, ph4[1]);
                    wstore(P + 3 * PS + q, ph4[2]);
                    wstore(P + q + 1, ph4[3]);
                    wstore(P + 4 * PS + q, ph4[3]);
                    if (q > 0)
                        wstore(P + 5 * PS + q - 1, ph4[0]);
                    else
                        for (size_t i = 1; i < 4; i++)
                            P[5 * PS + i - 1] = ph4[0][i];
                }
                if (q > 0 && q < TW) /* phase 5 of tile q - 1: column 4q, when it exists */
                    P[5 * PS + q - 1] = 4 * q < W ? xr[4 * q] : 0.0f;
                for (; 4 * q + 4 < W && q + 1 < TW; q++) {
                    P[PS + q] = xr[4 * q];
                    P[2 * PS + q] = xr[4 * q + 1];
                    P[3 * PS + q] = xr[4 * q + 2];
                    P[q + 1] = xr[4 * q + 3];
                    P[4 * PS + q] = xr[4 * q + 3];
                    P[5 * PS + q] = xr[4 * q + 4];
                }
                for (size_t w = 4 * q; w < W; w++) {
                    const size_t pc = w + 1, j = pc % 4, tx = pc / 4;
                    if (tx < TW)
                        P[j * PS + tx] = xr[w];
                    if (j < 2 && tx >= 1)
                        P[(j + 4) * PS + tx - 1] = xr[w];
                }
            }
            for (size_t j = 0; j < 6; j++) { /* rows: r[i][j] = sum_k B^T[i][k] d[k][j] */
                const float *dj = ph + j * PS;
                float *rj = r + j * mT + n * T;
                bt6(T, dj, dj + 6 * PS, dj + 12 * PS, dj + 18 * PS, dj + TW, dj + 6 * PS + TW, rj,
                    rj + 6 * mT, rj + 12 * mT, rj + 18 * mT, rj + 24 * mT, rj + 30 * mT);
            }
        }
        float *vc = V + c * ldv;         /* the m images' tiles, contiguous */
        for (size_t i = 0; i < 6; i++) { /* columns: V[6i + l] = sum_j r[i][j] B^T[l][j] */
            const float *ri = r + i * 6 * mT;
            float *v = vc + i * 6 * es;
            bt6(mT, ri, ri + mT, ri + 2 * mT, ri + 3 * mT, ri + 4 * mT, ri + 5 * mT, v, v + es,
                v + 2 * es, v + 3 * es, v + 4 * es, v + 5 * es);
        }
    }
}

/* dst[w] (+)= the w-th column of a row stored as its four phases s0..s3 (column 4k + b in
 * sb[k]), w < W: the row is written front to back, not in four strided passes (each of
 * which would touch all of its cache lines). */
ENG_SIMD_AVX512 static void row_store4(size_t W, const float *restrict s0, const float *restrict s1,
                                       const float *restrict s2, const float *restrict s3,
                                       float *restrict dst, bool accumulate)
{
    const size_t h = W / 4;
    const float *const s[4] = {s0, s1, s2, s3};
    if (accumulate) {
        for (size_t k = 0; k < h; k++) {
            dst[4 * k] += s0[k];
            dst[4 * k + 1] += s1[k];
            dst[4 * k + 2] += s2[k];
            dst[4 * k + 3] += s3[k];
        }
        for (size_t w = 4 * h; w < W; w++)
            dst[w] += s[w % 4][h];
    } else {
        size_t k = 0;
        for (; k + 4 <= h; k += 4) { /* 16 columns: a 4x4 transpose */
            const wv4 v[4] = {wload(s0 + k), wload(s1 + k), wload(s2 + k), wload(s3 + k)};
            wv4 r[4];
            transpose4(v, r);
            for (size_t i = 0; i < 4; i++)
                wstore(dst + 4 * k + 4 * i, r[i]);
        }
        for (; k < h; k++) {
            dst[4 * k] = s0[k];
            dst[4 * k + 1] = s1[k];
            dst[4 * k + 2] = s2[k];
            dst[4 * k + 3] = s3[k];
        }
        for (size_t w = 4 * h; w < W; w++)
            dst[w] = s[w % 4][h];
    }
}

/* y (+)= A^T M A for the m images of a chunk: A^T down the tile rows into r[a][j][n*T + t],
 * along the columns into o[a][b][n*T + t], both over the m images of a channel at once (their
 * tiles are contiguous in M; see input_transform4), then scattered into the planes (only
 * positions inside them); with scale (not accumulating), mapped as eng_wino_conv_relu_t
 * says. */
ENG_SIMD_AVX512 static void output_transform4(size_t C, size_t H, size_t W, size_t m,
                                              const float *M, size_t ldm, float *y, bool accumulate,
                                              float *work, const float *scale, const float *shift)
{
    const size_t TH = (H + 3) / 4, TW = (W + 3) / 4, T = TH * TW, mT = m * T;
    const bool aff = scale != NULL;
    float *r = work, *o = r + 24 * mT; /* r [4][6][m * T], o [4][4][m * T] */
    const size_t es = C * ldm;
    for (size_t c = 0; c < C; c++) {
        const float *mc = M + c * ldm; /* the m images' tiles, contiguous */
        for (size_t j = 0; j < 6; j++) {
            const float *mj = mc + j * es;
            float *rj = r + j * mT;
            at6(mT, mj, mj + 6 * es, mj + 12 * es, mj + 18 * es, mj + 24 * es, mj + 30 * es, rj,
                rj + 6 * mT, rj + 12 * mT, rj + 18 * mT);
        }
        for (size_t a = 0; a < 4; a++) {
            const float *ra = r + a * 6 * mT;
            float *oa = o + a * 4 * mT;
            if (aff) /* the final values, in registers */
                at6_relu(mT, ra, ra + mT, ra + 2 * mT, ra + 3 * mT, ra + 4 * mT, ra + 5 * mT, oa,
                         oa + mT, oa + 2 * mT, oa + 3 * mT, scale[c], shift[c]);
            else
                at6(mT, ra, ra + mT, ra + 2 * mT, ra + 3 * mT, ra + 4 * mT, ra + 5 * mT, oa,
                    oa + mT, oa + 2 * mT, oa + 3 * mT);
        }
        for (size_t n = 0; n < m; n++) {
            float *yc = y + (n * C + c) * H * W;
            for (size_t ty = 0; ty < TH; ty++)
                for (size_t a = 0; a < 4 && 4 * ty + a < H; a++) {
                    const float *src = o + a * 4 * mT + n * T + ty * TW;
                    row_store4(W, src, src + mT, src + 2 * mT, src + 3 * mT, yc + (4 * ty + a) * W,
                               accumulate);
                }
        }
    }
}

/* D[e][c][n*T + t] = (A dY A^T)[e] of the 4x4 tiles of the m images dy [C, H, W] of a chunk
 * (the adjoint of output_transform4; dY is 0 outside the plane): rows per plane into
 * r[k][b][n*T + t], columns over the m images of a channel at once (see input_transform4). */
ENG_SIMD_AVX512 static void grad_transform4(size_t C, size_t H, size_t W, size_t m, const float *dy,
                                            float *D, size_t ldd, float *work)
{
    const size_t TH = (H + 3) / 4, TW = (W + 3) / 4, T = TH * TW, mT = m * T;
    float *g = work, *r = g + 16 * T; /* g [4][4][T], r [6][4][m * T] */
    const size_t es = C * ldd;
    if (H % 4 || W % 4)
        memset(g, 0, 16 * T * sizeof(float)); /* positions outside stay 0 */
    for (size_t c = 0; c < C; c++) {
        for (size_t n = 0; n < m; n++) {
            const float *pc = dy + (n * C + c) * H * W;
            /* the plane after this one, read ahead (see input_transform4) */
            const float *np = n + 1 < m ? pc + C * H * W : c + 1 < C ? dy + (c + 1) * H * W : NULL;
            for (size_t ty = 0; ty < TH; ty++)
                for (size_t a = 0; a < 4 && 4 * ty + a < H; a++) {
                    const float *row = pc + (4 * ty + a) * W;
                    for (size_t w = 0; np && w < W; w += 16)
                        __builtin_prefetch(np + (4 * ty + a) * W + w);
                    for (size_t b = 0; b < 4; b++) {
                        float *gb = g + (a * 4 + b) * T + ty * TW;
                        const size_t nx = b < W ? (W - b + 3) / 4 : 0;
                        for (size_t tx = 0; tx < nx; tx++)
                            gb[tx] = row[4 * tx + b];
                    }
                }
            for (size_t b = 0; b < 4; b++) { /* rows: r[k][b] = sum_a A[k][a] g[a][b] */
                const float *gb = g + b * T;
                float *rb = r + b * mT + n * T;
                a4(T, gb, gb + 4 * T, gb + 8 * T, gb + 12 * T, rb, rb + 4 * mT, rb + 8 * mT,
                   rb + 12 * mT, rb + 16 * mT, rb + 20 * mT);
            }
        }
        float *dc = D + c * ldd;         /* the m images' tiles, contiguous */
        for (size_t k = 0; k < 6; k++) { /* columns: D[6k + l] = sum_b r[k][b] A[l][b] */
            const float *rk = r + k * 4 * mT;
            float *o = dc + k * 6 * es;
            a4(mT, rk, rk + mT, rk + 2 * mT, rk + 3 * mT, o, o + es, o + 2 * es, o + 3 * es,
               o + 4 * es, o + 5 * es);
        }
    }
}

/* v = G^T u for one column u0..u5: G^T rows [1/4 -1/6 -1/6 1/24 1/24 0], [0 -1/6 1/6 1/12
 * -1/12 0], [0 -1/6 -1/6 1/6 1/6 1], as multiplies by 1/4, 1/2 and 1/6. */
static inline void gt3(const float *u, float *v)
{
    const float s6 = 1.0f / 6.0f;
    v[0] = 0.25f * u[0] + (0.25f * (u[3] + u[4]) - (u[1] + u[2])) * s6;
    v[1] = ((u[2] - u[1]) + 0.5f * (u[3] - u[4])) * s6;
    v[2] = ((u[3] + u[4]) - (u[1] + u[2])) * s6 + u[5];
}

/* dw (+)= G^T acc G per (oc, ic), acc [36][C_out][C_in]. */
/* the reference, one kernel at a time (eng_wino_wgrad_finish_naive_t) */
static void wgrad_finish4_naive(size_t C_in, size_t C_out, const float *acc, float *dw,
                                bool accumulate)
{
    const size_t es = C_out * C_in;
    for (size_t o = 0; o < C_out; o++)
        for (size_t i = 0; i < C_in; i++) {
            const float *a = acc + o * C_in + i;
            float q[6][3]; /* (G^T acc)^T: q[c] = G^T acc[.][c] */
            for (size_t c = 0; c < 6; c++) {
                const float u[6] = {a[c * es],        a[(6 + c) * es],  a[(12 + c) * es],
                                    a[(18 + c) * es], a[(24 + c) * es], a[(30 + c) * es]};
                gt3(u, q[c]);
            }
            float *gw = dw + (o * C_in + i) * 9;
            for (size_t r = 0; r < 3; r++) {
                const float u[6] = {q[0][r], q[1][r], q[2][r], q[3][r], q[4][r], q[5][r]};
                float v[3];
                gt3(u, v);
                for (size_t k = 0; k < 3; k++)
                    gw[r * 3 + k] = accumulate ? gw[r * 3 + k] + v[k] : v[k];
            }
        }
}

/* The weight-gradient finish across WL kernels (o, i0 + lane) at a time, as the weight
 * transforms: acc's rows are read as WL contiguous floats, each lane through the same
 * operations in the same order as the naive loop (the same bits). */
static void store_lanes(size_t nl, float v[9][WL], float *dw, bool accumulate)
{
    for (size_t l = 0; l < nl; l++)
        for (size_t k = 0; k < 9; k++)
            dw[l * 9 + k] = accumulate ? dw[l * 9 + k] + v[k][l] : v[k][l];
}

ENG_SIMD_AVX512 static void finish4_lanes(size_t C_in, size_t es, const float *acc, float *dw,
                                          bool accumulate, size_t o, size_t i0)
{
    const size_t nl = C_in - i0 < WL ? C_in - i0 : WL;
    const float s6 = 1.0f / 6.0f;
    float q[6][3][WL], v[9][WL]; /* q[c] = G^T acc[.][c] */
    for (size_t c = 0; c < 6; c++) {
        float u[6][WL];
        for (size_t r = 0; r < 6; r++) {
            memcpy(u[r], acc + (r * 6 + c) * es + o * C_in + i0, nl * sizeof(float));
            memset(u[r] + nl, 0, (WL - nl) * sizeof(float));
        }
        for (size_t l = 0; l < WL; l++) { /* gt3 */
            q[c][0][l] = 0.25f * u[0][l] + (0.25f * (u[3][l] + u[4][l]) - (u[1][l] + u[2][l])) * s6;
            q[c][1][l] = ((u[2][l] - u[1][l]) + 0.5f * (u[3][l] - u[4][l])) * s6;
            q[c][2][l] = ((u[3][l] + u[4][l]) - (u[1][l] + u[2][l])) * s6 + u[5][l];
        }
    }
    for (size_t r = 0; r < 3; r++)
        for (size_t l = 0; l < WL; l++) { /* gt3 of q[0..5][r] */
            const float u0 = q[0][r][l], u1 = q[1][r][l], u2 = q[2][r][l], u3 = q[3][r][l],
                        u4 = q[4][r][l], u5 = q[5][r][l];
            v[r * 3][l] = 0.25f * u0 + (0.25f * (u3 + u4) - (u1 + u2)) * s6;
            v[r * 3 + 1][l] = ((u2 - u1) + 0.5f * (u3 - u4)) * s6;
            v[r * 3 + 2][l] = ((u3 + u4) - (u1 + u2)) * s6 + u5;
        }
    store_lanes(nl, v, dw + (o * C_in + i0) * 9, accumulate);
}

ENG_SIMD_AVX512 static void finish2_lanes(size_t C_in, size_t es, const float *acc, float *dw,
                                          bool accumulate, size_t o, size_t i0)
{
    const size_t nl = C_in - i0 < WL ? C_in - i0 : WL;
    float q[3][4][WL], v[9][WL]; /* G^T acc */
    for (size_t c = 0; c < 4; c++) {
        float u[4][WL];
        for (size_t r = 0; r < 4; r++) {
            memcpy(u[r], acc + (r * 4 + c) * es + o * C_in + i0, nl * sizeof(float));
            memset(u[r] + nl, 0, (WL - nl) * sizeof(float));
        }
        for (size_t l = 0; l < WL; l++) {
            q[0][c][l] = u[0][l] + 0.5f * (u[1][l] + u[2][l]);
            q[1][c][l] = 0.5f * (u[1][l] - u[2][l]);
            q[2][c][l] = 0.5f * (u[1][l] + u[2][l]) + u[3][l];
        }
    }
    for (size_t r = 0; r < 3; r++)
        for (size_t l = 0; l < WL; l++) {
            v[r * 3][l] = q[r][0][l] + 0.5f * (q[r][1][l] + q[r][2][l]);
            v[r * 3 + 1][l] = 0.5f * (q[r][1][l] - q[r][2][l]);
            v[r * 3 + 2][l] = 0.5f * (q[r][1][l] + q[r][2][l]) + q[r][3][l];
        }
    store_lanes(nl, v, dw + (o * C_in + i0) * 9, accumulate);
}

/* dw (+)= G^T acc G per (oc, ic), acc [npos(t)][C_out][C_in]. */
static void wgrad_finish(size_t t, size_t C_in, size_t C_out, const float *acc, float *dw,
                         bool accumulate)
{
    for (size_t o = 0; o < C_out; o++)
        for (size_t i0 = 0; i0 < C_in; i0 += WL)
            if (t == 4)
                finish4_lanes(C_in, C_out * C_in, acc, dw, accumulate, o, i0);
            else
                finish2_lanes(C_in, C_out * C_in, acc, dw, accumulate, o, i0);
}

void eng_wino_wgrad_finish_t(size_t t, size_t C_in, size_t C_out, const float *acc, float *dw,
                             bool accumulate)
{
    wgrad_finish(t, C_in, C_out, acc, dw, accumulate);
}

void eng_wino_wgrad_finish_naive_t(size_t t, size_t C_in, size_t C_out, const float *acc, float *dw,
                                   bool accumulate)
{
    if (t == 4)
        wgrad_finish4_naive(C_in, C_out, acc, dw, accumulate);
    else
        wgrad_finish2_naive(C_in, C_out, acc, dw, accumulate);
}

/* ---- entry points of both variants ------------------------------------------------------- */

size_t eng_wino_pick(size_t H, size_t W)
{
    /* F(4x4) when its products (36 per 4x4 tile, partial edge tiles included) are fewer, on
     * maps of at least 12x12: on 8x8 (resnet18's layer2 at 64x64 inputs) its 4 tiles per
     * image made GEMMs too thin, about 10% slower per training step than F(2x2) */
    return H >= 12 && W >= 12 && 36 * tiles4(H, W) < 16 * eng_wino_tiles_t(2, H, W) ? 4 : 2;
}

size_t eng_wino_tiles_t(size_t t, size_t H, size_t W)
{
    return t == 4 ? tiles4(H, W) : ((H + 1) / 2) * ((W + 1) / 2);
}

size_t eng_wino_chunk_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t N)
{
    /* V and M of one image */
    size_t per = eng_wino_npos(t) * (C_in + C_out) * eng_wino_tiles_t(t, H, W);
    size_t nb = per ? ENG_WINO_CHUNK_FLOATS / per : N;
    if (nb > N)
        nb = N;
    return nb ? nb : 1;
}

size_t eng_wino_scratch_floats_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t nb)
{
    return eng_wino_npos(t) * (C_in + C_out) * nb * eng_wino_tiles_t(t, H, W) +
           (t == 4 ? work4_floats(H, W, nb ? nb : 1) : pad_floats(H, W));
}

/* The variant of the weight gradient for variant t's layers: F(4x4)'s 36 GEMMs per chunk
 * have K = its tiles (4x fewer than F(2x2)'s) and a 36 x C_out x C_in accumulator. With one
 * image per chunk that paid off on 28x28 maps (K = 49) and not on 14x14 (K = 16); with
 * chunks of several images (ENG_WINO_CHUNK_FLOATS: K = 80 on M1's 64 -> 64 14x14) it does
 * there too: M1 train b128, 1 thread, that layer's backward 26.0 -> 23.5 ms (resnet18's 16x16
 * layer1 no slower: train b32 251 -> 242 ms/step, noisy). */
static size_t wgrad_variant(size_t t, size_t H, size_t W)
{
    return t == 4 && H >= WGRAD4_MIN && W >= WGRAD4_MIN ? 4 : 2;
}

size_t eng_wino_wgrad_scratch_floats_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W,
                                       size_t nb)
{
    /* variant t's weight gradient may run as F(2x2) (wgrad_variant); the scratch fits both,
     * and variant t's eng_wino_conv_t and weights */
    size_t f2 = eng_wino_scratch_floats_t(2, C_in, C_out, H, W, nb) + 16 * C_out * C_in;
    size_t ft =
        eng_wino_scratch_floats_t(t, C_in, C_out, H, W, nb) + eng_wino_npos(t) * C_out * C_in;
    return f2 > ft ? f2 : ft;
}

void eng_wino_weights_naive_t(size_t t, size_t OC, size_t IC, const float *w, bool transpose_flip,
                              float *U)
{
    if (t == 4)
        weights4_naive(OC, IC, w, transpose_flip, U);
    else
        weights2_naive(OC, IC, w, transpose_flip, U);
}

void eng_wino_weights_t(size_t t, size_t OC, size_t IC, const float *w, bool transpose_flip,
                        float *U)
{
    const size_t RO = transpose_flip ? IC : OC, RI = transpose_flip ? OC : IC;
    if (transpose_flip) /* o inside: w's rows in turn (above WL) */
        for (size_t i0 = 0; i0 < RI; i0 += WL)
            for (size_t o = 0; o < RO; o++)
                weights_lanes(t, IC, RO, RI, w, true, o, i0, U);
    else
        for (size_t o = 0; o < RO; o++)
            for (size_t i0 = 0; i0 < RI; i0 += WL)
                weights_lanes(t, IC, RO, RI, w, false, o, i0, U);
}

/* eng_wino_conv_t, with eng_wino_conv_relu_t's map when scale is not NULL */
static void wino_conv(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t N,
                      const float *x, const float *U, float *y, bool accumulate, float *scratch,
                      size_t nb, const float *scale, const float *shift)
{
    const size_t T = eng_wino_tiles_t(t, H, W), E = eng_wino_npos(t);
    if (nb == 0)
        nb = 1;
    for (size_t n0 = 0; n0 < N; n0 += nb) {
        const size_t m = N - n0 < nb ? N - n0 : nb, ld = m * T;
        float *V = scratch;                 /* [E][C_in][ld] */
        float *M = scratch + E * C_in * ld; /* [E][C_out][ld] */
        float *work = M + E * C_out * ld;   /* padded plane / transform rows */
        if (t == 4)
            input_transform4(C_in, H, W, m, x + n0 * C_in * H * W, V, ld, work);
        else
            input_transform(C_in, H, W, m, x + n0 * C_in * H * W, V, ld, work);
        for (size_t e = 0; e < E; e++)
            eng_sgemm(false, false, C_out, ld, C_in, 1.0f, U + e * C_out * C_in, C_in,
                      V + e * C_in * ld, ld, 0.0f, M + e * C_out * ld, ld);
        if (t == 4)
            output_transform4(C_out, H, W, m, M, ld, y + n0 * C_out * H * W, accumulate, work,
                              scale, shift);
        else
            output_transform(C_out, H, W, m, M, ld, y + n0 * C_out * H * W, accumulate, work, scale,
                             shift);
    }
}

void eng_wino_conv_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t N,
                     const float *x, const float *U, float *y, bool accumulate, float *scratch,
                     size_t nb)
{
    wino_conv(t, C_in, C_out, H, W, N, x, U, y, accumulate, scratch, nb, NULL, NULL);
}

void eng_wino_conv_relu_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t N,
                          const float *x, const float *U, float *y, float *scratch, size_t nb,
                          const float *scale, const float *shift)
{
    wino_conv(t, C_in, C_out, H, W, N, x, U, y, false, scratch, nb, scale, shift);
}

void eng_wino_wgrad_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t N,
                      const float *x, const float *dy, float *dw, bool accumulate, float *scratch,
                      size_t nb)
{
    t = wgrad_variant(t, H, W);
    const size_t T = eng_wino_tiles_t(t, H, W), E = eng_wino_npos(t);
    if (nb == 0)
        nb = 1;
    /* [E][C_out][C_in] */
    float *acc = scratch + eng_wino_scratch_floats_t(t, C_in, C_out, H, W, nb);
    if (N == 0)
        memset(acc, 0, E * C_out * C_in * sizeof(float));
    for (size_t n0 = 0; n0 < N; n0 += nb) {
        const size_t m = N - n0 < nb ? N - n0 : nb, ld = m * T;
        float *V = scratch;                 /* [E][C_in][ld] */
        float *D = scratch + E * C_in * ld; /* [E][C_out][ld] */
        float *work = D + E * C_out * ld;   /* padded plane / transform rows */
        if (t == 4) {
            input_transform4(C_in, H, W, m, x + n0 * C_in * H * W, V, ld, work);
            grad_transform4(C_out, H, W, m, dy + n0 * C_out * H * W, D, ld, work);
        } else {
            input_transform(C_in, H, W, m, x + n0 * C_in * H * W, V, ld, work);
            grad_transform(C_out, H, W, m, dy + n0 * C_out * H * W, D, ld, work);
        }
        for (size_t e = 0; e < E; e++)
            eng_sgemm(false, true, C_out, C_in, ld, 1.0f, D + e * C_out * ld, ld, V + e * C_in * ld,
                      ld, n0 == 0 ? 0.0f : 1.0f, acc + e * C_out * C_in, C_in);
    }
    if (t == 4)
        wgrad_finish(4, C_in, C_out, acc, dw, accumulate);
    else
        wgrad_finish(2, C_in, C_out, acc, dw, accumulate);
}
