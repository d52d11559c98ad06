/* test_engine_workflow: fastai's workflow pieces on an MLP with synthetic data: fine_tune
 * expands to fastai's two fits (LR/momentum per batch, frozen body in the first) and
 * resumes bit-identically inside either fit; early stopping, save-best (reload of the best
 * weights), terminate-on-NaN on and off, metrics (error_rate, top-k), the recorder history
 * in the checkpoint, and lr_find's NaN tail and epoch count. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "safetensors.h"
#include "tap.h"

#define MAXB 512

typedef struct rec {
    int n_batch, n_epoch, n_lr_find, n_warn;
    float lr[MAXB], mom[MAXB];
    uint32_t fit_index[MAXB];
    float valid_loss[64], acc[64], m[64][ENG_MAX_METRICS];
    uint32_t fit_epoch[64];
    size_t lf_n;
    float lf_last;
    bool lf_ok;
    int interrupt_at;
    char log[2048];
} rec;

static eng_action cb(const eng_event *ev, void *user)
{
    rec *r = user;
    switch (ev->kind) {
    case ENG_EVENT_BATCH:
        if (ev->op != ENG_STAGE_LR_FIND && r->n_batch < MAXB) {
            r->lr[r->n_batch] = ev->lr;
            r->mom[r->n_batch] = ev->mom;
            r->fit_index[r->n_batch] = ev->fit_index;
        }
        if (ev->op != ENG_STAGE_LR_FIND)
            r->n_batch++;
        if (r->n_batch == r->interrupt_at && ev->op != ENG_STAGE_LR_FIND)
            return ENG_INTERRUPT;
        break;
    case ENG_EVENT_EPOCH:
        if (r->n_epoch < 64) {
            r->valid_loss[r->n_epoch] = ev->valid_loss;
            r->acc[r->n_epoch] = ev->accuracy;
            r->fit_epoch[r->n_epoch] = ev->fit_epoch;
            for (size_t k = 0; k < ev->n_metrics; k++)
                r->m[r->n_epoch][k] = ev->metrics[k];
        }
        r->n_epoch++;
        break;
    case ENG_EVENT_LR_FIND:
        r->n_lr_find++;
        r->lf_n = ev->lr_find->n;
        r->lf_last = ev->lr_find->n ? ev->lr_find->losses[ev->lr_find->n - 1] : 0.0f;
        r->lf_ok = ev->lr_find->ok;
        break;
    case ENG_EVENT_LOG:
        if (ev->message && strlen(r->log) + strlen(ev->message) + 2 < sizeof(r->log)) {
            strcat(r->log, ev->message);
            strcat(r->log, "\n");
        }
        break;
    default:
        break;
    }
    return ENG_CONTINUE;
}

static char dir[256];

static void base_spec(eng_job_spec *j)
{
    eng_job_spec_defaults(j);
    j->seed = 11;
    j->batch_size = 32;
    j->data.n_train = 128; /* 4 batches per epoch */
    j->data.n_valid = 64;
    j->data.features = 8;
    j->data.classes = 4;
    j->data.seed = 5;
    j->model.hidden[0] = 16;
}

static float *read_tensor(const char *path, const char *name, size_t *n)
{
    eng_st_file *f = NULL;
    if (eng_st_read(path, &f, NULL))
        return NULL;
    const eng_st_entry *e = eng_st_find(f, name);
    float *out = NULL;
    if (e) {
        *n = 1;
        for (size_t i = 0; i < e->ndim; i++)
            *n *= e->shape[i];
        out = malloc(*n * 4 + 4);
        if (out && eng_st_copy(f, e, out, *n, NULL)) {
            free(out);
            out = NULL;
        }
    }
    eng_st_close(f);
    return out;
}

static bool same_tensor(const char *a, const char *b, const char *name)
{
    size_t na = 0, nb = 0;
    float *x = read_tensor(a, name, &na), *y = read_tensor(b, name, &nb);
    bool same = x && y && na == nb && memcmp(x, y, na * 4) == 0;
    free(x);
    free(y);
    return same;
}

static int run(eng_job_spec *j, rec *r, const char *resume, eng_error *err)
{
    eng_run_opts opts = {.out_dir = dir, .resume_path = resume};
    eng_callbacks cbs = {cb, r};
    return eng_job_run(j, &opts, &cbs, err);
}

static double one_cycle(double pct, double a, double b, double c, double p)
{
    if (p < pct)
        return a + (1 + cos(M_PI * (1 - p / pct))) * (b - a) / 2;
    return b + (1 + cos(M_PI * (1 - (p - pct) / (1 - pct)))) * (c - b) / 2;
}

