/*
 * test_conv_tap.c: the per-tap convolution (engine/conv_tap.h) against the naive direct
 * convolution of im2col.h: forward (with and without bias), input and weight gradients (each
 * alone and together, overwrite and accumulate), for resnet18's small-map geometries, strides
 * 1-3, odd sizes, kernels larger than the map, channel counts that need several weight
 * blocks per thread, on 1, 2, 3 and 8 compute threads (the split by channels, including more
 * threads than channels); the conv2d layer that dispatches to it
 * (batches of 1, 2 and more from one aux, frozen weights); and max pooling's vector paths on
 * ties, -inf and NaN against PyTorch's first-maximum rule. Prints TAP.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv_tap.h"
#include "im2col.h"
#include "kernels.h"
#include "layers.h"
#include "par.h"
#include "refs.h"
#include "tap.h"

static void check(test_rng *r, size_t N, size_t IC, size_t OC, size_t IH, size_t IW, size_t K,
                  size_t S, size_t P)
{
    eng_conv2d_geom g;
    if (eng_conv2d_geom_init(&g, IC, IH, IW, OC, K, K, S, S, P, P)) {
        ok(false, "geometry %zux%zu k%zu s%zu p%zu accepted", IH, IW, K, S, P);
        return;
    }
    const size_t in = N * IC * IH * IW, out = N * OC * g.OH * g.OW, nw = OC * IC * K * K;
    float *x = test_alloc(in), *w = test_alloc(nw), *b = test_alloc(OC), *y = test_alloc(out);
    float *y_ref = test_alloc(out), *dy = test_alloc(out), *dx = test_alloc(in);
    float *dx_ref = test_alloc(in), *pre = test_alloc(in);
    float *s = test_alloc(eng_convtap_scratch_floats(&g, N));
    test_fill(r, x, in, -1, 1);
    test_fill(r, w, nw, -0.5f, 0.5f);
    test_fill(r, b, OC, -1, 1);
    test_fill(r, dy, out, -1, 1);
    test_fill(r, pre, in, -1, 1);
    char name[96];
    snprintf(name, sizeof name, "N=%zu %zu->%zu %zux%zu k%zu s%zu p%zu T=%zu", N, IC, OC, IH, IW, K,
             S, P, eng_par_threads());

    test_fill(r, y, out, -9, 9); /* overwritten */
    eng_conv2d_ref_forward(&g, N, x, w, NULL, y_ref);
    eng_convtap_forward(&g, N, x, w, NULL, y, s);
    CLOSE(y, y_ref, out, 1e-10, "forward %s", name);
    eng_conv2d_ref_forward(&g, N, x, w, b, y_ref);
    eng_convtap_forward(&g, N, x, w, b, y, s);
    CLOSE(y, y_ref, out, 1e-10, "forward with bias %s", name);

    eng_conv2d_ref_backward_input(&g, N, dy, w, dx_ref);
    test_fill(r, dx, in, -9, 9); /* overwritten */
    eng_convtap_backward_input(&g, N, w, dy, dx, false, s);
    CLOSE(dx, dx_ref, in, 1e-10, "input gradient %s", name);
    memcpy(dx, pre, in * sizeof(float));
    eng_convtap_backward_input(&g, N, w, dy, dx, true, s);
    for (size_t i = 0; i < in; i++)
        dx[i] -= pre[i];
    CLOSE(dx, dx_ref, in, 1e-9, "input gradient accumulates %s", name);

    /* weight gradient alone, then both gradients in one call, then accumulating both */
    float *dw = test_alloc(nw), *dw_ref = test_alloc(nw), *dwpre = test_alloc(nw);
    eng_conv2d_ref_backward_weight(&g, N, x, dy, dw_ref, NULL);
    test_fill(r, dw, nw, -9, 9); /* overwritten */
    eng_convtap_backward(&g, N, x, w, dy, dw, false, NULL, false, s);
    CLOSE(dw, dw_ref, nw, 1e-10, "weight gradient %s", name);
    test_fill(r, dw, nw, -9, 9);
    test_fill(r, dx, in, -9, 9);
    eng_convtap_backward(&g, N, x, w, dy, dw, false, dx, false, s);
    CLOSE(dw, dw_ref, nw, 1e-10, "both: weight gradient %s", name);
    CLOSE(dx, dx_ref, in, 1e-10, "both: input gradient %s", name);
    test_fill(r, dwpre, nw, -1, 1);
    memcpy(dw, dwpre, nw * sizeof(float));
    memcpy(dx, pre, in * sizeof(float));
    eng_convtap_backward(&g, N, x, w, dy, dw, true, dx, true, s);
    for (size_t i = 0; i < nw; i++)
        dw[i] -= dwpre[i];
    for (size_t i = 0; i < in; i++)
        dx[i] -= pre[i];
    CLOSE(dw, dw_ref, nw, 1e-9, "both accumulate: weight gradient %s", name);
    CLOSE(dx, dx_ref, in, 1e-9, "both accumulate: input gradient %s", name);
    free(x), free(w), free(b), free(y), free(y_ref), free(dy), free(dx), free(dx_ref), free(pre);
    free(s), free(dw), free(dw_ref), free(dwpre);
}

