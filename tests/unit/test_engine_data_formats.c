/*
 * test_engine_data_formats.c: the registered-dataset readers (IDX directory, CIFAR-10/100,
 * CSV, PNG/JPEG image folders) on small files written here, every malformed-file case
 * giving ENG_EFORMAT with a message, the real Fashion-MNIST files, and the job options
 * (subset, per-class limit, splits, normalisation) applied by eng_dataset_load.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* third-party; jpeglib.h needs stdio.h before it */
#include <jpeglib.h>
#include <png.h>

#include "dataset.h"
#include "tap.h"

static char root[256];

static void mk(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    mkdir(p, 0755);
}

static void put(const char *rel, const void *data, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(1);
    }
    fclose(f);
}

static void put_text(const char *rel, const char *text)
{
    put(rel, text, strlen(text));
}

static int inspect(eng_data_kind kind, const char *rel, eng_dataset_info **info, eng_error *err)
{
    eng_data_spec s;
    eng_data_spec_defaults(&s);
    s.kind = kind;
    snprintf(s.dir, sizeof s.dir, "%s/%s", root, rel);
    memset(err, 0, sizeof *err);
    return eng_dataset_inspect(&s, info, err);
}

/* Expects ENG_EFORMAT whose text contains `needle`. */
static void bad(eng_data_kind kind, const char *rel, const char *needle, const char *what)
{
    eng_dataset_info *info = NULL;
    eng_error err;
    int rc = inspect(kind, rel, &info, &err);
    ok(rc == ENG_EFORMAT && info == NULL && strstr(err.text, needle) != NULL, "%s: %s", what,
       err.text);
    eng_dataset_info_destroy(info);
}

static void cifar_record(unsigned char *rec, bool hundred, int label, int fill)
{
    size_t off = hundred ? 2 : 1;
    if (hundred) {
        rec[0] = (unsigned char)(label / 5);
        rec[1] = (unsigned char)label;
    } else {
        rec[0] = (unsigned char)label;
    }
    for (size_t i = 0; i < 3072; i++)
        rec[off + i] = (unsigned char)(fill + i / 1024); /* channel c holds fill + c */
}

static void test_cifar(void)
{
    unsigned char buf[5 * 3073];
    mk("c10");
    for (int i = 0; i < 5; i++)
        cifar_record(buf + i * 3073, false, i % 3, 10 * i);
    put("c10/data_batch_1.bin", buf, 3 * 3073);
    put("c10/test_batch.bin", buf + 3 * 3073, 2 * 3073);
    put_text("c10/batches.meta.txt", "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\n"
                                     "ship\ntruck\n");
    eng_dataset_info *info = NULL;
    eng_error err;
    int rc = inspect(ENG_DATA_CIFAR10, "c10", &info, &err);
    ok(rc == 0, "cifar10 reads (%s)", err.text);
    if (info) {
        is_int((int)info->n_train, 3, "cifar10: 3 training records");
        is_int((int)info->n_test, 2, "cifar10: 2 test records");
        is_int((int)info->n_classes, 10, "cifar10: 10 classes");
        ok(info->shape[0] == 3 && info->shape[1] == 32 && info->shape[2] == 32, "3x32x32");
        is_str(info->class_names[2], "bird", "class names from batches.meta.txt");
        ok(info->train_counts[0] == 1 && info->train_counts[1] == 1 && info->test_counts[0] == 1,
           "per-class counts");
        is_int((int)info->n_stats, 3, "per-channel statistics");
    }
    eng_dataset_info_destroy(info);

    mk("c10trunc");
    put("c10trunc/data_batch_1.bin", buf, 3073 * 2 - 100);
    bad(ENG_DATA_CIFAR10, "c10trunc", "not a whole number", "truncated CIFAR batch");
    mk("c10label");
    cifar_record(buf, false, 10, 0);
    put("c10label/data_batch_1.bin", buf, 3073);
    bad(ENG_DATA_CIFAR10, "c10label", "label 10", "CIFAR-10 label out of range");
    mk("c10empty");
    put_text("c10empty/readme.txt", "x");
    bad(ENG_DATA_CIFAR10, "c10empty", "no training batches", "no batch files");

    unsigned char b100[2 * 3074];
    cifar_record(b100, true, 99, 1);
    cifar_record(b100 + 3074, true, 42, 2);
    mk("c100");
    put("c100/train.bin", b100, sizeof b100);
    rc = inspect(ENG_DATA_CIFAR100, "c100", &info, &err);
    ok(rc == 0 && info && info->n_classes == 100 && info->train_counts[99] == 1 &&
           info->train_counts[42] == 1,
       "cifar100 reads fine labels (%s)", err.text);
    eng_dataset_info_destroy(info);
    mk("c100as10");
    put("c100as10/train.bin", b100, sizeof b100);
    bad(ENG_DATA_CIFAR10, "c100as10", "not a whole number", "CIFAR-100 file read as CIFAR-10");
}

