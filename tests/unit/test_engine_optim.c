/* test_engine_optim: fastai Adam and SGD against steps computed by hand from the formulas;
 * cosine / 1cycle schedule values; even_mults and slice rules; lr_find suggestions on
 * constructed curves including NaN truncation and too-few-points; a job's per-batch LRs
 * follow 1cycle sampled at pos = t/N. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lrfind.h"
#include "model.h"
#include "optim.h"
#include "par.h"
#include "schedule.h"
#include "tap.h"
#include "train.h"

/* A one-tensor model, enough for the optimizer. */
static void fake_model(eng_model *m, eng_param *p, float *w, float *g, float *mm, float *v,
                       uint32_t *step, bool no_wd)
{
    memset(m, 0, sizeof(*m));
    memset(p, 0, sizeof(*p));
    p->count = 1;
    p->trainable = true;
    p->info.no_wd = no_wd;
    m->n_params = 1;
    m->params = p;
    m->n_floats = 1;
    m->w = w;
    m->g = g;
    m->m = mm;
    m->v = v;
    m->step = step;
    m->n_groups = 1;
}

static void check_optim(void)
{
    const double adam[3] = {0.8990019999600007, 0.8634865425606629, 0.8080768005514442};
    const double adam_nowd[3] = {0.9000019999600007, 0.8653855445606229, 0.8108392890939647};
    const double sgd[3] = {0.949, 0.923051, 0.869627949};
    const float grads[3] = {0.5f, -0.2f, 0.3f};
    for (int kind = 0; kind < 3; kind++) {
        eng_model m;
        eng_param p;
        float w = 1.0f, g = 0, mm = 0, v = 0;
        uint32_t step = 0;
        fake_model(&m, &p, &w, &g, &mm, &v, &step, kind == 1);
        eng_opt_spec os;
        eng_opt_spec_defaults(&os);
        os.kind = kind == 2 ? ENG_OPT_SGD : ENG_OPT_ADAM;
        eng_optim o;
        eng_optim_init(&o, &os, 1);
        o.h[0].lr = 0.1f;
        const double *want = kind == 0 ? adam : kind == 1 ? adam_nowd : sgd;
        for (int t = 0; t < 3; t++) {
            g = grads[t];
            eng_optim_step(&o, &m);
            is_near(w, want[t], 2e-6, "%s step %d: p = %.9f",
                    kind == 0   ? "adam"
                    : kind == 1 ? "adam (no wd: bias)"
                                : "sgd mom 0.9",
                    t + 1, want[t]);
        }
        is_int(step, 3, "per-parameter step counter");
        /* frozen tensors are untouched */
        p.trainable = false;
        float before = w;
        eng_optim_step(&o, &m);
        ok(w == before && step == 3, "frozen tensor: no update, no decay, no state");
        eng_optim_clear(&m);
        ok(mm == 0 && v == 0 && step == 0 && o.h[0].lr == 0.1f,
           "clear_state zeroes moments and steps, keeps hypers");
    }
}

/* Adam over a tensor long enough to be split over the compute threads and to run the
 * vectorised loop with a remainder: the same bits as the formula applied one element at a
 * time in optim.h's order (decay, moments, step), with and without weight decay. */
