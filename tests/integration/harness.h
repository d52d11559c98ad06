/*
 * harness.h: drives a real `thawd` process for the integration tests.
 *
 * A th_daemon owns one temp dir (mkdtemp) holding the data dir and one stderr log per start.
 * th_daemon_start() spawns $THAWD_BIN with `--port 0 --data-dir DIR --log-level debug` plus
 * the caller's arguments, waits (bounded) for the `ready ... url=http://HOST:PORT` log line
 * and reads the port from it. Requests go through libcurl; JSON bodies are parsed with
 * jansson. Nothing here prints TAP results: functions return codes or bools and explain
 * failures as TAP comments ("# ..."), and the tests turn them into ok() lines.
 *
 * With THAWD_RESPONSE_LOG set, every response is appended to that file as one JSON line
 * (method, path, status, content_type, body) for validate_responses.mjs, which checks them
 * all against api-spec/openapi.yaml.
 *
 * Not thread-safe: one test thread drives each th_daemon.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#define TH_MAX_STARTS 8

typedef struct th_daemon {
    char name[64];                 /* test name, used in the temp dir name */
    char dir[512];                 /* temp dir (removed by th_daemon_fini) */
    char data_dir[600];            /* dir/data, the daemon's --data-dir */
    char logs[TH_MAX_STARTS][600]; /* dir/thawd.<n>.log: stderr+stdout of each start */
    int n_starts;
    pid_t pid; /* running daemon, or 0 */
    int port;
    char base_url[128]; /* "http://127.0.0.1:41234" */
} th_daemon;

typedef struct th_resp {
    long status;            /* HTTP status, 0 when the request failed */
    char content_type[128]; /* header values, "" when absent */
    char location[256];
    char allow[128];
    char etag[128];
    char headers[4096]; /* every response header line, raw (for th_resp_header) */
    char *body;         /* NUL-terminated; caller owns through th_resp_fini */
    size_t body_len;
    json_t *json; /* parsed body when it is JSON, else NULL; owned like body */
} th_resp;

/* Makes the temp dir for a test named `name`. Returns 0, or -1 (explained in a comment). */
int th_daemon_init(th_daemon *d, const char *name);

/* Spawns the daemon on d->data_dir with extra arguments `extra` (NULL-terminated array, may
 * be NULL) and waits up to `timeout_s` seconds for its ready line. Returns 0 with d->pid,
 * d->port and d->base_url set, or -1 (the log tail is printed as comments). */
int th_daemon_start(th_daemon *d, const char *const *extra, double timeout_s);

/* Sends SIGTERM and waits up to `timeout_s` for exit. Returns the exit status (0..255) when
 * it exited normally, 1000 + signal number when a signal killed it, or -1 on timeout (the
 * process is then killed with SIGKILL and reaped). */
int th_daemon_stop(th_daemon *d, double timeout_s);

/* Like th_daemon_stop with another signal (SIGINT). */
int th_daemon_stop_sig(th_daemon *d, int sig, double timeout_s);

/* SIGKILLs the daemon and reaps it (a crash, for recovery tests). */
void th_daemon_kill9(th_daemon *d);

/* Stops a daemon still running (SIGKILL), then checks every start's log for sanitizer
 * reports ("AddressSanitizer", "runtime error:", "ThreadSanitizer", "LeakSanitizer").
 * Prints the log tail when `dump_log` or a report is found, removes the temp dir.
 * Returns true when no log shows a sanitizer report. */
bool th_daemon_fini(th_daemon *d, bool dump_log);

/* Runs another thawd with the standard arguments plus `extra` (same data dir, its own log)
 * and waits up to `timeout_s` for it to exit, leaving a running daemon alone. Returns the
 * exit status like th_daemon_stop, or -1 (then it was killed). th_daemon_log_contains and
 * th_daemon_dump_log then look at this run's log. */
int th_daemon_run_once(th_daemon *d, const char *const *extra, double timeout_s);

/* Prints the last `lines` lines of the latest log as TAP comments. */
void th_daemon_dump_log(const th_daemon *d, int lines);

/* True when the latest start's log contains `needle`. */
bool th_daemon_log_contains(const th_daemon *d, const char *needle);

/* th_daemon_log_contains, waiting up to `timeout_s` for the line to appear: the daemon logs
 * a request when it completes, after the client already has the answer. */
bool th_daemon_log_wait(const th_daemon *d, const char *needle, double timeout_s);

/* One HTTP exchange. `content_type` NULL = no Content-Type header; `body` may be NULL (no
 * body; a POST then sends an empty one). Returns 0 with *r filled (free with th_resp_fini)
 * or -1 when the transfer failed (r->status 0). */
int th_request(const th_daemon *d, const char *method, const char *path, const char *content_type,
               const char *body, size_t body_len, th_resp *r);
