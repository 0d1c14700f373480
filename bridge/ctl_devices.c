/* ctl_devices.c - outpostctl devices, device show|quarantine|release|revoke. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "ovis.h"
#include "store_ops.h"
#include "wire_topic.h"
#include "wire_utf8.h"

static const char *num(int64_t v, char *buf)
{
	snprintf(buf, 24, "%" PRId64, v);
	return buf;
}

int ctl_cmd_devices(struct ctl *c, int argc, char **argv)
{
	const char *state = NULL, *format = "table", *pos[1];
	int npos, rc;
	struct ctl_optdef defs[] = {{"state", 1, &state, NULL, NULL, 0},
	                            {"format", 1, &format, NULL, NULL, 0},
	                            {NULL, 0, NULL, NULL, NULL, 0}};
	enum ctl_fmt fmt;
	if ((rc = ctl_args(c, "devices", argc, argv, defs, pos, 0, &npos)))
		return rc;
	if (ctl_fmt_parse(format, &fmt))
		return ctl_err(CTL_USAGE, "devices: --format: want table, csv or json");
	if (state && (rc = ctl_check_choice("devices", "state", state, store_device_states)))
		return rc;
	struct store *s = ctl_store(c);
	if (!s)
		return c->code;
	struct store_stmt *st = NULL;
#define DEVICES(C)                                                                                 \
	"SELECT device_id, state, online, last_seen_at, frontier, envelopes, readings,"            \
	" duplicates, rejected, agent_version, spool_records FROM devices"                         \
	" WHERE (CAST(? AS TEXT) IS NULL OR state = ?) ORDER BY device_id" C " LIMIT ?"
	/* a table is kept in memory to align it: CTL_TABLE_ROWS rows, and one to tell of more */
	int capped = fmt == CTL_FMT_TABLE;
	rc = store_prepare(s, CTL_SQL(s, DEVICES), &st);
	if (!rc && !(rc = store_bind_text(st, 1, state)) && !(rc = store_bind_text(st, 2, state)))
		rc = store_bind_i64(st, 3, capped ? CTL_TABLE_ROWS + 1 : INT64_MAX);
	if (rc) {
		store_stmt_free(st);
		return ctl_store_err(c, "devices", rc);
	}
	/* backlog: unacknowledged envelopes in the device's spool, as its last Birth said */
	static const char *const names[] = {"device",     "state",    "online",  "last_seen",
	                                    "frontier",   "envelopes", "readings", "backlog",
	                                    "duplicates", "rejected",  "agent"};
	static const enum ctl_coltype types[] = {CTL_STR, CTL_STR, CTL_STR, CTL_STR,
	                                         CTL_NUM, CTL_NUM, CTL_NUM, CTL_NUM,
	                                         CTL_NUM, CTL_NUM, CTL_STR};
	struct ctl_out o;
	ctl_out_begin(&o, fmt, c->raw, stdout, 11, names, types);
	if (capped)
		ctl_out_cap(&o, "--state S shows those in state S, --format csv all of them");
	while ((rc = store_step(st)) == 1) {
		char t[32], b[6][24];
		const char *v[11] = {store_col_text(st, 0),
		                     store_col_text(st, 1),
		                     store_col_i64(st, 2) ? "yes" : "no",
		                     store_col_null(st, 3) ? NULL
		                                           : ctl_time(store_col_i64(st, 3), t),
		                     num(store_col_i64(st, 4), b[0]),
		                     num(store_col_i64(st, 5), b[1]),
		                     num(store_col_i64(st, 6), b[2]),
		                     store_col_null(st, 10) ? NULL : num(store_col_i64(st, 10), b[5]),
		                     num(store_col_i64(st, 7), b[3]),
		                     num(store_col_i64(st, 8), b[4]),
		                     store_col_text(st, 9)};
		if (ctl_out_row(&o, v))
			break;
	}
	int out_rc = ctl_out_end(&o, rc < 0);
	store_stmt_free(st);
	return rc < 0 ? ctl_store_err(c, "devices", rc) : out_rc;
}

