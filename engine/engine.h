/*
 * engine.h: the public interface of thawd's training engine.
 *
 * The engine is a C library that knows nothing of HTTP, JSON, SQL or the daemon. A caller
 * (the daemon's workers, or `thawd run`) fills an eng_job_spec, then calls eng_job_run(),
 * which builds the model, loads the data and executes the job's stages in order (freeze,
 * lr_find, fit_one_cycle, unfreeze, save, ...). Progress, results and written files are
 * reported through eng_callbacks; the caller's progress callback also decides whether to
 * go on, cancel, or interrupt (checkpoint and stop, so the job can be resumed later).
 *
 * Conventions: functions returning int return 0 (ENG_OK) or a negative ENG_E* code.
 * Functions that can fail because of user input take an optional eng_error * whose text
 * names the problem. Pointers are "borrowed" unless a comment says otherwise.
 * Thread-safety: distinct jobs may run concurrently on distinct threads; nothing in this
 * header shares mutable state between calls except eng_blas_set_threads().
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------------------------ */

enum eng_status {
    ENG_OK = 0,
    ENG_ENOMEM = -1,       /* an allocation sized by the job failed */
    ENG_EINVAL = -2,       /* invalid argument or spec (err says which field) */
    ENG_ESHAPE = -3,       /* tensor shapes do not fit (e.g. weights vs architecture) */
    ENG_EIO = -4,          /* a file could not be read or written */
    ENG_EFORMAT = -5,      /* a file is malformed (bad magic, truncated, out of bounds) */
    ENG_ECANCELED = -6,    /* the progress callback asked to cancel */
    ENG_EINTERRUPTED = -7, /* the progress callback asked to interrupt; a checkpoint was written */
    ENG_ENUMERIC = -8,     /* training diverged (non-finite loss) where that is fatal */
    ENG_ENOSUGGEST = -9,   /* an LR refers to an lr_find suggestion that could not be made */
};

/* Returns a static, human-readable name for an ENG_* code. Thread-safe. */
const char *eng_strerror(int code);

/* Optional out-parameter carrying a message for the user (like jansson's json_error_t).
 * `field` is a dotted path into the spec when the problem is one field ("stages.2.epochs"),
 * or empty. */
typedef struct eng_error {
    char field[96];
    char text[256];
} eng_error;

/* ---- limits ------------------------------------------------------------------------------ */

#define ENG_MAX_GROUPS  8  /* layer groups (fastai parameter groups) */
#define ENG_MAX_HIDDEN  8  /* hidden layers of an mlp or head */
#define ENG_MAX_CLASSES 1000
#define ENG_NAME_MAX    64 /* names of saves and stages, NUL included */
#define ENG_PATH_MAX    1024

/* ---- data -------------------------------------------------------------------------------- */

typedef enum eng_data_kind {
    ENG_DATA_SYNTHETIC, /* Gaussian class blobs generated from a seed (tests, demos) */
    ENG_DATA_IDX,       /* IDX files (MNIST family), raw or .gz */
    /* Registered datasets: a directory (eng_data_spec.dir) holding the dataset's files. */
    ENG_DATA_IDX_DIR,  /* IDX pairs: *train*-images/labels and *t10k* or *test* ones */
    ENG_DATA_CIFAR10,  /* CIFAR-10 binary batches (*.bin; test_batch.bin is the test split) */
    ENG_DATA_CIFAR100, /* CIFAR-100 binary (train.bin, test.bin; fine labels) */
    ENG_DATA_CSV,      /* train.csv (+ test.csv): header row, numeric features, a label column */
    ENG_DATA_IMAGES,   /* one sub-folder per class (PNG/JPEG), optionally under train/ test/ */
} eng_data_kind;

