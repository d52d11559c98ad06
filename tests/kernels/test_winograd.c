/*
 * test_winograd.c: Winograd F(2x2, 3x3) (engine/winograd.h) against the naive direct
 * convolution of im2col.h: forward, the input-gradient form (transposed, rotated weights),
 * the weight gradient (summed over images and chunks), accumulation, odd and even image sizes
 * (partial edge tiles), one- and multi-image chunks.
 * Prints TAP.
 */
#include <stdlib.h>
#include <string.h>

#include "im2col.h"
#include "refs.h"
#include "tap.h"
#include "winograd.h"

static void check_t(test_rng *r, size_t t, size_t N, size_t IC, size_t OC, size_t H, size_t W,
                    size_t nb)
{
    eng_conv2d_geom g;
    eng_conv2d_geom_init(&g, IC, H, W, OC, 3, 3, 1, 1, 1, 1);
    ok(eng_wino_applies(&g), "3x3 s1 p1 applies");
    size_t in = N * IC * H * W, out = N * OC * H * W;
    float *x = test_alloc(in), *w = test_alloc(OC * IC * 9), *y = test_alloc(out);
    float *y_ref = test_alloc(out), *dy = test_alloc(out), *dx = test_alloc(in);
    float *dx_ref = test_alloc(in), *U = test_alloc(eng_wino_npos(t) * OC * IC);
    float *U_ref = test_alloc(eng_wino_npos(t) * OC * IC);
    size_t big = IC > OC ? IC : OC;
    float *s = test_alloc(eng_wino_wgrad_scratch_floats_t(t, big, big, H, W, nb));
    float *dw = test_alloc(OC * IC * 9), *dw_ref = test_alloc(OC * IC * 9);
    test_fill(r, x, in, -1, 1);
    test_fill(r, w, OC * IC * 9, -0.5f, 0.5f);
    test_fill(r, dy, out, -1, 1);
    eng_conv2d_ref_forward(&g, N, x, w, NULL, y_ref);
    eng_wino_weights_t(t, OC, IC, w, false, U);
    eng_wino_weights_naive_t(t, OC, IC, w, false, U_ref);
    ok(memcmp(U, U_ref, eng_wino_npos(t) * OC * IC * sizeof(float)) == 0, "F(%zu) weights as naive",
       t);
    eng_wino_conv_t(t, IC, OC, H, W, N, x, U, y, false, s, nb);
    CLOSE(y, y_ref, out, 1e-10, "F(%zu) forward N=%zu %zu->%zu %zux%zu nb=%zu", t, N, IC, OC, H, W,
          nb);
    /* accumulate adds onto what is there */
    for (size_t i = 0; i < out; i++)
        y_ref[i] *= 2.0f;
    eng_wino_conv_t(t, IC, OC, H, W, N, x, U, y, true, s, nb);
    CLOSE(y, y_ref, out, 1e-10, "forward accumulate");
    eng_conv2d_ref_backward_input(&g, N, dy, w, dx_ref);
    eng_wino_weights_t(t, OC, IC, w, true, U);
    eng_wino_weights_naive_t(t, OC, IC, w, true, U_ref);
    ok(memcmp(U, U_ref, eng_wino_npos(t) * OC * IC * sizeof(float)) == 0,
       "F(%zu) transposed weights as naive", t);
    eng_wino_conv_t(t, OC, IC, H, W, N, dy, U, dx, false, s, nb);
    CLOSE(dx, dx_ref, in, 1e-10, "F(%zu) input gradient N=%zu %zu->%zu %zux%zu", t, N, IC, OC, H,
          W);
    /* weight gradient over all images and chunks; then accumulated onto a previous value */
    eng_conv2d_ref_backward_weight(&g, N, x, dy, dw_ref, NULL);
    test_fill(r, dw, OC * IC * 9, -9, 9); /* overwritten */
    eng_wino_wgrad_t(t, IC, OC, H, W, N, x, dy, dw, false, s, nb);
    CLOSE(dw, dw_ref, OC * IC * 9, 1e-10, "F(%zu) weight gradient N=%zu %zu->%zu %zux%zu nb=%zu", t,
          N, IC, OC, H, W, nb);
    for (size_t i = 0; i < OC * IC * 9; i++)
        dw_ref[i] *= 2.0f;
    eng_wino_wgrad_t(t, IC, OC, H, W, N, x, dy, dw, true, s, nb);
    CLOSE(dw, dw_ref, OC * IC * 9, 1e-10, "weight gradient accumulate");
    /* the finish of the weight gradient against its one-kernel reference, bit for bit (U as
     * transformed sums; once overwriting, once accumulating) */
    for (int acc = 0; acc < 2; acc++) {
        memcpy(dw_ref, dw, OC * IC * 9 * sizeof(float));
        eng_wino_wgrad_finish_t(t, IC, OC, U, dw, acc);
        eng_wino_wgrad_finish_naive_t(t, IC, OC, U, dw_ref, acc);
        ok(memcmp(dw, dw_ref, OC * IC * 9 * sizeof(float)) == 0,
           "F(%zu) weight gradient finish%s as naive", t, acc ? " accumulating" : "");
    }
    free(x), free(w), free(y), free(y_ref), free(dy), free(dx), free(dx_ref), free(U), free(s);
    free(U_ref);
    free(dw), free(dw_ref);
}

