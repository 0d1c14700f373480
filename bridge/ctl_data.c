/* ctl_data.c - outpostctl readings, events, gaps, and prune (retention). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg.h"
#include "ctl.h"
#include "ctl_sql.h"
#include "store_ops.h"
#include "store_prune.h"
#include "wire_topic.h"

int ctl_device_key(struct ctl *c, const char *id, int64_t *key)
{
	struct store_device d;
	if (wire_id_check(id))
		return ctl_err(CTL_USAGE, "'%s' is not a device id ([A-Za-z0-9_-]{1,64})", id);
	int rc = store_device_get(c->s, id, &d);
	if (rc == STORE_ENOTFOUND)
		return ctl_err(CTL_FAIL, "no device '%s' in %s", id, store_url(c->s));
	if (rc)
		return ctl_store_err(c, id, rc);
	*key = d.key;
	return CTL_OK;
}

static int parse_limit(const char *cmd, const char *s, int64_t *out)
{
	if (ctl_parse_number(s, 1, out))
		return ctl_err(CTL_USAGE, "%s: --limit: want a positive number", cmd);
	return CTL_OK;
}

/* A bare number is no time (ctl_parse_time): seconds after 1970, milliseconds, or days ago?
 * Said with what to write instead: @N for a Unix time, else also a duration. */
static int bare_number_err(const char *cmd, const char *opt, const char *s)
{
	if (strlen(s) >= 9) /* 1973 on, as seconds: surely a Unix time */
		return ctl_err(CTL_USAGE,
		               "%s: --%s: '%s' is a bare number, which is no time: write @%s for"
		               " that Unix time (seconds)",
		               cmd, opt, s, s);
	return ctl_err(CTL_USAGE,
	               "%s: --%s: '%s' is a bare number, which is no time: write %sd for %s days"
	               " ago, or @%s for Unix seconds",
	               cmd, opt, s, s, s, s);
}

static int parse_time_opt(const char *cmd, const char *opt, const char *s, int64_t *out)
{
	size_t n = strlen(s);
	if (n && n < 20 && strspn(s, "0123456789") == n)
		return bare_number_err(cmd, opt, s);
	if (ctl_parse_time(s, store_now_ms(), out))
		return ctl_err(CTL_USAGE,
		               "%s: --%s: '%s' is not a time (2026-11-22T22:00:00Z, 2h, @SECONDS)",
		               cmd, opt, s);
	return CTL_OK;
}

