/* ctl_out.c - outpostctl: store access, argument parsing, time formats and output writers. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "ctl.h"
#include "ovis.h"

/* At most this much of an error message is printed (a store's is at most STORE_ERR_MAX). */
#define CTL_ERR_MAX 1024

int ctl_err(int code, const char *fmt, ...)
{
	/* One line, as DESIGN.md wants: a control character (a line break in a file name) is
	 * shown escaped; the database's messages are folded before they get here
	 * (ctl_store_err, store_open). Never cut in the middle of a character. */
	char msg[CTL_ERR_MAX], shown[4 * CTL_ERR_MAX];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	size_t n = len < 0 ? 0 : strlen(msg);
	/* cut to fit: vsnprintf kept what fitted of the character the cut fell in, which goes */
	if (len >= (int)sizeof(msg))
		n = ovis_whole(msg, n);
	ovis_escape(shown, sizeof(shown), msg, n, 0);
	fprintf(stderr, CTL_PROG ": %s\n", shown);
	return code;
}

void ctl_done(struct ctl *c, const char *what, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->done, sizeof(c->done), fmt, ap);
	va_end(ap);
	c->done_what = what;
}

int ctl_store_err(struct ctl *c, const char *what, int rc)
{
	char detail[STORE_ERR_MAX];
	/* libpq's messages are several lines, with tabs: one line of words */
	snprintf(detail, sizeof(detail), "%s", c->s ? store_errmsg(c->s) : "");
	ovis_line(detail);
	return ctl_err(CTL_FAIL, "%s: %s%s%s", what, store_strerror(rc), detail[0] ? ": " : "",
	               detail);
}

struct store *ctl_store(struct ctl *c)
{
	char err[STORE_ERR_MAX];
	struct store_opts o = STORE_OPTS_INIT;
	int version = 0, rc;
	if (c->s)
		return c->s;
	o.create = 0;   /* a typo in the path must not create an empty store */
	o.writable = 0; /* its reads work on a store this user may only read */
	o.app_name = CTL_PROG;
	c->code = CTL_FAIL;
	if ((rc = store_open(c->store_url, &o, &c->s, err))) {
		if (rc == STORE_EURL || rc == STORE_ENOTSUP)
			c->code = CTL_USAGE;
		ctl_err(c->code, "store %s", err);
		return NULL;
	}
	/* Never migrated from here: the bridges that use the store do that when they are
	 * upgraded, and older ones still running beside it would lose columns they write
	 * (OPERATIONS.md "Upgrading"). */
	if ((rc = store_schema_version(c->s, &version)))
		ctl_store_err(c, store_url(c->s), rc);
	else if (version == 0)
		ctl_err(CTL_FAIL,
		        "store %s has no Outpost schema: start outpost-bridge on it first (it"
		        " creates the tables)",
		        store_url(c->s));
	else if (version < STORE_SCHEMA_VERSION)
		ctl_err(CTL_FAIL,
		        "store %s: store schema %d is older than this outpostctl's %d: upgrade the"
		        " bridge first",
		        store_url(c->s), version, STORE_SCHEMA_VERSION);
	else if (version > STORE_SCHEMA_VERSION)
		ctl_err(CTL_FAIL,
		        "store %s: store schema %d is newer than this outpostctl's %d: upgrade"
		        " outpostctl",
		        store_url(c->s), version, STORE_SCHEMA_VERSION);
	if (rc || version != STORE_SCHEMA_VERSION) {
		store_close(c->s);
		c->s = NULL;
		return NULL;
	}
	return c->s;
}

