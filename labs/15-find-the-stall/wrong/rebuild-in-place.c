/* WRONG: every answer comes from one whole version -- caught by: lab15::answers_match_their_version */
/* The rebuild on the pool, but into the catalog requests are reading, "to save memory". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "lab.h"

struct lab {
  const lab_config_t *cfg;
  shell_t *shell;
  catalog_t cat;                /* the catalog in service */
  catalog_t next;               /* the version a pool thread is building (its own) */
  uv_work_t rebuild_work;
  uv_timer_t rebuild_timer;
  uv_timer_t rollup_timer;
  unsigned rebuilds_running;
  uint64_t answered;            /* requests answered 200, ever */
  uint64_t answered_at_rollup;
  double requests_last_s;
  int open_handles;
  int destroying;               /* lab_destroy waits for a running rebuild */
};

/* A decimal integer from lo to hi in query parameter name. Returns 0, or -1 when it is not. */
static int query_number(shell_request_t *req, const char *name, long lo, long hi, long *out) {
  char text[24], *end;
  if (shell_query_str(req, name, text, sizeof text) != 0 || text[0] < '0' || text[0] > '9')
    return -1;
  *out = strtol(text, &end, 10);
  return *end == '\0' && *out >= lo && *out <= hi ? 0 : -1;
}

/* GET /price?sku=S */
static void price_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  long sku;

  if (query_number(req, "sku", 0, lab->cat.items - 1, &sku) != 0) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"sku: want ?sku= and an integer from 0 to %ld\"}\n",
                   lab->cat.items - 1);
    return;
  }
  lab->answered++;
  shell_respondf(req, 200, "application/json", "{\"sku\":%ld,\"price\":%u,\"version\":%ld}\n",
                 sku, lab->cat.price[sku], lab->cat.version);
}

/* GET /top?n=K */
static void top_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char body[32 + 100 * 24];
  long n;
  int len;

  if (query_number(req, "n", 1, 100, &n) != 0) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"n: want ?n= and an integer from 1 to 100\"}\n");
    return;
  }
  if (n > lab->cat.items) n = lab->cat.items;
  len = snprintf(body, sizeof body, "{\"version\":%ld,\"top\":[", lab->cat.version);
  for (long i = 0; i < n; i++)
    len += snprintf(body + len, sizeof body - (size_t)len, "%s[%u,%u]", i ? "," : "",
                    lab->cat.ranked[i].sku, lab->cat.ranked[i].price);
  len += snprintf(body + len, sizeof body - (size_t)len, "]}\n");
  lab->answered++;
  shell_respond(req, 200, "application/json", body, (size_t)len);
}

/* GET /health: nothing to look up. */
static void health_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  lab->answered++;
  shell_respond(req, 200, "text/plain", "ok\n", 3);
}

static void close_timers(lab_t *lab);

/* Who calls it: a libuv pool thread. It writes only lab->next, which no request reads. */
static void rebuild_work(uv_work_t *work) {
  lab_t *lab = work->data;
  /* Rebuild the arrays we already have: no second copy of the catalog in memory. */
  long v = lab->cat.version + 1;
  for (long s = 0; s < lab->cat.items; s++) {
    lab->cat.price[s] = catalog_price(s, v);
    lab->cat.ranked[s].price = lab->cat.price[s];
    lab->cat.ranked[s].sku = (uint32_t)s;
  }
  qsort(lab->cat.ranked, (size_t)lab->cat.items, sizeof *lab->cat.ranked, catalog_rank_cmp);
}

/* Who calls it: libuv, on the loop, once rebuild_work has returned. Two pointer moves. */
static void rebuild_after_work(uv_work_t *work, int status) {
  lab_t *lab = work->data;
  const char *prev;

  lab->rebuilds_running = 0;
  if (lab->destroying) { /* the shell is gone: only clean up */
    catalog_free(&lab->next);
    close_timers(lab);
    return;
  }
  prev = shell_callback_begin(lab->shell, "catalog rebuild done");
  if (status == 0) {
    lab->cat.version++;
  } else {
    fprintf(stderr, "lab15: catalog rebuild failed (version %ld kept)\n", lab->cat.version);
  }
  shell_callback_end(lab->shell, prev);
}

