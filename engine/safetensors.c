/*
 * safetensors.c: the safetensors container (see safetensors.h) with a small JSON reader for
 * exactly the header grammar, strict validation, and atomic writes with a sha256 digest.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sha256.h"
#include "util.h"

#define MAX_HEADER (100u * 1024u * 1024u)

/* ---- writing ----------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)s, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* PyTorch's BatchNorm counter is int64; it is the only integer tensor of thawd's models. A
 * tensor whose last name component is num_batches_tracked is written as I64 (the engine
 * keeps it as a float holding an integer, exact below 2^24). */
static bool is_i64_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return strcmp(dot ? dot + 1 : name, "num_batches_tracked") == 0;
}

int eng_st_write(const char *path, const eng_st_tensor *t, size_t n, const eng_st_kv *meta,
                 size_t n_meta, uint64_t *size, char sha256[65], eng_error *err)
{
    int rc = 0, fd = -1;
    sbuf h = {0};
    char tmp[ENG_PATH_MAX + 32], num[64];
    bool tmp_made = false;
    uint64_t off = 0;

    sb_str(&h, "{");
    if (n_meta) {
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i)
                sb_str(&h, ",");
            sb_json_string(&h, meta[i].key);
            sb_str(&h, ":");
            sb_json_string(&h, meta[i].value);
        }
        sb_str(&h, "}");
    }
    for (size_t i = 0; i < n; i++) {
        size_t count = 1;
        if (n_meta || i)
            sb_str(&h, ",");
        const size_t esz = is_i64_name(t[i].name) ? 8 : 4;
        sb_json_string(&h, t[i].name);
        sb_str(&h,
               esz == 8 ? ":{\"dtype\":\"I64\",\"shape\":[" : ":{\"dtype\":\"F32\",\"shape\":[");
        for (size_t d = 0; d < t[i].ndim; d++) {
            snprintf(num, sizeof(num), "%s%zu", d ? "," : "", t[i].shape[d]);
            sb_str(&h, num);
            count *= t[i].shape[d];
        }
        snprintf(num, sizeof(num), "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + esz * count));
        sb_str(&h, num);
        off += esz * (uint64_t)count;
    }
    sb_str(&h, "}");
    while (h.n % 8) /* pad with spaces so the data section is 8-byte aligned */
        sb_str(&h, " ");
    if (h.oom) {
        rc = eng_err_set(err, ENG_ENOMEM, NULL, "out of memory writing %s", path);
        goto fail;
    }

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        rc = eng_err_set(err, ENG_EIO, NULL, "path too long: %s", path);
        goto fail;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = eng_err_set(err, ENG_EIO, NULL, "cannot create %s: %s", tmp, strerror(errno));
        goto fail;
    }
    tmp_made = true;
    eng_sha256 sh;
    eng_sha256_init(&sh);
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    eng_sha256_update(&sh, lenb, 8);
    eng_sha256_update(&sh, h.p, h.n);
    if (write_all(fd, lenb, 8) || write_all(fd, h.p, h.n))
        goto io_fail;
    for (size_t i = 0; i < n; i++) {
        size_t count = 1;
        for (size_t d = 0; d < t[i].ndim; d++)
            count *= t[i].shape[d];
        if (is_i64_name(t[i].name)) {
            for (size_t k = 0; k < count; k++) {
                unsigned char b8[8];
                uint64_t v = (uint64_t)(int64_t)llrintf(t[i].data[k]);
                for (int bi = 0; bi < 8; bi++)
                    b8[bi] = (unsigned char)(v >> (8 * bi));
                eng_sha256_update(&sh, b8, 8);
                if (write_all(fd, b8, 8))
                    goto io_fail;
            }
            continue;
        }
        /* the engine only runs on little-endian hosts (checked in eng_job_run) */
        eng_sha256_update(&sh, t[i].data, count * 4);
        if (write_all(fd, t[i].data, count * 4))
            goto io_fail;
    }
    if (fsync(fd) != 0)
        goto io_fail;
    if (close(fd) != 0) {
        fd = -1;
        goto io_fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto io_fail;
    tmp_made = false;
    {
        /* make the rename durable: fsync the directory */
        char dir[ENG_PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *(slash == dir ? slash + 1 : slash) = '\0';
        else
            strcpy(dir, ".");
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            int r = fsync(dfd);
            close(dfd);
            if (r != 0)
                goto io_fail;
        }
    }
    if (size)
        *size = 8 + h.n + off;
    if (sha256)
        eng_sha256_final_hex(&sh, sha256);
    free(h.p);
    return 0;
io_fail:
    rc = eng_err_set(err, ENG_EIO, NULL, "cannot write %s: %s", path, strerror(errno));
fail:
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        unlink(tmp);
    free(h.p);
    return rc;
}

