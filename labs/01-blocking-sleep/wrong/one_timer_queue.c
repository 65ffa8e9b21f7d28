/* WRONG: one timer for the whole service answers the waiting requests one after another, so N requests take N x delay_ms -- caught by: lab01::requests_overlap */
/* "A timer per request is a lot of handles; one timer and a queue will do." The loop never
 * blocks (loop lag and /debug/stats look fine), but the waits happen in turn, not together:
 * the service still does 1000/delay_ms requests per second, exactly like the sleep. */
#include <stdlib.h>

#include "lab.h"

typedef struct waiting {
  shell_request_t *req;
  struct waiting *next;
} waiting_t;

struct lab {
  long delay_ms;
  uv_timer_t timer;            /* the one timer */
  waiting_t *head, *tail;      /* requests not answered yet, oldest first */
};

static void start_next(lab_t *lab);

/* Called by libuv delay_ms after start_next: the oldest request has waited, answer it. */
static void on_timer(uv_timer_t *timer) {
  lab_t *lab = timer->data;
  waiting_t *w = lab->head;
  lab->head = w->next;
  if (lab->head == NULL) lab->tail = NULL;
  shell_respond(w->req, 200, "text/plain", "done\n", 5);
  free(w);
  start_next(lab);
}

static void start_next(lab_t *lab) {
  if (lab->head == NULL || uv_is_active((uv_handle_t *)&lab->timer)) return;
  int rc = uv_timer_start(&lab->timer, on_timer, (uint64_t)lab->delay_ms, 0);
  if (rc != 0) {
    waiting_t *w = lab->head;
    lab->head = w->next;
    if (lab->head == NULL) lab->tail = NULL;
    shell_respondf(w->req, 500, "text/plain", "uv_timer_start: %s\n", uv_strerror(rc));
    free(w);
  }
}

/* Called by the shell for each GET /work, on the loop thread. */
static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  waiting_t *w = malloc(sizeof *w);
  if (w == NULL) {
    shell_respond(req, 503, "text/plain", "out of memory\n", 14);
    return;
  }
  w->req = req;
  w->next = NULL;
  if (lab->tail) lab->tail->next = w; else lab->head = w;
  lab->tail = w;
  start_next(lab);
}

/* Called by libuv once the lab's timer is closed: the lab's memory may go. */
static void on_lab_timer_closed(uv_handle_t *h) { free(h->data); }

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->delay_ms = cfg->delay_ms;
  int rc = uv_timer_init(shell_loop(shell), &lab->timer);
  if (rc != 0) {
    free(lab);
    return rc;
  }
  lab->timer.data = lab;
  rc = shell_route(shell, "GET", "/work", handle_work, lab);
  if (rc != 0) {
    uv_close((uv_handle_t *)&lab->timer, on_lab_timer_closed);
    return rc;
  }
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) { uv_close((uv_handle_t *)&lab->timer, on_lab_timer_closed); }