int ctl_args(struct ctl *c, const char *cmd, int argc, char **argv, const struct ctl_optdef *defs,
             const char **pos, int max_pos, int *npos)
{
	int ended = 0; /* a bare "--" was met: what follows is positional */
	*npos = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!ended && !strcmp(a, "--")) {
			ended = 1;
			continue;
		}
		if (!ended && ctl_global_opt(c, argc, argv, &i))
			continue;
		if (ended || strncmp(a, "--", 2)) {
			if (*npos >= max_pos)
				return ctl_err(CTL_USAGE,
				               "%s: unexpected argument '%s' (try --help)", cmd, a);
			pos[(*npos)++] = a;
			continue;
		}
		a += 2;
		const char *eq = strchr(a, '=');
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
		const struct ctl_optdef *d = defs;
		while (d && d->name && (strlen(d->name) != len || strncmp(d->name, a, len)))
			d++;
		if (!d || !d->name)
			return ctl_err(CTL_USAGE, "%s: unknown option --%.*s (try --help)", cmd,
			               (int)len, a);
		const char *v = "1";
		if (d->has_arg) {
			if (eq)
				v = eq + 1;
			else if (i + 1 < argc)
				v = argv[++i];
			else
				return ctl_err(CTL_USAGE, "%s: --%s needs a value", cmd, d->name);
		} else if (eq) {
			return ctl_err(CTL_USAGE, "%s: --%s takes no value", cmd, d->name);
		}
		if (d->multi) {
			if (*d->n_multi >= d->max_multi)
				return ctl_err(CTL_USAGE, "%s: --%s given more than %zu times", cmd,
				               d->name, d->max_multi);
			d->multi[(*d->n_multi)++] = v;
		} else {
			*d->value = v;
		}
	}
	return ctl_settle(c);
}

int ctl_check_choice(const char *cmd, const char *opt, const char *value,
                     const char *const *allowed)
{
	char list[1024];
	for (size_t i = 0; allowed[i]; i++)
		if (!strcmp(value, allowed[i]))
			return CTL_OK;
	return ctl_err(CTL_USAGE, "%s: --%s '%s': want one of %s", cmd, opt, value,
	               cfg_join(allowed, list, sizeof(list)));
}

/* The seconds of 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the years RFC 3339 writes. */
#define CTL_TIME_MIN_S (-62167219200LL)
#define CTL_TIME_MAX_S 253402300799LL

const char *ctl_time(int64_t ms, char *buf)
{
	/* floor division: ms - 999 would overflow for INT64_MIN, which a device may send */
	int64_t s = ms / 1000;
	int frac = (int)(ms % 1000);
	if (frac < 0) {
		s--;
		frac += 1000;
	}
	time_t t = (time_t)s;
	struct tm tm;
	if (s < CTL_TIME_MIN_S || s > CTL_TIME_MAX_S || (int64_t)t != s || !gmtime_r(&t, &tm)) {
		snprintf(buf, 32, "unix ms %" PRId64, ms);
		return buf;
	}
	/* not strftime: glibc's %Y does not pad years below 1000 to four digits; the fields fit
	 * in 24 bytes, which the compiler cannot know of any int */
	char text[80];
	snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
	size_t n = strlen(text);
	n = n < 31 ? n : 31;
	memcpy(buf, text, n);
	buf[n] = '\0';
	return buf;
}

