/* The service shell's own suite: parsing edge cases, 400s, limits, keep-alive, pipelining,
 * shutdown. It drives build/bin/hello (the shell with one route, GET /) over raw sockets. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "probe.h"
#include "testkit.h"

static tk_proc_t hello;

static void start_hello(void) {
  cr_assert_eq(tk_spawn(&hello, "hello", NULL), 0, "build/bin/hello did not start");
}

static void stop_hello(void) {
  int status = tk_stop(&hello);
  cr_expect_eq(status, 0, "hello exited with %d after SIGTERM, want 0 (clean shutdown)", status);
}

TestSuite(shell, .init = start_hello, .fini = stop_hello, .timeout = 20);

static int connect_hello(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)hello.port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect to hello failed");
  return fd;
}

/* Sends req (in pieces of `chunk` bytes, 0 = at once), then reads until the server closes or
 * nothing arrives for wait_ms. Returns the bytes read (NUL-terminated, malloc'ed). */
static char *exchange(const char *req, size_t len, size_t chunk, int wait_ms, int *closed) {
  int fd = connect_hello();
  size_t sent = 0;
  while (sent < len) {
    size_t n = chunk ? (len - sent < chunk ? len - sent : chunk) : len - sent;
    ssize_t w = send(fd, req + sent, n, MSG_NOSIGNAL);
    if (w <= 0) break;
    sent += (size_t)w;
    if (chunk) usleep(1000);
  }
  size_t cap = 1 << 20, got = 0;
  char *buf = malloc(cap);
  *closed = 0;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0) break;
    ssize_t r = recv(fd, buf + got, cap - 1 - got, 0);
    if (r <= 0) {
      *closed = 1;
      break;
    }
    got += (size_t)r;
  }
  buf[got] = '\0';
  close(fd);
  return buf;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

static void assert_still_up(void) {
  tk_resp_t r;
  char url[96];
  snprintf(url, sizeof url, "%s/", hello.url);
  cr_assert_eq(tk_get(url, 3000, &r), 0, "the service stopped answering after a bad request");
  cr_assert_eq(r.status, 200, "GET / answered %d after a bad request", r.status);
}

Test(shell, simple_get) {
  int closed;
  const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  char *out = exchange(req, strlen(req), 0, 300, &closed);
  cr_assert(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0, "got: %.80s", out);
  cr_assert(strstr(out, "Content-Length: 3\r\n") && strstr(out, "\r\n\r\nok\n"), "got: %s", out);
  cr_assert_not(closed, "a keep-alive connection was closed after one request");
  free(out);
}

Test(shell, garbage_gets_400_and_service_stays_up) {
  int closed;
  const char *bad[] = {"GARBAGE\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                       "\x01\x02\x03\r\n\r\n"};
  const char *want[] = {"HTTP/1.1 400 ", "HTTP/1.1 505 ", "HTTP/1.1 400 ", "HTTP/1.1 400 "};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *out = exchange(bad[i], strlen(bad[i]), 0, 1000, &closed);
    cr_assert(strncmp(out, want[i], 13) == 0, "malformed request %zu got: %.60s", i, out);
    cr_assert(closed, "the connection should close after a 400");
    free(out);
  }
  assert_still_up();
}

Test(shell, header_limit_gets_431) {
  int closed;
  size_t n = 20000;
  char *req = malloc(n + 64);
  int off = sprintf(req, "GET / HTTP/1.1\r\nX-Big: ");
  memset(req + off, 'a', n);
  strcpy(req + off + n, "\r\n\r\n");
  char *out = exchange(req, strlen(req), 0, 1000, &closed);
  cr_assert(strncmp(out, "HTTP/1.1 431 ", 13) == 0, "a 20 KB header got: %.60s", out);
  free(out);
  free(req);
  assert_still_up();
}

Test(shell, body_limit_gets_413) {
  int closed;
  const char *req = "POST / HTTP/1.1\r\nContent-Length: 50000000\r\n\r\nabc";
  char *out = exchange(req, strlen(req), 0, 1000, &closed);
  cr_assert(strncmp(out, "HTTP/1.1 413 ", 13) == 0, "a 50 MB body got: %.60s", out);
  free(out);
  assert_still_up();
}

