/* dev_uploader.h - moves spooled envelopes to the link in seq order with a bounded in-flight
 * window, sends fresh data ahead of a backlog (in at most half the window while there is one),
 * verifies bridge acks, and resends whatever is unacknowledged after a reconnect (whole
 * window) or an ack timeout (oldest first, one at a time until acks move again, with a growing
 * wait: dev_acktimer.h). Deletes only on a verified ack: an MQTT PUBACK means nothing here.
 * Single-threaded (the agent's thread). */
#ifndef DEV_UPLOADER_H
#define DEV_UPLOADER_H

#include <stddef.h>
#include <stdint.h>

#include "dev_spool.h"
#include "wire_err.h"
#include "wire_sign.h"

struct dev_uploader_opts {
	const char *device_id;
	struct wire_pubkey bridge_key; /* acks must be signed by this key */
	int window;		       /* envelopes in flight, 1..1024 */
	int64_t ack_timeout_ms;	       /* first resend if no ack moves (dev_acktimer.h) */
};

/* Sends one envelope; returns 0 if it was handed to the link. */
typedef int (*dev_send_fn)(void *ctx, const struct dev_spool_rec *rec, const uint8_t *env,
			   size_t len);

struct dev_uploader;

int dev_uploader_new(struct dev_spool *spool, const struct dev_uploader_opts *opts,
		     struct dev_uploader **out);
void dev_uploader_free(struct dev_uploader *u); /* accepts NULL */

void dev_uploader_link_up(struct dev_uploader *u, int64_t now);
void dev_uploader_link_down(struct dev_uploader *u);

/* A record was just appended: it goes out before the backlog. */
void dev_uploader_fresh(struct dev_uploader *u, uint64_t seq);

/* Ranges of the `resend` task waiting to be sent, at most (overlapping or adjacent ones are
 * merged into one). */
#define DEV_UPLOADER_MAX_RESENDS 8

/* dev_uploader_resend: DEV_UPLOADER_MAX_RESENDS ranges are waiting already, none of which
 * this one overlaps or touches: it was not taken. Distinct from every wire_err. */
#define DEV_UPLOADER_EBUSY (-102)

/* Also send seq first..last (first 0 means 1) again, acknowledged or not, while still in the
 * spool (the `resend` task), lowest seqs first, in the bandwidth the window leaves after fresh
 * data; ranges wait across reconnects. 0 if taken, WIRE_EINVAL if first > last, or
 * DEV_UPLOADER_EBUSY (nothing changed). */
int dev_uploader_resend(struct dev_uploader *u, uint64_t first, uint64_t last);

/* How many resend ranges are waiting (the one being sent included). */
size_t dev_uploader_resends_pending(const struct dev_uploader *u);

/* The send callback refused an envelope (the link is down or going down): nothing was
 * recorded as sent; the next pump tries again. Distinct from every dev_spool_err. */
#define DEV_UPLOADER_ESEND (-100)

/* A verified ack that names a seq the spool never handed out (DEV_SPOOL_EFUTURE): nothing was
 * applied; diag names the seq and the spool's next. Distinct from every dev_spool_err and
 * wire_err. */
#define DEV_UPLOADER_EFUTURE (-101)

/* Send what the window allows. Returns how many were sent, or a negative dev_spool_err, or
 * DEV_UPLOADER_ESEND. */
int dev_uploader_pump(struct dev_uploader *u, int64_t now, dev_send_fn send, void *ctx);

/* The payload of a message on our ack topic. Verifies envelope, kind, device id and bridge
 * signature before anything changes. Returns 0 if applied, else a wire_err (diag says why);
 * a rejected ack deletes nothing. WIRE_EIO: verified and applied, but the spool could not
 * record it on disk (a restart may send those envelopes again; the bridge drops duplicates).
 * DEV_UPLOADER_EFUTURE: verified, but beyond anything the spool handed out: refused whole. */
int dev_uploader_on_ack(struct dev_uploader *u, const uint8_t *payload, size_t len, int64_t now,
			struct wire_diag *diag);

/* When pump must run again even without events (the ack timeout), INT64_MAX if never. */
int64_t dev_uploader_deadline(const struct dev_uploader *u);

struct dev_uploader_stats {
	uint64_t sent;
	uint64_t resent;   /* sends of a seq already sent before */
	uint64_t acks;
	uint64_t bad_acks;
	uint64_t timeouts;
	uint64_t inflight;
	uint64_t corrupt;  /* records that failed their integrity check */
};

void dev_uploader_stats(const struct dev_uploader *u, struct dev_uploader_stats *st);

#endif
