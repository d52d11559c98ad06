/*
 * cli_run.c: `thawd run`: parse a job spec file with the daemon's own parser and run it with
 * the engine on this thread, printing fastai's per-epoch table, lr_find suggestions and the
 * files written. SIGINT asks the engine to cancel at the next batch. With --timeline FILE it
 * also writes every engine event as one JSON object per line with its wall time (seconds since
 * the command started), so a benchmark can time each stage, training apart from validation.
 */
#include "cli_run.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "files.h"
#include "json_io.h"

#define SPEC_FILE_MAX (16u << 20)

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: thawd run SPEC.json [--out DIR] [--threads N] [--timeline FILE]\n");
}

/* Reads a whole file (at most SPEC_FILE_MAX bytes); caller frees. NULL with errno set. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(SPEC_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, SPEC_FILE_MAX + 1, f) : 0;
    int bad = !buf || ferror(f);
    fclose(f);
    if (bad || n > SPEC_FILE_MAX) {
        free(buf);
        errno = bad ? EIO : EFBIG;
        return NULL;
    }
    *len = n;
    return buf;
}

/* The per-epoch table in fastprogress's console layout (ConsoleMasterBar.write with
 * table=True): header names padded to at least 8 characters and joined by two spaces; each
 * value followed by spaces up to its padded name's width + 2. One table per fit, epochs
 * counted from 0 within the fit, floats as Python's '%.6f' ("nan", "inf"), time as fastai's
 * format_time (whole seconds, mm:ss or h:mm:ss). */
typedef struct table {
    const eng_job_spec *spec;
    size_t n_cols;
    char names[3 + ENG_MAX_METRICS + 1][48]; /* padded */
    long long stage, fit;                    /* the fit whose header was printed */
    FILE *timeline;                          /* --timeline, or NULL */
    double t0;                               /* CLOCK_MONOTONIC when the command started */
} table;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static json_t *json_num(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

/* One line of the timeline: {"t": seconds since start, "event": name} plus `extra`'s members
 * (stolen). A write error is reported once at the end by the caller (ferror). */
static void timeline_line(const table *t, const char *event, json_t *extra)
{
    if (!t->timeline) {
        json_decref(extra);
        return;
    }
    json_t *o = json_pack("{s:f,s:s}", "t", now_s() - t->t0, "event", event);
    if (o && extra)
        json_object_update(o, extra);
    json_decref(extra);
    if (o) {
        json_dumpf(o, t->timeline, JSON_COMPACT);
        fputc('\n', t->timeline);
    }
    json_decref(o);
}

static const char *const event_names[] = {
    [ENG_EVENT_STAGE_BEGIN] = "stage_begin",
    [ENG_EVENT_BATCH] = "batch",
    [ENG_EVENT_EPOCH] = "epoch",
    [ENG_EVENT_LR_FIND] = "lr_find",
    [ENG_EVENT_ARTIFACT] = "artifact",
    [ENG_EVENT_STAGE_END] = "stage_end",
    [ENG_EVENT_LOG] = "log",
};

/* The timeline line of an engine event: position, and what the event carries. */
static void timeline_event(const table *t, const eng_event *ev)
{
    /* DEBUG messages can come once per validation batch: left out */
    if (!t->timeline || (ev->kind == ENG_EVENT_LOG && ev->level < ENG_LOG_INFO))
        return;
    const char *op = eng_stage_op_name(ev->op);
    json_t *x =
        json_pack("{s:I,s:s,s:I,s:I}", "stage", (json_int_t)ev->stage_index, "op", op ? op : "?",
                  "epoch", (json_int_t)ev->epoch, "batch", (json_int_t)ev->batch);
    if (!x)
        return;
    switch (ev->kind) {
    case ENG_EVENT_BATCH:
        json_object_set_new(x, "loss", json_num((double)ev->loss));
        json_object_set_new(x, "lr", json_num((double)ev->lr));
        break;
    case ENG_EVENT_EPOCH:
        json_object_set_new(x, "fit", json_integer(ev->fit_index));
        json_object_set_new(x, "train_loss", json_num((double)ev->train_loss));
        json_object_set_new(x, "valid_loss", json_num((double)ev->valid_loss));
        json_object_set_new(x, "accuracy", json_num((double)ev->accuracy));
        json_object_set_new(x, "seconds", json_num(ev->seconds));
        break;
    case ENG_EVENT_STAGE_END:
        json_object_set_new(x, "seconds", json_num(ev->seconds));
        break;
    case ENG_EVENT_LR_FIND:
        if (ev->lr_find) {
            json_object_set_new(x, "points", json_integer((json_int_t)ev->lr_find->n));
            json_object_set_new(
                x, "valley", ev->lr_find->ok ? json_num((double)ev->lr_find->valley) : json_null());
        }
        break;
    case ENG_EVENT_ARTIFACT:
        if (ev->artifact) {
            json_object_set_new(x, "kind", json_string(ev->artifact->kind));
            json_object_set_new(x, "name", json_string(ev->artifact->name));
            json_object_set_new(x, "bytes", json_integer((json_int_t)ev->artifact->size));
        }
        break;
    case ENG_EVENT_LOG:
        json_object_set_new(x, "message", json_string(ev->message ? ev->message : ""));
        break;
    case ENG_EVENT_STAGE_BEGIN:
        break;
    }
    timeline_line(t, event_names[ev->kind], x);
}

static void table_header(table *t)
{
    const char *base[3] = {"epoch", "train_loss", "valid_loss"};
    size_t n = 0;
    for (int i = 0; i < 3; i++)
        snprintf(t->names[n++], sizeof t->names[0], "%-8s", base[i]);
    for (uint32_t k = 0; k < t->spec->n_metrics && k < ENG_MAX_METRICS; k++) {
        char col[40];
        eng_metric_name(&t->spec->metrics[k], col, sizeof col);
        snprintf(t->names[n++], sizeof t->names[0], "%-8s", col);
    }
    snprintf(t->names[n++], sizeof t->names[0], "%-8s", "time");
    t->n_cols = n;
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? "  " : "", t->names[i]);
    printf("\n");
}

