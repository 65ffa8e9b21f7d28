/* Lab 05, pitfall: an unbounded queue between a fast producer and a slow consumer.
 *
 * POST /events acknowledges every event at once (202) and appends it to an in-memory queue; a
 * consumer forwards the queue to the upstream, `workers` at a time. While events arrive faster
 * than the consumer drains them, the queue grows without limit: memory grows linearly, the wait
 * from acknowledgement to processing grows without limit, and on shutdown whatever is still
 * queued is lost, although the producer was told "accepted". And a forward that fails is sent
 * again at once, three times, then dropped: an upstream that is down for a second loses every
 * event acknowledged meanwhile.
 *
 * See it (drain: 4 workers / 20 ms = 200 events/s; offered: 600/s):
 *   build/bin/upstream --port 8081 --latency-ms 20 &
 *   build/bin/lab05-pitfall --port 8080 &
 *   build/bin/loadgen http://127.0.0.1:8080/events -m POST -b "$(printf '%1024s' '')" -r 600 -c 32 -d 10 &
 *   watch -n1 curl -s 127.0.0.1:8080/debug/stats   # queue_depth, queue_age_ms, rss_kb: growing
 * or: make bench LAB=05
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"
#include "labkit.h"

#define MAX_ATTEMPTS 3

typedef struct event event_t;
struct event {
  event_t *next;
  lab_t *lab;
  uint64_t acked_ns;   /* when the producer was told 202 */
  unsigned attempts;
  char id[64];
  size_t len;
  char payload[];      /* the request body, as received */
};

struct lab {
  shell_t *shell;
  client_t *client;
  lab_config_t cfg;
  event_t *head, *tail;    /* the queue, oldest first */
  size_t depth, peak, bytes; /* events held: acknowledged and not yet delivered (queued or in a
                                forward), and their payload bytes */
  unsigned forwarding;     /* forwards in flight */
  int closing;
  unsigned long long next_auto_id, acked, refused, forwarded, forward_errors, lost;
  double latency_last_ms, latency_max_ms;
};

static void forward_start(lab_t *lab, event_t *ev);

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

/* The event is no longer held: delivered (or, in the pitfall, dropped). */
static void event_release(lab_t *lab, event_t *ev) {
  lab->depth--;
  lab->bytes -= ev->len;
  free(ev);
}

/* ---- the consumer ---- */

static void lab_finish(lab_t *lab);

/* Starts forwards while a worker is free. On shutdown, waits for the forwards in flight only. */
static void lab_pump(lab_t *lab) {
  while (!lab->closing && lab->forwarding < (unsigned)lab->cfg.workers && lab->head != NULL)
    forward_start(lab, queue_pop(lab));
  if (lab->closing && lab->forwarding == 0) lab_finish(lab); /* frees lab */
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
  } else if (++ev->attempts < MAX_ATTEMPTS) {
    /* PITFALL: not delivered, so send it again at once, same id (the upstream can drop a
     * duplicate by id). An upstream that is down answers just as fast the second time. */
    lab->forward_errors++;
    forward_start(lab, ev);
  } else {
    fprintf(stderr, "lab05: event %s not delivered after %d attempts: %s\n", ev->id,
            MAX_ATTEMPTS, res->error ? res->error : "upstream error");
    lab->forward_errors++;
    lab->lost++;
    event_release(lab, ev); /* PITFALL: an acknowledged event, dropped */
  }
  lab_pump(lab);
}

static void forward_start(lab_t *lab, event_t *ev) {
  char url[512];
  snprintf(url, sizeof url, "%s/events?id=%s&event_id=%s", lab->cfg.upstream, ev->id, ev->id);
  client_req_t req = {.method = "POST", .url = url, .body = ev->payload, .body_len = ev->len,
                      .timeout_ms = lab->cfg.forward_timeout_ms, .done = on_forwarded, .data = ev};
  int rc = client_start(lab->client, &req, NULL);
  if (rc != 0) {
    fprintf(stderr, "lab05: client_start: %s (event %s lost)\n", uv_strerror(rc), ev->id);
    lab->lost++;
    event_release(lab, ev);
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

static void handle_event(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char id[64];
  size_t len;
  const char *body = shell_request_body(req, &len);

  if (event_id(lab, req, id, sizeof id) != 0) {
    shell_respondf(req, 400, "text/plain", "bad id: use 1-62 letters, digits, '.', '_', '-'\n");
    return;
  }
  event_t *ev = malloc(sizeof *ev + len);
  if (ev == NULL) {
    shell_respondf(req, 500, "text/plain", "out of memory\n");
    return;
  }
  ev->lab = lab;
  ev->attempts = 0;
  snprintf(ev->id, sizeof ev->id, "%s", id);
  ev->len = len;
  memcpy(ev->payload, body, len);
  ev->acked_ns = uv_hrtime();
  /* PITFALL: no bound. Whatever the consumer's pace, every event is queued and acknowledged. */
  queue_push(lab, ev);
  lab->acked++;
  shell_respondf(req, 202, "text/plain", "accepted %s\n", id);
  lab_pump(lab);
}

/* Called by the shell while it writes /debug/stats. */
static void on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "queue_depth", (double)lab->depth);
  shell_stats_add(shell, "queue_peak", (double)lab->peak);
  shell_stats_add(shell, "queue_kb", (double)lab->bytes / 1024.0);
  shell_stats_add(shell, "queue_age_ms",
                  lab->head ? (double)(uv_hrtime() - lab->head->acked_ns) / 1e6 : 0.0);
  shell_stats_add(shell, "parked", 0);
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
  lab_t *lab = calloc(1, sizeof *lab);
  int rc;
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = *cfg;
  if (lab->cfg.workers < 1) lab->cfg.workers = 1;
  client_config_t ccfg = {.max_host_connections = lab->cfg.workers};
  rc = client_create(&lab->client, shell_loop(shell), &ccfg);
  if (rc != 0) {
    fprintf(stderr, "lab05: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  if ((rc = shell_route(shell, "POST", "/events", handle_event, lab)) != 0) {
    fprintf(stderr, "lab05: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, on_stats, lab);
  *out = lab;
  return 0;
}

/* After the last forward ended: drop what is left. The client frees itself in its handles'
 * close callbacks (destroying it from inside its own done callback is allowed). */
static void lab_finish(lab_t *lab) {
  if (lab->depth > 0)
    fprintf(stderr, "lab05: shutting down with %zu acknowledged events queued: lost\n",
            lab->depth);
  lab->lost += lab->depth;
  while (lab->head != NULL) event_release(lab, queue_pop(lab));
  client_destroy(lab->client);
  free(lab);
}

/* The shell has drained. The queue may hold minutes of work: too much to wait for, so only the
 * forwards in flight finish, and the queue dies with the process. */
void lab_destroy(lab_t *lab) {
  lab->closing = 1;
  lab_pump(lab);
}
