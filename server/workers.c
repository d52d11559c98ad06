/*
 * workers.c: the training worker pool of workers.h.
 *
 * DESIGN (redis bio.c): each worker loops "claim the oldest queued job; run it; repeat".
 * With nothing to claim it sleeps on a condvar until srv_workers_notify() bumps the
 * generation counter or stop is requested, with a 2 s timed wait as a safety net (another
 * process or a missed wake-up never strands a job). No busy-waiting.
 *
 * While a job runs, the engine calls on_progress() on the worker's thread after every batch
 * and at every stage/epoch boundary. It writes progress to storage at most every 250 ms and
 * at each stage or epoch change, adds events, records artifacts (a checkpoint also becomes
 * the job's resume path), renews the lease every 2 s (which also reads cancel_requested),
 * and returns the engine's next action: CANCEL when the job's cancel flag is set (by the
 * cancel handler through srv_workers_cancel, or by storage), INTERRUPT on shutdown.
 *
 * Reporting for the API: every training batch becomes a row of the per-batch metrics
 * history, buffered and written in one transaction per progress write (not one fsync per
 * step); each flush also measures the step rate (an exponential average over windows of at
 * least a second) for the ETA; every stored event wakes the job's live SSE streams.
 *
 * Registry: slot i holds the id of the job worker i runs (guarded by pool->mu) and an
 * atomic cancel flag that the engine's callback polls without locking.
 */
#include "workers.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "datasets.h"
#include "json_io.h"
#include "log.h"
#include "models.h"
#include "sse.h"

#define LEASE_MS          60000
#define HEARTBEAT_MS      2000
#define PROGRESS_MS       250
#define IDLE_WAIT_SECONDS 2
#define METRICS_BUF       256
#define RATE_WINDOW_MS    1000

typedef struct worker {
    struct srv_workers *pool;
    int index; /* 1-based */
    pthread_t thread;
    bool started;
    char owner[64];
    int64_t job_id;     /* running job, 0 = idle; guarded by pool->mu */
    atomic_bool cancel; /* cancel the running job at the next batch */
} worker;

struct srv_workers {
    srv_app *app;
    int n;
    worker *ws;
    /* mu guards: generation, ws[i].job_id. Never held across engine, SQLite or MHD calls. */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when generation changes or stop is set */
    uint64_t generation;
    atomic_bool stop;
};

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- per-job context and the progress callback -------------------------------------------- */

typedef struct job_ctx {
    worker *w;
    store *s;
    int64_t id;
    int64_t last_write, last_heartbeat;
    int32_t last_stage, last_epoch;
    bool lost; /* the lease is gone: stop without touching the job again */
    char metrics[256];
    uint64_t batches;
    store_batch_metric mbuf[METRICS_BUF]; /* batches not yet written */
    size_t n_mbuf;
    int64_t rate_t0, rate_step0; /* start of the current rate window */
    double rate;                 /* steps per second, 0 until measured */
    const eng_job_spec *spec;    /* borrowed: the running job's spec (metric names) */
} job_ctx;

static int64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void add_event(job_ctx *c, const char *level, const char *type, const char *message,
                      json_t *data)
{
    char *text = data ? srv_json_dump(data, NULL) : NULL;
    json_decref(data);
    int rc = store_event_add(c->s, c->id, level, type, message, text, NULL);
    if (rc != 0)
        srv_log(SRV_LOG_WARN, "event not stored job=%lld type=%s err=%s", (long long)c->id, type,
                store_strerror(rc));
    else
        srv_sse_notify(c->w->pool->app->sse, c->id);
    free(text);
}

