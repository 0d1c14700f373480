/* dev_spool.c - segmented, AES-256-GCM encrypted, fsync'd queue of envelopes: sequence numbers,
 * acknowledgements, dropped ranges, the state file, limits and the public API. Segment files are
 * in dev_spool_seg.c, recovery in dev_spool_recover.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32.h"
#include "dev_spool_int.h"
#include "ofile.h"
#include "otime.h"

const char *dev_spool_strerror(int err)
{
	switch (err) {
	case DEV_SPOOL_OK: return "success";
	case DEV_SPOOL_EIO: return "spool I/O error";
	case DEV_SPOOL_ENOSPC: return "spool disk full";
	case DEV_SPOOL_ENOMEM: return "out of memory";
	case DEV_SPOOL_EINVAL: return "invalid argument";
	case DEV_SPOOL_ECRYPTO: return "spool encryption failure";
	case DEV_SPOOL_ECORRUPT: return "spool record failed its integrity check";
	case DEV_SPOOL_ETOOBIG: return "record too large for the spool";
	case DEV_SPOOL_EKEY: return "spool key file unusable";
	case DEV_SPOOL_EFUTURE: return "ack beyond anything the spool handed out";
	case DEV_SPOOL_ENOKEY: return "spool key file missing";
	case DEV_SPOOL_EBUSY: return "spool in use by another process";
	}
	return "unknown spool error";
}


/* ---------- acknowledgement bookkeeping ---------- */

int dev_spool_is_acked(const struct dev_spool *s, uint64_t seq)
{
	if (seq <= s->acked_upto)
		return 1;
	for (size_t i = 0; i < s->nranges; i++)
		if (seq >= s->ranges[i][0] && seq <= s->ranges[i][1])
			return 1;
	return 0;
}

uint64_t dev_spool_acked_upto(const struct dev_spool *s)
{
	return s->acked_upto;
}

uint64_t dev_spool_clock_seq(int64_t realtime_ms)
{
	return realtime_ms >= CLOCK_SET_MS ? (uint64_t)((realtime_ms - CLOCK_SET_MS) / SEQ_CLOCK_MS) + 1
					   : 1;
}

uint64_t dev_spool_next_seq(const struct dev_spool *s)
{
	return s->next_seq;
}

uint64_t dev_spool_last_durable(const struct dev_spool *s)
{
	return s->last_durable;
}

int spool_range_covers(const struct dev_spool *s, uint64_t first, uint64_t last)
{
	if (last <= s->acked_upto)
		return 1;
	uint64_t from = first > s->acked_upto ? first : s->acked_upto + 1;
	for (size_t i = 0; i < s->nranges; i++)
		if (from >= s->ranges[i][0] && last <= s->ranges[i][1])
			return 1;
	return 0;
}

/* The highest seq from `seen` on up to which everything is acknowledged, by the cumulative point
 * or by ranges: what damage met after `seen` hid is lost only above it. */
uint64_t spool_acked_from(const struct dev_spool *s, uint64_t seen)
{
	if (seen < s->acked_upto)
		seen = s->acked_upto;
	for (size_t i = 0; i < s->nranges; i++) /* ascending */
		if (s->ranges[i][0] <= seen + 1 && s->ranges[i][1] > seen)
			seen = s->ranges[i][1];
	return seen;
}

/* Insert [a,b] into the sorted, disjoint range set, merging overlaps; drop what acked_upto
 * covers; keep at most MAX_ACK_RANGES (the oldest go: they only save resends). */
static void add_range(struct dev_spool *s, uint64_t a, uint64_t b)
{
	if (b <= s->acked_upto || a > b)
		return;
	if (a <= s->acked_upto)
		a = s->acked_upto + 1;
	size_t n = 0;
	uint64_t(*out)[2] = s->ranges;
	uint64_t (*tmp)[2] = malloc((s->nranges + 1) * sizeof(*tmp));
	if (!tmp)
		return; /* losing a selective ack only costs a resend */
	int placed = 0;
	for (size_t i = 0; i < s->nranges; i++) {
		uint64_t x = s->ranges[i][0], y = s->ranges[i][1];
		if (y + 1 < a || placed) {
			tmp[n][0] = x;
			tmp[n++][1] = y;
		} else if (b + 1 < x) {
			tmp[n][0] = a;
			tmp[n++][1] = b;
			tmp[n][0] = x;
			tmp[n++][1] = y;
			placed = 1;
		} else {
			a = x < a ? x : a;
			b = y > b ? y : b;
		}
	}
	if (!placed) {
		tmp[n][0] = a;
		tmp[n++][1] = b;
	}
	size_t skip = n > MAX_ACK_RANGES ? n - MAX_ACK_RANGES : 0;
	memcpy(out, tmp + skip, (n - skip) * sizeof(*tmp));
	s->nranges = n - skip;
	free(tmp);
}

static void prune_ranges(struct dev_spool *s)
{
	size_t n = 0;
	for (size_t i = 0; i < s->nranges; i++) {
		if (s->ranges[i][1] <= s->acked_upto)
			continue;
		if (s->ranges[i][0] <= s->acked_upto + 1) {
			/* the range touches the cumulative point: absorb it */
			s->acked_upto = s->ranges[i][1];
			continue;
		}
		s->ranges[n][0] = s->ranges[i][0];
		s->ranges[n][1] = s->ranges[i][1];
		n++;
	}
	s->nranges = n;
}

/* ---------- state file ---------- */

/* The marker <dir>/drops-unrecorded says that a segment was dropped while the state file could
 * not record it (a full disk): only then does the next open infer the stretch the state
 * misses (report_unrecorded_drops). An empty file takes no data block, so a full disk still
 * takes it. Set: created and its directory synced, best effort (without it the drop is lost to
 * a power cut before the next state write, as before); cleared once a state write succeeds.
 * 0 if the marker is there, -1 if not. */
static int drops_marker(struct dev_spool *s, int set)
{
	char *path = NULL;
	if (asprintf(&path, "%s/drops-unrecorded", s->dir) < 0)
		return -1;
	int rc = -1;
	if (set < 0) {
		rc = access(path, F_OK) ? -1 : 0;
	} else if (set) {
		int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0) {
			close(fd);
			spool_fsync_dir(s->dir);
			rc = 0;
		}
	} else if (!unlink(path) || errno == ENOENT) {
		rc = -1;
	}
	s->drops_unrecorded = !rc;
	free(path);
	return rc;
}

