/* bench.c - lab 10's bench: a steady stream of signups, a 10x burst, then SIGTERM while the
 * burst's background jobs are still pending (make bench LAB=10).
 *
 * For each variant: the upstream (the e-mail provider: latency, jitter and a failure rate from
 * the manifest) and the service; /debug/stats and the upstream's /stats sampled every 50 ms; an
 * open-loop stream of POST /signup at steady_rps for steady_s, then burst_x times that for
 * burst_s; right after the burst's last signup, SIGTERM. The service's account line (stdout) and
 * log (stderr) are read after it exits, and compared with what the upstream saw:
 *   lost = signups answered 201 - e-mails the upstream answered (2xx or 5xx)
 *          - jobs reported dropped
 * Writes timeline.csv (the lab's stats), upstream.csv (the upstream's), account.csv (one row per
 * variant), jobs-inflight.png, upstream-inflight.png, pending.png, account.png.
 * Manifest keys: steady_rps, steady_s, burst_x, burst_s, conns, path (and args, upstream).
 */
#include "bench.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Everything fd holds until EOF (the child has exited), malloc'ed and NUL-terminated. */
static char *read_all(int fd) {
  size_t len = 0, cap = 4096;
  char *buf = malloc(cap);
  ssize_t n;
  if (buf == NULL) return NULL;
  while (fd >= 0 && (n = read(fd, buf + len, cap - len - 1)) > 0) {
    len += (size_t)n;
    if (cap - len < 2) {
      char *nb = realloc(buf, cap *= 2);
      if (nb == NULL) break;
      buf = nb;
    }
  }
  buf[len] = '\0';
  return buf;
}

/* Lines of text that contain word. */
static int count_lines(const char *text, const char *word) {
  int n = 0;
  for (const char *line = text; line && *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    const char *at = strstr(line, word);
    if (at != NULL && at < line + len) n++;
    line += len + (end ? 1 : 0);
  }
  return n;
}

static int phase(bench_t *b, const char *url, double rate, double seconds, const char *label,
                 bench_result_t *r) {
  bench_load_t l = {.url = url, .rate = rate, .conns = (int)bench_cfg_num(b, "conns", 32),
                    .duration_s = seconds, .timeout_ms = 5000, .method = "POST", .body = "",
                    .label = label, .progress = label};
  if (bench_load(b, &l, r) != 0) return -1;
  bench_progress_done(b, "%s signups answered 201 of %s sent, p99 %s ms",
                      bench_fmt((double)r->ok), bench_fmt((double)r->sent), bench_fmt(r->p99_ms));
  return 0;
}

