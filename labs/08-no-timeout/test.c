/* Lab 08 suite: does every upstream call have a time limit, and the whole request a deadline?
 *
 * Built once per variant (build/test/lab08-pitfall, -solution, -exercise, -wrong-*). Each test
 * starts the upstream as a child process and the variant in-process on its own loop thread, then
 * talks to both over real HTTP. A hanging call is the upstream's hang=1 knob (it never answers
 * until its client goes away), so "did it answer at all" is a yes/no; times are checked only
 * against the limits themselves, from below at 90% and from above with hundreds of ms to spare,
 * so a right answer passes on a busy 2-core machine.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

/* What a right answer leaves behind once every request is answered. */
static const char *const zero_fields[] = {"quotes_inflight", "calls_inflight", NULL};

typedef struct env {
  tk_proc_t up;
  tk_lab_t lab;
} env_t;

/* Starts the upstream with up_args, then the lab with --upstream and the options in lab_args. */
static void env_start(env_t *e, const char *const *up_args, const char *const *lab_args) {
  const char *argv[24] = {"--upstream", NULL};
  int n = 2;
  tk_upstream_start(&e->up, up_args);
  argv[1] = e->up.url;
  for (int i = 0; lab_args && lab_args[i] != NULL && n < 23; i++) argv[n++] = lab_args[i];
  argv[n] = NULL;
  tk_lab_start(&e->lab, &LAB_DEF, argv);
}

/* The lab first, while the upstream still hangs what it hangs: a variant that still holds a
 * call fails here, by name, instead of being rescued by the upstream's shutdown. */
static void env_stop(env_t *e) {
  tk_lab_stop(&e->lab, zero_fields);
  tk_upstream_stop(&e->up);
}

static void quote(env_t *e, const char *query, long timeout_ms, tk_resp_t *r) {
  char path[256], url[320];
  snprintf(path, sizeof path, "/quote?%s", query);
  tk_get(tk_lab_url(&e->lab, path, url, sizeof url), timeout_ms, r);
}

/* Polls the upstream's field until it is <= want (or >= when above is set), at most within_ms. */
static double wait_upstream(const tk_proc_t *up, const char *field, double want, int above,
                            double within_ms) {
  double end = tk_now_ms() + within_ms, v;
  for (;;) {
    v = tk_upstream_stat(up, field);
    if (above ? v >= want : v <= want) return v;
    if (tk_now_ms() >= end) return v;
    usleep(10 * 1000);
  }
}

/* Calls that take less than their timeout and, together, less than the deadline are not cut:
 * T 2000, D 3000, lookup 600 ms + price 1700 ms = 2300 ms. (Cutting at D/2 per call, or using T
 * for the whole request, would answer 504 here.) The calls run one after the other. */
Test(lab08, calls_within_limits_succeed, .timeout = 30) {
  static tk_resp_t r;
  env_t e;
  env_start(&e, NULL, (const char *[]){"--call-timeout-ms", "2000", "--deadline-ms", "3000", NULL});
  quote(&e, "sku=sku-1&lookup_ms=600&price_ms=1700", 8000, &r);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  cr_assert_eq(r.status, 200,
               "lookup 600 ms + price 1700 ms, each under the 2000 ms call timeout and 2300 ms in "
               "all, under the 3000 ms deadline: answered %d %s after %.0f ms, want 200. A call "
               "that keeps within both limits must not be cut (is each call's limit min(T, what "
               "is left of D)?)", r.status, r.body, r.total_ms);
  cr_assert(strstr(r.body, "\"sku\":\"sku-1\"") && strstr(r.body, "\"lookup\":{\"path\":\"/lookup\"") &&
                strstr(r.body, "\"price\":{\"path\":\"/price\""),
            "the 200 must combine both upstream bodies, {\"sku\":\"sku-1\",\"lookup\":{...},"
            "\"price\":{...}}; got %s", r.body);
  cr_assert(calls == 2 && r.total_ms >= 0.95 * 2300,
            "the upstream saw %.0f calls and the quote took %.0f ms: want 2 calls, one after the "
            "other (the price call starts when the lookup has answered), so >= 2300 ms",
            calls, r.total_ms);
  env_stop(&e);
}

