/* upstream.c - the fake downstream API the labs call (build/bin/upstream).
 *
 * Every simulated cost of the kit lives here, behind a named knob: a downstream's latency and
 * jitter, its failures, requests that hang, the handshake a new connection pays, a connection
 * limit. Exact counters at GET /stats let a test check what a lab really sent.
 * See docs/upstream.md for the knobs, the real-world figures they stand for, and examples:
 *
 *   build/bin/upstream --port 0 --latency-ms 20 &
 *   curl 'http://127.0.0.1:PORT/price?id=a1&latency_ms=5'; curl http://127.0.0.1:PORT/stats
 *
 * It runs on the service shell (harness/lib/shell.h) like every lab; each pending request owns a
 * uv_timer_t that answers it when its delay is over, so thousands of slow requests cost nothing
 * but memory.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>
#include "shell.h"

#define UPSTREAM_MAX_DELAY_MS (3600L * 1000)       /* any knob in ms: at most an hour */
#define UPSTREAM_MAX_SIZE (16L * 1024 * 1024)      /* --size / size=: at most 16 MiB */
#define UPSTREAM_ID_MAX 256                        /* ids are recorded up to 255 bytes */
#define UPSTREAM_PATH_ECHO_MAX 256                 /* the body echoes at most this much path */

typedef struct upstream_opts {
  const char *host;
  long port;
  long latency_ms;
  long jitter_ms;
  long status;
  double fail_rate;
  double hang_rate;
  long size;
  long connect_cost_ms;
  long max_conns;
  long backlog;
  long seed;
  long workers;              /* 0: unlimited */
  long header_timeout_ms;    /* 0: the shell's default */
  long idle_timeout_ms;
  long outage_start_ms;      /* --outage START-END, from start or reset; -1: none */
  long outage_end_ms;
  int outage_mode;           /* UPSTREAM_OUTAGE_* */
  double rate_limit;         /* --rate-limit R per second; 0: none */
  long rate_burst;           /* --rate-burst B; 0: ceil(R) */
} upstream_opts_t;

enum { UPSTREAM_OUTAGE_503, UPSTREAM_OUTAGE_RESET, UPSTREAM_OUTAGE_HANG };

/* One second of GET /stats/series: attempts that arrived in it, by how they ended. */
typedef struct upstream_second {
  uint32_t attempts;
  uint32_t ok;           /* answered 2xx */
  uint32_t failed;       /* answered otherwise (400, 5xx), or reset by --outage-mode reset */
  uint32_t rate_limited; /* answered 429 */
  uint32_t hung;         /* hang=1, --hang-rate, --outage-mode hang */
  uint32_t abandoned;    /* not hung, but the client left before its answer */
} upstream_second_t;

#define UPSTREAM_SERIES_MAX (24 * 3600) /* seconds kept: a day */

/* The distinct ids seen since start or reset: an open-addressing hash set of strings. */
typedef struct upstream_idset {
  char **slots;
  size_t cap; /* a power of two, or 0 before the first id */
  size_t len;
} upstream_idset_t;

typedef struct upstream upstream_t;

/* Where a call is: paying its connect cost, waiting for a worker (--workers), served. */
typedef enum {
  UPSTREAM_CONNECTING,
  UPSTREAM_QUEUED,
  UPSTREAM_SERVING,
} upstream_phase_t;

/* One request waiting for its answer. Freed in its timer's close callback. */
typedef struct upstream_call {
  uv_timer_t timer;          /* ends the current phase: connect cost, then the latency */
  shell_request_t *req;      /* NULL once answered */
  upstream_t *up;
  struct upstream_call *prev, *next; /* in up->calls, so shutdown can find them */
  struct upstream_call *queue_next;  /* in up's FIFO of calls waiting for a worker */
  upstream_phase_t phase;
  int has_worker;            /* holds one of the --workers until it is answered */
  int hang;                  /* served until the client goes away */
  int no_worker;             /* hangs in an outage (--outage-mode hang): takes no worker */
  int served;                /* a worker (or the loop) completed it: its latency ran out */
  int cut_short;             /* ended early: abort, shutdown */
  int has_event;
  char event_id[UPSTREAM_ID_MAX]; /* X-Event-Id or event_id=, for de-duplication */
  long sec;                  /* the second of the series it arrived in, or -1 */
  uint64_t series_gen;       /* the series it belongs to (a reset starts a new one) */
  uint64_t queued_ns;        /* when it began to wait for a worker */
  long wait_ms;              /* how long it waited for a worker */
  int status;
  long latency_ms;           /* latency plus the jitter drawn */
  long connect_cost_ms;      /* 0 unless this is the first request of its connection */
  long size;
  int has_id;
  int aborted;               /* the client went away: the answer is thrown away */
  int shutting_down;         /* answered 503 at once: the upstream is closing */
  char id[UPSTREAM_ID_MAX];
} upstream_call_t;

struct upstream {
  uv_loop_t *loop;
  shell_t *shell;
  uv_signal_t sigint;
  uv_signal_t sigterm;
  upstream_opts_t opts;
  uint32_t fail_ppm;         /* --fail-rate in parts per million */
  uint64_t fail_seq;         /* catch-all requests since start or reset, for --fail-rate */
  uint32_t hang_ppm;         /* --hang-rate in parts per million */
  uint64_t hang_seq;         /* the same count, for --hang-rate */
  uint64_t rng;              /* xorshift64* state, for the jitter */
  upstream_call_t *calls;    /* pending requests */
  upstream_idset_t ids;
  upstream_idset_t events;   /* event ids completed with a 2xx */
  uint64_t events_duplicate;
  uint64_t hung_total;
  unsigned hung_open;
  uint64_t rate_limited;
  uint64_t outage_requests;  /* answered by --outage */
  double tokens;             /* --rate-limit's bucket */
  uint64_t tokens_ns;        /* when it was last filled */
  uint64_t t0_ns;            /* start or last reset: the outage window and the series count
                                from here */
  double t0_wall_ms;         /* the same instant, Unix time in ms */
  upstream_second_t *series;
  size_t series_len;         /* seconds used */
  size_t series_cap;
  uint64_t series_gen;
  int closing;
  /* --workers: calls in service, and the FIFO of those waiting for a worker */
  unsigned in_service;
  unsigned in_service_peak;
  upstream_call_t *queue_head, *queue_tail;
  unsigned queue_depth;
  unsigned queue_peak;
  int admitting;             /* upstream_admit is running: a finish inside it must not recurse */
  uint64_t waits;            /* calls that got a worker, for wait_ms_mean */
  uint64_t wait_ns_sum;
  uint64_t wait_ns_max;
  /* exact counters of the catch-all route (/stats itself is not counted) */
  uint64_t requests_total;
  unsigned inflight;
  unsigned inflight_peak;
  uint64_t abandoned;
  uint64_t responses_2xx;
  uint64_t responses_4xx;
  uint64_t responses_5xx;
  uint64_t ids_duplicate;
};

