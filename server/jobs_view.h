/*
 * jobs_view.h: the job representation of the v1 API beyond json_io's base object: priority,
 * queue position under priorities, measured step rate and ETA, and (detail form) the stage
 * timeline built from the job's stage events, like SageMaker's secondary status transitions.
 * Also shared helpers for reading a job's whole event log.
 */
#pragma once

#include <stdbool.h>

#include <jansson.h>

#include "../storage/storage.h"

/* The job object for the API. `detail` adds "stages": one entry per planned stage with
 * index, op, state (pending|running|done), started_at, finished_at, seconds and message.
 * `s` and `j` are borrowed. Returns a new reference, or NULL on ENOMEM. */
json_t *srv_job_view(store *s, const store_job *j, bool detail);

/* Reads every event of job `id` (all pages, oldest first). Caller frees with
 * store_event_list_free. Returns 0 or a STORE_* code. */
int srv_job_all_events(store *s, int64_t id, store_event **out, size_t *n);
