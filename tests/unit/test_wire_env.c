/* test_wire_env.c - envelope seal/decode/verify: round trips, tampering, truncation, limits. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outpost.pb-c.h"
#include "wire_env.h"
#include "wire_sign.h"

static uint8_t *seal(struct wire_key *k, uint32_t kind, const char *id, uint64_t seq,
		     const void *body, size_t body_len, size_t *len)
{
	struct wire_env e = {.kind = kind, .seq = seq, .sent_at_ms = 1700000000123LL,
			     .body = body, .body_len = body_len};
	strcpy(e.device_id, id);
	uint8_t *out = NULL;
	cr_assert_eq(wire_env_seal(k, &e, &out, len), WIRE_OK);
	return out;
}

Test(wire_env, round_trip_every_kind)
{
	struct wire_key *k = h_pki_key("devices/dev-a");
	struct wire_pubkey pub;
	wire_key_public(k, &pub);
	for (uint32_t kind = 1; kind <= WIRE_KIND_MAX; kind++) {
		const char body[] = "body bytes";
		size_t len;
		uint8_t *buf = seal(k, kind, "dev-a", 41 + kind, body, sizeof(body), &len);
		struct wire_env e;
		cr_assert_eq(wire_env_decode(buf, len, &e, NULL), WIRE_OK);
		cr_expect_eq(e.version, WIRE_VERSION);
		cr_expect_eq(e.kind, kind);
		cr_expect_eq(e.seq, 41 + kind);
		cr_expect_eq(e.sent_at_ms, 1700000000123LL);
		cr_expect_str_eq(e.device_id, "dev-a");
		cr_expect_eq(e.body_len, sizeof(body));
		cr_expect_arr_eq(e.body, body, sizeof(body));
		cr_expect_eq(wire_env_verify(&e, &pub), WIRE_OK);

		/* protobuf-c agrees with the zero-copy decoder */
		Outpost__Envelope *m = outpost__envelope__unpack(NULL, len, buf);
		cr_assert_not_null(m);
		cr_expect_eq(m->seq, e.seq);
		cr_expect_eq((uint32_t)m->kind, kind);
		outpost__envelope__free_unpacked(m, NULL);
		free(buf);
	}
	wire_key_free(k);
}

Test(wire_env, empty_body)
{
	struct wire_key *k = h_pki_key("devices/dev-a");
	struct wire_pubkey pub;
	wire_key_public(k, &pub);
	size_t len;
	uint8_t *buf = seal(k, WIRE_KIND_TASK_POLL, "dev-a", 1, NULL, 0, &len);
	struct wire_env e;
	cr_assert_eq(wire_env_decode(buf, len, &e, NULL), WIRE_OK);
	cr_expect_eq(e.body_len, 0);
	cr_expect_eq(wire_env_verify(&e, &pub), WIRE_OK);
	free(buf);
	wire_key_free(k);
}

