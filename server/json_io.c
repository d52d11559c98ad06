/*
 * json_io.c: job spec parsing and validation, API object encoding, problem bodies and the
 * module-error -> HTTP status table.
 *
 * DESIGN: the spec parser walks the document once, in a fixed field order (optimizer before
 * stages, because a stage's default wd is the optimizer's). For each field it takes the given
 * value or the default, checks it, stores it in the eng_job_spec AND in a fresh "normalised"
 * JSON tree. Numbers are copied from the input as doubles, so the stored spec shows what the
 * user typed (0.001, not 0.0010000000474974513). Errors do not stop the walk: every problem
 * found is reported with its JSON pointer (RFC 6901), up to SRV_SPEC_MAX_ERRORS.
 * The default stage list (the seed workflow) is written as JSON and goes through the same
 * stage parser, so it cannot drift from what users may submit.
 */
#include "json_io.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "datasets.h"

#define UNBOUNDED ((long long)INT32_MAX)

typedef struct pctx {
    srv_spec_errors *errs;
    char ptr[256]; /* JSON pointer of the value being parsed */
    size_t len;
    double opt_wd; /* the optimizer's wd as typed: the default of each stage's wd */
    srv_dataset_resolve_fn resolve; /* registered datasets; NULL = none available */
    void *resolve_user;
    srv_model_resolve_fn resolve_model; /* registered models; NULL = weights are paths */
} pctx;

/* ---- pointer stack and errors ------------------------------------------------------------ */

static size_t push_key(pctx *c, const char *key)
{
    size_t old = c->len;
    if (c->len + 1 < sizeof c->ptr)
        c->ptr[c->len++] = '/';
    for (const char *p = key; *p && c->len + 2 < sizeof c->ptr; p++) {
        if (*p == '~' || *p == '/') { /* RFC 6901 escapes */
            c->ptr[c->len++] = '~';
            c->ptr[c->len++] = *p == '~' ? '0' : '1';
        } else {
            c->ptr[c->len++] = *p;
        }
    }
    c->ptr[c->len] = '\0';
    return old;
}

static size_t push_index(pctx *c, size_t i)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%zu", i);
    return push_key(c, buf);
}

static void pop(pctx *c, size_t old)
{
    c->len = old;
    c->ptr[old] = '\0';
}

__attribute__((format(printf, 2, 3))) static void fail(pctx *c, const char *fmt, ...)
{
    srv_spec_errors *e = c->errs;
    e->n_total++;
    if (e->n >= SRV_SPEC_MAX_ERRORS)
        return;
    srv_field_error *fe = &e->e[e->n++];
    snprintf(fe->pointer, sizeof fe->pointer, "%s", c->ptr);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fe->detail, sizeof fe->detail, fmt, ap);
    va_end(ap);
}

/* fail() about member `key` of the current object. */
__attribute__((format(printf, 3, 4))) static void fail_at(pctx *c, const char *key, const char *fmt,
                                                          ...)
{
    size_t old = push_key(c, key);
    char msg[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail(c, "%s", msg);
    pop(c, old);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

/* Reports every member of `obj` not in the NULL-terminated `allowed` list. */
static void check_keys(pctx *c, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, key) == 0)
                known = true;
        if (!known)
            fail_at(c, key, "unknown field");
    }
}

/* ---- typed fields ------------------------------------------------------------------------ */

static void int_range_text(char *buf, size_t size, long long lo, long long hi)
{
    if (hi >= UNBOUNDED)
        snprintf(buf, size, "must be an integer >= %lld", lo);
    else
        snprintf(buf, size, "must be an integer in %lld..%lld", lo, hi);
}

/* Integer member `key` in [lo, hi] (hi >= UNBOUNDED: no upper bound), default `def`.
 * Returns the value (the default on error) and records it in `norm`. */
static long long get_int(pctx *c, json_t *obj, json_t *norm, const char *key, long long lo,
                         long long hi, long long def, bool required)
{
    json_t *v = json_object_get(obj, key);
    long long out = def;
    char text[96];
    if (!v) {
        if (required)
            fail_at(c, key, "required field missing");
    } else if (!json_is_integer(v)) {
        int_range_text(text, sizeof text, lo, hi);
        fail_at(c, key, "%s, not %s", text, type_name(v));
    } else if (json_integer_value(v) < lo || json_integer_value(v) > hi) {
        int_range_text(text, sizeof text, lo, hi);
        fail_at(c, key, "%s", text);
    } else {
        out = json_integer_value(v);
    }
    json_object_set_new(norm, key, json_integer(out));
    return out;
}

typedef enum num_check {
    NUM_ANY,     /* any finite number */
    NUM_GE0,     /* x >= 0 */
    NUM_GT0,     /* x > 0 */
    NUM_UNIT_CO, /* 0 <= x < 1 */
    NUM_UNIT_OO, /* 0 < x < 1 */
} num_check;

static bool num_ok(double x, num_check k)
{
    if (!isfinite(x))
        return false;
    switch (k) {
    case NUM_ANY:
        return true;
    case NUM_GE0:
        return x >= 0;
    case NUM_GT0:
        return x > 0;
    case NUM_UNIT_CO:
        return x >= 0 && x < 1;
    case NUM_UNIT_OO:
        return x > 0 && x < 1;
    }
    return false;
}

static const char *num_text(num_check k)
{
    switch (k) {
    case NUM_ANY:
        return "must be a number";
    case NUM_GE0:
        return "must be a number >= 0";
    case NUM_GT0:
        return "must be a number > 0";
    case NUM_UNIT_CO:
        return "must be a number with 0 <= x < 1";
    case NUM_UNIT_OO:
        return "must be a number with 0 < x < 1";
    }
    return "must be a number";
}

static double get_num(pctx *c, json_t *obj, json_t *norm, const char *key, num_check k, double def)
{
    json_t *v = json_object_get(obj, key);
    double out = def;
    if (v) {
        if (!json_is_number(v))
            fail_at(c, key, "%s, not %s", num_text(k), type_name(v));
        else if (!num_ok(json_number_value(v), k))
            fail_at(c, key, "%s", num_text(k));
        else
            out = json_number_value(v);
    }
    json_object_set_new(norm, key, json_real(out));
    return out;
}

static bool get_bool(pctx *c, json_t *obj, json_t *norm, const char *key, bool def)
{
    json_t *v = json_object_get(obj, key);
    bool out = def;
    if (v) {
        if (!json_is_boolean(v))
            fail_at(c, key, "must be true or false, not %s", type_name(v));
        else
            out = json_is_true(v);
    }
    json_object_set_new(norm, key, json_boolean(out));
    return out;
}

/* Optional object member: returns it, or NULL when absent; reports a non-object. */
static json_t *get_obj(pctx *c, json_t *obj, const char *key, bool *bad)
{
    json_t *v = json_object_get(obj, key);
    *bad = false;
    if (v && !json_is_object(v)) {
        fail_at(c, key, "must be an object, not %s", type_name(v));
        *bad = true;
        return NULL;
    }
    return v;
}

/* ---- model -------------------------------------------------------------------------------- */

/* An optional array of at most ENG_MAX_HIDDEN integers 1..65536 at obj[key]; returns the
 * normalised array (the defaults v[0..*n) when absent). */
static json_t *get_sizes(pctx *c, json_t *obj, const char *key, uint32_t *v, uint32_t *n)
{
    json_t *a = json_object_get(obj, key);
    if (a) {
        if (!json_is_array(a) || json_array_size(a) > ENG_MAX_HIDDEN) {
            fail_at(c, key, "must be an array of at most %d integers", ENG_MAX_HIDDEN);
        } else {
            *n = (uint32_t)json_array_size(a);
            size_t old = push_key(c, key);
            for (size_t i = 0; i < *n; i++) {
                json_t *h = json_array_get(a, i);
                if (!json_is_integer(h) || json_integer_value(h) < 1 ||
                    json_integer_value(h) > 65536) {
                    size_t old2 = push_index(c, i);
                    fail(c, "must be an integer in 1..65536");
                    pop(c, old2);
                    v[i] = 1;
                } else {
                    v[i] = (uint32_t)json_integer_value(h);
                }
            }
            pop(c, old);
        }
    }
    json_t *out = json_array();
    for (uint32_t i = 0; i < *n; i++)
        json_array_append_new(out, json_integer(v[i]));
    return out;
}

/* "head": {"kind": "default"|"fastai"|"torchvision", "hidden": [...], "ps": x,
 * "concat_pool": bool} (fastai create_head options; engine.h eng_head_spec). */
