/*
 * loader.c: the background batch thread and its two slots. See loader.h.
 *
 * DESIGN: two slots, each FREE, PENDING (indices copied, waiting for the thread), BUSY (the
 * thread is filling it) or READY. One mutex guards every slot's state, `stop` and the
 * counters; the thread fills a slot's buffers without the lock, which is safe because only
 * the thread touches a BUSY slot and only the consumer touches a READY one. The consumer
 * waits on `done`, the thread on `work`.
 */
#include "loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

enum { SLOT_FREE, SLOT_PENDING, SLOT_BUSY, SLOT_READY };

typedef struct slot {
    int state;
    size_t N;
    uint32_t *idx;  /* [max_batch] copy of the batch's indices */
    float *x;       /* [max_batch x in_size] */
    int32_t *y;     /* [max_batch] */
    uint64_t order; /* scheduling order: the thread takes the oldest PENDING slot */
} slot;

struct eng_loader {
    const eng_dataset *d;
    const uint32_t *perm;
    size_t max_batch;
    uint64_t seed;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* guards: slots[].state/N/order, stop, next_order, counters */
    pthread_cond_t work, done;
    bool stop;
    uint64_t next_order;
    slot slots[2];
    uint64_t n_prefetched, n_sync;
};

/* 64-bit mix (splitmix64's finaliser) for the augmentation seed of a batch. */
static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void eng_loader_fill(const eng_dataset *d, uint64_t seed, const uint32_t *idx, size_t N, float *x,
                     int32_t *y)
{
    size_t in = d->in_size;
    for (size_t n = 0; n < N; n++) {
        size_t i = idx[n];
        ENG_ASSERT(i < d->n_train);
        float *dst = x + n * in;
        if (d->u8_train) {
            const uint8_t *src = d->u8_train + i * in;
            size_t C = d->norm_n ? d->norm_n : 1, per = in / C;
            for (size_t c = 0; c < C; c++) {
                float m = d->norm_mean[c], s = 1.0f / d->norm_std[c];
                for (size_t k = 0; k < per; k++)
                    dst[c * per + k] = ((float)src[c * per + k] * (1.0f / 255.0f) - m) * s;
            }
        } else {
            memcpy(dst, d->x_train + i * in, in * sizeof(float));
        }
        y[n] = d->y_train[i];
    }
    if (!d->aug_flip && !d->aug_pad)
        return;
    /* Seeded by the job seed and the batch's indices, which a resumed run repeats. */
    uint64_t h = mix(seed ^ 0x41554700ull); /* "AUG" */
    for (size_t n = 0; n < N; n++)
        h = mix(h ^ idx[n]);
    float *scratch = malloc(in * sizeof(float));
    ENG_ASSERT(scratch); /* small, fixed by the sample size: a control allocation */
    size_t C = d->in_shape[0], H = d->in_shape[1], W = d->in_shape[2];
    for (size_t n = 0; n < N; n++) {
        eng_rng r;
        eng_rng_seed(&r, h, n);
        eng_augment_image(x + n * in, C, H, W, d->aug_flip, d->aug_pad, &r, scratch);
    }
    free(scratch);
}

static void *loader_main(void *arg)
{
    eng_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        slot *s = NULL;
        for (int k = 0; k < 2; k++)
            if (l->slots[k].state == SLOT_PENDING && (!s || l->slots[k].order < s->order))
                s = &l->slots[k];
        if (!s) {
            if (l->stop)
                break;
            pthread_cond_wait(&l->work, &l->mu);
            continue;
        }
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&l->mu);
        eng_loader_fill(l->d, l->seed, s->idx, s->N, s->x, s->y);
        pthread_mutex_lock(&l->mu);
        s->state = SLOT_READY;
        pthread_cond_broadcast(&l->done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int eng_loader_create(const eng_dataset *d, const uint32_t *perm, size_t max_batch, uint64_t seed,
                      eng_loader **out, eng_error *err)
{
    *out = NULL;
    eng_loader *l = calloc(1, sizeof(*l));
    if (!l)
        return eng_err_set(err, ENG_ENOMEM, NULL, "out of memory for the batch loader");
    l->d = d;
    l->perm = perm;
    l->max_batch = max_batch;
    l->seed = seed;
    for (int k = 0; k < 2; k++) {
        slot *s = &l->slots[k];
        s->idx = malloc(max_batch * sizeof(uint32_t));
        s->x = malloc(max_batch * d->in_size * sizeof(float));
        s->y = malloc(max_batch * sizeof(int32_t));
        if (!s->idx || !s->x || !s->y) {
            eng_loader_destroy(l);
            return eng_err_set(err, ENG_ENOMEM, NULL,
                               "out of memory for the loader's batch buffers");
        }
    }
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        eng_loader_destroy(l);
        return eng_err_set(err, ENG_ENOMEM, NULL, "cannot create the loader's mutex");
    }
    if (pthread_cond_init(&l->work, NULL) != 0 || pthread_cond_init(&l->done, NULL) != 0 ||
        pthread_create(&l->thread, NULL, loader_main, l) != 0) {
        /* a half-initialised condvar is never waited on: destroy skips what is not started */
        l->stop = true;
        eng_loader_destroy(l);
        return eng_err_set(err, ENG_ENOMEM, NULL, "cannot start the loader thread");
    }
    l->started = true;
    *out = l;
    return 0;
}

