/*
 * storage.h: the public interface of thawd's durable store (job queue, events, artifacts).
 *
 * One `store` handle is one connection; each thread opens its own and never shares it.
 * The backend is SQLite in WAL mode with synchronous=FULL, so a job accepted by
 * store_job_enqueue() survives kill -9 and power loss. Job specs are stored as opaque text:
 * storage never parses them. Nothing here speaks HTTP or knows the engine; the interface is
 * written so that another backend (PostgreSQL for several daemons) can implement it.
 *
 * Conventions: functions return 0 (STORE_OK) or a negative STORE_E* code. Strings returned
 * inside structs are owned by the struct and freed by its _fini function. Times are
 * milliseconds since the Unix epoch (UTC).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum store_status {
    STORE_OK = 0,
    STORE_ENOMEM = -1,
    STORE_EINVAL = -2,    /* bad argument */
    STORE_EIO = -3,       /* the database failed (disk, corruption, busy past the timeout) */
    STORE_ENOTFOUND = -4, /* no such row (or nothing to claim) */
    STORE_ECONFLICT = -5, /* the row's state does not allow this (e.g. cancel a finished job) */
    STORE_ELOST = -6,     /* the caller no longer holds the job's lease */
    STORE_EVERSION = -7,  /* the database was written by a newer thawd */
};

/* Static, human-readable name of a STORE_* code. Thread-safe. */
const char *store_strerror(int code);

typedef enum store_log_level {
    STORE_LOG_DEBUG,
    STORE_LOG_INFO,
    STORE_LOG_WARN,
    STORE_LOG_ERROR,
} store_log_level;

/* Log sink; storage never prints. `msg` is borrowed for the call. */
typedef void (*store_log_fn)(store_log_level level, const char *msg, void *user);

typedef struct store store;

/* Opens (creating if needed) the database at `path`, applies the connection settings
 * (WAL, synchronous=FULL, busy_timeout 5000 ms, foreign_keys), reads each one back, and runs
 * pending migrations. `log` may be NULL. On success *out is the caller's, free with
 * store_close(); on failure *out is NULL. The handle must only be used by the thread that
 * uses it (one connection per thread; it may be opened on one thread and handed over).
 * ":memory:" opens a private, non-durable database (journal_mode "memory"), for tests.
 * Returns STORE_EINVAL (NULL/empty path, NULL out), STORE_EIO (cannot open, not a database,
 * a setting did not take), STORE_EVERSION (newer schema) or STORE_ENOMEM. */
int store_open(const char *path, store_log_fn log, void *log_user, store **out);

/* Closes a connection opened by store_open(). store_close(NULL) is a no-op. */
void store_close(store *s);

/* Schema version this build writes (PRAGMA user_version after migrations). */
int store_schema_version(void);

/* The effective settings of a connection, read back live from the database (for the
 * start-up log line and for tests). */
typedef struct store_info {
    char journal_mode[16]; /* "wal" ("memory" for an in-memory database) */
    int synchronous;       /* 2 = FULL */
    bool foreign_keys;
    int busy_timeout_ms;
    int schema_version;         /* PRAGMA user_version */
    const char *sqlite_version; /* static, e.g. "3.40.1" */
} store_info;

/* Fills *out for connection `s`. STORE_EINVAL on NULL, STORE_EIO if a PRAGMA fails. */
int store_get_info(store *s, store_info *out);

/* ---- jobs -------------------------------------------------------------------------------- */

typedef enum store_job_state {
    STORE_JOB_QUEUED,
    STORE_JOB_RUNNING,
    STORE_JOB_SUCCEEDED,
    STORE_JOB_FAILED,
    STORE_JOB_CANCELLED,
} store_job_state;

/* "queued", "running", ... (static), or NULL when out of range. */
const char *store_job_state_name(store_job_state st);
/* Parses a state name; returns 0 and sets *st, or STORE_EINVAL. */
int store_job_state_parse(const char *name, store_job_state *st);
/* True for succeeded, failed and cancelled. */
bool store_job_state_is_final(store_job_state st);

/* Progress as last reported by the worker running the job. */
typedef struct store_progress {
    int32_t stage_index; /* -1 before the first stage */
    int32_t stage_count;
    char stage_op[32];
    int32_t epoch, n_epochs;  /* within the current stage */
    int32_t batch, n_batches; /* within the current epoch */
    int64_t step;             /* training batches done in the whole job */
    double fraction;          /* 0..1 of the job's planned batches */
    const char *metrics_json; /* borrowed on write; owned by store_job on read; may be NULL */
} store_progress;

