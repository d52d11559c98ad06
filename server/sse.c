/*
 * sse.c: Server-Sent Events streams of job events (see sse.h).
 *
 * DESIGN (api-anchors B.5/B.6): MHD runs a polling thread pool, so a content reader must
 * never block and must never return 0 without suspending its connection first (that busy
 * loops). Each stream is a `sub` in the hub's list. Its reader drains a small output
 * buffer; when the buffer is empty it reads the next events from storage (on the MHD
 * thread's own connection) and formats them; with nothing to send it marks itself
 * suspended and calls MHD_suspend_connection under the hub mutex. Wake-ups
 * (srv_sse_notify, the ticker, shutdown) resume a suspended sub under the same mutex, or set
 * `pending` when its reader is running, so a wake-up between "no events" and "suspend" is
 * never lost and a connection is never resumed twice. The ticker resumes every stream each
 * second: that sends heartbeats, notices events added without a notify (cancel of a queued
 * job, retry, recovery) and detects dead clients (a suspended connection never times out).
 * Lock order: hub->mu, then MHD's internal locks (suspend/resume take them briefly).
 */
#include "sse.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

#include "json_io.h"
#include "log.h"

#define TICK_MS        1000
#define BATCH          100
#define FINAL_GRACE_MS 5000

typedef struct sub {
    srv_sse *hub;
    struct MHD_Connection *conn;
    int64_t job_id, last_id;
    int heartbeat_ms;
    int64_t last_write; /* monotonic ms of the last bytes queued */
    bool suspended;     /* guarded by hub->mu */
    bool pending;       /* guarded by hub->mu: woken while the reader ran */
    bool done;          /* reader only: send what is buffered, then end */
    char *buf;          /* reader only: formatted output not yet handed to MHD */
    size_t len, off, cap;
    struct sub *prev, *next; /* guarded by hub->mu */
} sub;

struct srv_sse {
    srv_app *app;
    /* mu guards: subs list, each sub's suspended/pending, stopping, count. */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* ticker sleep; signalled on destroy */
    sub *subs;
    size_t count;
    bool stopping, quit;
    pthread_t ticker;
    bool ticker_started;
};

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Resumes u if suspended, else marks it pending. Caller holds hub->mu. */
static void wake_locked(sub *u)
{
    if (u->suspended) {
        u->suspended = false;
        MHD_resume_connection(u->conn);
    } else {
        u->pending = true;
    }
}

static void *ticker_main(void *arg)
{
    srv_sse *hub = arg;
    srv_log_set_thread_name("sse");
    pthread_mutex_lock(&hub->mu);
    while (!hub->quit) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)TICK_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        int rc = pthread_cond_timedwait(&hub->cv, &hub->mu, &until);
        if (rc != 0 && rc != ETIMEDOUT)
            break;
        for (sub *u = hub->subs; u; u = u->next)
            wake_locked(u);
    }
    pthread_mutex_unlock(&hub->mu);
    return NULL;
}

int srv_sse_create(srv_app *app, srv_sse **out)
{
    *out = NULL;
    srv_sse *hub = calloc(1, sizeof *hub);
    if (!hub)
        return -1;
    hub->app = app;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        free(hub);
        return -1;
    }
    int ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&hub->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok) {
        free(hub);
        return -1;
    }
    if (pthread_mutex_init(&hub->mu, NULL) != 0) {
        pthread_cond_destroy(&hub->cv);
        free(hub);
        return -1;
    }
    if (pthread_create(&hub->ticker, NULL, ticker_main, hub) != 0) {
        srv_sse_destroy(hub);
        return -1;
    }
    hub->ticker_started = true;
    *out = hub;
    return 0;
}

void srv_sse_shutdown(srv_sse *hub)
{
    if (!hub)
        return;
    pthread_mutex_lock(&hub->mu);
    hub->stopping = true;
    for (sub *u = hub->subs; u; u = u->next)
        wake_locked(u);
    pthread_mutex_unlock(&hub->mu);
}

void srv_sse_destroy(srv_sse *hub)
{
    if (!hub)
        return;
    if (hub->ticker_started) {
        pthread_mutex_lock(&hub->mu);
        hub->quit = true;
        pthread_cond_broadcast(&hub->cv);
        pthread_mutex_unlock(&hub->mu);
        pthread_join(hub->ticker, NULL);
    }
    pthread_mutex_destroy(&hub->mu);
    pthread_cond_destroy(&hub->cv);
    free(hub);
}

void srv_sse_notify(srv_sse *hub, int64_t job_id)
{
    if (!hub)
        return;
    pthread_mutex_lock(&hub->mu);
    for (sub *u = hub->subs; u; u = u->next)
        if (u->job_id == job_id)
            wake_locked(u);
    pthread_mutex_unlock(&hub->mu);
}

size_t srv_sse_count(srv_sse *hub)
{
    if (!hub)
        return 0;
    pthread_mutex_lock(&hub->mu);
    size_t n = hub->count;
    pthread_mutex_unlock(&hub->mu);
    return n;
}

/* Appends text to u's output buffer. Returns false on ENOMEM. */
static bool out_add(sub *u, const char *text, size_t n)
{
    if (u->len + n > u->cap) {
        size_t cap = u->cap ? u->cap : 4096;
        while (cap < u->len + n)
            cap *= 2;
        char *b = realloc(u->buf, cap);
        if (!b)
            return false;
        u->buf = b;
        u->cap = cap;
    }
    memcpy(u->buf + u->len, text, n);
    u->len += n;
    return true;
}

