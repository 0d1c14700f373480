/* test_bridge_health.c - device health at the bridge: silent devices flagged offline
 * (3 x interval, and the retained status will), long-silent ones deactivated and revived,
 * missing gaps recorded then filled, a CRL reload (SIGHUP) revoking an enrolled device.
 * Every change is an event row. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "h_bridge.h"
#include "h_device.h"
#include "h_mqtt.h"
#include "h_simdev.h"
#include "harness.h"
#include "wire_env.h"

/* fmt with its one %s replaced by a (a device id: no quoting needed); the caller frees. */
static char *sql_for(const char *fmt, const char *a)
{
	const char *p = strstr(fmt, "%s");
	return p ? h_strf("%.*s%s%s", (int)(p - fmt), fmt, a, p + 2) : h_strf("%s", fmt);
}

static int64_t qs(const char *url, const char *fmt, const char *a)
{
	char *sql = sql_for(fmt, a);
	int64_t v = h_store_i64(url, sql, 0);
	free(sql);
	return v;
}

static int wait_for(const char *url, const char *fmt, const char *a, int64_t want, int ms)
{
	char *sql = sql_for(fmt, a);
	int64_t v = h_store_wait_i64(url, sql, H_EQUAL, want, ms);
	free(sql);
	return v == want;
}

#define EVENTS(type)                                                                               \
	"SELECT COUNT(*) FROM events e JOIN devices d ON d.id = e.device WHERE d.device_id = '%s'" \
	" AND e.type = '" type "'"

Test(bridge_health, offline_deactivated_revived_and_status_will, .timeout = 120)
{
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "health");
	h_bridge_arg(&br, "--offline-min=2s");
	h_bridge_arg(&br, "--deactivate-after=6s");
	h_bridge_start(&br);
	const char *url = br.store;

	/* dev-a reports a 1 s sample interval: silent for 3 s means offline. */
	struct h_simdev_opts o = {.pki = h_pki(),
	                          .id = "dev-a",
	                          .port = b.mqtts_port,
	                          .batches = 5,
	                          .t0_ms = 1700000000000LL};
	struct h_simdev *d = h_simdev_start(&o);
	cr_assert(h_simdev_wait(d, 20000));
	struct h_simdev_stats st;
	h_simdev_stats(d, &st);
	h_simdev_stop(d);
	cr_expect_eq(qs(url, "SELECT online FROM devices WHERE device_id = '%s'", "dev-a"), 1);
	long long stopped = h_now_ms();
	cr_expect(
	    wait_for(url, "SELECT online FROM devices WHERE device_id = '%s'", "dev-a", 0, 8000),
	    "never flagged offline");
	cr_expect_geq(h_now_ms() - stopped, 2500, "offline too early");
	cr_expect_eq(qs(url, EVENTS("offline"), "dev-a"), 1);
	/* 6 s of silence: deactivated. */
	cr_expect(
	    wait_for(
	        url,
	        "SELECT COUNT(*) FROM devices WHERE device_id = '%s' AND state = 'deactivated'",
	        "dev-a", 1, 10000),
	    "never deactivated");
	cr_expect_eq(qs(url, EVENTS("deactivated"), "dev-a"), 1);
	/* It comes back: reactivated, online, its data stored. */
	o.first_seq = st.last_seq + 1;
	o.prev_durable = st.last_seq;
	o.batches = 2;
	d = h_simdev_start(&o);
	cr_assert(h_simdev_wait(d, 20000));
	h_simdev_stop(d);
	cr_expect_eq(qs(url,
	                "SELECT COUNT(*) FROM devices WHERE device_id = '%s' AND state = 'active'"
	                " AND online = 1",
	                "dev-a"),
	             1);
	cr_expect_eq(qs(url, EVENTS("reactivated"), "dev-a"), 1);
	cr_expect_eq(qs(url, "SELECT envelopes FROM devices WHERE device_id = '%s'", "dev-a"), 7);

	/* The retained status will: offline at once, online again with the device. */
	char *uri = h_strf("ssl://127.0.0.1:%d", b.mqtts_port);
	struct h_mqtt *c = h_mqtt_connect(uri, h_pki(), "devices/dev-a", "dev-a", NULL);
	free(uri);
	cr_assert_not_null(c);
	cr_expect_eq(h_mqtt_pub(c, "outpost/v1/dev-a/status", "offline", 7, 1, 1), 0);
	cr_expect(
	    wait_for(url, "SELECT online FROM devices WHERE device_id = '%s'", "dev-a", 0, 5000));
	cr_expect(wait_for(url, EVENTS("offline"), "dev-a", 2, 5000));
	cr_expect_eq(h_mqtt_pub(c, "outpost/v1/dev-a/status", "online", 6, 1, 1), 0);
	cr_expect(
	    wait_for(url, "SELECT online FROM devices WHERE device_id = '%s'", "dev-a", 1, 5000));
	/* Junk on the status topic is a counted rejection, nothing else. */
	cr_expect_eq(h_mqtt_pub(c, "outpost/v1/dev-a/status", "maybe", 5, 1, 0), 0);
	cr_expect(
	    wait_for(url,
	             "SELECT r.count FROM rejections r JOIN devices d ON d.id = r.device WHERE"
	             " d.device_id = '%s' AND r.reason = 'status'",
	             "dev-a", 1, 5000));
	h_mqtt_pub(c, "outpost/v1/dev-a/status", "", 0, 1, 1); /* clear the retained message */
	h_mqtt_close(c);
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
}