static void test_csv(void)
{
    mk("csv");
    put_text("csv/train.csv", "a,b,label\n1,2,cat\n3,4.5,dog\n5,6,cat\n\n7,8,bird\n");
    put_text("csv/test.csv", "a,b,label\n1,1,dog\n");
    eng_dataset_info *info = NULL;
    eng_error err;
    int rc = inspect(ENG_DATA_CSV, "csv", &info, &err);
    ok(rc == 0, "csv reads (%s)", err.text);
    if (info) {
        is_int((int)info->n_train, 4, "csv: 4 rows (blank line skipped)");
        is_int((int)info->n_test, 1, "csv: 1 test row");
        is_int((int)info->n_classes, 3, "csv: 3 classes");
        is_str(info->class_names[0], "bird", "class names sorted");
        is_str(info->class_names[2], "dog", "class names sorted");
        ok(info->shape[2] == 2, "2 features");
        ok(info->train_counts[1] == 2, "cat counted twice");
    }
    eng_dataset_info_destroy(info);

    mk("csvnum");
    put_text("csvnum/data.csv", "x,y\n0.5,10\n0.25,2\n1,10\n");
    rc = inspect(ENG_DATA_CSV, "csvnum", &info, &err);
    ok(rc == 0 && info && strcmp(info->class_names[0], "2") == 0 &&
           strcmp(info->class_names[1], "10") == 0,
       "numeric labels sort numerically; last column is the label (%s)", err.text);
    eng_dataset_info_destroy(info);

    mk("csvragged");
    put_text("csvragged/train.csv", "a,b,label\n1,2,x\n3,y\n");
    bad(ENG_DATA_CSV, "csvragged", "line 3: 2 columns", "ragged row");
    mk("csvnan");
    put_text("csvnan/train.csv", "a,b,label\n1,2,x\n3,abc,y\n");
    bad(ENG_DATA_CSV, "csvnan", "'abc' is not a finite number", "non-numeric feature");
    mk("csvnohdr");
    put_text("csvnohdr/train.csv", "1,2,3\n4,5,6\n");
    bad(ENG_DATA_CSV, "csvnohdr", "header", "missing header row");
    mk("csvempty");
    put_text("csvempty/train.csv", "");
    bad(ENG_DATA_CSV, "csvempty", "empty file", "empty CSV");
    mk("csvunseen");
    put_text("csvunseen/train.csv", "a,label\n1,x\n2,y\n");
    put_text("csvunseen/test.csv", "a,label\n1,z\n");
    bad(ENG_DATA_CSV, "csvunseen", "'z' does not occur", "test label not in training");
    mk("csvone");
    put_text("csvone/train.csv", "a,label\n1,x\n2,x\n");
    bad(ENG_DATA_CSV, "csvone", "fewer than 2", "a single class");
}

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void idx_files(const char *dir, const char *prefix, int n_img, int n_lab, int max_label)
{
    unsigned char im[16 + 8 * 4 * 4], lb[8 + 8];
    memset(im, 0, sizeof im);
    im[2] = 8;
    im[3] = 3;
    be32(im + 4, (uint32_t)n_img);
    be32(im + 8, 4);
    be32(im + 12, 4);
    for (int i = 0; i < n_img * 16; i++)
        im[16 + i] = (unsigned char)(i * 7);
    memset(lb, 0, sizeof lb);
    lb[2] = 8;
    lb[3] = 1;
    be32(lb + 4, (uint32_t)n_lab);
    for (int i = 0; i < n_lab; i++)
        lb[8 + i] = (unsigned char)(i % (max_label + 1));
    char p[256];
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", dir, prefix);
    put(p, im, 16 + (size_t)n_img * 16);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, prefix);
    put(p, lb, 8 + (size_t)n_lab);
}

