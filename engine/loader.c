/*
 * loader.c: the background batch thread and its two slots. See loader.h.
 *
 * DESIGN: two slots, each FREE, PENDING (indices copied, waiting for the thread), BUSY (the
 * thread is filling it) or READY. One mutex guards every slot's state, `stop` and the
 * counters; the thread fills a slot's buffers without the lock, which is safe because only
 * the thread touches a BUSY slot and only the consumer touches a READY one. The consumer
 * waits on `done`, the thread on `work`.
 *
 * Across epochs: eng_loader_shuffle records the (seed, stage, epoch) of the permutation and
 * asks for the next epoch's, `next`, which the thread computes when idle (PERM_PENDING ->
 * PERM_BUSY -> PERM_READY; whoever computes it holds PERM_BUSY and works without the lock).
 * Batches past the end of an epoch are scheduled from `next`: with their indices when it is
 * ready, else as "to be resolved" (tbd: position `next_pos` in permutation generation
 * `gen`), which the thread resolves before filling (computing `next` first if needed). The
 * next eng_loader_shuffle with the predicted key copies `next` into the caller's
 * permutation and resolves any tbd slot, so those batches are hits; with another key
 * (a new stage) they are dropped and the first batch is assembled on the caller.
 */
#include "loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

enum { SLOT_FREE, SLOT_PENDING, SLOT_BUSY, SLOT_READY };
enum { PERM_NONE, PERM_PENDING, PERM_BUSY, PERM_READY };

typedef struct slot {
    int state;
    size_t N;
    uint32_t *idx;  /* [max_batch] copy of the batch's indices (unless tbd) */
    float *x;       /* [max_batch x in_size] */
    int32_t *y;     /* [max_batch] */
    uint64_t order; /* scheduling order: the thread takes the oldest PENDING slot */
    bool tbd;       /* indices still to be copied from `next` at next_pos (generation gen) */
    size_t next_pos;
    uint64_t gen;
} slot;

/* Which permutation: eng_dataset_shuffle's arguments. */
typedef struct perm_key {
    uint64_t seed;
    size_t stage;
    uint32_t epoch;
} perm_key;

struct eng_loader {
    const eng_dataset *d;
    const uint32_t *perm;
    size_t max_batch;
    uint64_t seed;
    pthread_t thread;
    bool started;
    /* guards: slots[].state/N/order/tbd/next_pos/gen, stop, next_order, counters, known, cur,
     * perm_state, next_key, gen; `next` is written only by whoever holds PERM_BUSY */
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    bool stop;
    uint64_t next_order;
    slot slots[2];
    uint64_t n_prefetched, n_sync;
    bool known;        /* perm holds permutation `cur` (set by eng_loader_shuffle) */
    perm_key cur;      /* the current epoch's permutation */
    uint32_t *next;    /* [n_train] the predicted next epoch's permutation */
    int perm_state;    /* PERM_*: of `next` */
    perm_key next_key; /* what `next` holds or will hold */
    uint64_t gen;      /* bumped whenever next_key changes */
};

static bool key_eq(perm_key a, perm_key b)
{
    return a.seed == b.seed && a.stage == b.stage && a.epoch == b.epoch;
}

/* Computes `next` (perm_state PENDING -> BUSY -> READY). Locked on entry and exit. */
static void compute_next(eng_loader *l)
{
    perm_key k = l->next_key;
    l->perm_state = PERM_BUSY;
    pthread_mutex_unlock(&l->mu);
    eng_dataset_shuffle(l->next, l->d->n_train, k.seed, k.stage, k.epoch);
    pthread_mutex_lock(&l->mu);
    l->perm_state = PERM_READY;
    pthread_cond_broadcast(&l->done);
}

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
        if (l->stop)
            break; /* queued work is dropped: nobody will ask for it */
        slot *s = NULL;
        for (int k = 0; k < 2; k++)
            if (l->slots[k].state == SLOT_PENDING && (!s || l->slots[k].order < s->order))
                s = &l->slots[k];
        if (!s) {
            if (l->perm_state == PERM_PENDING)
                compute_next(l); /* idle: prepare the next epoch's permutation */
            else
                pthread_cond_wait(&l->work, &l->mu);
            continue;
        }
        if (s->tbd) {
            if (s->gen != l->gen) {
                s->state = SLOT_FREE; /* predicted for a permutation no longer expected */
                continue;
            }
            if (l->perm_state == PERM_PENDING) {
                compute_next(l);
                continue; /* the slot may have been resolved or dropped meanwhile */
            }
            if (l->perm_state == PERM_BUSY) {
                pthread_cond_wait(&l->done, &l->mu); /* the consumer is computing it */
                continue;
            }
            ENG_ASSERT(l->perm_state == PERM_READY);
            memcpy(s->idx, l->next + s->next_pos, s->N * sizeof(uint32_t));
            s->tbd = false;
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
    l->next = malloc((d->n_train ? d->n_train : 1) * sizeof(uint32_t));
    if (!l->next) {
        free(l);
        return eng_err_set(err, ENG_ENOMEM, NULL, "out of memory for the loader's permutation");
    }
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
    free(l->next);
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
        } else if (!s->tbd && s->N == N && memcmp(s->idx, idx, N * sizeof(uint32_t)) == 0) {
            return;
        }
    }
    if (!f)
        return;
    memcpy(f->idx, idx, N * sizeof(uint32_t));
    f->N = N;
    f->tbd = false;
    f->order = l->next_order++;
    f->state = SLOT_PENDING;
    pthread_cond_signal(&l->work);
}

