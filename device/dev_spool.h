/* dev_spool.h - the device's durable, encrypted, append-only queue of signed envelopes.
 *
 * Layout of the spool directory (created 0700):
 *   key                      32 random bytes, 0600: the AES-256-GCM key; never leaves the device
 *   state                    seq reservation, ack position, pending dropped ranges (CRC-checked)
 *   seg-<first seq>.log      segments of records, appended and fsync'd, deleted when acknowledged
 * A record is a 48-byte header (magic, length, seq, prev_seq, time, kind, CRC32 of the header)
 * followed by a random 12-byte nonce, the AES-256-GCM ciphertext of the envelope and the 16-byte
 * tag; the header is the GCM additional data. Nothing of the envelope is readable on disk.
 *
 * After a crash the spool reopens by itself: a torn tail of the newest segment (bad header CRC,
 * short record, bad tag on the last record) is cut off, as it was never durable — unless the
 * state file says that record was appended. Damage anywhere else is bit rot: the records around
 * it are kept (the segment is rewritten without it, after the state reporting the loss is on
 * disk) and what it destroyed is reported as dropped, once. Readers skip damage they meet. Sequence numbers are reserved on disk in blocks
 * before use, so they are never reused, whatever happens. Only the newest segment and the one
 * being read hold a file descriptor, however many segments there are. Records stamped before
 * 2020 (a clock not yet set) never age out; only the size limit drops them.
 *
 * Not thread-safe: one owner (the agent thread) calls everything, and one open spool per
 * directory (dev_spool_open locks it). */
#ifndef DEV_SPOOL_H
#define DEV_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "wire_batch.h"

enum dev_spool_err {
	DEV_SPOOL_OK = 0,
	DEV_SPOOL_EIO = -1,	 /* read/write/fsync failed (errno kept) */
	DEV_SPOOL_ENOSPC = -2,	 /* disk full: the record was not stored */
	DEV_SPOOL_ENOMEM = -3,
	DEV_SPOOL_EINVAL = -4,
	DEV_SPOOL_ECRYPTO = -5,	 /* key unusable or RNG failure */
	DEV_SPOOL_ECORRUPT = -6, /* a record failed its integrity check (it is skipped) */
	DEV_SPOOL_ETOOBIG = -7,	 /* record larger than a segment */
	DEV_SPOOL_EKEY = -8,	 /* key file has the wrong size or permissions */
	/* an ack reaches a seq this spool never handed out (an earlier life's, or another
	 * spool's): refused whole, nothing acknowledged (dev_spool_ack) */
	DEV_SPOOL_EFUTURE = -9,
	/* the key file is missing while the spool holds state or segments: only that key reads
	 * them, so no new one is made (restore it, or remove the spool directory) */
	DEV_SPOOL_ENOKEY = -10,
	/* another open spool (this process's or another's) holds the directory's lock */
	DEV_SPOOL_EBUSY = -11,
};

const char *dev_spool_strerror(int err);

struct dev_spool_opts {
	const char *dir;
	int64_t max_bytes;     /* total size of the segments; oldest dropped beyond it */
	int64_t max_age_ms;    /* records older than this are dropped even if unsent */
	int64_t segment_bytes; /* a segment is closed when the next record would exceed it */
	/* Where numbering starts when the spool is new (0 means 1), and the least next seq at
	 * every later open (never lowering it). The agent passes its clock (dev_spool_clock_seq),
	 * so that a device whose state directory was wiped, or restored from a backup, numbers
	 * above everything its earlier life sent. A new spool owes nothing below it: the chain
	 * starts at first_seq-1. */
	uint64_t first_seq;
};

/* first_seq for a clock reading (CLOCK_REALTIME, ms): 1 + the quarter-seconds since
 * 2020-01-01, or 1 when the clock is obviously unset (before 2020). A 32-bit-sized number
 * (compact as a varint and in the store) that stays above anything an earlier life of the
 * device used as long as that life averaged fewer than 4 seqs a second. */
uint64_t dev_spool_clock_seq(int64_t realtime_ms);

struct dev_spool;