static void check_adam_long(void)
{
    enum { N = 70003, STEPS = 3 };
    float *w = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float));
    float *mm = calloc(N, sizeof(float)), *v = calloc(N, sizeof(float));
    float *rw = malloc(N * sizeof(float)), *rm = calloc(N, sizeof(float));
    float *rv = calloc(N, sizeof(float));
    if (!w || !g || !mm || !v || !rw || !rm || !rv)
        abort();
    eng_par_set_threads(2);
    for (int no_wd = 0; no_wd < 2; no_wd++) {
        for (size_t i = 0; i < N; i++) {
            w[i] = rw[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
            mm[i] = rm[i] = v[i] = rv[i] = 0.0f;
        }
        eng_model m;
        eng_param p;
        uint32_t step = 0;
        fake_model(&m, &p, w, g, mm, v, &step, no_wd);
        p.count = N;
        m.n_floats = N;
        eng_opt_spec os;
        eng_opt_spec_defaults(&os);
        os.kind = ENG_OPT_ADAM;
        os.wd = 0.01f;
        eng_optim o;
        eng_optim_init(&o, &os, 1);
        o.h[0].lr = 3e-3f;
        const eng_hypers *h = &o.h[0];
        bool same = true;
        for (uint32_t t = 1; t <= STEPS; t++) {
            for (size_t i = 0; i < N; i++)
                g[i] = i % 7 == 0 ? 0.0f : (float)((i * 40503u + t * 977u) % 1999) / 999.0f - 1.0f;
            eng_optim_step(&o, &m);
            const float d1 = (float)(1.0 - pow((double)h->mom, (double)t));
            const float d2 = (float)(1.0 - pow((double)h->sqr_mom, (double)t));
            const float a = -h->lr / d1;
            for (size_t i = 0; i < N; i++) {
                if (!no_wd)
                    rw[i] *= 1.0f - h->lr * h->wd;
                rm[i] = rm[i] * h->mom + g[i] * (1.0f - h->mom);
                rv[i] = rv[i] * h->sqr_mom + g[i] * g[i] * (1.0f - h->sqr_mom);
                rw[i] += a * rm[i] / (sqrtf(rv[i] / d2) + h->eps);
            }
            same = same && memcmp(w, rw, N * sizeof(float)) == 0 &&
                   memcmp(mm, rm, N * sizeof(float)) == 0 && memcmp(v, rv, N * sizeof(float)) == 0;
        }
        ok(same && step == STEPS, "adam over %d floats, 2 threads%s: same bits as the formula",
           (int)N, no_wd ? ", no wd" : "");
    }
    eng_par_set_threads(1);
    free(w);
    free(g);
    free(mm);
    free(v);
    free(rw);
    free(rm);
    free(rv);
}

/* fastai SGD built with mom = 0 has no momentum callback: a scheduled mom (fit_one_cycle
 * sets the hyper) must not turn momentum on. And clip_grad_norm_ on trainable tensors. */
static void check_sgd_clip(void)
{
    eng_model m;
    eng_param p;
    float w = 1.0f, g = 0, mm = 0, v = 0;
    uint32_t step = 0;
    fake_model(&m, &p, &w, &g, &mm, &v, &step, true);
    eng_opt_spec os;
    eng_opt_spec_defaults(&os);
    os.kind = ENG_OPT_SGD;
    os.mom = 0.0f;
    eng_optim o;
    eng_optim_init(&o, &os, 1);
    o.h[0].lr = 0.1f;
    o.h[0].mom = 0.95f; /* what fit_one_cycle's schedule writes */
    g = 0.5f;
    eng_optim_step(&o, &m);
    g = 0.5f;
    eng_optim_step(&o, &m);
    is_near(w, 1.0 - 0.1 * 0.5 * 2, 1e-7, "sgd built with mom 0: plain steps despite mom hyper");
    ok(mm == 0.0f, "no momentum buffer used");

    /* two tensors: grads (3, 4) and a frozen one (100): global L2 norm 5 */
    eng_param ps[2];
    float ws[2] = {0, 0}, gs[2] = {3.0f, 100.0f}, m2[2] = {0}, v2[2] = {0};
    uint32_t st2[2] = {0};
    fake_model(&m, &ps[0], ws, gs, m2, v2, st2, false);
    float g3[3] = {3.0f, 4.0f, 100.0f};
    memset(ps, 0, sizeof(ps));
    ps[0].count = 2;
    ps[0].trainable = true;
    ps[1].offset = 2;
    ps[1].count = 1;
    ps[1].trainable = false;
    m.params = ps;
    m.n_params = 2;
    m.g = g3;
    double n2 = eng_clip_grad_norm(&m, 1.0f, 2.0f);
    is_near(n2, 5.0, 1e-9, "L2 norm over trainable tensors only");
    is_near(g3[0], 3.0 / (5.0 + 1e-6), 1e-6, "scaled by max_norm / (norm + 1e-6)");
    ok(g3[2] == 100.0f, "frozen gradient untouched");
    g3[0] = 3.0f;
    g3[1] = -4.0f;
    double ninf = eng_clip_grad_norm(&m, 10.0f, INFINITY);
    is_near(ninf, 4.0, 1e-9, "inf norm = max |g|");
    ok(g3[0] == 3.0f && g3[1] == -4.0f, "below max_norm: unchanged");
    float logits[4] = {0.1f, 2.0f, 0.5f, 2.0f};
    is_int((long long)eng_rank_of_target(logits, 4, 2), 2, "rank of the target among logits");
}

