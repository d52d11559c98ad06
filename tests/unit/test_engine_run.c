/* test_engine_run: end-to-end eng_job_run of an MLP on synthetic data: the loss falls and
 * accuracy rises above chance; freeze keeps the body bit-identical and does fewer GEMMs;
 * cancel stops within one batch; interrupt + resume ends bit-identical to an uninterrupted
 * run; an LR suggestion after a failed lr_find fails the job with ENG_ENOSUGGEST. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "safetensors.h"
#include "tap.h"

typedef struct rec {
    int n_batch, n_epoch, n_artifact, n_lr_find;
    float first_loss, last_smooth, acc;
    uint64_t last_step;
    int cancel_at, interrupt_at; /* batch count at which to answer, or -1 */
    bool lf_ok;
    float valley;
} rec;

static eng_action cb(const eng_event *ev, void *user)
{
    rec *r = user;
    switch (ev->kind) {
    case ENG_EVENT_BATCH:
        if (r->n_batch == 0)
            r->first_loss = ev->smooth_loss;
        r->n_batch++;
        r->last_smooth = ev->smooth_loss;
        r->last_step = ev->step;
        if (r->n_batch == r->cancel_at)
            return ENG_CANCEL;
        if (r->n_batch == r->interrupt_at)
            return ENG_INTERRUPT;
        break;
    case ENG_EVENT_EPOCH:
        r->n_epoch++;
        r->acc = ev->accuracy;
        break;
    case ENG_EVENT_ARTIFACT:
        r->n_artifact++;
        break;
    case ENG_EVENT_LR_FIND:
        r->n_lr_find++;
        r->lf_ok = ev->lr_find->ok;
        r->valley = ev->lr_find->valley;
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
    j->seed = 7;
    j->batch_size = 32;
    j->data.n_train = 256;
    j->data.n_valid = 128;
    j->data.features = 8;
    j->data.classes = 4;
    j->data.noise = 1.0f;
    j->data.seed = 3;
    j->model.n_hidden = 1;
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
        *n = (size_t)(e->end - e->begin) / 4;
        out = malloc(*n * 4 + 4);
        eng_st_copy(f, e, out, *n, NULL);
    }
    eng_st_close(f);
    return out;
}

static bool same_file_tensor(const char *a, const char *b, const char *name)
{
    size_t na = 0, nb = 0;
    float *x = read_tensor(a, name, &na), *y = read_tensor(b, name, &nb);
    bool same = x && y && na == nb && memcmp(x, y, na * 4) == 0;
    free(x);
    free(y);
    return same;
}

