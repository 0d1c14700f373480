/* store_prune.c - retention (see store_prune.h). Readings are cut per (device, metric) along the
 * primary key (device, metric, ts, ...) in time windows that adapt to the density of the data,
 * so each transaction stays short whatever the sample rate; those dated in the future, by
 * when their batch was stored. */
#include <stddef.h>
#include <stdint.h>

#include "otime.h"
#include "store_prune.h"

#define METRIC_PAGE  512
#define SLICE_MAX    50000 /* readings per transaction: halve the window above this */
#define SLICE_MIN    5000  /* double it below this */
#define SLICE_MS     250   /* or this much work, whichever comes first */
#define WINDOW_FIRST (86400LL * 1000)
#define WINDOW_MIN   1000LL
#define WINDOW_MAX   (400LL * 86400 * 1000)
#define EVENT_SLICE  10000

/* Run the statements in one transaction, each bound to args[0..nargs); *changes receives the
 * rows changed by the last one. */
static int txn(struct store *s, const char *const *sqls, int nargs, const int64_t *args,
               int64_t *changes)
{
	int rc = store_begin(s);
	for (; !rc && *sqls; sqls++)
		rc = store_exec_i64(s, *sqls, args, nargs, changes);
	if (rc) {
		store_rollback(s);
		return rc;
	}
	return store_commit(s);
}

/* What a prune cuts from each series, by one pair of statements bound to (device, metric, hi,
 * extra...): `first` selects the oldest reading time it reaches below hi (or, for a dry run,
 * counts what it reaches), `del` deletes what it reaches below hi.
 *  - past: readings dated before the cut;
 *  - future: readings dated after the prune started (a device whose clock ran ahead) that came
 *    in a batch stored before the cut. Without it they would outlive every retention. */
struct cut {
	struct store_stmt *first, *del;
	int64_t end; /* hi of the last window */
	int nextra;
	int64_t extra[2];
};

#define FUTURE_WHERE                                                                               \
	" r.device = ? AND r.metric = ? AND r.ts < ? AND r.ts > ? AND EXISTS (SELECT 1 FROM"       \
	" envelopes e WHERE e.device = r.device AND e.seq = r.seq AND e.stored_at < ?)"

/* Reading deletes share a transaction until it holds SLICE_MAX rows or SLICE_MS of work, so
 * a store of many sparse series does not pay one commit per series, nor a dense one hold the
 * write lock for long. */
struct slicer {
	struct store *s;
	int open;
	int64_t rows, since; /* of the open transaction */
	int64_t done;        /* rows deleted by committed transactions */
};

static int slicer_commit(struct slicer *sl)
{
	sl->open = 0;
	int rc = store_commit(sl->s);
	if (!rc)
		sl->done += sl->rows;
	return rc;
}

/* Bind (device, metric, hi, the cut's extras) and step: 1 = a row, 0 = done, < 0 = error. The
 * caller reads what it needs, then resets the statement. */
static int series_step(struct store_stmt *st, const struct cut *cut, int64_t dev, int64_t metric,
                       int64_t hi)
{
	int rc;
	if ((rc = store_bind_i64(st, 1, dev)) || (rc = store_bind_i64(st, 2, metric)) ||
	    (rc = store_bind_i64(st, 3, hi)))
		return rc;
	for (int i = 0; i < cut->nextra; i++)
		if ((rc = store_bind_i64(st, 4 + i, cut->extra[i])))
			return rc;
	return store_step(st);
}

static int slicer_delete(struct slicer *sl, const struct cut *cut, int64_t dev, int64_t metric,
                         int64_t hi, int64_t *got)
{
	int rc;
	if (!sl->open) {
		if ((rc = store_begin(sl->s)))
			return rc;
		sl->open = 1;
		sl->rows = 0;
		sl->since = otime_mono_ms();
	}
	rc = series_step(cut->del, cut, dev, metric, hi);
	*got = store_changes(cut->del);
	store_reset(cut->del);
	if (rc < 0)
		return rc;
	sl->rows += *got;
	if (sl->rows < SLICE_MAX && otime_mono_ms() - sl->since < SLICE_MS)
		return STORE_OK;
	return slicer_commit(sl);
}

