/* brg_commit.c - group transactions of the writer thread (see brg_commit.h): the devices of a
 * group, rejections and quarantine, status, births, and the transaction around it all. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brg_commit_int.h"
#include "brg_err.h"
#include "oarray.h"
#include "olog.h"
#include "store_ops.h"
#include "wire_env.h"
#include "wire_utf8.h"

const char *const brg_commit__sql[S_COUNT] = {
    [S_DEV_INS] = "INSERT INTO devices (device_id, state, created_at, state_changed_at)"
                  " VALUES (?, 'unenrolled', ?, ?) ON CONFLICT (device_id) DO NOTHING",
    [S_DEV_SEL] = NULL, /* dialect-specific, below */
    [S_DEV_UPD] = "UPDATE devices SET state = ?, state_reason = ?,"
                  " state_changed_at = COALESCE(?, state_changed_at), online = ?, frontier = ?, "
                  "last_nd_seq = ?, consecutive_rejects = ?,"
                  " envelopes = envelopes + ?, readings = readings + ?,"
                  " duplicates = duplicates + ?, rejected = rejected + ?, last_seen_at = ?,"
                  " last_birth_seq = ? WHERE id = ?",
    [S_DEV_BIRTH] = "UPDATE devices SET pubkey = ?, cert_pem = ?, agent_version = ?,"
                    " boot_id = ?, sample_interval_s = ?, poll_interval_s = ?,"
                    " spool_records = ?, spool_bytes = ?, spool_dropped_total = ?,"
                    " last_birth_at = ?, enrolled_at = COALESCE(enrolled_at, ?),"
                    " batch_interval_s = ? WHERE id = ?",
    [S_DEV_KEY] = "UPDATE devices SET pubkey = ? WHERE id = ? AND pubkey IS NULL",
    [S_EVENT] = "INSERT INTO events (at, device, type, detail) VALUES (?, ?, ?, ?)",
    [S_REJ] = "INSERT INTO rejections (device, reason, count, first_at, last_at, last_detail)"
              " VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (device, reason) DO UPDATE SET"
              " count = rejections.count + 1, last_at = excluded.last_at,"
              " last_detail = excluded.last_detail",
    [S_ENV_INS] = "INSERT INTO envelopes (device, seq, prev_seq, kind, sent_at, stored_at,"
                  " n_readings, sig) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                  " ON CONFLICT (device, seq) DO NOTHING",
    [S_ENV_SIG] = "SELECT sig FROM envelopes WHERE device = ? AND seq = ?",
    /* LATERAL ... LIMIT 1: one primary key lookup per key, never a scan of the table. */
    [S_ENV_KNOWN] = "SELECT k.device, k.seq"
                    " FROM unnest(?::bigint[], ?::bigint[]) AS k (device, seq),"
                    " LATERAL (SELECT 1 FROM envelopes e WHERE e.device = k.device"
                    " AND e.seq = k.seq LIMIT 1) AS e",
    [S_LINKS] = "SELECT prev_seq, seq, stored_at FROM envelopes WHERE device = ? AND seq > ?"
                " ORDER BY seq LIMIT 4096",
    /* by last_seq (index gaps_dropped): the ranges below the frontier are never visited; of
     * ranges ending together the lowest start first, which is where the chain goes on */
    [S_DROPS] =
        "SELECT prev_seq, last_seq, opened_at FROM gaps WHERE device = ? AND reason = 'dropped'"
        " AND last_seq > ? ORDER BY last_seq, prev_seq LIMIT 1024",
    [S_GAP_INS] = "INSERT INTO gaps (device, reason, prev_seq, last_seq, count, opened_at)"
                  " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device, reason, prev_seq) DO NOTHING",
    [S_GAP_GROW_DROP] = "UPDATE gaps SET last_seq = ?, count = ? WHERE device = ? AND"
                        " reason = 'dropped' AND prev_seq = ? AND last_seq < ?",
    [S_GAP_MOVE_MISS] = "UPDATE gaps SET last_seq = ? WHERE device = ? AND reason = 'missing'"
                        " AND prev_seq = ? AND resolved_at IS NULL AND last_seq <> ?",
    /* a hole the frontier passed because the device reported (part of) it dropped */
    [S_GAP_FILL_DROPPED] =
        "UPDATE gaps SET resolved_at = ?, resolution = 'dropped' WHERE device = ? AND"
        " reason = 'missing' AND resolved_at IS NULL AND last_seq <= ? AND EXISTS (SELECT 1"
        " FROM gaps d WHERE d.device = ? AND d.reason = 'dropped' AND d.prev_seq < gaps.last_seq"
        " AND d.last_seq > gaps.prev_seq)",
    [S_GAP_FILL] = "UPDATE gaps SET resolved_at = ?, resolution = 'filled' WHERE device = ?"
                   " AND reason = 'missing' AND resolved_at IS NULL AND last_seq <= ?",
    /* a backlog arriving in order fills a hole from below: the gap keeps its row (one
     * gap_missing event per hole, not one per commit) unless a row already has that prev_seq.
     * One row at most (moving two rows to one prev_seq breaks the unique key): the open hole
     * that ends first, found among the open ones (index gaps_open), not among all past holes.
     * Holes do not overlap, so it is the only one that contains the seq. */
    [S_GAP_SHRINK] = "UPDATE gaps SET prev_seq = ? WHERE id = (SELECT id FROM gaps WHERE"
                     " device = ? AND reason = 'missing' AND resolved_at IS NULL AND"
                     " prev_seq < ? AND last_seq > ? ORDER BY last_seq LIMIT 1) AND NOT EXISTS"
                     " (SELECT 1 FROM gaps g WHERE g.device = ? AND g.reason = 'missing'"
                     " AND g.prev_seq = ?)",
    /* a Birth's chain_floor above the frontier: holes ending at or below it will never fill
     * (one reaching above it is shrunk to start there, S_GAP_SHRINK) */
    [S_GAP_LOSE] = "UPDATE gaps SET resolved_at = ?, resolution = 'lost' WHERE device = ?"
                   " AND reason = 'missing' AND resolved_at IS NULL AND last_seq <= ?",
    /* lost stretches never overlap: the one starting last before seq is the only candidate */
    [S_GAP_IN_LOST] = "SELECT last_seq FROM gaps WHERE device = ? AND reason = 'lost' AND"
                      " prev_seq < ? ORDER BY prev_seq DESC LIMIT 1",
    [S_METRIC_CLEAR] = "UPDATE metrics SET wire_id = NULL WHERE device = ? AND"
                       " wire_id IS NOT NULL",
    [S_METRIC_COUNT] = "SELECT COUNT(*) FROM metrics WHERE device = ?",
    [S_METRIC_SET] = "UPDATE metrics SET unit = ?, wire_id = ? WHERE device = ? AND name = ?",
    /* an upsert: another bridge on the store may add the same name at the same time */
    [S_METRIC_ADD] = "INSERT INTO metrics (device, name, unit, wire_id) VALUES (?, ?, ?, ?)"
                     " ON CONFLICT (device, name) DO UPDATE SET unit = excluded.unit,"
                     " wire_id = excluded.wire_id",
    [S_METRIC_LOAD] = "SELECT wire_id, id FROM metrics WHERE device = ? AND"
                      " wire_id IS NOT NULL",
    [S_METRIC_PLACE] = "INSERT INTO metrics (device, name, unit, wire_id) VALUES (?, ?, '', ?)"
                       " ON CONFLICT (device, name) DO UPDATE SET wire_id = excluded.wire_id"
                       " RETURNING id",
    [S_TASK_SEL] = "SELECT id, type, expires_at, created_at, state FROM tasks WHERE"
                   " device = ? AND expires_at > ? AND (state = 'queued' OR"
                   " (state = 'delivered' AND id > ?)) ORDER BY id LIMIT ?",
    [S_TASK_ARGS] = "SELECT key, value FROM task_args WHERE task = ? ORDER BY idx",
    [S_TASK_DELIV] = "UPDATE tasks SET state = 'delivered', delivered_at ="
                     " COALESCE(delivered_at, ?), deliveries = deliveries + 1 WHERE id = ?"
                     " AND state IN ('queued', 'delivered')",
    [S_TASK_GET] = "SELECT state, expires_at, type, result_seq IS NOT NULL FROM tasks"
                   " WHERE id = ? AND device = ?",
    [S_TASK_FINISH] = "UPDATE tasks SET state = ?, finished_at = ?, result_status = ?,"
                      " result_message = ?, result_seq = ? WHERE id = ? AND result_seq IS NULL"
                      " AND state IN ('queued', 'delivered', 'expired')",
    [S_TASK_OUT] = "INSERT INTO task_output (task, idx, key, value) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (task, idx) DO NOTHING",
    [S_TASK_BEHIND] = "UPDATE tasks SET state = 'failed', finished_at = ?, result_message = ?"
                      " WHERE id = ? AND state = 'queued'",
    /* a key revoked once is refused for good, whatever device it is presented for */
    [S_KEY_REVOKED] = "SELECT revoked_at FROM revoked_keys WHERE key = ?",
    [S_KEY_REVOKE] = STORE_SQL_KEY_REVOKE,
};

