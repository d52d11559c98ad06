/*
 * cli_predict.c: `thawd predict` and `thawd summary`, thin CLI glue over engine.h's eng_net.
 *
 *   thawd predict (--arch A | --spec SPEC.json) --weights W.safetensors --input FILE
 *                 [--format text|json] [--probs] [--head default|fastai|torchvision]
 *                 [--hidden A,B] [--classes N] [--mean M[,M,M]] [--std S[,S,S]]
 * FILE is an IDX file: unsigned bytes (type 0x08) N x H x W or N x C x H x W, scaled to
 * [0, 1] then normalised per channel with --mean/--std (defaults 0 and 1: no
 * normalisation; use the model's training statistics, e.g. --mean 0.2860 --std 0.3530 for
 * Fashion-MNIST), or float32 (type 0x0D) N x C x H x W already normalised. The class count
 * comes from the weights unless --classes is given. Without --head a resnet tries the
 * fastai head, then torchvision's (a file exported by tools/torch_to_safetensors.py).
 * --hidden gives an mlp's hidden sizes. --spec takes the architecture, mlp sizes, head and
 * normalisation from a job spec (or a job object as GET /v1/jobs/{id} returns it, whose
 * "spec" is used); options on the command line win. A spec normalising with its dataset's
 * statistics ("dataset", "auto") does not hold them, so --mean/--std are then required.
 *
 *   thawd summary (--arch A | SPEC.json) [--in-shape CxHxW | F] [--classes N] [--head K]
 *                 [--hidden A,B] [--batch B] [--freeze N] [--no-train-bn] [--weights W]
 *                 [--format text|json]
 * prints the model as fastai's learn.summary() does (defaults: 1x28x28, 10 classes,
 * batch 64, unfrozen). With SPEC.json (a job spec as `thawd run` takes it) the model is the
 * spec's, built for its data's input shape and class count with its weights (--weights
 * replaces them), its batch size, and the freezing its stages leave behind.
 */
#include "cli_predict.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "engine.h"
#include "json_io.h"

typedef struct opts {
    const char *arch, *weights, *input, *format, *head, *in_shape, *hidden;
    const char *mean, *std;
    const char *spec; /* predict --spec, or summary's SPEC.json */
    long classes, batch, freeze;
    bool probs, freeze_set, no_train_bn, batch_set;
} opts;

static int usage(const char *cmd, const char *msg)
{
    fprintf(stderr, "thawd %s: %s (see thawd --help)\n", cmd, msg);
    return 2;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Parses the options shared by both commands; returns 0 or 2 (usage printed). summary takes
 * one positional argument, the spec file. */
static int parse_opts(const char *cmd, int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof(*o));
    o->format = "text";
    o->batch = 64;
    bool summary = strcmp(cmd, "summary") == 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "--probs") == 0) {
            o->probs = true;
            continue;
        }
        if (strcmp(a, "--no-train-bn") == 0) {
            o->no_train_bn = true;
            continue;
        }
        if (a[0] != '-') {
            if (!summary || o->spec)
                return usage(cmd, "unexpected argument");
            o->spec = a;
            continue;
        }
        if (i + 1 >= argc)
            return usage(cmd, "option needs a value");
        const char *v = argv[++i];
        if (strcmp(a, "--arch") == 0)
            dst = &o->arch;
        else if (strcmp(a, "--weights") == 0)
            dst = &o->weights;
        else if (strcmp(a, "--input") == 0)
            dst = &o->input;
        else if (strcmp(a, "--format") == 0)
            dst = &o->format;
        else if (strcmp(a, "--head") == 0)
            dst = &o->head;
        else if (strcmp(a, "--in-shape") == 0)
            dst = &o->in_shape;
        else if (strcmp(a, "--hidden") == 0)
            dst = &o->hidden;
        else if (strcmp(a, "--mean") == 0)
            dst = &o->mean;
        else if (strcmp(a, "--std") == 0)
            dst = &o->std;
        else if (!summary && strcmp(a, "--spec") == 0)
            dst = &o->spec;
        if (dst) {
            *dst = v;
            continue;
        }
        if (strcmp(a, "--classes") == 0) {
            if (!parse_long(v, 1, 1000, &o->classes))
                return usage(cmd, "--classes must be an integer 1..1000");
        } else if (strcmp(a, "--batch") == 0) {
            if (!parse_long(v, 1, 4096, &o->batch))
                return usage(cmd, "--batch must be an integer 1..4096");
            o->batch_set = true;
        } else if (strcmp(a, "--freeze") == 0) {
            if (!parse_long(v, -8, 8, &o->freeze))
                return usage(cmd, "--freeze must be an integer -8..8 (fastai freeze_to)");
            o->freeze_set = true;
        } else {
            fprintf(stderr, "thawd %s: unknown option %s\n", cmd, a);
            return 2;
        }
    }
    if (!o->arch && !o->spec)
        return usage(cmd, summary ? "give SPEC.json or --arch" : "--arch or --spec is required");
    if (summary && o->spec && (o->arch || o->head || o->hidden))
        return usage(cmd, "SPEC.json gives the model: drop --arch, --head and --hidden");
    if (strcmp(o->format, "text") != 0 && strcmp(o->format, "json") != 0)
        return usage(cmd, "--format must be text or json");
    return 0;
}

