/* test_outpostctl.c - outpostctl output for each command on a store populated by the real
 * bridge (SQLite and PostgreSQL give the same answers), decode of mosquitto_sub captures and
 * raw payloads, exit statuses, and the refusal of bad operator input. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_sql.h"
#include "h_bridge.h"
#include "h_pg.h"
#include "h_simdev.h"
#include "harness.h"
#include "store.h"
#include "wire_env.h"
#include "wire_utf8.h"

static char *ctl(const char *url, int want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *ctl(const char *url, int want, const char *fmt, ...)
{
	va_list ap;
	char *args = NULL, *out = NULL;
	va_start(ap, fmt);
	cr_assert_geq(vasprintf(&args, fmt, ap), 0);
	va_end(ap);
	int rc = h_ctl(url, args, &out);
	cr_expect_eq(rc, want, "outpostctl %s: exit %d, output:\n%s", args, rc, out);
	free(args);
	return out;
}

/* outpostctl ARGS exits want and prints needle (unless NULL) in lines lines (unless < 0). */
static void expect_ctl(const char *url, int want, const char *args, const char *needle, int lines)
{
	char *out = ctl(url, want, "%s", args);
	if (needle)
		cr_expect(strstr(out, needle), "outpostctl %s:\n%s", args, out);
	if (lines >= 0)
		cr_expect_eq(h_count(out, "\n"), lines, "outpostctl %s:\n%s", args, out);
	free(out);
}

static void populated(const char *store, const char *tag)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_simdev_opts oa = {.pki = h_pki(),
	                           .id = "dev-a",
	                           .port = 0,
	                           .batches = 20,
	                           .rows = 3,
	                           .cols = 2,
	                           .window = 5,
	                           .t0_ms = 1700000000000LL};
	struct h_simdev_opts ob = oa;
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, store, tag);
	h_bridge_start(&br);
	oa.port = ob.port = b.mqtts_port;
	ob.id = "dev-b";
	ob.drop_every = 4;
	/* Capture what crosses the broker, as an operator would. */
	char *cap = h_strf("%s/capture.txt", br.dir);
	char *cafile = h_strf("%s/ca.crt", h_pki()), *cert = h_strf("%s/operator.crt", h_pki()),
	     *key = h_strf("%s/operator.key", h_pki()), *port = h_strf("%d", b.internal_port);
	char *sub[] = {"mosquitto_sub",
	               "-h",
	               "127.0.0.1",
	               "-p",
	               port,
	               "--cafile",
	               cafile,
	               "--cert",
	               cert,
	               "--key",
	               key,
	               "-V",
	               "mqttv5",
	               "-i",
	               "operator-capture",
	               "-t",
	               "outpost/v1/dev-a/#",
	               "-F",
	               "%t %x",
	               "-C",
	               "12",
	               "-W",
	               "30",
	               NULL};
	pid_t sp = h_spawn(sub, NULL, cap);
	h_sleep_ms(500);
	struct h_simdev *da = h_simdev_start(&oa), *db = h_simdev_start(&ob);
	cr_assert(h_simdev_wait(da, 30000) && h_simdev_wait(db, 30000));
	h_simdev_stop(da);
	h_simdev_stop(db);
	cr_expect_eq(h_wait_exit(sp, 30000), 0, "mosquitto_sub capture");
	const char *url = br.store;
	char *out;

	/* devices */
	out = ctl(url, 0, "devices");
	cr_expect(strstr(out, "device") && strstr(out, "state") && strstr(out, "frontier"), "%s",
	          out);
	cr_expect_eq(h_count(out, "active"), 2, "%s", out);
	cr_expect(strstr(out, "dev-a") && strstr(out, "dev-b") && strstr(out, "simdev/1"), "%s",
	          out);
	free(out);
	out = ctl(url, 0, "devices --format csv");
	const char *hdr = "device,state,online,last_seen,frontier,envelopes,readings,";
	cr_expect(!strncmp(out, hdr, strlen(hdr)), "%s", out);
	cr_expect(strstr(out, "\ndev-a,active,yes,"), "%s", out);
	free(out);
	out = ctl(url, 0, "devices --format json --state active");
	cr_expect(out[0] == '[' && h_count(out, "\"device\": \"dev-") == 2 &&
	              strstr(out, "\"envelopes\": 20"),
	          "%s", out);
	free(out);

	/* device show */
	out = ctl(url, 0, "device show dev-a");
	cr_expect(strstr(out, "device      dev-a") && strstr(out, "state       active") &&
	              strstr(out, "stored      20 envelopes, 120 readings") && strstr(out, "m1") &&
	              strstr(out, "enrolled") && strstr(out, "(Ed25519)"),
	          "%s", out);
	free(out);
	out = ctl(url, 1, "device show dev-nobody");
	cr_expect(strstr(out, "no device 'dev-nobody'"), "%s", out);
	free(out);

	/* readings: every stored reading of a metric, oldest first, exact values */
	out = ctl(url, 0, "readings --device dev-a --metric m2");
	cr_expect_eq(h_count(out, "\n"), 1 + 20 * 3, "%s", out);
	char *first = h_strf(
	    "device,metric,unit,time,value,seq\ndev-a,m2,u,2023-11-14T22:13:22.000Z,2.001,2\n");
	cr_expect(!strncmp(out, first, strlen(first)), "%s", out);
	free(first);
	free(out);
	/* --since/--until: the first batch only (seq 2: t0 + 2000 ms .. + 20 ms) */
	out = ctl(
	    url, 0,
	    "readings --device dev-a --since 2023-11-14T22:13:22Z --until 2023-11-14T22:13:22.5Z"
	    " --format json");
	cr_expect_eq(h_count(out, "\"metric\""), 3 * 2, "%s", out);
	cr_expect(strstr(out, "\"value\": 2.251"), "%s", out);
	free(out);
	out = ctl(url, 0, "readings --device dev-a --limit 4 --format table");
	cr_expect_eq(h_count(out, "\n"), 5, "%s", out);
	free(out);
	out = ctl(url, 2, "readings --metric m1");
	free(out);
	out = ctl(url, 2, "readings --device dev-a --since yesterday-ish");
	free(out);

	/* events and gaps */
	out = ctl(url, 0, "events");
	cr_expect(strstr(out, "enrolled") && strstr(out, "gap_dropped"), "%s", out);
	free(out);
	out = ctl(url, 0, "events --device dev-a --type enrolled --format json");
	cr_expect_eq(h_count(out, "\"type\": \"enrolled\""), 1, "%s", out);
	free(out);
	out = ctl(url, 0, "gaps");
	cr_expect_eq(h_count(out, "dev-b   dropped"), 4, "%s", out);
	cr_expect(!strstr(out, "dev-a"), "%s", out);
	free(out);

	/* tasks */
	out = ctl(url, 0, "task add --device dev-a --type restart --expires 10m");
	cr_expect_eq(strtol(out, NULL, 10), 1, "%s", out);
	free(out);
	out = ctl(url, 0, "task list --state queued");
	cr_expect(strstr(out, "restart") && strstr(out, "queued"), "%s", out);
	free(out);

	/* decode: the capture (birth, batches, acks) with signatures checked */
	char *cmd = h_strf("decode --pki %s %s", h_pki(), cap);
	out = ctl(url, 0, "%s", cmd);
	cr_expect(strstr(out, "birth  dev-a  seq 1") && strstr(out, "signature ok (dev-a.crt)"),
	          "%s", out);
	/* the simulated device's Birth has no batch interval, as agents before the field */
	cr_expect(strstr(out, "intervals: sample 1s, batch 0s, poll 300s"), "%s", out);
	cr_expect(strstr(out, "batch  dev-a") && strstr(out, "m1=") &&
	              strstr(out, "3 rows x 2 metrics"),
	          "%s", out);
	cr_expect(strstr(out, "ack  dev-a") && strstr(out, "signature ok (bridge.crt)"), "%s", out);
	cr_expect(!strstr(out, "BAD") && !strstr(out, "INVALID"), "%s", out);
	free(out);
	free(cmd);
	/* a capture that starts with a blank line, with a stray line in it: still lines; the
	 * stray line is said, on stderr */
	char *cap2 = h_strf("%s.blank", cap);
	cmd = h_strf("(printf \"\\r\\n\\n\"; head -n 1 %s; echo garbage here; tail -n +2 %s) > %s",
	             cap, cap, cap2);
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	free(out);
	free(cmd);
	cmd = h_strf("decode --pki %s %s 2>&1", h_pki(), cap2);
	out = ctl(url, 0, "%s", cmd);
	free(cap2);
	cr_expect(strstr(out, "birth  dev-a  seq 1") && !strstr(out, "INVALID"), "%s", out);
	cr_expect(strstr(out, "1 line(s) were not 'topic hex'"), "%s", out);
	free(out);
	free(cmd);
	/* decode without certificates: printed, signatures not checked */
	cmd = h_strf("decode < %s", cap);
	out = ctl(url, 0, "%s", cmd);
	cr_expect(strstr(out, "signature not checked") || strstr(out, "certificate in the birth"),
	          "%s", out);
	free(out);
	free(cmd);
	/* decode with a PKI in which dev-a is revoked: what dev-a signed is not trusted (the
	 * certificate its Birth carries does not stand in), a failure, said once on stderr */
	char *revoked = h_tmpdir("ctl-decode-revoked");
	cmd = h_strf("cp -a %s/. %s/ && %s/scripts/provision-certs.sh --out %s --revoke dev-a",
	             h_pki(), revoked, h_source_dir(), revoked);
	cr_assert_eq(h_sh(cmd, &out, 120), 0, "%s", out);
	free(out);
	free(cmd);
	cmd = h_strf("decode --pki %s %s 2>&1", revoked, cap);
	out = ctl(url, 1, "%s", cmd);
	cr_expect(strstr(out, "birth  dev-a  seq 1  ") &&
	              strstr(out, "signature NOT TRUSTED (dev-a.crt: "),
	          "%s", out);
	cr_expect(!strstr(out, "signature ok (dev-a.crt)") &&
	              !strstr(out, "signature ok (certificate in the birth"),
	          "%s", out);
	cr_expect(strstr(out, "ack  dev-a") && strstr(out, "signature ok (bridge.crt)"), "%s", out);
	cr_expect_eq(h_count(out, "outpostctl: decode: dev-a.crt") +
	                 h_count(out, "/devices/dev-a.crt: "),
	             1, "the refusal is said once:\n%s", out);
	free(out);
	free(cmd);
	free(revoked);
	/* nothing at all (mosquitto_sub could not connect): said so, not an "INVALID envelope" */
	out = ctl(url, 1, "decode < /dev/null");
	cr_expect(strstr(out, "no input") && !strstr(out, "INVALID"), "%s", out);
	free(out);
	/* a raw payload, then the same tampered */
	size_t blen, n;
	uint8_t *body = h_batch_body(&oa, 7, 5, &blen);
	uint8_t *env =
	    h_seal(h_pki(), "devices/dev-a", WIRE_KIND_BATCH, "dev-a", 7, body, blen, &n);
	char *raw = h_strf("%s/raw.bin", br.dir);
	FILE *f = fopen(raw, "wb");
	fwrite(env, 1, n, f);
	fclose(f);
	cmd = h_strf("decode --cert %s/devices/dev-a.crt --topic outpost/v1/dev-a/telemetry %s",
	             h_pki(), raw);
	out = ctl(url, 0, "%s", cmd);
	cr_expect(strstr(out, "batch  dev-a  seq 7") && strstr(out, "signature ok") &&
	              strstr(out, "prev_seq 5, 3 rows x 2 metrics, 6 readings"),
	          "%s", out);
	free(out);
	env[n - 3] ^= 1; /* inside the signature */
	f = fopen(raw, "wb");
	fwrite(env, 1, n, f);
	fclose(f);
	out = ctl(url, 1, "%s", cmd);
	cr_expect(strstr(out, "signature BAD"), "%s", out);
	free(out);
	free(cmd);
	free(raw);
	free(env);
	free(body);

	/* prune: counts first, deletes only with --yes, beside the running bridge */
	expect_ctl(url, 2, "prune", NULL, -1);
	expect_ctl(url, 2, "prune --before 2099-01-01", "in the future", -1);
	char *dry = ctl(url, 0, "prune --before 2023-11-14T22:13:32Z");
	cr_expect(strstr(dry, "would delete before 2023-11-14T22:13:32.000Z") &&
	              strstr(dry, "nothing deleted"),
	          "%s", dry);
	expect_ctl(url, 0, "readings --device dev-a --metric m2", NULL, 1 + 20 * 3);
	out = ctl(url, 0, "prune --before 2023-11-14T22:13:32Z --yes");
	/* the same counts as the dry run: seqs 2..11 are before the cut, 10 batches of 6
	 * readings from dev-a, 8 from dev-b (it dropped 2 of them) */
	const char *counted = strstr(dry, ":"), *deleted = strstr(out, ":");
	cr_expect(counted && deleted && !strncmp(counted, deleted, strlen(deleted)) &&
	              strstr(deleted, "readings  108\n") && !strstr(out, "nothing deleted"),
	          "dry run:\n%s\nrun:\n%s", dry, out);
	free(out);
	free(dry);
	expect_ctl(url, 0, "readings --device dev-a --metric m2",
	           "\ndev-a,m2,u,2023-11-14T22:13:32.000Z,", 1 + 10 * 3);
	expect_ctl(url, 0, "events --type pruned --format csv", "pruned", 1 + 1);
	expect_ctl(url, 0, "task cancel 1", NULL, -1);
	expect_ctl(url, 0, "prune --before now --yes", "tasks     1 (finished)", -1);
	expect_ctl(url, 1, "task show 1", NULL, -1);
	expect_ctl(url, 0, "readings --device dev-a", NULL, 1);
	/* envelope records are kept */
	expect_ctl(url, 0, "devices --format json --state active", "\"envelopes\": 20", -1);

	/* usage and store errors */
	out = ctl(url, 2, "frobnicate");
	free(out);
	out = ctl(url, 2, "device explode dev-a");
	free(out);
	char *missing = h_strf("sqlite:%s/nothing-here.db", br.dir);
	char *o2 = NULL;
	cr_expect_eq(h_ctl(missing, "devices", &o2), 1, "%s", o2);
	cr_expect(strstr(o2, "nothing-here.db"), "%s", o2);
	free(o2);
	free(missing);
	cr_expect_eq(h_ctl("mysql://x", "devices", &o2), 2, "%s", o2);
	free(o2);

	cr_expect_eq(h_bridge_stop(&br), 0);
	free(cap);
	free(cafile);
	free(cert);
	free(key);
	free(port);
	h_bridge_free(&br);
	h_broker_free(&b);
}

