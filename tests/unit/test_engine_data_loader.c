/*
 * test_engine_data_loader.c: the background batch loader hands out exactly the batches that
 * a synchronous assembly gives (bytes -> normalised floats, augmentation seeded by the
 * batch), prefetches within the permutation and, reshuffled through eng_loader_shuffle,
 * across epoch boundaries; survives reshuffles; augmentation keeps labels and shapes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loader.h"
#include "rng.h"
#include "tap.h"

#define N  40
#define C  3
#define H  5
#define W  6
#define IN (C * H * W)

static void make(eng_dataset *d, bool aug)
{
    memset(d, 0, sizeof *d);
    d->n_train = N;
    d->in_ndim = 3;
    d->in_shape[0] = C;
    d->in_shape[1] = H;
    d->in_shape[2] = W;
    d->in_size = IN;
    d->n_classes = 4;
    d->u8_train = malloc(N * IN);
    d->y_train = malloc(N * sizeof(int32_t));
    for (size_t i = 0; i < N * IN; i++)
        d->u8_train[i] = (uint8_t)(i * 31 + 7);
    for (size_t i = 0; i < N; i++)
        d->y_train[i] = (int32_t)(i % 4);
    d->norm_n = C;
    for (int c = 0; c < C; c++) {
        d->norm_mean[c] = 0.1f * (float)c;
        d->norm_std[c] = 0.5f + 0.1f * (float)c;
    }
    d->aug_flip = aug;
    d->aug_pad = aug ? 2 : 0;
}

static void test_augment(void)
{
    float x[IN], orig[IN], scratch[IN];
    for (int i = 0; i < IN; i++)
        orig[i] = (float)(i + 1);
    eng_rng r;
    eng_rng_seed(&r, 1, 2);
    int flipped = 0, same = 0;
    for (int t = 0; t < 20; t++) {
        memcpy(x, orig, sizeof x);
        eng_augment_image(x, C, H, W, true, 0, &r, scratch);
        bool is_same = memcmp(x, orig, sizeof x) == 0;
        bool is_flip = true;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int k = 0; k < W; k++)
                    is_flip &= x[(c * H + y) * W + k] == orig[(c * H + y) * W + (W - 1 - k)];
        same += is_same;
        flipped += is_flip;
    }
    ok(same + flipped == 20 && same > 0 && flipped > 0, "flip mirrors rows or keeps them (%d/%d)",
       flipped, same);
    bool shifted_ok = true;
    for (int t = 0; t < 20; t++) {
        memcpy(x, orig, sizeof x);
        eng_augment_image(x, C, H, W, false, 2, &r, scratch);
        /* every value is 0 (padding) or an original value from the same channel */
        for (int c = 0; c < C; c++)
            for (int k = 0; k < H * W; k++) {
                float v = x[c * H * W + k];
                shifted_ok &=
                    v == 0.0f || (v >= (float)(c * H * W + 1) && v <= (float)((c + 1) * H * W));
            }
    }
    ok(shifted_ok, "pad-and-crop keeps the shape and each channel's values");
}

