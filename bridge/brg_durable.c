/* brg_durable.c - the writer's durable envelopes: dedupe by (device, seq), batches and their
 * readings (bulk insert, metric ids), dropped records, chain frontier, ack ranges, gaps. */
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

static int cmp_mentry(const void *a, const void *b)
{
	uint32_t x = ((const struct mentry *)a)->wire, y = ((const struct mentry *)b)->wire;
	return (x > y) - (x < y);
}

/* The wire id -> metric map of w, cached until the device's catalog changes: a Birth (here or
 * at another bridge sharing the store) moves its last_birth_at, read with its row. */
static struct mcache *mcache_get(struct brg_committer *c, const struct wdev *w, int *rc)
{
	int64_t device = w->key;
	struct mcache **bucket = &c->mc[(uint64_t)device % MCACHE_BUCKETS];
	/* Bounded in entries (memory: up to WIRE_MAX_METRIC_ID per device, placeholders
	 * included, so checked at every lookup) and in devices (the buckets' lists, below):
	 * start over when either is reached; past it by one device's entries at most. */
	if (c->mc_entries >= c->mc_max_entries)
		brg_commit__mcache_clear(c);
	for (struct mcache *m = *bucket; m; m = m->next) {
		if (m->device != device)
			continue;
		if (m->birth_at == w->birth_at)
			return m;
		brg_commit__mcache_forget(c, device);
		break;
	}
	if (c->mc_devices >= c->mc_max_devices)
		brg_commit__mcache_clear(c);
	struct mcache *m = calloc(1, sizeof(*m));
	if (!m) {
		*rc = STORE_ENOMEM;
		return NULL;
	}
	m->device = device;
	m->birth_at = w->birth_at;
	struct store_stmt *st = c->st[S_METRIC_LOAD];
	*rc = store_bind_i64(st, 1, device);
	while (!*rc && (*rc = store_step(st)) == 1) {
		*rc = 0;
		if (brg_commit__reserve((void **)&m->e, &m->cap, m->n, sizeof(*m->e))) {
			*rc = STORE_ENOMEM;
			break;
		}
		m->e[m->n++] =
		    (struct mentry){(uint32_t)store_col_i64(st, 0), store_col_i64(st, 1)};
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
	c->mc_entries += m->n;
	return m;
}

/* The placeholder metric "#<wire>" of w, mapped to wire id `wire`; *key = its metrics.id. */
static int placeholder(struct brg_committer *c, struct wdev *w, uint32_t wire, int64_t *key)
{
	char name[16];
	int rc;
	snprintf(name, sizeof(name), "#%u", wire);
	B64(S_METRIC_PLACE, 1, w->key);
	BTXT(S_METRIC_PLACE, 2, name);
	B64(S_METRIC_PLACE, 3, wire);
	rc = store_step(c->st[S_METRIC_PLACE]);
	if (rc == 1) {
		*key = store_col_i64(c->st[S_METRIC_PLACE], 0);
		rc = 0;
	} else if (rc == 0) {
		rc = STORE_EQUERY;
	}
	store_reset(c->st[S_METRIC_PLACE]);
out:
	return rc;
}

/* metrics.id for wire metric id `wire` of w; a placeholder "#<id>" if no birth named it. */
static int metric_key(struct brg_committer *c, struct wdev *w, struct mcache *m, uint32_t wire,
                      int64_t *out)
{
	struct mentry k = {wire, 0}, *e = bsearch(&k, m->e, m->n, sizeof(*m->e), cmp_mentry);
	int rc;
	if (e) {
		*out = e->key;
		return 0;
	}
	if ((rc = placeholder(c, w, wire, &k.key)))
		goto out;
	if ((rc = brg_commit__reserve((void **)&m->e, &m->cap, m->n, sizeof(*m->e))))
		goto out;
	size_t at = 0; /* keep it sorted: insert, do not re-sort */
	while (at < m->n && m->e[at].wire < wire)
		at++;
	memmove(&m->e[at + 1], &m->e[at], (m->n - at) * sizeof(*m->e));
	m->e[at] = k;
	m->n++;
	c->mc_entries++;
	*out = k.key;
	rc = brg_commit__event(c, w, "metric_unnamed",
	                       "metric id %u used before any birth named it", wire);
out:
	return rc;
}

/* Give w's metric named m->name its id and unit: add = by an upsert, else only if the name is
 * known. 1 if the name is stored with its id, 0 if it is not (not known), < 0 error. */
static int name_metric(struct brg_committer *c, struct wdev *w, const Outpost__MetricDef *m,
                       int add)
{
	const char *unit = m->unit ? m->unit : "";
	int64_t known = 0;
	int rc;
	if (add) {
		B64(S_METRIC_ADD, 1, w->key);
		BTXT(S_METRIC_ADD, 2, m->name);
		BTXT(S_METRIC_ADD, 3, unit);
		B64(S_METRIC_ADD, 4, m->id);
		return (rc = brg_commit__run(c, S_METRIC_ADD)) ? rc : 1;
	}
	BTXT(S_METRIC_SET, 1, unit);
	B64(S_METRIC_SET, 2, m->id);
	B64(S_METRIC_SET, 3, w->key);
	BTXT(S_METRIC_SET, 4, m->name);
	rc = brg_commit__run_changes(c, S_METRIC_SET, &known);
out:
	return rc ? rc : known > 0;
}

/* A Birth's catalog: each name gets its wire id; names the Birth no longer has lose theirs but
 * keep their rows (their readings stay queryable). A device keeps at most o.max_device_metrics
 * names: a new name beyond is not stored, its id maps to the placeholder #<id> (at most
 * WIRE_MAX_METRIC_ID of them; a Birth cannot name one: '#' is not in a metric name) and
 * the event metric_limit says which. */
int brg_commit__catalog(struct brg_committer *c, struct wdev *w, const Outpost__Birth *b,
                        uint64_t seq)
{
	struct store_stmt *count = c->st[S_METRIC_COUNT];
	int64_t names = 0, key;
	size_t refused = 0, used = 0;
	char which[240] = "";
	int rc;
	B64(S_METRIC_CLEAR, 1, w->key);
	if ((rc = brg_commit__run(c, S_METRIC_CLEAR)))
		goto out;
	B64(S_METRIC_COUNT, 1, w->key);
	rc = store_step(count);
	names = rc == 1 ? store_col_i64(count, 0) : 0;
	store_reset(count);
	if (rc != 1) {
		rc = rc < 0 ? rc : STORE_EQUERY;
		goto out;
	}
	/* far from the limit, one upsert a name; near it, new names are told from known ones */
	int roomy = names + (int64_t)b->n_metrics <= c->o.max_device_metrics;
	for (size_t i = 0; i < b->n_metrics; i++) {
		const Outpost__MetricDef *m = b->metrics[i];
		if ((rc = name_metric(c, w, m, roomy)) < 0)
			goto out;
		if (roomy || rc)
			continue;
		if (names < c->o.max_device_metrics) {
			if ((rc = name_metric(c, w, m, 1)) < 0)
				goto out;
			names++;
			continue;
		}
		if ((rc = placeholder(c, w, m->id, &key)))
			goto out;
		if (used + 1 < sizeof(which)) {
			int k = snprintf(which + used, sizeof(which) - used, "%s%.32s as #%u",
			                 refused ? ", " : "", m->name, m->id);
			int cut = k < 0 || (size_t)k >= sizeof(which) - used;
			used = cut ? sizeof(which) : used + (size_t)k;
		}
		refused++;
	}
	rc = 0;
	if (refused)
		rc = brg_commit__event(c, w, "metric_limit",
		                       "Birth seq %llu: %zu metric names not stored (%s%s): the device"
		                       " has %lld names, limit %lld",
		                       (unsigned long long)seq, refused, which,
		                       used >= sizeof(which) ? "…" : "", (long long)names,
		                       (long long)c->o.max_device_metrics);
out:
	return rc;
}

/* 1 if seq lies in a stretch the device declared lost (a Birth's chain floor jumped over it):
 * an envelope of it that still arrives (late, from the device's earlier life) is new data. */
static int in_lost_gap(struct brg_committer *c, struct wdev *w, uint64_t seq)
{
	int rc;
	B64(S_GAP_IN_LOST, 1, w->key);
	B64(S_GAP_IN_LOST, 2, seq);
	rc = store_step(c->st[S_GAP_IN_LOST]);
	if (rc == 1)
		rc = store_col_i64(c->st[S_GAP_IN_LOST], 0) >= (int64_t)seq;
	store_reset(c->st[S_GAP_IN_LOST]);
out:
	return rc;
}

/* INSERT the envelope row: 1 if inserted, 0 if (device, seq) was there, < 0 error. */
static int insert_envelope(struct brg_committer *c, struct wdev *w, const struct brg_item *it,
                           uint32_t kind, size_t n_readings)
{
	int rc = brg_commit__env_queue(c, w->key, it, kind, n_readings);
	if (rc != ENV_DIRECT)
		goto counted;
	B64(S_ENV_INS, 1, w->key);
	B64(S_ENV_INS, 2, it->seq);
	B64(S_ENV_INS, 3, it->prev_seq);
	B64(S_ENV_INS, 4, kind);
	B64(S_ENV_INS, 5, it->sent_at_ms);
	B64(S_ENV_INS, 6, c->now);
	B64(S_ENV_INS, 7, n_readings);
	BBLOB(S_ENV_INS, 8, it->sig, WIRE_SIG_LEN);
	int64_t inserted;
	if (!(rc = brg_commit__run_changes(c, S_ENV_INS, &inserted)))
		rc = inserted == 1;
counted:
	if (rc == 1) {
		w->d_env++;
		c->out->envelopes++;
	}
out:
	return rc;
}

/* Store a durable envelope: 1 if new, 0 if handled (duplicate or rejection), < 0 error. */
int brg_commit__store_envelope(struct brg_committer *c, struct wdev *w, const struct brg_item *it,
                               uint32_t kind, size_t n_readings)
{
	char d[160];
	int rc;
	w->durable = 1;
	if ((int64_t)it->seq > w->frontier && (rc = insert_envelope(c, w, it, kind, n_readings)))
		return rc;
	/* Already there (duplicate or reuse), or at/below the frontier. */
	if ((rc = brg_commit__env_visible(c, w->key, it->seq)))
		goto out;
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
			rc = brg_commit__accepted(c, w);
			return rc ? rc : 0;
		}
		snprintf(d, sizeof(d), "%s seq %llu stored before with another signature",
		         wire_kind_name(kind), (unsigned long long)it->seq);
		rc = brg_commit__count_reject(c, w, BRG_R_REUSED, d, 1);
		return rc ? rc : 0;
	}
	store_reset(c->st[S_ENV_SIG]);
	if (rc < 0)
		goto out;
	/* Not stored, at or below the frontier: new only inside a stretch declared lost. */
	if ((rc = in_lost_gap(c, w, it->seq)))
		return rc < 0 ? rc : insert_envelope(c, w, it, kind, n_readings);
	snprintf(d, sizeof(d), "%s seq %llu at or below the frontier %lld and not stored",
	         wire_kind_name(kind), (unsigned long long)it->seq, (long long)w->frontier);
	rc = brg_commit__count_reject(c, w, BRG_R_TOO_OLD, d, 1);
	return rc ? rc : 0;