/* A hanging call ends at the call timeout T, whichever of the two calls it is, no earlier. */
Test(lab08, each_call_has_its_timeout, .timeout = 30) {
  static tk_resp_t rl, rp;
  env_t e;
  env_start(&e, NULL, (const char *[]){"--call-timeout-ms", "300", "--deadline-ms", "5000", NULL});
  quote(&e, "sku=a&hang=lookup", 2000, &rl);
  quote(&e, "sku=a&lookup_ms=20&hang=price", 2000, &rp);
  cr_assert(rl.status == 504 && rl.total_ms >= 270 && rl.total_ms < 1500,
            "the lookup hangs, the call timeout is 300 ms (the deadline 5000 ms): answered %d "
            "after %.0f ms, want 504 after 300 ms (no earlier than 270). %s", rl.status,
            rl.total_ms, rl.status == 0 ? "No answer at all: the call has no timeout, so the "
            "request waits for an upstream that never answers" : "");
  cr_assert(rp.status == 504 && rp.total_ms >= 290 && rp.total_ms < 1500,
            "the lookup answers in 20 ms, then the price call hangs (call timeout 300 ms, "
            "deadline 5000 ms): answered %d after %.0f ms, want 504 after 20 + 300 ms. %s",
            rp.status, rp.total_ms, rp.status == 0 ? "No answer: the second call has no "
            "timeout. Every external call needs one, not only the first" : "");
  env_stop(&e);
}

/* The 504 says which call ran out and which limit ended it. */
Test(lab08, timeout_names_the_call, .timeout = 30) {
  static tk_resp_t rl, rp, rd;
  env_t e;
  env_start(&e, NULL, (const char *[]){"--call-timeout-ms", "300", "--deadline-ms", "600", NULL});
  quote(&e, "sku=a&hang=lookup", 2000, &rl);
  quote(&e, "sku=a&lookup_ms=10&hang=price", 2000, &rp);
  quote(&e, "sku=a&lookup_ms=250&price_ms=250", 3000, &rd); /* 250 + 250 < 600: no timeout */
  cr_assert(rl.status == 504 && strstr(rl.body, "\"call\":\"lookup\"") &&
                strstr(rl.body, "\"limit\":\"call_timeout\"") && strstr(rl.body, "\"error\":\"timeout\""),
            "a hanging lookup answered %d %s; want 504 {\"error\":\"timeout\",\"call\":\"lookup\","
            "\"limit\":\"call_timeout\"}: whoever reads the 504 needs to know which dependency "
            "was slow", rl.status, rl.body);
  cr_assert(rp.status == 504 && strstr(rp.body, "\"call\":\"price\"") &&
                strstr(rp.body, "\"limit\":\"call_timeout\""),
            "a hanging price call answered %d %s; want 504 naming \"call\":\"price\" and "
            "\"limit\":\"call_timeout\"", rp.status, rp.body);
  cr_assert_eq(rd.status, 200, "two 250 ms calls (call timeout 300, deadline 600) answered %d %s, "
               "want 200", rd.status, rd.body);
  env_stop(&e);
}

/* Two calls of less than T each, more than D together: the deadline ends the second one, at D. */
Test(lab08, deadline_covers_both_calls, .timeout = 30) {
  static tk_resp_t r;
  env_t e;
  env_start(&e, NULL, (const char *[]){"--call-timeout-ms", "600", "--deadline-ms", "800", NULL});
  quote(&e, "sku=a&lookup_ms=500&price_ms=500", 3000, &r);
  cr_assert(r.status == 504 && strstr(r.body, "\"call\":\"price\"") &&
                strstr(r.body, "\"limit\":\"deadline\""),
            "lookup 500 ms, then price 500 ms, each under the 600 ms call timeout but 1000 ms "
            "together, past the 800 ms deadline: answered %d %s after %.0f ms; want 504 "
            "{\"call\":\"price\",\"limit\":\"deadline\"}. A timeout per call alone lets N calls "
            "take N x T: the price call may only have what is left of the deadline",
            r.status, r.body, r.total_ms);
  cr_assert(r.total_ms >= 0.95 * 800 && r.total_ms < 800 + 700,
            "the deadline 504 came after %.0f ms, want at the 800 ms deadline (no earlier than "
            "760 ms: the price call may use all that is left)", r.total_ms);
  env_stop(&e);
}

