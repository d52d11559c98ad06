/*
 * par.h: the engine's compute threads (private to engine/): a small persistent pool per
 * calling thread that runs one function over a few parts, part 0 on the caller.
 *
 * DESIGN. The thread budget is the number eng_blas_set_threads() was given (DESIGN.md
 * section 2: workers x threads <= cores). When it is above 1 the engine no longer lets
 * OpenBLAS thread (OpenBLAS is set to 1 thread): the layers split the batch into that many
 * parts and run each part's single-threaded GEMMs and element-wise work on its own thread,
 * which measured faster on the small-M GEMMs of CNNs than one batched GEMM on several
 * OpenBLAS threads. Each thread that calls eng_par_run (a daemon worker, the CLI's main
 * thread) gets its own helpers (budget - 1 threads) on first use; between calls they spin
 * for at most 50 us, then sleep on a condvar (par.c), and they are joined when that thread
 * exits. Parts are fixed ranges, reduced in a fixed order by the callers, so results do not
 * depend on timing.
 */
#pragma once

#include <stddef.h>

/* Highest budget the engine accepts (larger requests are clamped). */
#define ENG_PAR_MAX 64

typedef void (*eng_par_fn)(void *ctx, size_t part, size_t n_parts);

/* Sets the per-calling-thread budget (clamped to [1, ENG_PAR_MAX]). Call once at startup,
 * before any trainer is created: layers size their per-part scratch with it. */
void eng_par_set_threads(size_t n);

/* The budget: how many parts a layer may split its work into. Thread-safe. */
size_t eng_par_threads(void);

/* Runs fn(ctx, i, n) for every i in [0, n) and returns when all are done; i = 0 runs on the
 * caller. n must be <= eng_par_threads(). Called from a helper (nested) or when the helpers
 * could not be started, the parts run one after the other on the caller. */
void eng_par_run(size_t n, eng_par_fn fn, void *ctx);

/* Part i of n of the range [0, total): [*lo, *hi), contiguous, sizes differing by <= 1. */
static inline void eng_par_range(size_t total, size_t i, size_t n, size_t *lo, size_t *hi)
{
    *lo = total * i / n;
    *hi = total * (i + 1) / n;
}
