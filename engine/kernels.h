/*
 * kernels.h: the CNN kernels of the engine: conv2d (im2col + sgemm), batch normalisation and
 * pooling, forward and backward (private to engine/).
 *
 * Kernels are plain functions over explicit buffers. They never allocate: scratch is passed
 * in by the caller (sized with the *_floats helpers), and every buffer's shape is written
 * next to its parameter, float32 NCHW. All buffers are borrowed for the call. Kernels keep
 * no state, so distinct calls may run concurrently on distinct buffers (e.g. one chunk of
 * the batch per worker thread). Shapes are trusted: the layer code validates them when the
 * model is built; a kernel only reports conditions that depend on the batch (see
 * eng_batchnorm_train_forward).
 *
 * Backward conventions: each output gradient may be skipped by passing NULL where the
 * parameter says so (frozen layers skip the weight gradient, the lowest trainable layer
 * skips the input gradient). `accumulate` = true ADDS to the gradient buffers (for tensors
 * with several consumers, e.g. residual connections); false overwrites them.
 *
 * Naive references for tests live beside them: eng_conv2d_ref_* in im2col.h; batchnorm and
 * pooling references in tests/kernels/refs.c.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "im2col.h"
#include "layers.h"

/* ---- conv2d ------------------------------------------------------------------------------ */

/* Scratch of a conv2d call. `nb` (>= 1) images are unfolded side by side and multiplied by
 * one GEMM, so larger nb means fewer, larger GEMMs and more scratch.
 *   col [IC*KH*KW, nb*OH*OW]   eng_conv2d_col_floats(g, nb) floats
 *   tmp [OC, nb*OH*OW]         eng_conv2d_tmp_floats(g, nb) floats; NULL allowed if nb == 1
 * When nb == 1 the GEMM reads and writes the NCHW tensors directly and tmp is unused. */
typedef struct eng_conv2d_scratch {
    float *col;
    float *tmp;
    size_t nb;
} eng_conv2d_scratch;

size_t eng_conv2d_col_floats(const eng_conv2d_geom *g, size_t nb);
size_t eng_conv2d_tmp_floats(const eng_conv2d_geom *g, size_t nb);

/* y [N, OC, OH, OW] = conv(x [N, IC, IH, IW], w [OC, IC, KH, KW]) + b [OC] (b NULL: none). */
void eng_conv2d_forward(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                        const float *b, float *y, const eng_conv2d_scratch *s);

/* eng_conv2d_forward with the epilogue epi (borrowed, NULL: none; layers.h) applied to each
 * output plane after its bias, while the plane is in the cache. */
void eng_conv2d_forward_epi(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                            const float *b, float *y, const eng_conv2d_scratch *s,
                            const eng_epilogue *epi);

/* dw [OC, IC, KH, KW] (+)= dy (x) unfolded x, for x [N, IC, IH, IW], dy [N, OC, OH, OW].
 * The im2col of x is recomputed. */
void eng_conv2d_backward_weight(const eng_conv2d_geom *g, size_t N, const float *x, const float *dy,
                                float *dw, bool accumulate, const eng_conv2d_scratch *s);

/* db [OC] (+)= sum of dy [N, OC, OH, OW] over N, OH, OW. */
void eng_conv2d_backward_bias(const eng_conv2d_geom *g, size_t N, const float *dy, float *db,
                              bool accumulate);

/* dx [N, IC, IH, IW] (+)= col2im(w^T * dy), for w [OC, IC, KH, KW], dy [N, OC, OH, OW]. */
void eng_conv2d_backward_input(const eng_conv2d_geom *g, size_t N, const float *w, const float *dy,
                               float *dx, bool accumulate, const eng_conv2d_scratch *s);

/* Both backward GEMMs in one pass over the chunks (dw or dx may be NULL: the two calls above
 * are this with one of them): each chunk's x is unfolded and its dy gathered once for both. */
void eng_conv2d_backward_weight_input(const eng_conv2d_geom *g, size_t N, const float *x,
                                      const float *w, const float *dy, float *dw, bool acc_dw,
                                      float *dx, bool acc_dx, const eng_conv2d_scratch *s);

/* ---- batch normalisation ----------------------------------------------------------------- */