static void parse_head(pctx *c, json_t *o, json_t *out, eng_model_spec *m)
{
    static const char *const keys[] = {"kind", "hidden", "ps", "concat_pool", NULL};
    static const char *const kinds[] = {"default", "fastai", "torchvision"};
    bool bad;
    json_t *h = get_obj(c, o, "head", &bad);
    json_t *empty = h ? NULL : json_object();
    json_t *hn = json_object();
    size_t old = push_key(c, "head");
    if (!h)
        h = empty;
    check_keys(c, h, keys);
    json_t *k = json_object_get(h, "kind");
    if (k) {
        bool known = false;
        for (int i = 0; i < 3 && json_is_string(k); i++)
            if (strcmp(json_string_value(k), kinds[i]) == 0) {
                m->head.kind = (eng_head_kind)i;
                known = true;
            }
        if (!known)
            fail_at(c, "kind", "must be \"default\", \"fastai\" or \"torchvision\"");
        else if (m->head.kind == ENG_HEAD_TORCHVISION && strncmp(m->arch, "resnet", 6) != 0)
            fail_at(c, "kind", "\"torchvision\" exists only for resnet18 and resnet34");
    }
    json_object_set_new(hn, "kind", json_string(kinds[m->head.kind]));
    json_object_set_new(hn, "hidden", get_sizes(c, h, "hidden", m->head.hidden, &m->head.n_hidden));
    m->head.ps = (float)get_num(c, h, hn, "ps", NUM_UNIT_CO, 0.5);
    m->head.concat_pool = get_bool(c, h, hn, "concat_pool", true);
    pop(c, old);
    json_decref(empty);
    if (!bad)
        json_object_set_new(out, "head", hn);
    else
        json_decref(hn);
}

/* "weights" in the daemon: a registered model's name or id (never a path). Returns true
 * with *ref filled and m->weights set to the model's file when it resolves and suits the
 * job's arch; otherwise records the error at /model/weights. */
static bool resolve_model(pctx *c, json_t *w, eng_model_spec *m, srv_model_ref *ref)
{
    memset(ref, 0, sizeof *ref);
    const char *name = json_string_value(w);
    if (json_is_string(w) && (strchr(name, '/') || strchr(name, '\\') || name[0] == '.' ||
                              name[0] == '~' || json_string_length(w) > 64)) {
        fail_at(c, "weights",
                "a file path is not accepted here: name a registered model (its name or id; "
                "upload one with POST /v1/models)");
        return false;
    }
    if (!(json_is_integer(w) && json_integer_value(w) > 0) &&
        !(json_is_string(w) && json_string_length(w) >= 1)) {
        fail_at(c, "weights", "must be a registered model's name or id, not %s", type_name(w));
        return false;
    }
    int rr = json_is_integer(w)
                 ? c->resolve_model(c->resolve_user, json_integer_value(w), NULL, ref)
                 : c->resolve_model(c->resolve_user, 0, name, ref);
    if (rr == -1) {
        if (json_is_integer(w))
            fail_at(c, "weights", "no model with id %lld", (long long)json_integer_value(w));
        else
            fail_at(c, "weights", "no model named '%.64s' (see GET /v1/models)", name);
        return false;
    }
    if (rr != 0) {
        fail_at(c, "weights", "the model registry could not be read");
        return false;
    }
    if (strcmp(ref->arch, m->arch) != 0) {
        fail_at(c, "weights", "model '%.64s' holds %s weights, the job's arch is %s", ref->name,
                ref->arch, m->arch);
        return false;
    }
    snprintf(m->weights, sizeof m->weights, "%s", ref->path);
    return true;
}

static void parse_model(pctx *c, json_t *root, json_t *norm, eng_model_spec *m)
{
    static const char *const keys[] = {"arch",    "hidden", "dropout",   "in_channels",
                                       "head",    "weights", "body_only", NULL};
    eng_model_spec_defaults(m);
    bool bad;
    json_t *o = get_obj(c, root, "model", &bad);
    json_t *out = json_object();
    json_t *empty = NULL;
    size_t old = push_key(c, "model");
    if (!o) {
        empty = json_object(); /* absent: the defaults, arch "mlp" */
        o = empty;
        json_object_set_new(o, "arch", json_string(m->arch));
    }
    check_keys(c, o, keys);

    json_t *arch = json_object_get(o, "arch");
    if (!arch) {
        fail_at(c, "arch", "required field missing");
    } else if (!json_is_string(arch)) {
        fail_at(c, "arch", "must be a string, not %s", type_name(arch));
    } else {
        const char *name = json_string_value(arch);
        bool known = false;
        char list[256] = "";
        for (size_t i = 0; i < eng_arch_count(); i++) {
            const char *a = eng_arch_name(i);
            if (!a)
                continue;
            if (strcmp(a, name) == 0)
                known = true;
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", a);
        }
        if (!known || strlen(name) >= sizeof m->arch)
            fail_at(c, "arch", "unknown architecture '%.40s' (known: %s)", name, list);
        else
            snprintf(m->arch, sizeof m->arch, "%s", name);
    }
    json_object_set_new(out, "arch", json_string(m->arch));

    json_object_set_new(out, "hidden", get_sizes(c, o, "hidden", m->hidden, &m->n_hidden));
    m->dropout = (float)get_num(c, o, out, "dropout", NUM_UNIT_CO, 0.0);
    /* vision architectures: input channels (0 = the data's), head, pretrained weights */
    m->in_channels = (uint32_t)get_int(c, o, out, "in_channels", 0, 4096, 0, false);
    parse_head(c, o, out, m);
    json_t *w = json_object_get(o, "weights");
    if (json_is_null(w)) /* the normalised form of "no weights" */
        w = NULL;
    srv_model_ref ref;
    bool have_ref = false;
    if (w && c->resolve_model) {
        have_ref = resolve_model(c, w, m, &ref);
        json_object_set_new(out, "weights", have_ref ? json_integer(ref.id) : json_null());
    } else {
        if (w && json_is_integer(w))
            fail_at(c, "weights", "registered models need the daemon (thawd serve); give a path");
        else if (w && (!json_is_string(w) || json_string_length(w) < 1 ||
                       json_string_length(w) >= sizeof m->weights))
            fail_at(c, "weights", "must be a path of 1..%zu characters (a safetensors file)",
                    sizeof m->weights - 1);
        else if (w)
            snprintf(m->weights, sizeof m->weights, "%s", json_string_value(w));
        json_object_set_new(out, "weights", m->weights[0] ? json_string(m->weights) : json_null());
    }
    m->body_only = get_bool(c, o, out, "body_only", false);
    if (m->body_only && !w)
        fail_at(c, "body_only", "needs \"weights\"");
    if (have_ref && ref.body_fit_only && !m->body_only)
        fail_at(c, "body_only", "model '%.64s' fits only the body of %s: set \"body_only\": true",
                ref.name, ref.arch);

    pop(c, old);
    json_decref(empty);
    if (!bad)
        json_object_set_new(norm, "model", out);
    else
        json_decref(out);
}

/* ---- registered datasets ("data": {"dataset": id or name, ...}) ------------------------- */

static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
static const float imagenet_std[3] = {0.229f, 0.224f, 0.225f};

/* Reads "mean"/"std" arrays of 1..4 numbers from info stats or a user object. */
static int float_array(json_t *a, float *v, size_t max)
{
    if (!json_is_array(a) || json_array_size(a) < 1 || json_array_size(a) > max)
        return -1;
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *x = json_array_get(a, i);
        if (!json_is_number(x) || !isfinite(json_number_value(x)))
            return -1;
        v[i] = (float)json_number_value(x);
    }
    return (int)json_array_size(a);
}

