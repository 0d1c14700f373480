/* dev_uploader.c - windowed, ack-driven upload of spooled envelopes. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev_acktimer.h"
#include "dev_uploader.h"
#include "orand.h"
#include "wire_env.h"
#include "wire_msg.h"

#define MAX_WINDOW 1024
#define MAX_FRESH 16

struct dev_uploader {
	struct dev_spool *spool;
	struct dev_uploader_opts o;
	int up;
	struct dev_spool_cursor cursor; /* backlog, in seq order */
	struct flight {
		uint64_t seq;
		int64_t sent_ms; /* its latest send */
		int resent;	 /* sent before: its ack latency teaches nothing (Karn) */
		int fresh;	 /* sent as fresh data, ahead of the backlog */
	} *inflight;			/* sent and not yet acknowledged */
	size_t ninflight;
	uint64_t fresh[MAX_FRESH];
	size_t nfresh;
	struct {
		uint64_t first, last;
	} resend[DEV_UPLOADER_MAX_RESENDS]; /* `resend` ranges: ascending, apart, first >= 1 */
	size_t nresend;
	struct dev_acktimer timer;	    /* ack timeout, backoff and probe window */
	int probe;			    /* a timeout: the oldest unacknowledged goes first */
	uint64_t highest_sent;
	struct dev_uploader_stats st;
};

int dev_uploader_new(struct dev_spool *spool, const struct dev_uploader_opts *opts,
		     struct dev_uploader **out)
{
	if (!spool || !opts || !out || !opts->device_id || opts->window < 1 ||
	    opts->window > MAX_WINDOW || opts->ack_timeout_ms <= 0)
		return WIRE_EINVAL;
	struct dev_uploader *u = calloc(1, sizeof(*u));
	if (!u || !(u->inflight = calloc((size_t)opts->window, sizeof(*u->inflight)))) {
		free(u);
		return WIRE_ENOMEM;
	}
	u->spool = spool;
	u->o = *opts;
	dev_acktimer_init(&u->timer, opts->ack_timeout_ms, opts->window, orand_seed());
	*out = u;
	return WIRE_OK;
}

void dev_uploader_free(struct dev_uploader *u)
{
	if (!u)
		return;
	free(u->inflight);
	free(u);
}

void dev_uploader_link_up(struct dev_uploader *u, int64_t now)
{
	u->up = 1;
	u->cursor = DEV_SPOOL_CURSOR_AT(0); /* everything unacknowledged goes again */
	u->ninflight = 0;
	dev_acktimer_start(&u->timer, now);
}

void dev_uploader_link_down(struct dev_uploader *u)
{
	u->up = 0;
	u->ninflight = 0;
}

void dev_uploader_fresh(struct dev_uploader *u, uint64_t seq)
{
	if (u->nfresh == MAX_FRESH) {
		/* the backlog cursor will get to the oldest anyway */
		memmove(u->fresh, u->fresh + 1, (MAX_FRESH - 1) * sizeof(*u->fresh));
		u->nfresh--;
	}
	u->fresh[u->nfresh++] = seq;
}

int dev_uploader_resend(struct dev_uploader *u, uint64_t first, uint64_t last)
{
	size_t n = 0, at;
	first = first ? first : 1;
	if (first > last)
		return WIRE_EINVAL;
	/* take in every range this one overlaps or touches (first - 1 and r.first - 1 cannot
	 * wrap: both are at least 1) */
	for (size_t i = 0; i < u->nresend; i++) {
		if (u->resend[i].last >= first - 1 && u->resend[i].first - 1 <= last) {
			first = u->resend[i].first < first ? u->resend[i].first : first;
			last = u->resend[i].last > last ? u->resend[i].last : last;
			continue;
		}
		u->resend[n++] = u->resend[i];
	}
	if (n == DEV_UPLOADER_MAX_RESENDS)
		return DEV_UPLOADER_EBUSY; /* none taken in: the list is as it was */
	for (at = n; at > 0 && u->resend[at - 1].first > first; at--)
		u->resend[at] = u->resend[at - 1];
	u->resend[at].first = first;
	u->resend[at].last = last;
	u->nresend = n + 1;
	return WIRE_OK;
}

size_t dev_uploader_resends_pending(const struct dev_uploader *u)
{
	return u->nresend;
}

/* The first resend range is done (or given up). */
static void resend_done(struct dev_uploader *u)
{
	memmove(u->resend, u->resend + 1, (u->nresend - 1) * sizeof(u->resend[0]));
	u->nresend--;
}

