/*
 * schema.c: the embedded schema and its migrations, keyed by PRAGMA user_version.
 *
 * DESIGN: migrations[i] takes a database from user_version i to i + 1 and ends by stamping
 * the new version, so a migration and its stamp commit together. All pending migrations
 * run in one BEGIN IMMEDIATE transaction, and the version is re-read inside it, so two
 * connections opening a fresh file at once cannot both migrate. A database stamped with a
 * version above ours was written by a newer thawd: we refuse it (STORE_EVERSION) rather
 * than risk writing rows it cannot read. To change the schema, append a migration; never
 * edit a released one.
 */
#include <sqlite3.h>

#include "store_impl.h"

static const char *const migrations[] = {
    /* 0 -> 1: jobs, events, artifacts. Times are ms since the epoch, 0 = not yet. */
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT,"
    "  spec_json TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN"
    "    ('queued', 'running', 'succeeded', 'failed', 'cancelled')),"
    "  created_at INTEGER NOT NULL,"
    "  started_at INTEGER NOT NULL DEFAULT 0,"
    "  finished_at INTEGER NOT NULL DEFAULT 0,"
    "  updated_at INTEGER NOT NULL,"
    "  attempt INTEGER NOT NULL DEFAULT 0,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT,"
    "  lease_owner TEXT,"
    "  lease_expires_at INTEGER NOT NULL DEFAULT 0,"
    "  resume_path TEXT,"
    "  stage_index INTEGER NOT NULL DEFAULT -1,"
    "  stage_count INTEGER NOT NULL DEFAULT 0,"
    "  stage_op TEXT NOT NULL DEFAULT '',"
    "  epoch INTEGER NOT NULL DEFAULT 0,"
    "  n_epochs INTEGER NOT NULL DEFAULT 0,"
    "  batch INTEGER NOT NULL DEFAULT 0,"
    "  n_batches INTEGER NOT NULL DEFAULT 0,"
    "  step INTEGER NOT NULL DEFAULT 0,"
    "  fraction REAL NOT NULL DEFAULT 0,"
    "  metrics_json TEXT"
    ") STRICT;"
    "CREATE INDEX jobs_state_id ON jobs (state, id);"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL,"
    "  level TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  data_json TEXT"
    ") STRICT;"
    "CREATE INDEX events_job_id ON events (job_id, id);"
    "CREATE TABLE artifacts ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  path TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  UNIQUE (job_id, kind, name)"
    ") STRICT;"
    "PRAGMA user_version = 1;",
    /* 1 -> 2 (api): priority and measured step rate on jobs, idempotency keys of
     * submissions, per-batch training metrics. */
    "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN step_rate REAL NOT NULL DEFAULT 0;"
    "CREATE INDEX jobs_queue ON jobs (state, priority DESC, id);"
    "CREATE TABLE idempotency_keys ("
    "  key TEXT PRIMARY KEY,"
    "  request_sha256 TEXT NOT NULL,"
    "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE batch_metrics ("
    "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  step INTEGER NOT NULL,"
    "  stage INTEGER NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  batch INTEGER NOT NULL,"
    "  loss REAL,"
    "  smooth_loss REAL,"
    "  lr REAL,"
    "  mom REAL,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (job_id, stage, step)"
    ") STRICT, WITHOUT ROWID;"
    "PRAGMA user_version = 2;",
    /* 2 -> 3 (auth): API tokens. Only the SHA-256 of each secret is kept; revoked_at 0 =
     * active. */
    "CREATE TABLE tokens ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL,"
    "  scopes TEXT NOT NULL,"
    "  secret_sha256 TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  last_used_at INTEGER NOT NULL DEFAULT 0,"
    "  revoked_at INTEGER NOT NULL DEFAULT 0"
    ") STRICT;"
    "PRAGMA user_version = 3;",
    /* 3 -> 4 (data): the dataset registry. `dir` is the dataset's directory under the
     * data dir; info_json holds what the engine found in it (classes with counts, sample
     * shape, statistics). */
    "CREATE TABLE datasets ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL UNIQUE,"
    "  format TEXT NOT NULL,"
    "  dir TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  info_json TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL"
    ") STRICT;"
    "PRAGMA user_version = 4;",
    /* 4 -> 5 (models): the models registry (pretrained weights). `path` is the model's
     * safetensors file under the data dir; fit is "full" (loads as the whole model) or
     * "body" (only with body_only); in_shape_json is what the tensors tell of the input
     * ([F], or [C, null, null]) or NULL; num_classes 0 = unknown. source_job_id 0 = an
     * upload; otherwise the job and checkpoint name it was promoted from (no foreign key:
     * the model outlives the job). */
    "CREATE TABLE models ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL UNIQUE,"
    "  arch TEXT NOT NULL,"
    "  fit TEXT NOT NULL CHECK (fit IN ('full', 'body')),"
    "  in_shape_json TEXT,"
    "  num_classes INTEGER NOT NULL DEFAULT 0,"
    "  path TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  source_job_id INTEGER NOT NULL DEFAULT 0,"
    "  source_checkpoint TEXT,"
    "  created_at INTEGER NOT NULL"
    ") STRICT;"
    "PRAGMA user_version = 5;",
    /* 5 -> 6 (data): datasets are checked and decoded off the HTTP thread. A new dataset is
     * "processing" until the processing thread makes it "ready" (info_json filled) or
     * "failed" (error says why); rows from before this version were checked already. */
    "ALTER TABLE datasets ADD COLUMN state TEXT NOT NULL DEFAULT 'ready'"
    "  CHECK (state IN ('processing', 'ready', 'failed'));"
    "ALTER TABLE datasets ADD COLUMN error TEXT;"
    "CREATE INDEX datasets_state ON datasets (state, id);"
    "PRAGMA user_version = 6;",
};

#define N_MIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

int store_schema_version(void)
{
    return N_MIGRATIONS;
}

static int read_user_version(store *s, int *v)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);

    if (rc != SQLITE_OK)
        return store_sqlite_fail(s, rc, "read user_version");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int(st, 0);
        rc = STORE_OK;
    } else {
        rc = store_sqlite_fail(s, rc, "read user_version");
    }
    /* finalize() only repeats the error of the last step, handled above. */
    (void)sqlite3_finalize(st);
    return rc;
}

int store_schema_migrate(store *s)
{
    int rc, v;

    /* Fast path without the write lock: most opens find the schema current. */
    if ((rc = read_user_version(s, &v)) != 0)
        return rc;
    if (v == N_MIGRATIONS)
        return STORE_OK;
    if (v > N_MIGRATIONS || v < 0)
        goto too_new;

    if ((rc = store_tx_begin(s)) != 0)
        return rc;
    if ((rc = read_user_version(s, &v)) != 0)
        goto fail;
    if (v > N_MIGRATIONS || v < 0) {
        store_tx_rollback(s);
        goto too_new;
    }
    for (int i = v; i < N_MIGRATIONS; i++) {
        int src = sqlite3_exec(s->db, migrations[i], NULL, NULL, NULL);

        if (src != SQLITE_OK) {
            rc = store_sqlite_fail(s, src, "schema migration");
            goto fail;
        }
        store_logf(s, STORE_LOG_INFO, "storage: migrated schema to version %d", i + 1);
    }
    return store_tx_commit(s);
fail:
    store_tx_rollback(s);
    return rc;
too_new:
    store_logf(s, STORE_LOG_ERROR,
               "storage: database schema version %d is not one this build (version %d) can use", v,
               N_MIGRATIONS);
    return STORE_EVERSION;
}
