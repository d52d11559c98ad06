/*
 * arch.h: what the architecture builders share with model.c (private to engine/): the
 * layer-list builder, per-layer initialisation rules applied after the kinds' defaults,
 * the residual BasicBlock kind and the builders of the registry.
 *
 * A builder appends layers (kind, cfg, state_dict prefix, layer group); model.c then runs
 * setup() on each to propagate shapes, lays the parameters out and initialises them: first
 * each kind's PyTorch default, then the layer's `init` rule below in layer order.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"
#include "layers.h"
#include "model.h"
#include "rng.h"

#define ENG_BUILDER_MAX 64

/* Initialisation rule applied after the kind's default init. */
typedef enum eng_init_rule {
    ENG_INIT_DEFAULT,     /* the kind's PyTorch default (conv/linear kaiming_uniform a=sqrt(5)) */
    ENG_INIT_TV_CONV,     /* torchvision ResNet conv: kaiming_normal(fan_out, relu) */
    ENG_INIT_FASTAI_HEAD, /* fastai head: Linear kaiming_normal(fan_in), bias 0; BN bias 1e-3 */
} eng_init_rule;

typedef struct eng_builder {
    eng_layer layers[ENG_BUILDER_MAX];
    eng_init_rule init[ENG_BUILDER_MAX];
    size_t n;
    size_t n_groups; /* set by the builder */
} eng_builder;

/* Appends a layer named by printf-style `fmt` in `group` with the default init rule; NULL
 * (and err set, ENG_EINVAL) when the builder is full. */
__attribute__((format(printf, 5, 6))) eng_layer *eng_builder_add(eng_builder *b,
                                                                 const eng_layer_ops *ops,
                                                                 unsigned group, eng_error *err,
                                                                 const char *fmt, ...);

/* Input of a builder: per-sample shape and class count. */
typedef struct eng_arch_input {
    size_t ndim, shape[ENG_LAYER_MAX_DIMS], size;
    size_t n_classes;
} eng_arch_input;

typedef int (*eng_arch_build_fn)(eng_builder *b, const eng_model_spec *spec,
                                 const eng_arch_input *in, eng_error *err);

/* cnn-small (arch_cnn.c), resnet18 / resnet34 (arch_resnet.c). */
int eng_arch_build_cnn_small(eng_builder *b, const eng_model_spec *spec, const eng_arch_input *in,
                             eng_error *err);
int eng_arch_build_resnet18(eng_builder *b, const eng_model_spec *spec, const eng_arch_input *in,
                            eng_error *err);
int eng_arch_build_resnet34(eng_builder *b, const eng_model_spec *spec, const eng_arch_input *in,
                            eng_error *err);

/* Appends fastai's create_head for a body ending in `nf` channels: [concat] pool, flatten,
 * then per linear layer BatchNorm1d, Dropout (omitted when p = 0), Linear without bias and
 * ReLU (not after the last). Names are "<prefix>.<index in the head Sequential>"; init rule
 * ENG_INIT_FASTAI_HEAD. Returns 0 or ENG_EINVAL. (arch_cnn.c) */
int eng_arch_add_fastai_head(eng_builder *b, const eng_head_spec *h, size_t nf, size_t n_classes,
                             unsigned group, const char *prefix, eng_error *err);

/* Applies rule `r` to layer `l` (parameters already laid out and default-initialised). */
void eng_arch_apply_init(eng_layer *l, eng_init_rule r, eng_rng *rng);

/* torchvision's residual BasicBlock (layer_block.c): cfg.block {IC, OC, stride}. */
extern const eng_layer_ops eng_layer_basic_block;
