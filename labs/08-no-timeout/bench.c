/* bench.c - lab 08's bench: a steady stream of quotes while the upstream hangs a fraction of the
 * calls and jitters the rest (make bench LAB=08).
 *
 * For each variant: the upstream with the manifest's options (--hang-rate: that fraction of the
 * calls is never answered; --jitter-ms: the long tail of the others), the service with its call
 * timeout T and deadline D, then GET `path` open loop at the manifest's `loads` rate for `step_s`,
 * sampling /debug/stats every 250 ms (in flight, calls in flight, fds, RSS). After the load and
 * D + 1 s of quiet: the service's fds again, its final stats and the upstream's.
 * Writes quote.csv (one row per variant), timeline.csv, stats-/final-/upstream-VARIANT.csv and
 * inflight, fds, rss (over time) and latency (percentiles) plots.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int run(bench_t *b, const char *v) {
  int quick = bench_quick(b);
  double deadline_ms = bench_cfg_opt(b, "args", "--deadline-ms", 500);
  bench_proc_t *up = bench_upstream(b, NULL);
  bench_proc_t *svc = up ? bench_service(b, v, "--upstream %s", up->url) : NULL;
  if (!svc) return -1;
  char url[256], stats[96], name[64];
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/quote?sku=sku-1"));
  snprintf(stats, sizeof stats, "%s/debug/stats", svc->url);
  long fds_before = bench_proc_kb(svc, "fds"), rss_before = bench_proc_kb(svc, "VmRSS");
  snprintf(name, sizeof name, "stats-%s.csv", v);
  bench_table_t *st = bench_table(b, name), *q = bench_table(b, "quote.csv");
  bench_sampler_t *s = bench_sample(b, stats, 250, st, "variant=%s", v);
  bench_load_t l = {.url = url, .rate = bench_cfg_num(b, "loads", 100),
                    .conns = (int)bench_cfg_num(b, "conns", 300),
                    .duration_s = quick ? 4 : bench_cfg_num(b, "step_s", 20),
                    .timeout_ms = (long)bench_cfg_num(b, "timeout_ms", 2000), .label = "steady",
                    .progress = "steady"};
  bench_result_t r;
  int rc = bench_load(b, &l, &r);
  bench_sample_stop(s);
  if (rc != 0) return -1;
  json_t *end = bench_get_json("%s", stats); /* in flight as the load ends */
  bench_sleep_ms(deadline_ms + 1000);        /* every bounded request has answered by now */
  long fds_after = bench_proc_kb(svc, "fds"), rss_after = bench_proc_kb(svc, "VmRSS");
  json_t *fin = bench_get_json("%s", stats), *u = bench_get_json("%s/stats", up->url);
  bench_progress_done(b, "in flight at the end %s, fds %ld -> %ld", bench_fmt(bench_num(end, "inflight")),
                      fds_before, fds_after);
  bench_row(q);
  bench_sets(q, "variant", "%s", v);
  bench_set_result(q, &r);
  bench_set(q, "inflight_end", bench_num(end, "inflight"));
  bench_set(q, "inflight_peak", bench_num(fin, "inflight_peak"));
  bench_set(q, "fds_before", (double)fds_before);
  bench_set(q, "fds_after", (double)fds_after);
  bench_set(q, "rss_before_kb", (double)rss_before);
  bench_set(q, "rss_after_kb", (double)rss_after);
  /* The client's idle keep-alive connections are the only fds a right answer may keep: the
   * upstream sees them open (minus the one asking for /stats, minus calls still hanging). */
  bench_set(q, "upstream_idle", bench_num(u, "connections_open") - 1 - bench_num(u, "hung_open"));
  bench_set(q, "hung_open", bench_num(u, "hung_open"));
  snprintf(name, sizeof name, "final-%s.csv", v);
  bench_kv(b, name, fin);
  snprintf(name, sizeof name, "upstream-%s.csv", v);
  bench_kv(b, name, u);
  json_decref(end);
  json_decref(fin);
  json_decref(u);
  bench_table_t *tl = bench_table(b, "timeline.csv");
  for (int i = 0; i < bench_rows(st); i++) {
    bench_row(tl);
    bench_sets(tl, "variant", "%s", v);
    const char *cols[] = {"t_s", "inflight", "calls_inflight", "fds", "rss_kb", "quotes_timed_out"};
    for (int k = 0; k < 6; k++) bench_set(tl, cols[k], bench_at(st, i, cols[k]));
  }
  return 0;
}

/* The mean of col over the part [from, to) of variant v's load (0..1 of its time). */
static double part(bench_table_t *t, const char *v, const char *col, double from, double to) {
  double t0 = bench_query(t, BENCH_MIN, "t_s", "variant=%s", v);
  double d = bench_query(t, BENCH_MAX, "t_s", "variant=%s", v) - t0;
  return bench_query(t, BENCH_MEAN, col, "variant=%s t_s>=%g t_s<%g", v, t0 + from * d, t0 + to * d);
}

#define Q(v, col) bench_query(q, BENCH_LAST, col, "variant=%s", v)
#define KV(file, key) bench_query(bench_table(b, file), BENCH_LAST, "value", "key=%s", key)