static void check_all(test_rng *r)
{
    check(r, 4, 16, 24, 2, 2, 3, 1, 1); /* resnet18 layer4 3x3 on 2x2 */
    check(r, 3, 12, 8, 4, 4, 3, 1, 1);  /* layer3 3x3 on 4x4 */
    check(r, 5, 8, 16, 4, 4, 3, 2, 1);  /* layer4.0.conv1: stride 2, 4x4 -> 2x2 */
    check(r, 3, 8, 12, 8, 8, 3, 2, 1);  /* layer3.0.conv1: 8x8 -> 4x4 */
    check(r, 4, 8, 16, 4, 4, 1, 2, 0);  /* downsample 1x1 stride 2 (odd phases unread) */
    check(r, 2, 3, 5, 9, 7, 7, 2, 3);   /* a stem-like 7x7/2 on an odd map */
    check(r, 3, 5, 7, 5, 3, 3, 1, 1);   /* odd sizes, H != W */
    check(r, 2, 3, 4, 7, 5, 3, 3, 2);   /* stride 3, padding 2 */
    check(r, 2, 4, 3, 3, 3, 5, 1, 2);   /* kernel larger than the map */
    check(r, 1, 1, 1, 1, 1, 1, 1, 0);   /* one pixel, one channel */
    check(r, 3, 2, 2, 6, 6, 2, 2, 0);   /* even kernel */
    check(r, 2, 6, 5, 1, 1, 3, 1, 1);   /* 1x1 map, 3x3 kernel: only the centre tap */
    /* channels enough for several weight blocks per thread (32 channels each here), with a
     * partial last block: output channels (forward, weight gradient), input channels (input
     * gradient), stride 2 */
    check(r, 2, 40, 520, 2, 2, 3, 1, 1);
    check(r, 2, 520, 24, 2, 2, 3, 1, 1);
    check(r, 2, 36, 530, 4, 4, 3, 2, 1);
    /* four images and more: the transposes' 4x4 vectors and their tails, stride 1 (a plane of
     * 15 positions) and 2 (phase rows of 5 and 4); 128x128 weights, whose tap GEMMs are split
     * into 32 columns (48 on the centre tap) */
    check(r, 6, 5, 7, 5, 3, 3, 1, 1);
    check(r, 5, 6, 8, 9, 10, 3, 2, 1);
    check(r, 3, 128, 128, 4, 4, 3, 1, 1);
}

/* The conv2d layer (layers.h) on small outputs, where it dispatches to conv_tap for N >= 2:
 * aux sized for Nmax, then batches of Nmax and of 1 (im2col) and 2 from the same aux; forward,
 * all gradients, and the frozen weight (dw untouched, dx still right). */
