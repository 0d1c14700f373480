/* brg_queue.h - a bounded blocking FIFO of pointers between pipeline threads. A full queue
 * blocks the producer: that is how backpressure travels from the database to the broker. */
#ifndef BRG_QUEUE_H
#define BRG_QUEUE_H

#include <stddef.h>

struct brg_queue;

/* cap >= 1. On success *out is owned by the caller: brg_queue_free(). */
int brg_queue_new(size_t cap, struct brg_queue **out);

/* Accepts NULL. Items still queued are not freed (drain first). */
void brg_queue_free(struct brg_queue *q);

/* Append item, waiting while the queue is full. BRG_ECLOSED once closed (item not taken). */
int brg_queue_push(struct brg_queue *q, void *item);

/* Take the oldest item, waiting up to timeout_ms (< 0: forever). BRG_ETIMEDOUT, or
 * BRG_ECLOSED when the queue is closed and empty. */
int brg_queue_pop(struct brg_queue *q, void **item, int timeout_ms);

/* Take up to max items without waiting; returns how many. */
size_t brg_queue_pop_many(struct brg_queue *q, void **items, size_t max);

/* Refuse further pushes and wake every waiter; queued items can still be popped. */
void brg_queue_close(struct brg_queue *q);

size_t brg_queue_len(struct brg_queue *q);

#endif
