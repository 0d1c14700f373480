/* test_wire_cert.c - CA trust store with CRL: chain, revocation, validity, CN and key. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "harness.h"
#include "wire_cert.h"
#include "wire_sign.h"

static struct wire_ca *load_ca(const char *pki, int with_crl)
{
	struct wire_ca *ca = NULL;
	struct wire_diag d = {""};
	char *crt = h_strf("%s/ca.crt", pki), *crl = h_strf("%s/crl.pem", pki);
	cr_assert_eq(wire_ca_load(crt, with_crl ? crl : NULL, &ca, &d), WIRE_OK, "%s", d.msg);
	free(crt);
	free(crl);
	return ca;
}

static char *read_pem(const char *pki, const char *name, size_t *len)
{
	char *path = h_strf("%s/%s.crt", pki, name), *pem = NULL;
	cr_assert_eq(wire_cert_read(path, &pem, len), WIRE_OK, "%s", path);
	free(path);
	return pem;
}

/* verify <pki>/<name>.crt against ca; fills info and diag */
static int verify(const struct wire_ca *ca, const char *pki, const char *name,
		  struct wire_cert_info *info, struct wire_diag *d)
{
	size_t len;
	char *pem = read_pem(pki, name, &len);
	int rc = wire_ca_verify(ca, pem, len, info, d);
	free(pem);
	return rc;
}

Test(wire_cert, device_bridge_and_operator_verify)
{
	struct wire_ca *ca = load_ca(h_pki(), 1);
	struct {
		const char *file, *cn;
	} ok[] = {
		{"devices/dev-a", "dev-a"},
		{"devices/dev-b", "dev-b"},
		{"bridge", "outpost-bridge"},
		{"operator", "outpost-operator"},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct wire_cert_info info;
		struct wire_diag d = {""};
		memset(&info, 0, sizeof(info));
		cr_expect_eq(verify(ca, h_pki(), ok[i].file, &info, &d), WIRE_OK, "%s: %s",
			     ok[i].file, d.msg);
		cr_expect_str_eq(info.cn, ok[i].cn);

		/* the key in the certificate is the key in the .key file */
		struct wire_key *k = NULL;
		struct wire_pubkey pub;
		char *path = h_strf("%s/%s.key", h_pki(), ok[i].file);
		cr_assert_eq(wire_key_load(path, &k, NULL), WIRE_OK);
		wire_key_public(k, &pub);
		cr_expect_arr_eq(info.key.raw, pub.raw, WIRE_PUBKEY_LEN, "%s", ok[i].file);
		wire_key_free(k);
		free(path);
	}
	wire_ca_free(ca);
}

Test(wire_cert, revoked_certificate_is_rejected)
{
	struct wire_cert_info info;
	struct wire_diag d = {""};
	struct wire_ca *ca = load_ca(h_pki(), 1);
	cr_expect_eq(verify(ca, h_pki(), "devices/dev-revoked", &info, &d), WIRE_EREVOKED);
	cr_expect(strstr(d.msg, "revoked"), "%s", d.msg);
	wire_ca_free(ca);

	/* The same certificate is fine without the CRL: revocation is the only reason. */
	ca = load_ca(h_pki(), 0);
	cr_expect_eq(verify(ca, h_pki(), "devices/dev-revoked", &info, &d), WIRE_OK, "%s", d.msg);
	cr_expect_str_eq(info.cn, "dev-revoked");
	wire_ca_free(ca);
}

Test(wire_cert, certificate_from_another_ca_is_rejected)
{
	struct wire_cert_info info;
	struct wire_diag d = {""};
	struct wire_ca *ca = load_ca(h_pki(), 1);
	/* same CN, same CA name "Outpost CA", different CA key */
	cr_expect_eq(verify(ca, h_pki_other(), "devices/dev-a", &info, &d), WIRE_ECHAIN);
	cr_expect(strstr(d.msg, "CA"), "%s", d.msg);
	cr_expect_eq(verify(ca, h_pki_other(), "bridge", &info, &d), WIRE_ECHAIN);
	wire_ca_free(ca);

	/* and the other way round */
	ca = load_ca(h_pki_other(), 1);
	cr_expect_eq(verify(ca, h_pki(), "devices/dev-a", &info, &d), WIRE_ECHAIN);
	cr_expect_eq(verify(ca, h_pki_other(), "devices/dev-a", &info, &d), WIRE_OK, "%s", d.msg);
	wire_ca_free(ca);
}

