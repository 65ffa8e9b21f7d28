/* hist.c - log-linear histogram: see hist.h for the layout and its error bound. */
#include "hist.h"

#include <math.h>
#include <string.h>

/* Index of value's bucket. Values below 2 * HIST_SUB_COUNT land in [0, 256) one by one; above,
 * shift = floor(log2(value)) - HIST_SUB_BITS drops the bits finer than the bucket's width, which
 * leaves sub in [128, 256), and the shift selects the power of two. */
static unsigned hist__index(uint64_t value) {
  if (value < 2 * HIST_SUB_COUNT) return (unsigned)value;
  unsigned log2v = 63u - (unsigned)__builtin_clzll(value);
  unsigned shift = log2v - HIST_SUB_BITS;
  unsigned sub = (unsigned)(value >> shift);
  return shift * HIST_SUB_COUNT + sub;
}

/* The inverse: lowest value and width of bucket index. */
static void hist__bucket(unsigned index, uint64_t *low, uint64_t *width) {
  if (index < 2 * HIST_SUB_COUNT) {
    *low = index;
    *width = 1;
    return;
  }
  unsigned shift = (index >> HIST_SUB_BITS) - 1;
  uint64_t sub = (index & (HIST_SUB_COUNT - 1)) + HIST_SUB_COUNT;
  *low = sub << shift;
  *width = (uint64_t)1 << shift;
}

void hist_init(hist_t *h) { hist_reset(h); }

void hist_reset(hist_t *h) {
  memset(h->counts, 0, sizeof(h->counts));
  h->count = 0;
  h->min = UINT64_MAX;
  h->max = 0;
  h->sum = 0.0;
}

void hist_record(hist_t *h, uint64_t value) {
  h->counts[hist__index(value)]++;
  h->count++;
  h->sum += (double)value;
  if (value < h->min) h->min = value;
  if (value > h->max) h->max = value;
}

void hist_merge(hist_t *dst, const hist_t *src) {
  if (src->count == 0) return;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
  dst->count += src->count;
  dst->sum += src->sum;
  if (src->min < dst->min) dst->min = src->min;
  if (src->max > dst->max) dst->max = src->max;
}

uint64_t hist_percentile(const hist_t *h, double pct) {
  if (h->count == 0) return 0;
  if (!(pct > 0.0)) return h->min; /* also catches NaN */
  if (pct >= 100.0) return h->max;
  /* Nearest rank: the rank-th smallest value, rank = ceil(pct/100 * count), at least 1. */
  uint64_t rank = (uint64_t)ceil(pct / 100.0 * (double)h->count);
  if (rank < 1) rank = 1;
  if (rank > h->count) rank = h->count;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank) {
      uint64_t low, width;
      hist__bucket(i, &low, &width);
      /* The middle of the bucket halves the worst-case error; min and max are exact, so a
       * value outside them can only be bucket rounding. */
      uint64_t v = low + width / 2;
      if (v < h->min) v = h->min;
      if (v > h->max) v = h->max;
      return v;
    }
  }
  return h->max;
}

uint64_t hist_max(const hist_t *h) { return h->count ? h->max : 0; }
uint64_t hist_min(const hist_t *h) { return h->count ? h->min : 0; }
uint64_t hist_count(const hist_t *h) { return h->count; }
double hist_mean(const hist_t *h) { return h->count ? h->sum / (double)h->count : 0.0; }
