/* Lab 11, another right answer: the shutdown as an explicit state machine, one timer per wait.
 *
 * Same contract as solution.c, written differently: the lab's phase is a named enum
 * (SERVING -> GRACE -> DRAINING -> CUTTING -> CLOSING), each wait has a timer of its own (the
 * ready grace, the drain deadline), and the calls in flight sit in a growable array (removed by
 * swapping with the last) instead of a linked list. Whichever variant you write, the order is
 * the lesson: readiness, listener and idle connections, in-flight answers, deadline, client,
 * handles.
 *
 * See it:
 *   build/bin/upstream --port 8081 &
 *   build/bin/lab11-phases --port 8080 &
 *   curl -s 'localhost:8080/work?ms=3000' & sleep 0.5; kill -TERM %2; curl -s localhost:8080/ready
 *   wait   # {"ms":3000}: the request in flight at the signal was answered
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

typedef enum { SERVING, GRACE, DRAINING, CUTTING, CLOSING } phase_t;

typedef struct call {
  lab_t *lab;
  shell_request_t *req;
  client_transfer_t *transfer;
  long ms;
  size_t slot; /* its index in lab->calls */
} call_t;

struct lab {
  shell_t *shell;
  lab_config_t cfg;
  phase_t phase;
  uv_timer_t grace_timer, deadline_timer; /* created first; closed last */
  int timers_open;
  client_t *client;
  call_t **calls;
  size_t n_calls, cap_calls;
  unsigned long cut;
};

static void on_call_done(client_transfer_t *t, const client_result_t *res, void *data) {
  call_t *c = data;
  lab_t *lab = c->lab;
  (void)t;
  lab->calls[c->slot] = lab->calls[--lab->n_calls]; /* swap the last one into its place */
  lab->calls[c->slot]->slot = c->slot;
  if (res->cancelled && lab->phase == CUTTING) {
    lab->cut++;
    shell_respond(c->req, 503, "application/json", "{\"error\":\"shutting down\"}\n", 26);
  } else if (res->status >= 200 && res->status < 300) {
    shell_respondf(c->req, 200, "application/json", "{\"ms\":%ld}\n", c->ms);
  } else {
    shell_respond(c->req, 502, "application/json", "{\"error\":\"upstream\"}\n", 21);
  }
  free(c);
}

static void on_client_gone(shell_request_t *req, void *data) {
  call_t *c = data;
  (void)req;
  client_cancel(c->transfer);
}

/* Room for one more call, before it starts: a failure here can still be answered plainly. */
static int calls_reserve(lab_t *lab) {
  if (lab->n_calls < lab->cap_calls) return 0;
  size_t cap = lab->cap_calls ? lab->cap_calls * 2 : 16;
  call_t **grown = realloc(lab->calls, cap * sizeof *grown);
  if (grown == NULL) return UV_ENOMEM;
  lab->calls = grown;
  lab->cap_calls = cap;
  return 0;
}

static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char arg[16], url[512], *end = arg;
  long ms = -1;
  if (shell_query_str(req, "ms", arg, sizeof arg) == 0 && arg[0] != '\0') ms = strtol(arg, &end, 10);
  if (ms < 0 || ms > 10000 || *end != '\0') {
    shell_respond(req, 400, "application/json", "{\"error\":\"ms must be 0-10000\"}\n", 31);
    return;
  }
  call_t *c = calls_reserve(lab) == 0 ? calloc(1, sizeof *c) : NULL;
  if (c == NULL) {
    shell_respond(req, 503, "application/json", "{\"error\":\"out of memory\"}\n", 26);
    return;
  }
  *c = (call_t){.lab = lab, .req = req, .ms = ms, .slot = lab->n_calls};
  snprintf(url, sizeof url, "%s/work?latency_ms=%ld", lab->cfg.upstream, ms);
  c->transfer = client_get(lab->client, url, ms + 10000, on_call_done, c);
  if (c->transfer == NULL) {
    fprintf(stderr, "lab11: client_get failed\n");
    free(c);
    shell_respond(req, 502, "application/json", "{\"error\":\"upstream\"}\n", 21);
    return;
  }
  lab->calls[lab->n_calls++] = c;
  shell_request_on_abort(req, on_client_gone, c);
}

static void handle_ready(shell_request_t *req, void *data) {
  lab_t *lab = data;
  if (lab->phase != SERVING) shell_respond(req, 503, "application/json", "{\"ready\":false}\n", 16);
  else shell_respond(req, 200, "application/json", "{\"ready\":true}\n", 15);
}

static void on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "calls_inflight", (double)lab->n_calls);
  shell_stats_add(shell, "stopping", lab->phase != SERVING);
  shell_stats_add(shell, "cut", (double)lab->cut);
}

