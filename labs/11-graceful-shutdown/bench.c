/* bench.c - lab 11's bench: a rolling restart under open-loop load.
 *
 * Instance A serves GET /work?ms=W (the manifest's `path`) on port P with --reuseport, and an
 * open-loop stream (`rate` requests/s, each on a new connection, as many clients behind a load
 * balancer) runs against P for the whole run. A quarter in, instance B (the "new version", same
 * variant) starts on the same port P with SO_REUSEPORT: the kernel now spreads new connections
 * over both. Halfway through, A gets SIGTERM; once A's listener closes, B gets every connection.
 * Counted per request, by its send time: answered 200, or failed (no HTTP answer: reset, empty
 * reply; or not 200). All that differs from a run without a restart is the restart, so every
 * failure is one. A's stderr says how many requests it had in flight at the signal (the runtime's
 * "draining N request(s)" line); A's exit time is measured from the signal.
 * Tables: restart.csv (one row per variant), restart-timeline.csv (per 100 ms of send time).
 * Keys of its manifest block: args, upstream, path; rate (requests/s, default 100).
 */
#include "bench.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUCKET_MS 100.0

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_until(double t_ms) {
  double left = t_ms - now_ms();
  if (left > 0) bench_sleep_ms(left);
}

/* The load, on a thread of its own so the restart cannot delay its schedule (the restart stays
 * on the bench's main thread: a child is sent SIGTERM when the thread that started it ends).
 * Open loop: request i goes at t0 + i/rate whatever happened to the ones before it. */
typedef struct load {
  const char *url;
  int n;
  double t0, rate, timeout_ms;
  bench_bg_t **bg;
  double *due; /* ms from t0 */
} load_t;

static void *load_main(void *arg) {
  load_t *l = arg;
  for (int i = 0; i < l->n; i++) {
    l->due[i] = i * 1000.0 / l->rate;
    sleep_until(l->t0 + l->due[i]);
    l->bg[i] = bench_http_bg(l->url, (long)l->timeout_ms, NULL);
  }
  return NULL;
}

/* "Terminated: draining N request(s) in flight" from A's stderr: N, or NAN. */
static double inflight_at_signal(int fd) {
  char buf[8192];
  ssize_t n = fd >= 0 ? pread(fd, buf, sizeof buf - 1, 0) : -1;
  if (fd >= 0) close(fd);
  if (n <= 0) return NAN;
  buf[n] = '\0';
  const char *p = strstr(buf, ": draining ");
  return p ? atof(p + 11) : NAN;
}

static int run(bench_t *b, const char *v) {
  int quick = bench_quick(b);
  double rate = bench_cfg_num(b, "rate", 100), run_ms = quick ? 3000 : 6000;
  int n = (int)(rate * run_ms / 1000);
  bench_proc_t *up = bench_upstream(b, NULL);
  bench_proc_t *a = up ? bench_service(b, v, "--upstream %s --reuseport", up->url) : NULL;
  if (!a || n < 1 || n > 5000) return -1;
  char url[256];
  snprintf(url, sizeof url, "%s%s", a->url, bench_cfg(b, "path", "/work?ms=300"));
  const char *ms_arg = strstr(url, "ms=");
  double work_ms = ms_arg ? atof(ms_arg + 3) : 300; /* for the requests' timeout */
  bench_bg_t **bg = calloc((size_t)n, sizeof *bg);
  double *due = calloc((size_t)n, sizeof *due);
  if (!bg || !due) {
    fprintf(stderr, "bench11: out of memory\n");
    free(bg);
    free(due);
    return -1;
  }
  load_t l = {.url = url, .n = n, .rate = rate, .timeout_ms = work_ms + 5000, .bg = bg, .due = due};
  double b_ms = run_ms / 4, sig_ms = run_ms / 2;
  pthread_t th;
  l.t0 = now_ms();
  if (pthread_create(&th, NULL, load_main, &l) != 0) {
    fprintf(stderr, "bench11: pthread_create failed\n");
    free(bg);
    free(due);
    return -1;
  }
  /* The restart: B starts on A's port (both listen: the kernel spreads new connections), then A
   * gets SIGTERM. bench_stop removes A's stderr file once A is gone: keep it open to read it. */
  sleep_until(l.t0 + b_ms);
  bench_proc_t *next = bench_service(b, v, "--upstream %s --reuseport --port %d", up->url, a->port);
  sleep_until(l.t0 + sig_ms);
  int a_err_fd = open(a->err_path, O_RDONLY);
  double sig_at = now_ms() - l.t0;
  int exit_status = bench_stop(b, a);
  double exit_at = now_ms() - l.t0;
  pthread_join(th, NULL);

  bench_table_t *tl = bench_table(b, "restart-timeline.csv");
  int nb = (int)ceil(run_ms / BUCKET_MS), sent = 0, ok = 0, fail_before = 0, fail_after = 0;
  int *b_sent = calloc((size_t)nb, sizeof *b_sent), *b_fail = calloc((size_t)nb, sizeof *b_fail);
  double longest = 0, grace_end = sig_at + bench_cfg_opt(b, "args", "--ready-grace-ms", 500);
  for (int i = 0; i < n; i++) {
    bench_http_t r = {0};
    int got = bg[i] ? bench_http_wait(bg[i], &r) : -1, k = (int)(due[i] / BUCKET_MS);
    int good = got == 0 && r.status == 200;
    sent++;
    ok += good;
    if (!good && due[i] < sig_at) fail_before++;
    else if (!good) fail_after++;
    /* The longest request A may have had to finish: any sent before its grace period ended. */
    if (good && r.total_ms > longest && due[i] < grace_end) longest = r.total_ms;
    if (b_sent && b_fail && k >= 0 && k < nb) {
      b_sent[k]++;
      b_fail[k] += !good;
    }
    if (got == 0) bench_http_free(&r);
  }
  for (int k = 0; b_sent && b_fail && k < nb; k++) {
    bench_row_of(tl, v);
    bench_set(tl, "t_s", k * BUCKET_MS / 1000);
    bench_set(tl, "sent", b_sent[k]);
    bench_set(tl, "failed", b_fail[k]);
  }
  double served_by_b = next ? bench_stat(next, "/debug/stats", "requests_total") : NAN;
  bench_table_t *t = bench_table(b, "restart.csv");
  bench_row_of(t, v);
  bench_set(t, "rate", rate);
  bench_set(t, "sent", sent);
  bench_set(t, "ok", ok);
  bench_set(t, "failed_before_sig", fail_before);
  bench_set(t, "failed_after_sig", fail_after);
  bench_set(t, "inflight_at_signal", inflight_at_signal(a_err_fd));
  bench_set(t, "b_start_s", b_ms / 1000);
  bench_set(t, "sig_s", sig_at / 1000);
  bench_set(t, "exit_ms", exit_at - sig_at);
  bench_set(t, "exit_status", exit_status);
  bench_set(t, "longest_ms", longest);
  bench_set(t, "served_by_b", served_by_b);
  bench_log(b, "%s: %d sent, %d failed before SIGTERM, %d after; A exited %.0f ms after it "
            "(status %d)",
            v, sent, fail_before, fail_after, exit_at - sig_at, exit_status);
  free(b_sent);
  free(b_fail);
  free(bg);
  free(due);
  return next ? 0 : -1;
}