static void check_layer(test_rng *r, size_t Nmax, size_t IC, size_t OC, size_t H, size_t S)
{
    eng_layer l;
    memset(&l, 0, sizeof l);
    l.ops = &eng_layer_conv2d;
    l.cfg.conv.IC = IC;
    l.cfg.conv.OC = OC;
    l.cfg.conv.KH = l.cfg.conv.KW = 3;
    l.cfg.conv.stride = S;
    l.cfg.conv.pad = 1;
    l.cfg.conv.bias = true;
    l.in_ndim = 3;
    l.in_shape[0] = IC;
    l.in_shape[1] = l.in_shape[2] = H;
    l.in_size = IC * H * H;
    eng_error err;
    if (!ok(l.ops->setup(&l, &err) == 0, "layer %zu->%zu %zux%zu s%zu: setup", IC, OC, H, H, S))
        return;
    eng_conv2d_geom g;
    eng_conv2d_geom_init(&g, IC, H, H, OC, 3, 3, S, S, 1, 1);
    const size_t nw = OC * IC * 9, in = Nmax * l.in_size, out = Nmax * l.out_size;
    float *w = test_alloc(nw), *b = test_alloc(OC), *dw = test_alloc(nw), *db = test_alloc(OC);
    float *x = test_alloc(in), *y = test_alloc(out), *dy = test_alloc(out), *dx = test_alloc(in);
    float *y_ref = test_alloc(out), *dx_ref = test_alloc(in), *dw_ref = test_alloc(nw);
    float *db_ref = test_alloc(OC), *aux = test_alloc(l.ops->aux_size(&l, Nmax));
    test_fill(r, w, nw, -0.5f, 0.5f);
    test_fill(r, b, OC, -1, 1);
    test_fill(r, x, in, -1, 1);
    test_fill(r, dy, out, -1, 1);
    l.param[0] = w, l.param[1] = b, l.grad[0] = dw, l.grad[1] = db, l.aux = aux;
    const size_t Ns[3] = {Nmax, 1, 2};
    for (size_t k = 0; k < 3; k++) {
        const size_t N = Ns[k];
        for (int frozen = 0; frozen < 2; frozen++) {
            l.trainable[0] = l.trainable[1] = !frozen;
            eng_conv2d_ref_forward(&g, N, x, w, b, y_ref);
            eng_conv2d_ref_backward_input(&g, N, dy, w, dx_ref);
            eng_conv2d_ref_backward_weight(&g, N, x, dy, dw_ref, db_ref);
            test_fill(r, y, out, -9, 9);
            test_fill(r, dx, in, -9, 9);
            for (size_t i = 0; i < nw; i++)
                dw[i] = 7.0f;
            l.ops->forward(&l, &(eng_fwd_args){.N = N, .x = x, .y = y, .train = true});
            l.ops->backward(&l, &(eng_bwd_args){.N = N, .x = x, .y = y, .dy = dy, .dx = dx});
            CLOSE(y, y_ref, N * l.out_size, 1e-10, "layer %zu->%zu %zux%zu s%zu N=%zu: forward", IC,
                  OC, H, H, S, N);
            CLOSE(dx, dx_ref, N * l.in_size, 1e-10, "layer N=%zu frozen=%d: input gradient", N,
                  frozen);
            if (frozen) {
                bool same = true;
                for (size_t i = 0; i < nw; i++)
                    same &= dw[i] == 7.0f;
                ok(same, "layer N=%zu frozen: weight gradient untouched", N);
            } else {
                CLOSE(dw, dw_ref, nw, 1e-10, "layer N=%zu: weight gradient", N);
                CLOSE(db, db_ref, OC, 1e-10, "layer N=%zu: bias gradient", N);
            }
        }
    }
    free(w), free(b), free(dw), free(db), free(x), free(y), free(dy), free(dx), free(y_ref);
    free(dx_ref), free(dw_ref), free(db_ref), free(aux);
}

/* The conv2d layer's cache of frozen Winograd weights (layer_conv2d.c): with the weight
 * frozen, a forward and input gradient after every change to w (one weight, then all of them,
 * then a training step in between, then frozen again) match the naive reference of the
 * current w; F(4x4) (12x12 maps) and F(2x2) (8x8), on 2 threads, scratch in the trainer's
 * separate region or at the end of aux. */
