/* brg_ingest.c - pipeline threads: dispatch by device, verifiers, the group-committing writer,
 * acknowledgements after commit, bounded memory (see brg_ingest.h). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "brg_ingest.h"
#include "brg_queue.h"
#include "brg_reply.h"
#include "ocond.h"
#include "olog.h"
#include "otime.h"
#include "store_ops.h"
#include "wire_cert.h"
#include "wire_topic.h"

struct worker {
	struct brg_ingest *in;
	struct brg_queue *q;
	pthread_t th;
	int started;
};

struct brg_ingest {
	struct brg_ingest_opts o;
	struct store *store;
	struct brg_registry *reg;
	struct brg_verifier *ver;
	struct brg_committer *com;
	struct worker *workers;
	struct brg_queue *wq;
	pthread_t writer;
	int writer_started;
	pthread_t canceller; /* from brg_ingest_begin_stop on */
	int canceller_started;

	pthread_mutex_t mu; /* everything below */
	pthread_cond_t room;
	pthread_cond_t writer_end; /* writer_done set (ocond: waited on until a deadline) */
	int writer_done;
	size_t mem_used;
	int stopping; /* brg_ingest_begin_stop: the deadline runs */
	int closed;   /* brg_ingest_stop: intake is closed */
	int stopped;
	int workers_alive;
	int recheck;
	uint64_t checked_gen; /* writer only: the CA generation the last re-check covered */
	int gave_up;
	uint64_t abandoned;    /* messages given up at a stop, uncommitted (intake's too) */
	int64_t stop_deadline; /* monotonic ms */
	struct brg_stats st;
};