void eng_loader_destroy(eng_loader *l)
{
    if (!l)
        return;
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->work);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_cond_destroy(&l->work);
        pthread_cond_destroy(&l->done);
        pthread_mutex_destroy(&l->mu);
    }
    for (int k = 0; k < 2; k++) {
        free(l->slots[k].idx);
        free(l->slots[k].x);
        free(l->slots[k].y);
    }
    free(l);
}

/* Queues the batch idx[0..N) into a FREE slot unless one already holds it. Locked. */
static void schedule(eng_loader *l, const uint32_t *idx, size_t N)
{
    slot *f = NULL;
    for (int k = 0; k < 2; k++) {
        slot *s = &l->slots[k];
        if (s->state == SLOT_FREE) {
            f = f ? f : s;
        } else if (s->N == N && memcmp(s->idx, idx, N * sizeof(uint32_t)) == 0) {
            return;
        }
    }
    if (!f)
        return;
    memcpy(f->idx, idx, N * sizeof(uint32_t));
    f->N = N;
    f->order = l->next_order++;
    f->state = SLOT_PENDING;
    pthread_cond_signal(&l->work);
}

void eng_loader_next(eng_loader *l, const uint32_t *idx, size_t N, float *x, int32_t *y)
{
    ENG_ASSERT(N <= l->max_batch);
    size_t in = l->d->in_size;
    pthread_mutex_lock(&l->mu);
    slot *hit = NULL;
    for (int k = 0; k < 2; k++) {
        slot *s = &l->slots[k];
        if (s->state != SLOT_FREE && s->N == N && memcmp(s->idx, idx, N * sizeof(uint32_t)) == 0)
            hit = s;
    }
    if (hit) {
        while (hit->state != SLOT_READY)
            pthread_cond_wait(&l->done, &l->mu);
        memcpy(x, hit->x, N * in * sizeof(float));
        memcpy(y, hit->y, N * sizeof(int32_t));
        hit->state = SLOT_FREE;
        l->n_prefetched++;
    } else {
        /* Not prepared: drop stale queued work, let a busy fill finish, assemble here. */
        for (int k = 0; k < 2; k++)
            if (l->slots[k].state == SLOT_PENDING)
                l->slots[k].state = SLOT_FREE;
        while (l->slots[0].state == SLOT_BUSY || l->slots[1].state == SLOT_BUSY)
            pthread_cond_wait(&l->done, &l->mu);
        l->slots[0].state = l->slots[1].state = SLOT_FREE;
        l->n_sync++;
        pthread_mutex_unlock(&l->mu);
        eng_loader_fill(l->d, l->seed, idx, N, x, y);
        pthread_mutex_lock(&l->mu);
    }
    /* Prefetch the next two full batches of the permutation. */
    size_t n = l->d->n_train;
    if (l->perm && idx >= l->perm && idx < l->perm + n) {
        size_t pos = (size_t)(idx - l->perm);
        for (size_t k = 1; k <= 2; k++)
            if (pos + (k + 1) * N <= n)
                schedule(l, idx + k * N, N);
    }
    pthread_mutex_unlock(&l->mu);
}

void eng_loader_stats(eng_loader *l, uint64_t *prefetched, uint64_t *synchronous)
{
    pthread_mutex_lock(&l->mu);
    *prefetched = l->n_prefetched;
    *synchronous = l->n_sync;
    pthread_mutex_unlock(&l->mu);
}
