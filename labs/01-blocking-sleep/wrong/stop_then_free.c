/* WRONG: frees each request's timer right after uv_timer_stop, without uv_close, so the loop still holds a handle whose memory is gone -- caught by: lab01::no_handle_left_behind */
/* "Stop the timer, free it": how a one-shot timer is cleaned up in many other libraries. libuv
 * keeps every initialised handle in the loop's handle queue until uv_close() has run its close
 * callback; freeing before that leaves freed memory in the queue (uv_loop_close() then fails,
 * and anything that walks the handles reads freed memory). */
#include <stdlib.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

/* One waiting request: the timer and what its callback needs, freed together. */
typedef struct pending {
  uv_timer_t timer;
  shell_request_t *req;
} pending_t;

/* Called by libuv delay_ms after handle_work started the timer. */
static void on_delay_done(uv_timer_t *timer) {
  pending_t *p = timer->data;
  shell_respond(p->req, 200, "text/plain", "done\n", 5);
  uv_timer_stop(timer); /* a one-shot timer is done: stop it and let it go */
  free(p);
}

/* Called by the shell for each GET /work, on the loop thread. */
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
  /* SOLUTION: ask the loop to call back later, and return now. */
  rc = uv_timer_start(&p->timer, on_delay_done, (uint64_t)lab->delay_ms, 0);
  if (rc != 0) {
    shell_respondf(req, 500, "text/plain", "uv_timer_start: %s\n", uv_strerror(rc));
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

/* The shell calls this after it drained, so no timer is pending: each closed itself. */
void lab_destroy(lab_t *lab) { free(lab); }
