/* test_dev_spool.c - the encrypted spool: durability across kill -9, torn tails, corruption,
 * overflow and age limits, acknowledgements, no plaintext on disk, full disk. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dev_spool.h"
#include "h_fsync.h"
#include "harness.h"

/* On-disk size of a record of n payload bytes: header, nonce, ciphertext, tag. */
#define REC_BYTES(n) ((off_t)(48 + 12 + (n) + 16))

static struct dev_spool_opts opts(const char *dir)
{
	return (struct dev_spool_opts){dir, 64 << 20, 90LL * 86400 * 1000, 64 << 10, 0};
}

/* ... with segments that take one record of 300-400 bytes each */
static struct dev_spool_opts opts_per_record(const char *dir)
{
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 512;
	return o;
}

static struct dev_spool *open_spool(const struct dev_spool_opts *o)
{
	struct dev_spool *s = NULL;
	const char *why = NULL;
	int rc = dev_spool_open(o, &s, &why);
	cr_assert_eq(rc, DEV_SPOOL_OK, "open: %s (%s)", dev_spool_strerror(rc), why ? why : "");
	return s;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Append a record whose payload names its seq; returns the seq. */
static uint64_t put(struct dev_spool *s, size_t size, int64_t t_ms)
{
	uint64_t seq;
	cr_assert_eq(dev_spool_take_seq(s, &seq), 0);
	char *buf = calloc(1, size + 32);
	snprintf(buf, size, "record %llu payload", (unsigned long long)seq);
	int rc = dev_spool_append(s, seq, dev_spool_last_durable(s), 2, t_ms, (uint8_t *)buf, size);
	cr_assert_eq(rc, 0, "append: %s", dev_spool_strerror(rc));
	free(buf);
	return seq;
}

/* Open the spool, append n records of size bytes (their seqs in seqs, if not NULL), close. */
static void fill(const struct dev_spool_opts *o, int n, size_t size, uint64_t *seqs)
{
	struct dev_spool *s = open_spool(o);
	for (int i = 0; i < n; i++) {
		uint64_t seq = put(s, size, wall_ms());
		if (seqs)
			seqs[i] = seq;
	}
	dev_spool_close(s);
}

/* Read every record from cursor c on (checking each one's contents); returns the count,
 * fills seqs up to cap. A record reported corrupt is passed over if corrupt_ok, else fails. */
static size_t read_on(struct dev_spool *s, struct dev_spool_cursor *c, int skip_acked,
                      int corrupt_ok, uint64_t *seqs, size_t cap)
{
	size_t n = 0;
	for (size_t guard = 0; guard < 1000000; guard++) {
		struct dev_spool_rec r;
		uint8_t *env = NULL;
		size_t len;
		int rc = dev_spool_next(s, c, skip_acked, &r, &env, &len);
		if (rc == 1)
			break;
		if (rc == DEV_SPOOL_ECORRUPT && corrupt_ok)
			continue;
		cr_assert_eq(rc, 0, "next: %s", dev_spool_strerror(rc));
		char want[64];
		snprintf(want, sizeof(want), "record %llu payload", (unsigned long long)r.seq);
		cr_assert(len >= strlen(want) && !memcmp(env, want, strlen(want)),
			  "record %llu has wrong contents", (unsigned long long)r.seq);
		if (n < cap)
			seqs[n] = r.seq;
		n++;
		free(env);
	}
	return n;
}

/* Read every record from the start, passing over corrupt ones; returns count, fills seqs. */
static size_t read_all(struct dev_spool *s, int skip_acked, uint64_t *seqs, size_t cap)
{
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	return read_on(s, &c, skip_acked, 1, seqs, cap);
}

Test(dev_spool, append_read_reopen_and_seq_never_reused)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	struct dev_spool *s = open_spool(&o);
	uint64_t prev = 0, last = 0;
	for (int i = 0; i < 100; i++) {
		last = put(s, 100 + (size_t)i * 7, wall_ms());
		cr_assert_gt(last, prev);
		prev = last;
	}
	uint64_t seqs[200];
	cr_expect_eq(read_all(s, 1, seqs, 200), 100);
	cr_expect_eq(dev_spool_last_durable(s), last);
	dev_spool_close(s);

	s = open_spool(&o);
	cr_expect_eq(read_all(s, 1, seqs, 200), 100);
	cr_expect_eq(dev_spool_last_durable(s), last);
	uint64_t next;
	cr_assert_eq(dev_spool_take_seq(s, &next), 0);
	cr_expect_gt(next, last, "seq %llu reused after reopen (last %llu)", (unsigned long long)next,
		     (unsigned long long)last);
	dev_spool_close(s);
	free(dir);
}

Test(dev_spool, chain_links_and_wrong_prev_refused)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	struct dev_spool *s = open_spool(&o);
	uint64_t a = put(s, 50, wall_ms());
	uint64_t poll;
	cr_assert_eq(dev_spool_take_seq(s, &poll), 0); /* a non-durable envelope in between */
	uint64_t b;
	cr_assert_eq(dev_spool_take_seq(s, &b), 0);
	cr_expect_eq(dev_spool_append(s, b, 0, 2, wall_ms(), (uint8_t *)"x", 1), DEV_SPOOL_EINVAL,
		     "prev_seq must be the last durable seq");
	cr_assert_eq(dev_spool_append(s, b, a, 2, wall_ms(), (uint8_t *)"record x payload", 16), 0);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	struct dev_spool_rec r;
	uint8_t *env;
	size_t len;
	cr_assert_eq(dev_spool_next(s, &c, 1, &r, &env, &len), 0);
	cr_expect_eq(r.seq, a);
	cr_expect_eq(r.prev_seq, 0);
	free(env);
	cr_assert_eq(dev_spool_next(s, &c, 1, &r, &env, &len), 0);
	cr_expect_eq(r.seq, b);
	cr_expect_eq(r.prev_seq, a);
	free(env);
	dev_spool_close(s);
	free(dir);
}

Test(dev_spool, acks_delete_segments_and_survive_reopen)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 4096;
	struct dev_spool *s = open_spool(&o);
	uint64_t seqs[300];
	for (int i = 0; i < 300; i++)
		seqs[i] = put(s, 200, wall_ms());
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.records, 300);
	cr_expect_gt(st.segments, 10);
	uint64_t segs_before = st.segments;

	/* cumulative ack of the first 100 plus a selective range 200..249 */
	uint64_t ranges[1][2] = {{seqs[200], seqs[249]}};
	cr_assert_eq(dev_spool_ack(s, seqs[99], ranges, 1), 0);
	cr_expect(dev_spool_is_acked(s, seqs[50]));
	cr_expect(dev_spool_is_acked(s, seqs[220]));
	cr_expect_not(dev_spool_is_acked(s, seqs[150]));
	dev_spool_stats(s, &st);
	cr_expect_eq(st.records, 150);
	cr_expect_lt(st.segments, segs_before, "acknowledged segments are deleted");
	cr_expect_eq(st.first_unacked, seqs[100]);
	cr_expect_eq(st.chain_floor, seqs[99]);
	uint64_t got[300];
	size_t n = read_all(s, 1, got, 300);
	cr_expect_eq(n, 150);
	cr_expect_eq(got[0], seqs[100]);
	dev_spool_close(s);

	s = open_spool(&o);
	cr_expect_eq(dev_spool_acked_upto(s), seqs[99], "the ack point is persisted on close");
	/* selective ranges are not persisted: after a restart the records of 200..249 that
	 * share a segment with unacknowledged ones may be sent again (harmless duplicates) */
	n = read_all(s, 1, got, 300);
	cr_expect(n >= 150 && n <= 200, "%zu records after reopen", n);
	cr_expect_eq(got[0], seqs[100]);
	/* an ack up to a seq handed out but not spooled (a poll's) acknowledges only what exists */
	uint64_t poll;
	cr_assert_eq(dev_spool_take_seq(s, &poll), 0);
	cr_assert_eq(dev_spool_ack(s, poll, NULL, 0), 0);
	cr_expect_eq(dev_spool_acked_upto(s), seqs[299]);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.records, 0);
	cr_expect_eq(st.chain_floor, seqs[299]);
	dev_spool_close(s);
	free(dir);
}

static void list_files(const char *dir, char names[][600], size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	*n = 0;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' && *n < 64)
			snprintf(names[(*n)++], 600, "%.300s/%.255s", dir, e->d_name);
	if (d)
		closedir(d);
}

Test(dev_spool, no_plaintext_on_disk)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	struct dev_spool *s = open_spool(&o);
	const char *secret = "temperature=21.375 SECRET-READING-12345";
	uint64_t seq;
	cr_assert_eq(dev_spool_take_seq(s, &seq), 0);
	cr_assert_eq(dev_spool_append(s, seq, 0, 2, wall_ms(), (const uint8_t *)secret, strlen(secret)), 0);
	dev_spool_close(s);

	char names[64][600];
	size_t n;
	list_files(dir, names, &n);
	cr_assert_gt(n, 1);
	for (size_t i = 0; i < n; i++) {
		size_t len;
		char *data = h_read_file(names[i], &len);
		cr_assert_not_null(data);
		cr_expect_null(memmem(data, len, "SECRET-READING", 14), "plaintext in %s", names[i]);
		cr_expect_null(memmem(data, len, "21.375", 6), "plaintext in %s", names[i]);
		free(data);
	}
	struct stat st;
	char *key = h_strf("%s/key", dir);
	cr_assert_eq(stat(key, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600);
	cr_assert_eq(stat(dir, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0700);
	free(key);
	free(dir);
}

static char *last_segment(const char *dir)
{
	char names[64][600];
	size_t n;
	list_files(dir, names, &n);
	char *best = NULL;
	for (size_t i = 0; i < n; i++)
		if (strstr(names[i], "/seg-") && (!best || strcmp(names[i], best) > 0)) {
			free(best);
			best = strdup(names[i]);
		}
	return best;
}

/* A segment rewrite (repairs) cut short by a crash leaves its temporary copy: the next open
 * removes it (it would hold disk space forever) and keeps the segment it was copied from. */
Test(dev_spool, a_rewrite_cut_short_leaves_no_temporary_file_behind)
{
	char *dir = h_tmpdir("spool-tmp");
	struct dev_spool_opts o = opts(dir);
	uint64_t seqs[5];
	fill(&o, 5, 100, seqs);
	char *seg = last_segment(dir), *tmp = h_strf("%s.tmp", seg);
	FILE *f = fopen(tmp, "w");
	cr_assert(f && fputs("half a copy", f) >= 0 && fclose(f) == 0);
	struct dev_spool *s = open_spool(&o);
	cr_expect_neq(access(tmp, F_OK), 0, "%s is still there", tmp);
	uint64_t got[8];
	cr_expect_eq(read_all(s, 1, got, 8), 5);
	cr_expect_eq(got[4], seqs[4]);
	dev_spool_close(s);
	free(tmp);
	free(seg);
	free(dir);
}

Test(dev_spool, torn_tail_is_cut_and_the_rest_kept)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	struct dev_spool *s = open_spool(&o);
	uint64_t seqs[10];
	for (int i = 0; i < 9; i++)
		seqs[i] = put(s, 300, wall_ms());
	/* the state on disk when the last record is being written */
	cr_assert_eq(dev_spool_take_seq(s, &seqs[9]), 0);
	char *state = h_strf("%s/state", dir), *saved = h_strf("%s/state.saved", dir);
	char *cp = h_strf("cp %s %s", state, saved);
	cr_assert_eq(h_sh(cp, NULL, 10), 0);
	free(cp);
	uint8_t body[300] = "record";
	cr_assert_eq(dev_spool_append(s, seqs[9], seqs[8], 2, wall_ms(), body, sizeof(body)), 0);
	dev_spool_close(s);

	/* power cut in the middle of the last record: the state on disk predates it */
	cr_assert_eq(rename(saved, state), 0);
	char *seg = last_segment(dir);
	struct stat st;
	cr_assert_eq(stat(seg, &st), 0);
	cr_assert_eq(truncate(seg, st.st_size - 100), 0);
	s = open_spool(&o);
	uint64_t got[20];
	cr_expect_eq(read_all(s, 1, got, 20), 9);
	cr_expect_eq(got[8], seqs[8]);
	cr_expect_eq(dev_spool_last_durable(s), seqs[8]);
	/* the spool goes on after the cut, and never reuses a seq */
	uint64_t more = put(s, 300, wall_ms());
	cr_expect_gt(more, seqs[9]);
	cr_expect_eq(read_all(s, 1, got, 20), 10);
	dev_spool_close(s);

	/* garbage appended after the last record (a torn header) */
	int fd = open(seg, O_WRONLY | O_APPEND);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "\x4f\x50\x52\x31garbage", 11), 11);
	close(fd);
	s = open_spool(&o);
	cr_expect_eq(read_all(s, 1, got, 20), 10);
	dev_spool_close(s);
	free(seg);
	free(state);
	free(saved);
	free(dir);
}

/* Segment files in name (seq) order. */
static size_t segments(const char *dir, char names[][600])
{
	char all[64][600];
	size_t n, k = 0;
	list_files(dir, all, &n);
	for (size_t i = 0; i < n; i++)
		if (strstr(all[i], "/seg-"))
			memcpy(names[k++], all[i], 600);
	qsort(names, k, 600, (int (*)(const void *, const void *))strcmp);
	return k;
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &b, 1, off), 1);
	b ^= 0x01;
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

Test(dev_spool, corrupt_record_is_detected_skipped_and_reported)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	uint64_t seqs[5];
	fill(&o, 5, 200, seqs);

	/* flip a ciphertext byte of the third record (bit rot, not a torn write) */
	char *seg = last_segment(dir);
	off_t off = 2 * REC_BYTES(200) + 48 + 12 + 50;
	flip_byte(seg, off);

	struct dev_spool *s = open_spool(&o);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	int corrupt = 0, ok = 0;
	for (int i = 0; i < 10; i++) {
		struct dev_spool_rec r;
		uint8_t *env = NULL;
		size_t len;
		int rc = dev_spool_next(s, &c, 1, &r, &env, &len);
		if (rc == 1)
			break;
		if (rc == DEV_SPOOL_ECORRUPT)
			corrupt++;
		else if (rc == 0)
			ok++;
		free(env);
	}
	cr_expect_eq(corrupt, 1);
	cr_expect_eq(ok, 4);
	struct wire_dropped d[4];
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, seqs[1]);
	cr_expect_eq(d[0].last_seq, seqs[2]);
	cr_expect_eq(d[0].count, 1);
	/* reported once: a later read (a resend after a reconnect) or a restart does not
	 * count it again */
	uint64_t got[8];
	cr_expect_eq(read_all(s, 1, got, 8), 4);
	dev_spool_close(s);

	/* also when it cannot be cut out (no room for the rewrite): read twice, reported once */
	char *dir2 = h_tmpdir("spool");
	struct dev_spool_opts o2 = opts(dir2);
	fill(&o2, 5, 200, NULL);
	char *seg2 = last_segment(dir2), *tmp2 = h_strf("%s.tmp", seg2);
	flip_byte(seg2, off);
	struct dev_spool *s2 = open_spool(&o2);
	cr_assert_eq(mkdir(tmp2, 0700), 0); /* the rewrite cannot create its temporary file */
	cr_expect_eq(read_all(s2, 1, got, 8), 4);
	cr_expect_eq(read_all(s2, 1, got, 8), 4);
	struct dev_spool_stats st2;
	dev_spool_stats(s2, &st2);
	cr_expect_eq(st2.dropped_total, 1);
	cr_expect_eq(dev_spool_dropped(s2, d, 4), 1);
	dev_spool_close(s2);
	rmdir(tmp2);
	free(tmp2);
	free(seg2);
	free(dir2);
	s = open_spool(&o);
	cr_expect_eq(read_all(s, 1, got, 8), 4);
	cr_expect_eq(got[2], seqs[3]);
	cr_expect_eq(dev_spool_dropped(s, d, 4), 1);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 1);
	cr_expect_eq(st.records, 4);
	dev_spool_close(s);
	free(seg);
	free(dir);
}

/* Fifteen records of 300 bytes in three closed segments of five (o->segment_bytes is set);
 * seqs gets their seqs, names the segment files in order. */
static void three_segments(struct dev_spool_opts *o, uint64_t seqs[15], char names[][600])
{
	o->segment_bytes = 5 * REC_BYTES(300);
	fill(o, 15, 300, seqs);
	cr_assert_eq(segments(o->dir, names), 3);
}

/* Open the spool again: n records to read, and the ranges and total reported as dropped
 * before (the damage was mended: nothing new). Returns it open. */
static struct dev_spool *reopen_expecting(const struct dev_spool_opts *o, size_t n,
                                          size_t ranges, uint64_t dropped_total)
{
	struct dev_spool *s = open_spool(o);
	uint64_t got[16];
	struct wire_dropped d[8];
	struct dev_spool_stats st;
	cr_expect_eq(read_all(s, 1, got, 16), n);
	cr_expect_eq(dev_spool_dropped(s, d, 8), ranges);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, dropped_total);
	return s;
}

/* A fresh directory (*dir, free it) with three_segments in it: / opened. */
static void new_three(char **dir, struct dev_spool_opts *o, uint64_t seqs[15], char names[][600])
{
	*dir = h_tmpdir("spool");
	*o = opts(*dir);
	three_segments(o, seqs, names);
}

static struct dev_spool *fresh_three(char **dir, struct dev_spool_opts *o, uint64_t seqs[15],
                                     char names[][600])
{
	new_three(dir, o, seqs, names);
	return open_spool(o);
}

Test(dev_spool, rot_in_an_older_segment_keeps_the_rest_and_reports_the_loss)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15];
	char names[64][600];
	new_three(&dir, &o, seqs, names);
	const off_t rec = REC_BYTES(300);
	struct dev_spool *s;

	/* a header bit flips in the middle of the first segment and at the end of the second
	 * (neither is a torn write: those segments were complete) */
	flip_byte(names[0], 2 * rec + 9);
	flip_byte(names[1], 4 * rec + 9);
	s = open_spool(&o);
	uint64_t got[16];
	cr_assert_eq(read_all(s, 1, got, 16), 13, "only the two damaged records are lost");
	cr_expect_eq(got[2], seqs[3]);
	cr_expect_eq(got[8], seqs[10]);
	struct wire_dropped d[4];
	cr_assert_eq(dev_spool_dropped(s, d, 4), 2);
	if (d[0].prev_seq > d[1].prev_seq) { /* the rewrite's report comes after the scan's */
		struct wire_dropped t = d[0];
		d[0] = d[1];
		d[1] = t;
	}
	cr_expect_eq(d[0].prev_seq, seqs[1]);
	cr_expect_eq(d[0].last_seq, seqs[2]);
	cr_expect_eq(d[1].prev_seq, seqs[8]);
	cr_expect_eq(d[1].last_seq, seqs[9]);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 2);
	cr_expect_eq(st.records, 13);
	dev_spool_close(s);

	/* recovered once: the next start finds clean segments and reports nothing new */
	s = reopen_expecting(&o, 13, 2, 2);
	cr_expect_eq(put(s, 300, wall_ms()), seqs[14] + 1);
	dev_spool_close(s);
	free(dir);
}

