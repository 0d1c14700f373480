/* dev_acktimer.h - how long to wait for the bridge's acks, and how much to resend when they are
 * late. The first timeout comes `base_ms` after the last progress. While acks stay away, each
 * further timeout waits twice as long (up to DEV_ACKTIMER_MAX_FACTOR * base_ms), at a random point
 * in the upper half of that wait, so devices that timed out together drift apart. After a
 * timeout only one envelope may be outstanding (a probe, the oldest unacknowledged); every ack
 * that makes progress doubles the allowance back towards the window and resets the wait.
 * The wait learns how late acks are (as TCP does, RFC 6298): from the ack latency of envelopes
 * sent once (never of resent ones: Karn's rule) it keeps a smoothed latency and its variation,
 * and the first wait is max(base_ms, latency + 4 x variation), capped like the backoff. So a
 * bridge that is merely slow, for a long while, is not probed once per envelope.
 * A late bridge (a fleet joining at once, a backlog behind a restart) thus sees one resend per
 * device per wait, not a window of them every `base_ms`.
 *
 * A value type embedded in its owner (the uploader, the fleet simulator's sessions); its
 * fields are private. No I/O and no clock: callers pass `now` in milliseconds. */
#ifndef DEV_ACKTIMER_H
#define DEV_ACKTIMER_H

#include <stdint.h>

#define DEV_ACKTIMER_MAX_FACTOR 8

struct dev_acktimer {
	int64_t base_ms, nominal_ms, wait_ms, since;
	int64_t srtt_ms, rttvar_ms, first_ms; /* learned latency; first_ms: the wait after progress */
	int window, allowed;
	uint64_t rng;
};

/* base_ms > 0 and window >= 1 (callers validate); seed (e.g. orand_seed()) only decorrelates
 * devices. */
void dev_acktimer_init(struct dev_acktimer *t, int64_t base_ms, int window, uint64_t seed);

/* The link came up and everything unacknowledged goes again: full window, first wait. */
void dev_acktimer_start(struct dev_acktimer *t, int64_t now);

/* An ack moved something: the allowance doubles, and the wait starts again at its first value
 * if latency_ms >= 0: how long the slowest envelope acknowledged now took, counted from its
 * only send. -1 (it was resent, or unknown): nothing is learned and the wait stays backed off
 * until an envelope sent once is acknowledged. */
void dev_acktimer_progress(struct dev_acktimer *t, int64_t now, int64_t latency_ms);

/* Karn's rule, folded over the envelopes one ack settles: *slowest (start it at -1) becomes
 * the largest latency now - sent_ms among those sent exactly once (resent = 0); resent ones
 * teach nothing. Pass the result to dev_acktimer_progress(). */
void dev_acktimer_note_latency(int64_t *slowest, int64_t now, int64_t sent_ms, int resent);

/* An envelope went out while none was outstanding: the wait runs from now (not from the last
 * progress, which may be long ago). */
void dev_acktimer_arm(struct dev_acktimer *t, int64_t now);

/* 1 (once) if the wait since the last progress or timeout is over; ask only while envelopes
 * are outstanding. The caller then resends from the oldest unacknowledged, at most
 * dev_acktimer_allowed() of them. 0 otherwise. */
int dev_acktimer_expired(struct dev_acktimer *t, int64_t now);

/* Envelopes that may be in flight now (1..window). */
int dev_acktimer_allowed(const struct dev_acktimer *t);

/* When dev_acktimer_expired() turns true. */
int64_t dev_acktimer_deadline(const struct dev_acktimer *t);

#endif
