/* shell.c - the service shell: HTTP/1.1 on libuv, parsed by libhttp-parser. See shell.h.
 *
 * One conn_t per TCP connection. Bytes are read into one buffer the whole shell shares and fed to
 * http_parser at once, so an idle connection costs a few hundred bytes, not a read buffer; each
 * complete message becomes a shell_request_t, appended to the connection's queue and handed to
 * its handler. Answers are written strictly in queue order, so a pipelined
 * request answered early waits for the ones before it. When a connection has max_pipeline
 * unanswered requests the parser is paused and reading stops: the client's sends then back up
 * in TCP, which is how a server pushes back without buffering without bound. Only then does a
 * connection keep bytes of its own: the rest of that one read, copied out of the shared buffer.
 */
#include "shell.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "probe.h"

/* One read's worth, shared by all connections: each read is parsed before the next one. */
#define READ_BUF 65536
#define MAX_ROUTES 32
/* Connections accepted beyond max_connections to read their first request, so that a control
 * route (stats) still answers at the limit. Beyond these, new connections wait in the backlog. */
#define OVER_LIMIT_RESERVE 8
#define STATS_BUF 4096
/* How often a connection the shell does not read (pipeline full, answers owed after
 * "Connection: close", waiting for a slot) is checked for a client that has gone. */
#define WATCH_MS 100

/* Which timeout list a connection is on (see conn_track). */
enum {
  TL_NONE,   /* busy: it owes answers and is read; the lab's deadlines apply */
  TL_HEADER, /* waiting for a request's headers: header_timeout_ms */
  TL_IDLE,   /* keep-alive between requests, or in a body: idle_timeout_ms */
  TL_WATCH,  /* not read while it owes answers: checked every WATCH_MS for a client gone */
  TL_COUNT
};

typedef struct conn conn_t;

typedef struct route {
  char method[16]; /* "" = any */
  char path[128];
  char label[160]; /* "GET /work": the handler's name for the stall detector */
  shell_handler_fn handler;
  void *data;
  int control;     /* answered even at max_connections (shell_route_control) */
} route_t;

struct shell_request {
  shell_t *shell;
  conn_t *conn;            /* NULL once the connection is gone */
  shell_request_t *next;   /* in the connection's queue */
  char method[16];
  char *url;               /* "path?query", NUL-terminated; path and query point into it */
  size_t url_len;
  size_t url_cap;
  char *path;
  const char *query;
  char *headers;           /* "name\0value\0" pairs */
  size_t headers_len;
  size_t headers_cap;
  int in_value;            /* parser state: appending to a header value */
  char *body;
  size_t body_len;
  size_t body_cap;
  unsigned seq;
  int keep_alive;
  int dispatched;          /* handed to a handler: counts as in flight until answered */
  int answered;
  int aborted;
  char *resp;              /* the serialized answer, waiting for its turn */
  size_t resp_len;
  uint64_t start_ns;
  shell_abort_fn on_abort;
  void *abort_data;
};

struct conn {
  uv_tcp_t tcp;
  shell_t *shell;
  http_parser parser;
  conn_t *prev, *next;
  char *pending;            /* bytes read while the parser was paused (malloc'ed), else NULL */
  size_t pending_len;
  size_t pending_off;      /* bytes of pending already parsed */
  shell_request_t *cur;    /* the message being parsed */
  size_t header_bytes;
  int error_status;        /* set by a callback that rejects the message: 413, 431 */
  shell_request_t *head, *tail;
  unsigned unanswered;
  unsigned seq;
  int reading;
  int paused;
  int no_more;             /* stop parsing: Connection: close or an error was answered */
  int closing;
  unsigned writes;         /* uv_write requests in progress */
  int over_limit;          /* accepted beyond max_connections: not counted until promoted */
  int held;                /* over_limit, and its first request waits, undispatched, for a slot */
  conn_t *wait_next;       /* in the shell's FIFO of over_limit connections */
  int headers_done;        /* the message being parsed has all its headers */
  int reset_on_close;      /* close with a TCP reset (shell_respond_reset) */
  int tl;                  /* TL_*: the timeout list it is on */
  uint64_t tl_since_ms;    /* loop time it joined that list: lists are in this order */
  conn_t *tl_prev, *tl_next;
};

struct shell {
  uv_loop_t *loop;
  shell_config_t cfg;
  uv_tcp_t server;
  int listening;
  int port;
  int accept_pending;      /* a connection waits for a free slot (max_connections) */
  unsigned n_control;      /* control routes: the shell accepts over the limit only if any */
  unsigned over_limit_open; /* connections accepted beyond max_connections, not yet promoted */
  conn_t *wait_head, *wait_tail; /* those connections, oldest first */
  route_t routes[MAX_ROUTES];
  unsigned n_routes;
  conn_t *conns;
  shell_counters_t counters;
  probe_t probe;
  stall_t *stall;          /* the stall detector, or NULL when off */
  http_parser_settings settings;
  shell_stats_fn stats_fn;
  void *stats_data;
  char *stats_buf;         /* being written while a stats hook runs */
  size_t stats_len;
  int closing;
  int draining;            /* shell_close_idle: every answer says Connection: close */
  shell_shutdown_fn shutdown_fn; /* shell_set_shutdown_hook */
  void *shutdown_data;
  shell_closed_fn finish_done;   /* what shell_shutdown_finish passes to shell_close */
  void *finish_data;
  shell_closed_fn drained_fn;    /* shell_on_drained */
  void *drained_data;
  unsigned handles_open;   /* server + probe + connections, until their close callbacks */
  shell_closed_fn on_closed;
  void *closed_data;
  uint64_t created_ns;
  uv_timer_t sweep;        /* the next timeout, watch check or shed retry (on_sweep) */
  uint64_t sweep_due_ms;   /* when it is armed for, 0 when not armed */
  uint64_t watch_next_ms;  /* next check of the TL_WATCH connections */
  conn_t *tl_head[TL_COUNT], *tl_tail[TL_COUNT];
  char read_buf[READ_BUF]; /* every connection reads into this; see on_alloc */
};

static void conn_close(conn_t *c);
static void conn_flush(conn_t *c);
static void conn_parse(conn_t *c);
static void shell_maybe_finish(shell_t *s);
static void shell_accept_next(shell_t *s);
static void conn_promote(conn_t *c);
static void conn_unwait(conn_t *c);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void conn_track(conn_t *c, int progress);
static void tl_remove(conn_t *c);
static int shell_shed_one(shell_t *s);
static conn_t *shell_first_held(shell_t *s);

/* ---------------------------------------------------------------- small helpers */

static int buf_append(char **buf, size_t *len, size_t *cap, const char *at, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t ncap = *cap ? *cap : 256;
    while (ncap < *len + n + 1) ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (nb == NULL) return -1;
    *buf = nb;
    *cap = ncap;
  }
  memcpy(*buf + *len, at, n);
  *len += n;
  (*buf)[*len] = '\0';
  return 0;
}

static const char *status_text(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
  }
}