/* Both variants on the same shapes. */
static void check(test_rng *r, size_t N, size_t IC, size_t OC, size_t H, size_t W, size_t nb)
{
    check_t(r, 2, N, IC, OC, H, W, nb);
    check_t(r, 4, N, IC, OC, H, W, nb);
}

int main(void)
{
    test_rng r = {0x3a3a3a3aull};
    eng_conv2d_geom g;
    eng_conv2d_geom_init(&g, 2, 8, 8, 2, 3, 3, 2, 2, 1, 1);
    ok(!eng_wino_applies(&g), "stride 2 does not apply");
    eng_conv2d_geom_init(&g, 2, 8, 8, 2, 3, 3, 1, 1, 0, 0);
    ok(!eng_wino_applies(&g), "padding 0 does not apply");
    is_int(eng_wino_tiles(7, 8), 16, "7x8 image: 4x4 tiles");
    is_int(eng_wino_chunk(32, 32, 28, 28, 100), ENG_WINO_CHUNK_FLOATS / 200704,
           "32 channels 28x28: chunks of whole images of 200704 floats");
    is_int(eng_wino_chunk(8, 8, 14, 14, 100), ENG_WINO_CHUNK_FLOATS / 12544,
           "8 channels 14x14: chunks of whole images of 12544 floats");
    is_int(eng_wino_chunk_t(4, 64, 64, 14, 14, 128), ENG_WINO_CHUNK_FLOATS / 73728,
           "F(4x4), 64 channels 14x14: chunks of whole images of 73728 floats");
    is_int(eng_wino_chunk(8, 8, 14, 14, 2), 2, "chunk never above the batch");
    is_int(eng_wino_chunk(512, 512, 64, 64, 5), 1, "at least one image");
    check(&r, 3, 4, 5, 8, 8, 1);
    check(&r, 3, 4, 5, 8, 8, 2); /* last chunk shorter */
    check(&r, 2, 3, 6, 7, 9, 2); /* odd sizes: partial edge tiles */
    check(&r, 1, 1, 1, 1, 1, 1); /* a single pixel */
    check(&r, 4, 16, 8, 14, 14, 3);
    check(&r, 5, 7, 3, 5, 6, 2);  /* odd rows, even columns; 3 chunks */
    check(&r, 3, 9, 10, 6, 3, 4); /* chunk larger than the batch */
    check(&r, 2, 32, 32, 28, 28, 1);
    check(&r, 3, 64, 64, 14, 14, 2); /* M1's group2: F(4x4) with partial edge tiles */
    check(&r, 2, 5, 4, 10, 11, 1);   /* two, three columns of the last F(4x4) tiles */
    check(&r, 2, 3, 4, 9, 37, 1);    /* F(4x4) rows with two 4-tile blocks, then single tiles */
    check(&r, 2, 3, 2, 6, 32, 2);    /* one 4-tile block, the last tile's phases by the tail */
    check(&r, 3, 3, 4, 25, 26, 2);   /* F(4x4) weight gradient with partial edge tiles */
    is_int(eng_wino_pick(28, 28), 4, "28x28: F(4x4)");
    is_int(eng_wino_pick(14, 14), 4, "14x14: F(4x4) (576 products against 784)");
    is_int(eng_wino_pick(6, 6), 2, "6x6: F(2x2) (a tie)");
    is_int(eng_wino_pick(8, 8), 2, "8x8: F(2x2) (F(4x4)'s GEMMs too thin)");
    is_int(eng_wino_tiles_t(4, 14, 14), 16, "14x14: 4x4 tiles of 4x4");
    /* no images: the weight gradient is 0 (or unchanged when accumulating) */
    {
        float *s = test_alloc(eng_wino_wgrad_scratch_floats(2, 3, 4, 4, 1));
        float dw[3 * 2 * 9];
        for (size_t i = 0; i < 54; i++)
            dw[i] = 1.0f;
        eng_wino_wgrad(2, 3, 4, 4, 0, NULL, NULL, dw, true, s, 1);
        int same = 1;
        for (size_t i = 0; i < 54; i++)
            same &= dw[i] == 1.0f;
        ok(same, "N=0 accumulate leaves dw");
        eng_wino_wgrad(2, 3, 4, 4, 0, NULL, NULL, dw, false, s, 1);
        for (size_t i = 0; i < 54; i++)
            same &= dw[i] == 0.0f;
        ok(same, "N=0 writes zeros");
        free(s);
    }
    return done_testing();
}
