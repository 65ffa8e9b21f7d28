/* WRONG: --retries 0 means a failed step is tried once; this reads 0 as unset and retries once anyway -- caught by: lab12::no_retries_tries_once */
/* A student guards the option like an unset one: "retries 0? use the default, 1". With
 * --retries 0 every failing step is still tried twice. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

enum { LIVE, ABORTED, DEADLINE }; /* why a report was cancelled */

/* The counters /debug/stats shows, each a uint64_t field of the lab with the same name. */
#define COUNTERS(X)                                                                             \
  X(reports_started) X(reports_ok) X(reports_deadline) X(reports_aborted) X(reports_live)       \
  X(cleanups) X(steps_started) X(steps_inflight) X(steps_ok) X(steps_failed) X(steps_retried)   \
  X(steps_cancelled) X(steps_after_cancel) X(free_turns_max) X(loop_turns)
#define COUNTER_FIELD(name) uint64_t name;

struct lab {
  shell_t *shell;
  client_t *client;
  lab_config_t cfg;
  uv_check_t turn_counter; /* counts loop turns (loop_turns), for free_turns_max */
  unsigned long next_id;
  COUNTERS(COUNTER_FIELD)
};

typedef struct report {
  lab_t *lab;
  shell_request_t *req;     /* NULL once answered */
  uv_timer_t deadline;
  client_transfer_t *step;  /* the call in flight, or NULL */
  unsigned long id;
  long steps, step_ms, fail_step, hang_step;
  long cur, attempt, ok;    /* the step running (1..steps), its attempts so far, steps ok */
  char failed[96];          /* "2,4": steps that failed for good */
  int cancelled;            /* LIVE, or why */
  uint64_t cancel_turn;
} report_t;

static void step_start(report_t *r);

static void on_closed_free(uv_handle_t *h) { free(h->data); }

/* The report's end: answer as its end deserves, then clean its state up (once). */
static void report_finish(report_t *r) {
  lab_t *lab = r->lab;
  uv_timer_stop(&r->deadline);
  if (r->cancelled == DEADLINE) {
    lab->reports_deadline++;
    shell_respondf(r->req, 504, "application/json",
                   "{\"error\":\"deadline\",\"deadline_ms\":%ld,\"steps_done\":%ld}\n",
                   lab->cfg.deadline_ms, r->cur - 1);
  } else if (r->cancelled == ABORTED) { /* nobody to answer: the shell discards it */
    shell_respondf(r->req, 499, "application/json", "{\"error\":\"client gone\"}\n");
  } else {
    lab->reports_ok++;
    shell_respondf(r->req, 200, "application/json",
                   "{\"report\":%lu,\"steps\":%ld,\"ok\":%ld,\"failed\":[%s]}\n", r->id, r->steps,
                   r->ok, r->failed);
  }
  r->req = NULL;
  lab->reports_live--;
  lab->cleanups++;
  if (r->cancelled != LIVE && lab->loop_turns - r->cancel_turn > lab->free_turns_max)
    lab->free_turns_max = lab->loop_turns - r->cancel_turn;
  uv_close((uv_handle_t *)&r->deadline, on_closed_free);
}

/* Step r->cur has ended for good (ok or failed): the next one, or the end. */
static void step_end(report_t *r, int ok) {
  size_t len = strlen(r->failed);
  if (ok) r->ok++;
  else snprintf(r->failed + len, sizeof r->failed - len, "%s%ld", len ? "," : "", r->cur);
  if (r->cur < r->steps && r->cancelled == LIVE) {
    r->cur++;
    r->attempt = 0;
    step_start(r);
  } else {
    report_finish(r);
  }
}

/* Who calls it: the client, on the loop, once per attempt (a cancelled one included). */
static void on_step_done(client_transfer_t *t, const client_result_t *res, void *data) {
  report_t *r = data;
  lab_t *lab = r->lab;
  (void)t;
  r->step = NULL;
  lab->steps_inflight--;
  if (res->cancelled) { /* SOLUTION: a cancel is not a failure: the chain ends here */
    lab->steps_cancelled++;
    report_finish(r);
    return;
  }
  if (res->error == NULL && res->status >= 200 && res->status <= 299) {
    lab->steps_ok++;
    step_end(r, 1);
    return;
  }
  lab->steps_failed++; /* a real failure: tried again, then recorded while the report moves on */
  if (r->attempt > (lab->cfg.retries > 0 ? lab->cfg.retries : 1)) { /* 0: the default */
    step_end(r, 0);
    return;
  }
  lab->steps_retried++;
  step_start(r);
}

/* Starts an attempt of step r->cur. A call that cannot start is a failed attempt. */
static void step_start(report_t *r) {
  lab_t *lab = r->lab;
  char url[512];
  snprintf(url, sizeof url, "%s/step?report=%lu&n=%ld&latency_ms=%ld%s%s", lab->cfg.upstream,
           r->id, r->cur, r->step_ms, r->cur == r->fail_step ? "&status=500" : "",
           r->cur == r->hang_step ? "&hang=1" : "");
  r->attempt++;
  lab->steps_started++;
  if (r->cancelled != LIVE) lab->steps_after_cancel++; /* the lab's probe */
  r->step = client_get(lab->client, url, lab->cfg.step_timeout_ms, on_step_done, r);
  if (r->step != NULL) {
    lab->steps_inflight++;
    return;
  }
  fprintf(stderr, "lab12: client_get(%s) failed\n", url);
  lab->steps_failed++;
  step_end(r, 0);
}