/* Open (creating if needed) and recover. *out owned by the caller: dev_spool_close().
 * On failure *why (optional) gets a one-line reason, and with DEV_SPOOL_EIO errno says what
 * failed. A state file that exists but cannot be read (not one that is malformed) fails the
 * open with DEV_SPOOL_EIO and is left as it is. A key is generated only for a spool without
 * state or segments: a missing key is DEV_SPOOL_ENOKEY otherwise. The open spool holds an
 * exclusive flock(2) on the directory until dev_spool_close (not across exec, gone with the
 * process): a second open of it fails with DEV_SPOOL_EBUSY, changing nothing. */
int dev_spool_open(const struct dev_spool_opts *opts, struct dev_spool **out, const char **why);
void dev_spool_close(struct dev_spool *s); /* accepts NULL */

/* Take the next sequence number (for any envelope). Durable: returns only after the
 * reservation covering it is on disk. */
int dev_spool_take_seq(struct dev_spool *s, uint64_t *seq);

/* The seq dev_spool_take_seq hands out next: this spool never handed out one at or above it. */
uint64_t dev_spool_next_seq(const struct dev_spool *s);

/* prev_seq for the next durable envelope: the seq of the last one appended (0 if none ever). */
uint64_t dev_spool_last_durable(const struct dev_spool *s);

/* Append a sealed envelope. seq must come from dev_spool_take_seq and prev_seq must be
 * dev_spool_last_durable(). The record is on disk (fdatasync) when this returns 0. Afterwards
 * the size and age limits are enforced, dropping the oldest segments if needed. */
int dev_spool_append(struct dev_spool *s, uint64_t seq, uint64_t prev_seq, uint32_t kind,
		     int64_t t_ms, const uint8_t *env, size_t len);

/* Apply a verified bridge ack: records <= upto and inside ranges are acknowledged; fully
 * acknowledged segments are deleted. ranges are [first,last] pairs, ascending. An ack whose
 * upto or a range's last is at or above dev_spool_next_seq() was never for this spool (the
 * bridge's frontier of an earlier life of the device, whose state directory was reset): it is
 * refused whole with DEV_SPOOL_EFUTURE and changes nothing. Below that, what lies above the
 * last durable record (seqs of envelopes that are not spooled) acknowledges only what exists. */
int dev_spool_ack(struct dev_spool *s, uint64_t upto, const uint64_t (*ranges)[2],
		  size_t nranges);

/* Highest seq such that it and everything before it is acknowledged. */
uint64_t dev_spool_acked_upto(const struct dev_spool *s);

/* 1 if seq is acknowledged (<= acked_upto or inside an acked range). */
int dev_spool_is_acked(const struct dev_spool *s, uint64_t seq);

/* A position in the spool; caller-allocated, valid across appends, acks and drops. */
struct dev_spool_cursor {
	uint64_t next_seq; /* the next record returned has seq >= next_seq */
	/* private: where the record after next_seq was last found */
	uint64_t seg_name;
	uint64_t gen;
	uint64_t off;
};
#define DEV_SPOOL_CURSOR_AT(seq) ((struct dev_spool_cursor){(seq), 0, 0, 0})

struct dev_spool_rec {
	uint64_t seq;
	uint64_t prev_seq;
	uint32_t kind;
	int64_t t_ms;
};

/* Read the next record at or after the cursor into a malloc'd buffer (caller frees) and
 * advance. With skip_acked, acknowledged records are passed over. Returns 1 when there is
 * none, 0 with a record, DEV_SPOOL_ECORRUPT if one failed its tag (the cursor moves past it
 * and, unless it was acknowledged, it is reported as dropped), or another negative error. */
int dev_spool_next(struct dev_spool *s, struct dev_spool_cursor *c, int skip_acked,
		   struct dev_spool_rec *rec, uint8_t **env, size_t *len);

