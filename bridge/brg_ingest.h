/* brg_ingest.h - the bridge pipeline. The transport thread submits messages; they are
 * dispatched by device id to N verifier threads (so one device's messages stay in order, its
 * Birth before its batches), then to one writer thread that commits them in group
 * transactions and, only after each commit, publishes the signed acks and task lists.
 * Every stage is bounded (queue depths and a byte budget): when the store is slow or down,
 * submit blocks, the transport stops reading and the broker queues. */
#ifndef BRG_INGEST_H
#define BRG_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "brg_commit.h"
#include "brg_err.h"
#include "brg_item.h"
#include "brg_registry.h"
#include "brg_verify.h"
#include "store.h"
#include "wire_sign.h"

/* Publish QoS 1 (with correlation data when corr is not NULL); 0 if queued for sending. */
typedef int (*brg_publish_fn)(void *ctx, const char *topic, const void *payload, size_t len,
                              const void *corr, size_t corr_len);

struct brg_ingest_opts {
	int workers;         /* verifier threads, >= 1 */
	size_t queue_depth;  /* per verifier */
	size_t writer_queue; /* verified items waiting for the writer */
	size_t max_memory;   /* bytes of messages in flight */
	size_t group_max;    /* items per transaction */
	size_t group_max_readings;
	int64_t retry_min_ms, retry_max_ms;
	int64_t shutdown_timeout_ms; /* after brg_ingest_stop: give up committing after this */
	int64_t health_interval_ms;
	struct brg_commit_opts commit;
	const struct wire_key *bridge_key; /* borrowed: signs acks and task lists */
	brg_publish_fn publish;
	void *publish_ctx;
	brg_log_fn log;
	void *log_ctx;
};

struct brg_stats {
	uint64_t received, dropped_at_stop, envelopes, readings, duplicates, rejected, unjudged;
	uint64_t commits, commit_failures, acks, task_lists, publish_failures;
	size_t queued; /* items in the pipeline now */
	size_t memory; /* bytes charged now */
};

struct brg_ingest;

/* writer: the writer thread's store connection (borrowed). reg, ver, key borrowed. */
int brg_ingest_new(struct store *writer, struct brg_registry *reg, struct brg_verifier *ver,
                   const struct brg_ingest_opts *o, struct brg_ingest **out);

/* Start the threads. */
int brg_ingest_start(struct brg_ingest *in);

/* Hand over one message (taken: freed by the pipeline). Blocks while the pipeline is full.
 * Once a stop began it still takes messages (the transport's PUBACK went out: a message
 * dropped here is lost to the broker), waiting for room at most until the stop's deadline;
 * past it, or after brg_ingest_stop closed the intake, the message is given up (counted in
 * what the stop says it gave up on; not acknowledged, so the device resends it) and
 * BRG_ECLOSED returned. Called from the transport thread only. */
int brg_ingest_submit(struct brg_ingest *in, struct brg_msg *m);

/* Begin a stop: shutdown_timeout counts from now, the health sweep and certificate re-check
 * are no longer run. Messages are still taken (see brg_ingest_submit), verified, committed
 * and acknowledged: stop the transport's receiving now, then call brg_ingest_stop. */
void brg_ingest_begin_stop(struct brg_ingest *in);

/* Close the intake (beginning the stop if not yet), let the verifiers and the writer finish
 * what is queued (committing and acknowledging it; what is still queued at the deadline, as
 * behind a store that is down or slow, is given up unverified and uncommitted), and join the
 * threads. Returns BRG_OK if everything taken was committed, BRG_ETIMEDOUT if some was given
 * up (it was not acknowledged, so devices resend it). */
int brg_ingest_stop(struct brg_ingest *in);

/* Ask the writer to revoke devices whose stored certificate the (new) CRL revokes. */
void brg_ingest_recheck_certs(struct brg_ingest *in);

void brg_ingest_stats(struct brg_ingest *in, struct brg_stats *out);

void brg_ingest_free(struct brg_ingest *in); /* accepts NULL; stops first if needed */

#endif
