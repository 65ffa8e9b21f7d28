/* Lab 09 suite: is the database session held only around the database work, and does a wait for
 * one end?
 *
 * Built once per variant (build/test/lab09-pitfall, -solution, -exercise, -wrong-*). Each test
 * starts two upstreams as child processes, one for the external API and one for the database, so
 * their counters tell the two apart: how many database connections and transactions ran at once,
 * how many API calls ran at once. The variant runs in-process on its own loop thread. Properties
 * are counters (peaks against the pool size, transactions against answers), orders of answers,
 * and times checked against the limits with wide margins, so a right answer passes on a busy
 * 2-core machine.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

/* What a right answer leaves behind once every order is answered. */
static const char *const zero_fields[] = {"orders_inflight", "pool_checked_out", "pool_waiting",
                                          NULL};

typedef struct env {
  tk_proc_t api, db;
  tk_lab_t lab;
  char order[160]; /* the lab's /order?id=o */
} env_t;

/* Starts both upstreams (with their own options, or NULL), then the lab with --upstream, --db and
 * the options in lab_args. */
static void env_start_with(env_t *e, const char *const *api_args, const char *const *db_args,
                           const char *const *lab_args) {
  const char *argv[28] = {"--upstream", NULL, "--db", NULL};
  int n = 4;
  tk_upstream_start(&e->api, api_args);
  tk_upstream_start(&e->db, db_args);
  argv[1] = e->api.url;
  argv[3] = e->db.url;
  for (int i = 0; lab_args && lab_args[i] != NULL && n < 27; i++) argv[n++] = lab_args[i];
  argv[n] = NULL;
  tk_lab_start(&e->lab, &LAB_DEF, argv);
  tk_lab_url(&e->lab, "/order?id=o", e->order, sizeof e->order);
}

static void env_start(env_t *e, const char *const *lab_args) { env_start_with(e, NULL, NULL, lab_args); }

static void env_stop(env_t *e) {
  tk_lab_stop(&e->lab, zero_fields);
  tk_upstream_stop(&e->api);
  tk_upstream_stop(&e->db);
}

static void order(env_t *e, const char *query, long timeout_ms, tk_resp_t *r) {
  char path[256], url[320];
  snprintf(path, sizeof path, "/order?%s", query);
  tk_get(tk_lab_url(&e->lab, path, url, sizeof url), timeout_ms, r);
}

/* One order: the API, then the transaction, both bodies in the answer. */
Test(lab09, order_succeeds, .timeout = 30) {
  static tk_resp_t r;
  env_t e;
  env_start(&e, (const char *[]){"--api-ms", "200", "--db-ms", "100", NULL});
  order(&e, "id=ord-1", 5000, &r);
  double api_calls = tk_upstream_stat(&e.api, "requests_total");
  double db_calls = tk_upstream_stat(&e.db, "requests_total");
  cr_assert(r.status == 200 && strstr(r.body, "\"id\":\"ord-1\"") &&
                strstr(r.body, "\"api\":{\"path\":\"/api/check\"") &&
                strstr(r.body, "\"db\":{\"path\":\"/db/tx\""),
            "GET /order?id=ord-1 answered %d %s; want 200 {\"id\":\"ord-1\",\"api\":{...},"
            "\"db\":{...}} with the API's and the transaction's bodies", r.status, r.body);
  cr_assert(api_calls == 1 && db_calls == 1 && r.total_ms >= 0.95 * 300,
            "the API saw %.0f calls and the database %.0f transactions, and the order took %.0f "
            "ms: want one of each, one after the other (200 + 100 ms)", api_calls, db_calls,
            r.total_ms);
  env_stop(&e);
}

/* Many orders at once, a pool of 2: the slow API call must not hold a session, so the API sees
 * far more than 2 calls at once, and the whole burst takes about API + N/pool x DB. */