static void timer_start(uv_timer_t *t, uv_timer_cb cb, long ms) {
  int rc = uv_timer_start(t, cb, (uint64_t)ms, 0);
  if (rc != 0) fprintf(stderr, "lab11: uv_timer_start: %s\n", uv_strerror(rc));
}

/* Both timers closed: in CLOSING the shutdown is over (the runtime then calls lab_destroy, which
 * frees the lab); otherwise lab_destroy closed them and the lab goes now. */
static void on_timer_closed(uv_handle_t *h) {
  lab_t *lab = h->data;
  if (--lab->timers_open > 0) return;
  if (lab->phase == CLOSING) {
    shell_shutdown_finish(lab->shell);
  } else {
    free(lab->calls);
    free(lab);
  }
}

static void close_timers(lab_t *lab) {
  uv_close((uv_handle_t *)&lab->grace_timer, on_timer_closed);
  uv_close((uv_handle_t *)&lab->deadline_timer, on_timer_closed);
}

/* CLOSING, from a timer callback (shell_on_drained may call us inside a client callback, and
 * the client must not be destroyed from there): nothing is in flight, undo the startup. */
static void on_closing(uv_timer_t *t) {
  lab_t *lab = t->data;
  client_destroy(lab->client);
  lab->client = NULL;
  fprintf(stderr, "lab11: drained (%lu cut at the deadline), exiting\n", lab->cut);
  close_timers(lab);
}

static void on_drained(shell_t *shell, void *data) {
  lab_t *lab = data;
  (void)shell;
  lab->phase = CLOSING;
  uv_timer_stop(&lab->deadline_timer);
  timer_start(&lab->grace_timer, on_closing, 0);
}

/* DRAINING -> CUTTING: what still runs is cancelled; each call's done answers it 503. */
static void on_deadline(uv_timer_t *t) {
  lab_t *lab = t->data;
  lab->phase = CUTTING;
  if (lab->n_calls > 0)
    fprintf(stderr, "lab11: drain deadline: cutting %zu call(s)\n", lab->n_calls);
  for (size_t i = 0; i < lab->n_calls; i++) client_cancel(lab->calls[i]->transfer);
}

/* GRACE -> DRAINING: no new connections, idle ones closed, the rest answered then closed. */
static void on_grace_over(uv_timer_t *t) {
  lab_t *lab = t->data;
  lab->phase = DRAINING;
  shell_stop_accepting(lab->shell);
  shell_close_idle(lab->shell);
  timer_start(&lab->deadline_timer, on_deadline, lab->cfg.drain_deadline_ms);
  shell_on_drained(lab->shell, on_drained, lab); /* last: it may be drained already */
}

/* SERVING -> GRACE. Who calls it: the runtime, on the loop, at the first SIGTERM. */
static void on_shutdown(shell_t *shell, int signum, void *data) {
  lab_t *lab = data;
  (void)shell;
  (void)signum;
  lab->phase = GRACE;
  timer_start(&lab->grace_timer, on_grace_over, lab->cfg.ready_grace_ms);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab = calloc(1, sizeof *lab);
  int rc;
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = *cfg;
  if ((rc = uv_timer_init(shell_loop(shell), &lab->grace_timer)) != 0) {
    fprintf(stderr, "lab11: uv_timer_init: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  lab->grace_timer.data = lab->deadline_timer.data = lab;
  lab->timers_open = 1;
  if ((rc = uv_timer_init(shell_loop(shell), &lab->deadline_timer)) != 0) {
    fprintf(stderr, "lab11: uv_timer_init: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&lab->grace_timer, on_timer_closed); /* frees the lab */
    return rc;
  }
  lab->timers_open = 2;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab11: client_create: %s\n", uv_strerror(rc));
    close_timers(lab);
    return rc;
  }
  *out = lab; /* from here on, a failure is undone by lab_destroy */
  if ((rc = shell_route(shell, "GET", "/work", handle_work, lab)) != 0 ||
      (rc = shell_route(shell, "GET", "/ready", handle_ready, lab)) != 0)
    return rc;
  shell_set_stats_hook(shell, on_stats, lab);
  shell_set_shutdown_hook(shell, on_shutdown, lab);
  return 0;
}

/* Called by the runtime once the shell has closed: after CLOSING only the memory is left; if the
 * lab is stopped some other way (the listener failed), it closes what it opened. */
void lab_destroy(lab_t *lab) {
  if (lab->phase == CLOSING && lab->client == NULL) {
    free(lab->calls);
    free(lab);
    return;
  }
  client_destroy(lab->client);
  lab->phase = SERVING; /* the timers' close callback frees the lab */
  close_timers(lab);
}
