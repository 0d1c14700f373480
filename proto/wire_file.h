/* wire_file.h - the wire library's only I/O: reading small key and certificate files. */
#ifndef WIRE_FILE_H
#define WIRE_FILE_H

#include <stddef.h>

/* Read a whole regular file of at most max bytes into a NUL-terminated heap buffer the caller
 * frees. WIRE_EIO if it cannot be read (errno says why: EISDIR for a directory, EINVAL for
 * any other file that is not a regular one, such as a FIFO, which is not waited on),
 * WIRE_ELIMIT if larger than max. */
int wire__read_file(const char *path, size_t max, char **out, size_t *len);

#endif