Test(wire_cert, non_ed25519_or_bad_cn_is_unusable)
{
	struct wire_cert_info info;
	struct wire_diag d = {""};
	struct wire_ca *ca = load_ca(h_pki(), 1);
	/* the broker certificate chains, but carries an ECDSA key */
	cr_expect_eq(verify(ca, h_pki(), "broker", &info, &d), WIRE_ECERT);
	cr_expect(strstr(d.msg, "Ed25519"), "%s", d.msg);
	wire_ca_free(ca);

	/* the CA certificate's CN "Outpost CA" is not an id */
	size_t len;
	char *pem = read_pem(h_pki(), "ca", &len);
	cr_expect_eq(wire_cert_parse(pem, len, &info, &d), WIRE_ECERT);
	cr_expect(strstr(d.msg, "CN"), "%s", d.msg);
	free(pem);
}

/* A subject with two CNs, signed by the CA: mosquitto would name the device by the first,
 * wolfSSL's parser by the last. Neither is taken. */
Test(wire_cert, a_subject_with_two_cns_is_unusable, .timeout = 60)
{
	struct wire_cert_info info;
	struct wire_diag d = {""};
	char *dir = h_tmpdir("two-cns");
	char *cmd = h_strf(
	    "set -e; cd %s; cp %s/ca.crt %s/ca.key .; mkdir -p .ca/issued; : > .ca/index.txt; "
	    "echo 01 > .ca/serial; openssl genpkey -algorithm ed25519 -out leaf.key; "
	    "openssl req -new -config %s/certs/openssl.cnf -key leaf.key -subj /CN=dev-a/CN=dev-b "
	    "-out leaf.csr; OUTPOST_PKI=%s OUTPOST_SAN=DNS:localhost openssl ca -batch -config "
	    "%s/certs/openssl.cnf -extensions client_cert -notext -in leaf.csr -out two.crt",
	    dir, h_pki(), h_pki(), h_source_dir(), dir, h_source_dir());
	char *out = NULL;
	cr_assert_eq(h_sh(cmd, &out, 60), 0, "%s", out);
	size_t len;
	char *pem = read_pem(dir, "two", &len);
	cr_expect_eq(wire_cert_parse(pem, len, &info, &d), WIRE_ECERT);
	cr_expect(strstr(d.msg, "one CN"), "%s", d.msg);
	struct wire_ca *ca = load_ca(h_pki(), 1);
	d.msg[0] = '\0';
	cr_expect_eq(wire_ca_verify(ca, pem, len, &info, &d), WIRE_ECERT, "%s", d.msg);
	cr_expect(strstr(d.msg, "one CN"), "%s", d.msg);
	wire_ca_free(ca);
	/* one CN of the same CA's issuing goes through (the check counts, it does not refuse) */
	free(pem);
	pem = read_pem(h_pki(), "devices/dev-a", &len);
	cr_expect_eq(wire_cert_parse(pem, len, &info, &d), WIRE_OK, "%s", d.msg);
	free(pem);
	free(out);
	free(cmd);
	free(dir);
}

Test(wire_cert, parse_extracts_cn_and_key_without_trust)
{
	struct wire_cert_info info;
	size_t len;
	char *pem = read_pem(h_pki_other(), "devices/dev-a", &len);
	cr_assert_eq(wire_cert_parse(pem, len, &info, NULL), WIRE_OK);
	cr_expect_str_eq(info.cn, "dev-a");
	free(pem);

	struct wire_diag d = {""};
	const char junk[] = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
			    "-----END CERTIFICATE-----\n";
	cr_expect_eq(wire_cert_parse(junk, strlen(junk), &info, &d), WIRE_ECERT);
	cr_expect_eq(wire_cert_parse("hello", 5, &info, &d), WIRE_ECERT);
	cr_expect_eq(wire_cert_parse(NULL, 5, &info, &d), WIRE_EINVAL);

	struct wire_ca *ca = load_ca(h_pki(), 1);
	cr_expect_neq(wire_ca_verify(ca, junk, strlen(junk), &info, &d), WIRE_OK);
	cr_expect_neq(wire_ca_verify(ca, "", 0, &info, &d), WIRE_OK);
	cr_expect_eq(wire_ca_verify(NULL, junk, strlen(junk), &info, &d), WIRE_EINVAL);
	wire_ca_free(ca);
}

