/* Lab 03, another right answer: queue batches, not items.
 *
 * The solution queues every item on an async semaphore (one waiter per item). This variant keeps
 * a FIFO of batches instead, each with a cursor to its next unstarted item: a free slot goes to
 * the oldest batch in the queue, which starts its next item, and a batch leaves the queue once
 * all its items have started. The order is the same (FIFO within and across batches), the
 * limit the same (K fetches in flight, service-wide), and the queue costs one link per batch
 * instead of one per item. A batch whose client hangs up leaves the queue at once; its
 * unstarted items are counted as failed ("not started").
 *
 * See it:  make test LAB=03   (build/test/lab03-batch_cursor)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "client.h"
#include "lab.h"

/* ---- the lab ---- */
typedef struct batch batch_t;

struct lab {
  client_t *client;
  lab_config_t cfg;          /* a copy: options live as long as the lab */
  char *upstream;            /* a copy of cfg.upstream */
  long free_slots;           /* of K, shared by every batch: the upstream sees at most K */
  long queued;               /* items not started yet, over every queued batch */
  batch_t *wait_head, *wait_tail;   /* batches with unstarted items, oldest first */
  int pumping;               /* lab_pump is running (a failed start may call it again) */
  unsigned tag;              /* makes item ids unique across runs of the lab */
  uint64_t batches, items_ok, items_err;
  long inflight, peak_inflight;
};

typedef struct item {
  batch_t *batch;
  long number;              /* 1..n */
} item_t;

struct batch {
  lab_t *lab;
  shell_request_t *req;
  long n, pending, ok, err, err_connect, err_timeout, err_http;
  uint64_t sum, checksum, start_ns, seq;   /* seq: this batch's number, for item ids */
  int aborted;              /* the client went away: queued items are not started */
  long next_item;           /* index of the next item to start */
  batch_t *next_waiting;    /* in the lab's FIFO of batches */
  int queued;               /* 1 while in that FIFO */
  char first_error[160];
  item_t items[];
};

static void batch_answer(batch_t *b) {
  lab_t *lab = b->lab;
  double elapsed_ms = (double)(uv_hrtime() - b->start_ns) / 1e6;
  shell_respondf(b->req, 200, "application/json",
                 "{\"n\":%ld,\"ok\":%ld,\"err\":%ld,\"sum\":%llu,\"checksum\":%llu,"
                 "\"err_connect\":%ld,\"err_timeout\":%ld,\"err_http\":%ld,"
                 "\"max_inflight\":%ld,\"peak_inflight\":%ld,\"elapsed_ms\":%.1f,"
                 "\"first_error\":\"%s\"}\n",
                 b->n, b->ok, b->err, (unsigned long long)b->sum, (unsigned long long)b->checksum,
                 b->err_connect, b->err_timeout, b->err_http, lab->cfg.max_inflight,
                 lab->peak_inflight, elapsed_ms, b->first_error);
  free(b);
}

static void item_fail(item_t *item, const char *what) {
  batch_t *b = item->batch;
  b->err++;
  if (b->first_error[0] == '\0') {
    snprintf(b->first_error, sizeof b->first_error, "item %ld: %s", item->number, what);
    for (char *p = b->first_error; *p != '\0'; p++)   /* keep the JSON string valid */
      if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = '\'';
  }
}

/* The item number the upstream echoed back ({"id":"TAG.BATCH-N",...}), or 0 if absent. */
static long echoed_number(const char *body) {
  const char *id = body != NULL ? strstr(body, "\"id\":\"") : NULL;
  const char *dash = id != NULL ? strchr(id + 6, '-') : NULL;
  return dash != NULL ? strtol(dash + 1, NULL, 10) : 0;
}

/* Records one item's outcome; the last one answers the batch. Every item passes here once. */
static void item_finish(item_t *item, const client_result_t *res) {
  batch_t *b = item->batch;
  lab_t *lab = b->lab;
  if (res == NULL) {
    b->err_connect++;
    item_fail(item, b->aborted ? "not started: client went away" : "client_get failed");
  } else if (res->status == 200) {
    long value = echoed_number(res->body);   /* the answer is this item's: value == number */
    b->ok++;
    b->sum += (uint64_t)value;
    b->checksum += (uint64_t)item->number * (uint64_t)value;
  } else if (res->timed_out) {
    b->err_timeout++;
    item_fail(item, res->error ? res->error : "timed out");
  } else if (res->status == 0) {
    b->err_connect++;
    item_fail(item, res->error ? res->error : "no response");
  } else {
    b->err_http++;
    item_fail(item, "upstream answered an error status");
  }
  if (res != NULL && res->status == 200) lab->items_ok++; else lab->items_err++;
  /* Answer (and free the batch) before releasing: the release may start and finish other
   * items of this batch, and we must not touch it after that. */
  if (--b->pending == 0) batch_answer(b);
}

static void lab_pump(lab_t *lab);
static void item_start(item_t *item);

/* Called by the client, from the loop, once per started fetch. */
static void item_done(client_transfer_t *t, const client_result_t *res, void *data) {
  item_t *item = data;
  lab_t *lab = item->batch->lab;
  (void)t;
  lab->inflight--;
  item_finish(item, res);   /* may answer and free the batch */
  lab->free_slots++;
  lab_pump(lab);
}

