/* Lab 13, exercise: make the retries worth making, spread out, bounded and paid for.
 *
 * GET /fetch?id=X calls the upstream's /item and relays its answer. Right now every failure is
 * retried at once, up to --max-retries times: an upstream that is down gets 1 + max_retries calls
 * per request, in lockstep, and a 404 is asked six times. Retry only what asking again can fix,
 * after a capped, jittered wait on a timer, within the request's deadline and a service-wide
 * retry budget (lab.h says exactly what to answer and when).
 *
 *   make check LAB=13    runs the suite against this file and says what it saw
 *   make hint LAB=13     one more hint each time
 *   make bench LAB=13    the plots, this variant next to the pitfall and the solution
 *   make reset LAB=13    start over (keeps a backup of your file)
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
  /* TODO 2: the request's deadline (from shell_request_start_ns) and a uv_timer_t for the
   * backoff wait belong here; the timer's close callback then frees the fetch. */
} fetch_t;

/* TODO 4: the retry budget: over the last second, retries <= budget_min + budget_pct % of the
 * requests. Ten buckets of 100 ms (requests and retries per bucket) are enough; count every
 * request in the handler, take a retry before each one. */

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
  /* TODO 1: a 2xx is good only when its body is a JSON object (starts with '{'); anything else
   * is garbage: a failure, retried like a 5xx, never relayed. */
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
  /* TODO 1: retry only no response, a 5xx, a 429 and garbage; another 4xx answers at once
   * ("not_retryable").
   * TODO 2: do not retry at once: wait a draw in [0, min(backoff_max_ms, base x 2^(n-1))] on the
   * fetch's uv_timer_t (never usleep: the loop is shared), at least 1000 ms after a 429
   * (Retry-After), and attempt again in the timer's callback.
   * TODO 3: a retry whose wait would end past the deadline is not made ("deadline"); an attempt
   * may run min(call_timeout_ms, what is left).
   * TODO 4: a retry the budget refuses is not made ("budget"; count it in retries_denied).
   * PITFALL: every failure is retried, and at once. A 404 fails the same way six times; a 503
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