/* A device whose batches go out less often than 3 x its sample interval is not flagged
 * offline between them: its Birth carries the batch interval, and the limit is offline_factor x
 * the larger interval (here 3 x 4 s, not 3 x 1 s). The defaults (10 s / 60 s, offline_min
 * 30 s) flapped every minute when the limit came from the sample interval alone. */
Test(bridge_health, a_device_is_not_offline_between_its_batches, .timeout = 120)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_device d = {0};
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "batch-interval");
	h_bridge_arg(&br, "--offline-min=1s");
	h_bridge_arg(&br, "--health-interval=200ms");
	h_bridge_start(&br);
	const char *url = br.store;
	const char *extra[] = {"--sample-interval", "1s", "--batch-interval", "4s", NULL};
	h_device_start(&d, &b, "dev-a", extra);
	cr_assert(wait_for(url,
	                   "SELECT COUNT(*) FROM envelopes e JOIN devices d ON d.id = e.device"
	                   " WHERE d.device_id = '%s'",
	                   "dev-a", 1, 20000),
	          "no batch stored");
	cr_expect_eq(
	    qs(url, "SELECT batch_interval_s FROM devices WHERE device_id = '%s'", "dev-a"), 4);
	cr_expect_eq(
	    qs(url, "SELECT sample_interval_s FROM devices WHERE device_id = '%s'", "dev-a"), 1);
	char *out = NULL;
	cr_expect_eq(h_ctl(url, "device show dev-a", &out), 0);
	cr_expect(strstr(out, "intervals   sample 1s, batch 4s, poll 3600s"), "%s", out);
	free(out);
	/* three batch intervals: each silence of 4 s is longer than 3 x 1 s */
	long long end = h_now_ms() + 13000;
	while (h_now_ms() < end) {
		cr_expect_eq(qs(url, "SELECT online FROM devices WHERE device_id = '%s'", "dev-a"),
		             1, "flagged offline between batches");
		h_sleep_ms(200);
	}
	cr_expect_eq(qs(url, EVENTS("offline"), "dev-a"), 0);
	cr_expect_geq(qs(url,
	                 "SELECT COUNT(*) FROM envelopes e JOIN devices d ON d.id = e.device"
	                 " WHERE d.device_id = '%s'",
	                 "dev-a"),
	              3, "the device did not go on sending");
	h_device_free(&d);
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
}

/* A status the bridge acknowledged but never stored (it arrived while the bridge was stopping)
 * is read again at the next start, though the bridge resumes its session: a device's
 * retained "offline" (its will, or the broker's plugin) outlives its session. (A retained
 * "online" changes nothing: it may be older than the device's silence.) */