/* One line of a `mosquitto_sub -F '%t %x'` capture: the topic, a space, the envelope in hex. */
static void capture_line(FILE *f, const char *topic, const uint8_t *env, size_t n)
{
	fprintf(f, "%s ", topic);
	for (size_t j = 0; j < n; j++)
		fprintf(f, "%02x", env[j]);
	fputc('\n', f);
}

Test(outpostctl, every_command_sqlite, .timeout = 180)
{
	populated(NULL, "ctl-sqlite");
}

Test(outpostctl, every_command_postgresql, .timeout = 240)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	populated(pg.url, "ctl-pg");
	/* Two devices, dozens of commits: the bridge must not use up an identity value per
	 * device per commit (an INSERT that conflicts does on PostgreSQL). */
	int64_t next =
	    h_store_i64(pg.url, "SELECT nextval(pg_get_serial_sequence('devices', 'id'))", 0);
	cr_expect_leq(next, 5, "devices.id has reached %lld for 2 devices", (long long)next);
	/* Device keys past 2^31 (a long-lived store) work in every filter. */
	h_store_i64(pg.url,
	            "INSERT INTO devices (id, device_id, state, created_at, state_changed_at)"
	            " VALUES (3000000000, 'dev-big', 'active', 1, 1)",
	            0);
	h_store_i64(pg.url,
	            "INSERT INTO events (at, device, type, detail) VALUES (1, 3000000000,"
	            " 'rejected', 'big one')",
	            0);
	h_store_i64(pg.url,
	            "INSERT INTO gaps (device, reason, prev_seq, last_seq, opened_at) VALUES"
	            " (3000000000, 'missing', 1, 5, 1)",
	            0);
	expect_ctl(pg.url, 0, "events --device dev-big --format csv", "big one", 2);
	expect_ctl(pg.url, 0, "gaps --device dev-big --format csv", "dev-big,missing", 2);
	expect_ctl(pg.url, 0, "device show dev-big", "dev-big", -1);
	h_pg_free(&pg);
}

Test(outpostctl, help_version_and_default_store, .timeout = 60)
{
	char *out = NULL;
	char *cmd = h_strf("%s/bridge/outpostctl --help", h_build_dir());
	cr_expect_eq(h_sh(cmd, &out, 30), 0);
	cr_expect(strstr(out, "readings --device ID") && strstr(out, "var/local/outpost.db"), "%s",
	          out);
	free(out);
	free(cmd);
	cmd = h_strf("%s/bridge/outpostctl --version", h_build_dir());
	cr_expect_eq(h_sh(cmd, &out, 30), 0);
	cr_expect(strstr(out, "outpostctl 0."), "%s", out);
	free(out);
	free(cmd);
	cmd = h_strf("OUTPOST_STORE=sqlite:/nonexistent/dir/x.db %s/bridge/outpostctl devices",
	             h_build_dir());
	cr_expect_eq(h_sh(cmd, &out, 30), 1);
	cr_expect(strstr(out, "/nonexistent/dir/x.db"), "OUTPOST_STORE ignored: %s", out);
	free(out);
	free(cmd);
}

/* The store at url, opened for a test to write to directly (asserts). */
static struct store *open_store(const char *url)
{
	struct store *s = NULL;
	struct store_opts o = STORE_OPTS_INIT;
	char err[STORE_ERR_MAX] = "";
	cr_assert_eq(store_open(url, &o, &s, err), STORE_OK, "%s", err);
	return s;
}

/* Run sql on s (asserts it succeeds). */
static void exec_sql(struct store *s, const char *sql)
{
	cr_assert_eq(store_exec(s, sql), STORE_OK, "%s: %s", sql, store_errmsg(s));
}

/* ---- operator input: refused (exit 2, one line naming what is allowed), never a silent
 * empty answer or a task the device can only refuse later ---- */

/* Create the schema of the store at url and one active device, dev-a (no key). */
static void seed_store(const char *url)
{
	struct store *s = open_store(url);
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK, "%s", store_errmsg(s));
	exec_sql(s, "INSERT INTO devices (device_id, state, created_at,"
	           " state_changed_at) VALUES ('dev-a', 'active', 1, 1)");
	store_close(s);
}

/* A SQLite store with one active device and no bridge: the checks of operator input need no
 * traffic. Caller frees the URL. */
static char *small_store(const char *tag)
{
	char *dir = h_tmpdir(tag), *url = h_strf("sqlite:%s/outpost.db", dir);
	seed_store(url);
	free(dir);
	return url;
}

/* outpostctl ARGS is a usage error (exit 2) told in one line that contains every needle. */
static void expect_usage(const char *url, const char *args, const char *const *needles)
{
	char *out = ctl(url, 2, "%s", args);
	cr_expect_eq(h_count(out, "\n"), 1, "outpostctl %s: want one line:\n%s", args, out);
	cr_expect(!strncmp(out, "outpostctl: ", 12), "outpostctl %s:\n%s", args, out);
	for (size_t i = 0; needles && needles[i]; i++)
		cr_expect(strstr(out, needles[i]), "outpostctl %s: no '%s' in:\n%s", args,
		          needles[i], out);
	free(out);
}

/* A store's errors are one line, however many libpq's message has (with tabs), and whole: the
 * connection refused, and a statement failing with LINE/caret/HINT lines. */
Test(outpostctl, store_errors_are_one_line, .timeout = 120)
{
	char *out = NULL;
	int rc = h_ctl("postgresql://u:x@127.0.0.1:1/db", "devices", &out);
	cr_expect_eq(rc, 1, "%s", out);
	cr_expect_eq(h_count(out, "\n"), 1, "%s", out);
	cr_expect_null(strchr(out, '\t'), "%s", out);
	cr_expect(strstr(out, "outpostctl: store postgresql://u:***@127.0.0.1:1/db: cannot connect: ") &&
	              strstr(out, "Connection refused Is the server running on that host and"
	                          " accepting TCP/IP connections?\n"),
	          "%s", out);
	free(out);
	struct h_pg pg = {0};
	h_pg_start(&pg);
	seed_store(pg.url);
	struct store *s = open_store(pg.url);
	exec_sql(s, "ALTER TABLE devices RENAME COLUMN state TO st");
	store_close(s);
	out = ctl(pg.url, 1, "devices 2>&1 >/dev/null");
	cr_expect_eq(h_count(out, "\n"), 1, "%s", out);
	cr_expect_null(strchr(out, '\t'), "%s", out);
	cr_expect(strstr(out, "does not exist LINE 1: "), "%s", out);
	free(out);
	/* PostgreSQL prepares at the first step: the failure leaves no CSV header behind */
	out = ctl(pg.url, 1, "devices --format csv 2>/dev/null");
	cr_expect_str_empty(out, "%s", out);
	free(out);
	h_pg_free(&pg);
}

/* Make every read of table fail at its first row, when the statement runs rather than when it
 * is prepared: the table becomes a view of itself that takes the absolute value of the
 * smallest 64-bit integer (out of range on both engines) for each row. col: an integer column
 * of table. */
static void fail_reads(const char *url, const char *table, const char *col)
{
	struct store *s = open_store(url);
	char *sql = h_strf("ALTER TABLE %s RENAME TO %s_t", table, table);
	exec_sql(s, sql);
	free(sql);
	sql = h_strf("CREATE VIEW %s AS SELECT * FROM %s_t WHERE"
	             " abs(%s - %s - 9223372036854775807 - 1) > 0",
	             table, table, col, col);
	exec_sql(s, sql);
	free(sql);
	store_close(s);
}

/* A listing whose query fails writes nothing on stdout, in every format (no CSV header, no
 * JSON '[', no table header), exits 1 and says why in one line on stderr. */
static void failed_listings_print_nothing(const char *url)
{
	static const struct {
		const char *args, *name, *table, *col;
	} cmds[] = {
	    {"events", "events", "events", "id"},
	    {"gaps --all", "gaps", "gaps", "id"},
	    {"task list", "task list", "tasks", "id"},
	    {"readings --device dev-a", "readings", "readings", "seq"},
	    {"devices", "devices", "devices", "id"}, /* last: the others look up dev-a */
	};
	static const char *const fmts[] = {"csv", "json", "table"};
	seed_store(url);
	struct store *s = open_store(url);
	exec_sql(s, "INSERT INTO metrics (device, name, unit, wire_id) VALUES (1, 'm1', 'u', 1)");
	exec_sql(s, "INSERT INTO readings (device, metric, ts, seq, idx, value) VALUES"
	            " (1, 1, 1000, 1, 0, 1.5)");
	exec_sql(s, "INSERT INTO events (at, device, type) VALUES (1, 1, 'enrolled')");
	exec_sql(s, "INSERT INTO gaps (device, reason, prev_seq, last_seq, opened_at) VALUES"
	            " (1, 'missing', 1, 5, 1)");
	exec_sql(s, "INSERT INTO tasks (device, type, created_at, expires_at) VALUES"
	            " (1, 'ping', 1, 2)");
	store_close(s);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		/* a header and the one row: the failure below is the query's, not an empty table */
		char *args = h_strf("%s --format csv", cmds[i].args);
		expect_ctl(url, 0, args, NULL, 2);
		free(args);
		fail_reads(url, cmds[i].table, cmds[i].col);
		char *why = h_strf("outpostctl: %s: ", cmds[i].name);
		for (size_t f = 0; f < sizeof(fmts) / sizeof(fmts[0]); f++) {
			char *out =
			    ctl(url, 1, "%s --format %s 2>/dev/null", cmds[i].args, fmts[f]);
			cr_expect_str_empty(out, "%s --format %s wrote:\n%s", cmds[i].args, fmts[f],
			                    out);
			free(out);
			out = ctl(url, 1, "%s --format %s 2>&1 >/dev/null", cmds[i].args, fmts[f]);
			cr_expect(!strncmp(out, why, strlen(why)) && h_count(out, "\n") == 1,
			          "%s --format %s said:\n%s", cmds[i].args, fmts[f], out);
			free(out);
		}
		free(why);
	}
}

Test(outpostctl, a_failed_listing_prints_nothing_sqlite, .timeout = 60)
{
	char *dir = h_tmpdir("ctl-failed-listing"), *url = h_strf("sqlite:%s/outpost.db", dir);
	failed_listings_print_nothing(url);
	free(url);
	free(dir);
	/* A query failing after rows went out: SQLite reads devices in device_id order through
	 * its unique index, so dev-a's row streams before dev-b's fails. CSV and JSON keep what
	 * they wrote, JSON without its closing ']' (part of an answer must not read as all of
	 * it); a table, built in memory, is not printed. */
	url = small_store("ctl-failed-later");
	struct store *s = open_store(url);
	exec_sql(s, "INSERT INTO devices (device_id, state, created_at, state_changed_at)"
	            " VALUES ('dev-b', 'active', 1, 1)");
	exec_sql(s, "ALTER TABLE devices RENAME TO devices_t");
	exec_sql(s, "CREATE VIEW devices AS SELECT * FROM devices_t WHERE abs(CASE device_id WHEN"
	            " 'dev-b' THEN id - id - 9223372036854775807 - 1 ELSE 0 END) >= 0");
	store_close(s);
	char *out = ctl(url, 1, "devices --format csv 2>/dev/null");
	cr_expect(!strncmp(out, "device,state,", 13) && strstr(out, "\ndev-a,active,") &&
	              h_count(out, "\n") == 2,
	          "%s", out);
	free(out);
	out = ctl(url, 1, "devices --format json 2>/dev/null");
	cr_expect(out[0] == '[' && strstr(out, "\"device\": \"dev-a\"") && !strchr(out, ']') &&
	              out[strlen(out) - 1] == '\n',
	          "%s", out);
	free(out);
	out = ctl(url, 1, "devices --format table 2>/dev/null");
	cr_expect_str_empty(out, "%s", out);
	free(out);
	out = ctl(url, 1, "devices --format table 2>&1 >/dev/null");
	cr_expect(strstr(out, "outpostctl: devices: ") && h_count(out, "\n") == 1, "%s", out);
	free(out);
	free(url);
}

Test(outpostctl, a_failed_listing_prints_nothing_postgresql, .timeout = 120)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	failed_listings_print_nothing(pg.url);
	h_pg_free(&pg);
}

Test(outpostctl, filters_refuse_unknown_values, .timeout = 60)
{
	char *url = small_store("ctl-filters");
	const char *dev[] = {"--state 'activ'", "unenrolled", "active", "quarantined", "revoked",
	                     "deactivated", NULL};
	expect_usage(url, "devices --state activ", dev);
	const char *ev[] = {"--type 'enroled'", "enrolled", "gap_dropped", "task_succeeded",
	                    "released", "pruned", NULL};
	expect_usage(url, "events --type enroled", ev);
	expect_usage(url, "events --device dev-a --type X --format json", ev + 1);
	const char *task[] = {"--state 'done'", "queued", "delivered", "succeeded", "failed",
	                      "expired", "cancelled", NULL};
	expect_usage(url, "task list --state done", task);
	/* every allowed value still answers */
	expect_ctl(url, 0, "devices --state active --format csv", "\ndev-a,active,", 2);
	expect_ctl(url, 0, "devices --state deactivated --format csv", NULL, 1);
	expect_ctl(url, 0, "events --type task_queued --format csv", NULL, 1);
	expect_ctl(url, 0, "events --type chain_floor_ignored --format csv", NULL, 1);
	expect_ctl(url, 0, "task list --state cancelled --format csv", NULL, 1);
	expect_ctl(url, 1, "task list --device dev-x", "no device 'dev-x'", -1);
	expect_ctl(url, 1, "readings --device dev-a --metric cpu.usr", "has no metric 'cpu.usr'", -1);
	free(url);
}

