/*
 * im2col.h: convolution geometry, im2col/col2im and a naive direct-convolution reference
 * (private to engine/).
 *
 * Layouts (float32, row-major, NCHW):
 *   image  x   [IC, IH, IW]                 one image of a batch
 *   column col [IC*KH*KW, ldcol]            row r = (ic*KH + kh)*KW + kw, column p = oh*OW + ow
 *   weight w   [OC, IC*KH*KW]               PyTorch's [OC, IC, KH, KW] read as a matrix
 * With this layout a convolution of one image is the product w [OC, K] * col [K, OH*OW].
 * ldcol >= OH*OW lets several images share one column buffer side by side (image i at
 * column offset i*OH*OW) so that one GEMM serves a chunk of the batch.
 *
 * Padding is zero padding; there is no dilation and no groups (thawd's architectures use
 * neither). All functions here are reentrant: they touch only the buffers they are given.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Geometry of a 2-D convolution (also used by im2col). Fill with eng_conv2d_geom_init. */
typedef struct eng_conv2d_geom {
    size_t IC, IH, IW; /* input channels and spatial size */
    size_t OC, KH, KW; /* output channels and kernel size */
    size_t SH, SW;     /* stride, >= 1 */
    size_t PH, PW;     /* zero padding on each side */
    size_t OH, OW;     /* output size: (IH + 2*PH - KH) / SH + 1, likewise for W */
} eng_conv2d_geom;

/* Fills `g` and derives OH/OW. Returns 0; ENG_EINVAL if a size or stride is 0 or a size
 * is absurdly large (any buffer above 2^40 floats); ENG_ESHAPE if the kernel is larger
 * than the padded input. `g` is untouched on error. */
int eng_conv2d_geom_init(eng_conv2d_geom *g, size_t IC, size_t IH, size_t IW, size_t OC, size_t KH,
                         size_t KW, size_t SH, size_t SW, size_t PH, size_t PW);

/* Rows of a column buffer: IC*KH*KW (also the column count of the weight matrix). */
static inline size_t eng_conv2d_kdim(const eng_conv2d_geom *g)
{
    return g->IC * g->KH * g->KW;
}

/* Unfolds one image x [IC, IH, IW] into col [IC*KH*KW, ldcol], writing columns
 * 0 .. OH*OW-1 of every row (padding positions become 0). ldcol >= OH*OW. */
void eng_im2col(const eng_conv2d_geom *g, const float *x, float *col, size_t ldcol);

/* The adjoint of eng_im2col: ADDS every column entry back into its image position of
 * dx [IC, IH, IW] (entries that fall in the padding are dropped). ldcol >= OH*OW. */
void eng_col2im(const eng_conv2d_geom *g, const float *col, size_t ldcol, float *dx);

/* eng_col2im onto a zeroed dx: dx [IC, IH, IW] = col2im(col), every element written once (the
 * 3x3 stride-2 padding-1 kernels of resnets and M1 without a separate zeroing pass, with the
 * same sums as eng_col2im; other geometries zero dx and call it). ldcol >= OH*OW. */
void eng_col2im_set(const eng_conv2d_geom *g, const float *col, size_t ldcol, float *dx);

/* ---- naive references (direct loops, double accumulation; for tests) -------------------- */

/* y [N, OC, OH, OW] = conv(x [N, IC, IH, IW], w [OC, IC, KH, KW]) + b [OC] (b may be NULL). */
void eng_conv2d_ref_forward(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                            const float *b, float *y);
/* dx [N, IC, IH, IW] = gradient of sum(y * dy) w.r.t. x, for dy [N, OC, OH, OW] (overwrites). */
void eng_conv2d_ref_backward_input(const eng_conv2d_geom *g, size_t N, const float *dy,
                                   const float *w, float *dx);
/* dw [OC, IC, KH, KW] and db [OC] (db may be NULL): gradients of sum(y * dy) (overwrite). */
void eng_conv2d_ref_backward_weight(const eng_conv2d_geom *g, size_t N, const float *x,
                                    const float *dy, float *dw, float *db);
