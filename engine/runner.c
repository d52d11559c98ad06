/*
 * runner.c: eng_job_run: builds the model and data, executes the stages, emits events,
 * honours cancel and interrupt, writes saves and resumable checkpoints, and resumes.
 *
 * DESIGN. The runner keeps a position (stage, epoch, batch) = the next unit of work, and
 * keeps the state consistent with it at every point where a callback's answer is acted on
 * (after each training batch, after an epoch's checkpoint, at stage begin and end). An
 * INTERRUPT writes checkpoint.safetensors with that position and everything else the rest
 * of the job depends on (weights, moments, step counts, hypers, frozen groups, dropout RNG,
 * smoothed loss, global step, latest lr_find result, recorder history, early-stopping and
 * save-best trackers). lr_find is not resumed mid-sweep: an interrupt restores the pre-sweep
 * state and checkpoints the stage's start. Shuffling depends only on (seed, stage, epoch),
 * so a resumed run replays the same batches and ends with bit-identical weights (with the
 * same BLAS thread count). The validation pass is stopped between its batches too (see
 * valid_poll); an interrupt there checkpoints the position after the epoch's last training
 * batch, so a resumed run redoes the whole validation and records the epoch once. Loading
 * the job's data is stopped between its files and images the same way (load_poll); nothing
 * is done then, so nothing is checkpointed.
 *
 * A fit (fastai Learner.fit: a fit, fit_one_cycle, or one of fine_tune's two) resets the
 * smoothed loss and the trackers when it starts, and does its after-fit work (save-best's
 * reload) before the checkpoint of its last epoch, which records the position at the fit's
 * end: a run resumed there has nothing left to do for that fit. fine_tune's position counts
 * epochs over both fits; its freeze/unfreeze (with the optimizer state cleared) happen only
 * when a fit starts from its first batch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dataset.h"
#include "lrfind.h"
#include "model.h"
#include "optim.h"
#include "recorder.h"
#include "safetensors.h"
#include "schedule.h"
#include "sha256.h"
#include "tracker.h"
#include "train.h"
#include "util.h"

#define CKPT_FORMAT "thawd-checkpoint-1"

typedef struct runner {
    const eng_job_spec *spec;
    const eng_run_opts *opts;
    const eng_callbacks *cb;
    eng_error *err;
    eng_model *model;
    eng_dataset *data;
    eng_trainer tr;
    bool tr_ready;
    size_t nb;     /* training batches per epoch */
    size_t bsz;    /* samples per training batch */
    uint64_t step; /* training batches done in the job */
    uint64_t planned_total, planned_done;
    eng_action pending;
    /* position: next unit of work */
    size_t stage;
    uint32_t epoch, batch;
    /* latest lr_find */
    bool have_lf;
    eng_lr_find_result lf;
    float *lf_lrs, *lf_losses; /* owned */
    size_t lf_cap;
    char summary[256];            /* the STAGE_END message of the current stage */
    eng_recorder rec;             /* the job's history (per batch, per epoch) */
    eng_tracker es, sb;           /* early stopping, save-best */
    float mvals[ENG_MAX_METRICS]; /* the last epoch's metrics */
} runner;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void ev_init(runner *r, eng_event *ev, eng_event_kind kind)
{
    memset(ev, 0, sizeof(*ev));
    ev->kind = kind;
    ev->stage_index = r->stage;
    ev->n_stages = r->spec->n_stages;
    ev->op = r->stage < r->spec->n_stages ? r->spec->stages[r->stage].op : ENG_STAGE_SAVE;
    ev->step = r->step;
    ev->progress = r->planned_total ? (double)r->planned_done / (double)r->planned_total : 1.0;
    if (ev->progress > 1.0)
        ev->progress = 1.0;
    ev->loss = ev->smooth_loss = ev->lr = ev->mom = NAN;
    ev->train_loss = ev->valid_loss = ev->accuracy = NAN;
}

/* Emits an event; the answer is kept (cancel wins over interrupt) and acted on at the
 * next check point. */
static void emit(runner *r, const eng_event *ev)
{
    if (!r->cb || !r->cb->progress)
        return;
    eng_action a = r->cb->progress(ev, r->cb->user);
    if (a == ENG_CANCEL || (a == ENG_INTERRUPT && r->pending != ENG_CANCEL))
        r->pending = a;
}

