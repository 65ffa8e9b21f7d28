/* Lab 01 suite: does the variant wait without blocking the loop, and wait exactly as asked?
 *
 * One test per rule of lab.h. Built once per variant (build/test/lab01-pitfall, -solution,
 * -exercise, -wrong-*); the variant runs in-process on its own loop thread (tk_lab_start), and
 * the test talks to it over real HTTP from this thread: bursts (tk_get_many), steady open-loop
 * streams (tk_stream: latency counts from each request's due time, so a stalled service cannot
 * hide) and single requests. Every threshold is a ratio to the configured delay with wide
 * margins: a right answer passes on a busy 2-core machine, a wrong one misses by a factor of
 * several. tk_lab_stop checks the state left behind (handles, fds, heap).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

#define DELAY_MS 100

/* ---- helpers ---- */

static void lab_start(tk_lab_t *lab, long delay_ms) {
  char delay[32];
  snprintf(delay, sizeof delay, "%ld", delay_ms);
  tk_lab_start(lab, &LAB_DEF, (const char *[]){"--delay-ms", delay, NULL});
}

/* The median of n single requests sent one after another; asserts each is a right answer. */
static double median_latency(tk_lab_t *lab, int n) {
  double lat[16];
  char url[128];
  tk_resp_t r;
  cr_assert(n <= 16);
  tk_lab_url(lab, "/work", url, sizeof url);
  for (int i = 0; i < n; i++) {
    /* 3 s: an answer later than that is far off anyway, and the test must not hang on it. */
    int rc = tk_get(url, 3000, &r);
    cr_assert(rc == 0 && r.status == 200, "GET /work: status %d, curl code %d after %.0f ms "
              "(no answer within 3 s?)", r.status, r.curl_code, r.total_ms);
    lat[i] = r.total_ms;
  }
  return tk_percentile(lat, n, 50);
}

/* ---- tests ---- */

/* 40 requests arrive together and wait 200 ms each: together that takes about one delay; in
 * turn 40 delays; in a pool of 4 threads 10. */
Test(lab01, requests_overlap, .timeout = 30) {
  enum { N = 40 };
  const long delay_ms = 200;
  static tk_resp_t resp[N];
  char url[128];
  tk_lab_t lab;
  lab_start(&lab, delay_ms);
  double t0 = tk_now_ms();
  int ok = tk_get_many(tk_lab_url(&lab, "/work", url, sizeof url), N, 4000, resp);
  double elapsed = tk_now_ms() - t0;
  tk_lab_stop(&lab, NULL);

  cr_assert_eq(ok, N, "only %d of %d requests sent together got an answer within 4 s (one "
               "after another they would take %ld ms): the waits do not overlap", ok, N,
               N * delay_ms);
  cr_expect_lt(elapsed, 4.0 * delay_ms,
               "%d requests of %ld ms each, sent together, took %.0f ms in all (%.1f delays; "
               "together is 1, one after another %d, a pool of 4 threads %d): they did not all "
               "wait at the same time. A waiting request must hold nothing but a timer",
               N, delay_ms, elapsed, elapsed / delay_ms, N, N / 4);
}

/* A steady stream: 60 requests at 100/s, 100 ms each, so about 10 wait at any moment. Each must be answered about one delay after it was due, from the first to the last: a service
 * that waits in turn (or in 4 threads) falls further behind with every request. */
Test(lab01, stream_keeps_up, .timeout = 30) {
  enum { N = 60 };
  const double rate = 100;
  static tk_resp_t resp[N];
  double lat[N];
  char url[128];
  tk_lab_t lab;
  lab_start(&lab, DELAY_MS);
  int ok = tk_stream(tk_lab_url(&lab, "/work", url, sizeof url), NULL, N, rate, 3000, resp);
  tk_lab_stop(&lab, NULL);

  int good = 0;
  for (int i = 0; i < N; i++) {
    lat[i] = resp[i].status == 200 ? resp[i].total_ms : 1e9;
    if (resp[i].status == 200) good++;
  }
  double last10 = 0;
  for (int i = N - 10; i < N; i++) last10 += lat[i] / 10;
  double p90 = tk_percentile(lat, N, 90);
  cr_expect_eq(ok, N, "only %d of %d requests of a steady stream (%.0f/s, %d ms each) got an "
               "answer within 3 s", ok, N, rate, DELAY_MS);
  cr_expect_eq(good, N, "%d of %d streamed requests got 200", good, N);
  cr_expect_lt(p90, 3.0 * DELAY_MS,
               "in a stream of %.0f requests/s waiting %d ms each, 90%% were answered within "
               "%.0f ms of being sent (the last 10: %.0f ms on average): the service falls "
               "behind. %.0f requests wait at any moment; all of them must wait at once (a "
               "thread or a single timer per wait is a queue)",
               rate, DELAY_MS, p90, last10, rate * DELAY_MS / 1000);
}

Test(lab01, loop_lag_stays_small, .timeout = 30) {
  enum { N = 20 };
  static tk_resp_t resp[N];
  char url[128], stats[128];
  tk_lab_t lab;
  lab_start(&lab, DELAY_MS);
  tk_lab_url(&lab, "/debug/stats", stats, sizeof stats);
  tk_post_empty(stats); /* restart the max from here */
  tk_get_many(tk_lab_url(&lab, "/work", url, sizeof url), N, 10000, resp);
  double lag = tk_lab_stat(&lab, "loop_lag_max_ms");
  tk_lab_stop(&lab, NULL);

  cr_assert_lt(lag, 2.0 * DELAY_MS,
               "loop lag %.0f ms >= %d ms while %d requests waited %d ms each: the loop was "
               "blocked. A callback that sleeps (usleep, sleep, nanosleep) or spins stops every "
               "other request; wait with a uv_timer_t instead",
               lag, 2 * DELAY_MS, N, DELAY_MS);
}

