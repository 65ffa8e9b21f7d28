/* bench.c - lab 02's bench: what a connection per request costs when each new connection pays a
 * handshake (the upstream's --connect-cost-ms C) against a limit of M connections.
 *
 * For each variant and offered load: a fresh upstream and service, one open-loop step, then the
 * service's /debug/stats, the sockets in TIME_WAIT towards the upstream, and (service stopped,
 * so its slots are free) the upstream's /stats. A connection per request can do at most
 * M / (C + L) req/s. Writes conncost.csv and conncost-{latency,throughput,errors,conns}.png.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int point(bench_t *b, const char *v, double rate, int i, int n) {
  bench_proc_t *up = bench_upstream(b, NULL);
  bench_proc_t *svc = up ? bench_service(b, v, "--upstream %s", up->url) : NULL;
  if (!svc) return -1;
  char url[256];
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/price?sku=sku-1"));
  double warm = bench_quick(b) ? 0.5 : bench_cfg_num(b, "warmup_s", 1);
  bench_load_t l = {.url = url, .rate = rate, .conns = (int)bench_cfg_num(b, "conns", 600),
                    .duration_s = bench_quick(b) ? 1 : bench_cfg_num(b, "step_s", 3),
                    .warmup_s = warm, .label = v, .step = i, .steps = n};
  bench_result_t r;
  if (bench_load(b, &l, &r) != 0) return -1;
  double opened = bench_stat(svc, "/debug/stats", "upstream_connections_opened");
  long tw = bench_sockets("state time-wait '( dport = :%d )'", up->port);
  bench_stop(b, svc);
  json_t *st = bench_get_json("%s/stats", up->url);
  double acc = bench_num(st, "connections_accepted") - 1; /* the /stats call is one */
  double req = bench_num(st, "requests_total"),
         errors = (double)(r.err_connect + r.err_timeout + r.err_http + r.err_other);
  bench_table_t *t = bench_table(b, "conncost.csv");
  bench_row_of(t, v);
  bench_set(t, "offered_rps", r.offered_rps);
  bench_set(t, "achieved_rps", r.achieved_rps);
  bench_set(t, "ok_rps", r.ok_rps);
  bench_set(t, "sent", (double)r.sent);
  bench_set(t, "responses", (double)r.responses);
  bench_set(t, "ok", (double)r.ok);
  bench_set(t, "errors", errors);
  bench_set(t, "err_pct", r.sent ? round(1000 * errors / (double)r.sent) / 10 : 0);
  double lat[] = {r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.mean_ms};
  const char *names[] = {"p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"};
  for (int k = 0; k < 5; k++) bench_set(t, names[k], lat[k]);
  bench_set(t, "up_conns", acc);
  bench_set(t, "up_requests", req);
  bench_set(t, "up_conns_per_s", round(10 * acc / (warm + r.duration_s)) / 10);
  bench_set(t, "conns_per_req", req > 0 ? round(1000 * acc / req) / 1000 : NAN);
  bench_set(t, "up_inflight_peak", bench_num(st, "inflight_peak"));
  bench_set(t, "time_wait", tw < 0 ? NAN : (double)tw);
  bench_set(t, "lab_conns_opened", opened);
  json_decref(st);
  bench_progress_done(b, "p50 %s ms, upstream connections %.0f", bench_fmt(r.p50_ms), acc);
  return bench_stop(b, up) == 0 ? 0 : -1;
}

static int run(bench_t *b, const char *v) {
  double loads[16];
  int n = bench_quick(b) ? 2 : bench_cfg_list(b, "loads", "50 100 200 500", loads, 16);
  if (bench_quick(b)) loads[0] = 100, loads[1] = 500;
  for (int i = 0; i < n; i++)
    if (point(b, v, loads[i], i + 1, n) != 0) return -1;
  return 0;
}

