/*
 * test_par_layers.c: the engine's compute threads (engine/par.h) and the layers that split
 * their work over them. eng_par_run must run every part exactly once per call (many calls,
 * so a lost wake-up hangs and the test times out), serially when nested, also when the
 * helpers or the caller have stopped spinning and sleep (gaps and parts longer than par.c's
 * spin, and lengths around it to meet the hand-over between the two); conv2d (im2col and
 * Winograd paths), batchnorm2d, relu and maxpool2d must give the naive references' results with a
 * budget of 3 threads, batches that do not divide evenly, and the thresholds above which the split
 * starts. Prints TAP.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "im2col.h"
#include "kernels.h"
#include "layers.h"
#include "par.h"
#include "refs.h"
#include "tap.h"

typedef struct count_ctx {
    atomic_int hits[8];
    atomic_int bad_n;
    atomic_int nested_ok;
} count_ctx;

static void inner(void *ctx, size_t p, size_t n)
{
    count_ctx *c = ctx;
    (void)p;
    (void)n;
    atomic_fetch_add(&c->nested_ok, 1);
}

static void count_part(void *ctx, size_t p, size_t n)
{
    count_ctx *c = ctx;
    if (p >= n || n > 3)
        atomic_fetch_add(&c->bad_n, 1);
    else
        atomic_fetch_add(&c->hits[p], 1);
    if (p == 1) /* nested call from a helper: runs its parts on the helper itself */
        eng_par_run(2, inner, ctx);
}

static void test_run(void)
{
    count_ctx c;
    memset(&c, 0, sizeof(c));
    const int calls = 2000;
    for (int i = 0; i < calls; i++)
        eng_par_run(1 + (size_t)i % 3, count_part, &c);
    /* parts: n=1 -> {0}, n=2 -> {0,1}, n=3 -> {0,1,2}; calls cycle n = 1, 2, 3 */
    is_int(atomic_load(&c.hits[0]), calls, "part 0 ran once per call");
    ok(atomic_load(&c.hits[1]) == calls * 2 / 3 || atomic_load(&c.hits[1]) == calls * 2 / 3 + 1,
       "part 1 ran once per call with n >= 2 (%d)", atomic_load(&c.hits[1]));
    is_int(atomic_load(&c.hits[2]), calls / 3, "part 2 ran once per call with n = 3");
    is_int(atomic_load(&c.bad_n), 0, "no part outside [0, n)");
    is_int(atomic_load(&c.nested_ok), 2 * atomic_load(&c.hits[1]), "nested calls ran every part");
    size_t lo, hi, sum = 0;
    for (size_t p = 0; p < 3; p++) {
        eng_par_range(10, p, 3, &lo, &hi);
        sum += hi - lo;
        ok(hi - lo == 3 || hi - lo == 4, "range part %zu has 3 or 4 of 10", p);
    }
    is_int(sum, 10, "ranges cover [0, 10)");
}

static void sleep_us(long us)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000};
    nanosleep(&ts, NULL);
}

typedef struct slow_ctx {
    atomic_int hits[2];
    long part_us[2]; /* how long each part takes */
} slow_ctx;

static void slow_part(void *ctx, size_t p, size_t n)
{
    slow_ctx *c = ctx;
    (void)n;
    if (c->part_us[p])
        sleep_us(c->part_us[p]);
    atomic_fetch_add(&c->hits[p], 1);
}

/* par.c spins 50 us: gaps and parts of 0-400 us cover spinning, sleeping and the switch. */
static void test_sleepers(void)
{
    slow_ctx c;
    memset(&c, 0, sizeof(c));
    const int calls = 300;
    int bad = 0;
    for (int i = 0; i < calls; i++) {
        c.part_us[0] = i % 3 == 0 ? 0 : (i * 37) % 400; /* the caller's own part */
        c.part_us[1] = i % 5 == 0 ? 0 : (i * 53) % 400; /* the helper's */
        eng_par_run(2, slow_part, &c);
        /* eng_par_run returned: both parts are done, not just started */
        bad += atomic_load(&c.hits[0]) != i + 1 || atomic_load(&c.hits[1]) != i + 1;
        if (i % 4)
            sleep_us((i * 71) % 400); /* a gap: helpers fall asleep past the spin */
    }
    is_int(bad, 0, "every call returned after both parts, across spin and sleep");
}

/* A layer with parameters, gradients and aux of its own, sized for N. */
typedef struct lay {
    eng_layer l;
    size_t n;
} lay;