/* Both BatchNorm2d (x [N, C, H, W], S = H*W) and BatchNorm1d (x [N, C], S = 1) are handled as
 * x [N, C, S]; statistics are per channel over N*S values. PyTorch's defaults are
 * momentum 0.1 and eps 1e-5. gamma [C] and beta [C] may be NULL (affine = false: 1 and 0). */
typedef struct eng_bn_dims {
    size_t N, C, S;
} eng_bn_dims;

#define ENG_BN_MOMENTUM 0.1f
#define ENG_BN_EPS      1e-5f

/* Training forward. Normalises with the batch mean and biased variance:
 *   y = (x - mean) * invstd * gamma + beta,  invstd = 1 / sqrt(var_biased + eps)
 * saves mean [C] and invstd [C] for the backward pass, and updates the running statistics
 * in place (if running_mean/running_var are non-NULL):
 *   running_mean = (1 - momentum) * running_mean + momentum * mean
 *   running_var  = (1 - momentum) * running_var  + momentum * var_unbiased
 * and increments *num_batches_tracked if non-NULL. y may alias x.
 * Returns 0, or ENG_ESHAPE (nothing written) when N*S < 2: the unbiased variance of one value
 * is undefined (PyTorch raises "Expected more than 1 value per channel when training"). */
int eng_batchnorm_train_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                                const float *beta, float *y, float *mean, float *invstd,
                                float *running_mean, float *running_var, float momentum, float eps,
                                int64_t *num_batches_tracked);

/* Inference forward with the running statistics: y = (x - rm) / sqrt(rv + eps) * gamma + beta.
 * y may alias x. */
void eng_batchnorm_eval_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                                const float *beta, const float *running_mean,
                                const float *running_var, float eps, float *y);

/* Training backward, with mean/invstd saved by eng_batchnorm_train_forward on the same x:
 *   xhat = (x - mean) * invstd, g = dy * gamma
 *   dx = invstd * (g - mean_over_NS(g) - xhat * mean_over_NS(g * xhat))
 *   dgamma = sum(dy * xhat), dbeta = sum(dy)
 * dx [N, C, S] may be NULL (skip), and may alias dy only when accumulate is false.
 * dgamma [C] / dbeta [C] may be NULL (skip). */
void eng_batchnorm_train_backward(const eng_bn_dims *d, const float *x, const float *dy,
                                  const float *gamma, const float *mean, const float *invstd,
                                  float *dx, float *dgamma, float *dbeta, bool accumulate);

/* Backward of the eval forward (statistics are constants): dx = dy * gamma / sqrt(rv + eps);
 * dgamma = sum(dy * xhat), dbeta = sum(dy) with xhat from the running statistics.
 * NULL skips a gradient as above. */
void eng_batchnorm_eval_backward(const eng_bn_dims *d, const float *x, const float *dy,
                                 const float *gamma, const float *running_mean,
                                 const float *running_var, float eps, float *dx, float *dgamma,
                                 float *dbeta, bool accumulate);

/* ---- pooling ----------------------------------------------------------------------------- */

/* Geometry of a windowed 2-D pooling over x [N, C, IH, IW] -> y [N, C, OH, OW]
 * (floor mode, like PyTorch's default ceil_mode = false). */
typedef struct eng_pool2d_geom {
    size_t C, IH, IW;
    size_t KH, KW, SH, SW, PH, PW;
    size_t OH, OW;
} eng_pool2d_geom;

/* Fills `g` and derives OH/OW. Returns 0; ENG_EINVAL for zero sizes/strides or padding
 * larger than half the kernel (PyTorch's rule, which guarantees each window overlaps the
 * image); ENG_ESHAPE if the kernel is larger than the padded input. */
int eng_pool2d_geom_init(eng_pool2d_geom *g, size_t C, size_t IH, size_t IW, size_t KH, size_t KW,
                         size_t SH, size_t SW, size_t PH, size_t PW);

/* Max pooling; padding positions count as -inf. idx [N, C, OH, OW] receives, for each output,
 * the flat index ih*IW + iw of its maximum within the input plane (the first one in row-major
 * order on ties; a NaN wins). */
