/* Lab 04 suite: do a dashboard's three calls end together (a scope), or run on as orphans?
 *
 * Built once per variant (build/test/lab04-pitfall, -solution, -exercise, -wrong-*). Each test
 * starts the upstream as a child process and the variant in-process on its own loop thread, then
 * talks to both over real HTTP. One test per rule of lab.h (C1..C10, named there). What is
 * asserted are counters (calls in flight, cancelled, late callbacks, the upstream's abandoned and
 * requests_total), exact bodies, and latency ratios of 10x or more between the failing call and
 * its slow sibling, so a correct variant passes on a busy 2-core machine. Every test ends with
 * tk_lab_stop: calls_inflight, dashboards_live, late_callbacks and orphan_ms_total back to 0, a
 * clean loop and no fd left, which catches a freed or leaked dashboard without AddressSanitizer.
 */
#include <criterion/criterion.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

static tk_proc_t up;
static tk_lab_t lab;
static const char *const zero_fields[] = {"calls_inflight", "dashboards_live", "late_callbacks",
                                          "orphan_ms_total", NULL};

/* Freed memory is filled with 0xa5 (glibc's M_PERTURB): a callback that reaches a dashboard
 * freed too early then reads 0xa5a5... pointers and crashes, also without AddressSanitizer,
 * instead of finding the old bytes still there and passing by luck. */
static void setup(void) { mallopt(M_PERTURB, 0xa5); }

static void teardown(void) { tk_upstream_stop(&up); }

TestSuite(lab04, .init = setup, .fini = teardown, .timeout = 30);

/* ---- fixtures ---- */

/* Starts the upstream, then the lab pointed at it; args are lab options after --upstream. */
static void start(const char *const *args) {
  const char *argv[24] = {"--upstream", NULL};
  int n = 2;
  tk_upstream_start(&up, NULL);
  argv[1] = up.url;
  for (int i = 0; args[i] != NULL && n < 23; i++) argv[n++] = args[i];
  argv[n] = NULL;
  tk_lab_start(&lab, &LAB_DEF, argv);
}

static void stop(void) { tk_lab_stop(&lab, zero_fields); }

/* GET /dashboard<query> on a fresh connection. */
static void dashboard(const char *query, long timeout_ms, tk_resp_t *r) {
  char url[256];
  snprintf(url, sizeof url, "%s/dashboard%s", lab.url, query);
  tk_get(url, timeout_ms, r);
}

static const char *dash_url(const char *query, char *out, size_t len) {
  snprintf(out, len, "%s/dashboard%s", lab.url, query);
  return out;
}

/* Polls a lab (up == NULL) or upstream stat every 10 ms until it is >= want (or <= want when
 * below), at most within_ms; returns the last value read. */
static double wait_stat(const tk_proc_t *from, const char *field, double want, int below,
                        double within_ms) {
  double end = tk_now_ms() + within_ms, v;
  for (;;) {
    v = from ? tk_upstream_stat(from, field) : tk_lab_stat(&lab, field);
    if (below ? v <= want : v >= want) return v;
    if (tk_now_ms() >= end) return v;
    usleep(10 * 1000);
  }
}

/* The body the upstream gives for path with latency_ms and status: its answers are determined
 * by the request, so the test can ask for the same ones and compare byte for byte. */
static void upstream_body(const char *path, long latency_ms, char *out, size_t len) {
  char url[192];
  tk_resp_t *r = malloc(sizeof *r);
  cr_assert(r != NULL, "out of memory");
  snprintf(url, sizeof url, "%s/%s?latency_ms=%ld&status=200", up.url, path, latency_ms);
  cr_assert_eq(tk_get(url, 5000, r), 0, "GET %s (the upstream directly) got no answer", url);
  size_t n = strlen(r->body) < len ? strlen(r->body) : len - 1;
  memcpy(out, r->body, n);
  out[n] = '\0';
  free(r);
}

/* Which dashboards fail with --fail-percent P and no fail= in the query (lab.h C10): dashboard
 * k, counted from 1, fails when k*61 % 100 < P. */