Test(lab01, other_requests_not_delayed, .timeout = 30) {
  static tk_resp_t resp[10];
  tk_resp_t probe;
  char url[128], stats[128];
  tk_lab_t lab;
  lab_start(&lab, 300);
  /* 10 slow requests, 20 ms apart; then, while they wait, one that needs no waiting. */
  tk_stream_t *s = tk_stream_start(tk_lab_url(&lab, "/work", url, sizeof url), NULL, 10, 50.0,
                                   15000, resp);
  cr_assert(s != NULL, "tk_stream_start failed");
  usleep(250 * 1000);
  int rc = tk_get(tk_lab_url(&lab, "/debug/stats", stats, sizeof stats), 10000, &probe);
  tk_stream_wait(s);
  tk_lab_stop(&lab, NULL);

  cr_assert_eq(rc, 0, "GET /debug/stats got no answer while /work requests waited");
  cr_assert_lt(probe.total_ms, 150.0,
               "GET /debug/stats took %.0f ms while 10 requests were waiting 300 ms each: a "
               "request that needs no waiting was stuck behind sleeping ones. The loop must stay "
               "free while a request waits",
               probe.total_ms);
}

Test(lab01, waits_the_full_delay, .timeout = 30) {
  enum { N = 5 };
  static tk_resp_t resp[N];
  char url[128];
  tk_lab_t lab;
  lab_start(&lab, DELAY_MS);
  int ok = tk_get_many(tk_lab_url(&lab, "/work", url, sizeof url), N, 10000, resp);
  tk_lab_stop(&lab, NULL);

  cr_assert_eq(ok, N, "only %d of %d requests got an answer", ok, N);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(resp[i].status, 200, "GET /work answered %d, want 200", resp[i].status);
    cr_assert_str_eq(resp[i].body, "done\n", "GET /work answered \"%s\", want \"done\\n\"",
                     resp[i].body);
    cr_assert(strncmp(resp[i].content_type, "text/plain", 10) == 0,
              "GET /work answered with Content-Type \"%s\", want text/plain",
              resp[i].content_type);
    /* 1 ms of slack: libuv timers have millisecond resolution. */
    cr_assert_geq(resp[i].total_ms, DELAY_MS - 1.0,
                  "an answer came after %.1f ms, before the %d ms delay: the wait was skipped "
                  "(the lab must still wait, just without blocking)",
                  resp[i].total_ms, DELAY_MS);
  }
}

/* The other side of the bound: the answer follows the delay promptly. */
Test(lab01, answers_soon_after_the_delay, .timeout = 30) {
  tk_lab_t lab;
  lab_start(&lab, DELAY_MS);
  double median = median_latency(&lab, 7);
  tk_lab_stop(&lab, NULL);
  cr_expect_lt(median, 2.0 * DELAY_MS,
               "with --delay-ms %d a single request took %.0f ms (median of 7), more than twice "
               "the delay: the wait is longer than asked (a unit mix-up? uv_timer_start takes "
               "milliseconds, usleep took microseconds)", DELAY_MS, median);
  cr_expect_geq(median, DELAY_MS - 1.0, "a single request took %.0f ms, under the delay %d ms",
                median, DELAY_MS);
}

/* The delay is the option's, not a constant: a short and a long one. */
Test(lab01, follows_the_configured_delay, .timeout = 30) {
  const long delays[] = {20, 400};
  for (int i = 0; i < 2; i++) {
    tk_lab_t lab;
    lab_start(&lab, delays[i]);
    double median = median_latency(&lab, 5);
    tk_lab_stop(&lab, NULL);
    double high = (double)delays[i] + fmax((double)delays[i], 30.0);
    cr_expect(median >= delays[i] - 1.0 && median < high,
              "with --delay-ms %ld a request took %.0f ms (median of 5), want %ld..%.0f ms: the "
              "wait must be cfg->delay_ms, whatever its value", delays[i], median, delays[i],
              high);
  }
}

Test(lab01, no_handle_left_behind, .timeout = 30) {
  enum { N = 50 };
  static tk_resp_t resp[N];
  char url[128];
  tk_lab_t lab;
  lab_start(&lab, 20);
  double before = tk_lab_stat(&lab, "handles");
  int ok = tk_get_many(tk_lab_url(&lab, "/work", url, sizeof url), N, 15000, resp);
  double after = tk_lab_stat(&lab, "handles");
  tk_lab_stop(&lab, NULL); /* asserts uv_loop_close() == 0 and no handle left */

  cr_assert_eq(ok, N, "only %d of %d requests got an answer", ok, N);
  cr_assert_leq(after, before,
                "%.0f libuv handles alive after %d answered requests, %.0f before: each request "
                "leaves a handle open (uv_close the timer in its callback)",
                after, N, before);
}

/* 800 requests in a stream, then the heap must be where it was (tk_lab_stop checks it; under
 * AddressSanitizer LeakSanitizer does). A leak of one small struct per request shows here. */
Test(lab01, no_memory_left_behind, .timeout = 30) {
  enum { N = 800 };
  static tk_resp_t resp[N];
  char url[128];
  tk_lab_t lab;
  lab_start(&lab, 5);
  int ok = tk_stream(tk_lab_url(&lab, "/work", url, sizeof url), NULL, N, 800.0, 10000, resp);
  cr_expect_eq(ok, N, "only %d of %d streamed requests got an answer", ok, N);
  tk_lab_stop(&lab, NULL);
}
