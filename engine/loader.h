/*
 * loader.h: training batches assembled by a background thread into a double buffer while
 * the trainer computes on the previous batch (private to engine/).
 *
 * The trainer asks for "the batch of samples idx[0..N)" with eng_loader_next(). When idx
 * points into the shuffled permutation the loader was given, the loader then prepares the
 * next two batches of that permutation (idx + N, idx + 2N) in the background: their indices
 * are copied when they are scheduled, so the thread never reads the permutation, which the
 * runner reshuffles between epochs. When the runner reshuffles through eng_loader_shuffle,
 * the loader also knows the next epoch's permutation (eng_dataset_shuffle of the same seed
 * and stage, epoch + 1; computed in the background), so the last batches of an epoch
 * prefetch the first ones of the next across the epoch boundary. A request that was not
 * prepared (the first batch of a stage, or any other index list) is assembled on the
 * calling thread. Assembling a batch is
 * a pure function of (dataset, seed, indices), so results do not depend on timing:
 * gather, bytes -> floats with per-channel normalisation, then augmentation (flip,
 * pad-and-crop) seeded by the job seed and the batch's indices. Memory: two batches.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

typedef struct eng_loader eng_loader;

/* Creates a loader for the training split of `d` (borrowed; outlives the loader) with
 * batches of at most max_batch samples. `perm` (borrowed, [d->n_train]) is the array the
 * runner shuffles (with eng_loader_shuffle for prefetching across epochs); batches inside it
 * are prefetched. Starts the thread. On success *out is
 * the caller's, free with eng_loader_destroy(). Returns 0, ENG_ENOMEM (err set). */
int eng_loader_create(const eng_dataset *d, const uint32_t *perm, size_t max_batch, uint64_t seed,
                      eng_loader **out, eng_error *err);
/* Stops and joins the thread, frees the buffers. NULL is a no-op. */
void eng_loader_destroy(eng_loader *l);

/* Fills `perm` (the array given to eng_loader_create) with eng_dataset_shuffle(perm,
 * n_train, seed, stage, epoch), copying it from the loader's prediction when it made one,
 * and predicts (stage, epoch + 1) next. Same thread as eng_loader_next. */
void eng_loader_shuffle(eng_loader *l, uint32_t *perm, uint64_t seed, size_t stage, uint32_t epoch);

/* Writes the N training samples idx[0..N) (N <= max_batch) as floats into x [N x in_size]
 * and their labels into y [N], then schedules the following batches. Not thread-safe: one
 * caller (the trainer's thread). */
void eng_loader_next(eng_loader *l, const uint32_t *idx, size_t N, float *x, int32_t *y);

/* Assembles one batch on the calling thread (what the background thread does). */
void eng_loader_fill(const eng_dataset *d, uint64_t seed, const uint32_t *idx, size_t N, float *x,
                     int32_t *y);

/* Batches assembled in the background and handed out, and batches assembled on the
 * caller's thread (for tests and the benchmark). */
void eng_loader_stats(eng_loader *l, uint64_t *prefetched, uint64_t *synchronous);

/* augment.c: in-place augmentation of one C x H x W image: a horizontal flip with
 * probability 1/2 when `flip`, then zero-padding by `pad` pixels on each side and a random
 * H x W crop (offsets uniform in 0..2*pad). `scratch` holds C*H*W floats. Uses `r`. */
struct eng_rng;
void eng_augment_image(float *x, size_t C, size_t H, size_t W, bool flip, uint32_t pad,
                       struct eng_rng *r, float *scratch);
