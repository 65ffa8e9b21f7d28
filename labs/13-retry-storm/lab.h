/* Lab 13 - retries without backoff: a short outage becomes a retry storm.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *
 *   GET /fetch?id=X   calls GET UPSTREAM/item?id=X (an attempt) and, when it fails, tries again
 *                     (a retry), then answers:
 *     200 {"id":"X","attempts":K,"item":<the upstream's body>}          the first good answer
 *     502 {"error":"upstream","status":N,"attempts":K,"gave_up":"R"}   no good answer
 *   where K = attempts made for this request, N = the last attempt's HTTP status (0 when no
 *   response arrived) and R says why it stopped retrying: "not_retryable", "max_retries",
 *   "budget" or "deadline". A missing or malformed id ([A-Za-z0-9_-], 1..63 chars) gets
 *   400 {"error":"bad parameter","param":"id"} and sends nothing upstream.
 *
 *   Which answers are good, and which failures are worth a retry:
 *   - good: a 2xx whose body is a JSON object (starts with '{'). A 2xx with any other body is
 *     garbage: a failure (N = its status), retried like a 5xx, never relayed.
 *   - retried: no response (refused, reset, the attempt's time limit), a 5xx, a 429, garbage.
 *   - never retried: any other 4xx (the request is wrong; asking again cannot help): answered
 *     at once with gave_up "not_retryable", after exactly one attempt.
 *   - at most --max-retries retries (so at most max_retries + 1 attempts) per request.
 *
 *   How long a retry waits (capped exponential backoff, full jitter), on a timer:
 *   - before retry n (n = 1, 2, ...) the request waits a draw uniform in
 *     [0, min(--backoff-max-ms, --backoff-base-ms x 2^(n-1))]: retries of requests that failed
 *     together spread out instead of arriving in lockstep, and no wait exceeds the cap.
 *   - after a 429 the next attempt waits at least the upstream's Retry-After (client.h hands it
 *     over as client_result_t.retry_after_ms; 1000 ms when the 429 names none). This upstream's
 *     Retry-After is whole seconds, at least 1; the suite has it ask for 2 s.
 *   - the wait is a uv_timer_t: the loop serves other requests meanwhile, and /debug/stats
 *     answers at once while retries wait.
 *
 *   Limits that keep a failing upstream from being buried:
 *   - a retry budget, service-wide: over the last second (a sliding window; buckets of 100 ms
 *     are fine), retries started <= --budget-min + --budget-pct % of the requests received.
 *     A retry the budget refuses is not made: 502 gave_up "budget" at once. So while the
 *     upstream is down, upstream attempts / requests stays near 1 + budget-pct/100.
 *   - a deadline: every request is answered within --deadline-ms of its arrival. An attempt
 *     may run min(--call-timeout-ms, what is left of the deadline); a retry whose wait would
 *     end at or past the deadline is not made: 502 gave_up "deadline" at once.
 *   - an upstream that answers garbage (a non-JSON 2xx) is retried within these same limits,
 *     never forever.
 *
 *   Options outside their range make lab_create fail (UV_EINVAL: a usage error):
 *   max-retries 0..10, call-timeout-ms and deadline-ms >= 1, backoff-base-ms >= 1,
 *   backoff-max-ms >= backoff-base-ms, budget-pct 0..100, budget-min 0..1000.
 *
 *   /debug/stats adds fetch_total (requests with a valid id), fetch_ok, fetch_failed,
 *   fetch_inflight (not answered yet), attempts_total (upstream calls started), retries_total,
 *   retries_denied (refused by the budget) and waiting (requests in a backoff wait now).
 *   Once every request is answered, fetch_inflight and waiting are 0. */
#ifndef LAB13_H
#define LAB13_H

#define LAB_OPTIONS(X)                                                                         \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "base URL of the item service")        \
  X(INT, max_retries, "max-retries", 5, "retries per request at most (0..10)")                 \
  X(INT, call_timeout_ms, "call-timeout-ms", 500, "time limit of each attempt, in ms")         \
  X(INT, deadline_ms, "deadline-ms", 2000, "time limit of the whole request, in ms")           \
  X(INT, backoff_base_ms, "backoff-base-ms", 50, "the first retry's wait is drawn in [0, this]") \
  X(INT, backoff_max_ms, "backoff-max-ms", 1000, "no retry waits longer than this, in ms")     \
  X(INT, budget_pct, "budget-pct", 10, "retries per second at most this % of requests...")     \
  X(INT, budget_min, "budget-min", 5, "...plus this many (0..1000)")

#include "lab_contract.h"

#endif
