/* rawinsert.c - the database ceiling of the ingest benchmark: a minimal C program inserting the
 * readings the bridge stores, one row each, into the same `readings` table (the store's own
 * schema, created by its migrations), with the same durability settings as the bridge:
 *   SQLite      WAL, synchronous=FULL (or --sync normal), one prepared INSERT per row;
 *   PostgreSQL  COPY ... FROM STDIN (text), synchronous_commit on (the server default).
 * No MQTT, no decoding, no verification, no envelopes, no acks: only the rows.
 *
 * Rows are the load generator's (bench/loadgen.c): `devices` devices device-0001.., messages
 * round-robin, `rows` x `cols` readings each with increasing times, the values from each
 * device's own `sim` collector seeded with its id (so the same values, about half of them whole
 * numbers), committed in transactions of `--txn` messages, each transaction's rows in arrival
 * order or, with `--order key`, in primary key order (as the bridge inserts a group's).
 * Every transaction's rows are generated (and sorted) before the clock starts, in chunks of at
 * most --pregen-mib of rows when they do not all fit: only the inserts and commits are timed.
 *
 * `--layout wide` (SQLite; an experiment, not the store's layout: docs/PERFORMANCE.md) stores
 * the same readings one row per metric per message instead, in a table of its own:
 * (device, metric, ts0, seq) and the message's readings of that metric packed in two blobs
 * (4-byte time offsets from ts0, 8-byte values); with --order key only.
 *
 * Usage: bench_rawinsert --store URL --devices D --messages M --rows R --cols C
 *                        [--txn MESSAGES] [--sync full|normal] [--order arrival|key]
 *                        [--layout rows|wide] [--pregen-mib 1024]
 * Prints one key=value line: readings/s (rows_s), messages/s, and table rows/s. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "bench_util.h"
#include "dev_collect.h"
#include "store.h"

#define PROG "bench_rawinsert"

static struct {
	int devices, messages, rows, cols, txn, by_key, wide;
	int64_t wide_rows; /* table rows written with --layout wide */
	int64_t base_dev;
	long pregen_mib;
	struct dev_collect **sim; /* one per device, as the load generator's */
	double *sample;           /* one sample of one device: cols values */
	uint32_t *wide_dts;       /* --layout wide: one message's time offsets and values */
	double *wide_vals;
	int chunks; /* how many times rows were generated with the clock stopped */
} G;

struct row {
	int64_t device, metric, ts, seq, idx;
	double value;
};

static int sim_sink(void *ctx, const char *name, const char *unit, double value)
{
	int *n = ctx;
	(void)unit;
	if (strncmp(name, "sim.sensor_", 11) || *n >= G.cols)
		return 0; /* the collector's health readings are not part of the load (loadgen) */
	G.sample[(*n)++] = value;
	return 0;
}

/* The rows of message k (0-based): device k % D, its (k / D)-th batch, values sampled from the
 * device's collector as bench_loadgen does (messages in order, so each device's in order). */
static void message_rows(int k, struct row *out)
{
	int d = k % G.devices, b = k / G.devices;
	int64_t seq = (int64_t)BENCH_SEQ0 + b + 2, t0 = BENCH_T0_MS + (int64_t)b * G.rows * 10000;
	int n = 0;
	const char *failed, *why;
	for (int r = 0; r < G.rows; r++) {
		int got = 0;
		dev_collect_sample(G.sim[d], sim_sink, &got, &failed, &why);
		if (got != G.cols)
			bench_die(PROG, "the sim collector gave %d values, not %d", got, G.cols);
		for (int c = 0; c < G.cols; c++) {
			out[n] = (struct row){G.base_dev + d, (int64_t)d * G.cols + c + 1,
			                      t0 + (int64_t)r * 10000, seq, n, G.sample[c]};
			n++;
		}
	}
}

static int cmp_row(const void *a, const void *b)
{
	const struct row *x = a, *y = b;
	const int64_t kx[] = {x->device, x->metric, x->ts, x->seq, x->idx};
	const int64_t ky[] = {y->device, y->metric, y->ts, y->seq, y->idx};
	for (size_t i = 0; i < sizeof(kx) / sizeof(kx[0]); i++)
		if (kx[i] != ky[i])
			return kx[i] < ky[i] ? -1 : 1;
	return 0;
}

/* The rows of transaction t (messages t*txn ..), sorted by primary key with --order key;
 * returns their count. */
