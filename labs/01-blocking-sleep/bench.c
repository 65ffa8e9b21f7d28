/* bench.c - lab 01's bench: sweep the offered load over each variant (make bench LAB=01).
 *
 * A blocking sleep of D ms per request caps a loop at 1000/D req/s however much load arrives; a
 * timer per request lets N connections get N/D. For each variant: a warm-up, one open-loop step
 * per load in the manifest's `loads` (sampling /debug/stats), then one closed-loop step (the
 * peak). The trivial-handler ceiling (build/bin/hello) comes first. Writes sweep.csv (variant,
 * loadgen's columns, lag_max_ms, lag_p99_ms), stats-VARIANT.csv, throughput/latency/looplag plots.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int ceiling(bench_t *b) {
  int conns = (int)bench_cfg_num(b, "conns", 100);
  bench_proc_t *hello = bench_start(b, &(bench_spawn_t){.bin = "hello"});
  if (!hello) return -1;
  char url[96];
  snprintf(url, sizeof url, "%s/", hello->url);
  bench_result_t r;
  bench_load_t l = {.url = url, .conns = conns, .duration_s = bench_quick(b) ? 0.5 : 2,
                    .warmup_s = 0.3, .label = "closed", .progress = "ceiling"};
  if (bench_load(b, &l, &r) != 0) return -1;
  bench_progress_done(b, "build/bin/hello, a trivial handler on the same shell");
  bench_table_t *sweep = bench_table(b, "sweep.csv");
  bench_row_of(sweep, "hello");
  bench_set_result(sweep, &r);
  bench_set(sweep, "lag_max_ms", NAN);
  bench_set(sweep, "lag_p99_ms", NAN);
  return bench_stop(b, hello) == 0 ? 0 : -1;
}

static int run(bench_t *b, const char *v) {
  double loads[16];
  int n = bench_cfg_list(b, "loads", "200 500 1000 2000", loads, 15);
  int conns = (int)bench_cfg_num(b, "conns", 50), quick = bench_quick(b), collapsed = 0, low = 0;
  double step_s = quick ? 0.5 : bench_cfg_num(b, "step_s", 2);
  long timeout_ms = (long)bench_cfg_num(b, "timeout_ms", 2000);
  if (quick && n > 3) loads[1] = loads[n / 2], loads[2] = loads[n - 1], n = 3;
  loads[n++] = 0; /* the closed-loop peak */
  bench_proc_t *svc = bench_service(b, v, NULL);
  if (!svc) return -1;
  char url[256], stats[96];
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/"));
  snprintf(stats, sizeof stats, "%s/debug/stats", svc->url);
  bench_table_t *sweep = bench_table(b, "sweep.csv"), *t = bench_table(b, "stats-%s.csv", v);
  bench_result_t r;
  /* Warm-up at half the first load: below a blocked variant's capacity too. */
  bench_load_t warm = {.url = url, .rate = (loads[0] + 1) / 2, .conns = conns,
                       .duration_s = quick ? 0.2 : 0.5, .timeout_ms = timeout_ms};
  if (bench_load(b, &warm, &r) != 0) return -1;
  for (int i = 0; i < n; i++) {
    if (loads[i] > 0 && collapsed) continue; /* it would only repeat its cap while timing out */
    bench_post("%s", stats); /* restarts the loop-lag maximum: it then covers this step */
    bench_sampler_t *s = bench_sample(b, stats, 100, t, "step=%d offered_rps=%g", i + 1, loads[i]);
    bench_load_t l = {.url = url, .rate = loads[i], .conns = conns, .duration_s = step_s,
                      .timeout_ms = loads[i] > 0 || timeout_ms >= 3000 ? timeout_ms : 3000,
                      .label = loads[i] > 0 ? "open" : "closed", .step = i + 1, .steps = n};
    int rc = bench_load(b, &l, &r);
    bench_sample_stop(s);
    if (rc != 0) return -1;
    /* A blocked loop answers few samples during the step: ask once more after it. */
    double lag = fmax(bench_query(t, BENCH_MAX, "loop_lag_max_ms", "step=%d", i + 1),
                      bench_stat(svc, "/debug/stats", "loop_lag_max_ms"));
    bench_row_of(sweep, v);
    bench_set_result(sweep, &r);
    bench_set(sweep, "lag_max_ms", lag);
    bench_set(sweep, "lag_p99_ms", bench_query(t, BENCH_MAX, "loop_lag_p99_ms", "step=%d", i + 1));
    bench_progress_done(b, "loop lag max %s ms", bench_fmt(lag));
    low = r.ok_rps < 0.8 * loads[i] ? low + 1 : 0; /* collapsed: < 60% once or < 80% twice */
    if (loads[i] > 0 && (r.ok_rps < 0.6 * loads[i] || low >= 2)) collapsed = 1;
  }
  if (collapsed) bench_log(b, "%s collapsed: its higher loads were skipped", v);
  return 0;
}

