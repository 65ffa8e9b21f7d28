/* harness/tests/upstream.c - build/bin/upstream, the fake downstream API: each knob does what it
 * says and /stats counts exactly.
 *
 * Every test starts its own upstream child process (tk_spawn) with the flags it needs. Times are
 * checked as floors ("no earlier than latency_ms") and ratios, never as tight upper bounds: the
 * machine is shared. Raw sockets are used where libcurl would hide what we look at (a request
 * left hanging, a connection held open, bytes that are not HTTP).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
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

/* ---- helpers ---- */

static void up_start(tk_proc_t *up, const char *const *args) {
  cr_assert_eq(tk_spawn(up, "upstream", args), 0,
               "could not start %s/upstream --port 0: is it built (make)?", tk_bin_dir());
}

static void up_stop(tk_proc_t *up) {
  int rc = tk_stop(up);
  cr_expect_eq(rc, 0, "upstream exited with %d after SIGTERM, expected 0: look at its shutdown",
               rc);
}

static void up_url(const tk_proc_t *up, const char *path_query, char *out, size_t len) {
  snprintf(out, len, "%s%s", up->url, path_query);
}

/* GET up->url + path_query on a fresh connection; asserts an HTTP answer arrived. */
static void up_get(const tk_proc_t *up, const char *path_query, tk_resp_t *r) {
  char url[256];
  up_url(up, path_query, url, sizeof url);
  cr_assert_eq(tk_get(url, 5000, r), 0, "GET %s: no HTTP answer (curl code %d)", path_query,
               r->curl_code);
}

/* One GET /stats; fields are then read with tk_json_number(r->body, ...). */
static void up_stats(const tk_proc_t *up, tk_resp_t *r) {
  up_get(up, "/stats", r);
  cr_assert_eq(r->status, 200, "GET /stats answered %d", r->status);
}

static double up_stat(const tk_proc_t *up, const char *field) {
  char url[128];
  up_url(up, "/stats", url, sizeof url);
  return tk_stat(url, field);
}

/* Polls /stats until field == want (at most timeout_ms); returns the last value read. */
static double up_wait_stat(const tk_proc_t *up, const char *field, double want, double timeout_ms) {
  double end = tk_now_ms() + timeout_ms, v;
  while ((v = up_stat(up, field)) != want && tk_now_ms() < end) usleep(20 * 1000);
  return v;
}

/* A raw TCP connection to the upstream, for what libcurl would hide. */
static int raw_connect(int port) {
  struct sockaddr_in addr;
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0, "connect: %s",
               strerror(errno));
  return fd;
}

static void raw_send(int fd, const char *text) {
  size_t len = strlen(text);
  cr_assert_eq(send(fd, text, len, MSG_NOSIGNAL), (ssize_t)len, "send: %s", strerror(errno));
}

/* Reads what arrives within timeout_ms (stops at the first chunk). Returns the byte count, 0 on
 * timeout or EOF. */
static size_t raw_recv(int fd, char *buf, size_t len, int timeout_ms) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  ssize_t n;

  buf[0] = '\0';
  if (poll(&pfd, 1, timeout_ms) <= 0) return 0;
  n = recv(fd, buf, len - 1, 0);
  if (n <= 0) return 0;
  buf[n] = '\0';
  return (size_t)n;
}

/* Runs build/bin/upstream with args (no --port added); returns its exit status, and what it wrote
 * on fd (STDOUT_FILENO or STDERR_FILENO) in out. Kills it after 3 s: a usage error must not start
 * a server. */
static int run_upstream(const char *const *args, int fd, char *out, size_t out_len) {
  char path[512];
  const char *argv[16];
  int pipefd[2], status = 0, argc = 0;
  size_t len = 0;
  pid_t pid;
  double end;

  snprintf(path, sizeof path, "%s/upstream", tk_bin_dir());
  argv[argc++] = path;
  for (int i = 0; args[i] != NULL && argc < 15; i++) argv[argc++] = args[i];
  argv[argc] = NULL;
  cr_assert_eq(pipe(pipefd), 0, "pipe: %s", strerror(errno));
  pid = fork();
  cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    int null_fd = open("/dev/null", O_WRONLY);
    dup2(null_fd, fd == STDOUT_FILENO ? STDERR_FILENO : STDOUT_FILENO);
    dup2(pipefd[1], fd);
    close(pipefd[0]);
    close(pipefd[1]);
    execv(path, (char *const *)argv);
    _exit(127);
  }
  close(pipefd[1]);
  end = tk_now_ms() + 3000;
  for (;;) {
    struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
    ssize_t n;
    if (tk_now_ms() > end) {
      kill(pid, SIGKILL);
      break;
    }
    if (poll(&pfd, 1, 50) <= 0) continue;
    n = read(pipefd[0], out + len, out_len - 1 - len);
    if (n <= 0) break; /* EOF: it exited */
    len += (size_t)n;
    if (len == out_len - 1) len = 0; /* keep reading so it never blocks on a full pipe */
  }
  out[len] = '\0';
  close(pipefd[0]);
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- latency and jitter ---- */

