/* bench.c - lab 11's bench: a restart under load. K requests of W ms are in flight on instance A
 * when it gets SIGTERM; a second instance B (started before, on its own port: the load balancer
 * moves to it) then takes a short open-loop load. Counted: requests in flight at the signal that
 * failed (no HTTP answer, or not 200), how long A took to exit and with which status, and what B
 * served.
 * Keys of its manifest block: args, upstream, conns; inflight (K, default 8), work_ms (W, 1000).
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int run(bench_t *b, const char *v) {
  int k = (int)bench_cfg_num(b, "inflight", 8), work_ms = (int)bench_cfg_num(b, "work_ms", 1000);
  bench_proc_t *up = bench_upstream(b, NULL);
  bench_proc_t *a = up ? bench_service(b, v, "--upstream %s", up->url) : NULL;
  bench_proc_t *bb = a ? bench_service(b, v, "--upstream %s", up->url) : NULL;
  if (!bb || k < 1 || k > 64) return -1;
  char url[256];
  bench_bg_t *bg[64];
  static volatile int done[64];
  snprintf(url, sizeof url, "%s/work?ms=%d", a->url, work_ms);
  for (int i = 0; i < k; i++) bg[i] = bench_http_bg(url, work_ms + 10000, &done[i]);
  usleep(300000); /* the calls are running: SIGTERM now */
  double t0 = now_ms();
  int status = bench_stop(b, a);
  double exit_ms = now_ms() - t0;
  int failed = 0;
  for (int i = 0; i < k; i++) {
    bench_http_t r;
    if (bg[i] == NULL || bench_http_wait(bg[i], &r) != 0 || r.status != 200) failed++;
    if (bg[i] != NULL) bench_http_free(&r);
  }
  snprintf(url, sizeof url, "%s%s", bb->url, bench_cfg(b, "path", "/work?ms=100"));
  bench_load_t l = {.url = url, .rate = 50, .conns = (int)bench_cfg_num(b, "conns", 32),
                    .duration_s = bench_quick(b) ? 1 : 3, .label = "takeover", .progress = "B"};
  bench_result_t res;
  if (bench_load(b, &l, &res) != 0) return -1;
  bench_progress_done(b, NULL);
  bench_table_t *t = bench_table(b, "restart.csv");
  bench_row_of(t, v);
  bench_set(t, "inflight_at_signal", k);
  bench_set(t, "failed", failed);
  bench_set(t, "exit_ms", exit_ms);
  bench_set(t, "exit_status", status);
  bench_set(t, "remaining_ms", work_ms - 300);
  bench_set_result(t, &res);
  return 0;
}

#define AT(v, col) bench_query(t, BENCH_LAST, col, "variant=%s", v)

static void report(bench_t *b) {
  bench_table_t *t = bench_table(b, "restart.csv");
  double grace = bench_cfg_opt(b, "args", "--ready-grace-ms", 500);
  const char *v;
  bench_say(b, "%-9s %9s %7s %8s %7s %10s", "variant", "in flight", "failed", "exit ms", "status",
            "B ok/s");
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    bench_say(b, "%-9s %9.0f %7.0f %8.0f %7.0f %10.1f", v, AT(v, "inflight_at_signal"),
              AT(v, "failed"), AT(v, "exit_ms"), AT(v, "exit_status"), AT(v, "ok_rps"));
    bench_figure(b, v, "failed_at_restart", AT(v, "failed"));
    bench_figure(b, v, "exit_ms", AT(v, "exit_ms"));
  }
  if (bench_has(b, "solution")) {
    bench_target(b, "solution requests failed among those in flight at SIGTERM",
                 AT("solution", "failed"), "==", 0, "every accepted request answered");
    bench_target(b, "solution exit after SIGTERM (ms)", AT("solution", "exit_ms"), "<=",
                 grace + AT("solution", "remaining_ms") + 100,
                 "ready grace + the longest call still running + 100 ms");
  }
  if (bench_has(b, "pitfall"))
    bench_target(b, "pitfall requests failed among those in flight", AT("pitfall", "failed"), ">=",
                 AT("pitfall", "inflight_at_signal"), "one per request in flight at the signal");
}

BENCH_MAIN(NULL, run, report)
