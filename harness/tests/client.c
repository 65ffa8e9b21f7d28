/* harness/tests/client.c - the shared libcurl client (harness/lib/client.c) against a real upstream.
 *
 * Each test runs its own libuv loop on the test thread and an upstream child process
 * (build/bin/upstream). What must hold: connections are reused, the per-host limit holds,
 * timeouts and cancels are reported as such (and a cancel is seen upstream as abandoned),
 * destroy with transfers in flight leaks nothing and the loop closes with 0.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "client.h"
#include "testkit.h"

/* ---- fixture: one upstream per test ---- */

static tk_proc_t upstream;
static int upstream_calls; /* connections this test opened to the upstream itself (/stats) */

static void upstream_start(void) {
  const char *args[] = {"--latency-ms", "5", NULL};
  upstream_calls = 0;
  cr_assert_eq(tk_spawn(&upstream, "upstream", args), 0,
               "could not start %s/upstream --port 0: is it built?", tk_bin_dir());
}

static void upstream_stop(void) { tk_stop(&upstream); }

static double upstream_stat(const char *field) {
  char url[128];
  snprintf(url, sizeof url, "%s/stats", upstream.url);
  upstream_calls++;
  return tk_stat(url, field);
}

/* Connections the upstream accepted from the client: its counter also counts our /stats calls. */
static double upstream_accepted_from_client(void) {
  double accepted = upstream_stat("connections_accepted");
  return accepted - upstream_calls;
}

/* ---- helpers: a test loop with a deadline ---- */

typedef struct test_run {
  uv_loop_t loop;
  client_t *client;
  int done_calls;
  int ok;          /* done with status 200 */
  int cancelled;
  int timed_out;
  int in_call;     /* 1 while the test is inside a client_* call: done must not run then */
  int done_in_call;
  int target;      /* sequential test: how many GETs to chain */
  long timeout_ms;
  char url[160];
} test_run_t;

static void on_deadline(uv_timer_t *timer) { (void)timer; }

