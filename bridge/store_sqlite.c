/* store_sqlite.c - the SQLite backend: WAL journal, synchronous=FULL by default (a commit is on
 * disk before the bridge acknowledges it), busy timeout, prepared statements. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store_be.h"

struct sq_conn {
	sqlite3 *db;
	char *err; /* the store's error buffer */
};

struct sq_stmt {
	struct sq_conn *c;
	sqlite3_stmt *st;
};

struct sq_copy {
	struct sq_stmt *ins;
	int ncols;
};

static int map(struct sq_conn *c, int rc, const char *what)
{
	int ext = rc;
	rc &= 0xff;
	if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE)
		return STORE_OK;
	snprintf(c->err, STORE_ERR_MAX, "%s: %s", what, c->db ? sqlite3_errmsg(c->db) : "");
	(void)ext;
	switch (rc) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return STORE_EBUSY;
	case SQLITE_NOMEM:
		return STORE_ENOMEM;
	case SQLITE_READONLY: {
		size_t n = strlen(c->err);
		snprintf(c->err + n, STORE_ERR_MAX - n,
		         " (can this user write the store file, its -wal and -shm files and their"
		         " directory?)");
		return STORE_EREADONLY;
	}
	case SQLITE_FULL:
		return STORE_EFULL;
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_PROTOCOL:
		return STORE_ECONN;
	case SQLITE_CONSTRAINT:
		return STORE_ECONSTRAINT;
	default:
		return STORE_EQUERY;
	}
}

static int sq_exec(void *conn, const char *sql)
{
	struct sq_conn *c = conn;
	return map(c, sqlite3_exec(c->db, sql, NULL, NULL, NULL), "exec");
}

/* Why this user cannot write the store at path, into err: the first of the file, its -wal
 * and -shm files (SQLite makes them with the file's mode, owned by whoever opened it first)
 * and its directory (where SQLite creates them) that access() says it may not write. */
static void unwritable(const char *path, char *err)
{
	static const char *const what[] = {"the store file", "its -wal file", "its -shm file"};
	static const char *const suffix[] = {"", "-wal", "-shm"};
	char p[4096];
	const char *found = NULL;
	for (size_t i = 0; i < 3 && !found; i++) {
		snprintf(p, sizeof(p), "%s%s", path, suffix[i]);
		if (access(p, W_OK) && errno != ENOENT)
			found = what[i];
	}
	if (!found) {
		snprintf(p, sizeof(p), "%s", path);
		char *slash = strrchr(p, '/');
		if (slash)
			slash[slash == p] = '\0';
		if (access(slash ? p : ".", W_OK | X_OK))
			found = "its directory";
	}
	if (found && errno == EROFS) {
		snprintf(err, STORE_ERR_MAX, "%s is on a file system mounted read-only", found);
		return;
	}
	snprintf(err, STORE_ERR_MAX,
	         "%s is read-only to this user (uid %u): check the owner and mode of the store"
	         " file, its -wal and -shm files and their directory",
	         found ? found : "the store", (unsigned)geteuid());
}

