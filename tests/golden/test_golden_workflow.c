/* test_golden_workflow: fixed-seed runs of a tiny MLP (8 -> 16 -> 4, fastai Adam) on synthetic
 * data whose every step loss and epoch valid_loss must match the values recorded below
 * (llm.c style):
 *   - fit_one_cycle(2, 1e-2) with dropout 0.1: 10 steps;
 *   - fine_tune(1, base_lr 1e-2, freeze_epochs 1): 5 frozen steps at 1cycle(pct_start 0.99),
 *     then 5 unfrozen steps with discriminative LRs.
 * Re-record only in a commit that says why: run with --record to print the values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "tap.h"

#define STEPS  10
#define EPOCHS 2

typedef struct golden_case {
    const char *name;
    eng_stage_op op;
    int epochs;
    uint64_t seed, data_seed;
    float dropout;
    float losses[STEPS]; /* recorded with OPENBLAS_NUM_THREADS=1 on x86-64 (OpenBLAS 0.3.21) */
    float valid[EPOCHS]; /* NAN: not checked */
} golden_case;

static const golden_case cases[] = {
    {"fit_one_cycle",
     ENG_STAGE_FIT_ONE_CYCLE,
     2,
     1234,
     99,
     0.1f,
     {1.64434052f, 1.54714739f, 1.5248841f, 1.49391961f, 1.40082455f, 1.51253438f, 1.37398934f,
      1.30160236f, 1.25953996f, 1.24493229f},
     {NAN, NAN}},
    {"fine_tune",
     ENG_STAGE_FINE_TUNE,
     1,
     4321,
     98,
     0.0f,
     {1.67077672f, 1.40910339f, 1.49658954f, 1.53946865f, 1.33799446f, 1.51553905f, 1.44651103f,
      1.38649058f, 1.41332316f, 1.30193758f},
     {1.31800294f, 1.29501784f}},
};

typedef struct seen {
    float losses[STEPS], valid[EPOCHS];
    int n, ne;
} seen;

static eng_action record_event(const eng_event *ev, void *user)
{
    seen *s = user;
    if (ev->kind == ENG_EVENT_BATCH && s->n < STEPS)
        s->losses[s->n++] = ev->loss;
    if (ev->kind == ENG_EVENT_EPOCH && s->ne < EPOCHS)
        s->valid[s->ne++] = ev->valid_loss;
    return ENG_CONTINUE;
}

/* Runs one case in its own temporary out_dir; fills *s. Returns eng_job_run's code. */
static int run_case(const golden_case *gc, seen *s, eng_error *err)
{
    char dir[] = "/tmp/thawd-golden-XXXXXX";
    if (!mkdtemp(dir)) {
        snprintf(err->text, sizeof(err->text), "mkdtemp failed");
        return ENG_EIO;
    }
    eng_job_spec j;
    eng_job_spec_defaults(&j);
    j.seed = gc->seed;
    j.batch_size = 16;
    j.data.n_train = 80; /* 5 batches per epoch */
    j.data.n_valid = 32;
    j.data.features = 8;
    j.data.classes = 4;
    j.data.noise = 1.5f;
    j.data.seed = gc->data_seed;
    j.model.hidden[0] = 16;
    j.model.dropout = gc->dropout;
    eng_stage st;
    eng_stage_defaults(&st, gc->op);
    st.epochs = gc->epochs;
    st.lr.v[0] = 1e-2f;
    j.stages = &st;
    j.n_stages = 1;
    eng_run_opts o = {.out_dir = dir};
    eng_callbacks c = {record_event, s};
    int rc = eng_job_run(&j, &o, &c, err);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        diag("cleanup of %s failed", dir);
    return rc;
}

int main(int argc, char **argv)
{
    bool record = argc > 1 && strcmp(argv[1], "--record") == 0;
    eng_blas_set_threads(1);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const golden_case *gc = &cases[k];
        seen s = {0};
        eng_error err;
        int rc = run_case(gc, &s, &err);
        is_int(rc, 0, "%s: golden run (%s)", gc->name, err.text);
        is_int(s.n, STEPS, "%s: 10 steps", gc->name);
        is_int(s.ne, EPOCHS, "%s: 2 epochs", gc->name);
        if (record)
            printf("%s losses:\n", gc->name);
        for (int i = 0; i < STEPS; i++) {
            if (record)
                printf("    %.9gf,\n", (double)s.losses[i]);
            else
                is_near(s.losses[i], gc->losses[i], 1e-4, "%s: step %d loss %.6f", gc->name, i,
                        (double)s.losses[i]);
        }
        for (int i = 0; i < EPOCHS; i++) {
            if (record)
                printf("%s valid %.9gf\n", gc->name, (double)s.valid[i]);
            else if (!isnan(gc->valid[i]))
                is_near(s.valid[i], gc->valid[i], 1e-4, "%s: epoch %d valid_loss %.6f", gc->name, i,
                        (double)s.valid[i]);
        }
    }
    return done_testing();
}