/* Header rot that appears while the spool is open, where a walk starts: at the first record of
 * a segment, and at the record after the one the uploader's cursor last returned. A reader
 * skips it (it cannot know the damage is there until it meets it) and what it hid is
 * reported as dropped, as for damage met in the middle of a walk. */
Test(dev_spool, rot_met_where_a_walk_starts_is_reported)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15];
	char names[64][600];
	new_three(&dir, &o, seqs, names);
	const off_t rec = REC_BYTES(300);
	struct dev_spool *s = open_spool(&o);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	struct dev_spool_rec r;
	uint8_t *env = NULL;
	size_t len;
	for (int i = 0; i < 7; i++) { /* up to seqs[6], the second of the second segment */
		cr_assert_eq(dev_spool_next(s, &c, 1, &r, &env, &len), 0);
		free(env);
	}
	cr_assert_eq(r.seq, seqs[6]);
	flip_byte(names[1], 2 * rec + 9); /* seqs[7], where the cursor resumes */
	flip_byte(names[2], 0 * rec + 9); /* seqs[10], the third segment's first */
	uint64_t got[16];
	size_t n = read_on(s, &c, 1, 0, got, 16);
	cr_assert_eq(n, 6, "the rest of the walk: seqs[8], [9], [11] to [14]");
	cr_expect_eq(got[0], seqs[8]);
	cr_expect_eq(got[2], seqs[11]);
	struct wire_dropped d[4];
	cr_assert_eq(dev_spool_dropped(s, d, 4), 2, "the two records the damage hid");
	cr_expect_eq(d[0].prev_seq, seqs[6]);
	cr_expect_eq(d[0].last_seq, seqs[7]);
	cr_expect_eq(d[1].prev_seq, seqs[9]);
	cr_expect_eq(d[1].last_seq, seqs[10]);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 2);
	dev_spool_close(s);
	free(dir);

	/* the segment before is gone (acknowledged by a range, removed): what the damage hid
	 * starts after the chain's link into the damaged segment, not after the last segment
	 * still on disk (its records were stored, not lost) */
	s = fresh_three(&dir, &o, seqs, names);
	const uint64_t second[1][2] = {{seqs[5], seqs[9]}};
	cr_assert_eq(dev_spool_ack(s, 0, second, 1), 0);
	cr_assert_eq(dev_spool_dropped(s, d, 4), 0);
	flip_byte(names[2], 0 * rec + 9); /* seqs[10] */
	cr_expect_eq(read_all(s, 1, got, 16), 9, "seqs[0] to [4], [11] to [14]");
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, seqs[9], "%llu", (unsigned long long)d[0].prev_seq);
	cr_expect_eq(d[0].last_seq, seqs[10]);
	dev_spool_close(s);
	free(dir);
}

/* Damage in a record already acknowledged, met by a read that does not skip acknowledged
 * records (the resend task's), loses nothing: it is skipped (DEV_SPOOL_ECORRUPT) and not
 * reported as dropped, whether the record's tag fails or its header is hidden, and whether the
 * cumulative point or a range acknowledged it. Before, each was a dropped range and counted in
 * dropped_total (a false gap at a bridge holding it above its frontier). Damage in a record
 * not acknowledged is still reported. */
Test(dev_spool, rot_in_an_acknowledged_record_is_no_loss)
{
	const off_t rec = REC_BYTES(300);
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	struct dev_spool *s = open_spool(&o);
	uint64_t q[6];
	for (int i = 0; i < 6; i++)
		q[i] = put(s, 300, wall_ms());
	cr_assert_eq(dev_spool_ack(s, q[3], NULL, 0), 0); /* 4 and 5 unacknowledged: kept */
	char *seg = last_segment(dir);
	flip_byte(seg, 1 * rec + 48 + 12 + 100); /* q[1]'s ciphertext */
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(q[0]);
	struct dev_spool_rec r;
	uint8_t *env = NULL;
	size_t len;
	cr_assert_eq(dev_spool_next(s, &c, 0, &r, &env, &len), 0);
	free(env);
	cr_expect_eq(r.seq, q[0]);
	cr_expect_eq(dev_spool_next(s, &c, 0, &r, &env, &len), DEV_SPOOL_ECORRUPT);
	cr_assert_eq(dev_spool_next(s, &c, 0, &r, &env, &len), 0);
	free(env);
	cr_expect_eq(r.seq, q[2]);
	struct wire_dropped d[4];
	struct dev_spool_stats st;
	cr_expect_eq(dev_spool_dropped(s, d, 4), 0);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 0);
	dev_spool_close(s);
	free(seg);
	free(dir);

	/* acknowledged by a range; headers hidden by damage since the open: q[2]'s (inside the
	 * range) and q[4]'s (not acknowledged: reported) */
	dir = h_tmpdir("spool");
	o = opts(dir);
	s = open_spool(&o);
	for (int i = 0; i < 6; i++)
		q[i] = put(s, 300, wall_ms());
	const uint64_t range[1][2] = {{q[1], q[3]}};
	cr_assert_eq(dev_spool_ack(s, 0, range, 1), 0);
	seg = last_segment(dir);
	flip_byte(seg, 2 * rec + 9);
	flip_byte(seg, 4 * rec + 9);
	uint64_t got[8];
	c = DEV_SPOOL_CURSOR_AT(0);
	size_t n = read_on(s, &c, 0, 0, got, 8);
	cr_assert_eq(n, 4, "q[0], q[1], q[3], q[5]");
	cr_expect_eq(got[2], q[3]);
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1, "q[4] only");
	cr_expect_eq(d[0].prev_seq, q[3]);
	cr_expect_eq(d[0].last_seq, q[4]);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 1);
	dev_spool_close(s);
	free(seg);
	free(dir);
}

/* A record whose body rots is cut out of its segment by a rewrite, which resynchronises past
 * any other damage in that segment: header rot that no walk has reached yet, in the middle and
 * at the segment's tail. What that damage hides is reported with the rotten record, not cut
 * out silently (a hole the bridge would wait on for ever). */
Test(dev_spool, a_rewrite_reports_the_damage_it_cuts_out)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15];
	char names[64][600];
	struct dev_spool *s = fresh_three(&dir, &o, seqs, names);
	const off_t rec = REC_BYTES(300);
	flip_byte(names[1], 0 * rec + 48 + 12 + 50); /* seqs[5]'s body */
	flip_byte(names[1], 2 * rec + 9);	      /* seqs[7]'s header */
	flip_byte(names[1], 4 * rec + 9);	      /* seqs[9]'s header, the segment's tail */
	uint64_t got[16];
	cr_assert_eq(read_all(s, 1, got, 16), 12, "all but the three damaged records");
	cr_expect_eq(got[5], seqs[6]);
	cr_expect_eq(got[6], seqs[8]);
	cr_expect_eq(got[7], seqs[10]);
	struct wire_dropped d[8];
	size_t n = dev_spool_dropped(s, d, 8);
	cr_assert_eq(n, 3, "each damaged record is reported once: %zu ranges", n);
	for (int k = 5; k <= 9; k += 2) {
		int found = 0;
		for (size_t j = 0; j < n; j++)
			found |= d[j].prev_seq == seqs[k - 1] && d[j].last_seq == seqs[k];
		cr_expect(found, "seqs[%d] is not reported as dropped", k);
	}
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 3);
	dev_spool_close(s);

	/* the reports are on disk, and the segment is clean: nothing new at the next start */
	dev_spool_close(reopen_expecting(&o, 12, 3, 3));
	free(dir);

	/* damage a walk met and reported just before (header rot right before the rotten record,
	 * whose range then joins it) is not reported a second time by the rewrite */
	s = fresh_three(&dir, &o, seqs, names);
	flip_byte(names[1], 1 * rec + 9);	       /* seqs[6]'s header */
	flip_byte(names[1], 2 * rec + 48 + 12 + 50); /* seqs[7]'s body */
	cr_assert_eq(read_all(s, 1, got, 16), 13, "all but the two damaged records");
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 2, "2 records lost, %llu reported",
	             (unsigned long long)st.dropped_total);
	n = dev_spool_dropped(s, d, 8);
	cr_assert_eq(n, 1, "%zu ranges", n);
	cr_expect_eq(d[0].prev_seq, seqs[5]);
	cr_expect_eq(d[0].last_seq, seqs[7]);
	dev_spool_close(s);
	free(dir);
}

/* The loss found when the spool opens is on disk (state) before the damage is mended: a power
 * cut in between must not leave clean segments and no report. */
Test(dev_spool, a_loss_found_at_open_is_recorded_before_it_is_mended)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15];
	char names[64][600];
	new_three(&dir, &o, seqs, names);
	const off_t rec = REC_BYTES(300);
	struct dev_spool *s;
	flip_byte(names[0], 2 * rec + 9);
	/* the state cannot be written: the open fails as a power cut there would end it */
	char *tmpd = h_strf("%s/state.tmp", dir);
	cr_assert_eq(mkdir(tmpd, 0700), 0);
	struct dev_spool *s2 = NULL;
	cr_assert_neq(dev_spool_open(&o, &s2, NULL), 0);
	cr_assert_eq(rmdir(tmpd), 0);
	s = open_spool(&o);
	uint64_t got[16];
	cr_expect_eq(read_all(s, 1, got, 16), 14);
	struct wire_dropped d[4];
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1, "the damaged record is still reported");
	cr_expect_eq(d[0].last_seq, seqs[2]);
	dev_spool_close(s);
	free(tmpd);
	free(dir);
}

/* Ten records, the last one damaged at byte `at` of it, then reopened: the state file says that
 * record was appended (fdatasync'd), so it is rot, reported as dropped, not a torn write cut
 * silently; the chain goes on from it. */
static void expect_last_record_rot_reported(off_t at)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	uint64_t seqs[10];
	fill(&o, 10, 300, seqs);
	char *seg = last_segment(dir);
	flip_byte(seg, 9 * REC_BYTES(300) + at);
	struct dev_spool *s = open_spool(&o);
	uint64_t got[16];
	cr_expect_eq(read_all(s, 1, got, 16), 9);
	struct wire_dropped d[4];
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1, "the damaged record was cut silently");
	cr_expect_eq(d[0].prev_seq, seqs[8]);
	cr_expect_eq(d[0].last_seq, seqs[9]);
	cr_expect_eq(dev_spool_last_durable(s), seqs[9]);
	dev_spool_close(s);
	free(seg);
	free(dir);
}

/* Header rot that appears while the spool is open, in the last record of an older segment:
 * a reader meets no header after the one before it, and reports what the tail held as
 * dropped; a segment dropped for room before any reader met it reports its range up to its
 * last record. Before, both ended at the last header still readable, and the bridge waited
 * for the tail's seqs for ever. */
Test(dev_spool, rot_that_hides_a_segment_s_tail_is_reported)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15];
	char names[64][600];
	const off_t rec = REC_BYTES(300);
	struct dev_spool *s = fresh_three(&dir, &o, seqs, names);
	flip_byte(names[1], 4 * rec + 9); /* seqs[9], the second segment's last */
	uint64_t got[16];
	cr_expect_eq(read_all(s, 1, got, 16), 14);
	struct wire_dropped d[4];
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1, "the tail was skipped silently");
	cr_expect_eq(d[0].prev_seq, seqs[8]);
	cr_expect_eq(d[0].last_seq, seqs[9]);
	dev_spool_close(s);
	free(dir);

	new_three(&dir, &o, seqs, names);
	o.max_bytes = 15 * rec + rec / 2; /* one more record drops the first segment */
	s = open_spool(&o);
	flip_byte(names[0], 4 * rec + 9); /* seqs[4], the first segment's last */
	put(s, 300, wall_ms());
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_assert_eq(st.segments, 3, "the first segment was dropped for room");
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_eq(d[0].last_seq, seqs[4], "the drop ends at %llu",
		     (unsigned long long)d[0].last_seq);
	cr_expect_eq(d[0].count, 5);
	dev_spool_close(s);
	free(dir);
}

Test(dev_spool, rot_in_the_last_durable_record_is_reported)
{
	expect_last_record_rot_reported(48 + 12 + 100); /* its ciphertext: the tag fails */
}

Test(dev_spool, rot_in_the_header_of_the_last_durable_record_is_reported)
{
	expect_last_record_rot_reported(12); /* its header: the CRC fails */
}

static void expect_no_drop(const struct dev_spool *s)
{
	struct wire_dropped d[4];
	cr_expect_eq(dev_spool_dropped(s, d, 4), 0, "reported a drop of (%llu, %llu]",
		     (unsigned long long)d[0].prev_seq, (unsigned long long)d[0].last_seq);
}

/* Everything was acknowledged (its segments deleted, the state file written), then a power cut
 * tore the first record of the next segment: a torn write, nothing to report. */
Test(dev_spool, a_torn_first_record_after_everything_was_acknowledged_is_no_loss)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	uint64_t seqs[3];
	struct dev_spool *s = open_spool(&o);
	for (int i = 0; i < 3; i++)
		seqs[i] = put(s, 300, wall_ms());
	cr_assert_eq(dev_spool_ack(s, seqs[2], NULL, 0), 0);
	dev_spool_close(s);
	char *torn = h_strf("%s/seg-%020llu.log", dir, (unsigned long long)seqs[2] + 1);
	FILE *f = fopen(torn, "wb");
	cr_assert_not_null(f);
	fputs("twenty garbage bytes", f);
	fclose(f);
	s = open_spool(&o);
	expect_no_drop(s);
	dev_spool_close(s);
	free(torn);
	free(dir);
}

Test(dev_spool, thousands_of_segments_need_few_file_descriptors)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts_per_record(dir);
	struct rlimit rl = {64, 64};
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	/* a device offline for long: appends only, nothing acknowledged */
	uint64_t seqs[300];
	fill(&o, 300, 300, seqs);

	struct dev_spool *s = open_spool(&o);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.segments, 300);
	uint64_t got[301];
	cr_expect_eq(read_all(s, 1, got, 301), 300);
	cr_expect_eq(put(s, 300, wall_ms()), seqs[299] + 1);
	cr_assert_eq(dev_spool_ack(s, seqs[149], NULL, 0), 0);
	cr_expect_eq(read_all(s, 1, got, 301), 151);
	dev_spool_close(s);
	free(dir);
}

Test(dev_spool, the_chain_never_goes_back_across_a_restart)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts_per_record(dir);
	struct dev_spool *s = open_spool(&o);
	uint64_t a = put(s, 300, wall_ms()), b = put(s, 300, wall_ms()), c = put(s, 300, wall_ms());
	/* the newest record is acknowledged selectively (its segment stays while it is the
	 * newest: see a_torn_append_after_a_selective_ack_of_the_newest_segment_is_no_loss) */
	uint64_t ranges[1][2] = {{c, c}};
	cr_assert_eq(dev_spool_ack(s, 0, ranges, 1), 0);
	cr_expect_eq(dev_spool_last_durable(s), c);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.records, 2);
	dev_spool_close(s);
	s = open_spool(&o);
	cr_expect_eq(dev_spool_last_durable(s), c,
		     "the next envelope links to %llu, not to %llu (a fork at the bridge)",
		     (unsigned long long)c, (unsigned long long)b);
	uint64_t d = put(s, 300, wall_ms());
	uint64_t got[4];
	/* ranges are not persisted: c goes again (a duplicate the bridge acknowledges) */
	cr_assert_eq(read_all(s, 1, got, 4), 4);
	cr_expect_eq(got[0], a);
	cr_expect_eq(got[2], c);
	cr_expect_eq(got[3], d);
	/* once a newer segment exists, a range ack deletes the covered one */
	uint64_t again[2][2] = {{c, c}, {d, d}};
	cr_assert_eq(dev_spool_ack(s, 0, again, 2), 0);
	cr_assert_eq(read_all(s, 1, got, 4), 2);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.segments, 3, "a, b and the newest (d)");
	dev_spool_close(s);
	free(dir);
}

Test(dev_spool, overflow_drops_oldest_and_records_the_range)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 2048;
	o.max_bytes = 8192;
	struct dev_spool *s = open_spool(&o);
	uint64_t seqs[100];
	for (int i = 0; i < 100; i++)
		seqs[i] = put(s, 400, wall_ms());
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_leq(st.bytes, 8192 + 2048, "bounded by max_bytes (plus the open segment)");
	cr_expect_gt(st.dropped_total, 0);
	cr_expect_eq(st.records + st.dropped_total, 100, "every record is kept or counted dropped");

	struct wire_dropped d[8];
	size_t n = dev_spool_dropped(s, d, 8);
	cr_assert_eq(n, 1, "consecutive drops coalesce into one chain link");
	cr_expect_eq(d[0].prev_seq, 0, "the very first record had no predecessor");
	cr_expect_eq(d[0].count, st.dropped_total);
	cr_expect_eq(d[0].last_seq, seqs[d[0].count - 1]);
	cr_expect_eq(st.chain_floor, d[0].prev_seq,
		     "the floor stays below a drop the bridge has not acknowledged");
	/* the oldest remaining record links to the last dropped one */
	uint64_t got[100];
	cr_assert_eq(read_all(s, 1, got, 100), st.records);
	cr_expect_eq(got[0], seqs[d[0].count]);

	/* reported in an envelope that is then acknowledged: the range is forgotten */
	uint64_t carrier = put(s, 100, wall_ms());
	dev_spool_dropped_reported(s, carrier, d, n);
	cr_expect_eq(dev_spool_dropped(s, d, 8), 1, "kept until the carrier is acknowledged");
	dev_spool_close(s);
	s = open_spool(&o);
	cr_expect_eq(dev_spool_dropped(s, d, 8), 1, "pending ranges survive a restart");
	/* a bridge acknowledged past the drop (it learnt of it) but the carrier's ack is not in:
	 * the floor is what was acknowledged, never below */
	uint64_t past = seqs[d[0].count];
	cr_assert_eq(dev_spool_ack(s, past, NULL, 0), 0);
	cr_expect_eq(dev_spool_dropped(s, d, 8), 1);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.chain_floor, past);
	cr_assert_eq(dev_spool_ack(s, carrier, NULL, 0), 0);
	cr_expect_eq(dev_spool_dropped(s, d, 8), 0);
	dev_spool_close(s);
	free(dir);
}

