/* Lab 09 - an exhausted pool.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *
 *   GET /order?id=X    places an order in two steps:
 *                        1. the external API:  GET UPSTREAM/api/check?id=X&latency_ms=API_MS
 *                        2. a database transaction, with the API's answer:
 *                                              GET DB/db/tx?id=X&latency_ms=DB_MS
 *                      and answers 200 {"id":"X","api":<API's body>,"db":<transaction's body>}.
 *     Test knobs: api_ms=N, db_ms=N override --api-ms / --db-ms for this order (0..3600000).
 *
 *   The database is reached through a pool of --pool sessions. A session is one pooled keep-alive
 *   connection to DB; a transaction holds its session exclusively. So:
 *   - at most --pool transactions run at once, on at most --pool connections, reused from one
 *     transaction to the next (the database sees at most --pool connections and --pool
 *     requests in flight), and the pool is used: with more orders waiting, --pool run at once.
 *   - a session is held only around the database work: acquired when the transaction is about
 *     to start, released as soon as it has ended (never across the external API call). Pool
 *     busy time per order = the transaction's latency, so throughput reaches pool / DB latency
 *     (or the offered load, whichever is lower).
 *   - an order that finds no free session waits, in arrival order (FIFO), at most
 *     --acquire-timeout-ms (A). An order still waiting at A answers at once, no earlier:
 *       503 {"error":"pool exhausted","waited_ms":N,"pool":P}  with  Retry-After: --retry-after-s
 *     and leaves the queue: it is not handed a session later, and no database work is done for
 *     it. No order waits longer than A.
 *
 *   Failures: a call that gets no response (the upstream or the database is down) or a non-2xx
 *   answer: 502 {"error":"upstream","call":"api"|"db","status":N} at once (N = 0 without a
 *   response), releasing the session if it held one. A failed API call starts no transaction.
 *   A missing or malformed parameter: 400 {"error":"bad parameter","param":"id"} naming it: id
 *   (required, [A-Za-z0-9_-], 1..63 chars), api_ms, db_ms. Nothing is sent anywhere.
 *   Each call has a time limit of --call-timeout-ms (a call that runs out is a 502, status 0).
 *
 *   /debug/stats adds orders_total, orders_ok, orders_refused (503), orders_failed (502),
 *   orders_inflight, and the pool's metrics: pool_size, pool_checked_out (sessions held now),
 *   pool_checked_out_peak, pool_waiting (orders waiting now), pool_waiting_peak, pool_acquired
 *   (sessions handed out), pool_timeouts (orders refused at A), pool_wait_ms_p50,
 *   pool_wait_ms_p99 and pool_wait_ms_max (how long orders waited for the session they got:
 *   every acquisition counts, 0 for one that did not wait; refused orders are counted in
 *   pool_timeouts, not here).
 *   Once every order is answered, orders_inflight, pool_checked_out and pool_waiting are 0. */
#ifndef LAB09_H
#define LAB09_H

#define LAB_OPTIONS(X)                                                                          \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "base URL of the external API")        \
  X(STR, db, "db", "", "base URL of the database (default: the same as --upstream)")           \
  X(INT, pool, "pool", 4, "database sessions (pooled connections)")                           \
  X(INT, acquire_timeout_ms, "acquire-timeout-ms", 200,                                       \
    "the longest an order waits for a free session, in ms")                                   \
  X(INT, retry_after_s, "retry-after-s", 1, "the Retry-After an order refused at A is told (s)") \
  X(INT, api_ms, "api-ms", 100, "latency of the external API call, in ms")                      \
  X(INT, db_ms, "db-ms", 10, "latency of the database transaction, in ms")                      \
  X(INT, call_timeout_ms, "call-timeout-ms", 5000, "time limit of each API or database call, in ms")

#include "lab_contract.h"

#endif
