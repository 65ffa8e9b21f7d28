/* bench.c - lab 04's bench: a steady load where a fraction of the dashboards fail (make bench
 * LAB=04). For each variant, two open-loop steps at the manifest's first load:
 *   mixed    GET `path` (the lab's --fail-percent decides which dashboards fail), sampling
 *            /debug/stats every 200 ms: calls in flight, memory, late callbacks over time
 *   failing  GET `path`?fail=1 after a warm-up: the failure path's latency
 * Writes gather.csv, latency.csv, timeline.csv, stats-/final-/upstream-VARIANT.csv and
 * latency/inflight/wasted/rss plots.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int run(bench_t *b, const char *v) {
  int quick = bench_quick(b), conns = (int)bench_cfg_num(b, "conns", 200);
  double rate = bench_cfg_num(b, "loads", 200),
         slow_ms = bench_cfg_opt(b, "args", "--recs-latency-ms", 300);
  long timeout_ms = (long)bench_cfg_num(b, "timeout_ms", 2000);
  bench_proc_t *up = bench_upstream(b, NULL);
  bench_proc_t *svc = up ? bench_service(b, v, "--upstream %s", up->url) : NULL;
  if (!svc) return -1;
  char url[256], stats[96], name[64];
  const char *path = bench_cfg(b, "path", "/dashboard");
  snprintf(url, sizeof url, "%s%s", svc->url, path);
  snprintf(stats, sizeof stats, "%s/debug/stats", svc->url);
  bench_table_t *g = bench_table(b, "gather.csv"), *st = bench_table(b, "stats-%s.csv", v);
  bench_sampler_t *s = bench_sample(b, stats, 200, st, "variant=%s", v);
  bench_load_t l = {.url = url, .rate = rate, .conns = conns, .timeout_ms = timeout_ms,
                    .duration_s = quick ? 2 : bench_cfg_num(b, "step_s", 8), .label = "mixed",
                    .progress = "step 1/2"};
  bench_result_t r;
  int rc = bench_load(b, &l, &r);
  bench_sample_stop(s);
  if (rc != 0) return -1;
  bench_progress_done(b, "mixed");
  bench_row_of(g, v);
  bench_set_result(g, &r);
  bench_table_t *tl = bench_table(b, "timeline.csv");
  for (int i = 0; i < bench_rows(st); i++) { /* the columns the plots and docs name */
    bench_row_of(tl, v);
    const char *cols[] = {"t_s", "calls_inflight", "dashboards_live", "rss_kb", "late_callbacks"};
    for (int k = 0; k < 5; k++) bench_set(tl, cols[k], bench_at(st, i, cols[k]));
    bench_set(tl, "orphan_s_total", bench_at(st, i, "orphan_ms_total") / 1000);
    bench_set(tl, "loop_lag_max_ms", bench_at(st, i, "loop_lag_max_ms"));
  }
  bench_sleep_ms(slow_ms +
                 500); /* orphans of the last requests come back within the slow latency */
  json_t *fin = bench_get_json("%s", stats);
  snprintf(name, sizeof name, "final-%s.csv", v);
  bench_kv(b, name, fin);
  json_decref(fin);
  snprintf(url, sizeof url, "%s%s%cfail=1", svc->url, path, strchr(path, '?') ? '&' : '?');
  l.duration_s = quick ? 1 : bench_cfg_num(b, "fail_step_s", 3);
  l.warmup_s = quick ? 0.3 : 1;
  l.label = "failing";
  l.progress = "step 2/2";
  if (bench_load(b, &l, &r) != 0) return -1;
  bench_progress_done(b, "failing only");
  bench_row_of(g, v);
  bench_set_result(g, &r);
  json_t *u = bench_get_json("%s/stats", up->url);
  snprintf(name, sizeof name, "upstream-%s.csv", v);
  bench_kv(b, name, u);
  json_decref(u);
  return 0;
}

/* The mean of col over the part [from, to) of variant v's mixed step (0..1 of its time). */
static double part(bench_table_t *t, const char *v, const char *col, double from, double to) {
  double t0 = bench_query(t, BENCH_MIN, "t_s", "variant=%s", v);
  double d = bench_query(t, BENCH_MAX, "t_s", "variant=%s", v) - t0;
  return bench_query(t, BENCH_MEAN, col, "variant=%s t_s>=%g t_s<%g", v, t0 + from * d,
                     t0 + to * d + (to >= 1 ? 1 : 0));
}

