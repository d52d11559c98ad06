/*
 * refs.c: naive batchnorm/pooling references and shared test helpers (see refs.h).
 */
#include "refs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ----------------------------------------------------------------------------- */

uint64_t test_rng_next(test_rng *r)
{
    /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float test_rng_uniform(test_rng *r, float lo, float hi)
{
    double u = (double)(test_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)((double)lo + u * ((double)hi - (double)lo));
}

size_t test_rng_range(test_rng *r, size_t lo, size_t hi)
{
    return lo + (size_t)(test_rng_next(r) % (hi - lo + 1));
}

void test_fill(test_rng *r, float *p, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        p[i] = test_rng_uniform(r, lo, hi);
}

void test_fill_distinct(test_rng *r, float *p, size_t n, float gap)
{
    for (size_t i = 0; i < n; i++)
        p[i] = ((float)i - (float)n / 2.0f) * gap;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(test_rng_next(r) % i);
        float t = p[i - 1];
        p[i - 1] = p[j];
        p[j] = t;
    }
}

double test_nmse(const float *got, const float *want, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)got[i] - (double)want[i];
        num += e * e;
        den += (double)want[i] * (double)want[i];
    }
    if (!(num == num)) /* NaN in got */
        return (double)INFINITY;
    return num / (den > 1e-30 ? den : 1e-30);
}

double test_scaled_mse(const float *got, const float *want, const float *scale, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)got[i] - (double)want[i];
        num += e * e;
        den += (double)scale[i] * (double)scale[i];
    }
    if (!(num == num))
        return (double)INFINITY;
    return num / (den > 1e-30 ? den : 1e-30);
}

bool test_close(const float *got, const float *want, size_t n, double tol, double *nmse)
{
    double e = test_nmse(got, want, n);
    bool pass = e <= tol;
    *nmse = e;
    if (!pass) {
        size_t worst = 0;
        double we = -1.0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)got[i] - (double)want[i]);
            if (!(d <= we)) {
                we = d;
                worst = i;
            }
        }
        printf("#   nmse %.3e > tol %.1e; worst at %zu: got %.9g want %.9g\n", e, tol, worst,
               (double)got[worst], (double)want[worst]);
    }
    return pass;
}

float *test_alloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "test_alloc: out of memory (%zu floats)\n", n);
        abort();
    }
    return p;
}

/* ---- batchnorm --------------------------------------------------------------------------- */

static double at(const eng_bn_dims *d, const float *p, size_t n, size_t c, size_t s)
{
    return (double)p[(n * d->C + c) * d->S + s];
}

static void bn_stats(const eng_bn_dims *d, const float *x, size_t c, double *mu, double *var)
{
    double m = 0.0, v = 0.0, M = (double)(d->N * d->S);
    for (size_t n = 0; n < d->N; n++)
        for (size_t s = 0; s < d->S; s++)
            m += at(d, x, n, c, s);
    m /= M;
    for (size_t n = 0; n < d->N; n++)
        for (size_t s = 0; s < d->S; s++)
            v += (at(d, x, n, c, s) - m) * (at(d, x, n, c, s) - m);
    *mu = m;
    *var = v / M; /* biased */
}

void ref_bn_train_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                          const float *beta, float momentum, float eps, float *y, float *mean,
                          float *invstd, float *running_mean, float *running_var)
{
    const double M = (double)(d->N * d->S);
    for (size_t c = 0; c < d->C; c++) {
        double mu, var;
        bn_stats(d, x, c, &mu, &var);
        double is = 1.0 / sqrt(var + (double)eps);
        double gm = gamma ? (double)gamma[c] : 1.0, bt = beta ? (double)beta[c] : 0.0;
        for (size_t n = 0; n < d->N; n++)
            for (size_t s = 0; s < d->S; s++)
                y[(n * d->C + c) * d->S + s] = (float)((at(d, x, n, c, s) - mu) * is * gm + bt);
        if (mean)
            mean[c] = (float)mu;
        if (invstd)
            invstd[c] = (float)is;
        if (running_mean)
            running_mean[c] =
                (float)((1.0 - (double)momentum) * (double)running_mean[c] + (double)momentum * mu);
        if (running_var)
            running_var[c] = (float)((1.0 - (double)momentum) * (double)running_var[c] +
                                     (double)momentum * var * M / (M - 1.0));
    }
}

