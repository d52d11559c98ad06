/*
 * gemm.c: single-precision matrix multiply via OpenBLAS, a naive reference, and the BLAS
 * thread setting. This is the only file in thawd that includes cblas.h.
 */
#include "gemm.h"

#include <stddef.h>
#include <strings.h>

#include <cblas.h>

#include "engine.h"
#include "par.h"

void eng_sgemm(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
               size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    if (M == 0 || N == 0)
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta,
                C, (blasint)ldc);
}

size_t eng_sgemm_small_mnk(void)
{
    static const char *const cores[] = {"skylakex", "cooperlake", "sapphirerapids"};
    const char *core = openblas_get_corename();
    for (size_t i = 0; core && i < sizeof cores / sizeof cores[0]; i++)
        if (strcasecmp(core, cores[i]) == 0)
            return 100 * 100 * 100;
    return 0;
}

void eng_sgemm_ref(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                   size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (size_t k = 0; k < K; k++) {
                /* op(A)[i][k] and op(B)[k][j] in row-major storage */
                float a = ta ? A[k * lda + i] : A[i * lda + k];
                float b = tb ? B[j * ldb + k] : B[k * ldb + j];
                acc += (double)a * (double)b;
            }
            /* BLAS semantics: beta == 0 ignores C's previous contents (may be NaN) */
            double prev = beta == 0.0f ? 0.0 : (double)beta * (double)C[i * ldc + j];
            C[i * ldc + j] = (float)((double)alpha * acc + prev);
        }
    }
}

/* The budget goes to the engine's own compute threads (par.h): the layers split each batch
 * into n parts, one per thread, and OpenBLAS runs single-threaded inside each part. */
int eng_blas_set_threads(int n)
{
    if (n < 1)
        n = 1;
    eng_par_set_threads((size_t)n);
    openblas_set_num_threads(1);
    return (int)eng_par_threads();
}

const char *eng_blas_info(void)
{
    /* openblas_get_config returns a pointer to a static string inside OpenBLAS. */
    const char *cfg = openblas_get_config();
    return cfg ? cfg : "OpenBLAS (no config string)";
}
