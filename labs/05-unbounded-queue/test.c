/* Lab 05 suite: an unbounded queue versus backpressure, and delivery that loses nothing.
 *
 * Each test starts the upstream as a child process (20 ms per forward unless it says otherwise),
 * runs the lab variant in-process with 2 workers (a drain rate of about 2 / 20 ms = 100 events/s)
 * and a queue cap of 20, and drives POST /events from this thread: sequential posts where a bound
 * is counted exactly, tk_stream's open-loop streams (a constant arrival rate, each request on its
 * own connection) for overloads. Faults are real: an upstream that is stopped and started again
 * on the same port (connection refused meanwhile), one that fails a fraction of its answers, one
 * whose latency sits at the lab's forward timeout. Delivery is counted on the upstream's side by
 * event id (events_unique, events_duplicate). Everything asserted is an exact count, a bound or
 * a ratio to the measured drain rate, so a busy machine (which only slows the drain) cannot turn
 * a solution into a failure or a pitfall into a pass.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

#define QUEUE_CAP 20
#define WORKERS 2
#define DRAIN_RPS 100.0     /* WORKERS / 20 ms: the most the lab can deliver */
#define OVERLOAD_RPS 300.0  /* 3x the drain rate */

/* AddressSanitizer keeps freed memory in quarantine, so RSS says nothing about the lab there. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_MEANINGFUL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_MEANINGFUL 0
#endif
#endif
#ifndef RSS_MEANINGFUL
#define RSS_MEANINGFUL 1
#endif

static tk_proc_t up;
static tk_lab_t lab;
static char up_port[16];
static const char *const zero_fields[] = {"queue_depth", "parked", "lost", NULL};
static const char *const zero_at_stop[] = {"parked", "lost", NULL}; /* stopped while held */

static void teardown(void) { tk_upstream_stop(&up); }

TestSuite(lab05, .fini = teardown, .timeout = 40);

/* ---- fixtures ---- */

/* The upstream with args (NULL-terminated, or NULL); remembers its port for upstream_restart. */
static void upstream_start(const char *const *args) {
  tk_upstream_start(&up, args);
  snprintf(up_port, sizeof up_port, "%d", up.port);
}

/* An outage: the upstream goes away (connections are refused) ... */
static void upstream_down(void) { tk_upstream_stop(&up); }

/* ... and comes back on the same port, with fresh counters. */
static void upstream_back(void) {
  const char *args[] = {"--latency-ms", "20", "--port", up_port, NULL};
  for (int i = 0; i < 50; i++) { /* the port may take a moment to be free again */
    if (tk_spawn(&up, "upstream", args) == 0) return;
    usleep(100 * 1000);
  }
  cr_assert_fail("could not start the upstream again on port %s", up_port);
}

/* The lab, with --upstream pointing at up, mode, and more options (NULL-terminated). */
static void lab_start(const char *mode, const char *const *more) {
  char url[64];
  const char *args[32] = {"--upstream", url, "--workers", "2", "--queue-cap", "20",
                          "--mode", mode};
  int n = 8;
  snprintf(url, sizeof url, "http://127.0.0.1:%s", up_port);
  for (int i = 0; more && more[i] && n < 31; i++) args[n++] = more[i];
  args[n] = NULL;
  tk_lab_start(&lab, &LAB_DEF, args);
}

static double lab_stat(const char *field) { return tk_lab_stat(&lab, field); }

/* Several /debug/stats fields from one answer (one moment). Returns 0, or -1 when unreadable. */
static int stats_snapshot(const char *const *fields, double *out) {
  char url[128];
  tk_resp_t *r = malloc(sizeof *r);
  cr_assert(r != NULL, "out of memory");
  int rc = tk_get(tk_lab_url(&lab, "/debug/stats", url, sizeof url), 5000, r);
  for (int i = 0; fields[i]; i++) out[i] = tk_json_number(r->body, fields[i]);
  free(r);
  return rc == 0 ? 0 : -1;
}

/* Waits until the lab stat is <= want (at most within_ms); returns the last value. */
static double wait_below(const char *field, double want, double within_ms) {
  double end = tk_now_ms() + within_ms, v;
  while ((v = lab_stat(field)) > want && tk_now_ms() < end) usleep(20 * 1000);
  return v;
}