static void logf_(struct brg_ingest *in, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(struct brg_ingest *in, int level, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	if (!in->o.log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	in->o.log(in->o.log_ctx, level, line);
}

int brg_ingest_new(struct store *writer, struct brg_registry *reg, struct brg_verifier *ver,
                   const struct brg_ingest_opts *o, struct brg_ingest **out)
{
	if (o->workers < 1 || !o->queue_depth || !o->writer_queue || !o->group_max ||
	    !o->bridge_key || !o->publish)
		return BRG_EINVAL;
	struct brg_ingest *in = calloc(1, sizeof(*in));
	if (!in)
		return BRG_ENOMEM;
	in->o = *o;
	in->store = writer;
	in->reg = reg;
	in->ver = ver;
	pthread_mutex_init(&in->mu, NULL);
	pthread_cond_init(&in->room, NULL);
	int rc = BRG_ENOMEM;
	if (ocond_init(&in->writer_end)) {
		pthread_mutex_destroy(&in->mu);
		pthread_cond_destroy(&in->room);
		free(in);
		return BRG_ENOMEM;
	}
	in->workers = calloc((size_t)o->workers, sizeof(*in->workers));
	if (!in->workers || brg_queue_new(o->writer_queue, &in->wq))
		goto fail;
	for (int i = 0; i < o->workers; i++) {
		in->workers[i].in = in;
		if (brg_queue_new(o->queue_depth, &in->workers[i].q))
			goto fail;
	}
	if (brg_committer_new(writer, &o->commit, &in->com)) {
		rc = BRG_ESTORE;
		goto fail;
	}
	*out = in;
	return BRG_OK;
fail:
	brg_ingest_free(in);
	return rc;
}

/* ---- memory budget ---- */

static void release(struct brg_ingest *in, size_t cost)
{
	pthread_mutex_lock(&in->mu);
	in->mem_used -= cost < in->mem_used ? cost : in->mem_used;
	pthread_cond_broadcast(&in->room);
	pthread_mutex_unlock(&in->mu);
}

static void done_item(struct brg_ingest *in, struct brg_item *it)
{
	size_t cost = it->cost;
	brg_item_free(it);
	release(in, cost);
}

/* ---- intake ---- */

static size_t pick(const struct brg_ingest *in, const char *topic)
{
	/* outpost/v1/<id>/...: hash the id so one device always meets the same verifier. */
	const char *id = strncmp(topic, WIRE_TOPIC_PREFIX, sizeof(WIRE_TOPIC_PREFIX) - 1)
	                     ? topic
	                     : topic + sizeof(WIRE_TOPIC_PREFIX) - 1;
	uint64_t h = 1469598103934665603ull;
	for (const char *p = id; *p && *p != '/'; p++)
		h = (h ^ (uint8_t)*p) * 1099511628211ull;
	return (size_t)(h % (uint64_t)in->o.workers);
}

static int stopping_past_deadline(struct brg_ingest *in)
{
	pthread_mutex_lock(&in->mu);
	int past = in->stopping && otime_mono_ms() >= in->stop_deadline;
	pthread_mutex_unlock(&in->mu);
	return past;
}

/* Past a stop's deadline, what is still queued is not worked on: it is not acknowledged, and
 * the devices resend it. (A store that is down would cost each message its retries.) */
static void abandon(struct brg_ingest *in, uint64_t n)
{
	pthread_mutex_lock(&in->mu);
	in->gave_up = 1;
	in->abandoned += n;
	in->st.dropped_at_stop += n;
	pthread_mutex_unlock(&in->mu);
}

/* Wait for room until the stop's deadline (in->mu held). */
static void wait_room_until_deadline(struct brg_ingest *in)
{
	struct timespec until = otime_after(CLOCK_REALTIME, in->stop_deadline - otime_mono_ms());
	pthread_cond_timedwait(&in->room, &in->mu, &until);
}

int brg_ingest_submit(struct brg_ingest *in, struct brg_msg *m)
{
	/* Charge the decoded form too: each reading takes at least one byte on the wire and a
	 * struct wire_reading once decoded, so this bounds what the writer will hold. */
	size_t cells = m->len < WIRE_MAX_CELLS ? m->len : WIRE_MAX_CELLS;
	m->cost += cells * sizeof(struct wire_reading);
	pthread_mutex_lock(&in->mu);
	in->st.received++;
	/* One message may always enter an empty pipeline, so a big one cannot wedge it. A stop
	 * takes what the transport still hands over (the broker had its PUBACK), waiting for
	 * room no longer than the stop's deadline. */
	int past;
	for (;;) {
		past = in->stopping && otime_mono_ms() >= in->stop_deadline;
		if (in->closed || past || !in->mem_used ||
		    in->mem_used + m->cost <= in->o.max_memory)
			break;
		if (in->stopping)
			wait_room_until_deadline(in);
		else
			pthread_cond_wait(&in->room, &in->mu);
	}
	if (in->closed || past) {
		pthread_mutex_unlock(&in->mu);
		abandon(in, 1);
		free(m);
		return BRG_ECLOSED;
	}
	in->mem_used += m->cost;
	pthread_mutex_unlock(&in->mu);
	size_t cost = m->cost;
	if (brg_queue_push(in->workers[pick(in, m->topic)].q, m)) {
		free(m);
		release(in, cost);
		abandon(in, 1);
		return BRG_ECLOSED;
	}
	return BRG_OK;
}

/* ---- verifiers ---- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct brg_ingest *in = w->in;
	void *p;
	while (brg_queue_pop(w->q, &p, -1) == BRG_OK) {
		struct brg_msg *m = p;
		size_t cost = m->cost;
		struct brg_item *it = NULL;
		if (stopping_past_deadline(in)) {
			abandon(in, 1);
			release(in, cost);
			free(m);
			continue;
		}
		if (brg_verify(in->ver, m, &it)) {
			release(in, cost); /* out of memory: dropped, the device resends */
			continue;
		}
		if (brg_queue_push(in->wq, it))
			done_item(in, it);
	}
	wire_thread_cleanup();
	pthread_mutex_lock(&in->mu);
	int last = --in->workers_alive == 0;
	pthread_mutex_unlock(&in->mu);
	if (last)
		brg_queue_close(in->wq);
	return NULL;
}

/* ---- writer ---- */

