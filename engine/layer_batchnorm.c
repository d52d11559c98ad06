/*
 * layer_batchnorm.c: batch normalisation over x [N, C, S] (BatchNorm2d with S = H*W,
 * BatchNorm1d with S = 1), training and inference forward and backward, with PyTorch's
 * running-statistics semantics (momentum 0.1, unbiased variance in the running estimate,
 * num_batches_tracked).
 *
 * DESIGN: statistics are computed in two passes (mean, then the sum of squared deviations),
 * which avoids the cancellation of the one-pass E[x^2] - E[x]^2 formula when |mean| >> std:
 * float sums over the batch per element of a group of channels' planes, then per channel in
 * double (group_stats). The backward needs two reductions per channel (sum g, sum g*xhat),
 * gathered the same way (group_gsums), and then one element-wise pass.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine.h"
#include "kernels.h"
#include "layers.h"
#include "par.h"
#include "util.h"

/* Plane of channel c in sample n: [S] */
#define PLANE(p, d, n, c) ((p) + ((n) * (d)->C + (c)) * (d)->S)

/* The kernels below are element-wise loops; on x86-64 with GCC they are also built for AVX2
 * and picked at load time (ifunc). The clone's target does not enable FMA (and C17 mode keeps
 * GCC from contracting), so both clones compute the same bits.
 *
 * The reductions' inner loops are written with vectors of VW floats (the GNU C vector
 * extension, which gcc and clang accept): gcc does not vectorise them from plain loops (the
 * masks are control flow to it). Each element's arithmetic is the scalar tail's, in the same
 * order. */
#define VW 8
typedef float vfw __attribute__((vector_size(VW * sizeof(float))));
typedef int32_t viw __attribute__((vector_size(VW * sizeof(float))));

/* The helpers below take and return vectors by value: a 32-byte vector's calling convention
 * differs with AVX, which GCC and clang warn about (-Wpsabi); they are static and inlined into
 * each clone, so no call crosses that boundary. */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

