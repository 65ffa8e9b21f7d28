/* tests/loadgen.c - build/bin/loadgen against a small server that lives in this test.
 *
 * The server runs on its own libuv loop in a thread of the test process and can be told to
 * block its loop once (the pitfall of lab 01), to never answer, or to answer with a status; it
 * counts what it receives, so the generator's numbers can be checked against the server's.
 * loadgen itself runs as a child process, exactly as the bench runs it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <http_parser.h>
#include <uv.h>

#include "testkit.h"

/* ---- the test server ---- */

typedef struct srv {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t stop;
  pthread_t thread;
  int port;
  http_parser_settings settings;
  /* knobs, set before srv_start */
  unsigned stall_at;   /* block the loop on this request (1-based); 0 = never */
  unsigned stall_ms;
  int hang;            /* never answer */
  /* counters, read after srv_stop */
  unsigned requests;
  unsigned posts;
  unsigned connections; /* accepted */
  size_t body_bytes;
  int loop_close_rc;
} srv_t;

typedef struct srv_conn {
  uv_tcp_t tcp;
  srv_t *srv;
  http_parser parser;
  char path[64];
  size_t path_len;
  char buf[4096];
} srv_conn_t;

static const char srv_ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

static void srv_conn_closed(uv_handle_t *h) { free(h->data); }

static void srv_write_done(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void srv_send(srv_conn_t *c, const char *bytes, size_t len) {
  uv_write_t *req = malloc(sizeof(*req) + len);
  if (!req) return;
  char *copy = (char *)(req + 1);
  memcpy(copy, bytes, len);
  uv_buf_t b = uv_buf_init(copy, (unsigned)len);
  if (uv_write(req, (uv_stream_t *)&c->tcp, &b, 1, srv_write_done) != 0) free(req);
}

static int srv_on_url(http_parser *p, const char *at, size_t len) {
  srv_conn_t *c = p->data;
  while (len-- && c->path_len + 1 < sizeof(c->path)) c->path[c->path_len++] = *at++;
  c->path[c->path_len] = '\0';
  return 0;
}

static int srv_on_body(http_parser *p, const char *at, size_t len) {
  srv_conn_t *c = p->data;
  (void)at;
  c->srv->body_bytes += len;
  return 0;
}

static int srv_on_message_complete(http_parser *p) {
  srv_conn_t *c = p->data;
  srv_t *s = c->srv;
  int is_stats = strcmp(c->path, "/debug/stats") == 0;
  c->path_len = 0;
  c->path[0] = '\0';
  if (is_stats) {
    char body[128], resp[256];
    int bl = snprintf(body, sizeof body, "{\"requests_total\":%u,\"answer\":42}", s->requests);
    int rl = snprintf(resp, sizeof resp,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n%s", bl, body);
    srv_send(c, resp, (size_t)rl);
    return 0;
  }
  s->requests++;
  if (p->method == HTTP_POST) s->posts++;
  if (s->hang) return 0;
  if (s->requests == s->stall_at) usleep(s->stall_ms * 1000u); /* blocks the whole loop */
  srv_send(c, srv_ok, sizeof(srv_ok) - 1);
  return 0;
}

static void srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  srv_conn_t *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void srv_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  srv_conn_t *c = stream->data;
  if (nread < 0) {
    uv_close((uv_handle_t *)stream, srv_conn_closed);
    return;
  }
  size_t n = http_parser_execute(&c->parser, &c->srv->settings, buf->base, (size_t)nread);
  if (n != (size_t)nread) uv_close((uv_handle_t *)stream, srv_conn_closed);
}

static void srv_on_connection(uv_stream_t *listener, int status) {
  srv_t *s = listener->data;
  if (status < 0) return;
  s->connections++;
  srv_conn_t *c = calloc(1, sizeof(*c));
  cr_assert_not_null(c, "calloc");
  c->srv = s;
  c->tcp.data = c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  cr_assert_eq(uv_tcp_init(&s->loop, &c->tcp), 0, "uv_tcp_init");
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, srv_alloc, srv_read) != 0)
    uv_close((uv_handle_t *)&c->tcp, srv_conn_closed);
}

static void srv_close_walk(uv_handle_t *h, void *arg) {
  srv_t *s = arg;
  if (uv_is_closing(h)) return;
  if (h == (uv_handle_t *)&s->listener || h == (uv_handle_t *)&s->stop) uv_close(h, NULL);
  else uv_close(h, srv_conn_closed);
}

