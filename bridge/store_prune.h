/* store_prune.h - retention: delete what is older than a point in time, in small transactions
 * so that a running bridge keeps committing meanwhile. Used by `outpostctl prune`. */
#ifndef STORE_PRUNE_H
#define STORE_PRUNE_H

#include <stdint.h>

#include "store.h"

struct store_prune_counts {
	int64_t readings; /* readings with a reading time before the cut, or after the prune
	                   * started (a clock set ahead) in a batch stored before the cut */
	int64_t events;   /* events logged before it */
	int64_t gaps;     /* gaps resolved before it */
	int64_t tasks;    /* tasks finished before it (with their arguments and output) */
};

/* Delete, or with dry_run only count, what is older than before (Unix ms); a reading dated
 * after the call started is old when its batch (envelope row) was stored before it. Kept: devices,
 * metrics, rejection counters and the envelope records (small, and what lets the bridge
 * recognise a resend of anything it stored), open gaps and unfinished tasks.
 * Readings go one device and metric at a time, in windows of time sized to 5,000-50,000 rows,
 * a transaction ending after 50,000 rows or 250 ms of work; events go 10,000 per transaction.
 * *out receives the counts, also on failure (what was deleted until then). Returns 0 or a store_err
 * (STORE_EBUSY: the store stayed locked for longer than its busy timeout; run again, nothing
 * half-done is left). */
int store_prune(struct store *s, int64_t before, int dry_run, struct store_prune_counts *out);

/* Delete up to 10,000 of the oldest events logged before `before`, in the caller's transaction
 * (the bridge's event_retention runs it in its maintenance transaction); *deleted (optional)
 * receives how many. */
int store_prune_events_slice(struct store *s, int64_t before, int64_t *deleted);

#endif