static int in_flight(const struct dev_uploader *u, uint64_t seq)
{
	for (size_t i = 0; i < u->ninflight; i++)
		if (u->inflight[i].seq == seq)
			return 1;
	return 0;
}

static size_t fresh_in_flight(const struct dev_uploader *u)
{
	size_t n = 0;
	for (size_t i = 0; i < u->ninflight; i++)
		n += u->inflight[i].fresh != 0;
	return n;
}

static int send_rec(struct dev_uploader *u, int64_t now, dev_send_fn send, void *ctx,
		    const struct dev_spool_rec *rec, const uint8_t *env, size_t len, int fresh)
{
	int rc = send(ctx, rec, env, len);
	if (rc)
		return rc;
	int resent = rec->seq <= u->highest_sent;
	if (!u->ninflight)
		dev_acktimer_arm(&u->timer, now);
	if (!in_flight(u, rec->seq) && u->ninflight < (size_t)u->o.window)
		u->inflight[u->ninflight++] = (struct flight){rec->seq, now, resent, fresh};
	u->st.sent++;
	if (resent)
		u->st.resent++;
	else
		u->highest_sent = rec->seq;
	return 0;
}

/* send_next passed over SKIP_MAX records (corrupt, or out already) and sent none: the pump goes
 * on from *c, counting nothing. */
enum { SKIP_MAX = 64, SKIPPED = 2 };

/* Read one record at or after *c and send it; 1 when there is nothing more. */
static int send_next(struct dev_uploader *u, int64_t now, struct dev_spool_cursor *c,
		     int skip_acked, uint64_t stop_after, int fresh, dev_send_fn send, void *ctx)
{
	for (int guard = 0; guard < SKIP_MAX; guard++) {
		struct dev_spool_rec rec;
		uint8_t *env = NULL;
		size_t len;
		struct dev_spool_cursor at = *c;
		int rc = dev_spool_next(u->spool, c, skip_acked, &rec, &env, &len);
		if (rc == DEV_SPOOL_ECORRUPT) {
			u->st.corrupt++;
			continue;
		}
		if (rc)
			return rc;
		if (rec.seq > stop_after) {
			free(env);
			return 1;
		}
		if (skip_acked && in_flight(u, rec.seq)) {
			free(env);
			continue; /* already out, e.g. sent as fresh data */
		}
		rc = send_rec(u, now, send, ctx, &rec, env, len, fresh);
		free(env);
		if (rc)
			*c = at; /* not sent: the same record goes next (Paho's queue was full...) */
		return rc ? DEV_UPLOADER_ESEND : 0;
	}
	return SKIPPED;
}

int dev_uploader_pump(struct dev_uploader *u, int64_t now, dev_send_fn send, void *ctx)
{
	int sent = 0, backlog_done = 0;
	if (!u->up)
		return 0;
	if (u->ninflight && dev_acktimer_expired(&u->timer, now)) {
		/* Nothing acknowledged for too long: the bridge may have lost them (restart,
		 * failed commit), or it is just late. Probe with the oldest unacknowledged
		 * envelope; the window reopens as acks come back, the wait grows while not. */
		u->cursor = DEV_SPOOL_CURSOR_AT(0);
		u->ninflight = 0;
		u->probe = 1;
		u->st.timeouts++;
	}
	size_t fresh_out = fresh_in_flight(u);
	while (u->ninflight < (size_t)dev_acktimer_allowed(&u->timer)) {
		int rc;
		if (u->probe) {
			u->probe = 0;
			rc = send_next(u, now, &u->cursor, 1, UINT64_MAX, 0, send, ctx);
			if (rc == 1)
				continue;
		} else if (u->nfresh && (backlog_done || 2 * (fresh_out + 1) <=
							  (size_t)dev_acktimer_allowed(&u->timer))) {
			/* Fresh data goes first, in at most half the window (rounded down: none in a
			 * window of 1) while there is a backlog: unacknowledged fresh envelopes hold
			 * their places until the bridge acks them in ranges, and one that does not
			 * (an older bridge, a full range list) must not take the whole window, or the
			 * cumulative point would wait for an ack timeout per envelope. */
			uint64_t seq = u->fresh[0];
			memmove(u->fresh, u->fresh + 1, (u->nfresh - 1) * sizeof(*u->fresh));
			u->nfresh--;
			if (dev_spool_is_acked(u->spool, seq) || in_flight(u, seq))
				continue;
			struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(seq);
			rc = send_next(u, now, &c, 1, seq, 1, send, ctx);
			fresh_out += rc == 0;
		} else if (u->nresend) {
			struct dev_spool_cursor c = DEV_SPOOL_CURSOR_AT(u->resend[0].first);
			rc = send_next(u, now, &c, 0, u->resend[0].last, 0, send, ctx);
			if (rc == 1) {
				resend_done(u);
				continue;
			}
			/* sent: go on after it; refused by a dying link: the range waits for the next
			 * link; a spool error: give the range up, as retrying it would stall the pump */
			if ((rc == 0 || rc == SKIPPED) && c.next_seq && c.next_seq <= u->resend[0].last)
				u->resend[0].first = c.next_seq;
			else if (rc != DEV_UPLOADER_ESEND)
				resend_done(u);
		} else {
			rc = send_next(u, now, &u->cursor, 1, UINT64_MAX, 0, send, ctx);
			if (rc == 1) {
				if (!u->nfresh)
					break;
				backlog_done = 1; /* the rest of the window is fresh data's */
				continue;
			}
		}
		if (rc < 0)
			return sent ? sent : rc;
		if (rc == 0)
			sent++;
	}
	return sent;
}