static void srv_stop_cb(uv_async_t *a) {
  srv_t *s = a->data;
  uv_walk(&s->loop, srv_close_walk, s);
}

static void *srv_thread(void *arg) {
  srv_t *s = arg;
  uv_run(&s->loop, UV_RUN_DEFAULT);
  s->loop_close_rc = uv_loop_close(&s->loop);
  return NULL;
}

static void srv_start(srv_t *s) {
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  cr_assert_eq(uv_loop_init(&s->loop), 0, "uv_loop_init");
  http_parser_settings_init(&s->settings);
  s->settings.on_url = srv_on_url;
  s->settings.on_body = srv_on_body;
  s->settings.on_message_complete = srv_on_message_complete;
  cr_assert_eq(uv_ip4_addr("127.0.0.1", 0, &addr), 0, "uv_ip4_addr");
  cr_assert_eq(uv_tcp_init(&s->loop, &s->listener), 0, "uv_tcp_init");
  s->listener.data = s;
  cr_assert_eq(uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0), 0, "uv_tcp_bind");
  cr_assert_eq(uv_listen((uv_stream_t *)&s->listener, 511, srv_on_connection), 0, "uv_listen");
  cr_assert_eq(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len), 0,
               "uv_tcp_getsockname");
  s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  cr_assert_eq(uv_async_init(&s->loop, &s->stop, srv_stop_cb), 0, "uv_async_init");
  s->stop.data = s;
  cr_assert_eq(pthread_create(&s->thread, NULL, srv_thread, s), 0, "pthread_create");
}

static void srv_stop(srv_t *s) {
  uv_async_send(&s->stop);
  pthread_join(s->thread, NULL);
  cr_expect_eq(s->loop_close_rc, 0, "test server: uv_loop_close %d", s->loop_close_rc);
}

/* ---- running loadgen ---- */

typedef struct run {
  int exit_status;    /* -1: killed at the deadline */
  char out[16384];
  char err[16384];
} run_t;

/* Runs loadgen with args (NULL-terminated), stdout and stderr captured, killed after
 * deadline_s. */
static void run_loadgen(run_t *r, const char *const *args, double deadline_s) {
  char bin[4096];
  const char *argv[64];
  int n = 0, out[2], err[2];
  snprintf(bin, sizeof bin, "%s/loadgen", tk_bin_dir());
  cr_assert_eq(access(bin, X_OK), 0, "%s is missing: build it first (make)", bin);
  argv[n++] = bin;
  while (*args && n < 63) argv[n++] = *args++;
  argv[n] = NULL;
  memset(r, 0, sizeof(*r));
  cr_assert(pipe(out) == 0 && pipe(err) == 0, "pipe: %s", strerror(errno));
  pid_t pid = fork();
  cr_assert(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]);
    close(err[0]);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  size_t lens[2] = {0, 0};
  char *bufs[2] = {r->out, r->err};
  struct pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  double deadline = tk_now_ms() + deadline_s * 1000;
  int open_fds = 2, killed = 0;
  while (open_fds > 0) {
    double left = deadline - tk_now_ms();
    if (left <= 0) {
      kill(pid, SIGKILL);
      killed = 1;
      break;
    }
    if (poll(fds, 2, (int)left + 1) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = read(fds[i].fd, bufs[i] + lens[i], sizeof(r->out) - 1 - lens[i]);
      if (got > 0) {
        lens[i] += (size_t)got;
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      }
    }
  }
  for (int i = 0; i < 2; i++)
    if (fds[i].fd >= 0) close(fds[i].fd);
  int status = 0;
  waitpid(pid, &status, 0);
  r->exit_status = killed ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The summary fields, parsed from the last CSV line of stdout. */
typedef struct summary {
  char label[64];
  double offered_rps, achieved_rps, ok_rps, sent, responses, ok, err_connect, err_timeout,
      err_http, err_other, p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mean_ms, duration_s;
} summary_t;

static const char columns[] =
    "label,offered_rps,achieved_rps,ok_rps,sent,responses,ok,err_connect,err_timeout,err_http,"
    "err_other,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms,duration_s";

static int count_fields(const char *line) {
  int n = 1;
  for (; *line && *line != '\n'; line++) n += *line == ',';
  return n;
}

