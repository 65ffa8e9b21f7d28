/* Lab 04 suite: do a dashboard's three calls end together (a scope), or run on as orphans?
 *
 * Built once per variant (build/test/lab04-pitfall, -solution, -exercise). Each test starts the
 * upstream as a child process and the variant in-process on its own loop thread, then talks to
 * both over real HTTP. The properties are counters (calls in flight, late callbacks, abandoned
 * calls upstream) and latency ratios of 10x or more between the failing call and its slow
 * sibling, so a correct variant passes on a busy 2-core machine.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

typedef struct env {
  tk_proc_t up;
  labrun_t *run;
  char dash[160];      /* the lab's /dashboard */
  char stats[160];     /* the lab's /debug/stats */
  char up_stats[160];  /* the upstream's /stats */
} env_t;

/* Starts the upstream and the lab; args are lab options after --upstream. */
static void env_start(env_t *e, const char *const *args) {
  const char *argv[24] = {"--upstream", NULL};
  int n = 2, rc;
  cr_assert_eq(tk_spawn(&e->up, "upstream", (const char *[]){NULL}), 0,
               "could not start build/bin/upstream (is it built?)");
  argv[1] = e->up.url;
  for (int i = 0; args[i] != NULL && n < 23; i++) argv[n++] = args[i];
  argv[n] = NULL;
  rc = labrun_start(&e->run, &LAB_DEF, argv);
  cr_assert_eq(rc, 0, "the lab did not start: labrun_start returned %d (%s)", rc, uv_strerror(rc));
  snprintf(e->dash, sizeof e->dash, "%s/dashboard", labrun_url(e->run));
  snprintf(e->stats, sizeof e->stats, "%s/debug/stats", labrun_url(e->run));
  snprintf(e->up_stats, sizeof e->up_stats, "%s/stats", e->up.url);
}

static void env_stop(env_t *e) {
  labrun_report_t report;
  int rc = labrun_stop(e->run, 5000, &report);
  tk_stop(&e->up);
  cr_assert_eq(rc, 0, "shutdown did not finish within 5 s: a request or handle is still open");
  cr_expect_eq(report.loop_close_rc, 0,
               "uv_loop_close() = %d after shutdown: %u handle(s) still open (every timer and "
               "client needs closing in lab_destroy)",
               report.loop_close_rc, report.handles_left);
}

/* Polls url's field every 10 ms until it is >= want (or <= want when below is set), at most
 * within_ms; returns the last value read. */
static double wait_stat(const char *url, const char *field, double want, int below,
                        double within_ms) {
  double end = tk_now_ms() + within_ms, v;
  for (;;) {
    v = tk_stat(url, field);
    if (!isnan(v) && (below ? v <= want : v >= want)) return v;
    if (tk_now_ms() >= end) return v;
    usleep(10 * 1000);
  }
}

static void get(const char *url, const char *query, long timeout_ms, tk_resp_t *resp) {
  char full[256];
  memset(resp, 0, sizeof *resp);
  snprintf(full, sizeof full, "%s%s", url, query);
  tk_get(full, timeout_ms, resp);
}

Test(lab04, fails_fast, .timeout = 30) {
  env_t e;
  tk_resp_t r;
  env_start(&e, (const char *[]){"--orders-latency-ms", "30", "--user-latency-ms", "60",
                                 "--recs-latency-ms", "2000", "--deadline-ms", "5000", NULL});
  get(e.dash, "?fail=1", 8000, &r);
  env_stop(&e);
  cr_assert_eq(r.status, 502, "GET /dashboard?fail=1 answered %d (%s), want 502: the orders call "
               "failed with 500 and its error is the answer", r.status, r.body);
  cr_assert_lt(r.total_ms, 1000.0,
               "the failing dashboard answered after %.0f ms; orders fails after 30 ms, the "
               "recommendations call takes 2000 ms: it waited for the slowest sibling instead of "
               "cancelling it at the first failure", r.total_ms);
}

Test(lab04, cancels_siblings, .timeout = 30) {
  env_t e;
  tk_resp_t r;
  env_start(&e, (const char *[]){"--orders-latency-ms", "30", "--user-latency-ms", "60",
                                 "--recs-latency-ms", "2000", "--deadline-ms", "5000", NULL});
  tk_post_empty(e.up_stats);
  get(e.dash, "?fail=1", 8000, &r);
  double abandoned = wait_stat(e.up_stats, "abandoned", 1, 0, 1000);
  double up_inflight = tk_stat(e.up_stats, "inflight");
  env_stop(&e);
  cr_assert(!isnan(abandoned), "could not read abandoned from the upstream's /stats");
  cr_assert_geq(abandoned, 1,
                "1 s after orders failed, the upstream had seen %.0f abandoned calls and still "
                "worked on %.0f: the 2000 ms recommendations call ran on for nobody. Cancel the "
                "live siblings at the first failure (client_cancel closes the connection)",
                abandoned, up_inflight);
}