#define DEV_SEL_COLS                                                                               \
	"SELECT id, state, state_reason, online, pubkey, frontier, last_nd_seq,"                   \
	" consecutive_rejects, sample_interval_s, poll_interval_s, last_seen_at, boot_id,"         \
	" agent_version, last_birth_at, last_birth_seq FROM devices WHERE device_id = ?"

/* ---- outcome ---- */

void brg_commit__clear_task(struct brg_task *t)
{
	for (size_t k = 0; k < t->n_args; k++) {
		free(t->keys[k]);
		free(t->values[k]);
	}
	free(t->keys);
	free(t->values);
	memset(t, 0, sizeof(*t));
}

void brg_commit__free_tasks(struct brg_task *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		brg_commit__clear_task(&t[i]);
	free(t);
}

void brg_outcome_clear(struct brg_outcome *o)
{
	for (size_t i = 0; i < o->n_replies; i++) {
		free(o->replies[i].ranges);
		brg_commit__free_tasks(o->replies[i].tasks, o->replies[i].n_tasks);
	}
	o->n_replies = o->n_notes = o->n_states = 0;
	o->envelopes = o->readings = o->duplicates = o->rejected = o->unjudged = 0;
}

void brg_outcome_free(struct brg_outcome *o)
{
	if (!o)
		return;
	brg_outcome_clear(o);
	free(o->replies);
	free(o->notes);
	free(o->states);
	memset(o, 0, sizeof(*o));
}

/* Grow *arr (of elem-sized entries) so one more fits: 0 or STORE_ENOMEM. */
int brg_commit__reserve(void **arr, size_t *cap, size_t n, size_t elem)
{
	return oarray_reserve(arr, cap, n, elem) ? STORE_ENOMEM : 0;
}

struct brg_reply *brg_commit__add_reply(struct brg_outcome *o)
{
	if (brg_commit__reserve((void **)&o->replies, &o->cap_replies, o->n_replies,
	                        sizeof(*o->replies)))
		return NULL;
	struct brg_reply *r = &o->replies[o->n_replies++];
	memset(r, 0, sizeof(*r));
	return r;
}

void brg_commit__note(struct brg_committer *c, int level, const char *device, const char *fmt, ...)
{
	struct brg_outcome *o = c->out;
	if (brg_commit__reserve((void **)&o->notes, &o->cap_notes, o->n_notes, sizeof(*o->notes)))
		return; /* a log line lost to memory pressure; the event row is in the store */
	struct brg_note *n = &o->notes[o->n_notes++];
	va_list ap;
	n->level = level;
	snprintf(n->device, sizeof(n->device), "%s", device ? device : "");
	va_start(ap, fmt);
	vsnprintf(n->text, sizeof(n->text), fmt, ap);
	va_end(ap);
}

/* ---- setup ---- */

