/* WRONG: the deadline answers 504 but does not cancel the calls still out -- caught by: lab04::deadline_cancels_all */
/* Lab 04, a wrong fix people write (the README's "Wrong fixes people write").
 * Cancels the siblings at the first failure and answers after the join, but the deadline path
 * was left as it was: it answers 504 right away and the slow calls run on.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "client.h"
#include "lab.h"

enum { USER, ORDERS, RECS, AUDIT, N_CALLS };
static const char *const call_name[N_CALLS] = {"user", "orders", "recommendations", "audit"};

typedef struct dashboard dashboard_t;

struct lab {
  shell_t *shell;
  client_t *client;
  lab_config_t cfg;
  dashboard_t *live;  /* dashboards with calls still out: freed when the last one returns */
  uint64_t dashboards_total, dashboards_answered, dashboards_failed, dashboards_live;
  uint64_t calls_started, calls_inflight, calls_cancelled, late_callbacks, spawn_refused;
  double orphan_ms_total;
};

typedef struct call {
  dashboard_t *dash;
  client_transfer_t *transfer; /* to cancel it; NULL once its done callback has run */
  int which;
} call_t;

struct dashboard {
  lab_t *lab;
  shell_request_t *req;  /* released by the shell once answered */
  dashboard_t *prev, *next;
  uv_timer_t deadline;
  call_t calls[N_CALLS];
  char *part[N_CALLS];   /* response bodies of the calls that succeeded */
  int fail, late_spawn;
  int pending;           /* calls started and not returned yet */
  int failing;           /* first error, deadline or client gone: the calls still out are
                            cancelled, and this is the answer once they have all ended */
  int fail_status;
  char fail_body[128];
  int answered;
  uint64_t answered_ns;
};

static void on_call_done(client_transfer_t *t, const client_result_t *res, void *data);

static int call_failed(const client_result_t *res) {
  return res->error != NULL || res->status < 200 || res->status > 299;
}

/* The scope's "add a task": refused (UV_ECANCELED) once the dashboard is failing or has
 * answered, because a call started then would belong to nobody. Returns 0, or -1 when the call
 * could not start. */
static int gather_spawn(dashboard_t *d, int which) {
  lab_t *lab = d->lab;
  if (d->failing || d->answered) return UV_ECANCELED;
  long latency[N_CALLS] = {lab->cfg.user_latency_ms, lab->cfg.orders_latency_ms,
                           lab->cfg.recs_latency_ms, 0};
  char url[512];
  snprintf(url, sizeof url, "%s/%s?latency_ms=%ld&status=%ld", lab->cfg.upstream,
           call_name[which], latency[which],
           which == ORDERS && d->fail ? lab->cfg.orders_status : 200);
  d->calls[which].dash = d;
  d->calls[which].which = which;
  d->calls[which].transfer = client_get(lab->client, url, 0, on_call_done, &d->calls[which]);
  if (d->calls[which].transfer == NULL) {
    fprintf(stderr, "lab04: client_get(%s) failed\n", url);
    return -1;
  }
  d->pending++;
  lab->calls_started++;
  lab->calls_inflight++;
  return 0;
}

static void on_dashboard_closed(uv_handle_t *h) {
  dashboard_t *d = h->data;
  for (int i = 0; i < N_CALLS; i++) free(d->part[i]);
  free(d);
}

static void dashboard_answer(dashboard_t *d, int status, const char *body);
static void dashboard_answer_parts(dashboard_t *d);

/* The scope's join: once the last call has returned, the dashboard answers (the first error,
 * or all three parts), and its memory goes. No callback of its calls can come after this. */
static void dashboard_release(dashboard_t *d) {
  lab_t *lab = d->lab;
  if (d->pending > 0) return;
  if (!d->answered) {
    if (d->failing) dashboard_answer(d, d->fail_status, d->fail_body);
    else dashboard_answer_parts(d);
  }
  if (d->prev) d->prev->next = d->next;
  else lab->live = d->next;
  if (d->next) d->next->prev = d->prev;
  lab->dashboards_live--;
  uv_close((uv_handle_t *)&d->deadline, on_dashboard_closed);
}

static void dashboard_answer(dashboard_t *d, int status, const char *body) {
  lab_t *lab = d->lab;
  uv_timer_stop(&d->deadline);
  shell_respond(d->req, status, "application/json", body, strlen(body));
  d->answered = 1;
  d->answered_ns = uv_hrtime();
  lab->dashboards_answered++;
  if (status != 200) lab->dashboards_failed++;
  if (d->late_spawn && gather_spawn(d, AUDIT) == UV_ECANCELED) lab->spawn_refused++;
}

static const char *json_or_null(const char *part) { return part ? part : "null"; }

static void dashboard_answer_parts(dashboard_t *d) {
  size_t len = 64;
  for (int i = USER; i <= RECS; i++) len += strlen(json_or_null(d->part[i]));
  char *body = malloc(len);
  if (body == NULL) {
    dashboard_answer(d, 500, "{\"error\":\"out of memory\"}");
    return;
  }
  snprintf(body, len, "{\"user\":%s,\"orders\":%s,\"recommendations\":%s}",
           json_or_null(d->part[USER]), json_or_null(d->part[ORDERS]), json_or_null(d->part[RECS]));
  dashboard_answer(d, 200, body);
  free(body);
}

/* The scope's cancel: the first failure, the deadline or the client going away. It remembers
 * the answer and cancels every call still out; their done callbacks follow on a later loop
 * turn (res->cancelled = 1), and the last one answers. Later failures change nothing. */
