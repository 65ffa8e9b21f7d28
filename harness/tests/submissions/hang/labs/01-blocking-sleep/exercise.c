/* Sample submission "hang": short waits use a timer, but long ones (>= 250 ms) busy-wait on
 * uv_now() "so the answer is not late". uv_now() is the loop's cached time, updated only between
 * loop iterations, so inside a callback it never moves: that request spins forever and the loop
 * with it. Only the test that asks for a long delay hangs; the grader must fail that test, pass
 * the others and still finish. */
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
  pending_t *p = timer->data;
  shell_respond(p->req, 200, "text/plain", "done\n", 5);
  uv_close((uv_handle_t *)timer, on_timer_closed);
}

static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  uv_loop_t *loop = shell_request_loop(req);
  if (lab->delay_ms >= 250) {
    uint64_t deadline = uv_now(loop) + (uint64_t)lab->delay_ms;
    while (uv_now(loop) < deadline) {
      /* nothing updates uv_now() while we spin */
    }
    shell_respond(req, 200, "text/plain", "done\n", 5);
    return;
  }
  pending_t *p = malloc(sizeof *p);
  if (p == NULL) {
    shell_respond(req, 503, "text/plain", "out of memory\n", 14);
    return;
  }
  p->req = req;
  int rc = uv_timer_init(loop, &p->timer);
  if (rc != 0) {
    free(p);
    shell_respondf(req, 500, "text/plain", "uv_timer_init: %s\n", uv_strerror(rc));
    return;
  }
  p->timer.data = p;
  rc = uv_timer_start(&p->timer, on_delay_done, (uint64_t)lab->delay_ms, 0);
  if (rc != 0) {
    shell_respondf(req, 500, "text/plain", "uv_timer_start: %s\n", uv_strerror(rc));
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
