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
#include "layers.h"
#include "par.h"
#include "util.h"

/* Plane of channel c in sample n: [S] */
#define PLANE(p, d, n, c) ((p) + ((n) * (d)->C + (c)) * (d)->S)

/* Plane reductions in LANES independent float partial sums, added pairwise at the end: the
 * compiler vectorises these (a single running float sum it may not reorder), and the
 * partial sums are more accurate than one running sum. Planes are then summed in double. */
#define LANES 16

static float lanes_total(float *a)
{
    for (size_t w = LANES / 2; w > 0; w /= 2)
        for (size_t k = 0; k < w; k++)
            a[k] += a[k + w];
    return a[0];
}

/* sum(x[0..S)) */
static float plane_sum(const float *restrict x, size_t S)
{
    float a[LANES] = {0};
    size_t s = 0;
    for (; s + LANES <= S; s += LANES)
        for (size_t k = 0; k < LANES; k++)
            a[k] += x[s + k];
    for (size_t k = 0; s < S; s++, k++)
        a[k] += x[s];
    return lanes_total(a);
}

/* sum((x - mu)^2) */
static float plane_sqdev(const float *restrict x, float mu, size_t S)
{
    float a[LANES] = {0};
    size_t s = 0;
    for (; s + LANES <= S; s += LANES)
        for (size_t k = 0; k < LANES; k++) {
            float t = x[s + k] - mu;
            a[k] += t * t;
        }
    for (size_t k = 0; s < S; s++, k++) {
        float t = x[s] - mu;
        a[k] += t * t;
    }
    return lanes_total(a);
}

/* sum(g) into *sg and sum(g * (x - mu)) into *sgx */
static void plane_gsums(const float *restrict x, const float *restrict g, float mu, size_t S,
                        float *sg, float *sgx)
{
    float a[LANES] = {0}, b[LANES] = {0};
    size_t s = 0;
    for (; s + LANES <= S; s += LANES)
        for (size_t k = 0; k < LANES; k++) {
            a[k] += g[s + k];
            b[k] += g[s + k] * (x[s + k] - mu);
        }
    for (size_t k = 0; s < S; s++, k++) {
        a[k] += g[s];
        b[k] += g[s] * (x[s] - mu);
    }
    *sg = lanes_total(a);
    *sgx = lanes_total(b);
}

/* Channels [c0, c1) of eng_batchnorm_train_forward (channels are independent). */
static void train_forward_range(const eng_bn_dims *d, size_t c0, size_t c1, const float *x,
                                const float *gamma, const float *beta, float *y, float *mean,
                                float *invstd, float *running_mean, float *running_var,
                                float momentum, float eps)
{
    const size_t N = d->N, S = d->S, M = N * S;
    for (size_t c = c0; c < c1; c++) {
        double sum = 0.0;
        for (size_t n = 0; n < N; n++) {
            sum += (double)plane_sum(PLANE(x, d, n, c), S);
        }
        const float mu = (float)(sum / (double)M);
        double ss = 0.0;
        for (size_t n = 0; n < N; n++) {
            ss += (double)plane_sqdev(PLANE(x, d, n, c), mu, S);
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

/* Per channel: sum(dy) and sum(dy * (x - mu)) over N*S. */
static void dy_sums(const eng_bn_dims *d, size_t c, const float *x, const float *dy, float mu,
                    double *sdy, double *sdyx)
{
    double a = 0.0, b = 0.0;
    for (size_t n = 0; n < d->N; n++) {
        const float *xp = PLANE(x, d, n, c), *gp = PLANE(dy, d, n, c);
        float pa, pb;
        plane_gsums(xp, gp, mu, d->S, &pa, &pb);
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

static void train_backward_range(const eng_bn_dims *d, size_t c0, size_t c1, const float *x,
                                 const float *dy, const float *gamma, const float *mean,
                                 const float *invstd, float *dx, float *dgamma, float *dbeta,
                                 bool accumulate)
{
    const size_t M = d->N * d->S;
    for (size_t c = c0; c < c1; c++) {
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
    for (size_t c = c0; c < c1; c++) {
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
