/* bench.c - lab 15's bench: find the stall (make bench LAB=15).
 *
 * A catalog rebuilt on the loop every --rebuild-ms holds it for tens of ms: at a steady load,
 * most requests never meet a rebuild and the median stays where it was, but the ones that do
 * wait for all of it, so the p99 is the rebuild's length. For each variant: the service (the
 * manifest's `args`, which turn the stall detector on) under an open-loop /price load at `rate`
 * req/s for `run_s` s on `conns` connections, with /debug/stats sampled every 200 ms
 * (timeline.csv); then the detector's count, its worst offender (GET /debug/stalls) and the
 * rebuilds done in the same window. Once per run (setup) the detector's own cost: build/bin/hello
 * with and without LOOPHOLES_STALL_MS, closed-loop, in alternating rounds of 2 s (overhead.csv).
 * Targets: pitfall p99 >= 10 x p50 and the detector naming the culprit at least once per
 * rebuild; solution p99 <= 3 x p50 and no slow callback; detector overhead <= 2% throughput.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDS 4

/* hello with the detector off and on, closed loop, alternating (so the machine's drift hits
 * both alike). One row per round and side in overhead.csv. */
static int setup(bench_t *b) {
  bench_table_t *t = bench_table(b, "overhead.csv");
  int rounds = bench_quick(b) ? 2 : ROUNDS;
  bench_proc_t *off = bench_start(b, &(bench_spawn_t){.name = "hello-off", .bin = "hello"});
  setenv("LOOPHOLES_STALL_MS", "20", 1);
  bench_proc_t *on = bench_start(b, &(bench_spawn_t){.name = "hello-on", .bin = "hello"});
  unsetenv("LOOPHOLES_STALL_MS");
  if (!off || !on) return -1;
  for (int i = 0; i < rounds; i++) {
    for (int side = 0; side < 2; side++) {
      bench_proc_t *p = (i + side) % 2 ? on : off;
      char url[128];
      bench_result_t r;
      snprintf(url, sizeof url, "%s/", p->url);
      bench_load_t l = {.url = url, .rate = 0, .conns = 20, .duration_s = 2, .warmup_s = 0.3,
                        .label = p == on ? "detector on" : "detector off", .step = 2 * i + side + 1,
                        .steps = 2 * rounds};
      if (bench_load(b, &l, &r) != 0) return -1;
      bench_progress_done(b, NULL);
      bench_row(t);
      bench_sets(t, "side", "%s", p == on ? "on" : "off");
      bench_set(t, "round", i + 1);
      bench_set_result(t, &r);
    }
  }
  bench_stop(b, on);
  bench_stop(b, off);
  return 0;
}

static int run(bench_t *b, const char *v) {
  double rate = bench_cfg_num(b, "rate", 200), run_s = bench_quick(b) ? 3 : bench_cfg_num(b, "run_s", 6);
  bench_proc_t *svc = bench_service(b, v, NULL);
  if (!svc) return -1;
  char url[256], st[96];
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/price?sku=4242"));
  snprintf(st, sizeof st, "%s/debug/stats", svc->url);
  bench_sleep_ms(500);
  bench_post("%s", st); /* the detector's counters and the lag histogram cover the load only */
  double v0 = bench_stat(svc, "/debug/stats", "catalog_version");
  bench_sampler_t *s = bench_sample(b, st, 200, bench_table(b, "timeline.csv"), "variant=%s", v);
  bench_load_t l = {.url = url, .rate = rate, .conns = (int)bench_cfg_num(b, "conns", 20),
                    .duration_s = run_s, .timeout_ms = 5000, .label = "open", .step = 1, .steps = 1};
  bench_result_t r;
  int rc = bench_load(b, &l, &r);
  bench_sample_stop(s);
  if (rc != 0) return -1;
  json_t *stats = bench_get_json("%s", st), *stalls = bench_get_json("%s/debug/stalls", svc->url);
  bench_table_t *t = bench_table(b, "runs.csv");
  bench_row_of(t, v);
  bench_set_result(t, &r);
  double rebuilds = bench_num(stats, "catalog_version") - v0;
  bench_set(t, "rebuilds", rebuilds);
  bench_set(t, "slow_callbacks", bench_num(stats, "slow_callbacks"));
  bench_set(t, "slow_callback_max_ms", bench_num(stats, "slow_callback_max_ms"));
  bench_set(t, "stalls_cpu_starved", bench_num(stats, "stalls_cpu_starved"));
  bench_set(t, "lag_p99_ms", bench_num(stats, "loop_lag_hist_p99_ms"));
  json_t *worst = stalls ? json_array_get(json_object_get(stalls, "worst"), 0) : NULL;
  const char *name = worst ? json_string_value(json_object_get(worst, "name")) : NULL;
  bench_sets(t, "worst", "%s", name ? name : "none");
  bench_set(t, "worst_count", worst ? bench_num(worst, "count") : 0);
  /* stalls the detector put on the rebuild timer's name (the culprit, in the pitfall) */
  bench_set(t, "named_rebuild", name && strcmp(name, "catalog rebuild timer") == 0
                                    ? bench_num(worst, "count") : 0);
  bench_progress_done(b, "p50 %s ms, p99 %s ms, %s slow callbacks over %s rebuilds, worst: %s",
                      bench_fmt(r.p50_ms), bench_fmt(r.p99_ms),
                      bench_fmt(bench_num(stats, "slow_callbacks")), bench_fmt(rebuilds),
                      name ? name : "none");
  json_decref(stats);
  json_decref(stalls);
  return 0;
}

