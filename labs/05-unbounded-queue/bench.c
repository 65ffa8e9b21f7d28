/* bench.c - lab 05's bench: a producer faster than the consumer, over time (make bench LAB=05).
 *
 * For each variant: POST `path` with a `payload_bytes` body at each rate of `loads` in turn, the
 * last (about 3x the drain rate) for `overload_s`, then a trickle of 5 events/s for `recover_s`
 * while the backlog drains, sampling /debug/stats every 200 ms. Then a graceful stop (SIGTERM):
 * the upstream counts what was delivered (ids_seen) and twice (ids_duplicate). With `flow 1` the
 * solution runs once more in --mode flow ("solution-flow"). Writes queue.csv, delivery.csv,
 * stats-RUN.csv, timeline-RUN.csv and queue.png (four panels over time) plus delivery.png.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int one(bench_t *b, const char *run, const char *variant, const char *extra) {
  double loads[8], t_shift = 0;
  int n = bench_cfg_list(b, "loads", "100 200 600", loads, 8), quick = bench_quick(b);
  int flow = strcmp(run, "solution-flow") == 0;
  double overload = loads[n - 1], step_s = quick ? 1 : bench_cfg_num(b, "step_s", 2);
  double overload_s = quick ? 3 : bench_cfg_num(b, "overload_s", 10),
         recover_s = quick ? 1 : bench_cfg_num(b, "recover_s", 3);
  if (flow) /* drawn from when the solution's own overload began */
    loads[0] = overload, n = 1, overload_s = ceil(overload_s / 2),
    t_shift = bench_query(bench_table(b, "stats-solution.csv"), BENCH_MIN, "t_s", "step=overload");
  loads[n++] = 5; /* a trickle while the backlog drains */
  bench_proc_t *up = bench_upstream(b, NULL);
  bench_proc_t *svc = up ? bench_service(b, variant, "%s --upstream %s", extra, up->url) : NULL;
  if (!svc) return -1;
  char url[256], stats[96], body[8192], phase[16];
  size_t bytes = (size_t)bench_cfg_num(b, "payload_bytes", 1024);
  memset(body, 'x', bytes < sizeof body ? bytes : sizeof body - 1);
  body[bytes < sizeof body ? bytes : sizeof body - 1] = '\0';
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/events"));
  snprintf(stats, sizeof stats, "%s/debug/stats", svc->url);
  bench_table_t *st = bench_table(b, "stats-%s.csv", run), *q = bench_table(b, "queue.csv");
  double t0 = flow ? bench_elapsed_s(b) : 0;
  for (int i = 0; i < n; i++) {
    int last = i == n - 1, over = loads[i] == overload && !last;
    snprintf(phase, sizeof phase, "%s", last ? "after" : over ? "overload" : "");
    if (!*phase) snprintf(phase, sizeof phase, "%.1fx", 3 * loads[i] / overload);
    bench_sampler_t *s = bench_sample(b, stats, 200, st, "step=%s offered_rps=%g", phase, loads[i]);
    bench_load_t l = {.url = url, .rate = loads[i], .conns = (int)bench_cfg_num(b, "conns", 32),
                      .duration_s = last ? recover_s : over ? overload_s : step_s, .method = "POST",
                      .body = body, .timeout_ms = 2000, .label = phase, .step = i + 1, .steps = n};
    bench_result_t r;
    int rc = bench_load(b, &l, &r);
    bench_sample_stop(s);
    if (rc != 0) return -1;
    bench_row_of(q, run);
    bench_sets(q, "phase", "%s", phase);
    bench_set_result(q, &r);
    json_t *j = bench_get_json("%s", stats);
    bench_progress_done(b, "queue %s, RSS %s KiB", bench_fmt(bench_num(j, "queue_depth")),
                        bench_fmt(bench_num(j, "rss_kb")));
    json_decref(j);
  }
  json_t *fin = bench_get_json("%s", stats);
  bench_stop(b, svc); /* graceful: what it acknowledged must reach the upstream */
  json_t *u = bench_get_json("%s/stats", up->url);
  bench_table_t *d = bench_table(b, "delivery.csv");
  bench_row_of(d, run);
  bench_set(d, "acked", bench_num(fin, "acked"));
  bench_set(d, "refused", bench_num(fin, "refused"));
  bench_set(d, "delivered", bench_num(u, "ids_seen"));
  bench_set(d, "duplicates", bench_num(u, "ids_duplicate"));
  bench_set(d, "lost", bench_num(fin, "acked") - bench_num(u, "ids_seen"));
  json_decref(fin), json_decref(u);
  bench_table_t *tl = bench_table(b, "timeline-%s.csv", run);
  for (int i = 0, j = 0; i < bench_rows(st); i++) { /* rates over the last second */
    double t = bench_at(st, i, "t_s");
    while (j < i && bench_at(st, j + 1, "t_s") <= t - 1.0) j++;
    double dt = t - bench_at(st, j, "t_s");
    bench_row(tl);
    bench_set(tl, "t_s", round((t - t0 + t_shift) * 1000) / 1000);
    bench_set(tl, "offered_rps", bench_at(st, i, "offered_rps"));
    bench_set(tl, "queue_depth", bench_at(st, i, "queue_depth"));
    bench_set(tl, "rss_mib", round(bench_at(st, i, "rss_kb") / 1024 * 100) / 100);
    bench_set(tl, "latency_ms", bench_at(st, i, "latency_last_ms"));
    bench_set(tl, "queue_age_ms", bench_at(st, i, "queue_age_ms"));
    const char *c[][2] = {{"acked_rps", "acked"}, {"refused_rps", "refused"},
                          {"forwarded_rps", "forwarded"}};
    for (int k = 0; k < 3; k++) /* per second, over the last second */
      bench_set(tl, c[k][0], dt > 0 ? (bench_at(st, i, c[k][1]) - bench_at(st, j, c[k][1])) / dt
                                    : 0);
    bench_set(tl, "parked", bench_at(st, i, "parked"));
  }
  return bench_stop(b, up) == 0 ? 0 : -1;
}

