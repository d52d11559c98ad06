/*
 * arena.h: bump allocator for activations and scratch (ggml context style).
 *
 * The trainer sizes one arena before step 1 (eng_arena_reserve adds up the requests of a
 * dry run), allocates it once, and hands out 64-byte aligned float buffers; the step loop
 * allocates nothing. Not thread-safe: one arena per trainer.
 */
#pragma once

#include <stddef.h>

typedef struct eng_arena {
    char *base; /* owned; NULL while only measuring */
    size_t cap, used;
} eng_arena;

/* Initialises an empty measuring arena (allocations return NULL and only count). */
void eng_arena_init(eng_arena *a);
/* Allocates the measured size (plus `extra` bytes). Returns 0 or ENG_ENOMEM. */
int eng_arena_commit(eng_arena *a, size_t extra);
/* Returns `n` floats (64-byte aligned); NULL while measuring. Aborts when a committed
 * arena overflows: that is a sizing bug, not an input error. */
float *eng_arena_floats(eng_arena *a, size_t n);
/* Forgets every allocation (keeps the memory). */
void eng_arena_reset(eng_arena *a);
/* Frees the memory; the arena may be re-initialised. */
void eng_arena_fini(eng_arena *a);
