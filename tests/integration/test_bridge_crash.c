/* test_bridge_crash.c - kill -9 (and SIGTERM) of outpost-bridge at random moments while devices
 * stream, repeated; after each restart nothing is missing and nothing is duplicated. And a commit
 * that fails (SQLite locked by another process, PostgreSQL stopped) sends no ack; the data
 * arrives once the database is back, and the same for a full disk (SQLite's, PostgreSQL's). What
 * the broker drops for an absent bridge is sent again; acks made while the broker is unreachable
 * go after the reconnect. While the store is locked, the pipeline stays within max_memory and
 * its queues. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "h_bridge.h"
#include "h_device.h"
#include "h_mqtt.h"
#include "h_pg.h"
#include "h_relay.h"
#include "h_simdev.h"
#include "harness.h"
#include "wire_cert.h"
#include "wire_env.h"
#include "wire_msg.h"

#define N_DEV 3
static const char *const ids[N_DEV] = {"dev-a", "dev-b", "dev-c"};

static void start_devices_window(struct h_broker *b, struct h_simdev_opts *o,
                                 struct h_simdev **d, int batches, int rate, int window)
{
	for (int i = 0; i < N_DEV; i++) {
		o[i] = (struct h_simdev_opts){.pki = h_pki(),
		                              .id = ids[i],
		                              .port = b->mqtts_port,
		                              .batches = batches,
		                              .rows = 10,
		                              .cols = 5,
		                              .window = window,
		                              .ack_timeout_ms = 1500,
		                              .poll_every = i == 1 ? 9 : 0,
		                              .rate = rate,
		                              .t0_ms = 1700000000000LL};
		d[i] = h_simdev_start(&o[i]);
	}
}

static void start_devices(struct h_broker *b, struct h_simdev_opts *o, struct h_simdev **d,
                          int batches, int rate)
{
	start_devices_window(b, o, d, batches, rate, 10);
}

static uint64_t total_acks(struct h_simdev **d)
{
	uint64_t n = 0;
	for (int i = 0; i < N_DEV; i++) {
		struct h_simdev_stats st;
		h_simdev_stats(d[i], &st);
		n += st.acks;
	}
	return n;
}

static void finish(struct h_bridge *br, struct h_simdev_opts *o, struct h_simdev **d)
{
	for (int i = 0; i < N_DEV; i++)
		cr_expect(h_simdev_wait(d[i], 90000), "%s: not everything acknowledged", ids[i]);
	for (int i = 0; i < N_DEV; i++) {
		struct h_simdev_stats st;
		h_simdev_stats(d[i], &st);
		cr_expect_eq(st.bad_acks, 0);
		h_check_simdev(br->store, d[i], &o[i]);
		h_simdev_stop(d[i]);
	}
}

static void kill_repeatedly(const char *store, const char *tag)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];
	unsigned seed = (unsigned)time(NULL);
	srand(seed);
	fprintf(stderr, "%s: random seed %u\n", tag, seed);

	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, store, tag);
	h_bridge_start(&br);
	start_devices(&b, o, d, 2500, 250);
	for (int k = 0; k < 5; k++) {
		uint64_t before = total_acks(d);
		/* A random moment once the devices are streaming again. */
		h_sleep_ms(300 + rand() % 1200);
		long long end = h_now_ms() + 10000;
		while (total_acks(d) == before && h_now_ms() < end)
			h_sleep_ms(10);
		cr_expect_gt(total_acks(d), before, "round %d: no progress before the kill", k);
		if (k % 2 == 0)
			h_bridge_kill(&br);
		else /* a clean stop mid-stream: finish the commit, publish its acks, exit 0 */
			cr_expect_eq(h_bridge_stop(&br), 0, "round %d: SIGTERM exit status", k);
		h_sleep_ms(rand() % 500); /* the broker queues meanwhile */
		h_bridge_start(&br);
	}
	finish(&br, o, d);
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
}

Test(bridge_crash, kill9_sqlite, .timeout = 240)
{
	kill_repeatedly(NULL, "crash-sqlite");
}

Test(bridge_crash, kill9_postgresql, .timeout = 300)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	kill_repeatedly(pg.url, "crash-pg");
	h_pg_free(&pg);
}

/* Until the devices have had 10 acks in all (at most 20 s). */
static void wait_streaming(struct h_simdev **d)
{
	long long end = h_now_ms() + 20000;
	while (total_acks(d) < 10 && h_now_ms() < end)
		h_sleep_ms(10);
	cr_assert_geq(total_acks(d), 10, "devices are not streaming");
}

/* While the database refuses commits, acks must stop; afterwards everything arrives. */
static void outage(struct h_bridge *br, struct h_simdev **d, void (*down)(void *),
                   void (*up)(void *), void *ctx)
{
	wait_streaming(d);
	int fails = h_bridge_log_count(br, "failed (attempt");
	down(ctx);
	long long end = h_now_ms() + 15000;
	int gone = -1;
	while (h_bridge_log_count(br, "failed (attempt") == fails && h_now_ms() < end &&
	       (gone = h_wait_exit(br->pid, 0)) == -1)
		h_sleep_ms(10);
	cr_assert_eq(gone, -1, "the bridge exited with status %d (log %s)", gone, br->log);
	cr_assert_gt(h_bridge_log_count(br, "failed (attempt"), fails, "no commit failed");
	/* A commit that started before may still land; after that, silence. */
	h_sleep_ms(300);
	uint64_t acks = total_acks(d);
	h_sleep_ms(2000);
	cr_expect_eq(total_acks(d), acks, "acks were published while commits failed");
	up(ctx);
}

/* What the bridge's stats lines said: the most it held queued and in memory, and the totals
 * of the last line. */
struct outage_stats {
	size_t queued, kib;
	unsigned long long stored, commits;
};

