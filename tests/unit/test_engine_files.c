/* test_engine_files: sha256 test vectors; safetensors round trip (and the digest of what
 * was written) and malformed files; IDX reading raw and gzip, bad magic, truncation,
 * trailing bytes; IDX datasets with class subsets, per-class limits and normalisation;
 * the deterministic shuffle. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "dataset.h"
#include "safetensors.h"
#include "sha256.h"
#include "tap.h"

static char dir[64];

static const char *tmp(const char *name)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
    return p[k];
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n)
        diag("cannot write %s", path);
    if (f)
        fclose(f);
}

static void check_sha256(void)
{
    struct {
        const char *in, *out;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < 3; i++) {
        eng_sha256 s;
        char hex[65];
        eng_sha256_init(&s);
        eng_sha256_update(&s, v[i].in, strlen(v[i].in));
        eng_sha256_final_hex(&s, hex);
        is_str(hex, v[i].out, "sha256 FIPS vector %zu", i);
    }
    /* a million 'a' fed in odd-sized pieces */
    eng_sha256 s;
    char hex[65], chunk[997];
    memset(chunk, 'a', sizeof(chunk));
    eng_sha256_init(&s);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof(chunk) ? left : sizeof(chunk);
        eng_sha256_update(&s, chunk, n);
        left -= n;
    }
    eng_sha256_final_hex(&s, hex);
    is_str(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
           "sha256 of a million 'a'");
}

static void check_roundtrip(void)
{
    float a[6] = {1, 2, 3, 4, 5, -6.5f}, b[3] = {0.25f, NAN, 1e30f};
    eng_st_tensor t[2] = {{.name = "0.0.weight", .ndim = 2, .shape = {2, 3}, .data = a},
                          {.name = "we\"ird\\name", .ndim = 1, .shape = {3}, .data = b}};
    eng_st_kv meta[1] = {{"format", "pt"}};
    uint64_t size = 0;
    char sha[65], sha2[65];
    const char *p = tmp("rt.safetensors");
    eng_error err;
    is_int(eng_st_write(p, t, 2, meta, 1, &size, sha, &err), 0, "write (%s)", err.text);
    FILE *f = fopen(p, "rb");
    unsigned char buf[4096];
    size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f)
        fclose(f);
    is_int(n, size, "reported size = file size");
    eng_sha256 s;
    eng_sha256_init(&s);
    eng_sha256_update(&s, buf, n);
    eng_sha256_final_hex(&s, sha2);
    is_str(sha, sha2, "reported sha256 = sha256 of the file");
    char tmpname[300];
    snprintf(tmpname, sizeof(tmpname), "%s.tmp.%ld", p, (long)getpid());
    ok(access(tmpname, F_OK) != 0 && access(p, F_OK) == 0,
       "renamed into place, no temporary file left");
    eng_st_file *rf = NULL;
    is_int(eng_st_read(p, &rf, &err), 0, "read back (%s)", err.text);
    if (!rf)
        return;
    const eng_st_entry *e0 = eng_st_find(rf, "0.0.weight"), *e1 = eng_st_find(rf, "we\"ird\\name");
    float ra[6], rb[3];
    ok(e0 && e1 && e0->ndim == 2 && e0->shape[0] == 2 && e0->shape[1] == 3 &&
           eng_st_copy(rf, e0, ra, 6, NULL) == 0 && eng_st_copy(rf, e1, rb, 3, NULL) == 0 &&
           memcmp(ra, a, sizeof(a)) == 0 && memcmp(rb, b, sizeof(b)) == 0,
       "tensors, names with escapes and values (NaN, 1e30) survive");
    is_str(eng_st_meta(rf, "format"), "pt", "metadata survives");
    ok((rf->data_off % 8) == 0, "data section 8-byte aligned");
    eng_st_close(rf);
    /* truncated copy of the valid file */
    write_bytes(tmp("trunc.safetensors"), buf, n - 5);
    rf = NULL;
    is_int(eng_st_read(tmp("trunc.safetensors"), &rf, &err), ENG_EFORMAT, "truncated file");
    diag("%s", err.text);
    write_bytes(tmp("tiny.safetensors"), buf, 5);
    is_int(eng_st_read(tmp("tiny.safetensors"), &rf, &err), ENG_EFORMAT, "5-byte file");
    is_int(eng_st_read(tmp("missing.safetensors"), &rf, &err), ENG_EIO, "missing file: EIO");
}

/* Writes a file with the given header text and `data_len` zero data bytes. */
static int try_header(const char *name, const char *hdr, size_t data_len, uint64_t fake_len,
                      eng_error *err)
{
    unsigned char buf[1024] = {0};
    size_t hl = strlen(hdr);
    uint64_t len = fake_len ? fake_len : hl;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    write_bytes(tmp(name), buf, 8 + hl + data_len);
    eng_st_file *f = NULL;
    int rc = eng_st_read(tmp(name), &f, err);
    eng_st_close(f);
    return rc;
}

