/*
 * sha256.h: SHA-256 (FIPS 180-4), streaming, for the digests of written files.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct eng_sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    uint8_t buf[64];
    size_t n; /* bytes in buf */
} eng_sha256;

void eng_sha256_init(eng_sha256 *s);
void eng_sha256_update(eng_sha256 *s, const void *data, size_t len);
/* Finishes and writes the 32-byte digest; `s` must be re-initialised to hash again. */
void eng_sha256_final(eng_sha256 *s, uint8_t out[32]);
/* Finishes and writes the digest as 64 lowercase hex digits plus NUL. */
void eng_sha256_final_hex(eng_sha256 *s, char hex[65]);
/* One-shot digest of `len` bytes (no allocation). */
void eng_sha256_digest(const void *data, size_t len, uint8_t out[32]);
