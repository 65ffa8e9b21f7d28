/* Lab 03 suite: unbounded fan-out versus a concurrency limit.
 *
 * Each test starts its own upstream (a child process, before any fd limit is lowered, so it
 * never inherits it) and the lab variant in-process, sends GET /batch?n=N and judges the limit
 * from the outside: the upstream's counters, the batch's time against ceil(N/K) x latency, the
 * test process's fds and memory (the lab runs in it). Passes on the solution, fails on the
 * pitfall (which starts all N fetches at once).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
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


#define LATENCY_MS 20   /* the upstream's default latency, per item */

static tk_proc_t upstream;
/* The lab keeps pointers into its arguments: they live here, for the whole test. */
static char lab_upstream_arg[192], lab_k_arg[32];

static void upstream_start(void) {
  const char *args[] = {"--latency-ms", "20", NULL};
  cr_assert_eq(tk_spawn(&upstream, "upstream", args), 0,
               "could not start build/bin/upstream (is it built? see the message above)");
}

static void upstream_stop(void) { tk_stop(&upstream); }

TestSuite(fanout, .init = upstream_start, .fini = upstream_stop, .timeout = 20);

/* ---- helpers ---- */

/* The lab with --max-inflight k; item fetches go to the upstream's /item?QUERY&id=... */
static labrun_t *lab_start(long k, const char *query) {
  labrun_t *run = NULL;
  snprintf(lab_upstream_arg, sizeof lab_upstream_arg, "%s/item%s%s", upstream.url,
           query[0] != '\0' ? "?" : "", query);
  snprintf(lab_k_arg, sizeof lab_k_arg, "%ld", k);
  const char *args[] = {"--upstream", lab_upstream_arg, "--max-inflight", lab_k_arg,
                        "--max-items", "5000", NULL};
  int rc = labrun_start(&run, &LAB_DEF, args);
  cr_assert_eq(rc, 0, "labrun_start failed (%d): lab_create returned an error (see stderr)", rc);
  return run;
}

static void lab_stop_clean(labrun_t *run) {
  labrun_report_t rep;
  int rc = labrun_stop(run, 5000, &rep);
  cr_assert_eq(rc, 0, "the lab did not shut down within 5 s (rc %d): a batch never answered, "
               "or a handle keeps the loop alive", rc);
  cr_assert(rep.drained, "a batch was still unanswered when the lab shut down");
  cr_assert_eq(rep.handles_left, 0, "%u handle(s) still open after lab_destroy: close the client "
               "(client_destroy) and every handle the lab opened", rep.handles_left);
  cr_assert_eq(rep.loop_close_rc, 0, "uv_loop_close() returned %d after lab_destroy: a handle "
               "was never closed", rep.loop_close_rc);
}

static double up_stat(const char *field) {
  char url[96];
  snprintf(url, sizeof url, "%s/stats", upstream.url);
  double v = tk_stat(url, field);
  cr_assert(!isnan(v), "the upstream's /stats has no number %s", field);
  return v;
}

static void first_error(const tk_resp_t *r, char *out, size_t len) {
  const char *p = strstr(r->body, "\"first_error\":\"");
  size_t i = 0;
  if (p != NULL)
    for (p += 15; *p != '\0' && *p != '"' && i + 1 < len; p++) out[i++] = *p;
  out[i] = '\0';
}

/* GET /batch?n=N; asserts an answer came and returns the body's field f. */
static double field(const tk_resp_t *r, const char *f) {
  double v = tk_json_number(r->body, f);
  cr_assert(!isnan(v), "the /batch answer has no number \"%s\" (lab.h lists the fields): %s", f,
            r->body);
  return v;
}

