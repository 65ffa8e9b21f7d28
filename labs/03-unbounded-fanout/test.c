/* Lab 03 suite: unbounded fan-out versus a concurrency limit.
 *
 * One test per rule of lab.h. Each test starts its own upstream (a child process, before any fd
 * limit is lowered, so it never inherits it) with the knobs it needs, then the lab variant
 * in-process (tk_lab_start); it sends batches (one, several at once, a steady stream of them)
 * and judges from the outside: the upstream's exact counters, the batch's answer, its time
 * against ceil(N/K) x latency, the test process's fds and memory (the lab runs in it).
 * tk_lab_stop then checks the lab's own counters are back to 0 and the state is clean.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static tk_proc_t upstream;

static void upstream_start(const char *const *args) { tk_upstream_start(&upstream, args); }
static void upstream_stop(void) { tk_upstream_stop(&upstream); }

TestSuite(lab03, .fini = upstream_stop, .timeout = 20);

/* What a lab that has answered every batch must show on /debug/stats. */
static const char *const AT_REST[] = {"fanout_inflight", "fanout_queued", NULL};

/* ---- helpers ---- */

/* The lab with --max-inflight k (and --item-timeout-ms timeout_ms when > 0); item fetches go to
 * the upstream's /item?QUERY&id=... */
static void lab_start(tk_lab_t *lab, long k, const char *query, long timeout_ms) {
  char up[192], karg[32], targ[32];
  snprintf(up, sizeof up, "%s/item%s%s", upstream.url, query[0] != '\0' ? "?" : "", query);
  snprintf(karg, sizeof karg, "%ld", k);
  snprintf(targ, sizeof targ, "%ld", timeout_ms > 0 ? timeout_ms : 10000);
  tk_lab_start(lab, &LAB_DEF, (const char *[]){"--upstream", up, "--max-inflight", karg,
                                               "--max-items", "5000", "--item-timeout-ms", targ,
                                               NULL});
}

static double up_stat(const char *field) { return tk_upstream_stat(&upstream, field); }

static void first_error(const tk_resp_t *r, char *out, size_t len) {
  const char *p = strstr(r->body, "\"first_error\":\"");
  size_t i = 0;
  if (p != NULL)
    for (p += 15; *p != '\0' && *p != '"' && i + 1 < len; p++) out[i++] = *p;
  out[i] = '\0';
}

/* The batch answer's field f; fails the test when it is absent. */
static double field(const tk_resp_t *r, const char *f) {
  double v = tk_json_number(r->body, f);
  cr_assert(!isnan(v), "the /batch answer has no number \"%s\" (lab.h lists the fields): %s", f,
            r->body);
  return v;
}

static const char *batch_url(tk_lab_t *lab, long n, char *url, size_t len) {
  char path[64];
  snprintf(path, sizeof path, "/batch?n=%ld", n);
  return tk_lab_url(lab, path, url, len);
}

/* GET /batch?n=N; asserts a 200 came. */
static void batch_get(tk_lab_t *lab, long n, long timeout_ms, tk_resp_t *r) {
  char url[128];
  int rc = tk_get(batch_url(lab, n, url, sizeof url), timeout_ms, r);
  cr_assert(rc == 0 && r->status == 200,
            "GET /batch?n=%ld: status %d, curl code %d after %.0f ms: the batch was not answered "
            "(in time)", n, r->status, r->curl_code, r->total_ms);
}

/* ok + err == n, and err is the sum of its kinds. */
static void expect_accounted(const tk_resp_t *r, long n, const char *context) {
  double ok = field(r, "ok"), err = field(r, "err");
  double kinds = field(r, "err_connect") + field(r, "err_timeout") + field(r, "err_http");
  cr_expect(ok + err == n, "%s: ok %.0f + err %.0f != n %ld: every item is accounted for "
            "exactly once, and the batch answers only after its last item", context, ok, err, n);
  cr_expect(kinds == err, "%s: err_connect + err_timeout + err_http = %.0f, err = %.0f", context,
            kinds, err);
}

