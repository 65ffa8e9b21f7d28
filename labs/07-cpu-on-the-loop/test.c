/* Lab 07 suite: does the CPU work stay off the loop, run in parallel, and stay bounded?
 *
 * The lab variant runs in-process on its own loop thread. Every test first measures the CPU time
 * of one job on this machine (the answer's cpu_ms: CPU time, so a busy machine does not change
 * it) and sizes its jobs in multiples of it, so every threshold is a ratio to a job's own cost:
 * a /health probe, the loop lag, when the first of four parallel jobs finishes against the last.
 * Digests are checked against this file's own SHA-256 (not the lab's hashjob.h).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "labrt.h"
#include "testkit.h"

static tk_lab_t lab;
static const char *const zero_fields[] = {"hash_jobs", NULL};

/* ---- SHA-256 written from FIPS 180-4 section 6.2, independently of hashjob.h ---- */

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

/* Messages of at most 119 bytes (two blocks), which is all this suite hashes. */
static void sha256(const unsigned char *msg, size_t len, unsigned char digest[32]) {
  uint32_t H[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char padded[128] = {0};
  size_t blocks = len + 9 <= 64 ? 1 : 2;
  memcpy(padded, msg, len);
  padded[len] = 0x80;
  for (int i = 0; i < 8; i++) padded[blocks * 64 - 1 - i] = (unsigned char)((uint64_t)len * 8 >> (8 * i));
  for (size_t blk = 0; blk < blocks; blk++) {
    uint32_t W[64], T[8];
    const unsigned char *M = padded + 64 * blk;
    for (int t = 0; t < 64; t++) {
      if (t < 16)
        W[t] = ((uint32_t)M[4 * t] << 24) | ((uint32_t)M[4 * t + 1] << 16) |
               ((uint32_t)M[4 * t + 2] << 8) | (uint32_t)M[4 * t + 3];
      else
        W[t] = (ROTR(W[t - 2], 17) ^ ROTR(W[t - 2], 19) ^ (W[t - 2] >> 10)) + W[t - 7] +
               (ROTR(W[t - 15], 7) ^ ROTR(W[t - 15], 18) ^ (W[t - 15] >> 3)) + W[t - 16];
    }
    memcpy(T, H, sizeof T); /* a..h */
    for (int t = 0; t < 64; t++) {
      uint32_t T1 = T[7] + (ROTR(T[4], 6) ^ ROTR(T[4], 11) ^ ROTR(T[4], 25)) +
                    ((T[4] & T[5]) ^ (~T[4] & T[6])) + K256[t] + W[t];
      uint32_t T2 = (ROTR(T[0], 2) ^ ROTR(T[0], 13) ^ ROTR(T[0], 22)) +
                    ((T[0] & T[1]) ^ (T[0] & T[2]) ^ (T[1] & T[2]));
      memmove(T + 1, T, 7 * sizeof T[0]);
      T[4] += T1;
      T[0] = T1 + T2;
    }
    for (int i = 0; i < 8; i++) H[i] += T[i];
  }
  for (int i = 0; i < 32; i++) digest[i] = (unsigned char)(H[i / 4] >> (24 - 8 * (i % 4)));
}

/* The digest the contract promises for input and cost, in hex. */
static void expected_digest(const char *input, long cost, char hex[65]) {
  unsigned char d[32];
  sha256((const unsigned char *)input, strlen(input), d);
  for (long i = 1; i < cost; i++) sha256(d, 32, d);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

/* ---- helpers ---- */

static void start(const char *max_jobs, const char *max_cost) {
  const char *args[] = {"--max-jobs", max_jobs, "--max-cost", max_cost, NULL};
  tk_lab_start(&lab, &LAB_DEF, args);
}

static const char *hash_url(long cost, const char *input, char *out, size_t len) {
  if (input)
    snprintf(out, len, "%s/hash?cost=%ld&input=%s", lab.url, cost, input);
  else
    snprintf(out, len, "%s/hash?cost=%ld", lab.url, cost);
  return out;
}

/* A 200 whose body carries the right digest for input and cost. */
static int answer_is_right(const tk_resp_t *r, const char *input, long cost) {
  char hex[65], want[96];
  if (r->status != 200) return 0;
  expected_digest(input, cost, hex);
  snprintf(want, sizeof want, "\"digest\":\"%s\"", hex);
  return strstr(r->body, want) != NULL;
}

/* The cost of a job of about target_ms of CPU time on this machine, from one measured job. */
static long cost_for_ms(double target_ms) {
  const long probe_cost = 20000;
  tk_resp_t r;
  char url[160];
  cr_assert_eq(tk_get(hash_url(probe_cost, NULL, url, sizeof url), 30000, &r), 0,
               "GET /hash?cost=%ld got no answer", probe_cost);
  double cpu = tk_json_number(r.body, "cpu_ms");
  cr_assert(r.status == 200 && cpu > 0, "GET /hash?cost=%ld answered %d \"%s\": want 200 with "
            "cpu_ms, the job's CPU time", probe_cost, r.status, r.body);
  long cost = (long)(probe_cost * target_ms / cpu);
  return cost < 1 ? 1 : cost;
}

static double job_cpu_ms(const tk_resp_t *r) { return tk_json_number(r->body, "cpu_ms"); }

/* ---- tests ---- */

Test(lab07, digest_is_right, .timeout = 30) {
  static const struct { const char *input; long cost; } cases[] = {
      {"abc", 1}, {"abc", 2}, {NULL, 1000}, {"Z-9_x", 777}, {"loopholes", 1}};
  unsigned char d[32];
  tk_resp_t r;
  char url[160], want[64];

  sha256((const unsigned char *)"abc", 3, d);
  cr_assert(d[0] == 0xba && d[1] == 0x78 && d[31] == 0xad, "the suite's own SHA-256 is broken");
  start("8", "1000000");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *input = cases[i].input ? cases[i].input : "loopholes";
    tk_get(hash_url(cases[i].cost, cases[i].input, url, sizeof url), 10000, &r);
    cr_expect(answer_is_right(&r, input, cases[i].cost), "GET %s answered %d \"%s\": want 200 "
              "with the digest of %ld rounds of SHA-256 over \"%s\" (hash_job in hashjob.h)",
              url + strlen(lab.url), r.status, r.body, cases[i].cost, input);
    snprintf(want, sizeof want, "\"cost\":%ld", cases[i].cost);
    cr_expect(strstr(r.body, want) != NULL, "the answer \"%s\" should say %s", r.body, want);
  }
  tk_lab_stop(&lab, zero_fields);
}

/* 8 different inputs at once, three rounds: each answer must be its own request's digest. Jobs
 * of equal cost started together end close together, so a result kept anywhere but in the job
 * itself is read by the wrong request's after-work callback. */
Test(lab07, answers_match_requests, .timeout = 60) {
  static tk_resp_t resp[8];
  static char inputs[8][32]; /* "in-R-I" with two ints: room for any int, as -O1 checks */
  char urls[8][160];
  tk_stream_t *s[8];

  start("16", "1000000");
  long cost = cost_for_ms(20);
  for (int round = 0; round < 3; round++) {
    int right = 0;
    for (int i = 0; i < 8; i++) {
      snprintf(inputs[i], sizeof inputs[i], "in-%d-%d", round, i);
      hash_url(cost, inputs[i], urls[i], sizeof urls[i]);
      s[i] = tk_stream_start(urls[i], NULL, 1, 1000, 30000, &resp[i]); /* each due now */
      cr_assert_not_null(s[i], "could not start request %d", i);
    }
    for (int i = 0; i < 8; i++) tk_stream_wait(s[i]);
    for (int i = 0; i < 8; i++) right += answer_is_right(&resp[i], inputs[i], cost);
    cr_assert_eq(right, 8, "round %d: only %d of 8 concurrent /hash with different inputs got the "
                 "digest of their own input: a result went to the wrong request (a buffer shared "
                 "between jobs?) or failed", round + 1, right);
  }
  tk_lab_stop(&lab, zero_fields);
}

/* 4 jobs sent at once (the pool's size). Run in parallel, on libuv's pool or threads of one's
 * own, two or more of this process's threads are runnable (computing, or waiting for a core)
 * while the jobs last; run one after the other (on the loop, behind one lock, on one thread) one
 * is, and the others sleep on the lock or the queue. A clock cannot tell those apart on a
 * loaded machine (a pool of 2 ends its second pair late, a stalled test reads the first answer
 * late); thread states can: a busy machine makes a runnable thread wait, and it is still
 * runnable. Sampled every 2 ms on a loaded machine: a pool of 4 kept >= 2 runnable in 91-99% of
 * the samples, a pool of 2 (its threads' shares uneven, one pair ends first) in 66-86%, the
 * jobs in turn in 1-6% (the loop or the test thread busy at that instant). The bound is 30%. */
Test(lab07, jobs_overlap, .timeout = 90) {
  enum { N = 4 };
  static tk_resp_t resp[N];
  char url[160];
  int hits = 0, samples = 0;

  start("8", "1000000");
  long cost = cost_for_ms(200);
  for (int attempt = 0; attempt < 2; attempt++) {
    int ok = 0;
    tk_runnable_t *sampler = tk_runnable_start(2);
    cr_assert_not_null(sampler, "could not start the thread sampler");
    tk_get_many(hash_url(cost, "overlap", url, sizeof url), N, 30000, resp);
    hits = tk_runnable_stop(sampler, 2, &samples);
    cr_log_info("jobs_overlap: >= 2 runnable threads in %d of %d samples", hits, samples);
    for (int i = 0; i < N; i++) ok += answer_is_right(&resp[i], "overlap", cost);
    cr_assert_eq(ok, N, "only %d of %d concurrent /hash got 200 with the right digest", ok, N);
    if (samples > 0 && hits >= 0.3 * samples) break;
  }
  cr_expect(samples > 0 && hits >= 0.3 * samples, "%d jobs sent together: two or more threads "
            "were runnable in %d of %d samples of the process's threads (want >= 30%%): "
            "the jobs ran in turn. On the loop (or behind one lock, or on one thread) they "
            "cannot run in parallel; uv_queue_work runs them on the pool's threads", N, hits,
            samples);
  tk_lab_stop(&lab, zero_fields);
}

/* Five probes during a stream of 200 ms jobs at 7.5/s for 3 s: more than one core can do, so a
 * loop that computes is never free while the stream lasts (a burst would not do: the first probe
 * would wait for all of it, and the next ones would find the loop idle). A probe is either GET
 * /health (its latency) or GET /debug/stats (the loop lag's p99 over the last second: one stall
 * of the whole machine, a busy neighbour, moves a maximum, not the p99 of ~200 ticks a second).
 * Returns the median of the five. */
static double probe_under_load(int read_lag) {
  static tk_resp_t resp[23];
  static tk_resp_t probe[5];
  double v[5];
  char url[160], probe_url[96];

  long cost = cost_for_ms(200);
  tk_stream_t *s = tk_stream_start(hash_url(cost, NULL, url, sizeof url), NULL, 23, 7.5, 60000, resp);
  cr_assert_not_null(s, "could not start the /hash stream");
  tk_lab_url(&lab, read_lag ? "/debug/stats" : "/health", probe_url, sizeof probe_url);
  /* The probes are an open-loop stream too, one every 200 ms from 1 s on: each is due at its
   * time whatever happened to the one before, so a probe that waits cannot push the next ones
   * past the end of the load. They start once a backlog has formed: in the first second a loop
   * that computes runs about one job per turn, and a probe then waits for half a job on average
   * (~100 ms, too near the bound to tell); later each turn runs every job that arrived during the
   * last one, and a probe waits for several. */
  usleep(1000 * 1000);
  tk_stream(probe_url, NULL, 5, 5, 60000, probe);
  for (int i = 0; i < 5; i++) {
    v[i] = 1e9;
    if (probe[i].status != 200) continue;
    if (read_lag)
      v[i] = tk_json_number(probe[i].body, "loop_lag_p99_ms");
    else if (strcmp(probe[i].body, "ok\n") == 0)
      v[i] = probe[i].total_ms;
    if (isnan(v[i])) v[i] = 1e9;
  }
  tk_stream_wait(s);
  return tk_percentile(v, 5, 50);
}

Test(lab07, health_stays_fast, .timeout = 60) {
  start("64", "1000000");
  double health = probe_under_load(0);
  cr_expect_lt(health, 100.0, "GET /health took %.0f ms (median of 5; want 200 \"ok\\n\" in well "
               "under 100 ms) during a stream of jobs of 200 ms of CPU each: it waited for them. "
               "The job runs on the loop thread; hand it to uv_queue_work", health);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab07, loop_lag_stays_small, .timeout = 60) {
  start("64", "1000000");
  double lag = probe_under_load(1);
  cr_expect_lt(lag, 100.0, "loop lag p99 %.0f ms (median of 5 readings; want < 100) during a stream "
               "of jobs of 200 ms of CPU each: a job ran on the loop thread and held it for its "
               "whole duration", lag);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab07, bounded_jobs, .timeout = 60) {
  static tk_resp_t resp[10];
  char url[160];
  int ok = 0, busy = 0;
  double busy_max_ms = 0, ok_min_ms = 1e9;

  start("4", "1000000");
  long cost = cost_for_ms(300);
  tk_get_many(hash_url(cost, "bound", url, sizeof url), 10, 60000, resp);
  for (int i = 0; i < 10; i++) {
    if (answer_is_right(&resp[i], "bound", cost)) {
      ok++;
      if (resp[i].total_ms < ok_min_ms) ok_min_ms = resp[i].total_ms;
    } else if (resp[i].status == 503) {
      busy++;
      if (resp[i].total_ms > busy_max_ms) busy_max_ms = resp[i].total_ms;
    }
  }
  cr_expect(ok == 4 && busy == 6, "10 jobs of ~300 ms at once with --max-jobs 4: %d got 200, %d "
            "got 503; want exactly 4 and 6. Accept while fewer than max_jobs are accepted and "
            "unanswered (queued or running), refuse the rest", ok, busy);
  if (busy > 0)
    cr_expect_lt(busy_max_ms, ok_min_ms / 2, "a 503 took %.0f ms, the fastest 200 %.0f ms: a "
                 "refusal must come at once, without computing or waiting for a slot",
                 busy_max_ms, ok_min_ms);
  double peak = tk_lab_stat(&lab, "hash_jobs_peak"), refused = tk_lab_stat(&lab, "hash_refused");
  cr_expect(peak == 4 && refused == 6, "/debug/stats: hash_jobs_peak %.0f, hash_refused %.0f; "
            "want 4 and 6", peak, refused);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab07, refuses_with_retry_after, .timeout = 60) {
  static tk_resp_t resp[5];
  char url[160];
  int busy = 0;

  start("2", "1000000");
  long cost = cost_for_ms(300);
  tk_get_many(hash_url(cost, NULL, url, sizeof url), 5, 60000, resp);
  for (int i = 0; i < 5; i++) {
    if (resp[i].status != 503) continue;
    busy++;
    cr_expect_str_eq(resp[i].retry_after, "1", "a 503 came with Retry-After \"%s\", want \"1\": "
                     "say when to try again (shell_respond_ex with \"Retry-After: 1\\r\\n\")",
                     resp[i].retry_after);
    cr_expect(strstr(resp[i].body, "max-jobs") != NULL, "the 503's body \"%s\" should name the "
              "limit (--max-jobs)", resp[i].body);
  }
  cr_expect_eq(busy, 3, "5 jobs of ~300 ms at once with --max-jobs 2: %d refused, want 3", busy);
  tk_lab_stop(&lab, zero_fields);
}

/* Answered jobs give their slots back, again and again. */
Test(lab07, slots_come_back, .timeout = 60) {
  static tk_resp_t resp[2];
  char url[160];

  start("2", "1000000");
  long cost = cost_for_ms(40);
  for (int round = 0; round < 4; round++) {
    tk_get_many(hash_url(cost, "again", url, sizeof url), 2, 30000, resp);
    int ok = answer_is_right(&resp[0], "again", cost) + answer_is_right(&resp[1], "again", cost);
    cr_expect_eq(ok, 2, "round %d: %d of 2 jobs with --max-jobs 2 got 200 (status %d and %d) "
                 "after the previous ones were answered: a slot was not given back", round + 1,
                 ok, resp[0].status, resp[1].status);
  }
  tk_lab_stop(&lab, zero_fields);
}

Test(lab07, bad_cost_400, .timeout = 60) {
  static const char *bad[] = {"/hash", "/hash?cost=", "/hash?cost=abc", "/hash?cost=12x",
                              "/hash?cost=0", "/hash?cost=-5", "/hash?cost=5001",
                              "/hash?cost=1e3", "/hash?cost=%205", "/hash?cost=+5",
                              "/hash?cost=99999999999999999999", "/hash?input=abc"};
  tk_resp_t r;
  char url[200];

  start("4", "5000");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tk_get(tk_lab_url(&lab, bad[i], url, sizeof url), 10000, &r);
    cr_expect_eq(r.status, 400, "GET %s answered %d, want 400 (cost: an integer from 1 to "
                 "--max-cost 5000)", bad[i], r.status);
    cr_expect(strstr(r.body, "cost") != NULL, "GET %s: the 400's body \"%s\" should name the "
              "parameter (cost)", bad[i], r.body);
  }
  double done = tk_lab_stat(&lab, "hash_done");
  cr_expect_eq(done, 0, "hash_done = %.0f after bad requests only: a 400 must start no job", done);
  /* The other side of each bound. */
  tk_get(hash_url(1, "edge", url, sizeof url), 10000, &r);
  cr_expect(answer_is_right(&r, "edge", 1), "cost=1 got %d \"%s\", want 200 and its digest",
            r.status, r.body);
  tk_get(hash_url(5000, "edge", url, sizeof url), 10000, &r);
  cr_expect(answer_is_right(&r, "edge", 5000), "cost=5000 with --max-cost 5000 got %d \"%s\", "
            "want 200 and its digest", r.status, r.body);
  tk_lab_stop(&lab, zero_fields);
}

