/* WRONG: starts the timer with delay_ms * 1000 (usleep's microseconds), so each answer comes 1000 times too late -- caught by: lab01::answers_soon_after_the_delay */
/* The usleep() call took microseconds, and the timer replacing it kept the conversion. Every
 * test that only checks "no sooner than delay_ms" passes; the service answers after 10 s
 * instead of 10 ms. */
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

/* Called by libuv once the timer's handle is closed: only now may its memory go. */
static void on_timer_closed(uv_handle_t *handle) { free(handle->data); }

/* Called by libuv delay_ms after handle_work started the timer. */
static void on_delay_done(uv_timer_t *timer) {
  pending_t *p = timer->data;
  shell_respond(p->req, 200, "text/plain", "done\n", 5);
  uv_close((uv_handle_t *)timer, on_timer_closed);
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
  rc = uv_timer_start(&p->timer, on_delay_done, (uint64_t)(lab->delay_ms * 1000), 0);
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

/* The shell calls this after it drained, so no timer is pending: each closed itself. */
void lab_destroy(lab_t *lab) { free(lab); }