static void read_stats(const char *log, struct outage_stats *st)
{
	char *text = h_read_file(log, NULL);
	cr_assert_not_null(text, "%s", log);
	*st = (struct outage_stats){0};
	for (const char *p = text; (p = strstr(p, "; queued ")); p++) {
		size_t q, k;
		if (sscanf(p, "; queued %zu, %zu KiB in flight", &q, &k) == 2) {
			st->queued = q > st->queued ? q : st->queued;
			st->kib = k > st->kib ? k : st->kib;
		}
	}
	for (const char *p = text; (p = strstr(p, " stored ")); p++)
		sscanf(p, " stored %llu,", &st->stored);
	for (const char *p = text; (p = strstr(p, " commits ")); p++)
		sscanf(p, " commits %llu", &st->commits);
	free(text);
}

/* A bridge (with args) on SQLite, devices with window envelopes in flight each, and another
 * process holding the store's write lock for hold_s seconds (0: 5): no ack while it does,
 * and everything arrives afterwards. If st: what the bridge's stats lines said (pass
 * --stats-interval). */
static void locked_outage(const char *tag, const char *const *args, size_t n_args, int window,
                          int hold_s, struct outage_stats *st)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, tag);
	h_bridge_arg(&br, "--busy-timeout=200ms");
	for (size_t i = 0; i < n_args; i++)
		h_bridge_arg(&br, args[i]);
	h_bridge_start(&br);
	start_devices_window(&b, o, d, 1500, 150, window);
	struct h_sqlite_lock l = {h_strf("%s", br.store + strlen("sqlite:")), 0, hold_s};
	outage(&br, d, h_sqlite_lock, h_sqlite_unlock, &l);
	finish(&br, o, d);
	cr_expect_gt(h_bridge_log_count(&br, "store back"), 0);
	cr_expect_eq(h_bridge_stop(&br), 0);
	if (st)
		read_stats(br.log, st);
	free(l.db);
	h_bridge_free(&br);
	h_broker_free(&b);
}

Test(bridge_failure, sqlite_locked_no_ack_then_recovers, .timeout = 180)
{
	locked_outage("fail-sqlite", NULL, 0, 10, 0, NULL);
}

/* While the store is locked, the pipeline holds at most max_memory of messages (raw and
 * decoded, here 1 MiB against 150 messages that would take more) and intake waits: the
 * broker queues the rest. */
Test(bridge_failure, max_memory_bounds_the_pipeline_while_the_store_is_locked, .timeout = 180)
{
	const char *const args[] = {"--stats-interval=200ms", "--workers=1", "--max-memory=1MiB"};
	struct outage_stats st;
	locked_outage("fail-memory", args, 3, 50, 8, &st);
	cr_expect_leq(st.kib, 1024, "%zu KiB in flight, max_memory 1 MiB", st.kib);
	cr_expect_geq(st.kib, 768, "the test did not fill the pipeline: at most %zu KiB", st.kib);
}

/* ... and the queues take at most queue_depth messages per verifier plus writer_queue
 * verified ones (besides the message each verifier and the writer's group hold): the options
 * reach the queues, and intake waits when they are full. */
Test(bridge_failure, the_queues_bound_the_pipeline_while_the_store_is_locked, .timeout = 180)
{
	const char *const args[] = {"--stats-interval=200ms", "--workers=1", "--queue-depth=2",
	                            "--writer-queue=3"};
	struct outage_stats st;
	locked_outage("fail-queues", args, 4, 50, 8, &st);
	cr_expect_leq(st.queued, 5, "%zu messages queued, bound 2 + 3", st.queued);
	cr_expect_geq(st.queued, 4, "the test did not fill the queues: at most %zu", st.queued);
}

/* group_max_readings bounds a transaction: at 1, each commit takes one message however many
 * are queued (here the backlog of a locked store), so there are as many commits as envelopes
 * stored. With the default the backlog goes in a few. */
Test(bridge_failure, group_max_readings_bounds_each_transaction, .timeout = 180)
{
	const char *const args[] = {"--stats-interval=200ms", "--group-max-readings=1"};
	struct outage_stats st;
	locked_outage("fail-group", args, 2, 50, 0, &st);
	cr_expect_geq(st.queued, 20, "no backlog to group: at most %zu queued", st.queued);
	cr_expect_gt(st.stored, 0);
	cr_expect_geq(st.commits, st.stored, "%llu commits for %llu envelopes", st.commits,
	              st.stored);
}

/* Acks of a commit made while the bridge cannot reach the broker (libmosquitto answers the
 * publish with NO_CONN and keeps it) go out after the reconnect: the device, which would not
 * send again for a minute, has them within seconds of the broker being reachable. */
Test(bridge_failure, acks_made_while_the_broker_is_unreachable_go_after_the_reconnect,
     .timeout = 120)
{
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, h_pki());
	struct h_relay *relay = h_relay_start(b.internal_port);
	char *port = h_strf("--broker-port=%d", h_relay_port(relay));
	h_bridge_init(&br, &b, NULL, "fail-noconn");
	h_bridge_arg(&br, port);
	h_bridge_arg(&br, "--busy-timeout=200ms");
	h_bridge_start(&br);
	struct h_sqlite_lock l = {h_strf("%s", br.store + strlen("sqlite:")), 0, 15};
	h_sqlite_lock(&l); /* the group waits for the store */
	struct h_simdev_opts o = {.pki = h_pki(), .id = "dev-a", .port = b.mqtts_port, .batches = 5,
	                          .rows = 2, .cols = 2, .window = 10, .ack_timeout_ms = 60000,
	                          .t0_ms = 1700000000000LL};
	struct h_simdev *d = h_simdev_start(&o);
	cr_assert(h_log_wait(br.log, "failed (attempt", 1, 10000), "no commit waited: %s", br.log);
	h_relay_down(relay, true);
	cr_assert(h_log_wait(br.log, "disconnected from the broker", 1, 10000), "%s", br.log);
	cr_assert_eq(h_store_i64(br.store, "SELECT COUNT(*) FROM envelopes", 0), 0,
	             "committed before the broker was unreachable");
	long long end = h_now_ms() + 30000;
	while (h_store_i64(br.store, "SELECT COUNT(*) FROM envelopes", 0) < 5 && h_now_ms() < end)
		h_sleep_ms(50);
	cr_assert_eq(h_store_i64(br.store, "SELECT COUNT(*) FROM envelopes", 0), 5,
	             "the group was not committed while the broker was unreachable");
	h_sqlite_unlock(&l);
	h_sleep_ms(1000);
	struct h_simdev_stats st;
	h_simdev_stats(d, &st);
	cr_expect_eq(st.acks, 0, "an ack reached the device while the broker was unreachable");
	cr_expect_eq(h_bridge_log_count(&br, "connected to"), 1, "the bridge reconnected early");
	h_relay_down(relay, false);
	cr_expect(h_simdev_wait(d, 20000), "the acks never arrived");
	/* the relay closed every connection mid-handshake for 15 s and more: the broker away,
	 * not refusing, so tried every 1..5 s (before, 0.5 s doubling to 30 s: an ack was late
	 * by up to 30 s, and this test failed when the relay came back just after an attempt) */
	cr_expect_eq(h_bridge_log_count(&br, "retrying in 8000 ms"), 0, "backed off: %s", br.log);
	cr_expect_gt(h_bridge_log_count(&br, "unexpected eof"), 0, "the relay refused otherwise");
	h_simdev_stats(d, &st);
	cr_expect_eq(st.bad_acks, 0);
	cr_expect_eq(st.resent, 0, "the device sent again: the acks came by another way");
	h_check_simdev(br.store, d, &o);
	h_simdev_stop(d);
	cr_expect_eq(h_bridge_stop(&br), 0);
	free(l.db);
	free(port);
	h_bridge_free(&br);
	h_relay_free(relay);
	h_broker_free(&b);
}

