/* otime.h - the two clocks every Outpost program needs, in milliseconds. */
#ifndef OTIME_H
#define OTIME_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC: for timeouts and intervals. */
int64_t otime_mono_ms(void);

/* CLOCK_REALTIME: Unix time, for timestamps that leave the process. */
int64_t otime_wall_ms(void);

/* The instant ms (negative: 0) from now on clock id, for the absolute deadlines of
 * pthread_cond_timedwait (CLOCK_REALTIME, or the clock a condattr set). */
struct timespec otime_after(clockid_t id, int64_t ms);

/* Unix seconds as UTC "2026-11-23T19:31:37Z" in buf; returns buf. */
#define OTIME_UTC_LEN 24
const char *otime_utc(int64_t unix_s, char buf[OTIME_UTC_LEN]);

#endif
