/*
 * util.h: small helpers shared by the engine's core files: the always-on assertion,
 * formatting an eng_error, and the attributes that build a kernel for AVX2 / AVX-512 too.
 */
#pragma once

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine.h"

/* Bugs abort, input never does: stays on in release builds. */
#define ENG_ASSERT(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* Sets err->field (may be NULL = empty) and the formatted err->text; returns `code`.
 * `err` may be NULL. */
__attribute__((format(printf, 4, 5))) int eng_err_set(eng_error *err, int code, const char *field,
                                                      const char *fmt, ...);

/* Kernel functions built for several x86-64 instruction sets, one picked at load time (GCC's
 * target_clones, an ifunc), for the element-wise and data-movement loops. The clones' targets
 * enable no FMA, and C17 mode keeps GCC from contracting a * b + c, so as long as a loop does
 * not reassociate, every clone computes the same bits as the baseline (SSE2) body: results do
 * not depend on the CPU. Other compilers and targets build the baseline body only. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* the baseline and an AVX2 body */
#define ENG_SIMD_AVX2 __attribute__((target_clones("avx2", "default")))
/* the baseline, an AVX2 and an AVX-512 body (for loops over rows of 16 floats and more) */
#define ENG_SIMD_AVX512 __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ENG_SIMD_AVX2
#define ENG_SIMD_AVX512
#endif