Test(upstream, latency_is_a_floor_and_requests_overlap, .timeout = 20) {
  const char *args[] = {"--latency-ms", "300", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(22, sizeof *r);
  double first_start = INFINITY, last_end = 0;
  int n;

  cr_assert_not_null(r);
  up_start(&up, args);

  up_get(&up, "/slow", &r[0]);
  cr_assert_eq(r[0].status, 200, "GET /slow answered %d, expected 200", r[0].status);
  cr_assert_geq(r[0].total_ms, 299.0,
                "--latency-ms 300 but the answer came after %.1f ms: the delay is not applied",
                r[0].total_ms);
  cr_assert_eq(tk_json_number(r[0].body, "latency_ms"), 300.0, "body: %s", r[0].body);

  up_get(&up, "/fast?latency_ms=0", &r[1]);
  cr_assert_eq(tk_json_number(r[1].body, "latency_ms"), 0.0,
               "latency_ms=0 must override --latency-ms 300; body: %s", r[1].body);
  cr_assert_lt(r[1].total_ms, r[0].total_ms,
               "latency_ms=0 took %.1f ms, not less than the 300 ms one (%.1f ms)",
               r[1].total_ms, r[0].total_ms);

  /* 20 slow requests at once: a loop that waits with timers answers them together. */
  n = tk_get_many(up.url, 20, 5000, &r[2]);
  cr_assert_eq(n, 20, "only %d of 20 concurrent GETs were answered", n);
  for (int i = 2; i < 22; i++) {
    cr_assert_geq(r[i].total_ms, 299.0, "concurrent GET %d answered after %.1f ms < 300 ms", i,
                  r[i].total_ms);
    if (r[i].start_ms < first_start) first_start = r[i].start_ms;
    if (r[i].end_ms > last_end) last_end = r[i].end_ms;
  }
  cr_assert_lt(last_end - first_start, 20 * 300 / 4.0,
               "20 concurrent 300 ms requests took %.0f ms in all, at least a quarter of 20 x 300 "
               "ms: the upstream serializes its delays",
               last_end - first_start);

  up_stats(&up, &r[0]);
  cr_assert_eq(tk_json_number(r[0].body, "requests_total"), 22.0, "/stats: %s", r[0].body);
  cr_assert_eq(tk_json_number(r[0].body, "responses_2xx"), 22.0, "/stats: %s", r[0].body);
  cr_assert_eq(tk_json_number(r[0].body, "inflight"), 0.0, "/stats: %s", r[0].body);
  cr_assert_geq(tk_json_number(r[0].body, "inflight_peak"), 10.0,
                "20 overlapping 300 ms requests but inflight_peak is below 10: %s", r[0].body);
  cr_assert_leq(tk_json_number(r[0].body, "inflight_peak"), 20.0, "/stats: %s", r[0].body);
  up_stop(&up);
  free(r);
}

Test(upstream, jitter_stays_within_its_range, .timeout = 20) {
  const char *args[] = {"--latency-ms", "20", "--jitter-ms", "80", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(16, sizeof *r);
  double seen[16];
  int n, distinct = 0;

  cr_assert_not_null(r);
  up_start(&up, args);
  n = tk_get_many(up.url, 16, 5000, r);
  cr_assert_eq(n, 16, "only %d of 16 concurrent GETs were answered", n);
  for (int i = 0; i < 16; i++) {
    double lat = tk_json_number(r[i].body, "latency_ms");
    int dup = 0;
    cr_assert(lat >= 20 && lat <= 100, "latency 20 + jitter 80 gave %.0f ms, outside 20..100",
              lat);
    cr_assert_geq(r[i].total_ms, lat - 1, "drew %.0f ms but answered after %.1f ms", lat,
                  r[i].total_ms);
    for (int j = 0; j < distinct; j++) dup |= seen[j] == lat;
    if (!dup) seen[distinct++] = lat;
  }
  cr_assert_geq(distinct, 3, "16 draws of jitter 0..80 ms gave only %d distinct latencies",
                distinct);
  up_stop(&up);
  free(r);
}

/* ---- status and failures ---- */

Test(upstream, status_flag_and_query, .timeout = 15) {
  const char *args[] = {"--status", "404", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);

  cr_assert_not_null(r);
  up_start(&up, args);
  up_get(&up, "/a", r);
  cr_assert_eq(r->status, 404, "--status 404 but GET /a answered %d", r->status);
  up_get(&up, "/a?status=503&latency_ms=5", r);
  cr_assert_eq(r->status, 503, "status=503 must override --status; answered %d", r->status);
  cr_assert_geq(r->total_ms, 4.0, "status=503&latency_ms=5 answered after %.1f ms", r->total_ms);
  up_get(&up, "/a?status=200", r);
  cr_assert_eq(r->status, 200, "status=200 answered %d", r->status);
  up_get(&up, "/a?status=99", r);
  cr_assert_eq(r->status, 400, "status=99 is out of range and must get 400, got %d", r->status);
  cr_assert(strstr(r->body, "status") != NULL, "the 400 must name the bad knob: %s", r->body);

  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "responses_2xx"), 1.0, "/stats: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "responses_4xx"), 2.0, "/stats: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "responses_5xx"), 1.0, "/stats: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "requests_total"), 4.0, "/stats: %s", r->body);
  up_stop(&up);
  free(r);
}

Test(upstream, fail_rate_is_deterministic, .timeout = 15) {
  const char *args[] = {"--fail-rate", "0.25", NULL};
  char reset[128];
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);

  cr_assert_not_null(r);
  up_start(&up, args);
  for (int i = 1; i <= 12; i++) {
    up_get(&up, "/f", r);
    cr_assert_eq(r->status, i % 4 == 0 ? 500 : 200,
                 "--fail-rate 0.25: request %d answered %d; every 4th (and only it) must be 500",
                 i, r->status);
  }
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "responses_5xx"), 3.0, "/stats: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "responses_2xx"), 9.0, "/stats: %s", r->body);

  /* A reset restarts the sequence: the 4th request after it fails again. */
  up_url(&up, "/stats/reset", reset, sizeof reset);
  cr_assert_eq(tk_post_empty(reset), 200, "POST /stats/reset failed");
  for (int i = 1; i <= 4; i++) {
    up_get(&up, "/f", r);
    cr_assert_eq(r->status, i == 4 ? 500 : 200, "after reset, request %d answered %d", i,
                 r->status);
  }
  up_stop(&up);
  free(r);
}

/* ---- hang and abandon ---- */

Test(upstream, hang_stays_in_flight_until_the_client_leaves, .timeout = 20) {
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char url[128], buf[512];
  double v;
  int fd;

  cr_assert_not_null(r);
  up_start(&up, NULL);
  fd = raw_connect(up.port);
  raw_send(fd, "GET /h?hang=1&id=h1 HTTP/1.1\r\nHost: up\r\n\r\n");
  v = up_wait_stat(&up, "inflight", 1, 3000);
  cr_assert_eq(v, 1.0, "a hang=1 request must stay in flight; inflight is %.0f", v);
  cr_assert_eq(raw_recv(fd, buf, sizeof buf, 300), 0, "hang=1 answered: %s", buf);
  cr_assert_eq(up_stat(&up, "abandoned"), 0.0, "abandoned counted while the client waits");

  close(fd); /* the client goes away */
  v = up_wait_stat(&up, "abandoned", 1, 3000);
  cr_assert_eq(v, 1.0, "the client closed its hung request but abandoned is %.0f, not 1", v);
  cr_assert_eq(up_stat(&up, "inflight"), 0.0, "an abandoned request is no longer in flight");

  /* The same through libcurl: a client-side timeout abandons the request. */
  up_url(&up, "/h?hang=1", url, sizeof url);
  tk_get(url, 200, r);
  cr_assert_eq(r->status, 0, "hang=1 must never answer, but answered %d", r->status);
  v = up_wait_stat(&up, "abandoned", 2, 3000);
  cr_assert_eq(v, 2.0, "a client that timed out must count as abandoned; abandoned is %.0f", v);

  /* A slow (not hung) request abandoned before its latency is counted too. */
  up_url(&up, "/slow?latency_ms=2000", url, sizeof url);
  tk_get(url, 200, r);
  v = up_wait_stat(&up, "abandoned", 3, 3000);
  cr_assert_eq(v, 3.0, "a slow request whose client left must count as abandoned: %.0f", v);
  cr_assert_eq(up_stat(&up, "responses_2xx"), 0.0, "abandoned requests are not responses");
  up_stop(&up);
  free(r);
}

/* ---- connect cost ---- */

static size_t sink(char *ptr, size_t size, size_t nmemb, void *userdata) {
  tk_resp_t *r = userdata;
  size_t n = size * nmemb, room = sizeof r->body - 1 - r->body_len;
  memcpy(r->body + r->body_len, ptr, n < room ? n : room);
  r->body_len += n < room ? n : room;
  r->body[r->body_len] = '\0';
  return n;
}

/* GET on an existing easy handle, so that libcurl keeps and reuses its connection. */
static void keepalive_get(CURL *e, const char *url, tk_resp_t *r, long *new_conns) {
  long status = 0;
  double t0;

  memset(r, 0, sizeof *r);
  cr_assert_eq(curl_easy_setopt(e, CURLOPT_URL, url), CURLE_OK);
  cr_assert_eq(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink), CURLE_OK);
  cr_assert_eq(curl_easy_setopt(e, CURLOPT_WRITEDATA, r), CURLE_OK);
  cr_assert_eq(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L), CURLE_OK);
  t0 = tk_now_ms();
  r->curl_code = curl_easy_perform(e);
  r->total_ms = tk_now_ms() - t0;
  cr_assert_eq(r->curl_code, CURLE_OK, "GET %s: %s", url, curl_easy_strerror(r->curl_code));
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, new_conns);
  r->status = (int)status;
}