typedef struct eng_data_spec {
    eng_data_kind kind;
    /* ENG_DATA_SYNTHETIC: n_train + n_valid samples of `features` values in `classes`
     * classes; class centres drawn from `seed`, samples = centre + noise * N(0,1). */
    uint32_t n_train, n_valid, features, classes;
    float noise;
    uint64_t seed;
    /* ENG_DATA_IDX: image and label files of the training and validation splits. */
    char train_images[ENG_PATH_MAX], train_labels[ENG_PATH_MAX];
    char valid_images[ENG_PATH_MAX], valid_labels[ENG_PATH_MAX];
    /* Optional class subset (relabelled 0..n_subset-1 in the given order); 0 = all. */
    uint32_t n_subset;
    int32_t subset[ENG_MAX_CLASSES];
    /* Keep at most this many training samples per class, in file order; 0 = no limit. */
    uint32_t per_class_limit;
    /* Normalisation applied to every input value: (x - mean) / std. For IDX bytes x is
     * first scaled to [0, 1]. `normalize_auto` computes mean/std of the training split. */
    bool normalize_auto;
    float mean, std;
    /* ---- registered datasets (kinds ENG_DATA_IDX_DIR and later) ---- */
    char dir[ENG_PATH_MAX]; /* the dataset's directory; image caches are written into it */
    /* Image folders: decode and resize to H x W with C channels (1 gray, 3 RGB);
     * 0 = the dataset's own (the first image's size; RGB if any image has colour). */
    uint32_t image_h, image_w, image_c;
    /* Validation split: the dataset's test split, or (valid_pct > 0) that share of the
     * training split drawn with valid_seed (the test split is then unused). */
    float valid_pct;
    uint64_t valid_seed;
    /* Per-channel normalisation (x in [0, 1] for byte data): n_norm = 0 uses mean/std and
     * normalize_auto above; n_norm = 1 or C gives a mean/std per channel (ImageNet's, or
     * dataset statistics computed at registration). CSV features: normalize_auto
     * standardises each feature with the training split's statistics. */
    uint32_t n_norm;
    float norm_mean[4], norm_std[4];
    /* Training-batch augmentation (images only, never validation): random horizontal flip,
     * and zero-pad by aug_pad pixels then crop back at a random offset. */
    bool aug_flip;
    uint32_t aug_pad;
} eng_data_spec;

/* Fills `d` with the defaults: synthetic, 512/128 samples, 16 features, 4 classes,
 * noise 1.0, seed 0, no subset, no limit, normalisation mean 0 std 1. */
void eng_data_spec_defaults(eng_data_spec *d);

/* What a registered dataset holds, from eng_dataset_inspect(). */
#define ENG_CLASS_NAME_MAX 64
typedef struct eng_dataset_info {
    eng_data_kind kind;
    uint64_t n_train, n_test; /* samples of the training and test splits (test may be 0) */
    uint32_t n_classes;
    uint32_t shape[3];                       /* C, H, W of one sample (CSV: 1, 1, features) */
    char (*class_names)[ENG_CLASS_NAME_MAX]; /* owned, [n_classes] */
    uint64_t *train_counts, *test_counts;    /* owned, [n_classes] samples per class */
    /* Per-channel mean and std of the training split (byte data scaled to [0, 1]);
     * n_stats = C for images, 1 for CSV (all features pooled). */
    uint32_t n_stats;
    float mean[4], std[4];
} eng_dataset_info;

/* Reads and validates every file of the dataset described by s->kind and s->dir (image
 * folders: decoded at s->image_h x image_w x image_c, 0 = own size, and that decoded cache is
 * written into s->dir so jobs do not decode again). A truncated, corrupt or inconsistent
 * file gives ENG_EFORMAT with err->text naming the file and the problem; ENG_EIO when a
 * file cannot be read; ENG_ENOMEM. On success *out is the caller's, free with
 * eng_dataset_info_destroy(). Thread-safe for distinct directories. */
int eng_dataset_inspect(const eng_data_spec *s, eng_dataset_info **out, eng_error *err);
/* Asked between the units of work of a long read; returning true stops it. */
typedef bool (*eng_stop_fn)(void *user);
/* eng_dataset_inspect that can be stopped: stop(user) is asked (stop may be NULL: never)
 * between the files it reads, between the images of an image folder it decodes and every
 * 4096 lines of a CSV file; once it answers true this returns ENG_ECANCELED, having written
 * no decode cache (a later call reads the dataset again from its files). Thread-safe for
 * distinct directories; stop is called on the calling thread. */
