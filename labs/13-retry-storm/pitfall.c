/* Lab 13, pitfall: retries without backoff.
 *
 * The pitfall in one line: a failed call is tried again at once, up to 5 times, whatever the
 * failure, so a dependency that is down gets 6 calls per request instead of 1.
 * What it does: GET /fetch?id=X calls the upstream's /item and relays its answer. Any failure
 * (a 503, a refused connection, a timeout, even a 404) is retried immediately, with no wait, no
 * jitter, no budget and no deadline. While the upstream is down, every request becomes
 * 1 + max_retries calls arriving in lockstep; when it comes back, the retries of everything that
 * failed meanwhile arrive together with the new traffic, fill its queue past the call timeout,
 * time out, and are retried again: the outage outlives its cause (a metastable failure).
 * See it:  build/bin/upstream --port 8081 --status 503 &  build/bin/lab13-pitfall --port 8080 &
 *          curl -s 'localhost:8080/fetch?id=a'     # "attempts":6
 *          curl -s localhost:8081/stats             # requests_total 6 for one request
 *          or make bench LAB=13 (attempts/s, goodput/s and the upstream's queue through an outage).
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
  client_t *client; /* one connection cache for every attempt */
  uint64_t fetch_total, fetch_ok, fetch_failed, fetch_inflight;
  uint64_t attempts_total, retries_total, retries_denied, waiting;
};

/* One /fetch request, from its handler to its answer. */
typedef struct fetch {
  lab_t *lab;
  shell_request_t *req;
  char id[80];
  long attempts; /* attempts started so far */
} fetch_t;

/* Answers, counts and frees the fetch. */
static void fetch_answer(fetch_t *f, int status, const char *body) {
  lab_t *lab = f->lab;
  shell_respond(f->req, status, "application/json", body, strlen(body));
  lab->fetch_inflight--;
  if (status == 200) lab->fetch_ok++;
  else lab->fetch_failed++;
  free(f);
}

static void fetch_fail(fetch_t *f, int status, const char *gave_up) {
  char body[160];
  snprintf(body, sizeof body,
           "{\"error\":\"upstream\",\"status\":%d,\"attempts\":%ld,\"gave_up\":\"%s\"}", status,
           f->attempts, gave_up);
  fetch_answer(f, 502, body);
}

static void fetch_on_attempt(client_transfer_t *t, const client_result_t *res, void *data);

/* Starts one attempt. Returns 0, or -1 when it could not start. */
static int fetch_attempt(fetch_t *f) {
  lab_t *lab = f->lab;
  char url[512];
  if (snprintf(url, sizeof url, "%s/item?id=%s", lab->cfg->upstream, f->id) >= (int)sizeof url) {
    fprintf(stderr, "lab13: upstream URL too long\n");
    return -1;
  }
  if (client_get(lab->client, url, lab->cfg->call_timeout_ms, fetch_on_attempt, f) == NULL) {
    fprintf(stderr, "lab13: client_get(%s) failed\n", url);
    return -1;
  }
  f->attempts++;
  lab->attempts_total++;
  return 0;
}

/* Who calls it: the client, on the loop, when an attempt has ended. */
static void fetch_on_attempt(client_transfer_t *t, const client_result_t *res, void *data) {
  fetch_t *f = data;
  lab_t *lab = f->lab;
  (void)t;
  if (res->error == NULL && res->status >= 200 && res->status <= 299) {
    size_t len = res->body_len + 128;
    char *body = malloc(len);
    if (body == NULL) {
      fetch_answer(f, 500, "{\"error\":\"out of memory\"}");
      return;
    }
    snprintf(body, len, "{\"id\":\"%s\",\"attempts\":%ld,\"item\":%.*s}", f->id, f->attempts,
             (int)res->body_len, res->body);
    fetch_answer(f, 200, body);
    free(body);
    return;
  }
  /* PITFALL: every failure is retried, and at once. A 404 fails the same way six times; a 503
   * from an upstream that is down comes back in microseconds, so the retries of every request
   * hit it together, 1 + max_retries calls per request, exactly when it can least serve them. */
  if (f->attempts <= lab->cfg->max_retries) {
    lab->retries_total++;
    if (fetch_attempt(f) == 0) return;
  }
  fetch_fail(f, res->status, "max_retries");
}

/* GET /fetch?id=X */
static void fetch_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  fetch_t *f;
  char id[80];

  if (shell_query_str(req, "id", id, sizeof id) != 0 || !labkit_token_valid(id, 63, "-_")) {
    shell_respondf(req, 400, "application/json", "{\"error\":\"bad parameter\",\"param\":\"id\"}");
    return;
  }
  f = calloc(1, sizeof *f);
  if (f == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}");
    return;
  }
  f->lab = lab;
  f->req = req;
  snprintf(f->id, sizeof f->id, "%s", id);
  lab->fetch_total++;
  lab->fetch_inflight++;
  if (fetch_attempt(f) < 0) fetch_fail(f, 0, "max_retries");
}

static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "fetch_total", (double)lab->fetch_total);
  shell_stats_add(shell, "fetch_ok", (double)lab->fetch_ok);
  shell_stats_add(shell, "fetch_failed", (double)lab->fetch_failed);
  shell_stats_add(shell, "fetch_inflight", (double)lab->fetch_inflight);
  shell_stats_add(shell, "attempts_total", (double)lab->attempts_total);
  shell_stats_add(shell, "retries_total", (double)lab->retries_total);
  shell_stats_add(shell, "retries_denied", (double)lab->retries_denied);
  shell_stats_add(shell, "waiting", (double)lab->waiting);
}

static int config_valid(const lab_config_t *c) {
  return c->max_retries >= 0 && c->max_retries <= 10 && c->call_timeout_ms >= 1 &&
         c->deadline_ms >= 1 && c->backoff_base_ms >= 1 && c->backoff_max_ms >= c->backoff_base_ms &&
         c->budget_pct >= 0 && c->budget_pct <= 100 && c->budget_min >= 0 && c->budget_min <= 1000;
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;

  if (!config_valid(cfg)) {
    fprintf(stderr, "lab13: an option is out of range (see --help and lab.h)\n");
    return UV_EINVAL;
  }
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = cfg;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab13: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  rc = shell_route(shell, "GET", "/fetch", fetch_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab13: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

/* Every request has been answered, so no attempt is running: the client has nothing to drop. */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  free(lab);
}