Test(upstream, connect_cost_only_on_a_new_connection, .timeout = 20) {
  const char *args[] = {"--connect-cost-ms", "400", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(3, sizeof *r);
  char url[128];
  long new_conns = -1;
  CURL *e;

  cr_assert_not_null(r);
  up_start(&up, args);
  up_url(&up, "/cc", url, sizeof url);
  e = curl_easy_init();
  cr_assert_not_null(e, "curl_easy_init failed");

  keepalive_get(e, url, &r[0], &new_conns);
  cr_assert_eq(new_conns, 1, "the first GET must open a connection");
  cr_assert_geq(r[0].total_ms, 399.0,
                "--connect-cost-ms 400: the first request on a connection took only %.1f ms",
                r[0].total_ms);
  cr_assert_eq(tk_json_number(r[0].body, "connect_cost_ms"), 400.0, "body: %s", r[0].body);

  keepalive_get(e, url, &r[1], &new_conns);
  cr_assert_eq(new_conns, 0, "the second GET did not reuse the connection: the test is broken");
  cr_assert_eq(tk_json_number(r[1].body, "connect_cost_ms"), 0.0,
               "the second request on a kept-alive connection must not pay the connect cost: %s",
               r[1].body);
  cr_assert_lt(r[1].total_ms, r[0].total_ms / 2,
               "second request on the same connection took %.1f ms vs %.1f ms for the first",
               r[1].total_ms, r[0].total_ms);
  curl_easy_cleanup(e);

  /* A new connection pays again. */
  up_get(&up, "/cc", &r[2]);
  cr_assert_geq(r[2].total_ms, 399.0, "a new connection took only %.1f ms", r[2].total_ms);
  up_stop(&up);
  free(r);
}

/* ---- max-conns ---- */

Test(upstream, max_conns_holds_the_next_connection_back, .timeout = 20) {
  const char *args[] = {"--max-conns", "2", NULL};
  const char *get = "GET /m HTTP/1.1\r\nHost: up\r\n\r\n";
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char buf[1024];
  int a, b, c;

  cr_assert_not_null(r);
  up_start(&up, args);
  /* Two connections, each served once, so both are surely accepted and held open. */
  a = raw_connect(up.port);
  raw_send(a, get);
  cr_assert_gt(raw_recv(a, buf, sizeof buf, 3000), 0, "connection 1 got no answer");
  b = raw_connect(up.port);
  raw_send(b, get);
  cr_assert_gt(raw_recv(b, buf, sizeof buf, 3000), 0, "connection 2 got no answer");

  /* The third completes its TCP handshake in the kernel's backlog but is not served. */
  c = raw_connect(up.port);
  raw_send(c, get);
  cr_assert_eq(raw_recv(c, buf, sizeof buf, 500), 0,
               "--max-conns 2 but a 3rd connection was served while 2 were open: %.40s", buf);

  close(a); /* a slot frees up: the waiting connection is accepted and answered */
  cr_assert_gt(raw_recv(c, buf, sizeof buf, 3000), 0,
               "a slot was freed but the waiting connection got no answer within 3 s");
  cr_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0, "waiting connection got: %.40s", buf);
  close(b);
  close(c);

  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "connections_peak"), 2.0,
               "--max-conns 2 but connections_peak is above 2: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "connections_accepted"), 4.0,
               "3 connections and this /stats one: %s", r->body);
  up_stop(&up);
  free(r);
}

Test(upstream, stats_answers_while_max_conns_are_busy, .timeout = 20) {
  const char *args[] = {"--max-conns", "2", NULL};
  const char *slow = "GET /slow?latency_ms=10000 HTTP/1.1\r\nHost: up\r\n\r\n";
  const char *get = "GET /m HTTP/1.1\r\nHost: up\r\n\r\n";
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char buf[1024];
  int a, b, c;

  cr_assert_not_null(r);
  up_start(&up, args);
  /* Both slots hold a request in flight, as a lab's full pool does. */
  a = raw_connect(up.port);
  raw_send(a, slow);
  b = raw_connect(up.port);
  raw_send(b, slow);
  cr_assert_eq(up_wait_stat(&up, "inflight", 2, 3000), 2.0,
               "two slow requests should be in flight on the two allowed connections");

  /* An API request on a third connection still waits for a slot ... */
  c = raw_connect(up.port);
  raw_send(c, get);
  cr_assert_eq(raw_recv(c, buf, sizeof buf, 300), 0,
               "--max-conns 2 but a 3rd connection was served while 2 were busy: %.40s", buf);
  /* ... but the counters answer, and count neither the waiting connection nor their own. */
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "connections_open"), 2.0,
               "at the limit /stats must not take a slot, nor count the waiting one: %s",
               r->body);
  cr_assert_eq(tk_json_number(r->body, "connections_accepted"), 2.0,
               "only the two connections with a slot count: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "requests_total"), 2.0,
               "the waiting request is not received until it has a slot: %s", r->body);
  up_get(&up, "/stats", r); /* over the limit again: each /stats connection gives its place back */
  cr_assert_eq(r->status, 200, "a second GET /stats at the limit answered %d", r->status);

  close(a); /* a slot frees up: the waiting request is served, and counted */
  cr_assert_gt(raw_recv(c, buf, sizeof buf, 3000), 0,
               "a slot was freed but the waiting connection got no answer within 3 s");
  cr_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0, "waiting connection got: %.40s", buf);
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "connections_accepted"), 3.0,
               "the waiting connection counts once it has a slot: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "connections_peak"), 2.0,
               "--max-conns 2 but connections_peak is above 2: %s", r->body);
  close(b);
  close(c);
  up_stop(&up);
  free(r);
}

/* ---- workers ---- */

/* Reads one whole answer (headers and body) from fd within timeout_ms; returns its length. */
static size_t raw_recv_answer(int fd, char *buf, size_t len, int timeout_ms) {
  size_t got = 0;
  double end = tk_now_ms() + timeout_ms;
  buf[0] = '\0';
  while (got + 1 < len && tk_now_ms() < end) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    const char *body;
    ssize_t n;
    if (poll(&pfd, 1, 20) <= 0) continue;
    n = recv(fd, buf + got, len - 1 - got, 0);
    if (n <= 0) break;
    got += (size_t)n;
    buf[got] = '\0';
    body = strstr(buf, "\r\n\r\n");
    if (body != NULL && strchr(body, '}') != NULL) break;
  }
  return got;
}

