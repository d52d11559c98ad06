/*
 * handlers_results.c: what a job measured: GET /v1/jobs/{id}/metrics (the per-epoch table
 * and the per-batch loss/LR history, downsampled on request), GET /v1/jobs/{id}/lr_find (each
 * lr_find's curve, its suggestions and the LR the following stages used) and
 * GET /v1/jobs/{id}/lr_find.svg (the same as a plot), and GET /v1/jobs/{id}/summary (the
 * model as fastai's learn.summary() describes it, from the engine's eng_net_summary).
 *
 * DESIGN: epoch rows and lr_find results come from the job's events (the worker stores
 * them there anyway); per-batch rows come from the batch_metrics table. Downsampling
 * averages consecutive rows in equal buckets, keeping the last step of each bucket, so a
 * dashboard asking for 500 points gets the shape of a 100000-step curve.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets.h"
#include "handlers.h"
#include "jobs_view.h"
#include "json_io.h"
#include "log.h"
#include "models.h"

static bool parse_id(const char *s, int64_t *id)
{
    if (!s || !*s || strlen(s) > 18)
        return false;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v < 1)
        return false;
    *id = v;
    return true;
}

/* Loads the job of {id} and its events; answers errors itself. */
static bool load(srv_request *req, srv_reply *rep, store **s, store_job *job, store_event **ev,
                 size_t *n)
{
    int64_t id;
    memset(job, 0, sizeof *job);
    if (ev)
        *ev = NULL;
    if (n)
        *n = 0;
    if (!parse_id(req->params[0], &id)) {
        srv_reply_problem(rep, req, 404, "no job with that id");
        return false;
    }
    if (srv_app_store(req->app, s) != 0) {
        srv_reply_problem(rep, req, 503, "storage is unavailable");
        return false;
    }
    int rc = store_job_get(*s, id, job);
    if (rc == 0 && ev)
        rc = srv_job_all_events(*s, id, ev, n);
    if (rc != 0) {
        unsigned st = srv_status_for_store(rc);
        store_job_fini(job);
        srv_reply_problem(rep, req, st, st == 404 ? "job not found" : store_strerror(rc));
        return false;
    }
    return true;
}

