/* test_broker.c - the real broker configuration (docker/mosquitto via run-broker.sh) with the
 * real PKI (scripts/provision-certs.sh): mutual TLS on every listener, the ACL, revocation.
 * Each test starts its own mosquitto on free loopback ports and stops it in the fixture.
 *
 * "Receives nothing" is never just a timeout: after the message that must not arrive, an
 * allowed message (a marker) is published on the same path, and the marker must be the first
 * thing to arrive. mosquitto delivers in order, so anything refused-but-delivered would come
 * first. */
#include <criterion/criterion.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h_mqtt.h"
#include "harness.h"
#include "wire_env.h"
#include "wire_sign.h"

#define RC_SUCCESS 0x00
#define RC_NO_SUBSCRIBERS 0x10
#define RC_NOT_AUTHORIZED 0x87
#define WAIT_MS 5000

static struct h_broker broker;
static char *uri_mqtts, *uri_wss, *uri_internal;

static void start_broker(void)
{
	memset(&broker, 0, sizeof(broker));
	h_broker_start(&broker, h_pki());
	uri_mqtts = h_strf("ssl://127.0.0.1:%d", broker.mqtts_port);
	uri_wss = h_strf("wss://localhost:%d/mqtt", broker.wss_port);
	uri_internal = h_strf("ssl://127.0.0.1:%d", broker.internal_port);
}

static void stop_broker(void)
{
	h_broker_free(&broker);
	free(uri_mqtts);
	free(uri_wss);
	free(uri_internal);
	uri_mqtts = uri_wss = uri_internal = NULL;
}

TestSuite(broker, .init = start_broker, .fini = stop_broker, .timeout = 120);

/* Connect as pki identity `name` (devices/dev-a, bridge, operator); the test fails if refused. */
static struct h_mqtt *connect_as(const char *uri, const char *name, const char *client_id)
{
	int why = 0;
	struct h_mqtt *c = h_mqtt_connect(uri, h_pki(), name, client_id, &why);
	cr_assert_not_null(c, "%s as %s refused (Paho %d); broker log: %s", uri, name, why,
			   broker.log);
	return c;
}

/* A private broker's listener admits identity `name` of pki (the TLS handshake and CONNECT
 * succeed); with `topic`, a publish there is refused as not authorised (a revoked device). */
static void expect_admitted(const char *uri, const char *pki, const char *name,
			    const char *client_id, const char *topic, const char *what)
{
	struct h_mqtt *c = h_mqtt_connect(uri, pki, name, client_id, NULL);
	cr_expect_not_null(c, "%s: %s refused %s", what, uri, name);
	if (c && topic)
		cr_expect_eq(h_mqtt_pub(c, topic, "x", 1, 1, 0), RC_NOT_AUTHORIZED, "%s: %s", what,
			     topic);
	h_mqtt_close(c);
}

/* The bridge, subscribed to `filter` on the internal listener. */
static struct h_mqtt *bridge_on(const char *filter)
{
	struct h_mqtt *b = connect_as(uri_internal, "bridge", "outpost-bridge-test");
	cr_assert_eq(h_mqtt_sub(b, filter, 1), 1, "bridge subscribes %s with QoS 1", filter);
	return b;
}

/* Expect the next message on c to be exactly (topic, payload). */
static void expect_next(struct h_mqtt *c, const char *who, const char *topic, const void *payload,
			size_t len)
{
	char *t = NULL, *p = NULL;
	size_t n = 0;
	int rc = h_mqtt_recv(c, &t, &p, &n, WAIT_MS);
	cr_assert_eq(rc, 1, "%s: nothing arrived on %s within %d ms", who, topic, WAIT_MS);
	cr_expect_str_eq(t, topic, "%s: first message arrived on %s", who, t);
	cr_expect_eq(n, len, "%s: payload of %zu bytes, want %zu", who, n, len);
	if (n == len)
		cr_expect_arr_eq(p, payload, len, "%s: payload", who);
	free(t);
	free(p);
}

/* A real telemetry payload: an Envelope sealed with dev-a's key. */
static uint8_t *sealed_telemetry(const char *device, uint64_t seq, size_t *len)
{
	struct wire_key *k = NULL;
	char *path = h_strf("%s/devices/%s.key", h_pki(), device);
	cr_assert_eq(wire_key_load(path, &k, NULL), WIRE_OK);
	free(path);
	struct wire_env e = {.kind = WIRE_KIND_BATCH, .seq = seq, .sent_at_ms = 1763850000000LL,
			     .body = (const uint8_t *)"\x08\x01", .body_len = 2};
	snprintf(e.device_id, sizeof(e.device_id), "%s", device);
	uint8_t *out = NULL;
	cr_assert_eq(wire_env_seal(k, &e, &out, len), WIRE_OK);
	wire_key_free(k);
	return out;
}

static void device_publishes_and_bridge_receives(const char *uri)
{
	struct h_mqtt *bridge = bridge_on("outpost/v1/+/telemetry");
	struct h_mqtt *dev = connect_as(uri, "devices/dev-a", "dev-a");
	size_t len;
	uint8_t *env = sealed_telemetry("dev-a", 17, &len);

	cr_expect_eq(h_mqtt_pub(dev, "outpost/v1/dev-a/telemetry", env, len, 1, 0), RC_SUCCESS);

	char *t = NULL, *p = NULL;
	size_t n = 0;
	cr_assert_eq(h_mqtt_recv(bridge, &t, &p, &n, WAIT_MS), 1, "bridge got nothing");
	cr_expect_str_eq(t, "outpost/v1/dev-a/telemetry");
	cr_assert_eq(n, len);
	cr_expect_arr_eq(p, env, len);
	/* what arrived is the device's envelope, intact and verifiable */
	struct wire_env got;
	struct wire_key *k = NULL;
	struct wire_pubkey pub;
	char *path = h_strf("%s/devices/dev-a.key", h_pki());
	cr_assert_eq(wire_key_load(path, &k, NULL), WIRE_OK);
	wire_key_public(k, &pub);
	cr_assert_eq(wire_env_decode((const uint8_t *)p, n, &got, NULL), WIRE_OK);
	cr_expect_eq(wire_env_verify(&got, &pub), WIRE_OK);
	cr_expect_eq(got.seq, 17);
	wire_key_free(k);
	free(path);
	free(t);
	free(p);
	free(env);
	h_mqtt_close(dev);
	h_mqtt_close(bridge);
}

