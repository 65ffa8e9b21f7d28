/* Lab 14 suite: does the service keep to the upstream's rate limit on its own side, without
 * sleeping, in order, with a bounded wait, and stop when the upstream says 429?
 *
 * Built once per variant (build/test/lab14-pitfall, -solution, -exercise, -wrong-*). Each test
 * starts the upstream as a child process (with its own token bucket, --rate-limit R
 * --rate-burst B, which answers 429 beyond it) or a small recording server of the test's own
 * that notes when each call arrives (the kernel's receive time, not when the server reads it),
 * and the variant in-process on its own loop thread.
 * Properties are counters (429s the upstream gave, calls per window of time against B + R x T
 * with a margin of 2 calls, answers by status), orders of answers, and times only against the
 * rate's own scale (hundreds of ms), so a right answer passes on a busy 2-core machine.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

/* What a right answer leaves behind once every request is answered. */
static const char *const zero_fields[] = {"waiting", "calls_inflight", NULL};

typedef struct env {
  tk_proc_t up;
  tk_lab_t lab;
} env_t;

static void lab_start_at(tk_lab_t *lab, const char *upstream, const char *const *lab_args) {
  const char *argv[32] = {"--upstream", upstream};
  int n = 2;
  for (int i = 0; lab_args && lab_args[i] != NULL && n < 31; i++) argv[n++] = lab_args[i];
  argv[n] = NULL;
  tk_lab_start(lab, &LAB_DEF, argv);
}

static void env_start(env_t *e, const char *const *up_args, const char *const *lab_args) {
  tk_upstream_start(&e->up, up_args);
  lab_start_at(&e->lab, e->up.url, lab_args);
}

static void env_stop(env_t *e) {
  tk_lab_stop(&e->lab, zero_fields);
  tk_upstream_stop(&e->up);
}

static long body_num(const tk_resp_t *r, const char *field) {
  double v = tk_json_number(r->body, field);
  return isnan(v) ? -1 : (long)v;
}

/* ---- a server of the test's own: answers {"ok":1} (or garbage) and notes each arrival ----
 * It serves one connection at a time on one thread, so on a busy machine calls that arrive
 * while that thread is paused wait in the listen backlog and would be read together: the time
 * of the read is not the time of the arrival. Each arrival is therefore the kernel's receive
 * time of the request's bytes (SO_TIMESTAMPNS, set on the listening socket and inherited by
 * each accepted one), which on loopback is taken as the lab's curl writes them. */
enum { FAKE_MAX = 2048 };
typedef struct fake {
  int fd, port, stop, garbage;
  int limit_at;            /* answer the limit_at-th call (1-based) 429 + Retry-After: 2 */
  int bare_429;            /* ... and that 429 names no Retry-After */
  double limited_ms;       /* CLOCK_REALTIME ms once that 429 was written */
  int n;                   /* requests seen */
  int unstamped;           /* of them, read without a kernel timestamp */
  double at_ms[FAKE_MAX];  /* CLOCK_REALTIME ms the kernel received each */
  pthread_t thread;
} fake_t;

/* Reads a request from c into buf; *at_ms = when the kernel received it (-1 without a stamp). */
static ssize_t fake_read(int c, char *buf, size_t size, double *at_ms) {
  union { char raw[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; } ctl;
  struct iovec io = {.iov_base = buf, .iov_len = size};
  struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl.raw,
                     .msg_controllen = sizeof ctl.raw};
  ssize_t n = recvmsg(c, &m, 0);
  *at_ms = -1;
  for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); n > 0 && h != NULL; h = CMSG_NXTHDR(&m, h))
    if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_TIMESTAMPNS) {
      struct timespec ts;
      memcpy(&ts, CMSG_DATA(h), sizeof ts);
      *at_ms = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
    }
  return n;
}

