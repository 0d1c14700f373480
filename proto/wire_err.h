/* wire_err.h - error codes and diagnostics shared by every wire_* module. */
#ifndef WIRE_ERR_H
#define WIRE_ERR_H

#include <stddef.h>

/* Every wire_* function returns 0 (WIRE_OK) or one of these. Append only, never renumber. */
enum wire_err {
	WIRE_OK = 0,
	WIRE_ENOMEM = -1,     /* allocation failed */
	WIRE_EINVAL = -2,     /* caller passed an invalid argument */
	WIRE_ETRUNC = -3,     /* input ends inside a field */
	WIRE_EMALFORMED = -4, /* not valid protobuf, or breaks a schema rule */
	WIRE_ELIMIT = -5,     /* a size or count limit of wire_limits.h is exceeded */
	WIRE_EVERSION = -6,   /* unsupported wire version */
	WIRE_EKIND = -7,      /* unexpected or unknown message kind */
	WIRE_ESIG = -8,       /* signature does not verify */
	WIRE_EKEY = -9,       /* key missing, unreadable or not Ed25519 */
	WIRE_ECERT = -10,     /* certificate unparseable or unusable */
	WIRE_ECHAIN = -11,    /* certificate does not chain to the CA */
	WIRE_EREVOKED = -12,  /* certificate revoked by the CRL */
	WIRE_EEXPIRED = -13,  /* certificate outside its validity period */
	WIRE_EID = -14,       /* identifier breaks the id rules */
	WIRE_ETOPIC = -15,    /* topic is not an Outpost topic */
	WIRE_EIO = -16,       /* a file could not be read */
	WIRE_ECRYPTO = -17,   /* the crypto library failed unexpectedly */
	WIRE_ECRL = -18,      /* the CRL is past its next update: no certificate can be checked */
};

/* Static, human-readable text for a wire_err code (never NULL). */
const char *wire_strerror(int err);

/* Optional detail for a failure, naming the field at fault, e.g.
 * "Batch.values: 65537 elements, limit 65536". Functions taking a `struct wire_diag *`
 * accept NULL; on failure they fill msg, on success they leave it untouched. */
struct wire_diag {
	char msg[160];
};

#endif
