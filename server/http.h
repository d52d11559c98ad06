/*
 * http.h: the daemon's HTTP server (libmicrohttpd): listening socket, thread pool, per-request
 * body buffer with the --max-body cap, dispatch to the route table, one log line per request.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "app.h"

typedef struct srv_http srv_http;

/* Binds app->cfg->host:port and starts the MHD daemon with app->cfg->http_threads pool
 * threads. On success *out is the caller's, stop and free with srv_http_stop(). On failure
 * returns -1 with a message (e.g. "cannot listen on 127.0.0.1:8080: Address already in use")
 * in err. `app` is borrowed and must outlive the server. */
int srv_http_start(srv_app *app, srv_http **out, char *err, size_t err_size);

/* Writes the strong ETag http.c gives a body without one (quoted, 34 bytes + NUL): two
 * FNV-1a 64 hashes with different offsets. For handlers that cache a body with its tag. */
void srv_http_etag(const char *body, size_t len, char out[80]);

/* The bound port (the real one when --port 0). */
uint16_t srv_http_port(const srv_http *h);

/* Stops accepting, finishes or drops in-flight requests, joins MHD's threads (closing their
 * storage connections) and frees `h`. NULL is a no-op. */
void srv_http_stop(srv_http *h);