/* ---- reading ----------------------------------------------------------------------------- */

typedef struct jp {
    const char *s, *end;
    const char *path;
    eng_error *err;
} jp;

static int jfail(jp *j, const char *what)
{
    return eng_err_set(j->err, ENG_EFORMAT, NULL, "%s: malformed safetensors header: %s", j->path,
                       what);
}

static void jws(jp *j)
{
    while (j->s < j->end && (*j->s == ' ' || *j->s == '\t' || *j->s == '\n' || *j->s == '\r'))
        j->s++;
}

static bool jeat(jp *j, char c)
{
    jws(j);
    if (j->s < j->end && *j->s == c) {
        j->s++;
        return true;
    }
    return false;
}

/* Parses a JSON string into a malloc'd, NUL-terminated copy (caller frees). */
static int jstring(jp *j, char **out)
{
    *out = NULL;
    jws(j);
    if (j->s >= j->end || *j->s != '"')
        return jfail(j, "expected a string");
    j->s++;
    size_t cap = 32, n = 0;
    char *o = malloc(cap);
    if (!o)
        return eng_err_set(j->err, ENG_ENOMEM, NULL, "out of memory");
    for (;;) {
        if (j->s >= j->end) {
            free(o);
            return jfail(j, "unterminated string");
        }
        unsigned char c = (unsigned char)*j->s++;
        if (c == '"')
            break;
        if (c < 0x20) {
            free(o);
            return jfail(j, "control character in string");
        }
        if (c == '\\') {
            if (j->s >= j->end) {
                free(o);
                return jfail(j, "unterminated escape");
            }
            char e = *j->s++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                c = (unsigned char)e;
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                unsigned v = 0;
                for (int k = 0; k < 4; k++) {
                    char hc = j->s < j->end ? *j->s++ : 'x';
                    unsigned d = hc >= '0' && hc <= '9'   ? (unsigned)(hc - '0')
                                 : hc >= 'a' && hc <= 'f' ? (unsigned)(hc - 'a' + 10)
                                 : hc >= 'A' && hc <= 'F' ? (unsigned)(hc - 'A' + 10)
                                                          : 99;
                    if (d == 99) {
                        free(o);
                        return jfail(j, "bad \\u escape");
                    }
                    v = v * 16 + d;
                }
                if (v == 0 || v > 0x7f) {
                    free(o);
                    return jfail(j, "only ASCII \\u escapes are supported");
                }
                c = (unsigned char)v;
                break;
            }
            default:
                free(o);
                return jfail(j, "bad escape");
            }
        }
        if (n + 2 > cap) {
            char *q = realloc(o, cap *= 2);
            if (!q) {
                free(o);
                return eng_err_set(j->err, ENG_ENOMEM, NULL, "out of memory");
            }
            o = q;
        }
        o[n++] = (char)c;
    }
    o[n] = '\0';
    *out = o;
    return 0;
}

static int juint(jp *j, uint64_t *v)
{
    jws(j);
    if (j->s >= j->end || *j->s < '0' || *j->s > '9')
        return jfail(j, "expected a non-negative integer");
    uint64_t x = 0;
    while (j->s < j->end && *j->s >= '0' && *j->s <= '9') {
        uint64_t d = (uint64_t)(*j->s - '0');
        if (x > (UINT64_MAX - d) / 10)
            return jfail(j, "integer too large");
        x = x * 10 + d;
        j->s++;
    }
    if (j->s < j->end && (*j->s == '.' || *j->s == 'e' || *j->s == 'E'))
        return jfail(j, "expected an integer");
    *v = x;
    return 0;
}

/* Parses [u, u, ...] into v (at most max values). */
static int juint_array(jp *j, uint64_t *v, size_t max, size_t *n)
{
    *n = 0;
    if (!jeat(j, '['))
        return jfail(j, "expected an array");
    if (jeat(j, ']'))
        return 0;
    for (;;) {
        if (*n == max)
            return jfail(j, "array too long");
        int rc = juint(j, &v[(*n)++]);
        if (rc)
            return rc;
        if (jeat(j, ']'))
            return 0;
        if (!jeat(j, ','))
            return jfail(j, "expected ',' or ']'");
    }
}