static inline vfw vload(const float *p)
{
    vfw v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void vstore(float *p, vfw v)
{
    memcpy(p, &v, sizeof(v));
}

/* per element: v > 0 ? d : 0 (false for NaN, as the scalar test); a macro, as GCC notes a
 * changed ABI for any function taking 32-byte vectors */
#define VPOS_SELECT(v, d) ((vfw)((viw)(d) & ((v) > (vfw){0})))

/* A group's runs are C * S floats apart, so every run starts a new memory stream that the
 * hardware prefetcher has to detect again; the first pass over a group, which reads the runs
 * cold, fetches the next run's cache lines while it works on this one. */
static inline void prefetch_plane(const float *p, size_t S)
{
    for (size_t s = 0; s < S; s += 64 / sizeof(float))
        __builtin_prefetch(p + s);
}

/* Batch statistics are gathered a group of channels at a time, image by image: the planes
 * of a group are one contiguous run of g*S floats in every image, and a pass adds each
 * image's run element-wise into a float accumulator of the run's length (N terms per
 * element), then adds the accumulator's elements into each channel's double sum in order.
 * A group covers about RUN_FLOATS floats per image (a plane larger than that is split into
 * runs), so that its N runs stay in L2 for the next pass, and small planes do not pay a lane
 * reduction each (one plane at a time, 7x7 planes ran at 9 GB/s). */
#define RUN_FLOATS 1024

/* Channels per group for planes of S floats. */
static size_t group_channels(size_t S)
{
    return S >= RUN_FLOATS ? 1 : RUN_FLOATS / S;
}

/* acc[e] += x[n * stride + e] for n in [0, N), e in [0, L). */
ENG_SIMD_AVX2 static void runs_sum(const float *x, size_t stride, size_t N, size_t L,
                                   float *restrict acc)
{
    for (size_t n = 0; n < N; n++) {
        const float *restrict xn = x + n * stride;
        if (n + 1 < N)
            prefetch_plane(xn + stride, L);
        size_t e = 0;
        for (; e + VW <= L; e += VW)
            vstore(acc + e, vload(acc + e) + vload(xn + e));
        for (; e < L; e++)
            acc[e] += xn[e];
    }
}

/* acc[e] += (x[n * stride + e] - mu[e])^2, n from N - 1 down to 0: the runs read last by
 * runs_sum are still in the cache. */
ENG_SIMD_AVX2 static void runs_sqdev(const float *x, size_t stride, size_t N, size_t L,
                                     const float *restrict mu, float *restrict acc)
{
    for (size_t n = N; n-- > 0;) {
        const float *restrict xn = x + n * stride;
        size_t e = 0;
        for (; e + VW <= L; e += VW) {
            const vfw t = vload(xn + e) - vload(mu + e);
            vstore(acc + e, vload(acc + e) + t * t);
        }
        for (; e < L; e++) {
            const float t = xn[e] - mu[e];
            acc[e] += t * t;
        }
    }
}

/* sum(a[0..n)) in double, in 8 interleaved partial sums added pairwise (a single running
 * double sum would wait on each add's latency). */
ENG_SIMD_AVX2 static double sum_double(const float *a, size_t n)
{
    double p[8] = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (size_t i = 0; i < 8; i++)
            p[i] += (double)a[k + i];
    for (size_t i = 0; k < n; k++, i++)
        p[i] += (double)a[k];
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

/* out[i] += the sum of acc's elements in plane i, for acc [L] holding elements [e0, e0 + L)
 * of a run of planes of S floats. */
static void add_plane_sums(const float *acc, size_t e0, size_t L, size_t S, double *out)
{
    for (size_t e = e0; e < e0 + L;) {
        const size_t i = e / S, end = (i + 1) * S < e0 + L ? (i + 1) * S : e0 + L;
        out[i] += sum_double(acc + (e - e0), end - e);
        e = end;
    }
}

/* out[e - e0] = v[e / S] for e in [e0, e0 + L): per-channel values v of a group (its first
 * channel at 0) spread over the elements [e0, e0 + L) of its run. */
static void expand(const float *v, size_t e0, size_t L, size_t S, float *out)
{
    for (size_t e = e0; e < e0 + L;) {
        const size_t i = e / S, end = (i + 1) * S < e0 + L ? (i + 1) * S : e0 + L;
        for (; e < end; e++)
            out[e - e0] = v[i];
    }
}

/* Batch mean and invstd of channels [c0, c0 + g) (two passes) and the running statistics'
 * update. g <= group_channels(S). */
static void group_stats(const eng_bn_dims *d, size_t c0, size_t g, const float *x, float *mean,
                        float *invstd, float *running_mean, float *running_var, float momentum,
                        float eps)
{
    const size_t N = d->N, S = d->S, M = N * S, stride = d->C * S, len = g * S;
    const float *x0 = x + c0 * S; /* the group's run in image 0 */
    float acc[RUN_FLOATS], mu[RUN_FLOATS];
    double sum[RUN_FLOATS], ss[RUN_FLOATS]; /* per channel of the group */
    for (size_t i = 0; i < g; i++)
        sum[i] = ss[i] = 0.0;
    for (size_t e0 = 0; e0 < len; e0 += RUN_FLOATS) {
        const size_t L = len - e0 < RUN_FLOATS ? len - e0 : RUN_FLOATS;
        memset(acc, 0, L * sizeof(float));
        runs_sum(x0 + e0, stride, N, L, acc);
        add_plane_sums(acc, e0, L, S, sum);
    }
    for (size_t i = 0; i < g; i++)
        mean[c0 + i] = (float)(sum[i] / (double)M);
    for (size_t e0 = len; e0 > 0;) { /* backwards, as runs_sqdev */
        const size_t L = e0 % RUN_FLOATS ? e0 % RUN_FLOATS : RUN_FLOATS;
        e0 -= L;
        expand(mean + c0, e0, L, S, mu);
        memset(acc, 0, L * sizeof(float));
        runs_sqdev(x0 + e0, stride, N, L, mu, acc);
        add_plane_sums(acc, e0, L, S, ss);
    }
    for (size_t i = 0; i < g; i++) {
        const size_t c = c0 + i;
        const double var = ss[i] / (double)M;
        invstd[c] = (float)(1.0 / sqrt(var + (double)eps));
        if (running_mean)
            running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean[c];
        if (running_var)
            running_var[c] =
                (1.0f - momentum) * running_var[c] + momentum * (float)(ss[i] / (double)(M - 1));
    }
}

/* The backward's per-channel sums, sum(g) and sum(g * (x - mu)), where g is dy (plain), or
 * dy where the ReLU after the BatchNorm passed, its mask recomputed from x (x * a + b > 0) or
 * read from its output y (y > 0, g then also stored into gout when given); gathered a group of
 * channels at a time like the statistics. */
typedef enum { G_PLAIN, G_RELU_X, G_RELU_Y } gsums_mask;

typedef struct gsums_args {
    gsums_mask mask;
    const float *x, *y, *dy; /* y only for G_RELU_Y */
    float *gout;             /* G_RELU_Y, may be NULL */
    const float *mu, *a, *b; /* per channel of the group (its first channel at 0); a, b only
                              * for G_RELU_X */
} gsums_args;

/* The ReLU-masked gradient of one element: dy where the ReLU passed (see gsums_args). */
static inline float masked(gsums_mask mask, float x, float y, float dy, float a, float b)
{
    if (mask == G_RELU_X)
        return x * a + b > 0.0f ? dy : 0.0f;
    if (mask == G_RELU_Y)
        return y > 0.0f ? dy : 0.0f;
    return dy;
}

/* accg[e] += g and accx[e] += g * (x - mu[e]) over images [n0, n0 + m) of the runs of L
 * floats at offset off of every image (images stride floats apart), m <= 4: the images are
 * added one after the other, but each accumulator is loaded and stored once per call. */
static inline void runs_gsums_m(const gsums_args *ga, gsums_mask mask, size_t off, size_t stride,
                                size_t n0, size_t m, size_t L, const float *restrict mu,
                                const float *restrict a, const float *restrict b,
                                float *restrict accg, float *restrict accx)
{
    const float *x[4], *y[4], *dy[4];
    float *gout[4];
    for (size_t k = 0; k < m; k++) {
        const size_t o = (n0 + k) * stride + off;
        x[k] = ga->x + o;
        dy[k] = ga->dy + o;
        y[k] = mask == G_RELU_Y ? ga->y + o : NULL;
        gout[k] = mask == G_RELU_Y && ga->gout ? ga->gout + o : NULL;
    }
    size_t e = 0;
    for (; e + VW <= L; e += VW) {
        vfw sg = vload(accg + e), sx = vload(accx + e);
        const vfw me = vload(mu + e);
        const vfw ae = mask == G_RELU_X ? vload(a + e) : (vfw){0};
        const vfw be = mask == G_RELU_X ? vload(b + e) : (vfw){0};
        for (size_t k = 0; k < m; k++) {
            const vfw xv = vload(x[k] + e), d = vload(dy[k] + e);
            vfw g = d;
            if (mask == G_RELU_X)
                g = VPOS_SELECT(xv * ae + be, d);
            else if (mask == G_RELU_Y)
                g = VPOS_SELECT(vload(y[k] + e), d);
            if (gout[k])
                vstore(gout[k] + e, g);
            sg += g;
            sx += g * (xv - me);
        }
        vstore(accg + e, sg);
        vstore(accx + e, sx);
    }
    for (; e < L; e++) {
        float sg = accg[e], sx = accx[e];
        const float ae = mask == G_RELU_X ? a[e] : 0.0f, be = mask == G_RELU_X ? b[e] : 0.0f;
        for (size_t k = 0; k < m; k++) {
            const float xv = x[k][e];
            const float g = masked(mask, xv, y[k] ? y[k][e] : 0.0f, dy[k][e], ae, be);
            if (gout[k])
                gout[k][e] = g;
            sg += g;
            sx += g * (xv - mu[e]);
        }
        accg[e] = sg;
        accx[e] = sx;
    }
}

/* runs_gsums_m over all N images, four at a time, for one mask (the mask a constant in each
 * instance, so the compiler keeps one loop body per mask). */
#define RUNS_GSUMS(name, MASK)                                                                  \
    ENG_SIMD_AVX2 static void name(const gsums_args *ga, size_t off, size_t stride, size_t N,   \
                                   size_t L, const float *restrict mu, const float *restrict a, \
                                   const float *restrict b, float *restrict accg,               \
                                   float *restrict accx)                                        \
    {                                                                                           \
        for (size_t n = 0; n < N; n += 4) {                                                     \
            const size_t m = N - n < 4 ? N - n : 4;                                             \
            if (n + m < N)                                                                      \
                for (size_t k = 0; k < 4 && n + m + k < N; k++) {                               \
                    prefetch_plane(ga->x + (n + m + k) * stride + off, L);                      \
                    prefetch_plane(ga->dy + (n + m + k) * stride + off, L);                     \
                }                                                                               \
            if (m == 4)                                                                         \
                runs_gsums_m(ga, MASK, off, stride, n, 4, L, mu, a, b, accg, accx);             \
            else                                                                                \
                runs_gsums_m(ga, MASK, off, stride, n, m, L, mu, a, b, accg, accx);             \
        }                                                                                       \
    }
RUNS_GSUMS(runs_gsums_plain, G_PLAIN)
RUNS_GSUMS(runs_gsums_relu_x, G_RELU_X)
RUNS_GSUMS(runs_gsums_relu_y, G_RELU_Y)

/* The sums of channels [c0, c0 + g) into sdy[i], sdyx[i]. g <= group_channels(S). */
static void group_gsums(const eng_bn_dims *d, size_t c0, size_t g, const gsums_args *ga,
                        double *sdy, double *sdyx)
{
    const size_t S = d->S, len = g * S;
    float accg[RUN_FLOATS], accx[RUN_FLOATS], mu[RUN_FLOATS], a[RUN_FLOATS], b[RUN_FLOATS];
    for (size_t i = 0; i < g; i++)
        sdy[i] = sdyx[i] = 0.0;
    for (size_t e0 = 0; e0 < len; e0 += RUN_FLOATS) {
        const size_t L = len - e0 < RUN_FLOATS ? len - e0 : RUN_FLOATS;
        expand(ga->mu, e0, L, S, mu);
        if (ga->mask == G_RELU_X) {
            expand(ga->a, e0, L, S, a);
            expand(ga->b, e0, L, S, b);
        }
        memset(accg, 0, L * sizeof(float));
        memset(accx, 0, L * sizeof(float));
        const size_t off = c0 * S + e0, stride = d->C * S;
        if (ga->mask == G_PLAIN)
            runs_gsums_plain(ga, off, stride, d->N, L, mu, NULL, NULL, accg, accx);
        else if (ga->mask == G_RELU_X)
            runs_gsums_relu_x(ga, off, stride, d->N, L, mu, a, b, accg, accx);
        else
            runs_gsums_relu_y(ga, off, stride, d->N, L, mu, NULL, NULL, accg, accx);
        add_plane_sums(accg, e0, L, S, sdy);
        add_plane_sums(accx, e0, L, S, sdyx);
    }
}

/* Channels [c0, c1) of eng_batchnorm_train_forward (channels are independent). */
static void train_forward_range(const eng_bn_dims *d, size_t c0, size_t c1, const float *x,
                                const float *gamma, const float *beta, float *y, float *mean,
                                float *invstd, float *running_mean, float *running_var,
                                float momentum, float eps)
{
    const size_t N = d->N, S = d->S;
    const size_t G = group_channels(S);
    for (size_t c = c0; c < c1; c++) {
        if ((c - c0) % G == 0)
            group_stats(d, c, c1 - c < G ? c1 - c : G, x, mean, invstd, running_mean, running_var,
                        momentum, eps);
        /* y = x * a + b with a = invstd * gamma, b = beta - mean * a */
        const float a = invstd[c] * (gamma ? gamma[c] : 1.0f);
        const float b = (beta ? beta[c] : 0.0f) - mean[c] * a;
        for (size_t n = 0; n < N; n++) {
            const float *xp = PLANE(x, d, n, c);
            float *yp = PLANE(y, d, n, c);
            for (size_t s = 0; s < S; s++)
                yp[s] = xp[s] * a + b;
        }
    }
}

int eng_batchnorm_train_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                                const float *beta, float *y, float *mean, float *invstd,
                                float *running_mean, float *running_var, float momentum, float eps,
                                int64_t *num_batches_tracked)
{
    if (d->N * d->S < 2)
        return ENG_ESHAPE;
    train_forward_range(d, 0, d->C, x, gamma, beta, y, mean, invstd, running_mean, running_var,
                        momentum, eps);
    if (num_batches_tracked)
        (*num_batches_tracked)++;
    return 0;
}

static void eval_forward_range(const eng_bn_dims *d, size_t c0, size_t c1, const float *x,
                               const float *gamma, const float *beta, const float *running_mean,
                               const float *running_var, float eps, float *y)
{
    for (size_t c = c0; c < c1; c++) {
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

void eng_batchnorm_eval_forward(const eng_bn_dims *d, const float *x, const float *gamma,
                                const float *beta, const float *running_mean,
                                const float *running_var, float eps, float *y)
{
    eval_forward_range(d, 0, d->C, x, gamma, beta, running_mean, running_var, eps, y);
}

static void store(float *dst, float v, bool accumulate)
{
    *dst = accumulate ? *dst + v : v;
}

static void train_backward_range(const eng_bn_dims *d, size_t c0, size_t c1, const float *x,
                                 const float *dy, const float *gamma, const float *mean,
                                 const float *invstd, float *dx, float *dgamma, float *dbeta,
                                 bool accumulate)
{
    const size_t M = d->N * d->S, G = group_channels(d->S);
    double sdys[RUN_FLOATS], sdyxs[RUN_FLOATS]; /* of the group */
    for (size_t c = c0; c < c1; c++) {
        if ((c - c0) % G == 0) {
            const gsums_args ga = {.mask = G_PLAIN, .x = x, .dy = dy, .mu = mean + c};
            group_gsums(d, c, c1 - c < G ? c1 - c : G, &ga, sdys, sdyxs);
        }
        const float mu = mean[c], is = invstd[c], gm = gamma ? gamma[c] : 1.0f;
        const double sdy = sdys[(c - c0) % G], sdyx = sdyxs[(c - c0) % G];
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

void eng_batchnorm_train_backward(const eng_bn_dims *d, const float *x, const float *dy,
                                  const float *gamma, const float *mean, const float *invstd,
                                  float *dx, float *dgamma, float *dbeta, bool accumulate)
{
    train_backward_range(d, 0, d->C, x, dy, gamma, mean, invstd, dx, dgamma, dbeta, accumulate);
}

static void eval_backward_range(const eng_bn_dims *d, size_t c0, size_t c1, const float *x,
                                const float *dy, const float *gamma, const float *running_mean,
                                const float *running_var, float eps, float *dx, float *dgamma,
                                float *dbeta, bool accumulate)
{
    const size_t G = group_channels(d->S);
    double sdys[RUN_FLOATS], sdyxs[RUN_FLOATS]; /* of the group */
    for (size_t c = c0; c < c1; c++) {
        const float is = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
        if (dgamma || dbeta) {
            if ((c - c0) % G == 0) {
                const gsums_args ga = {.mask = G_PLAIN, .x = x, .dy = dy, .mu = running_mean + c};
                group_gsums(d, c, c1 - c < G ? c1 - c : G, &ga, sdys, sdyxs);
            }
            const double sdy = sdys[(c - c0) % G], sdyx = sdyxs[(c - c0) % G];
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

void eng_batchnorm_eval_backward(const eng_bn_dims *d, const float *x, const float *dy,
                                 const float *gamma, const float *running_mean,
                                 const float *running_var, float eps, float *dx, float *dgamma,
                                 float *dbeta, bool accumulate)
{
    eval_backward_range(d, 0, d->C, x, dy, gamma, running_mean, running_var, eps, dx, dgamma, dbeta,
                        accumulate);
}

/* ---- operator-table entries -------------------------------------------------------------- */

/* Parameters in PyTorch's state_dict order. */
enum { BN_WEIGHT, BN_BIAS, BN_RUNNING_MEAN, BN_RUNNING_VAR, BN_NUM_BATCHES, BN_N_PARAMS };

/* x [N, C, S]: S = the product of the per-sample dims after C. */
static eng_bn_dims bn_dims(const eng_layer *l, size_t N)
{
    size_t S = 1;
    for (size_t i = 1; i < l->in_ndim; i++)
        S *= l->in_shape[i];
    return (eng_bn_dims){N, l->cfg.norm.C, S};
}

static int bn_setup_common(eng_layer *l, eng_error *err, size_t min_dims, size_t max_dims,
                           const char *kind)
{
    if (l->in_ndim < min_dims || l->in_ndim > max_dims || l->in_shape[0] != l->cfg.norm.C ||
        l->cfg.norm.C == 0)
        return eng_err_set(err, ENG_ESHAPE, NULL,
                           "layer %s: %s with %zu channels does not fit an input of %zu dims "
                           "with %zu channels",
                           l->name, kind, l->cfg.norm.C, l->in_ndim, l->in_shape[0]);
    if (!(l->cfg.norm.eps > 0.0f) || !(l->cfg.norm.momentum >= 0.0f) ||
        !(l->cfg.norm.momentum <= 1.0f))
        return eng_err_set(err, ENG_EINVAL, NULL,
                           "layer %s: %s needs eps > 0 and momentum in [0, 1]", l->name, kind);
    l->out_ndim = l->in_ndim;
    memcpy(l->out_shape, l->in_shape, l->in_ndim * sizeof(size_t));
    l->out_size = l->in_size;
    return 0;
}

static int bn1d_setup(eng_layer *l, eng_error *err)
{
    return bn_setup_common(l, err, 1, 2, "batchnorm1d");
}

static int bn2d_setup(eng_layer *l, eng_error *err)
{
    return bn_setup_common(l, err, 3, 3, "batchnorm2d");
}

static size_t bn_n_params(const eng_layer *l)
{
    (void)l; /* the same five tensors for every shape */
    return BN_N_PARAMS;
}

static void bn_param_info(const eng_layer *l, size_t i, eng_param_info *info)
{
    static const char *names[BN_N_PARAMS] = {"weight", "bias", "running_mean", "running_var",
                                             "num_batches_tracked"};
    memset(info, 0, sizeof(*info));
    strcpy(info->suffix, names[i]);
    if (i == BN_NUM_BATCHES) {
        info->ndim = 0; /* a scalar, as in PyTorch */
    } else {
        info->ndim = 1;
        info->shape[0] = l->cfg.norm.C;
    }
    info->no_wd = true;
    info->is_norm = i <= BN_BIAS;
    info->is_buffer = i > BN_BIAS;
}

/* PyTorch's reset_parameters: weight 1, bias 0, running mean 0, running var 1, count 0. */
static void bn_init(eng_layer *l, eng_rng *rng)
{
    (void)rng; /* deterministic initialisation */
    for (size_t c = 0; c < l->cfg.norm.C; c++) {
        l->param[BN_WEIGHT][c] = 1.0f;
        l->param[BN_BIAS][c] = 0.0f;
        l->param[BN_RUNNING_MEAN][c] = 0.0f;
        l->param[BN_RUNNING_VAR][c] = 1.0f;
    }
    l->param[BN_NUM_BATCHES][0] = 0.0f;
}

/* aux: mean [C], invstd [C] of the last training forward, then one flag: 1 when the last
 * forward used batch statistics, 0 when it used the running ones. */
static size_t bn_aux_size(const eng_layer *l, size_t N)
{
    (void)N; /* per-channel state only */
    return 2 * l->cfg.norm.C + 1;
}

/* One BN call split over the compute threads by channel ranges (par.h): channels are
 * independent, so the split changes neither the results nor their order. */
typedef struct bn_job {
    const eng_layer *l;
    eng_bn_dims d;
    const float *x, *dy;
    float *y, *dx, *dgamma, *dbeta;
    bool train;
} bn_job;

/* Channel-parallel only when there is enough work per call to pay for waking a thread. */
static size_t bn_parts(const eng_bn_dims *d)
{
    size_t T = eng_par_threads();
    if (d->N * d->C * d->S < 32768)
        return 1;
    return T < d->C ? T : d->C;
}

static void bn_forward_part(void *ctx, size_t p, size_t T)
{
    const bn_job *j = ctx;
    const eng_layer *l = j->l;
    size_t c0, c1;
    eng_par_range(j->d.C, p, T, &c0, &c1);
    if (j->train)
        train_forward_range(&j->d, c0, c1, j->x, l->param[BN_WEIGHT], l->param[BN_BIAS], j->y,
                            l->aux, l->aux + j->d.C, l->param[BN_RUNNING_MEAN],
                            l->param[BN_RUNNING_VAR], l->cfg.norm.momentum, l->cfg.norm.eps);
    else
        eval_forward_range(&j->d, c0, c1, j->x, l->param[BN_WEIGHT], l->param[BN_BIAS],
                           l->param[BN_RUNNING_MEAN], l->param[BN_RUNNING_VAR], l->cfg.norm.eps,
                           j->y);
}

static void bn_forward(eng_layer *l, const eng_fwd_args *a)
{
    bn_job j = {.l = l, .d = bn_dims(l, a->N), .x = a->x, .y = a->y};
    float *mode = l->aux + 2 * j.d.C;
    /* One value per channel (a batch of one into batchnorm1d): PyTorch raises; forward
     * cannot fail here, so this batch is normalised with the running statistics and the
     * backward pass matches. Trainers avoid it by dropping a last batch of one. */
    j.train = a->train && j.d.N * j.d.S >= 2;
    eng_par_run(bn_parts(&j.d), bn_forward_part, &j);
    if (j.train)
        l->param[BN_NUM_BATCHES][0] += 1.0f;
    *mode = j.train ? 1.0f : 0.0f;
}

static void bn_backward_part(void *ctx, size_t p, size_t T)
{
    const bn_job *j = ctx;
    const eng_layer *l = j->l;
    size_t c0, c1;
    eng_par_range(j->d.C, p, T, &c0, &c1);
    if (j->train)
        train_backward_range(&j->d, c0, c1, j->x, j->dy, l->param[BN_WEIGHT], l->aux,
                             l->aux + j->d.C, j->dx, j->dgamma, j->dbeta, false);
    else
        eval_backward_range(&j->d, c0, c1, j->x, j->dy, l->param[BN_WEIGHT],
                            l->param[BN_RUNNING_MEAN], l->param[BN_RUNNING_VAR], l->cfg.norm.eps,
                            j->dx, j->dgamma, j->dbeta, false);
}

static void bn_backward(eng_layer *l, const eng_bwd_args *a)
{
    bn_job j = {.l = l, .d = bn_dims(l, a->N), .x = a->x, .dy = a->dy, .dx = a->dx};
    j.dgamma = l->trainable[BN_WEIGHT] ? l->grad[BN_WEIGHT] : NULL;
    j.dbeta = l->trainable[BN_BIAS] ? l->grad[BN_BIAS] : NULL;
    j.train = l->aux[2 * j.d.C] != 0.0f;
    eng_par_run(bn_parts(&j.d), bn_backward_part, &j);
}

const eng_layer_ops eng_layer_batchnorm1d = {
    .kind = "batchnorm1d",
    .setup = bn1d_setup,
    .n_params = bn_n_params,
    .param_info = bn_param_info,
    .init = bn_init,
    .aux_size = bn_aux_size,
    .forward = bn_forward,
    .backward = bn_backward,
};

const eng_layer_ops eng_layer_batchnorm2d = {
    .kind = "batchnorm2d",
    .setup = bn2d_setup,
    .n_params = bn_n_params,
    .param_info = bn_param_info,
    .init = bn_init,
    .aux_size = bn_aux_size,
    .forward = bn_forward,
    .backward = bn_backward,
};

/* ---- BatchNorm + ReLU in one step -------------------------------------------------------- */

/* DESIGN. Unfused, the pair's forward makes a BN output pass (read x, write z) and a ReLU pass
 * (read z, write y); its backward a ReLU pass (read y and dy, write g) before BN's reduction
 * (read x and g) and input-gradient pass (read x and g, write dx). Fused, the forward writes
 * y = max(0, x * a + b) straight from x, and the backward recomputes the mask z > 0 from x
 * with the forward's own a, b and expression (bit-identical, so the mask is exactly y > 0)
 * inside BN's two passes: z and g are never stored and y is not read, 8 tensor streams fewer
 * per pair and step on tensors much larger than the caches. When a residual input was added
 * before the ReLU the mask comes from the stored output y instead. The arithmetic is the
 * unfused kernels' (same statistics, per-element expressions and summation order), so the
 * results equal theirs bit for bit. */

/* The per-channel affine map z = x * a + b of the last forward (batch or running statistics).
 * Forward and backward both take it from here so that the recomputed mask is exact. */
static void channel_affine(const eng_layer *l, size_t c, bool train, float *a, float *b)
{
    const float *gamma = l->param[BN_WEIGHT], *beta = l->param[BN_BIAS];
    const size_t C = l->cfg.norm.C;
    float mu, is;
    if (train) {
        mu = l->aux[c];
        is = l->aux[C + c];
    } else {
        mu = l->param[BN_RUNNING_MEAN][c];
        is = (float)(1.0 / sqrt((double)l->param[BN_RUNNING_VAR][c] + (double)l->cfg.norm.eps));
    }
    *a = is * (gamma ? gamma[c] : 1.0f);
    *b = (beta ? beta[c] : 0.0f) - mu * *a;
}

/* y = max(0, x * a + b) */
ENG_SIMD_AVX2 static void plane_affine_relu(const float *restrict x, float *restrict y, float a,
                                            float b, size_t S)
{
    for (size_t s = 0; s < S; s++) {
        const float v = x[s] * a + b;
        y[s] = v > 0.0f ? v : 0.0f;
    }
}

/* x = max(0, x * a + b) in place: the cache lines just read are written back, no fresh
 * output buffer is pulled into the cache */
ENG_SIMD_AVX2 static void plane_affine_relu_inplace(float *x, float a, float b, size_t S)
{
    for (size_t s = 0; s < S; s++) {
        const float v = x[s] * a + b;
        x[s] = v > 0.0f ? v : 0.0f;
    }
}

/* y = max(0, (x * a + b) + r) */
ENG_SIMD_AVX2 static void plane_affine_add_relu(const float *restrict x, const float *restrict r,
                                                float *restrict y, float a, float b, size_t S)
{
    for (size_t s = 0; s < S; s++) {
        const float v = (x[s] * a + b) + r[s];
        y[s] = v > 0.0f ? v : 0.0f;
    }
}

/* dx = k * g - k0 - (x - mu) * k1 with g = (x * a + b > 0 ? dy : 0); eval (constant
 * statistics): dx = k * g. */
ENG_SIMD_AVX2 static void plane_dx_relu_x(const float *restrict x, const float *restrict dy,
                                          float *restrict dx, float a, float b, float mu, float k,
                                          float k0, float k1, size_t S)
{
    for (size_t s = 0; s < S; s++) {
        const float v = x[s] * a + b;
        const float d = dy[s];
        const float g = v > 0.0f ? d : 0.0f;
        dx[s] = k * g - k0 - (x[s] - mu) * k1;
    }
}

ENG_SIMD_AVX2 static void plane_dx_relu_x_eval(const float *restrict x, const float *restrict dy,
                                               float *restrict dx, float a, float b, float k,
                                               size_t S)
{
    for (size_t s = 0; s < S; s++) {
        const float v = x[s] * a + b;
        const float d = dy[s];
        dx[s] = k * (v > 0.0f ? d : 0.0f);
    }
}

/* The same with g = (y > 0 ? dy : 0) */
ENG_SIMD_AVX2 static void plane_dx_relu_y(const float *restrict x, const float *restrict y,
                                          const float *restrict dy, float *restrict dx, float mu,
                                          float k, float k0, float k1, size_t S)
{
    for (size_t s = 0; s < S; s++) {
        const float d = dy[s];
        const float g = y[s] > 0.0f ? d : 0.0f;
        dx[s] = k * g - k0 - (x[s] - mu) * k1;
    }
}

ENG_SIMD_AVX2 static void plane_dx_relu_y_eval(const float *restrict y, const float *restrict dy,
                                               float *restrict dx, float k, size_t S)
{
    for (size_t s = 0; s < S; s++) {
        const float d = dy[s];
        dx[s] = k * (y[s] > 0.0f ? d : 0.0f);
    }
}

/* One fused call, split over the compute threads by channel ranges as bn_job. */
typedef struct bnrelu_job {
    const eng_layer *l;
    eng_bn_dims d;
    const float *x, *res, *y, *dy;
    float *out, *dx, *dgamma, *dbeta, *gout;
    bool train;
} bnrelu_job;

void eng_epilogue_plane(const eng_epilogue *e, size_t c, const float *src, float *dst, size_t S)
{
    if (src == dst)
        plane_affine_relu_inplace(dst, e->scale[c], e->shift[c], S);
    else
        plane_affine_relu(src, dst, e->scale[c], e->shift[c], S);
}

static void bnrelu_forward_part(void *ctx, size_t p, size_t T)
{
    const bnrelu_job *j = ctx;
    const eng_layer *l = j->l;
    const eng_bn_dims *d = &j->d;
    size_t c0, c1;
    eng_par_range(d->C, p, T, &c0, &c1);
    const size_t G = group_channels(d->S);
    for (size_t c = c0; c < c1; c++) {
        if (j->train && (c - c0) % G == 0)
            group_stats(d, c, c1 - c < G ? c1 - c : G, j->x, l->aux, l->aux + d->C,
                        l->param[BN_RUNNING_MEAN], l->param[BN_RUNNING_VAR], l->cfg.norm.momentum,
                        l->cfg.norm.eps);
        float a, b;
        channel_affine(l, c, j->train, &a, &b);
        for (size_t n = 0; n < d->N; n++) {
            if (j->res)
                plane_affine_add_relu(PLANE(j->x, d, n, c), PLANE(j->res, d, n, c),
                                      PLANE(j->out, d, n, c), a, b, d->S);
            else if (j->out == j->x)
                plane_affine_relu_inplace(PLANE(j->out, d, n, c), a, b, d->S);
            else
                plane_affine_relu(PLANE(j->x, d, n, c), PLANE(j->out, d, n, c), a, b, d->S);
        }
    }
}

bool eng_bn_relu_pair(const eng_layer *bn, const eng_layer *next)
{
    return (bn->ops == &eng_layer_batchnorm2d || bn->ops == &eng_layer_batchnorm1d) &&
           next->ops == &eng_layer_relu && !bn->unfused;
}

void eng_bn_relu_forward(eng_layer *bn, const eng_fwd_args *a, const float *res)
{
    bnrelu_job j = {.l = bn, .d = bn_dims(bn, a->N), .x = a->x, .res = res, .out = a->y};
    ENG_ASSERT(!res || (a->y != a->x && a->y != res));
    j.train = a->train && j.d.N * j.d.S >= 2; /* as bn_forward */
    eng_par_run(bn_parts(&j.d), bnrelu_forward_part, &j);
    if (j.train)
        bn->param[BN_NUM_BATCHES][0] += 1.0f;
    bn->aux[2 * j.d.C] = j.train ? 1.0f : 0.0f;
}

size_t eng_bn_relu_epilogue_floats(const eng_layer *bn)
{
    return 2 * bn->cfg.norm.C;
}

bool eng_bn_relu_epilogue(eng_layer *bn, bool train, eng_epilogue *epi, float *buf)
{
    const size_t C = bn->cfg.norm.C;
    if (train) /* batch statistics; or running ones for a single value, but a backward follows */
        return false;
    for (size_t c = 0; c < C; c++)
        channel_affine(bn, c, false, &buf[c], &buf[C + c]);
    *epi = (eng_epilogue){.scale = buf, .shift = buf + C};
    bn->aux[2 * C] = 0.0f; /* as eng_bn_relu_forward in eval mode */
    return true;
}

static void bnrelu_backward_part(void *ctx, size_t p, size_t T)
{
    const bnrelu_job *j = ctx;
    const eng_layer *l = j->l;
    const eng_bn_dims *d = &j->d;
    const size_t M = d->N * d->S, G = group_channels(d->S);
    size_t c0, c1;
    eng_par_range(d->C, p, T, &c0, &c1);
    const bool sums = j->dgamma || j->dbeta || (j->train && j->dx) || j->gout;
    /* the group's per-channel values (its first channel at 0) and sums */
    float mus[RUN_FLOATS], as[RUN_FLOATS], bs[RUN_FLOATS];
    double sdys[RUN_FLOATS], sdyxs[RUN_FLOATS];
    for (size_t c = c0; c < c1; c++) {
        const size_t i = (c - c0) % G; /* c's place in its group */
        if (i == 0) {
            const size_t g = c1 - c < G ? c1 - c : G;
            for (size_t k = 0; k < g; k++) {
                channel_affine(l, c + k, j->train, &as[k], &bs[k]);
                mus[k] = j->train ? l->aux[c + k] : l->param[BN_RUNNING_MEAN][c + k];
            }
            if (sums) {
                const gsums_args ga = {.mask = j->y ? G_RELU_Y : G_RELU_X,
                                       .x = j->x,
                                       .y = j->y,
                                       .dy = j->dy,
                                       .gout = j->gout,
                                       .mu = mus,
                                       .a = as,
                                       .b = bs};
                group_gsums(d, c, g, &ga, sdys, sdyxs);
            }
        }
        const float a = as[i], b = bs[i], mu = mus[i];
        const float *gamma = l->param[BN_WEIGHT];
        const float is = j->train ? l->aux[d->C + c]
                                  : (float)(1.0 / sqrt((double)l->param[BN_RUNNING_VAR][c] +
                                                       (double)l->cfg.norm.eps));
        const float k = is * (gamma ? gamma[c] : 1.0f); /* as the unfused backward */
        const double sdy = sums ? sdys[i] : 0.0, sdyx = sums ? sdyxs[i] : 0.0;
        const double sdyxhat = sdyx * (double)is;
        if (j->dgamma)
            j->dgamma[c] = (float)sdyxhat;
        if (j->dbeta)
            j->dbeta[c] = (float)sdy;
        if (!j->dx)
            continue;
        /* as train_backward_range / eval_backward_range */
        const float k0 = (float)((double)k * sdy / (double)M);
        const float k1 = (float)((double)k * (double)is * sdyxhat / (double)M);
        for (size_t n = 0; n < d->N; n++) {
            const float *xp = PLANE(j->x, d, n, c), *gp = PLANE(j->dy, d, n, c);
            float *dxp = PLANE(j->dx, d, n, c);
            if (j->y && j->train)
                plane_dx_relu_y(xp, PLANE(j->y, d, n, c), gp, dxp, mu, k, k0, k1, d->S);
            else if (j->y)
                plane_dx_relu_y_eval(PLANE(j->y, d, n, c), gp, dxp, k, d->S);
            else if (j->train)
                plane_dx_relu_x(xp, gp, dxp, a, b, mu, k, k0, k1, d->S);
            else
                plane_dx_relu_x_eval(xp, gp, dxp, a, b, k, d->S);
        }
    }
}

void eng_bn_relu_backward(eng_layer *bn, const eng_bwd_args *a, float *g)
{
    bnrelu_job j = {.l = bn,
                    .d = bn_dims(bn, a->N),
                    .x = a->x,
                    .y = a->y,
                    .dy = a->dy,
                    .dx = a->dx,
                    .gout = a->y ? g : NULL};
    ENG_ASSERT(a->y || !g);
    j.dgamma = bn->trainable[BN_WEIGHT] ? bn->grad[BN_WEIGHT] : NULL;
    j.dbeta = bn->trainable[BN_BIAS] ? bn->grad[BN_BIAS] : NULL;
    j.train = bn->aux[2 * j.d.C] != 0.0f;
    eng_par_run(bn_parts(&j.d), bnrelu_backward_part, &j);
}