static const char upstream_usage[] =
    "usage: upstream [--host H] [--port N] [--latency-ms N] [--jitter-ms N] [--status N]\n"
    "                [--fail-rate F] [--size N] [--connect-cost-ms N] [--max-conns N]\n"
    "                [--backlog N] [--seed N] [--workers N] [--hang-rate F]\n"
    "                [--header-timeout-ms N] [--idle-timeout-ms N]\n"
    "                [--outage START_MS-END_MS] [--outage-mode 503|reset|hang]\n"
    "                [--rate-limit R] [--rate-burst B] [--help]\n"
    "\n"
    "A fake downstream API. Any path but /stats answers, after its latency, with\n"
    "  {\"path\":\"/x\",\"id\":\"...\",\"status\":200,\"latency_ms\":N,\"connect_cost_ms\":N,\n"
    "   \"wait_ms\":N}\n"
    "\n"
    "  --host H             address to listen on (default 127.0.0.1)\n"
    "  --port N             port; 0 picks a free one (default 0). Prints\n"
    "                       'listening on http://HOST:PORT' once it listens\n"
    "  --latency-ms N       delay before each answer (default 0)\n"
    "  --jitter-ms N        plus a uniform draw in [0, N] ms (default 0)\n"
    "  --status N           HTTP status of the answers, 200..599 (default 200)\n"
    "  --fail-rate F        fraction 0..1 of requests that answer 500: deterministic, the\n"
    "                       n-th request fails when floor(n*F) > floor((n-1)*F) (default 0)\n"
    "  --size N             pad bodies with spaces to N bytes (default 0: no padding)\n"
    "  --connect-cost-ms N  extra delay on the first answer of each new connection: the\n"
    "                       handshake round trips of a real link (default 0)\n"
    "  --max-conns N        at most N open connections; beyond it new ones wait in the\n"
    "                       kernel backlog (default: 10000 or what the fd limit allows;\n"
    "                       at that default limit, a connection that has waited 500 ms\n"
    "                       for a request is closed to make room for a new one)\n"
    "  --backlog N          listen(2) backlog (default 511)\n"
    "  --header-timeout-ms N  a request's headers must arrive within N ms of its first\n"
    "                       byte or of the accept, else 408 and close (default 10000)\n"
    "  --idle-timeout-ms N  close a keep-alive connection idle for N ms (default 60000)\n"
    "  --seed N             seed of the jitter's PRNG (default 1)\n"
    "  --workers N          at most N requests in service at once, the rest wait in a\n"
    "                       FIFO queue; latency counts from when a worker takes one: a\n"
    "                       service with N worker threads or N database connections\n"
    "                       (default 0: unlimited)\n"
    "  --hang-rate F        fraction 0..1 of requests that never answer until the client\n"
    "                       goes away, by the --fail-rate rule on its own count (default 0)\n"
    "  --outage START_MS-END_MS  requests arriving in that window (ms after the start or\n"
    "                       the last POST /stats/reset) fail: a dependency that is down\n"
    "  --outage-mode M      how they fail: 503 (at once), reset (the connection is reset,\n"
    "                       no answer) or hang (never answered) (default 503)\n"
    "  --rate-limit R       a token bucket of R requests/s: beyond it, 429 with\n"
    "                       Retry-After (whole seconds until a token is free)\n"
    "  --rate-burst B       the bucket's size: B requests at once (default ceil(R))\n"
    "\n"
    "Query parameters override the flags per request: latency_ms, jitter_ms, status, size,\n"
    "connect_cost_ms, hang=0|1 (1: never answers until the client goes away), id=STRING.\n"
    "An event id (header X-Event-Id, or event_id=STRING) is recorded when answered 2xx:\n"
    "/stats counts events_unique and events_duplicate (delivered again).\n"
    "GET /stats: exact counters (JSON). POST /stats/reset: zero them. GET /stats/series:\n"
    "attempts per second since start or reset, by outcome (JSON).\n"
    "SIGINT/SIGTERM: answer what is pending with 503, close, exit 0.\n";

/* ---- the id set ---- */

static uint64_t upstream_idset_hash(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ULL;
  }
  return h;
}

static int upstream_idset_grow(upstream_idset_t *set) {
  size_t cap = set->cap ? set->cap * 2 : 1024;
  char **slots = calloc(cap, sizeof *slots);
  size_t i;

  if (slots == NULL) return UV_ENOMEM;
  for (i = 0; i < set->cap; i++) {
    size_t j;
    if (set->slots[i] == NULL) continue;
    j = upstream_idset_hash(set->slots[i]) & (cap - 1);
    while (slots[j] != NULL) j = (j + 1) & (cap - 1);
    slots[j] = set->slots[i];
  }
  free(set->slots);
  set->slots = slots;
  set->cap = cap;
  return 0;
}

/* 1 when id is new (and now recorded), 0 when it was seen before, or a negative uv error. */
static int upstream_idset_add(upstream_idset_t *set, const char *id) {
  size_t j;
  int rc;

  if (set->len + 1 > set->cap / 2) { /* keep the table at most half full */
    rc = upstream_idset_grow(set);
    if (rc != 0) return rc;
  }
  j = upstream_idset_hash(id) & (set->cap - 1);
  while (set->slots[j] != NULL) {
    if (strcmp(set->slots[j], id) == 0) return 0;
    j = (j + 1) & (set->cap - 1);
  }
  set->slots[j] = strdup(id);
  if (set->slots[j] == NULL) return UV_ENOMEM;
  set->len++;
  return 1;
}

static void upstream_idset_clear(upstream_idset_t *set) {
  size_t i;
  for (i = 0; i < set->cap; i++) free(set->slots[i]);
  free(set->slots);
  set->slots = NULL;
  set->cap = 0;
  set->len = 0;
}

/* ---- helpers ---- */

/* xorshift64*: a fixed seed gives the same jitter sequence on every run. */
static uint64_t upstream_rand(upstream_t *up) {
  up->rng ^= up->rng >> 12;
  up->rng ^= up->rng << 25;
  up->rng ^= up->rng >> 27;
  return up->rng * 2685821657736338717ULL;
}

/* The n-th request (from 1) fails when floor(n*F) > floor((n-1)*F): exactly F of them, evenly
 * spread (F = 0.25 fails requests 4, 8, 12, ...). Integer ppm: no rounding moves a failure. */
static int upstream_fail_next(upstream_t *up) {
  uint64_t n = ++up->fail_seq;
  if (up->fail_ppm == 0) return 0;
  return (n * up->fail_ppm) / 1000000 != ((n - 1) * up->fail_ppm) / 1000000;
}