Test(lab09, session_not_held_across_api, .timeout = 30) {
  enum { N = 20 };
  static tk_resp_t r[N];
  env_t e;
  env_start(&e, (const char *[]){"--pool", "2", "--api-ms", "400", "--db-ms", "20",
                                 "--acquire-timeout-ms", "8000", NULL});
  int answered = tk_get_many(e.order, N, 10000, r);
  double api_peak = tk_upstream_stat(&e.api, "inflight_peak");
  int ok = 0;
  double worst = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status == 200) ok++;
    if (r[i].total_ms > worst) worst = r[i].total_ms;
  }
  cr_assert(answered == N && ok == N, "%d orders at once: %d answered, %d with 200", N, answered,
            ok);
  cr_assert(api_peak > 2 * 2,
            "with a pool of 2 sessions, the external API had at most %.0f calls in flight for %d "
            "simultaneous orders (the slowest took %.0f ms): the API is called while holding a "
            "session, so the pool is busy for DB + API per order. Call the API first, acquire "
            "the session only for the transaction", api_peak, N, worst);
  /* Held across the API: N/pool x (API + DB) = 4200 ms; right: API + N/pool x DB = 600 ms. */
  cr_assert(worst < 0.6 * N / 2 * (400 + 20),
            "the last of %d orders answered after %.0f ms; with sessions held only for the "
            "20 ms transaction it takes about 400 + %d/2 x 20 = %d ms", N, worst, N,
            400 + N / 2 * 20);
  env_stop(&e);
}

/* Above the pitfall's limit, a steady open-loop stream: pool 2, API 200 ms, DB 10 ms. Holding
 * the session across the API caps throughput at 2 / 210 ms = 9.5 orders/s; holding it for the
 * transaction only, at 2 / 10 ms = 200/s. 30 orders/s must all be served at about API + DB. */
Test(lab09, throughput_above_hold_limit, .timeout = 60) {
  enum { N = 60 };
  static tk_resp_t r[N];
  double lat[N];
  env_t e;
  env_start(&e, (const char *[]){"--pool", "2", "--api-ms", "200", "--db-ms", "10",
                                 "--acquire-timeout-ms", "10000", NULL});
  tk_stream(e.order, NULL, N, 30.0, 5000, r);
  double waiting_peak = tk_lab_stat(&e.lab, "pool_waiting_peak");
  int ok = 0;
  double last_end = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status == 200) ok++;
    lat[i] = r[i].status == 200 ? r[i].total_ms : 1e9;
    if (r[i].end_ms > last_end) last_end = r[i].end_ms;
  }
  double p90 = tk_percentile(lat, N, 90);
  double span_s = (last_end - r[0].start_ms) / 1000;
  cr_assert(ok == N && p90 < 1000,
            "%d orders at 30/s (pool 2, API 200 ms, transaction 10 ms): %d answered 200 within "
            "5 s, p90 %.0f ms, the last after %.1f s, up to %.0f orders waited for a session. "
            "The pool can serve 2 / 10 ms = 200/s if a session is held for the transaction only, "
            "9.5/s if it is held across the API call: the queue grows and latency with it",
            N, ok, p90, span_s, waiting_peak);
  env_stop(&e);
}

/* Exclusive and bounded on both sides: at most pool transactions and connections at once, the
 * connections reused, and the whole pool used when orders wait. */
Test(lab09, pool_never_exceeds_size, .timeout = 30) {
  enum { N = 30 };
  static tk_resp_t r[N];
  env_t e;
  env_start(&e, (const char *[]){"--pool", "3", "--api-ms", "0", "--db-ms", "50",
                                 "--acquire-timeout-ms", "8000", NULL});
  int answered = tk_get_many(e.order, N, 10000, r);
  /* First: the test's own /stats read opens a connection too (it counts itself: 1). */
  double conns = tk_upstream_stat(&e.db, "connections_accepted") - 1;
  double tx_peak = tk_upstream_stat(&e.db, "inflight_peak");
  double tx = tk_upstream_stat(&e.db, "requests_total");
  double out_peak = tk_lab_stat(&e.lab, "pool_checked_out_peak");
  int ok = 0;
  for (int i = 0; i < N; i++) ok += r[i].status == 200;
  cr_assert(answered == N && ok == N && tx == N, "%d orders at once: %d answered, %d with 200, "
            "%.0f transactions", N, answered, ok, tx);
  cr_assert(tx_peak <= 3,
            "the database had %.0f transactions in flight at once with --pool 3: a session is "
            "exclusive, so at most pool transactions run. A bigger pool only moves the queue "
            "into the database; a session given back before its transaction has ended lets "
            "another one start on top of it", tx_peak);
  cr_assert(tx_peak == 3 && out_peak == 3,
            "with %d orders waiting, the database had at most %.0f transactions at once (the lab "
            "says %.0f sessions were out): the whole pool of 3 must be used", N, tx_peak,
            out_peak);
  cr_assert(conns <= 3,
            "the database accepted %.0f connections for %d transactions with --pool 3: the "
            "sessions are pooled keep-alive connections, reused", conns, N);
  env_stop(&e);
}

