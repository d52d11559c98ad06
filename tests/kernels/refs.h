/*
 * refs.h: naive references for the batchnorm and pooling kernels (test-only code), plus the
 * small helpers the kernel tests share: a seeded RNG and tolerance comparisons.
 *
 * The references follow PyTorch's definitions literally (textbook formulas in double,
 * window bounds with explicit tests, adaptive windows via floor/ceil in double) so that they
 * share as little as possible with the kernels they check.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* ---- helpers ----------------------------------------------------------------------------- */

typedef struct test_rng {
    uint64_t s;
} test_rng;

uint64_t test_rng_next(test_rng *r);
/* Uniform in [lo, hi). */
float test_rng_uniform(test_rng *r, float lo, float hi);
/* Uniform size_t in [lo, hi]. */
size_t test_rng_range(test_rng *r, size_t lo, size_t hi);
/* Fills n floats uniform in [lo, hi). */
void test_fill(test_rng *r, float *p, size_t n, float lo, float hi);
/* Fills n floats with a random permutation of well-separated values (no ties, gaps of
 * `gap`), centred on 0; for max pooling, whose gradient is discontinuous at ties. */
void test_fill_distinct(test_rng *r, float *p, size_t n, float gap);

/* Normalised mean squared error sum((got-want)^2) / max(sum(want^2), tiny). */
double test_nmse(const float *got, const float *want, size_t n);
/* sum((got-want)^2) / sum(scale^2): the error measured against the magnitude of the terms
 * that produced `want` (for results that cancel to almost nothing, like the batchnorm input
 * gradient of a batch of two). */
double test_scaled_mse(const float *got, const float *want, const float *scale, size_t n);

/* NMSE <= tol? Sets *nmse; on failure prints a TAP comment naming the worst element. */
bool test_close(const float *got, const float *want, size_t n, double tol, double *nmse);

/* One TAP check that got[n] matches want[n] within NMSE tol (needs tap.h at the use site;
 * the name is a printf format with arguments). */
#define CLOSE(got, want, n, tol, ...)                                     \
    do {                                                                  \
        double close_e_;                                                  \
        bool close_p_ = test_close((got), (want), (n), (tol), &close_e_); \
        if (!ok(close_p_, __VA_ARGS__))                                   \
            diag("  nmse %.3e", close_e_);                                \
    } while (0)

/* Allocates n floats (aborts the test binary on OOM: tests are not library code). */
float *test_alloc(size_t n);

/* ---- batchnorm references ---------------------------------------------------------------- */

/* Training forward in double: y, batch mean/invstd, running stats updated (NULL skips). */
void ref_bn_train_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                          const float *beta, float momentum, float eps, float *y, float *mean,
                          float *invstd, float *running_mean, float *running_var);
/* Training backward by the textbook chain rule (batch statistics recomputed from x). */
void ref_bn_train_backward(const eng_bn_dims *d, const float *x, const float *dy,
                           const float *gamma, float eps, float *dx, float *dgamma, float *dbeta);
void ref_bn_eval_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                         const float *beta, const float *rm, const float *rv, float eps, float *y);

/* ---- pooling references ------------------------------------------------------------------ */

/* y and dx (overwritten) for max pooling; argmax recomputed, first maximum on ties. */
void ref_maxpool2d_forward(const eng_pool2d_geom *g, size_t N, const float *x, float *y);
void ref_maxpool2d_backward(const eng_pool2d_geom *g, size_t N, const float *x, const float *dy,
                            float *dx);
void ref_avgpool2d_forward(const eng_pool2d_geom *g, size_t N, bool count_include_pad,
                           const float *x, float *y);
void ref_avgpool2d_backward(const eng_pool2d_geom *g, size_t N, bool count_include_pad,
                            const float *dy, float *dx);
void ref_adaptive_avgpool2d_forward(const eng_adapool_dims *d, const float *x, float *y);
void ref_adaptive_avgpool2d_backward(const eng_adapool_dims *d, const float *dy, float *dx);
void ref_adaptive_maxpool2d_forward(const eng_adapool_dims *d, const float *x, float *y);
void ref_adaptive_maxpool2d_backward(const eng_adapool_dims *d, const float *x, const float *dy,
                                     float *dx);
