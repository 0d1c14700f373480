/* test_brg_chain.c - frontier, ack ranges and holes of a device's chain (PROTOCOL.md 2-4). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "brg_chain.h"

static struct brg_chain ch;

#define NOFORK INT64_MIN /* no fork old enough to follow */

#define L(p, s)                                                                                    \
	{                                                                                          \
		p, s, 1, 0                                                                         \
	}
#define D(p, s)                                                                                    \
	{                                                                                          \
		p, s, 0, 0                                                                         \
	}

Test(brg_chain, empty_keeps_the_frontier)
{
	brg_chain_compute(42, NOFORK, NULL, 0, &ch);
	cr_expect_eq(ch.frontier, 42);
	cr_expect_eq(ch.n_ranges, 0);
	cr_expect_eq(ch.n_holes, 0);
}

Test(brg_chain, follows_links_across_non_durable_seqs)
{
	/* 3 and 6 were polls/births: the links, not arithmetic, say nothing is missing. */
	struct brg_link l[] = {L(7, 9), L(0, 2), L(4, 7), L(2, 4)};
	brg_chain_compute(0, NOFORK, l, 4, &ch);
	cr_expect_eq(ch.frontier, 9);
	cr_expect_eq(ch.n_ranges, 0);
	cr_expect_eq(ch.n_holes, 0);
}

Test(brg_chain, a_dropped_range_from_below_the_frontier_closes_the_chain)
{
	/* 2..4 stored, their acks lost; the device's spool overflowed and reported everything
	 * unacknowledged up to 10 as dropped, from the link before 2 */
	struct brg_link l[] = {L(0, 2), L(2, 3), L(3, 4), D(0, 10), L(10, 12)};
	brg_chain_compute(4, NOFORK, l, 5, &ch);
	cr_expect_eq(ch.frontier, 12);
	cr_expect_eq(ch.n_ranges, 0);
	cr_expect_eq(ch.n_holes, 0);
	/* a stored link across the frontier is a fork, not a completion */
	struct brg_link f[] = {L(0, 2), L(2, 4), L(3, 10), L(10, 12)};
	brg_chain_compute(4, NOFORK, f, 4, &ch);
	cr_expect_eq(ch.frontier, 4);
}

/* A device whose ack for 21 was lost dropped 21..30 from its spool (Dropped{20, 30}) and sent
 * 31: 20 -> 30 -> 31 is one complete segment, 21 inside it; only 1..20 is missing. The
 * dropped link leaves from inside the segment 20 -> 21 and reaches past its end. */
Test(brg_chain, a_dropped_range_from_inside_a_segment_extends_it)
{
	struct brg_link l[] = {{20, 21, 1, 5}, {20, 30, 0, 9}, {30, 31, 1, 9}};
	brg_chain_compute(0, NOFORK, l, 3, &ch);
	cr_expect_eq(ch.frontier, 0);
	cr_assert_eq(ch.n_ranges, 1);
	cr_expect_eq(ch.ranges[0].first, 21);
	cr_expect_eq(ch.ranges[0].last, 31);
	cr_assert_eq(ch.n_holes, 1);
	cr_expect_eq(ch.holes[0].first, 1);
	cr_expect_eq(ch.holes[0].last, 20);
	cr_expect_eq(ch.holes[0].since, 5, "the hole showed when 21 was stored");
	/* a dropped range from below the segment's first link covers the top of the hole too */
	struct brg_link b[] = {L(20, 21), L(21, 22), D(15, 30), L(30, 31)};
	brg_chain_compute(0, NOFORK, b, 4, &ch);
	cr_assert_eq(ch.n_ranges, 1);
	cr_expect_eq(ch.ranges[0].first, 16);
	cr_expect_eq(ch.ranges[0].last, 31);
	cr_assert_eq(ch.n_holes, 1);
	cr_expect_eq(ch.holes[0].first, 1);
	cr_expect_eq(ch.holes[0].last, 15);
	/* a stored link across a segment's end is a fork, as across the frontier */
	struct brg_link f[] = {L(20, 21), L(21, 25), L(22, 30), L(30, 31)};
	brg_chain_compute(0, NOFORK, f, 4, &ch);
	cr_assert_eq(ch.n_ranges, 2);
	cr_expect_eq(ch.ranges[0].last, 25);
	cr_expect_eq(ch.ranges[1].first, 31);
	cr_assert_eq(ch.n_holes, 2);
	cr_expect_eq(ch.holes[1].first, 26);
	cr_expect_eq(ch.holes[1].last, 30);
}

Test(brg_chain, dropped_links_close_the_chain)
{
	struct brg_link l[] = {L(0, 2), D(2, 8), L(8, 9)};
	brg_chain_compute(0, NOFORK, l, 3, &ch);
	cr_expect_eq(ch.frontier, 9);
}

Test(brg_chain, hole_gives_ranges_above_the_frontier)
{
	/* 5 is missing (the link 4 -> 5); 6, 7 and 12 arrived; 9 -> 12 is also missing. */
	struct brg_link l[] = {L(0, 2), L(2, 4), L(5, 6), L(6, 7), L(9, 12)};
	brg_chain_compute(0, NOFORK, l, 5, &ch);
	cr_expect_eq(ch.frontier, 4);
	cr_assert_eq(ch.n_ranges, 2);
	cr_expect_eq(ch.ranges[0].first, 6);
	cr_expect_eq(ch.ranges[0].last, 7);
	cr_expect_eq(ch.ranges[1].first, 10);
	cr_expect_eq(ch.ranges[1].last, 12);
	/* holes: seqs 5..5 (after the frontier up to 6's prev) and 8..9 (after 7 up to 12's prev)
	 */
	cr_assert_eq(ch.n_holes, 2);
	cr_expect_eq(ch.holes[0].first, 5);
	cr_expect_eq(ch.holes[0].last, 5);
	cr_expect_eq(ch.holes[1].first, 8);
	cr_expect_eq(ch.holes[1].last, 9);
}

