/* certgen.c - bench only: issue many device certificates quickly for the fleet benchmark.
 * scripts/provision-certs.sh runs three openssl processes per device (minutes for 10,000);
 * this does the same in one process with libcrypto: an Ed25519 key and a certificate with
 * CN=<id>, signed by the PKI's CA with the extensions of certs/openssl.cnf's `client_cert`
 * profile, written as <out>/<id>.key (PKCS#8, 0600) and <out>/<id>.crt. Existing files are
 * kept (like provision-certs.sh, it never overwrites a key).
 *
 * Usage: bench_certgen --pki DIR --out DIR --prefix fleet- --count N [--width 5] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "bench_util.h"

#define PROG "bench_certgen"

static void fail(const char *what)
{
	bench_die(PROG, "%s failed", what);
}

static void add_ext(X509 *crt, X509 *ca, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, ca, crt, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e || !X509_add_ext(crt, e, -1))
		fail("extension");
	X509_EXTENSION_free(e);
}

int main(int argc, char **argv)
{
	const char *pki = bench_arg(argc, argv, "--pki", NULL);
	const char *out = bench_arg(argc, argv, "--out", NULL);
	const char *prefix = bench_arg(argc, argv, "--prefix", "fleet-");
	long count = bench_arg_l(argc, argv, "--count", 0);
	int width = (int)bench_arg_l(argc, argv, "--width", 5);
	if (!pki || !out || count < 1) {
		fprintf(stderr, "usage: " PROG " --pki DIR --out DIR --prefix P --count N\n");
		return 2;
	}
	char path[2048];
	snprintf(path, sizeof(path), "%s/ca.crt", pki);
	FILE *f = fopen(path, "r");
	X509 *ca = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	snprintf(path, sizeof(path), "%s/ca.key", pki);
	f = fopen(path, "r");
	EVP_PKEY *cakey = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	if (!ca || !cakey)
		bench_die(PROG, "cannot read the CA in %s", pki);
	mkdir(out, 0755);
	umask(077);
	long made = 0;
	for (long i = 1; i <= count; i++) {
		char id[80], kpath[2048], cpath[2048];
		snprintf(id, sizeof(id), "%s%0*ld", prefix, width, i);
		snprintf(kpath, sizeof(kpath), "%s/%s.key", out, id);
		snprintf(cpath, sizeof(cpath), "%s/%s.crt", out, id);
		if (access(kpath, R_OK) == 0 && access(cpath, R_OK) == 0)
			continue;
		EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
		X509 *c = X509_new();
		if (!k || !c)
			fail("keygen");
		unsigned char serial[16];
		RAND_bytes(serial, sizeof(serial));
		serial[0] &= 0x7f;
		BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
		ASN1_INTEGER *sn = BN_to_ASN1_INTEGER(bn, NULL);
		X509_set_version(c, 2);
		X509_set_serialNumber(c, sn);
		X509_set_issuer_name(c, X509_get_subject_name(ca));
		X509_NAME *name = X509_NAME_new();
		X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)id, -1, -1, 0);
		X509_set_subject_name(c, name);
		X509_gmtime_adj(X509_getm_notBefore(c), -3600);
		X509_gmtime_adj(X509_getm_notAfter(c), 3650L * 86400);
		X509_set_pubkey(c, k);
		add_ext(c, ca, NID_basic_constraints, "critical,CA:false");
		add_ext(c, ca, NID_key_usage, "critical,digitalSignature");
		add_ext(c, ca, NID_ext_key_usage, "clientAuth");
		add_ext(c, ca, NID_subject_key_identifier, "hash");
		add_ext(c, ca, NID_authority_key_identifier, "keyid");
		if (!X509_sign(c, cakey, EVP_sha256()))
			fail("sign");
		FILE *kf = fopen(kpath, "w"), *cf = NULL;
		if (!kf || !PEM_write_PrivateKey(kf, k, NULL, NULL, 0, NULL, NULL))
			fail(kpath);
		fclose(kf);
		umask(022);
		cf = fopen(cpath, "w");
		if (!cf || !PEM_write_X509(cf, c))
			fail(cpath);
		fclose(cf);
		umask(077);
		X509_NAME_free(name);
		ASN1_INTEGER_free(sn);
		BN_free(bn);
		X509_free(c);
		EVP_PKEY_free(k);
		made++;
	}
	printf("certgen ok=1 count=%ld made=%ld\n", count, made);
	X509_free(ca);
	EVP_PKEY_free(cakey);
	return 0;
}
