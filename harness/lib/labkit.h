/* labkit.h - two small helpers that lab variants share (each was copied into a dozen lab files).
 *
 * labkit_token_valid: an id that a lab puts into an upstream URL as is must not need escaping.
 * labkit_rand: the random part of a backoff (jitter); not for anything secret.
 */
#ifndef LOOPHOLES_LABKIT_H
#define LOOPHOLES_LABKIT_H

#include <stddef.h>
#include <stdint.h>

/* 1 when s has 1..max_len characters, each an ASCII letter, a digit or one of extra ("-_"); else 0. */
int labkit_token_valid(const char *s, size_t max_len, const char *extra);

/* The next number of a xorshift64 generator. *state must not be 0 (seed it with uv_hrtime() | 1). */
uint64_t labkit_rand(uint64_t *state);

#endif
