/* test_golden_mlp: a fixed-seed tiny MLP (8 -> 16 -> 4, Adam, 1cycle) trains 10 steps on
 * synthetic data; each step's loss must match the values recorded below (llm.c style).
 * Re-record only in a commit that says why: run with --record to print them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "tap.h"

#define STEPS 10

/* Recorded with OPENBLAS_NUM_THREADS=1 on x86-64 (OpenBLAS 0.3.21). */
static const float expected[STEPS] = {
    1.64434052f, 1.54714739f, 1.5248841f,  1.49391961f, 1.40082455f,
    1.51253438f, 1.37398934f, 1.30160236f, 1.25953996f, 1.24493229f,
};

static float losses[STEPS];
static int n;

static eng_action cb(const eng_event *ev, void *user)
{
    (void)user;
    if (ev->kind == ENG_EVENT_BATCH && n < STEPS)
        losses[n++] = ev->loss;
    return ENG_CONTINUE;
}

int main(int argc, char **argv)
{
    bool record = argc > 1 && strcmp(argv[1], "--record") == 0;
    char dir[] = "/tmp/thawd-golden-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    eng_blas_set_threads(1);
    eng_job_spec j;
    eng_job_spec_defaults(&j);
    j.seed = 1234;
    j.batch_size = 16;
    j.data.n_train = 80; /* 5 batches per epoch */
    j.data.n_valid = 32;
    j.data.features = 8;
    j.data.classes = 4;
    j.data.noise = 1.5f;
    j.data.seed = 99;
    j.model.hidden[0] = 16;
    j.model.dropout = 0.1f;
    eng_stage st;
    eng_stage_defaults(&st, ENG_STAGE_FIT_ONE_CYCLE);
    st.epochs = 2;
    st.lr.v[0] = 1e-2f;
    j.stages = &st;
    j.n_stages = 1;
    eng_run_opts o = {.out_dir = dir};
    eng_callbacks c = {cb, NULL};
    eng_error err;
    int rc = eng_job_run(&j, &o, &c, &err);
    is_int(rc, 0, "golden run (%s)", err.text);
    is_int(n, STEPS, "10 steps");
    for (int i = 0; i < STEPS; i++) {
        if (record)
            printf("    %.9gf,\n", (double)losses[i]);
        else
            is_near(losses[i], expected[i], 1e-4, "step %d loss %.6f", i, (double)losses[i]);
    }
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        diag("cleanup failed");
    return done_testing();
}
