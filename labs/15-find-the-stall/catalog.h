/* catalog.h - lab 15's price catalog, the same in every variant.
 *
 * A catalog of `items` products, version V: product s costs catalog_price(s, V) cents (a hash of
 * both, standing for prices pulled from a database and recomputed with today's discounts), and
 * `ranked` lists every product by price, highest first, a lower sku first among equal prices
 * (the answer to "top sellers", "most expensive", ...). catalog_build fills a catalog it owns
 * from scratch; it reads nothing else, so any thread may run it.
 */
#ifndef LAB15_CATALOG_H
#define LAB15_CATALOG_H

#include <stdint.h>
#include <stdlib.h>

typedef struct catalog_entry {
  uint32_t price;
  uint32_t sku;
} catalog_entry_t;

typedef struct catalog {
  long version;
  long items;
  uint32_t *price;          /* price[sku] */
  catalog_entry_t *ranked;  /* every product, by price descending, then sku ascending */
} catalog_t;

/* Prices from 0 to 99999 cents. */
static inline uint32_t catalog_price(long sku, long version) {
  uint64_t x = (uint64_t)sku * 0x9E3779B97F4A7C15u + (uint64_t)version * 0xBF58476D1CE4E5B9u;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBu;
  x ^= x >> 29;
  return (uint32_t)(x % 100000u);
}

static inline int catalog_rank_cmp(const void *a, const void *b) {
  const catalog_entry_t *x = a, *y = b;
  if (x->price != y->price) return x->price < y->price ? 1 : -1;
  return (x->sku > y->sku) - (x->sku < y->sku);
}

/* Builds version `version` of a catalog of `items` products into *c (allocating). 0, or -1 when
 * out of memory (c is then empty). The cost: items hashes and a sort of items entries. */
static inline int catalog_build(catalog_t *c, long items, long version) {
  c->version = version;
  c->items = items;
  c->price = malloc((size_t)items * sizeof *c->price);
  c->ranked = malloc((size_t)items * sizeof *c->ranked);
  if (c->price == NULL || c->ranked == NULL) {
    free(c->price);
    free(c->ranked);
    c->price = NULL;
    c->ranked = NULL;
    return -1;
  }
  for (long s = 0; s < items; s++) {
    c->price[s] = catalog_price(s, version);
    c->ranked[s].price = c->price[s];
    c->ranked[s].sku = (uint32_t)s;
  }
  qsort(c->ranked, (size_t)items, sizeof *c->ranked, catalog_rank_cmp);
  return 0;
}

static inline void catalog_free(catalog_t *c) {
  free(c->price);
  free(c->ranked);
  c->price = NULL;
  c->ranked = NULL;
}

#endif