static int parse_tensor(jp *j, eng_st_entry *e)
{
    bool have_dtype = false, have_shape = false, have_off = false;
    if (!jeat(j, '{'))
        return jfail(j, "tensor entry must be an object");
    if (jeat(j, '}'))
        return jfail(j, "empty tensor entry");
    for (;;) {
        char *key = NULL;
        int rc = jstring(j, &key);
        if (rc)
            return rc;
        if (!jeat(j, ':')) {
            free(key);
            return jfail(j, "expected ':'");
        }
        if (strcmp(key, "dtype") == 0) {
            char *dt = NULL;
            free(key);
            rc = jstring(j, &dt);
            if (rc)
                return rc;
            snprintf(e->dtype, sizeof(e->dtype), "%s", dt);
            free(dt);
            have_dtype = true;
        } else if (strcmp(key, "shape") == 0) {
            uint64_t v[ENG_ST_MAX_DIMS];
            size_t n;
            free(key);
            rc = juint_array(j, v, ENG_ST_MAX_DIMS, &n);
            if (rc)
                return rc;
            e->ndim = n;
            for (size_t i = 0; i < n; i++) {
                if (v[i] > SIZE_MAX / 4)
                    return jfail(j, "dimension too large");
                e->shape[i] = (size_t)v[i];
            }
            have_shape = true;
        } else if (strcmp(key, "data_offsets") == 0) {
            uint64_t v[2];
            size_t n;
            free(key);
            rc = juint_array(j, v, 2, &n);
            if (rc)
                return rc;
            if (n != 2)
                return jfail(j, "data_offsets must have 2 values");
            e->begin = v[0];
            e->end = v[1];
            have_off = true;
        } else {
            free(key);
            return jfail(j, "unknown key in tensor entry");
        }
        if (jeat(j, '}'))
            break;
        if (!jeat(j, ','))
            return jfail(j, "expected ',' or '}'");
    }
    if (!have_dtype || !have_shape || !have_off)
        return jfail(j, "tensor entry needs dtype, shape and data_offsets");
    return 0;
}

static int parse_meta(jp *j, eng_st_file *f)
{
    if (!jeat(j, '{'))
        return jfail(j, "__metadata__ must be an object");
    if (jeat(j, '}'))
        return 0;
    for (;;) {
        eng_st_meta_kv kv = {0};
        int rc = jstring(j, &kv.key);
        if (rc)
            return rc;
        if (!jeat(j, ':')) {
            free(kv.key);
            return jfail(j, "expected ':'");
        }
        rc = jstring(j, &kv.value);
        if (rc) {
            free(kv.key);
            return rc == ENG_EFORMAT ? jfail(j, "__metadata__ values must be strings") : rc;
        }
        eng_st_meta_kv *q = realloc(f->meta, (f->n_meta + 1) * sizeof(*q));
        if (!q) {
            free(kv.key);
            free(kv.value);
            return eng_err_set(j->err, ENG_ENOMEM, NULL, "out of memory");
        }
        f->meta = q;
        f->meta[f->n_meta++] = kv;
        if (jeat(j, '}'))
            return 0;
        if (!jeat(j, ','))
            return jfail(j, "expected ',' or '}'");
    }
}

