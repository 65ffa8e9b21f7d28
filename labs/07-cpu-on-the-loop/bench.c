/* bench.c - lab 07's bench: CPU-bound /hash jobs on the loop versus on libuv's thread pool
 * (make bench LAB=07).
 *
 * A job of T ms of CPU on the loop caps a service at 1000/T req/s and makes every other request
 * wait for the jobs ahead of it. On the pool it runs beside the loop, min(cores, pool) at a time:
 * the ceiling is min(cores, pool) / T, whatever the design, and the loop stays free. For each
 * variant: one open-loop step per load in the manifest's `loads`, each with a thread probing
 * GET /health every PROBE_GAP_MS, then a closed-loop step (the peak). T is measured in the same
 * run, from the service's own counters (hash_cpu_ms / hash_done: thread CPU time per job). The
 * solution is then run at its peak with UV_THREADPOOL_SIZE = 1, 2, 4, 8: past the core count a
 * bigger pool adds threads, not throughput. Writes sweep.csv, pools.csv, stats-VARIANT.csv and
 * the throughput, health, looplag and pools plots.
 */
#include "bench.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LOADS 16
#define MAX_PROBES 4096
/* The gap between two /health probes. A p99 needs well over 100 of them: at one every 50 ms a
 * 3-s step gave ~55, and their "p99" was the single worst probe - one scheduling hiccup. At 10 ms
 * a step gives ~250 (the 3rd worst is the p99), for ~100 connections a second: a few % of a core. */
#define PROBE_GAP_MS 10

/* GET /health in a loop, one at a time, every PROBE_GAP_MS, until told to stop. */
typedef struct prober {
  pthread_t thread;
  char url[128];
  volatile int stop;
  double lat[MAX_PROBES];
  int n;
} prober_t;

