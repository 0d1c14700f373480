/* test_store.c - the store: URL dispatch, migrations, the statement API, bulk copy, device
 * actions, task queueing and retention, identical on SQLite and PostgreSQL. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "h_pg.h"
#include "h_relay.h"
#include "harness.h"
#include "store.h"
#include "store_ops.h"
#include "store_prune.h"

static struct store *open_url(const char *url, int create)
{
	struct store *s = NULL;
	struct store_opts o = STORE_OPTS_INIT;
	char err[STORE_ERR_MAX] = "";
	o.create = create;
	o.busy_timeout_ms = 100;
	int rc = store_open(url, &o, &s, err);
	cr_assert_eq(rc, STORE_OK, "%s", err);
	return s;
}

static int64_t one(struct store *s, const char *sql)
{
	int64_t v = -1;
	cr_assert_eq(store_query_i64(s, &v, sql, 0), STORE_OK, "%s: %s", sql, store_errmsg(s));
	return v;
}

/* Retention on what exercise() left (5,000 readings of dev-x in 2023, task 1 cancelled) plus a
 * dense series (one reading a second: the slices must shrink) and a sparse one (one a day). */
static void prune(struct store *s)
{
	const int64_t t0 = 1600000000000LL, cut = t0 + 100000 * 1000LL;
	cr_assert_eq(store_exec(s,
	                        "INSERT INTO metrics (id, device, name) VALUES (0, 1, 'm0'),"
	                        " (1, 1, 'm1'), (2, 1, 'm2'), (3, 1, 'm3'), (4, 1, 'm4'),"
	                        " (5, 1, 'm5'), (6, 1, 'm6'), (7, 2, 'dense'), (8, 2, 'sparse')"),
	             STORE_OK, "%s", store_errmsg(s));
	struct store_copy *cp = NULL;
	cr_assert_eq(store_copy_new(s, "readings", "device, metric, ts, seq, idx, value", 6, &cp),
	             0);
	cr_assert_eq(store_begin(s), STORE_OK);
	cr_assert_eq(store_copy_start(cp), STORE_OK, "%s", store_errmsg(s));
	for (int64_t i = 0; i < 120000 + 100; i++) {
		int dense = i < 120000;
		store_copy_i64(cp, 2);
		store_copy_i64(cp, dense ? 7 : 8);
		store_copy_i64(cp, t0 + (dense ? i * 1000 : (i - 120000) * 86400000LL));
		store_copy_i64(cp, i / 600 + 1);
		store_copy_i64(cp, i % 600);
		store_copy_f64(cp, 1.0);
		cr_assert_eq(store_copy_end_row(cp), STORE_OK);
	}
	cr_assert_eq(store_copy_finish(cp), STORE_OK, "%s", store_errmsg(s));
	store_copy_free(cp);
	/* A clock far ahead: readings dated 2200 from a batch stored before the cut (3, cut) and
	 * from one stored after it (2, kept until a later cut passes its arrival). */
	const int64_t y2200 = 7258118400000LL;
	cr_assert_eq(store_copy_new(s, "readings", "device, metric, ts, seq, idx, value", 6, &cp),
	             0);
	cr_assert_eq(store_copy_start(cp), STORE_OK, "%s", store_errmsg(s));
	for (int64_t i = 0; i < 5; i++) {
		store_copy_i64(cp, 2);
		store_copy_i64(cp, 8);
		store_copy_i64(cp, y2200 + i * 1000);
		store_copy_i64(cp, i < 3 ? 9001 : 9002);
		store_copy_i64(cp, i);
		store_copy_f64(cp, 2.0);
		cr_assert_eq(store_copy_end_row(cp), STORE_OK);
	}
	cr_assert_eq(store_copy_finish(cp), STORE_OK, "%s", store_errmsg(s));
	store_copy_free(cp);
	cr_assert_eq(
	    store_copy_new(s, "envelopes",
	                   "device, seq, prev_seq, kind, sent_at, stored_at, n_readings, sig", 8,
	                   &cp),
	    0);
	cr_assert_eq(store_copy_start(cp), STORE_OK, "%s", store_errmsg(s));
	for (int64_t i = 0; i < 2; i++) {
		const int64_t row[] = {2, 9001 + i, 9000 + i, 1, y2200, i ? cut : cut - 1, 3 - i};
		for (size_t c = 0; c < sizeof(row) / sizeof(row[0]); c++)
			store_copy_i64(cp, row[c]);
		store_copy_blob(cp, "sig", 3);
		cr_assert_eq(store_copy_end_row(cp), STORE_OK);
	}
	cr_assert_eq(store_copy_finish(cp), STORE_OK, "%s", store_errmsg(s));
	store_copy_free(cp);
	cr_assert_eq(store_commit(s), STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_exec(s, "INSERT INTO events (at, device, type) VALUES (1, 2, 'old'),"
	                           " (2, 2, 'old'), (3, NULL, 'old')"),
	             STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_exec(s,
	                        "INSERT INTO gaps (device, reason, prev_seq, last_seq, opened_at,"
	                        " resolved_at) VALUES (2, 'missing', 1, 3, 1, 5),"
	                        " (2, 'missing', 7, 9, 1, NULL), (2, 'dropped', 10, 20, 1, NULL),"
	                        " (2, 'lost', 20, 30, 1, NULL), (2, 'dropped', 40, 50, 1, NULL),"
	                        " (2, 'lost', 30, 35, 1000000000000000, NULL)"),
	             STORE_OK, "%s", store_errmsg(s));
	/* the chain has passed 10..35, not the dropped 41..50 (still a link) */
	cr_assert_eq(store_exec(s, "UPDATE devices SET frontier = 35 WHERE id = 2"), STORE_OK);
	cr_assert_eq(store_exec(s, "UPDATE tasks SET finished_at = 5 WHERE id = 1"), STORE_OK);
	int64_t events = one(s, "SELECT COUNT(*) FROM events");

	struct store_prune_counts n;
	cr_expect_eq(store_prune(s, -1, 1, &n), STORE_EINVAL);
	for (int dry = 1; dry >= 0; dry--) {
		cr_assert_eq(store_prune(s, cut, dry, &n), STORE_OK, "%s", store_errmsg(s));
		cr_expect_eq(n.readings, 100000 + 2 + 3, "dry %d: %lld", dry,
		             (long long)n.readings);
		cr_expect_eq(n.events, 3, "dry %d", dry);
		cr_expect_eq(n.gaps, 3, "dry %d", dry);
		cr_expect_eq(n.tasks, 1, "dry %d", dry);
		cr_expect_eq(one(s, "SELECT COUNT(*) FROM readings"),
		             dry ? 5000 + 120100 + 5 : 5000 + 120100 + 5 - 100005, "dry %d", dry);
	}
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM readings WHERE ts >= 7258118400000 AND"
	                    " seq = 9002"),
	             2, "dated ahead, but stored after the cut");
	cr_expect_eq(one(s, "SELECT MIN(ts) FROM readings WHERE metric = 7"), cut);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM readings WHERE device = 1"), 5000);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM events"), events - 3);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM gaps"), 3);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM gaps WHERE (reason = 'missing' AND prev_seq = 7) OR"
	                    " (reason = 'dropped' AND prev_seq = 40) OR (reason = 'lost' AND"
	                    " prev_seq = 30)"),
	             3, "open, still a link, and opened after the cut");
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM tasks"), 1);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM task_args"), 0);
	cr_assert_eq(store_prune(s, cut, 0, &n), STORE_OK);
	cr_expect_eq(n.readings + n.events + n.gaps + n.tasks, 0, "a second run finds nothing");
}

