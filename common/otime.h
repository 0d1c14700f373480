/* otime.h - the two clocks every Outpost program needs, in milliseconds. */
#ifndef OTIME_H
#define OTIME_H

#include <stdint.h>

/* CLOCK_MONOTONIC: for timeouts and intervals. */
int64_t otime_mono_ms(void);

/* CLOCK_REALTIME: Unix time, for timestamps that leave the process. */
int64_t otime_wall_ms(void);

#endif
