/* bench.c - lab 13's bench: a steady stream of requests through an outage of the upstream
 * (make bench LAB=13).
 *
 * For each variant: the upstream with the manifest's options (finite capacity: --workers and
 * --latency-ms; an --outage window, relative to the POST /stats/reset that starts the load), the
 * service with its retry options, then GET `path` open loop at `rate` for `run_s`, sampling the
 * upstream's /stats (its queue) and the service's /debug/stats (answers so far) every 250 ms.
 * After the load, the upstream's /stats/series gives its attempts second by second. Then a
 * second upstream that answers every call 404 and `probe_n` requests: a right answer calls it
 * once per request.
 * Writes seconds.csv (per variant and second: attempts, goodput, queue), timeline.csv (the
 * samples), runs.csv (one row per variant) and attempts, goodput and queue plots over time.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int run(bench_t *b, const char *v) {
  int quick = bench_quick(b);
  double rate = bench_cfg_num(b, "rate", 100), run_s = bench_cfg_num(b, "run_s", 10);
  if (quick) run_s = fmin(run_s, 7);
  bench_proc_t *up = bench_upstream(b, NULL);
  bench_proc_t *svc = up ? bench_service(b, v, "--upstream %s", up->url) : NULL;
  if (!svc) return -1;
  char url[256], stats[96], ustats[96], name[64];
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/fetch?id=item-1"));
  snprintf(stats, sizeof stats, "%s/debug/stats", svc->url);
  snprintf(ustats, sizeof ustats, "%s/stats", up->url);
  snprintf(name, sizeof name, "svc-%s.csv", v);
  bench_table_t *st = bench_table(b, "%s", name);
  snprintf(name, sizeof name, "up-%s.csv", v);
  bench_table_t *ut = bench_table(b, "%s", name);
  bench_table_t *runs = bench_table(b, "runs.csv"), *sec = bench_table(b, "seconds.csv");
  bench_table_t *tl = bench_table(b, "timeline.csv");
  if (bench_post("%s/stats/reset", up->url) != 200) return -1; /* the outage's clock starts */
  double t0 = bench_elapsed_s(b);
  bench_sampler_t *s1 = bench_sample(b, stats, 250, st, "variant=%s", v);
  bench_sampler_t *s2 = bench_sample(b, ustats, 250, ut, "variant=%s", v);
  bench_load_t l = {.url = url, .rate = rate, .conns = (int)bench_cfg_num(b, "conns", 400),
                    .duration_s = run_s, .timeout_ms = (long)bench_cfg_num(b, "timeout_ms", 3000),
                    .label = "outage", .progress = "through the outage"};
  bench_result_t r;
  int rc = bench_load(b, &l, &r);
  bench_sample_stop(s1);
  bench_sample_stop(s2);
  if (rc != 0) return -1;
  json_t *series = bench_get_json("%s/stats/series", up->url);
  json_t *u = bench_get_json("%s", ustats);
  bench_progress_done(b, "upstream attempts %s for %s requests",
                      bench_fmt(bench_num(u, "requests_total")), bench_fmt((double)r.sent));
  /* Per second of the load: the upstream's attempts and 2xx (its series), the service's 200s
   * (the difference of fetch_ok between samples) and the upstream's deepest queue. */
  json_t *secs = series ? json_object_get(series, "seconds") : NULL;
  for (int k = 0; k < (int)run_s; k++) {
    json_t *o = secs ? json_array_get(secs, (size_t)k) : NULL;
    double ok0 = bench_query(st, BENCH_MAX, "fetch_ok", "t_s<=%g", t0 + k);
    double ok1 = bench_query(st, BENCH_MAX, "fetch_ok", "t_s<=%g", t0 + k + 1);
    bench_row_of(sec, v);
    bench_set(sec, "t_s", k + 0.5);
    bench_set(sec, "offered", rate);
    bench_set(sec, "attempts", bench_num(o, "attempts"));
    bench_set(sec, "upstream_ok", bench_num(o, "ok"));
    bench_set(sec, "goodput", (isnan(ok0) ? 0 : ok0) <= ok1 ? ok1 - (isnan(ok0) ? 0 : ok0) : NAN);
    bench_set(sec, "queue_max", bench_query(ut, BENCH_MAX, "queue_depth", "t_s>=%g t_s<%g",
                                            t0 + k, t0 + k + 1));
  }
  for (int i = 0; i < bench_rows(ut); i++) {
    bench_row_of(tl, v);
    bench_set(tl, "t_s", bench_at(ut, i, "t_s") - t0);
    bench_set(tl, "queue_depth", bench_at(ut, i, "queue_depth"));
    bench_set(tl, "in_service", bench_at(ut, i, "in_service"));
  }
  bench_row_of(runs, v);
  bench_set_result(runs, &r);
  bench_set(runs, "upstream_requests", bench_num(u, "requests_total"));
  bench_set(runs, "upstream_abandoned", bench_num(u, "abandoned"));
  bench_set(runs, "retries_denied", bench_stat(svc, "/debug/stats", "retries_denied"));
  json_decref(series);
  json_decref(u);
  /* A 404 is not worth a retry: a second upstream that answers every call 404. */
  bench_proc_t *up404 = bench_start(b, &(bench_spawn_t){.name = "upstream404", .bin = "upstream",
                                                        .args = "--status 404"});
  bench_proc_t *svc404 = up404 ? bench_service(b, v, "--upstream %s", up404->url) : NULL;
  if (!svc404) return -1;
  int n = (int)bench_cfg_num(b, "probe_n", 20);
  for (int i = 0; i < n; i++) {
    bench_http_t h;
    char u4[256];
    snprintf(u4, sizeof u4, "%s/fetch?id=gone-%d", svc404->url, i);
    if (bench_http("GET", u4, NULL, 5000, &h) == 0) bench_http_free(&h);
  }
  bench_set(runs, "probe_4xx_requests", n);
  bench_set(runs, "probe_4xx_upstream_calls", bench_stat(up404, "/stats", "requests_total"));
  return 0;
}

