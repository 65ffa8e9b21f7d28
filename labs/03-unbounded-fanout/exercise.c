/* Lab 03, exercise: bound the fan-out - at most --max-inflight item fetches in flight at once.
 *
 * GET /batch?n=N fetches N items from the upstream and answers with the aggregate (see lab.h).
 * Right now it starts every item's fetch the moment the batch arrives: N sockets, N curl
 * handles and N running timeouts at once. With N = 5,000 the process runs out of file
 * descriptors (items fail with "Couldn't connect"), memory jumps, and the upstream gets N
 * requests from one caller. Change it so that at most K = --max-inflight fetches run at once
 * (one limit shared by every batch is best, see the README) and the next one starts as soon as
 * one ends: a batch then takes about ceil(N/K) x the upstream latency, whatever N is. Work
 * where TODO says.
 *
 *   make check LAB=03    runs the suite against this file and says what it saw
 *   make hint LAB=03     one more hint each time
 *   make bench LAB=03    the plots, this variant next to the pitfall and the solution
 *   make reset LAB=03    start over (keeps a backup of your file)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "client.h"
#include "lab.h"

/* TODO 1: an async semaphore: a count of free slots and a FIFO queue of waiters (put the queue
 * link in item_t, no malloc per waiter). acquire(waiter, callback) calls back now if a slot is
 * free, else later; release() hands the slot to the oldest waiter. Make sure a callback that
 * releases at once (its fetch could not start) does not recurse. */

/* ---- the lab ---- */
struct lab {
  client_t *client;
  lab_config_t cfg;          /* a copy: options live as long as the lab */
  char *upstream;            /* a copy of cfg.upstream */
  unsigned tag;              /* makes item ids unique across runs of the lab */
  /* TODO 2: the semaphore lives here, with cfg.max_inflight slots (set in lab_create). */
  uint64_t batches, items_ok, items_err;
  long inflight, peak_inflight;
};

typedef struct batch batch_t;

typedef struct item {
  batch_t *batch;
  long number;              /* 1..n */
} item_t;

struct batch {
  lab_t *lab;
  shell_request_t *req;
  long n, pending, ok, err, err_connect, err_timeout, err_http;
  uint64_t sum, checksum, start_ns, seq;   /* seq: this batch's number, for item ids */
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
    item_fail(item, "client_get failed");
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
  if (--b->pending == 0) batch_answer(b);
}

/* Called by the client, from the loop, once per started fetch. */
static void item_done(client_transfer_t *t, const client_result_t *res, void *data) {
  item_t *item = data;
  lab_t *lab = item->batch->lab;
  (void)t;
  lab->inflight--;
  item_finish(item, res);
  /* TODO 3: give the slot back (after item_finish: it may free the batch, not the lab). */
}

/* Starts this item's fetch now, whatever else is running. */
/* TODO 4: only start it once it holds a slot; if client_get fails, release the slot too. */
static void item_start(item_t *item) {
  batch_t *b = item->batch;
  lab_t *lab = b->lab;
  char url[1024];
  const char *sep = strchr(lab->upstream, '?') != NULL ? "&" : "?";
  snprintf(url, sizeof url, "%s%sid=%x.%llu-%ld", lab->upstream, sep, lab->tag,
           (unsigned long long)b->seq, item->number);
  if (client_get(lab->client, url, lab->cfg.item_timeout_ms, item_done, item) == NULL) {
    item_finish(item, NULL);
    return;
  }
  if (++lab->inflight > lab->peak_inflight) lab->peak_inflight = lab->inflight;
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
  /* TODO 7: a client that hangs up stops its batch (lab.h): register shell_request_on_abort and
   * let its callback mark the batch, so queued items end without a fetch when their turn comes
   * (fetches in flight finish as usual). */
  /* Start every item now. Use the local n: the last item may finish (and free b) inside this
   * loop when its fetch cannot even start. */
  for (long i = 0; i < n; i++) {
    b->items[i].batch = b;
    b->items[i].number = i + 1;
  }
  /* TODO 5: acquire a slot for each item instead of starting them all here. */
  for (long i = 0; i < n; i++) item_start(&b->items[i]);
}

static void lab_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  client_stats_t cs;
  client_get_stats(lab->client, &cs);
  shell_stats_add(shell, "fanout_inflight", (double)lab->inflight);
  shell_stats_add(shell, "fanout_inflight_peak", (double)lab->peak_inflight);
  shell_stats_add(shell, "fanout_queued", 0);   /* TODO 6: items waiting for a slot */
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
