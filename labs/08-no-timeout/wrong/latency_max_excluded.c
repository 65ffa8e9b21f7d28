/* WRONG: the latency knobs reject 3600000, the top of their range 0..3600000 (>= where > belongs) -- caught by: lab08::bad_parameters_400 */
/* Lab 08, a wrong answer: an off-by-one at the top of the knob's range.
 * "At most an hour" written as v >= 3600000: lookup_ms=3600000 is answered 400 naming the
 * parameter though lab.h's range includes it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lab.h"

enum { LOOKUP, PRICE, NO_CALL };
static const char *const call_name[] = {"lookup", "price"};

struct lab {
  shell_t *shell;
  const lab_config_t *cfg;
  client_t *client; /* one connection cache for every call */
  uint64_t quotes_total, quotes_ok, quotes_timed_out, quotes_failed, quotes_inflight;
  uint64_t calls_started, calls_inflight, calls_timed_out;
};

/* One /quote request, from its handler to its answer. */
typedef struct quote {
  lab_t *lab;
  shell_request_t *req;
  char sku[80];
  long latency_ms[2]; /* the lookup_ms / price_ms knobs; -1: the upstream's own latency */
  int hang;           /* the call that gets hang=1, or NO_CALL */
  int stage;          /* the call running now: LOOKUP, then PRICE */
  int cut_by_deadline; /* the running call's limit is what is left of the deadline, not T */
  char *lookup_body;  /* the lookup's answer, kept for the combined one */
} quote_t;

/* A SKU goes into the upstream's URL as is, so it must not need escaping. */
static int sku_valid(const char *sku) {
  size_t n = strlen(sku);
  if (n == 0 || n > 63) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((sku[i] >= 'a' && sku[i] <= 'z') || (sku[i] >= 'A' && sku[i] <= 'Z') ||
          (sku[i] >= '0' && sku[i] <= '9') || sku[i] == '-' || sku[i] == '_'))
      return 0;
  return 1;
}

/* A latency knob: absent (*out = -1) or an integer in 0..3600000. Returns -1 when malformed. */
static int knob_ms(shell_request_t *req, const char *name, long *out) {
  char buf[16], *end;
  *out = -1;
  if (shell_query_str(req, name, buf, sizeof buf) != 0) return 0;
  long v = strtol(buf, &end, 10);
  if (buf[0] == '\0' || *end != '\0' || v < 0 || v >= 3600000) return -1;
  *out = v;
  return 0;
}

/* Answers, counts and frees the quote. */
static void quote_answer(quote_t *q, int status, const char *body) {
  lab_t *lab = q->lab;
  shell_respond(q->req, status, "application/json", body, strlen(body));
  lab->quotes_inflight--;
  if (status == 200) lab->quotes_ok++;
  else if (status == 504) lab->quotes_timed_out++;
  else lab->quotes_failed++;
  free(q->lookup_body);
  free(q);
}

static void quote_fail(quote_t *q, int which, int status) {
  char body[128];
  snprintf(body, sizeof body, "{\"error\":\"upstream\",\"call\":\"%s\",\"status\":%d}",
           call_name[which], status);
  quote_answer(q, 502, body);
}

static void quote_timed_out(quote_t *q, int which) {
  char body[128];
  snprintf(body, sizeof body, "{\"error\":\"timeout\",\"call\":\"%s\",\"limit\":\"%s\"}",
           call_name[which], q->cut_by_deadline ? "deadline" : "call_timeout");
  quote_answer(q, 504, body);
}

static void quote_on_call(client_transfer_t *t, const client_result_t *res, void *data);

/* Starts the lookup or the price call. Returns 0, 1 when the deadline has already run out (the
 * quote is answered), or -1 when the call could not start. */
static int quote_call(quote_t *q, int which) {
  lab_t *lab = q->lab;
  char url[512], latency[32] = "";
  /* The deadline counts from the request's arrival, so time spent in the first call (and in the
   * loop) comes out of the second call's budget. */
  long elapsed_ms = (long)((uv_hrtime() - shell_request_start_ns(q->req)) / 1000000u);
  long left_ms = lab->cfg->deadline_ms - elapsed_ms;
  if (left_ms < 1) {
    q->cut_by_deadline = 1;
    quote_timed_out(q, which);
    return 1;
  }
  q->cut_by_deadline = left_ms < lab->cfg->call_timeout_ms;
  if (q->latency_ms[which] >= 0)
    snprintf(latency, sizeof latency, "&latency_ms=%ld", q->latency_ms[which]);
  if (snprintf(url, sizeof url, "%s/%s?id=%s%s%s", lab->cfg->upstream, call_name[which], q->sku,
               latency, q->hang == which ? "&hang=1" : "") >= (int)sizeof url) {
    fprintf(stderr, "lab08: upstream URL too long\n");
    return -1;
  }
  q->stage = which;
  /* The call's limit: T, or less when the deadline comes first. When it runs out libcurl ends
   * the transfer and closes its connection (a half-read response cannot be reused). */
  if (client_get(lab->client, url, q->cut_by_deadline ? left_ms : lab->cfg->call_timeout_ms,
                 quote_on_call, q) == NULL) {
    fprintf(stderr, "lab08: client_get(%s) failed\n", url);
    return -1;
  }
  lab->calls_started++;
  lab->calls_inflight++;
  return 0;
}