static int state_write(struct dev_spool *s)
{
	uint8_t buf[48 + 4 + MAX_PENDING * 32 + 4];
	size_t n = 0;
	put32(buf + n, STATE_MAGIC);
	put32(buf + n + 4, STATE_VERSION);
	n += 8;
	put64(buf + n, s->seq_reserved);
	put64(buf + n + 8, s->acked_upto);
	put64(buf + n + 16, s->last_durable);
	put64(buf + n + 24, s->dropped_total);
	n += 32;
	put32(buf + n, (uint32_t)s->npending);
	n += 4;
	for (size_t i = 0; i < s->npending; i++) {
		put64(buf + n, s->pending[i].d.prev_seq);
		put64(buf + n + 8, s->pending[i].d.last_seq);
		put64(buf + n + 16, s->pending[i].d.count);
		put64(buf + n + 24, s->pending[i].reported_in);
		n += 32;
	}
	put32(buf + n, crc32_update(0, buf, n));
	n += 4;

	char *dst = NULL;
	if (asprintf(&dst, "%s/state", s->dir) < 0)
		return DEV_SPOOL_ENOMEM;
	int r = ofile_replace(dst, buf, n);
	int rc = r ? spool_io_err() : DEV_SPOOL_OK;
	/* OFILE_NOT_DURABLE: renamed into place, its directory not synced. The next start reads
	 * it (a power cut may bring back the one before): a report in it is on disk, and taken
	 * back in memory its records would be delivered (state_writes: spool_rewrite_reporting,
	 * drop_damage). Still an error for the caller, and still dirty: written again later. */
	if (!r || r == OFILE_NOT_DURABLE)
		s->state_writes++;
	if (!rc) {
		s->state_written_ms = otime_mono_ms();
		s->state_dirty = 0;
	}
	free(dst);
	if (!rc && s->drops_unrecorded) /* the state holds every drop again */
		drops_marker(s, 0);
	return rc;
}

/* 0 loaded, 1 missing, 2 malformed (its content is lost: the open skips far ahead), or
 * DEV_SPOOL_EIO/ENOMEM when it cannot be read (EACCES, EIO, EISDIR, EMFILE...): that says
 * nothing about its content, so the open fails and leaves the file as it is, rather than
 * take it for lost and write a new one over it. */
static int state_read(struct dev_spool *s)
{
	char *path = NULL;
	uint8_t buf[48 + 4 + MAX_PENDING * 32 + 4];
	if (asprintf(&path, "%s/state", s->dir) < 0)
		return DEV_SPOOL_ENOMEM;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return errno == ENOENT ? 1 : DEV_SPOOL_EIO;
	size_t n = 0;
	ssize_t r;
	while (n < sizeof(buf) && (r = read(fd, buf + n, sizeof(buf) - n)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			errno = e;
			return DEV_SPOOL_EIO;
		}
		n += (size_t)r;
	}
	close(fd);
	if (n < 8 + 32 + 4 + 4 || get32(buf) != STATE_MAGIC || get32(buf + 4) != STATE_VERSION)
		return 2;
	uint32_t np = get32(buf + 40);
	size_t need = 44 + (size_t)np * 32 + 4;
	if (np > MAX_PENDING || n != need ||
	    get32(buf + need - 4) != crc32_update(0, buf, need - 4))
		return 2;
	s->seq_reserved = get64(buf + 8);
	s->acked_upto = get64(buf + 16);
	s->last_durable = get64(buf + 24);
	s->dropped_total = get64(buf + 32);
	s->npending = np;
	for (size_t i = 0; i < np; i++) {
		const uint8_t *p = buf + 44 + i * 32;
		s->pending[i].d.prev_seq = get64(p);
		s->pending[i].d.last_seq = get64(p + 8);
		s->pending[i].d.count = get64(p + 16);
		s->pending[i].reported_in = get64(p + 24);
	}
	return 0;
}

static void maybe_persist(struct dev_spool *s)
{
	if (s->state_dirty && otime_mono_ms() - s->state_written_ms >= STATE_PERSIST_MS)
		state_write(s); /* best effort: losing it only costs resends */
}

/* ---------- key ---------- */

/* 1 if the directory holds a state file or a segment, 0 if neither, or a negative error. */
static int holds_data(const struct dev_spool *s)
{
	char *path = NULL;
	struct stat st;
	if (asprintf(&path, "%s/state", s->dir) < 0)
		return DEV_SPOOL_ENOMEM;
	int found = lstat(path, &st) == 0 || errno != ENOENT;
	free(path);
	DIR *d = found ? NULL : opendir(s->dir);
	if (!found && !d)
		return DEV_SPOOL_EIO;
	struct dirent *e;
	uint64_t first;
	while (d && !found && (e = readdir(d)))
		found = spool_seg_parse(e->d_name, 0, &first);
	if (d)
		closedir(d);
	return found;
}

static int load_key(struct dev_spool *s, const char **reason)
{
	char *path = NULL;
	int rc = DEV_SPOOL_EKEY;
	*reason = "out of memory";
	if (asprintf(&path, "%s/key", s->dir) < 0)
		return DEV_SPOOL_ENOMEM;
	*reason = "key file is not 32 bytes with mode 0600";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* The key of a spool holding state or segments is gone: a new one would fail every
		 * record's tag, and they would be reported dropped as bit rot and cut out of their
		 * segments. No key can read them but that one. */
		rc = holds_data(s);
		if (rc) {
			*reason = rc < 0 ? "cannot read the spool directory"
					 : "the spool holds records or state only its key can "
					   "read: restore the key file, or remove the spool "
					   "directory to start afresh (its records are then lost)";
			rc = rc < 0 ? rc : DEV_SPOOL_ENOKEY;
			goto out;
		}
		/* First start: a fresh random key, written once, whole, through a temporary file
		 * (ofile_replace): a power cut leaves no key or a whole one, never a short one that
		 * would stop every later start. */
		if (wc_RNG_GenerateBlock(&s->rng, s->key, KEY_LEN) != 0) {
			rc = DEV_SPOOL_ECRYPTO;
			*reason = "cannot generate the key";
			goto out;
		}
		rc = ofile_replace(path, s->key, KEY_LEN) ? spool_io_err() : DEV_SPOOL_OK;
		*reason = "cannot create the key file";
		goto out;
	}
	if (fd < 0)
		goto out;
	struct stat st;
	ssize_t n = -1;
	if (fstat(fd, &st) == 0 && st.st_size == KEY_LEN && !(st.st_mode & 077))
		n = read(fd, s->key, KEY_LEN);
	close(fd);
	if (n == KEY_LEN)
		rc = DEV_SPOOL_OK;
out:
	free(path);
	return rc;
}

/* ---------- dropped ranges ---------- */

static int cmp_pending(const void *x, const void *y)
{
	const struct pending *a = x, *b = y;
	return (a->d.prev_seq > b->d.prev_seq) - (a->d.prev_seq < b->d.prev_seq);
}

