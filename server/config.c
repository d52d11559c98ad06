/*
 * config.c: the option table of the daemon and the parsing of argv and THAWD_* variables.
 *
 * DESIGN: each option is one row {name, kind, range, field offset, default text, help}.
 * Parsing, validation, the environment names (THAWD_ + upper-cased name with '-' -> '_')
 * and the --help text are all generated from the rows, so an option cannot be documented
 * but unparsed or the reverse (redis config.c keeps one table for the same reason).
 */
#define _GNU_SOURCE /* cpu_set_t, sched_setaffinity */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef enum opt_kind {
    OPT_INT,   /* int field, range [lo, hi] */
    OPT_SIZE,  /* size_t field, range [lo, hi] */
    OPT_STR,   /* char[SRV_CONFIG_STR_MAX] or char[256] field, `hi` = capacity */
    OPT_LEVEL, /* srv_log_level field */
    OPT_AUTH,  /* srv_auth_mode field */
    OPT_CPUS,  /* char[128] field, a CPU list (config.h) or empty, `hi` = capacity */
} opt_kind;

typedef struct opt_def {
    const char *name; /* without the leading "--" */
    const char *arg;  /* placeholder in --help */
    opt_kind kind;
    long long lo, hi;
    size_t offset;
    const char *def; /* default as shown in --help */
    const char *help;
} opt_def;

#define FIELD(f) offsetof(srv_config, f)