/* Print the rows of a query as indented lines: each column formatted by fmt_row. */
static int rejections(struct store *s, int64_t key)
{
	struct store_stmt *st = NULL;
	int rc = store_prepare(s,
	                       "SELECT reason, count, last_at, last_detail FROM rejections WHERE"
	                       " device = ? ORDER BY count DESC, reason",
	                       &st);
	if (rc || (rc = store_bind_i64(st, 1, key)))
		goto out;
	while ((rc = store_step(st)) == 1) {
		char t[32], v[CTL_VIS_MAX];
		printf("  %-16s %8" PRId64 "  last %s  %s\n", store_col_text(st, 0),
		       store_col_i64(st, 1), ctl_time(store_col_i64(st, 2), t),
		       ctl_vis(store_col_text(st, 3), v, sizeof(v)));
	}
out:
	store_stmt_free(st);
	return rc < 0 ? rc : 0;
}

static int metrics(struct store *s, int64_t key)
{
	struct store_stmt *st = NULL;
#define METRICS(C)                                                                                 \
	"SELECT name, unit, wire_id FROM metrics WHERE device = ? ORDER BY wire_id IS NULL,"       \
	" wire_id, name" C
	int rc = store_prepare(s, CTL_SQL(s, METRICS), &st);
	if (rc || (rc = store_bind_i64(st, 1, key)))
		goto out;
	while ((rc = store_step(st)) == 1) {
		/* names and units are what the device's Birth said: shown, not obeyed */
		char name[CTL_VIS_MAX], unit[CTL_VIS_MAX];
		ctl_vis(store_col_text(st, 0), name, sizeof(name));
		ctl_vis(store_col_text(st, 1), unit, sizeof(unit));
		if (store_col_null(st, 2))
			printf("  %-32s %-8s (no longer in the catalog)\n", name, unit);
		else
			printf("  %-32s %-8s id %" PRId64 "\n", name, unit, store_col_i64(st, 2));
	}
out:
	store_stmt_free(st);
	return rc < 0 ? rc : 0;
}

static int open_gaps(struct store *s, int64_t key)
{
	struct store_stmt *st = NULL;
	int rc = store_prepare(s,
	                       "SELECT reason, prev_seq, last_seq, count, opened_at FROM gaps WHERE"
	                       " device = ? AND resolved_at IS NULL ORDER BY prev_seq LIMIT 50",
	                       &st);
	if (rc || (rc = store_bind_i64(st, 1, key)))
		goto out;
	while ((rc = store_step(st)) == 1) {
		char t[32];
		printf("  %-8s seq %" PRId64 "..%" PRId64, store_col_text(st, 0),
		       store_col_i64(st, 1) + 1, store_col_i64(st, 2));
		if (!store_col_null(st, 3))
			printf(" (%" PRId64 " envelopes)", store_col_i64(st, 3));
		printf("  since %s\n", ctl_time(store_col_i64(st, 4), t));
	}
out:
	store_stmt_free(st);
	return rc < 0 ? rc : 0;
}

static int recent_events(struct store *s, int64_t key, int n)
{
	struct store_stmt *st = NULL;
	int rc =
	    store_prepare(s,
	                  "SELECT at, type, detail FROM (SELECT id, at, type, detail FROM events"
	                  " WHERE device = ? ORDER BY id DESC LIMIT ?) e ORDER BY id",
	                  &st);
	if (rc || (rc = store_bind_i64(st, 1, key)) || (rc = store_bind_i64(st, 2, n)))
		goto out;
	while ((rc = store_step(st)) == 1) {
		char t[32], v[CTL_VIS_MAX];
		printf("  %s  %-18s %s\n", ctl_time(store_col_i64(st, 0), t), store_col_text(st, 1),
		       ctl_vis(store_col_text(st, 2), v, sizeof(v)));
	}
out:
	store_stmt_free(st);
	return rc < 0 ? rc : 0;
}

