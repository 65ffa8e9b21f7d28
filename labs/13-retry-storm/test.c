/* Lab 13 suite: are retries worth making, spread out, bounded and paid for by a budget?
 *
 * Built once per variant (build/test/lab13-pitfall, -solution, -exercise, -wrong-*). Each test
 * starts the upstream as a child process (always failing with --status, failing every other
 * request with --fail-rate, rate limited, hanging, or in an outage) and the variant in-process on
 * its own loop thread. Properties are counters (attempts the upstream saw per request, the
 * attempts each answer reports, why it gave up), spreads of answer times against the backoff's
 * range with wide margins, and time checked against the deadline from both sides, so a right
 * answer passes on a busy 2-core machine.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

/* What a right answer leaves behind once every request is answered. */
static const char *const zero_fields[] = {"fetch_inflight", "waiting", NULL};

typedef struct env {
  tk_proc_t up;
  tk_lab_t lab;
} env_t;

/* Starts the upstream with up_args, then the lab with --upstream and lab_args. */
static void env_start(env_t *e, const char *const *up_args, const char *const *lab_args) {
  const char *argv[32] = {"--upstream", NULL};
  int n = 2;
  tk_upstream_start(&e->up, up_args);
  argv[1] = e->up.url;
  for (int i = 0; lab_args && lab_args[i] != NULL && n < 31; i++) argv[n++] = lab_args[i];
  argv[n] = NULL;
  tk_lab_start(&e->lab, &LAB_DEF, argv);
}

static void env_stop(env_t *e) {
  tk_lab_stop(&e->lab, zero_fields);
  tk_upstream_stop(&e->up);
}

static void fetch(env_t *e, const char *query, long timeout_ms, tk_resp_t *r) {
  char path[256], url[320];
  snprintf(path, sizeof path, "/fetch?%s", query);
  tk_get(tk_lab_url(&e->lab, path, url, sizeof url), timeout_ms, r);
}

/* The number after "field": in a JSON body, or -1. */
static long body_num(const tk_resp_t *r, const char *field) {
  double v = tk_json_number(r->body, field);
  return isnan(v) ? -1 : (long)v;
}

static int gave_up(const tk_resp_t *r, const char *why) {
  char want[64];
  snprintf(want, sizeof want, "\"gave_up\":\"%s\"", why);
  return strstr(r->body, want) != NULL;
}

/* Retry options that take the budget out of the way (and a long deadline) for the tests of one
 * request's retries. */
#define NO_BUDGET "--budget-pct", "100", "--budget-min", "1000", "--deadline-ms", "10000"

/* A healthy upstream: one attempt, its body relayed. */
Test(lab13, first_attempt_relayed, .timeout = 30) {
  static tk_resp_t r;
  env_t e;
  env_start(&e, NULL, NULL);
  fetch(&e, "id=item-1", 5000, &r);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  cr_assert(r.status == 200 && strstr(r.body, "\"id\":\"item-1\"") &&
                strstr(r.body, "\"item\":{\"path\":\"/item\"") && body_num(&r, "attempts") == 1,
            "GET /fetch?id=item-1 answered %d %s; want 200 {\"id\":\"item-1\",\"attempts\":1,"
            "\"item\":{\"path\":\"/item\",...}}", r.status, r.body);
  cr_assert_eq(calls, 1, "the upstream saw %.0f calls for one request that succeeded, want 1",
               calls);
  env_stop(&e);
}

/* Every second upstream call fails with 500: each request after the first needs one retry, and
 * gets it. */
Test(lab13, retries_transient_failures, .timeout = 30) {
  static tk_resp_t r[10];
  env_t e;
  env_start(&e, (const char *[]){"--fail-rate", "0.5", NULL},
            (const char *[]){NO_BUDGET, "--backoff-base-ms", "20", NULL});
  for (int i = 0; i < 10; i++) fetch(&e, "id=a", 5000, &r[i]);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  for (int i = 0; i < 10; i++)
    cr_assert(r[i].status == 200 && body_num(&r[i], "attempts") == (i == 0 ? 1 : 2),
              "request %d of 10 (the upstream fails every second call with 500) answered %d %s; "
              "want 200 with \"attempts\":%d: a 500 is worth one more try", i + 1, r[i].status,
              r[i].body, i == 0 ? 1 : 2);
  cr_assert_eq(calls, 19, "the upstream saw %.0f calls for 10 requests, want 19 (one retry each "
               "but the first)", calls);
  env_stop(&e);
}