void ref_bn_train_backward(const eng_bn_dims *d, const float *x, const float *dy,
                           const float *gamma, float eps, float *dx, float *dgamma, float *dbeta)
{
    /* y = gamma * (x - mu) / sqrt(var + eps) + beta with mu, var functions of x:
     * dL/dxhat = dy * gamma
     * dL/dvar  = sum(dL/dxhat * (x - mu)) * -1/2 (var + eps)^(-3/2)
     * dL/dmu   = sum(dL/dxhat) * -invstd + dL/dvar * sum(-2 (x - mu)) / M
     * dL/dx    = dL/dxhat * invstd + dL/dvar * 2 (x - mu) / M + dL/dmu / M */
    const double M = (double)(d->N * d->S);
    for (size_t c = 0; c < d->C; c++) {
        double mu, var;
        bn_stats(d, x, c, &mu, &var);
        double is = 1.0 / sqrt(var + (double)eps), gm = gamma ? (double)gamma[c] : 1.0;
        double dvar = 0.0, dmu = 0.0, sxm = 0.0, sg = 0.0, sgx = 0.0;
        for (size_t n = 0; n < d->N; n++)
            for (size_t s = 0; s < d->S; s++) {
                double g = at(d, dy, n, c, s), xm = at(d, x, n, c, s) - mu;
                dvar += g * gm * xm;
                dmu += g * gm;
                sxm += xm;
                sg += g;
                sgx += g * xm * is;
            }
        dvar *= -0.5 * is * is * is;
        dmu = dmu * -is + dvar * -2.0 * sxm / M;
        for (size_t n = 0; n < d->N; n++)
            for (size_t s = 0; s < d->S; s++) {
                double g = at(d, dy, n, c, s), xm = at(d, x, n, c, s) - mu;
                dx[(n * d->C + c) * d->S + s] =
                    (float)(g * gm * is + dvar * 2.0 * xm / M + dmu / M);
            }
        dgamma[c] = (float)sgx;
        dbeta[c] = (float)sg;
    }
}

void ref_bn_eval_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                         const float *beta, const float *rm, const float *rv, float eps, float *y)
{
    for (size_t c = 0; c < d->C; c++) {
        double is = 1.0 / sqrt((double)rv[c] + (double)eps);
        for (size_t n = 0; n < d->N; n++)
            for (size_t s = 0; s < d->S; s++)
                y[(n * d->C + c) * d->S + s] = (float)((at(d, x, n, c, s) - (double)rm[c]) * is *
                                                           (gamma ? (double)gamma[c] : 1.0) +
                                                       (beta ? (double)beta[c] : 0.0));
    }
}

/* ---- pooling ----------------------------------------------------------------------------- */

/* Index of the first maximum of output (oh, ow) in plane x, scanning the padded window. */
static size_t max_arg(const eng_pool2d_geom *g, const float *x, size_t oh, size_t ow)
{
    long best = -1;
    for (long kh = 0; kh < (long)g->KH; kh++)
        for (long kw = 0; kw < (long)g->KW; kw++) {
            long ih = (long)(oh * g->SH) - (long)g->PH + kh;
            long iw = (long)(ow * g->SW) - (long)g->PW + kw;
            if (ih < 0 || iw < 0 || ih >= (long)g->IH || iw >= (long)g->IW)
                continue;
            long i = ih * (long)g->IW + iw;
            if (best < 0 || x[i] > x[best])
                best = i;
        }
    return (size_t)best;
}