int ctl_cmd_readings(struct ctl *c, int argc, char **argv)
{
	const char *device = NULL, *metric = NULL, *since = NULL, *until = NULL, *limit = NULL;
	const char *format = "csv", *pos[1];
	int64_t from = INT64_MIN, to = INT64_MAX, max = INT64_MAX, key;
	enum ctl_fmt fmt;
	int npos, rc;
	struct ctl_optdef defs[] = {
	    {"device", 1, &device, NULL, NULL, 0}, {"metric", 1, &metric, NULL, NULL, 0},
	    {"since", 1, &since, NULL, NULL, 0},   {"until", 1, &until, NULL, NULL, 0},
	    {"limit", 1, &limit, NULL, NULL, 0},   {"format", 1, &format, NULL, NULL, 0},
	    {NULL, 0, NULL, NULL, NULL, 0}};
	if ((rc = ctl_args(c, "readings", argc, argv, defs, pos, 0, &npos)))
		return rc;
	if (!device)
		return ctl_err(CTL_USAGE, "readings: --device ID is required");
	if (ctl_fmt_parse(format, &fmt))
		return ctl_err(CTL_USAGE, "readings: --format: want csv, json or table");
	if ((since && (rc = parse_time_opt("readings", "since", since, &from))) ||
	    (until && (rc = parse_time_opt("readings", "until", until, &to))) ||
	    (limit && (rc = parse_limit("readings", limit, &max))))
		return rc;
	if (since && until && from >= to) /* nothing could be in [since, until) */
		return ctl_err(CTL_USAGE, "readings: --since %s is not before --until %s", since,
		               until);
	/* A table is kept in memory to align it: without --limit it shows CTL_TABLE_ROWS rows,
	 * and one more is read to tell whether there are others. */
	int capped = !limit && fmt == CTL_FMT_TABLE;
	if (capped)
		max = CTL_TABLE_ROWS + 1;
	if (!ctl_store(c))
		return c->code;
	if ((rc = ctl_device_key(c, device, &key)))
		return rc;
	struct store_stmt *st = NULL;
	int64_t metric_key = 0;
	if (metric) { /* a typo in the name is said, not shown as an empty list */
		int found = 0;
		rc = store_prepare(c->s, "SELECT id FROM metrics WHERE device = ? AND name = ?",
		                   &st);
		if (!rc && !(rc = store_bind_i64(st, 1, key)) &&
		    !(rc = store_bind_text(st, 2, metric)) && (rc = store_step(st)) >= 0) {
			found = rc == 1;
			metric_key = found ? store_col_i64(st, 0) : 0;
			rc = 0;
		}
		store_stmt_free(st);
		st = NULL;
		if (rc)
			return ctl_store_err(c, "readings", rc);
		if (!found)
			return ctl_err(CTL_FAIL, "readings: device '%s' has no metric '%s'", device,
			               metric);
	}
	/* One metric: by its id, so that the readings' primary key (device, metric, ts, seq, idx)
	 * gives the time range in order (one name: the same order as ts, name, seq, idx) instead of
	 * a scan and sort of all the device's readings. */
#define READINGS(C)                                                                                \
	"SELECT m.name, m.unit, r.ts, r.value, r.seq FROM readings r JOIN metrics m"               \
	" ON m.id = r.metric WHERE r.device = ? AND r.ts >= ? AND r.ts < ?"                        \
	" ORDER BY r.ts, m.name" C ", r.seq, r.idx LIMIT ?"
	rc = store_prepare(
	    c->s,
	    metric ? "SELECT m.name, m.unit, r.ts, r.value, r.seq FROM readings r JOIN metrics m"
	             " ON m.id = r.metric WHERE r.device = ? AND r.metric = ? AND r.ts >= ? AND"
	             " r.ts < ? ORDER BY r.ts, r.seq, r.idx LIMIT ?"
	           : CTL_SQL(c->s, READINGS),
	    &st);
	int col = 1;
	if (!rc && !(rc = store_bind_i64(st, col++, key)) &&
	    !(rc = metric ? store_bind_i64(st, col++, metric_key) : 0) &&
	    !(rc = store_bind_i64(st, col++, from)) && !(rc = store_bind_i64(st, col++, to)))
		rc = store_bind_i64(st, col, max);
	if (rc) {
		store_stmt_free(st);
		return ctl_store_err(c, "readings", rc);
	}
	static const char *const names[] = {"device", "metric", "unit", "time", "value", "seq"};
	static const enum ctl_coltype types[] = {CTL_STR, CTL_STR, CTL_STR,
	                                         CTL_STR, CTL_NUM, CTL_NUM};
	struct ctl_out o;
	ctl_out_begin(&o, fmt, c->raw, stdout, 6, names, types);
	if (capped)
		ctl_out_cap(&o, "--limit N shows N, --since T those from T on, --format csv all of"
		                " them");
	while ((rc = store_step(st)) == 1) {
		char t[32], v[32], seq[24];
		snprintf(seq, sizeof(seq), "%" PRId64, store_col_i64(st, 4));
		const char *vals[6] = {device,
		                       store_col_text(st, 0),
		                       store_col_text(st, 1),
		                       ctl_time(store_col_i64(st, 2), t),
		                       store_col_null(st, 3) ? (fmt == CTL_FMT_JSON ? NULL : "nan")
		                                             : ctl_double(store_col_f64(st, 3), v),
		                       seq};
		if (ctl_out_row(&o, vals))
			break;
	}
	int out_rc = ctl_out_end(&o, rc < 0);
	store_stmt_free(st);
	return rc < 0 ? ctl_store_err(c, "readings", rc) : out_rc;
}