static void *fake_main(void *arg) {
  fake_t *f = arg;
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           "Content-Length: 8\r\nConnection: close\r\n\r\n{\"ok\":1}";
  static const char junk[] = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                             "Content-Length: 14\r\nConnection: close\r\n\r\n<html>oops</h>";
  static const char limited[] = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\n"
                                "Content-Length: 0\r\nConnection: close\r\n\r\n";
  static const char bare[] = "HTTP/1.1 429 Too Many Requests\r\n"
                             "Content-Length: 0\r\nConnection: close\r\n\r\n";
  while (!f->stop) {
    int c = accept(f->fd, NULL, NULL);
    if (c < 0) continue;
    char buf[2048];
    double at_ms;
    if (fake_read(c, buf, sizeof buf, &at_ms) > 0 && !f->stop) {
      int i = __atomic_fetch_add(&f->n, 1, __ATOMIC_SEQ_CST);
      if (i < FAKE_MAX) f->at_ms[i] = at_ms;
      if (at_ms < 0) f->unstamped++;
      const char *r = i + 1 == f->limit_at ? (f->bare_429 ? bare : limited)
                      : f->garbage               ? junk
                                                 : ok;
      if (write(c, r, strlen(r)) < 0) perror("fake: write");
      if (i + 1 == f->limit_at) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        f->limited_ms = (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6;
      }
    }
    close(c);
  }
  return NULL;
}

static void fake_start(fake_t *f, int garbage) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int limit_at = f->limit_at, bare_429 = f->bare_429;
  memset(f, 0, sizeof *f);
  f->garbage = garbage;
  f->limit_at = limit_at;
  f->bare_429 = bare_429;
  f->fd = socket(AF_INET, SOCK_STREAM, 0);
  int on = 1;
  cr_assert(f->fd >= 0 && setsockopt(f->fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) == 0,
            "the test's recording server: socket or setsockopt(SO_TIMESTAMPNS) failed");
  cr_assert(bind(f->fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                listen(f->fd, 128) == 0 && getsockname(f->fd, (struct sockaddr *)&a, &len) == 0,
            "the test's recording server could not listen");
  f->port = ntohs(a.sin_port);
  /* The kernel turns its receive stamps on through deferred work (a static key), so calls that
   * arrive just after the setsockopt may carry none. A stamped probe first: then every one is. */
  for (int tries = 0; tries < 200; tries++) {
    char b[8];
    double at_ms = -1;
    int p = socket(AF_INET, SOCK_STREAM, 0);
    if (p < 0 || connect(p, (struct sockaddr *)&a, sizeof a) != 0 || write(p, "x", 1) != 1) {
      if (p >= 0) close(p);
      break;
    }
    int c = accept(f->fd, NULL, NULL);
    if (c >= 0) {
      fake_read(c, b, sizeof b, &at_ms);
      close(c);
    }
    close(p);
    if (at_ms >= 0) break;
    usleep(10 * 1000);
  }
  cr_assert(pthread_create(&f->thread, NULL, fake_main, f) == 0, "pthread_create");
}

static int fake_stop(fake_t *f) {
  f->stop = 1;
  shutdown(f->fd, SHUT_RDWR);
  pthread_join(f->thread, NULL);
  close(f->fd);
  return f->n < FAKE_MAX ? f->n : FAKE_MAX;
}