Test(lab07, bad_input_400, .timeout = 60) {
  static const char *bad[] = {"/hash?cost=10&input=", "/hash?cost=10&input=a.b",
                              "/hash?cost=10&input=a%20b",
                              "/hash?cost=10&input=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                              "aaaaaaaaaaaaaaa"}; /* 65 */
  static tk_resp_t resp[1];
  tk_resp_t r;
  char url[200];

  start("1", "1000000");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tk_get(tk_lab_url(&lab, bad[i], url, sizeof url), 10000, &r);
    cr_expect_eq(r.status, 400, "GET %s answered %d, want 400", bad[i], r.status);
    cr_expect(strstr(r.body, "input") != NULL, "GET %s: the 400's body \"%s\" should name the "
              "parameter (input)", bad[i], r.body);
  }
  /* 64 characters is a valid input; and the 400s took no slot of --max-jobs 1. */
  const char *in64 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  tk_get_many(hash_url(10, in64, url, sizeof url), 1, 10000, resp);
  cr_expect(answer_is_right(&resp[0], in64, 10), "a 64-character input after four 400s got %d "
            "\"%s\", want 200 and its digest (1 to 64 are allowed; a 400 takes no slot)",
            resp[0].status, resp[0].body);
  tk_lab_stop(&lab, zero_fields);
}