Test(shell, unknown_path_404_wrong_method_405) {
  int closed;
  const char *req = "GET /nope HTTP/1.1\r\n\r\nDELETE / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
  char *out = exchange(req, strlen(req), 0, 500, &closed);
  char *second = strstr(out + 1, "HTTP/1.1 ");
  cr_assert(strncmp(out, "HTTP/1.1 404 ", 13) == 0, "GET /nope got: %.60s", out);
  cr_assert(second && strncmp(second, "HTTP/1.1 405 ", 13) == 0, "DELETE / got: %.60s",
            second ? second : "(nothing)");
  free(out);
}

Test(shell, pipelined_answers_in_order) {
  int closed;
  char req[64 * 40] = "";
  for (int i = 0; i < 40; i++) {
    char one[64];
    snprintf(one, sizeof one, "GET /p%02d HTTP/1.1\r\n\r\n", i);
    strcat(req, one);
  }
  char *out = exchange(req, strlen(req), 0, 500, &closed);
  cr_assert_eq(count(out, "HTTP/1.1 404"), 40, "40 pipelined requests got %d answers",
               count(out, "HTTP/1.1 404"));
  const char *p = out;
  for (int i = 0; i < 40; i++) {
    char want[32];
    snprintf(want, sizeof want, "no such path: /p%02d", i);
    const char *at = strstr(p, want);
    cr_assert(at != NULL, "answer %d missing or out of order", i);
    p = at;
  }
  free(out);
}

Test(shell, request_split_byte_by_byte) {
  int closed;
  const char *req = "GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowpoke\r\n\r\n";
  char *out = exchange(req, strlen(req), 1, 500, &closed);
  cr_assert(strncmp(out, "HTTP/1.1 200 OK", 15) == 0, "a request sent a byte at a time got: %.60s", out);
  free(out);
}

Test(shell, chunked_body_is_read) {
  int closed;
  const char *req = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                    "GET / HTTP/1.1\r\n\r\n";
  char *out = exchange(req, strlen(req), 0, 500, &closed);
  cr_assert(strncmp(out, "HTTP/1.1 405 ", 13) == 0, "chunked POST / got: %.60s", out);
  cr_assert(strstr(out, "HTTP/1.1 200 OK"), "the request after a chunked body was lost: %s", out);
  free(out);
}

Test(shell, http10_and_connection_close_close) {
  int closed;
  const char *reqs[] = {"GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"};
  for (int i = 0; i < 2; i++) {
    char *out = exchange(reqs[i], strlen(reqs[i]), 0, 2000, &closed);
    cr_assert(strstr(out, "200 OK") && strstr(out, "Connection: close\r\n"), "got: %.80s", out);
    cr_assert(closed, "the server kept the connection open after %s",
              i ? "Connection: close" : "an HTTP/1.0 request");
    free(out);
  }
}

Test(shell, keep_alive_reuses_one_connection) {
  int closed;
  char stats[96];
  snprintf(stats, sizeof stats, "%s/debug/stats", hello.url);
  tk_post_empty(stats); /* restart the counters: this POST is one connection */
  const char *req = "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
  char *out = exchange(req, strlen(req), 0, 300, &closed);
  cr_assert_eq(count(out, "200 OK"), 3, "3 keep-alive requests got %d answers", count(out, "200 OK"));
  free(out);
  double accepted = tk_stat(stats, "connections_accepted");
  /* the reset POST's connection, ours, and the stats GET's */
  cr_assert_leq(accepted, 3, "connections_accepted = %.0f for 3 keep-alive requests", accepted);
}

Test(shell, debug_stats_fields) {
  char stats[96];
  tk_resp_t r;
  snprintf(stats, sizeof stats, "%s/debug/stats", hello.url);
  cr_assert_eq(tk_get(stats, 3000, &r), 0, "GET /debug/stats failed");
  const char *fields[] = {"loop_lag_max_ms", "loop_lag_p99_ms", "idle_fraction", "inflight",
                          "requests_total",  "handles",         "rss_kb",        "fds",
                          "probe_cost_us"};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    double v = tk_json_number(r.body, fields[i]);
    cr_assert(v == v, "/debug/stats lacks %s: %s", fields[i], r.body);
  }
  cr_assert_gt(tk_json_number(r.body, "rss_kb"), 0, "rss_kb should be positive");
  cr_assert_lt(tk_json_number(r.body, "probe_cost_us"), 1000, "the lag probe costs too much");
}