static int failing_among(int n, long percent) {
  int f = 0;
  for (int k = 1; k <= n; k++) f += (k * 61 % 100) < percent;
  return f;
}

/* ---- C1: the calls start together ---- */

Test(lab04, calls_start_together) {
  tk_resp_t r;
  start((const char *[]){"--user-latency-ms", "300", "--orders-latency-ms", "300",
                         "--recs-latency-ms", "300", NULL});
  dashboard("?fail=0", 8000, &r);
  double peak = tk_upstream_stat(&up, "inflight_peak");
  stop();
  cr_assert_eq(r.status, 200, "GET /dashboard?fail=0 answered %d (%s), want 200", r.status, r.body);
  cr_assert_geq(peak, 3,
                "the upstream never had more than %.0f of the dashboard's three 300 ms calls at "
                "once, and the dashboard took %.0f ms: the calls ran one after another. Start all "
                "three when the request arrives; the dashboard then takes the slowest, not the sum",
                peak, r.total_ms);
}

/* ---- C2: the success path ---- */

Test(lab04, success_path) {
  tk_resp_t r;
  char user[512], orders[512], recs[512], want[1600];
  start((const char *[]){"--user-latency-ms", "20", "--orders-latency-ms", "10",
                         "--recs-latency-ms", "200", NULL});
  dashboard("?fail=0", 8000, &r);
  double cancelled = tk_lab_stat(&lab, "calls_cancelled");
  double failed = tk_lab_stat(&lab, "dashboards_failed");
  upstream_body("user", 20, user, sizeof user);
  upstream_body("orders", 10, orders, sizeof orders);
  upstream_body("recommendations", 200, recs, sizeof recs);
  stop();
  snprintf(want, sizeof want, "{\"user\":%s,\"orders\":%s,\"recommendations\":%s}", user, orders,
           recs);
  cr_assert_eq(r.status, 200, "GET /dashboard?fail=0 answered %d (%s), want 200", r.status,
               r.body);
  cr_assert_str_eq(r.body, want, "the success body is not the three upstream bodies as received");
  cr_assert_geq(r.total_ms, 199.0,
                "the dashboard answered after %.0f ms, before its 200 ms call could end",
                r.total_ms);
  cr_assert(cancelled == 0 && failed == 0,
            "on the success path calls_cancelled = %.0f and dashboards_failed = %.0f, want 0 and 0",
            cancelled, failed);
}

/* ---- C3: the first error is the answer ---- */

Test(lab04, first_error_is_the_answer) {
  tk_resp_t r;
  start((const char *[]){"--orders-latency-ms", "30", "--orders-status", "503",
                         "--user-latency-ms", "1500", "--recs-latency-ms", "2000",
                         "--deadline-ms", "5000", NULL});
  dashboard("?fail=1", 8000, &r);
  double failed = tk_lab_stat(&lab, "dashboards_failed");
  stop();
  cr_assert_eq(r.status, 502, "GET /dashboard?fail=1 answered %d (%s), want 502", r.status, r.body);
  cr_assert_str_eq(r.body, "{\"error\":\"orders\",\"status\":503}",
                   "the 502 must name the call that failed first and its status (orders, 503); "
                   "the siblings cancelled after it are not errors");
  cr_assert_eq(failed, 1, "dashboards_failed = %.0f after one 502, want 1", failed);
}

Test(lab04, upstream_unreachable) {
  tk_resp_t r;
  /* Nothing listens on port 1: every call fails without a response (status 0). */
  tk_lab_start(&lab, &LAB_DEF, (const char *[]){"--upstream", "http://127.0.0.1:1", NULL});
  dashboard("?fail=0", 8000, &r);
  double started = tk_lab_stat(&lab, "calls_started");
  stop();
  cr_assert_eq(r.status, 502, "with the upstream unreachable the dashboard answered %d (%s), "
               "want 502", r.status, r.body);
  cr_assert(strcmp(r.body, "{\"error\":\"user\",\"status\":0}") == 0 ||
                strcmp(r.body, "{\"error\":\"orders\",\"status\":0}") == 0 ||
                strcmp(r.body, "{\"error\":\"recommendations\",\"status\":0}") == 0,
            "with no response from the upstream the 502 body is %s; want "
            "{\"error\":\"<the call that failed first>\",\"status\":0}", r.body);
  cr_assert_lt(r.total_ms, 900.0, "a refused connection took %.0f ms to answer (deadline 1000)",
               r.total_ms);
  cr_assert(started >= 1 && started <= 3, "calls_started = %.0f for one dashboard", started);
}

