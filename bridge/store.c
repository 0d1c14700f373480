/* store.c - store URL dispatch and the backend-neutral statement API over store_be.h. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ohex.h"
#include "ovis.h"
#include "store_be.h"

struct store {
	const struct store_backend *be;
	void *conn;
	char *url; /* for messages; password removed */
	char err[STORE_ERR_MAX];
};

struct store_stmt {
	struct store *s;
	void *st;
	int64_t changes;
};

#define COPY_MAX_COLS 16

struct store_copy {
	struct store *s;
	char *table;
	char *cols;
	int ncols;
	void *cp; /* backend copy while started */
	int col;  /* next column of the current row */
	struct store_val row[COPY_MAX_COLS];
};

static const char *const errs[] = {
    [0] = "ok",
    [1] = "out of memory",
    [2] = "invalid argument",
    [3] = "store URL not understood (want sqlite:PATH or postgresql://...)",
    [4] = "cannot reach the database",
    [5] = "database busy or locked",
    [6] = "statement failed",
    [7] = "constraint violated",
    [8] = "store schema not usable by this program",
    [9] = "not found",
    [10] = "database is read-only",
    [11] = "database full",
    [12] = "backend not built into this program",
    [13] = "not allowed in the current state",
    [14] = "connection lost during COMMIT: outcome unknown",
};

const char *store_strerror(int err)
{
	int i = -err;
	if (i < 0 || (size_t)i >= sizeof(errs) / sizeof(errs[0]))
		return "unknown store error";
	return errs[i];
}

int store_err_transient(int err)
{
	return err == STORE_ECONN || err == STORE_EBUSY || err == STORE_EREADONLY ||
	       err == STORE_EFULL;
}

/* 1 if the query parameter name n bytes long, percent-decoded as libpq decodes it, is one
 * whose value is a secret: password, or sslpassword (the passphrase of the client key). */
static int secret_param(const char *name, size_t n)
{
	static const char *const secret[] = {"password", "sslpassword"};
	char dec[sizeof("sslpassword")];
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)name[i];
		if (c == '%' && i + 2 < n && ohex_digit((unsigned char)name[i + 1]) >= 0 &&
		    ohex_digit((unsigned char)name[i + 2]) >= 0) {
			c = ohex_digit((unsigned char)name[i + 1]) << 4 |
			    ohex_digit((unsigned char)name[i + 2]);
			i += 2;
		}
		if (k == sizeof(dec) - 1)
			return 0; /* longer than any secret's name */
		dec[k++] = (char)c;
	}
	dec[k] = '\0';
	for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
		if (!strcmp(dec, secret[i]))
			return 1;
	return 0;
}

/* Mark [from, to) of a URL hidden, with what comes after from as the password when from is a
 * ':' (the user info's; nothing when from is NULL). */
static void hide(char *mask, const char *url, const char *from, const char *to)
{
	if (from)
		memset(mask + (from + 1 - url), 1, (size_t)(to - from - 1));
}

/* 1 if the '@' at at is inside the value of a query parameter: a '?' comes before it, and
 * between the last '?' or '&' before it and it there is an '='. */
static int in_query_value(const char *auth, const char *at)
{
	const char *q = memchr(auth, '?', (size_t)(at - auth));
	if (!q)
		return 0;
	for (const char *p = at; p > q; p--)
		if (p[-1] == '=')
			return 1;
		else if (p[-1] == '&' || p[-1] == '?')
			return 0;
	return 0;
}

/* Which bytes of url redact hides. A URL with unencoded '/', '?', '#' or '@' in its password,
 * or '@' in a query value, can be read more than one way, and each is hidden: the user info
 * ending at the first '@' (libpq's reading when no '/' comes first); ending at the last '@'
 * that is not inside a query value (a password holding '@' or '?'); and every password and
 * sslpassword parameter after the first '?', with '?' also taken as a separator (a '?' in the
 * password). *ambiguous: the user info as hidden holds '/', '?', '#' or '@' (libpq may read
 * it differently, and quote a piece of it). */
