/* Lab 13, a right answer written differently: one retry timer for the whole service.
 *
 * The same rules as solution.c (lab.h), but the fetches waiting for a retry are kept in one list
 * sorted by due time, and a single uv_timer_t of the lab is armed for the earliest of them, so a
 * waiting request costs a list link instead of a libuv handle. The budget is counted the same
 * way (ten buckets of 100 ms).
 */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

/* The retry budget's sliding window: one second in buckets of 100 ms. */
enum { BUDGET_BUCKETS = 10, BUDGET_BUCKET_MS = 100, RETRY_AFTER_MS = 1000 };

struct lab {
  shell_t *shell;
  const lab_config_t *cfg;
  client_t *client; /* one connection cache for every attempt */
  uint64_t fetch_total, fetch_ok, fetch_failed, fetch_inflight;
  uint64_t attempts_total, retries_total, retries_denied, waiting;
  uint64_t budget_requests[BUDGET_BUCKETS], budget_retries[BUDGET_BUCKETS];
  uint64_t budget_slot; /* the bucket number (now_ms / 100) the window ends in */
  uint64_t rng;         /* xorshift64 state for the jitter */
  uv_timer_t retry_timer;       /* armed for the head of the waiting list */
  struct fetch *waiting_head;   /* fetches waiting for a retry, earliest due first */
};

/* One /fetch request, from its handler to its answer. */
typedef struct fetch {
  lab_t *lab;
  shell_request_t *req;
  char id[80];
  long attempts; /* attempts started so far */
  uint64_t deadline_ms; /* uv_now() by which the request must be answered */
  uint64_t due_ms;      /* uv_now() at which its retry is due, while it waits */
  struct fetch *next;   /* in lab->waiting_head */
} fetch_t;

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

/* Moves the window to now: buckets older than a second are emptied. */
static void budget_roll(lab_t *lab) {
  uint64_t slot = uv_now(shell_loop(lab->shell)) / BUDGET_BUCKET_MS;
  for (; lab->budget_slot < slot; lab->budget_slot++) {
    lab->budget_requests[(lab->budget_slot + 1) % BUDGET_BUCKETS] = 0;
    lab->budget_retries[(lab->budget_slot + 1) % BUDGET_BUCKETS] = 0;
  }
}

static void budget_count_request(lab_t *lab) {
  budget_roll(lab);
  lab->budget_requests[lab->budget_slot % BUDGET_BUCKETS]++;
}

/* Takes one retry from the budget: 1 when allowed, 0 when the last second has had its share. */
static int budget_take_retry(lab_t *lab) {
  uint64_t requests = 0, retries = 0;
  budget_roll(lab);
  for (int i = 0; i < BUDGET_BUCKETS; i++) {
    requests += lab->budget_requests[i];
    retries += lab->budget_retries[i];
  }
  if (100 * retries >= 100 * (uint64_t)lab->cfg->budget_min + lab->cfg->budget_pct * requests)
    return 0;
  lab->budget_retries[lab->budget_slot % BUDGET_BUCKETS]++;
  return 1;
}

/* Full jitter: uniform in [0, min(cap, base x 2^(retry-1))]. */
static uint64_t backoff_ms(lab_t *lab, long retry) {
  uint64_t ceiling = (uint64_t)lab->cfg->backoff_base_ms << (retry - 1 < 20 ? retry - 1 : 20);
  if (ceiling > (uint64_t)lab->cfg->backoff_max_ms) ceiling = (uint64_t)lab->cfg->backoff_max_ms;
  lab->rng ^= lab->rng << 13;
  lab->rng ^= lab->rng >> 7;
  lab->rng ^= lab->rng << 17;
  return lab->rng % (ceiling + 1);
}

/* Answers, counts and frees the fetch (it is never in the waiting list here). */
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

static void retry_on_timer(uv_timer_t *timer);

/* Arms the lab's timer for the earliest waiting fetch (or stops it when none waits). */
static int retry_arm(lab_t *lab) {
  if (lab->waiting_head == NULL) return uv_timer_stop(&lab->retry_timer);
  uint64_t now = uv_now(shell_loop(lab->shell)), due = lab->waiting_head->due_ms;
  return uv_timer_start(&lab->retry_timer, retry_on_timer, due > now ? due - now : 0, 0);
}

