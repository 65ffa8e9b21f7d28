/* The service shell's own suite: parsing edge cases, 400s, limits, keep-alive, pipelining,
 * shutdown. It drives build/bin/hello (the shell with one route, GET /) over raw sockets. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

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
