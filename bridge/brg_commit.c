/* brg_commit.c - group transactions of the writer thread (see brg_commit.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brg_commit.h"
#include "brg_err.h"
#include "olog.h"
#include "store_ops.h"
#include "wire_env.h"

#define MAX_LINKS 4096	    /* stored links read above a frontier */
#define MAX_DROP_LINKS 1024 /* dropped links read above a frontier */
#define TASKLIST_BUDGET (WIRE_MAX_BODY - 4096)
#define MCACHE_BUCKETS 4096
#define MCACHE_MAX_DEVICES 65536

enum {
	S_DEV_INS,
	S_DEV_SEL,
	S_DEV_UPD,
	S_DEV_BIRTH,
	S_EVENT,
	S_REJ,
	S_ENV_INS,
	S_ENV_SIG,
	S_LINKS,
	S_DROPS,
	S_GAP_INS,
	S_GAP_GROW_DROP,
	S_GAP_MOVE_MISS,
	S_GAP_FILL,
	S_METRIC_CLEAR,
	S_METRIC_UPS,
	S_METRIC_LOAD,
	S_METRIC_PLACE,
	S_TASK_SEL,
	S_TASK_ARGS,
	S_TASK_DELIV,
	S_TASK_GET,
	S_TASK_FINISH,
	S_TASK_OUT,
	S_COUNT
};

static const char *const sql[S_COUNT] = {
	[S_DEV_INS] = "INSERT INTO devices (device_id, state, created_at, state_changed_at)"
		      " VALUES (?, 'unenrolled', ?, ?) ON CONFLICT (device_id) DO NOTHING",
	[S_DEV_SEL] = NULL, /* dialect-specific, below */
	[S_DEV_UPD] = "UPDATE devices SET state = ?, state_reason = ?,"
		      " state_changed_at = COALESCE(?, state_changed_at), online = ?, frontier = ?, last_nd_seq = ?, consecutive_rejects = ?,"
		      " envelopes = envelopes + ?, readings = readings + ?,"
		      " duplicates = duplicates + ?, rejected = rejected + ?, last_seen_at = ?"
		      " WHERE id = ?",
	[S_DEV_BIRTH] = "UPDATE devices SET pubkey = ?, cert_pem = ?, agent_version = ?,"
			" boot_id = ?, sample_interval_s = ?, poll_interval_s = ?,"
			" spool_records = ?, spool_bytes = ?, spool_dropped_total = ?,"
			" last_birth_at = ?, enrolled_at = COALESCE(enrolled_at, ?) WHERE id = ?",
	[S_EVENT] = "INSERT INTO events (at, device, type, detail) VALUES (?, ?, ?, ?)",
	[S_REJ] = "INSERT INTO rejections (device, reason, count, first_at, last_at, last_detail)"
		  " VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (device, reason) DO UPDATE SET"
		  " count = rejections.count + 1, last_at = excluded.last_at,"
		  " last_detail = excluded.last_detail",
	[S_ENV_INS] = "INSERT INTO envelopes (device, seq, prev_seq, kind, sent_at, stored_at,"
		      " n_readings, sig) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
		      " ON CONFLICT (device, seq) DO NOTHING",
	[S_ENV_SIG] = "SELECT sig FROM envelopes WHERE device = ? AND seq = ?",
	[S_LINKS] = "SELECT prev_seq, seq FROM envelopes WHERE device = ? AND seq > ?"
		    " ORDER BY seq LIMIT 4096",
	[S_DROPS] = "SELECT prev_seq, last_seq FROM gaps WHERE device = ? AND reason = 'dropped'"
		    " AND last_seq > ? ORDER BY prev_seq LIMIT 1024",
	[S_GAP_INS] = "INSERT INTO gaps (device, reason, prev_seq, last_seq, count, opened_at)"
		      " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device, reason, prev_seq) DO NOTHING",
	[S_GAP_GROW_DROP] = "UPDATE gaps SET last_seq = ?, count = ? WHERE device = ? AND"
			    " reason = 'dropped' AND prev_seq = ? AND last_seq < ?",
	[S_GAP_MOVE_MISS] = "UPDATE gaps SET last_seq = ? WHERE device = ? AND reason = 'missing'"
			    " AND prev_seq = ? AND resolved_at IS NULL AND last_seq <> ?",
	[S_GAP_FILL] = "UPDATE gaps SET resolved_at = ?, resolution = 'filled' WHERE device = ?"
		       " AND reason = 'missing' AND resolved_at IS NULL AND prev_seq < ?",
	[S_METRIC_CLEAR] = "UPDATE metrics SET wire_id = NULL WHERE device = ? AND"
			   " wire_id IS NOT NULL",
	[S_METRIC_UPS] = "INSERT INTO metrics (device, name, unit, wire_id) VALUES (?, ?, ?, ?)"
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
			 " COALESCE(delivered_at, ?), deliveries = deliveries + 1 WHERE id = ?",
	[S_TASK_GET] = "SELECT state, expires_at, type FROM tasks WHERE id = ? AND device = ?",
	[S_TASK_FINISH] = "UPDATE tasks SET state = ?, finished_at = ?, result_status = ?,"
			  " result_message = ?, result_seq = ? WHERE id = ?",
	[S_TASK_OUT] = "INSERT INTO task_output (task, idx, key, value) VALUES (?, ?, ?, ?)"
		       " ON CONFLICT (task, idx) DO NOTHING",
};

#define DEV_SEL_COLS                                                                               \
	"SELECT id, state, state_reason, online, pubkey, frontier, last_nd_seq,"                   \
	" consecutive_rejects, sample_interval_s, poll_interval_s, last_seen_at, boot_id,"         \
	" agent_version FROM devices WHERE device_id = ?"

/* A device touched by the current transaction. */
struct wdev {
	const char *id; /* borrowed from an item */
	int64_t key;	/* 0: no row (status of a device the store does not know) */
	char state[16];
	char reason[160];
	int state_changed;
	int online;
	int has_key;
	uint8_t pub[WIRE_PUBKEY_LEN];
	int64_t frontier, last_nd_seq, consecutive, sample_s, poll_s, last_seen;
	int64_t d_env, d_read, d_dup, d_rej;
	uint8_t boot_id[WIRE_BOOT_ID_LEN];
	int has_boot;
	char agent[WIRE_MAX_AGENT_VERSION + 1];
	int dirty;
	int durable; /* an authentic durable envelope arrived: answer with an ack */
	int needs_row;
};

/* Readings collected during a group, inserted in bulk at the end. */
struct rrow {
	int64_t device, metric, ts, seq, idx;
	double value;
};

/* wire metric id -> metrics.id of one device. */
struct mentry {
	uint32_t wire;
	int64_t key;
};
struct mcache {
	struct mcache *next;
	int64_t device;
	size_t n, cap;
	struct mentry *e; /* sorted by wire */
};

