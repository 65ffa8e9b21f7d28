/* Lab 06 suite: does /profile call the upstream without blocking the loop?
 *
 * The upstream runs as a child process with a fixed latency L and counts what it receives; the
 * lab variant runs in-process on its own loop thread. What is asserted are counts (calls made,
 * calls in flight at once, answers that match their request), ratios to L (a /health probe, the
 * loop lag, a stream's p90) with wide margins, and the state at stop. A blocking call misses each
 * ratio by the number of requests queued behind it, so a busy 2-core machine does not blur it.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

static tk_proc_t up;
static tk_lab_t lab;
static const char *const zero_fields[] = {"upstream_inflight", NULL};

static void teardown(void) { tk_upstream_stop(&up); }

TestSuite(lab06, .fini = teardown);

/* The upstream with latency latency_ms (plus extra flags), then the lab pointed at it. */
static void start(const char *latency_ms, const char *timeout_ms, const char *extra_flag,
                  const char *extra_value) {
  const char *up_args[] = {"--latency-ms", latency_ms, extra_flag, extra_value, NULL};
  tk_upstream_start(&up, up_args);
  const char *lab_args[] = {"--upstream", up.url, "--timeout-ms", timeout_ms, NULL};
  tk_lab_start(&lab, &LAB_DEF, lab_args);
}

static const char *profile_url(const char *user, char *out, size_t len) {
  snprintf(out, len, "%s/profile?user=%s", lab.url, user);
  return out;
}

/* The upstream's body names the id it was asked for: {"path":"/profile","id":"U",...}. */
static int body_is_for(const tk_resp_t *r, const char *user) {
  char want[96];
  snprintf(want, sizeof want, "\"id\":\"%s\"", user);
  return strstr(r->body, want) != NULL && strstr(r->body, "\"path\":\"/profile\"") != NULL;
}

/* n GETs of different URLs at the same moment, one thread each. */
typedef struct one_get {
  const char *url;
  tk_resp_t *resp;
} one_get_t;

static void *run_one_get(void *arg) {
  one_get_t *g = arg;
  tk_get(g->url, 10000, g->resp);
  return NULL;
}

static void get_all_at_once(char urls[][128], int n, tk_resp_t *resp) {
  pthread_t th[32];
  one_get_t g[32];
  cr_assert(n <= 32, "get_all_at_once: at most 32 (the suite's bug)");
  for (int i = 0; i < n; i++) {
    g[i] = (one_get_t){urls[i], &resp[i]};
    cr_assert_eq(pthread_create(&th[i], NULL, run_one_get, &g[i]), 0, "pthread_create failed");
  }
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

Test(lab06, relays_upstream_body, .timeout = 30) {
  static const char *users[] = {"ada", "Bob_2", "c-3", "x"};
  tk_resp_t r;
  char url[128];

  start("5", "2000", NULL, NULL);
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(tk_get(profile_url(users[i], url, sizeof url), 5000, &r), 0,
                 "GET /profile?user=%s got no answer", users[i]);
    cr_expect_eq(r.status, 200, "GET /profile?user=%s answered %d, want 200 (body: %s)", users[i],
                 r.status, r.body);
    cr_expect(body_is_for(&r, users[i]),
              "GET /profile?user=%s answered \"%s\": want the upstream's body for "
              "/profile?id=%s, relayed as it came", users[i], r.body, users[i]);
  }
  double total = tk_upstream_stat(&up, "requests_total");
  double ids = tk_upstream_stat(&up, "ids_seen");
  cr_expect(total == 4 && ids == 4,
            "4 requests for 4 users made %.0f upstream calls for %.0f ids, want exactly one call "
            "each", total, ids);
  tk_lab_stop(&lab, zero_fields);
}