int brg_committer_new(struct store *s, const struct brg_commit_opts *o, struct brg_committer **out)
{
	struct brg_committer *c = calloc(1, sizeof(*c));
	int rc = STORE_ENOMEM;
	if (!c)
		return rc;
	c->s = s;
	c->o = *o;
	c->mc_max_devices = MCACHE_MAX_DEVICES;
	c->mc_max_entries = MCACHE_MAX_ENTRIES;
	c->links = malloc((MAX_LINKS + MAX_DROP_LINKS) * sizeof(*c->links));
	c->sorter = brg_rowsort_new();
	if (!c->links || !c->sorter)
		goto fail;
	for (int i = 0; i < S_COUNT; i++) {
		const char *q = brg_commit__sql[i];
		if (i == S_DEV_SEL)
			q = store_dialect(s) == STORE_PG ? DEV_SEL_COLS " FOR UPDATE"
			                                 : DEV_SEL_COLS;
		if (i == S_ENV_KNOWN && store_dialect(s) != STORE_PG)
			continue;
		if ((rc = store_prepare(s, q, &c->st[i])))
			goto fail;
	}
	rc = store_copy_new(s, "readings", "device, metric, ts, seq, idx, value", 6, &c->copy);
	if (!rc && store_dialect(s) == STORE_PG)
		rc = store_copy_new(s, "envelopes",
		                    "device, seq, prev_seq, kind, sent_at, stored_at, n_readings, sig",
		                    8, &c->env_copy);
	if (rc)
		goto fail;
	*out = c;
	return STORE_OK;
fail:
	brg_committer_free(c);
	return rc;
}

void brg_commit__mcache_forget(struct brg_committer *c, int64_t device)
{
	struct mcache **pp = &c->mc[(uint64_t)device % MCACHE_BUCKETS];
	while (*pp && (*pp)->device != device)
		pp = &(*pp)->next;
	if (*pp) {
		struct mcache *m = *pp;
		*pp = m->next;
		c->mc_entries -= m->n;
		free(m->e);
		free(m);
		c->mc_devices--;
	}
}

void brg_commit__mcache_clear(struct brg_committer *c)
{
	for (size_t b = 0; b < MCACHE_BUCKETS; b++) {
		struct mcache *m = c->mc[b];
		while (m) {
			struct mcache *next = m->next;
			free(m->e);
			free(m);
			m = next;
		}
		c->mc[b] = NULL;
	}
	c->mc_devices = c->mc_entries = 0;
}

void brg_committer_free(struct brg_committer *c)
{
	if (!c)
		return;
	for (int i = 0; i < S_COUNT; i++)
		store_stmt_free(c->st[i]);
	store_copy_free(c->copy);
	store_copy_free(c->env_copy);
	brg_commit__mcache_clear(c);
	free(c->devs);
	free(c->rows);
	brg_rowsort_free(c->sorter);
	free(c->ekeys);
	free(c->erows);
	free(c->arr);
	free(c->links);
	free(c);
}

/* ---- statement helpers: bind a list of values and run ---- */

/* Run statement i to completion (no rows wanted). */
int brg_commit__run_changes(struct brg_committer *c, int i, int64_t *changes)
{
	int rc = store_step(c->st[i]);
	if (rc > 0) /* a row we do not need */
		rc = 0;
	if (changes)
		*changes = rc ? 0 : store_changes(c->st[i]); /* read before the reset */
	store_reset(c->st[i]);
	return rc;
}

int brg_commit__run(struct brg_committer *c, int i)
{
	return brg_commit__run_changes(c, i, NULL);
}

int brg_commit__event(struct brg_committer *c, const struct wdev *w, const char *type,
                      const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	int rc;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	wire_utf8_sanitize(detail); /* it may quote device text cut mid-character */
	B64(S_EVENT, 1, c->now);
	if (w && w->key)
		B64(S_EVENT, 2, w->key);
	else if ((rc = store_bind_null(c->st[S_EVENT], 2)))
		goto out;
	BTXT(S_EVENT, 3, type);
	BTXT(S_EVENT, 4, detail);
	rc = brg_commit__run(c, S_EVENT);
	if (!rc)
		brg_commit__note(c,
		                 !strcmp(type, "rejected") || !strcmp(type, "quarantined") ||
		                         !strcmp(type, "revoked") || !strcmp(type, "gap_missing")
		                     ? OLOG_WARN
		                     : OLOG_INFO,
		                 w ? w->id : NULL, "%s: %s", type, detail);
out:
	return rc;
}

void brg_commit__set_state(struct wdev *w, const char *state, const char *reason)
{
	snprintf(w->state, sizeof(w->state), "%s", state);
	snprintf(w->reason, sizeof(w->reason), "%s", reason);
	wire_utf8_sanitize(w->reason);
	w->state_changed = 1;
	w->dirty = 1;
}

/* ---- devices of the group ---- */

static int cmp_dev(const void *a, const void *b)
{
	return strcmp(((const struct wdev *)a)->id, ((const struct wdev *)b)->id);
}

static struct wdev *dev_find(struct brg_committer *c, const char *id)
{
	struct wdev key = {.id = id};
	return bsearch(&key, c->devs, c->n_devs, sizeof(*c->devs), cmp_dev);
}

/* Read (and on PostgreSQL lock) w's row: 1 if there is one, 0 if not, < 0 error. */
static int read_device(struct brg_committer *c, struct wdev *w)
{
	struct store_stmt *st = c->st[S_DEV_SEL];
	int rc;
	BTXT(S_DEV_SEL, 1, w->id);
	rc = store_step(st);
	if (rc == 1) {
		size_t len;
		const void *p;
		w->key = store_col_i64(st, 0);
		snprintf(w->state, sizeof(w->state), "%s", store_col_text(st, 1));
		snprintf(w->reason, sizeof(w->reason), "%s",
		         store_col_text(st, 2) ? store_col_text(st, 2) : "");
		wire_utf8_sanitize(w->reason); /* an operator's reason is at most 255 bytes */
		w->online = (int)store_col_i64(st, 3);
		p = store_col_blob(st, 4, &len);
		if (p && len == WIRE_PUBKEY_LEN) {
			memcpy(w->pub, p, len);
			w->has_key = 1;
		}
		w->frontier = store_col_i64(st, 5);
		w->last_nd_seq = store_col_i64(st, 6);
		w->consecutive = store_col_i64(st, 7);
		w->sample_s = store_col_i64(st, 8);
		w->poll_s = store_col_i64(st, 9);
		w->last_seen = store_col_i64(st, 10);
		p = store_col_blob(st, 11, &len);
		if (p && len == WIRE_BOOT_ID_LEN) {
			memcpy(w->boot_id, p, len);
			w->has_boot = 1;
		}
		snprintf(w->agent, sizeof(w->agent), "%s",
		         store_col_text(st, 12) ? store_col_text(st, 12) : "");
		w->birth_at = store_col_i64(st, 13);
		w->last_birth_seq = store_col_i64(st, 14);
	}
	store_reset(st);
out:
	return rc;
}