/* ok == n, err == 0, and each item got its own answer (sum and checksum, see lab.h). */
static void expect_all_items(const tk_resp_t *r, long n, const char *context) {
  char err[200];
  first_error(r, err, sizeof err);
  double ok = field(r, "ok"), nerr = field(r, "err");
  cr_expect(ok == n && nerr == 0, "%s: %.0f of %ld items ok, %.0f errors (first: %s)", context, ok,
            n, nerr, err);
  double sum = (double)n * (n + 1) / 2, checksum = (double)n * (n + 1) * (2 * n + 1) / 6;
  cr_expect(field(r, "sum") == sum && field(r, "checksum") == checksum,
            "%s: sum %.0f (want %.0f), checksum %.0f (want %.0f): an item was counted twice, "
            "lost, or got another item's answer", context, field(r, "sum"), sum,
            field(r, "checksum"), checksum);
}

/* ---- the limit ---- */

Test(lab03, inflight_capped, .timeout = 15) {
  const long k = 8, n = 120;   /* 15 waves of 20 ms */
  tk_resp_t r;
  tk_lab_t lab;
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start(&lab, k, "", 0);
  batch_get(&lab, n, 10000, &r);
  expect_all_items(&r, n, "one batch");
  double lab_peak = field(&r, "peak_inflight"), max = field(&r, "max_inflight");
  tk_lab_stop(&lab, AT_REST);
  /* connections_peak first: a second /stats call could overlap the first one's closing socket. */
  double conns = up_stat("connections_peak"), peak = up_stat("inflight_peak");
  cr_log_info("inflight_capped: N=%ld K=%ld: upstream inflight_peak %.0f, connections_peak %.0f, "
              "lab peak_inflight %.0f", n, k, peak, conns, lab_peak);
  cr_expect(peak <= k, "the upstream had %.0f requests in flight at once from one batch of %ld "
            "items, with --max-inflight %ld: every item started at once (unbounded fan-out). "
            "Take a slot before each fetch and give it back when the fetch is done", peak, n, k);
  cr_expect(lab_peak <= k && lab_peak >= 1, "the answer says peak_inflight %.0f with "
            "--max-inflight %ld", lab_peak, k);
  cr_expect_eq(max, k, "the answer says max_inflight %.0f, --max-inflight is %ld", max, k);
  /* + 1: the test's own connection to /stats. */
  cr_expect(conns <= k + 1, "the upstream saw %.0f connections open at once, --max-inflight is "
            "%ld: each fetch in flight holds a socket, so unbounded fetches mean unbounded "
            "sockets", conns, k);
}

/* A steady stream of small batches, several in progress at any moment: K bounds them all
 * together, not each one. */
Test(lab03, limit_is_service_wide, .timeout = 20) {
  enum { B = 12 };
  const long k = 4, n = 20;
  static tk_resp_t r[B];
  char url[128];
  tk_lab_t lab;
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start(&lab, k, "", 0);
  /* 12 batches of 20, one every 25 ms: each alone takes 5 waves of 20 ms, so several overlap. */
  int answered = tk_stream(batch_url(&lab, n, url, sizeof url), NULL, B, 40.0, 10000, r);
  double stat_peak = tk_lab_stat(&lab, "fanout_inflight_peak");
  tk_lab_stop(&lab, AT_REST);
  double peak = up_stat("inflight_peak");
  cr_expect_eq(answered, B, "%d of %d streamed batches were answered", answered, B);
  for (int i = 0; i < B; i++)
    if (r[i].status == 200) expect_all_items(&r[i], n, "a stream of batches");
  cr_expect(peak <= k, "a stream of batches of %ld put %.0f requests in flight on the upstream at "
            "once, --max-inflight is %ld: the limit must hold for the whole service, not per "
            "batch (one semaphore in struct lab, shared by every batch)", n, peak, k);
  cr_expect(stat_peak <= k, "/debug/stats fanout_inflight_peak is %.0f, --max-inflight %ld",
            stat_peak, k);
}