static void test_idx(void)
{
    mk("idx");
    idx_files("idx", "train", 6, 6, 2);
    idx_files("idx", "t10k", 3, 3, 2);
    eng_dataset_info *info = NULL;
    eng_error err;
    int rc = inspect(ENG_DATA_IDX_DIR, "idx", &info, &err);
    ok(rc == 0 && info && info->n_train == 6 && info->n_test == 3 && info->n_classes == 3 &&
           info->shape[0] == 1 && info->shape[1] == 4 && info->shape[2] == 4,
       "idx directory reads (%s)", err.text);
    eng_dataset_info_destroy(info);
    mk("idxlie");
    idx_files("idxlie", "train", 6, 5, 2);
    bad(ENG_DATA_IDX_DIR, "idxlie", "6 images but", "image and label counts disagree");
    mk("idxnolabels");
    idx_files("idxnolabels", "train", 6, 6, 2);
    unlink("idxnolabels/train-labels-idx1-ubyte");
    char p[512];
    snprintf(p, sizeof p, "%s/idxnolabels/train-labels-idx1-ubyte", root);
    unlink(p);
    bad(ENG_DATA_IDX_DIR, "idxnolabels", "no training labels", "missing labels file");
    mk("idxtrunc");
    idx_files("idxtrunc", "train", 6, 6, 2);
    snprintf(p, sizeof p, "%s/idxtrunc/train-images-idx3-ubyte", root);
    ok(truncate(p, 16 + 40) == 0, "truncate");
    bad(ENG_DATA_IDX_DIR, "idxtrunc", "truncated", "truncated IDX images");
    mk("idxmagic");
    idx_files("idxmagic", "train", 6, 6, 2);
    put("idxmagic/train-labels-idx1-ubyte", "\x00\x00\x0d\x01\x00\x00\x00\x01\x00", 9);
    bad(ENG_DATA_IDX_DIR, "idxmagic", "bad IDX magic", "bad magic");
}

static void png_file(const char *rel, int w, int h, bool color, unsigned char v)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = color ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    size_t n = (size_t)w * h * (color ? 3 : 1);
    unsigned char *px = malloc(n);
    for (size_t i = 0; i < n; i++)
        px[i] = (unsigned char)(v + (color ? i % 3 : 0));
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    if (!png_image_write_to_file(&im, p, 0, px, 0, NULL)) {
        fprintf(stderr, "png write failed: %s\n", im.message);
        exit(1);
    }
    free(px);
}

static void jpeg_file(const char *rel, int w, int h, unsigned char v)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "wb");
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_start_compress(&c, TRUE);
    unsigned char *row = malloc((size_t)w * 3);
    for (int x = 0; x < w * 3; x++)
        row[x] = (unsigned char)(v + x);
    while (c.next_scanline < c.image_height)
        jpeg_write_scanlines(&c, &row, 1);
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
    free(row);
}