static void pg_down(void *ctx)
{
	h_pg_stop(ctx);
}

static void pg_up(void *ctx)
{
	h_pg_start(ctx);
}

/* A throwaway PostgreSQL, a broker and a bridge on that database (with one extra argument). */
static void pg_stack(struct h_pg *pg, struct h_broker *b, struct h_bridge *br, const char *tag,
                     const char *arg)
{
	h_pg_start(pg);
	h_broker_up(b, h_pki());
	h_bridge_init(br, b, pg->url, tag);
	if (arg)
		h_bridge_arg(br, arg);
	h_bridge_start(br);
}

Test(bridge_failure, postgresql_down_no_ack_then_recovers, .timeout = 240)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_pg pg = {0};
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];
	pg_stack(&pg, &b, &br, "fail-pg", NULL);
	start_devices(&b, o, d, 1500, 150);
	outage(&br, d, pg_down, pg_up, &pg);
	finish(&br, o, d);
	cr_expect_gt(h_bridge_log_count(&br, "store back"), 0);
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
	h_pg_free(&pg);
}

/* PostgreSQL's disk: the readings table and its index on a tablespace of their own, on the
 * server's small tmpfs (h_pg small_disk_mb), which a filler file fills up. */
static void pg_disk_full(void *ctx)
{
	struct h_pg *pg = ctx;
	char *cmd = h_strf("dd if=/dev/zero of=%s/small/filler bs=64k 2>/dev/null", pg->dir);
	cr_assert_eq(h_pg_in_server_ns(pg, cmd), 1, "dd did not run out of space");
	free(cmd);
	cmd = h_strf("test -s %s/small/filler", pg->dir);
	cr_assert_eq(h_pg_in_server_ns(pg, cmd), 0, "no filler on the server's small disk");
	free(cmd);
}

static void pg_disk_back(void *ctx)
{
	struct h_pg *pg = ctx;
	char *cmd = h_strf("rm %s/small/filler", pg->dir);
	cr_assert_eq(h_pg_in_server_ns(pg, cmd), 0);
	free(cmd);
}

/* PostgreSQL's disk fills up under the readings (it refuses to extend their files: disk_full):
 * no ack goes out while commits fail, and once there is room everything arrives. Root only: the
 * server gets a small filesystem of its own for the tablespace. */
Test(bridge_failure, postgresql_disk_full_no_ack_then_recovers, .timeout = 240)
{
	if (getuid() != 0 || h_sh("unshare -m --propagation private true && command -v nsenter",
	                          NULL, 10) != 0)
		cr_skip_test("a small filesystem for PostgreSQL needs root, unshare -m and nsenter");
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_pg pg = {.small_disk_mb = 64}; /* ~30 MB of readings go in */
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];
	pg_stack(&pg, &b, &br, "fail-pgdisk", NULL);
	char *out = NULL, *sql = h_strf("CREATE TABLESPACE small LOCATION \\$\\$%s/small\\$\\$",
	                                pg.dir);
	cr_assert_eq(h_pg_sql(&pg, sql, &out), 0, "%s", out ? out : "");
	free(out);
	cr_assert_eq(h_pg_sql(&pg, "ALTER TABLE readings SET TABLESPACE small", &out), 0, "%s", out);
	free(out);
	cr_assert_eq(h_pg_sql(&pg, "ALTER INDEX readings_pkey SET TABLESPACE small", &out), 0, "%s",
	             out);
	free(out);
	free(sql);
	start_devices(&b, o, d, 1500, 150);
	outage(&br, d, pg_disk_full, pg_disk_back, &pg);
	finish(&br, o, d);
	cr_expect_gt(h_bridge_log_count(&br, "database full: COPY: ERROR:  could not extend file"), 0,
	             "the commits did not fail for want of space: %s", br.log);
	cr_expect_eq(h_bridge_log_count(&br, "message dropped"), 0,
	             "a full disk was taken for a message the store refuses: %s", br.log);
	cr_expect_gt(h_bridge_log_count(&br, "store back"), 0);
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
	h_pg_free(&pg);
}

/* A full disk, as the kernel shows it to one process: writes past `fsize` bytes of any file fail
 * (EFBIG, and SIGXFSZ, which the bridge ignores). 4096: no file of the store can grow or change
 * past its first page. Only the soft limit moves (raising a hard one needs privileges); back to
 * the hard limit, unlimited, lifts it. */