out:
	return rc;
}

int brg_commit__insert_gap(struct brg_committer *c, struct wdev *w, const char *reason,
                           uint64_t prev, uint64_t last, int64_t count)
{
	int rc;
	B64(S_GAP_INS, 1, w->key);
	BTXT(S_GAP_INS, 2, reason);
	B64(S_GAP_INS, 3, prev);
	B64(S_GAP_INS, 4, last);
	if (count < 0 && (rc = store_bind_null(c->st[S_GAP_INS], 5)))
		goto out;
	if (count >= 0)
		B64(S_GAP_INS, 5, count);
	B64(S_GAP_INS, 6, c->now);
	int64_t inserted;
	if (!(rc = brg_commit__run_changes(c, S_GAP_INS, &inserted)))
		rc = inserted == 1;
out:
	return rc;
}

static int record_dropped(struct brg_committer *c, struct wdev *w, const struct wire_dropped *d)
{
	/* At or below the frontier it changes nothing (the chain is settled there, and an open
	 * hole lies above it): no row, no event. A device repeats a range until the envelope
	 * carrying it is acknowledged, and a hostile one would otherwise grow the table at will. */
	if ((int64_t)d->last_seq <= w->frontier)
		return 0;
	int rc = brg_commit__insert_gap(c, w, "dropped", d->prev_seq, d->last_seq,
	                                (int64_t)d->count);
	if (rc < 0)
		goto out;
	if (rc == 1)
		return brg_commit__event(
		    c, w, "gap_dropped", "device dropped %llu envelopes in seq %llu..%llu",
		    (unsigned long long)d->count, (unsigned long long)d->prev_seq + 1,
		    (unsigned long long)d->last_seq);
	/* The device may report a growing record with the same start. */
	B64(S_GAP_GROW_DROP, 1, d->last_seq);
	B64(S_GAP_GROW_DROP, 2, d->count);
	B64(S_GAP_GROW_DROP, 3, w->key);
	B64(S_GAP_GROW_DROP, 4, d->prev_seq);
	B64(S_GAP_GROW_DROP, 5, d->last_seq);
	rc = brg_commit__run(c, S_GAP_GROW_DROP);
out:
	return rc;
}

