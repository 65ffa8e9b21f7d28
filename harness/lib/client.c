/* client.c - libcurl's multi interface driven by the caller's libuv loop (see client.h).
 *
 * The glue is the multi-socket pattern of curl's docs/examples/multi-uv.c:
 *   - libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION): one uv_poll_t per
 *     socket, kept in a client_socket_t that curl_multi_assign() ties to the socket;
 *   - libcurl tells us when it wants to be woken up (CURLMOPT_TIMERFUNCTION): one uv_timer_t;
 *   - when a poll or the timer fires we call curl_multi_socket_action() and then read
 *     curl_multi_info_read() for finished transfers, whose done callback we call right there.
 * Everything runs on the one loop thread; the only process-wide state is curl_global_init's
 * once-flag.
 *
 * Re-entrancy: a done callback may start transfers, cancel others or destroy the client (lab 02's
 * pitfall destroys its client from the done of its only transfer). So every entry from the loop
 * counts itself in `busy`, and client_destroy() while busy only marks the client; the entry that
 * brings busy back to 0 tears it down.
 */
#include "client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT_MAX_BODY (4u << 20) /* a bigger response fails with CURLE_WRITE_ERROR */

typedef struct client_socket client_socket_t;

/* One socket libcurl asked us to watch. Freed in its poll handle's close callback. */
struct client_socket {
  uv_poll_t poll;
  curl_socket_t fd;
  client_t *client;
  client_socket_t *prev, *next;
};

struct client_transfer {
  client_t *client;
  CURL *easy;              /* NULL once removed from the multi handle */
  client_done_fn done;
  void *data;
  char *body;
  size_t body_len, body_cap;
  uint64_t start_ns;
  long connects;           /* CURLINFO_NUM_CONNECTS, read before the easy handle goes */
  int cancelled;
  int finished;            /* done is running or has run: cancel is a no-op */
  char errbuf[CURL_ERROR_SIZE];
  client_transfer_t *prev, *next;
};

/* A doubly linked list with a head pointer, for transfers and sockets alike. */
#define LIST_PUSH(head, node)      \
  do {                             \
    (node)->prev = NULL;           \
    (node)->next = (head);         \
    if ((head) != NULL)            \
      (head)->prev = (node);       \
    (head) = (node);               \
  } while (0)
#define LIST_UNLINK(head, node)            \
  do {                                     \
    if ((node)->prev != NULL)              \
      (node)->prev->next = (node)->next;   \
    else                                   \
      (head) = (node)->next;               \
    if ((node)->next != NULL)              \
      (node)->next->prev = (node)->prev;   \
    (node)->prev = (node)->next = NULL;    \
  } while (0)

struct client {
  uv_loop_t *loop;
  CURLM *multi;
  struct curl_slist *headers;   /* "Expect:" so that a POST never waits for 100-continue */
  client_config_t cfg;
  uv_timer_t timer;             /* libcurl's timeout (CURLMOPT_TIMERFUNCTION) */
  uv_idle_t notify;             /* reports cancelled transfers on a later loop turn */
  client_transfer_t *running;   /* added to the multi handle */
  client_transfer_t *cancelled; /* removed, done not called yet (newest first) */
  client_socket_t *sockets;
  client_stats_t stats;
  unsigned handles_open;        /* uv handles whose close callback has not run yet */
  int busy;                     /* depth of loop callbacks running inside this client */
  int destroy_requested;
  int torn_down;
};

static void client_teardown(client_t *c);

/* ---- process-wide init ---- */

static pthread_once_t client_once = PTHREAD_ONCE_INIT;
static CURLcode client_once_rc = CURLE_OK;

