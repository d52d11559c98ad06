/*
 * log.h: thawd's leveled, thread-safe logger (one line per event).
 *
 * Line format: `<UTC ISO-8601 with ms> <LEVEL> <thread name> <message> key=value...`.
 * The caller writes the key=value context into the message itself. The level check runs
 * before any formatting; each line is formatted into a local buffer and emitted with one
 * write(2) under a mutex, so lines from different threads never interleave.
 * Global state: the sink (fd + level) is the one piece of global mutable state of this module.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>

#include "../storage/storage.h"

typedef enum srv_log_level {
    SRV_LOG_DEBUG,
    SRV_LOG_INFO,
    SRV_LOG_WARN,
    SRV_LOG_ERROR,
} srv_log_level;

/* Parses "debug" | "info" | "warn" | "error"; returns 0 and sets *out, or -1. */
int srv_log_level_parse(const char *name, srv_log_level *out);
/* Static name of a level ("info"), or "?" when out of range. */
const char *srv_log_level_name(srv_log_level level);

/* Opens the sink: `path` NULL or empty = stderr, else the file is opened for appending
 * (created 0644). Returns 0, or -1 with errno set (the sink stays stderr). Call from main
 * before other threads start. */
int srv_log_open(const char *path, srv_log_level level);
/* Closes a file sink (back to stderr). Call after every other thread has stopped. */
void srv_log_close(void);

/* True when a message at `level` would be written (cheap; use before costly argument work). */
bool srv_log_enabled(srv_log_level level);

/* Names the calling thread for log lines ("main", "worker-1", "http"); copied, at most 15
 * chars kept. Threads that never call it log as "http" (MHD's threads are not ours). */
void srv_log_set_thread_name(const char *name);

/* Writes one line. Thread-safe. */
__attribute__((format(printf, 2, 3))) void srv_log(srv_log_level level, const char *fmt, ...);
void srv_log_v(srv_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* A store_log_fn that forwards storage's messages to srv_log (levels map 1:1); `user`
 * unused. */
void srv_log_store(store_log_level level, const char *msg, void *user);

/* Bugs abort, input never does: stays on in release builds (STYLE section 5). Logs the
 * failed expression with file:line, then aborts. */
#define SRV_ASSERT(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            srv_log(SRV_LOG_ERROR, "%s:%d: assertion failed: %s", __FILE__, __LINE__, #cond); \
            abort();                                                                          \
        }                                                                                     \
    } while (0)
