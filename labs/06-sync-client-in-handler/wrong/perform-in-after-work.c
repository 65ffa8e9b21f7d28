/* WRONG: the loop stays free while calls are out -- caught by: lab06::health_stays_fast */
/* uv_queue_work, but the blocking call ended up in the after-work callback, which runs on the loop. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

#define MAX_BODY (1u << 20)
#define MAX_IDLE_EASY 64

struct lab {
  const lab_config_t *cfg;
  uv_mutex_t idle_lock;         /* pool threads take and give back easy handles */
  CURL *idle[MAX_IDLE_EASY];    /* easy handles not in use, kept for their open connections */
  int n_idle;
  uint64_t calls;    /* upstream calls started, for /debug/stats (loop thread only) */
  unsigned inflight; /* upstream calls queued or running, not ended yet (loop thread only) */
};

/* One /profile request: filled in by a pool thread, answered on the loop. */
typedef struct profile_job {
  uv_work_t work;
  lab_t *lab;
  shell_request_t *req;
  char url[512];
  char *body;
  size_t body_len;
  long status;
  CURLcode code;
} profile_job_t;

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

/* Who calls it: a libuv pool thread. The request is prepared there, then the call is made. */
static void profile_work(uv_work_t *work) {
  profile_job_t *job = work->data;
  job->code = CURLE_OK;
}

static void profile_call(profile_job_t *job) {
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

  if (status == 0) profile_call(job); /* the work is done: now make the call */
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
  /* OFFLOAD: the blocking call runs on a pool thread; profile_after_work answers on the loop. */
  rc = uv_queue_work(shell_request_loop(req), &job->work, profile_work, profile_after_work);
  if (rc != 0) {
    fprintf(stderr, "lab06: uv_queue_work: %s\n", uv_strerror(rc));
    profile_answer(req, 0, 0, NULL, 0);
    free(job);
    return;
  }
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
  rc = shell_route(shell, "GET", "/profile", profile_handle, lab);
  if (rc == 0) rc = shell_route(shell, "GET", "/health", health_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab06: shell_route: %s\n", uv_strerror(rc));
    uv_mutex_destroy(&lab->idle_lock);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) {
  /* Every request has been answered, so every job's after-work has run: no pool thread holds an
   * easy handle any more. */
  while (lab->n_idle > 0) curl_easy_cleanup(lab->idle[--lab->n_idle]);
  uv_mutex_destroy(&lab->idle_lock);
  free(lab);
}
