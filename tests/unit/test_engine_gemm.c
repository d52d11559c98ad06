/* test_engine_gemm: eng_sgemm (OpenBLAS) against eng_sgemm_ref on random shapes, all four
 * transpose combinations, padded leading dimensions, alpha/beta and NaN-in-C with beta 0. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "gemm.h"
#include "tap.h"

static uint64_t seed = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((seed >> 40) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}

static size_t urand(size_t n)
{
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return (size_t)((seed >> 33) % n);
}

static double check(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, float beta,
                    bool nan_c)
{
    size_t pad = urand(3);
    size_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    size_t lda = ac + pad, ldb = bc + pad, ldc = N + pad;
    float *A = calloc(ar * lda + 1, sizeof(float)), *B = calloc(br * ldb + 1, sizeof(float));
    float *C1 = calloc(M * ldc + 1, sizeof(float)), *C2 = calloc(M * ldc + 1, sizeof(float));
    for (size_t i = 0; i < ar * lda; i++)
        A[i] = frand();
    for (size_t i = 0; i < br * ldb; i++)
        B[i] = frand();
    for (size_t i = 0; i < M * ldc; i++)
        C1[i] = C2[i] = nan_c ? NAN : frand();
    eng_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C1, ldc);
    eng_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc);
    double num = 0, den = 0;
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double d = (double)C1[i * ldc + j] - (double)C2[i * ldc + j];
            num += d * d;
            den += (double)C2[i * ldc + j] * (double)C2[i * ldc + j];
        }
    free(A);
    free(B);
    free(C1);
    free(C2);
    return den > 0 ? num / den : num; /* NMSE (NaN propagates and fails the check) */
}

int main(void)
{
    for (int t = 0; t < 24; t++) {
        bool ta = t & 1, tb = (t >> 1) & 1;
        size_t M = 1 + urand(40), N = 1 + urand(40), K = 1 + urand(70);
        float alpha = t % 3 == 0 ? 1.0f : 0.5f + frand();
        float beta = t % 4 == 0 ? 0.0f : (t % 4 == 1 ? 1.0f : frand());
        double e = check(ta, tb, M, N, K, alpha, beta, false);
        ok(e < 1e-10, "sgemm ta=%d tb=%d M=%zu N=%zu K=%zu alpha=%.3f beta=%.3f nmse=%.3g", ta, tb,
           M, N, K, (double)alpha, (double)beta, e);
    }
    ok(check(false, false, 7, 5, 3, 1.0f, 0.0f, true) < 1e-10, "beta=0 ignores NaN in C");
    ok(check(true, true, 64, 33, 129, 1.0f, 1.0f, false) < 1e-10, "larger transposed shape");
    return done_testing();
}
