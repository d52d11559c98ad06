/*
 * workers.h: the training worker pool.
 *
 * N threads ("worker-1".."worker-N"), each with its own storage connection, claim queued
 * jobs, run them with eng_job_run() and report progress, events and artifacts to storage.
 * A small in-memory registry of running jobs lets the cancel handler stop a job at once.
 * On stop, running jobs are interrupted (the engine writes a checkpoint) and requeued.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "app.h"

/* Creates the pool (no threads yet). `app` is borrowed and must outlive the pool. Returns
 * 0 and sets *out (free with srv_workers_stop), or -1 on ENOMEM. */
int srv_workers_create(srv_app *app, int n, srv_workers **out);

/* Starts the threads. Returns 0, or -1 (threads already started are stopped again). */
int srv_workers_start(srv_workers *w);

/* Wakes idle workers: a job was enqueued. Thread-safe; never blocks on a worker. */
void srv_workers_notify(srv_workers *w);

/* Signals the worker running job `id` to cancel at its next batch. Returns true when the
 * job was running here. Thread-safe; never blocks on a worker. */
bool srv_workers_cancel(srv_workers *w, int64_t id);

/* Interrupts running jobs (they are checkpointed and requeued), joins the threads and
 * frees the pool. NULL is a no-op. */
void srv_workers_stop(srv_workers *w);
