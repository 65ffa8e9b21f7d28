/* Lab 03 - unbounded fan-out versus a concurrency limit.
 *
 * The contract every variant implements (pitfall.c, exercise.c, solution.c, the other right
 * answers in solutions/03-unbounded-fanout/, the wrong answers in wrong/). Each rule names the
 * test in test.c that holds a variant to it; --max-inflight is K.
 *
 *   GET /batch?n=N  fetches N items from the upstream (item i, 1..N, is
 *                   GET <upstream>?id=TAG.BATCH-i) and answers 200 with a flat JSON object:
 *     {"n":N,"ok":..,"err":..,"sum":..,"checksum":..,"err_connect":..,"err_timeout":..,
 *      "err_http":..,"max_inflight":..,"peak_inflight":..,"elapsed_ms":..,"first_error":"..."}
 *     - once, after every item has finished: each item fetched exactly once and accounted for
 *       exactly once, ok + err == N (items_exactly_once). An item's value is the number the
 *       upstream echoed back ({"id":"TAG.BATCH-i",...}), summed over the items it answered 200
 *       for: with no error sum = N(N+1)/2 and checksum = sum of i * value_i = N(N+1)(2N+1)/6
 *       (each item got its own answer).
 *     - err = err_connect + err_timeout + err_http: err_http counts items the upstream answered
 *       with a status other than 200, err_timeout items whose fetch ran out of --item-timeout-ms,
 *       err_connect items that got no answer (refused, reset, could not start) (errors_by_kind);
 *       first_error describes the first item that failed ("" when none).
 *     - a failed item fails alone: the others of its batch, and later batches, still run
 *       (failed_items_free_their_slot). An upstream that is down fails every item fast
 *       (err_connect == N) and the batch is still answered 200 (upstream_down).
 *     - max_inflight: K; peak_inflight: the most fetches this service had in flight at once.
 *   The limit: at most K item fetches in flight at once, SERVICE-WIDE - across every batch in
 *   progress, not per batch (inflight_capped, limit_is_service_wide, survives_fd_limit,
 *   resources_released); and K of them do run in parallel: a batch takes about ceil(N/K)
 *   upstream latencies, not N (time_follows_waves).
 *   Waiting items start in FIFO order: within a batch item 1 before item 2, and a batch's items
 *   before those of a batch that arrived later (fifo_order).
 *   An item's --item-timeout-ms counts from when its fetch starts, not from when it was queued
 *   (timeout_counts_from_start).
 *   A client that hangs up before the answer stops its batch: fetches in flight finish (at most
 *   K), queued items are not started (client_gone_stops_the_batch).
 *   n missing, not a number, < 1 or > --max-items: 400, and the upstream is not called
 *   (rejects_bad_n).
 *   /debug/stats adds, service-wide: fanout_inflight (fetches in flight now), fanout_inflight_peak,
 *   fanout_queued (items waiting for a slot now), fanout_items_ok, fanout_items_err (items ever
 *   finished each way), fanout_batches (batches received), fanout_connections_opened. Once every
 *   batch is answered fanout_inflight and fanout_queued are 0 and items_ok + items_err counts
 *   every item (stats_at_rest); fds, handles and memory are back where they were at stop.
 * The pitfall accepts --max-inflight and ignores it. */
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
