/* peak.c: the machine's FP32 FMA peak and OpenBLAS sgemm throughput, as JSON.
 *
 * FMA peak: every thread runs NACC independent chains acc[i] = acc[i] * a + b on full vector
 * registers (AVX-512 when the compiler targets it, else AVX2+FMA), so the FMA latency is
 * hidden and the loop is bound by the FMA ports. One FMA lane = 2 FLOPs. Measured with 1
 * thread and with --threads threads (pthreads) running at once; the best of --repeats runs is
 * the peak, the median is reported too. fma_gflops_per_cpu_time divides by the CPU time each
 * thread got instead of wall time, so it stays right on a busy machine.
 *
 * sgemm: cblas_sgemm (row-major, no transpose, alpha 1, beta 0) on an NxNxN problem
 * (2*N^3 FLOPs) with openblas_set_num_threads(1) and (--threads); optional extra shapes with
 * --shape MxNxK (repeatable), for example the GEMMs of M1's convolutions.
 *
 * Build: cc -O2 -march=native -pthread bench/peak.c $(pkg-config --cflags --libs openblas)
 * (bench/run.sh does this). Usage: peak [--threads T] [--repeats R] [--n N] [--shape MxNxK]
 */
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#if defined(__AVX512F__)
#define ISA   "avx512"
#define LANES 16
#define NACC  16
typedef __m512 vec;
#define vset1(x)      _mm512_set1_ps(x)
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vadd(a, b)    _mm512_add_ps(a, b)
#define vstore(p, a)  _mm512_storeu_ps(p, a)
#elif defined(__AVX2__) && defined(__FMA__)
#define ISA           "avx2"
#define LANES         8
#define NACC          12
typedef __m256 vec;
#define vset1(x)      _mm256_set1_ps(x)
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vadd(a, b)    _mm256_add_ps(a, b)
#define vstore(p, a)  _mm256_storeu_ps(p, a)
#else
#error "peak.c needs AVX2+FMA or AVX-512: compile with -march=native on an x86-64 with FMA"
#endif

#define MAX_THREADS 256
#define MAX_SHAPES  16

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

typedef struct fma_job {
    long iters;
    float sink;   /* keeps the chains alive */
    double cpu_s; /* CPU time this thread got for the loop */
} fma_job;

/* NACC independent FMA chains in named variables (an array would live in memory at -O2);
 * a < 1 and b > 0 keep the values normal and finite. */
#define ACC_DECL(i) vec c##i = vset1((float)(i))
#define ACC_STEP(i) c##i = vfma(c##i, a, b)
#define ACC_SUM(i)  sum = vadd(sum, c##i)
#define ACC_EACH(OP) \
    OP(1);           \
    OP(2);           \
    OP(3);           \
    OP(4);           \
    OP(5);           \
    OP(6);           \
    OP(7);           \
    OP(8);           \
    OP(9);           \
    OP(10);          \
    OP(11);          \
    ACC_MORE(OP)
#if NACC == 16
#define ACC_MORE(OP) \
    OP(12);          \
    OP(13);          \
    OP(14);          \
    OP(15);          \
    OP(16)
#else
#define ACC_MORE(OP) OP(12)
#endif

static void *fma_worker(void *arg)
{
    fma_job *job = arg;
    const vec a = vset1(0.9999999f), b = vset1(1e-7f);
    ACC_EACH(ACC_DECL);
    double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    for (long it = 0; it < job->iters; it++) {
        ACC_EACH(ACC_STEP);
    }
    job->cpu_s = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    vec sum = vset1(0.0f);
    ACC_EACH(ACC_SUM);
    float out[LANES];
    vstore(out, sum);
    job->sink = out[0];
    return NULL;
}

/* GFLOPS of T threads each running `iters` iterations at once, by wall time; < 0 on error.
 * *cpu_gflops gets the sum over threads of FLOPs per second of CPU time the thread got, which
 * other processes on a busy machine do not lower (on an idle machine both agree). */
static double fma_run(int T, long iters, double *cpu_gflops)
{
    pthread_t tid[MAX_THREADS];
    fma_job jobs[MAX_THREADS];
    int started = 0, rc = 0;
    double t0 = now_s();
    for (int t = 0; t < T; t++) {
        jobs[t].iters = iters;
        if (t == 0)
            continue; /* thread 0 is this one */
        rc = pthread_create(&tid[t], NULL, fma_worker, &jobs[t]);
        if (rc)
            break;
        started++;
    }
    fma_worker(&jobs[0]);
    for (int t = 1; t <= started; t++)
        pthread_join(tid[t], NULL);
    double dt = now_s() - t0;
    if (rc) {
        fprintf(stderr, "peak: pthread_create: %s\n", strerror(rc));
        return -1.0;
    }
    double flops = (double)iters * NACC * LANES * 2.0;
    *cpu_gflops = 0.0;
    for (int t = 0; t < T; t++)
        *cpu_gflops += flops / jobs[t].cpu_s / 1e9;
    return (double)T * flops / dt / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct stats {
    double best, median, min;
} stats;

static stats summarise(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    stats s = {v[n - 1], n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]), v[0]};
    return s;
}

/* Measure T-thread FMA throughput: calibrate to ~0.2 s per run, then `repeats` runs. */
static int fma_measure(int T, int repeats, stats *out, stats *out_cpu)
{
    double cpu;
    long iters = 1L << 20;
    for (;;) {
        double t0 = now_s();
        if (fma_run(1, iters, &cpu) < 0)
            return -1;
        if (now_s() - t0 > 0.05 || iters > (1L << 34))
            break;
        iters *= 2;
    }
    iters *= 4;
    double v[64], vc[64];
    for (int r = 0; r < repeats; r++) {
        v[r] = fma_run(T, iters, &vc[r]);
        if (v[r] < 0)
            return -1;
    }
    *out = summarise(v, repeats);
    *out_cpu = summarise(vc, repeats);
    return 0;
}