static void test_images(void)
{
    mk("img");
    mk("img/pets");
    mk("img/pets/cat");
    mk("img/pets/dog");
    png_file("img/pets/cat/a.png", 8, 6, false, 10);
    png_file("img/pets/cat/b.PNG", 16, 12, false, 20);
    jpeg_file("img/pets/dog/c.jpg", 8, 6, 30);
    put_text("img/pets/dog/notes.txt", "skipped");
    eng_dataset_info *info = NULL;
    eng_error err;
    int rc = inspect(ENG_DATA_IMAGES, "img", &info, &err);
    ok(rc == 0, "image folder reads (%s)", err.text);
    if (info) {
        is_int((int)info->n_train, 3, "3 images (the .txt is skipped)");
        is_int((int)info->n_classes, 2, "2 classes");
        is_str(info->class_names[1], "dog", "classes from folder names, sorted");
        ok(info->shape[0] == 3 && info->shape[1] == 6 && info->shape[2] == 8,
           "RGB (a colour image exists) at the first image's size 6x8");
    }
    eng_dataset_info_destroy(info);
    char p[512];
    snprintf(p, sizeof p, "%s/img/.cache-6x8x3.bin", root);
    ok(access(p, R_OK) == 0, "decoded once into the cache");

    /* resized gray load through the cache, then from the cache */
    eng_data_spec s;
    eng_data_spec_defaults(&s);
    s.kind = ENG_DATA_IMAGES;
    snprintf(s.dir, sizeof s.dir, "%s/img", root);
    s.image_h = 4;
    s.image_w = 4;
    s.image_c = 1;
    s.valid_pct = 0.34f;
    s.valid_seed = 1;
    eng_dataset *d = NULL;
    rc = eng_dataset_load(&s, &d, &err);
    ok(rc == 0 && d && d->in_shape[0] == 1 && d->in_shape[1] == 4 && d->in_shape[2] == 4 &&
           d->u8_train && d->n_train + d->n_valid == 3 && d->n_valid == 1,
       "resized to 1x4x4, seeded 34%% split: 2 train + 1 valid (%s)", err.text);
    eng_dataset_destroy(d);
    snprintf(p, sizeof p, "%s/img/.cache-4x4x1.bin", root);
    ok(access(p, R_OK) == 0, "a second cache for the job's size");
    rc = eng_dataset_load(&s, &d, &err);
    ok(rc == 0 && d && d->n_train == 2, "loads again from the cache");
    eng_dataset_destroy(d);

    mk("imgbad");
    mk("imgbad/a");
    mk("imgbad/b");
    png_file("imgbad/a/x.png", 4, 4, false, 1);
    put("imgbad/b/y.png", "\x89PNG\r\n\x1a\nthis is not a png", 26);
    bad(ENG_DATA_IMAGES, "imgbad", "y.png", "corrupt PNG names the file");

    mk("imgtrunc");
    mk("imgtrunc/a");
    mk("imgtrunc/b");
    png_file("imgtrunc/a/x.png", 4, 4, false, 1);
    jpeg_file("imgtrunc/b/y.jpg", 64, 64, 5);
    snprintf(p, sizeof p, "%s/imgtrunc/b/y.jpg", root);
    struct stat st;
    stat(p, &st);
    ok(truncate(p, st.st_size / 2) == 0, "truncate");
    bad(ENG_DATA_IMAGES, "imgtrunc", "corrupt JPEG", "truncated JPEG is an error, not padding");

    mk("imgone");
    mk("imgone/only");
    png_file("imgone/only/x.png", 4, 4, false, 1);
    mk("imgone/only/sub");
    bad(ENG_DATA_IMAGES, "imgone", "class", "fewer than 2 classes");

    mk("imgempty");
    mk("imgempty/a");
    mk("imgempty/b");
    png_file("imgempty/a/x.png", 4, 4, false, 1);
    bad(ENG_DATA_IMAGES, "imgempty", "no .png", "an empty class folder");
}

