/* dev_spool.c - segmented, AES-256-GCM encrypted, fsync'd queue of envelopes with recovery. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/random.h>

#include "ofile.h"
#include "otime.h"
#include "crc32.h"
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
#define SEQ_LOST_STATE (1u << 20) /* skipped when the state file is unreadable */
#define SEQ_CLOCK_MS 250	       /* a new spool's first seq counts quarter-seconds */
#define MAX_ACK_RANGES 256
#define MAX_PENDING WIRE_MAX_DROPPED
#define STATE_PERSIST_MS 5000 /* ack position is persisted at most this often */
/* Time stamps before this were taken with an unset clock (a device booting without a real-time
 * clock, before NTP): their age is unknown. Also where clock-based numbering starts. */
#define CLOCK_SET_MS 1577836800000LL /* 2020-01-01T00:00:00Z */

struct seg {
	uint64_t name; /* seq in the file name: the first record's when it was created */
	uint64_t first_seq;
	uint64_t last_seq;
	uint64_t count;
	uint64_t bytes;
	int64_t t_last;
	int fd;
	/* damage found at open, mended once the state that reports it is on disk */
	enum { REPAIR_NONE, REPAIR_REWRITE, REPAIR_CUT, REPAIR_REMOVE } repair;
	uint64_t repair_to; /* intact records end here */
};

struct pending {
	struct wire_dropped d;
	uint64_t reported_in; /* durable seq that carried it, 0 = not yet */
};

struct dev_spool {
	char *dir;
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
	int state_dirty;
	uint64_t layout_gen; /* bumped when a segment is rewritten: cursors' offsets go stale */
};

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
	}
	return "unknown spool error";
}

/* ---------- small helpers ---------- */

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int io_err(void)
{
	return errno == ENOSPC || errno == EDQUOT || errno == EFBIG ? DEV_SPOOL_ENOSPC
								    : DEV_SPOOL_EIO;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return io_err();
		if (w == 0) {
			errno = ENOSPC;
			return DEV_SPOOL_ENOSPC;
		}
		p += w;
		n -= (size_t)w;
	}
	return DEV_SPOOL_OK;
}

