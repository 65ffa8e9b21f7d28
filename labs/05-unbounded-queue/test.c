/* Lab 05 suite: an unbounded queue versus backpressure.
 *
 * Each test starts the upstream as a child process (20 ms per forward), runs the lab variant
 * in-process with 2 workers (a drain rate of about 2 / 20 ms = 100 events/s) and a queue cap of
 * 20, and drives POST /events from this thread at 3x the drain rate for about a second with an
 * open-loop producer: requests are due at a fixed pace, at most `conns` at a time. Everything
 * asserted is a bound, a counter or a ratio, so a busy machine (which only slows the drain)
 * cannot turn a solution into a failure or a pitfall into a pass.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "labrt.h"
#include "testkit.h"

#define QUEUE_CAP 20
#define DRAIN_RPS 100.0     /* WORKERS / UPSTREAM_LATENCY_MS, when the machine keeps up */
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

static tk_proc_t upstream;
static labrun_t *run;
static char stats_url[96];

/* ---- fixtures ---- */

static void setup(void) {
  const char *const args[] = {"--latency-ms", "20", NULL};
  cr_assert_eq(tk_spawn(&upstream, "upstream", args), 0,
               "could not start build/bin/upstream (is it built? see the message above)");
}

static void teardown(void) {
  if (run != NULL) labrun_stop(run, 5000, NULL);
  run = NULL;
  tk_stop(&upstream);
}

static void lab_start(const char *mode) {
  const char *const args[] = {"--upstream", upstream.url, "--workers", "2", "--queue-cap", "20",
                              "--mode", mode, NULL};
  cr_assert_eq(labrun_start(&run, &LAB_DEF, args), 0, "the lab did not start (see stderr)");
  snprintf(stats_url, sizeof stats_url, "%s/debug/stats", labrun_url(run));
}

static double lab_stat(const char *field) {
  double v = tk_stat(stats_url, field);
  cr_assert(!isnan(v), "/debug/stats has no number \"%s\": every variant must add it", field);
  return v;
}

static double upstream_stat(const char *field) {
  char url[96];
  snprintf(url, sizeof url, "%s/stats", upstream.url);
  double v = tk_stat(url, field);
  cr_assert(!isnan(v), "the upstream's /stats has no \"%s\"", field);
  return v;
}

/* ---- an open-loop producer ---- */

typedef struct produced {
  int sent;          /* requests put on the wire */
  int accepted;      /* 202 */
  int refused;       /* 503 */
  int refused_retry; /* 503 with a Retry-After header */
  int other;         /* any other status, or no response */
  int unfinished;    /* no answer within the grace period after the window */
  double window_s;
} produced_t;

typedef struct call {
  CURL *easy; /* NULL once answered */
  int retry_after;
} call_t;

/* Called by libcurl with each response header line. */
static size_t on_header(char *buf, size_t size, size_t n, void *data) {
  call_t *call = data;
  if (size * n > 12 && strncasecmp(buf, "Retry-After:", 12) == 0) call->retry_after = 1;
  return size * n;
}

/* Called by libcurl with the response body: not needed. */
static size_t on_body(char *buf, size_t size, size_t n, void *data) {
  (void)buf;
  (void)data;
  return size * n;
}

static void count_done(CURLM *multi, produced_t *out, int *active) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
    long status = 0;
    call_t *call = NULL;
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle;
    if (msg->data.result == CURLE_OK) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&call);
    if (status == 202) out->accepted++;
    else if (status == 503) out->refused++, out->refused_retry += call->retry_after;
    else out->other++;
    curl_multi_remove_handle(multi, easy);
    curl_easy_cleanup(easy);
    call->easy = NULL;
    (*active)--;
  }
}

/* POSTs `rate` events a second for `seconds` to the lab, at most `conns` at a time on keep-alive
 * connections, ids "<prefix>-N", each with `payload` bytes. A request whose turn comes while all
 * connections wait for answers goes out as soon as one is free: the producer is slowed, not
 * stopped. After the window, waits up to 2 s for the answers still owed. */
