/*
 * lrfind.h: fastai lr_find's suggestion functions (valley, minimum, steep, slide) on the
 * recorded sweep. The sweep itself runs in runner.c.
 */
#pragma once

#include <stddef.h>

#include "engine.h"

/* Computes r->ok, r->reason and the four suggestions from n recorded points (lrs[i],
 * smoothed losses[i]), exactly as fastai: the points [num_it/10 : n-5) (Python slicing with
 * the *requested* num_it), truncated at the first NaN loss. Where fastai raises (no point
 * left; steep needs 2 points, slide 16) this sets that suggestion to NaN and says why in
 * r->reason; r->ok is false when no suggestion at all could be made. Does not touch
 * r->n, r->lrs, r->losses. */
void eng_lrfind_suggest(const float *lrs, const float *losses, size_t n, size_t num_it,
                        eng_lr_find_result *r);