Test(broker, device_publishes_over_mqtts)
{
	device_publishes_and_bridge_receives(uri_mqtts);
}

Test(broker, device_publishes_over_wss)
{
	device_publishes_and_bridge_receives(uri_wss);
}

Test(broker, device_may_write_only_its_own_uplink_topics)
{
	struct h_mqtt *bridge = bridge_on("outpost/v1/#");
	struct h_mqtt *dev = connect_as(uri_mqtts, "devices/dev-a", "dev-a");
	const char *refused[] = {
		"outpost/v1/dev-b/telemetry", /* another device's topic */
		"outpost/v1/dev-b/birth",
		"outpost/v1/dev-a/ack",	      /* downlink topics are the bridge's */
		"outpost/v1/dev-a/tasks",
		"outpost/v1/dev-a/other",
		"outpost/v1/outpost-bridge/telemetry",
		"elsewhere/dev-a",
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		cr_expect_eq(h_mqtt_pub(dev, refused[i], "forged", 6, 1, 0), RC_NOT_AUTHORIZED,
			     "%s", refused[i]);

	/* none of them reached the bridge: its first message is the marker */
	cr_expect_eq(h_mqtt_pub(dev, "outpost/v1/dev-a/telemetry", "marker", 6, 1, 0), RC_SUCCESS);
	expect_next(bridge, "bridge", "outpost/v1/dev-a/telemetry", "marker", 6);

	/* every uplink topic of its own is allowed and arrives */
	const char *own[] = {"outpost/v1/dev-a/birth", "outpost/v1/dev-a/tasks/poll",
			     "outpost/v1/dev-a/tasks/result", "outpost/v1/dev-a/status"};
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
		cr_expect_eq(h_mqtt_pub(dev, own[i], "ok", 2, 1, 0), RC_SUCCESS, "%s", own[i]);
		expect_next(bridge, "bridge", own[i], "ok", 2);
	}
	h_mqtt_close(dev);
	h_mqtt_close(bridge);
}

Test(broker, device_subscriptions_limited_to_its_own_downlink)
{
	/* mosquitto 2.0.11 does not check SUBSCRIBE against the ACL file (the default check
	 * returns success for MOSQ_ACL_SUBSCRIBE, "FIXME" in src/security_default.c). The
	 * outpost_auth plugin refuses every device subscription but its own ack and tasks, and
	 * the ACL file still filters each delivery. */
	struct h_mqtt *bridge = bridge_on("outpost/v1/+/telemetry");
	struct h_mqtt *a = connect_as(uri_mqtts, "devices/dev-a", "dev-a");
	struct h_mqtt *b = connect_as(uri_mqtts, "devices/dev-b", "dev-b");
	const char *refused[] = {"#", "outpost/#", "outpost/v1/+/telemetry", "outpost/v1/dev-a/#",
				 "outpost/v1/dev-b/ack", "outpost/v1/dev-a/telemetry", "$SYS/#"};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		cr_expect_eq(h_mqtt_sub(a, refused[i], 1), RC_NOT_AUTHORIZED, "%s", refused[i]);
	cr_expect_eq(h_mqtt_sub(a, "outpost/v1/dev-a/ack", 1), 1, "its own ack");
	cr_expect_eq(h_mqtt_sub(a, "outpost/v1/dev-a/tasks", 1), 1, "its own tasks");

	/* dev-b's telemetry and dev-a's own are published (the bridge receives them) ... */
	cr_expect_eq(h_mqtt_pub(b, "outpost/v1/dev-b/telemetry", "b-data", 6, 1, 0), RC_SUCCESS);
	expect_next(bridge, "bridge", "outpost/v1/dev-b/telemetry", "b-data", 6);
	cr_expect_eq(h_mqtt_pub(a, "outpost/v1/dev-a/telemetry", "a-data", 6, 1, 0), RC_SUCCESS);
	expect_next(bridge, "bridge", "outpost/v1/dev-a/telemetry", "a-data", 6);
	/* ... and an ack for dev-b. Then the bridge acks dev-a: that must be the first (and
	 * only) thing dev-a receives. */
	struct h_mqtt *bpub = connect_as(uri_internal, "bridge", "outpost-bridge-pub");
	cr_expect_eq(h_mqtt_pub(bpub, "outpost/v1/dev-b/ack", "ack-b", 5, 1, 0), RC_NO_SUBSCRIBERS);
	cr_expect_eq(h_mqtt_pub(bpub, "outpost/v1/dev-a/ack", "ack-a", 5, 1, 0), RC_SUCCESS);
	expect_next(a, "dev-a", "outpost/v1/dev-a/ack", "ack-a", 5);
	char *t = NULL, *p = NULL;
	cr_expect_eq(h_mqtt_recv(a, &t, &p, NULL, 300), 0, "dev-a received %s too", t ? t : "");
	free(t);
	free(p);
	h_mqtt_close(bpub);
	h_mqtt_close(a);
	h_mqtt_close(b);
	h_mqtt_close(bridge);
}