typedef struct store_job {
    int64_t id;
    char *name;      /* may be NULL */
    char *spec_json; /* the normalised spec as submitted */
    store_job_state state;
    int64_t created_at, started_at, finished_at, updated_at; /* 0 when not yet */
    int32_t attempt;       /* how many times a worker claimed it */
    bool cancel_requested; /* a cancel arrived while it was running */
    char *error;           /* failure message, or NULL */
    char *lease_owner;     /* worker holding it while running, or NULL */
    int64_t lease_expires_at;
    char *resume_path; /* latest resumable checkpoint, or NULL */
    store_progress progress;
    char *metrics_json; /* owned copy behind progress.metrics_json, or NULL */
} store_job;

/* Frees the strings of a job filled by a store_job_* call and zeroes it. NULL is a no-op. */
void store_job_fini(store_job *j);
/* Frees an array returned by store_job_list() (each element finied). */
void store_job_list_free(store_job *jobs, size_t n);

/* Appends a job in state queued, durably. `name` may be NULL; `spec_json` is copied.
 * Sets *id. Thread-safe per connection. */
int store_job_enqueue(store *s, const char *name, const char *spec_json, int64_t *id);

/* Reads one job. STORE_ENOTFOUND if there is none with that id.
 *
 * For every function taking a job id: id <= 0 is STORE_EINVAL, and an id that does not
 * exist is STORE_ENOTFOUND (also for the lease-guarded calls below, which otherwise return
 * STORE_ELOST). An `out` struct is zeroed on any error. */
int store_job_get(store *s, int64_t id, store_job *out);

/* Sets *version to the database's change counter as seen by a read of job `id`: it differs
 * from the value of an earlier call on the same connection whenever any connection, in this
 * process or another, committed a change in between (SQLITE_FCNTL_DATA_VERSION). Lets a
 * reader cache what it built from the database and revalidate it with one cheap query.
 * STORE_ENOTFOUND if there is no such job. */
int store_job_version(store *s, int64_t id, uint64_t *version);

/* Lists jobs newest first. `state` filter: NULL for all. Cursor: only ids < before_id
 * (0 = from the newest). Returns at most `limit` (1..1000) jobs in *out (caller frees with
 * store_job_list_free) and whether more remain. */
int store_job_list(store *s, const store_job_state *state, int64_t before_id, size_t limit,
                   store_job **out, size_t *n, bool *has_more);

/* Counts jobs in a state (for queue depth and queue position: with before_id > 0, only
 * those with a smaller id). */
int store_job_count(store *s, store_job_state state, int64_t before_id, int64_t *count);

/* Atomically claims the oldest queued job for `owner` (one BEGIN IMMEDIATE transaction):
 * state -> running, attempt + 1, lease until now + lease_ms, started_at set if unset.
 * Fills *out. STORE_ENOTFOUND when the queue is empty. Two claimers (any connections, any
 * threads) never get the same job. `owner` must be non-empty and should be unique per
 * worker and process run; lease_ms is 1..30 days. */
int store_job_claim(store *s, const char *owner, int64_t lease_ms, store_job *out);

/* Extends the lease of a running job held by `owner` and reads the cancel flag.
 * STORE_ELOST if the job is no longer running under this owner. */
int store_job_heartbeat(store *s, int64_t id, const char *owner, int64_t lease_ms,
                        bool *cancel_requested);

/* Records progress of a running job held by `owner` (STORE_ELOST otherwise).
 * p->metrics_json == NULL keeps the last recorded metrics. STORE_EINVAL if stage_op is not
 * NUL-terminated, a count is negative, stage_index < -1 or fraction is not in [0, 1]. */
int store_job_progress(store *s, int64_t id, const char *owner, const store_progress *p);

/* Records the latest resumable checkpoint of a running job held by `owner` (non-empty
 * path). It survives requeue, recover and later claims. */
int store_job_set_resume(store *s, int64_t id, const char *owner, const char *path);

/* Ends a running job held by `owner`: state must be final (else STORE_EINVAL); `error` may
 * be NULL. Sets finished_at and clears the lease. */
int store_job_finish(store *s, int64_t id, const char *owner, store_job_state state,
                     const char *error);

/* Puts a running job held by `owner` back in the queue (orderly shutdown); it keeps its
 * resume_path, attempt and started_at so the next claim continues from the checkpoint. The
 * lease is cleared. If a cancel was requested, the job ends cancelled instead. */
int store_job_requeue(store *s, int64_t id, const char *owner);