static const opt_def options[] = {
    {"host", "ADDR", OPT_STR, 1, sizeof(((srv_config *)0)->host), FIELD(host), "127.0.0.1",
     "address to listen on"},
    {"port", "N", OPT_INT, 0, 65535, FIELD(port), "8080", "TCP port; 0 picks a free port"},
    {"data-dir", "DIR", OPT_STR, 1, SRV_CONFIG_STR_MAX, FIELD(data_dir), "./thawd-data",
     "database, lock file and job outputs (created if missing)"},
    {"workers", "N", OPT_INT, 1, 64, FIELD(workers), "1", "training worker threads"},
    {"blas-threads", "N", OPT_INT, 0, 256, FIELD(blas_threads), "max(1, cores / workers)",
     "BLAS threads per process; 0 = automatic"},
    {"http-threads", "N", OPT_INT, 1, 64, FIELD(http_threads), "4", "HTTP server threads"},
    {"conn-timeout", "SECONDS", OPT_INT, 0, 86400, FIELD(conn_timeout), "30",
     "close idle HTTP connections after this long; 0 = never"},
    {"max-body", "BYTES", OPT_SIZE, 1, 1LL << 30, FIELD(max_body), "1048576",
     "largest accepted request body"},
    {"max-connections", "N", OPT_INT, 1, 100000, FIELD(max_connections), "256",
     "open HTTP connections served; requests on further ones get 503"},
    {"request-timeout", "SECONDS", OPT_INT, 0, 86400, FIELD(request_timeout), "60",
     "longest time to receive a request body (else 408); 0 = no limit"},
    {"log-level", "LEVEL", OPT_LEVEL, 0, 0, FIELD(log_level), "info", "debug, info, warn or error"},
    {"log-file", "PATH", OPT_STR, 0, SRV_CONFIG_STR_MAX, FIELD(log_file), "stderr",
     "append log lines to this file"},
    {"auth", "MODE", OPT_AUTH, 0, 0, FIELD(auth), "auto",
     "bearer tokens: auto (needed once a token exists), required, or insecure-none (never;"
     " also allows a non-loopback --host without tokens)"},
    {"import-root", "DIR", OPT_STR, 0, SRV_CONFIG_STR_MAX, FIELD(import_root), "none",
     "POST /v1/datasets/import reads only below this directory; unset = imports disabled"},
    {"max-upload", "BYTES", OPT_SIZE, 1, 1LL << 40, FIELD(max_upload), "1073741824",
     "largest accepted dataset upload (POST /v1/datasets)"},
    {"http-cpus", "LIST", OPT_CPUS, 0, sizeof(((srv_config *)0)->http_cpus), FIELD(http_cpus),
     "none", "pin the HTTP server threads to these CPUs (e.g. 1 or 0,2-3)"},
    {"worker-cpus", "LIST", OPT_CPUS, 0, sizeof(((srv_config *)0)->worker_cpus), FIELD(worker_cpus),
     "none",
     "pin the training worker threads to these CPUs (not OpenBLAS's own threads: use with"
     " --blas-threads 1)"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

void srv_config_defaults(srv_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 8080;
    snprintf(c->data_dir, sizeof c->data_dir, "./thawd-data");
    c->workers = 1;
    c->blas_threads = 0;
    c->http_threads = 4;
    c->conn_timeout = 30;
    c->max_body = 1048576;
    c->max_connections = 256;
    c->request_timeout = 60;
    c->log_level = SRV_LOG_INFO;
    c->log_file[0] = '\0';
    c->auth = SRV_AUTH_AUTO;
    c->import_root[0] = '\0';
    c->max_upload = (size_t)1 << 30;
}

static void env_name(const opt_def *o, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "THAWD_");
    for (const char *p = o->name; *p && n + 1 < size; p++)
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[n] = '\0';
}

/* Parses a whole decimal integer in [lo, hi]; returns 0 or -1. */
static int parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    if (!*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Parses a CPU list into *set. Returns 0, or -1 when it is not a list. */
static int cpus_parse(const char *list, cpu_set_t *set)
{
    CPU_ZERO(set);
    const char *p = list;
    if (!p || !*p)
        return -1;
    for (;;) {
        char *end;
        if (!isdigit((unsigned char)*p))
            return -1;
        errno = 0;
        unsigned long lo = strtoul(p, &end, 10), hi = lo;
        if (errno || lo >= CPU_SETSIZE)
            return -1;
        p = end;
        if (*p == '-') {
            p++;
            if (!isdigit((unsigned char)*p))
                return -1;
            hi = strtoul(p, &end, 10);
            if (errno || hi >= CPU_SETSIZE || hi < lo)
                return -1;
            p = end;
        }
        for (unsigned long c = lo; c <= hi; c++)
            CPU_SET(c, set);
        if (*p == '\0')
            return 0;
        if (*p != ',')
            return -1;
        p++;
    }
}

int srv_cpus_usable(const char *list)
{
    cpu_set_t want, have, both;
    if (cpus_parse(list, &want) != 0 || sched_getaffinity(0, sizeof have, &have) != 0)
        return -1;
    CPU_AND(&both, &want, &have);
    return CPU_COUNT(&both) > 0 ? 0 : -1;
}

int srv_cpus_pin_self(const char *list)
{
    cpu_set_t set;
    if (cpus_parse(list, &set) != 0) {
        errno = EINVAL;
        return -1;
    }
    return sched_setaffinity(0, sizeof set, &set); /* 0 = the calling thread */
}

/* Sets option `o` from text `val`; `origin` ("--port" or "THAWD_PORT") goes in messages. */
static int apply(srv_config *c, const opt_def *o, const char *val, const char *origin, char *err,
                 size_t err_size)
{
    char *base = (char *)c;
    long long v;
    switch (o->kind) {
    case OPT_INT:
    case OPT_SIZE:
        if (parse_ll(val, o->lo, o->hi, &v) != 0) {
            snprintf(err, err_size, "%s: '%s' is not an integer in %lld..%lld", origin, val, o->lo,
                     o->hi);
            return -1;
        }
        if (o->kind == OPT_INT)
            *(int *)(base + o->offset) = (int)v;
        else
            *(size_t *)(base + o->offset) = (size_t)v;
        return 0;
    case OPT_STR: {
        size_t len = strlen(val);
        if ((long long)len < o->lo) {
            snprintf(err, err_size, "%s: must not be empty", origin);
            return -1;
        }
        if (len >= (size_t)o->hi) {
            snprintf(err, err_size, "%s: longer than %lld bytes", origin, o->hi - 1);
            return -1;
        }
        memcpy(base + o->offset, val, len + 1);
        return 0;
    }
    case OPT_CPUS: {
        cpu_set_t set;
        if (*val && (cpus_parse(val, &set) != 0 || strlen(val) >= (size_t)o->hi)) {
            snprintf(err, err_size,
                     "%s: '%s' is not a CPU list like 1 or 0,2-3 (CPUs 0..%d, at most %lld "
                     "characters)",
                     origin, val, CPU_SETSIZE - 1, o->hi - 1);
            return -1;
        }
        memcpy(base + o->offset, val, strlen(val) + 1);
        return 0;
    }
    case OPT_LEVEL:
        if (srv_log_level_parse(val, (srv_log_level *)(void *)(base + o->offset)) != 0) {
            snprintf(err, err_size, "%s: '%s' is not one of debug, info, warn, error", origin, val);
            return -1;
        }
        return 0;
    case OPT_AUTH: {
        static const char *const modes[] = {"auto", "required", "insecure-none"};
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
            if (strcmp(val, modes[m]) == 0) {
                *(srv_auth_mode *)(void *)(base + o->offset) = (srv_auth_mode)m;
                return 0;
            }
        }
        snprintf(err, err_size, "%s: '%s' is not one of auto, required, insecure-none", origin,
                 val);
        return -1;
    }
    }
    snprintf(err, err_size, "%s: internal error (option kind)", origin);
    return -1;
}

static const opt_def *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

/* One option given on the command line, before it is applied. */
typedef struct cmdline_opt {
    const opt_def *o;
    const char *val;
} cmdline_opt;

int srv_config_parse(srv_config *c, int argc, char *const *argv, char *const *envp, char *err,
                     size_t err_size)
{
    /* The command line wins over the environment, so a bad variable that the command line
     * overrides is never looked at: collect the command line first, then apply the
     * environment for the other options, then the command line. */
    cmdline_opt given[N_OPTIONS];
    size_t n_given = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            snprintf(err, err_size, "unexpected argument '%s' (see --help)", a);
            return -1;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_def *o = find_option(name, nlen);
        if (!o) {
            snprintf(err, err_size, "unknown option '--%.*s' (see --help)", (int)nlen, name);
            return -1;
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) {
                snprintf(err, err_size, "--%s: missing value (%s)", o->name, o->arg);
                return -1;
            }
            val = argv[++i];
        }
        size_t k = 0;
        while (k < n_given && given[k].o != o)
            k++;
        if (k == n_given)
            n_given++;
        given[k] = (cmdline_opt){o, val}; /* a repeated option: the last one wins */
    }

    char ename[64];
    for (size_t i = 0; i < N_OPTIONS && envp; i++) {
        bool overridden = false;
        for (size_t k = 0; k < n_given; k++)
            overridden = overridden || given[k].o == &options[i];
        if (overridden)
            continue;
        env_name(&options[i], ename, sizeof ename);
        size_t elen = strlen(ename);
        for (char *const *e = envp; *e; e++) {
            if (strncmp(*e, ename, elen) == 0 && (*e)[elen] == '=') {
                if (apply(c, &options[i], *e + elen + 1, ename, err, err_size) != 0)
                    return -1;
            }
        }
    }
    for (size_t k = 0; k < n_given; k++) {
        char origin[64];
        snprintf(origin, sizeof origin, "--%s", given[k].o->name);
        if (apply(c, given[k].o, given[k].val, origin, err, err_size) != 0)
            return -1;
    }
    return 0;
}

