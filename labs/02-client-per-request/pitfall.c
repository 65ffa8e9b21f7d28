/* Lab 02, pitfall: a new HTTP client per request.
 *
 * The pitfall in one line: a client created per request opens a new connection per request, and
 * pays the handshake (a round trip or three across data centres) every time.
 * What it does: GET /price?sku=X asks the upstream for /quote?sku=X and relays the answer (200),
 * or 502 when the upstream fails, 504 when the call runs out of time. Each request creates its own
 * client_t and destroys it once answered - the "requests.get() in a handler" / "new HttpClient
 * per call" pattern. Each client is a fresh connection cache, so nothing is ever reused: every
 * call connects, and every connection ends in TIME_WAIT on this side.
 * See it:  build/bin/upstream --port 8081 --latency-ms 5 --connect-cost-ms 40 &
 *          build/bin/lab02-pitfall --port 8080 &
 *          for i in $(seq 20); do curl -s 'http://127.0.0.1:8080/price?sku=a' -o /dev/null \
 *            -w '%{time_total}\n'; done; curl -s http://127.0.0.1:8081/stats
 *          (connections_accepted grows by one per request; ss -tan state time-wait | wc -l), or
 *          make bench LAB=02.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

struct lab {
  shell_t *shell;
  const lab_config_t *cfg;
  uint64_t connections_opened; /* summed over the per-request clients, for /debug/stats */
  unsigned inflight;
};

/* One /price request waiting for its quote. */
typedef struct price_call {
  lab_t *lab;
  shell_request_t *req;
  client_t *client; /* PITFALL: this request's own client, and so its own connection */
} price_call_t;

/* A SKU goes into the upstream's URL as is, so it must not need escaping; one longer than
 * SKU_MAX is refused, not cut short (the caller's buffer holds one character more to see it). */
static int sku_valid(const char *sku) {
  size_t i, n = strlen(sku);

  if (n == 0 || n > SKU_MAX) return 0;
  for (i = 0; i < n; i++) {
    char ch = sku[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '-' || ch == '_'))
      return 0;
  }
  return 1;
}

/* 200 with the upstream's quote, 504 when the call ran out of time, 502 for any other failure. */
static void price_answer(shell_request_t *req, const client_result_t *res) {
  if (res->timed_out)
    shell_respondf(req, 504, "application/json", "{\"error\":\"upstream timed out\"}\n");
  else if (res->status < 200 || res->status > 299)
    shell_respondf(req, 502, "application/json",
                   "{\"error\":\"upstream failed\",\"status\":%d}\n", res->status);
  else
    shell_respond(req, 200, "application/json", res->body, res->body_len);
}

/* Who calls it: the client, on the loop, when the upstream call has ended. */
static void price_on_quote(client_transfer_t *t, const client_result_t *res, void *data) {
  price_call_t *call = data;
  client_stats_t st;

  (void)t;
  client_get_stats(call->client, &st);
  call->lab->connections_opened += st.connections_opened;
  call->lab->inflight--;
  price_answer(call->req, res);
  /* PITFALL: the client goes, and its connection with it (closed, left in TIME_WAIT). */
  client_destroy(call->client);
  free(call);
}

/* GET /price?sku=X */
static void price_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  price_call_t *call;
  char sku[SKU_MAX + 2], url[512];
  int rc;

  if (shell_query_str(req, "sku", sku, sizeof sku) != 0 || !sku_valid(sku)) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"sku: want ?sku= and 1 to %d of [A-Za-z0-9_-]\"}\n", SKU_MAX);
    return;
  }
  if (snprintf(url, sizeof url, "%s/quote?sku=%s", lab->cfg->upstream, sku) >= (int)sizeof url) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"upstream URL too long\"}\n");
    return;
  }
  call = calloc(1, sizeof *call);
  if (call == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}\n");
    return;
  }
  call->lab = lab;
  call->req = req;
  /* PITFALL: a brand-new client for this one call: an empty connection cache, no pool. */
  rc = client_create(&call->client, shell_request_loop(req), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab02: client_create: %s\n", uv_strerror(rc));
    shell_respondf(req, 502, "application/json", "{\"error\":\"could not call the upstream\"}\n");
    free(call);
    return;
  }
  if (client_get(call->client, url, lab->cfg->timeout_ms, price_on_quote, call) == NULL) {
    fprintf(stderr, "lab02: client_get(%s) failed\n", url);
    shell_respondf(req, 502, "application/json", "{\"error\":\"could not call the upstream\"}\n");
    client_destroy(call->client);
    free(call);
    return;
  }
  lab->inflight++;
}

/* Adds the clients' counters to /debug/stats. */
static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;

  shell_stats_add(shell, "upstream_connections_opened", (double)lab->connections_opened);
  shell_stats_add(shell, "upstream_inflight", (double)lab->inflight);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;

  if (cfg->pool < 1 || cfg->timeout_ms < 1) {
    fprintf(stderr, "lab02: --pool and --timeout-ms must be at least 1\n");
    return UV_EINVAL;
  }
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = cfg;
  /* PITFALL: no client here; --pool is never used. */
  rc = shell_route(shell, "GET", "/price", price_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab02: shell_route: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) {
  /* Every request has been answered, so every per-request client is already destroyed. */
  free(lab);
}