static void check_sched(void)
{
    is_near(eng_sched_cos(0, 2, 0.25), 0.29289, 1e-5, "cos 0->2 at .25");
    is_near(eng_sched_cos(0, 2, 0.5), 1.0, 1e-9, "cos 0->2 at .5");
    is_near(eng_sched_cos(0, 2, 0.75), 1.70711, 1e-5, "cos 0->2 at .75");
    double L = 1e-2;
    is_near(eng_sched_one_cycle(0.25, L / 25, L, L / 1e5, 0.0), L / 25, 1e-12,
            "1cycle starts at L/25");
    is_near(eng_sched_one_cycle(0.25, L / 25, L, L / 1e5, 0.25), L, 1e-12, "peak at pct_start");
    is_near(eng_sched_one_cycle(0.25, L / 25, L, L / 1e5, 1.0), L / 1e5, 1e-12, "ends at L/1e5");
    is_near(eng_sched_one_cycle(0.25, 0.95, 0.85, 0.95, 0.25), 0.85, 1e-9, "mom 0.85 at peak");
    float v[3];
    eng_even_mults(1e-5, 1e-3, 3, v);
    ok(fabsf(v[0] - 1e-5f) < 1e-12f && fabsf(v[1] - 1e-4f) < 1e-10f && fabsf(v[2] - 1e-3f) < 1e-9f,
       "even_mults(1e-5, 1e-3, 3) = 1e-5, 1e-4, 1e-3");
    eng_even_mults(1e-5, 1e-3, 1, v);
    ok(v[0] == 1e-3f, "even_mults n=1 -> stop");
    eng_lr lr = {.kind = ENG_LR_SLICE_HI, .v = {1e-3f}};
    ok(eng_lr_resolve(&lr, 3, NULL, v, "x", NULL) == 0 && fabsf(v[0] - 1e-4f) < 1e-11f &&
           v[0] == v[1] && v[2] == 1e-3f,
       "slice(hi) -> hi/10 for all but the head");
    lr = (eng_lr){.kind = ENG_LR_SLICE, .v = {1e-5f, 1e-3f}};
    ok(eng_lr_resolve(&lr, 2, NULL, v, "x", NULL) == 0 && v[0] == 1e-5f && v[1] == 1e-3f,
       "slice(lo, hi) with 2 groups");
    lr = (eng_lr){.kind = ENG_LR_LIST, .n = 3, .v = {1, 2, 3}};
    eng_error err;
    is_int(eng_lr_resolve(&lr, 2, NULL, v, "stages.0.lr", &err), ENG_EINVAL,
           "list length != groups");
    is_str(err.field, "stages.0.lr", "field named");
    eng_lr_find_result lf = {
        .ok = true, .valley = 1e-2f, .minimum = 2e-3f, .steep = 3e-3f, .slide = NAN};
    lr = (eng_lr){.kind = ENG_LR_SUGGESTION,
                  .suggest = ENG_SUGGEST_VALLEY,
                  .divide = 2,
                  .slice_lo_divide = 10};
    ok(eng_lr_resolve(&lr, 2, &lf, v, "x", NULL) == 0 && v[1] == 5e-3f &&
           fabsf(v[0] - 5e-4f) < 1e-10f,
       "suggestion / divide, slice_divide -> slice(s/10, s)");
    lr.suggest = ENG_SUGGEST_SLIDE;
    snprintf(lf.reason, sizeof(lf.reason), "only 9 usable points: slide needs at least 16");
    is_int(eng_lr_resolve(&lr, 2, &lf, v, "f", &err), ENG_ENOSUGGEST, "NaN suggestion fails");
    ok(strstr(err.text, "slide needs") != NULL, "with lr_find's reason: %s", err.text);
    is_near(eng_lrfind_lr(1e-7, 10, 0, 100), 1e-7, 1e-12, "lr_find k=0 -> start");
    is_near(eng_lrfind_lr(1e-7, 10, 99, 100), pow(10, 0.92), 1e-6, "lr_find k=99 -> 10^0.92");
}