/* The agent reads the pending ranges, encodes them into a batch, then appends it; that append
 * may drop more and grow the last range. The batch carried the smaller range: the grown one must
 * stay pending for the next batch, or the drop behind it is never reported. */
Test(dev_spool, a_range_that_grows_while_its_carrier_is_appended_stays_pending)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 512; /* one record per segment: every append past the limit drops one */
	o.max_bytes = 4096;
	struct dev_spool *s = open_spool(&o);
	struct wire_dropped sent[8], d[8];
	size_t n = 0;
	for (int i = 0; i < 100 && !n; i++) {
		put(s, 400, wall_ms());
		n = dev_spool_dropped(s, sent, 8);
	}
	cr_assert_eq(n, 1, "the spool overflowed");
	/* as agent_flush_batch does: read what is pending, encode it, append, mark it carried */
	uint64_t carrier = put(s, 400, wall_ms());
	dev_spool_dropped_reported(s, carrier, sent, n);
	cr_assert_eq(dev_spool_dropped(s, d, 8), 1);
	cr_assert_gt(d[0].last_seq, sent[0].last_seq, "appending the carrier dropped one more");
	uint64_t r[1][2] = {{carrier, carrier}};
	cr_assert_eq(dev_spool_ack(s, 0, (const uint64_t(*)[2])r, 1), 0);
	struct wire_dropped after[8];
	cr_assert_eq(dev_spool_dropped(s, after, 8), 1,
		     "the grown range was not in the acknowledged carrier: still pending");
	cr_expect_eq(after[0].prev_seq, d[0].prev_seq);
	cr_expect_eq(after[0].last_seq, d[0].last_seq);
	cr_expect_eq(after[0].count, d[0].count);
	/* the next carrier takes it whole (and, appended, drops again: a new range) */
	n = dev_spool_dropped(s, sent, 8);
	uint64_t next = put(s, 100, wall_ms());
	dev_spool_dropped_reported(s, next, sent, n);
	uint64_t r2[1][2] = {{next, next}};
	cr_assert_eq(dev_spool_ack(s, 0, (const uint64_t(*)[2])r2, 1), 0);
	struct wire_dropped last[8];
	size_t nl = dev_spool_dropped(s, last, 8);
	for (size_t i = 0; i < nl; i++)
		cr_expect_gt(last[i].prev_seq, after[0].prev_seq, "the carried range is forgotten");
	dev_spool_close(s);
	free(dir);
}

/* A segment dropped for the size limit: the state file says so before the segment is gone, so a
 * power cut right after the append that dropped it still reports the range. */
/* The power cut: a copy of what dir holds now, without closing the spool there (less a
 * state.tmp directory a test made), in a directory of its own (free it). / A spool opened on
 * such a copy of o's directory. */
static char *power_cut(const char *dir)
{
	char *copy = h_tmpdir("spool-copy"), *out = NULL;
	char *cmd = h_strf("cp -a %s/. %s/ && rm -rf %s/state.tmp", dir, copy, copy);
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	free(out);
	free(cmd);
	return copy;
}

static struct dev_spool *open_power_cut(const struct dev_spool_opts *o)
{
	struct dev_spool_opts oc = *o;
	char *copy = power_cut(o->dir);
	oc.dir = copy;
	struct dev_spool *c = open_spool(&oc);
	free(copy);
	return c;
}

Test(dev_spool, a_drop_is_on_disk_before_its_segment_is_removed)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 512;
	o.max_bytes = 4096;
	struct dev_spool *s = open_spool(&o);
	struct wire_dropped d[8], after[8];
	size_t n = 0;
	for (int i = 0; i < 100 && !n; i++) {
		put(s, 400, wall_ms());
		n = dev_spool_dropped(s, d, 8);
	}
	cr_assert_eq(n, 1);
	struct dev_spool *c = open_power_cut(&o);
	cr_assert_eq(dev_spool_dropped(c, after, 8), 1, "the drop was not on disk");
	cr_expect_eq(after[0].prev_seq, d[0].prev_seq);
	cr_expect_eq(after[0].last_seq, d[0].last_seq);
	dev_spool_close(c);
	dev_spool_close(s);
	free(dir);
}

/* 1 if seq is inside one of the n dropped ranges d */
static int reported_dropped(const struct wire_dropped *d, size_t n, uint64_t seq)
{
	for (size_t i = 0; i < n; i++)
		if (d[i].prev_seq < seq && seq <= d[i].last_seq)
			return 1;
	return 0;
}

/* The state write before a drop fails (its temporary file is a directory here; a full disk in
 * the field), the segment goes all the same, and a power cut comes before another state write
 * succeeds: the range the state file has is shorter than what was dropped. The next open still
 * reports every record that is gone (before, the end of the range was a hole for ever). */
Test(dev_spool, a_drop_whose_state_write_failed_is_reported_after_a_power_cut)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 512;
	o.max_bytes = 4096;
	struct dev_spool *s = open_spool(&o);
	struct wire_dropped d[8], after[8];
	uint64_t seqs[100];
	size_t n = 0, nseqs = 0;
	while (nseqs < 100 && !n) {
		seqs[nseqs++] = put(s, 400, wall_ms());
		n = dev_spool_dropped(s, d, 8);
	}
	cr_assert_eq(n, 1, "the spool overflowed");
	uint64_t on_disk = d[0].last_seq;
	char *tmp = h_strf("%s/state.tmp", dir);
	cr_assert_eq(mkdir(tmp, 0700), 0);
	for (int i = 0; i < 3; i++)
		seqs[nseqs++] = put(s, 400, wall_ms());
	cr_assert_eq(dev_spool_dropped(s, d, 8), 1);
	cr_assert_gt(d[0].last_seq, on_disk, "more dropped, the range grown in memory only");

	struct dev_spool *c = open_power_cut(&o);
	size_t na = dev_spool_dropped(c, after, 8);
	uint64_t got[100];
	size_t ngot = read_all(c, 1, got, 100);
	cr_assert_geq(ngot, 1);
	for (size_t i = 0; i < nseqs && seqs[i] < got[0]; i++)
		cr_expect(reported_dropped(after, na, seqs[i]),
		          "record %llu is gone and not reported dropped",
		          (unsigned long long)seqs[i]);
	cr_expect_eq(dev_spool_acked_upto(c), 0);
	dev_spool_close(c);
	cr_assert_eq(rmdir(tmp), 0);
	dev_spool_close(s);
	free(tmp);
	free(dir);
}

/* A fresh spool in *dir (free it), opened with o, holding three records, one per segment, the
 * newest *newest. */
static struct dev_spool *open_three_records(char **dir, struct dev_spool_opts *o,
					    uint64_t *newest)
{
	*dir = h_tmpdir("spool");
	*o = opts_per_record(*dir);
	struct dev_spool *s = open_spool(o);
	for (int i = 0; i < 3; i++)
		*newest = put(s, 300, wall_ms());
	return s;
}

/* The segment holding the newest record goes only once the ack's state is on disk: when it
 * cannot be written (here its temporary file is a directory), the older acknowledged segments
 * go and that one stays, and a power cut then loses no link — the next envelope still links
 * to the newest record the bridge stored. Once the state can be written, it goes too. */
Test(dev_spool, an_ack_keeps_the_newest_record_until_its_state_is_on_disk)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t c;
	struct dev_spool *s = open_three_records(&dir, &o, &c);
	char *tmp = h_strf("%s/state.tmp", dir);
	cr_assert_eq(mkdir(tmp, 0700), 0);
	cr_expect_neq(dev_spool_ack(s, c, NULL, 0), 0, "the state could not be written");
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.segments, 1, "%zu segments: the older ones go, the newest stays",
		     (size_t)st.segments);
	struct dev_spool *cs = open_power_cut(&o);
	cr_expect_eq(dev_spool_last_durable(cs), c, "the chain went back to %llu",
		     (unsigned long long)dev_spool_last_durable(cs));
	dev_spool_close(cs);
	cr_assert_eq(rmdir(tmp), 0);
	cr_expect_eq(dev_spool_ack(s, c, NULL, 0), 0);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.segments, 0);
	dev_spool_close(s);
	s = open_spool(&o);
	cr_expect_eq(dev_spool_last_durable(s), c);
	dev_spool_close(s);
	free(tmp);
	free(dir);
}

/* A backlog that filled the disk: no file may grow (RLIMIT_FSIZE 0), so not even the state
 * file can be rewritten, and yet the acks free the backlog's room — all but the newest
 * record's segment — so the spool drains; once there is room, that one goes too. */
Test(dev_spool, acks_free_room_on_a_full_disk)
{
	char *dir = h_tmpdir("spool-full-ack");
	struct dev_spool_opts o = opts_per_record(dir);
	uint64_t seqs[5];
	fill(&o, 5, 300, seqs);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {0, 0};
		setrlimit(RLIMIT_FSIZE, &rl);
		struct dev_spool *s = NULL;
		if (dev_spool_open(&o, &s, NULL))
			_exit(3);
		int rc = dev_spool_ack(s, seqs[4], NULL, 0);
		struct dev_spool_stats st;
		dev_spool_stats(s, &st);
		dev_spool_close(s);
		_exit(rc == 0 ? 4 : st.segments != 1 ? 5 : 0);
	}
	int st = 0;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	          "child status %d (3: no open, 4: the state was written, 5: not just the newest "
	          "record's segment left)",
	          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	struct dev_spool *s = open_spool(&o); /* room again */
	cr_expect_eq(dev_spool_last_durable(s), seqs[4]);
	cr_expect_eq(dev_spool_ack(s, seqs[4], NULL, 0), 0);
	struct dev_spool_stats sst;
	dev_spool_stats(s, &sst);
	cr_expect_eq(sst.segments, 0);
	dev_spool_close(s);
	free(dir);
}

/* A power cut tore the first record of a new segment, so the segment holding the newest record
 * is no longer the last one; the next open, on a full disk (no state written), with the age
 * limit passed: the limits spare that segment, and after a second power cut the next envelope
 * still links to the newest record. Before, it was dropped like any old segment. */
Test(dev_spool, the_limits_spare_the_newest_record_behind_a_torn_segment)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t c;
	struct dev_spool *s = open_three_records(&dir, &o, &c);
	/* the power cut, with the state file behind, and the torn first record of c's successor */
	char *cut = power_cut(dir);
	dev_spool_close(s);
	struct dev_spool_opts oc = o;
	char *torn = h_strf("%s/seg-%020llu.log", cut, (unsigned long long)c + 1);
	oc.dir = cut;
	FILE *f = fopen(torn, "w");
	cr_assert_not_null(f);
	fputs("OSPL\1\2", f);
	fclose(f);
	h_sleep_ms(20);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {0, 0};
		setrlimit(RLIMIT_FSIZE, &rl);
		struct dev_spool_opts aged = oc;
		aged.max_age_ms = 1;
		struct dev_spool *a = NULL;
		_exit(dev_spool_open(&aged, &a, NULL) ? 3 : 0); /* a second power cut: no close */
	}
	int st = 0;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d",
		  WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	s = open_spool(&oc);
	cr_expect_eq(dev_spool_last_durable(s), c, "the chain went back to %llu",
		     (unsigned long long)dev_spool_last_durable(s));
	dev_spool_close(s);
	free(torn);
	free(cut);
	free(dir);
}

Test(dev_spool, age_limit_drops_old_records)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 1024;
	o.max_age_ms = 3600 * 1000;
	struct dev_spool *s = open_spool(&o);
	int64_t old = wall_ms() - 2 * 3600 * 1000;
	for (int i = 0; i < 10; i++)
		put(s, 400, old + i);
	for (int i = 0; i < 3; i++)
		put(s, 400, wall_ms());
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 10, "records older than max_age are dropped");
	cr_expect_eq(st.records, 3);
	cr_expect_geq(st.oldest_unsent_ms, wall_ms() - 60000);
	dev_spool_close(s);
	free(dir);
}

Test(dev_spool, records_stamped_before_the_clock_was_set_do_not_age_out)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 1024;
	o.max_age_ms = 3600 * 1000;
	struct dev_spool *s = open_spool(&o);
	/* booted without a real-time clock: 1970 plus the uptime, until NTP sets the clock */
	for (int i = 0; i < 10; i++)
		put(s, 400, 42000 + i);
	for (int i = 0; i < 3; i++)
		put(s, 400, wall_ms());
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 0, "an unknown age is not an old age");
	cr_expect_eq(st.records, 13);
	dev_spool_close(s);
	s = open_spool(&o);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.records, 13);
	dev_spool_close(s);

	/* ... nor does it shelter the old ones behind it */
	char *dir2 = h_tmpdir("spool");
	o.dir = dir2;
	s = open_spool(&o);
	for (int i = 0; i < 2; i++)
		put(s, 400, 42000 + i);
	for (int i = 0; i < 6; i++)
		put(s, 400, wall_ms() - 3 * 3600 * 1000);
	for (int i = 0; i < 2; i++)
		put(s, 400, wall_ms());
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 6, "records 3 hours old outlived max_age (1 h)");
	cr_expect_eq(st.records, 4);
	dev_spool_close(s);
	free(dir2);
	free(dir);
}

/* A child appends in a loop and reports each seq once dev_spool_append returned; the parent
 * kills it at a random moment. Nothing reported may be missing after reopening. */
Test(dev_spool, kill9_during_writes_loses_nothing_reported, .timeout = 240)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 16384;
	uint64_t *reported = calloc(200000, sizeof(*reported));
	size_t nreported = 0;
	uint64_t max_taken = 0;
	srand((unsigned)time(NULL));
	const int iterations = 40;
	for (int it = 0; it < iterations; it++) {
		int fds[2];
		cr_assert_eq(pipe(fds), 0);
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			close(fds[0]);
			struct dev_spool *s = NULL;
			if (dev_spool_open(&o, &s, NULL))
				_exit(3);
			for (int i = 0; i < 100000; i++) {
				uint64_t seq;
				char buf[600];
				if (dev_spool_take_seq(s, &seq))
					_exit(4);
				uint64_t msg[2] = {1, seq}; /* 1: taken */
				if (write(fds[1], msg, sizeof(msg)) != sizeof(msg))
					_exit(5);
				int n = snprintf(buf, sizeof(buf), "record %llu payload", (unsigned long long)seq);
				size_t len = (size_t)n + (size_t)(seq % 500);
				memset(buf + n, 'x', len - (size_t)n);
				if (dev_spool_append(s, seq, dev_spool_last_durable(s), 2, wall_ms(),
						     (uint8_t *)buf, len))
					_exit(6);
				msg[0] = 2; /* 2: written */
				if (write(fds[1], msg, sizeof(msg)) != sizeof(msg))
					_exit(7);
			}
			_exit(0);
		}
		close(fds[1]);
		h_sleep_ms(20 + rand() % 150);
		kill(pid, SIGKILL);
		int st;
		waitpid(pid, &st, 0);
		cr_assert(WIFSIGNALED(st), "writer exited early with %d", WEXITSTATUS(st));
		uint64_t msg[2];
		while (read(fds[0], msg, sizeof(msg)) == sizeof(msg)) {
			if (msg[1] > max_taken)
				max_taken = msg[1];
			if (msg[0] == 2 && nreported < 200000)
				reported[nreported++] = msg[1];
		}
		close(fds[0]);

		struct dev_spool *s = open_spool(&o);
		uint64_t *got = calloc(200000, sizeof(*got));
		size_t n = read_all(s, 0, got, 200000);
		size_t j = 0;
		uint64_t acked = dev_spool_acked_upto(s);
		for (size_t i = 0; i < nreported; i++) {
			if (reported[i] <= acked)
				continue; /* acknowledged: deleted on purpose */
			while (j < n && got[j] < reported[i])
				j++;
			cr_assert(j < n && got[j] == reported[i],
				  "iteration %d: reported seq %llu missing after kill -9", it,
				  (unsigned long long)reported[i]);
		}
		uint64_t next;
		cr_assert_eq(dev_spool_take_seq(s, &next), 0);
		cr_assert_gt(next, max_taken, "seq %llu reused", (unsigned long long)next);
		max_taken = next;
		/* acknowledge half of it now and then, as a bridge would */
		if (it % 3 == 0 && n)
			dev_spool_ack(s, got[n / 2], NULL, 0);
		dev_spool_close(s);
		free(got);
	}
	cr_log_info("%zu records reported written over %d kill -9 cycles, none lost", nreported,
		    iterations);
	cr_expect_gt(nreported, 100, "the writer made progress");
	free(reported);
	free(dir);
}

/* The first start cannot write the whole key (a full disk, or a power cut in the middle): no
 * short key file is left behind to refuse every later start. */
Test(dev_spool, a_key_cut_short_at_first_start_does_not_stop_the_next)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {10, 10}; /* room for 10 of the key's 32 bytes */
		setrlimit(RLIMIT_FSIZE, &rl);
		struct dev_spool *s = NULL;
		_exit(dev_spool_open(&o, &s, NULL) == DEV_SPOOL_OK ? 1 : 0);
	}
	int st;
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the key was written whole under the limit");
	struct dev_spool *s = open_spool(&o);
	put(s, 100, wall_ms());
	dev_spool_close(s);
	free(dir);
}

/* A full disk (here: the file size limit) fails the append cleanly: the segment holds the
 * records appended before, not a byte of the one that failed. The writer exits without closing
 * the spool (a crash right after), so the next open has nothing to cut; it reports nothing
 * dropped and goes on after the last record. */