Test(bridge_health, retained_statuses_are_read_again_at_start, .timeout = 120)
{
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "status-again");
	h_bridge_arg(&br, "--offline-min=1h");
	h_bridge_start(&br);
	const char *url = br.store;
	struct h_simdev_opts o = {.pki = h_pki(),
	                          .id = "dev-a",
	                          .port = b.mqtts_port,
	                          .batches = 1,
	                          .t0_ms = 1700000000000LL};
	struct h_simdev *d = h_simdev_start(&o);
	cr_assert(h_simdev_wait(d, 20000));
	h_simdev_stop(d);
	cr_assert(
	    wait_for(url, "SELECT online FROM devices WHERE device_id = '%s'", "dev-a", 1, 5000));
	char *uri = h_strf("ssl://127.0.0.1:%d", b.mqtts_port);
	struct h_mqtt *c = h_mqtt_connect(uri, h_pki(), "devices/dev-a", "dev-a", NULL);
	cr_assert_not_null(c);
	cr_expect_eq(h_mqtt_pub(c, "outpost/v1/dev-a/status", "offline", 7, 1, 1), 0);
	cr_assert(
	    wait_for(url, "SELECT online FROM devices WHERE device_id = '%s'", "dev-a", 0, 5000));
	cr_assert_eq(h_bridge_stop(&br), 0);
	h_store_i64(url, "UPDATE devices SET online = 1", 0); /* as if that status was lost */
	h_bridge_start(&br);
	cr_expect_eq(h_bridge_log_count(&br, "(session resumed)"), 1);
	cr_expect(
	    wait_for(url, "SELECT online FROM devices WHERE device_id = '%s'", "dev-a", 0, 5000),
	    "the retained status was not delivered again");
	h_mqtt_pub(c, "outpost/v1/dev-a/status", "", 0, 1, 1); /* clear the retained message */
	h_mqtt_close(c);
	free(uri);
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
}

Test(bridge_health, missing_gap_recorded_then_filled, .timeout = 60)
{
	struct h_broker b = {0};
	struct h_bridge br;
	struct h_simdev_opts so = {.rows = 1, .cols = 1, .t0_ms = 1700000000000LL};
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "gaps");
	h_bridge_arg(&br, "--gap-grace=0");
	h_bridge_start(&br);
	char *uri = h_strf("ssl://127.0.0.1:%d", b.mqtts_port);
	struct h_mqtt *c = h_mqtt_connect(uri, h_pki(), "devices/dev-b", "dev-b", NULL);
	free(uri);
	cr_assert_not_null(c);
	size_t n, blen;
	uint8_t *body = h_birth_body(h_pki(), "dev-b", 1, 0, &blen);
	uint8_t *env =
	    h_seal(h_pki(), "devices/dev-b", WIRE_KIND_BIRTH, "dev-b", 1, body, blen, &n);
	cr_assert_eq(h_mqtt_pub(c, "outpost/v1/dev-b/birth", env, n, 1, 0), 0);
	free(env);
	free(body);
	/* 2 (prev 0) and 6 (prev 4) arrive; 4 (prev 2) is missing. */
	uint64_t seqs[][2] = {{2, 0}, {6, 4}, {4, 2}};
	for (int i = 0; i < 3; i++) {
		body = h_batch_body(&so, seqs[i][0], seqs[i][1], &blen);
		env = h_seal(h_pki(), "devices/dev-b", WIRE_KIND_BATCH, "dev-b", seqs[i][0], body,
		             blen, &n);
		cr_assert_eq(h_mqtt_pub(c, "outpost/v1/dev-b/telemetry", env, n, 1, 0), 0);
		free(env);
		free(body);
		if (i == 1) {
			cr_expect(wait_for(br.store,
			                   "SELECT frontier FROM devices WHERE device_id = '%s'",
			                   "dev-b", 2, 5000));
			cr_expect(wait_for(br.store,
			                   "SELECT COUNT(*) FROM gaps WHERE reason = 'missing' AND "
			                   "prev_seq = 2"
			                   " AND last_seq = 4 AND resolved_at IS NULL AND device = "
			                   "(SELECT id FROM"
			                   " devices WHERE device_id = '%s')",
			                   "dev-b", 1, 5000),
			          "missing gap not recorded");
			char *out = NULL;
			cr_expect_eq(h_ctl(br.store, "gaps", &out), 0);
			cr_expect(strstr(out, "dev-b   missing") && strstr(out, "3         4"),
			          "%s", out);
			free(out);
		}
	}
	cr_expect(wait_for(br.store, "SELECT frontier FROM devices WHERE device_id = '%s'", "dev-b",
	                   6, 5000),
	          "chain did not close");
	cr_expect_eq(qs(br.store,
	                "SELECT COUNT(*) FROM gaps WHERE resolution = 'filled' AND device ="
	                " (SELECT id FROM devices WHERE device_id = '%s')",
	                "dev-b"),
	             1);
	cr_expect_eq(qs(br.store, EVENTS("gap_filled"), "dev-b"), 1);
	char *out = NULL;
	cr_expect_eq(h_ctl(br.store, "gaps", &out), 0);
	cr_expect(!strstr(out, "dev-b"), "filled gaps are not open: %s", out);
	free(out);
	cr_expect_eq(h_ctl(br.store, "gaps --all --device dev-b", &out), 0);
	cr_expect(strstr(out, "filled"), "%s", out);
	free(out);
	h_mqtt_close(c);
	h_bridge_free(&br);
	h_broker_free(&b);
}

