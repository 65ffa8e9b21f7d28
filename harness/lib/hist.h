/* hist.h - a log-linear latency histogram (HdrHistogram-like), fixed size, no allocation.
 *
 * Values below 256 are counted exactly; above, every power of two [2^k, 2^(k+1)) is split into
 * 128 equal sub-buckets, so a bucket is never wider than 1/128 of its lower bound: any value a
 * percentile returns is within 0.4% (midpoint of the bucket) of a value that was recorded.
 * The whole uint64_t range fits in 7424 counters (about 58 KiB): embed the struct, record in O(1).
 *
 * Values are in whatever unit the caller picks (loadgen records microseconds). min, max, count
 * and mean are exact (the mean up to double rounding).
 */
#ifndef LOOPHOLES_HIST_H
#define LOOPHOLES_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7                           /* 128 sub-buckets per power of two */
#define HIST_SUB_COUNT (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS) * HIST_SUB_COUNT + HIST_SUB_COUNT) /* 7424 */

typedef struct hist {
  uint64_t count;
  uint64_t min;    /* UINT64_MAX while empty */
  uint64_t max;
  double sum;
  uint64_t counts[HIST_BUCKETS];
} hist_t;

void hist_init(hist_t *h);
void hist_reset(hist_t *h);
void hist_record(hist_t *h, uint64_t value);
/* Adds every value of src into dst. */
void hist_merge(hist_t *dst, const hist_t *src);
/* Nearest-rank percentile: the smallest recorded value v (to bucket precision) such that at
 * least pct% of the values are <= v. pct is clamped to 0..100; 0 gives min, 100 gives max.
 * 0 for an empty histogram. */
uint64_t hist_percentile(const hist_t *h, double pct);
uint64_t hist_max(const hist_t *h);   /* 0 when empty */
uint64_t hist_min(const hist_t *h);   /* 0 when empty */
uint64_t hist_count(const hist_t *h);
double hist_mean(const hist_t *h);    /* 0 when empty */

#endif
