/* dev_spool_seg.c - the spool's segment files: records, descriptors, resync past damage,
 * rewrites. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32.h"
#include "dev_spool_int.h"
#include "ofile.h"

int spool_io_err(void)
{
	return errno == ENOSPC || errno == EDQUOT || errno == EFBIG ? DEV_SPOOL_ENOSPC
								    : DEV_SPOOL_EIO;
}

int spool_unreadable(int err)
{
#ifdef EUCLEAN
	if (err == EUCLEAN) /* ext4 and btrfs: metadata or checksum damage */
		return 1;
#endif
	return err == EIO || err == EISDIR || err == EBADMSG;
}

int spool_write_all(int fd, const uint8_t *p, size_t n)
{
	return ofile_write_all(fd, p, n) ? spool_io_err() : DEV_SPOOL_OK;
}

/* n bytes at off: 0, 1 short (end of file), DEV_SPOOL_EIO (errno). A read that fails for damage
 * (spool_unreadable) is tried once more unless `once`: a transient error costs nothing. */
static int read_at(int fd, uint8_t *p, size_t n, uint64_t off, int once)
{
	int retried = once;
	while (n) {
		ssize_t r = pread(fd, p, n, (off_t)off);
		if (r < 0 && (errno == EINTR || (!retried++ && spool_unreadable(errno))))
			continue;
		if (r <= 0)
			return r == 0 ? 1 : DEV_SPOOL_EIO; /* 1: short (end of file) */
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* read_at, but a read that fails for damage is noted (s->unread_hits, s->unread_errno, the
 * walk's failed preads) and returned as 2, so that the caller treats the bytes as damage. */
static int read_damage_at(struct dev_spool *s, int fd, uint8_t *p, size_t n, uint64_t off, int once)
{
	int r = read_at(fd, p, n, off, once);
	if (r == DEV_SPOOL_EIO && spool_unreadable(errno)) {
		s->walk_fails += once ? 1 : 2;
		s->unread_hits++;
		s->unread_errno = errno;
		return 2;
	}
	return r;
}

static int read_damage(struct dev_spool *s, int fd, uint8_t *p, size_t n, uint64_t off)
{
	return read_damage_at(s, fd, p, n, off, 0);
}

/* Preads that may fail for damage in one walk of a segment (spool_walk_start), however
 * scattered the damage, before the rest of it is taken as unreadable to its end: on an SD card
 * each failing read can take 100 ms and more, and a segment (1 MiB) that cannot be read at all
 * would cost thousands. */
enum { MAX_WALK_FAILS = 64 };

void spool_walk_start(struct dev_spool *s)
{
	s->walk_fails = 0;
}

/* The window [o, o + n) into buf, sector by sector when it cannot be read whole: the bytes of a
 * sector that cannot be read (damage) are marked in bad[] (*any set), with the rest of its
 * 4 KiB block, unread (a bad block of a card is that size; a sector is tried once). At
 * MAX_WALK_FAILS failed preads in the walk the rest of the window is marked bad unread too.
 * 0, 1 short, <0 error. */
static int read_window(struct dev_spool *s, int fd, uint8_t *buf, uint8_t *bad, size_t n,
		       uint64_t o, int *any)
{
	enum { SECTOR = 512, BLOCK = 4096 };
	int r = read_damage(s, fd, buf, n, o);
	*any = 0;
	if (r != 2)
		return r;
	*any = 1;
	memset(bad, 0, n);
	for (size_t i = 0; i < n;) {
		size_t k = SECTOR - (size_t)((o + i) % SECTOR);
		if (k > n - i)
			k = n - i;
		if (s->walk_fails >= MAX_WALK_FAILS) {
			memset(bad + i, 1, n - i);
			break;
		}
		r = read_damage_at(s, fd, buf + i, k, o + i, 1);
		if (r == 2) {
			k = BLOCK - (size_t)((o + i) % BLOCK);
			if (k > n - i)
				k = n - i;
			memset(bad + i, 1, k);
		} else if (r) {
			return r;
		}
		i += k;
	}
	return 0;
}

int spool_fsync_dir(const char *dir)
{
	return ofile_sync_dir(dir) ? DEV_SPOOL_EIO : DEV_SPOOL_OK;
}

static char *seg_path(const struct dev_spool *s, uint64_t first)
{
	char *p = NULL;
	if (asprintf(&p, "%s/" SEG_NAME, s->dir, first) < 0)
		return NULL;
	return p;
}

int spool_seg_parse(const char *name, int tmp, uint64_t *first)
{
	char canon[64];
	if (strncmp(name, "seg-", 4))
		return 0;
	/* strtoull takes a sign, spaces, fewer digits and wraps negatives: only the name it
	 * formats back to is a segment's (seg_path opens that one) */
	uint64_t v = strtoull(name + 4, NULL, 10);
	snprintf(canon, sizeof(canon), SEG_NAME "%s", v, tmp ? ".tmp" : "");
	if (strcmp(name, canon))
		return 0;
	*first = v;
	return 1;
}

void spool_hdr_encode(const struct hdr *h, uint8_t out[HDR_LEN])
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

int spool_push_seg(struct dev_spool *s, const struct seg *g)
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

int spool_seg_fd(struct dev_spool *s, struct seg *g)
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

void spool_note_read_error(struct dev_spool *s, const struct seg *g, int err, int dropped)
{
	char *path = seg_path(s, g->name);
	if (path) { /* out of memory: the last one's name stays */
		free(s->rerr_path);
		s->rerr_path = path;
	}
	s->rerr_count++;
	s->rerr_errno = err;
	s->rerr_dropped = dropped;
}

void spool_remove_seg(struct dev_spool *s, size_t i)
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

int spool_new_segment(struct dev_spool *s, uint64_t first)
{
	char *path = seg_path(s, first);
	if (!path)
		return DEV_SPOOL_ENOMEM;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	free(path);
	if (fd < 0)
		return spool_io_err();
	struct seg g = {.name = first, .first_seq = first, .last_seq = first, .fd = fd};
	int rc = spool_push_seg(s, &g);
	if (!rc)
		close_idle(s, NULL); /* the previous newest is done with */
	if (!rc)
		rc = spool_fsync_dir(s->dir);
	if (rc) {
		close(fd);
		if (s->nsegs && s->segs[s->nsegs - 1].fd == fd)
			s->nsegs--;
	}
	return rc;
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
int spool_read_rec(struct dev_spool *s, int fd, uint64_t off, uint64_t file_end, struct hdr *h,
		    uint8_t **env)
{
	uint8_t hb[HDR_LEN];
	if (off + HDR_LEN > file_end)
		return 1;
	int r = read_damage(s, fd, hb, HDR_LEN, off);
	if (r == 2)
		r = DEV_SPOOL_EIO; /* errno says damage */
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
	r = read_damage(s, fd, body, NONCE_LEN + (size_t)h->len + TAG_LEN, off + HDR_LEN);
	if (!r)
		r = decrypt(s, hb, body, h->len, plain);
	else if (r == 2)
		r = DEV_SPOOL_EIO; /* errno says damage */
	else if (r > 0)
		r = 1;
	int e = errno;
	free(body);
	if (r) {
		free(plain);
		errno = e;
		return r;
	}
	*env = plain;
	return 0;
}

/* The first intact record header at or after off whose seq is above `after`: 0 found (*at, *h),
 * 1 none before end, <0 error. Past damage it resynchronises byte by byte: a header needs the
 * magic, a matching CRC and a body that fits, so damage is not taken for a record. Bytes that
 * cannot be read (a bad block) are damage: around them it reads sector by sector, and no header
 * is taken from them (s->unread_hits counts them). */
int spool_next_good(struct dev_spool *s, int fd, uint64_t off, uint64_t end, uint64_t after,
		     uint64_t *at, struct hdr *h)
{
	enum { WIN = 64 * 1024 };
	int r = spool_read_rec(s, fd, off, end, h, NULL);
	uint64_t from = off + 1;
	if (r == DEV_SPOOL_EIO && spool_unreadable(errno)) {
		/* damage: resync past it, from off itself, whose header the window may read yet (a
		 * read that failed twice then works): else it is reported lost, and kept by a
		 * rewrite that reads it */
		r = 1;
		from = off;
	}
	if (r <= 0) {
		if (r == 0 && h->seq > after)
			*at = off;
		if (r < 0 || h->seq > after)
			return r;
	}
	uint8_t *buf = malloc(WIN), *bad = malloc(WIN);
	int rc = buf && bad ? 1 : DEV_SPOOL_ENOMEM, any;
	for (uint64_t o = from; rc == 1 && o + HDR_LEN <= end;) {
		size_t n = end - o < WIN ? (size_t)(end - o) : WIN;
		if (s->walk_fails >= MAX_WALK_FAILS) {
			/* the rest is taken as unreadable: no header in it, and the caller sees
			 * damage (not a torn tail), also where no read failed in this call */
			s->unread_hits++;
			break;
		}
		r = read_window(s, fd, buf, bad, n, o, &any);
		if (r) {
			rc = r < 0 ? r : 1;
			break;
		}
		for (size_t i = 0; i + HDR_LEN <= n; i++) {
			if (get32(buf + i) == REC_MAGIC && !(any && memchr(bad + i, 1, HDR_LEN)) &&
			    !hdr_decode(buf + i, h) && h->seq > after &&
			    o + i + REC_OVERHEAD + h->len <= end) {
				*at = o + i;
				rc = 0;
				break;
			}
		}
		o += n - HDR_LEN + 1;
	}
	free(bad);
	free(buf);
	return rc;
}

/* Rewrite segment g with its intact records in [0, end), less the one at `skip` (UINT64_MAX:
 * none), through a temporary file renamed over it. Its name stays; cursors' offsets go stale.
 * A record that cannot all be read (damage) is passed over only with `report`: what the rewrite
 * passes over, unless acknowledged, is then reported as dropped as it goes (exactly what it
 * leaves out: hidden stretches, unreadable records, the tail up to g's last seq), and report(s)
 * puts that on disk before the rename (its failure fails the rewrite). Without it such a record
 * fails the rewrite (DEV_SPOOL_EIO): nothing is left out unreported. */
int spool_seg_rewrite(struct dev_spool *s, struct seg *g, uint64_t end, uint64_t skip,
		      int (*report)(struct dev_spool *s))
{
	char *path = seg_path(s, g->name), *tmp = NULL;
	uint8_t *rec = malloc(REC_OVERHEAD + MAX_REC_PAYLOAD);
	int fd = spool_seg_fd(s, g), out = -1, rc = DEV_SPOOL_ENOMEM;
	struct seg n = {.name = g->name, .fd = -1, .sealed = g->sealed};
	uint64_t off = 0, at, seen = g->first_prev, found = 0;
	int walk_fails = s->walk_fails; /* a walk of its own: the reader's budget is kept */
	if (!path || !rec || asprintf(&tmp, "%s.tmp", path) < 0)
		goto done;
	out = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || out < 0) {
		rc = fd < 0 ? DEV_SPOOL_EIO : spool_io_err();
		goto done;
	}
	rc = DEV_SPOOL_OK;
	spool_walk_start(s);
	while (off < end) {
		struct hdr h;
		rc = spool_next_good(s, fd, off, end, found ? seen : 0, &at, &h);
		if (rc) {
			rc = rc < 0 ? rc : DEV_SPOOL_OK;
			break;
		}
		if (report && at != off &&
		    spool_report_damage(s, g, spool_acked_from(s, seen), h.prev_seq)) {
			off = end; /* the rest of g is reported: nothing more to copy */
			break;
		}
		size_t len = REC_OVERHEAD + h.len;
		off = at + len;
		seen = h.seq;
		found++;
		if (at == skip || spool_reported(s, h.seq)) /* reported already: it goes */
			continue;
		rc = read_damage(s, fd, rec, len, at);
		if (rc == 2 && report) { /* damage: it goes, reported */
			rc = DEV_SPOOL_OK;
			if (!dev_spool_is_acked(s, h.seq) &&
			    spool_report_damage(s, g, h.prev_seq, h.seq)) {
				off = end; /* the rest of g is reported */
				break;
			}
			continue;
		}
		if (rc == 2)
			errno = s->unread_errno;
		if (rc > 0)
			rc = DEV_SPOOL_EIO;
		if (!rc)
			rc = spool_write_all(out, rec, len);
		if (rc)
			goto done;
		if (!n.count++) {
			n.first_seq = h.seq;
			n.first_prev = h.prev_seq;
		}
		n.last_seq = h.seq;
		n.t_last = h.t_ms;
		n.bytes += len;
	}
	if (!rc && report && off < end) /* the segment's tail: its last records */
		spool_report_lost(s, spool_acked_from(s, seen), g->last_seq);
	if (!rc && report)
		rc = report(s);
	if (rc)
		goto done;
	if (fdatasync(out) != 0 || rename(tmp, path) != 0) {
		rc = spool_io_err();
		goto done;
	}
	spool_fsync_dir(s->dir); /* renamed: the new layout is the segment's from now on */
	rc = DEV_SPOOL_OK;
	close(g->fd);
	n.fd = out;
	out = -1;
	s->total_bytes = s->total_bytes - g->bytes + n.bytes;
	*g = n;
	s->layout_gen++;
done:
	s->walk_fails = walk_fails;
	if (out >= 0) {
		close(out);
		unlink(tmp);
	}
	free(rec);
	free(tmp);
	free(path);
	return rc;
}
