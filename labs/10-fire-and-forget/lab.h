/* Lab 10 - fire-and-forget background work versus a small supervisor.
 * The contract every variant (pitfall.c, exercise.c, solution.c, wrong/) implements:
 *
 *   POST /signup?user=NAME  signs NAME up and answers at once (before the background job below
 *       has ended) with
 *         201 {"user":"NAME","job":"job-N","welcome":"scheduled"}   or "welcome":"dropped"
 *       N = 1, 2, ... in arrival order. NAME: 1-62 letters, digits, '.', '_' or '-'; a missing
 *       or other NAME gets 400 {"error":"user must be 1-62 letters, digits, '.', '_' or '-'"}
 *       and starts no job.
 *   The job ("send the welcome e-mail"): exactly one call POST <upstream>/welcome?id=job-N&user=NAME
 *       with a timeout of job-timeout-ms, never retried (a retry could send the e-mail twice).
 *       It SUCCEEDED when the upstream answered 2xx; it FAILED on any other status, on no
 *       answer (connection refused, timeout). Each failure writes one line on stderr naming the
 *       job ("job-N") and the word "failed".
 *   Bounds, both sides:
 *       - at most max-jobs jobs are in flight (calling the upstream) at once, and a job waits
 *         only while max-jobs are in flight;
 *       - at most max-waiting jobs wait for a slot (they start oldest first as slots free), and
 *         a job is dropped only when max-waiting are waiting: then the signup still answers 201
 *         with "welcome":"dropped", the job counts as dropped and one stderr line names it
 *         ("job-N" and "dropped").
 *   /debug/stats adds: started (jobs created: one per 201), succeeded, failed, dropped,
 *       pending (= jobs_inflight + jobs_waiting), jobs_inflight, jobs_inflight_peak,
 *       jobs_waiting, jobs_waiting_peak. At every moment
 *         started = succeeded + failed + pending + dropped      (nothing unaccounted)
 *       and succeeded / failed agree with what the upstream answered.
 *   Stop (SIGTERM; lab_destroy runs once every signup has been answered): the jobs still pending
 *       are drained: waiting ones start as slots free, in-flight ones are awaited, for at most
 *       drain-ms. Then whatever is still pending is dropped (in-flight calls cancelled), each with
 *       its stderr line, and the lab prints ONE line on stdout:
 *         {"stopped":1,"started":N,"succeeded":S,"failed":F,"dropped":D,"pending":0}
 *       with N = S + F + D, and frees everything: the stop takes about drain-ms at most.
 *       A second SIGTERM during that drain exits at once, with an error status, and the runtime
 *       says so on stderr (test: second_sigterm_exits_at_once).
 *   Options: max-jobs, job-timeout-ms >= 1 (0 is a usage error: lab_create returns UV_EINVAL);
 *       max-waiting and drain-ms may be 0 (no waiting room; drop at once at stop). */
#ifndef LAB10_H
#define LAB10_H

#define LAB_OPTIONS(X)                                                                          \
  X(STR, upstream, "upstream", "http://127.0.0.1:8081", "upstream base URL (no trailing /)")   \
  X(INT, max_jobs, "max-jobs", 8, "background jobs in flight at once (>= 1)")                  \
  X(INT, max_waiting, "max-waiting", 64, "jobs waiting for a slot; beyond it a job is dropped") \
  X(INT, job_timeout_ms, "job-timeout-ms", 2000, "timeout of a job's upstream call (ms, >= 1)") \
  X(INT, drain_ms, "drain-ms", 2000, "at stop: how long pending jobs may still run (ms)")

#include "lab_contract.h"

#endif