static int head_kind(const char *s, eng_head_kind *k)
{
    static const char *const names[] = {"default", "fastai", "torchvision"};
    for (int i = 0; i < 3; i++)
        if (strcmp(s, names[i]) == 0) {
            *k = (eng_head_kind)i;
            return 0;
        }
    return -1;
}

/* Applies --arch, --head, --hidden and --weights to *s, which holds the defaults or the
 * model of a spec; returns 0 or 2. */
static int make_spec(const char *cmd, const opts *o, eng_model_spec *s)
{
    if (o->arch) {
        if (strlen(o->arch) >= sizeof(s->arch))
            return usage(cmd, "--arch is too long");
        bool known = false;
        for (size_t i = 0; i < eng_arch_count(); i++)
            known |= strcmp(eng_arch_name(i), o->arch) == 0;
        if (!known)
            return usage(cmd, "unknown --arch (mlp, cnn-small, resnet18, resnet34)");
        if (o->spec && strcmp(s->arch, o->arch) != 0)
            return usage(cmd, "--arch differs from the spec's model.arch");
        snprintf(s->arch, sizeof(s->arch), "%s", o->arch);
    }
    if (o->head && head_kind(o->head, &s->head.kind) != 0)
        return usage(cmd, "--head must be default, fastai or torchvision");
    if (o->hidden) {
        if (strcmp(s->arch, "mlp") != 0)
            return usage(cmd, "--hidden gives an mlp's hidden sizes (--arch mlp)");
        uint32_t n = 0;
        const char *p = o->hidden;
        while (*p) {
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (errno || end == p || v < 1 || v > 65536 || n >= ENG_MAX_HIDDEN ||
                (*end && *end != ','))
                return usage(cmd, "--hidden must be 1 to 8 comma-separated sizes 1..65536");
            s->hidden[n++] = (uint32_t)v;
            p = *end ? end + 1 : end;
            if (*end && !*p)
                return usage(cmd, "--hidden must be 1 to 8 comma-separated sizes 1..65536");
        }
        if (n == 0)
            return usage(cmd, "--hidden must be 1 to 8 comma-separated sizes 1..65536");
        s->n_hidden = n;
    }
    if (o->weights) {
        if (strlen(o->weights) >= sizeof(s->weights))
            return usage(cmd, "--weights path too long");
        snprintf(s->weights, sizeof(s->weights), "%s", o->weights);
        s->body_only = false; /* a file given here is the whole model */
    }
    return 0;
}

/* Creates the net; without --head a resnet falls back to torchvision's head. */
static int open_net(const opts *o, eng_model_spec *s, size_t ndim, const size_t *shape,
                    size_t classes, uint64_t seed, bool train_bn, eng_net **net)
{
    eng_error err = {0}, err2 = {0};
    int rc = eng_net_create(s, ndim, shape, classes, seed, train_bn, net, &err);
    if (rc && !o->head && !o->spec && strncmp(s->arch, "resnet", 6) == 0 && s->weights[0]) {
        s->head.kind = ENG_HEAD_TORCHVISION;
        if (eng_net_create(s, ndim, shape, classes, seed, train_bn, net, &err2) == 0)
            return 0;
    }
    if (rc)
        fprintf(stderr, "thawd: %s%s%s\n", err.field[0] ? err.field : "", err.field[0] ? ": " : "",
                err.text[0] ? err.text : eng_strerror(rc));
    return rc ? 1 : 0;
}