/* 20 users at once: each answer must be its own user's, and each user costs one call. */
Test(lab06, one_call_each_own_answer, .timeout = 30) {
  static tk_resp_t resp[20];
  static char urls[20][128];
  char user[32];
  int mine = 0;

  start("100", "3000", NULL, NULL);
  for (int i = 0; i < 20; i++) {
    snprintf(user, sizeof user, "user-%02d", i);
    profile_url(user, urls[i], sizeof urls[i]);
  }
  get_all_at_once(urls, 20, resp);
  for (int i = 0; i < 20; i++) {
    snprintf(user, sizeof user, "user-%02d", i);
    if (resp[i].status == 200 && body_is_for(&resp[i], user)) mine++;
  }
  double total = tk_upstream_stat(&up, "requests_total");
  double dup = tk_upstream_stat(&up, "ids_duplicate");
  cr_expect_eq(mine, 20, "only %d of 20 concurrent requests got 200 with their own user's "
               "profile: an answer went to the wrong request (a buffer or result shared between "
               "calls?) or failed", mine);
  cr_expect(total == 20 && dup == 0, "20 concurrent requests made %.0f upstream calls (%.0f "
            "repeated ids), want exactly 20", total, dup);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab06, calls_overlap, .timeout = 30) {
  static tk_resp_t resp[20];
  char url[128];
  int ok = 0;

  start("200", "8000", NULL, NULL);
  tk_get_many(profile_url("ada", url, sizeof url), 20, 15000, resp);
  for (int i = 0; i < 20; i++) ok += resp[i].status == 200;
  double peak = tk_upstream_stat(&up, "inflight_peak");
  cr_expect_eq(ok, 20, "only %d of 20 concurrent GET /profile got 200", ok);
  cr_expect_geq(peak, 4, "20 requests waited at once, and the upstream never had more than %.0f "
                "of their calls in flight: the calls were made one after another. A blocking "
                "call (curl_easy_perform) on the loop, or a single worker, serialises them; start "
                "them without waiting (the kit's client, client_get)", peak);
  tk_lab_stop(&lab, zero_fields);
}

/* Five probes spread over a steady stream of /profile (10/s on a 300 ms upstream: more than
 * one-at-a-time calls can serve, so a blocking loop is never free while the stream lasts; a burst
 * would not do: the first probe would wait for all of it, the next ones find the loop idle). A
 * probe is GET /health (its latency) or GET /debug/stats (the loop lag's p99 over the last
 * second: one stall of the whole machine moves a maximum, not a p99). Returns the median. */
static double probe_under_load(int read_lag) {
  static tk_resp_t resp[20];
  static tk_resp_t probe[5];
  double v[5];
  char url[128], probe_url[128];

  start("300", "8000", NULL, NULL);
  tk_stream_t *s = tk_stream_start(profile_url("ada", url, sizeof url), NULL, 20, 10, 15000, resp);
  cr_assert_not_null(s, "could not start the /profile stream");
  tk_lab_url(&lab, read_lag ? "/debug/stats" : "/health", probe_url, sizeof probe_url);
  /* The probes are an open-loop stream too, one every 200 ms from 200 ms on: each is due at its
   * time whatever happened to the one before, so a probe that waits cannot push the next ones
   * past the end of the load. */
  usleep(200 * 1000);
  tk_stream(probe_url, NULL, 5, 5, 15000, probe);
  for (int i = 0; i < 5; i++) {
    v[i] = 1e9;
    if (probe[i].status != 200) continue;
    if (read_lag)
      v[i] = tk_json_number(probe[i].body, "loop_lag_p99_ms");
    else if (strcmp(probe[i].body, "ok\n") == 0)
      v[i] = probe[i].total_ms;
    if (isnan(v[i])) v[i] = 1e9;
  }
  tk_stream_wait(s);
  return tk_percentile(v, 5, 50);
}

Test(lab06, health_stays_fast, .timeout = 40) {
  double median = probe_under_load(0);
  cr_expect_lt(median, 100.0, "GET /health took %.0f ms (median of 5; want 200 \"ok\\n\" in well "
               "under 100 ms) during a stream of /profile calls on a 300 ms upstream: /health was "
               "stuck behind them. The handler blocks the loop until the upstream answers",
               median);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab06, loop_lag_stays_small, .timeout = 40) {
  double lag = probe_under_load(1);
  cr_expect_lt(lag, 100.0, "loop lag p99 %.0f ms (median of 5 readings; want < 100) during a "
               "stream of /profile calls on a 300 ms upstream: the loop was blocked for as long as "
               "a call takes. A synchronous call in a callback stops the whole loop", lag);
  tk_lab_stop(&lab, zero_fields);
}

