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
 * (16 x (IC + OC) x T floats) small enough to stay in the L2/L3 caches.
 * The input gradient of such a convolution is the same convolution of dy with the weights
 * transposed (ic <-> oc) and rotated by 180 degrees, so eng_wino_weights can prepare U for it.
 */
#include "winograd.h"

#include <string.h>

#include "gemm.h"

bool eng_wino_applies(const eng_conv2d_geom *g)
{
    return g->KH == 3 && g->KW == 3 && g->SH == 1 && g->SW == 1 && g->PH == 1 && g->PW == 1;
}

size_t eng_wino_tiles(size_t H, size_t W)
{
    return ((H + 1) / 2) * ((W + 1) / 2);
}

size_t eng_wino_chunk(size_t H, size_t W, size_t N)
{
    size_t T = eng_wino_tiles(H, W), nb = (ENG_WINO_CHUNK_TILES + T - 1) / T;
    if (nb > N)
        nb = N;
    return nb ? nb : 1;
}

static size_t pad_floats(size_t H, size_t W);

size_t eng_wino_scratch_floats(size_t C_in, size_t C_out, size_t H, size_t W, size_t nb)
{
    return 16 * (C_in + C_out) * nb * eng_wino_tiles(H, W) + pad_floats(H, W);
}

void eng_wino_weights(size_t OC, size_t IC, const float *w, bool transpose_flip, float *U)
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

/* Floats of the zero-padded copy of one input plane: (2*TH + 2) x (2*TW + 2). */
static size_t pad_floats(size_t H, size_t W)
{
    return (2 * ((H + 1) / 2) + 2) * (2 * ((W + 1) / 2) + 2);
}

/* V[e][c][n*T + t] for the m images x [C, H, W] of a chunk. Each plane is first copied into
 * a zero border (pad, 1 pixel left/top, 1-2 right/bottom), so the transform has no bounds
 * tests; it runs per row of tiles over rows of the plane, which the compiler vectorises. */
static void input_transform(size_t C, size_t H, size_t W, size_t m, const float *x, float *V,
                            size_t ldv, float *pad)
{
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, T = TH * TW, PW = 2 * TW + 2;
    memset(pad, 0, pad_floats(H, W) * sizeof(float));
    for (size_t n = 0; n < m; n++)
        for (size_t c = 0; c < C; c++) {
            const float *xc = x + (n * C + c) * H * W;
            for (size_t h = 0; h < H; h++)
                memcpy(pad + (h + 1) * PW + 1, xc + h * W, W * sizeof(float));
            float *vc = V + c * ldv + n * T;
            for (size_t ty = 0; ty < TH; ty++) {
                const float *r0 = pad + 2 * ty * PW, *r1 = r0 + PW, *r2 = r1 + PW, *r3 = r2 + PW;
                for (size_t r = 0; r < 4; r++) {
                    float *v0 = vc + (r * 4 + 0) * C * ldv + ty * TW;
                    float *v1 = vc + (r * 4 + 1) * C * ldv + ty * TW;
                    float *v2 = vc + (r * 4 + 2) * C * ldv + ty * TW;
                    float *v3 = vc + (r * 4 + 3) * C * ldv + ty * TW;
                    /* row r of B^T d is P + sg * Q: r0 - r2, r1 + r2, r2 - r1, r1 - r3 */
                    const float *P = r == 0 ? r0 : r == 1 ? r1 : r == 2 ? r2 : r1;
                    const float *Q = r == 0 ? r2 : r == 1 ? r2 : r == 2 ? r1 : r3;
                    const float sg = r == 1 ? 1.0f : -1.0f;
                    for (size_t tx = 0; tx < TW; tx++) {
                        float b[4]; /* at columns 2tx .. 2tx+3 */
                        for (size_t k = 0; k < 4; k++)
                            b[k] = P[2 * tx + k] + sg * Q[2 * tx + k];
                        v0[tx] = b[0] - b[2];
                        v1[tx] = b[1] + b[2];
                        v2[tx] = b[2] - b[1];
                        v3[tx] = b[1] - b[3];
                    }
                }
            }
        }
}

/* y (+)= A^T M A for the m images x [C, H, W] of a chunk, one row of tiles at a time into
 * the 2*TH x 2*TW plane `buf` (reads of M contiguous across tiles), then copied into y. */
static void output_transform(size_t C, size_t H, size_t W, size_t m, const float *M, size_t ldm,
                             float *y, bool accumulate, float *buf)
{
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, T = TH * TW, BW = 2 * TW;
    for (size_t n = 0; n < m; n++)
        for (size_t c = 0; c < C; c++) {
            float *yc = y + (n * C + c) * H * W;
            const float *mc = M + c * ldm + n * T;
            const size_t es = C * ldm; /* stride between the 16 positions */
            for (size_t ty = 0; ty < TH; ty++) {
                const float *mt = mc + ty * TW;
                float *o0 = buf + 2 * ty * BW, *o1 = o0 + BW;
                for (size_t tx = 0; tx < TW; tx++) {
                    float a0[4], a1[4]; /* A^T M */
                    for (size_t k = 0; k < 4; k++) {
                        float m0 = mt[k * es + tx], m1 = mt[(4 + k) * es + tx];
                        float m2 = mt[(8 + k) * es + tx], m3 = mt[(12 + k) * es + tx];
                        a0[k] = m0 + m1 + m2;
                        a1[k] = m1 - m2 - m3;
                    }
                    o0[2 * tx] = a0[0] + a0[1] + a0[2];
                    o0[2 * tx + 1] = a0[1] - a0[2] - a0[3];
                    o1[2 * tx] = a1[0] + a1[1] + a1[2];
                    o1[2 * tx + 1] = a1[1] - a1[2] - a1[3];
                }
            }
            for (size_t h = 0; h < H; h++) {
                const float *src = buf + h * BW;
                float *dst = yc + h * W;
                if (accumulate)
                    for (size_t w = 0; w < W; w++)
                        dst[w] += src[w];
                else
                    memcpy(dst, src, W * sizeof(float));
            }
        }
}

void eng_wino_conv(size_t C_in, size_t C_out, size_t H, size_t W, size_t N, const float *x,
                   const float *U, float *y, bool accumulate, float *scratch, size_t nb)
{
    const size_t T = eng_wino_tiles(H, W);
    if (nb == 0)
        nb = 1;
    for (size_t n0 = 0; n0 < N; n0 += nb) {
        const size_t m = N - n0 < nb ? N - n0 : nb, ld = m * T;
        float *V = scratch;                  /* [16][C_in][ld] */
        float *M = scratch + 16 * C_in * ld; /* [16][C_out][ld] */
        float *pad = M + 16 * C_out * ld;    /* one padded plane */
        input_transform(C_in, H, W, m, x + n0 * C_in * H * W, V, ld, pad);
        for (size_t e = 0; e < 16; e++)
            eng_sgemm(false, false, C_out, ld, C_in, 1.0f, U + e * C_out * C_in, C_in,
                      V + e * C_in * ld, ld, 0.0f, M + e * C_out * ld, ld);
        output_transform(C_out, H, W, m, M, ld, y + n0 * C_out * H * W, accumulate, pad);
    }
}