Test(shell_cli, usage_errors_exit_2, .timeout = 10) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s/hello --bogus 2>/dev/null", tk_bin_dir());
  int st = system(cmd);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "hello --bogus exited %d, want 2",
            WEXITSTATUS(st));
  snprintf(cmd, sizeof cmd, "%s/hello --help >/dev/null", tk_bin_dir());
  st = system(cmd);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "hello --help exited %d, want 0",
            WEXITSTATUS(st));
}

/* A client that pipelines requests and never reads the answers: the shell stops reading it once
 * max_pipeline answers wait to be written, so its sends back up in TCP instead of the shell
 * buffering answers without bound. Then it closes with a reset while answers are being written:
 * the shell must survive the EPIPE (SIGPIPE ignored; the fixture checks hello exits 0). */
Test(shell, a_client_that_never_reads_is_pushed_back) {
  static const char one[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  char chunk[64 * 1024];
  size_t per = sizeof one - 1, n = sizeof chunk / per, sent = 0, limit = 200u << 20;
  int fd = connect_hello();
  double stalled_since = 0, queued;
  char stats[96];

  snprintf(stats, sizeof stats, "%s/debug/stats", hello.url);
  for (size_t i = 0; i < n; i++) memcpy(chunk + i * per, one, per);
  cr_assert_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0, "fcntl: %s", strerror(errno));
  while (sent < limit) {
    ssize_t w = send(fd, chunk, n * per, MSG_NOSIGNAL);
    if (w > 0) {
      sent += (size_t)w;
      stalled_since = 0;
      continue;
    }
    cr_assert(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "send: %s", strerror(errno));
    if (stalled_since == 0) stalled_since = tk_now_ms();
    if (tk_now_ms() - stalled_since > 1000) break; /* the server stopped reading us */
    usleep(10 * 1000);
  }
  queued = tk_stat(stats, "write_queue_bytes");
  cr_assert_lt(queued, 64 * 1024.0,
               "after %zu MB of pipelined requests from a client that reads no answer, hello "
               "holds %.0f bytes of answers it cannot send: the shell buffers answers without "
               "bound instead of pushing back", sent >> 20, queued);
  shutdown(fd, SHUT_WR);
  close(fd); /* unread answers: a reset */
  usleep(200 * 1000);
  assert_still_up();
}

/* ---- slow clients: timeouts on a hello with short ones ---- */

static tk_proc_t slowhello;

static void start_slow_hello(void) {
  const char *args[] = {"--header-timeout-ms", "300", "--idle-timeout-ms", "400", NULL};
  cr_assert_eq(tk_spawn(&slowhello, "hello", args), 0, "build/bin/hello did not start");
}

static void stop_slow_hello(void) {
  int status = tk_stop(&slowhello);
  cr_expect_eq(status, 0, "hello exited with %d after SIGTERM, want 0 (clean shutdown)", status);
}

TestSuite(shell_timeouts, .init = start_slow_hello, .fini = stop_slow_hello, .timeout = 30);

static int connect_port(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect failed");
  return fd;
}

/* Reads until the server closes (returns ms from t0 to the EOF) or timeout_ms pass (-1). */
static double wait_close(int fd, double t0, int timeout_ms, char *buf, size_t len) {
  size_t got = 0;
  double end = tk_now_ms() + timeout_ms;
  buf[0] = '\0';
  while (tk_now_ms() < end) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 20) <= 0) continue;
    ssize_t r = recv(fd, buf + got, len - 1 - got, 0);
    if (r <= 0) return tk_now_ms() - t0;
    got += (size_t)r;
    buf[got] = '\0';
  }
  return -1;
}

