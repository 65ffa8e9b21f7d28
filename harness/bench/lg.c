/* lg.c - loadgen's engine (lg.h, docs/loadgen.md): open-loop HTTP/1.1 load on libuv.
 *
 * Open loop: request i is due at t0 + i/rate whatever the server does, and its latency is
 * measured from that due time. When the server stalls, due requests wait in the generator's
 * queue (two counters, no allocation) and that wait is part of their latency, so a stall shows
 * up in p99 instead of silently lowering the offered load ("coordinated omission").
 *
 * One thread, one loop: keep-alive connections with one request at a time on each, the request
 * bytes formatted once and written with uv_try_write, responses parsed by http_parser, latencies
 * in a log-linear histogram (hist.h). Due times are kept with a timerfd (ns precision), because
 * libuv's timers count whole milliseconds and would add up to 1 ms to every latency.
 *
 * Beyond capacity, a request that times out in flight is counted as a timeout at once, but its
 * connection stays: the late answer is read and dropped, and the connection carries the next
 * request. Only a connection with no answer four timeouts after it was sent is closed and
 * reopened (a hung server), and at the end of the measurement the timed-out ones are closed.
 * Dropping a connection per timed-out request would open thousands of connections a second and
 * make the generator the bottleneck it measures.
 */
#include "lg.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <uv.h>

#include "hist.h"

#define LG_READ_BUF 16384
#define LG_STATS_BODY 16384
#define LG_BACKOFF_MIN_MS 10
#define LG_BACKOFF_MAX_MS 1000

typedef struct lg lg_t;

typedef enum {
  LG_CONN_CLOSED,      /* no handle */
  LG_CONN_BACKOFF,     /* no handle, reconnect at retry_ns */
  LG_CONN_CONNECTING,
  LG_CONN_IDLE,
  LG_CONN_BUSY,        /* one request written, its response not complete */
  LG_CONN_CLOSING      /* uv_close called, waiting for the close callback */
} lg_conn_state_t;

typedef enum { LG_PHASE_RUN, LG_PHASE_DRAIN, LG_PHASE_DONE } lg_phase_t;
typedef enum { LG_OUT_OK, LG_OUT_HTTP, LG_OUT_TIMEOUT, LG_OUT_OTHER } lg_outcome_t;

typedef struct lg_conn {
  lg_t *lg;
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_write_t write_req;
  http_parser parser;
  lg_conn_state_t state;
  int is_stats;
  int idle_pos;             /* index in lg->idle, -1 when not there */
  int backoff_next;         /* the close callback waits before reconnecting */
  int close_after;          /* the server said Connection: close */
  int protocol_error;       /* bytes arrived that answer no request */
  unsigned backoff_ms;
  uint64_t retry_ns;
  uint64_t intended_ns;     /* due time of the request in flight */
  uint64_t sent_ns;         /* when it was written */
  int timed_out;            /* counted as a timeout; its late answer counts in achieved_rps only */
  int retire;               /* closed after the measurement: not reopened */
  uint64_t responses;       /* since this connection was opened */
  char buf[LG_READ_BUF];
} lg_conn_t;

typedef struct lg_counts {
  uint64_t sent, responses, ok, err_connect, err_timeout, err_http, err_other;
} lg_counts_t;

typedef struct lg_url {
  char host[256];
  int port;
  char target[2048];        /* path and query */
  struct sockaddr_in addr;
} lg_url_t;


struct lg {
  uv_loop_t loop;
  lg_opts_t o;
  lg_url_t url, stats_url;
  char *req, *stats_req;
  size_t req_len, stats_req_len;
  http_parser_settings settings, stats_settings;

  lg_conn_t *conns;
  lg_conn_t **idle;
  int n_idle, busy;
  lg_conn_t *stats_conn;

  lg_phase_t phase;
  uint64_t t0, ws, we, t_end, timeout_ns;
  uint64_t generated, head, sent_total; /* open loop: due so far, first not yet sent */
  uv_timer_t tick;
  uv_poll_t pacer;
  int pacer_fd, pacer_open;
  uint64_t armed_ns;
  uv_signal_t sigint, sigterm;
  int signals;

  lg_counts_t win;            /* fate of the requests due in the measured window */
  uint64_t win_arrivals, win_arrivals_ok; /* responses that arrived inside the window */
  hist_t hist;                /* their latencies, us */
  int connect_error_shown;
  unsigned warnings;           /* per-request error messages printed so far */

  FILE *timeline;
  uint64_t tl_next_ns, tl_interval_ns;
  lg_counts_t tl;
  uint64_t tl_errors;
  hist_t tl_hist;

  uint64_t pr_next_ns, pr_responses, pr_errors; /* for the progress line, per second */

  uint64_t st_next_ns, st_interval_ns, st_sent_ns;
  uint64_t conns_opened;
  char st_body[LG_STATS_BODY];
  size_t st_len;
};


static void lg_conn_connect(lg_conn_t *c);
static void lg_conn_ready(lg_conn_t *c, uint64_t now);

/* Errors that can happen once per request (resets, bad responses) are reported on stderr, but
 * only the first few: the counters in the summary say how many there were. */
