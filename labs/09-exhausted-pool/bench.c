/* bench.c - lab 09's bench: a pool of database sessions under a load above what the pitfall can
 * carry (make bench LAB=09).
 *
 * For each variant: two upstreams with the manifest's `upstream` options, one for the external
 * API and one for the database (so their counters tell them apart), the service with --upstream
 * and --db, then GET `path` open loop at each rate of `loads` for `step_s`, sampling /debug/stats
 * every 250 ms (sessions checked out, orders waiting, wait percentiles). The pitfall can serve at
 * most pool / (API + DB) orders/s, the solution pool / DB.
 * Writes pool.csv (a row per variant and load), timeline.csv, stats-VARIANT.csv and throughput,
 * latency and waiting plots.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int run(bench_t *b, const char *v) {
  double loads[8];
  int n = bench_cfg_list(b, "loads", "20 60 150 500", loads, 8), quick = bench_quick(b);
  bench_proc_t *api = bench_upstream(b, NULL);
  bench_proc_t *db = api ? bench_upstream(b, NULL) : NULL;
  bench_proc_t *svc = db ? bench_service(b, v, "--upstream %s --db %s", api->url, db->url) : NULL;
  if (!svc) return -1;
  char url[256], stats[96], name[64];
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/order?id=ord-1"));
  snprintf(stats, sizeof stats, "%s/debug/stats", svc->url);
  snprintf(name, sizeof name, "stats-%s.csv", v);
  bench_table_t *st = bench_table(b, name), *pool = bench_table(b, "pool.csv");
  for (int i = 0; i < n; i++) {
    bench_sampler_t *s = bench_sample(b, stats, 250, st, "variant=%s offered_rps=%g", v, loads[i]);
    bench_load_t l = {.url = url, .rate = loads[i], .conns = (int)bench_cfg_num(b, "conns", 400),
                      .duration_s = quick ? 1.5 : bench_cfg_num(b, "step_s", 5),
                      .timeout_ms = (long)bench_cfg_num(b, "timeout_ms", 2000),
                      .label = "steady", .progress = "load", .step = i + 1, .steps = n};
    bench_result_t r;
    int rc = bench_load(b, &l, &r);
    bench_sample_stop(s);
    if (rc != 0) return -1;
    json_t *j = bench_get_json("%s", stats);
    json_t *d = bench_get_json("%s/stats", db->url);
    bench_progress_done(b, "waiting %s, sessions out %s", bench_fmt(bench_num(j, "pool_waiting")),
                        bench_fmt(bench_num(j, "pool_checked_out")));
    bench_row(pool);
    bench_sets(pool, "variant", "%s", v);
    bench_set_result(pool, &r);
    const char *keys[] = {"pool_waiting", "pool_waiting_peak", "pool_checked_out_peak",
                          "pool_timeouts", "pool_wait_ms_p50", "pool_wait_ms_p99",
                          "pool_wait_ms_max", "orders_refused", "orders_ok"};
    for (int k = 0; k < 9; k++) bench_set(pool, keys[k], bench_num(j, keys[k]));
    bench_set(pool, "db_inflight_peak", bench_num(d, "inflight_peak"));
    bench_set(pool, "db_connections", bench_num(d, "connections_accepted"));
    json_decref(j);
    json_decref(d);
  }
  bench_table_t *tl = bench_table(b, "timeline.csv");
  for (int i = 0; i < bench_rows(st); i++) {
    bench_row(tl);
    bench_sets(tl, "variant", "%s", v);
    const char *cols[] = {"t_s", "offered_rps", "pool_waiting", "pool_checked_out", "inflight"};
    for (int k = 0; k < 5; k++) bench_set(tl, cols[k], bench_at(st, i, cols[k]));
  }
  return 0;
}

#define AT(v, load, col) bench_query(pool, BENCH_LAST, col, "variant=%s offered_rps=%g", v, load)

static void report(bench_t *b) {
  bench_table_t *pool = bench_table(b, "pool.csv");
  double loads[8];
  int n = bench_cfg_list(b, "loads", "20 60 150 500", loads, 8);
  double size = bench_cfg_opt(b, "args", "--pool", 4), api_ms = bench_cfg_opt(b, "args", "--api-ms", 100);
  double db_ms = bench_cfg_opt(b, "args", "--db-ms", 10);
  double a_ms = bench_cfg_opt(b, "args", "--acquire-timeout-ms", 200);
  double held = 1000 * size / (api_ms + db_ms), early = 1000 * size / db_ms, top = loads[n - 1];
  double mid = bench_cfg_num(b, "target_rps", top); /* above the pitfall's limit, below pool / DB */
  bench_say(b, "pool %g sessions, API %g ms, transaction %g ms, acquire timeout %g ms: held across "
            "the API the pool serves %g / %g ms = %.1f orders/s; held for the transaction only, "
            "%g / %g ms = %.0f/s", size, api_ms, db_ms, a_ms, size, api_ms + db_ms, held, size,
            db_ms, early);
  bench_say(b, "%-9s %7s %8s %7s %7s %8s %8s %7s %8s %8s %8s %7s", "variant", "offered", "ok/s",
            "503/s", "no ans", "p50 ms", "p99 ms", "waiting", "wait p99", "wait max", "sessions",
            "db peak");
  const char *v;
  for (int i = 0; (v = bench_variant(b, i)); i++)
    for (int k = 0; k < n; k++) {
      double dur = AT(v, loads[k], "duration_s");
      bench_say(b, "%-9s %7g %8s %7s %7.0f %8.1f %8.1f %7.0f %8s %8s %8.0f %7.0f", v, loads[k],
                bench_fmt(AT(v, loads[k], "ok_rps")),
                bench_fmt(dur > 0 ? AT(v, loads[k], "err_http") / dur : NAN),
                AT(v, loads[k], "err_timeout"), AT(v, loads[k], "p50_ms"), AT(v, loads[k], "p99_ms"),
                AT(v, loads[k], "pool_waiting_peak"), bench_fmt(AT(v, loads[k], "pool_wait_ms_p99")),
                bench_fmt(AT(v, loads[k], "pool_wait_ms_max")),
                AT(v, loads[k], "pool_checked_out_peak"), AT(v, loads[k], "db_inflight_peak"));
      if (k == n - 1) bench_figure(b, v, "ok_rps_top", AT(v, loads[k], "ok_rps"));
    }
  bench_say(b, "(503/s: refused at the acquire timeout; no ans: requests the load generator gave up "
            "on after %g ms; waiting: the most orders waiting for a session;\n wait p99/max: the "
            "pool's own wait-time figures, cumulative; sessions: the most checked out at once; "
            "db peak: the most transactions the database saw at once)",
            bench_cfg_num(b, "timeout_ms", 2000));
  if (bench_has(b, "solution")) {
    bench_target(b, "solution orders/s at the target load", AT("solution", mid, "ok_rps"), ">=",
                 0.9 * fmin(early, mid), "90%% of min(pool / DB = %.0f, offered = %g)", early, mid);
    bench_target(b, "solution acquire wait p99 (ms), top load", AT("solution", top, "pool_wait_ms_p99"),
                 "<=", a_ms, "the acquire timeout");
    bench_target(b, "solution longest acquire wait (ms)", AT("solution", top, "pool_wait_ms_max"),
                 "<=", a_ms, "the acquire timeout: a waiter gets a session by then or a 503");
    bench_target(b, "solution requests unanswered", AT("solution", top, "err_timeout"), "==", 0,
                 "every order answered, 200 or 503");
    bench_target(b, "solution p99 latency at the top load (ms)", AT("solution", top, "p99_ms"), "<=",
                 api_ms + a_ms + db_ms + 50, "API + acquire timeout + DB + 50 ms: no unbounded wait");
    bench_target(b, "solution database transactions at once", AT("solution", top, "db_inflight_peak"),
                 "<=", size, "the pool's size: sessions are exclusive");
  }
  if (bench_has(b, "pitfall"))
    bench_target(b, "pitfall orders/s at the target load", AT("pitfall", mid, "ok_rps"), "<=",
                 1.1 * held, "1.1 x pool / (API + DB) = %.1f", 1.1 * held);
  const char *vs = bench_each(b, "%s");
  bench_plot(b, "vsload", "throughput", "csv='pool.csv'; variants='%s'; ycol='ok_rps'; "
             "ylabel=\"orders answered 200 per second\"; xlabel=\"offered orders/s\"; diag=1; "
             "diag_text=\"everything offered\"; ref1=%.0f; ref1_text=\"pool / (API + DB)\"; "
             "ref2=%.0f; ref2_text=\"pool / DB\"; plottitle=\"Lab 09: throughput of a pool of %g "
             "(API %g ms, DB %g ms)\"", vs, held, early, size, api_ms, db_ms);
  bench_plot(b, "latency", "latency", "csv='pool.csv'; variants='%s'; delay=%g; timeout=%g; "
             "plottitle=\"Lab 09: p99 latency vs offered load (API + DB = %g ms)\"", vs,
             api_ms + db_ms, bench_cfg_num(b, "timeout_ms", 2000), api_ms + db_ms);
  bench_plot(b, "overtime", "waiting", "csv='timeline.csv'; variants='%s'; ycol='pool_waiting'; "
             "ylabel=\"orders waiting for a session\"; plottitle=\"Lab 09: the wait queue over "
             "the load steps (%g to %g orders/s)\"", vs, loads[0], top);
}

int main(int argc, char **argv) {
  return bench_main(argc, argv, &(bench_lab_t){.slug = BENCH_SLUG, .run = run, .report = report});
}
