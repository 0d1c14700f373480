/* test_ofile.c - atomic, durable replacement of small files. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h_fsync.h"
#include "harness.h"
#include "ofile.h"

Test(ofile, replaces_whole_files_privately_and_fails_cleanly)
{
	char *dir = h_tmpdir("ofile"), *path = h_strf("%s/state", dir);
	char *tmp = h_strf("%s.tmp", path), *bad = h_strf("%s/missing/state", dir);
	cr_assert_eq(ofile_replace(path, "first version\n", 14), 0);
	cr_assert_eq(ofile_replace(path, "second\n", 7), 0);
	size_t len = 0;
	char *text = h_read_file(path, &len);
	cr_expect(text && len == 7 && !memcmp(text, "second\n", 7), "a shorter file leaves no tail");
	free(text);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600);
	cr_expect_neq(access(tmp, F_OK), 0, "no temporary file left behind");
	errno = 0;
	cr_expect_eq(ofile_replace(bad, "x", 1), -1);
	cr_expect_eq(errno, ENOENT);
	cr_expect_eq(ofile_sync_dir(dir), 0);
	free(bad);
	free(tmp);
	free(path);
	free(dir);
}

/* A symbolic link in the temporary file's place is not followed: the file it names is not
 * truncated or written, and path is left as it was. */
Test(ofile, a_link_in_the_temporary_files_place_is_not_followed)
{
	char *dir = h_tmpdir("ofile-link"), *path = h_strf("%s/state", dir);
	char *tmp = h_strf("%s.tmp", path), *victim = h_strf("%s/victim", dir);
	cr_assert_eq(ofile_replace(victim, "keep\n", 5), 0);
	cr_assert_eq(symlink(victim, tmp), 0);
	errno = 0;
	cr_expect_eq(ofile_replace(path, "x", 1), -1);
	cr_expect_eq(errno, ELOOP, "%s", strerror(errno));
	size_t len = 0;
	char *text = h_read_file(victim, &len);
	cr_expect(text && len == 5 && !memcmp(text, "keep\n", 5), "the link's target untouched");
	cr_expect_neq(access(path, F_OK), 0, "path not made");
	free(text);
	free(victim);
	free(tmp);
	free(path);
	free(dir);
}

/* A failure after the temporary file was written (here the rename: path is a directory)
 * leaves path as it was and removes <path>.tmp, which would otherwise stay for good. */
Test(ofile, a_failed_rename_removes_the_temporary_file)
{
	char *dir = h_tmpdir("ofile-rename"), *path = h_strf("%s/state", dir);
	char *tmp = h_strf("%s.tmp", path);
	cr_assert_eq(mkdir(path, 0700), 0);
	errno = 0;
	cr_expect_eq(ofile_replace(path, "x", 1), -1);
	cr_expect_eq(errno, EISDIR, "%s", strerror(errno));
	cr_expect_neq(access(tmp, F_OK), 0, "%s was left behind", tmp);
	struct stat st;
	cr_expect(stat(path, &st) == 0 && S_ISDIR(st.st_mode), "path as it was");
	free(tmp);
	free(path);
	free(dir);
}

/* The rename is done but the directory cannot be fsync'ed: the file holds the new contents
 * (a reader and the next start see them), which the caller must know to act on them; it is
 * told so apart from a failure that left the old contents. */
Test(ofile, a_replacement_its_directory_cannot_commit_is_told_apart)
{
	char *dir = h_tmpdir("ofile-nosync"), *path = h_strf("%s/state", dir);
	char *tmp = h_strf("%s.tmp", path);
	cr_assert_eq(ofile_replace(path, "old\n", 4), 0);
	h_fail_dir_fsync(EIO);
	errno = 0;
	cr_expect_eq(ofile_replace(path, "new\n", 4), OFILE_NOT_DURABLE);
	cr_expect_eq(errno, EIO, "%s", strerror(errno));
	h_fail_dir_fsync(0);
	size_t len = 0;
	char *text = h_read_file(path, &len);
	cr_expect(text && len == 4 && !memcmp(text, "new\n", 4), "the file was replaced");
	cr_expect_neq(access(tmp, F_OK), 0, "no temporary file left behind");
	free(text);
	free(tmp);
	free(path);
	free(dir);
}

/* Directories for the device's state and spool: missing parents made too, private, an
 * existing one left alone, a path through a file refused with errno. (That each new one's
 * parent is fsync'ed takes a power cut to observe; not tested here.) */
Test(ofile, makes_directories_with_their_parents)
{
	char *dir = h_tmpdir("ofile-mkdir");
	char *deep = h_strf("%s/a//b/c/", dir), *c = h_strf("%s/a/b/c", dir);
	struct stat st;
	umask(022);
	cr_assert_eq(ofile_mkdir_p(deep, 0700), 0, "%s", strerror(errno));
	cr_assert_eq(stat(c, &st), 0);
	cr_expect(S_ISDIR(st.st_mode));
	cr_expect_eq(st.st_mode & 0777, 0700);
	cr_expect_eq(ofile_mkdir_p(c, 0700), 0, "an existing directory is fine");

	char *file = h_strf("%s/f", dir), *through = h_strf("%s/f/x", dir);
	FILE *f = fopen(file, "w");
	cr_assert_not_null(f);
	fclose(f);
	errno = 0;
	cr_expect_eq(ofile_mkdir_p(through, 0700), -1);
	cr_expect_eq(errno, ENOTDIR, "%s", strerror(errno));
	errno = 0;
	cr_expect_eq(ofile_mkdir_p(file, 0700), -1, "a file is not a directory");
	cr_expect_eq(errno, ENOTDIR, "%s", strerror(errno));
	errno = 0;
	cr_expect_eq(ofile_mkdir_p("", 0700), -1, "no directory has an empty name");
	cr_expect_eq(errno, ENOENT, "%s", strerror(errno));
	free(through);
	free(file);
	free(c);
	free(deep);
	free(dir);
}