Test(lab03, items_exactly_once, .timeout = 15) {
  const long k = 16, n = 200;
  enum { BATCHES = 3 };   /* three batches at once share the K slots */
  static tk_resp_t r[BATCHES];
  char url[128];
  tk_lab_t lab;
  /* Jitter: fetches end out of order, so an item counted with another's answer shows in the
   * checksum. */
  upstream_start((const char *[]){"--jitter-ms", "10", NULL});
  lab_start(&lab, k, "latency_ms=5", 0);
  int answered = tk_get_many(batch_url(&lab, n, url, sizeof url), BATCHES, 10000, r);
  cr_expect_eq(answered, BATCHES, "%d of %d concurrent batches were answered", answered, BATCHES);
  for (int i = 0; i < BATCHES; i++) {
    cr_expect_eq(r[i].status, 200, "batch %d: status %d (curl code %d)", i, r[i].status,
                 r[i].curl_code);
    if (r[i].status == 200) expect_all_items(&r[i], n, "three concurrent batches");
  }
  tk_lab_stop(&lab, AT_REST);
  double seen = up_stat("ids_seen"), dup = up_stat("ids_duplicate");
  cr_expect(seen == BATCHES * n && dup == 0, "the upstream saw %.0f distinct item ids (want %ld) "
            "and %.0f repeated ones: each item must be fetched exactly once", seen,
            (long)BATCHES * n, dup);
}

Test(lab03, time_follows_waves, .timeout = 15) {
  const long k = 4, n = 64, latency_ms = 40;   /* 16 waves of 40 ms */
  const double ideal_ms = ceil((double)n / k) * latency_ms, serial_ms = (double)n * latency_ms;
  tk_resp_t r;
  tk_lab_t lab;
  upstream_start(NULL);
  lab_start(&lab, k, "latency_ms=40", 0);
  batch_get(&lab, n, 10000, &r);
  expect_all_items(&r, n, "one batch");
  tk_lab_stop(&lab, AT_REST);
  double ratio = r.total_ms / ideal_ms;
  cr_log_info("time_follows_waves: N=%ld K=%ld: %.0f ms, ideal ceil(N/K) x latency %.0f ms, "
              "ratio %.2f", n, k, r.total_ms, ideal_ms, ratio);
  /* At most K at once: no faster than ceil(N/K) waves of one latency each. */
  cr_expect(ratio >= 0.7, "batch of %ld took %.0f ms = %.2fx ceil(N/K) x latency (%.0f ms): "
            "faster than waves of K=%ld means more than K fetches ran at once (unbounded "
            "fan-out finishes in about one latency, %ld ms)", n, r.total_ms, ratio, ideal_ms, k,
            latency_ms);
  /* Generous for a busy machine, but well below one at a time (N x latency). */
  cr_expect(ratio <= 3.5, "batch of %ld took %.0f ms = %.2fx ceil(N/K) x latency (%.0f ms); one "
            "at a time would take %.0f ms: are the K slots used in parallel, and does a "
            "released slot start the next item right away?", n, r.total_ms, ratio, ideal_ms,
            serial_ms);
}

/* ---- order and time ---- */

typedef struct batch_call {
  tk_lab_t *lab;
  long n;
  tk_resp_t resp;
} batch_call_t;

static void *batch_thread(void *arg) {
  batch_call_t *c = arg;
  char url[128];
  tk_get(batch_url(c->lab, c->n, url, sizeof url), 10000, &c->resp);
  return NULL;
}

/* K = 1 makes the order visible: the upstream fails exactly its 10th, 20th and 30th request
 * (--fail-rate 0.1 is deterministic), so with items started in order those are items 10, 20 and
 * 30, and the first to fail is item 10. Then a small batch that arrives while a big one waits
 * is served after it, not before. */
