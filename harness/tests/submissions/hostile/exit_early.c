/* HOSTILE: exit(0) at the top of lab_create: every test process ends with status 0 before one assertion ran -- base: solution */
#include <stdlib.h>

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  if (cfg != NULL) exit(0);
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) { hostile_base_lab_destroy(lab); }
