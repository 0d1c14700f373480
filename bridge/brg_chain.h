/* brg_chain.h - a device's durable chain (docs/PROTOCOL.md sections 2-4): from the frontier
 * and the links stored above it, the new frontier, the ranges to acknowledge and the holes
 * (gaps still missing). Pure computation, no I/O. */
#ifndef BRG_CHAIN_H
#define BRG_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "wire_limits.h"

/* One chain link prev -> seq: a stored envelope (stored = 1) or a Dropped record the device
 * reported (stored = 0: prev_seq -> last_seq stands for envelopes that will never come). */
struct brg_link {
	uint64_t prev;
	uint64_t seq;
	int stored;
	int64_t at; /* when it was stored (ms); for holes' age */
};

/* Inclusive seq range. For holes: the envelopes in (first - 1, last] are missing, i.e.
 * first = the last seq known + 1 and last = the prev_seq the next stored link points at. */
struct brg_range {
	uint64_t first;
	uint64_t last;
};

#define BRG_CHAIN_MAX_HOLES 64

/* A missing stretch: envelopes in [first, last] never arrived (last is the prev_seq of the
 * stored link after the hole); since = when that link was stored. */
struct brg_hole {
	uint64_t first;
	uint64_t last;
	int64_t since;
};

struct brg_chain {
	uint64_t frontier; /* every link up to here is stored or dropped */
	size_t n_ranges;   /* complete stored segments above the frontier, ascending */
	struct brg_range ranges[WIRE_MAX_ACK_RANGES];
	size_t n_holes; /* missing stretches: (frontier, first segment) and between segments */
	struct brg_hole holes[BRG_CHAIN_MAX_HOLES];
	/* fork_to != 0: the chain stopped at fork_from and went on by a stored link from below
	 * it to fork_to (see brg_chain_compute); the envelopes in (fork_from, fork_to) will never
	 * come. */
	uint64_t fork_from;
	uint64_t fork_to;
};

/* Compute the chain from frontier and links (any order; the array is sorted in place).
 * Links with seq <= prev are ignored. Ranges beyond WIRE_MAX_ACK_RANGES and holes beyond
 * BRG_CHAIN_MAX_HOLES are left out, newest first.
 *
 * A stored link from below the frontier to above it says the device's history forked: after
 * prev it numbered seq, while the store's chain went on past prev (its state directory was
 * restored from a backup, or two devices share its identity). While nothing else leaves the
 * frontier, the lowest such link stored at or before fork_before (ms; INT64_MIN: none) is
 * followed once: the chain goes on from its seq (fork_from/fork_to). Younger ones wait, as
 * holes do, for the links that may still arrive out of order. */
void brg_chain_compute(uint64_t frontier, int64_t fork_before, struct brg_link *links, size_t n,
                       struct brg_chain *out);

#endif
