/* test_bridge_reject.c - bad input published with a valid device certificate: garbage,
 * truncated protobuf, oversized fields, a bad signature, another device's envelope, replays,
 * reused seqs, wrong kinds. Each is rejected and counted per reason, nothing is stored, the
 * bridge keeps running, the 5th consecutive rejection quarantines the device and
 * `outpostctl device release` lets it back. Revoked devices are refused. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "h_bridge.h"
#include "h_device.h"
#include "h_mqtt.h"
#include "h_simdev.h"
#include "harness.h"
#include "outpost.pb-c.h"
#include "wire_env.h"
#include "wire_msg.h"

static struct h_broker b;
static struct h_bridge br;
static struct h_mqtt *dev;
static struct h_simdev_opts so; /* only for batch bodies */

static int64_t q(const char *fmt, const char *arg) __attribute__((format(printf, 1, 0)));
static int64_t q(const char *fmt, const char *arg)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	char *sql = h_strf(fmt, arg);
#pragma GCC diagnostic pop
	int64_t v = h_store_i64(br.store, sql, 0);
	free(sql);
	return v;
}

static char *rejections_sql(const char *device, const char *reason)
{
	return h_strf("SELECT COALESCE(SUM(r.count), 0) FROM rejections r JOIN devices d ON"
	              " d.id = r.device WHERE d.device_id = '%s' AND r.reason = '%s'",
	              device, reason);
}

static void wait_rejections(const char *device, const char *reason, int64_t n)
{
	char *sql = rejections_sql(device, reason);
	int64_t v = h_store_wait_i64(br.store, sql, H_AT_LEAST, n, 10000);
	free(sql);
	cr_assert_eq(v, n, "%s: rejections for %s", device, reason);
}

static char *stored_sql(const char *device)
{
	return h_strf("SELECT COUNT(*) FROM envelopes e JOIN devices d ON d.id = e.device"
	              " WHERE d.device_id = '%s'",
	              device);
}

static int64_t stored(const char *device)
{
	char *sql = stored_sql(device);
	int64_t v = h_store_i64(br.store, sql, 0);
	free(sql);
	return v;
}

static void wait_stored(const char *device, int64_t n)
{
	char *sql = stored_sql(device);
	int64_t v = h_store_wait_i64(br.store, sql, H_AT_LEAST, n, 10000);
	free(sql);
	cr_assert_eq(v, n, "%s: envelopes stored", device);
}

static const char *state(const char *device)
{
	static char s[32];
	const char *states[] = {"unenrolled", "active", "quarantined", "revoked", "deactivated"};
	for (size_t i = 0; i < 5; i++) {
		char *sql =
		    h_strf("SELECT COUNT(*) FROM devices WHERE device_id = '%s' AND state = '%s'",
		           device, states[i]);
		int64_t n = h_store_i64(br.store, sql, 0);
		free(sql);
		if (n == 1)
			return strcpy(s, states[i]);
	}
	return "none";
}

static void pub(struct h_mqtt *c, const char *device, const char *suffix, const void *p, size_t n)
{
	char *topic = h_strf("outpost/v1/%s/%s", device, suffix);
	cr_assert_eq(h_mqtt_pub(c, topic, p, n, 1, 0), 0, "publish on %s", topic);
	free(topic);
}

/* body (freed here) sealed by signer's key in pki as device's envelope */
static uint8_t *seal_in(const char *pki, const char *signer, uint32_t kind, const char *device,
                        uint64_t seq, uint8_t *body, size_t blen, size_t *len)
{
	char *name = h_strf("devices/%s", signer);
	uint8_t *env = h_seal(pki, name, kind, device, seq, body, blen, len);
	free(name);
	free(body);
	return env;
}

static uint8_t *batch_in(const char *pki, const char *signer, const char *device, uint64_t seq,
                         uint64_t prev, size_t *len)
{
	size_t blen;
	uint8_t *body = h_batch_body(&so, seq, prev, &blen);
	return seal_in(pki, signer, WIRE_KIND_BATCH, device, seq, body, blen, len);
}