/* One POST /events?id=<id> ("" for none) with a body. */
static void post(const char *id, const char *body, long timeout_ms, tk_resp_t *r) {
  char url[256];
  if (id[0]) snprintf(url, sizeof url, "%s/events?id=%s", lab.url, id);
  else snprintf(url, sizeof url, "%s/events", lab.url);
  tk_post(url, body, timeout_ms, r);
}

static const char *events_url(char *out, size_t len) {
  snprintf(out, len, "%s/events", lab.url);
  return out;
}

typedef struct tally {
  int accepted, refused, refused_retry, refused_body, other, accepted_body;
  double last_202_ms, first_ms;
} tally_t;

/* Counts a stream's answers; a 503 counts as told when it carries Retry-After: want_retry. */
static tally_t tally(const tk_resp_t *r, int n, const char *want_retry) {
  tally_t t = {0};
  t.first_ms = n > 0 ? r[0].start_ms : 0;
  for (int i = 0; i < n; i++) {
    if (r[i].status == 202) {
      t.accepted++;
      t.accepted_body += strncmp(r[i].body, "accepted auto-", 14) == 0;
      if (r[i].end_ms > t.last_202_ms) t.last_202_ms = r[i].end_ms;
    } else if (r[i].status == 503) {
      t.refused++;
      t.refused_retry += strcmp(r[i].retry_after, want_retry) == 0;
      t.refused_body += strcmp(r[i].body, "queue full, retry later\n") == 0;
    } else {
      t.other++;
    }
  }
  return t;
}

/* The payload of every event a stream sends: 1000 bytes (under libcurl's Expect threshold). */
static char *payload(size_t n) {
  char *p = malloc(n + 1);
  cr_assert(p != NULL, "out of memory");
  memset(p, 'x', n);
  p[n] = '\0';
  return p;
}

/* ---- Q1: ids ---- */

Test(lab05, bad_id_rejected) {
  static const char bad_msg[] = "bad id: use 1-62 letters, digits, '.', '_', '-'\n";
  tk_resp_t r;
  char id62[63], id63[64], want[80];
  memset(id62, 'a', 62);
  id62[62] = '\0';
  memset(id63, 'b', 63);
  id63[63] = '\0';
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("shed", NULL);
  post("bad!id", "x", 5000, &r);
  cr_assert(r.status == 400 && strcmp(r.body, bad_msg) == 0,
            "POST /events?id=bad!id answered %d \"%s\", want 400 \"%s\"", r.status, r.body,
            bad_msg);
  post(id63, "x", 5000, &r);
  cr_assert_eq(r.status, 400, "a 63-character id answered %d, want 400 (1 to 62 characters)",
               r.status);
  post(id62, "x", 5000, &r);
  snprintf(want, sizeof want, "accepted %s\n", id62);
  cr_assert(r.status == 202 && strcmp(r.body, want) == 0,
            "a 62-character id answered %d \"%s\", want 202 \"accepted <id>\"", r.status, r.body);
  post("", "x", 5000, &r);
  cr_assert(r.status == 202 && strcmp(r.body, "accepted auto-1\n") == 0,
            "an event without ?id= answered %d \"%s\", want 202 \"accepted auto-1\"", r.status,
            r.body);
  double left = wait_below("queue_depth", 0, 3000);
  double acked = lab_stat("acked"), forwarded = lab_stat("forwarded");
  double unique = tk_upstream_stat(&up, "events_unique");
  tk_lab_stop(&lab, zero_fields);
  cr_assert(acked == 2 && forwarded == 2 && unique == 2 && left == 0,
            "two events accepted, two refused: acked %.0f, forwarded %.0f, the upstream has %.0f "
            "event ids (want 2, 2, 2): a refused event must not be queued", acked, forwarded,
            unique);
}

/* ---- Q3: both sides of the bound, counted exactly while nothing drains ---- */

