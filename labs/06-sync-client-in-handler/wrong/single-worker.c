/* WRONG: calls overlap: with K requests waiting, at least min(K, 4) calls are in flight -- caught by: lab06::calls_overlap */
/* "Never block the loop": one worker thread of its own makes the blocking calls, in turn. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

#define MAX_BODY (1u << 20)
#define MAX_IDLE_EASY 64

typedef struct profile_job profile_job_t;

struct lab {
  const lab_config_t *cfg;
  uv_mutex_t idle_lock;         /* guards the queues below and the idle handles */
  CURL *idle[MAX_IDLE_EASY];    /* easy handles not in use, kept for their open connections */
  int n_idle;
  uv_thread_t worker;           /* the one thread that makes the blocking calls */
  uv_cond_t wake;
  profile_job_t *todo_head, *todo_tail; /* jobs for the worker, oldest first */
  profile_job_t *done;          /* jobs the worker finished, for the loop */
  uv_async_t done_async;        /* wakes the loop when done is not empty */
  int stopping;
  uint64_t calls;    /* upstream calls started, for /debug/stats (loop thread only) */
  unsigned inflight; /* upstream calls queued or running, not ended yet (loop thread only) */
};

/* One /profile request: filled in by a pool thread, answered on the loop. */
struct profile_job {
  uv_work_t work;
  profile_job_t *next;
  lab_t *lab;
  shell_request_t *req;
  char url[512];
  char *body;
  size_t body_len;
  long status;
  CURLcode code;
};

/* Who calls it: libcurl, inside curl_easy_perform on a pool thread, for each piece of the body. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
  profile_job_t *job = userdata;
  size_t n = size * nmemb;
  char *grown;

  if (job->body_len + n > MAX_BODY) return 0; /* fails the transfer with CURLE_WRITE_ERROR */
  grown = realloc(job->body, job->body_len + n + 1);
  if (grown == NULL) return 0;
  memcpy(grown + job->body_len, ptr, n);
  job->body = grown;
  job->body_len += n;
  job->body[job->body_len] = '\0';
  return n;
}

/* An idle easy handle (a new one when there is none). Called on pool threads. */
static CURL *easy_take(lab_t *lab) {
  CURL *easy = NULL;

  uv_mutex_lock(&lab->idle_lock);
  if (lab->n_idle > 0) easy = lab->idle[--lab->n_idle];
  uv_mutex_unlock(&lab->idle_lock);
  if (easy == NULL) easy = curl_easy_init();
  return easy;
}

static void easy_give_back(lab_t *lab, CURL *easy) {
  uv_mutex_lock(&lab->idle_lock);
  if (lab->n_idle < MAX_IDLE_EASY) {
    lab->idle[lab->n_idle++] = easy;
    easy = NULL;
  }
  uv_mutex_unlock(&lab->idle_lock);
  if (easy != NULL) curl_easy_cleanup(easy);
}

/* Who calls it: a libuv pool thread. It may block; it must not touch the loop or the request. */
static void profile_work(uv_work_t *work) {
  profile_job_t *job = work->data;
  CURL *easy = easy_take(job->lab);

  job->code = CURLE_FAILED_INIT;
  if (easy == NULL) return;
  /* NOSIGNAL: libcurl must not use signals for its timeouts on a thread that is not main. */
  if (curl_easy_setopt(easy, CURLOPT_URL, job->url) == CURLE_OK &&
      curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
      curl_easy_setopt(easy, CURLOPT_WRITEDATA, job) == CURLE_OK &&
      curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, job->lab->cfg->timeout_ms) == CURLE_OK &&
      curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) == CURLE_OK)
    job->code = curl_easy_perform(easy); /* blocks this pool thread, not the loop */
  if (job->code == CURLE_OK) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &job->status);
  easy_give_back(job->lab, easy);
}

static void profile_after_work(uv_work_t *work, int status);

/* The worker thread: takes jobs one by one, makes the call, hands the job back to the loop. */
static void worker_main(void *arg) {
  lab_t *lab = arg;
  uv_mutex_lock(&lab->idle_lock);
  for (;;) {
    while (lab->todo_head == NULL && !lab->stopping) uv_cond_wait(&lab->wake, &lab->idle_lock);
    if (lab->todo_head == NULL) break;
    profile_job_t *job = lab->todo_head;
    lab->todo_head = job->next;
    if (lab->todo_head == NULL) lab->todo_tail = NULL;
    uv_mutex_unlock(&lab->idle_lock);
    profile_work(&job->work);
    uv_mutex_lock(&lab->idle_lock);
    job->next = lab->done;
    lab->done = job;
    uv_async_send(&lab->done_async);
  }
  uv_mutex_unlock(&lab->idle_lock);
}

/* Who calls it: libuv, on the loop, after the worker's uv_async_send. */
static void on_jobs_done(uv_async_t *async) {
  lab_t *lab = async->data;
  uv_mutex_lock(&lab->idle_lock);
  profile_job_t *job = lab->done;
  lab->done = NULL;
  uv_mutex_unlock(&lab->idle_lock);
  while (job != NULL) {
    profile_job_t *next = job->next;
    profile_after_work(&job->work, 0);
    job = next;
  }
}

