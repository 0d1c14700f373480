/* wire_file.c - read small PEM files (keys, certificates, CRLs). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wire_err.h"
#include "wire_file.h"

int wire__read_file(const char *path, size_t max, char **out, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int rc = WIRE_EIO, keep;
	/* O_NONBLOCK: a FIFO (or a device) given for a file must not block the open until a
	 * writer comes; it is refused below. No effect on a regular file. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return WIRE_EIO;
	if (fstat(fd, &st) != 0)
		goto out;
	if (!S_ISREG(st.st_mode)) {
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		goto out;
	}
	if ((size_t)st.st_size > max) {
		rc = WIRE_ELIMIT;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = WIRE_ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto out;
		got += (size_t)n;
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	buf = NULL;
	rc = WIRE_OK;
out:
	keep = errno; /* why it failed, for the caller */
	free(buf);
	close(fd);
	errno = keep;
	return rc;
}