/* The most arrivals in any window [t, t + win_ms) of the sorted times. */
static int most_in_window(const double *at, int n, double win_ms) {
  int best = 0;
  for (int i = 0, j = 0; i < n; i++) {
    while (at[i] - at[j] >= win_ms) j++;
    if (i - j + 1 > best) best = i - j + 1;
  }
  return best;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* One request, one call, the body relayed. The call takes 300 ms, none of it a wait for a token:
 * waited_ms is the wait for its turn only. */
Test(lab14, call_relayed, .timeout = 30) {
  static tk_resp_t r;
  char url[160];
  env_t e;
  env_start(&e, (const char *[]){"--latency-ms", "300", NULL}, NULL);
  tk_get(tk_lab_url(&e.lab, "/call?id=item-1", url, sizeof url), 5000, &r);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  cr_assert(r.status == 200 && strstr(r.body, "\"id\":\"item-1\"") && body_num(&r, "waited_ms") == 0 &&
                strstr(r.body, "\"item\":{\"path\":\"/api\""),
            "GET /call?id=item-1 (a 300 ms upstream, a full bucket) answered %d %s; want 200 "
            "{\"id\":\"item-1\",\"waited_ms\":0,\"item\":{\"path\":\"/api\",...}}: waited_ms "
            "is the time waited for a token, taken when the call starts, not when it ends",
            r.status, r.body);
  cr_assert(r.total_ms >= 0.95 * 300, "the answer came after %.0f ms from a 300 ms upstream",
            r.total_ms);
  cr_assert_eq(calls, 1, "the upstream saw %.0f calls for one request, want 1", calls);
  env_stop(&e);
}

/* The lesson: at 2R offered (40/s against an upstream allowing 20/s), every call is let out at
 * the rate: no 429s, and the backlog drains at R after the stream ends. */
Test(lab14, calls_leave_at_the_rate, .timeout = 60) {
  enum { N = 120 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, (const char *[]){"--rate-limit", "20", "--rate-burst", "10", NULL},
            (const char *[]){"--rate", "20", "--burst", "5", "--max-waiting", "200", NULL});
  tk_stream(tk_lab_url(&e.lab, "/call?id=a", url, sizeof url), NULL, N, 40.0, 20000, r);
  double limited = tk_upstream_stat(&e.up, "rate_limited");
  double calls = tk_upstream_stat(&e.up, "requests_total");
  int ok = 0, none = 0;
  double last = 0;
  for (int i = 0; i < N; i++) {
    ok += r[i].status == 200;
    none += r[i].status == 0;
    last = fmax(last, r[i].end_ms - r[0].start_ms);
  }
  cr_assert(limited <= 1,
            "%d requests at 40/s, the upstream allows 20/s (burst 10) and the lab --rate 20 "
            "--burst 5: the upstream answered %.0f of %.0f calls 429 (%.0f%%); want none (1 "
            "allowed for timing). A limit kept on your side lets calls leave at R; without "
            "one, everything above R is refused", N, limited, calls, 100 * limited / calls);
  cr_assert(ok == N && last <= 1.5 * (N - 5) / 20.0 * 1000,
            "%d of %d answered 200 (%d got no answer within 20 s), the last %.0f ms after the "
            "first was sent; want all, by 1.5 x (N - B) / R = %.0f ms: a queue must drain at R "
            "with nothing else arriving (arm a timer for the next token; a bucket that refills "
            "only when a request arrives leaves the queue stuck)", ok, N, none, last,
            1.5 * (N - 5) / 20.0 * 1000);
  env_stop(&e);
}

/* Any window of T seconds sees at most B + R x T calls (+2 for timing): 0.1 s, 0.5 s and 1 s,
 * by when the kernel received each call at the test's own server (so a paused server cannot
 * bunch them). */
Test(lab14, window_never_exceeds_r_plus_b, .timeout = 60) {
  enum { N = 80 };
  static tk_resp_t r[N];
  static fake_t f;
  char up[64], url[160];
  tk_lab_t lab;
  fake_start(&f, 0);
  snprintf(up, sizeof up, "http://127.0.0.1:%d", f.port);
  lab_start_at(&lab, up, (const char *[]){"--rate", "20", "--burst", "5", "--max-waiting", "200",
                                          NULL});
  tk_stream(tk_lab_url(&lab, "/call?id=a", url, sizeof url), NULL, N, 40.0, 20000, r);
  tk_lab_stop(&lab, zero_fields);
  int n = fake_stop(&f), ok = 0;
  for (int i = 0; i < N; i++) ok += r[i].status == 200;
  qsort(f.at_ms, (size_t)n, sizeof f.at_ms[0], cmp_double);
  cr_assert(ok == N && n == N, "%d of %d answered 200, the server saw %d calls; want all", ok, N,
            n);
  cr_assert(f.unstamped == 0, "the kernel gave no receive time for %d of %d calls (SO_TIMESTAMPNS)",
            f.unstamped, n);
  const double wins[] = {100, 500, 1000};
  for (int k = 0; k < 3; k++) {
    int most = most_in_window(f.at_ms, n, wins[k]);
    double allowed = 5 + 20 * wins[k] / 1000 + 2;
    cr_assert(most <= allowed,
              "%d calls arrived within %.0f ms (lab --rate 20 --burst 5, 40 requests/s offered); "
              "a token bucket allows B + R x T = %.0f (+2). A fixed window (R per calendar "
              "second) or a window that lets R go at once sends bursts of R: the upstream's own "
              "bucket refuses them", most, wins[k], allowed - 2);
  }
}

/* After a 429 no call starts for Retry-After (2 s here, not the 1 s of a 429 that names none): at
 * the test's own server, which answers the 5th call 429 + Retry-After: 2, no call may arrive
 * (kernel receive time) within 1900 ms of that answer. Calls the lab had already sent before it
 * read the 429 arrive before the answer was written, so they do not count. Timed by the kernel, so a slow machine cannot hide a service
 * that calls on: it sends its next call one request gap (100 ms) later. */
Test(lab14, pauses_for_retry_after, .timeout = 40) {
  enum { N = 25 };
  static tk_resp_t r[N];
  static fake_t f;
  char up[64], url[160];
  tk_lab_t lab;
  f.limit_at = 5;
  fake_start(&f, 0);
  snprintf(up, sizeof up, "http://127.0.0.1:%d", f.port);
  lab_start_at(&lab, up, (const char *[]){"--rate", "20", "--burst", "10", "--max-waiting", "200",
                                          NULL});
  tk_stream(tk_lab_url(&lab, "/call?id=a", url, sizeof url), NULL, N, 10.0, 20000, r);
  tk_lab_stop(&lab, zero_fields);
  int n = fake_stop(&f), limited = 0, ok = 0;
  for (int i = 0; i < N; i++) {
    limited += r[i].status == 503 && strstr(r[i].body, "\"error\":\"rate limited\"") != NULL;
    ok += r[i].status == 200;
  }
  cr_assert(n == N && limited == 1 && ok == N - 1 && f.unstamped == 0,
            "the server saw %d calls (%d without a kernel time) for %d requests at 10/s and "
            "answered the 5th 429; the lab answered %d 503 \"rate limited\" and %d 200: want "
            "every request called once, one 503 and the rest 200", n, f.unstamped, N, limited, ok);
  double next = -1;
  for (int i = 0; i < n; i++)
    if (f.at_ms[i] > f.limited_ms && (next < 0 || f.at_ms[i] < next)) next = f.at_ms[i];
  cr_assert(next - f.limited_ms >= 1900,
            "the server answered a call 429 with Retry-After: 2 and the next call arrived %.0f ms "
            "later; want none for Retry-After (2000 ms, 1900 with a margin; client.h hands it over "
            "as retry_after_ms): a service that calls on at its own rate, or after a fixed second, "
            "keeps hitting a partner that told it to wait", next - f.limited_ms);
  /* And then from an empty bucket: the calls after the pause (a queue of about 10 waits at its
   * end) leave at R, at most R x T (+2) in any 250 ms, not B at once and R on top. */
  static double after[FAKE_MAX];
  int m = 0;
  for (int i = 0; i < n; i++)
    if (f.at_ms[i] > f.limited_ms) after[m++] = f.at_ms[i];
  qsort(after, (size_t)m, sizeof after[0], cmp_double);
  int most = most_in_window(after, m, 250);
  cr_assert(most <= 20 * 250 / 1000 + 2,
            "after the pause %d calls arrived within 250 ms (lab --rate 20 --burst 10, a queue "
            "waiting); want at most R x T = 5 (+2): after a 429 the bucket starts again from 0 "
            "tokens. One that goes on filling during the pause sends a burst of B the moment it "
            "ends, into a partner that is just recovering", most);
  /* A 429 that names no Retry-After: the pause is 1000 ms (lab.h), not none. */
  enum { N2 = 12 };
  static tk_resp_t r2[N2];
  static fake_t f2;
  f2.limit_at = 3;
  f2.bare_429 = 1;
  fake_start(&f2, 0);
  snprintf(up, sizeof up, "http://127.0.0.1:%d", f2.port);
  lab_start_at(&lab, up, (const char *[]){"--rate", "20", "--burst", "10", "--max-waiting", "200",
                                          NULL});
  tk_stream(tk_lab_url(&lab, "/call?id=a", url, sizeof url), NULL, N2, 10.0, 20000, r2);
  tk_lab_stop(&lab, zero_fields);
  int n2 = fake_stop(&f2);
  next = -1;
  for (int i = 0; i < n2; i++)
    if (f2.at_ms[i] > f2.limited_ms && (next < 0 || f2.at_ms[i] < next)) next = f2.at_ms[i];
  cr_assert(n2 == N2 && f2.unstamped == 0 && next - f2.limited_ms >= 900,
            "the server saw %d calls (%d without a kernel time) for %d requests and answered the "
            "3rd 429 with no Retry-After; the next call arrived %.0f ms later: want every request "
            "called once and none for 1000 ms (900 with a margin): retry_after_ms is 0 when the "
            "429 names none, which means the default pause, not no pause", n2, f2.unstamped, N2,
            next - f2.limited_ms);
}

/* Waiting requests are served in arrival order. */
Test(lab14, queue_is_fifo, .timeout = 30) {
  enum { N = 20 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, NULL, (const char *[]){"--rate", "10", "--burst", "1", "--max-waiting", "100", NULL});
  tk_stream(tk_lab_url(&e.lab, "/call?id=a", url, sizeof url), NULL, N, 100.0, 10000, r);
  int ok = 0, inversions = 0, fi = -1, fj = -1;
  for (int i = 0; i < N; i++) {
    ok += r[i].status == 200;
    for (int j = i + 1; j < N; j++)
      if (r[i].end_ms > r[j].end_ms + 40 && inversions++ == 0) fi = i, fj = j;
  }
  cr_assert_eq(ok, N, "%d of %d answered 200", ok, N);
  cr_assert(inversions == 0,
            "%d pairs answered out of order (the first: request %d answered %.0f ms after request "
            "%d, which came later): 20 requests at 100/s, one call every 100 ms; want the oldest "
            "waiter first (a FIFO), not the newest", inversions, fi, fi >= 0 ? r[fi].end_ms - r[fj].end_ms : 0, fj);
  env_stop(&e);
}

/* The wait queue holds at most --max-waiting; the rest are refused at once, 503 + Retry-After. */
Test(lab14, wait_queue_bounded, .timeout = 30) {
  enum { N = 40 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, NULL, (const char *[]){"--rate", "5", "--burst", "1", "--max-waiting", "10", NULL});
  tk_get_many(tk_lab_url(&e.lab, "/call?id=a", url, sizeof url), N, 10000, r);
  int ok = 0, full = 0, other = 0;
  double slow_503 = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status == 200) ok++;
    else if (r[i].status == 503 && strstr(r[i].body, "\"error\":\"queue full\"") &&
             strcmp(r[i].retry_after, "1") == 0)
      full++, slow_503 = fmax(slow_503, r[i].total_ms);
    else other++;
  }
  double peak = tk_lab_stat(&e.lab, "waiting_peak"), rejected = tk_lab_stat(&e.lab, "calls_rejected");
  cr_assert(ok >= 10 && ok <= 13 && other == 0,
            "40 requests at once, --rate 5 --burst 1 --max-waiting 10: %d answered 200, %d 503 "
            "queue full, %d something else; want 11 or so 200s (1 token + 10 waiting, and the "
            "tokens of the burst's own time) and the rest 503 {\"error\":\"queue full\"} with "
            "Retry-After: 1. A queue without a bound makes every caller wait N/R", ok, full, other);
  cr_assert(slow_503 < 1500 && peak <= 10 && peak >= 9 && rejected == full,
            "the slowest 503 took %.0f ms (want at once), waiting_peak %.0f (want 10: the queue "
            "is used up to its bound, no further), calls_rejected %.0f for %d refusals",
            slow_503, peak, rejected, full);
  env_stop(&e);
}

