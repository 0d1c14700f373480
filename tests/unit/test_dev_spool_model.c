/* test_dev_spool_model.c - the spool against a model of the bridge's chain (brg_chain), under
 * random appends, polls, lossy deliveries, cumulative and selective acks, restarts, power cuts,
 * and a disk that fails writes and syncs at random (write, fdatasync and fsync are wrapped at
 * link time: -Wl,--wrap). At every step each record ever appended must be on disk, stored by
 * the bridge, or reported dropped; once the disk is back and the spool is drained, the bridge's
 * chain reaches the last record. Fixed seeds and a bounded number of steps: the same run every
 * time (but for the spool's 5 s state persistence, which a slow run may reach). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "brg_chain.h"
#include "dev_spool.h"
#include "harness.h"

/* ---------- a disk that fails at random ---------- */

static uint64_t rng;   /* xorshift64: the same sequence for a seed, whatever else calls rand() */
static int disk_fails; /* while set, writes and syncs of regular files fail at random */

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 32) % n;
}

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);
int __real_fsync(int fd);
int __wrap_fsync(int fd);

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
	if (disk_fails && fd > 2 && rnd(2)) {
		if (n > 1 && rnd(2))
			return __real_write(fd, buf, n / 2); /* the disk filled up half-way */
		errno = ENOSPC;
		return -1;
	}
	return __real_write(fd, buf, n);
}

int __wrap_fdatasync(int fd)
{
	if (disk_fails && rnd(4) == 0) {
		errno = ENOSPC;
		return -1;
	}
	return __real_fdatasync(fd);
}

int __wrap_fsync(int fd)
{
	struct stat st;
	/* a directory's fsync does not allocate: only files' fail */
	if (disk_fails && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && rnd(4) == 0) {
		errno = ENOSPC;
		return -1;
	}
	return __real_fsync(fd);
}

/* ---------- the model ---------- */

#define MAX_RECS  2000
#define MAX_LINKS 20000

struct mrec {
	uint64_t seq, prev;
	size_t nd; /* the dropped ranges it carries */
	struct wire_dropped d[WIRE_MAX_DROPPED];
	int stored; /* by the bridge */
};

static struct mrec recs[MAX_RECS]; /* in seq order */
static size_t nrecs;
static struct brg_link links[MAX_LINKS], scratch[MAX_LINKS]; /* what the bridge stored */
static size_t nlinks;
static uint64_t frontier;
static unsigned seed;
static struct dev_spool_opts opts;
static char *dir;

