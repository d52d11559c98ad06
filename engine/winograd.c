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

size_t eng_wino_scratch_floats(size_t C_in, size_t C_out, size_t H, size_t W, size_t nb)
{
    return 16 * (C_in + C_out) * nb * eng_wino_tiles(H, W);
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

/* V[e][ic][t0 + t] for the m images x [C, H, W] of a chunk. */
static void input_transform(size_t C, size_t H, size_t W, size_t m, const float *x, float *V,
                            size_t ldv)
{
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, T = TH * TW;
    for (size_t n = 0; n < m; n++)
        for (size_t c = 0; c < C; c++) {
            const float *xc = x + (n * C + c) * H * W;
            float *vc = V + c * ldv + n * T;
            for (size_t ty = 0; ty < TH; ty++)
                for (size_t tx = 0; tx < TW; tx++) {
                    float d[4][4];
                    /* rows 2ty-1 .. 2ty+2, columns 2tx-1 .. 2tx+2, zero outside */
                    for (size_t r = 0; r < 4; r++) {
                        size_t ih = 2 * ty + r; /* + 1 offset: ih - 1 is the image row */
                        for (size_t k = 0; k < 4; k++) {
                            size_t iw = 2 * tx + k;
                            d[r][k] = ih >= 1 && ih <= H && iw >= 1 && iw <= W
                                          ? xc[(ih - 1) * W + (iw - 1)]
                                          : 0.0f;
                        }
                    }
                    float b[4][4]; /* B^T d */
                    for (size_t k = 0; k < 4; k++) {
                        b[0][k] = d[0][k] - d[2][k];
                        b[1][k] = d[1][k] + d[2][k];
                        b[2][k] = d[2][k] - d[1][k];
                        b[3][k] = d[1][k] - d[3][k];
                    }
                    const size_t t = ty * TW + tx;
                    for (size_t r = 0; r < 4; r++) { /* (B^T d) B */
                        float v[4] = {b[r][0] - b[r][2], b[r][1] + b[r][2], b[r][2] - b[r][1],
                                      b[r][1] - b[r][3]};
                        for (size_t k = 0; k < 4; k++)
                            vc[(r * 4 + k) * C * ldv + t] = v[k];
                    }
                }
        }
}

/* y (+)= A^T M A for the m images x [C, H, W] of a chunk. */
static void output_transform(size_t C, size_t H, size_t W, size_t m, const float *M, size_t ldm,
                             float *y, bool accumulate)
{
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, T = TH * TW;
    for (size_t n = 0; n < m; n++)
        for (size_t c = 0; c < C; c++) {
            float *yc = y + (n * C + c) * H * W;
            const float *mc = M + c * ldm + n * T;
            for (size_t ty = 0; ty < TH; ty++)
                for (size_t tx = 0; tx < TW; tx++) {
                    const size_t t = ty * TW + tx;
                    float a[2][4]; /* A^T M */
                    for (size_t k = 0; k < 4; k++) {
                        float m0 = mc[(0 * 4 + k) * C * ldm + t],
                              m1 = mc[(1 * 4 + k) * C * ldm + t];
                        float m2 = mc[(2 * 4 + k) * C * ldm + t],
                              m3 = mc[(3 * 4 + k) * C * ldm + t];
                        a[0][k] = m0 + m1 + m2;
                        a[1][k] = m1 - m2 - m3;
                    }
                    for (size_t r = 0; r < 2; r++) {
                        size_t oh = 2 * ty + r;
                        if (oh >= H)
                            break;
                        float o[2] = {a[r][0] + a[r][1] + a[r][2], a[r][1] - a[r][2] - a[r][3]};
                        for (size_t k = 0; k < 2; k++) {
                            size_t ow = 2 * tx + k;
                            if (ow >= W)
                                break;
                            float *dst = yc + oh * W + ow;
                            *dst = accumulate ? *dst + o[k] : o[k];
                        }
                    }
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
        input_transform(C_in, H, W, m, x + n0 * C_in * H * W, V, ld);
        for (size_t e = 0; e < 16; e++)
            eng_sgemm(false, false, C_out, ld, C_in, 1.0f, U + e * C_out * C_in, C_in,
                      V + e * C_in * ld, ld, 0.0f, M + e * C_out * ld, ld);
        output_transform(C_out, H, W, m, M, ld, y + n0 * C_out * H * W, accumulate);
    }
}