/* A wait for a session ends at the acquire timeout: 503 with Retry-After, no earlier, and the
 * refused order leaves the queue for good (no transaction is ever run for it). */
Test(lab09, acquire_timeout_503, .timeout = 30) {
  enum { N = 4 };
  static tk_resp_t r[N];
  env_t e;
  env_start(&e, (const char *[]){"--pool", "1", "--api-ms", "0", "--db-ms", "1500",
                                 "--acquire-timeout-ms", "200", "--retry-after-s", "2", NULL});
  tk_stream_t *s = tk_stream_start(e.order, NULL, N, 1000.0, 5000, r);
  cr_assert(s != NULL, "could not start the test's stream");
  /* After the refusals (200 ms) and well before the session frees (1500 ms). */
  usleep(800 * 1000);
  double waiting = tk_lab_stat(&e.lab, "pool_waiting");
  tk_stream_wait(s);
  usleep(200 * 1000);
  double tx = tk_upstream_stat(&e.db, "requests_total");
  char stats[160];
  tk_lab_url(&e.lab, "/debug/stats", stats, sizeof stats);
  double timeouts = tk_stat(stats, "pool_timeouts"), wait_max = tk_stat(stats, "pool_wait_ms_max");
  double total = tk_stat(stats, "orders_total"), n_ok = tk_stat(stats, "orders_ok");
  double refused = tk_stat(stats, "orders_refused"), failed = tk_stat(stats, "orders_failed");
  int n200 = 0, n503 = 0, early = 0, late = 0, no_retry = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status == 200) n200++;
    if (r[i].status != 503) continue;
    n503++;
    if (r[i].total_ms < 180) early++;
    if (r[i].total_ms > 1000) late++;
    if (strcmp(r[i].retry_after, "2") != 0 || !strstr(r[i].body, "\"error\":\"pool exhausted\""))
      no_retry++;
  }
  cr_assert(n200 == 1 && n503 == N - 1,
            "pool 1, a 1500 ms transaction, %d orders at once, acquire timeout 200 ms: %d "
            "answered 200 and %d 503 (want 1 and %d). An order must not wait for a session "
            "forever: at the acquire timeout it answers 503", N, n200, n503, N - 1);
  cr_assert(early == 0 && late == 0,
            "of the 503s, %d came before 180 ms and %d after 1000 ms: want each at the 200 ms "
            "acquire timeout (not at once, and not when the session frees at 1500 ms)", early,
            late);
  cr_assert_eq(no_retry, 0,
               "%d of the 503s lacked Retry-After: 2 (--retry-after-s) or the body "
               "{\"error\":\"pool exhausted\",...}: a client needs to know when to come back",
               no_retry);
  cr_assert(waiting == 0 && tx == 1,
            "after the refusals the pool still counted %.0f waiting orders, and the database "
            "ran %.0f transactions for 1 order answered 200: a refused order must leave the "
            "queue, and never be handed a session later", waiting, tx);
  cr_assert(timeouts == N - 1 && wait_max <= 200 + 100,
            "/debug/stats: pool_timeouts %.0f (want %d), pool_wait_ms_max %.0f (want no more "
            "than the 200 ms acquire timeout: only waits that ended with a session count)",
            timeouts, N - 1, wait_max);
  cr_assert(total == N && n_ok == 1 && refused == N - 1 && failed == 0,
            "/debug/stats after 1 order served and %d refused at the acquire timeout: "
            "orders_total %.0f, orders_ok %.0f, orders_refused %.0f, orders_failed %.0f; want %d, "
            "1, %d, 0 (a 503 is a refusal, not a failure)", N - 1, total, n_ok, refused, failed,
            N, N - 1);
  env_stop(&e);
}

