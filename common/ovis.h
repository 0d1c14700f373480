/* ovis.h - text from a peer (a device's names and messages, a proxy's reply) made safe to show
 * in a terminal: control characters are written out instead of obeyed, so they cannot move the
 * cursor, retitle the window or forge a line. Used by the logs (olog) and by outpostctl. */
#ifndef OVIS_H
#define OVIS_H

#include <stddef.h>

enum ovis_flags {
	OVIS_LINE = 1, /* a log line: CR and LF become spaces, tab is kept */
};

/* The code point of the bidirectional control the n bytes at s begin with in UTF-8, else 0:
 * U+200E/F (LRM, RLM), U+202A..U+202E (embeddings and overrides: RLO makes "exe.txt" of
 * "txt.exe"), U+2066..U+2069 (isolates), U+061C (ALM). Text shown with them unescaped can
 * be made to read other than its bytes. */
unsigned ovis_bidi(const char *s, size_t n);

/* Copy len bytes of src into dst (cap > 0 bytes, always NUL-terminated): C0 controls and DEL
 * become \xHH, C1 controls as UTF-8 encodes them (0xc2 0x80..0x9f; CSI is one) \u00HH, the
 * bidirectional controls (ovis_bidi) \uHHHH, all other bytes are kept; flags as above.
 * Stops before a character that would not fit whole.
 * Returns the length written to dst. */
size_t ovis_escape(char *dst, size_t cap, const char *src, size_t len, unsigned flags);

/* Make the NUL-terminated message s one line, in place: each run of white space that holds a
 * tab, CR, LF, VT or FF becomes one space (runs of spaces alone are kept), a run at either
 * end goes; a UTF-8 sequence left incomplete at the end (a message cut to fit a buffer:
 * ovis_whole) is dropped. Returns the new length. */
size_t ovis_line(char *s);

/* The length of the longest prefix of the n bytes at s that is at most max bytes long and does
 * not end in the middle of a UTF-8 sequence (for "%.*s"). */
size_t ovis_fit(const char *s, size_t n, size_t max);

/* The length of the n bytes at s without the UTF-8 sequence left incomplete at their end, if
 * any: a lead byte followed by fewer continuation bytes than it announces, as text cut at a
 * byte count (snprintf) ends. Only the end is looked at: a broken sequence before it is not
 * this function's to find (wire_utf8_valid). For text already cut, where ovis_fit needs the
 * bytes after the cut. */
size_t ovis_whole(const char *s, size_t n);

#endif
