/*
 * schedule.c: fastai schedule functions and LR resolution (fastai/callback/schedule.py,
 * fastai/optimizer.py set_hyper, fastcore even_mults), from the formulas in
 * reference/fastai-semantics.md sections 3, 4.2 and 5.2.
 */
#include "schedule.h"

#include <math.h>

#include "util.h"

double eng_sched_cos(double s, double e, double p)
{
    return s + (1.0 + cos(M_PI * (1.0 - p))) * (e - s) / 2.0;
}

double eng_sched_one_cycle(double pct, double a, double b, double c, double p)
{
    /* combine_scheds picks the last boundary <= p, capped at the last segment */
    if (p < pct)
        return eng_sched_cos(a, b, p / pct);
    return eng_sched_cos(b, c, (p - pct) / (1.0 - pct));
}

void eng_even_mults(double start, double stop, size_t n, float *out)
{
    if (n == 1) {
        out[0] = (float)stop;
        return;
    }
    double step = pow(stop / start, 1.0 / (double)(n - 1));
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(start * pow(step, (double)i));
}

double eng_lrfind_lr(double start, double end, size_t k, size_t num_it)
{
    return start * pow(end / start, (double)k / (double)num_it);
}

static float suggestion_value(const eng_lr_find_result *r, eng_suggest s)
{
    switch (s) {
    case ENG_SUGGEST_VALLEY:
        return r->valley;
    case ENG_SUGGEST_MINIMUM:
        return r->minimum;
    case ENG_SUGGEST_STEEP:
        return r->steep;
    case ENG_SUGGEST_SLIDE:
        return r->slide;
    }
    return NAN;
}

static const char *suggest_name(eng_suggest s)
{
    static const char *names[] = {"valley", "minimum", "steep", "slide"};
    return (unsigned)s < 4 ? names[s] : "?";
}

static void slice_rule(double lo, double hi, size_t G, float *out)
{
    if (lo > 0.0) {
        eng_even_mults(lo, hi, G, out);
    } else {
        /* slice(hi): hi/10 for every group but the last */
        for (size_t g = 0; g + 1 < G; g++)
            out[g] = (float)(hi / 10.0);
        out[G - 1] = (float)hi;
    }
}

int eng_lr_resolve(const eng_lr *lr, size_t G, const eng_lr_find_result *latest, float *out,
                   const char *field, eng_error *err)
{
    ENG_ASSERT(G >= 1 && G <= ENG_MAX_GROUPS);
    switch (lr->kind) {
    case ENG_LR_VALUE:
        for (size_t g = 0; g < G; g++)
            out[g] = lr->v[0];
        break;
    case ENG_LR_SLICE:
        slice_rule((double)lr->v[0], (double)lr->v[1], G, out);
        break;
    case ENG_LR_SLICE_HI:
        slice_rule(0.0, (double)lr->v[0], G, out);
        break;
    case ENG_LR_LIST:
        if (lr->n == 1) {
            for (size_t g = 0; g < G; g++)
                out[g] = lr->v[0];
        } else if (lr->n != G) {
            return eng_err_set(err, ENG_EINVAL, field,
                               "%u learning rates given but the model has %zu layer groups", lr->n,
                               G);
        } else {
            for (size_t g = 0; g < G; g++)
                out[g] = lr->v[g];
        }
        break;
    case ENG_LR_SUGGESTION: {
        if (!latest)
            return eng_err_set(err, ENG_ENOSUGGEST, field,
                               "lr suggestion \"%s\" used before any lr_find",
                               suggest_name(lr->suggest));
        float s = suggestion_value(latest, lr->suggest);
        if (!latest->ok || !isfinite(s) || s <= 0.0f)
            return eng_err_set(err, ENG_ENOSUGGEST, field, "lr_find could not suggest \"%s\": %s",
                               suggest_name(lr->suggest),
                               latest->reason[0] ? latest->reason : "no usable points");
        double d = lr->divide > 0.0f ? (double)lr->divide : 1.0;
        double v = (double)s / d;
        if (lr->slice_lo_divide > 0.0f)
            slice_rule(v / (double)lr->slice_lo_divide, v, G, out);
        else
            for (size_t g = 0; g < G; g++)
                out[g] = (float)v;
        break;
    }
    default:
        return eng_err_set(err, ENG_EINVAL, field, "unknown learning-rate kind %d", (int)lr->kind);
    }
    for (size_t g = 0; g < G; g++)
        if (!(isfinite(out[g]) && out[g] > 0.0f))
            return eng_err_set(err, ENG_EINVAL, field, "learning rate must be finite and > 0");
    return 0;
}
