/* WRONG: keeps finished per-request clients on a stack and reuses them, so sequential requests reuse connections but a burst still makes one client, and one connection, per concurrent request, with no --pool limit -- caught by: lab02::concurrent_pool */
/* "Don't destroy the client, recycle it": a request takes an idle client from the stack or
 * creates one, and puts it back when done. One at a time it looks perfect (one connection, no
 * connect cost). Under a burst of 100 it grows to 100 clients, 100 connections, and keeps them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

typedef struct idle_client {
  client_t *client;
  struct idle_client *next;
} idle_client_t;

struct lab {
  shell_t *shell;
  const lab_config_t *cfg;
  idle_client_t *idle; /* clients whose call is over, ready for the next request */
  uint64_t connections_opened; /* summed over the per-request clients, for /debug/stats */
  unsigned inflight;
};

/* One /price request waiting for its quote. */
typedef struct price_call {
  lab_t *lab;
  shell_request_t *req;
  client_t *client; /* this request's own client, and so its own connection */
} price_call_t;

/* A SKU goes into the upstream's URL as is, so it must not need escaping. */
static int sku_valid(const char *sku) {
  size_t i, n = strlen(sku);

  if (n == 0) return 0;
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
  call->lab->connections_opened += st.connections_opened; /* (counts a reused client again) */
  call->lab->inflight--;
  price_answer(call->req, res);
  /* Keep the client (and its open connection) for the next request. */
  idle_client_t *idle = malloc(sizeof *idle);
  if (idle == NULL) {
    client_destroy(call->client);
  } else {
    idle->client = call->client;
    idle->next = call->lab->idle;
    call->lab->idle = idle;
  }
  free(call);
}

/* GET /price?sku=X */
static void price_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  price_call_t *call;
  char sku[64], url[512];
  int rc;

  if (shell_query_str(req, "sku", sku, sizeof sku) != 0 || !sku_valid(sku)) {
    shell_respondf(req, 400, "application/json", "{\"error\":\"want ?sku=[A-Za-z0-9_-]+\"}\n");
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
  /* An idle client if there is one (its connection is still open), else a new one. */
  rc = 0;
  if (lab->idle != NULL) {
    idle_client_t *idle = lab->idle;
    lab->idle = idle->next;
    call->client = idle->client;
    free(idle);
  } else {
    rc = client_create(&call->client, shell_request_loop(req), NULL);
  }
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
  /* no client here; --pool is never used. */
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
  while (lab->idle != NULL) {
    idle_client_t *idle = lab->idle;
    lab->idle = idle->next;
    client_destroy(idle->client);
    free(idle);
  }
  free(lab);
}