static int sq_open(const char *path, const struct store_opts *o, char *errbuf, void **conn,
                   char *err)
{
	static const char *const sync[] = {"OFF", "NORMAL", "FULL"};
	struct sq_conn *c = calloc(1, sizeof(*c));
	char sql[128];
	int rc;

	if (!c)
		return STORE_ENOMEM;
	c->err = errbuf;
	int flags =
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (o->create ? SQLITE_OPEN_CREATE : 0);
	rc = sqlite3_open_v2(path, &c->db, flags, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, STORE_ERR_MAX, "cannot open: %s%s",
		         c->db ? sqlite3_errmsg(c->db) : "out of memory",
		         o->create ? " (does the directory exist and is it writable?)"
		                   : " (no store there yet: has outpost-bridge run?)");
		rc = (rc & 0xff) == SQLITE_CANTOPEN ? STORE_ECONN : map(c, rc, "open");
		goto fail;
	}
	/* A file this user may only read opens read-only, silently; the first write would fail,
	 * and a writer would retry it for ever. */
	if (o->writable && sqlite3_db_readonly(c->db, "main") == 1) {
		unwritable(path, err);
		rc = STORE_EREADONLY;
		goto fail;
	}
	sqlite3_extended_result_codes(c->db, 0);
	sqlite3_busy_timeout(c->db, o->busy_timeout_ms);
	/* WAL: readers (outpostctl) never block the writer; the journal mode is persistent. */
	char *mode = NULL;
	sqlite3_stmt *st = NULL;
	rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		mode = strdup((const char *)sqlite3_column_text(st, 0));
	int fin = sqlite3_finalize(st); /* also reports a failed step */
	if (rc == SQLITE_OK)
		rc = fin; /* a failed prepare stays the error: finalize(NULL) is OK */
	if (rc != SQLITE_OK || !mode || strcmp(mode, "wal")) {
		if ((rc & 0xff) == SQLITE_READONLY) /* the -wal file cannot be made or opened */
			unwritable(path, err);
		else
			snprintf(err, STORE_ERR_MAX, "cannot use the WAL journal (%s)",
			         rc != SQLITE_OK || !mode ? sqlite3_errmsg(c->db) : mode);
		free(mode);
		rc = rc != SQLITE_OK ? map(c, rc, "journal_mode") : STORE_EQUERY;
		goto fail;
	}
	free(mode);
	int s = o->sync < 0 || o->sync > 2 ? 2 : o->sync;
	snprintf(sql, sizeof(sql), "PRAGMA synchronous=%s; PRAGMA foreign_keys=ON", sync[s]);
	rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, STORE_ERR_MAX, "%s", sqlite3_errmsg(c->db));
		rc = map(c, rc, "pragma");
		goto fail;
	}
	/* The file writable, its -wal or -shm file may not be (left by a user that could only
	 * read it: SQLite gave them the file's mode then): the write lock needs both. Busy (a
	 * writer at work) says nothing either way. */
	if (o->writable &&
	    (rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL)) == SQLITE_OK)
		rc = sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	if ((rc & 0xff) == SQLITE_READONLY) {
		unwritable(path, err);
		rc = STORE_EREADONLY;
		goto fail;
	}
	*conn = c;
	return STORE_OK;
fail:
	sqlite3_close(c->db);
	free(c);
	return rc;
}

static void sq_close(void *conn)
{
	struct sq_conn *c = conn;
	if (!c)
		return;
	sqlite3_close(c->db);
	free(c);
}

static int sq_begin(void *conn)
{
	/* IMMEDIATE takes the write lock now, so a busy database fails here, before any work. */
	return sq_exec(conn, "BEGIN IMMEDIATE");
}

static int sq_prepare(void *conn, const char *sql, void **out)
{
	struct sq_conn *c = conn;
	struct sq_stmt *s = calloc(1, sizeof(*s));
	if (!s)
		return STORE_ENOMEM;
	int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st, NULL);
	if (rc != SQLITE_OK) {
		rc = map(c, rc, "prepare");
		free(s);
		return rc;
	}
	s->c = c;
	*out = s;
	return STORE_OK;
}

static void sq_finalize(void *stmt)
{
	struct sq_stmt *s = stmt;
	if (!s)
		return;
	sqlite3_finalize(s->st);
	free(s);
}

static int sq_bind(void *stmt, int idx, const struct store_val *v)
{
	struct sq_stmt *s = stmt;
	int rc;
	switch (v->t) {
	case STORE_VI64:
		rc = sqlite3_bind_int64(s->st, idx, v->i);
		break;
	case STORE_VF64:
		rc = sqlite3_bind_double(s->st, idx, v->f);
		break;
	case STORE_VTEXT:
		rc = sqlite3_bind_text(s->st, idx, v->p, (int)v->len, SQLITE_TRANSIENT);
		break;
	case STORE_VBLOB:
		rc = sqlite3_bind_blob(s->st, idx, v->p, (int)v->len, SQLITE_TRANSIENT);
		break;
	default:
		rc = sqlite3_bind_null(s->st, idx);
		break;
	}
	return map(s->c, rc, "bind");
}