static void request_free(shell_request_t *r) {
  free(r->url);
  free(r->headers);
  free(r->body);
  free(r->resp);
  free(r);
}

/* ---------------------------------------------------------------- http_parser callbacks */

static int on_message_begin(http_parser *p) {
  conn_t *c = p->data;
  c->cur = calloc(1, sizeof *c->cur);
  if (c->cur == NULL) return -1;
  c->cur->shell = c->shell;
  c->header_bytes = 0;
  c->error_status = 0;
  c->headers_done = 0;
  return 0;
}

static int count_header_bytes(conn_t *c, size_t n) {
  size_t max = c->shell->cfg.max_header_bytes;
  c->header_bytes += n;
  if (c->header_bytes > max) {
    c->error_status = 431;
    return -1;
  }
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  if (count_header_bytes(c, n) != 0) return -1;
  return buf_append(&c->cur->url, &c->cur->url_len, &c->cur->url_cap, at, n);
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  shell_request_t *r = c->cur;
  if (count_header_bytes(c, n + 4) != 0) return -1;
  if (r->in_value) { /* a new field: the previous value is complete; keep the \0 after it */
    if (buf_append(&r->headers, &r->headers_len, &r->headers_cap, "", 1) != 0) return -1;
    r->in_value = 0;
  }
  return buf_append(&r->headers, &r->headers_len, &r->headers_cap, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  shell_request_t *r = c->cur;
  if (count_header_bytes(c, n) != 0) return -1;
  if (!r->in_value) {
    if (buf_append(&r->headers, &r->headers_len, &r->headers_cap, "", 1) != 0) return -1;
    r->in_value = 1;
  }
  return buf_append(&r->headers, &r->headers_len, &r->headers_cap, at, n);
}

static int on_headers_complete(http_parser *p) {
  conn_t *c = p->data;
  shell_request_t *r = c->cur;
  if (r->in_value && buf_append(&r->headers, &r->headers_len, &r->headers_cap, "", 1) != 0)
    return -1;
  if (p->http_major != 1) {
    c->error_status = 505;
    return -1;
  }
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->shell->cfg.max_body_bytes) {
    c->error_status = 413;
    return -1;
  }
  snprintf(r->method, sizeof r->method, "%s", http_method_str((enum http_method)p->method));
  if (r->url == NULL) return -1;
  r->path = r->url;
  char *q = strchr(r->url, '?');
  if (q != NULL) {
    *q = '\0';
    r->query = q + 1;
  } else {
    r->query = "";
  }
  char *hash = strchr(r->query, '#');
  if (hash != NULL) *hash = '\0';
  c->headers_done = 1;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  shell_request_t *r = c->cur;
  if (r->body_len + n > c->shell->cfg.max_body_bytes) {
    c->error_status = 413;
    return -1;
  }
  return buf_append(&r->body, &r->body_len, &r->body_cap, at, n);
}

static const route_t *route_find(shell_t *s, const shell_request_t *r, int *method_mismatch) {
  const route_t *wild = NULL;
  *method_mismatch = 0;
  for (unsigned i = 0; i < s->n_routes; i++) {
    const route_t *rt = &s->routes[i];
    if (strcmp(rt->path, "*") == 0) {
      if (wild == NULL && (rt->method[0] == '\0' || strcmp(rt->method, r->method) == 0)) wild = rt;
      continue;
    }
    if (strcmp(rt->path, r->path) != 0) continue;
    if (rt->method[0] == '\0' || strcmp(rt->method, r->method) == 0) return rt;
    *method_mismatch = 1;
  }
  return *method_mismatch ? NULL : wild;
}

static void conn_enqueue(conn_t *c, shell_request_t *r) {
  r->conn = c;
  r->seq = c->seq++;
  if (c->tail) c->tail->next = r;
  else c->head = r;
  c->tail = r;
  c->unanswered++;
}

/* Hands r to its route's handler, or answers 404/405. */
static void request_dispatch(shell_t *s, shell_request_t *r, const route_t *rt, int mismatch) {
  r->dispatched = 1;
  s->counters.requests_total++;
  s->counters.inflight++;
  if (s->counters.inflight > s->counters.inflight_peak) s->counters.inflight_peak = s->counters.inflight;
  if (rt == NULL) {
    if (mismatch) shell_respondf(r, 405, "text/plain", "method %s not allowed here\n", r->method);
    else shell_respondf(r, 404, "text/plain", "no such path: %s\n", r->path);
  } else {
    const char *prev = s->stall ? stall_enter(s->stall, rt->label) : NULL;
    rt->handler(r, rt->data); /* may answer right away; r may be gone after this */
    if (s->stall) stall_leave(s->stall, prev);
  }
}

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  shell_t *s = c->shell;
  shell_request_t *r = c->cur;
  int mismatch;

  c->cur = NULL;
  r->keep_alive = http_should_keep_alive(p) && !s->closing && !s->draining;
  r->start_ns = uv_hrtime();
  const route_t *rt = route_find(s, r, &mismatch);
  if (c->over_limit) {
    if (rt != NULL && rt->control) {
      /* Answered without taking a slot; the connection then closes, never counted. */
      r->keep_alive = 0;
      conn_unwait(c);
    } else if (s->counters.connections_open < s->cfg.max_connections) {
      conn_promote(c);
    } else {
      /* Waits as it would in the backlog: undispatched, unread beyond, until a slot frees. */
      conn_enqueue(c, r);
      c->held = 1;
      http_parser_pause(p, 1);
      c->paused = 1;
      tl_remove(c); /* not a candidate itself: it has a whole request */
      shell_shed_one(s); /* a slow client may give up its slot for it */
      return 0;
    }
  }
  conn_enqueue(c, r);
  if (!r->keep_alive) c->no_more = 1;
  request_dispatch(s, r, rt, mismatch);
  if (c->closing) { /* the answer closed it (shell_respond_reset, a failed write): parse no more */
    http_parser_pause(p, 1);
    c->paused = 1;
    return 0;
  }

  /* Answers written but not yet taken by the kernel count too: a client that sends requests
   * and never reads the answers must not make the shell buffer them without bound. */
  if (c->no_more || c->unanswered + c->writes >= s->cfg.max_pipeline) {
    http_parser_pause(p, 1);
    c->paused = 1;
  }
  return 0;
}

/* ---------------------------------------------------------------- writing */

typedef struct write_req {
  uv_write_t req;
  char *data;
} write_req_t;

/* Called by libuv when a response has been handed to the kernel (or the write failed). */
static void on_write(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  conn_t *c = req->data;
  free(w->data);
  free(w);
  c->writes--;
  if (status < 0 && !c->closing) {
    conn_close(c);
    return;
  }
  conn_flush(c);
}

/* Writes every answered request at the head of the queue, in order, then decides whether the
 * connection stays open and whether reading resumes. */
