/* tests/hist.c - the latency histogram against exact percentiles of known data sets.
 *
 * Every percentile the histogram returns must be within 1% of the exact nearest-rank percentile
 * of the same values, whatever their distribution: uniform, log-uniform over 9 decades, heavy
 * tailed, constant, the two ends of uint64_t, every power-of-two boundary.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"

#define N_VALUES 100000

static const double pcts[] = {0, 0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100};

/* xorshift64*: a fixed seed keeps every data set the same from run to run. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng_next(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Du;
}
static double rng_unit(void) { return (double)(rng_next() >> 11) / 9007199254740992.0; }

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Exact nearest-rank percentile of sorted[0..n): the value at rank ceil(p/100 * n). */
static uint64_t exact_percentile(const uint64_t *sorted, size_t n, double p) {
  if (p <= 0) return sorted[0];
  size_t rank = (size_t)ceil(p / 100.0 * (double)n);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return sorted[rank - 1];
}

/* Records values into a fresh histogram and checks every percentile, min, max, count, mean. */
static void check_data_set(const char *name, uint64_t *values, size_t n) {
  static hist_t h;
  hist_init(&h);
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    hist_record(&h, values[i]);
    sum += (double)values[i];
  }
  qsort(values, n, sizeof(values[0]), cmp_u64);
  cr_assert_eq(hist_count(&h), n, "%s: hist_count %llu, recorded %zu values", name,
               (unsigned long long)hist_count(&h), n);
  cr_assert_eq(hist_min(&h), values[0], "%s: hist_min %llu, exact %llu", name,
               (unsigned long long)hist_min(&h), (unsigned long long)values[0]);
  cr_assert_eq(hist_max(&h), values[n - 1], "%s: hist_max %llu, exact %llu", name,
               (unsigned long long)hist_max(&h), (unsigned long long)values[n - 1]);
  double mean = sum / (double)n;
  cr_assert(fabs(hist_mean(&h) - mean) <= 1e-9 * fabs(mean) + 1e-9,
            "%s: hist_mean %.6f, exact %.6f: the mean must come from the exact sum", name,
            hist_mean(&h), mean);
  for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++) {
    uint64_t exact = exact_percentile(values, n, pcts[i]);
    uint64_t got = hist_percentile(&h, pcts[i]);
    double err = exact == 0 ? (got == 0 ? 0.0 : 1.0)
                            : fabs((double)got - (double)exact) / (double)exact;
    cr_assert(err <= 0.01,
              "%s: p%g = %llu, exact %llu: relative error %.4f%% > 1%% (look at the bucket "
              "index/width arithmetic in hist.c)",
              name, pcts[i], (unsigned long long)got, (unsigned long long)exact, err * 100);
  }
}

static uint64_t values[N_VALUES];

Test(hist, uniform_random, .timeout = 10) {
  for (size_t i = 0; i < N_VALUES; i++) values[i] = rng_next() % 1000000u;
  check_data_set("uniform 0..1e6", values, N_VALUES);
}

Test(hist, log_uniform_nine_decades, .timeout = 10) {
  for (size_t i = 0; i < N_VALUES; i++) values[i] = (uint64_t)pow(10.0, 9.0 * rng_unit());
  check_data_set("log-uniform 1..1e9", values, N_VALUES);
}

Test(hist, heavy_tail, .timeout = 10) {
  /* Pareto, alpha 1.1: most values small, a few enormous, like latencies during a stall. */
  for (size_t i = 0; i < N_VALUES; i++)
    values[i] = (uint64_t)(100.0 / pow(1.0 - rng_unit() * 0.999999, 1.0 / 1.1));
  check_data_set("pareto", values, N_VALUES);
}

Test(hist, adversarial_sets, .timeout = 10) {
  size_t n = 0;
  for (unsigned k = 0; k < 64; k++) { /* both sides of every bucket-layout boundary */
    uint64_t p = (uint64_t)1 << k;
    values[n++] = p - 1;
    values[n++] = p;
    values[n++] = p + 1;
  }
  values[n++] = UINT64_MAX;
  check_data_set("power-of-two boundaries", values, n);

  for (n = 0; n < 1000; n++) values[n] = 123456789;
  check_data_set("constant", values, n);

  for (n = 0; n < 1000; n++) values[n] = n % 2 ? UINT64_MAX : 0;
  check_data_set("0 and UINT64_MAX", values, n);

  for (n = 0; n < 1000; n++) values[n] = 1000 - n; /* descending */
  check_data_set("descending 1..1000", values, n);

  /* 999 fast values and one outlier: p99.9 and max must see it, p99 must not. */
  for (n = 0; n < 999; n++) values[n] = 100;
  values[n++] = 5000000;
  check_data_set("one outlier", values, n);

  values[0] = 42;
  check_data_set("single value", values, 1);
}