/* A steady stream (half a core's worth): every answer right, every job counted with its CPU. */
Test(lab07, stream_counts_every_job, .timeout = 60) {
  static tk_resp_t resp[15];
  char url[160];
  int ok = 0;
  double cpu_sum = 0;

  start("64", "1000000");
  long cost = cost_for_ms(100);
  double done_before = tk_lab_stat(&lab, "hash_done"), cpu_before = tk_lab_stat(&lab, "hash_cpu_ms");
  tk_stream(hash_url(cost, "steady", url, sizeof url), NULL, 15, 5, 30000, resp);
  for (int i = 0; i < 15; i++) {
    ok += answer_is_right(&resp[i], "steady", cost);
    if (resp[i].status == 200) cpu_sum += job_cpu_ms(&resp[i]);
  }
  double done = tk_lab_stat(&lab, "hash_done") - done_before;
  double cpu = tk_lab_stat(&lab, "hash_cpu_ms") - cpu_before;
  cr_expect_eq(ok, 15, "%d of 15 requests of a steady 5/s stream got 200 with the right digest",
               ok);
  cr_expect(done == 15 && fabs(cpu - cpu_sum) < 1.0, "/debug/stats counted hash_done %.0f and "
            "hash_cpu_ms %.1f for the stream; the 15 answers say 15 and %.1f", done, cpu, cpu_sum);
  tk_lab_stop(&lab, zero_fields);
}