void srv_config_finish(srv_config *c, int cores)
{
    if (cores < 1)
        cores = 1;
    if (c->blas_threads == 0) {
        c->blas_threads = cores / (c->workers > 0 ? c->workers : 1);
        if (c->blas_threads < 1)
            c->blas_threads = 1;
    }
}

void srv_config_print_help(FILE *out)
{
    fprintf(out,
            "usage: thawd [serve] [options]       run the training daemon (default)\n"
            "       thawd run SPEC.json [--out DIR] [--threads N]\n"
            "                                     run one job in the foreground\n"
            "       thawd predict (--arch A | --spec SPEC.json) --weights W.safetensors\n"
            "             --input FILE.idx [--probs] [--format text|json]\n"
            "             [--head default|fastai|torchvision] [--hidden A,B]\n"
            "             [--classes N] [--mean M[,M,M]] [--std S[,S,S]]\n"
            "                                     logits (or --probs) for IDX inputs: bytes\n"
            "                                     scaled to [0,1] then (x-mean)/std (defaults\n"
            "                                     0 and 1), or float32 N x C x H x W as is;\n"
            "                                     --hidden: an mlp's sizes; --spec: arch,\n"
            "                                     sizes, head and mean/std from a job spec\n"
            "                                     or job object (options win; a spec using\n"
            "                                     its dataset's stats needs --mean/--std)\n"
            "       thawd summary (--arch A | SPEC.json) [--in-shape CxHxW|F]\n"
            "             [--classes N] [--head K] [--hidden A,B] [--batch B] [--freeze N]\n"
            "             [--no-train-bn] [--weights W] [--format text|json]\n"
            "                                     layers, shapes, parameters, layer groups;\n"
            "                                     SPEC.json (as thawd run takes it): its\n"
            "                                     model with its weights, data shape, batch\n"
            "                                     and the freezing its stages leave\n"
            "       thawd token create --name NAME --scope read,submit,admin"
            " [--data-dir DIR]\n"
            "       thawd token list [--data-dir DIR]\n"
            "       thawd token revoke ID [--data-dir DIR]\n"
            "                                     manage API bearer tokens\n"
            "       thawd --help | -h | --version\n"
            "\n"
            "daemon options (each also set by the environment variable shown; the\n"
            "command line wins):\n");
    char ename[64], left[64];
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const opt_def *o = &options[i];
        env_name(o, ename, sizeof ename);
        snprintf(left, sizeof left, "--%s %s", o->name, o->arg);
        fprintf(out, "  %-24s %s (default %s; env %s)\n", left, o->help, o->def, ename);
    }
    fprintf(out, "\n"
                 "run options:\n"
                 "  --out DIR                output directory (default: SPEC's name without\n"
                 "                           .json, plus \"-out\")\n"
                 "  --threads N              BLAS threads (default: all cores)\n"
                 "\n"
                 "HTTP API: jobs under /v1/jobs (submit, list, show, cancel, retry, delete,\n"
                 "events as JSON or Server-Sent Events, metrics, lr_find, summary,\n"
                 "checkpoints, promote a checkpoint to a model); datasets under /v1/datasets\n"
                 "(fashion-mnist is registered at start-up); models under /v1/models;\n"
                 "/healthz, /readyz, /metrics (Prometheus). The full description is served at\n"
                 "GET /openapi.yaml. Errors are application/problem+json.\n");
}

void srv_config_describe(const srv_config *c, char *buf, size_t size)
{
    snprintf(buf, size,
             "host=%s port=%d data_dir=%s workers=%d blas_threads=%d http_threads=%d "
             "conn_timeout=%d max_body=%zu max_connections=%d request_timeout=%d log_level=%s "
             "log_file=%s auth=%s http_cpus=%s worker_cpus=%s",
             c->host, c->port, c->data_dir, c->workers, c->blas_threads, c->http_threads,
             c->conn_timeout, c->max_body, c->max_connections, c->request_timeout,
             srv_log_level_name(c->log_level), c->log_file[0] ? c->log_file : "stderr",
             c->auth == SRV_AUTH_REQUIRED        ? "required"
             : c->auth == SRV_AUTH_INSECURE_NONE ? "insecure-none"
                                                 : "auto",
             c->http_cpus[0] ? c->http_cpus : "none", c->worker_cpus[0] ? c->worker_cpus : "none");
}
