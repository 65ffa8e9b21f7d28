/* Lab 14, pitfall: calling a rate-limited API as fast as requests come.
 *
 * The pitfall in one line: the upstream allows R calls a second and the service sends it as many
 * as arrive, so above R most calls come back 429.
 * What it does: GET /call?id=X makes one upstream call and relays its answer; a 429 becomes a 503
 * with Retry-After. Nothing paces the calls: at 2R offered, half of them are refused (and each
 * refusal still costs a round trip and a slot of the partner's quota), and when the upstream
 * says "come back in 1 s" the service keeps calling at once.
 * See it:  build/bin/upstream --port 8081 --rate-limit 50 --rate-burst 10 &
 *          build/bin/lab14-pitfall --port 8080 --rate 50 &
 *          build/bin/loadgen 'http://127.0.0.1:8080/call?id=a' --rate 100 --duration 3
 *          curl -s localhost:8081/stats       # rate_limited: about half of requests_total
 *          or make bench LAB=14.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"
#include "labkit.h"

struct lab {
  shell_t *shell;
  const lab_config_t *cfg;
  client_t *client; /* one connection cache for every call */
  uint64_t calls_total, calls_ok, calls_failed, calls_rejected, calls_rate_limited;
  uint64_t calls_started, calls_inflight, waiting, waiting_peak;
};

/* One /call request, from its handler to its answer. */
typedef struct call {
  lab_t *lab;
  shell_request_t *req;
  char id[80];
  uint64_t arrived_ms; /* uv_now() when it arrived */
  uint64_t waited_ms;  /* how long it waited for its turn */
} call_t;

static void call_on_done(client_transfer_t *t, const client_result_t *res, void *data);

/* Starts the upstream call. Returns 0, or -1 when it could not start. */
static int call_start(call_t *c) {
  lab_t *lab = c->lab;
  char url[512];
  c->waited_ms = uv_now(shell_loop(lab->shell)) - c->arrived_ms;
  if (snprintf(url, sizeof url, "%s/api?id=%s", lab->cfg->upstream, c->id) >= (int)sizeof url) {
    fprintf(stderr, "lab14: upstream URL too long\n");
    return -1;
  }
  if (client_get(lab->client, url, lab->cfg->call_timeout_ms, call_on_done, c) == NULL) {
    fprintf(stderr, "lab14: client_get(%s) failed\n", url);
    return -1;
  }
  lab->calls_started++;
  lab->calls_inflight++;
  return 0;
}

static void call_fail(call_t *c, int status) {
  shell_respondf(c->req, 502, "application/json", "{\"error\":\"upstream\",\"status\":%d}", status);
  c->lab->calls_failed++;
  free(c);
}

/* Who calls it: the client, on the loop, when the upstream call has ended. */
static void call_on_done(client_transfer_t *t, const client_result_t *res, void *data) {
  call_t *c = data;
  lab_t *lab = c->lab;
  (void)t;
  lab->calls_inflight--;
  if (res->error == NULL && res->status == 429) {
    /* PITFALL: the upstream says "not now, come back in a second"; the service passes that on
     * and goes on calling at once for every other request, as fast as they come. */
    lab->calls_rate_limited++;
    const char *body = "{\"error\":\"rate limited\",\"status\":429}";
    shell_respond_ex(c->req, 503, "Retry-After: 1\r\n", "application/json", body, strlen(body));
    free(c);
    return;
  }
  if (res->error != NULL || res->status < 200 || res->status > 299 || res->body_len == 0 ||
      res->body[0] != '{') {
    call_fail(c, res->status);
    return;
  }
  size_t len = res->body_len + 128;
  char *body = malloc(len);
  if (body == NULL) {
    shell_respondf(c->req, 500, "application/json", "{\"error\":\"out of memory\"}");
    lab->calls_failed++;
    free(c);
    return;
  }
  snprintf(body, len, "{\"id\":\"%s\",\"waited_ms\":%llu,\"item\":%.*s}", c->id,
           (unsigned long long)c->waited_ms, (int)res->body_len, res->body);
  shell_respond(c->req, 200, "application/json", body, strlen(body));
  lab->calls_ok++;
  free(body);
  free(c);
}

/* GET /call?id=X */
static void call_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  call_t *c;
  char id[80];

  if (shell_query_str(req, "id", id, sizeof id) != 0 || !labkit_token_valid(id, 63, "-_")) {
    shell_respondf(req, 400, "application/json", "{\"error\":\"bad parameter\",\"param\":\"id\"}");
    return;
  }
  c = calloc(1, sizeof *c);
  if (c == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}");
    return;
  }
  c->lab = lab;
  c->req = req;
  c->arrived_ms = uv_now(shell_loop(lab->shell));
  snprintf(c->id, sizeof c->id, "%s", id);
  lab->calls_total++;
  /* PITFALL: every request calls at once, however many arrived this second. */
  if (call_start(c) < 0) call_fail(c, 0);
}

static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "calls_total", (double)lab->calls_total);
  shell_stats_add(shell, "calls_ok", (double)lab->calls_ok);
  shell_stats_add(shell, "calls_failed", (double)lab->calls_failed);
  shell_stats_add(shell, "calls_rejected", (double)lab->calls_rejected);
  shell_stats_add(shell, "calls_rate_limited", (double)lab->calls_rate_limited);
  shell_stats_add(shell, "calls_started", (double)lab->calls_started);
  shell_stats_add(shell, "calls_inflight", (double)lab->calls_inflight);
  shell_stats_add(shell, "waiting", (double)lab->waiting);
  shell_stats_add(shell, "waiting_peak", (double)lab->waiting_peak);
}

static int config_valid(const lab_config_t *c) {
  return c->rate >= 1 && c->rate <= 100000 && c->burst >= 1 && c->burst <= 100000 &&
         c->max_waiting >= 0 && c->max_waiting <= 100000 && c->call_timeout_ms >= 1;
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;

  if (!config_valid(cfg)) {
    fprintf(stderr, "lab14: an option is out of range (see --help and lab.h)\n");
    return UV_EINVAL;
  }
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = cfg;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab14: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  rc = shell_route(shell, "GET", "/call", call_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab14: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

/* Every request has been answered, so no call is running: the client has nothing to drop. */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  free(lab);
}
