/* fuzz_cert.c - libFuzzer target: wire_cert_parse, which the bridge runs on the certificate a
 * Birth carries (a revoked one, for its key) and outpostctl on captured messages, before any
 * trust decision. The input is a DER certificate, wrapped in PEM as a peer would send it; the
 * same bytes are also tried as PEM text themselves. Nothing may crash, leak or read out of
 * bounds, and the CN of what it accepts must be a valid id. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire_cert.h"
#include "wire_topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* PEM around der: base64 in lines of 64, as openssl writes it. Caller frees. */
static char *pem_wrap(const uint8_t *der, size_t n, size_t *len)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	static const char head[] = "-----BEGIN CERTIFICATE-----\n";
	static const char tail[] = "-----END CERTIFICATE-----\n";
	size_t chars = (n + 2) / 3 * 4;
	char *p = malloc(sizeof(head) + chars + chars / 64 + 1 + sizeof(tail));
	if (!p)
		return NULL;
	size_t at = 0, col = 0;
	memcpy(p, head, sizeof(head) - 1);
	at = sizeof(head) - 1;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)der[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)der[i + 1] << 8;
		if (i + 2 < n)
			v |= der[i + 2];
		p[at++] = b64[v >> 18 & 63];
		p[at++] = b64[v >> 12 & 63];
		p[at++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
		p[at++] = i + 2 < n ? b64[v & 63] : '=';
		if ((col += 4) == 64) {
			p[at++] = '\n';
			col = 0;
		}
	}
	if (col)
		p[at++] = '\n';
	memcpy(p + at, tail, sizeof(tail));
	*len = at + sizeof(tail) - 1;
	return p;
}

static void parse(const char *pem, size_t len)
{
	struct wire_cert_info info;
	if (wire_cert_parse(pem, len, &info, NULL) != WIRE_OK)
		return;
	if (strnlen(info.cn, sizeof(info.cn)) == sizeof(info.cn) || wire_id_check(info.cn))
		abort(); /* accepted a CN that is not an id */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	char *pem = pem_wrap(data, size, &len);
	if (pem)
		parse(pem, len);
	free(pem);
	/* As PEM text: a copy of exactly size bytes, so a read past them is caught */
	char *text = malloc(size ? size : 1);
	if (text) {
		memcpy(text, data, size);
		parse(text, size);
	}
	free(text);
	return 0;
}
