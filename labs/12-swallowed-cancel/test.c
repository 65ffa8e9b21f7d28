/* Lab 12 suite: does a cancel (client gone, deadline) stop a report's chain of steps, or is it
 * swallowed like any failure?
 *
 * Built once per variant (build/test/lab12-pitfall, -solution, -exercise, -wrong-*). Each test
 * starts the upstream as a child process, runs the variant in-process on its own loop thread and
 * asks for reports over real HTTP; a client that gives up is a real hang-up (curl's timeout
 * closes the connection). What is asserted: the upstream's exact counters (calls received, calls
 * abandoned: a step cancelled in flight, calls that arrive after the hang-up), the lab's own
 * counters told apart (failed vs cancelled, retried, cleaned up), loop turns from a cancel to the
 * cleanup, and latencies only as wide ratios (a step of 3000 ms cancelled within 1000 ms), so a
 * right answer passes on a loaded 2-core machine.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

/* ---- fixtures ---- */

typedef struct env {
  tk_proc_t up;
  tk_lab_t lab;
} env_t;

static void env_start(env_t *e, const char *const *lab_args) {
  const char *argv[32] = {"--upstream", NULL};
  int n = 2;
  memset(e, 0, sizeof *e);
  tk_upstream_start(&e->up, NULL);
  argv[1] = e->up.url;
  /* The test's first HTTP request sets up libcurl's one-time state: before the heap baseline. */
  tk_upstream_stat(&e->up, "requests_total");
  for (int i = 0; lab_args && lab_args[i] != NULL && n < 31; i++) argv[n++] = lab_args[i];
  argv[n] = NULL;
  tk_lab_start(&e->lab, &LAB_DEF, argv);
}

static const char *const idle_fields[] = {"reports_live", "steps_inflight", NULL};

static void env_stop(env_t *e) {
  tk_lab_stop(&e->lab, idle_fields);
  tk_upstream_stop(&e->up);
}

/* GET /report?query with the given client timeout (a short one hangs up); resp is the caller's. */
static void report(const env_t *e, const char *query, long timeout_ms, tk_resp_t *resp) {
  char url[256];
  snprintf(url, sizeof url, "%s/report?%s", e->lab.url, query);
  memset(resp, 0, sizeof *resp);
  tk_get(url, timeout_ms, resp);
}

/* Polls the lab's field until it is <= want (below) or >= want, at most within_ms. */
static double wait_lab(const env_t *e, const char *field, double want, int below,
                       double within_ms) {
  double end = tk_now_ms() + within_ms, v;
  for (;;) {
    v = tk_lab_stat(&e->lab, field);
    if (below ? v <= want : v >= want) return v;
    if (tk_now_ms() >= end) return v;
    usleep(10 * 1000);
  }
}

static double wait_upstream(const env_t *e, const char *field, double want, double within_ms) {
  double end = tk_now_ms() + within_ms, v;
  for (;;) {
    v = tk_upstream_stat(&e->up, field);
    if (v >= want || tk_now_ms() >= end) return v;
    usleep(10 * 1000);
  }
}

static tk_resp_t *resp_new(int n) {
  tk_resp_t *r = calloc((size_t)n, sizeof *r);
  cr_assert(r != NULL, "out of memory");
  return r;
}

/* ---- the report and its input ---- */