int eng_dataset_inspect_stoppable(const eng_data_spec *s, eng_stop_fn stop, void *user,
                                  eng_dataset_info **out, eng_error *err);
void eng_dataset_info_destroy(eng_dataset_info *info);
/* Static name of a registered-dataset kind ("idx", "cifar10", "cifar100", "csv", "images"),
 * NULL for other kinds; and the reverse (0 or ENG_EINVAL). */
const char *eng_data_kind_name(eng_data_kind kind);
int eng_data_kind_parse(const char *name, eng_data_kind *kind);

/* Streaming SHA-256 (FIPS 180-4) for callers that hash what they write (dataset uploads).
 * create: NULL on ENOMEM; caller frees with eng_sha256_destroy (NULL is a no-op). final_hex
 * writes 64 lowercase hex digits and a NUL; the state must be re-created to hash again. */
typedef struct eng_sha256 eng_sha256;
eng_sha256 *eng_sha256_create(void);
void eng_sha256_update(eng_sha256 *s, const void *data, size_t len);
void eng_sha256_final_hex(eng_sha256 *s, char hex[65]);
void eng_sha256_destroy(eng_sha256 *s);
/* One-shot SHA-256 of `len` bytes into a 32-byte digest; no allocation. Thread-safe. */
void eng_sha256_digest(const void *data, size_t len, uint8_t out[32]);

/* ---- model ------------------------------------------------------------------------------- */

/* The classifier head of a vision architecture. */
typedef enum eng_head_kind {
    ENG_HEAD_DEFAULT,     /* the architecture's own: fastai head for resnet*, M1's head
                             (avg pool, flatten, dropout 0.25, linear) for cnn-small */
    ENG_HEAD_FASTAI,      /* fastai create_head (options below) */
    ENG_HEAD_TORCHVISION, /* resnet only: torchvision's avgpool + fc (names "fc.weight",
                             "fc.bias"), to load a torchvision model as-is */
} eng_head_kind;

typedef struct eng_head_spec {
    eng_head_kind kind;
    /* fastai create_head(lin_ftrs, ps, concat_pool): hidden sizes of the head's linear
     * layers (default [512]; n_hidden 0 = one linear layer), dropout ps (default 0.5: the
     * last dropout gets ps, the others ps/2; a dropout of 0 is omitted as in fastai's
     * LinBnDrop) and pooling (true: AdaptiveConcatPool2d, max then avg; false: average). */
    uint32_t n_hidden;
    uint32_t hidden[ENG_MAX_HIDDEN];
    float ps;
    bool concat_pool;
} eng_head_spec;

typedef struct eng_model_spec {
    /* Architecture name from the registry: "mlp", "cnn-small", "resnet18", "resnet34".
     * eng_arch_count()/eng_arch_name() list them. */
    char arch[32];
    /* mlp: hidden layer sizes and dropout after each hidden ReLU. */
    uint32_t n_hidden;
    uint32_t hidden[ENG_MAX_HIDDEN];
    float dropout;
    /* Optional pretrained weights (safetensors). With `body_only`, only the body's
     * tensors are loaded and the head is freshly initialised (the transfer case);
     * otherwise loading is strict. Empty string = random init. */
    char weights[ENG_PATH_MAX];
    bool body_only;
    /* Vision architectures (cnn-small, resnet*): expected input channels; 0 = whatever the
     * data has, otherwise the data must have exactly this many (ENG_ESHAPE). Inputs are
     * [C, H, W] of any size the strided layers accept; an mlp flattens them. */
    uint32_t in_channels;
    /* The head (vision architectures only; an mlp ignores it). */
    eng_head_spec head;
} eng_model_spec;