static void make(lay *o, const eng_layer_ops *ops, eng_layer_cfg cfg, const size_t shape[3],
                 size_t N, test_rng *r)
{
    memset(o, 0, sizeof(*o));
    o->l.ops = ops;
    o->l.cfg = cfg;
    strcpy(o->l.name, "t");
    o->l.in_ndim = 3;
    o->l.in_size = shape[0] * shape[1] * shape[2];
    memcpy(o->l.in_shape, shape, 3 * sizeof(size_t));
    eng_error err;
    if (ops->setup(&o->l, &err) != 0) {
        diag("setup failed: %s", err.text);
        abort();
    }
    o->n = ops->n_params ? ops->n_params(&o->l) : 0;
    for (size_t i = 0; i < o->n; i++) {
        eng_param_info info;
        ops->param_info(&o->l, i, &info);
        size_t cnt = 1;
        for (size_t d = 0; d < info.ndim; d++)
            cnt *= info.shape[d];
        o->l.param[i] = test_alloc(cnt);
        test_fill(r, o->l.param[i], cnt, 0.5f, 1.5f); /* positive: valid running_var */
        o->l.grad[i] = info.is_buffer ? NULL : test_alloc(cnt);
        o->l.trainable[i] = !info.is_buffer;
    }
    o->l.aux = ops->aux_size ? test_alloc(ops->aux_size(&o->l, N)) : NULL;
}

static void destroy(lay *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->l.param[i]);
        free(o->l.grad[i]);
    }
    free(o->l.aux);
}

static void test_conv(test_rng *r, size_t N, size_t IC, size_t HW, size_t OC, size_t stride)
{
    const size_t shape[3] = {IC, HW, HW};
    eng_layer_cfg cfg = {
        .conv = {.IC = IC, .OC = OC, .KH = 3, .KW = 3, .stride = stride, .pad = 1, .bias = true}};
    lay o;
    make(&o, &eng_layer_conv2d, cfg, shape, N, r);
    eng_conv2d_geom g;
    eng_conv2d_geom_init(&g, IC, HW, HW, OC, 3, 3, stride, stride, 1, 1);
    size_t in = N * o.l.in_size, out = N * o.l.out_size, nw = OC * IC * 9;
    float *x = test_alloc(in), *y = test_alloc(out), *y_ref = test_alloc(out);
    float *dy = test_alloc(out), *dx = test_alloc(in), *dx_ref = test_alloc(in);
    float *dw_ref = test_alloc(nw), *db_ref = test_alloc(OC);
    test_fill(r, x, in, -1, 1);
    test_fill(r, dy, out, -1, 1);
    eng_conv2d_ref_forward(&g, N, x, o.l.param[0], o.l.param[1], y_ref);
    eng_conv2d_ref_backward_input(&g, N, dy, o.l.param[0], dx_ref);
    eng_conv2d_ref_backward_weight(&g, N, x, dy, dw_ref, db_ref);
    eng_fwd_args fa = {.N = N, .x = x, .y = y, .train = true};
    o.l.ops->forward(&o.l, &fa);
    eng_bwd_args ba = {.N = N, .x = x, .y = y, .dy = dy, .dx = dx};
    o.l.ops->backward(&o.l, &ba);
    CLOSE(y, y_ref, out, 1e-10, "conv N=%zu %zu->%zu s%zu: forward", N, IC, OC, stride);
    CLOSE(dx, dx_ref, in, 1e-10, "conv N=%zu: input gradient", N);
    CLOSE(o.l.grad[0], dw_ref, nw, 1e-10, "conv N=%zu: weight gradient summed over the parts", N);
    CLOSE(o.l.grad[1], db_ref, OC, 1e-10, "conv N=%zu: bias gradient", N);
    free(x), free(y), free(y_ref), free(dy), free(dx), free(dx_ref), free(dw_ref), free(db_ref);
    destroy(&o);
}