static void exercise(const char *url)
{
	struct store *s = open_url(url, 1);
	int from = -1, to = -1, v = -1;

	/* Migrations: applied once, then a no-op. */
	cr_assert_eq(store_migrate(s, &from, &to), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(from, 0);
	cr_expect_eq(to, STORE_SCHEMA_VERSION);
	cr_assert_eq(store_migrate(s, &from, &to), STORE_OK);
	cr_expect_eq(from, STORE_SCHEMA_VERSION);
	cr_expect_eq(store_schema_version(s, &v), STORE_OK);
	cr_expect_eq(v, STORE_SCHEMA_VERSION);

	/* Statements: every type, NULL, NaN, blobs with zero bytes, changes(). */
	struct store_stmt *st = NULL;
	cr_assert_eq(
	    store_exec(s, "CREATE TABLE t (k BIGINT PRIMARY KEY, f DOUBLE PRECISION, s TEXT,"
	                  " b BYTEA)") == STORE_OK ||
	        store_exec(s, "CREATE TABLE t (k INTEGER PRIMARY KEY, f REAL, s TEXT, b BLOB)") ==
	            STORE_OK,
	    1);
	cr_assert_eq(store_prepare(s,
	                           "INSERT INTO t (k, f, s, b) VALUES (?, ?, ?, ?) ON CONFLICT (k)"
	                           " DO NOTHING",
	                           &st),
	             STORE_OK, "%s", store_errmsg(s));
	const uint8_t blob[] = {0, 1, 0xff, 0, 0x7f};
	cr_assert_eq(store_bind_i64(st, 1, INT64_MAX), 0);
	cr_assert_eq(store_bind_f64(st, 2, -1.5e300), 0);
	cr_assert_eq(store_bind_text(st, 3, "héllo, 'quoted' ?"), 0);
	cr_assert_eq(store_bind_blob(st, 4, blob, sizeof(blob)), 0);
	cr_assert_eq(store_step(st), 0, "%s", store_errmsg(s));
	cr_expect_eq(store_changes(st), 1);
	store_reset(st);
	cr_assert_eq(store_bind_i64(st, 1, INT64_MAX), 0);
	cr_assert_eq(store_bind_f64(st, 2, 0), 0);
	cr_assert_eq(store_bind_null(st, 3), 0);
	cr_assert_eq(store_bind_null(st, 4), 0);
	cr_assert_eq(store_step(st), 0);
	cr_expect_eq(store_changes(st), 0, "a conflicting insert changes nothing");
	store_reset(st);
	cr_assert_eq(store_bind_i64(st, 1, -7), 0);
	cr_assert_eq(store_bind_f64(st, 2, NAN), 0);
	cr_assert_eq(store_bind_null(st, 3), 0);
	cr_assert_eq(store_bind_null(st, 4), 0);
	cr_assert_eq(store_step(st), 0);
	store_stmt_free(st);
	cr_assert_eq(store_prepare(s, "SELECT k, f, s, b FROM t ORDER BY k", &st), STORE_OK);
	cr_assert_eq(store_step(st), 1);
	cr_expect_eq(store_col_i64(st, 0), -7);
	cr_expect(isnan(store_col_f64(st, 1)), "NaN is stored as NULL and reads as NaN");
	cr_expect(store_col_null(st, 1));
	cr_expect_null(store_col_text(st, 2));
	cr_assert_eq(store_step(st), 1);
	cr_expect_eq(store_col_i64(st, 0), INT64_MAX);
	cr_expect_eq(store_col_f64(st, 1), -1.5e300);
	cr_expect_str_eq(store_col_text(st, 2), "héllo, 'quoted' ?");
	size_t len = 0;
	const uint8_t *got = store_col_blob(st, 3, &len);
	cr_expect_eq(len, sizeof(blob));
	cr_expect(got && !memcmp(got, blob, sizeof(blob)));
	cr_expect_eq(store_step(st), 0);
	store_stmt_free(st);
	int64_t x = 0;
	cr_expect_eq(store_query_i64(s, &x, "SELECT k FROM t WHERE k = ?", 1, (int64_t)12345),
	             STORE_ENOTFOUND);
	st = NULL;
	cr_expect_eq(store_prepare(s, "SELECT nonsense FROM nowhere", &st) || store_step(st) < 0, 1,
	             "a broken statement fails");
	if (st)
		store_stmt_free(st);
	/* A comparison reads as 1 or 0 on both: PostgreSQL answers a boolean, 't' or 'f', which
	 * read as text was 0 whatever it said (the writer's "result_seq IS NOT NULL"). */
	cr_assert_eq(store_prepare(s, "SELECT 1 = 1, 1 = 0", &st), STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_step(st), 1, "%s", store_errmsg(s));
	cr_expect_eq(store_col_i64(st, 0), 1, "1 = 1");
	cr_expect_eq(store_col_i64(st, 1), 0, "1 = 0");
	store_stmt_free(st);

	/* Bulk copy inside a transaction, rolled back and then committed. */
	struct store_copy *cp = NULL;
	cr_assert_eq(store_copy_new(s, "readings", "device, metric, ts, seq, idx, value", 6, &cp),
	             0);
	for (int round = 0; round < 2; round++) {
		cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
		cr_assert_eq(store_copy_start(cp), STORE_OK, "%s", store_errmsg(s));
		for (int i = 0; i < 5000; i++) {
			store_copy_i64(cp, 1);
			store_copy_i64(cp, i % 7);
			store_copy_i64(cp, 1700000000000LL + i);
			store_copy_i64(cp, i / 50);
			store_copy_i64(cp, i % 50);
			if (i == 13)
				store_copy_f64(cp, NAN);
			else
				store_copy_f64(cp, i * 0.5);
			cr_assert_eq(store_copy_end_row(cp), STORE_OK);
		}
		cr_assert_eq(store_copy_finish(cp), STORE_OK, "%s", store_errmsg(s));
		if (round == 0)
			cr_assert_eq(store_rollback(s), STORE_OK);
		else
			cr_assert_eq(store_commit(s), STORE_OK, "%s", store_errmsg(s));
	}
	store_copy_free(cp);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM readings"), 5000);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM readings WHERE value IS NULL"), 1);
	cr_expect_eq(one(s, "SELECT CAST(SUM(value) * 2 AS BIGINT) FROM readings"),
	             (int64_t)(4999 * 5000 / 2 - 13));

	/* Device actions, each with its event. */
	cr_assert_eq(
	    store_exec(s, "INSERT INTO devices (device_id, state, created_at, state_changed_at)"
	                  " VALUES ('dev-x', 'active', 1, 1)"),
	    STORE_OK, "%s", store_errmsg(s));
	char old[16];
	struct store_device d;
	cr_expect_eq(store_device_action(s, "dev-x", "release", "test", NULL, old), STORE_ESTATE);
	cr_expect_str_eq(old, "active");
	cr_expect_eq(store_device_action(s, "dev-x", "quarantine", "test", "why not", old),
	             STORE_OK);
	cr_assert_eq(store_device_get(s, "dev-x", &d), STORE_OK);
	cr_expect_str_eq(d.state, "quarantined");
	cr_expect(strstr(d.state_reason, "why not"), "%s", d.state_reason);
	cr_expect_eq(store_device_action(s, "dev-x", "release", "test", NULL, old), STORE_OK);
	cr_assert_eq(store_device_get(s, "dev-x", &d), STORE_OK);
	cr_expect_str_eq(d.state, "unenrolled", "no key: back to unenrolled, not active");
	cr_expect_eq(store_device_action(s, "dev-x", "revoke", "test", NULL, old), STORE_OK);
	cr_expect_eq(store_device_action(s, "dev-x", "release", "test", NULL, old), STORE_ESTATE);
	cr_expect_eq(store_device_action(s, "dev-x", "quarantine", "test", NULL, old),
	             STORE_ESTATE);
	cr_expect_eq(store_device_action(s, "nobody", "revoke", "test", NULL, old),
	             STORE_ENOTFOUND);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM events WHERE type IN ('quarantined', 'released',"
	                    " 'revoked')"),
	             3);

	/* Tasks. */
	int64_t id = 0, now = store_now_ms();
	struct store_kv kv[] = {{"first", "1"}, {"last", "20"}};
	cr_assert_eq(
	    store_exec(s, "INSERT INTO devices (device_id, state, created_at, state_changed_at)"
	                  " VALUES ('dev-y', 'active', 1, 1)"),
	    STORE_OK);
	cr_expect_eq(store_task_add(s, "dev-y", "rm-rf", NULL, 0, now + 1000, "t", &id),
	             STORE_EINVAL);
	cr_expect_eq(store_task_add(s, "dev-y", "ping", NULL, 0, now - 1, "t", &id), STORE_EINVAL);
	cr_expect_eq(store_task_add(s, "nobody", "ping", NULL, 0, now + 1000, "t", &id),
	             STORE_ENOTFOUND);
	cr_expect_eq(store_task_add(s, "dev-x", "ping", NULL, 0, now + 1000, "t", &id),
	             STORE_ESTATE, "no tasks for a revoked device");
	cr_assert_eq(store_task_add(s, "dev-y", "resend", kv, 2, now + 60000, "t", &id), STORE_OK,
	             "%s", store_errmsg(s));
	cr_expect_eq(id, 1);
	cr_assert_eq(store_task_add(s, "dev-y", "ping", NULL, 0, now + 60000, "t", &id), STORE_OK);
	cr_expect_eq(id, 2, "task ids are monotonic");
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM task_args WHERE task = 1"), 2);
	char state[16];
	cr_expect_eq(store_task_cancel(s, 1, "t", state), STORE_OK);
	cr_expect_eq(store_task_cancel(s, 1, "t", state), STORE_ESTATE);
	cr_expect_str_eq(state, "cancelled");
	cr_expect_eq(store_exec(s, "UPDATE tasks SET state = 'delivered' WHERE id = 2"), STORE_OK);
	cr_expect_eq(store_task_cancel(s, 2, "t", state), STORE_ESTATE);
	cr_expect_eq(store_task_cancel(s, 99, "t", state), STORE_ENOTFOUND);

	prune(s);

	/* A store newer than this program is refused, not damaged. */
	cr_assert_eq(
	    store_exec(s, "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)"),
	    STORE_OK);
	cr_expect_eq(store_migrate(s, &from, &to), STORE_ESCHEMA);
	cr_expect_eq(from, 99);
	char *newer = h_strf("store schema 99 is newer than this program's %d", STORE_SCHEMA_VERSION);
	cr_expect_str_eq(store_errmsg(s), newer, "the message says both versions");
	free(newer);
	store_close(s);
}