/* The pending list is full: make room for one more. Two ranges that are neighbours in seq order
 * with nothing unacknowledged between them fold into one link (the bridge then counts the
 * acknowledged envelopes between them as dropped too: over-reported, nothing lost). A rot report
 * from the middle of the spool has unsent records around it, so folding across it would make
 * the bridge skip them; when no pair is safe, one range is forgotten instead, preferring one an
 * envelope already carries: its records are gone either way, and at worst the bridge records
 * the stretch as missing rather than dropped. */
static void make_room(struct dev_spool *s)
{
	struct pending *p = s->pending;
	size_t n = s->npending, victim = 0;
	qsort(p, n, sizeof(*p), cmp_pending);
	for (size_t i = 0; i + 1 < n; i++) {
		struct wire_dropped *a = &p[i].d, *b = &p[i + 1].d;
		int between = a->last_seq < b->prev_seq; /* records a and b do not cover */
		if (a->last_seq > b->prev_seq ||
		    (between && !spool_range_covers(s, a->last_seq + 1, b->prev_seq)))
			continue;
		uint64_t span = b->last_seq - a->prev_seq;
		a->count = a->count + b->count > span ? span : a->count + b->count;
		a->last_seq = b->last_seq;
		p[i].reported_in = 0;
		victim = i + 1;
		goto remove;
	}
	for (size_t i = 0; i < n; i++)
		if (p[i].reported_in) {
			victim = i;
			break;
		}
remove:
	memmove(&p[victim], &p[victim + 1], (n - victim - 1) * sizeof(*p));
	s->npending--;
}

/* Records prev+1..last are dropped: an envelope among them that carried a link, unacknowledged,
 * will never reach a bridge, and its links wait for another carrier. */
static void forget_dropped_carriers(struct dev_spool *s, uint64_t prev, uint64_t last)
{
	for (size_t i = 0; i < s->npending; i++) {
		uint64_t c = s->pending[i].reported_in;
		if (c > prev && c <= last && !dev_spool_is_acked(s, c))
			s->pending[i].reported_in = 0;
	}
}

/* Remember a dropped range until a bridge acknowledges the envelope that reported it. Returns 0
 * if that very range is already pending (reading a rotten record twice reports it once). */
static int add_pending(struct dev_spool *s, uint64_t prev, uint64_t last, uint64_t count)
{
	/* already reported (within a range that may have grown since): once is enough */
	for (size_t i = 0; i < s->npending; i++)
		if (s->pending[i].d.prev_seq <= prev && last <= s->pending[i].d.last_seq)
			return 0;
	forget_dropped_carriers(s, prev, last);
	if (s->npending && s->pending[s->npending - 1].d.last_seq == prev &&
	    !s->pending[s->npending - 1].reported_in) {
		s->pending[s->npending - 1].d.last_seq = last;
		s->pending[s->npending - 1].d.count += count;
		return 1;
	}
	if (s->npending == MAX_PENDING)
		make_room(s);
	s->pending[s->npending++] = (struct pending){{prev, last, count}, 0};
	return 1;
}

int spool_reported(const struct dev_spool *s, uint64_t seq)
{
	for (size_t i = 0; i < s->npending; i++)
		if (seq > s->pending[i].d.prev_seq && seq <= s->pending[i].d.last_seq)
			return !dev_spool_is_acked(s, seq);
	return 0;
}

int spool_rewrite_reporting(struct dev_spool *s, struct seg *g, uint64_t end, uint64_t skip)
{
	struct pending saved[MAX_PENDING];
	size_t npending = s->npending;
	uint64_t dropped_total = s->dropped_total;
	uint64_t writes = s->state_writes;
	memcpy(saved, s->pending, sizeof(saved));
	int rc = spool_seg_rewrite(s, g, end, skip, state_write);
	/* Taken back only while it is not on disk: written, a power cut would bring it back
	 * after the records it covers were delivered. Kept, they never are (spool_reported). */
	if (rc && s->state_writes == writes) {
		int e = errno;
		memcpy(s->pending, saved, sizeof(saved));
		s->npending = npending;
		s->dropped_total = dropped_total;
		errno = e;
	}
	return rc;
}

/* Records between prev and last (the chain link) were destroyed: at least one, how many is
 * unknowable when damage hid their headers. */
void spool_report_lost(struct dev_spool *s, uint64_t prev, uint64_t last)
{
	if (last > prev && add_pending(s, prev, last, 1)) {
		s->dropped_total++;
		s->state_dirty = 1;
	}
}


/* Links the pending list keeps free for what a walk past damage may still have to report
 * (drop_damage's record, a rewrite's hidden stretch, the reader's, a tail). */
enum { PENDING_SPARE = 4 };

int spool_report_damage(struct dev_spool *s, const struct seg *g, uint64_t prev, uint64_t last)
{
	if (last <= prev)
		return 0;
	for (size_t i = 0; i < s->npending; i++)
		if (s->pending[i].d.prev_seq <= prev && last <= s->pending[i].d.last_seq)
			return 0; /* reported already */
	if (s->npending + PENDING_SPARE < MAX_PENDING || g->last_seq <= last) {
		spool_report_lost(s, prev, last);
		return 0;
	}
	spool_report_lost(s, prev, g->last_seq);
	return 1;
}

/* ---------- dropping ---------- */

/* Drop segment i, remembering its unacknowledged records as a dropped range. */
static void drop_seg(struct dev_spool *s, size_t i)
{
	struct seg *g = &s->segs[i];
	int fd = spool_seg_fd(s, g);
	uint64_t off = 0, count = 0, prev = 0, last = 0, seen = g->first_prev, at;
	struct hdr h;
	int walk_fails = s->walk_fails; /* a walk of its own: the reader's budget is kept */
	spool_walk_start(s);
	while (fd >= 0 && off < g->bytes && !spool_next_good(s, fd, off, g->bytes, 0, &at, &h)) {
		if (!dev_spool_is_acked(s, h.seq)) {
			if (!count)
				prev = h.prev_seq;
			last = h.seq;
			count++;
		}
		seen = h.seq;
		off = at + REC_OVERHEAD + h.len;
	}
	s->walk_fails = walk_fails;
	/* What the walk did not reach (damage since the open hid the tail, or the segment cannot
	 * be read) held records up to the segment's last: they go too, at least one. */
	if ((fd < 0 || off < g->bytes) && !dev_spool_is_acked(s, g->last_seq)) {
		if (!count)
			prev = spool_acked_from(s, seen);
		last = g->last_seq;
		count++;
	}
	s->state_dirty = 1;
	int written = 1;
	if (count && add_pending(s, prev, last, count)) {
		s->dropped_total += count;
		/* on disk before the records go: a power cut in between must not turn a drop the
		 * device can report into a loss it cannot */
		written = !state_write(s);
	}
	if (!written)
		drops_marker(s, 1);
	spool_remove_seg(s, i);
	/* A full disk refused it, and the segment went all the same: that is the room the state
	 * needs. Again at once, not at the next append or ack; should a power cut come first,
	 * the next open reports the stretch anyway (report_unrecorded_drops). */
	if (!written)
		state_write(s);
}

