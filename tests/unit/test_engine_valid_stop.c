/* test_engine_valid_stop: cancel and interrupt answered while an epoch is being validated
 * stop eng_job_run before the next validation batch, record no epoch, and an interrupted
 * run resumed from its checkpoint validates that epoch again and ends with the same epoch
 * results (and recorder history) as an uninterrupted run.
 *
 * The runner asks the progress callback before each validation batch through an
 * ENG_EVENT_LOG at DEBUG level whose message starts with "validation batch". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "safetensors.h"
#include "tap.h"

typedef struct rec {
    int n_epoch, n_valid_poll, n_ckpt;
    float valid_loss[8], accuracy[8];
    int valid_polls_at_epoch[8]; /* validation polls seen when each epoch event came */
    int stop_at_poll;            /* answer `answer` at this validation poll (1-based), or 0 */
    eng_action answer;
} rec;

static eng_action cb(const eng_event *ev, void *user)
{
    rec *r = user;
    switch (ev->kind) {
    case ENG_EVENT_LOG:
        if (ev->level == ENG_LOG_DEBUG && ev->message &&
            strncmp(ev->message, "validation batch", 16) == 0) {
            r->n_valid_poll++;
            if (r->n_valid_poll == r->stop_at_poll)
                return r->answer;
        }
        break;
    case ENG_EVENT_EPOCH:
        if (r->n_epoch < 8) {
            r->valid_loss[r->n_epoch] = ev->valid_loss;
            r->accuracy[r->n_epoch] = ev->accuracy;
            r->valid_polls_at_epoch[r->n_epoch] = r->n_valid_poll;
        }
        r->n_epoch++;
        break;
    case ENG_EVENT_ARTIFACT:
        if (strcmp(ev->artifact->kind, "checkpoint") == 0)
            r->n_ckpt++;
        break;
    default:
        break;
    }
    return ENG_CONTINUE;
}

static void make_spec(eng_job_spec *j, eng_stage *st)
{
    eng_job_spec_defaults(j);
    j->seed = 5;
    j->batch_size = 32;
    j->data.n_train = 128;
    j->data.n_valid = 1000; /* validated in 4 batches of up to 256 */
    j->data.features = 8;
    j->data.classes = 4;
    j->data.noise = 1.0f;
    j->data.seed = 9;
    j->model.n_hidden = 1;
    j->model.hidden[0] = 16;
    eng_stage_defaults(st, ENG_STAGE_FIT_ONE_CYCLE);
    st->epochs = 2;
    st->lr.v[0] = 1e-2f;
    j->stages = st;
    j->n_stages = 1;
}

/* Number of floats of tensor `name` in a safetensors file, or -1. */
static long tensor_floats(const char *path, const char *name)
{
    eng_st_file *f = NULL;
    if (eng_st_read(path, &f, NULL))
        return -1;
    const eng_st_entry *e = eng_st_find(f, name);
    long n = e ? (long)((e->end - e->begin) / 4) : -1;
    eng_st_close(f);
    return n;
}

static int run(const char *out, const char *resume, rec *r)
{
    eng_job_spec j;
    eng_stage st;
    make_spec(&j, &st);
    eng_run_opts opts = {.out_dir = out, .resume_path = resume};
    eng_callbacks c = {.progress = cb, .user = r};
    eng_error err;
    int rc = eng_job_run(&j, &opts, &c, &err);
    if (rc && rc != ENG_ECANCELED && rc != ENG_EINTERRUPTED)
        diag("eng_job_run: %s", err.text);
    return rc;
}

static void rm_dir(const char *d)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/checkpoint.safetensors", d);
    unlink(p);
    rmdir(d);
}

int main(void)
{
    eng_blas_set_threads(1);
    char ref_dir[] = "/tmp/thawd-test-vstop-ref-XXXXXX";
    char dir[] = "/tmp/thawd-test-vstop-XXXXXX";
    char cdir[] = "/tmp/thawd-test-vstop-cancel-XXXXXX";
    if (!mkdtemp(ref_dir) || !mkdtemp(dir) || !mkdtemp(cdir))
        return 1;
    char ref_ckpt[600], ckpt[600], cckpt[600];
    snprintf(ref_ckpt, sizeof(ref_ckpt), "%s/checkpoint.safetensors", ref_dir);
    snprintf(ckpt, sizeof(ckpt), "%s/checkpoint.safetensors", dir);
    snprintf(cckpt, sizeof(cckpt), "%s/checkpoint.safetensors", cdir);

    /* reference: uninterrupted, 2 epochs, each validated in 4 polled batches */
    rec ref = {0};
    is_int(run(ref_dir, NULL, &ref), 0, "reference run finishes");
    is_int(ref.n_epoch, 2, "reference run records 2 epochs");
    is_int(ref.valid_polls_at_epoch[0], 4, "epoch 0 validated in 4 polled batches");
    is_int(ref.n_valid_poll, 8, "8 validation polls in all");
    long ref_rows = tensor_floats(ref_ckpt, "__recorder.epoch");
    ok(ref_rows > 0, "reference checkpoint has the epoch history");

    /* interrupt during epoch 0's validation (before its 2nd batch) */
    rec a = {.stop_at_poll = 2, .answer = ENG_INTERRUPT};
    is_int(run(dir, NULL, &a), ENG_EINTERRUPTED, "interrupt in validation returns EINTERRUPTED");
    is_int(a.n_valid_poll, 2, "no validation batch after the interrupt");
    is_int(a.n_epoch, 0, "no epoch recorded from a partial validation");
    is_int(a.n_ckpt, 1, "one resumable checkpoint written");
    is_int((int)tensor_floats(ckpt, "__recorder.epoch"), -1, "the checkpoint has no epoch row");

    /* resume: validates epoch 0 again from its first batch, then epoch 1 */
    rec b = {0};
    is_int(run(dir, ckpt, &b), 0, "resumed run finishes");
    is_int(b.n_epoch, 2, "resumed run records epochs 0 and 1");
    is_int(b.valid_polls_at_epoch[0], 4, "epoch 0's validation redone in full");
    ok(b.valid_loss[0] == ref.valid_loss[0] && b.valid_loss[1] == ref.valid_loss[1],
       "valid_loss equals the uninterrupted run's (%g %g vs %g %g)", (double)b.valid_loss[0],
       (double)b.valid_loss[1], (double)ref.valid_loss[0], (double)ref.valid_loss[1]);
    ok(b.accuracy[1] == ref.accuracy[1], "accuracy equals the uninterrupted run's");
    is_int((int)tensor_floats(ckpt, "__recorder.epoch"), (int)ref_rows,
           "epoch history has as many rows as the uninterrupted run's");

    /* cancel during epoch 1's validation (its 3rd batch) */
    rec c = {.stop_at_poll = 7, .answer = ENG_CANCEL};
    is_int(run(cdir, NULL, &c), ENG_ECANCELED, "cancel in validation returns ECANCELED");
    is_int(c.n_valid_poll, 7, "no validation batch after the cancel");
    is_int(c.n_epoch, 1, "only the fully validated epoch is recorded");
    is_int(c.n_ckpt, 1, "no checkpoint after the cancel (only epoch 0's)");

    rm_dir(ref_dir);
    rm_dir(dir);
    rm_dir(cdir);
    return done_testing();
}