Test(upstream, workers_cap_how_many_are_served_at_once, .timeout = 30) {
  const char *args[] = {"--workers", "3", "--latency-ms", "200", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(20, sizeof *r);
  double first_start = INFINITY, last_end = 0;
  int n, zero_waits = 0;

  cr_assert_not_null(r);
  up_start(&up, args);
  n = tk_get_many(up.url, 20, 20000, r);
  cr_assert_eq(n, 20, "only %d of 20 concurrent GETs were answered", n);
  for (int i = 0; i < 20; i++) {
    cr_assert_eq(r[i].status, 200, "GET %d answered %d", i, r[i].status);
    cr_assert_geq(r[i].total_ms, 199.0, "GET %d answered after %.1f ms < its 200 ms latency", i,
                  r[i].total_ms);
    zero_waits += tk_json_number(r[i].body, "wait_ms") == 0.0;
    if (r[i].start_ms < first_start) first_start = r[i].start_ms;
    if (r[i].end_ms > last_end) last_end = r[i].end_ms;
  }
  /* 3 at a time, 200 ms each: 20 requests need at least 7 rounds. */
  cr_assert_geq(last_end - first_start, 7 * 200 - 5.0,
                "20 requests of 200 ms on 3 workers took %.0f ms, less than 7 rounds of 200 ms: "
                "more than 3 are served at once", last_end - first_start);
  cr_assert_leq(zero_waits, 3, "%d requests got a worker at once, but there are 3", zero_waits);
  up_stats(&up, &r[0]);
  cr_assert_eq(tk_json_number(r[0].body, "workers"), 3.0, "/stats: %s", r[0].body);
  cr_assert_eq(tk_json_number(r[0].body, "in_service_peak"), 3.0,
               "--workers 3 with 20 requests waiting: in_service_peak must be exactly 3: %s",
               r[0].body);
  cr_assert_eq(tk_json_number(r[0].body, "in_service"), 0.0, "/stats: %s", r[0].body);
  cr_assert_eq(tk_json_number(r[0].body, "queue_depth"), 0.0, "/stats: %s", r[0].body);
  cr_assert_geq(tk_json_number(r[0].body, "queue_peak"), 1.0, "/stats: %s", r[0].body);
  cr_assert_leq(tk_json_number(r[0].body, "queue_peak"), 17.0, "/stats: %s", r[0].body);
  cr_assert_geq(tk_json_number(r[0].body, "wait_ms_max"), 199.0,
                "someone waited at least a round: %s", r[0].body);
  cr_assert_eq(tk_json_number(r[0].body, "responses_2xx"), 20.0, "/stats: %s", r[0].body);
  up_stop(&up);
  free(r);
}

/* One worker held by a hung request: the others queue, exactly, and are served in arrival order
 * once the worker is free; /stats' waits match the answers'. */
Test(upstream, workers_queue_is_fifo_and_counted_exactly, .timeout = 30) {
  const char *args[] = {"--workers", "1", "--latency-ms", "200", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char buf[2048], req[128];
  int hung, fd[3], order[3], done = 0;
  double waits[3], sum = 0, max = 0;

  cr_assert_not_null(r);
  up_start(&up, args);
  hung = raw_connect(up.port);
  raw_send(hung, "GET /h?hang=1 HTTP/1.1\r\nHost: up\r\n\r\n");
  cr_assert_eq(up_wait_stat(&up, "in_service", 1, 3000), 1.0, "hang=1 did not take the worker");
  for (int i = 0; i < 3; i++) { /* one after the other, so that their arrival order is known */
    fd[i] = raw_connect(up.port);
    snprintf(req, sizeof req, "GET /q?id=q%d HTTP/1.1\r\nHost: up\r\n\r\n", i);
    raw_send(fd[i], req);
    cr_assert_eq(up_wait_stat(&up, "requests_total", i + 2, 3000), i + 2.0,
                 "request q%d did not arrive", i);
  }
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "in_service"), 1.0, "the hung one holds it: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "queue_depth"), 3.0, "3 wait for 1 worker: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "queue_peak"), 3.0, "/stats: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "inflight"), 4.0, "/stats: %s", r->body);
  cr_assert_eq(raw_recv(fd[0], buf, sizeof buf, 300), 0, "q0 was served while the worker is held");

  close(hung); /* the worker is free: q0, q1, q2 follow, 200 ms each, in arrival order */
  while (done < 3) {
    struct pollfd p[3];
    int ready = -1;
    for (int i = 0; i < 3; i++) p[i] = (struct pollfd){.fd = fd[i], .events = POLLIN};
    cr_assert_gt(poll(p, 3, 5000), 0, "only %d of 3 queued requests were answered", done);
    for (int i = 0; i < 3 && ready < 0; i++)
      if (p[i].revents) ready = i;
    cr_assert_gt(raw_recv_answer(fd[ready], buf, sizeof buf, 3000), 0, "q%d: no answer", ready);
    cr_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0, "q%d got: %.40s", ready, buf);
    waits[ready] = tk_json_number(strstr(buf, "\r\n\r\n"), "wait_ms");
    order[done++] = ready;
    close(fd[ready]);
    fd[ready] = -1; /* poll skips it from now on */
  }
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(order[i], i, "answer %d was q%d: the queue is not first in, first out", i,
                 order[i]);
    sum += waits[i];
    if (waits[i] > max) max = waits[i];
  }
  cr_assert_geq(waits[2] - waits[1], 150.0,
                "q2 waited %.0f ms, q1 %.0f ms: q2 must wait for q1's 200 ms too", waits[2],
                waits[1]);
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "queue_depth"), 0.0, "/stats: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "in_service"), 0.0, "/stats: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "in_service_peak"), 1.0, "/stats: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "abandoned"), 1.0, "the hung one: %s", r->body);
  /* the hung request got the worker at once (wait 0): 4 waits in all */
  cr_assert_lt(fabs(tk_json_number(r->body, "wait_ms_max") - max), 1.0,
               "wait_ms_max vs the answers' largest wait_ms %.0f: %s", max, r->body);
  cr_assert_lt(fabs(tk_json_number(r->body, "wait_ms_mean") - sum / 4), 1.0,
               "wait_ms_mean vs (0 + the answers' waits) / 4 = %.2f: %s", sum / 4, r->body);
  up_stop(&up);
  free(r);
}