static int cmp_begin(const void *a, const void *b)
{
    const eng_st_entry *x = *(const eng_st_entry *const *)a;
    const eng_st_entry *y = *(const eng_st_entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

void eng_st_close(eng_st_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        free(f->e[i].name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->e);
    free(f->meta);
    free(f->buf);
    free(f);
}

static int read_file(const char *path, unsigned char **buf, size_t *len, eng_error *err)
{
    *buf = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return eng_err_set(err, ENG_EIO, NULL, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return eng_err_set(err, ENG_EIO, NULL, "%s is not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *b = malloc(n ? n : 1);
    if (!b) {
        fclose(fp);
        return eng_err_set(err, ENG_ENOMEM, NULL, "out of memory reading %s", path);
    }
    if (fread(b, 1, n, fp) != n) {
        free(b);
        fclose(fp);
        return eng_err_set(err, ENG_EIO, NULL, "cannot read %s", path);
    }
    fclose(fp);
    *buf = b;
    *len = n;
    return 0;
}

int eng_st_read(const char *path, eng_st_file **out, eng_error *err)
{
    int rc;
    eng_st_entry **order = NULL;
    eng_st_file *f = calloc(1, sizeof(*f));
    *out = NULL;
    if (!f)
        return eng_err_set(err, ENG_ENOMEM, NULL, "out of memory");
    rc = read_file(path, &f->buf, &f->len, err);
    if (rc)
        goto fail;
    if (f->len < 8) {
        rc = eng_err_set(err, ENG_EFORMAT, NULL, "%s: truncated: %zu bytes, need at least 8", path,
                         f->len);
        goto fail;
    }
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)f->buf[i] << (8 * i);
    if (hl < 2 || hl > MAX_HEADER || hl > f->len - 8) {
        rc = eng_err_set(err, ENG_EFORMAT, NULL,
                         "%s: header length %llu out of bounds (file has %zu bytes after the "
                         "length, limit %u)",
                         path, (unsigned long long)hl, f->len - 8, MAX_HEADER);
        goto fail;
    }
    f->data_off = 8 + (size_t)hl;
    jp j = {(const char *)f->buf + 8, (const char *)f->buf + 8 + hl, path, err};
    if (!jeat(&j, '{')) {
        rc = jfail(&j, "header must be a JSON object");
        goto fail;
    }
    if (!jeat(&j, '}')) {
        for (;;) {
            char *key = NULL;
            rc = jstring(&j, &key);
            if (rc)
                goto fail;
            if (!jeat(&j, ':')) {
                free(key);
                rc = jfail(&j, "expected ':'");
                goto fail;
            }
            if (strcmp(key, "__metadata__") == 0) {
                free(key);
                rc = parse_meta(&j, f);
                if (rc)
                    goto fail;
            } else {
                eng_st_entry *q = realloc(f->e, (f->n + 1) * sizeof(*q));
                if (!q) {
                    free(key);
                    rc = eng_err_set(err, ENG_ENOMEM, NULL, "out of memory");
                    goto fail;
                }
                f->e = q;
                memset(&f->e[f->n], 0, sizeof(eng_st_entry));
                f->e[f->n].name = key;
                f->n++;
                rc = parse_tensor(&j, &f->e[f->n - 1]);
                if (rc)
                    goto fail;
            }
            if (jeat(&j, '}'))
                break;
            if (!jeat(&j, ',')) {
                rc = jfail(&j, "expected ',' or '}'");
                goto fail;
            }
        }
    }
    jws(&j);
    if (j.s != j.end) {
        rc = jfail(&j, "trailing bytes after the JSON object");
        goto fail;
    }
    /* tensors: dtype, shape vs byte length, bounds, overlap, duplicates */
    uint64_t data_len = f->len - f->data_off;
    for (size_t i = 0; i < f->n; i++) {
        eng_st_entry *e = &f->e[i];
        if (strcmp(e->dtype, "F32") != 0 && strcmp(e->dtype, "I64") != 0) {
            rc = eng_err_set(err, ENG_EFORMAT, NULL,
                             "%s: tensor \"%.60s\" has dtype %s; only F32 and I64 are supported",
                             path, e->name, e->dtype);
            goto fail;
        }
        const uint64_t esz = strcmp(e->dtype, "I64") == 0 ? 8 : 4;
        if (e->begin > e->end || e->end > data_len) {
            rc = eng_err_set(err, ENG_EFORMAT, NULL,
                             "%s: tensor \"%.60s\" data_offsets [%llu, %llu] outside the %llu "
                             "data bytes",
                             path, e->name, (unsigned long long)e->begin,
                             (unsigned long long)e->end, (unsigned long long)data_len);
            goto fail;
        }
        uint64_t count = 1;
        for (size_t d = 0; d < e->ndim; d++) {
            if (e->shape[d] && count > UINT64_MAX / 8 / e->shape[d]) {
                count = UINT64_MAX;
                break;
            }
            count *= e->shape[d];
        }
        if (count == UINT64_MAX || count * esz != e->end - e->begin) {
            rc = eng_err_set(err, ENG_EFORMAT, NULL,
                             "%s: tensor \"%.60s\" shape needs %llu bytes but data_offsets "
                             "span %llu",
                             path, e->name, (unsigned long long)(count * esz),
                             (unsigned long long)(e->end - e->begin));
            goto fail;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(f->e[k].name, e->name) == 0) {
                rc = eng_err_set(err, ENG_EFORMAT, NULL, "%s: duplicate tensor \"%.60s\"", path,
                                 e->name);
                goto fail;
            }
    }
    if (f->n) {
        order = malloc(f->n * sizeof(*order));
        if (!order) {
            rc = eng_err_set(err, ENG_ENOMEM, NULL, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < f->n; i++)
            order[i] = &f->e[i];
        qsort(order, f->n, sizeof(*order), cmp_begin);
        for (size_t i = 1; i < f->n; i++)
            if (order[i]->begin < order[i - 1]->end) {
                rc = eng_err_set(err, ENG_EFORMAT, NULL,
                                 "%s: tensors \"%.50s\" and \"%.50s\" overlap", path,
                                 order[i - 1]->name, order[i]->name);
                goto fail;
            }
        free(order);
        order = NULL;
    }
    *out = f;
    return 0;
fail:
    free(order);
    eng_st_close(f);
    return rc;
}

const eng_st_entry *eng_st_find(const eng_st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0)
            return &f->e[i];
    return NULL;
}

const char *eng_st_meta(const eng_st_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

int eng_st_copy(const eng_st_file *f, const eng_st_entry *e, float *dst, size_t count,
                eng_error *err)
{
    const uint64_t esz = strcmp(e->dtype, "I64") == 0 ? 8 : 4;
    if ((e->end - e->begin) != (uint64_t)count * esz)
        return eng_err_set(err, ENG_ESHAPE, NULL, "tensor \"%.60s\" has %llu values, want %zu",
                           e->name, (unsigned long long)((e->end - e->begin) / esz), count);
    if (esz == 4) {
        memcpy(dst, f->buf + f->data_off + e->begin, count * 4);
        return 0;
    }
    const unsigned char *src = f->buf + f->data_off + e->begin;
    for (size_t k = 0; k < count; k++) { /* little-endian int64 -> float */
        uint64_t v = 0;
        for (int bi = 0; bi < 8; bi++)
            v |= (uint64_t)src[8 * k + (size_t)bi] << (8 * bi);
        dst[k] = (float)(int64_t)v;
    }
    return 0;
}

int eng_st_load_model(const char *path, eng_model *m, bool body_only, eng_error *err)
{
    eng_st_file *f = NULL;
    int rc = eng_st_read(path, &f, err);
    if (rc)
        return rc;
    unsigned head = (unsigned)m->n_groups - 1;
    for (size_t i = 0; i < m->n_params; i++) {
        const eng_param *p = &m->params[i];
        if (body_only && p->group == head)
            continue;
        const eng_st_entry *e = eng_st_find(f, p->name);
        if (!e) {
            rc = eng_err_set(err, ENG_ESHAPE, "model.weights", "%s: missing tensor \"%s\"", path,
                             p->name);
            goto out;
        }
        bool same = e->ndim == p->info.ndim;
        for (size_t d = 0; same && d < e->ndim; d++)
            same = e->shape[d] == p->info.shape[d];
        if (!same) {
            char have[64] = "", want[64] = "";
            for (size_t d = 0; d < e->ndim && d < 4; d++)
                snprintf(have + strlen(have), sizeof(have) - strlen(have), "%s%zu", d ? "x" : "",
                         e->shape[d]);
            for (size_t d = 0; d < p->info.ndim; d++)
                snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%zu", d ? "x" : "",
                         p->info.shape[d]);
            rc = eng_err_set(err, ENG_ESHAPE, "model.weights",
                             "%s: tensor \"%s\" has shape [%s], this architecture needs [%s]", path,
                             p->name, have, want);
            goto out;
        }
        rc = eng_st_copy(f, e, m->w + p->offset, p->count, err);
        if (rc)
            goto out;
    }
    for (size_t i = 0; i < f->n; i++) {
        const char *name = f->e[i].name;
        const eng_param *p = eng_model_find(m, name);
        if (strncmp(name, "__", 2) == 0 || strncmp(name, "opt.", 4) == 0)
            continue;
        if (!p && !body_only) {
            rc = eng_err_set(err, ENG_ESHAPE, "model.weights",
                             "%s: unexpected tensor \"%.60s\" for this architecture", path, name);
            goto out;
        }
    }
out:
    eng_st_close(f);
    return rc;
}
