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
  char content_type[64]; /* the Content-Type header, "" when absent */
} tk_resp_t;

double tk_now_ms(void);
/* One GET / POST on a fresh connection. Returns 0 when an HTTP response arrived. */
int tk_get(const char *url, long timeout_ms, tk_resp_t *out);
int tk_post(const char *url, const char *body, long timeout_ms, tk_resp_t *out);
/* n concurrent GETs of url, each on its own connection, all started together. Returns how many
 * got an HTTP response. */
int tk_get_many(const char *url, int n, long timeout_ms, tk_resp_t *out);

/* Sends n GETs (or POSTs with body when body != NULL) to url at a constant rate_per_s, request i
 * due at t0 + i/rate (open loop: a slow server does not slow the sender), each on its own
 * connection, all on one background curl multi; waits for all (or timeout_ms each). out[i]
 * gets each answer with start_ms = its due time. Returns how many got an HTTP response. */
int tk_stream(const char *url, const char *body, int n, double rate_per_s, long timeout_ms,
              tk_resp_t *out);

/* The same stream on a thread of its own, so the test can probe the service meanwhile:
 * tk_stream_start returns NULL on failure (a message on stderr); tk_stream_wait joins it,
 * frees it and returns what tk_stream returns. url, body and out must outlive the stream. */
typedef struct tk_stream tk_stream_t;
tk_stream_t *tk_stream_start(const char *url, const char *body, int n, double rate_per_s,
                             long timeout_ms, tk_resp_t *out);
int tk_stream_wait(tk_stream_t *s);

/* A number from a flat JSON object: NAN when absent. */
double tk_json_number(const char *json, const char *field);
/* GET url (".../debug/stats", an upstream's ".../stats") and return field; NAN on failure. */
double tk_stat(const char *url, const char *field);
/* POST to url with an empty body (e.g. ".../stats/reset"); returns the HTTP status. */
int tk_post_empty(const char *url);

int tk_fd_count(void);  /* open fds of this process */
long tk_rss_kb(void);   /* RSS of this process */

/* How many of this process's threads are runnable (state R in /proc/self/task/TID/stat: on a
 * core or waiting for one; a thread blocked on a lock, a poll or a sleep is not), sampled every
 * period_ms by a thread of its own, which leaves itself out. Load-independent where a clock is
 * not: on a busy machine a runnable thread waits longer, but it is still counted. */
typedef struct tk_runnable tk_runnable_t;
tk_runnable_t *tk_runnable_start(int period_ms);
/* Stops and frees the sampler; *samples gets how many it took. Returns how many of them found
 * at least `atleast` runnable threads. */
int tk_runnable_stop(tk_runnable_t *s, int atleast, int *samples);

/* ---- fixtures: the one shape every lab suite uses ----
 * A test starts its upstream first (a child process), then the lab variant in-process, talks to
 * both over HTTP, and ends with tk_lab_stop, which asserts the state a right answer leaves behind.
 * The assertions fail the test with a message a learner can act on. */

/* build/bin/upstream --port 0 args... (args NULL-terminated, or NULL). Fails the test when the
 * upstream does not start (the message names the binary and says to build it). */
void tk_upstream_start(tk_proc_t *up, const char *const *args);
/* A number from the upstream's GET /stats; the test fails when it is absent. */
double tk_upstream_stat(const tk_proc_t *up, const char *field);
/* Reads field every 10 ms until it is >= at_least or within_ms have passed; returns the last
 * value read. For state a test must see before it goes on (calls out, jobs accepted): a fixed
 * head start is not one on a loaded machine. */
double tk_upstream_stat_wait(const tk_proc_t *up, const char *field, double at_least,
                             long within_ms);
/* POST /stats/reset: counters (and --fail-rate's sequence) start again from zero. */
void tk_upstream_reset(const tk_proc_t *up);
/* SIGTERM and wait; harmless when the upstream is not running. */
void tk_upstream_stop(tk_proc_t *up);

