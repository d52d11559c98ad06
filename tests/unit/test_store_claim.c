/*
 * test_store_claim.c: concurrent claimers never get the same job. Several threads, each
 * with its own connection to one database file, claim from a shared queue in rounds: a
 * barrier releases all threads at once and each claims one job, so every round has real
 * write-lock contention (without rounds, SQLite's busy handler lets one thread win most
 * claims in a row). Every job must be claimed exactly once, each thread must get exactly one
 * job per round (the losers wait in busy_timeout, they never fail), and once the queue is
 * empty every thread gets STORE_ENOTFOUND.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage.h"
#include "store_tmpdir.h"
#include "tap.h"

#define N_THREADS 4
#define N_ROUNDS  40
#define N_JOBS    (N_THREADS * N_ROUNDS)

static char dbpath[1024];
static pthread_barrier_t start_line;

struct claimer {
    char owner[16];
    int64_t ids[N_JOBS];
    int n;
    int open_rc;
    int bad_rc;               /* first unexpected return code, 0 if none */
    int64_t left_at_notfound; /* queued jobs counted right after ENOTFOUND */
    int notfound_round;       /* round of the first ENOTFOUND, -1 if none */
};

static void *claim_loop(void *arg)
{
    struct claimer *c = arg;
    store *s = NULL;
    store_job j;
    int rc;

    c->open_rc = store_open(dbpath, NULL, NULL, &s);
    /* Every thread passes the barrier N_ROUNDS + 1 times even after a failure, so no
     * thread is left waiting. */
    for (int round = 0; round <= N_ROUNDS; round++) {
        pthread_barrier_wait(&start_line);
        if (c->open_rc != STORE_OK || c->bad_rc != STORE_OK)
            continue;
        rc = store_job_claim(s, c->owner, 60000, &j);
        if (rc == STORE_ENOTFOUND) {
            /* Nobody enqueues during the test, so "nothing to claim" must be true. */
            if (store_job_count(s, STORE_JOB_QUEUED, 0, &c->left_at_notfound) != STORE_OK)
                c->bad_rc = STORE_EIO;
            c->notfound_round = round;
            continue;
        }
        if (rc != STORE_OK) {
            c->bad_rc = rc;
            continue;
        }
        if (c->n < N_JOBS)
            c->ids[c->n] = j.id;
        c->n++;
        if (!j.lease_owner || strcmp(j.lease_owner, c->owner) != 0 || j.attempt != 1)
            c->bad_rc = STORE_EIO; /* claim returned a job that is not ours */
        /* A worker's writes on its job, interleaving with the other claimers. */
        if ((rc = store_job_heartbeat(s, j.id, c->owner, 60000, NULL)) != STORE_OK ||
            (rc = store_job_finish(s, j.id, c->owner, STORE_JOB_SUCCEEDED, NULL)) != STORE_OK)
            c->bad_rc = rc;
        store_job_fini(&j);
    }
    store_close(s);
    return NULL;
}

int main(void)
{
    static struct claimer claimers[N_THREADS];
    pthread_t threads[N_THREADS];
    int times_claimed[N_JOBS + 1] = {0};
    int64_t first = 0, id = 0, count = -1;
    store *s = NULL;
    int total = 0, started = 0, rc;
    bool exactly_once = true, all_ok = true;

    make_tmpdir();
    snprintf(dbpath, sizeof(dbpath), "%s/claim.db", tmpdir);
    rc = store_open(dbpath, NULL, NULL, &s);
    if (rc != STORE_OK) {
        printf("Bail out! store_open: %s\n", store_strerror(rc));
        return 1;
    }
    for (int i = 0; i < N_JOBS; i++) {
        if (store_job_enqueue(s, NULL, "{}", &id) != STORE_OK)
            all_ok = false;
        if (i == 0)
            first = id;
    }
    ok(all_ok && id - first == N_JOBS - 1, "enqueued %d jobs with consecutive ids", N_JOBS);

    if (pthread_barrier_init(&start_line, NULL, N_THREADS) != 0) {
        printf("Bail out! pthread_barrier_init\n");
        return 1;
    }
    for (int t = 0; t < N_THREADS; t++) {
        snprintf(claimers[t].owner, sizeof(claimers[t].owner), "worker-%d", t);
        claimers[t].notfound_round = -1;
        if (pthread_create(&threads[t], NULL, claim_loop, &claimers[t]) != 0) {
            printf("Bail out! pthread_create\n");
            return 1;
        }
        started++;
    }
    for (int t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    pthread_barrier_destroy(&start_line);

    for (int t = 0; t < N_THREADS; t++) {
        struct claimer *c = &claimers[t];

        is_int(c->open_rc, STORE_OK, "%s opened its own connection", c->owner);
        is_int(c->bad_rc, STORE_OK, "%s saw only OK and ENOTFOUND", c->owner);
        is_int(c->left_at_notfound, 0, "%s got ENOTFOUND only with an empty queue", c->owner);
        is_int(c->notfound_round, N_ROUNDS, "%s got ENOTFOUND only in the extra round", c->owner);
        is_int(c->n, N_ROUNDS, "%s claimed exactly one job per round", c->owner);
        for (int i = 0; i < c->n && i < N_JOBS; i++) {
            int64_t k = c->ids[i] - first + 1;

            if (k < 1 || k > N_JOBS)
                exactly_once = false;
            else
                times_claimed[k]++;
            /* Each claimer sees increasing ids: the oldest queued job goes first. */
            if (i > 0 && c->ids[i] <= c->ids[i - 1])
                exactly_once = false;
        }
        total += c->n;
    }
    for (int k = 1; k <= N_JOBS; k++)
        if (times_claimed[k] != 1)
            exactly_once = false;
    is_int(total, N_JOBS, "claims add up to the number of jobs");
    ok(exactly_once, "every job was claimed exactly once, oldest first per claimer");

    is_int(store_job_count(s, STORE_JOB_SUCCEEDED, 0, &count), STORE_OK, "count succeeded");
    is_int(count, N_JOBS, "every job was finished by its claimer");
    is_int(store_job_count(s, STORE_JOB_QUEUED, 0, &count), STORE_OK, "count queued");
    is_int(count, 0, "queue is empty");
    store_close(s);
    remove_tmpdir();
    return done_testing();
}
