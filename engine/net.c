/*
 * net.c: eng_net, a model outside a job (engine.h): built from a spec for an input shape,
 * optionally with weights whose class count sets the head, and evaluated in batches with the
 * trainer's forward pass and activation arena.
 */
#include "net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "model.h"
#include "safetensors.h"
#include "train.h"
#include "util.h"

#define NET_BATCH 64

/* The class count of a weights file: the first dimension of the architecture's last
 * weight matrix, found by name in a throw-away build with 2 classes. */
static int classes_from_weights(const eng_model_spec *spec, size_t in_ndim, const size_t *in_shape,
                                size_t *n_classes, eng_error *err)
{
    eng_model_spec probe = *spec;
    probe.weights[0] = '\0';
    eng_model *m = NULL;
    eng_st_file *f = NULL;
    eng_rng rng;
    eng_rng_seed(&rng, 0, 0);
    int rc = eng_model_create(&probe, in_ndim, in_shape, 2, true, &rng, &m, err);
    if (rc)
        return rc;
    const eng_param *last = NULL;
    for (size_t i = 0; i < m->n_params; i++)
        if (!m->params[i].info.is_buffer && m->params[i].info.ndim == 2)
            last = &m->params[i];
    ENG_ASSERT(last);
    rc = eng_st_read(spec->weights, &f, err);
    if (rc)
        goto out;
    const eng_st_entry *e = eng_st_find(f, last->name);
    if (!e || e->ndim != 2 || e->shape[0] < 1 || e->shape[0] > ENG_MAX_CLASSES) {
        rc = eng_err_set(err, ENG_ESHAPE, "model.weights",
                         "%s: no 2-d tensor \"%s\" of 1..%d rows to take the class count from",
                         spec->weights, last->name, ENG_MAX_CLASSES);
        goto out;
    }
    *n_classes = e->shape[0];
out:
    eng_st_close(f);
    eng_model_destroy(m);
    return rc;
}

int eng_net_create(const eng_model_spec *spec, size_t in_ndim, const size_t *in_shape,
                   size_t n_classes, uint64_t seed, bool train_bn, eng_net **out, eng_error *err)
{
    int rc;
    *out = NULL;
    if (err)
        err->field[0] = err->text[0] = '\0';
    if (n_classes == 0) {
        if (!spec->weights[0])
            return eng_err_set(err, ENG_EINVAL, "classes",
                               "the class count is needed when no weights are given");
        rc = classes_from_weights(spec, in_ndim, in_shape, &n_classes, err);
        if (rc)
            return rc;
    }
    eng_net *n = calloc(1, sizeof(*n));
    if (!n)
        return eng_err_set(err, ENG_ENOMEM, NULL, "out of memory");
    eng_rng rng;
    eng_rng_seed(&rng, seed, 0x494e4954ull); /* "INIT", as eng_job_run */
    rc = eng_model_create(spec, in_ndim, in_shape, n_classes, train_bn, &rng, &n->model, err);
    if (rc)
        goto fail;
    snprintf(n->arch, sizeof(n->arch), "%s", spec->arch);
    n->torchvision_head = spec->head.kind == ENG_HEAD_TORCHVISION;
    eng_opt_spec opt;
    eng_opt_spec_defaults(&opt);
    rc = eng_trainer_init(&n->tr, n->model, &n->empty, &opt, NET_BATCH, seed, err);
    n->tr_ready = true;
    if (rc)
        goto fail;
    *out = n;
    return 0;
fail:
    eng_net_destroy(n);
    return rc;
}

void eng_net_destroy(eng_net *n)
{
    if (!n)
        return;
    if (n->tr_ready)
        eng_trainer_fini(&n->tr);
    eng_model_destroy(n->model);
    free(n);
}

size_t eng_net_n_classes(const eng_net *n)
{
    return n->model->n_classes;
}

size_t eng_net_in_size(const eng_net *n)
{
    return n->model->in_size;
}

void eng_net_freeze_to(eng_net *n, int32_t k)
{
    eng_model_freeze_to(n->model, k);
}

int eng_net_predict(eng_net *n, const float *x, size_t N, float *logits, eng_error *err)
{
    (void)err; /* the arena was sized at creation; nothing here can fail */
    const size_t in = n->model->in_size, C = n->model->n_classes;
    for (size_t s = 0; s < N; s += NET_BATCH) {
        size_t b = N - s < NET_BATCH ? N - s : NET_BATCH;
        const float *y = eng_trainer_forward(&n->tr, x + s * in, b, false);
        memcpy(logits + s * C, y, b * C * sizeof(float));
    }
    return 0;
}

void eng_softmax_rows(float *p, size_t N, size_t C)
{
    for (size_t r = 0; r < N; r++) {
        float *z = p + r * C, mx = z[0];
        for (size_t c = 1; c < C; c++)
            mx = z[c] > mx ? z[c] : mx;
        double sum = 0.0;
        for (size_t c = 0; c < C; c++)
            sum += exp((double)(z[c] - mx));
        for (size_t c = 0; c < C; c++)
            z[c] = (float)(exp((double)(z[c] - mx)) / sum);
    }
}