/* A steady open-loop stream at twice what one-at-a-time calls can serve (1000/50 = 20/s). */
Test(lab06, stream_keeps_up, .timeout = 40) {
  static tk_resp_t resp[120];
  double lat[120];
  char url[128];
  int ok = 0;

  start("50", "8000", NULL, NULL);
  tk_stream(profile_url("ada", url, sizeof url), NULL, 120, 40, 15000, resp);
  for (int i = 0; i < 120; i++) {
    lat[i] = resp[i].status == 200 ? resp[i].total_ms : 1e9;
    ok += resp[i].status == 200;
  }
  double p90 = tk_percentile(lat, 120, 90);
  cr_expect_eq(ok, 120, "%d of 120 requests of a steady 40/s stream got 200", ok);
  cr_expect_lt(p90, 500.0, "a steady stream of 40 GET /profile a second on a 50 ms upstream had "
               "a p90 latency of %.0f ms (want < 500): the service serves fewer than 40/s, so "
               "every request waits behind the ones before it. One call at a time caps it at "
               "1000/50 = 20/s", p90);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab06, upstream_error_gives_502, .timeout = 30) {
  tk_resp_t r;
  char url[128];

  start("1", "2000", "--status", "500");
  tk_get(profile_url("ada", url, sizeof url), 5000, &r);
  cr_expect_eq(r.status, 502, "an upstream answering 500 gave %d, want 502", r.status);
  cr_expect(strstr(r.body, "\"status\":500") != NULL, "the 502's body \"%s\" should name the "
            "upstream's status: {\"error\":\"upstream failed\",\"status\":500}", r.body);
  double calls = tk_upstream_stat(&up, "requests_total");
  cr_expect_eq(calls, 1, "one /profile made %.0f upstream calls to a failing upstream, want "
               "exactly 1: a retry doubles the load on an upstream that is already failing", calls);
  tk_lab_stop(&lab, zero_fields);
  tk_upstream_stop(&up);

  /* Nothing listens on port 1: the call fails at connect. */
  const char *args[] = {"--upstream", "http://127.0.0.1:1", "--timeout-ms", "2000", NULL};
  tk_lab_start(&lab, &LAB_DEF, args);
  tk_get(profile_url("ada", url, sizeof url), 5000, &r);
  cr_expect_eq(r.status, 502, "an upstream that cannot be reached gave %d, want 502", r.status);
  cr_expect(strstr(r.body, "\"status\":0") != NULL, "the 502's body \"%s\" should say "
            "\"status\":0 when no answer came", r.body);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab06, upstream_timeout_gives_504, .timeout = 30) {
  tk_resp_t r;
  char url[128];

  start("600", "150", NULL, NULL);
  tk_get(profile_url("ada", url, sizeof url), 5000, &r);
  cr_expect_eq(r.status, 504, "an upstream slower (600 ms) than --timeout-ms 150 gave %d, want 504",
               r.status);
  cr_expect(strstr(r.body, "timed out") != NULL, "the 504's body \"%s\" should say the upstream "
            "timed out", r.body);
  cr_expect(r.total_ms >= 149 && r.total_ms < 450, "the 504 came after %.0f ms: want it once "
            "--timeout-ms (150 ms) is over, not before and not after the upstream's 600 ms",
            r.total_ms);
  tk_lab_stop(&lab, zero_fields);
}

