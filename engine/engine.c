/*
 * engine.c: the small public helpers of engine.h: status names, spec defaults, stage op
 * names, the architecture registry listing, and spec validation with field paths.
 */
#include "engine.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dataset.h"
#include "model.h"
#include "util.h"

int eng_err_set(eng_error *err, int code, const char *field, const char *fmt, ...)
{
    if (!err)
        return code;
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
    return code;
}

const char *eng_strerror(int code)
{
    switch (code) {
    case ENG_OK:
        return "success";
    case ENG_ENOMEM:
        return "out of memory";
    case ENG_EINVAL:
        return "invalid argument";
    case ENG_ESHAPE:
        return "tensor shapes do not fit";
    case ENG_EIO:
        return "input/output error";
    case ENG_EFORMAT:
        return "malformed file";
    case ENG_ECANCELED:
        return "cancelled";
    case ENG_EINTERRUPTED:
        return "interrupted (checkpoint written)";
    case ENG_ENUMERIC:
        return "training diverged";
    case ENG_ENOSUGGEST:
        return "no learning-rate suggestion";
    }
    return "unknown error";
}

void eng_data_spec_defaults(eng_data_spec *d)
{
    memset(d, 0, sizeof(*d));
    d->kind = ENG_DATA_SYNTHETIC;
    d->n_train = 512;
    d->n_valid = 128;
    d->features = 16;
    d->classes = 4;
    d->noise = 1.0f;
    d->seed = 0;
    d->mean = 0.0f;
    d->std = 1.0f;
}

void eng_model_spec_defaults(eng_model_spec *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->arch, sizeof(m->arch), "mlp");
    m->n_hidden = 1;
    m->hidden[0] = 64;
    m->head.kind = ENG_HEAD_DEFAULT;
    m->head.n_hidden = 1;
    m->head.hidden[0] = 512;
    m->head.ps = 0.5f;
    m->head.concat_pool = true;
}

size_t eng_arch_count(void)
{
    return eng_model_arch_count();
}

const char *eng_arch_name(size_t i)
{
    return eng_model_arch_name(i);
}

static const char *const op_names[] = {
    [ENG_STAGE_FREEZE] = "freeze",
    [ENG_STAGE_FREEZE_TO] = "freeze_to",
    [ENG_STAGE_UNFREEZE] = "unfreeze",
    [ENG_STAGE_LR_FIND] = "lr_find",
    [ENG_STAGE_FIT_ONE_CYCLE] = "fit_one_cycle",
    [ENG_STAGE_FIT] = "fit",
    [ENG_STAGE_SAVE] = "save",
    [ENG_STAGE_FINE_TUNE] = "fine_tune",
};

const char *eng_stage_op_name(eng_stage_op op)
{
    return (unsigned)op < sizeof(op_names) / sizeof(op_names[0]) ? op_names[op] : NULL;
}

int eng_stage_op_parse(const char *name, eng_stage_op *op)
{
    for (size_t i = 0; name && i < sizeof(op_names) / sizeof(op_names[0]); i++)
        if (strcmp(name, op_names[i]) == 0) {
            *op = (eng_stage_op)i;
            return 0;
        }
    return ENG_EINVAL;
}

void eng_stage_defaults(eng_stage *s, eng_stage_op op)
{
    memset(s, 0, sizeof(*s));
    s->op = op;
    s->n = -1;
    s->epochs = 1;
    s->lr.kind = ENG_LR_VALUE;
    s->lr.n = 1;
    s->lr.v[0] = 1e-3f;
    s->lr.divide = 1.0f;
    s->div = 25.0f;
    s->div_final = 1e5f;
    s->pct_start = 0.25f;
    s->moms[0] = 0.95f;
    s->moms[1] = 0.85f;
    s->moms[2] = 0.95f;
    s->wd = -1.0f;
    s->start_lr = 1e-7f;
    s->end_lr = 10.0f;
    s->num_it = 100;
    s->stop_div = true;
    snprintf(s->name, sizeof(s->name), "model");
    s->freeze_epochs = 1;
    s->lr_mult = 100.0f;
    if (op == ENG_STAGE_FINE_TUNE) { /* fine_tune(base_lr=2e-3, pct_start=0.3, div=5.0) */
        s->lr.v[0] = 2e-3f;
        s->pct_start = 0.3f;
        s->div = 5.0f;
    }
}