/* Takes a batch out of the lab's FIFO (it is the head, or was found by the abort). */
static void queue_remove(lab_t *lab, batch_t *b) {
  batch_t **at = &lab->wait_head, *prev = NULL;
  while (*at != NULL && *at != b) {
    prev = *at;
    at = &(*at)->next_waiting;
  }
  if (*at == NULL) return;
  *at = b->next_waiting;
  if (lab->wait_tail == b) lab->wait_tail = prev;
  b->queued = 0;
}

/* Gives free slots to the oldest batch's next items until no slot or no item is left. */
static void lab_pump(lab_t *lab) {
  if (lab->pumping) return;
  lab->pumping = 1;
  while (lab->free_slots > 0 && lab->wait_head != NULL) {
    batch_t *b = lab->wait_head;
    item_t *item = &b->items[b->next_item++];
    lab->queued--;
    if (b->next_item == b->n) queue_remove(lab, b);   /* every item has started (or will) */
    lab->free_slots--;
    item_start(item);
  }
  lab->pumping = 0;
}

/* Starts this item's fetch now: it holds a slot. */
static void item_start(item_t *item) {
  batch_t *b = item->batch;
  lab_t *lab = b->lab;
  char url[1024];
  const char *sep = strchr(lab->upstream, '?') != NULL ? "&" : "?";
  snprintf(url, sizeof url, "%s%sid=%x.%llu-%ld", lab->upstream, sep, lab->tag,
           (unsigned long long)b->seq, item->number);
  if (b->aborted ||
      client_get(lab->client, url, lab->cfg.item_timeout_ms, item_done, item) == NULL) {
    item_finish(item, NULL);
    lab->free_slots++;   /* lab_pump's loop hands it on, not a recursive call */
    return;
  }
  if (++lab->inflight > lab->peak_inflight) lab->peak_inflight = lab->inflight;
}

/* Called by the shell if the client disconnects before the answer. */
static void batch_aborted(shell_request_t *req, void *data) {
  batch_t *b = data;
  lab_t *lab = b->lab;
  (void)req;
  b->aborted = 1;   /* fetches in flight finish (at most K); the unstarted ones end now */
  if (!b->queued) return;
  queue_remove(lab, b);
  long first = b->next_item, n = b->n;
  lab->queued -= n - first;
  b->next_item = n;
  /* The last of these may answer and free b when nothing of it is in flight: touch b no more. */
  for (long i = first; i < n; i++) item_finish(&b->items[i], NULL);
}

static void on_batch(shell_request_t *req, void *data) {
  lab_t *lab = data;
  long n = shell_query_long(req, "n", -1);
  if (n < 1 || n > lab->cfg.max_items) {
    shell_respondf(req, 400, "text/plain", "n must be a number from 1 to %ld\n",
                   lab->cfg.max_items);
    return;
  }
  batch_t *b = calloc(1, sizeof *b + (size_t)n * sizeof(item_t));
  if (b == NULL) {
    fprintf(stderr, "lab03: calloc(batch of %ld): out of memory\n", n);
    shell_respondf(req, 503, "text/plain", "out of memory\n");
    return;
  }
  b->lab = lab;
  b->req = req;
  b->n = b->pending = n;
  b->start_ns = uv_hrtime();
  b->seq = ++lab->batches;
  shell_request_on_abort(req, batch_aborted, b);
  for (long i = 0; i < n; i++) {
    b->items[i].batch = b;
    b->items[i].number = i + 1;
  }
  /* Into the FIFO; free slots start its first items now, the rest as slots come back. */
  b->queued = 1;
  if (lab->wait_tail != NULL) lab->wait_tail->next_waiting = b; else lab->wait_head = b;
  lab->wait_tail = b;
  lab->queued += n;
  lab_pump(lab);
}

static void lab_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  client_stats_t cs;
  client_get_stats(lab->client, &cs);
  shell_stats_add(shell, "fanout_inflight", (double)lab->inflight);
  shell_stats_add(shell, "fanout_inflight_peak", (double)lab->peak_inflight);
  shell_stats_add(shell, "fanout_queued", (double)lab->queued);
  shell_stats_add(shell, "fanout_items_ok", (double)lab->items_ok);
  shell_stats_add(shell, "fanout_items_err", (double)lab->items_err);
  shell_stats_add(shell, "fanout_batches", (double)lab->batches);
  shell_stats_add(shell, "fanout_connections_opened", (double)cs.connections_opened);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  if (cfg->max_inflight < 1 || cfg->max_items < 1 || cfg->item_timeout_ms < 0) {
    fprintf(stderr, "lab03: --max-inflight and --max-items must be >= 1, "
                    "--item-timeout-ms >= 0\n");
    return UV_EINVAL;
  }
  lab_t *lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->cfg = *cfg;
  lab->upstream = strdup(cfg->upstream);
  if (lab->upstream == NULL) {
    free(lab);
    return UV_ENOMEM;
  }
  lab->free_slots = cfg->max_inflight;
  lab->tag = (unsigned)(uv_hrtime() & 0xffffffu);
  int rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab03: client_create: %s\n", uv_strerror(rc));
    free(lab->upstream);
    free(lab);
    return rc;
  }
  rc = shell_route(shell, "GET", "/batch", on_batch, lab);
  if (rc != 0) {
    fprintf(stderr, "lab03: shell_route(/batch): %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab->upstream);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_stats, lab);
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);   /* frees its handles in close callbacks; the loop runs on */
  free(lab->upstream);
  free(lab);
}
