/* lab_contract.h - the contract between the harness and a lab.
 *
 * Each lab folder has a lab.h that lists its options and includes this file:
 *
 *   #define LAB_OPTIONS(X) \
 *     X(INT, delay_ms, "delay-ms", 10, "how long each request waits before its answer, in ms")
 *   #include "lab_contract.h"
 *
 * which gives it `lab_config_t` with one field per option (INT: long, STR: const char *). Every
 * variant of the lab (pitfall.c, exercise.c, solution.c) then implements the two functions
 * declared at the end. The harness provides main(), flags (--port, --host, --help and the lab's
 * options), signals, /debug/stats and graceful shutdown.
 */
#ifndef LOOPHOLES_LAB_H
#define LOOPHOLES_LAB_H

#include <stddef.h>
#include "shell.h"

#ifndef LAB_OPTIONS
#error "define LAB_OPTIONS(X) before including lab_contract.h"
#endif

#define LAB_FIELD_INT(name) long name;
#define LAB_FIELD_STR(name) const char *name;
#define LAB_FIELD(type, name, flag, def, help) LAB_FIELD_##type(name)

typedef struct lab_config {
  LAB_OPTIONS(LAB_FIELD)
  char lab_config_end_; /* keeps the struct non-empty for labs with no options */
} lab_config_t;

typedef struct lab lab_t; /* each variant defines struct lab its own way */

/* Called once the shell exists, before it listens: register routes, open what the lab needs
 * (timers, clients) on shell_loop(shell). Returns 0 or a negative uv error. */
int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg);

/* Called after the shell has drained: every request has been answered. Close every handle the
 * lab opened and free the lab (in the close callbacks where handles are involved). The loop then
 * runs until nothing is left, and must close with uv_loop_close() == 0. */
void lab_destroy(lab_t *lab);

#endif
