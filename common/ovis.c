/* ovis.c - control characters shown, not obeyed (ovis.h). */
#include <stdio.h>
#include <string.h>

#include "ovis.h"

unsigned ovis_bidi(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	if (n >= 2 && u[0] == 0xd8 && u[1] == 0x9c)
		return 0x061c; /* ARABIC LETTER MARK */
	if (n < 3 || u[0] != 0xe2)
		return 0;
	unsigned cp = 0x2000u | (unsigned)(u[1] & 0x3f) << 6 | (u[2] & 0x3fu);
	if ((u[1] & 0xc0) != 0x80 || (u[2] & 0xc0) != 0x80)
		return 0;
	/* LRM, RLM; LRE, RLE, PDF, LRO, RLO; LRI, RLI, FSI, PDI */
	if (cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
	    (cp >= 0x2066 && cp <= 0x2069))
		return cp;
	return 0;
}

size_t ovis_escape(char *dst, size_t cap, const char *src, size_t len, unsigned flags)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		unsigned char next = i + 1 < len ? (unsigned char)src[i + 1] : 0;
		char esc[8];
		size_t w = 1;
		unsigned bidi = ovis_bidi(src + i, len - i);
		if (c == 0xc2 && next >= 0x80 && next <= 0x9f) {
			w = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", next);
			i++;
		} else if (bidi) {
			w = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", bidi);
			i += bidi == 0x061c ? 1 : 2;
		} else if ((flags & OVIS_LINE) && (c == '\n' || c == '\r')) {
			esc[0] = ' ';
		} else if ((c < 0x20 && !((flags & OVIS_LINE) && c == '\t')) || c == 0x7f) {
			w = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", c);
		} else {
			/* a UTF-8 character is copied whole or not at all */
			size_t want = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
			esc[0] = (char)c;
			while (w < want && i + w < len &&
			       ((unsigned char)src[i + w] & 0xc0) == 0x80) {
				esc[w] = src[i + w];
				w++;
			}
			i += w - 1;
		}
		if (o + w >= cap)
			break;
		for (size_t k = 0; k < w; k++)
			dst[o++] = esc[k];
	}
	dst[o] = '\0';
	return o;
}

static int folded_space(unsigned char c)
{
	return c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

size_t ovis_fit(const char *s, size_t n, size_t max)
{
	if (n <= max)
		return n;
	size_t k = max;
	/* back over continuation bytes to the start of the character the cut falls in */
	while (k > 0 && max - k < 3 && ((unsigned char)s[k] & 0xc0) == 0x80)
		k--;
	return ((unsigned char)s[k] & 0xc0) == 0x80 ? max : k;
}

size_t ovis_line(char *s)
{
	size_t o = 0, n = strlen(s);
	for (size_t i = 0; i < n;) {
		size_t run = strspn(s + i, " \t\n\r\v\f");
		if (!run) {
			s[o++] = s[i++];
			continue;
		}
		int fold = i == 0 || i + run == n;
		for (size_t k = 0; k < run && !fold; k++)
			fold = folded_space((unsigned char)s[i + k]);
		if (!fold) {
			memmove(s + o, s + i, run);
			o += run;
		} else if (o && i + run < n) {
			s[o++] = ' ';
		}
		i += run;
	}
	/* a character cut at the end goes, and the space before it */
	size_t whole = ovis_whole(s, o);
	if (whole < o) {
		o = whole;
		while (o && s[o - 1] == ' ')
			o--;
	}
	s[o] = '\0';
	return o;
}

size_t ovis_whole(const char *s, size_t n)
{
	/* back over the continuation bytes at the end (a character has at most 3) to the lead */
	size_t k = n, cont = 0;
	while (k > 0 && cont < 3 && ((unsigned char)s[k - 1] & 0xc0) == 0x80) {
		k--;
		cont++;
	}
	if (k == 0)
		return n;
	unsigned char lead = (unsigned char)s[k - 1];
	size_t need = lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : lead >= 0xc0 ? 1 : 0;
	return need > cont ? k - 1 : n;
}