/* The event types of the literal calls brg_commit__event(..., "type", ...) and
 * store_event_add(..., "type", ...) in text: the [a-z_] string literals of the call before the
 * first other one (the detail format). Adds each to found (count in *n, capacity max). */
static void event_literals(const char *text, const char *call, char **found, size_t *n,
                           size_t max)
{
	for (const char *p = strstr(text, call); p; p = strstr(p + 1, call)) {
		int depth = 0, in_detail = 0;
		for (const char *q = p + strlen(call) - 1; *q; q++) {
			if (*q == '(') {
				depth++;
			} else if (*q == ')') {
				if (--depth == 0)
					break;
			} else if (*q == '"') {
				const char *start = ++q;
				while (*q && *q != '"')
					q += *q == '\\' && q[1] ? 2 : 1;
				if (!*q)
					return;
				size_t len = (size_t)(q - start);
				int plain = len > 0 && strspn(start, "abcdefghijklmnopqrstuvwxyz_") >= len;
				if (!plain)
					in_detail = 1;
				else if (!in_detail && *n < max)
					found[(*n)++] = strndup(start, len);
			}
		}
	}
}

/* outpostctl events --type refuses what is not in store_event_types: that list must hold
 * every type the bridge sources write. */
Test(store, event_types_listed)
{
	char *dir = h_strf("%s/bridge", h_source_dir()), *found[256];
	size_t n = 0;
	DIR *d = opendir(dir);
	cr_assert_not_null(d, "%s", dir);
	for (struct dirent *e; (e = readdir(d));) {
		size_t len = strlen(e->d_name);
		if (len < 3 || strcmp(e->d_name + len - 2, ".c"))
			continue;
		char *path = h_strf("%s/%s", dir, e->d_name), *text = h_read_file(path, NULL);
		cr_assert_not_null(text, "%s", path);
		event_literals(text, "brg_commit__event(", found, &n, 256);
		event_literals(text, "store_event_add(", found, &n, 256);
		free(text);
		free(path);
	}
	closedir(d);
	cr_expect_geq(n, 25, "the scan found only %zu event types", n);
	for (size_t i = 0; i < n; i++) {
		cr_expect(store_name_in(found[i], store_event_types),
		          "event type '%s' is written but not in store_event_types", found[i]);
		free(found[i]);
	}
	cr_expect(store_name_in("task_queued", store_event_types));
	cr_expect(!store_name_in("task_queue", store_event_types));
	cr_expect(!store_name_in(NULL, store_event_types));
	cr_expect(store_name_in("deactivated", store_device_states));
	cr_expect(store_name_in("cancelled", store_task_states));
	free(dir);
}

Test(store, urls)
{
	struct store *s = NULL;
	char err[STORE_ERR_MAX];
	cr_expect_eq(store_open("mysql://x", NULL, &s, err), STORE_EURL);
	cr_expect(strstr(err, "mysql://x"), "%s", err);
	cr_expect_eq(store_open("sqlite:", NULL, &s, err), STORE_EURL);
	struct store_opts o = STORE_OPTS_INIT;
	o.create = 0;
	char *dir = h_tmpdir("store-url"), *url = h_strf("sqlite:%s/missing.db", dir);
	cr_expect_eq(store_open(url, &o, &s, err), STORE_ECONN);
	cr_expect(strstr(err, "missing.db"), "%s", err);
	cr_expect_null(s);
	free(url);
	free(dir);
	/* Passwords never reach messages. */
	cr_expect_neq(store_open("postgresql://u:secret@127.0.0.1:1/db", NULL, &s, err), STORE_OK);
	cr_expect(!strstr(err, "secret"), "%s", err);
	cr_expect_neq(store_open("postgresql://u@127.0.0.1:1/db?sslmode=disable&password=secret2"
	                         "&connect_timeout=1",
	                         NULL, &s, err),
	              STORE_OK);
	cr_expect(!strstr(err, "secret2"), "%s", err);
	cr_expect(strstr(err, "postgresql://u@127.0.0.1:1/db?sslmode=disable&password=***"
	                      "&connect_timeout=1"),
	          "%s", err);
	cr_expect_eq(store_open("mysql://u:p@ss@x:3306/db", NULL, &s, err), STORE_EURL);
	cr_expect(strstr(err, "mysql://u:***@x:3306/db"), "%s", err);
}

/* Every secret libpq takes from a URL is hidden in messages, as libpq reads the URL: the key's
 * passphrase (sslpassword), names percent-encoded, values with '#' or '?' in them. */