Test(lab05, accepts_up_to_cap) {
  tk_resp_t r;
  int status[25];
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("shed", NULL);
  /* The upstream stops answering (SIGSTOP: its kernel still takes the connections): the first
   * forwards hang, nothing is delivered, everything stays held. */
  kill(up.pid, SIGSTOP);
  for (int i = 0; i < 25; i++) {
    char id[16];
    snprintf(id, sizeof id, "c-%d", i);
    post(id, "x", 5000, &r);
    status[i] = r.status;
  }
  double depth = lab_stat("queue_depth"), peak = lab_stat("queue_peak"), acked = lab_stat("acked");
  int first_refused = 25, n202 = 0;
  for (int i = 0; i < 25; i++) {
    n202 += status[i] == 202;
    if (status[i] != 202 && first_refused == 25) first_refused = i;
  }
  kill(up.pid, SIGCONT);
  double left = wait_below("queue_depth", 0, 8000);
  double unique = tk_upstream_stat(&up, "events_unique");
  tk_lab_stop(&lab, zero_fields);
  cr_assert(n202 == QUEUE_CAP && first_refused == QUEUE_CAP,
            "with the upstream down (nothing delivered), 25 events one after another: %d got "
            "202, the first refusal was event %d (want exactly %d accepted, then refusals): the "
            "queue holds up to --queue-cap events, not one more and not one fewer; events being "
            "forwarded or retried count too", n202, first_refused + 1, QUEUE_CAP);
  cr_assert(depth == QUEUE_CAP && peak == QUEUE_CAP && acked == QUEUE_CAP,
            "queue_depth %.0f, queue_peak %.0f, acked %.0f with %d events held (want %d each)",
            depth, peak, acked, n202, QUEUE_CAP);
  cr_assert(left == 0 && unique == QUEUE_CAP,
            "after the upstream came back, %.0f events were still held and the upstream had %.0f "
            "of the %d acknowledged", left, unique, QUEUE_CAP);
}

/* ---- Q3 under an overload: memory stays bounded ---- */

Test(lab05, bounded_queue) {
  static tk_resp_t r[360];
  char url[128];
  char *body = payload(64 * 1024);
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("shed", NULL);
  double rss0 = lab_stat("rss_kb");
  tk_stream(events_url(url, sizeof url), body, 360, OVERLOAD_RPS, 8000, r);
  double peak = lab_stat("queue_peak"), kb = lab_stat("queue_kb"), rss1 = lab_stat("rss_kb");
  free(body);
  wait_below("queue_depth", 0, 5000);
  tk_lab_stop(&lab, zero_fields);
  cr_log_info("360 events of 64 KiB at %.0f/s: queue_peak %.0f, RSS +%.1f MiB", OVERLOAD_RPS, peak,
              (rss1 - rss0) / 1024.0);
  cr_assert_leq(peak, QUEUE_CAP,
                "queue_peak %.0f > --queue-cap %d at 3x the drain rate: the queue has no bound, "
                "so it grows as long as the overload lasts", peak, QUEUE_CAP);
  cr_assert_leq(kb, QUEUE_CAP * 64.0 + 1, "queue_kb %.0f: more than %d events of 64 KiB held", kb,
                QUEUE_CAP);
  if (!RSS_MEANINGFUL) cr_log_info("RSS not checked under AddressSanitizer (quarantine)");
  else cr_assert_lt(rss1 - rss0, 12 * 1024.0,
                    "RSS grew by %.1f MiB at 3x the drain rate (360 events of 64 KiB sent, "
                    "queue_peak %.0f): memory grows with the queue; bound the queue",
                    (rss1 - rss0) / 1024.0, peak);
}

/* ---- Q4 shed: 503, its header and body ---- */