static void client_global_init_once(void) { client_once_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int client_global_init(void) {
  if (pthread_once(&client_once, client_global_init_once) != 0) return UV_EINVAL;
  if (client_once_rc != CURLE_OK) {
    fprintf(stderr, "client: curl_global_init: %s\n", curl_easy_strerror(client_once_rc));
    return UV_EIO;
  }
  return 0;
}

/* ---- handles and their close callbacks ---- */

static void client_maybe_free(client_t *c) {
  if (c->torn_down && c->handles_open == 0) free(c);
}

static void client_on_handle_closed(uv_handle_t *handle) {
  client_t *c = handle->data;
  c->handles_open--;
  client_maybe_free(c);
}

static void client_on_socket_closed(uv_handle_t *handle) {
  client_socket_t *sock = handle->data;
  client_t *c = sock->client;
  free(sock);
  c->handles_open--;
  client_maybe_free(c);
}

static void client_socket_close(client_socket_t *sock) {
  LIST_UNLINK(sock->client->sockets, sock);
  uv_close((uv_handle_t *)&sock->poll, client_on_socket_closed);
}

/* ---- finishing transfers ---- */

static void client_transfer_free(client_transfer_t *t) {
  free(t->body);
  free(t);
}

/* Takes t's easy handle out of libcurl; the connection goes back to the cache if the transfer
 * completed, and is closed if it did not (which is what makes a cancel visible upstream). */
static void client_transfer_detach(client_transfer_t *t) {
  client_t *c = t->client;
  long connects = 0;
  CURLMcode mrc;

  if (t->easy == NULL) return;
  if (curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK) t->connects = connects;
  c->stats.connections_opened += (uint64_t)t->connects;
  LIST_UNLINK(c->running, t);
  mrc = curl_multi_remove_handle(c->multi, t->easy);
  if (mrc != CURLM_OK)
    fprintf(stderr, "client: curl_multi_remove_handle: %s\n", curl_multi_strerror(mrc));
  curl_easy_cleanup(t->easy);
  t->easy = NULL;
  c->stats.inflight--;
}

static double client_elapsed_ms(const client_transfer_t *t) {
  return (double)(uv_hrtime() - t->start_ns) / 1e6;
}

/* Called for CURLMSG_DONE: builds the result, releases the easy handle, calls done, frees t. */
static void client_transfer_finish(client_transfer_t *t, CURLcode code) {
  client_t *c = t->client;
  client_result_t res;
  long status = 0;

  memset(&res, 0, sizeof res);
  res.curl_code = (int)code;
  if (code == CURLE_OK && curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK)
    res.status = (int)status;
  res.timed_out = code == CURLE_OPERATION_TIMEDOUT;
  /* libcurl parses Retry-After for us, both forms: delay-seconds and an HTTP date. */
  curl_off_t retry_after_s = 0;
  if (code == CURLE_OK &&
      curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &retry_after_s) == CURLE_OK &&
      retry_after_s > 0)
    res.retry_after_ms = (long)retry_after_s * 1000;
  if (code != CURLE_OK) res.error = t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror(code);
  res.body = t->body != NULL ? t->body : "";
  res.body_len = t->body_len;
  res.total_ms = client_elapsed_ms(t);
  client_transfer_detach(t);
  if (code == CURLE_OK)
    c->stats.completed++;
  else
    c->stats.failed++;

  t->finished = 1;
  t->done(t, &res, t->data);
  client_transfer_free(t);
}

/* Who calls it: every loop callback, after curl_multi_socket_action(). */
static void client_check_done(client_t *c) {
  CURLMsg *msg;
  int pending;

  while (!c->destroy_requested && (msg = curl_multi_info_read(c->multi, &pending)) != NULL) {
    client_transfer_t *t = NULL;
    CURLcode code = msg->data.result; /* msg is invalid once its handle is removed */

    if (msg->msg != CURLMSG_DONE) continue;
    if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t) != CURLE_OK || t == NULL) {
      fprintf(stderr, "client: curl_easy_getinfo(CURLINFO_PRIVATE) failed\n");
      continue;
    }
    client_transfer_finish(t, code);
  }
}

static void client_leave(client_t *c) {
  c->busy--;
  if (c->busy == 0 && c->destroy_requested && !c->torn_down) client_teardown(c);
}

static void client_socket_action(client_t *c, curl_socket_t fd, int flags) {
  int running = 0;
  CURLMcode mrc;

  c->busy++;
  mrc = curl_multi_socket_action(c->multi, fd, flags, &running);
  if (mrc != CURLM_OK)
    fprintf(stderr, "client: curl_multi_socket_action: %s\n", curl_multi_strerror(mrc));
  client_check_done(c);
  client_leave(c);
}

/* ---- libuv callbacks ---- */