Test(dev_spool, full_disk_fails_cleanly)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 1 << 20;
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {20000, 20000};
		setrlimit(RLIMIT_FSIZE, &rl);
		struct dev_spool *s = NULL;
		if (dev_spool_open(&o, &s, NULL))
			_exit(250);
		for (int i = 0; i < 1000; i++) {
			uint64_t seq;
			char buf[1000];
			if (dev_spool_take_seq(s, &seq))
				_exit(251);
			int n = snprintf(buf, sizeof(buf), "record %llu payload", (unsigned long long)seq);
			memset(buf + n, 'y', sizeof(buf) - (size_t)n);
			int rc = dev_spool_append(s, seq, dev_spool_last_durable(s), 2, wall_ms(),
						  (uint8_t *)buf, sizeof(buf));
			if (rc == DEV_SPOOL_ENOSPC)
				_exit(i); /* how many were appended */
			if (rc)
				_exit(252);
		}
		_exit(253);
	}
	int st;
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st), "child status %d", st);
	int appended = WEXITSTATUS(st);
	cr_assert(appended >= 6 && appended < 25, "child exit %d (250-253: failed otherwise)",
	          appended);
	char *seg = last_segment(dir);
	struct stat sst;
	cr_assert_eq(stat(seg, &sst), 0);
	cr_expect_eq(sst.st_size, appended * REC_BYTES(1000),
	             "segment of %lld bytes for %d records of %lld: a torn record left behind",
	             (long long)sst.st_size, appended, (long long)REC_BYTES(1000));
	struct dev_spool *s = open_spool(&o);
	uint64_t got[100];
	struct wire_dropped d[4];
	size_t n = read_all(s, 1, got, 100);
	cr_assert_eq(n, (size_t)appended); /* fatal: got[n - 1] below */
	cr_expect_eq(dev_spool_dropped(s, d, 4), 0);
	uint64_t more = put(s, 100, wall_ms());
	cr_expect_gt(more, got[n - 1]);
	dev_spool_close(s);
	free(seg);
	free(dir);
}

Test(dev_spool, bad_key_file_is_refused)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	struct dev_spool *s = open_spool(&o);
	dev_spool_close(s);
	char *key = h_strf("%s/key", dir);
	chmod(key, 0644);
	const char *why = NULL;
	cr_expect_eq(dev_spool_open(&o, &s, &why), DEV_SPOOL_EKEY);
	cr_expect_not_null(why);
	free(key);
	free(dir);
}

Test(dev_spool, new_spool_numbers_from_first_seq_and_owes_nothing_below)
{
	const uint64_t f = 824252801ULL; /* dev_spool_clock_seq on 2026-07-13 */
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.first_seq = f;
	struct dev_spool *s = open_spool(&o);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.chain_floor, f - 1, "a new spool owes nothing below its first seq");
	cr_expect_eq(dev_spool_acked_upto(s), f - 1);
	dev_spool_close(s);

	/* reopened (with a later clock) before anything was sent: numbering moves on to the
	 * clock, the floor stays */
	o.first_seq = f + 5000;
	s = open_spool(&o);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.chain_floor, f - 1);
	uint64_t a = put(s, 50, wall_ms());
	cr_expect_eq(a, f + 5000);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	struct dev_spool_rec r;
	uint8_t *env;
	size_t len;
	cr_assert_eq(dev_spool_next(s, &c, 1, &r, &env, &len), 0);
	cr_expect_eq(r.prev_seq, f - 1, "the chain starts at the floor");
	free(env);
	dev_spool_close(s);

	/* state lost: never below the clock, never below newest + the lost-state skip */
	char *state = h_strf("%s/state", dir);
	cr_assert_eq(unlink(state), 0);
	o.first_seq = f + 100000000ULL;
	s = open_spool(&o);
	uint64_t b = put(s, 50, wall_ms());
	cr_expect_eq(b, f + 100000000ULL);
	dev_spool_close(s);
	cr_assert_eq(unlink(state), 0);
	o.first_seq = 1;
	s = open_spool(&o);
	uint64_t c2;
	cr_assert_eq(dev_spool_take_seq(s, &c2), 0);
	cr_expect_gt(c2, b, "a clock gone back never reuses a seq");
	dev_spool_close(s);
	free(state);
	free(dir);

	/* state unreadable and no record on disk: nothing is owed, the chain starts afresh */
	dir = h_tmpdir("spool");
	o = opts(dir);
	o.first_seq = f;
	s = open_spool(&o);
	dev_spool_close(s);
	state = h_strf("%s/state", dir);
	FILE *sf = fopen(state, "w");
	cr_assert_not_null(sf);
	fputs("garbage", sf);
	fclose(sf);
	o.first_seq = f + 10;
	s = open_spool(&o);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.chain_floor, f + 9);
	cr_expect_eq(put(s, 50, wall_ms()), f + 10);
	dev_spool_close(s);
	free(state);
	free(dir);

	cr_expect_eq(dev_spool_clock_seq(0), 1, "a clock left at 1970 numbers from 1");
	cr_expect_eq(dev_spool_clock_seq(1500000000000LL), 1, "2017: clock unset");
	cr_expect_eq(dev_spool_clock_seq(1577836800000LL), 1, "2020-01-01");
	cr_expect_eq(dev_spool_clock_seq(1577836800999LL), 4);
	cr_expect_eq(dev_spool_clock_seq(1783900000000LL), f, "quarter-seconds since 2020");
	cr_expect_lt(dev_spool_clock_seq(2082758400000LL), 1u << 31, "2036: still 31 bits");
}

/* A spool directory restored from a backup (DEVICE.md says: do not) holds the reservation of
 * its earlier life, which numbered well past it afterwards (more than a reservation block):
 * opened with the clock of now, it numbers above everything that life handed out, as the
 * bridge already holds those seqs and would refuse them (seq_reused, too_old). A clock behind,
 * or unset (first_seq 1), never takes numbering back. */
Test(dev_spool, a_state_restored_from_a_backup_numbers_above_its_later_life)
{
	const uint64_t f = 824252801ULL;
	char *dir = h_tmpdir("spool"), *backup = h_tmpdir("spool-backup"), *out = NULL;
	struct dev_spool_opts o = opts(dir);
	o.first_seq = f;
	struct dev_spool *s = open_spool(&o);
	for (int i = 0; i < 3; i++)
		put(s, 50, wall_ms());
	dev_spool_close(s);
	char *save = h_strf("cp -a %s/. %s/", dir, backup);
	char *restore = h_strf("rm -rf %s && cp -a %s %s", dir, backup, dir);
	cr_assert_eq(h_sh(save, &out, 30), 0, "%s", out);
	free(out);

	/* the later life: more seqs than a reservation block (batches and polls) */
	s = open_spool(&o);
	uint64_t highest = 0;
	for (int i = 0; i < 1100; i++)
		if (i % 100 == 0)
			highest = put(s, 50, wall_ms());
		else
			cr_assert_eq(dev_spool_take_seq(s, &highest), 0);
	dev_spool_close(s);
	cr_assert_gt(highest, f + 1024);

	cr_assert_eq(h_sh(restore, &out, 30), 0, "%s", out);
	free(out);
	o.first_seq = highest + 1; /* the clock moved on at least as fast (4 seqs a second) */
	s = open_spool(&o);
	uint64_t next;
	cr_assert_eq(dev_spool_take_seq(s, &next), 0);
	cr_expect_gt(next, highest, "seq %llu reused: the later life handed out up to %llu",
	             (unsigned long long)next, (unsigned long long)highest);
	dev_spool_close(s);

	/* a clock behind what the spool numbered, or unset: numbering goes on, never back */
	o.first_seq = f;
	s = open_spool(&o);
	uint64_t after;
	cr_assert_eq(dev_spool_take_seq(s, &after), 0);
	cr_expect_gt(after, next);
	dev_spool_close(s);
	o.first_seq = 1;
	s = open_spool(&o);
	cr_assert_eq(dev_spool_take_seq(s, &next), 0);
	cr_expect_gt(next, after);
	dev_spool_close(s);
	free(restore);
	free(save);
	free(backup);
	free(dir);
}

/* The pending dropped ranges stay carriable in a batch when the list is full: a rot report
 * from the middle of the spool (unsent records around it) and the overflow drops of the oldest
 * segments (lower seqs, added after it) are not folded across each other into a link that runs
 * backwards or over unsent records. */
static int in_dropped(const struct wire_dropped *d, size_t n, uint64_t seq);

Test(dev_spool, folded_dropped_ranges_stay_carriable)
{
	char *dir = h_tmpdir("spool-fold");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 1024; /* two 400-byte records per segment */
	o.max_bytes = 402 * 1024;
	static uint64_t seqs[800], got[900];
	fill(&o, 800, 400, seqs); /* 400 segments, under the limit */
	char *seg = h_strf("%s/seg-%020llu.log", dir, (unsigned long long)seqs[760]);
	flip_byte(seg, REC_BYTES(0) - 16 + 50); /* inside the payload of seqs[760] */
	struct dev_spool *s = open_spool(&o);
	cr_assert_eq(read_all(s, 1, got, 900), 799);
	struct wire_dropped d[DEV_SPOOL_MAX_DROPPED];
	cr_assert_eq(dev_spool_dropped(s, d, DEV_SPOOL_MAX_DROPPED), 1);
	/* the outage: a batch a minute, as agent_flush_batch; each overflows the spool and adds
	 * a link (the one before is carried already), until the list is full and make_room folds
	 * on every one after: 100 of those */
	int full = 0;
	for (int i = 0; i < 2000 && full < 100; i++) {
		size_t n = dev_spool_dropped(s, d, WIRE_MAX_DROPPED);
		uint64_t seq = put(s, 400, wall_ms());
		dev_spool_dropped_reported(s, seq, d, n);
		n = dev_spool_dropped(s, d, DEV_SPOOL_MAX_DROPPED);
		full += n == DEV_SPOOL_MAX_DROPPED;
		if (!full && i % 8)
			continue;
		/* what is still in the spool to be sent: no range may claim it dropped */
		size_t live = read_all(s, 1, got, 900);
		cr_assert(live < 900);
		for (size_t j = 0; j < n; j++) {
			for (size_t k = 0; k < live; k++)
				if (got[k] > d[j].prev_seq && got[k] <= d[j].last_seq)
					cr_assert_fail("batch %d: range %llu..%llu claims unsent seq "
						       "%llu", i, (unsigned long long)d[j].prev_seq,
						       (unsigned long long)d[j].last_seq,
						       (unsigned long long)got[k]);
			cr_assert(d[j].last_seq > d[j].prev_seq && d[j].count >= 1 &&
			              d[j].count <= d[j].last_seq - d[j].prev_seq,
			          "batch %d: pending[%zu] %llu..%llu x%llu cannot be carried", i, j,
			          (unsigned long long)d[j].prev_seq,
			          (unsigned long long)d[j].last_seq, (unsigned long long)d[j].count);
		}
	}
	cr_expect_eq(full, 100, "the pending list was full for %d batches: the test does not reach "
		     "the fold", full);
	size_t nd = dev_spool_dropped(s, d, DEV_SPOOL_MAX_DROPPED);
	cr_expect(in_dropped(d, nd, seqs[760]) && read_all(s, 1, got, 900) > 0 &&
		  got[0] < seqs[760], "the rot link was not in the middle of what is unsent");
	dev_spool_close(s);
	free(seg);
	free(dir);
}

/* A full disk at start: the spool opens anyway, so the backlog can be sent and its acks free
 * space (before, the state write at open failed and the agent could not start at all); no
 * seq is handed out until a state write succeeds. */
Test(dev_spool, a_full_disk_does_not_keep_the_spool_from_opening)
{
	char *dir = h_tmpdir("spool-full-open");
	struct dev_spool_opts o = opts(dir);
	fill(&o, 5, 200, NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {0, 0}; /* no file may grow: a full disk */
		setrlimit(RLIMIT_FSIZE, &rl);
		struct dev_spool *s = NULL;
		if (dev_spool_open(&o, &s, NULL))
			_exit(3);
		struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
		struct dev_spool_rec r;
		uint8_t *e;
		size_t l;
		int n = 0;
		while (n < 100 && dev_spool_next(s, &c, 1, &r, &e, &l) == 0) {
			free(e);
			n++;
		}
		uint64_t seq;
		int took = dev_spool_take_seq(s, &seq);
		dev_spool_close(s);
		_exit(n != 5 ? 4 : took != DEV_SPOOL_ENOSPC ? 5 : 0);
	}
	int st = 0;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	          "child status %d (3: no open, 4: backlog unreadable, 5: a seq without state)",
	          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	struct dev_spool *s = open_spool(&o); /* space again: everything is still there */
	uint64_t got[16];
	cr_expect_eq(read_all(s, 1, got, 16), 5);
	dev_spool_close(s);
	free(dir);
}

/* A selective ack covers the whole newest segment; the next record is smaller, so it would fit
 * in the segment before; a power cut tears it. Selective ranges are not persisted, so at the
 * next open the records of the acknowledged segment, if it had been deleted, would look lost
 * under the torn tail: nothing may be reported dropped. */
Test(dev_spool, a_torn_append_after_a_selective_ack_of_the_newest_segment_is_no_loss)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 2 * REC_BYTES(300) + REC_BYTES(100); /* room for 300, 300, 100 */
	struct dev_spool *s = open_spool(&o);
	uint64_t a1 = put(s, 300, wall_ms()), a2 = put(s, 300, wall_ms());
	uint64_t b1 = put(s, 300, wall_ms()); /* starts the second segment */
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_assert_eq(st.segments, 2);
	uint64_t ranges[1][2] = {{b1, b1}};
	cr_assert_eq(dev_spool_ack(s, 0, ranges, 1), 0);
	cr_expect(dev_spool_is_acked(s, b1));
	cr_expect_not(dev_spool_is_acked(s, a2));
	dev_spool_stats(s, &st);
	cr_expect_eq(st.records, 2, "the acknowledged record is not counted");

	/* the state on disk while the next, smaller record is being written */
	uint64_t c1;
	cr_assert_eq(dev_spool_take_seq(s, &c1), 0);
	char *state = h_strf("%s/state", dir), *saved = h_strf("%s/state.saved", dir);
	char *cp = h_strf("cp %s %s", state, saved);
	cr_assert_eq(h_sh(cp, NULL, 10), 0);
	uint8_t body[100] = "record";
	cr_assert_eq(dev_spool_append(s, c1, b1, 2, wall_ms(), body, sizeof(body)), 0);
	dev_spool_close(s);
	cr_assert_eq(rename(saved, state), 0);
	char *seg = last_segment(dir);
	struct stat sb;
	cr_assert_eq(stat(seg, &sb), 0);
	cr_assert_eq(truncate(seg, sb.st_size - 50), 0, "tear the last record");

	s = open_spool(&o);
	expect_no_drop(s);
	uint64_t got[8];
	size_t n = read_all(s, 1, got, 8);
	cr_expect(n >= 2 && got[0] == a1 && got[1] == a2, "%zu records", n);
	cr_expect_eq(dev_spool_last_durable(s), b1, "the chain goes on from the acknowledged record");
	dev_spool_close(s);
	free(seg);
	free(cp);
	free(state);
	free(saved);
	free(dir);
}

/* ... and it goes as soon as a newer segment holds a durable record, with or without a further
 * ack: kept longer, it would count against spool_max_bytes ahead of unsent records. */
Test(dev_spool, a_segment_acknowledged_by_ranges_goes_once_a_newer_one_is_written)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts_per_record(dir);
	struct dev_spool *s = open_spool(&o);
	uint64_t a = put(s, 300, wall_ms()), b = put(s, 300, wall_ms());
	uint64_t ranges[1][2] = {{b, b}};
	cr_assert_eq(dev_spool_ack(s, 0, ranges, 1), 0);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.segments, 2, "the newest stays");
	cr_expect_eq(st.bytes, 2 * REC_BYTES(300));
	uint64_t c = put(s, 300, wall_ms());
	dev_spool_stats(s, &st);
	cr_expect_eq(st.segments, 2, "a and c");
	cr_expect_eq(st.bytes, 2 * REC_BYTES(300));
	cr_expect_eq(st.records, 2);
	dev_spool_close(s);
	s = open_spool(&o);
	uint64_t got[4];
	cr_assert_eq(read_all(s, 1, got, 4), 2, "b is not sent again");
	cr_expect_eq(got[0], a);
	cr_expect_eq(got[1], c);
	dev_spool_close(s);
	free(dir);
}

/* An ack beyond anything the spool handed out was never for it: a device re-installed with an
 * empty state directory and its clock before 2020 numbers from 1 again, while the bridge
 * acknowledges its frontier for the id, far higher, even as it refuses the batches as too_old.
 * It is refused whole: nothing is acknowledged, no segment deleted. Capped to the last durable
 * record, as it was, it deleted the whole backlog unsent. */
Test(dev_spool, an_ack_beyond_anything_handed_out_is_refused)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir); /* first_seq 0: numbers from 1, a clock before 2020 */
	o.segment_bytes = 4096;
	struct dev_spool *s = open_spool(&o);
	uint64_t seqs[40];
	for (int i = 0; i < 40; i++)
		seqs[i] = put(s, 200, wall_ms());
	char names[64][600];
	size_t nseg = segments(dir, names);
	cr_assert_gt(nseg, 1);
	uint64_t next = dev_spool_next_seq(s), frontier = 824252801ULL;
	cr_assert_eq(next, seqs[39] + 1);

	cr_expect_eq(dev_spool_ack(s, frontier, NULL, 0), DEV_SPOOL_EFUTURE);
	cr_expect_eq(dev_spool_ack(s, next, NULL, 0), DEV_SPOOL_EFUTURE,
		     "next was never handed out");
	/* a range reaching beyond takes the rest of its ack with it */
	uint64_t ranges[2][2] = {{seqs[20], seqs[25]}, {seqs[30], frontier}};
	cr_expect_eq(dev_spool_ack(s, seqs[10], ranges, 2), DEV_SPOOL_EFUTURE);
	cr_expect_eq(dev_spool_acked_upto(s), 0);
	cr_expect_not(dev_spool_is_acked(s, seqs[0]));
	cr_expect_not(dev_spool_is_acked(s, seqs[22]));
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.records, 40);
	cr_expect_eq(st.segments, nseg);
	cr_expect_eq(segments(dir, names), nseg, "segment files were deleted");
	uint64_t got[64];
	cr_expect_eq(read_all(s, 1, got, 64), 40);
	dev_spool_close(s);

	s = open_spool(&o);
	cr_expect_eq(dev_spool_acked_upto(s), 0, "the refused ack reached the state file");
	cr_expect_eq(read_all(s, 1, got, 64), 40);
	/* the bridge's own acks still work */
	cr_expect_eq(dev_spool_ack(s, seqs[39], NULL, 0), 0);
	dev_spool_stats(s, &st);
	cr_expect_eq(st.records, 0);
	dev_spool_close(s);
	free(dir);
}

/* Files that only look like segments (the seq not written in 20 digits, signed, too large) are
 * not the spool's: it opens, reads and appends as usual and leaves them alone, also one that
 * looks like a rewrite's temporary copy. Before, seg-7.log was taken for segment 7, whose file
 * (seg-00000000000000000007.log) does not exist, and the spool refused to open. */