static void parse_registered(pctx *c, json_t *o, json_t *out, eng_data_spec *d)
{
    static const char *const keys[] = {"dataset",         "path",     "format",    "classes",
                                       "per_class_limit", "valid",    "normalize", "augment",
                                       "image_size",      "channels", NULL};
    check_keys(c, o, keys);
    json_t *ds = json_object_get(o, "dataset");
    json_t *lp = json_object_get(o, "path"), *lf = json_object_get(o, "format");
    srv_dataset_ref ref;
    memset(&ref, 0, sizeof ref);
    if (lp) {
        /* local data: `thawd run` only; the daemon never opens paths a request names */
        if (ds) {
            fail_at(c, "path", "give \"dataset\" or \"path\", not both");
            return;
        }
        if (c->resolve) {
            fail_at(c, "path",
                    "the daemon does not read local paths: register the data (POST "
                    "/v1/datasets or /v1/datasets/import) and name it with \"dataset\"");
            return;
        }
        if (!json_is_string(lp)) {
            fail_at(c, "path", "must be a directory path, not %s", type_name(lp));
            return;
        }
        if (!json_is_string(lf)) {
            fail_at(c, "format",
                    "is required with \"path\": idx, cifar10, cifar100, csv or images");
            return;
        }
        char msg[256];
        int rr = srv_dataset_inspect_path(json_string_value(lp), json_string_value(lf), &ref, msg,
                                          sizeof msg);
        if (rr) {
            fail_at(c, rr == -2 ? "format" : "path", "%s", msg);
            return;
        }
        json_object_set(out, "path", lp);
        json_object_set(out, "format", lf);
        goto resolved;
    }
    if (lf) {
        fail_at(c, "format", "only with \"path\" (a registered dataset knows its format)");
        return;
    }
    if (!json_is_integer(ds) && !json_is_string(ds)) {
        fail_at(c, "dataset", "must be a dataset id or name, not %s", type_name(ds));
        return;
    }
    if (!c->resolve) {
        fail_at(c, "dataset", "registered datasets need the daemon (thawd serve)");
        return;
    }
    int rr = json_is_integer(ds) ? c->resolve(c->resolve_user, json_integer_value(ds), NULL, &ref)
                                 : c->resolve(c->resolve_user, 0, json_string_value(ds), &ref);
    if (rr == -1) {
        fail_at(c, "dataset", "no such dataset");
        return;
    }
    if (rr == -3 || rr == -4) { /* chosen 422 over 409: the spec names an unusable dataset */
        char who[80];
        if (json_is_integer(ds))
            snprintf(who, sizeof who, "%lld", (long long)json_integer_value(ds));
        else
            snprintf(who, sizeof who, "'%.64s' (id %lld)", json_string_value(ds),
                     (long long)ref.id);
        if (rr == -3)
            fail_at(c, "dataset",
                    "dataset %s is still processing; submit the job once GET "
                    "/v1/datasets/%lld shows state \"ready\"",
                    who, (long long)ref.id);
        else
            fail_at(c, "dataset", "dataset %s failed processing (see GET /v1/datasets/%lld)", who,
                    (long long)ref.id);
        return;
    }
    if (rr != 0) {
        fail_at(c, "dataset", "the dataset registry could not be read");
        return;
    }
    /* The normalised spec names the dataset by id (the registry's delete check uses it). */
    json_object_set_new(out, "dataset", json_integer(ref.id));
resolved:
    d->kind = ref.kind;
    snprintf(d->dir, sizeof d->dir, "%s", ref.dir);
    json_t *classes_info = json_object_get(ref.info, "classes");
    size_t K = json_array_size(classes_info);
    json_t *shape = json_object_get(ref.info, "shape");
    long long C = json_integer_value(json_array_get(shape, 0));

    /* classes: ids or names of the dataset's classes */
    json_t *cl = json_object_get(o, "classes");
    if (cl && !json_is_null(cl)) { /* null (the normalised form of "all") = absent */
        size_t n = json_is_array(cl) ? json_array_size(cl) : 0;
        json_t *ca = json_array();
        if (n < 2 || n > K || n > ENG_MAX_CLASSES) {
            fail_at(c, "classes", "must be an array of 2..%zu distinct class ids or names", K);
        } else {
            size_t old2 = push_key(c, "classes");
            for (size_t i = 0; i < n; i++) {
                json_t *v = json_array_get(cl, i);
                long long id = -1;
                if (json_is_integer(v)) {
                    id = json_integer_value(v);
                } else if (json_is_string(v)) {
                    for (size_t k = 0; k < K; k++) {
                        json_t *ck = json_array_get(classes_info, k);
                        if (strcmp(json_string_value(json_object_get(ck, "name")),
                                   json_string_value(v)) == 0)
                            id = (long long)k;
                    }
                }
                size_t old3 = push_index(c, i);
                if (id < 0 || id >= (long long)K)
                    fail(c, "not a class of this dataset (ids 0..%zu or class names)", K - 1);
                for (size_t k = 0; k < i && id >= 0; k++)
                    if (d->subset[k] == (int32_t)id)
                        fail(c, "class %lld is listed twice", id);
                pop(c, old3);
                d->subset[i] = (int32_t)(id < 0 ? 0 : id);
                json_array_append_new(ca, json_integer(id));
            }
            pop(c, old2);
            d->n_subset = (uint32_t)n;
        }
        json_object_set_new(out, "classes", ca);
    } else {
        json_object_set_new(out, "classes", json_null());
    }
    d->per_class_limit = (uint32_t)get_int(c, o, out, "per_class_limit", 0, 100000000, 0, false);

    /* valid: {"split": "test"} (default) or {"pct": p, "seed": n} */
    bool bad;
    json_t *va = get_obj(c, o, "valid", &bad);
    json_t *vo = json_object();
    if (va && json_object_get(va, "pct")) {
        static const char *const vkeys[] = {"pct", "seed", NULL};
        size_t old2 = push_key(c, "valid");
        check_keys(c, va, vkeys);
        d->valid_pct = (float)get_num(c, va, vo, "pct", NUM_UNIT_OO, 0.2);
        d->valid_seed = (uint64_t)get_int(c, va, vo, "seed", 0, INT64_MAX, 0, false);
        pop(c, old2);
    } else {
        if (va) {
            static const char *const vkeys[] = {"split", NULL};
            size_t old2 = push_key(c, "valid");
            check_keys(c, va, vkeys);
            json_t *sp = json_object_get(va, "split");
            if (sp && !(json_is_string(sp) && strcmp(json_string_value(sp), "test") == 0))
                fail_at(c, "split", "must be \"test\" (or give {\"pct\": p, \"seed\": n})");
            pop(c, old2);
        }
        json_object_set_new(vo, "split", json_string("test"));
    }
    json_object_set_new(out, "valid", vo);

    /* normalize: "dataset" (default; stored statistics), "imagenet", "none", or
     * {"mean": [..], "std": [..]} (one value, or one per channel) */
    json_t *nz = json_object_get(o, "normalize");
    const char *nm = json_is_string(nz) ? json_string_value(nz) : NULL;
    d->normalize_auto = false;
    d->mean = 0.0f;
    d->std = 1.0f;
    if (!nz || (nm && strcmp(nm, "dataset") == 0)) {
        json_t *stats = json_object_get(ref.info, "stats");
        int nmn = float_array(json_object_get(stats, "mean"), d->norm_mean, 4);
        int nsd = float_array(json_object_get(stats, "std"), d->norm_std, 4);
        if (ref.kind == ENG_DATA_CSV) {
            d->normalize_auto = true; /* per-feature standardisation at load */
        } else if (nmn > 0 && nmn == nsd) {
            d->n_norm = (uint32_t)nmn;
        } else {
            d->normalize_auto = true;
        }
        json_object_set_new(out, "normalize", json_string("dataset"));
    } else if (nm && strcmp(nm, "imagenet") == 0) {
        if (C != 3)
            fail_at(c, "normalize",
                    "\"imagenet\" needs RGB images; this dataset has %lld channel(s)", C);
        d->n_norm = 3;
        memcpy(d->norm_mean, imagenet_mean, sizeof imagenet_mean);
        memcpy(d->norm_std, imagenet_std, sizeof imagenet_std);
        json_object_set_new(out, "normalize", json_string("imagenet"));
    } else if (nm && strcmp(nm, "none") == 0) {
        json_object_set_new(out, "normalize", json_string("none"));
    } else if (json_is_object(nz)) {
        static const char *const nkeys[] = {"mean", "std", NULL};
        size_t old2 = push_key(c, "normalize");
        check_keys(c, nz, nkeys);
        int a = float_array(json_object_get(nz, "mean"), d->norm_mean, 4);
        int b = float_array(json_object_get(nz, "std"), d->norm_std, 4);
        if (a < 0)
            fail_at(c, "mean", "must be an array of 1..4 numbers");
        if (b < 0)
            fail_at(c, "std", "must be an array of 1..4 numbers > 0");
        for (int i = 0; i < b; i++)
            if (!(d->norm_std[i] > 0.0f))
                fail_at(c, "std", "must be an array of 1..4 numbers > 0");
        if (a > 0 && b > 0 && a != b)
            fail(c, "mean and std need the same number of values");
        else if (a > 0 && a != 1 && a != C && ref.kind != ENG_DATA_CSV)
            fail(c, "give 1 value or one per channel (%lld)", C);
        d->n_norm = a > 0 && a == b ? (uint32_t)a : 0;
        pop(c, old2);
        json_object_set(out, "normalize", nz);
    } else {
        fail_at(c, "normalize",
                "must be \"dataset\", \"imagenet\", \"none\" or {\"mean\": [..], \"std\": [..]}");
    }
    if (ref.kind == ENG_DATA_CSV && d->n_norm > 1)
        fail_at(c, "normalize", "CSV features take one mean and std (or \"dataset\")");

    /* augment: {"flip": bool, "pad_crop": pixels} (training batches of images only) */
    json_t *au = get_obj(c, o, "augment", &bad);
    json_t *ao = json_object();
    {
        static const char *const akeys[] = {"flip", "pad_crop", NULL};
        json_t *empty_au = au ? NULL : json_object();
        size_t old2 = push_key(c, "augment");
        if (au)
            check_keys(c, au, akeys);
        d->aug_flip = get_bool(c, au ? au : empty_au, ao, "flip", false);
        d->aug_pad = (uint32_t)get_int(c, au ? au : empty_au, ao, "pad_crop", 0, 64, 0, false);
        pop(c, old2);
        json_decref(empty_au);
        if ((d->aug_flip || d->aug_pad) && ref.kind == ENG_DATA_CSV)
            fail_at(c, "augment", "augmentation applies to images, not CSV data");
    }
    json_object_set_new(out, "augment", ao);

    /* image_size: [H, W] (image folders; other formats have a fixed size) */
    json_t *is = json_object_get(o, "image_size");
    if (is) {
        if (ref.kind != ENG_DATA_IMAGES) {
            fail_at(c, "image_size", "only image folders can be resized");
        } else if (!json_is_array(is) || json_array_size(is) != 2 ||
                   !json_is_integer(json_array_get(is, 0)) ||
                   !json_is_integer(json_array_get(is, 1)) ||
                   json_integer_value(json_array_get(is, 0)) < 1 ||
                   json_integer_value(json_array_get(is, 0)) > 1024 ||
                   json_integer_value(json_array_get(is, 1)) < 1 ||
                   json_integer_value(json_array_get(is, 1)) > 1024) {
            fail_at(c, "image_size", "must be [H, W] with integers 1..1024");
        } else {
            d->image_h = (uint32_t)json_integer_value(json_array_get(is, 0));
            d->image_w = (uint32_t)json_integer_value(json_array_get(is, 1));
        }
    }
    if (ref.kind == ENG_DATA_IMAGES) {
        if (!d->image_h) {
            d->image_h = (uint32_t)json_integer_value(json_array_get(shape, 1));
            d->image_w = (uint32_t)json_integer_value(json_array_get(shape, 2));
        }
        d->image_c =
            (uint32_t)get_int(c, o, out, "channels", 1, 3, C >= 1 && C <= 3 ? C : 3, false);
        if (d->image_c == 2)
            fail_at(c, "channels", "must be 1 or 3");
        json_t *sz = json_array();
        json_array_append_new(sz, json_integer(d->image_h));
        json_array_append_new(sz, json_integer(d->image_w));
        json_object_set_new(out, "image_size", sz);
        /* dataset statistics were measured at the registered channel count */
        if (d->n_norm > 1 && d->n_norm != d->image_c)
            d->n_norm = 0, d->normalize_auto = true;
    } else if (json_object_get(o, "channels")) {
        fail_at(c, "channels", "only image folders can change channels");
    }
    json_decref(ref.info);
}

