/*
 * dataset.h: training and validation data in memory as float inputs and int32 labels,
 * from synthetic Gaussian blobs or IDX files (MNIST family, raw or .gz), plus the
 * deterministic per-epoch shuffle.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

typedef struct eng_dataset {
    size_t n_train, n_valid;
    size_t in_ndim, in_shape[3], in_size; /* per sample: (F) or (C, H, W) */
    size_t n_classes;
    float *x_train, *x_valid;   /* owned: [n x in_size] */
    int32_t *y_train, *y_valid; /* owned: [n] */
    float mean, std;            /* the normalisation applied */
    /* Registered byte datasets keep the training split compact: x_train is NULL and
     * u8_train [n_train x in_size] holds raw bytes that the loader scales to [0, 1] and
     * normalises per channel ((x - norm_mean[c]) / norm_std[c], norm_n = 1 or C) for each
     * batch. x_valid is always floats, already normalised. */
    uint8_t *u8_train; /* owned, or NULL */
    size_t norm_n;
    float norm_mean[4], norm_std[4];
    bool aug_flip; /* training batches only */
    uint32_t aug_pad;
} eng_dataset;

/* Loads the data described by `s`. On success *out is caller-owned (free with
 * eng_dataset_destroy). Returns 0, ENG_EINVAL, ENG_EIO, ENG_EFORMAT or ENG_ENOMEM with err
 * set (err->field names the spec field, err->text the file and problem). */
int eng_dataset_load(const eng_data_spec *s, eng_dataset **out, eng_error *err);
/* eng_dataset_load that asks stop(user) (stop may be NULL: never) between the files it reads
 * and the images it decodes, and returns ENG_ECANCELED once it answers true. */
int eng_dataset_load_stoppable(const eng_data_spec *s, eng_stop_fn stop, void *user,
                               eng_dataset **out, eng_error *err);
void eng_dataset_destroy(eng_dataset *d);

/* Fills perm[0..n) with a permutation of 0..n-1 that depends only on (seed, stage, epoch),
 * so a resumed run sees the same order. */
void eng_dataset_shuffle(uint32_t *perm, size_t n, uint64_t seed, size_t stage, uint32_t epoch);

/* One IDX file of unsigned bytes (type 0x08). */
typedef struct eng_idx {
    uint32_t ndim;
    uint32_t dims[4];
    size_t count;  /* product of dims */
    uint8_t *data; /* owned: free with eng_idx_free */
} eng_idx;

/* Reads an IDX file (raw or gzip; zlib reads both), validating the magic (0, 0, 0x08,
 * ndim 1..4), the dimensions and that the file holds exactly the announced bytes.
 * Returns 0, ENG_EIO, ENG_EFORMAT or ENG_ENOMEM with err set. */
int eng_idx_read(const char *path, eng_idx *out, eng_error *err);
void eng_idx_free(eng_idx *x);

/* Loads a registered dataset (s->kind ENG_DATA_IDX_DIR and later) into `d` (zeroed by the
 * caller): class subset, per-class limit, validation split, normalisation, augmentation
 * flags, asking stop(user) (stop may be NULL) as eng_dataset_load_stoppable does. Returns 0
 * or an ENG_E* code with err set. data_load.c. */
int eng_dataset_load_registered(const eng_data_spec *s, eng_stop_fn stop, void *user,
                                eng_dataset *d, eng_error *err);
/* Checks the registered-dataset fields of a spec (no file access). */
int eng_data_spec_validate_dir(const eng_data_spec *d, eng_error *err);