static void report(bench_t *b) {
  bench_table_t *t = bench_table(b, "conncost.csv");
  double lat = bench_cfg_opt(b, "upstream", "--latency-ms", 0);
  double cost = bench_cfg_opt(b, "upstream", "--connect-cost-ms", 0);
  double m = bench_cfg_opt(b, "upstream", "--max-conns", 10000);
  double pool = bench_cfg_opt(b, "args", "--pool", 8), at = bench_cfg_num(b, "table_rps", 500);
  double limit = m * 1000 / (cost + lat);
  if (isnan(bench_query(t, BENCH_LAST, "p50_ms", "offered_rps=%g", at)))
    at = bench_query(t, BENCH_MAX, "offered_rps", NULL); /* a quick run: its highest load */
  bench_say(b, "lab 02 at %.0f req/s offered (upstream latency %.0f ms, connect cost %.0f ms, at "
            "most %.0f connections, backlog %.0f; lab %s):", at, lat, cost, m,
            bench_cfg_opt(b, "upstream", "--backlog", 511), bench_cfg(b, "args", ""));
  const char *v;
  for (int i = 0; (v = bench_variant(b, i)); i++) {
#define AT(col) bench_query(t, BENCH_LAST, col, "variant=%s offered_rps=%g", v, at)
    bench_say(b,
              "  %-19s p50 %.1f ms, p99 %.1f ms, %.0f req/s, %.1f%% errors; upstream connections "
              "%.0f (%.3f per request), %.0f in TIME_WAIT",
              !strcmp(v, "solution")  ? "shared client"
              : !strcmp(v, "pitfall") ? "client per request"
                                      : v,
              AT("p50_ms"), AT("p99_ms"), AT("ok_rps"), AT("err_pct"), AT("up_conns"),
              AT("conns_per_req"), AT("time_wait"));
    bench_figure(b, v, "p50_ms", AT("p50_ms"));
    bench_figure(b, v, "conns_per_req", AT("conns_per_req"));
  }
  bench_say(b, "  quoted: shared client p50 8 ms, p99 23 ms, 500 req/s, 0%% errors;\n"
            "          client per request p50 218 ms, p99 891 ms, 112 req/s, 12%% errors");
  bench_say(b, "  the limit for a connection per request: M / (C + L) = %.0f / (%.0f + %.0f) ms = "
            "%.0f req/s", m, cost, lat, limit);
  double sp50 = bench_query(t, BENCH_LAST, "p50_ms", "variant=solution offered_rps=%g", at);
  if (bench_has(b, "solution")) {
    bench_target(b, "solution p50 (ms)", sp50, "<=", 2 * lat, "2 x the upstream's latency");
    bench_target(b, "solution errors", bench_query(t, BENCH_LAST, "errors",
                 "variant=solution offered_rps=%g", at), "==", 0, "a pool serves them all");
    bench_target(b, "solution upstream connections", bench_query(t, BENCH_LAST, "up_conns",
                 "variant=solution offered_rps=%g", at), "<=", pool, "the pool");
  }
  if (bench_has(b, "solution") && bench_has(b, "pitfall")) {
    bench_target(b, "pitfall p50 / solution p50", bench_query(t, BENCH_LAST, "p50_ms",
                 "variant=pitfall offered_rps=%g", at) / sp50, ">=", 10, "each call pays C");
    bench_target(b, "pitfall connections per request", bench_query(t, BENCH_LAST,
                 "conns_per_req", "variant=pitfall offered_rps=%g", at), ">=", 0.9, "one each");
  }
  const char *vs = bench_each(b, "%s");
  bench_plot(b, "vsload", "conncost-latency", "csv='conncost.csv'; variants='%s'; ycol='p50_ms'; "
             "ycol2='p99_ms'; logy=1; ylabel='latency (ms, log scale): p50 solid, p99 dotted'; "
             "ref1=%g; ref1_text='upstream latency L = %g ms'; ref2=%g; ref2_text='L + connect "
             "cost C = %g ms'; plottitle='latency vs offered load (upstream latency %g ms, connect "
             "cost %g ms, at most %g connections)'", vs, lat, lat, lat + cost, lat + cost, lat,
             cost, m);
  bench_plot(b, "vsload", "conncost-throughput",
             "csv='conncost.csv'; variants='%s'; ycol='ok_rps'; "
             "ylabel='ok responses/s'; diag=1; diag_text='everything offered'; ref1=%.0f; "
             "ref1_text='a connection per request: M / (C + L) = %.0f req/s'; plottitle='answered "
             "(200) per second vs offered load'",
             vs, limit, limit);
  bench_plot(
      b, "vsload", "conncost-errors",
      "csv='conncost.csv'; variants='%s'; ycol='err_pct'; "
      "ymin=0; ymax=100; ylabel='errors (%% of requests sent)'; plottitle='errors vs offered "
      "load: timeouts (504) and failed calls (502)'",
      vs);
  bench_plot(
      b, "vsload", "conncost-conns",
      "csv='conncost.csv'; variants='%s'; "
      "ycol='up_conns_per_s'; logy=1; ymin=0.1; diag=1; diag_text='one per request offered'; "
      "ylabel='connections opened/s (log scale)'; plottitle='new connections the upstream "
      "accepted per second (pool %g)'",
      vs, pool);
}

BENCH_MAIN(NULL, run, report)