/* ---- data --------------------------------------------------------------------------------- */

static void parse_data(pctx *c, json_t *root, json_t *norm, eng_data_spec *d,
                       const char *fmnist_dir)
{
    eng_data_spec_defaults(d);
    bool bad;
    json_t *o = get_obj(c, root, "data", &bad);
    if (bad)
        return;
    json_t *empty = NULL;
    if (!o) {
        empty = json_object();
        o = empty;
    }
    size_t old = push_key(c, "data");
    json_t *out = json_object();
    if (json_object_get(o, "dataset") || json_object_get(o, "path")) {
        parse_registered(c, o, out, d);
        goto done;
    }
    const char *source = "synthetic";
    json_t *src = json_object_get(o, "source");
    if (src && !json_is_string(src)) {
        fail_at(c, "source", "must be \"synthetic\" or \"fashion-mnist\", not %s", type_name(src));
        goto done;
    }
    if (src)
        source = json_string_value(src);

    if (strcmp(source, "synthetic") == 0) {
        static const char *const keys[] = {"source",  "n_train", "n_valid", "features",
                                           "classes", "noise",   "seed",    NULL};
        check_keys(c, o, keys);
        json_object_set_new(out, "source", json_string("synthetic"));
        d->kind = ENG_DATA_SYNTHETIC;
        d->n_train = (uint32_t)get_int(c, o, out, "n_train", 1, 1000000, 512, false);
        d->n_valid = (uint32_t)get_int(c, o, out, "n_valid", 0, 1000000, 128, false);
        d->features = (uint32_t)get_int(c, o, out, "features", 1, 65536, 16, false);
        d->classes = (uint32_t)get_int(c, o, out, "classes", 2, ENG_MAX_CLASSES, 4, false);
        d->noise = (float)get_num(c, o, out, "noise", NUM_GE0, 1.0);
        d->seed = (uint64_t)get_int(c, o, out, "seed", 0, INT64_MAX, 0, false);
    } else if (strcmp(source, "fashion-mnist") == 0) {
        static const char *const keys[] = {"source", "classes", "per_class_limit", "normalize",
                                           NULL};
        check_keys(c, o, keys);
        json_object_set_new(out, "source", json_string("fashion-mnist"));
        d->kind = ENG_DATA_IDX;
        const char *dir = fmnist_dir ? fmnist_dir : SRV_FASHION_MNIST_DIR;
        static const char *const files[4] = {
            "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz"};
        char *dst[4] = {d->train_images, d->train_labels, d->valid_images, d->valid_labels};
        for (int i = 0; i < 4; i++) {
            snprintf(dst[i], ENG_PATH_MAX, "%s/%s", dir, files[i]);
            if (access(dst[i], R_OK) != 0) {
                fail_at(c, "source", "Fashion-MNIST is not installed: %.120s is missing", dst[i]);
                break;
            }
        }

        json_t *classes = json_object_get(o, "classes");
        json_t *ca = json_array();
        if (classes) {
            size_t n = json_is_array(classes) ? json_array_size(classes) : 0;
            if (n < 2 || n > 10) {
                fail_at(c, "classes", "must be an array of 2..10 distinct class ids 0..9");
            } else {
                bool seen[10] = {false};
                size_t old2 = push_key(c, "classes");
                for (size_t i = 0; i < n; i++) {
                    json_t *v = json_array_get(classes, i);
                    long long id = json_is_integer(v) ? json_integer_value(v) : -1;
                    size_t old3 = push_index(c, i);
                    if (id < 0 || id > 9)
                        fail(c, "must be a class id in 0..9");
                    else if (seen[id])
                        fail(c, "class %lld is listed twice", id);
                    else
                        seen[id] = true;
                    pop(c, old3);
                    d->subset[i] = (int32_t)(id < 0 || id > 9 ? 0 : id);
                    json_array_append_new(ca, json_integer(id));
                }
                pop(c, old2);
                d->n_subset = (uint32_t)n;
            }
        } else {
            for (int i = 0; i < 10; i++)
                json_array_append_new(ca, json_integer(i));
        }
        json_object_set_new(out, "classes", ca);
        d->per_class_limit = (uint32_t)get_int(c, o, out, "per_class_limit", 0, 60000, 0, false);

        json_t *nz = json_object_get(o, "normalize");
        d->normalize_auto = true;
        if (!nz || (json_is_string(nz) && strcmp(json_string_value(nz), "auto") == 0)) {
            json_object_set_new(out, "normalize", json_string("auto"));
        } else if (json_is_object(nz)) {
            static const char *const nkeys[] = {"mean", "std", NULL};
            size_t old2 = push_key(c, "normalize");
            check_keys(c, nz, nkeys);
            json_t *no = json_object();
            if (!json_object_get(nz, "mean"))
                fail_at(c, "mean", "required field missing");
            if (!json_object_get(nz, "std"))
                fail_at(c, "std", "required field missing");
            d->mean = (float)get_num(c, nz, no, "mean", NUM_ANY, 0.0);
            d->std = (float)get_num(c, nz, no, "std", NUM_GT0, 1.0);
            d->normalize_auto = false;
            pop(c, old2);
            json_object_set_new(out, "normalize", no);
        } else {
            fail_at(c, "normalize", "must be \"auto\" or {\"mean\": x, \"std\": y}");
        }
    } else {
        fail_at(c, "source", "unknown source '%.40s' (synthetic, fashion-mnist)", source);
    }
done:
    pop(c, old);
    json_decref(empty);
    json_object_set_new(norm, "data", out);
}

/* ---- optimizer ---------------------------------------------------------------------------- */

static void parse_optimizer(pctx *c, json_t *root, json_t *norm, eng_opt_spec *op)
{
    static const char *const keys[] = {"type", "mom", "sqr_mom", "eps", "wd", "train_bn", NULL};
    eng_opt_spec_defaults(op);
    bool bad;
    json_t *o = get_obj(c, root, "optimizer", &bad);
    if (bad)
        return;
    json_t *empty = NULL;
    if (!o) {
        empty = json_object();
        o = empty;
    }
    size_t old = push_key(c, "optimizer");
    check_keys(c, o, keys);
    json_t *out = json_object();
    json_t *t = json_object_get(o, "type");
    op->kind = ENG_OPT_ADAM;
    if (t) {
        if (json_is_string(t) && strcmp(json_string_value(t), "adam") == 0)
            op->kind = ENG_OPT_ADAM;
        else if (json_is_string(t) && strcmp(json_string_value(t), "sgd") == 0)
            op->kind = ENG_OPT_SGD;
        else
            fail_at(c, "type", "must be \"adam\" or \"sgd\"");
    }
    json_object_set_new(out, "type", json_string(op->kind == ENG_OPT_SGD ? "sgd" : "adam"));
    op->mom = (float)get_num(c, o, out, "mom", NUM_UNIT_CO, 0.9);
    op->sqr_mom = (float)get_num(c, o, out, "sqr_mom", NUM_UNIT_CO, 0.99);
    op->eps = (float)get_num(c, o, out, "eps", NUM_GT0, 1e-5);
    c->opt_wd = get_num(c, o, out, "wd", NUM_GE0, 0.01);
    op->wd = (float)c->opt_wd;
    op->train_bn = get_bool(c, o, out, "train_bn", true);
    pop(c, old);
    json_decref(empty);
    json_object_set_new(norm, "optimizer", out);
}

