/*
 * optim.h: fastai Adam and SGD with momentum over a model's flat parameter block, with
 * per-group hyper-parameters (fastai's opt.hypers).
 */
#pragma once

#include <stddef.h>

#include "engine.h"
#include "model.h"

typedef struct eng_hypers {
    float lr, mom, sqr_mom, eps, wd;
} eng_hypers;

typedef struct eng_optim {
    eng_opt_kind kind;
    size_t n_groups;
    eng_hypers h[ENG_MAX_GROUPS];
    /* fastai SGD built with mom == 0 has no momentum callbacks at all: a scheduled `mom`
     * hyper (fit_one_cycle) then changes nothing. Adam ignores this flag. */
    bool sgd_mom;
} eng_optim;

/* Sets every group's hypers from `spec` (lr 1e-3, fastai defaults.lr); sgd_mom = mom != 0. */
void eng_optim_init(eng_optim *o, const eng_opt_spec *spec, size_t n_groups);

/* One update of every trainable tensor of `m` with its group's hypers, from m->g.
 * Adam (fastai, decouple_wd): p *= 1 - lr*wd (when do_wd); m = mom*m + (1-mom)*g;
 * v = sqr_mom*v + (1-sqr_mom)*g^2; t += 1; p -= lr/(1-mom^t) * m / (sqrt(v/(1-sqr_mom^t)) + eps).
 * SGD: p *= 1 - lr*wd; when built with mom != 0 (sgd_mom): m = mom*m + g, p -= lr*m, with
 * the group's current (possibly scheduled) mom; else p -= lr*g.
 * Frozen tensors and buffers are skipped (no update, no decay, no state). */
void eng_optim_step(const eng_optim *o, eng_model *m);

/* fastai clear_state: zeroes every moment and step counter; hypers are kept. */
void eng_optim_clear(eng_model *m);