/* ---- job specs ------------------------------------------------------------------------- */

/* Loads the JSON of a spec file; a job object (GET /v1/jobs/{id}) gives its "spec". Returns a
 * new reference, or NULL with the problem printed. */
static json_t *load_spec_json(const char *cmd, const char *path)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        fprintf(stderr, "thawd %s: %s: %s (line %d)\n", cmd, path, je.text, je.line);
        return NULL;
    }
    json_t *inner = json_object_get(root, "spec");
    const char *kind = json_string_value(json_object_get(root, "object"));
    if (kind && strcmp(kind, "job") == 0 && json_is_object(inner)) {
        json_incref(inner);
        json_decref(root);
        root = inner;
    }
    if (!json_is_object(root)) {
        fprintf(stderr, "thawd %s: %s: not a job spec (a JSON object)\n", cmd, path);
        json_decref(root);
        return NULL;
    }
    return root;
}

/* Validates `doc` with the daemon's spec parser (as `thawd run` does: "weights" is a local
 * path, registered datasets are refused). Returns 0 with *sp filled (free with srv_spec_fini)
 * or 2 with the errors printed. */
static int parse_spec(const char *cmd, const char *path, json_t *doc, srv_spec *sp)
{
    srv_spec_errors *errs = calloc(1, sizeof *errs);
    if (!errs) {
        fprintf(stderr, "thawd %s: out of memory\n", cmd);
        return 2;
    }
    int rc = 0;
    if (srv_spec_parse(doc, NULL, sp, errs) != 0) {
        if (errs->n == 0)
            fprintf(stderr, "%s: %s\n", path, errs->detail);
        for (size_t i = 0; i < errs->n; i++)
            fprintf(stderr, "%s: %s%s%s\n", path, errs->e[i].pointer,
                    errs->e[i].pointer[0] ? ": " : "", errs->e[i].detail);
        rc = 2;
    }
    free(errs);
    return rc;
}

/* How inputs are normalised: n = 0 none, else 1 or C values per channel. */
typedef struct norm {
    size_t n;
    float mean[4], std[4];
    bool need_stats; /* the spec normalises with its dataset's statistics */
} norm;

/* comma list of 1 to 4 floats into v; returns the count, or 0 when malformed */
static size_t float_list(const char *s, float *v)
{
    size_t n = 0;
    const char *p = s;
    while (*p && n < 4) {
        char *end;
        v[n++] = strtof(p, &end);
        if (end == p || (*end && *end != ','))
            return 0;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return 0;
    }
    return *p ? 0 : n;
}

/* A number or an array of 1..4 numbers (std: > 0); returns the count or 0. */
static size_t json_floats(const json_t *j, float *v, bool positive)
{
    size_t n = json_is_array(j) ? json_array_size(j) : 1;
    if (n < 1 || n > 4)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_is_array(j) ? json_array_get(j, i) : j;
        if (!json_is_number(x) || (positive && !(json_number_value(x) > 0)))
            return 0;
        v[i] = (float)json_number_value(x);
    }
    return n;
}

/* The normalisation of spec `root`'s data section (the engine's defaults: synthetic data none,
 * Fashion-MNIST "auto", registered datasets "dataset"). Returns 0 or 2 (printed). */
static int spec_norm(const char *path, const json_t *root, norm *nm)
{
    static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
    static const float imagenet_std[3] = {0.229f, 0.224f, 0.225f};
    memset(nm, 0, sizeof *nm);
    const json_t *data = json_object_get(root, "data");
    const char *source = json_string_value(json_object_get(data, "source"));
    const json_t *nz = json_object_get(data, "normalize");
    if (!data || (source && strcmp(source, "synthetic") == 0))
        return 0;
    const char *word = json_string_value(nz);
    if (!nz || (word && (strcmp(word, "auto") == 0 || strcmp(word, "dataset") == 0))) {
        nm->need_stats = true;
    } else if (word && strcmp(word, "none") == 0) {
        nm->n = 0;
    } else if (word && strcmp(word, "imagenet") == 0) {
        nm->n = 3;
        memcpy(nm->mean, imagenet_mean, sizeof imagenet_mean);
        memcpy(nm->std, imagenet_std, sizeof imagenet_std);
    } else {
        size_t nm_ = json_floats(json_object_get(nz, "mean"), nm->mean, false);
        size_t ns = json_floats(json_object_get(nz, "std"), nm->std, true);
        if (!json_is_object(nz) || !nm_ || nm_ != ns) {
            fprintf(stderr,
                    "%s: /data/normalize: must be \"none\", \"imagenet\", \"dataset\", \"auto\" "
                    "or {\"mean\": ..., \"std\": ...} with as many values each\n",
                    path);
            return 2;
        }
        nm->n = nm_;
    }
    return 0;
}

