/* Sample submission "nocompile": passes the timer where libuv wants a handle and calls a callback
 * with the wrong signature; the kit's flags (-Werror) reject it. */
#include <stdlib.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

static void on_delay_done(uv_timer_t *timer, int status) {
  shell_respond(timer->data, 200, "text/plain", "done\n", 5);
  (void)status;
}

static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  uv_timer_t *timer = malloc(sizeof *timer);
  uv_timer_init(shell_request_loop(req), timer);
  timer->data = req;
  uv_timer_start(timer, on_delay_done, lab->delay_ms, 0)
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->delay_ms = cfg->delay_ms;
  *out = lab;
  return shell_route(shell, "GET", "/work", handle_work, lab);
}

void lab_destroy(lab_t *lab) { free(lab); }