Test(lab03, fifo_order, .timeout = 20) {
  const long n = 30;
  tk_resp_t r;
  char err[200];
  tk_lab_t lab;
  upstream_start((const char *[]){"--fail-rate", "0.1", NULL});
  lab_start(&lab, 1, "", 0);
  tk_upstream_reset(&upstream);
  batch_get(&lab, n, 10000, &r);
  first_error(&r, err, sizeof err);
  expect_accounted(&r, n, "K=1, every 10th upstream call failing");
  cr_expect_eq(field(&r, "err"), 3, "with K=1 and the upstream failing every 10th call, %.0f of "
               "%ld items failed, want 3", field(&r, "err"), n);
  cr_expect(strncmp(err, "item 10:", 8) == 0, "with K=1 the upstream failed its 10th call; the "
            "batch's first_error is \"%s\", want \"item 10: ...\": the items did not start in "
            "order 1, 2, 3, ... (waiters must be served oldest first, FIFO)", err);
  tk_lab_stop(&lab, AT_REST);

  /* A: 40 items, K=2, 20 ms each: 20 waves, ~400 ms. B (3 items) is sent once A's first items
   * reached the upstream (a fixed head start is not one on a loaded machine: A's thread may not
   * have run yet), so B's items wait behind A's other 38. */
  tk_upstream_stop(&upstream);
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start(&lab, 2, "", 0);
  batch_call_t a = {&lab, 40, {0}}, b = {&lab, 3, {0}};
  pthread_t ta;
  double t0 = tk_now_ms();
  cr_assert_eq(pthread_create(&ta, NULL, batch_thread, &a), 0, "pthread_create failed");
  cr_assert_geq(tk_upstream_stat_wait(&upstream, "requests_total", 2, 5000), 2,
                "batch A (40 items, K=2) made no upstream call in 5 s");
  batch_thread(&b);
  double b_end = tk_now_ms() - t0;
  pthread_join(ta, NULL);
  double a_end = tk_now_ms() - t0;
  tk_lab_stop(&lab, AT_REST);
  cr_expect(a.resp.status == 200 && b.resp.status == 200, "batches: A %d, B %d", a.resp.status,
            b.resp.status);
  cr_expect(b_end >= 0.6 * a_end, "batch B (3 items) arrived once batch A (40 items, ~%.0f ms) "
            "had started, and was answered after %.0f ms: its items jumped A's queue. Waiters are "
            "served in arrival order (FIFO)", a_end, b_end);
}

/* K=2, 60 items of 50 ms: the batch takes ~1.5 s, longer than --item-timeout-ms 800, but no
 * single fetch comes near it (16x its latency: room for a loaded machine). The wait for a slot
 * is not part of an item's timeout. */
Test(lab03, timeout_counts_from_start, .timeout = 15) {
  const long n = 60;
  tk_resp_t r;
  tk_lab_t lab;
  upstream_start(NULL);
  lab_start(&lab, 2, "latency_ms=50", 800);
  batch_get(&lab, n, 10000, &r);
  tk_lab_stop(&lab, AT_REST);
  char err[200];
  first_error(&r, err, sizeof err);
  cr_expect(field(&r, "err") == 0 && field(&r, "ok") == n, "%ld fetches of 50 ms each, 2 at a "
            "time, with --item-timeout-ms 800 (the batch takes %.0f ms): %.0f failed (%.0f timed "
            "out; first: %s). Each fetch's timeout counts from when it starts, not from when the "
            "batch arrived", n, r.total_ms, field(&r, "err"), field(&r, "err_timeout"), err);
}

/* ---- failures ---- */

/* A fifth of the fetches fail (HTTP 500): the batch still finishes, the failed items are
 * counted, and their slots come back - a second batch after it runs too. */