static void expect_refused(const char *uri, const char *pki, const char *name, const char *ca_pki,
			   const char *what)
{
	int why = 0;
	struct h_mqtt *c = h_mqtt_connect_ca(uri, pki, name, ca_pki, "dev-x", &why);
	cr_expect_null(c, "%s: connected to %s; broker log: %s", what, uri, broker.log);
	cr_expect_neq(why, 0, "%s", what);
	h_mqtt_close(c);
}

Test(broker, refused_without_a_client_certificate)
{
	expect_refused(uri_mqtts, h_pki(), NULL, h_pki(), "no certificate, mqtts");
	expect_refused(uri_wss, h_pki(), NULL, h_pki(), "no certificate, wss");
	expect_refused(uri_internal, h_pki(), NULL, h_pki(), "no certificate, internal");
	/* control: the same listeners accept a valid identity */
	h_mqtt_close(connect_as(uri_mqtts, "devices/dev-c", "dev-c"));
	h_mqtt_close(connect_as(uri_wss, "devices/dev-c", "dev-c"));
}

Test(broker, refused_with_a_certificate_from_another_ca)
{
	/* pki_other's dev-a has the same CN and a CA of the same name, but another CA key; the
	 * client trusts the real CA, so only the broker's check can refuse it. */
	expect_refused(uri_mqtts, h_pki_other(), "devices/dev-a", h_pki(), "other CA, mqtts");
	expect_refused(uri_wss, h_pki_other(), "devices/dev-a", h_pki(), "other CA, wss");
	expect_refused(uri_internal, h_pki_other(), "bridge", h_pki(), "other CA bridge, internal");
}

/* Issue <dir>/<name>.crt (client certificate, CN cn, a new Ed25519 key in <dir>/<name>.key)
 * from the real test CA with explicit validity dates (openssl ca -startdate/-enddate,
 * YYYYMMDDHHMMSSZ). The CA's database is a fresh one in <dir>/issuer: the shared PKI is not
 * touched. <dir>/ca.crt is the real CA, for clients that take their trust from dir. */
static void issue_dated(const char *dir, const char *name, const char *cn, const char *start,
			const char *end)
{
	const char *pki = h_pki();
	char *cmd = h_strf(
		"set -e; cd %s; mkdir -p issuer/.ca/issued devices; cp %s/ca.crt %s/ca.key issuer/; cp issuer/ca.crt .; "
		": > issuer/.ca/index.txt; echo 01 > issuer/.ca/serial; "
		"echo 01 > issuer/.ca/crlnumber; "
		"openssl genpkey -algorithm ed25519 -out %s.key; "
		"openssl req -new -config %s/certs/openssl.cnf -key %s.key -subj /CN=%s -out %s.csr; "
		"OUTPOST_PKI=%s/issuer openssl ca -batch -config %s/certs/openssl.cnf "
		"-extensions client_cert -notext -startdate %s -enddate %s -in %s.csr -out %s.crt",
		dir, pki, pki, name, h_source_dir(), name, cn, name, dir, h_source_dir(), start, end,
		name, name);
	char *out = NULL;
	cr_assert_eq(h_sh(cmd, &out, 60), 0, "%s\n%s", cmd, out);
	free(out);
	free(cmd);
}

Test(broker, refused_with_an_expired_certificate)
{
	/* the real CA, the right names, dates in the past: only the validity check refuses */
	char *old = h_tmpdir("pki-expired");
	issue_dated(old, "devices/dev-a", "dev-a", "20200101000000Z", "20210101000000Z");
	issue_dated(old, "bridge", "outpost-bridge", "20200101000000Z", "20210101000000Z");
	expect_refused(uri_mqtts, old, "devices/dev-a", h_pki(), "expired, mqtts");
	expect_refused(uri_wss, old, "devices/dev-a", h_pki(), "expired, wss");
	expect_refused(uri_internal, old, "bridge", h_pki(), "expired bridge, internal");
	/* control: the same recipe with current dates is admitted everywhere */
	char *now = h_tmpdir("pki-current");
	issue_dated(now, "devices/dev-a", "dev-a", "20200101000000Z", "20900101000000Z");
	issue_dated(now, "bridge", "outpost-bridge", "20200101000000Z", "20900101000000Z");
	expect_admitted(uri_mqtts, now, "devices/dev-a", "dev-a", NULL, "current, mqtts");
	expect_admitted(uri_wss, now, "devices/dev-a", "dev-a", NULL, "current, wss");
	expect_admitted(uri_internal, now, "bridge", "outpost-bridge-current", NULL,
			"current bridge, internal");
	free(old);
	free(now);
}

/* A revoked client that got through: it may not publish, receives nothing, and is gone soon. */
static void expect_powerless_then_gone(struct h_mqtt *c, const char *topic, const char *what)
{
	struct h_mqtt *bridge = bridge_on("outpost/v1/+/telemetry");
	int rc = h_mqtt_pub(c, topic, "x", 1, 1, 0);
	cr_expect(rc == RC_NOT_AUTHORIZED || rc < 0, "%s: publish answered 0x%02x", what, rc);
	/* a marker from a device in good standing, published after it: the first message the
	 * bridge receives must be the marker (what the broker routes arrives in order) */
	struct h_mqtt *good = h_mqtt_connect(uri_mqtts, h_pki(), "devices/dev-a", "dev-a", NULL);
	cr_assert_not_null(good);
	cr_assert_eq(h_mqtt_pub(good, "outpost/v1/dev-a/telemetry", "marker", 6, 1, 0), 0);
	char *t = NULL, *p = NULL;
	cr_expect_eq(h_mqtt_recv(bridge, &t, &p, NULL, 5000), 1, "%s: no marker", what);
	cr_expect(t && !strcmp(t, "outpost/v1/dev-a/telemetry"), "%s: the bridge received %s",
		  what, t ? t : "nothing");
	h_mqtt_close(good);
	free(t);
	free(p);
	t = p = NULL;
	/* disconnected by the broker within a few ticks */
	int gone = 0;
	for (int i = 0; i < 40 && !gone; i++) {
		gone = h_mqtt_recv(c, &t, &p, NULL, 100) < 0 || h_mqtt_pub(c, topic, "x", 1, 1, 0) < 0;
		free(t);
		free(p);
		t = p = NULL;
	}
	cr_expect(gone, "%s: still connected", what);
	h_mqtt_close(bridge);
}

