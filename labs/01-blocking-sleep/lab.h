/* Lab 01 - a blocking sleep inside a loop callback.
 * The contract every variant (pitfall.c, exercise.c, solution.c) implements:
 *   GET /work  answers 200 "done\n" no sooner than delay_ms after the request arrived. */
#ifndef LAB01_H
#define LAB01_H

#define LAB_OPTIONS(X) \
  X(INT, delay_ms, "delay-ms", 10, "how long each request waits before its answer (ms)")

#include "lab_contract.h"

#endif