/* ---- C4: the first failure cancels the siblings, and the answer does not wait for them ---- */

Test(lab04, fails_fast) {
  tk_resp_t r;
  start((const char *[]){"--orders-latency-ms", "30", "--user-latency-ms", "60",
                         "--recs-latency-ms", "2000", "--deadline-ms", "5000", NULL});
  dashboard("?fail=1", 8000, &r);
  stop();
  cr_assert_eq(r.status, 502, "GET /dashboard?fail=1 answered %d (%s), want 502: the orders call "
               "failed with 500 and its error is the answer", r.status, r.body);
  cr_assert(r.total_ms >= 29.0 && r.total_ms < 1000.0,
            "the failing dashboard answered after %.0f ms; orders fails after 30 ms, the "
            "recommendations call takes 2000 ms: answer at the first failure (once the cancels "
            "are back), not before it and not after the slowest sibling", r.total_ms);
}

Test(lab04, cancels_siblings) {
  tk_resp_t r;
  start((const char *[]){"--orders-latency-ms", "30", "--user-latency-ms", "1500",
                         "--recs-latency-ms", "2000", "--deadline-ms", "5000", NULL});
  dashboard("?fail=1", 8000, &r);
  double abandoned = wait_stat(&up, "abandoned", 2, 0, 1000);
  double up_inflight = tk_upstream_stat(&up, "inflight");
  double cancelled = tk_lab_stat(&lab, "calls_cancelled");
  stop();
  cr_assert_eq(r.status, 502, "GET /dashboard?fail=1 answered %d, want 502", r.status);
  cr_assert(abandoned >= 2 && cancelled == 2,
            "after orders failed, the upstream saw %.0f abandoned calls and still worked on %.0f; "
            "the lab counted %.0f cancelled (want 2 and 2: the 1500 ms user call and the 2000 ms "
            "recommendations call). Cancel the live siblings at the first failure (client_cancel "
            "closes the connection)", abandoned, up_inflight, cancelled);
}

/* ---- C5: the deadline ---- */

Test(lab04, deadline_cancels_all) {
  tk_resp_t r;
  start((const char *[]){"--deadline-ms", "200", "--recs-latency-ms", "3000",
                         "--user-latency-ms", "20", "--orders-latency-ms", "20", NULL});
  dashboard("?fail=0", 8000, &r);
  double inflight = tk_lab_stat(&lab, "calls_inflight");
  double abandoned = wait_stat(&up, "abandoned", 1, 0, 1000);
  double cancelled = tk_lab_stat(&lab, "calls_cancelled");
  stop();
  cr_assert_eq(r.status, 504, "a dashboard past its 200 ms deadline answered %d (%s), want 504",
               r.status, r.body);
  cr_assert_str_eq(r.body, "{\"error\":\"deadline\",\"deadline_ms\":200}",
                   "the 504 body must say which deadline ran out");
  cr_assert(r.total_ms >= 195.0 && r.total_ms < 1500.0,
            "the 200 ms deadline answered after %.0f ms (not before 200, and not much after)",
            r.total_ms);
  cr_assert(inflight == 0 && abandoned >= 1 && cancelled == 1,
            "after the 504, %.0f calls were still in flight, the upstream saw %.0f abandoned and "
            "the lab counted %.0f cancelled (want 0, >= 1, 1): the deadline answered but left the "
            "3000 ms call running. A deadline must cancel every child, then answer",
            inflight, abandoned, cancelled);
}

/* ---- C6: a client that hangs up ---- */