static void test_options(void)
{
    /* IDX dir: 6 train (labels 0,1,2,0,1,2), 3 test. */
    eng_data_spec s;
    eng_data_spec_defaults(&s);
    s.kind = ENG_DATA_IDX_DIR;
    snprintf(s.dir, sizeof s.dir, "%s/idx", root);
    s.n_subset = 2;
    s.subset[0] = 2;
    s.subset[1] = 0;
    s.per_class_limit = 1;
    eng_dataset *d = NULL;
    eng_error err = {{0}, {0}};
    int rc = eng_dataset_load(&s, &d, &err);
    ok(rc == 0 && d, "subset + limit loads (%s)", err.text);
    if (d) {
        is_int((int)d->n_classes, 2, "2 classes in the subset");
        is_int((int)d->n_train, 2, "one sample per class");
        is_int((int)d->n_valid, 2, "test split keeps classes 2 and 0 (one each of 3 samples)");
        ok(d->y_train[0] == 1 && d->y_train[1] == 0, "relabelled in the given order");
    }
    eng_dataset_destroy(d);
    s.n_subset = 1;
    s.subset[0] = 7;
    rc = eng_dataset_load(&s, &d, &err);
    ok(rc == ENG_EINVAL && strstr(err.text, "class 7"), "unknown class: %s", err.text);

    /* CSV: explicit normalisation, dataset standardisation */
    eng_data_spec_defaults(&s);
    s.kind = ENG_DATA_CSV;
    snprintf(s.dir, sizeof s.dir, "%s/csv", root);
    s.normalize_auto = true;
    rc = eng_dataset_load(&s, &d, &err);
    ok(rc == 0 && d && d->x_train && !d->u8_train, "csv loads as floats (%s)", err.text);
    if (d) {
        double m = 0.0;
        for (size_t i = 0; i < d->n_train; i++)
            m += (double)d->x_train[i * 2];
        is_near(m / (double)d->n_train, 0.0, 1e-5, "feature standardised to mean 0");
    }
    eng_dataset_destroy(d);

    /* no test split and no pct */
    mk("csvnotest");
    put_text("csvnotest/train.csv", "a,label\n1,x\n2,y\n");
    snprintf(s.dir, sizeof s.dir, "%s/csvnotest", root);
    rc = eng_dataset_load(&s, &d, &err);
    ok(rc == ENG_EINVAL && strstr(err.text, "no test split"), "needs a split: %s", err.text);
}

static void test_fashion_mnist(void)
{
    const char *dir = "/usr/share/datasets/fashion-mnist";
    if (access(dir, R_OK) != 0) {
        ok(true, "# SKIP Fashion-MNIST not installed");
        return;
    }
    eng_data_spec s;
    eng_data_spec_defaults(&s);
    s.kind = ENG_DATA_IDX_DIR;
    snprintf(s.dir, sizeof s.dir, "%s", dir);
    eng_dataset_info *info = NULL;
    eng_error err = {{0}, {0}};
    int rc = eng_dataset_inspect(&s, &info, &err);
    ok(rc == 0 && info, "Fashion-MNIST reads (%s)", err.text);
    if (info) {
        ok(info->n_train == 60000 && info->n_test == 10000, "60000 + 10000 images");
        ok(info->n_classes == 10 && info->train_counts[3] == 6000 && info->test_counts[9] == 1000,
           "10 balanced classes");
        is_near(info->mean[0], 0.2860, 1e-3, "pixel mean 0.2860");
        is_near(info->std[0], 0.3530, 1e-3, "pixel std 0.3530");
    }
    eng_dataset_info_destroy(info);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/thawd-data-formats-XXXXXX");
    if (!mkdtemp(root))
        return 1;
    test_cifar();
    test_csv();
    test_idx();
    test_images();
    test_options();
    test_fashion_mnist();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        diag("could not remove %s", root);
    return done_testing();
}
