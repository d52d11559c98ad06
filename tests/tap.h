/*
 * tap.h: a tiny TAP producer for thawd's unit tests (meson runs them with protocol: 'tap').
 *
 * Usage: call ok()/is_int()/is_near()/is_str() for each check, then `return done_testing();`
 * from main. Each check prints "ok N - name" or "not ok N - name" plus a diagnostic line;
 * done_testing() prints the plan and returns 1 if any check failed.
 */
#pragma once

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int tap_run;
static int tap_failed;

__attribute__((format(printf, 2, 3))) static inline bool tap_check(bool pass, const char *fmt,
                                                                     ...)
{
    va_list ap;
    tap_run++;
    if (!pass)
        tap_failed++;
    printf("%sok %d - ", pass ? "" : "not ", tap_run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return pass;
}

/* Prints a diagnostic line (TAP comment). */
#define diag(...)                                                                              \
    do {                                                                                       \
        printf("# ");                                                                          \
        printf(__VA_ARGS__);                                                                   \
        printf("\n");                                                                          \
    } while (0)

#define ok(cond, ...) tap_check((cond), __VA_ARGS__)

#define is_int(got, want, ...)                                                                 \
    do {                                                                                       \
        long long tap_g_ = (long long)(got), tap_w_ = (long long)(want);                       \
        if (!tap_check(tap_g_ == tap_w_, __VA_ARGS__))                                         \
            diag("  %s:%d: got %lld, want %lld", __FILE__, __LINE__, tap_g_, tap_w_);          \
    } while (0)

/* Passes when |got - want| <= tol * max(1, |want|) (relative for large values). */
#define is_near(got, want, tol, ...)                                                           \
    do {                                                                                       \
        double tap_g_ = (double)(got), tap_w_ = (double)(want), tap_t_ = (double)(tol);        \
        double tap_s_ = fabs(tap_w_) > 1.0 ? fabs(tap_w_) : 1.0;                               \
        if (!tap_check(fabs(tap_g_ - tap_w_) <= tap_t_ * tap_s_, __VA_ARGS__))                 \
            diag("  %s:%d: got %.9g, want %.9g (tol %.3g)", __FILE__, __LINE__, tap_g_, tap_w_, \
                 tap_t_);                                                                      \
    } while (0)

#define is_str(got, want, ...)                                                                 \
    do {                                                                                       \
        const char *tap_g_ = (got), *tap_w_ = (want);                                          \
        bool tap_p_ = tap_g_ && tap_w_ && strcmp(tap_g_, tap_w_) == 0;                         \
        if (!tap_check(tap_p_, __VA_ARGS__))                                                   \
            diag("  %s:%d: got \"%s\", want \"%s\"", __FILE__, __LINE__,                       \
                 tap_g_ ? tap_g_ : "(null)", tap_w_ ? tap_w_ : "(null)");                      \
    } while (0)

static inline int done_testing(void)
{
    printf("1..%d\n", tap_run);
    if (tap_failed)
        printf("# %d of %d checks failed\n", tap_failed, tap_run);
    return tap_failed ? 1 : 0;
}