static uint8_t *batch(const char *signer, const char *device, uint64_t seq, uint64_t prev,
                      size_t *len)
{
	return batch_in(h_pki(), signer, device, seq, prev, len);
}

static uint8_t *birth_in(const char *pki, const char *signer, const char *device, uint64_t seq,
                         size_t *len)
{
	size_t blen;
	uint8_t *body = h_birth_body(pki, signer, 3, 0, &blen);
	return seal_in(pki, signer, WIRE_KIND_BIRTH, device, seq, body, blen, len);
}

static uint8_t *birth(const char *signer, const char *device, uint64_t seq, size_t *len)
{
	return birth_in(h_pki(), signer, device, seq, len);
}

static struct h_mqtt *connect_as(const char *id)
{
	char *uri = h_strf("ssl://127.0.0.1:%d", b.mqtts_port);
	char *name = h_strf("devices/%s", id);
	struct h_mqtt *c = h_mqtt_connect(uri, h_pki(), name, id, NULL);
	free(uri);
	free(name);
	return c;
}

static void setup(void)
{
	memset(&b, 0, sizeof(b));
	so = (struct h_simdev_opts){.rows = 2, .cols = 3, .t0_ms = 1700000000000LL};
	h_broker_up(&b, h_pki());
	h_bridge_init(&br, &b, NULL, "reject");
	h_bridge_start(&br);
	dev = connect_as("dev-a");
	cr_assert_not_null(dev, "dev-a cannot connect");
}

static void teardown(void)
{
	h_mqtt_close(dev);
	h_bridge_free(&br);
	h_broker_free(&b);
}

TestSuite(bridge_reject, .init = setup, .fini = teardown, .timeout = 120);

