/*
 * jobs_view.c: the job representation with queue position, ETA and stage timeline.
 *
 * DESIGN: the stage timeline is derived from the job's "stage" events (phase begin/end with
 * index, op and seconds) rather than stored separately, so it survives restarts for free: a
 * stage re-begun after a resume keeps its first start time and gets the later end. The ETA
 * is (planned steps - steps done) / measured step rate, where planned steps = step /
 * progress; it is null until the rate and the progress are known.
 *
 * Status polling (GET /v1/jobs/{id}) is the hot request: building the document takes four
 * queries, the events of the job and a JSON build and dump, all to produce the same bytes
 * until the job changes. srv_job_doc keeps the dumped document and its ETag per HTTP thread
 * (a pthread key, like the thread's storage connection, so no lock) in a few slots indexed by
 * job id, each tagged with the connection's data version at the time it was validated. A
 * request costs one indexed read (store_job_version) and a copy; any commit by anyone bumps
 * the version and the next request rebuilds. The document depends on nothing but the
 * database (no clock), which is what makes the version a complete validator.
 */
#include "jobs_view.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json_io.h"

#define PAGE      1000
#define DOC_SLOTS 16 /* cached documents per HTTP thread, slot = job id % DOC_SLOTS */

int srv_job_all_events(store *s, int64_t id, store_event **out, size_t *n)
{
    store_event *all = NULL;
    size_t len = 0;
    int64_t after = 0;
    bool more = true;
    *out = NULL;
    *n = 0;
    while (more) {
        store_event *ev = NULL;
        size_t k = 0;
        int rc = store_event_list(s, id, after, PAGE, &ev, &k, &more);
        if (rc != 0) {
            store_event_list_free(all, len);
            return rc;
        }
        if (k == 0) {
            store_event_list_free(ev, k);
            break;
        }
        store_event *grown = realloc(all, (len + k) * sizeof *all);
        if (!grown) {
            store_event_list_free(ev, k);
            store_event_list_free(all, len);
            return STORE_ENOMEM;
        }
        all = grown;
        memcpy(all + len, ev, k * sizeof *ev);
        free(ev); /* the strings moved to `all` */
        len += k;
        after = all[len - 1].id;
    }
    *out = all;
    *n = len;
    return 0;
}

static json_t *time_json(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char buf[32];
    srv_time_format(ms, buf, sizeof buf);
    return json_string(buf);
}

/* Builds the stage timeline from the spec's stages and the stage events. */
static json_t *stage_timeline(store *s, const store_job *j)
{
    json_t *spec = j->spec_json ? json_loads(j->spec_json, 0, NULL) : NULL;
    json_t *stages = json_object_get(spec, "stages");
    size_t n = json_array_size(stages);
    json_t *out = json_array();
    if (!out) {
        json_decref(spec);
        return NULL;
    }
    int64_t *begin = calloc(n + 1, sizeof *begin), *end = calloc(n + 1, sizeof *end);
    double *secs = calloc(n + 1, sizeof *secs);
    const char **msg = calloc(n + 1, sizeof *msg);
    store_event *ev = NULL;
    size_t n_ev = 0;
    if (!begin || !end || !secs || !msg || srv_job_all_events(s, j->id, &ev, &n_ev) != 0)
        goto done;
    for (size_t i = 0; i < n_ev; i++) {
        if (!ev[i].type || strcmp(ev[i].type, "stage") != 0 || !ev[i].data_json)
            continue;
        json_t *d = json_loads(ev[i].data_json, 0, NULL);
        json_t *idx = json_object_get(d, "index");
        const char *phase = json_string_value(json_object_get(d, "phase"));
        if (json_is_integer(idx) && phase && json_integer_value(idx) >= 0 &&
            (size_t)json_integer_value(idx) < n) {
            size_t k = (size_t)json_integer_value(idx);
            if (strcmp(phase, "begin") == 0) {
                if (!begin[k])
                    begin[k] = ev[i].created_at;
                end[k] = 0; /* re-begun after a resume: running again */
            } else if (strcmp(phase, "end") == 0) {
                end[k] = ev[i].created_at;
                secs[k] = json_number_value(json_object_get(d, "seconds"));
                msg[k] = ev[i].message;
            }
        }
        json_decref(d);
    }
done:
    for (size_t k = 0; begin && end && secs && msg && k < n; k++) {
        json_t *st = json_array_get(stages, k);
        const char *op = json_string_value(json_object_get(st, "op"));
        const char *state = end[k]                                      ? "done"
                            : begin[k] && j->state == STORE_JOB_RUNNING ? "running"
                            : begin[k]                                  ? "stopped"
                                                                        : "pending";
        json_t *o =
            json_pack("{s:i, s:s, s:s, s:o, s:o, s:o, s:o}", "index", (int)k, "op", op ? op : "?",
                      "state", state, "started_at", time_json(begin[k]), "finished_at",
                      time_json(end[k]), "seconds", end[k] ? json_real(secs[k]) : json_null(),
                      "message", msg[k] ? json_string(msg[k]) : json_null());
        json_array_append_new(out, o);
    }
    store_event_list_free(ev, n_ev);
    free(begin);
    free(end);
    free(secs);
    free(msg);
    json_decref(spec);
    return out;
}

