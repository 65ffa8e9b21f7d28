/* Lab 01 - a blocking sleep inside a loop callback.
 *
 * The contract every variant implements (pitfall.c, exercise.c, solution.c, the other right
 * answers in solutions/01-blocking-sleep/, the wrong answers in wrong/). Each rule names the
 * test in test.c that holds a variant to it.
 *
 *   GET /work  answers 200, Content-Type text/plain, body "done\n"          (waits_the_full_delay)
 *     - no sooner than delay_ms after the request arrived                  (waits_the_full_delay)
 *     - and promptly after that: a quiet machine answers within a few ms of delay_ms; the suite
 *       allows delay_ms + max(delay_ms, 30 ms)                    (answers_soon_after_the_delay)
 *     - with the configured --delay-ms, whatever its value     (follows_the_configured_delay)
 *   Any number of requests wait at the same time. A waiting request holds no thread and delays
 *   no other request: N requests that arrive together are all answered after about one delay
 *   (not N delays, nor N/4 for a pool of 4 threads)                           (requests_overlap),
 *   and a steady stream of R requests/s is answered at R/s, each about delay_ms after it was
 *   sent, however many wait at once                                          (stream_keeps_up).
 *   The loop thread never blocks: its lag stays well under delay_ms while requests wait
 *   (loop_lag_stays_small), and a request that needs no wait (GET /debug/stats) is answered at
 *   once while others wait                                          (other_requests_not_delayed).
 *   What a request takes is given back once it is answered: every handle closed (libuv handles
 *   back to their count before, uv_loop_close() == 0 at shutdown)          (no_handle_left_behind)
 *   and every byte freed (the process's heap back to where it was)        (no_memory_left_behind).
 */
#ifndef LAB01_H
#define LAB01_H

#define LAB_OPTIONS(X) \
  X(INT, delay_ms, "delay-ms", 10, "how long each request waits before its answer (ms)")

#include "lab_contract.h"

#endif
