/*
 * model.c: builds models from eng_model_spec via the architecture registry; owns the
 * parameter, gradient and optimizer-state blocks; applies fastai's freeze_to rules.
 *
 * DESIGN. Building runs in two passes: the architecture's builder appends layers (kind,
 * cfg, name, group), then every layer's setup() propagates shapes and param_info() lays
 * the tensors out in one block in layer order, which is also the state_dict order.
 */
#include "model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "safetensors.h"
#include "util.h"

eng_layer *eng_builder_add(eng_builder *b, const eng_layer_ops *ops, unsigned group, eng_error *err,
                           const char *fmt, ...)
{
    if (b->n >= ENG_BUILDER_MAX) {
        eng_err_set(err, ENG_EINVAL, "model", "more than %d layers", ENG_BUILDER_MAX);
        return NULL;
    }
    eng_layer *l = &b->layers[b->n];
    memset(l, 0, sizeof(*l));
    b->init[b->n] = ENG_INIT_DEFAULT;
    b->n++;
    l->ops = ops;
    l->group = group;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->name, sizeof(l->name), fmt, ap);
    va_end(ap);
    return l;
}

/* mlp: body = [Linear, ReLU, Dropout?] per hidden layer (group 0), head = Linear (group 1).
 * Inputs of any shape are flattened (a Linear reads the sample as one vector). */
static int build_mlp(eng_builder *b, const eng_model_spec *spec, const eng_arch_input *in,
                     eng_error *err)
{
    if (spec->n_hidden > ENG_MAX_HIDDEN)
        return eng_err_set(err, ENG_EINVAL, "model.hidden", "at most %d hidden layers",
                           ENG_MAX_HIDDEN);
    if (!(spec->dropout >= 0.0f && spec->dropout < 1.0f))
        return eng_err_set(err, ENG_EINVAL, "model.dropout", "must be in [0, 1)");
    size_t prev = in->size, idx = 0;
    b->n_groups = 2;
    for (uint32_t h = 0; h < spec->n_hidden; h++) {
        if (spec->hidden[h] == 0 || spec->hidden[h] > 65536)
            return eng_err_set(err, ENG_EINVAL, "model.hidden", "sizes must be 1..65536");
        eng_layer *l = eng_builder_add(b, &eng_layer_linear, 0, err, "0.%zu", idx++);
        if (!l)
            return ENG_EINVAL;
        l->cfg.dense.in = prev;
        l->cfg.dense.out = spec->hidden[h];
        l->cfg.dense.bias = true;
        if (!eng_builder_add(b, &eng_layer_relu, 0, err, "0.%zu", idx++))
            return ENG_EINVAL;
        if (spec->dropout > 0.0f) {
            l = eng_builder_add(b, &eng_layer_dropout, 0, err, "0.%zu", idx++);
            if (!l)
                return ENG_EINVAL;
            l->cfg.dropout.p = spec->dropout;
        }
        prev = spec->hidden[h];
    }
    eng_layer *head = eng_builder_add(b, &eng_layer_linear, 1, err, "1");
    if (!head)
        return ENG_EINVAL;
    head->cfg.dense.in = prev;
    head->cfg.dense.out = in->n_classes;
    head->cfg.dense.bias = true;
    return 0;
}

typedef struct arch_entry {
    const char *name;
    eng_arch_build_fn build;
} arch_entry;

static const arch_entry archs[] = {
    {"mlp", build_mlp},
    {"cnn-small", eng_arch_build_cnn_small},
    {"resnet18", eng_arch_build_resnet18},
    {"resnet34", eng_arch_build_resnet34},
};

size_t eng_model_arch_count(void)
{
    return sizeof(archs) / sizeof(archs[0]);
}

const char *eng_model_arch_name(size_t i)
{
    return i < eng_model_arch_count() ? archs[i].name : NULL;
}

void eng_model_destroy(eng_model *m)
{
    if (!m)
        return;
    free(m->layers);
    free(m->params);
    free(m->w);
    free(m->g);
    free(m->m);
    free(m->v);
    free(m->step);
    free(m);
}

static void set_trainable(eng_model *m)
{
    for (size_t i = 0; i < m->n_params; i++) {
        eng_param *p = &m->params[i];
        bool t =
            !p->info.is_buffer && (p->group >= m->frozen_idx || (p->info.is_norm && m->train_bn));
        p->trainable = t;
        m->layers[p->layer].trainable[p->index] = t;
    }
}

void eng_model_freeze_to(eng_model *m, int32_t n)
{
    int64_t G = (int64_t)m->n_groups;
    int64_t idx = n >= 0 ? (int64_t)n : G + (int64_t)n;
    if (idx < 0)
        idx = 0;
    if (idx > G)
        idx = G;
    m->frozen_idx = (size_t)idx;
    set_trainable(m);
}

size_t eng_model_lowest_trainable(const eng_model *m)
{
    size_t lo = m->n_layers;
    for (size_t i = 0; i < m->n_params; i++)
        if (m->params[i].trainable && m->params[i].layer < lo)
            lo = m->params[i].layer;
    return lo;
}

const eng_param *eng_model_find(const eng_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return &m->params[i];
    return NULL;
}

static void *calloc_checked(size_t n, size_t size)
{
    return n ? calloc(n, size) : calloc(1, size);
}

