/* bench.c - lab 12's bench: a stream of reports whose clients hang up mid-report, then a stream
 * of reports that run out of their deadline (make bench LAB=12).
 *
 * For each variant, two phases, each on a fresh service (the upstream's counters reset):
 *   hangup    `n` GET /report?`query` at `rate`/s (open loop), each client giving up after
 *             `hang_ms` (curl's timeout closes the connection: a real hang-up), mid-report;
 *   deadline  the same stream with --deadline-ms `deadline_ms` and patient clients: every report
 *             ends in a 504.
 * After each phase the bench waits `settle_s` (the pitfall's swallowed cancels run their steps
 * out), then reads the lab's counters and the upstream's: calls per report, calls started after
 * the cancel (the lab's steps_after_cancel), loop turns from cancel to cleanup. /debug/stats and
 * the upstream's /stats are sampled every 50 ms. Manifest keys: query, rate, n, hang_ms,
 * deadline_ms, settle_s. Writes phases.csv (and hangup.csv, deadline.csv), timeline.csv,
 * upstream.csv,
 * calls-hangup.png, calls-deadline.png,
 * reports-live.png, upstream-inflight.png.
 */
#include "bench.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct answer {
  long status;    /* 0: no answer (the client gave up) */
  double ms;      /* from its due time */
} answer_t;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static size_t discard(char *p, size_t size, size_t n, void *data) {
  (void)p;
  (void)data;
  return size * n;
}

/* n GETs of url at rate/s, request i due at t0 + i/rate whatever came before (open loop), each on
 * its own connection with a timeout of timeout_ms: a client that gives up closes its connection.
 * Returns how many got an answer, or -1 when curl could not be set up. */
static int stream(const char *url, int n, double rate, long timeout_ms, answer_t *out) {
  CURLM *m = curl_multi_init();
  CURL **e = calloc((size_t)n, sizeof *e);
  int added = 0, done = 0, answered = 0, running = 0;
  if (m == NULL || e == NULL) {
    fprintf(stderr, "bench12: curl_multi_init/calloc failed\n");
    free(e);
    if (m) curl_multi_cleanup(m);
    return -1;
  }
  double t0 = now_ms();
  while (done < n) {
    while (added < n && t0 + added * 1000.0 / rate <= now_ms()) {
      CURL *c = curl_easy_init();
      if (c == NULL || curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_PROXY, "") != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_PRIVATE, (char *)&out[added]) != CURLE_OK ||
          curl_multi_add_handle(m, c) != CURLM_OK) {
        fprintf(stderr, "bench12: could not start request %d\n", added);
        if (c) curl_easy_cleanup(c);
        out[added] = (answer_t){0, NAN};
        done++;
      } else {
        e[added] = c;
        out[added] = (answer_t){0, t0 + added * 1000.0 / rate}; /* its due time, for now */
      }
      added++;
    }
    if (curl_multi_perform(m, &running) != CURLM_OK) break;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
      if (msg->msg != CURLMSG_DONE) continue;
      answer_t *a;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&a);
      if (msg->data.result == CURLE_OK) {
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &a->status);
        answered++;
      }
      a->ms = now_ms() - a->ms;
      done++;
    }
    if (done < n) curl_multi_poll(m, NULL, 0, 5, NULL);
  }
  for (int i = 0; i < n; i++) {
    if (e[i] == NULL) continue;
    curl_multi_remove_handle(m, e[i]);
    curl_easy_cleanup(e[i]);
  }
  free(e);
  curl_multi_cleanup(m);
  return answered;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The p-th percentile of the answered requests' latencies; NAN when none. */
static double pct(const answer_t *a, int n, double p) {
  double *v = malloc(sizeof *v * (size_t)(n > 0 ? n : 1));
  int k = 0;
  for (int i = 0; v && i < n; i++)
    if (a[i].status != 0) v[k++] = a[i].ms;
  double r = NAN;
  if (k > 0) {
    qsort(v, (size_t)k, sizeof *v, cmp);
    r = v[(int)ceil(p / 100 * k) - 1 < 0 ? 0 : (int)ceil(p / 100 * k) - 1];
  }
  free(v);
  return r;
}

