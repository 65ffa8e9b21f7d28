/* WRONG: a 503 at the acquire timeout is counted in orders_failed (status >= 500) instead of orders_refused -- caught by: lab09::acquire_timeout_503 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "hist.h"
#include "lab.h"
#include "labkit.h"

typedef struct order order_t;

/* The counters /debug/stats shows (lab.h), by those names. */
#define COUNTERS(X)                                                                           \
  X(orders_total) X(orders_ok) X(orders_refused) X(orders_failed) X(orders_inflight)           \
  X(pool_checked_out) X(pool_checked_out_peak) X(pool_waiting) X(pool_waiting_peak)           \
  X(pool_acquired) X(pool_timeouts)
#define COUNTER_FIELD(name) uint64_t name;

struct lab {
  shell_t *shell;
  const lab_config_t *cfg;
  client_t *api;      /* the external API: no limit of ours */
  client_t *db;       /* the database: at most cfg->pool connections, kept alive (the sessions) */
  COUNTERS(COUNTER_FIELD)
  /* The session pool: pool_checked_out sessions handed out, and a FIFO of orders waiting. */
  order_t *wait_head, *wait_tail;
  uv_timer_t wait_timer; /* fires when the oldest waiter reaches the acquire timeout */
  hist_t waits;          /* how long each order waited for a session, in us */
};

/* One /order request, from its handler to its answer. */
struct order {
  lab_t *lab;
  shell_request_t *req;
  char id[80];
  long api_ms, db_ms;
  int has_session;
  char *api_body;     /* the API's answer, written in the transaction */
  order_t *next;      /* in the pool's wait queue */
  uint64_t wait_start_ns;
};

static void order_has_session(order_t *o);
static void order_answer(order_t *o, int status, const char *extra_headers, const char *fmt, ...);
static void pool_on_wait_timer(uv_timer_t *timer);

/* ---- the session pool ---- */

/* Arms the timer for the oldest waiter's limit: the queue is FIFO, so one timer serves them all. */
static void pool_arm(lab_t *lab) {
  if (lab->wait_head == NULL) {
    uv_timer_stop(&lab->wait_timer);
    return;
  }
  uint64_t waited_ms = (uv_hrtime() - lab->wait_head->wait_start_ns) / 1000000u; /* rounded down */
  uint64_t limit_ms = (uint64_t)lab->cfg->acquire_timeout_ms;
  int rc = uv_timer_start(&lab->wait_timer, pool_on_wait_timer,
                          waited_ms < limit_ms ? limit_ms - waited_ms : 0, 0);
  if (rc != 0) fprintf(stderr, "lab09: uv_timer_start: %s\n", uv_strerror(rc));
}

/* Takes a free session for o (returns 1), or queues o at the tail (returns 0): it gets
 * order_has_session() when a session is released to it. */
static int pool_acquire(lab_t *lab, order_t *o) {
  if (lab->pool_checked_out < (uint64_t)lab->cfg->pool) {
    if (++lab->pool_checked_out > lab->pool_checked_out_peak)
      lab->pool_checked_out_peak = lab->pool_checked_out;
    lab->pool_acquired++;
    hist_record(&lab->waits, 0);
    o->has_session = 1;
    return 1;
  }
  /* It waits at most acquire_timeout_ms: pool_on_wait_timer refuses it then. */
  o->wait_start_ns = uv_hrtime();
  o->next = NULL;
  if (lab->wait_tail != NULL) lab->wait_tail->next = o;
  else lab->wait_head = o;
  lab->wait_tail = o;
  if (++lab->pool_waiting > lab->pool_waiting_peak) lab->pool_waiting_peak = lab->pool_waiting;
  if (lab->wait_head == o) pool_arm(lab);
  return 0;
}

static order_t *pool_dequeue(lab_t *lab) {
  order_t *o = lab->wait_head;
  lab->wait_head = o->next;
  if (lab->wait_head == NULL) lab->wait_tail = NULL;
  lab->pool_waiting--;
  return o;
}

/* Refuses every waiter that has reached its limit (503 + Retry-After, out of the queue), then
 * arms the timer for the next one. */
static void pool_refuse_expired(lab_t *lab) {
  uint64_t limit_ns = (uint64_t)lab->cfg->acquire_timeout_ms * 1000000u;
  char headers[64];
  while (lab->wait_head != NULL && uv_hrtime() - lab->wait_head->wait_start_ns >= limit_ns) {
    order_t *o = pool_dequeue(lab);
    lab->pool_timeouts++;
    snprintf(headers, sizeof headers, "Retry-After: %ld\r\n", lab->cfg->retry_after_s);
    order_answer(o, 503, headers, "{\"error\":\"pool exhausted\",\"waited_ms\":%.0f,\"pool\":%ld}",
                 (double)(uv_hrtime() - o->wait_start_ns) / 1e6, lab->cfg->pool);
  }
  pool_arm(lab);
}