/* The model (validated without its weights: --weights names the file) and normalisation of
 * predict's --spec. Returns 0, or 2 with the problem printed. */
static int predict_spec(const char *path, eng_model_spec *s, norm *nm)
{
    json_t *root = load_spec_json("predict", path);
    if (!root)
        return 2;
    json_t *model = json_object_get(root, "model");
    json_t *doc = NULL;
    srv_spec *sp = calloc(1, sizeof *sp);
    int rc = 2;
    if (!sp) {
        fprintf(stderr, "thawd predict: out of memory\n");
        goto out;
    }
    if (!json_is_object(model)) {
        fprintf(stderr, "%s: /model: required (an object with \"arch\")\n", path);
        goto out;
    }
    doc = json_object();
    json_t *m = json_deep_copy(model);
    if (!doc || !m || json_object_set_new(doc, "model", m) != 0) {
        fprintf(stderr, "thawd predict: out of memory\n");
        goto out;
    }
    json_object_del(m, "weights");
    json_object_del(m, "body_only");
    if ((rc = parse_spec("predict", path, doc, sp)) != 0)
        goto out;
    *s = sp->eng.model;
    rc = spec_norm(path, root, nm);
out:
    if (sp)
        srv_spec_fini(sp);
    free(sp);
    json_decref(doc);
    json_decref(root);
    return rc;
}

/* ---- IDX input ------------------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads FILE into x [N x C*H*W], bytes normalised with nm; returns 0 or 1 (message printed),
 * 2 when nm does not fit the channels. */
