/* Lab 05 - an unbounded queue versus backpressure, and delivery that loses nothing.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements. The suite
 * (test.c) has a test per rule; the rule's test is named after it in [brackets].
 *
 * POST /events?id=ID  body = the event's payload.
 *   Q1 ID: 1 to 62 letters, digits, '.', '_' or '-'; anything else is answered 400
 *      "bad id: use 1-62 letters, digits, '.', '_', '-'\n" and nothing is queued. Without ?id=
 *      the lab numbers the event itself: "auto-1", "auto-2", ... [bad_id_rejected]
 *   Q2 202 "accepted ID\n" is a promise: the event is HELD (acknowledged, not yet delivered) and
 *      WILL be delivered while the service runs and across a graceful shutdown; it is never
 *      dropped, whatever the upstream does [retries_until_delivered, exactly_once_at_shutdown].
 *   Q3 the bound: at most queue-cap events are held at any moment (queued, being forwarded, or
 *      waiting for a retry: all of them count), and while fewer are held (and, in flow mode,
 *      nobody waits before it) the event is accepted: with nothing delivered, exactly queue-cap
 *      events get 202 [accepts_up_to_cap, bounded_queue].
 *   Q4 when queue-cap events are held:
 *        --mode shed: 503, header "Retry-After: <retry-after-s>", body "queue full, retry
 *                     later\n"; nothing is queued and the event is not acknowledged
 *                     [refuses_with_retry_after];
 *        --mode flow: the answer waits until there is room; waiting requests get in in the
 *                     order they came, each answered 202 once queued [flow_control]; one whose
 *                     producer gives up first is not queued and never reaches the upstream
 *                     [flow_producer_gives_up].
 *   Q5 order: events are forwarded for the first time in the order they were acknowledged
 *      (FIFO); an event being retried goes before every event not yet tried [fifo_order].
 * Delivery
 *   Q6 a forward is POST <upstream>/events?id=ID&event_id=ID with the payload, at most `workers`
 *      at once (drain rate = workers / upstream latency). A 2xx answer delivers the event.
 *   Q7 anything else (another status, no response, no answer within the attempt's timeout) is
 *      a failed attempt: the same event (same id, so the upstream can de-duplicate it) is sent
 *      again after a backoff that doubles per attempt from retry-base-ms up to retry-max-ms,
 *      with jitter (a random part of each delay), on a timer: never at once in a loop, never
 *      given up while the service runs [retries_until_delivered, upstream_failures_retried].
 *      The first attempt waits forward-timeout-ms for its answer, and each retry at least twice
 *      as long as the attempt before it, up to 4x forward-timeout-ms: a timeout says "slow", not
 *      "failed", and an upstream slower than forward-timeout-ms must still get every event
 *      [latency_near_timeout]. Under an upstream outage the
 *      held events stay held, so the queue fills and Q4 applies: backpressure, never an
 *      acknowledgement the service cannot keep [outage_503_exactly_once: the upstream answers
 *      503 for 1 s; outage_loses_nothing: it answers nothing for 1 s]. With the upstream's
 *      latency near forward-timeout-ms every acknowledged event is still delivered
 *      [latency_near_timeout].
 *   Q8 graceful shutdown: lab_destroy runs once every request is answered (flow mode's waiting
 *      ones included) and keeps delivering, with the same retries, until nothing is held; only
 *      then it closes its timers and client [exactly_once_at_shutdown].
 *   Q9 after an overload the held events drain at the drain rate, and a new event is delivered
 *      within about one forward's time [recovers].
 *
 * /debug/stats adds:
 *   queue_depth     events held now (Q3: <= queue_cap)
 *   queue_peak      the most held at once since start
 *   queue_kb        payload bytes held, in KiB
 *   queue_age_ms    how long the event at the front of the queue has been held (0 when none
 *                   waits)
 *   parked          flow mode: requests waiting for room now
 *   acked           events answered 202
 *   refused         events answered 503
 *   forwarded       events delivered (a 2xx answer), each counted once
 *   forward_errors  failed attempts (each retry that was needed)
 *   lost            acknowledged events dropped without delivery (0: the contract forbids it)
 *   latency_last_ms, latency_max_ms   from an event's 202 to its delivery
 *   At any moment acked == forwarded + queue_depth + lost [stats_add_up]. */
#ifndef LAB05_H
#define LAB05_H

#define LAB_OPTIONS(X)                                                                          \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "where events are forwarded")          \
  X(INT, workers, "workers", 4, "forwards in flight at once (drain rate = workers / latency)") \
  X(INT, queue_cap, "queue-cap", 100, "most events held at once (the pitfall: no bound)")      \
  X(STR, mode, "mode", "shed",                                                                 \
    "when the queue is full: shed (503 + Retry-After) or flow (hold the answer)")              \
  X(INT, retry_after_s, "retry-after-s", 1, "the Retry-After a shed event is told (s)")        \
  X(INT, forward_timeout_ms, "forward-timeout-ms", 5000,                                       \
    "a forward without an answer after this long is a failed attempt (ms)")                    \
  X(INT, retry_base_ms, "retry-base-ms", 50, "backoff before the first retry (ms)")            \
  X(INT, retry_max_ms, "retry-max-ms", 1000, "longest backoff between two attempts (ms)")

#include "lab_contract.h"

#endif