/* At daemon start-up, with the data directory locked by this process: every job still
 * marked running belongs to a process that died, so it goes back to the queue (lease
 * cleared, resume_path and attempt kept), or ends cancelled if a cancel was requested.
 * One transaction. Sets *n_requeued (the cancelled ones are not counted). */
int store_job_recover(store *s, int64_t *n_requeued);

/* Cancels a job: queued -> cancelled at once (finished_at set); running ->
 * cancel_requested set, state unchanged (the worker sees it through heartbeat and stops;
 * repeating is fine); final -> STORE_ECONFLICT. Fills *out (may be NULL) with the job after. */
int store_job_cancel(store *s, int64_t id, store_job *out);

/* ---- events ------------------------------------------------------------------------------ */

typedef struct store_event {
    int64_t id; /* increasing over the whole database */
    int64_t job_id;
    int64_t created_at;
    char *level; /* "info", "warn", "error" */
    char *type;  /* "state", "stage", "epoch", "lr_find", "artifact", "message" */
    char *message;
    char *data_json; /* may be NULL */
} store_event;

void store_event_fini(store_event *e);
void store_event_list_free(store_event *ev, size_t n);

/* Appends an event to a job's log. `level` must be "info", "warn" or "error"; `type` is
 * 1..32 characters of [a-z_.]; `message` non-NULL; `data_json` may be NULL. Strings are
 * copied. STORE_ENOTFOUND if the job does not exist. `id` may be NULL. */
int store_event_add(store *s, int64_t job_id, const char *level, const char *type,
                    const char *message, const char *data_json, int64_t *id);

/* Lists a job's events oldest first, with id > after_id, at most `limit` (1..1000); caller
 * frees with store_event_list_free. An unknown job simply has no events. */
int store_event_list(store *s, int64_t job_id, int64_t after_id, size_t limit, store_event **out,
                     size_t *n, bool *has_more);

/* ---- artifacts (files a job wrote) ------------------------------------------------------- */

typedef struct store_artifact {
    int64_t id;
    int64_t job_id;
    int64_t created_at;
    char *kind; /* "weights", "checkpoint" */
    char *name;
    char *path;
    int64_t size;
    char *sha256; /* lowercase hex */
} store_artifact;

void store_artifact_fini(store_artifact *a);
void store_artifact_list_free(store_artifact *a, size_t n);

/* Records a file written by a job. A second artifact with the same (job, kind, name)
 * replaces the first (it gets a new id and created_at, so it lists last). kind, name and path
 * must be non-empty, size >= 0, sha256 64 lowercase hex digits (else STORE_EINVAL).
 * STORE_ENOTFOUND if the job does not exist. */
int store_artifact_add(store *s, int64_t job_id, const char *kind, const char *name,
                       const char *path, int64_t size, const char *sha256);

/* Lists a job's artifacts oldest first (caller frees with store_artifact_list_free). */
int store_artifact_list(store *s, int64_t job_id, store_artifact **out, size_t *n);

/* ---- API tokens ------------------------------------------------------------------------- */

/* A bearer token's row. The secret itself is never stored: only the SHA-256 of it, which the
 * server computes (storage does not interpret the digest, it only keeps it). Scopes are the
 * server's comma-separated names ("read,submit"), also opaque to storage. */
typedef struct store_token {
    int64_t id;
    char *name;
    char *scopes;
    char *secret_sha256; /* 64 lowercase hex digits */
    int64_t created_at;
    int64_t last_used_at; /* 0 = never */
    int64_t revoked_at;   /* 0 = active */
} store_token;

/* Frees the strings of a token filled by a store_token_* call and zeroes it. NULL is a no-op. */
void store_token_fini(store_token *t);
/* Frees an array returned by store_token_list() (each element finied). */
void store_token_list_free(store_token *t, size_t n);

/* Records a new active token, durably. `name` (1..64 bytes), `scopes` (non-empty) and
 * `secret_sha256` (64 lowercase hex digits, else STORE_EINVAL) are copied. Sets *id (> 0),
 * which is part of the token the server prints. */
int store_token_create(store *s, const char *name, const char *scopes, const char *secret_sha256,
                       int64_t *id);

/* Reads one token, revoked or not. STORE_EINVAL for id <= 0, STORE_ENOTFOUND if none. *out
 * is zeroed on any error. */
int store_token_get(store *s, int64_t id, store_token *out);

/* Lists every token (revoked ones too) oldest first; caller frees with
 * store_token_list_free. */
int store_token_list(store *s, store_token **out, size_t *n);

/* Marks a token revoked now. STORE_ENOTFOUND if none, STORE_ECONFLICT if already revoked. */
int store_token_revoke(store *s, int64_t id);

