/* dev_spool_recover.c - opening a spool after a crash: torn tails cut, bit rot skipped and
 * reported as dropped, the damage mended once the report is on disk. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev_spool_int.h"

/* Recovery's view of the chain across segments, to report what damage destroyed. */
struct scan {
	uint64_t durable;   /* the last seq the state file says was appended (0: unknown) */
	uint64_t last;	    /* seq of the last intact record so far */
	int gap;	    /* records were lost after gap_prev... */
	uint64_t gap_prev;
	uint64_t gap_bound; /* ...and below the next segment's name (when nothing intact follows) */
};

static int seg_cmp(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;
	return (x->name > y->name) - (x->name < y->name);
}

/* Damage in a segment that was complete (not a torn write at the very end of the spool). */
static void scan_lost(const struct dev_spool *s, struct scan *sc, size_t seg_index)
{
	/* nothing intact since a gap already open: it reaches into this segment too */
	sc->gap_bound = seg_index + 1 < s->nsegs ? s->segs[seg_index + 1].name - 1 : 0;
	if (sc->gap)
		return;
	sc->gap = 1;
	sc->gap_prev = sc->last > s->acked_upto ? sc->last : s->acked_upto;
}

/* The chain resumes at an intact record linking to `upto`: what lies between was lost. */
static void scan_resumed(struct dev_spool *s, struct scan *sc, uint64_t upto)
{
	if (!sc->gap)
		return;
	sc->gap = 0;
	if (upto > sc->gap_prev && !spool_range_covers(s, sc->gap_prev + 1, upto))
		spool_report_lost(s, sc->gap_prev, upto);
}

/* A read of segment g failed with DEV_SPOOL_EIO: 1 if errno says the data is damaged (a bad
 * block), handled as bit rot, after noting it; 0 if not (EMFILE...): the open fails. */
static int unreadable(struct dev_spool *s, const struct seg *g)
{
	int e = errno;
	if (!spool_unreadable(e))
		return 0;
	spool_note_read_error(s, g, e, 1);
	return 1;
}

/* Scan segment i's headers, filling it. The newest segment may end in a torn write (a short
 * record, a bad header, or a last record whose body fails its tag): that tail is cut, silently,
 * as it was never durable (unless the state file says that record was: then it is rot). Anywhere
 * else damage is bit rot: the intact records around it are kept and the lost stretch is reported
 * as dropped. Bytes that cannot be read (EIO from a bad block: spool_unreadable) are rot too,
 * in any segment: spool_next_good resynchronises past them (what they hid is reported, the
 * records after them kept); unreadable up to the segment's end, what lies from them to the end
 * is lost (a segment that cannot be opened holds nothing intact: it is removed); in the newest,
 * up to the last seq the state reserved (nothing above it was appended, and the chain must
 * resume above all that was).
 * Mending the file waits for repair_segments, after the state that reports the loss is on
 * disk: a power cut in between must not lose the report. */
