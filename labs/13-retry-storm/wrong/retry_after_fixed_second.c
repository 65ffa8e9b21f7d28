/* WRONG: a 429 waits a fixed second, ignoring the Retry-After the upstream sent, so an upstream that asks for 2 s is asked again after 1 s -- caught by: lab13::honours_retry_after */
/* Lab 13, a wrong answer: the documented fallback used every time.
 * lab.h says 1000 ms when the 429 names no Retry-After; this waits 1000 ms whatever it names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"
#include "labkit.h"

/* The retry budget's sliding window: one second in buckets of 100 ms. */
enum { BUDGET_BUCKETS = 10, BUDGET_BUCKET_MS = 100, RETRY_AFTER_MS = 1000 };

struct lab {
  shell_t *shell;
  const lab_config_t *cfg;
  client_t *client; /* one connection cache for every attempt */
  uint64_t fetch_total, fetch_ok, fetch_failed, fetch_inflight;
  uint64_t attempts_total, retries_total, retries_denied, waiting;
  struct { uint64_t requests, retries; } budget[BUDGET_BUCKETS]; /* per 100 ms */
  uint64_t budget_slot; /* the bucket number (now_ms / 100) the window ends in */
  uint64_t rng;         /* xorshift64 state for the jitter */
};

/* One /fetch request, from its handler to its answer. */
typedef struct fetch {
  lab_t *lab;
  shell_request_t *req;
  char id[80];
  long attempts; /* attempts started so far */
  uint64_t deadline_ms; /* uv_now() by which the request must be answered */
  uv_timer_t timer;     /* the backoff wait; closed (and the fetch freed) at the answer */
} fetch_t;

/* Moves the window to now: buckets older than a second are emptied. */
static void budget_roll(lab_t *lab) {
  uint64_t slot = uv_now(shell_loop(lab->shell)) / BUDGET_BUCKET_MS;
  for (; lab->budget_slot < slot; lab->budget_slot++)
    memset(&lab->budget[(lab->budget_slot + 1) % BUDGET_BUCKETS], 0, sizeof lab->budget[0]);
}

/* Takes one retry from the budget: 1 when allowed, 0 when the last second has had its share. */
static int budget_take_retry(lab_t *lab) {
  uint64_t requests = 0, retries = 0;
  budget_roll(lab);
  for (int i = 0; i < BUDGET_BUCKETS; i++) {
    requests += lab->budget[i].requests;
    retries += lab->budget[i].retries;
  }
  if (100 * retries >= 100 * (uint64_t)lab->cfg->budget_min + lab->cfg->budget_pct * requests)
    return 0;
  lab->budget[lab->budget_slot % BUDGET_BUCKETS].retries++;
  return 1;
}

/* Full jitter: uniform in [0, min(cap, base x 2^(retry-1))]. */
static uint64_t backoff_ms(lab_t *lab, long retry) {
  uint64_t ceiling = (uint64_t)lab->cfg->backoff_base_ms << (retry - 1 < 20 ? retry - 1 : 20);
  if (ceiling > (uint64_t)lab->cfg->backoff_max_ms) ceiling = (uint64_t)lab->cfg->backoff_max_ms;
  return labkit_rand(&lab->rng) % (ceiling + 1);
}

static void fetch_on_close(uv_handle_t *h) { free(h->data); }

/* Answers and counts the fetch; its timer's close callback frees it. */
static void fetch_answer(fetch_t *f, int status, const char *body) {
  lab_t *lab = f->lab;
  shell_respond(f->req, status, "application/json", body, strlen(body));
  lab->fetch_inflight--;
  if (status == 200) lab->fetch_ok++;
  else lab->fetch_failed++;
  uv_close((uv_handle_t *)&f->timer, fetch_on_close);
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
  uint64_t now = uv_now(shell_loop(lab->shell));
  long limit_ms = lab->cfg->call_timeout_ms;
  char url[512];
  if (now >= f->deadline_ms) return -1;
  if ((uint64_t)limit_ms > f->deadline_ms - now) limit_ms = (long)(f->deadline_ms - now);
  if (snprintf(url, sizeof url, "%s/item?id=%s", lab->cfg->upstream, f->id) >= (int)sizeof url) {
    fprintf(stderr, "lab13: upstream URL too long\n");
    return -1;
  }
  if (client_get(lab->client, url, limit_ms, fetch_on_attempt, f) == NULL) {
    fprintf(stderr, "lab13: client_get(%s) failed\n", url);
    return -1;
  }
  f->attempts++;
  lab->attempts_total++;
  return 0;
}