Test(store, urls_hide_every_password)
{
	static const struct {
		const char *url, *shown, *secret;
	} cases[] = {
	    {"postgresql://u@127.0.0.1:1/db?sslpassword=keypass&sslmode=disable",
	     "postgresql://u@127.0.0.1:1/db?sslpassword=***&sslmode=disable", "keypass"},
	    {"postgresql://127.0.0.1:1/db?password=pw&sslpassword=kp1",
	     "postgresql://127.0.0.1:1/db?password=***&sslpassword=***", "kp1"},
	    {"postgresql://127.0.0.1:1/db?ssl%70assword=kp2&Password=x",
	     "postgresql://127.0.0.1:1/db?ssl%70assword=***&Password=x", "kp2"},
	    {"postgresql://127.0.0.1:1/db?password=pw#3&sslmode=disable",
	     "postgresql://127.0.0.1:1/db?password=***&sslmode=disable", "pw#3"},
	    {"postgresql://u:se?cr#et@127.0.0.1:1/db?sslmode=disable",
	     "postgresql://u:***@127.0.0.1:1/db?sslmode=disable", "cr#et"},
	    {"mysql://h/db?a=1&sslpassword=kp4&passfile=/p",
	     "mysql://h/db?a=1&sslpassword=***&passfile=/p", "kp4"},
	    /* no path: the query follows the port; an '@' in it is no user info */
	    {"postgresql://u@127.0.0.1:1?password=ab@cd", "postgresql://u@127.0.0.1:1?password=***",
	     "cd"},
	    {"postgresql://u:pw@127.0.0.1:1?sslpassword=a:b@c5",
	     "postgresql://u:***@127.0.0.1:1?sslpassword=***", "c5"},
	    /* '/' in a password, unencoded: the user info still ends at the host's '@' */
	    {"postgresql://u:se/cret@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db", "cret"},
	    {"postgresql://u:a/b?c@d@127.0.0.1:1/db?sslmode=disable",
	     "postgresql://u:***@127.0.0.1:1/db?sslmode=disable", "b?c@d"},
	    {"postgres://u:/x@127.0.0.1:1", "postgres://u:***@127.0.0.1:1", "/x"},
	    {"mysql://u:pa/ss@h/db?sslpassword=kp6", "mysql://u:***@h/db?sslpassword=***", "pa/ss"},
	    /* no password: nothing hidden before the host */
	    {"postgresql://u@127.0.0.1:1/db?application_name=a@b",
	     "postgresql://u@127.0.0.1:1/db?application_name=a@b", "\x01"},
	    /* an '@' in a query value, with a ':' before it (the port's): the parameters are
	     * hidden all the same, and the part that could be a password too */
	    {"postgresql://127.0.0.1:1/db?user=alice@myserver&password=SECRET&sslmode=require",
	     "postgresql://127.0.0.1:***@myserver&password=***&sslmode=require", "SECRET"},
	    {"postgresql://h:5432/db?options=a@b&password=SECRET2", "&password=***", "SECRET2"},
	    {"postgresql://[::1]:1/db?user=me@corp&sslpassword=SECRET3", "&sslpassword=***",
	     "SECRET3"},
	    {"postgresql://127.0.0.1:1/db?password=SECRET4?x@y", "postgresql://127.0.0.1:***:",
	     "SECRET4"},
	    /* '@' and '?' in a password: none of it shown (libpq reads b?c@... as the host) */
	    {"postgresql://u:a@b?c@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db", "b?c"},
	    /* '?', '=' and '/' in a password */
	    {"postgresql://u:a/?b=c@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db", "b=c"},
	    /* '?' in a password before a password parameter */
	    {"postgresql://u:x?y@127.0.0.1:1/db?password=SECRET5", "?password=***", "SECRET5"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct store *s = NULL;
		char err[STORE_ERR_MAX] = "";
		cr_expect_neq(store_open(cases[i].url, NULL, &s, err), STORE_OK, "%s",
		              cases[i].url);
		cr_expect(!strstr(err, cases[i].secret), "%s: %s", cases[i].url, err);
		cr_expect(strstr(err, cases[i].shown), "%s: want %s in: %s", cases[i].url,
		          cases[i].shown, err);
		store_close(s);
	}
	/* libpq reads u:se/cret@h as host u and port "se" and quotes "se": its message is not
	 * shown, the way to write the password is */
	struct store *s = NULL;
	char err[STORE_ERR_MAX] = "";
	cr_expect_neq(store_open("postgresql://u:se/cret@127.0.0.1:1/db", NULL, &s, err), STORE_OK);
	cr_expect(strstr(err, "postgresql://u:***@127.0.0.1:1/db: cannot reach the database (its"
	                      " message is not shown: it may quote a password the URL holds"
	                      " unencoded; write '/', '?', '#' and '@' in a password, and '@' in a"
	                      " parameter, as %2F, %3F, %23, %40)"),
	          "%s", err);
	cr_expect(!strstr(err, "\"se\""), "%s", err);
	/* encoded, it is libpq's message again */
	cr_expect_neq(store_open("postgresql://u:se%2Fcret@127.0.0.1:1/db", NULL, &s, err),
	              STORE_OK);
	cr_expect(strstr(err, "postgresql://u:***@127.0.0.1:1/db: cannot connect: "), "%s", err);
	/* a conninfo string is no URL, and none of it is shown */
	cr_expect_eq(store_open("host=127.0.0.1 port=1 password=SECRET6", NULL, &s, err),
	             STORE_EURL);
	cr_expect(!strstr(err, "SECRET6") && strstr(err, "the store setting"), "%s", err);
}

/* Insert device id (state, pubkey of 32 bytes `k` or none, state_changed_at 123). */
static void add_device(struct store *s, const char *id, const char *state, int k)
{
	struct store_stmt *st = NULL;
	uint8_t key[WIRE_PUBKEY_LEN];
	memset(key, k, sizeof(key));
	cr_assert_eq(store_prepare(s,
	                           "INSERT INTO devices (device_id, state, pubkey, created_at,"
	                           " state_changed_at) VALUES (?, ?, ?, 1, 123)",
	                           &st),
	             STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_bind_text(st, 1, id), STORE_OK);
	cr_assert_eq(store_bind_text(st, 2, state), STORE_OK);
	cr_assert_eq(k ? store_bind_blob(st, 3, key, sizeof(key)) : store_bind_null(st, 3),
	             STORE_OK);
	cr_assert_eq(store_step(st), 0, "%s", store_errmsg(s));
	store_stmt_free(st);
}

/* Version 4 -> 5: devices.batch_interval_s (0 for every device: not reported yet) and
 * revoked_keys, holding the key of every device revoked so far (once: a key certified for
 * two ids that are both revoked does not stop the migration); the rows stay as they were.
 * Then `device revoke` adds the key it revokes. */
static void migration_4_to_5(const char *url)
{
	struct store *s = open_url(url, 1);
	int from = -1, to = -1;
	cr_assert_eq(store__migrate_upto(s, 4, &from, &to), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(from, 0);
	cr_assert_eq(to, 4);
	add_device(s, "dev-active", "active", 1);
	add_device(s, "dev-revoked", "revoked", 2);
	add_device(s, "dev-clone", "revoked", 2); /* the same key certified for two ids */
	add_device(s, "dev-never", "revoked", 0); /* revoked before it enrolled: no key */
	add_device(s, "dev-q", "quarantined", 4);
	cr_assert_eq(store_exec(s, "UPDATE devices SET sample_interval_s = 10, poll_interval_s ="
	                           " 300"),
	             STORE_OK);
	struct store_stmt *st = NULL;
	cr_expect(store_prepare(s, "SELECT batch_interval_s FROM devices", &st) ||
	              store_step(st) < 0,
	          "version 4 has the column already");
	store_stmt_free(st);
	cr_assert_eq(store_migrate(s, &from, &to), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(from, 4);
	cr_expect_eq(to, 5);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM devices WHERE batch_interval_s = 0 AND"
	                    " sample_interval_s = 10 AND poll_interval_s = 300"),
	             5);
	struct store_device d;
	cr_assert_eq(store_device_get(s, "dev-active", &d), STORE_OK);
	cr_expect_eq(d.batch_interval_s, 0);
	cr_expect_eq(d.sample_interval_s, 10);
	cr_expect_str_eq(d.state, "active");
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM revoked_keys"), 1);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM revoked_keys k JOIN devices d ON d.id = k.device"
	                    " WHERE d.device_id = 'dev-revoked' AND k.key = d.pubkey AND"
	                    " k.revoked_at = 123"),
	             1);
	/* a revocation now remembers the key; one of a device with no key remembers nothing */
	cr_assert_eq(store_device_action(s, "dev-active", "revoke", "test", NULL, NULL), STORE_OK);
	cr_assert_eq(store_device_action(s, "dev-q", "revoke", "test", NULL, NULL), STORE_OK);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM revoked_keys k JOIN devices d ON d.id = k.device"
	                    " WHERE d.device_id IN ('dev-active', 'dev-q') AND k.key = d.pubkey AND"
	                    " k.revoked_at > 123"),
	             2);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM revoked_keys"), 3);
	/* one row per key */
	cr_expect_neq(store_exec(s, "INSERT INTO revoked_keys (key, device, revoked_at) SELECT"
	                            " pubkey, id, 1 FROM devices WHERE device_id = 'dev-q'"),
	              STORE_OK);
	store_close(s);
}

Test(store, migration_4_to_5_sqlite)
{
	char *dir = h_tmpdir("store-v5"), *url = h_strf("sqlite:%s/s.db", dir);
	migration_4_to_5(url);
	free(url);
	free(dir);
}

Test(store, migration_4_to_5_postgresql, .timeout = 120)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	migration_4_to_5(pg.url);
	h_pg_free(&pg);
}

Test(store, sqlite)
{
	char *dir = h_tmpdir("store-sqlite"), *url = h_strf("sqlite:%s/s.db", dir);
	exercise(url);
	free(url);
	free(dir);
}

Test(store, sqlite_lock_is_busy_not_fatal)
{
	char *dir = h_tmpdir("store-busy"), *url = h_strf("sqlite:%s/s.db", dir);
	struct store *a = open_url(url, 1), *b = open_url(url, 1);
	cr_assert_eq(store_migrate(a, NULL, NULL), STORE_OK);
	cr_assert_eq(store_begin(a), STORE_OK);
	int rc = store_begin(b);
	cr_expect_eq(rc, STORE_EBUSY);
	cr_expect(store_err_transient(rc));
	cr_expect_eq(store_commit(a), STORE_OK);
	cr_expect_eq(store_begin(b), STORE_OK);
	cr_expect_eq(store_rollback(b), STORE_OK);
	store_close(a);
	store_close(b);
	free(url);
	free(dir);
}

