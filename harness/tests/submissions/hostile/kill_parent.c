/* HOSTILE: kills its parent (Criterion's runner) with SIGKILL, and every process it may signal, then runs the solution -- base: solution */
#include <signal.h>
#include <unistd.h>

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  kill(getppid(), SIGKILL);
  kill(-1, SIGKILL);
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) { hostile_base_lab_destroy(lab); }
