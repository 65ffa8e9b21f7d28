/* Lab 05, solution: a bounded queue, backpressure when it is full, and retries that never give
 * up on an acknowledged event.
 *
 * POST /events acknowledges (202) and queues an event only while fewer than queue_cap are held
 * (acknowledged, not yet delivered); a consumer forwards them, `workers` at a time. When full,
 * --mode shed answers 503 + Retry-After and --mode flow holds the answer until there is room. A
 * failed forward goes back to its place at the front and is sent again, same id, after a capped,
 * jittered backoff: while the upstream is down the queue fills and the producer is refused, never
 * promised what the lab cannot keep. On shutdown every held event is delivered first.
 *
 * See it: the pitfall's commands with build/bin/lab05-solution --port 8080 --queue-cap 100 (or
 * add --mode flow): queue_depth stays <= 100 and refused grows. Or: make bench LAB=05
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"
#include "labkit.h"


typedef struct event event_t;
struct event {
  event_t *next;
  lab_t *lab;
  uint64_t acked_ns;   /* when the producer was told 202 */
  unsigned attempts;   /* failed so far */
  uint64_t seq;        /* acknowledgement order: a retried event goes back to its place */
  uint64_t not_before; /* loop time (ms) before which it is not sent again */
  char id[64];
  size_t len;
  char payload[];      /* the request body, as received */
};

typedef struct parked parked_t;
struct parked { /* --mode flow: a request whose answer waits for room */
  parked_t *next;
  lab_t *lab;
  shell_request_t *req; /* NULL once its client went away */
  char id[64];
};

struct lab {
  uv_loop_t *loop;         /* not the shell: lab_destroy drains on after the shell is freed */
  client_t *client;
  lab_config_t cfg;
  uv_timer_t retry_timer;  /* wakes the consumer when the event at the front is due */
  uint64_t rng;            /* the backoff's jitter */
  event_t *head, *tail;    /* the queue, oldest first */
  size_t depth, peak, bytes; /* events held (queued, in a forward or waiting for a retry: at most
                                cfg.queue_cap) and their payload bytes */
  parked_t *parked_head, *parked_tail;
  size_t parked;
  int flow;                /* --mode flow */
  unsigned forwarding;     /* forwards in flight */
  int closing;
  unsigned long long next_seq, next_auto_id, acked, refused, forwarded, forward_errors, lost;
  double latency_last_ms, latency_max_ms;
};

static void forward_start(lab_t *lab, event_t *ev);
static void event_accept(lab_t *lab, shell_request_t *req, const char *id);

/* ---- the queue ---- */

static void queue_push(lab_t *lab, event_t *ev) {
  ev->next = NULL;
  if (lab->tail) lab->tail->next = ev;
  else lab->head = ev;
  lab->tail = ev;
  lab->bytes += ev->len;
  if (++lab->depth > lab->peak) lab->peak = lab->depth;
}

static event_t *queue_pop(lab_t *lab) {
  event_t *ev = lab->head;
  lab->head = ev->next;
  if (lab->head == NULL) lab->tail = NULL;
  return ev;
}

/* Back before every event acknowledged after it (the few being retried are near the front). */
static void queue_requeue(lab_t *lab, event_t *ev) {
  event_t **at = &lab->head;
  while (*at != NULL && (*at)->seq < ev->seq) at = &(*at)->next;
  ev->next = *at;
  *at = ev;
  if (ev->next == NULL) lab->tail = ev;
}

/* The event is no longer held: delivered. */
static void event_release(lab_t *lab, event_t *ev) {
  lab->depth--;
  lab->bytes -= ev->len;
  free(ev);
}

/* ---- the consumer ---- */

static void on_retry_timer(uv_timer_t *timer);
static void on_lab_closed(uv_handle_t *h) { free(h->data); }

/* Starts forwards while a worker is free and the front event is due, and lets parked requests in
 * while there is room. An event waiting for its retry holds the ones behind it (FIFO, lab.h Q5).
 * On shutdown it goes on until nothing is held (queue_cap / drain rate, plus any outage), then
 * destroys the client (allowed from inside its done callback) and frees the lab. */
static void lab_pump(lab_t *lab) {
  uint64_t now = uv_now(lab->loop);
  for (;;) {
    while (lab->forwarding < (unsigned)lab->cfg.workers && lab->head != NULL &&
           lab->head->not_before <= now)
      forward_start(lab, queue_pop(lab));
    if (lab->parked_head == NULL || lab->depth >= (size_t)lab->cfg.queue_cap) break;
    parked_t *p = lab->parked_head;
    if ((lab->parked_head = p->next) == NULL) lab->parked_tail = NULL;
    if (p->req != NULL) {
      lab->parked--;
      event_accept(lab, p->req, p->id);
    }
    free(p);
  }
  if (lab->head != NULL && lab->head->not_before > now) {
    int rc = uv_timer_start(&lab->retry_timer, on_retry_timer, lab->head->not_before - now, 0);
    if (rc != 0) fprintf(stderr, "lab05: uv_timer_start: %s\n", uv_strerror(rc));
  }
  if (lab->closing && lab->depth == 0) {
    client_destroy(lab->client);
    uv_close((uv_handle_t *)&lab->retry_timer, on_lab_closed);
  }
}