/* Create (if needed) and lock the row of every device of the group, in id order so that two
 * bridges never wait for each other in a cycle. */
static int load_devices(struct brg_committer *c, struct brg_item *const *items, size_t n)
{
	int rc = 0;
	c->n_devs = 0;
	for (size_t i = 0; i < n; i++) {
		if (!items[i]->device[0] || items[i]->kind == BRG_ITEM_DROP)
			continue;
		if (brg_commit__reserve((void **)&c->devs, &c->cap_devs, c->n_devs,
		                        sizeof(*c->devs)))
			return STORE_ENOMEM;
		struct wdev *w = &c->devs[c->n_devs++];
		memset(w, 0, sizeof(*w));
		w->id = items[i]->device;
		/* Status alone never creates a device; anything else is counted against one. */
		w->needs_row = items[i]->kind != BRG_ITEM_STATUS;
	}
	qsort(c->devs, c->n_devs, sizeof(*c->devs), cmp_dev);
	size_t u = 0;
	for (size_t i = 0; i < c->n_devs; i++) {
		if (u && !strcmp(c->devs[u - 1].id, c->devs[i].id)) {
			c->devs[u - 1].needs_row |= c->devs[i].needs_row;
			continue;
		}
		c->devs[u++] = c->devs[i];
	}
	c->n_devs = u;
	for (size_t i = 0; i < c->n_devs; i++) {
		struct wdev *w = &c->devs[i];
		/* Read first, insert only a device not seen yet: on PostgreSQL an INSERT that
		 * conflicts still uses up an identity value, once per device per commit. */
		if ((rc = read_device(c, w)) == 0 && w->needs_row) {
			BTXT(S_DEV_INS, 1, w->id);
			B64(S_DEV_INS, 2, c->now);
			B64(S_DEV_INS, 3, c->now);
			if ((rc = brg_commit__run(c, S_DEV_INS)))
				goto out;
			rc = read_device(c, w);
		}
		if (rc < 0)
			goto out;
		rc = 0;
	}
out:
	return rc;
}

int brg_commit__is_state(const struct wdev *w, const char *s)
{
	return !strcmp(w->state, s);
}

/* Count a rejection against w; toward_quarantine: it is one of the consecutive ones. */
int brg_commit__count_reject(struct brg_committer *c, struct wdev *w, const char *reason,
                             const char *detail, int toward_quarantine)
{
	int rc;
	c->out->rejected++;
	if (!w || !w->key)
		return 0;
	B64(S_REJ, 1, w->key);
	BTXT(S_REJ, 2, reason);
	B64(S_REJ, 3, c->now);
	B64(S_REJ, 4, c->now);
	BTXT(S_REJ, 5, detail);
	if ((rc = brg_commit__run(c, S_REJ)))
		goto out;
	w->d_rej++;
	w->dirty = 1;
	/* Counted only, no event row: these repeat for as long as the device keeps sending (it is
	 * quarantined, or never sent a valid birth), and the counters say it all. */
	if (!strcmp(reason, BRG_R_QUARANTINED) || !strcmp(reason, BRG_R_UNKNOWN))
		return 0;
	if ((rc = brg_commit__event(c, w, "rejected", "%s: %s", reason, detail)))
		goto out;
	if (!toward_quarantine)
		return 0;
	w->consecutive++;
	if (c->o.quarantine_after > 0 && w->consecutive >= c->o.quarantine_after &&
	    !brg_commit__is_state(w, STORE_ST_QUARANTINED) &&
	    !brg_commit__is_state(w, STORE_ST_REVOKED)) {
		char why[160];
		snprintf(why, sizeof(why), "%lld consecutive rejections, last: %s",
		         (long long)w->consecutive, reason);
		brg_commit__set_state(w, STORE_ST_QUARANTINED, why);
		rc = brg_commit__event(c, w, "quarantined", "%s", why);
	}
out:
	return rc;
}

/* A message of w was accepted. */
int brg_commit__accepted(struct brg_committer *c, struct wdev *w)
{
	w->consecutive = 0;
	w->last_seen = c->now;
	w->dirty = 1;
	if (!w->online) {
		w->online = 1;
		return brg_commit__event(c, w, "online", "message received");
	}
	return 0;
}

/* 1 if key is in revoked_keys, 0 if not, < 0 on error. */
static int key_revoked(struct brg_committer *c, const struct wire_pubkey *k)
{
	int rc;
	BBLOB(S_KEY_REVOKED, 1, k->raw, WIRE_PUBKEY_LEN);
	rc = store_step(c->st[S_KEY_REVOKED]);
	store_reset(c->st[S_KEY_REVOKED]);
out:
	return rc;
}

int brg_commit__revoke_key(struct brg_committer *c, const struct wdev *w, const uint8_t *key)
{
	int rc;
	BBLOB(S_KEY_REVOKE, 1, key, WIRE_PUBKEY_LEN);
	B64(S_KEY_REVOKE, 2, w->key);
	B64(S_KEY_REVOKE, 3, c->now);
	rc = brg_commit__run(c, S_KEY_REVOKE);
out:
	return rc;
}

/* Authoritative state check for a judged message (the verifier's cache may be stale).
 * Returns 1 to go on, 0 if handled (counted), < 0 on error. */
