/*
 * lrfind.c: lr_find suggestions, following fastai/callback/schedule.py (valley, slide,
 * minimum, steep) as paraphrased in reference/fastai-semantics.md section 5.4.
 *
 * DESIGN. fastai indexes with Python semantics; valley can produce index -1, which Python
 * reads as the last element. We reproduce that (py_index) so suggestions match fastai.
 * Where fastai raises on too few points we return NaN for that suggestion with a reason
 * instead (issue fastai#3658 is the known crash).
 */
#include "lrfind.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Python's a[i] for -n <= i < n. */
static size_t py_index(long i, size_t n)
{
    return i < 0 ? (size_t)((long)n + i) : (size_t)i;
}

/* lds: scratch of n entries */
static float valley(const float *lrs, const float *loss, size_t n, size_t *lds)
{
    /* longest strictly decreasing subsequence by dynamic programming, O(n^2) as in fastai */
    size_t max_end = 0;
    long max_start = 0;
    size_t m = n;
    for (size_t i = 0; i < m; i++)
        lds[i] = 1;
    for (size_t i = 1; i < m; i++) {
        for (size_t j = 0; j < i; j++) {
            if (loss[i] < loss[j] && lds[i] < lds[j] + 1)
                lds[i] = lds[j] + 1;
            if (lds[max_end] < lds[i]) {
                max_end = i;
                max_start = (long)max_end - (long)lds[max_end];
            }
        }
    }
    double sections = (double)((long)max_end - max_start) / 3.0;
    long idx = max_start + (long)sections + (long)(sections / 2.0);
    return lrs[py_index(idx, m)];
}

static float minimum(const float *lrs, const float *loss, size_t n)
{
    size_t arg = 0;
    for (size_t i = 1; i < n; i++)
        if (loss[i] < loss[arg])
            arg = i;
    return lrs[arg] / 10.0f;
}

static float steep(const float *lrs, const float *loss, size_t n)
{
    size_t arg = 0;
    float best = INFINITY;
    bool any = false;
    for (size_t i = 0; i + 1 < n; i++) {
        float g = (loss[i + 1] - loss[i]) / (logf(lrs[i + 1]) - logf(lrs[i]));
        /* numpy/torch argmin returns the first NaN if there is one */
        if (isnan(g)) {
            arg = i;
            break;
        }
        if (!any || g < best) {
            best = g;
            arg = i;
            any = true;
        }
    }
    return lrs[arg];
}

/* grad: scratch of n entries */
static float slide(const float *lrs, const float *loss, size_t n, float *grad)
{
    const long lr_diff = 15;
    const float thresh = 0.005f;
    size_t m = n;
    /* numpy.gradient: one-sided at the ends, central inside */
    grad[0] = loss[1] - loss[0];
    grad[m - 1] = loss[m - 1] - loss[m - 2];
    for (size_t i = 1; i + 1 < m; i++)
        grad[i] = (loss[i + 1] - loss[i - 1]) / 2.0f;
    long r = -1, l = r - lr_diff;
    float cand = lrs[py_index(l, m)];
    while (l >= -(long)m && fabsf(grad[py_index(r, m)] - grad[py_index(l, m)]) > thresh) {
        cand = lrs[py_index(l, m)];
        r--;
        l--;
    }
    return cand;
}

void eng_lrfind_suggest(const float *lrs, const float *losses, size_t n, size_t num_it,
                        eng_lr_find_result *r)
{
    r->ok = false;
    r->reason[0] = '\0';
    r->valley = r->minimum = r->steep = r->slide = NAN;
    size_t lo = num_it / 10;
    size_t hi = n >= 5 ? n - 5 : 0;
    if (lo >= hi) {
        snprintf(r->reason, sizeof(r->reason),
                 "too few points: %zu recorded (of num_it %zu; the sweep stops early when the "
                 "loss diverges), and suggestions skip the first %zu and the last 5",
                 n, num_it, lo);
        return;
    }
    const float *x = lrs + lo, *y = losses + lo;
    size_t m = hi - lo, k = 0;
    while (k < m && !isnan(y[k]))
        k++;
    if (k == 0) {
        snprintf(r->reason, sizeof(r->reason),
                 "the smoothed loss is NaN from the first usable point on (%zu points)", m);
        return;
    }
    size_t *lds = malloc(k * sizeof(size_t));
    float *grad = malloc(k * sizeof(float));
    if (!lds || !grad) {
        free(lds);
        free(grad);
        snprintf(r->reason, sizeof(r->reason), "out of memory for %zu points", k);
        return;
    }
    r->ok = true;
    r->valley = valley(x, y, k, lds);
    r->minimum = minimum(x, y, k);
    if (k >= 2)
        r->steep = steep(x, y, k);
    if (k >= 16)
        r->slide = slide(x, y, k, grad);
    free(lds);
    free(grad);
    if (k < 16)
        snprintf(r->reason, sizeof(r->reason), "only %zu usable points: %s needs at least %d", k,
                 k < 2 ? "steep" : "slide", k < 2 ? 2 : 16);
}