Test(bridge_health, crl_reload_revokes_an_enrolled_device_and_a_new_key_enrols_it_again,
     .timeout = 180)
{
	/* A private PKI: revoking in the shared one would disturb other tests. */
	char *pki = h_tmpdir("pki-crl"), *out = NULL;
	char *cmd =
	    h_strf("%s/scripts/provision-certs.sh --out %s --devices dev-x", h_source_dir(), pki);
	cr_assert_eq(h_sh(cmd, &out, 120), 0, "%s", out);
	free(out);
	free(cmd);
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, pki);
	h_bridge_init(&br, &b, NULL, "crl");
	h_bridge_start(&br);
	struct h_simdev_opts o = {.pki = pki,
	                          .id = "dev-x",
	                          .port = b.mqtts_port,
	                          .batches = 3,
	                          .t0_ms = 1700000000000LL};
	struct h_simdev *d = h_simdev_start(&o);
	cr_assert(h_simdev_wait(d, 20000));
	h_simdev_stop(d);
	cmd = h_strf("%s/scripts/provision-certs.sh --out %s --revoke dev-x", h_source_dir(), pki);
	cr_assert_eq(h_sh(cmd, &out, 120), 0, "%s", out);
	free(out);
	free(cmd);
	/* a CRL that expires in 10 days: the reload warns */
	h_pki_gencrl(pki, 0, "-crldays 10");
	cr_expect_eq(h_bridge_log_count(&br, "the CRL expires at"), 0);
	kill(br.pid, SIGHUP);
	cr_expect(
	    wait_for(br.store,
	             "SELECT COUNT(*) FROM devices WHERE device_id = '%s' AND state = 'revoked'",
	             "dev-x", 1, 10000),
	    "CRL reload did not revoke dev-x");
	cr_expect_eq(qs(br.store, EVENTS("revoked"), "dev-x"), 1);
	/* its key is remembered as revoked (a certificate re-issued for it stays refused) */
	cr_expect_eq(qs(br.store,
	                "SELECT COUNT(*) FROM revoked_keys k JOIN devices d ON d.id ="
	                " k.device WHERE d.device_id = '%s' AND k.key = d.pubkey",
	                "dev-x"),
	             1);
	cr_expect_eq(h_bridge_log_count(&br, "CA and CRL reloaded"), 1);
	cr_expect_eq(h_bridge_log_count(&br, "the CRL expires at"), 1, "no warning: %s", br.log);

	/* Key rotation as OPERATIONS.md has it: delete the device's files, provision it again.
	 * The new key re-enrols the id; the old one stays revoked. */
	cmd = h_strf("rm -f %s/devices/dev-x.* && %s/scripts/provision-certs.sh --out %s --devices "
		     "dev-x", pki, h_source_dir(), pki);
	cr_assert_eq(h_sh(cmd, &out, 120), 0, "%s", out);
	free(out);
	free(cmd);
	o.first_seq = 1000000; /* a wiped state directory numbers from the clock, far above */
	o.prev_durable = 999999; /* and owes nothing below */
	o.t0_ms += 3600000;
	d = h_simdev_start(&o);
	cr_expect(h_simdev_wait(d, 30000), "the rotated device was not stored: %s", br.log);
	h_simdev_stop(d);
	cr_expect_eq(qs(br.store, "SELECT COUNT(*) FROM devices WHERE device_id = '%s' AND state = "
				  "'active'", "dev-x"), 1);
	cr_expect_eq(qs(br.store, EVENTS("reenrolled"), "dev-x"), 1);
	cr_expect_eq(qs(br.store,
	                "SELECT COUNT(*) FROM revoked_keys k JOIN devices d ON d.id ="
	                " k.device WHERE d.device_id = '%s' AND k.key <> d.pubkey",
	                "dev-x"),
	             1, "the old key is still the revoked one, the new one is not");
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
	free(pki);
}

