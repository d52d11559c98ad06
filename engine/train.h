/*
 * train.h: the trainer: one model, its data, optimizer hypers, the activation arena and
 * the dropout RNG stream; the step loop (forward, loss, backward, update), validation, and
 * fastai's smoothed loss.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "dataset.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

/* fastai AvgSmoothLoss (beta 0.98): val = beta*val + (1-beta)*loss, value val/(1-beta^t). */
typedef struct eng_smooth {
    double val;
    uint32_t count;
} eng_smooth;

void eng_smooth_reset(eng_smooth *s);
/* Adds a batch loss and returns the debiased value. */
float eng_smooth_add(eng_smooth *s, float loss);

typedef struct eng_trainer {
    eng_model *model;  /* borrowed */
    eng_dataset *data; /* borrowed */
    eng_optim opt;
    size_t max_batch;
    eng_arena arena;
    float **act;        /* [n_layers + 1] activation buffers [max_batch x size] */
    float *grad_buf[2]; /* ping-pong input-gradient buffers */
    int32_t *labels;    /* [max_batch] (arena floats reused as int32) */
    uint32_t *perm;     /* [n_train] */
    eng_rng rng;        /* dropout stream */
    eng_smooth smooth;
    struct eng_loader *loader; /* owned: assembles training batches (engine/loader.h) */
} eng_trainer;

/* Sizes and allocates the arena for batches up to max_batch. Returns 0 or ENG_ENOMEM. */
int eng_trainer_init(eng_trainer *t, eng_model *m, eng_dataset *d, const eng_opt_spec *opt,
                     size_t max_batch, uint64_t seed, eng_error *err);
void eng_trainer_fini(eng_trainer *t);

/* One training step on the training samples idx[0..N): forward (train mode), loss,
 * backward down to the lowest trainable layer, optimizer update. Returns the batch loss. */
float eng_trainer_step(eng_trainer *t, const uint32_t *idx, size_t N);

/* Forward of N samples starting at x (eval mode) into t->act; returns the logits. */
const float *eng_trainer_forward(eng_trainer *t, const float *x, size_t N, bool train);

/* Mean loss and accuracy over the validation split (sample-weighted); NaN when empty. */
void eng_trainer_validate(eng_trainer *t, float *loss, float *accuracy);
