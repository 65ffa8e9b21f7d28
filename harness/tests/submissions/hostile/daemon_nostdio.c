/* HOSTILE: a real daemon: double fork, setsid, stdio closed, lives forever; then runs the pitfall -- base: pitfall */
#include <stdlib.h>
#include <unistd.h>

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setsid() < 0 || fork() != 0) _exit(0);
    close(0);
    close(1);
    close(2);
    for (;;) pause();
  }
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) { hostile_base_lab_destroy(lab); }