int dev_uploader_on_ack(struct dev_uploader *u, const uint8_t *payload, size_t len, int64_t now,
			struct wire_diag *diag)
{
	struct wire_env env;
	Outpost__Ack *ack = NULL;
	int rc = wire_env_decode(payload, len, &env, diag);
	if (!rc && env.kind != WIRE_KIND_ACK)
		rc = WIRE_EKIND;
	if (!rc && strcmp(env.device_id, u->o.device_id))
		rc = WIRE_EID; /* an ack for another device */
	if (!rc)
		rc = wire_env_verify(&env, &u->o.bridge_key);
	if (!rc)
		rc = wire_ack_decode(env.body, env.body_len, &ack, diag);
	if (rc) {
		u->st.bad_acks++;
		return rc;
	}
	uint64_t (*ranges)[2] = NULL;
	if (ack->n_ranges) {
		ranges = calloc(ack->n_ranges, sizeof(*ranges));
		if (!ranges) {
			wire_msg_free(ack);
			return WIRE_ENOMEM;
		}
		for (size_t i = 0; i < ack->n_ranges; i++) {
			ranges[i][0] = ack->ranges[i]->first;
			ranges[i][1] = ack->ranges[i]->last;
		}
	}
	uint64_t before = dev_spool_acked_upto(u->spool), top = ack->upto;
	for (size_t i = 0; i < ack->n_ranges; i++)
		top = ack->ranges[i]->last > top ? ack->ranges[i]->last : top;
	int src = dev_spool_ack(u->spool, ack->upto, (const uint64_t(*)[2])ranges, ack->n_ranges);
	free(ranges);
	wire_msg_free(ack);
	if (src == DEV_SPOOL_EFUTURE) {
		u->st.bad_acks++;
		if (diag)
			snprintf(diag->msg, sizeof(diag->msg),
				 "ack up to %" PRIu64 " beyond anything this spool handed out "
				 "(next %" PRIu64 ")", top, dev_spool_next_seq(u->spool));
		return DEV_UPLOADER_EFUTURE;
	}
	/* The timer restarts only when the envelope waiting longest is acknowledged (or the
	 * cumulative point moves), as TCP's does on new cumulative acks: acks of newer envelopes
	 * alone must not keep a lost older one from ever timing out. */
	size_t n = 0, oldest = 0;
	for (size_t i = 1; i < u->ninflight; i++)
		if (u->inflight[i].sent_ms < u->inflight[oldest].sent_ms)
			oldest = i;
	int oldest_acked = 0;
	int64_t latency = -1; /* of the slowest envelope acknowledged now that was sent once */
	for (size_t i = 0; i < u->ninflight; i++) {
		const struct flight *f = &u->inflight[i];
		if (!dev_spool_is_acked(u->spool, f->seq)) {
			u->inflight[n++] = *f;
			continue;
		}
		oldest_acked |= i == oldest;
		dev_acktimer_note_latency(&latency, now, f->sent_ms, f->resent);
	}
	u->ninflight = n;
	if (oldest_acked || dev_spool_acked_upto(u->spool) > before)
		dev_acktimer_progress(&u->timer, now, latency);
	u->st.acks++;
	return src ? WIRE_EIO : WIRE_OK;
}

int64_t dev_uploader_deadline(const struct dev_uploader *u)
{
	if (!u->up || !u->ninflight)
		return INT64_MAX;
	return dev_acktimer_deadline(&u->timer);
}

void dev_uploader_stats(const struct dev_uploader *u, struct dev_uploader_stats *st)
{
	*st = u->st;
	st->inflight = u->ninflight;
}
