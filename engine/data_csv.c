/*
 * data_csv.c: tabular data as CSV: train.csv and optionally test.csv (or one other *.csv
 * as the training file). The first row is a header naming the columns; the label column is
 * the one named "label", "class", "target" or "y" (any case), else the last column. Every
 * other column must hold a finite number in every row. Labels are text; the class names are
 * the distinct training labels, sorted (numerically when all are integers), and a test label
 * not seen in training is an error. Fields may be wrapped in double quotes (no embedded
 * commas or quotes).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data_read.h"
#include "util.h"

#define MAX_COLS 65537

typedef struct csv_acc {
    float *x;
    int32_t *y; /* index into the label table while reading */
    size_t n, cap;
} csv_acc;

typedef struct labels {
    char (*v)[ENG_CLASS_NAME_MAX];
    size_t n;
} labels;

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t len = strlen(s);
    while (len &&
           (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r' || s[len - 1] == '\n'))
        s[--len] = '\0';
    if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
        s[len - 1] = '\0';
        s++;
    }
    return s;
}

/* Splits `line` in place at commas into at most max fields; returns the count. */
static size_t split(char *line, char **f, size_t max)
{
    size_t n = 0;
    char *p = line;
    for (;;) {
        char *c = strchr(p, ',');
        if (n < max)
            f[n] = p;
        n++;
        if (!c)
            break;
        *c = '\0';
        p = c + 1;
    }
    for (size_t i = 0; i < n && i < max; i++)
        f[i] = trim(f[i]);
    return n;
}

static int label_index(labels *t, const char *name, bool add, int32_t *out)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i], name) == 0) {
            *out = (int32_t)i;
            return 0;
        }
    if (!add)
        return -1;
    if (t->n >= ENG_MAX_CLASSES)
        return -2;
    if (t->n % 64 == 0) {
        void *g = realloc(t->v, (t->n + 64) * sizeof(*t->v));
        if (!g)
            return -3;
        t->v = g;
    }
    snprintf(t->v[t->n], ENG_CLASS_NAME_MAX, "%s", name);
    *out = (int32_t)t->n++;
    return 0;
}

static int read_file(const char *path, bool is_test, size_t *n_feat, size_t *label_col, labels *tab,
                     csv_acc *acc, const eng_stopper *st, eng_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return eng_err_set(err, ENG_EIO, "data", "cannot open %s: %s", path, strerror(errno));
    char *line = NULL, **fields = NULL;
    size_t lcap = 0, lineno = 0;
    int rc = 0;
    fields = malloc(MAX_COLS * sizeof(*fields));
    if (!fields) {
        rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory reading %s", path);
        goto out;
    }
    ssize_t len;
    size_t ncols = 0;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        if (lineno % 4096 == 0 && (rc = eng_stop_check(st, err)))
            goto out;
        if (memchr(line, '\0', (size_t)len)) {
            rc = eng_err_set(err, ENG_EFORMAT, "data", "%s line %zu: a NUL byte (not a text CSV)",
                             path, lineno);
            goto out;
        }
        char *t = line;
        while (*t == ' ' || *t == '\t' || *t == '\r' || *t == '\n')
            t++;
        if (!*t)
            continue; /* blank line */
        size_t nf = split(line, fields, MAX_COLS);
        if (nf > MAX_COLS - 1) {
            rc = eng_err_set(err, ENG_EFORMAT, "data", "%s line %zu: more than %d columns", path,
                             lineno, MAX_COLS - 1);
            goto out;
        }
        if (ncols == 0) { /* the header */
            ncols = nf;
            if (nf < 2) {
                rc = eng_err_set(err, ENG_EFORMAT, "data",
                                 "%s: the header needs at least 2 columns (features and a label)",
                                 path);
                goto out;
            }
            size_t lc = nf - 1;
            for (size_t i = 0; i < nf; i++)
                if (!strcasecmp(fields[i], "label") || !strcasecmp(fields[i], "class") ||
                    !strcasecmp(fields[i], "target") || !strcasecmp(fields[i], "y")) {
                    lc = i;
                    break;
                }
            if (is_test && (nf - 1 != *n_feat || lc != *label_col)) {
                rc = eng_err_set(err, ENG_EFORMAT, "data",
                                 "%s: the header has %zu columns, label column %zu; the "
                                 "training file has %zu and %zu",
                                 path, nf, lc + 1, *n_feat + 1, *label_col + 1);
                goto out;
            }
            char *end;
            if (strtod(fields[0], &end) != 0.0 && *end == '\0' && !is_test) {
                /* a numeric first cell: most likely no header row */
                rc = eng_err_set(err, ENG_EFORMAT, "data",
                                 "%s: the first row must be a header of column names, not "
                                 "numbers",
                                 path);
                goto out;
            }
            *n_feat = nf - 1;
            *label_col = lc;
            continue;
        }
        if (nf != ncols) {
            rc = eng_err_set(err, ENG_EFORMAT, "data",
                             "%s line %zu: %zu columns, the header has %zu", path, lineno, nf,
                             ncols);
            goto out;
        }
        if (acc->n == acc->cap) {
            size_t cap = acc->cap ? acc->cap * 2 : 1024;
            float *x = realloc(acc->x, cap * *n_feat * sizeof(float));
            if (x)
                acc->x = x;
            int32_t *y = x ? realloc(acc->y, cap * sizeof(int32_t)) : NULL;
            if (!x || !y) {
                rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory reading %s", path);
                goto out;
            }
            acc->y = y;
            acc->cap = cap;
        }
        float *row = acc->x + acc->n * *n_feat;
        size_t k = 0;
        for (size_t i = 0; i < nf; i++) {
            if (i == *label_col)
                continue;
            char *end;
            errno = 0;
            double v = strtod(fields[i], &end);
            if (!fields[i][0] || *end || errno == ERANGE || !isfinite(v)) {
                rc = eng_err_set(err, ENG_EFORMAT, "data",
                                 "%s line %zu column %zu: '%.40s' is not a finite number", path,
                                 lineno, i + 1, fields[i]);
                goto out;
            }
            row[k++] = (float)v;
        }
        const char *lab = fields[*label_col];
        if (!lab[0]) {
            rc = eng_err_set(err, ENG_EFORMAT, "data", "%s line %zu: empty label", path, lineno);
            goto out;
        }
        int32_t li;
        int lr = label_index(tab, lab, !is_test, &li);
        if (lr) {
            rc = lr == -1   ? eng_err_set(err, ENG_EFORMAT, "data",
                                          "%s line %zu: label '%.40s' does not occur in the "
                                            "training file",
                                          path, lineno, lab)
                 : lr == -2 ? eng_err_set(err, ENG_EFORMAT, "data",
                                          "%s line %zu: more than %d distinct labels", path, lineno,
                                          ENG_MAX_CLASSES)
                            : eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
            goto out;
        }
        acc->y[acc->n++] = li;
    }
    if (ferror(f)) {
        rc = eng_err_set(err, ENG_EIO, "data", "%s: read error", path);
        goto out;
    }
    if (ncols == 0)
        rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: empty file (no header row)", path);
    else if (acc->n == 0 && !is_test)
        rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: a header but no data rows", path);
