/*
 * data_idx.c: a registered IDX dataset: a directory holding the image and label files of
 * the training split (names containing "train") and optionally of the test split ("t10k"
 * or "test"), raw or gzip'd, as in the MNIST family's distribution.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_read.h"
#include "dataset.h"
#include "util.h"

/* Finds the one file of split `split` ("train"/"test") and role ("images"/"labels"). */
static int find_file(const char *dir, char **names, size_t n, bool test, const char *role,
                     char *path, size_t size, eng_error *err)
{
    const char *found = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *f = names[i];
        bool is_test = strstr(f, "t10k") || strstr(f, "test");
        bool is_train = strstr(f, "train") != NULL;
        if (!strstr(f, role) || (test ? !is_test : (!is_train || is_test)))
            continue;
        if (found)
            return eng_err_set(err, ENG_EFORMAT, "data", "%s: both %s and %s look like the %s %s",
                               dir, found, f, test ? "test" : "training", role);
        found = f;
    }
    if (!found) {
        path[0] = '\0';
        return test ? 0
                    : eng_err_set(err, ENG_EFORMAT, "data",
                                  "%s: no training %s file (a name containing 'train' and '%s')",
                                  dir, role, role);
    }
    snprintf(path, size, "%s/%s", dir, found);
    return 0;
}

/* Reads one (images, labels) pair into split i of r. */
static int read_pair(eng_rawdata *r, int i, const char *ip, const char *lp, eng_error *err)
{
    eng_idx im = {0}, lb = {0};
    int rc;
    if ((rc = eng_idx_read(ip, &im, err)) || (rc = eng_idx_read(lp, &lb, err)))
        goto out;
    if (lb.ndim != 1) {
        rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: labels must have 1 dimension, got %u", lp,
                         lb.ndim);
        goto out;
    }
    if (im.ndim < 2 || im.ndim > 4) {
        rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: images need 2..4 dimensions, got %u", ip,
                         im.ndim);
        goto out;
    }
    if (im.dims[0] != lb.dims[0]) {
        rc = eng_err_set(err, ENG_EFORMAT, "data", "%s has %u images but %s has %u labels", ip,
                         im.dims[0], lp, lb.dims[0]);
        goto out;
    }
    /* (N, H, W) -> 1 x H x W; (N, H, W, C) channels-last -> C x H x W; (N, F) -> 1 x 1 x F */
    size_t C = 1, H = 1, W = im.dims[1];
    if (im.ndim == 3) {
        H = im.dims[1];
        W = im.dims[2];
    } else if (im.ndim == 4) {
        H = im.dims[1];
        W = im.dims[2];
        C = im.dims[3];
        if (C != 1 && C != 3) {
            rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: %zu channels (want 1 or 3)", ip, C);
            goto out;
        }
    }
    if (i == 0) {
        r->C = C;
        r->H = H;
        r->W = W;
        r->in_size = C * H * W;
    } else if (r->C != C || r->H != H || r->W != W) {
        rc = eng_err_set(err, ENG_EFORMAT, "data",
                         "%s: images are %zux%zux%zu but the training images are %zux%zux%zu", ip,
                         C, H, W, r->C, r->H, r->W);
        goto out;
    }
    if ((rc = eng_rawdata_alloc_split(r, i, lb.count, err)))
        goto out;
    eng_split *s = &r->split[i];
    size_t HW = H * W;
    for (size_t n = 0; n < s->n; n++) {
        const uint8_t *src = im.data + n * r->in_size;
        uint8_t *dst = s->u8 + n * r->in_size;
        if (C == 1) {
            memcpy(dst, src, HW);
        } else {
            for (size_t p = 0; p < HW; p++)
                for (size_t c = 0; c < C; c++)
                    dst[c * HW + p] = src[p * C + c];
        }
        s->y[n] = lb.data[n];
    }
out:
    eng_idx_free(&im);
    eng_idx_free(&lb);
    return rc;
}

int eng_read_idx_dir(const char *dir, const eng_stopper *st, eng_rawdata *out, eng_error *err)
{
    memset(out, 0, sizeof(*out));
    char **names = NULL;
    size_t n = 0;
    char p[4][ENG_PATH_MAX];
    int rc = eng_list_dir(dir, 'f', &names, &n, err);
    if (rc)
        return rc;
    if ((rc = find_file(dir, names, n, false, "images", p[0], sizeof p[0], err)) ||
        (rc = find_file(dir, names, n, false, "labels", p[1], sizeof p[1], err)) ||
        (rc = find_file(dir, names, n, true, "images", p[2], sizeof p[2], err)) ||
        (rc = find_file(dir, names, n, true, "labels", p[3], sizeof p[3], err)))
        goto out;
    if (!p[2][0] != !p[3][0]) {
        rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: a test %s file has no matching %s file",
                         dir, p[2][0] ? "images" : "labels", p[2][0] ? "labels" : "images");
        goto out;
    }
    if ((rc = eng_stop_check(st, err)) || (rc = read_pair(out, 0, p[0], p[1], err)))
        goto out;
    if (p[2][0] && ((rc = eng_stop_check(st, err)) || (rc = read_pair(out, 1, p[2], p[3], err))))
        goto out;
    int max_label = -1;
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < out->split[i].n; k++)
            if (out->split[i].y[k] > max_label)
                max_label = out->split[i].y[k];
    if (max_label < 1) {
        rc =
            eng_err_set(err, ENG_EFORMAT, "data", "%s: the labels name fewer than 2 classes", p[1]);
        goto out;
    }
    rc = eng_rawdata_default_names(out, (size_t)max_label + 1, err);
out:
    eng_names_free(names, n);
    if (rc)
        eng_rawdata_fini(out);
    return rc;
}
