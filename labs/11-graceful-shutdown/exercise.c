/* Lab 11, exercise: make SIGTERM a graceful shutdown (read README.md and lab.h first).
 * It starts as the pitfall: SIGTERM stops the loop at once - whatever was in flight is lost.
 *
 * GET /work makes one upstream call and answers with it; GET /ready says whether to send more.
 * On SIGTERM this variant does what a quick signal handler does: uv_stop() the loop. uv_run
 * returns, main returns, the process exits. Every request in flight at that moment - accepted,
 * half done - ends in a connection reset or an empty reply; /ready never said 503, so the load
 * balancer kept sending until the connections were refused. Every deploy does this to the
 * requests that happen to be running.
 *
 * See it:
 *   build/bin/upstream --port 8081 &
 *   build/bin/lab11-pitfall --port 8080 &
 *   curl -s 'localhost:8080/work?ms=3000' & sleep 0.5; kill -TERM %2
 *   wait   # curl: (52) Empty reply from server: the request in flight at the signal is lost
 * or: make bench LAB=11
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

/* One GET /work: its request and its upstream call. */
typedef struct call call_t;
struct call {
  lab_t *lab;
  shell_request_t *req;
  client_transfer_t *transfer;
  long ms;
};

/* TODO: the shutdown needs a timer (grace period, drain deadline, last step) and the list of
 * calls in flight (to cancel them at the deadline). Create the timer before the client: the
 * shutdown undoes the startup in reverse order. */
struct lab {
  shell_t *shell;
  lab_config_t cfg;
  client_t *client;
  unsigned calls_inflight;
  int stopping;
  unsigned long cut;
};

/* Who calls it: the client, on the loop, when the call ended (answered, failed or cancelled). */
static void on_call_done(client_transfer_t *t, const client_result_t *res, void *data) {
  call_t *c = data;
  lab_t *lab = c->lab;
  (void)t;
  lab->calls_inflight--;
  if (res->status >= 200 && res->status < 300) {
    shell_respondf(c->req, 200, "application/json", "{\"ms\":%ld}\n", c->ms);
  } else {
    shell_respond(c->req, 502, "application/json", "{\"error\":\"upstream\"}\n", 21);
  }
  free(c);
}

/* Who calls it: the shell, if the client hangs up first. The call is not worth finishing. */
static void on_client_gone(shell_request_t *req, void *data) {
  call_t *c = data;
  (void)req;
  client_cancel(c->transfer);
}

static void handle_work(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char arg[16], url[512], *end = arg;
  long ms = -1;
  if (shell_query_str(req, "ms", arg, sizeof arg) == 0 && arg[0] != '\0') ms = strtol(arg, &end, 10);
  if (ms < 0 || ms > 10000 || *end != '\0') {
    shell_respond(req, 400, "application/json", "{\"error\":\"ms must be 0-10000\"}\n", 31);
    return;
  }
  call_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    shell_respond(req, 503, "application/json", "{\"error\":\"out of memory\"}\n", 26);
    return;
  }
  c->lab = lab;
  c->req = req;
  c->ms = ms;
  snprintf(url, sizeof url, "%s/work?latency_ms=%ld", lab->cfg.upstream, ms);
  c->transfer = client_get(lab->client, url, ms + 10000, on_call_done, c);
  if (c->transfer == NULL) {
    fprintf(stderr, "lab11: client_get failed\n");
    free(c);
    shell_respond(req, 502, "application/json", "{\"error\":\"upstream\"}\n", 21);
    return;
  }
  lab->calls_inflight++;
  shell_request_on_abort(req, on_client_gone, c);
}

static void handle_ready(shell_request_t *req, void *data) {
  lab_t *lab = data;
  if (lab->stopping) shell_respond(req, 503, "application/json", "{\"ready\":false}\n", 16);
  else shell_respond(req, 200, "application/json", "{\"ready\":true}\n", 15);
}

static void on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "calls_inflight", lab->calls_inflight);
  shell_stats_add(shell, "stopping", lab->stopping);
  shell_stats_add(shell, "cut", (double)lab->cut);
}

/* Who calls it: the runtime, on the loop, at the first SIGTERM. PITFALL: "stop" taken
 * literally. uv_stop makes uv_run return with every handle still open - the listener, the
 * connections, the calls in flight - and the process exits over them: the kernel closes the
 * sockets, the clients get a reset or an empty reply. /ready never said 503. */
/* TODO: /ready says 503 first (stopping = 1), then after ready_grace_ms shell_stop_accepting and
 * shell_close_idle, then shell_on_drained; cut what still runs at drain_deadline_ms; when drained,
 * client_destroy (from a timer callback, not inside a client callback), close the timer, then
 * shell_shutdown_finish. */
static void on_shutdown(shell_t *shell, int signum, void *data) {
  lab_t *lab = data;
  (void)signum;
  fprintf(stderr, "lab11: SIGTERM, stopping (%u call(s) in flight)\n", lab->calls_inflight);
  uv_stop(shell_loop(shell));
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab = calloc(1, sizeof *lab);
  int rc;
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = *cfg;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab11: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  *out = lab; /* from here on, a failure is undone by lab_destroy */
  if ((rc = shell_route(shell, "GET", "/work", handle_work, lab)) != 0 ||
      (rc = shell_route(shell, "GET", "/ready", handle_ready, lab)) != 0)
    return rc;
  shell_set_stats_hook(shell, on_stats, lab);
  shell_set_shutdown_hook(shell, on_shutdown, lab);
  return 0;
}

/* Called by the runtime once the shell has closed: never, after the SIGTERM above. */
/* TODO: after your shutdown everything is closed already; close here only what is still open. */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  free(lab);
}
