/* olog.h - one-line logs for main-level code (libraries return errors, mains log them):
 *   2026-11-22T22:00:00.123Z outpost-device[dev-a] warn: broker refused the certificate */
#ifndef OLOG_H
#define OLOG_H

enum olog_level { OLOG_ERROR, OLOG_WARN, OLOG_INFO, OLOG_DEBUG };

/* program: "outpost-device"; ident: device id or NULL; lines above max are dropped.
 * Thread-safe: each line is written with a single write(2) to stderr. */
void olog_init(const char *program, const char *ident, enum olog_level max);
void olog_set_level(enum olog_level max);
int olog_enabled(enum olog_level level);
/* The message is one line: control characters in it are shown, not obeyed (ovis.h). */
void olog(enum olog_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "error", "warn", "info", "debug" -> level; -1 if unknown. */
int olog_level_parse(const char *s);

#endif
