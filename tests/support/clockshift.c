/* clockshift.c - LD_PRELOAD shim for tests: shifts CLOCK_REALTIME by the number of milliseconds
 * written in the file named by OUTPOST_TEST_CLOCK_SHIFT (read on every call, so a test steps the
 * clock of a running process by rewriting the file). The monotonic clock is left alone. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long shift_ms(void)
{
	const char *path = getenv("OUTPOST_TEST_CLOCK_SHIFT");
	long long ms = 0;
	FILE *f = path ? fopen(path, "r") : NULL;
	if (f) {
		if (fscanf(f, "%lld", &ms) != 1)
			ms = 0;
		fclose(f);
	}
	return ms;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "clock_gettime");
	int rc = real(id, ts);
	if (rc == 0 && id == CLOCK_REALTIME) {
		long long ms = shift_ms(), ns = (long long)ts->tv_nsec + ms % 1000 * 1000000;
		ts->tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
		ts->tv_nsec = ns % 1000000000;
		if (ts->tv_nsec < 0) {
			ts->tv_nsec += 1000000000;
			ts->tv_sec--;
		}
	}
	return rc;
}