/* A call that ran out is cancelled: its connection closes, the upstream sees it abandoned. */
Test(lab08, timeout_releases_the_call, .timeout = 30) {
  static tk_resp_t r;
  env_t e;
  env_start(&e, NULL, (const char *[]){"--call-timeout-ms", "3000", "--deadline-ms", "400", NULL});
  quote(&e, "sku=a&lookup_ms=20&hang=price", 2500, &r);
  double up_inflight = wait_upstream(&e.up, "inflight", 0, 0, 800);
  double abandoned = tk_upstream_stat(&e.up, "abandoned");
  double calls_inflight = tk_lab_stat(&e.lab, "calls_inflight");
  cr_assert(r.status == 504 && r.total_ms < 400 + 700,
            "the price call hangs, the deadline is 400 ms: answered %d after %.0f ms, want 504 "
            "at 400 ms", r.status, r.total_ms);
  cr_assert(up_inflight == 0 && abandoned == 1 && calls_inflight == 0,
            "0.8 s after the 504 the upstream still had %.0f call(s) in flight (abandoned %.0f, "
            "want 1) and the lab counted %.0f calls running: the answer went, but the call was "
            "left running and holds its connection until its own 3000 ms timeout. When a limit "
            "runs out, cancel the call (client_cancel), then answer", up_inflight, abandoned,
            calls_inflight);
  env_stop(&e);
}

/* A failed call answers 502 at once, naming it; an upstream that is down is a fast 502. */
Test(lab08, failed_call_is_502, .timeout = 30) {
  static tk_resp_t rs, rf, rd, r3;
  env_t e;
  /* Every second request fails with 500: the lookup is request 1 (200), the price request 2. */
  env_start(&e, (const char *[]){"--fail-rate", "0.5", NULL}, NULL);
  quote(&e, "sku=a&lookup_ms=5&price_ms=5", 3000, &rf);
  env_stop(&e);
  env_start(&e, (const char *[]){"--status", "503", NULL}, NULL);
  quote(&e, "sku=a&lookup_ms=5", 3000, &rs);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  env_stop(&e);
  /* A 3xx is not a 2xx either: not the lookup's answer (and never followed). */
  env_start(&e, (const char *[]){"--status", "302", NULL}, NULL);
  quote(&e, "sku=a&lookup_ms=5", 3000, &r3);
  env_stop(&e);
  /* An upstream that is down: a port where nothing listens any more. */
  tk_upstream_start(&e.up, NULL);
  char down[64];
  snprintf(down, sizeof down, "%s", e.up.url);
  tk_upstream_stop(&e.up);
  tk_lab_start(&e.lab, &LAB_DEF, (const char *[]){"--upstream", down, NULL});
  quote(&e, "sku=a", 5000, &rd);
  tk_lab_stop(&e.lab, zero_fields);
  cr_assert(rf.status == 502 && strstr(rf.body, "\"call\":\"price\"") &&
                strstr(rf.body, "\"status\":500"),
            "the price call answered 500: got %d %s, want 502 {\"error\":\"upstream\","
            "\"call\":\"price\",\"status\":500}", rf.status, rf.body);
  cr_assert(rs.status == 502 && strstr(rs.body, "\"call\":\"lookup\"") &&
                strstr(rs.body, "\"status\":503") && calls == 1,
            "the lookup answered 503: got %d %s after %.0f upstream call(s), want 502 naming "
            "\"call\":\"lookup\" and \"status\":503, and no price call after a failed lookup",
            rs.status, rs.body, calls);
  cr_assert(r3.status == 502 && strstr(r3.body, "\"call\":\"lookup\"") &&
                strstr(r3.body, "\"status\":302"),
            "the lookup answered 302: got %d %s; want 502 {\"call\":\"lookup\",\"status\":302}: "
            "any status outside 2xx is a failed call, not only 4xx and 5xx", r3.status, r3.body);
  cr_assert(rd.status == 502 && strstr(rd.body, "\"call\":\"lookup\"") && rd.total_ms < 2000,
            "with the upstream down (nothing listens at %s) the quote answered %d %s after %.0f "
            "ms; want a fast 502 naming \"call\":\"lookup\" (a refused connect is not a timeout)",
            down, rd.status, rd.body, rd.total_ms);
}

