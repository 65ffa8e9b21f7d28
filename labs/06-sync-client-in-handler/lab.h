/* Lab 06 - a synchronous client inside an async handler.
 * The contract every variant (pitfall.c, exercise.c, solution.c, offload.c) implements:
 *   GET /profile?user=U  calls the upstream exactly once, GET <upstream>/profile?id=U, and answers
 *                 200 (application/json) with the upstream's body as it came.
 *                 502 {"error":"upstream failed","status":S} when the upstream answered non-2xx
 *                     (S its status) or could not be reached (S = 0);
 *                 504 {"error":"upstream timed out"} when the call took longer than --timeout-ms
 *                     (not sooner: an upstream that answers within the limit gets its 200).
 *                 U: 1 to 64 letters, digits, '_' or '-'. Missing, empty, longer or with any other
 *                 byte: 400 {"error":"user: ..."} (the message names `user`), and no upstream call.
 *   GET /health   200 "ok\n" at once, whatever /profile calls are waiting.
 *   The loop stays free while calls are out: /health, /debug/stats and new requests are served
 *   meanwhile (loop lag stays far below the upstream's latency), and calls overlap: with K
 *   requests waiting, at least min(K, 4) upstream calls are in flight at once (4: libuv's
 *   default thread pool, so offloading the blocking call to it keeps the contract, with a cap).
 *   /debug/stats adds upstream_calls (calls started since the start) and upstream_inflight
 *   (calls started or queued and not ended: 0 once every /profile is answered).
 *   Shutdown answers every /profile still waiting, then closes everything (uv_loop_close == 0). */
#ifndef LAB06_H
#define LAB06_H

#define LAB_OPTIONS(X)                                                                   \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "base URL of the profile service") \
  X(INT, timeout_ms, "timeout-ms", 1000, "time limit of one upstream call, in ms")

#include "lab_contract.h"

#endif