/* A user name goes into the upstream's URL as is, so it must not need escaping. */
static int user_valid(const char *user) {
  size_t i, n = strlen(user);

  if (n == 0 || n > 64) return 0;
  for (i = 0; i < n; i++) {
    char ch = user[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '-' || ch == '_'))
      return 0;
  }
  return 1;
}

/* 200 with the upstream's body, 504 when the call ran out of time, 502 for any other failure. */
static void profile_answer(shell_request_t *req, int status, int timed_out, const char *body,
                           size_t len) {
  if (timed_out)
    shell_respondf(req, 504, "application/json", "{\"error\":\"upstream timed out\"}\n");
  else if (status < 200 || status > 299)
    shell_respondf(req, 502, "application/json", "{\"error\":\"upstream failed\",\"status\":%d}\n",
                   status);
  else
    shell_respond(req, 200, "application/json", body, len);
}

/* Who calls it: libuv, on the loop, once profile_work has returned (status 0), or UV_ECANCELED. */
static void profile_after_work(uv_work_t *work, int status) {
  profile_job_t *job = work->data;

  job->lab->inflight--;
  if (status != 0) job->code = CURLE_ABORTED_BY_CALLBACK;
  profile_answer(job->req, (int)job->status, job->code == CURLE_OPERATION_TIMEDOUT,
                 job->body ? job->body : "", job->body_len);
  free(job->body);
  free(job);
}

/* GET /profile?user=U */
static void profile_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char user[66];
  profile_job_t *job;
  int rc;

  if (shell_query_str(req, "user", user, sizeof user) != 0 || !user_valid(user)) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"user: want ?user= and 1 to 64 of [A-Za-z0-9_-]\"}\n");
    return;
  }
  job = calloc(1, sizeof *job);
  if (job == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}\n");
    return;
  }
  if (snprintf(job->url, sizeof job->url, "%s/profile?id=%s", lab->cfg->upstream, user) >=
      (int)sizeof job->url) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"upstream URL too long\"}\n");
    free(job);
    return;
  }
  job->lab = lab;
  job->req = req;
  job->work.data = job;
  /* The blocking call goes to our worker thread; on_jobs_done answers on the loop. */
  uv_mutex_lock(&lab->idle_lock);
  if (lab->todo_tail) lab->todo_tail->next = job; else lab->todo_head = job;
  lab->todo_tail = job;
  uv_cond_signal(&lab->wake);
  uv_mutex_unlock(&lab->idle_lock);
  (void)rc;
  lab->calls++;
  lab->inflight++;
}

/* GET /health: nothing to wait for. */
static void health_handle(shell_request_t *req, void *data) {
  (void)data;
  shell_respond(req, 200, "text/plain", "ok\n", 3);
}

/* Adds the lab's counters to /debug/stats. */
static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;

  shell_stats_add(shell, "upstream_calls", (double)lab->calls);
  shell_stats_add(shell, "upstream_inflight", (double)lab->inflight);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;

  if (cfg->timeout_ms < 1) {
    fprintf(stderr, "lab06: --timeout-ms must be at least 1\n");
    return UV_EINVAL;
  }
  /* curl_global_init is not thread-safe: done here, on the loop, before any pool thread runs. */
  rc = client_global_init();
  if (rc != 0) return rc;
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->cfg = cfg;
  rc = uv_mutex_init(&lab->idle_lock);
  if (rc != 0) {
    fprintf(stderr, "lab06: uv_mutex_init: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  rc = uv_cond_init(&lab->wake);
  if (rc == 0) rc = uv_async_init(shell_loop(shell), &lab->done_async, on_jobs_done);
  if (rc != 0) {
    fprintf(stderr, "lab06: uv_cond_init/uv_async_init: %s\n", uv_strerror(rc));
    abort();
  }
  lab->done_async.data = lab;
  rc = uv_thread_create(&lab->worker, worker_main, lab);
  if (rc == 0) rc = shell_route(shell, "GET", "/profile", profile_handle, lab);
  if (rc == 0) rc = shell_route(shell, "GET", "/health", health_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab06: setup: %s\n", uv_strerror(rc));
    abort();
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

static void on_async_closed(uv_handle_t *h) {
  lab_t *lab = h->data;
  while (lab->n_idle > 0) curl_easy_cleanup(lab->idle[--lab->n_idle]);
  uv_cond_destroy(&lab->wake);
  uv_mutex_destroy(&lab->idle_lock);
  free(lab);
}

void lab_destroy(lab_t *lab) {
  uv_mutex_lock(&lab->idle_lock);
  lab->stopping = 1;
  uv_cond_signal(&lab->wake);
  uv_mutex_unlock(&lab->idle_lock);
  uv_thread_join(&lab->worker);
  uv_close((uv_handle_t *)&lab->done_async, on_async_closed);
}