static void fsize_limit(pid_t pid, rlim_t fsize)
{
	struct rlimit r;
	cr_assert_eq(prlimit(pid, RLIMIT_FSIZE, NULL, &r), 0, "prlimit(%d): %m", (int)pid);
	cr_assert_eq(r.rlim_max, RLIM_INFINITY, "the test's file size limit is not unlimited");
	r.rlim_cur = fsize;
	cr_assert_eq(prlimit(pid, RLIMIT_FSIZE, &r, NULL), 0, "prlimit(%d): %m", (int)pid);
}

static void disk_full(void *ctx)
{
	fsize_limit(((struct h_bridge *)ctx)->pid, 4096);
}

static void disk_back(void *ctx)
{
	struct h_bridge *br = ctx;
	cr_assert_eq(h_wait_exit(br->pid, 0), -1, "the bridge exited with the disk full");
	fsize_limit(br->pid, RLIM_INFINITY);
}

Test(bridge_failure, sqlite_disk_full_no_ack_then_recovers, .timeout = 180)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "fail-disk");
	h_bridge_log_via_pipe(&br); /* its log is not on the full disk */
	h_bridge_start(&br);
	start_devices(&b, o, d, 1500, 150);
	outage(&br, d, disk_full, disk_back, &br);
	finish(&br, o, d);
	cr_expect_gt(h_bridge_log_count(&br, "store back"), 0);
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
}

/* The bridge is away long enough for the broker to drop what it queues for the bridge's
 * session (max_queued_bytes, made small here): nothing was acknowledged, so the devices send it
 * again, and once the bridge is back everything is stored, exactly once. */
Test(bridge_failure, what_the_broker_drops_for_an_absent_bridge_is_sent_again, .timeout = 180)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];
	cr_assert_eq(setenv("OUTPOST_BROKER_MAX_QUEUED_BYTES", "16384", 1), 0);
	h_broker_up(&b, h_pki());
	unsetenv("OUTPOST_BROKER_MAX_QUEUED_BYTES");
	h_bridge_init(&br, &b, NULL, "fail-queue");
	h_bridge_start(&br);
	start_devices(&b, o, d, 600, 100);
	wait_streaming(d);
	cr_assert_eq(h_bridge_stop(&br), 0);
	cr_assert(h_log_wait(b.log, "Outgoing messages are being dropped", 1, 20000),
	          "the broker never dropped a message for the absent bridge: %s", b.log);
	h_sleep_ms(1000);
	h_bridge_start(&br);
	finish(&br, o, d);
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
}

/* After a PostgreSQL restart the writer reconnects at its next BEGIN; the device registry reads
 * outside transactions and must reconnect too, or a device it has not cached (here one that
 * first appears after the restart) is dropped unjudged: never enrolled, never acknowledged. */
Test(bridge_failure, postgresql_restart_then_a_new_device_enrols, .timeout = 240)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_pg pg = {0};
	pg_stack(&pg, &b, &br, "pg-restart-reader", NULL);

	struct h_simdev_opts oa = {.pki = h_pki(), .id = "dev-a", .port = b.mqtts_port,
	                           .batches = 20, .rows = 2, .cols = 2, .window = 5,
	                           .ack_timeout_ms = 1500, .rate = 20, .t0_ms = 1700000000000LL};
	struct h_simdev *a = h_simdev_start(&oa);
	cr_assert(h_simdev_wait(a, 30000), "dev-a before the restart");
	h_simdev_stop(a);

	h_pg_stop(&pg); /* maintenance, a failover */
	h_sleep_ms(500);
	h_pg_start(&pg);

	struct h_simdev_opts ob = oa;
	ob.id = "dev-b";
	struct h_simdev *d = h_simdev_start(&ob);
	cr_expect(h_simdev_wait(d, 30000), "dev-b (new after the restart) never got its acks");
	cr_expect_eq(h_store_i64(pg.url,
	                         "SELECT COUNT(*) FROM devices WHERE device_id = 'dev-b' AND"
	                         " pubkey IS NOT NULL",
	                         0),
	             1, "dev-b never enrolled");
	h_simdev_stop(d);
	h_bridge_stop(&br);
	h_bridge_free(&br);
	h_broker_free(&b);
	h_pg_free(&pg);
}

/* A stop while the database is down keeps to shutdown_timeout: what is still queued then is
 * given up (not acknowledged: the devices resend it), instead of each message waiting out its
 * store retries (2 s per message of a device the bridge has not cached, in the verifiers). */
Test(bridge_failure, a_stop_with_the_store_down_keeps_to_shutdown_timeout, .timeout = 180)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_pg pg = {0};
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];
	pg_stack(&pg, &b, &br, "stop-store-down", "--shutdown-timeout=1s");
	h_pg_stop(&pg);
	/* devices the bridge has never seen: each message needs the database to be judged */
	start_devices(&b, o, d, 200, 100);
	long long end = h_now_ms() + 20000;
	while (h_bridge_log_count(&br, "commit of") == 0 && h_now_ms() < end)
		h_sleep_ms(50);
	h_sleep_ms(2000); /* every device's window (10) is queued by now */
	long long t0 = h_now_ms();
	int rc = h_bridge_stop(&br);
	long long took = h_now_ms() - t0;
	/* 1 s, then at most one store retry in progress (2 s) and the MQTT flush */
	cr_expect_lt(took, 8000, "the stop took %lld ms (shutdown_timeout 1 s; log %s)", took, br.log);
	cr_expect_eq(rc, 1, "the exit status says that messages were given up");
	cr_expect_gt(h_bridge_log_count(&br, "shutdown: gave up on"), 0, "log %s", br.log);
	cr_expect_eq(total_acks(d), 0, "nothing was acknowledged");
	for (int i = 0; i < N_DEV; i++)
		h_simdev_stop(d[i]);
	h_bridge_free(&br);
	h_broker_free(&b);
	h_pg_free(&pg);
}

/* Another session takes table in ACCESS EXCLUSIVE mode and keeps it for 60 s (psql, its output
 * in *plog, caller frees); returns its pid once the lock is held. */
