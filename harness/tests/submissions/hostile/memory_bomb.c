/* HOSTILE: allocates and touches 64 MiB after 64 MiB until there is no more, then aborts -- base: solution */
#include <stdlib.h>
#include <string.h>

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  for (;;) {
    char *chunk = malloc(64u << 20);
    if (chunk == NULL) abort();
    memset(chunk, 1, 64u << 20);
  }
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) { hostile_base_lab_destroy(lab); }
