/* Lab 14 - a downstream's rate limit: calling as fast as requests come.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *
 *   GET /call?id=X   makes one upstream call, GET UPSTREAM/api?id=X, and answers:
 *     200 {"id":"X","waited_ms":N,"item":<the upstream's body>}   N = ms it waited for its turn
 *     503 {"error":"queue full"}            + Retry-After: 1   no room to wait (at once)
 *     503 {"error":"rate limited","status":429} + Retry-After: 1   the upstream said 429
 *     502 {"error":"upstream","status":N}   any other failure: no response (N = 0), a non-2xx,
 *                                           or garbage (a 2xx whose body is not a JSON object,
 *                                           N = its status). Never retried.
 *     400 {"error":"bad parameter","param":"id"}   a missing or malformed id ([A-Za-z0-9_-],
 *                                           1..63 chars); nothing sent upstream.
 *
 *   The upstream allows R calls/s. The service keeps to it on its own side:
 *   - calls leave through a token bucket of --rate R tokens/s holding at most --burst B (full
 *     at the start): over any interval of T seconds at most B + R x T calls start, so any second
 *     sees at most R + B, any 100 ms at most B + R/10. A fixed window (R per calendar second)
 *     or a window that lets R go at once breaks this at its edges.
 *   - and no slower: while requests wait, a call starts as soon as a token is there (a
 *     uv_timer_t armed for the next token, not the next request's arrival), so a queue of N
 *     drains in about (N - B) / R seconds with nothing else arriving.
 *   - a request that finds no token waits in a FIFO (answered in arrival order) of at most
 *     --max-waiting requests; beyond that it gets the 503 "queue full" at once. Waiting is never
 *     a sleep: /debug/stats answers at once while requests wait.
 *   - after an upstream 429 no call starts for Retry-After (client_result_t.retry_after_ms;
 *     1000 ms when the 429 names none; this upstream's counts whole seconds, at least 1),
 *     and the bucket starts again from 0 tokens. Requests keep waiting meanwhile (up to
 *     --max-waiting).
 *
 *   Options outside their range make lab_create fail (UV_EINVAL): rate 1..100000,
 *   burst 1..100000, max-waiting 0..100000, call-timeout-ms >= 1.
 *
 *   /debug/stats adds calls_total (requests with a valid id), calls_ok, calls_failed (502),
 *   calls_rejected (queue full), calls_rate_limited (upstream 429s), calls_started (upstream
 *   calls), calls_inflight (upstream calls running now), waiting (requests waiting for a token)
 *   and waiting_peak. Once every request is answered, waiting and calls_inflight are 0. */
#ifndef LAB14_H
#define LAB14_H

#define LAB_OPTIONS(X)                                                                         \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "base URL of the rate-limited API")    \
  X(INT, rate, "rate", 100, "calls per second the service lets out (the API's limit)")         \
  X(INT, burst, "burst", 10, "calls that may leave at once (the bucket's size)")               \
  X(INT, max_waiting, "max-waiting", 200, "requests that may wait for a token; beyond: 503")   \
  X(INT, call_timeout_ms, "call-timeout-ms", 2000, "time limit of each upstream call, in ms")

#include "lab_contract.h"

#endif