static pid_t hold_table_lock(const struct h_pg *pg, const char *table, const char *log,
                             char **plog)
{
	char port[16], *sql = h_strf("BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; "
	                             "SELECT pg_sleep(60); COMMIT", table);
	snprintf(port, sizeof(port), "%d", pg->port);
	char *const argv[] = {"psql", "-X", "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
	                      "-d", "postgres", "-c", sql, NULL};
	*plog = h_strf("%s.psql", log);
	pid_t holder = h_spawn(argv, NULL, *plog);
	char *held = h_strf("SELECT COUNT(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock'"
	                    " AND granted AND relation = '%s'::regclass", table);
	long long end = h_now_ms() + 20000;
	while (h_store_i64(pg->url, held, 0) < 1 && h_now_ms() < end)
		h_sleep_ms(100);
	free(held);
	free(sql);
	return holder;
}

/* Whether a session waits on a lock within 20 s. */
static bool lock_waited_on(const struct h_pg *pg)
{
	long long end = h_now_ms() + 20000;
	while (h_now_ms() < end) {
		h_sleep_ms(100);
		if (h_store_i64(pg->url, "SELECT COUNT(*) FROM pg_locks WHERE NOT granted", 0) >= 1)
			return true;
	}
	return false;
}

/* A stop while another PostgreSQL session holds a lock the writer waits for (an operator's
 * transaction: no lock_timeout by default) keeps to shutdown_timeout: past it the writer's
 * statement is cancelled, also while the verifiers wait for room in the writer's full queue.
 * Before, the stop waited as long as the lock was held. */
Test(bridge_failure, a_stop_with_the_writer_waiting_on_a_lock_keeps_to_shutdown_timeout,
     .timeout = 180)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_pg pg = {0};
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];
	h_pg_start(&pg);
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, pg.url, "stop-locked");
	h_bridge_arg(&br, "--shutdown-timeout=1s");
	/* small queues: the verifiers wait on the writer's queue, full, when the stop comes */
	h_bridge_arg(&br, "--writer-queue=3");
	h_bridge_arg(&br, "--queue-depth=2");
	h_bridge_start(&br);
	start_devices(&b, o, d, 400, 20);
	long long end = h_now_ms() + 30000;
	while (total_acks(d) < 3 && h_now_ms() < end)
		h_sleep_ms(50);
	cr_assert_geq(total_acks(d), 3, "nothing acknowledged before the lock (log %s)", br.log);
	char *plog = NULL;
	pid_t holder = hold_table_lock(&pg, "envelopes", br.log, &plog);
	cr_assert(lock_waited_on(&pg), "the writer never waited on the lock (log %s, %s)", br.log,
	          plog);
	h_sleep_ms(1000); /* the queues fill up behind it */
	long long t0 = h_now_ms();
	int rc = h_bridge_stop(&br);
	long long took = h_now_ms() - t0;
	/* 1 s, one cancel, and the MQTT flush; before, the 60 s lock (h_bridge_stop kills at 30) */
	cr_expect_lt(took, 10000, "the stop took %lld ms (shutdown_timeout 1 s; log %s)", took,
	             br.log);
	cr_expect_eq(rc, 1, "the exit status says that messages were given up (log %s)", br.log);
	cr_expect_gt(h_bridge_log_count(&br, "cancelling the statements"), 0, "log %s", br.log);
	h_stop(holder, 5000);
	for (int i = 0; i < N_DEV; i++)
		h_simdev_stop(d[i]);
	free(plog);
	h_bridge_free(&br);
	h_broker_free(&b);
	h_pg_free(&pg);
}

/* The same with the lock on the devices table: the verifiers wait in the registry's read for
 * devices the bridge has not seen yet (started after the lock), the writer waits for them.
 * Past shutdown_timeout the registry's read is cancelled too, and the devices' messages are
 * dropped unjudged. Before, the stop waited as long as the lock was held. */
Test(bridge_failure, a_stop_with_a_registry_read_waiting_on_a_lock_keeps_to_shutdown_timeout,
     .timeout = 180)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_pg pg = {0};
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];
	h_pg_start(&pg);
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, pg.url, "stop-registry-locked");
	h_bridge_arg(&br, "--shutdown-timeout=1s");
	h_bridge_start(&br);
	char *plog = NULL;
	pid_t holder = hold_table_lock(&pg, "devices", br.log, &plog);
	start_devices(&b, o, d, 400, 20);
	cr_assert(lock_waited_on(&pg), "the registry never waited on the lock (log %s, %s)", br.log,
	          plog);
	h_sleep_ms(1000);
	cr_expect_eq(total_acks(d), 0, "acknowledged through the lock (log %s)", br.log);
	long long t0 = h_now_ms();
	h_bridge_stop(&br);
	long long took = h_now_ms() - t0;
	/* 1 s, a cancel, and the MQTT flush; before, the 60 s lock (h_bridge_stop kills at 30) */
	cr_expect_lt(took, 10000, "the stop took %lld ms (shutdown_timeout 1 s; log %s)", took,
	             br.log);
	cr_expect_gt(h_bridge_log_count(&br, "cancelling the statements"), 0, "log %s", br.log);
	h_stop(holder, 5000);
	for (int i = 0; i < N_DEV; i++)
		h_simdev_stop(d[i]);
	free(plog);
	h_bridge_free(&br);
	h_broker_free(&b);
	h_pg_free(&pg);
}

/* Whether a session of application app waits for a synchronous standby (SyncRep) within 20 s. */
static bool syncrep_waited_on(const struct h_pg *pg, const char *app)
{
	char *sql = h_strf("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
	                   " AND application_name = '%s'",
	                   app);
	bool waits = false;
	long long end = h_now_ms() + 20000;
	while (!waits && h_now_ms() < end) {
		h_sleep_ms(100);
		waits = h_store_i64(pg->url, sql, 0) >= 1;
	}
	free(sql);
	return waits;
}