Test(broker, revoked_certificate_is_powerless_on_every_listener)
{
	/* mosquitto 2.0.11 gives the TLS of websockets listeners to libwebsockets with only
	 * cafile/certfile/keyfile (src/websockets.c, mosq_websockets_init): crlfile would not be
	 * applied there, and on the other listeners it would be read only at start (see
	 * mosquitto.conf). The outpost_auth plugin is the CRL check of every listener: the
	 * handshake succeeds, every ACL check of a revoked certificate is refused and the client
	 * is disconnected. */
	const char *uris[] = {uri_wss, uri_mqtts, uri_internal};
	for (size_t i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
		struct h_mqtt *c =
			h_mqtt_connect(uris[i], h_pki(), "devices/dev-revoked", "dev-revoked", NULL);
		/* no listener has a crlfile: a crlfile back on one would refuse the handshake */
		cr_assert_not_null(c, "%s refused the handshake", uris[i]);
		cr_expect_eq(h_mqtt_sub(c, "outpost/v1/dev-revoked/ack", 1), RC_NOT_AUTHORIZED, "%s",
			     uris[i]);
		expect_powerless_then_gone(c, "outpost/v1/dev-revoked/telemetry", uris[i]);
		h_mqtt_close(c);
	}
}

/* A client id too long for the plugin's kick list (128 characters or more) does not save a
 * revoked certificate: it is kicked by its login instead. */