/* Waiting is a timer: /debug/stats answers at once while requests wait for tokens. */
Test(lab14, waiting_does_not_block, .timeout = 30) {
  enum { N = 10 };
  static tk_resp_t r[N], probe;
  char url[160], stats[160];
  env_t e;
  env_start(&e, NULL, (const char *[]){"--rate", "4", "--burst", "1", "--max-waiting", "50", NULL});
  tk_stream_t *s = tk_stream_start(tk_lab_url(&e.lab, "/call?id=a", url, sizeof url), NULL, N,
                                   200.0, 10000, r);
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
            "while %d requests waited for tokens (4 a second), GET /debug/stats took up to %.0f "
            "ms; want < 400: a limiter that sleeps (usleep until the next token) stops the loop, "
            "so waiters are served one sleep at a time and nothing else runs", N, worst);
  cr_assert(waiting >= 1, "/debug/stats showed waiting = %.0f while requests waited", waiting);
  env_stop(&e);
}

/* After a 429 nothing is sent for Retry-After: the upstream allows 5/s and the lab believes 20/s,
 * so the 429s must make it stop, not go on at 20/s. */
Test(lab14, honours_retry_after, .timeout = 40) {
  enum { N = 30 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, (const char *[]){"--rate-limit", "5", "--rate-burst", "5", NULL},
            (const char *[]){"--rate", "20", "--burst", "5", "--max-waiting", "10", NULL});
  tk_stream(tk_lab_url(&e.lab, "/call?id=a", url, sizeof url), NULL, N, 20.0, 15000, r);
  double limited = tk_upstream_stat(&e.up, "rate_limited");
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double seen = tk_lab_stat(&e.lab, "calls_rate_limited");
  int rl = 0, none = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].status == 503 && strstr(r[i].body, "\"error\":\"rate limited\"") &&
        strcmp(r[i].retry_after, "1") == 0)
      rl++;
    none += r[i].status == 0;
  }
  cr_assert(limited >= 1 && limited <= 0.3 * calls,
            "the upstream allows 5 calls/s (burst 5), the lab was told 20/s: of %.0f calls the "
            "upstream refused %.0f (%.0f%%); want some, but at most 30%%: after a 429 no call may "
            "start for Retry-After (1 s), then from an empty bucket. Calling on at 20/s gets "
            "three quarters refused", calls, limited, calls > 0 ? 100 * limited / calls : 0);
  cr_assert(rl == limited && seen == limited && none == 0,
            "%d answers were 503 {\"error\":\"rate limited\"} with Retry-After: 1 and the lab "
            "counted calls_rate_limited %.0f, for %.0f 429s from the upstream (%d unanswered); "
            "want one each", rl, seen, limited, none);
  env_stop(&e);
}

