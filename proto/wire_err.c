/* wire_err.c - text for wire_err codes and the diagnostic helper. */
#include "wire_err.h"
#include "wire_internal.h"

#include <stdarg.h>
#include <stdio.h>

const char *wire_strerror(int err)
{
	switch (err) {
	case WIRE_OK: return "success";
	case WIRE_ENOMEM: return "out of memory";
	case WIRE_EINVAL: return "invalid argument";
	case WIRE_ETRUNC: return "truncated input";
	case WIRE_EMALFORMED: return "malformed message";
	case WIRE_ELIMIT: return "size or count limit exceeded";
	case WIRE_EVERSION: return "unsupported wire version";
	case WIRE_EKIND: return "unexpected message kind";
	case WIRE_ESIG: return "bad signature";
	case WIRE_EKEY: return "unusable key";
	case WIRE_ECERT: return "unusable certificate";
	case WIRE_ECHAIN: return "certificate not issued by the CA";
	case WIRE_EREVOKED: return "certificate revoked";
	case WIRE_EEXPIRED: return "certificate expired or not yet valid";
	case WIRE_EID: return "invalid id";
	case WIRE_ETOPIC: return "not an Outpost topic";
	case WIRE_EIO: return "I/O error";
	case WIRE_ECRYPTO: return "crypto library failure";
	case WIRE_ECRL: return "the CRL has expired";
	}
	return "unknown error";
}

int wire__fail(struct wire_diag *diag, int err, const char *fmt, ...)
{
	if (diag) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(diag->msg, sizeof(diag->msg), fmt, ap);
		va_end(ap);
	}
	return err;
}
