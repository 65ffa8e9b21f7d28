/* harness/tests/testkit.c - the suites' own tools (harness/testkit): the open-loop stream keeps
 * its rate whatever the server does, and the lab fixtures leave a clean baseline.
 *
 * The server is build/bin/upstream (its latency and hang knobs stand in for a slow or stuck
 * service); the lab is a tiny in-file one (GET /ping answers "pong" after a timer), run through
 * the same labrun_* runtime as every lab. Times are floors and ratios, never tight ceilings.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testkit.h"

/* ---- a tiny lab: GET /ping answers "pong\n" after --delay-ms, on a timer ---- */

typedef struct ping_cfg {
  long delay_ms;
} ping_cfg_t;

typedef struct ping_lab {
  long delay_ms;
  long waiting; /* requests whose timer has not fired: /debug/stats "ping_waiting" */
} ping_lab_t;

typedef struct ping_wait {
  uv_timer_t timer;
  shell_request_t *req;
  ping_lab_t *lab;
} ping_wait_t;

static void ping_closed(uv_handle_t *h) { free(h->data); }

static void ping_fire(uv_timer_t *t) {
  ping_wait_t *w = t->data;
  w->lab->waiting--;
  shell_respond(w->req, 200, "text/plain", "pong\n", 5);
  uv_close((uv_handle_t *)t, ping_closed);
}

static void ping_handle(shell_request_t *req, void *data) {
  ping_lab_t *lab = data;
  ping_wait_t *w = malloc(sizeof *w);
  if (w == NULL || uv_timer_init(shell_request_loop(req), &w->timer) != 0) {
    free(w);
    shell_respond(req, 500, "text/plain", "no timer\n", 9);
    return;
  }
  w->req = req;
  w->lab = lab;
  w->timer.data = w;
  lab->waiting++;
  uv_timer_start(&w->timer, ping_fire, (uint64_t)lab->delay_ms, 0);
}

static void ping_stats(shell_t *shell, void *data) {
  ping_lab_t *lab = data;
  shell_stats_add(shell, "ping_waiting", (double)lab->waiting);
}

static int ping_create(void **out, shell_t *shell, const void *cfgp) {
  const ping_cfg_t *cfg = cfgp;
  ping_lab_t *lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->delay_ms = cfg->delay_ms;
  int rc = shell_route(shell, "GET", "/ping", ping_handle, lab);
  if (rc != 0) {
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, ping_stats, lab);
  *out = lab;
  return 0;
}

static void ping_destroy(void *lab) { free(lab); }

static const lab_opt_t ping_opts[] = {
    {LAB_OPT_INT, "delay-ms", "delay before the answer (ms)", offsetof(ping_cfg_t, delay_ms)},
};
static const ping_cfg_t ping_defaults = {.delay_ms = 10};
static const lab_def_t ping_def = {
    .slug = "00-ping", .variant = "test", .opts = ping_opts, .n_opts = 1,
    .config_size = sizeof(ping_cfg_t), .defaults = &ping_defaults,
    .create = ping_create, .destroy = ping_destroy,
};

/* ---- tk_stream ---- */

/* Request i is due at i/rate: the stream cannot finish before its last request is due, and the
 * due times are what start_ms reports. */
Test(testkit, stream_keeps_its_rate, .timeout = 20) {
  enum { N = 40 };
  static tk_resp_t r[N];
  tk_proc_t up;
  char url[128];
  tk_upstream_start(&up, NULL);
  snprintf(url, sizeof url, "%s/x", up.url);
  double t0 = tk_now_ms();
  int ok = tk_stream(url, NULL, N, 100.0, 5000, r); /* 40 requests, 10 ms apart: 390 ms */
  double elapsed = tk_now_ms() - t0;
  double accepted = tk_upstream_stat(&up, "connections_accepted");
  tk_upstream_stop(&up);
  cr_assert_eq(ok, N, "%d of %d streamed requests got an answer", ok, N);
  cr_expect_geq(elapsed, 390.0 - 1, "a 40-request stream at 100/s ended after %.0f ms, before "
                "its last request was due (390 ms): it sent a burst", elapsed);
  for (int i = 1; i < N; i++) {
    double gap = r[i].start_ms - r[i - 1].start_ms;
    cr_expect(fabs(gap - 10.0) < 0.01, "start_ms of requests %d and %d are %.3f ms apart, want "
              "their due times 10 ms apart", i - 1, i, gap);
    cr_expect_eq(r[i].status, 200, "request %d: status %d", i, r[i].status);
  }
  /* + 1: the /stats call above. Each request on its own connection. */
  cr_expect_eq(accepted, N + 1, "the upstream accepted %.0f connections for %d requests, want "
               "one each (+1 for /stats)", accepted, N);
}

