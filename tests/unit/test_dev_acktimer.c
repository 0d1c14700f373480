/* test_dev_acktimer.c - the ack timeout backs off with jitter while acks stay away, collapses
 * the window to one probe, recovers on progress, and learns how late acks are. */
#include <criterion/criterion.h>

#include "dev_acktimer.h"

#define BASE 30000

Test(dev_acktimer, first_timeout_after_exactly_the_base_wait)
{
	struct dev_acktimer t;
	dev_acktimer_init(&t, BASE, 32, 7);
	dev_acktimer_start(&t, 1000);
	cr_expect_eq(dev_acktimer_allowed(&t), 32);
	cr_expect_eq(dev_acktimer_deadline(&t), 1000 + BASE);
	cr_expect_eq(dev_acktimer_expired(&t, 1000 + BASE - 1), 0);
	cr_expect_eq(dev_acktimer_expired(&t, 1000 + BASE), 1);
	cr_expect_eq(dev_acktimer_expired(&t, 1000 + BASE), 0, "once per timeout");
	cr_expect_eq(dev_acktimer_allowed(&t), 1, "a probe, not the window");
}

Test(dev_acktimer, waits_double_within_their_upper_half_up_to_the_cap)
{
	struct dev_acktimer t;
	dev_acktimer_init(&t, BASE, 32, 12345);
	dev_acktimer_start(&t, 0);
	int64_t now = BASE;
	cr_assert_eq(dev_acktimer_expired(&t, now), 1);
	int64_t nominal = 2 * BASE;
	for (int i = 0; i < 10; i++) {
		int64_t wait = dev_acktimer_deadline(&t) - now;
		cr_expect_geq(wait, nominal / 2, "timeout %d: wait %lld", i + 2, (long long)wait);
		cr_expect_leq(wait, nominal, "timeout %d: wait %lld", i + 2, (long long)wait);
		now += wait;
		cr_expect_eq(dev_acktimer_expired(&t, now - 1), 0);
		cr_expect_eq(dev_acktimer_expired(&t, now), 1);
		if (nominal < (int64_t)BASE * DEV_ACKTIMER_MAX_FACTOR)
			nominal *= 2;
	}
	cr_expect_eq(nominal, (int64_t)BASE * DEV_ACKTIMER_MAX_FACTOR, "the cap was reached");
}

Test(dev_acktimer, devices_that_time_out_together_drift_apart)
{
	int64_t distinct[16];
	int n = 0;
	for (uint64_t seed = 1; seed <= 16; seed++) {
		struct dev_acktimer t;
		dev_acktimer_init(&t, BASE, 8, seed * 0x9e3779b97f4a7c15ULL);
		dev_acktimer_start(&t, 0);
		cr_assert_eq(dev_acktimer_expired(&t, BASE), 1);
		int64_t d = dev_acktimer_deadline(&t);
		int seen = 0;
		for (int i = 0; i < n; i++)
			seen |= distinct[i] == d;
		if (!seen)
			distinct[n++] = d;
	}
	cr_expect_geq(n, 12, "16 devices, only %d distinct second deadlines", n);
}

Test(dev_acktimer, progress_resets_the_wait_and_regrows_the_window)
{
	struct dev_acktimer t;
	dev_acktimer_init(&t, BASE, 20, 99);
	dev_acktimer_start(&t, 0);
	cr_assert_eq(dev_acktimer_expired(&t, BASE), 1);
	cr_assert_eq(dev_acktimer_expired(&t, dev_acktimer_deadline(&t)), 1);
	int64_t now = dev_acktimer_deadline(&t) - 5;
	/* the probe's ack: it was resent, so the wait stays backed off (Karn) */
	dev_acktimer_progress(&t, now, -1);
	cr_expect_eq(dev_acktimer_allowed(&t), 2);
	cr_expect_eq(dev_acktimer_deadline(&t), now + 4 * BASE, "backed off: the nominal 4 x");
	int expect[] = {4, 8, 16, 20, 20};
	for (int i = 0; i < 5; i++) {
		dev_acktimer_progress(&t, now, 100);
		cr_expect_eq(dev_acktimer_allowed(&t), expect[i], "after ack %d", i + 2);
		cr_expect_eq(dev_acktimer_deadline(&t), now + BASE, "the wait is the base again");
	}
	dev_acktimer_start(&t, now);
	cr_expect_eq(dev_acktimer_allowed(&t), 20);
}

Test(dev_acktimer, learns_a_slow_bridge_and_forgets_it_again)
{
	struct dev_acktimer t;
	dev_acktimer_init(&t, BASE, 8, 5);
	dev_acktimer_start(&t, 0);
	/* fast acks never shorten the wait below the configured one */
	dev_acktimer_progress(&t, 100, 80);
	cr_expect_eq(dev_acktimer_deadline(&t), 100 + BASE);
	/* acks that take 50 s, steadily: the wait grows past them */
	int64_t now = 100;
	for (int i = 0; i < 20; i++) {
		now += 60000;
		dev_acktimer_progress(&t, now, 50000);
	}
	int64_t wait = dev_acktimer_deadline(&t) - now;
	cr_expect_gt(wait, 50000, "wait %lld does not cover 50 s acks", (long long)wait);
	cr_expect_leq(wait, (int64_t)BASE * DEV_ACKTIMER_MAX_FACTOR);
	/* a resent envelope's ack teaches nothing (-1); fast acks bring the wait back down */
	dev_acktimer_progress(&t, now + 1, -1);
	cr_expect_eq(dev_acktimer_deadline(&t) - (now + 1), wait);
	for (int i = 0; i < 40; i++) {
		now += 60000;
		dev_acktimer_progress(&t, now, 100);
	}
	cr_expect_eq(dev_acktimer_deadline(&t), now + BASE);
	/* and never above the cap, however late */
	for (int i = 0; i < 20; i++) {
		now += 60000;
		dev_acktimer_progress(&t, now, 3600000);
	}
	cr_expect_eq(dev_acktimer_deadline(&t), now + (int64_t)BASE * DEV_ACKTIMER_MAX_FACTOR);
}

Test(dev_acktimer, karn_keeps_the_slowest_latency_of_envelopes_sent_once)
{
	int64_t slowest = -1;
	dev_acktimer_note_latency(&slowest, 10000, 9000, 1); /* resent: teaches nothing */
	cr_assert_eq(slowest, -1);
	dev_acktimer_note_latency(&slowest, 10000, 9700, 0);
	cr_assert_eq(slowest, 300);
	dev_acktimer_note_latency(&slowest, 10000, 9900, 0); /* faster: the slowest stays */
	cr_assert_eq(slowest, 300);
	dev_acktimer_note_latency(&slowest, 10000, 9500, 0);
	cr_assert_eq(slowest, 500);
	dev_acktimer_note_latency(&slowest, 10000, 1, 1);
	cr_assert_eq(slowest, 500);
}
