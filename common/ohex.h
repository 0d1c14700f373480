/* ohex.h - hexadecimal digits. */
#ifndef OHEX_H
#define OHEX_H

/* The value of hex digit c (either case): 0..15, or -1 if c is not one. */
int ohex_digit(int c);

#endif