/* Writes the buffered per-batch rows and updates the measured step rate. */
static void flush_metrics(job_ctx *c, int64_t step)
{
    if (c->n_mbuf > 0) {
        int rc = store_batch_metrics_add(c->s, c->id, c->mbuf, c->n_mbuf);
        if (rc != 0)
            srv_log(SRV_LOG_WARN, "batch metrics not stored job=%lld n=%zu err=%s",
                    (long long)c->id, c->n_mbuf, store_strerror(rc));
        c->n_mbuf = 0;
    }
    int64_t now = now_ms();
    if (c->rate_t0 == 0 || step < c->rate_step0) {
        c->rate_t0 = now;
        c->rate_step0 = step;
        return;
    }
    int64_t dt = now - c->rate_t0;
    if (dt < RATE_WINDOW_MS || step == c->rate_step0)
        return;
    double r = (double)(step - c->rate_step0) * 1000.0 / (double)dt;
    c->rate = c->rate > 0 ? 0.7 * c->rate + 0.3 * r : r;
    c->rate_t0 = now;
    c->rate_step0 = step;
    if (!c->lost) {
        int rc = store_job_set_rate(c->s, c->id, c->w->owner, c->rate);
        if (rc == STORE_ELOST)
            c->lost = true;
    }
}

static void write_progress(job_ctx *c, const eng_event *ev)
{
    store_progress p;
    memset(&p, 0, sizeof p);
    p.stage_index = (int32_t)ev->stage_index;
    p.stage_count = (int32_t)ev->n_stages;
    const char *op = eng_stage_op_name(ev->op);
    snprintf(p.stage_op, sizeof p.stage_op, "%s", op ? op : "");
    p.epoch = (int32_t)ev->epoch;
    p.n_epochs = (int32_t)ev->n_epochs;
    p.batch = (int32_t)ev->batch;
    p.n_batches = (int32_t)ev->n_batches;
    p.step = (int64_t)ev->step;
    /* storage rejects fractions outside [0, 1]; rounding may overshoot by a hair */
    p.fraction = isfinite(ev->progress) ? fmin(1.0, fmax(0.0, ev->progress)) : 0.0;
    p.metrics_json = c->metrics[0] ? c->metrics : NULL;
    if (!c->lost)
        flush_metrics(c, (int64_t)ev->step);
    int rc = store_job_progress(c->s, c->id, c->w->owner, &p);
    if (rc == STORE_ELOST)
        c->lost = true;
    else if (rc != 0)
        srv_log(SRV_LOG_WARN, "progress not stored job=%lld err=%s", (long long)c->id,
                store_strerror(rc));
    c->last_write = now_ms();
    c->last_stage = p.stage_index;
    c->last_epoch = p.epoch;
}

/* A float for JSON: non-finite values become "NaN" / "Infinity" / "-Infinity" strings. */
static json_t *jnum(float x)
{
    return srv_json_float((double)x);
}

static void on_lr_find(job_ctx *c, const eng_lr_find_result *r)
{
    if (!r)
        return;
    json_t *lrs = json_array(), *losses = json_array();
    for (size_t i = 0; i < r->n; i++) {
        json_array_append_new(lrs, jnum(r->lrs[i]));
        json_array_append_new(losses, jnum(r->losses[i]));
    }
    json_t *d = json_pack("{s:b, s:o, s:o}", "ok", r->ok, "lrs", lrs, "losses", losses);
    char msg[256];
    if (r->ok) {
        json_object_set_new(d, "valley", jnum(r->valley));
        json_object_set_new(d, "minimum", jnum(r->minimum));
        json_object_set_new(d, "steep", jnum(r->steep));
        json_object_set_new(d, "slide", jnum(r->slide));
        snprintf(msg, sizeof msg, "lr_find: valley=%.3g minimum=%.3g steep=%.3g slide=%.3g",
                 (double)r->valley, (double)r->minimum, (double)r->steep, (double)r->slide);
    } else {
        json_object_set_new(d, "reason", json_string(r->reason));
        snprintf(msg, sizeof msg, "lr_find: no suggestion (%s)", r->reason);
    }
    srv_log(SRV_LOG_INFO, "%s job=%lld", msg, (long long)c->id);
    add_event(c, r->ok ? "info" : "warn", "lr_find", msg, d);
}

