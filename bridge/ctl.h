/* ctl.h - outpostctl internals shared by its command files: the store connection, argument
 * parsing, output (aligned table, CSV, JSON) and time formats. */
#ifndef CTL_H
#define CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "store.h"

#define CTL_PROG "outpostctl"

/* Exit statuses (DESIGN.md "Commands"). CTL_DONE is no exit status: --help or --version was
 * answered, the command does nothing more, and outpostctl exits 0. */
enum { CTL_OK = 0, CTL_FAIL = 1, CTL_USAGE = 2, CTL_DONE = 3 };

struct ctl_globals; /* outpostctl.c: the global options met so far */

struct ctl {
	const char *store_url; /* set by ctl_settle() */
	struct store *s;       /* opened by ctl_store() */
	int code;              /* exit status after ctl_store() failed */
	int raw;               /* --raw: CSV keeps a device's control characters */
	struct ctl_globals *g;
	/* What a command committed ("task 7 queued") and what it then prints ("its id"), so
	 * that an output that cannot be written is not taken for nothing done (ctl_done). */
	char done[320];
	const char *done_what;
};

/* Record that c's command committed a change (printf-style, e.g. "task %lld queued") before
 * printing what (static, e.g. "its id"): if the output then cannot be written, the error says
 * "task 7 queued, but its id could not be written: ...", not merely that it failed. */