struct writer {
	struct store *s;
	volatile int stop;
	long long longest_busy_ms;
};

/* Another writer, as the bridge: a short transaction every 5 ms; records the longest time
 * the store stayed locked against it. */
static void *write_often(void *arg)
{
	struct writer *w = arg;
	long long busy_since = 0;
	while (!w->stop) {
		int rc = store_begin(w->s);
		long long now = h_now_ms();
		if (rc == STORE_OK) {
			store_commit(w->s);
			if (busy_since && now - busy_since > w->longest_busy_ms)
				w->longest_busy_ms = now - busy_since;
			busy_since = 0;
		} else if (!busy_since) {
			busy_since = now;
		}
		h_sleep_ms(5);
	}
	if (busy_since && h_now_ms() - busy_since > w->longest_busy_ms)
		w->longest_busy_ms = h_now_ms() - busy_since;
	return NULL;
}

/* Prune keeps each transaction to its bound even when most series have nothing to cut: a
 * delete in an early series must not hold the write lock while it looks at every later one
 * (the bridge's commits wait at most 2 s). */
Test(store, prune_does_not_hold_the_lock_across_series_with_nothing_to_cut, .timeout = 120)
{
	char *dir = h_tmpdir("store-prune-lock"), *url = h_strf("sqlite:%s/s.db", dir);
	struct store *s = open_url(url, 1);
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK);
	cr_assert_eq(store_exec(s, "INSERT INTO devices (id, device_id, created_at,"
	                           " state_changed_at) VALUES (1, 'd', 1, 1)"),
	             STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_exec(s, "INSERT INTO metrics (id, device, name) VALUES (1, 1, 'm1')"),
	             STORE_OK);
	cr_assert_eq(store_exec(s, "INSERT INTO readings (device, metric, ts, seq, idx, value)"
	                           " VALUES (1, 1, 1000, 1, 0, 1.0), (1, 1, 1001, 1, 1, 1.0)"),
	             STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_exec(s, "WITH RECURSIVE c(x) AS (SELECT 2 UNION ALL SELECT x + 1 FROM c"
	                           " WHERE x < 3000001) INSERT INTO metrics (id, device, name)"
	                           " SELECT x, 1, 'm' || x FROM c"),
	             STORE_OK, "%s", store_errmsg(s));
	struct store_opts o = STORE_OPTS_INIT;
	char err[STORE_ERR_MAX] = "";
	o.busy_timeout_ms = 0;
	struct writer w = {NULL, 0, 0};
	cr_assert_eq(store_open(url, &o, &w.s, err), STORE_OK, "%s", err);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, write_often, &w), 0);
	h_sleep_ms(50);
	long long t0 = h_now_ms();
	struct store_prune_counts n;
	cr_assert_eq(store_prune(s, 1000000000000LL, 0, &n), STORE_OK, "%s", store_errmsg(s));
	long long took = h_now_ms() - t0;
	w.stop = 1;
	pthread_join(t, NULL);
	cr_expect_eq(n.readings, 2);
	cr_expect_lt(w.longest_busy_ms, 1000,
	             "locked out for %lld ms of a %lld ms prune", w.longest_busy_ms, took);
	store_close(w.s);
	store_close(s);
	free(url);
	free(dir);
}

/* Retention's time windows follow the density of each series (store_prune.c): a window that
 * deleted more than 50,000 readings is halved, one that deleted fewer than 5,000 doubled. Two
 * days of one reading a second: the first window (a day, 86,400) is the only one above 50,000;
 * the rest go 12 hours at a time. 400 daily readings: windows of 1, 2, 4, ... 256 days, 9
 * statements instead of 400. Each DELETE is counted, with the rows it took, by a statement
 * trigger (which SQLite lacks; the windows are the same code on both). The count does not
 * depend on time: only the transactions around the statements do (SLICE_MS). */
Test(store, prune_windows_follow_the_density_of_a_series, .timeout = 120)
{
	const int64_t t0 = 1600000000000LL, day = 86400000LL;
	struct h_pg pg = {0};
	h_pg_start(&pg);
	struct store *s = open_url(pg.url, 0);
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK, "%s", store_errmsg(s));
	char *fill = h_strf("INSERT INTO devices (id, device_id, created_at, state_changed_at)"
	                    " VALUES (1, 'd', 1, 1);"
	                    " INSERT INTO metrics (id, device, name) VALUES (1, 1, 'dense'),"
	                    " (2, 1, 'sparse');"
	                    " INSERT INTO readings (device, metric, ts, seq, idx, value)"
	                    " SELECT 1, 1, %lld + i * 1000, i / 600 + 1, i %% 600, 1"
	                    " FROM generate_series(CAST(0 AS BIGINT), 2 * 86400 - 1) i;"
	                    " INSERT INTO readings (device, metric, ts, seq, idx, value)"
	                    " SELECT 1, 2, %lld + i * %lld, 1000 + i, 0, 1"
	                    " FROM generate_series(CAST(0 AS BIGINT), 399) i",
	                    (long long)t0, (long long)t0, (long long)day);
	cr_assert_eq(store_exec(s, fill), STORE_OK, "%s", store_errmsg(s));
	free(fill);
	cr_assert_eq(store_exec(s,
	                        "CREATE TABLE deletes (id BIGSERIAL PRIMARY KEY, metric BIGINT,"
	                        " n BIGINT);"
	                        " CREATE FUNCTION count_deletes() RETURNS trigger LANGUAGE plpgsql"
	                        " AS $$ BEGIN INSERT INTO deletes (metric, n) SELECT MIN(metric),"
	                        " COUNT(*) FROM gone; RETURN NULL; END $$;"
	                        " CREATE TRIGGER count_deletes AFTER DELETE ON readings"
	                        " REFERENCING OLD TABLE AS gone FOR EACH STATEMENT"
	                        " EXECUTE FUNCTION count_deletes()"),
	             STORE_OK, "%s", store_errmsg(s));
	struct store_prune_counts n;
	cr_assert_eq(store_prune(s, t0 + 400 * day, 0, &n), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(n.readings, 2 * 86400 + 400);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM readings"), 0);
	cr_expect_eq(one(s, "SELECT SUM(n) FROM deletes"), 2 * 86400 + 400);
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM deletes WHERE metric = 1"), 3,
	             "the dense series's deletes");
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM deletes WHERE metric = 1 AND n > 50000"), 1,
	             "the windows after a day of 86,400 readings were not halved");
	cr_expect_eq(one(s, "SELECT MIN(id) FROM deletes WHERE metric = 1 AND n > 50000"),
	             one(s, "SELECT MIN(id) FROM deletes WHERE metric = 1"),
	             "a window above 50,000 readings came after the first");
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM deletes WHERE metric = 2"), 9,
	             "the windows of a series of one reading a day did not double");
	store_close(s);
	h_pg_free(&pg);
}

/* What a store opened by user 65534 (nobody) does. */
struct as_nobody {
	int open_rc, version_rc, version, write_rc;
	char err[STORE_ERR_MAX], write_err[STORE_ERR_MAX];
};

/* Open url as nobody (writable: the bridge's open, else outpostctl's) in a child process; if
 * it opens, read the schema version and try a write. */
static struct as_nobody open_as_nobody(const char *url, int writable)
{
	struct as_nobody r;
	int p[2];
	memset(&r, 0, sizeof(r));
	cr_assert_eq(pipe(p), 0);
	pid_t child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		close(p[0]);
		struct store *s = NULL;
		struct store_opts o = STORE_OPTS_INIT;
		o.writable = writable;
		o.busy_timeout_ms = 100;
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(3);
		r.open_rc = store_open(url, &o, &s, r.err);
		if (!r.open_rc) {
			r.version_rc = store_schema_version(s, &r.version);
			r.write_rc = store_exec(s, "INSERT INTO events (at, type) VALUES (1, 'x')");
			snprintf(r.write_err, sizeof(r.write_err), "%s", store_errmsg(s));
		}
		store_close(s);
		_exit(write(p[1], &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 4);
	}
	close(p[1]);
	ssize_t n = read(p[0], &r, sizeof(r));
	close(p[0]);
	int st = 0;
	cr_assert_eq(waitpid(child, &st, 0), child);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child as nobody: status %d", st);
	cr_assert_eq(n, (ssize_t)sizeof(r));
	return r;
}

