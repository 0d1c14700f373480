/* h_fakebridge.h - a test double of outpost-bridge for device tests: subscribes with the bridge
 * identity, verifies every envelope with the device's certificate, records what arrived (in
 * memory: it commits nothing) and answers with acks signed by the bridge key, computed from the
 * prev_seq chain as docs/PROTOCOL.md says. It can also withhold acks, forge them with another
 * key, and answer task polls with a scripted task list. */
#ifndef H_FAKEBRIDGE_H
#define H_FAKEBRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

enum h_ack_mode {
	H_ACK_NORMAL, /* ack after every durable envelope */
	H_ACK_NONE,   /* receive and record, never ack */
	H_ACK_FORGED, /* ack everything, signed with a device key instead of the bridge key */
	H_ACK_FUTURE, /* ack up to a seq far beyond anything sent, signed with the bridge key */
};

struct h_fakebridge;

struct h_fakebridge *h_fakebridge_start(const struct h_broker *b, enum h_ack_mode mode);
void h_fakebridge_mode(struct h_fakebridge *fb, enum h_ack_mode mode);
void h_fakebridge_stop(struct h_fakebridge *fb); /* accepts NULL */

struct h_device_view {
	uint64_t births;
	uint64_t polls;
	uint64_t batches;	   /* distinct durable seqs */
	uint64_t duplicates;	   /* durable envelopes received again */
	uint64_t readings;	   /* readings in distinct batches */
	uint64_t bad;		   /* envelopes that failed verification */
	uint64_t frontier;	   /* the chain frontier (what the last ack said) */
	uint64_t results;	   /* distinct task results */
	uint64_t last_spool_records; /* from the last Birth */
	uint32_t last_sample_interval_s, last_batch_interval_s; /* from the last Birth */
	uint64_t dropped;	   /* envelopes reported dropped */
	int in_order;		   /* every sample time of a metric increased */
};

/* Snapshot of what arrived from device id (zeros if nothing). */
void h_fakebridge_view(struct h_fakebridge *fb, const char *id, struct h_device_view *v);

/* Poll the view of device id (every 50 ms, up to timeout_ms) until pred(view, arg) holds: 1,
 * or 0 on timeout; *out holds the last view either way. Predicates for it below. */
int h_fakebridge_wait(struct h_fakebridge *fb, const char *id, int timeout_ms,
                      int (*pred)(const struct h_device_view *v, uint64_t arg), uint64_t arg,
                      struct h_device_view *out);
int h_view_readings_at_least(const struct h_device_view *v, uint64_t n);
int h_view_births_at_least(const struct h_device_view *v, uint64_t n);
int h_view_batches_at_least(const struct h_device_view *v, uint64_t n);
int h_view_frontier_at_least(const struct h_device_view *v, uint64_t n);

/* Every (t_ms, value) received for metric name of device id, in arrival order of distinct
 * batches; returns how many were written (up to cap). */
size_t h_fakebridge_series(struct h_fakebridge *fb, const char *id, const char *metric,
			   int64_t *t, double *value, size_t cap);

/* The next task list answer: tasks of type `type` with id task_id for device `for_id` (NULL:
 * the polling device), expiring at expires_ms (0: in an hour), signed with the bridge key
 * unless bad_sig. The answer goes to the next poll of any device, once. */
void h_fakebridge_queue_task(struct h_fakebridge *fb, uint64_t task_id, const char *type,
			     const char *args, const char *for_id, int64_t expires_ms, int bad_sig);

/* The last TaskResult for task_id: status (Outpost__TaskStatus) and message; 0 if none yet. */
int h_fakebridge_result(struct h_fakebridge *fb, uint64_t task_id, char *message, size_t cap);

/* The value of output key `key` in the last TaskResult for task_id, into value (cut at cap):
 * 1, or 0 if there is no such result or key. */
int h_fakebridge_result_output(struct h_fakebridge *fb, uint64_t task_id, const char *key,
			       char *value, size_t cap);

/* Replay the last task list sent, verbatim, to its device. */
void h_fakebridge_replay_tasks(struct h_fakebridge *fb);

#endif