static void check_suggest(void)
{
    float lrs[100], loss[100];
    for (int k = 0; k < 100; k++) {
        lrs[k] = (float)(1e-7 * pow(10.0, 0.08 * k));
        loss[k] = k <= 60 ? 2.0f - 0.02f * (float)k - (k > 30 ? 0.1f : 0.0f) : 0.0f;
    }
    for (int k = 61; k < 100; k++)
        loss[k] = loss[60] + 0.05f * (float)(k - 60);
    eng_lr_find_result r;
    eng_lrfind_suggest(lrs, loss, 100, 100, &r);
    ok(r.ok, "suggestions on a valley curve");
    ok(r.valley == lrs[34], "valley = midpoint of the longest decreasing run (index 34)");
    ok(r.minimum == lrs[60] / 10.0f, "minimum = lr at min loss / 10");
    ok(r.steep == lrs[30], "steep = left end of the steepest segment");
    ok(r.slide == lrs[79], "slide as numpy.gradient-based fastai slide (index 79)");

    float nl[100];
    memcpy(nl, loss, sizeof(nl));
    nl[40] = NAN;
    eng_lrfind_suggest(lrs, nl, 100, 100, &r);
    ok(r.ok && r.minimum == lrs[39] / 10.0f, "NaN truncates the series before suggesting");

    eng_lrfind_suggest(lrs, loss, 12, 100, &r);
    ok(!r.ok && isnan(r.valley) && strstr(r.reason, "too few points"),
       "too few points -> no suggestion: %s", r.reason);
    nl[10] = NAN;
    eng_lrfind_suggest(lrs, nl, 100, 100, &r);
    ok(!r.ok && strstr(r.reason, "NaN"), "all-NaN usable points -> no suggestion: %s", r.reason);

    /* 2 usable points: Python's index -1 in valley picks the last one; slide impossible */
    float l2[8] = {9, 3, 2, 9, 9, 9, 9, 9};
    eng_lrfind_suggest(lrs, l2, 8, 10, &r);
    ok(r.ok && r.valley == lrs[2] && r.steep == lrs[1] && r.minimum == lrs[2] / 10.0f,
       "2 points: valley wraps like fastai, steep, minimum");
    ok(isnan(r.slide) && strstr(r.reason, "slide"), "slide needs 16 points: %s", r.reason);
}

/* ---- 1cycle through a job: per-batch LRs ---- */
static float lrs_seen[64];
static int n_seen;

static eng_action cb(const eng_event *ev, void *user)
{
    (void)user;
    if (ev->kind == ENG_EVENT_BATCH && n_seen < 64)
        lrs_seen[n_seen++] = ev->lr;
    return ENG_CONTINUE;
}

static void check_job_schedule(void)
{
    char dir[] = "/tmp/thawd-test-sched-XXXXXX";
    if (!mkdtemp(dir))
        return;
    eng_job_spec j;
    eng_job_spec_defaults(&j);
    j.batch_size = 16;
    j.data.n_train = 64; /* 4 batches per epoch */
    j.data.n_valid = 0;
    eng_stage st;
    eng_stage_defaults(&st, ENG_STAGE_FIT_ONE_CYCLE);
    st.epochs = 2; /* N = 8 batches, pct 0.25 -> peak at batch 2 */
    st.lr.v[0] = 1e-2f;
    j.stages = &st;
    j.n_stages = 1;
    eng_run_opts o = {.out_dir = dir};
    eng_callbacks c = {cb, NULL};
    eng_error err;
    int rc = eng_job_run(&j, &o, &c, &err);
    is_int(rc, 0, "1cycle job runs (%s)", err.text);
    is_int(n_seen, 8, "8 batches");
    is_near(lrs_seen[0], 1e-2 / 25, 1e-6, "first batch at L/div");
    is_near(lrs_seen[2], 1e-2, 1e-6, "batch 2 (pos 0.25) at the peak");
    double last = eng_sched_one_cycle(0.25, 1e-2 / 25, 1e-2, 1e-2 / 1e5, 7.0 / 8.0);
    is_near(lrs_seen[7], last, 1e-6, "last batch sampled at pos 7/8, never 1");
    ok(lrs_seen[7] > 1e-2f / 1e5f * 1.5f, "last LR stays above L/div_final");
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        diag("cleanup failed");
}

int main(void)
{
    check_optim();
    check_adam_long();
    check_sgd_clip();
    check_sched();
    check_suggest();
    check_job_schedule();
    return done_testing();
}