/* A 404 (or any 4xx but 429) means the request is wrong: one attempt, no retry. */
Test(lab13, no_retry_on_4xx, .timeout = 30) {
  static tk_resp_t r404, r400;
  env_t e;
  env_start(&e, (const char *[]){"--status", "404", NULL}, (const char *[]){NO_BUDGET, NULL});
  fetch(&e, "id=missing", 5000, &r404);
  double calls404 = tk_upstream_stat(&e.up, "requests_total");
  env_stop(&e);
  env_start(&e, (const char *[]){"--status", "400", NULL}, (const char *[]){NO_BUDGET, NULL});
  fetch(&e, "id=bad", 5000, &r400);
  double calls400 = tk_upstream_stat(&e.up, "requests_total");
  cr_assert(r404.status == 502 && body_num(&r404, "status") == 404 &&
                body_num(&r404, "attempts") == 1 && gave_up(&r404, "not_retryable"),
            "the upstream answers 404: got %d %s; want 502 {\"error\":\"upstream\",\"status\":404,"
            "\"attempts\":1,\"gave_up\":\"not_retryable\"}", r404.status, r404.body);
  cr_assert(calls404 == 1 && calls400 == 1 && r400.status == 502 && gave_up(&r400, "not_retryable"),
            "the upstream saw %.0f calls for a request it answered 404 and %.0f for one it "
            "answered 400 (%d %s); want 1 each: asking again cannot fix a wrong request, it only "
            "multiplies the load", calls404, calls400, r400.status, r400.body);
  env_stop(&e);
}

/* An upstream that is always down: exactly max_retries + 1 attempts, then 502 max_retries. */
Test(lab13, gives_up_after_max_retries, .timeout = 30) {
  static tk_resp_t r;
  env_t e;
  env_start(&e, (const char *[]){"--status", "503", NULL},
            (const char *[]){NO_BUDGET, "--max-retries", "3", "--backoff-base-ms", "10",
                             "--backoff-max-ms", "20", NULL});
  fetch(&e, "id=a", 5000, &r);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  cr_assert(r.status == 502 && body_num(&r, "status") == 503 && body_num(&r, "attempts") == 4 &&
                gave_up(&r, "max_retries"),
            "the upstream answers 503 to everything, --max-retries 3: got %d %s; want 502 "
            "{\"status\":503,\"attempts\":4,\"gave_up\":\"max_retries\"}", r.status, r.body);
  cr_assert_eq(calls, 4, "the upstream saw %.0f calls, want 1 + 3 retries", calls);
  env_stop(&e);
}

/* The lesson: while the upstream is down, a steady stream of requests must not multiply into a
 * storm. With the default budget (10% + 5 a second) the upstream sees about 1.15 calls per
 * request; immediate retries make it 6. Some retries are still made (the budget is not zero). */
Test(lab13, retry_budget_caps_amplification, .timeout = 60) {
  enum { N = 200 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, (const char *[]){"--status", "503", NULL},
            (const char *[]){"--backoff-base-ms", "10", "--backoff-max-ms", "100", NULL});
  tk_stream(tk_lab_url(&e.lab, "/fetch?id=a", url, sizeof url), NULL, N, 100.0, 5000, r);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double denied = tk_lab_stat(&e.lab, "retries_denied");
  double attempts = tk_lab_stat(&e.lab, "attempts_total");
  double retries = tk_lab_stat(&e.lab, "retries_total");
  double fetches = tk_lab_stat(&e.lab, "fetch_total");
  int n502 = 0, by_budget = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status == 502) n502++;
    if (gave_up(&r[i], "budget")) by_budget++;
  }
  cr_assert(n502 == N, "%d of %d requests answered 502 while the upstream answered 503 to "
            "everything; want all", n502, N);
  cr_assert(calls / N <= 1.3,
            "%d requests at 100/s to an upstream that is down made %.0f upstream calls: "
            "amplification %.2f x, want <= 1.3 (budget: retries in the last second <= 5 + 10%% of "
            "the requests). Without a budget every request retries max_retries times, and the "
            "upstream gets %.0f x the load exactly while it is down", N, calls, calls / N,
            1.0 + 5);
  cr_assert(calls / N >= 1.04 && by_budget > 0 && denied == by_budget,
            "amplification %.2f x, %d answers gave up for the budget, retries_denied %.0f: the "
            "budget allows 5 + 10%% retries a second, so some retries are still made (>= 1.04 x), "
            "the rest refused and counted", calls / N, by_budget, denied);
  cr_assert(fetches == N && attempts == calls && retries == calls - N,
            "/debug/stats says fetch_total %.0f, attempts_total %.0f, retries_total %.0f; the "
            "upstream saw %.0f calls for %d requests, so want %d, %.0f and %.0f: a retry is "
            "counted when it is made, not when it is considered (the budget refused %.0f)",
            fetches, attempts, retries, calls, N, N, calls, calls - N, denied);
  env_stop(&e);
}