struct brg_committer {
	struct store *s;
	struct brg_commit_opts o;
	struct store_stmt *st[S_COUNT];
	struct store_copy *copy;
	struct wdev *devs;
	size_t n_devs, cap_devs;
	struct rrow *rows;
	size_t n_rows, cap_rows;
	struct brg_link *links;
	struct mcache *mc[MCACHE_BUCKETS];
	size_t mc_devices;
	int64_t now;
	struct brg_outcome *out;
};

/* ---- outcome ---- */

static void free_tasks(struct brg_task *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < t[i].n_args; k++) {
			free(t[i].keys[k]);
			free(t[i].values[k]);
		}
		free(t[i].keys);
		free(t[i].values);
	}
	free(t);
}

void brg_outcome_clear(struct brg_outcome *o)
{
	for (size_t i = 0; i < o->n_replies; i++) {
		free(o->replies[i].ranges);
		free_tasks(o->replies[i].tasks, o->replies[i].n_tasks);
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

/* Grow *arr (of elem-sized entries) so one more fits. */
static int reserve(void **arr, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 16;
	void *p = realloc(*arr, nc * elem);
	if (!p)
		return STORE_ENOMEM;
	*arr = p;
	*cap = nc;
	return 0;
}

static struct brg_reply *add_reply(struct brg_outcome *o)
{
	if (reserve((void **)&o->replies, &o->cap_replies, o->n_replies, sizeof(*o->replies)))
		return NULL;
	struct brg_reply *r = &o->replies[o->n_replies++];
	memset(r, 0, sizeof(*r));
	return r;
}

static void note(struct brg_committer *c, int level, const char *device, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void note(struct brg_committer *c, int level, const char *device, const char *fmt, ...)
{
	struct brg_outcome *o = c->out;
	if (reserve((void **)&o->notes, &o->cap_notes, o->n_notes, sizeof(*o->notes)))
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
	c->links = malloc((MAX_LINKS + MAX_DROP_LINKS) * sizeof(*c->links));
	if (!c->links)
		goto fail;
	for (int i = 0; i < S_COUNT; i++) {
		const char *q = sql[i];
		if (i == S_DEV_SEL)
			q = store_dialect(s) == STORE_PG ? DEV_SEL_COLS " FOR UPDATE" : DEV_SEL_COLS;
		if ((rc = store_prepare(s, q, &c->st[i])))
			goto fail;
	}
	rc = store_copy_new(s, "readings", "device, metric, ts, seq, idx, value", 6, &c->copy);
	if (rc)
		goto fail;
	*out = c;
	return STORE_OK;
fail:
	brg_committer_free(c);
	return rc;
}

static void mcache_clear(struct brg_committer *c)
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
	c->mc_devices = 0;
}

void brg_committer_free(struct brg_committer *c)
{
	if (!c)
		return;
	for (int i = 0; i < S_COUNT; i++)
		store_stmt_free(c->st[i]);
	store_copy_free(c->copy);
	mcache_clear(c);
	free(c->devs);
	free(c->rows);
	free(c->links);
	free(c);
}

/* ---- statement helpers: bind a list of values and run ---- */

/* Run statement i to completion (no rows wanted). */
static int run(struct brg_committer *c, int i)
{
	int rc = store_step(c->st[i]);
	if (rc > 0) /* a row we do not need */
		rc = 0;
	store_reset(c->st[i]);
	return rc;
}

#define B64(i, n, v)                                                                               \
	do {                                                                                       \
		if ((rc = store_bind_i64(c->st[i], n, (int64_t)(v))))                              \
			goto out;                                                                  \
	} while (0)
#define BTXT(i, n, v)                                                                              \
	do {                                                                                       \
		if ((rc = store_bind_text(c->st[i], n, v)))                                        \
			goto out;                                                                  \
	} while (0)
#define BBLOB(i, n, v, l)                                                                          \
	do {                                                                                       \
		if ((rc = store_bind_blob(c->st[i], n, v, l)))                                     \
			goto out;                                                                  \
	} while (0)

static int event(struct brg_committer *c, const struct wdev *w, const char *type,
		 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int event(struct brg_committer *c, const struct wdev *w, const char *type,
		 const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	int rc;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	B64(S_EVENT, 1, c->now);
	if (w && w->key)
		B64(S_EVENT, 2, w->key);
	else if ((rc = store_bind_null(c->st[S_EVENT], 2)))
		goto out;
	BTXT(S_EVENT, 3, type);
	BTXT(S_EVENT, 4, detail);
	rc = run(c, S_EVENT);
	if (!rc)
		note(c, !strcmp(type, "rejected") || !strcmp(type, "quarantined") ||
				!strcmp(type, "revoked") || !strcmp(type, "gap_missing")
			? OLOG_WARN
			: OLOG_INFO,
		     w ? w->id : NULL, "%s: %s", type, detail);
out:
	return rc;
}

static void set_state(struct wdev *w, const char *state, const char *reason)
{
	snprintf(w->state, sizeof(w->state), "%s", state);
	snprintf(w->reason, sizeof(w->reason), "%s", reason);
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

/* Create (if needed) and lock the row of every device of the group, in id order so that two
 * bridges never wait for each other in a cycle. */
static int load_devices(struct brg_committer *c, struct brg_item *const *items, size_t n)
{
	int rc = 0;
	c->n_devs = 0;
	for (size_t i = 0; i < n; i++) {
		if (!items[i]->device[0] || items[i]->kind == BRG_ITEM_DROP)
			continue;
		if (reserve((void **)&c->devs, &c->cap_devs, c->n_devs, sizeof(*c->devs)))
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
		if (w->needs_row) {
			BTXT(S_DEV_INS, 1, w->id);
			B64(S_DEV_INS, 2, c->now);
			B64(S_DEV_INS, 3, c->now);
			if ((rc = run(c, S_DEV_INS)))
				goto out;
		}
		struct store_stmt *st = c->st[S_DEV_SEL];
		BTXT(S_DEV_SEL, 1, w->id);
		rc = store_step(st);
		if (rc == 1) {
			size_t len;
			const void *p;
			w->key = store_col_i64(st, 0);
			snprintf(w->state, sizeof(w->state), "%s", store_col_text(st, 1));
			snprintf(w->reason, sizeof(w->reason), "%s", store_col_text(st, 2) ? store_col_text(st, 2) : "");
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
			rc = 0;
		}
		store_reset(st);
		if (rc < 0)
			goto out;
	}
out:
	return rc;
}

static int is_state(const struct wdev *w, const char *s)
{
	return !strcmp(w->state, s);
}

/* Count a rejection against w; toward_quarantine: it is one of the consecutive ones. */
static int count_reject(struct brg_committer *c, struct wdev *w, const char *reason,
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
	if ((rc = run(c, S_REJ)))
		goto out;
	w->d_rej++;
	w->dirty = 1;
	if (!strcmp(reason, BRG_R_QUARANTINED))
		return 0; /* counted only: the device is already quarantined */
	if ((rc = event(c, w, "rejected", "%s: %s", reason, detail)))
		goto out;
	if (!toward_quarantine)
		return 0;
	w->consecutive++;
	if (c->o.quarantine_after > 0 && w->consecutive >= c->o.quarantine_after &&
	    !is_state(w, STORE_ST_QUARANTINED) && !is_state(w, STORE_ST_REVOKED)) {
		char why[160];
		snprintf(why, sizeof(why), "%lld consecutive rejections, last: %s",
			 (long long)w->consecutive, reason);
		set_state(w, STORE_ST_QUARANTINED, why);
		rc = event(c, w, "quarantined", "%s", why);
	}
out:
	return rc;
}

/* A message of w was accepted. */
static int accepted(struct brg_committer *c, struct wdev *w)
{
	w->consecutive = 0;
	w->last_seen = c->now;
	w->dirty = 1;
	if (!w->online) {
		w->online = 1;
		return event(c, w, "online", "message received");
	}
	return 0;
}

/* Authoritative state check for a judged message (the verifier's cache may be stale).
 * Returns 1 to go on, 0 if handled (counted), < 0 on error. */
static int gate(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	char d[160];
	int rc;
	if (is_state(w, STORE_ST_QUARANTINED)) {
		rc = count_reject(c, w, BRG_R_QUARANTINED, "dropped: device quarantined", 0);
		return rc ? rc : 0;
	}
	if (is_state(w, STORE_ST_REVOKED)) {
		rc = count_reject(c, w, BRG_R_REVOKED, "refused: device revoked", 0);
		return rc ? rc : 0;
	}
	if (it->kind != BRG_ITEM_BIRTH && !w->has_key) {
		snprintf(d, sizeof(d), "seq %llu before any valid birth", (unsigned long long)it->seq);
		rc = count_reject(c, w, BRG_R_UNKNOWN, d, 1);
		return rc ? rc : 0;
	}
	if (is_state(w, STORE_ST_DEACTIVATED)) {
		set_state(w, STORE_ST_ACTIVE, "reactivated: message received");
		rc = event(c, w, "reactivated", "message received after deactivation");
		if (rc)
			return rc;
	}
	return 1;
}

/* ---- items ---- */

static int do_reject(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	if (!w) /* not an Outpost topic: nothing to count it against */
		return count_reject(c, NULL, it->reason, it->detail, 0);
	/* The verifier's cache can lag behind the store: judge again with the row in hand. */
	if (!strcmp(it->reason, BRG_R_QUARANTINED) && !is_state(w, STORE_ST_QUARANTINED))
		return 0; /* released meanwhile; the device resends */
	if (!strcmp(it->reason, BRG_R_UNKNOWN) && w->has_key)
		return 0; /* enrolled meanwhile; the device resends */
	if (!strcmp(it->reason, BRG_R_REVOKED) && !is_state(w, STORE_ST_REVOKED)) {
		if (it->detail[0] && strstr(it->detail, "CRL")) {
			set_state(w, STORE_ST_REVOKED, "certificate revoked by the CRL");
			int rc = event(c, w, "revoked", "certificate revoked by the CRL (birth seq %llu)",
				       (unsigned long long)it->seq);
			if (rc)
				return rc;
		}
	}
	int toward = strcmp(it->reason, BRG_R_REVOKED) != 0 || !is_state(w, STORE_ST_REVOKED);
	return count_reject(c, w, it->reason, it->detail, toward);
}

static int do_status(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	if (!w || !w->key)
		return 0; /* status of a device the store never saw */
	if (it->online && !it->retained && !w->online) {
		w->online = 1;
		w->last_seen = c->now;
		w->dirty = 1;
		return event(c, w, "online", "status: online");
	}
	if (!it->online && w->online) {
		w->online = 0;
		w->dirty = 1;
		return event(c, w, "offline", "status: offline (will: connection lost)");
	}
	return 0;
}

/* A birth or poll must carry a seq above every birth/poll seen (PROTOCOL.md 5.7). */
static int fresh(struct brg_committer *c, struct wdev *w, const struct brg_item *it,
		 const char *what)
{
	char d[160];
	if ((int64_t)it->seq <= w->last_nd_seq) {
		snprintf(d, sizeof(d), "%s seq %llu not above %lld", what, (unsigned long long)it->seq,
			 (long long)w->last_nd_seq);
		int rc = count_reject(c, w, BRG_R_REPLAYED, d, 1);
		return rc ? rc : 0;
	}
	w->last_nd_seq = (int64_t)it->seq;
	w->dirty = 1;
	return 1;
}

static void hex(char *out, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static int do_birth(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	const Outpost__Birth *b = it->birth;
	char boot[2 * WIRE_BOOT_ID_LEN + 1];
	int rc = fresh(c, w, it, "birth");
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
	B64(S_DEV_BIRTH, 12, w->key);
	if ((rc = run(c, S_DEV_BIRTH)))
		goto out;
	memcpy(w->pub, it->key.raw, WIRE_PUBKEY_LEN);
	w->has_key = 1;
	w->sample_s = b->sample_interval_s;
	w->poll_s = b->poll_interval_s;
	memcpy(w->boot_id, b->boot_id.data, WIRE_BOOT_ID_LEN);
	w->has_boot = 1;
	snprintf(w->agent, sizeof(w->agent), "%s", b->agent_version ? b->agent_version : "");

	/* Metric catalog: names travel here once; batches use the ids. */
	B64(S_METRIC_CLEAR, 1, w->key);
	if ((rc = run(c, S_METRIC_CLEAR)))
		goto out;
	for (size_t i = 0; i < b->n_metrics; i++) {
		B64(S_METRIC_UPS, 1, w->key);
		BTXT(S_METRIC_UPS, 2, b->metrics[i]->name);
		BTXT(S_METRIC_UPS, 3, b->metrics[i]->unit ? b->metrics[i]->unit : "");
		B64(S_METRIC_UPS, 4, b->metrics[i]->id);
		if ((rc = run(c, S_METRIC_UPS)))
			goto out;
	}
	/* Forget the cached id map of this device (reloaded at its next batch). */
	struct mcache **pp = &c->mc[(uint64_t)w->key % MCACHE_BUCKETS];
	while (*pp && (*pp)->device != w->key)
		pp = &(*pp)->next;
	if (*pp) {
		struct mcache *m = *pp;
		*pp = m->next;
		free(m->e);
		free(m);
		c->mc_devices--;
	}

	if (first) {
		/* A store meeting the device for the first time starts its chain at the floor. */
		w->frontier = (int64_t)b->chain_floor;
		set_state(w, STORE_ST_ACTIVE, "enrolled");
		rc = event(c, w, "enrolled", "agent %s, boot %s, %zu metrics, chain floor %llu",
			   w->agent, boot, b->n_metrics, (unsigned long long)b->chain_floor);
	} else {
		if (rekey && (rc = event(c, w, "reenrolled", "new certificate key (birth seq %llu)",
					 (unsigned long long)it->seq)))
			goto out;
		if (restarted && (rc = event(c, w, "birth", "agent %s, boot %s, %zu metrics", w->agent,
					     boot, b->n_metrics)))
			goto out;
		if ((int64_t)b->chain_floor > w->frontier)
			rc = event(c, w, "chain_floor_ahead",
				   "device reports everything up to %llu acknowledged or dropped; the "
				   "store's chain ends at %lld",
				   (unsigned long long)b->chain_floor, (long long)w->frontier);
	}
	if (!rc)
		rc = accepted(c, w);
out:
	return rc;
}

static int cmp_mentry(const void *a, const void *b)
{
	uint32_t x = ((const struct mentry *)a)->wire, y = ((const struct mentry *)b)->wire;
	return (x > y) - (x < y);
}

static struct mcache *mcache_get(struct brg_committer *c, int64_t device, int *rc)
{
	struct mcache **bucket = &c->mc[(uint64_t)device % MCACHE_BUCKETS];
	for (struct mcache *m = *bucket; m; m = m->next)
		if (m->device == device)
			return m;
	if (c->mc_devices >= MCACHE_MAX_DEVICES)
		mcache_clear(c);
	struct mcache *m = calloc(1, sizeof(*m));
	if (!m) {
		*rc = STORE_ENOMEM;
		return NULL;
	}
	m->device = device;
	struct store_stmt *st = c->st[S_METRIC_LOAD];
	*rc = store_bind_i64(st, 1, device);
	while (!*rc && (*rc = store_step(st)) == 1) {
		*rc = 0;
		if (reserve((void **)&m->e, &m->cap, m->n, sizeof(*m->e))) {
			*rc = STORE_ENOMEM;
			break;
		}
		m->e[m->n++] = (struct mentry){(uint32_t)store_col_i64(st, 0), store_col_i64(st, 1)};
	}
	store_reset(st);
	if (*rc < 0) {
		free(m->e);
		free(m);
		return NULL;
	}
	*rc = 0;
	qsort(m->e, m->n, sizeof(*m->e), cmp_mentry);
	m->next = *bucket;
	*bucket = m;
	c->mc_devices++;
	return m;
}

/* metrics.id for wire metric id `wire` of w; a placeholder "#<id>" if no birth named it. */
static int metric_key(struct brg_committer *c, struct wdev *w, struct mcache *m, uint32_t wire,
		      int64_t *out)
{
	struct mentry k = {wire, 0}, *e = bsearch(&k, m->e, m->n, sizeof(*m->e), cmp_mentry);
	char name[16];
	int rc;
	if (e) {
		*out = e->key;
		return 0;
	}
	snprintf(name, sizeof(name), "#%u", wire);
	B64(S_METRIC_PLACE, 1, w->key);
	BTXT(S_METRIC_PLACE, 2, name);
	B64(S_METRIC_PLACE, 3, wire);
	rc = store_step(c->st[S_METRIC_PLACE]);
	if (rc == 1) {
		k.key = store_col_i64(c->st[S_METRIC_PLACE], 0);
		rc = 0;
	} else if (rc == 0) {
		rc = STORE_EQUERY;
	}
	store_reset(c->st[S_METRIC_PLACE]);
	if (rc)
		goto out;
	if ((rc = reserve((void **)&m->e, &m->cap, m->n, sizeof(*m->e))))
		goto out;
	m->e[m->n++] = k;
	qsort(m->e, m->n, sizeof(*m->e), cmp_mentry);
	*out = k.key;
	rc = event(c, w, "metric_unnamed", "metric id %u used before any birth named it", wire);
out:
	return rc;
}

/* Store a durable envelope: 1 if new, 0 if handled (duplicate or rejection), < 0 error. */
static int store_envelope(struct brg_committer *c, struct wdev *w, const struct brg_item *it,
			  uint32_t kind, size_t n_readings)
{
	char d[160];
	int rc;
	w->durable = 1;
	if ((int64_t)it->seq > w->frontier) {
		B64(S_ENV_INS, 1, w->key);
		B64(S_ENV_INS, 2, it->seq);
		B64(S_ENV_INS, 3, it->prev_seq);
		B64(S_ENV_INS, 4, kind);
		B64(S_ENV_INS, 5, it->sent_at_ms);
		B64(S_ENV_INS, 6, c->now);
		B64(S_ENV_INS, 7, n_readings);
		BBLOB(S_ENV_INS, 8, it->sig, WIRE_SIG_LEN);
		if ((rc = store_step(c->st[S_ENV_INS])) >= 0) {
			rc = store_changes(c->st[S_ENV_INS]) == 1;
			store_reset(c->st[S_ENV_INS]);
			if (rc == 1) {
				w->d_env++;
				c->out->envelopes++;
				return 1;
			}
		} else {
			store_reset(c->st[S_ENV_INS]);
			goto out;
		}
	}
	/* Already there (duplicate or reuse), or at/below the frontier. */
	B64(S_ENV_SIG, 1, w->key);
	B64(S_ENV_SIG, 2, it->seq);
	rc = store_step(c->st[S_ENV_SIG]);
	if (rc == 1) {
		size_t len;
		const void *sig = store_col_blob(c->st[S_ENV_SIG], 0, &len);
		int same = sig && len == WIRE_SIG_LEN && !memcmp(sig, it->sig, WIRE_SIG_LEN);
		store_reset(c->st[S_ENV_SIG]);
		if (same) {
			/* Harmless: counted, answered with a fresh ack, not a rejection. */
			w->d_dup++;
			c->out->duplicates++;
			w->dirty = 1;
			rc = accepted(c, w);
			return rc ? rc : 0;
		}
		snprintf(d, sizeof(d), "%s seq %llu stored before with another signature",
			 wire_kind_name(kind), (unsigned long long)it->seq);
		rc = count_reject(c, w, BRG_R_REUSED, d, 1);
		return rc ? rc : 0;
	}
	store_reset(c->st[S_ENV_SIG]);
	if (rc < 0)
		goto out;
	snprintf(d, sizeof(d), "%s seq %llu at or below the frontier %lld and not stored",
		 wire_kind_name(kind), (unsigned long long)it->seq, (long long)w->frontier);
	rc = count_reject(c, w, BRG_R_TOO_OLD, d, 1);
	return rc ? rc : 0;
out:
	return rc;
}

static int record_dropped(struct brg_committer *c, struct wdev *w, const struct wire_dropped *d)
{
	int rc;
	B64(S_GAP_INS, 1, w->key);
	BTXT(S_GAP_INS, 2, "dropped");
	B64(S_GAP_INS, 3, d->prev_seq);
	B64(S_GAP_INS, 4, d->last_seq);
	B64(S_GAP_INS, 5, d->count);
	B64(S_GAP_INS, 6, c->now);
	if ((rc = store_step(c->st[S_GAP_INS])) < 0) {
		store_reset(c->st[S_GAP_INS]);
		goto out;
	}
	int inserted = store_changes(c->st[S_GAP_INS]) == 1;
	store_reset(c->st[S_GAP_INS]);
	if (inserted)
		return event(c, w, "gap_dropped", "device dropped %llu envelopes in seq %llu..%llu",
			     (unsigned long long)d->count, (unsigned long long)d->prev_seq + 1,
			     (unsigned long long)d->last_seq);
	/* The device may report a growing record with the same start. */
	B64(S_GAP_GROW_DROP, 1, d->last_seq);
	B64(S_GAP_GROW_DROP, 2, d->count);
	B64(S_GAP_GROW_DROP, 3, w->key);
	B64(S_GAP_GROW_DROP, 4, d->prev_seq);
	B64(S_GAP_GROW_DROP, 5, d->last_seq);
	rc = run(c, S_GAP_GROW_DROP);
out:
	return rc;
}

static int do_batch(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	const struct wire_batch *b = it->batch;
	int rc = store_envelope(c, w, it, WIRE_KIND_BATCH, b->n_readings);
	if (rc <= 0)
		return rc;
	if (b->n_readings) {
		struct mcache *m = mcache_get(c, w->key, &rc);
		if (!m)
			return rc;
		if (c->n_rows + b->n_readings > c->cap_rows) {
			size_t cap = c->cap_rows ? c->cap_rows : 1024;
			while (cap < c->n_rows + b->n_readings)
				cap *= 2;
			struct rrow *r = realloc(c->rows, cap * sizeof(*r));
			if (!r)
				return STORE_ENOMEM;
			c->rows = r;
			c->cap_rows = cap;
		}
		/* Columns repeat row after row: look each metric up once per run. */
		uint32_t last_wire = 0;
		int64_t last_key = -1;
		for (size_t i = 0; i < b->n_readings; i++) {
			const struct wire_reading *r = &b->readings[i];
			if (last_key < 0 || r->metric_id != last_wire) {
				if ((rc = metric_key(c, w, m, r->metric_id, &last_key)))
					return rc;
				last_wire = r->metric_id;
			}
			c->rows[c->n_rows++] = (struct rrow){w->key, last_key, r->t_ms,
							     (int64_t)it->seq, (int64_t)i, r->value};
		}
		w->d_read += (int64_t)b->n_readings;
		c->out->readings += b->n_readings;
	}
	for (size_t i = 0; i < b->n_dropped; i++)
		if ((rc = record_dropped(c, w, &b->dropped[i])))
			return rc;
	return accepted(c, w);
}

static int do_result(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	const Outpost__TaskResult *r = it->result;
	static const char *const status[] = {"", "succeeded", "failed", "rejected"};
	int rc = store_envelope(c, w, it, WIRE_KIND_TASK_RESULT, 0);
	if (rc <= 0)
		return rc;
	if ((rc = accepted(c, w)))
		return rc;
	B64(S_TASK_GET, 1, r->task_id);
	B64(S_TASK_GET, 2, w->key);
	rc = store_step(c->st[S_TASK_GET]);
	if (rc <= 0) {
		store_reset(c->st[S_TASK_GET]);
		if (rc < 0)
			goto out;
		return event(c, w, "task_result_unknown", "result for task %llu, not one of this device's",
			     (unsigned long long)r->task_id);
	}
	char state[16], type[WIRE_MAX_TASK_TYPE + 1];
	snprintf(state, sizeof(state), "%s", store_col_text(c->st[S_TASK_GET], 0));
	int64_t expires = store_col_i64(c->st[S_TASK_GET], 1);
	snprintf(type, sizeof(type), "%s", store_col_text(c->st[S_TASK_GET], 2));
	store_reset(c->st[S_TASK_GET]);
	if (strcmp(state, STORE_TASK_QUEUED) && strcmp(state, STORE_TASK_DELIVERED) &&
	    strcmp(state, STORE_TASK_EXPIRED))
		return event(c, w, "task_result_ignored", "task %llu %s is already %s",
			     (unsigned long long)r->task_id, type, state);
	const char *to = STORE_TASK_SUCCEEDED;
	if (r->status == OUTPOST__TASK_STATUS__TASK_STATUS_FAILED)
		to = STORE_TASK_FAILED;
	else if (r->status == OUTPOST__TASK_STATUS__TASK_STATUS_REJECTED)
		to = expires <= (r->finished_at_ms ? r->finished_at_ms : c->now) ? STORE_TASK_EXPIRED
										 : STORE_TASK_FAILED;
	BTXT(S_TASK_FINISH, 1, to);
	B64(S_TASK_FINISH, 2, c->now);
	BTXT(S_TASK_FINISH, 3, status[r->status]);
	BTXT(S_TASK_FINISH, 4, r->message ? r->message : "");
	B64(S_TASK_FINISH, 5, it->seq);
	B64(S_TASK_FINISH, 6, r->task_id);
	if ((rc = run(c, S_TASK_FINISH)))
		goto out;
	for (size_t i = 0; i < r->n_output; i++) {
		B64(S_TASK_OUT, 1, r->task_id);
		B64(S_TASK_OUT, 2, i);
		BTXT(S_TASK_OUT, 3, r->output[i]->key);
		BTXT(S_TASK_OUT, 4, r->output[i]->value ? r->output[i]->value : "");
		if ((rc = run(c, S_TASK_OUT)))
			goto out;
	}
	rc = event(c, w, to[0] == 's' ? "task_succeeded" : to[0] == 'e' ? "task_expired" : "task_failed",
		   "task %llu %s %s: %.200s", (unsigned long long)r->task_id, type, status[r->status],
		   r->message ? r->message : "");
out:
	return rc;
}

static int do_poll(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	const Outpost__TaskPoll *p = it->poll;
	struct brg_task *tasks = NULL;
	size_t n = 0, budget = TASKLIST_BUDGET;
	uint32_t max = p->max_tasks ? p->max_tasks : WIRE_MAX_TASKS;
	struct store_stmt *st = c->st[S_TASK_SEL];
	int rc = fresh(c, w, it, "poll");
	if (rc <= 0)
		return rc;
	if ((rc = accepted(c, w)))
		return rc;
	tasks = calloc(max, sizeof(*tasks));
	if (!tasks)
		return STORE_ENOMEM;
	B64(S_TASK_SEL, 1, w->key);
	B64(S_TASK_SEL, 2, c->now);
	B64(S_TASK_SEL, 3, p->last_task_id > INT64_MAX ? INT64_MAX : p->last_task_id);
	B64(S_TASK_SEL, 4, max);
	int queued[WIRE_MAX_TASKS] = {0};
	while (n < max && (rc = store_step(st)) == 1) {
		tasks[n].id = (uint64_t)store_col_i64(st, 0);
		snprintf(tasks[n].type, sizeof(tasks[n].type), "%s", store_col_text(st, 1));
		tasks[n].expires_at_ms = store_col_i64(st, 2);
		tasks[n].created_at_ms = store_col_i64(st, 3);
		queued[n] = !strcmp(store_col_text(st, 4), STORE_TASK_QUEUED);
		n++;
	}
	store_reset(st);
	if (rc < 0)
		goto out;
	/* Arguments, within what one TaskList envelope can carry. */
	for (size_t i = 0; i < n; i++) {
		struct brg_task *t = &tasks[i];
		size_t size = 64 + strlen(t->type) + WIRE_ID_MAX;
		t->keys = calloc(WIRE_MAX_ARGS, sizeof(char *));
		t->values = calloc(WIRE_MAX_ARGS, sizeof(char *));
		if (!t->keys || !t->values) {
			rc = STORE_ENOMEM;
			goto out;
		}
		B64(S_TASK_ARGS, 1, t->id);
		while ((rc = store_step(c->st[S_TASK_ARGS])) == 1 && t->n_args < WIRE_MAX_ARGS) {
			const char *k = store_col_text(c->st[S_TASK_ARGS], 0);
			const char *v = store_col_text(c->st[S_TASK_ARGS], 1);
			t->keys[t->n_args] = strdup(k ? k : "");
			t->values[t->n_args] = strdup(v ? v : "");
			if (!t->keys[t->n_args] || !t->values[t->n_args]) {
				free(t->keys[t->n_args]);
				free(t->values[t->n_args]);
				rc = STORE_ENOMEM;
				break;
			}
			size += 8 + strlen(t->keys[t->n_args]) + strlen(t->values[t->n_args]);
			t->n_args++;
		}
		store_reset(c->st[S_TASK_ARGS]);
		if (rc < 0)
			goto out;
		if (size > budget) {
			/* Does not fit this time: the device gets it at its next poll. */
			for (size_t k = 0; k < t->n_args; k++) {
				free(t->keys[k]);
				free(t->values[k]);
			}
			free(t->keys);
			free(t->values);
			t->keys = t->values = NULL;
			t->n_args = 0;
			n = i;
			break;
		}
		budget -= size;
	}
	for (size_t i = 0; i < n; i++) {
		B64(S_TASK_DELIV, 1, c->now);
		B64(S_TASK_DELIV, 2, tasks[i].id);
		if ((rc = run(c, S_TASK_DELIV)))
			goto out;
		if (queued[i] && (rc = event(c, w, "task_delivered", "task %llu %s",
					     (unsigned long long)tasks[i].id, tasks[i].type)))
			goto out;
	}
	struct brg_reply *r = add_reply(c->out);
	if (!r) {
		rc = STORE_ENOMEM;
		goto out;
	}
	r->kind = BRG_REPLY_TASKS;
	snprintf(r->device, sizeof(r->device), "%s", w->id);
	r->seq = it->seq;
	r->tasks = tasks;
	r->n_tasks = n;
	memcpy(r->corr, it->corr, it->corr_len);
	r->corr_len = it->corr_len;
	r->has_corr = it->has_corr;
	return 0;
out:
	free_tasks(tasks, max); /* unused entries are zero */
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
	if ((rc = gate(c, w, it)) <= 0)
		return rc;
	switch (it->kind) {
	case BRG_ITEM_BIRTH:
		return do_birth(c, w, it);
	case BRG_ITEM_BATCH:
		return do_batch(c, w, it);
	case BRG_ITEM_RESULT:
		return do_result(c, w, it);
	case BRG_ITEM_POLL:
		return do_poll(c, w, it);
	default:
		return 0;
	}
}

/* ---- end of group: readings, chains, device rows ---- */

static int insert_readings(struct brg_committer *c)
{
	if (!c->n_rows)
		return 0;
	int rc = store_copy_start(c->copy);
	for (size_t i = 0; i < c->n_rows && !rc; i++) {
		const struct rrow *r = &c->rows[i];
		if (!(rc = store_copy_i64(c->copy, r->device)) &&
		    !(rc = store_copy_i64(c->copy, r->metric)) && !(rc = store_copy_i64(c->copy, r->ts)) &&
		    !(rc = store_copy_i64(c->copy, r->seq)) && !(rc = store_copy_i64(c->copy, r->idx)) &&
		    !(rc = store_copy_f64(c->copy, r->value)))
			rc = store_copy_end_row(c->copy);
	}
	int rc2 = store_copy_finish(c->copy);
	return rc ? rc : rc2;
}

static int read_links(struct brg_committer *c, struct wdev *w, size_t *n)
{
	int rc;
	*n = 0;
	B64(S_LINKS, 1, w->key);
	B64(S_LINKS, 2, w->frontier);
	while ((rc = store_step(c->st[S_LINKS])) == 1 && *n < MAX_LINKS)
		c->links[(*n)++] = (struct brg_link){(uint64_t)store_col_i64(c->st[S_LINKS], 0),
						     (uint64_t)store_col_i64(c->st[S_LINKS], 1), 1};
	store_reset(c->st[S_LINKS]);
	if (rc < 0)
		goto out;
	B64(S_DROPS, 1, w->key);
	B64(S_DROPS, 2, w->frontier);
	size_t drops = 0;
	while ((rc = store_step(c->st[S_DROPS])) == 1 && drops < MAX_DROP_LINKS) {
		c->links[(*n)++] = (struct brg_link){(uint64_t)store_col_i64(c->st[S_DROPS], 0),
						     (uint64_t)store_col_i64(c->st[S_DROPS], 1), 0};
		drops++;
	}
	store_reset(c->st[S_DROPS]);
	rc = rc < 0 ? rc : 0;
out:
	return rc;
}

static int chain(struct brg_committer *c, struct wdev *w)
{
	struct brg_chain *ch = malloc(sizeof(*ch));
	size_t n;
	int rc = STORE_ENOMEM;
	if (!ch)
		return rc;
	if ((rc = read_links(c, w, &n)))
		goto out;
	brg_chain_compute((uint64_t)w->frontier, c->links, n, ch);
	if ((int64_t)ch->frontier != w->frontier) {
		B64(S_GAP_FILL, 1, c->now);
		B64(S_GAP_FILL, 2, w->key);
		B64(S_GAP_FILL, 3, ch->frontier);
		if ((rc = store_step(c->st[S_GAP_FILL])) < 0) {
			store_reset(c->st[S_GAP_FILL]);
			goto out;
		}
		int64_t filled = store_changes(c->st[S_GAP_FILL]);
		store_reset(c->st[S_GAP_FILL]);
		if (filled && (rc = event(c, w, "gap_filled", "%lld missing stretch(es) below seq %llu arrived",
					  (long long)filled, (unsigned long long)ch->frontier)))
			goto out;
		w->frontier = (int64_t)ch->frontier;
		w->dirty = 1;
	}
	for (size_t i = 0; i < ch->n_holes; i++) {
		uint64_t prev = ch->holes[i].first - 1, last = ch->holes[i].last;
		B64(S_GAP_INS, 1, w->key);
		BTXT(S_GAP_INS, 2, "missing");
		B64(S_GAP_INS, 3, prev);
		B64(S_GAP_INS, 4, last);
		if ((rc = store_bind_null(c->st[S_GAP_INS], 5)))
			goto out;
		B64(S_GAP_INS, 6, c->now);
		if ((rc = store_step(c->st[S_GAP_INS])) < 0) {
			store_reset(c->st[S_GAP_INS]);
			goto out;
		}
		int inserted = store_changes(c->st[S_GAP_INS]) == 1;
		store_reset(c->st[S_GAP_INS]);
		if (inserted) {
			rc = event(c, w, "gap_missing", "chain broken after seq %llu: link to %llu missing",
				   (unsigned long long)prev, (unsigned long long)last);
		} else {
			B64(S_GAP_MOVE_MISS, 1, last);
			B64(S_GAP_MOVE_MISS, 2, w->key);
			B64(S_GAP_MOVE_MISS, 3, prev);
			B64(S_GAP_MOVE_MISS, 4, last);
			rc = run(c, S_GAP_MOVE_MISS);
		}
		if (rc)
			goto out;
	}
	if (is_state(w, STORE_ST_REVOKED)) {
		rc = 0;
		goto out; /* nothing more is said to a revoked device */
	}
	struct brg_reply *r = add_reply(c->out);
	if (!r) {
		rc = STORE_ENOMEM;
		goto out;
	}
	r->kind = BRG_REPLY_ACK;
	snprintf(r->device, sizeof(r->device), "%s", w->id);
	r->seq = ch->frontier;
	if (ch->n_ranges) {
		r->ranges = malloc(ch->n_ranges * sizeof(*r->ranges));
		if (!r->ranges) {
			rc = STORE_ENOMEM;
			goto out;
		}
		memcpy(r->ranges, ch->ranges, ch->n_ranges * sizeof(*r->ranges));
		r->n_ranges = ch->n_ranges;
	}
	rc = 0;
out:
	free(ch);
	return rc;
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
	B64(S_DEV_UPD, 13, w->key);
	rc = run(c, S_DEV_UPD);
out:
	return rc;
}

static int finish(struct brg_committer *c)
{
	int rc;
	if ((rc = insert_readings(c)))
		return rc;
	for (size_t i = 0; i < c->n_devs; i++) {
		struct wdev *w = &c->devs[i];
		if (w->key && w->durable && w->has_key && (rc = chain(c, w)))
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
		if (reserve((void **)&o->states, &o->cap_states, o->n_states, sizeof(*o->states)))
			return STORE_ENOMEM;
		struct brg_devstate *s = &o->states[o->n_states++];
		snprintf(s->device, sizeof(s->device), "%s", w->id);
		s->info.state = brg_state_parse(w->state);
		s->info.has_key = w->has_key;
		memcpy(s->info.key.raw, w->pub, WIRE_PUBKEY_LEN);
	}
	return 0;
}

/* Undo what the failed transaction appended to out. */
static void unwind(struct brg_committer *c, struct brg_outcome *out, const struct brg_outcome *mark)
{
	for (size_t i = mark->n_replies; i < out->n_replies; i++) {
		free(out->replies[i].ranges);
		free_tasks(out->replies[i].tasks, out->replies[i].n_tasks);
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
	mcache_clear(c);
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
	if ((rc = load_devices(c, items, n)))
		goto fail;
	for (size_t i = 0; i < n; i++)
		if ((rc = apply(c, items[i])))
			goto fail;
	if ((rc = finish(c)))
		goto fail;
	if ((rc = store_commit(c->s)))
		goto fail;
	states(c); /* committed: a lost cache refresh only delays the registry */
	return STORE_OK;
fail:
	store_rollback(c->s);
	unwind(c, out, &mark);
	return rc < 0 ? rc : STORE_EQUERY;
}

/* ---- health sweep ---- */

struct swept {
	int64_t key;
	char id[WIRE_ID_MAX + 1];
	int64_t a, b;
};

/* Run a SELECT with int64 args and collect (key, id, a, b) rows, at most max. */
static int collect(struct store *s, const char *q, const int64_t *args, int nargs,
		   struct swept **rows, size_t *n, size_t max)
{
	struct store_stmt *st = NULL;
	size_t cap = 0;
	int rc = store_prepare(s, q, &st);
	*rows = NULL;
	*n = 0;
	for (int i = 0; !rc && i < nargs; i++)
		rc = store_bind_i64(st, i + 1, args[i]);
	while (!rc && *n < max && (rc = store_step(st)) == 1) {
		rc = 0;
		if (reserve((void **)rows, &cap, *n, sizeof(**rows))) {
			rc = STORE_ENOMEM;
			break;
		}
		struct swept *r = &(*rows)[(*n)++];
		r->key = store_col_i64(st, 0);
		snprintf(r->id, sizeof(r->id), "%s", store_col_text(st, 1) ? store_col_text(st, 1) : "");
		r->a = store_col_i64(st, 2);
		r->b = store_col_i64(st, 3);
	}
	store_stmt_free(st);
	return rc < 0 ? rc : 0;
}

static int exec_i64(struct store *s, const char *q, const int64_t *args, int nargs, int64_t *changes)
{
	struct store_stmt *st = NULL;
	int rc = store_prepare(s, q, &st);
	for (int i = 0; !rc && i < nargs; i++)
		rc = store_bind_i64(st, i + 1, args[i]);
	if (!rc) {
		rc = store_step(st);
		rc = rc < 0 ? rc : 0;
		if (changes)
			*changes = store_changes(st);
	}
	store_stmt_free(st);
	return rc;
}

static int sweep(struct brg_committer *c)
{
	struct swept *rows = NULL;
	size_t n = 0;
	int64_t ch = 0;
	int rc;

	/* Offline: silent for offline_factor x the device's interval. */
	rc = collect(c->s,
		     "SELECT id, device_id, COALESCE(last_seen_at, created_at),"
		     " CASE WHEN sample_interval_s > 0 THEN sample_interval_s ELSE poll_interval_s END"
		     " FROM devices WHERE online = 1 AND state <> 'revoked'",
		     NULL, 0, &rows, &n, 100000);
	for (size_t i = 0; !rc && i < n; i++) {
		int64_t interval = rows[i].b > 0 ? rows[i].b * 1000 : c->o.default_interval_ms;
		int64_t after = interval * (c->o.offline_factor > 0 ? c->o.offline_factor : 3);
		if (after < c->o.offline_min_ms)
			after = c->o.offline_min_ms;
		if (c->now - rows[i].a <= after)
			continue;
		struct wdev w = {.id = rows[i].id, .key = rows[i].key};
		int64_t args[] = {rows[i].key};
		rc = exec_i64(c->s, "UPDATE devices SET online = 0 WHERE id = ? AND online = 1", args,
			      1, &ch);
		if (!rc && ch)
			rc = event(c, &w, "offline", "silent for %llds (limit %llds)",
				   (long long)((c->now - rows[i].a) / 1000), (long long)(after / 1000));
	}
	free(rows);
	rows = NULL;
	if (rc)
		return rc;

	/* Deactivated: silent for deactivate_after. */
	if (c->o.deactivate_after_ms > 0) {
		int64_t a2[] = {c->now - c->o.deactivate_after_ms};
		rc = collect(c->s,
			     "SELECT id, device_id, COALESCE(last_seen_at, created_at), 0 FROM devices"
			     " WHERE state = 'active' AND COALESCE(last_seen_at, created_at) < ?",
			     a2, 1, &rows, &n, 10000);
		for (size_t i = 0; !rc && i < n; i++) {
			struct wdev w = {.id = rows[i].id, .key = rows[i].key};
			int64_t args[] = {c->now, rows[i].key};
			rc = exec_i64(c->s,
				      "UPDATE devices SET state = 'deactivated', state_reason ="
				      " 'silent too long', state_changed_at = ?, online = 0 WHERE id = ?"
				      " AND state = 'active'",
				      args, 2, &ch);
			if (!rc && ch)
				rc = event(c, &w, "deactivated", "silent for %lld days",
					   (long long)((c->now - rows[i].a) / 86400000));
		}
		free(rows);
		rows = NULL;
		if (rc)
			return rc;
	}

	/* Tasks past their expiry are never delivered again. */
	int64_t a3[] = {c->now};
	rc = collect(c->s,
		     "SELECT t.id, d.device_id, t.device, 0 FROM tasks t JOIN devices d ON"
		     " d.id = t.device WHERE t.state IN ('queued', 'delivered') AND t.expires_at <= ?",
		     a3, 1, &rows, &n, 10000);
	for (size_t i = 0; !rc && i < n; i++) {
		struct wdev w = {.id = rows[i].id, .key = rows[i].a};
		int64_t args[] = {c->now, rows[i].key};
		rc = exec_i64(c->s,
			      "UPDATE tasks SET state = 'expired', finished_at = ? WHERE id = ? AND"
			      " state IN ('queued', 'delivered')",
			      args, 2, &ch);
		if (!rc && ch)
			rc = event(c, &w, "task_expired", "task %lld expired before a result",
				   (long long)rows[i].key);
	}
	free(rows);
	if (rc)
		return rc;

	if (c->o.event_retention_ms > 0) {
		int64_t a4[] = {c->now - c->o.event_retention_ms};
		rc = exec_i64(c->s,
			      "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ?"
			      " ORDER BY id LIMIT 10000)",
			      a4, 1, NULL);
	}
	return rc;
}

int brg_commit_maintain(struct brg_committer *c, int64_t now_ms, struct brg_outcome *out)
{
	struct brg_outcome mark = *out;
	int rc;
	c->now = now_ms;
	c->out = out;
	if ((rc = store_begin(c->s)))
		return rc;
	if ((rc = sweep(c)) || (rc = store_commit(c->s))) {
		store_rollback(c->s);
		unwind(c, out, &mark);
		return rc;
	}
	return STORE_OK;
}

int brg_commit_recheck_certs(struct brg_committer *c, struct brg_verifier *v, int64_t now_ms,
			     struct brg_outcome *out)
{
	struct brg_outcome mark = *out;
	struct store_stmt *st = NULL;
	struct {
		int64_t key;
		char id[WIRE_ID_MAX + 1];
	} *hit = NULL;
	size_t n = 0, cap = 0;
	int rc;
	c->now = now_ms;
	c->out = out;
	if ((rc = store_begin(c->s)))
		return rc;
	rc = store_prepare(c->s,
			   "SELECT id, device_id, cert_pem FROM devices WHERE state <> 'revoked' AND"
			   " cert_pem IS NOT NULL",
			   &st);
	while (!rc && (rc = store_step(st)) == 1) {
		rc = 0;
		struct wire_cert_info info;
		const char *pem = store_col_text(st, 2);
		if (!pem || brg_verifier_check_cert(v, pem, strlen(pem), &info) != WIRE_EREVOKED)
			continue;
		if (reserve((void **)&hit, &cap, n, sizeof(*hit))) {
			rc = STORE_ENOMEM;
			break;
		}
		hit[n].key = store_col_i64(st, 0);
		snprintf(hit[n].id, sizeof(hit[n].id), "%s", store_col_text(st, 1));
		n++;
	}
	store_stmt_free(st);
	for (size_t i = 0; rc >= 0 && i < n; i++) {
		struct wdev w = {.id = hit[i].id, .key = hit[i].key};
		int64_t ch = 0;
		struct store_stmt *u = NULL;
		rc = store_prepare(c->s,
				   "UPDATE devices SET state = 'revoked', state_reason = 'certificate"
				   " revoked by the CRL', state_changed_at = ? WHERE id = ? AND"
				   " state <> 'revoked'",
				   &u);
		if (!rc && !(rc = store_bind_i64(u, 1, now_ms)) && !(rc = store_bind_i64(u, 2, hit[i].key))) {
			rc = store_step(u);
			ch = store_changes(u);
		}
		store_stmt_free(u);
		if (rc >= 0 && ch)
			rc = event(c, &w, "revoked", "certificate revoked by the CRL");
		if (rc >= 0 && !reserve((void **)&out->states, &out->cap_states, out->n_states,
					sizeof(*out->states))) {
			struct brg_devstate *s = &out->states[out->n_states++];
			memset(s, 0, sizeof(*s));
			snprintf(s->device, sizeof(s->device), "%s", hit[i].id);
			s->info.state = BRG_ST_REVOKED;
		}
	}
	free(hit);
	if (rc < 0 || (rc = store_commit(c->s))) {
		store_rollback(c->s);
		unwind(c, out, &mark);
		return rc;
	}
	return STORE_OK;
}