/* Orders keep arriving while the pool is busy: each waiter's own limit still holds. One timer
 * restarted at every new waiter would refuse nobody until the arrivals stop. */
Test(lab09, no_wait_past_the_timeout, .timeout = 30) {
  enum { N = 16 };
  static tk_resp_t r[N];
  env_t e;
  env_start(&e, (const char *[]){"--pool", "1", "--api-ms", "0", "--db-ms", "3500",
                                 "--acquire-timeout-ms", "300", NULL});
  /* An order every 100 ms for 1.5 s: all but the first wait, and all of those are refused. */
  tk_stream(e.order, NULL, N, 10.0, 8000, r);
  int n200 = 0, n503 = 0, early = 0, late = 0;
  double worst = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status == 200) n200++;
    if (r[i].status != 503) continue;
    n503++;
    if (r[i].total_ms < 270) early++;
    if (r[i].total_ms > 300 + 700) late++;
    if (r[i].total_ms > worst) worst = r[i].total_ms;
  }
  cr_assert(n200 == 1 && n503 == N - 1,
            "pool 1, a 3500 ms transaction, an order every 100 ms, acquire timeout 300 ms: %d "
            "answered 200 and %d 503 (want 1 and %d)", n200, n503, N - 1);
  cr_assert(early == 0 && late == 0,
            "of the 503s, %d came before 270 ms and %d after 1000 ms (the slowest after %.0f "
            "ms): each waiter must be refused at its own 300 ms limit while new ones keep "
            "arriving. A wait timer restarted for every new waiter pushes the oldest one's "
            "limit back", early, late, worst);
  env_stop(&e);
}

/* Waiters get the session in arrival order. */
Test(lab09, waiters_served_in_order, .timeout = 30) {
  enum { N = 10 };
  static tk_resp_t r[N];
  env_t e;
  env_start(&e, (const char *[]){"--pool", "1", "--api-ms", "0", "--db-ms", "150",
                                 "--acquire-timeout-ms", "10000", NULL});
  tk_stream(e.order, NULL, N, 12.0, 8000, r);
  int ok = 0, inversions = 0;
  char order_seen[128] = "";
  for (int i = 0; i < N; i++) {
    ok += r[i].status == 200;
    for (int j = i + 1; j < N; j++) inversions += r[i].end_ms > r[j].end_ms;
  }
  /* The answer order, as arrival numbers. */
  for (int k = 0; k < N; k++) {
    int best = -1;
    for (int i = 0; i < N; i++) {
      int before = 0;
      for (int j = 0; j < N; j++) before += r[j].end_ms < r[i].end_ms;
      if (before == k) best = i;
    }
    size_t len = strlen(order_seen);
    snprintf(order_seen + len, sizeof order_seen - len, "%s%d", k ? " " : "", best);
  }
  cr_assert_eq(ok, N, "only %d of %d orders answered 200", ok, N);
  cr_assert(inversions <= 2,
            "pool 1, a 150 ms transaction, an order every 83 ms: they were answered in the order "
            "%s (%d pairs out of order). Waiters must be served first come, first served: a "
            "LIFO starves the oldest", order_seen, inversions);
  env_stop(&e);
}

