/* olog.h - one-line logs for main-level code (libraries return errors, mains log them):
 *   2026-11-22T22:00:00.123Z outpost-device[dev-a] warn: broker refused the certificate */
#ifndef OLOG_H
#define OLOG_H

#include <stddef.h>

enum olog_level { OLOG_ERROR, OLOG_WARN, OLOG_INFO, OLOG_DEBUG };

/* program: "outpost-device"; ident: device id or NULL; lines above max are dropped.
 * Thread-safe: each line is written with a single write(2) to stderr. */
void olog_init(const char *program, const char *ident, enum olog_level max);
void olog_set_level(enum olog_level max);
int olog_enabled(enum olog_level level);
void olog(enum olog_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copy len bytes of src into dst (cap > 0 bytes, NUL-terminated) as text safe to show in a
 * terminal and to keep on one line: CR and LF become spaces, other control characters (C0
 * but tab, DEL, and the C1 controls as UTF-8 encodes them) become \xHH; a remote peer's
 * text cannot move the cursor or forge a log line. Stops before an escape that would not
 * fit. Returns the length of dst. */
size_t olog_clean(char *dst, size_t cap, const char *src, size_t len);

/* "error", "warn", "info", "debug" -> level; -1 if unknown. */
int olog_level_parse(const char *s);

#endif