/* Gives o's session back: straight to the oldest waiter, if any. */
static void pool_release(lab_t *lab, order_t *o) {
  o->has_session = 0;
  pool_refuse_expired(lab); /* a waiter past its limit (its timer is late) is refused, not served */
  if (lab->wait_head == NULL) {
    lab->pool_checked_out--;
    return;
  }
  order_t *next = pool_dequeue(lab);
  hist_record(&lab->waits, (uv_hrtime() - next->wait_start_ns) / 1000u);
  pool_arm(lab);
  lab->pool_acquired++;
  next->has_session = 1;
  order_has_session(next);
}

/* Who calls it: libuv, when the oldest waiter has waited acquire_timeout_ms. */
static void pool_on_wait_timer(uv_timer_t *timer) { pool_refuse_expired(timer->data); }

/* ---- the order ---- */

/* Answers with the JSON body fmt..., gives back the session if it still holds one, counts and
 * frees the order. */
__attribute__((format(printf, 4, 5)))
static void order_answer(order_t *o, int status, const char *extra_headers, const char *fmt, ...) {
  lab_t *lab = o->lab;
  char *body;
  va_list ap;
  va_start(ap, fmt);
  int len = vasprintf(&body, fmt, ap);
  va_end(ap);
  if (len < 0) {
    shell_respondf(o->req, status = 500, "application/json", "{\"error\":\"out of memory\"}");
  } else {
    shell_respond_ex(o->req, status, extra_headers, "application/json", body, (size_t)len);
    free(body);
  }
  lab->orders_inflight--;
  if (status == 200) lab->orders_ok++;
  else if (status >= 500) lab->orders_failed++;
  else if (status == 503) lab->orders_refused++;
  if (o->has_session) pool_release(lab, o);
  free(o->api_body);
  free(o);
}

/* 1 when the call succeeded; else answers 502 naming the call (status 0: no response), 0. */
static int call_ok(order_t *o, const char *call, const client_result_t *res) {
  if (res != NULL && res->error == NULL && res->status >= 200 && res->status <= 299) return 1;
  order_answer(o, 502, NULL, "{\"error\":\"upstream\",\"call\":\"%s\",\"status\":%d}", call,
               res != NULL ? res->status : 0);
  return 0;
}

/* Who calls it: the DB client, when the transaction has ended. */
static void order_on_tx(client_transfer_t *t, const client_result_t *res, void *data) {
  order_t *o = data;
  (void)t;
  if (call_ok(o, "db", res))
    order_answer(o, 200, NULL, "{\"id\":\"%s\",\"api\":%s,\"db\":%.*s}", o->id, o->api_body,
                 (int)res->body_len, res->body);
}

/* Starts the transaction on the order's session. */
static void order_start_tx(order_t *o) {
  lab_t *lab = o->lab;
  char url[512];
  snprintf(url, sizeof url, "%s/db/tx?id=%s&latency_ms=%ld",
           lab->cfg->db[0] != '\0' ? lab->cfg->db : lab->cfg->upstream, o->id, o->db_ms);
  if (client_get(lab->db, url, lab->cfg->call_timeout_ms, order_on_tx, o) == NULL) {
    fprintf(stderr, "lab09: client_get(%s) failed\n", url);
    call_ok(o, "db", NULL);
  }
}

/* Who calls it: the API client, when the external call has ended. */
static void order_on_api(client_transfer_t *t, const client_result_t *res, void *data) {
  order_t *o = data;
  (void)t;
  if (!call_ok(o, "api", res)) return;
  o->api_body = strndup(res->body, res->body_len);
  if (o->api_body == NULL) {
    order_answer(o, 500, NULL, "{\"error\":\"out of memory\"}");
    return;
  }
  /* Acquire late: only now, with the API's answer in hand, is a session needed. */
  if (pool_acquire(o->lab, o)) order_has_session(o);
}

static void order_call_api(order_t *o) {
  lab_t *lab = o->lab;
  char url[512];
  snprintf(url, sizeof url, "%s/api/check?id=%s&latency_ms=%ld", lab->cfg->upstream, o->id,
           o->api_ms);
  if (client_get(lab->api, url, lab->cfg->call_timeout_ms, order_on_api, o) == NULL) {
    fprintf(stderr, "lab09: client_get(%s) failed\n", url);
    call_ok(o, "api", NULL);
  }
}

/* Who calls it: pool_acquire's caller, or pool_release, once the order holds a session. It is
 * held for the transaction only: order_answer releases it as soon as the transaction ends. */
