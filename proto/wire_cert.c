/* wire_cert.c - CA/CRL verification and certificate field extraction with wolfSSL. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/sha256.h>
#include <wolfssl/error-ssl.h>

#include "otime.h"
#include "wire_cert.h"
#include "wire_file.h"
#include "wire_internal.h"
#include "wire_topic.h"

#define MAX_CRL_BYTES (4 * 1024 * 1024)

struct wire_ca {
	WOLFSSL_CERT_MANAGER *cm;
	int64_t crl_next_update; /* Unix seconds; 0 = no CRL, or not known */
	unsigned char sum[WC_SHA256_DIGEST_SIZE]; /* SHA-256 of the CA and CRL files as read */
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;

#ifdef FP_ECC
/* With FP_ECC and thread-local storage, wolfSSL gives every thread that verifies an ECDSA
 * signature its own cache (~1.6 MB) that only wc_ecc_fp_free(), called by that thread,
 * releases. A thread-specific key whose destructor runs at thread exit frees it, so threads
 * calling wire_ca_verify() do not leak when they end. */
static pthread_key_t fp_key;
static int fp_key_ok;

static void fp_free(void *unused)
{
	(void)unused;
	wc_ecc_fp_free();
}
#endif

static void init_wolfssl(void)
{
	init_rc = wolfSSL_Init() == WOLFSSL_SUCCESS ? WIRE_OK : WIRE_ECRYPTO;
#ifdef FP_ECC
	fp_key_ok = pthread_key_create(&fp_key, fp_free) == 0;
#endif
}

/* Arrange for this thread's ECC cache to be freed when it exits. */
static void thread_uses_ecc(void)
{
#ifdef FP_ECC
	if (fp_key_ok && !pthread_getspecific(fp_key))
		pthread_setspecific(fp_key, (void *)1);
#endif
}

void wire_thread_cleanup(void)
{
#ifdef FP_ECC
	wc_ecc_fp_free();
#endif
}

int wire_cert_read(const char *path, char **pem, size_t *len)
{
	return wire__read_file(path, WIRE_MAX_CERT_PEM, pem, len);
}

/* The nextUpdate of a PEM CRL in Unix seconds, without checking anything else; 0 if it
 * cannot be read. */
static int64_t crl_next_update(const char *pem, size_t len)
{
	int64_t t = 0;
	struct tm tm;
	WOLFSSL_BIO *bio = wolfSSL_BIO_new_mem_buf(pem, (int)len);
	WOLFSSL_X509_CRL *crl = bio ? wolfSSL_PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
	WOLFSSL_ASN1_TIME *next = crl ? wolfSSL_X509_CRL_get_nextUpdate(crl) : NULL;
	if (next && wolfSSL_ASN1_TIME_to_tm(next, &tm) == WOLFSSL_SUCCESS)
		t = (int64_t)timegm(&tm);
	wolfSSL_X509_CRL_free(crl);
	wolfSSL_BIO_free(bio);
	return t > 0 ? t : 0;
}

int64_t wire_ca_crl_next_update(const struct wire_ca *ca)
{
	return ca ? ca->crl_next_update : 0;
}

/* A file's length, then its bytes: the CA's and the CRL's contents cannot trade bytes. */
static int sha_file(wc_Sha256 *sha, const char *buf, size_t len)
{
	unsigned char n[8];

	for (int i = 0; i < 8; i++)
		n[i] = (unsigned char)((uint64_t)len >> (8 * i));
	if (wc_Sha256Update(sha, n, sizeof(n)) != 0)
		return -1;
	return wc_Sha256Update(sha, (const unsigned char *)buf, (word32)len);
}

int wire_ca_load(const char *ca_path, const char *crl_path, struct wire_ca **out,
		 struct wire_diag *diag)
{
	struct wire_ca *ca = NULL;
	char *buf = NULL;
	size_t len;
	wc_Sha256 sha;
	int sha_ok = 0;
	int rc;

	if (!ca_path || !out)
		return WIRE_EINVAL;
	pthread_once(&init_once, init_wolfssl);
	if (init_rc)
		return wire__fail(diag, init_rc, "wolfSSL_Init failed");
	rc = WIRE_ENOMEM;
	ca = calloc(1, sizeof(*ca));
	if (!ca || !(ca->cm = wolfSSL_CertManagerNew()))
		goto out;