/* Segment i holds the newest record ever appended. It alone tells the next open where the
 * chain ends (last_durable) while the state file may be behind: it goes only after a state
 * write has succeeded. (Usually the last segment; not when an append tore the first record of
 * a newer one, left empty.) */
static int holds_newest(const struct dev_spool *s, size_t i)
{
	return s->segs[i].count && s->segs[i].last_seq >= s->last_durable;
}

/* A segment whose time was taken with an unset clock has an unknown age: only the size limit
 * drops it (a device booting without a real-time clock would lose its backlog to NTP). Never
 * the segment holding the newest record, nor the last one (the next appends go there). */
static void enforce_limits(struct dev_spool *s)
{
	int64_t now = otime_wall_ms(), cutoff = now - s->opts.max_age_ms;
	while (s->nsegs > 1 && (int64_t)s->total_bytes > s->opts.max_bytes && !holds_newest(s, 0))
		drop_seg(s, 0);
	/* by age, oldest first, passing over segments of unknown age; the first segment young
	 * enough ends it (the ones after it are younger still) */
	for (size_t i = 0; now >= CLOCK_SET_MS && i + 1 < s->nsegs && !holds_newest(s, i);) {
		if (s->segs[i].t_last < CLOCK_SET_MS)
			i++;
		else if (s->segs[i].t_last < cutoff)
			drop_seg(s, i);
		else
			break;
	}
}

/* The records between the ack point and the oldest segment left were acknowledged (by the
 * ack point, or by ranges: such segments go at once, and ranges are not kept across a restart)
 * or dropped, and a drop is on disk before its segment goes, unless that state write failed
 * and a power cut came before another succeeded (the marker says so): the pending ranges then
 * miss (the end of) the stretch. Report
 * what none of them covers (at least one record; how many is unknowable). Acknowledged records
 * in it (their ack's state write failed too) are reported with it: a bridge ignores a drop at
 * or below its frontier. Nothing is inferred between segments: a stretch missing there may
 * have been acknowledged by ranges, which are not kept across a restart, and a bridge holding
 * it above its frontier would record it as dropped. */
static void report_unrecorded_drops(struct dev_spool *s)
{
	const struct seg *oldest = NULL;
	for (size_t i = 0; i < s->nsegs && !oldest; i++)
		if (s->segs[i].count && s->segs[i].last_seq > s->acked_upto)
			oldest = &s->segs[i];
	uint64_t at = s->acked_upto, end = oldest ? oldest->first_prev : at;
	while (at < end) {
		/* how far the pending ranges reach from `at`, or where the next one begins */
		uint64_t reach = at, next = end;
		for (size_t i = 0; i < s->npending; i++) {
			const struct wire_dropped *d = &s->pending[i].d;
			if (d->prev_seq <= at && d->last_seq > reach)
				reach = d->last_seq;
			else if (d->prev_seq > at && d->prev_seq < next)
				next = d->prev_seq;
		}
		if (reach == at)
			spool_report_lost(s, at, next);
		at = reach > at ? reach : next;
	}
}

/* ---------- public API ---------- */

int dev_spool_open(const struct dev_spool_opts *opts, struct dev_spool **out, const char **why)
{
	struct dev_spool *s = NULL;
	const char *reason = "out of memory";
	int rc = DEV_SPOOL_ENOMEM;

	if (!opts || !opts->dir || !out || opts->max_bytes <= 0 || opts->segment_bytes <= 0 ||
	    opts->max_age_ms <= 0) {
		rc = DEV_SPOOL_EINVAL;
		reason = "invalid options";
		goto fail;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		goto fail;
	s->lock_fd = -1;
	if (!(s->dir = strdup(opts->dir)) ||
	    !(s->ranges = malloc((MAX_ACK_RANGES + 1) * sizeof(*s->ranges))))
		goto fail;
	s->opts = *opts;
	s->opts.dir = s->dir;
	if (ofile_mkdir_p(s->dir, 0700)) {
		rc = spool_io_err();
		reason = "cannot create the spool directory";
		goto fail;
	}
	/* Not when it is private already: on a file system mounted read-only chmod fails
	 * (EROFS) even then, and what fails next says why better. */
	struct stat dst;
	if (stat(s->dir, &dst) != 0 ||
	    ((dst.st_mode & 07777) != 0700 && chmod(s->dir, 0700) != 0)) {
		rc = DEV_SPOOL_EIO;
		reason = errno == EROFS ? "cannot make the spool directory private (chmod 0700): "
					  "the file system is mounted read-only"
					: "cannot make the spool directory private (chmod 0700)";
		goto fail;
	}
	/* One process per spool: two would hand out the same seqs, write over each other's
	 * state and delete each other's segments. The lock is on the directory itself: the
	 * state file is replaced by renames (a lock on it would stay on the old file), and a lock
	 * file would have to be created first, on a full disk too. flock, not fcntl: it belongs to
	 * this open file, so a second open in this process is refused too; the kernel drops it
	 * with the process (no stale lock after a crash), and O_CLOEXEC keeps it out of the
	 * collectors' children and a `restart` exec. */
	s->lock_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		rc = s->lock_fd >= 0 && errno == EWOULDBLOCK ? DEV_SPOOL_EBUSY : DEV_SPOOL_EIO;
		reason = rc == DEV_SPOOL_EBUSY ? "another open spool holds the directory's lock"
					       : "cannot lock the spool directory";
		goto fail;
	}
	if (wc_InitRng(&s->rng) != 0) {
		rc = DEV_SPOOL_ECRYPTO;
		reason = "cannot initialise the random generator";
		goto fail;
	}
	s->rng_ready = 1;
	rc = load_key(s, &reason);
	if (rc)
		goto fail;
	if (wc_AesInit(&s->aes, NULL, INVALID_DEVID) != 0 ||
	    wc_AesGcmSetKey(&s->aes, s->key, KEY_LEN) != 0) {
		rc = DEV_SPOOL_ECRYPTO;
		reason = "cannot set up AES-GCM";
		goto fail;
	}
	s->aes_ready = 1;

	int st = state_read(s);
	if (st < 0) {
		rc = st;
		reason = "cannot read the state file (left as it is)";
		goto fail;
	}
	uint64_t was_durable = st == 0 ? s->last_durable : 0;
	rc = spool_load_segments(s, was_durable);
	if (rc) {
		reason = "cannot read the segments";
		goto fail;
	}
	uint64_t newest = 0, records = 0; /* segments left empty are removed after the state write */
	for (size_t i = 0; i < s->nsegs; i++) {
		records += s->segs[i].count;
		if (s->segs[i].count && s->segs[i].last_seq > newest)
			newest = s->segs[i].last_seq;
	}
	if (st == 0) {
		s->next_seq = s->seq_reserved > newest + 1 ? s->seq_reserved : newest + 1;
		/* The clock is a floor at every open, not only for a new spool: a state directory
		 * restored from a backup holds a reservation that its later life used up, and the
		 * bridge refuses seqs it already has. Only ever raised: a clock behind, or unset
		 * (1), changes nothing. */
		if (opts->first_seq > s->next_seq)
			s->next_seq = opts->first_seq;
	} else if (st == 1 && !records) {
		/* A new spool: nothing below first_seq was ever handed out by it, so nothing is owed. */
		s->next_seq = opts->first_seq ? opts->first_seq : 1;
		s->acked_upto = s->next_seq - 1;
	} else {
		/* No trustworthy state: skip far past anything that could have been handed out. */
		s->next_seq = newest + SEQ_LOST_STATE + 1;
		if (opts->first_seq > s->next_seq)
			s->next_seq = opts->first_seq;
		/* with no record on disk nothing is owed: the chain starts where numbering resumes */
		s->acked_upto = records ? 0 : s->next_seq - 1;
	}
	if (s->next_seq == 0)
		s->next_seq = 1;
	/* The chain continues from the newest record the bridge can ever learn of: one on disk, one
	 * it acknowledged, one reported dropped, or the last one appended before the restart (its
	 * segment may be gone, deleted by a selective ack). A record cut off as torn was never
	 * sent. Going backwards would fork the chain at the bridge. */
	s->last_durable = newest > s->acked_upto ? newest : s->acked_upto;
	if (was_durable > s->last_durable)
		s->last_durable = was_durable;
	for (size_t i = 0; i < s->npending; i++)
		if (s->pending[i].d.last_seq > s->last_durable)
			s->last_durable = s->pending[i].d.last_seq;
	s->seq_reserved = s->next_seq; /* forces a reservation before the first use */
	/* drop segments that were acknowledged before the crash */
	for (size_t i = 0; i < s->nsegs;) {
		if (s->segs[i].count && s->segs[i].last_seq <= s->acked_upto)
			spool_remove_seg(s, i);
		else
			i++;
	}
	/* without a state, nothing is known below the oldest record; with one, only a drop it
	 * could not record left a stretch there (segments acknowledged by ranges go at once) */
	if (st == 0 && !drops_marker(s, -1))
		report_unrecorded_drops(s);
	rc = state_write(s);
	if (rc == DEV_SPOOL_ENOSPC) {
		/* A full disk: open anyway, so the backlog can go out and its acks free space.
		 * No seq is handed out before a state write succeeds (take_seq), and the damage
		 * found waits for it too: the state reports it before the evidence goes. */
		s->repair_pending = 1;
		rc = DEV_SPOOL_OK;
	} else if (rc) {
		reason = "cannot write the state file";
		goto fail;
	} else {
		spool_repair_segments(s);
	}
	enforce_limits(s);
	*out = s;
	return DEV_SPOOL_OK;
fail:
	if (why)
		*why = reason;
	int e = errno; /* for the caller's message */
	dev_spool_close(s);
	errno = e;
	return rc;
}