void ctl_done(struct ctl *c, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- global options (outpostctl.c) ---- */

/* If argv[*i] is a global option (--store, --config/-c with their values, --help/-h,
 * --version/-V), take it (and its value: *i moves past it) and return 1; else 0. Only where
 * an option may stand: never in the place of another option's value. */
int ctl_global_opt(struct ctl *c, int argc, char **argv, int *i);

/* Once all of the command line is read: answer --help or --version (CTL_DONE), or read the
 * settings (c->store_url) from the options, environment and file: CTL_OK, or CTL_USAGE after
 * saying what is wrong. */
int ctl_settle(struct ctl *c);

/* Open the store (once) and check that its schema is the one this program knows; never
 * migrates it. On failure prints why, sets c->code (CTL_USAGE for a URL it does not
 * understand, else CTL_FAIL: unreachable, no schema, an older or a newer one) and returns
 * NULL. */
struct store *ctl_store(struct ctl *c);

/* Print "outpostctl: <msg>" to stderr; returns code. */
int ctl_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A store failure: "outpostctl: <what>: <strerror>: <detail>"; returns CTL_FAIL. */
int ctl_store_err(struct ctl *c, const char *what, int rc);

/* The store key of device id (the store must be open): CTL_OK, CTL_USAGE for a malformed id,
 * CTL_FAIL ("no device ...") for an unknown one, each said on stderr. */
int ctl_device_key(struct ctl *c, const char *id, int64_t *key);

/* Text sorted byte by byte on both engines. SQLite compares bytes (BINARY); PostgreSQL uses
 * the database's collation unless told otherwise (en_US.utf8 puts "a1" before "a-2" and "b0"
 * before "B1"), so a query that sorts by text is written as a macro Q(C) with C after each
 * text sort key, and prepared as CTL_SQL(store, Q). */
#define CTL_PG_BYTES  " COLLATE \"C\""
#define CTL_SQL(s, Q) (store_dialect(s) == STORE_PG ? Q(CTL_PG_BYTES) : Q(""))

/* ---- arguments ---- */

struct ctl_optdef {
	const char *name;   /* without the leading "--" */
	int has_arg;        /* 0: flag */
	const char **value; /* where the (last) value goes, or "1" for a flag */
	const char **multi; /* repeatable: values appended here ... */
	size_t *n_multi;    /* ... counted here (capacity max_multi) */
	size_t max_multi;
};

/* Parse argv[0..argc) (after the command words) against defs ("--name value" and
 * "--name=value"; a value is taken as it is, even if it looks like an option); positional
 * arguments go to pos (at most max_pos); global options where an option may stand go to
 * ctl_global_opt(). A bare "--" (not an option's value) ends the options: every argument
 * after it is positional. Then ctl_settle(). Returns CTL_OK, CTL_DONE (--help, --version) or
 * CTL_USAGE after printing what is wrong. */
int ctl_args(struct ctl *c, const char *cmd, int argc, char **argv, const struct ctl_optdef *defs,
             const char **pos, int max_pos, int *npos);

/* CTL_OK if value is in the NULL-terminated list allowed, else CTL_USAGE after printing
 * "<cmd>: --<opt> '<value>': want one of <allowed>". A filter value nothing could match is
 * a mistake to tell, not an empty answer. */
int ctl_check_choice(const char *cmd, const char *opt, const char *value,
                     const char *const *allowed);

/* ---- time ---- */

/* "2026-11-22T22:00:00.123Z" (0 is 1970-01-01T00:00:00.000Z: a column that may be unset is
 * NULL, or checked by its caller); a time outside the years 0000..9999 as "unix ms N". buf: 32
 * bytes. */
const char *ctl_time(int64_t ms, char *buf);

/* Parse a time for --since/--until: RFC 3339 ("2026-11-22T22:00:00Z"; a fraction of at least
 * one digit and an offset up to +-23:59 allowed; a date alone is midnight UTC), a duration
 * meaning that long ago ("90m", "2h", "7d", optionally with a leading '-'), "now", "@SECONDS"
 * (digits only), or a Unix time in seconds or (13+ digits) milliseconds. Returns 0 or -1. */
int ctl_parse_time(const char *s, int64_t now_ms, int64_t *ms);

/* A count, id or envelope seq: decimal digits only, min..INT64_MAX. 0, or -1 if s is not
 * one. */
int ctl_parse_number(const char *s, int64_t min, int64_t *out);

/* ---- output ---- */

/* Shortest text that reads back as the same double ("nan" for NaN). buf: 32 bytes. */
const char *ctl_double(double v, char *buf);

enum ctl_fmt { CTL_FMT_TABLE, CTL_FMT_CSV, CTL_FMT_JSON };
int ctl_fmt_parse(const char *s, enum ctl_fmt *out); /* -1 if unknown */

enum ctl_coltype { CTL_STR, CTL_NUM };

/* Rows of a result: aligned text table (buffered), CSV with a header, or a JSON array of
 * objects (numbers unquoted, NULL values null). */
struct ctl_out {
	enum ctl_fmt fmt;
	FILE *f;
	int ncols;
	const char *const *names;
	const enum ctl_coltype *types;
	int vis;    /* CSV: control characters escaped (ctl_vis): unless --raw */
	int failed; /* table format: memory ran out, the rows are dropped */
	int begun;  /* CSV, JSON: the header or the '[' is written */
	size_t nrows, cap;
	char **cells;     /* table format: nrows * ncols strings */
	size_t max;       /* 0, or the rows shown at most (ctl_out_cap) */
	int more;         /* a row past max came */
	const char *hint; /* how to see the rows past max */
};

/* Commands whose table format has no --limit of their own show this many rows of it at most
 * (the table is built in memory to align its columns), and say when there are more: their
 * query asks for CTL_TABLE_ROWS + 1 rows, and ctl_out_cap() tells the writer. */
#define CTL_TABLE_ROWS 1000

/* raw: CSV fields as stored, control characters included (--raw); else shown (ctl_vis).
 * Nothing is written yet: the CSV header and the JSON '[' go out with the first row, or at
 * ctl_out_end if none came, after the statement's first step succeeded, so that a query that
 * fails leaves nothing on the output (PostgreSQL reports most errors at the first step). */
void ctl_out_begin(struct ctl_out *o, enum ctl_fmt fmt, int raw, FILE *f, int ncols,
                   const char *const *names, const enum ctl_coltype *types);
/* Show CTL_TABLE_ROWS rows of o at most (after ctl_out_begin, for a table without a --limit):
 * ctl_out_row keeps a row past them out and returns 1, and ctl_out_end then prints "(the first
 * 1000 rows: there are more; <hint>)" below the table. hint (static) says how to see the
 * others. */
void ctl_out_cap(struct ctl_out *o, const char *hint);
/* One row; a NULL value is null/empty. 0; 1 for a row past the cap (ctl_out_cap), not shown;
 * or -1 once memory ran out keeping a table's rows (then every later row is ignored as well,
 * and ctl_out_end says so). Either way the caller reads no more rows. */
int ctl_out_row(struct ctl_out *o, const char *const *vals);
/* Finish (a table: print it, and say if the cap left rows out). CTL_OK, or CTL_FAIL after
 * saying that memory ran out (nothing of the table is printed). failed: the rows ended in an
 * error, which the caller says: nothing more is written (no CSV header or JSON '[' if no row
 * came, no closing ']' after rows streamed, so that part of an answer does not read as all of
 * it: only the last row's line is ended; no table) and CTL_FAIL is returned. */
int ctl_out_end(struct ctl_out *o, int failed);

/* s for a terminal: control characters shown as \xNN (C0, DEL) or \u00NN (C1), so text a
 * device sent cannot move the cursor or forge lines. Written to buf (cut to cap - 1 bytes); returns buf ("" for
 * NULL). CTL_VIS_MAX holds any stored text escaped whole. */
#define CTL_VIS_MAX (4 * 1024 + 1)
const char *ctl_vis(const char *s, char *buf, size_t cap);

/* One CSV field, quoted if it holds a comma, quote or line break; with vis, its control
 * characters escaped first (ctl_vis). */
void ctl_csv_field(FILE *f, const char *s, int vis);
/* A JSON string: C0 controls, DEL and the C1 controls (U+0080..U+009F) as \u00NN, the
 * bidirectional controls (ovis_bidi) as \uNNNN. */
void ctl_json_str(FILE *f, const char *s);

/* ---- commands ---- */

int ctl_cmd_devices(struct ctl *c, int argc, char **argv);
int ctl_cmd_device(struct ctl *c, int argc, char **argv);
int ctl_cmd_readings(struct ctl *c, int argc, char **argv);
int ctl_cmd_events(struct ctl *c, int argc, char **argv);
int ctl_cmd_gaps(struct ctl *c, int argc, char **argv);
int ctl_cmd_prune(struct ctl *c, int argc, char **argv);
int ctl_cmd_task(struct ctl *c, int argc, char **argv);
int ctl_cmd_decode(struct ctl *c, int argc, char **argv);

#endif