Test(lab12, report_ok, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(2);
  env_start(&e, (const char *[]){"--step-ms", "10", NULL});
  report(&e, "steps=4&step_ms=30", 5000, &r[0]);
  double peak = tk_upstream_stat(&e.up, "inflight_peak");
  report(&e, "", 5000, &r[1]);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double ok = tk_lab_stat(&e.lab, "steps_ok"), reports_ok = tk_lab_stat(&e.lab, "reports_ok");
  double cancelled = tk_lab_stat(&e.lab, "steps_cancelled");
  int s0 = r[0].status, s1 = r[1].status;
  double ms = r[0].total_ms;
  char b0[256], b1[256];
  snprintf(b0, sizeof b0, "%.255s", r[0].body);
  snprintf(b1, sizeof b1, "%.255s", r[1].body);
  free(r);
  env_stop(&e);
  cr_assert(s0 == 200 && strstr(b0, "\"report\":1,") && strstr(b0, "\"steps\":4,") &&
                strstr(b0, "\"ok\":4,") && strstr(b0, "\"failed\":[]"),
            "GET /report?steps=4&step_ms=30 answered %d %s; want 200 {\"report\":1,\"steps\":4,"
            "\"ok\":4,\"failed\":[]}", s0, b0);
  cr_assert(s1 == 200 && strstr(b1, "\"report\":2,") && strstr(b1, "\"steps\":5,"),
            "GET /report (the defaults: --steps 5) answered %d %s; want 200 with report 2 and 5 "
            "steps", s1, b1);
  cr_assert(peak == 1 && ms >= 110,
            "4 steps of 30 ms: the upstream had %.0f at once and the report took %.0f ms; the "
            "steps run one after the other (1 at a time, >= 120 ms)", peak, ms);
  cr_assert(calls == 9 && ok == 9 && reports_ok == 2 && cancelled == 0,
            "2 reports of 4 and 5 steps: %.0f upstream calls, steps_ok %.0f, reports_ok %.0f, "
            "steps_cancelled %.0f; want 9, 9, 2, 0", calls, ok, reports_ok, cancelled);
}

Test(lab12, rejects_bad_query, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  const char *bad[][2] = {{"steps=0", "steps"},        {"steps=21", "steps"},
                          {"steps=abc", "steps"},      {"steps=", "steps"},
                          {"step_ms=-1", "step_ms"},   {"step_ms=10001", "step_ms"},
                          {"step_ms=5x", "step_ms"},   {"steps=5&fail_step=6", "fail_step"},
                          {"hang_step=-1", "hang_step"}, {"steps=3&hang_step=4", "hang_step"}};
  char seen[512] = "";
  int wrong = 0;
  env_start(&e, NULL);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    report(&e, bad[i][0], 5000, r);
    if (r->status == 400 && strstr(r->body, "\"error\"") && strstr(r->body, bad[i][1])) continue;
    wrong++;
    size_t len = strlen(seen);
    snprintf(seen + len, sizeof seen - len, "%s?%s -> %d %.60s; ", len ? "" : "", bad[i][0],
             r->status, r->body);
  }
  double calls_bad = tk_upstream_stat(&e.up, "requests_total");
  report(&e, "steps=20&step_ms=0&fail_step=0", 5000, r);
  int edge = r->status;
  double calls = tk_upstream_stat(&e.up, "requests_total");
  /* fail_step and hang_step at their other ends: the last step (fails, retried once), 0 (none) */
  report(&e, "steps=2&step_ms=0&fail_step=2&hang_step=0", 5000, r);
  int edge2 = r->status;
  char body2[256];
  snprintf(body2, sizeof body2, "%.255s", r->body);
  double calls2 = tk_upstream_stat(&e.up, "requests_total") - calls;
  free(r);
  env_stop(&e);
  cr_assert_eq(wrong, 0, "%d bad queries were not answered 400 {\"error\":...} naming the "
               "parameter: %s", wrong, seen);
  cr_assert_eq(calls_bad, 0, "the rejected reports made %.0f upstream calls, want 0", calls_bad);
  cr_assert(edge == 200 && calls == 20, "steps=20&step_ms=0&fail_step=0 (all in range) answered "
            "%d with %.0f calls; want 200 and 20", edge, calls);
  cr_assert(edge2 == 200 && strstr(body2, "\"failed\":[2]") && calls2 == 3,
            "steps=2&step_ms=0&fail_step=2&hang_step=0 (in range: steps are numbered 1..steps, 0 "
            "is none) answered %d %s with %.0f calls; want 200 with \"failed\":[2] and 3 calls",
            edge2, body2, calls2);
}