static void parse_summary(const run_t *r, summary_t *s) {
  cr_assert_eq(r->exit_status, 0, "loadgen exited with %d; stderr:\n%s", r->exit_status, r->err);
  const char *line = r->out, *nl;
  while ((nl = strchr(line, '\n')) && nl[1]) line = nl + 1; /* the last line */
  cr_assert_eq(count_fields(line), 18, "summary has %d fields, want 18: '%s'", count_fields(line),
               line);
  const char *comma = strchr(line, ',');
  cr_assert_not_null(comma, "summary line without a comma: '%s'", line);
  size_t ll = (size_t)(comma - line);
  if (ll >= sizeof(s->label)) ll = sizeof(s->label) - 1;
  memcpy(s->label, line, ll);
  s->label[ll] = '\0';
  double *dst[] = {&s->offered_rps, &s->achieved_rps, &s->ok_rps, &s->sent, &s->responses,
                   &s->ok, &s->err_connect, &s->err_timeout, &s->err_http, &s->err_other,
                   &s->p50_ms, &s->p90_ms, &s->p99_ms, &s->p999_ms, &s->max_ms, &s->mean_ms,
                   &s->duration_s};
  int n = 1;
  const char *p = comma;
  for (size_t i = 0; i < sizeof(dst) / sizeof(dst[0]) && *p == ','; i++, n++) {
    char *end;
    *dst[i] = strtod(p + 1, &end);
    if (end == p + 1) break;
    p = end;
  }
  cr_assert_eq(n, 18, "could not read 18 fields from the summary '%s'", line);
}

static void url_of(char *out, size_t len, const srv_t *s, const char *path) {
  snprintf(out, len, "http://127.0.0.1:%d%s", s->port, path);
}

/* ---- tests ---- */

Test(loadgen, offered_rate_is_kept, .timeout = 20) {
  /* Against build/bin/hello, the shell's trivial service: far faster than 500 req/s. */
  tk_proc_t hello;
  char url[128], stats[128];
  run_t r;
  summary_t m;
  cr_assert_eq(tk_spawn(&hello, "hello", (const char *const[]){NULL}), 0,
               "could not start %s/hello", tk_bin_dir());
  snprintf(url, sizeof url, "%s/", hello.url);
  snprintf(stats, sizeof stats, "%s/debug/stats", hello.url);
  double before = tk_stat(stats, "requests_total");
  run_loadgen(&r, (const char *[]){url, "-r", "500", "-d", "2", "-c", "20", "-q", NULL}, 15);
  double after = tk_stat(stats, "requests_total");
  tk_stop(&hello);
  parse_summary(&r, &m);
  cr_assert(fabs(m.sent - 1000) <= 20,
            "sent %.0f requests at 500/s for 2 s, want 1000 +-2%%: the schedule t0 + i/rate is "
            "not kept", m.sent);
  cr_assert(fabs(m.achieved_rps - 500) <= 25,
            "achieved %.1f responses/s at an offered 500/s against a fast server, want +-5%%",
            m.achieved_rps);
  cr_assert(m.responses == m.sent && m.ok == m.sent,
            "sent %.0f, responses %.0f, ok %.0f: every request to a fast server gets a 200",
            m.sent, m.responses, m.ok);
  /* requests_total may or may not count the /debug/stats request itself: allow one. */
  cr_assert(after - before >= m.sent && after - before <= m.sent + 1,
            "hello's requests_total grew by %.0f, loadgen says it sent %.0f", after - before,
            m.sent);
  cr_assert(fabs(m.duration_s - 2.0) < 0.05, "duration_s %.3f, want 2", m.duration_s);
}