Test(dev_spool, files_named_almost_like_segments_are_left_alone)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	uint64_t seqs[5];
	fill(&o, 5, 100, seqs);
	const char *strays[] = {"seg-7.log", "seg-+7.log", "seg--7.log", " seg-7.log",
				"seg-99999999999999999999.log", "seg- 0000000000000000007.log",
				"seg-7.log.tmp", "seg-00000000000000000007.log~"};
	size_t nstrays = sizeof(strays) / sizeof(strays[0]);
	for (size_t i = 0; i < nstrays; i++) {
		char *p = h_strf("%s/%s", dir, strays[i]);
		FILE *f = fopen(p, "w");
		cr_assert(f && fputs("not a segment", f) >= 0 && fclose(f) == 0, "%s", p);
		free(p);
	}
	struct dev_spool *s = open_spool(&o);
	uint64_t got[8];
	cr_expect_eq(read_all(s, 1, got, 8), 5);
	cr_expect_eq(got[4], seqs[4]);
	uint64_t more = put(s, 100, wall_ms());
	dev_spool_close(s);
	s = open_spool(&o);
	cr_expect_eq(read_all(s, 1, got, 8), 6);
	cr_expect_eq(got[5], more);
	dev_spool_close(s);
	for (size_t i = 0; i < nstrays; i++) {
		char *p = h_strf("%s/%s", dir, strays[i]);
		size_t len = 0;
		char *data = h_read_file(p, &len);
		cr_expect(data && len == 13 && !memcmp(data, "not a segment", 13), "%s was changed",
			  strays[i]);
		free(data);
		free(p);
	}
	free(dir);
}

/* A state file that exists but cannot be read (tests run as root, so modes stop nothing: here
 * it is a directory, EISDIR, then a symlink to one) says nothing about what it holds: the open
 * fails with DEV_SPOOL_EIO and leaves it as it is. Before, it was taken for lost, like a
 * malformed one: numbering skipped 2^20 ahead, the ack point went back to 0, and a new state
 * file was renamed over it (over the symlink). Once it is readable again, nothing is lost. */
Test(dev_spool, a_state_file_that_cannot_be_read_fails_the_open_and_is_left_alone)
{
	char *dir = h_tmpdir("spool"), *elsewhere = h_tmpdir("spool-elsewhere");
	struct dev_spool_opts o = opts(dir);
	struct dev_spool *s = open_spool(&o);
	uint64_t seqs[5];
	for (int i = 0; i < 5; i++)
		seqs[i] = put(s, 100, wall_ms());
	cr_assert_eq(dev_spool_ack(s, seqs[1], NULL, 0), 0);
	dev_spool_close(s);
	char *state = h_strf("%s/state", dir), *saved = h_strf("%s/state", elsewhere);
	char *inside = h_strf("%s/inside", state), *tmp = h_strf("%s/state.tmp", dir);
	cr_assert_eq(rename(state, saved), 0);

	cr_assert_eq(mkdir(state, 0700), 0);
	FILE *f = fopen(inside, "w");
	cr_assert(f && fputs("kept", f) >= 0 && fclose(f) == 0);
	const char *why = NULL;
	s = NULL;
	cr_expect_eq(dev_spool_open(&o, &s, &why), DEV_SPOOL_EIO);
	cr_expect_null(s);
	cr_expect(why && strstr(why, "cannot read the state file"), "why: %s", why ? why : "");
	struct stat st;
	cr_expect(stat(state, &st) == 0 && S_ISDIR(st.st_mode), "the directory was replaced");
	cr_expect_eq(h_file_size(inside), 4, "the directory's content was touched");
	cr_expect_neq(access(tmp, F_OK), 0, "state.tmp left behind");
	cr_assert_eq(unlink(inside), 0);
	cr_assert_eq(rmdir(state), 0);

	cr_assert_eq(symlink(elsewhere, state), 0);
	cr_expect_eq(dev_spool_open(&o, &s, &why), DEV_SPOOL_EIO);
	cr_expect(lstat(state, &st) == 0 && S_ISLNK(st.st_mode), "a new state was written over it");
	unlink(state);

	cr_assert_eq(rename(saved, state), 0);
	s = open_spool(&o);
	cr_expect_eq(dev_spool_acked_upto(s), seqs[1], "the ack point went back");
	uint64_t got[8], next;
	cr_expect_eq(read_all(s, 1, got, 8), 3);
	cr_assert_eq(dev_spool_take_seq(s, &next), 0);
	cr_expect_eq(next, seqs[4] + 1, "numbering skipped to %llu", (unsigned long long)next);
	dev_spool_close(s);
	free(tmp);
	free(inside);
	free(saved);
	free(state);
	free(elsewhere);
	free(dir);
}

/* The open of a spool whose key is gone: refused with DEV_SPOOL_ENOKEY, no key made, nothing
 * else touched. */
static void expect_no_key_refused(const struct dev_spool_opts *o)
{
	struct dev_spool *s = NULL;
	const char *why = NULL;
	char names[64][600], after[64][600];
	size_t n = segments(o->dir, names);
	off_t sizes[64];
	for (size_t i = 0; i < n; i++)
		sizes[i] = (off_t)h_file_size(names[i]);
	cr_expect_eq(dev_spool_open(o, &s, &why), DEV_SPOOL_ENOKEY);
	cr_expect_null(s);
	cr_expect(why && strstr(why, "restore the key file"), "why: %s", why ? why : "");
	char *key = h_strf("%s/key", o->dir);
	cr_expect_neq(access(key, F_OK), 0, "a new key was made");
	free(key);
	cr_assert_eq(segments(o->dir, after), n);
	for (size_t i = 0; i < n; i++)
		cr_expect_eq((off_t)h_file_size(after[i]), sizes[i], "%s was changed", after[i]);
}

/* A key file gone (deleted, not restored with a backup) while the spool holds records or
 * state cannot be made again: before, a new key was, every record then failed its tag, was
 * reported dropped as bit rot and cut out of its segment. Now the open is refused; with the
 * key back, every record is there. A new spool still gets its key (every other test). */
Test(dev_spool, a_missing_key_is_not_replaced_while_the_spool_holds_data)
{
	char *dir = h_tmpdir("spool"), *elsewhere = h_tmpdir("spool-key");
	struct dev_spool_opts o = opts(dir);
	uint64_t seqs[5];
	fill(&o, 5, 100, seqs);
	char *key = h_strf("%s/key", dir), *saved = h_strf("%s/key", elsewhere);
	char *state = h_strf("%s/state", dir), *saved_state = h_strf("%s/state", elsewhere);
	cr_assert_eq(rename(key, saved), 0);
	expect_no_key_refused(&o);
	/* the segments alone (the state file lost too) */
	cr_assert_eq(rename(state, saved_state), 0);
	expect_no_key_refused(&o);
	cr_assert_eq(rename(saved_state, state), 0);
	cr_assert_eq(rename(saved, key), 0);
	struct dev_spool *s = open_spool(&o);
	uint64_t got[8];
	cr_expect_eq(read_all(s, 1, got, 8), 5);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, 0);
	/* the state file alone: everything was acknowledged and its segments deleted */
	cr_assert_eq(dev_spool_ack(s, seqs[4], NULL, 0), 0);
	dev_spool_close(s);
	char names[64][600];
	cr_assert_eq(segments(dir, names), 0);
	cr_assert_eq(rename(key, saved), 0);
	expect_no_key_refused(&o);
	cr_assert_eq(rename(saved, key), 0);
	s = open_spool(&o);
	cr_expect_eq(dev_spool_acked_upto(s), seqs[4]);
	dev_spool_close(s);
	free(saved_state);
	free(state);
	free(saved);
	free(key);
	free(elsewhere);
	free(dir);
}

/* Two opens of one spool would hand out the same seqs and delete each other's segments: while
 * it is open, another open fails with DEV_SPOOL_EBUSY and changes nothing, in this process or
 * another; after the close, or once the process holding it is killed (no stale lock), the
 * spool opens again. */
Test(dev_spool, a_spool_in_use_cannot_be_opened_again)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	struct dev_spool *s = open_spool(&o), *s2 = NULL;
	uint64_t a = put(s, 100, wall_ms());
	const char *why = NULL;
	cr_expect_eq(dev_spool_open(&o, &s2, &why), DEV_SPOOL_EBUSY);
	cr_expect_null(s2);
	cr_expect_not_null(why);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct dev_spool *c = NULL;
		_exit(dev_spool_open(&o, &c, NULL) == DEV_SPOOL_EBUSY ? 0 : 1);
	}
	int st = 0;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "another process opened the spool too");
	uint64_t b = put(s, 100, wall_ms()); /* the holder carries on */
	uint64_t got[4];
	cr_expect_eq(read_all(s, 1, got, 4), 2);
	dev_spool_close(s);

	/* a holder killed while it has the spool open */
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct dev_spool *c = NULL;
		char ok = dev_spool_open(&o, &c, NULL) == 0 ? 'y' : 'n';
		if (write(fds[1], &ok, 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	char ok = 0;
	cr_assert_eq(read(fds[0], &ok, 1), 1);
	cr_assert_eq(ok, 'y', "the child could not open the closed spool");
	cr_expect_eq(dev_spool_open(&o, &s2, NULL), DEV_SPOOL_EBUSY);
	kill(pid, SIGKILL);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	close(fds[0]);
	close(fds[1]);
	s = open_spool(&o);
	cr_expect_eq(read_all(s, 1, got, 4), 2);
	cr_expect_eq(got[0], a);
	cr_expect_eq(got[1], b);
	dev_spool_close(s);
	free(dir);
}

/* What dev_spool_count should say: the records dev_spool_next returns in [first, last]. */
static uint64_t count_by_reading(const uint64_t *seqs, size_t n, uint64_t first, uint64_t last)
{
	uint64_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += seqs[i] >= first && seqs[i] <= last;
	return k;
}

static void expect_counts(struct dev_spool *s, const uint64_t *edges, size_t nedges)
{
	uint64_t got[200];
	size_t n = read_all(s, 0, got, 200);
	for (size_t i = 0; i < nedges; i++)
		for (size_t j = 0; j < nedges; j++) {
			uint64_t first = edges[i], last = edges[j], k = 12345;
			if (first > last)
				continue;
			cr_assert_eq(dev_spool_count(s, first, last, &k), 0);
			uint64_t want = count_by_reading(got, n, first, last);
			cr_expect_eq(k, want, "%llu..%llu: %llu counted, %llu read",
				     (unsigned long long)first, (unsigned long long)last,
				     (unsigned long long)k, (unsigned long long)want);
		}
}

/* The resend task counts what a range holds without reading every record (a spool of a million
 * records would stall the agent): segments wholly inside come from the index, and only those
 * where the range begins or ends are read, header by header. Acknowledged records still on
 * disk count, as a resend sends them. */
Test(dev_spool, count_reads_only_where_a_range_begins_or_ends)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	o.segment_bytes = 4096;
	struct dev_spool *s = open_spool(&o);
	uint64_t seqs[120];
	for (int i = 0; i < 120; i++)
		seqs[i] = put(s, 200, wall_ms());
	char names[64][600];
	size_t nseg = segments(dir, names);
	cr_assert_geq(nseg, 6, "%zu segments", nseg);
	uint64_t edges[] = {0,	       1,	     seqs[0],	  seqs[1],	 seqs[13],
			    seqs[14], seqs[15],     seqs[40],	  seqs[60],	 seqs[118],
			    seqs[119], seqs[119] + 1, seqs[119] + 9, UINT64_MAX};
	size_t nedges = sizeof(edges) / sizeof(edges[0]);
	expect_counts(s, edges, nedges);

	/* acknowledged: whole segments go, the rest still counts */
	uint64_t ranges[1][2] = {{seqs[50], seqs[70]}};
	cr_assert_eq(dev_spool_ack(s, seqs[29], ranges, 1), 0);
	expect_counts(s, edges, nedges);

	/* a middle segment that cannot be read: a range that holds it whole is counted from the
	 * index; one that begins in it needs its headers */
	nseg = segments(dir, names);
	char *away = h_strf("%s.away", names[nseg / 2]);
	uint64_t all = 0, k = 0;
	cr_assert_eq(dev_spool_count(s, 0, UINT64_MAX, &all), 0);
	cr_assert_eq(rename(names[nseg / 2], away), 0);
	cr_expect_eq(dev_spool_count(s, 0, UINT64_MAX, &k), 0, "a segment wholly inside was read");
	cr_expect_eq(k, all);
	uint64_t first_in_it = 0;
	const char *base = strrchr(names[nseg / 2], '/');
	cr_assert_eq(sscanf(base, "/seg-%" SCNu64 ".log", &first_in_it), 1);
	k = 77;
	cr_expect_eq(dev_spool_count(s, first_in_it + 1, UINT64_MAX, &k), DEV_SPOOL_EIO);
	cr_expect_eq(k, 77, "*n set on failure");
	cr_assert_eq(rename(away, names[nseg / 2]), 0);
	free(away);
	dev_spool_close(s);
	free(dir);
}

/* Segments the bridge acknowledged by a range go at once, and ranges are not kept across a
 * restart: below a recorded drop, the stretch such a segment leaves is no loss. Only a drop the
 * state could not record (its marker) makes the open infer one there. */
Test(dev_spool, a_range_acked_segment_below_a_recorded_drop_is_not_reported_after_a_restart)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts_per_record(dir);
	o.max_bytes = 3 * REC_BYTES(300);
	struct dev_spool *s = open_spool(&o);
	uint64_t r1 = put(s, 300, wall_ms()), r2 = put(s, 300, wall_ms()), r3 = put(s, 300, wall_ms());
	(void)r3;
	/* the bridge stored r2 only: frontier below r1, range [r2,r2] */
	uint64_t rg[1][2] = {{r2, r2}};
	cr_assert_eq(dev_spool_ack(s, dev_spool_acked_upto(s), (const uint64_t(*)[2])rg, 1), 0);
	put(s, 300, wall_ms());
	put(s, 300, wall_ms()); /* the size limit drops r1 */
	struct wire_dropped d[8];
	size_t n = dev_spool_dropped(s, d, 8);
	cr_assert_eq(n, 1, "r1 dropped");
	dev_spool_close(s);
	s = open_spool(&o); /* a clean restart */
	n = dev_spool_dropped(s, d, 8);
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(n, 1, "only r1 (%llu) was dropped; r2 (%llu) is stored at the bridge",
	             (unsigned long long)r1, (unsigned long long)r2);
	cr_expect_eq(st.dropped_total, 1);
	dev_spool_close(s);
	free(dir);
}

/* Segment file `path` becomes a directory of the same name: opening or reading it then fails
 * with EISDIR, as a bad block of an SD card fails them with EIO. */
static void make_unreadable(const char *path)
{
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(mkdir(path, 0700), 0);
}

/* The spool's last read error was err, on path, and its records were reported dropped. */
static void expect_read_error_is(const struct dev_spool *s, const char *path, int err)
{
	struct dev_spool_read_error re;
	dev_spool_read_error(s, &re);
	cr_expect_geq(re.count, 1);
	cr_expect_eq(re.err, err);
	cr_expect_eq(re.dropped, 1);
	cr_expect(re.path && !strcmp(re.path, path), "read error names %s, not %s", path,
		  re.path ? re.path : "(none)");
}

static void expect_read_error(const struct dev_spool *s, const char *path)
{
	expect_read_error_is(s, path, EISDIR);
}

/* A segment that cannot be read at the open is damage, as bit rot is: the spool opens, what
 * it held is reported as dropped, the records around it are delivered, and appends go on. */
Test(dev_spool, an_unreadable_segment_at_the_open_is_reported_dropped)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15], got[16];
	char names[64][600];
	struct wire_dropped d[4];
	new_three(&dir, &o, seqs, names);
	make_unreadable(names[1]);
	struct dev_spool *s = open_spool(&o);
	expect_read_error(s, names[1]);
	cr_assert_eq(read_all(s, 1, got, 16), 10);
	cr_expect_eq(got[4], seqs[4]);
	cr_expect_eq(got[5], seqs[10]);
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, seqs[4]);
	cr_expect_eq(d[0].last_seq, seqs[9]);
	cr_expect_eq(put(s, 300, wall_ms()), seqs[14] + 1);
	dev_spool_close(s);
	rmdir(names[1]);
	free(dir);
}

/* ... the newest one too: what it held up to the state's reservation is reported, and the
 * chain resumes above it. */
Test(dev_spool, an_unreadable_newest_segment_at_the_open_is_reported_dropped)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15], got[16];
	char names[64][600];
	struct wire_dropped d[4];
	new_three(&dir, &o, seqs, names);
	make_unreadable(names[2]);
	struct dev_spool *s = open_spool(&o);
	expect_read_error(s, names[2]);
	cr_assert_eq(read_all(s, 1, got, 16), 10);
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, seqs[9]);
	cr_expect_geq(d[0].last_seq, seqs[14]);
	uint64_t seq = put(s, 300, wall_ms());
	cr_expect_gt(seq, d[0].last_seq);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(seqs[9] + 1);
	cr_expect_eq(read_on(s, &c, 1, 0, got, 16), 1);
	cr_expect_eq(got[0], seq);
	dev_spool_close(s);
	rmdir(names[2]);
	free(dir);
}

/* A segment that becomes unreadable while the spool is open does not stop the reader on it:
 * it is passed over once (DEV_SPOOL_ECORRUPT), its records reported dropped, and the records
 * after it are delivered. */
Test(dev_spool, an_unreadable_segment_at_run_time_is_passed_over_and_reported)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15], got[16];
	char names[64][600];
	struct wire_dropped d[4];
	struct dev_spool *s = fresh_three(&dir, &o, seqs, names);
	make_unreadable(names[1]);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	cr_assert_eq(read_on(s, &c, 1, 1, got, 16), 10);
	cr_expect_eq(got[5], seqs[10]);
	expect_read_error(s, names[1]);
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, seqs[4]);
	cr_expect_eq(d[0].last_seq, seqs[9]);
	dev_spool_close(s);
	rmdir(names[1]);
	free(dir);
}

/* A pread of the file armed by eio_arm (the inode it had then: a rewrite's new file is
 * readable; the file is held open while armed, so that its inode is not freed and taken by a
 * later file, a rewrite's .tmp, which would inherit its failures) that overlaps bytes [eio_from, eio_to) fails with EIO, as on a bad block of an SD
 * card, eio_fails times (-1: always); eio_hits counts the preads that overlapped the range (the
 * spool's preads are wrapped at link time: tests/CMakeLists.txt). */