static void produce(double rate, double seconds, int conns, size_t payload, const char *prefix,
                    produced_t *out) {
  int n = (int)(rate * seconds), active = 0, running = 0;
  char *body = malloc(payload + 1);
  call_t *calls = calloc((size_t)n, sizeof *calls);
  CURLM *multi = curl_multi_init();
  struct curl_slist *headers = curl_slist_append(NULL, "Expect:");
  cr_assert(body && calls && multi && headers, "producer: out of memory");
  memset(out, 0, sizeof *out);
  memset(body, 'x', payload);
  body[payload] = '\0';
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conns);

  double t0 = tk_now_ms(), end = t0 + seconds * 1000.0, now = t0;
  while (now < end + 2000.0 && (now < end || active > 0)) {
    while (now < end && out->sent < n && active < conns &&
           t0 + out->sent * 1000.0 / rate <= now) {
      char url[160];
      CURL *easy = curl_easy_init();
      cr_assert(easy != NULL, "producer: curl_easy_init failed");
      snprintf(url, sizeof url, "%s/events?id=%s-%d", labrun_url(run), prefix, out->sent);
      curl_easy_setopt(easy, CURLOPT_URL, url);
      curl_easy_setopt(easy, CURLOPT_PROXY, "");
      curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 5000L);
      curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)payload);
      curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
      curl_easy_setopt(easy, CURLOPT_HEADERDATA, &calls[out->sent]);
      curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
      curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *)&calls[out->sent]);
      calls[out->sent].easy = easy;
      cr_assert_eq(curl_multi_add_handle(multi, easy), CURLM_OK, "curl_multi_add_handle");
      out->sent++;
      active++;
    }
    curl_multi_perform(multi, &running);
    count_done(multi, out, &active);
    curl_multi_poll(multi, NULL, 0, 2, NULL);
    now = tk_now_ms();
  }
  out->window_s = seconds;
  out->unfinished = active;
  for (int i = 0; i < out->sent; i++) { /* what is left is dropped: its connection closes */
    if (calls[i].easy == NULL) continue;
    curl_multi_remove_handle(multi, calls[i].easy);
    curl_easy_cleanup(calls[i].easy);
  }
  curl_multi_cleanup(multi);
  curl_slist_free_all(headers);
  free(calls);
  free(body);
}

/* ---- the tests ---- */

TestSuite(queue, .init = setup, .fini = teardown, .timeout = 15);

Test(queue, bounded_queue, .timeout = 15) {
  produced_t p;
  lab_start("shed");
  double rss0 = lab_stat("rss_kb");
  produce(OVERLOAD_RPS, 1.2, 16, 64 * 1024, "b", &p);
  double peak = lab_stat("queue_peak"), rss1 = lab_stat("rss_kb");
  cr_log_info("sent %d at %.0f/s (64 KiB each): queue_peak %.0f, RSS +%.1f MiB", p.sent,
              OVERLOAD_RPS, peak, (rss1 - rss0) / 1024.0);
  cr_expect_leq(peak, QUEUE_CAP,
                "queue_peak %.0f > --queue-cap %d at 3x the drain rate: the queue has no bound, "
                "so it grows as long as the overload lasts",
                peak, QUEUE_CAP);
  if (!RSS_MEANINGFUL) cr_log_info("RSS not checked under AddressSanitizer (quarantine)");
  else cr_expect_lt(rss1 - rss0, 8 * 1024.0,
               "RSS grew by %.1f MiB in 1.2 s at 3x the drain rate (%d events of 64 KiB sent, "
               "queue_peak %.0f): memory grows with the queue; bound the queue",
               (rss1 - rss0) / 1024.0, p.sent, peak);
}

Test(queue, refuses_with_retry_after, .timeout = 15) {
  produced_t p;
  lab_start("shed");
  produce(OVERLOAD_RPS, 1.0, 8, 1024, "r", &p);
  cr_log_info("sent %d: %d accepted, %d refused (%d with Retry-After), %d other", p.sent,
              p.accepted, p.refused, p.refused_retry, p.other);
  cr_assert_eq(p.unfinished + p.other, 0,
               "%d requests got no answer or one that is neither 202 nor 503", p.unfinished + p.other);
  cr_assert_geq(p.refused, p.sent / 4,
                "only %d of %d events were refused at 3x the drain rate (%d accepted, queue_peak "
                "%.0f): a full queue must answer 503 at once instead of accepting more",
                p.refused, p.sent, p.accepted, lab_stat("queue_peak"));
  cr_assert_eq(p.refused_retry, p.refused,
               "%d of %d 503 answers had no Retry-After header: tell the producer when to retry",
               p.refused - p.refused_retry, p.refused);
}

