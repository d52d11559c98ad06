/* test_engine_grad: central finite-difference gradient checks for Linear (weight, bias,
 * input), ReLU, softmax cross-entropy and a whole tiny MLP; freezing keeps the body
 * bit-identical, moves the head, and skips the body's GEMMs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "layers.h"
#include "model.h"
#include "tap.h"
#include "train.h"

static eng_rng rng;

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * eng_rng_normal(&rng);
}

/* loss = sum(y * R) for a fixed random R, so dL/dy = R */
static double dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

static void check_dense(bool bias)
{
    size_t N = 3, IN = 5, OUT = 4;
    eng_layer l = {0};
    float W[20], B[4], GW[20], GB[4], x[15], y[12], R[12], dx[15];
    l.ops = &eng_layer_linear;
    l.cfg.dense.in = IN;
    l.cfg.dense.out = OUT;
    l.cfg.dense.bias = bias;
    l.in_ndim = 1;
    l.in_shape[0] = IN;
    l.in_size = IN;
    ok(l.ops->setup(&l, NULL) == 0 && l.out_size == OUT, "linear setup");
    l.param[0] = W;
    l.param[1] = B;
    l.grad[0] = GW;
    l.grad[1] = GB;
    l.trainable[0] = l.trainable[1] = true;
    fill(W, 20, 0.5f);
    fill(B, 4, 0.5f);
    fill(x, 15, 1.0f);
    fill(R, 12, 1.0f);
    eng_fwd_args f = {.N = N, .x = x, .y = y, .train = true};
    l.ops->forward(&l, &f);
    eng_bwd_args b = {N, x, y, R, dx};
    l.ops->backward(&l, &b);
    double maxerr = 0;
    const double h = 1e-2;
    float *targets[3] = {W, B, x};
    float *grads[3] = {GW, GB, dx};
    size_t counts[3] = {20, bias ? 4u : 0u, 15};
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < counts[t]; i++) {
            float keep = targets[t][i];
            targets[t][i] = keep + (float)h;
            l.ops->forward(&l, &f);
            double lp = dot(y, R, 12);
            targets[t][i] = keep - (float)h;
            l.ops->forward(&l, &f);
            double lm = dot(y, R, 12);
            targets[t][i] = keep;
            double num = (lp - lm) / (2 * h);
            double e = fabs(num - (double)grads[t][i]) / fmax(1.0, fabs(num));
            maxerr = fmax(maxerr, e);
        }
    ok(maxerr < 2e-3, "linear%s gradients match finite differences (max rel err %.2g)",
       bias ? "+bias" : "", maxerr);
}

static void check_relu(void)
{
    eng_layer l = {0};
    float x[20], y[20], R[20], dx[20];
    l.ops = &eng_layer_relu;
    l.in_ndim = 1;
    l.in_shape[0] = 20;
    l.in_size = 20;
    l.ops->setup(&l, NULL);
    fill(x, 20, 1.0f);
    for (int i = 0; i < 20; i++)
        if (fabsf(x[i]) < 0.05f)
            x[i] = 0.5f; /* stay away from the kink */
    fill(R, 20, 1.0f);
    eng_fwd_args f = {.N = 1, .x = x, .y = y, .train = true};
    l.ops->forward(&l, &f);
    eng_bwd_args b = {1, x, y, R, dx};
    l.ops->backward(&l, &b);
    double maxerr = 0, h = 1e-3;
    for (int i = 0; i < 20; i++) {
        float keep = x[i];
        x[i] = keep + (float)h;
        l.ops->forward(&l, &f);
        double lp = dot(y, R, 20);
        x[i] = keep - (float)h;
        l.ops->forward(&l, &f);
        double lm = dot(y, R, 20);
        x[i] = keep;
        maxerr = fmax(maxerr, fabs((lp - lm) / (2 * h) - (double)dx[i]));
    }
    ok(maxerr < 1e-3, "relu gradient matches (max err %.2g)", maxerr);
}

static void check_softmax_ce(void)
{
    size_t N = 4, C = 5;
    float z[20], dz[20];
    int32_t lab[4] = {0, 3, 4, 1};
    fill(z, 20, 2.0f);
    float loss = eng_softmax_ce(N, C, z, lab, dz, NULL);
    double maxerr = 0, h = 1e-2;
    for (size_t i = 0; i < N * C; i++) {
        float keep = z[i];
        z[i] = keep + (float)h;
        double lp = (double)eng_softmax_ce(N, C, z, lab, NULL, NULL);
        z[i] = keep - (float)h;
        double lm = (double)eng_softmax_ce(N, C, z, lab, NULL, NULL);
        z[i] = keep;
        maxerr = fmax(maxerr, fabs((lp - lm) / (2 * h) - (double)dz[i]));
    }
    ok(maxerr < 1e-3, "softmax-CE gradient matches (max err %.2g)", maxerr);
    /* stability: huge logits do not overflow */
    float big[5] = {1000, -1000, 999, 0, 0};
    int32_t l0 = 2;
    size_t corr = 9;
    float lb = eng_softmax_ce(1, 5, big, &l0, NULL, &corr);
    ok(fabsf(lb - 1.3132617f) < 1e-4f && corr == 0, "softmax-CE stable for |z| = 1000: %g",
       (double)lb);
    /* uniform logits: loss = ln C */
    float zero[5] = {0};
    is_near(eng_softmax_ce(1, 5, zero, &l0, NULL, NULL), log(5.0), 1e-6, "uniform logits: ln C");
    ok(isfinite(loss), "finite loss");
}

