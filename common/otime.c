/* otime.c - monotonic and wall clocks in milliseconds. */
#include <time.h>

#include "otime.h"

static int64_t ms(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t otime_mono_ms(void)
{
	return ms(CLOCK_MONOTONIC);
}

int64_t otime_wall_ms(void)
{
	return ms(CLOCK_REALTIME);
}

struct timespec otime_after(clockid_t id, int64_t ms)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	if (ms < 0)
		ms = 0;
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

const char *otime_utc(int64_t unix_s, char buf[OTIME_UTC_LEN])
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	if (!gmtime_r(&t, &tm) || !strftime(buf, OTIME_UTC_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm))
		buf[0] = '\0';
	return buf;
}