/* Who calls it: the backoff timer, on the loop, when the wait is over. */
static void fetch_on_timer(uv_timer_t *timer) {
  fetch_t *f = timer->data;
  f->lab->waiting--;
  f->lab->retries_total++;
  if (fetch_attempt(f) < 0) fetch_fail(f, 0, "deadline");
}

/* Why this failure gets no retry (lab.h's gave_up), or NULL and how long to wait before it: only
 * what asking again can fix, a bounded number of times, within the deadline and the budget. */
static const char *no_retry_reason(fetch_t *f, const client_result_t *res, uint64_t *wait_ms) {
  lab_t *lab = f->lab;
  /* Worth asking again: no response, a 5xx, a 429, or a 2xx that is not a JSON object. */
  if (!(res->error != NULL || res->status >= 500 || res->status == 429 ||
        (res->status >= 200 && res->status <= 299)))
    return "not_retryable";
  if (f->attempts > lab->cfg->max_retries) return "max_retries";
  *wait_ms = backoff_ms(lab, f->attempts);
  /* A 429 says when to come back (Retry-After); without one, wait at least a second. */
  uint64_t retry_after_ms = RETRY_AFTER_MS;
  if (res->status == 429 && *wait_ms < retry_after_ms) *wait_ms = retry_after_ms;
  if (uv_now(shell_loop(lab->shell)) + *wait_ms >= f->deadline_ms) return "deadline";
  if (!budget_take_retry(lab)) {
    lab->retries_denied++;
    return "budget";
  }
  return NULL;
}

/* Who calls it: the client, on the loop, when an attempt has ended. */
static void fetch_on_attempt(client_transfer_t *t, const client_result_t *res, void *data) {
  fetch_t *f = data;
  lab_t *lab = f->lab;
  (void)t;
  if (res->error == NULL && res->status >= 200 && res->status <= 299 && res->body_len > 0 &&
      res->body[0] == '{') {
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
  /* The wait is a timer, never a sleep: the loop serves everyone else meanwhile. */
  uint64_t wait_ms = 0;
  const char *gave_up = no_retry_reason(f, res, &wait_ms);
  int rc = 0;
  if (gave_up == NULL && (rc = uv_timer_start(&f->timer, fetch_on_timer, wait_ms, 0)) != 0) {
    fprintf(stderr, "lab13: uv_timer_start: %s\n", uv_strerror(rc));
    gave_up = "max_retries";
  }
  if (gave_up != NULL) fetch_fail(f, res->status, gave_up);
  else lab->waiting++;
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
  int rc = uv_timer_init(shell_loop(lab->shell), &f->timer);
  if (rc != 0) {
    fprintf(stderr, "lab13: uv_timer_init: %s\n", uv_strerror(rc));
    free(f);
    shell_respondf(req, 500, "application/json", "{\"error\":\"timer\"}");
    return;
  }
  f->timer.data = f;
  f->lab = lab;
  f->req = req;
  f->deadline_ms = uv_now(shell_loop(lab->shell)) + (uint64_t)lab->cfg->deadline_ms -
                   (uv_hrtime() - shell_request_start_ns(req)) / 1000000;
  snprintf(f->id, sizeof f->id, "%s", id);
  lab->fetch_total++;
  lab->fetch_inflight++;
  budget_roll(lab);
  lab->budget[lab->budget_slot % BUDGET_BUCKETS].requests++;
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
  lab->rng = uv_hrtime() | 1;
  lab->budget_slot = uv_now(shell_loop(shell)) / BUDGET_BUCKET_MS;
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
