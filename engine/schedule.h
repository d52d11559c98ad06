/*
 * schedule.h: fastai's schedules and LR rules: cosine and 1cycle (combined_cos), even_mults,
 * slice / list / suggestion LRs resolved to one value per group, lr_find's exponential LR.
 */
#pragma once

#include <stddef.h>

#include "engine.h"

/* sched_cos: s + (1 + cos(pi*(1-p))) * (e-s)/2. */
double eng_sched_cos(double s, double e, double p);
/* combined_cos(pct, a, b, c) at pos p: cos a->b over [0, pct), cos b->c over [pct, 1]. */
double eng_sched_one_cycle(double pct, double a, double b, double c, double p);
/* even_mults(start, stop, n): n == 1 -> stop; else start*(stop/start)^(i/(n-1)). */
void eng_even_mults(double start, double stop, size_t n, float *out);
/* lr_find's LR of batch k: start*(end/start)^(k/num_it). */
double eng_lrfind_lr(double start, double end, size_t k, size_t num_it);

/* Resolves `lr` to one value per group (fastai set_hyper). `latest` is the job's latest
 * lr_find result or NULL. Returns 0; ENG_EINVAL (list length != n_groups, value <= 0 or
 * not finite); ENG_ENOSUGGEST when a suggestion is missing or could not be made, with
 * err->text giving lr_find's reason. `field` names the spec field for err. */
int eng_lr_resolve(const eng_lr *lr, size_t n_groups, const eng_lr_find_result *latest, float *out,
                   const char *field, eng_error *err);