/* Missing or malformed parameters: 400 naming the parameter, nothing sent upstream. Both sides
 * of each bound: a SKU of 64 characters and a latency of 3600001 are refused, a SKU of 63 and
 * latencies of 0 and 3600000 are not (an hour-long call is cut by its limit: 504, not 400). */
#define SKU63 "abcdefghij-ABCDEFGHIJ_0123456789abcdefghij-ABCDEFGHIJ_012345678"
Test(lab08, bad_parameters_400, .timeout = 30) {
  static const char *const cases[][2] = {
      {"lookup_ms=5", "sku"},          {"sku=a%20b", "sku"},
      {"sku=", "sku"},                 {"sku=a&lookup_ms=abc", "lookup_ms"},
      {"sku=a&price_ms=-1", "price_ms"}, {"sku=a&price_ms=99999999", "price_ms"},
      {"sku=a&hang=both", "hang"},     {"sku=" SKU63 "x", "sku"},
      {"sku=a&lookup_ms=3600001", "lookup_ms"},
  };
  enum { NBAD = sizeof cases / sizeof cases[0] };
  static tk_resp_t r[NBAD], top, longest;
  env_t e;
  env_start(&e, NULL, NULL);
  for (int i = 0; i < NBAD; i++) quote(&e, cases[i][0], 3000, &r[i]);
  double calls = tk_upstream_stat(&e.up, "requests_total");
  quote(&e, "sku=" SKU63 "&lookup_ms=0&price_ms=0", 3000, &longest);
  quote(&e, "sku=a&lookup_ms=0&price_ms=3600000", 3000, &top);
  for (int i = 0; i < NBAD; i++) {
    char want[64];
    snprintf(want, sizeof want, "\"param\":\"%s\"", cases[i][1]);
    cr_assert(r[i].status == 400 && strstr(r[i].body, want),
              "GET /quote?%s answered %d %s; want 400 {\"error\":\"bad parameter\",%s}",
              cases[i][0], r[i].status, r[i].body, want);
  }
  cr_assert_eq(calls, 0, "bad requests made %.0f upstream calls, want 0", calls);
  cr_assert(longest.status == 200 && strstr(longest.body, "\"sku\":\"" SKU63 "\""),
            "a SKU of 63 characters (the longest lab.h allows) with lookup_ms=0&price_ms=0 "
            "answered %d %s; want 200 naming the SKU", longest.status, longest.body);
  cr_assert(top.status == 504 && strstr(top.body, "\"call\":\"price\""),
            "price_ms=3600000 (the top of its range 0..3600000) answered %d %s; want 504 "
            "{\"call\":\"price\",...}: a valid knob, an hour-long call cut by its time limit",
            top.status, top.body);
  env_stop(&e);
}

/* Little's law under a steady open-loop stream: with a deadline D, in flight <= rate x D however
 * long the dependency hangs. Half the quotes hang in their price call, the rest have a long
 * jitter tail; every quote is answered (200 or 504) by about D, and nothing stays in flight. */