Test(shell_timeouts, a_half_sent_request_gets_408_after_the_header_timeout) {
  char buf[1024], stats[96];
  int fd = connect_port(slowhello.port);
  double t0 = tk_now_ms(), closed_ms;

  send(fd, "GET / HTTP/1.1\r\nHost: x\r\n", 25, MSG_NOSIGNAL); /* no blank line: never ends */
  closed_ms = wait_close(fd, t0, 5000, buf, sizeof buf);
  close(fd);
  cr_assert_geq(closed_ms, 0, "a half-sent request was still open after 5 s: no header timeout");
  cr_assert_geq(closed_ms, 290, "closed after %.0f ms, before the 300 ms header timeout",
                closed_ms);
  cr_assert(strncmp(buf, "HTTP/1.1 408 ", 13) == 0, "a half-sent request got: %.60s", buf);

  /* Silent from the start: closed too, without an answer. */
  fd = connect_port(slowhello.port);
  t0 = tk_now_ms();
  closed_ms = wait_close(fd, t0, 5000, buf, sizeof buf);
  close(fd);
  cr_assert_geq(closed_ms, 290, "a silent connection closed after %.0f ms (want >= 300, < 5 s)",
                closed_ms);
  cr_assert_eq(buf[0], '\0', "a connection that sent nothing got an answer: %.60s", buf);
  snprintf(stats, sizeof stats, "%s/debug/stats", slowhello.url);
  cr_assert_eq(tk_stat(stats, "header_timeouts"), 2.0, "/debug/stats header_timeouts");
  cr_assert_eq(tk_stat(stats, "bad_requests"), 0.0, "a 408 is not a malformed request");
}

Test(shell_timeouts, a_slow_but_steady_request_and_keep_alive_under_the_idle_timeout) {
  static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  char buf[1024], stats[96];
  int fd = connect_port(slowhello.port);
  double t0;

  /* Each request well within the header timeout, 200 ms apart (under the 400 ms idle timeout):
   * over 1.2 s the connection lives on. */
  for (int i = 0; i < 6; i++) {
    cr_assert_eq(send(fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)(sizeof req - 1),
                 "send %d: the connection was closed while it kept busy", i);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_gt(poll(&p, 1, 3000), 0, "request %d: no answer", i);
    cr_assert_gt(recv(fd, buf, sizeof buf - 1, 0), 0, "request %d: closed", i);
    usleep(200 * 1000);
  }
  /* Then idle: closed after the idle timeout, counted. */
  t0 = tk_now_ms();
  double closed_ms = wait_close(fd, t0, 5000, buf, sizeof buf);
  close(fd);
  cr_assert_geq(closed_ms, 190, "an idle keep-alive connection closed %.0f ms after its last "
                "answer (+200 ms): before the 400 ms idle timeout", closed_ms);
  cr_assert_lt(closed_ms, 3000, "an idle keep-alive connection was not closed");
  snprintf(stats, sizeof stats, "%s/debug/stats", slowhello.url);
  cr_assert_eq(tk_stat(stats, "idle_timeouts"), 1.0, "/debug/stats idle_timeouts");
}

/* ---- abuse: more slow clients than fds ---- */

typedef struct slow_conn {
  int fd;
  int sent; /* the half request went out */
} slow_conn_t;

static void slow_open(slow_conn_t *c, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  c->sent = 0;
  cr_assert_geq(c->fd, 0, "socket: %s", strerror(errno));
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS)
    cr_assert_fail("connect: %s", strerror(errno));
}

/* One pass over the slow clients: each connected one sends half a request (and never the rest);
 * each the server closed (shed, timed out) is opened again, as a slowloris attack does. Returns
 * how many the server closed. */