static void order_has_session(order_t *o) { order_start_tx(o); }

/* A latency knob: absent (*out = fallback) or an integer in 0..3600000. -1 when malformed. */
static int knob_ms(shell_request_t *req, const char *name, long fallback, long *out) {
  char buf[16], *end;
  *out = fallback;
  if (shell_query_str(req, name, buf, sizeof buf) != 0) return 0;
  long v = strtol(buf, &end, 10);
  if (buf[0] == '\0' || *end != '\0' || v < 0 || v > 3600000) return -1;
  *out = v;
  return 0;
}

/* GET /order?id=X[&api_ms=N][&db_ms=N] */
static void order_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  const char *bad = NULL;

  lab->orders_total++;
  order_t *o = calloc(1, sizeof *o);
  if (o == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}");
    return;
  }
  /* The id goes into the upstreams' URLs as is, so it must not need escaping. */
  if (shell_query_str(req, "id", o->id, sizeof o->id) != 0 || !labkit_token_valid(o->id, 63, "-_"))
    bad = "id";
  else if (knob_ms(req, "api_ms", lab->cfg->api_ms, &o->api_ms) != 0) bad = "api_ms";
  else if (knob_ms(req, "db_ms", lab->cfg->db_ms, &o->db_ms) != 0) bad = "db_ms";
  if (bad != NULL) {
    shell_respondf(req, 400, "application/json", "{\"error\":\"bad parameter\",\"param\":\"%s\"}",
                   bad);
    free(o);
    return;
  }
  o->lab = lab;
  o->req = req;
  lab->orders_inflight++;
  order_call_api(o); /* no session yet: the slow call holds nothing of the pool */
}

/* A wait percentile in ms. A bucket's midpoint can lie above the exact maximum: clip it. */
static double pool_wait_ms(const lab_t *lab, double pct) {
  uint64_t us = hist_percentile(&lab->waits, pct), max_us = hist_max(&lab->waits);
  return (double)(us < max_us ? us : max_us) / 1000;
}

static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
#define COUNTER_ADD(name) shell_stats_add(shell, #name, (double)lab->name);
  COUNTERS(COUNTER_ADD)
  shell_stats_add(shell, "pool_size", (double)lab->cfg->pool);
  shell_stats_add(shell, "pool_wait_ms_p50", pool_wait_ms(lab, 50));
  shell_stats_add(shell, "pool_wait_ms_p99", pool_wait_ms(lab, 99));
  shell_stats_add(shell, "pool_wait_ms_max", pool_wait_ms(lab, 100));
}

static void lab_on_closed(uv_handle_t *h) { free(h->data); }

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;

  if (cfg->pool < 1 || cfg->acquire_timeout_ms < 1 || cfg->retry_after_s < 1 ||
      cfg->call_timeout_ms < 1 || cfg->api_ms < 0 || cfg->db_ms < 0) {
    fprintf(stderr, "lab09: --pool, --acquire-timeout-ms, --retry-after-s and --call-timeout-ms "
                    "must be at least 1, --api-ms and --db-ms at least 0\n");
    return UV_EINVAL;
  }
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = cfg;
  hist_init(&lab->waits);
  if ((rc = uv_timer_init(shell_loop(shell), &lab->wait_timer)) != 0) {
    fprintf(stderr, "lab09: uv_timer_init: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  lab->wait_timer.data = lab;
  /* The pool's connections: at most pool at once, all kept alive between transactions. */
  client_config_t db_cfg = {.max_host_connections = cfg->pool, .max_cached_connections = cfg->pool};
  if ((rc = client_create(&lab->db, shell_loop(shell), &db_cfg)) != 0) {
    fprintf(stderr, "lab09: client_create(db): %s\n", uv_strerror(rc));
    goto fail_db;
  }
  if ((rc = client_create(&lab->api, shell_loop(shell), NULL)) != 0) {
    fprintf(stderr, "lab09: client_create(api): %s\n", uv_strerror(rc));
    goto fail_api;
  }
  if ((rc = shell_route(shell, "GET", "/order", order_handle, lab)) != 0) {
    fprintf(stderr, "lab09: shell_route: %s\n", uv_strerror(rc));
    goto fail_route;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
fail_route:
  client_destroy(lab->api);
fail_api:
  client_destroy(lab->db);
fail_db:
  uv_close((uv_handle_t *)&lab->wait_timer, lab_on_closed);
  return rc;
}

/* Every order has been answered: no session is out, nobody waits, no call runs. */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->api);
  client_destroy(lab->db);
  uv_close((uv_handle_t *)&lab->wait_timer, lab_on_closed);
}