int main(void)
{
    eng_blas_set_threads(1);
    snprintf(dir, sizeof(dir), "/tmp/thawd-test-run-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    eng_run_opts opts = {.out_dir = dir};
    eng_error err;
    char path[512], path2[512];

    /* 1. a plain training run learns */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st[2];
        eng_stage_defaults(&st[0], ENG_STAGE_FIT_ONE_CYCLE);
        st[0].epochs = 4;
        st[0].lr.v[0] = 1e-2f;
        eng_stage_defaults(&st[1], ENG_STAGE_SAVE);
        snprintf(st[1].name, sizeof(st[1].name), "full");
        j.stages = st;
        j.n_stages = 2;
        rec r = {.cancel_at = -1, .interrupt_at = -1};
        eng_callbacks cbs = {cb, &r};
        int rc = eng_job_run(&j, &opts, &cbs, &err);
        is_int(rc, 0, "fit_one_cycle + save runs (%s)", err.text);
        is_int(r.n_batch, 32, "4 epochs x 8 batches");
        is_int(r.n_epoch, 4, "4 epoch events");
        is_int(r.n_artifact, 5, "4 checkpoints + 1 save");
        ok(r.last_smooth < 0.8f * r.first_loss, "smoothed loss falls: %.4f -> %.4f",
           (double)r.first_loss, (double)r.last_smooth);
        ok(r.acc > 0.6f, "accuracy %.3f clearly above chance 0.25", (double)r.acc);
        is_int((long long)r.last_step, 32, "global step counts batches");
    }

    /* 2. interrupt + resume = uninterrupted (uses the run above as reference) */
    {
        eng_job_spec j;
        base_spec(&j);
        j.model.dropout = 0.2f;
        eng_stage st[4];
        eng_stage_defaults(&st[0], ENG_STAGE_FREEZE);
        eng_stage_defaults(&st[1], ENG_STAGE_FIT_ONE_CYCLE);
        st[1].epochs = 2;
        st[1].lr.v[0] = 1e-2f;
        eng_stage_defaults(&st[2], ENG_STAGE_UNFREEZE);
        eng_stage_defaults(&st[3], ENG_STAGE_FIT);
        st[3].epochs = 2;
        st[3].lr.kind = ENG_LR_SLICE_HI;
        st[3].lr.v[0] = 3e-3f;
        j.stages = st;
        j.n_stages = 5;
        eng_stage all[5];
        memcpy(all, st, sizeof(st));
        eng_stage_defaults(&all[4], ENG_STAGE_SAVE);
        snprintf(all[4].name, sizeof(all[4].name), "ref");
        j.stages = all;
        rec r = {.cancel_at = -1, .interrupt_at = -1};
        eng_callbacks cbs = {cb, &r};
        int rc = eng_job_run(&j, &opts, &cbs, &err);
        is_int(rc, 0, "reference run (%s)", err.text);

        snprintf(all[4].name, sizeof(all[4].name), "resumed");
        int stops = 0;
        const char *resume = NULL;
        int at[3] = {5, 13, 3}; /* mid-epoch frozen fit, mid unfrozen fit, ... */
        snprintf(path, sizeof(path), "%s/checkpoint.safetensors", dir);
        snprintf(path2, sizeof(path2), "%s/resume.safetensors", dir);
        for (int k = 0;; k++) {
            rec r2 = {.cancel_at = -1, .interrupt_at = k < 3 ? at[k] : -1};
            eng_callbacks c2 = {cb, &r2};
            eng_run_opts o2 = {.out_dir = dir, .resume_path = resume};
            rc = eng_job_run(&j, &o2, &c2, &err);
            if (rc != ENG_EINTERRUPTED)
                break;
            stops++;
            rename(path, path2);
            resume = path2;
        }
        is_int(rc, 0, "resumed run finishes (%s)", err.text);
        is_int(stops, 3, "three interruptions");
        char a[512], b[512];
        snprintf(a, sizeof(a), "%s/ref.safetensors", dir);
        snprintf(b, sizeof(b), "%s/resumed.safetensors", dir);
        ok(same_file_tensor(a, b, "0.0.weight") && same_file_tensor(a, b, "1.weight") &&
               same_file_tensor(a, b, "0.0.bias") && same_file_tensor(a, b, "1.bias"),
           "interrupted + resumed weights are bit-identical to the uninterrupted run");
        /* a checkpoint is only resumed by the spec that wrote it */
        j.seed = 8;
        eng_run_opts o3 = {.out_dir = dir, .resume_path = path2};
        rc = eng_job_run(&j, &o3, NULL, &err);
        ok(rc == ENG_EFORMAT && strstr(err.text, "different spec"),
           "resume with another spec is refused: %s", err.text);
    }

    /* 2b. interrupts inside lr_find (restarts the sweep) and inside the fit that uses its
     * suggestion, with dropout: still bit-identical */
    {
        eng_job_spec j;
        base_spec(&j);
        j.model.dropout = 0.3f;
        eng_stage st[3];
        eng_stage_defaults(&st[0], ENG_STAGE_LR_FIND);
        st[0].num_it = 20;
        eng_stage_defaults(&st[1], ENG_STAGE_FIT_ONE_CYCLE);
        st[1].epochs = 2;
        st[1].lr.kind = ENG_LR_SUGGESTION;
        st[1].lr.suggest = ENG_SUGGEST_VALLEY;
        eng_stage_defaults(&st[2], ENG_STAGE_SAVE);
        snprintf(st[2].name, sizeof(st[2].name), "lf_ref");
        j.stages = st;
        j.n_stages = 3;
        int rc = eng_job_run(&j, &opts, NULL, &err);
        is_int(rc, 0, "lr_find reference run (%s)", err.text);
        snprintf(st[2].name, sizeof(st[2].name), "lf_resumed");
        const char *resume = NULL;
        int at[2] = {7, 27}, stops = 0;
        for (int k = 0;; k++) {
            rec r2 = {.cancel_at = -1, .interrupt_at = k < 2 ? at[k] : -1};
            eng_callbacks c2 = {cb, &r2};
            eng_run_opts o2 = {.out_dir = dir, .resume_path = resume};
            rc = eng_job_run(&j, &o2, &c2, &err);
            if (rc != ENG_EINTERRUPTED)
                break;
            stops++;
            rename(path, path2);
            resume = path2;
        }
        is_int(rc, 0, "resumed lr_find job finishes (%s)", err.text);
        is_int(stops, 2, "two interruptions");
        char a[512], b[512];
        snprintf(a, sizeof(a), "%s/lf_ref.safetensors", dir);
        snprintf(b, sizeof(b), "%s/lf_resumed.safetensors", dir);
        ok(same_file_tensor(a, b, "0.0.weight") && same_file_tensor(a, b, "1.weight"),
           "bit-identical after interrupts in lr_find and in the fit");
    }

    /* 3. cancel within one batch */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st[1];
        eng_stage_defaults(&st[0], ENG_STAGE_FIT);
        st[0].epochs = 3;
        j.stages = st;
        j.n_stages = 1;
        rec r = {.cancel_at = 3, .interrupt_at = -1};
        eng_callbacks cbs = {cb, &r};
        int rc = eng_job_run(&j, &opts, &cbs, &err);
        is_int(rc, ENG_ECANCELED, "cancel returns ENG_ECANCELED");
        is_int(r.n_batch, 3, "no batch ran after the cancel");
    }

    /* 4. lr_find that cannot suggest -> suggestion LR fails the job clearly */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st[2];
        eng_stage_defaults(&st[0], ENG_STAGE_LR_FIND);
        st[0].num_it = 8; /* 8 points, slice [0:3] ... but diverge at once: */
        st[0].start_lr = 1e3f;
        st[0].end_lr = 1e6f;
        eng_stage_defaults(&st[1], ENG_STAGE_FIT_ONE_CYCLE);
        st[1].lr.kind = ENG_LR_SUGGESTION;
        st[1].lr.suggest = ENG_SUGGEST_VALLEY;
        j.stages = st;
        j.n_stages = 2;
        rec r = {.cancel_at = -1, .interrupt_at = -1};
        eng_callbacks cbs = {cb, &r};
        int rc = eng_job_run(&j, &opts, &cbs, &err);
        is_int(r.n_lr_find, 1, "lr_find reported");
        ok(!r.lf_ok, "lr_find made no suggestion");
        is_int(rc, ENG_ENOSUGGEST, "job fails with ENG_ENOSUGGEST");
        is_str(err.field, "stages.1.lr_max", "error names the field");
        ok(strstr(err.text, "valley") != NULL, "error says which suggestion: %s", err.text);
    }

    /* 5. a working lr_find then a suggestion LR */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st[2];
        eng_stage_defaults(&st[0], ENG_STAGE_LR_FIND);
        st[0].num_it = 40;
        eng_stage_defaults(&st[1], ENG_STAGE_FIT_ONE_CYCLE);
        st[1].lr.kind = ENG_LR_SUGGESTION;
        st[1].lr.suggest = ENG_SUGGEST_VALLEY;
        j.stages = st;
        j.n_stages = 2;
        rec r = {.cancel_at = -1, .interrupt_at = -1};
        eng_callbacks cbs = {cb, &r};
        int rc = eng_job_run(&j, &opts, &cbs, &err);
        is_int(rc, 0, "lr_find + suggestion runs (%s)", err.text);
        ok(r.lf_ok && r.valley > 1e-7f && r.valley < 10.0f, "valley %g in the sweep range",
           (double)r.valley);
    }

    /* 7. pretrained weights: strict load round-trips, body_only keeps a fresh head,
     * a shape mismatch is a clear error */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st[1];
        eng_stage_defaults(&st[0], ENG_STAGE_SAVE);
        snprintf(st[0].name, sizeof(st[0].name), "reloaded");
        j.stages = st;
        j.n_stages = 1;
        snprintf(j.model.weights, sizeof(j.model.weights), "%s/full.safetensors", dir);
        j.seed = 99; /* a different init, overwritten by the weights */
        int rc = eng_job_run(&j, &opts, NULL, &err);
        is_int(rc, 0, "strict weights load (%s)", err.text);
        char a[512], b[512];
        snprintf(a, sizeof(a), "%s/full.safetensors", dir);
        snprintf(b, sizeof(b), "%s/reloaded.safetensors", dir);
        ok(same_file_tensor(a, b, "0.0.weight") && same_file_tensor(a, b, "1.bias"),
           "loaded weights are saved unchanged");
        j.model.body_only = true;
        snprintf(st[0].name, sizeof(st[0].name), "body");
        rc = eng_job_run(&j, &opts, NULL, &err);
        snprintf(b, sizeof(b), "%s/body.safetensors", dir);
        ok(rc == 0 && same_file_tensor(a, b, "0.0.weight") && !same_file_tensor(a, b, "1.weight"),
           "body_only: body loaded, head freshly initialised");
        j.model.body_only = false;
        j.model.hidden[0] = 32;
        rc = eng_job_run(&j, &opts, NULL, &err);
        ok(rc == ENG_ESHAPE && strstr(err.text, "0.0.weight") != NULL,
           "shape mismatch names the tensor: %s", err.text);
    }

    /* 6. validation names fields */
    {
        eng_job_spec j;
        base_spec(&j);
        eng_stage st[3];
        eng_stage_defaults(&st[0], ENG_STAGE_FREEZE);
        eng_stage_defaults(&st[1], ENG_STAGE_FIT);
        eng_stage_defaults(&st[2], ENG_STAGE_FIT_ONE_CYCLE);
        st[2].epochs = 0;
        j.stages = st;
        j.n_stages = 3;
        is_int(eng_job_spec_validate(&j, &err), ENG_EINVAL, "epochs 0 rejected");
        is_str(err.field, "stages.2.epochs", "field path");
        st[2].epochs = 1;
        st[1].lr.kind = ENG_LR_SUGGESTION;
        is_int(eng_job_spec_validate(&j, &err), ENG_EINVAL, "suggestion before lr_find");
        is_str(err.field, "stages.1.lr", "field path of the suggestion");
        eng_stage_op op;
        ok(eng_stage_op_parse("fit_one_cycle", &op) == 0 && op == ENG_STAGE_FIT_ONE_CYCLE,
           "op parse");
        is_str(eng_arch_name(0), "mlp", "registry lists mlp");
    }

    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);
    return done_testing();
}
