/* Lab 01, another right answer: one timer for the whole service, armed for the oldest deadline.
 *
 * The solution gives each request a uv_timer_t. This variant keeps the waiting requests in a
 * FIFO with their deadlines (arrival + delay_ms; with one delay for all, arrival order is
 * deadline order) and one timer armed for the head's deadline. When it fires it answers every
 * request whose deadline has come and re-arms for the next: N requests wait at once, cost one
 * handle in all, and each is answered delay_ms after it arrived - not delay_ms after the one
 * before it (the wrong answer wrong/one_timer_queue.c does that).
 *
 * See it:  make test LAB=01   (the suite passes on this file too: build/test/lab01-one_timer)
 */
#include <stdint.h>
#include <stdlib.h>

#include "lab.h"

typedef struct waiting {
  shell_request_t *req;
  uint64_t deadline_ns;   /* uv_hrtime() at arrival + delay */
  struct waiting *next;
} waiting_t;

struct lab {
  long delay_ms;
  uv_timer_t timer;         /* armed for head->deadline_ns while anything waits */
  waiting_t *head, *tail;   /* oldest first = earliest deadline first */
};

static void on_timer(uv_timer_t *timer);

/* Arms the timer for the earliest deadline, rounded up to whole ms (never early). */
static void arm(lab_t *lab) {
  if (lab->head == NULL) return;
  uint64_t now = uv_hrtime(), due = lab->head->deadline_ns;
  uint64_t wait_ms = due > now ? (due - now + 999999) / 1000000 : 0;
  int rc = uv_timer_start(&lab->timer, on_timer, wait_ms, 0);
  if (rc != 0) {
    /* Cannot wait: answer everyone now rather than leave them hanging. */
    while (lab->head != NULL) {
      waiting_t *w = lab->head;
      lab->head = w->next;
      shell_respondf(w->req, 500, "text/plain", "uv_timer_start: %s\n", uv_strerror(rc));
      free(w);
    }
    lab->tail = NULL;
  }
}

/* Called by libuv when the earliest deadline has come: answer all that are due, re-arm. */
static void on_timer(uv_timer_t *timer) {
  lab_t *lab = timer->data;
  uint64_t now = uv_hrtime();
  while (lab->head != NULL && lab->head->deadline_ns <= now) {
    waiting_t *w = lab->head;
    lab->head = w->next;
    if (lab->head == NULL) lab->tail = NULL;
    shell_respond(w->req, 200, "text/plain", "done\n", 5);
    free(w);
  }
  arm(lab);
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
  w->deadline_ns = uv_hrtime() + (uint64_t)lab->delay_ms * 1000000u;
  w->next = NULL;
  int was_empty = lab->head == NULL;
  if (lab->tail) lab->tail->next = w; else lab->head = w;
  lab->tail = w;
  if (was_empty) arm(lab);   /* otherwise the timer is already set for an earlier deadline */
}

/* Called by libuv once the lab's timer is closed: only now may the lab's memory go. */
static void on_lab_closed(uv_handle_t *handle) { free(handle->data); }

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
    uv_close((uv_handle_t *)&lab->timer, on_lab_closed);
    return rc;
  }
  *out = lab;
  return 0;
}

/* The shell calls this after it drained: nothing waits, the timer is idle. */
void lab_destroy(lab_t *lab) { uv_close((uv_handle_t *)&lab->timer, on_lab_closed); }
