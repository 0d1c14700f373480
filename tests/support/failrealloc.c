/* failrealloc.c - LD_PRELOAD shim for tests: realloc() of more than OUTPOST_TEST_REALLOC_MAX
 * bytes fails with ENOMEM, as when memory runs out, so that a program's way out of it can be
 * seen. Other allocations are left alone. */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>

void *realloc(void *p, size_t n)
{
	static void *(*real)(void *, size_t);
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "realloc");
	/* read at every call: a sanitizer runtime reallocates before the environment is set */
	const char *s = getenv("OUTPOST_TEST_REALLOC_MAX");
	long long max = s ? atoll(s) : 0;
	if (max > 0 && n > (unsigned long long)max) {
		errno = ENOMEM;
		return NULL;
	}
	return real(p, n);
}
