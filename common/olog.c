/* olog.c - timestamped single-line logging to stderr. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "olog.h"
#include "ovis.h"

static char prefix[128] = "outpost";
static atomic_int max_level = OLOG_INFO; /* olog_set_level() runs while threads log */
static const char *const names[] = {"error", "warn", "info", "debug"};

void olog_init(const char *program, const char *ident, enum olog_level max)
{
	if (ident && *ident)
		snprintf(prefix, sizeof(prefix), "%s[%s]", program, ident);
	else
		snprintf(prefix, sizeof(prefix), "%s", program);
	atomic_store(&max_level, (int)max);
}

void olog_set_level(enum olog_level max)
{
	atomic_store(&max_level, (int)max);
}

int olog_enabled(enum olog_level level)
{
	return (int)level <= atomic_load(&max_level);
}

int olog_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, names[i]))
			return i;
	return -1;
}

void olog(enum olog_level level, const char *fmt, ...)
{
	char line[1024], msg[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	if ((int)level > atomic_load(&max_level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 ts.tv_nsec / 1000000, prefix, names[level]);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_start(ap, fmt);
	int m = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	size_t mlen = m < 0 ? 0 : ((size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1);
	/* one line per record, whatever the message held; room for the newline */
	size_t len = (size_t)n +
	             ovis_escape(line + n, sizeof(line) - (size_t)n - 1, msg, mlen, OVIS_LINE);
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}
