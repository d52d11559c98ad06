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
    size_t max_batch; /* largest forward batch: the training batch, or more for validation */
    eng_arena arena;
    float **act;        /* [n_layers + 1] activation buffers [max_batch x size] */
    float *grad_buf[2]; /* ping-pong input-gradient buffers */
    int32_t *labels;    /* [max_batch] (arena floats reused as int32) */
    float *epi_buf;     /* the conv + BN + ReLU epilogues' arrays (eng_bn_relu_epilogue) */
    uint32_t *perm;     /* [n_train] */
    eng_rng rng;        /* dropout stream */
    eng_smooth smooth;
    struct eng_loader *loader; /* owned: assembles training batches (engine/loader.h) */
    /* fastai GradientClip: when clip, the trainable gradients' global norm of type
     * clip_norm_type (INFINITY: max |g|) is clipped to clip_max_norm before each update. */
    bool clip;
    float clip_max_norm, clip_norm_type;
    /* Optional profile (NULL: none; thawd-bench --layers sets it): seconds of wall time added
     * up per layer, forward at [2i] and backward at [2i + 1], the optimizer step at
     * [2 * n_layers]. A fused step (BatchNorm + ReLU; a conv with its BatchNorm + ReLU in eval
     * mode) counts under its first layer. Two clock reads per layer and pass. */
    double *layer_s;
} eng_trainer;

/* Sizes and allocates the arena for training batches up to max_batch (and validation
 * batches up to 256 samples while the arena stays under 64 MiB). Returns 0 or ENG_ENOMEM. */
int eng_trainer_init(eng_trainer *t, eng_model *m, eng_dataset *d, const eng_opt_spec *opt,
                     size_t max_batch, uint64_t seed, eng_error *err);
void eng_trainer_fini(eng_trainer *t);

/* Shuffles t->perm for (seed, stage, epoch) as eng_dataset_shuffle does, through the loader
 * so that it can prefetch the next epoch's first batches (engine/loader.h). */
void eng_trainer_shuffle(eng_trainer *t, uint64_t seed, size_t stage, uint32_t epoch);

/* One training step on the training samples idx[0..N): forward (train mode), loss,
 * backward down to the lowest trainable layer, optimizer update. Returns the batch loss. */
float eng_trainer_step(eng_trainer *t, const uint32_t *idx, size_t N);

/* Forward of N samples starting at x; returns the logits. Outputs a backward pass can read
 * (train mode, from the lowest trainable layer up) go to t->act; the others, and all of
 * them in eval mode, to t->grad_buf in turn, so only the logits are valid after an eval
 * forward. */
const float *eng_trainer_forward(eng_trainer *t, const float *x, size_t N, bool train);

/* Asked before each validation batch (batch of n_batches); true stops the validation. */
typedef bool (*eng_valid_poll_fn)(void *user, size_t batch, size_t n_batches);

/* Mean loss, accuracy and the n_ms metrics `ms` (into vals[n_ms]) over the validation split
 * (sample-weighted, as fastai's AvgLoss/AvgMetric); all NaN when the split is empty.
 * `poll` (may be NULL; `user` is passed to it) is asked before each batch. Returns 0, or
 * ENG_EINTERRUPTED when poll stopped it, with loss, accuracy and vals left untouched. */
int eng_trainer_validate(eng_trainer *t, const eng_metric *ms, size_t n_ms, eng_valid_poll_fn poll,
                         void *user, float *loss, float *accuracy, float *vals);

/* torch.nn.utils.clip_grad_norm_ over the n tensors of m that are trainable: total norm of
 * type p (INFINITY allowed); when it exceeds max_norm... every gradient is multiplied by
 * min(1, max_norm / (norm + 1e-6)). Returns the total norm before clipping. */
double eng_clip_grad_norm(eng_model *m, float max_norm, float p);

/* Number of classes whose logit is strictly greater than the target's: the target is in
 * the top k (fastai top_k_accuracy, torch.topk) iff this is < k. */
size_t eng_rank_of_target(const float *logits, size_t C, int32_t y);
