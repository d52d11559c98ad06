/*
 * data_cifar.c: CIFAR-10 and CIFAR-100 in their binary form. A record is the label byte(s)
 * (CIFAR-10: label 0..9; CIFAR-100: coarse 0..19 then fine 0..99, we use the fine one)
 * followed by 3072 bytes: 1024 red, 1024 green, 1024 blue, each 32x32 row-major, which is
 * already our C x H x W layout. Every *.bin file of the directory is read; files whose
 * name starts with "test" form the test split. Class names come from batches.meta.txt
 * (CIFAR-10) or fine_label_names.txt (CIFAR-100) when present.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_read.h"
#include "util.h"

#define IMG 3072

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Reads one batch file, appending its records to split i at offset *pos (counting only
 * when `fill` is false). */
static int read_bin(const char *path, bool hundred, eng_rawdata *r, int i, size_t *pos, bool fill,
                    eng_error *err)
{
    size_t rec = IMG + (hundred ? 2 : 1);
    FILE *f = fopen(path, "rb");
    if (!f)
        return eng_err_set(err, ENG_EIO, "data", "cannot open %s: %s", path, strerror(errno));
    int rc = 0;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        rc = eng_err_set(err, ENG_EIO, "data", "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    size_t size = (size_t)st.st_size;
    if (size == 0 || size % rec != 0) {
        rc = eng_err_set(err, ENG_EFORMAT, "data",
                         "%s: %zu bytes is not a whole number of %zu-byte CIFAR-%s records "
                         "(truncated, or not CIFAR-%s binary)",
                         path, size, rec, hundred ? "100" : "10", hundred ? "100" : "10");
        goto out;
    }
    size_t n = size / rec;
    if (!fill) {
        *pos += n;
        goto out;
    }
    eng_split *s = &r->split[i];
    unsigned char hdr[2];
    for (size_t k = 0; k < n; k++) {
        size_t at = *pos + k;
        if (fread(hdr, 1, rec - IMG, f) != rec - IMG || fread(s->u8 + at * IMG, 1, IMG, f) != IMG) {
            rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: short read at record %zu", path, k);
            goto out;
        }
        int label = hundred ? hdr[1] : hdr[0];
        int max = hundred ? 99 : 9;
        if (label > max || (hundred && hdr[0] > 19)) {
            rc = eng_err_set(err, ENG_EFORMAT, "data",
                             "%s: record %zu has label %d (CIFAR-%s labels are 0..%d)", path, k,
                             hundred && hdr[0] > 19 ? hdr[0] : label, hundred ? "100" : "10",
                             hundred && hdr[0] > 19 ? 19 : max);
            goto out;
        }
        s->y[at] = label;
    }
    *pos += n;
out:
    fclose(f);
    return rc;
}

/* Reads class names, one per line, from `path` if it exists (blank lines skipped). */
static int read_names(const char *path, eng_rawdata *r, eng_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0; /* optional */
    char line[256];
    size_t k = 0;
    while (k < r->n_classes && fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        if (len == 0)
            continue;
        if (len >= ENG_CLASS_NAME_MAX)
            line[ENG_CLASS_NAME_MAX - 1] = '\0';
        memcpy(r->names[k++], line, strlen(line) + 1);
    }
    fclose(f);
    (void)err;
    return 0;
}

int eng_read_cifar(const char *dir, bool hundred, const eng_stopper *st, eng_rawdata *out,
                   eng_error *err)
{
    memset(out, 0, sizeof(*out));
    char **names = NULL;
    size_t n = 0;
    int rc = eng_list_dir(dir, 'f', &names, &n, err);
    if (rc)
        return rc;
    out->C = 3;
    out->H = 32;
    out->W = 32;
    out->in_size = IMG;
    char path[ENG_PATH_MAX];
    size_t count[2] = {0, 0};
    for (int pass = 0; pass < 2; pass++) {
        size_t pos[2] = {0, 0};
        for (size_t k = 0; k < n; k++) {
            if (!ends_with(names[k], ".bin"))
                continue;
            int i = strncmp(names[k], "test", 4) == 0;
            if (!eng_path_join(path, sizeof path, dir, names[k]))
                continue;
            if ((rc = eng_stop_check(st, err)) ||
                (rc = read_bin(path, hundred, out, i, &pos[i], pass == 1, err)))
                goto out;
        }
        if (pass == 0) {
            memcpy(count, pos, sizeof count);
            if (count[0] == 0) {
                rc = eng_err_set(err, ENG_EFORMAT, "data",
                                 "%s: no training batches (*.bin files not named test*)", dir);
                goto out;
            }
            for (int i = 0; i < 2; i++)
                if (count[i] && (rc = eng_rawdata_alloc_split(out, i, count[i], err)))
                    goto out;
        }
    }
    if ((rc = eng_rawdata_default_names(out, hundred ? 100 : 10, err)))
        goto out;
    if (eng_path_join(path, sizeof path, dir,
                      hundred ? "fine_label_names.txt" : "batches.meta.txt"))
        rc = read_names(path, out, err);
out:
    eng_names_free(names, n);
    if (rc)
        eng_rawdata_fini(out);
    return rc;
}
