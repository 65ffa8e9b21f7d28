/* Lab 02 - the grading suite: does the service reuse its upstream connections?
 *
 * The upstream runs as a child process (build/bin/upstream) and counts every connection it
 * accepts; the lab variant runs in-process on its own loop thread. The properties hold on a
 * noisy machine because they are counts (connections per request) and a ratio (latency after
 * the first request against the connect cost), not absolute times.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "labrt.h"
#include "testkit.h"

#define POOL 8
#define POOL_STR "8"

static tk_proc_t upstream;
static int upstream_calls; /* connections this test opened to the upstream itself (/stats) */

static void upstream_start(const char *latency_ms, const char *connect_cost_ms) {
  const char *args[] = {"--latency-ms", latency_ms, "--connect-cost-ms", connect_cost_ms, NULL};
  cr_assert_eq(tk_spawn(&upstream, "upstream", args), 0,
               "could not start %s/upstream --port 0: is it built?", tk_bin_dir());
  upstream_calls = 0;
}

static double upstream_stat(const char *field) {
  char url[128];
  snprintf(url, sizeof url, "%s/stats", upstream.url);
  upstream_calls++;
  return tk_stat(url, field);
}

/* Connections the upstream accepted from the lab: its counter also counts our /stats calls. */
static double upstream_accepted_from_lab(void) {
  double accepted = upstream_stat("connections_accepted");
  return accepted - upstream_calls;
}

static labrun_t *lab_start(const char *timeout_ms) {
  labrun_t *run = NULL;
  const char *args[] = {"--upstream", upstream.url, "--pool", POOL_STR, "--timeout-ms", timeout_ms,
                        NULL};
  cr_assert_eq(labrun_start(&run, &LAB_DEF, args), 0, "the lab did not start (see stderr)");
  return run;
}

static void lab_stop(labrun_t *run) {
  labrun_report_t report;
  labrun_stop(run, 5000, &report);
}