Test(loadgen, open_loop_latency_includes_a_stall, .timeout = 20) {
  /* The server blocks its loop for 200 ms once, 0.5 s in. At 500 req/s about 100 requests fall
   * due during the stall and wait in the generator's queue: measured from their due time, they
   * put p99 near 200 ms. A generator that measured from the moment it could send, with its 4
   * connections, would see at most 4 slow requests out of 750 and a p99 under 10 ms. */
  srv_t s = {.stall_at = 250, .stall_ms = 200};
  char url[128];
  run_t r;
  summary_t m;
  srv_start(&s);
  url_of(url, sizeof url, &s, "/");
  run_loadgen(&r, (const char *[]){url, "-r", "500", "-d", "1.5", "-c", "4", "-q", NULL}, 15);
  srv_stop(&s);
  parse_summary(&r, &m);
  cr_assert(m.max_ms >= 195, "max %.3f ms, but the server stalled 200 ms on one request",
            m.max_ms);
  cr_assert(m.p99_ms >= 100,
            "p99 %.3f ms after a 200 ms stall at 500 req/s (about 100 requests delayed): "
            "latency must count from each request's due time, queue wait included", m.p99_ms);
  cr_assert(m.p50_ms < 50, "p50 %.3f ms: most requests are not near the stall", m.p50_ms);
  cr_assert(fabs(m.sent - 750) <= 15 && m.err_timeout == 0,
            "sent %.0f (want 750 +-2%%), timeouts %.0f (want 0): a stall must not change the "
            "offered load", m.sent, m.err_timeout);
}

Test(loadgen, timeouts_count_as_the_timeout_value, .timeout = 20) {
  /* A server that never answers: every request due (25 at 50/s for 0.5 s) ends as a timeout,
   * whether it was written or still queued, and counts as 200 ms in every percentile. */
  srv_t s = {.hang = 1};
  char url[128];
  run_t r;
  summary_t m;
  srv_start(&s);
  url_of(url, sizeof url, &s, "/");
  run_loadgen(&r, (const char *[]){url, "-r", "50", "-d", "0.5", "-c", "5", "-t", "200", "-q",
                                   NULL}, 15);
  srv_stop(&s);
  parse_summary(&r, &m);
  cr_assert(m.err_timeout == 25 && m.responses == 0,
            "timeouts %.0f, responses %.0f: 25 requests were due and none was answered",
            m.err_timeout, m.responses);
  cr_assert(m.p50_ms == 200 && m.p99_ms == 200 && m.max_ms == 200,
            "p50 %.3f, p99 %.3f, max %.3f ms: a timeout counts as its timeout (200 ms), so "
            "dropping requests cannot make the percentiles look good",
            m.p50_ms, m.p99_ms, m.max_ms);
  cr_assert(s.requests >= 5, "the server saw %u requests, want one per connection at least",
            s.requests);
}

Test(loadgen, timeouts_keep_their_connections, .timeout = 20) {
  /* Beyond capacity: the server blocks its loop for 300 ms once, so every request in flight
   * times out (-t 100) and later gets its answer. Each timeout is counted, but the connection
   * stays for the late answer: closing it and reconnecting per timed-out request (as loadgen
   * once did) opened 72,867 connections in 6 s at -c 200 and made loadgen the bottleneck. */
  srv_t s = {.stall_at = 100, .stall_ms = 300};
  char url[128];
  run_t r;
  summary_t m;
  srv_start(&s);
  url_of(url, sizeof url, &s, "/");
  run_loadgen(&r, (const char *[]){url, "-r", "500", "-d", "1", "-c", "10", "-t", "100", "-q",
                                   NULL}, 15);
  srv_stop(&s);
  parse_summary(&r, &m);
  cr_assert(m.err_timeout >= 10, "timeouts %.0f: a 300 ms stall at 500 req/s with -t 100 times "
            "out every request in flight and those queued meanwhile", m.err_timeout);
  cr_assert(s.connections <= 10, "the server accepted %u connections for -c 10: a timed-out "
            "request must keep its connection (count the timeout, read the late answer)",
            s.connections);
  cr_assert(m.responses > 300, "responses %.0f: after the stall the same connections carry on",
            m.responses);
}

Test(loadgen, connect_errors_are_counted, .timeout = 20) {
  /* A port where nothing listens: bind one, note it, close it. */
  srv_t s = {0};
  char url[128];
  run_t r;
  summary_t m;
  srv_start(&s);
  url_of(url, sizeof url, &s, "/");
  srv_stop(&s);
  run_loadgen(&r, (const char *[]){url, "-r", "100", "-d", "0.5", "-c", "2", "-t", "100", "-q",
                                   NULL}, 15);
  parse_summary(&r, &m);
  cr_assert(m.err_connect >= 2 && m.responses == 0,
            "err_connect %.0f, responses %.0f against a closed port: each refused connect is "
            "counted (exit status 0 after a run, even with errors)", m.err_connect, m.responses);
  cr_assert_eq(m.err_timeout, 50, "timeouts %.0f: the 50 due requests never got an answer",
               m.err_timeout);
}

