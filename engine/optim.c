/*
 * optim.c: fastai Adam and SGD with momentum. See optim.h for the exact update order, which
 * follows fastai's optimizer callbacks (weight_decay, average_grad, average_sqr_grad,
 * step_stat, adam_step / momentum_step).
 */
#include "optim.h"

#include <math.h>
#include <string.h>

#include "par.h"
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

/* The element-wise update loops are also built for AVX2 on x86-64 with GCC, picked at load
 * time (ifunc), as im2col.c's. Each element goes through the same IEEE operations in the same
 * order in both bodies (no FMA contraction: c17 keeps -ffp-contract=off, and the AVX2 clone
 * has no FMA), so they give the same bits; the engine builds with -fno-math-errno so that
 * sqrtf becomes one vector instruction instead of a call that may set errno. */

/* One Adam update over elements [lo, hi) of a tensor: decay, moments and step in a single
 * pass (each element goes through the same operations in the same order as three separate
 * passes would, so results are identical; one sweep over memory instead of three). The decay
 * is a multiplication by f, which is 1 exactly when there is none (x * 1 == x). */
typedef struct adam_job {
    float f, b1, b2, a, d2, eps; /* f: weight-decay factor, 1 when none */
    float *p, *m, *v;
    const float *g;
    size_t n;
} adam_job;

ENG_SIMD_AVX2
static void adam_range(float *restrict p, const float *restrict g, float *restrict m,
                       float *restrict v, size_t n, const adam_job *j)
{
    const float f = j->f, b1 = j->b1, b2 = j->b2, a = j->a, d2 = j->d2, eps = j->eps;
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (size_t i = 0; i < n; i++) {
        const float gi = g[i];
        const float mi = m[i] * b1 + gi * c1;
        const float vi = v[i] * b2 + gi * gi * c2;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * f + a * mi / (sqrtf(vi / d2) + eps);
    }
}

static void adam_part(void *ctx, size_t part, size_t parts)
{
    const adam_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->n, part, parts, &lo, &hi);
    /* parameter, gradient and moment blocks are distinct allocations */
    adam_range(j->p + lo, j->g + lo, j->m + lo, j->v + lo, hi - lo, j);
}

static void adam_tensor(const eng_hypers *h, bool do_wd, uint32_t *step, float *p, const float *g,
                        float *m, float *v, size_t n)
{
    float lr = h->lr;
    *step += 1;
    float d1 = (float)(1.0 - pow((double)h->mom, (double)*step));
    adam_job j = {.f = do_wd && h->wd != 0.0f ? 1.0f - lr * h->wd : 1.0f,
                  .b1 = h->mom,
                  .b2 = h->sqr_mom,
                  .a = -lr / d1,
                  .d2 = (float)(1.0 - pow((double)h->sqr_mom, (double)*step)),
                  .eps = h->eps,
                  .p = p,
                  .m = m,
                  .v = v,
                  .g = g,
                  .n = n};
    /* large tensors are split over the engine's compute threads (par.h) */
    eng_par_run(n >= 65536 ? eng_par_threads() : 1, adam_part, &j);
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