static void conn_flush(conn_t *c) {
  shell_t *s = c->shell;
  if (c->closing) return;
  while (c->head != NULL && c->head->answered) {
    shell_request_t *r = c->head;
    c->head = r->next;
    if (c->head == NULL) c->tail = NULL;
    write_req_t *w = malloc(sizeof *w);
    if (w == NULL) {
      request_free(r);
      conn_close(c);
      return;
    }
    w->data = r->resp;
    r->resp = NULL;
    w->req.data = c;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)r->resp_len);
    request_free(r);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc != 0) {
      free(w->data);
      free(w);
      conn_close(c);
      return;
    }
    c->writes++;
  }
  /* no_more: after a "Connection: close" request, a rejected message or during shutdown, the
   * connection closes once everything it owes is written. */
  if (c->no_more && c->head == NULL && c->writes == 0) {
    conn_close(c);
    return;
  }
  if (c->paused && !c->held && !c->no_more && c->unanswered + c->writes < s->cfg.max_pipeline) {
    c->paused = 0;
    http_parser_pause(&c->parser, 0);
    conn_parse(c); /* tracks c */
    return;
  }
  conn_track(c, 0);
}

/* ---------------------------------------------------------------- reading */

/* Called by libuv before each read. Every connection reads into the shell's one buffer: on_read
 * parses the bytes before libuv reads again, and copies out only what the parser left. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->shell->read_buf, sizeof c->shell->read_buf);
}

/* Answers a message the parser rejected, after the answers it owes before it, then closes. */
static void conn_reject(conn_t *c, int status, const char *why) {
  shell_t *s = c->shell;
  shell_request_t *r = calloc(1, sizeof *r);
  if (c->cur) {
    request_free(c->cur);
    c->cur = NULL;
  }
  c->no_more = 1;
  c->error_status = status;
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  if (r == NULL) {
    conn_close(c);
    return;
  }
  r->shell = s;
  snprintf(r->method, sizeof r->method, "-");
  conn_enqueue(c, r);
  r->dispatched = 1;
  if (status != 408) s->counters.bad_requests++; /* 408: too slow, not malformed */
  s->counters.inflight++;
  shell_respondf(r, status, "text/plain", "%s\n", why);
}

/* Feeds data to the parser until it is all parsed, the parser pauses (max_pipeline) or the
 * connection takes no more; answers a message the parser rejects. Returns the bytes parsed. */
static size_t conn_execute(conn_t *c, const char *data, size_t len) {
  size_t off = 0;
  while (off < len && !c->paused && !c->no_more && !c->closing) {
    size_t n = http_parser_execute(&c->parser, &c->shell->settings, data + off, len - off);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    off += n;
    if (err == HPE_PAUSED) {
      /* The pause happened in on_message_complete, after the byte that completed it. */
      break;
    }
    if (err != HPE_OK) {
      int status = c->error_status ? c->error_status : 400;
      const char *why = status == 431   ? "request header too large"
                        : status == 413 ? "request body too large"
                        : status == 505 ? "only HTTP/1.0 and HTTP/1.1 are spoken here"
                                        : http_errno_description(err);
      conn_reject(c, status, why);
      break;
    }
  }
  return off;
}

static void conn_drop_pending(conn_t *c) {
  free(c->pending);
  c->pending = NULL;
  c->pending_len = c->pending_off = 0;
}

/* Parses the bytes kept while the parser was paused, then reads only while the connection can
 * take more: not when paused (TCP backpressure), nor after its last request. */
static void conn_parse(conn_t *c) {
  if (c->pending != NULL) {
    c->pending_off +=
        conn_execute(c, c->pending + c->pending_off, c->pending_len - c->pending_off);
    if (c->pending_off == c->pending_len || c->no_more || c->closing) conn_drop_pending(c);
  }
  if (c->closing) return;
  if ((c->paused || c->no_more) && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  } else if (!c->paused && !c->no_more && !c->reading && !c->shell->closing) {
    c->reading = 1;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
      conn_close(c);
      return;
    }
  }
  conn_track(c, 0);
}

/* Keeps data in the connection's own buffer, after what it already keeps. */
static int conn_keep(conn_t *c, const char *data, size_t len) {
  char *nb = realloc(c->pending, c->pending_len + len);
  if (nb == NULL) return -1;
  memcpy(nb + c->pending_len, data, len);
  c->pending = nb;
  c->pending_len += len;
  return 0;
}

/* Called by libuv with bytes from the client (in the shell's read_buf), or EOF/error. */
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  size_t len = nread > 0 ? (size_t)nread : 0, n;
  if (nread < 0) {
    /* EOF or reset: the client is gone. Requests still unanswered are aborted. */
    conn_close(c);
    return;
  }
  if (nread == 0) return;
  if (c->pending != NULL) {
    /* Not expected (reading stops while bytes wait), but the order of bytes must hold. */
    n = 0;
  } else {
    n = conn_execute(c, buf->base, len);
  }
  /* read_buf is reused by the next read of any connection: what the parser could not take yet
   * (it paused at max_pipeline) moves to this connection until answers make room. */
  if (n < len && !c->no_more && !c->closing && conn_keep(c, buf->base + n, len - n) != 0) {
    conn_close(c);
    return;
  }
  conn_parse(c);
  if (!c->closing) conn_track(c, 1); /* bytes came: a body in progress is not idle */
}

/* ---------------------------------------------------------------- connections */

/* Called by libuv once the connection's handle is closed. */
static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  shell_t *s = c->shell;
  free(c->pending);
  if (c->cur) request_free(c->cur);
  if (c->over_limit) s->over_limit_open--;
  else s->counters.connections_open--;
  free(c);
  s->handles_open--;
  if (!s->closing) {
    /* A slot or a reserve place is free: the oldest connection over the limit with a whole
     * request goes first, then the oldest over the limit, then the one waiting in the backlog. */
    while (s->wait_head != NULL && s->counters.connections_open < s->cfg.max_connections)
      conn_promote(shell_first_held(s) ? shell_first_held(s) : s->wait_head);
    if (s->accept_pending) shell_accept_next(s);
    else if (shell_first_held(s) != NULL) shell_shed_one(s); /* it still needs a slot */
  }
  shell_maybe_finish(s);
}

