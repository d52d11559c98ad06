/*
 * datasets.h: the dataset registry's server side (handlers_datasets.c): streamed uploads,
 * imports under --import-root, tar extraction, the demo dataset, and resolving a job's
 * "data": {"dataset": ...} to the files the engine reads.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "app.h"
#include "handlers.h"
#include "json_io.h"

/* ---- streamed upload (POST /v1/datasets), driven by http.c ------------------------------- */

typedef struct srv_upload srv_upload;

/* True for the request that streams its body to srv_upload_* instead of the body buffer. */
bool srv_upload_route(const char *method, const char *path);
/* First call (headers known): checks auth, format, name, Content-Length against
 * --max-upload and opens the temp file. Returns 0 with *out set (the caller's; free with
 * srv_upload_destroy), or -1 with `rep` filled (answer it now; MHD discards the body). */
int srv_upload_begin(srv_request *req, srv_upload **out, srv_reply *rep);
/* A body chunk: written and hashed; past the cap the temp file is removed and the rest is
 * only counted. Never fails the connection. */
void srv_upload_write(srv_upload *u, const char *data, size_t n);
/* Final call: verifies size and checksum, unpacks, validates with the engine, registers
 * (atomic rename, then the row) and fills `rep` (201 dataset, or a problem). */
void srv_upload_finish(srv_upload *u, srv_request *req, srv_reply *rep);
/* Removes whatever a failed or aborted upload left and frees `u`. NULL is a no-op. */
void srv_upload_destroy(srv_upload *u);

/* Registers Debian's dataset-fashion-mnist (files in `fmnist_dir`, NULL = the package's
 * directory) as dataset "fashion-mnist" on the first start that finds it installed (a
 * marker file in DATA/datasets remembers it, so deleting the dataset sticks). Logs what it
 * did; failures are logged, never fatal. Call from main once storage is ready. */
void srv_datasets_register_demo(srv_app *app);

/* srv_dataset_resolve_fn for json_io: looks a dataset up in the calling thread's store.
 * `user` is the srv_app. */
int srv_dataset_resolve(void *user, int64_t id, const char *name, srv_dataset_ref *out);
