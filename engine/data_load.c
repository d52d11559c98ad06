/*
 * data_load.c: registered datasets. Shared reader helpers (directory listing, raw splits),
 * eng_dataset_inspect() for the registry, and eng_dataset_load_registered(), which applies
 * a job's options to what a reader returned: class subset (relabelled in the given order),
 * validation split (the test split, or a seeded share of the training split), per-class
 * limit on the training split (in file order, after the split), normalisation, and the
 * augmentation flags the loader applies to training batches.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_read.h"
#include "dataset.h"
#include "rng.h"
#include "sha256.h"
#include "util.h"

static const char *const kind_names[] = {"idx", "cifar10", "cifar100", "csv", "images"};

const char *eng_data_kind_name(eng_data_kind kind)
{
    if (kind < ENG_DATA_IDX_DIR || kind > ENG_DATA_IMAGES)
        return NULL;
    return kind_names[kind - ENG_DATA_IDX_DIR];
}

int eng_data_kind_parse(const char *name, eng_data_kind *kind)
{
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, kind_names[i]) == 0) {
            *kind = (eng_data_kind)(ENG_DATA_IDX_DIR + i);
            return 0;
        }
    return ENG_EINVAL;
}

eng_sha256 *eng_sha256_create(void)
{
    eng_sha256 *s = malloc(sizeof(*s));
    if (s)
        eng_sha256_init(s);
    return s;
}

void eng_sha256_destroy(eng_sha256 *s)
{
    free(s);
}

/* ---- helpers ------------------------------------------------------------------------------ */

void eng_rawdata_fini(eng_rawdata *r)
{
    free(r->names);
    for (int i = 0; i < 2; i++) {
        free(r->split[i].u8);
        free(r->split[i].f32);
        free(r->split[i].y);
    }
    memset(r, 0, sizeof(*r));
}

int eng_rawdata_default_names(eng_rawdata *r, size_t n, eng_error *err)
{
    r->n_classes = n;
    r->names = calloc(n, sizeof(*r->names));
    if (!r->names)
        return eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
    for (size_t i = 0; i < n; i++)
        snprintf(r->names[i], ENG_CLASS_NAME_MAX, "%zu", i);
    return 0;
}

int eng_rawdata_alloc_split(eng_rawdata *r, int i, size_t n, eng_error *err)
{
    eng_split *s = &r->split[i];
    s->n = n;
    if (n == 0)
        return 0;
    if (r->in_size && n > SIZE_MAX / 4 / r->in_size)
        return eng_err_set(err, ENG_ENOMEM, "data", "dataset too large");
    if (r->is_float)
        s->f32 = malloc(n * r->in_size * sizeof(float));
    else
        s->u8 = malloc(n * r->in_size);
    s->y = malloc(n * sizeof(int32_t));
    if (!s->y || (!s->u8 && !s->f32))
        return eng_err_set(err, ENG_ENOMEM, "data", "out of memory for %zu samples", n);
    return 0;
}

bool eng_path_join(char *buf, size_t size, const char *a, const char *b)
{
    int n = snprintf(buf, size, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= size) {
        if (size)
            buf[0] = '\0';
        return false;
    }
    return true;
}

void eng_names_free(char **names, size_t n)
{
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int eng_list_dir(const char *dir, char kind, char ***names, size_t *n, eng_error *err)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return eng_err_set(err, ENG_EIO, "data", "cannot open directory %s: %s", dir,
                           strerror(errno));
    char **v = NULL;
    size_t cnt = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[ENG_PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) != 0)
            continue;
        if ((kind == 'd' && !S_ISDIR(st.st_mode)) || (kind == 'f' && !S_ISREG(st.st_mode)))
            continue;
        if (cnt % 64 == 0) {
            char **g = realloc(v, (cnt + 64) * sizeof(char *));
            if (!g) {
                rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory listing %s", dir);
                break;
            }
            v = g;
        }
        if (!(v[cnt] = strdup(e->d_name))) {
            rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory listing %s", dir);
            break;
        }
        cnt++;
    }
    closedir(d);
    if (rc) {
        eng_names_free(v, cnt);
        return rc;
    }
    if (cnt)
        qsort(v, cnt, sizeof(char *), cmp_str);
    *names = v;
    *n = cnt;
    return 0;
}

