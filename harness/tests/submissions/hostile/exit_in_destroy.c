/* HOSTILE: exit(0) in lab_destroy, after the assertions made so far held: the test's last lines never run -- base: pitfall */
#include <stdlib.h>

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) {
  hostile_base_lab_destroy(lab);
  exit(0);
}