/* The budget is a share of the requests received, not of the attempts made. With --budget-pct
 * 100 and --budget-min 0 a dead upstream gets at most about one retry per request (2 x), though
 * each request would make 5 (6 x): a budget that counts retries among the requests lets retries
 * pay for more retries, and the cap climbs with the storm it should stop. */
Test(lab13, budget_counts_requests_only, .timeout = 60) {
  enum { N = 150 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, (const char *[]){"--status", "503", NULL},
            (const char *[]){"--budget-pct", "100", "--budget-min", "0", "--backoff-base-ms",
                             "10", "--backoff-max-ms", "50", NULL});
  tk_stream(tk_lab_url(&e.lab, "/fetch?id=a", url, sizeof url), NULL, N, 100.0, 5000, r);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  int n502 = 0, by_budget = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status == 502) n502++;
    if (gave_up(&r[i], "budget")) by_budget++;
  }
  cr_assert(n502 == N, "%d of %d requests answered 502 while the upstream answered 503 to "
            "everything; want all", n502, N);
  cr_assert(calls / N <= 2.6 && calls / N >= 1.5 && by_budget > 0,
            "%d requests at 100/s to an upstream that is down, --budget-pct 100 --budget-min 0: "
            "%.0f upstream calls (%.2f x), %d answers gave up for the budget; want 1.5..2.6 x "
            "and some refused: retries in the last second <= the requests received in it, so "
            "about one retry per request. Above: retries are counted as requests (each earns "
            "more budget); below: the budget refuses what it allows", N, calls, calls / N,
            by_budget);
  env_stop(&e);
}

/* A 429 says when to come back: the retry waits at least Retry-After, 2 s here (not the 1 s a
 * 429 without one falls back to), and not much longer. */
Test(lab13, honours_retry_after, .timeout = 30) {
  static tk_resp_t first, limited;
  env_t e;
  env_start(&e, (const char *[]){"--rate-limit", "0.5", "--rate-burst", "1", NULL},
            (const char *[]){NO_BUDGET, "--deadline-ms", "8000", NULL});
  fetch(&e, "id=a", 10000, &first);   /* takes the only token */
  fetch(&e, "id=b", 10000, &limited); /* 429, Retry-After: 2 */
  double rate_limited = tk_upstream_stat(&e.up, "rate_limited");
  cr_assert(first.status == 200, "the first request answered %d %s, want 200", first.status,
            first.body);
  cr_assert(limited.status == 200 && body_num(&limited, "attempts") == 2 && rate_limited == 1 &&
                limited.total_ms >= 1950,
            "the upstream answered 429 with Retry-After: 2 (its bucket refills a token in 2 s): "
            "the request answered %d %s after %.0f ms and the upstream refused %.0f calls; want "
            "200 after 2 attempts, >= 2000 ms, and exactly one 429: a retry before Retry-After "
            "is refused again and spends the quota (client.h hands the header over as "
            "retry_after_ms)", limited.status, limited.body, limited.total_ms, rate_limited);
  env_stop(&e);
}

/* Requests that failed together retry spread over the backoff's range, not in lockstep:
 * 20 failures at once, one retry each after a draw in [0, 800 ms]. */
Test(lab13, retries_are_jittered, .timeout = 30) {
  enum { N = 20 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, (const char *[]){"--status", "503", NULL},
            (const char *[]){NO_BUDGET, "--max-retries", "1", "--backoff-base-ms", "800",
                             "--backoff-max-ms", "800", NULL});
  tk_stream(tk_lab_url(&e.lab, "/fetch?id=a", url, sizeof url), NULL, N, 1000.0, 5000, r);
  int early = 0, late = 0, done = 0;
  double worst = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status != 502 || body_num(&r[i], "attempts") != 2) continue;
    done++;
    if (r[i].total_ms < 400) early++;
    else late++;
    worst = fmax(worst, r[i].total_ms);
  }
  cr_assert_eq(done, N, "%d of %d requests answered 502 after 2 attempts (--max-retries 1)", done,
               N);
  cr_assert(early >= 3 && late >= 3,
            "20 requests failed at once and retried once, each after a wait drawn in [0, 800] "
            "ms: %d answered before 400 ms, %d after; want >= 3 of each. None early: every "
            "retry waits the full backoff (no jitter: they all hit the upstream at the same "
            "moment again). None late: the retries do not wait at all", early, late);
  cr_assert(worst <= 800 + 700, "the slowest answer took %.0f ms; the wait is at most 800 ms",
            worst);
  env_stop(&e);
}