/* Formats one event record. */
static bool out_event(sub *u, const store_event *e)
{
    json_t *o = srv_event_to_json(e);
    char *data = o ? srv_json_dump(o, NULL) : NULL;
    json_decref(o);
    if (!data)
        return false;
    char head[96];
    int n = snprintf(head, sizeof head, "id: %lld\nevent: %s\ndata: ", (long long)e->id,
                     e->type ? e->type : "message");
    /* compact JSON never contains a raw newline, so one data line carries the event */
    bool ok = n > 0 && out_add(u, head, (size_t)n) && out_add(u, data, strlen(data)) &&
              out_add(u, "\n\n", 2);
    free(data);
    return ok;
}

/* Is `e` the state event announcing final state `state`? */
static bool is_final_event(const store_event *e, const char *state)
{
    if (!e->type || strcmp(e->type, "state") != 0 || !e->data_json)
        return false;
    json_t *d = json_loads(e->data_json, 0, NULL);
    const char *s = d ? json_string_value(json_object_get(d, "state")) : NULL;
    bool hit = s && strcmp(s, state) == 0;
    json_decref(d);
    return hit;
}

/* Reads what is new for u into its buffer: events, else a heartbeat when due; sets u->done
 * once the job is final and its final state event was sent (or the grace period passed). */
static void fill(sub *u)
{
    u->len = u->off = 0;
    store *s;
    if (srv_app_store(u->hub->app, &s) != 0) {
        u->done = true;
        return;
    }
    store_job job;
    memset(&job, 0, sizeof job);
    int rc = store_job_get(s, u->job_id, &job);
    if (rc != 0) {
        u->done = true; /* deleted meanwhile, or storage failing */
        return;
    }
    bool final = store_job_state_is_final(job.state);
    const char *final_state = store_job_state_name(job.state);
    store_event *ev = NULL;
    size_t n = 0;
    bool more = false;
    rc = store_event_list(s, u->job_id, u->last_id, BATCH, &ev, &n, &more);
    if (rc != 0) {
        store_job_fini(&job);
        u->done = true;
        return;
    }
    bool saw_final = false;
    for (size_t i = 0; i < n; i++) {
        if (!out_event(u, &ev[i])) {
            u->done = true;
            break;
        }
        u->last_id = ev[i].id;
        if (final && is_final_event(&ev[i], final_state))
            saw_final = true;
    }
    store_event_list_free(ev, n);
    int64_t now = mono_ms();
    if (final && !more) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        int64_t wall = (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
        if (saw_final || wall - job.finished_at > FINAL_GRACE_MS)
            u->done = true;
    }
    store_job_fini(&job);
    if (u->len == 0 && !u->done && now - u->last_write >= u->heartbeat_ms)
        (void)out_add(u, ": ping\n\n", 8); /* out of memory: try again next wake-up */
    if (u->len > 0)
        u->last_write = now;
}

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sub *u = cls;
    srv_sse *hub = u->hub;
    for (;;) {
        if (u->off < u->len) {
            size_t n = u->len - u->off;
            if (n > max)
                n = max;
            memcpy(buf, u->buf + u->off, n);
            u->off += n;
            return (ssize_t)n;
        }
        if (u->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&hub->mu);
        u->pending = false;
        bool stopping = hub->stopping;
        pthread_mutex_unlock(&hub->mu);
        if (stopping)
            return MHD_CONTENT_READER_END_OF_STREAM;
        fill(u);
        if (u->len > 0 || u->done)
            continue;
        pthread_mutex_lock(&hub->mu);
        if (u->pending || hub->stopping) {
            pthread_mutex_unlock(&hub->mu);
            continue;
        }
        u->suspended = true;
        MHD_suspend_connection(u->conn);
        pthread_mutex_unlock(&hub->mu);
        return 0; /* legal: the connection is suspended until a wake-up resumes it */
    }
}

static void sub_free(void *cls)
{
    sub *u = cls;
    srv_sse *hub = u->hub;
    pthread_mutex_lock(&hub->mu);
    if (u->prev)
        u->prev->next = u->next;
    else
        hub->subs = u->next;
    if (u->next)
        u->next->prev = u->prev;
    hub->count--;
    pthread_mutex_unlock(&hub->mu);
    free(u->buf);
    free(u);
}

struct MHD_Response *srv_sse_response(srv_sse *hub, struct MHD_Connection *conn, int64_t job_id,
                                      int64_t after_id, int heartbeat_ms)
{
    sub *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->hub = hub;
    u->conn = conn;
    u->job_id = job_id;
    u->last_id = after_id;
    u->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : 15000;
    u->last_write = mono_ms();
    /* the reconnection delay the client should use, then events */
    if (!out_add(u, "retry: 3000\n\n", 13)) {
        free(u);
        return NULL;
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, reader, u, sub_free);
    if (!r) {
        free(u->buf);
        free(u);
        return NULL;
    }
    pthread_mutex_lock(&hub->mu);
    u->next = hub->subs;
    if (hub->subs)
        hub->subs->prev = u;
    hub->subs = u;
    hub->count++;
    pthread_mutex_unlock(&hub->mu);
    /* heartbeats keep the stream alive; an idle timeout would cut a quiet stream */
    (void)MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)0);
    return r;
}