static int digits(const char *s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int ctl_parse_time(const char *s, int64_t now_ms, int64_t *ms)
{
	int64_t d;
	if (!s || !*s)
		return -1;
	if (!strcmp(s, "now")) {
		*ms = now_ms;
		return 0;
	}
	if (s[0] == '@') {
		/* digits only: strtoll would also take "@ 5", "@+5" and "@-5" */
		size_t nd = strspn(s + 1, "0123456789");
		if (!nd || s[1 + nd])
			return -1;
		errno = 0;
		long long v = strtoll(s + 1, NULL, 10);
		if (errno == ERANGE || v > INT64_MAX / 1000)
			return -1;
		*ms = (int64_t)v * 1000;
		return 0;
	}
	/* a bare number is no time: seconds, ms or days? (@N says seconds; 90d days); nor is
	 * one with a sign or a space, which cfg_parse_duration would take as seconds */
	size_t n = strlen(s);
	const char *dur = s[0] == '-' ? s + 1 : s;
	if (strspn(dur, "0123456789") == strlen(dur))
		return -1;
	if (!strpbrk(dur, " \t") && cfg_parse_duration(dur, &d) == 0) {
		*ms = now_ms - d;
		return 0;
	}
	/* YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+HH:MM|-HH:MM] */
	struct tm tm = {0};
	int Y, M, D, h = 0, m = 0, sec = 0, frac = 0, fdig = 0;
	if (n < 10 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
	    digits(s + 8, 2, &D))
		return -1;
	const char *p = s + 10;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		if (digits(p + 1, 2, &h) || p[3] != ':' || digits(p + 4, 2, &m))
			return -1;
		p += 6;
		if (*p == ':') {
			if (digits(p + 1, 2, &sec))
				return -1;
			p += 3;
			if (*p == '.') {
				if (!isdigit((unsigned char)*++p))
					return -1; /* a '.' wants a digit after it */
				while (isdigit((unsigned char)*p)) {
					if (fdig < 3) {
						frac = frac * 10 + (*p - '0');
						fdig++;
					}
					p++;
				}
				while (fdig < 3) {
					frac *= 10;
					fdig++;
				}
			}
		}
	}
	int off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om;
		if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 ||
		    om > 59)
			return -1;
		off = (oh * 60 + om) * (*p == '+' ? 1 : -1);
		p += 6;
	}
	if (*p || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
		return -1;
	tm.tm_year = Y - 1900;
	tm.tm_mon = M - 1;
	tm.tm_mday = D;
	tm.tm_hour = h;
	tm.tm_min = m;
	tm.tm_sec = sec > 59 ? 59 : sec; /* a leap second reads as the second after :59 */
	time_t t = timegm(&tm) + (sec > 59);
	if (tm.tm_mday != D || tm.tm_mon != M - 1) /* 2026-02-31 is no date, not March 3rd */
		return -1;
	*ms = ((int64_t)t - (int64_t)off * 60) * 1000 + frac;
	return 0;
}

int ctl_parse_number(const char *s, int64_t min, int64_t *out)
{
	char *end;
	if (!s || !isdigit((unsigned char)*s)) /* strto* would take "-1", " 5", "+5" */
		return -1;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (*end || errno == ERANGE || v < min)
		return -1;
	*out = v;
	return 0;
}

const char *ctl_double(double v, char *buf)
{
	if (isnan(v))
		return "nan";
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, 32, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	return buf;
}

int ctl_fmt_parse(const char *s, enum ctl_fmt *out)
{
	if (!strcmp(s, "table"))
		*out = CTL_FMT_TABLE;
	else if (!strcmp(s, "csv"))
		*out = CTL_FMT_CSV;
	else if (!strcmp(s, "json"))
		*out = CTL_FMT_JSON;
	else
		return -1;
	return 0;
}

const char *ctl_vis(const char *s, char *buf, size_t cap)
{
	ovis_escape(buf, cap, s ? s : "", s ? strlen(s) : 0, 0);
	return buf;
}

/* Input bytes escaped at a time by ctl_csv_field: 4 output bytes each at most (\xNN). */
#define CSV_VIS_PIECE ((CTL_VIS_MAX - 1) / 4)

void ctl_csv_field(FILE *f, const char *s, int vis)
{
	if (!s)
		return;
	/* escaped, a field has no line break left */
	int quote = strpbrk(s, vis ? ",\"" : ",\"\n\r") != NULL;
	if (quote)
		fputc('"', f);
	/* escaped a piece at a time, however long the field: never cut */
	for (size_t n = strlen(s); n;) {
		char v[CTL_VIS_MAX];
		const char *p = s;
		size_t take = n;
		if (vis) {
			take = n < CSV_VIS_PIECE ? n : CSV_VIS_PIECE;
			/* a piece ends before a character, not inside one (C1 and bidi escapes) */
			while (take < n && take > 1 && ((unsigned char)s[take] & 0xc0) == 0x80)
				take--;
			ovis_escape(v, sizeof(v), s, take, 0);
			p = v;
		}
		if (!quote)
			fwrite(p, 1, vis ? strlen(p) : take, f);
		for (; quote && (vis ? *p != '\0' : p < s + take); p++) {
			if (*p == '"')
				fputc('"', f);
			fputc(*p, f);
		}
		s += take;
		n -= take;
	}
	if (quote)
		fputc('"', f);
}