int eng_model_create(const eng_model_spec *spec, size_t in_ndim, const size_t *in_shape,
                     size_t n_classes, bool train_bn, eng_rng *rng, eng_model **out, eng_error *err)
{
    int rc;
    eng_builder *b = NULL;
    eng_model *m = NULL;
    const arch_entry *arch = NULL;
    *out = NULL;
    for (size_t i = 0; i < eng_model_arch_count(); i++)
        if (strcmp(spec->arch, archs[i].name) == 0)
            arch = &archs[i];
    if (!arch)
        return eng_err_set(err, ENG_EINVAL, "model.arch", "unknown architecture \"%.31s\"",
                           spec->arch);
    if (in_ndim == 0 || in_ndim > ENG_LAYER_MAX_DIMS || n_classes < 1)
        return eng_err_set(err, ENG_ESHAPE, NULL, "bad input shape or class count");

    b = calloc(1, sizeof(*b));
    m = calloc(1, sizeof(*m));
    if (!b || !m) {
        rc = eng_err_set(err, ENG_ENOMEM, NULL, "out of memory building the model");
        goto fail;
    }
    m->in_ndim = in_ndim;
    m->in_size = 1;
    for (size_t i = 0; i < in_ndim; i++) {
        m->in_shape[i] = in_shape[i];
        m->in_size *= in_shape[i];
    }
    m->n_classes = n_classes;
    m->train_bn = train_bn;
    if (spec->in_channels && strcmp(spec->arch, "mlp") != 0 &&
        (in_ndim != 3 || in_shape[0] != spec->in_channels)) {
        rc = eng_err_set(err, ENG_ESHAPE, "model.in_channels",
                         "the model expects %u input channels but the data has %zu",
                         spec->in_channels, in_ndim == 3 ? in_shape[0] : (size_t)0);
        goto fail;
    }
    eng_arch_input ain = {.ndim = in_ndim, .size = m->in_size, .n_classes = n_classes};
    memcpy(ain.shape, m->in_shape, sizeof(ain.shape));
    rc = arch->build(b, spec, &ain, err);
    if (rc)
        goto fail;
    ENG_ASSERT(b->n_groups >= 1 && b->n_groups <= ENG_MAX_GROUPS);
    m->n_groups = b->n_groups;

    m->layers = calloc(b->n, sizeof(eng_layer));
    if (!m->layers) {
        rc = eng_err_set(err, ENG_ENOMEM, NULL, "out of memory building the model");
        goto fail;
    }
    memcpy(m->layers, b->layers, b->n * sizeof(eng_layer));
    m->n_layers = b->n;

    /* pass 1: shapes and parameter counts */
    size_t n_tensors = 0;
    size_t prev_ndim = in_ndim, prev_size = m->in_size;
    const size_t *prev_shape = m->in_shape;
    for (size_t i = 0; i < m->n_layers; i++) {
        eng_layer *l = &m->layers[i];
        l->in_ndim = prev_ndim;
        memcpy(l->in_shape, prev_shape, prev_ndim * sizeof(size_t));
        l->in_size = prev_size;
        l->stats = &m->stats;
        rc = l->ops->setup(l, err);
        if (rc)
            goto fail;
        n_tensors += l->ops->n_params ? l->ops->n_params(l) : 0;
        prev_ndim = l->out_ndim;
        prev_shape = l->out_shape;
        prev_size = l->out_size;
    }
    if (prev_size != n_classes) {
        rc = eng_err_set(err, ENG_ESHAPE, NULL, "model output %zu != %zu classes", prev_size,
                         n_classes);
        goto fail;
    }

    /* pass 2: lay the tensors out */
    m->params = calloc_checked(n_tensors, sizeof(eng_param));
    m->step = calloc_checked(n_tensors, sizeof(uint32_t));
    if (!m->params || !m->step) {
        rc = eng_err_set(err, ENG_ENOMEM, NULL, "out of memory building the model");
        goto fail;
    }
    size_t off = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        eng_layer *l = &m->layers[i];
        size_t np = l->ops->n_params ? l->ops->n_params(l) : 0;
        ENG_ASSERT(np <= ENG_LAYER_MAX_PARAMS);
        for (size_t j = 0; j < np; j++) {
            eng_param *p = &m->params[m->n_params++];
            l->ops->param_info(l, j, &p->info);
            snprintf(p->name, sizeof(p->name), "%s.%s", l->name, p->info.suffix);
            p->layer = i;
            p->index = j;
            p->group = l->group;
            p->count = 1;
            for (size_t d = 0; d < p->info.ndim; d++)
                p->count *= p->info.shape[d];
            p->offset = off;
            off += p->count;
        }
    }
    m->n_floats = off;
    m->w = calloc_checked(off, sizeof(float));
    m->g = calloc_checked(off, sizeof(float));
    m->m = calloc_checked(off, sizeof(float));
    m->v = calloc_checked(off, sizeof(float));
    if (!m->w || !m->g || !m->m || !m->v) {
        rc = eng_err_set(err, ENG_ENOMEM, NULL, "out of memory for %zu parameters", off);
        goto fail;
    }
    for (size_t i = 0; i < m->n_params; i++) {
        eng_param *p = &m->params[i];
        eng_layer *l = &m->layers[p->layer];
        l->param[p->index] = m->w + p->offset;
        l->grad[p->index] = p->info.is_buffer ? NULL : m->g + p->offset;
    }
    for (size_t i = 0; i < m->n_layers; i++) {
        if (m->layers[i].ops->init)
            m->layers[i].ops->init(&m->layers[i], rng);
        eng_arch_apply_init(&m->layers[i], b->init[i], rng);
    }
    eng_model_freeze_to(m, 0);

    if (spec->weights[0]) {
        rc = eng_st_load_model(spec->weights, m, spec->body_only, err);
        if (rc)
            goto fail;
    }
    free(b);
    *out = m;
    return 0;
fail:
    free(b);
    eng_model_destroy(m);
    return rc;
}
