/* brg_chain.c - frontier, ack ranges and holes of a device's chain of durable envelopes. */
#include <stdlib.h>

#include "brg_chain.h"

/* prev ascending, then seq descending: the first link leaving a seq reaches furthest. */
static int by_prev(const void *a, const void *b)
{
	const struct brg_link *x = a, *y = b;
	if (x->prev != y->prev)
		return x->prev < y->prev ? -1 : 1;
	return x->seq > y->seq ? -1 : x->seq < y->seq;
}

static const struct brg_link *leaving(const struct brg_link *l, size_t n, uint64_t from)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (l[mid].prev < from)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && l[lo].prev == from ? &l[lo] : NULL;
}

/* A dropped range reaching past `from` from below it. A device reports as dropped everything
 * unacknowledged in what its spool discarded, including envelopes stored here whose acks it
 * never got: such a range starts below the frontier, and still completes the chain. */
static const struct brg_link *dropped_across(const struct brg_link *l, size_t n, uint64_t from)
{
	const struct brg_link *best = NULL;
	for (size_t i = 0; i < n && l[i].prev < from; i++)
		if (!l[i].stored && l[i].seq > from && (!best || l[i].seq > best->seq))
			best = &l[i];
	return best;
}

/* The lowest stored link from below `from` to above it, stored at or before `before`. */
static const struct brg_link *forked_across(const struct brg_link *l, size_t n, uint64_t from,
                                            int64_t before)
{
	const struct brg_link *best = NULL;
	for (size_t i = 0; i < n && l[i].prev < from; i++)
		if (l[i].stored && l[i].seq > from && l[i].at <= before &&
		    (!best || l[i].seq < best->seq))
			best = &l[i];
	return best;
}

/* The hole added, NULL if there is no room left. */
static struct brg_hole *hole(struct brg_chain *c, uint64_t after, uint64_t upto, int64_t since)
{
	if (c->n_holes == BRG_CHAIN_MAX_HOLES)
		return NULL;
	c->holes[c->n_holes] = (struct brg_hole){after + 1, upto, since};
	return &c->holes[c->n_holes++];
}

void brg_chain_compute(uint64_t frontier, int64_t fork_before, struct brg_link *links, size_t n,
                       struct brg_chain *out)
{
	out->n_ranges = 0;
	out->n_holes = 0;
	out->frontier = frontier;
	out->fork_from = out->fork_to = 0;
	if (!n)
		return;
	qsort(links, n, sizeof(*links), by_prev);
	/* Follow the chain from the frontier; every step strictly increases it. */
	for (size_t steps = 0; steps <= n; steps++) {
		const struct brg_link *l = leaving(links, n, frontier);
		if (!l || l->seq <= frontier)
			l = dropped_across(links, n, frontier);
		if (!l && !out->fork_to && (l = forked_across(links, n, frontier, fork_before))) {
			out->fork_from = frontier;
			out->fork_to = l->seq;
		}
		if (!l)
			break;
		frontier = l->seq;
	}
	out->frontier = frontier;

	/* Segments above, in prev order (the links are still sorted so): maximal runs of links each
	 * starting where the previous one ended, or a dropped range leaving from inside the run and
	 * reaching past its end (as across the frontier above). In seq order such a range came
	 * after the stored link that starts with it and was dropped, which broke the run in two
	 * around a false hole. */
	int open = 0, has_stored = 0;
	uint64_t start = 0, end = frontier;
	struct brg_hole *h = NULL;
	for (size_t i = 0; i < n; i++) {
		const struct brg_link *l = &links[i];
		if (l->seq <= l->prev || l->prev < frontier)
			continue; /* below or straddling the frontier: nothing to say */
		if (open && l->prev <= end) {
			if (l->prev == start && h && l->at < h->since)
				h->since = l->at; /* the hole showed with the first link after it */
			if (l->seq > end && l->prev != end && l->stored)
				continue; /* a stored link across the end: a fork */
			has_stored |= l->stored;
			if (l->seq > end)
				end = l->seq;
			continue;
		}
		if (open && has_stored && out->n_ranges < WIRE_MAX_ACK_RANGES)
			out->ranges[out->n_ranges++] = (struct brg_range){start + 1, end};
		h = hole(out, end, l->prev, l->at);
		open = 1;
		start = l->prev;
		end = l->seq;
		has_stored = l->stored;
	}
	if (open && has_stored && out->n_ranges < WIRE_MAX_ACK_RANGES)
		out->ranges[out->n_ranges++] = (struct brg_range){start + 1, end};
}
