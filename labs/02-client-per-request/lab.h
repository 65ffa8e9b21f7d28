/* Lab 02 - a new HTTP client (and connection) per request.
 *
 * The contract every variant implements (pitfall.c, exercise.c, solution.c, the other right
 * answers in solutions/02-client-per-request/, the wrong answers in wrong/). Each rule names the
 * test in test.c that holds a variant to it.
 *
 *   GET /price?sku=X  (X: 1 to SKU_MAX = 64 of [A-Za-z0-9_-]) calls GET <upstream>/quote?sku=X
 *   once and
 *     - answers 200 with the upstream's body when it answered 2xx          (sequential_reuse)
 *     - 502 {"error":"...","status":N} when it answered anything else (N = its status)
 *                                                                    (upstream_5xx_gets_502)
 *     - 502 {"error":"..."} when it could not be reached (refused, reset) (unreachable_upstream_gets_502)
 *     - 504 {"error":"..."} when the call ran out of --timeout-ms: no sooner, and promptly after
 *                                                                    (slow_upstream_gets_504)
 *     Each request gets the answer of its own call: a failing call fails only its own request
 *     (failures_stay_isolated).
 *   sku missing or not of that form: 400, and the upstream is not called       (rejects_bad_sku)
 *   a sku longer than SKU_MAX: 400 {"error":"sku: ..."}, never cut short and quoted as another
 *     sku; the upstream is not called, and a sku of exactly SKU_MAX is quoted (long_sku_rejected)
 *   Connections: every request shares the service's connections to the upstream.
 *     - at most --pool of them open at once, however many requests arrive (concurrent_pool)
 *     - and up to --pool used in parallel: requests beyond one do not queue behind a single
 *       connection                                                    (pool_used_in_parallel)
 *     - kept open between requests: sequential requests, and a steady stream, reuse them instead
 *       of connecting again (sequential_reuse, connect_cost, stream_reuses_connections)
 *   /debug/stats adds                                                           (stats_fields)
 *     upstream_connections_opened  connections this service opened to the upstream, ever
 *                                  (equals what the upstream accepted from it)
 *     upstream_inflight            upstream calls in flight now (0 once every request is answered)
 *   State: everything the service holds lives in its lab_t, from lab_create to lab_destroy, which
 *   closes every connection (fds back to where they were, no handle left, no leak; fds_released,
 *   clean_shutdown); nothing outlives it, so a second lab_create in the same process starts
 *   clean (restart_starts_clean).
 */
#ifndef LAB02_H
#define LAB02_H

#define SKU_MAX 64 /* the longest sku a request may carry, in characters */

#define LAB_OPTIONS(X)                                                                            \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "base URL of the quote service")          \
  X(INT, pool, "pool", 8, "most connections to the upstream at once (the shared client's pool)") \
  X(INT, timeout_ms, "timeout-ms", 1000, "time limit of one upstream call, in ms")

#include "lab_contract.h"

#endif
