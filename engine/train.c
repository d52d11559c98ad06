/*
 * train.c: the step loop. Activations live in an arena sized before step 1; the step
 * allocates nothing. Backward runs from the loss down to the lowest layer that holds a
 * trainable parameter and asks each layer for its input gradient only above that layer,
 * so frozen groups cost no weight-gradient GEMMs and no backward below them.
 */
#include "train.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "loader.h"
#include "util.h"

#define SMOOTH_BETA 0.98
#define VALID_BATCH 256
#define VALID_ARENA ((size_t)64 << 20)

void eng_smooth_reset(eng_smooth *s)
{
    s->val = 0.0;
    s->count = 0;
}

float eng_smooth_add(eng_smooth *s, float loss)
{
    s->count++;
    /* torch.lerp(loss, val, beta) = loss + beta*(val - loss) */
    s->val = (double)loss + SMOOTH_BETA * (s->val - (double)loss);
    return (float)(s->val / (1.0 - pow(SMOOTH_BETA, (double)s->count)));
}

/* The profile's clock (eng_trainer.layer_s): seconds, only read when the profile is on. */
static double profile_now(const eng_trainer *t)
{
    if (!t->layer_s)
        return 0.0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void profile_add(eng_trainer *t, size_t slot, double t0)
{
    if (t->layer_s)
        t->layer_s[slot] += profile_now(t) - t0;
}

/* Whether layers i, i+1 are a BatchNorm + ReLU pair run as one step (eng_bn_relu_forward).
 * The forward and backward loops both ask this, so they always agree; the pair's middle
 * activation act[i+1] is then never written nor read. */
static bool fused_at(const eng_model *m, size_t i)
{
    return i + 1 < m->n_layers && eng_bn_relu_pair(&m->layers[i], &m->layers[i + 1]);
}

/* Whether layer i is a convolution feeding a fused BatchNorm + ReLU pair at i+1, i+2 that
 * can run in the convolution's output pass (eng_bn_relu_epilogue): with running statistics
 * the three layers are one step writing act[i+3]. Not on the reference path
 * (`unfused` on the conv or the BN). */
static bool conv_bn_at(const eng_model *m, size_t i)
{
    return i + 2 < m->n_layers && m->layers[i].ops == &eng_layer_conv2d && !m->layers[i].unfused &&
           fused_at(m, i + 1);
}

/* The arena: act[0..L], each layer's aux without its scratch part, the two gradient buffers,
 * the labels, and one scratch region shared by all layers (layers.h, scratch_size): the
 * layers run one at a time and keep nothing in it between calls, so the largest need
 * suffices where the sum of them was allocated before (resnet18 at batch 32: about 54 MiB
 * less). */
static void layout(eng_trainer *t)
{
    eng_model *m = t->model;
    size_t N = t->max_batch, maxsz = m->in_size, scratch = 0, epi = 0;
    eng_arena_reset(&t->arena);
    t->act[0] = eng_arena_floats(&t->arena, N * m->in_size);
    for (size_t i = 0; i < m->n_layers; i++) {
        eng_layer *l = &m->layers[i];
        t->act[i + 1] = eng_arena_floats(&t->arena, N * l->out_size);
        size_t a = l->ops->aux_size ? l->ops->aux_size(l, N) : 0;
        size_t s = l->ops->scratch_size ? l->ops->scratch_size(l, N) : 0;
        ENG_ASSERT(s <= a);
        l->aux = a > s ? eng_arena_floats(&t->arena, a - s) : NULL;
        scratch = s > scratch ? s : scratch;
        if (l->out_size > maxsz)
            maxsz = l->out_size;
        if (conv_bn_at(m, i)) {
            size_t e = eng_bn_relu_epilogue_floats(&m->layers[i + 1]);
            epi = e > epi ? e : epi;
        }
    }
    t->grad_buf[0] = eng_arena_floats(&t->arena, N * maxsz);
    t->grad_buf[1] = eng_arena_floats(&t->arena, N * maxsz);
    t->labels = (int32_t *)(void *)eng_arena_floats(&t->arena, N);
    t->epi_buf = epi ? eng_arena_floats(&t->arena, epi) : NULL;
    float *shared = scratch ? eng_arena_floats(&t->arena, scratch) : NULL;
    for (size_t i = 0; i < m->n_layers; i++) {
        eng_layer *l = &m->layers[i];
        l->scratch = l->ops->scratch_size && l->ops->scratch_size(l, N) ? shared : NULL;
    }
}

int eng_trainer_init(eng_trainer *t, eng_model *m, eng_dataset *d, const eng_opt_spec *opt,
                     size_t max_batch, uint64_t seed, eng_error *err)
{
    memset(t, 0, sizeof(*t));
    t->model = m;
    t->data = d;
    t->max_batch = max_batch;
    eng_optim_init(&t->opt, opt, m->n_groups);
    eng_rng_seed(&t->rng, seed, 0x44524f50ull); /* "DROP" */
    eng_smooth_reset(&t->smooth);
    eng_arena_init(&t->arena);
    t->act = calloc(m->n_layers + 1, sizeof(float *));
    t->perm = malloc((d->n_train ? d->n_train : 1) * sizeof(uint32_t));
    if (!t->act || !t->perm)
        return eng_err_set(err, ENG_ENOMEM, NULL, "out of memory for the trainer");
    layout(t); /* measure */
    /* Validation has no backward pass and is where small training batches hurt most (a
     * batch of 8 gives GEMMs too thin to be fast): forward batches may be larger than the
     * training batch, up to VALID_BATCH and an arena of VALID_ARENA bytes. Per-sample
     * outputs do not depend on the batch (eval mode). */
    size_t per_sample = t->arena.used / max_batch + 1;
    size_t cap = VALID_ARENA / per_sample;
    cap = cap > VALID_BATCH ? VALID_BATCH : cap;
    if (cap > max_batch && d->n_valid > max_batch) {
        t->max_batch = cap < d->n_valid ? cap : d->n_valid;
        eng_arena_reset(&t->arena);
        layout(t);
    }
    if (eng_arena_commit(&t->arena, 0))
        return eng_err_set(err, ENG_ENOMEM, NULL, "out of memory for activations (%zu bytes)",
                           t->arena.used);
    layout(t);
    for (size_t i = 0; i < m->n_layers; i++)
        m->layers[i].rng = &t->rng;
    /* Training batches come from the background loader (prefetches within t->perm). */
    return eng_loader_create(d, t->perm, max_batch, seed, &t->loader, err);
}

void eng_trainer_fini(eng_trainer *t)
{
    if (t->model)
        for (size_t i = 0; i < t->model->n_layers; i++) {
            t->model->layers[i].rng = NULL;
            t->model->layers[i].aux = NULL;
            t->model->layers[i].scratch = NULL;
        }
    eng_loader_destroy(t->loader);
    eng_arena_fini(&t->arena);
    free(t->act);
    free(t->perm);
    memset(t, 0, sizeof(*t));
}

/* Kinds whose backward reads neither x nor y: the pools (max pooling keeps its argmax in
 * aux) and flatten. */
static bool bwd_reads_nothing(const eng_layer *l)
{
    return l->ops == &eng_layer_maxpool2d || l->ops == &eng_layer_avgpool2d ||
           l->ops == &eng_layer_adaptive_avgpool2d || l->ops == &eng_layer_adaptive_concatpool2d ||
           l->ops == &eng_layer_flatten;
}

/* Whether a layer's backward reads its forward input x / output y. Unknown kinds: yes. A
 * conv2d or linear layer reads x only for its weight gradient. */
static bool bwd_reads_x(const eng_layer *l)
{
    if (l->ops == &eng_layer_conv2d || l->ops == &eng_layer_linear)
        return l->trainable[0];
    return l->ops != &eng_layer_relu && l->ops != &eng_layer_dropout && !bwd_reads_nothing(l);
}

static bool bwd_reads_y(const eng_layer *l)
{
    return l->ops != &eng_layer_conv2d && l->ops != &eng_layer_linear &&
           l->ops != &eng_layer_batchnorm2d && l->ops != &eng_layer_batchnorm1d &&
           l->ops != &eng_layer_dropout && !bwd_reads_nothing(l);
}

/* Whether act[k] (the output of layer k-1, input of layer k; 1 <= k <= L) must be stored for
 * a backward pass that runs down to layer lo (lo = L: no backward). The others go to the two
 * input-gradient buffers in turn, unused until the backward pass: less memory touched (peak
 * RSS) and a working set that stays in cache. With a frozen body and trainable BatchNorm
 * (fastai's freeze) that drops every ReLU output, which only the frozen conv's forward reads.
 * A model with a layer flagged `unfused` keeps everything from lo up, as before fusion: the
 * reference path the tests compare against. */
static bool kept(const eng_model *m, size_t k, size_t lo, bool reference)
{
    const size_t L = m->n_layers;
    if (k == 0) /* the input, never one of the trainer's buffers to choose */
        return true;
    if (k >= L || reference)
        return k >= lo;
    bool need = false;
    if (k >= lo && !fused_at(m, k - 1)) /* layer k's backward runs, reading x */
        need = bwd_reads_x(&m->layers[k]);
    if (k - 1 >= lo && !fused_at(m, k - 1) && !(k >= 2 && fused_at(m, k - 2)))
        need = need || bwd_reads_y(&m->layers[k - 1]); /* layer k-1's, reading y */
    return need;
}

static bool reference_path(const eng_model *m)
{
    for (size_t i = 0; i < m->n_layers; i++)
        if (m->layers[i].unfused)
            return true;
    return false;
}

const float *eng_trainer_forward(eng_trainer *t, const float *x, size_t N, bool train)
{
    eng_model *m = t->model;
    ENG_ASSERT(N <= t->max_batch);
    /* act[k] only where a backward pass will read it (see kept); all of them in eval mode
     * except the logits */
    const size_t L = m->n_layers, lo = train ? eng_model_lowest_trainable(m) : L;
    const bool ref = reference_path(m);
    const float *in = x;
    size_t pp = 0; /* the ping-pong buffer written next */
    for (size_t i = 0; i < L; i++) {
        const bool fuse = fused_at(m, i);
        /* with running statistics (then no backward follows) a conv writes the output of the
         * BatchNorm + ReLU after it */
        eng_epilogue epi;
        const bool whole = !fuse && conv_bn_at(m, i) &&
                           eng_bn_relu_epilogue(&m->layers[i + 1], train, &epi, t->epi_buf);
        /* the layer whose output this writes */
        const size_t last = whole ? i + 2 : fuse ? i + 1 : i;
        float *y = kept(m, last + 1, lo, ref) ? t->act[last + 1] : t->grad_buf[pp];
        if (fuse && y == t->grad_buf[pp] && in == t->grad_buf[1 - pp])
            y = t->grad_buf[1 - pp]; /* a fused pair in place: its input is not kept either */
        else if (y == t->grad_buf[pp])
            pp = 1 - pp;
        eng_fwd_args a = {.N = N, .x = in, .y = y, .train = train, .epi = whole ? &epi : NULL};
        const double t0 = profile_now(t);
        if (fuse)
            eng_bn_relu_forward(&m->layers[i], &a, NULL);
        else
            m->layers[i].ops->forward(&m->layers[i], &a);
        profile_add(t, 2 * i, t0);
        i = last;
        in = y;
    }
    return in;
}

void eng_trainer_shuffle(eng_trainer *t, uint64_t seed, size_t stage, uint32_t epoch)
{
    eng_loader_shuffle(t->loader, t->perm, seed, stage, epoch);
}

float eng_trainer_step(eng_trainer *t, const uint32_t *idx, size_t N)
{
    eng_model *m = t->model;
    size_t L = m->n_layers, C = m->n_classes;
    eng_loader_next(t->loader, idx, N, t->act[0], t->labels);
    const float *logits = eng_trainer_forward(t, t->act[0], N, true);
    float *dy = t->grad_buf[0];
    float loss = eng_softmax_ce(N, C, logits, t->labels, dy, NULL);
    size_t lo = eng_model_lowest_trainable(m);
    const bool ref = reference_path(m);
    int cur = 0;
    for (size_t i = L; i-- > lo;) {
        /* a ReLU (no parameters, so never the lowest trainable layer) after a fused BN */
        const bool fuse = i > lo && fused_at(m, i - 1);
        const size_t first = fuse ? i - 1 : i; /* the layer whose input gradient this writes */
        eng_layer *l = &m->layers[first];
        float *dx = first > lo ? t->grad_buf[1 - cur] : NULL;
        /* activations that were not stored are passed as NULL: never read */
        eng_bwd_args a = {.N = N,
                          .x = kept(m, first, lo, ref) ? t->act[first] : NULL,
                          .y = kept(m, i + 1, lo, ref) ? t->act[i + 1] : NULL,
                          .dy = dy,
                          .dx = dx};
        const double t0 = profile_now(t);
        if (fuse) {
            a.y = NULL; /* the ReLU mask is recomputed from x: y is not read */
            eng_bn_relu_backward(l, &a, NULL);
        } else {
            l->ops->backward(l, &a);
        }
        profile_add(t, 2 * first + 1, t0);
        i = first;
        dy = dx;
        cur = 1 - cur;
    }
    if (t->clip)
        eng_clip_grad_norm(m, t->clip_max_norm, t->clip_norm_type);
    const double t0 = profile_now(t);
    eng_optim_step(&t->opt, m);
    profile_add(t, 2 * L, t0);
    return loss;
}

double eng_clip_grad_norm(eng_model *m, float max_norm, float p)
{
    double total = 0.0;
    bool inf = isinf(p);
    for (size_t i = 0; i < m->n_params; i++) {
        const eng_param *pa = &m->params[i];
        if (!pa->trainable)
            continue;
        const float *g = m->g + pa->offset;
        for (size_t k = 0; k < pa->count; k++) {
            double a = fabs((double)g[k]);
            if (inf)
                total = a > total || isnan(a) ? a : total;
            else
                total += p == 2.0f ? a * a : pow(a, (double)p);
        }
    }
    if (!inf)
        total = p == 2.0f ? sqrt(total) : pow(total, 1.0 / (double)p);
    double coef = (double)max_norm / (total + 1e-6);
    if (coef < 1.0) { /* torch multiplies by the clamped coefficient; 1.0 changes nothing */
        float c = (float)coef;
        for (size_t i = 0; i < m->n_params; i++) {
            const eng_param *pa = &m->params[i];
            if (!pa->trainable)
                continue;
            float *g = m->g + pa->offset;
            for (size_t k = 0; k < pa->count; k++)
                g[k] *= c;
        }
    }
    return total;
}

size_t eng_rank_of_target(const float *logits, size_t C, int32_t y)
{
    size_t above = 0;
    float ty = logits[y];
    for (size_t c = 0; c < C; c++)
        if (logits[c] > ty)
            above++;
    return above;
}

int eng_trainer_validate(eng_trainer *t, const eng_metric *ms, size_t n_ms, eng_valid_poll_fn poll,
                         void *user, float *loss, float *accuracy, float *vals)
{
    const eng_dataset *d = t->data;
    size_t in = t->model->in_size, C = t->model->n_classes;
    double total = 0.0;
    size_t correct = 0, in_top[ENG_MAX_METRICS] = {0};
    ENG_ASSERT(n_ms <= ENG_MAX_METRICS);
    if (d->n_valid == 0) {
        *loss = NAN;
        *accuracy = NAN;
        for (size_t k = 0; k < n_ms; k++)
            vals[k] = NAN;
        return 0;
    }
    size_t nb = (d->n_valid + t->max_batch - 1) / t->max_batch;
    for (size_t s = 0; s < d->n_valid; s += t->max_batch) {
        size_t N = d->n_valid - s < t->max_batch ? d->n_valid - s : t->max_batch;
        size_t c = 0;
        if (poll && poll(user, s / t->max_batch, nb))
            return ENG_EINTERRUPTED; /* outputs untouched: no partial result */
        memcpy(t->act[0], d->x_valid + s * in, N * in * sizeof(float));
        const float *logits = eng_trainer_forward(t, t->act[0], N, false);
        float l = eng_softmax_ce(N, C, logits, d->y_valid + s, NULL, &c);
        total += (double)l * (double)N;
        correct += c;
        for (size_t k = 0; k < n_ms; k++)
            if (ms[k].kind == ENG_METRIC_TOP_K)
                for (size_t n = 0; n < N; n++)
                    in_top[k] += eng_rank_of_target(logits + n * C, C, d->y_valid[s + n]) < ms[k].k;
    }
    double nv = (double)d->n_valid;
    *loss = (float)(total / nv);
    *accuracy = (float)((double)correct / nv);
    for (size_t k = 0; k < n_ms; k++) {
        switch (ms[k].kind) {
        case ENG_METRIC_ACCURACY:
            vals[k] = *accuracy;
            break;
        case ENG_METRIC_ERROR_RATE:
            vals[k] = (float)(1.0 - (double)correct / nv);
            break;
        case ENG_METRIC_TOP_K:
            vals[k] = (float)((double)in_top[k] / nv);
            break;
        }
    }
    return 0;
}