static int scan_seg(struct dev_spool *s, size_t i, struct scan *sc)
{
	struct seg *g = &s->segs[i];
	int newest = i + 1 == s->nsegs, fd = spool_seg_fd(s, g), damaged = 0, rotten = 0;
	int bad = 0; /* a read error cut the scan short */
	struct stat st;
	uint64_t end = 0;
	if (fd < 0 || fstat(fd, &st) != 0) {
		if (!unreadable(s, g))
			return DEV_SPOOL_EIO;
		bad = 1;
	} else {
		end = (uint64_t)st.st_size;
	}
	uint64_t off = 0, last_off = 0, sc_before = sc->last;
	uint64_t before_seq = 0;
	int64_t before_t = 0;
	g->count = 0;
	g->bytes = end;
	s->total_bytes += end;
	spool_walk_start(s);
	while (off < end) {
		struct hdr h;
		uint64_t at;
		uint64_t hits = s->unread_hits;
		int r = spool_next_good(s, fd, off, end, g->count ? g->last_seq : 0, &at, &h);
		if (r == DEV_SPOOL_EIO && unreadable(s, g)) {
			bad = 1;
			break;
		}
		if (r < 0)
			return r;
		if (s->unread_hits != hits) /* past bytes that cannot be read: damage, noted */
			spool_note_read_error(s, g, s->unread_errno, 1);
		if (r) {
			bad |= s->unread_hits != hits; /* the tail cannot be read: not torn */
			break;
		}
		uint64_t link = h.prev_seq; /* the chain's link into the segment */
		if (at != off) {
			/* Damage in the segment: the repair's rewrite reports what it leaves out, as
			 * it reads it then (the error may have cleared: what it reads it keeps). Not
			 * reported here: that would make a record it keeps both delivered and
			 * reported dropped. At the segment's start, what an earlier segment's
			 * unreadable tail lost (below this one's name; that tail is cut, not read
			 * again) is reported now, and the rewrite reports from there. */
			damaged = 1;
			if (g->count == 0) {
				uint64_t below = g->name - 1;
				/* name - 1 is a durable record's seq only when the chain up to it
				 * is reported lost (a poll or a Birth may have taken it): else the
				 * link starts at the last record met, or the ack point */
				if (sc->gap && below > sc->gap_prev) {
					scan_resumed(s, sc, below);
					link = below;
				} else {
					link = sc->gap ? sc->gap_prev : sc->last;
				}
				if (sc->last > link)
					link = sc->last;
				if (s->acked_upto > link)
					link = s->acked_upto;
				sc->gap = 0;
				if (link > h.prev_seq)
					link = h.prev_seq;
			}
		}
		if (spool_reported(s, h.seq))
			damaged = 1; /* reported before a power cut cut it out: it goes now */
		scan_resumed(s, sc, h.prev_seq);
		if (g->count == 0) {
			g->first_seq = h.seq;
			g->first_prev = link;
		}
		before_seq = g->last_seq;
		before_t = g->t_last;
		sc_before = sc->last;
		last_off = at;
		g->last_seq = h.seq;
		g->t_last = h.t_ms;
		g->count++;
		sc->last = h.seq;
		off = at + REC_OVERHEAD + h.len;
	}
	if ((off < end || bad) && !newest)
		scan_lost(s, sc, i);
	if (newest && g->count && !bad) {
		uint8_t *env = NULL;
		struct hdr h;
		int r = spool_read_rec(s, fd, last_off, off, &h, &env);
		free(env);
		if (r == DEV_SPOOL_EIO && unreadable(s, g)) {
			/* not torn: the bytes are there, the medium cannot give them back */
			bad = 1;
			rotten = 1;
			uint64_t prev = g->count > 1 ? before_seq : g->first_prev;
			spool_report_lost(s, prev, g->last_seq);
			r = DEV_SPOOL_ECORRUPT;
		}
		if (r == DEV_SPOOL_ECORRUPT || r == 1) {
			if (!rotten && h.seq <= sc->durable) { /* durable: rot, not a torn write */
				spool_report_lost(s, h.prev_seq, h.seq);
				rotten = 1;
			}
			off = last_off;
			g->last_seq = --g->count ? before_seq : g->first_seq;
			g->t_last = before_t;
			sc->last = sc_before;
		} else if (r) {
			return r;
		}
	}
	uint64_t from = sc->last > s->acked_upto ? sc->last : s->acked_upto, upto = sc->durable;
	if (bad && s->seq_reserved > upto + 1) /* the state's reservation: appends stayed below */
		upto = s->seq_reserved - 1;
	if (newest && (off < end || bad) && !rotten && g->name <= upto && upto > from &&
	    !spool_range_covers(s, from + 1, upto)) {
		/* the tail's header is damaged, but the state file says records of this segment
		 * up to `durable` were appended (fdatasync'd) and not acknowledged: rot, not a
		 * torn write (or it cannot be read: whatever it held up to `upto` is lost) */
		spool_report_lost(s, from, upto);
		rotten = 1;
	}
	if (newest && bad)
		g->sealed = 1; /* appends go to a new segment, not beside the bad block */
	if (damaged)
		g->repair = REPAIR_REWRITE;
	else if (off < end && (!newest || rotten || bad))
		g->repair = REPAIR_CUT;
	else if (off < end && (ftruncate(fd, (off_t)off) != 0 || fdatasync(fd) != 0))
		return DEV_SPOOL_EIO; /* a torn write: nothing to report, cut now */
	g->repair_to = off;
	s->total_bytes -= end - off;
	g->bytes = off;
	return DEV_SPOOL_OK;
}

/* Mend what scan_seg found, now that the state reporting it is on disk. A failure leaves the
 * damage in place, which readers skip (next_good). */
void spool_repair_segments(struct dev_spool *s)
{
	for (size_t i = 0; i < s->nsegs;) {
		struct seg *g = &s->segs[i];
		int how = g->repair, fd = how ? spool_seg_fd(s, g) : -1;
		g->repair = REPAIR_NONE;
		if (how == REPAIR_REMOVE) {
			spool_remove_seg(s, i);
			continue;
		}
		/* A rewrite that fails leaves the damage, and reports nothing of it: a reader that
		 * meets it reports it then (or delivers what has become readable). */
		if (how == REPAIR_REWRITE && !spool_rewrite_reporting(s, g, g->repair_to, UINT64_MAX) &&
		    g->count == 0 && i + 1 < s->nsegs) {
			spool_remove_seg(s, i);
			continue;
		}
		if (how == REPAIR_CUT && fd >= 0 && ftruncate(fd, (off_t)g->repair_to) == 0)
			fdatasync(fd);
		i++;
	}
}

int spool_load_segments(struct dev_spool *s, uint64_t durable)
{
	DIR *d = opendir(s->dir);
	struct dirent *e;
	if (!d)
		return DEV_SPOOL_EIO;
	while ((e = readdir(d))) {
		uint64_t first;
		if (spool_seg_parse(e->d_name, 1, &first)) {
			/* a rewrite cut short by a crash: the segment it copied is intact */
			unlinkat(dirfd(d), e->d_name, 0);
			continue;
		}
		/* Only names as the spool writes them: a stray file such as seg-1.log would name a
		 * segment whose file (seg-00000000000000000001.log) does not exist, and the spool
		 * would not open at all. Other files are not ours: left alone. */
		if (!spool_seg_parse(e->d_name, 0, &first))
			continue;
		struct seg g = {.name = first, .first_seq = first, .fd = -1};
		if (spool_push_seg(s, &g)) {
			closedir(d);
			return DEV_SPOOL_ENOMEM;
		}
	}
	closedir(d);
	if (s->nsegs > 1)
		qsort(s->segs, s->nsegs, sizeof(*s->segs), seg_cmp);
	struct scan sc = {.durable = durable};
	for (size_t i = 0; i < s->nsegs; i++) {
		int rc = scan_seg(s, i, &sc);
		if (rc)
			return rc;
		if (s->segs[i].count == 0) /* nothing intact to keep */
			s->segs[i].repair = REPAIR_REMOVE;
	}
	if (sc.gap && sc.gap_bound > sc.gap_prev)
		scan_resumed(s, &sc, sc.gap_bound); /* nothing intact after the damage */
	return DEV_SPOOL_OK;
}