void ctl_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s, next = (unsigned char)s[1];
		unsigned bidi;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch == '\t')
			fputs("\\t", f);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(f, "\\u%04x", ch);
		else if (ch == 0xc2 && next >= 0x80 && next <= 0x9f) {
			/* U+0080..U+009F, the C1 controls (U+009B is a terminal's CSI): valid
			 * JSON either way, escaped so that the output is safe to look at */
			fprintf(f, "\\u%04x", next);
			s++;
		} else if ((ch == 0xe2 || ch == 0xd8) && (bidi = ovis_bidi(s, strnlen(s, 3)))) {
			/* the bidirectional controls, which can make text read otherwise */
			fprintf(f, "\\u%04x", bidi);
			s += bidi == 0x061c ? 1 : 2;
		} else {
			fputc(ch, f);
		}
	}
	fputc('"', f);
}

void ctl_out_begin(struct ctl_out *o, enum ctl_fmt fmt, int raw, FILE *f, int ncols,
                   const char *const *names, const enum ctl_coltype *types)
{
	memset(o, 0, sizeof(*o));
	o->fmt = fmt;
	o->f = f;
	o->ncols = ncols;
	o->names = names;
	o->types = types;
	/* CSV shows a device's control characters (ctl_vis) wherever it goes, a pipe too: what
	 * reads it may be a pager or a terminal later (--raw: the bytes, for a program) */
	o->vis = !raw;
}

/* The CSV header or the JSON '[', once: with the first row, or at the end if none came. */
static void out_head(struct ctl_out *o)
{
	if (o->begun)
		return;
	o->begun = 1;
	if (o->fmt == CTL_FMT_CSV) {
		for (int i = 0; i < o->ncols; i++) {
			if (i)
				fputc(',', o->f);
			ctl_csv_field(o->f, o->names[i], 0);
		}
		fputc('\n', o->f);
	} else if (o->fmt == CTL_FMT_JSON) {
		fputs("[", o->f);
	}
}

static int looks_numeric(const char *s)
{
	char *end;
	if (!s || !*s)
		return 0;
	strtod(s, &end);
	return !*end && strcmp(s, "nan") && strcmp(s, "inf") && strcmp(s, "-inf");
}

/* Give up the table's rows (memory ran out): nothing of it is printed. */
static void table_drop(struct ctl_out *o)
{
	for (size_t i = 0; o->cells && i < o->nrows * (size_t)o->ncols; i++)
		free(o->cells[i]);
	free(o->cells);
	o->cells = NULL;
	o->nrows = o->cap = 0;
	o->failed = 1;
}

void ctl_out_cap(struct ctl_out *o, const char *hint)
{
	o->max = CTL_TABLE_ROWS;
	o->hint = hint;
}

