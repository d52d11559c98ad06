/*
 * data_read.h: private to engine/. The readers of registered datasets (IDX directories,
 * CIFAR-10/100 binary, CSV, image folders) produce an eng_rawdata: the training and test
 * splits as bytes (images) or floats (CSV) with int32 labels, plus the class names.
 * data_load.c turns it into an eng_dataset (subset, limit, split, normalisation).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

typedef struct eng_split {
    size_t n;
    uint8_t *u8; /* owned [n x in_size], byte data; or NULL */
    float *f32;  /* owned [n x in_size], CSV features; or NULL */
    int32_t *y;  /* owned [n], labels 0..n_classes-1 */
} eng_split;

typedef struct eng_rawdata {
    size_t C, H, W, in_size; /* one sample; CSV: C = 1, H = 1, W = features */
    size_t n_classes;
    char (*names)[ENG_CLASS_NAME_MAX]; /* owned [n_classes] */
    bool is_float;                     /* CSV: splits hold f32, else u8 */
    eng_split split[2];                /* 0 = train, 1 = test (n may be 0) */
} eng_rawdata;

void eng_rawdata_fini(eng_rawdata *r);
/* Allocates names for n classes, filled "0", "1", ...; 0 or ENG_ENOMEM. */
int eng_rawdata_default_names(eng_rawdata *r, size_t n, eng_error *err);
/* Allocates split i for n samples of r->in_size (bytes or floats per r->is_float). */
int eng_rawdata_alloc_split(eng_rawdata *r, int i, size_t n, eng_error *err);

/* How a reader is asked to stop early (eng_dataset_inspect_stoppable). NULL, or fn NULL:
 * never. */
typedef struct eng_stopper {
    eng_stop_fn fn;
    void *user;
} eng_stopper;
/* Asks st: 0 to go on, or ENG_ECANCELED with err saying the read was stopped. */
int eng_stop_check(const eng_stopper *st, eng_error *err);

/* Readers: fill *out from the files in `dir`, asking `st` (may be NULL) between files (and
 * images, and blocks of CSV lines). 0, or ENG_EIO / ENG_EFORMAT / ENG_ENOMEM with err->text
 * naming the file and the problem, or ENG_ECANCELED when st stopped it; *out is finied on
 * failure. */
int eng_read_idx_dir(const char *dir, const eng_stopper *st, eng_rawdata *out, eng_error *err);
int eng_read_cifar(const char *dir, bool hundred, const eng_stopper *st, eng_rawdata *out,
                   eng_error *err);
int eng_read_csv(const char *dir, const eng_stopper *st, eng_rawdata *out, eng_error *err);
/* Image folders, decoded to H x W x C (0 = decide from the first image / any colour) via the
 * cache file <dir>/.cache-<H>x<W>x<C>.bin, which is written on first use (not when stopped). */
int eng_read_images(const char *dir, uint32_t H, uint32_t W, uint32_t C, const eng_stopper *st,
                    eng_rawdata *out, eng_error *err);

/* Dispatches on s->kind to the readers above. */
int eng_rawdata_read(const eng_data_spec *s, const eng_stopper *st, eng_rawdata *out,
                     eng_error *err);

/* Sorted names of the entries of `dir` (no "." / ".." / hidden), kind filter: 'd' dirs,
 * 'f' regular files. Caller frees with eng_names_free. 0, ENG_EIO or ENG_ENOMEM. */
int eng_list_dir(const char *dir, char kind, char ***names, size_t *n, eng_error *err);
void eng_names_free(char **names, size_t n);

/* buf = a "/" b; false (buf empty) when it does not fit in size bytes. */
bool eng_path_join(char *buf, size_t size, const char *a, const char *b);
