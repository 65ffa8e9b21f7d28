/* labrt.h - runs one lab variant: as a service (lab_main) or inside a test (labrun_*).
 *
 * A lab's glue (harness/lib/labglue.c, compiled once per lab with that lab's lab.h) describes the
 * lab to this runtime as a lab_def_t, so the runtime itself knows nothing about any one lab.
 */
#ifndef LOOPHOLES_LABRT_H
#define LOOPHOLES_LABRT_H

#include <stddef.h>
#include "shell.h"

typedef enum { LAB_OPT_INT, LAB_OPT_STR } lab_opt_type_t;

typedef struct lab_opt {
  lab_opt_type_t type;
  const char *flag;   /* "delay-ms": given as --delay-ms N */
  const char *help;
  size_t offset;      /* of the field in the lab's config struct */
} lab_opt_t;

typedef struct lab_def {
  const char *slug;          /* "01-blocking-sleep" */
  const char *variant;       /* "pitfall", "solution", "exercise", ... */
  const lab_opt_t *opts;
  size_t n_opts;
  size_t config_size;
  const void *defaults;      /* a config struct holding the defaults */
  int (*create)(void **lab, shell_t *shell, const void *cfg);
  void (*destroy)(void *lab);
} lab_def_t;

/* The lab's glue defines this. */
extern const lab_def_t LAB_DEF;

/* main() of build/bin/labNN-VARIANT. */
int lab_main(const lab_def_t *def, int argc, char **argv);

/* ---- in-process runs, for tests ----
 * labrun_start runs the variant on its own loop in its own thread, listening on 127.0.0.1 with a
 * free port, so a lab that blocks its loop cannot block the test that measures it. */
typedef struct labrun labrun_t;

typedef struct labrun_report {
  int loop_close_rc;      /* uv_loop_close() after shutdown: 0 when every handle was closed */
  unsigned handles_left;  /* handles still known to the loop at that point */
  int drained;            /* 1 if every request in flight was answered before the deadline */
  int leaks;              /* under AddressSanitizer: 1 if LeakSanitizer found leaked memory
                             once the lab had shut down (the report is on stderr); else 0 */
} labrun_report_t;

/* args: NULL-terminated lab options, e.g. (const char *[]){"--delay-ms", "20", NULL}.
 * Returns 0 or a negative uv error (a message is printed on stderr). */
int labrun_start(labrun_t **out, const lab_def_t *def, const char *const *args);
int labrun_port(const labrun_t *run);
/* "http://127.0.0.1:PORT" */
const char *labrun_url(const labrun_t *run);
/* Graceful shutdown as on SIGTERM (a lab with a shutdown hook gets it, signum SIGTERM); waits up
 * to timeout_ms for it, then reports. Frees run. */
int labrun_stop(labrun_t *run, unsigned timeout_ms, labrun_report_t *report);

#endif
