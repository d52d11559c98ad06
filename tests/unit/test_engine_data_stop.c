/* test_engine_data_stop: eng_dataset_inspect_stoppable asks its stop function between the
 * images it decodes, between files (IDX, CIFAR) and every 4096 CSV lines; a stop returns
 * ENG_ECANCELED at once, writes no image decode cache, and a later inspect reads the whole
 * dataset. eng_job_run asks its progress callback the same way while it loads a job's data
 * (a DEBUG log event "loading data"): interrupt and cancel answered there end the run before
 * any training, with no checkpoint. */
#include <dirent.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "tap.h"

static char root[256];

static void path_of(char *p, size_t size, const char *rel)
{
    snprintf(p, size, "%s/%s", root, rel);
}

static void mk(const char *rel)
{
    char p[512];
    path_of(p, sizeof p, rel);
    mkdir(p, 0700);
}

static void png_file(const char *rel, unsigned char v)
{
    char p[512];
    unsigned char px[8 * 8];
    path_of(p, sizeof p, rel);
    for (int i = 0; i < 64; i++)
        px[i] = (unsigned char)(v + i);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = 8;
    im.height = 8;
    im.format = PNG_FORMAT_GRAY;
    if (!png_image_write_to_file(&im, p, 0, px, 0, NULL))
        diag("png write failed: %s", im.message);
}

/* Files in the image folder whose name starts with ".cache". */
static int caches(const char *rel)
{
    char p[512];
    path_of(p, sizeof p, rel);
    DIR *d = opendir(p);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += strncmp(e->d_name, ".cache", 6) == 0;
    if (d)
        closedir(d);
    return n;
}

typedef struct counter {
    int asked, stop_at; /* stop at the stop_at-th question (1-based), 0 = never */
} counter;

static bool stop_fn(void *user)
{
    counter *c = user;
    c->asked++;
    return c->stop_at && c->asked >= c->stop_at;
}

static int inspect(eng_data_kind kind, const char *rel, counter *c, eng_dataset_info **info,
                   eng_error *err)
{
    eng_data_spec s;
    eng_data_spec_defaults(&s);
    s.kind = kind;
    path_of(s.dir, sizeof s.dir, rel);
    return eng_dataset_inspect_stoppable(&s, c ? stop_fn : NULL, c, info, err);
}

static void test_images(void)
{
    mk("img");
    mk("img/a");
    mk("img/b");
    char rel[64];
    for (int i = 0; i < 20; i++) {
        snprintf(rel, sizeof rel, "img/%s/%02d.png", i % 2 ? "b" : "a", i);
        png_file(rel, (unsigned char)(i * 5));
    }
    eng_dataset_info *info = NULL;
    eng_error err;
    counter all = {0};
    int rc = inspect(ENG_DATA_IMAGES, "img", &all, &info, &err);
    is_int(rc, 0, "images: inspect with a stop that never stops");
    ok(all.asked >= 20, "images: asked at least once per image (%d)", all.asked);
    eng_dataset_info_destroy(info);
    info = NULL;
    /* remove the cache so the next read decodes again */
    char p[512];
    path_of(p, sizeof p, "img");
    DIR *d = opendir(p);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strncmp(e->d_name, ".cache", 6) == 0) {
            char f[800];
            snprintf(f, sizeof f, "%s/%s", p, e->d_name);
            unlink(f);
        }
    if (d)
        closedir(d);
    is_int(caches("img"), 0, "images: cache removed");

    counter c = {.stop_at = all.asked / 2};
    rc = inspect(ENG_DATA_IMAGES, "img", &c, &info, &err);
    is_int(rc, ENG_ECANCELED, "images: a stop half-way gives ENG_ECANCELED");
    is_int(c.asked, all.asked / 2, "images: nothing more is asked after the stop");
    ok(info == NULL, "images: no info on a stop");
    is_int(caches("img"), 0, "images: no decode cache written when stopped");

    rc = inspect(ENG_DATA_IMAGES, "img", NULL, &info, &err);
    is_int(rc, 0, "images: a later inspect reads everything");
    ok(info && info->n_train == 20 && info->n_classes == 2, "images: 20 images in 2 classes");
    is_int(caches("img"), 1, "images: and writes the cache");
    eng_dataset_info_destroy(info);
}

static void test_csv(void)
{
    mk("csv");
    char p[512];
    path_of(p, sizeof p, "csv/train.csv");
    FILE *f = fopen(p, "w");
    if (!f)
        return;
    fprintf(f, "a,b,label\n");
    for (int i = 0; i < 10000; i++)
        fprintf(f, "%d,%d,%s\n", i % 7, i % 3, i % 2 ? "odd" : "even");
    fclose(f);
    eng_dataset_info *info = NULL;
    eng_error err;
    counter all = {0};
    is_int(inspect(ENG_DATA_CSV, "csv", &all, &info, &err), 0, "csv: inspect, never stopped");
    is_int(all.asked, 2, "csv: asked every 4096 lines (10001 lines: twice)");
    eng_dataset_info_destroy(info);
    info = NULL;
    counter c = {.stop_at = 1};
    is_int(inspect(ENG_DATA_CSV, "csv", &c, &info, &err), ENG_ECANCELED,
           "csv: a stop at line 4096 gives ENG_ECANCELED");
    ok(info == NULL, "csv: no info on a stop");
}

