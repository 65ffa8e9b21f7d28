/* Lab 01 suite: does the variant wait without blocking the loop?
 *
 * Built once per variant (build/test/lab01-pitfall, -solution, -exercise); the variant runs
 * in-process on its own loop thread, and the test talks to it over real HTTP from this thread.
 * Every threshold is a ratio to the configured delay with wide margins: a correct variant passes
 * on a busy 2-core machine, a blocking one misses by a factor of ten or more.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

#define N_CONCURRENT 20
#define DELAY_MS 100

static labrun_t *start_lab(long delay_ms) {
  char delay[32];
  labrun_t *run = NULL;
  snprintf(delay, sizeof delay, "%ld", delay_ms);
  int rc = labrun_start(&run, &LAB_DEF, (const char *[]){"--delay-ms", delay, NULL});
  cr_assert_eq(rc, 0, "the lab did not start: labrun_start returned %d (%s)", rc, uv_strerror(rc));
  return run;
}

static void stop_lab(labrun_t *run) {
  labrun_report_t report;
  int rc = labrun_stop(run, 5000, &report);
  cr_assert_eq(rc, 0, "shutdown did not finish within 5 s: a handle or request is still open");
  cr_expect_eq(report.loop_close_rc, 0,
               "uv_loop_close() = %d after shutdown: %u handle(s) still open "
               "(every uv_timer_t needs uv_close)",
               report.loop_close_rc, report.handles_left);
  cr_expect_eq(report.leaks, 0,
               "memory leaked (LeakSanitizer's report is above): free what each request "
               "allocated, in the timer's close callback");
}

static void url_for(char *out, size_t len, labrun_t *run, const char *path) {
  snprintf(out, len, "%s%s", labrun_url(run), path);
}

Test(lab01, requests_overlap, .timeout = 30) {
  static tk_resp_t resp[N_CONCURRENT];
  char url[128];
  labrun_t *run = start_lab(DELAY_MS);
  url_for(url, sizeof url, run, "/work");

  double t0 = tk_now_ms();
  int ok = tk_get_many(url, N_CONCURRENT, 10000, resp);
  double elapsed = tk_now_ms() - t0;
  stop_lab(run);

  cr_assert_eq(ok, N_CONCURRENT, "only %d of %d concurrent requests got an answer", ok,
               N_CONCURRENT);
  /* Waiting in parallel takes about one delay; waiting in turn takes N of them. */
  double serial_ms = (double)N_CONCURRENT * DELAY_MS;
  cr_assert_lt(elapsed, serial_ms / 4,
               "%d concurrent requests of %d ms each took %.0f ms in all (one after another would "
               "be %.0f ms): they did not wait in parallel. Something blocks the event loop while "
               "a request waits (a sleep in a callback?)",
               N_CONCURRENT, DELAY_MS, elapsed, serial_ms);
}

Test(lab01, loop_lag_stays_small, .timeout = 30) {
  static tk_resp_t resp[N_CONCURRENT];
  char url[128], stats[128];
  labrun_t *run = start_lab(DELAY_MS);
  url_for(url, sizeof url, run, "/work");
  url_for(stats, sizeof stats, run, "/debug/stats");

  tk_post_empty(stats); /* restart the max from here */
  tk_get_many(url, N_CONCURRENT, 10000, resp);
  double lag = tk_stat(stats, "loop_lag_max_ms");
  stop_lab(run);

  cr_assert(!isnan(lag), "could not read loop_lag_max_ms from /debug/stats");
  cr_assert_lt(lag, 2.0 * DELAY_MS,
               "loop lag %.0f ms >= %d ms while %d requests waited %d ms each: the loop was "
               "blocked. A callback that sleeps (usleep, sleep, nanosleep) or spins stops every "
               "other request; wait with a uv_timer_t instead",
               lag, 2 * DELAY_MS, N_CONCURRENT, DELAY_MS);
}

typedef struct burst {
  const char *url;
  tk_resp_t *resp;
  int n;
} burst_t;

static void *run_burst(void *arg) {
  burst_t *b = arg;
  tk_get_many(b->url, b->n, 15000, b->resp);
  return NULL;
}

Test(lab01, other_requests_not_delayed, .timeout = 30) {
  static tk_resp_t resp[10];
  tk_resp_t probe;
  char url[128], stats[128];
  labrun_t *run = start_lab(300);
  url_for(url, sizeof url, run, "/work");
  url_for(stats, sizeof stats, run, "/debug/stats");

  burst_t b = {url, resp, 10};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, run_burst, &b), 0, "pthread_create failed");
  /* Let the 10 slow requests arrive, then ask for something that needs no waiting. */
  usleep(100 * 1000);
  int rc = tk_get(stats, 10000, &probe);
  pthread_join(t, NULL);
  stop_lab(run);

  cr_assert_eq(rc, 0, "GET /debug/stats got no answer while /work requests waited");
  cr_assert_lt(probe.total_ms, 150.0,
               "GET /debug/stats took %.0f ms while 10 requests were waiting 300 ms each: a "
               "request that needs no waiting was stuck behind sleeping ones. The loop must stay "
               "free while a request waits",
               probe.total_ms);
}

Test(lab01, waits_the_full_delay, .timeout = 30) {
  static tk_resp_t resp[5];
  char url[128];
  labrun_t *run = start_lab(DELAY_MS);
  url_for(url, sizeof url, run, "/work");
  int ok = tk_get_many(url, 5, 10000, resp);
  stop_lab(run);

  cr_assert_eq(ok, 5, "only %d of 5 requests got an answer", ok);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(resp[i].status, 200, "GET /work answered %d, want 200", resp[i].status);
    cr_assert_str_eq(resp[i].body, "done\n", "GET /work answered \"%s\", want \"done\\n\"",
                     resp[i].body);
    /* 1 ms of slack: libuv timers have millisecond resolution. */
    cr_assert_geq(resp[i].total_ms, DELAY_MS - 1.0,
                  "an answer came after %.1f ms, before the %d ms delay: the wait was skipped "
                  "(the lab must still wait, just without blocking)",
                  resp[i].total_ms, DELAY_MS);
  }
}

Test(lab01, no_handle_left_behind, .timeout = 30) {
  static tk_resp_t resp[50];
  char url[128], stats[128];
  labrun_t *run = start_lab(20);
  url_for(url, sizeof url, run, "/work");
  url_for(stats, sizeof stats, run, "/debug/stats");

  double before = tk_stat(stats, "handles");
  int ok = tk_get_many(url, 50, 15000, resp);
  double after = tk_stat(stats, "handles");
  stop_lab(run); /* asserts uv_loop_close() == 0 */

  cr_assert_eq(ok, 50, "only %d of 50 requests got an answer", ok);
  cr_assert(!isnan(before) && !isnan(after), "could not read handles from /debug/stats");
  cr_assert_leq(after, before,
                "%.0f libuv handles alive after 50 answered requests, %.0f before: each request "
                "leaves a handle open (uv_close the timer in its callback)",
                after, before);
}
