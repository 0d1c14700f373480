/* ofile.c - atomic, durable replacement of small files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ofile.h"

int ofile_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return rc ? -1 : 0;
}

int ofile_sync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash || slash == path)
		return ofile_sync_dir(slash ? "/" : ".");
	char *dir = strndup(path, (size_t)(slash - path));
	if (!dir) {
		errno = ENOMEM;
		return -1;
	}
	int rc = ofile_sync_dir(dir);
	free(dir);
	return rc;
}

/* mkdir path, then fsync its parent (path is cut at its last '/'): also when path existed, as
 * whoever made it (`mkdir -p` in an entrypoint) may not have; that fsync is then best effort. */
static int mkdir_durably(char *path, unsigned mode)
{
	struct stat st;
	int made = mkdir(path, (mode_t)mode) == 0;
	if (!made) {
		if (errno != EEXIST || stat(path, &st))
			return -1;
		if (!S_ISDIR(st.st_mode)) {
			errno = ENOTDIR;
			return -1;
		}
	}
	int rc = ofile_sync_parent(path);
	return made ? rc : 0;
}

int ofile_mkdir_p(const char *dir, unsigned mode)
{
	if (!*dir) {
		errno = ENOENT; /* as mkdir("") */
		return -1;
	}
	char *p = strdup(dir);
	int rc = -1;
	if (!p)
		goto out;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/' || s[-1] == '/')
			continue;
		*s = '\0';
		int bad = mkdir_durably(p, mode);
		*s = '/';
		if (bad)
			goto out;
	}
	rc = mkdir_durably(p, mode);
out:;
	int e = errno;
	free(p);
	errno = e;
	return rc;
}

int ofile_write_all(int fd, const void *data, size_t n)
{
	const char *p = data;
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = ENOSPC;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int ofile_replace(const char *path, const void *data, size_t len)
{
	char *tmp = NULL;
	int rc = -1, fd = -1, renamed = 0;
	if (asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL; /* undefined after a failure, in older glibc */
		errno = ENOMEM;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || ofile_write_all(fd, data, len) || fsync(fd))
		goto out;
	if (close(fd)) {
		fd = -1;
		goto out;
	}
	fd = -1;
	if (rename(tmp, path))
		goto out;
	/* From here path holds the new contents, whatever the directory's fsync says: a caller
	 * told "failed" would act on the old ones, which the next start no longer sees. */
	renamed = 1;
	rc = ofile_sync_parent(path) ? OFILE_NOT_DURABLE : 0;
out:
	if (rc && !renamed && tmp) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		errno = e;
	}
	free(tmp);
	return rc;
}