/* Who calls it: libuv, when a socket libcurl watches is ready (or failed). */
static void client_on_poll(uv_poll_t *handle, int status, int events) {
  client_socket_t *sock = handle->data;
  int flags = 0;

  if (status < 0) {
    flags = CURL_CSELECT_ERR; /* let libcurl find out what went wrong with the socket */
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  client_socket_action(sock->client, sock->fd, flags);
}

/* Who calls it: libuv, when the timeout libcurl asked for runs out. */
static void client_on_timer(uv_timer_t *timer) {
  client_socket_action(timer->data, CURL_SOCKET_TIMEOUT, 0);
}

/* Who calls it: libuv, on the loop turn after a client_cancel(). */
static void client_on_notify(uv_idle_t *idle) {
  client_t *c = idle->data;
  client_transfer_t *list = c->cancelled, *t;
  int rc;

  c->cancelled = NULL;
  rc = uv_idle_stop(idle);
  if (rc != 0) fprintf(stderr, "client: uv_idle_stop: %s\n", uv_strerror(rc));
  c->busy++;
  /* The list is newest first: walk to the oldest and report in cancel order. */
  while (list != NULL && list->next != NULL) list = list->next;
  while ((t = list) != NULL) {
    client_result_t res;

    list = t->prev;
    if (!c->destroy_requested) {
      memset(&res, 0, sizeof res);
      res.cancelled = 1;
      res.curl_code = CURLE_ABORTED_BY_CALLBACK;
      res.error = "cancelled";
      res.body = "";
      res.total_ms = client_elapsed_ms(t);
      t->finished = 1;
      t->done(t, &res, t->data);
    }
    client_transfer_free(t);
  }
  client_leave(c);
}

/* ---- libcurl callbacks ---- */

/* Who calls it: libcurl, from inside curl_multi_* calls, when a socket's interest changes. */
static int client_on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  client_t *c = userp;
  client_socket_t *sock = socketp;
  int events = 0, rc;
  CURLMcode mrc;

  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    /* libcurl is about to close fd: stop watching it now, so that a new socket that gets the
       same number can be watched at once (libuv allows one watcher per fd). */
    if (sock != NULL) {
      client_socket_close(sock);
      mrc = curl_multi_assign(c->multi, fd, NULL);
      if (mrc != CURLM_OK) fprintf(stderr, "client: curl_multi_assign: %s\n", curl_multi_strerror(mrc));
    }
    return 0;
  }
  if (sock == NULL) {
    sock = calloc(1, sizeof *sock);
    if (sock == NULL) {
      fprintf(stderr, "client: calloc: out of memory\n");
      return -1;
    }
    rc = uv_poll_init_socket(c->loop, &sock->poll, fd);
    if (rc == UV_EEXIST) {
      /* A poll handle of ours still watches this number: libcurl closed that socket without a
         CURL_POLL_REMOVE. Closing the stale handle frees the number at once; then retry. */
      client_socket_t *stale = c->sockets;
      while (stale != NULL && stale->fd != fd) stale = stale->next;
      if (stale != NULL) {
        client_socket_close(stale);
        rc = uv_poll_init_socket(c->loop, &sock->poll, fd);
      }
    }
    if (rc != 0) {
      fprintf(stderr, "client: uv_poll_init_socket(%d): %s\n", (int)fd, uv_strerror(rc));
      free(sock);
      return -1;
    }
    sock->fd = fd;
    sock->client = c;
    sock->poll.data = sock;
    c->handles_open++;
    LIST_PUSH(c->sockets, sock);
    mrc = curl_multi_assign(c->multi, fd, sock);
    if (mrc != CURLM_OK) {
      fprintf(stderr, "client: curl_multi_assign: %s\n", curl_multi_strerror(mrc));
      client_socket_close(sock);
      return -1;
    }
  }
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  rc = uv_poll_start(&sock->poll, events, client_on_poll);
  if (rc != 0) {
    fprintf(stderr, "client: uv_poll_start(%d): %s\n", (int)fd, uv_strerror(rc));
    return -1;
  }
  return 0;
}

/* Who calls it: libcurl, from inside curl_multi_* calls, when its next timeout changes.
 * -1 means no timeout; 0 means "call curl_multi_socket_action soon", which must not happen from
 * inside this callback: a 0 ms timer runs it on the loop instead. */
static int client_on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  client_t *c = userp;
  int rc;

  (void)multi;
  if (c->torn_down) return 0;
  if (timeout_ms < 0)
    rc = uv_timer_stop(&c->timer);
  else
    rc = uv_timer_start(&c->timer, client_on_timer, (uint64_t)timeout_ms, 0);
  if (rc != 0) {
    fprintf(stderr, "client: uv_timer_start/stop: %s\n", uv_strerror(rc));
    return -1;
  }
  return 0;
}