/* A worker does not know its client left: the abandoned request still takes its latency. */
Test(upstream, workers_still_serve_an_abandoned_request, .timeout = 20) {
  const char *args[] = {"--workers", "1", "--latency-ms", "600", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  int fd;
  double t0;

  cr_assert_not_null(r);
  up_start(&up, args);
  fd = raw_connect(up.port);
  t0 = tk_now_ms();
  raw_send(fd, "GET /a HTTP/1.1\r\nHost: up\r\n\r\n");
  cr_assert_eq(up_wait_stat(&up, "in_service", 1, 3000), 1.0, "GET /a did not take the worker");
  close(fd);
  cr_assert_eq(up_wait_stat(&up, "abandoned", 1, 3000), 1.0, "GET /a was not abandoned");
  up_get(&up, "/b", r);
  cr_assert_eq(r->status, 200, "GET /b answered %d", r->status);
  cr_assert_geq(r->end_ms - t0, 599.0,
                "GET /b was served %.0f ms after the abandoned GET /a took the only worker, "
                "before /a's 600 ms were over", r->end_ms - t0);
  cr_assert_eq(up_stat(&up, "responses_2xx"), 1.0, "only /b was answered");
  up_stop(&up);
  free(r);
}

/* ---- hang rate, event ids ---- */

Test(upstream, hang_rate_is_deterministic, .timeout = 30) {
  const char *args[] = {"--hang-rate", "0.25", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char url[128], reset[128], buf[512];
  int fd;

  cr_assert_not_null(r);
  up_start(&up, args);
  up_url(&up, "/g", url, sizeof url);
  for (int i = 1; i <= 8; i++) {
    tk_get(url, 400, r);
    if (i % 4 == 0)
      cr_assert_eq(r->status, 0, "--hang-rate 0.25: request %d must hang, but answered %d", i,
                   r->status);
    else
      cr_assert_eq(r->status, 200, "--hang-rate 0.25: request %d answered %d; only every 4th "
                   "may hang", i, r->status);
  }
  cr_assert_eq(up_stat(&up, "hung_total"), 2.0, "requests 4 and 8 hung");
  cr_assert_eq(up_wait_stat(&up, "hung_open", 0, 3000), 0.0,
               "their clients gave up: no hung request is open any more");
  cr_assert_eq(up_stat(&up, "abandoned"), 2.0, "the 2 hung requests were abandoned");

  /* After a reset the count restarts; the 4th hangs and is counted open while its client waits,
   * unless hang=0 says otherwise. */
  up_url(&up, "/stats/reset", reset, sizeof reset);
  cr_assert_eq(tk_post_empty(reset), 200, "POST /stats/reset failed");
  for (int i = 1; i <= 3; i++) up_get(&up, "/g", r);
  fd = raw_connect(up.port);
  raw_send(fd, "GET /g HTTP/1.1\r\nHost: up\r\n\r\n");
  cr_assert_eq(up_wait_stat(&up, "hung_open", 1, 3000), 1.0, "request 4 after reset must hang");
  cr_assert_eq(raw_recv(fd, buf, sizeof buf, 200), 0, "request 4 answered: %s", buf);
  close(fd);
  cr_assert_eq(up_wait_stat(&up, "hung_open", 0, 3000), 0.0, "its client left");
  for (int i = 5; i <= 7; i++) up_get(&up, "/g", r);
  up_get(&up, "/g?hang=0", r); /* the 8th would hang: hang=0 wins */
  cr_assert_eq(r->status, 200, "hang=0 must override --hang-rate; answered %d", r->status);
  cr_assert_eq(up_stat(&up, "hung_total"), 1.0, "only request 4 hung since the reset");
  up_stop(&up);
  free(r);
}

/* Sends one request on a new connection and returns the status of its answer (0: none). */
static int raw_status(const tk_proc_t *up, const char *request) {
  char buf[2048];
  int fd = raw_connect(up->port), status = 0;
  raw_send(fd, request);
  if (raw_recv_answer(fd, buf, sizeof buf, 5000) > 12) status = atoi(buf + 9);
  close(fd);
  return status;
}

Test(upstream, event_ids_count_deliveries, .timeout = 30) {
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char reset[128];

  cr_assert_not_null(r);
  up_start(&up, NULL);
  cr_assert_eq(raw_status(&up, "POST /e HTTP/1.1\r\nHost: up\r\nX-Event-Id: a\r\n"
                               "Content-Length: 0\r\n\r\n"), 200, "event a");
  up_get(&up, "/e?event_id=b", r);
  cr_assert_eq(raw_status(&up, "POST /e HTTP/1.1\r\nHost: up\r\nx-event-id: a\r\n"
                               "Content-Length: 0\r\n\r\n"), 200, "event a again");
  up_get(&up, "/e?event_id=c&status=503", r); /* a failure delivers nothing */
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "events_unique"), 2.0, "a and b: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "events_duplicate"), 1.0, "a twice: %s", r->body);
  up_get(&up, "/e?event_id=c", r); /* its retry delivers it, once */
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "events_unique"), 3.0, "a, b, c: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "events_duplicate"), 1.0,
               "c failed, then was delivered once: not a duplicate: %s", r->body);

  /* Without workers, a request whose client leaves is cut short: nothing delivered. */
  {
    char url[128];
    up_url(&up, "/e?event_id=d&latency_ms=1000", url, sizeof url);
    tk_get(url, 200, r);
    cr_assert_eq(up_wait_stat(&up, "abandoned", 1, 3000), 1.0, "event d was not abandoned");
    usleep(1200 * 1000);
    cr_assert_eq(up_stat(&up, "events_unique"), 3.0, "event d's client left before its "
                 "latency was over: it must not count as delivered");
  }
  up_url(&up, "/stats/reset", reset, sizeof reset);
  cr_assert_eq(tk_post_empty(reset), 200, "POST /stats/reset failed");
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "events_unique"), 0.0, "after reset: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "events_duplicate"), 0.0, "after reset: %s", r->body);
  up_get(&up, "/e?event_id=a", r);
  cr_assert_eq(up_stat(&up, "events_duplicate"), 0.0, "a was forgotten by the reset");
  up_stop(&up);
  free(r);
}

/* With workers, an abandoned request is still worked on: its event is delivered, and the
 * client's retry of it is a duplicate. This is the "lost" event that was in fact delivered. */
