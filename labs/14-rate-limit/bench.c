/* bench.c - lab 14's bench: a steady stream at twice the upstream's rate limit
 * (make bench LAB=14).
 *
 * For each variant: the upstream with the manifest's options (--rate-limit R --rate-burst B: a
 * token bucket that answers 429 beyond it), the service with its own limiter options, then GET
 * `path` open loop at `rate` (2R) for `run_s`, sampling the service's /debug/stats (its wait
 * queue) every 250 ms. After the load, the upstream's /stats/series gives its calls second by
 * second by outcome (ok, rate_limited).
 * Writes runs.csv (one row per variant), seconds.csv (per variant and second: calls, ok, 429s),
 * timeline.csv (the wait queue) and calls, refused and waiting plots over time.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int run(bench_t *b, const char *v) {
  double rate = bench_cfg_num(b, "rate", 100), run_s = bench_cfg_num(b, "run_s", 10);
  if (bench_quick(b)) run_s = fmin(run_s, 4);
  bench_proc_t *up = bench_upstream(b, NULL);
  bench_proc_t *svc = up ? bench_service(b, v, "--upstream %s", up->url) : NULL;
  if (!svc) return -1;
  char url[256], stats[96], name[64];
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/call?id=item-1"));
  snprintf(stats, sizeof stats, "%s/debug/stats", svc->url);
  snprintf(name, sizeof name, "svc-%s.csv", v);
  bench_table_t *st = bench_table(b, "%s", name);
  bench_table_t *runs = bench_table(b, "runs.csv"), *sec = bench_table(b, "seconds.csv");
  bench_table_t *tl = bench_table(b, "timeline.csv");
  if (bench_post("%s/stats/reset", up->url) != 200) return -1; /* the series starts now */
  double t0 = bench_elapsed_s(b);
  bench_sampler_t *s = bench_sample(b, stats, 250, st, "variant=%s", v);
  bench_load_t l = {.url = url, .rate = rate, .conns = (int)bench_cfg_num(b, "conns", 400),
                    .duration_s = run_s, .timeout_ms = (long)bench_cfg_num(b, "timeout_ms", 5000),
                    .label = "2R", .progress = "at 2R"};
  bench_result_t r;
  int rc = bench_load(b, &l, &r);
  bench_sample_stop(s);
  if (rc != 0) return -1;
  json_t *series = bench_get_json("%s/stats/series", up->url);
  json_t *u = bench_get_json("%s/stats", up->url), *fin = bench_get_json("%s", stats);
  bench_progress_done(b, "upstream calls %s, 429s %s", bench_fmt(bench_num(u, "requests_total")),
                      bench_fmt(bench_num(u, "rate_limited")));
  json_t *secs = series ? json_object_get(series, "seconds") : NULL;
  for (int k = 0; k < (int)run_s; k++) {
    json_t *o = secs ? json_array_get(secs, (size_t)k) : NULL;
    bench_row_of(sec, v);
    bench_set(sec, "t_s", k + 0.5);
    bench_set(sec, "calls", bench_num(o, "attempts"));
    bench_set(sec, "ok", bench_num(o, "ok"));
    bench_set(sec, "rate_limited", bench_num(o, "rate_limited"));
  }
  for (int i = 0; i < bench_rows(st); i++) {
    bench_row_of(tl, v);
    bench_set(tl, "t_s", bench_at(st, i, "t_s") - t0);
    bench_set(tl, "waiting", bench_at(st, i, "waiting"));
  }
  bench_row_of(runs, v);
  bench_set_result(runs, &r);
  bench_set(runs, "upstream_calls", bench_num(u, "requests_total"));
  bench_set(runs, "upstream_429", bench_num(u, "rate_limited"));
  bench_set(runs, "upstream_ok", bench_num(u, "responses_2xx"));
  bench_set(runs, "waiting_peak", bench_num(fin, "waiting_peak"));
  bench_set(runs, "calls_rejected", bench_num(fin, "calls_rejected"));
  json_decref(series);
  json_decref(u);
  json_decref(fin);
  return 0;
}

#define RUN(v, col) bench_query(runs, BENCH_LAST, col, "variant=%s", v)