int brg_commit__do_batch(struct brg_committer *c, struct wdev *w, const struct brg_item *it)
{
	const struct wire_batch *b = it->batch;
	int rc = brg_commit__store_envelope(c, w, it, WIRE_KIND_BATCH, b->n_readings);
	if (rc <= 0)
		return rc;
	if (b->n_readings) {
		struct mcache *m = mcache_get(c, w, &rc);
		if (!m)
			return rc;
		if (oarray_reserve_n((void **)&c->rows, &c->cap_rows, c->n_rows + b->n_readings,
		                     sizeof(*c->rows)))
			return STORE_ENOMEM;
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
			c->rows[c->n_rows++] = (struct brg_row){
			    w->key, last_key, r->t_ms, (int64_t)it->seq, (int64_t)i, r->value};
		}
		w->d_read += (int64_t)b->n_readings;
		c->out->readings += b->n_readings;
	}
	for (size_t i = 0; i < b->n_dropped; i++)
		if ((rc = record_dropped(c, w, &b->dropped[i])))
			return rc;
	return brg_commit__accepted(c, w);
}

/* ---- end of group: readings, chains, device rows ---- */

/* The group's readings in primary key order: each device's metric series then grows at one
 * place in the index instead of at every metric of every batch in turn (SQLite: +20..50 %
 * rows/s at 50 readings per message, more with larger groups). */