Test(lab05, refuses_with_retry_after) {
  static tk_resp_t r[300];
  char url[128];
  char *body = payload(1000);
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("shed", (const char *[]){"--retry-after-s", "3", NULL});
  tk_stream(events_url(url, sizeof url), body, 300, OVERLOAD_RPS, 8000, r);
  free(body);
  tally_t t = tally(r, 300, "3");
  double refused = lab_stat("refused"), acked = lab_stat("acked");
  wait_below("queue_depth", 0, 5000);
  tk_lab_stop(&lab, zero_fields);
  cr_log_info("300 at %.0f/s: %d accepted, %d refused (%d with Retry-After: 3), %d other",
              OVERLOAD_RPS, t.accepted, t.refused, t.refused_retry, t.other);
  cr_assert_eq(t.other, 0, "%d answers were neither 202 nor 503 (or no answer)", t.other);
  cr_assert_geq(t.refused, 300 / 4,
                "only %d of 300 events were refused at 3x the drain rate (%d accepted): a full "
                "queue must answer 503 at once instead of accepting more", t.refused, t.accepted);
  cr_assert(t.refused_retry == t.refused && t.refused_body == t.refused,
            "of %d 503 answers, %d carried \"Retry-After: 3\" (--retry-after-s 3) and %d the body "
            "\"queue full, retry later\": tell the producer when to come back", t.refused,
            t.refused_retry, t.refused_body);
  cr_assert(t.accepted_body == t.accepted && acked == t.accepted && refused == t.refused,
            "%d answers 202 (%d with \"accepted auto-N\"), %d answers 503; the lab counted acked "
            "%.0f, refused %.0f", t.accepted, t.accepted_body, t.refused, acked, refused);
}

/* ---- Q5: FIFO ---- */

Test(lab05, fifo_order) {
  static tk_resp_t r[600];
  char url[128];
  char *body = payload(1000);
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("shed", NULL);
  double t0 = tk_now_ms();
  tk_stream(events_url(url, sizeof url), body, 600, OVERLOAD_RPS, 8000, r);
  double window_s = (tk_now_ms() - t0) / 1000.0, forwarded = lab_stat("forwarded");
  free(body);
  wait_below("queue_depth", 0, 5000);
  double max_ms = lab_stat("latency_max_ms");
  tk_lab_stop(&lab, zero_fields);
  /* FIFO: an accepted event waits behind at most queue_cap others, at the drain rate measured
   * here; LIFO leaves the oldest at the bottom until the 2 s overload is over. */
  double drain = forwarded / window_s;
  double fifo_ms = (QUEUE_CAP + WORKERS) / drain * 1000.0;
  cr_log_info("drain %.0f/s over %.1f s: latency_max %.0f ms, FIFO bound %.0f ms", drain, window_s,
              max_ms, fifo_ms);
  cr_assert_lt(max_ms, 2.5 * fifo_ms + 100.0,
               "an event waited %.0f ms from its 202 to its delivery during a %.1f s overload, "
               "while %d events ahead of it at the measured drain of %.0f/s take %.0f ms: the "
               "queue does not serve the oldest first (LIFO?), so old events starve",
               max_ms, window_s, QUEUE_CAP + WORKERS, drain, fifo_ms);
}

/* ---- Q4 flow: hold the answer, in order; a producer that leaves is not queued ---- */

Test(lab05, flow_control) {
  static tk_resp_t r[300];
  char url[128];
  char *body = payload(1000);
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("flow", NULL);
  tk_stream(events_url(url, sizeof url), body, 300, OVERLOAD_RPS, 15000, r);
  free(body);
  tally_t t = tally(r, 300, "");
  double peak = lab_stat("queue_peak");
  wait_below("queue_depth", 0, 5000);
  tk_lab_stop(&lab, zero_fields);
  /* The drain delivers at most DRAIN_RPS, so the last of 300 events cannot be let in before
   * (300 - held) / DRAIN_RPS after the first arrived. */
  double span_ms = t.last_202_ms - t.first_ms, floor_ms = (300 - QUEUE_CAP - WORKERS) / DRAIN_RPS * 1e3;
  cr_log_info("flow: %d accepted, %d refused, %d other; last 202 after %.0f ms (floor %.0f)",
              t.accepted, t.refused, t.other, span_ms, floor_ms);
  cr_assert(t.accepted == 300,
            "in --mode flow %d of 300 events got 202 (%d refused, %d other or unanswered): flow "
            "control holds the answer until there is room, it does not refuse", t.accepted,
            t.refused, t.other);
  cr_assert_leq(peak, QUEUE_CAP, "queue_peak %.0f > --queue-cap %d in --mode flow", peak,
                QUEUE_CAP);
  cr_assert_geq(span_ms, 0.8 * floor_ms,
                "the 300th 202 came %.0f ms after the first event, but draining 300 events at "
                "%.0f/s takes at least %.0f ms: answers were not held while the queue was full",
                span_ms, DRAIN_RPS, floor_ms);
}