static void report(bench_t *b) {
  bench_table_t *t = bench_table(b, "sweep.csv");
  double d = bench_cfg_opt(b, "args", "--delay-ms", 0), conns = bench_cfg_num(b, "conns", 50);
  double ceil = bench_query(t, BENCH_LAST, "ok_rps", "variant=hello"), nd = conns * 1000 / d;
  double limit = isnan(ceil) ? nd : fmin(nd, ceil), blocked = 1000 / d;
  bench_print(b, t,
              "variant label offered_rps achieved_rps ok_rps p50_ms p99_ms max_ms err_timeout "
              "err_http lag_max_ms lag_p99_ms",
              NULL);
  bench_say(b, "limit: min(N/D = %.0f/%.0fms = %.0f, ceiling = %s) = %.0f req/s", conns, d, nd,
            bench_fmt(ceil), limit);
  bench_figure(b, NULL, "limit_rps", limit); /* the grader's bound: labs/manifest `perf` */
  char peaks[256] = "";
  double peak[2] = {NAN, NAN}, lag[2] = {NAN, NAN}, p99[2], common = 0;
  const char *v;
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    double pk = bench_query(t, BENCH_MAX, "achieved_rps", "variant=%s", v);
    double lg = bench_query(t, BENCH_MAX, "lag_max_ms", "variant=%s offered_rps>0", v);
    bench_say(b, "%-9s peak %s req/s; loop lag under the offered loads: max %s ms, p99 %s ms; at "
              "peak: max %s ms", v, bench_fmt(pk), bench_fmt(lg),
              bench_fmt(bench_query(t, BENCH_MAX, "lag_p99_ms", "variant=%s offered_rps>0", v)),
              bench_fmt(bench_query(t, BENCH_MAX, "lag_max_ms", "variant=%s offered_rps=0", v)));
    bench_figure(b, v, "peak_rps", pk);
    bench_figure(b, v, "lag_max_ms", lg);
    int k = strcmp(v, "pitfall") == 0 ? 0 : strcmp(v, "solution") == 0 ? 1 : -1;
    if (k >= 0) peak[k] = pk, lag[k] = lg;
    snprintf(peaks + strlen(peaks), sizeof peaks - strlen(peaks), " %.0f",
             fmax(0, bench_query(t, BENCH_MAX, "achieved_rps", "variant=%s offered_rps=0", v)));
  }
  for (int i = 0; i < bench_rows(t); i++) /* the highest load both pitfall and solution had */
    if (!strcmp(bench_at_s(t, i, "variant"), "pitfall") && bench_at(t, i, "offered_rps") > common &&
        !isnan(bench_query(t, BENCH_LAST, "p99_ms", "variant=solution offered_rps=%s",
                           bench_at_s(t, i, "offered_rps"))))
      common = bench_at(t, i, "offered_rps");
  p99[0] = bench_query(t, BENCH_LAST, "p99_ms", "variant=pitfall offered_rps=%g", common);
  p99[1] = bench_query(t, BENCH_LAST, "p99_ms", "variant=solution offered_rps=%g", common);
  if (bench_has(b, "solution")) {
    bench_target(b, "solution peak (req/s)", peak[1], ">=", 0.8 * limit, "80%% of the limit");
    bench_target(b, "solution loop lag p99 (ms)", bench_query(t, BENCH_MAX, "lag_p99_ms",
                 "variant=solution offered_rps>0"), "<", 5, "its loop never blocks (p99: a shared "
                 "CPU delays any timer now and then)");
  }
  if (bench_has(b, "pitfall")) {
    bench_target(b, "pitfall peak (req/s)", peak[0], "<=", 1.5 * blocked, "1.5 x 1000/D");
    bench_target(b, "pitfall loop lag max (ms)", lag[0], ">=", d, "each request blocks D ms");
  }
  if (bench_has(b, "pitfall") && bench_has(b, "solution"))
    bench_target(b, "pitfall p99 / solution p99", p99[0] / p99[1], ">=", 20,
                 "at %.0f req/s: %s ms vs %s ms", common, bench_fmt(p99[0]), bench_fmt(p99[1]));
  bench_plot(b, "throughput", "throughput",
             "csv='sweep.csv'; variants='%s'; peaks='%s'; nd=%.0f; "
             "nd_text='N/D = %.0f conns / %.0f ms = %.0f req/s'; blocked=%.0f; ceiling=%.0f; "
             "plottitle=\"Lab 01: blocking D = %.0f ms per request caps the pitfall at 1000/D = "
             "%.0f req/s (it reached %s)\\nthe solution follows the offered load (peak %s req/s)\"",
             bench_each(b, "%s"), peaks + 1, nd, conns, d, nd, blocked, isnan(ceil) ? 0 : ceil, d,
             blocked, bench_fmt(peak[0]), bench_fmt(peak[1]));
  bench_plot(b, "latency", "latency", "csv='sweep.csv'; variants='%s'; delay=%.0f; timeout=2000; "
             "plottitle=\"Lab 01: p99 latency: at %.0f req/s the pitfall answers %.0fx slower than "
             "the solution\\nopen loop: a request waiting behind a blocked loop counts from its "
             "intended send time\"", bench_each(b, "%s"), d, common, p99[0] / p99[1]);
  bench_plot(
      b, "looplag", "looplag",
      "files='%s'; variants='%s'; loadfile='stats-solution.csv'; "
      "lagcol='loop_lag_recent_max_ms'; delay=%.0f; plottitle=\"Lab 01: event-loop lag "
      "during the sweep: pitfall up to %s ms, solution at most %s ms\\nthe lag is how late a "
      "timer due now fires: every request on the loop waits that long too\"",
      bench_each(b, "stats-%s.csv"), bench_each(b, "%s"), d, bench_fmt(lag[0]), bench_fmt(lag[1]));
  bench_plot_text(b, "throughput",
                  "csv='sweep.csv'; variants='%s'; nd=%.0f; blocked=%.0f; "
                  "plottitle='throughput: achieved vs offered (req/s, log-log)'",
                  bench_each(b, "%s"), nd, blocked);
}

BENCH_MAIN(ceiling, run, report)