static void test_cifar(void)
{
    mk("cifar");
    unsigned char rec[1 + 3072];
    for (int b = 0; b < 3; b++) {
        char rel[64], p[512];
        snprintf(rel, sizeof rel, "cifar/data_batch_%d.bin", b + 1);
        path_of(p, sizeof p, rel);
        FILE *f = fopen(p, "wb");
        if (!f)
            return;
        for (int i = 0; i < 4; i++) {
            rec[0] = (unsigned char)(i % 10);
            memset(rec + 1, i * 9, 3072);
            fwrite(rec, sizeof rec, 1, f);
        }
        fclose(f);
    }
    eng_dataset_info *info = NULL;
    eng_error err;
    counter all = {0};
    is_int(inspect(ENG_DATA_CIFAR10, "cifar", &all, &info, &err), 0, "cifar: inspect");
    ok(all.asked >= 3, "cifar: asked before each batch file (%d)", all.asked);
    eng_dataset_info_destroy(info);
    info = NULL;
    counter c = {.stop_at = 2};
    is_int(inspect(ENG_DATA_CIFAR10, "cifar", &c, &info, &err), ENG_ECANCELED,
           "cifar: a stop before the 2nd file gives ENG_ECANCELED");
    is_int(c.asked, 2, "cifar: nothing more is asked after the stop");
}

typedef struct job_rec {
    int loads, epochs, ckpts, stop_at;
    eng_action answer;
} job_rec;

static eng_action job_cb(const eng_event *ev, void *user)
{
    job_rec *r = user;
    if (ev->kind == ENG_EVENT_LOG && ev->level == ENG_LOG_DEBUG && ev->message &&
        strcmp(ev->message, "loading data") == 0 && ++r->loads == r->stop_at)
        return r->answer;
    if (ev->kind == ENG_EVENT_EPOCH)
        r->epochs++;
    if (ev->kind == ENG_EVENT_ARTIFACT && strcmp(ev->artifact->kind, "checkpoint") == 0)
        r->ckpts++;
    return ENG_CONTINUE;
}

static int run_job(job_rec *r)
{
    eng_job_spec j;
    eng_stage st;
    eng_job_spec_defaults(&j);
    j.batch_size = 8;
    j.data.kind = ENG_DATA_IMAGES;
    path_of(j.data.dir, sizeof j.data.dir, "job");
    j.data.valid_pct = 0.25f;
    j.model.n_hidden = 1;
    j.model.hidden[0] = 8;
    eng_stage_defaults(&st, ENG_STAGE_FIT);
    st.epochs = 1;
    st.lr.v[0] = 1e-2f;
    j.stages = &st;
    j.n_stages = 1;
    eng_run_opts opts = {.out_dir = root};
    eng_callbacks cb = {.progress = job_cb, .user = r};
    eng_error err;
    int rc = eng_job_run(&j, &opts, &cb, &err);
    if (rc && rc != ENG_ECANCELED && rc != ENG_EINTERRUPTED)
        diag("eng_job_run: %s", err.text);
    return rc;
}

static void test_job(void)
{
    mk("job");
    mk("job/a");
    mk("job/b");
    char rel[64];
    for (int i = 0; i < 32; i++) {
        snprintf(rel, sizeof rel, "job/%s/%02d.png", i % 2 ? "b" : "a", i);
        png_file(rel, (unsigned char)(i % 2 ? 200 - i : i));
    }
    job_rec a = {.stop_at = 5, .answer = ENG_INTERRUPT};
    is_int(run_job(&a), ENG_EINTERRUPTED, "job: interrupt while loading -> EINTERRUPTED");
    ok(a.loads == 5 && a.epochs == 0 && a.ckpts == 0,
       "job: stopped at once, before training, no checkpoint (%d loads)", a.loads);
    job_rec c = {.stop_at = 3, .answer = ENG_CANCEL};
    is_int(run_job(&c), ENG_ECANCELED, "job: cancel while loading -> ECANCELED");
    is_int(c.loads, 3, "job: nothing more read after the cancel");
    is_int(caches("job"), 0, "job: no decode cache from the stopped loads");
    job_rec full = {0};
    is_int(run_job(&full), 0, "job: an unstopped run trains");
    ok(full.loads >= 32 && full.epochs == 1, "job: asked for every image (%d), 1 epoch",
       full.loads);
}

static void rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        diag("cannot remove %s", path);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/thawd-test-dstop-XXXXXX");
    if (!mkdtemp(root))
        return 1;
    test_images();
    test_csv();
    test_cifar();
    test_job();
    rm_rf(root);
    return done_testing();
}
