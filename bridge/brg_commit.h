/* brg_commit.h - the writer's transactions: apply a group of verified items to the store in
 * one transaction (dedupe by UNIQUE (device, seq), replay checks, enrolment, rejection
 * counting and quarantine, task polls and results, chain frontier and gaps), and the periodic
 * health sweep. Nothing leaves the bridge until the transaction committed: the caller
 * publishes the replies of the outcome only after brg_commit_group() returned 0. */
#ifndef BRG_COMMIT_H
#define BRG_COMMIT_H

#include <stddef.h>
#include <stdint.h>

#include "brg_chain.h"
#include "brg_item.h"
#include "brg_registry.h"
#include "brg_verify.h"
#include "store.h"

/* A task on its way to a device (TaskList). Strings owned by the outcome. */
struct brg_task {
	uint64_t id;
	char type[WIRE_MAX_TASK_TYPE + 1];
	int64_t expires_at_ms;
	int64_t created_at_ms;
	size_t n_args;
	char **keys;
	char **values;
};

enum brg_reply_kind { BRG_REPLY_ACK, BRG_REPLY_TASKS };

/* Something to publish after the commit. */
struct brg_reply {
	enum brg_reply_kind kind;
	char device[WIRE_ID_MAX + 1];
	uint64_t seq;             /* ACK: the frontier (Ack.upto); TASKS: the poll's seq */
	struct brg_range *ranges; /* ACK */
	size_t n_ranges;
	struct brg_task *tasks; /* TASKS */
	size_t n_tasks;
	uint8_t corr[BRG_CORR_MAX];
	size_t corr_len;
	int has_corr;
};

/* An event worth a log line (level: enum olog_level). */
struct brg_note {
	int level;
	char device[WIRE_ID_MAX + 1];
	char text[240];
};

/* The store's view of a device after the commit, for the registry. */
struct brg_devstate {
	char device[WIRE_ID_MAX + 1];
	struct brg_dev_info info;
	int judged_birth; /* a Birth with judged_key was judged (stored or not): the registry
	                   * no longer keeps it pending (brg_registry_birth_judged) */
	struct wire_pubkey judged_key;
};

/* Result of one transaction. Zero-initialise; brg_outcome_clear() between uses. */
struct brg_outcome {
	struct brg_reply *replies;
	size_t n_replies, cap_replies;
	struct brg_note *notes;
	size_t n_notes, cap_notes;
	struct brg_devstate *states;
	size_t n_states, cap_states;
	uint64_t envelopes, readings, duplicates, rejected, unjudged;
};

/* After the commit: the store's view of the group's devices into the verifiers' registry,
 * and the Births the writer judged out of its pending ones. */
void brg_outcome_to_registry(const struct brg_outcome *o, struct brg_registry *r);

void brg_outcome_clear(struct brg_outcome *o); /* frees what the entries own, keeps arrays */
void brg_outcome_free(struct brg_outcome *o);

struct brg_commit_opts {
	int quarantine_after;        /* consecutive rejections that quarantine; 0 = never */
	int offline_factor;          /* silent for factor x interval = offline */
	int64_t offline_min_ms;      /* ... but never less than this */
	int64_t default_interval_ms; /* interval of a device that did not report one */
	int64_t deactivate_after_ms; /* silent this long = deactivated; 0 = never */
	int64_t event_retention_ms;  /* delete events older than this; 0 = keep */
	int64_t gap_grace_ms;        /* a hole in a chain becomes a 'missing' gap after this */
	/* PostgreSQL: a group with this many durable envelopes or more looks them up in one query
	 * and inserts the new ones by COPY (brg_envrows.c); fewer go row by row, in one round
	 * trip each instead of three in all. */
	int env_bulk_min;
	int64_t max_device_metrics; /* metric names kept per device (brg_commit__catalog) */
};
#define BRG_ENV_BULK_MIN 4
#define BRG_MAX_DEVICE_METRICS (4 * WIRE_MAX_METRICS)
#define BRG_COMMIT_OPTS_INIT                                                                       \
	{                                                                                          \
		5, 3, 30000, 60000, 90LL * 86400000, 0, 60000, BRG_ENV_BULK_MIN,                  \
		    BRG_MAX_DEVICE_METRICS                                                         \
	}

struct brg_committer;

/* s: the writer's connection (borrowed; the committer prepares its statements on it). */
int brg_committer_new(struct store *s, const struct brg_commit_opts *o, struct brg_committer **out);
void brg_committer_free(struct brg_committer *c); /* accepts NULL */

/* Apply items[0..n) in one transaction at time now_ms. On success returns 0 and appends to
 * out what to publish, log and cache. On failure returns a store error (store_errmsg() has
 * the detail): the transaction was rolled back, out is as before and the items can be
 * retried unchanged. Except STORE_EUNKNOWN: the connection broke after COMMIT was sent and the
 * group may be stored or not. Then out keeps what the group appended; nothing may be
 * published, nor the group applied again (its rejections would count twice), before
 * brg_commit_settle() with what store_commit_resolve() learnt. */
int brg_commit_group(struct brg_committer *c, struct brg_item *const *items, size_t n,
                     int64_t now_ms, struct brg_outcome *out);

/* After STORE_EUNKNOWN: committed 1 makes it as if brg_commit_group() had returned 0;
 * committed 0 makes it a failure (out as before the group; retry the items). */
void brg_commit_settle(struct brg_committer *c, int committed, struct brg_outcome *out);

/* Health sweep in its own transaction: silent devices offline, long-silent ones deactivated,
 * expired tasks expired, old events deleted. Same error contract. */
int brg_commit_maintain(struct brg_committer *c, int64_t now_ms, struct brg_outcome *out);

/* After a CRL change: revoke every enrolled device whose stored certificate v now refuses as
 * revoked. Same error contract. */
int brg_commit_recheck_certs(struct brg_committer *c, struct brg_verifier *v, int64_t now_ms,
                             struct brg_outcome *out);

#endif