static struct mrec *find(uint64_t seq)
{
	size_t lo = 0, hi = nrecs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (recs[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < nrecs && recs[lo].seq == seq ? &recs[lo] : NULL;
}

static void add_link(uint64_t prev, uint64_t seq, int stored)
{
	for (size_t i = 0; !stored && i < nlinks; i++)
		if (!links[i].stored && links[i].prev == prev && links[i].seq == seq)
			return; /* a range carried again */
	cr_assert_lt(nlinks, MAX_LINKS, "seed %u: too many links", seed);
	links[nlinks++] = (struct brg_link){prev, seq, stored, 0};
}

/* seq lies in a dropped range the bridge learnt of */
static int known_dropped(uint64_t seq)
{
	for (size_t i = 0; i < nlinks; i++)
		if (!links[i].stored && links[i].prev < seq && seq <= links[i].seq)
			return 1;
	return 0;
}

static struct brg_chain chain(void)
{
	struct brg_chain ch;
	memcpy(scratch, links, nlinks * sizeof(*links));
	brg_chain_compute(frontier, INT64_MIN, scratch, nlinks, &ch);
	return ch;
}

static struct dev_spool *open_dir(const char *d)
{
	struct dev_spool *s = NULL;
	const char *why = NULL;
	opts.dir = d;
	int rc = dev_spool_open(&opts, &s, &why);
	/* an open on a failing disk may fail (a torn tail it cannot cut): the agent would exit
	 * and be restarted; here the disk holds for the next try */
	if (rc && disk_fails) {
		disk_fails = 0;
		rc = dev_spool_open(&opts, &s, &why);
		disk_fails = 1;
	}
	cr_assert_eq(rc, 0, "seed %u: open: %s (%s)", seed, dev_spool_strerror(rc), why);
	return s;
}

/* The link up: everything unacknowledged goes to the bridge, some of it lost on the way. */
static void deliver(struct dev_spool *s, int lossy)
{
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	for (;;) {
		struct dev_spool_rec r;
		uint8_t *env;
		size_t len;
		int rc = dev_spool_next(s, &c, 1, &r, &env, &len);
		if (rc == 1)
			break;
		cr_assert_eq(rc, 0, "seed %u: next: %s", seed, dev_spool_strerror(rc));
		uint64_t seq;
		memcpy(&seq, env, sizeof(seq));
		free(env);
		struct mrec *m = find(r.seq);
		cr_assert(m && seq == r.seq && m->prev == r.prev_seq, "seed %u: record %llu", seed,
		          (unsigned long long)r.seq);
		if ((lossy && rnd(4) == 0) || m->stored)
			continue;
		m->stored = 1;
		add_link(m->prev, m->seq, 1);
		for (size_t i = 0; i < m->nd; i++)
			add_link(m->d[i].prev_seq, m->d[i].last_seq, 0);
	}
}

static void ack(struct dev_spool *s, int with_ranges)
{
	struct brg_chain ch = chain();
	uint64_t r[WIRE_MAX_ACK_RANGES][2];
	size_t n = with_ranges ? ch.n_ranges : 0;
	frontier = ch.frontier;
	for (size_t i = 0; i < n; i++) {
		r[i][0] = ch.ranges[i].first;
		r[i][1] = ch.ranges[i].last;
	}
	int rc = dev_spool_ack(s, frontier, (const uint64_t(*)[2])r, n);
	cr_assert(rc == 0 || (disk_fails && (rc == DEV_SPOOL_ENOSPC || rc == DEV_SPOOL_EIO)),
	          "seed %u: ack: %s", seed, dev_spool_strerror(rc));
}

/* As the agent seals a batch: it carries the pending dropped ranges. */
static void append(struct dev_spool *s)
{
	uint64_t seq;
	int rc = dev_spool_take_seq(s, &seq);
	if (rc == DEV_SPOOL_ENOSPC && disk_fails)
		return;
	cr_assert_eq(rc, 0, "seed %u: take: %s", seed, dev_spool_strerror(rc));
	cr_assert_lt(nrecs, MAX_RECS);
	struct mrec *m = &recs[nrecs];
	m->seq = seq;
	m->prev = dev_spool_last_durable(s);
	m->stored = 0;
	m->nd = dev_spool_dropped(s, m->d, WIRE_MAX_DROPPED);
	uint8_t buf[800];
	size_t len = 16 + rnd(700);
	memset(buf, 0xab, len);
	memcpy(buf, &seq, sizeof(seq));
	rc = dev_spool_append(s, seq, m->prev, 2, (int64_t)time(NULL) * 1000, buf, len);
	if (rc == DEV_SPOOL_ENOSPC && disk_fails)
		return;
	cr_assert_eq(rc, 0, "seed %u: append: %s", seed, dev_spool_strerror(rc));
	nrecs++;
	if (m->nd)
		dev_spool_dropped_reported(s, seq, m->d, m->nd);
}

/* Every record ever appended is on disk, stored, or reported dropped (to the bridge already, or
 * pending in the spool). */
static void check(struct dev_spool *s, int step)
{
	static char present[MAX_RECS];
	memset(present, 0, nrecs);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	for (;;) {
		struct dev_spool_rec r;
		uint8_t *env;
		size_t len;
		int rc = dev_spool_next(s, &c, 0, &r, &env, &len);
		if (rc == 1)
			break;
		cr_assert_eq(rc, 0, "seed %u: next: %s", seed, dev_spool_strerror(rc));
		free(env);
		struct mrec *m = find(r.seq);
		if (m)
			present[m - recs] = 1;
	}
	struct wire_dropped d[DEV_SPOOL_MAX_DROPPED];
	size_t nd = dev_spool_dropped(s, d, DEV_SPOOL_MAX_DROPPED);
	for (size_t i = 0; i < nrecs; i++) {
		int pending = 0;
		for (size_t j = 0; j < nd; j++)
			pending |= d[j].prev_seq < recs[i].seq && recs[i].seq <= d[j].last_seq;
		if (!present[i] && !recs[i].stored && !pending)
			cr_assert(known_dropped(recs[i].seq),
			          "seed %u, step %d: record %llu vanished unreported", seed, step,
			          (unsigned long long)recs[i].seq);
	}
}

/* A copy of the directory as a power cut leaves it; the spool goes on there. */
static struct dev_spool *power_cut(struct dev_spool *s)
{
	char *copy = h_tmpdir("spool-model"), *out = NULL;
	char *cmd = h_strf("cp -a %s/. %s/ && rm -rf %s/state.tmp", dir, copy, copy);
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	free(out);
	free(cmd);
	struct dev_spool *c = open_dir(copy);
	dev_spool_close(s); /* into its own directory, which is then forgotten */
	cmd = h_strf("rm -rf %s", dir);
	h_sh(cmd, NULL, 30);
	free(cmd);
	free(dir);
	dir = copy;
	return c;
}

static void run(unsigned sd, int steps)
{
	seed = sd;
	rng = 0x9e3779b97f4a7c15ULL * (sd + 1);
	nrecs = nlinks = 0;
	disk_fails = 0;
	frontier = 999;
	/* a spool of a few records, which drops often: drops on a failing disk, then a power cut,
	 * are what the model is most after */
	opts = (struct dev_spool_opts){NULL, 3000 + rnd(4000), 90LL * 86400 * 1000, 600 + rnd(3000),
	                               1000};
	dir = h_tmpdir("spool-model");
	struct dev_spool *s = open_dir(dir);
	uint64_t last_durable = dev_spool_last_durable(s);
	for (int step = 0; step < steps; step++) {
		uint32_t op = rnd(100);
		if (op < 60) {
			append(s);
		} else if (op < 65) {
			uint64_t seq; /* a poll: numbered, not spooled */
			int rc = dev_spool_take_seq(s, &seq);
			cr_assert(rc == 0 || (disk_fails && rc == DEV_SPOOL_ENOSPC),
			          "seed %u: poll", seed);
		} else if (op < 80) {
			deliver(s, 1);
		} else if (op < 92) {
			ack(s, (int)rnd(2));
		} else if (op < 94) {
			disk_fails = !disk_fails;
		} else if (op < 96) {
			dev_spool_close(s);
			s = open_dir(dir);
		} else {
			s = power_cut(s);
		}
		cr_assert_geq(dev_spool_last_durable(s), last_durable,
		              "seed %u, step %d: the chain went back", seed, step);
		last_durable = dev_spool_last_durable(s);
		check(s, step);
	}
	/* the disk is back: drain, carrying what is pending */
	disk_fails = 0;
	for (int i = 0; i < 50; i++) {
		struct wire_dropped d[WIRE_MAX_DROPPED];
		if (dev_spool_dropped(s, d, WIRE_MAX_DROPPED))
			append(s);
		deliver(s, 0);
		ack(s, 1);
	}
	check(s, steps);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.records, 0, "seed %u: %llu records left", seed,
	             (unsigned long long)st.records);
	struct brg_chain ch = chain();
	cr_expect_eq(ch.frontier, dev_spool_last_durable(s),
	             "seed %u: the bridge's chain ends at %llu, the spool's at %llu (%zu holes)",
	             seed, (unsigned long long)ch.frontier,
	             (unsigned long long)dev_spool_last_durable(s), ch.n_holes);
	for (size_t i = 0; i < nrecs; i++)
		cr_expect(recs[i].stored || known_dropped(recs[i].seq),
		          "seed %u: record %llu neither stored nor reported dropped", seed,
		          (unsigned long long)recs[i].seq);
	cr_log_info("seed %u: %zu records, %zu links, %llu dropped", seed, nrecs, nlinks,
	            (unsigned long long)st.dropped_total);
	dev_spool_close(s);
	char *cmd = h_strf("rm -rf %s", dir);
	h_sh(cmd, NULL, 30);
	free(cmd);
	free(dir);
}

Test(dev_spool_model, every_record_is_kept_stored_or_reported_dropped, .timeout = 280)
{
	for (unsigned sd = 1; sd <= 16; sd++)
		run(sd, 800);
}