	rc = wire__read_file(ca_path, WIRE_MAX_CERT_PEM, &buf, &len);
	if (rc) {
		rc = wire__fail(diag, rc, "%s: cannot read CA certificate", ca_path);
		goto out;
	}
	if (wolfSSL_CertManagerLoadCABuffer(ca->cm, (const unsigned char *)buf, (long)len,
					    WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
		rc = wire__fail(diag, WIRE_ECERT, "%s: not a usable PEM CA certificate", ca_path);
		goto out;
	}
	if (wc_InitSha256(&sha) != 0) {
		rc = wire__fail(diag, WIRE_ECRYPTO, "SHA-256 unavailable");
		goto out;
	}
	sha_ok = 1;
	if (sha_file(&sha, buf, len) != 0) {
		rc = wire__fail(diag, WIRE_ECRYPTO, "SHA-256 failed");
		goto out;
	}
	free(buf);
	buf = NULL;
	if (crl_path) {
		rc = wire__read_file(crl_path, MAX_CRL_BYTES, &buf, &len);
		if (rc) {
			rc = wire__fail(diag, rc, "%s: cannot read CRL", crl_path);
			goto out;
		}
		if (sha_file(&sha, buf, len) != 0) {
			rc = wire__fail(diag, WIRE_ECRYPTO, "SHA-256 failed");
			goto out;
		}
		int ok = wolfSSL_CertManagerEnableCRL(ca->cm, WOLFSSL_CRL_CHECK) == WOLFSSL_SUCCESS &&
			 wolfSSL_CertManagerLoadCRLBuffer(ca->cm, (const unsigned char *)buf, (long)len,
							  WOLFSSL_FILETYPE_PEM) == WOLFSSL_SUCCESS;
		int64_t next = crl_next_update(buf, len);
		if (!ok && next > 0 && next < (int64_t)time(NULL)) {
			/* wolfSSL reports an expired CRL as a parse error (ASN_PARSE_E) */
			char when[OTIME_UTC_LEN];
			rc = wire__fail(diag, WIRE_ECRL,
					"%s: expired at %s (its next update): renew it with "
					"scripts/provision-certs.sh",
					crl_path, otime_utc(next, when));
			goto out;
		}
		if (!ok) {
			rc = wire__fail(diag, WIRE_ECERT, "%s: not a PEM CRL signed by the CA", crl_path);
			goto out;
		}
		ca->crl_next_update = next;
	}
	if (wc_Sha256Final(&sha, ca->sum) != 0) {
		rc = wire__fail(diag, WIRE_ECRYPTO, "SHA-256 failed");
		goto out;
	}
	*out = ca;
	ca = NULL;
	rc = WIRE_OK;
out:
	if (sha_ok)
		wc_Sha256Free(&sha);
	free(buf);
	wire_ca_free(ca);
	return rc;
}

int wire_ca_same_files(const struct wire_ca *a, const struct wire_ca *b)
{
	return a && b && memcmp(a->sum, b->sum, sizeof(a->sum)) == 0 &&
	       a->crl_next_update == b->crl_next_update;
}

void wire_ca_free(struct wire_ca *ca)
{
	if (!ca)
		return;
	if (ca->cm)
		wolfSSL_CertManagerFree(ca->cm);
	free(ca);
}

/* One DER element at p[*at..end): its tag, and its contents [*body, *body + *len); *at moves
 * past it. 0, or -1 if it does not fit. */
static int der_next(const uint8_t *p, size_t end, size_t *at, uint8_t *tag, size_t *body,
                    size_t *len)
{
	size_t i = *at, n = 0;
	if (end - i < 2)
		return -1;
	*tag = p[i++];
	uint8_t l = p[i++];
	if (l < 0x80) {
		n = l;
	} else {
		int bytes = l & 0x7f;
		if (bytes < 1 || bytes > 3 || end - i < (size_t)bytes)
			return -1;
		while (bytes--)
			n = n << 8 | p[i++];
	}
	if (end - i < n)
		return -1;
	*body = i;
	*len = n;
	*at = i + n;
	return 0;
}

/* How many CN attributes the subject of dc holds (its RDNs, each a SET of type-and-value
 * SEQUENCEs); -1 if it cannot be read. wolfSSL's parser keeps the last CN, mosquitto's
 * use_identity_as_username the first: a subject with two would be one device to the broker's
 * ACL and another to the bridge. */
static int cn_count(const DecodedCert *dc)
{
	static const uint8_t cn_oid[] = {0x55, 0x04, 0x03}; /* 2.5.4.3 */
	const uint8_t *p = dc->subjectRaw;
	size_t end = dc->subjectRawLen > 0 ? (size_t)dc->subjectRawLen : 0, at = 0;
	int n = 0;
	if (!p)
		return -1;
	while (at < end) {
		uint8_t tag;
		size_t set, set_len;
		if (der_next(p, end, &at, &tag, &set, &set_len) || tag != 0x31)
			return -1;
		for (size_t in = set; in < set + set_len;) {
			size_t atv, atv_len, oid, oid_len, cur;
			if (der_next(p, set + set_len, &in, &tag, &atv, &atv_len) || tag != 0x30)
				return -1;
			cur = atv;
			if (der_next(p, atv + atv_len, &cur, &tag, &oid, &oid_len) || tag != 0x06)
				return -1;
			n += oid_len == sizeof(cn_oid) && !memcmp(p + oid, cn_oid, sizeof(cn_oid));
		}
	}
	return n;
}

int wire_cert_parse(const char *pem, size_t len, struct wire_cert_info *out,
		    struct wire_diag *diag)
{
	DecodedCert dc;
	uint8_t *der = NULL;
	int rc = WIRE_ECERT;