Test(lab04, client_gone_cancels_calls) {
  tk_resp_t r;
  start((const char *[]){"--recs-latency-ms", "3000", "--deadline-ms", "5000", NULL});
  dashboard("?fail=0", 400, &r); /* the client gives up and hangs up */
  double inflight = wait_stat(NULL, "calls_inflight", 0, 1, 1500);
  double abandoned = wait_stat(&up, "abandoned", 1, 0, 500);
  double started = tk_lab_stat(&lab, "dashboards_total");
  stop();
  cr_assert_eq(r.status, 0, "the test's client should have timed out after 400 ms, got %d",
               r.status);
  cr_assert_eq(started, 1, "the dashboard request never reached the lab within 400 ms "
               "(dashboards_total %.0f): the machine is overloaded, run the suite again", started);
  cr_assert(inflight == 0 && abandoned >= 1,
            "1.5 s after the client hung up, %.0f calls were still in flight and the upstream "
            "saw %.0f abandoned: cancelling the owner must cancel its children "
            "(shell_request_on_abort, then cancel the dashboard's calls)", inflight, abandoned);
}

/* ---- C7: no callback after the answer ---- */

Test(lab04, no_late_callbacks) {
  static tk_resp_t r[20];
  start((const char *[]){"--orders-latency-ms", "30", "--user-latency-ms", "60",
                         "--recs-latency-ms", "300", "--deadline-ms", "5000", NULL});
  char url[160];
  int ok = tk_get_many(dash_url("?fail=1", url, sizeof url), 20, 8000, r);
  /* Let any orphan come back (and, under ASan, trip over the freed request). */
  double inflight = wait_stat(NULL, "calls_inflight", 0, 1, 2000);
  double late = tk_lab_stat(&lab, "late_callbacks");
  double orphan_ms = tk_lab_stat(&lab, "orphan_ms_total");
  double live = tk_lab_stat(&lab, "dashboards_live");
  int n502 = 0;
  for (int i = 0; i < 20; i++) n502 += r[i].status == 502;
  stop();
  cr_assert(ok == 20 && n502 == 20, "%d of 20 failing dashboards answered, %d of them 502", ok,
            n502);
  cr_assert(late == 0 && orphan_ms == 0,
            "%.0f call callbacks ran after their dashboard had answered (%.0f ms of upstream "
            "work nobody read; %.0f calls still in flight): orphans. In C their callbacks "
            "reach state the request already freed. Answer only after every call has ended",
            late, orphan_ms, inflight);
  cr_assert(inflight == 0 && live == 0,
            "with every dashboard answered, %.0f calls are still in flight and %.0f dashboards "
            "allocated", inflight, live);
}

/* ---- C8: no spawn into a failing or finished group ---- */

Test(lab04, spawn_after_close_refused) {
  tk_resp_t ok_resp, fail_resp;
  start((const char *[]){"--recs-latency-ms", "50", NULL});
  dashboard("?fail=0&late_spawn=1", 8000, &ok_resp);
  dashboard("?fail=1&late_spawn=1", 8000, &fail_resp);
  /* A fourth call, if it was started, reaches the upstream within a few ms. */
  double calls = wait_stat(&up, "requests_total", 7, 0, 300);
  double refused = tk_lab_stat(&lab, "spawn_refused");
  double started = tk_lab_stat(&lab, "calls_started");
  stop();
  cr_assert(ok_resp.status == 200 && fail_resp.status == 502,
            "GET /dashboard?fail=0&late_spawn=1 answered %d (want 200), ?fail=1&late_spawn=1 "
            "answered %d (want 502)", ok_resp.status, fail_resp.status);
  cr_assert(refused == 2 && calls == 6 && started == 6,
            "after each of two dashboards answered (one 200, one 502), one more call was spawned "
            "into its group: spawn_refused = %.0f (want 2), calls_started = %.0f and the upstream "
            "saw %.0f calls (want 6). A group that is failing or has answered must refuse new "
            "calls, or they outlive the request", refused, started, calls);
}

/* ---- C9: cancelling is per dashboard; C10 on a steady stream ---- */