static void check_fine_tune(void)
{
    char path[512], ref[512];
    eng_error err;
    eng_job_spec j;
    base_spec(&j);
    eng_stage st[3];
    eng_stage_defaults(&st[0], ENG_STAGE_SAVE);
    snprintf(st[0].name, sizeof(st[0].name), "ft_init");
    eng_stage_defaults(&st[1], ENG_STAGE_FINE_TUNE);
    st[1].epochs = 2; /* defaults: base_lr 2e-3, freeze_epochs 1, lr_mult 100, pct .3, div 5 */
    eng_stage_defaults(&st[2], ENG_STAGE_SAVE);
    snprintf(st[2].name, sizeof(st[2].name), "ft_full");
    ok(st[1].lr.v[0] == 2e-3f && st[1].freeze_epochs == 1 && st[1].lr_mult == 100.0f &&
           st[1].pct_start == 0.3f && st[1].div == 5.0f,
       "fine_tune defaults: base_lr 2e-3, freeze_epochs 1, lr_mult 100, pct_start 0.3, div 5");
    j.stages = st;
    j.n_stages = 3;
    rec r = {.interrupt_at = -1};
    int rc = run(&j, &r, NULL, &err);
    is_int(rc, 0, "fine_tune runs (%s)", err.text);
    is_int(r.n_batch, 12, "1 + 2 epochs of 4 batches");
    is_int(r.n_epoch, 3, "3 epoch events");
    ok(r.fit_epoch[0] == 0 && r.fit_epoch[1] == 0 && r.fit_epoch[2] == 1,
       "epochs are counted per fit (0 | 0, 1)");
    /* fit 1: slice(2e-3) -> head 2e-3, div 25, pct 0.99, 4 batches; head LR is logged */
    bool good = true;
    for (int b = 0; b < 4; b++) {
        double p = b / 4.0;
        double lr = one_cycle(0.99, 2e-3 / 25, 2e-3, 2e-3 / 1e5, p);
        double mom = one_cycle(0.99, 0.95, 0.85, 0.95, p);
        good = good && fabs((double)r.lr[b] - lr) < 1e-9 + 1e-6 * lr &&
               fabs((double)r.mom[b] - mom) < 1e-6 && r.fit_index[b] == 0;
    }
    ok(good, "fit 1: head LR/mom = 1cycle(2e-3, div 25, pct_start 0.99) at pos t/4");
    /* fit 2: base 1e-3 -> slice(1e-5, 1e-3), div 5, pct 0.3, 8 batches */
    good = true;
    for (int b = 0; b < 8; b++) {
        double p = b / 8.0;
        double lr = one_cycle(0.3, 1e-3 / 5, 1e-3, 1e-3 / 1e5, p);
        double mom = one_cycle(0.3, 0.95, 0.85, 0.95, p);
        good = good && fabs((double)r.lr[4 + b] - lr) < 1e-9 + 1e-6 * lr &&
               fabs((double)r.mom[4 + b] - mom) < 1e-6 && r.fit_index[4 + b] == 1;
    }
    ok(good, "fit 2: head LR/mom = 1cycle(base_lr/2 = 1e-3, div 5, pct_start 0.3) at pos t/8");
    snprintf(ref, sizeof(ref), "%s/ft_full.safetensors", dir);
    snprintf(path, sizeof(path), "%s/ft_init.safetensors", dir);
    ok(!same_tensor(ref, path, "0.0.weight"), "the body trains in the second fit");

    /* the body's LR in fit 2 is 1e-5 (slice lower end): check the first fit leaves the body
     * untouched by stopping right after it */
    {
        eng_job_spec j2;
        base_spec(&j2);
        eng_stage s2[3];
        memcpy(s2, st, sizeof(s2));
        s2[1].epochs = 1;
        s2[1].lr.v[0] = 1e-1f;
        j2.stages = s2;
        j2.n_stages = 3;
        rec r2 = {.interrupt_at = 5}; /* first batch of the second fit */
        rc = run(&j2, &r2, NULL, &err);
        is_int(rc, ENG_EINTERRUPTED, "interrupted in the second fit");
        snprintf(path, sizeof(path), "%s/checkpoint.safetensors", dir);
        char init[512];
        snprintf(init, sizeof(init), "%s/ft_init.safetensors", dir);
        /* 4 frozen batches + 1 unfrozen batch at 1e-1/2/100/5 (warm-up start): the body
         * moved only a little, the head a lot; weaker check: head moved */
        ok(!same_tensor(path, init, "1.weight"), "the head trains in the first fit");
    }

    /* interrupt + resume inside each fit and at the boundary = uninterrupted */
    int points[3] = {2, 4, 7};
    const char *what[3] = {"inside the frozen fit", "at the end of the frozen fit",
                           "inside the unfrozen fit"};
    for (int i = 0; i < 3; i++) {
        snprintf(st[2].name, sizeof(st[2].name), "ft_resumed");
        rec a = {.interrupt_at = points[i]};
        rc = run(&j, &a, NULL, &err);
        is_int(rc, ENG_EINTERRUPTED, "interrupt %s", what[i]);
        snprintf(path, sizeof(path), "%s/checkpoint.safetensors", dir);
        rec b = {.interrupt_at = -1};
        rc = run(&j, &b, path, &err);
        is_int(rc, 0, "resume %s (%s)", what[i], err.text);
        is_int(a.n_batch + b.n_batch, 12 + (points[i] == 4 ? 0 : 0),
               "every batch runs once (%d + %d)", a.n_batch, b.n_batch);
        char res[512];
        snprintf(res, sizeof(res), "%s/ft_resumed.safetensors", dir);
        ok(same_tensor(ref, res, "0.0.weight") && same_tensor(ref, res, "1.weight") &&
               same_tensor(ref, res, "1.bias"),
           "resumed %s: bit-identical weights", what[i]);
    }
    snprintf(st[2].name, sizeof(st[2].name), "ft_full");

    /* a suggestion as base_lr needs an lr_find */
    eng_stage bad;
    eng_stage_defaults(&bad, ENG_STAGE_FINE_TUNE);
    bad.lr.kind = ENG_LR_SUGGESTION;
    j.stages = &bad;
    j.n_stages = 1;
    is_int(eng_job_spec_validate(&j, &err), ENG_EINVAL, "suggestion without lr_find: %s", err.text);
    bad.lr.kind = ENG_LR_SLICE;
    bad.lr.v[1] = 1e-2f;
    is_int(eng_job_spec_validate(&j, &err), ENG_EINVAL, "base_lr must not be a slice: %s",
           err.text);
}

