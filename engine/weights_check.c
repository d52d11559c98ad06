/*
 * weights_check.c: eng_weights_check (engine.h): does a safetensors file fit an
 * architecture, as a whole model or as its body only?
 *
 * DESIGN: the file is read and validated once (eng_st_read). The input shape and class
 * count it implies are read off the tensors of a probe build: the first weight tensor's
 * second dimension is the input size (an mlp's features, a conv net's channels) and the
 * last 2-d weight's first dimension is the class count. The architecture is then built for
 * that shape (no weights loaded, 32x32 images: conv weights do not depend on the image size;
 * an mlp with the hidden sizes its "0.<i>.weight" tensors show)
 * and its tensor names and shapes are compared with the file's under the same rules as
 * loading (eng_st_load_model): strict = every tensor present with its shape and nothing
 * else ("__"- and "opt."-prefixed tensors ignored); body = every tensor outside the head
 * group. Messages name tensors, never the file's path (the caller's path may be a staging
 * file the user never saw).
 */
#include <stdio.h>
#include <string.h>

#include "model.h"
#include "safetensors.h"
#include "util.h"

#define PROBE_HW 32

static void shape_text(const size_t *shape, size_t ndim, char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t d = 0; d < ndim && d < ENG_ST_MAX_DIMS; d++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s%zu", d ? "x" : "", shape[d]);
}

/* Compares model tensors with the file's; 0 when they fit, else ENG_ESHAPE with err set. */
static int compare(const eng_model *m, const eng_st_file *f, bool body_only, eng_error *err)
{
    unsigned head = (unsigned)m->n_groups - 1;
    for (size_t i = 0; i < m->n_params; i++) {
        const eng_param *p = &m->params[i];
        if (body_only && p->group == head)
            continue;
        const eng_st_entry *e = eng_st_find(f, p->name);
        if (!e)
            return eng_err_set(err, ENG_ESHAPE, "model.weights", "missing tensor \"%s\"", p->name);
        bool same = e->ndim == p->info.ndim;
        for (size_t d = 0; same && d < e->ndim; d++)
            same = e->shape[d] == p->info.shape[d];
        if (!same) {
            char have[96], want[96];
            shape_text(e->shape, e->ndim, have, sizeof have);
            shape_text(p->info.shape, p->info.ndim, want, sizeof want);
            return eng_err_set(err, ENG_ESHAPE, "model.weights",
                               "tensor \"%s\" has shape [%s], the architecture needs [%s]", p->name,
                               have, want);
        }
    }
    for (size_t i = 0; i < f->n && !body_only; i++) {
        const char *name = f->e[i].name;
        if (strncmp(name, "__", 2) == 0 || strncmp(name, "opt.", 4) == 0)
            continue;
        if (!eng_model_find(m, name))
            return eng_err_set(err, ENG_ESHAPE, "model.weights",
                               "unexpected tensor \"%.60s\" for this architecture", name);
    }
    return 0;
}

/* An mlp's hidden sizes and dropout layout as the file has them: its body Linears are
 * "0.<i>.weight" at i = 0, 2, 4, ... (no dropout) or 0, 3, 6, ... (with dropout). Leaves
 * the spec alone when the file shows no such layout (the comparison then names what is
 * missing). */
static void mlp_layout(const eng_st_file *f, eng_model_spec *m)
{
    for (size_t step = 3; step >= 2; step--) {
        uint32_t n = 0, hidden[ENG_MAX_HIDDEN];
        char name[32];
        for (;; n++) {
            snprintf(name, sizeof name, "0.%zu.weight", (size_t)n * step);
            const eng_st_entry *e = eng_st_find(f, name);
            if (!e || e->ndim != 2 || e->shape[0] < 1 || e->shape[0] > 65536)
                break;
            if (n == ENG_MAX_HIDDEN)
                return;
            hidden[n] = (uint32_t)e->shape[0];
        }
        if (n >= 2 || (n == 1 && step == 2)) {
            m->n_hidden = n;
            memcpy(m->hidden, hidden, n * sizeof hidden[0]);
            m->dropout = step == 3 ? 0.5f : 0.0f; /* only the layout matters here */
            return;
        }
    }
}

static int build(const eng_model_spec *spec, size_t in_ndim, const size_t *in_shape,
                 size_t n_classes, eng_model **m, eng_error *err)
{
    eng_model_spec s = *spec;
    s.weights[0] = '\0';
    s.body_only = false;
    s.in_channels = 0;
    eng_rng rng;
    eng_rng_seed(&rng, 0, 0);
    return eng_model_create(&s, in_ndim, in_shape, n_classes, true, &rng, m, err);
}

