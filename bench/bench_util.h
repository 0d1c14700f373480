/* bench_util.h - small helpers shared by the benchmark programs (bench/run.sh drives them).
 * Benchmarks only: they abort on setup failures instead of recovering. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The benchmarks' reference time, 2026-01-01T00:00:00Z (sample times of the first batch), and
 * the first seq minus one a device's new spool takes at that time: dev_spool_clock_seq counts
 * quarter-seconds since 2020-01-01 (docs/PROTOCOL.md §2). */
#define BENCH_T0_MS 1767225600000LL
#define BENCH_SEQ0  ((uint64_t)(BENCH_T0_MS - 1577836800000LL) / 250)

static inline int64_t bench_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t bench_mono_ms(void)
{
	return bench_mono_us() / 1000;
}

static inline int64_t bench_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void bench_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

__attribute__((noreturn, format(printf, 2, 3))) static inline void bench_die(const char *prog,
                                                                            const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static inline void *bench_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p) {
		fprintf(stderr, "bench: out of memory\n");
		abort();
	}
	return p;
}

/* Value of "--name=value" or "--name value" in argv, else def. */
static inline const char *bench_arg(int argc, char **argv, const char *name, const char *def)
{
	size_t n = strlen(name);
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], name, n))
			continue;
		if (argv[i][n] == '=')
			return argv[i] + n + 1;
		if (!argv[i][n] && i + 1 < argc)
			return argv[i + 1];
	}
	return def;
}

static inline long bench_arg_l(int argc, char **argv, const char *name, long def)
{
	const char *v = bench_arg(argc, argv, name, NULL);
	return v ? strtol(v, NULL, 10) : def;
}

/* xorshift64: cheap deterministic noise. */
static inline uint64_t bench_rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

#endif