static int read_idx(const opts *o, const norm *nm, float **x, size_t *N, size_t shape[3])
{
    FILE *f = fopen(o->input, "rb");
    unsigned char *buf = NULL;
    long len = -1;
    if (f && fseek(f, 0, SEEK_END) == 0)
        len = ftell(f);
    if (!f || len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "thawd predict: cannot read %s: %s\n", o->input, strerror(errno));
        if (f)
            fclose(f);
        return 1;
    }
    buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "thawd predict: cannot read %s\n", o->input);
        fclose(f);
        free(buf);
        return 1;
    }
    fclose(f);
    int rc = 1;
    const char *why = NULL;
    unsigned type = len >= 4 ? buf[2] : 0, nd = len >= 4 ? buf[3] : 0;
    size_t esz = type == 0x08 ? 1 : 4, dims[4] = {0}, count = 1;
    if (len < 4 || buf[0] || buf[1] || (type != 0x08 && type != 0x0D))
        why = "not an IDX file of unsigned bytes (0x08) or float32 (0x0D)";
    else if (nd != 3 && nd != 4)
        why = "expected N x H x W or N x C x H x W";
    else if ((size_t)len < 4 + 4 * (size_t)nd)
        why = "truncated header";
    if (!why) {
        for (unsigned i = 0; i < nd; i++) {
            dims[i] = be32(buf + 4 + 4 * i);
            if (dims[i] == 0 || dims[i] > (1u << 24) || count > SIZE_MAX / 4 / dims[i])
                why = "a dimension is 0 or too large";
            else
                count *= dims[i];
        }
    }
    if (!why && (size_t)len != 4 + 4 * (size_t)nd + count * esz)
        why = "the file size does not match its dimensions";
    if (why) {
        fprintf(stderr, "thawd predict: %s: %s\n", o->input, why);
        goto out;
    }
    *N = dims[0];
    shape[0] = nd == 4 ? dims[1] : 1;
    shape[1] = dims[nd - 2];
    shape[2] = dims[nd - 1];
    if (type == 0x08 && nm->n > 1 && nm->n != shape[0]) {
        fprintf(stderr, "thawd predict: %zu normalisation values for %zu channels\n", nm->n,
                shape[0]);
        rc = 2;
        goto out;
    }
    *x = malloc(count * sizeof(float));
    if (!*x) {
        fprintf(stderr, "thawd predict: out of memory\n");
        goto out;
    }
    const unsigned char *d = buf + 4 + 4 * nd;
    size_t plane = shape[1] * shape[2];
    for (size_t i = 0; i < count; i++) {
        if (type == 0x08) {
            size_t c = nm->n > 1 ? (i / plane) % shape[0] : 0;
            float v = (float)d[i] / 255.0f;
            (*x)[i] = nm->n ? (v - nm->mean[c]) / nm->std[c] : v;
        } else {
            uint32_t u = be32(d + 4 * i);
            memcpy(&(*x)[i], &u, 4);
        }
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

int srv_cli_predict(int argc, char **argv)
{
    opts o;
    eng_model_spec s;
    int rc = parse_opts("predict", argc, argv, &o);
    if (rc)
        return rc;
    if (!o.weights || !o.input)
        return usage("predict", "--weights and --input are required");
    norm nm = {0};
    eng_model_spec_defaults(&s);
    if (o.spec && (rc = predict_spec(o.spec, &s, &nm)))
        return rc;
    if ((rc = make_spec("predict", &o, &s)))
        return rc;
    /* --mean/--std win over the spec's normalisation */
    if (o.mean || o.std) {
        float m[4], d[4];
        size_t n_m = o.mean ? float_list(o.mean, m) : 1, n_d = o.std ? float_list(o.std, d) : 1;
        if (!o.mean)
            m[0] = 0.0f;
        if (!o.std)
            d[0] = 1.0f;
        bool pos = n_d > 0;
        for (size_t i = 0; i < n_d; i++)
            pos &= d[i] > 0;
        if (!n_m || !pos || (n_m != n_d && n_m != 1 && n_d != 1))
            return usage("predict", "--mean/--std must be 1 or C numbers, comma-separated "
                                    "(std > 0)");
        nm.n = n_m > n_d ? n_m : n_d;
        for (size_t i = 0; i < nm.n; i++) {
            nm.mean[i] = m[n_m == 1 ? 0 : i];
            nm.std[i] = d[n_d == 1 ? 0 : i];
        }
        nm.need_stats = false;
    }
    if (nm.need_stats)
        return usage("predict", "the spec normalises with its dataset's statistics, which it "
                                "does not hold: give them with --mean and --std (the dataset's "
                                "\"stats\" in GET /v1/datasets/{id})");
    float *x = NULL, *y = NULL;
    size_t N = 0, shape[3];
    eng_net *net = NULL;
    if ((rc = read_idx(&o, &nm, &x, &N, shape)))
        return rc;
    bool flat = strcmp(s.arch, "mlp") == 0;
    size_t flat_shape[1] = {shape[0] * shape[1] * shape[2]};
    rc = open_net(&o, &s, flat ? 1 : 3, flat ? flat_shape : shape, (size_t)o.classes, 0,
                  !o.no_train_bn, &net);
    if (rc)
        goto out;
    size_t C = eng_net_n_classes(net);
    y = malloc(N * C * sizeof(float));
    eng_error err = {0};
    if (!y || eng_net_predict(net, x, N, y, &err) != 0) {
        fprintf(stderr, "thawd predict: out of memory\n");
        rc = 1;
        goto out;
    }
    if (o.probs)
        eng_softmax_rows(y, N, C);
    if (strcmp(o.format, "json") == 0) {
        json_t *root = json_object(), *outs = json_array(), *am = json_array();
        for (size_t n = 0; n < N; n++) {
            json_t *row = json_array();
            size_t best = 0;
            for (size_t c = 0; c < C; c++) {
                json_array_append_new(row, json_real((double)y[n * C + c]));
                best = y[n * C + c] > y[n * C + best] ? c : best;
            }
            json_array_append_new(outs, row);
            json_array_append_new(am, json_integer((json_int_t)best));
        }
        json_object_set_new(root, "arch", json_string(s.arch));
        json_object_set_new(root, "n", json_integer((json_int_t)N));
        json_object_set_new(root, "classes", json_integer((json_int_t)C));
        json_object_set_new(root, "kind", json_string(o.probs ? "probabilities" : "logits"));
        json_object_set_new(root, "argmax", am);
        json_object_set_new(root, "outputs", outs);
        char *txt = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
        json_decref(root);
        if (!txt) {
            rc = 1;
            goto out;
        }
        puts(txt);
        free(txt);
    } else {
        for (size_t n = 0; n < N; n++) {
            size_t best = 0;
            for (size_t c = 1; c < C; c++)
                best = y[n * C + c] > y[n * C + best] ? c : best;
            printf("%zu\t%zu\t", n, best);
            for (size_t c = 0; c < C; c++)
                printf("%s%.9g", c ? " " : "", (double)y[n * C + c]);
            printf("\n");
        }
    }
    rc = 0;
out:
    eng_net_destroy(net);
    free(x);
    free(y);
    return rc;
}

static json_t *shape_json(size_t batch, size_t ndim, const size_t *shape)
{
    json_t *a = json_array();
    json_array_append_new(a, json_integer((json_int_t)batch));
    for (size_t d = 0; d < ndim; d++)
        json_array_append_new(a, json_integer((json_int_t)shape[d]));
    return a;
}

/* The summary as JSON (the server owns the encoding; the engine only fills a struct). */
static json_t *summary_json(const eng_summary *sm)
{
    json_t *root = json_object(), *rows = json_array(), *groups = json_array();
    json_object_set_new(root, "arch", json_string(sm->arch));
    json_object_set_new(root, "model_class", json_string(sm->model_class));
    json_object_set_new(root, "input_shape", shape_json(sm->batch, sm->in_ndim, sm->in_shape));
    for (size_t i = 0; i < sm->n_rows; i++) {
        const eng_summary_row *r = &sm->rows[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(r->name));
        json_object_set_new(o, "type", json_string(r->type));
        json_object_set_new(o, "output_shape", shape_json(sm->batch, r->out_ndim, r->out_shape));
        json_object_set_new(o, "params",
                            r->has_params ? json_integer((json_int_t)r->params) : json_null());
        json_object_set_new(o, "trainable",
                            r->has_params ? json_boolean(r->trainable) : json_null());
        json_object_set_new(o, "group", json_integer((json_int_t)r->group));
        json_array_append_new(rows, o);
    }
    json_object_set_new(root, "layers", rows);
    json_object_set_new(root, "total_params", json_integer((json_int_t)sm->total_params));
    json_object_set_new(root, "trainable_params", json_integer((json_int_t)sm->trainable_params));
    json_object_set_new(root, "non_trainable_params",
                        json_integer((json_int_t)sm->non_trainable_params));
    for (size_t g = 0; g < sm->n_groups && g < ENG_MAX_GROUPS; g++) {
        json_t *o = json_object();
        json_object_set_new(o, "first", json_string(sm->group_first[g]));
        json_object_set_new(o, "last", json_string(sm->group_last[g]));
        json_object_set_new(o, "params", json_integer((json_int_t)sm->group_params[g]));
        json_object_set_new(o, "frozen", json_boolean(g < sm->frozen_idx));
        json_array_append_new(groups, o);
    }
    json_object_set_new(root, "groups", groups);
    json_object_set_new(root, "frozen_idx", json_integer((json_int_t)sm->frozen_idx));
    json_object_set_new(root, "train_bn", json_boolean(sm->train_bn));
    return root;
}

/* The per-sample input shape and class count of a `thawd run` spec's data, as the engine's
 * loaders set them (the daemon's job summary does the same for registered datasets): local
 * data directories are read with eng_dataset_inspect. Returns 0, or 1 with the problem
 * printed. */
static int spec_input(const eng_data_spec *d, size_t *ndim, size_t shape[3], size_t *classes)
{
    if (d->kind == ENG_DATA_SYNTHETIC) {
        *ndim = 1;
        shape[0] = d->features;
        *classes = d->n_subset ? d->n_subset : d->classes;
        return 0;
    }
    if (d->kind == ENG_DATA_IDX) { /* Fashion-MNIST: 28 x 28 bytes, 10 classes */
        *ndim = 3;
        shape[0] = 1, shape[1] = 28, shape[2] = 28;
        *classes = d->n_subset ? d->n_subset : 10;
        return 0;
    }
    eng_dataset_info *info = NULL;
    eng_error err = {0};
    int rc = eng_dataset_inspect(d, &info, &err);
    if (rc) {
        fprintf(stderr, "thawd summary: %s: %s\n", d->dir,
                err.text[0] ? err.text : eng_strerror(rc));
        return 1;
    }
    size_t C = info->shape[0], H = info->shape[1], W = info->shape[2];
    if (d->kind == ENG_DATA_IMAGES) {
        C = d->image_c ? d->image_c : C;
        H = d->image_h ? d->image_h : H;
        W = d->image_w ? d->image_w : W;
    }
    if (d->kind == ENG_DATA_CSV) {
        *ndim = 1;
        shape[0] = C * H * W;
    } else {
        *ndim = 3;
        shape[0] = C, shape[1] = H, shape[2] = W;
    }
    *classes = d->n_subset ? d->n_subset : info->n_classes;
    eng_dataset_info_destroy(info);
    return 0;
}

int srv_cli_summary(int argc, char **argv)
{
    opts o;
    eng_model_spec s;
    int rc = parse_opts("summary", argc, argv, &o);
    if (rc)
        return rc;
    srv_spec *sp = NULL;
    eng_net *net = NULL;
    size_t shape[3] = {1, 28, 28}, ndim = 3, classes = o.weights ? 0 : 10;
    long batch = o.batch;
    bool train_bn = !o.no_train_bn;
    uint64_t seed = 0;
    eng_model_spec_defaults(&s);
    if (o.spec) {
        json_t *root = load_spec_json("summary", o.spec);
        sp = root ? calloc(1, sizeof *sp) : NULL;
        rc = sp ? parse_spec("summary", o.spec, root, sp) : 2;
        json_decref(root);
        if (rc)
            goto out;
        s = sp->eng.model;
        if ((rc = spec_input(&sp->eng.data, &ndim, shape, &classes)))
            goto out;
        batch = o.batch_set ? o.batch : (long)sp->eng.batch_size;
        train_bn = sp->eng.opt.train_bn && !o.no_train_bn;
        seed = sp->eng.seed;
    }
    if ((rc = make_spec("summary", &o, &s)))
        goto out;
    if (o.in_shape) {
        unsigned long a, b, c;
        char tail;
        if (sscanf(o.in_shape, "%lux%lux%lu%c", &a, &b, &c, &tail) == 3 && a && b && c &&
            a <= 4096 && b <= 65536 && c <= 65536) {
            ndim = 3;
            shape[0] = a, shape[1] = b, shape[2] = c;
        } else if (sscanf(o.in_shape, "%lu%c", &a, &tail) == 1 && a && a <= 1u << 24) {
            ndim = 1;
            shape[0] = a;
        } else {
            rc = usage("summary", "--in-shape must be CxHxW or F (positive integers)");
            goto out;
        }
    } else if (!o.spec && strcmp(s.arch, "mlp") == 0) {
        ndim = 1;
        shape[0] = 784;
    }
    if (o.classes)
        classes = (size_t)o.classes;
    if ((rc = open_net(&o, &s, ndim, shape, classes, seed, train_bn, &net)))
        goto out;
    /* a spec's model as its stages leave it, as fastai's summary shows it after training */
    for (size_t i = 0; sp && i < sp->eng.n_stages; i++) {
        const eng_stage *st = &sp->eng.stages[i];
        if (st->op == ENG_STAGE_FREEZE)
            eng_net_freeze_to(net, -1);
        else if (st->op == ENG_STAGE_UNFREEZE)
            eng_net_freeze_to(net, 0);
        else if (st->op == ENG_STAGE_FREEZE_TO)
            eng_net_freeze_to(net, st->n);
    }
    if (o.freeze_set)
        eng_net_freeze_to(net, (int32_t)o.freeze);
    eng_summary *sm = NULL;
    eng_error err = {0};
    if (eng_net_summary(net, (size_t)batch, &sm, &err) != 0) {
        fprintf(stderr, "thawd summary: %s\n", err.text);
        rc = 1;
        goto out;
    }
    rc = 0;
    if (strcmp(o.format, "json") == 0) {
        json_t *j = summary_json(sm);
        char *txt = json_dumps(j, JSON_INDENT(2));
        json_decref(j);
        if (txt)
            puts(txt);
        else
            rc = 1;
        free(txt);
    } else {
        size_t need = eng_summary_text(sm, NULL, 0);
        char *txt = malloc(need + 1);
        if (txt) {
            eng_summary_text(sm, txt, need + 1);
            fputs(txt, stdout);
        } else {
            rc = 1;
        }
        free(txt);
    }
    eng_summary_destroy(sm);
out:
    eng_net_destroy(net);
    if (sp)
        srv_spec_fini(sp);
    free(sp);
    return rc;
}