Test(lab05, flow_producer_gives_up) {
  tk_resp_t r;
  int n202 = 0;
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("flow", NULL);
  upstream_down();
  for (int i = 0; i < QUEUE_CAP; i++) {
    char id[16];
    snprintf(id, sizeof id, "f-%d", i);
    post(id, "x", 5000, &r);
    n202 += r.status == 202;
  }
  post("gone", "x", 300, &r); /* waits for room, gives up after 300 ms */
  int gone_status = r.status;
  double parked = wait_below("parked", 0, 1000);
  upstream_back();
  double left = wait_below("queue_depth", 0, 8000);
  usleep(200 * 1000);
  double acked = lab_stat("acked"), unique = tk_upstream_stat(&up, "events_unique");
  tk_lab_stop(&lab, zero_fields);
  cr_assert(n202 == QUEUE_CAP && gone_status == 0,
            "%d of %d events got 202 with the queue filling; the one after them got %d (want no "
            "answer: it waits for room)", n202, QUEUE_CAP, gone_status);
  cr_assert(parked == 0 && acked == QUEUE_CAP && unique == QUEUE_CAP && left == 0,
            "a producer that gave up while waiting: parked %.0f (want 0), acked %.0f and the "
            "upstream got %.0f events (want %d each): a request whose producer left was never "
            "acknowledged, so it must not be queued", parked, acked, unique, QUEUE_CAP);
}

/* ---- Q2, Q7: retries that never give up, and never in a loop ---- */

Test(lab05, retries_until_delivered) {
  tk_resp_t r;
  int n202 = 0;
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("shed", NULL);
  upstream_down();
  double t0 = tk_now_ms();
  for (int i = 0; i < 30; i++) {
    char id[16];
    snprintf(id, sizeof id, "r-%d", i);
    post(id, "x", 5000, &r);
    n202 += r.status == 202;
  }
  while (tk_now_ms() - t0 < 1000) usleep(20 * 1000); /* the outage lasts 1 s */
  double errors = lab_stat("forward_errors"), down_s = (tk_now_ms() - t0) / 1000.0;
  upstream_back();
  double left = wait_below("queue_depth", 0, 8000);
  double forwarded = lab_stat("forwarded"), lost = lab_stat("lost");
  double unique = tk_upstream_stat(&up, "events_unique");
  double dup = tk_upstream_stat(&up, "events_duplicate");
  tk_lab_stop(&lab, zero_at_stop);
  cr_assert(left == 0 && lost == 0 && forwarded == n202 && unique == n202,
            "the upstream was down for %.1f s and came back: of %d acknowledged events the "
            "upstream has %.0f, the lab counts %.0f delivered, %.0f lost and still holds %.0f. A "
            "202 is a promise: retry a failed forward (same id) until it is delivered, never "
            "drop it", down_s, n202, unique, forwarded, lost, left);
  cr_assert_eq(dup, 0, "the upstream got %.0f events twice", dup);
  cr_assert(errors >= 2 && errors <= 40 * down_s,
            "%.0f failed forward attempts in %.1f s of outage (want at least one retry, and "
            "at most %.0f): retry after a backoff that doubles per attempt, on a timer, not at "
            "once in a loop (a retry storm against a service that is down)", errors, down_s,
            40 * down_s);
  cr_assert_eq(n202, QUEUE_CAP, "%d of 30 events were acknowledged while nothing could be "
               "delivered (want %d: the held events fill the queue)", n202, QUEUE_CAP);
}

Test(lab05, upstream_failures_retried) {
  static tk_resp_t r[200];
  char url[128];
  char *body = payload(1000);
  /* Every third answer is a 500: each failed event is retried (same id) until delivered. */
  upstream_start((const char *[]){"--latency-ms", "20", "--fail-rate", "0.34", NULL});
  lab_start("shed", NULL);
  tk_stream(events_url(url, sizeof url), body, 200, 60.0, 8000, r);
  free(body);
  tally_t t = tally(r, 200, "1");
  double left = wait_below("queue_depth", 0, 8000);
  double errors = lab_stat("forward_errors"), forwarded = lab_stat("forwarded");
  double unique = tk_upstream_stat(&up, "events_unique");
  double fails = tk_upstream_stat(&up, "responses_5xx");
  tk_lab_stop(&lab, zero_fields);
  cr_assert(left == 0 && unique == t.accepted && forwarded == t.accepted,
            "with a third of the upstream's answers 500: %d acknowledged, the upstream has %.0f, "
            "the lab counts %.0f delivered and holds %.0f", t.accepted, unique, forwarded, left);
  cr_assert(errors == fails && errors > 0,
            "forward_errors %.0f, the upstream answered %.0f times 500: every failed attempt is "
            "one forward error", errors, fails);
}