static int show(struct ctl *c, const char *id)
{
	struct store *s = ctl_store(c);
	struct store_device d;
	char t1[32], t2[32];
	if (!s)
		return c->code;
	int rc = store_device_get(s, id, &d);
	if (rc == STORE_ENOTFOUND)
		return ctl_err(CTL_FAIL, "no device '%s' in %s", id, store_url(s));
	if (rc)
		return ctl_store_err(c, id, rc);
	printf("device      %s\n", d.device_id);
	char v[CTL_VIS_MAX];
	printf("state       %s%s%s (since %s)\n", d.state, d.state_reason[0] ? ": " : "",
	       ctl_vis(d.state_reason, v, sizeof(v)), ctl_time(d.state_changed_at, t1));
	printf("online      %s (last seen %s)\n", d.online ? "yes" : "no",
	       d.last_seen_at ? ctl_time(d.last_seen_at, t2) : "never");
	printf("enrolled    %s\n", d.enrolled_at ? ctl_time(d.enrolled_at, t1) : "no");
	if (d.has_pubkey) {
		printf("key         ");
		for (int i = 0; i < WIRE_PUBKEY_LEN; i++)
			printf("%02x", d.pubkey[i]);
		printf(" (Ed25519)\n");
	}
	printf("agent       %s (last birth %s)\n",
	       d.agent_version[0] ? ctl_vis(d.agent_version, v, sizeof(v)) : "-",
	       d.last_birth_at ? ctl_time(d.last_birth_at, t1) : "never");
	printf("intervals   sample %" PRId64 "s, batch %" PRId64 "s, poll %" PRId64 "s\n",
	       d.sample_interval_s, d.batch_interval_s, d.poll_interval_s);
	printf("chain       frontier %" PRId64
	       " (every durable seq up to it stored or known dropped)\n",
	       d.frontier);
	printf("stored      %" PRId64 " envelopes, %" PRId64 " readings, %" PRId64 " duplicates\n",
	       d.envelopes, d.readings, d.duplicates);
	if (d.spool_records >= 0)
		printf("spool       %" PRId64 " records, %" PRId64 " bytes, %" PRId64
		       " dropped in total (at last birth)\n",
		       d.spool_records, d.spool_bytes, d.spool_dropped_total);
	printf("rejected    %" PRId64 " in total, %" PRId64 " consecutive\n", d.rejected,
	       d.consecutive_rejects);
	if ((rc = rejections(s, d.key)))
		return ctl_store_err(c, "rejections", rc);
	printf("metrics\n");
	if ((rc = metrics(s, d.key)))
		return ctl_store_err(c, "metrics", rc);
	printf("open gaps\n");
	if ((rc = open_gaps(s, d.key)))
		return ctl_store_err(c, "gaps", rc);
	printf("recent events\n");
	if ((rc = recent_events(s, d.key, 10)))
		return ctl_store_err(c, "events", rc);
	return CTL_OK;
}

/* 1 if a device in state is where action takes a device: nothing to do, and done (scripts may
 * repeat themselves). Not so for the release of an unenrolled device, which a release does not
 * enrol, nor of a revoked one. */
static int already(const char *action, const char *state)
{
	return (!strcmp(action, "revoke") && !strcmp(state, STORE_ST_REVOKED)) ||
	       (!strcmp(action, "quarantine") && !strcmp(state, STORE_ST_QUARANTINED)) ||
	       (!strcmp(action, "release") && !strcmp(state, STORE_ST_ACTIVE));
}

/* A --reason is kept whole or refused: at most STORE_REASON_MAX bytes of UTF-8 on one line,
 * without control characters (C0, DEL, C1), which would be shown escaped ever after. */