static int eio_armed;
static int eio_pin = -1; /* the armed file, held open */
static dev_t eio_dev;
static ino_t eio_ino;
static off_t eio_from, eio_to;
static int eio_fails;
static unsigned eio_hits;
static int eio_stripe; /* not 0: only 4 KiB blocks b with b % eio_stripe == 1 fail */
ssize_t __real_pread(int fd, void *buf, size_t n, off_t off);
ssize_t __wrap_pread(int fd, void *buf, size_t n, off_t off);
ssize_t __wrap_pread(int fd, void *buf, size_t n, off_t off)
{
	struct stat st;
	int striped_hit = 0;
	for (off_t b = off / 4096; eio_stripe && b <= (off + (off_t)n - 1) / 4096; b++)
		striped_hit |= b % eio_stripe == 1;
	if (eio_armed && !fstat(fd, &st) && st.st_dev == eio_dev && st.st_ino == eio_ino &&
	    off + (off_t)n > eio_from && off < eio_to && (!eio_stripe || striped_hit)) {
		eio_hits++;
		if (eio_fails) {
			if (eio_fails > 0)
				eio_fails--;
			errno = EIO;
			return -1;
		}
	}
	return __real_pread(fd, buf, n, off);
}

/* Bytes [from, to) of the file at path fail `fails` times (-1: always; to 0: up to its end). */
static void eio_arm(const char *path, off_t from, off_t to, int fails)
{
	struct stat st;
	if (eio_pin >= 0)
		close(eio_pin);
	eio_pin = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(eio_pin, 0, "%s", path);
	cr_assert_eq(fstat(eio_pin, &st), 0, "%s", path);
	eio_dev = st.st_dev;
	eio_ino = st.st_ino;
	eio_from = from;
	eio_to = to ? to : INT64_MAX;
	eio_fails = fails;
	eio_hits = 0;
	eio_armed = 1;
}

static void eio_disarm(void)
{
	eio_armed = 0;
	if (eio_pin >= 0)
		close(eio_pin);
	eio_pin = -1;
}

static void expect_eio_named(const struct dev_spool *s, const char *path)
{
	expect_read_error_is(s, path, EIO);
}

/* A bad block in the middle of a segment at the open: the records before it are kept, the
 * rest of the segment is reported dropped, the segment is cut there once that is on disk. */
Test(dev_spool, a_read_error_at_the_open_keeps_what_precedes_it)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15], got[16];
	char names[64][600];
	struct wire_dropped d[4];
	new_three(&dir, &o, seqs, names);
	eio_arm(names[1], 2 * REC_BYTES(300), 0, -1);
	struct dev_spool *s = open_spool(&o);
	eio_disarm();
	expect_eio_named(s, names[1]);
	cr_assert_eq(read_all(s, 1, got, 16), 12);
	cr_expect_eq(got[6], seqs[6]);
	cr_expect_eq(got[7], seqs[10]);
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, seqs[6]);
	cr_expect_eq(d[0].last_seq, seqs[9]);
	dev_spool_close(s);
	s = reopen_expecting(&o, 12, 1, 1); /* cut: nothing new */
	dev_spool_close(s);
	free(dir);
}

/* A read error in the newest segment at the open: the records before it are kept, and the next
 * append goes to a new segment, not beside the bad block (where its write would fail again). */
Test(dev_spool, a_read_error_in_the_newest_at_the_open_seals_it)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15], got[20];
	char names[64][600];
	new_three(&dir, &o, seqs, names);
	eio_arm(names[2], 2 * REC_BYTES(300), 0, -1);
	struct dev_spool *s = open_spool(&o);
	expect_eio_named(s, names[2]);
	uint64_t seq = put(s, 300, wall_ms());
	char *last = last_segment(dir);
	cr_assert_not_null(last);
	cr_expect_str_neq(last, names[2], "appended beside the bad block");
	eio_disarm();
	cr_assert_eq(read_all(s, 1, got, 20), 13); /* 10, the 2 before the error, the new one */
	cr_expect_eq(got[11], seqs[11]);
	cr_expect_eq(got[12], seq);
	free(last);
	dev_spool_close(s);
	free(dir);
}

/* A bad block met while the spool is open, in an older segment and in the newest, up to their
 * ends: the records before it are delivered and kept, what it holds is reported dropped, once,
 * and what follows is delivered (the newest is rewritten without the bad block: records
 * appended after the damage are read). */
Test(dev_spool, a_read_error_at_run_time_does_not_stall_the_reader)
{
	char *dir;
	struct dev_spool_opts o;
	uint64_t seqs[15], got[16];
	char names[64][600];
	struct wire_dropped d[4];
	struct dev_spool *s = fresh_three(&dir, &o, seqs, names);
	eio_arm(names[1], 2 * REC_BYTES(300), 0, -1);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	cr_assert_eq(read_on(s, &c, 1, 1, got, 16), 12);
	cr_expect_eq(got[6], seqs[6]);
	cr_expect_eq(got[7], seqs[10]);
	expect_eio_named(s, names[1]);
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, seqs[6]);
	cr_expect_eq(d[0].last_seq, seqs[9]);
	cr_expect_eq(d[0].count, 1); /* hidden: how many is unknowable */

	eio_arm(names[2], 0, 0, -1);
	c = DEV_SPOOL_CURSOR_AT(seqs[10]);
	cr_assert_eq(read_on(s, &c, 1, 1, got, 16), 0);
	expect_eio_named(s, names[2]);
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1); /* the range before grows */
	cr_expect_eq(d[0].prev_seq, seqs[6]);
	cr_expect_eq(d[0].last_seq, seqs[14]);
	uint64_t seq = put(s, 300, wall_ms());
	cr_assert_eq(read_on(s, &c, 1, 0, got, 16), 1);
	cr_expect_eq(got[0], seq);
	eio_disarm();
	dev_spool_close(s);
	free(dir);
}

/* A cursor that starts inside a segment which cannot be read reports all of the segment that
 * is not acknowledged, below the cursor too (that reader never read it, and no other will);
 * and records appended after a read error in the newest segment, which has room left, are
 * readable (the segment was rewritten without the bad block). */
Test(dev_spool, a_read_error_is_reported_for_the_whole_segment_and_the_newest_takes_no_more_appends)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	uint64_t got[16], seqs[6];
	struct wire_dropped d[4];
	struct dev_spool *s = open_spool(&o);
	for (int i = 0; i < 6; i++)
		seqs[i] = put(s, 300, wall_ms());
	char *seg = last_segment(dir);
	eio_arm(seg, 0, 0, -1);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(seqs[3]);
	cr_assert_eq(read_on(s, &c, 1, 1, got, 16), 0);
	expect_eio_named(s, seg);
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_lt(d[0].prev_seq, seqs[0]);
	cr_expect_eq(d[0].last_seq, seqs[5]);
	uint64_t seq = put(s, 300, wall_ms());
	cr_assert_eq(read_on(s, &c, 1, 0, got, 16), 1);
	cr_expect_eq(got[0], seq);
	eio_disarm();
	dev_spool_close(s);
	free(seg);
	free(dir);
}

/* 1 if seq lies in one of the n dropped links d (prev_seq, last_seq]. */
static int in_dropped(const struct wire_dropped *d, size_t n, uint64_t seq)
{
	for (size_t k = 0; k < n; k++)
		if (seq > d[k].prev_seq && seq <= d[k].last_seq)
			return 1;
	return 0;
}

/* Links that left the pending list at an ack (settled: reported to a bridge that acknowledged
 * it), for expect_each_once; a link forgotten to make room is not among them. One test, one
 * spool directory: a test that makes several calls settled_forget() between them. */
static struct wire_dropped settled[1024];
static size_t nsettled;

static void settled_forget(void)
{
	nsettled = 0;
}

int __real_dev_spool_ack(struct dev_spool *s, uint64_t upto, const uint64_t (*ranges)[2],
			 size_t nranges);
int __wrap_dev_spool_ack(struct dev_spool *s, uint64_t upto, const uint64_t (*ranges)[2],
			 size_t nranges);
int __wrap_dev_spool_ack(struct dev_spool *s, uint64_t upto, const uint64_t (*ranges)[2],
			 size_t nranges)
{
	struct wire_dropped before[DEV_SPOOL_MAX_DROPPED], after[DEV_SPOOL_MAX_DROPPED];
	size_t nb = dev_spool_dropped(s, before, DEV_SPOOL_MAX_DROPPED);
	int rc = __real_dev_spool_ack(s, upto, ranges, nranges);
	size_t na = dev_spool_dropped(s, after, DEV_SPOOL_MAX_DROPPED);
	for (size_t i = 0; i < nb; i++) {
		int kept = 0;
		for (size_t k = 0; k < na; k++)
			kept |= before[i].prev_seq == after[k].prev_seq &&
				before[i].last_seq == after[k].last_seq;
		if (!kept && nsettled < sizeof(settled) / sizeof(settled[0]))
			settled[nsettled++] = before[i];
	}
	return rc;
}

/* PROTOCOL §3: each of the n records seqs is either delivered (in got) or reported dropped (in
 * the spool's pending links, or in one an ack settled), never both, never neither. */
static void expect_each_once(struct dev_spool *s, const uint64_t *seqs, size_t n,
			     const uint64_t *got, size_t ngot, const char *when)
{
	struct wire_dropped d[DEV_SPOOL_MAX_DROPPED];
	size_t nd = dev_spool_dropped(s, d, DEV_SPOOL_MAX_DROPPED);
	for (size_t i = 0; i < n; i++) {
		int delivered = 0;
		for (size_t k = 0; k < ngot; k++)
			delivered |= got[k] == seqs[i];
		int dropped = in_dropped(d, nd, seqs[i]) || in_dropped(settled, nsettled, seqs[i]);
		cr_expect(!(delivered && dropped), "%s: record %zu (seq %" PRIu64 ") delivered and "
			  "reported dropped", when, i, seqs[i]);
		cr_expect(delivered || dropped, "%s: record %zu (seq %" PRIu64 ") neither "
			  "delivered nor reported dropped", when, i, seqs[i]);
	}
}

/* rename(2) fails with rename_errno while it is not 0: every rename (a read-only remount), or
 * with rename_segs_only only a segment rewrite's (a power cut right before it); with
 * rename_clears the read error armed clears as it fails. With state_rename_clears it clears as
 * the state file is renamed into place (that rename done). */
static int rename_errno, rename_segs_only, rename_clears, state_rename_clears;
int __real_rename(const char *from, const char *to);
int __wrap_rename(const char *from, const char *to);
int __wrap_rename(const char *from, const char *to)
{
	size_t n = strlen(to);
	if (rename_errno && (!rename_segs_only || (n > 4 && !strcmp(to + n - 4, ".log")))) {
		if (rename_clears)
			eio_disarm();
		errno = rename_errno;
		return -1;
	}
	if (state_rename_clears && n > 6 && !strcmp(to + n - 6, "/state"))
		eio_disarm();
	return __real_rename(from, to);
}

/* Read from c on while dev_spool_next returns records or DEV_SPOOL_ECORRUPT; its last return. */
static int read_until_error(struct dev_spool *s, struct dev_spool_cursor *c, uint64_t *got,
			    size_t *n, size_t cap)
{
	for (;;) {
		struct dev_spool_rec r;
		uint8_t *env = NULL;
		size_t len;
		int rc = dev_spool_next(s, c, 1, &r, &env, &len);
		if (rc == DEV_SPOOL_ECORRUPT)
			continue;
		if (rc)
			return rc;
		free(env);
		if (*n < cap)
			got[(*n)++] = r.seq;
	}
}

/* A read-error test's spool: records filled into a fresh directory (their seqs, nrec of them),
 * the newest segment seg, room for cap seqs read back (got), and, once made, the rewrite's
 * blocked temporary file (bad_no_rewrite) and a power cut's copy (bad_cut, its spool c).
 * bad_done disarms the failing-read wrap, closes what is open and frees it all. */
struct bad_spool {
	char *dir, *seg, *tmp;
	struct dev_spool_opts o, oc;
	struct dev_spool *s, *c;
	uint64_t *seqs, *got;
	size_t nrec, cap;
};

/* n records of size bytes, in segments of segment_bytes (0: opts'), the spool not open */
static struct bad_spool bad_fill(size_t n, size_t size, size_t segment_bytes)
{
	struct bad_spool b = {.dir = h_tmpdir("spool"), .nrec = n, .cap = n + 100};
	b.o = opts(b.dir);
	if (segment_bytes)
		b.o.segment_bytes = segment_bytes;
	b.seqs = calloc(b.nrec, sizeof(*b.seqs));
	b.got = calloc(b.cap, sizeof(*b.got));
	cr_assert(b.seqs && b.got);
	fill(&b.o, (int)n, size, b.seqs);
	b.seg = last_segment(b.dir);
	return b;
}

static void bad_open(struct bad_spool *b)
{
	b->s = open_spool(&b->o);
}

/* Open b's spool with the bytes [from, to) of its newest segment failing `fails` times
 * (eio_arm) from before the open if at_open, else from right after it. */
static void bad_open_armed(struct bad_spool *b, int at_open, off_t from, off_t to, int fails)
{
	if (at_open)
		eio_arm(b->seg, from, to, fails);
	bad_open(b);
	if (!at_open)
		eio_arm(b->seg, from, to, fails);
}

/* Forty records of 300 bytes in one segment, opened with a bad 4 KiB block in their middle,
 * [BAD_FROM, BAD_TO), failing `fails` times (bad_open_armed) */
#define BAD_FROM 4096
#define BAD_TO 8192
static struct bad_spool bad_forty(int at_open, int fails)
{
	struct bad_spool b = bad_fill(40, 300, 0);
	bad_open_armed(&b, at_open, BAD_FROM, BAD_TO, fails);
	return b;
}

static void bad_reopen(struct bad_spool *b)
{
	dev_spool_close(b->s);
	bad_open(b);
}

/* A directory in the place of the newest segment's rewrite's temporary file: the rewrite
 * cannot be made, and will not be by trying again. Made once the spool is open. */
static void bad_no_rewrite(struct bad_spool *b)
{
	b->tmp = h_strf("%s.tmp", b->seg);
	cr_assert_eq(mkdir(b->tmp, 0700), 0);
}

/* read_all into b->got: the count */
static size_t bad_read(struct bad_spool *b)
{
	return read_all(b->s, 1, b->got, b->cap);
}

/* bad_read, each record of b delivered or reported dropped once (expect_each_once) */
static size_t bad_each_once(struct bad_spool *b, const char *when)
{
	size_t n = bad_read(b);
	expect_each_once(b->s, b->seqs, b->nrec, b->got, n, when);
	return n;
}

/* The power cut (power_cut) of b's directory, the copy's options in b->oc (its spool, b->c,
 * to be opened). */
static void bad_cut(struct bad_spool *b)
{
	b->oc = b->o;
	b->oc.dir = power_cut(b->dir);
}

static void bad_done(struct bad_spool *b)
{
	eio_disarm();
	eio_stripe = 0;
	if (b->c)
		dev_spool_close(b->c);
	if (b->s)
		dev_spool_close(b->s);
	if (b->tmp)
		rmdir(b->tmp);
	free((char *)b->oc.dir);
	free(b->tmp);
	free(b->seg);
	free(b->dir);
	free(b->seqs);
	free(b->got);
}

/* the records of index in [10, 21] overlap the block: REC_BYTES(300) is 376 */
static void expect_forty_less_the_block(const struct bad_spool *b, size_t n)
{
	cr_assert_eq(n, 28);
	for (size_t i = 0; i < 10; i++)
		cr_expect_eq(b->got[i], b->seqs[i]);
	for (size_t i = 10; i < 28; i++)
		cr_expect_eq(b->got[i], b->seqs[i + 12]);
}

/* The one pending Dropped link is the block's: (seqs[9], seqs[21]], count 2 (the record whose
 * body it holds, and the stretch whose headers it hides). */
static void expect_the_block_reported(const struct bad_spool *b)
{
	struct wire_dropped d[4];
	cr_assert_eq(dev_spool_dropped(b->s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, b->seqs[9]);
	cr_expect_eq(d[0].last_seq, b->seqs[21]);
	cr_expect_eq(d[0].count, 2);
}

/* How many Dropped links are pending (at most 4). */
static size_t pending(const struct dev_spool *s)
{
	struct wire_dropped d[4];
	return dev_spool_dropped(s, d, 4);
}

static void expect_dropped_total(const struct dev_spool *s, uint64_t total)
{
	struct dev_spool_stats st;
	dev_spool_stats(s, &st);
	cr_expect_eq(st.dropped_total, total);
}

/* What b's spool delivered (the first n of b->got), the read error cleared, each record once
 * (expect_each_once); then a power cut: nothing delivered is reported dropped after it, and the
 * copy delivers as many, each record once again. */
static void expect_the_report_survives_a_power_cut(struct bad_spool *b, size_t n)
{
	struct wire_dropped d[8];
	uint64_t *after = calloc(b->cap, sizeof(*after));
	cr_assert_not_null(after);
	expect_each_once(b->s, b->seqs, b->nrec, b->got, n, "before the power cut");
	bad_cut(b);
	b->c = open_spool(&b->oc);
	size_t nd = dev_spool_dropped(b->c, d, 8);
	for (size_t i = 0; i < n; i++)
		cr_expect(!in_dropped(d, nd, b->got[i]), "seq %" PRIu64 " delivered before the "
			  "power cut, reported dropped after it", b->got[i]);
	size_t na = read_all(b->c, 1, after, b->cap);
	expect_each_once(b->c, b->seqs, b->nrec, after, na, "after the power cut");
	cr_expect_eq(na, n);
	free(after);
}

/* A 1 MiB segment of 2700 records of 300 bytes, one 4 KiB block in `stripe` of it failing,
 * met (how) at the open (0), at run time (1), or at run time by a rewrite that reads it all and
 * then fails, on a card remounted read-only (2: EROFS): everything read, each record delivered
 * or reported dropped once (expect_each_once), when naming the case. Returns the count read,
 * b's spool open. */
static size_t scattered(struct bad_spool *b, int stripe, int how, char when[64])
{
	static const char *const hows[] = {"at the open", "at run time", "EROFS"};
	*b = bad_fill(2700, 300, 1 << 20);
	settled_forget();
	eio_stripe = stripe;
	bad_open_armed(b, how == 0, 0, 0, -1);
	if (how == 2)
		rename_errno = EROFS; /* the rewrite reads it all, then fails */
	size_t n = bad_read(b);
	rename_errno = 0;
	snprintf(when, 64, "1 block in %d, %s", stripe, hows[how]);
	expect_each_once(b->s, b->seqs, 2700, b->got, n, when);
	return n;
}

/* A bad block met at run time costs only the records it overlaps: those before and after it
 * are delivered, the lost ones reported dropped once (the one whose body it holds, and the
 * stretch whose headers it hides, count 1 each: one link), and the segment is rewritten
 * without it, so it is read a bounded number of times, and never again after that. */
Test(dev_spool, a_bad_block_at_run_time_costs_only_the_records_it_overlaps)
{
	struct bad_spool b = bad_forty(0, -1);
	expect_forty_less_the_block(&b, bad_read(&b));
	expect_eio_named(b.s, b.seg);
	expect_the_block_reported(&b);
	expect_dropped_total(b.s, 2);
	unsigned hits = eio_hits;
	cr_expect_gt(hits, 0);
	cr_expect_leq(hits, 40, "the bad block was read %u times", hits);
	char *now = last_segment(b.dir);
	cr_expect_str_eq(now, b.seg, "the segment keeps its name");
	free(now);
	/* read again, and after a restart: the same records, nothing reported again */
	expect_forty_less_the_block(&b, bad_read(&b));
	bad_reopen(&b);
	expect_forty_less_the_block(&b, bad_read(&b));
	cr_assert_eq(pending(b.s), 1);
	expect_dropped_total(b.s, 2);
	cr_expect_eq(eio_hits, hits, "the bad block was read again after the rewrite");
	bad_done(&b);
}

/* A read error that does not last (it fails once) costs nothing, at run time or at the open. */
Test(dev_spool, a_transient_read_error_loses_nothing)
{
	struct dev_spool_read_error re;
	struct bad_spool b = bad_forty(0, 1);
	cr_expect_eq(bad_read(&b), 40);
	cr_expect_eq(eio_fails, 0, "it did not fail");
	cr_expect_eq(pending(b.s), 0);
	dev_spool_read_error(b.s, &re);
	cr_expect_eq(re.count, 0);
	dev_spool_close(b.s);
	/* at the open: its scan reads a header in the block */
	bad_open_armed(&b, 1, BAD_FROM, BAD_TO, 1);
	cr_expect_eq(eio_fails, 0, "it did not fail");
	cr_expect_eq(bad_read(&b), 40);
	cr_expect_eq(pending(b.s), 0);
	bad_done(&b);
}

/* A header read at the open that fails twice, the retry too, and then works is not reported
 * lost: the resync reads it again (before, it was reported dropped and the repair's rewrite,
 * reading it fine, kept it: both delivered and reported, PROTOCOL §3). */
Test(dev_spool, a_header_read_that_fails_twice_at_the_open_is_not_both_kept_and_reported)
{
	struct wire_dropped d[4];
	struct bad_spool b = bad_forty(1, 2);
	cr_expect_eq(eio_fails, 0, "it did not fail");
	size_t n = bad_read(&b), nd = dev_spool_dropped(b.s, d, 4);
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < nd; k++)
			cr_expect(b.got[i] <= d[k].prev_seq || b.got[i] > d[k].last_seq,
				  "%" PRIu64 " delivered and reported dropped", b.got[i]);
	cr_expect_eq(n, 40);
	cr_expect_eq(nd, 0);
	bad_done(&b);
}

