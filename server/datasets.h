/*
 * datasets.h: the dataset registry's server side (handlers_datasets.c): streamed uploads,
 * imports under --import-root, tar extraction, the demo dataset, and resolving a job's
 * "data": {"dataset": ...} to the files the engine reads.
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