static void on_artifact(job_ctx *c, const eng_artifact *a)
{
    if (!a)
        return;
    int rc =
        store_artifact_add(c->s, c->id, a->kind, a->name, a->path, (int64_t)a->size, a->sha256);
    if (rc != 0)
        srv_log(SRV_LOG_WARN, "artifact not recorded job=%lld name=%s err=%s", (long long)c->id,
                a->name, store_strerror(rc));
    if (strcmp(a->kind, "checkpoint") == 0) {
        rc = store_job_set_resume(c->s, c->id, c->w->owner, a->path);
        if (rc == STORE_ELOST)
            c->lost = true;
        else if (rc != 0)
            srv_log(SRV_LOG_WARN, "resume path not recorded job=%lld err=%s", (long long)c->id,
                    store_strerror(rc));
    }
    char msg[256];
    snprintf(msg, sizeof msg, "saved %s %s (%llu bytes)", a->kind, a->name,
             (unsigned long long)a->size);
    srv_log(SRV_LOG_INFO, "artifact job=%lld kind=%s name=%s size=%llu", (long long)c->id, a->kind,
            a->name, (unsigned long long)a->size);
    add_event(c, "info", "artifact", msg,
              json_pack("{s:s, s:s, s:I, s:s}", "kind", a->kind, "name", a->name, "size",
                        (json_int_t)a->size, "sha256", a->sha256));
}

static eng_action on_progress(const eng_event *ev, void *user)
{
    job_ctx *c = user;
    int64_t now = now_ms();
    const char *op = eng_stage_op_name(ev->op);
    op = op ? op : "?";
    char msg[256];

    switch (ev->kind) {
    case ENG_EVENT_STAGE_BEGIN:
        write_progress(c, ev);
        snprintf(msg, sizeof msg, "stage %zu/%zu %s started", ev->stage_index + 1, ev->n_stages,
                 op);
        add_event(c, "info", "stage", msg,
                  json_pack("{s:s, s:i, s:i, s:s}", "phase", "begin", "index", (int)ev->stage_index,
                            "count", (int)ev->n_stages, "op", op));
        srv_log(SRV_LOG_INFO, "stage begin job=%lld index=%zu op=%s", (long long)c->id,
                ev->stage_index, op);
        break;
    case ENG_EVENT_STAGE_END:
        write_progress(c, ev);
        snprintf(msg, sizeof msg, "stage %zu/%zu %s finished in %.1f s%s%s", ev->stage_index + 1,
                 ev->n_stages, op, ev->seconds, ev->message ? ": " : "",
                 ev->message ? ev->message : "");
        add_event(c, "info", "stage", msg,
                  json_pack("{s:s, s:i, s:i, s:s, s:f}", "phase", "end", "index",
                            (int)ev->stage_index, "count", (int)ev->n_stages, "op", op, "seconds",
                            ev->seconds));
        break;
    case ENG_EVENT_BATCH: {
        c->batches++;
        store_batch_metric *m = &c->mbuf[c->n_mbuf++];
        m->step = (int64_t)ev->step;
        m->stage = (int32_t)ev->stage_index;
        m->epoch = (int32_t)ev->epoch;
        m->batch = (int32_t)ev->batch;
        m->loss = (double)ev->loss;
        m->smooth_loss = (double)ev->smooth_loss;
        m->lr = (double)ev->lr;
        m->mom = (double)ev->mom;
        m->created_at = wall_ms();
        if (c->n_mbuf == METRICS_BUF)
            write_progress(c, ev); /* flushes the buffer */
        if ((int32_t)ev->stage_index != c->last_stage || (int32_t)ev->epoch != c->last_epoch ||
            now - c->last_write >= PROGRESS_MS)
            write_progress(c, ev);
        if (c->batches % 100 == 0)
            srv_log(SRV_LOG_DEBUG, "batch job=%lld step=%llu loss=%.4f lr=%.3g", (long long)c->id,
                    (unsigned long long)ev->step, (double)ev->smooth_loss, (double)ev->lr);
        break;
    }
    case ENG_EVENT_EPOCH: {
        json_t *m = json_pack("{s:o, s:o, s:o}", "train_loss", jnum(ev->train_loss), "valid_loss",
                              jnum(ev->valid_loss), "accuracy", jnum(ev->accuracy));
        for (size_t k = 0; m && c->spec && ev->metrics && k < ev->n_metrics && k < ENG_MAX_METRICS;
             k++) {
            char col[48];
            eng_metric_name(&c->spec->metrics[k], col, sizeof col);
            json_object_set_new(m, col, jnum(ev->metrics[k]));
        }
        char *mt = m ? srv_json_dump(m, NULL) : NULL;
        if (mt && strlen(mt) < sizeof c->metrics)
            snprintf(c->metrics, sizeof c->metrics, "%s", mt);
        free(mt);
        write_progress(c, ev);
        snprintf(msg, sizeof msg, "epoch %u/%u train_loss=%.6f valid_loss=%.6f accuracy=%.6f",
                 ev->epoch + 1, ev->n_epochs, (double)ev->train_loss, (double)ev->valid_loss,
                 (double)ev->accuracy);
        srv_log(SRV_LOG_INFO,
                "epoch job=%lld stage=%zu epoch=%u train_loss=%.6f "
                "valid_loss=%.6f accuracy=%.6f seconds=%.1f",
                (long long)c->id, ev->stage_index, ev->epoch, (double)ev->train_loss,
                (double)ev->valid_loss, (double)ev->accuracy, ev->seconds);
        json_object_set_new(m, "epoch", json_integer(ev->epoch));
        json_object_set_new(m, "epochs", json_integer(ev->n_epochs));
        json_object_set_new(m, "stage", json_integer((json_int_t)ev->stage_index));
        json_object_set_new(m, "seconds", json_real(ev->seconds));
        add_event(c, "info", "epoch", msg, m);
        break;
    }
    case ENG_EVENT_LR_FIND:
        on_lr_find(c, ev->lr_find);
        break;
    case ENG_EVENT_ARTIFACT:
        on_artifact(c, ev->artifact);
        break;
    case ENG_EVENT_LOG: {
        static const char *const lv[] = {"debug", "info", "warn", "error"};
        const char *level =
            (int)ev->level >= 0 && ev->level <= ENG_LOG_ERROR ? lv[ev->level] : "info";
        if (ev->level != ENG_LOG_DEBUG)
            add_event(c, level, "message", ev->message ? ev->message : "", NULL);
        srv_log(ev->level == ENG_LOG_ERROR  ? SRV_LOG_ERROR
                : ev->level == ENG_LOG_WARN ? SRV_LOG_WARN
                : ev->level == ENG_LOG_INFO ? SRV_LOG_INFO
                                            : SRV_LOG_DEBUG,
                "engine job=%lld: %s", (long long)c->id, ev->message ? ev->message : "");
        break;
    }
    }

    if (!c->lost && now - c->last_heartbeat >= HEARTBEAT_MS) {
        bool cancel = false;
        int rc = store_job_heartbeat(c->s, c->id, c->w->owner, LEASE_MS, &cancel);
        c->last_heartbeat = now;
        if (rc == STORE_ELOST)
            c->lost = true;
        else if (rc == 0 && cancel)
            atomic_store(&c->w->cancel, true);
    }
    if (c->lost || atomic_load(&c->w->cancel))
        return ENG_CANCEL;
    if (atomic_load(&c->w->pool->stop))
        return ENG_INTERRUPT;
    return ENG_CONTINUE;
}

