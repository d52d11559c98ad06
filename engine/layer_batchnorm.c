/*
 * layer_batchnorm.c: batch normalisation over x [N, C, S] (BatchNorm2d with S = H*W,
 * BatchNorm1d with S = 1), training and inference forward and backward, with PyTorch's
 * running-statistics semantics (momentum 0.1, unbiased variance in the running estimate,
 * num_batches_tracked).
 *
 * DESIGN: statistics are computed in two passes (mean, then the sum of squared deviations)
 * with per-plane float sums accumulated in double, which avoids the cancellation of the
 * one-pass E[x^2] - E[x]^2 formula when |mean| >> std. The backward needs two reductions per
 * channel (sum g, sum g*xhat) and then one element-wise pass.
 */
#include <math.h>
#include <string.h>

#include "engine.h"
#include "kernels.h"

/* Plane of channel c in sample n: [S] */
#define PLANE(p, d, n, c) ((p) + ((n) * (d)->C + (c)) * (d)->S)

int eng_batchnorm_train_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                                const float *beta, float *y, float *mean, float *invstd,
                                float *running_mean, float *running_var, float momentum, float eps,
                                int64_t *num_batches_tracked)
{
    const size_t N = d->N, C = d->C, S = d->S, M = N * S;
    if (M < 2)
        return ENG_ESHAPE;
    for (size_t c = 0; c < C; c++) {
        double sum = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *xp = PLANE(x, d, n, c);
            float part = 0.0f;
            for (size_t s = 0; s < S; s++)
                part += xp[s];
            sum += (double)part;
        }
        const float mu = (float)(sum / (double)M);
        double ss = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *xp = PLANE(x, d, n, c);
            float part = 0.0f;
            for (size_t s = 0; s < S; s++) {
                float t = xp[s] - mu;
                part += t * t;
            }
            ss += (double)part;
        }
        const double var = ss / (double)M;
        const float is = (float)(1.0 / sqrt(var + (double)eps));
        mean[c] = mu;
        invstd[c] = is;
        if (running_mean)
            running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mu;
        if (running_var)
            running_var[c] =
                (1.0f - momentum) * running_var[c] + momentum * (float)(ss / (double)(M - 1));
        /* y = x * a + b with a = invstd * gamma, b = beta - mean * a */
        const float a = is * (gamma ? gamma[c] : 1.0f);
        const float b = (beta ? beta[c] : 0.0f) - mu * a;
        for (size_t n = 0; n < N; n++) {
            const float *xp = PLANE(x, d, n, c);
            float *yp = PLANE(y, d, n, c);
            for (size_t s = 0; s < S; s++)
                yp[s] = xp[s] * a + b;
        }
    }
    if (num_batches_tracked)
        (*num_batches_tracked)++;
    return 0;
}

void eng_batchnorm_eval_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                                const float *beta, const float *running_mean,
                                const float *running_var, float eps, float *y)
{
    for (size_t c = 0; c < d->C; c++) {
        const float is = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
        const float a = is * (gamma ? gamma[c] : 1.0f);
        const float b = (beta ? beta[c] : 0.0f) - running_mean[c] * a;
        for (size_t n = 0; n < d->N; n++) {
            const float *xp = PLANE(x, d, n, c);
            float *yp = PLANE(y, d, n, c);
            for (size_t s = 0; s < d->S; s++)
                yp[s] = xp[s] * a + b;
        }
    }
}

/* Per channel: sum(dy) and sum(dy * (x - mu)) over N*S. */
static void dy_sums(const eng_bn_dims *d, size_t c, const float *x, const float *dy, float mu,
                    double *sdy, double *sdyx)
{
    double a = 0.0, b = 0.0;
    for (size_t n = 0; n < d->N; n++) {
        const float *xp = PLANE(x, d, n, c), *gp = PLANE(dy, d, n, c);
        float pa = 0.0f, pb = 0.0f;
        for (size_t s = 0; s < d->S; s++) {
            pa += gp[s];
            pb += gp[s] * (xp[s] - mu);
        }
        a += (double)pa;
        b += (double)pb;
    }
    *sdy = a;
    *sdyx = b;
}

static void store(float *dst, float v, bool accumulate)
{
    *dst = accumulate ? *dst + v : v;
}

void eng_batchnorm_train_backward(const eng_bn_dims *d, const float *x, const float *dy,
                                  const float *gamma, const float *mean, const float *invstd,
                                  float *dx, float *dgamma, float *dbeta, bool accumulate)
{
    const size_t M = d->N * d->S;
    for (size_t c = 0; c < d->C; c++) {
        const float mu = mean[c], is = invstd[c], gm = gamma ? gamma[c] : 1.0f;
        double sdy, sdyx;
        dy_sums(d, c, x, dy, mu, &sdy, &sdyx);
        /* sum(dy * xhat) = invstd * sum(dy * (x - mu)) */
        const double sdyxhat = sdyx * (double)is;
        if (dgamma)
            store(&dgamma[c], (float)sdyxhat, accumulate);
        if (dbeta)
            store(&dbeta[c], (float)sdy, accumulate);
        if (!dx)
            continue;
        /* dx = gm*is * (dy - sdy/M - xhat * sdyxhat/M)
         *    = k * dy - k*sdy/M - (x - mu) * k*is*sdyxhat/M,  k = gm*is */
        const float k = gm * is;
        const float k0 = (float)((double)k * sdy / (double)M);
        const float k1 = (float)((double)k * (double)is * sdyxhat / (double)M);
        for (size_t n = 0; n < d->N; n++) {
            const float *xp = PLANE(x, d, n, c), *gp = PLANE(dy, d, n, c);
            float *dxp = PLANE(dx, d, n, c);
            if (accumulate)
                for (size_t s = 0; s < d->S; s++)
                    dxp[s] += k * gp[s] - k0 - (xp[s] - mu) * k1;
            else
                for (size_t s = 0; s < d->S; s++)
                    dxp[s] = k * gp[s] - k0 - (xp[s] - mu) * k1;
        }
    }
}

void eng_batchnorm_eval_backward(const eng_bn_dims *d, const float *x, const float *dy,
                                 const float *gamma, const float *running_mean,
                                 const float *running_var, float eps, float *dx, float *dgamma,
                                 float *dbeta, bool accumulate)
{
    for (size_t c = 0; c < d->C; c++) {
        const float mu = running_mean[c];
        const float is = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
        if (dgamma || dbeta) {
            double sdy, sdyx;
            dy_sums(d, c, x, dy, mu, &sdy, &sdyx);
            if (dgamma)
                store(&dgamma[c], (float)(sdyx * (double)is), accumulate);
            if (dbeta)
                store(&dbeta[c], (float)sdy, accumulate);
        }
        if (!dx)
            continue;
        const float k = is * (gamma ? gamma[c] : 1.0f);
        for (size_t n = 0; n < d->N; n++) {
            const float *gp = PLANE(dy, d, n, c);
            float *dxp = PLANE(dx, d, n, c);
            for (size_t s = 0; s < d->S; s++)
                dxp[s] = accumulate ? dxp[s] + k * gp[s] : k * gp[s];
        }
    }
}