/* No wait is longer than --backoff-max-ms: 5 retries, base 100 and cap 150 wait 700 ms at most
 * in all (uncapped, base x 2^n, they would wait up to 3100 ms). */
Test(lab13, backoff_is_capped, .timeout = 30) {
  enum { N = 10 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, (const char *[]){"--status", "503", NULL},
            (const char *[]){NO_BUDGET, "--max-retries", "5", "--backoff-base-ms", "100",
                             "--backoff-max-ms", "150", NULL});
  tk_stream(tk_lab_url(&e.lab, "/fetch?id=a", url, sizeof url), NULL, N, 1000.0, 10000, r);
  double worst = 0;
  int six = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status == 502 && body_num(&r[i], "attempts") == 6) six++;
    worst = fmax(worst, r[i].total_ms);
  }
  cr_assert_eq(six, N, "%d of %d requests answered 502 after 6 attempts (--max-retries 5)", six,
               N);
  cr_assert(worst <= 700 + 750,
            "the slowest of %d requests took %.0f ms to make 6 attempts; with waits of at most "
            "min(150, 100 x 2^(n-1)) ms the five waits add up to 700 ms at most. An exponential "
            "without a cap waits 1.6 s before the fifth retry alone (and minutes after ten)", N,
            worst);
  env_stop(&e);
}

/* Waiting for a retry is a timer: the loop answers /debug/stats at once meanwhile. */
Test(lab13, waiting_does_not_block, .timeout = 30) {
  enum { N = 10 };
  static tk_resp_t r[N], probe;
  char url[160], stats[160];
  env_t e;
  env_start(&e, (const char *[]){"--status", "503", NULL},
            (const char *[]){NO_BUDGET, "--max-retries", "1", "--backoff-base-ms", "1000",
                             "--backoff-max-ms", "1000", NULL});
  tk_stream_t *s = tk_stream_start(tk_lab_url(&e.lab, "/fetch?id=a", url, sizeof url), NULL, N,
                                   200.0, 8000, r);
  cr_assert(s != NULL, "could not start the test's stream");
  usleep(150 * 1000);
  double worst = 0, waiting = 0;
  tk_lab_url(&e.lab, "/debug/stats", stats, sizeof stats);
  for (int i = 0; i < 5; i++) {
    tk_get(stats, 5000, &probe);
    worst = fmax(worst, probe.status == 200 ? probe.total_ms : 1e9);
    waiting = fmax(waiting, tk_json_number(probe.body, "waiting"));
    usleep(50 * 1000);
  }
  tk_stream_wait(s);
  cr_assert(worst < 400,
            "while %d requests waited up to 1 s for their retry, GET /debug/stats took up to "
            "%.0f ms; want < 400: a wait that sleeps (usleep, sleep) stops the loop, and every "
            "other request waits behind it. Wait on a uv_timer_t", N, worst);
  cr_assert(waiting >= 1, "/debug/stats showed waiting = %.0f while %d requests waited for their "
            "retry; want the number waiting", waiting, N);
  env_stop(&e);
}

