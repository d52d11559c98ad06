/*
 * cli_predict.c: `thawd predict` and `thawd summary`, thin CLI glue over engine.h's eng_net.
 *
 *   thawd predict --arch A --weights W.safetensors --input FILE [--format text|json]
 *                 [--probs] [--head default|fastai|torchvision] [--classes N]
 *                 [--mean M[,M,M]] [--std S[,S,S]]
 * FILE is an IDX file: unsigned bytes (type 0x08) N x H x W or N x C x H x W, scaled to
 * [0, 1] then normalised per channel with --mean/--std (defaults 0 and 1: no
 * normalisation; use the model's training statistics, e.g. --mean 0.2860 --std 0.3530 for
 * Fashion-MNIST), or float32 (type 0x0D) N x C x H x W already normalised. The class count
 * comes from the weights unless --classes is given. Without --head a resnet tries the
 * fastai head, then torchvision's (a file exported by tools/torch_to_safetensors.py).
 *
 *   thawd summary --arch A [--in-shape CxHxW | F] [--classes N] [--head K] [--batch B]
 *                 [--freeze N] [--no-train-bn] [--weights W] [--format text|json]
 * prints the model as fastai's learn.summary() does (defaults: 1x28x28, 10 classes,
 * batch 64, unfrozen).
 */
#include "cli_predict.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "engine.h"

typedef struct opts {
    const char *arch, *weights, *input, *format, *head, *in_shape;
    const char *mean, *std;
    long classes, batch, freeze;
    bool probs, freeze_set, no_train_bn;
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

/* Parses the options shared by both commands; returns 0 or 2 (usage printed). */
static int parse_opts(const char *cmd, int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof(*o));
    o->format = "text";
    o->batch = 64;
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
        if (i + 1 >= argc)
            return usage(cmd, a[0] == '-' ? "option needs a value" : "unexpected argument");
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
        else if (strcmp(a, "--mean") == 0)
            dst = &o->mean;
        else if (strcmp(a, "--std") == 0)
            dst = &o->std;
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
        } else if (strcmp(a, "--freeze") == 0) {
            if (!parse_long(v, -8, 8, &o->freeze))
                return usage(cmd, "--freeze must be an integer -8..8 (fastai freeze_to)");
            o->freeze_set = true;
        } else {
            fprintf(stderr, "thawd %s: unknown option %s\n", cmd, a);
            return 2;
        }
    }
    if (!o->arch)
        return usage(cmd, "--arch is required");
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

/* Builds the spec of --arch / --head / --weights; returns 0 or 2. */
static int make_spec(const char *cmd, const opts *o, eng_model_spec *s)
{
    eng_model_spec_defaults(s);
    if (strlen(o->arch) >= sizeof(s->arch))
        return usage(cmd, "--arch is too long");
    snprintf(s->arch, sizeof(s->arch), "%s", o->arch);
    bool known = false;
    for (size_t i = 0; i < eng_arch_count(); i++)
        known |= strcmp(eng_arch_name(i), o->arch) == 0;
    if (!known)
        return usage(cmd, "unknown --arch (mlp, cnn-small, resnet18, resnet34)");
    if (o->head && head_kind(o->head, &s->head.kind) != 0)
        return usage(cmd, "--head must be default, fastai or torchvision");
    if (o->weights) {
        if (strlen(o->weights) >= sizeof(s->weights))
            return usage(cmd, "--weights path too long");
        snprintf(s->weights, sizeof(s->weights), "%s", o->weights);
    }
    return 0;
}

/* Creates the net; without --head a resnet falls back to torchvision's head. */
static int open_net(const opts *o, eng_model_spec *s, size_t ndim, const size_t *shape,
                    size_t classes, eng_net **net)
{
    eng_error err = {0}, err2 = {0};
    int rc = eng_net_create(s, ndim, shape, classes, 0, !o->no_train_bn, net, &err);
    if (rc && !o->head && strncmp(s->arch, "resnet", 6) == 0 && s->weights[0]) {
        s->head.kind = ENG_HEAD_TORCHVISION;
        if (eng_net_create(s, ndim, shape, classes, 0, !o->no_train_bn, net, &err2) == 0)
            return 0;
    }
    if (rc)
        fprintf(stderr, "thawd: %s%s%s\n", err.field[0] ? err.field : "", err.field[0] ? ": " : "",
                err.text[0] ? err.text : eng_strerror(rc));
    return rc ? 1 : 0;
}