static int slow_pump(slow_conn_t *c, int n, int port, struct pollfd *p) {
  static const char half[] = "GET /work HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  int closed = 0;
  for (int i = 0; i < n; i++)
    p[i] = (struct pollfd){.fd = c[i].fd, .events = c[i].sent ? POLLIN : POLLOUT};
  if (poll(p, (nfds_t)n, 10) <= 0) return 0;
  for (int i = 0; i < n; i++) {
    char buf[512];
    if (p[i].revents == 0) continue;
    if (!c[i].sent && (p[i].revents & POLLOUT) && !(p[i].revents & (POLLERR | POLLHUP))) {
      c[i].sent = send(c[i].fd, half, sizeof half - 1, MSG_NOSIGNAL) > 0;
      if (c[i].sent) continue;
    } else if (c[i].sent && recv(c[i].fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
      continue; /* a 408 before the close */
    }
    close(c[i].fd);
    closed++;
    slow_open(&c[i], port);
  }
  return closed;
}

/* The figure of issue 11: 1,100 slow half-sent connections against a lab service that may open
 * 1024 fds. The shell caps its connections below the fd limit and, at the cap, sheds the
 * connection that has waited longest for a request, so health checks keep getting in. */
Test(shell_abuse, slow_clients_cannot_take_every_fd, .timeout = 120) {
  enum { SLOW = 1100, SVC_NOFILE = 1024 };
  const char *args[] = {"--delay-ms", "0", NULL};
  slow_conn_t *c = calloc(SLOW, sizeof *c);
  struct pollfd *p = calloc(SLOW, sizeof *p);
  struct rlimit saved, low;
  tk_proc_t lab;
  tk_resp_t r;
  char stats[96], work[96];
  int checks = 0, failed = 0, reopened = 0;
  double worst = 0, t_end;

  cr_assert(c != NULL && p != NULL);
  cr_assert_eq(getrlimit(RLIMIT_NOFILE, &saved), 0, "getrlimit: %s", strerror(errno));
  cr_assert_geq(saved.rlim_max, (rlim_t)SLOW + 200, "this test needs %d fds itself", SLOW + 200);
  if (saved.rlim_cur < (rlim_t)SLOW + 200) { /* the test's own side */
    saved.rlim_cur = (rlim_t)SLOW + 200;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &saved), 0, "setrlimit: %s", strerror(errno));
  }
  low = saved;
  low.rlim_cur = SVC_NOFILE; /* inherited by the lab service only: restored right after the spawn */
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0, "setrlimit: %s", strerror(errno));
  int spawned = tk_spawn(&lab, "lab01-solution", args);
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &saved), 0, "setrlimit: %s", strerror(errno));
  cr_assert_eq(spawned, 0, "build/bin/lab01-solution did not start");
  snprintf(stats, sizeof stats, "%s/debug/stats", lab.url);
  snprintf(work, sizeof work, "%s/work", lab.url);

  for (int i = 0; i < SLOW; i++) slow_open(&c[i], lab.port);
  /* Health checks every 100 ms for 8 s while the slow clients hold on (and come back). */
  t_end = tk_now_ms() + 8000;
  while (tk_now_ms() < t_end) {
    const char *url = checks % 2 ? work : stats;
    double next = tk_now_ms() + 100;
    while (tk_now_ms() < next) reopened += slow_pump(c, SLOW, lab.port, p);
    tk_get(url, 1000, &r);
    checks++;
    if (r.status != 200) {
      failed++;
      fprintf(stderr, "health check %d (%s): status %d, curl code %d, after %.0f ms\n", checks,
              url, r.status, r.curl_code, r.total_ms);
    }
    else if (r.total_ms > worst) worst = r.total_ms;
  }
  double cmax = tk_stat(stats, "connections_max"), shed = tk_stat(stats, "connections_shed");
  double open = tk_stat(stats, "connections_open"), fds = tk_stat(stats, "fds");
  fprintf(stderr,
          "figure: %d slow half-sent connections (re-opened when closed: %d) against "
          "lab01-solution with nofile %d: %d health checks (/debug/stats, /work), %d failed, "
          "slowest %.1f ms; the service: connections_max %.0f, open %.0f, fds %.0f, shed %.0f\n",
          SLOW, reopened, SVC_NOFILE, checks, failed, worst, cmax, open, fds, shed);
  cr_assert_eq(failed, 0, "%d of %d health checks got no answer within 1 s while %d slow "
               "clients held on: slow clients can take every fd", failed, checks, SLOW);
  cr_assert_leq(cmax, SVC_NOFILE * 0.8, "connections_max %.0f leaves too few of %d fds", cmax,
                SVC_NOFILE);
  cr_assert_gt(shed, 0, "no connection was shed, so the test did not reach the limit");
  for (int i = 0; i < SLOW; i++) close(c[i].fd);
  int rc = tk_stop(&lab);
  cr_assert_eq(rc, 0, "lab01-solution exited %d after SIGTERM", rc);
  free(c);
  free(p);
}

/* The stall detector's tests (suite shell_stall) are in harness/tests/stall.c. */
