/* Lab 02 suite: does the service share a bounded pool of upstream connections, and answer each
 * request with what its own call got?
 *
 * One test per rule of lab.h. Each test starts its own upstream (a child process that counts
 * every connection it accepts and every answer it gives) with the knobs it needs, then the lab
 * variant in-process (tk_lab_start), and ends with tk_lab_stop (calls in flight back to 0,
 * clean loop, fds and heap back to where they were). The properties are counts (connections per
 * request, answers per status) and ratios (latency against the connect cost, time against
 * waves of the pool), so they hold on a noisy machine.
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
static int stats_calls; /* connections this test opened to the upstream itself (GET /stats) */

static void upstream_start(const char *const *args) {
  tk_upstream_start(&upstream, args);
  stats_calls = 0;
}

static double up_stat(const char *field) {
  stats_calls++;
  return tk_upstream_stat(&upstream, field);
}

/* Connections the upstream accepted from the lab: its counter also counts our /stats calls. */
static double accepted_from_lab(void) {
  double accepted = up_stat("connections_accepted");
  return accepted - stats_calls;
}

static void upstream_stop(void) { tk_upstream_stop(&upstream); }

TestSuite(lab02, .fini = upstream_stop, .timeout = 20);

static void lab_start(tk_lab_t *lab, const char *timeout_ms) {
  tk_lab_start(lab, &LAB_DEF, (const char *[]){"--upstream", upstream.url, "--pool", POOL_STR,
                                               "--timeout-ms", timeout_ms, NULL});
}

static const char *const IDLE[] = {"upstream_inflight", NULL};

static const char *price_url(tk_lab_t *lab, char *url, size_t len) {
  return tk_lab_url(lab, "/price?sku=sku-1", url, len);
}

/* The answer's "error" string is there (a JSON object naming what failed). */
static void expect_error_body(const tk_resp_t *r, const char *what) {
  cr_expect(strstr(r->body, "\"error\":\"") != NULL, "%s: the %d answer's body is \"%s\", want a "
            "JSON object {\"error\":\"...\"} (lab.h)", what, r->status, r->body);
}

/* ---- connections ---- */

/* 50 requests one after the other: a shared client needs one connection for all of them. */
Test(lab02, sequential_reuse) {
  tk_resp_t resp;
  tk_lab_t lab;
  char url[160];
  int ok = 0, body_ok = 0;

  upstream_start((const char *[]){"--latency-ms", "2", NULL});
  lab_start(&lab, "2000");
  price_url(&lab, url, sizeof url);
  for (int i = 0; i < 50; i++)
    if (tk_get(url, 3000, &resp) == 0 && resp.status == 200) {
      ok++;
      /* The upstream's body, relayed: it names the path it was asked for. */
      if (strstr(resp.body, "\"path\":\"/quote\"") != NULL) body_ok++;
    }
  double accepted = accepted_from_lab();
  tk_lab_stop(&lab, IDLE);
  cr_expect_eq(ok, 50, "only %d of 50 sequential GET /price got 200: look at how the handler "
               "calls the upstream and maps its answer", ok);
  cr_expect_eq(body_ok, ok, "%d of %d answers relayed the upstream's body (its JSON names "
               "\"path\":\"/quote\"): the last one was \"%s\"", body_ok, ok, resp.body);
  cr_expect(accepted <= POOL, "50 sequential requests made the upstream accept %.0f connections, "
            "want <= %d (--pool): a new client per request pays a new connection per request; "
            "create one client in lab_create and share it", accepted, POOL);
}