static void price_url(labrun_t *run, char *url, size_t len) {
  snprintf(url, len, "%s/price?sku=sku-1", labrun_url(run));
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void upstream_stop(void) { tk_stop(&upstream); }

TestSuite(client_per_request, .fini = upstream_stop, .timeout = 15);

/* 50 requests one after the other: a shared client needs one connection for all of them. */
Test(client_per_request, sequential_reuse, .timeout = 10) {
  tk_resp_t resp;
  labrun_t *run;
  char url[160];
  double accepted;
  int i, ok = 0;

  upstream_start("2", "0");
  run = lab_start("2000");
  price_url(run, url, sizeof url);
  for (i = 0; i < 50; i++)
    if (tk_get(url, 3000, &resp) == 0 && resp.status == 200) ok++;
  accepted = upstream_accepted_from_lab();
  lab_stop(run);
  cr_expect_eq(ok, 50, "only %d of 50 sequential GET /price got 200: look at how the handler calls "
               "the upstream and maps its answer", ok);
  cr_expect(accepted <= POOL, "50 sequential requests made the upstream accept %.0f connections, "
            "want <= %d (--pool): a new client per request pays a new connection per request; "
            "create one client in lab_create and share it", accepted, POOL);
}

/* 100 requests at once: the pool bounds the connections, the rest wait for a free one. */
Test(client_per_request, concurrent_pool, .timeout = 10) {
  static tk_resp_t resp[100];
  labrun_t *run;
  char url[160];
  double accepted, peak;
  int i, answered, ok = 0;

  upstream_start("20", "0");
  run = lab_start("4000");
  price_url(run, url, sizeof url);
  answered = tk_get_many(url, 100, 6000, resp);
  for (i = 0; i < 100; i++)
    if (resp[i].status == 200) ok++;
  accepted = upstream_accepted_from_lab();
  peak = upstream_stat("inflight_peak");
  lab_stop(run);
  cr_expect(answered == 100 && ok == 100, "100 concurrent GET /price: %d answered, %d with 200; "
            "calls beyond the pool must wait for a connection, not fail", answered, ok);
  cr_expect(accepted <= POOL, "100 concurrent requests made the upstream accept %.0f connections, "
            "want <= %d (--pool): one connection per request means no pool and no limit; give the "
            "shared client max_host_connections = pool", accepted, POOL);
  cr_expect(peak <= POOL, "the upstream had %.0f requests in flight at once, want <= %d (--pool)",
            peak, POOL);
}

/* With a 50 ms connect cost, only the first request may pay it: the rest reuse the connection. */
Test(client_per_request, connect_cost, .timeout = 10) {
  const double cost_ms = 50;
  double lat[11], median;
  tk_resp_t resp;
  labrun_t *run;
  char url[160];
  int i, ok = 0;

  upstream_start("1", "50");
  run = lab_start("2000");
  price_url(run, url, sizeof url);
  for (i = 0; i < 11; i++) {
    lat[i] = 1e9;
    if (tk_get(url, 3000, &resp) == 0 && resp.status == 200) {
      lat[i] = resp.total_ms;
      ok++;
    }
  }
  lab_stop(run);
  cr_expect_eq(ok, 11, "only %d of 11 sequential GET /price got 200", ok);
  qsort(lat + 1, 10, sizeof lat[0], cmp_double);
  median = (lat[5] + lat[6]) / 2;
  cr_expect(median < 0.5 * cost_ms, "median latency of requests 2..11 is %.1f ms with an upstream "
            "connect cost of %.0f ms (first request: %.1f ms): every request pays the handshake, "
            "so no connection is reused; share one client across requests", median, cost_ms,
            lat[0]);
}

/* The contract's error mapping: 502 for an upstream failure, 504 for a timeout. */
Test(client_per_request, upstream_errors, .timeout = 10) {
  tk_resp_t resp;
  labrun_t *run;
  char url[160];
  const char *args[] = {"--latency-ms", "400", "--status", "500", NULL};

  cr_assert_eq(tk_spawn(&upstream, "upstream", args), 0, "could not start the upstream");
  run = lab_start("100");
  price_url(run, url, sizeof url);
  resp.status = 0;
  tk_get(url, 3000, &resp);
  cr_expect_eq(resp.status, 504, "an upstream slower than --timeout-ms 100 gave %d, want 504",
               resp.status);
  lab_stop(run);
  tk_stop(&upstream);

  args[1] = "1";
  cr_assert_eq(tk_spawn(&upstream, "upstream", args), 0, "could not start the upstream");
  run = lab_start("2000");
  price_url(run, url, sizeof url);
  resp.status = 0;
  tk_get(url, 3000, &resp);
  cr_expect_eq(resp.status, 502, "an upstream answering 500 gave %d, want 502", resp.status);
  lab_stop(run);
}

/* After the run every socket the lab opened is closed again. */
Test(client_per_request, fds_released, .timeout = 10) {
  static tk_resp_t resp[40];
  uv_loop_t warm;
  labrun_t *run;
  labrun_report_t report;
  char url[160];
  int fds_before, fds_after, i;

  upstream_start("5", "0");
  /* What stays open for the life of the process comes first: libuv's signal pipe (opened with
     the first loop) and libcurl's one-time setup. */
  cr_assert_eq(uv_loop_init(&warm), 0);
  cr_assert_eq(uv_loop_close(&warm), 0);
  tk_get(upstream.url, 2000, &resp[0]);
  fds_before = tk_fd_count();
  run = lab_start("2000");
  price_url(run, url, sizeof url);
  for (i = 0; i < 10; i++) tk_get(url, 3000, &resp[0]);
  tk_get_many(url, 40, 6000, resp);
  labrun_stop(run, 5000, &report);
  fds_after = tk_fd_count();
  cr_expect_eq(fds_after, fds_before, "the process had %d fds before the lab ran and %d after it "
               "stopped: upstream connections leaked; destroy every client you create",
               fds_before, fds_after);
}

/* Shutdown: every request drained, every handle closed, uv_loop_close() == 0. */
Test(client_per_request, clean_shutdown, .timeout = 10) {
  static tk_resp_t resp[40];
  labrun_t *run;
  labrun_report_t report;
  char url[160];

  upstream_start("5", "0");
  run = lab_start("2000");
  price_url(run, url, sizeof url);
  tk_get_many(url, 40, 6000, resp);
  memset(&report, 0, sizeof report);
  labrun_stop(run, 5000, &report);
  cr_expect(report.drained, "requests were still in flight at shutdown");
  cr_expect_eq(report.loop_close_rc, 0, "uv_loop_close() = %d at shutdown: lab_destroy left a "
               "handle open (did you client_destroy the shared client?)", report.loop_close_rc);
  cr_expect_eq(report.handles_left, 0, "%u handles were left on the loop at shutdown",
               report.handles_left);
  cr_expect_eq(report.leaks, 0, "LeakSanitizer found memory the lab never freed (report on stderr): "
               "every client_create needs its client_destroy, every calloc its free");
}
