/* WRONG: upstream_inflight must come back to 0 once every call has ended, failed ones too -- caught by: lab06::upstream_error_gives_502 */
/* Counts a call as ended when its answer arrives, which it thinks means a 200. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

struct lab {
  const lab_config_t *cfg;
  client_t *client;  /* one async client for every request: its calls overlap on this loop */
  uint64_t calls;    /* upstream calls started, for /debug/stats */
  unsigned inflight; /* upstream calls not ended yet */
};

/* One /profile request waiting for its upstream call. */
typedef struct profile_call {
  lab_t *lab;
  shell_request_t *req;
} profile_call_t;

/* A user name goes into the upstream's URL as is, so it must not need escaping. */
static int user_valid(const char *user) {
  size_t i, n = strlen(user);

  if (n == 0 || n > 64) return 0;
  for (i = 0; i < n; i++) {
    char ch = user[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '-' || ch == '_'))
      return 0;
  }
  return 1;
}

/* 200 with the upstream's body, 504 when the call ran out of time, 502 for any other failure. */
static void profile_answer(shell_request_t *req, int status, int timed_out, const char *body,
                           size_t len) {
  if (timed_out)
    shell_respondf(req, 504, "application/json", "{\"error\":\"upstream timed out\"}\n");
  else if (status < 200 || status > 299)
    shell_respondf(req, 502, "application/json", "{\"error\":\"upstream failed\",\"status\":%d}\n",
                   status);
  else
    shell_respond(req, 200, "application/json", body, len);
}

/* Who calls it: the client, on the loop, when the upstream call has ended. */
static void profile_on_answer(client_transfer_t *t, const client_result_t *res, void *data) {
  profile_call_t *call = data;

  (void)t;
  if (res->status == 200) call->lab->inflight--; /* the call is done */
  profile_answer(call->req, res->status, res->timed_out, res->body, res->body_len);
  free(call);
}

/* GET /profile?user=U */
static void profile_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char user[66], url[512];
  profile_call_t *call;

  if (shell_query_str(req, "user", user, sizeof user) != 0 || !user_valid(user)) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"user: want ?user= and 1 to 64 of [A-Za-z0-9_-]\"}\n");
    return;
  }
  if (snprintf(url, sizeof url, "%s/profile?id=%s", lab->cfg->upstream, user) >= (int)sizeof url) {
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
  /* SOLUTION: start the call and return; profile_on_answer answers when the upstream has. */
  if (client_get(lab->client, url, lab->cfg->timeout_ms, profile_on_answer, call) == NULL) {
    fprintf(stderr, "lab06: client_get(%s) failed\n", url);
    profile_answer(req, 0, 0, NULL, 0);
    free(call);
    return;
  }
  lab->calls++;
  lab->inflight++;
}

/* GET /health: nothing to wait for. */
static void health_handle(shell_request_t *req, void *data) {
  (void)data;
  shell_respond(req, 200, "text/plain", "ok\n", 3);
}

/* Adds the lab's counters to /debug/stats. */
static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;

  shell_stats_add(shell, "upstream_calls", (double)lab->calls);
  shell_stats_add(shell, "upstream_inflight", (double)lab->inflight);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;

  if (cfg->timeout_ms < 1) {
    fprintf(stderr, "lab06: --timeout-ms must be at least 1\n");
    return UV_EINVAL;
  }
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->cfg = cfg;
  /* SOLUTION: the multi interface on this loop: many calls at once, none of them blocks. */
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab06: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  rc = shell_route(shell, "GET", "/profile", profile_handle, lab);
  if (rc == 0) rc = shell_route(shell, "GET", "/health", health_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab06: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) {
  /* Every request has been answered, so no call is out. The client frees itself in its handles'
   * close callbacks, which the loop runs after this returns. */
  client_destroy(lab->client);
  free(lab);
}
