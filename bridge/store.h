/* store.h - the Outpost store: one connection to SQLite ("sqlite:PATH") or PostgreSQL
 * ("postgresql://..."), chosen by URL, behind a small backend-neutral statement API, plus the
 * versioned schema. Domain queries shared by the bridge and outpostctl are in store_ops.h.
 *
 * SQL given to store_prepare() uses '?' placeholders and the subset both engines accept
 * (ON CONFLICT, RETURNING, CAST). A connection is not thread-safe: one thread at a time. */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

/* A numeric constant as SQL text: " LIMIT " STORE_STR(N). */
#define STORE_STR_(x) #x
#define STORE_STR(x)  STORE_STR_(x)

/* Every store_* function returns 0 or one of these. Append only, never renumber. */
enum store_err {
	STORE_OK = 0,
	STORE_ENOMEM = -1,      /* allocation failed */
	STORE_EINVAL = -2,      /* caller passed an invalid argument */
	STORE_EURL = -3,        /* store URL not understood */
	STORE_ECONN = -4,       /* cannot connect, or the connection was lost (retry later) */
	STORE_EBUSY = -5,       /* locked by someone else, deadlock, serialization (retry) */
	STORE_EQUERY = -6,      /* the statement failed (bug or schema mismatch) */
	STORE_ECONSTRAINT = -7, /* a constraint refused the change */
	STORE_ESCHEMA = -8,     /* the store's schema is newer than this program's */
	STORE_ENOTFOUND = -9,   /* no such row (device, task, ...) */
	STORE_EREADONLY = -10,  /* the database refuses writes (read-only file or server) */
	STORE_EFULL = -11,      /* disk or quota full (retry later) */
	STORE_ENOTSUP = -12,    /* backend not built into this program */
	STORE_ESTATE = -13,     /* the row is in a state that does not allow this change */
	STORE_EUNKNOWN = -14,   /* the connection broke after COMMIT was sent: ask
	                         * store_commit_resolve() whether it committed */
};

/* Static text for a store_err (never NULL). */
const char *store_strerror(int err);

/* 1 if err is worth retrying later (connection, lock, read-only, full), else 0. */
int store_err_transient(int err);

#define STORE_ERR_MAX 512

enum store_dialect { STORE_SQLITE, STORE_PG };
enum store_sync { STORE_SYNC_OFF, STORE_SYNC_NORMAL, STORE_SYNC_FULL };

struct store_opts {
	int create;            /* SQLite: create the database file if it is missing */
	/* SQLite: refuse to open (STORE_EREADONLY, naming the file) a database this user cannot
	 * write: the file, its -wal and -shm files or their directory. Else such a database
	 * opens read-only and every write fails (outpostctl reads stores it may not write). */
	int writable;
	int sync;              /* SQLite: enum store_sync (PRAGMA synchronous, WAL journal) */
	int busy_timeout_ms;   /* SQLite: wait this long for a lock before STORE_EBUSY */
	int connect_timeout_s; /* PostgreSQL: connect_timeout */
	const char *app_name;  /* PostgreSQL: application_name; borrowed during store_open */
};
#define STORE_OPTS_INIT                                                                            \
	{                                                                                          \
		1, 1, STORE_SYNC_FULL, 5000, 10, "outpost"                                         \
	}

struct store;      /* one connection */
struct store_stmt; /* a prepared statement of one connection */
struct store_copy; /* a bulk insert into one table */

/* Open the store at url. Nothing is created or migrated beyond what opts->create allows; call
 * store_migrate() next. On failure err (STORE_ERR_MAX bytes) says why, naming the URL.
 * On success *out is owned by the caller: store_close(). */
int store_open(const char *url, const struct store_opts *opts, struct store **out, char *err);

/* Accepts NULL. Statements and copies of the connection must have been freed. */
void store_close(struct store *s);

enum store_dialect store_dialect(const struct store *s);

/* "sqlite:PATH" or the PostgreSQL URL with any password removed; borrowed. */
const char *store_url(const struct store *s);

/* Detail of the last failure on this connection ("" if none); borrowed until the next call. */
const char *store_errmsg(const struct store *s);

/* Cancel the statement s is running, from another thread: it fails with a transient error
 * (PostgreSQL: a cancel request to the server, as psql's Ctrl-C; SQLite: sqlite3_interrupt).
 * For a stop that must not wait on the database (a lock another session holds). Safe at any
 * time while s is open; with no statement running it may do nothing, or fail the next one. */
void store_interrupt(struct store *s);

/* Run one statement without results (DDL, PRAGMA). */
int store_exec(struct store *s, const char *sql);