/* ---- learning rates ----------------------------------------------------------------------- */

static const char *const suggest_names[] = {"valley", "minimum", "steep", "slide"};

/* Parses an LR value at member `key` (default: the number `def`). `have_lr_find` says
 * whether an lr_find stage comes earlier in the job. */
static void parse_lr(pctx *c, json_t *obj, json_t *norm, const char *key, double def,
                     bool have_lr_find, eng_lr *lr)
{
    json_t *v = json_object_get(obj, key);
    memset(lr, 0, sizeof *lr);
    lr->kind = ENG_LR_VALUE;
    lr->n = 1;
    lr->v[0] = (float)def;
    lr->divide = 1;
    size_t old = push_key(c, key);
    json_t *out = NULL;
    static const char *const any =
        "must be a number > 0, {\"slice\": [lo, hi]}, {\"slice\": [hi]}, a list of per-group "
        "values or {\"suggestion\": ...}";

    if (!v) {
        out = json_real(def);
    } else if (json_is_number(v)) {
        if (!num_ok(json_number_value(v), NUM_GT0))
            fail(c, "must be a number > 0");
        else
            lr->v[0] = (float)json_number_value(v);
        out = json_real(json_number_value(v));
    } else if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (n < 1 || n > ENG_MAX_GROUPS) {
            fail(c, "a per-group LR list must have 1..%d values", ENG_MAX_GROUPS);
        } else {
            lr->kind = ENG_LR_LIST;
            lr->n = (uint32_t)n;
            for (size_t i = 0; i < n; i++) {
                json_t *x = json_array_get(v, i);
                if (!json_is_number(x) || !num_ok(json_number_value(x), NUM_GT0)) {
                    size_t o2 = push_index(c, i);
                    fail(c, "must be a number > 0");
                    pop(c, o2);
                } else {
                    lr->v[i] = (float)json_number_value(x);
                }
            }
        }
        out = json_deep_copy(v);
    } else if (json_is_object(v) && json_object_get(v, "slice")) {
        static const char *const keys[] = {"slice", NULL};
        check_keys(c, v, keys);
        json_t *s = json_object_get(v, "slice");
        size_t n = json_is_array(s) ? json_array_size(s) : 0;
        bool good = n == 1 || n == 2;
        for (size_t i = 0; good && i < n; i++) {
            json_t *x = json_array_get(s, i);
            good = json_is_number(x) && num_ok(json_number_value(x), NUM_GT0);
            if (good)
                lr->v[i] = (float)json_number_value(x);
        }
        if (!good) {
            fail_at(c, "slice", "must be [hi] or [lo, hi] with numbers > 0");
        } else if (n == 2 && json_number_value(json_array_get(s, 0)) >
                                 json_number_value(json_array_get(s, 1))) {
            fail_at(c, "slice", "lo must be <= hi");
        } else {
            lr->kind = n == 2 ? ENG_LR_SLICE : ENG_LR_SLICE_HI;
            lr->n = (uint32_t)n;
        }
        out = json_deep_copy(v);
    } else if (json_is_object(v) && json_object_get(v, "suggestion")) {
        static const char *const keys[] = {"suggestion", "divide", "slice_divide", NULL};
        check_keys(c, v, keys);
        lr->kind = ENG_LR_SUGGESTION;
        lr->n = 0;
        out = json_object();
        json_t *s = json_object_get(v, "suggestion");
        int which = -1;
        for (int i = 0; i < 4; i++)
            if (json_is_string(s) && strcmp(json_string_value(s), suggest_names[i]) == 0)
                which = i;
        if (which < 0)
            fail_at(c, "suggestion", "must be \"valley\", \"minimum\", \"steep\" or \"slide\"");
        else if (!have_lr_find)
            fail_at(c, "suggestion", "needs an lr_find stage earlier in the job");
        lr->suggest = which < 0 ? ENG_SUGGEST_VALLEY : (eng_suggest)which;
        json_object_set_new(out, "suggestion", json_string(suggest_names[lr->suggest]));
        lr->divide = (float)get_num(c, v, out, "divide", NUM_GT0, 1.0);
        lr->slice_lo_divide = (float)get_num(c, v, out, "slice_divide", NUM_GE0, 0.0);
    } else {
        fail(c, "%s", any);
    }
    pop(c, old);
    if (out)
        json_object_set_new(norm, key, out);
}

/* ---- metrics and callbacks ---------------------------------------------------------------- */

/* "metrics": ["accuracy" | "error_rate" | "top_k_accuracy" | {"name": "top_k_accuracy",
 * "k": n}, ...] (default ["accuracy"]): the recorder columns after valid_loss. */
static void parse_metrics(pctx *c, json_t *root, json_t *norm, eng_job_spec *j)
{
    static const char *const names[] = {"accuracy", "error_rate", "top_k_accuracy"};
    json_t *a = json_object_get(root, "metrics");
    json_t *out = json_array();
    size_t old = push_key(c, "metrics");
    if (!a) {
        json_array_append_new(out, json_string("accuracy"));
        goto done;
    }
    if (!json_is_array(a) || json_array_size(a) > ENG_MAX_METRICS) {
        fail(c, "must be an array of at most %d metrics", ENG_MAX_METRICS);
        goto done;
    }
    j->n_metrics = (uint32_t)json_array_size(a);
    for (size_t i = 0; i < j->n_metrics; i++) {
        json_t *v = json_array_get(a, i);
        size_t o2 = push_index(c, i);
        eng_metric *m = &j->metrics[i];
        const char *name = json_is_string(v) ? json_string_value(v) : NULL;
        m->k = 5;
        if (json_is_object(v)) {
            static const char *const keys[] = {"name", "k", NULL};
            check_keys(c, v, keys);
            name = json_string_value(json_object_get(v, "name"));
            json_t *tmp = json_object();
            m->k = (uint32_t)get_int(c, v, tmp, "k", 1, ENG_MAX_CLASSES, 5, false);
            json_decref(tmp);
        }
        int which = -1;
        for (int k = 0; k < 3; k++)
            if (name && strcmp(name, names[k]) == 0)
                which = k;
        if (which < 0) {
            fail(c, "must be \"accuracy\", \"error_rate\", \"top_k_accuracy\" or "
                    "{\"name\": \"top_k_accuracy\", \"k\": n}");
        } else if (which != 2 && json_is_object(v) && json_object_get(v, "k")) {
            fail(c, "only top_k_accuracy takes k");
        }
        m->kind = which == 1   ? ENG_METRIC_ERROR_RATE
                  : which == 2 ? ENG_METRIC_TOP_K
                               : ENG_METRIC_ACCURACY;
        if (m->kind == ENG_METRIC_TOP_K && m->k != 5)
            json_array_append_new(out, json_pack("{s:s, s:i}", "name", names[2], "k", (int)m->k));
        else
            json_array_append_new(out, json_string(names[which < 0 ? 0 : which]));
        pop(c, o2);
    }
done:
    pop(c, old);
    json_object_set_new(norm, "metrics", out);
}

/* A callback member: an object (on, with these options), true (on, fastai's defaults),
 * false or null or absent (off). Returns the object to read options from (an empty one
 * for true; the caller decrefs *tmp), or NULL when off or invalid. */
static json_t *callback_obj(pctx *c, json_t *cbs, const char *key, json_t **tmp)
{
    json_t *v = json_object_get(cbs, key);
    *tmp = NULL;
    if (!v || json_is_null(v) || json_is_false(v))
        return NULL;
    if (json_is_true(v)) {
        *tmp = json_object();
        return *tmp;
    }
    if (!json_is_object(v)) {
        fail_at(c, key, "must be an object, true or false, not %s", type_name(v));
        return NULL;
    }
    return v;
}

