/* wire_sign.c - Ed25519 key loading, signing and verification with wolfCrypt. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ed25519.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include "wire_file.h"
#include "wire_internal.h"
#include "wire_sign.h"

struct wire_key {
	ed25519_key k;
	/* Signing writes to k: this wolfSSL keeps the message hash state inside the key
	 * (WOLFSSL_ED25519_PERSISTENT_SHA, forced by ED25519_STREAMING_VERIFY). */
	pthread_mutex_t mu;
};

int wire_key_parse(const char *pem, size_t len, struct wire_key **out)
{
	uint8_t der[256];
	word32 idx = 0;
	int rc = WIRE_EKEY;
	struct wire_key *key = NULL;

	if (!pem || !out || len > 8192)
		return WIRE_EINVAL;
	int der_len = wc_KeyPemToDer((const unsigned char *)pem, (int)len, der, sizeof(der), NULL);
	if (der_len <= 0)
		goto out;
	key = calloc(1, sizeof(*key));
	if (!key) {
		rc = WIRE_ENOMEM;
		goto out;
	}
	pthread_mutex_init(&key->mu, NULL);
	if (wc_ed25519_init(&key->k) != 0)
		goto out;
	if (wc_Ed25519PrivateKeyDecode(der, &idx, &key->k, (word32)der_len) != 0)
		goto out;
	if (!key->k.pubKeySet) {
		/* PKCS#8 v1 carries only the seed: derive and attach the public half. */
		uint8_t priv[ED25519_KEY_SIZE], pub[ED25519_PUB_KEY_SIZE];
		memcpy(priv, key->k.k, sizeof(priv));
		if (wc_ed25519_make_public(&key->k, pub, sizeof(pub)) != 0 ||
		    wc_ed25519_import_private_key(priv, sizeof(priv), pub, sizeof(pub), &key->k) != 0) {
			explicit_bzero(priv, sizeof(priv));
			goto out;
		}
		explicit_bzero(priv, sizeof(priv));
	}
	*out = key;
	key = NULL;
	rc = WIRE_OK;
out:
	explicit_bzero(der, sizeof(der));
	wire_key_free(key);
	return rc;
}

int wire_key_load(const char *path, struct wire_key **out, struct wire_diag *diag)
{
	char *pem = NULL;
	size_t len = 0;
	int rc = wire__read_file(path, 8192, &pem, &len);
	if (rc)
		return wire__fail(diag, rc, "%s: cannot read key: %s", path,
				  rc == WIRE_ELIMIT ? "larger than 8 KiB" : strerror(errno));
	rc = wire_key_parse(pem, len, out);
	explicit_bzero(pem, len);
	free(pem);
	if (rc)
		return wire__fail(diag, rc, "%s: not an Ed25519 private key in PEM", path);
	return WIRE_OK;
}

void wire_key_free(struct wire_key *key)
{
	if (!key)
		return;
	wc_ed25519_free(&key->k);
	pthread_mutex_destroy(&key->mu);
	explicit_bzero(key, sizeof(*key));
	free(key);
}

void wire_key_public(const struct wire_key *key, struct wire_pubkey *out)
{
	memcpy(out->raw, key->k.p, WIRE_PUBKEY_LEN);
}

int wire_sign(const struct wire_key *key, const uint8_t *msg, size_t len,
	      uint8_t sig[WIRE_SIG_LEN])
{
	word32 sig_len = WIRE_SIG_LEN;
	if (!key || (!msg && len) || len > UINT32_MAX)
		return WIRE_EINVAL;
	if (!msg)
		msg = (const uint8_t *)""; /* wolfCrypt refuses NULL even for an empty message */
	/* const to callers: the key's material does not change, only wolfCrypt's scratch state
	 * in it, one signer at a time */
	struct wire_key *k = (struct wire_key *)key;
	pthread_mutex_lock(&k->mu);
	int rc = wc_ed25519_sign_msg(msg, (word32)len, sig, &sig_len, &k->k);
	pthread_mutex_unlock(&k->mu);
	return rc ? WIRE_ECRYPTO : WIRE_OK;
}

