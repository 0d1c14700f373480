/* dev_acktimer.c - ack timeout with exponential backoff, jitter and a probe window. */
#include "dev_acktimer.h"
#include "orand.h"

void dev_acktimer_init(struct dev_acktimer *t, int64_t base_ms, int window, uint64_t seed)
{
	t->base_ms = base_ms > 0 ? base_ms : 1;
	t->window = window > 0 ? window : 1;
	t->rng = seed | 1;
	dev_acktimer_start(t, 0);
}

void dev_acktimer_start(struct dev_acktimer *t, int64_t now)
{
	t->nominal_ms = t->wait_ms = t->base_ms;
	t->allowed = t->window;
	t->since = now;
}

void dev_acktimer_progress(struct dev_acktimer *t, int64_t now)
{
	t->nominal_ms = t->wait_ms = t->base_ms;
	t->allowed = t->allowed > t->window / 2 ? t->window : t->allowed * 2;
	t->since = now;
}

int dev_acktimer_expired(struct dev_acktimer *t, int64_t now)
{
	if (now - t->since < t->wait_ms)
		return 0;
	/* the next wait: twice the last nominal one, capped, drawn from its upper half */
	if (t->nominal_ms < t->base_ms * DEV_ACKTIMER_MAX_FACTOR)
		t->nominal_ms *= 2;
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
