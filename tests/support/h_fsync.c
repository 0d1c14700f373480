/* h_fsync.c - fsync that fails for directories on request (h_fsync.h): a rename that the file
 * system cannot commit, as a failing disk or a full journal gives it. */
#include <errno.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "h_fsync.h"

static int dir_fsync_err;

void h_fail_dir_fsync(int err)
{
	dir_fsync_err = err;
}

int fsync(int fd)
{
	struct stat st;
	if (dir_fsync_err && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		errno = dir_fsync_err;
		return -1;
	}
	/* the kernel's, not a symbol that might lead back here */
	return (int)syscall(SYS_fsync, fd);
}