Test(outpostctl, prune_refuses_negative_zero_and_bare_numbers, .timeout = 60)
{
	char *url = small_store("ctl-prune");
	const char *neg[] = {"--before -5d", "negative", NULL};
	expect_usage(url, "prune --before -5d", neg);
	expect_usage(url, "prune --before=-5d --yes", neg);
	const char *zero[] = {"--before 0d", "zero", NULL};
	expect_usage(url, "prune --before 0d --yes", zero);
	const char *zero_s[] = {"--before 0s", "zero", NULL};
	expect_usage(url, "prune --before 0s", zero_s);
	const char *bare[] = {"--before: '90' is a bare number, which is no time", "90d", "@90",
	                      NULL};
	expect_usage(url, "prune --before 90 --yes", bare);
	const char *unix_s[] = {"'1700000000' is a bare number", "@1700000000", NULL};
	expect_usage(url, "prune --before 1700000000", unix_s);
	const char *nonsense[] = {"'soon' is not a time", NULL};
	expect_usage(url, "prune --before soon", nonsense);
	/* less than a day ago: nearly everything would go ("6m" meant months, surely) */
	const char *minutes[] = {"--before 6m is 6 minutes ago, less than a day", "180d", NULL};
	expect_usage(url, "prune --before 6m --yes", minutes);
	const char *min[] = {"--before 6min is 6 minutes ago", "180d", NULL};
	expect_usage(url, "prune --before 6min", min);
	const char *hours[] = {"--before 23h is 23 hours ago, less than a day", "90d", NULL};
	expect_usage(url, "prune --before 23h --yes", hours);
	const char *secs[] = {"--before 86399s is 86399 seconds ago", "90d", NULL};
	expect_usage(url, "prune --before 86399s --yes", secs);
	/* still fine: a positive duration, a date, a Unix time, now */
	expect_ctl(url, 0, "prune --before 5d", "nothing deleted", -1);
	expect_ctl(url, 0, "prune --before 24h", "nothing deleted", -1);
	expect_ctl(url, 0, "prune --before 1440m", "nothing deleted", -1);
	expect_ctl(url, 0, "prune --before 2024-01-01", "would delete", -1);
	expect_ctl(url, 0, "prune --before @1700000000", "would delete", -1);
	expect_ctl(url, 0, "prune --before now", "would delete", -1);
	free(url);
}

Test(outpostctl, task_add_checks_arguments, .timeout = 60)
{
	char *url = small_store("ctl-taskargs");
	const char *resend[] = {"resend", "from=SEQ", "to=SEQ", NULL};
	expect_usage(url, "task add --device dev-a --type resend", resend);
	expect_usage(url, "task add --device dev-a --type resend --arg from=1", resend);
	expect_usage(url, "task add --device dev-a --type resend --arg to=9", resend);
	expect_usage(url, "task add --device dev-a --type resend --arg first=1 --arg last=9",
	             resend);
	const char *neg[] = {"from=-1", "sequence number", NULL};
	expect_usage(url, "task add --device dev-a --type resend --arg from=-1 --arg to=9", neg);
	const char *alpha[] = {"to=ten", "sequence number", NULL};
	expect_usage(url, "task add --device dev-a --type resend --arg from=1 --arg to=ten", alpha);
	const char *huge[] = {"to=99999999999999999999", "sequence number", NULL};
	expect_usage(url,
	             "task add --device dev-a --type resend --arg from=1"
	             " --arg to=99999999999999999999",
	             huge);
	const char *order[] = {"from 9", "to 1", NULL};
	expect_usage(url, "task add --device dev-a --type resend --arg from=9 --arg to=1", order);
	const char *extra[] = {"resend", "'count'", NULL};
	expect_usage(url,
	             "task add --device dev-a --type resend --arg from=1 --arg to=9 --arg count=3",
	             extra);

	const char *keys[] = {"sample_interval", "batch_interval", "batch_max_readings",
	                      "poll_interval",   "log_level",      NULL};
	expect_usage(url, "task add --device dev-a --type set_config", keys);
	const char *bogus[] = {"'bogus_key'", "sample_interval", "log_level", NULL};
	expect_usage(url, "task add --device dev-a --type set_config --arg bogus_key=1", bogus);
	expect_usage(url,
	             "task add --device dev-a --type set_config --arg sample_interval=5s"
	             " --arg ca=/tmp/evil.crt",
	             (const char *const[]){"'ca'", "sample_interval", NULL});
	const char *empty[] = {"sample_interval", "value", NULL};
	expect_usage(url, "task add --device dev-a --type set_config --arg sample_interval=",
	             empty);
	const char *none[] = {"ping", "no --arg", NULL};
	expect_usage(url, "task add --device dev-a --type ping --arg verbose=1", none);

	/* nothing above was queued; the well-formed ones are */
	expect_ctl(url, 0, "task list --format csv", NULL, 1);
	expect_ctl(url, 0, "task add --device dev-a --type resend --arg from=1 --arg to=9", "1\n",
	           1);
	expect_ctl(url, 0, "task add --device dev-a --type resend --arg from=0 --arg to=0", "2\n",
	           1);
	expect_ctl(url, 0,
	           "task add --device dev-a --type set_config --arg sample_interval=5s"
	           " --arg batch_interval=1m --arg batch_max_readings=100 --arg poll_interval=30s"
	           " --arg log_level=debug",
	           "3\n", 1);
	expect_ctl(url, 0, "task add --device dev-a --type ping", "4\n", 1);
	expect_ctl(url, 0, "task list --format csv", NULL, 1 + 4);
	free(url);
}

/* An error longer than outpostctl's 1024 bytes is cut before the character the cut falls in,
 * never within it: a device id of euro signs (3 bytes each) behind 0, 1 or 2 ASCII bytes puts
 * the cut after each of a character's bytes in turn. */
Test(outpostctl, a_long_error_is_cut_before_a_character, .timeout = 60)
{
	char *url = small_store("ctl-errcut");
	const char *head = "task add: '";  /* "task add: '%s' is not a device id" */
	size_t room = 1023 - strlen(head); /* CTL_ERR_MAX - 1: what is left for the id */
	for (size_t pad = 0; pad < 3; pad++) {
		char id[1200];
		size_t n = pad;
		memset(id, 'a', pad);
		for (; n + 3 < sizeof(id); n += 3)
			memcpy(id + n, "\xe2\x82\xac", 3);
		id[n] = '\0';
		size_t kept = pad + (room - pad) / 3 * 3;
		char *want = h_strf("outpostctl: %s%.*s\n", head, (int)kept, id);
		char *out = ctl(url, 2, "task add --device %s --type ping", id);
		cr_expect_str_eq(out, want, "pad %zu", pad);
		cr_expect(wire_utf8_valid(out, strlen(out)), "pad %zu: not UTF-8:\n%s", pad, out);
		free(out);
		free(want);
	}
	free(url);
}

Test(outpostctl, unknown_option_and_help_options, .timeout = 60)
{
	char *url = small_store("ctl-options");
	const char *bogus[] = {"unknown option '--bogus' (try --help)", NULL};
	expect_usage(url, "--bogus", bogus);
	expect_usage(url, "--bogus devices", bogus);
	const char *x[] = {"unknown option '-x' (try --help)", NULL};
	expect_usage(url, "-x devices", x);
	const char *cmd[] = {"unknown command 'frobnicate' (try --help)", NULL};
	expect_usage(url, "frobnicate", cmd);
	free(url);

	/* every global option is listed under Options */
	char *out = NULL;
	char *help = h_strf("%s/bridge/outpostctl --help", h_build_dir());
	cr_expect_eq(h_sh(help, &out, 30), 0);
	const char *opts = strstr(out, "\nOptions");
	cr_assert(opts, "no Options heading:\n%s", out);
	const char *const listed[] = {"--store ", "--config FILE", "-c FILE",
	                              "/etc/outpost/outpostctl.conf", "OUTPOST_CONFIG",
	                              "--help", "--version"};
	for (size_t i = 0; i < sizeof(listed) / sizeof(listed[0]); i++)
		cr_expect(strstr(opts, listed[i]), "'%s' not under Options:\n%s", listed[i], out);
	free(out);
	free(help);
}

/* What follows an option that takes a value is its value, even when it reads like a global
 * option: --reason --help is a reason, not a request for help (which quarantined nothing and
 * exited 0), --reason -c does not read a settings file. Global options elsewhere, before or
 * after the command, still work. */
Test(outpostctl, global_options_are_never_an_options_value, .timeout = 60)
{
	char *url = small_store("ctl-optvalue");
	expect_ctl(url, 0, "device quarantine dev-a --reason --help",
	           "dev-a: active -> quarantined\n", 1);
	expect_ctl(url, 0, "device show dev-a", "by outpostctl: --help (since", -1);
	expect_ctl(url, 0, "device release dev-a", "dev-a: quarantined -> unenrolled\n", 1);
	expect_ctl(url, 0, "device revoke dev-a --reason -c", "dev-a: unenrolled -> revoked\n", 1);
	expect_ctl(url, 0, "device show dev-a", "by outpostctl: -c (since", -1);
	expect_ctl(url, 0, "events --format csv --type revoked", ",revoked,", 2);
	expect_ctl(url, 1, "events --device --store", "no device '--store'", 1);
	const char *fmt[] = {"--format: want table, csv or json", NULL};
	expect_usage(url, "devices --format --version", fmt);
	expect_usage(url, "devices --format -h", fmt);
	const char *lim[] = {"--limit: want a positive number", NULL};
	expect_usage(url, "task list --limit --config", lim);

	/* before the command, after it, between its options; the last --store wins */
	const char *help[] = {"--help",
	                      "-h devices --bogus",
	                      "devices --help",
	                      "device --help",
	                      "task --help",
	                      "task list --help",
	                      "readings -h --device dev-a",
	                      "decode --help",
	                      "events --format csv --help"};
	for (size_t i = 0; i < sizeof(help) / sizeof(help[0]); i++)
		expect_ctl(url, 0, help[i], "Usage: outpostctl [--store URL]", -1);
	expect_ctl(url, 0, "events -V", "outpostctl 0.", 1);
	expect_ctl(url, 0, "task --version", "outpostctl 0.", 1);
	char *args =
	    h_strf("devices --store sqlite:/nonexistent/x.db --format csv --store %s", url);
	expect_ctl(url, 0, args, "\ndev-a,revoked,", 2);
	free(args);
	args = h_strf("task --store=%s list --format csv", url);
	expect_ctl("sqlite:/nonexistent/x.db", 0, args, NULL, 1);
	free(args);
	expect_ctl(url, 1, "devices --store=sqlite:/nonexistent/x.db", "/nonexistent/x.db", 1);
	const char *opt[] = {"task: unknown option '--bogus' (try --help)", NULL};
	expect_usage(url, "task --bogus", opt);
	free(url);
}

/* --reason is an option of the actions that record it (quarantine, release, revoke), refused
 * by show rather than ignored; a bare "--" ends the options: what follows is an argument,
 * even one that reads like an option. */
/* A --reason is kept whole, in the device's state and its event, and shown whole (never cut
 * within a character), or refused: too long, or with a control character, or not UTF-8. */
Test(outpostctl, a_reason_is_kept_whole_or_refused, .timeout = 60)
{
	char *url = small_store("ctl-reason");
	/* 200 bytes, the most kept: 100 two-byte characters */
	char reason[201] = "", over[202] = "";
	for (int i = 0; i < 100; i++)
		memcpy(reason + 2 * i, "\xc3\xa9", 2);
	snprintf(over, sizeof(over), "%sx", reason);
	const char *long_[] = {"device quarantine: --reason is 201 bytes long; at most 200 are kept",
	                       NULL};
	char *args = h_strf("device quarantine dev-a --reason \"%s\"", over);
	expect_usage(url, args, long_);
	free(args);
	const char *nl[] = {"device quarantine: --reason holds a control character (\\x0a at byte"
	                    " 2): write it as one line of plain text",
	                    NULL};
	expect_usage(url, "device quarantine dev-a --reason \"$(printf \"a\\nstate  revoked\")\"",
	             nl);
	const char *esc[] = {"(\\x1b at byte 3)", NULL};
	expect_usage(url, "device quarantine dev-a --reason \"$(printf \"ab\\033[2J\")\"", esc);
	const char *c1[] = {"(U+009b at byte 1)", NULL};
	expect_usage(url, "device revoke dev-a --reason \"$(printf \"\\302\\233\")\"", c1);
	const char *bad[] = {"--reason is not valid UTF-8", NULL};
	expect_usage(url, "device revoke dev-a --reason \"$(printf \"x\\377\")\"", bad);
	const char *rlo[] = {"bidirectional control (U+202E at byte 2)", NULL};
	expect_usage(url, "device revoke dev-a --reason \"$(printf \"x\\342\\200\\256y\")\"", rlo);
	expect_ctl(url, 0, "device show dev-a", "state       active", -1); /* nothing done */
	args = h_strf("device quarantine dev-a --reason \"%s\"", reason);
	expect_ctl(url, 0, args, "active -> quarantined\n", 1);
	free(args);
	char *whole = h_strf("state       quarantined: active -> quarantined by outpostctl: %s"
	                     " (since ",
	                     reason);
	expect_ctl(url, 0, "device show dev-a", whole, -1);
	free(whole);
	whole = h_strf(",quarantined,active -> quarantined by outpostctl: %s\n", reason);
	expect_ctl(url, 0, "events --type quarantined --format csv", whole, 2);
	free(whole);
	free(url);
}