/* Fills `m` with the defaults: arch "mlp", one hidden layer of 64, dropout 0, no weights,
 * in_channels 0, head: default kind, hidden [512], ps 0.5, concat pool. */
void eng_model_spec_defaults(eng_model_spec *m);

/* Registry of architectures: count, and the name of entry i (static string, or NULL). */
size_t eng_arch_count(void);
const char *eng_arch_name(size_t i);

/* ---- learning rates ---------------------------------------------------------------------- */

typedef enum eng_lr_kind {
    ENG_LR_VALUE,      /* one value for every group */
    ENG_LR_SLICE,      /* v[0]..v[1] spread geometrically over the groups (fastai even_mults) */
    ENG_LR_SLICE_HI,   /* slice(hi): hi/10 for every group but the last, hi for the last */
    ENG_LR_LIST,       /* one value per group, n == number of groups */
    ENG_LR_SUGGESTION, /* the latest lr_find suggestion of this job, divided by `divide`;
                          with `slice_lo_divide` > 0 it becomes slice(s/slice_lo_divide, s) */
} eng_lr_kind;

typedef enum eng_suggest {
    ENG_SUGGEST_VALLEY,
    ENG_SUGGEST_MINIMUM,
    ENG_SUGGEST_STEEP,
    ENG_SUGGEST_SLIDE,
} eng_suggest;

typedef struct eng_lr {
    eng_lr_kind kind;
    uint32_t n;
    float v[ENG_MAX_GROUPS];
    eng_suggest suggest;
    float divide;          /* ENG_LR_SUGGESTION: s = suggestion / divide (default 1) */
    float slice_lo_divide; /* ENG_LR_SUGGESTION: 0 = one value, else slice(s/this, s) */
} eng_lr;

/* ---- stages ------------------------------------------------------------------------------ */

typedef enum eng_stage_op {
    ENG_STAGE_FREEZE,        /* freeze_to(-1): every group but the head frozen */
    ENG_STAGE_FREEZE_TO,     /* freeze_to(n) with fastai's negative-index rules */
    ENG_STAGE_UNFREEZE,      /* freeze_to(0) */
    ENG_STAGE_LR_FIND,       /* exponential LR sweep, suggestions; weights restored after */
    ENG_STAGE_FIT_ONE_CYCLE, /* 1cycle LR + momentum schedule */
    ENG_STAGE_FIT,           /* constant LR */
    ENG_STAGE_SAVE,          /* write the weights as <out_dir>/<name>.safetensors */
    ENG_STAGE_FINE_TUNE,     /* fastai fine_tune: freeze, fit_one_cycle(freeze_epochs,
                                slice(base_lr), pct_start 0.99), base_lr /= 2, unfreeze,
                                fit_one_cycle(epochs, slice(base_lr/lr_mult, base_lr)) */
} eng_stage_op;

/* Static name of an op as used in specs ("fit_one_cycle"), or NULL if out of range. */
const char *eng_stage_op_name(eng_stage_op op);
/* Looks up an op by name; returns 0 and sets *op, or ENG_EINVAL. */
int eng_stage_op_parse(const char *name, eng_stage_op *op);

typedef struct eng_stage {
    eng_stage_op op;
    /* FREEZE_TO */
    int32_t n;
    /* FIT_ONE_CYCLE / FIT */
    uint32_t epochs;
    eng_lr lr; /* lr_max for fit_one_cycle, lr for fit */
    float div, div_final, pct_start;
    float moms[3];
    float wd; /* < 0: keep the optimizer's weight decay */
    /* LR_FIND */
    float start_lr, end_lr;
    uint32_t num_it;
    bool stop_div;
    /* SAVE */
    char name[ENG_NAME_MAX];
    /* FINE_TUNE: `epochs`, `lr` = base_lr (a value or a suggestion without slice_divide),
     * `pct_start` and `div` of the second fit; `div_final`, `moms` and `wd` go to both fits
     * (eng_stage_defaults gives fastai's 0.3 / 5 for fine_tune). */
    uint32_t freeze_epochs;
    float lr_mult;
} eng_stage;

