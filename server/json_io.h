/*
 * json_io.h: jansson <-> thawd structs, and the one table mapping module errors to HTTP.
 *
 * - Job spec JSON (the body of POST /v1/jobs and the file of `thawd run`) -> eng_job_spec,
 *   with full validation: unknown fields are errors, every error carries the JSON pointer
 *   of the offending value. The parser also produces the normalised spec (every default
 *   filled) that the daemon stores as text and parses again when a worker runs the job.
 * - store_job / store_event / store_artifact -> the JSON objects of the HTTP API.
 * - Problem bodies (RFC 9457) and the status/slug table.
 * Everything here is thread-safe (no shared state).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../engine/engine.h"
#include "../storage/storage.h"

/* Where Debian's dataset-fashion-mnist package puts its files. */
#define SRV_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

#define SRV_SPEC_MAX_STAGES 64
#define SRV_SPEC_MAX_ERRORS 16

typedef struct srv_field_error {
    char pointer[256]; /* JSON pointer ("/stages/1/epochs"), "" for the whole document */
    char detail[256];
} srv_field_error;

typedef struct srv_spec_errors {
    int status;       /* 400 (not JSON) or 422 (JSON, but not a valid spec) */
    char detail[512]; /* one-line summary */
    size_t n;         /* field errors kept (at most SRV_SPEC_MAX_ERRORS) */
    size_t n_total;   /* field errors found */
    srv_field_error e[SRV_SPEC_MAX_ERRORS];
} srv_spec_errors;

typedef struct srv_spec {
    eng_job_spec eng; /* eng.stages points into `stages` */
    eng_stage stages[SRV_SPEC_MAX_STAGES];
    bool has_name;
    char name[65];
    json_t *normalized; /* owned: the spec with every default filled (free with srv_spec_fini) */
} srv_spec;

/* Parses and validates a job spec document. `fmnist_dir` is where the Fashion-MNIST files
 * are looked up (NULL = SRV_FASHION_MNIST_DIR). On success returns 0 and fills *out (the
 * caller owns it; release with srv_spec_fini). On failure returns -1, fills *errs and leaves
 * *out finied. `root` is borrowed. */
int srv_spec_parse(json_t *root, const char *fmnist_dir, srv_spec *out, srv_spec_errors *errs);
/* Same, from text (`len` bytes, need not be NUL-terminated); malformed JSON gives status
 * 400 with the position in errs->detail. */
int srv_spec_parse_text(const char *text, size_t len, const char *fmnist_dir, srv_spec *out,
                        srv_spec_errors *errs);
/* A registered dataset as the spec parser needs it (filled by a resolver). */
typedef struct srv_dataset_ref {
    int64_t id;
    eng_data_kind kind;
    char dir[ENG_PATH_MAX];
    json_t *info; /* owned reference: the dataset's info object (classes, shape, stats) */
} srv_dataset_ref;

/* Looks up a dataset by id (name == NULL) or by name. Returns 0 and fills *out, -1 when
 * there is no such dataset, -2 when the lookup itself failed, -3 while it is processing and
 * -4 when its processing failed (then only out->id is set; the spec is refused with 422). */
typedef int (*srv_dataset_resolve_fn)(void *user, int64_t id, const char *name,
                                      srv_dataset_ref *out);

/* A registered model as the spec parser needs it (filled by a resolver). */
typedef struct srv_model_ref {
    int64_t id;
    char name[65];
    char arch[32];
    bool body_fit_only; /* the tensors fit only the body: jobs must set body_only */
    char path[ENG_PATH_MAX];
} srv_model_ref;

/* Looks up a model by id (name == NULL) or by name. Returns 0 and fills *out, -1 when
 * there is no such model, -2 when the lookup itself failed. */
typedef int (*srv_model_resolve_fn)(void *user, int64_t id, const char *name, srv_model_ref *out);