static int gate(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	char d[160];
	int rc;
	/* Verified with the key of a Birth the store does not hold (not yet: it is later in the
	 * queue; or refused): not for this group. Dropped unacknowledged; the device resends it. */
	if (it->provisional && (!w->has_key || memcmp(w->pub, it->key.raw, WIRE_PUBKEY_LEN))) {
		brg_commit__note(c, OLOG_INFO, w->id,
		                 "seq %llu verified with the key of a Birth not stored yet: left "
		                 "unacknowledged (the device sends it again)",
		                 (unsigned long long)it->seq);
		return 0;
	}
	if (brg_commit__is_state(w, STORE_ST_QUARANTINED)) {
		rc = brg_commit__count_reject(c, w, BRG_R_QUARANTINED,
		                              "dropped: device quarantined", 0);
		return rc ? rc : 0;
	}
	/* A key revoked once (revoked_keys) never enrols again, also after the device moved on to
	 * a new key: it may be a stolen one whose certificate is still valid at the broker. */
	if (it->kind == BRG_ITEM_BIRTH && (rc = key_revoked(c, &it->key)) != 0) {
		if (rc < 0)
			return rc;
		snprintf(d, sizeof(d),
		         "birth seq %llu refused: its key was revoked (a device comes"
		         " back only with a new key)",
		         (unsigned long long)it->seq);
		rc = brg_commit__count_reject(c, w, BRG_R_REVOKED, d, 0);
		return rc ? rc : 0;
	}
	/* Revocation holds the stored key: a Birth with another key re-enrols the device, and so
	 * does any verified Birth when none is held (revoked before it ever enrolled). */
	if (brg_commit__is_state(w, STORE_ST_REVOKED) &&
	    !(it->kind == BRG_ITEM_BIRTH &&
	      (!w->has_key || memcmp(w->pub, it->key.raw, WIRE_PUBKEY_LEN)))) {
		rc = brg_commit__count_reject(c, w, BRG_R_REVOKED, "refused: device revoked", 0);
		return rc ? rc : 0;
	}
	if (it->kind != BRG_ITEM_BIRTH && !w->has_key) {
		snprintf(d, sizeof(d), "seq %llu before any valid birth",
		         (unsigned long long)it->seq);
		rc = brg_commit__count_reject(c, w, BRG_R_UNKNOWN, d, 0);
		return rc ? rc : 0;
	}
	/* Verified with a key other than the stored one: the verifiers' registry (read once,
	 * then trusted while signatures verify) holds a key another bridge of the group has
	 * rotated away from since. Sealed before the rotation, it is accepted, unless that key
	 * was revoked (outpostctl device revoke, then a Birth with a new key): a stolen one. */
	if (it->kind != BRG_ITEM_BIRTH && memcmp(w->pub, it->key.raw, WIRE_PUBKEY_LEN) &&
	    (rc = key_revoked(c, &it->key)) != 0) {
		if (rc < 0)
			return rc;
		snprintf(d, sizeof(d), "seq %llu refused: signed with a revoked key",
		         (unsigned long long)it->seq);
		rc = brg_commit__count_reject(c, w, BRG_R_REVOKED, d, 0);
		return rc ? rc : 0;
	}
	if (brg_commit__is_state(w, STORE_ST_DEACTIVATED)) {
		brg_commit__set_state(w, STORE_ST_ACTIVE, "reactivated: message received");
		rc = brg_commit__event(c, w, "reactivated", "message received after deactivation");
		if (rc)
			return rc;
	}
	return 1;
}

/* ---- items ---- */

/* A device that holds no key gets this one (revoked: see do_reject). */
static int hold_key(struct brg_committer *c, struct wdev *w, const struct wire_pubkey *k)
{
	int rc;
	BBLOB(S_DEV_KEY, 1, k->raw, WIRE_PUBKEY_LEN);
	B64(S_DEV_KEY, 2, w->key);
	if ((rc = brg_commit__run(c, S_DEV_KEY)))
		goto out;
	memcpy(w->pub, k->raw, WIRE_PUBKEY_LEN);
	w->has_key = 1;
out:
	return rc;
}

static int do_reject(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	if (!w) /* not an Outpost topic: nothing to count it against */
		return brg_commit__count_reject(c, NULL, it->reason, it->detail, 0);
	/* The verifier's cache can lag behind the store: judge again with the row in hand. */
	if (!strcmp(it->reason, BRG_R_QUARANTINED) &&
	    !brg_commit__is_state(w, STORE_ST_QUARANTINED))
		return 0; /* released meanwhile; the device resends */
	if (!strcmp(it->reason, BRG_R_UNKNOWN) && w->has_key)
		return 0; /* enrolled meanwhile; the device resends */
	/* The CRL revokes the key it certifies: the enrolled one, or none yet, and then that key
	 * is held (a certificate re-issued for it must not enrol the id; a new key does). A Birth
	 * of an earlier key the device has since rotated away from (redelivered, or committed late
	 * by another bridge of the group) is refused and changes nothing. */
	if (!strcmp(it->reason, BRG_R_REVOKED) && it->crl_revoked && !w->has_key) {
		int rc = hold_key(c, w, &it->key);
		if (rc)
			return rc;
	}
	/* ... and remembered: a certificate re-issued for it must not enrol it after a rotation */
	if (!strcmp(it->reason, BRG_R_REVOKED) && it->crl_revoked && w->key) {
		int rc = brg_commit__revoke_key(c, w, it->key.raw);
		if (rc)
			return rc;
	}
	if (!strcmp(it->reason, BRG_R_REVOKED) && !brg_commit__is_state(w, STORE_ST_REVOKED)) {
		if (it->crl_revoked &&
		    (!w->has_key || !memcmp(w->pub, it->key.raw, WIRE_PUBKEY_LEN))) {
			brg_commit__set_state(w, STORE_ST_REVOKED,
			                      "certificate revoked by the CRL");
			int rc = brg_commit__event(
			    c, w, "revoked", "certificate revoked by the CRL (birth seq %llu)",
			    (unsigned long long)it->seq);
			if (rc)
				return rc;
		}
	}
	/* Not toward quarantine: a revocation already refuses everything, a device that is not
	 * enrolled yet may have its Birth in flight at another bridge of the group, and an expired
	 * CRL is the operator's doing, not the device's. */
	int toward = strcmp(it->reason, BRG_R_REVOKED) && strcmp(it->reason, BRG_R_UNKNOWN) &&
	             strcmp(it->reason, BRG_R_CRL);
	return brg_commit__count_reject(c, w, it->reason, it->detail, toward);
}