/* --hang-rate: the same rule on its own count. */
static int upstream_hang_next(upstream_t *up) {
  uint64_t n = ++up->hang_seq;
  if (up->hang_ppm == 0) return 0;
  return (n * up->hang_ppm) / 1000000 != ((n - 1) * up->hang_ppm) / 1000000;
}

static int upstream_parse_long(const char *s, long min, long max, long *out) {
  char *end;
  long v;

  if (s == NULL || *s == '\0') return -1;
  errno = 0;
  v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max) return -1;
  *out = v;
  return 0;
}

/* A numeric query parameter: fallback when absent, -1 when present but not in [min, max]. */
static int upstream_query_knob(shell_request_t *req, const char *name, long fallback, long min,
                               long max, long *out) {
  char buf[32];

  if (shell_query_str(req, name, buf, sizeof buf) != 0) {
    *out = fallback;
    return 0;
  }
  return upstream_parse_long(buf, min, max, out);
}

/* Appends s to out as JSON string content (no quotes), at most max input bytes. */
static size_t upstream_json_escape(char *out, size_t out_len, const char *s, size_t max) {
  size_t n = 0, i;

  for (i = 0; s[i] != '\0' && i < max && n + 7 < out_len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)c;
    } else if (c < 0x20 || c >= 0x7f) {
      n += (size_t)snprintf(out + n, out_len - n, "\\u%04x", c);
    } else {
      out[n++] = (char)c;
    }
  }
  out[n] = '\0';
  return n;
}

static void upstream_count_response(upstream_t *up, int status) {
  if (status >= 200 && status < 300)
    up->responses_2xx++;
  else if (status >= 400 && status < 500)
    up->responses_4xx++;
  else if (status >= 500)
    up->responses_5xx++;
}

/* ---- the per-second series ---- */

/* The bucket of the current second (growing the series), or NULL past a day or out of memory. */
static upstream_second_t *upstream_second_now(upstream_t *up, long *sec) {
  uint64_t t = (uv_hrtime() - up->t0_ns) / 1000000000ULL;
  if (t >= UPSTREAM_SERIES_MAX) return NULL;
  if (t >= up->series_cap) {
    size_t cap = up->series_cap ? up->series_cap : 64;
    while (cap <= t) cap *= 2;
    upstream_second_t *n = realloc(up->series, cap * sizeof *n);
    if (n == NULL) return NULL;
    memset(n + up->series_cap, 0, (cap - up->series_cap) * sizeof *n);
    up->series = n;
    up->series_cap = cap;
  }
  if (t + 1 > up->series_len) up->series_len = t + 1;
  if (sec) *sec = (long)t;
  return &up->series[t];
}

/* The bucket a call arrived in, if the series it belongs to is still the current one. */
static upstream_second_t *upstream_second_of(upstream_t *up, long sec, uint64_t gen) {
  if (sec < 0 || gen != up->series_gen || (size_t)sec >= up->series_len) return NULL;
  return &up->series[sec];
}

/* Counts an answer's outcome in its arrival second. */
static void upstream_second_outcome(upstream_t *up, long sec, uint64_t gen, int status) {
  upstream_second_t *b = upstream_second_of(up, sec, gen);
  if (b == NULL) return;
  if (status == 429) b->rate_limited++;
  else if (status >= 200 && status < 300) b->ok++;
  else b->failed++;
}

/* ---- answering ---- */

static void upstream_on_call_closed(uv_handle_t *handle) { free(handle->data); }

/* Sends the answer a call describes (or only releases req, when its client is gone). */
static void upstream_send(upstream_t *up, shell_request_t *req, const upstream_call_t *call) {
  char path[UPSTREAM_PATH_ECHO_MAX * 6 + 1], id[UPSTREAM_ID_MAX * 6 + 1];
  char head[sizeof path + sizeof id + 128];
  char *body;
  int n;
  size_t len;

  /* An event is delivered when its work completes with a 2xx, even if its client has gone (a
   * worker finished it): the effect happened, only the answer is lost. */
  if (call->has_event && call->served && !call->shutting_down && call->status >= 200 &&
      call->status < 300) {
    int rc = upstream_idset_add(&up->events, call->event_id);
    if (rc == 0) up->events_duplicate++;
    if (rc < 0) fprintf(stderr, "upstream: recording event id: %s\n", uv_strerror(rc));
  }
  if (call->aborted) {
    /* The shell throws this answer away; it only releases the request. */
    shell_respond(req, 499, "text/plain", "", 0);
    return;
  }
  upstream_count_response(up, call->status);
  upstream_second_outcome(up, call->sec, call->series_gen,
                          call->shutting_down ? 503 : call->status);
  if (call->shutting_down) {
    shell_respond(req, 503, "application/json", "{\"error\":\"shutting down\"}\n", 26);
    return;
  }
  if (call->status == 204 || call->status == 304) {
    shell_respond(req, call->status, "application/json", "", 0); /* no body allowed */
    return;
  }
  upstream_json_escape(path, sizeof path, shell_request_path(req), UPSTREAM_PATH_ECHO_MAX);
  upstream_json_escape(id, sizeof id, call->id, UPSTREAM_ID_MAX);
  n = snprintf(head, sizeof head,
               "{\"path\":\"%s\",\"id\":%s%s%s,\"status\":%d,\"latency_ms\":%ld,"
               "\"connect_cost_ms\":%ld,\"wait_ms\":%ld}",
               path, call->has_id ? "\"" : "", call->has_id ? id : "null",
               call->has_id ? "\"" : "", call->status, call->latency_ms, call->connect_cost_ms,
               call->wait_ms);
  len = (size_t)n < sizeof head ? (size_t)n : sizeof head - 1;
  if ((long)len >= call->size) {
    shell_respond(req, call->status, "application/json", head, len);
  } else if ((body = malloc((size_t)call->size)) == NULL) {
    fprintf(stderr, "upstream: malloc(%ld): out of memory; answering unpadded\n", call->size);
    shell_respond(req, call->status, "application/json", head, len);
  } else {
    memcpy(body, head, len);
    memset(body + len, ' ', (size_t)call->size - len);
    shell_respond(req, call->status, "application/json", body, (size_t)call->size);
    free(body);
  }
}

/* Takes a call off the FIFO of calls waiting for a worker. */
static void upstream_unqueue(upstream_t *up, upstream_call_t *call) {
  upstream_call_t **pp = &up->queue_head, *prev = NULL;
  while (*pp != NULL && *pp != call) {
    prev = *pp;
    pp = &(*pp)->queue_next;
  }
  if (*pp == NULL) return;
  *pp = call->queue_next;
  if (up->queue_tail == call) up->queue_tail = prev;
  call->queue_next = NULL;
  up->queue_depth--;
}

static void upstream_admit(upstream_t *up);

