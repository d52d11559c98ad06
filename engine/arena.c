/*
 * arena.c: the bump allocator behind activations and scratch. See arena.h.
 */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

#include "util.h"

#define ALIGN 64

void eng_arena_init(eng_arena *a)
{
    a->base = NULL;
    a->cap = 0;
    a->used = 0;
}

int eng_arena_commit(eng_arena *a, size_t extra)
{
    size_t size = a->used + extra + ALIGN;
    void *p = NULL;
    if (posix_memalign(&p, ALIGN, size) != 0)
        return ENG_ENOMEM;
    free(a->base);
    a->base = p;
    a->cap = size;
    a->used = 0;
    return 0;
}

float *eng_arena_floats(eng_arena *a, size_t n)
{
    size_t bytes = (n * sizeof(float) + ALIGN - 1) / ALIGN * ALIGN;
    size_t off = a->used;
    a->used += bytes;
    if (!a->base)
        return NULL;
    ENG_ASSERT(a->used <= a->cap);
    return (float *)(void *)(a->base + off);
}

void eng_arena_reset(eng_arena *a)
{
    a->used = 0;
}

void eng_arena_fini(eng_arena *a)
{
    free(a->base);
    eng_arena_init(a);
}
