/*
 * par.c: per-thread pools of compute helpers (see par.h). A pool is created the first time
 * a thread asks for more than one part and is destroyed by a pthread key destructor when
 * that thread exits (or at process exit for the main thread, when the OS reclaims it).
 */
#include "par.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "util.h"

typedef struct par_pool {
    pthread_mutex_t mu;  /* guards gen, pending, stop, fn, ctx, n */
    pthread_cond_t go;   /* gen changed or stop set */
    pthread_cond_t done; /* pending reached 0 */
    uint64_t gen;
    size_t pending;
    bool stop;
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
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->stop)
            pthread_cond_wait(&p->go, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        if (a.id < p->n) {
            eng_par_fn fn = p->fn;
            void *ctx = p->ctx;
            size_t n = p->n;
            pthread_mutex_unlock(&p->mu);
            fn(ctx, a.id, n);
            pthread_mutex_lock(&p->mu);
        }
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void pool_destroy(void *ptr)
{
    par_pool *p = ptr;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->pending = p->n_helpers;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, n);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