/* ---- Q7: an outage and a latency near the forward timeout, counted by event id ---- */

Test(lab05, outage_loses_nothing) {
  static tk_resp_t r[200];
  char url[128];
  char *body = payload(1000);
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("shed", (const char *[]){"--forward-timeout-ms", "300", NULL});
  /* 100 events/s (the drain rate) for 2 s; from 0.4 s to 1.4 s the upstream answers nothing
   * (SIGSTOP: its kernel still takes connections and bytes, the process does not run), so
   * every forward meanwhile times out. Then it runs again and sees all those requests at once,
   * most from clients that left. */
  tk_stream_t *s = tk_stream_start(events_url(url, sizeof url), body, 200, DRAIN_RPS, 8000, r);
  cr_assert(s != NULL, "tk_stream_start failed");
  usleep(400 * 1000);
  kill(up.pid, SIGSTOP);
  double t_down = tk_now_ms();
  usleep(1000 * 1000);
  kill(up.pid, SIGCONT);
  double outage_ms = tk_now_ms() - t_down;
  tk_stream_wait(s);
  free(body);
  tally_t t = tally(r, 200, "1");
  double left = wait_below("queue_depth", 0, 8000);
  double lost = lab_stat("lost"), acked = lab_stat("acked"), errors = lab_stat("forward_errors");
  double unique = tk_upstream_stat(&up, "events_unique");
  double dup = tk_upstream_stat(&up, "events_duplicate");
  tk_lab_stop(&lab, zero_fields);
  cr_log_info("outage %.0f ms: %d acknowledged, %d refused, upstream delivered %.0f, duplicates "
              "%.0f, lost %.0f, %.0f failed attempts", outage_ms, t.accepted, t.refused, unique,
              dup, lost, errors);
  cr_assert(t.other == 0 && acked == t.accepted,
            "%d answers were neither 202 nor 503; acked %.0f for %d 202s", t.other, acked,
            t.accepted);
  cr_assert(left == 0 && lost == 0 && unique == t.accepted,
            "after a %.0f ms outage: %d acknowledged, the upstream delivered %.0f, the lab still "
            "holds %.0f and lost %.0f. Every acknowledged event must arrive: retry (same id) "
            "until it does", outage_ms, t.accepted, unique, left, lost);
  cr_assert(t.refused > 0 && t.refused_retry == t.refused,
            "during a %.0f ms outage at the drain rate, %d events were refused (%d with "
            "Retry-After): the held events must fill the queue and the producer be told \"not "
            "now\", instead of acknowledgements the lab cannot keep", outage_ms, t.refused,
            t.refused_retry);
  /* An attempt that timed out may still have been done by the upstream once it ran again
   * (its answer was lost): the retry is then a second delivery of the same id, which the
   * upstream can only de-duplicate. No HTTP client can tell those apart; it can only never
   * create a duplicate other than by such a retry. */
  cr_assert_leq(dup, errors, "the upstream delivered %.0f events a second time, more than the "
                "%.0f attempts whose outcome the lab could not know", dup, errors);
}

