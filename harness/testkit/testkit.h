/* testkit.h - helpers for the Criterion suites: child processes, HTTP from the test, stats.
 *
 * The lab under test runs in-process (labrt.h: labrun_start); tools such as the upstream run as
 * child processes, so a lab that blocks its loop cannot stall them and hide its own pitfall.
 * HTTP from the test uses libcurl on the test's own thread, never the lab's loop.
 */
#ifndef LOOPHOLES_TESTKIT_H
#define LOOPHOLES_TESTKIT_H

#include <stddef.h>

#include "labrt.h"

/* build/bin next to the test binary (build/test/..), or $LOOPHOLES_BIN. */
const char *tk_bin_dir(void);

typedef struct tk_proc {
  int pid;
  int port;
  int out_fd;    /* the child's stdout, kept open so its writes never fail */
  char url[64];  /* "http://127.0.0.1:PORT" */
} tk_proc_t;

/* Starts BIN/tool --port 0 args..., waits (<= 5 s) for its "listening on" line. 0 or -1 (with a
 * message on stderr). The child gets SIGTERM if the test process dies. */
int tk_spawn(tk_proc_t *p, const char *tool, const char *const *args);
/* SIGTERM and wait; SIGKILL after 3 s. Returns the child's exit status, or -1. */
int tk_stop(tk_proc_t *p);

typedef struct tk_resp {
  int status;       /* HTTP status, 0 when none */
  int curl_code;    /* CURLcode */
  double start_ms;  /* tk_now_ms() values */
  double end_ms;
  double total_ms;
  char body[8192];  /* truncated to fit, NUL-terminated */
  size_t body_len;
  char retry_after[32]; /* the Retry-After header, "" when absent */
} tk_resp_t;

double tk_now_ms(void);
/* One GET / POST on a fresh connection. Returns 0 when an HTTP response arrived. */
int tk_get(const char *url, long timeout_ms, tk_resp_t *out);
int tk_post(const char *url, const char *body, long timeout_ms, tk_resp_t *out);
/* n concurrent GETs of url, each on its own connection, all started together. Returns how many
 * got an HTTP response. */
int tk_get_many(const char *url, int n, long timeout_ms, tk_resp_t *out);

/* A number from a flat JSON object: NAN when absent. */
double tk_json_number(const char *json, const char *field);
/* GET url (".../debug/stats", an upstream's ".../stats") and return field; NAN on failure. */
double tk_stat(const char *url, const char *field);
/* POST to url with an empty body (e.g. ".../stats/reset"); returns the HTTP status. */
int tk_post_empty(const char *url);

int tk_fd_count(void);  /* open fds of this process */
long tk_rss_kb(void);   /* RSS of this process */

/* Sorts v (n doubles) and returns its p-th percentile (0..100). */
double tk_percentile(double *v, int n, double p);

#endif
