/* WRONG: drain-deadline-ms may be 0 (cut at once); this reads 0 as no deadline and waits for the calls -- caught by: lab11::zero_grace_and_deadline */
/* A student treats 0 like an unset option: "no deadline configured", so the calls in flight are
 * awaited however long they take. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

/* One GET /work: its request and its upstream call, on the lab's list until answered. */
typedef struct call call_t;
struct call {
  lab_t *lab;
  shell_request_t *req;
  client_transfer_t *transfer;
  long ms;
  call_t *prev, *next;
};

struct lab {
  shell_t *shell;
  lab_config_t cfg;
  uv_timer_t timer;   /* created first: the grace period, the drain deadline, the last step */
  client_t *client;   /* created second: destroyed first */
  call_t *calls;
  unsigned calls_inflight;
  int stopping;       /* SIGTERM came: /ready says 503 */
  int cutting;        /* the drain deadline passed: cancelled calls answer 503 */
  unsigned long cut;
};

static void call_unlink(lab_t *lab, call_t *c) {
  if (c->prev) c->prev->next = c->next;
  else lab->calls = c->next;
  if (c->next) c->next->prev = c->prev;
  lab->calls_inflight--;
}

/* Who calls it: the client, on the loop, when the call ended (answered, failed or cancelled). */
static void on_call_done(client_transfer_t *t, const client_result_t *res, void *data) {
  call_t *c = data;
  lab_t *lab = c->lab;
  (void)t;
  call_unlink(lab, c);
  if (res->cancelled && lab->cutting) {
    lab->cut++;
    shell_respond(c->req, 503, "application/json", "{\"error\":\"shutting down\"}\n", 26);
  } else if (res->status >= 200 && res->status < 300) {
    shell_respondf(c->req, 200, "application/json", "{\"ms\":%ld}\n", c->ms);
  } else {
    shell_respond(c->req, 502, "application/json", "{\"error\":\"upstream\"}\n", 21);
  }
  free(c);
}

/* Who calls it: the shell, if the client hangs up first. The call is not worth finishing. */
static void on_client_gone(shell_request_t *req, void *data) {
  call_t *c = data;
  (void)req;
  client_cancel(c->transfer);
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
  call_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    shell_respond(req, 503, "application/json", "{\"error\":\"out of memory\"}\n", 26);
    return;
  }
  c->lab = lab;
  c->req = req;
  c->ms = ms;
  snprintf(url, sizeof url, "%s/work?latency_ms=%ld", lab->cfg.upstream, ms);
  c->transfer = client_get(lab->client, url, ms + 10000, on_call_done, c);
  if (c->transfer == NULL) {
    fprintf(stderr, "lab11: client_get failed\n");
    free(c);
    shell_respond(req, 502, "application/json", "{\"error\":\"upstream\"}\n", 21);
    return;
  }
  c->next = lab->calls;
  if (lab->calls) lab->calls->prev = c;
  lab->calls = c;
  lab->calls_inflight++;
  shell_request_on_abort(req, on_client_gone, c);
}

static void handle_ready(shell_request_t *req, void *data) {
  lab_t *lab = data;
  if (lab->stopping) shell_respond(req, 503, "application/json", "{\"ready\":false}\n", 16);
  else shell_respond(req, 200, "application/json", "{\"ready\":true}\n", 15);
}

static void on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "calls_inflight", lab->calls_inflight);
  shell_stats_add(shell, "stopping", lab->stopping);
  shell_stats_add(shell, "cut", (double)lab->cut);
}

/* ---- shutdown, step by step; each step is the timer's next callback ---- */

static void on_timer_closed(uv_handle_t *h) {
  lab_t *lab = h->data;
  /* Last handle of ours is gone: the runtime closes the shell, then calls lab_destroy. */
  shell_shutdown_finish(lab->shell);
}

/* 4. Nothing in flight, no connection open: undo the startup in reverse order. Run from the
 * timer, not from on_drained, which may run inside a client callback. */
static void on_finish(uv_timer_t *t) {
  lab_t *lab = t->data;
  client_destroy(lab->client);
  lab->client = NULL;
  fprintf(stderr, "lab11: drained (%lu cut at the deadline), exiting\n", lab->cut);
  uv_close((uv_handle_t *)&lab->timer, on_timer_closed);
}

static void on_drained(shell_t *shell, void *data) {
  lab_t *lab = data;
  (void)shell;
  int rc = uv_timer_start(&lab->timer, on_finish, 0, 0);
  if (rc != 0) fprintf(stderr, "lab11: uv_timer_start: %s\n", uv_strerror(rc));
}

/* 3. The deadline: cancel what still runs; each call's done answers its request 503. */
static void on_deadline(uv_timer_t *t) {
  lab_t *lab = t->data;
  lab->cutting = 1;
  if (lab->calls) fprintf(stderr, "lab11: drain deadline: cutting %u call(s)\n", lab->calls_inflight);
  for (call_t *c = lab->calls; c != NULL; c = c->next) client_cancel(c->transfer);
}

/* 2. The grace period is over: no new connections, idle ones go, the rest drain. */
static void on_grace_over(uv_timer_t *t) {
  lab_t *lab = t->data;
  shell_stop_accepting(lab->shell);
  shell_close_idle(lab->shell);
  if (lab->cfg.drain_deadline_ms > 0) { /* 0: no deadline */
    int rc = uv_timer_start(&lab->timer, on_deadline, (uint64_t)lab->cfg.drain_deadline_ms, 0);
    if (rc != 0) fprintf(stderr, "lab11: uv_timer_start: %s\n", uv_strerror(rc));
  }
  shell_on_drained(lab->shell, on_drained, lab); /* may restart the timer at once: last */
}

/* 1. Who calls it: the runtime, on the loop, at the first SIGTERM. */
static void on_shutdown(shell_t *shell, int signum, void *data) {
  lab_t *lab = data;
  (void)shell;
  (void)signum;
  lab->stopping = 1;
  int rc = uv_timer_start(&lab->timer, on_grace_over, (uint64_t)lab->cfg.ready_grace_ms, 0);
  if (rc != 0) fprintf(stderr, "lab11: uv_timer_start: %s\n", uv_strerror(rc));
}

static void on_timer_closed_free(uv_handle_t *h) { free(h->data); }

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab = calloc(1, sizeof *lab);
  int rc;
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = *cfg;
  rc = uv_timer_init(shell_loop(shell), &lab->timer);
  if (rc != 0) {
    fprintf(stderr, "lab11: uv_timer_init: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  lab->timer.data = lab;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab11: client_create: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&lab->timer, on_timer_closed_free);
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

/* Called by the runtime once the shell has closed. After on_finish everything is closed already;
 * if the lab is stopped some other way (the listener failed) it closes what it opened here. */
void lab_destroy(lab_t *lab) {
  if (lab->client == NULL) {
    free(lab);
    return;
  }
  client_destroy(lab->client);
  uv_close((uv_handle_t *)&lab->timer, on_timer_closed_free);
}