/* Fills `s` with fastai's defaults for `op`: fit_one_cycle(lr_max=1e-3, div=25,
 * div_final=1e5, pct_start=0.25, moms=(0.95,0.85,0.95), wd=keep), lr_find(1e-7, 10,
 * num_it=100, stop_div=true), save(name="model"), freeze_to(n=-1), epochs=1. */
void eng_stage_defaults(eng_stage *s, eng_stage_op op);

/* ---- optimizer --------------------------------------------------------------------------- */

typedef enum eng_opt_kind {
    ENG_OPT_ADAM, /* fastai Adam: decoupled wd, beta2 0.99, eps 1e-5 outside the sqrt */
    ENG_OPT_SGD,  /* SGD with momentum */
} eng_opt_kind;

typedef struct eng_opt_spec {
    eng_opt_kind kind;
    float mom, sqr_mom, eps, wd;
    bool train_bn; /* norm-layer parameters stay trainable in frozen groups */
} eng_opt_spec;

/* Fills `o` with fastai's Adam defaults: mom 0.9, sqr_mom 0.99, eps 1e-5, wd 0.01,
 * train_bn true. */
void eng_opt_spec_defaults(eng_opt_spec *o);

/* ---- metrics and training callbacks ------------------------------------------------------- */

#define ENG_MAX_METRICS 8

typedef enum eng_metric_kind {
    ENG_METRIC_ACCURACY,   /* mean(argmax == target) */
    ENG_METRIC_ERROR_RATE, /* 1 - accuracy */
    ENG_METRIC_TOP_K,      /* fastai top_k_accuracy: target among the k largest logits */
} eng_metric_kind;

typedef struct eng_metric {
    eng_metric_kind kind;
    uint32_t k; /* ENG_METRIC_TOP_K (fastai default 5) */
} eng_metric;

/* The recorder column name of a metric ("accuracy", "error_rate", "top_k_accuracy"; a
 * top-k with k != 5 is "top_<k>_accuracy"), written into buf like snprintf. */
int eng_metric_name(const eng_metric *m, char *buf, size_t size);

/* fastai TrackerCallback arguments (EarlyStoppingCallback, SaveModelCallback). */
typedef struct eng_tracker_spec {
    bool enabled;
    char monitor[32];  /* a recorder column: "valid_loss" (default), "train_loss", a metric */
    int comp;          /* 0: fastai's rule (less if the name has "loss" or "error"), -1 less, +1
                          greater */
    float min_delta;   /* default 0 */
    uint32_t patience; /* early stopping: default 1 */
    char fname[ENG_NAME_MAX]; /* save-best: default "model" */
} eng_tracker_spec;

typedef struct eng_train_callbacks {
    eng_tracker_spec early_stopping;
    eng_tracker_spec save_best; /* saves <fname> on improvement, reloads it after each fit */
    /* TerminateOnNaN: a non-finite training or validation loss fails the job with
     * ENG_ENUMERIC (default true; false records the non-finite values and goes on). */
    bool terminate_on_nan;
    /* GradientClip: clip the global norm of the trainable gradients before each step. */
    bool grad_clip;
    float clip_max_norm, clip_norm_type; /* defaults 1 and 2; norm_type may be INFINITY */
} eng_train_callbacks;

/* Fills `c` with the defaults: trackers off (monitor valid_loss, comp 0, min_delta 0,
 * patience 1, fname "model"), terminate_on_nan true, grad_clip off (1, 2). */
void eng_train_callbacks_defaults(eng_train_callbacks *c);

/* ---- job --------------------------------------------------------------------------------- */

typedef struct eng_job_spec {
    eng_model_spec model;
    eng_data_spec data;
    eng_opt_spec opt;
    uint32_t batch_size;
    uint64_t seed; /* fixes init, shuffling and dropout */
    size_t n_stages;
    eng_stage *stages; /* borrowed array of n_stages */
    /* Validation metrics, recorder columns after valid_loss (default: accuracy). */
    uint32_t n_metrics;
    eng_metric metrics[ENG_MAX_METRICS];
    eng_train_callbacks callbacks;
} eng_job_spec;