Test(lab12, rejects_bad_options, .timeout = 30) {
  const char *bad[][3] = {{"--step-timeout-ms", "0", NULL}, {"--deadline-ms", "0", NULL},
                          {"--steps", "0", NULL},           {"--steps", "21", NULL}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    labrun_t *run = NULL;
    int rc = labrun_start(&run, &LAB_DEF, bad[i]);
    if (rc == 0) labrun_stop(run, 5000, NULL);
    cr_assert_eq(rc, UV_EINVAL, "%s %s started the lab (labrun_start %d); want UV_EINVAL from "
                 "lab_create", bad[i][0], bad[i][1], rc);
  }
  labrun_t *run = NULL;
  int rc = labrun_start(&run, &LAB_DEF, (const char *[]){"--steps", "20", "--retries", "0", NULL});
  cr_assert_eq(rc, 0, "--steps 20 --retries 0 is valid, but labrun_start returned %d", rc);
  labrun_stop(run, 5000, NULL);
}

/* ---- a real failure ---- */

Test(lab12, failure_is_retried, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  env_start(&e, (const char *[]){"--retries", "2", NULL});
  report(&e, "steps=3&step_ms=10&fail_step=2", 5000, r);
  int status = r->status;
  char body[256];
  snprintf(body, sizeof body, "%.255s", r->body);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double failed = tk_lab_stat(&e.lab, "steps_failed");
  double retried = tk_lab_stat(&e.lab, "steps_retried");
  double cancelled = tk_lab_stat(&e.lab, "steps_cancelled");
  free(r);
  env_stop(&e);
  cr_assert(status == 200 && strstr(body, "\"ok\":2,") && strstr(body, "\"failed\":[2]"),
            "3 steps, step 2 always failing: answered %d %s; want 200 with \"ok\":2 and "
            "\"failed\":[2] (a step still failing is recorded, and the report moves on)", status,
            body);
  cr_assert(calls == 5 && failed == 3 && retried == 2 && cancelled == 0,
            "with --retries 2, step 2 (always 500) should be tried 3 times: %.0f upstream calls "
            "(want 5), steps_failed %.0f (3), steps_retried %.0f (2), steps_cancelled %.0f (0). "
            "A real failure is retried; only a cancel is not", calls, failed, retried, cancelled);
}

/* The other side of --retries: 0 more attempts, so a failing step is tried once. */
Test(lab12, no_retries_tries_once, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  env_start(&e, (const char *[]){"--retries", "0", NULL});
  report(&e, "steps=3&step_ms=10&fail_step=2", 5000, r);
  int status = r->status;
  char body[256];
  snprintf(body, sizeof body, "%.255s", r->body);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double failed = tk_lab_stat(&e.lab, "steps_failed");
  double retried = tk_lab_stat(&e.lab, "steps_retried");
  free(r);
  env_stop(&e);
  cr_assert(status == 200 && strstr(body, "\"ok\":2,") && strstr(body, "\"failed\":[2]"),
            "--retries 0, 3 steps, step 2 always failing: answered %d %s; want 200 with \"ok\":2 "
            "and \"failed\":[2]", status, body);
  cr_assert(calls == 3 && failed == 1 && retried == 0,
            "with --retries 0 a failing step is tried once: %.0f upstream calls (want 3), "
            "steps_failed %.0f (1), steps_retried %.0f (0); 0 is a number of retries, not unset",
            calls, failed, retried);
}

Test(lab12, step_timeout_is_a_failure, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  env_start(&e, (const char *[]){"--step-timeout-ms", "200", "--retries", "1", NULL});
  report(&e, "steps=3&step_ms=10&hang_step=2", 5000, r); /* step 2 never answers: its timeout */
  int status = r->status;
  char body[256];
  snprintf(body, sizeof body, "%.255s", r->body);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double failed = tk_lab_stat(&e.lab, "steps_failed");
  double cancelled = tk_lab_stat(&e.lab, "steps_cancelled");
  free(r);
  env_stop(&e);
  cr_assert(status == 200 && strstr(body, "\"ok\":2,") && strstr(body, "\"failed\":[2]"),
            "3 steps, step 2 hanging past --step-timeout-ms 200: answered %d %s; want 200 with "
            "\"ok\":2 and \"failed\":[2] (a timeout is a real failure: retried, recorded, the "
            "report moves on)", status, body);
  cr_assert(calls == 4 && failed == 2 && cancelled == 0,
            "%.0f upstream calls (want 4: step 2 twice), steps_failed %.0f (want 2), "
            "steps_cancelled %.0f (want 0): a step's own timeout is a failure, not a cancel",
            calls, failed, cancelled);
}