#define RUN(v, col) bench_query(runs, BENCH_LAST, col, "variant=%s", v)

/* The first second (counted from the outage's end) from which goodput stays >= 90% of offered
 * for the rest of the run; NAN when it never does. */
static double recovery_s(bench_table_t *sec, const char *v, double end_s, double rate) {
  double last_bad = bench_query(sec, BENCH_MAX, "t_s", "variant=%s t_s>%g goodput<%g", v, end_s,
                                0.9 * rate);
  double last = bench_query(sec, BENCH_MAX, "t_s", "variant=%s", v);
  if (isnan(last_bad)) return 0;
  if (last_bad >= last) return NAN;
  return last_bad + 0.5 - end_s;
}

static void report(bench_t *b) {
  bench_table_t *runs = bench_table(b, "runs.csv"), *sec = bench_table(b, "seconds.csv");
  double rate = bench_cfg_num(b, "rate", 100);
  double from_ms = 0, to_ms = 0;
  const char *outage = strstr(bench_cfg(b, "upstream", ""), "--outage ");
  if (outage == NULL || sscanf(outage + 9, "%lf-%lf", &from_ms, &to_ms) != 2)
    bench_log(b, "no --outage START-END in the manifest's upstream options");
  double workers = bench_cfg_opt(b, "upstream", "--workers", 4);
  double lat = bench_cfg_opt(b, "upstream", "--latency-ms", 20);
  bench_say(b, "%g requests/s offered; upstream %s: capacity %g workers / %g ms = %g calls/s, "
            "down from %g to %g s", rate, bench_cfg(b, "upstream", ""), workers, lat,
            1000 * workers / lat, from_ms / 1000, to_ms / 1000);
  bench_say(b, "%-9s %8s %10s %10s %9s %10s %10s %8s", "variant", "sent", "ok", "upstream",
            "ampl", "ampl out", "recovery", "404 x");
  const char *v;
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    /* Seconds wholly inside the outage. */
    double a = bench_query(sec, BENCH_SUM, "attempts", "variant=%s t_s>%g t_s<%g", v,
                           from_ms / 1000, to_ms / 1000);
    double nsec = bench_query(sec, BENCH_COUNT, "attempts", "variant=%s t_s>%g t_s<%g", v,
                              from_ms / 1000, to_ms / 1000);
    double amp_out = a / (nsec * rate);
    double rec = recovery_s(sec, v, to_ms / 1000, rate);
    double p4 = RUN(v, "probe_4xx_upstream_calls") / RUN(v, "probe_4xx_requests");
    bench_say(b, "%-9s %8.0f %10.0f %10.0f %8.2fx %9.2fx %9s %7.2fx", v, RUN(v, "sent"),
              RUN(v, "ok"), RUN(v, "upstream_requests"),
              RUN(v, "upstream_requests") / RUN(v, "sent"), amp_out,
              isnan(rec) ? "never" : bench_fmt(rec), p4);
    bench_figure(b, v, "amplification_outage", amp_out);
    bench_figure(b, v, "recovery_s", isnan(rec) ? -1 : rec);
    bench_figure(b, v, "calls_per_404_request", p4);
  }
  bench_say(b, "(ampl: upstream calls / requests over the run; ampl out: over the seconds inside "
            "the outage; recovery: seconds after the outage until goodput stays >= 90%% of "
            "offered; 404 x: upstream calls per request when it answers 404)");
  double a_sol = NAN, a_pit = NAN, r_sol = NAN, r_pit = NAN;
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    double a = bench_query(sec, BENCH_SUM, "attempts", "variant=%s t_s>%g t_s<%g", v,
                           from_ms / 1000, to_ms / 1000) /
               (rate * bench_query(sec, BENCH_COUNT, "attempts", "variant=%s t_s>%g t_s<%g", v,
                                   from_ms / 1000, to_ms / 1000));
    double rec = recovery_s(sec, v, to_ms / 1000, rate);
    if (strcmp(v, "solution") == 0) a_sol = a, r_sol = rec;
    if (strcmp(v, "pitfall") == 0) a_pit = a, r_pit = rec;
    if (strcmp(v, "pitfall") != 0 && strcmp(v, "solution") != 0) {
      bench_check(b, v, "amplification during the outage", a, "<=", 1.2, "1 + a 10%% budget");
      bench_check(b, v, "recovery after the outage (s)", isnan(rec) ? 1e9 : rec, "<=", 2,
                  "goodput >= 90%% of offered within 2 s");
    }
  }
  if (bench_has(b, "solution")) {
    bench_target(b, "solution amplification during the outage", a_sol, "<=", 1.2,
                 "1 + the 10%% budget (+ 5 a second)");
    bench_target(b, "solution recovery after the outage (s)", isnan(r_sol) ? 1e9 : r_sol, "<=", 2,
                 "goodput >= 90%% of offered within 2 s of the end");
    bench_target(b, "solution upstream calls per request answered 404",
                 RUN("solution", "probe_4xx_upstream_calls") / RUN("solution", "probe_4xx_requests"),
                 "==", 1, "a 4xx is never retried");
  }
  if (bench_has(b, "pitfall"))
    bench_target(b, "pitfall amplification during the outage", a_pit, ">=", 3,
                 "immediate retries: up to 1 + max_retries calls per request");
  if (bench_has(b, "pitfall") && bench_has(b, "solution"))
    bench_target(b, "pitfall recovery - solution recovery (s)",
                 (isnan(r_pit) ? 1e9 : r_pit) - (isnan(r_sol) ? 1e9 : r_sol), ">=", 1,
                 "the storm outlives the outage (1e9: never recovered during the run)");
  const char *vs = bench_each(b, "%s");
  bench_plot(b, "overtime", "attempts", "csv='seconds.csv'; variants='%s'; ycol='attempts'; "
             "ylabel=\"upstream calls per second\"; plottitle=\"Lab 13: upstream attempts/s "
             "through an outage from %g to %g s (%g requests/s offered)\"", vs, from_ms / 1000,
             to_ms / 1000, rate);
  bench_plot(b, "overtime", "goodput", "csv='seconds.csv'; variants='%s'; ycol='goodput'; "
             "ylabel=\"requests answered 200 per second\"; plottitle=\"Lab 13: goodput through "
             "an outage from %g to %g s (offered %g/s)\"", vs, from_ms / 1000, to_ms / 1000, rate);
  bench_plot(b, "overtime", "queue", "csv='timeline.csv'; variants='%s'; ycol='queue_depth'; "
             "ylabel=\"calls waiting for a worker\"; plottitle=\"Lab 13: the upstream's queue "
             "(%g workers x %g ms) through the outage\"", vs, workers, lat);
  bench_plot_text(b, "overtime", "csv='seconds.csv'; variants='%s'; ycol='goodput'; "
                  "ylabel=\"200/s\"; plottitle=\"goodput/s through the outage\"", vs);
}

BENCH_MAIN(NULL, run, report)