/* From now on every COMMIT of a transaction that wrote waits for a synchronous standby named
 * ghost, which never comes. Returns once that is in force (the checkpointer learns of it after
 * the reload): a probe (psql creating a table, its output in <log>.probe) waits in SyncRep, is
 * cancelled, and reports success with a mere warning, the case the bridge must not take for a
 * commit. */
static void ghost_standby_on(struct h_pg *pg, const char *log)
{
	char *out = NULL;
	cr_assert_eq(h_pg_sql(pg, "ALTER SYSTEM SET synchronous_standby_names = ghost", &out), 0,
	             "%s", out);
	free(out);
	cr_assert_eq(h_pg_sql(pg, "SELECT pg_reload_conf()", &out), 0, "%s", out);
	free(out);
	char port[16], *plog = h_strf("%s.probe", log);
	snprintf(port, sizeof(port), "%d", pg->port);
	char *const argv[] = {"psql", "-X", "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
	                      "-d", "postgres", "-c", "CREATE TABLE syncrep_probe (x int)", NULL};
	pid_t probe = h_spawn(argv, NULL, plog);
	cr_assert(syncrep_waited_on(pg, "psql"), "no COMMIT waits for the standby (%s)", plog);
	/* OFFSET 0: the waiter is chosen before anything is cancelled (not this session) */
	cr_assert_eq(h_store_i64(pg->url,
	                         "SELECT COUNT(*) FROM (SELECT pid FROM pg_stat_activity WHERE"
	                         " wait_event = 'SyncRep' AND application_name = 'psql' OFFSET 0) w"
	                         " WHERE pg_cancel_backend(w.pid)",
	                         0),
	             1);
	cr_assert_eq(h_wait_exit(probe, 10000), 0, "the cancelled probe failed (%s)", plog);
	cr_assert_gt(h_count_in_file(plog, "canceling wait for synchronous replication"), 0,
	             "no warning from the cancelled COMMIT (%s)", plog);
	free(plog);
}

static void ghost_standby_off(struct h_pg *pg)
{
	char *out = NULL;
	cr_assert_eq(h_pg_sql(pg, "ALTER SYSTEM RESET synchronous_standby_names", &out), 0, "%s",
	             out);
	free(out);
	cr_assert_eq(h_pg_sql(pg, "SELECT pg_reload_conf()", &out), 0, "%s", out);
	free(out);
	cr_assert_eq(h_store_wait_i64(pg->url,
	                              "SELECT COUNT(*) FROM pg_settings WHERE name ="
	                              " 'synchronous_standby_names' AND setting = ''",
	                              H_EQUAL, 1, 10000),
	             1, "synchronous_standby_names is still set");
}

/* Messages on the ack topic c subscribed, for at most ms: 1 as soon as an ack to dev-a signed
 * by the bridge covers seq (Ack.upto or a range), else 0. *n counts every message received. */
static int acked(struct h_mqtt *c, uint64_t seq, int ms, int *n)
{
	char *path = h_strf("%s/bridge.crt", h_pki()), *pem = NULL;
	size_t pem_len;
	struct wire_cert_info ci;
	cr_assert_eq(wire_cert_read(path, &pem, &pem_len), 0, "%s", path);
	cr_assert_eq(wire_cert_parse(pem, pem_len, &ci, NULL), 0, "%s", path);
	free(pem);
	free(path);
	int covered = 0;
	long long end = h_now_ms() + ms;
	while (!covered && h_now_ms() < end) {
		char *topic = NULL, *payload = NULL;
		size_t len = 0;
		if (h_mqtt_recv(c, &topic, &payload, &len, (int)(end - h_now_ms())) != 1)
			break;
		(*n)++;
		struct wire_env e;
		Outpost__Ack *a = NULL;
		if (!strcmp(topic, "outpost/v1/dev-a/ack") &&
		    !wire_env_decode((const uint8_t *)payload, len, &e, NULL) &&
		    e.kind == WIRE_KIND_ACK && !strcmp(e.device_id, "dev-a") &&
		    !wire_env_verify(&e, &ci.key) &&
		    !wire_ack_decode(e.body, e.body_len, &a, NULL)) {
			covered = a->upto >= seq;
			for (size_t i = 0; i < a->n_ranges; i++)
				covered |= a->ranges[i]->first <= seq && seq <= a->ranges[i]->last;
			wire_msg_free(a);
		}
		free(topic);
		free(payload);
	}
	return covered;
}

/* A stop while the writer's COMMIT waits for a synchronous standby (one that never connects):
 * past shutdown_timeout the canceller's cancel ends the wait with a mere warning, "The
 * transaction has already committed locally, but might not have been replicated to the
 * standby", and COMMIT succeeds. A transaction during which a cancel was sent counts as not
 * committed: the stop keeps to its bound, no ack goes out for the batch, though this server
 * has it (a failover could promote a standby that has not), and the device's resend of the
 * same batch to the next bridge is acknowledged and found stored, once. */