/* Below the rate nothing waits. */
Test(lab14, below_the_rate_no_wait, .timeout = 30) {
  enum { N = 40 };
  static tk_resp_t r[N];
  char url[160];
  env_t e;
  env_start(&e, NULL, (const char *[]){"--rate", "50", "--burst", "10", NULL});
  tk_stream(tk_lab_url(&e.lab, "/call?id=a", url, sizeof url), NULL, N, 20.0, 5000, r);
  int ok = 0;
  long waited = 0;
  for (int i = 0; i < N; i++) {
    ok += r[i].status == 200;
    waited = body_num(&r[i], "waited_ms") > waited ? body_num(&r[i], "waited_ms") : waited;
  }
  double peak = tk_lab_stat(&e.lab, "waiting_peak");
  cr_assert(ok == N && waited == 0 && peak == 0,
            "20 requests/s with --rate 50 --burst 10: %d of %d answered 200, the longest "
            "waited_ms %ld, waiting_peak %.0f; want all 200 with no wait: a token is always "
            "there (a limiter that spaces every call 1/R apart, or waits when it need not, "
            "adds latency for nothing)", ok, N, waited, peak);
  env_stop(&e);
}

/* Failures: 502 naming the status, one call each (never retried): a 500, an upstream that is
 * down, and garbage (a 200 whose body is not JSON). */