/* A Birth checked against the old CRL that is still queued when a reloaded CRL revokes its
 * certificate: the re-check after the reload ran before it was stored, so the writer re-checks
 * once more after storing it. The store is locked meanwhile (the writer holds dev-x's group),
 * so that dev-y's Birth waits in the queue across the reload. */
Test(bridge_health, a_birth_queued_across_a_crl_reload_is_checked_again, .timeout = 180)
{
	char *pki = h_tmpdir("pki-crlq"), *out = NULL;
	char *cmd = h_strf("%s/scripts/provision-certs.sh --out %s --devices dev-x,dev-y",
			   h_source_dir(), pki);
	cr_assert_eq(h_sh(cmd, &out, 120), 0, "%s", out);
	free(out);
	free(cmd);
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, pki);
	h_bridge_init(&br, &b, NULL, "crlq");
	h_bridge_arg(&br, "--busy-timeout=200ms");
	h_bridge_start(&br);
	struct h_sqlite_lock l = {h_strf("%s", br.store + strlen("sqlite:")), 0, 20};
	h_sqlite_lock(&l);
	struct h_simdev_opts ox = {.pki = pki, .id = "dev-x", .port = b.mqtts_port, .batches = 2,
				   .t0_ms = 1700000000000LL};
	struct h_simdev *dx = h_simdev_start(&ox);
	cr_assert(h_log_wait(br.log, "failed (attempt", 1, 10000), "no commit waited: %s", br.log);
	struct h_simdev_opts oy = ox;
	oy.id = "dev-y";
	oy.batches = 1;
	struct h_simdev *dy = h_simdev_start(&oy);
	struct h_simdev_stats st = {0};
	long long end = h_now_ms() + 10000;
	while (h_now_ms() < end && (h_simdev_stats(dy, &st), st.sent) < 1)
		h_sleep_ms(50);
	cr_assert_geq(st.sent, 1, "dev-y sent nothing");
	h_sleep_ms(500); /* its Birth is verified and queued behind dev-x's group */
	/* gone before the broker's plugin refuses it (what libmosquitto then keeps queued is
	 * never freed: LeakSanitizer) */
	h_simdev_stop(dy);
	cmd = h_strf("%s/scripts/provision-certs.sh --out %s --revoke dev-y", h_source_dir(), pki);
	cr_assert_eq(h_sh(cmd, &out, 120), 0, "%s", out);
	free(out);
	free(cmd);
	kill(br.pid, SIGHUP);
	cr_assert(h_log_wait(br.log, "CA and CRL reloaded", 1, 10000), "%s", br.log);
	cr_expect_eq(qs(br.store, "SELECT COUNT(*) FROM devices WHERE device_id = '%s'", "dev-y"),
		     0, "dev-y's Birth was stored before the reload: the test proves nothing");
	h_sqlite_unlock(&l);
	cr_expect(wait_for(br.store,
			   "SELECT COUNT(*) FROM devices WHERE device_id = '%s' AND state = 'revoked'",
			   "dev-y", 1, 20000),
		  "dev-y enrolled with a revoked certificate: %s", br.log);
	cr_expect_eq(qs(br.store, "SELECT COUNT(*) FROM devices WHERE device_id = '%s' AND state = "
				  "'active'", "dev-x"), 1);
	h_simdev_stop(dx);
	cr_expect_eq(h_bridge_stop(&br), 0);
	free(l.db);
	h_bridge_free(&br);
	h_broker_free(&b);
	free(pki);
}

/* The bridge's CRL passes its next update while it runs: wolfSSL can then check no certificate.
 * A restarted device's Birth is refused as crl_expired (the operator's doing: not counted toward
 * quarantine), its batches are still stored with the enrolled key. */
