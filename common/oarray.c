/* oarray.c - growing a plain C array by doubling. */
#include <stdint.h>
#include <stdlib.h>

#include "oarray.h"

int oarray_reserve(void **arr, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 16;
	if (nc < *cap || nc > SIZE_MAX / elem)
		return -1;
	void *p = realloc(*arr, nc * elem);
	if (!p)
		return -1;
	*arr = p;
	*cap = nc;
	return 0;
}