static void log_msg(runner *r, eng_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void log_msg(runner *r, eng_log_level level, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    eng_event ev;
    ev_init(r, &ev, ENG_EVENT_LOG);
    ev.level = level;
    ev.message = msg;
    emit(r, &ev);
}

/* ---- files ------------------------------------------------------------------------------- */

static int out_path(runner *r, const char *name, char *path, size_t size)
{
    if (!r->opts || !r->opts->out_dir || !r->opts->out_dir[0])
        return eng_err_set(r->err, ENG_EINVAL, NULL, "no output directory given");
    if (snprintf(path, size, "%s/%s.safetensors", r->opts->out_dir, name) >= (int)size)
        return eng_err_set(r->err, ENG_EINVAL, NULL, "output path too long");
    return 0;
}

static void emit_artifact(runner *r, const char *kind, const char *name, const char *path,
                          uint64_t size, const char *sha)
{
    eng_artifact a = {.kind = kind, .name = name, .path = path, .size = size};
    memcpy(a.sha256, sha, 65);
    eng_event ev;
    ev_init(r, &ev, ENG_EVENT_ARTIFACT);
    ev.artifact = &a;
    emit(r, &ev);
}

static int save_weights(runner *r, const char *name, bool set_summary)
{
    char path[ENG_PATH_MAX + 80], sha[65];
    uint64_t size = 0;
    eng_model *m = r->model;
    int rc = out_path(r, name, path, sizeof(path));
    if (rc)
        return rc;
    eng_st_tensor *t = calloc(m->n_params ? m->n_params : 1, sizeof(*t));
    if (!t)
        return eng_err_set(r->err, ENG_ENOMEM, NULL, "out of memory");
    for (size_t i = 0; i < m->n_params; i++) {
        t[i].name = m->params[i].name;
        t[i].ndim = m->params[i].info.ndim;
        memcpy(t[i].shape, m->params[i].info.shape, sizeof(m->params[i].info.shape));
        t[i].data = m->w + m->params[i].offset;
    }
    eng_st_kv meta[] = {{"format", "pt"}, {"producer", "thawd"}, {"arch", r->spec->model.arch}};
    rc = eng_st_write(path, t, m->n_params, meta, 3, &size, sha, r->err);
    free(t);
    if (rc)
        return rc;
    if (set_summary)
        snprintf(r->summary, sizeof(r->summary), "%.200s (%llu bytes)", path,
                 (unsigned long long)size);
    emit_artifact(r, "weights", name, path, size, sha);
    return 0;
}

/* sha256 of a canonical text of every spec field that shapes the run, so a checkpoint is
 * only resumed by the job that wrote it (same model, data, optimizer, batch, seed, stages).
 * Floats are printed in hex, so the text is exact. */
static void spec_fingerprint(const eng_job_spec *j, char hex[65])
{
    eng_sha256 h;
    char b[512];
    eng_sha256_init(&h);
#define PUT(...)                                                                     \
    do {                                                                             \
        int n_ = snprintf(b, sizeof(b), __VA_ARGS__);                                \
        eng_sha256_update(&h, b, n_ > 0 && (size_t)n_ < sizeof(b) ? (size_t)n_ : 0); \
    } while (0)
    PUT("v2 seed=%llu bs=%u\n", (unsigned long long)j->seed, j->batch_size);
    PUT("model %.31s %u %a\n", j->model.arch, j->model.n_hidden, (double)j->model.dropout);
    for (uint32_t i = 0; i < j->model.n_hidden && i < ENG_MAX_HIDDEN; i++)
        PUT(" %u", j->model.hidden[i]);
    const eng_data_spec *d = &j->data;
    PUT("\ndata %d %u %u %u %u %a %llu %u %u %d %a %a\n", (int)d->kind, d->n_train, d->n_valid,
        d->features, d->classes, (double)d->noise, (unsigned long long)d->seed, d->n_subset,
        d->per_class_limit, (int)d->normalize_auto, (double)d->mean, (double)d->std);
    for (uint32_t i = 0; i < d->n_subset && i < ENG_MAX_CLASSES; i++)
        PUT(" %d", d->subset[i]);
    const eng_opt_spec *o = &j->opt;
    PUT("\nopt %d %a %a %a %a %d\n", (int)o->kind, (double)o->mom, (double)o->sqr_mom,
        (double)o->eps, (double)o->wd, (int)o->train_bn);
    for (size_t i = 0; i < j->n_stages; i++) {
        const eng_stage *s = &j->stages[i];
        PUT("stage %d %d %u lr %d %u %d %a %a", (int)s->op, s->n, s->epochs, (int)s->lr.kind,
            s->lr.n, (int)s->lr.suggest, (double)s->lr.divide, (double)s->lr.slice_lo_divide);
        for (int k = 0; k < ENG_MAX_GROUPS; k++)
            PUT(" %a", (double)s->lr.v[k]);
        PUT(" %a %a %a %a %a %a %a %a %a %u %d %.63s\n", (double)s->div, (double)s->div_final,
            (double)s->pct_start, (double)s->moms[0], (double)s->moms[1], (double)s->moms[2],
            (double)s->wd, (double)s->start_lr, (double)s->end_lr, s->num_it, (int)s->stop_div,
            s->name);
        PUT(" ft %u %a\n", s->freeze_epochs, (double)s->lr_mult);
    }
    for (uint32_t i = 0; i < j->n_metrics && i < ENG_MAX_METRICS; i++)
        PUT("metric %d %u\n", (int)j->metrics[i].kind, j->metrics[i].k);
    const eng_train_callbacks *c = &j->callbacks;
    const eng_tracker_spec *tr[2] = {&c->early_stopping, &c->save_best};
    for (int i = 0; i < 2; i++)
        PUT("tracker %d %.31s %d %a %u %.63s\n", (int)tr[i]->enabled, tr[i]->monitor, tr[i]->comp,
            (double)tr[i]->min_delta, tr[i]->patience, tr[i]->fname);
    PUT("cb %d %d %a %a\n", (int)c->terminate_on_nan, (int)c->grad_clip, (double)c->clip_max_norm,
        (double)c->clip_norm_type);
#undef PUT
    eng_sha256_final_hex(&h, hex);
}

/* Checkpoint metadata values: integers in decimal, floats in C99 hex (exact). */
#define N_META_MAX 64

typedef struct meta_buf {
    eng_st_kv kv[N_META_MAX];
    char keys[N_META_MAX][48];
    char vals[N_META_MAX][200];
    size_t n;
} meta_buf;

static void meta_add(meta_buf *mb, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void meta_add(meta_buf *mb, const char *key, const char *fmt, ...)
{
    ENG_ASSERT(mb->n < N_META_MAX);
    va_list ap;
    snprintf(mb->keys[mb->n], sizeof(mb->keys[0]), "%s", key);
    va_start(ap, fmt);
    vsnprintf(mb->vals[mb->n], sizeof(mb->vals[0]), fmt, ap);
    va_end(ap);
    mb->kv[mb->n].key = mb->keys[mb->n];
    mb->kv[mb->n].value = mb->vals[mb->n];
    mb->n++;
}

static int write_checkpoint(runner *r)
{
    char path[ENG_PATH_MAX + 80], sha[65];
    uint64_t size = 0;
    eng_model *m = r->model;
    int rc = out_path(r, "checkpoint", path, sizeof(path));
    if (rc)
        return rc;
    size_t nt = 3 * m->n_params + 5;
    eng_st_tensor *t = calloc(nt, sizeof(*t));
    char(*names)[110] = calloc(2 * m->n_params + 1, sizeof(*names));
    /* step counts as exact floats (< 2^24) in a tensor: a metadata string would not fit */
    float *steps = calloc(m->n_params + 1, sizeof(float));
    meta_buf *mb = calloc(1, sizeof(*mb));
    if (!t || !names || !steps || !mb) {
        rc = eng_err_set(r->err, ENG_ENOMEM, NULL, "out of memory writing a checkpoint");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        const eng_param *p = &m->params[i];
        for (int which = 0; which < 3; which++) {
            eng_st_tensor *e = &t[k++];
            if (which == 0) {
                e->name = p->name;
                e->data = m->w + p->offset;
            } else {
                char *nm = names[2 * i + (size_t)(which - 1)];
                snprintf(nm, 110, "opt.%s.%s", which == 1 ? "m" : "v", p->name);
                e->name = nm;
                e->data = (which == 1 ? m->m : m->v) + p->offset;
            }
            e->ndim = p->info.ndim;
            memcpy(e->shape, p->info.shape, sizeof(p->info.shape));
        }
        steps[i] = (float)m->step[i];
    }
    t[k++] =
        (eng_st_tensor){.name = "__opt.steps", .ndim = 1, .shape = {m->n_params}, .data = steps};
    if (r->rec.n_batch)
        t[k++] = (eng_st_tensor){.name = "__recorder.batch",
                                 .ndim = 2,
                                 .shape = {r->rec.n_batch, 3},
                                 .data = r->rec.batch};
    if (r->rec.n_epoch)
        t[k++] = (eng_st_tensor){.name = "__recorder.epoch",
                                 .ndim = 2,
                                 .shape = {r->rec.n_epoch, r->rec.n_cols},
                                 .data = r->rec.epoch};
    if (r->have_lf && r->lf.n) {
        t[k++] = (eng_st_tensor){
            .name = "__lr_find.lrs", .ndim = 1, .shape = {r->lf.n}, .data = r->lf_lrs};
        t[k++] = (eng_st_tensor){
            .name = "__lr_find.losses", .ndim = 1, .shape = {r->lf.n}, .data = r->lf_losses};
    }
    meta_add(mb, "format", "%s", CKPT_FORMAT);
    meta_add(mb, "arch", "%s", r->spec->model.arch);
    meta_add(mb, "n_stages", "%zu", r->spec->n_stages);
    char fp[65];
    spec_fingerprint(r->spec, fp);
    meta_add(mb, "spec_sha256", "%s", fp);
    meta_add(mb, "n_params", "%zu", m->n_params);
    meta_add(mb, "stage", "%zu", r->stage);
    meta_add(mb, "epoch", "%u", r->epoch);
    meta_add(mb, "batch", "%u", r->batch);
    meta_add(mb, "step", "%llu", (unsigned long long)r->step);
    meta_add(mb, "planned_done", "%llu", (unsigned long long)r->planned_done);
    meta_add(mb, "frozen_idx", "%zu", m->frozen_idx);
    meta_add(mb, "rng", "%016llx,%016llx,%016llx,%016llx", (unsigned long long)r->tr.rng.s[0],
             (unsigned long long)r->tr.rng.s[1], (unsigned long long)r->tr.rng.s[2],
             (unsigned long long)r->tr.rng.s[3]);
    meta_add(mb, "smooth", "%a,%u", r->tr.smooth.val, r->tr.smooth.count);
    meta_add(mb, "tracker.early_stopping", "%a,%u,%d", r->es.best, r->es.wait, (int)r->es.saved);
    meta_add(mb, "tracker.save_best", "%a,%u,%d", r->sb.best, r->sb.wait, (int)r->sb.saved);
    for (size_t g = 0; g < r->tr.opt.n_groups; g++) {
        char key[32];
        const eng_hypers *h = &r->tr.opt.h[g];
        snprintf(key, sizeof(key), "hypers.%zu", g);
        meta_add(mb, key, "%a,%a,%a,%a,%a", (double)h->lr, (double)h->mom, (double)h->sqr_mom,
                 (double)h->eps, (double)h->wd);
    }
    if (r->have_lf) {
        meta_add(mb, "lr_find", "%d,%a,%a,%a,%a", r->lf.ok ? 1 : 0, (double)r->lf.valley,
                 (double)r->lf.minimum, (double)r->lf.steep, (double)r->lf.slide);
        meta_add(mb, "lr_find_reason", "%s", r->lf.reason);
    }
    rc = eng_st_write(path, t, k, mb->kv, mb->n, &size, sha, r->err);
    if (rc == 0)
        emit_artifact(r, "checkpoint", "checkpoint", path, size, sha);
out:
    free(t);
    free(names);
    free(steps);
    free(mb);
    return rc;
}

static int ckpt_fail(runner *r, const char *path, const char *what)
{
    return eng_err_set(r->err, ENG_EFORMAT, NULL, "%s: not a checkpoint of this job: %s", path,
                       what);
}

static int parse_floats(const char *s, double *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *end;
        if (!s)
            return -1;
        out[i] = strtod(s, &end);
        if (end == s || (i + 1 < n && *end != ','))
            return -1;
        s = end + (i + 1 < n ? 1 : 0);
    }
    return 0;
}

static int lf_reserve(runner *r, size_t n)
{
    if (n <= r->lf_cap)
        return 0;
    float *a = realloc(r->lf_lrs, n * sizeof(float));
    if (!a)
        return ENG_ENOMEM;
    r->lf_lrs = a;
    float *b = realloc(r->lf_losses, n * sizeof(float));
    if (!b)
        return ENG_ENOMEM;
    r->lf_losses = b;
    r->lf_cap = n;
    return 0;
}

static int load_checkpoint(runner *r, const char *path)
{
    eng_st_file *f = NULL;
    eng_model *m = r->model;
    int rc = eng_st_read(path, &f, r->err);
    if (rc)
        return rc;
    const char *v;
    char key[32];
    double d[5];
    unsigned long long u[4];
    if (!(v = eng_st_meta(f, "format")) || strcmp(v, CKPT_FORMAT) != 0) {
        rc = ckpt_fail(r, path, "format");
        goto out;
    }
    char fp[65];
    spec_fingerprint(r->spec, fp);
    if (!(v = eng_st_meta(f, "spec_sha256")) || strcmp(v, fp) != 0) {
        rc = ckpt_fail(r, path, "it was written by a job with a different spec");
        goto out;
    }
    if (!(v = eng_st_meta(f, "n_stages")) || strtoull(v, NULL, 10) != r->spec->n_stages ||
        !(v = eng_st_meta(f, "arch")) || strcmp(v, r->spec->model.arch) != 0 ||
        !(v = eng_st_meta(f, "n_params")) || strtoull(v, NULL, 10) != m->n_params) {
        rc = ckpt_fail(r, path, "different architecture or number of stages");
        goto out;
    }
    for (size_t i = 0; i < m->n_params; i++) {
        const eng_param *p = &m->params[i];
        char nm[110];
        for (int which = 0; which < 3; which++) {
            if (which == 0)
                snprintf(nm, sizeof(nm), "%s", p->name);
            else
                snprintf(nm, sizeof(nm), "opt.%s.%s", which == 1 ? "m" : "v", p->name);
            const eng_st_entry *e = eng_st_find(f, nm);
            if (!e) {
                rc = ckpt_fail(r, path, "missing tensor");
                goto out;
            }
            float *dst = (which == 0 ? m->w : which == 1 ? m->m : m->v) + p->offset;
            rc = eng_st_copy(f, e, dst, p->count, r->err);
            if (rc)
                goto out;
        }
    }
    const eng_st_entry *es = eng_st_find(f, "__opt.steps");
    if (!es || es->ndim != 1 || es->shape[0] != m->n_params) {
        rc = ckpt_fail(r, path, "optimizer step counts");
        goto out;
    }
    {
        float *steps = malloc((m->n_params + 1) * sizeof(float));
        if (!steps) {
            rc = eng_err_set(r->err, ENG_ENOMEM, NULL, "out of memory");
            goto out;
        }
        rc = eng_st_copy(f, es, steps, m->n_params, r->err);
        for (size_t i = 0; !rc && i < m->n_params; i++)
            m->step[i] = (uint32_t)steps[i];
        free(steps);
        if (rc)
            goto out;
    }
    const eng_st_entry *rb = eng_st_find(f, "__recorder.batch");
    const eng_st_entry *re = eng_st_find(f, "__recorder.epoch");
    if ((rb && (rb->ndim != 2 || rb->shape[1] != 3)) ||
        (re && (re->ndim != 2 || re->shape[1] != r->rec.n_cols))) {
        rc = ckpt_fail(r, path, "recorder history");
        goto out;
    }
    {
        size_t nb = rb ? rb->shape[0] : 0, ne = re ? re->shape[0] : 0;
        float *bb = malloc((nb * 3 + 1) * sizeof(float));
        float *eb = malloc((ne * r->rec.n_cols + 1) * sizeof(float));
        rc = !bb || !eb ? eng_err_set(r->err, ENG_ENOMEM, NULL, "out of memory") : 0;
        if (!rc && rb)
            rc = eng_st_copy(f, rb, bb, nb * 3, r->err);
        if (!rc && re)
            rc = eng_st_copy(f, re, eb, ne * r->rec.n_cols, r->err);
        if (!rc && eng_recorder_set(&r->rec, bb, nb, eb, ne))
            rc = eng_err_set(r->err, ENG_ENOMEM, NULL, "out of memory");
        free(bb);
        free(eb);
        if (rc)
            goto out;
    }
    const char *tk[2] = {"tracker.early_stopping", "tracker.save_best"};
    eng_tracker *tt[2] = {&r->es, &r->sb};
    for (int i = 0; i < 2; i++) {
        if (parse_floats(eng_st_meta(f, tk[i]), d, 3)) {
            rc = ckpt_fail(r, path, tk[i]);
            goto out;
        }
        tt[i]->best = d[0];
        tt[i]->wait = (uint32_t)d[1];
        tt[i]->saved = d[2] != 0.0;
    }
    unsigned long long pos[6];
    const char *pk[6] = {"stage", "epoch", "batch", "step", "planned_done", "frozen_idx"};
    for (int i = 0; i < 6; i++) {
        if (!(v = eng_st_meta(f, pk[i]))) {
            rc = ckpt_fail(r, path, pk[i]);
            goto out;
        }
        pos[i] = strtoull(v, NULL, 10);
    }
    if (pos[0] > r->spec->n_stages || pos[5] > m->n_groups) {
        rc = ckpt_fail(r, path, "position out of range");
        goto out;
    }
    r->stage = (size_t)pos[0];
    r->epoch = (uint32_t)pos[1];
    r->batch = (uint32_t)pos[2];
    r->step = pos[3];
    r->planned_done = pos[4];
    eng_model_freeze_to(m, (int32_t)pos[5]);
    if (!(v = eng_st_meta(f, "rng")) ||
        sscanf(v, "%llx,%llx,%llx,%llx", &u[0], &u[1], &u[2], &u[3]) != 4) {
        rc = ckpt_fail(r, path, "rng");
        goto out;
    }
    for (int i = 0; i < 4; i++)
        r->tr.rng.s[i] = u[i];
    if (!(v = eng_st_meta(f, "smooth")) || parse_floats(v, d, 2)) {
        rc = ckpt_fail(r, path, "smooth");
        goto out;
    }
    r->tr.smooth.val = d[0];
    r->tr.smooth.count = (uint32_t)d[1];
    for (size_t g = 0; g < r->tr.opt.n_groups; g++) {
        snprintf(key, sizeof(key), "hypers.%zu", g);
        if (parse_floats(eng_st_meta(f, key), d, 5)) {
            rc = ckpt_fail(r, path, "hypers");
            goto out;
        }
        eng_hypers *h = &r->tr.opt.h[g];
        h->lr = (float)d[0];
        h->mom = (float)d[1];
        h->sqr_mom = (float)d[2];
        h->eps = (float)d[3];
        h->wd = (float)d[4];
    }
    if ((v = eng_st_meta(f, "lr_find"))) {
        double lf[5];
        if (parse_floats(v, lf, 5)) {
            rc = ckpt_fail(r, path, "lr_find");
            goto out;
        }
        r->have_lf = true;
        r->lf.ok = lf[0] != 0.0;
        r->lf.valley = (float)lf[1];
        r->lf.minimum = (float)lf[2];
        r->lf.steep = (float)lf[3];
        r->lf.slide = (float)lf[4];
        v = eng_st_meta(f, "lr_find_reason");
        snprintf(r->lf.reason, sizeof(r->lf.reason), "%s", v ? v : "");
        const eng_st_entry *el = eng_st_find(f, "__lr_find.lrs");
        const eng_st_entry *eo = eng_st_find(f, "__lr_find.losses");
        r->lf.n = 0;
        if (el && eo && el->ndim == 1 && eo->ndim == 1 && el->shape[0] == eo->shape[0]) {
            size_t n = el->shape[0];
            if (lf_reserve(r, n)) {
                rc = eng_err_set(r->err, ENG_ENOMEM, NULL, "out of memory");
                goto out;
            }
            if ((rc = eng_st_copy(f, el, r->lf_lrs, n, r->err)) ||
                (rc = eng_st_copy(f, eo, r->lf_losses, n, r->err)))
                goto out;
            r->lf.n = n;
        }
        r->lf.lrs = r->lf_lrs;
        r->lf.losses = r->lf_losses;
    }
out:
    eng_st_close(f);
    return rc;
}

/* Acts on a pending cancel/interrupt at a check point where the state matches the
 * position. Returns 0 to go on, or the code eng_job_run should return. */
static int check_pending(runner *r)
{
    if (r->pending == ENG_CANCEL)
        return ENG_ECANCELED;
    if (r->pending == ENG_INTERRUPT) {
        r->pending = ENG_CONTINUE;
        int rc = write_checkpoint(r);
        return rc ? rc : ENG_EINTERRUPTED;
    }
    return 0;
}

/* ---- stages ------------------------------------------------------------------------------ */

static void batch_indices(runner *r, size_t b, const uint32_t **idx, size_t *N)
{
    *idx = r->tr.perm + b * r->bsz;
    *N = r->bsz;
}

static void stage_field(runner *r, const char *name, char *field, size_t size)
{
    snprintf(field, size, "stages.%zu.%s", r->stage, name);
}

/* One fastai fit (fit or fit_one_cycle): a fine_tune stage runs two of them. Epochs are
 * counted within the fit; the stage's position adds e_off (the epochs of earlier fits of
 * the same stage). */
typedef struct fit_plan {
    uint32_t epochs, e_off, fit_index, stage_epochs;
    bool one_cycle;
    float peak[ENG_MAX_GROUPS]; /* lr_max per group (fit: the constant lr) */
    float div, div_final, pct_start, moms[3];
    float wd; /* < 0: keep the current hyper (fastai fit(wd=None)) */
} fit_plan;

static float column_value(runner *r, const char *name, float train_loss, float valid_loss)
{
    char col[48];
    if (strcmp(name, "train_loss") == 0)
        return train_loss;
    if (strcmp(name, "valid_loss") == 0)
        return valid_loss;
    for (uint32_t k = 0; k < r->spec->n_metrics; k++) {
        eng_metric_name(&r->spec->metrics[k], col, sizeof(col));
        if (strcmp(name, col) == 0)
            return r->mvals[k];
    }
    return NAN; /* eng_job_spec_validate rejects unknown monitors */
}

/* fastai SaveModelCallback.after_fit: reload the best weights saved during this fit. */
static int reload_best(runner *r)
{
    const eng_tracker_spec *sb = &r->spec->callbacks.save_best;
    char path[ENG_PATH_MAX + 80];
    if (!sb->enabled)
        return 0;
    if (!r->sb.saved) {
        log_msg(r, ENG_LOG_WARN, "save_best: no epoch of this fit improved %s; weights kept",
                sb->monitor);
        return 0;
    }
    int rc = out_path(r, sb->fname, path, sizeof(path));
    if (!rc)
        rc = eng_st_load_model(path, r->model, false, r->err);
    if (!rc)
        log_msg(r, ENG_LOG_INFO, "save_best: reloaded %s (%s %g)", path, sb->monitor, r->sb.best);
    return rc;
}

/* The after-epoch callbacks in fastai's order (SaveModel 61, EarlyStopping 63). Sets *stop
 * when early stopping ends the fit. */
static int epoch_callbacks(runner *r, uint32_t e, float tl, float vl, bool *stop)
{
    const eng_train_callbacks *cb = &r->spec->callbacks;
    *stop = false;
    if (cb->save_best.enabled) {
        float v = column_value(r, cb->save_best.monitor, tl, vl);
        if (eng_tracker_update(&r->sb, v)) {
            log_msg(r, ENG_LOG_INFO, "Better model found at epoch %u with %s value: %g.", e,
                    cb->save_best.monitor, (double)v);
            int rc = save_weights(r, cb->save_best.fname, false);
            if (rc)
                return rc;
            r->sb.saved = true;
        }
    }
    if (cb->early_stopping.enabled) {
        float v = column_value(r, cb->early_stopping.monitor, tl, vl);
        if (eng_tracker_update(&r->es, v))
            r->es.wait = 0;
        else
            r->es.wait++;
        if (r->es.wait >= cb->early_stopping.patience) {
            log_msg(r, ENG_LOG_INFO, "No improvement since epoch %u: early stopping",
                    e - r->es.wait);
            *stop = true;
        }
    }
    return 0;
}

static int non_finite(runner *r, const char *what, float v, uint32_t e, size_t b, float lr)
{
    return eng_err_set(r->err, ENG_ENUMERIC, NULL,
                       "training diverged: %s is %f at stage %zu epoch %u batch %zu (learning "
                       "rate %g too high?)",
                       what, (double)v, r->stage, e, b, (double)lr);
}

/* eng_trainer_validate's poll: a DEBUG log event before each validation batch gives the
 * caller's progress callback a chance to cancel or interrupt within one batch. A log event
 * because every caller already treats ENG_EVENT_LOG at DEBUG level as free of side effects
 * (an event kind of its own would be an addition to engine.h's enum every caller switches
 * over). */
static bool valid_poll(void *user, size_t batch, size_t n_batches)
{
    runner *r = user;
    log_msg(r, ENG_LOG_DEBUG, "validation batch %zu/%zu", batch + 1, n_batches);
    return r->pending != ENG_CONTINUE;
}

/* eng_dataset_load_stoppable's stop: as valid_poll, between the files and images the job's
 * data is read from. */
static bool load_poll(void *user)
{
    runner *r = user;
    log_msg(r, ENG_LOG_DEBUG, "loading data");
    return r->pending != ENG_CONTINUE;
}

static int run_fit(runner *r, const fit_plan *fp, uint32_t e0, uint32_t b0)
{
    eng_model *m = r->model;
    eng_optim *o = &r->tr.opt;
    const eng_train_callbacks *cbs = &r->spec->callbacks;
    size_t G = m->n_groups;
    int rc;
    for (size_t g = 0; g < G; g++) {
        if (fp->wd >= 0.0f)
            o->h[g].wd = fp->wd;
        if (!fp->one_cycle)
            o->h[g].lr = fp->peak[g];
    }
    if (e0 == 0 && b0 == 0) {
        /* fastai resets the recorder's smoothed loss and the trackers at each fit */
        eng_smooth_reset(&r->tr.smooth);
        eng_tracker_reset(&r->es);
        eng_tracker_reset(&r->sb);
    }
    size_t total = (size_t)fp->epochs * r->nb;
    for (uint32_t e = e0; e < fp->epochs; e++) {
        double t0 = now_s();
        uint32_t se = fp->e_off + e; /* epoch within the stage */
        eng_trainer_shuffle(&r->tr, r->spec->seed, r->stage, se);
        for (size_t b = (e == e0 ? b0 : 0); b < r->nb; b++) {
            if (fp->one_cycle) {
                /* sampled before each batch at pos = t/N, N the fit's batches */
                double pos = (double)((size_t)e * r->nb + b) / (double)total;
                for (size_t g = 0; g < G; g++) {
                    double L = (double)fp->peak[g];
                    o->h[g].lr =
                        (float)eng_sched_one_cycle((double)fp->pct_start, L / (double)fp->div, L,
                                                   L / (double)fp->div_final, pos);
                    o->h[g].mom =
                        (float)eng_sched_one_cycle((double)fp->pct_start, (double)fp->moms[0],
                                                   (double)fp->moms[1], (double)fp->moms[2], pos);
                }
            }
            const uint32_t *idx;
            size_t N;
            batch_indices(r, b, &idx, &N);
            float loss = eng_trainer_step(&r->tr, idx, N);
            float sm = eng_smooth_add(&r->tr.smooth, loss);
            r->step++;
            r->planned_done++;
            r->epoch = se;
            r->batch = (uint32_t)b + 1;
            if (eng_recorder_add_batch(&r->rec, sm, o->h[G - 1].lr, o->h[G - 1].mom))
                return eng_err_set(r->err, ENG_ENOMEM, NULL, "out of memory for the recorder");
            eng_event ev;
            ev_init(r, &ev, ENG_EVENT_BATCH);
            ev.epoch = se;
            ev.n_epochs = fp->stage_epochs;
            ev.batch = (uint32_t)b;
            ev.n_batches = (uint32_t)r->nb;
            ev.loss = loss;
            ev.smooth_loss = sm;
            ev.lr = o->h[G - 1].lr;
            ev.mom = o->h[G - 1].mom;
            ev.fit_index = fp->fit_index;
            ev.fit_epoch = e;
            emit(r, &ev);
            if (!isfinite(loss) && cbs->terminate_on_nan)
                return non_finite(r, "loss", loss, se, b, ev.lr);
            if ((rc = check_pending(r)))
                return rc;
        }
        float vl, acc, row[3 + ENG_MAX_METRICS];
        size_t nm = r->spec->n_metrics;
        if (eng_trainer_validate(&r->tr, r->spec->metrics, nm, valid_poll, r, &vl, &acc,
                                 r->mvals)) {
            /* stopped between validation batches: nothing of this epoch's validation is
             * kept, and the position (se, nb) makes a resumed run validate again */
            rc = check_pending(r);
            ENG_ASSERT(rc != 0);
            return rc;
        }
        /* fastai train_loss: the smoothed loss at the end of the epoch */
        float tl = r->tr.smooth.count
                       ? (float)(r->tr.smooth.val / (1.0 - pow(0.98, r->tr.smooth.count)))
                       : NAN;
        double secs = now_s() - t0;
        row[0] = tl;
        row[1] = vl;
        memcpy(row + 2, r->mvals, nm * sizeof(float));
        row[2 + nm] = (float)secs;
        if (eng_recorder_add_epoch(&r->rec, row))
            return eng_err_set(r->err, ENG_ENOMEM, NULL, "out of memory for the recorder");
        /* position after this epoch (also what the epoch checkpoint records) */
        r->epoch = se + 1;
        r->batch = 0;
        eng_event ev;
        ev_init(r, &ev, ENG_EVENT_EPOCH);
        ev.epoch = se;
        ev.n_epochs = fp->stage_epochs;
        ev.n_batches = (uint32_t)r->nb;
        ev.batch = (uint32_t)r->nb;
        ev.train_loss = tl;
        ev.valid_loss = vl;
        ev.accuracy = acc;
        ev.seconds = secs;
        ev.n_metrics = nm;
        ev.metrics = r->mvals;
        ev.fit_index = fp->fit_index;
        ev.fit_epoch = e;
        snprintf(r->summary, sizeof(r->summary),
                 "epoch %u/%u train_loss=%.6f valid_loss=%.6f accuracy=%.6f", se + 1,
                 fp->stage_epochs, (double)tl, (double)vl, (double)acc);
        emit(r, &ev);
        if (r->pending == ENG_CANCEL)
            return ENG_ECANCELED;
        if (!isfinite(vl) && r->data->n_valid && cbs->terminate_on_nan)
            return non_finite(r, "valid_loss", vl, se, r->nb, o->h[G - 1].lr);
        bool stop;
        if ((rc = epoch_callbacks(r, e, tl, vl, &stop)))
            return rc;
        if (stop || e + 1 == fp->epochs) {
            /* after_fit before the checkpoint, so a resume at the fit's end has nothing
             * left to do */
            r->epoch = fp->e_off + fp->epochs;
            r->planned_done += (uint64_t)(fp->epochs - e - 1) * r->nb;
            if ((rc = reload_best(r)))
                return rc;
        }
        if ((rc = write_checkpoint(r)))
            return rc;
        if (r->pending == ENG_INTERRUPT) {
            r->pending = ENG_CONTINUE;
            return ENG_EINTERRUPTED; /* the epoch checkpoint is the resumable state */
        }
        if (stop)
            break;
    }
    return 0;
}

typedef struct lf_backup {
    float *w, *m, *v;
    uint32_t *step;
    eng_hypers h[ENG_MAX_GROUPS];
    eng_rng rng;
    eng_smooth smooth;
    uint64_t step_count, planned_done;
} lf_backup;

static void lf_restore(runner *r, const lf_backup *bk)
{
    eng_model *m = r->model;
    memcpy(m->w, bk->w, m->n_floats * sizeof(float));
    memcpy(m->m, bk->m, m->n_floats * sizeof(float));
    memcpy(m->v, bk->v, m->n_floats * sizeof(float));
    memcpy(m->step, bk->step, m->n_params * sizeof(uint32_t));
    memcpy(r->tr.opt.h, bk->h, sizeof(bk->h));
}

static int run_lr_find(runner *r, const eng_stage *st)
{
    eng_model *m = r->model;
    eng_optim *o = &r->tr.opt;
    size_t G = m->n_groups, nf = m->n_floats;
    size_t num_it = st->num_it < 6 ? 6 : st->num_it; /* LRFinder forces num_it >= 6 */
    /* lr_find computes the epochs from the num_it it was given, before LRFinder's floor */
    size_t n_epoch = st->num_it / r->nb + 1;
    size_t n_max = n_epoch * r->nb < num_it ? n_epoch * r->nb : num_it;
    int rc = 0;
    lf_backup bk = {0};
    bk.w = malloc(nf * sizeof(float) + 1);
    bk.m = malloc(nf * sizeof(float) + 1);
    bk.v = malloc(nf * sizeof(float) + 1);
    bk.step = malloc(m->n_params * sizeof(uint32_t) + 1);
    if (!bk.w || !bk.m || !bk.v || !bk.step || lf_reserve(r, num_it)) {
        rc = eng_err_set(r->err, ENG_ENOMEM, NULL, "out of memory for lr_find");
        goto out;
    }
    memcpy(bk.w, m->w, nf * sizeof(float));
    memcpy(bk.m, m->m, nf * sizeof(float));
    memcpy(bk.v, m->v, nf * sizeof(float));
    memcpy(bk.step, m->step, m->n_params * sizeof(uint32_t));
    memcpy(bk.h, o->h, sizeof(bk.h));
    bk.rng = r->tr.rng;
    bk.smooth = r->tr.smooth;
    bk.step_count = r->step;
    bk.planned_done = r->planned_done;

    eng_smooth_reset(&r->tr.smooth);
    size_t n = 0;
    float best = INFINITY;
    bool stop = false;
    for (uint32_t e = 0; e < n_epoch && !stop; e++) {
        eng_trainer_shuffle(&r->tr, r->spec->seed, r->stage, e);
        for (size_t b = 0; b < r->nb && !stop; b++) {
            float lr = (float)eng_lrfind_lr((double)st->start_lr, (double)st->end_lr, n, num_it);
            for (size_t g = 0; g < G; g++)
                o->h[g].lr = lr;
            const uint32_t *idx;
            size_t N;
            batch_indices(r, b, &idx, &N);
            float loss = eng_trainer_step(&r->tr, idx, N);
            float sm = eng_smooth_add(&r->tr.smooth, loss);
            r->lf_lrs[n] = lr;
            r->lf_losses[n] = sm;
            n++;
            r->step++;
            r->planned_done++;
            if (sm < best)
                best = sm;
            if (st->stop_div && sm > 4.0f * best)
                stop = true;
            if (n >= num_it)
                stop = true;
            if (isnan(sm) && !stop) {
                /* fastai goes on to num_it batches (NaN never exceeds 4x the best) and
                 * every later smoothed loss stays NaN: record those points without
                 * training on NaN weights, so the suggestions' [num_it//10 : -5] slice
                 * sees what fastai's does */
                for (; n < n_max; n++) {
                    r->lf_lrs[n] =
                        (float)eng_lrfind_lr((double)st->start_lr, (double)st->end_lr, n, num_it);
                    r->lf_losses[n] = NAN;
                }
                stop = true;
            }
            eng_event ev;
            ev_init(r, &ev, ENG_EVENT_BATCH);
            ev.epoch = e;
            ev.n_epochs = (uint32_t)n_epoch;
            ev.batch = (uint32_t)b;
            ev.n_batches = (uint32_t)r->nb;
            ev.loss = loss;
            ev.smooth_loss = sm;
            ev.lr = lr;
            ev.mom = o->h[G - 1].mom;
            emit(r, &ev);
            if (r->pending == ENG_CANCEL) {
                rc = ENG_ECANCELED;
                goto out;
            }
            if (r->pending == ENG_INTERRUPT) {
                /* restart this sweep on resume: checkpoint the state before it */
                lf_restore(r, &bk);
                r->tr.rng = bk.rng;
                r->tr.smooth = bk.smooth;
                r->step = bk.step_count;
                r->planned_done = bk.planned_done;
                r->epoch = 0;
                r->batch = 0;
                rc = check_pending(r);
                goto out;
            }
        }
    }
    /* fastai after_fit: reload weights, optimizer state and hypers saved before the sweep */
    lf_restore(r, &bk);
    r->tr.smooth = bk.smooth;
    r->planned_done = bk.planned_done + num_it;
    r->have_lf = true;
    r->lf.n = n;
    r->lf.lrs = r->lf_lrs;
    r->lf.losses = r->lf_losses;
    eng_lrfind_suggest(r->lf_lrs, r->lf_losses, n, st->num_it, &r->lf);
    eng_event ev;
    ev_init(r, &ev, ENG_EVENT_LR_FIND);
    ev.lr_find = &r->lf;
    emit(r, &ev);
    if (!r->lf.ok) {
        log_msg(r, ENG_LOG_WARN, "lr_find made no suggestion: %s", r->lf.reason);
        snprintf(r->summary, sizeof(r->summary), "%zu points, no suggestion: %s", n, r->lf.reason);
    } else {
        snprintf(r->summary, sizeof(r->summary),
                 "%zu points, valley=%.3g minimum=%.3g steep=%.3g slide=%.3g", n,
                 (double)r->lf.valley, (double)r->lf.minimum, (double)r->lf.steep,
                 (double)r->lf.slide);
    }
out:
    free(bk.w);
    free(bk.m);
    free(bk.v);
    free(bk.step);
    return rc;
}

static void freeze_summary(runner *r)
{
    eng_model *m = r->model;
    if (m->frozen_idx == 0)
        snprintf(r->summary, sizeof(r->summary), "model unfrozen (%zu layer groups)", m->n_groups);
    else
        snprintf(r->summary, sizeof(r->summary), "model frozen up to layer group #%zu of %zu",
                 m->frozen_idx, m->n_groups);
}

/* fastai Learner.freeze_to: set the frozen groups, then opt.clear_state() (hypers kept). */
static void freeze_to(runner *r, int32_t n)
{
    eng_model_freeze_to(r->model, n);
    eng_optim_clear(r->model);
}

static void fit_plan_from_stage(const eng_stage *st, bool one_cycle, fit_plan *fp)
{
    memset(fp, 0, sizeof(*fp));
    fp->epochs = fp->stage_epochs = st->epochs;
    fp->one_cycle = one_cycle;
    fp->div = st->div;
    fp->div_final = st->div_final;
    fp->pct_start = st->pct_start;
    memcpy(fp->moms, st->moms, sizeof(fp->moms));
    fp->wd = st->wd;
}

/* fastai fine_tune: freeze; fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99);
 * base_lr /= 2; unfreeze; fit_one_cycle(epochs, slice(base_lr/lr_mult, base_lr),
 * pct_start, div); div_final, moms and wd go to both fits. (e0, b0): the stage's position,
 * epochs counted over both fits. */
static int run_fine_tune(runner *r, const eng_stage *st, uint32_t e0, uint32_t b0)
{
    size_t G = r->model->n_groups;
    float v[ENG_MAX_GROUPS];
    char field[64];
    stage_field(r, "base_lr", field, sizeof(field));
    int rc = eng_lr_resolve(&st->lr, G, r->have_lf ? &r->lf : NULL, v, field, r->err);
    if (rc)
        return rc;
    double base = (double)v[G - 1];
    fit_plan fp;
    fit_plan_from_stage(st, true, &fp);
    fp.stage_epochs = st->freeze_epochs + st->epochs;
    if (e0 < st->freeze_epochs) {
        if (e0 == 0 && b0 == 0)
            freeze_to(r, -1);
        fp.epochs = st->freeze_epochs;
        fp.div = 25.0f; /* fit_one_cycle's default: fine_tune's div is the second fit's */
        fp.pct_start = 0.99f;
        for (size_t g = 0; g + 1 < G; g++)
            fp.peak[g] = (float)(base / 10.0); /* slice(base_lr) */
        fp.peak[G - 1] = (float)base;
        if ((rc = run_fit(r, &fp, e0, b0)))
            return rc;
        e0 = st->freeze_epochs;
        b0 = 0;
    }
    base /= 2.0;
    if (e0 == st->freeze_epochs && b0 == 0) {
        freeze_to(r, 0);
        log_msg(r, ENG_LOG_INFO, "fine_tune: unfreeze, fit_one_cycle(%u, slice(%g, %g))",
                st->epochs, base / (double)st->lr_mult, base);
    }
    fp.epochs = st->epochs;
    fp.e_off = st->freeze_epochs;
    fp.fit_index = 1;
    fp.div = st->div;
    fp.pct_start = st->pct_start;
    eng_even_mults(base / (double)st->lr_mult, base, G, fp.peak);
    return run_fit(r, &fp, e0 - st->freeze_epochs, b0);
}

static int run_stage(runner *r, const eng_stage *st, uint32_t e0, uint32_t b0)
{
    r->summary[0] = '\0';
    switch (st->op) {
    case ENG_STAGE_FREEZE:
        freeze_to(r, -1);
        freeze_summary(r);
        return 0;
    case ENG_STAGE_FREEZE_TO:
        freeze_to(r, st->n);
        if (st->n >= 0 && (size_t)st->n >= r->model->n_groups)
            log_msg(r, ENG_LOG_WARN, "freeze_to(%d): the whole model is frozen", st->n);
        freeze_summary(r);
        return 0;
    case ENG_STAGE_UNFREEZE:
        freeze_to(r, 0);
        freeze_summary(r);
        return 0;
    case ENG_STAGE_LR_FIND:
        return run_lr_find(r, st);
    case ENG_STAGE_FIT_ONE_CYCLE:
    case ENG_STAGE_FIT: {
        bool oc = st->op == ENG_STAGE_FIT_ONE_CYCLE;
        fit_plan fp;
        char field[64];
        fit_plan_from_stage(st, oc, &fp);
        stage_field(r, oc ? "lr_max" : "lr", field, sizeof(field));
        int rc = eng_lr_resolve(&st->lr, r->model->n_groups, r->have_lf ? &r->lf : NULL, fp.peak,
                                field, r->err);
        return rc ? rc : run_fit(r, &fp, e0, b0);
    }
    case ENG_STAGE_FINE_TUNE:
        return run_fine_tune(r, st, e0, b0);
    case ENG_STAGE_SAVE:
        return save_weights(r, st->name, true);
    }
    return eng_err_set(r->err, ENG_EINVAL, NULL, "unknown stage op %d", (int)st->op);
}

static void plan(runner *r)
{
    r->planned_total = 0;
    for (size_t i = 0; i < r->spec->n_stages; i++) {
        const eng_stage *st = &r->spec->stages[i];
        if (st->op == ENG_STAGE_FIT || st->op == ENG_STAGE_FIT_ONE_CYCLE)
            r->planned_total += (uint64_t)st->epochs * r->nb;
        else if (st->op == ENG_STAGE_FINE_TUNE)
            r->planned_total += (uint64_t)(st->freeze_epochs + st->epochs) * r->nb;
        else if (st->op == ENG_STAGE_LR_FIND)
            r->planned_total += st->num_it < 6 ? 6 : st->num_it;
    }
}

int eng_job_run(const eng_job_spec *spec, const eng_run_opts *opts, const eng_callbacks *cb,
                eng_error *err)
{
    runner rs = {0}, *r = &rs;
    eng_rng init_rng;
    int rc;
    const uint16_t one = 1;
    if (err)
        err->field[0] = err->text[0] = '\0';
    if (*(const uint8_t *)&one != 1)
        return eng_err_set(err, ENG_EINVAL, NULL, "the engine needs a little-endian host");
    if (!spec || !opts)
        return eng_err_set(err, ENG_EINVAL, NULL, "spec and opts are required");
    rc = eng_job_spec_validate(spec, err);
    if (rc)
        return rc;
    r->spec = spec;
    r->opts = opts;
    r->cb = cb;
    r->err = err;
    eng_recorder_init(&r->rec, spec->n_metrics);
    eng_tracker_init(&r->es, &spec->callbacks.early_stopping);
    eng_tracker_init(&r->sb, &spec->callbacks.save_best);

    rc = eng_dataset_load_stoppable(&spec->data, load_poll, r, &r->data, err);
    if (rc == ENG_ECANCELED && r->pending != ENG_CONTINUE) {
        /* nothing is done yet, so there is no checkpoint to write: an interrupted job starts
         * again from scratch, or a resumed one from the checkpoint it was given */
        rc = r->pending == ENG_CANCEL ? ENG_ECANCELED : ENG_EINTERRUPTED;
        goto out;
    }
    if (rc)
        goto out;
    eng_rng_seed(&init_rng, spec->seed, 0x494e4954ull); /* "INIT" */
    rc = eng_model_create(&spec->model, r->data->in_ndim, r->data->in_shape, r->data->n_classes,
                          spec->opt.train_bn, &init_rng, &r->model, err);
    if (rc)
        goto out;
    /* fastai's training DataLoader drops the last partial batch; with fewer samples than
     * one batch we train on one batch of all of them instead of on nothing */
    r->bsz = spec->batch_size <= r->data->n_train ? spec->batch_size : r->data->n_train;
    r->nb = r->data->n_train / r->bsz;
    size_t max_batch = spec->batch_size > r->bsz ? spec->batch_size : r->bsz;
    rc = eng_trainer_init(&r->tr, r->model, r->data, &spec->opt, max_batch, spec->seed, err);
    if (rc)
        goto out;
    r->tr_ready = true;
    r->tr.clip = spec->callbacks.grad_clip;
    r->tr.clip_max_norm = spec->callbacks.clip_max_norm;
    r->tr.clip_norm_type = spec->callbacks.clip_norm_type;
    plan(r);

    uint32_t e0 = 0, b0 = 0;
    if (opts->resume_path && opts->resume_path[0]) {
        rc = load_checkpoint(r, opts->resume_path);
        if (rc)
            goto out;
        e0 = r->epoch;
        b0 = r->batch;
        log_msg(r, ENG_LOG_INFO, "resumed from %s at stage %zu epoch %u batch %u",
                opts->resume_path, r->stage, e0, b0);
    }
    for (; r->stage < spec->n_stages; r->stage++, e0 = b0 = 0) {
        const eng_stage *st = &spec->stages[r->stage];
        double t0 = now_s();
        r->epoch = e0;
        r->batch = b0;
        eng_event ev;
        ev_init(r, &ev, ENG_EVENT_STAGE_BEGIN);
        ev.epoch = e0;
        ev.n_epochs = st->epochs + (st->op == ENG_STAGE_FINE_TUNE ? st->freeze_epochs : 0);
        ev.n_batches = (uint32_t)r->nb;
        emit(r, &ev);
        if ((rc = check_pending(r)))
            goto out;
        rc = run_stage(r, st, e0, b0);
        if (rc)
            goto out;
        ev_init(r, &ev, ENG_EVENT_STAGE_END);
        ev.seconds = now_s() - t0;
        ev.message = r->summary[0] ? r->summary : NULL;
        emit(r, &ev);
        r->epoch = 0;
        r->batch = 0;
        r->stage++;
        rc = check_pending(r);
        r->stage--;
        if (rc)
            goto out;
    }
    rc = 0;
out:
    if (r->tr_ready)
        eng_trainer_fini(&r->tr);
    eng_model_destroy(r->model);
    eng_dataset_destroy(r->data);
    free(r->lf_lrs);
    free(r->lf_losses);
    eng_recorder_fini(&r->rec);
    return rc;
}
