/* Lab 03 - unbounded fan-out versus a concurrency limit.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *   GET /batch?n=N  fetches N items from the upstream (item i, 1..N, is
 *                   GET <upstream>?id=TAG.BATCH-i) and answers 200 with a flat JSON object:
 *     {"n":N,"ok":..,"err":..,"sum":..,"checksum":..,"err_connect":..,"err_timeout":..,
 *      "err_http":..,"max_inflight":..,"peak_inflight":..,"elapsed_ms":..,"first_error":"..."}
 *     Every item is accounted for exactly once: ok + err == N. An item's value is the number
 *     the upstream echoed back in its answer ({"id":"TAG.BATCH-i",...}), summed over the items it
 *     answered 200 for: with no error sum = N(N+1)/2, and the order-sensitive
 *     checksum = sum over i of i * value_i = N(N+1)(2N+1)/6 (each item got its own answer).
 *     peak_inflight: the most item fetches this service had in flight at once (service-wide).
 *   n missing, not a number, < 1 or > max_items: 400.
 *   /debug/stats adds fanout_inflight, fanout_inflight_peak, fanout_queued, fanout_items_ok,
 *   fanout_items_err, fanout_batches, fanout_connections_opened.
 * --max-inflight is the limit the solution enforces; the pitfall accepts and ignores it. */
#ifndef LAB03_H
#define LAB03_H

#define LAB_OPTIONS(X)                                                                        \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081",                                       \
    "upstream base URL; item i is GET URL?id=TAG.BATCH-i (URL&id=... if URL has a query)")      \
  X(INT, max_inflight, "max-inflight", 16, "most item fetches in flight at once, service-wide") \
  X(INT, max_items, "max-items", 10000, "largest n a batch may ask for")                       \
  X(INT, item_timeout_ms, "item-timeout-ms", 10000,                                           \
    "each item fetch's timeout, counted from when it starts (ms)")

#include "lab_contract.h"

#endif
