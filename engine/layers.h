/*
 * layers.h: the operator table (kann style). Each layer kind is one eng_layer_ops struct of
 * function pointers; a model is an array of eng_layer values pointing at their ops.
 *
 * DESIGN. Shapes are per sample (C, H, W or F); the batch size N is passed to forward and
 * backward. A layer does not own memory: its parameters and gradients point into the model's
 * contiguous blocks (set by model.c from param_info), and its per-batch scratch `aux` (saved
 * masks, im2col buffers, BN batch statistics) comes from the trainer's arena, sized by
 * aux_size for the largest batch before step 1. Forward writes y; backward *sets* (does not
 * accumulate) the gradients of the parameters flagged in `trainable` and writes dx only when
 * asked, so a frozen layer costs no weight-gradient work and the model can stop the backward
 * pass below the lowest layer that needs a gradient. Composite kinds (a residual BasicBlock)
 * list their children's parameters under dotted suffixes ("conv1.weight", "bn1.bias") and
 * run their children themselves. New kinds add an ops struct and, if they need
 * configuration, a member of eng_layer_cfg.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "rng.h"

#define ENG_LAYER_MAX_PARAMS 24
#define ENG_LAYER_MAX_DIMS   3

typedef struct eng_layer eng_layer;

/* Work counters a model shares with its layers; tests read them to prove that frozen
 * parameters cost no weight-gradient GEMMs. */
typedef struct eng_stats {
    uint64_t gemm_calls;
    uint64_t flops; /* 2*M*N*K per GEMM */
} eng_stats;

/* What one parameter tensor of a layer is. */
typedef struct eng_param_info {
    char suffix[40]; /* state_dict name after the layer prefix: "weight", "bn1.bias" */
    size_t ndim;
    size_t shape[4];
    bool no_wd;     /* biases and norm params: no weight decay (fastai wd_bn_bias=False) */
    bool is_norm;   /* norm-layer param: stays trainable in frozen groups with train_bn */
    bool is_buffer; /* state, not trained (BN running stats): no grad, no optimizer */
} eng_param_info;

/* Kind-specific configuration; the member used is the one of the layer's kind. */
typedef union eng_layer_cfg {
    struct {
        size_t in, out;
        bool bias;
    } dense;
    struct {
        float p;
    } dropout;
    struct {
        size_t IC, OC, KH, KW, stride, pad;
        bool bias;
    } conv;
    struct {
        size_t C;
        float eps, momentum;
    } norm;
    struct {
        size_t KH, KW, stride, pad;
    } pool;
    struct {
        size_t IC, OC, stride; /* downsample branch iff stride != 1 or IC != OC */
    } block;
} eng_layer_cfg;

/* A per-channel step run on a layer's output as it is produced (in registers in the Winograd
 * output transform, else on each plane while it is in the cache) instead of a later pass over
 * the whole output: y = max(0, y * scale[c] + shift[c]), the BatchNorm (running statistics) +
 * ReLU pair that follows a convolution (eng_bn_relu_epilogue), evaluated as the pair does
 * (v * scale, + shift, then > 0 ? : 0), so the results are the same bits. Only conv2d honours
 * it. */
typedef struct eng_epilogue {
    const float *scale; /* [C] */
    const float *shift; /* [C] */
} eng_epilogue;

/* dst [S] = the epilogue of channel c on src [S] (layer_batchnorm.c); src is dst (in place)
 * or does not overlap it. */
void eng_epilogue_plane(const eng_epilogue *e, size_t c, const float *src, float *dst, size_t S);

typedef struct eng_fwd_args {
    size_t N;                /* batch size, <= the N that aux was sized for */
    const float *x;          /* [N x in_size] */
    float *y;                /* [N x out_size] */
    bool train;              /* training mode (dropout active, BN batch stats) */
    const eng_epilogue *epi; /* borrowed, or NULL: run on y's planes (kinds that support it) */
} eng_fwd_args;

typedef struct eng_bwd_args {
    size_t N;
    const float *x;  /* the forward input  [N x in_size] */
    const float *y;  /* the forward output [N x out_size] */
    const float *dy; /* [N x out_size] */
    float *dx;       /* [N x in_size], or NULL when no input gradient is needed */
} eng_bwd_args;

typedef struct eng_layer_ops {
    const char *kind; /* "linear", "relu", "dropout", ... */
    /* Checks the layer's cfg against the per-sample input shape and sets l->out_shape,
     * out_ndim and out_size. Returns 0 or ENG_ESHAPE / ENG_EINVAL with `err` set. */
    int (*setup)(eng_layer *l, eng_error *err);
    /* Number of parameter tensors (including buffers), and what each one is. May be NULL
     * for kinds without parameters. */
    size_t (*n_params)(const eng_layer *l);
    void (*param_info)(const eng_layer *l, size_t i, eng_param_info *info);
    /* Fills l->param[*] with the kind's initial values (PyTorch defaults). May be NULL. */
    void (*init)(eng_layer *l, eng_rng *rng);
    /* Floats of scratch the layer needs for a batch of N (forward + backward). May be NULL. */
    size_t (*aux_size)(const eng_layer *l, size_t N);
    /* Of aux_size(l, N), the floats at its end that the layer uses only within one forward or
     * one backward call (im2col and Winograd buffers, backward temporaries), never to carry
     * anything from forward to backward. The trainer gives all layers one shared region for
     * them (eng_layer.scratch). May be NULL (none). */
    size_t (*scratch_size)(const eng_layer *l, size_t N);
    void (*forward)(eng_layer *l, const eng_fwd_args *a);
    /* Sets grad[i] for every i with trainable[i]; writes a->dx when it is not NULL. */
    void (*backward)(eng_layer *l, const eng_bwd_args *a);
} eng_layer_ops;

