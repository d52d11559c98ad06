/*
 * summary.c: eng_net_summary and its text form, after fastai's learn.summary(): one row per
 * leaf module (a residual block is shown as its conv1, bn1, relu, conv2, bn2 and downsample
 * modules) with output shape, parameter count and the requires_grad of its first
 * parameter; totals by module; then the layer groups and the frozen state.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "kernels.h"
#include "net.h"
#include "util.h"

static const char *torch_type(const char *kind)
{
    static const char *const map[][2] = {
        {"linear", "Linear"},
        {"relu", "ReLU"},
        {"dropout", "Dropout"},
        {"conv2d", "Conv2d"},
        {"batchnorm1d", "BatchNorm1d"},
        {"batchnorm2d", "BatchNorm2d"},
        {"maxpool2d", "MaxPool2d"},
        {"avgpool2d", "AvgPool2d"},
        {"adaptive_avgpool2d", "AdaptiveAvgPool2d"},
        {"adaptive_concatpool2d", "AdaptiveConcatPool2d"},
        {"flatten", "Flatten"},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(kind, map[i][0]) == 0)
            return map[i][1];
    return kind;
}

/* Parameters of layer li whose suffix starts with `child` + "." (child NULL: all), not
 * counting buffers; *first_trainable is the flag of the first one. */
static uint64_t count_params(const eng_model *m, size_t li, const char *child, bool *has,
                             bool *first_trainable)
{
    uint64_t n = 0;
    *has = false;
    *first_trainable = false;
    size_t cl = child ? strlen(child) : 0;
    for (size_t i = 0; i < m->n_params; i++) {
        const eng_param *p = &m->params[i];
        if (p->layer != li || p->info.is_buffer)
            continue;
        if (child && (strncmp(p->info.suffix, child, cl) != 0 || p->info.suffix[cl] != '.'))
            continue;
        if (!*has)
            *first_trainable = p->trainable;
        *has = true;
        n += p->count;
    }
    return n;
}

static void set_shape(eng_summary_row *r, const eng_layer *l)
{
    r->out_ndim = l->out_ndim;
    memcpy(r->out_shape, l->out_shape, sizeof(r->out_shape));
}

static bool same_shape(const eng_layer *l)
{
    return l->in_ndim == l->out_ndim &&
           memcmp(l->in_shape, l->out_shape, l->in_ndim * sizeof(size_t)) == 0;
}

int eng_net_summary(const eng_net *n, size_t batch, eng_summary **out, eng_error *err)
{
    const eng_model *m = n->model;
    *out = NULL;
    eng_summary *s = calloc(1, sizeof(*s));
    size_t cap = 0;
    for (size_t i = 0; i < m->n_layers; i++)
        cap += m->layers[i].ops == &eng_layer_basic_block ? 7 : 1;
    if (s)
        s->rows = calloc(cap, sizeof(eng_summary_row));
    if (!s || !s->rows) {
        eng_summary_destroy(s);
        return eng_err_set(err, ENG_ENOMEM, NULL, "out of memory");
    }
    snprintf(s->arch, sizeof(s->arch), "%s", n->arch);
    snprintf(s->model_class, sizeof(s->model_class), "%s",
             n->torchvision_head ? "ResNet" : "Sequential");
    s->batch = batch;
    s->in_ndim = m->in_ndim;
    memcpy(s->in_shape, m->in_shape, sizeof(s->in_shape));
    s->n_groups = m->n_groups;
    s->frozen_idx = m->frozen_idx;
    s->train_bn = m->train_bn;
    for (size_t i = 0; i < m->n_layers; i++) {
        const eng_layer *l = &m->layers[i];
        if (l->ops == &eng_layer_basic_block) {
            static const char *const kids[] = {"conv1", "bn1",          "relu",        "conv2",
                                               "bn2",   "downsample.0", "downsample.1"};
            static const char *const types[] = {
                "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "Conv2d", "BatchNorm2d"};
            bool ds = l->cfg.block.stride != 1 || l->cfg.block.IC != l->cfg.block.OC;
            for (size_t k = 0; k < (ds ? 7u : 5u); k++) {
                eng_summary_row *r = &s->rows[s->n_rows++];
                snprintf(r->name, sizeof(r->name), "%.40s.%s", l->name, kids[k]);
                snprintf(r->type, sizeof(r->type), "%s", types[k]);
                set_shape(r, l);
                r->shape_kept = (k != 0 && k != 5) || same_shape(l);
                r->group = l->group;
                if (k != 2)
                    r->params = count_params(m, i, kids[k], &r->has_params, &r->trainable);
            }
            continue;
        }
        eng_summary_row *r = &s->rows[s->n_rows++];
        snprintf(r->name, sizeof(r->name), "%s", l->name);
        snprintf(r->type, sizeof(r->type), "%s", torch_type(l->ops->kind));
        set_shape(r, l);
        r->shape_kept = same_shape(l);
        r->group = l->group;
        r->params = count_params(m, i, NULL, &r->has_params, &r->trainable);
    }
    for (size_t i = 0; i < s->n_rows; i++) {
        const eng_summary_row *r = &s->rows[i];
        s->total_params += r->params;
        if (r->trainable)
            s->trainable_params += r->params;
        if (r->group < ENG_MAX_GROUPS) {
            s->group_params[r->group] += r->params;
            if (!s->group_first[r->group][0])
                snprintf(s->group_first[r->group], 64, "%s", r->name);
            snprintf(s->group_last[r->group], 64, "%s", r->name);
        }
    }
    s->non_trainable_params = s->total_params - s->trainable_params;
    *out = s;
    return 0;
}

void eng_summary_destroy(eng_summary *s)
{
    if (!s)
        return;
    free(s->rows);
    free(s);
}

typedef struct tbuf {
    char *p;
    size_t cap, len;
} tbuf;

__attribute__((format(printf, 2, 3))) static void put(tbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->len < b->cap ? b->cap - b->len : 0;
    int k = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (k > 0)
        b->len += (size_t)k;
}

static void rule(tbuf *b, char c)
{
    char line[77];
    memset(line, c, 76);
    line[76] = '\0';
    put(b, "%s", line);
}

/* "bs x c x h x w" truncated to 19 characters, as fastai prints it. */
static void shape_text(size_t batch, size_t ndim, const size_t *shape, char out[20])
{
    char t[96];
    int k = snprintf(t, sizeof(t), "%zu", batch);
    for (size_t d = 0; d < ndim && k > 0 && (size_t)k < sizeof(t); d++)
        k += snprintf(t + k, sizeof(t) - (size_t)k, " x %zu", shape[d]);
    snprintf(out, 20, "%.19s", t);
}

/* 1234567 -> "1,234,567" */
static void commas(uint64_t v, char out[32])
{
    char t[32];
    int n = snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = t[i];
    }
    out[o] = '\0';
}