/* Sets last_used_at of a token to `when_ms` if that is later than the recorded value
 * (callers throttle: it is a write). STORE_ENOTFOUND if the token does not exist. */
int store_token_touch(store *s, int64_t id, int64_t when_ms);

/* Counts tokens not revoked (for "auth is on once a token exists"). */
int store_token_count_active(store *s, int64_t *count);

/* ---- v1 API additions (jobmeta.c) -------------------------------------------------------- */

/* A submission: store_job_enqueue plus a priority and an optional idempotency key. */
typedef struct store_submit {
    const char *name;      /* may be NULL */
    const char *spec_json; /* required; copied */
    int32_t priority;      /* higher runs first; equal priorities run oldest first */
    /* NULL = no key. With a key (1..255 bytes), request_sha256 (64 lowercase hex digits of
     * the request) is required: a second submission with the same key and hash within 24
     * hours returns the first job instead of a new one. */
    const char *idempotency_key;
    const char *request_sha256;
} store_submit;

/* Enqueues a job like store_job_enqueue, in one transaction with the idempotency check.
 * Sets *id and *replayed (true: the key was seen with the same request hash and *id is the
 * earlier job; nothing was added). STORE_ECONFLICT: the key was used with another request
 * hash. STORE_EINVAL on bad arguments. */
int store_job_submit(store *s, const store_submit *sub, int64_t *id, bool *replayed);

/* What the API shows of a job beyond store_job. */
typedef struct store_job_extra {
    int32_t priority;
    double step_rate;       /* training batches per second last measured (0 = unknown) */
    int64_t queue_position; /* queued jobs that will be claimed before it; -1 unless queued */
} store_job_extra;

/* Reads the extra fields of job `id` (STORE_ENOTFOUND if none). */
int store_job_extra_get(store *s, int64_t id, store_job_extra *out);

/* Records the measured step rate of a running job held by `owner` (STORE_ELOST otherwise);
 * steps_per_second must be finite and >= 0. */
int store_job_set_rate(store *s, int64_t id, const char *owner, double steps_per_second);

/* Sum of the step rates of running jobs (for /metrics). */
int store_job_count_running_rate(store *s, double *total_rate);

/* Puts a failed or cancelled job back in the queue (error, finished_at and the cancel flag
 * cleared; attempt and resume_path kept, so it continues from its last checkpoint).
 * STORE_ECONFLICT for any other state, STORE_ENOTFOUND if there is no such job. */
int store_job_retry(store *s, int64_t id);

/* Deletes a finished job with its events, artifacts rows, metrics and idempotency keys (not
 * its files: the caller removes those). STORE_ECONFLICT unless the job is in a final state. */
int store_job_delete(store *s, int64_t id);

/* One training batch as reported by the engine. Non-finite values are stored as NULL and
 * read back as NaN. */
typedef struct store_batch_metric {
    int64_t step; /* training batches done in the job after this one */
    int32_t stage, epoch, batch;
    double loss, smooth_loss, lr, mom;
    int64_t created_at;
} store_batch_metric;

/* Appends (or replaces, for a step replayed after resume) `n` rows in one transaction.
 * STORE_ENOTFOUND if the job does not exist. */
int store_batch_metrics_add(store *s, int64_t job_id, const store_batch_metric *rows, size_t n);

/* Lists a job's per-batch rows ordered by stage and step (at most 100000). Caller frees
 * *out with free(). An unknown job simply has none. */
int store_batch_metrics_list(store *s, int64_t job_id, store_batch_metric **out, size_t *n);

/* ---- datasets (the registry; files live in `dir`, storage only records them) ------------- */

typedef struct store_dataset {
    int64_t id;
    int64_t created_at;
    char *name;      /* unique */
    char *format;    /* "idx", "cifar10", "cifar100", "csv", "images" */
    char *dir;       /* the dataset's directory */
    int64_t size;    /* bytes as uploaded or imported */
    char *sha256;    /* lowercase hex */
    char *info_json; /* what the engine found: classes, counts, shape, statistics ("{}"
                        until the dataset is ready) */
    char *state;     /* "processing" (files in place, not yet checked), "ready", "failed" */
    char *error;     /* why processing failed (state "failed"), else NULL */
} store_dataset;

void store_dataset_fini(store_dataset *d);
void store_dataset_list_free(store_dataset *d, size_t n);

/* Registers a dataset in state "ready". All strings non-empty, size >= 0, sha256 64 lowercase
 * hex digits (else STORE_EINVAL); STORE_ECONFLICT when the name is taken. Strings are copied. */