void dev_spool_close(struct dev_spool *s)
{
	if (!s)
		return;
	if (s->rng_ready && s->aes_ready && s->next_seq) {
		/* a clean close gives back the unused part of the reserved block */
		s->seq_reserved = s->next_seq;
		state_write(s);
	}
	for (size_t i = 0; i < s->nsegs; i++)
		if (s->segs[i].fd >= 0)
			close(s->segs[i].fd);
	if (s->aes_ready)
		wc_AesFree(&s->aes);
	if (s->rng_ready)
		wc_FreeRng(&s->rng);
	explicit_bzero(s->key, sizeof(s->key));
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* last: the state is written */
	free(s->segs);
	free(s->ranges);
	free(s->rerr_path);
	free(s->dir);
	free(s);
}

int dev_spool_take_seq(struct dev_spool *s, uint64_t *seq)
{
	if (s->next_seq >= s->seq_reserved) {
		uint64_t keep = s->seq_reserved;
		s->seq_reserved = s->next_seq + SEQ_BLOCK;
		int rc = state_write(s);
		if (rc) {
			s->seq_reserved = keep;
			return rc;
		}
		if (s->repair_pending) { /* before anything is appended after a torn tail */
			s->repair_pending = 0;
			spool_repair_segments(s);
		}
	}
	*seq = s->next_seq++;
	return DEV_SPOOL_OK;
}


int dev_spool_append(struct dev_spool *s, uint64_t seq, uint64_t prev_seq, uint32_t kind,
		     int64_t t_ms, const uint8_t *env, size_t len)
{
	uint8_t hb[HDR_LEN];
	uint8_t *rec = NULL;
	int rc;

	if (!s || !env || len == 0 || seq == 0 || seq >= s->next_seq || seq <= s->last_durable ||
	    prev_seq != s->last_durable)
		return DEV_SPOOL_EINVAL;
	if (len > MAX_REC_PAYLOAD)
		return DEV_SPOOL_ETOOBIG;
	size_t rec_len = REC_OVERHEAD + len;
	struct seg *g = s->nsegs ? &s->segs[s->nsegs - 1] : NULL;
	if (!g || g->sealed ||
	    (g->bytes && g->bytes + rec_len > (uint64_t)s->opts.segment_bytes)) {
		rc = spool_new_segment(s, seq);
		if (rc)
			return rc;
		g = &s->segs[s->nsegs - 1];
	}
	if (spool_seg_fd(s, g) < 0)
		return DEV_SPOOL_EIO;

	struct hdr h = {(uint32_t)len, seq, prev_seq, t_ms, kind};
	spool_hdr_encode(&h, hb);
	rec = malloc(rec_len);
	if (!rec)
		return DEV_SPOOL_ENOMEM;
	memcpy(rec, hb, HDR_LEN);
	if (wc_RNG_GenerateBlock(&s->rng, rec + HDR_LEN, NONCE_LEN) != 0 ||
	    wc_AesGcmEncrypt(&s->aes, rec + HDR_LEN + NONCE_LEN, env, (word32)len, rec + HDR_LEN,
			     NONCE_LEN, rec + HDR_LEN + NONCE_LEN + len, TAG_LEN, hb, HDR_LEN) != 0) {
		free(rec);
		return DEV_SPOOL_ECRYPTO;
	}
	if (lseek(g->fd, (off_t)g->bytes, SEEK_SET) < 0) {
		free(rec);
		return DEV_SPOOL_EIO;
	}
	rc = spool_write_all(g->fd, rec, rec_len);
	if (!rc && fdatasync(g->fd) != 0)
		rc = spool_io_err();
	free(rec);
	if (rc) {
		/* leave no torn record behind: the next append starts at the same offset */
		int e = errno;
		if (ftruncate(g->fd, (off_t)g->bytes) == 0)
			fdatasync(g->fd);
		errno = e;
		if (g->bytes == 0 && s->nsegs)
			spool_remove_seg(s, s->nsegs - 1);
		return rc;
	}
	if (g->count == 0) {
		g->first_seq = seq;
		g->first_prev = prev_seq;
	}
	g->last_seq = seq;
	g->t_last = t_ms;
	g->count++;
	g->bytes += rec_len;
	s->total_bytes += rec_len;
	s->last_durable = seq;
	if (g->count == 1 && s->nsegs > 1) {
		/* the segment before, acknowledged by ranges only, was kept while it was the newest
		 * (dev_spool_ack); this one now holds a durable record, so it may go */
		struct seg *p = &s->segs[s->nsegs - 2];
		if (spool_range_covers(s, p->first_seq, p->last_seq))
			spool_remove_seg(s, s->nsegs - 2);
	}
	enforce_limits(s);
	maybe_persist(s);
	return DEV_SPOOL_OK;
}