/* Transactions. store_begin takes the write lock at once (SQLite BEGIN IMMEDIATE); when a
 * PostgreSQL connection was lost it reconnects first. store_rollback accepts a dead
 * connection and then returns 0. */
int store_begin(struct store *s);
int store_commit(struct store *s);
int store_rollback(struct store *s);

/* After store_commit() returned STORE_EUNKNOWN (only PostgreSQL can: the server may have
 * committed and then lost the connection before its answer arrived): 1 if that transaction
 * committed, 0 if it did not, or an error; a transient one (store_err_transient) means
 * "not known yet, ask again later". STORE_EINVAL when no outcome is pending. Reconnects. */
int store_commit_resolve(struct store *s);

/* Prepare sql (kept by the statement). On success *out belongs to the caller:
 * store_stmt_free() before store_close(). */
int store_prepare(struct store *s, const char *sql, struct store_stmt **out);
void store_stmt_free(struct store_stmt *st); /* accepts NULL */

/* Bind parameter idx (1-based). Text and blobs are copied. */
int store_bind_i64(struct store_stmt *st, int idx, int64_t v);
int store_bind_f64(struct store_stmt *st, int idx, double v);       /* NaN is stored as NULL */
int store_bind_text(struct store_stmt *st, int idx, const char *v); /* NULL binds NULL */
int store_bind_blob(struct store_stmt *st, int idx, const void *v, size_t len);
int store_bind_null(struct store_stmt *st, int idx);

/* Execute / advance: 1 = a row is available, 0 = done, < 0 = error. After 0 or an error call
 * store_reset() before binding and stepping again (store_reset is also safe mid-rows). */
int store_step(struct store_stmt *st);
int store_reset(struct store_stmt *st);

/* Rows inserted/updated/deleted by the statement's last completed execution. */
int64_t store_changes(const struct store_stmt *st);

/* Columns of the current row (0-based). Text and blobs are borrowed until the next step or
 * reset. NULL reads as 0, NaN (f64), NULL (text, blob). A comparison (a PostgreSQL boolean)
 * reads as the integer 1 or 0 on both backends. */
int store_col_null(struct store_stmt *st, int col);
int64_t store_col_i64(struct store_stmt *st, int col);
double store_col_f64(struct store_stmt *st, int col);
const char *store_col_text(struct store_stmt *st, int col);
const void *store_col_blob(struct store_stmt *st, int col, size_t *len);

/* One-shot helpers: prepare, bind int64 args, step, read column 0 of the first row.
 * STORE_ENOTFOUND when there is no row. */
int store_query_i64(struct store *s, int64_t *out, const char *sql, int nargs, ...);
/* Prepare, bind args[0..nargs) as int64, run to completion; *changes (optional) receives the
 * rows changed. */
int store_exec_i64(struct store *s, const char *sql, const int64_t *args, int nargs,
                   int64_t *changes);

/* Bulk insert of many rows into table(cols) with ncols int/double/blob/NULL columns: a
 * prepared INSERT on SQLite, COPY on PostgreSQL. Use: store_copy_start, then per row
 * store_copy_i64 / _f64 / _blob / _null for each column and store_copy_end_row, then
 * store_copy_finish (inside the caller's transaction; no other statement may run on the
 * connection in between).
 * table and cols (comma-separated) must be trusted constants. */
int store_copy_new(struct store *s, const char *table, const char *cols, int ncols,
                   struct store_copy **out);
void store_copy_free(struct store_copy *c); /* accepts NULL */
int store_copy_start(struct store_copy *c);
int store_copy_i64(struct store_copy *c, int64_t v);
int store_copy_f64(struct store_copy *c, double v); /* NaN is stored as NULL */
int store_copy_null(struct store_copy *c);
/* v is borrowed until store_copy_end_row. */
int store_copy_blob(struct store_copy *c, const void *v, size_t len);
int store_copy_end_row(struct store_copy *c);
int store_copy_finish(struct store_copy *c);

/* ---- schema ---- */

/* The schema version this program writes and reads. */
#define STORE_SCHEMA_VERSION 5

/* Apply every missing migration, each in its own transaction, serialised against other
 * processes doing the same. *from and *to (may be NULL) receive the versions before and after.
 * STORE_ESCHEMA if the store is newer than this program. */
int store_migrate(struct store *s, int *from, int *to);

/* store_migrate, stopping at version upto (at most STORE_SCHEMA_VERSION): for the tests of a
 * migration, which start from a store of the version before. Not for the programs. */
int store__migrate_upto(struct store *s, int upto, int *from, int *to);

/* The store's schema version (0 for an empty database). */
int store_schema_version(struct store *s, int *version);

#endif