Test(upstream, event_delivered_by_a_worker_after_its_client_left, .timeout = 20) {
  const char *args[] = {"--workers", "2", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char url[128];

  cr_assert_not_null(r);
  up_start(&up, args);
  up_url(&up, "/e?event_id=x&latency_ms=500", url, sizeof url);
  tk_get(url, 150, r); /* the client gives up at 150 ms */
  cr_assert_eq(r->status, 0, "the 500 ms request answered within 150 ms");
  cr_assert_eq(up_wait_stat(&up, "abandoned", 1, 3000), 1.0, "the request was not abandoned");
  cr_assert_eq(up_wait_stat(&up, "events_unique", 1, 3000), 1.0,
               "a worker finished event x after its client left: it is delivered");
  up_get(&up, "/e?event_id=x", r); /* the client's retry */
  cr_assert_eq(up_stat(&up, "events_duplicate"), 1.0, "the retry delivered x a second time");
  cr_assert_eq(up_stat(&up, "responses_2xx"), 1.0, "only the retry got an answer");
  up_stop(&up);
  free(r);
}

/* ---- the shell under the upstream: clients it is not reading ---- */

/* 20 pipelined hung requests: the shell dispatches 16 (max_pipeline), stops reading, and must
 * still notice the client's close, abandon all 16 and free the connection. */
Test(upstream, a_paused_pipeline_notices_its_client_leaving, .timeout = 30) {
  char reqs[20 * 64] = "";
  tk_proc_t up;
  int fd;

  up_start(&up, NULL);
  for (int i = 0; i < 20; i++) strcat(reqs, "GET /h?hang=1 HTTP/1.1\r\nHost: up\r\n\r\n");
  fd = raw_connect(up.port);
  raw_send(fd, reqs);
  cr_assert_eq(up_wait_stat(&up, "inflight", 16, 3000), 16.0,
               "16 pipelined hung requests (max_pipeline) should be in flight");
  close(fd);
  cr_assert_eq(up_wait_stat(&up, "abandoned", 16, 3000), 16.0,
               "the client of a paused pipeline left but its requests are not abandoned: the "
               "shell does not notice an EOF on a connection it stopped reading");
  cr_assert_eq(up_stat(&up, "inflight"), 0.0, "abandoned requests are out of flight");
  cr_assert_eq(up_wait_stat(&up, "connections_open", 1, 3000), 1.0,
               "the paused connection was not closed (only this /stats one should be open)");

  /* The same after "Connection: close", where the shell reads no further either. */
  fd = raw_connect(up.port);
  raw_send(fd, "GET /h?hang=1 HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n");
  cr_assert_eq(up_wait_stat(&up, "inflight", 1, 3000), 1.0, "the hung request is in flight");
  close(fd);
  cr_assert_eq(up_wait_stat(&up, "abandoned", 17, 3000), 17.0,
               "a hung 'Connection: close' request whose client left is not abandoned");
  up_stop(&up); /* nothing is written to the gone clients at shutdown (once: exit 141) */
}

/* The timeouts are for connections that owe nothing: one waiting for a slow answer stays. */
Test(upstream, timeouts_spare_a_connection_waiting_for_its_answer, .timeout = 20) {
  const char *args[] = {"--header-timeout-ms", "200", "--idle-timeout-ms", "200", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char buf[1024];
  int fd;

  cr_assert_not_null(r);
  up_start(&up, args);
  up_get(&up, "/slow?latency_ms=700", r);
  cr_assert_eq(r->status, 200, "a 700 ms answer with 200 ms timeouts: got %d", r->status);
  fd = raw_connect(up.port); /* a silent client is closed, though */
  {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_gt(poll(&p, 1, 3000), 0, "a silent connection outlived the 200 ms header timeout");
    cr_assert_eq(recv(fd, buf, sizeof buf, 0), 0, "a silent connection got an answer");
  }
  close(fd);
  cr_assert_eq(up_stat(&up, "responses_2xx"), 1.0, "the slow request was answered");
  up_stop(&up);
  free(r);
}

/* ---- outage, rate limit, series ---- */

/* Sends GET path_query every 100 ms for total_ms after a POST /stats/reset (which starts the
 * outage clock), and checks each answer against the window [start_ms, end_ms): where a request
 * surely arrived (its send and answer times bound its arrival) it must be 503 inside, 200
 * outside. Returns how many were checked inside the window; *outside gets those outside. */
static int outage_walk(const tk_proc_t *up, long start_ms, long end_ms, double total_ms,
                       int *outside, int *answered_503) {
  char reset[128], url[128];
  tk_resp_t *r = calloc(1, sizeof *r);
  double t_reset0, t_reset1;
  int inside = 0;

  cr_assert_not_null(r);
  *outside = 0;
  *answered_503 = 0;
  up_url(up, "/stats/reset", reset, sizeof reset);
  up_url(up, "/o", url, sizeof url);
  t_reset0 = tk_now_ms();
  cr_assert_eq(tk_post_empty(reset), 200, "POST /stats/reset failed");
  t_reset1 = tk_now_ms();
  while (tk_now_ms() - t_reset1 < total_ms) {
    double lo, hi;
    double t_send = tk_now_ms();
    cr_assert_eq(tk_get(url, 5000, r), 0, "GET /o: no answer");
    /* The server's clock started between t_reset0 and t_reset1. */
    lo = t_send - t_reset1;
    hi = tk_now_ms() - t_reset0;
    if (r->status == 503) (*answered_503)++;
    if (lo >= start_ms && hi < end_ms) {
      inside++;
      cr_assert_eq(r->status, 503, "a request %.0f-%.0f ms after the reset, inside --outage "
                   "%ld-%ld, answered %d", lo, hi, start_ms, end_ms, r->status);
    } else if (hi < start_ms || lo >= end_ms) {
      (*outside)++;
      cr_assert_eq(r->status, 200, "a request %.0f-%.0f ms after the reset, outside --outage "
                   "%ld-%ld, answered %d", lo, hi, start_ms, end_ms, r->status);
    }
    usleep(100 * 1000);
  }
  free(r);
  return inside;
}

Test(upstream, outage_window_answers_503, .timeout = 30) {
  const char *args[] = {"--outage", "800-1600", "--latency-ms", "1", NULL};
  tk_proc_t up;
  int inside, outside, n503;

  up_start(&up, args);
  inside = outage_walk(&up, 800, 1600, 2400, &outside, &n503);
  cr_assert_geq(inside, 2, "only %d requests surely inside the window: the machine is too slow "
                "for this test", inside);
  cr_assert_geq(outside, 2, "only %d requests surely outside the window", outside);
  cr_assert_eq(up_stat(&up, "outage_requests"), (double)n503, "outage_requests vs the 503s seen");
  cr_assert_eq(up_stat(&up, "responses_5xx"), (double)n503, "responses_5xx vs the 503s seen");
  up_stop(&up);
}

Test(upstream, outage_modes_reset_and_hang, .timeout = 30) {
  const char *reset_args[] = {"--outage", "0-600000", "--outage-mode", "reset", NULL};
  const char *hang_args[] = {"--outage", "0-600000", "--outage-mode", "hang", "--workers", "1",
                             NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char url[128], buf[512];
  int fd;

  cr_assert_not_null(r);
  up_start(&up, reset_args);
  up_url(&up, "/o", url, sizeof url);
  tk_get(url, 3000, r);
  cr_assert_eq(r->status, 0, "--outage-mode reset: the request got an answer (%d)", r->status);
  cr_assert_neq(r->curl_code, 28, "--outage-mode reset: the request timed out instead of a reset");
  fd = raw_connect(up.port);
  raw_send(fd, "GET /o HTTP/1.1\r\nHost: up\r\n\r\n");
  {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_gt(poll(&p, 1, 3000), 0, "the connection was neither answered nor reset");
    errno = 0;
    cr_assert_leq(recv(fd, buf, sizeof buf, 0), 0, "--outage-mode reset answered: %s", buf);
  }
  close(fd);
  cr_assert_eq(up_stat(&up, "outage_requests"), 2.0, "two requests met the outage");
  cr_assert_eq(up_stat(&up, "requests_total"), 2.0, "the upstream is still up and counting");
  up_stop(&up);

  up_start(&up, hang_args);
  fd = raw_connect(up.port);
  raw_send(fd, "GET /o HTTP/1.1\r\nHost: up\r\n\r\n");
  cr_assert_eq(up_wait_stat(&up, "hung_open", 1, 3000), 1.0, "--outage-mode hang: not hung");
  cr_assert_eq(up_stat(&up, "in_service"), 0.0, "a request lost in an outage takes no worker");
  cr_assert_eq(raw_recv(fd, buf, sizeof buf, 300), 0, "--outage-mode hang answered: %s", buf);
  close(fd);
  cr_assert_eq(up_wait_stat(&up, "hung_open", 0, 3000), 0.0, "its client left");
  up_stop(&up);
  free(r);
}

Test(upstream, rate_limit_is_a_token_bucket_with_retry_after, .timeout = 30) {
  const char *args[] = {"--rate-limit", "10", "--rate-burst", "5", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(40, sizeof *r);
  char url[128], reset[128];
  int ok = 0, limited = 0;
  double t0, elapsed_s;

  cr_assert_not_null(r);
  up_start(&up, args);
  up_url(&up, "/r", url, sizeof url);
  up_url(&up, "/stats/reset", reset, sizeof reset);
  cr_assert_eq(tk_post_empty(reset), 200, "POST /stats/reset failed"); /* a full bucket */
  t0 = tk_now_ms();
  for (int i = 0; i < 40; i++) { /* about 40 per second: 4 times the limit */
    tk_get(url, 3000, &r[i]);
    if (r[i].status == 200) ok++;
    else if (r[i].status == 429) {
      limited++;
      cr_assert_geq(atoi(r[i].retry_after), 1, "a 429 must say Retry-After: >= 1 s, got '%s'",
                    r[i].retry_after);
    } else {
      cr_assert_fail("GET %d answered %d, want 200 or 429", i, r[i].status);
    }
    usleep(25 * 1000);
  }
  elapsed_s = (tk_now_ms() - t0) / 1000;
  cr_assert_eq(r[0].status, 200, "the bucket starts full: the first request must pass");
  cr_assert_leq(ok, 5 + 10 * elapsed_s + 1, "%d passed in %.2f s at 10/s with a burst of 5",
                ok, elapsed_s);
  cr_assert_geq(ok, 5, "the burst of 5 must pass: only %d did", ok);
  cr_assert_geq(limited, 40 - (int)(5 + 10 * elapsed_s + 1), "429s: %d", limited);
  cr_assert_eq(up_stat(&up, "rate_limited"), (double)limited, "rate_limited vs the 429s seen");
  cr_assert_eq(up_stat(&up, "responses_4xx"), (double)limited, "responses_4xx vs the 429s");
  up_stop(&up);
  free(r);
}

/* Sums one field over every second of GET /stats/series; *seconds gets how many there are. */
static double series_sum(const char *json, const char *field, int *seconds) {
  char key[64];
  double sum = 0;
  int n = 0;
  snprintf(key, sizeof key, "\"%s\":", field);
  for (const char *p = strstr(json, "{\"t\":"); p != NULL; p = strstr(p + 1, "{\"t\":")) {
    const char *f = strstr(p, key), *end = strchr(p, '}');
    cr_assert(f != NULL && end != NULL && f < end, "second %d lacks %s: %.200s", n, field, p);
    cr_assert_eq(atoi(p + 5), n, "seconds must be numbered 0, 1, 2, ...: %.80s", p);
    sum += atof(f + strlen(key));
    n++;
  }
  *seconds = n;
  return sum;
}

Test(upstream, stats_series_counts_attempts_by_outcome, .timeout = 30) {
  /* 7 tokens, refilled every 2 s: the 5 single requests pass, then 2 of the 4 at once. */
  const char *args[] = {"--rate-limit", "0.5", "--rate-burst", "7", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(8, sizeof *r);
  char url[128], reset[128];
  int seconds, n_429 = 0;
  double t0;

  cr_assert_not_null(r);
  up_start(&up, args);
  up_url(&up, "/stats/reset", reset, sizeof reset);
  cr_assert_eq(tk_post_empty(reset), 200, "POST /stats/reset failed");
  t0 = tk_now_ms();
  up_get(&up, "/s", r);
  up_get(&up, "/s?status=500", r);
  up_get(&up, "/s?latency_ms=abc", r); /* 400: failed */
  up_url(&up, "/s?hang=1", url, sizeof url);
  tk_get(url, 200, r);
  up_url(&up, "/s?latency_ms=3000", url, sizeof url);
  tk_get(url, 200, r);
  cr_assert_eq(tk_get_many(up.url, 4, 3000, r), 4, "4 concurrent GETs: not all answered");
  for (int i = 0; i < 4; i++) n_429 += r[i].status == 429;
  cr_assert_geq(n_429, 1, "7 tokens for 9 requests, yet no 429");
  usleep(1100 * 1000); /* into the next second at least */
  up_get(&up, "/stats/series", r);
  cr_assert_eq(r->status, 200, "GET /stats/series answered %d", r->status);
  double wall = tk_json_number(r->body, "t0_ms");
  cr_assert(wall > 1.6e12 && wall < 4e12, "t0_ms is Unix time in ms: %s", r->body);
  double attempts = series_sum(r->body, "attempts", &seconds);
  cr_assert_eq(attempts, 9.0, "3 + 4 + 2 attempts: %s", r->body);
  cr_assert_eq(series_sum(r->body, "failed", &seconds), 2.0, "a 500 and a 400: %s", r->body);
  cr_assert_eq(series_sum(r->body, "rate_limited", &seconds), (double)n_429, "%s", r->body);
  cr_assert_eq(series_sum(r->body, "ok", &seconds), 1.0 + 4 - n_429, "%s", r->body);
  cr_assert_eq(series_sum(r->body, "hung", &seconds), 1.0, "the hang=1 one: %s", r->body);
  cr_assert_eq(series_sum(r->body, "abandoned", &seconds), 1.0, "the 3 s one: %s", r->body);
  double elapsed_s = (tk_now_ms() - t0) / 1000;
  cr_assert(seconds >= (int)elapsed_s && seconds <= (int)elapsed_s + 2,
            "%d seconds in the series, %.1f s after the reset: %s", seconds, elapsed_s, r->body);
  up_stop(&up);
  free(r);
}

/* ---- ids, reset ---- */

Test(upstream, ids_seen_and_duplicates, .timeout = 15) {
  const char *seq[] = {"/i?id=a", "/i?id=b", "/i?id=a", "/i?id=c", "/i?id=a", "/i", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char buf[1024];
  int fd;

  cr_assert_not_null(r);
  up_start(&up, NULL);
  for (int i = 0; seq[i] != NULL; i++) up_get(&up, seq[i], r);
  cr_assert(strstr(r->body, "\"id\":null") != NULL, "no id given; body: %s", r->body);
  /* A quote and a backslash (libcurl would encode them): the id is echoed as valid JSON. */
  fd = raw_connect(up.port);
  raw_send(fd, "GET /i?id=q\"x\\y HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n");
  cr_assert_gt(raw_recv(fd, buf, sizeof buf, 3000), 0, "GET /i?id=q\"x\\y got no answer");
  close(fd);
  cr_assert(strstr(buf, "\"id\":\"q\\\"x\\\\y\"") != NULL,
            "an id with a quote and a backslash must be escaped in the JSON body: %s", buf);

  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "ids_seen"), 4.0, "ids a, b, c, q\"x: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "ids_duplicate"), 2.0, "id a came 3 times: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "requests_total"), 7.0, "/stats: %s", r->body);
  up_stop(&up);
  free(r);
}

Test(upstream, reset_zeroes_counters, .timeout = 15) {
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char reset[128], buf[256];
  int fd;

  cr_assert_not_null(r);
  up_start(&up, NULL);
  up_get(&up, "/x?id=a", r);
  up_get(&up, "/x?id=a&status=500", r);
  fd = raw_connect(up.port); /* one request stays in flight across the reset */
  raw_send(fd, "GET /h?hang=1 HTTP/1.1\r\nHost: up\r\n\r\n");
  cr_assert_eq(up_wait_stat(&up, "inflight", 1, 3000), 1.0, "hang=1 is not in flight");

  up_url(&up, "/stats/reset", reset, sizeof reset);
  cr_assert_eq(tk_post_empty(reset), 200, "POST /stats/reset failed");
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "requests_total"), 0.0, "after reset: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "responses_2xx"), 0.0, "after reset: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "responses_5xx"), 0.0, "after reset: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "ids_seen"), 0.0, "after reset: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "ids_duplicate"), 0.0, "after reset: %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "inflight"), 1.0, "the hung request is still in flight");
  cr_assert_eq(tk_json_number(r->body, "inflight_peak"), 1.0,
               "peaks restart from the current value (1): %s", r->body);
  cr_assert_eq(tk_json_number(r->body, "connections_accepted"), 1.0,
               "only this /stats connection came after the reset: %s", r->body);

  up_get(&up, "/x?id=a", r); /* ids were forgotten */
  cr_assert_eq(up_stat(&up, "ids_duplicate"), 0.0, "id a was seen before the reset only");
  cr_assert_eq(up_stat(&up, "ids_seen"), 1.0, "id a again after the reset");
  cr_assert_eq(raw_recv(fd, buf, sizeof buf, 10), 0, "the hung request was answered: %s", buf);
  close(fd);
  up_stop(&up);
  free(r);
}