static eng_dataset *tiny_data(void)
{
    eng_data_spec ds;
    eng_data_spec_defaults(&ds);
    ds.n_train = 64;
    ds.n_valid = 16;
    ds.features = 6;
    ds.classes = 3;
    eng_dataset *d = NULL;
    eng_dataset_load(&ds, &d, NULL);
    return d;
}

static eng_model *tiny_model(const eng_dataset *d, uint32_t hidden2)
{
    eng_model_spec ms;
    eng_model_spec_defaults(&ms);
    ms.n_hidden = hidden2 ? 2 : 1;
    ms.hidden[0] = 7;
    ms.hidden[1] = hidden2;
    eng_model *m = NULL;
    eng_rng r;
    eng_rng_seed(&r, 1, 1);
    eng_model_create(&ms, d->in_ndim, d->in_shape, d->n_classes, true, &r, &m, NULL);
    return m;
}

static void check_model_grad(void)
{
    eng_dataset *d = tiny_data();
    eng_model *m = tiny_model(d, 5);
    eng_opt_spec os;
    eng_opt_spec_defaults(&os);
    eng_trainer t;
    ok(d && m && eng_trainer_init(&t, m, d, &os, 8, 1, NULL) == 0, "tiny model and trainer");
    /* a step with lr 0 computes gradients without changing the weights (SGD, no wd) */
    t.opt.kind = ENG_OPT_SGD;
    for (size_t g = 0; g < t.opt.n_groups; g++) {
        t.opt.h[g].lr = 0.0f;
        t.opt.h[g].wd = 0.0f;
        t.opt.h[g].mom = 0.0f;
    }
    uint32_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    t.opt.h[0].lr = 0.0f;
    eng_trainer_step(&t, idx, 8);
    float *g = malloc(m->n_floats * sizeof(float));
    memcpy(g, m->g, m->n_floats * sizeof(float));
    int32_t lab[8];
    float *x = malloc(8 * m->in_size * sizeof(float));
    for (int n = 0; n < 8; n++) {
        lab[n] = d->y_train[n];
        memcpy(x + n * m->in_size, d->x_train + n * m->in_size, m->in_size * sizeof(float));
    }
    double maxerr = 0, h = 2e-3;
    for (size_t i = 0; i < m->n_floats; i += 3) {
        float keep = m->w[i];
        m->w[i] = keep + (float)h;
        double lp = (double)eng_softmax_ce(8, m->n_classes, eng_trainer_forward(&t, x, 8, false),
                                           lab, NULL, NULL);
        m->w[i] = keep - (float)h;
        double lm = (double)eng_softmax_ce(8, m->n_classes, eng_trainer_forward(&t, x, 8, false),
                                           lab, NULL, NULL);
        m->w[i] = keep;
        maxerr = fmax(maxerr, fabs((lp - lm) / (2 * h) - (double)g[i]));
    }
    ok(maxerr < 2e-3, "whole-MLP gradient matches finite differences (max err %.2g)", maxerr);
    free(g);
    free(x);
    eng_trainer_fini(&t);
    eng_model_destroy(m);
    eng_dataset_destroy(d);
}

static void check_freeze(void)
{
    eng_dataset *d = tiny_data();
    eng_model *m = tiny_model(d, 5);
    eng_opt_spec os;
    eng_opt_spec_defaults(&os);
    eng_trainer t;
    eng_trainer_init(&t, m, d, &os, 8, 1, NULL);
    is_int(m->n_groups, 2, "mlp has 2 layer groups");
    ok(eng_model_find(m, "0.0.weight") && eng_model_find(m, "0.2.bias") &&
           eng_model_find(m, "1.weight") && eng_model_find(m, "1.bias"),
       "state_dict names 0.0.*, 0.2.*, 1.*");
    uint32_t idx[8] = {8, 9, 10, 11, 12, 13, 14, 15};

    m->stats.gemm_calls = 0;
    eng_trainer_step(&t, idx, 8);
    uint64_t full = m->stats.gemm_calls;

    eng_model_freeze_to(m, -1);
    const eng_param *body = eng_model_find(m, "0.0.weight"), *head = eng_model_find(m, "1.weight");
    ok(!body->trainable && head->trainable, "freeze: body frozen, head trainable");
    float *w0 = malloc(m->n_floats * sizeof(float));
    memcpy(w0, m->w, m->n_floats * sizeof(float));
    m->stats.gemm_calls = 0;
    eng_trainer_step(&t, idx, 8);
    uint64_t frozen = m->stats.gemm_calls;
    size_t body_floats = head->offset; /* the body's tensors come first */
    ok(memcmp(w0, m->w, body_floats * sizeof(float)) == 0, "frozen body is bit-identical");
    ok(memcmp(w0 + head->offset, m->w + head->offset, head->count * sizeof(float)) != 0,
       "head weights changed");
    /* full: 3 forward + 3 dW + 2 dx = 8; frozen: 3 forward + head dW = 4 */
    is_int(full, 8, "unfrozen step: 8 GEMMs");
    is_int(frozen, 4, "frozen step: 4 GEMMs (no body weight or input gradients)");
    eng_model_freeze_to(m, 5);
    is_int(m->frozen_idx, 2, "freeze_to(5) freezes everything");
    is_int(eng_model_lowest_trainable(m), m->n_layers, "nothing to backpropagate");
    eng_model_freeze_to(m, -5);
    is_int(m->frozen_idx, 0, "freeze_to(-5) freezes nothing");
    free(w0);
    eng_trainer_fini(&t);
    eng_model_destroy(m);
    eng_dataset_destroy(d);
}

int main(void)
{
    eng_rng_seed(&rng, 42, 0);
    check_dense(true);
    check_dense(false);
    check_relu();
    check_softmax_ce();
    check_model_grad();
    check_freeze();
    return done_testing();
}
