/* Sample submission "hang": replaces usleep() with a busy wait on uv_now(). uv_now() is the
 * loop's cached time, updated only between loop iterations, so inside a callback it never moves
 * and the loop spins forever. The tests time out; the grader must still finish. */
#include <stdlib.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  uv_loop_t *loop = shell_request_loop(req);
  uint64_t deadline = uv_now(loop) + (uint64_t)lab->delay_ms;
  while (uv_now(loop) < deadline) {
    /* "no sleep any more" - but nothing updates uv_now() while we spin */
  }
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