static int run(bench_t *b, const char *v) {
  if (one(b, v, v, "") != 0) return -1;
  if (strcmp(v, "solution") || bench_quick(b) || !bench_cfg_num(b, "flow", 0)) return 0;
  return one(b, "solution-flow", "solution", "--mode flow");
}

static void report(bench_t *b) {
  bench_table_t *q = bench_table(b, "queue.csv"), *d = bench_table(b, "delivery.csv");
  double cap = bench_cfg_opt(b, "args", "--queue-cap", 0);
  bench_say(b, "%-14s %-9s %8s %9s %8s %8s %9s %9s", "variant", "phase", "offered", "achieved",
            "2xx/s", "errors", "p50 ms", "p99 ms");
  for (int i = 0; i < bench_rows(q); i++)
    bench_say(b, "%-14s %-9s %8s %9s %8s %8.0f %9.1f %9.1f", bench_at_s(q, i, "variant"),
              bench_at_s(q, i, "phase"), bench_fmt(bench_at(q, i, "offered_rps")),
              bench_fmt(bench_at(q, i, "achieved_rps")), bench_fmt(bench_at(q, i, "ok_rps")),
              bench_at(q, i, "err_connect") + bench_at(q, i, "err_timeout") +
              bench_at(q, i, "err_http") + bench_at(q, i, "err_other"),
              bench_at(q, i, "p50_ms"), bench_at(q, i, "p99_ms"));
  bench_say(b, "during the overload, then a graceful stop:");
  char files[512] = "", runs[256] = "";
  for (int i = 0; i < bench_rows(d); i++) {
    const char *v = bench_at_s(d, i, "variant");
    bench_table_t *st = bench_table(b, "stats-%s.csv", v);
#define OV(agg, col) bench_query(st, agg, col, "step=overload")
    double qs = OV(BENCH_SLOPE, "queue_depth"), ms = OV(BENCH_SLOPE, "rss_kb") / 1024;
    double grow = (OV(BENCH_LAST, "rss_kb") - OV(BENCH_FIRST, "rss_kb")) / 1024;
    double drain = OV(BENCH_SLOPE, "forwarded"), qmax = OV(BENCH_MAX, "queue_depth");
    bench_say(b, "%-14s queue %+.0f events/s (peak %.0f), RSS %+.2f MiB/s (%+.1f MiB), latency up "
              "to %s ms, drain %.0f/s;\n%-14s acked %.0f, refused %.0f, delivered %.0f, duplicates "
              "%.0f, lost %.0f", v, qs, qmax, ms, grow, bench_fmt(OV(BENCH_MAX, "latency_last_ms")),
              drain, "", bench_at(d, i, "acked"), bench_at(d, i, "refused"),
              bench_at(d, i, "delivered"), bench_at(d, i, "duplicates"), bench_at(d, i, "lost"));
    bench_figure(b, v, "lost", bench_at(d, i, "lost"));
    bench_figure(b, v, "queue_peak", qmax);
    if (!strcmp(v, "solution")) {
      bench_say(b, "Q = %.0f at a drain rate of %.0f/s: an acknowledged event waits at most about "
                "%.0f ms (Q / drain rate)", cap, drain, 1000 * cap / drain);
      bench_target(b, "solution queue peak", qmax, "<=", cap, "Q, the bound");
      bench_target(b, "solution RSS growth in the overload (MiB)", grow, "<", 2, "bounded memory");
      bench_target(b, "solution lost events", bench_at(d, i, "lost"), "==", 0,
                   "acknowledged means kept");
      bench_target(b, "solution duplicates", bench_at(d, i, "duplicates"), "==", 0,
                   "delivered once");
    }
    snprintf(files + strlen(files), sizeof files - strlen(files), " timeline-%s.csv", v);
    snprintf(runs + strlen(runs), sizeof runs - strlen(runs), " %s", v);
  }
  double loads[8];
  int n = bench_cfg_list(b, "loads", "100 200 600", loads, 8);
  bench_plot(b, "labs/05-unbounded-queue/queue.gp", "queue", "files='%s'; variants='%s'; "
             "queue_cap=%g; plottitle='Lab 05: %.0f events/s offered for %.0f s against a drain of "
             "about %.0f/s'", files + 1, runs + 1, cap, loads[n - 1],
             bench_query(q, BENCH_MAX, "duration_s", "phase=overload variant!=solution-flow"),
             loads[n - 1] / 3);
  bench_plot(b, "counter", "delivery", "csv='delivery.csv'; variants='%s'; counters='acked "
             "delivered lost duplicates'; ylabel='events'; plottitle='Lab 05: acknowledged, "
             "delivered, lost and duplicated events (after a graceful stop)'", runs + 1);
}

BENCH_MAIN(NULL, run, report)