int brg_commit__insert_readings(struct brg_committer *c)
{
	const struct brg_row *rows;
	if (!c->n_rows)
		return 0;
	int rc = brg_rowsort_sort(c->sorter, c->rows, c->n_rows, &rows);
	if (rc)
		return rc == BRG_ENOMEM ? STORE_ENOMEM : STORE_EINVAL;
	rc = store_copy_start(c->copy);
	for (size_t i = 0; i < c->n_rows && !rc; i++) {
		const struct brg_row *r = &rows[i];
		if (!(rc = store_copy_i64(c->copy, r->device)) &&
		    !(rc = store_copy_i64(c->copy, r->metric)) &&
		    !(rc = store_copy_i64(c->copy, r->ts)) &&
		    !(rc = store_copy_i64(c->copy, r->seq)) &&
		    !(rc = store_copy_i64(c->copy, r->idx)) &&
		    !(rc = store_copy_f64(c->copy, r->value)))
			rc = store_copy_end_row(c->copy);
	}
	int rc2 = store_copy_finish(c->copy);
	return rc ? rc : rc2;
}

/* The links above the device's frontier: the lowest MAX_LINKS stored ones and the lowest
 * MAX_DROP_LINKS dropped ones (by where they end), a bounded slice of a long chain; the next
 * group of the device reads on. *edge: where either read stopped short (UINT64_MAX if
 * neither did). Every link ending below it was read; one ending above may be missing from
 * the slice, so a hole reaching the edge may be none (brg_commit__chain). */
