/* Lab 04 - gather versus a scoped task group.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *   GET /dashboard  calls three upstream paths at once:
 *       <upstream>/user?latency_ms=U                      (user-latency-ms)
 *       <upstream>/orders?latency_ms=O&status=S           (orders-latency-ms; S = orders-status
 *                                                           on the failing path, else 200)
 *       <upstream>/recommendations?latency_ms=R           (recs-latency-ms, the slow one)
 *     and answers
 *       200 {"user":<body>,"orders":<body>,"recommendations":<body>}  when all three succeed,
 *       502 {"error":"<call>","status":<its status, 0 if none>}       at the first failure,
 *       504 {"error":"deadline","deadline_ms":D}                       when deadline-ms runs out.
 *     Query: fail=1 / fail=0 forces the failing or the success path (otherwise fail-percent of
 *     the requests fail, spread evenly); late_spawn=1 makes the dashboard try one more call
 *     (<upstream>/audit) after it has answered, into the same group of calls: a scope refuses
 *     it (spawn_refused), gather starts it.
 *   /debug/stats adds: dashboards_total, dashboards_answered, dashboards_failed, dashboards_live
 *     (dashboard states still allocated), calls_started, calls_inflight, calls_cancelled,
 *     late_callbacks (call callbacks that ran after their dashboard had answered),
 *     orphan_ms_total (summed time calls kept running after their dashboard answered),
 *     spawn_refused.
 * A scope must: exit only when every child has ended; cancel the live siblings at the first
 * failure; refuse spawns into a closed or failing scope; hand every child's outcome to the
 * owner; cancel the children when the owner is cancelled (client gone, deadline). */
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
