/* Lab 12 - cancellation that is swallowed versus cancellation that propagates.
 * The contract every variant (pitfall.c, exercise.c, solution.c, wrong/) implements:
 *
 *   GET /report?steps=N&step_ms=M&fail_step=F&hang_step=H  builds a report in N steps, one
 *       after the other (never two of one report at once). Step i (1..N) is ONE upstream call
 *         GET <upstream>/step?report=R&n=i&latency_ms=M        (+ &status=500 when i == F,
 *                                                               + &hang=1 when i == H)
 *       with a timeout of step-timeout-ms. Query: steps 1..20 (default --steps), step_ms
 *       0..10000 (default --step-ms), fail_step and hang_step 0..steps (0 = none, the default).
 *       A value out of range or not an integer gets 400 {"error":"<name> must be an integer in
 *       A..B"} naming it, and makes no call. R numbers the reports 1, 2, ... in arrival order.
 *   A FAILED step (a status other than 2xx, no answer, its timeout ran out) is a real failure:
 *       it is tried again, up to --retries more times; a step still failing is recorded and the
 *       report moves on to the next step. After the last step:
 *         200 {"report":R,"steps":N,"ok":K,"failed":[i,...]}
 *   CANCELLATION: the report is cancelled when its client hangs up (shell_request_on_abort) or
 *       when --deadline-ms has passed since the request arrived. Then the step in flight is
 *       cancelled (client_cancel: the upstream sees its call abandoned), and no step and no
 *       attempt starts for that report any more: a cancelled step is never retried, never
 *       counted as failed, and the chain does not move on. On the deadline the answer is
 *         504 {"error":"deadline","deadline_ms":D,"steps_done":K}    (K: steps that had ended)
 *       within a loop turn of the deadline; a report whose client is gone answers nothing (the
 *       shell discards whatever it is given). Either way the report's state is cleaned up
 *       exactly once, at most one loop turn after the cancel (the turn on which the cancelled
 *       call's done callback arrives).
 *   /debug/stats adds: reports_started, reports_ok (200), reports_deadline (504),
 *       reports_aborted (client gone), reports_live (report states allocated), cleanups (report
 *       states cleaned up), steps_started (attempts started, retries included), steps_inflight,
 *       steps_ok, steps_failed (attempts that failed for real), steps_retried, steps_cancelled,
 *       steps_after_cancel (attempts started for a report after its cancel), free_turns_max
 *       (most loop turns from a report's cancel to its cleanup), loop_turns.
 *   Options: step-timeout-ms and deadline-ms >= 1 (0 is a usage error: UV_EINVAL). */
#ifndef LAB12_H
#define LAB12_H

#define LAB_OPTIONS(X)                                                                          \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "upstream base URL (no trailing /)")   \
  X(INT, steps, "steps", 5, "steps of a report when the query has no steps= (1..20)")         \
  X(INT, step_ms, "step-ms", 50, "latency of each step when the query has no step_ms= (ms)")  \
  X(INT, step_timeout_ms, "step-timeout-ms", 1000, "timeout of each step's call (ms, >= 1)")  \
  X(INT, retries, "retries", 1, "more attempts for a step that failed for real")              \
  X(INT, deadline_ms, "deadline-ms", 5000, "deadline of the whole report (ms, >= 1)")

#include "lab_contract.h"

#endif