int ctl_out_row(struct ctl_out *o, const char *const *vals)
{
	FILE *f = o->f;
	if (o->failed)
		return -1;
	if (o->max && o->nrows == o->max) {
		o->more = 1;
		return 1;
	}
	out_head(o);
	if (o->fmt == CTL_FMT_CSV) {
		for (int i = 0; i < o->ncols; i++) {
			if (i)
				fputc(',', f);
			ctl_csv_field(f, vals[i], o->vis);
		}
		fputc('\n', f);
	} else if (o->fmt == CTL_FMT_JSON) {
		fputs(o->nrows ? ",\n {" : "\n {", f);
		for (int i = 0; i < o->ncols; i++) {
			fprintf(f, "%s\"%s\": ", i ? ", " : "", o->names[i]);
			if (!vals[i])
				fputs("null", f);
			else if (o->types[i] == CTL_NUM && looks_numeric(vals[i]))
				fputs(vals[i], f);
			else if (o->types[i] == CTL_NUM && !vals[i][0])
				fputs("null", f);
			else
				ctl_json_str(f, vals[i]);
		}
		fputc('}', f);
	} else {
		if (o->nrows == o->cap) {
			size_t cap = o->cap ? o->cap * 2 : 64;
			size_t n = cap * (size_t)o->ncols;
			char **cells = cap <= SIZE_MAX / sizeof(char *) / (size_t)o->ncols
			                   ? realloc(o->cells, n * sizeof(char *))
			                   : NULL;
			if (!cells) {
				table_drop(o);
				return -1;
			}
			o->cells = cells;
			o->cap = cap;
		}
		char **row = o->cells + o->nrows * (size_t)o->ncols;
		for (int i = 0; i < o->ncols; i++) {
			char v[CTL_VIS_MAX];
			row[i] = strdup(vals[i] ? ctl_vis(vals[i], v, sizeof(v)) : "-");
			if (!row[i]) {
				o->nrows++; /* the row's cells so far are freed with the rest */
				for (int k = i + 1; k < o->ncols; k++)
					row[k] = NULL;
				table_drop(o);
				return -1;
			}
		}
	}
	o->nrows++;
	return 0;
}

int ctl_out_end(struct ctl_out *o, int failed)
{
	FILE *f = o->f;
	size_t *w = NULL;
	if (failed) {
		if (o->fmt == CTL_FMT_JSON && o->nrows)
			fputc('\n', f); /* the last row's line ends; the array stays open */
		table_drop(o);
		return CTL_FAIL;
	}
	out_head(o);
	if (o->fmt == CTL_FMT_JSON) {
		fputs(o->nrows ? "\n]\n" : "]\n", f);
		return CTL_OK;
	}
	if (o->fmt != CTL_FMT_TABLE)
		return CTL_OK;
	if (!o->failed && !(w = calloc((size_t)o->ncols, sizeof(*w))))
		table_drop(o);
	if (o->failed)
		return ctl_err(CTL_FAIL, "out of memory keeping the rows of the table: ask for"
		                         " fewer (--limit) or for --format csv, which keeps none");
	for (int i = 0; i < o->ncols; i++)
		w[i] = strlen(o->names[i]);
	for (size_t r = 0; r < o->nrows; r++)
		for (int i = 0; i < o->ncols; i++) {
			size_t l = strlen(o->cells[r * (size_t)o->ncols + (size_t)i]);
			if (l > w[i])
				w[i] = l;
		}
	for (int i = 0; i < o->ncols; i++)
		fprintf(f, "%-*s%s", i + 1 < o->ncols ? (int)w[i] : 0, o->names[i],
		        i + 1 < o->ncols ? "  " : "\n");
	for (size_t r = 0; r < o->nrows; r++) {
		for (int i = 0; i < o->ncols; i++) {
			char *s = o->cells[r * (size_t)o->ncols + (size_t)i];
			int right = o->types[i] == CTL_NUM && i + 1 < o->ncols;
			if (right)
				fprintf(f, "%*s  ", (int)w[i], s);
			else
				fprintf(f, "%-*s%s", i + 1 < o->ncols ? (int)w[i] : 0, s,
				        i + 1 < o->ncols ? "  " : "");
			free(s);
		}
		fputc('\n', f);
	}
	free(w);
	free(o->cells);
	o->cells = NULL;
	if (o->more)
		fprintf(f, "(the first %zu rows: there are more; %s)\n", o->max, o->hint);
	return CTL_OK;
}