Test(lab12, unreachable_upstream_fails, .timeout = 30) {
  tk_lab_t lab;
  tk_resp_t *r = resp_new(1);
  char url[160];
  /* Port 1: nothing listens there, every connect is refused at once. */
  tk_lab_start(&lab, &LAB_DEF, (const char *[]){"--upstream", "http://127.0.0.1:1", NULL});
  tk_get(tk_lab_url(&lab, "/report?steps=3", url, sizeof url), 5000, r);
  int status = r->status;
  char body[256];
  snprintf(body, sizeof body, "%.255s", r->body);
  double failed = tk_lab_stat(&lab, "steps_failed"), retried = tk_lab_stat(&lab, "steps_retried");
  free(r);
  tk_lab_stop(&lab, idle_fields);
  cr_assert(status == 200 && strstr(body, "\"ok\":0,") && strstr(body, "\"failed\":[1,2,3]"),
            "with the upstream unreachable, GET /report?steps=3 answered %d %s; want 200 "
            "{...,\"ok\":0,\"failed\":[1,2,3]}", status, body);
  cr_assert(failed == 6 && retried == 3, "steps_failed %.0f (want 6: 3 steps x 2 attempts), "
            "steps_retried %.0f (want 3)", failed, retried);
}

/* ---- a client that hangs up ---- */

Test(lab12, hangup_stops_chain, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  env_start(&e, (const char *[]){"--step-timeout-ms", "1000", NULL});
  /* Steps 1-2 take 50 ms each, step 3 never answers: the client gives up after 500 ms, during
   * step 3 and before its 1000 ms timeout (which would be a real failure, and retried). */
  report(&e, "steps=5&step_ms=50&hang_step=3", 500, r);
  double at_hangup = tk_upstream_stat(&e.up, "requests_total");
  usleep(1800 * 1000); /* a retry (hanging until its 1000 ms timeout) and steps 4-5: in by then */
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double after = tk_lab_stat(&e.lab, "steps_after_cancel");
  int status = r->status;
  free(r);
  env_stop(&e);
  cr_assert_eq(status, 0, "the client should have given up after 500 ms, got %d", status);
  cr_assert_geq(at_hangup, 3, "step 3 had not started when the client gave up after 500 ms "
                "(upstream calls %.0f): steps of 50 ms should be far quicker", at_hangup);
  cr_assert_eq(calls, 3,
               "the client hung up during step 3 of 5; 1.8 s later the upstream had received "
               "%.0f calls, %.0f after the hang-up (the lab counts %.0f attempts after the "
               "cancel). "
               "A cancelled step must not be retried, and no later step may start: the cancel "
               "was swallowed", calls, calls - 3, after);
}

Test(lab12, hangup_cancels_step_in_flight, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  env_start(&e, (const char *[]){"--step-timeout-ms", "20000", NULL});
  report(&e, "steps=3&step_ms=3000", 300, r); /* gives up during step 1 */
  double t0 = tk_now_ms();
  double abandoned = wait_upstream(&e, "abandoned", 1, 1000);
  double ms = tk_now_ms() - t0;
  double live = wait_lab(&e, "reports_live", 0, 1, 500);
  free(r);
  env_stop(&e);
  cr_assert(abandoned >= 1,
            "1 s after the client hung up, the upstream had seen %.0f abandoned calls: the "
            "step in flight (3000 ms) ran on for nobody. On the hang-up (shell_request_on_abort) "
            "client_cancel() the step in flight", abandoned);
  cr_assert(abandoned == 1 && live == 0,
            "after the hang-up: %.0f calls abandoned (want 1, after %.0f ms), %.0f reports still "
            "allocated (want 0)", abandoned, ms, live);
}

