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

/* Scratch floats of eng_convtap_forward / eng_convtap_backward_input for a batch of N:
 * the input, the output and the weights in the kernel's own layouts. */
size_t eng_convtap_scratch_floats(const eng_conv2d_geom *g, size_t N);

/* Multiply-adds the kernel performs for a batch of N: only the (output, input) pairs that
 * fall inside the image, against OC*IC*KH*KW*OH*OW*N for im2col (which multiplies the
 * padding's zeros too). */
size_t eng_convtap_macs(const eng_conv2d_geom *g, size_t N);

/* y [N, OC, OH, OW] = conv(x [N, IC, IH, IW], w [OC, IC, KH, KW]) + b [OC] (b may be NULL),
 * any stride and padding. scratch: eng_convtap_scratch_floats(g, N). */
void eng_convtap_forward(const eng_conv2d_geom *g, size_t N, const float *x, const float *w,
                         const float *b, float *y, float *scratch);

/* dx [N, IC, IH, IW] (+)= the input gradient for dy [N, OC, OH, OW] (accumulate: add to dx,
 * else overwrite). scratch as for the forward. */
void eng_convtap_backward_input(const eng_conv2d_geom *g, size_t N, const float *w, const float *dy,
                                float *dx, bool accumulate, float *scratch);