static void conn_close(conn_t *c) {
  shell_t *s = c->shell;
  if (c->closing) return;
  c->closing = 1;
  if (c->cur) {
    request_free(c->cur);
    c->cur = NULL;
  }
  /* Requests the lab still holds stay valid until it answers them; tell it they are orphans. */
  shell_request_t *r = c->head;
  while (r != NULL) {
    shell_request_t *next = r->next;
    r->next = NULL;
    r->conn = NULL;
    if (r->answered || !r->dispatched) { /* not dispatched: held, the lab never saw it */
      request_free(r);
    } else {
      r->aborted = 1;
      if (r->on_abort) r->on_abort(r, r->abort_data);
    }
    r = next;
  }
  c->head = c->tail = NULL;
  conn_unwait(c);
  tl_remove(c);
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  /* A reset: SO_LINGER 0, then uv_close. It fails only with a shutdown pending (none here). */
  if (!c->reset_on_close || uv_tcp_close_reset(&c->tcp, on_conn_closed) != 0)
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void conn_unwait(conn_t *c) {
  shell_t *s = c->shell;
  conn_t **pp = &s->wait_head, *prev = NULL;
  while (*pp != NULL && *pp != c) {
    prev = *pp;
    pp = &(*pp)->wait_next;
  }
  if (*pp == NULL) return;
  *pp = c->wait_next;
  if (s->wait_tail == c) s->wait_tail = prev;
  c->wait_next = NULL;
}

/* A connection now holds a slot (connections_open already counts it). */
static void count_accepted(shell_t *s) {
  s->counters.connections_accepted++;
  if (s->counters.connections_open > s->counters.connections_peak)
    s->counters.connections_peak = s->counters.connections_open;
}

static void count_connection(shell_t *s) {
  s->counters.connections_open++;
  count_accepted(s);
}

/* Gives a connection accepted over the limit a slot: from now on it counts like any other, and
 * the request it held goes to its handler. */
static void conn_promote(conn_t *c) {
  shell_t *s = c->shell;
  int mismatch;
  conn_unwait(c);
  c->over_limit = 0;
  s->over_limit_open--;
  count_connection(s);
  if (!c->held) return;
  c->held = 0;
  shell_request_t *r = c->head;
  if (!r->keep_alive) c->no_more = 1;
  const route_t *rt = route_find(s, r, &mismatch);
  request_dispatch(s, r, rt, mismatch);
  conn_flush(c); /* resumes parsing and reading, unless the answer closed the connection */
}

/* Accepts the connection libuv holds for us. over_limit: beyond max_connections, into the
 * reserve, not counted until promoted. */
static void shell_accept_one(shell_t *s, int over_limit) {
  conn_t *c = calloc(1, sizeof *c);
  int rc;
  if (c == NULL) return; /* stays pending; retried when a connection closes */
  rc = uv_tcp_init(s->loop, &c->tcp);
  if (rc != 0) {
    free(c);
    return;
  }
  c->tcp.data = c;
  c->shell = s;
  c->over_limit = over_limit;
  s->handles_open++;
  if (over_limit) s->over_limit_open++;
  else s->counters.connections_open++;
  rc = uv_accept((uv_stream_t *)&s->server, (uv_stream_t *)&c->tcp);
  s->accept_pending = 0;
  if (rc != 0) {
    fprintf(stderr, "shell: uv_accept: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    return;
  }
  if (over_limit) {
    if (s->wait_tail) s->wait_tail->wait_next = c;
    else s->wait_head = c;
    s->wait_tail = c;
  } else {
    count_accepted(s);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  c->reading = 1;
  rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc != 0) {
    conn_close(c);
    return;
  }
  conn_track(c, 0); /* the header timeout runs from the accept */
}

/* Accepts the waiting connection if there is room. Not accepting leaves it to libuv, which stops
 * watching the listener until we do: further connections wait in the kernel's backlog, as they
 * would at a real server's limit. */
static void shell_accept_next(shell_t *s) {
  if (s->counters.connections_open < s->cfg.max_connections)
    shell_accept_one(s, 0);
  else if (s->n_control > 0 && s->over_limit_open < OVER_LIMIT_RESERVE)
    shell_accept_one(s, 1);
  else {
    s->accept_pending = 1;
    shell_shed_one(s); /* a slow client makes room: the accept follows its close */
  }
}

/* Called by libuv when a connection is waiting to be accepted. */
static void on_connection(uv_stream_t *server, int status) {
  shell_t *s = server->data;
  if (status < 0) {
    fprintf(stderr, "shell: accept: %s\n", uv_strerror(status));
    return;
  }
  if (s->closing || !s->listening) return;
  shell_accept_next(s);
}

/* ---------------------------------------------------------------- slow clients
 *
 * Every connection that owes no answer is on one of two lists, in the order it joined (so the
 * head of each is the first to expire): TL_HEADER while a request's headers are awaited (from
 * the accept, or the request's first byte), TL_IDLE between keep-alive requests or while a body
 * comes in. One timer (s->sweep) is armed for the earliest deadline. Connections the shell does
 * not read while they owe answers are on TL_WATCH: without reading, libuv would never report
 * their EOF, so every WATCH_MS the kernel is asked (TCP_INFO) whether the client has gone. */

static unsigned tl_timeout_ms(const shell_t *s, int tl) {
  return tl == TL_HEADER ? s->cfg.header_timeout_ms
         : tl == TL_IDLE ? s->cfg.idle_timeout_ms
                         : WATCH_MS;
}

static void tl_remove(conn_t *c) {
  shell_t *s = c->shell;
  if (c->tl == TL_NONE) return;
  if (c->tl_prev) c->tl_prev->tl_next = c->tl_next;
  else s->tl_head[c->tl] = c->tl_next;
  if (c->tl_next) c->tl_next->tl_prev = c->tl_prev;
  else s->tl_tail[c->tl] = c->tl_prev;
  c->tl_prev = c->tl_next = NULL;
  c->tl = TL_NONE;
}

static void on_sweep(uv_timer_t *t);

/* Arms the sweep timer for due_ms (loop time) unless it is armed for earlier already. */
static void sweep_arm(shell_t *s, uint64_t due_ms) {
  uint64_t now = uv_now(s->loop);
  if (s->sweep_due_ms != 0 && s->sweep_due_ms <= due_ms) return;
  if (uv_is_closing((uv_handle_t *)&s->sweep)) return;
  s->sweep_due_ms = due_ms;
  int rc = uv_timer_start(&s->sweep, on_sweep, due_ms > now ? due_ms - now : 0, 0);
  if (rc != 0) fprintf(stderr, "shell: uv_timer_start(sweep): %s\n", uv_strerror(rc));
}

static void tl_append(conn_t *c, int tl) {
  shell_t *s = c->shell;
  unsigned timeout = tl_timeout_ms(s, tl);
  c->tl = tl;
  c->tl_since_ms = uv_now(s->loop);
  c->tl_prev = s->tl_tail[tl];
  c->tl_next = NULL;
  if (s->tl_tail[tl]) s->tl_tail[tl]->tl_next = c;
  else s->tl_head[tl] = c;
  s->tl_tail[tl] = c;
  if (tl == TL_WATCH) {
    if (s->watch_next_ms == 0) s->watch_next_ms = c->tl_since_ms + WATCH_MS;
    sweep_arm(s, s->watch_next_ms);
  } else if (timeout != SHELL_NEVER) {
    sweep_arm(s, c->tl_since_ms + timeout);
  }
}

/* Puts c on the list its state calls for. progress: bytes just came in (a body's idle time
 * starts again). Called after everything that changes what a connection waits for. */
static void conn_track(conn_t *c, int progress) {
  int want;
  if (c->closing) want = TL_NONE;
  else if (!c->reading) want = c->unanswered > 0 || c->writes > 0 || c->held ? TL_WATCH : TL_NONE;
  else if (c->unanswered > 0 || c->writes > 0) want = TL_NONE;
  else if (c->cur != NULL && c->headers_done) want = TL_IDLE;    /* in a body */
  else if (c->cur != NULL || c->seq == 0) want = TL_HEADER;      /* half-sent, or new */
  else want = TL_IDLE;                                           /* keep-alive */
  if (want == c->tl && !(progress && want == TL_IDLE && c->cur != NULL)) return;
  tl_remove(c);
  if (want != TL_NONE) tl_append(c, want);
}

/* 1 when the kernel says the client has sent its FIN or a reset. */
static int conn_client_gone(conn_t *c) {
  struct tcp_info info;
  socklen_t len = sizeof info;
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) return 0;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return 0;
  return info.tcpi_state == TCP_CLOSE_WAIT || info.tcpi_state == TCP_CLOSE;
}

/* A connection whose time is up: a half-sent request gets a 408, an idle one just closes. */
static void conn_expire(conn_t *c, int tl) {
  shell_t *s = c->shell;
  if (tl == TL_HEADER) s->counters.header_timeouts++;
  else s->counters.idle_timeouts++;
  if (c->cur != NULL && !c->over_limit) conn_reject(c, 408, "request timeout: too slow");
  else conn_close(c);
  if (c->tl == tl) tl_remove(c); /* whatever happened, it leaves this list */
}

/* The oldest connection over the limit whose whole request waits for a slot, or NULL. */
static conn_t *shell_first_held(shell_t *s) {
  for (conn_t *c = s->wait_head; c != NULL; c = c->wait_next)
    if (c->held) return c;
  return NULL;
}

/* The connection that has waited longest for a request, or NULL: the one to shed. */
static conn_t *shed_candidate(shell_t *s) {
  conn_t *h = s->tl_head[TL_HEADER], *i = s->tl_head[TL_IDLE];
  if (h == NULL) return i;
  if (i == NULL) return h;
  return h->tl_since_ms <= i->tl_since_ms ? h : i;
}

/* At the limit: closes the longest-waiting connection if it has waited shed_after_ms, and
 * returns 1 (the accept follows from its close callback). Else 0, with the timer armed for
 * when the candidate will be old enough. */
static int shell_shed_one(shell_t *s) {
  conn_t *victim;
  uint64_t now = uv_now(s->loop);
  if (s->cfg.shed_after_ms == SHELL_NEVER || (victim = shed_candidate(s)) == NULL) return 0;
  if (victim->tl_since_ms + s->cfg.shed_after_ms > now) {
    sweep_arm(s, victim->tl_since_ms + s->cfg.shed_after_ms);
    return 0;
  }
  s->counters.connections_shed++;
  conn_close(victim);
  return 1;
}

/* Called by libuv when the sweep timer fires: expires what is due, checks the watched
 * connections, retries an accept that waits, then arms itself for what comes next. */
static void on_sweep(uv_timer_t *t) {
  shell_t *s = t->data;
  uint64_t now = uv_now(s->loop), next = 0;
  s->sweep_due_ms = 0;
  for (int tl = TL_HEADER; tl <= TL_IDLE; tl++) {
    unsigned timeout = tl_timeout_ms(s, tl);
    conn_t *c;
    if (timeout == SHELL_NEVER) continue;
    while ((c = s->tl_head[tl]) != NULL && c->tl_since_ms + timeout <= now) conn_expire(c, tl);
    if (c != NULL && (next == 0 || c->tl_since_ms + timeout < next))
      next = c->tl_since_ms + timeout;
  }
  if (s->tl_head[TL_WATCH] == NULL) {
    s->watch_next_ms = 0;
  } else if (now >= s->watch_next_ms) {
    conn_t *c = s->tl_head[TL_WATCH];
    while (c != NULL) {
      conn_t *nx = c->tl_next;
      if (conn_client_gone(c)) {
        s->counters.clients_gone_unread++;
        conn_close(c); /* aborts what it owes, as an EOF read would */
      }
      c = nx;
    }
    s->watch_next_ms = s->tl_head[TL_WATCH] ? now + WATCH_MS : 0;
  }
  if (s->watch_next_ms != 0 && (next == 0 || s->watch_next_ms < next)) next = s->watch_next_ms;
  if (next != 0) sweep_arm(s, next);
  if (s->accept_pending && !s->closing) shell_accept_next(s);
  else if (!s->closing && shell_first_held(s) != NULL &&
           s->counters.connections_open >= s->cfg.max_connections)
    shell_shed_one(s);
}

/* ---------------------------------------------------------------- /debug/stats */

static long read_rss_kb(void) {
  long pages_total = 0, pages_rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return -1;
  if (fscanf(f, "%ld %ld", &pages_total, &pages_rss) != 2) pages_rss = -1;
  fclose(f);
  return pages_rss < 0 ? -1 : pages_rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static long count_fds(void) {
  long n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory's own fd */
}

static void count_handle(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) (*(unsigned *)arg)++;
}

void shell_stats_add(shell_t *s, const char *name, double value) {
  char tmp[160];
  size_t cap = STATS_BUF;
  if (s->stats_buf == NULL) return;
  int n = snprintf(tmp, sizeof tmp, ",\"%s\":%.6g", name, value);
  if (n > 0 && s->stats_len + (size_t)n < cap) {
    memcpy(s->stats_buf + s->stats_len, tmp, (size_t)n + 1);
    s->stats_len += (size_t)n;
  }
}

static void handle_stats(shell_request_t *req, void *data) {
  shell_t *s = data;
  char buf[STATS_BUF];
  probe_report_t pr;
  unsigned handles = 0;

  if (strcmp(req->method, "POST") == 0) { /* POST /debug/stats: restart peaks and max lag */
    probe_reset(&s->probe);
    if (s->stall) stall_reset(s->stall);
    shell_reset_counters(s);
    shell_respond(req, 204, "text/plain", "", 0);
    return;
  }
  probe_read(&s->probe, &pr);
  uv_walk(s->loop, count_handle, &handles);
  size_t unsent = 0; /* answers handed to libuv that the kernel has not taken yet */
  for (conn_t *c = s->conns; c != NULL; c = c->next)
    unsent += uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
  s->stats_buf = buf;
  s->stats_len = (size_t)snprintf(
      buf, sizeof buf,
      "{\"uptime_s\":%.3f,\"loop_lag_max_ms\":%.3f,\"loop_lag_recent_max_ms\":%.3f,"
      "\"loop_lag_p99_ms\":%.3f,\"idle_fraction\":%.4f,\"probe_cost_us\":%.2f,"
      "\"probe_cost_fraction\":%.6f,\"inflight\":%u,\"inflight_peak\":%u,"
      "\"requests_total\":%llu,\"bad_requests\":%llu,\"connections_open\":%u,"
      "\"connections_peak\":%u,\"connections_accepted\":%llu,\"handles\":%u,\"rss_kb\":%ld,"
      "\"fds\":%ld,\"connections_max\":%u,\"header_timeouts\":%llu,\"idle_timeouts\":%llu,"
      "\"connections_shed\":%llu,\"clients_gone_unread\":%llu,\"write_queue_bytes\":%zu",
      (double)(uv_hrtime() - s->created_ns) / 1e9, pr.lag_max_ms, pr.lag_recent_max_ms,
      pr.lag_recent_p99_ms, pr.idle_fraction, pr.cost_us_per_tick, pr.cost_fraction,
      s->counters.inflight - 1 /* not counting this request */, s->counters.inflight_peak,
      (unsigned long long)s->counters.requests_total, (unsigned long long)s->counters.bad_requests,
      s->counters.connections_open, s->counters.connections_peak,
      (unsigned long long)s->counters.connections_accepted, handles, read_rss_kb(), count_fds(),
      s->counters.connections_max, (unsigned long long)s->counters.header_timeouts,
      (unsigned long long)s->counters.idle_timeouts,
      (unsigned long long)s->counters.connections_shed,
      (unsigned long long)s->counters.clients_gone_unread, unsent);
  if (s->stall) {
    stall_report_t sr;
    stall_read(s->stall, &sr);
    shell_stats_add(s, "stall_threshold_ms", sr.threshold_ms);
    shell_stats_add(s, "slow_callbacks", (double)sr.slow_callbacks);
    shell_stats_add(s, "slow_callback_max_ms", sr.slow_max_ms);
    shell_stats_add(s, "stalls_cpu_starved", (double)sr.cpu_starved);
    shell_stats_add(s, "loop_lag_hist_p50_ms", sr.lag_p50_ms);
    shell_stats_add(s, "loop_lag_hist_p99_ms", sr.lag_p99_ms);
    shell_stats_add(s, "loop_lag_hist_max_ms", sr.lag_max_ms);
  }
  if (s->stats_fn) s->stats_fn(s, s->stats_data);
  if (s->stats_len + 2 < sizeof buf) {
    buf[s->stats_len++] = '}';
    buf[s->stats_len++] = '\n';
  }
  s->stats_buf = NULL;
  shell_respond(req, 200, "application/json", buf, s->stats_len);
}

/* GET /debug/stalls: the stall detector's worst offenders, by name. */
static void handle_stalls(shell_request_t *req, void *data) {
  shell_t *s = data;
  char buf[STATS_BUF], name[256];
  stall_report_t sr;
  size_t len;

  if (s->stall == NULL) {
    shell_respondf(req, 200, "application/json",
                   "{\"enabled\":false,\"hint\":\"start the service with LOOPHOLES_STALL_MS=N\"}\n");
    return;
  }
  stall_read(s->stall, &sr);
  len = (size_t)snprintf(buf, sizeof buf,
                         "{\"enabled\":true,\"threshold_ms\":%u,\"slow_callbacks\":%llu,"
                         "\"slow_callback_max_ms\":%.1f,\"stalls_cpu_starved\":%llu,\"worst\":[",
                         sr.threshold_ms, (unsigned long long)sr.slow_callbacks, sr.slow_max_ms,
                         (unsigned long long)sr.cpu_starved);
  for (unsigned i = 0; i < sr.n_worst && len < sizeof buf - 600; i++) {
    size_t k = 0; /* the name as JSON string content */
    for (const char *p = sr.worst[i].name; *p && k < sizeof name - 7; p++) {
      unsigned char ch = (unsigned char)*p;
      if (ch == '"' || ch == '\\') name[k++] = '\\';
      name[k++] = ch < 0x20 ? '?' : (char)ch;
    }
    name[k] = '\0';
    len += (size_t)snprintf(buf + len, sizeof buf - len,
                            "%s{\"name\":\"%s\",\"count\":%llu,\"max_ms\":%.1f,\"total_ms\":%.1f,"
                            "\"starved\":%llu}",
                            i ? "," : "", name, (unsigned long long)sr.worst[i].count,
                            sr.worst[i].max_ms, sr.worst[i].total_ms,
                            (unsigned long long)sr.worst[i].starved);
  }
  len += (size_t)snprintf(buf + len, sizeof buf - len, "]}\n");
  shell_respond(req, 200, "application/json", buf, len);
}

const char *shell_callback_begin(shell_t *s, const char *name) {
  return s->stall ? stall_enter(s->stall, name) : NULL;
}

void shell_callback_end(shell_t *s, const char *previous) {
  if (s->stall) stall_leave(s->stall, previous);
}

/* ---------------------------------------------------------------- public API */

/* Called by libuv when shell_create gave up after creating the server handle. */
static void on_failed_server_closed(uv_handle_t *h) { free(h->data); }
static void on_failed_probe_closed(uv_handle_t *h) { (void)h; }

int shell_create(shell_t **out, uv_loop_t *loop, const shell_config_t *cfg) {
  shell_t *s = calloc(1, sizeof *s);
  int rc;
  if (s == NULL) return UV_ENOMEM;
  if (cfg) s->cfg = *cfg;
  if (s->cfg.max_header_bytes == 0) s->cfg.max_header_bytes = 8192;
  if (s->cfg.max_body_bytes == 0) s->cfg.max_body_bytes = 1 << 20;
  if (s->cfg.max_pipeline == 0) s->cfg.max_pipeline = 16;
  if (s->cfg.max_connections == 0) s->cfg.max_connections = 10000;
  if (s->cfg.backlog == 0) s->cfg.backlog = 511;
  if (s->cfg.header_timeout_ms == 0) s->cfg.header_timeout_ms = 10000;
  if (s->cfg.idle_timeout_ms == 0) s->cfg.idle_timeout_ms = 60000;
  if (s->cfg.shed_after_ms == 0) s->cfg.shed_after_ms = 500;
  {
    /* Each connection is an fd: past RLIMIT_NOFILE, accept fails (libuv then drops whole
     * batches of connections) and so does every outbound call. Keep a quarter for those. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
      rlim_t budget = rl.rlim_cur - rl.rlim_cur / 4;
      if (budget < 16) budget = 16;
      if (s->cfg.max_connections > budget) s->cfg.max_connections = (unsigned)budget;
    }
  }
  s->counters.connections_max = s->cfg.max_connections;
  s->loop = loop;
  s->created_ns = uv_hrtime();
  s->settings.on_message_begin = on_message_begin;
  s->settings.on_url = on_url;
  s->settings.on_header_field = on_header_field;
  s->settings.on_header_value = on_header_value;
  s->settings.on_headers_complete = on_headers_complete;
  s->settings.on_body = on_body;
  s->settings.on_message_complete = on_message_complete;

  rc = uv_tcp_init(loop, &s->server);
  if (rc != 0) goto fail_server;
  s->server.data = s;
  s->handles_open++;
  rc = probe_start(&s->probe, loop, s->cfg.lag_interval_ms);
  if (rc != 0) goto fail_probe;
  s->probe.timer.data = s;
  s->handles_open++;
  rc = uv_timer_init(loop, &s->sweep);
  if (rc != 0) goto fail_sweep;
  s->sweep.data = s;
  s->handles_open++;
  shell_route_control(s, NULL, "/debug/stats", handle_stats, s);
  shell_route_control(s, "GET", "/debug/stalls", handle_stalls, s);
  if (s->cfg.stall_ms == 0 && getenv("LOOPHOLES_STALL_MS") != NULL)
    s->cfg.stall_ms = (unsigned)strtoul(getenv("LOOPHOLES_STALL_MS"), NULL, 10);
  if (s->cfg.stall_ms > 0) {
    rc = stall_start(&s->stall, &s->probe, s->cfg.stall_ms);
    if (rc != 0) fprintf(stderr, "shell: stall detector: %s (running without)\n", uv_strerror(rc));
  }
  *out = s;
  return 0;

fail_sweep:
  fprintf(stderr, "shell: uv_timer_init(sweep): %s\n", uv_strerror(rc));
  probe_close(&s->probe, on_failed_probe_closed);
  goto close_server;
fail_probe:
  fprintf(stderr, "shell: probe: %s\n", uv_strerror(rc));
close_server:
  /* The server handle exists: the shell is freed in its close callback (the last one). */
  uv_close((uv_handle_t *)&s->server, on_failed_server_closed);
  return rc;
fail_server:
  free(s);
  fprintf(stderr, "shell: uv_tcp_init: %s\n", uv_strerror(rc));
  return rc;
}

int shell_route(shell_t *s, const char *method, const char *path, shell_handler_fn handler,
                void *data) {
  if (s->n_routes == MAX_ROUTES || strlen(path) >= sizeof s->routes[0].path) return UV_ENOBUFS;
  route_t *rt = &s->routes[s->n_routes++];
  snprintf(rt->method, sizeof rt->method, "%s", method ? method : "");
  snprintf(rt->path, sizeof rt->path, "%s", path);
  snprintf(rt->label, sizeof rt->label, "%s %s", method ? method : "*", path);
  rt->handler = handler;
  rt->data = data;
  return 0;
}

int shell_route_control(shell_t *s, const char *method, const char *path,
                        shell_handler_fn handler, void *data) {
  int rc = shell_route(s, method, path, handler, data);
  if (rc != 0) return rc;
  s->routes[s->n_routes - 1].control = 1;
  s->n_control++;
  return 0;
}

/* SO_REUSEPORT must be set before bind, and libuv 1.44 has no flag for it (UV_TCP_REUSEPORT
 * came in 1.49): make the socket here and hand it to the handle, which then binds it as usual. */
static int listener_reuse_port(shell_t *s, int family) {
  int one = 1, fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int rc = uv_translate_sys_error(errno);
    fprintf(stderr, "shell: %s: %s\n", fd < 0 ? "socket" : "setsockopt(SO_REUSEPORT)", uv_strerror(rc));
    if (fd >= 0) close(fd);
    return rc;
  }
  int rc = uv_tcp_open(&s->server, fd);
  if (rc != 0) {
    fprintf(stderr, "shell: uv_tcp_open: %s\n", uv_strerror(rc));
    close(fd);
  }
  return rc;
}

int shell_listen(shell_t *s, const char *host, int port) {
  struct sockaddr_storage addr;
  int rc;
  if (strchr(host, ':')) rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
  else rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (rc != 0) {
    fprintf(stderr, "shell: bad address %s: %s\n", host, uv_strerror(rc));
    return rc;
  }
  if (s->cfg.reuse_port && (rc = listener_reuse_port(s, addr.ss_family)) != 0) return rc;
  rc = uv_tcp_bind(&s->server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->server, s->cfg.backlog, on_connection);
  if (rc != 0) {
    fprintf(stderr, "shell: listen on %s:%d: %s\n", host, port, uv_strerror(rc));
    return rc;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  rc = uv_tcp_getsockname(&s->server, (struct sockaddr *)&bound, &len);
  if (rc != 0) return rc;
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                               : ((struct sockaddr_in *)&bound)->sin_port);
  s->listening = 1;
  return 0;
}

int shell_port(const shell_t *s) { return s->port; }
uv_loop_t *shell_loop(const shell_t *s) { return s->loop; }
unsigned shell_inflight(const shell_t *s) { return s->counters.inflight; }

void shell_set_stats_hook(shell_t *s, shell_stats_fn fn, void *data) {
  s->stats_fn = fn;
  s->stats_data = data;
}

void shell_get_counters(const shell_t *s, shell_counters_t *out) { *out = s->counters; }

void shell_reset_counters(shell_t *s) {
  s->counters.connections_accepted = 0;
  s->counters.connections_peak = s->counters.connections_open;
  s->counters.requests_total = 0;
  s->counters.bad_requests = 0;
  s->counters.inflight_peak = s->counters.inflight;
  s->counters.header_timeouts = 0;
  s->counters.idle_timeouts = 0;
  s->counters.connections_shed = 0;
  s->counters.clients_gone_unread = 0;
}

/* Called by libuv when the listener or the probe timer is closed. */
static void on_shell_handle_closed(uv_handle_t *h) {
  shell_t *s = h->data;
  s->handles_open--;
  shell_maybe_finish(s);
}

/* The last step of shell_close: once nothing is in flight and every connection is closed, the
 * shell closes its probe, then reports and frees itself when the last handle is closed. */
static void shell_maybe_finish(shell_t *s) {
  if (s->drained_fn != NULL && s->counters.inflight == 0 && s->conns == NULL) {
    shell_closed_fn fn = s->drained_fn;
    s->drained_fn = NULL;
    fn(s, s->drained_data);
  }
  if (!s->closing) return;
  if (s->counters.inflight > 0 || s->conns != NULL) return;
  if (!uv_is_closing((uv_handle_t *)&s->probe.timer)) {
    if (s->stall) stall_stop(s->stall); /* before its heartbeat, the probe, stops */
    s->stall = NULL;
    uv_close((uv_handle_t *)&s->sweep, on_shell_handle_closed);
    probe_close(&s->probe, on_shell_handle_closed);
    return;
  }
  if (s->handles_open == 0 && s->on_closed) {
    shell_closed_fn done = s->on_closed;
    s->on_closed = NULL;
    done(s, s->closed_data);
    free(s);
  }
}

void shell_close(shell_t *s, shell_closed_fn done, void *data) {
  if (s->closing) return;
  s->closing = 1;
  s->on_closed = done;
  s->closed_data = data;
  /* Stop accepting now; the listener's close callback comes later. */
  shell_stop_accepting(s);
  /* Idle connections close now; busy ones after their last answer is written. */
  conn_t *c = s->conns;
  while (c != NULL) {
    conn_t *next = c->next;
    if ((c->head == NULL && c->writes == 0) || c->over_limit) { /* over_limit: nothing dispatched */
      conn_close(c);
    } else {
      c->no_more = 1;
      if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
      }
      conn_track(c, 0); /* not read any more: watched, so a client that leaves is noticed */
    }
    c = next;
  }
  shell_maybe_finish(s);
}