/* The first column of cut->first's row for a series: 1 and *v, or 0 when it has none. */
static int cut_first(const struct cut *cut, int64_t dev, int64_t metric, int64_t *v)
{
	int rc = series_step(cut->first, cut, dev, metric, cut->end);
	if (rc == 1)
		*v = store_col_i64(cut->first, 0);
	store_reset(cut->first);
	return rc;
}

static int prune_series(struct slicer *sl, const struct cut *cut, int64_t dev, int64_t metric)
{
	int64_t window = WINDOW_FIRST, lo = 0, got = 0;
	int rc;
	/* every pass deletes the oldest row the cut reaches, so lo only grows */
	while ((rc = cut_first(cut, dev, metric, &lo)) == 1) {
		int64_t hi = lo >= cut->end - window ? cut->end : lo + window;
		if ((rc = slicer_delete(sl, cut, dev, metric, hi, &got)))
			return rc;
		if (got > SLICE_MAX && window > WINDOW_MIN)
			window /= 2;
		else if (got < SLICE_MIN && window < WINDOW_MAX)
			window *= 2;
	}
	return rc;
}

static int prepare_cuts(struct store *s, int64_t before, int dry_run, struct cut cuts[2])
{
	int64_t now = otime_wall_ms();
	cuts[0] = (struct cut){.end = before};
	cuts[1] = (struct cut){
	    .end = INT64_MAX, .nextra = 2, .extra = {now > before ? now : before, before}};
	int rc = store_prepare(s,
	                       dry_run ? "SELECT COUNT(*) FROM readings WHERE device = ? AND"
	                                 " metric = ? AND ts < ?"
	                               : "SELECT ts FROM readings WHERE device = ? AND metric = ?"
	                                 " AND ts < ? ORDER BY ts LIMIT 1",
	                       &cuts[0].first);
	if (!rc)
		rc = store_prepare(
		    s, "DELETE FROM readings WHERE device = ? AND metric = ? AND ts < ?",
		    &cuts[0].del);
	if (!rc)
		rc = store_prepare(s,
		                   dry_run ? "SELECT COUNT(*) FROM readings r WHERE" FUTURE_WHERE
		                           : "SELECT r.ts FROM readings r WHERE" FUTURE_WHERE
		                             " ORDER BY r.ts LIMIT 1",
		                   &cuts[1].first);
	if (!rc)
		rc = store_prepare(s, "DELETE FROM readings AS r WHERE" FUTURE_WHERE, &cuts[1].del);
	return rc;
}

static int prune_readings(struct store *s, int64_t before, int dry_run, int64_t *n)
{
	int64_t page[METRIC_PAGE][2], last = INT64_MIN;
	struct slicer sl = {.s = s};
	struct cut cuts[2];
	int rc = prepare_cuts(s, before, dry_run, cuts);
	while (!rc) {
		struct store_stmt *st = NULL;
		int k = 0;
		rc = store_prepare(s,
		                   "SELECT id, device FROM metrics WHERE id > ? ORDER BY id"
		                   " LIMIT " STORE_STR(METRIC_PAGE),
		                   &st);
		if (!rc)
			rc = store_bind_i64(st, 1, last);
		while (!rc && k < METRIC_PAGE && (rc = store_step(st)) == 1) {
			page[k][0] = store_col_i64(st, 0);
			page[k][1] = store_col_i64(st, 1);
			k++;
			rc = 0;
		}
		store_stmt_free(st);
		if (rc < 0 || !k)
			break;
		for (int i = 0; i < k && !rc; i++) {
			for (int j = 0; j < 2 && !rc; j++) {
				int64_t c = 0;
				if (!dry_run)
					rc = prune_series(&sl, &cuts[j], page[i][1], page[i][0]);
				else if ((rc = cut_first(&cuts[j], page[i][1], page[i][0], &c)) ==
				         1)
					rc = 0; /* COUNT(*): always one row */
				*n += c;
			}
			/* series with nothing to cut still take time: the open transaction ends on
			 * the same bound as a delete's */
			if (!rc && sl.open && otime_mono_ms() - sl.since >= SLICE_MS)
				rc = slicer_commit(&sl);
		}
		last = page[k - 1][0];
	}
	for (int j = 0; j < 2; j++) {
		store_stmt_free(cuts[j].first);
		store_stmt_free(cuts[j].del);
	}
	if (sl.open && rc < 0)
		store_rollback(s);
	else if (sl.open)
		rc = slicer_commit(&sl);
	if (!dry_run)
		*n = sl.done;
	return rc < 0 ? rc : STORE_OK;
}