Test(wire_cert, pem_size_limit)
{
	/* A valid PEM padded with trailing newlines to exactly WIRE_MAX_CERT_PEM bytes is
	 * accepted; one more byte is refused by every entry point with WIRE_ELIMIT. */
	size_t len;
	char *pem = read_pem(h_pki(), "devices/dev-a", &len);
	cr_assert_lt(len, WIRE_MAX_CERT_PEM);
	char *big = malloc(WIRE_MAX_CERT_PEM + 2);
	memcpy(big, pem, len);
	memset(big + len, '\n', WIRE_MAX_CERT_PEM + 1 - len);
	big[WIRE_MAX_CERT_PEM + 1] = '\0';

	struct wire_ca *ca = load_ca(h_pki(), 1);
	struct wire_cert_info info;
	struct wire_diag d = {""};
	cr_expect_eq(wire_ca_verify(ca, big, WIRE_MAX_CERT_PEM, &info, &d), WIRE_OK, "%s", d.msg);
	cr_expect_eq(wire_cert_parse(big, WIRE_MAX_CERT_PEM, &info, &d), WIRE_OK, "%s", d.msg);
	cr_expect_eq(wire_ca_verify(ca, big, WIRE_MAX_CERT_PEM + 1, &info, &d), WIRE_ELIMIT);
	cr_expect(strstr(d.msg, "certificate") && strstr(d.msg, "8192"), "%s", d.msg);
	cr_expect_eq(wire_cert_parse(big, WIRE_MAX_CERT_PEM + 1, &info, &d), WIRE_ELIMIT);
	cr_expect(strstr(d.msg, "certificate"), "%s", d.msg);

	char *dir = h_tmpdir("cert");
	char *at = h_strf("%s/at.crt", dir), *over = h_strf("%s/over.crt", dir);
	FILE *f = fopen(at, "wb");
	fwrite(big, 1, WIRE_MAX_CERT_PEM, f);
	fclose(f);
	f = fopen(over, "wb");
	fwrite(big, 1, WIRE_MAX_CERT_PEM + 1, f);
	fclose(f);
	char *got = NULL;
	size_t got_len = 0;
	cr_expect_eq(wire_cert_read(at, &got, &got_len), WIRE_OK);
	cr_expect_eq(got_len, WIRE_MAX_CERT_PEM);
	free(got);
	got = NULL;
	cr_expect_eq(wire_cert_read(over, &got, &got_len), WIRE_ELIMIT);
	cr_expect_null(got);
	char *missing = h_strf("%s/missing.crt", dir);
	cr_expect_eq(wire_cert_read(missing, &got, &got_len), WIRE_EIO);
	cr_expect_eq(wire_cert_read(dir, &got, &got_len), WIRE_EIO, "a directory");
	cr_expect_eq(errno, EISDIR);
	/* a FIFO is refused at once, not waited on until a writer comes */
	char *fifo = h_strf("%s/fifo.crt", dir);
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	cr_expect_eq(wire_cert_read(fifo, &got, &got_len), WIRE_EIO, "a FIFO");
	cr_expect_eq(errno, EINVAL);
	free(fifo);

	wire_ca_free(ca);
	free(missing);
	free(at);
	free(over);
	free(dir);
	free(big);
	free(pem);
}