/* ---------------------------------------------------------------- shutdown primitives */

void shell_set_shutdown_hook(shell_t *s, shell_shutdown_fn fn, void *data) {
  s->shutdown_fn = fn;
  s->shutdown_data = data;
}

int shell_shutdown_begin(shell_t *s, int signum, shell_closed_fn done, void *data) {
  if (s->shutdown_fn == NULL) return 0;
  s->finish_done = done;
  s->finish_data = data;
  s->shutdown_fn(s, signum, s->shutdown_data);
  return 1;
}

void shell_stop_accepting(shell_t *s) {
  /* The listener's handle exists from shell_create on, listening or not; it is closed once. */
  if (uv_is_closing((uv_handle_t *)&s->server)) return;
  s->listening = 0;
  uv_close((uv_handle_t *)&s->server, on_shell_handle_closed);
}

void shell_close_idle(shell_t *s) {
  s->draining = 1;
  conn_t *c = s->conns;
  while (c != NULL) {
    conn_t *next = c->next;
    if ((c->head == NULL && c->writes == 0) || c->over_limit) {
      conn_close(c);
    } else {
      c->no_more = 1; /* closes after its last answer (conn_flush) */
      if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
      }
      conn_track(c, 0);
    }
    c = next;
  }
  shell_maybe_finish(s);
}