Test(loadgen, usage_errors_exit_2, .timeout = 20) {
  static const char *const bad[][6] = {
      {NULL},
      {"http://127.0.0.1:1/", "--rate", "abc", NULL},
      {"http://127.0.0.1:1/", "-c", "0", NULL},
      {"http://127.0.0.1:1/", "--format", "xml", NULL},
      {"http://127.0.0.1:1/", "--no-such-flag", NULL},
      {"ftp://127.0.0.1:1/", NULL},
      {"http://127.0.0.1:1/", "-H", "no colon", NULL},
      {"http://127.0.0.1:1/", "-d", NULL},
      {"http://127.0.0.1:1/", "http://127.0.0.1:2/", NULL},
  };
  run_t r;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    run_loadgen(&r, bad[i], 5);
    cr_assert_eq(r.exit_status, 2, "loadgen %s %s %s: exit %d, want 2 (usage error)",
                 bad[i][0] ? bad[i][0] : "", bad[i][0] && bad[i][1] ? bad[i][1] : "",
                 bad[i][0] && bad[i][1] && bad[i][2] ? bad[i][2] : "", r.exit_status);
    cr_assert(strstr(r.err, "usage: loadgen"), "a usage error prints the usage on stderr: '%s'",
              r.err);
    cr_assert_eq(r.out[0], '\0', "nothing on stdout after a usage error: '%s'", r.out);
  }
  run_loadgen(&r, (const char *[]){"--help", NULL}, 5);
  cr_assert(r.exit_status == 0 && strstr(r.out, "usage: loadgen") && strstr(r.out, "--rate"),
            "--help: exit %d, want 0 and the usage on stdout", r.exit_status);
}

Test(loadgen, csv_and_json_shape, .timeout = 20) {
  srv_t s = {0};
  char url[128];
  run_t r;
  summary_t m;
  srv_start(&s);
  url_of(url, sizeof url, &s, "/x?y=1");
  run_loadgen(&r, (const char *[]){url, "-r", "0", "-c", "5", "--max-requests", "50",
                                   "--csv-header", "--label", "solution", "-q", NULL}, 15);
  cr_assert_eq(r.exit_status, 0, "exit %d; stderr: %s", r.exit_status, r.err);
  cr_assert(strncmp(r.out, columns, strlen(columns)) == 0 && r.out[strlen(columns)] == '\n',
            "the header line must be exactly\n%s\ngot\n%s", columns, r.out);
  parse_summary(&r, &m);
  cr_assert_str_eq(m.label, "solution", "first column is --label: '%s'", m.label);
  cr_assert(m.sent == 50 && m.responses == 50 && m.ok == 50 && m.offered_rps == 0,
            "closed loop, --max-requests 50: sent %.0f, responses %.0f, ok %.0f, offered %.0f",
            m.sent, m.responses, m.ok, m.offered_rps);
  cr_assert(m.p50_ms <= m.p90_ms && m.p90_ms <= m.p99_ms && m.p99_ms <= m.p999_ms &&
                m.p999_ms <= m.max_ms && m.mean_ms <= m.max_ms && m.p50_ms > 0,
            "percentiles must be ordered: p50 %.3f p90 %.3f p99 %.3f p999 %.3f max %.3f",
            m.p50_ms, m.p90_ms, m.p99_ms, m.p999_ms, m.max_ms);

  run_loadgen(&r, (const char *[]){url, "-r", "0", "-c", "2", "--max-requests", "20", "--format",
                                   "json", "-m", "POST", "-b", "hello=1", "-q", NULL}, 15);
  srv_stop(&s);
  cr_assert_eq(r.exit_status, 0, "exit %d; stderr: %s", r.exit_status, r.err);
  const char *fields[] = {"offered_rps", "achieved_rps", "ok_rps", "sent", "responses", "ok",
                          "err_connect", "err_timeout", "err_http", "err_other", "p50_ms",
                          "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms", "duration_s"};
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
    cr_assert(!isnan(tk_json_number(r.out, fields[i])), "JSON summary lacks \"%s\": %s",
              fields[i], r.out);
  cr_assert(strstr(r.out, "\"label\":\"\""), "JSON has the label: %s", r.out);
  cr_assert_eq(tk_json_number(r.out, "sent"), 20, "JSON sent %.0f, want 20",
               tk_json_number(r.out, "sent"));
  cr_assert(s.posts == 20 && s.body_bytes == 20 * strlen("hello=1"),
            "-m POST -b hello=1, 20 requests: the server saw %u POSTs and %zu body bytes",
            s.posts, s.body_bytes);
}