/* A store file the bridge's user cannot write (created by root, mode 0444) opened read-only
 * without a word, BEGIN IMMEDIATE passed, and the first INSERT failed as read-only, which
 * the writer retries for ever; and SQLite made the -wal and -shm files beside it with the
 * file's mode, so a chmod of the file alone did not help. The bridge's open now refuses it,
 * naming what to fix; outpostctl's still reads it, and a write says what to check. */
Test(store, sqlite_a_store_this_user_cannot_write_is_refused_at_the_open)
{
	if (geteuid() != 0)
		cr_skip_test("needs root, to run as another user");
	char dir[] = "/tmp/outpost-test-ro-XXXXXX"; /* nobody may not enter the build directory */
	cr_assert_not_null(mkdtemp(dir));
	char *db = h_strf("%s/s.db", dir), *url = h_strf("sqlite:%s", db);
	char *wal = h_strf("%s-wal", db), *shm = h_strf("%s-shm", db);
	struct store *s = open_url(url, 1);
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK);
	store_close(s);
	cr_assert_eq(chmod(db, 0444), 0);
	cr_assert_eq(chown(dir, 65534, 65534), 0); /* nobody may make files there */

	struct as_nobody r = open_as_nobody(url, 1);
	cr_expect_eq(r.open_rc, STORE_EREADONLY, "%s", r.err);
	cr_expect(strstr(r.err, "the store file is read-only to this user (uid 65534): check the"
	                        " owner and mode"),
	          "%s", r.err);
	cr_expect(strstr(r.err, db), "the message names the file: %s", r.err);
	cr_expect(access(wal, F_OK) && access(shm, F_OK), "the refused open made WAL files");

	/* outpostctl reads it; a write is refused, saying what to check */
	r = open_as_nobody(url, 0);
	cr_expect_eq(r.open_rc, STORE_OK, "%s", r.err);
	cr_expect_eq(r.version_rc, STORE_OK);
	cr_expect_eq(r.version, STORE_SCHEMA_VERSION);
	cr_expect_eq(r.write_rc, STORE_EREADONLY, "%s", r.write_err);
	cr_expect(strstr(r.write_err, "can this user write the store file"), "%s", r.write_err);

	/* the file given to nobody: what that read left beside it (SQLite made it with the
	 * file's mode, 0444) is named next */
	cr_assert_eq(chown(db, 65534, 65534), 0);
	cr_assert_eq(chmod(db, 0644), 0);
	int left = !access(wal, F_OK) || !access(shm, F_OK);
	r = open_as_nobody(url, 1);
	if (left) {
		cr_expect_eq(r.open_rc, STORE_EREADONLY, "%s", r.err);
		cr_expect(strstr(r.err, "-wal file is read-only to this user") ||
		              strstr(r.err, "-shm file is read-only to this user"),
		          "%s", r.err);
		cr_assert_eq(chmod(wal, 0644) || chmod(shm, 0644), 0);
		r = open_as_nobody(url, 1);
	}
	cr_expect_eq(r.open_rc, STORE_OK, "%s", r.err);
	cr_expect_eq(r.write_rc, STORE_OK, "%s", r.write_err);

	/* a directory it cannot write: the WAL files cannot be made there */
	cr_assert_eq(chown(dir, 0, 0), 0);
	cr_assert_eq(chmod(dir, 0755), 0);
	unlink(wal);
	unlink(shm);
	r = open_as_nobody(url, 1);
	cr_expect_eq(r.open_rc, STORE_EREADONLY, "%s", r.err);
	cr_expect(strstr(r.err, "its directory is read-only to this user"), "%s", r.err);

	char *rm = h_strf("rm -rf %s", dir);
	h_sh(rm, NULL, 30);
	free(rm);
	free(wal);
	free(shm);
	free(url);
	free(db);
}

/* A full database: SQLite rolls the transaction back by itself, the caller's ROLLBACK then
 * fails, and the error to report is still the one that made it roll back. */
Test(store, sqlite_full_keeps_the_error_that_matters)
{
	char *dir = h_tmpdir("store-full"), *url = h_strf("sqlite:%s/s.db", dir);
	struct store *s = open_url(url, 1);
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK);
	cr_assert_eq(store_exec(s, "CREATE TABLE filler (x BLOB)"), STORE_OK);
	int64_t pages = one(s, "PRAGMA page_count");
	char *limit = h_strf("PRAGMA max_page_count = %lld", (long long)pages + 2);
	cr_assert_eq(store_exec(s, limit), STORE_OK);
	cr_assert_eq(store_begin(s), STORE_OK);
	int rc = store_exec(s, "INSERT INTO filler VALUES (zeroblob(1000000))");
	cr_assert_neq(rc, STORE_OK, "the database did not fill");
	store_rollback(s);
	cr_expect(strstr(store_errmsg(s), "full"), "reported: %s", store_errmsg(s));
	store_close(s);
	free(limit);
	free(url);
	free(dir);
}

Test(store, postgresql, .timeout = 120)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	exercise(pg.url);
	/* A lost server is a transient error, and the next transaction reconnects. */
	struct store *s = open_url(pg.url, 0);
	h_pg_stop(&pg);
	int rc = store_begin(s);
	cr_expect_eq(rc, STORE_ECONN, "%s", store_errmsg(s));
	cr_expect(store_err_transient(rc));
	h_pg_start(&pg);
	cr_expect_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
	int64_t n = 0;
	cr_expect_eq(store_query_i64(s, &n, "SELECT COUNT(*) FROM devices", 0), STORE_OK);
	cr_expect_eq(n, 2);
	cr_expect_eq(store_commit(s), STORE_OK);
	store_close(s);
	h_pg_free(&pg);
}

/* 1 if the store's session has setting name = value. */
static int has_setting(struct store *s, const char *name, const char *value)
{
	char *q = h_strf("SELECT COUNT(*) FROM pg_settings WHERE name = '%s' AND setting = '%s'",
	                 name, value);
	int64_t n = one(s, q);
	free(q);
	return n == 1;
}

/* The store's sessions have the settings it relies on whatever the role's defaults say, also
 * after a reconnect: a COMMIT that waits for the WAL flush (the bridge acks after it; off is
 * raised to on, local and the stronger settings are kept), bytea in hex (escape made stored
 * blobs unreadable), UTF-8 text, read committed (a migration step reads what committed while it
 * waited for its lock). */
Test(store, postgresql_sessions_do_not_take_the_roles_settings, .timeout = 120)
{
	static const struct {
		const char *role, *session;
	} sync[] = {{"off", "on"},
	            {"local", "local"},
	            {"remote_write", "remote_write"},
	            {"remote_apply", "remote_apply"}};
	static const uint8_t blob[] = {0, 1, 0x5c, 0x27, 0xff, 'x'};
	struct h_pg pg = {0};
	h_pg_start(&pg);
	cr_assert_eq(
	    h_pg_sql(&pg,
	             "ALTER ROLE postgres SET bytea_output = escape;"
	             " ALTER ROLE postgres SET client_encoding = LATIN1;"
	             " ALTER ROLE postgres SET default_transaction_isolation = serializable;"
	             " CREATE TABLE b (v BYTEA)",
	             NULL),
	    0);
	for (size_t i = 0; i < sizeof(sync) / sizeof(sync[0]); i++) {
		char *sql = h_strf("ALTER ROLE postgres SET synchronous_commit = %s", sync[i].role);
		cr_assert_eq(h_pg_sql(&pg, sql, NULL), 0);
		free(sql);
		struct store *s = open_url(pg.url, 0);
		cr_expect(has_setting(s, "synchronous_commit", sync[i].session), "role: %s",
		          sync[i].role);
		cr_expect(has_setting(s, "bytea_output", "hex"));
		cr_expect(has_setting(s, "client_encoding", "UTF8"));
		cr_expect(has_setting(s, "transaction_isolation", "read committed"));
		store_close(s);
	}
	/* the role's settings do apply to other sessions */
	char *shown = NULL;
	cr_assert_eq(h_pg_sql(&pg, "SHOW bytea_output", &shown), 0);
	cr_expect(strstr(shown, "escape"), "%s", shown);
	free(shown);

	cr_assert_eq(h_pg_sql(&pg, "ALTER ROLE postgres SET synchronous_commit = off", NULL), 0);
	struct store *s = open_url(pg.url, 0);
	/* a reconnect sets them again */
	h_pg_stop(&pg);
	cr_expect_eq(store_begin(s), STORE_ECONN, "%s", store_errmsg(s));
	h_pg_start(&pg);
	cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
	struct store_stmt *st = NULL;
	cr_assert_eq(store_prepare(s, "INSERT INTO b (v) VALUES (?)", &st), STORE_OK);
	cr_assert_eq(store_bind_blob(st, 1, blob, sizeof(blob)), STORE_OK);
	cr_assert_eq(store_step(st), 0, "%s", store_errmsg(s));
	store_stmt_free(st);
	cr_assert_eq(store_commit(s), STORE_OK, "%s", store_errmsg(s));
	cr_expect(has_setting(s, "synchronous_commit", "on"));
	cr_expect(has_setting(s, "bytea_output", "hex"));
	cr_expect(has_setting(s, "client_encoding", "UTF8"));
	cr_expect(has_setting(s, "transaction_isolation", "read committed"));
	cr_assert_eq(store_prepare(s, "SELECT v FROM b", &st), STORE_OK);
	cr_assert_eq(store_step(st), 1, "%s", store_errmsg(s));
	size_t len = 0;
	const uint8_t *got = store_col_blob(st, 0, &len);
	cr_expect(got && len == sizeof(blob) && !memcmp(got, blob, len), "the blob read back");
	store_stmt_free(st);
	store_close(s);
	h_pg_free(&pg);
}