Test(outpostctl, reason_only_where_recorded_and_dash_dash_ends_options, .timeout = 60)
{
	char *url = small_store("ctl-dashdash");
	const char *show[] = {"device show: --reason is not an option of show", NULL};
	expect_usage(url, "device show dev-a --reason why", show);
	expect_usage(url, "device show --reason=why dev-a", show);
	expect_ctl(url, 0, "device quarantine dev-a --reason leak", "active -> quarantined\n", 1);
	expect_ctl(url, 0, "device release dev-a --reason fixed", "quarantined -> unenrolled\n",
	           1);
	expect_ctl(url, 0, "device show dev-a", "by outpostctl: fixed (since", -1);
	/* after "--", arguments: the id, a file named --help, an option taken as an argument */
	expect_ctl(url, 0, "device show -- dev-a", "device      dev-a\n", -1);
	expect_ctl(url, 0, "device -- show dev-a", "device      dev-a\n", -1);
	expect_ctl(url, 1, "decode -- --help", "decode: cannot open --help", 1);
	const char *extra[] = {"device: unexpected argument '--reason' (try --help)", NULL};
	expect_usage(url, "device quarantine dev-a -- --reason x", extra);
	/* only one "--" ends them: a second is an argument; one as an option's value is that */
	const char *second[] = {"device: unexpected argument '--' (try --help)", NULL};
	expect_usage(url, "device show -- dev-a --", second);
	expect_ctl(url, 0, "device quarantine dev-a --reason --", "unenrolled -> quarantined\n", 1);
	expect_ctl(url, 0, "device show dev-a", "by outpostctl: -- (since", -1);
	free(url);
}

/* Output that could not be written is a failure, whether the last flush failed or an earlier
 * one did (what it held is lost and only the stream's error flag tells). */
Test(outpostctl, output_not_written_is_a_failure, .timeout = 120)
{
	char *url = small_store("ctl-full");
	struct store *s = open_store(url);
	exec_sql(s, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n"
	           " WHERE x < 300) INSERT INTO devices (device_id, state,"
	           " created_at, state_changed_at) SELECT printf('device-%04d', x),"
	           " 'active', 1, 1 FROM n");
	exec_sql(s, "INSERT INTO events (at, device, type) VALUES (1, 1,"
	           " 'rejected')");
	const char *cmds[] = {"devices",
	                      "devices --format csv",
	                      "devices --format json",
	                      "devices --state quarantined",
	                      "device show dev-a",
	                      "--help"};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char *args = h_strf("%s > /dev/full", cmds[i]);
		expect_ctl(url, 1, args, "outpostctl: cannot write the output\n", 1);
		free(args);
	}
	/* one event of a CSV around one and two buffers long: with some lengths the failed
	 * write was the last one */
	for (int total = 4080; total <= 8200; total += total == 4112 ? 4072 : 1) {
		/* the header, "1970-01-01T00:00:00.001Z,dev-a,rejected,", the detail, "\n" */
		char *sql =
		    h_strf("UPDATE events SET detail = printf('%%.*c', %d, 'x')", total - 24 - 41);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
		char *out = ctl(url, 0, "events --format csv");
		cr_assert_eq(strlen(out), (size_t)total);
		free(out);
		expect_ctl(url, 1, "events --format csv > /dev/full",
		           "outpostctl: cannot write the output\n", 1);
	}
	store_close(s);
	free(url);
}

/* A settings file outpostctl cannot use, named by --config / -c or by OUTPOST_CONFIG, is a usage
 * error that names the file and line (or says why it cannot be read), never skipped: the
 * command does not run on the store given beside it. */
/* A change committed whose output cannot be written is still exit 1, but said to be done, so
 * that a script that retries on the failure does not queue a task twice. */
Test(outpostctl, a_change_committed_is_said_when_its_output_fails, .timeout = 60)
{
	char *url = small_store("ctl-done-full");
	expect_ctl(url, 1, "task add --device dev-a --type ping > /dev/full",
	           "outpostctl: task 1 queued, but its id could not be written: No space left on"
	           " device\n",
	           1);
	expect_ctl(url, 0, "task list --format csv", "\n1,dev-a,ping,queued,", 2);
	expect_ctl(url, 1, "task cancel 1 > /dev/full",
	           "outpostctl: task 1 cancelled, but the output saying so could not be written: No"
	           " space left on device\n",
	           1);
	expect_ctl(url, 1, "device quarantine dev-a --reason x > /dev/full",
	           "outpostctl: dev-a quarantined (it was active), but the output saying so could"
	           " not be written: No space left on device\n",
	           1);
	/* nothing done: nothing said to be */
	expect_ctl(url, 1, "device quarantine dev-a > /dev/full",
	           "outpostctl: cannot write the output\n", 1);
	expect_ctl(url, 1, "prune --before 30d --yes > /dev/full",
	           " 0 tasks; the 'pruned' event holds them), but the counts could not be written:"
	           " No space left on device\n",
	           1);
	expect_ctl(url, 1, "prune --before 30d > /dev/full", "outpostctl: cannot write the output\n",
	           1);
	free(url);
}

Test(outpostctl, a_bad_config_file_is_refused, .timeout = 60)
{
	char *url = small_store("ctl-config");
	char *dir = h_tmpdir("ctl-config-file");
	char *conf = h_strf("%s/outpostctl.conf", dir), *missing = h_strf("%s/none.conf", dir);
	FILE *f = fopen(conf, "w");
	cr_assert_not_null(f);
	fputs("# the operator's settings\nstroe = sqlite:/nonexistent/x.db\n", f);
	cr_assert_eq(fclose(f), 0);
	char *where = h_strf("%s:2: stroe: unknown setting", conf);
	const char *bad[] = {where, NULL};
	char *args = h_strf("--config %s devices", conf);
	expect_usage(url, args, bad);
	free(args);
	args = h_strf("devices -c %s", conf);
	expect_usage(url, args, bad);
	free(args);
	char *why = h_strf("%s: No such file or directory", missing);
	const char *gone[] = {why, NULL};
	args = h_strf("--config=%s devices", missing);
	expect_usage(url, args, gone);
	free(args);

	/* the same file named by the environment */
	char *out = NULL;
	char *cmd = h_strf("OUTPOST_CONFIG=%s %s/bridge/outpostctl --store=%s devices", conf,
	                   h_build_dir(), url);
	cr_expect_eq(h_sh(cmd, &out, 30), 2, "%s:\n%s", cmd, out);
	cr_expect_eq(h_count(out, "\n"), 1, "%s: want one line:\n%s", cmd, out);
	cr_expect(!strncmp(out, "outpostctl: ", 12) && strstr(out, where), "%s:\n%s", cmd, out);
	free(out);
	free(cmd);
	free(why);
	free(where);
	free(missing);
	free(conf);
	free(dir);
	free(url);
}

/* Text a device sent (a task result, an event quoting it) reaches the operator's terminal with
 * its control characters shown, not obeyed: no cleared screen, no forged line; CSV too, into a
 * pipe as well as on a terminal (--raw keeps the bytes); and its bidirectional controls are
 * shown in every format, so that no text reads otherwise than it is. */
Test(outpostctl, a_devices_control_characters_are_shown_not_obeyed, .timeout = 60)
{
	char *url = small_store("ctl-vis");
	struct store *s = open_store(url);
	exec_sql(s, "INSERT INTO tasks (device, type, state, created_at, expires_at,"
	           " finished_at, result_status, result_message) VALUES (1, 'ping',"
	           " 'succeeded', 1, 2, 2, 'succeeded', 'ok' || char(27) || '[2J'"
	           " || char(10) || 'state       failed')");
	exec_sql(s, "INSERT INTO task_output (task, idx, key, value) VALUES (1, 0,"
	           " 'k', 'v' || char(13) || 'w')");
	exec_sql(s, "INSERT INTO events (at, device, type, detail) VALUES (1, 1,"
	           " 'rejected', 'x' || char(27) || ']0;title' || char(7) ||"
	           " char(155) || '2J' || char(127) || char(133) || 'end')");
	exec_sql(s, "INSERT INTO metrics (device, name, unit, wire_id) VALUES (1,"
	           " 'temp' || char(27) || '[1A', 'C' || char(27) || '[2J', 1)");
	exec_sql(s, "INSERT INTO readings (device, metric, ts, seq, idx, value)"
	           " VALUES (1, 1, 1700000000000, 1, 0, 1.5)");
	store_close(s);
	const char *cmds[] = {"task show 1",
	                      "task list",
	                      "events",
	                      "device show dev-a",
	                      "events --format json",
	                      "task list --format json",
	                      "readings --device dev-a --format json",
	                      "readings --device dev-a --format table",
	                      "readings --device dev-a",
	                      "events --format csv",
	                      "task list --format csv"};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char *out = ctl(url, 0, "%s", cmds[i]);
		cr_expect_null(strpbrk(out, "\x1b\x07\r"), "outpostctl %s printed a control character",
		               cmds[i]);
		cr_expect_null(strstr(out, "\xc2\x9b"), "outpostctl %s printed a C1 CSI", cmds[i]);
		cr_expect_null(strstr(out, "\xc2\x85"), "outpostctl %s printed a C1 NEL", cmds[i]);
		cr_expect_null(strchr(out, 0x7f), "outpostctl %s printed a DEL", cmds[i]);
		free(out);
	}
	char *out = ctl(url, 0, "task show 1");
	cr_expect(strstr(out, "ok\\x1b[2J\\x0astate       failed"), "%s", out);
	cr_expect(strstr(out, "k=v\\x0dw"), "%s", out);
	cr_expect_eq(h_count(out, "\nstate       "), 1, "a forged line:\n%s", out);
	free(out);
	out = ctl(url, 0, "events --format json");
	cr_expect(strstr(out, "x\\u001b]0;title\\u0007\\u009b2J\\u007f\\u0085end"),
	          "JSON escapes as JSON:\n%s", out);
	free(out);
	out = ctl(url, 0, "readings --device dev-a --format json");
	cr_expect(strstr(out, "\"unit\": \"C\\u001b[2J\""), "%s", out);
	free(out);
	/* CSV into a pipe shows them as on a terminal; with --raw it keeps the bytes */
	out = ctl(url, 0, "readings --device dev-a");
	cr_expect(strstr(out, "\ndev-a,temp\\x1b[1A,C\\x1b[2J,2023-11-14T22:13:20.000Z,1.5,1\n"),
	          "%s", out);
	free(out);
	out = ctl(url, 0, "events --format csv");
	cr_expect(strstr(out, ",rejected,x\\x1b]0;title\\x07\\u009b2J\\x7f\\u0085end\n"), "%s",
	          out);
	free(out);
	out = ctl(url, 0, "--raw readings --device dev-a");
	cr_expect(strstr(out, "\ndev-a,temp\x1b[1A,C\x1b[2J,2023-11-14T22:13:20.000Z,1.5,1\n"),
	          "%s", out);
	free(out);
	out = ctl(url, 0, "events --format csv --raw");
	cr_expect(strstr(out, ",rejected,x\x1b]0;title\x07\xc2\x9b"
	                      "2J\x7f\xc2\x85"
	                      "end\n"),
	          "%s", out);
	free(out);
	out = ctl(url, 0, "task list --format csv --raw");
	cr_expect(strstr(out, ",\"ok\x1b[2J\nstate       failed\"\n"), "%s", out);
	free(out);
	const char *on_tty[][2] = {
	    {"readings --device dev-a",
	     "\ndev-a,temp\\x1b[1A,C\\x1b[2J,2023-11-14T22:13:20.000Z,1.5,1\r\n"},
	    {"events --format csv", ",rejected,x\\x1b]0;title\\x07\\u009b2J\\x7f\\u0085end\r\n"},
	    {"task list --format csv", ",ok\\x1b[2J\\x0astate       failed\r\n"}};
	for (size_t i = 0; i < sizeof(on_tty) / sizeof(on_tty[0]); i++) {
		char *cmd = h_strf("script -qec \"%s/bridge/outpostctl --store=%s %s\" /dev/null"
		                   " < /dev/null",
		                   h_build_dir(), url, on_tty[i][0]);
		cr_expect_eq(h_sh(cmd, &out, 30), 0, "%s:\n%s", cmd, out);
		cr_expect(strstr(out, on_tty[i][1]), "%s:\n%s", cmd, out);
		cr_expect_null(strpbrk(out, "\x1b\x07\x7f"), "%s:\n%s", cmd, out);
		cr_expect_null(strstr(out, "\xc2\x9b"), "%s:\n%s", cmd, out);
		free(out);
		free(cmd);
	}
	out = ctl(url, 0, "device show dev-a");
	cr_expect(strstr(out, "temp\\x1b[1A") && strstr(out, "C\\x1b[2J"), "%s", out);
	free(out);
	/* the bidirectional controls: an override, an isolate, a mark */
	s = open_store(url);
	exec_sql(s, "INSERT INTO events (at, device, type, detail) VALUES (2, 1, 'rejected',"
	           " 'a' || char(8238) || 'b' || char(8294) || 'c' || char(8207) || 'd' ||"
	           " char(1564) || 'e' || char(8233) || 'f')");
	store_close(s);
	const char *bidi[][2] = {
	    {"events", "a\\u202eb\\u2066c\\u200fd\\u061ce\xe2\x80\xa9" "f"},
	    {"events --format csv", "a\\u202eb\\u2066c\\u200fd\\u061ce\xe2\x80\xa9" "f"},
	    {"events --format json", "a\\u202eb\\u2066c\\u200fd\\u061ce\xe2\x80\xa9" "f"},
	    {"events --format csv --raw",
	     "a\xe2\x80\xae" "b\xe2\x81\xa6" "c\xe2\x80\x8f" "d\xd8\x9c" "e"}};
	for (size_t i = 0; i < sizeof(bidi) / sizeof(bidi[0]); i++) {
		out = ctl(url, 0, "%s", bidi[i][0]);
		cr_expect(strstr(out, bidi[i][1]), "%s:\n%s", bidi[i][0], out);
		if (!strstr(bidi[i][0], "--raw"))
			cr_expect_null(strstr(out, "\xe2\x80\xae"), "%s:\n%s", bidi[i][0], out);
		free(out);
	}
	/* a field longer than a piece of the escaping: whole, escaped to its end, the C1 and
	 * bidi controls across a piece's end too */
	s = open_store(url);
	exec_sql(s, "UPDATE events SET detail = printf('%.*c', 1023, 'y') || char(155) ||"
	           " printf('%.*c', 1020, 'z') || char(8238) || printf('%.*c', 3000, 'w') ||"
	           " char(27) || 'end' WHERE at = 2");
	store_close(s);
	out = ctl(url, 0, "events --format csv");
	char *want = h_strf(",%*s\\u009b%*s\\u202e%*s\\x1bend\n", 1023, "", 1020, "", 3000, "");
	memset(want + 1, 'y', 1023);
	memset(want + 1 + 1023 + 6, 'z', 1020);
	memset(want + 1 + 1023 + 6 + 1020 + 6, 'w', 3000);
	cr_expect(strstr(out, want), "%s", out);
	free(want);
	free(out);
	free(url);
}