static void report(bench_t *b) {
  bench_table_t *g = bench_table(b, "gather.csv"), *tl = bench_table(b, "timeline.csv");
  bench_table_t *lat = bench_table(b, "latency.csv");
  bench_clear(lat);
  double fail_ms = bench_cfg_opt(b, "args", "--orders-latency-ms", 15);
  double slow_ms = bench_cfg_opt(b, "args", "--recs-latency-ms", 300);
  bench_say(b,
            "the failing call (orders) answers after %.0f ms, the slow sibling (recommendations) "
            "after %.0f ms; %s",
            fail_ms, slow_ms, bench_cfg(b, "args", ""));
  bench_say(b, "%-9s %-8s %8s %8s %8s %8s %8s", "variant", "step", "achieved", "ok/s", "p50 ms",
            "p90 ms", "p99 ms");
  for (int i = 0; i < bench_rows(g); i++)
    bench_say(b, "%-9s %-8s %8s %8s %8.2f %8.2f %8.2f", bench_at_s(g, i, "variant"),
              bench_at_s(g, i, "label"), bench_fmt(bench_at(g, i, "achieved_rps")),
              bench_fmt(bench_at(g, i, "ok_rps")), bench_at(g, i, "p50_ms"),
              bench_at(g, i, "p90_ms"), bench_at(g, i, "p99_ms"));
  bench_say(b, "%-9s %9s %9s %10s %12s %10s %11s %11s", "variant", "failed", "late_cb", "wasted s",
            "wasted/fail", "abandoned", "inflight", "rss MB");
  const char *v;
  for (int i = 0; (v = bench_variant(b, i)); i++) {
#define KV(f, v, k) bench_query(bench_table(b, f "-%s.csv", v), BENCH_LAST, "value", "key=%s", k)
    double failed = KV("final", v, "dashboards_failed"), late = KV("final", v, "late_callbacks");
    double wasted = KV("final", v, "orphan_ms_total");
    bench_say(b, "%-9s %9.0f %9.0f %10.1f %9.0f ms %10.0f %5.0f->%-5.0f %5.1f->%-5.1f", v, failed,
              late, wasted / 1000, failed > 0 ? wasted / failed : 0, KV("upstream", v, "abandoned"),
              part(tl, v, "calls_inflight", 0.25, 0.5), part(tl, v, "calls_inflight", 0.75, 1),
              part(tl, v, "rss_kb", 0.25, 0.5) / 1024, part(tl, v, "rss_kb", 0.75, 1) / 1024);
    bench_row_of(lat, v);
    const char *steps[] = {"mixed", "failing"}, *ps[] = {"p50", "p90", "p99"};
    for (int s = 0; s < 2; s++)
      for (int p = 0; p < 3; p++) {
        char col[32], src[16];
        snprintf(col, sizeof col, "%s_%s", steps[s], ps[p]);
        snprintf(src, sizeof src, "%s_ms", ps[p]);
        bench_set(lat, col, bench_query(g, BENCH_LAST, src, "variant=%s label=%s", v, steps[s]));
      }
    bench_figure(b, v, "late_callbacks", late);
    bench_figure(b, v, "wasted_ms_per_failure", failed > 0 ? wasted / failed : 0);
    bench_figure(b, v, "fail_p99_ms", bench_query(g, BENCH_LAST, "p99_ms", "variant=%s label=failing", v));
  }
  bench_say(b, "(late_cb: call callbacks after their dashboard had answered; wasted: upstream time "
            "those calls ran after the answer;\n abandoned: calls the upstream saw cancelled; "
            "inflight and rss: the 2nd quarter -> the last quarter of the mixed step)");
  if (bench_has(b, "solution")) {
    bench_target(b, "solution failure path p99 (ms)", bench_query(g, BENCH_LAST, "p99_ms",
                 "variant=solution label=failing"), "<=", 2 * fail_ms, "2 x the failing call");
    bench_target(b, "solution late callbacks", KV("final", "solution", "late_callbacks"), "==", 0,
                 "cancelled calls come back cancelled, before the answer");
    double a = part(tl, "solution", "calls_inflight", 0.25, 0.5);
    bench_target(b, "solution calls in flight, last quarter", part(tl, "solution", "calls_inflight",
                 0.75, 1), "<=", 1.2 * a + 2, "flat: 1.2 x the 2nd quarter + 2");
    bench_target(b, "solution RSS (kB), last quarter", part(tl, "solution", "rss_kb", 0.75, 1),
                 "<=", 1.1 * part(tl, "solution", "rss_kb", 0.25, 0.5),
                 "flat: the 2nd quarter + 10%%");
  }
  const char *vs = bench_each(b, "%s");
  bench_plot(b, "labs/04-gather-orphans/gather.gp", "latency", "csv='latency.csv'; variants='%s'; "
             "fail_ms=%g; slow_ms=%g; plottitle=\"Lab 04: latency at %g req/s; failing only: "
             "answered at the first error (%g ms) or later?\"", vs, fail_ms, slow_ms,
             bench_cfg_num(b, "loads", 200), fail_ms);
  const char *what[][4] = {
      {"inflight", "calls_inflight", "upstream calls in flight (the lab's client)",
       "upstream calls in flight: orphans add failure rate x slow latency"},
      {"wasted", "orphan_s_total", "upstream seconds after the answer (cumulative)",
       "upstream seconds spent on calls after their dashboard had answered"},
      {"rss", "rss_kb", "resident memory (MB)", "resident memory of the service"}};
  for (int i = 0; i < 3; i++)
    bench_plot(b, "overtime", what[i][0], "csv='timeline.csv'; variants='%s'; ycol='%s'; scale=%g; "
               "ylabel=\"%s\"; plottitle=\"Lab 04: %s\"", vs, what[i][1], i == 2 ? 1.0 / 1024 : 1,
               what[i][2], what[i][3]);
}

BENCH_MAIN(NULL, run, report)
