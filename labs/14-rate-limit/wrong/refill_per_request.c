/* WRONG: the bucket refills and the queue moves only when a new request arrives (no timer), so a backlog is stuck once arrivals stop -- caught by: lab14::calls_leave_at_the_rate */
/* Lab 14, a wrong answer: the refill is computed per request, and nothing else wakes the queue.
 * Refilling lazily, when a request comes in, is how token buckets are usually written, and it is
 * right for deciding about *that* request. But the requests already waiting are only looked at
 * when the next one arrives: at the end of a burst the queue sits there with tokens due and no one
 * to start them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

enum { RETRY_AFTER_MS = 1000 }; /* the pause after a 429 that names no Retry-After */

typedef struct call call_t;

struct lab {
  shell_t *shell;
  const lab_config_t *cfg;
  client_t *client; /* one connection cache for every call */
  uint64_t calls_total, calls_ok, calls_failed, calls_rejected, calls_rate_limited;
  uint64_t calls_started, calls_inflight, waiting, waiting_peak;
  double tokens;            /* in the bucket now, 0..burst */
  uint64_t refilled_ms;     /* uv_now() the tokens were counted at */
  uint64_t paused_until_ms; /* after a 429: no call before this */
  uv_timer_t timer;         /* armed for the next token while requests wait */
  call_t *head, *tail;      /* the waiting requests, oldest first */
};

/* One /call request, from its handler to its answer. */
struct call {
  lab_t *lab;
  shell_request_t *req;
  char id[80];
  uint64_t arrived_ms; /* uv_now() when it arrived */
  uint64_t waited_ms;  /* how long it waited for its turn */
  call_t *next;        /* in lab->head while it waits */
};

/* An id goes into the upstream's URL as is, so it must not need escaping. */
static int id_valid(const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n > 63) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
          (id[i] >= '0' && id[i] <= '9') || id[i] == '-' || id[i] == '_'))
      return 0;
  return 1;
}

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

/* Adds the tokens earned since the last count (none while paused), up to burst. */
static void bucket_refill(lab_t *lab) {
  uint64_t now = uv_now(shell_loop(lab->shell));
  if (now <= lab->refilled_ms) return; /* paused: refilled_ms is the pause's end */
  lab->tokens += (double)(now - lab->refilled_ms) * (double)lab->cfg->rate / 1000.0;
  if (lab->tokens > (double)lab->cfg->burst) lab->tokens = (double)lab->cfg->burst;
  lab->refilled_ms = now;
}

static void call_fail(call_t *c, int status);

/* Starts the oldest waiters while there are tokens, then arms the timer for the next token. */
static void lab_pump(lab_t *lab) {
  bucket_refill(lab);
  uint64_t now = uv_now(shell_loop(lab->shell));
  while (lab->head != NULL && now >= lab->paused_until_ms && lab->tokens >= 1) {
    call_t *c = lab->head;
    lab->head = c->next;
    if (lab->head == NULL) lab->tail = NULL;
    lab->waiting--;
    lab->tokens -= 1;
    if (call_start(c) < 0) call_fail(c, 0);
  }
  /* whoever is still waiting goes when the next request comes in and refills the bucket */
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
    /* The upstream says "not now": nobody calls before Retry-After, and then from 0 tokens. */
    lab->calls_rate_limited++;
    lab->paused_until_ms = uv_now(shell_loop(lab->shell)) +
                           (res->retry_after_ms > 0 ? (uint64_t)res->retry_after_ms : RETRY_AFTER_MS);
    lab->tokens = 0;
    lab->refilled_ms = lab->paused_until_ms;
    lab_pump(lab); /* re-arms the timer for the pause's end */
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

  if (shell_query_str(req, "id", id, sizeof id) != 0 || !id_valid(id)) {
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
  bucket_refill(lab);
  if (lab->head == NULL && c->arrived_ms >= lab->paused_until_ms && lab->tokens >= 1) {
    lab->tokens -= 1; /* a token is there and nobody waits before us: go */
    if (call_start(c) < 0) call_fail(c, 0);
    return;
  }
  if (lab->waiting >= (uint64_t)lab->cfg->max_waiting) {
    const char *body = "{\"error\":\"queue full\"}";
    shell_respond_ex(req, 503, "Retry-After: 1\r\n", "application/json", body, strlen(body));
    lab->calls_rejected++;
    free(c);
    return;
  }
  if (lab->tail != NULL) lab->tail->next = c;
  else lab->head = c;
  lab->tail = c;
  if (++lab->waiting > lab->waiting_peak) lab->waiting_peak = lab->waiting;
  lab_pump(lab);
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

static void lab_on_close(uv_handle_t *h) { free(h->data); }

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
  lab->tokens = (double)cfg->burst; /* full at the start */
  lab->refilled_ms = uv_now(shell_loop(shell));
  rc = uv_timer_init(shell_loop(shell), &lab->timer);
  if (rc != 0) {
    fprintf(stderr, "lab14: uv_timer_init: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  lab->timer.data = lab;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab14: client_create: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&lab->timer, lab_on_close);
    return rc;
  }
  rc = shell_route(shell, "GET", "/call", call_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab14: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    uv_close((uv_handle_t *)&lab->timer, lab_on_close);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

/* Every request has been answered, so nothing waits and no call runs; the lab is freed in its
 * timer's close callback. */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  uv_close((uv_handle_t *)&lab->timer, lab_on_close);
}