int eng_weights_check(const eng_model_spec *spec, eng_weights_info *out, eng_error *err)
{
    eng_st_file *f = NULL;
    eng_model *m = NULL;
    int rc;
    memset(out, 0, sizeof *out);
    if (err)
        err->field[0] = err->text[0] = '\0';
    if (!spec || !spec->weights[0])
        return eng_err_set(err, ENG_EINVAL, "model.weights", "no weights file given");
    rc = eng_st_read(spec->weights, &f, err);
    if (rc) {
        /* eng_st_read's messages start with the path: keep only what follows it */
        size_t pl = strlen(spec->weights);
        if (err && strncmp(err->text, spec->weights, pl) == 0 && err->text[pl] == ':') {
            const char *rest = err->text + pl + 1 + (err->text[pl + 1] == ' ');
            memmove(err->text, rest, strlen(rest) + 1);
        }
        return rc;
    }
    out->n_tensors = f->n;
    bool mlp = strcmp(spec->arch, "mlp") == 0;
    eng_model_spec mspec = *spec;
    if (mlp)
        mlp_layout(f, &mspec);
    spec = &mspec;

    /* probe: the names of the first weight and the last 2-d weight */
    size_t probe_shape[3] = {3, PROBE_HW, PROBE_HW};
    rc = build(spec, 3, probe_shape, 2, &m, err);
    if (rc)
        goto out;
    const eng_param *first = NULL, *last = NULL;
    for (size_t i = 0; i < m->n_params; i++) {
        const eng_param *p = &m->params[i];
        if (p->info.is_buffer || p->info.ndim < 2)
            continue;
        if (!first)
            first = p;
        if (p->info.ndim == 2)
            last = p;
    }
    ENG_ASSERT(first && last);
    const eng_st_entry *ef = eng_st_find(f, first->name);
    if (!ef || ef->ndim != first->info.ndim || ef->shape[1] < 1 || ef->shape[1] > (1u << 24)) {
        rc = eng_err_set(err, ENG_ESHAPE, "model.weights",
                         "not %s weights: no %zu-d tensor \"%s\" (its first layer)", spec->arch,
                         first->info.ndim, first->name);
        goto out;
    }
    if (mlp) {
        out->in_ndim = 1;
        out->in_shape[0] = ef->shape[1];
    } else {
        out->in_ndim = 3;
        out->in_shape[0] = ef->shape[1]; /* H and W stay 0: any size the strides accept */
    }
    const eng_st_entry *el = eng_st_find(f, last->name);
    size_t classes = el && el->ndim == 2 && el->shape[0] >= 1 && el->shape[0] <= ENG_MAX_CLASSES
                         ? el->shape[0]
                         : 0;
    /* `last` points into the probe model, which goes now: keep its name for messages. */
    char last_name[sizeof last->name];
    snprintf(last_name, sizeof last_name, "%s", last->name);
    eng_model_destroy(m);
    m = NULL;
    first = last = NULL;

    size_t shape[3] = {out->in_shape[0], PROBE_HW, PROBE_HW};
    eng_error full_err = {{0}, {0}};
    int full_rc = ENG_ESHAPE;
    eng_head_kind heads[2] = {spec->head.kind, ENG_HEAD_TORCHVISION};
    size_t n_heads =
        strncmp(spec->arch, "resnet", 6) == 0 && spec->head.kind != ENG_HEAD_TORCHVISION ? 2 : 1;
    for (size_t h = 0; classes && h < n_heads && full_rc; h++) {
        eng_model_spec s = *spec;
        s.head.kind = heads[h];
        rc = build(&s, out->in_ndim, shape, classes, &m, err);
        if (rc)
            goto out;
        eng_error e = {{0}, {0}};
        full_rc = compare(m, f, false, &e);
        if (h == 0 || !full_rc)
            full_err = e;
        if (!full_rc)
            out->head = heads[h];
        eng_model_destroy(m);
        m = NULL;
    }
    if (!classes)
        snprintf(full_err.text, sizeof full_err.text,
                 "no 2-d tensor \"%s\" with 1..%d rows (the head's last layer)", last_name,
                 ENG_MAX_CLASSES);
    if (!full_rc) {
        out->fit = ENG_WEIGHTS_FIT_FULL;
        out->n_classes = classes;
        goto out;
    }
    rc = build(spec, out->in_ndim, shape, 2, &m, err);
    if (rc)
        goto out;
    eng_error body_err = {{0}, {0}};
    if (compare(m, f, true, &body_err) == 0) {
        out->fit = ENG_WEIGHTS_FIT_BODY;
        out->head = spec->head.kind;
        rc = 0;
        goto out;
    }
    rc = eng_err_set(err, ENG_ESHAPE, "model.weights",
                     "the tensors fit neither %s nor its body: %.110s; body: %.110s", spec->arch,
                     full_err.text, body_err.text);
out:
    eng_model_destroy(m);
    eng_st_close(f);
    return rc;
}