/* ---- running one job ---------------------------------------------------------------------- */

static void set_running(worker *w, int64_t id)
{
    pthread_mutex_lock(&w->pool->mu);
    w->job_id = id;
    atomic_store(&w->cancel, false);
    pthread_mutex_unlock(&w->pool->mu);
}

static void finish(job_ctx *c, store_job_state st, const char *error)
{
    int rc = store_job_finish(c->s, c->id, c->w->owner, st, error);
    if (rc != 0) {
        srv_log(SRV_LOG_WARN, "cannot finish job=%lld state=%s err=%s", (long long)c->id,
                store_job_state_name(st), store_strerror(rc));
        return;
    }
    char msg[320];
    snprintf(msg, sizeof msg, "job %s%s%.256s", store_job_state_name(st), error ? ": " : "",
             error ? error : "");
    add_event(c, st == STORE_JOB_FAILED ? "error" : "info", "state", msg,
              json_pack("{s:s}", "state", store_job_state_name(st)));
    srv_log(st == STORE_JOB_FAILED ? SRV_LOG_WARN : SRV_LOG_INFO,
            "job finished job=%lld state=%s%s%s", (long long)c->id, store_job_state_name(st),
            error ? " error=" : "", error ? error : "");
}

static void run_job(worker *w, store *s, store_job *job)
{
    srv_app *app = w->pool->app;
    job_ctx c = {.w = w,
                 .s = s,
                 .id = job->id,
                 .last_stage = -2,
                 .last_epoch = -1,
                 .last_heartbeat = now_ms()};
    srv_spec *spec = calloc(1, sizeof *spec);
    srv_spec_errors *errs = calloc(1, sizeof *errs);
    char out_dir[SRV_CONFIG_STR_MAX + 48], error[400];

    set_running(w, job->id);
    if (job->cancel_requested)
        atomic_store(&w->cancel, true);
    srv_log(SRV_LOG_INFO, "job started job=%lld attempt=%d resume=%s", (long long)job->id,
            job->attempt, job->resume_path ? job->resume_path : "none");
    if (!spec || !errs) {
        finish(&c, STORE_JOB_FAILED, "out of memory");
        goto done;
    }
    srv_spec_registry reg = srv_spec_registry_of(app);
    if (!job->spec_json || srv_spec_parse_text_reg(job->spec_json, strlen(job->spec_json),
                                                   app->fmnist_dir, &reg, spec, errs) != 0) {
        snprintf(error, sizeof error, "the stored spec is not valid: %.200s",
                 errs->detail[0] ? errs->detail : "missing");
        finish(&c, STORE_JOB_FAILED, error);
        goto done;
    }
    c.spec = &spec->eng;
    snprintf(out_dir, sizeof out_dir, "%s/%lld", app->jobs_dir, (long long)job->id);
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(error, sizeof error, "cannot create %.200s: %s", out_dir, strerror(errno));
        finish(&c, STORE_JOB_FAILED, error);
        goto done;
    }
    const char *resume = NULL;
    if (job->resume_path) {
        if (access(job->resume_path, R_OK) == 0)
            resume = job->resume_path;
        else
            add_event(&c, "warn", "message", "checkpoint missing; starting from the beginning",
                      NULL);
    }
    char msg[160];
    snprintf(msg, sizeof msg, "job running (attempt %d%s)", job->attempt,
             resume ? ", resumed from checkpoint" : "");
    add_event(&c, "info", "state", msg,
              json_pack("{s:s, s:i, s:b}", "state", "running", "attempt", (int)job->attempt,
                        "resumed", resume != NULL));

    eng_run_opts opts = {.out_dir = out_dir, .resume_path = resume};
    eng_callbacks cb = {.progress = on_progress, .user = &c};
    eng_error err;
    memset(&err, 0, sizeof err);
    int rc = eng_job_run(&spec->eng, &opts, &cb, &err);
    if (!c.lost && c.n_mbuf > 0) {
        int mrc = store_batch_metrics_add(s, job->id, c.mbuf, c.n_mbuf);
        if (mrc != 0)
            srv_log(SRV_LOG_WARN, "batch metrics not stored job=%lld err=%s", (long long)job->id,
                    store_strerror(mrc));
        c.n_mbuf = 0;
    }

    if (c.lost) {
        srv_log(SRV_LOG_WARN, "lease lost; leaving job=%lld alone", (long long)job->id);
    } else if (rc == 0) {
        finish(&c, STORE_JOB_SUCCEEDED, NULL);
    } else if (rc == ENG_ECANCELED) {
        finish(&c, STORE_JOB_CANCELLED, NULL);
    } else if (rc == ENG_EINTERRUPTED) {
        int r2 = store_job_requeue(s, job->id, w->owner);
        if (r2 != 0)
            srv_log(SRV_LOG_WARN, "cannot requeue job=%lld err=%s", (long long)job->id,
                    store_strerror(r2));
        else
            add_event(&c, "info", "state", "job interrupted by shutdown; queued to resume",
                      json_pack("{s:s}", "state", "queued"));
        srv_log(SRV_LOG_INFO, "job interrupted job=%lld requeued=%d", (long long)job->id, r2 == 0);
    } else {
        snprintf(error, sizeof error, "%s%s%.100s%s%.250s", eng_strerror(rc),
                 err.field[0] ? " at " : "", err.field, err.text[0] ? ": " : "", err.text);
        finish(&c, STORE_JOB_FAILED, error);
    }