/* A session's transactions are ended by the server once idle in them for a minute: a
 * connection that vanished silently mid-transaction (NAT state lost, no FIN) otherwise left
 * its server process holding that transaction's row locks until the server's TCP keepalive
 * gave up (hours), and the bridge's retry on a new connection waited behind them. Off (the
 * default) or longer for the role is brought down to a minute, shorter is kept; also after a
 * reconnect. */
Test(store, postgresql_sessions_end_transactions_left_idle, .timeout = 120)
{
	static const struct {
		const char *role, *session;
	} idle[] = {{"0", "60000"}, {"600000", "60000"}, {"10000", "10000"}};
	struct h_pg pg = {0};
	h_pg_start(&pg);
	for (size_t i = 0; i < sizeof(idle) / sizeof(idle[0]); i++) {
		char *sql = h_strf("ALTER ROLE postgres SET idle_in_transaction_session_timeout = %s",
		                   idle[i].role);
		cr_assert_eq(h_pg_sql(&pg, sql, NULL), 0);
		free(sql);
		struct store *s = open_url(pg.url, 0);
		cr_expect(has_setting(s, "idle_in_transaction_session_timeout", idle[i].session),
		          "role: %s", idle[i].role);
		if (i == 0) {
			h_pg_stop(&pg);
			cr_expect_eq(store_begin(s), STORE_ECONN, "%s", store_errmsg(s));
			h_pg_start(&pg);
			cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
			cr_expect(has_setting(s, "idle_in_transaction_session_timeout", "60000"),
			          "after a reconnect");
			cr_expect_eq(store_commit(s), STORE_OK, "%s", store_errmsg(s));
		}
		store_close(s);
	}
	h_pg_free(&pg);
}

/* A server that refuses writes says why it may: a standby (a failover pointed the URL at one),
 * or default_transaction_read_only set for the role or database. */
Test(store, postgresql_a_read_only_server_says_what_to_check, .timeout = 120)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	struct store *s = open_url(pg.url, 0);
	cr_assert_eq(store_exec(s, "CREATE TABLE t (v BIGINT)"), STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_exec(s, "SET default_transaction_read_only = on"), STORE_OK);
	cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(store_exec(s, "INSERT INTO t VALUES (1)"), STORE_EREADONLY, "%s",
	             store_errmsg(s));
	cr_expect(strstr(store_errmsg(s), "read-only transaction (a standby server, or"
	                                  " default_transaction_read_only set?)"),
	          "%s", store_errmsg(s));
	store_rollback(s);
	store_close(s);
	h_pg_free(&pg);
}

/* One bridge starting: opens the store and migrates it. */
struct starter {
	const char *url;
	int rc;
	char err[STORE_ERR_MAX];
};

static void *start_one(void *arg)
{
	struct starter *b = arg;
	struct store *s = NULL;
	struct store_opts o = STORE_OPTS_INIT;
	if ((b->rc = store_open(b->url, &o, &s, b->err)))
		return NULL;
	if ((b->rc = store_migrate(s, NULL, NULL)))
		snprintf(b->err, sizeof(b->err), "%s", store_errmsg(s));
	store_close(s);
	return NULL;
}

/* Bridges started together on a new PostgreSQL store whose database defaults to repeatable
 * read or serializable: each migration step reads the version after it got the migration lock,
 * and must see what the bridge before it committed meanwhile. A snapshot taken when the
 * transaction's first statement (the lock's) began did not: version 1 ran again ("relation
 * devices already exists") and the bridge exited. The four wait on the lock held here until
 * all of them hold a snapshot, so the race is lost every time. */
Test(store, postgresql_bridges_starting_together_migrate_once, .timeout = 120)
{
	static const char *const level[] = {"repeatable read", "serializable"};
	struct h_pg pg = {0};
	h_pg_start(&pg);
	struct store *admin = open_url(pg.url, 0);
	for (size_t i = 0; i < sizeof(level) / sizeof(level[0]); i++) {
		char *sql = h_strf("CREATE DATABASE fresh%zu", i);
		cr_assert_eq(store_exec(admin, sql), STORE_OK, "%s", store_errmsg(admin));
		free(sql);
		sql = h_strf("ALTER DATABASE fresh%zu SET default_transaction_isolation = '%s'", i,
		             level[i]);
		cr_assert_eq(store_exec(admin, sql), STORE_OK, "%s", store_errmsg(admin));
		free(sql);
		char *url = h_strf("postgresql://postgres@127.0.0.1:%d/fresh%zu", pg.port, i);
		struct store *lock = open_url(url, 0);
		cr_assert_eq(store_begin(lock), STORE_OK, "%s", store_errmsg(lock));
		cr_assert_eq(store_exec(lock, "SELECT pg_advisory_xact_lock(7303014785249752436)"),
		             STORE_OK, "%s", store_errmsg(lock));
		struct starter b[4];
		pthread_t t[4];
		for (int k = 0; k < 4; k++) {
			b[k] = (struct starter){.url = url};
			cr_assert_eq(pthread_create(&t[k], NULL, start_one, &b[k]), 0);
		}
		int64_t waiting = 0;
		for (int tries = 0; tries < 600 && waiting < 4; tries++) {
			usleep(50 * 1000);
			waiting =
			    one(lock, "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'"
			              " AND NOT granted");
		}
		cr_expect_eq(waiting, 4, "the bridges did not all wait for the migration lock");
		cr_assert_eq(store_rollback(lock), STORE_OK, "%s", store_errmsg(lock));
		for (int k = 0; k < 4; k++) {
			pthread_join(t[k], NULL);
			cr_expect_eq(b[k].rc, STORE_OK, "%s, bridge %d: %s", level[i], k, b[k].err);
		}
		cr_expect_eq(one(lock, "SELECT COUNT(*) FROM schema_migrations"),
		             STORE_SCHEMA_VERSION, "%s", level[i]);
		store_close(lock);
		free(url);
	}
	store_close(admin);
	h_pg_free(&pg);
}

/* A statement freed in a failed transaction (a health sweep or certificate re-check that
 * failed half-way) is deallocated after the ROLLBACK: PostgreSQL refuses DEALLOCATE before
 * it, and the writer's session kept one more prepared statement per failure. */
Test(store, postgresql_statements_freed_in_a_failed_transaction_are_deallocated, .timeout = 120)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	struct store *s = open_url(pg.url, 0);
	const char *count = "SELECT COUNT(*) FROM pg_prepared_statements";
	const int64_t before = one(s, count);
	for (int i = 0; i < 3; i++) {
		int64_t v = 0;
		cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
		/* prepared, then refused when it runs: the transaction has failed */
		cr_expect_eq(store_query_i64(s, &v, "SELECT 1 / ?", 1, (int64_t)0), STORE_EQUERY,
		             "%s", store_errmsg(s));
		cr_expect_eq(store_rollback(s), STORE_OK, "%s", store_errmsg(s));
	}
	cr_expect_eq(one(s, count), before);
	store_close(s);
	h_pg_free(&pg);
}

