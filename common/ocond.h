/* ocond.h - condition variables on the monotonic clock, waited on until a deadline of
 * otime_mono_ms(): a step of the wall clock neither stretches nor cuts a wait. */
#ifndef OCOND_H
#define OCOND_H

#include <pthread.h>
#include <stdint.h>

/* pthread_cond_init of cv on CLOCK_MONOTONIC; destroy it with pthread_cond_destroy. 0, or a
 * negative errno. */
int ocond_init(pthread_cond_t *cv);

/* pthread_cond_timedwait on cv (set up by ocond_init) with mu held, until deadline_ms on
 * otime_mono_ms()'s clock (one already past, or negative: no wait). 0 when woken (perhaps
 * spuriously: check the condition again), -ETIMEDOUT once the deadline has passed, another
 * negative errno if the wait failed. */
int ocond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms);

#endif