/* ---- bad input ---- */

Test(upstream, garbage_gets_400_and_the_upstream_stays_up, .timeout = 15) {
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char buf[1024];
  int fd;

  cr_assert_not_null(r);
  up_start(&up, NULL);
  fd = raw_connect(up.port);
  raw_send(fd, "\x01\x02 NOT HTTP AT ALL\r\n\r\n");
  cr_assert_gt(raw_recv(fd, buf, sizeof buf, 3000), 0, "garbage got no answer within 3 s");
  cr_assert(strncmp(buf, "HTTP/1.1 400", 12) == 0, "garbage must get a 400, got: %.40s", buf);
  close(fd);

  up_get(&up, "/x?latency_ms=abc", r);
  cr_assert_eq(r->status, 400, "latency_ms=abc must get 400, got %d", r->status);
  cr_assert(strstr(r->body, "latency_ms") != NULL, "the 400 must name the knob: %s", r->body);

  up_get(&up, "/still-up", r);
  cr_assert_eq(r->status, 200, "after garbage, GET /still-up answered %d", r->status);
  up_stats(&up, r);
  cr_assert_eq(tk_json_number(r->body, "bad_requests"), 1.0, "/stats: %s", r->body);
  up_stop(&up);
  free(r);
}

Test(upstream, size_pads_the_body, .timeout = 15) {
  const char *args[] = {"--size", "1000", NULL};
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);

  cr_assert_not_null(r);
  up_start(&up, args);
  up_get(&up, "/s", r);
  cr_assert_eq(r->body_len, 1000, "--size 1000 gave a %zu-byte body", r->body_len);
  cr_assert_eq(tk_json_number(r->body, "latency_ms"), 0.0, "padded body: %.80s", r->body);
  up_get(&up, "/s?size=4000", r);
  cr_assert_eq(r->body_len, 4000, "size=4000 gave a %zu-byte body", r->body_len);
  up_get(&up, "/s?size=1", r); /* smaller than the JSON: the JSON, unpadded */
  cr_assert(r->body_len > 1 && r->body_len < 200, "size=1 gave %zu bytes", r->body_len);
  cr_assert_eq(r->body[r->body_len - 1], '}', "size=1 body: %s", r->body);
  up_stop(&up);
  free(r);
}