/* Numbers and dates out of range are usage errors, not wrapped, clamped or rolled over. */
Test(outpostctl, numbers_and_dates_out_of_range_are_refused, .timeout = 60)
{
	char *url = small_store("ctl-range");
	const char *bad[] = {"task show 99999999999999999999",
	                     "task cancel 99999999999999999999",
	                     "task show +5",
	                     "task list --limit 99999999999999999999",
	                     "events --limit 99999999999999999999",
	                     "events --since 2026-02-31",
	                     "events --since 2026-04-31T00:00Z",
	                     "readings --device dev-a --since @9223372036854775807",
	                     "readings --device dev-a --since 99999999999999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_usage(url, bad[i], NULL);
	expect_ctl(url, 0, "events --since 2024-02-29 --format csv", NULL, 1);
	expect_ctl(url, 0, "events --since 2016-12-31T23:59:60Z --format csv", NULL, 1);
	expect_ctl(url, 1, "task show 9223372036854775807", "no task 9223372036854775807", -1);
	free(url);
}

/* Times are what they look like or refused: a bare number is none, "@" takes digits only
 * (strtoll took a space or a sign), an offset is at most 23:59, a '.' wants a fraction digit;
 * --since at or after --until asks for nothing and is refused rather than answered with
 * nothing. */
Test(outpostctl, times_are_strict, .timeout = 60)
{
	char *url = small_store("ctl-times");
	struct store *s = open_store(url);
	exec_sql(s, "INSERT INTO events (at, device, type, detail) VALUES"
	           " (1700000000000, 1, 'rejected', 'at 2023-11-14T22:13:20Z')");
	store_close(s);
	const char *bad[] = {"@ 5",
	                     "@+5",
	                     "@-5",
	                     "@",
	                     "@5x",
	                     "@0x10",
	                     "2023-11-14T22:13:20+99:99",
	                     "2023-11-14T22:13:20+24:00",
	                     "2023-11-14T22:13:20-23:60",
	                     "2023-11-14T22:13:20.",
	                     "2023-11-14T22:13:20.Z",
	                     "2023-11-14T22:13:20.+01:00",
	                     /* a number with a sign or a space is no more a time than a bare one */
	                     "-90",
	                     "90 ",
	                     "6 m"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *args = h_strf("events --since \"%s\"", bad[i]);
		char *why = h_strf("'%s' is not a time", bad[i]);
		const char *needles[] = {why, NULL};
		expect_usage(url, args, needles);
		free(why);
		free(args);
	}
	/* a bare number: seconds, milliseconds, days? Neither: refused, saying what to write */
	const char *bare[][2] = {{"90", "write 90d for 90 days ago, or @90 for Unix seconds"},
	                         {"1700000000", "write @1700000000 for that Unix time (seconds)"},
	                         {"1700000000000", "write @1700000000000 for that Unix time"}};
	for (size_t i = 0; i < sizeof(bare) / sizeof(bare[0]); i++) {
		char *args = h_strf("readings --device dev-a --since %s", bare[i][0]);
		char *why = h_strf("readings: --since: '%s' is a bare number, which is no time: ",
		                   bare[i][0]);
		const char *needles[] = {why, bare[i][1], NULL};
		expect_usage(url, args, needles);
		free(why);
		free(args);
	}
	/* the same instant, written in every form still taken */
	const char *at[] = {"@1700000000",
	                    "2023-11-14T22:13:20Z",
	                    "2023-11-14T22:13:20.0Z",
	                    "2023-11-15T00:13:20+02:00",
	                    "2023-11-15T22:12:20+23:59",
	                    "2023-11-13T22:14:20-23:59",
	                    "2023-11-14t22:13:20.000z"};
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		char *args = h_strf("events --format csv --since %s", at[i]);
		expect_ctl(url, 0, args, "at 2023-11-14T22:13:20Z", 2);
		free(args);
	}
	const char *after[] = {"@1700000001", "2023-11-14T22:13:20.001Z",
	                       "2023-11-15T22:12:20.5+23:59"};
	for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
		char *args = h_strf("events --format csv --since %s", after[i]);
		expect_ctl(url, 0, args, NULL, 1);
		free(args);
	}
	/* an empty range */
	const char *order[] = {"--since 2026-01-02 --until 2026-01-01",
	                       "--since 2026-01-01 --until 2026-01-01T00:00:00Z",
	                       "--since @1767225600 --until 2026-01-01"};
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		char *args = h_strf("readings --device dev-a %s", order[i]);
		const char *needles[] = {"is not before --until", NULL};
		expect_usage(url, args, needles);
		free(args);
	}
	expect_ctl(url, 0, "readings --device dev-a --since 2026-01-01 --until @1767225601", NULL,
	           1);
	free(url);
}

/* The line of text that contains needle (caller frees), NULL if none. */
static char *line_with(const char *text, const char *needle)
{
	const char *at = strstr(text, needle);
	if (!at)
		return NULL;
	while (at > text && at[-1] != '\n')
		at--;
	return strndup(at, strcspn(at, "\n"));
}

/* decode keeps every device's certificate and Birth, however many devices the capture holds:
 * past the 64th, a revoked device's Birth is still NOT TRUSTED (not "ok" by the certificate it
 * carries), and batches are still checked and named by their Birth's catalog (if trusted). */
Test(outpostctl, decode_keeps_the_certificates_of_many_devices, .timeout = 120)
{
	enum { DEVICES = 71, REVOKED = 70 };
	char *url = small_store("ctl-decode-many");
	char *pki = h_tmpdir("ctl-decode-many-pki"), *out = NULL;
	char *cmd = h_strf("%s/scripts/provision-certs.sh --out %s --count %d && "
	                   "%s/scripts/provision-certs.sh --out %s --revoke device-%04d",
	                   h_source_dir(), pki, DEVICES, h_source_dir(), pki, REVOKED);
	cr_assert_eq(h_sh(cmd, &out, 100), 0, "%s", out);
	free(out);
	free(cmd);
	char *cap = h_strf("%s/capture.txt", pki);
	FILE *f = fopen(cap, "w");
	cr_assert_not_null(f);
	/* every Birth first, then a batch of each device */
	for (int kind = 0; kind < 2; kind++)
		for (int i = 1; i <= DEVICES; i++) {
			char id[16], name[32];
			size_t blen, n;
			snprintf(id, sizeof(id), "device-%04d", i);
			snprintf(name, sizeof(name), "devices/%s", id);
			struct h_simdev_opts o = {
			    .pki = pki, .id = id, .rows = 1, .cols = 2, .t0_ms = 1700000000000LL};
			uint8_t *body = kind ? h_batch_body(&o, 2, 1, &blen)
			                     : h_birth_body(pki, id, 2, 0, &blen);
			uint32_t k = kind ? WIRE_KIND_BATCH : WIRE_KIND_BIRTH;
			uint8_t *env = h_seal(pki, name, k, id, kind ? 2 : 1, body, blen, &n);
			char topic[64];
			snprintf(topic, sizeof(topic), "outpost/v1/%s/%s", id,
			         kind ? "telemetry" : "birth");
			capture_line(f, topic, env, n);
			free(env);
			free(body);
		}
	/* twice a device the PKI has no certificate for (signed with another's key) */
	for (int i = 0; i < 2; i++) {
		struct h_simdev_opts o = {.pki = pki, .id = "stray", .rows = 1, .cols = 2};
		size_t blen, n;
		uint8_t *body = h_batch_body(&o, 3 + (uint64_t)i, 2 + (uint64_t)i, &blen);
		uint8_t *env = h_seal(pki, "devices/device-0001", WIRE_KIND_BATCH, "stray",
		                      3 + (uint64_t)i, body, blen, &n);
		capture_line(f, "outpost/v1/stray/telemetry", env, n);
		free(env);
		free(body);
	}
	cr_assert_eq(fclose(f), 0);
	out = ctl(url, 1, "decode --pki %s %s 2>&1", pki, cap);
	char *birth = line_with(out, "birth  device-0070  seq 1  ");
	char *batch = line_with(out, "batch  device-0070  seq 2  ");
	cr_expect(birth && strstr(birth, "signature NOT TRUSTED (device-0070.crt: "), "%s", birth);
	cr_expect(batch && strstr(batch, "signature NOT TRUSTED (device-0070.crt: "), "%s", batch);
	free(birth);
	free(batch);
	batch = line_with(out, "batch  device-0071  seq 2  ");
	cr_expect(batch && strstr(batch, "signature ok (device-0071.crt)"), "%s", batch);
	free(batch);
	cr_expect_eq(h_count(out, "signature ok (device-"), 2 * (DEVICES - 1));
	cr_expect_eq(h_count(out, "signature not checked (no certificate for stray)"), 2);
	cr_expect_eq(h_count(out, "signature not checked"), 2);
	cr_expect_eq(h_count(out, "certificate in the birth"), 0);
	/* batches are named by their Birth's catalog, the 71st too; not the revoked device's,
	 * whose Birth is not trusted */
	cr_expect_eq(h_count(out, " m1="), DEVICES - 1);
	cr_expect_eq(h_count(out, " #1="), 3, "the stray's, which sent no Birth, and the revoked's");
	free(out);
	free(cap);
	free(pki);
	free(url);
}

/* Devices a-2, a1, b0 and B1 with a gap each; two metrics of a1, M2 and m1, read at the same
 * times (no wire id: left out of the catalog). */
static void fill_names(const char *url)
{
	struct store *s = open_store(url);
	const char *ids[] = {"b0", "a1", "B1", "a-2"};
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		char *sql = h_strf("INSERT INTO devices (device_id, state, created_at,"
		                   " state_changed_at) VALUES ('%s', 'active', 1, 1)",
		                   ids[i]);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
		sql = h_strf("INSERT INTO gaps (device, reason, prev_seq, last_seq, opened_at)"
		             " SELECT id, 'missing', 1, 5, 1 FROM devices WHERE device_id = '%s'",
		             ids[i]);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
	}
	const char *metrics[] = {"m1", "M2"};
	for (size_t i = 0; i < 2; i++) {
		char *sql = h_strf("INSERT INTO metrics (device, name, unit) SELECT id, '%s', ''"
		                   " FROM devices WHERE device_id = 'a1'",
		                   metrics[i]);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
		sql = h_strf("INSERT INTO readings (device, metric, ts, seq, idx, value) SELECT"
		             " m.device, m.id, 1700000000000 + t.ts, 2, %zu, 1 FROM metrics m,"
		             " (SELECT 0 AS ts UNION ALL SELECT 1000) t WHERE m.name = '%s'",
		             i, metrics[i]);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
	}
	store_close(s);
}

/* Text is sorted byte by byte on both engines, whatever the PostgreSQL database's collation:
 * the same rows in the same order, and the same ones within a --limit. */
Test(outpostctl, names_sort_bytewise_on_both_engines, .timeout = 120)
{
	const char *cmds[] = {"devices --format csv", "gaps --format csv",
	                      "readings --device a1 --format csv",
	                      "readings --device a1 --limit 1 --format csv", "device show a1"};
	enum { N = sizeof(cmds) / sizeof(cmds[0]) };
	char *lite[N];
	char *url = small_store("ctl-names");
	fill_names(url);
	for (size_t i = 0; i < N; i++)
		lite[i] = ctl(url, 0, "%s", cmds[i]);
	free(url);
	cr_expect(strstr(lite[0], "\nB1,active,no,,0,0,0,,0,0,\na-2,active,no,,0,0,0,,0,0,\n"
	                          "a1,active,no,,0,0,0,,0,0,\nb0,active,no,,0,0,0,,0,0,\n"),
	          "%s", lite[0]);
	cr_expect(strstr(lite[3], "\na1,M2,"), "%s", lite[3]);
	cr_expect(strstr(lite[4], "  M2 ") < strstr(lite[4], "  m1 "), "%s", lite[4]);
	/* a database whose collation sorts otherwise (ICU's en-US: a-2 a1 b0 B1, m1 before M2;
	 * glibc's en_US.utf8, as in the compose image, differs again: the test machine need not
	 * have that locale) */
	struct h_pg pg = {0};
	h_pg_start(&pg);
	struct store *s = open_store(pg.url);
	exec_sql(s, "CREATE DATABASE icu TEMPLATE template0 LOCALE_PROVIDER icu"
	           " ICU_LOCALE 'en-US'");
	store_close(s);
	url = h_strf("postgresql://postgres@127.0.0.1:%d/icu", pg.port);
	cr_assert_eq(h_store_i64(url,
	                         "SELECT count(*) FROM (VALUES ('a1'), ('B1')) v(x) WHERE"
	                         " x < 'b0'",
	                         0),
	             1, "the database sorts bytewise: B1 before b0");
	seed_store(url);
	fill_names(url);
	for (size_t i = 0; i < N; i++) {
		char *got = ctl(url, 0, "%s", cmds[i]);
		cr_expect_str_eq(got, lite[i], "outpostctl %s:\n%s\nSQLite:\n%s", cmds[i], got,
		                 lite[i]);
		free(got);
		free(lite[i]);
	}
	free(url);
	h_pg_free(&pg);
}