static void batch_get(labrun_t *run, long n, long timeout_ms, tk_resp_t *r) {
  char url[128];
  snprintf(url, sizeof url, "%s/batch?n=%ld", labrun_url(run), n);
  int rc = tk_get(url, timeout_ms, r);
  cr_assert(rc == 0 && r->status == 200,
            "GET /batch?n=%ld: status %d, curl code %d after %.0f ms: the batch was not answered",
            n, r->status, r->curl_code, r->total_ms);
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

/* ---- tests ---- */

Test(fanout, inflight_capped, .timeout = 15) {
  const long k = 8, n = 120;   /* 15 waves of 20 ms */
  tk_resp_t r;
  labrun_t *run = lab_start(k, "");
  batch_get(run, n, 10000, &r);
  expect_all_items(&r, n, "one batch");
  double lab_peak = field(&r, "peak_inflight");
  lab_stop_clean(run);
  double peak = up_stat("inflight_peak"), conns = up_stat("connections_peak");
  cr_log_info("inflight_capped: N=%ld K=%ld: upstream inflight_peak %.0f, connections_peak %.0f, "
              "lab peak_inflight %.0f", n, k, peak, conns, lab_peak);
  cr_expect(peak <= k, "the upstream had %.0f requests in flight at once from one batch of %ld "
            "items, with --max-inflight %ld: every item started at once (unbounded fan-out). "
            "Take a slot before each fetch and give it back when the fetch is done", peak, n, k);
  cr_expect(lab_peak <= k, "the lab reports peak_inflight %.0f > --max-inflight %ld", lab_peak, k);
  /* + 1: the test's own connection to /stats. */
  cr_expect(conns <= k + 1, "the upstream saw %.0f connections open at once, --max-inflight is "
            "%ld: each fetch in flight holds a socket, so unbounded fetches mean unbounded "
            "sockets", conns, k);
  cr_expect(peak >= 1, "the upstream saw no request: do the items reach --upstream?");
}

Test(fanout, items_exactly_once, .timeout = 15) {
  const long k = 16, n = 200;
  enum { BATCHES = 3 };   /* three batches at once share the K slots */
  static tk_resp_t r[BATCHES];
  char url[128];
  labrun_t *run = lab_start(k, "latency_ms=5");
  snprintf(url, sizeof url, "%s/batch?n=%ld", labrun_url(run), n);
  int answered = tk_get_many(url, BATCHES, 10000, r);
  cr_expect_eq(answered, BATCHES, "%d of %d concurrent batches were answered", answered, BATCHES);
  for (int i = 0; i < BATCHES; i++) {
    cr_expect_eq(r[i].status, 200, "batch %d: status %d (curl code %d)", i, r[i].status,
                 r[i].curl_code);
    if (r[i].status == 200) expect_all_items(&r[i], n, "three concurrent batches");
  }
  lab_stop_clean(run);
  double seen = up_stat("ids_seen"), dup = up_stat("ids_duplicate");
  cr_expect(seen == BATCHES * n && dup == 0, "the upstream saw %.0f distinct item ids (want %ld) "
            "and %.0f repeated ones: each item must be fetched exactly once", seen,
            (long)BATCHES * n, dup);
}

Test(fanout, time_follows_waves, .timeout = 15) {
  const long k = 4, n = 64, latency_ms = 40;   /* 16 waves of 40 ms */
  const double ideal_ms = ceil((double)n / k) * latency_ms, serial_ms = (double)n * latency_ms;
  tk_resp_t r;
  labrun_t *run = lab_start(k, "latency_ms=40");
  batch_get(run, n, 10000, &r);
  expect_all_items(&r, n, "one batch");
  lab_stop_clean(run);
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

Test(fanout, survives_fd_limit, .timeout = 20) {
  const long k = 16, n = 1000;
  const rlim_t limit = 256;   /* well below n: one socket per item at once cannot fit */
  struct rlimit old, low;
  tk_resp_t r;
  labrun_t *run = lab_start(k, "latency_ms=2");
  batch_get(run, k, 10000, &r);   /* warm up: the client now holds its K connections */
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
  snprintf(url, sizeof url, "%s/batch?n=%ld", labrun_url(run), n);
  int rc = tk_get(url, 15000, &r);
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
  cr_log_info("survives_fd_limit: N=%ld K=%ld limit %lu: ok %.0f err %.0f in %.0f ms, fds %d -> %d",
              n, k, (unsigned long)limit, field(&r, "ok"), field(&r, "err"), r.total_ms,
              fds_before, fds_after);
  if (errs == 0) {   /* with errors, the message above is the one that matters */
    expect_all_items(&r, n, "fd limit 256");
    cr_expect(fds_after <= fds_before + 2, "%d fds open after the batch, %d before it: sockets "
              "outlive their fetch (the client keeps at most K=%ld idle connections)", fds_after,
              fds_before, k);
  }
  lab_stop_clean(run);
}

Test(fanout, resources_released, .timeout = 20) {
  const long k = 16, n = 2000;
  const long rss_budget_kb = 8 * 1024;   /* K transfers cost well under 1 MB; N cost ~15 KB each */
  struct rusage ru;
  tk_resp_t r;
  labrun_t *run = lab_start(k, "");   /* warm up libcurl, the allocator, the loop thread */
  batch_get(run, k, 10000, &r);
  lab_stop_clean(run);
  int fds_before = tk_fd_count();
  cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0, "getrusage failed");
  long maxrss_before_kb = ru.ru_maxrss;

  run = lab_start(k, "latency_ms=1");
  batch_get(run, n, 15000, &r);
  expect_all_items(&r, n, "one batch of 2000");
  cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0, "getrusage failed");
  long grew_kb = ru.ru_maxrss - maxrss_before_kb;
  lab_stop_clean(run);
  int fds_after = tk_fd_count();

  cr_expect(fds_after <= fds_before, "%d fds open after the lab stopped, %d before it started: "
            "a socket or handle is never closed", fds_after, fds_before);
  /* AddressSanitizer keeps freed memory in quarantine, so peak RSS says little there. */
  if (!UNDER_ASAN)
    cr_expect(grew_kb <= rss_budget_kb, "peak memory grew by %ld KiB during one batch of %ld items "
              "(budget %ld KiB with K=%ld): each started transfer costs a curl handle, buffers "
              "and a socket; bound how many exist at once (libcurl's connection caps only "
              "queue transfers that already exist)", grew_kb, n, rss_budget_kb, k);
  double peak = up_stat("inflight_peak");
  cr_log_info("resources_released: N=%ld K=%ld: %.0f ms, peak RSS +%ld KiB, fds %d -> %d, "
              "upstream inflight_peak %.0f", n, k, r.total_ms, grew_kb, fds_before, fds_after,
              peak);
  cr_expect(peak <= k, "the upstream had %.0f requests in flight at once, --max-inflight is %ld",
            peak, k);
}

Test(fanout, rejects_bad_n, .timeout = 10) {
  const char *bad[] = {"", "?n=0", "?n=-3", "?n=abc", "?n=5001"};
  labrun_t *run = lab_start(4, "");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char url[128];
    tk_resp_t r;
    snprintf(url, sizeof url, "%s/batch%s", labrun_url(run), bad[i]);
    cr_expect(tk_get(url, 5000, &r) == 0 && r.status == 400,
              "GET /batch%s answered %d, want 400 (n must be 1..--max-items 5000)", bad[i],
              r.status);
  }
  lab_stop_clean(run);
  double calls = up_stat("requests_total");
  cr_expect(calls == 0, "a rejected batch must not call the upstream (it saw %.0f requests)",
            calls);
}
