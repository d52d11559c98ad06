/*
 * par.c: per-thread pools of compute helpers (see par.h). A pool is created the first time
 * a thread asks for more than one part and is destroyed by a pthread key destructor when
 * that thread exits (or at process exit for the main thread, when the OS reclaims it).
 *
 * Waiting is spin-then-block. A run is published by bumping `gen`; a helper that finished
 * the previous run watches gen for up to SPIN_NS before it sleeps on `go`, and the caller
 * watches `pending` as long before it sleeps on `done`. The layers of a step call
 * eng_par_run back to back, so helpers are normally still watching and no futex wake-up is
 * paid: on this project's 2-vCPU VM a wake-up made an empty two-part run cost 19.5-23 us,
 * with the spin 0.17-0.9 us (one run with 16 us of work per part: 34.5-39 -> 16.2-16.6 us).
 * Sleepers are counted (`sleepers`, `waiter`) so that a run signals the condvars only when someone
 * sleeps; the counter and the value it guards are both sequentially consistent, so of the
 * publisher (write gen, read sleepers) and a helper going to sleep (count itself, re-read
 * gen) at least one sees the other, and the sleeper holds the mutex from its count to its
 * wait, so a broadcast made under the mutex cannot fall between them.
 */
#include "par.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "util.h"

/* How long a helper, or the caller, spins before it sleeps: longer than the gaps between
 * the parallel calls of a training step, short next to a step, and all that a spinning
 * thread can take from another runnable thread on its CPU per call when the machine is
 * oversubscribed. 50 us measured at least as fast as 20 and 100 us (thawd-bench, 2 threads,
 * 3 alternated rounds: M1 batch 8 / 64 train, resnet18 batch 32 train, and two M1 batch 64
 * processes at once), ahead of the condvar alone by 15% / 2% / 10% / 5%, within the noise
 * but never behind. */
#define SPIN_NS 50000

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpu_relax(void)
{
    _mm_pause();
}
#else
static inline void cpu_relax(void)
{
}
#endif

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins while (*v == ref) == equal, at most SPIN_NS; returns the last value read (acquire). */
static uint64_t spin_while(const _Atomic uint64_t *v, uint64_t ref, bool equal)
{
    uint64_t x = atomic_load_explicit(v, memory_order_acquire);
    for (uint64_t t0 = 0, k = 0; (x == ref) == equal; k++) {
        cpu_relax();
        if (k % 16 == 0) { /* the clock costs about one pause */
            uint64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > SPIN_NS)
                break;
        }
        x = atomic_load_explicit(v, memory_order_acquire);
    }
    return x;
}

typedef struct par_pool {
    pthread_mutex_t mu;       /* held to sleep on go/done and to signal them */
    pthread_cond_t go;        /* gen changed or stop set */
    pthread_cond_t done;      /* pending reached 0 */
    _Atomic uint64_t gen;     /* bumped to publish a run (fn, ctx, n, pending) */
    _Atomic uint64_t pending; /* helpers still in the current run */
    atomic_size_t sleepers;   /* helpers asleep on go, or about to be */
    atomic_bool waiter;       /* the caller asleep on done, or about to be */
    atomic_bool stop;
    eng_par_fn fn;
    void *ctx;
    size_t n;
    size_t n_helpers;
    pthread_t th[ENG_PAR_MAX];
} par_pool;

typedef struct helper_arg {
    par_pool *p;
    size_t id; /* part number this helper runs, 1..n_helpers */
} helper_arg;

static atomic_size_t budget = 1;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t pool_key;
static _Thread_local bool in_helper;
static _Thread_local bool pool_failed;

void eng_par_set_threads(size_t n)
{
    if (n < 1)
        n = 1;
    if (n > ENG_PAR_MAX)
        n = ENG_PAR_MAX;
    atomic_store(&budget, n);
}

size_t eng_par_threads(void)
{
    return atomic_load(&budget);
}

static void *helper_main(void *arg)
{
    helper_arg a = *(helper_arg *)arg;
    free(arg);
    in_helper = true;
    par_pool *p = a.p;
    uint64_t seen = 0; /* helpers start before the pool's first run (gen 0) */
    for (;;) {
        uint64_t g = spin_while(&p->gen, seen, true);
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->go, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            break;
        seen = g;
        if (a.id < p->n)
            p->fn(p->ctx, a.id, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->waiter)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

static void pool_destroy(void *ptr)
{
    par_pool *p = ptr;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->n_helpers; i++)
        pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static void key_create(void)
{
    if (pthread_key_create(&pool_key, pool_destroy) != 0)
        abort(); /* only fails when the process is out of keys: a bug, not input */
}

/* The calling thread's pool with at least `helpers` helpers, or NULL if it cannot start. */
static par_pool *pool_get(size_t helpers)
{
    pthread_once(&key_once, key_create);
    par_pool *p = pthread_getspecific(pool_key);
    if (p && p->n_helpers >= helpers)
        return p;
    if (pool_failed)
        return NULL;
    if (p) { /* the budget grew: start over with more helpers */
        pthread_setspecific(pool_key, NULL);
        pool_destroy(p);
    }
    p = calloc(1, sizeof(*p));
    if (!p)
        goto fail;
    if (pthread_mutex_init(&p->mu, NULL)) {
        free(p);
        goto fail;
    }
    if (pthread_cond_init(&p->go, NULL)) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        goto fail;
    }
    if (pthread_cond_init(&p->done, NULL)) {
        pthread_cond_destroy(&p->go);
        pthread_mutex_destroy(&p->mu);
        free(p);
        goto fail;
    }
    for (size_t i = 0; i < helpers; i++) {
        helper_arg *a = malloc(sizeof(*a));
        if (!a)
            break;
        a->p = p;
        a->id = i + 1;
        if (pthread_create(&p->th[i], NULL, helper_main, a) != 0) {
            free(a);
            break;
        }
        p->n_helpers++;
    }
    if (p->n_helpers < helpers) {
        pool_destroy(p);
        goto fail;
    }
    if (pthread_setspecific(pool_key, p) != 0) {
        pool_destroy(p);
        goto fail;
    }
    return p;
fail:
    pool_failed = true; /* run serially from now on rather than retrying every call */
    return NULL;
}

void eng_par_run(size_t n, eng_par_fn fn, void *ctx)
{
    par_pool *p = n > 1 && !in_helper ? pool_get(n - 1) : NULL;
    if (!p) {
        for (size_t i = 0; i < n; i++)
            fn(ctx, i, n);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store_explicit(&p->pending, p->n_helpers, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* publishes the stores above */
    if (atomic_load(&p->sleepers)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
    }
    fn(ctx, 0, n);
    if (spin_while(&p->pending, 0, false) == 0)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->waiter, true);
    while (atomic_load(&p->pending))
        pthread_cond_wait(&p->done, &p->mu);
    atomic_store(&p->waiter, false);
    pthread_mutex_unlock(&p->mu);
}
