/* Lab 04 - gather versus a scoped task group.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements. The suite
 * (test.c) has a test per rule; the rule's test is named after it in [brackets].
 *
 * GET /dashboard
 *   C1 starts three upstream calls at once, when the request arrives (none waits for another)
 *      [calls_start_together]:
 *        <upstream>/user?latency_ms=U                      (user-latency-ms)
 *        <upstream>/orders?latency_ms=O&status=S           (orders-latency-ms; S = orders-status
 *                                                           on the failing path, else 200)
 *        <upstream>/recommendations?latency_ms=R           (recs-latency-ms, the slow one)
 *   C2 when all three succeed (2xx), answers 200
 *        {"user":<body>,"orders":<body>,"recommendations":<body>}
 *      with each upstream body as received, after the slowest call has ended [success_path].
 *   C3 at the first failure (a non-2xx status, or no response: status 0) answers 502
 *        {"error":"<call>","status":<its status, 0 if none>}
 *      naming the call that failed FIRST; the siblings it cancels are not errors and never
 *      become the answer [first_error_is_the_answer, upstream_unreachable].
 *   C4 the first failure cancels the calls still out (client_cancel: the upstream sees them
 *      abandoned) [cancels_siblings], and the 502 goes as soon as those cancellations have been
 *      reported: after the failing call, well before the slowest sibling would have ended
 *      [fails_fast].
 *   C5 at deadline-ms after the request arrived (and not before) the calls still out are
 *      cancelled and the answer is 504 {"error":"deadline","deadline_ms":D} [deadline_cancels_all].
 *   C6 a client that hangs up before the answer cancels that dashboard's calls
 *      [client_gone_cancels_calls].
 *   C7 the answer is sent only after every call the dashboard started has ended: no call
 *      callback runs after the answer (late_callbacks stays 0) and the dashboard's state is
 *      freed at the answer, never before one of its callbacks has run [no_late_callbacks].
 *   C8 a dashboard that is failing or has answered refuses new calls (UV_ECANCELED, counted in
 *      spawn_refused); they never reach the upstream. Query late_spawn=1 makes the dashboard try
 *      one more call (<upstream>/audit) right after it has answered, on the success and on the
 *      failing path [spawn_after_close_refused].
 *   C9 cancelling is per dashboard: one dashboard's failure, deadline or hang-up cancels its
 *      own calls only; the others run to their own end [cancel_is_per_dashboard].
 *   C10 each dashboard is answered exactly once; fail=1 / fail=0 forces the failing or the
 *      success path, otherwise fail-percent of the dashboards fail, spread evenly (dashboard k,
 *      counted from 1, fails when k*61 % 100 < fail-percent) [one_response_each, steady_stream].
 *
 * /debug/stats adds (all counters since start):
 *   dashboards_total     dashboards received
 *   dashboards_answered  answers given (== dashboards_total once all are answered)
 *   dashboards_failed    answers other than 200
 *   dashboards_live      dashboard states still allocated (0 once every dashboard has answered)
 *   calls_started        upstream calls started (the upstream's requests_total, audit included)
 *   calls_inflight       calls started whose done callback has not run (0 at rest)
 *   calls_cancelled      done callbacks that reported a cancel (res->cancelled)
 *   late_callbacks       call callbacks that ran after their dashboard had answered (0)
 *   orphan_ms_total      summed time from a dashboard's answer to its late callbacks (0)
 *   spawn_refused        calls refused because their dashboard was failing or had answered
 * [stats_add_up, flat_under_load: the counters agree with each other and with the upstream's,
 *  and the ones marked 0 are 0 at rest and at stop.]
 *
 * The rules above are a scope's (Trio's nursery, asyncio.TaskGroup): it exits only when every
 * child has ended; the first failure cancels the live siblings; it refuses spawns once it is
 * failing or closed; every child's outcome reaches the owner; cancelling the owner (deadline,
 * client gone) cancels the children. */
#ifndef LAB04_H
#define LAB04_H

#define LAB_OPTIONS(X)                                                                         \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "upstream base URL (no trailing /)")  \
  X(INT, user_latency_ms, "user-latency-ms", 40, "latency of the user lookup (ms)")            \
  X(INT, orders_latency_ms, "orders-latency-ms", 15, "latency of the orders call (ms)")        \
  X(INT, orders_status, "orders-status", 500, "status of the orders call when it fails")       \
  X(INT, recs_latency_ms, "recs-latency-ms", 300, "latency of the recommendations call (ms)") \
  X(INT, deadline_ms, "deadline-ms", 1000, "deadline for the whole dashboard (ms)")            \
  X(INT, fail_percent, "fail-percent", 100,                                                    \
    "percent of dashboards whose orders call fails (when the query has no fail=)")

#include "lab_contract.h"

#endif