/* PQputCopyEnd failing with the connection up, as libpq does out of memory, while set
 * (linked with --wrap=PQputCopyEnd). */
static volatile int copy_end_fails;
struct pg_conn;
int __real_PQputCopyEnd(struct pg_conn *conn, const char *errormsg);
int __wrap_PQputCopyEnd(struct pg_conn *conn, const char *errormsg);
int __wrap_PQputCopyEnd(struct pg_conn *conn, const char *errormsg)
{
	return copy_end_fails ? -1 : __real_PQputCopyEnd(conn, errormsg);
}

struct finisher {
	struct store_copy *cp;
	int rc;
	volatile int done;
};

static void *finish_copy(void *arg)
{
	struct finisher *f = arg;
	f->rc = store_copy_finish(f->cp);
	f->done = 1;
	return NULL;
}

/* A COPY whose end could not be sent, the connection up: libpq stays in the COPY and answers
 * PGRES_COPY_IN to every PQgetResult, which the store's loop over the results took for ever
 * (the writer spinning inside a transaction). Now the connection is given up (a transient
 * error) and the next transaction runs on a new one. */
Test(store, postgresql_a_copy_end_that_cannot_be_sent_gives_the_connection_up, .timeout = 120)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	struct store *s = open_url(pg.url, 0);
	struct store_copy *cp = NULL;
	cr_assert_eq(store_exec(s, "CREATE TABLE t (a BIGINT, b BIGINT)"), STORE_OK);
	cr_assert_eq(store_copy_new(s, "t", "a, b", 2, &cp), STORE_OK);
	for (int round = 0; round < 2; round++) {
		cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
		cr_assert_eq(store_copy_start(cp), STORE_OK, "%s", store_errmsg(s));
		store_copy_i64(cp, round);
		store_copy_i64(cp, 2);
		cr_assert_eq(store_copy_end_row(cp), STORE_OK);
		copy_end_fails = round == 0;
		struct finisher f = {cp, 0, 0};
		pthread_t t;
		cr_assert_eq(pthread_create(&t, NULL, finish_copy, &f), 0);
		for (int i = 0; i < 500 && !f.done; i++)
			h_sleep_ms(10);
		copy_end_fails = 0;
		cr_assert(f.done, "store_copy_finish still runs after 5 s"); /* left spinning */
		pthread_join(t, NULL);
		if (round == 0) {
			cr_expect_eq(f.rc, STORE_ECONN, "%s", store_errmsg(s));
			cr_expect_eq(store_rollback(s), STORE_OK, "%s", store_errmsg(s));
		} else {
			cr_expect_eq(f.rc, STORE_OK, "%s", store_errmsg(s));
			cr_expect_eq(store_commit(s), STORE_OK, "%s", store_errmsg(s));
		}
	}
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM t"), 1);
	cr_expect_eq(one(s, "SELECT a FROM t"), 1);
	store_copy_free(cp);
	store_close(s);
	h_pg_free(&pg);
}

/* Ask until the database knows (bounded): 1 committed, 0 not, or the last error. */
static int resolve(struct store *s)
{
	int r = STORE_EBUSY;
	for (int i = 0; i < 100 && r < 0 && store_err_transient(r); i++) {
		if ((r = store_commit_resolve(s)) < 0 && store_err_transient(r))
			h_sleep_ms(100);
	}
	return r;
}

/* 1 while process pid runs (a zombie no longer does). */
static int running(int pid)
{
	char *path = h_strf("/proc/%d/stat", pid), *stat = h_read_file(path, NULL);
	char *state = stat ? strrchr(stat, ')') : NULL; /* "pid (comm) S ..." */
	int up = state && state[1] == ' ' && state[2] != 'Z';
	free(stat);
	free(path);
	return up;
}

/* The harness: a test killed outright (its timeout: SIGKILL, no atexit handler runs) leaves no
 * PostgreSQL server behind (h_pg.c's watcher stops it). */
Test(store, a_killed_test_leaves_no_postgresql_running, .timeout = 120)
{
	int p[2]; /* not inherited by the server, which would hold it open */
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid_t child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		close(p[0]);
		struct h_pg pg = {0};
		h_pg_start(&pg);
		char *pidfile = h_strf("%s/postmaster.pid", pg.data);
		char *text = h_read_file(pidfile, NULL);
		dprintf(p[1], "%d %s\n", text ? atoi(text) : 0, pg.dir);
		raise(SIGKILL);
		_exit(1);
	}
	close(p[1]);
	char line[512] = "", dir[400] = "";
	size_t got = 0;
	ssize_t n;
	while (got < sizeof(line) - 1 && (n = read(p[0], line + got, sizeof(line) - 1 - got)) > 0)
		got += (size_t)n;
	close(p[0]);
	int st = 0, pid = 0;
	cr_assert_eq(waitpid(child, &st, 0), child);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the child did not start a cluster");
	cr_assert_eq(sscanf(line, "%d %399s", &pid, dir), 2, "child said: %s", line);
	cr_assert(pid > 0, "no postmaster.pid: %s", line); /* pg_ctl -w: it was up */
	for (int i = 0; i < 300 && running(pid); i++)
		usleep(100 * 1000);
	int left = running(pid);
	/* do not leak it either way: stopped if it still runs, then removed */
	struct h_pg pg = {.dir = strdup(dir), .data = h_strf("%s/data", dir), .running = left};
	h_pg_free(&pg);
	cr_expect(!left, "postmaster %d still runs 30 s after its test was killed", pid);
}

/* A connection that breaks after COMMIT was sent leaves the outcome unknown; the store says
 * so (not "connection lost", which means "not committed, retry") and learns the truth from
 * the server afterwards. */
Test(store, postgresql_commit_left_unanswered, .timeout = 120)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	struct h_relay *relay = h_relay_start(pg.port);
	char *url = h_strf("postgresql://postgres@127.0.0.1:%d/postgres", h_relay_port(relay));
	struct store *s = open_url(url, 0);
	cr_assert_eq(store_exec(s, "CREATE TABLE t (v BIGINT)"), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(store_commit_resolve(s), STORE_EINVAL, "nothing pending yet");

	/* The server commits; its answer is lost. */
	h_relay_cut_on(relay, "COMMIT", false, 300);
	cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_exec(s, "INSERT INTO t VALUES (1)"), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(store_commit(s), STORE_EUNKNOWN, "%s", store_errmsg(s));
	cr_expect(h_relay_cut_done(relay));
	cr_expect(strstr(store_errmsg(s), "unanswered"), "%s", store_errmsg(s));
	cr_expect_eq(resolve(s), 1, "%s", store_errmsg(s));
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM t WHERE v = 1"), 1);
	cr_expect_eq(store_commit_resolve(s), STORE_EINVAL, "asked once, answered once");

	/* COMMIT never reaches the server: the transaction dies with the connection. */
	h_relay_cut_on(relay, "COMMIT", true, 0);
	cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
	cr_assert_eq(store_exec(s, "INSERT INTO t VALUES (2)"), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(store_commit(s), STORE_EUNKNOWN, "%s", store_errmsg(s));
	cr_expect_eq(resolve(s), 0, "%s", store_errmsg(s));
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM t WHERE v = 2"), 0);

	/* A transaction that wrote nothing has nothing to lose: a plain lost connection. */
	h_relay_cut_on(relay, "COMMIT", false, 300);
	cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(one(s, "SELECT COUNT(*) FROM t"), 1);
	cr_expect_eq(store_commit(s), STORE_ECONN, "%s", store_errmsg(s));
	cr_expect_eq(store_commit_resolve(s), STORE_EINVAL);
	cr_expect_eq(store_begin(s), STORE_OK, "reconnects: %s", store_errmsg(s));
	cr_expect_eq(store_commit(s), STORE_OK, "%s", store_errmsg(s));

	store_close(s);
	h_relay_free(relay);
	free(url);
	h_pg_free(&pg);
}

Test(store, sqlite_commit_is_never_left_unanswered)
{
	char *dir = h_tmpdir("store-resolve");
	char *url = h_strf("sqlite:%s/s.db", dir);
	struct store *s = open_url(url, 1);
	cr_assert_eq(store_begin(s), STORE_OK);
	cr_expect_eq(store_commit(s), STORE_OK);
	cr_expect_eq(store_commit_resolve(s), STORE_EINVAL);
	store_close(s);
	free(url);
	free(dir);
}