Test(lab04, no_late_callbacks, .timeout = 30) {
  env_t e;
  tk_resp_t r;
  env_start(&e, (const char *[]){"--orders-latency-ms", "30", "--user-latency-ms", "60",
                                 "--recs-latency-ms", "300", "--deadline-ms", "5000", NULL});
  get(e.dash, "?fail=1", 8000, &r);
  /* Let any orphan come back (and, under ASan, trip over the freed request). */
  double inflight = wait_stat(e.stats, "calls_inflight", 0, 1, 2000);
  double late = tk_stat(e.stats, "late_callbacks");
  double orphan_ms = tk_stat(e.stats, "orphan_ms_total");
  env_stop(&e);
  cr_assert_eq(r.status, 502, "GET /dashboard?fail=1 answered %d, want 502", r.status);
  cr_assert(!isnan(late), "could not read late_callbacks from /debug/stats");
  cr_assert_eq(late, 0,
               "%.0f call callbacks ran after their dashboard had answered (%.0f ms of upstream "
               "work nobody read; %.0f calls still in flight): orphans. In C their callbacks "
               "reach state the request already freed. Answer only after every call has ended",
               late, orphan_ms, inflight);
}

Test(lab04, success_path, .timeout = 30) {
  env_t e;
  tk_resp_t r;
  env_start(&e, (const char *[]){"--recs-latency-ms", "200", NULL});
  get(e.dash, "?fail=0", 8000, &r);
  double cancelled = tk_stat(e.stats, "calls_cancelled");
  env_stop(&e);
  cr_assert_eq(r.status, 200, "GET /dashboard?fail=0 answered %d (%s), want 200", r.status,
               r.body);
  cr_assert(strstr(r.body, "\"user\":{\"path\":\"/user\"") != NULL &&
                strstr(r.body, "\"orders\":{\"path\":\"/orders\"") != NULL &&
                strstr(r.body, "\"recommendations\":{\"path\":\"/recommendations\"") != NULL,
            "the success answer lacks one of the three upstream bodies: %s", r.body);
  cr_assert_geq(r.total_ms, 199.0,
                "the dashboard answered after %.0f ms, before its 200 ms call could end",
                r.total_ms);
  cr_assert_eq(cancelled, 0, "%.0f calls were cancelled on the success path", cancelled);
}

Test(lab04, spawn_after_close_refused, .timeout = 30) {
  env_t e;
  tk_resp_t r;
  env_start(&e, (const char *[]){"--recs-latency-ms", "50", NULL});
  tk_post_empty(e.up_stats);
  get(e.dash, "?fail=0&late_spawn=1", 8000, &r);
  /* A fourth call, if it was started, reaches the upstream within a few ms. */
  double calls = wait_stat(e.up_stats, "requests_total", 4, 0, 300);
  double refused = tk_stat(e.stats, "spawn_refused");
  env_stop(&e);
  cr_assert_eq(r.status, 200, "GET /dashboard?fail=0&late_spawn=1 answered %d, want 200",
               r.status);
  cr_assert(refused == 1 && calls == 3,
            "after the dashboard answered, one more call was spawned into its group: "
            "spawn_refused = %.0f (want 1), the upstream saw %.0f calls (want 3). A group that "
            "has answered (a finished scope) must refuse new calls, or they outlive the request",
            refused, calls);
}

Test(lab04, deadline_cancels_all, .timeout = 30) {
  env_t e;
  tk_resp_t r;
  env_start(&e, (const char *[]){"--deadline-ms", "200", "--recs-latency-ms", "3000",
                                 "--user-latency-ms", "20", "--orders-latency-ms", "20", NULL});
  tk_post_empty(e.up_stats);
  get(e.dash, "?fail=0", 8000, &r);
  double inflight = tk_stat(e.stats, "calls_inflight");
  double abandoned = wait_stat(e.up_stats, "abandoned", 1, 0, 1000);
  env_stop(&e);
  cr_assert_eq(r.status, 504, "a dashboard past its 200 ms deadline answered %d (%s), want 504",
               r.status, r.body);
  cr_assert(r.total_ms >= 150.0 && r.total_ms < 1500.0,
            "the 200 ms deadline answered after %.0f ms", r.total_ms);
  cr_assert(inflight == 0 && abandoned >= 1,
            "after the 504, %.0f calls were still in flight and the upstream saw %.0f abandoned: "
            "the deadline answered but left the 3000 ms call running. A deadline must cancel "
            "every child, then answer", inflight, abandoned);
}

