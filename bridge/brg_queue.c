/* brg_queue.c - bounded blocking FIFO (ring buffer, one mutex, two condition variables). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "brg_err.h"
#include "brg_queue.h"
#include "ocond.h"
#include "otime.h"

struct brg_queue {
	pthread_mutex_t mu;
	pthread_cond_t not_empty;
	pthread_cond_t not_full;
	void **ring;
	size_t cap, head, len;
	int closed;
};

int brg_queue_new(size_t cap, struct brg_queue **out)
{
	if (cap < 1)
		return BRG_EINVAL;
	struct brg_queue *q = calloc(1, sizeof(*q));
	if (!q || !(q->ring = calloc(cap, sizeof(void *))))
		goto fail;
	if (ocond_init(&q->not_empty))
		goto fail;
	if (ocond_init(&q->not_full)) {
		pthread_cond_destroy(&q->not_empty);
		goto fail;
	}
	pthread_mutex_init(&q->mu, NULL);
	q->cap = cap;
	*out = q;
	return BRG_OK;
fail:
	if (q)
		free(q->ring);
	free(q);
	return BRG_ENOMEM;
}

void brg_queue_free(struct brg_queue *q)
{
	if (!q)
		return;
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->not_empty);
	pthread_cond_destroy(&q->not_full);
	free(q->ring);
	free(q);
}

int brg_queue_push(struct brg_queue *q, void *item)
{
	pthread_mutex_lock(&q->mu);
	while (q->len == q->cap && !q->closed)
		pthread_cond_wait(&q->not_full, &q->mu);
	if (q->closed) {
		pthread_mutex_unlock(&q->mu);
		return BRG_ECLOSED;
	}
	q->ring[(q->head + q->len) % q->cap] = item;
	q->len++;
	pthread_cond_signal(&q->not_empty);
	pthread_mutex_unlock(&q->mu);
	return BRG_OK;
}

static void *take(struct brg_queue *q)
{
	void *item = q->ring[q->head];
	q->head = (q->head + 1) % q->cap;
	q->len--;
	return item;
}

int brg_queue_pop(struct brg_queue *q, void **item, int timeout_ms)
{
	int64_t until = otime_mono_ms() + timeout_ms;
	pthread_mutex_lock(&q->mu);
	while (q->len == 0 && !q->closed) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&q->not_empty, &q->mu);
		} else if (timeout_ms == 0 ||
		           ocond_wait_until(&q->not_empty, &q->mu, until) == -ETIMEDOUT) {
			if (q->len)
				break;
			pthread_mutex_unlock(&q->mu);
			return BRG_ETIMEDOUT;
		}
	}
	if (q->len == 0) {
		pthread_mutex_unlock(&q->mu);
		return BRG_ECLOSED;
	}
	*item = take(q);
	pthread_cond_signal(&q->not_full);
	pthread_mutex_unlock(&q->mu);
	return BRG_OK;
}

size_t brg_queue_pop_many(struct brg_queue *q, void **items, size_t max)
{
	size_t n = 0;
	pthread_mutex_lock(&q->mu);
	while (n < max && q->len)
		items[n++] = take(q);
	if (n)
		pthread_cond_broadcast(&q->not_full);
	pthread_mutex_unlock(&q->mu);
	return n;
}

void brg_queue_close(struct brg_queue *q)
{
	pthread_mutex_lock(&q->mu);
	q->closed = 1;
	pthread_cond_broadcast(&q->not_empty);
	pthread_cond_broadcast(&q->not_full);
	pthread_mutex_unlock(&q->mu);
}

size_t brg_queue_len(struct brg_queue *q)
{
	pthread_mutex_lock(&q->mu);
	size_t n = q->len;
	pthread_mutex_unlock(&q->mu);
	return n;
}
