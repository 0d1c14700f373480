/* oarray.h - growing a plain C array by doubling. */
#ifndef OARRAY_H
#define OARRAY_H

#include <stddef.h>

/* Make room in *arr (capacity *cap entries of elem bytes, n of them used) for one more entry,
 * doubling from 16. 0, or -1 when out of memory (or the size would overflow): *arr and *cap
 * are then unchanged. The array may move: pointers into it are stale after a growth.
 * elem > 0. */
int oarray_reserve(void **arr, size_t *cap, size_t n, size_t elem);

/* The same for `want` entries in all: doubling (from 16) until they fit. */
int oarray_reserve_n(void **arr, size_t *cap, size_t want, size_t elem);

#endif
