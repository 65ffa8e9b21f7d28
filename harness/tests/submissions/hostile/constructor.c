/* HOSTILE: a constructor, which would run in Criterion's runner (outside every test), exits before any test starts -- base: solution */
#include <stdlib.h>

__attribute__((constructor)) static void hostile_early(void) {
  if (getenv("LOOPHOLES_WITNESS_FD") != NULL) exit(0);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) { hostile_base_lab_destroy(lab); }
