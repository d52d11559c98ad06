/*
 * app.h: what the daemon's threads share (configuration, paths, the worker pool handle, the
 * shutdown flag) and the per-thread storage connection used by HTTP threads.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "../storage/storage.h"
#include "config.h"

typedef struct srv_workers srv_workers;
typedef struct srv_sse srv_sse;
typedef struct srv_prom srv_prom;
typedef struct srv_dsproc srv_dsproc;

typedef struct srv_app {
    const srv_config *cfg;                  /* borrowed, read-only after start-up */
    char db_path[SRV_CONFIG_STR_MAX + 16];  /* DATA/thawd.db */
    char jobs_dir[SRV_CONFIG_STR_MAX + 16]; /* DATA/jobs */
    const char *fmnist_dir;                 /* NULL = the Debian package's directory */
    srv_workers *workers;                   /* set before HTTP starts; NULL = no workers */
    atomic_bool shutting_down;              /* set by main on SIGINT/SIGTERM */
    srv_sse *sse;            /* live event streams (sse.h); set by srv_http_start, NULL before */
    srv_prom *prom;          /* request counters for /metrics (metrics_prom.h); same lifetime */
    srv_dsproc *dsproc;      /* the dataset-processing thread (datasets.h); NULL = not started */
    pthread_key_t store_key; /* per-thread store connection */
    bool key_created;
} srv_app;

/* Fills the paths from cfg->data_dir and creates the thread-local connection key. Returns 0
 * or -1 (pthread_key_create failed). */
int srv_app_init(srv_app *app, const srv_config *cfg);
/* Deletes the key; every thread that used srv_app_store must have exited (their connections
 * are closed by the key's destructor at thread exit). */
void srv_app_fini(srv_app *app);

/* The calling thread's own storage connection, opened on first use and closed when the
 * thread exits. *out is borrowed (valid on this thread until it exits). Returns 0 or a
 * STORE_* code from store_open. */
int srv_app_store(srv_app *app, store **out);

/* Closes the calling thread's connection now (for threads that do not exit, e.g. main). */
void srv_app_store_release(srv_app *app);
