/* bench_pki.h - the bridge's public key from a PKI directory (scripts/provision-certs.sh), for
 * the benchmark programs that verify the bridge's signed acks. Aborts on failure. */
#ifndef BENCH_PKI_H
#define BENCH_PKI_H

#include "bench_util.h"
#include "wire_cert.h"

static inline struct wire_pubkey bench_bridge_key(const char *prog, const char *pki)
{
	char path[1024], *pem = NULL;
	size_t plen;
	struct wire_cert_info info;
	snprintf(path, sizeof(path), "%s/bridge.crt", pki);
	if (wire_cert_read(path, &pem, &plen) || wire_cert_parse(pem, plen, &info, NULL))
		bench_die(prog, "cannot read %s", path);
	free(pem);
	return info.key;
}

#endif