static int reason_check(const char *action, const char *reason)
{
	size_t n = strlen(reason);
	if (n > STORE_REASON_MAX)
		return ctl_err(CTL_USAGE,
		               "device %s: --reason is %zu bytes long; at most %d are kept: say it"
		               " shorter",
		               action, n, STORE_REASON_MAX);
	if (!wire_utf8_valid(reason, n))
		return ctl_err(CTL_USAGE, "device %s: --reason is not valid UTF-8", action);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)reason[i], next = (unsigned char)reason[i + 1];
		if (ch < 0x20 || ch == 0x7f || (ch == 0xc2 && next >= 0x80 && next <= 0x9f))
			return ctl_err(CTL_USAGE,
			               "device %s: --reason holds a control character (%s%02x at"
			               " byte %zu): write it as one line of plain text",
			               action, ch == 0xc2 ? "U+00" : "\\x", ch == 0xc2 ? next : ch,
			               i + 1);
		unsigned bidi = ovis_bidi(reason + i, n - i);
		if (bidi) /* shown escaped ever after, as the controls are */
			return ctl_err(CTL_USAGE,
			               "device %s: --reason holds a bidirectional control"
			               " (U+%04X at byte %zu): write it as plain text",
			               action, bidi, i + 1);
	}
	return CTL_OK;
}

int ctl_cmd_device(struct ctl *c, int argc, char **argv)
{
	const char *reason = NULL, *pos[2];
	int npos, rc;
	struct ctl_optdef defs[] = {{"reason", 1, &reason, NULL, NULL, 0},
	                            {NULL, 0, NULL, NULL, NULL, 0}};
	if ((rc = ctl_args(c, "device", argc, argv, defs, pos, 2, &npos)))
		return rc;
	if (npos != 2)
		return ctl_err(CTL_USAGE,
		               "device: want 'device show|quarantine|release|revoke ID'");
	const char *action = pos[0], *id = pos[1];
	if (wire_id_check(id))
		return ctl_err(CTL_USAGE, "device: '%s' is not a device id ([A-Za-z0-9_-]{1,64})",
		               id);
	if (!strcmp(action, "show")) {
		/* said, not ignored: the operator may think it was recorded somewhere */
		if (reason)
			return ctl_err(CTL_USAGE,
			               "device show: --reason is not an option of show (quarantine,"
			               " release and revoke take it)");
		return show(c, id);
	}
	if (strcmp(action, "quarantine") && strcmp(action, "release") && strcmp(action, "revoke"))
		return ctl_err(CTL_USAGE,
		               "device: unknown action '%s' (show, quarantine, release, "
		               "revoke)",
		               action);
	if (reason && (rc = reason_check(action, reason)))
		return rc;
	struct store *s = ctl_store(c);
	char old[16] = "";
	if (!s)
		return c->code;
	rc = store_device_action(s, id, action, CTL_PROG, reason, old);
	if (rc == STORE_ENOTFOUND)
		return ctl_err(CTL_FAIL, "no device '%s' in %s", id, store_url(s));
	if (rc == STORE_ESTATE && already(action, old)) {
		printf("%s: already %s\n", id, old);
		return CTL_OK;
	}
	if (rc == STORE_ESTATE)
		return ctl_err(CTL_FAIL, "%s is %s: cannot %s it%s", id, old, action,
		               !strcmp(old, STORE_ST_REVOKED) ? " (a revoked key stays revoked; a Birth with a new key signed by the CA enrols the id again)" : "");
	if (rc)
		return ctl_store_err(c, id, rc);
	struct store_device d;
	ctl_done(c, "the output saying so", "%s %s (it was %s)", id,
	         !strcmp(action, "quarantine") ? "quarantined"
	         : !strcmp(action, "revoke")   ? "revoked"
	                                       : "released",
	         old);
	if (store_device_get(s, id, &d) == STORE_OK)
		printf("%s: %s -> %s\n", id, old, d.state);
	return CTL_OK;
}
