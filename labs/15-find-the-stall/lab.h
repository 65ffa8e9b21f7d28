/* Lab 15 - find the stall: a shop's price service, mostly healthy, with a p99 problem.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *   The catalog (catalog.h): --items products, version V. Version 1 exists when the service
 *   starts listening; a rebuild makes version V+1 (catalog_build) and replaces the catalog whole.
 *   GET /price?sku=S  200 (application/json) {"sku":S,"price":P,"version":V}, P =
 *                 catalog_price(S, V) of the catalog in service. S: a decimal integer from 0 to
 *                 items-1; missing, not a number or out of range: 400 {"error":"sku: ..."}.
 *                 [lab15::price_is_right, lab15::bad_sku_400]
 *   GET /top?n=K  200 {"version":V,"top":[[sku,price],...]}: the K most expensive products of
 *                 version V, highest price first, a lower sku first among equal prices. K: 1 to
 *                 100; else 400 {"error":"n: ..."}. [lab15::top_is_right, lab15::bad_n_400]
 *   GET /health   200 "ok\n" at once.
 *   Every answer comes from one whole version: its prices, its ranking and its number, never a
 *   catalog half rebuilt. [lab15::answers_match_their_version]
 *   A rebuild starts every --rebuild-ms ms (a repeating timer), whether the service is idle or
 *   busy: over a window of a quiet service, the version advances by window / rebuild_ms, within
 *   a third either way [lab15::rebuilds_keep_their_period]; under a steady load, at least half
 *   as fast as it did idle just before (a machine that takes longer than --rebuild-ms to build a
 *   version skips ticks idle and busy alike) [lab15::rebuilds_continue_under_load].
 *   At most one rebuild runs at a time.
 *   No callback holds the loop: with the stall detector on (--stall-ms, docs/stalls.md), a
 *   stream of requests across many rebuilds (at least 8) records no slow callback that comes back
 *   with the rebuilds (at most one per four rebuilds: a shared machine may pause any callback
 *   once), and the tail of /price latency stays near its median: p99 <= 4 x p50 + D/2 + C, D
 *   the wall time of one rebuild on the same machine at the same time, C the p99 of the same
 *   stream to a trivial service (build/bin/hello) at the same time (the suite measures both). [lab15::no_stall_under_load,
 *   lab15::tail_stays_near_the_median]
 *   The loop sleeps when there is nothing to do: idle_fraction (/debug/stats) of a quiet service
 *   stays above 0.5 (no handle that spins). [lab15::idle_loop_sleeps]
 *   /debug/stats adds catalog_version (V in service), catalog_rebuilds (rebuilds completed since
 *   start: catalog_version - 1), catalog_items, rebuilds_running (0 or 1) and requests_last_s
 *   (requests answered in the last whole second, from the stats rollup timer).
 *   [lab15::stats_fields]
 *   Shutdown waits for a rebuild that is running, then frees everything (uv_loop_close == 0, no
 *   memory left). [lab15::shutdown_during_rebuild]
 *   The lab's own callbacks (timers, after-work) name themselves for the detector with
 *   shell_callback_begin, so a stall in one of them says where it is. */
#ifndef LAB15_H
#define LAB15_H

#define LAB_OPTIONS(X)                                                                           \
  X(INT, items, "items", 300000, "products in the catalog (1 to 10000000)")                       \
  X(INT, rebuild_ms, "rebuild-ms", 500, "a catalog rebuild starts every N ms (10 to 3600000)")

#include "lab_contract.h"

#endif