typedef struct shape {
    int M, N, K;
} shape;

/* sgemm GFLOPS on one shape with T OpenBLAS threads; -1 on allocation failure. */
static int sgemm_measure(shape s, int T, int repeats, stats *out)
{
    size_t na = (size_t)s.M * (size_t)s.K, nb = (size_t)s.K * (size_t)s.N;
    size_t nc = (size_t)s.M * (size_t)s.N;
    float *A = malloc(na * sizeof(float)), *B = malloc(nb * sizeof(float));
    float *C = malloc(nc * sizeof(float));
    int rc = -1;
    if (!A || !B || !C)
        goto fail;
    for (size_t i = 0; i < na; i++)
        A[i] = (float)((i * 7) % 13) * 0.01f;
    for (size_t i = 0; i < nb; i++)
        B[i] = (float)((i * 5) % 11) * 0.01f;
    openblas_set_num_threads(T);
    double flops = 2.0 * s.M * s.N * s.K;
    /* Enough calls per timed run for ~0.1 s at 100 GFLOPS per thread, at least one. */
    long calls = (long)(1e10 * T / flops);
    if (calls < 1)
        calls = 1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s.M, s.N, s.K, 1.0f, A, s.K, B, s.N,
                0.0f, C, s.N); /* warm-up: thread start, page faults */
    double v[64];
    for (int r = 0; r < repeats; r++) {
        double t0 = now_s();
        for (long c = 0; c < calls; c++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s.M, s.N, s.K, 1.0f, A, s.K, B,
                        s.N, 0.0f, C, s.N);
        v[r] = flops * (double)calls / (now_s() - t0) / 1e9;
    }
    *out = summarise(v, repeats);
    rc = 0;
fail:
    free(A);
    free(B);
    free(C);
    return rc;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static void print_stats(const char *key, stats s, const char *tail)
{
    printf("    \"%s\": {\"best\": %.2f, \"median\": %.2f, \"min\": %.2f}%s\n", key, s.best,
           s.median, s.min, tail);
}

int main(int argc, char **argv)
{
    int T = 2, repeats = 5, n = 2048, nshapes = 0;
    shape shapes[MAX_SHAPES + 1];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--threads") && v)
            bad = parse_int(v, 1, MAX_THREADS, &T), i++;
        else if (!strcmp(a, "--repeats") && v)
            bad = parse_int(v, 1, 64, &repeats), i++;
        else if (!strcmp(a, "--n") && v)
            bad = parse_int(v, 16, 16384, &n), i++;
        else if (!strcmp(a, "--shape") && v && nshapes < MAX_SHAPES) {
            shape *s = &shapes[1 + nshapes];
            char extra;
            bad = sscanf(v, "%dx%dx%d%c", &s->M, &s->N, &s->K, &extra) != 3 || s->M < 1 ||
                  s->N < 1 || s->K < 1 || (double)s->M * s->N > 1e9 || (double)s->M * s->K > 1e9 ||
                  (double)s->K * s->N > 1e9;
            nshapes++, i++;
        } else
            bad = 1;
        if (bad) {
            fprintf(stderr,
                    "usage: %s [--threads T (1..256)] [--repeats R (1..64)] [--n N (16..16384)]"
                    " [--shape MxNxK]... (at most %d shapes)\n",
                    argv[0], MAX_SHAPES);
            return 2;
        }
    }
    shapes[0] = (shape){n, n, n};

    stats f1, fT, c1, cT;
    if (fma_measure(1, repeats, &f1, &c1) || (T > 1 && fma_measure(T, repeats, &fT, &cT)))
        return 1;

    printf("{\n  \"isa\": \"%s\",\n  \"threads\": %d,\n  \"repeats\": %d,\n", ISA, T, repeats);
    printf("  \"openblas\": {\"config\": \"%s\", \"core\": \"%s\"},\n", openblas_get_config(),
           openblas_get_corename());
    printf("  \"fma_gflops\": {\n");
    char key[16];
    snprintf(key, sizeof key, "%d", T);
    print_stats("1", f1, T > 1 ? "," : "");
    if (T > 1)
        print_stats(key, fT, "");
    printf("  },\n  \"fma_gflops_per_cpu_time\": {\n");
    print_stats("1", c1, T > 1 ? "," : "");
    if (T > 1)
        print_stats(key, cT, "");
    printf("  },\n  \"sgemm_gflops\": [\n");
    for (int s = 0; s <= nshapes; s++) {
        stats g1, gT;
        if (sgemm_measure(shapes[s], 1, repeats, &g1) ||
            (T > 1 && sgemm_measure(shapes[s], T, repeats, &gT))) {
            fprintf(stderr, "peak: out of memory for sgemm %dx%dx%d\n", shapes[s].M, shapes[s].N,
                    shapes[s].K);
            return 1;
        }
        printf("   {\"M\": %d, \"N\": %d, \"K\": %d,\n", shapes[s].M, shapes[s].N, shapes[s].K);
        const char *end = s < nshapes ? "}," : "}";
        print_stats("1", g1, T > 1 ? "," : end);
        if (T > 1)
            print_stats(key, gT, end);
    }
    printf("  ]\n}\n");
    return 0;
}