/* Answers a pending call, takes it off the list, frees its worker and closes its timer. */
static void upstream_call_finish(upstream_call_t *call) {
  upstream_t *up = call->up;
  shell_request_t *req = call->req;

  call->req = NULL;
  if (call->prev != NULL) call->prev->next = call->next;
  else up->calls = call->next;
  if (call->next != NULL) call->next->prev = call->prev;
  if (call->phase == UPSTREAM_QUEUED) upstream_unqueue(up, call);
  if (!call->aborted) up->inflight--; /* an abandoned call left inflight when its client did */
  if (call->hang) up->hung_open--;
  upstream_send(up, req, call);
  uv_close((uv_handle_t *)&call->timer, upstream_on_call_closed);
  if (call->has_worker) {
    call->has_worker = 0;
    up->in_service--;
    upstream_admit(up); /* the next call in the queue takes the free worker */
  }
}

/* Called by the loop when the call's latency is over (or at once after an abort or shutdown). */
static void upstream_on_timer(uv_timer_t *timer) {
  upstream_call_t *call = timer->data;
  /* Its latency ran out in service (not cut short by finish_soon, which restarts the timer). */
  if (call->phase == UPSTREAM_SERVING && !call->cut_short) call->served = 1;
  upstream_call_finish(call);
}

/* Answers the call on the next loop turn rather than from inside a shell callback. */
static void upstream_call_finish_soon(upstream_call_t *call) {
  int rc;

  call->cut_short = 1;
  uv_timer_stop(&call->timer);
  rc = uv_timer_start(&call->timer, upstream_on_timer, 0, 0);
  if (rc != 0) {
    fprintf(stderr, "upstream: uv_timer_start: %s\n", uv_strerror(rc));
    upstream_call_finish(call);
  }
}

/* A worker takes the call (or there is no worker limit): its latency starts now. */
static void upstream_serve(upstream_call_t *call) {
  upstream_t *up = call->up;
  int rc;

  call->phase = UPSTREAM_SERVING;
  if (up->opts.workers > 0 && !call->no_worker) {
    uint64_t wait_ns = uv_hrtime() - call->queued_ns;
    call->has_worker = 1;
    up->in_service++;
    if (up->in_service > up->in_service_peak) up->in_service_peak = up->in_service;
    up->waits++;
    up->wait_ns_sum += wait_ns;
    if (wait_ns > up->wait_ns_max) up->wait_ns_max = wait_ns;
    call->wait_ms = (long)(wait_ns / 1000000);
  }
  /* A hung request holds its worker until its client goes away (upstream_on_abort); one whose
   * client left while it waited in the queue has nothing to hang for. */
  if (call->hang && !call->aborted) return;
  if (call->latency_ms == 0 || call->hang) {
    call->served = !call->hang;
    upstream_call_finish(call);
    return;
  }
  /* The loop's clock is the time this turn began: after a busy turn (many reads) it lags, and a
   * timer started on it would fire early. */
  uv_update_time(up->loop);
  rc = uv_timer_start(&call->timer, upstream_on_timer, (uint64_t)call->latency_ms, 0);
  if (rc != 0) {
    fprintf(stderr, "upstream: uv_timer_start: %s\n", uv_strerror(rc));
    call->status = 500;
    upstream_call_finish(call);
  }
}

/* Hands free workers to the oldest waiting calls, in arrival order. */
static void upstream_admit(upstream_t *up) {
  if (up->admitting) return; /* a call answered at once inside this loop: the loop goes on */
  up->admitting = 1;
  while (up->queue_head != NULL && up->in_service < (unsigned)up->opts.workers && !up->closing) {
    upstream_call_t *call = up->queue_head;
    up->queue_head = call->queue_next;
    if (up->queue_head == NULL) up->queue_tail = NULL;
    call->queue_next = NULL;
    up->queue_depth--;
    upstream_serve(call);
  }
  up->admitting = 0;
}

/* The call has paid its connect cost (if any): a free worker takes it, or it joins the queue. */
static void upstream_arrive(upstream_call_t *call) {
  upstream_t *up = call->up;

  call->queued_ns = uv_hrtime();
  if (up->opts.workers == 0 || call->no_worker ||
      (up->in_service < (unsigned)up->opts.workers && up->queue_head == NULL)) {
    upstream_serve(call);
    return;
  }
  call->phase = UPSTREAM_QUEUED;
  if (up->queue_tail != NULL) up->queue_tail->queue_next = call;
  else up->queue_head = call;
  up->queue_tail = call;
  up->queue_depth++;
  if (up->queue_depth > up->queue_peak) up->queue_peak = up->queue_depth;
}

/* Called by the loop when a new connection's handshake cost is paid. */
static void upstream_on_connected(uv_timer_t *timer) { upstream_arrive(timer->data); }

/* Called by the shell when the client of a pending request goes away. */
static void upstream_on_abort(shell_request_t *req, void *data) {
  upstream_call_t *call = data;
  (void)req;
  if (call->req == NULL || call->aborted) return;
  call->aborted = 1;
  call->up->abandoned++;
  if (!call->hang) {
    upstream_second_t *b = upstream_second_of(call->up, call->sec, call->series_gen);
    if (b != NULL) b->abandoned++;
  }
  /* Out of flight now, not on the next turn: the shell may hand the freed slot to a waiting
   * connection within this turn, and inflight must not count both. */
  call->up->inflight--;
  /* With --workers, a worker does not know its client left: a call waiting in the queue or in
   * service still takes its worker for its latency (the wasted work of a server under a retry
   * storm); only its answer is thrown away. A hung one ends now, or it would hold its worker
   * forever. Without workers nothing is wasted: the call ends now. */
  if (call->up->opts.workers > 0 && !call->hang &&
      (call->phase == UPSTREAM_QUEUED || call->phase == UPSTREAM_SERVING))
    return;
  upstream_call_finish_soon(call);
}

/* ---- routes ---- */

/* The knobs of one request: its query parameters, or the flags when absent. */
typedef struct upstream_knobs {
  long latency_ms;
  long jitter_ms;
  long status; /* 0: not given */
  long size;
  long connect_cost_ms;
  long hang;   /* -1: not given */
} upstream_knobs_t;