/* How many records with seq in [first, last] the spool holds, acknowledged or not (what
 * dev_spool_next without skip_acked would return), into *n. Cheap: segments wholly inside the
 * range are counted from the index, and only those where it begins or ends are read, header
 * by header (nothing is decrypted: a record whose ciphertext has rotted is counted, and
 * skipped when read). 0, or DEV_SPOOL_EIO / DEV_SPOOL_ENOMEM (*n unchanged). */
int dev_spool_count(struct dev_spool *s, uint64_t first, uint64_t last, uint64_t *n);

struct dev_spool_stats {
	uint64_t records;	  /* unacknowledged records */
	uint64_t bytes;		  /* bytes of all segments on disk */
	int64_t oldest_unsent_ms; /* time of the oldest unacknowledged record, 0 if none */
	uint64_t dropped_total;	  /* records ever dropped unsent */
	uint64_t segments;
	uint64_t chain_floor;	  /* see Birth.chain_floor */
	uint64_t first_unacked;	  /* seq of the oldest unacknowledged record, 0 if none */
};

/* Reads the record headers of unacknowledged segments: call it per connect, not per sample. */
void dev_spool_stats(const struct dev_spool *s, struct dev_spool_stats *st);

/* Segment files that could not be read, at the open or since. A read that fails is tried once
 * more (a transient error costs nothing). A read error that is damage (EIO from a bad block,
 * EISDIR, EBADMSG, EUCLEAN) is handled as bit rot: the bytes that cannot be read are passed
 * over (sector by sector, a failed sector's 4 KiB block unread, at most 64 failed reads in a
 * walk of a segment, however scattered, before the rest is taken as unreadable to its end),
 * the records they overlap, unless
 * acknowledged, are reported as dropped, and the segment is rewritten without them (a reader gets
 * DEV_SPOOL_ECORRUPT and goes on by seq); the rewrite reports exactly what it leaves out, also
 * the open's (its header scan reports no damage that a rewrite will read again). At the open,
 * unreadable bytes up to a segment's end cut it there (a segment that cannot be opened is
 * removed). A rewrite failing after the state write that reports what it leaves out keeps
 * that report (it is on disk). Should it fail before, for a reason that passes (EMFILE,
 * ENOMEM...), nothing is reported and the read is left for a retry (DEV_SPOOL_EIO,
 * DEV_SPOOL_ENOMEM); for one that does
 * not (a full disk, a write error, EROFS: a read-only remount lasts) the reader passes over the
 * damage where it is, reporting what it overlaps as it meets it. A record a pending dropped link
 * covers is never returned (it may become readable), and a rewrite cuts it out. Other errors that
 * are not damage (EMFILE, ENOMEM...) are left for a retry too (DEV_SPOOL_EIO). */
struct dev_spool_read_error {
	uint64_t count;	  /* read errors so far */
	const char *path; /* the segment file of the last one, NULL if none (valid until the next
			   * call into the spool) */
	int err;	  /* its errno */
	int dropped;	  /* 1 if it was handled as damage (reported dropped), 0 if left */
};
void dev_spool_read_error(const struct dev_spool *s, struct dev_spool_read_error *out);

/* Dropped links (ranges) kept until settled. A batch carries WIRE_MAX_DROPPED of them, so more
 * than a batch's worth wait their turn instead of being folded or forgotten (at this cap only). */
#define DEV_SPOOL_MAX_DROPPED 256

/* The dropped ranges not yet settled, for the next batch, at most cap: those no envelope in the
 * spool carries yet first, then those whose carrier is not acknowledged yet, then those held
 * after it was (a segment still holds one of their records). cap DEV_SPOOL_MAX_DROPPED gives
 * them all. Returns how many were written to out. */
size_t dev_spool_dropped(const struct dev_spool *s, struct wire_dropped *out, size_t cap);

/* Tell the spool that the envelope `seq`, now durable, carries sent[0..n) (what
 * dev_spool_dropped returned before it was encoded): once `seq` is acknowledged those ranges are
 * forgotten. A range that changed since (appending `seq` may drop more and grow it) is not
 * marked, so the next envelope carries it whole. */
void dev_spool_dropped_reported(struct dev_spool *s, uint64_t seq, const struct wire_dropped *sent,
				size_t n);

#endif
