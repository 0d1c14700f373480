/* test_ocond.c - monotonic condition variables: a deadline in otime_mono_ms() is kept, neither
 * cut nor stretched; one already past, or negative, does not wait; a signal ends the wait. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include "harness.h"
#include "ocond.h"
#include "otime.h"

struct cv {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int flag;
};

static void cv_init(struct cv *c)
{
	pthread_mutex_init(&c->mu, NULL);
	cr_assert_eq(ocond_init(&c->cv), 0);
	c->flag = 0;
}

static void cv_destroy(struct cv *c)
{
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
}

/* Wait on c until deadline or its flag, through spurious wake-ups: the last return. */
static int wait_flag(struct cv *c, int64_t deadline)
{
	int rc;
	pthread_mutex_lock(&c->mu);
	while (!c->flag && (rc = ocond_wait_until(&c->cv, &c->mu, deadline)) == 0)
		;
	if (c->flag)
		rc = 0;
	pthread_mutex_unlock(&c->mu);
	return rc;
}

/* Deadlines whose milliseconds differ: the fraction of a second is part of the instant. */
Test(ocond, a_deadline_is_kept_to_the_millisecond, .timeout = 30)
{
	struct cv c;
	int64_t late = 0; /* summed over the waits: a loaded machine delays some */
	cv_init(&c);
	for (int64_t ms = 150; ms <= 1350; ms += 400) {
		int64_t start = otime_mono_ms(), deadline = start + ms;
		cr_expect_eq(wait_flag(&c, deadline), -ETIMEDOUT);
		int64_t end = otime_mono_ms();
		cr_expect_geq(end, deadline, "woke %lld ms before its deadline",
		              (long long)(deadline - end));
		late += end - deadline;
	}
	/* a deadline rounded up to the second makes the four waits ~500 ms late on average (their
	 * fractions of a second are spread out); kept, they wake within a few ms */
	cr_expect_lt(late / 4, 250, "the waits woke %lld ms after their deadlines on average",
	             (long long)(late / 4));
	cv_destroy(&c);
}

Test(ocond, a_deadline_past_or_negative_does_not_wait, .timeout = 30)
{
	struct cv c;
	cv_init(&c);
	int64_t deadlines[] = {otime_mono_ms() - 1500, otime_mono_ms(), 0, -5, INT64_MIN};
	for (size_t i = 0; i < sizeof(deadlines) / sizeof(deadlines[0]); i++) {
		int64_t start = otime_mono_ms();
		cr_expect_eq(wait_flag(&c, deadlines[i]), -ETIMEDOUT, "deadline %lld",
		             (long long)deadlines[i]);
		cr_expect_lt(otime_mono_ms() - start, 500);
	}
	cv_destroy(&c);
}

static void *raise_flag(void *arg)
{
	struct cv *c = arg;
	h_sleep_ms(100);
	pthread_mutex_lock(&c->mu);
	c->flag = 1;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

Test(ocond, a_signal_ends_the_wait_before_its_deadline, .timeout = 30)
{
	struct cv c;
	pthread_t t;
	cv_init(&c);
	int64_t start = otime_mono_ms();
	cr_assert_eq(pthread_create(&t, NULL, raise_flag, &c), 0);
	cr_expect_eq(wait_flag(&c, start + 20000), 0);
	cr_expect_lt(otime_mono_ms() - start, 10000);
	pthread_join(t, NULL);
	cv_destroy(&c);
}