typedef struct tk_lab {
  labrun_t *run;
  char url[64];        /* "http://127.0.0.1:PORT" of the lab under test */
  int fds_baseline;    /* this process's open fds just before the lab started */
  long long heap_baseline; /* bytes malloc'd in this process then (-1 under AddressSanitizer) */
  char argbuf[2048];   /* the lab keeps pointers into its options: copies live here */
  const char *argv[33];
} tk_lab_t;

/* Starts the variant under test (def: &LAB_DEF) on its own loop thread with the lab options in
 * args (NULL-terminated). Fails the test when it does not start. The fd baseline is taken after
 * the process-wide one-time fds (libuv's, libcurl's) exist, so it is the same for every test. */
void tk_lab_start(tk_lab_t *lab, const lab_def_t *def, const char *const *args);
/* lab->url + path, in a buffer of the caller's. */
const char *tk_lab_url(const tk_lab_t *lab, const char *path, char *out, size_t len);
/* A number from the lab's GET /debug/stats; the test fails when it is absent. */
double tk_lab_stat(const tk_lab_t *lab, const char *field);
/* tk_upstream_stat_wait for the lab's /debug/stats. */
double tk_lab_stat_wait(const tk_lab_t *lab, const char *field, double at_least, long within_ms);
/* Ends a test's lab run and asserts the state a right answer leaves behind:
 *  - each /debug/stats field named in zero_fields (NULL-terminated, or NULL) is back to 0 once
 *    every request is answered (waits up to 2 s for it: a callback may still be on its way);
 *  - shutdown finishes within 5 s with every request drained;
 *  - uv_loop_close() == 0 and no handle left; no leak (under LeakSanitizer);
 *  - this process's fds back to the baseline (every socket and pipe the lab opened is closed);
 *  - the bytes malloc'd in this process back to the baseline within TK_HEAP_SLACK_BYTES: the lab
 *    runs in this process, so memory it never frees shows here without AddressSanitizer (under
 *    it, LeakSanitizer checks instead; a suite binary runs with glibc's tcache off, see
 *    testkit.c, so the count is exact). A leak of ~100 bytes per request shows after a few
 *    hundred requests: the suite that tests for leaks sends that many.
 * Call it after every stream, burst and child the test started after the lab was joined. */
#define TK_HEAP_SLACK_BYTES (16 * 1024)
void tk_lab_stop(tk_lab_t *lab, const char *const *zero_fields);

/* ---- the variant as a process of its own: real signals, a real exit ----
 * A suite that needs one puts TK_LAB_PROCESS(&LAB_DEF) at file scope: the suite binary, started
 * again with LOOPHOLES_LAB_PROCESS=1 in its environment, is then not the suite but the variant
 * as a service (lab_main, what build/bin/labNN-VARIANT runs). A constructor runs before
 * Criterion's main, and glibc passes it argc and argv. */
#define TK_LAB_PROCESS(def)                                                                     \
  __attribute__((constructor)) static void tk_run_as_lab_process(int argc, char **argv) {       \
    if (getenv("LOOPHOLES_LAB_PROCESS") != NULL) exit(lab_main((def), argc, argv));             \
  }
typedef struct tk_child {
  int pid, port, out;  /* out: its stdout, a pipe */
  char err_path[64];   /* its stderr, a file read by tk_child_end */
} tk_child_t;
/* Starts this suite binary as NAME --port 0 --upstream UPSTREAM ARGS (NULL-terminated), exec'ed
 * (it inherits no lock or thread of the test) and killed if the test dies; waits for its
 * "listening on" line. Fails the test when it does not start. */
void tk_child_start(tk_child_t *c, const char *name, const char *upstream,
                    const char *const *args);
/* Waits up to timeout_ms for the child to exit: 1 and its status, or 0 when still running. */
int tk_child_wait(tk_child_t *c, int timeout_ms, int *status);
/* Kills the child if it still runs, reaps it, and copies its stderr into err (cap bytes). */
void tk_child_end(tk_child_t *c, char *err, size_t cap);

/* Sorts v (n doubles) and returns its p-th percentile (0..100). */
double tk_percentile(double *v, int n, double p);

#endif