#define LG_MAX_WARNINGS 10
static void lg_warn(lg_t *lg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lg_warn(lg_t *lg, const char *fmt, ...) {
  if (lg->warnings >= LG_MAX_WARNINGS) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("loadgen: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (++lg->warnings == LG_MAX_WARNINGS) fputs(" (further errors: see the counters)", stderr);
  fputc('\n', stderr);
}

/* ---- time ---- */

/* CLOCK_MONOTONIC in ns: the clock the timerfd uses too, so due times and wake-ups agree. */
static uint64_t lg_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int lg_open_loop(const lg_t *lg) { return lg->o.rate > 0; }

static uint64_t lg_due_ns(const lg_t *lg, uint64_t i) {
  return lg->t0 + (uint64_t)((double)i * 1e9 / lg->o.rate);
}

/* ---- accounting ---- */

/* A response arrived (achieved_rps counts responses that arrive in the measured window, a late
 * answer to a request already counted as a timeout included: the server did serve it). */
static void lg_arrival(lg_t *lg, uint64_t now, int ok) {
  if (now < lg->ws || now >= lg->we) return;
  lg->win_arrivals++;
  if (ok) lg->win_arrivals_ok++;
}

/* Every request ends here exactly once: a response, a timeout or another failure. The counters
 * and the histogram are about requests DUE in the measured window; achieved_rps is about
 * responses that ARRIVED in it. The timeline counts by completion time. */
static void lg_finish(lg_t *lg, uint64_t intended_ns, uint64_t now, lg_outcome_t out) {
  uint64_t latency_us;
  if (out == LG_OUT_TIMEOUT)
    latency_us = (uint64_t)lg->o.timeout_ms * 1000u; /* a timeout counts as its timeout value */
  else
    latency_us = now > intended_ns ? (now - intended_ns) / 1000u : 0;
  int response = out == LG_OUT_OK || out == LG_OUT_HTTP;

  if (response) {
    lg->tl.responses++;
    lg->pr_responses++;
  }
  if (out == LG_OUT_OK) {
    lg->tl.ok++;
  } else {
    lg->tl_errors++;
    lg->pr_errors++;
  }
  if (out != LG_OUT_OTHER) hist_record(&lg->tl_hist, latency_us);

  if (response) lg_arrival(lg, now, out == LG_OUT_OK);
  if (intended_ns < lg->ws) return; /* warmup */
  switch (out) {
  case LG_OUT_OK: lg->win.responses++; lg->win.ok++; break;
  case LG_OUT_HTTP: lg->win.responses++; lg->win.err_http++; break;
  case LG_OUT_TIMEOUT: lg->win.err_timeout++; break;
  case LG_OUT_OTHER: lg->win.err_other++; break;
  }
  if (out != LG_OUT_OTHER) hist_record(&lg->hist, latency_us);
}

/* Measurement ends at end_ns: no new request becomes due; what is queued or in flight still
 * gets its answer or its timeout (the tick then finishes the run). */
static void lg_end_measure(lg_t *lg, uint64_t end_ns) {
  if (lg->phase != LG_PHASE_RUN) return;
  lg->phase = LG_PHASE_DRAIN;
  if (end_ns < lg->we) lg->we = end_ns;
  if (lg->we < lg->ws) lg->we = lg->ws;
}

/* ---- idle connections: a stack, O(1) push, pop and removal ---- */

static void lg_idle_push(lg_t *lg, lg_conn_t *c) {
  if (c->idle_pos >= 0) return;
  c->idle_pos = lg->n_idle;
  lg->idle[lg->n_idle++] = c;
}

static void lg_idle_remove(lg_t *lg, lg_conn_t *c) {
  if (c->idle_pos < 0) return;
  lg_conn_t *last = lg->idle[--lg->n_idle];
  lg->idle[c->idle_pos] = last;
  last->idle_pos = c->idle_pos;
  c->idle_pos = -1;
}

/* ---- connections ---- */

static void lg_conn_closed(uv_handle_t *handle) {
  lg_conn_t *c = handle->data;
  lg_t *lg = c->lg;
  if (lg->phase == LG_PHASE_DONE || c->retire) {
    c->state = LG_CONN_CLOSED;
  } else if (c->backoff_next) {
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : LG_BACKOFF_MIN_MS;
    if (c->backoff_ms > LG_BACKOFF_MAX_MS) c->backoff_ms = LG_BACKOFF_MAX_MS;
    c->state = LG_CONN_BACKOFF;
    c->retry_ns = lg_now_ns() + (uint64_t)c->backoff_ms * 1000000u;
  } else {
    c->state = LG_CONN_CLOSED;
    lg_conn_connect(c);
  }
}

/* Closes c's handle; the close callback reconnects (after a backoff when `backoff`). The caller
 * has already accounted for a request in flight. */
static void lg_conn_close(lg_conn_t *c, int backoff) {
  lg_t *lg = c->lg;
  if (c->state == LG_CONN_CLOSED || c->state == LG_CONN_BACKOFF || c->state == LG_CONN_CLOSING)
    return;
  lg_idle_remove(lg, c);
  if (c->state == LG_CONN_BUSY) lg->busy--;
  c->state = LG_CONN_CLOSING;
  c->backoff_next = backoff;
  uv_close((uv_handle_t *)&c->tcp, lg_conn_closed);
}

/* The request in flight on c failed without a response; close and reopen the connection. */
static void lg_conn_fail(lg_conn_t *c, lg_outcome_t out, int backoff) {
  if (c->state == LG_CONN_BUSY && !c->is_stats && !c->timed_out)
    lg_finish(c->lg, c->intended_ns, lg_now_ns(), out);
  lg_conn_close(c, backoff);
}

static void lg_write_cb(uv_write_t *req, int status) {
  lg_conn_t *c = req->data;
  if (status == UV_ECANCELED) return; /* the connection is being closed */
  if (status < 0) {
    lg_warn(c->lg, "write: %s", uv_strerror(status));
    lg_conn_fail(c, LG_OUT_OTHER, 1);
  }
}

/* Writes bytes on c: uv_try_write first (no request struct, no queue), uv_write for the rest. */
static int lg_conn_write(lg_conn_t *c, const char *bytes, size_t len) {
  uv_buf_t b = uv_buf_init((char *)bytes, (unsigned)len);
  int rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (rc == (int)len) return 0;
  if (rc < 0 && rc != UV_EAGAIN) return rc;
  if (rc > 0) {
    b.base += rc;
    b.len -= (size_t)rc;
  }
  c->write_req.data = c;
  return uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, lg_write_cb);
}

/* Sends the next load request on idle connection c; it was due at intended_ns. */
static void lg_conn_send(lg_conn_t *c, uint64_t intended_ns) {
  lg_t *lg = c->lg;
  c->intended_ns = intended_ns;
  c->sent_ns = lg_now_ns();
  c->timed_out = 0;
  c->state = LG_CONN_BUSY;
  lg->busy++;
  lg->sent_total++;
  lg->tl.sent++;
  if (intended_ns >= lg->ws) lg->win.sent++;
  int rc = lg_conn_write(c, lg->req, lg->req_len);
  if (rc < 0) {
    lg_warn(lg, "uv_try_write: %s", uv_strerror(rc));
    lg_conn_fail(c, LG_OUT_OTHER, 1);
  }
}

/* Open loop: counts the requests that have become due by now, and gives up on queued ones whose
 * timeout has passed (they never reached the server; they count as timeouts). */
static void lg_generate(lg_t *lg, uint64_t now) {
  while (lg->phase == LG_PHASE_RUN) {
    if (lg->o.max_requests && lg->generated >= lg->o.max_requests) {
      lg_end_measure(lg, lg_due_ns(lg, lg->generated)); /* the window is N / rate long */
      break;
    }
    uint64_t due = lg_due_ns(lg, lg->generated);
    if (due >= lg->t_end) {
      lg_end_measure(lg, lg->t_end);
      break;
    }
    if (due > now) break;
    lg->generated++;
  }
  while (lg->head < lg->generated) {
    uint64_t due = lg_due_ns(lg, lg->head);
    if (due + lg->timeout_ns > now) break;
    lg_finish(lg, due, now, LG_OUT_TIMEOUT);
    lg->head++;
  }
}

/* Open loop: hands queued requests to idle connections. */
static void lg_pump(lg_t *lg, uint64_t now) {
  lg_generate(lg, now);
  while (lg->head < lg->generated && lg->n_idle > 0) {
    lg_conn_t *c = lg->idle[lg->n_idle - 1];
    lg_idle_remove(lg, c);
    lg_conn_send(c, lg_due_ns(lg, lg->head++));
  }
}

/* c has nothing in flight: give it the next request, or park it. */
static void lg_conn_ready(lg_conn_t *c, uint64_t now) {
  lg_t *lg = c->lg;
  if (c->is_stats || lg->phase == LG_PHASE_DONE) return;
  if (lg_open_loop(lg)) {
    lg_generate(lg, now);
    if (lg->head < lg->generated) {
      lg_conn_send(c, lg_due_ns(lg, lg->head++));
      return;
    }
  } else if (lg->phase == LG_PHASE_RUN) {
    if (now >= lg->t_end) {
      lg_end_measure(lg, lg->t_end);
    } else if (lg->o.max_requests && lg->sent_total >= lg->o.max_requests) {
      lg_end_measure(lg, now);
    } else {
      lg_conn_send(c, now); /* closed loop: due the moment it can go */
      return;
    }
  }
  lg_idle_push(lg, c);
}

/* ---- http_parser callbacks ---- */

static int lg_on_message_complete(http_parser *p) {
  lg_conn_t *c = p->data;
  lg_t *lg = c->lg;
  if (c->state != LG_CONN_BUSY) {
    c->protocol_error = 1;
    return 1;
  }
  uint64_t now = lg_now_ns();
  c->responses++;
  c->backoff_ms = 0;
  c->close_after = !http_should_keep_alive(p);
  c->state = LG_CONN_IDLE;
  lg->busy--;
  if (c->is_stats) {
    if (p->status_code >= 200 && p->status_code < 300 && lg->o.on_stats) {
      lg->st_body[lg->st_len] = '\0';
      lg->o.on_stats(lg->o.ud, (double)(now - lg->t0) / 1e9, lg->st_body, lg->st_len);
    }
  } else if (c->timed_out) {
    lg_arrival(lg, now, p->status_code >= 200 && p->status_code < 300); /* late, but served */
    c->timed_out = 0;
  } else {
    lg_finish(lg, c->intended_ns, now,
              p->status_code >= 200 && p->status_code < 300 ? LG_OUT_OK : LG_OUT_HTTP);
  }
  return 0;
}

static int lg_on_stats_body(http_parser *p, const char *at, size_t len) {
  lg_conn_t *c = p->data;
  lg_t *lg = c->lg;
  size_t room = LG_STATS_BODY - 1 - lg->st_len;
  if (len > room) len = room;
  memcpy(lg->st_body + lg->st_len, at, len);
  lg->st_len += len;
  return 0;
}

/* A HEAD response has headers only: returning 1 tells http_parser there is no body. */
static int lg_on_headers_head(http_parser *p) {
  (void)p;
  return 1;
}

/* ---- libuv callbacks ---- */

static void lg_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  lg_conn_t *c = handle->data;
  (void)suggested;
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void lg_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  lg_conn_t *c = stream->data;
  lg_t *lg = c->lg;
  const http_parser_settings *settings = c->is_stats ? &lg->stats_settings : &lg->settings;
  if (nread == 0) return;
  if (nread < 0) {
    /* A response delimited by the end of the connection completes now. */
    if (nread == UV_EOF) http_parser_execute(&c->parser, settings, NULL, 0);
    if (nread != UV_EOF) lg_warn(lg, "read: %s", uv_strerror((int)nread));
    /* Closed before any response: back off, or a server that accepts and hangs up at once
     * would get a reconnect storm. */
    lg_conn_fail(c, LG_OUT_OTHER, c->responses == 0);
    return;
  }
  size_t parsed = http_parser_execute(&c->parser, settings, buf->base, (size_t)nread);
  if (c->protocol_error || c->parser.http_errno != HPE_OK || parsed != (size_t)nread) {
    if (!c->protocol_error && c->parser.http_errno != HPE_OK)
      lg_warn(lg, "bad response: %s", http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
    lg_conn_fail(c, LG_OUT_OTHER, 1);
    return;
  }
  if (c->state != LG_CONN_IDLE) return; /* response not complete yet */
  if (c->close_after) {
    lg_conn_close(c, 0);
    return;
  }
  lg_conn_ready(c, lg_now_ns());
}

static void lg_connect_cb(uv_connect_t *req, int status) {
  lg_conn_t *c = req->data;
  lg_t *lg = c->lg;
  if (status == UV_ECANCELED) return; /* closed while connecting */
  uint64_t now = lg_now_ns();
  if (status < 0) {
    if (!c->is_stats) {
      if (now >= lg->ws) lg->win.err_connect++;
      lg->tl_errors++;
    }
    if (!lg->connect_error_shown) {
      fprintf(stderr, "loadgen: connect %s:%d: %s (retrying with a backoff)\n",
              c->is_stats ? lg->stats_url.host : lg->url.host,
              c->is_stats ? lg->stats_url.port : lg->url.port, uv_strerror(status));
      lg->connect_error_shown = 1;
    }
    lg_conn_close(c, 1);
    return;
  }
  int rc = uv_tcp_nodelay(&c->tcp, 1); /* small requests must leave now, not after 40 ms */
  if (rc == 0) rc = uv_read_start((uv_stream_t *)&c->tcp, lg_alloc_cb, lg_read_cb);
  if (rc < 0) {
    lg_warn(lg, "uv_read_start: %s", uv_strerror(rc));
    lg_conn_close(c, 1);
    return;
  }
  http_parser_init(&c->parser, HTTP_RESPONSE);
  c->parser.data = c;
  c->responses = 0;
  c->close_after = 0;
  c->protocol_error = 0;
  c->state = LG_CONN_IDLE;
  lg_conn_ready(c, now);
}

static void lg_conn_connect(lg_conn_t *c) {
  lg_t *lg = c->lg;
  const lg_url_t *u = c->is_stats ? &lg->stats_url : &lg->url;
  if (lg->phase == LG_PHASE_DONE) return;
  if (lg->phase == LG_PHASE_DRAIN && (c->is_stats || lg->head >= lg->generated)) return;
  int rc = uv_tcp_init(&lg->loop, &c->tcp);
  if (rc < 0) {
    lg_warn(lg, "uv_tcp_init: %s", uv_strerror(rc));
    c->state = LG_CONN_BACKOFF;
    c->backoff_ms = LG_BACKOFF_MAX_MS;
    c->retry_ns = lg_now_ns() + (uint64_t)c->backoff_ms * 1000000u;
    return;
  }
  c->tcp.data = c;
  c->connect_req.data = c;
  c->state = LG_CONN_CONNECTING;
  if (!c->is_stats) lg->conns_opened++;
  rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&u->addr, lg_connect_cb);
  if (rc < 0) {
    /* e.g. EMFILE with too many connections for `ulimit -n` */
    if (!c->is_stats && lg_now_ns() >= lg->ws) lg->win.err_connect++;
    if (!lg->connect_error_shown) {
      fprintf(stderr, "loadgen: uv_tcp_connect: %s\n", uv_strerror(rc));
      lg->connect_error_shown = 1;
    }
    lg_conn_close(c, 1);
  }
}

