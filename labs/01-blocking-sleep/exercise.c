/* Lab 01, exercise: make the wait stop blocking the loop.
 *
 * GET /work must wait delay_ms (standing for a backend's latency, a retry delay, a rate-limit
 * pause) and then answer "done\n". Right now it waits with usleep(), which freezes the event
 * loop: every other client waits too. Change it so the loop stays free while a request waits.
 *
 *   make check LAB=01    runs the suite against this file and says what it saw
 *   make hint LAB=01     one more hint each time
 *   make bench LAB=01    the plots, this variant next to the pitfall and the solution
 *   make reset LAB=01    start over (keeps a backup of your file)
 */
#include <stdlib.h>
#include <unistd.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

/* TODO 1: a request that waits needs somewhere to keep its state while the loop does other
 * work: a struct holding a uv_timer_t and the shell_request_t it will answer. */

/* TODO 2: the callback the loop calls when the wait is over: answer the request, then
 * uv_close() the timer and free the struct in the close callback (never before). */

/* Called by the shell for each GET /work, on the loop thread. */
static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  /* TODO 3: this blocks the event loop for delay_ms. Start a timer instead and return at once;
   * answer from the timer's callback. */
  usleep((useconds_t)(lab->delay_ms * 1000));
  shell_respond(req, 200, "text/plain", "done\n", 5);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->delay_ms = cfg->delay_ms;
  int rc = shell_route(shell, "GET", "/work", handle_work, lab);
  if (rc != 0) {
    free(lab);
    return rc;
  }
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) { free(lab); }