/* Who calls it: the rebuild timer, every rebuild_ms. */
static void rebuild_timer_cb(uv_timer_t *timer) {
  lab_t *lab = timer->data;
  const char *prev = shell_callback_begin(lab->shell, "catalog rebuild timer");
  int rc;

  /* SOLUTION: the build goes to a pool thread; one at a time (a tick during one is skipped). */
  if (lab->rebuilds_running == 0 && !lab->destroying) {
    lab->rebuild_work.data = lab;
    rc = uv_queue_work(shell_loop(lab->shell), &lab->rebuild_work, rebuild_work,
                       rebuild_after_work);
    if (rc == 0)
      lab->rebuilds_running = 1;
    else
      fprintf(stderr, "lab15: uv_queue_work: %s\n", uv_strerror(rc));
  }
  shell_callback_end(lab->shell, prev);
}

/* Who calls it: the rollup timer, every second. Cheap: two subtractions. */
static void rollup_timer_cb(uv_timer_t *timer) {
  lab_t *lab = timer->data;
  const char *prev = shell_callback_begin(lab->shell, "stats rollup timer");
  lab->requests_last_s = (double)(lab->answered - lab->answered_at_rollup);
  lab->answered_at_rollup = lab->answered;
  shell_callback_end(lab->shell, prev);
}

/* Adds the lab's counters to /debug/stats. */
static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;

  shell_stats_add(shell, "catalog_version", (double)lab->cat.version);
  shell_stats_add(shell, "catalog_rebuilds", (double)(lab->cat.version - 1));
  shell_stats_add(shell, "catalog_items", (double)lab->cat.items);
  shell_stats_add(shell, "rebuilds_running", (double)lab->rebuilds_running);
  shell_stats_add(shell, "requests_last_s", lab->requests_last_s);
}

static int start_timer(lab_t *lab, uv_timer_t *timer, uv_timer_cb cb, uint64_t every_ms) {
  int rc = uv_timer_init(shell_loop(lab->shell), timer);
  if (rc != 0) {
    fprintf(stderr, "lab15: uv_timer_init: %s\n", uv_strerror(rc));
    return rc;
  }
  timer->data = lab;
  lab->open_handles++;
  rc = uv_timer_start(timer, cb, every_ms, every_ms);
  if (rc != 0) fprintf(stderr, "lab15: uv_timer_start: %s\n", uv_strerror(rc));
  return rc;
}

static void on_timer_closed(uv_handle_t *handle) {
  lab_t *lab = handle->data;
  if (--lab->open_handles > 0) return;
  catalog_free(&lab->cat);
  free(lab);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;

  if (cfg->items < 1 || cfg->items > 10000000 || cfg->rebuild_ms < 10 ||
      cfg->rebuild_ms > 3600000) {
    fprintf(stderr, "lab15: --items must be 1 to 10000000, --rebuild-ms 10 to 3600000\n");
    return UV_EINVAL;
  }
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->cfg = cfg;
  lab->shell = shell;
  /* Version 1 before the service listens: nobody is waiting yet. */
  if (catalog_build(&lab->cat, cfg->items, 1) != 0) {
    fprintf(stderr, "lab15: catalog_build: out of memory\n");
    free(lab);
    return UV_ENOMEM;
  }
  rc = shell_route(shell, "GET", "/price", price_handle, lab);
  if (rc == 0) rc = shell_route(shell, "GET", "/top", top_handle, lab);
  if (rc == 0) rc = shell_route(shell, "GET", "/health", health_handle, lab);
  if (rc != 0) fprintf(stderr, "lab15: shell_route: %s\n", uv_strerror(rc));
  if (rc == 0) rc = start_timer(lab, &lab->rebuild_timer, rebuild_timer_cb, (uint64_t)cfg->rebuild_ms);
  if (rc == 0) rc = start_timer(lab, &lab->rollup_timer, rollup_timer_cb, 1000);
  if (rc != 0) {
    if (lab->open_handles == 0) {
      catalog_free(&lab->cat);
      free(lab);
    } else {
      lab_destroy(lab); /* the timers' close callbacks free it */
    }
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

static void close_timers(lab_t *lab) {
  int n = lab->open_handles;
  if (n >= 1) uv_close((uv_handle_t *)&lab->rebuild_timer, on_timer_closed);
  if (n >= 2) uv_close((uv_handle_t *)&lab->rollup_timer, on_timer_closed);
}

/* A rebuild still running owns lab->next: its after-work callback closes the timers. */
void lab_destroy(lab_t *lab) {
  lab->destroying = 1;
  /* The shell is freed once this returns: no timer may run again (they would name themselves). */
  if (lab->open_handles >= 1) uv_timer_stop(&lab->rebuild_timer);
  if (lab->open_handles >= 2) uv_timer_stop(&lab->rollup_timer);
  if (lab->rebuilds_running == 0) close_timers(lab);
}