static void fmt_float(char *buf, size_t size, float x)
{
    if (isnan(x))
        snprintf(buf, size, "nan");
    else
        snprintf(buf, size, "%.6f", (double)x);
}

static void table_row(const table *t, const eng_event *ev)
{
    char v[3 + ENG_MAX_METRICS + 1][48];
    size_t n = 0;
    snprintf(v[n++], sizeof v[0], "%u", ev->fit_epoch);
    fmt_float(v[n++], sizeof v[0], ev->train_loss);
    fmt_float(v[n++], sizeof v[0], ev->valid_loss);
    for (size_t k = 0; k + 4 < t->n_cols && k < ev->n_metrics; k++)
        fmt_float(v[n++], sizeof v[0], ev->metrics[k]);
    long secs = ev->seconds > 0 ? (long)ev->seconds : 0;
    if (secs >= 3600)
        snprintf(v[n++], sizeof v[0], "%ld:%02ld:%02ld", secs / 3600, secs / 60 % 60, secs % 60);
    else
        snprintf(v[n++], sizeof v[0], "%02ld:%02ld", secs / 60 % 60, secs % 60);
    for (size_t i = 0; i < n && i < t->n_cols; i++) {
        int pad = 2 + (int)strlen(t->names[i]) - (int)strlen(v[i]);
        printf("%s%*s", v[i], pad > 0 ? pad : 0, "");
    }
    printf("\n");
}

static bool is_fit(eng_stage_op op)
{
    return op == ENG_STAGE_FIT || op == ENG_STAGE_FIT_ONE_CYCLE || op == ENG_STAGE_FINE_TUNE;
}

static eng_action on_progress(const eng_event *ev, void *user)
{
    table *t = user;
    timeline_event(t, ev);
    const char *op = eng_stage_op_name(ev->op);
    if ((ev->kind == ENG_EVENT_BATCH || ev->kind == ENG_EVENT_EPOCH) && is_fit(ev->op) &&
        (t->stage != (long long)ev->stage_index || t->fit != (long long)ev->fit_index)) {
        /* fastai prints the header when each fit starts */
        t->stage = (long long)ev->stage_index;
        t->fit = (long long)ev->fit_index;
        table_header(t);
    }
    switch (ev->kind) {
    case ENG_EVENT_STAGE_BEGIN:
        printf("stage %zu/%zu: %s\n", ev->stage_index + 1, ev->n_stages, op ? op : "?");
        break;
    case ENG_EVENT_EPOCH:
        table_row(t, ev);
        break;
    case ENG_EVENT_LR_FIND: {
        const eng_lr_find_result *r = ev->lr_find;
        if (r && r->ok)
            printf("lr_find: valley=%.2e minimum=%.2e steep=%.2e slide=%.2e (%zu points)\n",
                   (double)r->valley, (double)r->minimum, (double)r->steep, (double)r->slide, r->n);
        else if (r)
            printf("lr_find: no suggestion: %s\n", r->reason);
        break;
    }
    case ENG_EVENT_ARTIFACT:
        /* The per-epoch resumable checkpoint would break up the table; show saves only. */
        if (ev->artifact && strcmp(ev->artifact->kind, "checkpoint") != 0)
            printf("saved %s %s -> %s (%llu bytes, sha256 %s)\n", ev->artifact->kind,
                   ev->artifact->name, ev->artifact->path, (unsigned long long)ev->artifact->size,
                   ev->artifact->sha256);
        break;
    case ENG_EVENT_LOG:
        if (ev->level >= ENG_LOG_INFO && ev->message)
            fprintf(ev->level >= ENG_LOG_WARN ? stderr : stdout, "%s%s\n",
                    ev->level >= ENG_LOG_WARN ? "warning: " : "", ev->message);
        break;
    case ENG_EVENT_BATCH:
    case ENG_EVENT_STAGE_END:
        break;
    }
    fflush(stdout);
    return interrupted ? ENG_CANCEL : ENG_CONTINUE;
}