/* Puts f in the waiting list, in due order (after fetches due at the same time). */
static int retry_schedule(lab_t *lab, fetch_t *f, uint64_t wait_ms) {
  fetch_t **p = &lab->waiting_head;
  f->due_ms = uv_now(shell_loop(lab->shell)) + wait_ms;
  while (*p != NULL && (*p)->due_ms <= f->due_ms) p = &(*p)->next;
  f->next = *p;
  *p = f;
  lab->waiting++;
  return retry_arm(lab);
}

/* Who calls it: the lab's retry timer, on the loop: every fetch now due attempts again. */
static void retry_on_timer(uv_timer_t *timer) {
  lab_t *lab = timer->data;
  uint64_t now = uv_now(shell_loop(lab->shell));
  while (lab->waiting_head != NULL && lab->waiting_head->due_ms <= now) {
    fetch_t *f = lab->waiting_head;
    lab->waiting_head = f->next;
    lab->waiting--;
    lab->retries_total++;
    if (fetch_attempt(f) < 0) fetch_fail(f, 0, "deadline");
  }
  int rc = retry_arm(lab);
  if (rc != 0) fprintf(stderr, "lab13: uv_timer_start: %s\n", uv_strerror(rc));
}

/* Worth asking again: no response, a 5xx, a 429, or a 2xx that is not a JSON object. */
static int retryable(const client_result_t *res) {
  return res->error != NULL || res->status >= 500 || res->status == 429 ||
         (res->status >= 200 && res->status <= 299);
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
  /* Only what asking again can fix, a bounded number of times, within the deadline and the
   * service-wide budget, after a jittered wait on a timer (never a sleep: the loop is shared). */
  if (!retryable(res)) {
    fetch_fail(f, res->status, "not_retryable");
    return;
  }
  if (f->attempts > lab->cfg->max_retries) {
    fetch_fail(f, res->status, "max_retries");
    return;
  }
  uint64_t wait_ms = backoff_ms(lab, f->attempts);
  uint64_t retry_after_ms = res->retry_after_ms > 0 ? (uint64_t)res->retry_after_ms : RETRY_AFTER_MS;
  if (res->status == 429 && wait_ms < retry_after_ms) wait_ms = retry_after_ms;
  if (uv_now(shell_loop(lab->shell)) + wait_ms >= f->deadline_ms) {
    fetch_fail(f, res->status, "deadline");
    return;
  }
  if (!budget_take_retry(lab)) {
    lab->retries_denied++;
    fetch_fail(f, res->status, "budget");
    return;
  }
  int rc = retry_schedule(lab, f, wait_ms);
  if (rc != 0) fprintf(stderr, "lab13: uv_timer_start: %s\n", uv_strerror(rc));
}

/* GET /fetch?id=X */
static void fetch_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  fetch_t *f;
  char id[80];

  if (shell_query_str(req, "id", id, sizeof id) != 0 || !id_valid(id)) {
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
  f->deadline_ms = uv_now(shell_loop(lab->shell)) + (uint64_t)lab->cfg->deadline_ms -
                   (uv_hrtime() - shell_request_start_ns(req)) / 1000000;
  snprintf(f->id, sizeof f->id, "%s", id);
  lab->fetch_total++;
  lab->fetch_inflight++;
  budget_count_request(lab);
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

static void lab_on_close(uv_handle_t *h) { free(h->data); }

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
  rc = uv_timer_init(shell_loop(shell), &lab->retry_timer);
  if (rc != 0) {
    fprintf(stderr, "lab13: uv_timer_init: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  lab->retry_timer.data = lab;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab13: client_create: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&lab->retry_timer, lab_on_close);
    return rc;
  }
  rc = shell_route(shell, "GET", "/fetch", fetch_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab13: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    uv_close((uv_handle_t *)&lab->retry_timer, lab_on_close);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

/* Every request has been answered, so nothing waits and no attempt runs; the lab is freed in
 * its timer's close callback. */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  uv_close((uv_handle_t *)&lab->retry_timer, lab_on_close);
}