/* Returns NULL, or what is wrong with the query (the 400 answer says so). */
static const char *upstream_read_knobs(const upstream_t *up, shell_request_t *req,
                                       upstream_knobs_t *k) {
  const upstream_opts_t *o = &up->opts;

  if (upstream_query_knob(req, "latency_ms", o->latency_ms, 0, UPSTREAM_MAX_DELAY_MS,
                          &k->latency_ms) != 0)
    return "latency_ms must be an integer in 0..3600000";
  if (upstream_query_knob(req, "jitter_ms", o->jitter_ms, 0, UPSTREAM_MAX_DELAY_MS,
                          &k->jitter_ms) != 0)
    return "jitter_ms must be an integer in 0..3600000";
  if (upstream_query_knob(req, "status", 0, 200, 599, &k->status) != 0)
    return "status must be an integer in 200..599";
  if (upstream_query_knob(req, "size", o->size, 0, UPSTREAM_MAX_SIZE, &k->size) != 0)
    return "size must be an integer in 0..16777216";
  if (upstream_query_knob(req, "connect_cost_ms", o->connect_cost_ms, 0, UPSTREAM_MAX_DELAY_MS,
                          &k->connect_cost_ms) != 0)
    return "connect_cost_ms must be an integer in 0..3600000";
  if (upstream_query_knob(req, "hang", -1, 0, 1, &k->hang) != 0) return "hang must be 0 or 1";
  return NULL;
}

/* Answers at once, without a call: shutdown, bad knobs, no memory. */
static void upstream_respond_now(upstream_t *up, shell_request_t *req, int status,
                                 const char *error, long sec) {
  upstream_count_response(up, status);
  upstream_second_outcome(up, sec, up->series_gen, status);
  shell_respondf(req, status, "application/json", "{\"error\":\"%s\"}\n", error);
}

/* 1 when now is inside --outage's window (from start or reset). */
static int upstream_in_outage(const upstream_t *up) {
  uint64_t ms = (uv_hrtime() - up->t0_ns) / 1000000ULL;
  return up->opts.outage_start_ms >= 0 && ms >= (uint64_t)up->opts.outage_start_ms &&
         ms < (uint64_t)up->opts.outage_end_ms;
}

/* --rate-limit's token bucket: 1 when a token is taken, else 0 with the seconds until the
 * next one in *retry_after_s (at least 1: Retry-After counts whole seconds). */
static int upstream_take_token(upstream_t *up, long *retry_after_s) {
  uint64_t now = uv_hrtime();
  double burst = (double)up->opts.rate_burst;
  up->tokens += (double)(now - up->tokens_ns) / 1e9 * up->opts.rate_limit;
  if (up->tokens > burst) up->tokens = burst;
  up->tokens_ns = now;
  if (up->tokens >= 1.0) {
    up->tokens -= 1.0;
    return 1;
  }
  *retry_after_s = (long)ceil((1.0 - up->tokens) / up->opts.rate_limit);
  if (*retry_after_s < 1) *retry_after_s = 1;
  return 0;
}

/* The request's event id: header X-Event-Id, else query event_id=. 1 when there is one. */
static int upstream_event_id(shell_request_t *req, char *out, size_t len) {
  const char *h = shell_request_header(req, "X-Event-Id");
  if (h != NULL && *h != '\0') {
    snprintf(out, len, "%s", h);
    return 1;
  }
  return shell_query_str(req, "event_id", out, len) == 0 && out[0] != '\0';
}

/* Called by the shell for every path but /stats and /debug/stats. */
static void upstream_on_request(shell_request_t *req, void *data) {
  upstream_t *up = data;
  upstream_call_t *call, now;
  upstream_knobs_t k;
  const char *error;
  int rc, outage_hang = 0;
  long sec = -1;
  upstream_second_t *second;

  up->requests_total++;
  second = upstream_second_now(up, &sec);
  if (second != NULL) second->attempts++;
  if (up->closing) {
    upstream_respond_now(up, req, 503, "shutting down", sec);
    return;
  }
  /* An outage and a rate limit sit in front of the service: they answer before any knob is
   * read or any count (--fail-rate, --hang-rate) moves, and take no worker. */
  if (upstream_in_outage(up)) {
    up->outage_requests++;
    if (up->opts.outage_mode == UPSTREAM_OUTAGE_503) {
      upstream_respond_now(up, req, 503, "outage", sec);
      return;
    }
    if (up->opts.outage_mode == UPSTREAM_OUTAGE_RESET) {
      if (second != NULL) second->failed++;
      shell_respond_reset(req);
      return;
    }
    outage_hang = 1; /* UPSTREAM_OUTAGE_HANG: a call below that hangs, with no worker */
  } else if (up->opts.rate_limit > 0) {
    long retry_after_s;
    if (!upstream_take_token(up, &retry_after_s)) {
      char header[64];
      up->rate_limited++;
      upstream_count_response(up, 429);
      upstream_second_outcome(up, sec, up->series_gen, 429);
      snprintf(header, sizeof header, "Retry-After: %ld\r\n", retry_after_s);
      shell_respond_ex(req, 429, header, "application/json",
                       "{\"error\":\"rate limited\"}\n", 24);
      return;
    }
  }
  error = upstream_read_knobs(up, req, &k);
  if (error != NULL) {
    upstream_respond_now(up, req, 400, error, sec);
    return;
  }
  if (outage_hang) {
    k.hang = 1;
    k.connect_cost_ms = 0;
    if (k.status == 0) k.status = 503; /* what a shutdown answers it */
  } else {
    /* Explicit status= wins; otherwise --fail-rate picks the failures, else --status. */
    if (upstream_fail_next(up) && k.status == 0) k.status = 500;
    /* Explicit hang= wins too; otherwise --hang-rate picks the requests that hang. */
    if (upstream_hang_next(up) && k.hang < 0) k.hang = 1;
  }
  if (k.status == 0) k.status = up->opts.status;

  /* What the answer will be; it goes out now when there is nothing to wait for. */
  memset(&now, 0, sizeof now);
  now.up = up;
  now.status = (int)k.status;
  now.latency_ms = k.latency_ms;
  if (k.jitter_ms > 0) now.latency_ms += (long)(upstream_rand(up) % (uint64_t)(k.jitter_ms + 1));
  /* Only a new connection pays the handshake; a keep-alive one has paid already. */
  now.connect_cost_ms = shell_request_seq_on_conn(req) == 0 ? k.connect_cost_ms : 0;
  now.size = k.size;
  now.has_id = shell_query_str(req, "id", now.id, sizeof now.id) == 0 && now.id[0] != '\0';
  if (now.has_id) {
    rc = upstream_idset_add(&up->ids, now.id);
    if (rc == 0) up->ids_duplicate++;
    if (rc < 0) fprintf(stderr, "upstream: recording id: %s\n", uv_strerror(rc));
  }
  now.hang = k.hang == 1;
  now.no_worker = outage_hang;
  now.sec = sec;
  now.series_gen = up->series_gen;
  if (now.hang) {
    up->hung_total++;
    up->hung_open++;
    if (second != NULL) second->hung++;
  }
  now.served = 1; /* if answered right here; a call's is decided when it ends */
  now.has_event = upstream_event_id(req, now.event_id, sizeof now.event_id);
  if (now.latency_ms + now.connect_cost_ms == 0 && !now.hang && up->opts.workers == 0) {
    if (up->inflight + 1 > up->inflight_peak) up->inflight_peak = up->inflight + 1;
    upstream_send(up, req, &now);
    return;
  }

  call = malloc(sizeof *call);
  if (call == NULL) {
    fprintf(stderr, "upstream: malloc: out of memory\n");
    upstream_respond_now(up, req, 500, "out of memory", sec);
    return;
  }
  *call = now;
  call->served = 0;
  rc = uv_timer_init(up->loop, &call->timer);
  if (rc != 0) {
    fprintf(stderr, "upstream: uv_timer_init: %s\n", uv_strerror(rc));
    if (call->hang) up->hung_open--;
    free(call);
    upstream_respond_now(up, req, 500, "uv_timer_init failed", sec);
    return;
  }
  call->timer.data = call;
  call->req = req;
  call->next = up->calls;
  if (up->calls != NULL) up->calls->prev = call;
  up->calls = call;
  up->inflight++;
  if (up->inflight > up->inflight_peak) up->inflight_peak = up->inflight;
  shell_request_on_abort(req, upstream_on_abort, call);

  /* The handshake comes first and takes no worker: the request reaches the server after it. */
  call->phase = UPSTREAM_CONNECTING;
  if (call->connect_cost_ms == 0) {
    upstream_arrive(call);
    return;
  }
  uv_update_time(up->loop);
  rc = uv_timer_start(&call->timer, upstream_on_connected, (uint64_t)call->connect_cost_ms, 0);
  if (rc != 0) {
    fprintf(stderr, "upstream: uv_timer_start: %s\n", uv_strerror(rc));
    call->status = 500;
    upstream_call_finish(call);
  }
}