int eng_stop_check(const eng_stopper *st, eng_error *err)
{
    if (st && st->fn && st->fn(st->user))
        return eng_err_set(err, ENG_ECANCELED, "data", "reading the dataset was stopped");
    return 0;
}

int eng_rawdata_read(const eng_data_spec *s, const eng_stopper *st, eng_rawdata *out,
                     eng_error *err)
{
    switch (s->kind) {
    case ENG_DATA_IDX_DIR:
        return eng_read_idx_dir(s->dir, st, out, err);
    case ENG_DATA_CIFAR10:
    case ENG_DATA_CIFAR100:
        return eng_read_cifar(s->dir, s->kind == ENG_DATA_CIFAR100, st, out, err);
    case ENG_DATA_CSV:
        return eng_read_csv(s->dir, st, out, err);
    case ENG_DATA_IMAGES:
        return eng_read_images(s->dir, s->image_h, s->image_w, s->image_c, st, out, err);
    default:
        memset(out, 0, sizeof(*out));
        return eng_err_set(err, ENG_EINVAL, "data.source", "not a registered dataset kind");
    }
}

int eng_data_spec_validate_dir(const eng_data_spec *d, eng_error *err)
{
    if (!d->dir[0] || strnlen(d->dir, ENG_PATH_MAX) >= ENG_PATH_MAX)
        return eng_err_set(err, ENG_EINVAL, "data.dataset", "a dataset directory is required");
    if (d->n_subset > ENG_MAX_CLASSES)
        return eng_err_set(err, ENG_EINVAL, "data.classes", "at most %d classes", ENG_MAX_CLASSES);
    for (uint32_t i = 0; i < d->n_subset; i++)
        for (uint32_t k = 0; k < i; k++)
            if (d->subset[k] == d->subset[i])
                return eng_err_set(err, ENG_EINVAL, "data.classes", "classes must be distinct");
    if (!(d->valid_pct >= 0.0f && d->valid_pct < 1.0f))
        return eng_err_set(err, ENG_EINVAL, "data.valid.pct", "must be in [0, 1)");
    if (d->image_h > 4096 || d->image_w > 4096 || !d->image_h != !d->image_w)
        return eng_err_set(err, ENG_EINVAL, "data.image_size", "must be [H, W] with 1..4096");
    if (d->image_c != 0 && d->image_c != 1 && d->image_c != 3)
        return eng_err_set(err, ENG_EINVAL, "data.channels", "must be 1 or 3");
    if (d->n_norm > 4)
        return eng_err_set(err, ENG_EINVAL, "data.normalize", "at most 4 channels");
    for (uint32_t c = 0; c < d->n_norm; c++)
        if (!(isfinite(d->norm_mean[c]) && isfinite(d->norm_std[c]) && d->norm_std[c] > 0.0f))
            return eng_err_set(err, ENG_EINVAL, "data.normalize", "std must be > 0, mean finite");
    if (d->aug_pad > 64)
        return eng_err_set(err, ENG_EINVAL, "data.augment.pad_crop", "must be 0..64");
    return 0;
}

/* ---- inspect ------------------------------------------------------------------------------ */

void eng_dataset_info_destroy(eng_dataset_info *info)
{
    if (!info)
        return;
    free(info->class_names);
    free(info->train_counts);
    free(info->test_counts);
    free(info);
}

