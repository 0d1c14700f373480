/* ocond.c - monotonic condition variables with deadlines in milliseconds. */
#include <pthread.h>
#include <time.h>

#include "ocond.h"

int ocond_init(pthread_cond_t *cv)
{
	pthread_condattr_t ca;
	int rc = pthread_condattr_init(&ca);
	if (rc)
		return -rc;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!rc)
		rc = pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
	return -rc;
}

int ocond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms)
{
	/* otime_mono_ms() is CLOCK_MONOTONIC in ms: the deadline is the instant itself, and a
	 * negative one would make an invalid timespec (EINVAL) rather than one that has passed */
	if (deadline_ms < 0)
		deadline_ms = 0;
	struct timespec until = {(time_t)(deadline_ms / 1000),
	                         (long)(deadline_ms % 1000) * 1000000L};
	return -pthread_cond_timedwait(cv, mu, &until);
}