/* The registries a spec may name, and so where the spec comes from:
 * - dataset: resolves "data": {"dataset": id or name}; NULL = such specs are refused.
 * - model: non-NULL in the daemon: "model": {"weights": name or id} must name a registered
 *   model and a file path is refused with 422 at /model/weights (a remote user must not
 *   make the daemon open files); the normalised spec names the model by id. NULL (thawd
 *   run): "weights" is a local file path, as the local user owns the machine. */
typedef struct srv_spec_registry {
    srv_dataset_resolve_fn dataset;
    srv_model_resolve_fn model;
    void *user; /* passed to both */
} srv_spec_registry;

int srv_spec_parse_reg(json_t *root, const char *fmnist_dir, const srv_spec_registry *reg,
                       srv_spec *out, srv_spec_errors *errs);
int srv_spec_parse_text_reg(const char *text, size_t len, const char *fmnist_dir,
                            const srv_spec_registry *reg, srv_spec *out, srv_spec_errors *errs);

/* srv_spec_parse / srv_spec_parse_text with a resolver for "data": {"dataset": ...}
 * (resolve NULL: such specs are rejected with 422 naming /data/dataset); "weights" is a
 * path as for srv_spec_parse (registry.model NULL). */
int srv_spec_parse_ex(json_t *root, const char *fmnist_dir, srv_dataset_resolve_fn resolve,
                      void *resolve_user, srv_spec *out, srv_spec_errors *errs);
int srv_spec_parse_text_ex(const char *text, size_t len, const char *fmnist_dir,
                           srv_dataset_resolve_fn resolve, void *resolve_user, srv_spec *out,
                           srv_spec_errors *errs);

/* Releases what srv_spec_parse allocated and zeroes *s. NULL is a no-op. */
void srv_spec_fini(srv_spec *s);

/* The normalised spec as compact text; caller owns it, free with free(). NULL on ENOMEM. */
char *srv_spec_dump(const srv_spec *s);

/* Formats milliseconds since the epoch as "2026-11-28T01:02:03.456Z" into buf[25+]. */
void srv_time_format(int64_t ms, char *buf, size_t size);

/* Job object of the API. `queue_position` < 0 gives null. Returns a new reference, or NULL
 * on ENOMEM. `j` is borrowed. */
json_t *srv_job_to_json(const store_job *j, int64_t queue_position);
/* Event and checkpoint objects of the API (new references, NULL on ENOMEM). */
json_t *srv_event_to_json(const store_event *e);
json_t *srv_artifact_to_json(const store_artifact *a);

/* ---- HTTP statuses and problem bodies ---------------------------------------------------- */

/* Slug ("validation-error") and title of a status answered by thawd; unknown statuses map
 * to internal-error. Static strings. */
const char *srv_problem_slug(unsigned status);
const char *srv_problem_title(unsigned status);

/* The module-error -> HTTP status table: a STORE_* or ENG_* code to the status thawd
 * answers (e.g. STORE_ENOTFOUND -> 404, STORE_ECONFLICT -> 409, ENG_EINVAL -> 422). */
unsigned srv_status_for_store(int code);
unsigned srv_status_for_engine(int code);

/* Builds a problem object {type, title, status, detail, instance}; `detail` and `instance`
 * may be NULL. Returns a new reference, or NULL on ENOMEM. */
json_t *srv_problem_new(unsigned status, const char *detail, const char *instance);
/* A 400/422 problem from spec errors, with "errors": [{"pointer","detail"}...]. */
json_t *srv_problem_from_spec_errors(const srv_spec_errors *errs, const char *instance);

/* A float for API JSON: a number when finite, else the string "NaN", "Infinity" or
 * "-Infinity" (JSON has no such numbers; openapi.yaml documents this). New reference, or
 * NULL on ENOMEM. */
json_t *srv_json_float(double x);

/* Dumps JSON compactly; caller owns the text, free with free(). NULL on ENOMEM. */
char *srv_json_dump(const json_t *j, size_t *len);