static void check_malformed(void)
{
    eng_error err;
    struct {
        const char *what, *hdr;
        size_t data;
        uint64_t fake;
        const char *needle;
    } c[] = {
        {"header length too big", "{}", 0, 1ull << 40, "out of bounds"},
        {"header length past the end", "{}", 0, 100, "out of bounds"},
        {"offsets out of range",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16, 0, "outside"},
        {"begin > end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 16, 0,
         "outside"},
        {"wrong dtype", "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 16, 0,
         "F16"},
        {"shape mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16,
         0, "shape"},
        {"overlap",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
         "\"shape\":[2],\"data_offsets\":[4,12]}}",
         16, 0, "overlap"},
        {"not JSON", "hello", 0, 0, "malformed"},
        {"metadata not a string", "{\"__metadata__\":{\"k\":5}}", 0, 0, "strings"},
        {"unknown key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
         4, 0, "unknown key"},
        {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, 0, "needs"},
        {"negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, 0,
         "integer"},
        {"duplicate",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\","
         "\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, 0, "duplicate"},
        {"trailing garbage", "{} x", 0, 0, "trailing"},
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        int rc = try_header("bad.safetensors", c[i].hdr, c[i].data, c[i].fake, &err);
        ok(rc == ENG_EFORMAT && strstr(err.text, c[i].needle) != NULL, "malformed: %s -> %s",
           c[i].what, err.text);
    }
    is_int(try_header("ok.safetensors",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, 0,
                      &err),
           0, "a scalar tensor is fine (%s)", err.text);
}

/* ---- IDX ---- */

static size_t idx_bytes(unsigned char *b, unsigned ndim, const unsigned *dims,
                        const unsigned char *data)
{
    size_t n = 0, count = 1;
    b[n++] = 0;
    b[n++] = 0;
    b[n++] = 8;
    b[n++] = (unsigned char)ndim;
    for (unsigned i = 0; i < ndim; i++) {
        b[n++] = (unsigned char)(dims[i] >> 24);
        b[n++] = (unsigned char)(dims[i] >> 16);
        b[n++] = (unsigned char)(dims[i] >> 8);
        b[n++] = (unsigned char)dims[i];
        count *= dims[i];
    }
    memcpy(b + n, data, count);
    return n + count;
}

static void write_gz(const char *path, const void *b, size_t n)
{
    gzFile g = gzopen(path, "wb");
    if (!g || gzwrite(g, b, (unsigned)n) != (int)n)
        diag("gz write failed");
    if (g)
        gzclose(g);
}

static void check_idx(void)
{
    /* 12 images of 2x2: image i has all pixels = 20*i; labels i % 4 */
    unsigned char img[48], lab[12], buf[256];
    for (int i = 0; i < 12; i++) {
        memset(img + 4 * i, 20 * i, 4);
        lab[i] = (unsigned char)(i % 4);
    }
    unsigned dimg[3] = {12, 2, 2}, dlab[1] = {12};
    size_t n = idx_bytes(buf, 3, dimg, img);
    write_bytes(tmp("img.idx"), buf, n);
    write_gz(tmp("img.idx.gz"), buf, n);
    write_bytes(tmp("img-trunc.idx"), buf, n - 3);
    unsigned char big[300];
    memcpy(big, buf, n);
    big[n] = 1;
    write_bytes(tmp("img-trail.idx"), big, n + 1);
    buf[2] = 0x0d; /* float data: unsupported magic */
    write_bytes(tmp("img-magic.idx"), buf, n);
    n = idx_bytes(buf, 1, dlab, lab);
    write_gz(tmp("lab.idx.gz"), buf, n);
    write_bytes(tmp("lab.idx"), buf, n);
    unsigned dlab_short[1] = {11};
    n = idx_bytes(buf, 1, dlab_short, lab);
    write_bytes(tmp("lab-short.idx"), buf, n);

    eng_idx x;
    eng_error err;
    is_int(eng_idx_read(tmp("img.idx"), &x, &err), 0, "raw IDX reads (%s)", err.text);
    ok(x.ndim == 3 && x.dims[0] == 12 && x.dims[1] == 2 && x.count == 48 && x.data[47] == 220,
       "dims and data");
    eng_idx_free(&x);
    is_int(eng_idx_read(tmp("img.idx.gz"), &x, &err), 0, "gzip IDX reads (%s)", err.text);
    ok(x.count == 48 && x.data[4] == 20, "gz data");
    eng_idx_free(&x);
    is_int(eng_idx_read(tmp("img-magic.idx"), &x, &err), ENG_EFORMAT, "bad magic: %s", err.text);
    is_int(eng_idx_read(tmp("img-trunc.idx"), &x, &err), ENG_EFORMAT, "truncated: %s", err.text);
    is_int(eng_idx_read(tmp("img-trail.idx"), &x, &err), ENG_EFORMAT, "trailing: %s", err.text);
    is_int(eng_idx_read(tmp("nope.idx"), &x, &err), ENG_EIO, "missing: %s", err.text);

    eng_data_spec ds;
    eng_data_spec_defaults(&ds);
    ds.kind = ENG_DATA_IDX;
    snprintf(ds.train_images, sizeof(ds.train_images), "%s", tmp("img.idx.gz"));
    snprintf(ds.train_labels, sizeof(ds.train_labels), "%s", tmp("lab.idx.gz"));
    snprintf(ds.valid_images, sizeof(ds.valid_images), "%s", tmp("img.idx"));
    snprintf(ds.valid_labels, sizeof(ds.valid_labels), "%s", tmp("lab.idx"));
    eng_dataset *d = NULL;
    is_int(eng_dataset_load(&ds, &d, &err), 0, "IDX dataset loads (%s)", err.text);
    if (d) {
        ok(d->n_train == 12 && d->n_classes == 4 && d->in_ndim == 3 && d->in_shape[0] == 1 &&
               d->in_shape[1] == 2 && d->in_size == 4,
           "12 samples of 1x2x2, 4 classes");
        is_near(d->x_train[4], 20.0 / 255.0, 1e-6, "bytes scaled to [0, 1]");
        eng_dataset_destroy(d);
    }
    /* subset {3, 1} relabelled 0, 1; at most 2 per class in file order */
    ds.n_subset = 2;
    ds.subset[0] = 3;
    ds.subset[1] = 1;
    ds.per_class_limit = 2;
    ds.normalize_auto = true;
    d = NULL;
    is_int(eng_dataset_load(&ds, &d, &err), 0, "subset + limit + auto normalisation");
    if (d) {
        ok(d->n_train == 4 && d->n_classes == 2 && d->n_valid == 6,
           "4 train (2 per class), 6 valid");
        /* file order: 1 (cls1), 3 (cls3), 5 (cls1), 7 (cls3) */
        ok(d->y_train[0] == 1 && d->y_train[1] == 0 && d->y_train[2] == 1 && d->y_train[3] == 0,
           "relabelled in subset order");
        double mean = 0, sq = 0;
        for (size_t i = 0; i < 16; i++)
            mean += (double)d->x_train[i];
        mean /= 16;
        for (size_t i = 0; i < 16; i++)
            sq += ((double)d->x_train[i] - mean) * ((double)d->x_train[i] - mean);
        ok(fabs(mean) < 1e-5 && fabs(sq / 16 - 1.0) < 1e-4, "auto: train mean 0, std 1");
        is_near(d->mean, (20.0 + 60 + 100 + 140) / 4 / 255.0, 1e-6, "mean of the training split");
        eng_dataset_destroy(d);
    }
    ds.subset[1] = 3;
    d = NULL;
    is_int(eng_dataset_load(&ds, &d, &err), ENG_EINVAL, "duplicate class: %s", err.text);
    ds.n_subset = 0;
    snprintf(ds.train_labels, sizeof(ds.train_labels), "%s", tmp("lab-short.idx"));
    is_int(eng_dataset_load(&ds, &d, &err), ENG_EFORMAT, "count mismatch: %s", err.text);
    snprintf(ds.train_images, sizeof(ds.train_images), "%s", tmp("img-magic.idx"));
    is_int(eng_dataset_load(&ds, &d, &err), ENG_EFORMAT, "bad file in a dataset: %s", err.text);
}

static void check_shuffle(void)
{
    uint32_t a[100], b[100], c[100];
    eng_dataset_shuffle(a, 100, 5, 1, 0);
    eng_dataset_shuffle(b, 100, 5, 1, 0);
    eng_dataset_shuffle(c, 100, 5, 1, 1);
    ok(memcmp(a, b, sizeof(a)) == 0, "same (seed, stage, epoch) -> same order");
    ok(memcmp(a, c, sizeof(a)) != 0, "next epoch -> different order");
    int seen[100] = {0}, okp = 1;
    for (int i = 0; i < 100; i++)
        seen[a[i]]++;
    for (int i = 0; i < 100; i++)
        okp &= seen[i] == 1;
    ok(okp, "a permutation");
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/thawd-test-files-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    check_sha256();
    check_roundtrip();
    check_malformed();
    check_idx();
    check_shuffle();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        diag("cleanup failed");
    return done_testing();
}