Test(wire_cert, ca_load_errors)
{
	struct wire_ca *ca = NULL;
	struct wire_diag d = {""};
	char *missing = h_strf("%s/nope.crt", h_pki());
	char *ca_crt = h_strf("%s/ca.crt", h_pki());
	char *crl = h_strf("%s/crl.pem", h_pki());
	char *key = h_strf("%s/devices/dev-a.key", h_pki());
	char *other_crl = h_strf("%s/crl.pem", h_pki_other());

	cr_expect_eq(wire_ca_load(missing, NULL, &ca, &d), WIRE_EIO);
	cr_expect(strstr(d.msg, missing), "diag names the file: %s", d.msg);
	cr_expect_null(ca);
	cr_expect_eq(wire_ca_load(key, NULL, &ca, &d), WIRE_ECERT, "a key is not a CA certificate");
	cr_expect(strstr(d.msg, "dev-a.key"), "%s", d.msg);
	cr_expect_null(ca);
	cr_expect_eq(wire_ca_load(ca_crt, missing, &ca, &d), WIRE_EIO);
	cr_expect(strstr(d.msg, "CRL"), "%s", d.msg);
	cr_expect_null(ca);
	cr_expect_eq(wire_ca_load(ca_crt, ca_crt, &ca, &d), WIRE_ECERT,
		     "a certificate is not a CRL");
	cr_expect_null(ca);
	cr_expect_eq(wire_ca_load(NULL, crl, &ca, &d), WIRE_EINVAL);
	cr_expect_eq(wire_ca_load(ca_crt, crl, NULL, &d), WIRE_EINVAL);
	wire_ca_free(NULL);

	/* A CRL signed by another CA is not accepted as this CA's revocation list. */
	cr_expect_eq(wire_ca_load(ca_crt, other_crl, &ca, &d), WIRE_ECERT);
	cr_expect(strstr(d.msg, "CRL"), "%s", d.msg);
	cr_expect_null(ca);
	free(missing);
	free(ca_crt);
	free(crl);
	free(key);
	free(other_crl);
}

/* An expired CRL is refused (wolfSSL will not load it) with a message that names the cause. */
Test(wire_cert, expired_crl_is_named_as_such)
{
	char *dir = h_tmpdir("crl-old");
	h_pki_gencrl(dir, 1, "-crl_lastupdate 20200101000000Z -crl_nextupdate 20210101000000Z");
	char *ca_crt = h_strf("%s/ca.crt", dir), *crl = h_strf("%s/crl.pem", dir);
	struct wire_ca *ca = NULL;
	struct wire_diag d = {""};
	cr_expect_eq(wire_ca_load(ca_crt, crl, &ca, &d), WIRE_ECRL);
	cr_expect(strstr(d.msg, "expired at 2021-01-01T00:00:00Z") && strstr(d.msg, "crl.pem"), "%s",
		  d.msg);
	cr_expect_null(ca);
	free(ca_crt);
	free(crl);
	free(dir);
}

/* A CRL is read with its next update; once that is past, no certificate can be checked and
 * the error says why (wolfSSL: CRL_MISSING). */
Test(wire_cert, crl_next_update_is_known_and_enforced, .timeout = 60)
{
	struct wire_ca *ca = load_ca(h_pki(), 1);
	cr_expect_gt(wire_ca_crl_next_update(ca), (int64_t)time(NULL) + 300 * 86400LL,
		     "provision-certs.sh: 365 d");
	wire_ca_free(ca);
	ca = load_ca(h_pki(), 0);
	cr_expect_eq(wire_ca_crl_next_update(ca), 0, "no CRL");
	wire_ca_free(ca);

	char *dir = h_tmpdir("crl-short");
	int64_t now = (int64_t)time(NULL);
	h_pki_gencrl(dir, 1, "-crlsec 12"); /* room for a slow machine before the first check */
	ca = load_ca(dir, 1);
	int64_t next = wire_ca_crl_next_update(ca);
	cr_expect(next >= now + 12 && next <= now + 30, "next update %lld, now %lld",
		  (long long)next, (long long)now);
	struct wire_cert_info info;
	struct wire_diag d = {""};
	cr_expect_eq(verify(ca, dir, "devices/dev-a", &info, &d), WIRE_OK, "%s", d.msg);
	while ((int64_t)time(NULL) <= next) /* at most ~30 s, checked above */
		h_sleep_ms(200);
	cr_expect_eq(verify(ca, dir, "devices/dev-a", &info, &d), WIRE_ECRL);
	cr_expect(strstr(d.msg, "CRL has expired"), "%s", d.msg);
	wire_ca_free(ca);
	free(dir);
}

/* Issue a certificate for a fresh Ed25519 key from a copy of the main CA with explicit
 * validity dates (openssl ca -startdate/-enddate, YYYYMMDDHHMMSSZ). */