static void check_callbacks(void)
{
    eng_error err;
    char path[512], best[512];
    /* early stopping: min_delta 100 means no epoch after the first ever improves */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st;
        eng_stage_defaults(&st, ENG_STAGE_FIT_ONE_CYCLE);
        st.epochs = 6;
        j.stages = &st;
        j.n_stages = 1;
        j.callbacks.early_stopping.enabled = true;
        j.callbacks.early_stopping.min_delta = 100.0f;
        j.callbacks.early_stopping.patience = 2;
        rec r = {.interrupt_at = -1};
        int rc = run(&j, &r, NULL, &err);
        is_int(rc, 0, "early stopping run (%s)", err.text);
        is_int(r.n_epoch, 3, "patience 2: stops after epochs 0, 1, 2");
        ok(strstr(r.log, "No improvement since epoch 0: early stopping") != NULL,
           "fastai's message is logged");
        snprintf(j.callbacks.early_stopping.monitor, 32, "no_such_column");
        is_int(eng_job_spec_validate(&j, &err), ENG_EINVAL, "unknown monitor: %s", err.text);
    }
    /* save-best on accuracy (greater): the final weights are the best epoch's */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st[2];
        eng_stage_defaults(&st[0], ENG_STAGE_FIT);
        st[0].epochs = 5;
        st[0].lr.v[0] = 0.3f; /* noisy on purpose */
        eng_stage_defaults(&st[1], ENG_STAGE_SAVE);
        snprintf(st[1].name, sizeof(st[1].name), "after_fit");
        j.stages = st;
        j.n_stages = 2;
        j.n_metrics = 2;
        j.metrics[1].kind = ENG_METRIC_ERROR_RATE;
        j.callbacks.save_best.enabled = true;
        snprintf(j.callbacks.save_best.monitor, 32, "error_rate");
        snprintf(j.callbacks.save_best.fname, ENG_NAME_MAX, "best");
        rec r = {.interrupt_at = -1};
        int rc = run(&j, &r, NULL, &err);
        is_int(rc, 0, "save-best run (%s)", err.text);
        int arg = 0;
        for (int e = 1; e < r.n_epoch; e++)
            if (r.m[e][1] < r.m[arg][1])
                arg = e;
        char msg[96];
        snprintf(msg, sizeof(msg), "Better model found at epoch %d with error_rate", arg);
        ok(strstr(r.log, msg) != NULL, "best epoch %d announced", arg);
        snprintf(path, sizeof(path), "%s/after_fit.safetensors", dir);
        snprintf(best, sizeof(best), "%s/best.safetensors", dir);
        ok(same_tensor(path, best, "0.0.weight") && same_tensor(path, best, "1.weight"),
           "after the fit the best weights are reloaded");
        bool close = true;
        for (int e = 0; e < r.n_epoch; e++)
            close = close && fabsf(r.m[e][1] - (1.0f - r.m[e][0])) < 1e-6f;
        ok(close, "error_rate = 1 - accuracy every epoch");
    }
    /* top-k with k = classes is 1; k = 1 is accuracy */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st;
        eng_stage_defaults(&st, ENG_STAGE_FIT);
        j.stages = &st;
        j.n_stages = 1;
        j.n_metrics = 2;
        j.metrics[0] = (eng_metric){ENG_METRIC_TOP_K, 4};
        j.metrics[1] = (eng_metric){ENG_METRIC_TOP_K, 1};
        rec r = {.interrupt_at = -1};
        int rc = run(&j, &r, NULL, &err);
        is_int(rc, 0, "top-k run (%s)", err.text);
        ok(r.m[0][0] == 1.0f && r.m[0][1] == r.acc[0], "top-4 of 4 classes = 1, top-1 = accuracy");
        char name[48];
        eng_metric_name(&j.metrics[1], name, sizeof(name));
        ok(strcmp(name, "top_1_accuracy") == 0, "column name %s", name);
    }
    /* terminate_on_nan: on (default) fails the job; off records NaN and goes on */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st;
        eng_stage_defaults(&st, ENG_STAGE_FIT);
        st.epochs = 2;
        st.lr.v[0] = 1e30f;
        j.stages = &st;
        j.n_stages = 1;
        rec r = {.interrupt_at = -1};
        int rc = run(&j, &r, NULL, &err);
        is_int(rc, ENG_ENUMERIC, "terminate_on_nan: diverging job fails (%s)", err.text);
        j.callbacks.terminate_on_nan = false;
        rec r2 = {.interrupt_at = -1};
        rc = run(&j, &r2, NULL, &err);
        is_int(rc, 0, "without terminate_on_nan the job goes on");
        is_int(r2.n_epoch, 2, "both epochs recorded");
        ok(!isfinite(r2.valid_loss[1]), "non-finite valid_loss recorded as such (%f)",
           (double)r2.valid_loss[1]);
        snprintf(path, sizeof(path), "%s/checkpoint.safetensors", dir);
        size_t n = 0;
        float *ep = read_tensor(path, "__recorder.epoch", &n);
        ok(ep && n == 2 * 4 && !isfinite(ep[4 + 1]), "checkpoint history keeps the NaN row");
        free(ep);
        float *bt = read_tensor(path, "__recorder.batch", &n);
        ok(bt && n == 8 * 3 && bt[1] == 1e30f, "checkpoint history: 8 batches of (loss, lr, mom)");
        free(bt);
    }
    /* gradient clipping changes training */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st[2];
        eng_stage_defaults(&st[0], ENG_STAGE_FIT);
        st[0].lr.v[0] = 0.1f;
        eng_stage_defaults(&st[1], ENG_STAGE_SAVE);
        snprintf(st[1].name, sizeof(st[1].name), "noclip");
        j.stages = st;
        j.n_stages = 2;
        rec r = {.interrupt_at = -1};
        int rc = run(&j, &r, NULL, &err);
        j.callbacks.grad_clip = true;
        j.callbacks.clip_max_norm = 1e-3f;
        snprintf(st[1].name, sizeof(st[1].name), "clip");
        rec r2 = {.interrupt_at = -1};
        rc |= run(&j, &r2, NULL, &err);
        is_int(rc, 0, "runs with and without grad_clip");
        snprintf(path, sizeof(path), "%s/noclip.safetensors", dir);
        snprintf(best, sizeof(best), "%s/clip.safetensors", dir);
        ok(!same_tensor(path, best, "1.weight"), "grad_clip changes the update");
    }
}