void ref_maxpool2d_forward(const eng_pool2d_geom *g, size_t N, const float *x, float *y)
{
    for (size_t pl = 0; pl < N * g->C; pl++)
        for (size_t oh = 0; oh < g->OH; oh++)
            for (size_t ow = 0; ow < g->OW; ow++)
                y[(pl * g->OH + oh) * g->OW + ow] =
                    x[pl * g->IH * g->IW + max_arg(g, x + pl * g->IH * g->IW, oh, ow)];
}

void ref_maxpool2d_backward(const eng_pool2d_geom *g, size_t N, const float *x, const float *dy,
                            float *dx)
{
    memset(dx, 0, N * g->C * g->IH * g->IW * sizeof(float));
    for (size_t pl = 0; pl < N * g->C; pl++)
        for (size_t oh = 0; oh < g->OH; oh++)
            for (size_t ow = 0; ow < g->OW; ow++)
                dx[pl * g->IH * g->IW + max_arg(g, x + pl * g->IH * g->IW, oh, ow)] +=
                    dy[(pl * g->OH + oh) * g->OW + ow];
}

/* PyTorch's avg_pool2d window: hstart = oh*S - P, hend = min(hstart + K, IH + P),
 * pool_size from those, then both clamped to the image. */
static void avg_window(const eng_pool2d_geom *g, size_t oh, size_t ow, bool cip, long *h0, long *h1,
                       long *w0, long *w1, double *div)
{
    long hs = (long)(oh * g->SH) - (long)g->PH, ws = (long)(ow * g->SW) - (long)g->PW;
    long he = hs + (long)g->KH, we = ws + (long)g->KW;
    if (he > (long)(g->IH + g->PH))
        he = (long)(g->IH + g->PH);
    if (we > (long)(g->IW + g->PW))
        we = (long)(g->IW + g->PW);
    long pool = (he - hs) * (we - ws);
    hs = hs < 0 ? 0 : hs;
    ws = ws < 0 ? 0 : ws;
    he = he > (long)g->IH ? (long)g->IH : he;
    we = we > (long)g->IW ? (long)g->IW : we;
    *h0 = hs;
    *h1 = he;
    *w0 = ws;
    *w1 = we;
    *div = cip ? (double)pool : (double)((he - hs) * (we - ws));
}

void ref_avgpool2d_forward(const eng_pool2d_geom *g, size_t N, bool count_include_pad,
                           const float *x, float *y)
{
    for (size_t pl = 0; pl < N * g->C; pl++)
        for (size_t oh = 0; oh < g->OH; oh++)
            for (size_t ow = 0; ow < g->OW; ow++) {
                long h0, h1, w0, w1;
                double div, s = 0.0;
                avg_window(g, oh, ow, count_include_pad, &h0, &h1, &w0, &w1, &div);
                for (long ih = h0; ih < h1; ih++)
                    for (long iw = w0; iw < w1; iw++)
                        s += (double)x[pl * g->IH * g->IW + (size_t)(ih * (long)g->IW + iw)];
                y[(pl * g->OH + oh) * g->OW + ow] = (float)(s / div);
            }
}

void ref_avgpool2d_backward(const eng_pool2d_geom *g, size_t N, bool count_include_pad,
                            const float *dy, float *dx)
{
    memset(dx, 0, N * g->C * g->IH * g->IW * sizeof(float));
    for (size_t pl = 0; pl < N * g->C; pl++)
        for (size_t oh = 0; oh < g->OH; oh++)
            for (size_t ow = 0; ow < g->OW; ow++) {
                long h0, h1, w0, w1;
                double div;
                avg_window(g, oh, ow, count_include_pad, &h0, &h1, &w0, &w1, &div);
                for (long ih = h0; ih < h1; ih++)
                    for (long iw = w0; iw < w1; iw++)
                        dx[pl * g->IH * g->IW + (size_t)(ih * (long)g->IW + iw)] +=
                            (float)((double)dy[(pl * g->OH + oh) * g->OW + ow] / div);
            }
}