static size_t txn_rows(int t, struct row *out)
{
	size_t per = (size_t)G.rows * (size_t)G.cols, n = 0;
	for (int k = t * G.txn; k < G.messages && k < (t + 1) * G.txn; k++, n += per)
		message_rows(k, out + n);
	if (G.by_key)
		qsort(out, n, sizeof(*out), cmp_row);
	return n;
}

/* Transactions per chunk of pre-generated rows: all of them if they fit in --pregen-mib. */
static int chunk_txns(void)
{
	size_t per_txn = (size_t)G.rows * (size_t)G.cols * (size_t)G.txn;
	size_t fit = ((size_t)G.pregen_mib << 20) / (per_txn * sizeof(struct row));
	int ntxn = (G.messages + G.txn - 1) / G.txn;
	return fit < 1 ? 1 : fit > (size_t)ntxn ? ntxn : (int)fit;
}

/* Generates transactions first .. first+count-1 into rows (count[j] rows at j * per_txn), with
 * the clock stopped. */
static void pregen(int first, int count, struct row *rows, size_t *n)
{
	size_t per_txn = (size_t)G.rows * (size_t)G.cols * (size_t)G.txn;
	for (int j = 0; j < count; j++)
		n[j] = txn_rows(first + j, rows + (size_t)j * per_txn);
	G.chunks++;
}

static void schema(const char *url)
{
	struct store_opts o = STORE_OPTS_INIT;
	struct store *s = NULL;
	char err[STORE_ERR_MAX];
	if (store_open(url, &o, &s, err))
		bench_die(PROG, "%s", err);
	if (store_migrate(s, NULL, NULL))
		bench_die(PROG, "cannot create the schema: %s", store_errmsg(s));
	store_close(s);
}

static void sq_check(sqlite3 *db, int rc, const char *what)
{
	if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
		bench_die(PROG, "%s: %s", what, sqlite3_errmsg(db));
}

/* One transaction's rows, one table row each. */
static void insert_rows(sqlite3 *db, sqlite3_stmt *ins, const struct row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		sqlite3_bind_int64(ins, 1, rows[i].device);
		sqlite3_bind_int64(ins, 2, rows[i].metric);
		sqlite3_bind_int64(ins, 3, rows[i].ts);
		sqlite3_bind_int64(ins, 4, rows[i].seq);
		sqlite3_bind_int64(ins, 5, rows[i].idx);
		sqlite3_bind_double(ins, 6, rows[i].value);
		sq_check(db, sqlite3_step(ins), "insert");
		sqlite3_reset(ins);
	}
}

/* The wide layout: each run of one (device, metric, seq) in the key-ordered rows is one row. */
static void insert_wide(sqlite3 *db, sqlite3_stmt *ins, const struct row *rows, size_t n)
{
	uint32_t *dts = G.wide_dts;
	double *vals = G.wide_vals;
	for (size_t i = 0; i < n;) {
		const struct row *r = &rows[i];
		size_t k = 0;
		for (; i < n && k < (size_t)G.rows && rows[i].device == r->device &&
		       rows[i].metric == r->metric && rows[i].seq == r->seq;
		     i++, k++) {
			if (rows[i].ts - r->ts > (int64_t)UINT32_MAX)
				bench_die(PROG, "--layout wide: a message spans over 49 days");
			dts[k] = (uint32_t)(rows[i].ts - r->ts);
			vals[k] = rows[i].value;
		}
		sqlite3_bind_int64(ins, 1, r->device);
		sqlite3_bind_int64(ins, 2, r->metric);
		sqlite3_bind_int64(ins, 3, r->ts);
		sqlite3_bind_int64(ins, 4, r->seq);
		sqlite3_bind_blob(ins, 5, dts, (int)(k * sizeof(*dts)), SQLITE_STATIC);
		sqlite3_bind_blob(ins, 6, vals, (int)(k * sizeof(*vals)), SQLITE_STATIC);
		sq_check(db, sqlite3_step(ins), "insert");
		sqlite3_reset(ins);
		G.wide_rows++;
	}
}

