/* Lab 08 - no timeout on an external call.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *
 *   GET /quote?sku=X   makes two upstream calls, one after the other:
 *                        1. lookup: GET UPSTREAM/lookup?id=X
 *                        2. price:  GET UPSTREAM/price?id=X   (started when the lookup answered)
 *                      and answers 200 {"sku":"X","lookup":<lookup's body>,"price":<price's body>}.
 *     Test knobs (passed on to the upstream as its own query knobs):
 *       lookup_ms=N, price_ms=N   that call's latency_ms (0..3600000)
 *       hang=lookup|price         that call gets hang=1: the upstream never answers it
 *
 *   Time limits, both sides:
 *   - each call may run at most --call-timeout-ms (T) AND the whole request at most
 *     --deadline-ms (D), both calls together: a call's limit is min(T, what is left of D).
 *     Two calls of T each therefore never make a request wait 2T when D < 2T.
 *   - a call that answers within both limits is not cut short: a request whose calls each
 *     take less than T and together less than D answers 200.
 *   - when a limit runs out the call is cancelled (its connection closed, so the upstream sees
 *     it abandoned and nothing stays in flight) and the request answers at once:
 *       504 {"error":"timeout","call":"lookup"|"price","limit":"call_timeout"|"deadline"}
 *     naming the call that ran out and which limit ended it ("deadline" when what was left of D
 *     was shorter than T). A 504 comes no earlier than that limit.
 *
 *   Failures:
 *   - a call that gets no response (connection refused, upstream down) or a non-2xx answer:
 *       502 {"error":"upstream","call":"lookup"|"price","status":N}   (N = 0 without a response)
 *     at once, without starting the next call. An upstream that is down costs no more than a
 *     failed connect.
 *   - a missing or malformed parameter: 400 {"error":"bad parameter","param":"sku"} naming it:
 *     sku (required, [A-Za-z0-9_-], 1..63 chars), lookup_ms, price_ms (integers 0..3600000),
 *     hang (lookup or price). Nothing is sent upstream.
 *
 *   /debug/stats adds quotes_total, quotes_ok, quotes_timed_out (504), quotes_failed (502),
 *   quotes_inflight (handed to the handler, not answered yet), calls_started, calls_inflight
 *   (upstream calls running now) and calls_timed_out. Once every request is answered,
 *   quotes_inflight and calls_inflight are 0. */
#ifndef LAB08_H
#define LAB08_H

#define LAB_OPTIONS(X)                                                                         \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "base URL of the lookup/price service") \
  X(INT, call_timeout_ms, "call-timeout-ms", 300, "time limit of each upstream call, in ms")    \
  X(INT, deadline_ms, "deadline-ms", 500,                                                      \
    "time limit of the whole /quote request, both calls together, in ms")

#include "lab_contract.h"

#endif