Test(brg_chain, ranges_never_cover_the_missing_envelope)
{
	/* The device still holds 5; a range starting at 5 would make it delete unstored data. */
	struct brg_link l[] = {L(5, 6)};
	brg_chain_compute(4, NOFORK, l, 1, &ch);
	cr_expect_eq(ch.frontier, 4);
	cr_assert_eq(ch.n_ranges, 1);
	cr_expect_gt(ch.ranges[0].first, 5);
	cr_expect_eq(ch.ranges[0].last, 6);
}

Test(brg_chain, links_below_the_frontier_are_ignored)
{
	struct brg_link l[] = {L(1, 2), L(2, 3), L(10, 11)};
	brg_chain_compute(10, NOFORK, l, 3, &ch);
	cr_expect_eq(ch.frontier, 11);
	cr_expect_eq(ch.n_ranges, 0);
	cr_expect_eq(ch.n_holes, 0);
}

Test(brg_chain, only_dropped_segment_is_not_a_range)
{
	struct brg_link l[] = {D(5, 8)};
	brg_chain_compute(2, NOFORK, l, 1, &ch);
	cr_expect_eq(ch.frontier, 2);
	cr_expect_eq(ch.n_ranges, 0);
	cr_expect_eq(ch.n_holes, 1);
}

Test(brg_chain, ranges_are_bounded_newest_dropped)
{
	size_t n = WIRE_MAX_ACK_RANGES + 50;
	struct brg_link *l = calloc(n, sizeof(*l));
	for (size_t i = 0; i < n; i++) /* every other link missing */
		l[i] = (struct brg_link){10 + 2 * i + 1, 10 + 2 * i + 2, 1, 0};
	brg_chain_compute(10, NOFORK, l, n, &ch);
	cr_expect_eq(ch.frontier, 10);
	cr_expect_eq(ch.n_ranges, WIRE_MAX_ACK_RANGES);
	cr_expect_eq(ch.ranges[0].first, 12);
	for (size_t i = 1; i < ch.n_ranges; i++)
		cr_expect_gt(ch.ranges[i].first, ch.ranges[i - 1].last);
	cr_expect_eq(ch.n_holes, BRG_CHAIN_MAX_HOLES);
	free(l);
}

Test(brg_chain, inconsistent_links_do_not_loop_or_crash)
{
	struct brg_link l[] = {L(3, 3), L(5, 4), L(0, 2), L(0, 7), L(2, 9)};
	brg_chain_compute(0, NOFORK, l, 5, &ch);
	/* The longest link from the frontier wins; the rest cannot move it backwards. */
	cr_expect_geq(ch.frontier, 7);
}

/* A device whose state directory was restored from a backup numbers on from the clock, but
 * links its first new envelope (5000) to the backup's last record (90), below the frontier
 * (100) its later life reached. Once that link is old enough, the chain goes on by it. */
Test(brg_chain, a_fork_across_the_frontier_is_followed_once_old_enough)
{
	struct brg_link l[] = {{90, 5000, 1, 10}, {5000, 5001, 1, 20}};
	brg_chain_compute(100, 9, l, 2, &ch);
	cr_expect_eq(ch.frontier, 100, "too young: it waits as a hole would");
	cr_expect_eq(ch.fork_to, 0);
	cr_assert_eq(ch.n_ranges, 1);
	cr_expect_eq(ch.ranges[0].first, 5001);
	cr_assert_eq(ch.n_holes, 1);
	cr_expect_eq(ch.holes[0].first, 101);
	cr_expect_eq(ch.holes[0].last, 5000);

	brg_chain_compute(100, 10, l, 2, &ch);
	cr_expect_eq(ch.frontier, 5001);
	cr_expect_eq(ch.fork_from, 100);
	cr_expect_eq(ch.fork_to, 5000);
	cr_expect_eq(ch.n_ranges, 0);
	cr_expect_eq(ch.n_holes, 0);
}

Test(brg_chain, a_fork_waits_while_the_chain_goes_on)
{
	/* the links leaving the frontier arrived and lead past the fork: no fork, however old */
	struct brg_link l[] = {{90, 5000, 1, 0}, {100, 101, 1, 0}, {101, 6000, 1, 0}};
	brg_chain_compute(100, 50, l, 3, &ch);
	cr_expect_eq(ch.frontier, 6000);
	cr_expect_eq(ch.fork_to, 0);
	/* so does a dropped range across the frontier */
	struct brg_link d[] = {{90, 5000, 1, 0}, D(95, 5500)};
	brg_chain_compute(100, 50, d, 2, &ch);
	cr_expect_eq(ch.frontier, 5500);
	cr_expect_eq(ch.fork_to, 0);
}

Test(brg_chain, a_fork_jumps_the_stretch_and_is_taken_once)
{
	/* the later life left a hole (100..105) and a segment (105 -> 110) above the frontier;
	 * two links fork from below it; the lowest is followed, the chain goes on from there, and
	 * the second fork waits for the next computation */
	struct brg_link l[] = {{105, 110, 1, 0}, {95, 7000, 1, 0}, {90, 5000, 1, 0},
	                       {5000, 5001, 1, 0}};
	brg_chain_compute(100, 0, l, 4, &ch);
	cr_expect_eq(ch.fork_from, 100);
	cr_expect_eq(ch.fork_to, 5000);
	cr_expect_eq(ch.frontier, 5001);
	cr_expect_eq(ch.n_ranges, 0);
	cr_expect_eq(ch.n_holes, 0);
}