/* A failed call is a fast 502 naming it, and gives its session back. */
Test(lab09, failure_releases_the_session, .timeout = 30) {
  static tk_resp_t r[3], ra;
  env_t e;
  char down[64], upstream[64];
  /* The database is down: a port where nothing listens any more. */
  tk_upstream_start(&e.db, NULL);
  snprintf(down, sizeof down, "%s", e.db.url);
  tk_upstream_stop(&e.db);
  tk_upstream_start(&e.api, NULL);
  snprintf(upstream, sizeof upstream, "%s", e.api.url);
  tk_lab_start(&e.lab, &LAB_DEF, (const char *[]){"--upstream", upstream, "--db", down, "--pool",
                                                  "1", "--api-ms", "5", "--acquire-timeout-ms",
                                                  "300", NULL});
  for (int i = 0; i < 3; i++) order(&e, "id=a", 5000, &r[i]);
  double out = tk_lab_stat(&e.lab, "pool_checked_out");
  double failed = tk_lab_stat(&e.lab, "orders_failed"), refused = tk_lab_stat(&e.lab, "orders_refused");
  tk_lab_stop(&e.lab, zero_fields);
  tk_upstream_stop(&e.api);
  for (int i = 0; i < 3; i++)
    cr_assert(r[i].status == 502 && strstr(r[i].body, "\"call\":\"db\"") && r[i].total_ms < 2000,
              "order %d of 3 with the database down (nothing listens at %s), pool 1: answered "
              "%d %s after %.0f ms; want a fast 502 {\"error\":\"upstream\",\"call\":\"db\","
              "\"status\":0}. %s", i + 1, down, r[i].status, r[i].body, r[i].total_ms,
              r[i].status == 503 ? "A 503 means the session of a failed transaction was never "
              "given back" : "");
  cr_assert_eq(out, 0, "after 3 failed transactions %.0f sessions are still checked out", out);
  cr_assert(failed == 3 && refused == 0,
            "after 3 orders answered 502: orders_failed %.0f, orders_refused %.0f; want 3, 0",
            failed, refused);
  /* The API fails: 502 naming it, and no transaction. */
  env_start(&e, (const char *[]){"--api-ms", "5", NULL});
  tk_upstream_stop(&e.api);
  order(&e, "id=a", 5000, &ra);
  double tx = tk_upstream_stat(&e.db, "requests_total");
  cr_assert(ra.status == 502 && strstr(ra.body, "\"call\":\"api\"") && tx == 0,
            "with the API down the order answered %d %s and the database ran %.0f "
            "transactions; want 502 naming \"call\":\"api\" and no transaction", ra.status,
            ra.body, tx);
  env_stop(&e);
}

/* An answer that is not 2xx is a failure too: 502 with the upstream's status, the session back. */
Test(lab09, non_2xx_is_502, .timeout = 30) {
  static tk_resp_t r[3], ra;
  env_t e;
  env_start_with(&e, NULL, (const char *[]){"--status", "500", NULL},
                 (const char *[]){"--pool", "1", "--api-ms", "5", "--db-ms", "5",
                                  "--acquire-timeout-ms", "300", NULL});
  for (int i = 0; i < 3; i++) order(&e, "id=a", 5000, &r[i]);
  double out = tk_lab_stat(&e.lab, "pool_checked_out");
  env_stop(&e);
  for (int i = 0; i < 3; i++)
    cr_assert(r[i].status == 502 && strstr(r[i].body, "\"call\":\"db\"") &&
                  strstr(r[i].body, "\"status\":500"),
              "order %d of 3, the database answers 500, pool 1: answered %d %s; want 502 "
              "{\"error\":\"upstream\",\"call\":\"db\",\"status\":500}: a non-2xx answer is a "
              "failed transaction, not a result to pass on", i + 1, r[i].status, r[i].body);
  cr_assert_eq(out, 0, "after 3 transactions answered 500, %.0f sessions are still checked out",
               out);
  /* The API answers 404: 502 naming it, and no transaction. */
  env_start_with(&e, (const char *[]){"--status", "404", NULL}, NULL,
                 (const char *[]){"--api-ms", "5", NULL});
  order(&e, "id=a", 5000, &ra);
  double tx = tk_upstream_stat(&e.db, "requests_total");
  env_stop(&e);
  cr_assert(ra.status == 502 && strstr(ra.body, "\"call\":\"api\"") &&
                strstr(ra.body, "\"status\":404") && tx == 0,
            "the API answers 404: the order answered %d %s and the database ran %.0f "
            "transactions; want 502 {\"error\":\"upstream\",\"call\":\"api\",\"status\":404} "
            "and no transaction", ra.status, ra.body, tx);
}