size_t eng_summary_text(const eng_summary *s, char *buf, size_t cap)
{
    tbuf b = {buf, cap, 0};
    char sh[20], num[32];
    shape_text(s->batch, s->in_ndim, s->in_shape, sh);
    put(&b, "%s (Input shape: %s)\n", s->model_class, sh);
    rule(&b, '=');
    put(&b, "\n%-20s %-20s %-10s %-10s\n", "Layer (type)", "Output Shape", "Param #", "Trainable");
    rule(&b, '=');
    const eng_summary_row *prev = NULL;
    for (size_t i = 0; i < s->n_rows; i++) {
        const eng_summary_row *r = &s->rows[i];
        shape_text(s->batch, r->out_ndim, r->out_shape, sh);
        bool same_as_prev =
            prev && prev->out_ndim == r->out_ndim &&
            memcmp(prev->out_shape, r->out_shape, r->out_ndim * sizeof(size_t)) == 0;
        if (!prev) {
            put(&b, "\n%-20s %-20s", "", sh);
        } else if (!r->shape_kept && !same_as_prev) {
            put(&b, "\n");
            rule(&b, '_');
            put(&b, "\n%-20s %-20s", "", sh);
        }
        if (r->has_params) {
            char pn[24];
            snprintf(pn, sizeof(pn), "%llu", (unsigned long long)r->params);
            put(&b, "\n%-20s %-20s %-10s %-10s", r->type, "", pn, r->trainable ? "True" : "False");
        } else {
            put(&b, "\n%-20s %-20s %-10s %-10s", r->type, "", "", "");
        }
        prev = r;
    }
    put(&b, "\n");
    rule(&b, '_');
    commas(s->total_params, num);
    put(&b, "\n\nTotal params: %s\n", num);
    commas(s->trainable_params, num);
    put(&b, "Total trainable params: %s\n", num);
    commas(s->non_trainable_params, num);
    put(&b, "Total non-trainable params: %s\n\n", num);
    put(&b, "Layer groups (%zu):\n", s->n_groups);
    for (size_t g = 0; g < s->n_groups && g < ENG_MAX_GROUPS; g++) {
        commas(s->group_params[g], num);
        put(&b, "  #%zu %s .. %s: %s params%s\n", g, s->group_first[g], s->group_last[g], num,
            g < s->frozen_idx ? (s->train_bn ? " (frozen, BatchNorm trainable)" : " (frozen)")
                              : "");
    }
    if (s->frozen_idx == 0)
        put(&b, "\nModel unfrozen\n");
    else
        put(&b, "\nModel frozen up to parameter group #%zu\n", s->frozen_idx);
    if (cap)
        buf[b.len < cap ? b.len : cap - 1] = '\0';
    return b.len;
}