/* Called by the shell for GET /stats. */
static void upstream_on_stats(shell_request_t *req, void *data) {
  upstream_t *up = data;
  shell_counters_t c;

  shell_get_counters(up->shell, &c);
  shell_respondf(req, 200, "application/json",
                 "{\"connections_accepted\":%" PRIu64 ",\"connections_open\":%u,"
                 "\"connections_peak\":%u,\"requests_total\":%" PRIu64 ",\"inflight\":%u,"
                 "\"inflight_peak\":%u,\"abandoned\":%" PRIu64 ",\"responses_2xx\":%" PRIu64
                 ",\"responses_4xx\":%" PRIu64 ",\"responses_5xx\":%" PRIu64
                 ",\"ids_seen\":%zu,\"ids_duplicate\":%" PRIu64 ",\"bad_requests\":%" PRIu64
                 ",\"workers\":%ld,\"in_service\":%u,\"in_service_peak\":%u,"
                 "\"queue_depth\":%u,\"queue_peak\":%u,\"wait_ms_max\":%.3f,"
                 "\"wait_ms_mean\":%.3f,\"hung_total\":%" PRIu64 ",\"hung_open\":%u,"
                 "\"events_unique\":%zu,\"events_duplicate\":%" PRIu64 ",\"rate_limited\":%" PRIu64
                 ",\"outage_requests\":%" PRIu64 "}\n",
                 c.connections_accepted, c.connections_open, c.connections_peak,
                 up->requests_total, up->inflight, up->inflight_peak, up->abandoned,
                 up->responses_2xx, up->responses_4xx, up->responses_5xx, up->ids.len,
                 up->ids_duplicate, c.bad_requests, up->opts.workers, up->in_service,
                 up->in_service_peak, up->queue_depth, up->queue_peak,
                 (double)up->wait_ns_max / 1e6,
                 up->waits ? (double)up->wait_ns_sum / (double)up->waits / 1e6 : 0.0,
                 up->hung_total, up->hung_open, up->events.len, up->events_duplicate,
                 up->rate_limited, up->outage_requests);
}

/* Start, or POST /stats/reset: the outage window and the series count from now, the rate
 * limit's bucket is full. */
static void upstream_restart_clock(upstream_t *up) {
  struct timespec ts;
  up->t0_ns = uv_hrtime();
  clock_gettime(CLOCK_REALTIME, &ts);
  up->t0_wall_ms = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
  up->series_len = 0;
  if (up->series != NULL) memset(up->series, 0, up->series_cap * sizeof *up->series);
  up->series_gen++;
  up->tokens = (double)up->opts.rate_burst;
  up->tokens_ns = up->t0_ns;
}

/* Called by the shell for GET /stats/series: per-second attempts by outcome, by arrival. */
static void upstream_on_series(shell_request_t *req, void *data) {
  upstream_t *up = data;
  size_t cap, len;
  char *out;
  int n;

  (void)upstream_second_now(up, NULL); /* the series runs to the current second */
  cap = 64 + up->series_len * 128;    /* a second's object is under 128 bytes */
  out = malloc(cap);
  if (out == NULL) {
    shell_respond(req, 500, "application/json", "{\"error\":\"out of memory\"}\n", 26);
    return;
  }
  n = snprintf(out, cap, "{\"t0_ms\":%.3f,\"seconds\":[", up->t0_wall_ms);
  len = (size_t)n;
  for (size_t t = 0; t < up->series_len; t++) {
    const upstream_second_t *b = &up->series[t];
    n = snprintf(out + len, cap - len,
                 "%s{\"t\":%zu,\"attempts\":%" PRIu32 ",\"ok\":%" PRIu32 ",\"failed\":%" PRIu32
                 ",\"rate_limited\":%" PRIu32 ",\"hung\":%" PRIu32 ",\"abandoned\":%" PRIu32 "}",
                 t ? "," : "", t, b->attempts, b->ok, b->failed, b->rate_limited, b->hung,
                 b->abandoned);
    len += (size_t)n;
  }
  len += (size_t)snprintf(out + len, cap - len, "]}\n");
  shell_respond(req, 200, "application/json", out, len);
  free(out);
}

/* Called by the shell for POST /stats/reset. */
static void upstream_on_reset(shell_request_t *req, void *data) {
  upstream_t *up = data;

  shell_reset_counters(up->shell);
  up->requests_total = 0;
  up->inflight_peak = up->inflight; /* peaks restart from the current values */
  up->abandoned = 0;
  up->responses_2xx = 0;
  up->responses_4xx = 0;
  up->responses_5xx = 0;
  up->ids_duplicate = 0;
  up->fail_seq = 0;
  up->hang_seq = 0;
  up->hung_total = 0;
  up->events_duplicate = 0;
  upstream_idset_clear(&up->events);
  up->rate_limited = 0;
  up->outage_requests = 0;
  upstream_restart_clock(up);
  up->in_service_peak = up->in_service;
  up->queue_peak = up->queue_depth;
  up->waits = 0;
  up->wait_ns_sum = 0;
  up->wait_ns_max = 0;
  upstream_idset_clear(&up->ids);
  shell_respond(req, 200, "application/json", "{\"reset\":1}\n", 12);
}