struct eng_layer {
    const eng_layer_ops *ops;
    eng_layer_cfg cfg;
    char name[48];  /* state_dict prefix without the trailing dot, e.g. "0.2" or "1" */
    unsigned group; /* layer group (fastai parameter group) */
    size_t in_ndim, in_shape[ENG_LAYER_MAX_DIMS], in_size;    /* per sample */
    size_t out_ndim, out_shape[ENG_LAYER_MAX_DIMS], out_size; /* per sample, set by setup */
    float *param[ENG_LAYER_MAX_PARAMS]; /* borrowed from the model's parameter block */
    float *grad[ENG_LAYER_MAX_PARAMS];  /* borrowed from the model's gradient block; NULL for
                                           buffers */
    bool trainable[ENG_LAYER_MAX_PARAMS];
    float *aux;       /* borrowed arena scratch of aux_size(N) floats, or NULL */
    float *scratch;   /* borrowed, or NULL: where the scratch_size(N) part of aux lives
                         instead (shared by the trainer's layers), aux then holding only the
                         aux_size - scratch_size floats before it */
    eng_rng *rng;     /* borrowed: the trainer's stream (dropout); may be NULL in eval */
    eng_stats *stats; /* borrowed: the model's counters */
    bool unfused;     /* the reference path, for tests to compare: this layer's fusable
                         steps run as separate kinds (a BatchNorm followed by a ReLU, a
                         block's internal BatchNorm + ReLU pairs), and while any layer has it
                         the trainer stores every activation from the lowest trainable
                         layer up */
};

/* The kinds of the core (layer_dense.c, layer_act.c). */
extern const eng_layer_ops eng_layer_linear;
extern const eng_layer_ops eng_layer_relu;
extern const eng_layer_ops eng_layer_dropout;

/* BatchNorm followed by ReLU in one step (layer_batchnorm.c). The model's layer loop and the
 * residual block run a batchnorm1d/2d layer whose output only feeds a ReLU through these
 * instead of the two kinds' ops; the layers (names, parameters, groups) stay as they are.
 * Results equal the unfused ops' (same statistics and arithmetic), but the BN output and the
 * masked gradient are not stored.
 *
 * eng_bn_relu_pair: whether layer `next` is a ReLU reading `bn`'s output and bn is a
 * batchnorm without the `unfused` flag.
 * eng_bn_relu_forward: a->y = max(0, bn(a->x) + res), res [N x out_size] or NULL for none;
 * statistics, running-statistics updates and aux as bn's forward. a->y may be a->x (in
 * place; the backward then needs a->x intact, so only where no backward follows) when res is
 * NULL; otherwise it must not alias a->x or res.
 * eng_bn_relu_backward: a->x is bn's input and a->dy the gradient at the output of
 * eng_bn_relu_forward. Sets bn's trainable gradients and writes a->dx (when not NULL) as bn's
 * backward would for dy masked by the ReLU. a->y is that forward's output, or NULL when it had
 * no residual input: the mask is then recomputed from x. g [N x out_size], when not NULL
 * (needs a->y), receives the masked gradient. Buffers must not alias. */
bool eng_bn_relu_pair(const eng_layer *bn, const eng_layer *next);
void eng_bn_relu_forward(eng_layer *bn, const eng_fwd_args *a, const float *res);
void eng_bn_relu_backward(eng_layer *bn, const eng_bwd_args *a, float *g);

/* The pair's work moved into the output pass of the convolution that feeds it (the trainer's
 * conv + BN + ReLU triples, the residual block's conv1 + bn1 + ReLU). In eval mode (`train`
 * false: running statistics, and no backward follows) eng_bn_relu_epilogue fills *epi, its
 * arrays in buf (eng_bn_relu_epilogue_floats floats), and returns true: the conv's output
 * with epi is then the pair's output, bit for bit, and the pair's forward is not called. In
 * training mode it returns false and leaves *epi alone: batch statistics need the whole
 * output first (computing the plane sums in the conv's output pass measured no faster; the
 * reductions are not bound by memory), and a backward follows. */
size_t eng_bn_relu_epilogue_floats(const eng_layer *bn);
bool eng_bn_relu_epilogue(eng_layer *bn, bool train, eng_epilogue *epi, float *buf);

/* Counts one GEMM of op(A)[M x K] * op(B)[K x N] in `s` (may be NULL). */
static inline void eng_stats_gemm(eng_stats *s, size_t M, size_t N, size_t K)
{
    if (s) {
        s->gemm_calls++;
        s->flops += 2ull * M * N * K;
    }
}

/* Fused, numerically stable softmax + cross-entropy over logits [N x C] (layer_act.c).
 * labels: N class ids in [0, C). Returns the mean loss over the batch; when dlogits is not
 * NULL it receives d(mean loss)/d(logits) [N x C]; when n_correct is not NULL it receives
 * the number of rows whose argmax (first maximum) equals the label. */
float eng_softmax_ce(size_t N, size_t C, const float *logits, const int32_t *labels, float *dlogits,
                     size_t *n_correct);
