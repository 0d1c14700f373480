/* wire_sign.h - Ed25519 keys, signatures, and the envelope signing input (wolfCrypt). */
#ifndef WIRE_SIGN_H
#define WIRE_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "wire_err.h"
#include "wire_limits.h"

/* An Ed25519 private key (with its public half). Opaque; free with wire_key_free(). */
struct wire_key;

/* An Ed25519 public key: a small value type, copy freely. */
struct wire_pubkey {
	uint8_t raw[WIRE_PUBKEY_LEN];
};

/* Load a PEM private key ("PRIVATE KEY", PKCS#8, as written by scripts/provision-certs.sh).
 * On success *out is owned by the caller. WIRE_EIO if unreadable, WIRE_EKEY if not Ed25519. */
int wire_key_load(const char *path, struct wire_key **out, struct wire_diag *diag);

/* Same from a PEM buffer. */
int wire_key_parse(const char *pem, size_t len, struct wire_key **out);

/* Accepts NULL. Wipes the key material. */
void wire_key_free(struct wire_key *key);

void wire_key_public(const struct wire_key *key, struct wire_pubkey *out);

/* Sign / verify raw bytes. wire_verify returns WIRE_ESIG when the signature is wrong. Both are
 * thread-safe; signers of one key take turns (wolfCrypt keeps hash state in the key). */
int wire_sign(const struct wire_key *key, const uint8_t *msg, size_t len,
	      uint8_t sig[WIRE_SIG_LEN]);
int wire_verify(const struct wire_pubkey *pub, const uint8_t *msg, size_t len,
		const uint8_t sig[WIRE_SIG_LEN]);

/* The envelope signing input is the concatenation of
 *   "outpost/v1/envelope" 0x00          domain separator (20 bytes)
 *   u32 version, u8 len(device_id), device_id, u64 seq, i64 sent_at_ms, u32 kind,
 *   u32 len(body)                                                               big-endian
 *   body
 * Never a re-serialisation of protobuf, so it is canonical by construction. Every field of
 * the envelope is covered, so no value of a sealed envelope can change unnoticed. Its protobuf
 * bytes are not canonical (the same values re-encoded, e.g. with a longer varint, verify
 * too); nothing compares or hashes them.
 * wire_sig_header writes everything before the body into hdr (WIRE_SIG_HEADER_MAX bytes) and
 * returns its length, or a negative wire_err if an argument is out of range. */
#define WIRE_SIG_DOMAIN "outpost/v1/envelope"
#define WIRE_SIG_HEADER_MAX (20 + 4 + 1 + WIRE_ID_MAX + 8 + 8 + 4 + 4)
int wire_sig_header(uint8_t hdr[WIRE_SIG_HEADER_MAX], uint32_t version, const char *device_id,
		    uint64_t seq, int64_t sent_at_ms, uint32_t kind, size_t body_len);

/* Sign / verify (header || body) without concatenating them. */
int wire_sign_parts(const struct wire_key *key, const uint8_t *hdr, size_t hdr_len,
		    const uint8_t *body, size_t body_len, uint8_t sig[WIRE_SIG_LEN]);
int wire_verify_parts(const struct wire_pubkey *pub, const uint8_t *hdr, size_t hdr_len,
		      const uint8_t *body, size_t body_len, const uint8_t sig[WIRE_SIG_LEN]);

#endif