void eng_opt_spec_defaults(eng_opt_spec *o)
{
    memset(o, 0, sizeof(*o));
    o->kind = ENG_OPT_ADAM;
    o->mom = 0.9f;
    o->sqr_mom = 0.99f;
    o->eps = 1e-5f;
    o->wd = 0.01f;
    o->train_bn = true;
}

static void tracker_defaults(eng_tracker_spec *t)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->monitor, sizeof(t->monitor), "valid_loss");
    t->patience = 1;
    snprintf(t->fname, sizeof(t->fname), "model");
}

void eng_train_callbacks_defaults(eng_train_callbacks *c)
{
    memset(c, 0, sizeof(*c));
    tracker_defaults(&c->early_stopping);
    tracker_defaults(&c->save_best);
    c->terminate_on_nan = true;
    c->clip_max_norm = 1.0f;
    c->clip_norm_type = 2.0f;
}

int eng_metric_name(const eng_metric *m, char *buf, size_t size)
{
    switch (m->kind) {
    case ENG_METRIC_ACCURACY:
        return snprintf(buf, size, "accuracy");
    case ENG_METRIC_ERROR_RATE:
        return snprintf(buf, size, "error_rate");
    case ENG_METRIC_TOP_K:
        if (m->k == 5)
            return snprintf(buf, size, "top_k_accuracy");
        return snprintf(buf, size, "top_%u_accuracy", m->k);
    }
    return snprintf(buf, size, "?");
}

void eng_job_spec_defaults(eng_job_spec *j)
{
    memset(j, 0, sizeof(*j));
    eng_model_spec_defaults(&j->model);
    eng_data_spec_defaults(&j->data);
    eng_opt_spec_defaults(&j->opt);
    j->batch_size = 64;
    j->seed = 0;
    j->n_metrics = 1;
    j->metrics[0].kind = ENG_METRIC_ACCURACY;
    j->metrics[0].k = 5;
    eng_train_callbacks_defaults(&j->callbacks);
}

/* ---- validation -------------------------------------------------------------------------- */

static bool finite_pos(float x)
{
    return isfinite(x) && x > 0.0f;
}

static int bad(eng_error *err, const char *field, const char *text)
{
    return eng_err_set(err, ENG_EINVAL, field, "%s: %s", field, text);
}

static int validate_lr(const eng_lr *lr, const char *field, bool have_lr_find, eng_error *err)
{
    switch (lr->kind) {
    case ENG_LR_VALUE:
    case ENG_LR_SLICE_HI:
        if (!finite_pos(lr->v[0]))
            return bad(err, field, "must be a number > 0");
        return 0;
    case ENG_LR_SLICE:
        if (!finite_pos(lr->v[0]) || !finite_pos(lr->v[1]) || lr->v[0] > lr->v[1])
            return bad(err, field, "slice needs 0 < lo <= hi");
        return 0;
    case ENG_LR_LIST:
        if (lr->n < 1 || lr->n > ENG_MAX_GROUPS)
            return bad(err, field, "a list needs 1..8 values");
        for (uint32_t i = 0; i < lr->n; i++)
            if (!finite_pos(lr->v[i]))
                return bad(err, field, "every value must be > 0");
        return 0;
    case ENG_LR_SUGGESTION:
        if ((unsigned)lr->suggest > ENG_SUGGEST_SLIDE)
            return bad(err, field, "unknown suggestion");
        if (!finite_pos(lr->divide))
            return bad(err, field, "divide must be > 0");
        if (!(isfinite(lr->slice_lo_divide) && lr->slice_lo_divide >= 0.0f))
            return bad(err, field, "slice_divide must be >= 0");
        if (!have_lr_find)
            return bad(err, field, "a suggestion needs an earlier lr_find stage");
        return 0;
    }
    return bad(err, field, "unknown learning-rate kind");
}

static bool monitor_known(const eng_job_spec *j, const char *name)
{
    char col[48];
    if (strcmp(name, "train_loss") == 0 || strcmp(name, "valid_loss") == 0)
        return true;
    for (uint32_t i = 0; i < j->n_metrics && i < ENG_MAX_METRICS; i++) {
        eng_metric_name(&j->metrics[i], col, sizeof(col));
        if (strcmp(name, col) == 0)
            return true;
    }
    return false;
}

