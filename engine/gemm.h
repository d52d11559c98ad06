/*
 * gemm.h: single-precision matrix multiply for the engine (private to engine/).
 *
 * gemm.c is the only file that includes cblas.h. eng_sgemm_ref is the naive reference the
 * kernel checks compare against.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Row-major C[M x N] = alpha * op(A)[M x K] * op(B)[K x N] + beta * C, where op(X) is X or
 * its transpose (ta/tb). lda/ldb/ldc are the row strides of A, B and C as stored.
 * Buffers are borrowed; C must not alias A or B. Thread-safe. */
void eng_sgemm(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
               size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);

/* Largest M*N*K that eng_sgemm runs through OpenBLAS's small-matrix kernel, which reads A, B
 * and C in place instead of packing them; 0 when the kernels in use have none. OpenBLAS 0.3.21
 * has it for its SkylakeX-family cores (SkylakeX, Cooperlake, SapphireRapids) at
 * M*N*K <= 100^3 (except transposed A with M*N > 1200 or K < 32, in column-major terms). */
size_t eng_sgemm_small_mnk(void);

/* The same contract, computed with plain loops in double accumulation. */
void eng_sgemm_ref(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                   size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);