int ctl_cmd_events(struct ctl *c, int argc, char **argv)
{
	const char *device = NULL, *type = NULL, *since = NULL, *limit = NULL, *format = "table";
	const char *pos[1];
	int64_t from = INT64_MIN, max = 100, key = 0;
	enum ctl_fmt fmt;
	int npos, rc;
	struct ctl_optdef defs[] = {
	    {"device", 1, &device, NULL, NULL, 0}, {"type", 1, &type, NULL, NULL, 0},
	    {"since", 1, &since, NULL, NULL, 0},   {"limit", 1, &limit, NULL, NULL, 0},
	    {"format", 1, &format, NULL, NULL, 0}, {NULL, 0, NULL, NULL, NULL, 0}};
	if ((rc = ctl_args(c, "events", argc, argv, defs, pos, 0, &npos)))
		return rc;
	if (ctl_fmt_parse(format, &fmt))
		return ctl_err(CTL_USAGE, "events: --format: want table, csv or json");
	if ((type && (rc = ctl_check_choice("events", "type", type, store_event_types))) ||
	    (since && (rc = parse_time_opt("events", "since", since, &from))) ||
	    (limit && (rc = parse_limit("events", limit, &max))))
		return rc;
	if (!ctl_store(c))
		return c->code;
	if (device && (rc = ctl_device_key(c, device, &key)))
		return rc;
	struct store_stmt *st = NULL;
	/* The newest `limit` events, printed oldest first. */
	rc = store_prepare(c->s, device ? CTL_SQL_EVENTS_DEVICE : CTL_SQL_EVENTS, &st);
	int col = 1;
	if (!rc && !(rc = device ? store_bind_i64(st, col++, key) : 0) &&
	    !(rc = store_bind_i64(st, col++, from)) && !(rc = store_bind_text(st, col++, type)) &&
	    !(rc = store_bind_text(st, col++, type)))
		rc = store_bind_i64(st, col, max);
	if (rc) {
		store_stmt_free(st);
		return ctl_store_err(c, "events", rc);
	}
	static const char *const names[] = {"time", "device", "type", "detail"};
	static const enum ctl_coltype types[] = {CTL_STR, CTL_STR, CTL_STR, CTL_STR};
	struct ctl_out o;
	ctl_out_begin(&o, fmt, c->raw, stdout, 4, names, types);
	while ((rc = store_step(st)) == 1) {
		char t[32];
		const char *v[4] = {ctl_time(store_col_i64(st, 0), t), store_col_text(st, 1),
		                    store_col_text(st, 2), store_col_text(st, 3)};
		if (ctl_out_row(&o, v))
			break;
	}
	int out_rc = ctl_out_end(&o, rc < 0);
	store_stmt_free(st);
	return rc < 0 ? ctl_store_err(c, "events", rc) : out_rc;
}

int ctl_cmd_gaps(struct ctl *c, int argc, char **argv)
{
	const char *device = NULL, *all = NULL, *format = "table", *pos[1];
	int64_t key = 0;
	enum ctl_fmt fmt;
	int npos, rc;
	struct ctl_optdef defs[] = {{"device", 1, &device, NULL, NULL, 0},
	                            {"all", 0, &all, NULL, NULL, 0},
	                            {"format", 1, &format, NULL, NULL, 0},
	                            {NULL, 0, NULL, NULL, NULL, 0}};
	if ((rc = ctl_args(c, "gaps", argc, argv, defs, pos, 0, &npos)))
		return rc;
	if (ctl_fmt_parse(format, &fmt))
		return ctl_err(CTL_USAGE, "gaps: --format: want table, csv or json");
	if (!ctl_store(c))
		return c->code;
	if (device && (rc = ctl_device_key(c, device, &key)))
		return rc;
	struct store_stmt *st = NULL;
	/* a table is kept in memory to align it: CTL_TABLE_ROWS rows, and one to tell of more */
	int capped = fmt == CTL_FMT_TABLE;
	/* Dropped gaps are final when recorded; missing ones stay open until filled. */
	rc = store_prepare(
	    c->s, device ? CTL_SQL(c->s, CTL_SQL_GAPS_DEVICE) : CTL_SQL(c->s, CTL_SQL_GAPS), &st);
	int col = 1;
	if (!rc && !(rc = device ? store_bind_i64(st, col++, key) : 0) &&
	    !(rc = store_bind_i64(st, col++, all ? 1 : 0)))
		rc = store_bind_i64(st, col, capped ? CTL_TABLE_ROWS + 1 : INT64_MAX);
	if (rc) {
		store_stmt_free(st);
		return ctl_store_err(c, "gaps", rc);
	}
	static const char *const names[] = {"device", "reason", "first_seq", "last_seq",
	                                    "count",  "since",  "resolved",  "resolution"};
	static const enum ctl_coltype types[] = {CTL_STR, CTL_STR, CTL_NUM, CTL_NUM,
	                                         CTL_NUM, CTL_STR, CTL_STR, CTL_STR};
	struct ctl_out o;
	ctl_out_begin(&o, fmt, c->raw, stdout, 8, names, types);
	if (capped)
		ctl_out_cap(&o, device ? "--format csv shows all of them"
		                       : "--device ID shows one device's, --format csv all of"
		                         " them");
	while ((rc = store_step(st)) == 1) {
		char t1[32], t2[32], a[24], b[24], n[24];
		snprintf(a, sizeof(a), "%" PRId64, store_col_i64(st, 2) + 1);
		snprintf(b, sizeof(b), "%" PRId64, store_col_i64(st, 3));
		snprintf(n, sizeof(n), "%" PRId64, store_col_i64(st, 4));
		const char *v[8] = {store_col_text(st, 0),
		                    store_col_text(st, 1),
		                    a,
		                    b,
		                    store_col_null(st, 4) ? NULL : n,
		                    ctl_time(store_col_i64(st, 5), t1),
		                    store_col_null(st, 6) ? NULL
		                                          : ctl_time(store_col_i64(st, 6), t2),
		                    store_col_text(st, 7)};
		if (ctl_out_row(&o, v))
			break;
	}
	int out_rc = ctl_out_end(&o, rc < 0);
	store_stmt_free(st);
	return rc < 0 ? ctl_store_err(c, "gaps", rc) : out_rc;
}

