/* test_wire_sign.c - Ed25519 keys, signatures and the envelope signing input. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "wire_cert.h"
#include "wire_sign.h"

static void unhex(const char *hex, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		cr_assert_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
}

/* RFC 8032 section 7.1, TEST 1: the seed as PKCS#8 (OID 1.3.101.112), public key, and the
 * signature of the empty message. */
static const char rfc8032_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
	"-----END PRIVATE KEY-----\n";
static const char rfc8032_pub[] =
	"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char rfc8032_sig[] =
	"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
	"5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

Test(wire_sign, rfc8032_test_vector)
{
	struct wire_key *k = NULL;
	struct wire_pubkey pub, want_pub;
	uint8_t sig[WIRE_SIG_LEN], want_sig[WIRE_SIG_LEN];

	cr_assert_eq(wire_key_parse(rfc8032_pem, strlen(rfc8032_pem), &k), WIRE_OK);
	unhex(rfc8032_pub, want_pub.raw, sizeof(want_pub.raw));
	unhex(rfc8032_sig, want_sig, sizeof(want_sig));
	wire_key_public(k, &pub);
	cr_expect_arr_eq(pub.raw, want_pub.raw, WIRE_PUBKEY_LEN, "public key from the seed");
	cr_assert_eq(wire_sign(k, (const uint8_t *)"", 0, sig), WIRE_OK);
	uint8_t sig_null[WIRE_SIG_LEN];
	cr_expect_eq(wire_sign(k, NULL, 0, sig_null), WIRE_OK, "NULL, 0 is the empty message");
	cr_expect_arr_eq(sig_null, want_sig, WIRE_SIG_LEN);
	cr_expect_arr_eq(sig, want_sig, WIRE_SIG_LEN, "signature of the empty message");
	cr_expect_eq(wire_verify(&want_pub, (const uint8_t *)"", 0, want_sig), WIRE_OK);
	want_sig[0] ^= 1;
	cr_expect_eq(wire_verify(&want_pub, (const uint8_t *)"", 0, want_sig), WIRE_ESIG);
	wire_key_free(k);
}