Test(bridge_reject, five_bad_messages_quarantine_release_lets_back)
{
	size_t n, n2;
	uint8_t *birth1 = birth("dev-a", "dev-a", 1, &n);
	pub(dev, "dev-a", "birth", birth1, n);
	uint8_t *ok = batch("dev-a", "dev-a", 2, 0, &n2);
	pub(dev, "dev-a", "telemetry", ok, n2);
	free(ok);
	wait_stored("dev-a", 1);

	/* 1. garbage bytes */
	const char garbage[] = "\x00\xff garbage, not protobuf \x01\x02";
	pub(dev, "dev-a", "telemetry", garbage, sizeof(garbage) - 1);
	wait_rejections("dev-a", "decode", 1);

	/* 2. truncated protobuf */
	uint8_t *b3 = batch("dev-a", "dev-a", 3, 2, &n);
	pub(dev, "dev-a", "telemetry", b3, n / 2);
	free(b3);
	wait_rejections("dev-a", "decode", 2);

	/* 3. oversized field: a 300-character agent version (limit 64) */
	Outpost__Birth bad = OUTPOST__BIRTH__INIT;
	char agent[301], *path = h_strf("%s/devices/dev-a.crt", h_pki());
	char *pem = h_read_file(path, NULL);
	free(path);
	uint8_t boot[16] = {1};
	memset(agent, 'x', 300);
	agent[300] = '\0';
	bad.agent_version = agent;
	bad.boot_id.data = boot;
	bad.boot_id.len = sizeof(boot);
	bad.cert_pem = pem;
	size_t blen = outpost__birth__get_packed_size(&bad);
	uint8_t *body = malloc(blen);
	outpost__birth__pack(&bad, body);
	uint8_t *big =
	    h_seal(h_pki(), "devices/dev-a", WIRE_KIND_BIRTH, "dev-a", 4, body, blen, &n);
	pub(dev, "dev-a", "birth", big, n);
	free(big);
	free(body);
	free(pem);
	wait_rejections("dev-a", "oversize", 1);

	/* 4. bad signature: dev-a's envelope signed with dev-b's key */
	uint8_t *forged = batch("dev-b", "dev-a", 5, 2, &n);
	pub(dev, "dev-a", "telemetry", forged, n);
	free(forged);
	wait_rejections("dev-a", "bad_signature", 1);
	cr_expect_str_eq(state("dev-a"), "active");

	/* 5. another device's (valid) envelope on this device's topic: the fifth in a row */
	uint8_t *other = batch("dev-b", "dev-b", 6, 0, &n);
	pub(dev, "dev-a", "telemetry", other, n);
	free(other);
	wait_rejections("dev-a", "id_mismatch", 1);
	cr_expect_str_eq(state("dev-a"), "quarantined");
	cr_expect_eq(q("SELECT COUNT(*) FROM events e JOIN devices d ON d.id = e.device WHERE"
	               " d.device_id = '%s' AND e.type = 'quarantined'",
	               "dev-a"),
	             1);

	/* Quarantined: even a valid batch is dropped and counted. */
	uint8_t *b7 = batch("dev-a", "dev-a", 7, 2, &n);
	pub(dev, "dev-a", "telemetry", b7, n);
	wait_rejections("dev-a", "quarantined", 1);
	cr_expect_eq(stored("dev-a"), 1, "nothing stored from bad or quarantined input");
	cr_expect_eq(kill(br.pid, 0), 0, "the bridge keeps running");
	cr_expect_eq(q("SELECT COUNT(*) FROM devices WHERE device_id = '%s'", "dev-b"), 0,
	             "dev-b gained nothing from its envelope on dev-a's topic");

	/* The operator releases it; the device's resend is stored. */
	char *out = NULL;
	cr_expect_eq(h_ctl(br.store, "device release dev-a", &out), 0, "%s", out);
	cr_expect(strstr(out, "quarantined -> active"), "%s", out);
	free(out);
	cr_expect_str_eq(state("dev-a"), "active");
	/* Like a device, resend until acknowledged: a copy that raced the release is dropped. */
	long long end = h_now_ms() + 10000;
	while (stored("dev-a") < 2 && h_now_ms() < end) {
		pub(dev, "dev-a", "telemetry", b7, n);
		h_sleep_ms(300);
	}
	wait_stored("dev-a", 2);
	cr_expect_eq(q("SELECT consecutive_rejects FROM devices WHERE device_id = '%s'", "dev-a"),
	             0);

	/* Counters survive in the store and show in outpostctl. */
	cr_expect_eq(h_ctl(br.store, "device show dev-a", &out), 0);
	cr_expect(strstr(out, "decode") && strstr(out, "bad_signature") &&
	              strstr(out, "oversize") && strstr(out, "id_mismatch") &&
	              strstr(out, "quarantined"),
	          "%s", out);
	free(out);
	free(b7);
	free(birth1);
}