/* Segment i is acknowledged and may go. The newest segment, acknowledged by ranges only, stays
 * until the first record of a newer one is durable (dev_spool_append). Deleted, it would send
 * the next appends into the segment before it, and a torn append there would look, at the next
 * open (ranges are not persisted), like the loss of the records it held. */
static int seg_acked(const struct dev_spool *s, size_t i)
{
	const struct seg *g = &s->segs[i];
	int newest_by_ranges = i + 1 == s->nsegs && g->last_seq > s->acked_upto;
	return !newest_by_ranges && spool_range_covers(s, g->first_seq, g->last_seq);
}

/* Delete the acknowledged segments but, with keep_newest, the one holding the newest record
 * (holds_newest); 1 if it was kept. */
static int remove_acked(struct dev_spool *s, int keep_newest)
{
	int kept = 0;
	for (size_t i = 0; i < s->nsegs;) {
		if (!seg_acked(s, i)) {
			i++;
		} else if (keep_newest && holds_newest(s, i)) {
			kept = 1;
			i++;
		} else {
			spool_remove_seg(s, i);
		}
	}
	return kept;
}

/* 1 if a segment may still hold a record of dropped link d that the ack point does not cover. */
static int still_held(const struct dev_spool *s, const struct wire_dropped *d)
{
	if (d->last_seq <= s->acked_upto)
		return 0;
	for (size_t k = 0; k < s->nsegs; k++) {
		const struct seg *g = &s->segs[k];
		if (g->count && g->first_seq <= d->last_seq && g->last_seq > d->prev_seq)
			return 1;
	}
	return 0;
}

int dev_spool_ack(struct dev_spool *s, uint64_t upto, const uint64_t (*ranges)[2],
		  size_t nranges)
{
	uint64_t before = s->acked_upto;
	size_t nr_before = s->nranges;
	/* A seq at or above next_seq was never handed out by this spool: the ack is another life's
	 * (a device re-installed with an empty state directory and a clock before 2020 numbers
	 * from 1 again, while the bridge acknowledges its frontier for the id, far higher, even
	 * as it refuses the batches as too_old). Capped to last_durable, it would delete the whole
	 * backlog, unsent. */
	int future = upto >= s->next_seq;
	for (size_t i = 0; i < nranges; i++)
		future |= ranges[i][1] >= s->next_seq;
	if (future)
		return DEV_SPOOL_EFUTURE;
	/* Seqs in (last_durable, next_seq) were handed out: to envelopes that are not spooled
	 * (Birth, poll), or before the state file was lost (numbering then resumes far above the
	 * newest record on disk). What the bridge stored of them acknowledges every record, and
	 * never what was not written. */
	if (upto > s->last_durable)
		upto = s->last_durable;
	if (upto > s->acked_upto)
		s->acked_upto = upto;
	for (size_t i = 0; i < nranges; i++)
		add_range(s, ranges[i][0], ranges[i][1] > s->last_durable ? s->last_durable : ranges[i][1]);
	prune_ranges(s);
	/* A dropped range is settled once the envelope that reported it is acknowledged, but not
	 * while a segment may still hold a record of it above the ack point: a range acknowledging
	 * that record is not kept across a restart, and the link alone keeps it from being
	 * delivered then (spool_reported), should its bad block have become readable. */
	size_t n = 0;
	for (size_t i = 0; i < s->npending; i++) {
		const struct pending *p = &s->pending[i];
		int carried = p->reported_in && dev_spool_is_acked(s, p->reported_in);
		if (!carried || still_held(s, &p->d))
			s->pending[n++] = *p;
	}
	int changed = n != s->npending;
	s->npending = n;
	if (s->acked_upto != before || s->nranges != nr_before)
		s->state_dirty = 1;
	/* Acknowledged segments go at once, but the one holding the newest record only once the
	 * state is on disk (holds_newest); deleting the others first frees the room that writing
	 * the state may need. */
	size_t nsegs = s->nsegs;
	int kept = remove_acked(s, 1);
	if (!changed && !kept && s->nsegs == nsegs) {
		maybe_persist(s);
		return DEV_SPOOL_OK;
	}
	/* Not written, the segment holding the newest record stays; the next ack tries again. */
	int rc = state_write(s);
	if (!rc && kept)
		remove_acked(s, 0);
	return rc;
}

/* Record h at `here` in segment i failed its tag (bit rot): report it, and what other damage in
 * the segment hides, as dropped, durably, then cut the damage out of the segment so that no
 * later read reports it again (the rewrite reports what it leaves out: damage no walk has
 * reached yet hides records that would otherwise vanish unreported, a hole the bridge waits on
 * for ever). A rewrite that fails keeps it on disk: read again, it is not reported again
 * (add_pending). */
static void drop_rotten(struct dev_spool *s, size_t i, struct dev_spool_cursor *c,
			const struct hdr *h, uint64_t here)
{
	struct seg *g = &s->segs[i];
	(void)c; /* its offset goes stale with the rewrite: the next read finds its place by seq */
	if (!dev_spool_is_acked(s, h->seq)) /* a resend task reads acknowledged records too */
		spool_report_lost(s, h->prev_seq, h->seq);
	if (spool_seg_rewrite(s, g, g->bytes, here, state_write)) {
		state_write(s);
		return;
	}
	if (g->count == 0 && i + 1 < s->nsegs)
		spool_remove_seg(s, i);
}

/* A read of segment i failed with DEV_SPOOL_EIO (errno says why) outside a record or window
 * (the segment cannot be opened, an error that is not damage). Damage (a bad block:
 * spool_unreadable) is handled as rot: all the segment holds, unless acknowledged, is reported as
 * dropped, durably (records a reader returned before the error may not be acknowledged yet, and a
 * reader that started inside the segment never read those below it); the cursor moves past the
 * segment, and the segment goes (the newest stays, but the next append starts a new one: records
 * appended after the damage must not be reported with it). A state write that fails keeps it on
 * disk: read again, it is not reported again (add_pending). DEV_SPOOL_ECORRUPT then; DEV_SPOOL_EIO
 * (errno kept) for an error that is not damage (EMFILE...), which leaves the cursor where it was
 * for the next call. */