static int sq_step(void *stmt)
{
	struct sq_stmt *s = stmt;
	int rc = sqlite3_step(s->st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return map(s->c, rc, "step");
}

static int sq_reset(void *stmt)
{
	struct sq_stmt *s = stmt;
	/* The error of a failed step is reported by step already. */
	sqlite3_reset(s->st);
	sqlite3_clear_bindings(s->st);
	return STORE_OK;
}

static int64_t sq_changes(void *stmt)
{
	struct sq_stmt *s = stmt;
	return sqlite3_changes64(s->c->db);
}

static int sq_column(void *stmt, int col, struct store_val *out)
{
	struct sq_stmt *s = stmt;
	if (col < 0 || col >= sqlite3_column_count(s->st))
		return STORE_EINVAL;
	switch (sqlite3_column_type(s->st, col)) {
	case SQLITE_INTEGER:
		out->t = STORE_VI64;
		out->i = sqlite3_column_int64(s->st, col);
		break;
	case SQLITE_FLOAT:
		out->t = STORE_VF64;
		out->f = sqlite3_column_double(s->st, col);
		break;
	case SQLITE_TEXT:
		out->t = STORE_VTEXT;
		out->p = sqlite3_column_text(s->st, col);
		out->len = (size_t)sqlite3_column_bytes(s->st, col);
		break;
	case SQLITE_BLOB:
		out->t = STORE_VBLOB;
		out->p = sqlite3_column_blob(s->st, col);
		out->len = (size_t)sqlite3_column_bytes(s->st, col);
		break;
	default:
		out->t = STORE_VNULL;
		break;
	}
	return STORE_OK;
}

static int sq_copy_begin(void *conn, const char *table, const char *cols, int ncols, void **out)
{
	char sql[512];
	int n = snprintf(sql, sizeof(sql), "INSERT INTO %s (%s) VALUES (", table, cols);
	for (int i = 0; i < ncols && n < (int)sizeof(sql) - 4; i++)
		n += snprintf(sql + n, sizeof(sql) - (size_t)n, i ? ",?" : "?");
	if (n >= (int)sizeof(sql) - 2)
		return STORE_EINVAL;
	strcat(sql, ")");
	struct sq_copy *cp = calloc(1, sizeof(*cp));
	if (!cp)
		return STORE_ENOMEM;
	int rc = sq_prepare(conn, sql, (void **)&cp->ins);
	if (rc) {
		free(cp);
		return rc;
	}
	cp->ncols = ncols;
	*out = cp;
	return STORE_OK;
}

static int sq_copy_row(void *p, const struct store_val *vals)
{
	struct sq_copy *cp = p;
	int rc = STORE_OK;
	for (int i = 0; i < cp->ncols && !rc; i++)
		rc = sq_bind(cp->ins, i + 1, &vals[i]);
	if (!rc)
		rc = sq_step(cp->ins);
	sqlite3_reset(cp->ins->st);
	return rc < 0 ? rc : STORE_OK;
}

static int sq_copy_end(void *p, int ok)
{
	(void)p;
	(void)ok;
	return STORE_OK;
}

static void sq_copy_free(void *p)
{
	struct sq_copy *cp = p;
	if (!cp)
		return;
	sq_finalize(cp->ins);
	free(cp);
}

static void sq_interrupt(void *conn)
{
	sqlite3_interrupt(((struct sq_conn *)conn)->db);
}

const struct store_backend store__sqlite = {
    .name = "sqlite",
    .dialect = STORE_SQLITE,
    .open = sq_open,
    .close = sq_close,
    .exec = sq_exec,
    .begin = sq_begin,
    .interrupt = sq_interrupt,
    .prepare = sq_prepare,
    .finalize = sq_finalize,
    .bind = sq_bind,
    .step = sq_step,
    .reset = sq_reset,
    .changes = sq_changes,
    .column = sq_column,
    .copy_begin = sq_copy_begin,
    .copy_row = sq_copy_row,
    .copy_end = sq_copy_end,
    .copy_free = sq_copy_free,
};
