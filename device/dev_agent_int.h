/* dev_agent_int.h - what the agent's files share, and nothing else may use:
 *   dev_agent.c        construction, sampling, sealing and spooling, the main loop
 *   dev_agent_tasks.c  running verified tasks and reporting their results
 * The public interface is dev_agent.h. */
#ifndef DEV_AGENT_INT_H
#define DEV_AGENT_INT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/random.h>

#include "dev_agent.h"
#include "dev_link.h"
#include "dev_proxy.h"
#include "wire_limits.h"
#include "wire_sign.h"
#include "wire_topic.h"

struct result;

struct dev_agent {
	struct dev_config *cfg;
	struct wire_key *key;
	struct wire_pubkey bridge_pub;
	char *cert_pem;
	struct dev_spool *spool;
	struct dev_catalog *catalog;
	struct dev_collect *collect;
	struct wire_batch_builder *builder;
	struct dev_uploader *up;
	struct dev_link *link;
	struct dev_tasks *tasks;
	WC_RNG rng;
	int rng_ready;
	int wake_fd;
	volatile sig_atomic_t stop;
	/* dev_agent_stop was called: set apart from stop, which a `restart` task sets too, and
	 * apart from restart, which that task may set after a stop came (from another thread) */
	volatile sig_atomic_t stop_asked;
	volatile sig_atomic_t reconnect;
	int restart;
	uint64_t restart_task; /* the id of the `restart` task that set restart */
	uint8_t boot_id[WIRE_BOOT_ID_LEN];
	int64_t started_at_ms;
	int64_t started_mono;
	int64_t next_sample, next_flush, next_poll;
	int birth_due;
	/* the last Birth sent on this connection: the uploader's ack count and the monotonic
	 * time then; and the wait before it goes again if no ack follows (birth_again) */
	uint64_t birth_acks;
	int64_t birth_sent, birth_retry_ms;
	int64_t birth_next_try; /* monotonic ms: a Birth that could not go is not tried before */
	char topic[WIRE_TOPIC_COUNT][WIRE_TOPIC_MAX];
	uint64_t samples, batches, sample_errors, spool_errors, bad_acks, tasks_run;
	int64_t last_spool_error_log;
	/* segment read errors already logged (log_read_errors), and when the upload's spool
	 * errors were last logged */
	uint64_t read_errors_logged;
	int64_t last_read_error_log, last_upload_error_log;
	/* acks beyond anything the spool handed out (a reset state directory), and when the last
	 * warning about them was logged (future_ack_due) */
	uint64_t future_acks;
	int64_t last_future_ack_log;
	/* readings the metric catalog refused, and when that was last logged (catalog_error_due) */
	uint64_t catalog_errors;
	int64_t last_catalog_error_log;
	/* the collector failure last warned of, when, and whether its end is still to be said
	 * (log_collect) */
	char collect_failure[160];
	int64_t last_collect_log;
	int collect_warned;
	char proxy[300];          /* the resolved HTTP CONNECT proxy (dev_proxy.h); "" = none */
	struct dev_proxy_env proxy_env; /* the proxy variables kept out of the environment */
	int64_t next_cert_check;  /* monotonic ms: no dev_tlscheck before (one per 10 minutes) */
	/* task results the spool could not take (disk full), oldest first; no polls meanwhile */
	struct result *unreported[WIRE_MAX_TASKS];
	size_t n_unreported;
};

/* ---------- dev_agent.c ---------- */

/* Seal a durable body (batch or task result, whose prev_seq the caller set) and spool it. */
int agent_spool_durable(struct dev_agent *a, uint32_t kind, uint64_t seq, const uint8_t *body,
			size_t len);
/* Sample every collector into the open batch. */
void agent_sample(struct dev_agent *a);
/* Seal the open batch into the spool: 0, or why not (it stays in memory). */
int agent_flush_batch(struct dev_agent *a);

/* ---------- dev_agent_tasks.c ---------- */

/* Write the task state a failed write left behind, if any. */
void agent_sync_tasks(struct dev_agent *a);

/* A task list arrived on our tasks topic: verify it and run what it may run. */
void agent_on_tasks(struct dev_agent *a, const struct dev_link_event *ev);
/* At start: report the task a previous run was running when it stopped. */
void agent_on_interrupted_task(struct dev_agent *a);
/* Store the results waiting in memory (disk full earlier), oldest first, while the spool takes
 * them. */
void agent_retry_results(struct dev_agent *a);
/* Free the results still waiting (at shutdown: they are lost, said in the log before). */
void agent_forget_results(struct dev_agent *a);

#endif
