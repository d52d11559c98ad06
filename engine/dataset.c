/*
 * dataset.c: synthetic blobs and IDX (MNIST family) data, class subsets, per-class limits,
 * normalisation, and the per-epoch shuffle. See dataset.h.
 */
#include "dataset.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data_read.h"
#include "rng.h"
#include "util.h"

void eng_dataset_destroy(eng_dataset *d)
{
    if (!d)
        return;
    free(d->x_train);
    free(d->x_valid);
    free(d->y_train);
    free(d->y_valid);
    free(d->u8_train);
    free(d);
}

void eng_idx_free(eng_idx *x)
{
    free(x->data);
    x->data = NULL;
}

void eng_dataset_shuffle(uint32_t *perm, size_t n, uint64_t seed, size_t stage, uint32_t epoch)
{
    eng_rng r;
    eng_rng_seed(&r, seed, 0x5348554600000000ull ^ ((uint64_t)stage << 32) ^ epoch);
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)eng_rng_below(&r, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

static int read_exact(gzFile g, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int r = gzread(g, p, chunk);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int eng_idx_read(const char *path, eng_idx *out, eng_error *err)
{
    memset(out, 0, sizeof(*out));
    gzFile g = gzopen(path, "rb");
    if (!g)
        return eng_err_set(err, ENG_EIO, NULL, "cannot open %s: %s", path,
                           errno ? strerror(errno) : "zlib error");
    int rc = 0;
    unsigned char hdr[4];
    if (read_exact(g, hdr, 4)) {
        rc = eng_err_set(err, ENG_EFORMAT, NULL, "%s: truncated IDX header", path);
        goto fail;
    }
    if (hdr[0] != 0 || hdr[1] != 0 || hdr[2] != 0x08 || hdr[3] < 1 || hdr[3] > 4) {
        rc = eng_err_set(err, ENG_EFORMAT, NULL,
                         "%s: bad IDX magic %02x %02x %02x %02x (want 00 00 08 and 1..4 "
                         "dimensions of unsigned bytes)",
                         path, hdr[0], hdr[1], hdr[2], hdr[3]);
        goto fail;
    }
    out->ndim = hdr[3];
    size_t count = 1;
    for (uint32_t i = 0; i < out->ndim; i++) {
        unsigned char b[4];
        if (read_exact(g, b, 4)) {
            rc = eng_err_set(err, ENG_EFORMAT, NULL, "%s: truncated IDX dimensions", path);
            goto fail;
        }
        out->dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        if (out->dims[i] == 0 || out->dims[i] > (1u << 28) ||
            count > (SIZE_MAX >> 4) / out->dims[i]) {
            rc = eng_err_set(err, ENG_EFORMAT, NULL, "%s: IDX dimension %u is %u (must be 1..2^28)",
                             path, i, out->dims[i]);
            goto fail;
        }
        count *= out->dims[i];
    }
    if (count > ((size_t)1 << 32)) {
        rc = eng_err_set(err, ENG_EFORMAT, NULL, "%s: IDX data too large (%zu bytes)", path, count);
        goto fail;
    }
    out->count = count;
    out->data = malloc(count);
    if (!out->data) {
        rc = eng_err_set(err, ENG_ENOMEM, NULL, "out of memory for %s (%zu bytes)", path, count);
        goto fail;
    }
    if (read_exact(g, out->data, count)) {
        rc = eng_err_set(err, ENG_EFORMAT, NULL,
                         "%s: truncated: the header announces %zu data bytes", path, count);
        goto fail;
    }
    unsigned char extra;
    if (gzread(g, &extra, 1) != 0) {
        rc = eng_err_set(err, ENG_EFORMAT, NULL, "%s: trailing bytes after %zu data bytes", path,
                         count);
        goto fail;
    }
    gzclose(g);
    return 0;
fail:
    gzclose(g);
    eng_idx_free(out);
    return rc;
}

static void normalise(eng_dataset *d, const eng_data_spec *s)
{
    float mean = s->mean, std = s->std;
    if (s->normalize_auto) {
        double sum = 0.0, sq = 0.0;
        size_t n = d->n_train * d->in_size;
        for (size_t i = 0; i < n; i++)
            sum += (double)d->x_train[i];
        double mu = n ? sum / (double)n : 0.0;
        for (size_t i = 0; i < n; i++) {
            double t = (double)d->x_train[i] - mu;
            sq += t * t;
        }
        double sd = n ? sqrt(sq / (double)n) : 1.0;
        mean = (float)mu;
        std = sd > 1e-12 ? (float)sd : 1.0f;
    }
    d->mean = mean;
    d->std = std;
    if (mean == 0.0f && std == 1.0f)
        return;
    for (size_t i = 0; i < d->n_train * d->in_size; i++)
        d->x_train[i] = (d->x_train[i] - mean) / std;
    for (size_t i = 0; i < d->n_valid * d->in_size; i++)
        d->x_valid[i] = (d->x_valid[i] - mean) / std;
}

static int alloc_split(eng_dataset *d, eng_error *err)
{
    size_t in = d->in_size;
    d->x_train = malloc((d->n_train ? d->n_train : 1) * in * sizeof(float));
    d->x_valid = malloc((d->n_valid ? d->n_valid : 1) * in * sizeof(float));
    d->y_train = malloc((d->n_train ? d->n_train : 1) * sizeof(int32_t));
    d->y_valid = malloc((d->n_valid ? d->n_valid : 1) * sizeof(int32_t));
    if (!d->x_train || !d->x_valid || !d->y_train || !d->y_valid)
        return eng_err_set(err, ENG_ENOMEM, "data", "out of memory for the dataset");
    return 0;
}

static int load_synthetic(const eng_data_spec *s, eng_dataset *d, eng_error *err)
{
    size_t F = s->features, C = s->classes;
    d->n_train = s->n_train;
    d->n_valid = s->n_valid;
    d->in_ndim = 1;
    d->in_shape[0] = F;
    d->in_size = F;
    d->n_classes = C;
    int rc = alloc_split(d, err);
    if (rc)
        return rc;
    float *centres = malloc(C * F * sizeof(float));
    if (!centres)
        return eng_err_set(err, ENG_ENOMEM, "data", "out of memory for the dataset");
    eng_rng r;
    eng_rng_seed(&r, s->seed, 0x424c4f4253ull); /* "BLOBS" */
    for (size_t i = 0; i < C * F; i++)
        centres[i] = eng_rng_normal(&r);
    for (size_t split = 0; split < 2; split++) {
        size_t n = split ? d->n_valid : d->n_train;
        float *x = split ? d->x_valid : d->x_train;
        int32_t *y = split ? d->y_valid : d->y_train;
        for (size_t i = 0; i < n; i++) {
            size_t c = (size_t)eng_rng_below(&r, C);
            y[i] = (int32_t)c;
            for (size_t f = 0; f < F; f++)
                x[i * F + f] = centres[c * F + f] + s->noise * eng_rng_normal(&r);
        }
    }
    free(centres);
    return 0;
}

/* Keeps the samples whose label is in the subset (relabelled) and under the per-class
 * limit; returns the number kept (fills x/y when they are not NULL). */
static size_t select_split(const eng_idx *im, const eng_idx *lb, const int32_t *map, uint32_t limit,
                           size_t in, float *x, int32_t *y)
{
    size_t kept = 0, per_class[256] = {0};
    for (size_t i = 0; i < lb->count; i++) {
        int32_t c = map[lb->data[i]];
        if (c < 0)
            continue;
        if (limit && per_class[c] >= limit)
            continue;
        per_class[c]++;
        if (x) {
            const uint8_t *src = im->data + i * in;
            for (size_t k = 0; k < in; k++)
                x[kept * in + k] = (float)src[k] / 255.0f;
            y[kept] = c;
        }
        kept++;
    }
    return kept;
}

static int check_pair(const eng_idx *im, const eng_idx *lb, const char *ip, const char *lp,
                      eng_error *err)
{
    if (lb->ndim != 1)
        return eng_err_set(err, ENG_EFORMAT, "data", "%s: labels must have 1 dimension, got %u", lp,
                           lb->ndim);
    if (im->ndim < 2)
        return eng_err_set(err, ENG_EFORMAT, "data",
                           "%s: images need at least 2 dimensions, got %u", ip, im->ndim);
    if (im->dims[0] != lb->dims[0])
        return eng_err_set(err, ENG_EFORMAT, "data", "%s has %u images but %s has %u labels", ip,
                           im->dims[0], lp, lb->dims[0]);
    return 0;
}

static int load_idx(const eng_data_spec *s, const eng_stopper *sp, eng_dataset *d, eng_error *err)
{
    eng_idx ti = {0}, tl = {0}, vi = {0}, vl = {0};
    int32_t map[256];
    int rc;
    if ((rc = eng_stop_check(sp, err)) || (rc = eng_idx_read(s->train_images, &ti, err)) ||
        (rc = eng_idx_read(s->train_labels, &tl, err)) || (rc = eng_stop_check(sp, err)) ||
        (rc = eng_idx_read(s->valid_images, &vi, err)) ||
        (rc = eng_idx_read(s->valid_labels, &vl, err)))
        goto out;
    if ((rc = check_pair(&ti, &tl, s->train_images, s->train_labels, err)) ||
        (rc = check_pair(&vi, &vl, s->valid_images, s->valid_labels, err)))
        goto out;
    if (ti.ndim != vi.ndim || memcmp(ti.dims + 1, vi.dims + 1, (ti.ndim - 1) * 4) != 0) {
        rc = eng_err_set(err, ENG_EFORMAT, "data",
                         "training and validation images have different shapes");
        goto out;
    }
    size_t in = ti.count / ti.dims[0];
    int max_label = -1;
    for (size_t i = 0; i < tl.count; i++)
        max_label = tl.data[i] > max_label ? tl.data[i] : max_label;
    for (size_t i = 0; i < vl.count; i++)
        max_label = vl.data[i] > max_label ? vl.data[i] : max_label;
    for (int i = 0; i < 256; i++)
        map[i] = -1;
    if (s->n_subset) {
        for (uint32_t k = 0; k < s->n_subset; k++) {
            int32_t c = s->subset[k];
            if (c < 0 || c > max_label) {
                rc = eng_err_set(err, ENG_EINVAL, "data.classes",
                                 "class %d is not in the data (labels 0..%d)", c, max_label);
                goto out;
            }
            if (map[c] >= 0) {
                rc = eng_err_set(err, ENG_EINVAL, "data.classes", "class %d listed twice", c);
                goto out;
            }
            map[c] = (int32_t)k;
        }
        d->n_classes = s->n_subset;
    } else {
        for (int i = 0; i <= max_label; i++)
            map[i] = i;
        d->n_classes = (size_t)(max_label + 1);
    }
    if (d->n_classes < 2) {
        rc = eng_err_set(err, ENG_EFORMAT, "data", "the data has fewer than 2 classes");
        goto out;
    }
    d->in_size = in;
    if (ti.ndim == 3) { /* N x H x W images -> C=1, H, W */
        d->in_ndim = 3;
        d->in_shape[0] = 1;
        d->in_shape[1] = ti.dims[1];
        d->in_shape[2] = ti.dims[2];
    } else {
        d->in_ndim = ti.ndim - 1;
        for (uint32_t k = 1; k < ti.ndim; k++)
            d->in_shape[k - 1] = ti.dims[k];
    }
    d->n_train = select_split(&ti, &tl, map, s->per_class_limit, in, NULL, NULL);
    d->n_valid = select_split(&vi, &vl, map, 0, in, NULL, NULL);
    if (d->n_train == 0) {
        rc = eng_err_set(err, ENG_EINVAL, "data",
                         "no training samples left after the class "
                         "subset and per-class limit");
        goto out;
    }
    if ((rc = alloc_split(d, err)))
        goto out;
    select_split(&ti, &tl, map, s->per_class_limit, in, d->x_train, d->y_train);
    select_split(&vi, &vl, map, 0, in, d->x_valid, d->y_valid);
out:
    eng_idx_free(&ti);
    eng_idx_free(&tl);
    eng_idx_free(&vi);
    eng_idx_free(&vl);
    return rc;
}

int eng_dataset_load(const eng_data_spec *s, eng_dataset **out, eng_error *err)
{
    return eng_dataset_load_stoppable(s, NULL, NULL, out, err);
}

int eng_dataset_load_stoppable(const eng_data_spec *s, eng_stop_fn stop, void *user,
                               eng_dataset **out, eng_error *err)
{
    eng_stopper sp = {stop, user};
    *out = NULL;
    eng_dataset *d = calloc(1, sizeof(*d));
    if (!d)
        return eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
    int rc;
    if (s->kind == ENG_DATA_SYNTHETIC)
        rc = load_synthetic(s, d, err);
    else if (s->kind == ENG_DATA_IDX)
        rc = load_idx(s, &sp, d, err);
    else if (s->kind >= ENG_DATA_IDX_DIR && s->kind <= ENG_DATA_IMAGES) {
        rc = eng_dataset_load_registered(s, stop, user, d, err);
        if (rc == 0) {
            *out = d; /* normalised by the loader (bytes) or already (floats) */
            return 0;
        }
    } else
        rc = eng_err_set(err, ENG_EINVAL, "data.source", "unknown data kind %d", (int)s->kind);
    if (rc) {
        eng_dataset_destroy(d);
        return rc;
    }
    if (!s->normalize_auto && !(s->std > 0.0f && isfinite(s->std) && isfinite(s->mean))) {
        eng_dataset_destroy(d);
        return eng_err_set(err, ENG_EINVAL, "data.normalize", "std must be > 0");
    }
    normalise(d, s);
    *out = d;
    return 0;
}
