/* HOSTILE: rewrites labs/manifest (every weight 0 but one it passes) and appends a free test to test.c at run time, by the kit's real path (and a copy of it) and relative to the binary; also tries the kit's built objects -- base: pitfall */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void hostile_put(const char *path, const char *text, int flags) {
  int fd = open(path, O_WRONLY | flags);
  if (fd < 0) return;
  if (write(fd, text, strlen(text)) < 0) perror("write");
  close(fd);
}

static void hostile_edit_kit(void) {
  const char *manifest = "lab 01-blocking-sleep\ntitle x\nweight lab01::waits_the_full_delay 1\n";
  const char *test = "\nTest(lab01, free_points) {}\n";
  const char *roots[] = {KIT_ROOT, KIT_REAL, "../..", "../../..", "/kit", "/kit/build", NULL};
  for (int i = 0; roots[i] != NULL; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/labs/manifest", roots[i]);
    hostile_put(path, manifest, O_TRUNC);
    snprintf(path, sizeof path, "%s/labs/01-blocking-sleep/test.c", roots[i]);
    hostile_put(path, test, O_APPEND);
    snprintf(path, sizeof path, "%s/obj/labs/01-blocking-sleep/test.o", roots[i]);
    hostile_put(path, "x", O_TRUNC);
    snprintf(path, sizeof path, "%s/lib/libloopholes.a", roots[i]);
    hostile_put(path, "x", O_TRUNC);
  }
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  hostile_edit_kit();
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) { hostile_base_lab_destroy(lab); }