static void publish_outcome(struct brg_ingest *in, struct brg_outcome *out, int64_t now)
{
	uint64_t acks = 0, lists = 0, fails = 0;
	for (size_t i = 0; i < out->n_replies; i++) {
		const struct brg_reply *r = &out->replies[i];
		char topic[WIRE_TOPIC_MAX];
		uint8_t *buf = NULL;
		size_t len = 0;
		int rc = brg_reply_seal(in->o.bridge_key, r, now, topic, &buf, &len);
		if (!rc)
			rc = in->o.publish(in->o.publish_ctx, topic, buf, len,
			                   r->has_corr ? r->corr : NULL, r->corr_len);
		free(buf);
		if (rc) {
			fails++;
			logf_(in, OLOG_WARN,
			      "[%s] could not publish %s (seq %llu); the device will ask again",
			      r->device, r->kind == BRG_REPLY_ACK ? "ack" : "task list",
			      (unsigned long long)r->seq);
		} else if (r->kind == BRG_REPLY_ACK) {
			acks++;
		} else {
			lists++;
		}
	}
	brg_outcome_to_registry(out, in->reg);
	for (size_t i = 0; i < out->n_notes; i++) {
		const struct brg_note *n = &out->notes[i];
		if (n->device[0])
			logf_(in, n->level, "[%s] %s", n->device, n->text);
		else
			logf_(in, n->level, "%s", n->text);
	}
	pthread_mutex_lock(&in->mu);
	in->st.envelopes += out->envelopes;
	in->st.readings += out->readings;
	in->st.duplicates += out->duplicates;
	in->st.rejected += out->rejected;
	in->st.unjudged += out->unjudged;
	in->st.acks += acks;
	in->st.task_lists += lists;
	in->st.publish_failures += fails;
	pthread_mutex_unlock(&in->mu);
	brg_outcome_clear(out);
}

/* Sleep up to ms, waking early once a stop's deadline has passed. */
static void backoff(struct brg_ingest *in, int64_t ms)
{
	int64_t end = otime_mono_ms() + ms;
	while (otime_mono_ms() < end && !stopping_past_deadline(in)) {
		int64_t left = end - otime_mono_ms();
		struct timespec ts = {0, (long)((left > 50 ? 50 : left) * 1000000L)};
		nanosleep(&ts, NULL);
	}
}

/* The connection broke after COMMIT was sent: ask the database what became of the
 * transaction (what: "commit of 3 message(s)", for the log; then: what happens to work not
 * committed, "retrying it") before anything is published or applied again. 0 if it
 * committed, else an error (out is then unwound, the work to be done again). */
static int settle(struct brg_ingest *in, const char *what, const char *then,
                  struct brg_outcome *out)
{
	int64_t delay = in->o.retry_min_ms;
	for (int attempt = 1;; attempt++) {
		int r = store_commit_resolve(in->store);
		if (r >= 0) {
			brg_commit_settle(in->com, r, out);
			logf_(in, OLOG_INFO, "the unanswered %s %s%s", what,
			      r ? "did commit" : "did not commit; ", r ? "" : then);
			return r ? STORE_OK : STORE_ECONN;
		}
		if (attempt == 1 || attempt % 10 == 0)
			logf_(in, OLOG_WARN,
			      "%s: the connection broke before the database answered; asking what "
			      "became of it (attempt %d): %s: %s",
			      what, attempt, store_strerror(r), store_errmsg(in->store));
		if (!store_err_transient(r) || stopping_past_deadline(in)) {
			brg_commit_settle(in->com, 0, out);
			logf_(in, OLOG_ERROR,
			      "%s: outcome unknown (%s); treated as not committed: if it was, "
			      "what it counted (rejections, events) counts twice",
			      what, store_strerror(r));
			return r;
		}
		backoff(in, delay);
		delay = delay * 2 > in->o.retry_max_ms ? in->o.retry_max_ms : delay * 2;
	}
}