Test(bridge_health, an_expired_crl_refuses_births_without_blaming_the_device, .timeout = 150)
{
	char *pki = h_tmpdir("pki-crl-exp"), *out = NULL;
	char *cmd = h_strf("%s/scripts/provision-certs.sh --out %s --devices dev-x", h_source_dir(),
			   pki);
	cr_assert_eq(h_sh(cmd, &out, 120), 0, "%s", out);
	free(out);
	free(cmd);
	h_pki_gencrl(pki, 0, "-crlsec 45"); /* time to start and enrol on a slow machine */
	int64_t expires_ms = h_now_ms() + 45000; /* not before the CRL's next update */
	struct h_broker b = {0};
	struct h_bridge br;
	h_broker_up(&b, pki);
	h_bridge_init(&br, &b, NULL, "crl-exp");
	h_bridge_start(&br);
	cr_expect_eq(h_bridge_log_count(&br, "the CRL expires at"), 1, "no warning: %s", br.log);
	struct h_simdev_opts o = {.pki = pki, .id = "dev-x", .port = b.mqtts_port, .batches = 2,
				  .t0_ms = 1700000000000LL};
	struct h_simdev *d = h_simdev_start(&o);
	cr_assert(h_simdev_wait(d, 15000), "not enrolled before the CRL expired");
	struct h_simdev_stats st;
	h_simdev_stats(d, &st);
	h_simdev_stop(d);
	while (h_now_ms() < expires_ms + 1000) /* bounded: 46 s from the CRL's creation */
		h_sleep_ms(200);
	/* six restarts: more Births refused in a row than quarantine_after (5) */
	for (int i = 0; i < 6; i++) {
		o.first_seq = st.last_seq + 1;
		o.prev_durable = st.last_seq;
		o.batches = i == 5 ? 1 : 0;
		d = h_simdev_start(&o);
		cr_expect(wait_for(br.store,
				   "SELECT r.count FROM rejections r JOIN devices d ON d.id = r.device "
				   "WHERE d.device_id = '%s' AND r.reason = 'crl_expired'",
				   "dev-x", i + 1, 10000),
			  "Birth %d not refused as crl_expired", i + 1);
		if (i == 5)
			cr_expect(h_simdev_wait(d, 15000), "the batch after the refused Birth");
		h_simdev_stats(d, &st);
		h_simdev_stop(d);
	}
	cr_expect_eq(qs(br.store, "SELECT COUNT(*) FROM devices WHERE device_id = '%s' AND state = "
				  "'quarantined'",
			"dev-x"),
		     0, "the device was blamed for the expired CRL");
	cr_expect_eq(h_bridge_stop(&br), 0);
	h_bridge_free(&br);
	h_broker_free(&b);
	free(pki);
}


/* outpost-bridge in the background with the shared PKI, a store in a fresh directory (tag)
 * and extra arguments (NULL-terminated), where h_bridge_start would wait for a connection;
 * *log gets its log's path (caller frees). */
static pid_t spawn_bridge(const char *tag, const char *const *extra, char **log)
{
	char *dir = h_tmpdir(tag), *argv[16];
	int n = 0;
	argv[n++] = h_strf("%s/bridge/outpost-bridge", h_build_dir());
	argv[n++] = h_strf("--pki-dir=%s", h_pki());
	argv[n++] = h_strf("--store=sqlite:%s/outpost.db", dir);
	for (; *extra && n < 15; extra++)
		argv[n++] = h_strf("%s", *extra);
	argv[n] = NULL;
	char *env[] = {NULL};
	*log = h_strf("%s/bridge.log", dir);
	pid_t pid = h_spawn(argv, env, *log);
	h_track_pid(pid);
	for (int i = 0; i < n; i++)
		free(argv[i]);
	free(dir);
	return pid;
}

/* SIGTERM while the broker connection is still being made ends the bridge within its bound
 * (BRG_MQTT_STOP_S, 10 s), not when the connect gives up (minutes). Here the "broker" never
 * accepts and its accept queue is full: the kernel drops the bridge's SYNs and retries them. */
