/*
 * tracker.c: fastai TrackerCallback (fastai/callback/tracker.py) as paraphrased in
 * reference/fastai-semantics.md section 10.
 */
#include "tracker.h"

#include <math.h>
#include <string.h>

void eng_tracker_init(eng_tracker *t, const eng_tracker_spec *spec)
{
    memset(t, 0, sizeof(*t));
    if (spec->comp != 0)
        t->less = spec->comp < 0;
    else
        t->less = strstr(spec->monitor, "loss") != NULL || strstr(spec->monitor, "error") != NULL;
    t->min_delta = t->less ? -spec->min_delta : spec->min_delta;
    eng_tracker_reset(t);
}

void eng_tracker_reset(eng_tracker *t)
{
    t->best = t->less ? (double)INFINITY : -(double)INFINITY;
    t->wait = 0;
    t->saved = false;
}

bool eng_tracker_update(eng_tracker *t, float val)
{
    double v = (double)val - (double)t->min_delta;
    bool better = t->less ? v < t->best : v > t->best;
    if (better)
        t->best = (double)val;
    return better;
}