/* Who calls it: libuv, when the event at the front may be sent again. */
static void on_retry_timer(uv_timer_t *timer) { lab_pump(timer->data); }

/* Not delivered (or not known to be: a timeout): back to its place, due after a random time in
 * [d/2, d], d doubling per attempt from retry_base_ms up to retry_max_ms (the random half keeps
 * events that failed together from coming back together). Same id: the upstream takes it once. */
static void event_retry(lab_t *lab, event_t *ev) {
  uint64_t d = (uint64_t)lab->cfg.retry_base_ms;
  for (unsigned i = 1; i <= ev->attempts && d < (uint64_t)lab->cfg.retry_max_ms; i++) d *= 2;
  if (d > (uint64_t)lab->cfg.retry_max_ms) d = (uint64_t)lab->cfg.retry_max_ms;
  ev->attempts++;
  ev->not_before = uv_now(lab->loop) + d / 2 + labkit_rand(&lab->rng) % (d / 2 + 1);
  lab->forward_errors++;
  queue_requeue(lab, ev);
}

/* Called by the client, on the loop, once the upstream answered the forward (or did not). */
static void on_forwarded(client_transfer_t *t, const client_result_t *res, void *data) {
  event_t *ev = data;
  lab_t *lab = ev->lab;
  (void)t;
  lab->forwarding--;
  if (res->status >= 200 && res->status < 300) {
    lab->forwarded++;
    lab->latency_last_ms = (double)(uv_hrtime() - ev->acked_ns) / 1e6;
    if (lab->latency_last_ms > lab->latency_max_ms) lab->latency_max_ms = lab->latency_last_ms;
    event_release(lab, ev);
  } else {
    event_retry(lab, ev);
  }
  lab_pump(lab);
}

/* A retry waits longer for its answer (2x, then 4x forward_timeout_ms): a timeout says "slow",
 * and an upstream slower than the timeout still gets the event. */
static void forward_start(lab_t *lab, event_t *ev) {
  long timeout_ms = lab->cfg.forward_timeout_ms << (ev->attempts < 2 ? ev->attempts : 2);
  char url[512];
  snprintf(url, sizeof url, "%s/events?id=%s&event_id=%s", lab->cfg.upstream, ev->id, ev->id);
  client_req_t req = {.method = "POST", .url = url, .body = ev->payload, .body_len = ev->len,
                      .timeout_ms = timeout_ms, .done = on_forwarded, .data = ev};
  int rc = client_start(lab->client, &req, NULL);
  if (rc != 0) {
    fprintf(stderr, "lab05: client_start: %s (event %s: retried later)\n", uv_strerror(rc), ev->id);
    event_retry(lab, ev);
    return;
  }
  lab->forwarding++;
}

/* ---- the producer's side ---- */

/* The event's id from ?id=, or a number of our own. -1 when the id is unusable: lab.h Q1 (a
 * longer id arrives cut to id_len - 1 characters, so at most id_len - 2 are taken). */
static int event_id(lab_t *lab, const shell_request_t *req, char *id, size_t id_len) {
  if (shell_query_str(req, "id", id, id_len) != 0) {
    snprintf(id, id_len, "auto-%llu", ++lab->next_auto_id);
    return 0;
  }
  return labkit_token_valid(id, id_len - 2, "._-") ? 0 : -1;
}

/* Queues the event and acknowledges it: from here on it must reach the upstream. */
static void event_accept(lab_t *lab, shell_request_t *req, const char *id) {
  size_t len;
  const char *body = shell_request_body(req, &len);
  event_t *ev = malloc(sizeof *ev + len);
  if (ev == NULL) {
    shell_respondf(req, 500, "text/plain", "out of memory\n");
    return;
  }
  *ev = (event_t){.lab = lab, .seq = ++lab->next_seq, .len = len};
  snprintf(ev->id, sizeof ev->id, "%s", id);
  memcpy(ev->payload, body, len);
  ev->acked_ns = uv_hrtime();
  queue_push(lab, ev);
  lab->acked++;
  shell_respondf(req, 202, "text/plain", "accepted %s\n", id);
}

