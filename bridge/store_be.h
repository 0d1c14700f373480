/* store_be.h - the backend interface behind store.h: one small table of functions per engine
 * (store_sqlite.c, store_pg.c). Internal to the store module. */
#ifndef STORE_BE_H
#define STORE_BE_H

#include "store.h"

/* A value crossing the interface: bind argument or column. */
enum store_vt { STORE_VNULL, STORE_VI64, STORE_VF64, STORE_VTEXT, STORE_VBLOB };

struct store_val {
	enum store_vt t;
	int64_t i;
	double f;
	const void *p; /* text (NUL-terminated) or blob */
	size_t len;
};

struct store_backend {
	const char *name;
	enum store_dialect dialect;
	/* target is the URL after the scheme decision; err gets STORE_ERR_MAX bytes on failure.
	 * errbuf (STORE_ERR_MAX) is where the connection writes later error details. */
	int (*open)(const char *url, const struct store_opts *o, char *errbuf, void **conn,
	            char *err);
	void (*close)(void *conn);
	int (*exec)(void *conn, const char *sql);
	int (*begin)(void *conn);
	/* Both optional: commit defaults to exec("COMMIT"); a backend whose commit can end in
	 * STORE_EUNKNOWN provides resolve (store_commit_resolve). */
	int (*commit)(void *conn);
	int (*resolve)(void *conn);
	/* Optional: cancel the running statement; called from another thread (store_interrupt). */
	void (*interrupt)(void *conn);
	int (*prepare)(void *conn, const char *sql, void **stmt);
	void (*finalize)(void *stmt);
	int (*bind)(void *stmt, int idx, const struct store_val *v);
	int (*step)(void *stmt);
	int (*reset)(void *stmt);
	int64_t (*changes)(void *stmt);
	int (*column)(void *stmt, int col, struct store_val *out);
	/* Bulk insert: begin/row/end with rows of ncols values. */
	int (*copy_begin)(void *conn, const char *table, const char *cols, int ncols, void **cp);
	int (*copy_row)(void *cp, const struct store_val *vals);
	int (*copy_end)(void *cp, int ok);
	void (*copy_free)(void *cp);
};

/* Set the detail store_errmsg() returns (store_schema.c: what the backends do not know). */
void store__errf(struct store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

extern const struct store_backend store__sqlite;
#ifdef STORE_WITH_PG
extern const struct store_backend store__pg;
#endif

#endif
