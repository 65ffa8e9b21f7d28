/* labkit.c - see labkit.h. */
#include "labkit.h"

#include <string.h>

int labkit_token_valid(const char *s, size_t max_len, const char *extra) {
  size_t n = strlen(s);
  if (n == 0 || n > max_len) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          strchr(extra, c) != NULL))
      return 0;
  }
  return 1;
}

uint64_t labkit_rand(uint64_t *state) {
  *state ^= *state << 13;
  *state ^= *state >> 7;
  *state ^= *state << 17;
  return *state;
}