Test(hist, small_values_are_exact, .timeout = 10) {
  static hist_t h;
  hist_init(&h);
  for (uint64_t v = 0; v < 256; v++) hist_record(&h, v);
  for (unsigned p = 1; p <= 100; p++) {
    uint64_t exact = (uint64_t)ceil(p / 100.0 * 256) - 1;
    cr_assert_eq(hist_percentile(&h, p), exact,
                 "p%u of 0..255 = %llu, want exactly %llu: values below 256 have their own "
                 "bucket each", p, (unsigned long long)hist_percentile(&h, p),
                 (unsigned long long)exact);
  }
}

Test(hist, merge_equals_recording_everything, .timeout = 10) {
  static hist_t all, a, b, empty;
  hist_init(&all);
  hist_init(&a);
  hist_init(&b);
  hist_init(&empty);
  for (size_t i = 0; i < N_VALUES; i++) {
    uint64_t v = (uint64_t)pow(10.0, 7.0 * rng_unit());
    hist_record(&all, v);
    hist_record(i % 3 ? &a : &b, v);
  }
  hist_merge(&a, &b);
  hist_merge(&a, &empty); /* merging nothing changes nothing */
  cr_assert_eq(hist_count(&a), hist_count(&all), "merged count %llu, want %llu",
               (unsigned long long)hist_count(&a), (unsigned long long)hist_count(&all));
  cr_assert_eq(hist_min(&a), hist_min(&all), "merged min %llu, want %llu",
               (unsigned long long)hist_min(&a), (unsigned long long)hist_min(&all));
  cr_assert_eq(hist_max(&a), hist_max(&all), "merged max %llu, want %llu",
               (unsigned long long)hist_max(&a), (unsigned long long)hist_max(&all));
  cr_assert(fabs(hist_mean(&a) - hist_mean(&all)) < 1e-6 * hist_mean(&all),
            "merged mean %.3f, want %.3f", hist_mean(&a), hist_mean(&all));
  for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
    cr_assert_eq(hist_percentile(&a, pcts[i]), hist_percentile(&all, pcts[i]),
                 "merged p%g = %llu, recorded together %llu: merge must add bucket by bucket",
                 pcts[i], (unsigned long long)hist_percentile(&a, pcts[i]),
                 (unsigned long long)hist_percentile(&all, pcts[i]));

  hist_merge(&empty, &all); /* into an empty one: min must come from src */
  cr_assert_eq(hist_min(&empty), hist_min(&all), "min after merging into an empty hist: %llu",
               (unsigned long long)hist_min(&empty));
}

Test(hist, empty_and_reset, .timeout = 10) {
  static hist_t h;
  hist_init(&h);
  cr_assert(hist_count(&h) == 0 && hist_min(&h) == 0 && hist_max(&h) == 0 &&
                hist_percentile(&h, 50) == 0 && hist_mean(&h) == 0.0,
            "an empty histogram reports 0 everywhere (min %llu, max %llu, p50 %llu, mean %g)",
            (unsigned long long)hist_min(&h), (unsigned long long)hist_max(&h),
            (unsigned long long)hist_percentile(&h, 50), hist_mean(&h));
  for (uint64_t v = 1000; v < 2000; v++) hist_record(&h, v);
  hist_reset(&h);
  cr_assert(hist_count(&h) == 0 && hist_max(&h) == 0 && hist_percentile(&h, 99) == 0,
            "after hist_reset: count %llu, max %llu, p99 %llu, want all 0",
            (unsigned long long)hist_count(&h), (unsigned long long)hist_max(&h),
            (unsigned long long)hist_percentile(&h, 99));
  hist_record(&h, 7);
  cr_assert(hist_min(&h) == 7 && hist_max(&h) == 7 && hist_percentile(&h, 50) == 7,
            "one value 7 after a reset: min %llu, max %llu, p50 %llu (reset must restore min)",
            (unsigned long long)hist_min(&h), (unsigned long long)hist_max(&h),
            (unsigned long long)hist_percentile(&h, 50));
  cr_assert(sizeof(hist_t) < 64 * 1024, "hist_t is %zu bytes: it must stay small and fixed",
            sizeof(hist_t));
}