static void test_bn_relu(test_rng *r, size_t N, size_t C, size_t HW)
{
    const size_t shape[3] = {C, HW, HW};
    eng_layer_cfg cfg = {.norm = {.C = C, .eps = ENG_BN_EPS, .momentum = ENG_BN_MOMENTUM}};
    lay o, a;
    make(&o, &eng_layer_batchnorm2d, cfg, shape, N, r);
    make(&a, &eng_layer_relu, (eng_layer_cfg){0}, shape, N, r);
    eng_bn_dims d = {N, C, HW * HW};
    size_t n = N * o.l.in_size;
    float *x = test_alloc(n), *y = test_alloc(n), *y_ref = test_alloc(n), *dy = test_alloc(n);
    float *dx = test_alloc(n), *dx_ref = test_alloc(n), *z = test_alloc(n), *dz = test_alloc(n);
    float *mean = test_alloc(C), *invstd = test_alloc(C), *rm = test_alloc(C), *rv = test_alloc(C);
    float *dg_ref = test_alloc(C), *db_ref = test_alloc(C);
    test_fill(r, x, n, -2, 3);
    test_fill(r, dy, n, -1, 1);
    memcpy(rm, o.l.param[2], C * sizeof(float));
    memcpy(rv, o.l.param[3], C * sizeof(float));
    ref_bn_train_forward(&d, x, o.l.param[0], o.l.param[1], ENG_BN_MOMENTUM, ENG_BN_EPS, y_ref,
                         mean, invstd, rm, rv);
    ref_bn_train_backward(&d, x, dy, o.l.param[0], ENG_BN_EPS, dx_ref, dg_ref, db_ref);
    eng_fwd_args fa = {.N = N, .x = x, .y = y, .train = true};
    o.l.ops->forward(&o.l, &fa);
    eng_bwd_args ba = {.N = N, .x = x, .y = y, .dy = dy, .dx = dx};
    o.l.ops->backward(&o.l, &ba);
    double e;
    CLOSE(y, y_ref, n, 1e-10, "bn N=%zu C=%zu: train forward", N, C);
    ok(test_close(o.l.param[2], rm, C, 1e-10, &e) && test_close(o.l.param[3], rv, C, 1e-10, &e),
       "bn N=%zu C=%zu: running statistics", N, C);
    CLOSE(dx, dx_ref, n, 1e-8, "bn N=%zu C=%zu: input gradient", N, C);
    ok(test_close(o.l.grad[0], dg_ref, C, 1e-8, &e) && test_close(o.l.grad[1], db_ref, C, 1e-8, &e),
       "bn N=%zu C=%zu: gamma and beta gradients", N, C);
    /* relu over the same sizes: exact */
    fa = (eng_fwd_args){.N = N, .x = x, .y = z, .train = true};
    a.l.ops->forward(&a.l, &fa);
    ba = (eng_bwd_args){.N = N, .x = x, .y = z, .dy = dy, .dx = dz};
    a.l.ops->backward(&a.l, &ba);
    bool exact = true;
    for (size_t i = 0; i < n; i++)
        exact &= z[i] == (x[i] > 0.0f ? x[i] : 0.0f) && dz[i] == (x[i] > 0.0f ? dy[i] : 0.0f);
    ok(exact, "relu N=%zu size %zu: forward and backward exact", N, n);
    free(x), free(y), free(y_ref), free(dy), free(dx), free(dx_ref), free(z), free(dz);
    free(mean), free(invstd), free(rm), free(rv), free(dg_ref), free(db_ref);
    destroy(&o);
    destroy(&a);
}

static void test_maxpool(test_rng *r, size_t N)
{
    const size_t shape[3] = {3, 9, 8};
    eng_layer_cfg cfg = {.pool = {.KH = 3, .KW = 3, .stride = 2, .pad = 1}};
    lay o;
    make(&o, &eng_layer_maxpool2d, cfg, shape, N, r);
    eng_pool2d_geom g;
    eng_pool2d_geom_init(&g, 3, 9, 8, 3, 3, 2, 2, 1, 1);
    size_t in = N * o.l.in_size, out = N * o.l.out_size;
    float *x = test_alloc(in), *y = test_alloc(out), *y_ref = test_alloc(out);
    float *dy = test_alloc(out), *dx = test_alloc(in), *dx_ref = test_alloc(in);
    test_fill_distinct(r, x, in, 0.01f);
    test_fill(r, dy, out, -1, 1);
    ref_maxpool2d_forward(&g, N, x, y_ref);
    ref_maxpool2d_backward(&g, N, x, dy, dx_ref);
    eng_fwd_args fa = {.N = N, .x = x, .y = y, .train = true};
    o.l.ops->forward(&o.l, &fa);
    eng_bwd_args ba = {.N = N, .x = x, .y = y, .dy = dy, .dx = dx};
    o.l.ops->backward(&o.l, &ba);
    ok(memcmp(y, y_ref, out * sizeof(float)) == 0, "maxpool N=%zu: forward exact", N);
    CLOSE(dx, dx_ref, in, 1e-12, "maxpool N=%zu: backward", N);
    free(x), free(y), free(y_ref), free(dy), free(dx), free(dx_ref);
    destroy(&o);
}

int main(void)
{
    test_rng r = {0x5eed5eedull};
    eng_par_set_threads(3);
    is_int(eng_par_threads(), 3, "budget set to 3");
    test_run();
    test_sleepers();
    test_conv(&r, 7, 3, 12, 8, 1);  /* parts 3, 2, 2 images; nb > 1 per part */
    test_conv(&r, 2, 4, 9, 5, 2);   /* fewer images than threads */
    test_conv(&r, 5, 2, 40, 4, 1);  /* one image per GEMM */
    test_conv(&r, 5, 8, 10, 12, 1); /* Winograd forward and input gradient */
    test_conv(&r, 4, 16, 7, 8, 1);  /* Winograd with odd sizes */
    test_bn_relu(&r, 5, 7, 48);     /* above the thresholds: split over channels / elements */
    test_bn_relu(&r, 3, 2, 4);      /* below: one part */
    test_maxpool(&r, 5);            /* image ranges 1 + 2 + 2 */
    test_maxpool(&r, 2);            /* fewer images than threads */
    eng_par_set_threads(0);
    is_int(eng_par_threads(), 1, "budget 0 is clamped to 1");
    return done_testing();
}
