/* test_brg_queue.c - the bounded blocking queue between pipeline stages. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>

#include "brg_err.h"
#include "brg_queue.h"
#include "harness.h"

Test(brg_queue, fifo_and_bounded)
{
	struct brg_queue *q;
	void *p;
	cr_assert_eq(brg_queue_new(3, &q), BRG_OK);
	for (intptr_t i = 1; i <= 3; i++)
		cr_assert_eq(brg_queue_push(q, (void *)i), BRG_OK);
	cr_expect_eq(brg_queue_len(q), 3);
	for (intptr_t i = 1; i <= 3; i++) {
		cr_assert_eq(brg_queue_pop(q, &p, 0), BRG_OK);
		cr_expect_eq((intptr_t)p, i);
	}
	cr_expect_eq(brg_queue_pop(q, &p, 50), BRG_ETIMEDOUT);
	brg_queue_free(q);
}

static void *producer(void *arg)
{
	struct brg_queue *q = arg;
	for (intptr_t i = 1; i <= 1000; i++)
		if (brg_queue_push(q, (void *)i))
			return (void *)1;
	return NULL;
}

Test(brg_queue, full_queue_blocks_the_producer_until_consumed)
{
	struct brg_queue *q;
	pthread_t t;
	void *p, *items[16];
	cr_assert_eq(brg_queue_new(4, &q), BRG_OK);
	pthread_create(&t, NULL, producer, q);
	h_sleep_ms(100);
	cr_expect_eq(brg_queue_len(q), 4, "the producer must wait, not overfill");
	intptr_t next = 1;
	/* bounded: a lost item must fail the test, not hang it */
	long long end = h_now_ms() + 10000;
	for (int round = 0; next <= 1000 && round < 100000 && h_now_ms() < end; round++) {
		size_t n = brg_queue_pop_many(q, items, 16);
		if (!n && brg_queue_pop(q, &p, 1000) == BRG_OK)
			items[n++] = p;
		for (size_t i = 0; i < n; i++)
			cr_assert_eq((intptr_t)items[i], next++, "order");
	}
	cr_assert_eq(next, 1001, "only %ld of 1000 items came out", (long)(next - 1));
	pthread_join(t, &p);
	cr_expect_null(p);
	brg_queue_free(q);
}

static void *blocked_push(void *arg)
{
	return (void *)(intptr_t)brg_queue_push(arg, (void *)7);
}

Test(brg_queue, close_wakes_waiters_and_drains)
{
	struct brg_queue *q;
	pthread_t t;
	void *p, *rc;
	cr_assert_eq(brg_queue_new(1, &q), BRG_OK);
	cr_assert_eq(brg_queue_push(q, (void *)5), BRG_OK);
	pthread_create(&t, NULL, blocked_push, q);
	h_sleep_ms(50);
	brg_queue_close(q);
	pthread_join(t, &rc);
	cr_expect_eq((intptr_t)rc, BRG_ECLOSED);
	cr_expect_eq(brg_queue_push(q, (void *)6), BRG_ECLOSED);
	cr_assert_eq(brg_queue_pop(q, &p, -1), BRG_OK, "queued items survive the close");
	cr_expect_eq((intptr_t)p, 5);
	cr_expect_eq(brg_queue_pop(q, &p, -1), BRG_ECLOSED);
	brg_queue_free(q);
}