/* A bad block met at the open: the repair's rewrite, which reads the records whole, reports
 * those it overlaps (the one whose body it holds and the stretch whose headers it hides: one
 * link, count 2), and what follows is kept and delivered; once the segment is rewritten
 * without it, it is not read again. */
Test(dev_spool, a_bad_block_at_the_open_costs_only_the_records_it_overlaps)
{
	struct bad_spool b = bad_forty(1, -1);
	expect_eio_named(b.s, b.seg);
	expect_the_block_reported(&b);
	expect_forty_less_the_block(&b, bad_read(&b));
	cr_assert_eq(pending(b.s), 1);
	unsigned hits = eio_hits;
	cr_expect_leq(hits, 60, "the bad block was read %u times", hits);
	bad_reopen(&b);
	expect_forty_less_the_block(&b, bad_read(&b));
	cr_expect_eq(pending(b.s), 1);
	expect_dropped_total(b.s, 2);
	cr_expect_eq(eio_hits, hits, "the bad block was read again after the rewrite");
	bad_done(&b);
}

/* A rewrite that cannot be made and will not be by trying again (here its temporary file: a
 * directory in its place; a full disk, a write error) costs no more than the bad block: the
 * reader passes over it where it is, the records it overlaps reported dropped once (what the
 * failed rewrite had reported is taken back, not reported twice), the rest delivered, read
 * again and after a restart too; appends go on. */
Test(dev_spool, a_bad_block_whose_rewrite_cannot_be_made_costs_only_the_records_it_overlaps)
{
	struct bad_spool b = bad_forty(0, -1);
	bad_no_rewrite(&b);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	expect_forty_less_the_block(&b, read_on(b.s, &c, 1, 1, b.got, b.cap));
	expect_eio_named(b.s, b.seg);
	expect_the_block_reported(&b);
	expect_dropped_total(b.s, 2);
	expect_forty_less_the_block(&b, bad_read(&b));
	cr_expect_eq(pending(b.s), 1);
	uint64_t seq = put(b.s, 300, wall_ms());
	cr_assert_eq(read_on(b.s, &c, 1, 0, b.got, b.cap), 1);
	cr_expect_eq(b.got[0], seq);
	bad_reopen(&b);
	cr_expect_eq(bad_read(&b), 29);
	cr_expect_eq(b.got[28], seq);
	expect_dropped_total(b.s, 2);
	bad_done(&b);
}

/* A rewrite that fails for a reason that passes (out of file descriptors: its temporary file
 * cannot be opened) is an error to try again, not damage: nothing is reported dropped, and
 * once it has passed the records the bad block does not overlap are delivered and only those
 * it overlaps reported. */
Test(dev_spool, a_bad_block_whose_rewrite_fails_for_a_while_loses_nothing_more)
{
	struct rlimit old, rl;
	size_t n = 0;
	int rc, e = 0;
	struct bad_spool b = bad_forty(0, -1);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the lowest free descriptor */
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	rl = old;
	rl.rlim_cur = (rlim_t)fd + 1; /* room for the segment, none for the rewrite */
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	for (;;) {
		struct dev_spool_rec r;
		uint8_t *env = NULL;
		size_t len;
		rc = dev_spool_next(b.s, &c, 1, &r, &env, &len);
		e = errno;
		if (rc)
			break;
		free(env);
		b.got[n++] = r.seq;
	}
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	cr_expect_eq(rc, DEV_SPOOL_EIO, "next: %s", dev_spool_strerror(rc));
	cr_expect_eq(e, EMFILE, "errno %s", strerror(e));
	cr_expect_eq(n, 10);
	cr_expect_eq(pending(b.s), 0);
	expect_dropped_total(b.s, 0);
	n += read_on(b.s, &c, 1, 1, b.got + n, b.cap - n);
	expect_forty_less_the_block(&b, n);
	expect_the_block_reported(&b);
	bad_done(&b);
}

/* A segment of 1 MiB that cannot be read at all costs a bounded number of reads, at run time
 * and at the open, not one or two per 512-byte sector (on an SD card each failing read can
 * take 100 ms and more): a sector is tried once, the rest of its 4 KiB block is not read, and
 * a walk gives up on the rest of the segment after a few dozen failures. All it held is
 * reported dropped. */
Test(dev_spool, a_segment_that_cannot_be_read_at_all_costs_few_reads)
{
	for (int at_open = 0; at_open < 2; at_open++) {
		const char *when = at_open ? "at the open" : "at run time";
		struct wire_dropped d[4];
		struct bad_spool b = bad_fill(64, 16000, 1 << 20); /* one segment of ~1 MiB */
		bad_open_armed(&b, at_open, 0, 0, -1); /* at the open: the segment is removed */
		cr_expect_eq(bad_read(&b), 0, "%s", when);
		cr_expect_leq(eio_hits, 200, "%s: %u failing reads", when, eio_hits);
		cr_assert_eq(dev_spool_dropped(b.s, d, 4), 1, "%s", when);
		cr_expect_lt(d[0].prev_seq, b.seqs[0], "%s", when);
		cr_expect_eq(d[0].last_seq, b.seqs[63], "%s", when);
		bad_done(&b);
	}
}

/* A reader that starts past the record whose body the bad block holds (a resend's, or after a
 * restart) meets the block where it hides headers: the rewrite finds that record cannot be
 * read and reports it too, not only the stretch it hides. */
Test(dev_spool, a_bad_block_before_a_readers_start_is_reported_whole)
{
	struct bad_spool b = bad_forty(0, -1);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(b.seqs[15]);
	cr_assert_eq(read_on(b.s, &c, 1, 1, b.got, b.cap), 18);
	cr_expect_eq(b.got[0], b.seqs[22]);
	expect_the_block_reported(&b);
	expect_forty_less_the_block(&b, bad_read(&b));
	bad_done(&b);
}

/* A read error in the bad block that clears after some failures, at the open (its scan sees
 * the block as unreadable, and the repair's rewrite, which reads it again, may not: the error
 * cleared before or during it) or at run time: whatever is read in the end, every record is
 * delivered or reported dropped, never both, then and after a restart (before, the open reported
 * what its scan could not read and the rewrite kept what it could: fails=5, 6, 10 gave records
 * both delivered and covered by a reported Dropped link); one that clears before the rewrite
 * (at most 5 failures: the open's scan takes them all) costs nothing. */
Test(dev_spool, a_read_error_that_clears_is_never_both_delivered_and_reported)
{
	static const int fails[] = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 20, 30, -1};
	for (int at_open = 1; at_open >= 0; at_open--) {
		for (size_t f = 0; f < sizeof(fails) / sizeof(fails[0]); f++) {
			char when[64];
			snprintf(when, sizeof(when), "%s, fails=%d", at_open ? "open" : "run time",
				 fails[f]);
			struct bad_spool b = bad_forty(at_open, fails[f]);
			size_t n = bad_each_once(&b, when);
			if (at_open && fails[f] > 0 && fails[f] <= 5) /* cleared before the rewrite */
				cr_expect_eq(n, 40, "%s: %zu delivered", when, n);
			eio_disarm(); /* whatever is left of the error clears */
			bad_each_once(&b, when);
			bad_reopen(&b);
			strcat(when, ", restarted");
			bad_each_once(&b, when);
			bad_done(&b);
		}
	}
}

/* A card remounted read-only (EROFS: the rewrite's state write and rename fail) does not stall
 * the backlog at a bad block until it is remounted: the rewrite's failure does not pass by
 * itself, so the reader passes over the block where it is, reporting only the records it
 * overlaps and delivering the rest; after the remount and a restart nothing more is lost and
 * nothing is delivered twice over (before, EROFS was retried: DEV_SPOOL_EIO after 10 records,
 * at every pass). */
Test(dev_spool, a_bad_block_on_a_card_remounted_read_only_costs_only_the_records_it_overlaps)
{
	struct wire_dropped d[4];
	size_t n = 0;
	struct bad_spool b = bad_forty(0, -1);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	rename_errno = EROFS;
	int rc = read_until_error(b.s, &c, b.got, &n, b.cap);
	cr_expect_eq(rc, 1, "next: %s (%s)", dev_spool_strerror(rc), strerror(errno));
	expect_forty_less_the_block(&b, n);
	cr_assert_eq(dev_spool_dropped(b.s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, b.seqs[9]);
	cr_expect_eq(d[0].last_seq, b.seqs[21]);
	expect_forty_less_the_block(&b, bad_read(&b));
	rename_errno = 0; /* remounted read-write */
	bad_reopen(&b);
	cr_expect_eq(bad_each_once(&b, "remounted and restarted"), 28);
	bad_done(&b);
}

/* A power cut between the rewrite's state write (which reports what it leaves out) and its
 * rename: at the restart the report is on disk and the old segment, with the records it
 * reported, still in place; should the error have cleared, they are not delivered (they are
 * reported), they are cut out (before, all 40 were delivered, 12 of them reported dropped too). */
Test(dev_spool, a_power_cut_between_a_rewrite_s_report_and_its_rename_delivers_nothing_reported)
{
	struct bad_spool b = bad_forty(0, -1);
	rename_errno = EIO; /* the segment's rename does not happen: the power is cut there */
	rename_segs_only = 1;
	expect_forty_less_the_block(&b, bad_read(&b));
	bad_cut(&b);
	rename_errno = rename_segs_only = 0;
	eio_disarm(); /* the error cleared */
	b.c = open_spool(&b.oc);
	size_t n = read_all(b.c, 1, b.got, b.cap);
	expect_each_once(b.c, b.seqs, 40, b.got, n, "after the power cut");
	cr_expect_eq(n, 28);
	dev_spool_close(b.c);
	b.c = open_spool(&b.oc); /* cut out: read again, the same */
	n = read_all(b.c, 1, b.got, b.cap);
	expect_each_once(b.c, b.seqs, 40, b.got, n, "restarted again");
	cr_expect_eq(n, 28);
	bad_done(&b);
}

/* Past the 64 failing reads of a walk the rest of a segment is reported as its lost tail while
 * it is still in the file (here its rewrite cannot be made: a directory in its temporary
 * file's place): none of it is delivered later, when the error has cleared, nor after a
 * restart, with the rewrite still impossible and once it is made (before, it was all delivered
 * as soon as it could be read: reported and delivered both). */
Test(dev_spool, records_past_the_failing_reads_cap_reported_dropped_are_never_delivered)
{
	struct bad_spool b = bad_fill(200, 4000, 1 << 20); /* one segment of ~800 KiB */
	bad_open(&b);
	bad_no_rewrite(&b);
	eio_arm(b.seg, 8192, 600000, -1); /* the cap is reached well before its end */
	cr_expect_eq(bad_each_once(&b, "bad block"), 2);
	eio_disarm(); /* the error clears */
	bad_each_once(&b, "cleared");
	bad_reopen(&b);
	bad_each_once(&b, "restarted, no rewrite");
	dev_spool_close(b.s);
	cr_assert_eq(rmdir(b.tmp), 0);
	bad_open(&b);
	cr_expect_eq(bad_each_once(&b, "restarted, rewritten"), 2);
	struct stat st;
	cr_assert_eq(stat(b.seg, &st), 0);
	cr_expect_lt(st.st_size, 3 * REC_BYTES(4000), "the reported records were not cut out");
	bad_done(&b);
}

/* Damage at the start of a segment found at the open, with no loss before it and a seq handed
 * out to an envelope that is not spooled (a poll, a Birth) just before the segment's first
 * record: the Dropped link starts at the last durable record before it, not at the segment's
 * name - 1, a seq no record has (the bridge would see a hole before the link: before, the link
 * was (poll, seqs[5]]). */
Test(dev_spool, damage_at_a_segment_s_start_links_from_the_last_durable_record)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	uint64_t seqs[15], poll;
	char names[64][600];
	o.segment_bytes = 5 * REC_BYTES(300);
	struct dev_spool *s = open_spool(&o);
	for (int i = 0; i < 15; i++) {
		if (i == 5)
			cr_assert_eq(dev_spool_take_seq(s, &poll), 0);
		seqs[i] = put(s, 300, wall_ms());
	}
	dev_spool_close(s);
	cr_assert_eq(segments(dir, names), 3);
	flip_byte(names[1], 9); /* the first record of the second segment */
	s = open_spool(&o);
	uint64_t got[16];
	cr_expect_eq(read_all(s, 1, got, 16), 14);
	struct wire_dropped d[4];
	cr_assert_eq(dev_spool_dropped(s, d, 4), 1);
	cr_expect_eq(d[0].prev_seq, seqs[4], "link from %" PRIu64 " (poll %" PRIu64 ")",
		     d[0].prev_seq, poll);
	cr_expect_eq(d[0].last_seq, seqs[5]);
	dev_spool_close(s);
	free(dir);
}

/* The newest segment's rewrite cannot be made (a directory in its temporary file's place) and
 * the walk's failing reads reach their cap, the rest of the segment taken as unreadable to its
 * end: a record appended afterwards goes into a new segment, and is delivered, not reported
 * dropped with that tail (before, it went into the same file, past the "unreadable" tail, and
 * was reported lost, never delivered). */
Test(dev_spool, a_record_appended_after_damage_kept_in_the_newest_segment_is_delivered)
{
	struct wire_dropped d[DEV_SPOOL_MAX_DROPPED];
	struct bad_spool b = bad_fill(200, 4000, 1 << 20);
	bad_open_armed(&b, 0, 8192, 600000, -1);
	bad_no_rewrite(&b);
	struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(0);
	cr_expect_eq(read_on(b.s, &c, 1, 1, b.got, b.cap), 2);
	uint64_t fresh = put(b.s, 300, wall_ms());
	cr_expect_eq(read_on(b.s, &c, 1, 1, b.got, b.cap), 1, "the fresh record was not delivered");
	cr_expect_eq(b.got[0], fresh);
	size_t nd = dev_spool_dropped(b.s, d, DEV_SPOOL_MAX_DROPPED);
	cr_expect(!in_dropped(d, nd, fresh), "the fresh record %" PRIu64 " is reported dropped",
		  fresh);
	bad_done(&b);
}

/* The open's repair rewrite writes its report (the state file) and then fails (its rename: EIO
 * on a dying card; its fdatasync would do the same): the report is on disk, so it stands. The
 * error clears, the reader delivers all it can, a power cut comes before any other state write:
 * nothing delivered is reported dropped, before or after it, and each record is one or the
 * other (before, the report was taken back in memory only: the reader delivered the 12 records
 * it covers, and after the power cut they were reported dropped too). */
Test(dev_spool, a_rewrite_that_fails_after_its_report_is_on_disk_keeps_the_report)
{
	struct bad_spool b = bad_fill(40, 300, 0);
	rename_errno = EIO;
	rename_segs_only = 1;
	bad_open_armed(&b, 1, BAD_FROM, BAD_TO, -1);
	rename_errno = rename_segs_only = 0;
	eio_disarm(); /* the error clears */
	expect_the_report_survives_a_power_cut(&b, bad_read(&b));
	bad_done(&b);
}

/* The same at run time: the reader's rewrite writes its report and its rename fails (EIO), the
 * read error clearing then: the reader passes over what the report covers, and a power cut
 * after it brings back no report of a delivered record (before, drop_damage took the report
 * back in memory only: the reader delivered the block's records, reported on disk). */
Test(dev_spool, a_run_time_rewrite_that_fails_after_its_report_is_on_disk_keeps_the_report)
{
	struct bad_spool b = bad_forty(0, -1);
	rename_errno = EIO;
	rename_segs_only = rename_clears = 1;
	size_t n = bad_read(&b);
	rename_errno = rename_segs_only = rename_clears = 0;
	eio_disarm();
	expect_the_report_survives_a_power_cut(&b, n);
	bad_done(&b);
}