static void parse_tracker(pctx *c, json_t *cbs, json_t *out, const char *key, bool save,
                          eng_tracker_spec *t)
{
    json_t *tmp, *o = callback_obj(c, cbs, key, &tmp);
    if (!o) {
        json_object_set_new(out, key, json_null());
        return;
    }
    static const char *const es_keys[] = {"monitor", "comp", "min_delta", "patience", NULL};
    static const char *const sb_keys[] = {"monitor", "comp", "min_delta", "fname", NULL};
    size_t old = push_key(c, key);
    check_keys(c, o, save ? sb_keys : es_keys);
    json_t *n = json_object();
    t->enabled = true;
    json_t *mon = json_object_get(o, "monitor");
    if (mon && (!json_is_string(mon) || strlen(json_string_value(mon)) < 1 ||
                strlen(json_string_value(mon)) >= sizeof t->monitor))
        fail_at(c, "monitor",
                "must be the name of a recorder column (valid_loss, train_loss, "
                "or a metric of the job)");
    else if (mon)
        snprintf(t->monitor, sizeof t->monitor, "%s", json_string_value(mon));
    json_object_set_new(n, "monitor", json_string(t->monitor));
    json_t *comp = json_object_get(o, "comp");
    if (comp && !json_is_null(comp)) {
        const char *s = json_is_string(comp) ? json_string_value(comp) : "";
        if (strcmp(s, "less") == 0)
            t->comp = -1;
        else if (strcmp(s, "greater") == 0)
            t->comp = 1;
        else
            fail_at(c, "comp", "must be \"less\", \"greater\" or null (from the monitor's name)");
    }
    json_object_set_new(n, "comp",
                        t->comp ? json_string(t->comp < 0 ? "less" : "greater") : json_null());
    t->min_delta = (float)get_num(c, o, n, "min_delta", NUM_GE0, 0.0);
    if (!save) {
        t->patience = (uint32_t)get_int(c, o, n, "patience", 1, 100000, 1, false);
    } else {
        json_t *fn = json_object_get(o, "fname");
        if (fn && !json_is_string(fn))
            fail_at(c, "fname", "must be a file name (the engine checks its characters)");
        else if (fn && strlen(json_string_value(fn)) >= sizeof t->fname)
            fail_at(c, "fname", "must be 1..63 characters");
        else if (fn)
            snprintf(t->fname, sizeof t->fname, "%s", json_string_value(fn));
        json_object_set_new(n, "fname", json_string(t->fname));
    }
    pop(c, old);
    json_decref(tmp);
    json_object_set_new(out, key, n);
}

/* "callbacks": {"early_stopping", "save_best", "terminate_on_nan", "grad_clip"} with
 * fastai's defaults (reference/fastai-semantics.md section 10). */
static void parse_callbacks(pctx *c, json_t *root, json_t *norm, eng_train_callbacks *cb)
{
    static const char *const keys[] = {"early_stopping", "save_best", "terminate_on_nan",
                                       "grad_clip", NULL};
    eng_train_callbacks_defaults(cb);
    bool bad;
    json_t *o = get_obj(c, root, "callbacks", &bad);
    if (bad)
        return;
    json_t *empty = NULL;
    if (!o) {
        empty = json_object();
        o = empty;
    }
    size_t old = push_key(c, "callbacks");
    check_keys(c, o, keys);
    json_t *out = json_object();
    parse_tracker(c, o, out, "early_stopping", false, &cb->early_stopping);
    parse_tracker(c, o, out, "save_best", true, &cb->save_best);
    cb->terminate_on_nan = get_bool(c, o, out, "terminate_on_nan", true);
    json_t *tmp, *g = callback_obj(c, o, "grad_clip", &tmp);
    if (g) {
        static const char *const gkeys[] = {"max_norm", "norm_type", NULL};
        size_t o2 = push_key(c, "grad_clip");
        check_keys(c, g, gkeys);
        json_t *n = json_object();
        cb->grad_clip = true;
        cb->clip_max_norm = (float)get_num(c, g, n, "max_norm", NUM_GT0, 1.0);
        json_t *nt = json_object_get(g, "norm_type");
        if (json_is_string(nt) && strcmp(json_string_value(nt), "inf") == 0) {
            cb->clip_norm_type = INFINITY;
            json_object_set_new(n, "norm_type", json_string("inf"));
        } else if (nt && !json_is_number(nt)) {
            fail_at(c, "norm_type", "must be a number > 0 or \"inf\"");
            json_object_set_new(n, "norm_type", json_real(2.0));
        } else {
            cb->clip_norm_type = (float)get_num(c, g, n, "norm_type", NUM_GT0, 2.0);
        }
        pop(c, o2);
        json_object_set_new(out, "grad_clip", n);
    } else {
        json_object_set_new(out, "grad_clip", json_null());
    }
    json_decref(tmp);
    pop(c, old);
    json_decref(empty);
    json_object_set_new(norm, "callbacks", out);
}

/* A float for API JSON: finite values as numbers; NaN and infinities, which JSON cannot
 * hold, as the strings "NaN", "Infinity" and "-Infinity" (openapi.yaml: FloatOrNonFinite). */
json_t *srv_json_float(double x)
{
    if (isnan(x))
        return json_string("NaN");
    if (isinf(x))
        return json_string(x > 0 ? "Infinity" : "-Infinity");
    return json_real(x);
}

/* ---- stages ------------------------------------------------------------------------------- */

/* "moms": [3 numbers >= 0] (default fastai's (0.95, 0.85, 0.95)). */
static void parse_moms(pctx *c, json_t *o, json_t *out, float *dst)
{
    json_t *m = json_object_get(o, "moms");
    double moms[3] = {0.95, 0.85, 0.95};
    if (m) {
        bool good = json_is_array(m) && json_array_size(m) == 3;
        for (size_t i = 0; good && i < 3; i++) {
            json_t *x = json_array_get(m, i);
            good = json_is_number(x) && num_ok(json_number_value(x), NUM_GE0);
            if (good)
                moms[i] = json_number_value(x);
        }
        if (!good)
            fail_at(c, "moms", "must be an array of 3 numbers >= 0");
    }
    json_t *ma = json_array();
    for (int i = 0; i < 3; i++) {
        dst[i] = (float)moms[i];
        json_array_append_new(ma, json_real(moms[i]));
    }
    json_object_set_new(out, "moms", ma);
}