void shell_on_drained(shell_t *s, shell_closed_fn fn, void *data) {
  s->drained_fn = fn;
  s->drained_data = data;
  shell_maybe_finish(s);
}

void shell_shutdown_finish(shell_t *s) {
  shell_closed_fn done = s->finish_done;
  s->finish_done = NULL;
  shell_close(s, done, s->finish_data);
}

/* ---------------------------------------------------------------- requests */

const char *shell_request_method(const shell_request_t *r) { return r->method; }
const char *shell_request_path(const shell_request_t *r) { return r->path ? r->path : ""; }
const char *shell_request_query(const shell_request_t *r) { return r->query ? r->query : ""; }
shell_t *shell_request_shell(const shell_request_t *r) { return r->shell; }
uv_loop_t *shell_request_loop(const shell_request_t *r) { return r->shell->loop; }
uint64_t shell_request_start_ns(const shell_request_t *r) { return r->start_ns; }
unsigned shell_request_seq_on_conn(const shell_request_t *r) { return r->seq; }
int shell_request_aborted(const shell_request_t *r) { return r->aborted; }

const char *shell_request_body(const shell_request_t *r, size_t *len) {
  if (len) *len = r->body_len;
  return r->body ? r->body : "";
}

const char *shell_request_header(const shell_request_t *r, const char *name) {
  const char *p = r->headers, *end = r->headers + r->headers_len;
  while (p != NULL && p < end) {
    const char *value = p + strlen(p) + 1;
    if (value >= end) break;
    if (strcasecmp(p, name) == 0) return value;
    p = value + strlen(value) + 1;
  }
  return NULL;
}