static double run_sqlite(const char *path, const char *sync)
{
	sqlite3 *db;
	sqlite3_stmt *ins;
	char sql[128];
	sq_check(NULL, sqlite3_open(path, &db), "open");
	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s", sync);
	sq_check(db, sqlite3_exec(db, sql, NULL, NULL, NULL), "pragma");
	if (G.wide)
		sq_check(db,
		         sqlite3_exec(db,
		                      "CREATE TABLE IF NOT EXISTS readings_wide (device INTEGER NOT"
		                      " NULL, metric INTEGER NOT NULL, ts0 INTEGER NOT NULL, seq"
		                      " INTEGER NOT NULL, ts BLOB NOT NULL, vals BLOB NOT NULL,"
		                      " PRIMARY KEY (device, metric, ts0, seq)) WITHOUT ROWID",
		                      NULL, NULL, NULL),
		         "create");
	sq_check(db,
	         sqlite3_prepare_v2(db,
	                            G.wide ? "INSERT INTO readings_wide (device, metric, ts0, seq,"
	                                     " ts, vals) VALUES (?, ?, ?, ?, ?, ?)"
	                                   : "INSERT INTO readings (device, metric, ts, seq, idx,"
	                                     " value) VALUES (?, ?, ?, ?, ?, ?)",
	                            -1, &ins, NULL),
	         "prepare");
	size_t per_txn = (size_t)G.rows * (size_t)G.cols * (size_t)G.txn;
	int chunk = chunk_txns(), ntxn = (G.messages + G.txn - 1) / G.txn;
	struct row *rows = bench_xcalloc(per_txn * (size_t)chunk, sizeof(*rows));
	size_t *n = bench_xcalloc((size_t)chunk, sizeof(*n));
	int64_t timed = 0;
	for (int t = 0; t < ntxn; t += chunk) {
		int count = ntxn - t < chunk ? ntxn - t : chunk;
		pregen(t, count, rows, n);
		int64_t t0 = bench_mono_us();
		for (int j = 0; j < count; j++) {
			const struct row *r = rows + (size_t)j * per_txn;
			sq_check(db, sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), "begin");
			(G.wide ? insert_wide : insert_rows)(db, ins, r, n[j]);
			sq_check(db, sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), "commit");
		}
		timed += bench_mono_us() - t0;
	}
	sqlite3_finalize(ins);
	sqlite3_close(db);
	free(rows);
	free(n);
	return (double)timed / 1e6;
}

static void pg_check(PGconn *c, PGresult *r, ExecStatusType want, const char *what)
{
	if (PQresultStatus(r) != want)
		bench_die(PROG, "%s: %s", what, PQerrorMessage(c));
	PQclear(r);
}

static double run_pg(const char *url)
{
	PGconn *c = PQconnectdb(url);
	if (PQstatus(c) != CONNECTION_OK)
		bench_die(PROG, "connect: %s", PQerrorMessage(c));
	size_t per_txn = (size_t)G.rows * (size_t)G.cols * (size_t)G.txn;
	int chunk = chunk_txns(), ntxn = (G.messages + G.txn - 1) / G.txn;
	struct row *all = bench_xcalloc(per_txn * (size_t)chunk, sizeof(*all));
	size_t *count_of = bench_xcalloc((size_t)chunk, sizeof(*count_of));
	size_t cap = 1 << 20, len = 0;
	char *buf = bench_xcalloc(cap, 1);
	int64_t timed = 0, t0 = 0;
	/* the COPY text is formatted inside the clock: it is how the rows are sent (the bridge
	 * formats its COPY data too) */
	for (int t = 0, j = chunk; t < ntxn; t++, j++) {
		if (j == chunk) { /* the next chunk of rows, with the clock stopped */
			if (t)
				timed += bench_mono_us() - t0;
			pregen(t, ntxn - t < chunk ? ntxn - t : chunk, all, count_of);
			j = 0;
			t0 = bench_mono_us();
		}
		const struct row *rows = all + (size_t)j * per_txn;
		size_t n = count_of[j];
		pg_check(c, PQexec(c, "BEGIN"), PGRES_COMMAND_OK, "BEGIN");
		pg_check(
		    c, PQexec(c, "COPY readings (device, metric, ts, seq, idx, value) FROM STDIN"),
		    PGRES_COPY_IN, "COPY");
		for (size_t i = 0; i < n; i++) {
			const struct row *w = &rows[i];
			if (cap - len < 256) {
				if (PQputCopyData(c, buf, (int)len) != 1)
					bench_die(PROG, "COPY data: %s", PQerrorMessage(c));
				len = 0;
			}
			len += (size_t)snprintf(
			    buf + len, cap - len,
			    "%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64
			    "\t%.17g\n",
			    w->device, w->metric, w->ts, w->seq, w->idx, w->value);
		}
		if (len && PQputCopyData(c, buf, (int)len) != 1)
			bench_die(PROG, "COPY data: %s", PQerrorMessage(c));
		len = 0;
		if (PQputCopyEnd(c, NULL) != 1)
			bench_die(PROG, "COPY end: %s", PQerrorMessage(c));
		pg_check(c, PQgetResult(c), PGRES_COMMAND_OK, "COPY result");
		pg_check(c, PQexec(c, "COMMIT"), PGRES_COMMAND_OK, "COMMIT");
	}
	timed += bench_mono_us() - t0;
	PQfinish(c);
	free(buf);
	free(all);
	free(count_of);
	return (double)timed / 1e6;
}