static void check_wino_cache(test_rng *r, size_t H, bool shared)
{
    const size_t N = 3, IC = 8, OC = 12;
    eng_layer l;
    memset(&l, 0, sizeof l);
    l.ops = &eng_layer_conv2d;
    l.cfg.conv.IC = IC;
    l.cfg.conv.OC = OC;
    l.cfg.conv.KH = l.cfg.conv.KW = 3;
    l.cfg.conv.stride = 1;
    l.cfg.conv.pad = 1;
    l.in_ndim = 3;
    l.in_shape[0] = IC;
    l.in_shape[1] = l.in_shape[2] = H;
    l.in_size = IC * H * H;
    eng_error err;
    if (!ok(l.ops->setup(&l, &err) == 0, "cache %zux%zu: setup", H, H))
        return;
    eng_conv2d_geom g;
    eng_conv2d_geom_init(&g, IC, H, H, OC, 3, 3, 1, 1, 1, 1);
    const size_t nw = OC * IC * 9, in = N * l.in_size, out = N * l.out_size;
    const size_t na = l.ops->aux_size(&l, N), ns = l.ops->scratch_size(&l, N);
    float *w = test_alloc(nw), *dw = test_alloc(nw), *x = test_alloc(in), *y = test_alloc(out);
    float *dy = test_alloc(out), *dx = test_alloc(in), *y_ref = test_alloc(out);
    float *dx_ref = test_alloc(in), *aux = test_alloc(na), *scr = test_alloc(ns);
    test_fill(r, w, nw, -0.5f, 0.5f);
    test_fill(r, x, in, -1, 1);
    test_fill(r, dy, out, -1, 1);
    l.param[0] = w, l.grad[0] = dw, l.aux = aux, l.scratch = shared ? scr : NULL;
    bool good = na > ns;
    for (int round = 0; round < 6; round++) {
        if (round == 2)
            w[5] += 0.25f; /* one weight changes */
        if (round == 3)
            test_fill(r, w, nw, -0.5f, 0.5f); /* all of them */
        l.trainable[0] = round == 4;          /* round 4 trains: no cache */
        if (round == 4)
            w[nw - 1] -= 0.5f; /* as an optimizer step would, then frozen again */
        eng_conv2d_ref_forward(&g, N, x, w, NULL, y_ref);
        eng_conv2d_ref_backward_input(&g, N, dy, w, dx_ref);
        l.ops->forward(&l, &(eng_fwd_args){.N = N, .x = x, .y = y, .train = true});
        l.ops->backward(&l, &(eng_bwd_args){.N = N, .x = x, .y = y, .dy = dy, .dx = dx});
        double e1, e2;
        bool f = test_close(y, y_ref, out, 1e-10, &e1), b = test_close(dx, dx_ref, in, 1e-10, &e2);
        if (!f || !b)
            diag("cache %zux%zu round %d: forward nmse %.2g, input gradient nmse %.2g", H, H, round,
                 e1, e2);
        good &= f && b;
    }
    ok(good, "conv2d %zux%zu%s: frozen Winograd weights cached, always those of the current w", H,
       H, shared ? " (shared scratch)" : "");
    free(w), free(dw), free(x), free(y), free(dy), free(dx), free(y_ref), free(dx_ref);
    free(aux), free(scr);
}

/* Index of the max of window (oh, ow) of plane x, PyTorch's rule: scan rows then columns,
 * replace on strictly greater or on the first NaN. */
static size_t nan_max_arg(const eng_pool2d_geom *g, const float *x, size_t oh, size_t ow)
{
    long best = -1;
    for (long kh = 0; kh < (long)g->KH; kh++)
        for (long kw = 0; kw < (long)g->KW; kw++) {
            long ih = (long)(oh * g->SH) - (long)g->PH + kh;
            long iw = (long)(ow * g->SW) - (long)g->PW + kw;
            if (ih < 0 || iw < 0 || ih >= (long)g->IH || iw >= (long)g->IW)
                continue;
            long i = ih * (long)g->IW + iw;
            if (best < 0 || x[i] > x[best] || (isnan(x[i]) && !isnan(x[best])))
                best = i;
        }
    return (size_t)best;
}

/* Ties, -inf and NaN inside the windows of max pooling (3x3/2 pad 1 as resnet's, and 2x2/1):
 * every index is the one PyTorch's scan picks (first maximum; the first NaN wins). */