Test(bridge_health, sigterm_while_connecting_to_the_broker_ends_the_bridge, .timeout = 90)
{
	int bport, lfd = h_listen_loopback(0, &bport), fill[4];
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)bport)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < 4; i++) { /* fill the accept queue; the later ones wait in SYN_SENT */
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		cr_assert(fill[i] >= 0);
		connect(fill[i], (struct sockaddr *)&a, sizeof(a));
	}
	char *port = h_strf("--broker-port=%d", bport), *log = NULL;
	const char *extra[] = {"--broker-host=127.0.0.1", port, NULL};
	pid_t pid = spawn_bridge("bridge-stall", extra, &log);
	long long end = h_now_ms() + 15000;
	while (h_now_ms() < end && !h_count_in_file(log, "started"))
		h_sleep_ms(50);
	cr_assert(h_count_in_file(log, "started"), "the bridge did not start");
	h_sleep_ms(1000); /* connecting now */
	long long t0 = h_now_ms();
	int st = h_stop(pid, 40000);
	long long took = h_now_ms() - t0;
	cr_expect_eq(st, 0, "exit status %d", st);
	cr_expect_lt(took, 20000, "SIGTERM took %lld ms", took);
	cr_expect_eq(h_count_in_file(log, "still being made"), 1);
	for (int i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
	free(port);
	free(log);
}

/* A bridge that does not trust the broker's CA never connects, says why, and keeps trying. */
Test(bridge_health, a_bridge_that_does_not_trust_the_broker_says_why, .timeout = 90)
{
	struct h_broker b = {0};
	h_broker_up(&b, h_pki());
	char *ca = h_strf("--ca-file=%s/ca.crt", h_pki_other()), *log = NULL;
	char *crl = h_strf("--crl-file=%s/crl.pem", h_pki_other());
	char *port = h_strf("--broker-port=%d", b.internal_port);
	const char *extra[] = {ca, crl, port, NULL};
	pid_t pid = spawn_bridge("bridge-wrong-ca", extra, &log);
	long long end = h_now_ms() + 20000;
	while (h_now_ms() < end && h_count_in_file(log, "retrying in") < 2)
		h_sleep_ms(100);
	cr_expect_geq(h_count_in_file(log, "retrying in"), 2, "no failed attempts (%s)", log);
	cr_expect_eq(h_count_in_file(log, "connected to"), 0, "connected to an untrusted broker");
	cr_expect_geq(h_count_in_file(log, "(TLS: certificate verify failed)"), 1,
	              "the log does not say why (%s)", log);
	cr_expect_eq(h_stop(pid, 20000), 0);
	free(ca);
	free(crl);
	free(port);
	free(log);
	h_broker_free(&b);
}

/* The first n waits ("retrying in N ms") the bridge logged for its receiving connection (pub
 * 0) or its publishing one (pub 1), into d; how many there were. */
static int delays_of(const char *log, int pub, long *d, int n)
{
	FILE *f = fopen(log, "r");
	char line[1024];
	int got = 0;
	while (f && got < n && fgets(line, sizeof(line), f)) {
		char *p = strstr(line, "retrying in ");
		if (p && !strstr(line, "publishing connection: ") == !pub)
			d[got++] = strtol(p + 12, NULL, 10);
	}
	if (f)
		fclose(f);
	return got;
}

/* Wait (30 s at most) for the bridge to log n waits of a connection (delays_of); they go to d. */
static void logged_delays(const char *log, int pub, long *d, int n)
{
	long long end = h_now_ms() + 30000;
	while (h_now_ms() < end && delays_of(log, pub, d, n) < n)
		h_sleep_ms(100);
	cr_assert_eq(delays_of(log, pub, d, n), n, "%s", log);
}

/* A bridge connecting to b's internal listener with the certificate of a device. */
static pid_t spawn_bridge_as(const char *tag, const struct h_broker *b, const char *device,
                             const char *client_id, char **log)
{
	char *cert = h_strf("--cert-file=%s/devices/%s.crt", h_pki(), device);
	char *key = h_strf("--key-file=%s/devices/%s.key", h_pki(), device);
	char *port = h_strf("--broker-port=%d", b->internal_port);
	char *cid = h_strf("--client-id=%s", client_id);
	const char *extra[] = {cert, key, port, cid, NULL};
	pid_t pid = spawn_bridge(tag, extra, log);
	free(cert);
	free(key);
	free(port);
	free(cid);
	return pid;
}

/* A lost connection (the broker restarting) is tried again after 1, 2, 3, 4, then every 5 s,
 * the receiving and the publishing one each: the bridge is two clients, not a fleet, and every
 * second it is away delays every device's acks. */