/* events, task list and gaps of one device read through the device's index on SQLite (its
 * planner cannot use one for "(? = 0 OR device = ?)": it scanned every device's rows), and
 * answer with that device's rows alone, the newest within --limit. */
Test(outpostctl, one_devices_listings_use_its_index, .timeout = 60)
{
	char *url = small_store("ctl-index");
	struct store *s = open_store(url);
	const struct {
		const char *sql, *table, *index;
	} want[] = {
	    {CTL_SQL_EVENTS_DEVICE, "events", "USING INDEX events_device (device=?)"},
	    {CTL_SQL_TASKS_DEVICE, "tasks", "USING INDEX tasks_device (device=?)"},
	    {CTL_SQL_GAPS_DEVICE(""), "g", "USING INDEX sqlite_autoindex_gaps_1 (device=?)"}};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		char *sql = h_strf("EXPLAIN QUERY PLAN %s", want[i].sql);
		struct store_stmt *st = NULL;
		cr_assert_eq(store_prepare(s, sql, &st), STORE_OK, "%s: %s", sql, store_errmsg(s));
		char plan[2048] = "";
		while (store_step(st) == 1) {
			const char *d = store_col_text(st, 3);
			size_t n = strlen(plan);
			snprintf(plan + n, sizeof(plan) - n, "%s\n", d ? d : "");
		}
		store_stmt_free(st);
		char *line = h_strf("SEARCH %s %s\n", want[i].table, want[i].index);
		cr_expect(strstr(plan, line), "%s\nplan:\n%s", sql, plan);
		free(line);
		free(sql);
	}
	/* dev-b beside dev-a: three events, tasks and gaps each, interleaved */
	exec_sql(s, "INSERT INTO devices (device_id, state, created_at,"
	           " state_changed_at) VALUES ('dev-b', 'active', 1, 1)");
	for (int i = 1; i <= 6; i++) {
		int dev = 1 + i % 2;
		char *sql = h_strf("INSERT INTO events (at, device, type, detail) VALUES (%d, %d,"
		                   " 'rejected', 'e%d')",
		                   i, dev, i);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
		sql = h_strf("INSERT INTO tasks (device, type, created_at, expires_at) VALUES (%d,"
		             " 'ping', %d, 9999999999999)",
		             dev, i);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
		sql = h_strf("INSERT INTO gaps (device, reason, prev_seq, last_seq, opened_at)"
		             " VALUES (%d, 'missing', %d, %d, 1)",
		             dev, 10 * i, 10 * i + 5);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
	}
	store_close(s);
	char *out = ctl(url, 0, "events --device dev-b --limit 2 --format csv");
	cr_expect_str_eq(out, "time,device,type,detail\n"
	                      "1970-01-01T00:00:00.003Z,dev-b,rejected,e3\n"
	                      "1970-01-01T00:00:00.005Z,dev-b,rejected,e5\n");
	free(out);
	out = ctl(url, 0, "events --limit 2 --format csv");
	cr_expect(strstr(out, ",dev-b,rejected,e5\n") && strstr(out, ",dev-a,rejected,e6\n"), "%s",
	          out);
	free(out);
	out = ctl(url, 0, "task list --device dev-a --limit 2 --format csv");
	cr_expect(h_count(out, "\n") == 3 && strstr(out, "\n4,dev-a,ping,queued,") &&
	              strstr(out, "\n6,dev-a,ping,queued,"),
	          "%s", out);
	free(out);
	out = ctl(url, 0, "task list --format csv");
	cr_expect_eq(h_count(out, ",ping,queued,"), 6, "%s", out);
	free(out);
	out = ctl(url, 0, "gaps --device dev-b --format csv");
	cr_expect(h_count(out, "\ndev-b,missing,") == 3 && !strstr(out, "dev-a"), "%s", out);
	free(out);
	out = ctl(url, 0, "gaps --format csv");
	cr_expect(h_count(out, "\ndev-a,missing,") == 3 && h_count(out, "\ndev-b,missing,") == 3,
	          "%s", out);
	free(out);
	free(url);
}

/* readings --format table keeps its rows in memory to align them: without --limit it shows the
 * first CTL_TABLE_ROWS (1000) and says when there are more; memory running out is a failure,
 * not a table with rows missing. */
Test(outpostctl, readings_table_is_bounded_and_fails_out_of_memory, .timeout = 60)
{
	char *url = small_store("ctl-table");
	struct store *s = open_store(url);
	exec_sql(s, "INSERT INTO metrics (device, name, unit, wire_id) VALUES (1,"
	           " 'm1', 'u', 1)");
	exec_sql(s, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n"
	           " WHERE x < 1000) INSERT INTO readings (device, metric, ts, seq,"
	           " idx, value) SELECT 1, 1, 1700000000000 + x * 1000, x, 0, x"
	           " FROM n");
	/* 1000 rows: all of them, nothing more to say */
	char *out = ctl(url, 0, "readings --device dev-a --format table");
	cr_expect_eq(h_count(out, "\n"), 1 + 1000, "%s", out);
	cr_expect(!strstr(out, "more"), "%s", out);
	free(out);
	exec_sql(s, "INSERT INTO readings (device, metric, ts, seq, idx, value)"
	           " VALUES (1, 1, 1800000000000, 1001, 0, 1001)");
	store_close(s);
	/* 1001: the first 1000, and a line that says how to see the others */
	out = ctl(url, 0, "readings --device dev-a --format table");
	cr_expect_eq(h_count(out, "\n"), 1 + 1000 + 1, "%s", out);
	cr_expect(strstr(out, " 1000\n(the first 1000 rows: there are more; --limit N shows N,"),
	          "%s", out);
	cr_expect(!strstr(out, "1001"), "%s", out);
	free(out);
	expect_ctl(url, 0, "readings --device dev-a --format table --limit 1001", " 1001\n",
	           1 + 1001);
	expect_ctl(url, 0, "readings --device dev-a --format table --limit 5", " 5\n", 1 + 5);
	expect_ctl(url, 0, "readings --device dev-a", ",1001\n", 1 + 1001);
	expect_ctl(url, 0, "readings --device dev-a --format json", "\"seq\": 1001}", -1);
	/* out of memory as the table grows past 64 rows (6 cells of 8 bytes each); the shim is
	 * loaded ahead of a sanitizer runtime */
#define FAIL_REALLOC                                                                               \
	"LD_PRELOAD=%s OUTPOST_TEST_REALLOC_MAX=4096"                                              \
	" ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
	const char *fmts[] = {"--format table", "--format table --limit 1001"};
	for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
		char *cmd = h_strf(FAIL_REALLOC " %s/bridge/outpostctl --store=%s readings"
		                                " --device dev-a %s",
		                   OUTPOST_FAILREALLOC_LIB, h_build_dir(), url, fmts[i]);
		cr_expect_eq(h_sh(cmd, &out, 30), 1, "%s:\n%s", cmd, out);
		cr_expect_str_eq(out,
		                 "outpostctl: out of memory keeping the rows of the table: ask for"
		                 " fewer (--limit) or for --format csv, which keeps none\n");
		free(out);
		free(cmd);
	}
	/* what keeps no rows is not affected */
	char *cmd = h_strf(FAIL_REALLOC " %s/bridge/outpostctl --store=%s readings --device dev-a"
	                                " --format csv",
	                   OUTPOST_FAILREALLOC_LIB, h_build_dir(), url);
	cr_expect_eq(h_sh(cmd, &out, 30), 0, "%s:\n%s", cmd, out);
	cr_expect_eq(h_count(out, "\n"), 1 + 1001);
	free(out);
	free(cmd);
	free(url);
}

/* devices and gaps have no --limit: as a table (kept in memory) they too show the first
 * CTL_TABLE_ROWS rows and say when there are more; CSV and JSON stream all of them. */
Test(outpostctl, devices_and_gaps_tables_are_bounded, .timeout = 60)
{
	char *url = small_store("ctl-table-more");
	struct store *s = open_store(url);
	/* dev-a and 999 more devices; 1000 gaps of dev-a */
	exec_sql(s, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n"
	            " WHERE x < 999) INSERT INTO devices (device_id, state, created_at,"
	            " state_changed_at) SELECT printf('dev-b%04d', x), 'active', 1, 1 FROM n");
	exec_sql(s, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n"
	            " WHERE x < 1000) INSERT INTO gaps (device, reason, prev_seq, last_seq,"
	            " opened_at) SELECT 1, 'missing', 10 * x, 10 * x + 5, 1 FROM n");
	/* 1000 rows: all of them, nothing more to say */
	expect_ctl(url, 0, "devices", "\ndev-b0999 ", 1 + 1000);
	expect_ctl(url, 0, "gaps", "  10005  ", 1 + 1000);
	expect_ctl(url, 0, "gaps --device dev-a", "  10005  ", 1 + 1000);
	exec_sql(s, "INSERT INTO devices (device_id, state, created_at, state_changed_at)"
	            " VALUES ('dev-c', 'active', 1, 1)");
	exec_sql(s, "INSERT INTO gaps (device, reason, prev_seq, last_seq, opened_at)"
	            " VALUES (1, 'missing', 20000, 20005, 1)");
	store_close(s);
	/* 1001: the first 1000, and a line that says how to see the others */
	char *out = ctl(url, 0, "devices");
	cr_expect_eq(h_count(out, "\n"), 1 + 1000 + 1, "%s", out);
	cr_expect(strstr(out, "\n(the first 1000 rows: there are more; --state S shows those in"
	                      " state S, --format csv all of them)\n"),
	          "%s", out);
	cr_expect(strstr(out, "\ndev-b0999 ") && !strstr(out, "dev-c"), "%s", out);
	free(out);
	const char *gaps[] = {"gaps", "gaps --device dev-a"};
	for (size_t i = 0; i < 2; i++) {
		out = ctl(url, 0, "%s", gaps[i]);
		cr_expect_eq(h_count(out, "\n"), 1 + 1000 + 1, "%s", out);
		cr_expect(strstr(out, "  10005  ") && !strstr(out, "20005"), "%s", out);
		cr_expect(strstr(out, "\n(the first 1000 rows: there are more; "), "%s", out);
		cr_expect(!i == !!strstr(out, "--device ID shows one device's, --format csv all of"
		                              " them)\n"),
		          "%s", out);
		free(out);
	}
	/* CSV and JSON: every row */
	expect_ctl(url, 0, "devices --format csv", "\ndev-c,", 1 + 1001);
	expect_ctl(url, 0, "gaps --format csv", ",20005,", 1 + 1001);
	expect_ctl(url, 0, "gaps --device dev-a --format json", "\"last_seq\": 20005,",
	           1 + 1001 + 1);
	free(url);
}

/* A store the bridges have not migrated yet (an older schema), one migrated by a newer bridge,
 * and an empty database: outpostctl says so and leaves the store as it is. Migrating is the
 * bridges' business: older ones still running beside the store would lose columns. */
static void schema_not_current(const char *url)
{
	enum { OLD = STORE_SCHEMA_VERSION - 1, NEW = STORE_SCHEMA_VERSION + 1 };
	/* a store as the bridge of the version before left it, with a device */
	struct store *s = open_store(url);
	cr_assert_eq(store__migrate_upto(s, OLD, NULL, NULL), STORE_OK, "%s", store_errmsg(s));
	exec_sql(s, "INSERT INTO devices (device_id, state, created_at,"
	           " state_changed_at) VALUES ('dev-a', 'active', 1, 1)");
	store_close(s);
	char *older = h_strf("store schema %d is older than this outpostctl's %d: upgrade the"
	                     " bridge first",
	                     OLD, STORE_SCHEMA_VERSION);
	const char *cmds[] = {"devices", "device show dev-a", "device quarantine dev-a", "events",
	                      "task add --device dev-a --type ping"};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		expect_ctl(url, 1, cmds[i], older, 1);
	free(older);
	int version = 0;
	s = open_store(url);
	cr_expect_eq(store_schema_version(s, &version), STORE_OK, "%s", store_errmsg(s));
	cr_expect_eq(version, OLD, "outpostctl migrated the store");
	/* migrated by this version's bridge, then by a newer one */
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK, "%s", store_errmsg(s));
	char *sql = h_strf("INSERT INTO schema_migrations (version, applied_at) VALUES (%d, 0)",
	                   NEW);
	cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
	free(sql);
	store_close(s);
	char *newer = h_strf("store schema %d is newer than this outpostctl's %d: upgrade"
	                     " outpostctl",
	                     NEW, STORE_SCHEMA_VERSION);
	expect_ctl(url, 1, "devices", newer, 1);
	free(newer);
}

Test(outpostctl, a_store_of_another_schema_is_refused_not_migrated_sqlite, .timeout = 60)
{
	char *dir = h_tmpdir("ctl-schema"), *url = h_strf("sqlite:%s/outpost.db", dir);
	schema_not_current(url);
	free(url);
	/* an empty database: nothing created in it */
	url = h_strf("sqlite:%s/empty.db", dir);
	char *cmd = h_strf("sqlite3 %s/empty.db \"CREATE TABLE x (a)\"", dir), *out = NULL;
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	free(out);
	free(cmd);
	expect_ctl(url, 1, "devices", "has no Outpost schema: start outpost-bridge on it first", 1);
	cmd = h_strf("sqlite3 %s/empty.db .tables", dir);
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	cr_expect_str_eq(out, "x\n");
	free(out);
	free(cmd);
	free(url);
	free(dir);
}