static void *probe_main(void *arg) {
  prober_t *p = arg;
  while (!p->stop && p->n < MAX_PROBES) {
    bench_http_t r;
    double ms = 5000;
    if (bench_http("GET", p->url, NULL, 5000, &r) == 0 && r.status == 200) ms = r.total_ms;
    bench_http_free(&r);
    p->lat[p->n++] = ms;
    bench_sleep_ms(PROBE_GAP_MS);
  }
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double p99_of(double *v, int n) {
  if (n == 0) return NAN;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  int i = (int)ceil(0.99 * n) - 1;
  return v[i < 0 ? 0 : i];
}

/* One step on svc: load at rate (0: closed loop), with the /health prober; a row of sweep.csv
 * (or of into) with loadgen's columns, /health p99, loop lag and the CPU time per job. */
static int step(bench_t *b, bench_proc_t *svc, const char *v, bench_table_t *into,
                bench_table_t *stats, double rate, int i, int n, const char *label) {
  int conns = (int)bench_cfg_num(b, "conns", 32);
  double step_s = bench_quick(b) ? 1 : bench_cfg_num(b, "step_s", 3);
  char url[256], st[96];
  static prober_t probe;
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/hash?cost=35000"));
  snprintf(st, sizeof st, "%s/debug/stats", svc->url);
  memset(&probe, 0, sizeof probe);
  snprintf(probe.url, sizeof probe.url, "%s/health", svc->url);
  double done0 = bench_stat(svc, "/debug/stats", "hash_done");
  double cpu0 = bench_stat(svc, "/debug/stats", "hash_cpu_ms");
  bench_post("%s", st); /* the loop-lag maximum covers this step */
  bench_sampler_t *s = stats ? bench_sample(b, st, 100, stats, "step=%d offered_rps=%g", i, rate) : NULL;
  if (pthread_create(&probe.thread, NULL, probe_main, &probe) != 0) {
    bench_log(b, "pthread_create failed");
    return -1;
  }
  bench_load_t l = {.url = url, .rate = rate, .conns = conns, .duration_s = step_s,
                    .warmup_s = rate > 0 ? 0 : 0.5, .timeout_ms = 5000,
                    .label = label, .step = i, .steps = n};
  bench_result_t r;
  int rc = bench_load(b, &l, &r);
  probe.stop = 1;
  pthread_join(probe.thread, NULL);
  if (s) bench_sample_stop(s);
  if (rc != 0) return -1;
  double lag = bench_stat(svc, "/debug/stats", "loop_lag_max_ms");
  if (stats) lag = fmax(lag, bench_query(stats, BENCH_MAX, "loop_lag_max_ms", "step=%d", i));
  double done = bench_stat(svc, "/debug/stats", "hash_done") - done0;
  double cpu = bench_stat(svc, "/debug/stats", "hash_cpu_ms") - cpu0;
  double health = p99_of(probe.lat, probe.n);
  bench_row_of(into, v);
  bench_set_result(into, &r);
  bench_set(into, "health_p99_ms", health);
  bench_set(into, "health_probes", probe.n);
  bench_set(into, "health_p50_ms", probe.n ? probe.lat[(probe.n - 1) / 2] : NAN); /* p99_of sorted */
  bench_set(into, "lag_max_ms", lag);
  bench_set(into, "cpu_ms_per_job", done > 0 ? cpu / done : NAN);
  bench_set(into, "refused", bench_stat(svc, "/debug/stats", "hash_refused"));
  bench_progress_done(b, "%s ms of CPU per job, /health p99 %s ms, loop lag max %s ms",
                      bench_fmt(done > 0 ? cpu / done : NAN), bench_fmt(health), bench_fmt(lag));
  return 0;
}

static int run(bench_t *b, const char *v) {
  double loads[MAX_LOADS];
  int n = bench_cfg_list(b, "loads", "10 25 50 75 100 150", loads, MAX_LOADS), collapsed = 0;
  if (bench_quick(b) && n > 3) loads[1] = loads[n / 2], loads[2] = loads[n - 1], n = 3;
  loads[n++] = 0; /* the closed-loop peak */
  bench_proc_t *svc = bench_service(b, v, NULL);
  if (!svc) return -1;
  char name[64];
  snprintf(name, sizeof name, "stats-%s.csv", v);
  bench_table_t *sweep = bench_table(b, "sweep.csv"), *t = bench_table(b, name);
  for (int i = 0; i < n; i++) {
    if (loads[i] > 0 && collapsed) continue; /* it would only repeat its cap while timing out */
    if (step(b, svc, v, sweep, t, loads[i], i + 1, n, loads[i] > 0 ? "open" : "closed") != 0)
      return -1;
    double ok = bench_query(sweep, BENCH_LAST, "ok_rps", "variant=%s", v);
    if (loads[i] > 0 && ok < 0.5 * loads[i] &&
        bench_query(sweep, BENCH_LAST, "refused", "variant=%s", v) == 0)
      collapsed = 1; /* neither served nor refused: a queue that only grows */
  }
  if (collapsed) bench_log(b, "%s collapsed: its higher loads were skipped", v);
  if (strcmp(v, "solution") != 0 || bench_quick(b)) return 0;
  /* The pool's size, at the peak: UV_THREADPOOL_SIZE is read when the pool starts. */
  bench_stop(b, svc);
  static const char *const pools[] = {"1", "2", "4", "8"};
  bench_table_t *pt = bench_table(b, "pools.csv");
  for (int k = 0; k < 4; k++) {
    setenv("UV_THREADPOOL_SIZE", pools[k], 1);
    svc = bench_service(b, v, NULL);
    unsetenv("UV_THREADPOOL_SIZE");
    if (!svc) return -1;
    char label[32];
    snprintf(label, sizeof label, "pool %s", pools[k]);
    if (step(b, svc, v, pt, NULL, 0, k + 1, 4, label) != 0) return -1;
    bench_set(pt, "pool", atof(pools[k]));
    bench_stop(b, svc);
  }
  return 0;
}

static void report(bench_t *b) {
  bench_table_t *t = bench_table(b, "sweep.csv"), *pt = bench_table(b, "pools.csv");
  double cores = (double)sysconf(_SC_NPROCESSORS_ONLN), pool = 4;
  const char *env = getenv("UV_THREADPOOL_SIZE");
  if (env && atoi(env) > 0) pool = atoi(env);
  /* T: the CPU time per job, measured at the solution's (or the pitfall's) peak. */
  double cpu = bench_query(t, BENCH_LAST, "cpu_ms_per_job", "variant=solution offered_rps=0");
  if (isnan(cpu)) cpu = bench_query(t, BENCH_LAST, "cpu_ms_per_job", "offered_rps=0");
  double par = fmin(cores, pool), limit = par * 1000 / cpu, blocked = 1000 / cpu;
  static const char *const shown[] = {"pitfall", "solution", "exercise"};
  char vs[64] = "";
  double peak[3], health[3], lag[3], cpu_at[3];

  bench_print(b, t, "variant label offered_rps ok_rps p50_ms p99_ms err_http refused "
              "health_p99_ms lag_max_ms cpu_ms_per_job", NULL);
  bench_say(b, "CPU time per job T = %s ms (measured in this run: hash_cpu_ms / hash_done); "
            "%.0f cores, a pool of %.0f: on the loop at most 1000/T = %.0f req/s, on the pool at "
            "most min(cores, pool)/T = %.0f req/s", bench_fmt(cpu), cores, pool, blocked, limit);
  /* The cheap requests are judged at the highest offered load the loop alone could carry. */
  double at = bench_query(t, BENCH_MAX, "offered_rps", "offered_rps>0 offered_rps<=%g", blocked);
  for (int i = 0; i < 3; i++) {
    const char *v = shown[i];
    peak[i] = bench_query(t, BENCH_MAX, "ok_rps", "variant=%s", v);
    double at_v = bench_query(t, BENCH_MAX, "offered_rps", "variant=%s offered_rps>0 "
                              "offered_rps<=%g", v, at); /* a collapsed variant stopped earlier */
    health[i] = bench_query(t, BENCH_LAST, "health_p99_ms", "variant=%s offered_rps=%g", v, at_v);
    lag[i] = bench_query(t, BENCH_LAST, "lag_max_ms", "variant=%s offered_rps=%g", v, at_v);
    cpu_at[i] = bench_query(t, BENCH_LAST, "cpu_ms_per_job", "variant=%s offered_rps=%g", v, at_v);
    if (isnan(peak[i])) continue;
    snprintf(vs + strlen(vs), sizeof vs - strlen(vs), "%s%s", vs[0] ? " " : "", v);
    bench_say(b, "%-9s peak %s ok/s; at %.0f req/s offered: /health p99 %s ms, loop lag max %s ms",
              v, bench_fmt(peak[i]), at_v, bench_fmt(health[i]), bench_fmt(lag[i]));
    bench_figure(b, v, "peak_ok_rps", peak[i]);
    bench_figure(b, v, "health_p99_ms", health[i]);
    bench_figure(b, v, "lag_max_ms", lag[i]);
    /* The grader's figure (labs/manifest `perf`): the median /health at the peak, a robust one. */
    bench_figure(b, v, "health_p50_peak_ms",
                 bench_query(t, BENCH_LAST, "health_p50_ms", "variant=%s offered_rps=0", v));
    /* ...and the loop's idle share at the peak: a loop that hashes is never idle, one that hands
     * the jobs to the pool mostly waits, however busy the machine (the wait for a core counts
     * as idle). */
    bench_figure(b, v, "idle_at_peak", bench_query(bench_table(b, "stats-%s.csv", v), BENCH_MEAN,
                                                   "idle_fraction", "offered_rps=0 idle_fraction>=0"));
  }
  bench_figure(b, NULL, "cpu_ms_per_job", cpu);
  if (bench_has(b, "pitfall")) {
    /* Against the pitfall's own T at its peak: one core hashing, its jobs take less CPU time
     * than the solution's with both cores busy. */
    double t_pit = bench_query(t, BENCH_LAST, "cpu_ms_per_job", "variant=pitfall offered_rps=0");
    if (isnan(t_pit)) t_pit = cpu;
    bench_target(b, "pitfall peak (ok/s)", peak[0], "<=", 1.5 * 1000 / t_pit,
                 "1.5 x 1000/T, its T = %s ms", bench_fmt(t_pit));
    /* Jobs due at a steady rate keep the loop busy at*T/1000 of the time (~75%) without a
     * queue: a probe that lands in one waits for its rest, up to T, so the p99 is just under T
     * (T x (1 - 1%/busy share)): the bound is 0.8 T, far above the solution's 5 ms. T is the
     * pitfall's own at that step: a job's CPU time moves 15-30% between runs and steps (one
     * core busy or both), so the solution's T at its peak is not the pitfall's at 50 req/s. */
    bench_target(b, "pitfall /health p99 under /hash load (ms)", health[0], ">=", 0.8 * cpu_at[0],
                 "at %.0f req/s a probe waits for the rest of the job on the loop: about its "
                 "T = %s ms", at, bench_fmt(cpu_at[0]));
  }
  if (bench_has(b, "solution")) {
    bench_target(b, "solution peak (ok/s)", peak[1], ">=", 0.85 * limit,
                 "85%% of min(cores, pool)/T = %.0f", limit);
    bench_target(b, "solution /health p99 under /hash load (ms)", health[1], "<=", 5,
                 "at %.0f req/s: the loop stays free", at);
    bench_target(b, "solution loop lag max (ms)", lag[1], "<", 5, "at %.0f req/s", at);
  }
  /* Judged in cores kept busy (ok/s x the step's own CPU time per job): with both cores
   * computing, a job takes 15-30% more CPU time than with one (caches, a VM's shared cores),
   * which moved the ok/s ratios from run to run (pool 2 / pool 1 1.48 to 2.37) while the cores
   * busy stayed put. */
  double p[4], busy[4];
  for (int k = 0; k < 4; k++) {
    p[k] = bench_query(pt, BENCH_LAST, "ok_rps", "pool=%d", 1 << k);
    busy[k] = p[k] * bench_query(pt, BENCH_LAST, "cpu_ms_per_job", "pool=%d", 1 << k) / 1000;
  }
  if (!isnan(p[3])) {
    bench_say(b, "solution peak by pool size: 1 -> %s, 2 -> %s, 4 -> %s, 8 -> %s ok/s (%.0f cores)",
              bench_fmt(p[0]), bench_fmt(p[1]), bench_fmt(p[2]), bench_fmt(p[3]), cores);
    bench_say(b, "cores kept busy hashing (ok/s x CPU time per job): 1 -> %.2f, 2 -> %.2f, "
              "4 -> %.2f, 8 -> %.2f", busy[0], busy[1], busy[2], busy[3]);
    bench_figure(b, "solution", "pool2_over_pool1_busy", busy[1] / busy[0]);
    bench_figure(b, "solution", "pool8_over_pool2_busy", busy[3] / busy[1]);
    bench_target(b, "pool 8 / pool 2, cores busy", busy[3] / busy[1], "<=", 1.15,
                 "a pool larger than the %.0f cores adds threads, not throughput", cores);
    bench_target(b, "pool 2 / pool 1, cores busy", busy[1] / busy[0], ">=", 1.5,
                 "up to the core count, a thread more is a core more");
    bench_plot(b, "vsload", "pools", "csv='pools.csv'; variants='solution'; xcol='pool'; "
               "ycol='ok_rps'; ymin=0; xlabel='UV_THREADPOOL_SIZE (threads)'; ylabel='peak ok/s'; "
               "ref1=%.0f; ref1_text='cores/T = %.0f req/s'; ref2=%.0f; ref2_text='1000/T'; "
               "plottitle=\"Lab 07: the solution's peak by pool size: flat past %.0f cores\"",
               cores * 1000 / cpu, cores * 1000 / cpu, blocked, cores);
  }
  bench_plot(b, "vsload", "throughput", "csv='sweep.csv'; variants='%s'; where='label=open'; ycol='ok_rps'; diag=1; "
             "diag_text='everything offered'; ref1=%.0f; ref1_text='min(cores, pool)/T = %.0f/%s ms "
             "= %.0f req/s'; ref2=%.0f; ref2_text='1000/T = %.0f req/s'; ylabel='answered 200 per "
             "second'; xlabel='offered /hash load (requests/s)'; plottitle=\"Lab 07: /hash jobs of "
             "T = %s ms of CPU: on the loop %s ok/s, on the pool %s\\nbeyond its ceiling the "
             "solution says 503 + Retry-After; the pitfall queues\"", vs, limit, par,
             bench_fmt(cpu), limit, blocked, blocked, bench_fmt(cpu), bench_fmt(peak[0]),
             bench_fmt(peak[1]));
  bench_plot(b, "vsload", "health", "csv='sweep.csv'; variants='%s'; where='label=open'; ycol='health_p99_ms'; "
             "ycol2='lag_max_ms'; logy=1; ref1=%.0f; ref1_text='T = %s ms'; ref2=5; ref2_text='5 ms'; "
             "ylabel='ms (log): /health p99 solid, loop lag max dotted'; xlabel='offered /hash load "
             "(requests/s)'; plottitle=\"Lab 07: a cheap request during /hash load: behind a job on "
             "the loop it waits T and more\"", vs, cpu, bench_fmt(cpu));
  bench_plot(b, "looplag", "looplag", "files='%s'; variants='%s'; loadfile='stats-solution.csv'; "
             "lagcol='loop_lag_recent_max_ms'; delay=%.1f; plottitle=\"Lab 07: event-loop lag during "
             "the sweep\\na job on the loop holds it for T = %s ms\"", bench_each(b, "stats-%s.csv"),
             bench_each(b, "%s"), cpu, bench_fmt(cpu));
}

int main(int argc, char **argv) {
  return bench_main(argc, argv, &(bench_lab_t){.slug = BENCH_SLUG, .run = run, .report = report});
}
