/* test_bridge_stream.c - N simulated devices stream through a real broker (mutual TLS) into
 * outpost-bridge; every (device, seq) is stored exactly once with all its readings, in SQLite
 * and in PostgreSQL; chains with polls and dropped batches close; acks reach the devices; a
 * bridge whose share group changed receives each message once. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "h_bridge.h"
#include "h_pg.h"
#include "h_simdev.h"
#include "harness.h"

#define N_DEV 3

static void stream(const char *store_url, const char *tag)
{
	struct h_broker b = {0};
	struct h_bridge br;
	static const char *const ids[N_DEV] = {"dev-a", "dev-b", "dev-c"};
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];

	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, store_url, tag);
	h_bridge_start(&br);
	for (int i = 0; i < N_DEV; i++) {
		o[i] = (struct h_simdev_opts){.pki = h_pki(),
		                              .id = ids[i],
		                              .port = b.mqtts_port,
		                              .batches = 150,
		                              .rows = 5,
		                              .cols = 4,
		                              .window = 20,
		                              .ack_timeout_ms = 3000,
		                              .t0_ms = 1700000000000LL};
		if (i == 1)
			o[i].poll_every = 7; /* polls consume seqs: the chain must not care */
		if (i == 2)
			o[i].drop_every = 11; /* spool overflow: reported gaps */
		d[i] = h_simdev_start(&o[i]);
	}
	for (int i = 0; i < N_DEV; i++)
		cr_expect(h_simdev_wait(d[i], 60000), "%s: not everything acknowledged", ids[i]);
	for (int i = 0; i < N_DEV; i++) {
		struct h_simdev_stats st;
		h_simdev_stats(d[i], &st);
		cr_expect_eq(st.bad_acks, 0, "%s: acks that failed verification", ids[i]);
		cr_expect_gt(st.acks, 0);
		h_check_simdev(br.store, d[i], &o[i]);
		h_simdev_stop(d[i]);
	}
	cr_expect_eq(h_bridge_stop(&br), 0, "bridge exit status");
	h_bridge_free(&br);
	h_broker_free(&b);
}

Test(bridge_stream, sqlite_exactly_once, .timeout = 180)
{
	stream(NULL, "stream-sqlite");
}

/* Two bridges of one shared-subscription group on one PostgreSQL store split the load: a
 * device's messages alternate between them, and still every (device, seq) is stored once and
 * every chain closes. */
Test(bridge_stream, two_bridges_share_the_load, .timeout = 240)
{
	struct h_pg pg = {0};
	struct h_broker b = {0};
	struct h_bridge br[2];
	static const char *const ids[N_DEV] = {"dev-a", "dev-b", "dev-c"};
	struct h_simdev_opts o[N_DEV];
	struct h_simdev *d[N_DEV];

	h_pg_start(&pg);
	h_broker_up(&b, h_pki());
	for (int i = 0; i < 2; i++) {
		h_bridge_init(&br[i], &b, pg.url, i ? "share-2" : "share-1");
		h_bridge_arg(&br[i], "--stats-interval=1h");
		h_bridge_start(&br[i]);
	}
	for (int i = 0; i < N_DEV; i++) {
		o[i] = (struct h_simdev_opts){.pki = h_pki(),
		                              .id = ids[i],
		                              .port = b.mqtts_port,
		                              .batches = 200,
		                              .rows = 4,
		                              .cols = 3,
		                              .window = 20,
		                              .ack_timeout_ms = 2000,
		                              .poll_every = 10,
		                              .t0_ms = 1700000000000LL};
		d[i] = h_simdev_start(&o[i]);
	}
	for (int i = 0; i < N_DEV; i++)
		cr_expect(h_simdev_wait(d[i], 90000), "%s: not everything acknowledged", ids[i]);
	for (int i = 0; i < N_DEV; i++) {
		h_check_simdev(pg.url, d[i], &o[i]);
		h_simdev_stop(d[i]);
	}
	cr_expect_eq(h_store_i64(pg.url, "SELECT COUNT(*) FROM devices WHERE state <> 'active'", 0),
	             0, "no device may be quarantined by the split");
	for (int i = 0; i < 2; i++) {
		cr_expect_eq(h_bridge_stop(&br[i]), 0);
		/* Both did part of the work: their final stats line counts stored envelopes. */
		char *log = h_read_file(br[i].log, NULL);
		const char *st = log ? strstr(log, "totals: received ") : NULL;
		cr_expect(st && strtol(st + strlen("totals: received "), NULL, 10) > 0,
		          "bridge %d received nothing", i);
		free(log);
		h_bridge_free(&br[i]);
	}
	h_broker_free(&b);
	h_pg_free(&pg);
}

Test(bridge_stream, postgresql_exactly_once, .timeout = 240)
{
	struct h_pg pg = {0};
	h_pg_start(&pg);
	stream(pg.url, "stream-pg");
	h_pg_free(&pg);
}

/* A single bridge without a share group (plain subscriptions in its persistent session) misses
 * nothing that devices publish after a broker restart while the bridge is still away: the
 * broker queues it and the bridge stores it when it is back, without any device resend (the
 * device's ack timeout is longer than the test). */