static void parse_stage(pctx *c, json_t *o, json_t *out, bool *have_lr_find, eng_stage *s)
{
    json_t *opv = json_object_get(o, "op");
    eng_stage_op op;
    if (!opv) {
        fail_at(c, "op", "required field missing");
        return;
    }
    if (!json_is_string(opv) || eng_stage_op_parse(json_string_value(opv), &op) != 0) {
        fail_at(c, "op",
                "unknown op (freeze, freeze_to, unfreeze, lr_find, fit_one_cycle, fit, "
                "fine_tune, save)");
        return;
    }
    eng_stage_defaults(s, op);
    json_object_set_new(out, "op", json_string(json_string_value(opv)));
    switch (op) {
    case ENG_STAGE_FREEZE:
    case ENG_STAGE_UNFREEZE: {
        static const char *const keys[] = {"op", NULL};
        check_keys(c, o, keys);
        break;
    }
    case ENG_STAGE_FREEZE_TO: {
        static const char *const keys[] = {"op", "n", NULL};
        check_keys(c, o, keys);
        s->n = (int32_t)get_int(c, o, out, "n", -1000, 1000, -1, true);
        break;
    }
    case ENG_STAGE_LR_FIND: {
        static const char *const keys[] = {"op", "start_lr", "end_lr", "num_it", "stop_div", NULL};
        check_keys(c, o, keys);
        double start = get_num(c, o, out, "start_lr", NUM_GT0, 1e-7);
        double end = get_num(c, o, out, "end_lr", NUM_GT0, 10.0);
        if (end <= start)
            fail_at(c, "end_lr", "must be greater than start_lr");
        s->start_lr = (float)start;
        s->end_lr = (float)end;
        s->num_it = (uint32_t)get_int(c, o, out, "num_it", 1, 100000, 100, false);
        s->stop_div = get_bool(c, o, out, "stop_div", true);
        *have_lr_find = true;
        break;
    }
    case ENG_STAGE_FIT_ONE_CYCLE: {
        static const char *const keys[] = {"op",        "epochs", "lr_max", "div", "div_final",
                                           "pct_start", "moms",   "wd",     NULL};
        check_keys(c, o, keys);
        s->epochs = (uint32_t)get_int(c, o, out, "epochs", 1, UNBOUNDED, 1, true);
        parse_lr(c, o, out, "lr_max", 1e-3, *have_lr_find, &s->lr);
        s->div = (float)get_num(c, o, out, "div", NUM_GT0, 25.0);
        s->div_final = (float)get_num(c, o, out, "div_final", NUM_GT0, 1e5);
        s->pct_start = (float)get_num(c, o, out, "pct_start", NUM_UNIT_OO, 0.25);
        parse_moms(c, o, out, s->moms);
        s->wd = (float)get_num(c, o, out, "wd", NUM_GE0, c->opt_wd);
        break;
    }
    case ENG_STAGE_FIT: {
        static const char *const keys[] = {"op", "epochs", "lr", "wd", NULL};
        check_keys(c, o, keys);
        s->epochs = (uint32_t)get_int(c, o, out, "epochs", 1, UNBOUNDED, 1, true);
        parse_lr(c, o, out, "lr", 1e-3, *have_lr_find, &s->lr);
        s->wd = (float)get_num(c, o, out, "wd", NUM_GE0, c->opt_wd);
        break;
    }
    case ENG_STAGE_FINE_TUNE: {
        /* fastai fine_tune(epochs, base_lr=2e-3, freeze_epochs=1, lr_mult=100,
         * pct_start=0.3, div=5.0, **kw) with kw = div_final, moms, wd */
        static const char *const keys[] = {"op",      "epochs",    "base_lr", "freeze_epochs",
                                           "lr_mult", "pct_start", "div",     "div_final",
                                           "moms",    "wd",        NULL};
        check_keys(c, o, keys);
        s->epochs = (uint32_t)get_int(c, o, out, "epochs", 1, UNBOUNDED, 1, true);
        parse_lr(c, o, out, "base_lr", 2e-3, *have_lr_find, &s->lr);
        if (s->lr.kind != ENG_LR_VALUE &&
            !(s->lr.kind == ENG_LR_SUGGESTION && s->lr.slice_lo_divide == 0.0f))
            fail_at(c, "base_lr",
                    "must be a number > 0 or a {\"suggestion\": ...} without slice_divide "
                    "(fine_tune makes the slices itself)");
        s->freeze_epochs = (uint32_t)get_int(c, o, out, "freeze_epochs", 1, UNBOUNDED, 1, false);
        s->lr_mult = (float)get_num(c, o, out, "lr_mult", NUM_GT0, 100.0);
        s->pct_start = (float)get_num(c, o, out, "pct_start", NUM_UNIT_OO, 0.3);
        s->div = (float)get_num(c, o, out, "div", NUM_GT0, 5.0);
        s->div_final = (float)get_num(c, o, out, "div_final", NUM_GT0, 1e5);
        parse_moms(c, o, out, s->moms);
        s->wd = (float)get_num(c, o, out, "wd", NUM_GE0, c->opt_wd);
        break;
    }
    case ENG_STAGE_SAVE: {
        static const char *const keys[] = {"op", "name", NULL};
        check_keys(c, o, keys);
        json_t *n = json_object_get(o, "name");
        const char *name = "model";
        if (n) {
            const char *t = json_is_string(n) ? json_string_value(n) : "";
            size_t len = strlen(t);
            bool good = len >= 1 && len <= 63 && t[0] != '.';
            for (size_t i = 0; good && i < len; i++) {
                char ch = t[i];
                good = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                       (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
            }
            if (!good)
                fail_at(c, "name",
                        "must be 1..63 characters of [A-Za-z0-9_.-], not starting "
                        "with '.'");
            else if (strcmp(t, "checkpoint") == 0)
                fail_at(c, "name", "\"checkpoint\" is reserved for the resumable checkpoint");
            else
                name = t;
        }
        snprintf(s->name, sizeof s->name, "%s", name);
        json_object_set_new(out, "name", json_string(s->name));
        break;
    }
    }
}

static const char default_stages_json[] =
    "[{\"op\":\"freeze\"},{\"op\":\"lr_find\"},"
    "{\"op\":\"fit_one_cycle\",\"epochs\":1,\"lr_max\":{\"suggestion\":\"valley\"}},"
    "{\"op\":\"unfreeze\"},{\"op\":\"lr_find\"},"
    "{\"op\":\"fit_one_cycle\",\"epochs\":1,"
    "\"lr_max\":{\"suggestion\":\"valley\",\"slice_divide\":10}},"
    "{\"op\":\"save\",\"name\":\"model\"}]";

static void parse_stages(pctx *c, json_t *root, json_t *norm, srv_spec *sp)
{
    json_t *arr = json_object_get(root, "stages");
    json_t *def = NULL;
    if (!arr) {
        def = json_loads(default_stages_json, 0, NULL);
        arr = def;
    }
    size_t old = push_key(c, "stages");
    json_t *out = json_array();
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    if (!json_is_array(arr) || n < 1 || n > SRV_SPEC_MAX_STAGES) {
        fail(c, "must be an array of 1..%d stage objects", SRV_SPEC_MAX_STAGES);
        n = 0;
    }
    bool have_lr_find = false;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        size_t o2 = push_index(c, i);
        json_t *so = json_object();
        if (!json_is_object(o))
            fail(c, "must be a stage object with an \"op\", not %s", type_name(o));
        else
            parse_stage(c, o, so, &have_lr_find, &sp->stages[i]);
        json_array_append_new(out, so);
        pop(c, o2);
    }
    sp->eng.n_stages = n;
    sp->eng.stages = sp->stages;
    pop(c, old);
    json_decref(def);
    json_object_set_new(norm, "stages", out);
}

/* "stages.2.epochs" (the engine's field path) -> "/stages/2/epochs". */
static void dotted_to_pointer(const char *field, char *buf, size_t size)
{
    size_t n = 0;
    if (!*field) {
        buf[0] = '\0';
        return;
    }
    buf[n++] = '/';
    for (const char *p = field; *p && n + 1 < size; p++)
        buf[n++] = *p == '.' ? '/' : *p;
    buf[n] = '\0';
}

int srv_spec_parse(json_t *root, const char *fmnist_dir, srv_spec *out, srv_spec_errors *errs)
{
    return srv_spec_parse_ex(root, fmnist_dir, NULL, NULL, out, errs);
}

int srv_spec_parse_ex(json_t *root, const char *fmnist_dir, srv_dataset_resolve_fn resolve,
                      void *resolve_user, srv_spec *out, srv_spec_errors *errs)
{
    srv_spec_registry reg = {.dataset = resolve, .model = NULL, .user = resolve_user};
    return srv_spec_parse_reg(root, fmnist_dir, &reg, out, errs);
}

int srv_spec_parse_reg(json_t *root, const char *fmnist_dir, const srv_spec_registry *reg,
                       srv_spec *out, srv_spec_errors *errs)
{
    memset(out, 0, sizeof *out);
    memset(errs, 0, sizeof *errs);
    pctx c = {.errs = errs,
              .opt_wd = 0.01,
              .resolve = reg ? reg->dataset : NULL,
              .resolve_user = reg ? reg->user : NULL,
              .resolve_model = reg ? reg->model : NULL};
    eng_job_spec_defaults(&out->eng);
    out->eng.stages = out->stages;

    if (!json_is_object(root)) {
        fail(&c, "a job spec must be a JSON object, not %s", type_name(root));
        goto fail;
    }
    static const char *const keys[] = {"name", "seed",   "batch_size", "model",     "optimizer",
                                       "data", "stages", "metrics",    "callbacks", NULL};
    check_keys(&c, root, keys);
    out->normalized = json_object();

    json_t *name = json_object_get(root, "name");
    if (name && !json_is_null(name)) {
        const char *t = json_is_string(name) ? json_string_value(name) : NULL;
        if (!t || strlen(t) < 1 || strlen(t) > 64) {
            fail_at(&c, "name", "must be a string of 1..64 bytes");
        } else {
            out->has_name = true;
            snprintf(out->name, sizeof out->name, "%s", t);
        }
    }
    json_object_set_new(out->normalized, "name",
                        out->has_name ? json_string(out->name) : json_null());
    out->eng.seed = (uint64_t)get_int(&c, root, out->normalized, "seed", 0, INT64_MAX, 0, false);
    out->eng.batch_size =
        (uint32_t)get_int(&c, root, out->normalized, "batch_size", 1, 4096, 64, false);
    parse_model(&c, root, out->normalized, &out->eng.model);
    parse_data(&c, root, out->normalized, &out->eng.data, fmnist_dir);
    parse_optimizer(&c, root, out->normalized, &out->eng.opt);
    parse_stages(&c, root, out->normalized, out);
    parse_metrics(&c, root, out->normalized, &out->eng);
    parse_callbacks(&c, root, out->normalized, &out->eng.callbacks);
    if (errs->n_total)
        goto fail;

    eng_error err = {{0}, {0}};
    if (eng_job_spec_validate(&out->eng, &err) != 0) {
        srv_field_error *fe = &errs->e[errs->n++];
        errs->n_total++;
        dotted_to_pointer(err.field, fe->pointer, sizeof fe->pointer);
        snprintf(fe->detail, sizeof fe->detail, "%s", err.text[0] ? err.text : "invalid");
        goto fail;
    }
    return 0;

fail:
    errs->status = 422;
    if (errs->n_total == 1)
        snprintf(errs->detail, sizeof errs->detail, "the job spec is invalid: %.200s%s%.200s",
                 errs->e[0].pointer, errs->e[0].pointer[0] ? ": " : "", errs->e[0].detail);
    else
        snprintf(errs->detail, sizeof errs->detail, "the job spec has %zu errors", errs->n_total);
    srv_spec_fini(out);
    return -1;
}

int srv_spec_parse_text(const char *text, size_t len, const char *fmnist_dir, srv_spec *out,
                        srv_spec_errors *errs)
{
    return srv_spec_parse_text_ex(text, len, fmnist_dir, NULL, NULL, out, errs);
}

int srv_spec_parse_text_ex(const char *text, size_t len, const char *fmnist_dir,
                           srv_dataset_resolve_fn resolve, void *resolve_user, srv_spec *out,
                           srv_spec_errors *errs)
{
    srv_spec_registry reg = {.dataset = resolve, .model = NULL, .user = resolve_user};
    return srv_spec_parse_text_reg(text, len, fmnist_dir, &reg, out, errs);
}