static int read_at(int fd, uint8_t *p, size_t n, uint64_t off)
{
	while (n) {
		ssize_t r = pread(fd, p, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? 1 : DEV_SPOOL_EIO; /* 1: short (end of file) */
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static int fsync_dir(const char *dir)
{
	return ofile_sync_dir(dir) ? DEV_SPOOL_EIO : DEV_SPOOL_OK;
}

static char *seg_path(const struct dev_spool *s, uint64_t first)
{
	char *p = NULL;
	if (asprintf(&p, "%s/seg-%020" PRIu64 ".log", s->dir, first) < 0)
		return NULL;
	return p;
}

/* ---------- record header ---------- */

struct hdr {
	uint32_t len;
	uint64_t seq;
	uint64_t prev_seq;
	int64_t t_ms;
	uint32_t kind;
};

static void hdr_encode(const struct hdr *h, uint8_t out[HDR_LEN])
{
	memset(out, 0, HDR_LEN);
	put32(out, REC_MAGIC);
	put32(out + 4, h->len);
	put64(out + 8, h->seq);
	put64(out + 16, h->prev_seq);
	put64(out + 24, (uint64_t)h->t_ms);
	put32(out + 32, h->kind);
	put32(out + 44, crc32_update(0, out, 44));
}

static int hdr_decode(const uint8_t in[HDR_LEN], struct hdr *h)
{
	if (get32(in) != REC_MAGIC || get32(in + 44) != crc32_update(0, in, 44))
		return -1;
	h->len = get32(in + 4);
	h->seq = get64(in + 8);
	h->prev_seq = get64(in + 16);
	h->t_ms = (int64_t)get64(in + 24);
	h->kind = get32(in + 32);
	if (h->len == 0 || h->len > MAX_REC_PAYLOAD || h->seq == 0)
		return -1;
	return 0;
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

uint64_t dev_spool_last_durable(const struct dev_spool *s)
{
	return s->last_durable;
}

static int range_covers(const struct dev_spool *s, uint64_t first, uint64_t last)
{
	if (last <= s->acked_upto)
		return 1;
	uint64_t from = first > s->acked_upto ? first : s->acked_upto + 1;
	for (size_t i = 0; i < s->nranges; i++)
		if (from >= s->ranges[i][0] && last <= s->ranges[i][1])
			return 1;
	return 0;
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
	int rc = ofile_replace(dst, buf, n) ? io_err() : DEV_SPOOL_OK;
	if (!rc) {
		s->state_written_ms = otime_mono_ms();
		s->state_dirty = 0;
	}
	free(dst);
	return rc;
}

/* 0 loaded, 1 missing, -1 corrupt */
static int state_read(struct dev_spool *s)
{
	char *path = NULL;
	uint8_t buf[48 + 4 + MAX_PENDING * 32 + 4];
	if (asprintf(&path, "%s/state", s->dir) < 0)
		return -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return errno == ENOENT ? 1 : -1;
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n < 8 + 32 + 4 + 4 || get32(buf) != STATE_MAGIC || get32(buf + 4) != STATE_VERSION)
		return -1;
	uint32_t np = get32(buf + 40);
	size_t need = 44 + (size_t)np * 32 + 4;
	if (np > MAX_PENDING || (size_t)n != need ||
	    get32(buf + need - 4) != crc32_update(0, buf, need - 4))
		return -1;
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

static int load_key(struct dev_spool *s)
{
	char *path = NULL;
	int rc = DEV_SPOOL_EKEY;
	if (asprintf(&path, "%s/key", s->dir) < 0)
		return DEV_SPOOL_ENOMEM;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* First start: a fresh random key, written once, never overwritten. */
		if (wc_RNG_GenerateBlock(&s->rng, s->key, KEY_LEN) != 0) {
			rc = DEV_SPOOL_ECRYPTO;
			goto out;
		}
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			rc = io_err();
			goto out;
		}
		rc = write_all(fd, s->key, KEY_LEN);
		if (!rc && fsync(fd) != 0)
			rc = io_err();
		close(fd);
		if (!rc)
			rc = fsync_dir(s->dir);
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

/* Remember a dropped range until a bridge acknowledges the envelope that reported it. Returns 0
 * if that very range is already pending (reading a rotten record twice reports it once). */
static int add_pending(struct dev_spool *s, uint64_t prev, uint64_t last, uint64_t count)
{
	for (size_t i = 0; i < s->npending; i++)
		if (s->pending[i].d.prev_seq == prev && s->pending[i].d.last_seq == last)
			return 0;
	if (s->npending && s->pending[s->npending - 1].d.last_seq == prev &&
	    !s->pending[s->npending - 1].reported_in) {
		s->pending[s->npending - 1].d.last_seq = last;
		s->pending[s->npending - 1].d.count += count;
		return 1;
	}
	if (s->npending == MAX_PENDING) {
		/* Full: fold the two oldest into one link. The bridge then counts the acknowledged
		 * envelopes between them as dropped too, which over-reports but loses no data. */
		struct pending *a = &s->pending[0], *b = &s->pending[1];
		uint64_t span = b->d.last_seq - a->d.prev_seq;
		a->d.last_seq = b->d.last_seq;
		a->d.count = a->d.count + b->d.count > span ? span : a->d.count + b->d.count;
		a->reported_in = 0;
		memmove(&s->pending[1], &s->pending[2], (MAX_PENDING - 2) * sizeof(*a));
		s->npending--;
	}
	s->pending[s->npending++] = (struct pending){{prev, last, count}, 0};
	return 1;
}

/* Records between prev and last (the chain link) were destroyed: at least one, how many is
 * unknowable when damage hid their headers. */
static void report_lost(struct dev_spool *s, uint64_t prev, uint64_t last)
{
	if (last > prev && add_pending(s, prev, last, 1)) {
		s->dropped_total++;
		s->state_dirty = 1;
	}
}

/* ---------- segments ---------- */

static int seg_cmp(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;
	return (x->name > y->name) - (x->name < y->name);
}

static int push_seg(struct dev_spool *s, const struct seg *g)
{
	if (s->nsegs == s->cap_segs) {
		size_t n = s->cap_segs ? s->cap_segs * 2 : 16;
		struct seg *p = realloc(s->segs, n * sizeof(*p));
		if (!p)
			return DEV_SPOOL_ENOMEM;
		s->segs = p;
		s->cap_segs = n;
	}
	s->segs[s->nsegs++] = *g;
	return DEV_SPOOL_OK;
}

/* A segment's descriptor, opened on demand. Only the newest segment (appends) and the one last
 * read keep theirs: a spool of thousands of segments must not run out of descriptors. */
static void close_idle(struct dev_spool *s, const struct seg *keep)
{
	for (size_t i = 0; i + 1 < s->nsegs; i++) {
		if (&s->segs[i] != keep && s->segs[i].fd >= 0) {
			close(s->segs[i].fd);
			s->segs[i].fd = -1;
		}
	}
}

static int seg_fd(struct dev_spool *s, struct seg *g)
{
	if (g->fd >= 0)
		return g->fd;
	close_idle(s, g);
	char *path = seg_path(s, g->name);
	if (!path)
		return -1;
	g->fd = open(path, O_RDWR | O_CLOEXEC);
	free(path);
	return g->fd;
}

static void remove_seg(struct dev_spool *s, size_t i)
{
	struct seg *g = &s->segs[i];
	char *path = seg_path(s, g->name);
	if (g->fd >= 0)
		close(g->fd);
	if (path)
		unlink(path);
	free(path);
	s->total_bytes -= g->bytes;
	memmove(&s->segs[i], &s->segs[i + 1], (s->nsegs - i - 1) * sizeof(*g));
	s->nsegs--;
}

static int decrypt(struct dev_spool *s, const uint8_t hdr[HDR_LEN], const uint8_t *body,
		   uint32_t len, uint8_t *out)
{
	const uint8_t *nonce = body, *ct = body + NONCE_LEN, *tag = body + NONCE_LEN + len;
	return wc_AesGcmDecrypt(&s->aes, out, ct, len, nonce, NONCE_LEN, tag, TAG_LEN, hdr,
				HDR_LEN) == 0
		       ? 0
		       : DEV_SPOOL_ECORRUPT;
}

/* Read the record at off: 0 ok (env malloc'd if env != NULL), 1 end/torn, <0 error. */
static int read_rec(struct dev_spool *s, int fd, uint64_t off, uint64_t file_end, struct hdr *h,
		    uint8_t **env)
{
	uint8_t hb[HDR_LEN];
	if (off + HDR_LEN > file_end)
		return 1;
	int r = read_at(fd, hb, HDR_LEN, off);
	if (r)
		return r > 0 ? 1 : r;
	if (hdr_decode(hb, h) || off + REC_OVERHEAD + h->len > file_end)
		return 1;
	if (!env)
		return 0;
	uint8_t *body = malloc(NONCE_LEN + (size_t)h->len + TAG_LEN);
	uint8_t *plain = malloc(h->len);
	if (!body || !plain) {
		free(body);
		free(plain);
		return DEV_SPOOL_ENOMEM;
	}
	r = read_at(fd, body, NONCE_LEN + (size_t)h->len + TAG_LEN, off + HDR_LEN);
	if (!r)
		r = decrypt(s, hb, body, h->len, plain);
	else if (r > 0)
		r = 1;
	free(body);
	if (r) {
		free(plain);
		return r;
	}
	*env = plain;
	return 0;
}

/* The first intact record header at or after off whose seq is above `after`: 0 found (*at, *h),
 * 1 none before end, <0 error. Past damage it resynchronises byte by byte: a header needs the
 * magic, a matching CRC and a body that fits, so damage is not taken for a record. */
static int next_good(struct dev_spool *s, int fd, uint64_t off, uint64_t end, uint64_t after,
		     uint64_t *at, struct hdr *h)
{
	enum { WIN = 64 * 1024 };
	int r = read_rec(s, fd, off, end, h, NULL);
	if (r <= 0) {
		if (r == 0 && h->seq > after)
			*at = off;
		if (r < 0 || h->seq > after)
			return r;
	}
	uint8_t *buf = malloc(WIN);
	if (!buf)
		return DEV_SPOOL_ENOMEM;
	int rc = 1;
	for (uint64_t o = off + 1; rc == 1 && o + HDR_LEN <= end;) {
		size_t n = end - o < WIN ? (size_t)(end - o) : WIN;
		r = read_at(fd, buf, n, o);
		if (r) {
			rc = r < 0 ? r : 1;
			break;
		}
		for (size_t i = 0; i + HDR_LEN <= n; i++) {
			if (get32(buf + i) == REC_MAGIC && !hdr_decode(buf + i, h) && h->seq > after &&
			    o + i + REC_OVERHEAD + h->len <= end) {
				*at = o + i;
				rc = 0;
				break;
			}
		}
		o += n - HDR_LEN + 1;
	}
	free(buf);
	return rc;
}

/* Rewrite segment g with its intact records in [0, end), less the one at `skip` (UINT64_MAX:
 * none), through a temporary file renamed over it. Its name stays; cursors' offsets go stale. */
static int seg_rewrite(struct dev_spool *s, struct seg *g, uint64_t end, uint64_t skip)
{
	char *path = seg_path(s, g->name), *tmp = NULL;
	uint8_t *rec = malloc(REC_OVERHEAD + MAX_REC_PAYLOAD);
	int fd = seg_fd(s, g), out = -1, rc = DEV_SPOOL_ENOMEM;
	struct seg n = {.name = g->name, .fd = -1};
	uint64_t off = 0, at;
	if (!path || !rec || asprintf(&tmp, "%s.tmp", path) < 0)
		goto done;
	out = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || out < 0) {
		rc = fd < 0 ? DEV_SPOOL_EIO : io_err();
		goto done;
	}
	rc = DEV_SPOOL_OK;
	while (off < end) {
		struct hdr h;
		rc = next_good(s, fd, off, end, n.count ? n.last_seq : 0, &at, &h);
		if (rc) {
			rc = rc < 0 ? rc : DEV_SPOOL_OK;
			break;
		}
		size_t len = REC_OVERHEAD + h.len;
		off = at + len;
		if (at == skip)
			continue;
		rc = read_at(fd, rec, len, at);
		if (rc > 0)
			rc = DEV_SPOOL_EIO;
		if (!rc)
			rc = write_all(out, rec, len);
		if (rc)
			goto done;
		if (!n.count++)
			n.first_seq = h.seq;
		n.last_seq = h.seq;
		n.t_last = h.t_ms;
		n.bytes += len;
	}
	if (rc)
		goto done;
	if (fdatasync(out) != 0 || rename(tmp, path) != 0) {
		rc = io_err();
		goto done;
	}
	rc = fsync_dir(s->dir);
	close(g->fd);
	n.fd = out;
	out = -1;
	s->total_bytes = s->total_bytes - g->bytes + n.bytes;
	*g = n;
	s->layout_gen++;
done:
	if (out >= 0) {
		close(out);
		unlink(tmp);
	}
	free(rec);
	free(tmp);
	free(path);
	return rc;
}

/* Recovery's view of the chain across segments, to report what damage destroyed. */
struct scan {
	uint64_t durable;   /* the last seq the state file says was appended (0: unknown) */
	uint64_t last;	    /* seq of the last intact record so far */
	int gap;	    /* records were lost after gap_prev... */
	uint64_t gap_prev;
	uint64_t gap_bound; /* ...and below the next segment's name (when nothing intact follows) */
};

/* Damage in a segment that was complete (not a torn write at the very end of the spool). */
static void scan_lost(const struct dev_spool *s, struct scan *sc, size_t seg_index)
{
	if (sc->gap)
		return;
	sc->gap = 1;
	sc->gap_prev = sc->last > s->acked_upto ? sc->last : s->acked_upto;
	sc->gap_bound = seg_index + 1 < s->nsegs ? s->segs[seg_index + 1].name - 1 : 0;
}

/* The chain resumes at an intact record linking to `upto`: what lies between was lost. */
static void scan_resumed(struct dev_spool *s, struct scan *sc, uint64_t upto)
{
	if (!sc->gap)
		return;
	sc->gap = 0;
	if (upto > sc->gap_prev && !range_covers(s, sc->gap_prev + 1, upto))
		report_lost(s, sc->gap_prev, upto);
}

/* Scan segment i's headers, filling it. The newest segment may end in a torn write (a short
 * record, a bad header, or a last record whose body fails its tag): that tail is cut, silently,
 * as it was never durable (unless the state file says that record was: then it is rot). Anywhere
 * else damage is bit rot: the intact records around it are kept and the lost stretch is reported
 * as dropped. Mending the file waits for repair_segments, after the state that reports the loss
 * is on disk: a power cut in between must not lose the report. */
static int scan_seg(struct dev_spool *s, size_t i, struct scan *sc)
{
	struct seg *g = &s->segs[i];
	int newest = i + 1 == s->nsegs, fd = seg_fd(s, g), damaged = 0, rotten = 0;
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0)
		return DEV_SPOOL_EIO;
	uint64_t off = 0, end = (uint64_t)st.st_size, last_off = 0, sc_before = sc->last;
	uint64_t before_seq = 0;
	int64_t before_t = 0;
	g->count = 0;
	g->bytes = end;
	s->total_bytes += end;
	while (off < end) {
		struct hdr h;
		uint64_t at;
		int r = next_good(s, fd, off, end, g->count ? g->last_seq : 0, &at, &h);
		if (r < 0)
			return r;
		if (r)
			break;
		if (at != off) {
			damaged = 1;
			scan_lost(s, sc, i);
		}
		scan_resumed(s, sc, h.prev_seq);
		if (g->count == 0)
			g->first_seq = h.seq;
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
	if (off < end && !newest)
		scan_lost(s, sc, i);
	if (newest && g->count) {
		uint8_t *env = NULL;
		struct hdr h;
		int r = read_rec(s, fd, last_off, off, &h, &env);
		free(env);
		if (r == DEV_SPOOL_ECORRUPT || r == 1) {
			if (h.seq <= sc->durable) { /* it was durable: rot, not a torn write */
				report_lost(s, h.prev_seq, h.seq);
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
	if (damaged)
		g->repair = REPAIR_REWRITE;
	else if (off < end && (!newest || rotten))
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
static void repair_segments(struct dev_spool *s)
{
	for (size_t i = 0; i < s->nsegs;) {
		struct seg *g = &s->segs[i];
		int how = g->repair, fd = how ? seg_fd(s, g) : -1;
		g->repair = REPAIR_NONE;
		if (how == REPAIR_REMOVE) {
			remove_seg(s, i);
			continue;
		}
		if (how == REPAIR_REWRITE)
			seg_rewrite(s, g, g->repair_to, UINT64_MAX);
		else if (how == REPAIR_CUT && fd >= 0 && ftruncate(fd, (off_t)g->repair_to) == 0)
			fdatasync(fd);
		i++;
	}
}

static int load_segments(struct dev_spool *s, uint64_t durable)
{
	DIR *d = opendir(s->dir);
	struct dirent *e;
	if (!d)
		return DEV_SPOOL_EIO;
	while ((e = readdir(d))) {
		uint64_t first;
		char tail[8];
		if (sscanf(e->d_name, "seg-%20" SCNu64 ".%4s", &first, tail) != 2 || strcmp(tail, "log"))
			continue;
		struct seg g = {.name = first, .first_seq = first, .fd = -1};
		if (push_seg(s, &g)) {
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

/* ---------- dropping ---------- */

/* Drop segment i, remembering its unacknowledged records as a dropped range. */
static void drop_seg(struct dev_spool *s, size_t i)
{
	struct seg *g = &s->segs[i];
	int fd = seg_fd(s, g);
	uint64_t off = 0, count = 0, prev = 0, last = 0, at;
	struct hdr h;
	while (fd >= 0 && off < g->bytes && !next_good(s, fd, off, g->bytes, 0, &at, &h)) {
		if (!dev_spool_is_acked(s, h.seq)) {
			if (!count)
				prev = h.prev_seq;
			last = h.seq;
			count++;
		}
		off = at + REC_OVERHEAD + h.len;
	}
	if (count && add_pending(s, prev, last, count))
		s->dropped_total += count;
	remove_seg(s, i);
	s->state_dirty = 1;
}

/* A segment whose time was taken with an unset clock has an unknown age: only the size limit
 * drops it (a device booting without a real-time clock would lose its backlog to NTP). */
static void enforce_limits(struct dev_spool *s)
{
	int64_t now = otime_wall_ms(), cutoff = now - s->opts.max_age_ms;
	/* never the newest segment: it holds the record just written */
	while (s->nsegs > 1 && (int64_t)s->total_bytes > s->opts.max_bytes)
		drop_seg(s, 0);
	/* by age, oldest first, passing over segments of unknown age; the first segment young
	 * enough ends it (the ones after it are younger still) */
	for (size_t i = 0; now >= CLOCK_SET_MS && i + 1 < s->nsegs;) {
		if (s->segs[i].t_last < CLOCK_SET_MS)
			i++;
		else if (s->segs[i].t_last < cutoff)
			drop_seg(s, i);
		else
			break;
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
	if (!s || !(s->dir = strdup(opts->dir)) ||
	    !(s->ranges = malloc((MAX_ACK_RANGES + 1) * sizeof(*s->ranges))))
		goto fail;
	s->opts = *opts;
	s->opts.dir = s->dir;
	if (mkdir(s->dir, 0700) != 0 && errno != EEXIST) {
		rc = io_err();
		reason = "cannot create the spool directory";
		goto fail;
	}
	if (chmod(s->dir, 0700) != 0) {
		rc = DEV_SPOOL_EIO;
		reason = "cannot make the spool directory private (chmod 0700)";
		goto fail;
	}
	if (wc_InitRng(&s->rng) != 0) {
		rc = DEV_SPOOL_ECRYPTO;
		reason = "cannot initialise the random generator";
		goto fail;
	}
	s->rng_ready = 1;
	rc = load_key(s);
	if (rc) {
		reason = rc == DEV_SPOOL_EKEY ? "key file is not 32 bytes with mode 0600"
					      : "cannot create the key file";
		goto fail;
	}
	if (wc_AesInit(&s->aes, NULL, INVALID_DEVID) != 0 ||
	    wc_AesGcmSetKey(&s->aes, s->key, KEY_LEN) != 0) {
		rc = DEV_SPOOL_ECRYPTO;
		reason = "cannot set up AES-GCM";
		goto fail;
	}
	s->aes_ready = 1;

	int st = state_read(s);
	uint64_t was_durable = st == 0 ? s->last_durable : 0;
	rc = load_segments(s, was_durable);
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
			remove_seg(s, i);
		else
			i++;
	}
	rc = state_write(s);
	if (rc) {
		reason = "cannot write the state file";
		goto fail;
	}
	repair_segments(s);
	enforce_limits(s);
	*out = s;
	return DEV_SPOOL_OK;
fail:
	if (why)
		*why = reason;
	dev_spool_close(s);
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
	free(s->segs);
	free(s->ranges);
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
	}
	*seq = s->next_seq++;
	return DEV_SPOOL_OK;
}

static int new_segment(struct dev_spool *s, uint64_t first)
{
	char *path = seg_path(s, first);
	if (!path)
		return DEV_SPOOL_ENOMEM;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	free(path);
	if (fd < 0)
		return io_err();
	struct seg g = {.name = first, .first_seq = first, .last_seq = first, .fd = fd};
	int rc = push_seg(s, &g);
	if (!rc)
		close_idle(s, NULL); /* the previous newest is done with */
	if (!rc)
		rc = fsync_dir(s->dir);
	if (rc) {
		close(fd);
		if (s->nsegs && s->segs[s->nsegs - 1].fd == fd)
			s->nsegs--;
	}
	return rc;
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
	if (!g || (g->bytes && g->bytes + rec_len > (uint64_t)s->opts.segment_bytes)) {
		rc = new_segment(s, seq);
		if (rc)
			return rc;
		g = &s->segs[s->nsegs - 1];
	}
	if (seg_fd(s, g) < 0)
		return DEV_SPOOL_EIO;

	struct hdr h = {(uint32_t)len, seq, prev_seq, t_ms, kind};
	hdr_encode(&h, hb);
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
	rc = write_all(g->fd, rec, rec_len);
	if (!rc && fdatasync(g->fd) != 0)
		rc = io_err();
	free(rec);
	if (rc) {
		/* leave no torn record behind: the next append starts at the same offset */
		int e = errno;
		if (ftruncate(g->fd, (off_t)g->bytes) == 0)
			fdatasync(g->fd);
		errno = e;
		if (g->bytes == 0 && s->nsegs)
			remove_seg(s, s->nsegs - 1);
		return rc;
	}
	if (g->count == 0)
		g->first_seq = seq;
	g->last_seq = seq;
	g->t_last = t_ms;
	g->count++;
	g->bytes += rec_len;
	s->total_bytes += rec_len;
	s->last_durable = seq;
	enforce_limits(s);
	maybe_persist(s);
	return DEV_SPOOL_OK;
}

int dev_spool_ack(struct dev_spool *s, uint64_t upto, const uint64_t (*ranges)[2],
		  size_t nranges)
{
	uint64_t before = s->acked_upto;
	size_t nr_before = s->nranges;
	if (upto > s->last_durable)
		upto = s->last_durable; /* never acknowledge what was never written */
	if (upto > s->acked_upto)
		s->acked_upto = upto;
	for (size_t i = 0; i < nranges; i++)
		add_range(s, ranges[i][0], ranges[i][1] > s->last_durable ? s->last_durable : ranges[i][1]);
	prune_ranges(s);
	/* A dropped range is settled once the envelope that reported it is acknowledged. */
	size_t n = 0;
	for (size_t i = 0; i < s->npending; i++)
		if (!(s->pending[i].reported_in && dev_spool_is_acked(s, s->pending[i].reported_in)))
			s->pending[n++] = s->pending[i];
	int deleted = 0;
	if (n != s->npending) {
		s->npending = n;
		deleted = 1;
	}
	for (size_t i = 0; i < s->nsegs;) {
		struct seg *g = &s->segs[i];
		if (range_covers(s, g->first_seq, g->last_seq)) {
			remove_seg(s, i);
			deleted = 1;
		} else {
			i++;
		}
	}
	if (s->acked_upto != before || s->nranges != nr_before)
		s->state_dirty = 1;
	if (deleted)
		return state_write(s);
	maybe_persist(s);
	return DEV_SPOOL_OK;
}

/* Record h at `here` in segment i failed its tag (bit rot): report it as dropped, durably, then
 * cut it out of the segment so that no later read reports it again. */
static void drop_rotten(struct dev_spool *s, size_t i, struct dev_spool_cursor *c,
			const struct hdr *h, uint64_t here)
{
	struct seg *g = &s->segs[i];
	(void)c; /* its offset goes stale with the rewrite: the next read finds its place by seq */
	report_lost(s, h->prev_seq, h->seq);
	if (state_write(s) || seg_rewrite(s, g, g->bytes, here))
		return; /* kept on disk: read again, it is not reported again (add_pending) */
	if (g->count == 0 && i + 1 < s->nsegs)
		remove_seg(s, i);
}

int dev_spool_next(struct dev_spool *s, struct dev_spool_cursor *c, int skip_acked,
		   struct dev_spool_rec *rec, uint8_t **env, size_t *len)
{
	for (size_t i = 0; i < s->nsegs; i++) {
		struct seg *g = &s->segs[i];
		if (g->last_seq < c->next_seq)
			continue;
		if (skip_acked && range_covers(s, g->first_seq, g->last_seq))
			continue;
		int fd = seg_fd(s, g);
		if (fd < 0)
			return DEV_SPOOL_EIO;
		uint64_t off = c->seg_name == g->name && c->gen == s->layout_gen ? c->off : 0;
		uint64_t seen = 0; /* seq of the record before, in this walk */
		while (off < g->bytes) {
			struct hdr h;
			uint64_t here;
			int r = next_good(s, fd, off, g->bytes, 0, &here, &h);
			if (r < 0)
				return r;
			if (r)
				break;
			if (here != off && seen) /* damage since the open: what it hid is lost */
				report_lost(s, seen, h.prev_seq);
			seen = h.seq;
			off = here + REC_OVERHEAD + h.len;
			if (h.seq < c->next_seq || (skip_acked && dev_spool_is_acked(s, h.seq)))
				continue;
			uint8_t *plain = NULL;
			c->next_seq = h.seq + 1;
			c->seg_name = g->name;
			c->gen = s->layout_gen;
			c->off = off;
			r = read_rec(s, fd, here, g->bytes, &h, &plain);
			if (r == DEV_SPOOL_ECORRUPT || r == 1) {
				drop_rotten(s, i, c, &h, here);
				return DEV_SPOOL_ECORRUPT;
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

void dev_spool_stats(const struct dev_spool *s, struct dev_spool_stats *st)
{
	struct dev_spool *m = (struct dev_spool *)s; /* reads headers; changes nothing visible */
	memset(st, 0, sizeof(*st));
	st->bytes = s->total_bytes;
	st->segments = s->nsegs;
	st->dropped_total = s->dropped_total;
	st->chain_floor = s->last_durable;
	for (size_t i = 0; i < s->nsegs; i++) {
		struct seg *g = &m->segs[i];
		if (range_covers(s, g->first_seq, g->last_seq))
			continue;
		int fd = seg_fd(m, g);
		uint64_t off = 0, at;
		struct hdr h;
		while (fd >= 0 && off < g->bytes && !next_good(m, fd, off, g->bytes, 0, &at, &h)) {
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

size_t dev_spool_dropped(const struct dev_spool *s, struct wire_dropped *out, size_t cap)
{
	size_t n = s->npending < cap ? s->npending : cap;
	for (size_t i = 0; i < n; i++)
		out[i] = s->pending[i].d;
	return n;
}

void dev_spool_dropped_reported(struct dev_spool *s, uint64_t seq)
{
	for (size_t i = 0; i < s->npending; i++) {
		if (!s->pending[i].reported_in) {
			s->pending[i].reported_in = seq;
			s->state_dirty = 1;
		}
	}
}