static json_t *num_or_null(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *batch_row(const store_batch_metric *m)
{
    char t[32];
    srv_time_format(m->created_at, t, sizeof t);
    return json_pack("{s:I, s:i, s:i, s:i, s:o, s:o, s:o, s:o, s:s}", "step", (json_int_t)m->step,
                     "stage", (int)m->stage, "epoch", (int)m->epoch, "batch", (int)m->batch, "loss",
                     num_or_null(m->loss), "smooth_loss", num_or_null(m->smooth_loss), "lr",
                     num_or_null(m->lr), "mom", num_or_null(m->mom), "created_at", t);
}

/* Mean of the finite values of field `off` in rows [a, b). */
static double bucket_mean(const store_batch_metric *r, size_t a, size_t b, size_t off)
{
    double sum = 0;
    size_t k = 0;
    for (size_t i = a; i < b; i++) {
        double v = *(const double *)((const char *)&r[i] + off);
        if (isfinite(v)) {
            sum += v;
            k++;
        }
    }
    return k ? sum / (double)k : (double)NAN;
}

void srv_handle_job_metrics(srv_request *req, srv_reply *rep)
{
    const char *mp = req->query(req, "max_points");
    long max_points = 500;
    if (mp) {
        char *end;
        max_points = strtol(mp, &end, 10);
        if (!*mp || *end || max_points < 2 || max_points > 100000) {
            json_t *p = srv_problem_new(422,
                                        "query parameter max_points must be an integer in "
                                        "2..100000",
                                        req->path);
            json_object_set_new(p, "errors",
                                json_pack("[{s:s, s:s}]", "parameter", "max_points", "detail",
                                          "must be an integer in 2..100000"));
            srv_reply_problem_json(rep, 422, p);
            return;
        }
    }
    store *s;
    store_job job;
    store_event *ev;
    size_t n_ev;
    if (!load(req, rep, &s, &job, &ev, &n_ev))
        return;
    json_t *epochs = json_array();
    for (size_t i = 0; i < n_ev; i++) {
        if (!ev[i].type || strcmp(ev[i].type, "epoch") != 0 || !ev[i].data_json)
            continue;
        json_t *d = json_loads(ev[i].data_json, 0, NULL);
        if (!d)
            continue;
        char t[32];
        srv_time_format(ev[i].created_at, t, sizeof t);
        json_object_set_new(d, "created_at", json_string(t));
        json_array_append_new(epochs, d);
    }
    store_event_list_free(ev, n_ev);
    store_batch_metric *rows = NULL;
    size_t n = 0;
    int rc = store_batch_metrics_list(s, job.id, &rows, &n);
    if (rc != 0) {
        json_decref(epochs);
        store_job_fini(&job);
        srv_reply_problem(rep, req, srv_status_for_store(rc), "cannot read the metrics");
        return;
    }
    json_t *data = json_array();
    size_t per = n > (size_t)max_points ? (n + (size_t)max_points - 1) / (size_t)max_points : 1;
    for (size_t a = 0; a < n; a += per) {
        size_t b = a + per < n ? a + per : n;
        store_batch_metric m = rows[b - 1];
        if (per > 1) {
            m.loss = bucket_mean(rows, a, b, offsetof(store_batch_metric, loss));
            m.smooth_loss = bucket_mean(rows, a, b, offsetof(store_batch_metric, smooth_loss));
            m.lr = bucket_mean(rows, a, b, offsetof(store_batch_metric, lr));
            m.mom = bucket_mean(rows, a, b, offsetof(store_batch_metric, mom));
        }
        json_array_append_new(data, batch_row(&m));
    }
    free(rows);
    json_t *o = json_pack("{s:s, s:I, s:o, s:{s:I, s:I, s:o}}", "object", "job.metrics", "job_id",
                          (json_int_t)job.id, "epochs", epochs, "batches", "total", (json_int_t)n,
                          "bucket", (json_int_t)per, "data", data);
    store_job_fini(&job);
    srv_reply_json(rep, 200, o);
}

/* The value of suggestion `name` in an lr_find result object, or NaN. */
static double suggestion(const json_t *res, const char *name)
{
    json_t *v = json_object_get(json_object_get(res, "suggestions"), name);
    return json_is_number(v) ? json_number_value(v) : (double)NAN;
}

/* Fills used_by of each lr_find result: the later stages (up to the next lr_find) whose LR is a
 * suggestion, with the LR it resolved to (fastai: value / divide; with slice_divide a slice). */
static void add_used_lrs(json_t *results, const json_t *spec_stages)
{
    size_t n_res = json_array_size(results);
    for (size_t r = 0; r < n_res; r++) {
        json_t *res = json_array_get(results, r);
        json_t *used = json_object_get(res, "used_by");
        json_int_t from = json_integer_value(json_object_get(res, "stage"));
        for (size_t k = (size_t)from + 1; k < json_array_size(spec_stages); k++) {
            json_t *st = json_array_get(spec_stages, k);
            const char *op = json_string_value(json_object_get(st, "op"));
            if (op && strcmp(op, "lr_find") == 0)
                break;
            json_t *lr = json_object_get(st, "lr_max");
            if (!lr)
                lr = json_object_get(st, "lr");
            const char *sg = json_string_value(json_object_get(lr, "suggestion"));
            if (!sg)
                continue;
            double divide = json_number_value(json_object_get(lr, "divide"));
            double sd = json_number_value(json_object_get(lr, "slice_divide"));
            double v = suggestion(res, sg) / (divide > 0 ? divide : 1.0);
            json_t *u = json_pack("{s:i, s:s, s:s, s:o}", "stage", (int)k, "op", op ? op : "?",
                                  "suggestion", sg, "lr", num_or_null(v));
            if (sd > 0)
                json_object_set_new(u, "lr_slice",
                                    json_pack("[o, o]", num_or_null(v / sd), num_or_null(v)));
            json_array_append_new(used, u);
        }
    }
}

/* Every lr_find result of the job, oldest first (a stage re-run after a resume replaces its
 * earlier result). Returns a new array. */
static json_t *lr_find_results(const store_job *job, const store_event *ev, size_t n_ev)
{
    json_t *out = json_array();
    int stage = -1;
    for (size_t i = 0; i < n_ev; i++) {
        if (!ev[i].type || !ev[i].data_json)
            continue;
        json_t *d = json_loads(ev[i].data_json, 0, NULL);
        if (!d)
            continue;
        if (strcmp(ev[i].type, "stage") == 0) {
            const char *phase = json_string_value(json_object_get(d, "phase"));
            if (phase && strcmp(phase, "begin") == 0)
                stage = (int)json_integer_value(json_object_get(d, "index"));
        } else if (strcmp(ev[i].type, "lr_find") == 0) {
            json_t *pts = json_array();
            json_t *lrs = json_object_get(d, "lrs"), *losses = json_object_get(d, "losses");
            for (size_t k = 0; k < json_array_size(lrs); k++)
                json_array_append_new(pts, json_pack("{s:O, s:O}", "lr", json_array_get(lrs, k),
                                                     "loss", json_array_get(losses, k)));
            json_t *sug = json_object();
            static const char *const names[] = {"valley", "minimum", "steep", "slide"};
            for (size_t k = 0; k < 4; k++) {
                json_t *v = json_object_get(d, names[k]);
                json_object_set(sug, names[k], v ? v : json_null());
            }
            char t[32];
            srv_time_format(ev[i].created_at, t, sizeof t);
            json_t *reason = json_object_get(d, "reason");
            json_t *res = json_pack("{s:i, s:I, s:s, s:b, s:O, s:o, s:o, s:o}", "stage", stage,
                                    "event_id", (json_int_t)ev[i].id, "created_at", t, "ok",
                                    json_is_true(json_object_get(d, "ok")), "reason",
                                    reason ? reason : json_null(), "suggestions", sug, "points",
                                    pts, "used_by", json_array());
            /* a re-run of the same stage (resume) supersedes the earlier result */
            size_t last = json_array_size(out);
            if (last && json_integer_value(
                            json_object_get(json_array_get(out, last - 1), "stage")) == stage)
                json_array_remove(out, last - 1);
            json_array_append_new(out, res);
        }
        json_decref(d);
    }
    json_t *spec = job->spec_json ? json_loads(job->spec_json, 0, NULL) : NULL;
    add_used_lrs(out, json_object_get(spec, "stages"));
    json_decref(spec);
    return out;
}

void srv_handle_job_lr_find(srv_request *req, srv_reply *rep)
{
    store *s;
    store_job job;
    store_event *ev;
    size_t n_ev;
    if (!load(req, rep, &s, &job, &ev, &n_ev))
        return;
    json_t *res = lr_find_results(&job, ev, n_ev);
    store_event_list_free(ev, n_ev);
    json_t *o =
        json_pack("{s:s, s:I, s:o}", "object", "list", "job_id", (json_int_t)job.id, "data", res);
    store_job_fini(&job);
    srv_reply_json(rep, 200, o);
}

/* ---- SVG plot -------------------------------------------------------------------------------- */

typedef struct svgbuf {
    char *p;
    size_t len, cap;
    bool oom;
} svgbuf;

static void svg_add(svgbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void svg_add(svgbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 8192;
        while (n >= 0 && cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *q = n < 0 ? NULL : realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

#define W  640.0
#define H  400.0
#define ML 60.0
#define MR 20.0
#define MT 30.0
#define MB 50.0

/* Draws one lr_find result: loss against log10(lr), suggestions as dashed vertical lines,
 * the LR a later stage used as a solid one. */
static void plot(svgbuf *b, const json_t *res)
{
    json_t *pts = json_object_get(res, "points");
    double x0 = (double)INFINITY, x1 = -(double)INFINITY, y0 = (double)INFINITY,
           y1 = -(double)INFINITY;
    for (size_t i = 0; i < json_array_size(pts); i++) {
        json_t *p = json_array_get(pts, i);
        double lr = json_number_value(json_object_get(p, "lr"));
        json_t *lv = json_object_get(p, "loss");
        if (!(lr > 0) || !json_is_number(lv) || !isfinite(json_number_value(lv)))
            continue;
        double x = log10(lr), y = json_number_value(lv);
        x0 = fmin(x0, x);
        x1 = fmax(x1, x);
        y0 = fmin(y0, y);
        y1 = fmax(y1, y);
    }
    svg_add(b,
            "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
            "stroke=\"#888\"/>\n",
            ML, MT, W - ML - MR, H - MT - MB);
    svg_add(b,
            "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" font-size=\"13\">learning rate "
            "(log scale)</text>\n",
            (ML + W - MR) / 2, H - 12);
    svg_add(b,
            "<text x=\"14\" y=\"%.0f\" font-size=\"13\" transform=\"rotate(-90 14 %.0f)\" "
            "text-anchor=\"middle\">loss</text>\n",
            (MT + H - MB) / 2, (MT + H - MB) / 2);
    if (!(x1 > x0) || !(y1 >= y0)) {
        svg_add(b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">no points</text>\n", W / 2,
                H / 2);
        return;
    }
    if (y1 == y0)
        y1 = y0 + 1;
#define PX(x) (ML + ((x)-x0) / (x1 - x0) * (W - ML - MR))
#define PY(y) (H - MB - ((y)-y0) / (y1 - y0) * (H - MT - MB))
    for (int e = (int)ceil(x0); e <= (int)floor(x1); e++)
        svg_add(b,
                "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\" font-size=\"11\">1e%d</text>\n",
                PX(e), H - MB + 15, e);
    svg_add(b, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%.3g</text>\n",
            ML - 4, PY(y1) + 4, y1);
    svg_add(b, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%.3g</text>\n",
            ML - 4, PY(y0) + 4, y0);
    svg_add(b, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
    for (size_t i = 0; i < json_array_size(pts); i++) {
        json_t *p = json_array_get(pts, i);
        double lr = json_number_value(json_object_get(p, "lr"));
        json_t *lv = json_object_get(p, "loss");
        if (!(lr > 0) || !json_is_number(lv) || !isfinite(json_number_value(lv)))
            continue;
        svg_add(b, "%.1f,%.1f ", PX(log10(lr)), PY(json_number_value(lv)));
    }
    svg_add(b, "\"/>\n");
    static const char *const names[] = {"valley", "minimum", "steep", "slide"};
    static const char *const colors[] = {"#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
    for (size_t k = 0; k < 4; k++) {
        double v = suggestion(res, names[k]);
        if (!(v > 0) || log10(v) < x0 || log10(v) > x1)
            continue;
        svg_add(b,
                "<line class=\"suggestion\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" "
                "stroke=\"%s\" stroke-dasharray=\"4 3\"><title>%s %.3g</title></line>\n",
                PX(log10(v)), PX(log10(v)), MT, H - MB, colors[k], names[k], v);
        svg_add(b, "<text x=\"%.1f\" y=\"%.0f\" font-size=\"11\" fill=\"%s\">%s</text>\n",
                PX(log10(v)) + 3, MT + 12 + 12.0 * (double)k, colors[k], names[k]);
    }
    json_t *used = json_object_get(res, "used_by");
    for (size_t i = 0; i < json_array_size(used); i++) {
        double v = json_number_value(json_object_get(json_array_get(used, i), "lr"));
        if (!(v > 0) || log10(v) < x0 || log10(v) > x1)
            continue;
        svg_add(b,
                "<line class=\"used\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" "
                "stroke=\"#000\"><title>used by stage %d: %.3g</title></line>\n",
                PX(log10(v)), PX(log10(v)), MT, H - MB,
                (int)json_integer_value(json_object_get(json_array_get(used, i), "stage")), v);
    }
#undef PX
#undef PY
}

void srv_handle_job_lr_find_svg(srv_request *req, srv_reply *rep)
{
    store *s;
    store_job job;
    store_event *ev;
    size_t n_ev;
    const char *ix = req->query(req, "index");
    long index = 0;
    if (ix) {
        char *end;
        index = strtol(ix, &end, 10);
        if (!*ix || *end || index < 0 || index > 63) {
            json_t *p = srv_problem_new(422, "query parameter index must be an integer in 0..63",
                                        req->path);
            json_object_set_new(p, "errors",
                                json_pack("[{s:s, s:s}]", "parameter", "index", "detail",
                                          "must be an integer in 0..63"));
            srv_reply_problem_json(rep, 422, p);
            return;
        }
    }
    if (!load(req, rep, &s, &job, &ev, &n_ev))
        return;
    json_t *res = lr_find_results(&job, ev, n_ev);
    store_event_list_free(ev, n_ev);
    json_t *one = json_array_get(res, (size_t)index);
    if (!one) {
        char detail[128];
        snprintf(detail, sizeof detail, "job %lld has no lr_find result %ld (it has %zu)",
                 (long long)job.id, index, json_array_size(res));
        json_decref(res);
        store_job_fini(&job);
        srv_reply_problem(rep, req, 404, detail);
        return;
    }
    svgbuf b = {0};
    svg_add(&b,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n",
            W, H, W, H);
    svg_add(&b, "<title>lr_find of job %lld, stage %d</title>\n", (long long)job.id,
            (int)json_integer_value(json_object_get(one, "stage")));
    plot(&b, one);
    svg_add(&b, "</svg>\n");
    json_decref(res);
    store_job_fini(&job);
    if (b.oom) {
        free(b.p);
        srv_reply_problem(rep, req, 503, "out of memory");
        return;
    }
    rep->status = 200;
    rep->content_type = "image/svg+xml";
    rep->body = b.p;
    rep->body_len = b.len;
}

/* ---- model summary --------------------------------------------------------------------------- */

/* The per-sample input shape and class count the job's model is built for, from the data
 * spec the way the engine's loaders set them: synthetic (features), IDX images (1, 28, 28),
 * registered datasets from their stored info (shape C, H, W; CSV and other float data flat;
 * image folders resized by the spec). Returns false with a reason when it cannot tell. */
static bool input_of(store *s, const json_t *data, const eng_data_spec *d, size_t *ndim,
                     size_t shape[3], size_t *classes, char *why, size_t why_size)
{
    *classes = d->n_subset ? d->n_subset : 0;
    if (d->kind == ENG_DATA_SYNTHETIC) {
        *ndim = 1;
        shape[0] = d->features;
        *classes = d->n_subset ? d->n_subset : d->classes;
        return true;
    }
    if (d->kind == ENG_DATA_IDX) { /* Fashion-MNIST: 28 x 28 bytes, 10 classes */
        *ndim = 3;
        shape[0] = 1, shape[1] = 28, shape[2] = 28;
        if (!*classes)
            *classes = 10;
        return true;
    }
    json_t *ds = json_object_get(data, "dataset");
    store_dataset info;
    memset(&info, 0, sizeof info);
    if (!json_is_integer(ds) || store_dataset_get(s, json_integer_value(ds), NULL, &info) != 0) {
        snprintf(why, why_size, "the job's dataset is no longer registered");
        return false;
    }
    json_t *in = info.info_json ? json_loads(info.info_json, 0, NULL) : NULL;
    store_dataset_fini(&info);
    json_t *sh = json_object_get(in, "shape");
    size_t ch = (size_t)json_integer_value(json_array_get(sh, 0));
    size_t hh = (size_t)json_integer_value(json_array_get(sh, 1));
    size_t ww = (size_t)json_integer_value(json_array_get(sh, 2));
    if (!*classes)
        *classes = json_array_size(json_object_get(in, "classes"));
    json_decref(in);
    if (!ch || !hh || !ww || *classes < 2) {
        snprintf(why, why_size, "the dataset's stored info has no input shape");
        return false;
    }
    if (d->kind == ENG_DATA_IMAGES) {
        ch = d->image_c ? d->image_c : ch;
        hh = d->image_h ? d->image_h : hh;
        ww = d->image_w ? d->image_w : ww;
    }
    if (d->kind == ENG_DATA_CSV) {
        *ndim = 1;
        shape[0] = ch * hh * ww;
    } else {
        *ndim = 3;
        shape[0] = ch, shape[1] = hh, shape[2] = ww;
    }
    return true;
}

static json_t *shape_json(size_t batch, size_t ndim, const size_t *shape)
{
    json_t *a = json_array();
    json_array_append_new(a, json_integer((json_int_t)batch));
    for (size_t i = 0; i < ndim; i++)
        json_array_append_new(a, json_integer((json_int_t)shape[i]));
    return a;
}

/* The summary object: the same fields as `thawd summary --format json`, plus the text. */
static json_t *summary_to_json(const eng_summary *sm, int64_t job_id)
{
    json_t *rows = json_array(), *groups = json_array();
    for (size_t i = 0; i < sm->n_rows; i++) {
        const eng_summary_row *r = &sm->rows[i];
        json_array_append_new(
            rows,
            json_pack("{s:s, s:s, s:o, s:o, s:o, s:I}", "name", r->name, "type", r->type,
                      "output_shape", shape_json(sm->batch, r->out_ndim, r->out_shape), "params",
                      r->has_params ? json_integer((json_int_t)r->params) : json_null(),
                      "trainable", r->has_params ? json_boolean(r->trainable) : json_null(),
                      "group", (json_int_t)r->group));
    }
    for (size_t g = 0; g < sm->n_groups && g < ENG_MAX_GROUPS; g++)
        json_array_append_new(groups, json_pack("{s:s, s:s, s:I, s:b}", "first", sm->group_first[g],
                                                "last", sm->group_last[g], "params",
                                                (json_int_t)sm->group_params[g], "frozen",
                                                g < sm->frozen_idx));
    size_t need = eng_summary_text(sm, NULL, 0);
    char *text = malloc(need + 1);
    if (text)
        eng_summary_text(sm, text, need + 1);
    json_t *o =
        json_pack("{s:s, s:I, s:s, s:s, s:o, s:o, s:I, s:I, s:I, s:o, s:I, s:b, s:o}", "object",
                  "job.summary", "job_id", (json_int_t)job_id, "arch", sm->arch, "model_class",
                  sm->model_class, "input_shape", shape_json(sm->batch, sm->in_ndim, sm->in_shape),
                  "layers", rows, "total_params", (json_int_t)sm->total_params, "trainable_params",
                  (json_int_t)sm->trainable_params, "non_trainable_params",
                  (json_int_t)sm->non_trainable_params, "groups", groups, "frozen_idx",
                  (json_int_t)sm->frozen_idx, "train_bn", sm->train_bn, "text",
                  text ? json_string(text) : json_null());
    free(text);
    return o;
}

void srv_handle_job_summary(srv_request *req, srv_reply *rep)
{
    store *s;
    store_job job;
    if (!load(req, rep, &s, &job, NULL, NULL))
        return;
    srv_spec *spec = calloc(1, sizeof *spec);
    srv_spec_errors *errs = calloc(1, sizeof *errs);
    json_t *root = job.spec_json ? json_loads(job.spec_json, 0, NULL) : NULL;
    eng_net *net = NULL;
    eng_summary *sm = NULL;
    char why[160] = "";
    if (!spec || !errs || !root) {
        srv_reply_problem(rep, req, 503, "out of memory");
        goto done;
    }
    srv_spec_registry reg = srv_spec_registry_of(req->app);
    if (srv_spec_parse_reg(root, req->app->fmnist_dir, &reg, spec, errs) != 0) {
        snprintf(why, sizeof why, "the job's spec no longer validates: %.120s", errs->detail);
        srv_reply_problem(rep, req, 409, why);
        goto done;
    }
    size_t ndim = 0, shape[3] = {0, 0, 0}, classes = 0;
    if (!input_of(s, json_object_get(root, "data"), &spec->eng.data, &ndim, shape, &classes, why,
                  sizeof why)) {
        srv_reply_problem(rep, req, 409, why);
        goto done;
    }
    eng_error err;
    memset(&err, 0, sizeof err);
    eng_model_spec model = spec->eng.model;
    model.weights[0] = '\0'; /* shapes and counts only: no need to read any weights */
    int rc = eng_net_create(&model, ndim, shape, classes, spec->eng.seed, spec->eng.opt.train_bn,
                            &net, &err);
    if (rc != 0) {
        snprintf(why, sizeof why, "cannot build the model: %s%s%.100s", eng_strerror(rc),
                 err.text[0] ? ": " : "", err.text);
        srv_reply_problem(rep, req, srv_status_for_engine(rc) == 503 ? 503 : 409, why);
        goto done;
    }
    /* the freezing the stages leave behind, as fastai's summary shows it after training */
    for (size_t i = 0; i < spec->eng.n_stages; i++) {
        const eng_stage *st = &spec->eng.stages[i];
        if (st->op == ENG_STAGE_FREEZE)
            eng_net_freeze_to(net, -1);
        else if (st->op == ENG_STAGE_UNFREEZE)
            eng_net_freeze_to(net, 0);
        else if (st->op == ENG_STAGE_FREEZE_TO)
            eng_net_freeze_to(net, st->n);
    }
    rc = eng_net_summary(net, (size_t)spec->eng.batch_size, &sm, &err);
    if (rc != 0) {
        srv_reply_problem(rep, req, 503, "cannot describe the model");
        goto done;
    }
    srv_reply_json(rep, 200, summary_to_json(sm, job.id));
done:
    eng_summary_destroy(sm);
    eng_net_destroy(net);
    json_decref(root);
    srv_spec_fini(spec);
    free(spec);
    free(errs);
    store_job_fini(&job);
}