/* 100 requests at once: the pool bounds the connections, the rest wait for a free one. */
Test(lab02, concurrent_pool) {
  enum { N = 100 };
  static tk_resp_t resp[N];
  tk_lab_t lab;
  char url[160];
  int ok = 0;

  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start(&lab, "4000");
  int answered = tk_get_many(price_url(&lab, url, sizeof url), N, 6000, resp);
  for (int i = 0; i < N; i++)
    if (resp[i].status == 200) ok++;
  /* The peak first: a second /stats call could overlap the first one's closing connection. */
  double peak = up_stat("connections_peak");
  double accepted = accepted_from_lab();
  tk_lab_stop(&lab, IDLE);
  cr_expect(answered == N && ok == N, "100 concurrent GET /price: %d answered, %d with 200; "
            "calls beyond the pool must wait for a connection, not fail", answered, ok);
  cr_expect(accepted <= POOL, "100 concurrent requests made the upstream accept %.0f connections, "
            "want <= %d (--pool): one connection per request means no pool and no limit; give the "
            "shared client max_host_connections = pool", accepted, POOL);
  /* + 1: our own /stats connection. */
  cr_expect(peak <= POOL + 1, "the upstream had %.0f connections open at once, want <= %d "
            "(--pool)", peak - 1, POOL);
}

/* The other side of the bound: 64 requests at once over 8 connections take 8 waves of the
 * upstream's latency, not 64. */
Test(lab02, pool_used_in_parallel) {
  enum { N = 64 };
  const double latency_ms = 50;
  static tk_resp_t resp[N];
  tk_lab_t lab;
  char url[160];

  upstream_start((const char *[]){"--latency-ms", "50", NULL});
  lab_start(&lab, "8000");
  double t0 = tk_now_ms();
  int answered = tk_get_many(price_url(&lab, url, sizeof url), N, 10000, resp);
  double elapsed = tk_now_ms() - t0;
  double peak = up_stat("inflight_peak");
  tk_lab_stop(&lab, IDLE);
  double serial = N * latency_ms, waves = ceil((double)N / POOL) * latency_ms;
  cr_expect_eq(answered, N, "%d of %d concurrent requests were answered", answered, N);
  cr_expect(peak >= POOL / 2, "with %d requests waiting, the upstream never had more than %.0f "
            "in flight: the service uses fewer connections than --pool %d allows (one "
            "connection serves one request at a time)", N, peak, POOL);
  cr_expect_lt(elapsed, serial / 2, "%d concurrent requests to a %.0f ms upstream took %.0f ms "
               "(%d waves over %d connections: %.0f ms; one at a time: %.0f ms): they queued "
               "behind too few connections", N, latency_ms, elapsed, N / POOL, POOL, waves,
               serial);
}

/* With a 50 ms connect cost, only the first request may pay it: the rest reuse the connection. */
Test(lab02, connect_cost) {
  const double cost_ms = 50;
  double lat[11];
  tk_resp_t resp;
  tk_lab_t lab;
  char url[160];
  int ok = 0;

  upstream_start((const char *[]){"--latency-ms", "1", "--connect-cost-ms", "50", NULL});
  lab_start(&lab, "2000");
  price_url(&lab, url, sizeof url);
  for (int i = 0; i < 11; i++) {
    lat[i] = 1e9;
    if (tk_get(url, 3000, &resp) == 0 && resp.status == 200) {
      lat[i] = resp.total_ms;
      ok++;
    }
  }
  tk_lab_stop(&lab, IDLE);
  cr_expect_eq(ok, 11, "only %d of 11 sequential GET /price got 200", ok);
  double first = lat[0], median = tk_percentile(lat + 1, 10, 50);
  cr_expect(median < 0.5 * cost_ms, "median latency of requests 2..11 is %.1f ms with an upstream "
            "connect cost of %.0f ms (first request: %.1f ms): every request pays the handshake, "
            "so no connection is reused; share one client across requests", median, cost_ms,
            first);
}

/* A steady open-loop stream (100/s for 1.6 s) over a 200 ms connect cost: after the first few,
 * no request connects again, so latency stays near the upstream's 10 ms. The ~11 requests that
 * wait for the pool's first connections are 7% of the stream: a loaded machine that doubles the
 * slow start still leaves the p75 fast. */
