/* Sample submission "crash": the timer approach, but timer.data is never set, so the timer
 * callback dereferences NULL. Each test that sends GET /work crashes its own process only. */
#include <stdlib.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

typedef struct pending {
  uv_timer_t timer;
  shell_request_t *req;
} pending_t;

static void on_timer_closed(uv_handle_t *handle) { free(handle->data); }

static void on_delay_done(uv_timer_t *timer) {
  pending_t *p = timer->data; /* NULL: handle_work forgot to set it */
  shell_respond(p->req, 200, "text/plain", "done\n", 5);
  uv_close((uv_handle_t *)timer, on_timer_closed);
}

static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  pending_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    shell_respond(req, 503, "text/plain", "out of memory\n", 14);
    return;
  }
  p->req = req;
  int rc = uv_timer_init(shell_request_loop(req), &p->timer);
  if (rc != 0) {
    free(p);
    shell_respondf(req, 500, "text/plain", "uv_timer_init: %s\n", uv_strerror(rc));
    return;
  }
  rc = uv_timer_start(&p->timer, on_delay_done, (uint64_t)lab->delay_ms, 0);
  if (rc != 0) {
    shell_respondf(req, 500, "text/plain", "uv_timer_start: %s\n", uv_strerror(rc));
    p->timer.data = p;
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
  }
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