static int do_status(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	int rc;
	if (!w || !w->key)
		return 0; /* status of a device the store never saw */
	/* `offline` is taken whatever the device's state: it is gone (its will; for a device the
	 * CRL revokes, the broker's plugin says it in the will's place). */
	if (!it->online) {
		if (!w->online)
			return 0;
		w->online = 0;
		w->dirty = 1;
		return brg_commit__event(c, w, "offline",
		                         "status: offline (stopped, or its connection was lost)");
	}
	if (it->retained)
		return 0; /* delivered at the subscription: maybe older than the device's silence */
	/* A quarantined or revoked device's `online` is dropped and counted like its other
	 * messages: it does not set the device online (a revoked device's rejection adds its
	 * `rejected` event, as its other messages' do). */
	if (brg_commit__is_state(w, STORE_ST_QUARANTINED)) {
		rc = brg_commit__count_reject(c, w, BRG_R_QUARANTINED,
		                              "status dropped: device quarantined", 0);
		return rc ? rc : 0;
	}
	if (brg_commit__is_state(w, STORE_ST_REVOKED)) {
		rc = brg_commit__count_reject(c, w, BRG_R_REVOKED, "status refused: device revoked",
		                              0);
		return rc ? rc : 0;
	}
	if (w->online)
		return 0;
	w->online = 1;
	w->last_seen = c->now;
	w->dirty = 1;
	return brg_commit__event(c, w, "online", "status: online");
}

/* A poll must carry a seq above every birth/poll seen, a Birth above every Birth (PROTOCOL.md
 * 5.7): a device sends its Birth and a poll back to back, and bridges sharing its messages
 * may commit the poll first. The last one seen again is the broker redelivering it (a seq is
 * signed once by its device): a duplicate, counted, not answered again; as any message the
 * device signed, it resets the count toward quarantine. */
int brg_commit__fresh(struct brg_committer *c, struct wdev *w, const struct brg_item *it,
                      int is_birth)
{
	char d[160];
	int64_t seq = (int64_t)it->seq, last = is_birth ? w->last_birth_seq : w->last_nd_seq;
	if (seq == last) {
		w->d_dup++;
		c->out->duplicates++;
		w->dirty = 1;
		int rc = brg_commit__accepted(c, w); /* the device's own: resets the count */
		return rc < 0 ? rc : 0;
	}
	if (seq < last) {
		snprintf(d, sizeof(d), "%s seq %llu not above %lld", is_birth ? "birth" : "poll",
		         (unsigned long long)it->seq, (long long)last);
		int rc = brg_commit__count_reject(c, w, BRG_R_REPLAYED, d, 1);
		return rc ? rc : 0;
	}
	if (is_birth)
		w->last_birth_seq = seq;
	if (seq > w->last_nd_seq)
		w->last_nd_seq = seq;
	w->dirty = 1;
	return 1;
}