static void redact_mask(const char *url, char *mask, int *ambiguous)
{
	const char *a = strstr(url, "://"), *first, *last = NULL;
	*ambiguous = 0;
	if (!a)
		return;
	const char *auth = a + 3;
	if ((first = strchr(auth, '@')) != NULL) {
		for (const char *p = first; (p = strchr(p, '@')) != NULL; p++)
			if (!in_query_value(auth, p))
				last = p;
		const char *ends[2] = {first, last};
		for (int i = 0; i < 2; i++) {
			const char *end = ends[i];
			const char *colon = end ? memchr(auth, ':', (size_t)(end - auth)) : NULL;
			hide(mask, url, colon, end);
			if (colon && strcspn(colon, "/?#@") < (size_t)(end - colon))
				*ambiguous = 1;
		}
	}
	const char *p = strchr(auth, '?');
	while (p && *p) {
		p++; /* past the '?' or '&' that starts a parameter */
		size_t name = strcspn(p, "=&?");
		if (p[name] == '=' && secret_param(p, name)) {
			size_t value = strcspn(p + name + 1, "&");
			memset(mask + (p + name + 1 - url), 1, value);
		}
		p += strcspn(p, "&?");
	}
}

/* Copy of url with its secrets replaced by "***" (redact_mask): the password of
 * user:pass@host and the values of the query parameters password and sslpassword (their names
 * may be percent-encoded). *ambiguous as redact_mask's (may be NULL). store_open takes only
 * URLs, never "key=value" conninfo strings. NULL if out of memory. */
static char *redact(const char *url, int *ambiguous)
{
	size_t n = strlen(url);
	char *out = malloc(2 * n + 8), *mask = calloc(n + 1, 1), *o = out;
	int amb = 0;
	if (!out || !mask) {
		free(out);
		free(mask);
		return NULL;
	}
	redact_mask(url, mask, &amb);
	for (size_t i = 0; i < n; i++) {
		if (!mask[i])
			*o++ = url[i];
		else if (!i || !mask[i - 1])
			o = (char *)memcpy(o, "***", 3) + 3;
	}
	*o = '\0';
	free(mask);
	if (ambiguous)
		*ambiguous = amb;
	return out;
}

int store_open(const char *url, const struct store_opts *opts, struct store **out, char *err)
{
	static const struct store_opts defaults = STORE_OPTS_INIT;
	const struct store_backend *be = NULL;
	const char *target = url;

	if (!url || !out) {
		snprintf(err, STORE_ERR_MAX, "no store URL");
		return STORE_EINVAL;
	}
	if (!opts)
		opts = &defaults;
	if (!strncmp(url, "sqlite:", 7)) {
		be = &store__sqlite;
		target = url + 7;
		if (!strncmp(target, "//", 2)) /* sqlite:///abs/path */
			target += 2;
		if (!*target) {
			snprintf(err, STORE_ERR_MAX, "%s: no database path after sqlite:", url);
			return STORE_EURL;
		}
	} else if (!strncmp(url, "postgresql://", 13) || !strncmp(url, "postgres://", 11)) {
#ifdef STORE_WITH_PG
		be = &store__pg;
#else
		char *r = redact(url, NULL);
		snprintf(err, STORE_ERR_MAX,
		         "%s: this program was built without PostgreSQL (WITH_POSTGRES=OFF)",
		         r ? r : "postgresql://...");
		free(r);
		return STORE_ENOTSUP;
#endif
	} else {
		/* not shown unless it is a URL: a "host=... password=..." conninfo string is not */
		char *r = strstr(url, "://") ? redact(url, NULL) : NULL;
		snprintf(err, STORE_ERR_MAX, "%s: %s", r ? r : "the store setting",
		         store_strerror(STORE_EURL));
		free(r);
		return STORE_EURL;
	}
	struct store *s = calloc(1, sizeof(*s));
	int ambiguous = 0;
	if (!s || !(s->url = redact(url, &ambiguous))) {
		free(s);
		snprintf(err, STORE_ERR_MAX, "out of memory");
		return STORE_ENOMEM;
	}
	s->be = be;
	char why[STORE_ERR_MAX] = "";
	int rc = be->open(target, opts, s->err, &s->conn, why);
	if (rc && ambiguous) {
		/* libpq's user info ends at the first '@', or is none if a '/' comes first: a
		 * password holding either is read as a host and a port, and its pieces may be
		 * quoted in libpq's message */
		snprintf(why, sizeof(why), "%s (its message is not shown: it may quote a password"
		         " the URL holds unencoded; write '/', '?', '#' and '@' in a password, and"
		         " '@' in a parameter, as %%2F, %%3F, %%23, %%40)",
		         store_strerror(rc));
	}
	if (rc) {
		/* one line (libpq's messages are several, with tabs), cut at a character */
		ovis_line(why);
		size_t u = ovis_fit(s->url, strlen(s->url), 100);
		size_t room = STORE_ERR_MAX - 3 - u;
		snprintf(err, STORE_ERR_MAX, "%.*s: %.*s", (int)u, s->url,
		         (int)ovis_fit(why, strlen(why), room), why);
		free(s->url);
		free(s);
		return rc;
	}
	*out = s;
	return STORE_OK;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	s->be->close(s->conn);
	free(s->url);
	free(s);
}