static bool valid_name(const char *s);

static int validate_tracker(const eng_job_spec *j, const eng_tracker_spec *t, const char *what,
                            bool save, eng_error *err)
{
    char f[96];
    if (!t->enabled)
        return 0;
    if (strnlen(t->monitor, sizeof(t->monitor)) >= sizeof(t->monitor) ||
        !monitor_known(j, t->monitor))
        return bad(err, (snprintf(f, sizeof(f), "callbacks.%s.monitor", what), f),
                   "must be train_loss, valid_loss or one of the job's metrics");
    if (t->comp < -1 || t->comp > 1)
        return bad(err, (snprintf(f, sizeof(f), "callbacks.%s.comp", what), f),
                   "must be less or greater");
    if (!isfinite(t->min_delta))
        return bad(err, (snprintf(f, sizeof(f), "callbacks.%s.min_delta", what), f),
                   "must be a finite number");
    if (!save && (t->patience < 1 || t->patience > 100000))
        return bad(err, (snprintf(f, sizeof(f), "callbacks.%s.patience", what), f),
                   "must be an integer 1..100000");
    if (save && !valid_name(t->fname))
        return bad(err, (snprintf(f, sizeof(f), "callbacks.%s.fname", what), f),
                   "must be 1..63 characters of [A-Za-z0-9_.-], not starting with '.'");
    return 0;
}

static int validate_metrics_callbacks(const eng_job_spec *j, eng_error *err)
{
    if (j->n_metrics > ENG_MAX_METRICS)
        return bad(err, "metrics", "at most 8 metrics");
    for (uint32_t i = 0; i < j->n_metrics; i++) {
        const eng_metric *m = &j->metrics[i];
        if (m->kind != ENG_METRIC_ACCURACY && m->kind != ENG_METRIC_ERROR_RATE &&
            m->kind != ENG_METRIC_TOP_K)
            return bad(err, "metrics", "unknown metric");
        if (m->kind == ENG_METRIC_TOP_K && (m->k < 1 || m->k > ENG_MAX_CLASSES))
            return bad(err, "metrics", "top-k needs 1 <= k <= 1000");
    }
    const eng_train_callbacks *c = &j->callbacks;
    int rc = validate_tracker(j, &c->early_stopping, "early_stopping", false, err);
    if (!rc)
        rc = validate_tracker(j, &c->save_best, "save_best", true, err);
    if (rc)
        return rc;
    if (c->grad_clip && !finite_pos(c->clip_max_norm))
        return bad(err, "callbacks.grad_clip.max_norm", "must be > 0");
    if (c->grad_clip && !(c->clip_norm_type > 0.0f))
        return bad(err, "callbacks.grad_clip.norm_type", "must be > 0 (or inf)");
    return 0;
}