Test(outpostctl, a_store_of_another_schema_is_refused_not_migrated_postgresql, .timeout = 120)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	schema_not_current(pg.url);
	cr_assert_eq(h_pg_sql(&pg, "CREATE DATABASE empty", NULL), 0);
	char *url = h_strf("postgresql://postgres@127.0.0.1:%d/empty", pg.port), *out = NULL;
	expect_ctl(url, 1, "devices", "has no Outpost schema: start outpost-bridge on it first", 1);
	char *cmd = h_strf("psql -XAtq \"%s\" -c \"SELECT count(*) FROM pg_tables WHERE"
	                   " schemaname = current_schema()\"",
	                   url);
	cr_expect_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	cr_expect_str_eq(out, "0\n");
	free(out);
	free(cmd);
	free(url);
	h_pg_free(&pg);
}

/* One "topic hex" line of a Birth of device id from the PKI-like directory dir (its
 * devices/<id>.crt, signed with devices/<id>.key), appended to the file at path. */
static void capture_birth(const char *path, const char *dir, const char *id)
{
	size_t blen, n;
	char *name = h_strf("devices/%s", id);
	uint8_t *body = h_birth_body(dir, id, 2, 0, &blen);
	uint8_t *env = h_seal(dir, name, WIRE_KIND_BIRTH, id, 1, body, blen, &n);
	FILE *f = fopen(path, "a");
	cr_assert_not_null(f);
	char *topic = h_strf("outpost/v1/%s/birth", id);
	capture_line(f, topic, env, n);
	free(topic);
	cr_assert_eq(fclose(f), 0);
	free(env);
	free(body);
	free(name);
}

/* decode --pki: the Birth of a device the PKI has no certificate for is judged by the
 * certificate it carries only if the PKI's CA issued it (a self-signed one made up for the id
 * is not trusted); and a PKI without crl.pem is said to check no revocation. */
Test(outpostctl, decode_checks_a_births_certificate_against_the_ca, .timeout = 120)
{
	char *url = small_store("ctl-decode-ca");
	/* dev-new: issued by the CA, not in the PKI's devices/; dev-forged: self-signed */
	char *issued =
	    h_pki_issue_dated("ctl-decode-issued", "dev-new", "20200101000000Z", "20991231000000Z");
	char *forged = h_tmpdir("ctl-decode-forged"), *out = NULL;
	char *cmd = h_strf("set -e; mkdir -p %s/devices; cd %s/devices;"
	                   " openssl genpkey -algorithm ed25519 -out dev-forged.key;"
	                   " openssl req -x509 -new -key dev-forged.key -subj /CN=dev-forged"
	                   " -days 3650 -out dev-forged.crt",
	                   forged, forged);
	cr_assert_eq(h_sh(cmd, &out, 60), 0, "%s", out);
	free(out);
	free(cmd);
	char *cap = h_strf("%s/capture.txt", forged);
	capture_birth(cap, forged, "dev-forged");
	capture_birth(cap, issued, "dev-new");

	out = ctl(url, 1, "decode --pki %s %s 2>&1", h_pki(), cap);
	char *forged_line = line_with(out, "birth  dev-forged  seq 1  ");
	char *new_line = line_with(out, "birth  dev-new  seq 1  ");
	cr_expect(forged_line &&
	              strstr(forged_line, "signature NOT TRUSTED (certificate in the birth: "),
	          "%s", out);
	cr_expect(new_line &&
	              strstr(new_line, "signature ok (certificate in the birth, issued by the CA)"),
	          "%s", out);
	cr_expect(!strstr(out, "crl.pem"), "%s", out);
	free(forged_line);
	free(new_line);
	free(out);
	/* without a CA the certificate is all there is: checked, and said to be unchained */
	out = ctl(url, 0, "decode %s", cap);
	cr_expect_eq(h_count(out, "signature ok (certificate in the birth, chain not checked)"), 2,
	             "%s", out);
	free(out);

	/* a PKI without its CRL: dev-revoked's messages pass, and decode says why */
	char *nocrl = h_tmpdir("ctl-decode-nocrl");
	cmd = h_strf("cp -a %s/. %s/ && rm %s/crl.pem", h_pki(), nocrl, nocrl);
	cr_assert_eq(h_sh(cmd, &out, 60), 0, "%s", out);
	free(out);
	free(cmd);
	char *cap2 = h_strf("%s/capture.txt", nocrl);
	capture_birth(cap2, h_pki(), "dev-revoked");
	out = ctl(url, 0, "decode --pki %s %s 2>&1", nocrl, cap2);
	char *warn = h_strf("outpostctl: decode: warning: --pki %s: no crl.pem there (No such file"
	                    " or directory): revocations are not checked\n",
	                    nocrl);
	cr_expect(strstr(out, warn) && strstr(out, "signature ok (dev-revoked.crt)"), "%s", out);
	free(out);
	free(warn);
	/* the PKI as it is: dev-revoked is revoked, nothing to warn about */
	out = ctl(url, 1, "decode --pki %s %s 2>&1", h_pki(), cap2);
	cr_expect(strstr(out, "signature NOT TRUSTED (dev-revoked.crt: ") &&
	              !strstr(out, "crl.pem"),
	          "%s", out);
	free(out);
	free(cap2);
	free(nocrl);
	free(cap);
	free(forged);
	free(issued);
	free(url);
}

/* One "topic hex" line, appended to path: a Birth for device id whose metrics are named
 * <prefix>1 and <prefix>2, signed with the key of signer (devices/<signer>.key of the PKI). */
static void capture_birth_signed_by(const char *path, const char *id, const char *prefix,
                                    const char *signer)
{
	size_t blen, n;
	char *name = h_strf("devices/%s", signer), *topic = h_strf("outpost/v1/%s/birth", id);
	uint8_t *body = h_birth_body_named(h_pki(), id, 2, 0, prefix, &blen);
	uint8_t *env = h_seal(h_pki(), name, WIRE_KIND_BIRTH, id, 1, body, blen, &n);
	FILE *f = fopen(path, "a");
	cr_assert_not_null(f);
	capture_line(f, topic, env, n);
	cr_assert_eq(fclose(f), 0);
	free(env);
	free(body);
	free(topic);
	free(name);
}

/* One "topic hex" line, appended to path: dev-a's Batch of seq 2 (1 row, metrics 1 and 2). */
static void capture_batch_of_dev_a(const char *path)
{
	struct h_simdev_opts o = {.pki = h_pki(), .id = "dev-a", .rows = 1, .cols = 2,
	                          .t0_ms = 1700000000000LL};
	size_t blen, n;
	uint8_t *body = h_batch_body(&o, 2, 1, &blen);
	uint8_t *env = h_seal(h_pki(), "devices/dev-a", WIRE_KIND_BATCH, "dev-a", 2, body, blen, &n);
	FILE *f = fopen(path, "a");
	cr_assert_not_null(f);
	capture_line(f, "outpost/v1/dev-a/telemetry", env, n);
	cr_assert_eq(fclose(f), 0);
	free(env);
	free(body);
}

/* A Birth whose signature fails names no metrics: dev-b's Envelope that claims to be dev-a's
 * Birth, renaming its metrics, is reported BAD, and dev-a's genuine batches that follow keep
 * the names of dev-a's own Birth (or are shown by id), with or without --pki. */
Test(outpostctl, decode_takes_no_metric_names_from_a_birth_whose_signature_fails, .timeout = 60)
{
	char *url = small_store("ctl-decode-forged-birth");
	char *dir = h_tmpdir("ctl-decode-forged-birth-cap");
	char *after = h_strf("%s/after.txt", dir), *alone = h_strf("%s/alone.txt", dir);
	capture_birth_signed_by(after, "dev-a", "m", "dev-a");
	capture_birth_signed_by(after, "dev-a", "evil", "dev-b");
	capture_batch_of_dev_a(after);
	capture_birth_signed_by(alone, "dev-a", "evil", "dev-b");
	capture_batch_of_dev_a(alone);
	const char *how[] = {"--pki", "--cert", ""};
	for (size_t i = 0; i < sizeof(how) / sizeof(how[0]); i++) {
		char *opt = !strcmp(how[i], "--pki")    ? h_strf("--pki %s", h_pki())
		            : !strcmp(how[i], "--cert") ? h_strf("--cert %s/devices/dev-a.crt", h_pki())
		                                        : h_strf("%s", "");
		char *out = ctl(url, 1, "decode %s %s 2>&1", opt, after);
		cr_expect_eq(h_count(out, "signature BAD ("), 1, "%s", out);
		cr_expect_eq(h_count(out, "metric names not used for dev-a's batches: signature not"
		                          " verified\n"),
		             1, "%s", out);
		cr_expect(strstr(out, " m1=") && strstr(out, " m2="), "%s:\n%s", opt, out);
		cr_expect(!strstr(out, "evil1=") && !strstr(out, "evil2="), "%s:\n%s", opt, out);
		free(out);
		out = ctl(url, 1, "decode %s %s 2>&1", opt, alone);
		cr_expect(strstr(out, " #1=") && strstr(out, " #2="), "%s:\n%s", opt, out);
		cr_expect(!strstr(out, "evil1=") && !strstr(out, "evil2="), "%s:\n%s", opt, out);
		free(out);
		free(opt);
	}
	free(alone);
	free(after);
	free(dir);
	free(url);
}

/* t with each "DIR" in it replaced by dir. Caller frees. */
static char *with_dir(const char *t, const char *dir)
{
	char *out = h_strf("%s", "");
	for (const char *p = t, *d; *p; p = d ? d + 3 : p + strlen(p)) {
		d = strstr(p, "DIR");
		char *next = h_strf("%s%.*s%s", out, (int)(d ? d - p : (ptrdiff_t)strlen(p)), p,
		                    d ? dir : "");
		free(out);
		out = next;
	}
	return out;
}

/* decode says why it cannot read its input or a certificate (a directory, a file missing or too
 * big, a FIFO), and never waits on a FIFO given as a certificate, or found in the PKI. */