Test(broker, a_revoked_certificate_with_a_long_client_id_is_kicked_too)
{
	char id[201];
	memset(id, 'x', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	struct h_mqtt *c = h_mqtt_connect(uri_internal, h_pki(), "devices/dev-revoked", id, NULL);
	cr_assert_not_null(c, "the broker refused a 200-character client id");
	cr_expect_eq(h_mqtt_sub(c, "outpost/v1/dev-revoked/ack", 1), RC_NOT_AUTHORIZED);
	expect_powerless_then_gone(c, "outpost/v1/dev-revoked/telemetry", "long client id");
	h_mqtt_close(c);
}

Test(broker, revocation_applies_without_a_broker_restart, .timeout = 120)
{
	/* a private copy of the PKI, so revoking does not touch the shared one */
	char *dir = h_tmpdir("pki-copy");
	char *cmd = h_strf("cp -a %s/. %s/", h_pki(), dir);
	cr_assert_eq(h_sh(cmd, NULL, 30), 0);
	free(cmd);
	struct h_broker b = {0};
	h_broker_start(&b, dir);
	char *uri = h_strf("wss://localhost:%d/mqtt", b.wss_port);
	struct h_mqtt *c = h_mqtt_connect(uri, dir, "devices/dev-c", "dev-c", NULL);
	cr_assert_not_null(c);
	cr_expect_eq(h_mqtt_pub(c, "outpost/v1/dev-c/telemetry", "ok", 2, 1, 0), RC_NO_SUBSCRIBERS);
	cr_expect_eq(h_mqtt_pub(c, "outpost/v1/dev-c/status", "online", 6, 1, 1), RC_NO_SUBSCRIBERS);

	cmd = h_strf("%s/scripts/provision-certs.sh --out %s --revoke dev-c", h_source_dir(), dir);
	cr_assert_eq(h_sh(cmd, NULL, 60), 0);
	free(cmd);
	h_sleep_ms(1200); /* the plugin looks at the CRL file at most once a second */
	int denied = 0;
	for (int i = 0; i < 30 && !denied; i++) {
		int rc = h_mqtt_pub(c, "outpost/v1/dev-c/telemetry", "late", 4, 1, 0);
		denied = rc == RC_NOT_AUTHORIZED || rc < 0;
		if (!denied)
			h_sleep_ms(100);
	}
	cr_expect(denied, "the revoked device kept publishing");
	h_mqtt_close(c);
	/* the broker dropped its will when it disconnected it; the plugin says `offline` instead */
	char *internal = h_strf("ssl://127.0.0.1:%d", b.internal_port);
	struct h_mqtt *op = h_mqtt_connect(internal, dir, "operator", "operator-revocation", NULL);
	cr_assert_not_null(op);
	cr_assert_eq(h_mqtt_sub(op, "outpost/v1/dev-c/status", 1), 1);
	/* (the retained `online` comes first if the plugin's tick has not run yet) */
	int offline = 0;
	for (int i = 0; i < 3 && !offline; i++) {
		char *t = NULL, *p = NULL;
		size_t n = 0;
		if (h_mqtt_recv(op, &t, &p, &n, 5000) != 1)
			break;
		offline = n == 7 && !memcmp(p, "offline", 7);
		free(t);
		free(p);
	}
	cr_expect(offline, "the retained status did not become offline");
	h_mqtt_close(op);
	free(internal);
	/* new connections: powerless on 8883 and 443 alike (the plugin is the only CRL check) */
	char *mq = h_strf("ssl://127.0.0.1:%d", b.mqtts_port);
	expect_admitted(mq, dir, "devices/dev-c", "dev-c", "outpost/v1/dev-c/telemetry",
			"revoked, no crlfile");
	/* and nobody else is disturbed */
	expect_admitted(mq, dir, "devices/dev-a", "dev-a", NULL, "valid after a revocation");
	expect_admitted(uri, dir, "devices/dev-a", "dev-a", NULL, "valid after a revocation");
	h_broker_stop(&b); /* flushes mosquitto's log */
	cmd = h_strf("grep -q \"certificate revoked\" %s", b.log);
	cr_expect_eq(h_sh(cmd, NULL, 5), 0, "the broker log names the revocation");
	free(cmd);
	h_broker_free(&b);
	free(mq);
	free(uri);
	free(dir);
}

/* mosquitto reads a listener's crlfile only at start (and on SIGHUP, which 2.0.11 cannot take
 * routinely): an expired one refused every client of 8883 and 8884, the bridge included. The
 * plugin is the only CRL check; it keeps applying an expired CRL's revocations. */
Test(broker, an_expired_crl_locks_nobody_out, .timeout = 120)
{
	char *dir = h_tmpdir("pki-expired-crl");
	h_pki_gencrl(dir, 1, "-crl_lastupdate 20200101000000Z -crl_nextupdate 20210101000000Z");
	struct h_broker b = {0};
	h_broker_start(&b, dir);
	char *mq = h_strf("ssl://127.0.0.1:%d", b.mqtts_port);
	char *ws = h_strf("wss://localhost:%d/mqtt", b.wss_port);
	char *in = h_strf("ssl://127.0.0.1:%d", b.internal_port);
	expect_admitted(mq, dir, "devices/dev-a", "dev-a", NULL, "expired CRL");
	expect_admitted(ws, dir, "devices/dev-a", "dev-a", NULL, "expired CRL");
	expect_admitted(in, dir, "bridge", "outpost-bridge-crl", NULL, "expired CRL");
	/* its revocations still apply */
	expect_admitted(mq, dir, "devices/dev-revoked", "dev-revoked",
			"outpost/v1/dev-revoked/telemetry", "expired CRL, revoked device");
	h_broker_free(&b);
	free(mq);
	free(ws);
	free(in);
	free(dir);
}

/* A retained envelope would be replayed to every bridge on every reconnect: a device may retain
 * only its status. */
Test(broker, devices_may_retain_only_their_status)
{
	struct h_mqtt *dev = connect_as(uri_mqtts, "devices/dev-b", "dev-b");
	const char *refused[] = {"outpost/v1/dev-b/telemetry", "outpost/v1/dev-b/birth",
				 "outpost/v1/dev-b/tasks/poll", "outpost/v1/dev-b/tasks/result"};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		cr_expect_eq(h_mqtt_pub(dev, refused[i], "kept", 4, 1, 1), RC_NOT_AUTHORIZED, "%s",
			     refused[i]);
	int rc = h_mqtt_pub(dev, "outpost/v1/dev-b/status", "online", 6, 1, 1);
	cr_expect(rc == RC_SUCCESS || rc == RC_NO_SUBSCRIBERS, "retained status refused: 0x%02x", rc);
	/* not retained: still fine */
	cr_expect_eq(h_mqtt_pub(dev, "outpost/v1/dev-b/telemetry", "now", 3, 1, 0), RC_NO_SUBSCRIBERS);
	/* clear the retained status, which other tests' wildcard subscriptions would receive */
	h_mqtt_pub(dev, "outpost/v1/dev-b/status", "", 0, 1, 1);
	h_mqtt_close(dev);
}

/* A certificate name that cannot stand in a topic level (provision-certs.sh refuses such names;
 * the CA may sign one all the same) owns no topic: a CN of "+" would have outpost/v1/+/ack,
 * every device's acks, as its own downlink. Its subscriptions and retained publishes are
 * refused, each said in the broker's log. */
Test(broker, a_certificate_name_that_is_no_topic_level_owns_no_topic)
{
	char *dir = h_tmpdir("pki-odd-cn");
	/* through the shell unquoted, then openssl -subj: \\+ and \\/ are a plain + and / */
	issue_dated(dir, "devices/plus", "\\\\+", "20200101000000Z", "20900101000000Z");
	issue_dated(dir, "devices/slash", "a\\\\/b", "20200101000000Z", "20900101000000Z");
	char *cmd = h_strf("for n in plus slash; do openssl x509 -noout -subject -nameopt RFC2253"
			   " -in %s/devices/$n.crt; done",
			   dir);
	char *out = NULL;
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s", out);
	cr_assert_str_eq(out, "subject=CN=\\+\nsubject=CN=a/b\n");
	free(out);
	free(cmd);
	int why = 0;
	struct h_mqtt *plus = h_mqtt_connect(uri_mqtts, dir, "devices/plus", "odd-plus", &why);
	cr_assert_not_null(plus, "CN + refused (Paho %d); broker log: %s", why, broker.log);
	struct h_mqtt *slash = h_mqtt_connect(uri_wss, dir, "devices/slash", "odd-slash", &why);
	cr_assert_not_null(slash, "CN a/b refused (Paho %d); broker log: %s", why, broker.log);
	const char *plus_refused[] = {"outpost/v1/+/ack", "outpost/v1/+/tasks"};
	for (size_t i = 0; i < 2; i++)
		cr_expect_eq(h_mqtt_sub(plus, plus_refused[i], 1), RC_NOT_AUTHORIZED, "%s",
			     plus_refused[i]);
	const char *slash_refused[] = {"outpost/v1/a/b/ack", "outpost/v1/a/b/tasks"};
	for (size_t i = 0; i < 2; i++)
		cr_expect_eq(h_mqtt_sub(slash, slash_refused[i], 1), RC_NOT_AUTHORIZED, "%s",
			     slash_refused[i]);
	cr_expect_eq(h_mqtt_pub(slash, "outpost/v1/a/b/status", "online", 6, 1, 1),
		     RC_NOT_AUTHORIZED);
	/* an ack for dev-a reaches neither */
	struct h_mqtt *bpub = connect_as(uri_internal, "bridge", "outpost-bridge-oddcn");
	h_mqtt_pub(bpub, "outpost/v1/dev-a/ack", "ack-a", 5, 1, 0);
	char *t = NULL, *p = NULL;
	cr_expect_eq(h_mqtt_recv(plus, &t, &p, NULL, 300), 0, "CN + received %s", t ? t : "");
	free(t);
	free(p);
	/* the plugin said why, once for each */
	const char *said[] = {
		"outpost_auth: denied +: subscribe to 'outpost/v1/+/ack': a certificate name",
		"outpost_auth: denied +: subscribe to 'outpost/v1/+/tasks': a certificate name",
		"outpost_auth: denied a/b: subscribe to 'outpost/v1/a/b/ack': a certificate name",
		"outpost_auth: denied a/b: retained publish to 'outpost/v1/a/b/status': a"
		" certificate name with '/', '+' or '#' cannot stand in a topic"};
	for (size_t i = 0; i < sizeof(said) / sizeof(said[0]); i++)
		cr_expect_eq(h_count_in_file(broker.log, said[i]), 1, "'%s' in %s", said[i],
			     broker.log);
	h_mqtt_close(bpub);
	h_mqtt_close(plus);
	h_mqtt_close(slash);
	free(dir);
}

/* mosquitto 2.0.11 applies max_packet_size on MQTT listeners only; message_size_limit keeps an
 * oversize publish on 443 from reaching the bridge. */
Test(broker, an_oversize_publish_reaches_nobody)
{
	struct h_mqtt *bridge = bridge_on("outpost/v1/+/telemetry");
	struct h_mqtt *dev = connect_as(uri_wss, "devices/dev-b", "dev-b");
	size_t big = 300 * 1024;
	char *payload = calloc(1, big);
	cr_assert_not_null(payload);
	int rc = h_mqtt_pub(dev, "outpost/v1/dev-b/telemetry", payload, big, 1, 0);
	cr_expect(rc != RC_SUCCESS, "an oversize publish was accepted");
	free(payload);
	/* the next message the bridge gets is the marker, not the oversize one */
	if (rc >= 0) {
		cr_expect_eq(h_mqtt_pub(dev, "outpost/v1/dev-b/telemetry", "marker", 6, 1, 0),
			     RC_SUCCESS);
		expect_next(bridge, "bridge", "outpost/v1/dev-b/telemetry", "marker", 6);
	}
	h_mqtt_close(dev);
	h_mqtt_close(bridge);
}

Test(broker, operator_reads_everything_and_writes_nothing)
{
	struct h_mqtt *op = connect_as(uri_internal, "operator", "operator-test");
	struct h_mqtt *bridge = bridge_on("outpost/v1/#");
	struct h_mqtt *dev = connect_as(uri_mqtts, "devices/dev-a", "dev-a");
	cr_expect_eq(h_mqtt_sub(op, "outpost/v1/#", 1), 1);

	cr_expect_eq(h_mqtt_pub(dev, "outpost/v1/dev-a/telemetry", "reading", 7, 1, 0), RC_SUCCESS);
	expect_next(op, "operator", "outpost/v1/dev-a/telemetry", "reading", 7);
	expect_next(bridge, "bridge", "outpost/v1/dev-a/telemetry", "reading", 7);

	const char *refused[] = {
		"outpost/v1/dev-a/telemetry",
		"outpost/v1/dev-a/ack",
		"outpost/v1/dev-a/tasks",
		"outpost/v1/outpost-operator/telemetry", /* its own id: the device patterns */
		"outpost/v1/outpost-operator/status",
		"outpost/v1/outpost-operator/birth",
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		cr_expect_eq(h_mqtt_pub(op, refused[i], "op", 2, 1, 0), RC_NOT_AUTHORIZED, "%s",
			     refused[i]);
	/* nothing the operator tried arrived anywhere: the next message for both is the marker */
	cr_expect_eq(h_mqtt_pub(dev, "outpost/v1/dev-a/telemetry", "marker", 6, 1, 0), RC_SUCCESS);
	expect_next(bridge, "bridge", "outpost/v1/dev-a/telemetry", "marker", 6);
	expect_next(op, "operator", "outpost/v1/dev-a/telemetry", "marker", 6);
	h_mqtt_close(dev);
	h_mqtt_close(bridge);
	h_mqtt_close(op);
}

Test(broker, bridge_writes_downlink_and_the_device_reads_it)
{
	struct h_mqtt *dev = connect_as(uri_wss, "devices/dev-a", "dev-a");
	struct h_mqtt *bridge = connect_as(uri_internal, "bridge", "outpost-bridge-test");
	cr_expect_eq(h_mqtt_sub(dev, "outpost/v1/dev-a/ack", 1), 1);
	cr_expect_eq(h_mqtt_sub(dev, "outpost/v1/dev-a/tasks", 1), 1);
	cr_expect_eq(h_mqtt_pub(bridge, "outpost/v1/dev-a/ack", "ack", 3, 1, 0), RC_SUCCESS);
	expect_next(dev, "dev-a", "outpost/v1/dev-a/ack", "ack", 3);
	cr_expect_eq(h_mqtt_pub(bridge, "outpost/v1/dev-a/tasks", "tasks", 5, 1, 0), RC_SUCCESS);
	expect_next(dev, "dev-a", "outpost/v1/dev-a/tasks", "tasks", 5);
	h_mqtt_close(bridge);
	h_mqtt_close(dev);
}

/* Listening sockets on port in /proc/net/tcp{,6}: how many, and how many not on 127.0.0.1. */
static void listeners_on(int port, int *total, int *not_loopback)
{
	static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
	*total = *not_loopback = 0;
	for (size_t f = 0; f < 2; f++) {
		FILE *in = fopen(files[f], "r");
		char line[512], addr[64];
		unsigned lport, state;
		if (!in)
			continue;
		for (int n = 0; n < 100000 && fgets(line, sizeof(line), in); n++) {
			int got = sscanf(line, " %*d: %63[0-9A-Fa-f]:%x %*s %x", addr, &lport,
					 &state);
			if (got != 3)
				continue;
			if ((int)lport != port || state != 0x0A) /* TCP_LISTEN */
				continue;
			(*total)++;
			/* 127.0.0.1, as IPv4 or IPv4-mapped IPv6, in /proc's byte order */
			if (strcmp(addr, "0100007F") != 0 &&
			    strcmp(addr, "0000000000000000FFFF00000100007F") != 0)
				(*not_loopback)++;
		}
		fclose(in);
	}
}

Test(broker, listeners_bind_only_the_configured_address)
{
	/* The test broker is told to bind 127.0.0.1 (OUTPOST_BROKER_BIND): every listener,
	 * the WebSockets one included, must listen there and nowhere else. */
	int ports[] = {broker.wss_port, broker.mqtts_port, broker.internal_port};
	const char *names[] = {"wss", "mqtts", "internal"};
	for (size_t i = 0; i < 3; i++) {
		int total, wide;
		listeners_on(ports[i], &total, &wide);
		cr_expect_geq(total, 1, "%s: no listener on port %d", names[i], ports[i]);
		cr_expect_eq(wide, 0, "%s: port %d listens beyond 127.0.0.1", names[i], ports[i]);
	}
}

/* plugin_opt_infra_prefix exempts every username it prefixes from the device rules, so an empty
 * one would exempt every device. The plugin refuses it, and mosquitto 2.0.11 refuses an empty
 * option value before the plugin sees it: either way no broker runs with it. */
Test(broker, an_empty_infra_prefix_stops_the_broker_from_starting)
{
	char *dir = h_tmpdir("broker-empty-infra");
	char *conf = h_strf("%s/mosquitto.conf", dir);
	FILE *f = fopen(conf, "w");
	cr_assert(f);
	fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\nplugin %s\n"
		   "plugin_opt_crl_file %s/crl.pem\nplugin_opt_ca_file %s/ca.crt\n"
		   "plugin_opt_infra_prefix \n",
		h_free_port(), OUTPOST_AUTH_PLUGIN, h_pki(), h_pki());
	fclose(f);
	char *cmd = h_strf("mosquitto -c %s 2>&1", conf), *out = NULL;
	int rc = h_sh(cmd, &out, 10);
	cr_expect(rc != 0 && rc != 137, "mosquitto ran with an empty infra prefix (rc %d): %s", rc,
		  out);
	cr_expect(h_count(out, "infra_prefix"), "no error names the option: %s", out);
	cr_expect_eq(h_count(out, "running"), 0, "the broker started: %s", out);
	free(out);
	free(cmd);
	free(conf);
	free(dir);
}

/* Replace dir/crl.pem the way provision does (a temporary file renamed over it). */
static void install_crl(const char *dir, const char *from)
{
	char *cmd = h_strf("cp %s %s/crl.pem.new && mv %s/crl.pem.new %s/crl.pem", from, dir, dir,
			   dir);
	cr_assert_eq(h_sh(cmd, NULL, 30), 0, "%s", cmd);
	free(cmd);
}

/* Every PKI provision-certs.sh makes has a CA named "Outpost CA": a crl.pem from another one
 * (a wrong copy) has the right issuer name and would have lifted every revocation. The plugin
 * verifies the CRL's signature with the CA of plugin_opt_ca_file, refuses any other (one log
 * line) and keeps the CRL it has. */
Test(broker, a_crl_the_ca_did_not_sign_is_refused, .timeout = 120)
{
	char *dir = h_tmpdir("pki-foreign-crl");
	char *cmd = h_strf("cp -a %s/. %s/", h_pki(), dir);
	cr_assert_eq(h_sh(cmd, NULL, 30), 0);
	free(cmd);
	struct h_broker b = {0};
	h_broker_start(&b, dir);
	char *mq = h_strf("ssl://127.0.0.1:%d", b.mqtts_port);
	expect_admitted(mq, dir, "devices/dev-revoked", "dev-revoked",
			"outpost/v1/dev-revoked/telemetry", "revoked, before");

	/* pki-other's CRL: issuer CN=Outpost CA, signed by another key, revoking nothing */
	char *foreign = h_strf("%s/crl.pem", h_pki_other());
	cmd = h_strf("openssl crl -in %s -noout -issuer", foreign);
	char *out = NULL;
	cr_assert_eq(h_sh(cmd, &out, 30), 0);
	cr_assert(strstr(out, "CN = Outpost CA"), "%s", out);
	free(out);
	free(cmd);
	install_crl(dir, foreign);
	int refused = 0;
	for (int i = 0; i < 50 && !refused; i++) {
		h_sleep_ms(100);
		refused = h_count_in_file(b.log, "refused CRL");
	}
	cr_expect(refused, "no refusal logged: %s", b.log);
	expect_admitted(mq, dir, "devices/dev-revoked", "dev-revoked",
			"outpost/v1/dev-revoked/telemetry", "revoked, after a foreign CRL");
	expect_admitted(mq, dir, "devices/dev-a", "dev-a", NULL, "valid, after a foreign CRL");
	h_sleep_ms(2500); /* tried again every second, logged once */
	cr_expect_eq(h_count_in_file(b.log, "refused CRL"), 1, "%s", b.log);
	cr_expect_eq(h_count_in_file(b.log, "reloaded CRL"), 0, "%s", b.log);

	/* the CA's own CRL is taken again: the script rewrites the one it cannot verify, with a
	 * new revocation */
	cmd = h_strf("%s/scripts/provision-certs.sh --out %s --revoke dev-c", h_source_dir(), dir);
	cr_assert_eq(h_sh(cmd, NULL, 60), 0);
	free(cmd);
	int reloaded = 0;
	for (int i = 0; i < 50 && !reloaded; i++) {
		h_sleep_ms(100);
		reloaded = h_count_in_file(b.log, "reloaded CRL");
	}
	cr_expect(reloaded, "the CA's CRL was not taken: %s", b.log);
	expect_admitted(mq, dir, "devices/dev-c", "dev-c", "outpost/v1/dev-c/telemetry",
			"revoked by the CA's new CRL");
	expect_admitted(mq, dir, "devices/dev-revoked", "dev-revoked",
			"outpost/v1/dev-revoked/telemetry", "revoked, with the CA's new CRL");
	h_broker_free(&b);
	free(foreign);
	free(mq);
	free(dir);
}

/* A mosquitto configuration with one plain listener and the plugin with `opts` (lines). */
static char *plugin_conf(const char *tag, const char *opts)
{
	char *dir = h_tmpdir(tag);
	char *conf = h_strf("%s/mosquitto.conf", dir);
	FILE *f = fopen(conf, "w");
	cr_assert(f);
	struct passwd *pw = getpwuid(getuid());
	cr_assert(pw);
	fprintf(f, "user %s\nlistener %d 127.0.0.1\nallow_anonymous true\nplugin %s\n%s",
		pw->pw_name, h_free_port(), OUTPOST_AUTH_PLUGIN, opts);
	fclose(f);
	free(dir);
	return conf;
}

/* The broker does not start with a CRL its CA did not sign, nor without plugin_opt_ca_file. */
Test(broker, the_plugin_refuses_to_start_without_the_crls_ca)
{
	const char *pki = h_pki(), *other = h_pki_other();
	struct {
		char *opts;
		const char *says;
	} bad[] = {
		{h_strf("plugin_opt_crl_file %s/crl.pem\nplugin_opt_ca_file %s/ca.crt\n", other,
			pki),
		 "not signed by the CA"},
		{h_strf("plugin_opt_crl_file %s/crl.pem\n", pki), "plugin_opt_ca_file (missing)"},
		{h_strf("plugin_opt_crl_file %s/crl.pem\nplugin_opt_ca_file %s/crl.pem\n", pki,
			pki),
		 "not a readable PEM certificate"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *conf = plugin_conf("broker-crl-ca", bad[i].opts);
		char *cmd = h_strf("mosquitto -c %s 2>&1", conf), *out = NULL;
		int rc = h_sh(cmd, &out, 10);
		cr_expect(rc != 0 && rc != 137, "%zu: mosquitto ran (rc %d): %s", i, rc, out);
		cr_expect(h_count(out, bad[i].says), "%zu: no error says '%s': %s", i, bad[i].says,
			  out);
		cr_expect_eq(h_count(out, "running"), 0, "%zu: the broker started: %s", i, out);
		free(out);
		free(cmd);
		free(conf);
		free(bad[i].opts);
	}
}

/* An option given twice: the last value counts, the plugin says so, and nothing leaks (the
 * first copy was lost). Under valgrind when it is installed. */
Test(broker, a_plugin_option_given_twice_counts_once, .timeout = 120)
{
	const char *pki = h_pki();
	char *opts = h_strf("plugin_opt_crl_file %s/no-such-crl.pem\n"
			    "plugin_opt_crl_file %s/crl.pem\n"
			    "plugin_opt_ca_file %s/no-such-ca.crt\nplugin_opt_ca_file %s/ca.crt\n"
			    "plugin_opt_infra_prefix x-\nplugin_opt_infra_prefix outpost-\n",
			    pki, pki, pki, pki);
	char *conf = plugin_conf("broker-twice", opts);
	char *log = h_strf("%s.log", conf);
	int valgrind = h_sh("command -v valgrind >/dev/null", NULL, 10) == 0;
	if (!valgrind)
		cr_log_warn("valgrind not installed: the leak check is skipped");
	/* started, seen running, stopped with SIGTERM (mosquitto then frees its plugins) */
	char *cmd = h_strf("%s mosquitto -c %s >%s 2>&1 & pid=$!; "
			   "for i in $(seq 1 200); do grep -q \"2.0.11 running\" %s && break; "
			   "sleep 0.1; done; kill -TERM $pid; wait $pid",
			   valgrind ? "valgrind --leak-check=full --keep-debuginfo=yes" : "",
			   conf, log, log);
	char *out = NULL;
	int rc = h_sh(cmd, &out, 60);
	char *text = h_read_file(log, NULL);
	cr_assert_not_null(text);
	cr_expect_eq(rc, 0, "mosquitto: exit %d: %s", rc, text);
	cr_expect(h_count(text, "running"), "did not start: %s", text);
	char *enforcing = h_strf("enforcing CRL %s/crl.pem (signed by %s/ca.crt)", pki, pki);
	cr_expect(h_count(text, enforcing), "the last values do not count: %s", text);
	cr_expect_eq(h_count(text, "given twice; using the last one"), 3, "%s", text);
	/* each definite leak is a record up to a blank line; none may come from the plugin (its
	 * frames, or those of mosquitto loading it) */
	int plugin_leaks = 0;
	for (const char *r = strstr(text, "definitely lost in loss record"); r;
	     r = strstr(r + 1, "definitely lost in loss record")) {
		const char *end = strstr(r, "== \n");
		size_t n = end ? (size_t)(end - r) : strlen(r);
		char *rec = strndup(r, n);
		plugin_leaks += strstr(rec, "outpost_auth") || strstr(rec, "plugin__load");
		free(rec);
	}
	cr_expect_eq(plugin_leaks, 0, "the plugin leaked: %s", text);
	free(enforcing);
	free(text);
	free(out);
	free(cmd);
	free(log);
	free(conf);
	free(opts);
}
