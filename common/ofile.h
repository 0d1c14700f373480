/* ofile.h - replacing a small file so that a crash or power cut leaves the old contents or the
 * new, never a mix, and the new ones are on disk when the call returns; whole writes. */
#ifndef OFILE_H
#define OFILE_H

#include <stddef.h>

/* ofile_replace's return when path was replaced but its directory could not be fsync'ed (errno
 * says why): path holds the new contents, for this process and the next start alike, but a
 * power cut may still bring back the old ones. A caller that needs the new contents durable
 * before it acts takes this as a failure; one that needs to know what the file holds, as done. */
#define OFILE_NOT_DURABLE (-2)

/* Write data to <path>.tmp (mode 0600), fsync it, rename it over path and fsync the directory.
 * Returns 0; OFILE_NOT_DURABLE; or -1 with errno set, path untouched (the temporary file is
 * removed). One writer per path at a time, in a directory only its owner can write (the
 * temporary name is fixed; a symbolic link in its place is refused, ELOOP). */
int ofile_replace(const char *path, const void *data, size_t len);

/* Write all n bytes of data to fd, retrying short writes and EINTR. Returns 0, or -1 with errno
 * set (ENOSPC when a write made no progress). On a socket, SIGPIPE must be ignored. */
int ofile_write_all(int fd, const void *data, size_t n);

/* fsync a directory, so that a rename or a new file in it survives a power cut. 0 or -1. */
int ofile_sync_dir(const char *dir);

/* fsync the directory holding path ("." for a bare name, "/" for "/x"). 0 or -1. */
int ofile_sync_parent(const char *path);

/* Create dir and its missing parents with mode (as far as the umask allows), each durably (its
 * parent fsync'ed, also for one that existed: another program may just have made it): files
 * later made durable inside do not vanish with it at a power cut. An existing directory is
 * otherwise left as it is. 0, or -1 with errno set (ENOTDIR: dir
 * or a parent is not a directory; ENOENT: dir is ""). */
int ofile_mkdir_p(const char *dir, unsigned mode);

#endif