Test(bridge_reject, replays_reuse_kind_and_unknown_device)
{
	size_t n, n2;
	uint8_t *birth1 = birth("dev-a", "dev-a", 1, &n);
	pub(dev, "dev-a", "birth", birth1, n);
	uint8_t *b2 = batch("dev-a", "dev-a", 2, 0, &n2);
	pub(dev, "dev-a", "telemetry", b2, n2);
	uint8_t *b4 = batch("dev-a", "dev-a", 4, 2, &n2);
	pub(dev, "dev-a", "telemetry", b4, n2);
	wait_stored("dev-a", 2);

	/* The same birth again (the broker redelivering it): a duplicate, not a rejection. */
	pub(dev, "dev-a", "birth", birth1, n);
	long long end = h_now_ms() + 10000;
	while (h_now_ms() < end &&
	       q("SELECT duplicates FROM devices WHERE device_id = '%s'", "dev-a") < 1)
		h_sleep_ms(20);
	cr_expect_eq(q("SELECT duplicates FROM devices WHERE device_id = '%s'", "dev-a"), 1);
	cr_expect_eq(q("SELECT consecutive_rejects FROM devices WHERE device_id = '%s'", "dev-a"),
	             0);
	/* A replayed birth: older than the last one seen. */
	size_t n5;
	uint8_t *birth5 = birth("dev-a", "dev-a", 5, &n5);
	pub(dev, "dev-a", "birth", birth5, n5);
	free(birth5);
	pub(dev, "dev-a", "birth", birth1, n);
	wait_rejections("dev-a", "replayed", 1);
	/* The exact same batch again: a duplicate, re-acknowledged, not a rejection. */
	pub(dev, "dev-a", "telemetry", b4, n2);
	end = h_now_ms() + 10000;
	while (h_now_ms() < end &&
	       q("SELECT duplicates FROM devices WHERE device_id = '%s'", "dev-a") < 2)
		h_sleep_ms(20);
	cr_expect_eq(q("SELECT duplicates FROM devices WHERE device_id = '%s'", "dev-a"), 2);
	cr_expect_eq(q("SELECT consecutive_rejects FROM devices WHERE device_id = '%s'", "dev-a"),
	             0, "a duplicate is not a rejection");
	/* A seq reused for different content. */
	so.rows = 3;
	uint8_t *reuse = batch("dev-a", "dev-a", 4, 2, &n);
	pub(dev, "dev-a", "telemetry", reuse, n);
	free(reuse);
	wait_rejections("dev-a", "seq_reused", 1);
	/* A durable seq at or below the frontier that was never stored. */
	uint8_t *old = batch("dev-a", "dev-a", 3, 2, &n);
	pub(dev, "dev-a", "telemetry", old, n);
	free(old);
	wait_rejections("dev-a", "too_old", 1);
	/* A birth on the telemetry topic. */
	uint8_t *birth9 = birth("dev-a", "dev-a", 9, &n);
	pub(dev, "dev-a", "telemetry", birth9, n);
	free(birth9);
	wait_rejections("dev-a", "kind_mismatch", 1);
	cr_expect_eq(q("SELECT consecutive_rejects FROM devices WHERE device_id = '%s'", "dev-a"),
	             3);
	cr_expect_eq(stored("dev-a"), 2);
	cr_expect_eq(q("SELECT COUNT(*) FROM readings r JOIN devices d ON d.id = r.device WHERE"
	               " d.device_id = '%s'",
	               "dev-a"),
	             2 * 2 * 3, "readings of the two good batches only");

	/* dev-c sends a batch before any birth. */
	struct h_mqtt *c = connect_as("dev-c");
	cr_assert_not_null(c);
	uint8_t *early = batch("dev-c", "dev-c", 5, 0, &n);
	pub(c, "dev-c", "telemetry", early, n);
	free(early);
	wait_rejections("dev-c", "unknown_device", 1);
	cr_expect_eq(stored("dev-c"), 0);
	h_mqtt_close(c);
	free(b2);
	free(b4);
	free(birth1);
}