#define AT(v, col) bench_query(t, BENCH_LAST, col, "variant=%s", v)

static void report(bench_t *b) {
  bench_table_t *t = bench_table(b, "restart.csv");
  double grace = bench_cfg_opt(b, "args", "--ready-grace-ms", 500);
  const char *v;
  bench_say(b, "%-9s %6s %6s %14s %13s %9s %8s %7s %8s", "variant", "sent", "ok",
            "failed<SIGTERM", "failed after", "in flight", "exit ms", "status", "B reqs");
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    bench_say(b, "%-9s %6.0f %6.0f %14.0f %13.0f %9.0f %8.0f %7.0f %8.0f", v, AT(v, "sent"),
              AT(v, "ok"), AT(v, "failed_before_sig"), AT(v, "failed_after_sig"),
              AT(v, "inflight_at_signal"), AT(v, "exit_ms"), AT(v, "exit_status"),
              AT(v, "served_by_b"));
    bench_figure(b, v, "failed_at_restart", AT(v, "failed_before_sig") + AT(v, "failed_after_sig"));
    bench_figure(b, v, "failed_before_sigterm", AT(v, "failed_before_sig"));
    bench_figure(b, v, "inflight_at_signal", AT(v, "inflight_at_signal"));
    bench_figure(b, v, "exit_ms", AT(v, "exit_ms"));
  }
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    if (strcmp(v, "pitfall") == 0) {
      bench_check(b, v, "requests in flight at SIGTERM", AT(v, "inflight_at_signal"), ">=",
                  1, "the restart must hit work in progress to show anything");
      bench_check(b, v, "requests failed at the restart",
                  AT(v, "failed_before_sig") + AT(v, "failed_after_sig"), ">=",
                  AT(v, "inflight_at_signal"), "one per request in flight at the signal");
      continue;
    }
    bench_check(b, v, "requests failed among those sent before SIGTERM", AT(v, "failed_before_sig"),
                "==", 0, "every request accepted before the signal is answered");
    bench_check(b, v, "exit after SIGTERM (ms)", AT(v, "exit_ms"), "<=",
                grace + AT(v, "longest_ms") + 100,
                "ready-grace-ms %.0f + the longest request in flight (%.0f ms) + 100 ms", grace,
                AT(v, "longest_ms"));
  }
  double sig = bench_query(t, BENCH_MAX, "sig_s", NULL);
  double start_b = bench_query(t, BENCH_MAX, "b_start_s", NULL);
  const char *vars = bench_variants(b);
  const char *gp = "labs/11-graceful-shutdown/restart.gp";
  bench_plot(b, gp, "restart", "csv='restart-timeline.csv'; variants='%s'; sig_s=%g; b_s=%g; "
             "plottitle='Rolling restart: requests that failed, by the time they were sent'",
             vars, isnan(sig) ? 0 : sig, isnan(start_b) ? 0 : start_b);
  bench_plot_text(b, gp, "csv='restart-timeline.csv'; variants='%s'; sig_s=%g; b_s=%g; "
                  "plottitle='failed requests per 100 ms of send time'", vars,
                  isnan(sig) ? 0 : sig, isnan(start_b) ? 0 : start_b);
}

BENCH_MAIN(NULL, run, report)
