/*
 * layer_dense.c: Linear (y = x W^T + b, PyTorch nn.Linear layout: weight [out x in],
 * bias [out]) via sgemm. Backward computes dW = dy^T x and db = sum(dy) only when trainable,
 * and dx = dy W only when asked.
 */
#include <math.h>
#include <string.h>

#include "gemm.h"
#include "layers.h"
#include "util.h"

static int dense_setup(eng_layer *l, eng_error *err)
{
    if (l->in_size != l->cfg.dense.in)
        return eng_err_set(err, ENG_ESHAPE, NULL, "layer %s: linear expects %zu inputs, got %zu",
                           l->name, l->cfg.dense.in, l->in_size);
    if (l->cfg.dense.out == 0)
        return eng_err_set(err, ENG_EINVAL, NULL, "layer %s: linear with 0 outputs", l->name);
    l->out_ndim = 1;
    l->out_shape[0] = l->cfg.dense.out;
    l->out_size = l->cfg.dense.out;
    return 0;
}

static size_t dense_n_params(const eng_layer *l)
{
    return l->cfg.dense.bias ? 2 : 1;
}

static void dense_param_info(const eng_layer *l, size_t i, eng_param_info *info)
{
    memset(info, 0, sizeof(*info));
    if (i == 0) {
        strcpy(info->suffix, "weight");
        info->ndim = 2;
        info->shape[0] = l->cfg.dense.out;
        info->shape[1] = l->cfg.dense.in;
    } else {
        strcpy(info->suffix, "bias");
        info->ndim = 1;
        info->shape[0] = l->cfg.dense.out;
        info->no_wd = true;
    }
}

/* PyTorch's nn.Linear default: kaiming_uniform(a=sqrt(5)) on the weight, which is
 * U(-1/sqrt(in), 1/sqrt(in)), and the same bound for the bias. */
static void dense_init(eng_layer *l, eng_rng *rng)
{
    size_t in = l->cfg.dense.in, out = l->cfg.dense.out;
    float bound = 1.0f / sqrtf((float)in);
    for (size_t i = 0; i < in * out; i++)
        l->param[0][i] = (2.0f * eng_rng_uniform(rng) - 1.0f) * bound;
    if (l->cfg.dense.bias)
        for (size_t i = 0; i < out; i++)
            l->param[1][i] = (2.0f * eng_rng_uniform(rng) - 1.0f) * bound;
}

static void dense_forward(eng_layer *l, const eng_fwd_args *a)
{
    size_t in = l->cfg.dense.in, out = l->cfg.dense.out, N = a->N;
    const float *W = l->param[0]; /* [out x in] */
    float *y = a->y;              /* [N x out] */
    if (l->cfg.dense.bias) {
        for (size_t n = 0; n < N; n++)
            memcpy(y + n * out, l->param[1], out * sizeof(float));
    }
    eng_sgemm(false, true, N, out, in, 1.0f, a->x, in, W, in, l->cfg.dense.bias ? 1.0f : 0.0f, y,
              out);
    eng_stats_gemm(l->stats, N, out, in);
}

static void dense_backward(eng_layer *l, const eng_bwd_args *a)
{
    size_t in = l->cfg.dense.in, out = l->cfg.dense.out, N = a->N;
    if (l->trainable[0]) {
        /* dW [out x in] = dy^T [out x N] * x [N x in] */
        eng_sgemm(true, false, out, in, N, 1.0f, a->dy, out, a->x, in, 0.0f, l->grad[0], in);
        eng_stats_gemm(l->stats, out, in, N);
    }
    if (l->cfg.dense.bias && l->trainable[1]) {
        float *db = l->grad[1];
        for (size_t o = 0; o < out; o++)
            db[o] = 0.0f;
        for (size_t n = 0; n < N; n++)
            for (size_t o = 0; o < out; o++)
                db[o] += a->dy[n * out + o];
    }
    if (a->dx) {
        /* dx [N x in] = dy [N x out] * W [out x in] */
        eng_sgemm(false, false, N, in, out, 1.0f, a->dy, out, l->param[0], in, 0.0f, a->dx, in);
        eng_stats_gemm(l->stats, N, in, out);
    }
}

const eng_layer_ops eng_layer_linear = {
    .kind = "linear",
    .setup = dense_setup,
    .n_params = dense_n_params,
    .param_info = dense_param_info,
    .init = dense_init,
    .aux_size = NULL,
    .forward = dense_forward,
    .backward = dense_backward,
};
