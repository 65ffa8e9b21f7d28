/* HOSTILE: forks a child that keeps the test's stdout and stderr open and lives forever, then runs the pitfall -- base: pitfall */
#include <unistd.h>

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  pid_t pid = fork();
  if (pid == 0) {
    for (;;) pause();
  }
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) { hostile_base_lab_destroy(lab); }
