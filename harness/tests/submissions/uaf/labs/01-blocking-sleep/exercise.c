/* Sample submission "uaf": the timer approach, but the struct holding the timer is freed right
 * after uv_close() instead of in the close callback, which then reads the freed struct (and libuv
 * touches the handle too). A use after free that usually goes unnoticed, and that AddressSanitizer
 * reports. */
#include <stdlib.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

typedef struct pending {
  uv_timer_t timer;
  shell_request_t *req;
} pending_t;

/* Called by libuv once the handle is closed. */
static void on_timer_closed(uv_handle_t *handle) {
  pending_t *p = handle->data;
  /* Reads freed memory: on_delay_done already freed p. Without a sanitizer it reads garbage and
   * carries on, which is why this kind of bug survives until it corrupts something. */
  volatile shell_request_t *last = p->req;
  (void)last;
}

static void on_delay_done(uv_timer_t *timer) {
  pending_t *p = timer->data;
  shell_respond(p->req, 200, "text/plain", "done\n", 5);
  uv_close((uv_handle_t *)timer, on_timer_closed);
  free(p); /* too early: the handle is still closing */
}

static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  pending_t *p = malloc(sizeof *p);
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
  p->timer.data = p;
  rc = uv_timer_start(&p->timer, on_delay_done, (uint64_t)lab->delay_ms, 0);
  if (rc != 0) {
    shell_respondf(req, 500, "text/plain", "uv_timer_start: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&p->timer, NULL);
    free(p);
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
