/*
 * jobs_view.h: the job representation of the v1 API beyond json_io's base object: priority,
 * queue position under priorities, measured step rate and ETA, and (detail form) the stage
 * timeline built from the job's stage events, like SageMaker's secondary status transitions.
 * Also shared helpers for reading a job's whole event log.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../storage/storage.h"

/* The job object for the API. `detail` adds "stages": one entry per planned stage with
 * index, op, state (pending|running|done), started_at, finished_at, seconds and message.
 * `s` and `j` are borrowed. Returns a new reference, or NULL on ENOMEM. */
json_t *srv_job_view(store *s, const store_job *j, bool detail);

/* The serialised detail document of job `id` (the body of GET /v1/jobs/{id}: srv_job_view
 * with detail, dumped like srv_reply_json) and its strong ETag (srv_http_etag of the body).
 * Served from a per-thread cache while store_job_version says the database is unchanged
 * since the document was built, so it is never older than one built now; a change made by
 * any connection (progress, state, cancel, events) makes the next call rebuild it. `s` is
 * the calling thread's connection (srv_app_store): the cache belongs to the thread and
 * remembers which connection validated it. *body is the caller's (free()). Returns 0, or a
 * STORE_* code (STORE_ENOTFOUND: no such job) with *body NULL. */
int srv_job_doc(store *s, int64_t id, char **body, size_t *len, char etag[80]);

/* Empties the calling thread's document cache (its connection is about to be closed: a new
 * one at the same address must not inherit versions). */
void srv_job_doc_forget(void);

/* Reads every event of job `id` (all pages, oldest first). Caller frees with
 * store_event_list_free. Returns 0 or a STORE_* code. */
int srv_job_all_events(store *s, int64_t id, store_event **out, size_t *n);