out:
    free(line);
    free(fields);
    fclose(f);
    return rc;
}

static bool all_integers(const labels *t)
{
    for (size_t i = 0; i < t->n; i++) {
        char *end;
        errno = 0;
        (void)strtoll(t->v[i], &end, 10); /* only the end pointer matters here */
        if (!t->v[i][0] || *end || errno)
            return false;
    }
    return true;
}

/* qsort has no context argument, so each element carries what the comparison needs. */
typedef struct sort_item {
    const char *name;
    int32_t idx;
    bool numeric;
} sort_item;

static int cmp_label(const void *a, const void *b)
{
    const sort_item *x = a, *y = b;
    if (x->numeric) {
        long long p = strtoll(x->name, NULL, 10), q = strtoll(y->name, NULL, 10);
        return p < q ? -1 : p > q;
    }
    return strcmp(x->name, y->name);
}

int eng_read_csv(const char *dir, const eng_stopper *st, eng_rawdata *out, eng_error *err)
{
    memset(out, 0, sizeof(*out));
    char **names = NULL;
    size_t nn = 0;
    labels tab = {0};
    csv_acc acc[2] = {{0}, {0}};
    sort_item *order = NULL;
    int32_t *rank = NULL;
    char train[ENG_PATH_MAX] = "", test[ENG_PATH_MAX] = "";
    int rc = eng_list_dir(dir, 'f', &names, &nn, err);
    if (rc)
        return rc;
    size_t others = 0;
    for (size_t i = 0; i < nn; i++) {
        size_t l = strlen(names[i]);
        if (l < 5 || strcasecmp(names[i] + l - 4, ".csv") != 0)
            continue;
        if (!strcasecmp(names[i], "test.csv"))
            snprintf(test, sizeof test, "%s/%s", dir, names[i]);
        else if (!strcasecmp(names[i], "train.csv"))
            snprintf(train, sizeof train, "%s/%s", dir, names[i]);
        else if (others++ == 0 && !train[0])
            snprintf(train, sizeof train, "%s/%s", dir, names[i]);
    }
    if (!train[0]) {
        rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: no training CSV file (train.csv)", dir);
        goto out;
    }
    size_t n_feat = 0, label_col = 0;
    if ((rc = read_file(train, false, &n_feat, &label_col, &tab, &acc[0], st, err)))
        goto out;
    if (test[0] && (rc = read_file(test, true, &n_feat, &label_col, &tab, &acc[1], st, err)))
        goto out;
    if (tab.n < 2) {
        rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: fewer than 2 distinct labels", train);
        goto out;
    }
    /* Sort the class names; rank[old index] = new index. */
    order = malloc(tab.n * sizeof(*order));
    rank = malloc(tab.n * sizeof(int32_t));
    if (!order || !rank) {
        rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
        goto out;
    }
    bool numeric = all_integers(&tab);
    for (size_t i = 0; i < tab.n; i++)
        order[i] = (sort_item){tab.v[i], (int32_t)i, numeric};
    qsort(order, tab.n, sizeof(*order), cmp_label);
    out->is_float = true;
    out->C = 1;
    out->H = 1;
    out->W = n_feat;
    out->in_size = n_feat;
    out->n_classes = tab.n;
    out->names = malloc(tab.n * sizeof(*out->names));
    if (!out->names) {
        rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < tab.n; i++) {
        rank[order[i].idx] = (int32_t)i;
        memcpy(out->names[i], tab.v[order[i].idx], ENG_CLASS_NAME_MAX);
    }
    for (int s = 0; s < 2; s++) {
        for (size_t k = 0; k < acc[s].n; k++)
            acc[s].y[k] = rank[acc[s].y[k]];
        out->split[s].n = acc[s].n;
        out->split[s].f32 = acc[s].x;
        out->split[s].y = acc[s].y;
        acc[s].x = NULL;
        acc[s].y = NULL;
    }
out:
    eng_names_free(names, nn);
    free(tab.v);
    free(order);
    free(rank);
    for (int s = 0; s < 2; s++) {
        free(acc[s].x);
        free(acc[s].y);
    }
    if (rc)
        eng_rawdata_fini(out);
    return rc;
}
