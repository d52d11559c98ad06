/*
 * bench_loader.c: throughput of the background batch loader against the engine's
 * consumption. Loads Fashion-MNIST as a registered IDX dataset (bytes in memory), then
 * times (1) assembling batches alone (gather, bytes -> normalised floats, optionally flip and
 * pad-and-crop) and (2) training steps of a model that get their batches from the loader,
 * and prints batches per second of each. The loader keeps up when (1) is well above (2).
 *
 * usage: bench_loader [--dir DIR] [--batch N] [--batches N] [--arch mlp|cnn-small]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dataset.h"
#include "loader.h"
#include "model.h"
#include "rng.h"
#include "train.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *dir = "/usr/share/datasets/fashion-mnist", *arch = "mlp";
    size_t B = 64, nb = 200;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir"))
            dir = argv[i + 1];
        else if (!strcmp(argv[i], "--batch"))
            B = (size_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batches"))
            nb = (size_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--arch"))
            arch = argv[i + 1];
    }
    eng_data_spec s;
    eng_data_spec_defaults(&s);
    s.kind = ENG_DATA_IDX_DIR;
    snprintf(s.dir, sizeof s.dir, "%s", dir);
    s.normalize_auto = true;
    eng_dataset *d = NULL;
    eng_error err = {{0}, {0}};
    if (eng_dataset_load(&s, &d, &err) != 0) {
        fprintf(stderr, "bench_loader: %s\n", err.text);
        return 1;
    }
    uint32_t *perm = malloc(d->n_train * sizeof(uint32_t));
    float *x = malloc(B * d->in_size * sizeof(float));
    int32_t *y = malloc(B * sizeof(int32_t));
    if (!perm || !x || !y || B * nb > d->n_train)
        return 1;
    eng_dataset_shuffle(perm, d->n_train, 1, 0, 0);
    for (int aug = 0; aug < 2; aug++) {
        d->aug_flip = aug;
        d->aug_pad = aug ? 4 : 0;
        double t0 = now();
        for (size_t b = 0; b < nb; b++)
            eng_loader_fill(d, 1, perm + b * B, B, x, y);
        double dt = now() - t0;
        printf("assemble%-10s %8.1f batches/s (batch %zu, %zux%zux%zu)\n", aug ? " +augment" : "",
               (double)nb / dt, B, d->in_shape[0], d->in_shape[1], d->in_shape[2]);
    }
    d->aug_flip = false;
    d->aug_pad = 0;

    eng_model_spec ms;
    eng_model_spec_defaults(&ms);
    snprintf(ms.arch, sizeof ms.arch, "%s", arch);
    eng_opt_spec os;
    eng_opt_spec_defaults(&os);
    eng_rng r;
    eng_rng_seed(&r, 1, 2);
    eng_model *m = NULL;
    eng_trainer t;
    if (eng_model_create(&ms, d->in_ndim, d->in_shape, d->n_classes, true, &r, &m, &err) != 0 ||
        eng_trainer_init(&t, m, d, &os, B, 1, &err) != 0) {
        fprintf(stderr, "bench_loader: %s\n", err.text);
        return 1;
    }
    eng_dataset_shuffle(t.perm, d->n_train, 1, 0, 0);
    double t0 = now();
    for (size_t b = 0; b < nb; b++)
        eng_trainer_step(&t, t.perm + b * B, B);
    double dt = now() - t0;
    uint64_t pre = 0, sync = 0;
    eng_loader_stats(t.loader, &pre, &sync);
    printf("train %-12s %8.1f batches/s (%llu batches prefetched, %llu assembled on the "
           "trainer's thread)\n",
           arch, (double)nb / dt, (unsigned long long)pre, (unsigned long long)sync);
    eng_trainer_fini(&t);
    eng_model_destroy(m);
    eng_dataset_destroy(d);
    free(perm);
    free(x);
    free(y);
    return 0;
}