static int phase(bench_t *b, bench_proc_t *up, const char *v, const char *name, long timeout_ms,
                 const char *extra) {
  int n = (int)bench_cfg_num(b, "n", 120);
  double rate = bench_cfg_num(b, "rate", 40);
  if (bench_quick(b)) n = n / 3 > 10 ? n / 3 : 10;
  bench_post("%s/stats/reset", up->url);
  bench_proc_t *svc = bench_service(b, v, "--upstream %s %s", up->url, extra);
  if (!svc) return -1;
  char url[256], stats[128], up_stats[128];
  snprintf(url, sizeof url, "%s/report?%s", svc->url, bench_cfg(b, "query", "steps=5&step_ms=100"));
  snprintf(stats, sizeof stats, "%s/debug/stats", svc->url);
  snprintf(up_stats, sizeof up_stats, "%s/stats", up->url);
  bench_sampler_t *s1 = bench_sample(b, stats, 50, bench_table(b, "timeline.csv"),
                                     "variant=%s phase=%s", v, name);
  bench_sampler_t *s2 = bench_sample(b, up_stats, 50, bench_table(b, "upstream.csv"),
                                     "variant=%s phase=%s", v, name);
  answer_t *a = calloc((size_t)n, sizeof *a);
  if (a == NULL) return -1;
  bench_log(b, "%-9s %-8s %d reports at %.0f/s, client timeout %ld ms ...", v, name, n, rate,
            timeout_ms);
  int answered = stream(url, n, rate, timeout_ms, a);
  usleep((useconds_t)(bench_cfg_num(b, "settle_s", 1.5) * 1e6)); /* swallowed cancels run out */
  bench_sample_stop(s1);
  bench_sample_stop(s2);
  json_t *st = bench_get_json("%s", stats), *u = bench_get_json("%s", up_stats);
  int n504 = 0;
  for (int i = 0; i < n; i++) n504 += a[i].status == 504;
  char per_phase[64];
  snprintf(per_phase, sizeof per_phase, "%s.csv", name);
  double calls = bench_num(u, "requests_total"), after = bench_num(st, "steps_after_cancel");
  /* One row in phases.csv, and the same in PHASE.csv (one row per variant, for the bar chart). */
  bench_table_t *tables[2] = {bench_table(b, "phases.csv"), bench_table(b, per_phase)};
  for (int k = 0; k < 2; k++) {
    bench_table_t *t = tables[k];
    bench_row(t);
    bench_sets(t, "variant", "%s", v);
    bench_sets(t, "phase", "%s", name);
    bench_set(t, "reports", n);
    bench_set(t, "answered", answered);
    bench_set(t, "status_504", n504);
    bench_set(t, "p50_ms", pct(a, n, 50));
    bench_set(t, "p99_ms", pct(a, n, 99));
    bench_set(t, "up_requests", calls);
    bench_set(t, "up_abandoned", bench_num(u, "abandoned"));
    bench_set(t, "calls_per_report", calls / n);
    bench_set(t, "after_per_report", after / n);
    const char *cols[] = {"reports_started", "reports_aborted", "reports_deadline",
                          "reports_live", "cleanups", "steps_started", "steps_failed",
                          "steps_retried", "steps_cancelled", "steps_after_cancel",
                          "free_turns_max"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
      bench_set(t, cols[i], bench_num(st, cols[i]));
  }
  bench_log(b, "%-9s %-8s %d answered (%d x 504), upstream %.0f calls (%.2f per report, %.0f "
            "abandoned), %.0f started after a cancel, cleanup <= %.0f loop turns after it", v,
            name, answered, n504, calls, calls / n, bench_num(u, "abandoned"), after,
            bench_num(st, "free_turns_max"));
  json_decref(st);
  json_decref(u);
  free(a);
  return bench_stop(b, svc) == 0 ? 0 : -1;
}

static int run(bench_t *b, const char *v) {
  char extra[64];
  bench_proc_t *up = bench_upstream(b, NULL);
  if (!up) return -1;
  snprintf(extra, sizeof extra, "--deadline-ms %.0f", bench_cfg_num(b, "deadline_ms", 250));
  if (phase(b, up, v, "hangup", (long)bench_cfg_num(b, "hang_ms", 250), "") != 0) return -1;
  return phase(b, up, v, "deadline", 10000, extra);
}

static void report(bench_t *b) {
  bench_table_t *t = bench_table(b, "phases.csv"), *tl = bench_table(b, "timeline.csv");
  double hang_ms = bench_cfg_num(b, "hang_ms", 250);
  double deadline_ms = bench_cfg_num(b, "deadline_ms", 250);
  double steps = 5, step_ms = 100;
  const char *q = bench_cfg(b, "query", "steps=5&step_ms=100"), *at;
  if ((at = strstr(q, "steps="))) steps = atof(at + 6);
  if ((at = strstr(q, "step_ms="))) step_ms = atof(at + 8);
  double before_hang = ceil(hang_ms / step_ms), before_deadline = ceil(deadline_ms / step_ms);
#define PH(v, p, col) bench_query(t, BENCH_LAST, col, "variant=%s phase=%s", v, p)
  bench_say(b, "lab 12 figures (GET /report?%s: %.0f steps of %.0f ms; %.0f reports at %.0f/s; "
            "clients hang up after %.0f ms, or --deadline-ms %.0f):", q, steps, step_ms,
            bench_cfg_num(b, "n", 120), bench_cfg_num(b, "rate", 40), hang_ms, deadline_ms);
  bench_say(b, "  %-9s %-8s %8s %9s %10s %9s %7s %8s %9s %7s %9s", "variant", "phase", "reports",
            "calls/rep", "after/rep", "abandoned", "failed", "retried", "cancelled", "turns",
            "live_peak");
  const char *v, *phases[] = {"hangup", "deadline"};
  for (int i = 0; (v = bench_variant(b, i)); i++) {
    for (int k = 0; k < 2; k++) {
      const char *p = phases[k];
      bench_say(b, "  %-9s %-8s %8.0f %9.2f %10.2f %9.0f %7.0f %8.0f %9.0f %7.0f %9.0f", v, p,
                PH(v, p, "reports"), PH(v, p, "calls_per_report"), PH(v, p, "after_per_report"),
                PH(v, p, "up_abandoned"), PH(v, p, "steps_failed"), PH(v, p, "steps_retried"),
                PH(v, p, "steps_cancelled"), PH(v, p, "free_turns_max"),
                bench_query(tl, BENCH_MAX, "reports_live", "variant=%s phase=%s", v, p));
      bench_figure(b, v, k ? "deadline_after_per_report" : "hangup_after_per_report",
                   PH(v, p, "after_per_report"));
    }
    if (!strcmp(v, "pitfall")) continue;
    char name[128];
    for (int k = 0; k < 2; k++) {
      const char *p = phases[k];
      snprintf(name, sizeof name, "%s: calls started after the cancel, per report", p);
      bench_check(b, v, name, PH(v, p, "after_per_report"), "==", 0, "the cancel stops the chain");
      snprintf(name, sizeof name, "%s: upstream calls per report", p);
      bench_check(b, v, name, PH(v, p, "calls_per_report"), "<=", k ? before_deadline : before_hang,
                  "steps that can start in %.0f ms of %.0f ms steps", k ? deadline_ms : hang_ms,
                  step_ms);
      snprintf(name, sizeof name, "%s: loop turns from a cancel to the cleanup", p);
      bench_check(b, v, name, PH(v, p, "free_turns_max"), "<=", 1, "the turn the cancel lands");
      snprintf(name, sizeof name, "%s: steps counted failed", p);
      bench_check(b, v, name, PH(v, p, "steps_failed"), "==", 0, "a cancel is not a failure");
      snprintf(name, sizeof name, "%s: cleanups - reports", p);
      bench_check(b, v, name, PH(v, p, "cleanups") - PH(v, p, "reports_started"), "==", 0,
                  "each report cleaned up exactly once");
    }
    snprintf(name, sizeof name, "deadline: 504 answers");
    bench_check(b, v, name, PH(v, "deadline", "status_504"), "==", PH(v, "deadline", "reports"),
                "every report past --deadline-ms %.0f", deadline_ms);
  }
  if (bench_has(b, "pitfall")) {
    bench_target(b, "pitfall hangup: calls started after the cancel, per report",
                 PH("pitfall", "hangup", "after_per_report"), ">=", steps - before_hang,
                 "at least the %.0f steps left after the hang-up", steps - before_hang);
    bench_target(b, "pitfall deadline: calls started after the cancel, per report",
                 PH("pitfall", "deadline", "after_per_report"), ">=", steps - before_deadline,
                 "at least the %.0f steps left after the deadline", steps - before_deadline);
  }
  const char *vs = bench_each(b, "%s");
  bench_plot(b, "counter", "calls-hangup", "csv='hangup.csv'; variants='%s'; counters="
             "'calls_per_report after_per_report'; ylabel='upstream calls per report'; "
             "plottitle='clients hang up after %.0f ms: calls per report, and calls started "
             "after the hang-up'", vs, hang_ms);
  bench_plot(b, "counter", "calls-deadline", "csv='deadline.csv'; variants='%s'; counters="
             "'calls_per_report after_per_report'; ylabel='upstream calls per report'; "
             "plottitle='--deadline-ms %.0f: calls per report, and calls started after the "
             "deadline'", vs, deadline_ms);
  bench_plot(b, "overtime", "reports-live", "csv='timeline.csv'; variants='%s'; "
             "ycol='reports_live'; ylabel='report states allocated'; plottitle='report states "
             "alive: hang-ups after %.0f ms, then --deadline-ms %.0f'", vs, hang_ms, deadline_ms);
  bench_plot(b, "overtime", "upstream-inflight", "csv='upstream.csv'; variants='%s'; "
             "ycol='inflight'; ylabel='calls in flight at the upstream'; plottitle='upstream work: "
             "for clients that are gone'", vs);
}

int main(int argc, char **argv) {
  return bench_main(argc, argv, &(bench_lab_t){.slug = BENCH_SLUG, .run = run, .report = report});
}
