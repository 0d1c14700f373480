/* wire_cert.h - X.509 identities: the CA trust store (with CRL), certificate checks, and the
 * device id (CN) and Ed25519 key a certificate carries. Backed by wolfSSL's CertManager. */
#ifndef WIRE_CERT_H
#define WIRE_CERT_H

#include <stddef.h>
#include <stdint.h>

#include "wire_err.h"
#include "wire_limits.h"
#include "wire_sign.h"

/* What Outpost needs from a certificate. */
struct wire_cert_info {
	char cn[WIRE_ID_MAX + 1]; /* subject common name, checked against wire_id_check() */
	struct wire_pubkey key;	  /* the subject's Ed25519 public key */
};

/* A CA certificate plus (optionally) its CRL. Immutable once loaded, so any number of threads
 * may call wire_ca_verify() at once; to pick up a new CRL, load a new wire_ca and swap. */
struct wire_ca;

/* crl_path may be NULL (no revocation checking). On success *out is owned by the caller.
 * An expired CRL is WIRE_ECRL (wolfSSL will not load it). */
int wire_ca_load(const char *ca_path, const char *crl_path, struct wire_ca **out,
		 struct wire_diag *diag);
void wire_ca_free(struct wire_ca *ca); /* accepts NULL */

/* 1 if a and b were loaded from the same CA and CRL contents (a SHA-256 of the files): a
 * periodic reload that changed nothing need not re-check every enrolled certificate. */
int wire_ca_same_files(const struct wire_ca *a, const struct wire_ca *b);

/* When the loaded CRL stops being valid (its nextUpdate), in Unix seconds; 0 without a CRL.
 * After it, wolfSSL checks no certificate: wire_ca_verify() fails with WIRE_ECRL. */
int64_t wire_ca_crl_next_update(const struct wire_ca *ca);

/* Check that the PEM certificate chains to the CA, is within its validity period and is not
 * revoked, then extract CN and key as wire_cert_parse() does. Errors: WIRE_ECHAIN,
 * WIRE_EREVOKED, WIRE_EEXPIRED, WIRE_ECERT (unparseable, CN invalid, key not Ed25519),
 * WIRE_ECRL (the CRL expired: the certificate cannot be judged). *out is filled only on
 * success. WIRE_EEXPIRED is said only of a certificate the CA signed (the signature is
 * checked first), but one the CRL was not checked against: a caller that accepts it out of
 * its dates gets CN and key from wire_cert_parse(). */
int wire_ca_verify(const struct wire_ca *ca, const char *pem, size_t len,
		   struct wire_cert_info *out, struct wire_diag *diag);

/* Extract CN and Ed25519 key without any trust decision. */
int wire_cert_parse(const char *pem, size_t len, struct wire_cert_info *out,
		    struct wire_diag *diag);

/* Release the calling thread's crypto caches (wolfSSL keeps a per-thread ECC fixed-point
 * cache filled by certificate checks). Call before a thread that used wire_ca_verify() exits,
 * or the cache is lost memory. Safe to call from any thread, any number of times. */
void wire_thread_cleanup(void);

/* Read a PEM file (at most WIRE_MAX_CERT_PEM bytes). *pem is NUL-terminated, caller frees. */
int wire_cert_read(const char *path, char **pem, size_t *len);

#endif