/* Fills `j` with defaults (batch 64, seed 0, no stages) and the sub-spec defaults. */
void eng_job_spec_defaults(eng_job_spec *j);

/* Checks a spec without running it (ranges, names, stage order such as an LR suggestion
 * used before any lr_find). Files are not opened. Returns 0 or ENG_EINVAL with `err`
 * naming the field. Thread-safe. */
int eng_job_spec_validate(const eng_job_spec *j, eng_error *err);

/* ---- progress and results ---------------------------------------------------------------- */

typedef enum eng_event_kind {
    ENG_EVENT_STAGE_BEGIN,
    ENG_EVENT_BATCH,    /* after each training batch (fit, fit_one_cycle, lr_find) */
    ENG_EVENT_EPOCH,    /* after each epoch's validation */
    ENG_EVENT_LR_FIND,  /* lr_find's result */
    ENG_EVENT_ARTIFACT, /* a file was written (save or checkpoint) */
    ENG_EVENT_STAGE_END,
    ENG_EVENT_LOG, /* a message for the job's log (level + message); also sent at DEBUG
                      level before each validation batch, so that the callback's answer
                      can stop a long validation */
} eng_event_kind;

typedef enum eng_log_level {
    ENG_LOG_DEBUG,
    ENG_LOG_INFO,
    ENG_LOG_WARN,
    ENG_LOG_ERROR,
} eng_log_level;

typedef struct eng_lr_find_result {
    size_t n;           /* points recorded */
    const float *lrs;   /* borrowed, n values: LR of each batch */
    const float *losses; /* borrowed, n values: smoothed loss (may hold NaN/inf) */
    bool ok;            /* false: no suggestion could be made, see `reason` */
    char reason[160];
    float valley, minimum, steep, slide; /* suggestions (when ok); one that needs more
                                            points than survived (steep 2, slide 16) is NaN
                                            and `reason` says why */
} eng_lr_find_result;

typedef struct eng_artifact {
    const char *kind; /* "weights" (a save stage) or "checkpoint" (resumable state) */
    const char *name; /* save name, or "checkpoint" */
    const char *path; /* borrowed: the file written */
    uint64_t size;
    char sha256[65]; /* lowercase hex */
} eng_artifact;

typedef struct eng_event {
    eng_event_kind kind;
    size_t stage_index, n_stages;
    eng_stage_op op;
    /* Position: epoch (0-based) of n_epochs and batch (0-based) of n_batches in the
     * current stage; `progress` is the fraction of the whole job's planned batches done. */
    uint32_t epoch, n_epochs;
    uint32_t batch, n_batches;
    uint64_t step; /* training batches done in the whole job */
    double progress;
    /* ENG_EVENT_BATCH: raw and smoothed loss, head-group lr and momentum. */
    float loss, smooth_loss, lr, mom;
    /* ENG_EVENT_EPOCH: fastai's columns (train_loss is the smoothed loss). */
    float train_loss, valid_loss, accuracy;
    double seconds; /* wall time of the epoch or stage */
    const eng_lr_find_result *lr_find; /* ENG_EVENT_LR_FIND */
    const eng_artifact *artifact;      /* ENG_EVENT_ARTIFACT */
    eng_log_level level;               /* ENG_EVENT_LOG */
    const char *message;               /* ENG_EVENT_LOG and STAGE_END summaries */
    /* ENG_EVENT_EPOCH: the job's metrics in spec order (n_metrics values, borrowed; NaN or
     * inf when the value is not finite, NaN when the validation set is empty). */
    size_t n_metrics;
    const float *metrics;
    /* ENG_EVENT_EPOCH of a fine_tune stage: which of its fits (0 frozen, 1 unfrozen) and
     * the epoch within that fit (fastai prints one table per fit). */
    uint32_t fit_index, fit_epoch;
} eng_event;