static int drop_unreadable(struct dev_spool *s, size_t i, struct dev_spool_cursor *c)
{
	struct seg *g = &s->segs[i];
	int e = errno;
	spool_note_read_error(s, g, e, spool_unreadable(e));
	if (!spool_unreadable(e)) {
		errno = e;
		return DEV_SPOOL_EIO;
	}
	spool_report_lost(s, spool_acked_from(s, g->first_prev), g->last_seq);
	g->sealed = 1;
	c->next_seq = g->last_seq + 1;
	c->seg_name = g->name;
	c->gen = s->layout_gen;
	c->off = g->bytes;
	if (!state_write(s) && i + 1 < s->nsegs)
		spool_remove_seg(s, i);
	return DEV_SPOOL_ECORRUPT;
}

/* 1 for a rewrite's failure that may pass by itself (out of descriptors or memory): the read
 * is tried again later, where a failure that will not pass (a full disk, a write error, a
 * directory in the way) must not stop the reader at the damage. A read-only remount (EROFS)
 * does not pass by itself: a card ext4 remounted so after an I/O error stays so until someone
 * remounts it, and the backlog would wait at the damage until then. */
static int passing(int rc, int e)
{
	return rc == DEV_SPOOL_ENOMEM || e == EMFILE || e == ENFILE || e == ENOMEM ||
	       e == EAGAIN || e == ENOBUFS || e == EINTR;
}

enum { DAMAGE_KEPT = 2 };

/* Bytes of segment i could not be read (a bad block: s->unread_hits moved), in the record h at
 * `here` (NULL: where a walk resynchronised past them). Only what they hold is lost: the
 * segment is rewritten without the records that cannot all be read, and what it leaves out,
 * unless acknowledged, is reported as dropped, durably, before the rename (spool_seg_rewrite);
 * the bad block is not read again. The reader finds its place by seq: DEV_SPOOL_ECORRUPT.
 * A rewrite that fails before its state write takes back what it reported (one that fails
 * after it keeps it, on disk: DAMAGE_KEPT, the segment sealed). For a failure that may pass
 * (EMFILE, ENOMEM...: passing) the cursor goes back to `start` and the error is returned
 * (DEV_SPOOL_EIO with errno, DEV_SPOOL_ENOMEM): nothing is lost, the read is tried again.
 * For one that will not (a full disk, a write error) DAMAGE_KEPT: the reader passes over the
 * damage where it is, reporting what it hides as it goes, as over rot met since the open, and
 * the bad block stays (read again, it is not reported again: add_pending). */
static int drop_damage(struct dev_spool *s, size_t i, struct dev_spool_cursor *c,
		       const struct dev_spool_cursor *start, const struct hdr *h, uint64_t here)
{
	struct seg *g = &s->segs[i];
	struct pending saved[MAX_PENDING];
	size_t npending = s->npending;
	uint64_t dropped_total = s->dropped_total;
	uint64_t writes = s->state_writes;
	int e = s->unread_errno;
	memcpy(saved, s->pending, sizeof(saved));
	if (h && !dev_spool_is_acked(s, h->seq))
		spool_report_damage(s, g, h->prev_seq, h->seq);
	int rc = spool_rewrite_reporting(s, g, g->bytes, h ? here : UINT64_MAX);
	if (!rc) {
		spool_note_read_error(s, g, e, 1);
		if (g->count == 0 && i + 1 < s->nsegs)
			spool_remove_seg(s, i);
		return DEV_SPOOL_ECORRUPT;
	}
	int we = errno;
	if (s->state_writes != writes) {
		/* its report is on disk (the fdatasync or the rename failed): it stands, and the
		 * reader passes over what it reported */
		spool_note_read_error(s, g, e, 1);
		g->sealed = g->kept = 1;
		return DAMAGE_KEPT;
	}
	memcpy(s->pending, saved, sizeof(saved)); /* h's report too */
	s->npending = npending;
	s->dropped_total = dropped_total;
	if (passing(rc, we)) {
		spool_note_read_error(s, g, we, 0);
		*c = *start;
		errno = we;
		return rc == DEV_SPOOL_ENOMEM ? rc : DEV_SPOOL_EIO;
	}
	spool_note_read_error(s, g, e, 1);
	/* appends go to a new segment: past the damage the reader may take the rest of this one
	 * as unreadable to its end (the walk's failing reads at their cap), and reports it lost */
	g->sealed = g->kept = 1;
	return DAMAGE_KEPT;
}

int dev_spool_next(struct dev_spool *s, struct dev_spool_cursor *c, int skip_acked,
		   struct dev_spool_rec *rec, uint8_t **env, size_t *len)
{
	const struct dev_spool_cursor start = *c;
	for (size_t i = 0; i < s->nsegs; i++) {
		struct seg *g = &s->segs[i];
		if (g->last_seq < c->next_seq)
			continue;
		if (skip_acked && spool_range_covers(s, g->first_seq, g->last_seq))
			continue;
		int resume = c->seg_name == g->name && c->gen == s->layout_gen;
		uint64_t off = resume ? c->off : 0;
		/* seq of the record before: the one the cursor returned last, or the chain's link
		 * into the segment; damage before the first record met hid what lies between (what
		 * of it is not acknowledged: a resend task reads acknowledged records too) */
		uint64_t seen = resume && c->next_seq ? c->next_seq - 1 : g->first_prev;
		int fd = spool_seg_fd(s, g);
		if (fd < 0)
			return drop_unreadable(s, i, c);
		if (!resume) { /* resumed: the same walk, its budget spent so far */
			spool_walk_start(s);
			g->kept = 0;
		}
		while (off < g->bytes) {
			struct hdr h;
			uint64_t here;
			uint64_t hits = s->unread_hits;
			int r = spool_next_good(s, fd, off, g->bytes, 0, &here, &h);
			if (r == DEV_SPOOL_EIO)
				return drop_unreadable(s, i, c);
			if (r < 0)
				return r;
			/* past bytes that cannot be read (its rewrite failed in this walk: kept) */
			if (s->unread_hits != hits && !g->kept) {
				int d = drop_damage(s, i, c, &start, NULL, UINT64_MAX);
				if (d != DAMAGE_KEPT)
					return d; /* else kept: what it hid is reported below */
			}
			if (r) { /* damage since the open hid the segment's tail: lost */
				spool_report_lost(s, spool_acked_from(s, seen), g->last_seq);
				break;
			}
			if (here != off) /* damage since the open: what it hid is lost */
				spool_report_damage(s, g, spool_acked_from(s, seen), h.prev_seq);
			seen = h.seq;
			off = here + REC_OVERHEAD + h.len;
			/* one reported dropped is never delivered: a walk past damage may have reported
			 * it while it is still in the file (a rewrite that cannot be made, a power cut
			 * between the state write and the rename, a walk's failed reads at their cap),
			 * and the error may have cleared since */
			if (h.seq < c->next_seq || (skip_acked && dev_spool_is_acked(s, h.seq)) ||
			    spool_reported(s, h.seq))
				continue;
			uint8_t *plain = NULL;
			c->next_seq = h.seq + 1;
			c->seg_name = g->name;
			c->gen = s->layout_gen;
			c->off = off;
			r = spool_read_rec(s, fd, here, g->bytes, &h, &plain);
			if (r == DEV_SPOOL_ECORRUPT || r == 1) {
				drop_rotten(s, i, c, &h, here);
				return DEV_SPOOL_ECORRUPT;
			}
			if (r == DEV_SPOOL_EIO && spool_unreadable(errno)) {
				r = g->kept ? DAMAGE_KEPT : drop_damage(s, i, c, &start, &h, here);
				if (r != DAMAGE_KEPT)
					return r;
				if (!dev_spool_is_acked(s, h.seq)) /* kept: it is lost */
					spool_report_damage(s, g, h.prev_seq, h.seq);
				continue;
			}
			if (r == DEV_SPOOL_EIO) {
				int e = errno;
				*c = start; /* left for a retry unless it is damage */
				errno = e;
				return drop_unreadable(s, i, c);
			}
			if (r)
				return r;
			*rec = (struct dev_spool_rec){h.seq, h.prev_seq, h.kind, h.t_ms};
			*env = plain;
			*len = h.len;
			return 0;
		}
	}
	return 1;
}

