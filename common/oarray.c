/* oarray.c - growing a plain C array by doubling. */
#include <stdint.h>
#include <stdlib.h>

#include "oarray.h"

int oarray_reserve(void **arr, size_t *cap, size_t n, size_t elem)
{
	return n == SIZE_MAX ? -1 : oarray_reserve_n(arr, cap, n + 1, elem);
}

int oarray_reserve_n(void **arr, size_t *cap, size_t want, size_t elem)
{
	if (want <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 16;
	while (nc < want && nc <= SIZE_MAX / 2)
		nc *= 2;
	if (nc < want || nc > SIZE_MAX / elem)
		return -1;
	void *p = realloc(*arr, nc * elem);
	if (!p)
		return -1;
	*arr = p;
	*cap = nc;
	return 0;
}