int srv_cli_run(int argc, char **argv)
{
    const double t0 = now_s();
    const char *spec_path = NULL, *out = NULL, *timeline_path = NULL;
    int threads = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strncmp(argv[i], "--out=", 6) == 0) {
            out = argv[i] + 6;
        } else if (strcmp(argv[i], "--timeline") == 0 && i + 1 < argc) {
            timeline_path = argv[++i];
        } else if (strncmp(argv[i], "--timeline=", 11) == 0) {
            timeline_path = argv[i] + 11;
        } else if (strcmp(argv[i], "--threads") == 0 || strncmp(argv[i], "--threads=", 10) == 0) {
            const char *v = argv[i][9] == '=' ? argv[i] + 10 : (i + 1 < argc ? argv[++i] : "");
            char *end;
            long t = strtol(v, &end, 10);
            if (!*v || *end || t < 1 || t > 256) {
                fprintf(stderr, "thawd run: --threads: '%s' is not an integer in 1..256\n", v);
                return 2;
            }
            threads = (int)t;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            return 0;
        } else if (argv[i][0] == '-' || spec_path) {
            fprintf(stderr, "thawd run: unexpected argument '%s'\n", argv[i]);
            usage();
            return 2;
        } else {
            spec_path = argv[i];
        }
    }
    if (!spec_path) {
        usage();
        return 2;
    }

    size_t len = 0;
    char *text = read_file(spec_path, &len);
    if (!text) {
        fprintf(stderr, "thawd run: cannot read %s: %s\n", spec_path, strerror(errno));
        return 2;
    }
    srv_spec *spec = calloc(1, sizeof *spec);
    srv_spec_errors *errs = calloc(1, sizeof *errs);
    FILE *timeline = NULL;
    int status = 2;
    if (!spec || !errs) {
        fprintf(stderr, "thawd run: out of memory\n");
        goto done;
    }
    if (srv_spec_parse_text(text, len, NULL, spec, errs) != 0) {
        if (errs->n == 0)
            fprintf(stderr, "%s: %s\n", spec_path, errs->detail);
        for (size_t i = 0; i < errs->n; i++)
            fprintf(stderr, "%s: %s%s%s\n", spec_path, errs->e[i].pointer,
                    errs->e[i].pointer[0] ? ": " : "", errs->e[i].detail);
        goto done;
    }

    char out_dir[ENG_PATH_MAX];
    if (out) {
        snprintf(out_dir, sizeof out_dir, "%s", out);
    } else {
        const char *base = strrchr(spec_path, '/');
        base = base ? base + 1 : spec_path;
        size_t bl = strlen(base);
        if (bl > 5 && strcmp(base + bl - 5, ".json") == 0)
            bl -= 5;
        snprintf(out_dir, sizeof out_dir, "%.*s-out", (int)(bl < 200 ? bl : 200), base);
    }
    if (srv_mkdir_p(out_dir) != 0) {
        fprintf(stderr, "thawd run: cannot create %s: %s\n", out_dir, strerror(errno));
        goto done;
    }
    if (timeline_path && !(timeline = fopen(timeline_path, "w"))) {
        fprintf(stderr, "thawd run: cannot create %s: %s\n", timeline_path, strerror(errno));
        goto done;
    }
    if (threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (int)cores : 1;
    }
    int blas = eng_blas_set_threads(threads);
    printf("thawd run: %s, %zu stages, out %s, %d BLAS threads (%s)\n", spec_path,
           spec->eng.n_stages, out_dir, blas, eng_blas_info());

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    eng_run_opts opts = {.out_dir = out_dir, .resume_path = NULL};
    table tab = {.spec = &spec->eng, .stage = -1, .fit = -1, .timeline = timeline, .t0 = t0};
    eng_callbacks cb = {.progress = on_progress, .user = &tab};
    eng_error err;
    memset(&err, 0, sizeof err);
    /* "run": the engine starts (data loading and model building come before stage 1) */
    timeline_line(&tab, "run",
                  json_pack("{s:s,s:I,s:i}", "spec", spec_path, "stages",
                            (json_int_t)spec->eng.n_stages, "threads", blas));
    int rc = eng_job_run(&spec->eng, &opts, &cb, &err);
    timeline_line(&tab, "end", json_pack("{s:s}", "result", eng_strerror(rc)));
    if (rc == 0) {
        printf("done\n");
        status = 0;
    } else if (rc == ENG_ECANCELED) {
        fprintf(stderr, "thawd run: cancelled\n");
        status = 1;
    } else {
        fprintf(stderr, "thawd run: job failed: %s%s%s%s%s\n", eng_strerror(rc),
                err.field[0] ? " at " : "", err.field, err.text[0] ? ": " : "", err.text);
        status = 1;
    }
done:
    if (timeline && (ferror(timeline) | fclose(timeline))) {
        fprintf(stderr, "thawd run: writing %s failed\n", timeline_path);
        status = status ? status : 1;
    }
    srv_spec_fini(spec);
    free(spec);
    free(errs);
    free(text);
    return status;
}
