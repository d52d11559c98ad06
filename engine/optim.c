/*
 * optim.c: fastai Adam and SGD with momentum. See optim.h for the exact update order, which
 * follows fastai's optimizer callbacks (weight_decay, average_grad, average_sqr_grad,
 * step_stat, adam_step / momentum_step).
 */
#include "optim.h"

#include <math.h>
#include <string.h>

#include "util.h"

void eng_optim_init(eng_optim *o, const eng_opt_spec *spec, size_t n_groups)
{
    ENG_ASSERT(n_groups >= 1 && n_groups <= ENG_MAX_GROUPS);
    o->kind = spec->kind;
    o->n_groups = n_groups;
    o->sgd_mom = spec->mom != 0.0f;
    for (size_t g = 0; g < n_groups; g++) {
        o->h[g].lr = 1e-3f;
        o->h[g].mom = spec->mom;
        o->h[g].sqr_mom = spec->sqr_mom;
        o->h[g].eps = spec->eps;
        o->h[g].wd = spec->wd;
    }
}

static void adam_tensor(const eng_hypers *h, bool do_wd, uint32_t *step, float *p, const float *g,
                        float *m, float *v, size_t n)
{
    float lr = h->lr, b1 = h->mom, b2 = h->sqr_mom, eps = h->eps;
    if (do_wd && h->wd != 0.0f) {
        float f = 1.0f - lr * h->wd;
        for (size_t i = 0; i < n; i++)
            p[i] *= f;
    }
    for (size_t i = 0; i < n; i++) {
        m[i] = m[i] * b1 + g[i] * (1.0f - b1);
        v[i] = v[i] * b2 + g[i] * g[i] * (1.0f - b2);
    }
    *step += 1;
    float d1 = (float)(1.0 - pow((double)b1, (double)*step));
    float d2 = (float)(1.0 - pow((double)b2, (double)*step));
    float a = -lr / d1;
    for (size_t i = 0; i < n; i++)
        p[i] += a * m[i] / (sqrtf(v[i] / d2) + eps);
}

static void sgd_tensor(const eng_hypers *h, bool use_mom, bool do_wd, uint32_t *step, float *p,
                       const float *g, float *m, size_t n)
{
    float lr = h->lr;
    if (do_wd && h->wd != 0.0f) {
        float f = 1.0f - lr * h->wd;
        for (size_t i = 0; i < n; i++)
            p[i] *= f;
    }
    if (use_mom) {
        for (size_t i = 0; i < n; i++) {
            m[i] = m[i] * h->mom + g[i];
            p[i] -= lr * m[i];
        }
    } else {
        for (size_t i = 0; i < n; i++)
            p[i] -= lr * g[i];
    }
    *step += 1;
}

void eng_optim_step(const eng_optim *o, eng_model *m)
{
    for (size_t i = 0; i < m->n_params; i++) {
        const eng_param *p = &m->params[i];
        if (!p->trainable)
            continue;
        ENG_ASSERT(p->group < o->n_groups);
        const eng_hypers *h = &o->h[p->group];
        size_t off = p->offset;
        if (o->kind == ENG_OPT_ADAM)
            adam_tensor(h, !p->info.no_wd, &m->step[i], m->w + off, m->g + off, m->m + off,
                        m->v + off, p->count);
        else
            sgd_tensor(h, o->sgd_mom, !p->info.no_wd, &m->step[i], m->w + off, m->g + off,
                       m->m + off, p->count);
    }
}

void eng_optim_clear(eng_model *m)
{
    memset(m->m, 0, m->n_floats * sizeof(float));
    memset(m->v, 0, m->n_floats * sizeof(float));
    memset(m->step, 0, m->n_params * sizeof(uint32_t));
}