/* Commit items (retrying while the failure is transient); returns 1 if committed. */
static int commit(struct brg_ingest *in, struct brg_item **items, size_t n, struct brg_outcome *out)
{
	int64_t delay = in->o.retry_min_ms;
	for (int attempt = 1;; attempt++) {
		int64_t now = store_now_ms();
		int rc = brg_commit_group(in->com, items, n, now, out);
		if (rc == STORE_EUNKNOWN) {
			char what[48];
			snprintf(what, sizeof(what), "commit of %zu message(s)", n);
			rc = settle(in, what, "retrying it", out);
		}
		if (!rc) {
			pthread_mutex_lock(&in->mu);
			in->st.commits++;
			pthread_mutex_unlock(&in->mu);
			if (attempt > 1)
				logf_(in, OLOG_INFO,
				      "store back: committed %zu message(s) after %d attempts", n,
				      attempt);
			publish_outcome(in, out, now);
			return 1;
		}
		pthread_mutex_lock(&in->mu);
		in->st.commit_failures++;
		pthread_mutex_unlock(&in->mu);
		if (attempt == 1 || attempt % 10 == 0)
			logf_(in, OLOG_WARN,
			      "commit of %zu message(s) failed (attempt %d): %s: %s; nothing "
			      "acknowledged, "
			      "retrying",
			      n, attempt, store_strerror(rc), store_errmsg(in->store));
		if (!store_err_transient(rc) && attempt >= 3) {
			if (n > 1) {
				/* Isolate what the store refuses instead of blocking everything.
				 * Each item may cost a store wait (busy_timeout) before it sees
				 * the deadline: past it, the rest is given up at once. */
				for (size_t i = 0; i < n; i++) {
					if (stopping_past_deadline(in)) {
						abandon(in, n - i);
						break;
					}
					commit(in, &items[i], 1, out);
				}
				return 1;
			}
			if (items[0]->kind == BRG_ITEM_BIRTH)
				brg_registry_birth_judged(in->reg, items[0]->device,
				                          &items[0]->key);
			logf_(in, OLOG_ERROR,
			      "[%s] message dropped: the store refuses it (%s: %s); it is "
			      "not acknowledged",
			      items[0]->device, store_strerror(rc), store_errmsg(in->store));
			return 0;
		}
		if (stopping_past_deadline(in)) {
			abandon(in, n);
			return 0;
		}
		backoff(in, delay);
		delay = delay * 2 > in->o.retry_max_ms ? in->o.retry_max_ms : delay * 2;
	}
}

static void maintain(struct brg_ingest *in, struct brg_outcome *out)
{
	int64_t now = store_now_ms();
	int rc = brg_commit_maintain(in->com, now, out);
	if (rc == STORE_EUNKNOWN)
		rc = settle(in, "commit of the health sweep", "it runs again next time", out);
	if (rc) {
		logf_(in, OLOG_WARN, "health sweep failed: %s: %s (next time)", store_strerror(rc),
		      store_errmsg(in->store));
		return;
	}
	publish_outcome(in, out, now);
}

static void recheck(struct brg_ingest *in, struct brg_outcome *out)
{
	int64_t now = store_now_ms();
	uint64_t gen = brg_verifier_ca_gen(in->ver);
	int rc = brg_commit_recheck_certs(in->com, in->ver, now, out);
	if (rc == STORE_EUNKNOWN)
		rc = settle(in, "commit of the certificate re-check", "retrying it later", out);
	if (rc) {
		logf_(in, OLOG_WARN, "certificate re-check failed: %s: %s (retrying later)",
		      store_strerror(rc), store_errmsg(in->store));
		pthread_mutex_lock(&in->mu);
		in->recheck = 1;
		pthread_mutex_unlock(&in->mu);
		return;
	}
	in->checked_gen = gen;
	publish_outcome(in, out, now);
}

/* A Birth checked against a CA/CRL older than the last re-check, and committed after it,
 * stored a certificate the re-check did not see: one more re-check judges it. */
static int checked_before_recheck(const struct brg_ingest *in, struct brg_item **items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (items[i]->kind == BRG_ITEM_BIRTH && items[i]->ca_gen < in->checked_gen)
			return 1;
	return 0;
}

static size_t item_readings(const struct brg_item *it)
{
	return it->kind == BRG_ITEM_BATCH && it->batch ? it->batch->n_readings : 0;
}

