/*
 * conv_tap.h: convolution as a sum of one GEMM per kernel tap over the whole batch, for
 * small feature maps (private to engine/; conv_tap.c explains the method).
 *
 * All tensors are float32 NCHW and borrowed for the call; the functions keep no state,
 * allocate nothing and split their work over the engine's compute threads (par.h) by output
 * channels (forward) or input channels (input gradient). Results do not depend on timing.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "im2col.h"

/* Scratch floats of every function here for a batch of N: the input (twice) and the output
 * in the kernel's own layouts, and a block of the weights per compute thread, for the calling
 * thread's eng_par_threads() (par.h), which must not grow before the calls. */
size_t eng_convtap_scratch_floats(const eng_conv2d_geom *g, size_t N);

/* Multiply-adds the kernel performs for a batch of N: only the (output, input) pairs that
 * fall inside the image, against OC*IC*KH*KW*OH*OW*N for im2col (which multiplies the
 * padding's zeros too). */
size_t eng_convtap_macs(const eng_conv2d_geom *g, size_t N);

/* y [N, OC, OH, OW] = conv(x [N, IC, IH, IW], w [OC, IC, KH, KW]) + b [OC] (b may be NULL),
 * any stride and padding. scratch: eng_convtap_scratch_floats(g, N). */
void eng_convtap_forward(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                         const float *b, float *y, float *scratch);

/* The backward pass for the forward input x [N, IC, IH, IW] and dy [N, OC, OH, OW]:
 * dw [OC, IC, KH, KW] (+)= the weight gradient (accumulate_dw: add, else overwrite; dw NULL:
 * none, x may then be NULL) and dx (+)= the input gradient (likewise; dx NULL: none).
 * With N = 0, dw is zeroed (or left when accumulating). scratch as for the forward. */
void eng_convtap_backward(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                          const float *dy, float *dw, bool accumulate_dw, float *dx,
                          bool accumulate_dx, float *scratch);

/* eng_convtap_backward without the weight gradient:
 * dx [N, IC, IH, IW] (+)= the input gradient for dy [N, OC, OH, OW] (accumulate: add to dx,
 * else overwrite). scratch as for the forward. */
void eng_convtap_backward_input(const eng_conv2d_geom *g, size_t N, const float *w, const float *dy,
                                float *dx, bool accumulate, float *scratch);
