/* lg.h - loadgen's engine as a library: open-loop HTTP/1.1 load on its own libuv loop
 * (docs/loadgen.md). build/bin/loadgen is a thin main over it; the bench engine calls it
 * in-process.
 */
#ifndef LOOPHOLES_LG_H
#define LOOPHOLES_LG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LG_MAX_HEADERS 32
#define LG_MAX_CONNS 20000

typedef struct lg_opts {
  const char *url;
  double rate;                /* requests/s on schedule; 0 = closed loop */
  long conns;
  double duration_s, warmup_s;
  long timeout_ms;
  const char *method, *body;  /* method NULL = GET */
  const char *headers[LG_MAX_HEADERS];
  int n_headers;
  int quiet;                  /* no progress line on stderr */
  int handle_signals;         /* SIGINT/SIGTERM: first ends the measurement, second stops */
  volatile int *until;        /* when set: end the measurement once *until != 0 */
  uint64_t max_requests;      /* 0 = no limit */
  const char *timeline;       /* CSV file per interval, or NULL */
  long timeline_interval_ms;
  const char *stats_url;      /* sampled every stats_interval_ms during the run, or NULL */
  long stats_interval_ms;
  /* Called with each 2xx body of stats_url; t_s counts from the start of the run. */
  void (*on_stats)(void *ud, double t_s, const char *body, size_t len);
  void *ud;
} lg_opts_t;

typedef struct lg_result {
  double offered_rps, achieved_rps, ok_rps;
  uint64_t sent, responses, ok, err_connect, err_timeout, err_http, err_other;
  double p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mean_ms, duration_s;
  uint64_t conns_opened;      /* TCP connections opened for the load (not the stats one) */
} lg_result_t;

/* Fills in the defaults loadgen documents (rate 100, 50 connections, 5 s, timeout 2000 ms, ...). */
void lg_opts_init(lg_opts_t *o);
/* Runs the load. 0 after a run (even with errors), 2 for a bad URL (printed), 1 if it cannot run.
 */
int lg_run(const lg_opts_t *o, lg_result_t *r);

/* The summary's columns after the label, and how many decimals each is printed with. */
#define LG_NCOLS 17
extern const char *const lg_col_names[LG_NCOLS];
extern const int lg_col_decimals[LG_NCOLS];
/* The values in lg_col_names' order. */
void lg_result_values(const lg_result_t *r, double out[LG_NCOLS]);

#endif