static void hex(char *out, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

int brg_commit__lose(struct brg_committer *c, struct wdev *w, uint64_t after, uint64_t upto)
{
	int rc = brg_commit__insert_gap(c, w, "lost", after, upto, -1);
	if (rc < 0)
		goto out;
	B64(S_GAP_LOSE, 1, c->now);
	B64(S_GAP_LOSE, 2, w->key);
	B64(S_GAP_LOSE, 3, upto);
	rc = brg_commit__run(c, S_GAP_LOSE);
out:
	return rc;
}

/* A known device says everything up to floor was acknowledged or dropped, but the store's chain
 * ends below it: its state was wiped and it numbers afresh above its earlier life (or the store
 * was restored from an older backup). Nothing in between can come any more: record the stretch
 * as a gap of reason `lost`, give up the holes that start in it, and continue the chain at the
 * floor so that the new numbering is acknowledged as a chain, not by ranges. The statement is
 * the device's own (a signed Birth, fresher than every Birth and poll before it: a replayed or
 * withheld one is refused as `replayed` before it gets here). */
static int floor_ahead(struct brg_committer *c, struct wdev *w, uint64_t floor)
{
	int rc = brg_commit__lose(c, w, (uint64_t)w->frontier, floor);
	if (rc)
		goto out;
	if ((rc = brg_commit__shrink_holes(c, w, floor)))
		goto out;
	rc = brg_commit__event(c, w, "chain_floor_ahead",
	                       "device reports everything up to seq %llu acknowledged or dropped; "
	                       "the store's chain ended at %lld: seqs %lld..%llu recorded as lost "
	                       "(state directory wiped, or store restored from a backup)",
	                       (unsigned long long)floor, (long long)w->frontier,
	                       (long long)w->frontier + 1, (unsigned long long)floor);
	w->frontier = (int64_t)floor;
	w->dirty = 1;
	w->durable = 1; /* walk the chain from the floor and acknowledge, also in a Birth-only group */
out:
	return rc;
}

/* A Birth signed this long after the bridge's time says the device's clock runs ahead: its
 * readings are dated in the future (retention cuts those by arrival, store_prune.c). A clock
 * behind cannot be told from a Birth that waited at the broker, so only ahead is reported. */
#define CLOCK_AHEAD_MS (5 * 60 * 1000LL)

static int do_birth(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	const Outpost__Birth *b = it->birth;
	char boot[2 * WIRE_BOOT_ID_LEN + 1];
	int rc = brg_commit__fresh(c, w, it, 1);
	if (rc <= 0)
		return rc;
	int first = !w->has_key;
	int rekey = w->has_key && memcmp(w->pub, it->key.raw, WIRE_PUBKEY_LEN);
	int restarted = !w->has_boot || memcmp(w->boot_id, b->boot_id.data, WIRE_BOOT_ID_LEN) ||
	                strcmp(w->agent, b->agent_version ? b->agent_version : "");
	hex(boot, b->boot_id.data, WIRE_BOOT_ID_LEN);

	BBLOB(S_DEV_BIRTH, 1, it->key.raw, WIRE_PUBKEY_LEN);
	BTXT(S_DEV_BIRTH, 2, b->cert_pem);
	BTXT(S_DEV_BIRTH, 3, b->agent_version ? b->agent_version : "");
	BBLOB(S_DEV_BIRTH, 4, b->boot_id.data, b->boot_id.len);
	B64(S_DEV_BIRTH, 5, b->sample_interval_s);
	B64(S_DEV_BIRTH, 6, b->poll_interval_s);
	if (b->spool) {
		B64(S_DEV_BIRTH, 7, b->spool->records > INT64_MAX ? INT64_MAX : b->spool->records);
		B64(S_DEV_BIRTH, 8, b->spool->bytes > INT64_MAX ? INT64_MAX : b->spool->bytes);
		B64(S_DEV_BIRTH, 9,
		    b->spool->dropped_total > INT64_MAX ? INT64_MAX : b->spool->dropped_total);
	} else {
		for (int i = 7; i <= 9; i++)
			if ((rc = store_bind_null(c->st[S_DEV_BIRTH], i)))
				goto out;
	}
	B64(S_DEV_BIRTH, 10, c->now);
	B64(S_DEV_BIRTH, 11, c->now);
	B64(S_DEV_BIRTH, 12, b->batch_interval_s);
	B64(S_DEV_BIRTH, 13, w->key);
	if ((rc = brg_commit__run(c, S_DEV_BIRTH)))
		goto out;
	memcpy(w->pub, it->key.raw, WIRE_PUBKEY_LEN);
	w->has_key = 1;
	w->sample_s = b->sample_interval_s;
	w->poll_s = b->poll_interval_s;
	memcpy(w->boot_id, b->boot_id.data, WIRE_BOOT_ID_LEN);
	w->has_boot = 1;
	snprintf(w->agent, sizeof(w->agent), "%s", b->agent_version ? b->agent_version : "");

	/* Metric catalog: names travel here once; batches use the ids. */
	if ((rc = brg_commit__catalog(c, w, b, it->seq)))
		goto out;
	/* Forget the cached id map of this device (reloaded at its next batch). */
	w->birth_at = c->now;
	brg_commit__mcache_forget(c, w->key);

	/* the floor is a durable seq handed out before this Birth's own */
	int floor_ok = b->chain_floor < it->seq;
	if (!floor_ok && b->chain_floor &&
	    (rc = brg_commit__event(c, w, "chain_floor_ignored",
	                            "Birth seq %llu claims chain floor %llu, not below it",
	                            (unsigned long long)it->seq, (unsigned long long)b->chain_floor)))
		goto out;
	if (first) {
		/* A store meeting the device for the first time starts its chain at the floor. */
		w->frontier = floor_ok ? (int64_t)b->chain_floor : 0;
		brg_commit__set_state(w, STORE_ST_ACTIVE, "enrolled");
		rc = brg_commit__event(c, w, "enrolled",
		                       "agent %s, boot %s, %zu metrics, chain floor %llu", w->agent,
		                       boot, b->n_metrics, (unsigned long long)b->chain_floor);
	} else {
		if (rekey && (rc = brg_commit__event(c, w, "reenrolled",
		                                     "new certificate key (birth seq %llu)%s",
		                                     (unsigned long long)it->seq,
		                                     brg_commit__is_state(w, STORE_ST_REVOKED)
		                                         ? ": the revocation is lifted"
		                                         : "")))
			goto out;
		if (brg_commit__is_state(w, STORE_ST_REVOKED)) /* the gate let only a new key by */
			brg_commit__set_state(w, STORE_ST_ACTIVE, "re-enrolled with a new key");
		if (restarted &&
		    (rc = brg_commit__event(c, w, "birth", "agent %s, boot %s, %zu metrics",
		                            w->agent, boot, b->n_metrics)))
			goto out;
		if (floor_ok && (int64_t)b->chain_floor > w->frontier)
			rc = floor_ahead(c, w, b->chain_floor);
	}
	if (!rc && it->sent_at_ms > c->now + CLOCK_AHEAD_MS) /* sent_at: any int64 */
		rc = brg_commit__event(c, w, "clock_ahead",
		                       "device clock %lld s ahead of the bridge's (Birth seq %llu)",
		                       (long long)((it->sent_at_ms - c->now) / 1000),
		                       (unsigned long long)it->seq);
	if (!rc)
		rc = brg_commit__accepted(c, w);
out:
	return rc;
}

static int apply(struct brg_committer *c, const struct brg_item *it)
{
	struct wdev *w = it->device[0] ? dev_find(c, it->device) : NULL;
	int rc;
	switch (it->kind) {
	case BRG_ITEM_DROP:
		c->out->unjudged++;
		return 0;
	case BRG_ITEM_REJECT:
		return do_reject(c, w, it);
	case BRG_ITEM_STATUS:
		return do_status(c, w, it);
	default:
		break;
	}
	if (!w || !w->key)
		return STORE_EQUERY; /* load_devices created it */
	if (it->kind == BRG_ITEM_BIRTH) { /* stored or not, it is pending no more */
		w->judged_birth = 1;
		w->judged_key = it->key;
	}
	if ((rc = gate(c, w, it)) <= 0)
		return rc;
	switch (it->kind) {
	case BRG_ITEM_BIRTH:
		return do_birth(c, w, it);
	case BRG_ITEM_BATCH:
		return brg_commit__do_batch(c, w, it);
	case BRG_ITEM_RESULT:
		return brg_commit__do_result(c, w, it);
	case BRG_ITEM_POLL:
		return brg_commit__do_poll(c, w, it);
	default:
		return 0;
	}
}

/* PostgreSQL: which of the group's durable envelopes have rows already (brg_envrows.c). */
static int envelope_keys(struct brg_committer *c, struct brg_item *const *items, size_t n)
{
	int rc = 0;
	brg_commit__env_reset(c);
	for (size_t i = 0; i < n && !rc; i++) {
		const struct brg_item *it = items[i];
		if (it->kind != BRG_ITEM_BATCH && it->kind != BRG_ITEM_RESULT)
			continue;
		struct wdev *w = it->device[0] ? dev_find(c, it->device) : NULL;
		if (w && w->key)
			rc = brg_commit__env_add(c, w->key, it->seq);
	}
	return rc ? rc : brg_commit__env_lookup(c);
}

static int update_device(struct brg_committer *c, struct wdev *w)
{
	int rc;
	BTXT(S_DEV_UPD, 1, w->state);
	BTXT(S_DEV_UPD, 2, w->reason);
	if (w->state_changed)
		B64(S_DEV_UPD, 3, c->now);
	else if ((rc = store_bind_null(c->st[S_DEV_UPD], 3)))
		goto out;
	B64(S_DEV_UPD, 4, w->online);
	B64(S_DEV_UPD, 5, w->frontier);
	B64(S_DEV_UPD, 6, w->last_nd_seq);
	B64(S_DEV_UPD, 7, w->consecutive);
	B64(S_DEV_UPD, 8, w->d_env);
	B64(S_DEV_UPD, 9, w->d_read);
	B64(S_DEV_UPD, 10, w->d_dup);
	B64(S_DEV_UPD, 11, w->d_rej);
	if (w->last_seen)
		B64(S_DEV_UPD, 12, w->last_seen);
	else if ((rc = store_bind_null(c->st[S_DEV_UPD], 12)))
		goto out;
	B64(S_DEV_UPD, 13, w->last_birth_seq);
	B64(S_DEV_UPD, 14, w->key);
	rc = brg_commit__run(c, S_DEV_UPD);
out:
	return rc;
}

static int finish(struct brg_committer *c)
{
	int rc;
	if ((rc = brg_commit__env_flush(c)) || (rc = brg_commit__insert_readings(c)))
		return rc;
	for (size_t i = 0; i < c->n_devs; i++) {
		struct wdev *w = &c->devs[i];
		if (w->key && w->durable && w->has_key && (rc = brg_commit__chain(c, w)))
			return rc;
	}
	for (size_t i = 0; i < c->n_devs; i++) {
		struct wdev *w = &c->devs[i];
		if (w->key && w->dirty && (rc = update_device(c, w)))
			return rc;
	}
	return 0;
}

static int states(struct brg_committer *c)
{
	struct brg_outcome *o = c->out;
	for (size_t i = 0; i < c->n_devs; i++) {
		const struct wdev *w = &c->devs[i];
		if (!w->key)
			continue;
		if (brg_commit__reserve((void **)&o->states, &o->cap_states, o->n_states,
		                        sizeof(*o->states)))
			return STORE_ENOMEM;
		struct brg_devstate *s = &o->states[o->n_states++];
		memset(s, 0, sizeof(*s));
		snprintf(s->device, sizeof(s->device), "%s", w->id);
		s->info.state = brg_state_parse(w->state);
		s->info.has_key = w->has_key;
		memcpy(s->info.key.raw, w->pub, WIRE_PUBKEY_LEN);
		s->judged_birth = w->judged_birth;
		s->judged_key = w->judged_key;
	}
	return 0;
}

void brg_outcome_to_registry(const struct brg_outcome *o, struct brg_registry *r)
{
	for (size_t i = 0; i < o->n_states; i++) {
		const struct brg_devstate *st = &o->states[i];
		brg_registry_put(r, st->device, &st->info);
		if (st->judged_birth)
			brg_registry_birth_judged(r, st->device, &st->judged_key);
	}
}

/* Undo what the failed transaction appended to out. */
void brg_commit__unwind(struct brg_committer *c, struct brg_outcome *out,
                        const struct brg_outcome *mark)
{
	for (size_t i = mark->n_replies; i < out->n_replies; i++) {
		free(out->replies[i].ranges);
		brg_commit__free_tasks(out->replies[i].tasks, out->replies[i].n_tasks);
	}
	out->n_replies = mark->n_replies;
	out->n_notes = mark->n_notes;
	out->n_states = mark->n_states;
	out->envelopes = mark->envelopes;
	out->readings = mark->readings;
	out->duplicates = mark->duplicates;
	out->rejected = mark->rejected;
	out->unjudged = mark->unjudged;
	/* Placeholder metrics created in the rolled-back transaction are gone. */
	brg_commit__mcache_clear(c);
}

int brg_commit__end_tx(struct brg_committer *c, int rc, const struct brg_outcome *mark)
{
	if (!rc && (rc = store_commit(c->s)) == STORE_EUNKNOWN) {
		c->unsettled = 1;
		c->mark = *mark;
		return rc;
	}
	if (!rc)
		return STORE_OK;
	store_rollback(c->s);
	brg_commit__unwind(c, c->out, mark);
	return rc < 0 ? rc : STORE_EQUERY;
}

void brg_commit_settle(struct brg_committer *c, int committed, struct brg_outcome *out)
{
	if (!c->unsettled)
		return;
	c->unsettled = 0;
	if (!committed)
		brg_commit__unwind(c, out, &c->mark);
}

int brg_commit_group(struct brg_committer *c, struct brg_item *const *items, size_t n,
                     int64_t now_ms, struct brg_outcome *out)
{
	struct brg_outcome mark = *out;
	int rc;
	c->now = now_ms;
	c->out = out;
	c->n_rows = 0;
	if ((rc = store_begin(c->s)))
		return rc;
	if ((rc = load_devices(c, items, n)) || (rc = envelope_keys(c, items, n)))
		goto end;
	for (size_t i = 0; i < n; i++)
		if ((rc = apply(c, items[i])))
			goto end;
	/* The devices' states, for the registry, before COMMIT: once committed, a pending Birth
	 * must learn its fate (brg_outcome_to_registry), or it would verify for ever. */
	if (!(rc = finish(c)))
		rc = states(c);
end:
	return brg_commit__end_tx(c, rc, &mark);
}