/* ---- the pacer: a timerfd armed at the next due time ---- */

static void lg_pacer_arm(lg_t *lg) {
  if (!lg->pacer_open || lg->phase != LG_PHASE_RUN) return;
  uint64_t next = lg_due_ns(lg, lg->generated);
  if (next > lg->t_end) next = lg->t_end;
  if (next == lg->armed_ns) return;
  struct itimerspec its;
  memset(&its, 0, sizeof(its));
  its.it_value.tv_sec = (time_t)(next / 1000000000u);
  its.it_value.tv_nsec = (long)(next % 1000000000u);
  if (timerfd_settime(lg->pacer_fd, TFD_TIMER_ABSTIME, &its, NULL) != 0) {
    fprintf(stderr, "loadgen: timerfd_settime: %s\n", strerror(errno));
    return; /* the tick still dispatches, with millisecond precision */
  }
  lg->armed_ns = next;
}

static void lg_pacer_cb(uv_poll_t *handle, int status, int events) {
  lg_t *lg = handle->data;
  uint64_t expirations;
  (void)events;
  if (status < 0) {
    fprintf(stderr, "loadgen: pacer poll: %s\n", uv_strerror(status));
    return;
  }
  if (read(lg->pacer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
    fprintf(stderr, "loadgen: read(timerfd): %s\n", strerror(errno));
  lg->armed_ns = 0;
  lg_pump(lg, lg_now_ns());
  lg_pacer_arm(lg);
}

static void lg_pacer_closed(uv_handle_t *handle) {
  lg_t *lg = handle->data;
  close(lg->pacer_fd); /* only now: libuv may still watch the fd until the handle is closed */
  lg->pacer_fd = -1;
}

/* ---- periodic work: timeouts, backoffs, stats, timeline, progress, the end ---- */

static void lg_timeline_row(lg_t *lg, uint64_t t_ns) {
  fprintf(lg->timeline, "%.3f,%llu,%llu,%llu,%llu,", (double)(t_ns - lg->t0) / 1e9,
          (unsigned long long)lg->tl.sent, (unsigned long long)lg->tl.responses,
          (unsigned long long)lg->tl.ok, (unsigned long long)lg->tl_errors);
  if (hist_count(&lg->tl_hist) > 0)
    fprintf(lg->timeline, "%.3f,%.3f,%.3f\n", hist_percentile(&lg->tl_hist, 50) / 1000.0,
            hist_percentile(&lg->tl_hist, 99) / 1000.0, hist_max(&lg->tl_hist) / 1000.0);
  else
    fputs(",,\n", lg->timeline); /* no latency in this interval: missing, not zero */
  memset(&lg->tl, 0, sizeof(lg->tl));
  lg->tl_errors = 0;
  hist_reset(&lg->tl_hist);
}

static void lg_close_walk(lg_t *lg) {
  for (long i = 0; i < lg->o.conns; i++) lg_conn_close(&lg->conns[i], 0);
  if (lg->stats_conn) lg_conn_close(lg->stats_conn, 0);
  if (lg->pacer_open) {
    uv_poll_stop(&lg->pacer);
    uv_close((uv_handle_t *)&lg->pacer, lg_pacer_closed);
    lg->pacer_open = 0;
  }
  uv_close((uv_handle_t *)&lg->tick, NULL);
  if (lg->signals) {
    uv_close((uv_handle_t *)&lg->sigint, NULL);
    uv_close((uv_handle_t *)&lg->sigterm, NULL);
    lg->signals = 0;
  }
}

static void lg_done(lg_t *lg, uint64_t now) {
  lg->phase = LG_PHASE_DONE;
  if (lg->timeline && (lg->tl.sent || lg->tl.responses || lg->tl_errors))
    lg_timeline_row(lg, now);
  lg_close_walk(lg);
}

static void lg_check_conn(lg_conn_t *c, uint64_t now) {
  lg_t *lg = c->lg;
  if (c->state == LG_CONN_BUSY && c->is_stats) {
    if (now >= lg->st_sent_ns + lg->timeout_ns) lg_conn_fail(c, LG_OUT_TIMEOUT, 0);
  } else if (c->state == LG_CONN_BUSY) {
    /* Count the timeout when it is due, but keep the connection for the late answer... */
    if (!c->timed_out && now >= c->intended_ns + lg->timeout_ns) {
      lg_finish(lg, c->intended_ns, now, LG_OUT_TIMEOUT);
      c->timed_out = 1;
    }
    /* ...unless the server has held it four timeouts (it is hung, not slow), or the measurement
     * is over (the late answer would count for nothing): then recycle the connection. */
    if (c->timed_out && (now >= c->sent_ns + 4 * lg->timeout_ns || lg->phase != LG_PHASE_RUN)) {
      c->retire = lg->phase != LG_PHASE_RUN; /* reopened only while measuring */
      lg_conn_close(c, 0);
    }
  } else if (c->state == LG_CONN_BACKOFF && now >= c->retry_ns) {
    c->state = LG_CONN_CLOSED;
    lg_conn_connect(c);
  }
}

static void lg_tick_cb(uv_timer_t *handle) {
  lg_t *lg = handle->data;
  uint64_t now = lg_now_ns();
  if (lg->phase == LG_PHASE_RUN && now >= lg->t_end) lg_end_measure(lg, lg->t_end);
  if (lg->phase == LG_PHASE_RUN && lg->o.until && *lg->o.until) lg_end_measure(lg, now);
  if (lg_open_loop(lg)) {
    lg_pump(lg, now);
    lg_pacer_arm(lg);
  }
  for (long i = 0; i < lg->o.conns; i++) lg_check_conn(&lg->conns[i], now);
  if (lg->stats_conn) {
    lg_conn_t *s = lg->stats_conn;
    lg_check_conn(s, now);
    if (s->state == LG_CONN_IDLE && lg->phase == LG_PHASE_RUN && now >= lg->st_next_ns) {
      lg->st_len = 0;
      lg->st_sent_ns = now;
      s->state = LG_CONN_BUSY;
      lg->busy++;
      int rc = lg_conn_write(s, lg->stats_req, lg->stats_req_len);
      if (rc < 0) {
        lg_warn(lg, "stats write: %s", uv_strerror(rc));
        lg_conn_fail(s, LG_OUT_OTHER, 1);
      }
      lg->st_next_ns += lg->st_interval_ns;
      if (lg->st_next_ns < now) lg->st_next_ns = now + lg->st_interval_ns;
    }
    if (lg->phase != LG_PHASE_RUN) lg_conn_close(s, 0); /* samples cover warmup + measurement */
  }
  if (lg->timeline) {
    while (now >= lg->tl_next_ns) {
      lg_timeline_row(lg, lg->tl_next_ns);
      lg->tl_next_ns += lg->tl_interval_ns;
    }
  }
  if (!lg->o.quiet && now >= lg->pr_next_ns) {
    const char *phase = lg->phase == LG_PHASE_DRAIN ? "drain" : now < lg->ws ? "warmup" : "measure";
    fprintf(stderr,
            "loadgen: %5.1fs %-7s sent=%llu resp/s=%llu err/s=%llu queue=%llu busy=%d/%ld\n",
            (double)(now - lg->t0) / 1e9, phase, (unsigned long long)lg->sent_total,
            (unsigned long long)lg->pr_responses, (unsigned long long)lg->pr_errors,
            (unsigned long long)(lg->generated - lg->head), lg->busy, lg->o.conns);
    lg->pr_responses = lg->pr_errors = 0;
    lg->pr_next_ns += 1000000000u;
  }
  if (lg->phase == LG_PHASE_DRAIN && lg->busy == 0 && lg->head >= lg->generated) lg_done(lg, now);
}

static void lg_signal_cb(uv_signal_t *handle, int signum) {
  lg_t *lg = handle->data;
  uint64_t now = lg_now_ns();
  (void)signum;
  if (lg->phase == LG_PHASE_RUN) lg_end_measure(lg, now); /* first signal: end and drain */
  else if (lg->phase == LG_PHASE_DRAIN) lg_done(lg, now); /* second: stop now */
}

/* ---- setup ---- */

static int lg_parse_url(const char *s, lg_url_t *u) {
  struct http_parser_url pu;
  http_parser_url_init(&pu);
  if (http_parser_parse_url(s, strlen(s), 0, &pu) != 0) return -1;
  if (!(pu.field_set & (1 << UF_SCHEMA)) || !(pu.field_set & (1 << UF_HOST))) return -1;
  if (pu.field_data[UF_SCHEMA].len != 4 || strncmp(s + pu.field_data[UF_SCHEMA].off, "http", 4))
    return -1;
  size_t hl = pu.field_data[UF_HOST].len;
  if (hl >= sizeof(u->host)) return -1;
  memcpy(u->host, s + pu.field_data[UF_HOST].off, hl);
  u->host[hl] = '\0';
  u->port = (pu.field_set & (1 << UF_PORT)) ? pu.port : 80;
  const char *path = "/";
  size_t pl = 1;
  if (pu.field_set & (1 << UF_PATH)) {
    path = s + pu.field_data[UF_PATH].off;
    pl = pu.field_data[UF_PATH].len;
  }
  size_t ql = (pu.field_set & (1 << UF_QUERY)) ? pu.field_data[UF_QUERY].len : 0;
  if (pl + ql + 2 > sizeof(u->target)) return -1;
  memcpy(u->target, path, pl);
  u->target[pl] = '\0';
  if (ql) {
    u->target[pl] = '?';
    memcpy(u->target + pl + 1, s + pu.field_data[UF_QUERY].off, ql);
    u->target[pl + 1 + ql] = '\0';
  }
  return 0;
}

/* Resolves u->host (IPv4) once, before the run. Returns 0, or a negative uv error. */
static int lg_resolve(uv_loop_t *loop, lg_url_t *u) {
  if (uv_ip4_addr(u->host, u->port, &u->addr) == 0) return 0;
  uv_getaddrinfo_t req;
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(loop, &req, NULL, u->host, NULL, &hints); /* NULL cb: synchronous */
  if (rc < 0) return rc;
  memcpy(&u->addr, req.addrinfo->ai_addr, sizeof(u->addr));
  u->addr.sin_port = htons((uint16_t)u->port);
  uv_freeaddrinfo(req.addrinfo);
  return 0;
}

/* The request bytes, formatted once: every connection writes the same buffer. */
static char *lg_format_request(const lg_opts_t *o, const lg_url_t *u, const char *method,
                               const char *body, size_t *len) {
  size_t body_len = body ? strlen(body) : 0;
  size_t cap = strlen(method) + strlen(u->target) + strlen(u->host) + body_len + 256;
  for (int i = 0; o && i < o->n_headers; i++) cap += strlen(o->headers[i]) + 2;
  char *r = malloc(cap);
  if (!r) return NULL;
  int n = snprintf(r, cap, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: loopholes-loadgen\r\n",
                   method, u->target, u->host, u->port);
  for (int i = 0; o && i < o->n_headers; i++)
    n += snprintf(r + n, cap - (size_t)n, "%s\r\n", o->headers[i]);
  if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)
    n += snprintf(r + n, cap - (size_t)n, "Content-Length: %zu\r\n", body_len);
  n += snprintf(r + n, cap - (size_t)n, "\r\n");
  if (body_len) memcpy(r + n, body, body_len);
  *len = (size_t)n + body_len;
  return r;
}

static int lg_conn_array(lg_t *lg) {
  lg->conns = calloc((size_t)lg->o.conns, sizeof(*lg->conns));
  lg->idle = calloc((size_t)lg->o.conns, sizeof(*lg->idle));
  if (!lg->conns || !lg->idle) return UV_ENOMEM;
  for (long i = 0; i < lg->o.conns; i++) {
    lg->conns[i].lg = lg;
    lg->conns[i].idle_pos = -1;
  }
  if (lg->o.stats_url) {
    lg->stats_conn = calloc(1, sizeof(*lg->stats_conn));
    if (!lg->stats_conn) return UV_ENOMEM;
    lg->stats_conn->lg = lg;
    lg->stats_conn->idle_pos = -1;
    lg->stats_conn->is_stats = 1;
  }
  return 0;
}

/* Opens the handles and starts the load. Returns 0 or a negative uv error (already reported). */
static int lg_start(lg_t *lg) {
  int rc = uv_timer_init(&lg->loop, &lg->tick);
  if (rc < 0) {
    fprintf(stderr, "loadgen: uv_timer_init: %s\n", uv_strerror(rc));
    return rc;
  }
  lg->tick.data = lg;
  /* Timeouts and backoffs need a coarse clock only: a tick of a twentieth of the timeout. */
  long tick_ms = lg->o.timeout_ms / 20;
  if (tick_ms < 1) tick_ms = 1;
  if (tick_ms > 10) tick_ms = 10;
  rc = uv_timer_start(&lg->tick, lg_tick_cb, (uint64_t)tick_ms, (uint64_t)tick_ms);
  if (rc < 0) {
    fprintf(stderr, "loadgen: uv_timer_start: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&lg->tick, NULL);
    return rc;
  }
  if (lg->o.handle_signals && uv_signal_init(&lg->loop, &lg->sigint) == 0) {
    if (uv_signal_init(&lg->loop, &lg->sigterm) == 0) {
      lg->signals = 1;
      lg->sigint.data = lg->sigterm.data = lg;
      if ((rc = uv_signal_start(&lg->sigint, lg_signal_cb, SIGINT)) < 0 ||
          (rc = uv_signal_start(&lg->sigterm, lg_signal_cb, SIGTERM)) < 0)
        fprintf(stderr, "loadgen: uv_signal_start: %s\n", uv_strerror(rc));
    } else {
      uv_close((uv_handle_t *)&lg->sigint, NULL);
    }
  }

  lg->t0 = lg_now_ns();
  lg->ws = lg->t0 + (uint64_t)(lg->o.warmup_s * 1e9);
  lg->t_end = lg->ws + (uint64_t)(lg->o.duration_s * 1e9);
  lg->we = lg->t_end;
  lg->timeout_ns = (uint64_t)lg->o.timeout_ms * 1000000u;
  lg->tl_next_ns = lg->t0 + lg->tl_interval_ns;
  lg->pr_next_ns = lg->t0 + 1000000000u;
  lg->st_next_ns = lg->t0;

  if (lg_open_loop(lg)) {
    lg->pacer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (lg->pacer_fd < 0) {
      fprintf(stderr, "loadgen: timerfd_create: %s (pacing by the %ld ms tick)\n", strerror(errno),
              tick_ms);
    } else if ((rc = uv_poll_init(&lg->loop, &lg->pacer, lg->pacer_fd)) < 0) {
      fprintf(stderr, "loadgen: uv_poll_init: %s\n", uv_strerror(rc));
      close(lg->pacer_fd);
    } else {
      lg->pacer.data = lg;
      lg->pacer_open = 1;
      rc = uv_poll_start(&lg->pacer, UV_READABLE, lg_pacer_cb);
      if (rc < 0) fprintf(stderr, "loadgen: uv_poll_start: %s\n", uv_strerror(rc));
      lg_pacer_arm(lg);
    }
  }
  for (long i = 0; i < lg->o.conns; i++) lg_conn_connect(&lg->conns[i]);
  if (lg->stats_conn) lg_conn_connect(lg->stats_conn);
  return 0;
}

/* -c 5000 needs more descriptors than the usual soft limit of 1024: raise it as far as the hard
 * limit allows; what is still missing shows up as connect errors (EMFILE). */
static void lg_raise_fd_limit(rlim_t want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
  rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    fprintf(stderr, "loadgen: setrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
}

/* ---- the run ---- */

const char *const lg_col_names[LG_NCOLS] = {
    "offered_rps", "achieved_rps", "ok_rps", "sent", "responses", "ok", "err_connect",
    "err_timeout", "err_http", "err_other", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms",
    "mean_ms", "duration_s"};
const int lg_col_decimals[LG_NCOLS] = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3};

void lg_result_values(const lg_result_t *r, double out[LG_NCOLS]) {
  double v[LG_NCOLS] = {r->offered_rps, r->achieved_rps, r->ok_rps, (double)r->sent,
                        (double)r->responses, (double)r->ok, (double)r->err_connect,
                        (double)r->err_timeout, (double)r->err_http, (double)r->err_other,
                        r->p50_ms, r->p90_ms, r->p99_ms, r->p999_ms, r->max_ms, r->mean_ms,
                        r->duration_s};
  memcpy(out, v, sizeof v);
}

void lg_opts_init(lg_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->rate = 100;
  o->conns = 50;
  o->duration_s = 5;
  o->timeout_ms = 2000;
  o->method = "GET";
  o->stats_interval_ms = 100;
  o->timeline_interval_ms = 250;
}

static void lg_result(const lg_t *lg, lg_result_t *r) {
  const lg_counts_t *w = &lg->win;
  double dur = (double)(lg->we - lg->ws) / 1e9;
  memset(r, 0, sizeof *r);
  r->offered_rps = lg->o.rate;
  r->achieved_rps = dur > 0 ? (double)lg->win_arrivals / dur : 0;
  r->ok_rps = dur > 0 ? (double)lg->win_arrivals_ok / dur : 0;
  r->sent = w->sent;
  r->responses = w->responses;
  r->ok = w->ok;
  r->err_connect = w->err_connect;
  r->err_timeout = w->err_timeout;
  r->err_http = w->err_http;
  r->err_other = w->err_other;
  r->p50_ms = hist_percentile(&lg->hist, 50) / 1000.0;
  r->p90_ms = hist_percentile(&lg->hist, 90) / 1000.0;
  r->p99_ms = hist_percentile(&lg->hist, 99) / 1000.0;
  r->p999_ms = hist_percentile(&lg->hist, 99.9) / 1000.0;
  r->max_ms = hist_max(&lg->hist) / 1000.0;
  r->mean_ms = hist_mean(&lg->hist) / 1000.0;
  r->duration_s = dur;
  r->conns_opened = lg->conns_opened;
}

int lg_run(const lg_opts_t *o, lg_result_t *r) {
  lg_t *lg = calloc(1, sizeof(*lg));
  if (!lg) {
    fprintf(stderr, "loadgen: out of memory\n");
    return 1;
  }
  lg->pacer_fd = -1;
  lg->o = *o;
  if (!lg->o.method) lg->o.method = "GET";
  if (lg->o.timeout_ms <= 0) lg->o.timeout_ms = 2000;
  if (lg->o.stats_interval_ms <= 0) lg->o.stats_interval_ms = 100;
  if (lg->o.timeline_interval_ms <= 0) lg->o.timeline_interval_ms = 250;
  if (lg->o.conns < 1 || lg->o.conns > LG_MAX_CONNS || lg->o.rate < 0 || lg->o.duration_s <= 0) {
    fprintf(stderr, "loadgen: bad options (connections %ld, rate %g, duration %g)\n",
            lg->o.conns, lg->o.rate, lg->o.duration_s);
    free(lg);
    return 2;
  }
  const char *bad_url = NULL;
  if (!lg->o.url || lg_parse_url(lg->o.url, &lg->url) != 0) bad_url = lg->o.url ? lg->o.url : "";
  else if (lg->o.stats_url && lg_parse_url(lg->o.stats_url, &lg->stats_url) != 0)
    bad_url = lg->o.stats_url;
  if (bad_url) {
    fprintf(stderr, "loadgen: bad URL '%s' (want http://HOST[:PORT]/PATH)\n", bad_url);
    free(lg);
    return 2;
  }
  lg->st_interval_ns = (uint64_t)lg->o.stats_interval_ms * 1000000u;
  lg->tl_interval_ns = (uint64_t)lg->o.timeline_interval_ms * 1000000u;
  hist_init(&lg->hist);
  hist_init(&lg->tl_hist);

  int exit_rc = 1;
  int rc = uv_loop_init(&lg->loop);
  if (rc < 0) {
    fprintf(stderr, "loadgen: uv_loop_init: %s\n", uv_strerror(rc));
    free(lg);
    return 1;
  }
  /* A server that resets a connection must not kill us with SIGPIPE; libuv reports EPIPE. */
  signal(SIGPIPE, SIG_IGN);
  lg_raise_fd_limit((rlim_t)lg->o.conns + 64);
  if ((rc = lg_resolve(&lg->loop, &lg->url)) < 0 ||
      (lg->o.stats_url && (rc = lg_resolve(&lg->loop, &lg->stats_url)) < 0)) {
    fprintf(stderr, "loadgen: cannot resolve host: %s\n", uv_strerror(rc));
    goto fail_loop;
  }
  lg->req = lg_format_request(&lg->o, &lg->url, lg->o.method, lg->o.body, &lg->req_len);
  if (lg->o.stats_url)
    lg->stats_req = lg_format_request(NULL, &lg->stats_url, "GET", NULL, &lg->stats_req_len);
  if (!lg->req || (lg->o.stats_url && !lg->stats_req) || lg_conn_array(lg) < 0) {
    fprintf(stderr, "loadgen: out of memory\n");
    goto fail_loop;
  }
  http_parser_settings_init(&lg->settings);
  lg->settings.on_message_complete = lg_on_message_complete;
  if (strcmp(lg->o.method, "HEAD") == 0) lg->settings.on_headers_complete = lg_on_headers_head;
  http_parser_settings_init(&lg->stats_settings);
  lg->stats_settings.on_body = lg_on_stats_body;
  lg->stats_settings.on_message_complete = lg_on_message_complete;

  if (lg->o.timeline) {
    lg->timeline = fopen(lg->o.timeline, "w");
    if (!lg->timeline) {
      fprintf(stderr, "loadgen: fopen %s: %s\n", lg->o.timeline, strerror(errno));
      goto fail_loop;
    }
    fputs("t_s,sent,responses,ok,errors,p50_ms,p99_ms,max_ms\n", lg->timeline);
  }

  if (lg_start(lg) == 0) {
    uv_run(&lg->loop, UV_RUN_DEFAULT);
    lg_result(lg, r);
    exit_rc = 0;
  } else {
    uv_run(&lg->loop, UV_RUN_DEFAULT); /* let the close callbacks run */
  }

fail_loop:
  rc = uv_loop_close(&lg->loop);
  if (rc != 0) {
    fprintf(stderr, "loadgen: uv_loop_close: %s\n", uv_strerror(rc));
    exit_rc = 1;
  }
  if (lg->timeline && fclose(lg->timeline) != 0) {
    fprintf(stderr, "loadgen: writing %s: %s\n", lg->o.timeline, strerror(errno));
    exit_rc = 1;
  }
  free(lg->req);
  free(lg->stats_req);
  free(lg->conns);
  free(lg->idle);
  free(lg->stats_conn);
  free(lg);
  return exit_rc;
}