int th_get(const th_daemon *d, const char *path, th_resp *r);
/* POST with Content-Type application/json; `json_text` may be NULL (empty body). */
int th_post_json(const th_daemon *d, const char *path, const char *json_text, th_resp *r);
/* Downloads `path` into the file `out_path`. Returns the HTTP status, or -1. */
long th_download(const th_daemon *d, const char *path, const char *out_path, th_resp *r);
void th_resp_fini(th_resp *r);

/* th_request with extra request headers (NULL-terminated "Name: value" array, may be NULL). */
int th_request_ex(const th_daemon *d, const char *method, const char *path,
                  const char *const *headers, const char *content_type, const char *body,
                  size_t body_len, th_resp *r);

/* A response header's value (first occurrence, trimmed) into out; false when absent. */
bool th_resp_header(const th_resp *r, const char *name, char *out, size_t size);

/* Reads a Server-Sent Events stream as a client would: GET `path` with Accept:
 * text/event-stream plus `headers` (may be NULL; e.g. "Last-Event-ID: 7"), until
 * `max_events` records with an id arrived (0 = no limit), the server ends the stream, or
 * timeout_ms passes. r->body holds the raw stream. Returns 0, or -1 on a transport error. */
int th_sse_read(const th_daemon *d, const char *path, const char *const *headers, int max_events,
                long timeout_ms, th_resp *r);

/* Parses SSE text into an array of {"id","event","retry","data"} records (data parsed as JSON
 * when it is JSON); counts comment lines (": ping") into *n_comments (may be NULL). Caller
 * owns the array. */
json_t *th_sse_parse(const char *text, int *n_comments);

/* POSTs a job spec to /v1/jobs and returns the new id (> 0), or -1 when the answer was not
 * a 201 with a job object (explained in a comment). `r` may be NULL. */
long long th_job_submit(const th_daemon *d, const char *spec_json, th_resp *r);

/* What th_job_wait saw while polling. */
typedef struct th_watch {
    bool saw_queued, saw_running;
    long long max_step;
    int polls;
} th_watch;

/* Polls GET /v1/jobs/{id} until its state is one of `states` ("succeeded|failed") or the
 * generous `timeout_s` passes (a guard against hangs, not a timing check). Returns the last
 * job object (caller owns, json_decref) when the state matched, else NULL. `w` may be NULL. */
json_t *th_job_wait(const th_daemon *d, long long id, const char *states, double timeout_s,
                    th_watch *w);

/* Polls until the job is running and its step is >= min_step. Returns the job object
 * (caller owns) or NULL on timeout or when the job reached a final state first. */
json_t *th_job_wait_step(const th_daemon *d, long long id, long long min_step, double timeout_s);

/* GETs every event of a job (all pages). Returns a JSON array (caller owns) or NULL. */
json_t *th_job_events(const th_daemon *d, long long id);

/* Like th_job_events for a job already in a final state, but waits (bounded) until the
 * log holds the state event of that final state, which the daemon may append just after
 * the job row changes. Says so in a comment when it had to wait. */
json_t *th_job_events_final(const th_daemon *d, long long id, double timeout_s);

/* Checks that `r` is an RFC 9457 problem: status `status`, Content-Type
 * application/problem+json, body type "urn:thawd:problem:<slug>", non-empty title, status
 * member equal to the HTTP status. Explains a mismatch in a comment. */
bool th_is_problem(const th_resp *r, long status, const char *slug);

/* True when errors[] of the problem in `r` has an entry with a non-empty detail whose
 * pointer is `pointer` or lies below it ("/model/hidden/8" for "/model/hidden"). */
bool th_problem_has_pointer(const th_resp *r, const char *pointer);

/* Small accessors: an integer member (json integer; else `dflt`), a string member or NULL. */
long long th_json_int(const json_t *obj, const char *key, long long dflt);
const char *th_json_str(const json_t *obj, const char *key);
double th_json_num(const json_t *obj, const char *key, double dflt);

/* True when the media type of `content_type` (before any ';') equals `want`
 * (case-insensitive). */
bool th_media_type_is(const char *content_type, const char *want);

/* SHA-256 of a file as 64 lowercase hex chars + NUL. Returns 0 or -1. */
int th_sha256_file(const char *path, char hex[65]);

/* Checks that `path` is a well-formed safetensors file: 8-byte little-endian header length,
 * a JSON object header, tensors with dtype/shape/data_offsets inside the data area whose
 * size matches dtype x shape. Sets *n_tensors. Returns true or explains in a comment. */
bool th_safetensors_valid(const char *path, size_t *n_tensors);

/* Monotonic seconds. */
double th_now(void);
void th_sleep_ms(int ms);