static void report(bench_t *b) {
  bench_table_t *runs = bench_table(b, "runs.csv"), *sec = bench_table(b, "seconds.csv");
  double rate = bench_cfg_num(b, "rate", 100);
  double lim = bench_cfg_opt(b, "upstream", "--rate-limit", 50);
  double burst = bench_cfg_opt(b, "upstream", "--rate-burst", 10);
  double maxw = bench_cfg_opt(b, "args", "--max-waiting", 100);
  bench_say(b, "%g requests/s offered to an upstream allowing R = %g/s (burst B = %g): %.1f x R",
            rate, lim, burst, rate / lim);
  bench_say(b, "%-9s %7s %8s %8s %8s %8s %7s %9s %9s %8s %9s", "variant", "sent", "ok/s",
            "goodput", "calls", "429s", "429 %", "503 full", "max 1 s", "waiting", "p99 ms");
  const char *v;
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    double share = RUN(v, "upstream_429") / RUN(v, "upstream_calls");
    double top = bench_query(sec, BENCH_MAX, "calls", "variant=%s", v);
    double good = bench_query(sec, BENCH_MEAN, "ok", "variant=%s t_s>1", v);
    bench_say(b, "%-9s %7.0f %8s %8s %8.0f %8.0f %6.1f%% %9.0f %9.0f %8.0f %9s", v,
              RUN(v, "sent"), bench_fmt(RUN(v, "ok_rps")), bench_fmt(good),
              RUN(v, "upstream_calls"), RUN(v, "upstream_429"),
              100 * share, RUN(v, "calls_rejected"), top, RUN(v, "waiting_peak"),
              bench_fmt(RUN(v, "p99_ms")));
    bench_figure(b, v, "ok_rps", RUN(v, "ok_rps"));
    bench_figure(b, v, "goodput_steady", good);
    bench_figure(b, v, "share_429", share);
    bench_figure(b, v, "max_calls_in_a_second", top);
    bench_figure(b, v, "waiting_peak", RUN(v, "waiting_peak"));
    if (strcmp(v, "pitfall") != 0 && strcmp(v, "solution") != 0) {
      bench_check(b, v, "goodput (req/s)", good, ">=", 0.95 * lim, "0.95 R");
      bench_check(b, v, "share of calls answered 429", share, "<=", 0.01, "keep to R yourself");
    }
  }
  bench_say(b, "(ok/s: answers 200 per second the load generator counted within its window "
            "(requests still queued when it stopped are not in it); goodput: calls answered "
            "2xx, so requests answered 200, per second from the second second on (the upstream's "
            "/stats/series); calls and 429s: what the upstream saw and "
            "refused; 503 full: refused by the service's own bounded queue; max 1 s: the most "
            "calls in one second of the upstream's /stats/series; waiting: the service's peak "
            "wait queue)");
  if (bench_has(b, "solution")) {
    bench_target(b, "solution goodput (req/s)",
                 bench_query(sec, BENCH_MEAN, "ok", "variant=solution t_s>1"), ">=", 0.95 * lim,
                 "0.95 R: every token used");
    bench_target(b, "solution share of calls answered 429",
                 RUN("solution", "upstream_429") / RUN("solution", "upstream_calls"), "<=", 0.01,
                 "its own bucket keeps to R");
    bench_target(b, "solution wait queue peak", RUN("solution", "waiting_peak"), "<=", maxw,
                 "--max-waiting");
    bench_target(b, "solution calls in any second of the series",
                 bench_query(sec, BENCH_MAX, "calls", "variant=solution"), "<=", lim + burst,
                 "R + B (seconds of the upstream's clock)");
  }
  if (bench_has(b, "pitfall"))
    bench_target(b, "pitfall share of calls answered 429",
                 RUN("pitfall", "upstream_429") / RUN("pitfall", "upstream_calls"), ">=", 0.40,
                 "at 2R offered about half is above the limit");
  const char *vs = bench_each(b, "%s");
  bench_plot(b, "overtime", "calls", "csv='seconds.csv'; variants='%s'; ycol='calls'; "
             "ylabel=\"upstream calls per second\"; plottitle=\"Lab 14: calls/s at %g "
             "requests/s offered (the upstream allows %g/s, burst %g)\"", vs, rate, lim, burst);
  bench_plot(b, "overtime", "refused", "csv='seconds.csv'; variants='%s'; "
             "ycol='rate_limited'; ylabel=\"calls answered 429 per second\"; plottitle=\"Lab "
             "14: 429s per second at %g requests/s offered\"", vs, rate);
  bench_plot(b, "overtime", "waiting", "csv='timeline.csv'; variants='%s'; ycol='waiting'; "
             "ylabel=\"requests waiting for a token\"; plottitle=\"Lab 14: the wait queue "
             "(--max-waiting %g)\"", vs, maxw);
}

BENCH_MAIN(NULL, run, report)