/* Queues the batch at position pos of the next epoch's permutation. Locked. */
static void schedule_next(eng_loader *l, size_t pos, size_t N)
{
    if (l->perm_state == PERM_READY) {
        schedule(l, l->next + pos, N);
        return;
    }
    slot *f = NULL;
    for (int k = 0; k < 2; k++) {
        slot *s = &l->slots[k];
        if (s->state == SLOT_FREE)
            f = f ? f : s;
        else if (s->tbd && s->gen == l->gen && s->next_pos == pos && s->N == N)
            return;
    }
    if (!f)
        return;
    f->N = N;
    f->tbd = true;
    f->next_pos = pos;
    f->gen = l->gen;
    f->order = l->next_order++;
    f->state = SLOT_PENDING;
    pthread_cond_signal(&l->work);
}

void eng_loader_shuffle(eng_loader *l, uint32_t *perm, uint64_t seed, size_t stage, uint32_t epoch)
{
    ENG_ASSERT(perm == l->perm);
    size_t n = l->d->n_train;
    perm_key want = {seed, stage, epoch};
    pthread_mutex_lock(&l->mu);
    while (l->perm_state == PERM_BUSY)
        pthread_cond_wait(&l->done, &l->mu);
    bool predicted = l->perm_state != PERM_NONE && key_eq(l->next_key, want);
    if (predicted && l->perm_state == PERM_PENDING)
        compute_next(l); /* not reached in the background yet: do it here, same result */
    if (predicted)
        memcpy(perm, l->next, n * sizeof(uint32_t));
    /* Batches queued from `next`: resolve them now (hits), or drop the mispredicted. */
    for (int k = 0; k < 2; k++) {
        slot *s = &l->slots[k];
        if (s->state != SLOT_PENDING || !s->tbd)
            continue;
        if (predicted && s->gen == l->gen) {
            memcpy(s->idx, l->next + s->next_pos, s->N * sizeof(uint32_t));
            s->tbd = false;
        } else {
            s->state = SLOT_FREE;
        }
    }
    l->known = false; /* perm is being rewritten: no prefetch from it meanwhile */
    pthread_mutex_unlock(&l->mu);
    if (!predicted)
        eng_dataset_shuffle(perm, n, seed, stage, epoch);
    pthread_mutex_lock(&l->mu);
    while (l->perm_state == PERM_BUSY) /* the thread may have started on the old key */
        pthread_cond_wait(&l->done, &l->mu);
    l->known = true;
    l->cur = want;
    l->next_key = (perm_key){seed, stage, epoch + 1};
    l->gen++;
    l->perm_state = PERM_PENDING;
    pthread_cond_signal(&l->work);
    pthread_mutex_unlock(&l->mu);
}

void eng_loader_next(eng_loader *l, const uint32_t *idx, size_t N, float *x, int32_t *y)
{
    ENG_ASSERT(N <= l->max_batch);
    size_t in = l->d->in_size;
    pthread_mutex_lock(&l->mu);
    slot *hit = NULL;
    for (int k = 0; k < 2; k++) {
        slot *s = &l->slots[k];
        if (s->state != SLOT_FREE && !s->tbd && s->N == N &&
            memcmp(s->idx, idx, N * sizeof(uint32_t)) == 0)
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
    /* Prefetch the next two full batches of the permutation; past the epoch's last full
     * batch, the first ones of the next epoch's (when eng_loader_shuffle made it known). */
    size_t n = l->d->n_train;
    if (l->perm && idx >= l->perm && idx < l->perm + n) {
        size_t pos = (size_t)(idx - l->perm);
        for (size_t k = 1; k <= 2; k++) {
            if (pos + (k + 1) * N <= n) {
                schedule(l, idx + k * N, N);
            } else if (l->known && pos % N == 0) {
                size_t j = pos / N + k - n / N; /* batch of the next epoch */
                if ((j + 1) * N <= n)
                    schedule_next(l, j * N, N);
            }
        }
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