static void dashboard_cancel(dashboard_t *d, int status, const char *body) {
  if (d->failing || d->answered) return;
  d->failing = 1;
  d->fail_status = status;
  snprintf(d->fail_body, sizeof d->fail_body, "%s", body);
  for (int i = 0; i < N_CALLS; i++)
    if (d->calls[i].transfer != NULL) client_cancel(d->calls[i].transfer);
}

static void dashboard_answer_error(dashboard_t *d, int which, int status) {
  char body[128];
  snprintf(body, sizeof body, "{\"error\":\"%s\",\"status\":%d}", call_name[which], status);
  dashboard_cancel(d, 502, body);
}

/* Who calls it: the client, on the loop, once per call. */
static void on_call_done(client_transfer_t *t, const client_result_t *res, void *data) {
  call_t *call = data;
  dashboard_t *d = call->dash;
  lab_t *lab = d->lab;
  (void)t;
  call->transfer = NULL;
  d->pending--;
  lab->calls_inflight--;
  if (res->cancelled) lab->calls_cancelled++;
  if (d->answered) { /* the lab's probe: a scope never lets this happen */
    lab->late_callbacks++;
    lab->orphan_ms_total += (double)(uv_hrtime() - d->answered_ns) / 1e6;
  }
  /* Keep the part unless the client hung up. d->req is valid: the dashboard has not answered. */
  if (!shell_request_aborted(d->req) && !call_failed(res) && call->which != AUDIT) {
    free(d->part[call->which]);
    d->part[call->which] = strdup(res->body);
  }
  /* The first error cancels the calls still out; the last call to end answers. */
  if (call_failed(res) && !res->cancelled) dashboard_answer_error(d, call->which, res->status);
  dashboard_release(d);
}

/* Who calls it: libuv, deadline_ms after the request arrived: cancel the calls, and answer 504
 * once they have all ended. */
static void on_deadline(uv_timer_t *timer) {
  dashboard_t *d = timer->data;
  char body[96];
  snprintf(body, sizeof body, "{\"error\":\"deadline\",\"deadline_ms\":%ld}",
           d->lab->cfg.deadline_ms);
  dashboard_answer(d, 504, body); /* the deadline is the answer */
  dashboard_release(d);
}

/* Who calls it: the shell, when the client goes away before the answer: cancel the calls. */
static void on_client_gone(shell_request_t *req, void *data) {
  (void)req;
  dashboard_cancel(data, 502, "{\"error\":\"client gone\",\"status\":0}");
}

static void on_dashboard(shell_request_t *req, void *data) {
  lab_t *lab = data;
  dashboard_t *d = calloc(1, sizeof *d);
  int rc;
  long fail_default;
  if (d == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}");
    return;
  }
  lab->dashboards_total++;
  d->lab = lab;
  d->req = req;
  /* fail-percent of the dashboards fail, spread evenly (61 is prime to 100). */
  fail_default = (long)(lab->dashboards_total * 61 % 100) < lab->cfg.fail_percent;
  d->fail = shell_query_long(req, "fail", fail_default) != 0;
  d->late_spawn = shell_query_long(req, "late_spawn", 0) != 0;
  rc = uv_timer_init(shell_request_loop(req), &d->deadline);
  if (rc != 0) {
    fprintf(stderr, "lab04: uv_timer_init: %s\n", uv_strerror(rc));
    free(d);
    shell_respondf(req, 500, "application/json", "{\"error\":\"uv_timer_init\"}");
    return;
  }
  d->deadline.data = d;
  d->next = lab->live;
  if (lab->live) lab->live->prev = d;
  lab->live = d;
  lab->dashboards_live++;
  rc = uv_timer_start(&d->deadline, on_deadline, (uint64_t)lab->cfg.deadline_ms, 0);
  if (rc != 0) fprintf(stderr, "lab04: uv_timer_start: %s\n", uv_strerror(rc));
  shell_request_on_abort(req, on_client_gone, d);
  for (int which = USER; which <= RECS; which++) {
    if (gather_spawn(d, which) == -1) dashboard_answer_error(d, which, 0);
  }
  dashboard_release(d); /* only if nothing could start */
}

static void on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "dashboards_total", (double)lab->dashboards_total);
  shell_stats_add(shell, "dashboards_answered", (double)lab->dashboards_answered);
  shell_stats_add(shell, "dashboards_failed", (double)lab->dashboards_failed);
  shell_stats_add(shell, "dashboards_live", (double)lab->dashboards_live);
  shell_stats_add(shell, "calls_started", (double)lab->calls_started);
  shell_stats_add(shell, "calls_inflight", (double)lab->calls_inflight);
  shell_stats_add(shell, "calls_cancelled", (double)lab->calls_cancelled);
  shell_stats_add(shell, "late_callbacks", (double)lab->late_callbacks);
  shell_stats_add(shell, "orphan_ms_total", lab->orphan_ms_total);
  shell_stats_add(shell, "spawn_refused", (double)lab->spawn_refused);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab = calloc(1, sizeof *lab);
  int rc;
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = *cfg;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab04: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  rc = shell_route(shell, "GET", "/dashboard", on_dashboard, lab);
  if (rc != 0) {
    fprintf(stderr, "lab04: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, on_stats, lab);
  *out = lab;
  return 0;
}

/* Every request has been answered, so every dashboard's calls have ended and its memory is
 * gone: lab->live is empty (the loop below is for a dashboard that could not answer). */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  while (lab->live != NULL) {
    dashboard_t *d = lab->live;
    lab->live = d->next;
    uv_close((uv_handle_t *)&d->deadline, on_dashboard_closed);
  }
  free(lab);
}