/* Called by the shell while it writes /debug/stats: the upstream's own counters. */
static void upstream_on_debug_stats(shell_t *shell, void *data) {
  upstream_t *up = data;
  shell_stats_add(shell, "abandoned", (double)up->abandoned);
  shell_stats_add(shell, "responses_2xx", (double)up->responses_2xx);
  shell_stats_add(shell, "responses_4xx", (double)up->responses_4xx);
  shell_stats_add(shell, "responses_5xx", (double)up->responses_5xx);
  shell_stats_add(shell, "ids_seen", (double)up->ids.len);
  shell_stats_add(shell, "ids_duplicate", (double)up->ids_duplicate);
  shell_stats_add(shell, "in_service", (double)up->in_service);
  shell_stats_add(shell, "queue_depth", (double)up->queue_depth);
  shell_stats_add(shell, "hung_open", (double)up->hung_open);
  shell_stats_add(shell, "events_unique", (double)up->events.len);
  shell_stats_add(shell, "events_duplicate", (double)up->events_duplicate);
}

/* ---- shutdown ---- */

static void upstream_on_shell_closed(shell_t *shell, void *data) {
  upstream_t *up = data;
  (void)shell;
  up->shell = NULL;
  uv_close((uv_handle_t *)&up->sigint, NULL);
  uv_close((uv_handle_t *)&up->sigterm, NULL);
}

static void upstream_on_setup_failed(shell_t *shell, void *data) {
  (void)shell;
  (void)data;
}

/* Called by the loop on SIGINT/SIGTERM. Everything pending is answered 503 at once: a hung
 * request would otherwise hold the shutdown forever. A second signal exits at once. */
static void upstream_on_signal(uv_signal_t *handle, int signum) {
  upstream_t *up = handle->data;
  upstream_call_t *call;

  if (up->closing) {
    fprintf(stderr, "upstream: second signal %d: exiting now\n", signum);
    exit(1);
  }
  up->closing = 1;
  for (call = up->calls; call != NULL; call = call->next) {
    /* An abandoned call still held by a worker (--workers) ends now too; its answer is dropped. */
    call->status = 503;
    call->shutting_down = 1;
    upstream_call_finish_soon(call);
  }
  shell_close(up->shell, upstream_on_shell_closed, up);
}

/* ---- main ---- */

static void upstream_usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "upstream: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n%s", upstream_usage);
  exit(2);
}

static long upstream_flag_long(const char *name, const char *arg, long min, long max) {
  long v;
  if (upstream_parse_long(arg, min, max, &v) != 0) {
    fprintf(stderr, "upstream: --%s '%s': expected an integer in %ld..%ld\n%s", name, arg, min,
            max, upstream_usage);
    exit(2);
  }
  return v;
}

static long upstream_flag_ms(const char *name, const char *arg) {
  return upstream_flag_long(name, arg, 0, UPSTREAM_MAX_DELAY_MS);
}