int store_prune_events_slice(struct store *s, int64_t before, int64_t *deleted)
{
	static const int64_t limit = EVENT_SLICE;
	int64_t args[2] = {before, limit};
	return store_exec_i64(s,
	                      "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ?"
	                      " ORDER BY id LIMIT ?)",
	                      args, 2, deleted);
}

static int prune_events(struct store *s, int64_t before, int dry_run, int64_t *n)
{
	if (dry_run)
		return store_query_i64(s, n, "SELECT COUNT(*) FROM events WHERE at < ?", 1, before);
	int64_t got;
	do {
		int rc = store_begin(s);
		if (!rc && (rc = store_prune_events_slice(s, before, &got)))
			store_rollback(s);
		else if (!rc)
			rc = store_commit(s);
		if (rc)
			return rc;
		*n += got;
	} while (got == EVENT_SLICE);
	return STORE_OK;
}

/* Gaps resolved before the cut, and final ones (`dropped`, `lost`: never resolved) opened before
 * it once the device's chain has passed them; a `dropped` gap above the frontier is still a
 * link of the chain (brg_durable.c reads it) and stays. */
#define OLD_GAPS                                                                                   \
	" FROM gaps WHERE (resolved_at IS NOT NULL AND resolved_at < ?) OR (resolved_at IS NULL"   \
	" AND reason IN ('dropped', 'lost') AND opened_at < ? AND last_seq <="                     \
	" (SELECT frontier FROM devices d WHERE d.id = gaps.device))"

static int prune_gaps(struct store *s, int64_t before, int dry_run, int64_t *n)
{
	static const char *const del[] = {"DELETE" OLD_GAPS, NULL};
	const int64_t args[2] = {before, before};
	if (dry_run)
		return store_query_i64(s, n, "SELECT COUNT(*)" OLD_GAPS, 2, before, before);
	return txn(s, del, 2, args, n);
}

static int prune_tasks(struct store *s, int64_t before, int dry_run, int64_t *n)
{
#define FINISHED "SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?"
	static const char *const del[] = {
	    "DELETE FROM task_args WHERE task IN (" FINISHED ")",
	    "DELETE FROM task_output WHERE task IN (" FINISHED ")",
	    "DELETE FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?", NULL};
	if (dry_run)
		return store_query_i64(s, n, "SELECT COUNT(*) FROM (" FINISHED ") AS f", 1, before);
#undef FINISHED
	return txn(s, del, 1, &before, n);
}

int store_prune(struct store *s, int64_t before, int dry_run, struct store_prune_counts *out)
{
	int rc;
	*out = (struct store_prune_counts){0, 0, 0, 0};
	if (!s || before < 0)
		return STORE_EINVAL;
	if ((rc = prune_readings(s, before, dry_run, &out->readings)) ||
	    (rc = prune_events(s, before, dry_run, &out->events)) ||
	    (rc = prune_gaps(s, before, dry_run, &out->gaps)) ||
	    (rc = prune_tasks(s, before, dry_run, &out->tasks)))
		return rc;
	return STORE_OK;
}