/* Open loop: a slow server does not slow the sender. 20 requests of 300 ms at 100/s take about
 * 0.2 s + 0.3 s; a sender that waited for each answer would take 6 s. Latency counts from the
 * due time. */
Test(testkit, stream_is_open_loop, .timeout = 20) {
  enum { N = 20 };
  static tk_resp_t r[N];
  tk_proc_t up;
  char url[128];
  tk_upstream_start(&up, (const char *[]){"--latency-ms", "300", NULL});
  snprintf(url, sizeof url, "%s/slow", up.url);
  double t0 = tk_now_ms();
  int ok = tk_stream(url, NULL, N, 100.0, 10000, r);
  double elapsed = tk_now_ms() - t0;
  double peak = tk_upstream_stat(&up, "inflight_peak");
  tk_upstream_stop(&up);
  cr_assert_eq(ok, N, "%d of %d answered", ok, N);
  cr_expect_lt(elapsed, 0.5 * N * 300, "the stream took %.0f ms: it waited for answers before "
               "sending (closed loop would take %d ms)", elapsed, N * 300);
  cr_expect_geq(peak, 5, "the upstream had at most %.0f requests in flight: the sender did not "
                "keep sending while earlier ones were pending", peak);
  for (int i = 0; i < N; i++)
    cr_expect_geq(r[i].total_ms, 300.0 - 1, "request %d: %.1f ms from its due time, below the "
                  "upstream's 300 ms latency", i, r[i].total_ms);
}

/* POST with a body, on a thread of its own while the test probes; a hung server times out. */
Test(testkit, stream_post_async_and_timeout, .timeout = 20) {
  enum { N = 10 };
  static tk_resp_t r[N], h[3];
  tk_proc_t up;
  char url[128], hang[128];
  tk_upstream_start(&up, (const char *[]){"--latency-ms", "50", NULL});
  snprintf(url, sizeof url, "%s/post", up.url);
  snprintf(hang, sizeof hang, "%s/stuck?hang=1", up.url);
  tk_stream_t *s = tk_stream_start(url, "{\"event\":1}", N, 50.0, 5000, r);
  cr_assert(s != NULL, "tk_stream_start failed");
  int hung = tk_stream(hang, NULL, 3, 100.0, 300, h);
  int ok = tk_stream_wait(s);
  double total = tk_upstream_stat(&up, "requests_total");
  tk_upstream_stop(&up);
  cr_expect_eq(ok, N, "%d of %d POSTs answered", ok, N);
  for (int i = 0; i < N; i++) cr_expect_eq(r[i].status, 200, "POST %d: status %d", i, r[i].status);
  cr_expect_eq(hung, 0, "%d requests to a hanging server counted as answered", hung);
  for (int i = 0; i < 3; i++) {
    cr_expect_eq(h[i].status, 0, "a hung request has status %d, want 0", h[i].status);
    cr_expect_eq(h[i].curl_code, 28, "a hung request ended with curl code %d, want 28 (timeout)",
                 h[i].curl_code);
    cr_expect_geq(h[i].total_ms, 300.0 - 1, "a hung request gave up after %.0f ms, before its "
                  "300 ms timeout", h[i].total_ms);
  }
  cr_expect_eq(total, N + 3, "the upstream saw %.0f requests, want %d", total, N + 3);
}

/* ---- fixtures ---- */