/* ---- process ---- */

Test(upstream, sigterm_answers_what_is_pending_and_exits_0, .timeout = 15) {
  tk_proc_t up;
  char buf[512];
  int fd, rc;
  double t0;

  up_start(&up, NULL);
  fd = raw_connect(up.port);
  raw_send(fd, "GET /h?hang=1 HTTP/1.1\r\nHost: up\r\n\r\n");
  cr_assert_eq(up_wait_stat(&up, "inflight", 1, 3000), 1.0, "hang=1 is not in flight");
  t0 = tk_now_ms();
  rc = tk_stop(&up); /* SIGTERM; SIGKILL after 3 s */
  cr_assert_eq(rc, 0, "SIGTERM with a hung request: exit status %d, expected 0", rc);
  cr_assert_lt(tk_now_ms() - t0, 2500.0, "shutdown took %.0f ms: a hung request holds it",
               tk_now_ms() - t0);
  cr_assert_gt(raw_recv(fd, buf, sizeof buf, 1000), 0, "the hung request got no answer");
  cr_assert(strncmp(buf, "HTTP/1.1 503", 12) == 0, "pending request at shutdown got: %.40s",
            buf);
  close(fd);
}

/* The client closes while a long answer is being written: its FIN, then a reset (closing with
 * unread bytes) arrives while the upstream waits to write more. The next write fails with EPIPE;
 * without SIGPIPE ignored, the kernel's SIGPIPE kills the process (exit 141 in a shell). */
Test(upstream, a_client_that_closes_early_does_not_kill_it, .timeout = 30) {
  tk_proc_t up;
  tk_resp_t *r = calloc(1, sizeof *r);
  char buf[4096];
  int status = 0;

  cr_assert_not_null(r);
  up_start(&up, NULL);
  for (int round = 0; round < 3; round++) {
    int fd = raw_connect(up.port);
    raw_send(fd, "GET /big?size=16000000 HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n");
    cr_assert_gt(raw_recv(fd, buf, sizeof buf, 5000), 0, "GET /big: no answer began");
    usleep(100 * 1000); /* the upstream fills the socket buffers, then waits to write more */
    shutdown(fd, SHUT_WR);
    close(fd); /* unread bytes: a reset */
    usleep(100 * 1000);
    cr_assert_eq(waitpid(up.pid, &status, WNOHANG), 0,
                 "the upstream died when a client closed early (%s %d): is SIGPIPE ignored?",
                 WIFSIGNALED(status) ? "signal" : "exit",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
  }
  up_get(&up, "/still-up", r);
  cr_assert_eq(r->status, 200, "after clients closed early, GET /still-up answered %d", r->status);
  up_stop(&up);
  free(r);
}

Test(upstream, usage_errors_exit_2, .timeout = 30) {
  const char *const bad[][4] = {
      {"--bogus", NULL},          {"--latency-ms", "-5", NULL}, {"--latency-ms", "abc", NULL},
      {"--fail-rate", "1.5", NULL}, {"--status", "99", NULL},   {"--port", NULL},
      {"extra-argument", NULL},   {"--max-conns", "0", NULL}, {"--workers", "-1", NULL},
      {"--hang-rate", "2", NULL}, {"--header-timeout-ms", "0", NULL},
      {"--outage", "500", NULL},  {"--outage", "900-100", NULL}, {"--outage-mode", "down", NULL},
      {"--rate-limit", "0", NULL}, {"--rate-burst", "5", NULL},
  };
  const char *help[] = {"--help", NULL};
  char out[8192];
  int rc;

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    rc = run_upstream(bad[i], STDERR_FILENO, out, sizeof out);
    cr_assert_eq(rc, 2, "upstream %s %s: exit %d, expected 2 (usage error)", bad[i][0],
                 bad[i][1] ? bad[i][1] : "", rc);
    cr_assert(strstr(out, "usage:") != NULL, "upstream %s: no usage message on stderr: %s",
              bad[i][0], out);
  }
  rc = run_upstream(help, STDOUT_FILENO, out, sizeof out);
  cr_assert_eq(rc, 0, "upstream --help: exit %d", rc);
  cr_assert(strstr(out, "--connect-cost-ms") != NULL, "--help lists every flag: %s", out);
}