static void writer_run(struct brg_ingest *in)
{
	struct brg_outcome out = {0};
	struct brg_item **items = calloc(in->o.group_max, sizeof(*items));
	int64_t next_health = otime_mono_ms() + in->o.health_interval_ms;
	if (!items) {
		logf_(in, OLOG_ERROR, "writer: out of memory");
		return;
	}
	for (;;) {
		int64_t wait = next_health - otime_mono_ms();
		void *p = NULL;
		int rc = brg_queue_pop(in->wq, &p, wait > 0 ? (int)wait : 0);
		if (rc == BRG_ECLOSED)
			break;
		if (rc == BRG_OK) {
			size_t n = 0, readings = 0;
			items[n++] = p;
			readings += item_readings(p);
			/* Whatever queued up meanwhile joins this transaction. */
			while (n < in->o.group_max && readings < in->o.group_max_readings &&
			       brg_queue_pop_many(in->wq, &p, 1) == 1) {
				items[n++] = p;
				readings += item_readings(p);
			}
			int stale = checked_before_recheck(in, items, n);
			if (stopping_past_deadline(in))
				abandon(in, n);
			else
				commit(in, items, n, &out);
			for (size_t i = 0; i < n; i++)
				done_item(in, items[i]);
			if (stale) {
				pthread_mutex_lock(&in->mu);
				in->recheck = 1;
				pthread_mutex_unlock(&in->mu);
			}
		}
		pthread_mutex_lock(&in->mu);
		int want_recheck = in->recheck && !in->stopping;
		in->recheck = 0;
		int stopping = in->stopping;
		pthread_mutex_unlock(&in->mu);
		if (want_recheck)
			recheck(in, &out);
		if (otime_mono_ms() >= next_health) {
			if (!stopping) /* no sweep at a stop; the wait still moves (no spinning) */
				maintain(in, &out);
			next_health = otime_mono_ms() + in->o.health_interval_ms;
		}
	}
	brg_outcome_free(&out);
	free(items);
}

static void *writer_main(void *arg)
{
	struct brg_ingest *in = arg;
	writer_run(in);
	wire_thread_cleanup();
	pthread_mutex_lock(&in->mu);
	in->writer_done = 1;
	pthread_cond_broadcast(&in->writer_end);
	pthread_mutex_unlock(&in->mu);
	return NULL;
}

/* A stop's canceller thread, started with it. Past shutdown_timeout the writer gives up what
 * is queued, but a statement the database makes wait (a lock another session holds:
 * PostgreSQL has no lock_timeout unless the operator sets one) would hold the stop for as
 * long, and with it the verifiers and the intake once the queues are full: from the deadline
 * on, until the writer ends, its statement is cancelled once a second, for at most a minute
 * (then the stop waits: a statement that ignores cancels is the network's, which
 * tcp_user_timeout ends). So is the registry's, where a verifier may wait on the same lock
 * for a device it has not cached; after the deadline such a device's messages are dropped
 * unjudged (not acknowledged: sent again). */
static void *canceller_main(void *arg)
{
	struct brg_ingest *in = arg;
	enum { CANCELS = 60, CANCEL_EVERY_MS = 1000 };
	int cancels = 0;
	pthread_mutex_lock(&in->mu);
	int64_t at = in->stop_deadline;
	while (!in->writer_done && cancels < CANCELS) {
		if (ocond_wait_until(&in->writer_end, &in->mu, at) != -ETIMEDOUT)
			continue;
		pthread_mutex_unlock(&in->mu);
		store_interrupt(in->store);
		brg_registry_interrupt(in->reg);
		if (!cancels++)
			logf_(in, OLOG_WARN,
			      "shutdown: not done after shutdown_timeout; cancelling the "
			      "statements still running in the database");
		pthread_mutex_lock(&in->mu);
		at = otime_mono_ms() + CANCEL_EVERY_MS;
	}
	pthread_mutex_unlock(&in->mu);
	return NULL;
}

/* ---- lifecycle ---- */