	if (!pem || !out)
		return WIRE_EINVAL;
	if (len > WIRE_MAX_CERT_PEM)
		return wire__fail(diag, WIRE_ELIMIT, "certificate: %zu bytes, limit %d", len,
				  WIRE_MAX_CERT_PEM);
	der = malloc(len + 1);
	if (!der)
		return WIRE_ENOMEM;
	int der_len = wc_CertPemToDer((const unsigned char *)pem, (int)len, der, (int)len, CERT_TYPE);
	if (der_len <= 0) {
		free(der);
		return wire__fail(diag, WIRE_ECERT, "certificate: not PEM X.509");
	}
	wc_InitDecodedCert(&dc, der, (word32)der_len, NULL);
	if (wc_ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) != 0) {
		rc = wire__fail(diag, WIRE_ECERT, "certificate: unparseable");
		goto out;
	}
	if (cn_count(&dc) != 1) {
		rc = wire__fail(diag, WIRE_ECERT, "certificate: the subject must hold one CN");
		goto out;
	}
	if (!dc.subjectCN || dc.subjectCNLen <= 0 ||
	    wire_id_check_n(dc.subjectCN, (size_t)dc.subjectCNLen)) {
		rc = wire__fail(diag, WIRE_ECERT, "certificate: CN is not [A-Za-z0-9_-]{1,64}");
		goto out;
	}
	if (dc.keyOID != ED25519k || dc.pubKeySize != WIRE_PUBKEY_LEN) {
		rc = wire__fail(diag, WIRE_ECERT, "certificate: key is not Ed25519");
		goto out;
	}
	memcpy(out->cn, dc.subjectCN, (size_t)dc.subjectCNLen);
	out->cn[dc.subjectCNLen] = '\0';
	memcpy(out->key.raw, dc.publicKey, WIRE_PUBKEY_LEN);
	rc = WIRE_OK;
out:
	wc_FreeDecodedCert(&dc);
	free(der);
	return rc;
}

int wire_ca_verify(const struct wire_ca *ca, const char *pem, size_t len,
		   struct wire_cert_info *out, struct wire_diag *diag)
{
	if (!ca || !pem || !out)
		return WIRE_EINVAL;
	if (len > WIRE_MAX_CERT_PEM)
		return wire__fail(diag, WIRE_ELIMIT, "certificate: %zu bytes, limit %d", len,
				  WIRE_MAX_CERT_PEM);
	thread_uses_ecc();
	int v = wolfSSL_CertManagerVerifyBuffer(ca->cm, (const unsigned char *)pem, (long)len,
						WOLFSSL_FILETYPE_PEM);
	switch (v) {
	case WOLFSSL_SUCCESS:
		break;
	case CRL_CERT_REVOKED:
		return wire__fail(diag, WIRE_EREVOKED, "certificate: revoked by the CRL");
	case CRL_MISSING:	/* what wolfSSL 5.5 says once the CRL's next update is past */
	case CRL_CERT_DATE_ERR: /* ... and what later versions say */
		return wire__fail(diag, WIRE_ECRL,
				  "certificate: cannot be checked: the CRL has expired (renew it)");
	case ASN_AFTER_DATE_E:
		return wire__fail(diag, WIRE_EEXPIRED,
				  "certificate: expired (past its validity period)");
	case ASN_BEFORE_DATE_E:
		return wire__fail(diag, WIRE_EEXPIRED,
				  "certificate: not yet valid (before its validity period, or the "
				  "clock is behind)");
	case ASN_NO_SIGNER_E:
	case ASN_SIG_CONFIRM_E:
		return wire__fail(diag, WIRE_ECHAIN, "certificate: not issued by the trusted CA");
	default:
		return wire__fail(diag, WIRE_ECERT, "certificate: rejected (wolfSSL error %d)", v);
	}
	return wire_cert_parse(pem, len, out, diag);
}
