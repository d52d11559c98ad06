/*
 * augment.c: training-time augmentation of one normalised C x H x W image: horizontal flip
 * and pad-and-random-crop (zero padding, which is the channel mean after normalisation).
 * The label never changes and the shape stays C x H x W.
 */
#include <string.h>

#include "loader.h"
#include "rng.h"

void eng_augment_image(float *x, size_t C, size_t H, size_t W, bool flip, uint32_t pad, eng_rng *r,
                       float *scratch)
{
    if (flip && eng_rng_below(r, 2) == 1) {
        for (size_t c = 0; c < C; c++)
            for (size_t y = 0; y < H; y++) {
                float *row = x + (c * H + y) * W;
                for (size_t i = 0, j = W - 1; i < j; i++, j--) {
                    float t = row[i];
                    row[i] = row[j];
                    row[j] = t;
                }
            }
    }
    if (pad == 0)
        return;
    /* Output pixel (y, x) reads input (y + dy - pad, x + dx - pad), zero outside. */
    long dy = (long)eng_rng_below(r, 2 * (uint64_t)pad + 1) - (long)pad;
    long dx = (long)eng_rng_below(r, 2 * (uint64_t)pad + 1) - (long)pad;
    if (dy == 0 && dx == 0)
        return;
    memcpy(scratch, x, C * H * W * sizeof(float));
    for (size_t c = 0; c < C; c++)
        for (size_t y = 0; y < H; y++) {
            long sy = (long)y + dy;
            float *dst = x + (c * H + y) * W;
            if (sy < 0 || sy >= (long)H) {
                memset(dst, 0, W * sizeof(float));
                continue;
            }
            const float *src = scratch + (c * H + (size_t)sy) * W;
            for (size_t xx = 0; xx < W; xx++) {
                long sx = (long)xx + dx;
                dst[xx] = sx < 0 || sx >= (long)W ? 0.0f : src[sx];
            }
        }
}
