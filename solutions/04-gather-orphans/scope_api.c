/* Lab 04, another right answer: a general scope API (the C shape of Trio's nursery) under the
 * dashboard. The same rules as solution.c, written as a reusable scope_t (create, spawn,
 * cancel, close; one callback per child, one when the last has ended), and the dashboard on top.
 *
 * GET /dashboard starts its three upstream calls (user, orders, recommendations) inside a
 * scope, the C shape of Trio's nursery or asyncio.TaskGroup. The scope promises: it reports
 * once, after every child has ended; the first failure, the deadline or the owner's cancel
 * cancels the live children (client_cancel closes their connections, so the upstream stops
 * working for nobody); a spawn into a failing or finished scope is refused; every child's
 * outcome reaches the owner. No callback can outlive the request.
 *
 * See it: build/bin/upstream --port 8081 &  build/bin/lab04-solution --port 8080 &
 *   curl -s localhost:8080/dashboard; curl -s localhost:8080/debug/stats
 *   -> calls_cancelled grows, late_callbacks stays 0; curl -s localhost:8081/stats: abandoned.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "client.h"
#include "lab.h"

/* ---- the scope ---- */
typedef struct scope scope_t;
typedef struct scope_outcome {
  int failed;        /* a child failed, or the deadline or the owner ended the scope */
  int timed_out;     /* the deadline did */
  int first_which;   /* the child that failed first; -1 when the deadline or the owner did */
  int first_status;  /* its HTTP status, 0 when it got no response */
  unsigned errors;   /* children that failed on their own (a cancellation is not an error) */
} scope_outcome_t;
/* Called at every child's end, cancelled ones included (res->cancelled). */
typedef void (*scope_child_fn)(scope_t *s, int which, const client_result_t *res, void *data);
/* Called once, after scope_close() and after the last child has ended. */
typedef void (*scope_done_fn)(scope_t *s, const scope_outcome_t *out, void *data);

typedef struct child {
  scope_t *scope;
  client_transfer_t *transfer; /* NULL once it has ended */
  int which;
  struct child *next;
} child_t;

struct scope {
  client_t *client;
  uv_timer_t deadline;
  child_t *children;
  unsigned live;      /* children that have not ended */
  int closed;         /* the owner starts no more children: report when live reaches 0 */
  int reported;
  scope_outcome_t out;
  scope_child_fn on_child;
  scope_done_fn on_done;
  void *data;
};

static int call_failed(const client_result_t *res) {
  return res->error != NULL || res->status < 200 || res->status > 299;
}

static void on_scope_closed(uv_handle_t *h) {
  scope_t *s = h->data;
  while (s->children != NULL) {
    child_t *c = s->children;
    s->children = c->next;
    free(c);
  }
  free(s);
}

static void scope_maybe_report(scope_t *s) {
  if (!s->closed || s->live > 0 || s->reported) return;
  s->reported = 1;
  uv_timer_stop(&s->deadline);
  s->on_done(s, &s->out, s->data);
  uv_close((uv_handle_t *)&s->deadline, on_scope_closed);
}

/* The first failure, the deadline or the owner: every live child is cancelled; their ends
 * arrive on a later loop turn, and the scope reports after the last one. */
static void scope_cancel(scope_t *s, int which, int status) {
  if (s->out.failed) return;
  s->out.failed = 1;
  s->out.first_which = which;
  s->out.first_status = status;
  for (child_t *c = s->children; c != NULL; c = c->next)
    if (c->transfer != NULL) client_cancel(c->transfer);
}

/* Who calls it: the client, on the loop, once per child. */
static void on_child_done(client_transfer_t *t, const client_result_t *res, void *data) {
  child_t *c = data;
  scope_t *s = c->scope;
  (void)t;
  c->transfer = NULL;
  s->live--;
  if (!res->cancelled && call_failed(res)) {
    s->out.errors++;
    scope_cancel(s, c->which, res->status);
  }
  s->on_child(s, c->which, res, s->data);
  scope_maybe_report(s);
}

/* Who calls it: libuv, when the whole scope has run out of time. */
static void on_scope_deadline(uv_timer_t *timer) {
  scope_t *s = timer->data;
  if (!s->out.failed) s->out.timed_out = 1;
  scope_cancel(s, -1, 0);
}

static int scope_create(scope_t **out, uv_loop_t *loop, client_t *client, long deadline_ms,
                        scope_child_fn on_child, scope_done_fn on_done, void *data) {
  scope_t *s = calloc(1, sizeof *s);
  int rc;
  if (s == NULL) return UV_ENOMEM;
  rc = uv_timer_init(loop, &s->deadline);
  if (rc != 0) {
    free(s);
    return rc;
  }
  s->deadline.data = s;
  s->client = client;
  s->on_child = on_child;
  s->on_done = on_done;
  s->data = data;
  if (deadline_ms > 0) {
    rc = uv_timer_start(&s->deadline, on_scope_deadline, (uint64_t)deadline_ms, 0);
    if (rc != 0) fprintf(stderr, "lab04: uv_timer_start: %s\n", uv_strerror(rc));
  }
  *out = s;
  return 0;
}

/* Starts a child: 0, or UV_ECANCELED when the scope is failing or has reported (refused), or
 * UV_EIO when the call could not start (then that counts as the child's failure). */