int store_dataset_add(store *s, const char *name, const char *format, const char *dir, int64_t size,
                      const char *sha256, const char *info_json, int64_t *id);
/* Registers a dataset whose files are in place but not yet checked: state "processing",
 * info_json "{}". Same argument rules and codes as store_dataset_add. */
int store_dataset_add_processing(store *s, const char *name, const char *format, const char *dir,
                                 int64_t size, const char *sha256, int64_t *id);
/* Ends processing in one statement: info_json non-NULL and non-empty -> "ready" with it;
 * info_json NULL -> "failed" with `error` (non-empty, copied). STORE_ENOTFOUND when no
 * such dataset, STORE_ECONFLICT when it is not processing, STORE_EINVAL on bad arguments. */
int store_dataset_finish(store *s, int64_t id, const char *info_json, const char *error);
/* Records the size and sha256 of a dataset still "processing" whose bytes were copied in
 * the background (an import). size >= 0, sha256 64 lowercase hex digits (else
 * STORE_EINVAL); STORE_ENOTFOUND when no such dataset, STORE_ECONFLICT when it is not
 * processing. */
int store_dataset_set_content(store *s, int64_t id, int64_t size, const char *sha256);
/* The ids of the datasets in state "processing", oldest first (at most 10000). Caller frees
 * *ids with free() (NULL when there are none). */
int store_dataset_list_processing(store *s, int64_t **ids, size_t *n);
/* Fetches one dataset by id, or by name when name != NULL (id ignored). STORE_ENOTFOUND. */
int store_dataset_get(store *s, int64_t id, const char *name, store_dataset *out);
/* Lists every dataset, oldest first (caller frees with store_dataset_list_free). */
int store_dataset_list(store *s, store_dataset **out, size_t *n);
/* Deletes a dataset's row in one transaction, unless a queued or running job's spec names
 * it ("data": {"dataset": id}): then STORE_ECONFLICT and *n_jobs (may be NULL) the count;
 * also STORE_ECONFLICT, with *n_jobs 0, while the dataset is processing.
 * STORE_ENOTFOUND if no such dataset. On success *out_dir (may be NULL; caller frees with
 * free()) is the directory to remove. */
int store_dataset_delete(store *s, int64_t id, int64_t *n_jobs, char **out_dir);

/* ---- models (the registry of pretrained weights; files live at `path`) ------------------ */

typedef struct store_model {
    int64_t id;
    int64_t created_at;
    char *name;          /* unique */
    char *arch;          /* the engine architecture the weights were checked against */
    char *fit;           /* "full" (loads as the whole model) or "body" (body_only only) */
    char *in_shape_json; /* input the tensors imply, "[F]" or "[C,null,null]"; may be NULL */
    int64_t num_classes; /* the head's outputs; 0 = unknown (a body fit) */
    char *path;          /* the safetensors file */
    int64_t size;        /* bytes */
    char *sha256;        /* lowercase hex */
    int64_t source_job_id;   /* 0 = uploaded; else the job it was promoted from */
    char *source_checkpoint; /* the job's checkpoint name when promoted, else NULL */
} store_model;

void store_model_fini(store_model *m);
void store_model_list_free(store_model *m, size_t n);

/* Registers a model from the fields of `m` (borrowed; id and created_at ignored): name,
 * arch and path non-empty, fit "full" or "body", size and num_classes >= 0, sha256 64
 * lowercase hex digits, in_shape_json NULL or non-empty, source_checkpoint set exactly when
 * source_job_id > 0 (else STORE_EINVAL). STORE_ECONFLICT when the name is taken. */
int store_model_add(store *s, const store_model *m, int64_t *id);
/* Fetches one model by id, or by name when name != NULL (id ignored). STORE_ENOTFOUND. */
int store_model_get(store *s, int64_t id, const char *name, store_model *out);
/* Lists models newest first with id < before_id (0 = from the newest), at most `limit`
 * (1..1000); *has_more (may be NULL) tells whether older ones remain. Caller frees *out with
 * store_model_list_free. */
int store_model_list(store *s, int64_t before_id, size_t limit, store_model **out, size_t *n,
                     bool *has_more);
/* Deletes a model's row in one transaction, unless a queued or running job's spec names it
 * ("model": {"weights": id}): then STORE_ECONFLICT and *n_jobs (may be NULL) the count.
 * STORE_ENOTFOUND if no such model. On success *out_path (may be NULL; caller frees with
 * free()) is the file to remove. */
int store_model_delete(store *s, int64_t id, int64_t *n_jobs, char **out_path);
