/*
 * recorder.h: fastai's Recorder for a whole job: per training batch the smoothed loss and
 * the head group's LR and momentum, per epoch the table row (train_loss, valid_loss, the
 * metrics, seconds). Kept so a resumable checkpoint carries the history.
 */
#pragma once

#include <stddef.h>

#include "engine.h"

typedef struct eng_recorder {
    size_t n_batch, cap_batch;
    float *batch;  /* owned: [n_batch x 3] smoothed loss, lr, mom */
    size_t n_cols; /* train_loss, valid_loss, metrics..., seconds */
    size_t n_epoch, cap_epoch;
    float *epoch; /* owned: [n_epoch x n_cols] */
} eng_recorder;

/* An empty recorder whose epoch rows have 3 + n_metrics columns. */
void eng_recorder_init(eng_recorder *r, size_t n_metrics);
void eng_recorder_fini(eng_recorder *r);
/* Appends a batch / an epoch row (n_cols values). Returns 0 or ENG_ENOMEM. Non-finite values
 * are kept as they are. */
int eng_recorder_add_batch(eng_recorder *r, float smooth_loss, float lr, float mom);
int eng_recorder_add_epoch(eng_recorder *r, const float *row);
/* Replaces the history with n_batch rows of 3 and n_epoch rows of n_cols (a checkpoint's).
 * Returns 0 or ENG_ENOMEM. */
int eng_recorder_set(eng_recorder *r, const float *batch, size_t n_batch, const float *epoch,
                     size_t n_epoch);