/* /debug/stats while 3 jobs run: it answers, and counts them. */
Test(lab07, stats_count_jobs, .timeout = 60) {
  static tk_resp_t resp[3];
  char url[160];

  start("8", "1000000");
  long cost = cost_for_ms(300);
  double done0 = tk_lab_stat(&lab, "hash_done");
  tk_stream_t *s = tk_stream_start(hash_url(cost, NULL, url, sizeof url), NULL, 3, 1000, 30000, resp);
  cr_assert_not_null(s, "could not start the /hash requests");
  /* Read until the 3 are counted (a loaded machine may take a while to send them), at the
   * latest 200 ms in: long before a job of ~300 ms ends. */
  double t0 = tk_now_ms(), jobs = 0, stats_ms = 0;
  do {
    usleep(20 * 1000);
    double t1 = tk_now_ms();
    jobs = tk_lab_stat(&lab, "hash_jobs");
    stats_ms = tk_now_ms() - t1;
  } while (jobs != 3 && tk_now_ms() - t0 < 200);
  double at = tk_now_ms() - t0;
  tk_stream_wait(s);
  cr_expect(jobs == 3, "%.0f ms into 3 jobs of ~300 ms, /debug/stats said hash_jobs = %.0f (it "
            "answered in %.0f ms), want 3: every accepted job counts until it is answered, and "
            "the stats must answer meanwhile", at, jobs, stats_ms);
  double done = tk_lab_stat(&lab, "hash_done") - done0, peak = tk_lab_stat(&lab, "hash_jobs_peak");
  cr_expect(done == 3 && peak >= 3, "after 3 jobs: hash_done %.0f (want 3), hash_jobs_peak %.0f "
            "(want >= 3)", done, peak);
  tk_lab_stop(&lab, zero_fields); /* hash_jobs back to 0 */
}

