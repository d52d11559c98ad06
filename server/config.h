/*
 * config.h: the daemon's configuration (srv_config), filled from defaults, then THAWD_*
 * environment variables, then command-line options (the command line wins).
 *
 * One option table in config.c drives parsing of argv and the environment, the --help text
 * and validation; every error message names the option it is about.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "log.h"

#define SRV_CONFIG_STR_MAX 1024

/* --auth: when requests need a bearer token (see server/auth.h). */
typedef enum srv_auth_mode {
    SRV_AUTH_AUTO,          /* required once an active token exists */
    SRV_AUTH_REQUIRED,      /* always required */
    SRV_AUTH_INSECURE_NONE, /* never, even on a non-loopback address */
} srv_auth_mode;

typedef struct srv_config {
    char host[256];                    /* --host: bind address (default 127.0.0.1) */
    int port;                          /* --port: 0..65535, 0 = any free port (8080) */
    char data_dir[SRV_CONFIG_STR_MAX]; /* --data-dir (./thawd-data) */
    int workers;                       /* --workers: training threads (1) */
    int blas_threads;                  /* --blas-threads: 0 = auto, max(1, cores / workers) */
    int http_threads;                  /* --http-threads: MHD pool size (4) */
    int conn_timeout;                  /* --conn-timeout: idle seconds (30) */
    size_t max_body;                   /* --max-body: request body cap in bytes (1 MiB) */
    srv_log_level log_level;           /* --log-level (info) */
    char log_file[SRV_CONFIG_STR_MAX]; /* --log-file: empty = stderr */
    srv_auth_mode auth;                /* --auth (auto) */
    /* datasets */
    char import_root[SRV_CONFIG_STR_MAX]; /* --import-root: empty = imports disabled */
    size_t max_upload;                    /* --max-upload: dataset upload cap (1 GiB) */
    int max_connections;                  /* --max-connections: above it requests get 503 */
    int request_timeout;                  /* --request-timeout: seconds to receive a request
                                             body (60; 0 = no limit), else 408 */
    /* CPU placement (empty = none): lists like "1" or "0,2-3", checked when parsed */
    char http_cpus[128];   /* --http-cpus: pin the HTTP server (MHD) threads */
    char worker_cpus[128]; /* --worker-cpus: pin the training worker threads */
} srv_config;

/* Fills `c` with the documented defaults (blas_threads 0 = decided by srv_config_finish). */
void srv_config_defaults(srv_config *c);

/* Applies THAWD_<UPPER_NAME> variables from `envp` (a NULL-terminated "NAME=VALUE" array
 * like environ; may be NULL), then the options in argv[0..argc-1] ("--name VALUE" or
 * "--name=VALUE"; no positional arguments). Returns 0, or -1 with a message naming the
 * option (and where it came from) in err[0..err_size-1]. `c` may be partly updated on
 * error. Thread-safe (no global state). */
int srv_config_parse(srv_config *c, int argc, char *const *argv, char *const *envp, char *err,
                     size_t err_size);

/* CPU lists ("1", "0,2-3"; CPUs 0..1023) as --http-cpus and --worker-cpus take them.
 * srv_cpus_usable: 0 when `list` parses and names at least one CPU this process may run
 * on, else -1. srv_cpus_pin_self: restricts the calling thread to the CPUs of `list`;
 * returns 0, or -1 with errno set (EINVAL for a bad list or no usable CPU). */
int srv_cpus_usable(const char *list);
int srv_cpus_pin_self(const char *list);

/* Resolves automatic values once the core count is known: blas_threads = max(1, cores /
 * workers) when 0. */
void srv_config_finish(srv_config *c, int cores);

/* Prints the usage text (commands and every option with its env name and default). */
void srv_config_print_help(FILE *out);

/* Formats the effective configuration as key=value pairs for the start-up log. */
void srv_config_describe(const srv_config *c, char *buf, size_t size);