/* Every attempt hangs: the deadline ends the request, with every attempt inside it. */
Test(lab13, deadline_bounds_the_request, .timeout = 30) {
  static tk_resp_t r;
  env_t e;
  env_start(&e, (const char *[]){"--hang-rate", "1", NULL},
            (const char *[]){"--budget-pct", "100", "--budget-min", "1000", "--deadline-ms",
                             "1000", "--call-timeout-ms", "400", "--backoff-base-ms", "10",
                             "--backoff-max-ms", "20", NULL});
  fetch(&e, "id=a", 6000, &r);
  cr_assert(r.status == 502 && body_num(&r, "status") == 0 && gave_up(&r, "deadline"),
            "every attempt hangs (call timeout 400 ms, deadline 1000 ms): got %d %s; want 502 "
            "{\"status\":0,...,\"gave_up\":\"deadline\"}", r.status, r.body);
  cr_assert(r.total_ms >= 900 && r.total_ms < 1000 + 600,
            "answered after %.0f ms; want at the 1000 ms deadline: no earlier than 900 (the "
            "last attempt may use what is left) and no later than 1600 (six attempts of 400 ms "
            "each take 2.4 s: a limit per attempt is not a limit per request)", r.total_ms);
  env_stop(&e);
  /* A call timeout longer than the deadline: the first attempt gets only the deadline. */
  env_start(&e, (const char *[]){"--hang-rate", "1", NULL},
            (const char *[]){"--budget-pct", "100", "--budget-min", "1000", "--deadline-ms",
                             "800", "--call-timeout-ms", "4000", NULL});
  fetch(&e, "id=a", 8000, &r);
  cr_assert(r.status == 502 && body_num(&r, "status") == 0 && gave_up(&r, "deadline") &&
                r.total_ms >= 720 && r.total_ms < 800 + 1200,
            "every attempt hangs, call timeout 4000 ms, deadline 800 ms: got %d %s after %.0f "
            "ms; want 502 {\"status\":0,\"gave_up\":\"deadline\"} at 800 ms (720..2000): an "
            "attempt may run min(call timeout, what is left of the deadline)", r.status, r.body,
            r.total_ms);
  env_stop(&e);
}

/* An upstream that is down (nothing listens): a refused connect is retried, then 502 status 0. */
Test(lab13, unreachable_upstream, .timeout = 30) {
  static tk_resp_t r;
  tk_proc_t up;
  tk_lab_t lab;
  char down[64], url[160];
  tk_upstream_start(&up, NULL);
  snprintf(down, sizeof down, "%s", up.url);
  tk_upstream_stop(&up);
  tk_lab_start(&lab, &LAB_DEF, (const char *[]){"--upstream", down, NO_BUDGET, "--max-retries",
                                                "2", "--backoff-base-ms", "10", NULL});
  tk_get(tk_lab_url(&lab, "/fetch?id=a", url, sizeof url), 5000, &r);
  tk_lab_stop(&lab, zero_fields);
  cr_assert(r.status == 502 && body_num(&r, "status") == 0 && body_num(&r, "attempts") == 3 &&
                gave_up(&r, "max_retries") && r.total_ms < 2000,
            "with nothing listening at %s: got %d %s after %.0f ms; want a fast 502 "
            "{\"status\":0,\"attempts\":3,\"gave_up\":\"max_retries\"}", down, r.status, r.body,
            r.total_ms);
}

/* ---- an upstream that answers garbage: 200 with a body that is not JSON ---- */
typedef struct garbage {
  int fd, port, stop;
  int requests;
  pthread_t thread;
} garbage_t;

static void *garbage_main(void *arg) {
  garbage_t *g = arg;
  static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 14\r\n"
                              "Connection: close\r\n\r\n<html>oops</h>";
  while (!g->stop) {
    int c = accept(g->fd, NULL, NULL);
    if (c < 0) continue;
    char buf[2048];
    if (read(c, buf, sizeof buf) > 0 && !g->stop) {
      __atomic_add_fetch(&g->requests, 1, __ATOMIC_SEQ_CST);
      if (write(c, reply, sizeof reply - 1) < 0) perror("garbage: write");
    }
    close(c);
  }
  return NULL;
}

static void garbage_start(garbage_t *g) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  memset(g, 0, sizeof *g);
  g->fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert(g->fd >= 0 && bind(g->fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                listen(g->fd, 16) == 0 && getsockname(g->fd, (struct sockaddr *)&a, &len) == 0,
            "the test's garbage server could not listen");
  g->port = ntohs(a.sin_port);
  cr_assert(pthread_create(&g->thread, NULL, garbage_main, g) == 0, "pthread_create");
}

static void garbage_stop(garbage_t *g) {
  g->stop = 1;
  shutdown(g->fd, SHUT_RDWR);
  pthread_join(g->thread, NULL);
  close(g->fd);
}