Test(lab02, stream_reuses_connections) {
  enum { N = 160 };
  static tk_resp_t resp[N];
  double lat[N];
  tk_lab_t lab;
  char url[160];

  upstream_start((const char *[]){"--latency-ms", "10", "--connect-cost-ms", "200", NULL});
  lab_start(&lab, "3000");
  int answered = tk_stream(price_url(&lab, url, sizeof url), NULL, N, 100.0, 5000, resp);
  double accepted = accepted_from_lab();
  tk_lab_stop(&lab, IDLE);
  int ok = 0;
  for (int i = 0; i < N; i++) {
    lat[i] = resp[i].status == 200 ? resp[i].total_ms : 1e9;
    ok += resp[i].status == 200;
  }
  double p75 = tk_percentile(lat, N, 75);
  cr_expect(answered == N && ok == N, "a stream of %d requests: %d answered, %d with 200",
            N, answered, ok);
  cr_expect(accepted <= POOL, "a stream of %d requests made the upstream accept %.0f "
            "connections, want <= %d (--pool)", N, accepted, POOL);
  cr_expect_lt(p75, 100.0, "75%% of a steady stream's requests took up to %.0f ms with a 10 ms "
               "upstream and a 200 ms connect cost: they keep paying the connect cost, so the "
               "connections are not kept between requests", p75);
}

/* ---- answers ---- */

/* 500 from the upstream: 502 naming the status. --fail-rate: exactly the failed calls fail. */
Test(lab02, upstream_5xx_gets_502) {
  tk_resp_t resp;
  tk_lab_t lab;
  char url[160];

  upstream_start((const char *[]){"--latency-ms", "1", "--status", "500", NULL});
  lab_start(&lab, "2000");
  resp.status = 0;
  tk_get(price_url(&lab, url, sizeof url), 3000, &resp);
  tk_lab_stop(&lab, IDLE);
  cr_expect_eq(resp.status, 502, "an upstream answering 500 gave %d, want 502 (the upstream "
               "failed, not this service)", resp.status);
  expect_error_body(&resp, "upstream 500");
  cr_expect(strstr(resp.body, "\"status\":500") != NULL, "the 502's body \"%s\" does not name "
            "the upstream's status (\"status\":500)", resp.body);
}

Test(lab02, slow_upstream_gets_504) {
  const double timeout_ms = 300;
  tk_resp_t resp;
  tk_lab_t lab;
  char url[160];

  upstream_start((const char *[]){"--latency-ms", "3000", NULL});
  lab_start(&lab, "300");
  resp.status = 0;
  tk_get(price_url(&lab, url, sizeof url), 6000, &resp);
  tk_lab_stop(&lab, IDLE);
  cr_expect_eq(resp.status, 504, "an upstream slower (3 s) than --timeout-ms 300 gave %d after "
               "%.0f ms, want 504 after about 300 ms: pass cfg->timeout_ms to the call",
               resp.status, resp.total_ms);
  expect_error_body(&resp, "timeout");
  cr_expect(resp.total_ms >= timeout_ms - 5 && resp.total_ms < 3 * timeout_ms,
            "the 504 came after %.0f ms with --timeout-ms %.0f: want no sooner than the timeout "
            "and soon after it", resp.total_ms, timeout_ms);
}

/* An upstream that is down (its port refuses connections): 502, at once. */
Test(lab02, unreachable_upstream_gets_502) {
  tk_resp_t resp;
  tk_lab_t lab;
  char url[160];

  upstream_start(NULL);
  tk_upstream_stop(&upstream); /* its port is free now: connections are refused */
  lab_start(&lab, "2000");
  resp.status = 0;
  tk_get(price_url(&lab, url, sizeof url), 5000, &resp);
  tk_lab_stop(&lab, IDLE);
  cr_expect_eq(resp.status, 502, "an upstream that refuses connections gave %d after %.0f ms, "
               "want 502 (it is down, not slow: 504 is for a call that ran out of time)",
               resp.status, resp.total_ms);
  expect_error_body(&resp, "unreachable upstream");
  cr_expect_lt(resp.total_ms, 1000.0, "a refused connection took %.0f ms to answer: it fails at "
               "once, no need to wait for --timeout-ms", resp.total_ms);
}

/* A steady stream with a quarter of the calls failing: each request gets its own call's
 * outcome, every one is answered, and the counts match the upstream's exactly. */
