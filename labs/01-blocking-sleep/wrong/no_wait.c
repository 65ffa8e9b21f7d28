/* WRONG: answers at once, skipping the delay_ms wait the contract asks for -- caught by: lab01::waits_the_full_delay */
/* "The usleep() blocks the loop, so take it out": the loop is free, every load test looks great,
 * and the service no longer does its job (the wait stood for a backend call, a retry pause, a
 * rate limit). */
#include <stdlib.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

/* Called by the shell for each GET /work, on the loop thread. */
static void handle_work(shell_request_t *req, void *data) {
  (void)data;
  /* No more sleep: nothing blocks the loop now. */
  shell_respond(req, 200, "text/plain", "done\n", 5);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->delay_ms = cfg->delay_ms;
  int rc = shell_route(shell, "GET", "/work", handle_work, lab);
  if (rc != 0) {
    free(lab);
    return rc;
  }
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) { free(lab); }