static bool valid_name(const char *s)
{
    size_t n = strnlen(s, ENG_NAME_MAX);
    if (n == 0 || n >= ENG_NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return strcmp(s, "checkpoint") != 0;
}

/* A stage field's name for errors, "stages.<i>.<name>", formatted into the caller's f. */
#define FIELD(name) (snprintf(f, sizeof(f), "stages.%zu.%s", i, name), f)

/* The 1cycle schedule's shape (div, div_final, pct_start, moms), shared by fit_one_cycle and
 * fine_tune. */
static int validate_one_cycle(const eng_stage *s, size_t i, eng_error *err)
{
    char f[96];
    if (!finite_pos(s->div))
        return bad(err, FIELD("div"), "must be > 0");
    if (!finite_pos(s->div_final))
        return bad(err, FIELD("div_final"), "must be > 0");
    if (!(s->pct_start > 0.0f && s->pct_start < 1.0f))
        return bad(err, FIELD("pct_start"), "must be in (0, 1)");
    for (int k = 0; k < 3; k++)
        if (!(isfinite(s->moms[k]) && s->moms[k] >= 0.0f && s->moms[k] < 1.0f))
            return bad(err, FIELD("moms"), "values must be in [0, 1)");
    return 0;
}

static int validate_stage(const eng_stage *s, size_t i, bool *have_lr_find, eng_error *err)
{
    char f[96];
    switch (s->op) {
    case ENG_STAGE_FREEZE:
    case ENG_STAGE_UNFREEZE:
    case ENG_STAGE_FREEZE_TO:
        return 0;
    case ENG_STAGE_LR_FIND:
        if (!finite_pos(s->start_lr))
            return bad(err, FIELD("start_lr"), "must be > 0");
        if (!finite_pos(s->end_lr) || s->end_lr <= s->start_lr)
            return bad(err, FIELD("end_lr"), "must be > start_lr");
        if (s->num_it < 1 || s->num_it > 100000)
            return bad(err, FIELD("num_it"), "must be an integer 1..100000");
        *have_lr_find = true;
        return 0;
    case ENG_STAGE_FIT_ONE_CYCLE:
    case ENG_STAGE_FIT: {
        bool oc = s->op == ENG_STAGE_FIT_ONE_CYCLE;
        if (s->epochs < 1 || s->epochs > 100000)
            return bad(err, FIELD("epochs"), "must be an integer >= 1");
        int rc = validate_lr(&s->lr, FIELD(oc ? "lr_max" : "lr"), *have_lr_find, err);
        if (rc)
            return rc;
        if (!isfinite(s->wd)) /* negative = keep the optimizer's weight decay */
            return bad(err, FIELD("wd"), "must be a number >= 0");
        return oc ? validate_one_cycle(s, i, err) : 0;
    }
    case ENG_STAGE_FINE_TUNE:
        if (s->epochs < 1 || s->epochs > 100000)
            return bad(err, FIELD("epochs"), "must be an integer >= 1");
        if (s->freeze_epochs < 1 || s->freeze_epochs > 100000)
            return bad(err, FIELD("freeze_epochs"), "must be an integer >= 1");
        if (s->lr.kind != ENG_LR_VALUE &&
            !(s->lr.kind == ENG_LR_SUGGESTION && s->lr.slice_lo_divide == 0.0f))
            return bad(err, FIELD("base_lr"), "must be a number or a suggestion without slice");
        {
            int rc = validate_lr(&s->lr, FIELD("base_lr"), *have_lr_find, err);
            if (rc)
                return rc;
        }
        if (!finite_pos(s->lr_mult))
            return bad(err, FIELD("lr_mult"), "must be > 0");
        if (!isfinite(s->wd))
            return bad(err, FIELD("wd"), "must be a number >= 0");
        return validate_one_cycle(s, i, err);
    case ENG_STAGE_SAVE:
        if (!valid_name(s->name))
            return bad(err, FIELD("name"),
                       "must match [A-Za-z0-9_.-]{1,63}, not start with '.', not be "
                       "\"checkpoint\"");
        return 0;
    }
    return bad(err, FIELD("op"), "unknown op");
#undef FIELD
}

int eng_job_spec_validate(const eng_job_spec *j, eng_error *err)
{
    if (err)
        err->field[0] = err->text[0] = '\0';
    if (!j)
        return eng_err_set(err, ENG_EINVAL, NULL, "no spec");
    if (j->batch_size < 1 || j->batch_size > 4096)
        return bad(err, "batch_size", "must be an integer 1..4096");
    const eng_model_spec *m = &j->model;
    bool known = false;
    for (size_t i = 0; i < eng_arch_count(); i++)
        known |= strncmp(m->arch, eng_arch_name(i), sizeof(m->arch)) == 0;
    if (!known)
        return bad(err, "model.arch", "unknown architecture");
    if (m->n_hidden > ENG_MAX_HIDDEN)
        return bad(err, "model.hidden", "at most 8 hidden layers");
    for (uint32_t i = 0; i < m->n_hidden; i++)
        if (m->hidden[i] < 1 || m->hidden[i] > 65536)
            return bad(err, "model.hidden", "sizes must be integers 1..65536");
    if (!(m->dropout >= 0.0f && m->dropout < 1.0f))
        return bad(err, "model.dropout", "must be in [0, 1)");
    if (strnlen(m->weights, sizeof(m->weights)) >= sizeof(m->weights))
        return bad(err, "model.weights", "path too long");
    if (m->in_channels > 4096)
        return bad(err, "model.in_channels", "must be an integer 0..4096");
    if (m->head.kind != ENG_HEAD_DEFAULT && m->head.kind != ENG_HEAD_FASTAI &&
        m->head.kind != ENG_HEAD_TORCHVISION)
        return bad(err, "model.head.kind", "must be default, fastai or torchvision");
    if (m->head.kind == ENG_HEAD_TORCHVISION && strncmp(m->arch, "resnet", 6) != 0)
        return bad(err, "model.head.kind", "torchvision's head exists only for resnet*");
    if (m->head.n_hidden > ENG_MAX_HIDDEN)
        return bad(err, "model.head.hidden", "at most 8 hidden layers");
    for (uint32_t i = 0; i < m->head.n_hidden; i++)
        if (m->head.hidden[i] < 1 || m->head.hidden[i] > 65536)
            return bad(err, "model.head.hidden", "sizes must be integers 1..65536");
    if (!(m->head.ps >= 0.0f && m->head.ps < 1.0f))
        return bad(err, "model.head.ps", "must be in [0, 1)");

    const eng_data_spec *d = &j->data;
    if (d->kind == ENG_DATA_SYNTHETIC) {
        if (d->n_train < 1 || d->n_train > 1000000)
            return bad(err, "data.n_train", "must be an integer 1..1000000");
        if (d->n_valid > 1000000)
            return bad(err, "data.n_valid", "must be an integer 0..1000000");
        if (d->features < 1 || d->features > 65536)
            return bad(err, "data.features", "must be an integer 1..65536");
        if (d->classes < 2 || d->classes > ENG_MAX_CLASSES)
            return bad(err, "data.classes", "must be an integer 2..1000");
        if (!(isfinite(d->noise) && d->noise >= 0.0f))
            return bad(err, "data.noise", "must be a number >= 0");
    } else if (d->kind == ENG_DATA_IDX) {
        const char *paths[4] = {d->train_images, d->train_labels, d->valid_images, d->valid_labels};
        const char *names[4] = {"data.train_images", "data.train_labels", "data.valid_images",
                                "data.valid_labels"};
        for (int i = 0; i < 4; i++)
            if (!paths[i][0] || strnlen(paths[i], ENG_PATH_MAX) >= ENG_PATH_MAX)
                return bad(err, names[i], "a file path is required");
        if (d->n_subset > 256)
            return bad(err, "data.classes", "at most 256 classes");
        for (uint32_t i = 0; i < d->n_subset; i++) {
            if (d->subset[i] < 0 || d->subset[i] > 255)
                return bad(err, "data.classes", "class ids must be 0..255");
            for (uint32_t k = 0; k < i; k++)
                if (d->subset[k] == d->subset[i])
                    return bad(err, "data.classes", "class ids must be distinct");
        }
    } else if (d->kind >= ENG_DATA_IDX_DIR && d->kind <= ENG_DATA_IMAGES) {
        int rc = eng_data_spec_validate_dir(d, err);
        if (rc)
            return rc;
    } else {
        return bad(err, "data.source", "unknown data source");
    }
    if (!d->normalize_auto && !(finite_pos(d->std) && isfinite(d->mean)))
        return bad(err, "data.normalize", "std must be > 0 and mean finite");

    const eng_opt_spec *o = &j->opt;
    if (o->kind != ENG_OPT_ADAM && o->kind != ENG_OPT_SGD)
        return bad(err, "optimizer.type", "must be adam or sgd");
    if (!(isfinite(o->mom) && o->mom >= 0.0f && o->mom < 1.0f))
        return bad(err, "optimizer.mom", "must be in [0, 1)");
    if (!(isfinite(o->sqr_mom) && o->sqr_mom >= 0.0f && o->sqr_mom < 1.0f))
        return bad(err, "optimizer.sqr_mom", "must be in [0, 1)");
    if (!finite_pos(o->eps))
        return bad(err, "optimizer.eps", "must be > 0");
    if (!(isfinite(o->wd) && o->wd >= 0.0f))
        return bad(err, "optimizer.wd", "must be >= 0");

    if (j->n_stages > 64)
        return bad(err, "stages", "at most 64 stages");
    if (j->n_stages && !j->stages)
        return bad(err, "stages", "missing stage array");
    bool have_lr_find = false;
    for (size_t i = 0; i < j->n_stages; i++) {
        int rc = validate_stage(&j->stages[i], i, &have_lr_find, err);
        if (rc)
            return rc;
    }
    return validate_metrics_callbacks(j, err);
}
