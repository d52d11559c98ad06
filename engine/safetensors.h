/*
 * safetensors.h: reading and writing F32 (and I64, see below) safetensors files (8-byte
 * little-endian header length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
 * {str: str}}, then the raw little-endian data), and model weights under PyTorch state_dict names.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "model.h"

#define ENG_ST_MAX_DIMS 8

typedef struct eng_st_tensor {
    const char *name; /* borrowed */
    size_t ndim;
    size_t shape[ENG_ST_MAX_DIMS];
    const float *data; /* borrowed, product(shape) floats */
} eng_st_tensor;

typedef struct eng_st_kv {
    const char *key, *value; /* borrowed */
} eng_st_kv;

typedef struct eng_st_meta_kv {
    char *key, *value; /* owned by the file object */
} eng_st_meta_kv;

typedef struct eng_st_entry {
    char *name; /* owned by the file */
    char dtype[16];
    size_t ndim;
    size_t shape[ENG_ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data section */
} eng_st_entry;

typedef struct eng_st_file {
    unsigned char *buf; /* whole file */
    size_t len;
    size_t data_off; /* 8 + header length */
    size_t n;
    eng_st_entry *e;
    size_t n_meta;
    eng_st_meta_kv *meta;
} eng_st_file;

/* Writes the tensors and metadata to `path` atomically (temporary file in the same
 * directory, fsync, rename, fsync of the directory). Every tensor is F32 except one whose
 * name ends in "num_batches_tracked", which is written as I64 like PyTorch's (the float
 * values are rounded), so files load into torch with load_state_dict as they are. *size and sha256
 * (hex) describe the bytes written; either may be NULL. Returns 0, ENG_EIO or ENG_ENOMEM with err
 * set. */
int eng_st_write(const char *path, const eng_st_tensor *t, size_t n, const eng_st_kv *meta,
                 size_t n_meta, uint64_t *size, char sha256[65], eng_error *err);

/* Reads and validates a whole file: header length in bounds, a well-formed JSON header,
 * dtype F32 or I64 for every tensor, shape product * element size == byte length, offsets
 * inside the data section and not overlapping, metadata values strings. On success *out is
 * caller-owned (free with eng_st_close). Returns 0, ENG_EIO, ENG_EFORMAT or ENG_ENOMEM with err
 * set. */
int eng_st_read(const char *path, eng_st_file **out, eng_error *err);
void eng_st_close(eng_st_file *f);
/* Lookups; NULL when absent. */
const eng_st_entry *eng_st_find(const eng_st_file *f, const char *name);
const char *eng_st_meta(const eng_st_file *f, const char *key);
/* Copies the tensor's values (count floats, must equal its element count) into dst;
 * I64 values are converted to float (PyTorch's num_batches_tracked). */
int eng_st_copy(const eng_st_file *f, const eng_st_entry *e, float *dst, size_t count,
                eng_error *err);

/* Loads a model's parameter tensors from `path`. Strict: every tensor of the model must
 * be present with the same shape and no other tensor may be (a "__"-prefixed or "opt."
 * tensor is ignored). body_only: only the non-head groups are loaded; others are ignored.
 * Returns 0, ENG_EIO, ENG_EFORMAT, ENG_ESHAPE with err naming the tensor. */
int eng_st_load_model(const char *path, eng_model *m, bool body_only, eng_error *err);