/* Who calls it: the client, on the loop, when the lookup or the price call has ended. */
static void quote_on_call(client_transfer_t *t, const client_result_t *res, void *data) {
  quote_t *q = data;
  lab_t *lab = q->lab;
  (void)t;
  lab->calls_inflight--;
  if (res->timed_out) {
    lab->calls_timed_out++;
    quote_timed_out(q, q->stage);
    return;
  }
  if (res->error != NULL || res->status < 200 || res->status > 299) {
    quote_fail(q, q->stage, res->status);
    return;
  }
  if (q->stage == LOOKUP) {
    q->lookup_body = strndup(res->body, res->body_len);
    if (q->lookup_body == NULL) {
      quote_answer(q, 500, "{\"error\":\"out of memory\"}");
      return;
    }
    if (quote_call(q, PRICE) < 0) quote_fail(q, PRICE, 0);
    return;
  }
  size_t len = strlen(q->lookup_body) + res->body_len + 128;
  char *body = malloc(len);
  if (body == NULL) {
    quote_answer(q, 500, "{\"error\":\"out of memory\"}");
    return;
  }
  snprintf(body, len, "{\"sku\":\"%s\",\"lookup\":%s,\"price\":%.*s}", q->sku, q->lookup_body,
           (int)res->body_len, res->body);
  quote_answer(q, 200, body);
  free(body);
}

/* GET /quote?sku=X[&lookup_ms=N][&price_ms=N][&hang=lookup|price] */
static void quote_handle(shell_request_t *req, void *data) {
  lab_t *lab = data;
  quote_t *q;
  char sku[80], hang[16] = "";
  long latency[2];
  const char *bad = NULL;

  lab->quotes_total++;
  if (shell_query_str(req, "sku", sku, sizeof sku) != 0 || !sku_valid(sku)) bad = "sku";
  else if (knob_ms(req, "lookup_ms", &latency[LOOKUP]) != 0) bad = "lookup_ms";
  else if (knob_ms(req, "price_ms", &latency[PRICE]) != 0) bad = "price_ms";
  else if (shell_query_str(req, "hang", hang, sizeof hang) != 0) hang[0] = '\0';
  else if (strcmp(hang, "lookup") != 0 && strcmp(hang, "price") != 0) bad = "hang";
  if (bad != NULL) {
    shell_respondf(req, 400, "application/json", "{\"error\":\"bad parameter\",\"param\":\"%s\"}",
                   bad);
    return;
  }
  q = calloc(1, sizeof *q);
  if (q == NULL) {
    shell_respondf(req, 500, "application/json", "{\"error\":\"out of memory\"}");
    return;
  }
  q->lab = lab;
  q->req = req;
  snprintf(q->sku, sizeof q->sku, "%s", sku);
  q->latency_ms[LOOKUP] = latency[LOOKUP];
  q->latency_ms[PRICE] = latency[PRICE];
  q->hang = strcmp(hang, "lookup") == 0 ? LOOKUP : strcmp(hang, "price") == 0 ? PRICE : NO_CALL;
  lab->quotes_inflight++;
  if (quote_call(q, LOOKUP) < 0) quote_fail(q, LOOKUP, 0);
}

static void lab_on_stats(shell_t *shell, void *data) {
  lab_t *lab = data;
  shell_stats_add(shell, "quotes_total", (double)lab->quotes_total);
  shell_stats_add(shell, "quotes_ok", (double)lab->quotes_ok);
  shell_stats_add(shell, "quotes_timed_out", (double)lab->quotes_timed_out);
  shell_stats_add(shell, "quotes_failed", (double)lab->quotes_failed);
  shell_stats_add(shell, "quotes_inflight", (double)lab->quotes_inflight);
  shell_stats_add(shell, "calls_started", (double)lab->calls_started);
  shell_stats_add(shell, "calls_inflight", (double)lab->calls_inflight);
  shell_stats_add(shell, "calls_timed_out", (double)lab->calls_timed_out);
}

int lab_create(lab_t **out, shell_t *shell, const lab_config_t *cfg) {
  lab_t *lab;
  int rc;

  if (cfg->call_timeout_ms < 1 || cfg->deadline_ms < 1) {
    fprintf(stderr, "lab08: --call-timeout-ms and --deadline-ms must be at least 1\n");
    return UV_EINVAL;
  }
  lab = calloc(1, sizeof *lab);
  if (lab == NULL) return UV_ENOMEM;
  lab->shell = shell;
  lab->cfg = cfg;
  rc = client_create(&lab->client, shell_loop(shell), NULL);
  if (rc != 0) {
    fprintf(stderr, "lab08: client_create: %s\n", uv_strerror(rc));
    free(lab);
    return rc;
  }
  rc = shell_route(shell, "GET", "/quote", quote_handle, lab);
  if (rc != 0) {
    fprintf(stderr, "lab08: shell_route: %s\n", uv_strerror(rc));
    client_destroy(lab->client);
    free(lab);
    return rc;
  }
  shell_set_stats_hook(shell, lab_on_stats, lab);
  *out = lab;
  return 0;
}

/* Every request has been answered, so no call is running: the client has nothing to drop. */
void lab_destroy(lab_t *lab) {
  client_destroy(lab->client);
  free(lab);
}