/* Called by the shell, on the loop, when a parked request's client went away: not accepted. */
static void on_parked_abort(shell_request_t *req, void *data) {
  parked_t *p = data;
  p->req = NULL; /* lab_pump frees p when it reaches it */
  p->lab->parked--;
  shell_respondf(req, 503, "text/plain", "gone\n"); /* nobody reads it; releases req */
}

static void handle_event(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char id[64];

  if (event_id(lab, req, id, sizeof id) != 0) {
    shell_respondf(req, 400, "text/plain", "bad id: use 1-62 letters, digits, '.', '_', '-'\n");
    return;
  }
  if (lab->depth < (size_t)lab->cfg.queue_cap && lab->parked_head == NULL) {
    event_accept(lab, req, id);
    lab_pump(lab);
  } else if (!lab->flow) { /* full: "not now", and when to come back; nothing was promised */
    static const char full[] = "queue full, retry later\n";
    char retry[64];
    snprintf(retry, sizeof retry, "Retry-After: %ld\r\n", lab->cfg.retry_after_s);
    lab->refused++;
    shell_respond_ex(req, 503, retry, "text/plain", full, sizeof full - 1);
  } else { /* full: hold the answer; the producer's connection waits, so the producer slows */
    parked_t *p = malloc(sizeof *p);
    if (p == NULL) {
      shell_respondf(req, 500, "text/plain", "out of memory\n");
      return;
    }
    *p = (parked_t){.lab = lab, .req = req};
    snprintf(p->id, sizeof p->id, "%s", id);
    if (lab->parked_tail) lab->parked_tail->next = p;
    else lab->parked_head = p;
    lab->parked_tail = p;
    lab->parked++;
    shell_request_on_abort(req, on_parked_abort, p);
  }
}

/* Called by the shell while it writes /debug/stats. */
static void on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "queue_depth", (double)lab->depth);
  shell_stats_add(shell, "queue_peak", (double)lab->peak);
  shell_stats_add(shell, "queue_kb", (double)lab->bytes / 1024.0);
  shell_stats_add(shell, "queue_age_ms",
                  lab->head ? (double)(uv_hrtime() - lab->head->acked_ns) / 1e6 : 0.0);
  shell_stats_add(shell, "parked", (double)lab->parked);
  shell_stats_add(shell, "acked", (double)lab->acked);
  shell_stats_add(shell, "refused", (double)lab->refused);
  shell_stats_add(shell, "forwarded", (double)lab->forwarded);
  shell_stats_add(shell, "forward_errors", (double)lab->forward_errors);
  shell_stats_add(shell, "lost", (double)lab->lost);
  shell_stats_add(shell, "latency_last_ms", lab->latency_last_ms);
  shell_stats_add(shell, "latency_max_ms", lab->latency_max_ms);
}

/* ---- lifetime ---- */

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;
  if (strcmp(cfg->mode, "shed") != 0 && strcmp(cfg->mode, "flow") != 0) {
    fprintf(stderr, "lab05: --mode must be shed or flow, not %s\n", cfg->mode);
    return UV_EINVAL;
  }
  if ((lab = calloc(1, sizeof *lab)) == NULL) return UV_ENOMEM;
  lab->loop = shell_loop(shell);
  lab->cfg = *cfg;
  lab->flow = strcmp(cfg->mode, "flow") == 0;
  lab->rng = uv_hrtime() | 1;
  if (lab->cfg.workers < 1) lab->cfg.workers = 1;
  if (lab->cfg.queue_cap < 1) lab->cfg.queue_cap = 1;
  if (lab->cfg.retry_base_ms < 2) lab->cfg.retry_base_ms = 2;
  if (lab->cfg.retry_max_ms < lab->cfg.retry_base_ms) lab->cfg.retry_max_ms = lab->cfg.retry_base_ms;
  if ((rc = uv_timer_init(lab->loop, &lab->retry_timer)) != 0) {
    fprintf(stderr, "lab05: uv_timer_init: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  lab->retry_timer.data = lab;
  client_config_t ccfg = {.max_host_connections = lab->cfg.workers};
  if ((rc = client_create(&lab->client, lab->loop, &ccfg)) != 0) {
    fprintf(stderr, "lab05: client_create: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&lab->retry_timer, on_lab_closed); /* frees lab */
    return rc;
  }
  if ((rc = shell_route(shell, "POST", "/events", handle_event, lab)) != 0) {
    fprintf(stderr, "lab05: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    uv_close((uv_handle_t *)&lab->retry_timer, on_lab_closed); /* frees lab */
    return rc;
  }
  shell_set_stats_hook(shell, on_stats, lab);
  *out = lab;
  return 0;
}

/* The shell has drained (parked requests were let in as room came): keep forwarding, retries
 * included, until everything acknowledged is delivered; lab_pump then frees the lab. */
void lab_destroy(lab_t *lab) {
  lab->closing = 1;
  lab_pump(lab);
}
