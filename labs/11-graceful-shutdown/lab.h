/* Lab 11 - graceful shutdown: what a service does between SIGTERM and exit.
 * The contract every variant (pitfall.c, exercise.c, solution.c, wrong/) implements:
 *
 *   GET /work?ms=N  one call GET <upstream>/work?latency_ms=N on the lab's one shared client,
 *       then 200 {"ms":N} when the upstream answered 2xx, 502 {"error":"upstream"} otherwise.
 *       N: 0-10000; missing or other gets 400 {"error":"ms must be 0-10000"} and no call.
 *   GET /ready  200 {"ready":true} while serving; 503 {"ready":false} from the first SIGTERM on.
 *   /debug/stats adds: calls_inflight (upstream calls running), stopping (0 or 1), cut (requests
 *       answered 503 at the drain deadline).
 *
 *   The variant owns what SIGTERM does (shell_set_shutdown_hook; labrun_stop is the same). On the
 *   first one, in this order:
 *     1. /ready answers 503 at once; for ready-grace-ms the service still accepts and serves as
 *        before (a load balancer needs that long to see the 503 and stop sending);
 *     2. then the listener closes (new connections are refused), idle keep-alive connections are
 *        closed at once, and every request already accepted is still answered, each answer with
 *        "Connection: close";
 *     3. in-flight upstream calls are awaited for at most drain-deadline-ms; then each one still
 *        running is cancelled and its request answered 503 {"error":"shutting down"};
 *     4. when nothing is in flight and no connection is open, the shared client is destroyed
 *        (after every call on it has ended: reverse order of creation), every handle is closed,
 *        the loop closes with uv_loop_close() == 0 and the process exits 0.
 *   So the stop takes ready-grace-ms + min(longest in-flight call, drain-deadline-ms) and little
 *   more. A second SIGTERM during the drain exits at once, with an error status, and the
 *   runtime says so on stderr ("... again: exiting without draining"; the runtime does it for
 *   every variant that keeps its loop turning; test: second_sigterm_exits_at_once).
 *   Options: ready-grace-ms and drain-deadline-ms may be 0. */
#ifndef LAB11_H
#define LAB11_H

#define LAB_OPTIONS(X)                                                                          \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "upstream base URL (no trailing /)")   \
  X(INT, ready_grace_ms, "ready-grace-ms", 500, "at SIGTERM: /ready says 503 this long first") \
  X(INT, drain_deadline_ms, "drain-deadline-ms", 5000, "then in-flight calls get this long (ms)")

#include "lab_contract.h"

#endif