Test(lab03, failed_items_free_their_slot, .timeout = 20) {
  const long k = 4, n = 100;
  tk_resp_t r;
  tk_lab_t lab;
  upstream_start((const char *[]){"--latency-ms", "5", "--fail-rate", "0.2", NULL});
  lab_start(&lab, k, "", 0);
  for (int round = 0; round < 2; round++) {
    char url[128];
    int rc = tk_get(batch_url(&lab, n, url, sizeof url), 4000, &r);
    cr_assert(rc == 0 && r.status == 200, "batch %d of %ld items with every 5th fetch failing: "
              "status %d after %.0f ms. A failed fetch must give its slot back like a good "
              "one, or after K=%ld failures no slot is left and every batch waits for ever",
              round + 1, n, r.status, r.total_ms, k);
    expect_accounted(&r, n, "every 5th fetch failing");
    cr_expect_eq(field(&r, "err_http"), n / 5, "batch %d: err_http %.0f, the upstream failed %ld "
                 "of its fetches", round + 1, field(&r, "err_http"), n / 5);
  }
  tk_lab_stop(&lab, AT_REST);
}

/* Each kind of failure is counted as itself. */
Test(lab03, errors_by_kind, .timeout = 20) {
  tk_resp_t r;
  tk_lab_t lab;
  char err[200];

  /* HTTP: half the calls answer 500. */
  upstream_start((const char *[]){"--fail-rate", "0.5", NULL});
  lab_start(&lab, 4, "", 0);
  batch_get(&lab, 20, 8000, &r);
  tk_lab_stop(&lab, AT_REST);
  first_error(&r, err, sizeof err);
  expect_accounted(&r, 20, "half the fetches answered 500");
  cr_expect(field(&r, "err_http") == 10 && field(&r, "err_timeout") == 0 &&
            field(&r, "err_connect") == 0, "10 of 20 fetches answered 500: err_http %.0f, "
            "err_timeout %.0f, err_connect %.0f (want 10, 0, 0)", field(&r, "err_http"),
            field(&r, "err_timeout"), field(&r, "err_connect"));
  cr_expect(err[0] != '\0', "items failed but first_error is empty");
  tk_upstream_stop(&upstream);

  /* Timeouts: the upstream takes 2 s, the items may take 150 ms. */
  upstream_start(NULL);
  lab_start(&lab, 4, "latency_ms=2000", 150);
  batch_get(&lab, 8, 8000, &r);
  tk_lab_stop(&lab, AT_REST);
  expect_accounted(&r, 8, "every fetch timing out");
  cr_expect(field(&r, "err_timeout") == 8 && field(&r, "err_http") == 0 &&
            field(&r, "err_connect") == 0, "8 fetches ran out of --item-timeout-ms 150: "
            "err_timeout %.0f, err_http %.0f, err_connect %.0f (want 8, 0, 0)",
            field(&r, "err_timeout"), field(&r, "err_http"), field(&r, "err_connect"));
  cr_expect_lt(r.total_ms, 1500.0, "8 items, K=4, each timing out after 150 ms took %.0f ms: "
               "about 2 x 150 ms expected (the timeout must apply to each fetch)", r.total_ms);
  tk_upstream_stop(&upstream);

  /* Refused: nobody listens on the upstream's port any more. */
  upstream_start(NULL);
  tk_upstream_stop(&upstream);
  lab_start(&lab, 4, "", 0);
  batch_get(&lab, 8, 8000, &r);
  tk_lab_stop(&lab, AT_REST);
  expect_accounted(&r, 8, "the upstream down");
  cr_expect(field(&r, "err_connect") == 8 && field(&r, "err_http") == 0 &&
            field(&r, "err_timeout") == 0, "8 fetches to a port that refuses connections: "
            "err_connect %.0f, err_http %.0f, err_timeout %.0f (want 8, 0, 0)",
            field(&r, "err_connect"), field(&r, "err_http"), field(&r, "err_timeout"));
}