/* A 200 whose body is not JSON is an error, retried within the limits, never relayed. */
Test(lab13, garbage_is_an_error, .timeout = 30) {
  static tk_resp_t r;
  garbage_t g;
  tk_lab_t lab;
  char up[64], url[160];
  garbage_start(&g);
  snprintf(up, sizeof up, "http://127.0.0.1:%d", g.port);
  tk_lab_start(&lab, &LAB_DEF, (const char *[]){"--upstream", up, NO_BUDGET, "--max-retries", "2",
                                                "--backoff-base-ms", "10", NULL});
  tk_get(tk_lab_url(&lab, "/fetch?id=a", url, sizeof url), 5000, &r);
  tk_lab_stop(&lab, zero_fields);
  int seen = __atomic_load_n(&g.requests, __ATOMIC_SEQ_CST);
  garbage_stop(&g);
  cr_assert(r.status == 502 && body_num(&r, "status") == 200 && body_num(&r, "attempts") == 3 &&
                gave_up(&r, "max_retries"),
            "the upstream answers 200 with \"<html>oops</h>\" (not JSON): got %d %s; want 502 "
            "{\"status\":200,\"attempts\":3,\"gave_up\":\"max_retries\"}: relaying it would hand "
            "the caller broken JSON", r.status, r.body);
  cr_assert_eq(seen, 3, "the garbage upstream saw %d requests, want 3 (1 + --max-retries 2)", seen);
}

/* A missing or malformed id: 400 naming it, nothing sent upstream. */
Test(lab13, bad_parameters_400, .timeout = 30) {
  static const char *const cases[] = {"", "id=", "id=a%20b", "id=a/b",
                                      "id=0123456789012345678901234567890123456789012345678901234567890123"};
  static tk_resp_t r[5];
  env_t e;
  env_start(&e, NULL, NULL);
  for (int i = 0; i < 5; i++) fetch(&e, cases[i], 3000, &r[i]);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  for (int i = 0; i < 5; i++)
    cr_assert(r[i].status == 400 && strstr(r[i].body, "\"param\":\"id\""),
              "GET /fetch?%s answered %d %s; want 400 {\"error\":\"bad parameter\",\"param\":\"id\"}",
              cases[i], r[i].status, r[i].body);
  cr_assert_eq(calls, 0, "bad requests made %.0f upstream calls, want 0", calls);
  env_stop(&e);
}

/* Out-of-range options are a usage error. */
Test(lab13, rejects_bad_options, .timeout = 30) {
  const char *const bad[][2] = {{"--max-retries", "-1"},     {"--max-retries", "11"},
                                {"--call-timeout-ms", "0"},  {"--deadline-ms", "0"},
                                {"--backoff-base-ms", "0"},  {"--backoff-max-ms", "10"},
                                {"--budget-pct", "101"},     {"--budget-min", "-1"}};
  for (int i = 0; i < 8; i++) {
    labrun_t *run = NULL;
    int rc = labrun_start(&run, &LAB_DEF, (const char *[]){bad[i][0], bad[i][1], NULL});
    if (rc == 0) labrun_stop(run, 5000, NULL);
    cr_assert_neq(rc, 0, "the lab started with %s %s; lab_create must refuse it (UV_EINVAL)",
                  bad[i][0], bad[i][1]);
  }
}

/* Through an outage (the upstream black-holes every call for 1 s): once it is over, requests
 * succeed again within a second; nothing is left waiting at the end. */
Test(lab13, recovers_after_outage, .timeout = 60) {
  enum { N = 300 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, (const char *[]){"--workers", "4", "--latency-ms", "20", "--outage", "500-1500",
                                 "--outage-mode", "hang", NULL},
            (const char *[]){"--call-timeout-ms", "300", "--deadline-ms", "1500", NULL});
  tk_upstream_reset(&e.up); /* the outage's clock starts now */
  tk_stream(tk_lab_url(&e.lab, "/fetch?id=a", url, sizeof url), NULL, N, 100.0, 4000, r);
  int after = 0, ok_after = 0, before = 0, ok_before = 0;
  for (int i = 0; i < N; i++) {
    double due = i * 10.0; /* ms after the stream's start, about the upstream's reset */
    if (due < 400) before++, ok_before += r[i].status == 200;
    if (due >= 2500) after++, ok_after += r[i].status == 200;
  }
  cr_assert(ok_before >= 0.9 * before, "%d of %d requests before the outage answered 200",
            ok_before, before);
  cr_assert(ok_after >= 0.8 * after,
            "%d of the %d requests sent 1 s or more after the outage ended answered 200; want "
            ">= 80%%. An upstream with capacity 200/s at 100/s offered should be healthy again: "
            "the retries of what failed during the outage are keeping its queue past the call "
            "timeout (a retry storm)", ok_after, after);
  env_stop(&e);
}
