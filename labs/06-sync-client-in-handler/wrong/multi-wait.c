/* WRONG: the loop stays free while calls are out -- caught by: lab06::health_stays_fast */
/* "Use the multi interface, it is non-blocking": then waits for it in the handler. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

#define MAX_BODY (1u << 20)

struct lab {
  const lab_config_t *cfg;
  CURLM *multi;      /* the non-blocking interface */
  CURL *easy;
  uint64_t calls;    /* upstream calls started, for /debug/stats */
  unsigned inflight; /* upstream calls not ended yet */
};

/* The body of one upstream answer, as libcurl hands it over. */
typedef struct body {
  char *data;
  size_t len;
} body_t;

/* Who calls it: libcurl, inside curl_easy_perform, for each piece of the body. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
  body_t *b = userdata;
  size_t n = size * nmemb;
  char *grown;

  if (b->len + n > MAX_BODY) return 0; /* fails the transfer with CURLE_WRITE_ERROR */
  grown = realloc(b->data, b->len + n + 1);
  if (grown == NULL) return 0;
  memcpy(grown + b->len, ptr, n);
  b->data = grown;
  b->len += n;
  b->data[b->len] = '\0';
  return n;
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

/* GET /profile?user=U */
static void profile_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  char user[66], url[512];
  body_t body = {NULL, 0};
  long status = 0;
  CURLcode code;

  if (shell_query_str(req, "user", user, sizeof user) != 0 || !user_valid(user)) {
    shell_respondf(req, 400, "application/json",
                   "{\"error\":\"user: want ?user= and 1 to 64 of [A-Za-z0-9_-]\"}\n");
    return;
  }
  if (snprintf(url, sizeof url, "%s/profile?id=%s", lab->cfg->upstream, user) >= (int)sizeof url) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"upstream URL too long\"}\n");
    return;
  }
  lab->calls++;
  lab->inflight++;
  if (curl_easy_setopt(lab->easy, CURLOPT_URL, url) != CURLE_OK ||
      curl_easy_setopt(lab->easy, CURLOPT_WRITEDATA, &body) != CURLE_OK ||
      curl_multi_add_handle(lab->multi, lab->easy) != CURLM_OK) {
    fprintf(stderr, "lab06: curl setup failed\n");
    code = CURLE_FAILED_INIT;
  } else {
    /* The multi interface is the non-blocking one: drive it until our transfer is done. */
    int running = 1;
    CURLMsg *msg;
    int left;
    code = CURLE_OK;
    while (running > 0) {
      if (curl_multi_perform(lab->multi, &running) != CURLM_OK) break;
      if (running > 0) curl_multi_poll(lab->multi, NULL, 0, 100, NULL);
    }
    while ((msg = curl_multi_info_read(lab->multi, &left)) != NULL)
      if (msg->msg == CURLMSG_DONE) code = msg->data.result;
    curl_multi_remove_handle(lab->multi, lab->easy);
  }
  if (code == CURLE_OK) curl_easy_getinfo(lab->easy, CURLINFO_RESPONSE_CODE, &status);
  lab->inflight--;
  profile_answer(req, (int)status, code == CURLE_OPERATION_TIMEDOUT, body.data ? body.data : "",
                 body.len);
  free(body.data);
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
  rc = client_global_init();
  if (rc != 0) return rc;
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->cfg = cfg;
  lab->multi = curl_multi_init();
  lab->easy = curl_easy_init();
  if (lab->easy == NULL || lab->multi == NULL) {
    fprintf(stderr, "lab06: curl_easy_init/curl_multi_init failed\n");
    if (lab->easy) curl_easy_cleanup(lab->easy);
    if (lab->multi) curl_multi_cleanup(lab->multi);
    free(lab);
    return UV_ENOMEM;
  }
  if (curl_easy_setopt(lab->easy, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
      curl_easy_setopt(lab->easy, CURLOPT_TIMEOUT_MS, cfg->timeout_ms) != CURLE_OK ||
      curl_easy_setopt(lab->easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK) {
    fprintf(stderr, "lab06: curl_easy_setopt failed\n");
    curl_easy_cleanup(lab->easy);
    curl_multi_cleanup(lab->multi);
    free(lab);
    return UV_EINVAL;
  }
  rc = shell_route(shell, "GET", "/profile", profile_handle, lab);
  if (rc == 0) rc = shell_route(shell, "GET", "/health", health_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab06: shell_route: %s\n", uv_strerror(rc));
    curl_easy_cleanup(lab->easy);
    curl_multi_cleanup(lab->multi);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

void lab_destroy(lab_t *lab) {
  /* Every request has been answered, and no call can be out: each one ended inside its handler. */
  curl_easy_cleanup(lab->easy);
  curl_multi_cleanup(lab->multi);
  free(lab);
}