static void upstream_parse_args(int argc, char **argv, upstream_opts_t *o) {
  static const struct option longopts[] = {
      {"host", required_argument, NULL, 'H'},
      {"port", required_argument, NULL, 'p'},
      {"latency-ms", required_argument, NULL, 'l'},
      {"jitter-ms", required_argument, NULL, 'j'},
      {"status", required_argument, NULL, 's'},
      {"fail-rate", required_argument, NULL, 'f'},
      {"size", required_argument, NULL, 'z'},
      {"connect-cost-ms", required_argument, NULL, 'c'},
      {"max-conns", required_argument, NULL, 'm'},
      {"backlog", required_argument, NULL, 'b'},
      {"seed", required_argument, NULL, 'S'},
      {"workers", required_argument, NULL, 'w'},
      {"hang-rate", required_argument, NULL, 'g'},
      {"header-timeout-ms", required_argument, NULL, 'T'},
      {"idle-timeout-ms", required_argument, NULL, 'I'},
      {"outage", required_argument, NULL, 'O'},
      {"outage-mode", required_argument, NULL, 'M'},
      {"rate-limit", required_argument, NULL, 'R'},
      {"rate-burst", required_argument, NULL, 'B'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  char *end;
  int opt;

  opterr = 0; /* our own messages, with the usage */
  while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (opt) {
      case 'H': o->host = optarg; break;
      case 'p': o->port = upstream_flag_long("port", optarg, 0, 65535); break;
      case 'l': o->latency_ms = upstream_flag_ms("latency-ms", optarg); break;
      case 'j': o->jitter_ms = upstream_flag_ms("jitter-ms", optarg); break;
      case 's': o->status = upstream_flag_long("status", optarg, 200, 599); break;
      case 'z': o->size = upstream_flag_long("size", optarg, 0, UPSTREAM_MAX_SIZE); break;
      case 'c': o->connect_cost_ms = upstream_flag_ms("connect-cost-ms", optarg); break;
      case 'm': o->max_conns = upstream_flag_long("max-conns", optarg, 1, 1000000); break;
      case 'b': o->backlog = upstream_flag_long("backlog", optarg, 1, 65535); break;
      case 'S': o->seed = upstream_flag_long("seed", optarg, 0, 0x7fffffffL); break;
      case 'w': o->workers = upstream_flag_long("workers", optarg, 0, 1000000); break;
      case 'T':
        o->header_timeout_ms = upstream_flag_long("header-timeout-ms", optarg, 1,
                                                  UPSTREAM_MAX_DELAY_MS);
        break;
      case 'I':
        o->idle_timeout_ms = upstream_flag_long("idle-timeout-ms", optarg, 1, UPSTREAM_MAX_DELAY_MS);
        break;
      case 'f':
        errno = 0;
        o->fail_rate = strtod(optarg, &end);
        if (errno != 0 || end == optarg || *end != '\0' || !(o->fail_rate >= 0.0) ||
            o->fail_rate > 1.0)
          upstream_usage_error("--fail-rate '%s': expected a fraction in 0..1", optarg);
        break;
      case 'g':
        errno = 0;
        o->hang_rate = strtod(optarg, &end);
        if (errno != 0 || end == optarg || *end != '\0' || !(o->hang_rate >= 0.0) ||
            o->hang_rate > 1.0)
          upstream_usage_error("--hang-rate '%s': expected a fraction in 0..1", optarg);
        break;
      case 'O': {
        char *dash = strchr(optarg, '-');
        long a, b;
        if (dash == NULL || dash == optarg)
          upstream_usage_error("--outage '%s': expected START_MS-END_MS", optarg);
        *dash = '\0';
        if (upstream_parse_long(optarg, 0, UPSTREAM_MAX_DELAY_MS, &a) != 0 ||
            upstream_parse_long(dash + 1, 0, UPSTREAM_MAX_DELAY_MS, &b) != 0 || b <= a) {
          *dash = '-';
          upstream_usage_error("--outage '%s': expected START_MS-END_MS, START < END", optarg);
        }
        o->outage_start_ms = a;
        o->outage_end_ms = b;
        break;
      }
      case 'M':
        if (strcmp(optarg, "503") == 0) o->outage_mode = UPSTREAM_OUTAGE_503;
        else if (strcmp(optarg, "reset") == 0) o->outage_mode = UPSTREAM_OUTAGE_RESET;
        else if (strcmp(optarg, "hang") == 0) o->outage_mode = UPSTREAM_OUTAGE_HANG;
        else upstream_usage_error("--outage-mode '%s': expected 503, reset or hang", optarg);
        break;
      case 'R':
        errno = 0;
        o->rate_limit = strtod(optarg, &end);
        if (errno != 0 || end == optarg || *end != '\0' || !(o->rate_limit > 0.0) ||
            o->rate_limit > 1e6)
          upstream_usage_error("--rate-limit '%s': expected requests/s in (0, 1000000]", optarg);
        break;
      case 'B': o->rate_burst = upstream_flag_long("rate-burst", optarg, 1, 1000000); break;
      case 'h': fputs(upstream_usage, stdout); exit(0);
      case ':': upstream_usage_error("option '%s' needs a value", argv[optind - 1]); break;
      default: upstream_usage_error("unknown option '%s'", argv[optind - 1]); break;
    }
  }
  if (optind < argc) upstream_usage_error("unexpected argument '%s'", argv[optind]);
  if (o->rate_burst > 0 && o->rate_limit == 0)
    upstream_usage_error("--rate-burst needs --rate-limit%s", "");
  if (o->rate_burst == 0) o->rate_burst = o->rate_limit < 1 ? 1 : (long)ceil(o->rate_limit);
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  upstream_t up;
  shell_config_t cfg;
  int rc;

  /* A client that closes while its answer is being written makes the next write fail with EPIPE:
   * without this the kernel's SIGPIPE would kill the upstream (exit 141); libuv reports EPIPE. */
  signal(SIGPIPE, SIG_IGN);
  memset(&up, 0, sizeof up);
  up.opts.host = "127.0.0.1";
  up.opts.status = 200;
  up.opts.seed = 1;
  up.opts.outage_start_ms = -1;
  upstream_parse_args(argc, argv, &up.opts);
  up.fail_ppm = (uint32_t)lround(up.opts.fail_rate * 1e6);
  up.hang_ppm = (uint32_t)lround(up.opts.hang_rate * 1e6);
  up.rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)up.opts.seed; /* never 0 */

  memset(&cfg, 0, sizeof cfg);
  cfg.max_connections = (unsigned)up.opts.max_conns;
  cfg.backlog = (int)up.opts.backlog;
  cfg.header_timeout_ms = (unsigned)up.opts.header_timeout_ms;
  cfg.idle_timeout_ms = (unsigned)up.opts.idle_timeout_ms;
  /* --max-conns is a limit the labs measure against (a pool holding every slot): connections
   * beyond it wait in the backlog, never taking an idle one's place. */
  if (up.opts.max_conns > 0) cfg.shed_after_ms = SHELL_NEVER;

  rc = uv_loop_init(&loop);
  if (rc != 0) {
    fprintf(stderr, "upstream: uv_loop_init: %s\n", uv_strerror(rc));
    return 1;
  }
  up.loop = &loop;
  rc = shell_create(&up.shell, &loop, &cfg);
  if (rc != 0) {
    fprintf(stderr, "upstream: shell_create: %s\n", uv_strerror(rc));
    goto fail_shell;
  }
  /* Control routes: they answer even when --max-conns connections are open (see shell.h). */
  if ((rc = shell_route_control(up.shell, "GET", "/stats", upstream_on_stats, &up)) != 0 ||
      (rc = shell_route_control(up.shell, "POST", "/stats/reset", upstream_on_reset, &up)) != 0 ||
      (rc = shell_route_control(up.shell, "GET", "/stats/series", upstream_on_series, &up)) != 0 ||
      (rc = shell_route(up.shell, NULL, "*", upstream_on_request, &up)) != 0) {
    fprintf(stderr, "upstream: shell_route: %s\n", uv_strerror(rc));
    goto fail_setup;
  }
  shell_set_stats_hook(up.shell, upstream_on_debug_stats, &up);
  rc = uv_signal_init(&loop, &up.sigint);
  if (rc != 0) {
    fprintf(stderr, "upstream: uv_signal_init: %s\n", uv_strerror(rc));
    goto fail_setup;
  }
  up.sigint.data = &up;
  rc = uv_signal_init(&loop, &up.sigterm);
  if (rc != 0) {
    fprintf(stderr, "upstream: uv_signal_init: %s\n", uv_strerror(rc));
    goto fail_sigterm;
  }
  up.sigterm.data = &up;
  if ((rc = uv_signal_start(&up.sigint, upstream_on_signal, SIGINT)) != 0 ||
      (rc = uv_signal_start(&up.sigterm, upstream_on_signal, SIGTERM)) != 0) {
    fprintf(stderr, "upstream: uv_signal_start: %s\n", uv_strerror(rc));
    goto fail_signals;
  }
  rc = shell_listen(up.shell, up.opts.host, (int)up.opts.port);
  if (rc != 0) {
    fprintf(stderr, "upstream: shell_listen(%s:%ld): %s\n", up.opts.host, up.opts.port,
            uv_strerror(rc));
    goto fail_signals;
  }
  upstream_restart_clock(&up);
  printf("listening on http://%s:%d\n", up.opts.host, shell_port(up.shell));
  fflush(stdout);

  rc = uv_run(&loop, UV_RUN_DEFAULT);
  if (rc != 0) fprintf(stderr, "upstream: uv_run ended with live handles\n");
  rc = uv_loop_close(&loop);
  if (rc != 0) {
    fprintf(stderr, "upstream: uv_loop_close: %s\n", uv_strerror(rc));
    upstream_idset_clear(&up.ids);
    upstream_idset_clear(&up.events);
    free(up.series);
    return 1;
  }
  upstream_idset_clear(&up.ids);
  upstream_idset_clear(&up.events);
  free(up.series);
  return 0;

  /* Setup failed: undo it in reverse order, then let the loop run the close callbacks. */
fail_signals:
  uv_close((uv_handle_t *)&up.sigterm, NULL);
fail_sigterm:
  uv_close((uv_handle_t *)&up.sigint, NULL);
fail_setup:
  shell_close(up.shell, upstream_on_setup_failed, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
fail_shell:
  if (uv_loop_close(&loop) != 0) fprintf(stderr, "upstream: uv_loop_close: handles left\n");
  return 1;
}