Test(wire_cert, validity_period_is_enforced)
{
	struct wire_ca *ca = load_ca(h_pki(), 1);
	struct wire_cert_info info;
	struct wire_diag d = {""};

	char *expired =
	    h_pki_issue_dated("expired", "dev-old", "20200101000000Z", "20210101000000Z");
	cr_expect_eq(verify(ca, expired, "devices/dev-old", &info, &d), WIRE_EEXPIRED);
	cr_expect(strstr(d.msg, "validity") && strstr(d.msg, "expired"), "%s", d.msg);

	char *future = h_pki_issue_dated("future", "dev-new", "20900101000000Z", "20910101000000Z");
	cr_expect_eq(verify(ca, future, "devices/dev-new", &info, &d), WIRE_EEXPIRED);
	cr_expect(strstr(d.msg, "validity") && strstr(d.msg, "not yet valid"), "%s", d.msg);

	/* control: the same recipe with current dates verifies */
	char *current =
	    h_pki_issue_dated("current", "dev-now", "20200101000000Z", "20900101000000Z");
	cr_expect_eq(verify(ca, current, "devices/dev-now", &info, &d), WIRE_OK, "%s", d.msg);
	cr_expect_str_eq(info.cn, "dev-now");
	wire_ca_free(ca);
	free(expired);
	free(future);
	free(current);
}

/* WIRE_EEXPIRED is said only of a certificate the CA issued: wolfSSL confirms the signature
 * before it reports the dates (not the CRL, though). The device agent relies on it: a
 * bridge_cert out of its dates is only warned of, and the key wire_cert_parse() gives is
 * used. */
Test(wire_cert, out_of_dates_only_for_a_certificate_the_ca_issued, .timeout = 60)
{
	struct wire_ca *ca = load_ca(h_pki(), 0);
	struct wire_cert_info info;
	struct wire_diag d = {""};

	/* another CA (also named "Outpost CA"), out of its dates either way: ECHAIN */
	char *old = h_pki_issue_dated_by(h_pki_other(), NULL, "other-expired", "outpost-bridge",
					 "20200101000000Z", "20210101000000Z");
	cr_expect_eq(verify(ca, old, "devices/outpost-bridge", &info, &d), WIRE_ECHAIN, "%s",
		     d.msg);
	char *future = h_pki_issue_dated_by(h_pki_other(), NULL, "other-future", "outpost-bridge",
					    "20900101000000Z", "20910101000000Z");
	cr_expect_eq(verify(ca, future, "devices/outpost-bridge", &info, &d), WIRE_ECHAIN, "%s",
		     d.msg);

	/* our CA's expired certificate with one bit of its signature flipped: not the CA's */
	char *ours = h_pki_issue_dated_by(h_pki(), NULL, "ours-expired", "outpost-bridge",
					  "20200101000000Z", "20210101000000Z");
	cr_expect_eq(verify(ca, ours, "devices/outpost-bridge", &info, &d), WIRE_EEXPIRED, "%s",
		     d.msg);
	char *crt = h_strf("%s/devices/outpost-bridge.crt", ours), *der = h_strf("%s.der", crt);
	char *cmd = h_strf("openssl x509 -in %s -outform DER -out %s", crt, der);
	cr_assert_eq(h_sh(cmd, NULL, 30), 0, "%s", cmd);
	FILE *f = fopen(der, "r+b"); /* the signature is the DER's last bytes */
	cr_assert(f && fseek(f, -1, SEEK_END) == 0);
	int last = fgetc(f);
	cr_assert(last != EOF && fseek(f, -1, SEEK_END) == 0 && fputc(last ^ 1, f) != EOF);
	fclose(f);
	free(cmd);
	cmd = h_strf("openssl x509 -inform DER -in %s -out %s", der, crt);
	cr_assert_eq(h_sh(cmd, NULL, 30), 0, "%s", cmd);
	cr_expect_eq(verify(ca, ours, "devices/outpost-bridge", &info, &d), WIRE_ECHAIN, "%s",
		     d.msg);
	wire_ca_free(ca);

	/* ... but not judged by the CRL: an expired certificate it revokes is still EEXPIRED */
	free(cmd);
	cmd = h_strf("cd %s && OUTPOST_PKI=%s OUTPOST_SAN=DNS:localhost openssl ca -config "
		     "%s/certs/openssl.cnf -revoke devices/outpost-bridge.crt",
		     old, old, h_source_dir());
	cr_assert_eq(h_sh(cmd, NULL, 30), 0, "%s", cmd);
	h_pki_gencrl(old, 0, "");
	ca = load_ca(old, 1);
	cr_expect_eq(verify(ca, old, "devices/outpost-bridge", &info, &d), WIRE_EEXPIRED, "%s",
		     d.msg);
	wire_ca_free(ca);
	free(cmd);
	free(crt);
	free(der);
	free(old);
	free(future);
	free(ours);
}