Test(lab14, upstream_failures_502, .timeout = 30) {
  static tk_resp_t r500, rdown, rjunk;
  static fake_t f;
  char url[160], down[64], up[64];
  env_t e;
  tk_lab_t lab;
  env_start(&e, (const char *[]){"--status", "500", NULL}, NULL);
  tk_get(tk_lab_url(&e.lab, "/call?id=a", url, sizeof url), 5000, &r500);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  snprintf(down, sizeof down, "%s", e.up.url);
  env_stop(&e); /* now nothing listens at down */
  lab_start_at(&lab, down, NULL);
  tk_get(tk_lab_url(&lab, "/call?id=a", url, sizeof url), 5000, &rdown);
  tk_lab_stop(&lab, zero_fields);
  fake_start(&f, 1);
  snprintf(up, sizeof up, "http://127.0.0.1:%d", f.port);
  lab_start_at(&lab, up, NULL);
  tk_get(tk_lab_url(&lab, "/call?id=a", url, sizeof url), 5000, &rjunk);
  tk_lab_stop(&lab, zero_fields);
  int junk_calls = fake_stop(&f);
  cr_assert(r500.status == 502 && body_num(&r500, "status") == 500 && calls == 1,
            "the upstream answered 500: got %d %s after %.0f calls; want 502 {\"error\":"
            "\"upstream\",\"status\":500} after 1", r500.status, r500.body, calls);
  cr_assert(rdown.status == 502 && body_num(&rdown, "status") == 0 && rdown.total_ms < 2000,
            "with nothing listening: got %d %s after %.0f ms; want a fast 502 with status 0",
            rdown.status, rdown.body, rdown.total_ms);
  cr_assert(rjunk.status == 502 && body_num(&rjunk, "status") == 200 && junk_calls == 1,
            "the upstream answered 200 \"<html>oops</h>\" (not JSON): got %d %s after %d calls; "
            "want 502 {\"status\":200} after 1: garbage is an error, never relayed or retried",
            rjunk.status, rjunk.body, junk_calls);
}