Test(bridge_stream, plain_subscriptions_queue_across_a_broker_restart, .timeout = 180)
{
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "restart-queue");
	h_bridge_arg(&br, "--share-group=");
	h_bridge_start(&br);
	for (int i = 0; i < 100 && h_bridge_log_count(&br, "connected to") < 1; i++)
		h_sleep_ms(100);
	cr_assert_eq(h_bridge_log_count(&br, "(session new)"), 1);
	cr_assert_eq(h_bridge_stop(&br), 0);

	h_broker_stop(&b); /* saves the bridge's session, then starts again on the same ports */
	h_broker_up(&b, h_pki());

	struct h_simdev_opts o = {.pki = h_pki(),
	                          .id = "dev-a",
	                          .port = b.mqtts_port,
	                          .batches = 20,
	                          .rows = 2,
	                          .cols = 3,
	                          .window = 20,
	                          .ack_timeout_ms = 600000,
	                          .t0_ms = 1700000000000LL};
	struct h_simdev *d = h_simdev_start(&o);
	struct h_simdev_stats st = {0};
	for (int i = 0; i < 100 && st.sent < 20; i++) {
		h_sleep_ms(100);
		h_simdev_stats(d, &st);
	}
	cr_assert_eq(st.sent, 20, "the device published everything while the bridge was away");
	cr_expect_eq(st.acks, 0);

	h_bridge_start(&br);
	cr_expect(h_simdev_wait(d, 30000), "not everything acknowledged");
	h_simdev_stats(d, &st);
	cr_expect_eq(st.resent, 0, "stored from the broker's queue, not from resends");
	cr_expect_eq(h_bridge_log_count(&br, "(session resumed)"), 1);
	h_check_simdev(br.store, d, &o);
	h_simdev_stop(d);
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
}

/* The "received" total of the bridge's last stats line. */
static long long last_received(const char *log_path)
{
	char *log = h_read_file(log_path, NULL), *p = log, *last = NULL;
	while (p && (p = strstr(p, "totals: received ")))
		last = p++;
	long long n = last ? strtoll(last + strlen("totals: received "), NULL, 10) : -1;
	free(log);
	return n;
}

/* A bridge run with share group `from` (NULL: the default), stopped, then run again in the same
 * session with the extra arguments `to`: each message of a device reaches it once. The session
 * kept the earlier run's subscriptions, which a subscription does not replace: the bridge takes
 * them away, or every message came twice (stored once, counted as duplicates). */
static void switch_group(const char *tag, const char *from, const char *const *to, int n_to)
{
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, tag);
	if (from)
		h_bridge_arg(&br, from);
	h_bridge_start(&br);
	cr_assert_eq(h_bridge_stop(&br), 0);
	h_bridge_args_clear(&br);
	for (int i = 0; i < n_to; i++)
		h_bridge_arg(&br, to[i]);
	h_bridge_start(&br);
	cr_assert_eq(h_bridge_log_count(&br, "(session resumed)"), 1);
	struct h_simdev_opts o = {.pki = h_pki(), .id = "dev-a", .port = b.mqtts_port,
	                          .batches = 50, .rows = 2, .cols = 2, .window = 5,
	                          .ack_timeout_ms = 600000, .t0_ms = 1700000000000LL};
	struct h_simdev *d = h_simdev_start(&o);
	cr_expect(h_simdev_wait(d, 30000), "not everything acknowledged");
	h_sleep_ms(1000); /* a second copy would be on its way */
	struct h_simdev_stats st;
	h_simdev_stats(d, &st);
	cr_expect_eq(st.resent, 0);
	h_check_simdev(br.store, d, &o);
	h_simdev_stop(d);
	cr_expect_eq(h_bridge_stop(&br), 0);
	cr_expect_eq(h_store_i64(br.store, "SELECT SUM(duplicates) FROM devices", 0), 0,
	             "messages came twice (log %s)", br.log);
	cr_expect_eq(last_received(br.log), 51, "the Birth and 50 batches, once (log %s)", br.log);
	h_bridge_free(&br);
	h_broker_free(&b);
}

/* What docs/OPERATIONS.md recommends for a single bridge, after the default. */
Test(bridge_stream, a_share_group_given_up_is_taken_out_of_the_session, .timeout = 120)
{
	const char *const to[] = {"--share-group="};
	switch_group("group-to-plain", NULL, to, 1);
}

Test(bridge_stream, plain_subscriptions_given_up_are_taken_out_of_the_session, .timeout = 120)
{
	const char *const to[] = {"--share-group=outpost-bridge"};
	switch_group("plain-to-group", "--share-group=", to, 1);
}

/* A group renamed: former_share_group names the old one (the default: outpost-bridge). */
Test(bridge_stream, a_renamed_share_group_is_taken_out_of_the_session, .timeout = 120)
{
	const char *const to[] = {"--share-group=blue", "--former-share-group=green"};
	switch_group("group-renamed", "--share-group=green", to, 2);
}