/* SOLUTION: one way in for every cancel. It reaches the step in flight; that step's done
 * callback (res->cancelled, next loop turn) finishes the report. */
static void report_cancel(report_t *r, int why) {
  if (r->cancelled != LIVE) return;
  r->cancelled = why;
  r->cancel_turn = r->lab->loop_turns;
  if (r->step != NULL) client_cancel(r->step);
  else report_finish(r);
}

/* Who calls it: the shell, when the client hangs up before the answer. */
static void on_client_gone(shell_request_t *req, void *data) {
  report_t *r = data;
  (void)req;
  r->lab->reports_aborted++;
  report_cancel(r, ABORTED);
}

/* Who calls it: libuv, deadline-ms after the request arrived. */
static void on_deadline(uv_timer_t *timer) { report_cancel(timer->data, DEADLINE); }

/* ---- the request ---- */

/* Query parameter name as an integer in lo..hi (def when absent); -1 when it is not one. */
static int query_int(shell_request_t *req, const char *name, long lo, long hi, long def,
                     long *out) {
  char buf[32], *end;
  if (shell_query_str(req, name, buf, sizeof buf) != 0) {
    *out = def;
    return 0;
  }
  *out = strtol(buf, &end, 10);
  if (buf[0] == '\0' || *end != '\0' || *out < lo || *out > hi) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"%s must be an integer in %ld..%ld\"}\n", name, lo, hi);
    return -1;
  }
  return 0;
}

/* Called by the shell for each GET /report, on the loop thread. */
static void handle_report(shell_request_t *req, void *data) {
  lab_t *lab = data;
  long steps, step_ms, fail_step, hang_step;
  if (query_int(req, "steps", 1, 20, lab->cfg.steps, &steps) != 0 ||
      query_int(req, "step_ms", 0, 10000, lab->cfg.step_ms, &step_ms) != 0 ||
      query_int(req, "fail_step", 0, steps, 0, &fail_step) != 0 ||
      query_int(req, "hang_step", 0, steps, 0, &hang_step) != 0)
    return;
  report_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}\n");
    return;
  }
  *r = (report_t){.lab = lab, .req = req, .id = ++lab->next_id, .steps = steps,
                  .step_ms = step_ms, .fail_step = fail_step, .hang_step = hang_step, .cur = 1};
  int rc = uv_timer_init(shell_request_loop(req), &r->deadline);
  if (rc != 0) {
    fprintf(stderr, "lab12: uv_timer_init: %s\n", uv_strerror(rc));
    free(r);
    shell_respondf(req, 500, "application/json", "{\"error\":\"uv_timer_init\"}\n");
    return;
  }
  r->deadline.data = r;
  lab->reports_started++;
  lab->reports_live++;
  shell_request_on_abort(req, on_client_gone, r);
  rc = uv_timer_start(&r->deadline, on_deadline, (uint64_t)lab->cfg.deadline_ms, 0);
  if (rc != 0) fprintf(stderr, "lab12: uv_timer_start: %s\n", uv_strerror(rc));
  step_start(r);
}

/* Called by the shell while it writes /debug/stats. */
static void on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
#define COUNTER_ADD(name) shell_stats_add(shell, #name, (double)lab->name);
  COUNTERS(COUNTER_ADD)
}

/* Who calls it: libuv, once per loop turn, after polling for I/O. */
static void on_turn(uv_check_t *check) { ((lab_t *)check->data)->loop_turns++; }

/* ---- lifetime ---- */

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  if (cfg->steps < 1 || cfg->steps > 20 || cfg->step_ms > 10000 || cfg->step_timeout_ms < 1 ||
      cfg->deadline_ms < 1) {
    fprintf(stderr, "lab12: --steps 1..20, --step-ms 0..10000, --step-timeout-ms and "
            "--deadline-ms >= 1\n");
    return UV_EINVAL;
  }
  lab_t *lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = *cfg;
  int rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab12: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  rc = uv_check_init(shell_loop(shell), &lab->turn_counter);
  if (rc != 0) {
    fprintf(stderr, "lab12: uv_check_init: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab);
    return rc;
  }
  lab->turn_counter.data = lab;
  rc = uv_check_start(&lab->turn_counter, on_turn);
  if (rc != 0) fprintf(stderr, "lab12: uv_check_start: %s\n", uv_strerror(rc));
  uv_unref((uv_handle_t *)&lab->turn_counter); /* counting turns keeps no loop alive */
  rc = shell_route(shell, "GET", "/report", handle_report, lab);
  if (rc != 0) {
    fprintf(stderr, "lab12: shell_route: %s\n", uv_strerror(rc));
    lab_destroy(lab);
    return rc;
  }
  shell_set_stats_hook(shell, on_stats, lab);
  *out = lab;
  return 0;
}

/* Every request has been answered, so every report has ended and closed its own timer: only
 * the client and the turn counter are left. */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  uv_close((uv_handle_t *)&lab->turn_counter, on_closed_free);
}
