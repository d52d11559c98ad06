/*
 * datasets.h: the dataset registry's server side (handlers_datasets.c): streamed uploads,
 * imports under --import-root, the processing thread (import copies, tar extraction,
 * validation, decoding), the demo dataset, and resolving a job's "data": {"dataset": ...}
 * to the files the engine reads.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "handlers.h"
#include "json_io.h"

/* ---- streamed upload (POST /v1/datasets), driven by http.c ------------------------------- */

typedef struct srv_upload srv_upload;

/* Another registry whose POST body streams through srv_upload (the same staging dir, temp
 * file, --max-upload cap, optional ?sha256= check and hashing), e.g. models.h's:
 * `begin` checks the request before any body is read (auth is already checked): 0 with
 * *ctx set, or -1 with `rep` filled. `finish` gets the complete file with its size and
 * sha256 and fills `rep` (it may rename the file away; whatever stays is removed).
 * `destroy` frees ctx (NULL-safe). */
typedef struct srv_upload_kind {
    const char *route; /* the POST path, e.g. "/v1/models" */
    int (*begin)(srv_request *req, void **ctx, srv_reply *rep);
    void (*finish)(void *ctx, const char *file, uint64_t size, const char *sha256, srv_request *req,
                   srv_reply *rep);
    void (*destroy)(void *ctx);
} srv_upload_kind;

/* For a request that streams its body to srv_upload_* instead of the body buffer: its
 * route pattern (static; POST /v1/datasets or an srv_upload_kind's route); else NULL. */
const char *srv_upload_route(const char *method, const char *path);
/* First call (headers known): checks auth, format, name, Content-Length against
 * --max-upload and opens the temp file. Returns 0 with *out set (the caller's; free with
 * srv_upload_destroy), or -1 with `rep` filled (answer it now; MHD discards the body). */
int srv_upload_begin(srv_request *req, srv_upload **out, srv_reply *rep);
/* A body chunk: written and hashed; past the cap the temp file is removed and the rest is
 * only counted. Never fails the connection. */
void srv_upload_write(srv_upload *u, const char *data, size_t n);
/* Final call: verifies size and checksum, moves the file into the dataset's directory
 * (atomic rename), adds the row in state "processing", wakes the processing thread and
 * fills `rep` (202 dataset + Location, or a problem). */
void srv_upload_finish(srv_upload *u, srv_request *req, srv_reply *rep);
/* Removes whatever a failed or aborted upload left and frees `u`. NULL is a no-op. */
void srv_upload_destroy(srv_upload *u);

/* ---- the dataset-processing thread -------------------------------------------------------- */

/* Starts the one thread that copies imports, unpacks, validates and decodes new datasets
 * (the engine's eng_dataset_inspect, which writes an image folder's decode cache), moving
 * each from "processing" to "ready" or "failed". It uses its own store connection, sleeps
 * on a condvar until an upload or import wakes it (or 30 s pass), and begins with whatever
 * a previous process left "processing" (shut down or crashed mid-way): such a dataset is
 * processed again from its files. Call from main once storage is ready. 0, or -1 (logged). */
int srv_datasets_start(srv_app *app);
/* Asks the thread to stop and joins it. Processing checks the request between tar entries
 * (and every 64 KiB), files and decoded images, so a dataset being unpacked or decoded is
 * left "processing" too, like those not yet started, and is processed again at the next
 * start. No-op if not started. */
void srv_datasets_stop(srv_app *app);

/* Registers Debian's dataset-fashion-mnist (files in `fmnist_dir`, NULL = the package's
 * directory) as dataset "fashion-mnist" on the first start that finds it installed (a
 * marker file in DATA/datasets remembers it, so deleting the dataset sticks). Logs what it
 * did; failures are logged, never fatal. Call from main once storage is ready. */
void srv_datasets_register_demo(srv_app *app);

/* For `thawd run` only ("data": {"path": DIR, "format": F}): has the engine read the
 * dataset in the directory `path` as format F ("idx", "cifar10", "cifar100", "csv",
 * "images"; an image folder's decode cache is written into it) and fills *out as a resolver
 * would (id 0, kind, dir = path, info; out->info is the caller's, json_decref it). Returns 0,
 * -1 with `msg` about the path or the data, or -2 with `msg` about the format. */
int srv_dataset_inspect_path(const char *path, const char *format, srv_dataset_ref *out, char *msg,
                             size_t msz);

/* srv_dataset_resolve_fn for json_io: looks a dataset up in the calling thread's store.
 * `user` is the srv_app. Besides 0, -1 and -2: -3 while the dataset is processing, -4 when
 * its processing failed (jobs may only name "ready" datasets). */
int srv_dataset_resolve(void *user, int64_t id, const char *name, srv_dataset_ref *out);