Test(lab05, outage_503_exactly_once) {
  static tk_resp_t r[200];
  char url[128];
  char *body = payload(1000);
  /* The upstream answers every request 503 from 0.4 s to 1.4 s after the reset (--outage): a
   * dependency that is down and says so. Nothing it refuses is a delivery, so every event must
   * arrive exactly once, counted by id. */
  upstream_start((const char *[]){"--latency-ms", "20", "--outage", "400-1400", NULL});
  lab_start("shed", NULL);
  tk_upstream_reset(&up);
  tk_stream(events_url(url, sizeof url), body, 200, DRAIN_RPS, 8000, r);
  free(body);
  tally_t t = tally(r, 200, "1");
  double left = wait_below("queue_depth", 0, 8000);
  double lost = lab_stat("lost"), errors = lab_stat("forward_errors");
  double unique = tk_upstream_stat(&up, "events_unique");
  double dup = tk_upstream_stat(&up, "events_duplicate");
  double refused_up = tk_upstream_stat(&up, "outage_requests");
  tk_lab_stop(&lab, zero_fields);
  cr_log_info("503 outage of 1 s at %.0f/s: %d acknowledged, %d refused, upstream delivered "
              "%.0f, duplicates %.0f, %.0f attempts refused by the outage", DRAIN_RPS, t.accepted,
              t.refused, unique, dup, refused_up);
  cr_assert(refused_up > 0 && errors > 0, "the outage refused %.0f forwards (lab: %.0f failed "
            "attempts): the test did not test", refused_up, errors);
  cr_assert(left == 0 && lost == 0 && unique == t.accepted && dup == 0,
            "after a 1 s outage (503): %d acknowledged, the upstream delivered %.0f (%.0f twice), "
            "the lab still holds %.0f and lost %.0f: every acknowledged event exactly once",
            t.accepted, unique, dup, left, lost);
  cr_assert(t.refused > 0 && t.refused_retry == t.refused,
            "during the outage %d events were refused (%d with Retry-After): the held events "
            "must fill the queue and the producer be told \"not now\"", t.refused, t.refused_retry);
  cr_assert_leq(errors, 60, "%.0f failed attempts in a 1 s outage (want at most 60): back off",
                errors);
}

Test(lab05, latency_near_timeout) {
  static tk_resp_t r[30];
  char url[128];
  char *body = payload(1000);
  /* Forwards take 700..800 ms, the first attempt gives up after 500 ms: every first attempt
   * times out (the upstream drops it, its client left) and only a retry that waits longer
   * (lab.h Q7: 1000 ms) can deliver. 200 ms from each timeout either way, so that on a loaded
   * machine no attempt times out just after the upstream did it (that race is real, and makes
   * a duplicate: README). */
  upstream_start((const char *[]){"--latency-ms", "700", "--jitter-ms", "100", NULL});
  lab_start("shed", (const char *[]){"--forward-timeout-ms", "500", "--workers", "8", NULL});
  tk_stream(events_url(url, sizeof url), body, 30, 6.0, 8000, r);
  free(body);
  tally_t t = tally(r, 30, "1");
  double left = wait_below("queue_depth", 0, 15000);
  double errors = lab_stat("forward_errors"), lost = lab_stat("lost");
  double unique = tk_upstream_stat(&up, "events_unique");
  double dup = tk_upstream_stat(&up, "events_duplicate");
  double abandoned = tk_upstream_stat(&up, "abandoned");
  tk_lab_stop(&lab, zero_fields);
  cr_log_info("latency 700-800 ms, timeout 500: %d acknowledged, upstream %.0f unique, %.0f "
              "duplicates, %.0f timed out", t.accepted, unique, dup, errors);
  cr_assert(errors > 0 && abandoned > 0,
            "no forward timed out (forward_errors %.0f, abandoned %.0f): the test did not test",
            errors, abandoned);
  cr_assert(left == 0 && lost == 0 && unique == t.accepted,
            "with the upstream's latency at the forward timeout: %d acknowledged, the upstream "
            "delivered %.0f, the lab still holds %.0f and lost %.0f: a timed-out forward is "
            "retried until it is delivered", t.accepted, unique, left, lost);
  cr_assert_eq(dup, 0, "the upstream delivered %.0f events twice", dup);
}

/* ---- Q8: shutdown delivers what was promised ---- */

