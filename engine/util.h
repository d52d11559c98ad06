/*
 * util.h: small helpers shared by the engine's core files: the always-on assertion and
 * formatting an eng_error.
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
