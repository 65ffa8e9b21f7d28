/* bench.c - lab 15's bench: find the stall (make bench LAB=15).
 *
 * A catalog rebuilt on the loop every --rebuild-ms holds it for tens of ms: at a steady load,
 * most requests never meet a rebuild and the median stays where it was, but the ones that do
 * wait for all of it, so the p99 is the rebuild's length. For each variant: the service (the
 * manifest's `args`, which turn the stall detector on) under an open-loop /price load at `rate`
 * req/s for `run_s` s on `conns` connections, with /debug/stats sampled every 200 ms
 * (timeline.csv); then the detector's count, its worst offender (GET /debug/stalls) and the
 * rebuilds done in the same window. Once per run (setup) the detector's own cost: build/bin/hello
 * with and without LOOPHOLES_STALL_MS, each under its own closed-loop load, both at once, in
 * rounds of 2 s (overhead.csv): each side's throughput and its CPU time per request (every
 * thread's, from schedstat: the watchdog's too). The overhead is the median of the rounds'
 * on/off ratios: both sides of a round meet the same machine, and a bad round does not count.
 * Targets: pitfall p99 >= 10 x p50 and the detector naming the culprit at least once per
 * rebuild; solution p99 <= 3 x p50 and no slow callback; detector overhead <= 2% throughput.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <pthread.h>

#include "lg.h"

#define ROUNDS 8

/* CPU time every thread of pid has used, in ns (/proc/PID/task/TID/schedstat); NAN if gone. */
static double proc_cpu_ns(int pid) {
  char path[64];
  double sum = 0;
  struct dirent *e;
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *d = opendir(path);
  if (d == NULL) return NAN;
  while ((e = readdir(d)) != NULL) {
    char stat_path[96];
    unsigned long long cpu;
    FILE *f;
    if (e->d_name[0] == '.') continue;
    snprintf(stat_path, sizeof stat_path, "/proc/%d/task/%.24s/schedstat", pid, e->d_name);
    if ((f = fopen(stat_path, "r")) == NULL) continue; /* a thread that just ended */
    if (fscanf(f, "%llu", &cpu) == 1) sum += (double)cpu;
    fclose(f);
  }
  closedir(d);
  return sum;
}

/* The median of the rounds' ratios col(on) / col(off). */
static double median_ratio(const bench_table_t *o, const char *col, int rounds) {
  double r[64];
  int n = 0;
  for (int i = 1; i <= rounds && n < 64; i++) {
    double on = bench_query(o, BENCH_LAST, col, "side=on round=%d", i);
    double off = bench_query(o, BENCH_LAST, col, "side=off round=%d", i);
    if (!isnan(on) && !isnan(off) && off > 0) r[n++] = on / off;
  }
  for (int i = 1; i < n; i++) /* insertion sort: a handful of rounds */
    for (int j = i; j > 0 && r[j] < r[j - 1]; j--) {
      double x = r[j];
      r[j] = r[j - 1];
      r[j - 1] = x;
    }
  return n == 0 ? NAN : n % 2 ? r[n / 2] : (r[n / 2 - 1] + r[n / 2]) / 2;
}

/* One side of a round: a closed-loop load on one hello, on a thread of its own. */
typedef struct side {
  lg_opts_t opts;
  lg_result_t res;
  char url[128];
  int rc;
} side_t;

/* Who calls it: pthread_create, once per side and round; the loadgen engine runs its own loop. */
static void *side_run(void *arg) {
  side_t *s = arg;
  s->rc = lg_run(&s->opts, &s->res);
  return NULL;
}

/* hello with the detector off and on, both at once (side by side: whatever the machine does
 * during a round, it does to both), closed loop, ROUNDS rounds of 2 s. Each round starts a fresh
 * pair, the other side first every other round (which process the scheduler favours is not
 * the detector's doing). One row per round and side in overhead.csv, with each side's CPU time
 * per request. */