/* Finds name=value in the query; returns the value's start and length via *len. */
static const char *query_find(const shell_request_t *r, const char *name, size_t *len) {
  const char *q = shell_request_query(r);
  size_t nlen = strlen(name);
  while (*q) {
    const char *amp = strchr(q, '&');
    size_t seg = amp ? (size_t)(amp - q) : strlen(q);
    if (seg > nlen && strncmp(q, name, nlen) == 0 && q[nlen] == '=') {
      *len = seg - nlen - 1;
      return q + nlen + 1;
    }
    if (seg == nlen && strncmp(q, name, nlen) == 0) {
      *len = 0;
      return q + nlen;
    }
    q += seg + (amp ? 1 : 0);
  }
  return NULL;
}

long shell_query_long(const shell_request_t *r, const char *name, long fallback) {
  size_t len;
  char tmp[32], *end;
  const char *v = query_find(r, name, &len);
  if (v == NULL || len == 0 || len >= sizeof tmp) return fallback;
  memcpy(tmp, v, len);
  tmp[len] = '\0';
  long x = strtol(tmp, &end, 10);
  return *end == '\0' ? x : fallback;
}

int shell_query_str(const shell_request_t *r, const char *name, char *out, size_t out_len) {
  size_t len;
  const char *v = query_find(r, name, &len);
  if (v == NULL || out_len == 0) return -1;
  if (len >= out_len) len = out_len - 1;
  memcpy(out, v, len);
  out[len] = '\0';
  return 0;
}