static void report(bench_t *b) {
  bench_table_t *t = bench_table(b, "runs.csv"), *o = bench_table(b, "overhead.csv");
  static const char *const shown[] = {"pitfall", "solution", "exercise"};

  bench_print(b, t, "variant offered_rps ok_rps p50_ms p99_ms max_ms rebuilds slow_callbacks "
              "slow_callback_max_ms stalls_cpu_starved worst worst_count lag_p99_ms", NULL);
  for (int i = 0; i < 3; i++) {
    const char *v = shown[i];
    double p50 = bench_query(t, BENCH_LAST, "p50_ms", "variant=%s", v);
    double p99 = bench_query(t, BENCH_LAST, "p99_ms", "variant=%s", v);
    double slow = bench_query(t, BENCH_LAST, "slow_callbacks", "variant=%s", v);
    double rebuilds = bench_query(t, BENCH_LAST, "rebuilds", "variant=%s", v);
    double named = bench_query(t, BENCH_LAST, "named_rebuild", "variant=%s", v);
    if (isnan(p50)) continue;
    if (isnan(named)) named = 0;
    bench_figure(b, v, "p50_ms", p50);
    bench_figure(b, v, "p99_ms", p99);
    bench_figure(b, v, "p99_over_p50", p99 / p50);
    bench_figure(b, v, "slow_callbacks", slow);
    bench_figure(b, v, "rebuilds", rebuilds);
    if (strcmp(v, "solution") != 0) {
      bench_check(b, v, "p99 / p50 of /price", p99 / p50, ">=", 10,
                  "a stall on the loop shows in the tail only");
      bench_check(b, v, "stalls named \"catalog rebuild timer\" per rebuild", named / rebuilds,
                  ">=", 1, "%s of %s rebuilds", bench_fmt(named), bench_fmt(rebuilds));
    }
    if (strcmp(v, "pitfall") != 0) {
      bench_check(b, v, "p99 / p50 of /price", p99 / p50, "<=", 3, "nothing long on the loop");
      bench_check(b, v, "slow callbacks over the threshold", slow, "==", 0,
                  "over %s rebuilds", bench_fmt(rebuilds));
    }
  }
  double off = bench_query(o, BENCH_MEAN, "ok_rps", "side=off");
  double on = bench_query(o, BENCH_MEAN, "ok_rps", "side=on");
  if (!isnan(off)) {
    bench_print(b, o, "side round ok_rps p50_ms p99_ms", NULL);
    bench_figure(b, NULL, "detector_off_rps", off);
    bench_figure(b, NULL, "detector_on_rps", on);
    bench_target(b, "stall detector overhead on hello (% throughput)", 100 * (1 - on / off), "<=",
                 2, "mean of the rounds, on %s vs off %s req/s", bench_fmt(on), bench_fmt(off));
  }
  bench_plot(b, "overtime", "looplag", "csv='timeline.csv'; variants='%s'; "
             "ycol='loop_lag_recent_max_ms'; logy=1; ylabel='loop lag, max of the last second (ms, "
             "log)'; plottitle=\"Lab 15: loop lag under a steady /price load\\nthe pitfall stalls "
             "at every rebuild; the solution's loop never waits\"", bench_each(b, "%s"));
  bench_plot(b, "overtime", "slow", "csv='timeline.csv'; variants='%s'; ycol='slow_callbacks'; "
             "ylabel='slow callbacks seen by the detector (count)'; plottitle=\"Lab 15: the stall "
             "detector's count (--stall-ms 20): one per rebuild on the loop\"", bench_each(b, "%s"));
}

BENCH_MAIN(setup, run, report)
