/*
 * rng.h: the engine's seeded random generator (xoshiro256** seeded through splitmix64).
 *
 * Owned by whoever uses it (model init, the trainer's dropout stream, shuffling); no global
 * state, no rand(). The state is four 64-bit words and can be saved and restored exactly.
 */
#pragma once

#include <stdint.h>

typedef struct eng_rng {
    uint64_t s[4];
} eng_rng;

/* Seeds `r` from (seed, stream): distinct streams of one seed are independent. */
void eng_rng_seed(eng_rng *r, uint64_t seed, uint64_t stream);
/* Next raw 64-bit value. */
uint64_t eng_rng_u64(eng_rng *r);
/* Uniform float in [0, 1) with 24 random bits. */
float eng_rng_uniform(eng_rng *r);
/* Uniform integer in [0, n), n > 0 (unbiased, by rejection). */
uint64_t eng_rng_below(eng_rng *r, uint64_t n);
/* Standard normal N(0, 1) by Box-Muller (two uniforms per call, nothing cached, so the
 * state alone determines the sequence). */
float eng_rng_normal(eng_rng *r);