/* Per-channel mean/std of split 0 (bytes scaled to [0, 1]; floats pooled as one channel). */
static void split_stats(const eng_rawdata *r, uint32_t *n_out, float *mean, float *std)
{
    const eng_split *s = &r->split[0];
    size_t C = r->is_float ? 1 : r->C, per = r->is_float ? r->in_size : r->H * r->W;
    *n_out = (uint32_t)C;
    for (size_t c = 0; c < C; c++) {
        double sum = 0.0, sq = 0.0;
        for (size_t i = 0; i < s->n; i++)
            for (size_t k = 0; k < per; k++) {
                double v = r->is_float ? (double)s->f32[i * r->in_size + k]
                                       : s->u8[i * r->in_size + c * per + k] / 255.0;
                sum += v;
                sq += v * v;
            }
        double cnt = (double)s->n * (double)per;
        double mu = cnt > 0 ? sum / cnt : 0.0, var = cnt > 0 ? sq / cnt - mu * mu : 1.0;
        mean[c] = (float)mu;
        std[c] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
    }
}

int eng_dataset_inspect(const eng_data_spec *s, eng_dataset_info **out, eng_error *err)
{
    return eng_dataset_inspect_stoppable(s, NULL, NULL, out, err);
}

int eng_dataset_inspect_stoppable(const eng_data_spec *s, eng_stop_fn stop, void *user,
                                  eng_dataset_info **out, eng_error *err)
{
    *out = NULL;
    eng_rawdata r;
    eng_stopper st = {stop, user};
    int rc = eng_rawdata_read(s, &st, &r, err);
    if (rc)
        return rc;
    eng_dataset_info *info = calloc(1, sizeof(*info));
    if (!info || !(info->class_names = malloc(r.n_classes * sizeof(*info->class_names))) ||
        !(info->train_counts = calloc(r.n_classes, sizeof(uint64_t))) ||
        !(info->test_counts = calloc(r.n_classes, sizeof(uint64_t)))) {
        rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
        goto out;
    }
    info->kind = s->kind;
    info->n_train = r.split[0].n;
    info->n_test = r.split[1].n;
    info->n_classes = (uint32_t)r.n_classes;
    info->shape[0] = (uint32_t)r.C;
    info->shape[1] = (uint32_t)r.H;
    info->shape[2] = (uint32_t)r.W;
    memcpy(info->class_names, r.names, r.n_classes * sizeof(*r.names));
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < r.split[i].n; k++) {
            int32_t y = r.split[i].y[k];
            ENG_ASSERT(y >= 0 && (size_t)y < r.n_classes); /* the readers check labels */
            (i ? info->test_counts : info->train_counts)[y]++;
        }
    split_stats(&r, &info->n_stats, info->mean, info->std);
out:
    eng_rawdata_fini(&r);
    if (rc) {
        eng_dataset_info_destroy(info);
        return rc;
    }
    *out = info;
    return 0;
}

/* ---- load --------------------------------------------------------------------------------- */