Test(bridge_failure, a_stop_cancelling_a_commit_that_waits_for_a_standby_acknowledges_nothing,
     .timeout = 180)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_pg pg = {0};
	h_pg_start(&pg);
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, pg.url, "stop-syncrep");
	h_bridge_arg(&br, "--shutdown-timeout=1s");
	h_bridge_arg(&br, "--health-interval=1h"); /* the COMMIT that waits is the batch's */
	h_bridge_start(&br);
	char *uri = h_strf("ssl://127.0.0.1:%d", b.mqtts_port);
	struct h_mqtt *dev = h_mqtt_connect(uri, h_pki(), "devices/dev-a", "dev-a", NULL);
	cr_assert_not_null(dev, "dev-a cannot connect");
	cr_assert_eq(h_mqtt_sub(dev, "outpost/v1/dev-a/ack", 1), 1);
	size_t blen, n_birth, n_batch;
	uint8_t *body = h_birth_body(h_pki(), "dev-a", 3, 0, &blen);
	uint8_t *birth =
	    h_seal(h_pki(), "devices/dev-a", WIRE_KIND_BIRTH, "dev-a", 1, body, blen, &n_birth);
	free(body);
	cr_assert_eq(h_mqtt_pub(dev, "outpost/v1/dev-a/birth", birth, n_birth, 1, 0), 0);
	cr_assert_eq(h_store_wait_i64(pg.url,
	                              "SELECT COUNT(*) FROM devices WHERE device_id = 'dev-a' AND"
	                              " state = 'active'",
	                              H_EQUAL, 1, 10000),
	             1, "dev-a was not enrolled (log %s)", br.log);

	ghost_standby_on(&pg, br.log);
	struct h_simdev_opts so = {.rows = 2, .cols = 3, .t0_ms = 1700000000000LL};
	body = h_batch_body(&so, 2, 0, &blen);
	uint8_t *batch =
	    h_seal(h_pki(), "devices/dev-a", WIRE_KIND_BATCH, "dev-a", 2, body, blen, &n_batch);
	free(body);
	cr_assert_eq(h_mqtt_pub(dev, "outpost/v1/dev-a/telemetry", batch, n_batch, 1, 0), 0);
	cr_assert(syncrep_waited_on(&pg, "outpost-bridge"),
	          "the writer's COMMIT never waited for the standby (log %s)", br.log);
	long long t0 = h_now_ms();
	int rc = h_bridge_stop(&br);
	long long took = h_now_ms() - t0;
	/* 1 s, one cancel, and the MQTT flush; without the cancel the wait has no end (and
	 * h_bridge_stop kills at 30 s) */
	cr_expect_lt(took, 10000, "the stop took %lld ms (shutdown_timeout 1 s; log %s)", took,
	             br.log);
	cr_expect_eq(rc, 1, "the exit status says that messages were given up (log %s)", br.log);
	int msgs = 0;
	cr_expect_not(acked(dev, 2, 1000, &msgs), "the batch was acknowledged (log %s)", br.log);
	cr_expect_eq(msgs, 0, "something was published on the ack topic (log %s)", br.log);
	cr_expect_gt(h_bridge_log_count(&br, "cancelling the statements"), 0, "log %s", br.log);
	cr_expect_gt(h_bridge_log_count(&br, "a cancel (store_interrupt) was sent during the "
	                                     "transaction, or was on its way when it began: "
	                                     "treated as not committed"),
	             0, "log %s", br.log);
	cr_expect_gt(h_bridge_log_count(&br, "shutdown: gave up on 1 message(s)"), 0, "log %s",
	             br.log);
	/* committed on this server all the same: what the resend finds */
	const char *stored = "SELECT COUNT(*) FROM envelopes e JOIN devices d ON d.id = e.device"
	                     " WHERE d.device_id = 'dev-a' AND e.seq = 2";
	const char *readings = "SELECT COUNT(*) FROM readings r JOIN devices d ON d.id = r.device"
	                       " WHERE d.device_id = 'dev-a'";
	cr_expect_eq(h_store_i64(pg.url, stored, 0), 1, "the cancelled COMMIT did not commit here");

	ghost_standby_off(&pg);
	h_bridge_start(&br);
	cr_assert_eq(h_mqtt_pub(dev, "outpost/v1/dev-a/telemetry", batch, n_batch, 1, 0), 0);
	msgs = 0;
	cr_expect(acked(dev, 2, 20000, &msgs), "the resend was not acknowledged (log %s)", br.log);
	cr_expect_eq(h_store_i64(pg.url, stored, 0), 1, "the batch is not stored once");
	cr_expect_eq(h_store_i64(pg.url, readings, 0), 2 * 3, "its readings are not stored once");
	cr_expect_eq(
	    h_store_i64(pg.url, "SELECT duplicates FROM devices WHERE device_id = 'dev-a'", 0), 1,
	    "the resend was not taken for a duplicate (log %s)", br.log);
	cr_expect_eq(h_bridge_stop(&br), 0, "log %s", br.log);
	h_mqtt_close(dev);
	free(batch);
	free(birth);
	free(uri);
	h_bridge_free(&br);
	h_broker_free(&b);
	h_pg_free(&pg);
}

/* A stop leaves what the broker has not delivered yet in the bridge's session: the bridge stops
 * receiving first (libmosquitto acknowledges to the broker whatever it reads, before the bridge
 * sees it), and what it read is committed and acknowledged. Here 300 batches wait at the broker
 * for the bridge, the store is locked (the pipeline fills up and intake blocks) and the bridge
 * is stopped: after the restart all are stored, and the device, whose ack timeout is long, sent
 * nothing again. (A bridge that took the backlog in during the stop and dropped it left the
 * broker nothing: the device's ack timeout only would have brought it.) */