static void check_lr_find(void)
{
    eng_error err;
    eng_job_spec j;
    base_spec(&j);
    eng_stage st;
    eng_stage_defaults(&st, ENG_STAGE_LR_FIND);
    st.num_it = 3; /* LRFinder forces 6, but lr_find runs num_it // 4 + 1 = 1 epoch */
    j.stages = &st;
    j.n_stages = 1;
    rec r = {.interrupt_at = -1};
    int rc = run(&j, &r, NULL, &err);
    is_int(rc, 0, "lr_find num_it 3 (%s)", err.text);
    is_int((long long)r.lf_n, 4, "one epoch of 4 batches, as fastai's lr_find(num_it=3)");

    /* a sweep to 1e30 without stop_div turns NaN; fastai records NaN up to num_it */
    st.num_it = 40;
    st.end_lr = 1e30f;
    st.stop_div = false;
    rec r2 = {.interrupt_at = -1};
    rc = run(&j, &r2, NULL, &err);
    is_int(rc, 0, "diverging lr_find (%s)", err.text);
    is_int((long long)r2.lf_n, 40, "num_it points recorded");
    ok(isnan(r2.lf_last), "the tail is NaN (%f)", (double)r2.lf_last);
}

int main(void)
{
    eng_blas_set_threads(1);
    snprintf(dir, sizeof(dir), "/tmp/thawd-test-wf-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    check_fine_tune();
    check_callbacks();
    check_lr_find();
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);
    return done_testing();
}