/* Who calls it: libcurl, with response body bytes. */
static size_t client_on_write(char *ptr, size_t size, size_t nmemb, void *userp) {
  client_transfer_t *t = userp;
  size_t n = size * nmemb;

  if (t->body_len + n + 1 > t->body_cap) {
    size_t cap = t->body_cap != 0 ? t->body_cap : 1024;
    char *p;

    while (cap < t->body_len + n + 1) cap *= 2;
    if (cap > CLIENT_MAX_BODY) return 0; /* makes the transfer fail with CURLE_WRITE_ERROR */
    p = realloc(t->body, cap);
    if (p == NULL) return 0;
    t->body = p;
    t->body_cap = cap;
  }
  memcpy(t->body + t->body_len, ptr, n);
  t->body_len += n;
  t->body[t->body_len] = '\0';
  return n;
}

/* ---- the API ---- */

int client_create(client_t **out, uv_loop_t *loop, const client_config_t *cfg) {
  client_t *c;
  CURLMcode mrc = CURLM_OK;
  int rc;

  *out = NULL;
  rc = client_global_init();
  if (rc != 0) return rc;
  c = calloc(1, sizeof *c);
  if (c == NULL) return UV_ENOMEM;
  c->loop = loop;
  if (cfg != NULL) c->cfg = *cfg;

  c->multi = curl_multi_init();
  if (c->multi == NULL) {
    fprintf(stderr, "client: curl_multi_init failed\n");
    rc = UV_ENOMEM;
    goto fail_multi;
  }
  c->headers = curl_slist_append(NULL, "Expect:");
  if (c->headers == NULL) {
    rc = UV_ENOMEM;
    goto fail_headers;
  }
  /* One multi handle = one connection cache. HTTP/1.1 only: no pipelining, no multiplexing, so
     a connection carries one request at a time and the limits below count requests too. */
  if ((mrc = curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, client_on_curl_socket)) != CURLM_OK ||
      (mrc = curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c)) != CURLM_OK ||
      (mrc = curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, client_on_curl_timer)) != CURLM_OK ||
      (mrc = curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c)) != CURLM_OK ||
      (mrc = curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_NOTHING)) != CURLM_OK ||
      (mrc = curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, c->cfg.max_host_connections)) != CURLM_OK ||
      (mrc = curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, c->cfg.max_total_connections)) != CURLM_OK ||
      (c->cfg.max_cached_connections > 0 &&
       (mrc = curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, c->cfg.max_cached_connections)) != CURLM_OK)) {
    fprintf(stderr, "client: curl_multi_setopt: %s\n", curl_multi_strerror(mrc));
    rc = UV_EINVAL;
    goto fail_setopt;
  }

  rc = uv_timer_init(loop, &c->timer);
  if (rc != 0) {
    fprintf(stderr, "client: uv_timer_init: %s\n", uv_strerror(rc));
    goto fail_setopt;
  }
  c->timer.data = c;
  c->handles_open++;
  rc = uv_idle_init(loop, &c->notify);
  if (rc != 0) {
    fprintf(stderr, "client: uv_idle_init: %s\n", uv_strerror(rc));
    goto fail_idle;
  }
  c->notify.data = c;
  c->handles_open++;
  *out = c;
  return 0;

fail_idle:
  /* The timer is the only handle: the client is freed in its close callback. */
  curl_slist_free_all(c->headers);
  curl_multi_cleanup(c->multi);
  c->torn_down = 1;
  uv_close((uv_handle_t *)&c->timer, client_on_handle_closed);
  return rc;
fail_setopt:
  curl_slist_free_all(c->headers);
fail_headers:
  curl_multi_cleanup(c->multi);
fail_multi:
  free(c);
  return rc;
}