/* Each call has a time limit: a transaction that never answers is a 502 (status 0) at
 * --call-timeout-ms, and gives its session back for the next order. */
Test(lab09, call_timeout_502, .timeout = 30) {
  static tk_resp_t r[2], ra;
  env_t e;
  env_start_with(&e, NULL, (const char *[]){"--hang-rate", "1", NULL},
                 (const char *[]){"--pool", "1", "--api-ms", "5", "--call-timeout-ms", "400",
                                  "--acquire-timeout-ms", "5000", NULL});
  for (int i = 0; i < 2; i++) order(&e, "id=a", 3000, &r[i]);
  double out = tk_lab_stat(&e.lab, "pool_checked_out");
  for (int i = 0; i < 2; i++)
    cr_assert(r[i].status == 502 && strstr(r[i].body, "\"call\":\"db\"") &&
                  strstr(r[i].body, "\"status\":0") && r[i].total_ms >= 0.9 * 400 &&
                  r[i].total_ms < 400 + 2000,
              "order %d of 2, the database never answers, --call-timeout-ms 400, pool 1: "
              "answered %d %s after %.0f ms; want 502 {\"error\":\"upstream\",\"call\":\"db\","
              "\"status\":0} at about 400 ms: a call without a time limit holds its session for "
              "as long as the database hangs", i + 1, r[i].status, r[i].body, r[i].total_ms);
  cr_assert_eq(out, 0, "after 2 timed-out transactions %.0f sessions are still checked out", out);
  env_stop(&e);
  /* The API never answers: 502 naming it at the limit, and no transaction. */
  env_start_with(&e, (const char *[]){"--hang-rate", "1", NULL}, NULL,
                 (const char *[]){"--call-timeout-ms", "400", NULL});
  order(&e, "id=a", 3000, &ra);
  double tx = tk_upstream_stat(&e.db, "requests_total");
  cr_assert(ra.status == 502 && strstr(ra.body, "\"call\":\"api\"") &&
                strstr(ra.body, "\"status\":0") && ra.total_ms >= 0.9 * 400 &&
                ra.total_ms < 400 + 2000 && tx == 0,
            "the API never answers, --call-timeout-ms 400: answered %d %s after %.0f ms, and "
            "the database ran %.0f transactions; want 502 naming \"call\":\"api\" with status 0 "
            "at about 400 ms, and no transaction", ra.status, ra.body, ra.total_ms, tx);
  env_stop(&e);
}

/* Missing or malformed parameters: 400 naming the parameter, nothing sent anywhere. */
Test(lab09, bad_parameters_400, .timeout = 30) {
  static const char *const cases[][2] = {
      {"api_ms=5", "id"},         {"id=a%20b", "id"},          {"id=", "id"},
      {"id=a&api_ms=x", "api_ms"}, {"id=a&db_ms=-3", "db_ms"}, {"id=a&db_ms=99999999", "db_ms"},
  };
  enum { N = sizeof cases / sizeof cases[0] };
  static tk_resp_t r[N];
  env_t e;
  env_start(&e, NULL);
  for (int i = 0; i < (int)N; i++) order(&e, cases[i][0], 3000, &r[i]);
  double calls = tk_upstream_stat(&e.api, "requests_total") + tk_upstream_stat(&e.db, "requests_total");
  for (int i = 0; i < (int)N; i++) {
    char want[64];
    snprintf(want, sizeof want, "\"param\":\"%s\"", cases[i][1]);
    cr_assert(r[i].status == 400 && strstr(r[i].body, want),
              "GET /order?%s answered %d %s; want 400 {\"error\":\"bad parameter\",%s}",
              cases[i][0], r[i].status, r[i].body, want);
  }
  cr_assert_eq(calls, 0, "bad requests made %.0f upstream calls, want 0", calls);
  env_stop(&e);
}

