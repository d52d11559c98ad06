/*
 * arch_cnn.c: the reference model M1 "cnn-small" (DESIGN.md section 7), fastai's
 * create_head, and the per-layer initialisation rules shared by the architectures.
 *
 * cnn-small is the torch module nn.Sequential(body, head) with
 *   body = nn.Sequential(stem, group1, group2)
 *     stem   = Sequential(Conv(C->32, 3x3, p1, no bias), BN(32), ReLU)
 *     group1 = Sequential(Conv(32->32), BN, ReLU, Conv(32->64, stride 2), BN, ReLU)
 *     group2 = Sequential(Conv(64->64), BN, ReLU, Conv(64->128, stride 2), BN, ReLU)
 *   head = Sequential(AdaptiveAvgPool2d(1), Flatten(), Dropout(0.25), Linear(128->n_out))
 * so its state_dict names are "0.<g>.<i>.<param>" in the body (g = 0 stem, 1 group1,
 * 2 group2; i = 0, 3 convs, 1, 4 BNs) and "1.3.weight", "1.3.bias" for the head's Linear
 * (tools/t1_reference.py builds the same module). Layer groups: stem+group1 | group2 | head.
 * With head kind "fastai" the head is create_head(128, n_out, ...) named "1.<i>".
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arch.h"
#include "kernels.h"
#include "util.h"

static int add_conv_bn_relu(eng_builder *b, unsigned group, size_t g, size_t *i, size_t IC,
                            size_t OC, size_t stride, eng_error *err)
{
    eng_layer *l = eng_builder_add(b, &eng_layer_conv2d, group, err, "0.%zu.%zu", g, (*i)++);
    if (!l)
        return ENG_EINVAL;
    l->cfg.conv.IC = IC;
    l->cfg.conv.OC = OC;
    l->cfg.conv.KH = l->cfg.conv.KW = 3;
    l->cfg.conv.stride = stride;
    l->cfg.conv.pad = 1;
    l->cfg.conv.bias = false;
    l = eng_builder_add(b, &eng_layer_batchnorm2d, group, err, "0.%zu.%zu", g, (*i)++);
    if (!l)
        return ENG_EINVAL;
    l->cfg.norm.C = OC;
    l->cfg.norm.eps = ENG_BN_EPS;
    l->cfg.norm.momentum = ENG_BN_MOMENTUM;
    if (!eng_builder_add(b, &eng_layer_relu, group, err, "0.%zu.%zu", g, (*i)++))
        return ENG_EINVAL;
    return 0;
}

int eng_arch_build_cnn_small(eng_builder *b, const eng_model_spec *spec, const eng_arch_input *in,
                             eng_error *err)
{
    if (in->ndim != 3)
        return eng_err_set(err, ENG_ESHAPE, "model.arch",
                           "cnn-small needs image inputs [C, H, W], the data has %zu dims",
                           in->ndim);
    if (spec->head.kind == ENG_HEAD_TORCHVISION)
        return eng_err_set(err, ENG_EINVAL, "model.head.kind", "cnn-small has no torchvision head");
    b->n_groups = 3;
    size_t i = 0;
    int rc;
    if ((rc = add_conv_bn_relu(b, 0, 0, &i, in->shape[0], 32, 1, err)))
        return rc;
    i = 0;
    if ((rc = add_conv_bn_relu(b, 0, 1, &i, 32, 32, 1, err)) ||
        (rc = add_conv_bn_relu(b, 0, 1, &i, 32, 64, 2, err)))
        return rc;
    i = 0;
    if ((rc = add_conv_bn_relu(b, 1, 2, &i, 64, 64, 1, err)) ||
        (rc = add_conv_bn_relu(b, 1, 2, &i, 64, 128, 2, err)))
        return rc;
    if (spec->head.kind == ENG_HEAD_FASTAI)
        return eng_arch_add_fastai_head(b, &spec->head, 128, in->n_classes, 2, "1", err);
    eng_layer *l = eng_builder_add(b, &eng_layer_adaptive_avgpool2d, 2, err, "1.0");
    if (!l)
        return ENG_EINVAL;
    l->cfg.pool.KH = l->cfg.pool.KW = 1;
    if (!eng_builder_add(b, &eng_layer_flatten, 2, err, "1.1"))
        return ENG_EINVAL;
    if (!(l = eng_builder_add(b, &eng_layer_dropout, 2, err, "1.2")))
        return ENG_EINVAL;
    l->cfg.dropout.p = 0.25f;
    if (!(l = eng_builder_add(b, &eng_layer_linear, 2, err, "1.3")))
        return ENG_EINVAL;
    l->cfg.dense.in = 128;
    l->cfg.dense.out = in->n_classes;
    l->cfg.dense.bias = true;
    return 0;
}

int eng_arch_add_fastai_head(eng_builder *b, const eng_head_spec *h, size_t nf, size_t n_classes,
                             unsigned group, const char *prefix, eng_error *err)
{
    size_t k = 0;
    if (h->n_hidden > ENG_MAX_HIDDEN)
        return eng_err_set(err, ENG_EINVAL, "model.head.hidden", "at most %d hidden layers",
                           ENG_MAX_HIDDEN);
    if (!(h->ps >= 0.0f && h->ps < 1.0f))
        return eng_err_set(err, ENG_EINVAL, "model.head.ps", "must be in [0, 1)");
    eng_layer *l = eng_builder_add(
        b, h->concat_pool ? &eng_layer_adaptive_concatpool2d : &eng_layer_adaptive_avgpool2d, group,
        err, "%s.%zu", prefix, k++);
    if (!l)
        return ENG_EINVAL;
    l->cfg.pool.KH = l->cfg.pool.KW = 1;
    b->init[b->n - 1] = ENG_INIT_FASTAI_HEAD;
    if (!eng_builder_add(b, &eng_layer_flatten, group, err, "%s.%zu", prefix, k++))
        return ENG_EINVAL;
    size_t sizes[ENG_MAX_HIDDEN + 2], n_lin = h->n_hidden + 1;
    sizes[0] = h->concat_pool ? 2 * nf : nf;
    for (uint32_t i = 0; i < h->n_hidden; i++) {
        if (h->hidden[i] < 1 || h->hidden[i] > 65536)
            return eng_err_set(err, ENG_EINVAL, "model.head.hidden", "sizes must be 1..65536");
        sizes[i + 1] = h->hidden[i];
    }
    sizes[n_lin] = n_classes;
    for (size_t i = 0; i < n_lin; i++) {
        bool last = i + 1 == n_lin;
        float p = last ? h->ps : h->ps / 2.0f;
        if (!(l = eng_builder_add(b, &eng_layer_batchnorm1d, group, err, "%s.%zu", prefix, k++)))
            return ENG_EINVAL;
        l->cfg.norm.C = sizes[i];
        l->cfg.norm.eps = ENG_BN_EPS;
        l->cfg.norm.momentum = ENG_BN_MOMENTUM;
        b->init[b->n - 1] = ENG_INIT_FASTAI_HEAD;
        if (p != 0.0f) {
            if (!(l = eng_builder_add(b, &eng_layer_dropout, group, err, "%s.%zu", prefix, k++)))
                return ENG_EINVAL;
            l->cfg.dropout.p = p;
        }
        if (!(l = eng_builder_add(b, &eng_layer_linear, group, err, "%s.%zu", prefix, k++)))
            return ENG_EINVAL;
        l->cfg.dense.in = sizes[i];
        l->cfg.dense.out = sizes[i + 1];
        l->cfg.dense.bias = false;
        b->init[b->n - 1] = ENG_INIT_FASTAI_HEAD;
        if (!last && !eng_builder_add(b, &eng_layer_relu, group, err, "%s.%zu", prefix, k++))
            return ENG_EINVAL;
    }
    return 0;
}

void eng_arch_apply_init(eng_layer *l, eng_init_rule r, eng_rng *rng)
{
    if (r == ENG_INIT_TV_CONV && l->ops == &eng_layer_conv2d) {
        /* kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / fan_out) */
        size_t fan_out = l->cfg.conv.OC * l->cfg.conv.KH * l->cfg.conv.KW;
        float sd = sqrtf(2.0f / (float)fan_out);
        for (size_t i = 0; i < fan_out * l->cfg.conv.IC; i++)
            l->param[0][i] = sd * eng_rng_normal(rng);
        if (l->cfg.conv.bias)
            memset(l->param[1], 0, l->cfg.conv.OC * sizeof(float));
    } else if (r == ENG_INIT_FASTAI_HEAD && l->ops == &eng_layer_linear) {
        /* kaiming_normal_ (fan_in, gain sqrt(2)) on the weight, bias 0 */
        size_t in = l->cfg.dense.in, out = l->cfg.dense.out;
        float sd = sqrtf(2.0f / (float)in);
        for (size_t i = 0; i < in * out; i++)
            l->param[0][i] = sd * eng_rng_normal(rng);
        if (l->cfg.dense.bias)
            memset(l->param[1], 0, out * sizeof(float));
    } else if (r == ENG_INIT_FASTAI_HEAD && l->ops == &eng_layer_batchnorm1d) {
        for (size_t c = 0; c < l->cfg.norm.C; c++) /* fastai BatchNorm(): weight 1, bias 1e-3 */
            l->param[1][c] = 1e-3f;
    }
}