int dev_spool_count(struct dev_spool *s, uint64_t first, uint64_t last, uint64_t *n)
{
	uint64_t count = 0;
	for (size_t i = 0; i < s->nsegs; i++) {
		struct seg *g = &s->segs[i];
		if (!g->count || g->last_seq < first || g->first_seq > last)
			continue;
		if (first <= g->first_seq && g->last_seq <= last) {
			count += g->count; /* all of it: the index knows */
			continue;
		}
		/* where the range begins or ends: the headers say which records are in it */
		int fd = spool_seg_fd(s, g);
		uint64_t off = 0, at;
		struct hdr h;
		if (fd < 0)
			return DEV_SPOOL_EIO;
		int walk_fails = s->walk_fails, r = 0; /* a walk of its own: the reader's is kept */
		spool_walk_start(s);
		while (off < g->bytes) {
			r = spool_next_good(s, fd, off, g->bytes, 0, &at, &h);
			if (r || h.seq > last)
				break;
			off = at + REC_OVERHEAD + h.len;
			count += h.seq >= first;
		}
		s->walk_fails = walk_fails;
		if (r < 0)
			return r;
	}
	*n = count;
	return DEV_SPOOL_OK;
}

void dev_spool_stats(const struct dev_spool *s, struct dev_spool_stats *st)
{
	struct dev_spool *m = (struct dev_spool *)s; /* reads headers; changes nothing visible */
	memset(st, 0, sizeof(*st));
	st->bytes = s->total_bytes;
	st->segments = s->nsegs;
	st->dropped_total = s->dropped_total;
	st->chain_floor = s->last_durable;
	int walk_fails = s->walk_fails; /* walks of its own: the reader's budget is kept */
	for (size_t i = 0; i < s->nsegs; i++) {
		struct seg *g = &m->segs[i];
		if (spool_range_covers(s, g->first_seq, g->last_seq))
			continue;
		int fd = spool_seg_fd(m, g);
		uint64_t off = 0, at;
		struct hdr h;
		spool_walk_start(m);
		while (fd >= 0 && off < g->bytes && !spool_next_good(m, fd, off, g->bytes, 0, &at, &h)) {
			off = at + REC_OVERHEAD + h.len;
			if (dev_spool_is_acked(s, h.seq))
				continue;
			if (!st->records) {
				st->oldest_unsent_ms = h.t_ms;
				st->chain_floor = h.prev_seq;
				st->first_unacked = h.seq;
			}
			st->records++;
		}
	}
	m->walk_fails = walk_fails;
	/* A drop not yet acknowledged is a link the bridge may not have: the floor stays below it,
	 * or a restart after an overflow would look like a wiped device (PROTOCOL.md §2). */
	for (size_t i = 0; i < s->npending; i++)
		if (s->pending[i].d.prev_seq < st->chain_floor)
			st->chain_floor = s->pending[i].d.prev_seq;
	/* ... but not below what a bridge acknowledged (a drop it learnt of, whose carrier's
	 * ack went missing, is still pending) */
	if (st->chain_floor < s->acked_upto)
		st->chain_floor = s->acked_upto;
}

void dev_spool_read_error(const struct dev_spool *s, struct dev_spool_read_error *out)
{
	*out = (struct dev_spool_read_error){s->rerr_count, s->rerr_path, s->rerr_errno,
					     s->rerr_dropped};
}

/* Which links a batch carries when they do not all fit: first the ones no envelope in the spool
 * carries (add_pending forgets a carrier that is dropped), then the ones whose carrier is not
 * acknowledged yet (it carries them itself when it is sent again), last the held ones (their
 * carrier is acknowledged: the bridge has them). */
static int carry_rank(const struct dev_spool *s, const struct pending *p)
{
	if (!p->reported_in)
		return 0;
	return dev_spool_is_acked(s, p->reported_in) ? 2 : 1;
}

size_t dev_spool_dropped(const struct dev_spool *s, struct wire_dropped *out, size_t cap)
{
	size_t n = 0;
	for (int rank = 0; rank < 3; rank++)
		for (size_t i = 0; i < s->npending && n < cap; i++)
			if (carry_rank(s, &s->pending[i]) == rank)
				out[n++] = s->pending[i].d;
	return n;
}

static int same_range(const struct wire_dropped *a, const struct wire_dropped *b)
{
	return a->prev_seq == b->prev_seq && a->last_seq == b->last_seq && a->count == b->count;
}

void dev_spool_dropped_reported(struct dev_spool *s, uint64_t seq, const struct wire_dropped *sent,
				size_t n)
{
	for (size_t i = 0; i < s->npending; i++) {
		if (s->pending[i].reported_in)
			continue;
		/* A range that grew (or was added) while `seq` was appended is not what `seq`
		 * carries: it waits for the next envelope. */
		for (size_t j = 0; j < n; j++) {
			if (same_range(&s->pending[i].d, &sent[j])) {
				s->pending[i].reported_in = seq;
				s->state_dirty = 1;
				break;
			}
		}
	}
}