static void test_loader(bool aug)
{
    eng_dataset d;
    make(&d, aug);
    uint32_t perm[N];
    eng_loader *l = NULL;
    eng_error err = {{0}, {0}};
    ok(eng_loader_create(&d, perm, 8, 42, &l, &err) == 0, "loader starts");
    float x[8 * IN], want[8 * IN];
    int32_t y[8], wy[8];
    bool same = true, labels = true, finite = true;
    for (uint32_t epoch = 0; epoch < 3; epoch++) {
        eng_dataset_shuffle(perm, N, 7, 0, epoch);
        for (size_t b = 0; b + 8 <= N; b += 8) {
            eng_loader_next(l, perm + b, 8, x, y);
            eng_loader_fill(&d, 42, perm + b, 8, want, wy);
            same &= memcmp(x, want, sizeof x) == 0 && memcmp(y, wy, sizeof y) == 0;
            for (int n = 0; n < 8; n++)
                labels &= y[n] == d.y_train[perm[b + n]];
            for (int i = 0; i < 8 * IN; i++)
                finite &= isfinite(x[i]);
        }
    }
    ok(same, "%s: prefetched batches equal synchronous ones", aug ? "augmented" : "plain");
    ok(labels, "labels follow their samples");
    ok(finite, "values finite");
    uint64_t pre = 0, sync = 0;
    eng_loader_stats(l, &pre, &sync);
    ok(pre == 12 && sync == 3,
       "after the first batch of each epoch, batches come prefetched "
       "(%llu prefetched, %llu on the caller)",
       (unsigned long long)pre, (unsigned long long)sync);
    if (!aug) {
        /* sample 0, channel 1, pixel 0: (byte / 255 - mean) / std */
        uint32_t one = 3;
        eng_loader_fill(&d, 42, &one, 1, x, y);
        float v = ((float)d.u8_train[3 * IN + H * W] / 255.0f - 0.1f) / 0.6f;
        is_near(x[H * W], v, 1e-5, "per-channel normalisation");
    }
    /* an index list outside the permutation is assembled on the caller */
    uint32_t other[3] = {5, 1, 9};
    eng_loader_next(l, other, 3, x, y);
    ok(y[0] == 1 && y[1] == 1 && y[2] == 1, "ad-hoc batch labels");
    eng_loader_destroy(l);
    free(d.u8_train);
    free(d.y_train);
}

/* Reshuffling through the loader: batches past an epoch's end come from the next epoch's
 * permutation, prefetched, and equal synchronous ones; a new stage (mispredicted) and an
 * epoch of one batch still give exact batches. */
static void test_epochs(bool aug, size_t B)
{
    eng_dataset d;
    make(&d, aug);
    uint32_t perm[N], want_perm[N];
    eng_loader *l = NULL;
    eng_error err = {{0}, {0}};
    ok(eng_loader_create(&d, perm, B, 42, &l, &err) == 0, "loader starts (batch %zu)", B);
    float x[N * IN], want[N * IN];
    int32_t y[N], wy[N];
    bool same = true, perms = true;
    size_t nb = N / B, batches = 0;
    /* stage 0: 4 epochs; stage 1: 2 epochs (its first batch is not predicted) */
    for (size_t stage = 0; stage < 2; stage++)
        for (uint32_t epoch = 0; epoch < (stage ? 2u : 4u); epoch++) {
            eng_loader_shuffle(l, perm, 7, stage, epoch);
            eng_dataset_shuffle(want_perm, N, 7, stage, epoch);
            perms &= memcmp(perm, want_perm, sizeof perm) == 0;
            for (size_t b = 0; b < nb; b++) {
                eng_loader_next(l, perm + b * B, B, x, y);
                eng_loader_fill(&d, 42, perm + b * B, B, want, wy);
                same &= memcmp(x, want, B * IN * sizeof(float)) == 0 &&
                        memcmp(y, wy, B * sizeof(int32_t)) == 0;
                batches++;
            }
        }
    ok(perms, "batch %zu: eng_loader_shuffle gives eng_dataset_shuffle's permutations", B);
    ok(same, "batch %zu, %s: batches across epoch boundaries equal synchronous ones", B,
       aug ? "augmented" : "plain");
    uint64_t pre = 0, sync = 0;
    eng_loader_stats(l, &pre, &sync);
    ok(sync == 2 && pre == batches - 2,
       "batch %zu: only the first batch of each stage is assembled on the caller "
       "(%llu prefetched, %llu on the caller)",
       B, (unsigned long long)pre, (unsigned long long)sync);
    eng_loader_destroy(l);
    free(d.u8_train);
    free(d.y_train);
}

int main(void)
{
    test_augment();
    test_loader(false);
    test_loader(true);
    test_epochs(false, 8);
    test_epochs(true, 8);
    test_epochs(true, 16);  /* 2 full batches of 40: the tail is dropped */
    test_epochs(false, 40); /* one batch per epoch */
    return done_testing();
}