json_t *srv_job_view(store *s, const store_job *j, bool detail)
{
    store_job_extra x;
    if (store_job_extra_get(s, j->id, &x) != 0) {
        memset(&x, 0, sizeof x);
        x.queue_position = -1;
    }
    json_t *o = srv_job_to_json(j, x.queue_position);
    if (!o)
        return NULL;
    json_t *eta = json_null();
    const store_progress *p = &j->progress;
    if (j->state == STORE_JOB_RUNNING && x.step_rate > 0 && p->fraction > 0.001 && p->step > 0) {
        double planned = (double)p->step / p->fraction;
        double left = planned - (double)p->step;
        eta = json_real(left > 0 ? left / x.step_rate : 0.0);
    }
    int rc = 0;
    rc |= json_object_set_new(o, "priority", json_integer(x.priority));
    rc |= json_object_set_new(
        o, "step_rate",
        j->state == STORE_JOB_RUNNING && x.step_rate > 0 ? json_real(x.step_rate) : json_null());
    rc |= json_object_set_new(o, "eta_seconds", eta);
    if (detail) {
        json_t *tl = stage_timeline(s, j);
        rc |= json_object_set_new(o, "stages", tl ? tl : json_array());
    }
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- the per-thread document cache ------------------------------------------------------ */

typedef struct doc_slot {
    int64_t id; /* 0 = empty */
    uint64_t version;
    char *body;
    size_t len;
    char etag[80];
} doc_slot;

typedef struct doc_cache {
    const store *owner; /* the connection whose versions the slots hold */
    doc_slot slots[DOC_SLOTS];
} doc_cache;

static pthread_key_t doc_key;
static pthread_once_t doc_once = PTHREAD_ONCE_INIT;
static bool doc_key_ok;

static void doc_cache_clear(doc_cache *c)
{
    for (size_t i = 0; i < DOC_SLOTS; i++) {
        free(c->slots[i].body);
        memset(&c->slots[i], 0, sizeof c->slots[i]);
    }
}

static void doc_cache_free(void *p)
{
    if (!p)
        return;
    doc_cache_clear(p);
    free(p);
}

static void doc_key_init(void)
{
    doc_key_ok = pthread_key_create(&doc_key, doc_cache_free) == 0;
}

/* The calling thread's cache for connection `s` (emptied if it was another's), or NULL when
 * none can be had (then every call builds). */
static doc_cache *doc_cache_get(const store *s)
{
    (void)pthread_once(&doc_once, doc_key_init); /* only fails for invalid arguments */
    if (!doc_key_ok)
        return NULL;
    doc_cache *c = pthread_getspecific(doc_key);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c || pthread_setspecific(doc_key, c) != 0) {
            free(c);
            return NULL;
        }
    }
    if (c->owner != s) {
        doc_cache_clear(c);
        c->owner = s;
    }
    return c;
}

void srv_job_doc_forget(void)
{
    (void)pthread_once(&doc_once, doc_key_init);
    doc_cache *c = doc_key_ok ? pthread_getspecific(doc_key) : NULL;
    if (c) {
        doc_cache_clear(c);
        c->owner = NULL;
    }
}

/* Builds the document of job `id` into *body (malloc'd) and *len. */
static int doc_build(store *s, int64_t id, char **body, size_t *len)
{
    store_job j;
    int rc = store_job_get(s, id, &j);
    if (rc != 0)
        return rc;
    json_t *o = srv_job_view(s, &j, true);
    store_job_fini(&j);
    *body = o ? srv_json_dump(o, len) : NULL;
    json_decref(o);
    return *body ? 0 : STORE_ENOMEM;
}

int srv_job_doc(store *s, int64_t id, char **body, size_t *len, char etag[80])
{
    *body = NULL;
    *len = 0;
    etag[0] = '\0';
    uint64_t version = 0;
    int rc = store_job_version(s, id, &version);
    if (rc != 0)
        return rc;
    doc_cache *c = doc_cache_get(s);
    doc_slot *slot = c ? &c->slots[(uint64_t)id % DOC_SLOTS] : NULL;
    if (!slot || slot->id != id || slot->version != version) {
        /* Read after the version: a change in between leaves a newer document under the
         * older version, which the next call replaces; never the other way round. */
        char *fresh = NULL;
        size_t n = 0;
        if ((rc = doc_build(s, id, &fresh, &n)) != 0)
            return rc;
        if (!slot) {
            *body = fresh;
            *len = n;
            srv_http_etag(fresh, n, etag);
            return 0;
        }
        free(slot->body);
        slot->id = id;
        slot->version = version;
        slot->body = fresh;
        slot->len = n;
        srv_http_etag(fresh, n, slot->etag);
    }
    *body = malloc(slot->len ? slot->len : 1);
    if (!*body)
        return STORE_ENOMEM;
    memcpy(*body, slot->body, slot->len);
    *len = slot->len;
    memcpy(etag, slot->etag, sizeof slot->etag);
    return 0;
}