/* The settlement gap: a rewrite cannot be made (a directory in the .tmp's place), the reader
 * reports the block's records; the link's carrier is acknowledged by a range while a hole
 * below (seqs[3] not yet stored) keeps the frontier low. The link stays pending while the
 * segment still holds its records: after a restart (ranges are not kept), the block readable
 * again, none of them is delivered (before, the link settled with the range, and they were
 * delivered after the restart: reported dropped and delivered both). */
Test(dev_spool, a_settled_link_s_records_are_not_delivered_after_a_restart)
{
	struct wire_dropped d[4];
	struct bad_spool b = bad_forty(0, -1);
	bad_no_rewrite(&b);
	expect_forty_less_the_block(&b, bad_read(&b));
	size_t nd = dev_spool_dropped(b.s, d, 4);
	cr_assert_eq(nd, 1);
	uint64_t carrier = put(b.s, 300, wall_ms());
	dev_spool_dropped_reported(b.s, carrier, d, nd);
	uint64_t r[1][2] = {{b.seqs[4], carrier}};
	cr_assert_eq(dev_spool_ack(b.s, b.seqs[2], (const uint64_t(*)[2])r, 1), 0);
	dev_spool_close(b.s);
	eio_disarm();
	bad_open(&b);
	size_t n = bad_read(&b);
	expect_each_once(b.s, b.seqs + 3, 37, b.got, n, "restarted"); /* above the frontier */
	for (size_t i = 0; i < n; i++)
		cr_expect(!in_dropped(d, nd, b.got[i]), "seq %" PRIu64 " was reported dropped "
			  "(link acknowledged) and is now delivered", b.got[i]);
	bad_done(&b);
}

/* Scattered bad blocks (every second, fourth or sixteenth 4 KiB block of a 1 MiB segment), at
 * the open and at run time: more damaged stretches than the 64 pending Dropped links a spool
 * keeps. Each record is delivered or reported dropped, never both, never neither: near the cap
 * the rest of the segment from the damage met goes in one link (before, make_room forgot links
 * to make room for new ones: records neither delivered nor reported). */
Test(dev_spool, scattered_bad_blocks_forget_no_dropped_link)
{
	static const int stripes[] = {2, 4, 16};
	for (size_t k = 0; k < sizeof(stripes) / sizeof(stripes[0]); k++) {
		for (int at_open = 0; at_open < 2; at_open++) {
			struct bad_spool b;
			char when[64];
			size_t n = scattered(&b, stripes[k], at_open ? 0 : 1, when);
			cr_expect_gt(n, 0, "%s: nothing delivered", when);
			bad_done(&b);
		}
	}
}

/* Scattered bad blocks (one 4 KiB block in 2, 4 or 16 of a 1 MiB segment) cost about as many
 * failing reads as a segment that cannot be read at all: the 64 failed reads a walk may spend
 * are counted over the whole walk of the segment, not afresh at each stretch of damage, at the
 * open (its scan and its rewrite) and at run time (the reader's walk and the rewrite; also
 * with a rewrite that reads it all and then fails, on a card remounted read-only: tried once
 * in the walk); each record is delivered or
 * reported dropped, never both, never neither (before, up to 3337 failing reads at the open,
 * 1780 at run time). */
Test(dev_spool, scattered_bad_blocks_cost_few_reads_per_walk)
{
	static const int stripes[] = {2, 4, 16};
	for (size_t k = 0; k < sizeof(stripes) / sizeof(stripes[0]); k++) {
		for (int how = 0; how < 3; how++) { /* at the open, at run time, no rewrite */
			struct bad_spool b;
			char when[64];
			scattered(&b, stripes[k], how, when);
			cr_expect_leq(eio_hits, 200, "%s: %u failing reads", when, eio_hits);
			bad_done(&b);
		}
	}
}

/* The near-cap merge of spool_report_damage reached: rot in 250 to 254 records of the first of two
 * 1 MiB segments fills the pending list (nothing acknowledged), then one 4 KiB block in 16 of
 * the second cannot be read. Each record is delivered or reported dropped, never both, never
 * neither, also after a restart: with the list within PENDING_SPARE of its cap the damage met
 * takes the rest of its segment in one link (with the merge disabled, make_room forgot links
 * and records were neither delivered nor reported). scattered_bad_blocks_forget_no_dropped_link
 * no longer reaches it, since a walk's failed reads are capped as a whole. */
Test(dev_spool, bad_blocks_met_with_the_pending_list_near_its_cap_forget_no_dropped_link)
{
	/* below and within PENDING_SPARE (4) of the cap */
	static const int nrots[] = {DEV_SPOOL_MAX_DROPPED - 6, DEV_SPOOL_MAX_DROPPED - 2};
	for (size_t r = 0; r < sizeof(nrots) / sizeof(nrots[0]); r++) {
		char names[64][600], when[64];
		struct wire_dropped d[DEV_SPOOL_MAX_DROPPED];
		struct bad_spool b = bad_fill(5400, 300, 1 << 20);
		cr_assert_eq(segments(b.dir, names), 2);
		for (int k = 0; k < nrots[r]; k++)
			flip_byte(names[0], 5000 + k * 4000);
		settled_forget();
		bad_open(&b);
		eio_stripe = 16;
		eio_arm(names[1], 0, 0, -1);
		size_t n = bad_read(&b);
		size_t nd = dev_spool_dropped(b.s, d, DEV_SPOOL_MAX_DROPPED);
		snprintf(when, sizeof(when), "%d rotten records", nrots[r]);
		cr_expect_geq(nd, DEV_SPOOL_MAX_DROPPED - 4, "%s: %zu links pending, the cap not "
			      "neared", when, nd);
		expect_each_once(b.s, b.seqs, 5400, b.got, n, when);
		eio_disarm();
		eio_stripe = 0;
		bad_reopen(&b);
		snprintf(when, sizeof(when), "%d rotten records, restarted", nrots[r]);
		bad_each_once(&b, when);
		bad_done(&b);
	}
}

/* Scattered bad blocks (one 4 KiB block in 2) in the first of two 1 MiB segments, then rot in 8
 * records of the second, nothing acknowledged in between: each record is delivered or reported
 * dropped, never both, never neither. Also a check of the harness: the armed file is held open
 * (eio_arm), so a rewrite's .tmp cannot take its freed inode and inherit its failures (before,
 * it did: records the new segment holds were reported dropped as unreadable and delivered). */
Test(dev_spool, scattered_bad_blocks_then_rot_in_a_later_segment_forget_no_dropped_link)
{
	char names[64][600];
	struct bad_spool b = bad_fill(3300, 300, 1 << 20);
	cr_assert_eq(segments(b.dir, names), 2);
	for (int k = 0; k < 8; k++)
		flip_byte(names[1], 2000 + k * 20000);
	settled_forget();
	bad_open(&b);
	eio_stripe = 2;
	eio_arm(names[0], 0, 0, -1);
	size_t n = bad_each_once(&b, "scattered then rot");
	cr_expect_gt(n, 0, "nothing delivered");
	bad_done(&b);
}

/* The reader's rewrite writes its report (the state file: renamed into place) and the
 * directory's fsync fails (ofile_replace's OFILE_NOT_DURABLE): the report is in the file the
 * next start reads, so it stands. The read error clears with it, the reader delivers all it can,
 * a power cut comes: nothing delivered is reported dropped, before or after it, and each record
 * is one or the other (before, state_write took OFILE_NOT_DURABLE for a failure and the rewrite
 * took its report back in memory only: the reader delivered the records it covers, and after
 * the power cut they were reported dropped too). */
Test(dev_spool, a_report_whose_directory_sync_fails_is_kept)
{
	struct bad_spool b = bad_forty(0, -1);
	h_fail_dir_fsync(EIO);
	state_rename_clears = 1;
	size_t n = bad_read(&b);
	state_rename_clears = 0;
	h_fail_dir_fsync(0);
	eio_disarm();
	cr_expect_lt(n, 40, "nothing reported");
	expect_the_report_survives_a_power_cut(&b, n);
	bad_done(&b);
}

/* Rot in 100 records, nothing acknowledged: 100 dropped links, more than a batch carries
 * (WIRE_MAX_DROPPED). All are kept, across a restart too, and batches carry them in turn, the
 * ones no envelope carries yet first: two batches carry all 100 (before, the list held 64,
 * make_room forgot or folded the rest, and every batch carried the same first ones). Once the
 * two carriers are acknowledged nothing is pending, and each record was delivered or reported
 * dropped, never both, never neither. */
Test(dev_spool, more_dropped_links_than_a_batch_carries_are_carried_in_turn)
{
	enum { N = 2000, ROT = 100 };
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	static uint64_t seqs[N], got[N];
	char names[64][600];
	o.segment_bytes = 1 << 20;
	fill(&o, N, 300, seqs);
	cr_assert_eq(segments(dir, names), 1);
	for (int k = 0; k < ROT; k++)
		flip_byte(names[0], 5000 + k * 6000);
	settled_forget();
	struct dev_spool *s = open_spool(&o);
	size_t n = read_all(s, 1, got, N);
	cr_assert_eq(n, N - ROT);
	struct wire_dropped all[DEV_SPOOL_MAX_DROPPED], b1[WIRE_MAX_DROPPED],
		b2[WIRE_MAX_DROPPED];
	cr_assert_eq(dev_spool_dropped(s, all, DEV_SPOOL_MAX_DROPPED), ROT);
	dev_spool_close(s);
	s = open_spool(&o);
	cr_assert_eq(dev_spool_dropped(s, all, DEV_SPOOL_MAX_DROPPED), ROT, "after a restart");
	/* two batches, as agent_flush_batch makes them */
	size_t n1 = dev_spool_dropped(s, b1, WIRE_MAX_DROPPED);
	cr_assert_eq(n1, WIRE_MAX_DROPPED);
	uint64_t c1 = put(s, 300, wall_ms());
	dev_spool_dropped_reported(s, c1, b1, n1);
	size_t n2 = dev_spool_dropped(s, b2, WIRE_MAX_DROPPED);
	cr_assert_eq(n2, WIRE_MAX_DROPPED, "the second batch is filled up with carried ones");
	uint64_t c2 = put(s, 300, wall_ms());
	dev_spool_dropped_reported(s, c2, b2, n2);
	for (size_t i = 0; i < ROT; i++) {
		size_t in1 = 0, in2 = 0;
		for (size_t k = 0; k < n1; k++)
			in1 += !memcmp(&b1[k], &all[i], sizeof(all[i]));
		for (size_t k = 0; k < ROT - n1; k++) /* the ones never carried come first */
			in2 += !memcmp(&b2[k], &all[i], sizeof(all[i]));
		cr_expect_eq(in1 + in2, 1, "link %zu (%" PRIu64 "..%" PRIu64 ") carried %zu times "
			     "before the others all were", i, all[i].prev_seq, all[i].last_seq,
			     in1 + in2);
	}
	cr_assert_eq(dev_spool_ack(s, c2, NULL, 0), 0);
	cr_expect_eq(dev_spool_dropped(s, all, DEV_SPOOL_MAX_DROPPED), 0, "links still pending");
	expect_each_once(s, seqs, N, got, n, "after the acknowledgement");
	dev_spool_close(s);
	free(dir);
}

/* A dropped link's carrier is itself dropped before it is acknowledged (the outage goes on, the
 * spool is full): it never reaches a bridge, so the link waits for another carrier, and once
 * one is acknowledged the link is settled (before, the link stayed marked as carried by the
 * lost envelope: among more than a batch's worth it waited behind the others, and no ack of a
 * later carrier settled it). */
Test(dev_spool, a_link_whose_carrier_is_dropped_waits_for_another)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts_per_record(dir); /* every append past the limit drops one */
	o.max_bytes = 4096;
	uint64_t seqs[4], got[4];
	char names[8][600];
	fill(&o, 4, 400, seqs);
	cr_assert_eq(segments(dir, names), 4);
	flip_byte(names[1], REC_BYTES(0) - 16 + 50); /* inside the payload of seqs[1] */
	struct dev_spool *s = open_spool(&o);
	cr_assert_eq(read_all(s, 1, got, 4), 3);
	struct wire_dropped sent[8], d[8];
	size_t n = dev_spool_dropped(s, sent, 8);
	cr_assert_eq(n, 1, "the rotten record is reported");
	struct wire_dropped link = sent[0];
	uint64_t lost = put(s, 400, wall_ms());
	dev_spool_dropped_reported(s, lost, sent, n);
	for (int i = 0; i < 100 && !in_dropped(sent, n, lost); i++) {
		put(s, 400, wall_ms());
		n = dev_spool_dropped(s, sent, 8);
	}
	cr_assert(in_dropped(sent, n, lost), "the carrier was not dropped");
	cr_expect(!memcmp(&sent[0], &link, sizeof(link)), "the link waits first in line");
	uint64_t next = put(s, 100, wall_ms());
	dev_spool_dropped_reported(s, next, sent, n);
	uint64_t r[1][2] = {{next, next}};
	cr_assert_eq(dev_spool_ack(s, 0, (const uint64_t(*)[2])r, 1), 0);
	size_t nd = dev_spool_dropped(s, d, 8);
	for (size_t i = 0; i < nd; i++)
		cr_expect(d[i].prev_seq != link.prev_seq, "the link %" PRIu64 "..%" PRIu64 " is still "
			  "pending after its new carrier was acknowledged", link.prev_seq,
			  link.last_seq);
	dev_spool_close(s);
	free(dir);
}

/* Rot in one record of each of 100 segments, nothing acknowledged, the segments rewritten
 * without it or (a directory in each rewrite's temporary file's place) passed over where they
 * are: 100 links, each record delivered or reported dropped, never both, never neither (with
 * the list capped at a batch's 64, make_room forgot links: records neither delivered nor
 * reported). */
Test(dev_spool, rot_in_more_segments_than_a_batch_carries_links_forgets_no_link)
{
	enum { SEGS = 100, PER = 8 };
	static uint64_t seqs[SEGS * PER], got[SEGS * PER];
	static char names[SEGS + 8][600];
	for (int blocked = 0; blocked < 2; blocked++) {
		char *dir = h_tmpdir("spool");
		struct dev_spool_opts o = opts(dir);
		o.segment_bytes = PER * REC_BYTES(300);
		fill(&o, SEGS * PER, 300, seqs);
		size_t k = 0;
		DIR *dd = opendir(dir);
		struct dirent *e;
		while (dd && (e = readdir(dd)) && k < SEGS + 8)
			if (!strncmp(e->d_name, "seg-", 4))
				snprintf(names[k++], 600, "%.300s/%.255s", dir, e->d_name);
		if (dd)
			closedir(dd);
		cr_assert_eq(k, SEGS);
		for (size_t j = 0; j < k; j++) {
			flip_byte(names[j], REC_BYTES(300) * 4 + 100);
			char *tmp = h_strf("%s.tmp", names[j]);
			cr_assert(!blocked || mkdir(tmp, 0700) == 0);
			free(tmp);
		}
		settled_forget();
		struct dev_spool *s = open_spool(&o);
		size_t n = read_all(s, 1, got, SEGS * PER);
		struct wire_dropped d[DEV_SPOOL_MAX_DROPPED];
		const char *when = blocked ? "rewrites blocked" : "rewritten";
		cr_expect_eq(n, SEGS * (PER - 1), "%s", when);
		cr_expect_eq(dev_spool_dropped(s, d, DEV_SPOOL_MAX_DROPPED), SEGS, "%s", when);
		expect_each_once(s, seqs, SEGS * PER, got, n, when);
		dev_spool_close(s);
		free(dir);
	}
}

/* A rotten record whose segment cannot be rewritten (a directory in its temporary file's place)
 * stays on disk, and each walk meets it again: it is reported once, however often it is read
 * (one link, one record counted dropped), and never delivered. Two checks keep it once: the
 * reader passes over a record a pending link covers, and add_pending takes a range it already
 * holds once; with both removed it is counted again at every walk. */
Test(dev_spool, rot_read_again_is_reported_once)
{
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	uint64_t seqs[10], got[10];
	fill(&o, 10, 300, seqs);
	char *seg = last_segment(dir);
	char *tmp = h_strf("%s.tmp", seg);
	cr_assert_eq(mkdir(tmp, 0700), 0);
	flip_byte(seg, REC_BYTES(300) * 4 + 100); /* inside seqs[4] */
	struct dev_spool *s = open_spool(&o);
	for (int walk = 0; walk < 3; walk++) {
		size_t n = read_all(s, 1, got, 10);
		cr_expect_eq(n, 9, "walk %d", walk);
		struct wire_dropped d[4];
		cr_expect_eq(dev_spool_dropped(s, d, 4), 1, "walk %d: links", walk);
		struct dev_spool_stats st;
		dev_spool_stats(s, &st);
		cr_expect_eq(st.dropped_total, 1, "walk %d: %" PRIu64 " counted dropped", walk,
			     st.dropped_total);
		expect_each_once(s, seqs, 10, got, n, "walk");
	}
	dev_spool_close(s);
	rmdir(tmp);
	free(tmp);
	free(seg);
	free(dir);
}

/* Rot in 258 records of one segment, nothing acknowledged: more links than the list holds, and
 * no two of them neighbours (unsent records between each): make_room folds none of them over
 * the records between, which are delivered; none is ever both delivered and reported. (It
 * forgets one link instead, whose record is then neither: the known gap of rot in more places
 * than the list holds, PROTOCOL.md §3.) */
Test(dev_spool, rot_in_more_places_than_the_list_holds_folds_no_link_over_unsent_records)
{
	enum { N = 3000, ROT = DEV_SPOOL_MAX_DROPPED + 2 };
	char *dir = h_tmpdir("spool");
	struct dev_spool_opts o = opts(dir);
	static uint64_t seqs[N], got[N];
	char names[4][600];
	o.segment_bytes = 4 << 20;
	fill(&o, N, 300, seqs);
	cr_assert_eq(segments(dir, names), 1);
	for (int k = 0; k < ROT; k++)
		flip_byte(names[0], 5000 + k * 4000);
	struct dev_spool *s = open_spool(&o);
	size_t n = read_all(s, 1, got, N);
	cr_expect_eq(n, N - ROT);
	struct wire_dropped d[DEV_SPOOL_MAX_DROPPED];
	size_t nd = dev_spool_dropped(s, d, DEV_SPOOL_MAX_DROPPED);
	cr_expect_eq(nd, DEV_SPOOL_MAX_DROPPED);
	for (size_t k = 0; k < n; k++)
		if (in_dropped(d, nd, got[k]))
			cr_assert_fail("seq %" PRIu64 " delivered and reported dropped", got[k]);
	dev_spool_close(s);
	free(dir);
}