/* Runs the loop until *flag becomes non-zero or timeout_ms passes. */
static void run_until(uv_loop_t *loop, const int *flag, int want, double timeout_ms) {
  uv_timer_t tick;
  double end = tk_now_ms() + timeout_ms;

  cr_assert_eq(uv_timer_init(loop, &tick), 0);
  cr_assert_eq(uv_timer_start(&tick, on_deadline, 20, 20), 0);
  while (*flag < want && tk_now_ms() < end) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

static void run_init(test_run_t *r, const client_config_t *cfg) {
  memset(r, 0, sizeof *r);
  cr_assert_eq(uv_loop_init(&r->loop), 0);
  cr_assert_eq(client_create(&r->client, &r->loop, cfg), 0, "client_create failed");
}

/* Destroys the client, lets its close callbacks run, and closes the loop. */
static void run_close(test_run_t *r) {
  int rc;
  client_destroy(r->client);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(&r->loop);
  cr_assert_eq(rc, 0, "uv_loop_close() = %d (%s) after client_destroy: a handle was left open",
               rc, rc != 0 ? uv_strerror(rc) : "ok");
}

static void count_done(client_transfer_t *t, const client_result_t *res, void *data) {
  test_run_t *r = data;
  (void)t;
  if (r->in_call) r->done_in_call++;
  r->done_calls++;
  if (res->status == 200) r->ok++;
  if (res->cancelled) r->cancelled++;
  if (res->timed_out) r->timed_out++;
}

static void start_get(test_run_t *r, const char *url, client_done_fn done, client_transfer_t **out) {
  client_req_t req = {.url = url, .timeout_ms = r->timeout_ms, .done = done, .data = r};
  r->in_call = 1;
  cr_assert_eq(client_start(r->client, &req, out), 0, "client_start(%s) failed", url);
  r->in_call = 0;
}

/* Sequential: each done starts the next GET until target have been made. */
static void chain_done(client_transfer_t *t, const client_result_t *res, void *data) {
  test_run_t *r = data;
  count_done(t, res, data);
  if (r->done_calls < r->target) start_get(r, r->url, chain_done, NULL);
}

/* ---- tests ---- */

TestSuite(client, .init = upstream_start, .fini = upstream_stop, .timeout = 15);

Test(client, reuse, .timeout = 10) {
  test_run_t r;
  client_stats_t st;
  double accepted;

  run_init(&r, NULL);
  r.target = 20;
  r.timeout_ms = 2000;
  snprintf(r.url, sizeof r.url, "%s/quote", upstream.url);
  start_get(&r, r.url, chain_done, NULL);
  run_until(&r.loop, &r.done_calls, r.target, 8000);
  client_get_stats(r.client, &st);
  cr_expect_eq(r.ok, 20, "%d of 20 sequential GETs got 200", r.ok);
  accepted = upstream_accepted_from_client();
  cr_expect(accepted == 1, "20 sequential GETs on one client: upstream accepted %.0f connections, "
            "want 1 (the multi handle's connection cache should reuse the first)", accepted);
  cr_expect_eq(st.connections_opened, 1, "client counted %llu connections opened, want 1",
               (unsigned long long)st.connections_opened);
  cr_expect_eq(st.completed, 20, "client counted %llu completed, want 20", (unsigned long long)st.completed);
  cr_expect_eq(st.inflight, 0, "client says %u in flight after the run", st.inflight);
  run_close(&r);
}

Test(client, host_limit, .timeout = 10) {
  client_config_t cfg = {.max_host_connections = 4};
  test_run_t r;
  client_stats_t st;
  double peak, accepted;
  int i;

  run_init(&r, &cfg);
  r.timeout_ms = 5000;
  snprintf(r.url, sizeof r.url, "%s/quote?latency_ms=20", upstream.url);
  for (i = 0; i < 50; i++) start_get(&r, r.url, count_done, NULL);
  cr_expect_eq(r.done_in_call, 0, "done was called from inside client_start");
  run_until(&r.loop, &r.done_calls, 50, 8000);
  client_get_stats(r.client, &st);
  cr_expect_eq(r.ok, 50, "%d of 50 concurrent GETs got 200 (the rest should wait for a free "
               "connection, not fail)", r.ok);
  peak = upstream_stat("inflight_peak");
  accepted = upstream_accepted_from_client();
  cr_expect(peak <= 4 && peak >= 1, "50 concurrent GETs with max_host_connections 4: upstream had "
            "%.0f requests in flight at once, want <= 4 (CURLMOPT_MAX_HOST_CONNECTIONS)", peak);
  cr_expect(accepted <= 4, "upstream accepted %.0f connections, want <= 4", accepted);
  cr_expect_eq(st.peak_inflight, 50, "client peak in flight %u, want 50", st.peak_inflight);
  run_close(&r);
}

Test(client, timeout, .timeout = 10) {
  test_run_t r;
  client_stats_t st;
  double t0, took;

  run_init(&r, NULL);
  r.timeout_ms = 200;
  snprintf(r.url, sizeof r.url, "%s/quote?hang=1", upstream.url);
  t0 = tk_now_ms();
  start_get(&r, r.url, count_done, NULL);
  run_until(&r.loop, &r.done_calls, 1, 5000);
  took = tk_now_ms() - t0;
  client_get_stats(r.client, &st);
  cr_expect_eq(r.done_calls, 1, "done called %d times for one transfer, want exactly 1", r.done_calls);
  cr_expect_eq(r.timed_out, 1, "a GET that never gets an answer with timeout_ms 200 was not "
               "reported as timed_out");
  cr_expect(took >= 190 && took < 3000, "the 200 ms timeout fired after %.0f ms", took);
  cr_expect_eq(st.failed, 1, "client counted %llu failed, want 1", (unsigned long long)st.failed);
  run_close(&r);
}

typedef struct cancel_ctx {
  test_run_t *r;
  client_transfer_t *t;
  int fired;
} cancel_ctx_t;

static void on_cancel_timer(uv_timer_t *timer) {
  cancel_ctx_t *cc = timer->data;
  cc->r->in_call = 1;
  client_cancel(cc->t);
  client_cancel(cc->t); /* twice is a no-op */
  cc->r->in_call = 0;
  cc->fired = 1;
  uv_close((uv_handle_t *)timer, NULL);
}

Test(client, cancel, .timeout = 10) {
  test_run_t r;
  client_stats_t st;
  uv_timer_t timer;
  cancel_ctx_t cc = {0};
  double abandoned = 0, end;

  run_init(&r, NULL);
  r.timeout_ms = 5000;
  snprintf(r.url, sizeof r.url, "%s/quote?hang=1", upstream.url);
  start_get(&r, r.url, count_done, &cc.t);
  cc.r = &r;
  /* Cancel once the request has reached the upstream (a slow machine may take a while). */
  end = tk_now_ms() + 3000;
  while (tk_now_ms() < end && !(upstream_stat("inflight") >= 1)) {
    uv_run(&r.loop, UV_RUN_NOWAIT);
    uv_sleep(5);
  }
  cr_assert_eq(uv_timer_init(&r.loop, &timer), 0);
  timer.data = &cc;
  cr_assert_eq(uv_timer_start(&timer, on_cancel_timer, 1, 0), 0);
  run_until(&r.loop, &r.done_calls, 1, 3000);
  cr_expect(cc.fired, "the cancel timer did not fire");
  cr_expect_eq(r.done_in_call, 0, "done was called from inside client_cancel: it must come on a "
               "later loop turn");
  cr_expect_eq(r.done_calls, 1, "done called %d times after a cancel, want exactly 1", r.done_calls);
  cr_expect_eq(r.cancelled, 1, "done did not report cancelled = 1");
  client_get_stats(r.client, &st);
  cr_expect_eq(st.cancelled, 1, "client counted %llu cancelled, want 1", (unsigned long long)st.cancelled);
  /* The upstream notices the closed connection on its own loop: give it a moment. */
  end = tk_now_ms() + 2000;
  while (tk_now_ms() < end && !((abandoned = upstream_stat("abandoned")) >= 1)) uv_sleep(20);
  cr_expect(abandoned == 1, "after client_cancel the upstream counted %.0f abandoned requests, "
            "want 1: the cancel must close the connection", abandoned);
  run_close(&r);
}

Test(client, destroy_inflight, .timeout = 10) {
  test_run_t r;
  int fds_before, fds_after, i;
  double inflight = 0, abandoned = 0, end;

  /* libuv opens its process-wide signal pipe with the first loop: open it before counting. */
  cr_assert_eq(uv_loop_init(&r.loop), 0);
  cr_assert_eq(uv_loop_close(&r.loop), 0);
  fds_before = tk_fd_count();
  run_init(&r, NULL);
  r.timeout_ms = 5000;
  snprintf(r.url, sizeof r.url, "%s/quote?hang=1", upstream.url);
  for (i = 0; i < 10; i++) start_get(&r, r.url, count_done, NULL);
  /* Let the requests reach the upstream. */
  end = tk_now_ms() + 3000;
  while (tk_now_ms() < end && !((inflight = upstream_stat("inflight")) >= 10)) {
    uv_run(&r.loop, UV_RUN_NOWAIT);
    uv_sleep(5);
  }
  cr_expect(inflight >= 10, "only %.0f of 10 hanging GETs reached the upstream", inflight);
  run_close(&r);
  cr_expect_eq(r.done_calls, 0, "client_destroy called done %d times: it must drop transfers "
               "silently", r.done_calls);
  fds_after = tk_fd_count();
  cr_expect_eq(fds_after, fds_before, "fds: %d before the client, %d after client_destroy and "
               "uv_loop_close: sockets leaked", fds_before, fds_after);
  end = tk_now_ms() + 2000;
  while (tk_now_ms() < end && !((abandoned = upstream_stat("abandoned")) >= 10)) uv_sleep(20);
  cr_expect(abandoned == 10, "after client_destroy the upstream counted %.0f of 10 hanging requests "
            "abandoned: destroy must close every connection", abandoned);
}

/* A done callback that destroys its own client (what lab 02's pitfall does) must be safe. */
static void destroy_in_done(client_transfer_t *t, const client_result_t *res, void *data) {
  test_run_t *r = data;
  count_done(t, res, data);
  client_destroy(r->client);
}

Test(client, destroy_in_done, .timeout = 10) {
  test_run_t r;
  int rc, i;

  run_init(&r, NULL);
  r.timeout_ms = 2000;
  snprintf(r.url, sizeof r.url, "%s/quote", upstream.url);
  for (i = 0; i < 3; i++) start_get(&r, r.url, destroy_in_done, NULL);
  uv_run(&r.loop, UV_RUN_DEFAULT);
  cr_expect_eq(r.done_calls, 1, "after the first done destroyed the client, done ran %d times "
               "in all, want 1", r.done_calls);
  rc = uv_loop_close(&r.loop);
  cr_expect_eq(rc, 0, "uv_loop_close() = %d after a client destroyed itself in done", rc);
}

/* What done reports: a POST, an HTTP error status (a response: completed), no listener (failed). */
typedef struct result_probe {
  int calls;
  int status;
  int curl_code;
  int has_error;
  size_t body_len;
} result_probe_t;

static void probe_done(client_transfer_t *t, const client_result_t *res, void *data) {
  result_probe_t *p = data;
  (void)t;
  p->calls++;
  p->status = res->status;
  p->curl_code = res->curl_code;
  p->has_error = res->error != NULL;
  p->body_len = res->body_len;
}

Test(client, results, .timeout = 10) {
  test_run_t r;
  client_stats_t st;
  result_probe_t post = {0}, http_err = {0}, refused = {0};
  client_req_t req = {.method = "POST", .body = "{\"sku\":\"a\"}", .body_len = 11,
                      .timeout_ms = 3000, .done = probe_done};
  char url[160], closed_url[64];
  uv_tcp_t probe;
  struct sockaddr_in addr;
  int namelen = sizeof addr;

  run_init(&r, NULL);
  /* A port with no listener: bind one, note it, close it. */
  cr_assert_eq(uv_tcp_init(&r.loop, &probe), 0);
  cr_assert_eq(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  cr_assert_eq(uv_tcp_bind(&probe, (const struct sockaddr *)&addr, 0), 0);
  cr_assert_eq(uv_tcp_getsockname(&probe, (struct sockaddr *)&addr, &namelen), 0);
  snprintf(closed_url, sizeof closed_url, "http://127.0.0.1:%d/quote", ntohs(addr.sin_port));
  uv_close((uv_handle_t *)&probe, NULL);

  snprintf(url, sizeof url, "%s/orders", upstream.url);
  req.url = url;
  req.data = &post;
  cr_assert_eq(client_start(r.client, &req, NULL), 0);
  snprintf(r.url, sizeof r.url, "%s/quote?status=503", upstream.url);
  cr_assert_not_null(client_get(r.client, r.url, 3000, probe_done, &http_err));
  cr_assert_not_null(client_get(r.client, closed_url, 3000, probe_done, &refused));
  client_get_stats(r.client, &st);
  while (st.inflight > 0 && st.started == 3) {
    uv_run(&r.loop, UV_RUN_ONCE);
    client_get_stats(r.client, &st);
  }
  cr_expect(post.calls == 1 && post.status == 200 && post.body_len > 0,
            "POST: done called %d times, status %d, %zu body bytes; want once, 200, a body",
            post.calls, post.status, post.body_len);
  cr_expect(http_err.calls == 1 && http_err.status == 503 && http_err.curl_code == 0,
            "an upstream 503: status %d, curl_code %d; want 503 and CURLE_OK (a response arrived)",
            http_err.status, http_err.curl_code);
  cr_expect(refused.calls == 1 && refused.status == 0 && refused.curl_code != 0 && refused.has_error,
            "a port with no listener: status %d, curl_code %d, error %s; want 0, a CURLcode and a "
            "message", refused.status, refused.curl_code, refused.has_error ? "set" : "NULL");
  cr_expect(st.completed == 2 && st.failed == 1, "client counted %llu completed and %llu failed, "
            "want 2 and 1", (unsigned long long)st.completed, (unsigned long long)st.failed);
  run_close(&r);
}

typedef struct retry_after_probe {
  int calls;
  int status[2];
  long retry_after_ms[2];
} retry_after_probe_t;

static void retry_after_done(client_transfer_t *t, const client_result_t *res, void *data) {
  retry_after_probe_t *p = data;
  (void)t;
  if (p->calls < 2) {
    p->status[p->calls] = res->status;
    p->retry_after_ms[p->calls] = res->retry_after_ms;
  }
  p->calls++;
}

/* A 429's Retry-After reaches the lab (labs 13 and 14 wait for it); an answer without one says 0. */
Test(client, retry_after, .timeout = 10) {
  const char *args[] = {"--rate-limit", "1", "--rate-burst", "1", NULL};
  tk_proc_t limited;
  test_run_t r;
  retry_after_probe_t p = {0};
  char url[160];

  cr_assert_eq(tk_spawn(&limited, "upstream", args), 0, "could not start a rate-limited upstream");
  run_init(&r, NULL);
  snprintf(url, sizeof url, "%s/quote", limited.url);
  cr_assert_not_null(client_get(r.client, url, 3000, retry_after_done, &p));
  run_until(&r.loop, &p.calls, 1, 5000);
  cr_assert_not_null(client_get(r.client, url, 3000, retry_after_done, &p));
  run_until(&r.loop, &p.calls, 2, 5000);
  run_close(&r);
  tk_stop(&limited);
  cr_assert_eq(p.calls, 2, "done called %d times for 2 GETs", p.calls);
  cr_expect(p.status[0] == 200 && p.retry_after_ms[0] == 0,
            "the first GET (a token left): status %d, retry_after_ms %ld; want 200 and 0",
            p.status[0], p.retry_after_ms[0]);
  cr_expect(p.status[1] == 429 && p.retry_after_ms[1] >= 1000,
            "the second GET (no token): status %d, retry_after_ms %ld; want 429 and >= 1000 "
            "(the upstream's Retry-After in whole seconds)", p.status[1], p.retry_after_ms[1]);
}