Test(wire_sign, sign_verify_and_tamper)
{
	struct wire_key *a = h_pki_key("devices/dev-a"), *b = h_pki_key("devices/dev-b");
	struct wire_pubkey pa, pb;
	uint8_t msg[300], sig[WIRE_SIG_LEN];
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7 + 3);
	wire_key_public(a, &pa);
	wire_key_public(b, &pb);
	cr_expect_arr_neq(pa.raw, pb.raw, WIRE_PUBKEY_LEN, "two devices, two keys");

	cr_assert_eq(wire_sign(a, msg, sizeof(msg), sig), WIRE_OK);
	cr_expect_eq(wire_verify(&pa, msg, sizeof(msg), sig), WIRE_OK);
	cr_expect_eq(wire_verify(&pb, msg, sizeof(msg), sig), WIRE_ESIG, "another device's key");
	cr_expect_eq(wire_verify(&pa, msg, sizeof(msg) - 1, sig), WIRE_ESIG, "shorter message");
	msg[150] ^= 0x10;
	cr_expect_eq(wire_verify(&pa, msg, sizeof(msg), sig), WIRE_ESIG, "changed message");
	msg[150] ^= 0x10;
	for (size_t i = 0; i < WIRE_SIG_LEN * 8; i++) {
		sig[i / 8] ^= (uint8_t)(1u << (i % 8));
		cr_expect_eq(wire_verify(&pa, msg, sizeof(msg), sig), WIRE_ESIG, "sig bit %zu", i);
		sig[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	cr_expect_eq(wire_verify(&pa, msg, sizeof(msg), sig), WIRE_OK);

	/* Ed25519 is deterministic: same key, same message, same signature */
	uint8_t sig2[WIRE_SIG_LEN];
	cr_assert_eq(wire_sign(a, msg, sizeof(msg), sig2), WIRE_OK);
	cr_expect_arr_eq(sig, sig2, WIRE_SIG_LEN);
	wire_key_free(a);
	wire_key_free(b);
}

Test(wire_sign, key_matches_its_certificate)
{
	const char *names[] = {"devices/dev-a", "devices/dev-b", "bridge", "operator"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct wire_key *k = h_pki_key(names[i]);
		struct wire_pubkey pub;
		struct wire_cert_info info;
		char *path = h_strf("%s/%s.crt", h_pki(), names[i]), *pem = NULL;
		size_t len;
		cr_assert_eq(wire_cert_read(path, &pem, &len), WIRE_OK, "%s", path);
		cr_assert_eq(wire_cert_parse(pem, len, &info, NULL), WIRE_OK, "%s", path);
		wire_key_public(k, &pub);
		cr_expect_arr_eq(pub.raw, info.key.raw, WIRE_PUBKEY_LEN, "%s", names[i]);
		free(pem);
		free(path);
		wire_key_free(k);
	}
}

Test(wire_sign, openssl_signature_verifies)
{
	/* Interoperability: a signature made by the OpenSSL command line with the device's key
	 * file verifies with wire_verify, and ours verifies with OpenSSL. */
	struct wire_key *k = h_pki_key("devices/dev-a");
	struct wire_pubkey pub;
	char *dir = h_tmpdir("sign");
	char *msg_path = h_strf("%s/msg", dir), *sig_path = h_strf("%s/sig", dir);
	const char msg[] = "outpost interop message";
	FILE *f = fopen(msg_path, "wb");
	cr_assert_not_null(f);
	fwrite(msg, 1, sizeof(msg) - 1, f);
	fclose(f);

	char *cmd = h_strf("openssl pkeyutl -sign -rawin -inkey %s/devices/dev-a.key -in %s "
			   "-out %s",
			   h_pki(), msg_path, sig_path);
	char *out = NULL;
	cr_assert_eq(h_sh(cmd, &out, 30), 0, "%s: %s", cmd, out);
	free(out);
	free(cmd);
	size_t len = 0;
	char *sig = h_read_file(sig_path, &len);
	cr_assert_not_null(sig);
	cr_assert_eq(len, WIRE_SIG_LEN);
	wire_key_public(k, &pub);
	cr_expect_eq(wire_verify(&pub, (const uint8_t *)msg, sizeof(msg) - 1, (uint8_t *)sig),
		     WIRE_OK);
	uint8_t ours[WIRE_SIG_LEN];
	cr_assert_eq(wire_sign(k, (const uint8_t *)msg, sizeof(msg) - 1, ours), WIRE_OK);
	cr_expect_arr_eq(ours, sig, WIRE_SIG_LEN, "Ed25519 signatures are deterministic");

	f = fopen(sig_path, "wb");
	cr_assert_not_null(f);
	ours[5] ^= 0x40;
	fwrite(ours, 1, sizeof(ours), f);
	fclose(f);
	cmd = h_strf("openssl pkeyutl -verify -rawin -pubin -inkey %s/pub.pem -in %s -sigfile %s",
		     dir, msg_path, sig_path);
	char *pubcmd = h_strf("openssl pkey -in %s/devices/dev-a.key -pubout -out %s/pub.pem",
			      h_pki(), dir);
	cr_assert_eq(h_sh(pubcmd, NULL, 30), 0);
	cr_expect_neq(h_sh(cmd, &out, 30), 0, "OpenSSL refuses a tampered signature");
	free(out);
	f = fopen(sig_path, "wb");
	ours[5] ^= 0x40;
	fwrite(ours, 1, sizeof(ours), f);
	fclose(f);
	cr_expect_eq(h_sh(cmd, &out, 30), 0, "OpenSSL accepts wire_sign's signature: %s", out);
	free(out);
	free(pubcmd);
	free(cmd);
	free(sig);
	free(msg_path);
	free(sig_path);
	free(dir);
	wire_key_free(k);
}

Test(wire_sign, key_load_errors)
{
	struct wire_key *k = (struct wire_key *)&k; /* must stay untouched on failure */
	struct wire_key *const sentinel = k;
	struct wire_diag d = {""};
	char *missing = h_strf("%s/devices/no-such-device.key", h_pki());
	cr_expect_eq(wire_key_load(missing, &k, &d), WIRE_EIO);
	cr_expect(strstr(d.msg, missing), "diag names the file: %s", d.msg);
	cr_expect_eq(k, sentinel);

	/* ECDSA P-256 keys (CA, broker) are not Ed25519 */
	char *ec = h_strf("%s/broker.key", h_pki());
	cr_expect_eq(wire_key_load(ec, &k, &d), WIRE_EKEY);
	cr_expect(strstr(d.msg, "broker.key"), "%s", d.msg);
	cr_expect_eq(k, sentinel);
	char *ca = h_strf("%s/ca.key", h_pki());
	cr_expect_eq(wire_key_load(ca, &k, &d), WIRE_EKEY);

	/* a certificate is not a key; a directory is not a file */
	char *crt = h_strf("%s/devices/dev-a.crt", h_pki());
	cr_expect_eq(wire_key_load(crt, &k, &d), WIRE_EKEY);
	char *dir = h_strf("%s/devices", h_pki());
	cr_expect_eq(wire_key_load(dir, &k, &d), WIRE_EIO);
	cr_expect_eq(k, sentinel);

	const char junk[] = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n"
			    "-----END PRIVATE KEY-----\n";
	cr_expect_eq(wire_key_parse(junk, strlen(junk), &k), WIRE_EKEY);
	cr_expect_eq(wire_key_parse("", 0, &k), WIRE_EKEY);
	cr_expect_eq(wire_key_parse(NULL, 0, &k), WIRE_EINVAL);
	cr_expect_eq(k, sentinel);
	wire_key_free(NULL);
	free(missing);
	free(ec);
	free(ca);
	free(crt);
	free(dir);
}

Test(wire_sign, parse_equals_load)
{
	char *path = h_strf("%s/devices/dev-c.key", h_pki());
	size_t len;
	char *pem = h_read_file(path, &len);
	cr_assert_not_null(pem);
	struct wire_key *a = NULL, *b = NULL;
	cr_assert_eq(wire_key_parse(pem, len, &a), WIRE_OK);
	cr_assert_eq(wire_key_load(path, &b, NULL), WIRE_OK);
	struct wire_pubkey pa, pb;
	wire_key_public(a, &pa);
	wire_key_public(b, &pb);
	cr_expect_arr_eq(pa.raw, pb.raw, WIRE_PUBKEY_LEN);
	wire_key_free(a);
	wire_key_free(b);
	free(pem);
	free(path);
}

static uint64_t be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

Test(wire_sign, signing_input_layout)
{
	/* Built field by field from the specification in wire_sign.h / PROTOCOL.md. */
	uint8_t hdr[WIRE_SIG_HEADER_MAX];
	int n = wire_sig_header(hdr, 1, "dev-a", 0x0102030405060708ULL, -2, 6, 0xA0B0C0);
	cr_assert_eq(n, 20 + 4 + 1 + 5 + 8 + 8 + 4 + 4);
	cr_expect_arr_eq(hdr, "outpost/v1/envelope\0", 20, "domain separator with its NUL");
	cr_expect_eq(be(hdr + 20, 4), 1, "version");
	cr_expect_eq(hdr[24], 5, "id length");
	cr_expect_arr_eq(hdr + 25, "dev-a", 5);
	cr_expect_eq(be(hdr + 30, 8), 0x0102030405060708ULL, "seq");
	cr_expect_eq(be(hdr + 38, 8), (uint64_t)-2, "sent_at_ms, two's complement");
	cr_expect_eq(be(hdr + 46, 4), 6, "kind");
	cr_expect_eq(be(hdr + 50, 4), 0xA0B0C0, "body length");

	char id64[WIRE_ID_MAX + 2];
	memset(id64, 'a', WIRE_ID_MAX);
	id64[WIRE_ID_MAX] = '\0';
	n = wire_sig_header(hdr, 1, id64, 1, 1, 1, 1);
	cr_expect_eq(n, WIRE_SIG_HEADER_MAX, "longest id fills the header exactly");
	id64[WIRE_ID_MAX] = 'a';
	id64[WIRE_ID_MAX + 1] = '\0';
	cr_expect_eq(wire_sig_header(hdr, 1, id64, 1, 1, 1, 1), WIRE_EINVAL, "65-character id");
	cr_expect_eq(wire_sig_header(hdr, 1, NULL, 1, 1, 1, 1), WIRE_EINVAL);
	if (sizeof(size_t) > 4)
		cr_expect_eq(wire_sig_header(hdr, 1, "a", 1, 1, 1, (size_t)UINT32_MAX + 1),
			     WIRE_EINVAL);
}

static int header_variant(uint8_t *out, int which)
{
	switch (which) {
	case 0: return wire_sig_header(out, 2, "dev-a", 10, 1000, 2, 50); /* version */
	case 1: return wire_sig_header(out, 1, "dev-b", 10, 1000, 2, 50); /* id */
	case 2: return wire_sig_header(out, 1, "dev-a", 11, 1000, 2, 50); /* seq */
	case 3: return wire_sig_header(out, 1, "dev-a", 10, 1001, 2, 50); /* sent_at_ms */
	case 4: return wire_sig_header(out, 1, "dev-a", 10, 1000, 3, 50); /* kind */
	default: return wire_sig_header(out, 1, "dev-a", 10, 1000, 2, 51); /* body length */
	}
}

Test(wire_sign, every_field_changes_the_signing_input)
{
	uint8_t base[WIRE_SIG_HEADER_MAX], other[WIRE_SIG_HEADER_MAX];
	int n = wire_sig_header(base, 1, "dev-a", 10, 1000, 2, 50);
	cr_assert_gt(n, 0);
	for (int i = 0; i < 6; i++) {
		int m = header_variant(other, i);
		cr_assert_gt(m, 0);
		cr_expect(m != n || memcmp(base, other, (size_t)n) != 0, "variant %d", i);
	}
}

/* The signing input (header, then body) of an envelope into out; returns its length. */
static size_t signing_input(uint8_t *out, const char *id, uint64_t seq, int64_t sent_at_ms,
                            uint32_t kind, const uint8_t *body, size_t len)
{
	int n = wire_sig_header(out, 1, id, seq, sent_at_ms, kind, len);
	cr_assert_gt(n, 0);
	memcpy(out + n, body, len);
	return (size_t)n + len;
}

/* The id's length is encoded, so no envelope signs the bytes of another whose id extends its
 * own. y has the id "abcdef"; x has "ab" and, in every later field, the bytes y has 4 further
 * on: its seq is "cdef" and the first half of y's seq, its sent_at_ms the rest of that seq and
 * half y's sent_at_ms, its kind the rest of that, its body length y's kind (so y's kind is 7),
 * its body y's body length and body. Without the length byte the two inputs would be the same
 * 58 bytes; with it they differ in that byte only. (Headers alone cannot show it: with ids of
 * different lengths they always differ in length; the bodies make the totals equal.) */
Test(wire_sign, the_id_length_keeps_signing_inputs_apart)
{
	static const uint8_t by[] = {'x', 'y', 'z'}, bx[] = {0, 0, 0, 3, 'x', 'y', 'z'};
	uint8_t x[WIRE_SIG_HEADER_MAX + sizeof(bx)], y[WIRE_SIG_HEADER_MAX + sizeof(by)];
	uint8_t sig[WIRE_SIG_LEN];
	size_t nx = signing_input(x, "ab", 0x6364656601020304ULL, 0x0506070811121314LL, 0x15161718,
	                          bx, sizeof(bx));
	size_t ny = signing_input(y, "abcdef", 0x0102030405060708ULL, 0x1112131415161718LL,
	                          sizeof(bx), by, sizeof(by));
	cr_assert_eq(nx, ny, "the two inputs are as long as each other");
	const size_t at = 20 + 4; /* the id length byte: after the domain and the version */
	cr_expect(memcmp(x, y, nx) != 0, "two envelopes have the same signing input");
	cr_expect(x[at] == 2 && y[at] == 6, "the id length bytes: %u, %u", x[at], y[at]);
	cr_expect(!memcmp(x, y, at) && !memcmp(x + at + 1, y + at + 1, nx - at - 1),
	          "the inputs differ elsewhere than in the id length: the test no longer tests it");

	struct wire_key *k = h_pki_key("devices/dev-a");
	struct wire_pubkey pub;
	wire_key_public(k, &pub);
	cr_assert_eq(wire_sign(k, x, nx, sig), WIRE_OK);
	cr_expect_eq(wire_verify(&pub, x, nx, sig), WIRE_OK);
	cr_expect_eq(wire_verify(&pub, y, ny, sig), WIRE_ESIG,
	             "a signature over one envelope verifies the other");
	wire_key_free(k);
}

Test(wire_sign, parts_equal_concatenation)
{
	struct wire_key *k = h_pki_key("devices/dev-a");
	struct wire_pubkey pub;
	wire_key_public(k, &pub);
	uint8_t hdr[WIRE_SIG_HEADER_MAX], buf[WIRE_SIG_HEADER_MAX + 100];
	uint8_t body[100], s1[WIRE_SIG_LEN], s2[WIRE_SIG_LEN];
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(255 - i);
	int n = wire_sig_header(hdr, 1, "dev-a", 77, 1700000000000LL, 2, sizeof(body));
	cr_assert_gt(n, 0);
	memcpy(buf, hdr, (size_t)n);
	memcpy(buf + n, body, sizeof(body));

	cr_assert_eq(wire_sign_parts(k, hdr, (size_t)n, body, sizeof(body), s1), WIRE_OK);
	cr_assert_eq(wire_sign(k, buf, (size_t)n + sizeof(body), s2), WIRE_OK);
	cr_expect_arr_eq(s1, s2, WIRE_SIG_LEN);
	cr_expect_eq(wire_verify(&pub, buf, (size_t)n + sizeof(body), s1), WIRE_OK);
	/* the split point does not matter to the verifier */
	size_t total = (size_t)n + sizeof(body);
	for (size_t cut = 0; cut <= total; cut += 7)
		cr_expect_eq(wire_verify_parts(&pub, buf, cut, buf + cut, total - cut, s1), WIRE_OK,
			     "cut at %zu", cut);
	body[99] ^= 1;
	cr_expect_eq(wire_verify_parts(&pub, hdr, (size_t)n, body, sizeof(body), s1), WIRE_ESIG);
	cr_expect_eq(wire_verify_parts(&pub, hdr, (size_t)n, NULL, 10, s1), WIRE_EINVAL);
	cr_expect_eq(wire_verify_parts(NULL, hdr, (size_t)n, body, sizeof(body), s1), WIRE_EINVAL);
	cr_expect_eq(wire_sign(NULL, buf, 1, s2), WIRE_EINVAL);
	cr_expect_eq(wire_sign(k, NULL, 1, s2), WIRE_EINVAL);
	wire_key_free(k);
}

/* One key, two signing threads: every signature verifies (this wolfSSL keeps the message hash
 * state inside the key, so unserialised signers corrupt each other's). */
struct signer {
	const struct wire_key *key;
	int id, bad;
};

static void *sign_many(void *arg)
{
	struct signer *g = arg;
	struct wire_pubkey pub;
	wire_key_public(g->key, &pub);
	for (int i = 0; i < 3000; i++) {
		uint8_t msg[64], sig[WIRE_SIG_LEN];
		memset(msg, g->id, sizeof(msg));
		memcpy(msg, &i, sizeof(i));
		if (wire_sign(g->key, msg, sizeof(msg), sig) ||
		    wire_verify(&pub, msg, sizeof(msg), sig))
			g->bad++;
	}
	return NULL;
}

Test(wire_sign, one_key_signs_from_several_threads)
{
	struct wire_key *key = NULL;
	cr_assert_eq(wire_key_parse(rfc8032_pem, sizeof(rfc8032_pem) - 1, &key), WIRE_OK);
	struct signer g[2] = {{key, 1, 0}, {key, 2, 0}};
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, sign_many, &g[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	cr_expect_eq(g[0].bad + g[1].bad, 0, "%d and %d bad signatures", g[0].bad, g[1].bad);
	wire_key_free(key);
}
