/* h_fsync.h - a file system whose directories cannot be fsync'ed, for the test process only. */
#ifndef H_FSYNC_H
#define H_FSYNC_H

/* From now on fsync of a directory fails with err in this process (0: succeeds again); fsync of
 * anything else still reaches the kernel. A test that calls this links h_fsync.c's fsync, which
 * then stands in for the C library's for the whole test program, the code under test included
 * (as test_dev_tlscheck.c does getaddrinfo): no LD_PRELOAD, so it works under any sanitizer. */
void h_fail_dir_fsync(int err);

#endif