int srv_spec_parse_text_reg(const char *text, size_t len, const char *fmnist_dir,
                            const srv_spec_registry *reg, srv_spec *out, srv_spec_errors *errs)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        memset(out, 0, sizeof *out);
        memset(errs, 0, sizeof *errs);
        errs->status = 400;
        snprintf(errs->detail, sizeof errs->detail, "malformed JSON at line %d column %d: %s",
                 jerr.line, jerr.column, jerr.text);
        return -1;
    }
    int rc = srv_spec_parse_reg(root, fmnist_dir, reg, out, errs);
    json_decref(root);
    return rc;
}

void srv_spec_fini(srv_spec *s)
{
    if (!s)
        return;
    json_decref(s->normalized);
    memset(s, 0, sizeof *s);
}

char *srv_spec_dump(const srv_spec *s)
{
    return json_dumps(s->normalized, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
}

/* ---- API objects -------------------------------------------------------------------------- */

void srv_time_format(int64_t ms, char *buf, size_t size)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    char date[24]; /* "YYYY-MM-DDTHH:MM:SS"; strftime bounds it, unlike %d fields */
    if (!gmtime_r(&sec, &tm) || strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        snprintf(date, sizeof date, "1970-01-01T00:00:00");
    snprintf(buf, size, "%s.%03dZ", date, (int)(ms % 1000));
}

static json_t *time_or_null(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char buf[32];
    srv_time_format(ms, buf, sizeof buf);
    return json_string(buf);
}

static json_t *string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* Parses stored JSON text; null when absent or unparsable (never fails the response). */
static json_t *parse_or_null(const char *text)
{
    if (!text)
        return json_null();
    json_t *j = json_loads(text, 0, NULL);
    return j ? j : json_null();
}

json_t *srv_job_to_json(const store_job *j, int64_t queue_position)
{
    const store_progress *p = &j->progress;
    json_t *stage = json_null();
    if (p->stage_index >= 0 && p->stage_count > 0)
        stage = json_pack("{s:i, s:i, s:s}", "index", (int)p->stage_index, "count",
                          (int)p->stage_count, "op", p->stage_op);
    json_t *o = json_object();
    if (!o)
        return NULL;
    int rc = 0;
    rc |= json_object_set_new(o, "object", json_string("job"));
    rc |= json_object_set_new(o, "id", json_integer(j->id));
    rc |= json_object_set_new(o, "name", string_or_null(j->name));
    rc |= json_object_set_new(o, "state", string_or_null(store_job_state_name(j->state)));
    rc |= json_object_set_new(o, "created_at", time_or_null(j->created_at));
    rc |= json_object_set_new(o, "started_at", time_or_null(j->started_at));
    rc |= json_object_set_new(o, "finished_at", time_or_null(j->finished_at));
    rc |= json_object_set_new(o, "attempt", json_integer(j->attempt));
    rc |= json_object_set_new(o, "cancel_requested", json_boolean(j->cancel_requested));
    rc |= json_object_set_new(o, "queue_position",
                              queue_position >= 0 ? json_integer(queue_position) : json_null());
    rc |= json_object_set_new(o, "stage", stage ? stage : json_null());
    rc |= json_object_set_new(o, "epoch", json_integer(p->epoch));
    rc |= json_object_set_new(o, "epochs", json_integer(p->n_epochs));
    rc |= json_object_set_new(o, "batch", json_integer(p->batch));
    rc |= json_object_set_new(o, "batches", json_integer(p->n_batches));
    rc |= json_object_set_new(o, "step", json_integer(p->step));
    rc |= json_object_set_new(o, "progress", json_real(isfinite(p->fraction) ? p->fraction : 0));
    rc |= json_object_set_new(o, "metrics",
                              parse_or_null(j->metrics_json ? j->metrics_json : p->metrics_json));
    rc |= json_object_set_new(o, "error", string_or_null(j->error));
    rc |= json_object_set_new(o, "spec", parse_or_null(j->spec_json));
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *srv_event_to_json(const store_event *e)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int rc = 0;
    rc |= json_object_set_new(o, "id", json_integer(e->id));
    rc |= json_object_set_new(o, "created_at", time_or_null(e->created_at));
    rc |= json_object_set_new(o, "level", string_or_null(e->level));
    rc |= json_object_set_new(o, "type", string_or_null(e->type));
    rc |= json_object_set_new(o, "message", string_or_null(e->message));
    rc |= json_object_set_new(o, "data", parse_or_null(e->data_json));
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *srv_artifact_to_json(const store_artifact *a)
{
    char url[160];
    snprintf(url, sizeof url, "/v1/jobs/%lld/checkpoints/%s", (long long)a->job_id,
             a->name ? a->name : "");
    json_t *o = json_object();
    if (!o)
        return NULL;
    int rc = 0;
    rc |= json_object_set_new(o, "name", string_or_null(a->name));
    rc |= json_object_set_new(o, "kind", string_or_null(a->kind));
    rc |= json_object_set_new(o, "size", json_integer(a->size));
    rc |= json_object_set_new(o, "sha256", string_or_null(a->sha256));
    rc |= json_object_set_new(o, "created_at", time_or_null(a->created_at));
    rc |= json_object_set_new(o, "download_url", json_string(url));
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- statuses and problems ---------------------------------------------------------------- */

typedef struct status_row {
    unsigned status;
    const char *slug;
    const char *title;
} status_row;

static const status_row status_rows[] = {
    {400, "invalid-json", "Request body is not valid JSON"},
    {401, "unauthorized", "Authentication required"},
    {403, "forbidden", "Insufficient scope"},
    {404, "not-found", "Not found"},
    {405, "method-not-allowed", "Method not allowed"},
    {408, "request-timeout", "Request took too long"},
    {409, "conflict", "Conflict with the resource's state"},
    {413, "payload-too-large", "Request body too large"},
    {415, "unsupported-media-type", "Unsupported media type"},
    {416, "range-not-satisfiable", "Range not satisfiable"},
    {422, "validation-error", "Validation failed"},
    {500, "internal-error", "Internal server error"},
    {503, "unavailable", "Service unavailable"},
};

static const status_row *status_find(unsigned status)
{
    const status_row *fallback = NULL;
    for (size_t i = 0; i < sizeof status_rows / sizeof status_rows[0]; i++) {
        if (status_rows[i].status == status)
            return &status_rows[i];
        if (status_rows[i].status == 500)
            fallback = &status_rows[i]; /* internal-error */
    }
    return fallback;
}

const char *srv_problem_slug(unsigned status)
{
    return status_find(status)->slug;
}

const char *srv_problem_title(unsigned status)
{
    return status_find(status)->title;
}

/* The one table from module codes to HTTP statuses. */
typedef struct code_row {
    char module; /* 's' storage, 'e' engine */
    int code;
    unsigned status;
} code_row;

static const code_row code_rows[] = {
    {'s', STORE_OK, 200},         {'s', STORE_ENOMEM, 503},    {'s', STORE_EINVAL, 422},
    {'s', STORE_EIO, 500},        {'s', STORE_ENOTFOUND, 404}, {'s', STORE_ECONFLICT, 409},
    {'s', STORE_ELOST, 409},      {'s', STORE_EVERSION, 500},  {'e', ENG_OK, 200},
    {'e', ENG_ENOMEM, 503},       {'e', ENG_EINVAL, 422},      {'e', ENG_ESHAPE, 422},
    {'e', ENG_EIO, 500},          {'e', ENG_EFORMAT, 422},     {'e', ENG_ECANCELED, 409},
    {'e', ENG_EINTERRUPTED, 503}, {'e', ENG_ENUMERIC, 422},    {'e', ENG_ENOSUGGEST, 422},
};

static unsigned status_for(char module, int code)
{
    for (size_t i = 0; i < sizeof code_rows / sizeof code_rows[0]; i++)
        if (code_rows[i].module == module && code_rows[i].code == code)
            return code_rows[i].status;
    return 500;
}

unsigned srv_status_for_store(int code)
{
    return status_for('s', code);
}

unsigned srv_status_for_engine(int code)
{
    return status_for('e', code);
}

json_t *srv_problem_new(unsigned status, const char *detail, const char *instance)
{
    char type[96];
    snprintf(type, sizeof type, "urn:thawd:problem:%s", srv_problem_slug(status));
    json_t *o = json_object();
    if (!o)
        return NULL;
    int rc = 0;
    rc |= json_object_set_new(o, "type", json_string(type));
    rc |= json_object_set_new(o, "title", json_string(srv_problem_title(status)));
    rc |= json_object_set_new(o, "status", json_integer(status));
    if (detail)
        rc |= json_object_set_new(o, "detail", json_string(detail));
    if (instance)
        rc |= json_object_set_new(o, "instance", json_string(instance));
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *srv_problem_from_spec_errors(const srv_spec_errors *errs, const char *instance)
{
    unsigned status = errs->status == 400 ? 400 : 422;
    json_t *o = srv_problem_new(status, errs->detail, instance);
    if (!o || status == 400)
        return o;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < errs->n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s}", "pointer", errs->e[i].pointer, "detail",
                                             errs->e[i].detail));
    if (!arr || json_object_set_new(o, "errors", arr) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *srv_json_dump(const json_t *j, size_t *len)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    if (s && len)
        *len = strlen(s);
    return s;
}