/* What the progress callback asks the engine to do next. */
typedef enum eng_action {
    ENG_CONTINUE = 0,
    ENG_CANCEL,    /* stop now, write nothing more, return ENG_ECANCELED */
    ENG_INTERRUPT, /* write a resumable checkpoint, return ENG_EINTERRUPTED */
} eng_action;

/* Called on the thread running eng_job_run(); `ev` and what it points to are borrowed
 * for the call. The return value is honoured at the next batch boundary (training or
 * validation) at the latest. */
typedef eng_action (*eng_progress_fn)(const eng_event *ev, void *user);

typedef struct eng_callbacks {
    eng_progress_fn progress; /* may be NULL */
    void *user;
} eng_callbacks;

typedef struct eng_run_opts {
    /* Directory for saves (<name>.safetensors) and the resumable checkpoint
     * (checkpoint.safetensors); must exist. Borrowed. */
    const char *out_dir;
    /* A checkpoint written by an earlier interrupted run of the same spec, or NULL. */
    const char *resume_path;
} eng_run_opts;

/* Runs a job to completion: builds the model, loads data, executes every stage.
 * Returns 0 when all stages finished; ENG_ECANCELED / ENG_EINTERRUPTED when the callback
 * asked for it; another ENG_E* code with `err` set when the job failed.
 * Thread-safe for distinct specs; allocates everything it uses and frees it on return. */
int eng_job_run(const eng_job_spec *spec, const eng_run_opts *opts, const eng_callbacks *cb,
                eng_error *err);

/* Sets the number of compute threads each training thread may use (call once at startup,
 * before any job runs): the engine splits every batch over that many threads of its own and
 * runs OpenBLAS single-threaded inside each, so a daemon with W workers stays within
 * W x n cores. Returns the number in effect. */
int eng_blas_set_threads(int n);
/* Static description of the BLAS library and its configuration, for the startup log. */
const char *eng_blas_info(void);

/* ---- models outside a job: inspection and inference ------------------------------------- */

/* A model built from an eng_model_spec for a given input shape, for summaries and
 * prediction (no data, no optimizer). Opaque. */
typedef struct eng_net eng_net;

/* Builds spec->arch for per-sample inputs in_shape[in_ndim] (1 or 3 dims: (F) or (C, H, W))
 * and n_classes outputs, initialised from `seed`, and loads spec->weights when set (strict
 * unless spec->body_only). n_classes 0 takes the class count from the weights file (the
 * first dimension of the architecture's last weight tensor, e.g. "fc.weight"). train_bn as
 * in eng_opt_spec (matters for freezing). On success *out is caller-owned (free with
 * eng_net_destroy). Returns 0, ENG_EINVAL, ENG_ESHAPE, ENG_EIO, ENG_EFORMAT or ENG_ENOMEM
 * with `err` set (a weights error names the offending tensor). Thread-safe for distinct
 * nets. */
int eng_net_create(const eng_model_spec *spec, size_t in_ndim, const size_t *in_shape,
                   size_t n_classes, uint64_t seed, bool train_bn, eng_net **out, eng_error *err);
/* Frees a net; NULL is a no-op. */
void eng_net_destroy(eng_net *n);
/* The number of outputs (classes). */
size_t eng_net_n_classes(const eng_net *n);
/* The per-sample input size in floats. */
size_t eng_net_in_size(const eng_net *n);
/* fastai freeze_to(k) with its negative-index rules (freeze = -1, unfreeze = 0). */
void eng_net_freeze_to(eng_net *n, int32_t k);

/* Inference (eval mode: BatchNorm running statistics, no dropout): x [N x in_size]
 * (normalised as the model expects) -> logits [N x n_classes], in internal batches.
 * Returns 0 or ENG_ENOMEM with `err` set. Not thread-safe on one net. */
int eng_net_predict(eng_net *n, const float *x, size_t N, float *logits, eng_error *err);

/* In-place softmax over each row of p [N x C] (class probabilities from logits). */
void eng_softmax_rows(float *p, size_t N, size_t C);