Test(lab02, failures_stay_isolated) {
  enum { N = 80 };
  static tk_resp_t resp[N];
  tk_lab_t lab;
  char url[160];
  int ok = 0, bad = 0, other = 0;

  /* Jitter: the calls end out of order, so an answer mixed up with another's shows. */
  upstream_start((const char *[]){"--latency-ms", "30", "--jitter-ms", "20", "--fail-rate", "0.25",
                                  NULL});
  lab_start(&lab, "3000");
  int answered = tk_stream(price_url(&lab, url, sizeof url), NULL, N, 200.0, 4000, resp);
  double up_ok = up_stat("responses_2xx"), up_bad = up_stat("responses_5xx");
  tk_lab_stop(&lab, IDLE);
  for (int i = 0; i < N; i++) {
    if (resp[i].status == 200) ok++;
    else if (resp[i].status == 502) bad++;
    else other++;
  }
  cr_expect_eq(answered, N, "%d of %d requests were answered while some upstream calls failed: "
               "a failure must not take other requests down with it", answered, N);
  cr_expect(ok == up_ok && bad == up_bad && other == 0,
            "the upstream answered %.0f calls 2xx and %.0f 5xx; the service answered %d with "
            "200, %d with 502 and %d otherwise: each request must get its own call's outcome",
            up_ok, up_bad, ok, bad, other);
  cr_expect(up_bad >= N / 8, "only %.0f upstream calls failed (--fail-rate 0.25 of %d)", up_bad,
            N);
}

Test(lab02, rejects_bad_sku) {
  const char *bad[] = {"/price", "/price?sku=", "/price?sku=a%20b", "/price?sku=a/b",
                       "/price?sku=%22x", "/price?sku=a.b"};
  tk_lab_t lab;
  upstream_start(NULL);
  lab_start(&lab, "2000");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char url[256];
    tk_resp_t r;
    tk_lab_url(&lab, bad[i], url, sizeof url);
    r.status = 0;
    tk_get(url, 3000, &r);
    cr_expect_eq(r.status, 400, "GET %s answered %d, want 400 (sku: [A-Za-z0-9_-]+)",
                 bad[i], r.status);
  }
  double calls = up_stat("requests_total"); /* GET /stats is not counted there */
  tk_lab_stop(&lab, IDLE);
  cr_expect_eq(calls, 0, "the upstream got %.0f calls for rejected requests, want 0", calls);
}

/* Both sides of SKU_MAX (64): a sku one character longer must get a 400 naming sku, not be cut
 * to fit a buffer and quoted as a different sku (the upstream would be called, and answer 200). */
Test(lab02, long_sku_rejected) {
  static const int lens[] = {65, 100, 300};
  char sku[301], url[512];
  tk_resp_t r;
  tk_lab_t lab;

  upstream_start(NULL);
  lab_start(&lab, "2000");
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    memset(sku, 'k', (size_t)lens[i]);
    sku[lens[i]] = '\0';
    snprintf(url, sizeof url, "%s/price?sku=%s", lab.url, sku);
    r.status = 0;
    tk_get(url, 3000, &r);
    cr_expect_eq(r.status, 400, "GET /price?sku=<%d characters> answered %d, want 400: a sku "
                 "longer than 64 characters must be refused, not cut short to fit a buffer "
                 "(shell_query_str truncates: give it one character more than you allow)",
                 lens[i], r.status);
    cr_expect(r.status != 400 || strstr(r.body, "sku") != NULL, "GET /price?sku=<%d characters>:"
              " the 400's body \"%s\" should name the parameter (sku)", lens[i], r.body);
  }
  double calls = up_stat("requests_total");
  cr_expect_eq(calls, 0, "the upstream got %.0f calls for skus longer than 64 characters, want 0",
               calls);
  memset(sku, 'k', 64);
  sku[64] = '\0';
  snprintf(url, sizeof url, "%s/price?sku=%s", lab.url, sku);
  tk_get(url, 3000, &r);
  cr_expect_eq(r.status, 200, "GET /price?sku=<64 characters> answered %d \"%s\", want 200: 64 is "
               "the longest sku allowed, not one too many", r.status, r.body);
  double calls_64 = up_stat("requests_total") - calls;
  tk_lab_stop(&lab, IDLE);
  cr_expect_eq(calls_64, 1, "the upstream got %.0f calls for one sku of 64 characters, want 1",
               calls_64);
}

