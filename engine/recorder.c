/*
 * recorder.c: the job's training history (fastai Recorder), grown geometrically.
 */
#include "recorder.h"

#include <stdlib.h>
#include <string.h>

void eng_recorder_init(eng_recorder *r, size_t n_metrics)
{
    memset(r, 0, sizeof(*r));
    r->n_cols = 3 + n_metrics;
}

void eng_recorder_fini(eng_recorder *r)
{
    free(r->batch);
    free(r->epoch);
    memset(r, 0, sizeof(*r));
}

/* Makes room for `need` rows of `cols` floats in *buf (capacity *cap rows). */
static int grow(float **buf, size_t *cap, size_t need, size_t cols)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    float *b = realloc(*buf, n * cols * sizeof(float));
    if (!b)
        return ENG_ENOMEM;
    *buf = b;
    *cap = n;
    return 0;
}

int eng_recorder_add_batch(eng_recorder *r, float smooth_loss, float lr, float mom)
{
    if (grow(&r->batch, &r->cap_batch, r->n_batch + 1, 3))
        return ENG_ENOMEM;
    float *row = r->batch + r->n_batch * 3;
    row[0] = smooth_loss;
    row[1] = lr;
    row[2] = mom;
    r->n_batch++;
    return 0;
}

int eng_recorder_add_epoch(eng_recorder *r, const float *row)
{
    if (grow(&r->epoch, &r->cap_epoch, r->n_epoch + 1, r->n_cols))
        return ENG_ENOMEM;
    memcpy(r->epoch + r->n_epoch * r->n_cols, row, r->n_cols * sizeof(float));
    r->n_epoch++;
    return 0;
}

int eng_recorder_set(eng_recorder *r, const float *batch, size_t n_batch, const float *epoch,
                     size_t n_epoch)
{
    if (grow(&r->batch, &r->cap_batch, n_batch, 3) ||
        grow(&r->epoch, &r->cap_epoch, n_epoch, r->n_cols))
        return ENG_ENOMEM;
    if (n_batch)
        memcpy(r->batch, batch, n_batch * 3 * sizeof(float));
    if (n_epoch)
        memcpy(r->epoch, epoch, n_epoch * r->n_cols * sizeof(float));
    r->n_batch = n_batch;
    r->n_epoch = n_epoch;
    return 0;
}
