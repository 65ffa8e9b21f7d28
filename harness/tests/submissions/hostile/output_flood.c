/* HOSTILE: writes 10 GB to stdout and stderr before it starts, then runs the solution -- base: solution */
#include <string.h>
#include <unistd.h>

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  static char block[1 << 20];
  memset(block, 'y', sizeof block);
  for (int i = 0; i < 10 * 1024; i++) {
    if (write(i % 2 ? 1 : 2, block, sizeof block) < 0) break;
  }
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) { hostile_base_lab_destroy(lab); }
