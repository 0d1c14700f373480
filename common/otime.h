/* otime.h - the two clocks every Outpost program needs, in milliseconds. */
#ifndef OTIME_H
#define OTIME_H

#include <stdint.h>

/* CLOCK_MONOTONIC: for timeouts and intervals. */
int64_t otime_mono_ms(void);

/* CLOCK_REALTIME: Unix time, for timestamps that leave the process. */
int64_t otime_wall_ms(void);

/* Unix seconds as UTC "2026-11-23T19:31:37Z" in buf; returns buf. */
#define OTIME_UTC_LEN 24
const char *otime_utc(int64_t unix_s, char buf[OTIME_UTC_LEN]);

#endif
