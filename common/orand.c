/* orand.c - xorshift64* jitter stream, seeded from /dev/urandom. */
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "orand.h"
#include "otime.h"

uint64_t orand_seed(void)
{
	uint64_t seed = (uint64_t)otime_mono_ms() ^ ((uint64_t)getpid() << 32);
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (read(fd, &seed, sizeof(seed)) != sizeof(seed))
			seed ^= (uint64_t)time(NULL);
		close(fd);
	}
	return seed | 1;
}

uint64_t orand_next(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 2685821657736338717ULL;
}
