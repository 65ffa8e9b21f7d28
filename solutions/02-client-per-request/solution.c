/* Lab 02, solution: one HTTP client for the whole service, shared by every request.
 *
 * The pitfall in one line: a client created per request opens a new connection per request, and
 * pays the handshake (a round trip or three across data centres) every time.
 * What it does: GET /price?sku=X asks the upstream for /quote?sku=X and relays the answer (200),
 * or 502 when the upstream fails, 504 when the call runs out of time. The one client_t is created
 * in lab_create with a pool of --pool connections and kept until lab_destroy: its connection cache
 * keeps those connections open between requests, so only the first calls pay the connect cost.
 * See it:  build/bin/upstream --port 8081 --latency-ms 5 --connect-cost-ms 40 &
 *          build/bin/lab02-solution --port 8080 &
 *          for i in $(seq 20); do curl -s 'http://127.0.0.1:8080/price?sku=a' -o /dev/null \
 *            -w '%{time_total}\n'; done; curl -s http://127.0.0.1:8081/stats
 *          (connections_accepted stays at 1; compare with build/bin/lab02-pitfall), or
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
  client_t *client; /* shared by every request: one connection cache, at most cfg->pool conns */
};

/* One /price request waiting for its quote. */
typedef struct price_call {
  lab_t *lab;
  shell_request_t *req;
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

  (void)t;
  price_answer(call->req, res);
  free(call);
}

/* GET /price?sku=X */
static void price_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  price_call_t *call;
  char sku[SKU_MAX + 2], url[512];

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
  /* The shared client: the call reuses an idle pooled connection, or waits for one. */
  if (client_get(lab->client, url, lab->cfg->timeout_ms, price_on_quote, call) == NULL) {
    fprintf(stderr, "lab02: client_get(%s) failed\n", url);
    shell_respondf(req, 502, "application/json", "{\"error\":\"could not call the upstream\"}\n");
    free(call);
  }
}

/* Adds the client's counters to /debug/stats. */
static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  client_stats_t st;

  client_get_stats(lab->client, &st);
  shell_stats_add(shell, "upstream_connections_opened", (double)st.connections_opened);
  shell_stats_add(shell, "upstream_inflight", (double)st.inflight);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  /* The pool: at most `pool` connections to the upstream; calls beyond that wait in libcurl's
     queue for a free one. Keep that many idle connections cached, or libcurl trims its cache
     (to 4 per transfer in flight) and has to reconnect at the next burst. */
  client_config_t client_cfg = {
      .max_host_connections = cfg->pool,
      .max_cached_connections = cfg->pool,
      .connect_timeout_ms = cfg->timeout_ms,
  };
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
  rc = client_create(&lab->client, shell_loop(shell), &client_cfg);
  if (rc != 0) {
    fprintf(stderr, "lab02: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  rc = shell_route(shell, "GET", "/price", price_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab02: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) {
  /* Every request has been answered: nothing is in flight. The client frees itself in its
     handles' close callbacks, which the loop runs after this returns. */
  client_destroy(lab->client);
  free(lab);
}