Test(outpostctl, decode_says_why_it_cannot_read, .timeout = 120)
{
	char *url = small_store("ctl-decode-unreadable");
	char *dir = h_tmpdir("ctl-decode-unreadable-files"), *out = NULL;
	char *cmd = h_strf("set -e; cd %s; mkfifo fifo; head -c 9000 /dev/zero > big;"
	                   " cp -a %s pki; rm pki/devices/dev-a.crt; mkfifo pki/devices/dev-a.crt",
	                   dir, h_pki());
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	free(out);
	free(cmd);
	struct {
		const char *args, *said;
		int rc;
	} cases[] = {
	    {"decode DIR", "outpostctl: decode: cannot read DIR: Is a directory\n", 1},
	    {"decode --topic outpost/v1/dev-a/telemetry DIR",
	     "outpostctl: decode: cannot read DIR: Is a directory\n", 1},
	    {"decode --cert DIR/fifo -",
	     "outpostctl: decode: --cert DIR/fifo: cannot read it: not a regular file\n", 2},
	    {"decode --cert DIR/missing.crt -",
	     "outpostctl: decode: --cert DIR/missing.crt: cannot read it: No such file or"
	     " directory\n",
	     2},
	    {"decode --cert DIR -", "outpostctl: decode: --cert DIR: cannot read it: Is a directory\n",
	     2},
	    {"decode --cert DIR/big -",
	     "outpostctl: decode: --cert DIR/big: over 8192 bytes, larger than a certificate\n", 2},
	    /* a line break in a name is shown as one, not made a space (no such file 'a b') */
	    {"decode \"$(printf \"DIR/a\\nb\")\"",
	     "outpostctl: decode: cannot open DIR/a\\x0ab: No such file or directory\n", 1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *args = with_dir(cases[i].args, dir), *said = with_dir(cases[i].said, dir);
		char *full = h_strf("%s < /dev/null 2>&1", args);
		out = ctl(url, cases[i].rc, "%s", full);
		cr_expect_str_eq(out, said, "outpostctl %s", args);
		free(out);
		free(full);
		free(said);
		free(args);
	}
	/* the PKI's certificate of dev-a is a FIFO: none, and its Birth is judged by its own */
	char *cap = h_strf("%s/capture.txt", dir);
	capture_birth(cap, h_pki(), "dev-a");
	out = ctl(url, 0, "decode --pki %s/pki %s 2>&1", dir, cap);
	cr_expect(strstr(out, "signature ok (certificate in the birth, issued by the CA)"), "%s",
	          out);
	free(out);
	free(cap);
	free(dir);
	free(url);
}

/* decode prints whatever time a device sends: the ends of int64 (whose division into seconds
 * overflowed), the years RFC 3339 cannot write as "unix ms N", before 1970, and a reading at 0,
 * which is a time like any other (only an unset field of a message, 0, is "-"). */
Test(outpostctl, decode_prints_any_time_a_device_sends, .timeout = 60)
{
	static const struct {
		int64_t ms;
		const char *shown;
	} sent[] = {
	    {INT64_MIN, "sent unix ms -9223372036854775808  "},
	    {INT64_MAX, "sent unix ms 9223372036854775807  "},
	    {-1, "sent 1969-12-31T23:59:59.999Z  "},
	    {-1001, "sent 1969-12-31T23:59:58.999Z  "},
	    {0, "sent -  "},
	    {253402300799999LL, "sent 9999-12-31T23:59:59.999Z  "},
	    {253402300800000LL, "sent unix ms 253402300800000  "},
	    {-62167219200000LL, "sent 0000-01-01T00:00:00.000Z  "},
	    {-62167219200001LL, "sent unix ms -62167219200001  "},
	    {-61000000000000LL, "sent 0036-12-26T11:33:20.000Z  "},
	};
	enum { N = sizeof(sent) / sizeof(sent[0]) };
	char *url = small_store("ctl-decode-time");
	char *dir = h_tmpdir("ctl-decode-time-cap");
	char *cap = h_strf("%s/capture.txt", dir);
	FILE *f = fopen(cap, "w");
	cr_assert_not_null(f);
	/* batch 2 of rows at t0 + 2000 and t0 + 2010: at 0 and 10 ms after it */
	struct h_simdev_opts o = {
	    .pki = h_pki(), .id = "dev-a", .rows = 2, .cols = 1, .t0_ms = -2000};
	for (size_t i = 0; i < N; i++) {
		size_t blen, n;
		uint8_t *body = h_batch_body(&o, 2, 1, &blen);
		uint8_t *env = h_seal_at(h_pki(), "devices/dev-a", WIRE_KIND_BATCH, "dev-a", 2,
		                         sent[i].ms, body, blen, &n);
		capture_line(f, "outpost/v1/dev-a/telemetry", env, n);
		free(env);
		free(body);
	}
	cr_assert_eq(fclose(f), 0);
	char *out = ctl(url, 0, "decode --pki %s %s 2>&1", h_pki(), cap);
	cr_expect_eq(h_count(out, "signature ok (dev-a.crt)"), N, "%s", out);
	for (size_t i = 0; i < N; i++)
		cr_expect_eq(h_count(out, sent[i].shown), 1, "no '%s' in:\n%s", sent[i].shown, out);
	cr_expect_eq(h_count(out, "\n  1970-01-01T00:00:00.000Z #1="), N, "%s", out);
	cr_expect_eq(h_count(out, "\n  1970-01-01T00:00:00.010Z #1="), N, "%s", out);
	free(out);
	/* a stored reading at 0 is shown at 0 too, not as an empty time */
	struct store *s = open_store(url);
	exec_sql(s, "INSERT INTO metrics (device, name, unit, wire_id) VALUES (1, 'm1', 'u', 1)");
	exec_sql(s, "INSERT INTO readings (device, metric, ts, seq, idx, value) VALUES"
	            " (1, 1, 0, 1, 0, 5), (1, 1, -1, 1, 1, 4)");
	store_close(s);
	expect_ctl(url, 0, "readings --device dev-a",
	           "\ndev-a,m1,u,1969-12-31T23:59:59.999Z,4,1\n"
	           "dev-a,m1,u,1970-01-01T00:00:00.000Z,5,1\n",
	           3);
	free(cap);
	free(dir);
	free(url);
}

/* Blank lines before a capture's first line are passed over however many there are (past
 * 64 bytes of them the capture was read as one raw payload), and a line longer than the hex
 * of any envelope stops decode with an error rather than being read without a bound. */
Test(outpostctl, decode_passes_over_blank_lines_and_stops_at_a_line_too_long, .timeout = 60)
{
	enum { MAX_LINE = 2 * WIRE_MAX_ENVELOPE + 1024 };
	char *url = small_store("ctl-decode-lines");
	char *dir = h_tmpdir("ctl-decode-lines-cap");
	char *line = h_strf("%s/line.txt", dir), *cap = h_strf("%s/capture.txt", dir);
	capture_birth(line, h_pki(), "dev-a");
	/* 70 blank lines (and 30 of CR LF) before the Birth */
	char *cmd = h_strf("(for i in $(seq 70); do echo; done; for i in $(seq 30); do"
	                   " printf \"\\r\\n\"; done; cat %s) > %s",
	                   line, cap);
	char *out = NULL;
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	free(out);
	free(cmd);
	out = ctl(url, 0, "decode --pki %s %s 2>&1", h_pki(), cap);
	cr_expect(strstr(out, "birth  dev-a  seq 1  ") && strstr(out, "signature ok (dev-a.crt)"),
	          "%s", out);
	cr_expect(!strstr(out, "INVALID") && !strstr(out, "skipped"), "%s", out);
	free(out);
	/* blank lines alone: no input */
	cmd = h_strf("for i in $(seq 100); do echo; done > %s", cap);
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	free(out);
	free(cmd);
	char *args = h_strf("decode %s", cap);
	expect_ctl(url, 1, args, "outpostctl: decode: no input, nothing to decode\n", 1);
	free(args);
	/* the Birth, then a line of one byte too many: the Birth, then the error; a first line
	 * that long, as lines too (an odd number of hex digits in what is read of it) */
	for (int first = 0; first < 2; first++) {
		const char *topic =
		    first ? "outpost/v1/dev-ab/telemetry " : "outpost/v1/dev-a/telemetry ";
		FILE *f = fopen(cap, "w");
		cr_assert_not_null(f);
		if (!first) {
			char *birth = h_read_file(line, NULL);
			fputs(birth, f);
			free(birth);
		}
		fputs(topic, f);
		for (size_t i = strlen(topic); i < MAX_LINE + 1; i++)
			fputc('0', f);
		fputs("\n", f);
		capture_birth(cap, h_pki(), "dev-a"); /* not read: decode stopped */
		cr_assert_eq(fclose(f), 0);
		out = ctl(url, 1, "decode --pki %s %s 2>&1", h_pki(), cap);
		char *err = h_strf("outpostctl: decode: line %d is over %d bytes, longer than the"
		                   " 'topic hex' of any envelope: stopped there\n",
		                   first ? 1 : 2, MAX_LINE);
		cr_expect(strstr(out, err), "%s", out);
		cr_expect_eq(h_count(out, "birth  dev-a  seq 1  "), first ? 0 : 1, "%s", out);
		cr_expect(!strstr(out, "INVALID"), "%s", out);
		free(err);
		free(out);
	}
	/* a line of the greatest length is still read, as a line (not "topic hex": skipped) */
	cr_assert_eq(remove(cap), 0);
	capture_birth(cap, h_pki(), "dev-a");
	FILE *f = fopen(cap, "a");
	cr_assert_not_null(f);
	fputs("outpost/v1/dev-a/telemetry ", f);
	for (size_t i = strlen("outpost/v1/dev-a/telemetry "); i < MAX_LINE - 1; i++)
		fputc('0', f);
	fputs("x\n", f);
	cr_assert_eq(fclose(f), 0);
	capture_birth(cap, h_pki(), "dev-a");
	out = ctl(url, 0, "decode --pki %s %s 2>&1", h_pki(), cap);
	cr_expect_eq(h_count(out, "birth  dev-a  seq 1  "), 2, "%s", out);
	cr_expect(strstr(out, "1 line(s) were not 'topic hex' and were skipped"), "%s", out);
	free(out);
	free(cap);
	free(line);
	free(dir);
	free(url);
}

/* Asking a device for the state it is in is done, not a failure (scripts may repeat
 * themselves): releasing an active device too. Releasing one that is revoked, or unenrolled
 * (a release does not enrol), is refused. */
static void device_actions_repeat(const char *url)
{
	expect_ctl(url, 0, "device release dev-a", "dev-a: already active\n", 1);
	expect_ctl(url, 0, "device quarantine dev-a", "dev-a: active -> quarantined\n", 1);
	expect_ctl(url, 0, "device quarantine dev-a", "dev-a: already quarantined\n", 1);
	/* dev-a has no key: released to unenrolled, and releasing that is refused */
	expect_ctl(url, 0, "device release dev-a", "dev-a: quarantined -> unenrolled\n", 1);
	expect_ctl(url, 1, "device release dev-a", "dev-a is unenrolled: cannot release it", 1);
	expect_ctl(url, 0, "device revoke dev-a", "dev-a: unenrolled -> revoked\n", 1);
	expect_ctl(url, 0, "device revoke dev-a", "dev-a: already revoked\n", 1);
	expect_ctl(url, 1, "device release dev-a", "dev-a is revoked: cannot release it", 1);
	/* what was done already left no event */
	expect_ctl(url, 0, "events --device dev-a --format csv", NULL, 1 + 3);
}

Test(outpostctl, device_actions_repeat_sqlite, .timeout = 60)
{
	char *url = small_store("ctl-repeat");
	device_actions_repeat(url);
	free(url);
}

Test(outpostctl, device_actions_repeat_postgresql, .timeout = 120)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	seed_store(pg.url);
	device_actions_repeat(pg.url);
	h_pg_free(&pg);
}

/* Three metrics of dev-a (seeded by seed_store), 20 batches of 3 rows each, two batches per
 * timestamp, one value NaN (stored as NULL). */
static void fill_readings(const char *url)
{
	struct store *s = open_store(url);
	cr_assert_eq(store_begin(s), STORE_OK, "%s", store_errmsg(s));
	for (int m = 1; m <= 3; m++) {
		char *sql = h_strf("INSERT INTO metrics (device, name, unit, wire_id) SELECT id,"
		                   " 'm%d', 'u%d', %d FROM devices WHERE device_id = 'dev-a'",
		                   m, m, m);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
	}
	for (int i = 0; i < 20 * 3 * 3; i++) {
		int seq = 1 + i / 9, r = i / 3 % 3, m = 1 + i % 3;
		char value[32];
		snprintf(value, sizeof(value), "%d.%d%d", seq, r, m);
		char *sql = h_strf("INSERT INTO readings (device, metric, ts, seq, idx, value)"
		                   " SELECT m.device, m.id, %lld, %d, %d, %s FROM metrics m"
		                   " JOIN devices d ON d.id = m.device"
		                   " WHERE d.device_id = 'dev-a' AND m.name = 'm%d'",
		                   1700000000000LL + seq / 2 * 1000 + r * 10, seq, r * 3 + m - 1,
		                   seq == 7 && r == 1 && m == 2 ? "NULL" : value, m);
		cr_assert_eq(store_exec(s, sql), STORE_OK, "%s", store_errmsg(s));
		free(sql);
	}
	cr_assert_eq(store_commit(s), STORE_OK, "%s", store_errmsg(s));
	store_close(s);
}

/* The lines of all (a CSV with a header) that contain needle, after the header. */
static char *csv_lines_with(const char *all, const char *needle, int max)
{
	size_t cap = strlen(all) + 1, n = 0;
	char *out = calloc(1, cap);
	cr_assert_not_null(out);
	for (const char *p = all; *p && max > 0;) {
		size_t len = strcspn(p, "\n") + (p[strcspn(p, "\n")] ? 1 : 0);
		if (p == all || memmem(p, len, needle, strlen(needle))) {
			memcpy(out + n, p, len);
			n += len;
			if (p != all)
				max--;
		}
		p += len;
	}
	return out;
}

/* readings --metric M reads the metric's readings through the primary key, and answers as the
 * filter did: the readings of the device with M's name, in the same order, within the same
 * limits. Caller frees the three outputs kept for the other engine. */
static void readings_of_one_metric(const char *url, char **outs)
{
	fill_readings(url);
	char *all = ctl(url, 0, "readings --device dev-a --format csv");
	cr_expect_eq(h_count(all, "\n"), 1 + 20 * 3 * 3, "%s", all);
	char *want = csv_lines_with(all, ",m2,", 1000);
	char *got = ctl(url, 0, "readings --device dev-a --metric m2 --format csv");
	cr_expect_eq(h_count(got, "\n"), 1 + 20 * 3, "%s", got);
	cr_expect_str_eq(got, want);
	cr_expect(strstr(got, "\ndev-a,m2,u2,2023-11-14T22:13:23.010Z,nan,7\n"), "%s", got);
	free(want);
	free(all);
	outs[0] = got;
	/* a time range and a limit */
	const char *range = "--since 2023-11-14T22:13:23Z --until 2023-11-14T22:13:27.02Z";
	all = ctl(url, 0, "readings --device dev-a %s --format csv", range);
	want = csv_lines_with(all, ",m3,", 7);
	got = ctl(url, 0, "readings --device dev-a --metric m3 %s --limit 7 --format csv", range);
	cr_expect_eq(h_count(got, "\n"), 1 + 7, "%s", got);
	cr_expect_str_eq(got, want);
	free(want);
	free(all);
	outs[1] = got;
	outs[2] = ctl(url, 0, "readings --device dev-a --metric m1 %s --format json", range);
	cr_expect_eq(h_count(outs[2], "\"metric\": \"m1\""), 5 * 2 * 3 - 1 - 1, "%s", outs[2]);
}

Test(outpostctl, readings_of_one_metric_same_on_both_engines, .timeout = 120)
{
	char *lite[3], *pgo[3];
	char *url = small_store("ctl-metric");
	readings_of_one_metric(url, lite);
	free(url);
	struct h_pg pg = {0};
	h_pg_start(&pg);
	seed_store(pg.url);
	readings_of_one_metric(pg.url, pgo);
	for (int i = 0; i < 3; i++) {
		cr_expect_str_eq(pgo[i], lite[i]);
		free(pgo[i]);
		free(lite[i]);
	}
	/* PostgreSQL's plan of it (auto_explain, in the server's log): the primary key searched
	 * with the metric and the time range */
	size_t from = h_file_size(pg.log);
	char *explain = h_strf("%s?options=-c%%20session_preload_libraries%%3Dauto_explain"
	                       "%%20-c%%20auto_explain.log_min_duration%%3D0",
	                       pg.url);
	char *out = ctl(explain, 0, "readings --device dev-a --metric m2 --since @1700000003");
	free(out);
	char *log = NULL;
	for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(100)) {
		free(log);
		log = h_read_file_from(pg.log, from);
		if (log && strstr(log, "FROM readings r JOIN metrics m"))
			break;
	}
	const char *plan = log ? strstr(log, "FROM readings r JOIN metrics m") : NULL;
	cr_assert(plan, "no plan logged:\n%s", log);
	cr_expect(strstr(plan, "Index Cond: ((device = ") && strstr(plan, "AND (metric = ") &&
	              strstr(plan, "AND (ts >= "),
	          "%s", plan);
	free(log);
	free(explain);
	h_pg_free(&pg);
}