static int setup(bench_t *b) {
  bench_table_t *t = bench_table(b, "overhead.csv");
  int rounds = bench_quick(b) ? 2 : ROUNDS;
  for (int i = 0; i < rounds; i++) {
    side_t sides[2];
    pthread_t th[2];
    double cpu0[2];
    bench_proc_t *p[2] = {NULL, NULL};
    for (int j = 0; j < 2; j++) {
      int k = (i + j) % 2; /* 0: off, 1: on */
      if (k) setenv("LOOPHOLES_STALL_MS", "20", 1);
      p[k] = bench_start(b, &(bench_spawn_t){.name = k ? "hello-on" : "hello-off", .bin = "hello"});
      unsetenv("LOOPHOLES_STALL_MS");
      if (!p[k]) return -1;
    }
    for (int k = 0; k < 2; k++) {
      side_t *s = &sides[k];
      snprintf(s->url, sizeof s->url, "%s/", p[k]->url);
      lg_opts_init(&s->opts);
      s->opts.url = s->url;
      s->opts.rate = 0;
      s->opts.conns = 20;
      s->opts.duration_s = 2;
      s->opts.warmup_s = 0.3;
      s->opts.quiet = 1;
      cpu0[k] = proc_cpu_ns(p[k]->pid);
    }
    for (int j = 0; j < 2; j++) {
      int k = (i + j) % 2;
      if (pthread_create(&th[k], NULL, side_run, &sides[k]) != 0) {
        fprintf(stderr, "bench15: pthread_create failed\n");
        return -1;
      }
    }
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < 2; k++) {
      const lg_result_t *lr = &sides[k].res;
      bench_result_t r = {.offered_rps = lr->offered_rps, .achieved_rps = lr->achieved_rps,
                          .ok_rps = lr->ok_rps, .sent = lr->sent, .responses = lr->responses,
                          .ok = lr->ok, .err_connect = lr->err_connect,
                          .err_timeout = lr->err_timeout, .err_http = lr->err_http,
                          .err_other = lr->err_other, .p50_ms = lr->p50_ms, .p90_ms = lr->p90_ms,
                          .p99_ms = lr->p99_ms, .p999_ms = lr->p999_ms, .max_ms = lr->max_ms,
                          .mean_ms = lr->mean_ms, .duration_s = lr->duration_s,
                          .conns_opened = lr->conns_opened};
      if (sides[k].rc != 0) {
        fprintf(stderr, "bench15: the load on %s could not run\n", sides[k].url);
        return -1;
      }
      snprintf(r.label, sizeof r.label, "%s", k ? "detector on" : "detector off");
      double cpu_ns = proc_cpu_ns(p[k]->pid) - cpu0[k]; /* over the warmup and the measured part */
      double served = (double)r.ok * (2 + 0.3) / 2;
      bench_row(t);
      bench_sets(t, "side", "%s", k ? "on" : "off");
      bench_set(t, "round", i + 1);
      bench_set_result(t, &r);
      bench_set(t, "cpu_us_per_req", served > 0 ? cpu_ns / 1e3 / served : NAN);
    }
    bench_say(b, "setup: hello side by side, round %d/%d: detector off %s req/s, on %s req/s",
              i + 1, rounds, bench_fmt(sides[0].res.ok_rps), bench_fmt(sides[1].res.ok_rps));
    bench_stop(b, p[1]);
    bench_stop(b, p[0]);
  }
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
    int rounds = (int)bench_query(o, BENCH_MAX, "round", NULL);
    double rps = median_ratio(o, "ok_rps", rounds), cpu = median_ratio(o, "cpu_us_per_req", rounds);
    bench_print(b, o, "side round ok_rps p50_ms p99_ms cpu_us_per_req", NULL);
    bench_figure(b, NULL, "detector_off_rps", off);
    bench_figure(b, NULL, "detector_on_rps", on);
    bench_figure(b, NULL, "detector_cpu_per_request_pct", 100 * (cpu - 1));
    bench_target(b, "stall detector overhead on hello (% throughput)", 100 * (1 - rps), "<=",
                 2, "median of %d rounds' on/off ratios; means on %s vs off %s req/s; CPU per "
                 "request %+.1f%%", rounds, bench_fmt(on), bench_fmt(off), 100 * (cpu - 1));
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