/* ---- stats and state ---- */

Test(lab02, stats_fields) {
  enum { N = 6 };
  static tk_resp_t burst[30], slow[N];
  tk_resp_t r;
  tk_lab_t lab;
  char url[160], slow_url[200];

  upstream_start((const char *[]){"--latency-ms", "2", NULL});
  lab_start(&lab, "3000");
  price_url(&lab, url, sizeof url);
  for (int i = 0; i < 20; i++) tk_get(url, 3000, &r);
  tk_get_many(url, 30, 5000, burst);
  double opened = tk_lab_stat(&lab, "upstream_connections_opened");
  double accepted = accepted_from_lab();
  double idle = tk_lab_stat(&lab, "upstream_inflight");
  tk_lab_stop(&lab, IDLE);
  tk_upstream_stop(&upstream);
  cr_expect_eq(opened, accepted, "/debug/stats upstream_connections_opened is %.0f, the upstream "
               "accepted %.0f connections from the service: the field must count connections "
               "opened (client_get_stats), not requests", opened, accepted);
  cr_expect_eq(idle, 0, "upstream_inflight is %.0f with nothing in flight", idle);

  /* Calls in flight: six to a slow upstream (a second run: the lab builds the upstream's URL). */
  upstream_start((const char *[]){"--latency-ms", "600", NULL});
  lab_start(&lab, "3000");
  tk_stream_t *s = tk_stream_start(tk_lab_url(&lab, "/price?sku=slow", slow_url, sizeof slow_url),
                                   NULL, N, 100.0, 5000, slow);
  cr_assert(s != NULL, "tk_stream_start failed");
  double deadline = tk_now_ms() + 500, inflight = 0;
  while (tk_now_ms() < deadline && inflight < N) inflight = tk_lab_stat(&lab, "upstream_inflight");
  tk_stream_wait(s);
  tk_lab_stop(&lab, IDLE);
  cr_expect_eq(inflight, N, "with %d calls waiting on a 600 ms upstream, /debug/stats said "
               "upstream_inflight = %.0f", N, inflight);
}

/* A second service in the same process (a restart, the next test) starts from nothing. */
Test(lab02, restart_starts_clean) {
  tk_resp_t r;
  char url[160];
  upstream_start((const char *[]){"--latency-ms", "2", NULL});
  for (int run = 0; run < 2; run++) {
    tk_lab_t lab;
    int ok = 0;
    lab_start(&lab, "2000");
    price_url(&lab, url, sizeof url);
    for (int i = 0; i < 5; i++) ok += tk_get(url, 3000, &r) == 0 && r.status == 200;
    tk_lab_stop(&lab, IDLE);
    cr_expect_eq(ok, 5, "run %d of the service in this process: %d of 5 requests got 200 "
                 "(state left over from the run before, in a static or a global?)", run + 1, ok);
  }
}

/* After a run every socket the lab opened is closed again (tk_lab_stop: fds back to baseline). */
Test(lab02, fds_released) {
  static tk_resp_t resp[40];
  tk_resp_t r;
  tk_lab_t lab;
  char url[160];
  upstream_start((const char *[]){"--latency-ms", "5", NULL});
  lab_start(&lab, "2000");
  price_url(&lab, url, sizeof url);
  for (int i = 0; i < 10; i++) tk_get(url, 3000, &r);
  tk_get_many(url, 40, 6000, resp);
  tk_lab_stop(&lab, IDLE);
}

/* Shutdown: every request drained, every handle closed, uv_loop_close() == 0 (tk_lab_stop). */
Test(lab02, clean_shutdown) {
  static tk_resp_t resp[40];
  tk_lab_t lab;
  char url[160];
  upstream_start((const char *[]){"--latency-ms", "5", NULL});
  lab_start(&lab, "2000");
  tk_get_many(price_url(&lab, url, sizeof url), 40, 6000, resp);
  tk_lab_stop(&lab, IDLE);
}
