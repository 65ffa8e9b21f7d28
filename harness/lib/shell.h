/* shell.h - the service shell every lab links: an HTTP/1.1 server on a libuv loop.
 *
 * The shell owns sockets, parsing (libhttp-parser), keep-alive, pipelining, size limits,
 * 400/404/413/431 answers, graceful shutdown and GET /debug/stats. A lab only registers
 * handlers and answers requests, possibly later, from any callback on the same loop.
 *
 * Lifetime of a request: the shell creates it when a message is complete and hands it to the
 * handler. It stays valid until the lab calls shell_respond*() on it, exactly once, even if the
 * client disconnects first (the shell then calls the abort callback, if one is set, and throws
 * the answer away). Responses on one connection go out in request order (pipelining).
 */
#ifndef LOOPHOLES_SHELL_H
#define LOOPHOLES_SHELL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* For header_timeout_ms, idle_timeout_ms and shed_after_ms: never. */
#define SHELL_NEVER UINT_MAX

typedef struct shell shell_t;
typedef struct shell_request shell_request_t;

typedef void (*shell_handler_fn)(shell_request_t *req, void *data);
typedef void (*shell_abort_fn)(shell_request_t *req, void *data);
typedef void (*shell_closed_fn)(shell_t *shell, void *data);
/* Adds lab-specific fields to /debug/stats: write `,"name":number` pairs with shell_stats_add. */
typedef void (*shell_stats_fn)(shell_t *shell, void *data);

typedef struct shell_config {
  size_t max_header_bytes;   /* request line + headers; beyond it: 431 and close. 0 = 8 KiB */
  size_t max_body_bytes;     /* beyond it: 413 and close. 0 = 1 MiB */
  unsigned max_pipeline;     /* unanswered requests per connection before the shell stops
                                reading from it (TCP backpressure). 0 = 16 */
  unsigned max_connections;  /* open connections; beyond it the shell stops accepting, so new
                                ones wait in the kernel's backlog as with a real server. 0 = 10000.
                                Except for control routes: see shell_route_control */
  int backlog;               /* listen(2) backlog. 0 = 511 */
  unsigned lag_interval_ms;  /* loop-lag probe period. 0 = 5 ms */
  /* Slow clients. A connection that owes no answer must make progress, or it is closed:
   * header_timeout_ms: from a new connection's accept, or a request's first byte, to the end
   *   of its headers (a half-sent request is answered 408 and closed). 0 = 10 s (HAProxy's
   *   usual "timeout http-request 10s"; nginx's client_header_timeout is 60 s).
   * idle_timeout_ms: a keep-alive connection between requests, or a body that stops coming
   *   in for that long. 0 = 60 s (an AWS load balancer's idle timeout; nginx's keepalive is 75 s).
   * Connections that owe answers have no timeout here: that is the lab's deadline to keep. */
  unsigned header_timeout_ms;
  unsigned idle_timeout_ms;
  /* At max_connections, a connection that has waited at least this long for a request (silent,
   * half-sent or idle keep-alive) is closed to make room for a new one, so that slow clients
   * cannot hold every slot. 0 = 500 ms; SHELL_NEVER: never, new connections wait in the
   * backlog (the upstream's --max-conns). max_connections is also capped to what the fd limit
   * (RLIMIT_NOFILE) allows with a quarter of it left for everything else (outbound calls). */
  unsigned shed_after_ms;
  /* The stall detector (harness/lib/probe.h): a watchdog thread reports, on stderr and at
   * GET /debug/stalls, every time the loop does not turn for more than stall_ms, naming the
   * route handler (or the lab's callback, see shell_callback_begin) that was running.
   * 0 = off, unless the environment says LOOPHOLES_STALL_MS=N (any lab: a learner can turn it
   * on without touching code). */
  unsigned stall_ms;
  /* 1: the listener sets SO_REUSEPORT before it binds, so a second instance can listen on the
   * same port while this one still serves (a rolling restart, lab 11's bench): the kernel spreads
   * new connections over every listener; once one closes, the others get them all. 0 = off. */
  int reuse_port;
} shell_config_t;

/* Creates a shell on loop. cfg may be NULL for the defaults. Returns 0 or a negative uv error. */
int shell_create(shell_t **out, uv_loop_t *loop, const shell_config_t *cfg);

/* Registers handler for method+path (exact path match, query ignored). method NULL = any.
 * path "*" catches every path no other route matches (the upstream uses it).
 * Unknown paths get 404; a known path with another method gets 405. */
int shell_route(shell_t *shell, const char *method, const char *path, shell_handler_fn handler,
                void *data);

/* Like shell_route, for a control route (counters, reset) that must answer even when the shell is
 * at max_connections. At the limit the shell still accepts a few connections (8) to read their
 * first request: a control request is answered (then the connection closes) without taking a
 * slot or being counted in connections_*; any other request waits, unanswered and uncounted,
 * until a slot frees, as it would in the backlog. /debug/stats is one. */
int shell_route_control(shell_t *shell, const char *method, const char *path,
                        shell_handler_fn handler, void *data);

/* Binds and listens. port 0 picks a free port; shell_port() tells which. */
int shell_listen(shell_t *shell, const char *host, int port);
int shell_port(const shell_t *shell);
uv_loop_t *shell_loop(const shell_t *shell);

/* Extra /debug/stats fields (called while the JSON is being written). */
void shell_set_stats_hook(shell_t *shell, shell_stats_fn fn, void *data);
void shell_stats_add(shell_t *shell, const char *name, double value);