Test(lab04, cancel_is_per_dashboard) {
  static tk_resp_t r[30];
  char url[160];
  int n200 = 0, n502 = 0, whole = 0;
  start((const char *[]){"--fail-percent", "50", "--orders-latency-ms", "20",
                         "--user-latency-ms", "400", "--recs-latency-ms", "400",
                         "--deadline-ms", "5000", NULL});
  /* 50 dashboards/s, each lasting 400 ms when it succeeds: about 20 in flight at once, half of
   * them failing at 20 ms while the others wait for their user and recommendations (both slow:
   * a sibling is still running when its orders call fails unless the lab stalls for 380 ms). */
  int ok = tk_stream(dash_url("", url, sizeof url), NULL, 30, 50.0, 8000, r);
  double cancelled = tk_lab_stat(&lab, "calls_cancelled");
  for (int i = 0; i < 30; i++) {
    if (r[i].status == 200) {
      n200++;
      whole += strstr(r[i].body, "\"recommendations\":{\"path\":\"/recommendations\"") != NULL &&
               strstr(r[i].body, "\"user\":{\"path\":\"/user\"") != NULL;
    }
    n502 += r[i].status == 502;
  }
  int want_fail = failing_among(30, 50);
  stop();
  cr_assert_eq(ok, 30, "only %d of 30 dashboards of the stream got an answer", ok);
  cr_assert(n502 == want_fail && n200 == 30 - want_fail && whole == n200,
            "a stream of 30 dashboards, %d of them failing: %d answered 502, %d answered 200 "
            "and %d of those had all three parts. One dashboard's failure must cancel its own "
            "calls only; the dashboards that succeed keep theirs", want_fail, n502, n200, whole);
  cr_assert_eq(cancelled, 2.0 * want_fail,
               "calls_cancelled = %.0f for %d failing dashboards with two slow siblings each "
               "(want %d): a failure cancelled calls of other dashboards", cancelled, want_fail,
               2 * want_fail);
}

Test(lab04, steady_stream) {
  static tk_resp_t r[60];
  char url[160];
  int bad = 0;
  start((const char *[]){"--fail-percent", "30", "--orders-latency-ms", "10",
                         "--user-latency-ms", "30", "--recs-latency-ms", "150", NULL});
  int ok = tk_stream(dash_url("", url, sizeof url), NULL, 60, 100.0, 8000, r);
  double total = tk_lab_stat(&lab, "dashboards_total");
  double answered = tk_lab_stat(&lab, "dashboards_answered");
  double failed = tk_lab_stat(&lab, "dashboards_failed");
  double started = tk_lab_stat(&lab, "calls_started");
  double up_calls = tk_upstream_stat(&up, "requests_total");
  for (int i = 0; i < 60; i++)
    bad += !(r[i].status == 200 && strstr(r[i].body, "\"recommendations\":{") != NULL) &&
           !(r[i].status == 502 && strcmp(r[i].body, "{\"error\":\"orders\",\"status\":500}") == 0);
  int want_fail = failing_among(60, 30);
  stop();
  cr_assert_eq(ok, 60, "only %d of a stream of 60 dashboards (100/s) got an answer", ok);
  cr_assert_eq(bad, 0, "%d answers of the stream were neither a whole 200 nor the orders 502", bad);
  cr_assert(total == 60 && answered == 60 && failed == want_fail,
            "dashboards_total %.0f, dashboards_answered %.0f, dashboards_failed %.0f; want 60, "
            "60 and %d (fail-percent 30): every dashboard answers exactly once", total, answered,
            failed, want_fail);
  cr_assert(started == 180 && up_calls == 180,
            "calls_started = %.0f and the upstream saw %.0f calls for 60 dashboards (want 180: "
            "three each, no more)", started, up_calls);
}

/* ---- C10: one answer each, under a burst; and the counters add up ---- */