Test(lab12, cancel_is_not_a_failure, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  env_start(&e, (const char *[]){"--step-timeout-ms", "20000", NULL});
  report(&e, "steps=3&step_ms=2000", 300, r);
  wait_upstream(&e, "abandoned", 1, 1000);
  usleep(100 * 1000);
  double failed = tk_lab_stat(&e.lab, "steps_failed");
  double retried = tk_lab_stat(&e.lab, "steps_retried");
  double cancelled = tk_lab_stat(&e.lab, "steps_cancelled");
  double aborted = tk_lab_stat(&e.lab, "reports_aborted"), ok = tk_lab_stat(&e.lab, "reports_ok");
  free(r);
  env_stop(&e);
  cr_assert(cancelled == 1 && failed == 0 && retried == 0,
            "one step cancelled by a hang-up: steps_cancelled %.0f, steps_failed %.0f, "
            "steps_retried %.0f; want 1, 0, 0. A cancel is not a failure: check res->cancelled "
            "before the failure path", cancelled, failed, retried);
  cr_assert(aborted == 1 && ok == 0, "reports_aborted %.0f, reports_ok %.0f; want 1 and 0",
            aborted, ok);
}

Test(lab12, state_freed_within_a_turn, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  env_start(&e, (const char *[]){"--step-timeout-ms", "20000", NULL});
  report(&e, "steps=3&step_ms=2000", 300, r);
  double live = wait_lab(&e, "reports_live", 0, 1, 1000);
  double turns = tk_lab_stat(&e.lab, "free_turns_max");
  double cleanups = tk_lab_stat(&e.lab, "cleanups");
  free(r);
  env_stop(&e);
  cr_assert(live == 0 && cleanups == 1,
            "1 s after the client hung up during a 2000 ms step, %.0f report states were still "
            "allocated (cleanups %.0f): the report's state must go as soon as its cancelled step "
            "reports back", live, cleanups);
  cr_assert_leq(turns, 1, "the report was cleaned up %.0f loop turns after its cancel; want at "
                "most 1 (the turn on which the cancelled call's done callback arrives)", turns);
}

/* ---- the deadline ---- */

Test(lab12, deadline_cancels_chain, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  env_start(&e, (const char *[]){"--deadline-ms", "300", NULL});
  report(&e, "steps=5&step_ms=200", 5000, r); /* needs 1000 ms: the deadline ends it in step 2 */
  int status = r->status;
  double ms = r->total_ms;
  char body[256];
  snprintf(body, sizeof body, "%.255s", r->body);
  free(r);
  usleep(1500 * 1000);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double up_ok = tk_upstream_stat(&e.up, "responses_2xx");
  double abandoned = tk_upstream_stat(&e.up, "abandoned");
  double cancelled = tk_lab_stat(&e.lab, "steps_cancelled");
  double failed = tk_lab_stat(&e.lab, "steps_failed");
  double deadline = tk_lab_stat(&e.lab, "reports_deadline");
  double done = tk_json_number(body, "steps_done");
  env_stop(&e);
  cr_assert(status == 504 && strstr(body, "\"error\":\"deadline\"") &&
                strstr(body, "\"deadline_ms\":300") && !isnan(done),
            "a report of 5 x 200 ms with --deadline-ms 300 answered %d %s; want 504 "
            "{\"error\":\"deadline\",\"deadline_ms\":300,\"steps_done\":K}", status, body);
  cr_assert(ms >= 280 && ms < 2000, "the 504 came after %.0f ms; the deadline is 300 ms", ms);
  /* The step in flight at the deadline normally reached the upstream (and is abandoned there);
   * on a loaded machine it may be cancelled before its request got there. */
  cr_assert(calls <= done + 1 && up_ok == done && abandoned == calls - done,
            "after the deadline (steps_done %.0f): the upstream received %.0f calls (want %.0f: "
            "the steps done and the one cancelled), answered %.0f with 2xx (want %.0f), saw "
            "%.0f abandoned. The deadline must cancel the step in flight and start nothing more",
            done, calls, done + 1, up_ok, done, abandoned);
  cr_assert(cancelled == 1 && failed == 0 && deadline == 1,
            "steps_cancelled %.0f, steps_failed %.0f, reports_deadline %.0f; want 1, 0, 1",
            cancelled, failed, deadline);
}