int main(int argc, char **argv)
{
	const char *url = bench_arg(argc, argv, "--store", NULL);
	const char *sync = bench_arg(argc, argv, "--sync", "full");
	const char *order = bench_arg(argc, argv, "--order", "arrival");
	const char *layout = bench_arg(argc, argv, "--layout", "rows");
	G.by_key = !strcmp(order, "key");
	G.wide = !strcmp(layout, "wide");
	G.devices = (int)bench_arg_l(argc, argv, "--devices", 50);
	G.messages = (int)bench_arg_l(argc, argv, "--messages", 10000);
	G.rows = (int)bench_arg_l(argc, argv, "--rows", 1);
	G.cols = (int)bench_arg_l(argc, argv, "--cols", 1);
	G.txn = (int)bench_arg_l(argc, argv, "--txn", 100);
	G.pregen_mib = bench_arg_l(argc, argv, "--pregen-mib", 1024);
	G.base_dev = 1;
	if (!url || G.devices < 1 || G.messages < 1 || G.rows < 1 || G.cols < 1 || G.txn < 1 ||
	    G.pregen_mib < 1 || (strcmp(sync, "full") && strcmp(sync, "normal")) ||
	    (strcmp(order, "arrival") && strcmp(order, "key")) ||
	    (strcmp(layout, "rows") && strcmp(layout, "wide")) ||
	    (G.wide && (strncmp(url, "sqlite:", 7) || !G.by_key))) {
		fprintf(stderr,
		        "usage: " PROG " --store URL --devices D --messages M --rows R --cols C"
		        " [--txn MESSAGES] [--sync full|normal] [--order arrival|key]"
		        " [--layout rows|wide (SQLite, --order key)] [--pregen-mib N]\n");
		return 2;
	}
	G.sim = bench_xcalloc((size_t)G.devices, sizeof(*G.sim));
	for (int d = 0; d < G.devices; d++) {
		char id[32];
		const char *why;
		snprintf(id, sizeof(id), "device-%04d", d + 1); /* bench_loadgen's ids */
		struct dev_collect_conf cc = {.list = "sim", .sim_metrics = G.cols, .seed = id};
		if (dev_collect_open(&cc, &G.sim[d], &why))
			bench_die(PROG, "sim collector: %s", why);
	}
	G.sample = bench_xcalloc((size_t)G.cols, sizeof(*G.sample));
	G.wide_dts = bench_xcalloc((size_t)G.rows, sizeof(*G.wide_dts));
	G.wide_vals = bench_xcalloc((size_t)G.rows, sizeof(*G.wide_vals));
	schema(url);
	double secs;
	if (!strncmp(url, "sqlite:", 7))
		secs = run_sqlite(url + 7, sync);
	else
		secs = run_pg(url);
	double rows = (double)G.messages * G.rows * G.cols;
	int64_t trows = G.wide ? G.wide_rows : (int64_t)rows;
	printf("rawinsert ok=1 rows=%.0f msgs=%d txn_msgs=%d secs=%.3f rows_s=%.0f msg_s=%.0f"
	       " layout=%s table_rows=%" PRId64 " table_rows_s=%.0f pregen_chunks=%d\n",
	       rows, G.messages, G.txn, secs, rows / secs, G.messages / secs, layout, trows,
	       (double)trows / secs, G.chunks);
	for (int d = 0; d < G.devices; d++)
		dev_collect_close(G.sim[d]);
	free(G.sim);
	free(G.sample);
	free(G.wide_dts);
	free(G.wide_vals);
	return 0;
}