static int run(bench_t *b, const char *v) {
  int quick = bench_quick(b);
  double steady = bench_cfg_num(b, "steady_rps", 20), burst_x = bench_cfg_num(b, "burst_x", 10);
  double steady_s = quick ? 1 : bench_cfg_num(b, "steady_s", 3);
  double burst_s = quick ? 1 : bench_cfg_num(b, "burst_s", 2);
  bench_proc_t *up = bench_upstream(b, NULL);
  if (!up) return -1;
  bench_proc_t *svc = bench_service(b, v, "--upstream %s", up->url);
  if (!svc) return -1;
  char url[256], stats[128], up_stats[128];
  snprintf(url, sizeof url, "%s%s", svc->url, bench_cfg(b, "path", "/signup?user=u"));
  snprintf(stats, sizeof stats, "%s/debug/stats", svc->url);
  snprintf(up_stats, sizeof up_stats, "%s/stats", up->url);
  bench_table_t *tl = bench_table(b, "timeline.csv"), *ut = bench_table(b, "upstream.csv");
  bench_sampler_t *s1 = bench_sample(b, stats, 50, tl, "variant=%s", v);
  bench_sampler_t *s2 = bench_sample(b, up_stats, 50, ut, "variant=%s", v);
  bench_result_t rs, rb;
  if (phase(b, url, steady, steady_s, "steady", &rs) != 0 ||
      phase(b, url, steady * burst_x, burst_s, "burst", &rb) != 0)
    return -1;
  /* SIGTERM now, with the burst's jobs pending. Its stdout and stderr are read once it exits. */
  double pending = bench_stat(svc, "/debug/stats", "pending");
  double up_inflight = bench_stat(up, "/stats", "inflight");
  bench_sample_stop(s1);
  int out = dup(svc->out_fd), err = open(svc->err_path, O_RDONLY);
  double t0 = bench_elapsed_s(b);
  int status = bench_stop(b, svc);
  double stop_ms = (bench_elapsed_s(b) - t0) * 1000;
  char *account = read_all(out), *log = read_all(err);
  if (out >= 0) close(out);
  if (err >= 0) close(err);
  usleep(200 * 1000); /* the upstream sees the last abandoned calls */
  bench_sample_stop(s2);
  json_t *u = bench_get_json("%s", up_stats);
  const char *line = account ? strstr(account, "{\"stopped\":") : NULL;
  json_t *acc = line ? json_loads(line, JSON_DISABLE_EOF_CHECK, NULL) : NULL;

  bench_table_t *t = bench_table(b, "account.csv");
  bench_row(t);
  bench_sets(t, "variant", "%s", v);
  double accepted = (double)(rs.ok + rb.ok);
  double up_ok = bench_num(u, "responses_2xx"), up_fail = bench_num(u, "responses_5xx");
  double dropped = bench_num(acc, "dropped");
  bench_set(t, "accepted", accepted);
  bench_set(t, "steady_p99_ms", rs.p99_ms);
  bench_set(t, "burst_p99_ms", rb.p99_ms);
  bench_set(t, "pending_at_stop", pending);
  bench_set(t, "up_inflight_at_stop", up_inflight);
  bench_set(t, "stop_ms", round(stop_ms));
  bench_set(t, "exit_status", status);
  bench_set(t, "up_requests", bench_num(u, "requests_total"));
  bench_set(t, "up_2xx", up_ok);
  bench_set(t, "up_5xx", up_fail);
  bench_set(t, "up_abandoned", bench_num(u, "abandoned"));
  bench_set(t, "up_inflight_peak", bench_num(u, "inflight_peak"));
  bench_set(t, "up_ids_duplicate", bench_num(u, "ids_duplicate"));
  bench_set(t, "reported_started", bench_num(acc, "started"));
  bench_set(t, "reported_succeeded", bench_num(acc, "succeeded"));
  bench_set(t, "reported_failed", bench_num(acc, "failed"));
  bench_set(t, "reported_dropped", dropped);
  bench_set(t, "log_failed", count_lines(log, "failed"));
  bench_set(t, "log_dropped", count_lines(log, "dropped"));
  bench_set(t, "lost", accepted - up_ok - up_fail - (isnan(dropped) ? 0 : dropped));
  bench_log(b, "%s: %s accepted, %s pending at SIGTERM, stop %s ms; upstream 2xx %s, 5xx %s, "
            "abandoned %s; account %s", v, bench_fmt(accepted), bench_fmt(pending),
            bench_fmt(stop_ms), bench_fmt(up_ok), bench_fmt(up_fail),
            bench_fmt(bench_num(u, "abandoned")), line ? line : "(none)");
  json_decref(acc);
  json_decref(u);
  free(account);
  free(log);
  return 0;
}

/* The largest |started - (succeeded + failed + pending + dropped)| over v's samples. */
static double worst_unaccounted(const bench_table_t *tl, const char *v) {
  double worst = NAN;
  for (int i = 0; i < bench_rows(tl); i++) {
    if (strcmp(bench_at_s(tl, i, "variant"), v) != 0) continue;
    double d = fabs(bench_at(tl, i, "started") -
                    (bench_at(tl, i, "succeeded") + bench_at(tl, i, "failed") +
                     bench_at(tl, i, "pending") + bench_at(tl, i, "dropped")));
    if (!isnan(d) && (isnan(worst) || d > worst)) worst = d;
  }
  return worst;
}