Test(bridge_health, a_lost_broker_is_dialled_again_after_1_2_3_s, .timeout = 90)
{
	struct h_broker b = {0};
	h_broker_up(&b, h_pki());
	char *port = h_strf("--broker-port=%d", b.internal_port), *log = NULL;
	const char *extra[] = {port, NULL};
	pid_t pid = spawn_bridge("bridge-lost", extra, &log);
	long long end = h_now_ms() + 20000;
	while (h_now_ms() < end && !h_count_in_file(log, "connected to"))
		h_sleep_ms(50);
	cr_assert(h_count_in_file(log, "connected to"), "%s", log);
	/* the SUBACKs too (they follow in milliseconds; nothing logs them): a connection lost
	 * between the CONNACK and the grant is a refusal, asked again after 0.5 s, doubling */
	h_sleep_ms(1000);
	h_broker_stop(&b);
	long d[4];
	for (int pub = 0; pub < 2; pub++) {
		logged_delays(log, pub, d, 4);
		for (int i = 0; i < 4; i++)
			cr_expect_eq(d[i], 1000 * (i + 1), "%s connection, attempt %d: %ld ms (%s)",
			             pub ? "publishing" : "receiving", i + 1, d[i], log);
	}
	cr_expect_eq(h_stop(pid, 20000), 0);
	free(port);
	free(log);
	h_broker_free(&b);
}

/* A broker that refuses the bridge (here: run with a revoked device's certificate, the ACL
 * refuses its subscriptions and the broker's plugin drops it, before or after the SUBACK) is
 * asked again after 0.5 s, doubling: each attempt's TCP, TLS and CONNACK succeed, which must
 * not reset the wait. */
Test(bridge_health, a_refusing_broker_is_asked_again_less_and_less_often, .timeout = 90)
{
	struct h_broker b = {0};
	h_broker_up(&b, h_pki());
	char *log = NULL;
	pid_t pid = spawn_bridge_as("bridge-kicked", &b, "dev-revoked", "outpost-bridge-kicked",
	                            &log);
	long d[4];
	logged_delays(log, 0, d, 4);
	for (int i = 0; i < 4; i++)
		cr_expect_eq(d[i], 500 << i, "attempt %d: %ld ms (%s)", i + 1, d[i], log);
	/* the plugin may drop it before the SUBACK arrives: the refusal is not always logged */
	cr_expect_geq(h_count_in_file(log, "connected to"), 4, "%s", log);
	cr_expect_eq(h_stop(pid, 20000), 0);
	free(log);
	h_broker_free(&b);
}

/* A bridge run with a device's certificate (a wrong --cert-file, a wrong ACL) connects, but the
 * broker refuses its subscriptions: the log says so, naming the ACL, instead of a silent bridge
 * that receives nothing, and the bridge asks again after 0.5 s, doubling, on the same
 * connection (an ACL that is mended is taken up without a restart, and what was granted goes
 * on flowing meanwhile). */
Test(bridge_health, a_bridge_whose_subscriptions_are_refused_says_so_and_asks_again,
     .timeout = 90)
{
	struct h_broker b = {0};
	h_broker_up(&b, h_pki());
	char *log = NULL;
	pid_t pid = spawn_bridge_as("bridge-refused", &b, "dev-c", "outpost-bridge-refused", &log);
	long long end = h_now_ms() + 30000;
	while (h_now_ms() < end && h_count_in_file(log, "asking again in") < 4)
		h_sleep_ms(100);
	cr_expect_eq(h_count_in_file(log, "connected to"), 1, "not one connection (%s)", log);
	/* four plain uplink subscriptions and the status one, all refused, in each round */
	cr_expect_geq(h_count_in_file(log, "broker refused a subscription (reason 0x87): check the ACL"),
		      20, "(%s)", log);
	FILE *f = fopen(log, "r");
	char line[1024];
	int got = 0;
	while (f && got < 4 && fgets(line, sizeof(line), f)) {
		static const char said[] = "5 of 5 subscriptions refused; asking again in ";
		char *p = strstr(line, said);
		if (!p)
			continue;
		long ms = strtol(p + sizeof(said) - 1, NULL, 10);
		cr_expect_eq(ms, 500L << got, "round %d: %ld ms (%s)", got + 1, ms, log);
		got++;
	}
	if (f)
		fclose(f);
	cr_expect_eq(got, 4, "(%s)", log);
	cr_expect_eq(h_stop(pid, 20000), 0);
	free(log);
	h_broker_free(&b);
}