done:
    set_running(w, 0);
    srv_spec_fini(spec);
    free(spec);
    free(errs);
}

/* ---- the worker thread -------------------------------------------------------------------- */

static void idle_wait(srv_workers *p, uint64_t seen)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += IDLE_WAIT_SECONDS;
    pthread_mutex_lock(&p->mu);
    while (!atomic_load(&p->stop) && p->generation == seen) {
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&p->mu);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    srv_workers *p = w->pool;
    char name[16];
    snprintf(name, sizeof name, "worker-%d", w->index);
    srv_log_set_thread_name(name);
    const char *cpus = p->app->cfg->worker_cpus;
    if (cpus[0] && srv_cpus_pin_self(cpus) != 0)
        srv_log(SRV_LOG_WARN, "cannot pin the worker cpus=%s err=%s", cpus, strerror(errno));

    store *s = NULL;
    bool warned = false;
    while (!atomic_load(&p->stop)) {
        pthread_mutex_lock(&p->mu);
        uint64_t seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        if (!s) {
            int rc = store_open(p->app->db_path, srv_log_store, NULL, &s);
            if (rc != 0) {
                srv_log(SRV_LOG_ERROR, "cannot open storage path=%s err=%s", p->app->db_path,
                        store_strerror(rc));
                s = NULL;
                idle_wait(p, seen);
                continue;
            }
        }
        store_job job;
        memset(&job, 0, sizeof job);
        int rc = store_job_claim(s, w->owner, LEASE_MS, &job);
        if (rc == 0) {
            warned = false;
            run_job(w, s, &job);
            store_job_fini(&job);
            continue;
        }
        if (rc != STORE_ENOTFOUND && !warned) {
            srv_log(SRV_LOG_ERROR, "claim failed err=%s", store_strerror(rc));
            warned = true;
        }
        idle_wait(p, seen);
    }
    store_close(s);
    srv_log(SRV_LOG_DEBUG, "worker stopped");
    return NULL;
}