Test(bridge_reject, revoked_devices_are_refused)
{
	size_t n, len;
	char *topic, *payload;
	/* The broker's plugin lets the revoked certificate publish nothing: the PUBLISH is
	 * refused (0x87, not authorised) and the client disconnected at the plugin's next tick. */
	struct h_mqtt *r = connect_as("dev-revoked");
	cr_assert_not_null(r, "the handshake was refused (a crlfile on the listener?)");
	int rc = h_mqtt_pub(r, "outpost/v1/dev-revoked/telemetry", "x", 1, 1, 0);
	cr_expect_eq(rc, 0x87, "dev-revoked's publish: reason 0x%02x, want 0x87 (not authorised)",
	             rc);
	int got = 0;
	long long end = h_now_ms() + 10000;
	while (h_now_ms() < end && (got = h_mqtt_recv(r, &topic, &payload, &len, 200)) >= 0) {
		if (got == 1) {
			free(topic);
			free(payload);
		}
	}
	cr_expect_eq(got, -1, "dev-revoked is still connected after 10 s");
	h_mqtt_close(r);

	/* The bridge refuses a birth carrying a certificate the CRL revokes: another device's
	 * on dev-b's topic is a forgery (its CN), which does not revoke dev-b... */
	struct h_mqtt *c = connect_as("dev-b");
	cr_assert_not_null(c);
	size_t blen;
	uint8_t *body = h_birth_body(h_pki(), "dev-revoked", 2, 0, &blen);
	uint8_t *env =
	    h_seal(h_pki(), "devices/dev-revoked", WIRE_KIND_BIRTH, "dev-b", 1, body, blen, &n);
	pub(c, "dev-b", "birth", env, n);
	free(env);
	free(body);
	wait_rejections("dev-b", "cert_cn", 1);
	cr_expect_eq(stored("dev-b"), 0);
	cr_expect_eq(h_store_i64(br.store,
	                         "SELECT COUNT(*) FROM devices WHERE device_id = 'dev-b' AND"
	                         " state = 'revoked'",
	                         0),
	             0, "dev-b revoked by another device's certificate");

	/* ... and every message of a device revoked in the store. */
	size_t n2;
	uint8_t *b1 = birth("dev-c", "dev-c", 1, &n);
	struct h_mqtt *dc = connect_as("dev-c");
	cr_assert_not_null(dc);
	pub(dc, "dev-c", "birth", b1, n);
	uint8_t *b2 = batch("dev-c", "dev-c", 2, 0, &n2);
	pub(dc, "dev-c", "telemetry", b2, n2);
	wait_stored("dev-c", 1);
	char *out = NULL;
	cr_expect_eq(h_ctl(br.store, "device revoke dev-c --reason stolen", &out), 0, "%s", out);
	free(out);
	uint8_t *b3 = batch("dev-c", "dev-c", 3, 2, &n2);
	pub(dc, "dev-c", "telemetry", b3, n2);
	wait_rejections("dev-c", "revoked", 1);
	cr_expect_eq(stored("dev-c"), 1, "nothing stored after the revocation");
	cr_expect_str_eq(state("dev-c"), "revoked");
	/* A Birth with the enrolled key does not lift it: only a new key does (a rotation,
	 * test_bridge_health). */
	uint8_t *b4 = birth("dev-c", "dev-c", 4, &n);
	pub(dc, "dev-c", "birth", b4, n);
	wait_rejections("dev-c", "revoked", 2);
	cr_expect_str_eq(state("dev-c"), "revoked");
	free(b4);
	/* Release refuses; revoking again is done already. */
	cr_expect_eq(h_ctl(br.store, "device release dev-c", &out), 1, "%s", out);
	free(out);
	cr_expect_eq(h_ctl(br.store, "device revoke dev-c", &out), 0, "%s", out);
	cr_expect(strstr(out, "dev-c: already revoked"), "%s", out);
	free(out);
	h_mqtt_close(dc);
	h_mqtt_close(c);
	free(b1);
	free(b2);
	free(b3);
}

/* The store refuses a Birth with a new key for good (here a trigger; in production, say, a
 * damaged row): the writer drops it, unacknowledged, and the verifiers forget its key at
 * once. An envelope signed with that key is then refused as a bad signature, as any forgery,
 * instead of waiting unacknowledged as if the key were about to be stored. */
Test(bridge_reject, a_birth_the_store_refuses_leaves_no_pending_key)
{
	size_t n;
	uint8_t *m = birth("dev-a", "dev-a", 1, &n);
	pub(dev, "dev-a", "birth", m, n);
	free(m);
	m = batch("dev-a", "dev-a", 2, 0, &n);
	pub(dev, "dev-a", "telemetry", m, n);
	free(m);
	wait_stored("dev-a", 1);
	h_store_i64(br.store,
	            "CREATE TRIGGER refuse_new_keys BEFORE UPDATE OF pubkey ON devices"
	            " WHEN NEW.pubkey IS NOT OLD.pubkey BEGIN SELECT RAISE(ABORT, 'test');"
	            " END",
	            0);
	char *k2 = h_pki_issue_dated("store-refuses", "dev-a", "20200101000000Z",
	                             "20991231000000Z");
	m = birth_in(k2, "dev-a", "dev-a", 3, &n);
	pub(dev, "dev-a", "birth", m, n);
	free(m);
	cr_assert(h_log_wait(br.log, "message dropped: the store refuses", 1, 30000), "%s",
	          br.log);
	m = batch_in(k2, "dev-a", "dev-a", 4, 2, &n);
	pub(dev, "dev-a", "telemetry", m, n);
	free(m);
	wait_rejections("dev-a", "bad_signature", 1);
	cr_expect_eq(stored("dev-a"), 1);
	free(k2);
}
