/* Lab 01, pitfall: a blocking sleep inside a loop callback.
 *
 * GET /work must wait delay_ms (standing for a backend's latency, a retry delay, a rate-limit
 * pause) and then answer. This variant waits with usleep(): the whole thread sleeps, and the
 * thread is the event loop, so no other request is read, parsed or answered meanwhile. With N
 * clients the service does at most 1000/delay_ms requests per second, whatever N is.
 *
 * See it:  make bench LAB=01      (throughput flat at 1000/D, p99 and loop lag through the roof)
 *          make test              (the suite names the pitfall)
 */
#include <stdlib.h>
#include <unistd.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

/* Called by the shell for each GET /work, on the loop thread. */
static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  /* PITFALL: usleep() blocks the event loop for delay_ms. Every other connection, every timer,
   * even /debug/stats waits behind this one request. */
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
