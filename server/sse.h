/*
 * sse.h: live job event streams (Server-Sent Events) over libmicrohttpd suspend/resume.
 *
 * A stream is one MHD response whose content reader sends the job's events (read from
 * storage, ids > the client's Last-Event-ID) as `id:`/`event:`/`data:` records, a `: ping`
 * comment every heartbeat, and ends once the job is final and its final state event is out.
 * With nothing to send the reader suspends its connection; srv_sse_notify() (workers, after
 * adding an event) and a 1 s ticker resume it.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "app.h"

struct MHD_Connection;
struct MHD_Response;

/* Creates the hub and starts its ticker thread. `app` is borrowed and must outlive it.
 * Returns 0 and *out (free with srv_sse_destroy), or -1. */
int srv_sse_create(srv_app *app, srv_sse **out);

/* Ends every stream: suspended connections are resumed and their readers finish. Call
 * before MHD_stop_daemon. NULL is a no-op. */
void srv_sse_shutdown(srv_sse *hub);

/* Stops the ticker and frees the hub; every stream must be gone (MHD stopped). NULL ok. */
void srv_sse_destroy(srv_sse *hub);

/* Wakes the streams of job `job_id` (new events). Thread-safe; NULL hub is a no-op. */
void srv_sse_notify(srv_sse *hub, int64_t job_id);

/* Number of open streams (for /metrics). */
size_t srv_sse_count(srv_sse *hub);

/* Builds the streaming response for `conn` (borrowed; the stream lives until MHD destroys
 * the response). Returns NULL on ENOMEM. The caller queues and destroys its reference. */
struct MHD_Response *srv_sse_response(srv_sse *hub, struct MHD_Connection *conn, int64_t job_id,
                                      int64_t after_id, int heartbeat_ms);
