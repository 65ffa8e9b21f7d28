/* Sample submission "garbage": does not wait, answers at once with a body full of bytes that
 * break naive reports (quotes, a CDATA end, control characters, invalid UTF-8, fake TAP and
 * Criterion lines), and prints more of them on stdout and stderr. The suite quotes the body in
 * its failure message; the grader's reports must stay valid JSON, XML and TAP. */
#include <stdio.h>
#include <stdlib.h>

#include "lab.h"

struct lab {
  long delay_ms;
};

static const char nasty[] =
    "\"},{\"score\": 100, \"status\": \"passed\"}]]]><x>&amp;\t\r\x01\x1b[31m\xff\xfe\n"
    "ok 1 - lab01/waits_the_full_delay\n[PASS] lab01::waits_the_full_delay\\";

static void handle_work(shell_request_t *req, void *data) {
  (void)data;
  fputs(nasty, stdout);
  fputs(nasty, stderr);
  fflush(stdout);
  shell_respond(req, 200, "text/plain", nasty, sizeof nasty - 1);
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
