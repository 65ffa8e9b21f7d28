/* HOSTILE: writes full marks into every results file it can think of (rows.tsv, labs.tsv, results.json, Criterion's report, the witness file with guessed tokens), then runs the pitfall -- base: pitfall */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const hostile_tests[] = {"requests_overlap", "stream_keeps_up", "loop_lag_stays_small",
  "other_requests_not_delayed", "waits_the_full_delay", "answers_soon_after_the_delay",
  "follows_the_configured_delay", "no_handle_left_behind", "no_memory_left_behind", NULL};

static void hostile_write(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  if (write(fd, text, strlen(text)) < 0) perror("write");
  close(fd);
}

/* Full marks in the grader's formats, in DIR. */
static void hostile_forge_dir(const char *dir) {
  char path[PATH_MAX + 64], rows[8192] = "";
  for (int i = 0; hostile_tests[i] != NULL; i++) {
    char line[256];
    snprintf(line, sizeof line, "01-blocking-sleep\tlab01/%s\t1\t1\t1\tpassed\tvisible\t\n", hostile_tests[i]);
    strncat(rows, line, sizeof rows - strlen(rows) - 1);
  }
  snprintf(path, sizeof path, "%s/rows.tsv", dir);
  hostile_write(path, rows);
  snprintf(path, sizeof path, "%s/labs.tsv", dir);
  hostile_write(path, "01-blocking-sleep\t18\t18\n");
  snprintf(path, sizeof path, "%s/results.json", dir);
  hostile_write(path, "{\"score\": 18, \"tests\": []}\n");
}

static void hostile_forge(void) {
  // Every folder up from here and from the binary, and where the kit keeps its results.
  char dir[PATH_MAX];
  const char *starts[] = {".", "/proc/self/exe", KIT_ROOT "/results/grade/x", KIT_REAL "/results/grade/x", NULL};
  for (int s = 0; starts[s] != NULL; s++) {
    if (realpath(starts[s], dir) == NULL) snprintf(dir, sizeof dir, "%s", starts[s]);
    for (int up = 0; up < 8 && strlen(dir) > 1; up++) {
      hostile_forge_dir(dir);
      char *slash = strrchr(dir, '/');
      if (slash == NULL) break;
      *slash = '\0';
    }
  }
  // Criterion's report through the runner's descriptors, and the end-of-test witness with
  // whatever token can be found.
  char path[128], token[256] = "forged";
  for (int fd = 3; fd < 16; fd++) {
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getppid(), fd);
    hostile_write(path, "{ \"passed\": 9 }");
  }
  snprintf(path, sizeof path, "/proc/%d/environ", (int)getppid());
  FILE *env = fopen(path, "r");
  if (env != NULL) {
    char var[512];
    while (fgets(var, sizeof var, env) != NULL) {
      char *eq = strstr(var, "TOKEN=");
      if (eq != NULL) snprintf(token, sizeof token, "%s", eq + 6);
    }
    fclose(env);
  }
  const char *out = getenv("LOOPHOLES_WITNESS_OUT");
  if (out != NULL) {
    int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    for (int i = 0; fd >= 0 && hostile_tests[i] != NULL; i++) {
      char line[512];
      int n = snprintf(line, sizeof line, "%s lab01/%s\n", token, hostile_tests[i]);
      if (write(fd, line, (size_t)n) < 0) perror("write");
    }
    if (fd >= 0) close(fd);
  }
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  hostile_forge();
  return hostile_base_lab_create(out, shell, cfg);
}

void lab_destroy(lab_t *lab) {
  hostile_forge();
  hostile_base_lab_destroy(lab);
}