enum store_dialect store_dialect(const struct store *s)
{
	return s->be->dialect;
}

const char *store_url(const struct store *s)
{
	return s->url;
}

const char *store_errmsg(const struct store *s)
{
	return s->err;
}

void store__errf(struct store *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
}

void store_interrupt(struct store *s)
{
	if (s && s->be->interrupt)
		s->be->interrupt(s->conn);
}

int store_exec(struct store *s, const char *sql)
{
	return s->be->exec(s->conn, sql);
}

int store_begin(struct store *s)
{
	return s->be->begin(s->conn);
}

int store_commit(struct store *s)
{
	return s->be->commit ? s->be->commit(s->conn) : s->be->exec(s->conn, "COMMIT");
}

int store_commit_resolve(struct store *s)
{
	return s->be->resolve ? s->be->resolve(s->conn) : STORE_EINVAL;
}

int store_rollback(struct store *s)
{
	/* The message kept is the error that made the caller roll back: SQLite may have rolled
	 * back by itself (SQLITE_FULL), and then ROLLBACK fails with "no transaction is active". */
	char keep[STORE_ERR_MAX];
	memcpy(keep, s->err, sizeof(keep));
	int rc = s->be->exec(s->conn, "ROLLBACK");
	memcpy(s->err, keep, sizeof(keep));
	return rc == STORE_ECONN ? STORE_OK : rc;
}

int store_prepare(struct store *s, const char *sql, struct store_stmt **out)
{
	struct store_stmt *st = calloc(1, sizeof(*st));
	if (!st)
		return STORE_ENOMEM;
	int rc = s->be->prepare(s->conn, sql, &st->st);
	if (rc) {
		free(st);
		return rc;
	}
	st->s = s;
	*out = st;
	return STORE_OK;
}

void store_stmt_free(struct store_stmt *st)
{
	if (!st)
		return;
	st->s->be->finalize(st->st);
	free(st);
}

static int bind(struct store_stmt *st, int idx, const struct store_val *v)
{
	return st->s->be->bind(st->st, idx, v);
}

int store_bind_i64(struct store_stmt *st, int idx, int64_t v)
{
	struct store_val x = {.t = STORE_VI64, .i = v};
	return bind(st, idx, &x);
}

int store_bind_f64(struct store_stmt *st, int idx, double v)
{
	struct store_val x = {.t = isnan(v) ? STORE_VNULL : STORE_VF64, .f = v};
	return bind(st, idx, &x);
}

int store_bind_text(struct store_stmt *st, int idx, const char *v)
{
	struct store_val x = {.t = v ? STORE_VTEXT : STORE_VNULL, .p = v, .len = v ? strlen(v) : 0};
	return bind(st, idx, &x);
}

int store_bind_blob(struct store_stmt *st, int idx, const void *v, size_t len)
{
	struct store_val x = {.t = v ? STORE_VBLOB : STORE_VNULL, .p = v, .len = len};
	return bind(st, idx, &x);
}

int store_bind_null(struct store_stmt *st, int idx)
{
	struct store_val x = {.t = STORE_VNULL};
	return bind(st, idx, &x);
}

int store_step(struct store_stmt *st)
{
	int rc = st->s->be->step(st->st);
	if (rc == 0)
		st->changes = st->s->be->changes(st->st);
	return rc;
}

int store_reset(struct store_stmt *st)
{
	return st->s->be->reset(st->st);
}

int64_t store_changes(const struct store_stmt *st)
{
	return st->changes;
}

int store_col_null(struct store_stmt *st, int col)
{
	struct store_val v;
	return st->s->be->column(st->st, col, &v) || v.t == STORE_VNULL;
}

int64_t store_col_i64(struct store_stmt *st, int col)
{
	struct store_val v;
	if (st->s->be->column(st->st, col, &v))
		return 0;
	return v.t == STORE_VI64 ? v.i : v.t == STORE_VF64 ? (int64_t)v.f : 0;
}

double store_col_f64(struct store_stmt *st, int col)
{
	struct store_val v;
	if (st->s->be->column(st->st, col, &v))
		return NAN;
	return v.t == STORE_VF64 ? v.f : v.t == STORE_VI64 ? (double)v.i : NAN;
}

