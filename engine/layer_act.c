/*
 * layer_act.c: ReLU, inverted Dropout (mask drawn from the trainer's RNG, kept in aux for
 * backward) and the fused softmax cross-entropy loss.
 */
#include <math.h>
#include <string.h>

#include "layers.h"
#include "par.h"
#include "util.h"

static int same_shape_setup(eng_layer *l, eng_error *err)
{
    (void)err; /* element-wise kinds accept any shape */
    l->out_ndim = l->in_ndim;
    memcpy(l->out_shape, l->in_shape, sizeof(l->out_shape));
    l->out_size = l->in_size;
    return 0;
}

/* ReLU over large batches is split into contiguous ranges over the compute threads
 * (par.h); each element is independent, so results do not depend on the split. */
typedef struct relu_job {
    size_t n;
    const float *x, *y, *dy;
    float *out;
} relu_job;

static size_t relu_parts(size_t n)
{
    return n < 65536 ? 1 : eng_par_threads();
}

static void relu_forward_part(void *ctx, size_t p, size_t T)
{
    const relu_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->n, p, T, &lo, &hi);
    /* restrict: x and out are distinct buffers (a layer's input and output); locals let the
     * compiler vectorise instead of reloading the pointers through j every element */
    const float *restrict x = j->x;
    float *restrict out = j->out;
    for (size_t i = lo; i < hi; i++)
        out[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void relu_forward(eng_layer *l, const eng_fwd_args *a)
{
    relu_job j = {.n = a->N * l->in_size, .x = a->x, .out = a->y};
    eng_par_run(relu_parts(j.n), relu_forward_part, &j);
}

static void relu_backward_part(void *ctx, size_t p, size_t T)
{
    const relu_job *j = ctx;
    size_t lo, hi;
    eng_par_range(j->n, p, T, &lo, &hi);
    /* restrict: dx is a gradient buffer distinct from the saved output y and from dy */
    const float *restrict y = j->y, *restrict dy = j->dy;
    float *restrict out = j->out;
    for (size_t i = lo; i < hi; i++) {
        const float g = dy[i]; /* loaded unconditionally: a select, not a branch per element */
        out[i] = y[i] > 0.0f ? g : 0.0f;
    }
}

static void relu_backward(eng_layer *l, const eng_bwd_args *a)
{
    if (!a->dx)
        return;
    relu_job j = {.n = a->N * l->in_size, .y = a->y, .dy = a->dy, .out = a->dx};
    eng_par_run(relu_parts(j.n), relu_backward_part, &j);
}

const eng_layer_ops eng_layer_relu = {
    .kind = "relu",
    .setup = same_shape_setup,
    .forward = relu_forward,
    .backward = relu_backward,
};

static int dropout_setup(eng_layer *l, eng_error *err)
{
    float p = l->cfg.dropout.p;
    if (!(p >= 0.0f && p < 1.0f))
        return eng_err_set(err, ENG_EINVAL, NULL, "layer %s: dropout p must be in [0, 1)", l->name);
    return same_shape_setup(l, err);
}

static size_t dropout_aux_size(const eng_layer *l, size_t N)
{
    return N * l->in_size; /* the scaled keep mask */
}

static void dropout_forward(eng_layer *l, const eng_fwd_args *a)
{
    size_t n = a->N * l->in_size;
    float p = l->cfg.dropout.p;
    if (!a->train || p == 0.0f) {
        if (a->y != a->x)
            memcpy(a->y, a->x, n * sizeof(float));
        if (l->aux)
            for (size_t i = 0; i < n; i++)
                l->aux[i] = 1.0f;
        return;
    }
    ENG_ASSERT(l->rng && l->aux);
    float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) {
        float m = eng_rng_uniform(l->rng) >= p ? scale : 0.0f;
        l->aux[i] = m;
        a->y[i] = a->x[i] * m;
    }
}

static void dropout_backward(eng_layer *l, const eng_bwd_args *a)
{
    size_t n = a->N * l->in_size;
    if (!a->dx)
        return;
    for (size_t i = 0; i < n; i++)
        a->dx[i] = a->dy[i] * l->aux[i];
}

const eng_layer_ops eng_layer_dropout = {
    .kind = "dropout",
    .setup = dropout_setup,
    .aux_size = dropout_aux_size,
    .forward = dropout_forward,
    .backward = dropout_backward,
};

float eng_softmax_ce(size_t N, size_t C, const float *logits, const int32_t *labels, float *dlogits,
                     size_t *n_correct)
{
    double total = 0.0;
    size_t correct = 0;
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * C;
        size_t arg = 0;
        float mx = z[0];
        for (size_t c = 1; c < C; c++)
            if (z[c] > mx) {
                mx = z[c];
                arg = c;
            }
        /* log-sum-exp around the maximum keeps exp() in range */
        double sum = 0.0;
        for (size_t c = 0; c < C; c++)
            sum += exp((double)(z[c] - mx));
        double lse = (double)mx + log(sum);
        size_t y = (size_t)labels[n];
        total += lse - (double)z[y];
        if (arg == y)
            correct++;
        if (dlogits) {
            for (size_t c = 0; c < C; c++) {
                double p = exp((double)z[c] - lse);
                dlogits[n * C + c] = (float)((p - (c == y ? 1.0 : 0.0)) / (double)N);
            }
        }
    }
    if (n_correct)
        *n_correct = correct;
    return N ? (float)(total / (double)N) : 0.0f;
}