Test(lab04, one_response_each) {
  static tk_resp_t r[30];
  char url[160];
  int n200 = 0, n502 = 0;
  start((const char *[]){"--fail-percent", "50", "--recs-latency-ms", "100",
                         "--user-latency-ms", "30", "--orders-latency-ms", "20", NULL});
  int ok = tk_get_many(dash_url("", url, sizeof url), 30, 10000, r);
  double total = tk_lab_stat(&lab, "dashboards_total");
  double answered = tk_lab_stat(&lab, "dashboards_answered");
  double inflight = tk_lab_stat(&lab, "inflight");
  stop();
  for (int i = 0; i < 30; i++) {
    if (r[i].status == 200) n200++;
    if (r[i].status == 502) n502++;
  }
  cr_assert_eq(ok, 30, "only %d of 30 dashboards got an HTTP answer", ok);
  cr_assert(n502 == failing_among(30, 50) && n200 + n502 == 30,
            "with fail-percent 50: %d answers 200, %d answers 502 (want %d), %d others",
            n200, n502, failing_among(30, 50), 30 - n200 - n502);
  cr_assert(total == 30 && answered == 30 && inflight == 0,
            "%.0f dashboards, %.0f answers given, %.0f requests unanswered: every dashboard "
            "must answer exactly once", total, answered, inflight);
}

Test(lab04, stats_add_up) {
  tk_resp_t r;
  int statuses[6];
  start((const char *[]){"--orders-latency-ms", "20", "--user-latency-ms", "300",
                         "--recs-latency-ms", "400", "--deadline-ms", "3000", NULL});
  for (int i = 0; i < 6; i++) {
    dashboard(i % 2 ? "?fail=1" : "?fail=0", 8000, &r);
    statuses[i] = r.status;
  }
  double abandoned = wait_stat(&up, "abandoned", 6, 0, 1000);
  double total = tk_lab_stat(&lab, "dashboards_total");
  double answered = tk_lab_stat(&lab, "dashboards_answered");
  double failed = tk_lab_stat(&lab, "dashboards_failed");
  double started = tk_lab_stat(&lab, "calls_started");
  double cancelled = tk_lab_stat(&lab, "calls_cancelled");
  double refused = tk_lab_stat(&lab, "spawn_refused");
  double up_calls = tk_upstream_stat(&up, "requests_total");
  stop();
  for (int i = 0; i < 6; i++)
    cr_assert_eq(statuses[i], i % 2 ? 502 : 200, "dashboard %d answered %d", i + 1, statuses[i]);
  cr_assert(total == 6 && answered == 6 && failed == 3,
            "after 3 good and 3 failing dashboards: dashboards_total %.0f, dashboards_answered "
            "%.0f, dashboards_failed %.0f (want 6, 6, 3)", total, answered, failed);
  cr_assert(started == 18 && up_calls == 18 && cancelled == 6 && abandoned >= 6 && refused == 0,
            "calls_started %.0f (upstream saw %.0f), calls_cancelled %.0f (upstream abandoned "
            "%.0f), spawn_refused %.0f; want 18, 18, 6, 6, 0: each failing dashboard cancels its "
            "two slow siblings, and the counters say so", started, up_calls, cancelled,
            abandoned, refused);
}

Test(lab04, flat_under_load) {
  static tk_resp_t r[20];
  double inflight[4], live[4];
  char seen[160] = "", url[160];
  start((const char *[]){"--fail-percent", "100", "--orders-latency-ms", "20",
                         "--user-latency-ms", "40", "--recs-latency-ms", "1500",
                         "--deadline-ms", "5000", NULL});
  int worst = 0;
  for (int round = 0; round < 4; round++) {
    int ok = tk_get_many(dash_url("", url, sizeof url), 20, 10000, r);
    inflight[round] = tk_lab_stat(&lab, "calls_inflight");
    live[round] = tk_lab_stat(&lab, "dashboards_live");
    size_t len = strlen(seen);
    snprintf(seen + len, sizeof seen - len, "%s%.0f/%.0f", round ? ", " : "", inflight[round],
             live[round]);
    cr_assert_eq(ok, 20, "round %d: only %d of 20 dashboards were answered", round + 1, ok);
    if (inflight[round] != 0 || live[round] != 0) worst = round + 1;
  }
  stop();
  cr_assert_eq(worst, 0,
               "upstream calls in flight / dashboards still allocated after each round of 20 "
               "failing dashboards, all answered: %s. They should be 0/0 every time; orphans "
               "pile up (and hold memory) while the load goes on", seen);
}