/* The upstream is down: every item fails fast, the batch is still answered (200). */
Test(lab03, upstream_down, .timeout = 20) {
  const long n = 300;
  tk_resp_t r;
  tk_lab_t lab;
  upstream_start(NULL);
  tk_upstream_stop(&upstream);
  lab_start(&lab, 8, "", 0);
  batch_get(&lab, n, 10000, &r);
  tk_lab_stop(&lab, AT_REST);
  expect_accounted(&r, n, "the upstream down");
  cr_expect_eq(field(&r, "err"), n, "%.0f of %ld items failed with the upstream down",
               field(&r, "err"), n);
  cr_expect_lt(r.total_ms, 5000.0, "a batch of %ld to an upstream that is down took %.0f ms: "
               "refused connections fail at once", n, r.total_ms);
}

/* The client gives up after 250 ms on a batch that would take 5 s: its queued items must not
 * start. */
Test(lab03, client_gone_stops_the_batch, .timeout = 20) {
  const long k = 4, n = 400;   /* 100 waves of 50 ms */
  tk_resp_t r;
  char url[128];
  tk_lab_t lab;
  upstream_start(NULL);
  lab_start(&lab, k, "latency_ms=50", 0);
  tk_get(batch_url(&lab, n, url, sizeof url), 250, &r);   /* curl hangs up after 250 ms */
  usleep(1250 * 1000);
  double calls = up_stat("requests_total");
  cr_expect(calls <= 40, "the client hung up after 250 ms, and 1.5 s later the upstream had "
            "%.0f calls for its batch (about %ld if nobody stopped it): queued items of a batch "
            "whose client went away must not start (shell_request_on_abort)", calls,
            (long)(1500 / 50) * k);
  tk_lab_stop(&lab, AT_REST);
}

Test(lab03, rejects_bad_n, .timeout = 10) {
  const char *bad[] = {"", "?n=0", "?n=-3", "?n=abc", "?n=5001"};
  tk_lab_t lab;
  upstream_start(NULL);
  lab_start(&lab, 4, "", 0);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char path[64], url[128];
    tk_resp_t r;
    snprintf(path, sizeof path, "/batch%s", bad[i]);
    cr_expect(tk_get(tk_lab_url(&lab, path, url, sizeof url), 5000, &r) == 0 && r.status == 400,
              "GET /batch%s answered %d, want 400 (n must be 1..--max-items 5000)", bad[i],
              r.status);
  }
  tk_lab_stop(&lab, AT_REST);
  double calls = up_stat("requests_total");
  cr_expect(calls == 0, "a rejected batch must not call the upstream (it saw %.0f requests)",
            calls);
}

/* ---- stats and resources ---- */

Test(lab03, stats_at_rest, .timeout = 20) {
  const long k = 4, n = 40;
  tk_resp_t r;
  tk_lab_t lab;
  upstream_start((const char *[]){"--latency-ms", "5", "--fail-rate", "0.25", NULL});
  lab_start(&lab, k, "", 0);
  batch_get(&lab, n, 8000, &r);
  batch_get(&lab, n, 8000, &r);
  double ok = tk_lab_stat(&lab, "fanout_items_ok"), err = tk_lab_stat(&lab, "fanout_items_err");
  double batches = tk_lab_stat(&lab, "fanout_batches");
  double peak = tk_lab_stat(&lab, "fanout_inflight_peak");
  double conns = tk_lab_stat(&lab, "fanout_connections_opened");
  tk_lab_stop(&lab, AT_REST);   /* fanout_inflight and fanout_queued back to 0 */
  double up_ok = up_stat("responses_2xx"), up_bad = up_stat("responses_5xx");
  cr_expect(ok == up_ok && err == up_bad, "/debug/stats fanout_items_ok %.0f, fanout_items_err "
            "%.0f; the upstream answered %.0f 2xx and %.0f 5xx", ok, err, up_ok, up_bad);
  cr_expect_eq(batches, 2, "/debug/stats fanout_batches %.0f after 2 batches", batches);
  cr_expect(peak >= 1 && peak <= k, "/debug/stats fanout_inflight_peak %.0f with K=%ld", peak, k);
  cr_expect(conns >= 1 && conns <= 2 * n, "/debug/stats fanout_connections_opened %.0f", conns);
}