/* ---- IDX input ------------------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* comma list of 1 or C floats */
static int float_list(const char *s, float *v, size_t C, float def)
{
    for (size_t c = 0; c < C; c++)
        v[c] = def;
    if (!s)
        return 0;
    size_t n = 0;
    float tmp[4];
    const char *p = s;
    while (*p && n < 4) {
        char *end;
        tmp[n++] = strtof(p, &end);
        if (end == p)
            return -1;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    if (*p || !(n == 1 || n == C))
        return -1;
    for (size_t c = 0; c < C; c++)
        v[c] = tmp[n == 1 ? 0 : c];
    return 0;
}

/* Reads FILE into x [N x C*H*W]; returns 0 or 1 (message printed). */
static int read_idx(const opts *o, float **x, size_t *N, size_t shape[3])
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
    float mean[4], std[4];
    if (shape[0] > 4 && (o->mean || o->std)) {
        fprintf(stderr, "thawd predict: --mean/--std take 1 value for %zu channels\n", shape[0]);
    }
    if (float_list(o->mean, mean, shape[0] <= 4 ? shape[0] : 1, 0.0f) ||
        float_list(o->std, std, shape[0] <= 4 ? shape[0] : 1, 1.0f)) {
        fprintf(stderr, "thawd predict: --mean/--std must be 1 or C numbers, comma-separated\n");
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
            size_t c = shape[0] <= 4 ? (i / plane) % shape[0] : 0;
            (*x)[i] = ((float)d[i] / 255.0f - mean[c]) / std[c];
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
    if ((rc = make_spec("predict", &o, &s)))
        return rc;
    float *x = NULL, *y = NULL;
    size_t N = 0, shape[3];
    eng_net *net = NULL;
    if ((rc = read_idx(&o, &x, &N, shape)))
        return rc;
    bool flat = strcmp(s.arch, "mlp") == 0;
    size_t flat_shape[1] = {shape[0] * shape[1] * shape[2]};
    rc = open_net(&o, &s, flat ? 1 : 3, flat ? flat_shape : shape, (size_t)o.classes, &net);
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

int srv_cli_summary(int argc, char **argv)
{
    opts o;
    eng_model_spec s;
    int rc = parse_opts("summary", argc, argv, &o);
    if (rc)
        return rc;
    if ((rc = make_spec("summary", &o, &s)))
        return rc;
    size_t shape[3] = {1, 28, 28}, ndim = 3;
    if (o.in_shape) {
        unsigned long a, b, c;
        char tail;
        if (sscanf(o.in_shape, "%lux%lux%lu%c", &a, &b, &c, &tail) == 3 && a && b && c &&
            a <= 4096 && b <= 65536 && c <= 65536) {
            shape[0] = a, shape[1] = b, shape[2] = c;
        } else if (sscanf(o.in_shape, "%lu%c", &a, &tail) == 1 && a && a <= 1u << 24) {
            ndim = 1;
            shape[0] = a;
        } else {
            return usage("summary", "--in-shape must be CxHxW or F (positive integers)");
        }
    } else if (strcmp(s.arch, "mlp") == 0) {
        ndim = 1;
        shape[0] = 784;
    }
    eng_net *net = NULL;
    rc = open_net(&o, &s, ndim, shape, o.classes ? (size_t)o.classes : (o.weights ? 0 : 10), &net);
    if (rc)
        return rc;
    if (o.freeze_set)
        eng_net_freeze_to(net, (int32_t)o.freeze);
    eng_summary *sm = NULL;
    eng_error err = {0};
    if (eng_net_summary(net, (size_t)o.batch, &sm, &err) != 0) {
        fprintf(stderr, "thawd summary: %s\n", err.text);
        eng_net_destroy(net);
        return 1;
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
    eng_net_destroy(net);
    return rc;
}
