/* client.h - every outbound HTTP call: libcurl's multi interface driven by the caller's libuv loop.
 *
 * One client_t is one curl multi handle, and so one connection cache: transfers started on the
 * same client reuse its connections. A lab that creates a client per request therefore pays a new
 * connection per request (lab 02).
 *
 * Callbacks: done is called exactly once per started transfer, always from the loop, never from
 * inside a client_* call (a cancel is reported on a later loop turn, with res->cancelled set).
 * client_destroy is the exception: it drops what is still running without calling done, because
 * the owner is going away.
 */
#ifndef LOOPHOLES_CLIENT_H
#define LOOPHOLES_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct client client_t;
typedef struct client_transfer client_transfer_t;

typedef struct client_config {
  long max_host_connections;   /* CURLMOPT_MAX_HOST_CONNECTIONS: 0 = no limit; transfers beyond
                                  it wait in libcurl's queue for a free connection */
  long max_total_connections;  /* CURLMOPT_MAX_TOTAL_CONNECTIONS: 0 = no limit */
  long max_cached_connections; /* CURLMOPT_MAXCONNECTS: idle connections kept; 0 = libcurl's default */
  long connect_timeout_ms;     /* CURLOPT_CONNECTTIMEOUT_MS: 0 = libcurl's default */
  int forbid_reuse;            /* CURLOPT_FORBID_REUSE on every transfer */
} client_config_t;

typedef struct client_result {
  int status;          /* HTTP status; 0 when no response arrived */
  int curl_code;       /* CURLcode of the transfer (CURLE_OK when a response arrived) */
  int cancelled;       /* 1 when client_cancel ended it */
  int timed_out;       /* 1 when its timeout_ms ran out */
  const char *error;   /* NULL on success, else a message naming what failed */
  const char *body;    /* response body, NUL-terminated; valid only during the callback */
  size_t body_len;
  double total_ms;     /* from client_start to the end */
  long retry_after_ms; /* the answer's Retry-After (seconds or an HTTP date), in ms; 0 when absent */
} client_result_t;

typedef void (*client_done_fn)(client_transfer_t *t, const client_result_t *res, void *data);

typedef struct client_req {
  const char *method;   /* "GET" when NULL, or "POST" */
  const char *url;
  const char *body;     /* POST body (copied), may be NULL */
  size_t body_len;
  long timeout_ms;      /* whole transfer; 0 = no limit */
  client_done_fn done;
  void *data;
} client_req_t;

typedef struct client_stats {
  uint64_t started;
  uint64_t completed;          /* a response arrived (any status) */
  uint64_t failed;             /* no response: connect error, timeout, ... */
  uint64_t cancelled;          /* by client_cancel or client_destroy */
  uint64_t connections_opened; /* new connections libcurl made (CURLINFO_NUM_CONNECTS summed) */
  unsigned inflight;
  unsigned peak_inflight;
} client_stats_t;

/* cfg may be NULL for libcurl's defaults. Returns 0 or a negative uv error. */
int client_create(client_t **out, uv_loop_t *loop, const client_config_t *cfg);

/* Starts a transfer. *out (may be NULL) receives a handle valid until done is called.
 * Returns 0 or a negative uv error (then done is never called). */
int client_start(client_t *c, const client_req_t *req, client_transfer_t **out);

/* Shorthand for a GET. Returns NULL on failure. */
client_transfer_t *client_get(client_t *c, const char *url, long timeout_ms, client_done_fn done,
                              void *data);

/* Ends a transfer now: its connection is closed, so the far side sees it abandoned. done follows
 * on a later loop turn with res->cancelled = 1. Cancelling twice is a no-op. */
void client_cancel(client_transfer_t *t);

void client_get_stats(const client_t *c, client_stats_t *out);

/* Cancels what is still running (their done is NOT called), closes every handle; memory is freed
 * in the close callbacks, so run the loop afterwards. */
void client_destroy(client_t *c);

/* curl_global_init once per process (idempotent, thread-safe enough for our use: call it from
 * main or the first client_create). */
int client_global_init(void);

#endif
