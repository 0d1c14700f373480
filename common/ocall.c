/* ocall.c - a blocking call on a thread of its own, abandoned to it at a deadline. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "ocall.h"
#include "ocond.h"

/* Shared by the caller and the thread running fn: two references, one each, dropped under mu;
 * the last one out frees it. */
struct call {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	void (*fn)(void *);
	void (*late)(void *);
	void *arg;
	int done, refs;
};

static void call_free(struct call *c)
{
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static void *run(void *p)
{
	struct call *c = p;
	c->fn(c->arg);
	pthread_mutex_lock(&c->mu);
	c->done = 1;
	int last = !--c->refs; /* the caller gave up waiting: all is this thread's */
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (last) {
		if (c->late)
			c->late(c->arg);
		call_free(c);
	}
	return NULL;
}

int ocall_until(void (*fn)(void *arg), void *arg, void (*late)(void *arg), int64_t deadline_ms)
{
	struct call *c = calloc(1, sizeof(*c));
	sigset_t all, old;
	pthread_t t;
	if (!c)
		return OCALL_ENOMEM;
	if (ocond_init(&c->cv)) {
		free(c);
		return OCALL_ENOMEM;
	}
	pthread_mutex_init(&c->mu, NULL);
	c->fn = fn;
	c->late = late;
	c->arg = arg;
	c->refs = 2;
	/* signals are the business of the caller's threads (a TERM taken on this one would go
	 * unread), never the helper's: it starts with every signal blocked */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int crc = pthread_create(&t, NULL, run, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (crc) {
		call_free(c);
		return OCALL_ETHREAD;
	}
	pthread_mutex_lock(&c->mu);
	while (!c->done && ocond_wait_until(&c->cv, &c->mu, deadline_ms) == 0)
		;
	int done = c->done;
	c->refs--;
	pthread_mutex_unlock(&c->mu);
	if (!done) {
		pthread_detach(t); /* c is the thread's now, and with late so is arg */
		return OCALL_ELATE;
	}
	/* the thread dropped its reference before it signalled, so this one is the last; the join
	 * waits out the thread's last touch of mu before the free */
	pthread_join(t, NULL);
	call_free(c);
	return OCALL_OK;
}