void shell_request_on_abort(shell_request_t *r, shell_abort_fn fn, void *data) {
  r->on_abort = fn;
  r->abort_data = data;
}

void shell_respond_ex(shell_request_t *r, int status, const char *extra_headers,
                      const char *content_type, const char *body, size_t len) {
  shell_t *s = r->shell;
  conn_t *c = r->conn;

  if (r->answered) {
    fprintf(stderr, "shell: %s %s answered twice (ignored)\n", r->method, shell_request_path(r));
    return;
  }
  r->answered = 1;
  if (r->dispatched) {
    s->counters.inflight--;
  }
  if (c == NULL) { /* the client went away: nobody to answer */
    request_free(r);
    shell_maybe_finish(s);
    return;
  }
  c->unanswered--;
  int keep = r->keep_alive && !s->closing && !s->draining;
  size_t head_cap = 256 + (extra_headers ? strlen(extra_headers) : 0);
  r->resp = malloc(head_cap + len);
  if (r->resp == NULL) {
    r->resp_len = 0;
    conn_close(c);
    shell_maybe_finish(s);
    return;
  }
  int n = snprintf(r->resp, head_cap,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                   status_text(status), content_type ? content_type : "text/plain", len,
                   keep ? "" : "Connection: close\r\n", extra_headers ? extra_headers : "");
  memcpy(r->resp + n, body, len);
  r->resp_len = (size_t)n + len;
  conn_flush(c);
  shell_maybe_finish(s);
}

void shell_respond_reset(shell_request_t *r) {
  shell_t *s = r->shell;
  conn_t *c = r->conn;

  if (r->answered) {
    fprintf(stderr, "shell: %s %s answered twice (ignored)\n", r->method, shell_request_path(r));
    return;
  }
  r->answered = 1;
  if (r->dispatched) s->counters.inflight--;
  if (c == NULL) { /* gone already: nothing to reset */
    request_free(r);
  } else {
    c->unanswered--;
    c->reset_on_close = 1;
    conn_close(c); /* frees r with the connection's queue; the others are aborted */
  }
  shell_maybe_finish(s);
}

void shell_respond(shell_request_t *r, int status, const char *content_type, const char *body,
                   size_t len) {
  shell_respond_ex(r, status, NULL, content_type, body, len);
}

void shell_respondf(shell_request_t *r, int status, const char *content_type, const char *fmt,
                    ...) {
  char small[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if ((size_t)n < sizeof small) {
    shell_respond(r, status, content_type, small, (size_t)n);
    return;
  }
  char *big = malloc((size_t)n + 1);
  if (big == NULL) {
    shell_respond(r, 500, "text/plain", "out of memory\n", 14);
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  shell_respond(r, status, content_type, big, (size_t)n);
  free(big);
}