/* Graceful shutdown: stops accepting, closes idle connections, waits for every request in
 * flight to be answered, closes every shell handle, then calls done (which may free what the
 * handlers use). The shell frees itself after done returns. */
void shell_close(shell_t *shell, shell_closed_fn done, void *data);

/* ---- shutdown primitives, for a lab that owns what SIGTERM does (lab 11) ----
 * By default the runtime (labrt.c) answers SIGTERM with shell_close. A lab that sets a shutdown
 * hook takes that over: on the first SIGTERM/SIGINT (and on labrun_stop) the runtime calls
 * fn(shell, signum, data) instead, and the lab sequences its own shutdown with the calls below.
 * It ends it with shell_shutdown_finish (or by leaving the process some other way). A second
 * signal still makes the runtime exit at once, saying so on stderr. */
typedef void (*shell_shutdown_fn)(shell_t *shell, int signum, void *data);
void shell_set_shutdown_hook(shell_t *shell, shell_shutdown_fn fn, void *data);
/* For the runtime: calls the hook and returns 1, or returns 0 when no hook is set. done/data
 * are what shell_close gets once the lab calls shell_shutdown_finish. */
int shell_shutdown_begin(shell_t *shell, int signum, shell_closed_fn done, void *data);
/* Closes the listener: new connections are refused from now on. Idempotent. */
void shell_stop_accepting(shell_t *shell);
/* Closes every idle keep-alive connection now; every other connection reads no further request
 * and closes after its last answer, and every answer from now on carries "Connection: close". */
void shell_close_idle(shell_t *shell);
/* Calls fn once, on the loop, when no request is in flight and no connection is open (after
 * shell_stop_accepting and shell_close_idle that is "drained"). */
void shell_on_drained(shell_t *shell, shell_closed_fn fn, void *data);
/* The lab's shutdown is done: shell_close with what shell_shutdown_begin was given. */
void shell_shutdown_finish(shell_t *shell);

/* Names a callback of the lab's own (a timer's, a client completion's) for the stall detector
 * while it runs: name = a string that outlives the shell (a literal). Returns the name it
 * replaces; give it back to shell_callback_end. Route handlers are named by the shell
 * ("GET /work"). Costs two clock reads and two atomic stores; nothing when the detector is off. */
const char *shell_callback_begin(shell_t *shell, const char *name);
void shell_callback_end(shell_t *shell, const char *previous);

/* Requests currently in flight (handed to a handler, not yet answered). */
unsigned shell_inflight(const shell_t *shell);

typedef struct shell_counters {
  uint64_t connections_accepted;
  unsigned connections_open;
  unsigned connections_peak;
  uint64_t requests_total;   /* handed to handlers */
  uint64_t bad_requests;     /* answered 400/413/431 by the shell */
  unsigned inflight;
  unsigned inflight_peak;
  uint64_t header_timeouts;  /* connections closed by header_timeout_ms */
  uint64_t idle_timeouts;    /* connections closed by idle_timeout_ms */
  uint64_t connections_shed; /* closed at the limit to make room (shed_after_ms) */
  uint64_t clients_gone_unread; /* noticed gone while the shell was not reading them */
  unsigned connections_max;  /* the limit in force (max_connections after the fd cap) */
} shell_counters_t;
void shell_get_counters(const shell_t *shell, shell_counters_t *out);
/* Restarts the counters (peaks from the current values). */
void shell_reset_counters(shell_t *shell);

/* ---- the request ---- */
const char *shell_request_method(const shell_request_t *req);    /* "GET" */
const char *shell_request_path(const shell_request_t *req);      /* "/price", no query */
const char *shell_request_query(const shell_request_t *req);     /* "a=1&b=2" or "" */
const char *shell_request_body(const shell_request_t *req, size_t *len);
/* Header value by case-insensitive name, or NULL. */
const char *shell_request_header(const shell_request_t *req, const char *name);
/* Query parameter as a number (fallback when absent or not a number). */
long shell_query_long(const shell_request_t *req, const char *name, long fallback);
/* Query parameter copied into out (NUL-terminated); returns 0, or -1 when absent. */
int shell_query_str(const shell_request_t *req, const char *name, char *out, size_t out_len);
shell_t *shell_request_shell(const shell_request_t *req);
uv_loop_t *shell_request_loop(const shell_request_t *req);
/* 0 for the first request on its connection, 1 for the next, ... */
unsigned shell_request_seq_on_conn(const shell_request_t *req);
/* uv_hrtime() when the request's last byte was parsed. */
uint64_t shell_request_start_ns(const shell_request_t *req);
/* Called at most once, on the loop, if the client goes away before the answer. */
void shell_request_on_abort(shell_request_t *req, shell_abort_fn fn, void *data);
int shell_request_aborted(const shell_request_t *req);

/* Answers req and releases it: do not touch req afterwards. body is copied.
 * extra_headers: NULL or full lines, each ending in "\r\n" (e.g. "Retry-After: 1\r\n"). */
void shell_respond_ex(shell_request_t *req, int status, const char *extra_headers,
                      const char *content_type, const char *body, size_t len);
void shell_respond(shell_request_t *req, int status, const char *content_type, const char *body,
                   size_t len);
/* Answers req with no answer at all: its connection is reset (TCP RST), as when a server
 * crashes or a load balancer drops it. Releases req; the connection's other requests are
 * aborted (their abort callbacks run). */
void shell_respond_reset(shell_request_t *req);
/* printf-style body. */
void shell_respondf(shell_request_t *req, int status, const char *content_type, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

#endif