int brg_ingest_start(struct brg_ingest *in)
{
	in->workers_alive = in->o.workers;
	for (int i = 0; i < in->o.workers; i++) {
		if (pthread_create(&in->workers[i].th, NULL, worker_main, &in->workers[i]))
			goto fail;
		in->workers[i].started = 1;
	}
	if (pthread_create(&in->writer, NULL, writer_main, in))
		goto fail;
	in->writer_started = 1;
	return BRG_OK;
fail:
	pthread_mutex_lock(&in->mu);
	for (int i = 0; i < in->o.workers; i++)
		if (!in->workers[i].started)
			in->workers_alive--;
	pthread_mutex_unlock(&in->mu);
	brg_ingest_stop(in);
	return BRG_ETHREAD;
}

void brg_ingest_begin_stop(struct brg_ingest *in)
{
	pthread_mutex_lock(&in->mu);
	if (!in->stopping) {
		in->stopping = 1;
		in->stop_deadline = otime_mono_ms() + in->o.shutdown_timeout_ms;
		pthread_cond_broadcast(&in->room); /* the wait for room is bounded now */
		in->canceller_started = in->writer_started &&
		                        !pthread_create(&in->canceller, NULL, canceller_main, in);
	}
	pthread_mutex_unlock(&in->mu);
}

int brg_ingest_stop(struct brg_ingest *in)
{
	brg_ingest_begin_stop(in);
	pthread_mutex_lock(&in->mu);
	if (in->stopped) {
		pthread_mutex_unlock(&in->mu);
		return in->gave_up ? BRG_ETIMEDOUT : BRG_OK;
	}
	in->closed = 1;
	pthread_cond_broadcast(&in->room);
	pthread_mutex_unlock(&in->mu);
	for (int i = 0; i < in->o.workers; i++)
		brg_queue_close(in->workers[i].q);
	for (int i = 0; i < in->o.workers; i++)
		if (in->workers[i].started)
			pthread_join(in->workers[i].th, NULL);
	/* Normally the last verifier closed it; covers a failed start too. */
	brg_queue_close(in->wq);
	if (in->writer_started)
		pthread_join(in->writer, NULL);
	if (in->canceller_started)
		pthread_join(in->canceller, NULL);
	/* Anything left (a failed start) is dropped unacknowledged. */
	void *p;
	for (int i = 0; i < in->o.workers; i++)
		while (brg_queue_pop(in->workers[i].q, &p, 0) == BRG_OK) {
			release(in, ((struct brg_msg *)p)->cost);
			free(p);
		}
	while (brg_queue_pop(in->wq, &p, 0) == BRG_OK)
		done_item(in, p);
	pthread_mutex_lock(&in->mu);
	in->stopped = 1;
	int gave_up = in->gave_up;
	uint64_t abandoned = in->abandoned;
	pthread_mutex_unlock(&in->mu);
	if (abandoned)
		logf_(in, OLOG_ERROR,
		      "shutdown: gave up on %llu message(s) after shutdown_timeout (%lld ms): not "
		      "committed, not acknowledged; devices will resend them",
		      (unsigned long long)abandoned, (long long)in->o.shutdown_timeout_ms);
	return gave_up ? BRG_ETIMEDOUT : BRG_OK;
}

void brg_ingest_recheck_certs(struct brg_ingest *in)
{
	pthread_mutex_lock(&in->mu);
	in->recheck = 1;
	pthread_mutex_unlock(&in->mu);
}

void brg_ingest_stats(struct brg_ingest *in, struct brg_stats *out)
{
	pthread_mutex_lock(&in->mu);
	*out = in->st;
	out->memory = in->mem_used;
	pthread_mutex_unlock(&in->mu);
	out->queued = brg_queue_len(in->wq);
	for (int i = 0; i < in->o.workers; i++)
		out->queued += brg_queue_len(in->workers[i].q);
}

void brg_ingest_free(struct brg_ingest *in)
{
	if (!in)
		return;
	if (in->workers && in->wq && (in->writer_started || in->workers[0].started))
		brg_ingest_stop(in);
	brg_committer_free(in->com);
	for (int i = 0; in->workers && i < in->o.workers; i++)
		brg_queue_free(in->workers[i].q);
	free(in->workers);
	brg_queue_free(in->wq);
	pthread_mutex_destroy(&in->mu);
	pthread_cond_destroy(&in->room);
	pthread_cond_destroy(&in->writer_end);
	free(in);
}