Test(lab05, exactly_once_at_shutdown) {
  static tk_resp_t r[300];
  char url[128];
  char *body = payload(1000);
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("shed", NULL);
  tk_stream(events_url(url, sizeof url), body, 300, OVERLOAD_RPS, 8000, r);
  free(body);
  tally_t t = tally(r, 300, "1");
  double queued = lab_stat("queue_depth");
  /* Shut down while the queue is (about) full: acknowledged events must still be delivered. */
  tk_lab_stop(&lab, zero_at_stop);
  double unique = tk_upstream_stat(&up, "events_unique");
  double dup = tk_upstream_stat(&up, "events_duplicate");
  cr_log_info("accepted %d, %.0f held at shutdown; upstream has %.0f, %.0f duplicates", t.accepted,
              queued, unique, dup);
  cr_assert_eq(dup, 0, "the upstream got %.0f events twice: forward each event once", dup);
  cr_assert_eq(unique, t.accepted,
               "the upstream has %.0f events of the %d acknowledged (%.0f were held at "
               "shutdown): an event answered 202 must be delivered, also across a shutdown",
               unique, t.accepted, queued);
}

/* ---- Q9: recovery ---- */

Test(lab05, recovers) {
  static tk_resp_t r[360];
  tk_resp_t one;
  char url[128];
  char *body = payload(1000);
  upstream_start((const char *[]){"--latency-ms", "20", NULL});
  lab_start("shed", NULL);
  tk_stream(events_url(url, sizeof url), body, 360, OVERLOAD_RPS, 8000, r);
  free(body);
  /* The backlog is at most QUEUE_CAP: 200 ms of work at the drain rate. */
  double t0 = tk_now_ms(), depth0 = lab_stat("queue_depth");
  double depth = wait_below("queue_depth", 0, 2000), drain_ms = tk_now_ms() - t0;
  cr_assert_eq(depth, 0,
               "the queue still held %.0f events %.0f ms after the overload stopped (%.0f when "
               "it stopped): a backlog of N takes N / drain rate to work off", depth, drain_ms,
               depth0);
  post("after", "x", 2000, &one);
  cr_assert_eq(one.status, 202, "POST /events on an empty queue answered %d, not 202", one.status);
  wait_below("queue_depth", 0, 1000);
  double latency = lab_stat("latency_last_ms");
  tk_lab_stop(&lab, zero_fields);
  cr_log_info("queue of %.0f drained in %.0f ms; the next event waited %.1f ms", depth0, drain_ms,
              latency);
  cr_assert_lt(latency, 200.0,
               "an event accepted after the overload waited %.0f ms before the upstream had it "
               "(a forward takes about 20 ms): latency has not recovered", latency);
}

/* ---- the counters agree at every moment ---- */

Test(lab05, stats_add_up) {
  static tk_resp_t r[300];
  static const char *const fields[] = {"acked", "forwarded", "queue_depth", "lost", NULL};
  char url[128];
  char *body = payload(1000);
  int bad = 0, samples = 0;
  double v[4], worst[4] = {0};
  upstream_start((const char *[]){"--latency-ms", "20", "--fail-rate", "0.2", NULL});
  lab_start("shed", NULL);
  tk_stream_t *s = tk_stream_start(events_url(url, sizeof url), body, 300, OVERLOAD_RPS, 8000, r);
  cr_assert(s != NULL, "tk_stream_start failed");
  for (int i = 0; i < 20; i++) {
    usleep(50 * 1000);
    if (stats_snapshot(fields, v) != 0) continue;
    samples++;
    if (v[0] != v[1] + v[2] + v[3]) bad++, memcpy(worst, v, sizeof v);
  }
  tk_stream_wait(s);
  free(body);
  tally_t t = tally(r, 300, "1");
  wait_below("queue_depth", 0, 5000);
  double acked = lab_stat("acked"), refused = lab_stat("refused"), forwarded = lab_stat("forwarded");
  double unique = tk_upstream_stat(&up, "events_unique");
  tk_lab_stop(&lab, zero_fields);
  cr_assert(samples > 10 && bad == 0,
            "%d of %d snapshots of /debug/stats broke acked == forwarded + queue_depth + lost "
            "(one: acked %.0f, forwarded %.0f, queue_depth %.0f, lost %.0f)", bad, samples,
            worst[0], worst[1], worst[2], worst[3]);
  cr_assert(acked == t.accepted && refused == t.refused && forwarded == acked && unique == acked,
            "202s %d / acked %.0f, 503s %d / refused %.0f, forwarded %.0f, upstream events "
            "%.0f: each counter counts what it names", t.accepted, acked, t.refused, refused,
            forwarded, unique);
}
