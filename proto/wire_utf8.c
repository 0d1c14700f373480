/* wire_utf8.c - UTF-8 well-formedness (RFC 3629). */
#include <stdint.h>
#include <string.h>

#include "ovis.h"
#include "wire_utf8.h"

/* Length of the well-formed sequence at p (n bytes left), 0 if there is none. */
static size_t seq_len(const uint8_t *p, size_t n)
{
	uint32_t cp, min;
	size_t len;
	if (p[0] < 0x80)
		return 1;
	if ((p[0] & 0xE0) == 0xC0) {
		len = 2, cp = p[0] & 0x1Fu, min = 0x80;
	} else if ((p[0] & 0xF0) == 0xE0) {
		len = 3, cp = p[0] & 0x0Fu, min = 0x800;
	} else if ((p[0] & 0xF8) == 0xF0) {
		len = 4, cp = p[0] & 0x07u, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t k = 1; k < len; k++) {
		if ((p[k] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (p[k] & 0x3Fu);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

int wire_utf8_valid(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0, k; i < n; i += k)
		if (!(k = seq_len(b + i, n - i)))
			return 0;
	return 1;
}

void wire_utf8_sanitize(char *s)
{
	uint8_t *b = (uint8_t *)s;
	size_t n = strlen(s);
	/* the character a cut at a byte count fell in, found as ovis_line and outpostctl find
	 * the one they drop: here each of its bytes becomes '?' */
	size_t whole = ovis_whole(s, n);
	memset(b + whole, '?', n - whole);
	for (size_t i = 0, k; i < whole; i += k) {
		if (!(k = seq_len(b + i, whole - i))) {
			b[i] = '?';
			k = 1;
		}
	}
}
