/* tests/labkit.c - the helpers lab variants share (harness/lib/labkit.h): both sides of every
 * bound of labkit_token_valid, and labkit_rand against the xorshift64 sequence the labs used to
 * spell out inline (a lab's jitter must not change when it moves to the helper).
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "labkit.h"

Test(labkit, token_bounds) {
  char s63[64], s64[65];
  memset(s63, 'a', 63);
  s63[63] = '\0';
  memset(s64, 'b', 64);
  s64[64] = '\0';
  cr_assert(labkit_token_valid(s63, 63, "-_"), "63 letters with max_len 63 must be valid");
  cr_assert(!labkit_token_valid(s64, 63, "-_"), "64 letters with max_len 63 must be refused");
  cr_assert(!labkit_token_valid("", 63, "-_"), "an empty token must be refused");
  cr_assert(labkit_token_valid("x", 1, ""), "one letter with max_len 1 must be valid");
}

Test(labkit, token_characters) {
  cr_assert(labkit_token_valid("AZaz09-_", 63, "-_"), "letters, digits, '-' and '_' are allowed");
  cr_assert(!labkit_token_valid("a.b", 63, "-_"), "'.' is not in extra \"-_\"");
  cr_assert(labkit_token_valid("a.b", 62, "._-"), "'.' is allowed when extra has it");
  static const char *const bad[] = {"a b", "a/b", "a?b", "a&b", "a%b", "a=b", "\xc3\xa9", NULL};
  for (int i = 0; bad[i] != NULL; i++)
    cr_assert(!labkit_token_valid(bad[i], 63, "-_"), "\"%s\" needs escaping in a URL: refuse it",
              bad[i]);
}

Test(labkit, rand_is_xorshift64) {
  uint64_t state = 12345, ref = 12345;
  for (int i = 0; i < 1000; i++) {
    ref ^= ref << 13;
    ref ^= ref >> 7;
    ref ^= ref << 17;
    uint64_t got = labkit_rand(&state);
    cr_assert(got == ref && state == ref, "draw %d: %llu, want %llu (xorshift64 13/7/17)", i,
              (unsigned long long)got, (unsigned long long)ref);
    cr_assert(got != 0, "xorshift64 never reaches 0 from a non-zero state");
  }
}
