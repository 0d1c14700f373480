/* dev_spool_int.h - what the files of the spool module share, and nothing else may use:
 *   dev_spool.c          the queue: sequence numbers, acks, dropped ranges, state, limits, API
 *   dev_spool_seg.c      segment files and the records in them (read, resync, rewrite)
 *   dev_spool_recover.c  what opening does after a crash or bit rot
 * Layout and rules: dev_spool.h. */
#ifndef DEV_SPOOL_INT_H
#define DEV_SPOOL_INT_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/random.h>

#include "dev_spool.h"

#define REC_MAGIC 0x3152504fu	/* "OPR1" little-endian */
#define STATE_MAGIC 0x5453504fu /* "OPST" */
#define STATE_VERSION 1u
#define HDR_LEN 48
#define NONCE_LEN 12
#define TAG_LEN 16
#define KEY_LEN 32
#define REC_OVERHEAD (HDR_LEN + NONCE_LEN + TAG_LEN)
#define MAX_REC_PAYLOAD (1u << 20)
#define SEQ_BLOCK 1024	       /* seqs reserved on disk per state write */
#define SEQ_LOST_STATE (1u << 20) /* skipped when the state file is missing or malformed */
#define SEQ_CLOCK_MS 250	       /* a new spool's first seq counts quarter-seconds */
#define MAX_ACK_RANGES 256
#define MAX_PENDING DEV_SPOOL_MAX_DROPPED
#define STATE_PERSIST_MS 5000 /* ack position is persisted at most this often */
/* Time stamps before this were taken with an unset clock (a device booting without a real-time
 * clock, before NTP): their age is unknown. Also where clock-based numbering starts. */
#define CLOCK_SET_MS 1577836800000LL /* 2020-01-01T00:00:00Z */

struct seg {
	uint64_t name; /* seq in the file name: the first record's when it was created */
	uint64_t first_seq;
	uint64_t first_prev; /* the first record's prev_seq: the chain's link into the segment */
	uint64_t last_seq;
	uint64_t count;
	uint64_t bytes;
	int64_t t_last;
	int fd;
	/* damage found at open, mended once the state that reports it is on disk */
	enum { REPAIR_NONE, REPAIR_REWRITE, REPAIR_CUT, REPAIR_REMOVE } repair;
	uint64_t repair_to; /* intact records end here */
	int sealed; /* a read error met it at run time: appends go to a new segment */
	int kept;   /* its rewrite failed in the reader's walk under way: not tried again in it */
};

struct pending {
	struct wire_dropped d;
	uint64_t reported_in; /* durable seq that carried it, 0 = not yet */
};

struct dev_spool {
	char *dir;
	int lock_fd; /* the directory, flock'd while the spool is open (-1 before) */
	struct dev_spool_opts opts;
	uint8_t key[KEY_LEN];
	Aes aes;
	WC_RNG rng;
	int aes_ready, rng_ready;

	struct seg *segs;
	size_t nsegs, cap_segs;
	uint64_t total_bytes;

	uint64_t next_seq;     /* next seq to hand out */
	uint64_t seq_reserved; /* seqs < this are reserved on disk */
	uint64_t last_durable;
	uint64_t acked_upto;
	uint64_t (*ranges)[2];
	size_t nranges;
	uint64_t dropped_total;
	struct pending pending[MAX_PENDING];
	size_t npending;
	int64_t state_written_ms;
	uint64_t state_writes; /* state files written: a failure after one keeps what it reports */
	int state_dirty;
	int drops_unrecorded; /* <dir>/drops-unrecorded is on disk: a drop the state may miss */
	uint64_t layout_gen; /* bumped when a segment is rewritten: cursors' offsets go stale */
	int repair_pending;  /* the state could not be written at open (full disk): damage found
	                      * then is mended at the first state write that succeeds */
	/* segment read errors (dev_spool_read_error): how many, and the last one's file, errno
	 * and whether it was handled as damage */
	uint64_t rerr_count;
	char *rerr_path;
	int rerr_errno, rerr_dropped;
	/* reads that failed for damage (twice) and were passed over as such (record reads,
	 * spool_next_good, rewrites), and the last one's errno: a walk that sees it move met a
	 * bad block */
	uint64_t unread_hits;
	int unread_errno;
	/* failed preads for damage in the walk of a segment under way (spool_walk_start): past
	 * MAX_WALK_FAILS the rest of it is taken as unreadable to its end */
	int walk_fails;
};


struct hdr {
	uint32_t len;
	uint64_t seq;
	uint64_t prev_seq;
	int64_t t_ms;
	uint32_t kind;
};

static inline void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* ---------- files and records (dev_spool_seg.c) ---------- */

/* A segment's file name: the seq always in 20 digits, so names sort as their seqs do. */
#define SEG_NAME "seg-%020" PRIu64 ".log"
/* 1 if name is exactly what SEG_NAME makes of a seq (*first), with tmp of a segment rewrite's
 * temporary copy (SEG_NAME ".tmp"); 0 for any other name (seg-1.log, seg-+1.log: not ours). */