static int read_links(struct brg_committer *c, struct wdev *w, size_t *n, uint64_t *edge)
{
	int rc;
	*n = 0;
	*edge = UINT64_MAX;
	B64(S_LINKS, 1, w->key);
	B64(S_LINKS, 2, w->frontier);
	while ((rc = store_step(c->st[S_LINKS])) == 1 && *n < MAX_LINKS)
		c->links[(*n)++] = (struct brg_link){(uint64_t)store_col_i64(c->st[S_LINKS], 0),
		                                     (uint64_t)store_col_i64(c->st[S_LINKS], 1), 1,
		                                     store_col_i64(c->st[S_LINKS], 2)};
	store_reset(c->st[S_LINKS]);
	if (rc < 0)
		goto out;
	if (*n == MAX_LINKS)
		*edge = c->links[*n - 1].seq;
	B64(S_DROPS, 1, w->key);
	B64(S_DROPS, 2, w->frontier);
	size_t drops = 0;
	while ((rc = store_step(c->st[S_DROPS])) == 1 && drops < MAX_DROP_LINKS) {
		c->links[(*n)++] = (struct brg_link){(uint64_t)store_col_i64(c->st[S_DROPS], 0),
		                                     (uint64_t)store_col_i64(c->st[S_DROPS], 1), 0,
		                                     store_col_i64(c->st[S_DROPS], 2)};
		drops++;
	}
	store_reset(c->st[S_DROPS]);
	rc = rc < 0 ? rc : 0;
	if (drops == MAX_DROP_LINKS && c->links[*n - 1].seq < *edge)
		*edge = c->links[*n - 1].seq;
out:
	return rc;
}

int brg_commit__shrink_holes(struct brg_committer *c, struct wdev *w, uint64_t at)
{
	int rc;
	B64(S_GAP_SHRINK, 1, at);
	B64(S_GAP_SHRINK, 2, w->key);
	B64(S_GAP_SHRINK, 3, at);
	B64(S_GAP_SHRINK, 4, at);
	B64(S_GAP_SHRINK, 5, w->key);
	B64(S_GAP_SHRINK, 6, at);
	rc = brg_commit__run(c, S_GAP_SHRINK);
out:
	return rc;
}

/* The chain went on by a link from below the frontier (brg_chain.h): what lies between will
 * not come from the device any more. A stretch (from, to] ending in the link's own seq is
 * recorded lost, so that the open holes ending there are given up, not marked filled. */
static int follow_fork(struct brg_committer *c, struct wdev *w, const struct brg_chain *ch)
{
	int rc = 0;
	int jumped = ch->fork_to - ch->fork_from > 1;
	if (jumped && (rc = brg_commit__lose(c, w, ch->fork_from, ch->fork_to)))
		return rc;
	char tail[96];
	if (jumped)
		snprintf(tail, sizeof(tail), "; the seqs not stored after %llu up to it recorded"
		         " as lost", (unsigned long long)ch->fork_from);
	else
		snprintf(tail, sizeof(tail), "; nothing lies between");
	return brg_commit__event(c, w, "chain_forked",
	                         "seq %llu follows a seq below the store's frontier %llu: the "
	                         "device's history forked (its state directory restored from a "
	                         "backup, or its identity used twice)%s",
	                         (unsigned long long)ch->fork_to, (unsigned long long)ch->fork_from,
	                         tail);
}

