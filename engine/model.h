/*
 * model.h: a model built from eng_model_spec through the architecture registry.
 *
 * A model is a flat sequence of layers (composites such as a residual block are one entry)
 * ending in the logits. Parameters, gradients and optimizer state are one contiguous block
 * each, allocated at creation (llm.c); eng_param describes each tensor with its PyTorch
 * state_dict name. Layer groups follow fastai (mlp: body | head).
 *
 * mlp state_dict names, as torch's nn.Sequential(body, head) with
 * body = nn.Sequential(Linear, ReLU, [Dropout,] Linear, ReLU, [Dropout,] ...) and
 * head = nn.Linear:
 *   "0.<i>.weight", "0.<i>.bias" for the body's Linear at body index i (i = 0, 2, 4, ... without
 *   dropout; 0, 3, 6, ... with dropout > 0), and "1.weight", "1.bias" for the head.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "layers.h"
#include "rng.h"

typedef struct eng_param {
    char name[96]; /* state_dict name, e.g. "0.0.weight" */
    size_t layer;  /* index into model->layers */
    size_t index;  /* parameter index within the layer */
    size_t offset; /* into the parameter, gradient and moment blocks */
    size_t count;
    eng_param_info info;
    unsigned group;
    bool trainable; /* gets a gradient and an optimizer update (never for buffers) */
} eng_param;

typedef struct eng_model {
    size_t n_layers;
    eng_layer *layers;                                     /* owned */
    size_t in_ndim, in_shape[ENG_LAYER_MAX_DIMS], in_size; /* per sample */
    size_t n_classes;
    size_t n_groups;
    size_t n_params;   /* tensors */
    eng_param *params; /* owned, n_params */
    size_t n_floats;   /* total floats of all tensors */
    float *w;          /* owned: parameter values [n_floats] */
    float *g;          /* owned: gradients [n_floats] */
    float *m, *v;      /* owned: optimizer moments [n_floats] (SGD uses m only) */
    uint32_t *step;    /* owned: optimizer step count per tensor [n_params] */
    size_t frozen_idx; /* groups [0, frozen_idx) are frozen */
    bool train_bn;
    eng_stats stats;
} eng_model;

/* Builds the architecture `spec->arch` for inputs of per-sample shape in_shape[in_ndim]
 * and n_classes outputs, initialised from `rng`; loads spec->weights when set. On success
 * *out is caller-owned (free with eng_model_destroy). Returns 0, ENG_EINVAL (unknown arch,
 * bad sizes), ENG_ENOMEM, or a weights-loading error, with `err` set. */
int eng_model_create(const eng_model_spec *spec, size_t in_ndim, const size_t *in_shape,
                     size_t n_classes, bool train_bn, eng_rng *rng, eng_model **out,
                     eng_error *err);
/* Frees a model; NULL is a no-op. */
void eng_model_destroy(eng_model *m);

/* fastai freeze_to(n): frozen_idx = n >= 0 ? n : G + n (clamped to [0, G]); groups below
 * it are frozen except norm params with train_bn. Updates every param's `trainable` and
 * the layers' flags. Does not touch optimizer state (see eng_optim_clear). */
void eng_model_freeze_to(eng_model *m, int32_t n);

/* Index of the lowest layer holding a trainable parameter, or n_layers when none. */
size_t eng_model_lowest_trainable(const eng_model *m);

/* Finds a parameter tensor by state_dict name; NULL if none. */
const eng_param *eng_model_find(const eng_model *m, const char *name);

/* Architecture registry (engine.h's eng_arch_count/eng_arch_name read it). */
size_t eng_model_arch_count(void);
const char *eng_model_arch_name(size_t i);