/* The shortest "how long ago" prune takes: a day. */
#define PRUNE_MIN_AGO_MS 86400000LL

/* Times ctl_parse_time takes but prune, as it deletes, refuses as likely mistakes: a signed
 * duration (read as that long ago, though "-5d" may have meant anything), a zero one (this
 * very moment: everything goes; "now" says so on purpose), a duration shorter than a day
 * (6m is 6 minutes, not months: nearly all history goes). A date, @N or "now" is taken as
 * meant. A bare number no command takes (parse_time_opt). */
static int prune_before_check(const char *s)
{
	size_t n = strlen(s), nd = strspn(s, "0123456789");
	int64_t d;
	if (nd && nd < n && !cfg_parse_duration(s, &d) && d > 0 && d < PRUNE_MIN_AGO_MS) {
		long long v = strtoll(s, NULL, 10);
		const char *unit = s + nd;
		int minutes = !strcasecmp(unit, "m") || !strcasecmp(unit, "min");
		const char *what = minutes                  ? "minutes"
		                   : !strcasecmp(unit, "h")  ? "hours"
		                   : !strcasecmp(unit, "ms") ? "milliseconds"
		                                             : "seconds";
		char hint[64];
		if (minutes && v <= 120) /* "m" may have meant months */
			snprintf(hint, sizeof(hint), "for months write %lldd", v * 30);
		else
			snprintf(hint, sizeof(hint), "for days write them with d, e.g. 90d");
		return ctl_err(CTL_USAGE,
		               "prune: --before %s is %lld %s ago, less than a day, and would prune"
		               " nearly everything; %s (a date, @N or 'now' is taken as given)",
		               s, v, what, hint);
	}
	if (s[0] == '-')
		return ctl_err(CTL_USAGE,
		               "prune: --before %s: a negative duration; want how long ago without a"
		               " sign (e.g. 90d) or a date",
		               s);
	if (nd && nd < n && !cfg_parse_duration(s, &d) && d == 0)
		return ctl_err(CTL_USAGE,
		               "prune: --before %s: a zero duration is this moment and would prune"
		               " everything; want how long ago (e.g. 90d), or 'now' if that is meant",
		               s);
	return CTL_OK;
}

int ctl_cmd_prune(struct ctl *c, int argc, char **argv)
{
	const char *before = NULL, *yes = NULL, *pos[1];
	int64_t cut;
	int npos, rc;
	struct ctl_optdef defs[] = {{"before", 1, &before, NULL, NULL, 0},
	                            {"yes", 0, &yes, NULL, NULL, 0},
	                            {NULL, 0, NULL, NULL, NULL, 0}};
	if ((rc = ctl_args(c, "prune", argc, argv, defs, pos, 0, &npos)))
		return rc;
	if (!before)
		return ctl_err(CTL_USAGE,
		               "prune: --before T is required (e.g. 90d: older than 90 days)");
	if ((rc = prune_before_check(before)) ||
	    (rc = parse_time_opt("prune", "before", before, &cut)))
		return rc;
	if (cut > store_now_ms() || cut < 0)
		return ctl_err(CTL_USAGE, "prune: --before %s is %s", before,
		               cut < 0 ? "before 1970" : "in the future");
	if (!ctl_store(c))
		return c->code;
	struct store_prune_counts n;
	char t[32], detail[200];
	ctl_time(cut, t);
	rc = store_prune(c->s, cut, !yes, &n);
	printf("%s before %s:\n  readings  %" PRId64 "\n  events    %" PRId64
	       "\n  gaps      %" PRId64 " (resolved, or final and passed)"
	       "\n  tasks     %" PRId64 " (finished)\n",
	       yes ? (rc ? "deleted until the failure" : "deleted") : "would delete", t, n.readings,
	       n.events, n.gaps, n.tasks);
	if (rc)
		return ctl_store_err(c, "prune", rc);
	if (!yes) {
		printf("nothing deleted: run again with --yes to delete\n");
		return CTL_OK;
	}
	snprintf(detail, sizeof(detail),
	         "before %s: %" PRId64 " readings, %" PRId64 " events, %" PRId64 " gaps, %" PRId64
	         " tasks",
	         t, n.readings, n.events, n.gaps, n.tasks);
	if ((rc = store_event_add(c->s, 0, store_now_ms(), "pruned", detail)))
		return ctl_store_err(c, "prune: the event", rc);
	ctl_done(c, "the counts", "pruned (%s; the 'pruned' event holds them)", detail);
	return CTL_OK;
}