Test(bridge_failure, a_stop_leaves_the_backlog_at_the_broker, .timeout = 180)
{
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "stop-backlog");
	h_bridge_arg(&br, "--workers=1");
	h_bridge_arg(&br, "--queue-depth=2");
	h_bridge_arg(&br, "--writer-queue=3");
	h_bridge_arg(&br, "--busy-timeout=200ms");
	h_bridge_arg(&br, "--shutdown-timeout=25s");
	h_bridge_start(&br); /* the session, which queues while the bridge is away */
	cr_assert_eq(h_bridge_stop(&br), 0);
	struct h_simdev_opts o = {.pki = h_pki(), .id = "dev-a", .port = b.mqtts_port,
	                          .batches = 300, .rows = 2, .cols = 2, .window = 300,
	                          .ack_timeout_ms = 600000, .t0_ms = 1700000000000LL};
	struct h_simdev *d = h_simdev_start(&o);
	struct h_simdev_stats st = {0};
	long long end = h_now_ms() + 20000;
	while (st.sent < 300 && h_now_ms() < end) {
		h_sleep_ms(50);
		h_simdev_stats(d, &st);
	}
	cr_assert_eq(st.sent, 300, "the device did not send its batches");
	h_sleep_ms(500); /* at the broker */
	/* held long enough for a slow start (ASan, a loaded machine) to reach the stop first;
	 * the stop's drain then waits for it (shutdown_timeout 25 s, h_bridge_stop 30 s) */
	struct h_sqlite_lock l = {h_strf("%s", br.store + strlen("sqlite:")), 0, 12};
	h_sqlite_lock(&l);
	long long locked_at = h_now_ms();
	h_bridge_start(&br);
	cr_assert(h_log_wait(br.log, "failed (attempt", 1, 10000), "no commit waited: %s", br.log);
	h_sleep_ms(500); /* the pipeline is full, intake waits */
	cr_assert_lt(h_now_ms() - locked_at, 11000, "the start took the whole lock: nothing to test");
	cr_expect_eq(h_bridge_stop(&br), 0, "the stop gave up on messages (log %s)", br.log);
	h_sqlite_unlock(&l);
	int64_t stored = h_store_i64(br.store, "SELECT COUNT(*) FROM envelopes", 0);
	cr_expect_lt(stored, 300, "the test left no backlog at the broker");
	cr_expect_eq(h_bridge_log_count(&br, "gave up on"), 0, "log %s", br.log);
	h_bridge_start(&br);
	cr_expect_eq(h_store_wait_i64(br.store, "SELECT COUNT(*) FROM envelopes", H_EQUAL, 300,
	                              20000),
	             300, "%lld stored before the restart; the broker lost the rest (log %s)",
	             (long long)stored, br.log);
	cr_expect(h_simdev_wait(d, 20000), "not everything acknowledged");
	h_simdev_stats(d, &st);
	cr_expect_eq(st.resent, 0, "the device sent again");
	cr_expect_eq(st.bad_acks, 0);
	h_check_simdev(br.store, d, &o);
	h_simdev_stop(d);
	cr_expect_eq(h_bridge_stop(&br), 0);
	free(l.db);
	h_bridge_free(&br);
	h_broker_free(&b);
}

/* The first "commit of N message(s) failed (attempt 1)" in log with N >= min: its N, else 0. */
static int failed_group(const char *log, int min)
{
	char *text = h_read_file(log, NULL);
	int n = 0;
	for (const char *p = text; p && (p = strstr(p, "commit of ")) && n < min; p++) {
		int end = 0;
		if (sscanf(p, "commit of %d message(s) failed (attempt 1)%n", &n, &end) != 1 || !end)
			n = 0;
	}
	free(text);
	return n >= min ? n : 0;
}

/* A group the store refuses for good is committed again one message at a time; a stop meanwhile
 * keeps to shutdown_timeout: past it the messages not tried yet are given up at once, instead of
 * each costing one more attempt first (a locked SQLite store: busy_timeout each, half an hour
 * for a group of 1024). Here a trigger refuses every new envelope, slowly (a join costing some
 * 0.2 s per attempt), and a group of at least 30 messages is being retried one by one. */
Test(bridge_failure, a_stop_during_the_one_by_one_retry_keeps_to_shutdown_timeout, .timeout = 150)
{
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "stop-one-by-one");
	h_bridge_arg(&br, "--shutdown-timeout=1s");
	h_bridge_start(&br);
	h_store_i64(br.store, "CREATE TABLE slow_rows(x INTEGER)", 0);
	long long attempt_ms = 0;
	for (int i = 0; i < 4 && attempt_ms < 200; i++) {
		h_store_i64(br.store,
		            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE"
		            " x < 1500) INSERT INTO slow_rows SELECT x FROM c",
		            0);
		long long t0 = h_now_ms();
		h_store_i64(br.store, "SELECT sum(a.x * b.x) FROM slow_rows a, slow_rows b", 0);
		attempt_ms = h_now_ms() - t0;
	}
	cr_assert_geq(attempt_ms, 100, "the refusal is too fast to tell (%lld ms)", attempt_ms);
	struct h_simdev_opts o = {.pki = h_pki(), .id = "dev-a", .port = b.mqtts_port,
	                          .batches = 400, .rows = 2, .cols = 2, .window = 100,
	                          .ack_timeout_ms = 600000, .rate = 100,
	                          .t0_ms = 1700000000000LL};
	struct h_simdev *d = h_simdev_start(&o);
	struct h_simdev_stats st = {0};
	long long end = h_now_ms() + 20000;
	while (st.acks < 10 && h_now_ms() < end) {
		h_sleep_ms(20);
		h_simdev_stats(d, &st);
	}
	cr_assert_geq(st.acks, 10, "the device is not streaming");
	h_store_i64(br.store,
	            "CREATE TRIGGER refuse_slowly BEFORE INSERT ON envelopes BEGIN"
	            " SELECT RAISE(ABORT, 'test') FROM (SELECT sum(a.x * b.x) AS s FROM slow_rows a,"
	            " slow_rows b) WHERE s > 0; END",
	            0);
	end = h_now_ms() + 60000;
	while (!failed_group(br.log, 30) && h_now_ms() < end)
		h_sleep_ms(50);
	int n = failed_group(br.log, 30);
	cr_assert(n, "no group of 30 messages was refused (log %s)", br.log);
	/* its second and third attempts, then its first message's own */
	const char *one = "commit of 1 message(s) failed (attempt 1)";
	int ones = h_bridge_log_count(&br, one);
	end = h_now_ms() + 10000 + 4 * attempt_ms;
	while (h_bridge_log_count(&br, one) == ones && h_now_ms() < end)
		h_sleep_ms(20);
	cr_assert_gt(h_bridge_log_count(&br, one), ones, "not retrying one by one (log %s)",
	             br.log);
	long long t0 = h_now_ms();
	int rc = h_bridge_stop(&br);
	long long took = h_now_ms() - t0;
	/* 1 s, then the attempt under way; not one attempt per message of the group (n) */
	cr_expect_lt(took, 4000 + 2 * attempt_ms,
	             "the stop took %lld ms (shutdown_timeout 1 s, %lld ms per attempt, a group of %d;"
	             " log %s)",
	             took, attempt_ms, n, br.log);
	cr_expect_eq(rc, 1, "the exit status says that messages were given up");
	cr_expect_gt(h_bridge_log_count(&br, "shutdown: gave up on"), 0, "log %s", br.log);
	h_simdev_stop(d);
	h_bridge_free(&br);
	h_broker_free(&b);
}