/* /debug/stats shows the pool while it is busy and after. */
Test(lab09, pool_stats, .timeout = 30) {
  enum { N = 5 };
  static tk_resp_t r[N];
  env_t e;
  env_start(&e, (const char *[]){"--pool", "2", "--api-ms", "0", "--db-ms", "600",
                                 "--acquire-timeout-ms", "5000", NULL});
  tk_stream_t *s = tk_stream_start(e.order, NULL, N, 1000.0, 8000, r);
  cr_assert(s != NULL, "could not start the test's stream");
  usleep(300 * 1000);
  double size = tk_lab_stat(&e.lab, "pool_size");
  double out = tk_lab_stat(&e.lab, "pool_checked_out");
  double waiting = tk_lab_stat(&e.lab, "pool_waiting");
  tk_stream_wait(s);
  double acquired = tk_lab_stat(&e.lab, "pool_acquired");
  double timeouts = tk_lab_stat(&e.lab, "pool_timeouts");
  double out_peak = tk_lab_stat(&e.lab, "pool_checked_out_peak");
  double waiting_peak = tk_lab_stat(&e.lab, "pool_waiting_peak");
  /* Then M orders one after another: each finds a free session, a wait of 0 that counts. */
  enum { M = 6 };
  static tk_resp_t rs[M];
  for (int i = 0; i < M; i++) order(&e, "id=s&db_ms=1", 5000, &rs[i]);
  double acquired_all = tk_lab_stat(&e.lab, "pool_acquired");
  double p50 = tk_lab_stat(&e.lab, "pool_wait_ms_p50");
  double p99 = tk_lab_stat(&e.lab, "pool_wait_ms_p99");
  double max = tk_lab_stat(&e.lab, "pool_wait_ms_max");
  int ok = 0;
  for (int i = 0; i < N; i++) ok += r[i].status == 200;
  for (int i = 0; i < M; i++) ok += rs[i].status == 200;
  cr_assert_eq(ok, N + M, "only %d of %d orders answered 200", ok, N + M);
  cr_assert(size == 2 && out == 2 && waiting == 3,
            "300 ms into 5 orders on a pool of 2 (600 ms transactions), /debug/stats said "
            "pool_size %.0f, pool_checked_out %.0f, pool_waiting %.0f; want 2, 2, 3", size, out,
            waiting);
  cr_assert(acquired == N && timeouts == 0 && out_peak == 2 && waiting_peak == 3,
            "after the 5 orders: pool_acquired %.0f (want 5), pool_timeouts %.0f (0), "
            "pool_checked_out_peak %.0f (2), pool_waiting_peak %.0f (3)", acquired, timeouts,
            out_peak, waiting_peak);
  /* Waits: eight of 0 ms (two in the burst, then the M one after another), two ~600 ms, one
   * ~1200 ms. */
  cr_assert(acquired_all == N + M && p50 <= 50 && p99 >= 1000 && p99 <= max + 1 && max <= 2500,
            "after waits of about 0, 0, 600, 600, 1200 ms and %d of 0 ms: pool_acquired %.0f "
            "(want %d), pool_wait_ms_p50 %.0f, p99 %.0f, max %.0f ms (want p50 0, p99 and max "
            "about 1200): every acquisition counts, those that did not wait too", M,
            acquired_all, N + M, p50, p99, max);
  env_stop(&e);
}

/* Limits below 1 are not "no limit": the options are checked. */
Test(lab09, rejects_bad_options, .timeout = 30) {
  const char *const bad[][2] = {{"--pool", "0"}, {"--acquire-timeout-ms", "0"},
                                {"--retry-after-s", "0"}, {"--call-timeout-ms", "0"}};
  for (int i = 0; i < 4; i++) {
    labrun_t *run = NULL;
    int rc = labrun_start(&run, &LAB_DEF, (const char *[]){bad[i][0], bad[i][1], NULL});
    if (rc == 0) labrun_stop(run, 5000, NULL);
    cr_assert_neq(rc, 0, "the lab started with %s %s; lab_create must refuse it (UV_EINVAL)",
                  bad[i][0], bad[i][1]);
  }
}