/* ---- pool --------------------------------------------------------------------------------- */

int srv_workers_create(srv_app *app, int n, srv_workers **out)
{
    *out = NULL;
    srv_workers *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->ws = calloc((size_t)n, sizeof *p->ws);
    if (!p->ws) {
        free(p);
        return -1;
    }
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&p->cv, &ca) != 0) {
        free(p->ws);
        free(p);
        return -1;
    }
    pthread_condattr_destroy(&ca);
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        pthread_cond_destroy(&p->cv);
        free(p->ws);
        free(p);
        return -1;
    }
    p->app = app;
    p->n = n;
    atomic_init(&p->stop, false);
    for (int i = 0; i < n; i++) {
        p->ws[i].pool = p;
        p->ws[i].index = i + 1;
        atomic_init(&p->ws[i].cancel, false);
        snprintf(p->ws[i].owner, sizeof p->ws[i].owner, "pid%ld/worker-%d", (long)getpid(), i + 1);
    }
    *out = p;
    return 0;
}

int srv_workers_start(srv_workers *p)
{
    const char *cpus = p->app->cfg->worker_cpus;
    if (cpus[0] && srv_cpus_usable(cpus) != 0) {
        srv_log(SRV_LOG_ERROR, "--worker-cpus %s: names no CPU this process may run on", cpus);
        return -1;
    }
    for (int i = 0; i < p->n; i++) {
        if (pthread_create(&p->ws[i].thread, NULL, worker_main, &p->ws[i]) != 0) {
            srv_log(SRV_LOG_ERROR, "cannot start worker-%d", i + 1);
            return -1; /* srv_workers_stop joins the ones that started */
        }
        p->ws[i].started = true;
    }
    return 0;
}

void srv_workers_notify(srv_workers *p)
{
    pthread_mutex_lock(&p->mu);
    p->generation++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

bool srv_workers_cancel(srv_workers *p, int64_t id)
{
    bool hit = false;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n; i++) {
        if (p->ws[i].job_id == id) {
            atomic_store(&p->ws[i].cancel, true);
            hit = true;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return hit;
}

void srv_workers_stop(srv_workers *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        if (p->ws[i].started)
            pthread_join(p->ws[i].thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->ws);
    free(p);
}
