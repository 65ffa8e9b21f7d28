/* Lab 05 - an unbounded queue versus backpressure.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *   POST /events?id=ID  body = the event's payload. 202 "accepted" means the event is queued
 *                       and WILL reach the upstream exactly once (also across a graceful
 *                       shutdown). A variant that cannot take it answers 503 with Retry-After.
 *                       ID: letters, digits, '.', '_' or '-' (400 otherwise); without one the
 *                       lab numbers the event itself ("auto-N").
 *   A consumer forwards queued events, oldest first, as POST UPSTREAM/events?id=ID with the
 *   payload, `workers` at a time: its drain rate is workers / upstream latency.
 *   /debug/stats adds queue_depth, queue_peak, queue_bytes, queue_age_ms (how long the oldest
 *   queued event has waited), parked, acked, refused, forwarded, forward_errors, lost,
 *   latency_last_ms and latency_max_ms (from acknowledgement to the upstream's answer). */
#ifndef LAB05_H
#define LAB05_H

#define LAB_OPTIONS(X)                                                                          \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "where events are forwarded")          \
  X(INT, workers, "workers", 4, "forwards in flight at once (drain rate = workers / latency)") \
  X(INT, queue_cap, "queue-cap", 100, "most events the queue may hold (the pitfall: no bound)") \
  X(STR, mode, "mode", "shed",                                                                 \
    "when the queue is full: shed (503 + Retry-After) or flow (hold the answer)")              \
  X(INT, retry_after_s, "retry-after-s", 1, "the Retry-After a shed event is told (s)")

#include "lab_contract.h"

#endif