/* steps_done counts the steps that had ended, a failed one too: each step is one call here
 * (--retries 0), so it is the upstream's calls less the one abandoned at the deadline. */
Test(lab12, deadline_steps_done_counts_failed, .timeout = 30) {
  env_t e;
  tk_resp_t *r = resp_new(1);
  env_start(&e, (const char *[]){"--deadline-ms", "750", "--retries", "0", NULL});
  /* Step 1 fails (300 ms), step 2 ends at 600 ms, the deadline comes halfway through step 3. */
  report(&e, "steps=10&step_ms=300&fail_step=1", 5000, r);
  int status = r->status;
  char body[256];
  snprintf(body, sizeof body, "%.255s", r->body);
  free(r);
  usleep(1000 * 1000);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double abandoned = tk_upstream_stat(&e.up, "abandoned");
  double done = tk_json_number(body, "steps_done");
  env_stop(&e);
  cr_assert(status == 504 && strstr(body, "\"deadline_ms\":750") && !isnan(done),
            "a report of 10 x 300 ms with --deadline-ms 750 answered %d %s; want 504 "
            "{\"error\":\"deadline\",\"deadline_ms\":750,\"steps_done\":K}", status, body);
  cr_assert(done >= 1, "steps_done %.0f: step 1 (300 ms) had ended long before the 750 ms "
            "deadline", done);
  cr_assert(done == calls - abandoned,
            "steps_done %.0f, but %.0f steps had ended (the upstream answered %.0f calls and saw "
            "%.0f abandoned; step 1 failed): steps_done counts every step that ended, failed "
            "ones too", done, calls - abandoned, calls, abandoned);
}

/* ---- a stream ---- */

Test(lab12, every_report_cleaned_once, .timeout = 30) {
  env_t e;
  char url[256];
  tk_resp_t *r = resp_new(30);
  env_start(&e, (const char *[]){"--step-timeout-ms", "5000", NULL});
  /* 30 reports at 30/s whose clients give up after 150 ms (in step 2 of 3), then 10 that finish. */
  snprintf(url, sizeof url, "%s/report?steps=3&step_ms=100", e.lab.url);
  int answered = tk_stream(url, NULL, 30, 30, 150, r);
  snprintf(url, sizeof url, "%s/report?steps=2&step_ms=10", e.lab.url);
  int ok = tk_stream(url, NULL, 10, 20, 5000, r);
  double live = wait_lab(&e, "reports_live", 0, 1, 3000);
  usleep(300 * 1000); /* anything still to come reaches the upstream */
  double started = tk_lab_stat(&e.lab, "reports_started");
  double cleanups = tk_lab_stat(&e.lab, "cleanups");
  double aborted = tk_lab_stat(&e.lab, "reports_aborted"), rok = tk_lab_stat(&e.lab, "reports_ok");
  double after = tk_lab_stat(&e.lab, "steps_after_cancel");
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double abandoned = tk_upstream_stat(&e.up, "abandoned");
  free(r);
  env_stop(&e);
  cr_assert(answered == 0 && ok == 10, "%d of the 30 hung-up reports got an answer (want 0) and "
            "%d of the 10 short ones (want 10)", answered, ok);
  cr_assert(live == 0 && started == 40 && cleanups == 40,
            "after 40 reports (30 abandoned by their clients): %.0f still allocated, %.0f "
            "started, %.0f cleaned up; want 0, 40, 40: every report's state is cleaned up "
            "exactly once", live, started, cleanups);
  cr_assert(aborted == 30 && rok == 10, "reports_aborted %.0f (want 30), reports_ok %.0f (10)",
            aborted, rok);
  cr_assert(calls <= 80 && abandoned >= 20 && after == 0,
            "the upstream received %.0f calls (at most 30 x 2 before the hang-ups + 10 x 2 = 80) "
            "and saw %.0f abandoned (want about 30); the lab counts %.0f attempts after a cancel "
            "(want 0): cancelled reports kept working for nobody", calls, abandoned, after);
}