int brg_commit__chain(struct brg_committer *c, struct wdev *w)
{
	struct brg_chain *ch = malloc(sizeof(*ch));
	size_t n;
	uint64_t edge;
	int rc = STORE_ENOMEM;
	if (!ch)
		return rc;
	if ((rc = read_links(c, w, &n, &edge)))
		goto out;
	/* a fork waits as long as a hole before it is recorded (the links it jumps may be late),
	 * and for a slice that holds every link above the frontier (one leaving the frontier
	 * past the slice would be missed) */
	int64_t fork_before = edge == UINT64_MAX ? c->now - c->o.gap_grace_ms : INT64_MIN;
	brg_chain_compute((uint64_t)w->frontier, fork_before, c->links, n, ch);
	if (ch->fork_to && (rc = follow_fork(c, w, ch)))
		goto out;
	if ((int64_t)ch->frontier != w->frontier) {
		B64(S_GAP_FILL_DROPPED, 1, c->now);
		B64(S_GAP_FILL_DROPPED, 2, w->key);
		B64(S_GAP_FILL_DROPPED, 3, ch->frontier);
		B64(S_GAP_FILL_DROPPED, 4, w->key);
		if ((rc = brg_commit__run(c, S_GAP_FILL_DROPPED)))
			goto out;
		B64(S_GAP_FILL, 1, c->now);
		B64(S_GAP_FILL, 2, w->key);
		B64(S_GAP_FILL, 3, ch->frontier);
		int64_t filled;
		if ((rc = brg_commit__run_changes(c, S_GAP_FILL, &filled)))
			goto out;
		if (filled &&
		    (rc = brg_commit__event(c, w, "gap_filled",
		                            "%lld missing stretch(es) below seq %llu arrived",
		                            (long long)filled, (unsigned long long)ch->frontier)))
			goto out;
		if ((rc = brg_commit__shrink_holes(c, w, ch->frontier)))
			goto out;
		w->frontier = (int64_t)ch->frontier;
		w->dirty = 1;
	}
	/* Keep the rows of open holes in step with the holes, so that two rows never cover the
	 * same envelopes (the holes come lowest first). */
	for (size_t i = 0; i < ch->n_holes; i++) {
		uint64_t prev = ch->holes[i].first - 1, last = ch->holes[i].last;
		/* its filling links may lie beyond the slice read: left for a later group */
		if (last >= edge)
			break;
		/* Out-of-order arrival (a restart, several bridges) opens holes that close within
		 * an ack timeout: only holes older than the grace are gaps worth a new row. */
		int recorded = 0;
		if (c->now - ch->holes[i].since >= c->o.gap_grace_ms) {
			/* a row whose lower part arrived (the batches above the segment below the
			 * hole) starts where the hole starts now */
			if (prev != ch->frontier && (rc = brg_commit__shrink_holes(c, w, prev)))
				goto out;
			if ((rc = brg_commit__insert_gap(c, w, "missing", prev, last, -1)) < 0)
				goto out;
			recorded = rc == 1;
		}
		if (recorded) {
			rc = brg_commit__event(c, w, "gap_missing",
			                       "chain broken after seq %llu: link to %llu missing",
			                       (unsigned long long)prev, (unsigned long long)last);
		} else {
			/* the hole's row, if it has one, ends where the hole ends now: a batch that
			 * arrived inside it split it, even while the part below is too young */
			B64(S_GAP_MOVE_MISS, 1, last);
			B64(S_GAP_MOVE_MISS, 2, w->key);
			B64(S_GAP_MOVE_MISS, 3, prev);
			B64(S_GAP_MOVE_MISS, 4, last);
			rc = brg_commit__run(c, S_GAP_MOVE_MISS);
		}
		if (rc)
			goto out;
	}
	if (brg_commit__is_state(w, STORE_ST_REVOKED)) {
		rc = 0;
		goto out; /* nothing more is said to a revoked device */
	}
	struct brg_reply *r = brg_commit__add_reply(c->out);
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