Test(loadgen, warmup_is_not_measured, .timeout = 20) {
  srv_t s = {0};
  char url[128];
  run_t r;
  summary_t m;
  srv_start(&s);
  url_of(url, sizeof url, &s, "/");
  run_loadgen(&r, (const char *[]){url, "-r", "200", "-w", "0.5", "-d", "0.5", "-q", NULL}, 15);
  srv_stop(&s);
  parse_summary(&r, &m);
  cr_assert(fabs(m.sent - 100) <= 2,
            "sent %.0f in the measured 0.5 s at 200/s, want 100: warmup requests do not count",
            m.sent);
  cr_assert(s.requests >= 195 && s.requests <= 205,
            "the server saw %u requests, want about 200 (warmup + measurement)", s.requests);
}

/* Reads a whole small file into buf. */
static void slurp(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "%s was not written: %s", path, strerror(errno));
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = '\0';
  fclose(f);
}

Test(loadgen, timeline_and_stats_files, .timeout = 20) {
  srv_t s = {0};
  char url[128], stats[128];
  char tl_path[] = "/tmp/loadgen-tl-XXXXXX", st_path[] = "/tmp/loadgen-st-XXXXXX";
  static char tl[65536], st[65536];
  run_t r;
  summary_t m;
  int fd1 = mkstemp(tl_path), fd2 = mkstemp(st_path);
  cr_assert(fd1 >= 0 && fd2 >= 0, "mkstemp: %s", strerror(errno));
  close(fd1);
  close(fd2);
  srv_start(&s);
  url_of(url, sizeof url, &s, "/");
  url_of(stats, sizeof stats, &s, "/debug/stats");
  run_loadgen(&r, (const char *[]){url, "-r", "200", "-d", "1", "--timeline", tl_path,
                                   "--timeline-interval-ms", "100", "--stats-url", stats,
                                   "--stats-interval-ms", "50", "--stats-out", st_path, "-q",
                                   NULL}, 15);
  srv_stop(&s);
  parse_summary(&r, &m);
  slurp(tl_path, tl, sizeof tl);
  slurp(st_path, st, sizeof st);
  unlink(tl_path);
  unlink(st_path);

  const char *tl_header = "t_s,sent,responses,ok,errors,p50_ms,p99_ms,max_ms\n";
  cr_assert(strncmp(tl, tl_header, strlen(tl_header)) == 0, "timeline header: %.80s", tl);
  double sent = 0, responses = 0;
  int rows = 0;
  for (const char *line = strchr(tl, '\n') + 1; *line; line = strchr(line, '\n') + 1) {
    double t, se, re;
    cr_assert_eq(count_fields(line), 8, "timeline row with %d fields: %.80s", count_fields(line),
                 line);
    cr_assert_eq(sscanf(line, "%lf,%lf,%lf", &t, &se, &re), 3, "timeline row: %.80s", line);
    sent += se;
    responses += re;
    rows++;
  }
  cr_assert(rows >= 9 && rows <= 13, "%d timeline rows for 1 s at 100 ms, want about 10", rows);
  cr_assert(sent == m.sent && responses == m.responses,
            "the timeline's rows add up to sent %.0f / responses %.0f, the summary says %.0f / "
            "%.0f", sent, responses, m.sent, m.responses);

  cr_assert(strncmp(st, "t_s,requests_total,answer\n", 26) == 0,
            "stats CSV header is t_s then the JSON keys in order: %.80s", st);
  int samples = 0;
  double last_total = -1;
  for (const char *line = strchr(st, '\n') + 1; *line; line = strchr(line, '\n') + 1) {
    double t, total, answer;
    cr_assert_eq(sscanf(line, "%lf,%lf,%lf", &t, &total, &answer), 3, "stats row: %.80s", line);
    cr_assert(answer == 42 && total >= last_total,
              "stats row %.80s: answer must be 42 and requests_total must not go down", line);
    last_total = total;
    samples++;
  }
  cr_assert(samples >= 8, "%d stats samples in 1 s at 50 ms, want about 20", samples);
}
