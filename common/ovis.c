/* ovis.c - control characters shown, not obeyed (ovis.h). */
#include <stdio.h>

#include "ovis.h"

size_t ovis_escape(char *dst, size_t cap, const char *src, size_t len, unsigned flags)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		unsigned char next = i + 1 < len ? (unsigned char)src[i + 1] : 0;
		char esc[8];
		size_t w = 1;
		if (c == 0xc2 && next >= 0x80 && next <= 0x9f) {
			w = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", next);
			i++;
		} else if ((flags & OVIS_LINE) && (c == '\n' || c == '\r')) {
			esc[0] = ' ';
		} else if ((c < 0x20 && !((flags & OVIS_LINE) && c == '\t')) || c == 0x7f) {
			w = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", c);
		} else {
			esc[0] = (char)c;
		}
		if (o + w >= cap)
			break;
		for (size_t k = 0; k < w; k++)
			dst[o++] = esc[k];
	}
	dst[o] = '\0';
	return o;
}