/* A clean lab passes tk_lab_stop, and two runs in one process start from the same fd baseline. */
Test(testkit, lab_fixture_baseline, .timeout = 20) {
  static tk_resp_t r[20];
  char url[128];
  int baseline[2];
  for (int run = 0; run < 2; run++) {
    tk_lab_t lab;
    tk_lab_start(&lab, &ping_def, (const char *[]){"--delay-ms", "50", NULL});
    baseline[run] = lab.fds_baseline;
    tk_stream_t *s = tk_stream_start(tk_lab_url(&lab, "/ping", url, sizeof url), NULL, 20, 200.0,
                                     5000, r);
    cr_assert(s != NULL);
    int ok = tk_stream_wait(s);
    cr_expect_eq(ok, 20, "%d of 20 pings answered", ok);
    cr_expect_str_eq(r[19].body, "pong\n");
    cr_expect_eq(tk_lab_stat(&lab, "ping_waiting"), 0);
    tk_lab_stop(&lab, (const char *[]){"ping_waiting", NULL});
  }
  cr_expect_eq(baseline[0], baseline[1], "the fd baseline moved from %d to %d between two runs",
               baseline[0], baseline[1]);
}

/* tk_lab_stop's check that a lab's counter comes back to zero must be able to fail: a run that
 * stops while requests wait sees ping_waiting > 0. (Read directly: tk_lab_stop would fail this
 * test, which is the point of it.) */
Test(testkit, lab_counter_seen_nonzero, .timeout = 20) {
  static tk_resp_t r[5];
  char url[128];
  tk_lab_t lab;
  tk_lab_start(&lab, &ping_def, (const char *[]){"--delay-ms", "1500", NULL});
  tk_stream_t *s = tk_stream_start(tk_lab_url(&lab, "/ping", url, sizeof url), NULL, 5, 100.0,
                                   5000, r);
  cr_assert(s != NULL);
  double deadline = tk_now_ms() + 1000, waiting = 0;
  while (tk_now_ms() < deadline && waiting < 5) waiting = tk_lab_stat(&lab, "ping_waiting");
  cr_expect_eq(waiting, 5, "ping_waiting was %.0f while 5 requests waited", waiting);
  tk_stream_wait(s);
  tk_lab_stop(&lab, (const char *[]){"ping_waiting", NULL});
}

/* tk_runnable: two threads that compute are runnable (on a core or waiting for one) in nearly
 * every sample, whatever else the machine runs; two that sleep on a lock are not. */
static pthread_mutex_t rn_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int rn_stop;

static void *rn_spin(void *arg) {
  (void)arg;
  volatile unsigned long x = 0;
  while (!atomic_load(&rn_stop)) x++;
  return NULL;
}

static void *rn_wait(void *arg) {
  (void)arg;
  pthread_mutex_lock(&rn_lock);
  pthread_mutex_unlock(&rn_lock);
  return NULL;
}

Test(testkit, runnable_counts_computing_threads, .timeout = 20) {
  pthread_t t[2];
  int samples = 0;

  atomic_store(&rn_stop, 0);
  for (int i = 0; i < 2; i++) cr_assert_eq(pthread_create(&t[i], NULL, rn_spin, NULL), 0);
  tk_runnable_t *s = tk_runnable_start(2);
  cr_assert_not_null(s);
  usleep(300 * 1000);
  int two = tk_runnable_stop(s, 2, &samples);
  atomic_store(&rn_stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  cr_expect(samples >= 10 && two >= 0.9 * samples, "two spinning threads: >= 2 runnable in %d "
            "of %d samples, want nearly all", two, samples);

  pthread_mutex_lock(&rn_lock);
  for (int i = 0; i < 2; i++) cr_assert_eq(pthread_create(&t[i], NULL, rn_wait, NULL), 0);
  usleep(50 * 1000);
  s = tk_runnable_start(2);
  cr_assert_not_null(s);
  usleep(300 * 1000);
  int one = tk_runnable_stop(s, 1, &samples);
  pthread_mutex_unlock(&rn_lock);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  cr_expect(samples >= 10 && one <= 0.2 * samples, "two threads blocked on a lock: >= 1 "
            "runnable in %d of %d samples, want few", one, samples);
}
