/*
 * models.h: the models registry's server side (handlers_models.c): pretrained weights
 * uploaded (streamed through srv_upload, datasets.h) or promoted from a job's checkpoint,
 * and resolving a job's "model": {"weights": name or id} to the registered file.
 */
#pragma once

#include <stdint.h>

#include "app.h"
#include "datasets.h"
#include "json_io.h"

/* POST /v1/models?name=N&arch=A: the body streams through srv_upload (handlers_datasets.c)
 * with these hooks. */
extern const srv_upload_kind srv_model_upload;

/* srv_model_resolve_fn for json_io: looks a model up in the calling thread's store. `user`
 * is the srv_app. */
int srv_model_resolve(void *user, int64_t id, const char *name, srv_model_ref *out);

/* The registries a job spec may name in the daemon (datasets and models; weights paths are
 * refused). */
srv_spec_registry srv_spec_registry_of(srv_app *app);