static void ada_bounds(size_t i, size_t In, size_t Out, size_t *lo, size_t *hi)
{
    *lo = (size_t)floor((double)i * (double)In / (double)Out);
    *hi = (size_t)ceil((double)(i + 1) * (double)In / (double)Out);
}

void ref_adaptive_avgpool2d_forward(const eng_adapool_dims *d, const float *x, float *y)
{
    for (size_t pl = 0; pl < d->N * d->C; pl++)
        for (size_t oh = 0; oh < d->OH; oh++)
            for (size_t ow = 0; ow < d->OW; ow++) {
                size_t h0, h1, w0, w1;
                ada_bounds(oh, d->IH, d->OH, &h0, &h1);
                ada_bounds(ow, d->IW, d->OW, &w0, &w1);
                double s = 0.0;
                for (size_t ih = h0; ih < h1; ih++)
                    for (size_t iw = w0; iw < w1; iw++)
                        s += (double)x[(pl * d->IH + ih) * d->IW + iw];
                y[(pl * d->OH + oh) * d->OW + ow] = (float)(s / (double)((h1 - h0) * (w1 - w0)));
            }
}

void ref_adaptive_avgpool2d_backward(const eng_adapool_dims *d, const float *dy, float *dx)
{
    memset(dx, 0, d->N * d->C * d->IH * d->IW * sizeof(float));
    for (size_t pl = 0; pl < d->N * d->C; pl++)
        for (size_t oh = 0; oh < d->OH; oh++)
            for (size_t ow = 0; ow < d->OW; ow++) {
                size_t h0, h1, w0, w1;
                ada_bounds(oh, d->IH, d->OH, &h0, &h1);
                ada_bounds(ow, d->IW, d->OW, &w0, &w1);
                double v =
                    (double)dy[(pl * d->OH + oh) * d->OW + ow] / (double)((h1 - h0) * (w1 - w0));
                for (size_t ih = h0; ih < h1; ih++)
                    for (size_t iw = w0; iw < w1; iw++)
                        dx[(pl * d->IH + ih) * d->IW + iw] += (float)v;
            }
}

static size_t ada_argmax(const eng_adapool_dims *d, const float *x, size_t oh, size_t ow)
{
    size_t h0, h1, w0, w1, best = SIZE_MAX;
    ada_bounds(oh, d->IH, d->OH, &h0, &h1);
    ada_bounds(ow, d->IW, d->OW, &w0, &w1);
    for (size_t ih = h0; ih < h1; ih++)
        for (size_t iw = w0; iw < w1; iw++)
            if (best == SIZE_MAX || x[ih * d->IW + iw] > x[best])
                best = ih * d->IW + iw;
    return best;
}

void ref_adaptive_maxpool2d_forward(const eng_adapool_dims *d, const float *x, float *y)
{
    const size_t IP = d->IH * d->IW;
    for (size_t pl = 0; pl < d->N * d->C; pl++)
        for (size_t oh = 0; oh < d->OH; oh++)
            for (size_t ow = 0; ow < d->OW; ow++)
                y[(pl * d->OH + oh) * d->OW + ow] = x[pl * IP + ada_argmax(d, x + pl * IP, oh, ow)];
}

void ref_adaptive_maxpool2d_backward(const eng_adapool_dims *d, const float *x, const float *dy,
                                     float *dx)
{
    const size_t IP = d->IH * d->IW;
    memset(dx, 0, d->N * d->C * IP * sizeof(float));
    for (size_t pl = 0; pl < d->N * d->C; pl++)
        for (size_t oh = 0; oh < d->OH; oh++)
            for (size_t ow = 0; ow < d->OW; ow++)
                dx[pl * IP + ada_argmax(d, x + pl * IP, oh, ow)] +=
                    dy[(pl * d->OH + oh) * d->OW + ow];
}
