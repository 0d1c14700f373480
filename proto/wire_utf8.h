/* wire_utf8.h - UTF-8 checks for text that crosses the wire or reaches the store. PostgreSQL
 * refuses invalid UTF-8 outright, so a device must not be able to hand the bridge any. */
#ifndef WIRE_UTF8_H
#define WIRE_UTF8_H

#include <stddef.h>

/* 1 if p[0..n) is well-formed UTF-8 (no overlong forms, surrogates or code points above
 * U+10FFFF), else 0. */
int wire_utf8_valid(const void *p, size_t n);

/* Make the NUL-terminated s well-formed in place: each byte that does not start a well-formed
 * sequence becomes '?', so text cut at a byte count (snprintf) loses only its broken tail
 * character (found by ovis_whole, as outpostctl finds the one it drops). */
void wire_utf8_sanitize(char *s);

#endif
