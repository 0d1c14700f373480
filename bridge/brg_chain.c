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

static int by_seq(const void *a, const void *b)
{
	const struct brg_link *x = a, *y = b;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->prev < y->prev ? -1 : x->prev > y->prev;
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

static void hole(struct brg_chain *c, uint64_t after, uint64_t upto, int64_t since)
{
	if (c->n_holes < BRG_CHAIN_MAX_HOLES)
		c->holes[c->n_holes++] = (struct brg_hole){after + 1, upto, since};
}

void brg_chain_compute(uint64_t frontier, struct brg_link *links, size_t n, struct brg_chain *out)
{
	out->n_ranges = 0;
	out->n_holes = 0;
	out->frontier = frontier;
	if (!n)
		return;
	qsort(links, n, sizeof(*links), by_prev);
	/* Follow the chain from the frontier; every step strictly increases it. */
	for (size_t steps = 0; steps <= n; steps++) {
		const struct brg_link *l = leaving(links, n, frontier);
		if (!l || l->seq <= frontier)
			l = dropped_across(links, n, frontier);
		if (!l)
			break;
		frontier = l->seq;
	}
	out->frontier = frontier;

	/* Segments above: maximal runs of links each starting where the previous one ended. */
	qsort(links, n, sizeof(*links), by_seq);
	int open = 0, has_stored = 0;
	uint64_t start = 0, end = frontier;
	for (size_t i = 0; i < n; i++) {
		const struct brg_link *l = &links[i];
		if (l->seq <= l->prev || l->prev < frontier)
			continue; /* below or straddling the frontier: nothing to say */
		if (open && l->prev == end) {
			end = l->seq;
			has_stored |= l->stored;
			continue;
		}
		if (open && l->prev < end)
			continue; /* a second link into the segment: inconsistent, ignore */
		if (open && has_stored && out->n_ranges < WIRE_MAX_ACK_RANGES)
			out->ranges[out->n_ranges++] = (struct brg_range){start + 1, end};
		hole(out, end, l->prev, l->at);
		open = 1;
		start = l->prev;
		end = l->seq;
		has_stored = l->stored;
	}
	if (open && has_stored && out->n_ranges < WIRE_MAX_ACK_RANGES)
		out->ranges[out->n_ranges++] = (struct brg_range){start + 1, end};
}
