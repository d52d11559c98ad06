/*
 * tracker.h: fastai's TrackerCallback rule, shared by early stopping and save-best: which
 * epoch value is a new best of the monitored recorder column.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"

typedef struct eng_tracker {
    bool less;       /* comparison: np.less (losses, errors) or np.greater */
    float min_delta; /* signed as fastai stores it: negated for np.less */
    double best;     /* +inf (less) or -inf (greater) at each fit start */
    uint32_t wait;   /* early stopping: epochs since the last improvement */
    bool saved;      /* save-best: a best model was written during this fit */
} eng_tracker;

/* Sets the comparison from spec->comp / monitor name (fastai: less if the name contains
 * "loss" or "error") and resets for a new fit. */
void eng_tracker_init(eng_tracker *t, const eng_tracker_spec *spec);
/* fastai reset_on_fit: best = +-inf, wait = 0, saved = false. */
void eng_tracker_reset(eng_tracker *t);
/* After an epoch: true iff comp(val - min_delta, best), and then best = val. A NaN value is
 * never a new best. */
bool eng_tracker_update(eng_tracker *t, float val);
