/* Lab 02 - a new HTTP client (and connection) per request.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *   GET /price?sku=X  asks the upstream for GET <upstream>/quote?sku=X and answers 200 with the
 *                     upstream's body; 502 when the upstream failed or answered 5xx, 504 when
 *                     the call ran out of time (--timeout-ms).
 *   /debug/stats      also reports upstream_connections_opened and upstream_inflight. */
#ifndef LAB02_H
#define LAB02_H

#define LAB_OPTIONS(X)                                                                            \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "base URL of the quote service")          \
  X(INT, pool, "pool", 8, "most connections to the upstream at once (the shared client's pool)") \
  X(INT, timeout_ms, "timeout-ms", 1000, "time limit of one upstream call, in ms")

#include "lab_contract.h"

#endif