const char *store_col_text(struct store_stmt *st, int col)
{
	struct store_val v;
	if (st->s->be->column(st->st, col, &v) || v.t != STORE_VTEXT)
		return NULL;
	return v.p;
}

const void *store_col_blob(struct store_stmt *st, int col, size_t *len)
{
	struct store_val v;
	*len = 0;
	if (st->s->be->column(st->st, col, &v) || (v.t != STORE_VBLOB && v.t != STORE_VTEXT))
		return NULL;
	*len = v.len;
	return v.p;
}

int store_query_i64(struct store *s, int64_t *out, const char *sql, int nargs, ...)
{
	struct store_stmt *st = NULL;
	va_list ap;
	int rc = store_prepare(s, sql, &st);
	if (rc)
		return rc;
	va_start(ap, nargs);
	for (int i = 0; i < nargs && !rc; i++)
		rc = store_bind_i64(st, i + 1, va_arg(ap, int64_t));
	va_end(ap);
	if (!rc) {
		rc = store_step(st);
		if (rc == 1) {
			*out = store_col_i64(st, 0);
			rc = STORE_OK;
		} else if (rc == 0) {
			rc = STORE_ENOTFOUND;
		}
	}
	store_stmt_free(st);
	return rc;
}

int store_exec_i64(struct store *s, const char *sql, const int64_t *args, int nargs,
                   int64_t *changes)
{
	struct store_stmt *st = NULL;
	int rc = store_prepare(s, sql, &st);
	for (int i = 0; !rc && i < nargs; i++)
		rc = store_bind_i64(st, i + 1, args[i]);
	if (!rc) {
		rc = store_step(st);
		rc = rc < 0 ? rc : STORE_OK;
		if (!rc && changes)
			*changes = store_changes(st);
	}
	store_stmt_free(st);
	return rc;
}

/* ---- bulk insert ---- */

int store_copy_new(struct store *s, const char *table, const char *cols, int ncols,
                   struct store_copy **out)
{
	if (ncols < 1 || ncols > COPY_MAX_COLS)
		return STORE_EINVAL;
	struct store_copy *c = calloc(1, sizeof(*c));
	if (!c)
		return STORE_ENOMEM;
	c->s = s;
	c->ncols = ncols;
	c->table = strdup(table);
	c->cols = strdup(cols);
	if (!c->table || !c->cols) {
		store_copy_free(c);
		return STORE_ENOMEM;
	}
	*out = c;
	return STORE_OK;
}

void store_copy_free(struct store_copy *c)
{
	if (!c)
		return;
	if (c->cp) {
		c->s->be->copy_end(c->cp, 0);
		c->s->be->copy_free(c->cp);
	}
	free(c->table);
	free(c->cols);
	free(c);
}

int store_copy_start(struct store_copy *c)
{
	if (c->cp) {
		c->s->be->copy_end(c->cp, 0);
		c->s->be->copy_free(c->cp);
		c->cp = NULL;
	}
	c->col = 0;
	return c->s->be->copy_begin(c->s->conn, c->table, c->cols, c->ncols, &c->cp);
}

static int copy_put(struct store_copy *c, const struct store_val *v)
{
	if (!c->cp || c->col >= c->ncols)
		return STORE_EINVAL;
	c->row[c->col++] = *v;
	return STORE_OK;
}

int store_copy_i64(struct store_copy *c, int64_t v)
{
	struct store_val x = {.t = STORE_VI64, .i = v};
	return copy_put(c, &x);
}

int store_copy_f64(struct store_copy *c, double v)
{
	struct store_val x = {.t = isnan(v) ? STORE_VNULL : STORE_VF64, .f = v};
	return copy_put(c, &x);
}

int store_copy_null(struct store_copy *c)
{
	struct store_val x = {.t = STORE_VNULL};
	return copy_put(c, &x);
}

int store_copy_blob(struct store_copy *c, const void *v, size_t len)
{
	struct store_val x = {.t = STORE_VBLOB, .p = v, .len = len};
	return copy_put(c, &x);
}

int store_copy_end_row(struct store_copy *c)
{
	if (!c->cp || c->col != c->ncols)
		return STORE_EINVAL;
	c->col = 0;
	return c->s->be->copy_row(c->cp, c->row);
}

int store_copy_finish(struct store_copy *c)
{
	if (!c->cp)
		return STORE_EINVAL;
	int rc = c->s->be->copy_end(c->cp, 1);
	c->s->be->copy_free(c->cp);
	c->cp = NULL;
	return rc;
}
