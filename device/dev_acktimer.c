/* dev_acktimer.c - ack timeout with exponential backoff, jitter and a probe window. */
#include "dev_acktimer.h"
#include "orand.h"

void dev_acktimer_init(struct dev_acktimer *t, int64_t base_ms, int window, uint64_t seed)
{
	t->base_ms = t->first_ms = base_ms > 0 ? base_ms : 1;
	t->srtt_ms = t->rttvar_ms = 0;
	t->window = window > 0 ? window : 1;
	t->rng = seed | 1;
	dev_acktimer_start(t, 0);
}

static int64_t cap(const struct dev_acktimer *t)
{
	return t->base_ms * DEV_ACKTIMER_MAX_FACTOR;
}

static void learn(struct dev_acktimer *t, int64_t latency_ms)
{
	if (!t->srtt_ms) {
		t->srtt_ms = latency_ms > 0 ? latency_ms : 1;
		t->rttvar_ms = latency_ms / 2;
	} else {
		int64_t err = t->srtt_ms > latency_ms ? t->srtt_ms - latency_ms : latency_ms - t->srtt_ms;
		t->rttvar_ms = (3 * t->rttvar_ms + err) / 4;
		t->srtt_ms = (7 * t->srtt_ms + latency_ms) / 8;
	}
	int64_t w = t->srtt_ms + 4 * t->rttvar_ms;
	t->first_ms = w < t->base_ms ? t->base_ms : w > cap(t) ? cap(t) : w;
}

void dev_acktimer_start(struct dev_acktimer *t, int64_t now)
{
	t->nominal_ms = t->wait_ms = t->first_ms;
	t->allowed = t->window;
	t->since = now;
}

void dev_acktimer_progress(struct dev_acktimer *t, int64_t now, int64_t latency_ms)
{
	/* Karn: without a latency from an envelope sent once, keep the backed-off wait; else the
	 * next envelope would time out again and never yield a latency */
	if (latency_ms >= 0) {
		learn(t, latency_ms);
		t->nominal_ms = t->first_ms;
	}
	t->wait_ms = t->nominal_ms;
	t->allowed = t->allowed > t->window / 2 ? t->window : t->allowed * 2;
	t->since = now;
}

void dev_acktimer_note_latency(int64_t *slowest, int64_t now, int64_t sent_ms, int resent)
{
	if (!resent && now - sent_ms > *slowest)
		*slowest = now - sent_ms;
}

void dev_acktimer_arm(struct dev_acktimer *t, int64_t now)
{
	t->since = now;
}

int dev_acktimer_expired(struct dev_acktimer *t, int64_t now)
{
	if (now - t->since < t->wait_ms)
		return 0;
	/* the next wait: twice the last nominal one, capped, drawn from its upper half */
	t->nominal_ms = t->nominal_ms < cap(t) / 2 ? t->nominal_ms * 2 : cap(t);
	int64_t half = t->nominal_ms / 2;
	t->wait_ms = half + (int64_t)(orand_next(&t->rng) % (uint64_t)(half + 1));
	t->allowed = 1;
	t->since = now;
	return 1;
}

int dev_acktimer_allowed(const struct dev_acktimer *t)
{
	return t->allowed;
}

int64_t dev_acktimer_deadline(const struct dev_acktimer *t)
{
	return t->since + t->wait_ms;
}
