/* HOSTILE: sleeps an hour in lab_destroy, so no test ever stops -- base: solution */
#include <unistd.h>

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) {
  sleep(3600);
  hostile_base_lab_destroy(lab);
}