int spool_seg_parse(const char *name, int tmp, uint64_t *first);

/* DEV_SPOOL_ENOSPC for a full disk (errno), else DEV_SPOOL_EIO. */
int spool_io_err(void);
/* 1 if a read error with errno err is damage to the medium or the file (EIO from a bad block,
 * EISDIR, EBADMSG, EUCLEAN), handled as bit rot; 0 if it says nothing about the data (EMFILE,
 * ENOMEM, EACCES, EROFS...). */
int spool_unreadable(int err);
/* Remember a read error of segment g (err: its errno; dropped: handled as damage). */
void spool_note_read_error(struct dev_spool *s, const struct seg *g, int err, int dropped);
int spool_write_all(int fd, const uint8_t *p, size_t n);
int spool_fsync_dir(const char *dir);

void spool_hdr_encode(const struct hdr *h, uint8_t out[HDR_LEN]);

/* Segment i's file descriptor, opened on demand (-1 on failure). Only the newest segment and
 * the one last asked for keep theirs. */
int spool_seg_fd(struct dev_spool *s, struct seg *g);
int spool_push_seg(struct dev_spool *s, const struct seg *g);
/* Create the newest segment, named first. */
int spool_new_segment(struct dev_spool *s, uint64_t first);
/* Forget segment i and delete its file (s->segs moves: pointers into it go stale). */
void spool_remove_seg(struct dev_spool *s, size_t i);

/* The record at off: 0 ok (env malloc'd if env != NULL), 1 end/torn, <0 error (DEV_SPOOL_EIO
 * with errno: for damage when spool_unreadable says so). A read failing for damage is tried
 * once more first. */
int spool_read_rec(struct dev_spool *s, int fd, uint64_t off, uint64_t file_end, struct hdr *h,
		   uint8_t **env);
/* A walk of a segment starts (the open's scan, a reader starting on it, a rewrite, a count):
 * its budget of failing reads (s->walk_fails) is whole again. */
void spool_walk_start(struct dev_spool *s);
/* The first intact record header at or after off whose seq is above `after`: 0 found (*at, *h),
 * 1 none before end, <0 error. Past damage it resynchronises byte by byte. */
int spool_next_good(struct dev_spool *s, int fd, uint64_t off, uint64_t end, uint64_t after,
		    uint64_t *at, struct hdr *h);
/* Rewrite segment g with its intact records in [0, end), less the one at `skip` (UINT64_MAX:
 * none). Its name stays; s->layout_gen moves on. With report, a record that cannot all be read
 * (damage) is left out too, and all it leaves out is reported as dropped and put on disk by
 * report(s) before the rename; without, such a record fails the rewrite. */
int spool_seg_rewrite(struct dev_spool *s, struct seg *g, uint64_t end, uint64_t skip,
		      int (*report)(struct dev_spool *s));

/* ---------- recovery (dev_spool_recover.c) ---------- */

/* Find, sort and scan the segments; report what damage destroyed (durable: the last seq the
 * state file says was appended, 0 if unknown). Mending waits for spool_repair_segments. */
int spool_load_segments(struct dev_spool *s, uint64_t durable);
/* Mend what spool_load_segments found: call once the state reporting it is on disk. */
void spool_repair_segments(struct dev_spool *s);

/* ---------- bookkeeping (dev_spool.c) ---------- */

/* 1 if every record in [first, last] is acknowledged. */
int spool_range_covers(const struct dev_spool *s, uint64_t first, uint64_t last);
/* The highest seq from `seen` on up to which everything is acknowledged. */
uint64_t spool_acked_from(const struct dev_spool *s, uint64_t seen);
/* 1 if record seq lies in a dropped link that is pending (on its way to the bridge, or on disk
 * to be) and is not acknowledged: it is reported, so it must never be delivered. */
int spool_reported(const struct dev_spool *s, uint64_t seq);
/* spool_seg_rewrite reporting what it leaves out, durably (the state file) before the rename;
 * a failure before that state write takes back what it reported (errno kept); one after it
 * (fdatasync, rename) keeps it: it is on disk, and a record reported is never delivered. */
int spool_rewrite_reporting(struct dev_spool *s, struct seg *g, uint64_t end, uint64_t skip);
/* Records between prev and last (a chain link) were destroyed: report them as dropped, once. */
void spool_report_lost(struct dev_spool *s, uint64_t prev, uint64_t last);
/* The same for damage in segment g met by a walk that has delivered nothing of g past prev
 * (a rewrite, a reader passing over it): with the pending list near its cap (MAX_PENDING) the
 * link reaches to g's last seq instead, all of g from there on reported in one, so that no
 * pending link is ever forgotten to make room. 1 if it did (what follows in g is reported). */
int spool_report_damage(struct dev_spool *s, const struct seg *g, uint64_t prev, uint64_t last);

#endif