Test(queue, exactly_once, .timeout = 15) {
  produced_t p;
  labrun_report_t report;
  lab_start("shed");
  produce(OVERLOAD_RPS, 1.0, 8, 1024, "x", &p);
  double queued = lab_stat("queue_depth");
  cr_assert_eq(p.unfinished, 0, "%d requests got no answer in time", p.unfinished);
  /* Shut down while the queue is (about) full: acknowledged events must still be delivered. */
  int rc = labrun_stop(run, 5000, &report);
  run = NULL;
  double seen = upstream_stat("ids_seen"), dup = upstream_stat("ids_duplicate");
  cr_log_info("accepted %d, %.0f queued at shutdown; upstream saw %.0f ids, %.0f duplicates",
              p.accepted, queued, seen, dup);
  cr_assert_eq(rc, 0, "the lab did not shut down within 5 s of a graceful stop");
  cr_expect_eq(report.loop_close_rc, 0, "uv_loop_close() failed: %u handle(s) left open",
               report.handles_left);
  cr_expect_eq(dup, 0, "the upstream saw %.0f event ids twice: forward each event once", dup);
  cr_expect_geq(seen, p.accepted,
                "%.0f of %d acknowledged events never reached the upstream (%.0f were queued at "
                "shutdown): an event answered 202 must be delivered, also across a shutdown",
                p.accepted - seen, p.accepted, queued);
  cr_expect_leq(seen, p.accepted, "the upstream saw %.0f ids, more than the %d acknowledged",
                seen, p.accepted);
}

Test(queue, flow_control, .timeout = 15) {
  produced_t p;
  lab_start("flow");
  produce(OVERLOAD_RPS, 1.2, 4, 1024, "f", &p);
  double sent_rps = p.sent / p.window_s, peak = lab_stat("queue_peak");
  cr_log_info("offered %.0f/s, sent %.0f/s: %d accepted, %d refused, queue_peak %.0f",
              OVERLOAD_RPS, sent_rps, p.accepted, p.refused, peak);
  cr_assert_eq(p.refused + p.other + p.unfinished, 0,
               "in --mode flow %d events were refused or failed (%d unanswered): flow control "
               "holds the answer until there is room, it does not refuse",
               p.refused + p.other, p.unfinished);
  cr_expect_leq(peak, QUEUE_CAP, "queue_peak %.0f > --queue-cap %d in --mode flow", peak,
                QUEUE_CAP);
  cr_expect_lt(sent_rps, 0.7 * OVERLOAD_RPS,
               "the producer still sent %.0f events/s of the %.0f/s it wanted, against a drain "
               "rate near %.0f/s: nothing slowed it down; hold the answer while the queue is "
               "full",
               sent_rps, OVERLOAD_RPS, DRAIN_RPS);
}

Test(queue, recovers, .timeout = 15) {
  produced_t p;
  lab_start("shed");
  produce(OVERLOAD_RPS, 1.2, 8, 1024, "v", &p);
  /* The solution's backlog is at most QUEUE_CAP: 200 ms of work at the drain rate. */
  double t0 = tk_now_ms(), depth = lab_stat("queue_depth"), depth0 = depth;
  while (depth > 0 && tk_now_ms() - t0 < 1000) {
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    depth = lab_stat("queue_depth");
  }
  double drain_ms = tk_now_ms() - t0;
  cr_assert_eq(depth, 0,
               "the queue still held %.0f events %.0f ms after the overload stopped (%.0f when "
               "it stopped): a backlog of N takes N / drain rate to work off, so every event "
               "accepted now waits that long",
               depth, drain_ms, depth0);
  /* One more event, now that the queue is empty: it must not wait behind a backlog. */
  char url[128];
  tk_resp_t *resp = malloc(sizeof *resp);
  cr_assert(resp != NULL, "out of memory");
  snprintf(url, sizeof url, "%s/events?id=after", labrun_url(run));
  int got = tk_post(url, "x", 2000, resp), status = resp->status;
  free(resp);
  cr_assert_eq(got, 0, "POST /events after the overload: no answer");
  cr_assert_eq(status, 202, "POST /events on an empty queue answered %d, not 202", status);
  t0 = tk_now_ms();
  while (lab_stat("forwarded") < lab_stat("acked") && tk_now_ms() - t0 < 1000) {
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  double latency = lab_stat("latency_last_ms");
  cr_log_info("queue of %.0f drained in %.0f ms; the next event waited %.1f ms", depth0, drain_ms,
              latency);
  cr_expect_lt(latency, 200.0,
               "an event accepted after the overload waited %.0f ms before the upstream had it "
               "(a forward takes about 20 ms): latency has not recovered",
               latency);
}