void eng_maxpool2d_forward(const eng_pool2d_geom *g, size_t N, const float *x, float *y,
                           int32_t *idx);
/* dx [N, C, IH, IW] (+)= dy [N, C, OH, OW] routed through idx from the forward pass. */
void eng_maxpool2d_backward(const eng_pool2d_geom *g, size_t N, const float *dy, const int32_t *idx,
                            float *dx, bool accumulate);

/* Average pooling. count_include_pad = true divides by KH*KW (PyTorch's default), false by
 * the number of window positions inside the image. */
void eng_avgpool2d_forward(const eng_pool2d_geom *g, size_t N, bool count_include_pad,
                           const float *x, float *y);
void eng_avgpool2d_backward(const eng_pool2d_geom *g, size_t N, bool count_include_pad,
                            const float *dy, float *dx, bool accumulate);

/* Adaptive pooling over x [N, C, IH, IW] -> y [N, C, OH, OW]: output cell (oh, ow) covers
 * rows floor(oh*IH/OH) .. ceil((oh+1)*IH/OH) - 1 and likewise columns (PyTorch's formula).
 * Requires OH, OW >= 1 (they may exceed IH, IW: windows then repeat input cells). */
typedef struct eng_adapool_dims {
    size_t N, C, IH, IW, OH, OW;
} eng_adapool_dims;

void eng_adaptive_avgpool2d_forward(const eng_adapool_dims *d, const float *x, float *y);
void eng_adaptive_avgpool2d_backward(const eng_adapool_dims *d, const float *dy, float *dx,
                                     bool accumulate);

/* idx [N, C, OH, OW] as for eng_maxpool2d_forward. */
void eng_adaptive_maxpool2d_forward(const eng_adapool_dims *d, const float *x, float *y,
                                    int32_t *idx);
void eng_adaptive_maxpool2d_backward(const eng_adapool_dims *d, const float *dy, const int32_t *idx,
                                     float *dx, bool accumulate);

/* fastai's AdaptiveConcatPool2d: y [N, 2C, OH, OW] holds the adaptive max pool in channels
 * 0..C-1 and the adaptive average pool in channels C..2C-1. idx [N, C, OH, OW] as above. */
void eng_adaptive_concatpool2d_forward(const eng_adapool_dims *d, const float *x, float *y,
                                       int32_t *idx);
/* dx [N, C, IH, IW] (+)= gradient through both halves of dy [N, 2C, OH, OW]. */
void eng_adaptive_concatpool2d_backward(const eng_adapool_dims *d, const float *dy,
                                        const int32_t *idx, float *dx, bool accumulate);

/* ---- operator-table entries (layers.h conventions) --------------------------------------- */

/* conv2d: cfg.conv {IC, OC, KH, KW, stride, pad, bias}; input [IC, H, W]. Parameters
 * "weight" [OC, IC, KH, KW] and optional "bias" [OC]. */
extern const eng_layer_ops eng_layer_conv2d;
/* batchnorm1d (input [C] or [C, L]) and batchnorm2d (input [C, H, W]): cfg.norm {C, eps,
 * momentum}. Parameters "weight", "bias" (norm params), buffers "running_mean",
 * "running_var" [C] and "num_batches_tracked" (a scalar, stored as float). */
extern const eng_layer_ops eng_layer_batchnorm1d;
extern const eng_layer_ops eng_layer_batchnorm2d;
/* maxpool2d / avgpool2d: cfg.pool {KH, KW, stride, pad}; avgpool counts padding in the
 * divisor (PyTorch's default count_include_pad = true). */
extern const eng_layer_ops eng_layer_maxpool2d;
extern const eng_layer_ops eng_layer_avgpool2d;
/* adaptive_avgpool2d / adaptive_concatpool2d: cfg.pool.KH x cfg.pool.KW is the OUTPUT size
 * (0 means 1, fastai's default). Concat pool outputs [2C, OH, OW]: max first, then avg. */
extern const eng_layer_ops eng_layer_adaptive_avgpool2d;
extern const eng_layer_ops eng_layer_adaptive_concatpool2d;
/* flatten: any input shape to [in_size]; no parameters. */
extern const eng_layer_ops eng_layer_flatten;