static void report(bench_t *b) {
  bench_table_t *q = bench_table(b, "quote.csv"), *tl = bench_table(b, "timeline.csv");
  double rate = bench_cfg_num(b, "loads", 100);
  double t_ms = bench_cfg_opt(b, "args", "--call-timeout-ms", 300);
  double d_ms = bench_cfg_opt(b, "args", "--deadline-ms", 500);
  double hang = bench_cfg_opt(b, "upstream", "--hang-rate", 0);
  double hang_quote = 1 - (1 - hang) * (1 - hang); /* a quote hangs if either call does */
  bench_say(b, "%g quotes/s, upstream %s: %.1f%% of the quotes meet a hang; T = %g ms, D = %g ms",
            rate, bench_cfg(b, "upstream", ""), 100 * hang_quote, t_ms, d_ms);
  bench_say(b, "%-9s %8s %6s %6s %7s %7s %7s %7s %8s %8s %12s %12s", "variant", "achieved",
            "ok/s", "504/s", "p50 ms", "p99 ms", "max ms", "no ans", "inflight", "peak",
            "fds", "RSS MB");
  const char *v;
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    char f[64];
    snprintf(f, sizeof f, "final-%s.csv", v);
    double dur = Q(v, "duration_s");
    bench_say(b, "%-9s %8s %6s %6s %7.1f %7.1f %7.0f %7.0f %8.0f %8.0f %5.0f->%-6.0f %5.1f->%-6.1f", v,
              bench_fmt(Q(v, "achieved_rps")), bench_fmt(Q(v, "ok_rps")),
              bench_fmt(dur > 0 ? KV(f, "quotes_timed_out") / dur : NAN), Q(v, "p50_ms"),
              Q(v, "p99_ms"), Q(v, "max_ms"), Q(v, "err_timeout"), Q(v, "inflight_end"),
              Q(v, "inflight_peak"), Q(v, "fds_before"), Q(v, "fds_after"),
              Q(v, "rss_before_kb") / 1024, Q(v, "rss_after_kb") / 1024);
    bench_figure(b, v, "inflight_end", Q(v, "inflight_end"));
    bench_figure(b, v, "inflight_peak", Q(v, "inflight_peak"));
    bench_figure(b, v, "max_ms", Q(v, "max_ms"));
    bench_figure(b, v, "fds_after_minus_before", Q(v, "fds_after") - Q(v, "fds_before"));
  }
  bench_say(b, "(504/s: answers naming the call that ran out; no ans: requests the load generator "
            "gave up on after %g ms;\n inflight: requests in flight as the load ended; peak: the "
            "most at once; fds and RSS: before the load -> D + 1 s after it)",
            bench_cfg_num(b, "timeout_ms", 2000));
  double limit = rate * d_ms / 1000;
  bench_say(b, "Little's law: with a deadline, in flight <= rate x D = %g; without one it grows by "
            "rate x hang fraction = %.1f every second", limit, rate * hang_quote);
  if (bench_has(b, "solution")) {
    bench_target(b, "solution in flight, peak", Q("solution", "inflight_peak"), "<=", 1.2 * limit,
                 "1.2 x rate x D");
    bench_target(b, "solution slowest answer (ms)", Q("solution", "max_ms"), "<=", d_ms + 50,
                 "D + 50 ms: every request answered by its deadline");
    bench_target(b, "solution requests unanswered or failed",
                 Q("solution", "err_timeout") + Q("solution", "err_connect") +
                     KV("final-solution.csv", "quotes_failed"),
                 "==", 0, "every quote answered 200 or 504");
    bench_target(b, "solution fds after the load, beyond the idle pool",
                 Q("solution", "fds_after") - Q("solution", "fds_before") -
                     Q("solution", "upstream_idle"),
                 "<=", 0, "back to the baseline but for idle keep-alive connections");
  }
  if (bench_has(b, "pitfall") && bench_has(b, "solution")) {
    bench_target(b, "pitfall in flight at the end / solution's peak",
                 Q("pitfall", "inflight_end") / fmax(1, Q("solution", "inflight_peak")), ">=", 5,
                 "a hung call holds its request forever");
    /* Rising: the last quarter of the load above the second (means, so a stall of the shared
     * machine that bunches a few samples does not decide it). A linear climb gives 0.875 / 0.375. */
    bench_target(b, "pitfall in flight, last quarter / second quarter",
                 part(tl, "pitfall", "inflight", 0.75, 1) / fmax(1, part(tl, "pitfall", "inflight", 0.25, 0.5)),
                 ">=", 1.5, "still rising at the end of the load");
  }
  const char *vs = bench_each(b, "%s");
  const char *what[][4] = {
      {"inflight", "inflight", "requests in flight", "requests in flight: a hang without a limit is held forever"},
      {"fds", "fds", "open fds of the service", "open fds: each hung call keeps its socket"},
      {"rss", "rss_kb", "resident memory (MB)", "resident memory of the service"}};
  for (int i = 0; i < 3; i++)
    bench_plot(b, "overtime", what[i][0], "csv='timeline.csv'; variants='%s'; ycol='%s'; scale=%g; "
               "ylabel=\"%s\"; plottitle=\"Lab 08: %s\"", vs, what[i][1], i == 2 ? 1.0 / 1024 : 1,
               what[i][2], what[i][3]);
  bench_plot(b, "counter", "latency", "csv='quote.csv'; variants='%s'; counters='p50_ms p90_ms "
             "p99_ms max_ms'; logy=1; ylabel=\"latency (ms)\"; plottitle=\"Lab 08: latency "
             "percentiles at %g quotes/s (D = %g ms; unanswered: the load generator's %g ms)\"",
             vs, rate, d_ms, bench_cfg_num(b, "timeout_ms", 2000));
}

int main(int argc, char **argv) {
  return bench_main(argc, argv, &(bench_lab_t){.slug = BENCH_SLUG, .run = run, .report = report});
}