/* ---- model summary (fastai's learn.summary()) -------------------------------------------- */

typedef struct eng_summary_row {
    char name[64];   /* state_dict prefix of the module, e.g. "layer1.0.conv1", "1.3" */
    char type[32];   /* PyTorch class name: "Conv2d", "BatchNorm2d", "ReLU", "Linear" */
    size_t out_ndim; /* per-sample output shape (the batch dimension is not included) */
    size_t out_shape[3];
    bool shape_kept; /* output shape == input shape (fastai does not start a new block) */
    bool has_params; /* false: fastai leaves Param # and Trainable empty */
    uint64_t params; /* parameters of the module (weight + bias; buffers not counted) */
    bool trainable;  /* requires_grad of the module's first parameter */
    unsigned group;  /* layer group */
} eng_summary_row;

typedef struct eng_summary {
    char arch[32];
    char model_class[32]; /* "Sequential", or "ResNet" with torchvision's head */
    size_t batch;         /* the batch size shown in shapes */
    size_t in_ndim, in_shape[3];
    size_t n_rows;
    eng_summary_row *rows; /* owned by the summary: one per leaf module */
    uint64_t total_params, trainable_params, non_trainable_params; /* by module, as fastai */
    size_t n_groups;
    uint64_t group_params[ENG_MAX_GROUPS];
    char group_first[ENG_MAX_GROUPS][64], group_last[ENG_MAX_GROUPS][64]; /* module names */
    size_t frozen_idx; /* 0 = unfrozen; groups below it are frozen */
    bool train_bn;
} eng_summary;

/* Describes the net as fastai's learn.summary() would, for a batch of `batch` samples.
 * On success *out is caller-owned (free with eng_summary_destroy). Returns 0 or ENG_ENOMEM. */
int eng_net_summary(const eng_net *n, size_t batch, eng_summary **out, eng_error *err);
void eng_summary_destroy(eng_summary *s);
/* Writes the summary as text in fastai's layout (76 columns, rows grouped by output shape,
 * totals), followed by the layer groups and "Model unfrozen" / "Model frozen up to
 * parameter group #k". Like snprintf: writes at most cap bytes (NUL included) and returns
 * the length the full text needs. */
size_t eng_summary_text(const eng_summary *s, char *buf, size_t cap);

/* ---- checking a weights file against an architecture ----------------------------------- */

typedef enum eng_weights_fit {
    ENG_WEIGHTS_FIT_FULL, /* loads strictly: the whole model, head included */
    ENG_WEIGHTS_FIT_BODY, /* loads only with body_only (the head is missing or differs) */
} eng_weights_fit;

typedef struct eng_weights_info {
    eng_weights_fit fit;
    eng_head_kind head; /* FULL: the head kind the tensors fit (a torchvision resnet file
                           fits ENG_HEAD_TORCHVISION); BODY: spec->head.kind */
    size_t in_ndim;     /* 1 for an mlp (features), 3 for a vision architecture */
    size_t in_shape[3]; /* (F) or (C, 0, 0): image height and width are not recorded */
    size_t n_classes;   /* FULL: the head's outputs; BODY: 0 */
    size_t n_tensors;   /* tensors in the file */
} eng_weights_info;

/* Reads the safetensors file spec->weights and checks its tensor names and shapes against
 * spec->arch (with spec's head; an mlp's hidden sizes and dropout layout are read from the
 * file's "0.<i>.weight" tensors; in_channels and body_only are ignored):
 * first the whole model for the input size and class count the tensors imply (resnets
 * also with torchvision's head), then the body alone. Fills *out and returns 0 when either
 * fits; ENG_EFORMAT (malformed file), ENG_EIO, ENG_ESHAPE (fits neither), ENG_EINVAL
 * (unknown arch, no path) or ENG_ENOMEM with `err` naming the problem (never the path).
 * Thread-safe. */
int eng_weights_check(const eng_model_spec *spec, eng_weights_info *out, eng_error *err);