/* A missing or malformed id: 400 naming it, nothing sent upstream. */
Test(lab14, bad_parameters_400, .timeout = 30) {
  static const char *const cases[] = {"", "id=", "id=a%20b", "id=a/b",
                                      "id=0123456789012345678901234567890123456789012345678901234567890123"};
  static tk_resp_t r[5];
  char path[160], url[320];
  env_t e;
  env_start(&e, NULL, NULL);
  for (int i = 0; i < 5; i++) {
    snprintf(path, sizeof path, "/call?%s", cases[i]);
    tk_get(tk_lab_url(&e.lab, path, url, sizeof url), 3000, &r[i]);
  }
  double calls = tk_upstream_stat(&e.up, "requests_total");
  double total = tk_lab_stat(&e.lab, "calls_total");
  for (int i = 0; i < 5; i++)
    cr_assert(r[i].status == 400 && strstr(r[i].body, "\"param\":\"id\""),
              "GET /call?%s answered %d %s; want 400 {\"error\":\"bad parameter\",\"param\":\"id\"}",
              cases[i], r[i].status, r[i].body);
  cr_assert_eq(calls, 0, "bad requests made %.0f upstream calls, want 0", calls);
  cr_assert_eq(total, 0, "after 5 requests answered 400, calls_total is %.0f; want 0: it counts "
               "requests with a valid id", total);
  env_stop(&e);
}

/* Out-of-range options are a usage error; the ends of each range are not. */
Test(lab14, rejects_bad_options, .timeout = 30) {
  const char *const bad[][2] = {{"--rate", "0"},         {"--rate", "100001"},
                                {"--burst", "0"},        {"--burst", "100001"},
                                {"--max-waiting", "-1"}, {"--max-waiting", "100001"},
                                {"--call-timeout-ms", "0"}};
  for (int i = 0; i < 7; i++) {
    labrun_t *run = NULL;
    int rc = labrun_start(&run, &LAB_DEF, (const char *[]){bad[i][0], bad[i][1], NULL});
    if (rc == 0) labrun_stop(run, 5000, NULL);
    cr_assert_neq(rc, 0, "the lab started with %s %s; lab_create must refuse it (UV_EINVAL)",
                  bad[i][0], bad[i][1]);
  }
  const char *const good[][2] = {{"--rate", "1"},          {"--rate", "100000"},
                                 {"--burst", "1"},         {"--burst", "100000"},
                                 {"--max-waiting", "0"},   {"--max-waiting", "100000"},
                                 {"--call-timeout-ms", "1"}};
  for (int i = 0; i < 7; i++) {
    labrun_t *run = NULL;
    int rc = labrun_start(&run, &LAB_DEF, (const char *[]){good[i][0], good[i][1], NULL});
    if (rc == 0) labrun_stop(run, 5000, NULL);
    cr_assert_eq(rc, 0, "the lab refused %s %s (rc %d); it is in range (lab.h: rate 1..100000, "
                 "burst 1..100000, max-waiting 0..100000, call-timeout-ms >= 1; max-waiting 0 "
                 "means no queue)", good[i][0], good[i][1], rc);
  }
}