int client_start(client_t *c, const client_req_t *req, client_transfer_t **out) {
  client_transfer_t *t;
  CURL *easy;
  CURLcode erc = CURLE_OK;
  CURLMcode mrc;
  int is_post;

  if (out != NULL) *out = NULL;
  if (c == NULL || req == NULL || req->url == NULL || req->done == NULL) return UV_EINVAL;
  if (c->destroy_requested || c->torn_down) return UV_ECANCELED;
  is_post = req->method != NULL && strcmp(req->method, "POST") == 0;
  if (req->method != NULL && !is_post && strcmp(req->method, "GET") != 0) return UV_EINVAL;

  t = calloc(1, sizeof *t);
  if (t == NULL) return UV_ENOMEM;
  easy = curl_easy_init();
  if (easy == NULL) {
    fprintf(stderr, "client: curl_easy_init failed\n");
    free(t);
    return UV_ENOMEM;
  }
  t->client = c;
  t->easy = easy;
  t->done = req->done;
  t->data = req->data;

  /* NOSIGNAL: no SIGALRM-based DNS timeouts in a multi-threaded process. PROXY "": ignore
     http_proxy from the environment, the upstream is on loopback. */
  if ((erc = curl_easy_setopt(easy, CURLOPT_URL, req->url)) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *)t)) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, client_on_write)) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_WRITEDATA, t)) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->errbuf)) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_PROXY, "")) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L)) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1)) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_HTTPHEADER, c->headers)) != CURLE_OK ||
      (erc = curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 0L)) != CURLE_OK ||
      (c->cfg.connect_timeout_ms > 0 &&
       (erc = curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, c->cfg.connect_timeout_ms)) != CURLE_OK) ||
      (erc = curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, c->cfg.forbid_reuse ? 1L : 0L)) != CURLE_OK ||
      (is_post && (erc = curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)req->body_len)) != CURLE_OK) ||
      (is_post && (erc = curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, req->body != NULL ? req->body : "")) != CURLE_OK)) {
    fprintf(stderr, "client: curl_easy_setopt: %s\n", curl_easy_strerror(erc));
    curl_easy_cleanup(easy);
    free(t);
    return UV_EINVAL;
  }

  t->start_ns = uv_hrtime();
  LIST_PUSH(c->running, t);
  c->stats.started++;
  c->stats.inflight++;
  if (c->stats.inflight > c->stats.peak_inflight) c->stats.peak_inflight = c->stats.inflight;
  /* add_handle only arms the timer (timeout 0); the transfer starts on the next loop turn. */
  mrc = curl_multi_add_handle(c->multi, easy);
  if (mrc != CURLM_OK) {
    fprintf(stderr, "client: curl_multi_add_handle: %s\n", curl_multi_strerror(mrc));
    LIST_UNLINK(c->running, t);
    c->stats.started--;
    c->stats.inflight--;
    curl_easy_cleanup(easy);
    free(t);
    return UV_EIO;
  }
  if (out != NULL) *out = t;
  return 0;
}

client_transfer_t *client_get(client_t *c, const char *url, long timeout_ms, client_done_fn done,
                              void *data) {
  client_req_t req = {.method = "GET", .url = url, .timeout_ms = timeout_ms, .done = done, .data = data};
  client_transfer_t *t;

  return client_start(c, &req, &t) == 0 ? t : NULL;
}

void client_cancel(client_transfer_t *t) {
  client_t *c;
  int rc;

  if (t == NULL || t->cancelled || t->finished) return;
  c = t->client;
  t->cancelled = 1;
  c->stats.cancelled++;
  client_transfer_detach(t); /* an unfinished transfer's connection is closed, not reused */
  LIST_PUSH(c->cancelled, t);
  rc = uv_idle_start(&c->notify, client_on_notify);
  if (rc != 0) fprintf(stderr, "client: uv_idle_start: %s\n", uv_strerror(rc));
}

void client_get_stats(const client_t *c, client_stats_t *out) { *out = c->stats; }

/* Drops every transfer without calling done, closes libcurl's connections, then every handle. */
static void client_teardown(client_t *c) {
  client_transfer_t *t;

  c->torn_down = 1;
  while ((t = c->running) != NULL) {
    c->stats.cancelled++;
    client_transfer_detach(t); /* unlinks t from c->running */
    client_transfer_free(t);
  }
  while ((t = c->cancelled) != NULL) {
    LIST_UNLINK(c->cancelled, t);
    client_transfer_free(t);
  }
  /* Closes the cached connections; libcurl may report CURL_POLL_REMOVE for them on the way. */
  curl_multi_cleanup(c->multi);
  c->multi = NULL;
  curl_slist_free_all(c->headers);
  c->headers = NULL;
  while (c->sockets != NULL) client_socket_close(c->sockets);
  uv_close((uv_handle_t *)&c->timer, client_on_handle_closed);
  uv_close((uv_handle_t *)&c->notify, client_on_handle_closed);
}

void client_destroy(client_t *c) {
  if (c == NULL || c->destroy_requested) return;
  c->destroy_requested = 1;
  if (c->busy == 0) client_teardown(c);
}