Test(wire_env, every_single_bit_flip_is_rejected)
{
	struct wire_key *k = h_pki_key("devices/dev-a");
	struct wire_pubkey pub;
	wire_key_public(k, &pub);
	const char body[] = "\x08\x01 telemetry body";
	size_t len;
	uint8_t *buf = seal(k, WIRE_KIND_BATCH, "dev-a", 300, body, sizeof(body) - 1, &len);
	size_t accepted = 0;
	for (size_t i = 0; i < len * 8; i++) {
		buf[i / 8] ^= (uint8_t)(1u << (i % 8));
		struct wire_env e;
		if (wire_env_decode(buf, len, &e, NULL) == WIRE_OK &&
		    wire_env_verify(&e, &pub) == WIRE_OK)
			accepted++;
		buf[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	cr_expect_eq(accepted, 0, "%zu of %zu bit flips accepted", accepted, len * 8);
	free(buf);
	wire_key_free(k);
}

Test(wire_env, every_truncation_is_rejected)
{
	struct wire_key *k = h_pki_key("devices/dev-a");
	struct wire_pubkey pub;
	wire_key_public(k, &pub);
	size_t len;
	uint8_t *buf = seal(k, WIRE_KIND_BATCH, "dev-a", 7, "abcdef", 6, &len);
	for (size_t n = 0; n < len; n++) {
		struct wire_env e;
		int rc = wire_env_decode(buf, n, &e, NULL);
		if (rc == WIRE_OK)
			rc = wire_env_verify(&e, &pub);
		cr_expect_neq(rc, WIRE_OK, "truncated to %zu of %zu bytes accepted", n, len);
	}
	free(buf);
	wire_key_free(k);
}

Test(wire_env, signature_by_another_device_is_rejected)
{
	struct wire_key *a = h_pki_key("devices/dev-a"), *b = h_pki_key("devices/dev-b");
	struct wire_pubkey pub_a;
	wire_key_public(a, &pub_a);
	size_t len;
	/* dev-b signs an envelope claiming to be dev-a */
	uint8_t *buf = seal(b, WIRE_KIND_BATCH, "dev-a", 1, "x", 1, &len);
	struct wire_env e;
	cr_assert_eq(wire_env_decode(buf, len, &e, NULL), WIRE_OK);
	cr_expect_eq(wire_env_verify(&e, &pub_a), WIRE_ESIG);
	free(buf);
	wire_key_free(a);
	wire_key_free(b);
}

Test(wire_env, bridge_and_device_domains_differ_by_kind)
{
	/* The same bytes signed as one kind never verify as another. */
	struct wire_key *k = h_pki_key("bridge");
	struct wire_pubkey pub;
	wire_key_public(k, &pub);
	size_t len;
	uint8_t *buf = seal(k, WIRE_KIND_ACK, "dev-a", 5, "\x08\x05", 2, &len);
	struct wire_env e;
	cr_assert_eq(wire_env_decode(buf, len, &e, NULL), WIRE_OK);
	e.kind = WIRE_KIND_TASK_LIST;
	cr_expect_eq(wire_env_verify(&e, &pub), WIRE_ESIG);
	free(buf);
	wire_key_free(k);
}

/* Build raw envelopes with protobuf-c to reach the decoder's limits. */
static size_t pack_raw(Outpost__Envelope *m, uint8_t **out)
{
	size_t n = outpost__envelope__get_packed_size(m);
	*out = malloc(n + 1);
	outpost__envelope__pack(m, *out);
	return n;
}

static int decode_raw(Outpost__Envelope *m, struct wire_diag *d)
{
	uint8_t *buf;
	size_t n = pack_raw(m, &buf);
	struct wire_env e;
	int rc = wire_env_decode(buf, n, &e, d);
	free(buf);
	return rc;
}

static uint8_t sig64[64];

static void base_env(Outpost__Envelope *m, char *id)
{
	outpost__envelope__init(m);
	m->version = 1;
	m->device_id = id;
	m->seq = 1;
	m->kind = OUTPOST__KIND__KIND_BATCH;
	m->sig.data = sig64;
	m->sig.len = 64;
}

Test(wire_env, limits)
{
	Outpost__Envelope m;
	struct wire_diag d;
	char id64[65], id65[66];
	memset(id64, 'a', 64);
	id64[64] = 0;
	memset(id65, 'a', 65);
	id65[65] = 0;

	base_env(&m, id64);
	cr_expect_eq(decode_raw(&m, NULL), WIRE_OK, "64-char id is valid");
	base_env(&m, id65);
	cr_expect_eq(decode_raw(&m, &d), WIRE_ELIMIT);
	cr_expect(strstr(d.msg, "device_id"), "%s", d.msg);

	base_env(&m, "dev/a");
	cr_expect_eq(decode_raw(&m, &d), WIRE_EID);

	base_env(&m, "dev-a");
	m.version = 2;
	cr_expect_eq(decode_raw(&m, &d), WIRE_EVERSION);
	cr_expect(strstr(d.msg, "version"), "%s", d.msg);

	base_env(&m, "dev-a");
	m.kind = (Outpost__Kind)(WIRE_KIND_MAX + 1);
	cr_expect_eq(decode_raw(&m, &d), WIRE_EKIND);

	base_env(&m, "dev-a");
	m.sig.len = 63;
	cr_expect_eq(decode_raw(&m, &d), WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "sig"), "%s", d.msg);
	m.sig.len = 0;
	cr_expect_neq(decode_raw(&m, &d), WIRE_OK);

	/* body: the whole envelope is limited to WIRE_MAX_ENVELOPE */
	base_env(&m, "dev-a");
	uint8_t *big = calloc(1, WIRE_MAX_ENVELOPE + 1);
	m.body.data = big;
	m.body.len = WIRE_MAX_ENVELOPE - 100;
	cr_expect_eq(decode_raw(&m, NULL), WIRE_OK);
	m.body.len = WIRE_MAX_ENVELOPE;
	cr_expect_eq(decode_raw(&m, &d), WIRE_ELIMIT);
	cr_expect(strstr(d.msg, "Envelope"), "%s", d.msg);
	free(big);
}

Test(wire_env, repeated_and_unknown_fields_are_rejected)
{
	Outpost__Envelope m;
	base_env(&m, "dev-a");
	uint8_t *buf;
	size_t n = pack_raw(&m, &buf);
	struct wire_env e;
	struct wire_diag d;

	/* append a second seq field */
	uint8_t *b2 = malloc(n + 2);
	memcpy(b2, buf, n);
	b2[n] = 0x18; /* field 3, varint */
	b2[n + 1] = 0x05;
	cr_expect_eq(wire_env_decode(b2, n + 2, &e, &d), WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "repeated"), "%s", d.msg);
	/* append unknown field 9 */
	b2[n] = 0x48;
	cr_expect_eq(wire_env_decode(b2, n + 2, &e, &d), WIRE_EMALFORMED);
	cr_expect(strstr(d.msg, "unknown"), "%s", d.msg);
	/* a varint longer than 10 bytes */
	uint8_t over[12] = {0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	cr_expect_eq(wire_env_decode(over, sizeof(over), &e, NULL), WIRE_EMALFORMED);
	free(b2);
	free(buf);
}

Test(wire_env, seal_refuses_bad_input)
{
	struct wire_key *k = h_pki_key("devices/dev-a");
	struct wire_env e = {.kind = WIRE_KIND_BATCH, .seq = 1};
	uint8_t *out = NULL;
	size_t len;
	strcpy(e.device_id, "bad id");
	cr_expect_eq(wire_env_seal(k, &e, &out, &len), WIRE_EINVAL);
	strcpy(e.device_id, "dev-a");
	e.kind = 0;
	cr_expect_eq(wire_env_seal(k, &e, &out, &len), WIRE_EINVAL);
	e.kind = WIRE_KIND_BATCH;
	uint8_t *big = calloc(1, WIRE_MAX_BODY + 1);
	e.body = big;
	e.body_len = WIRE_MAX_BODY + 1;
	cr_expect_eq(wire_env_seal(k, &e, &out, &len), WIRE_ELIMIT);
	free(big);
	wire_key_free(k);
}

Test(wire_env, envelope_exactly_at_the_size_limit)
{
	/* An envelope of exactly WIRE_MAX_ENVELOPE bytes decodes; one byte more does not. */
	Outpost__Envelope m;
	struct wire_diag d;
	base_env(&m, "dev-a");
	uint8_t *big = calloc(1, WIRE_MAX_ENVELOPE + 1);
	m.body.data = big;
	m.body.len = WIRE_MAX_ENVELOPE - 200;
	size_t overhead = outpost__envelope__get_packed_size(&m) - m.body.len;
	m.body.len = WIRE_MAX_ENVELOPE - overhead;
	cr_assert_eq(outpost__envelope__get_packed_size(&m), WIRE_MAX_ENVELOPE);
	cr_expect_eq(decode_raw(&m, &d), WIRE_OK, "%s", d.msg);
	m.body.len++;
	cr_assert_eq(outpost__envelope__get_packed_size(&m), WIRE_MAX_ENVELOPE + 1);
	cr_expect_eq(decode_raw(&m, &d), WIRE_ELIMIT);
	cr_expect(strstr(d.msg, "Envelope"), "%s", d.msg);
	free(big);
}

Test(wire_env, seal_accepts_the_largest_body)
{
	/* WIRE_MAX_BODY leaves room for every envelope field even with the longest id. */
	struct wire_key *k = h_pki_key("devices/dev-a");
	struct wire_pubkey pub;
	wire_key_public(k, &pub);
	uint8_t *body = malloc(WIRE_MAX_BODY);
	for (size_t i = 0; i < WIRE_MAX_BODY; i++)
		body[i] = (uint8_t)(i * 31);
	struct wire_env e = {.kind = WIRE_KIND_BATCH, .seq = UINT64_MAX, .sent_at_ms = INT64_MIN,
			     .body = body, .body_len = WIRE_MAX_BODY};
	memset(e.device_id, 'z', WIRE_ID_MAX);
	e.device_id[WIRE_ID_MAX] = '\0';
	uint8_t *out = NULL;
	size_t len = 0;
	cr_assert_eq(wire_env_seal(k, &e, &out, &len), WIRE_OK);
	cr_expect_leq(len, WIRE_MAX_ENVELOPE);
	struct wire_env got;
	cr_assert_eq(wire_env_decode(out, len, &got, NULL), WIRE_OK);
	cr_expect_eq(got.body_len, WIRE_MAX_BODY);
	cr_expect_eq(got.seq, UINT64_MAX);
	cr_expect_eq(got.sent_at_ms, INT64_MIN);
	cr_expect_eq(wire_env_verify(&got, &pub), WIRE_OK);
	free(out);
	free(body);
	wire_key_free(k);
}
