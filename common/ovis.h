/* ovis.h - text from a peer (a device's names and messages, a proxy's reply) made safe to show
 * in a terminal: control characters are written out instead of obeyed, so they cannot move the
 * cursor, retitle the window or forge a line. Used by the logs (olog) and by outpostctl. */
#ifndef OVIS_H
#define OVIS_H

#include <stddef.h>

enum ovis_flags {
	OVIS_LINE = 1, /* a log line: CR and LF become spaces, tab is kept */
};

/* Copy len bytes of src into dst (cap > 0 bytes, always NUL-terminated): C0 controls and DEL
 * become \xHH, C1 controls as UTF-8 encodes them (0xc2 0x80..0x9f; CSI is one) \u00HH, all
 * other bytes are kept; flags as above. Stops before a character that would not fit whole.
 * Returns the length written to dst. */
size_t ovis_escape(char *dst, size_t cap, const char *src, size_t len, unsigned flags);

#endif