/* The other side of the limit: a slow answer within --timeout-ms is a 200, not a 504. */
Test(lab06, answers_within_timeout, .timeout = 30) {
  tk_resp_t r;
  char url[128];

  start("300", "1500", NULL, NULL);
  tk_get(profile_url("ada", url, sizeof url), 5000, &r);
  cr_expect_eq(r.status, 200, "an upstream answering in 300 ms with --timeout-ms 1500 gave %d, "
               "want 200: the call's time limit must be --timeout-ms", r.status);
  cr_expect(body_is_for(&r, "ada"), "the answer \"%s\" is not the upstream's profile", r.body);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab06, bad_user_400, .timeout = 30) {
  static const char *bad[] = {"/profile", "/profile?user=", "/profile?id=ada",
                              "/profile?user=a%20b", "/profile?user=a.b", "/profile?user=%2e%2e",
                              "/profile?user=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                              "aaaaaaaaaaa"}; /* 65 */
  tk_resp_t r;
  char url[256];

  start("1", "2000", NULL, NULL);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tk_get(tk_lab_url(&lab, bad[i], url, sizeof url), 5000, &r);
    cr_expect_eq(r.status, 400, "GET %s answered %d, want 400", bad[i], r.status);
    cr_expect(strstr(r.body, "user") != NULL, "GET %s: the 400's body \"%s\" should name the "
              "parameter (user)", bad[i], r.body);
  }
  cr_expect_eq(tk_upstream_stat(&up, "requests_total"), 0, "bad requests reached the upstream: "
               "check the user before calling it");
  /* The other side of the bound: 64 characters is a valid name. */
  tk_get(tk_lab_url(&lab, "/profile?user=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    "aaaaaaaa", url, sizeof url), 5000, &r);
  cr_expect_eq(r.status, 200, "a 64-character user got %d, want 200 (1 to 64 are allowed)",
               r.status);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab06, stats_count_calls, .timeout = 30) {
  static tk_resp_t resp[8];
  char url[128];

  /* The stats are read while every call waits on a 1 s upstream: as soon as all 8 are counted
   * (a loaded machine may take a while to send them), and at the latest 700 ms in. */
  start("1000", "5000", NULL, NULL);
  double t0 = tk_now_ms();
  tk_stream_t *s = tk_stream_start(profile_url("ada", url, sizeof url), NULL, 8, 1000, 15000, resp);
  cr_assert_not_null(s, "could not start the /profile requests");
  double calls = tk_lab_stat_wait(&lab, "upstream_calls", 8, 700);
  double inflight = tk_lab_stat(&lab, "upstream_inflight");
  double at = tk_now_ms() - t0;
  tk_stream_wait(s);
  cr_expect(inflight == 8 && calls == 8, "%.0f ms into 8 concurrent /profile on a 1000 ms "
            "upstream, /debug/stats said upstream_inflight = %.0f, upstream_calls = %.0f, want 8 "
            "and 8 (every call waiting, none ended; and the stats must answer meanwhile)", at,
            inflight, calls);
  double after = tk_lab_stat(&lab, "upstream_calls");
  cr_expect_eq(after, 8, "upstream_calls = %.0f after 8 requests, want 8", after);
  tk_lab_stop(&lab, zero_fields); /* upstream_inflight back to 0 */
}

/* SIGTERM-like shutdown while calls are out: every waiting request still gets its answer. */
Test(lab06, shutdown_answers_waiting, .timeout = 30) {
  static tk_resp_t resp[10];
  char url[128];
  int ok = 0;

  start("300", "5000", NULL, NULL);
  tk_stream_t *s = tk_stream_start(profile_url("ada", url, sizeof url), NULL, 10, 1000, 15000,
                                   resp);
  cr_assert_not_null(s, "could not start the /profile requests");
  /* Stop once all 10 calls are out (at the latest 2 s in): a request the lab had not accepted yet
   * when it stopped listening is not one it owed an answer. */
  tk_lab_stat_wait(&lab, "upstream_calls", 10, 2000);
  labrun_report_t rep = {0};
  int rc = labrun_stop(lab.run, 5000, &rep); /* the stream's sockets are still open: no fd check */
  lab.run = NULL;
  tk_stream_wait(s);
  for (int i = 0; i < 10; i++) ok += resp[i].status == 200;
  cr_expect_eq(ok, 10, "only %d of 10 requests waiting at shutdown got their 200", ok);
  cr_expect(rc == 0 && rep.drained, "shutdown with 10 calls out did not drain within 5 s");
  cr_expect(rep.loop_close_rc == 0 && rep.handles_left == 0, "uv_loop_close() = %d with %u "
            "handle(s) open after a shutdown with calls out", rep.loop_close_rc, rep.handles_left);
}