int wire_verify(const struct wire_pubkey *pub, const uint8_t *msg, size_t len,
		const uint8_t sig[WIRE_SIG_LEN])
{
	return wire_verify_parts(pub, msg, len, NULL, 0, sig);
}

int wire_sig_header(uint8_t hdr[WIRE_SIG_HEADER_MAX], uint32_t version, const char *device_id,
		    uint64_t seq, int64_t sent_at_ms, uint32_t kind, size_t body_len)
{
	size_t id_len = device_id ? strlen(device_id) : 0;
	uint8_t *p = hdr;

	if (!device_id || id_len > WIRE_ID_MAX || body_len > UINT32_MAX)
		return WIRE_EINVAL;
	memcpy(p, WIRE_SIG_DOMAIN, sizeof(WIRE_SIG_DOMAIN)); /* includes the NUL */
	p += sizeof(WIRE_SIG_DOMAIN);
	for (int i = 3; i >= 0; i--)
		*p++ = (uint8_t)(version >> (8 * i));
	*p++ = (uint8_t)id_len;
	memcpy(p, device_id, id_len);
	p += id_len;
	for (int i = 7; i >= 0; i--)
		*p++ = (uint8_t)(seq >> (8 * i));
	for (int i = 7; i >= 0; i--)
		*p++ = (uint8_t)((uint64_t)sent_at_ms >> (8 * i));
	for (int i = 3; i >= 0; i--)
		*p++ = (uint8_t)(kind >> (8 * i));
	for (int i = 3; i >= 0; i--)
		*p++ = (uint8_t)(body_len >> (8 * i));
	return (int)(p - hdr);
}

int wire_sign_parts(const struct wire_key *key, const uint8_t *hdr, size_t hdr_len,
		    const uint8_t *body, size_t body_len, uint8_t sig[WIRE_SIG_LEN])
{
	if (hdr_len > WIRE_SIG_HEADER_MAX || body_len > WIRE_MAX_ENVELOPE)
		return WIRE_EINVAL;
	uint8_t *buf = malloc(hdr_len + body_len + 1);
	if (!buf)
		return WIRE_ENOMEM;
	memcpy(buf, hdr, hdr_len);
	if (body_len)
		memcpy(buf + hdr_len, body, body_len);
	int rc = wire_sign(key, buf, hdr_len + body_len, sig);
	free(buf);
	return rc;
}

int wire_verify_parts(const struct wire_pubkey *pub, const uint8_t *hdr, size_t hdr_len,
		      const uint8_t *body, size_t body_len, const uint8_t sig[WIRE_SIG_LEN])
{
	ed25519_key k;
	int res = 0, rc = WIRE_ESIG;

	if (!pub || !sig || (!hdr && hdr_len) || (!body && body_len) || hdr_len > UINT32_MAX ||
	    body_len > UINT32_MAX)
		return WIRE_EINVAL;
	if (wc_ed25519_init(&k) != 0)
		return WIRE_ECRYPTO;
	if (wc_ed25519_import_public(pub->raw, WIRE_PUBKEY_LEN, &k) != 0) {
		rc = WIRE_EKEY;
		goto out;
	}
	/* Streaming verify: the body is hashed in place, never copied. */
	if (wc_ed25519_verify_msg_init(sig, WIRE_SIG_LEN, &k, (byte)Ed25519, NULL, 0) != 0)
		goto out;
	if (hdr_len && wc_ed25519_verify_msg_update(hdr, (word32)hdr_len, &k) != 0)
		goto out;
	if (body_len && wc_ed25519_verify_msg_update(body, (word32)body_len, &k) != 0)
		goto out;
	if (wc_ed25519_verify_msg_final(sig, WIRE_SIG_LEN, &res, &k) == 0 && res == 1)
		rc = WIRE_OK;
out:
	wc_ed25519_free(&k);
	return rc;
}
