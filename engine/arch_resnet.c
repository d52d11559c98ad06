/*
 * arch_resnet.c: torchvision's resnet18 and resnet34 (BasicBlock [2,2,2,2] / [3,4,6,3]) for
 * any input channel count and image size, with torchvision's module names:
 *   conv1 (7x7/2, pad 3, no bias), bn1, relu, maxpool (3x3/2, pad 1),
 *   layer1..layer4 of BasicBlocks "layer<i>.<j>" (64, 128, 256, 512 channels; the first
 *   block of layers 2-4 has stride 2 and a downsample),
 * then the head: torchvision's "avgpool" + flatten + "fc" (Linear 512 -> n_out with bias,
 * PyTorch default init) with head kind "torchvision", or fastai's create_head named
 * "head.<i>" (the default, for transfer). Layer groups follow fastai's _resnet_split:
 * conv1..layer2 | layer3, layer4 | head. Convs and BNs get torchvision's init.
 */
#include <string.h>

#include "arch.h"
#include "kernels.h"
#include "util.h"

static int build_resnet(eng_builder *b, const eng_model_spec *spec, const eng_arch_input *in,
                        const size_t blocks[4], eng_error *err)
{
    if (in->ndim != 3)
        return eng_err_set(err, ENG_ESHAPE, "model.arch",
                           "%s needs image inputs [C, H, W], the data has %zu dims", spec->arch,
                           in->ndim);
    b->n_groups = 3;
    eng_layer *l = eng_builder_add(b, &eng_layer_conv2d, 0, err, "conv1");
    if (!l)
        return ENG_EINVAL;
    l->cfg.conv.IC = in->shape[0];
    l->cfg.conv.OC = 64;
    l->cfg.conv.KH = l->cfg.conv.KW = 7;
    l->cfg.conv.stride = 2;
    l->cfg.conv.pad = 3;
    b->init[b->n - 1] = ENG_INIT_TV_CONV;
    if (!(l = eng_builder_add(b, &eng_layer_batchnorm2d, 0, err, "bn1")))
        return ENG_EINVAL;
    l->cfg.norm.C = 64;
    l->cfg.norm.eps = ENG_BN_EPS;
    l->cfg.norm.momentum = ENG_BN_MOMENTUM;
    if (!eng_builder_add(b, &eng_layer_relu, 0, err, "relu"))
        return ENG_EINVAL;
    if (!(l = eng_builder_add(b, &eng_layer_maxpool2d, 0, err, "maxpool")))
        return ENG_EINVAL;
    l->cfg.pool.KH = l->cfg.pool.KW = 3;
    l->cfg.pool.stride = 2;
    l->cfg.pool.pad = 1;
    size_t ch = 64;
    for (size_t li = 0; li < 4; li++) {
        size_t planes = (size_t)64 << li;
        for (size_t j = 0; j < blocks[li]; j++) {
            l = eng_builder_add(b, &eng_layer_basic_block, li < 2 ? 0 : 1, err, "layer%zu.%zu",
                                li + 1, j);
            if (!l)
                return ENG_EINVAL;
            l->cfg.block.IC = ch;
            l->cfg.block.OC = planes;
            l->cfg.block.stride = j == 0 && li > 0 ? 2 : 1;
            ch = planes;
        }
    }
    if (spec->head.kind != ENG_HEAD_TORCHVISION)
        return eng_arch_add_fastai_head(b, &spec->head, ch, in->n_classes, 2, "head", err);
    if (!(l = eng_builder_add(b, &eng_layer_adaptive_avgpool2d, 2, err, "avgpool")))
        return ENG_EINVAL;
    l->cfg.pool.KH = l->cfg.pool.KW = 1;
    if (!eng_builder_add(b, &eng_layer_flatten, 2, err, "flatten"))
        return ENG_EINVAL;
    if (!(l = eng_builder_add(b, &eng_layer_linear, 2, err, "fc")))
        return ENG_EINVAL;
    l->cfg.dense.in = ch;
    l->cfg.dense.out = in->n_classes;
    l->cfg.dense.bias = true;
    return 0;
}

int eng_arch_build_resnet18(eng_builder *b, const eng_model_spec *spec, const eng_arch_input *in,
                            eng_error *err)
{
    static const size_t blocks[4] = {2, 2, 2, 2};
    return build_resnet(b, spec, in, blocks, err);
}

int eng_arch_build_resnet34(eng_builder *b, const eng_model_spec *spec, const eng_arch_input *in,
                            eng_error *err)
{
    static const size_t blocks[4] = {3, 4, 6, 3};
    return build_resnet(b, spec, in, blocks, err);
}