static void report(bench_t *b) {
  bench_table_t *t = bench_table(b, "account.csv"), *tl = bench_table(b, "timeline.csv");
  double max_jobs = bench_cfg_opt(b, "args", "--max-jobs", 8);
  double drain_ms = bench_cfg_opt(b, "args", "--drain-ms", 2000);
#define ACC(v, col) bench_query(t, BENCH_LAST, col, "variant=%s", v)
  bench_say(b, "lab 10 figures (%s; upstream %s; %.0f signups/s, then %.0fx for %.0f s, SIGTERM "
            "with the burst's jobs pending):", bench_cfg(b, "args", ""),
            bench_cfg(b, "upstream", ""),
            bench_cfg_num(b, "steady_rps", 20), bench_cfg_num(b, "burst_x", 10),
            bench_cfg_num(b, "burst_s", 2));
  bench_say(b, "  %-9s %8s %8s %7s %7s %8s %9s %9s %9s %7s %6s %8s", "variant", "accepted",
            "up_2xx", "up_5xx", "rep_ok", "rep_fail", "rep_drop", "abandoned", "pend@stop",
            "stop_ms", "lost", "up_peak");
  const char *v;
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    bench_say(b, "  %-9s %8.0f %8.0f %7.0f %7.0f %8.0f %9.0f %9.0f %9.0f %7.0f %6.0f %8.0f", v,
              ACC(v, "accepted"), ACC(v, "up_2xx"), ACC(v, "up_5xx"), ACC(v, "reported_succeeded"),
              ACC(v, "reported_failed"), ACC(v, "reported_dropped"), ACC(v, "up_abandoned"),
              ACC(v, "pending_at_stop"), ACC(v, "stop_ms"), ACC(v, "lost"),
              ACC(v, "up_inflight_peak"));
    bench_figure(b, v, "up_inflight_peak", ACC(v, "up_inflight_peak"));
    if (!strcmp(v, "pitfall")) continue;
    double worst = worst_unaccounted(tl, v);
    bench_figure(b, v, "worst_unaccounted", worst);
    bench_figure(b, v, "lost", ACC(v, "lost"));
    bench_check(b, v, "max |started - (succeeded+failed+pending+dropped)|", worst, "==", 0,
                "over %.0f samples of /debug/stats: nothing unaccounted",
                bench_query(tl, BENCH_COUNT, "t_s", "variant=%s", v));
    bench_check(b, v, "upstream in-flight peak", ACC(v, "up_inflight_peak"), "<=", max_jobs,
                "--max-jobs under a %.0fx burst", bench_cfg_num(b, "burst_x", 10));
    bench_check(b, v, "jobs lost at SIGTERM", ACC(v, "lost"), "==", 0,
                "%s were pending: drained or reported dropped",
                bench_fmt(ACC(v, "pending_at_stop")));
    bench_check(b, v, "failures reported / seen by the upstream",
                ACC(v, "reported_failed") / ACC(v, "up_5xx"), "==", 1, "%s 5xx answers",
                bench_fmt(ACC(v, "up_5xx")));
    bench_check(b, v, "stop (ms)", ACC(v, "stop_ms"), "<=", drain_ms + 1000,
                "the drain deadline + 1 s");
  }
  if (bench_has(b, "pitfall")) {
    bench_target(b, "pitfall failures reported while the upstream failed some",
                 ACC("pitfall", "up_5xx") > 0 ? ACC("pitfall", "reported_failed") : NAN, "==", 0,
                 "%s 5xx answers, none heard of", bench_fmt(ACC("pitfall", "up_5xx")));
    bench_target(b, "pitfall jobs lost at SIGTERM", ACC("pitfall", "lost"), ">=", 1,
                 "%s calls abandoned, none reported", bench_fmt(ACC("pitfall", "up_abandoned")));
    bench_target(b, "pitfall upstream in-flight peak / --max-jobs",
                 ACC("pitfall", "up_inflight_peak") / max_jobs, ">=", 3,
                 "a burst starts as many as arrive");
  }
  const char *vs = bench_each(b, "%s");
  bench_plot(b, "overtime", "jobs-inflight", "csv='timeline.csv'; variants='%s'; "
             "ycol='jobs_inflight'; ylabel='background jobs in flight (the lab says)'; "
             "plottitle='jobs in flight: steady stream, %.0fx burst, SIGTERM (--max-jobs %.0f)'",
             vs, bench_cfg_num(b, "burst_x", 10), max_jobs);
  bench_plot(b, "overtime", "upstream-inflight", "csv='upstream.csv'; variants='%s'; "
             "ycol='inflight'; ylabel='calls in flight at the upstream'; plottitle='what the "
             "e-mail provider sees: calls in flight (--max-jobs %.0f)'", vs, max_jobs);
  bench_plot(b, "overtime", "pending", "csv='timeline.csv'; variants='%s'; ycol='pending'; "
             "ylabel='jobs pending (in flight + waiting)'; plottitle='pending jobs, as each "
             "variant reports them (the pitfall knows of none)'", vs);
  bench_plot(b, "counter", "account", "csv='account.csv'; variants='%s'; counters='up_5xx "
             "reported_failed up_abandoned lost'; ylabel='jobs'; plottitle='failures the upstream "
             "answered vs failures reported; calls abandoned at SIGTERM; jobs lost'", vs);
}

int main(int argc, char **argv) {
  return bench_main(argc, argv, &(bench_lab_t){.slug = BENCH_SLUG, .run = run, .report = report});
}