struct verify_job {
	const struct wire_ca *ca;
	char *pem[3];
	size_t len[3];
	int wrong;
};

static void *verify_many(void *arg)
{
	struct verify_job *j = arg;
	static const int want[3] = {WIRE_OK, WIRE_EREVOKED, WIRE_ECHAIN};
	for (int i = 0; i < 60; i++) {
		struct wire_cert_info info;
		int k = i % 3;
		if (wire_ca_verify(j->ca, j->pem[k], j->len[k], &info, NULL) != want[k])
			j->wrong++;
		else if (k == 0 && strcmp(info.cn, "dev-a") != 0)
			j->wrong++;
	}
	return NULL;
}

Test(wire_cert, concurrent_verification)
{
	/* wire_ca is documented as safe for concurrent wire_ca_verify() calls. */
	struct wire_ca *ca = load_ca(h_pki(), 1);
	struct verify_job jobs[4];
	pthread_t th[4];
	for (int t = 0; t < 4; t++) {
		jobs[t].ca = ca;
		jobs[t].wrong = 0;
		jobs[t].pem[0] = read_pem(h_pki(), "devices/dev-a", &jobs[t].len[0]);
		jobs[t].pem[1] = read_pem(h_pki(), "devices/dev-revoked", &jobs[t].len[1]);
		jobs[t].pem[2] = read_pem(h_pki_other(), "devices/dev-a", &jobs[t].len[2]);
	}
	for (int t = 0; t < 4; t++)
		cr_assert_eq(pthread_create(&th[t], NULL, verify_many, &jobs[t]), 0);
	for (int t = 0; t < 4; t++) {
		pthread_join(th[t], NULL);
		cr_expect_eq(jobs[t].wrong, 0, "thread %d: %d wrong answers", t, jobs[t].wrong);
		for (int k = 0; k < 3; k++)
			free(jobs[t].pem[k]);
	}
	wire_ca_free(ca);
}

/* The bridge reloads the CA and CRL every few minutes, and re-checks every enrolled
 * certificate only when they changed. */
Test(wire_cert, a_reload_tells_whether_the_files_changed)
{
	char *dir = h_tmpdir("crl-same");
	h_pki_gencrl(dir, 1, "-crldays 30");
	struct wire_ca *a = load_ca(dir, 1), *b = load_ca(dir, 1), *none = load_ca(dir, 0);
	cr_expect(wire_ca_same_files(a, b));
	cr_expect_not(wire_ca_same_files(a, none), "with and without a CRL");
	h_pki_gencrl(dir, 0, "-crldays 31"); /* a new CRL */
	struct wire_ca *c = load_ca(dir, 1);
	cr_expect_not(wire_ca_same_files(a, c));
	cr_expect_not(wire_ca_same_files(a, NULL));
	/* two CRLs with the same next update: only their contents (the CRL number) differ */
	const char *dates = "-crl_lastupdate 20260101000000Z -crl_nextupdate 20991231000000Z";
	h_pki_gencrl(dir, 0, dates);
	struct wire_ca *d = load_ca(dir, 1);
	h_pki_gencrl(dir, 0, dates);
	struct wire_ca *e = load_ca(dir, 1);
	cr_expect_eq(wire_ca_crl_next_update(d), wire_ca_crl_next_update(e));
	cr_expect_not(wire_ca_same_files(d, e));
	wire_ca_free(a);
	wire_ca_free(b);
	wire_ca_free(c);
	wire_ca_free(d);
	wire_ca_free(e);
	wire_ca_free(none);
	free(dir);
}
