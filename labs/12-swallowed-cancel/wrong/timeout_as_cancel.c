/* WRONG: a step that ran out of its own timeout is treated as a cancel: the chain stops instead of retrying and moving on -- caught by: lab12::step_timeout_is_a_failure */
/* A student's fix: "a call that was stopped - by a hang-up, a deadline or its timeout - means
 * stop". (asyncio.timeout() does raise TimeoutError out of a CancelledError.) But a step's own
 * timeout is the upstream failing, not the caller leaving: it deserves its retry.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

enum { LIVE, ABORTED, DEADLINE }; /* why a report was cancelled */

typedef struct report report_t;

struct lab {
  shell_t *shell;
  client_t *client;
  lab_config_t cfg;
  uv_check_t turn_counter; /* counts loop turns, for free_turns_max */
  uint64_t turns;
  report_t *live;          /* every report state still allocated */
  unsigned long next_id;
  uint64_t reports_started, reports_ok, reports_deadline, reports_aborted, reports_live, cleanups;
  uint64_t steps_started, steps_inflight, steps_ok, steps_failed, steps_retried, steps_cancelled;
  uint64_t steps_after_cancel, free_turns_max;
};

struct report {
  lab_t *lab;
  report_t *prev, *next;
  shell_request_t *req;     /* NULL once answered */
  uv_timer_t deadline;
  client_transfer_t *step;  /* the call in flight, or NULL */
  unsigned long id;
  long steps, step_ms, fail_step, hang_step;
  long cur, attempt, ok;    /* the step running (1..steps), its attempts so far, steps ok */
  char failed[96];          /* "2,4": steps that failed for good */
  int cancelled;            /* LIVE, or why */
  uint64_t cancel_turn;
};

static void step_start(report_t *r);

static int step_failed(const client_result_t *res) {
  return res->error != NULL || res->status < 200 || res->status > 299;
}

static void on_report_closed(uv_handle_t *h) { free(h->data); }

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
  if (r->prev) r->prev->next = r->next;
  else lab->live = r->next;
  if (r->next) r->next->prev = r->prev;
  lab->reports_live--;
  lab->cleanups++;
  if (r->cancelled != LIVE && lab->turns - r->cancel_turn > lab->free_turns_max)
    lab->free_turns_max = lab->turns - r->cancel_turn;
  uv_close((uv_handle_t *)&r->deadline, on_report_closed);
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
  if (res->cancelled || res->timed_out) { /* the call was stopped: so do we */
    lab->steps_cancelled++;
    report_finish(r);
    return;
  }
  if (!step_failed(res)) {
    lab->steps_ok++;
    step_end(r, 1);
    return;
  }
  /* A real failure: try again, then record it and move on. */
  lab->steps_failed++;
  if (r->attempt <= r->lab->cfg.retries) {
    lab->steps_retried++;
    step_start(r);
    return;
  }
  step_end(r, 0);
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
  if (r->step == NULL) {
    fprintf(stderr, "lab12: client_get(%s) failed\n", url);
    lab->steps_failed++;
    step_end(r, 0);
    return;
  }
  lab->steps_inflight++;
}

/* SOLUTION: one way in for every cancel. It reaches the step in flight; that step's done
 * callback (res->cancelled, next loop turn) finishes the report. */
static void report_cancel(report_t *r, int why) {
  if (r->cancelled != LIVE) return;
  r->cancelled = why;
  r->cancel_turn = r->lab->turns;
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
  r->next = lab->live;
  if (lab->live) lab->live->prev = r;
  lab->live = r;
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
  const char *name[] = {"reports_started", "reports_ok", "reports_deadline", "reports_aborted",
                        "reports_live", "cleanups", "steps_started", "steps_inflight",
                        "steps_ok", "steps_failed", "steps_retried", "steps_cancelled",
                        "steps_after_cancel", "free_turns_max", "loop_turns"};
  uint64_t value[] = {lab->reports_started, lab->reports_ok, lab->reports_deadline,
                      lab->reports_aborted, lab->reports_live, lab->cleanups,
                      lab->steps_started, lab->steps_inflight, lab->steps_ok, lab->steps_failed,
                      lab->steps_retried, lab->steps_cancelled, lab->steps_after_cancel,
                      lab->free_turns_max, lab->turns};
  for (size_t i = 0; i < sizeof value / sizeof value[0]; i++)
    shell_stats_add(shell, name[i], (double)value[i]);
}

/* Who calls it: libuv, once per loop turn, after polling for I/O. */
static void on_turn(uv_check_t *check) {
  lab_t *lab = check->data;
  lab->turns++;
}

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

static void on_lab_closed(uv_handle_t *h) { free(h->data); }

/* Every request has been answered, so every report has ended: the loop below has nothing to do
 * (it frees what a report would leave behind if it had not). */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  while (lab->live != NULL) {
    report_t *r = lab->live;
    lab->live = r->next;
    uv_close((uv_handle_t *)&r->deadline, on_report_closed);
  }
  uv_close((uv_handle_t *)&lab->turn_counter, on_lab_closed);
}
