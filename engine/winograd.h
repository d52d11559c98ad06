/*
 * winograd.h: Winograd F(2x2, 3x3) and F(4x4, 3x3) for 3x3, stride-1, padding-1 convolutions
 * (private to engine/; winograd.c explains the algorithm). All buffers are borrowed for the
 * call, float32 NCHW; the functions keep no state and allocate nothing.
 *
 * The functions without a suffix are F(2x2, 3x3). The *_t functions take the variant as its
 * output tile edge t: 2 for F(2x2, 3x3) (16 transformed positions), 4 for F(4x4, 3x3) (36);
 * U, V and the scratch of one variant do not fit the other.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "im2col.h"

/* Floats of V and M (npos x (C_in + C_out) x tiles) per chunk the chunking aims for: about
 * 1.6 MB, several images per chunk, so that the npos GEMMs per chunk are not too thin
 * (OpenBLAS: 77 GFLOPS on M1's 64 -> 64 F(4x4) GEMMs of one 14x14 image, 16 columns, 91 on
 * four images). Measured on M1 (1 thread, batch 128): F(4x4) 64 -> 64 on 14x14 maps 11.1 ->
 * 10.0 ms per direction with 5 images per chunk instead of 1; 32 -> 32 on 28x28 (1 -> 3
 * images) about the same; 800 K floats no better, 1600 K worse. (Earlier, with F(2x2) only,
 * 1 image per chunk had been the fastest.) */
#define ENG_WINO_CHUNK_FLOATS (400 * 1024)

/* True for the geometries eng_wino_conv computes: 3x3 kernel, stride 1, padding 1. */
bool eng_wino_applies(const eng_conv2d_geom *g);

/* 2x2 output tiles of one H x W image. */
size_t eng_wino_tiles(size_t H, size_t W);

/* Images per chunk for a batch of N: at most ENG_WINO_CHUNK_FLOATS floats of V and M,
 * 1 <= nb <= max(N, 1). */
size_t eng_wino_chunk(size_t C_in, size_t C_out, size_t H, size_t W, size_t N);

/* Scratch floats of eng_wino_conv for chunks of nb images. */
size_t eng_wino_scratch_floats(size_t C_in, size_t C_out, size_t H, size_t W, size_t nb);

/* Transformed weights U [16][RO][RI] (16*OC*IC floats) of w [OC, IC, 3, 3]. With
 * transpose_flip the transform is of the weights of the input-gradient convolution:
 * w'[ic][oc][kh][kw] = w[oc][ic][2-kh][2-kw], so RO = IC, RI = OC; else RO = OC, RI = IC. */
void eng_wino_weights(size_t OC, size_t IC, const float *w, bool transpose_flip, float *U);

/* y [N, C_out, H, W] (+)= conv3x3(x [N, C_in, H, W]) with U from eng_wino_weights (RO = C_out,
 * RI = C_in), stride 1, padding 1. scratch: eng_wino_scratch_floats(C_in, C_out, H, W, nb). */
void eng_wino_conv(size_t C_in, size_t C_out, size_t H, size_t W, size_t N, const float *x,
                   const float *U, float *y, bool accumulate, float *scratch, size_t nb);

/* Scratch floats of eng_wino_wgrad for chunks of nb images: eng_wino_scratch_floats plus the
 * 16 x C_out x C_in accumulator. */
size_t eng_wino_wgrad_scratch_floats(size_t C_in, size_t C_out, size_t H, size_t W, size_t nb);

/* Weight gradient of that convolution: dw [C_out, C_in, 3, 3] (+)= sum over the N images of
 * dy [N, C_out, H, W] (x) x [N, C_in, H, W], by Winograd F(2x2, 3x3); chunks of nb images are
 * summed in order (deterministic). N = 0 gives 0. scratch: eng_wino_wgrad_scratch_floats. */
void eng_wino_wgrad(size_t C_in, size_t C_out, size_t H, size_t W, size_t N, const float *x,
                    const float *dy, float *dw, bool accumulate, float *scratch, size_t nb);

/* ---- both variants: t = 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)) ------------------------------- */

/* Transformed positions of variant t: (t + 2)^2. */
static inline size_t eng_wino_npos(size_t t)
{
    return (t + 2) * (t + 2);
}

/* The variant for H x W maps: 4 where F(4x4) needs fewer multiplies on maps of at least
 * 12x12, else 2. */
size_t eng_wino_pick(size_t H, size_t W);

/* t x t output tiles of one H x W image. */
size_t eng_wino_tiles_t(size_t t, size_t H, size_t W);

/* As eng_wino_chunk, for variant t. */
size_t eng_wino_chunk_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t N);

/* As eng_wino_scratch_floats / eng_wino_wgrad_scratch_floats, for variant t. */
size_t eng_wino_scratch_floats_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W,
                                 size_t nb);
size_t eng_wino_wgrad_scratch_floats_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W,
                                       size_t nb);

/* As eng_wino_weights: U [npos(t)][RO][RI]. */
void eng_wino_weights_t(size_t t, size_t OC, size_t IC, const float *w, bool transpose_flip,
                        float *U);
/* eng_wino_weights_t's reference, one kernel at a time: the same bits (tests/kernels). */
void eng_wino_weights_naive_t(size_t t, size_t OC, size_t IC, const float *w, bool transpose_flip,
                              float *U);
/* The last step of eng_wino_wgrad_t: dw [C_out][C_in][3][3] (+)= G^T acc G per kernel, acc
 * [npos(t)][C_out][C_in] (the transformed sums); and its one-kernel reference (the same bits). */
void eng_wino_wgrad_finish_t(size_t t, size_t C_in, size_t C_out, const float *acc, float *dw,
                             bool accumulate);
void eng_wino_wgrad_finish_naive_t(size_t t, size_t C_in, size_t C_out, const float *acc, float *dw,
                                   bool accumulate);

/* As eng_wino_conv and eng_wino_wgrad, with U from eng_wino_weights_t(t, ...) and the
 * scratch of variant t. For t = 4 the weight gradient runs as F(4x4) on maps of at least
 * 12x12 (all of variant 4's) and as F(2x2) below; its scratch covers both and variant t's
 * eng_wino_conv_t, so one scratch serves a layer's three passes. */
void eng_wino_conv_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t N,
                     const float *x, const float *U, float *y, bool accumulate, float *scratch,
                     size_t nb);
void eng_wino_wgrad_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t N,
                      const float *x, const float *dy, float *dw, bool accumulate, float *scratch,
                      size_t nb);

/* eng_wino_conv_t (accumulate = false) with a per-channel affine map and a ReLU applied as
 * the output transform produces each value v of channel c, in registers:
 * y = max(0, v * scale[c] + shift[c]), evaluated as v * scale[c], then + shift[c], then
 * (> 0 ? : 0) (NaN gives 0); scale, shift [C_out] borrowed, or both NULL for none. The
 * BatchNorm + ReLU after a convolution (layers.h, eng_epilogue), bit for bit as it computes
 * them. */
void eng_wino_conv_relu_t(size_t t, size_t C_in, size_t C_out, size_t H, size_t W, size_t N,
                          const float *x, const float *U, float *y, float *scratch, size_t nb,
                          const float *scale, const float *shift);