int eng_dataset_load_registered(const eng_data_spec *s, eng_stop_fn stop, void *user,
                                eng_dataset *d, eng_error *err)
{
    eng_stopper stopper = {stop, user};
    eng_rawdata r;
    int32_t *map = NULL;
    uint8_t *in_valid = NULL;
    size_t *per_class = NULL;
    int rc = eng_rawdata_read(s, &stopper, &r, err);
    if (rc)
        return rc;
    size_t K = r.n_classes, in = r.in_size;
    map = malloc(K * sizeof(int32_t));
    per_class = calloc(K, sizeof(size_t));
    if (!map || !per_class) {
        rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
        goto out;
    }
    /* Class subset: map[label] = new label or -1. */
    for (size_t i = 0; i < K; i++)
        map[i] = s->n_subset ? -1 : (int32_t)i;
    for (uint32_t k = 0; k < s->n_subset; k++) {
        int32_t c = s->subset[k];
        if (c < 0 || (size_t)c >= K) {
            rc = eng_err_set(err, ENG_EINVAL, "data.classes",
                             "class %d is not in the dataset (classes 0..%zu)", c, K - 1);
            goto out;
        }
        map[c] = (int32_t)k;
    }
    d->n_classes = s->n_subset ? s->n_subset : K;
    if (d->n_classes < 2) {
        rc = eng_err_set(err, ENG_EINVAL, "data.classes", "at least 2 classes are needed");
        goto out;
    }
    /* Validation: the test split, or a seeded share of the training split. */
    const eng_split *tr = &r.split[0], *te = &r.split[1];
    size_t n_pct = 0;
    if (s->valid_pct > 0.0f) {
        in_valid = calloc(tr->n ? tr->n : 1, 1);
        uint32_t *perm = malloc((tr->n ? tr->n : 1) * sizeof(uint32_t));
        if (!in_valid || !perm) {
            free(perm);
            rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
            goto out;
        }
        eng_dataset_shuffle(perm, tr->n, s->valid_seed, 0x56414c4944ull, 0); /* "VALID" */
        n_pct = (size_t)((double)s->valid_pct * (double)tr->n + 0.5);
        for (size_t i = 0; i < n_pct; i++)
            in_valid[perm[i]] = 1;
        free(perm);
    } else if (te->n == 0) {
        rc = eng_err_set(err, ENG_EINVAL, "data.valid",
                         "the dataset has no test split; use {\"pct\": ..., \"seed\": ...}");
        goto out;
    }
    /* Count, then fill. */
    size_t nt = 0, nv = 0;
    for (size_t i = 0; i < tr->n; i++) {
        int32_t c = map[tr->y[i]];
        if (c < 0)
            continue;
        if (in_valid && in_valid[i]) {
            nv++;
        } else if (!s->per_class_limit || per_class[c] < s->per_class_limit) {
            per_class[c]++;
            nt++;
        }
    }
    if (!in_valid)
        for (size_t i = 0; i < te->n; i++)
            nv += map[te->y[i]] >= 0;
    if (nt == 0) {
        rc = eng_err_set(err, ENG_EINVAL, "data",
                         "no training samples left after the class subset, limit and split");
        goto out;
    }
    d->n_train = nt;
    d->n_valid = nv;
    d->in_size = in;
    if (r.is_float) {
        d->in_ndim = 1;
        d->in_shape[0] = in;
    } else {
        d->in_ndim = 3;
        d->in_shape[0] = r.C;
        d->in_shape[1] = r.H;
        d->in_shape[2] = r.W;
    }
    if (r.is_float)
        d->x_train = malloc(nt * in * sizeof(float));
    else
        d->u8_train = malloc(nt * in);
    d->y_train = malloc(nt * sizeof(int32_t));
    d->x_valid = malloc((nv ? nv : 1) * in * sizeof(float));
    d->y_valid = malloc((nv ? nv : 1) * sizeof(int32_t));
    if ((!d->x_train && !d->u8_train) || !d->y_train || !d->x_valid || !d->y_valid) {
        rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory for the dataset");
        goto out;
    }
    memset(per_class, 0, K * sizeof(size_t));
    size_t it = 0, iv = 0;
    for (int sp = 0; sp < 2; sp++) {
        const eng_split *src = &r.split[sp];
        if (sp == 1 && in_valid)
            break;
        for (size_t i = 0; i < src->n; i++) {
            int32_t c = map[src->y[i]];
            if (c < 0)
                continue;
            bool to_valid = sp == 1 || (in_valid && in_valid[i]);
            if (!to_valid) {
                if (s->per_class_limit && per_class[c] >= s->per_class_limit)
                    continue;
                per_class[c]++;
                if (r.is_float)
                    memcpy(d->x_train + it * in, src->f32 + i * in, in * sizeof(float));
                else
                    memcpy(d->u8_train + it * in, src->u8 + i * in, in);
                d->y_train[it++] = c;
            } else {
                float *dst = d->x_valid + iv * in;
                for (size_t k = 0; k < in; k++)
                    dst[k] =
                        r.is_float ? src->f32[i * in + k] : (float)src->u8[i * in + k] / 255.0f;
                d->y_valid[iv++] = c;
            }
        }
    }
    ENG_ASSERT(it == nt && iv == nv);

    /* Normalisation. Bytes: per channel (the loader applies it to training batches). */
    size_t C = r.is_float ? 1 : r.C, per = in / C;
    if (s->n_norm) {
        if (s->n_norm != 1 && s->n_norm != C) {
            rc = eng_err_set(err, ENG_EINVAL, "data.normalize",
                             "%u mean/std values for data with %zu channels", s->n_norm, C);
            goto out;
        }
        d->norm_n = C;
        for (size_t c = 0; c < C; c++) {
            d->norm_mean[c] = s->norm_mean[s->n_norm == 1 ? 0 : c];
            d->norm_std[c] = s->norm_std[s->n_norm == 1 ? 0 : c];
        }
    } else if (s->normalize_auto && !r.is_float) {
        d->norm_n = C;
        for (size_t c = 0; c < C && C <= 4; c++) {
            double sum = 0.0, sq = 0.0;
            for (size_t i = 0; i < nt; i++)
                for (size_t k = 0; k < per; k++) {
                    double v = d->u8_train[i * in + c * per + k] / 255.0;
                    sum += v;
                    sq += v * v;
                }
            double cnt = (double)nt * (double)per, mu = sum / cnt, var = sq / cnt - mu * mu;
            d->norm_mean[c] = (float)mu;
            d->norm_std[c] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
        }
    } else if (!s->normalize_auto) {
        if (!(s->std > 0.0f && isfinite(s->std) && isfinite(s->mean))) {
            rc = eng_err_set(err, ENG_EINVAL, "data.normalize", "std must be > 0");
            goto out;
        }
        d->norm_n = C;
        for (size_t c = 0; c < C; c++) {
            d->norm_mean[c] = s->mean;
            d->norm_std[c] = s->std;
        }
    }
    if (C > 4 && d->norm_n) {
        rc = eng_err_set(err, ENG_EINVAL, "data.normalize", "at most 4 channels");
        goto out;
    }
    d->mean = d->norm_n ? d->norm_mean[0] : 0.0f;
    d->std = d->norm_n ? d->norm_std[0] : 1.0f;
    if (r.is_float && s->normalize_auto && s->n_norm == 0) {
        /* CSV: standardise each feature with the training split's statistics. */
        for (size_t k = 0; k < in; k++) {
            double sum = 0.0, sq = 0.0;
            for (size_t i = 0; i < nt; i++) {
                double v = (double)d->x_train[i * in + k];
                sum += v;
                sq += v * v;
            }
            double mu = sum / (double)nt, var = sq / (double)nt - mu * mu;
            float sd = var > 1e-12 ? (float)sqrt(var) : 1.0f;
            for (size_t i = 0; i < nt; i++)
                d->x_train[i * in + k] = (d->x_train[i * in + k] - (float)mu) / sd;
            for (size_t i = 0; i < nv; i++)
                d->x_valid[i * in + k] = (d->x_valid[i * in + k] - (float)mu) / sd;
        }
    } else if (d->norm_n) {
        for (size_t i = 0; i < nv; i++)
            for (size_t k = 0; k < in; k++) {
                size_t c = r.is_float ? 0 : k / per;
                d->x_valid[i * in + k] =
                    (d->x_valid[i * in + k] - d->norm_mean[c]) / d->norm_std[c];
            }
        if (r.is_float)
            for (size_t i = 0; i < nt * in; i++)
                d->x_train[i] = (d->x_train[i] - d->norm_mean[0]) / d->norm_std[0];
    }
    if (!r.is_float && !d->norm_n) {
        d->norm_n = C; /* bytes must still be scaled: identity normalisation */
        for (size_t c = 0; c < C; c++) {
            d->norm_mean[c] = 0.0f;
            d->norm_std[c] = 1.0f;
        }
    }
    /* Augmentation only makes sense for images (C x H x W with H, W > 1). */
    bool image = !r.is_float && r.H > 1 && r.W > 1;
    d->aug_flip = image && s->aug_flip;
    d->aug_pad = image ? s->aug_pad : 0;
out:
    free(map);
    free(per_class);
    free(in_valid);
    eng_rawdata_fini(&r);
    return rc;
}