static void check_maxpool_special(test_rng *r, size_t K, size_t S, size_t P)
{
    eng_pool2d_geom g;
    eng_pool2d_geom_init(&g, 3, 9, 12, K, K, S, S, P, P);
    const size_t N = 2, IP = g.IH * g.IW, OP = g.OH * g.OW;
    const size_t in = N * g.C * IP, out = N * g.C * OP;
    float *x = test_alloc(in), *y = test_alloc(out);
    int32_t *idx = calloc(out, sizeof(int32_t));
    if (!idx)
        abort();
    for (size_t i = 0; i < in; i++) /* few distinct values: many ties */
        x[i] = (float)(test_rng_range(r, 0, 3));
    for (size_t i = 0; i < 40; i++)
        x[test_rng_range(r, 0, in - 1)] = -INFINITY;
    for (size_t i = 0; i < 12; i++)
        x[test_rng_range(r, 0, in - 1)] = NAN;
    for (size_t i = 0; i < IP; i++) /* plane 1: -inf only */
        x[IP + i] = -INFINITY;
    eng_maxpool2d_forward(&g, N, x, y, idx);
    bool same = true;
    for (size_t pl = 0; pl < N * g.C; pl++)
        for (size_t o = 0; o < OP; o++) {
            size_t want = nan_max_arg(&g, x + pl * IP, o / g.OW, o % g.OW);
            float v = x[pl * IP + want], got = y[pl * OP + o];
            same &= (size_t)idx[pl * OP + o] == want && ((isnan(v) && isnan(got)) || v == got);
        }
    ok(same, "maxpool k%zu s%zu p%zu ties/-inf/NaN: the first maximum (or NaN), as PyTorch", K, S,
       P);
    free(x), free(y), free(idx);
}

int main(void)
{
    test_rng r = {0x7a9c1d3bull};
    eng_conv2d_geom g;
    eng_conv2d_geom_init(&g, 4, 2, 2, 8, 3, 3, 1, 1, 1, 1);
    is_int(eng_convtap_macs(&g, 1), 16 * 4 * 8, "2x2 map, 3x3 pad 1: 16 of 36 products");
    eng_conv2d_geom_init(&g, 1, 4, 4, 1, 3, 3, 1, 1, 1, 1);
    is_int(eng_convtap_macs(&g, 2), 2 * 100, "4x4 map: 100 of 144");
    for (size_t T = 1; T <= 3; T++) {
        eng_par_set_threads(T);
        check_all(&r);
    }
    eng_par_set_threads(2);
    check_layer(&r, 5, 6, 8, 2, 1); /* 2x2 stride 1 */
    check_layer(&r, 4, 5, 7, 4, 1); /* 4x4 */
    check_layer(&r, 3, 4, 6, 7, 2); /* 7x7 -> 4x4 stride 2 */
    check_wino_cache(&r, 12, false);
    check_wino_cache(&r, 8, true);
    eng_par_set_threads(8); /* more threads than some layers' channels */
    check(&r, 3, 2, 5, 4, 4, 3, 1, 1);
    check(&r, 3, 5, 2, 4, 4, 3, 2, 1);
    /* no images: dw zeroed, or left when accumulating */
    {
        eng_conv2d_geom_init(&g, 2, 3, 3, 3, 3, 3, 1, 1, 1, 1);
        float dw[54], *s = test_alloc(eng_convtap_scratch_floats(&g, 1));
        for (size_t i = 0; i < 54; i++)
            dw[i] = 1.0f;
        eng_convtap_backward(&g, 0, NULL, NULL, NULL, dw, true, NULL, false, s);
        bool same = true;
        for (size_t i = 0; i < 54; i++)
            same &= dw[i] == 1.0f;
        ok(same, "N=0 accumulate leaves dw");
        eng_convtap_backward(&g, 0, NULL, NULL, NULL, dw, false, NULL, false, s);
        for (size_t i = 0; i < 54; i++)
            same &= dw[i] == 0.0f;
        ok(same, "N=0 zeroes dw");
        free(s);
    }
    eng_par_set_threads(1);
    check_maxpool_special(&r, 3, 2, 1);
    check_maxpool_special(&r, 2, 1, 0);
    check_maxpool_special(&r, 3, 3, 1);
    check_maxpool_special(&r, 4, 2, 1); /* right border column clipped */
    return done_testing();
}