Test(lab04, one_response_each, .timeout = 30) {
  static tk_resp_t r[30];
  env_t e;
  int n200 = 0, n502 = 0;
  env_start(&e, (const char *[]){"--fail-percent", "50", "--recs-latency-ms", "100",
                                 "--user-latency-ms", "30", "--orders-latency-ms", "20", NULL});
  int ok = tk_get_many(e.dash, 30, 10000, r);
  double total = tk_stat(e.stats, "dashboards_total");
  double answered = tk_stat(e.stats, "dashboards_answered");
  double inflight = tk_stat(e.stats, "inflight");
  env_stop(&e);
  for (int i = 0; i < 30; i++) {
    if (r[i].status == 200) n200++;
    if (r[i].status == 502) n502++;
  }
  cr_assert_eq(ok, 30, "only %d of 30 dashboards got an HTTP answer", ok);
  cr_assert(n200 > 0 && n502 > 0 && n200 + n502 == 30,
            "with fail-percent 50: %d answers 200, %d answers 502, %d others (want only those "
            "two, both seen)", n200, n502, 30 - n200 - n502);
  cr_assert(total == 30 && answered == 30 && inflight == 0,
            "%.0f dashboards, %.0f answers given, %.0f requests unanswered: every dashboard "
            "must answer exactly once", total, answered, inflight);
}

Test(lab04, flat_under_load, .timeout = 30) {
  static tk_resp_t r[20];
  env_t e;
  double inflight[4], live[4];
  char seen[160] = "";
  env_start(&e, (const char *[]){"--fail-percent", "100", "--orders-latency-ms", "20",
                                 "--user-latency-ms", "40", "--recs-latency-ms", "1500",
                                 "--deadline-ms", "5000", NULL});
  int worst = 0;
  for (int round = 0; round < 4; round++) {
    int ok = tk_get_many(e.dash, 20, 10000, r);
    inflight[round] = tk_stat(e.stats, "calls_inflight");
    live[round] = tk_stat(e.stats, "dashboards_live");
    size_t len = strlen(seen);
    snprintf(seen + len, sizeof seen - len, "%s%.0f/%.0f", round ? ", " : "", inflight[round],
             live[round]);
    cr_assert_eq(ok, 20, "round %d: only %d of 20 dashboards were answered", round + 1, ok);
    if (inflight[round] != 0 || live[round] != 0) worst = round + 1;
  }
  env_stop(&e);
  cr_assert_eq(worst, 0,
               "upstream calls in flight / dashboards still allocated after each round of 20 "
               "failing dashboards, all answered: %s. They should be 0/0 every time; orphans "
               "pile up (and hold memory) while the load goes on", seen);
}

Test(lab04, client_gone_cancels_calls, .timeout = 30) {
  env_t e;
  tk_resp_t r;
  env_start(&e, (const char *[]){"--recs-latency-ms", "3000", "--deadline-ms", "5000", NULL});
  tk_post_empty(e.up_stats);
  get(e.dash, "?fail=0", 400, &r); /* the client gives up and hangs up */
  double inflight = wait_stat(e.stats, "calls_inflight", 0, 1, 1500);
  double abandoned = wait_stat(e.up_stats, "abandoned", 1, 0, 500);
  double started = tk_stat(e.stats, "dashboards_total");
  env_stop(&e);
  cr_assert_eq(r.status, 0, "the test's client should have timed out after 400 ms, got %d",
               r.status);
  cr_assert_eq(started, 1, "the dashboard request never reached the lab within 400 ms "
               "(dashboards_total %.0f): the machine is overloaded, run the suite again", started);
  cr_assert(inflight == 0 && abandoned >= 1,
            "1.5 s after the client hung up, %.0f calls were still in flight and the upstream "
            "saw %.0f abandoned: cancelling the owner must cancel its children "
            "(shell_request_on_abort, then cancel the dashboard's calls)", inflight, abandoned);
}