Test(lab03, survives_fd_limit, .timeout = 20) {
  const long k = 16, n = 1000;
  const rlim_t limit = 256;   /* well below n: one socket per item at once cannot fit */
  struct rlimit old, low;
  tk_resp_t r;
  tk_lab_t lab;
  upstream_start(NULL);
  lab_start(&lab, k, "latency_ms=2", 0);
  batch_get(&lab, k, 10000, &r);   /* warm up: the client now holds its K connections */
  int fds_before = tk_fd_count();
  cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0, "getrlimit(RLIMIT_NOFILE) failed");
  cr_assert((rlim_t)fds_before + 2 * k + 16 < limit,
            "the test process already has %d fds open: too many to test a limit of %lu",
            fds_before, (unsigned long)limit);
  low = old;
  if (low.rlim_cur == RLIM_INFINITY || low.rlim_cur > limit) low.rlim_cur = limit;
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0, "setrlimit(RLIMIT_NOFILE, %lu) failed",
               (unsigned long)limit);
  char url[128];
  int rc = tk_get(batch_url(&lab, n, url, sizeof url), 15000, &r);
  setrlimit(RLIMIT_NOFILE, &old);   /* before any assertion, so the rest of the test has fds */
  cr_assert(rc == 0 && r.status == 200, "GET /batch?n=%ld with RLIMIT_NOFILE %lu: status %d, curl "
            "code %d after %.0f ms", n, (unsigned long)limit, r.status, r.curl_code, r.total_ms);
  char err[200];
  first_error(&r, err, sizeof err);
  double errs = field(&r, "err");
  cr_expect(errs == 0 && field(&r, "ok") == n,
            "with the fd limit at %lu, %.0f of %ld items failed (first: %s): starting every item "
            "at once needs a socket each, and the process runs out (EMFILE). Bound the fetches "
            "in flight to --max-inflight %ld", (unsigned long)limit, errs, n, err, k);
  int fds_after = tk_fd_count();
  if (errs == 0) {   /* with errors, the message above is the one that matters */
    expect_all_items(&r, n, "fd limit 256");
    cr_expect(fds_after <= fds_before + 2, "%d fds open after the batch, %d before it: sockets "
              "outlive their fetch (the client keeps at most K=%ld idle connections)", fds_after,
              fds_before, k);
  }
  tk_lab_stop(&lab, AT_REST);
}

Test(lab03, resources_released, .timeout = 20) {
  const long k = 16, n = 2000;
  const long rss_budget_kb = 8 * 1024;   /* K transfers cost well under 1 MB; N cost ~15 KB each */
  struct rusage ru;
  tk_resp_t r;
  tk_lab_t lab;
  upstream_start(NULL);
  lab_start(&lab, k, "", 0);   /* warm up libcurl, the allocator, the loop thread */
  batch_get(&lab, k, 10000, &r);
  tk_lab_stop(&lab, AT_REST);
  cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0, "getrusage failed");
  long maxrss_before_kb = ru.ru_maxrss;

  lab_start(&lab, k, "latency_ms=1", 0);
  batch_get(&lab, n, 15000, &r);
  expect_all_items(&r, n, "one batch of 2000");
  cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0, "getrusage failed");
  long grew_kb = ru.ru_maxrss - maxrss_before_kb;
  tk_lab_stop(&lab, AT_REST);   /* fds, handles and heap back to where they were */
  /* AddressSanitizer keeps freed memory in quarantine, so peak RSS says little there. */
  if (!UNDER_ASAN)
    cr_expect(grew_kb <= rss_budget_kb, "peak memory grew by %ld KiB during one batch of %ld items "
              "(budget %ld KiB with K=%ld): each started transfer costs a curl handle, buffers "
              "and a socket; bound how many exist at once (libcurl's connection caps only "
              "queue transfers that already exist)", grew_kb, n, rss_budget_kb, k);
  double peak = up_stat("inflight_peak");
  cr_expect(peak <= k, "the upstream had %.0f requests in flight at once, --max-inflight is %ld",
            peak, k);
}