static int scope_spawn(scope_t *s, int which, const char *url) {
  child_t *c;
  if (s->reported || s->out.failed) return UV_ECANCELED;
  c = calloc(1, sizeof *c);
  if (c == NULL || (c->transfer = client_get(s->client, url, 0, on_child_done, c)) == NULL) {
    fprintf(stderr, "lab04: %s(%s) failed\n", c == NULL ? "calloc" : "client_get", url);
    free(c);
    scope_cancel(s, which, 0);
    return UV_EIO;
  }
  c->scope = s;
  c->which = which;
  c->next = s->children;
  s->children = c;
  s->live++;
  return 0;
}

/* The owner has started every child it meant to: the scope may report once they have ended. */
static void scope_close(scope_t *s) {
  s->closed = 1;
  scope_maybe_report(s);
}

/* ---- the dashboard ---- */
enum { USER, ORDERS, RECS, AUDIT, N_CALLS };
static const char *const call_name[N_CALLS] = {"user", "orders", "recommendations", "audit"};

struct lab {
  shell_t *shell;
  client_t *client;
  lab_config_t cfg;
  uint64_t dashboards_total, dashboards_answered, dashboards_failed, dashboards_live;
  uint64_t calls_started, calls_inflight, calls_cancelled, late_callbacks, spawn_refused;
  double orphan_ms_total;
};

typedef struct dashboard {
  lab_t *lab;
  shell_request_t *req;  /* released by the shell once answered */
  scope_t *scope;
  char *part[N_CALLS];   /* response bodies of the calls that succeeded */
  int fail, late_spawn;
  int answered;
  uint64_t answered_ns;
} dashboard_t;

static int dashboard_spawn(dashboard_t *d, int which) {
  lab_t *lab = d->lab;
  long latency[N_CALLS] = {lab->cfg.user_latency_ms, lab->cfg.orders_latency_ms,
                           lab->cfg.recs_latency_ms, 0};
  char url[512];
  int rc;
  snprintf(url, sizeof url, "%s/%s?latency_ms=%ld&status=%ld", lab->cfg.upstream,
           call_name[which], latency[which],
           which == ORDERS && d->fail ? lab->cfg.orders_status : 200);
  rc = scope_spawn(d->scope, which, url);
  if (rc == 0) {
    lab->calls_started++;
    lab->calls_inflight++;
  }
  return rc;
}

static void dashboard_answer(dashboard_t *d, int status, const char *body) {
  lab_t *lab = d->lab;
  shell_respond(d->req, status, "application/json", body, strlen(body));
  d->answered = 1;
  d->answered_ns = uv_hrtime();
  lab->dashboards_answered++;
  if (status != 200) lab->dashboards_failed++;
  if (d->late_spawn && dashboard_spawn(d, AUDIT) == UV_ECANCELED) lab->spawn_refused++;
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

/* Who calls it: the scope, at each call's end (cancelled ones included). */
static void on_call_done(scope_t *s, int which, const client_result_t *res, void *data) {
  dashboard_t *d = data;
  lab_t *lab = d->lab;
  (void)s;
  lab->calls_inflight--;
  if (res->cancelled) lab->calls_cancelled++;
  if (d->answered) { /* the lab's probe: a scope never lets this happen */
    lab->late_callbacks++;
    lab->orphan_ms_total += (double)(uv_hrtime() - d->answered_ns) / 1e6;
  }
  /* Keep the part unless the client hung up. d->req is valid: the scope has not reported. */
  if (!shell_request_aborted(d->req) && !res->cancelled && !call_failed(res)) {
    free(d->part[which]);
    d->part[which] = strdup(res->body);
  }
}

/* Who calls it: the scope, once, when every call has ended. Answers and frees the dashboard. */
static void on_scope_done(scope_t *s, const scope_outcome_t *out, void *data) {
  dashboard_t *d = data;
  lab_t *lab = d->lab;
  char body[128];
  (void)s;
  if (!out->failed) {
    dashboard_answer_parts(d);
  } else {
    if (out->timed_out)
      snprintf(body, sizeof body, "{\"error\":\"deadline\",\"deadline_ms\":%ld}",
               lab->cfg.deadline_ms);
    else
      snprintf(body, sizeof body, "{\"error\":\"%s\",\"status\":%d}",
               out->first_which >= 0 ? call_name[out->first_which] : "cancelled",
               out->first_status);
    dashboard_answer(d, out->timed_out ? 504 : 502, body);
  }
  for (int i = 0; i < N_CALLS; i++) free(d->part[i]);
  free(d);
  lab->dashboards_live--;
}

/* Who calls it: the shell, when the client goes away before the answer. */
static void on_client_gone(shell_request_t *req, void *data) {
  dashboard_t *d = data;
  (void)req;
  scope_cancel(d->scope, -1, 0);
}

static void on_dashboard(shell_request_t *req, void *data) {
  lab_t *lab = data;
  dashboard_t *d = calloc(1, sizeof *d);
  long fail_default;
  int rc;
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
  rc = scope_create(&d->scope, shell_request_loop(req), lab->client, lab->cfg.deadline_ms,
                    on_call_done, on_scope_done, d);
  if (rc != 0) {
    fprintf(stderr, "lab04: scope_create: %s\n", uv_strerror(rc));
    free(d);
    shell_respondf(req, 500, "application/json", "{\"error\":\"scope_create\"}");
    return;
  }
  lab->dashboards_live++;
  shell_request_on_abort(req, on_client_gone, d);
  for (int which = USER; which <= RECS; which++) dashboard_spawn(d, which);
  scope_close(d->scope); /* may report right away if nothing could start */
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

/* Every request has been answered, so every scope has reported: no call is left. */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  free(lab);
}