/* Shutdown while jobs run: every accepted job is still answered, then the loop closes. */
Test(lab07, shutdown_answers_accepted, .timeout = 60) {
  static tk_resp_t resp[4];
  char url[160];
  int ok = 0;

  start("8", "1000000");
  long cost = cost_for_ms(300);
  tk_stream_t *s = tk_stream_start(hash_url(cost, "bye", url, sizeof url), NULL, 4, 1000, 30000, resp);
  cr_assert_not_null(s, "could not start the /hash requests");
  /* Stop once the 4 jobs are accepted (at the latest 2 s in): a request the lab had not accepted
   * yet when it stopped listening is not one it owed an answer. */
  double t0 = tk_now_ms();
  for (;;) { /* done read first: a job answered between the two reads then counts in neither */
    double done = tk_lab_stat(&lab, "hash_done");
    if (done + tk_lab_stat(&lab, "hash_jobs") >= 4 || tk_now_ms() - t0 >= 2000) break;
    usleep(10 * 1000);
  }
  labrun_report_t rep = {0};
  int rc = labrun_stop(lab.run, 10000, &rep); /* the stream's sockets are open: no fd check */
  lab.run = NULL;
  tk_stream_wait(s);
  for (int i = 0; i < 4; i++) ok += answer_is_right(&resp[i], "bye", cost);
  cr_expect_eq(ok, 4, "only %d of 4 jobs running at shutdown were answered with their digest", ok);
  cr_expect(rc == 0 && rep.drained, "shutdown with 4 jobs running did not drain within 10 s");
  cr_expect(rep.loop_close_rc == 0 && rep.handles_left == 0, "uv_loop_close() = %d with %u "
            "handle(s) open after a shutdown with jobs running", rep.loop_close_rc,
            rep.handles_left);
}
