/* Lab 07 - CPU-bound work on the loop versus the thread pool.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *   GET /hash?cost=C&input=S  runs the CPU job of hashjob.h, hash_job(S, C), and answers 200
 *                 (application/json) {"input":"S","cost":C,"digest":"<64 hex>","cpu_ms":X}
 *                 with the job's own digest and CPU time. C: a decimal integer from 1 to
 *                 --max-cost. S: optional ("loopholes" when absent), 1 to 64 of [A-Za-z0-9_-].
 *                 A cost missing, empty, not a number or out of range: 400 {"error":"cost: ..."};
 *                 a bad input: 400 {"error":"input: ..."}. A 400 starts no job and changes no
 *                 counter but the shell's.
 *   The job never runs on the loop thread: /health, /debug/stats and new requests are answered
 *   while jobs run (the loop lag stays far below one job's CPU time), and jobs run in parallel
 *   on libuv's thread pool (K <= pool size jobs waiting at once all run at once).
 *   At most --max-jobs jobs are accepted and unanswered (queued or running) at any time. A
 *   /hash beyond that is refused at once: 503 with "Retry-After: 1" and
 *   {"error":"busy: N jobs (--max-jobs)"}, and costs no CPU. An answered job frees its slot.
 *   GET /health   200 "ok\n" at once.
 *   /debug/stats adds hash_jobs (accepted, not answered: 0 once all are answered), hash_jobs_peak,
 *   hash_done (jobs answered 200), hash_refused (503s) and hash_cpu_ms (the CPU time of every
 *   answered job, summed: hash_cpu_ms / hash_done is the CPU time per job).
 *   Shutdown answers every accepted job, then closes everything (uv_loop_close == 0). */
#ifndef LAB07_H
#define LAB07_H

#define LAB_OPTIONS(X)                                                                        \
  X(INT, max_jobs, "max-jobs", 64, "most /hash jobs accepted and not yet answered (503 beyond)") \
  X(INT, max_cost, "max-cost", 1000000, "largest cost a request may ask for (SHA-256 rounds)")

#include "lab_contract.h"

#endif