Test(lab08, stream_in_flight_bounded, .timeout = 60) {
  enum { N = 40 };
  static tk_resp_t ok[N], hung[N];
  const double rate = 2 * 20.0, deadline_ms = 300;
  char url_ok[160], url_hung[160];
  env_t e;
  env_start(&e, (const char *[]){"--latency-ms", "20", "--jitter-ms", "200", NULL},
            (const char *[]){"--call-timeout-ms", "250", "--deadline-ms", "300", NULL});
  tk_lab_url(&e.lab, "/quote?sku=a", url_ok, sizeof url_ok);
  tk_lab_url(&e.lab, "/quote?sku=a&hang=price", url_hung, sizeof url_hung);
  tk_stream_t *s = tk_stream_start(url_hung, NULL, N, rate / 2, 2500, hung);
  cr_assert(s != NULL, "could not start the test's stream");
  tk_stream(url_ok, NULL, N, rate / 2, 2500, ok);
  tk_stream_wait(s);
  double peak = tk_lab_stat(&e.lab, "inflight_peak");
  double calls_inflight = tk_lab_stat(&e.lab, "calls_inflight");
  int n200 = 0, n504 = 0, other = 0, unanswered = 0;
  double worst = 0;
  for (int i = 0; i < 2 * N; i++) {
    tk_resp_t *r = i < N ? &ok[i] : &hung[i - N];
    if (r->status == 200) n200++;
    else if (r->status == 504) n504++;
    else if (r->status == 0) unanswered++;
    else other++;
    if (r->status != 0 && r->total_ms > worst) worst = r->total_ms;
  }
  cr_assert(unanswered == 0 && other == 0,
            "of %d quotes at %.0f/s (half of them hang in the price call), %d got no answer "
            "within 2.5 s and %d another status than 200/504; the lab still runs %.0f calls. "
            "Without a deadline every hung call holds its request, socket and memory forever: "
            "in flight grows by rate x hang fraction each second", 2 * N, rate, unanswered,
            other, calls_inflight);
  cr_assert(n200 >= N / 3,
            "only %d of the %d quotes that do not hang answered 200 (jitter 0..200 ms per call, "
            "deadline 300 ms: most fit); limits tighter than the contract's cut good answers",
            n200, N);
  cr_assert(worst < deadline_ms + 1000,
            "the slowest answer took %.0f ms with a %.0f ms deadline", worst, deadline_ms);
  cr_assert(peak <= 1.5 * rate * deadline_ms / 1000 + 8,
            "%.0f quotes were in flight at once at %.0f/s with a %.0f ms deadline: Little's law "
            "allows rate x D = %.0f (the test allows %.0f)", peak, rate, deadline_ms,
            rate * deadline_ms / 1000, 1.5 * rate * deadline_ms / 1000 + 8);
  env_stop(&e);
}

/* /debug/stats counts each outcome. */
Test(lab08, stats_count_each_outcome, .timeout = 30) {
  static tk_resp_t r[3];
  env_t e;
  env_start(&e, NULL, (const char *[]){"--call-timeout-ms", "200", "--deadline-ms", "1000", NULL});
  quote(&e, "sku=a&lookup_ms=5&price_ms=5", 3000, &r[0]);
  quote(&e, "sku=a&hang=lookup", 2000, &r[1]);
  quote(&e, "lookup_ms=5", 3000, &r[2]);
  const char *fields[] = {"quotes_total", "quotes_ok", "quotes_timed_out", "quotes_failed",
                          "calls_started", "calls_timed_out"};
  const double want[] = {3, 1, 1, 0, 3, 1};
  double got[6];
  for (int i = 0; i < 6; i++) got[i] = tk_lab_stat(&e.lab, fields[i]);
  cr_assert(r[0].status == 200 && r[1].status == 504 && r[2].status == 400,
            "a good quote, a hanging lookup and a quote without sku answered %d, %d, %d; want "
            "200, 504, 400", r[0].status, r[1].status, r[2].status);
  for (int i = 0; i < 6; i++)
    cr_assert_eq(got[i], want[i], "/debug/stats %s = %.0f after one 200, one 504 and one 400; "
                 "want %.0f", fields[i], got[i], want[i]);
  env_stop(&e);
}

/* A limit of 0 is not "no limit": the options are checked. */
Test(lab08, rejects_bad_options, .timeout = 30) {
  const char *const bad[][2] = {{"--call-timeout-ms", "0"}, {"--deadline-ms", "0"},
                                {"--deadline-ms", "-5"}};
  for (int i = 0; i < 3; i++) {
    labrun_t *run = NULL;
    int rc = labrun_start(&run, &LAB_DEF, (const char *[]){bad[i][0], bad[i][1], NULL});
    if (rc == 0) labrun_stop(run, 5000, NULL);
    cr_assert_neq(rc, 0, "the lab started with %s %s; lab_create must refuse a limit below 1 ms "
                  "(UV_EINVAL: a usage error)", bad[i][0], bad[i][1]);
  }
}
