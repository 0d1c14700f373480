/* store_pg.c - the PostgreSQL backend (libpq): server-side prepared statements re-prepared
 * after a reconnect, rows streamed in single-row mode, bulk inserts with COPY. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "oarray.h"
#include "ohex.h"
#include "otime.h"
#include "store_be.h"

#define PG_MAX_PARAMS 32
#define PG_NUM_LEN    32
#define PG_COPY_FLUSH (64 * 1024)

struct pg_conn {
	PGconn *c;
	char *err;
	unsigned gen;     /* bumped at every (re)connect: statements prepared before are gone */
	unsigned next_id; /* statement names */
	int busy;         /* a statement is streaming rows */
	int in_tx;        /* between BEGIN and COMMIT/ROLLBACK: a reconnect would lose it */
	int64_t retry_at; /* monotonic ms: no reconnect outside a transaction before this */
	int64_t pending;  /* xid of a transaction whose COMMIT went unanswered, 0 if none */
	int pid;          /* the server process of the connection */
	int64_t started;  /* ... its backend_start (us, 0 if unknown): with pid, names it */
	int pending_pid;  /* the server process that sent that COMMIT */
	int ready;        /* the session settings are applied (pg_session) */
	int broken;       /* unusable though up (stuck in COPY): reconnect at the next BEGIN */
	unsigned *stale;  /* statements freed in a failed transaction, not deallocated yet */
	size_t n_stale, cap_stale;
	/* The server process of the connection before this one (pid, backend_start), ended
	 * after a reconnect if it still sits idle in a transaction (pg_connect). */
	int lost_pid;
	int64_t lost_started;
	/* What store_interrupt needs to cancel the current server process's statement: set at
	 * every (re)connect by the connection's thread, used from another. */
	pthread_mutex_t cancel_mu;
	PGcancel *cancel;
	unsigned cancels;      /* cancel requests begun (under cancel_mu) */
	unsigned cancels_done; /* ... whose PQcancel returned: delivered, or failed */
	unsigned tx_cancels;   /* cancels_done when the transaction began */
};

struct pg_stmt {
	struct pg_conn *pc;
	unsigned id;
	char name[24];
	char *sql; /* with $n placeholders */
	int nparams;
	unsigned gen; /* pc->gen when prepared; 0 = never */
	char *vals[PG_MAX_PARAMS];
	int lens[PG_MAX_PARAMS];
	int fmts[PG_MAX_PARAMS];
	char num[PG_MAX_PARAMS][PG_NUM_LEN];
	char *heap[PG_MAX_PARAMS]; /* copies of text/blob arguments */
	PGresult *row;             /* current single-row result */
	int running;               /* query sent, results not drained */
	int64_t changes;
	unsigned char *blob; /* decoded bytea of the current row */
	size_t blob_cap;
};

struct pg_copy {
	struct pg_conn *pc;
	int ncols;
	char *buf;
	size_t len, cap;
	int failed;
};

static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg; /* notices are not errors; the programs log what matters */
}

static int map_result(struct pg_conn *pc, PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(pc->c);
	snprintf(pc->err, STORE_ERR_MAX, "%s: %s", what, msg && *msg ? msg : "failed");
	size_t n = strlen(pc->err);
	while (n && (pc->err[n - 1] == '\n' || pc->err[n - 1] == ' '))
		pc->err[--n] = '\0';
	if (PQstatus(pc->c) != CONNECTION_OK || !state)
		return STORE_ECONN;
	if (!strncmp(state, "08", 2) || !strcmp(state, "57P01") || !strcmp(state, "57P02") ||
	    !strcmp(state, "57P03"))
		return STORE_ECONN;
	/* Serialization failure, deadlock, lock_timeout; and a statement cancelled (57014): the
	 * role's statement_timeout while it waited for a lock, or pg_cancel_backend(). Each is
	 * retried: as a refusal, a group would be split after three attempts and its items
	 * dropped unacknowledged (a Birth with its metric catalog). */
	if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03") ||
	    !strcmp(state, "57014"))
		return STORE_EBUSY;
	if (!strcmp(state, "25006")) {
		snprintf(pc->err + n, STORE_ERR_MAX - n,
		         " (a standby server, or default_transaction_read_only set?)");
		return STORE_EREADONLY;
	}
	if (!strncmp(state, "53", 2))
		return STORE_EFULL;
	if (!strncmp(state, "23", 2))
		return STORE_ECONSTRAINT;
	return STORE_EQUERY;
}

/* Rewrite '?' placeholders outside quotes as $1, $2, ... */
static char *rewrite(const char *sql, int *nparams)
{
	size_t len = strlen(sql);
	char *out = malloc(len * 4 + 1);
	if (!out)
		return NULL;
	char *o = out, quote = 0;
	int n = 0;
	for (const char *p = sql; *p; p++) {
		if (quote) {
			if (*p == quote)
				quote = 0;
		} else if (*p == '\'' || *p == '"') {
			quote = *p;
		} else if (*p == '?') {
			o += sprintf(o, "$%d", ++n);
			continue;
		}
		*o++ = *p;
	}
	*o = '\0';
	*nparams = n;
	return out;
}

/* STORE_OK if the connection is up with its session settings, else STORE_ECONN (pc->err
 * says which is missing): nothing runs on a session that pg_session could not set up. */
static int pg_up(struct pg_conn *pc)
{
	if (PQstatus(pc->c) != CONNECTION_OK || pc->broken) {
		snprintf(pc->err, STORE_ERR_MAX, "connection lost");
		return STORE_ECONN;
	}
	if (!pc->ready) {
		snprintf(pc->err, STORE_ERR_MAX, "the session's settings could not be applied");
		return STORE_ECONN;
	}
	return STORE_OK;
}

/* Run sql, which returns one row of one column, into out (cap bytes); *null when NULL. */
static int pg_value(struct pg_conn *pc, const char *sql, char *out, size_t cap, int *null)
{
	PGresult *r = PQexec(pc->c, sql);
	int rc = STORE_OK;
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		rc = map_result(pc, r, "exec");
	else if (PQntuples(r) != 1 || PQnfields(r) != 1)
		rc = STORE_EQUERY;
	else if (!(*null = PQgetisnull(r, 0, 0)))
		snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

/* Ask server process pid to end (pg_terminate_backend) if it is still the one cond, a
 * condition on the columns of pg_stat_activity, describes: a process id can be reused.
 * *ended: whether one was asked. */
static int end_backend(struct pg_conn *pc, int pid, const char *cond, int *ended)
{
	char q[320], n[16] = "0";
	int null = 1;
	snprintf(q, sizeof(q),
	         "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
	         " WHERE pid = %d AND %s",
	         pid, cond);
	int rc = pg_value(pc, q, n, sizeof(n), &null);
	if (!rc)
		*ended = strcmp(n, "0") != 0;
	return rc;
}

/* Run sql, which returns no rows. */
static int pg_command(struct pg_conn *pc, const char *sql)
{
	PGresult *r = PQexec(pc->c, sql);
	int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? STORE_OK : map_result(pc, r, sql);
	PQclear(r);
	return rc;
}

/* The session settings the store relies on, whatever the server, the database, the role
 * (ALTER ... SET) or the URL's options say; run on every (re)connect, before anything else:
 * - bytea_output hex: pg_column decodes only that (escape made every stored signature
 *   unreadable, so every resend was seq_reused, and no device key was ever read back);
 * - client_encoding UTF8: the text devices send, checked as UTF-8, is stored as sent;
 * - default_transaction_isolation read committed: every statement sees what committed before it
 *   began. A migration step reads the version once it holds the migration lock (store_schema.c);
 *   under repeatable read or serializable its snapshot predated the lock, so of bridges starting
 *   together the waiters applied version 1 again ("relation devices already exists") and exited;
 * - synchronous_commit not off: off returns from COMMIT before the WAL is flushed, and the
 *   bridge acknowledges after COMMIT (DESIGN.md, durability contract: a server crash would
 *   lose acknowledged data). It is set to on; local (flushed here, no wait for synchronous
 *   standbys) and the stronger settings (on, remote_write, remote_apply) are kept;
 * - idle_in_transaction_session_timeout at most PG_IDLE_TX_MS (a smaller one is kept): a
 *   connection that vanished silently (NAT or firewall state lost: no FIN reaches the
 *   server) in the middle of a transaction leaves its server process idle in it, holding
 *   its row locks, until the server's TCP keepalive gives up (hours): the retry on a new
 *   connection waited behind it as long. No Outpost program waits for anything but the
 *   database inside a transaction (a group, a sweep, a migration step, an outpostctl change
 *   run their statements back to back); the writer also ends the old process at once after
 *   a reconnect (pg_connect);
 * - and records its process's backend_start, which with its pid names it for that. */
#define PG_IDLE_TX_MS 60000
static int pg_session(struct pg_conn *pc)
{
	static const char *const set[] = {"SET bytea_output = 'hex'",
	                                  "SET client_encoding = 'UTF8'",
	                                  "SET default_transaction_isolation = 'read committed'"};
	char v[32] = "";
	int null = 1, rc = STORE_OK;
	pc->ready = 0;
	for (size_t i = 0; i < sizeof(set) / sizeof(set[0]) && !rc; i++)
		rc = pg_command(pc, set[i]);
	if (!rc)
		rc = pg_value(pc, "SHOW synchronous_commit", v, sizeof(v), &null);
	if (!rc && (null || !strcmp(v, "off")))
		rc = pg_command(pc, "SET synchronous_commit = on");
	if (!rc)
		rc = pg_value(pc,
		              "SELECT setting FROM pg_settings WHERE name ="
		              " 'idle_in_transaction_session_timeout'",
		              v, sizeof(v), &null);
	if (!rc && (null || strtoll(v, NULL, 10) <= 0 || strtoll(v, NULL, 10) > PG_IDLE_TX_MS))
		rc = pg_command(pc, "SET idle_in_transaction_session_timeout = "
		                    STORE_STR(PG_IDLE_TX_MS));
	if (!rc)
		rc = pg_value(pc,
		              "SELECT (extract(epoch FROM backend_start) * 1000000)::bigint FROM"
		              " pg_stat_activity WHERE pid = pg_backend_pid()",
		              v, sizeof(v), &null);
	if (!rc)
		pc->started = null ? 0 : strtoll(v, NULL, 10);
	pc->ready = !rc;
	return rc;
}

/* A connection just made (or made again): nothing of the last session's state holds. */
static void new_session(struct pg_conn *pc)
{
	PQsetNoticeProcessor(pc->c, quiet, NULL);
	if (pc->pid && pc->started) { /* a reconnect */
		pc->lost_pid = pc->pid;
		pc->lost_started = pc->started;
	}
	pc->pid = PQbackendPID(pc->c);
	pc->started = 0;
	pthread_mutex_lock(&pc->cancel_mu);
	PQfreeCancel(pc->cancel);
	pc->cancel = PQgetCancel(pc->c);
	pthread_mutex_unlock(&pc->cancel_mu);
	pc->gen++;
	pc->busy = 0;
	pc->in_tx = 0;
	pc->broken = 0;
	pc->n_stale = 0; /* the server forgot them with the old session */
}

static int pg_connect(struct pg_conn *pc)
{
	if (PQstatus(pc->c) == CONNECTION_OK && pc->ready && !pc->broken)
		return STORE_OK;
	if (PQstatus(pc->c) != CONNECTION_OK || pc->broken) {
		pc->ready = 0;
		PQreset(pc->c);
		if (PQstatus(pc->c) != CONNECTION_OK) {
			snprintf(pc->err, STORE_ERR_MAX, "reconnect: %s", PQerrorMessage(pc->c));
			return STORE_ECONN;
		}
		new_session(pc);
	}
	if (pg_session(pc)) {
		size_t n = strlen(pc->err);
		snprintf(pc->err + n, STORE_ERR_MAX - n, " (setting up the session)");
		return STORE_ECONN; /* tried again at the next transaction */
	}
	if (pc->lost_pid) {
		/* The lost connection's server process, if it still sits idle in a transaction
		 * or waits for the rest of a COPY from us: the connection vanished without the
		 * server noticing, and it would hold that transaction's locks (the rows this one
		 * is about to lock again) until idle_in_transaction_session_timeout (the COPY:
		 * until its TCP keepalive gives up, hours). One running a statement (a COMMIT
		 * among them) is left to finish: pg_resolve asks about a COMMIT. Best effort. */
		char cond[256];
		int ended = 0;
		snprintf(cond, sizeof(cond),
		         "(extract(epoch FROM backend_start) * 1000000)::bigint = %" PRId64
		         " AND (state LIKE 'idle in transaction%%' OR"
		         " (state = 'active' AND wait_event = 'ClientRead'))",
		         pc->lost_started);
		end_backend(pc, pc->lost_pid, cond, &ended);
		pc->lost_pid = 0;
	}
	return STORE_OK;
}

static void pg_close(void *conn);

static int pg_open(const char *url, const struct store_opts *o, char *errbuf, void **conn,
                   char *err)
{
	char timeout[16];
	snprintf(timeout, sizeof(timeout), "%d",
	         o->connect_timeout_s > 0 ? o->connect_timeout_s : 10);
	/* Earlier keywords are overridden by what the URL says. A server that vanishes without
	 * closing the connection (a cut cable, a crashed host) is noticed within about a minute,
	 * instead of hours (idle: keepalives; unacknowledged data: tcp_user_timeout). */
	const char *keys[] = {"connect_timeout",    "application_name",    "keepalives",
	                      "keepalives_idle",    "keepalives_interval", "keepalives_count",
	                      "tcp_user_timeout",   "dbname",              NULL};
	const char *vals[] = {timeout, o->app_name ? o->app_name : "outpost", "1", "30", "10", "3",
	                      "60000", url, NULL};
	struct pg_conn *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return STORE_ENOMEM;
	pc->err = errbuf;
	pthread_mutex_init(&pc->cancel_mu, NULL);
	pc->c = PQconnectdbParams(keys, vals, 1);
	if (!pc->c || PQstatus(pc->c) != CONNECTION_OK) {
		const char *m = pc->c ? PQerrorMessage(pc->c) : "out of memory";
		snprintf(err, STORE_ERR_MAX, "cannot connect: %s", m);
		size_t n = strlen(err);
		while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
			err[--n] = '\0';
		pg_close(pc);
		return STORE_ECONN;
	}
	new_session(pc);
	int rc = pg_session(pc);
	if (rc) {
		snprintf(err, STORE_ERR_MAX, "cannot set up the session: %s", pc->err);
		pg_close(pc);
		return rc;
	}
	*conn = pc;
	return STORE_OK;
}

static void pg_close(void *conn)
{
	struct pg_conn *pc = conn;
	if (!pc)
		return;
	PQfinish(pc->c);
	PQfreeCancel(pc->cancel);
	pthread_mutex_destroy(&pc->cancel_mu);
	free(pc->stale);
	free(pc);
}

/* From another thread: the statement running now is cancelled (SQLSTATE 57014, transient).
 * PQcancel connects to the server (blocking, without a timeout of its own): it runs outside the
 * mutex, on the request taken out of the connection, so that a reconnect does not wait on it. */
static void pg_interrupt(void *conn)
{
	struct pg_conn *pc = conn;
	char why[256];
	pthread_mutex_lock(&pc->cancel_mu);
	PGcancel *cancel = pc->cancel;
	pc->cancel = NULL;
	if (cancel)
		pc->cancels++;
	pthread_mutex_unlock(&pc->cancel_mu);
	if (!cancel)
		return;
	(void)PQcancel(cancel, why, (int)sizeof(why)); /* best effort */
	pthread_mutex_lock(&pc->cancel_mu);
	pc->cancels_done++;
	if (!pc->cancel) { /* no reconnect meanwhile: still the current server process's */
		pc->cancel = cancel;
		cancel = NULL;
	}
	pthread_mutex_unlock(&pc->cancel_mu);
	PQfreeCancel(cancel);
}

static void deallocate_now(struct pg_conn *pc, unsigned id)
{
	char sql[48];
	snprintf(sql, sizeof(sql), "DEALLOCATE o%u", id);
	PQclear(PQexec(pc->c, sql));
}

/* Outside any transaction only, where a refusal cannot abort one. */
static void flush_stale(struct pg_conn *pc)
{
	if (PQtransactionStatus(pc->c) != PQTRANS_IDLE)
		return;
	for (size_t i = 0; i < pc->n_stale; i++)
		deallocate_now(pc, pc->stale[i]);
	pc->n_stale = 0;
}

/* DEALLOCATE statement o<id> now, or once the session accepts it again (flush_stale, after
 * the ROLLBACK of a failed transaction: sent there, it was refused, and each failed health
 * sweep or certificate re-check left a statement behind on the writer's session until a
 * reconnect). Out of memory, it is left there, as before. */
static void deallocate(struct pg_conn *pc, unsigned id)
{
	PGTransactionStatusType ts = PQtransactionStatus(pc->c);
	if (ts != PQTRANS_IDLE && ts != PQTRANS_INTRANS) { /* failed, or busy with another */
		if (!oarray_reserve((void **)&pc->stale, &pc->cap_stale, pc->n_stale,
		                    sizeof(*pc->stale)))
			pc->stale[pc->n_stale++] = id;
		return;
	}
	flush_stale(pc); /* a session that never runs pg_exec (the registry's reader) */
	deallocate_now(pc, id);
}

static int pg_exec(void *conn, const char *sql)
{
	struct pg_conn *pc = conn;
	if (!strcmp(sql, "COMMIT") || !strcmp(sql, "ROLLBACK"))
		pc->in_tx = 0; /* whatever the outcome, the transaction is over */
	int rc = pg_up(pc);
	if (rc)
		return rc;
	PGresult *r = PQexec(pc->c, sql);
	ExecStatusType t = PQresultStatus(r);
	rc = t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK ? STORE_OK : map_result(pc, r, "exec");
	PQclear(r);
	if (pc->n_stale)
		flush_stale(pc); /* after the ROLLBACK (or COMMIT) of a failed transaction */
	return rc;
}

static int pg_begin(void *conn)
{
	struct pg_conn *pc = conn;
	int rc = pg_connect(pc);
	/* A cancel still on its way when the transaction begins may land in it: it counts
	 * against it (pg_commit). One whose PQcancel returned was delivered before: the server
	 * drops a cancel that finds it idle. */
	pthread_mutex_lock(&pc->cancel_mu);
	pc->tx_cancels = pc->cancels_done;
	pthread_mutex_unlock(&pc->cancel_mu);
	if (!rc)
		rc = pg_exec(pc, "BEGIN");
	pc->in_tx = !rc;
	return rc;
}

/* COMMIT, learning the transaction's id first: if the connection breaks before COMMIT's
 * answer arrives, the server may or may not have committed, and only the id lets
 * pg_resolve() ask it afterwards. A transaction that wrote nothing has no id and nothing to
 * lose. One more round trip per transaction. */
static int pg_commit(void *conn)
{
	struct pg_conn *pc = conn;
	char xid[32] = "";
	int null = 1;
	pc->pending = 0;
	if (!pg_up(pc)) {
		int rc = pg_value(pc, "SELECT txid_current_if_assigned()", xid, sizeof(xid), &null);
		if (rc) {
			pc->in_tx = 0; /* COMMIT never sent: nothing committed */
			return rc;
		}
	}
	int rc = pg_exec(pc, "COMMIT");
	pthread_mutex_lock(&pc->cancel_mu);
	int cancelled = pc->cancels != pc->tx_cancels;
	pthread_mutex_unlock(&pc->cancel_mu);
	if (!rc && cancelled) {
		/* A cancel that reached COMMIT while it waited for a synchronous standby ends the
		 * wait with a mere warning: committed on this server only. Not known to be
		 * durable, so reported as not committed (nothing acknowledged; the devices send
		 * it again and find it stored). */
		snprintf(pc->err, STORE_ERR_MAX,
		         "COMMIT: a cancel (store_interrupt) was sent during the transaction, or "
		         "was on its way when it began: treated as not committed");
		return STORE_EBUSY;
	}
	if (rc == STORE_ECONN && !null) {
		pc->pending = strtoll(xid, NULL, 10);
		pc->pending_pid = pc->pid;
		size_t n = strlen(pc->err);
		snprintf(pc->err + n, STORE_ERR_MAX - n, " (COMMIT of transaction %s unanswered)",
		         xid);
		return STORE_EUNKNOWN;
	}
	return rc;
}

static int pg_resolve(void *conn)
{
	struct pg_conn *pc = conn;
	char q[192], status[32] = "";
	int null = 1;
	if (!pc->pending)
		return STORE_EINVAL;
	int rc = pg_connect(pc);
	if (rc)
		return rc;
	snprintf(q, sizeof(q), "SELECT txid_status(%" PRId64 ")", pc->pending);
	if ((rc = pg_value(pc, q, status, sizeof(status), &null)))
		return rc;
	if (!null && !strcmp(status, "in progress")) {
		/* Its server process has not noticed the lost connection (it may not for hours, if
		 * the connection vanished silently): end it, if it still holds this transaction,
		 * then the transaction is committed or aborted. */
		snprintf(q, sizeof(q), "backend_xid::text = '%" PRId64 "'",
		         pc->pending % 4294967296);
		int ended = 0, qrc = end_backend(pc, pc->pending_pid, q, &ended);
		snprintf(pc->err, STORE_ERR_MAX,
		         "transaction %" PRId64 " is still in progress (its server process %d %s)",
		         pc->pending, pc->pending_pid,
		         qrc     ? "could not be asked to end: the query failed"
		         : ended ? "was asked to end"
		                 : "was not found");
		return STORE_EBUSY;
	}
	if (null || (strcmp(status, "committed") && strcmp(status, "aborted"))) {
		snprintf(pc->err, STORE_ERR_MAX, "transaction %" PRId64 ": status %s", pc->pending,
		         null ? "no longer known" : status);
		pc->pending = 0;
		return STORE_EQUERY;
	}
	pc->pending = 0;
	return !strcmp(status, "committed");
}

static int pg_prepare(void *conn, const char *sql, void **out)
{
	struct pg_conn *pc = conn;
	struct pg_stmt *s = calloc(1, sizeof(*s));
	if (!s)
		return STORE_ENOMEM;
	s->sql = rewrite(sql, &s->nparams);
	if (!s->sql || s->nparams > PG_MAX_PARAMS) {
		int rc = s->sql ? STORE_EINVAL : STORE_ENOMEM;
		free(s->sql);
		free(s);
		return rc;
	}
	s->pc = pc;
	s->id = ++pc->next_id;
	snprintf(s->name, sizeof(s->name), "o%u", s->id);
	/* Prepared lazily at the first step, so statements survive reconnects. */
	*out = s;
	return STORE_OK;
}

static void drain(struct pg_stmt *s)
{
	PQclear(s->row);
	s->row = NULL;
	if (s->running) {
		PGresult *r;
		while ((r = PQgetResult(s->pc->c)))
			PQclear(r);
		s->running = 0;
		s->pc->busy = 0;
	}
}

static void pg_finalize(void *stmt)
{
	struct pg_stmt *s = stmt;
	if (!s)
		return;
	drain(s);
	if (s->gen == s->pc->gen && PQstatus(s->pc->c) == CONNECTION_OK)
		deallocate(s->pc, s->id);
	for (int i = 0; i < PG_MAX_PARAMS; i++)
		free(s->heap[i]);
	free(s->blob);
	free(s->sql);
	free(s);
}

static int pg_bind(void *stmt, int idx, const struct store_val *v)
{
	struct pg_stmt *s = stmt;
	if (idx < 1 || idx > s->nparams)
		return STORE_EINVAL;
	int i = idx - 1;
	free(s->heap[i]);
	s->heap[i] = NULL;
	s->fmts[i] = 0;
	s->lens[i] = 0;
	switch (v->t) {
	case STORE_VI64:
		snprintf(s->num[i], PG_NUM_LEN, "%" PRId64, v->i);
		s->vals[i] = s->num[i];
		break;
	case STORE_VF64:
		if (isinf(v->f))
			snprintf(s->num[i], PG_NUM_LEN, "%s", v->f > 0 ? "Infinity" : "-Infinity");
		else
			snprintf(s->num[i], PG_NUM_LEN, "%.17g", v->f);
		s->vals[i] = s->num[i];
		break;
	case STORE_VTEXT:
	case STORE_VBLOB:
		s->heap[i] = malloc(v->len + 1);
		if (!s->heap[i])
			return STORE_ENOMEM;
		memcpy(s->heap[i], v->p, v->len);
		s->heap[i][v->len] = '\0';
		s->vals[i] = s->heap[i];
		s->lens[i] = (int)v->len;
		s->fmts[i] = v->t == STORE_VBLOB; /* bytea travels in binary */
		break;
	default:
		s->vals[i] = NULL;
		break;
	}
	return STORE_OK;
}

/* Prepare (again after a reconnect) and send s. */
static int send_stmt(struct pg_stmt *s)
{
	struct pg_conn *pc = s->pc;
	PGresult *r;
	int rc = pg_up(pc);
	if (rc)
		return rc;
	if (s->gen != pc->gen) {
		r = PQprepare(pc->c, s->name, s->sql, s->nparams, NULL);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			rc = map_result(pc, r, "prepare");
			PQclear(r);
			return rc;
		}
		PQclear(r);
		s->gen = pc->gen;
	}
	if (!PQsendQueryPrepared(pc->c, s->name, s->nparams, (const char *const *)s->vals, s->lens,
	                         s->fmts, 0)) {
		snprintf(pc->err, STORE_ERR_MAX, "send: %s", PQerrorMessage(pc->c));
		return STORE_ECONN;
	}
	PQsetSingleRowMode(pc->c);
	s->running = 1;
	pc->busy = 1;
	s->changes = 0;
	return STORE_OK;
}

/* The statement's first result, sent again once on a fresh connection if the server went away
 * (a restart, a failover) while no transaction was open: a reader outside transactions (the
 * bridge's device registry) never calls BEGIN, where the writer reconnects. Inside a
 * transaction the loss is the caller's to handle: a new connection would run the rest of it
 * outside any transaction. */
static PGresult *first_result(struct pg_stmt *s, int *rc)
{
	struct pg_conn *pc = s->pc;
	for (int attempt = 0;; attempt++) {
		/* at most one try a second: an unreachable server costs connect_timeout each */
		if (pg_up(pc) && !pc->in_tx && otime_mono_ms() >= pc->retry_at) {
			pc->retry_at = otime_mono_ms() + 1000;
			pg_connect(pc);
		}
		*rc = send_stmt(s);
		PGresult *r = *rc ? NULL : PQgetResult(pc->c);
		if (!*rc && PQstatus(pc->c) == CONNECTION_OK)
			return r;
		if (r)
			*rc = map_result(pc, r, "step");
		PQclear(r);
		drain(s);
		if (attempt || pc->in_tx || *rc != STORE_ECONN)
			return NULL;
	}
}

static int pg_step(void *stmt)
{
	struct pg_stmt *s = stmt;
	struct pg_conn *pc = s->pc;
	PGresult *r;
	int rc;

	PQclear(s->row);
	s->row = NULL;
	if (!s->running) {
		if (pc->busy) {
			snprintf(pc->err, STORE_ERR_MAX,
			         "another statement is still streaming rows");
			return STORE_EINVAL;
		}
		if (!(r = first_result(s, &rc)))
			return rc ? rc : STORE_ECONN;
	} else {
		r = PQgetResult(pc->c);
	}
	switch (PQresultStatus(r)) {
	case PGRES_SINGLE_TUPLE:
		s->row = r;
		return 1;
	case PGRES_TUPLES_OK:
	case PGRES_COMMAND_OK: {
		const char *n = PQcmdTuples(r);
		s->changes = n && *n ? strtoll(n, NULL, 10) : 0;
		PQclear(r);
		drain(s);
		return 0;
	}
	default:
		rc = map_result(pc, r, "step");
		PQclear(r);
		drain(s);
		return rc;
	}
}

static int pg_reset(void *stmt)
{
	struct pg_stmt *s = stmt;
	drain(s);
	return STORE_OK;
}

static int64_t pg_changes(void *stmt)
{
	struct pg_stmt *s = stmt;
	return s->changes;
}

static int pg_column(void *stmt, int col, struct store_val *out)
{
	struct pg_stmt *s = stmt;
	if (!s->row || col < 0 || col >= PQnfields(s->row))
		return STORE_EINVAL;
	if (PQgetisnull(s->row, 0, col)) {
		out->t = STORE_VNULL;
		return STORE_OK;
	}
	const char *v = PQgetvalue(s->row, 0, col);
	size_t len = (size_t)PQgetlength(s->row, 0, col);
	switch (PQftype(s->row, col)) {
	case 16: /* bool, "t" or "f": 1 or 0, as SQLite answers a comparison */
		out->t = STORE_VI64;
		out->i = v[0] == 't';
		break;
	case 20: /* int8 */
	case 21: /* int2 */
	case 23: /* int4 */
		out->t = STORE_VI64;
		out->i = strtoll(v, NULL, 10);
		break;
	case 700:  /* float4 */
	case 701:  /* float8 */
	case 1700: /* numeric */
		out->t = STORE_VF64;
		out->f = strtod(v, NULL);
		break;
	case 17: /* bytea, text form "\x0a0b..." */
		if (len < 2 || v[0] != '\\' || v[1] != 'x')
			return STORE_EQUERY;
		len = (len - 2) / 2;
		if (len + 1 > s->blob_cap) {
			unsigned char *b = realloc(s->blob, len + 1);
			if (!b)
				return STORE_ENOMEM;
			s->blob = b;
			s->blob_cap = len + 1;
		}
		for (size_t i = 0; i < len; i++)
			s->blob[i] =
			    (unsigned char)(ohex_digit(v[2 + 2 * i]) << 4 | ohex_digit(v[3 + 2 * i]));
		s->blob[len] = 0;
		out->t = STORE_VBLOB;
		out->p = s->blob;
		out->len = len;
		break;
	default:
		out->t = STORE_VTEXT;
		out->p = v;
		out->len = len;
		break;
	}
	return STORE_OK;
}

static int copy_flush(struct pg_copy *cp)
{
	if (cp->len && PQputCopyData(cp->pc->c, cp->buf, (int)cp->len) != 1) {
		snprintf(cp->pc->err, STORE_ERR_MAX, "COPY: %s", PQerrorMessage(cp->pc->c));
		cp->failed = 1;
		return STORE_ECONN;
	}
	cp->len = 0;
	return STORE_OK;
}

/* Make room for need more bytes: grow the buffer (rows are flushed whole, at PG_COPY_FLUSH). */
static int copy_room(struct pg_copy *cp, size_t need)
{
	size_t cap = cp->cap * 2 > cp->len + need ? cp->cap * 2 : cp->len + need;
	char *b = realloc(cp->buf, cap);
	if (!b)
		return STORE_ENOMEM;
	cp->buf = b;
	cp->cap = cap;
	return STORE_OK;
}

static int pg_copy_begin(void *conn, const char *table, const char *cols, int ncols, void **out)
{
	struct pg_conn *pc = conn;
	char sql[512];
	int rc = pg_up(pc);
	if (rc)
		return rc;
	struct pg_copy *cp = calloc(1, sizeof(*cp));
	if (!cp)
		return STORE_ENOMEM;
	cp->pc = pc;
	cp->ncols = ncols;
	cp->cap = PG_COPY_FLUSH + 1024;
	cp->buf = malloc(cp->cap);
	if (!cp->buf) {
		free(cp);
		return STORE_ENOMEM;
	}
	snprintf(sql, sizeof(sql), "COPY %s (%s) FROM STDIN", table, cols);
	PGresult *r = PQexec(pc->c, sql);
	if (PQresultStatus(r) != PGRES_COPY_IN) {
		rc = map_result(pc, r, "COPY");
		PQclear(r);
		free(cp->buf);
		free(cp);
		return rc;
	}
	PQclear(r);
	*out = cp;
	return STORE_OK;
}

static int pg_copy_row(void *p, const struct store_val *vals)
{
	struct pg_copy *cp = p;
	if (cp->failed)
		return STORE_ECONN;
	for (int i = 0; i < cp->ncols; i++) {
		/* Numbers take at most 32 bytes, a blob "\\x" and two hex digits a byte, and
		 * each value its separator. */
		size_t need = (vals[i].t == STORE_VBLOB ? 3 + 2 * vals[i].len : 32) + 1;
		if (cp->cap - cp->len < need && copy_room(cp, need)) {
			cp->failed = 1; /* half a row in the buffer: the COPY is aborted */
			return STORE_ENOMEM;
		}
		char *o = cp->buf + cp->len;
		size_t room = cp->cap - cp->len;
		int n;
		if (vals[i].t == STORE_VBLOB) {
			static const char hx[] = "0123456789abcdef";
			const unsigned char *b = vals[i].p;
			memcpy(o, "\\\\x", 3);
			for (size_t k = 0; k < vals[i].len; k++) {
				o[3 + 2 * k] = hx[b[k] >> 4];
				o[4 + 2 * k] = hx[b[k] & 15];
			}
			n = (int)(3 + 2 * vals[i].len);
		} else if (vals[i].t == STORE_VI64)
			n = snprintf(o, room, "%" PRId64, vals[i].i);
		else if (vals[i].t == STORE_VF64 && isinf(vals[i].f))
			n = snprintf(o, room, "%s", vals[i].f > 0 ? "Infinity" : "-Infinity");
		else if (vals[i].t == STORE_VF64)
			n = snprintf(o, room, "%.17g", vals[i].f);
		else if (vals[i].t == STORE_VNULL)
			n = snprintf(o, room, "\\N");
		else {
			cp->failed = 1;
			return STORE_EINVAL; /* no text: nothing here needs escaping */
		}
		cp->len += (size_t)n;
		cp->buf[cp->len++] = i + 1 < cp->ncols ? '\t' : '\n';
	}
	return cp->len >= PG_COPY_FLUSH ? copy_flush(cp) : STORE_OK;
}

static int pg_copy_end(void *p, int ok)
{
	struct pg_copy *cp = p;
	int rc = ok && !cp->failed ? copy_flush(cp) : STORE_ECONN;
	if (PQputCopyEnd(cp->pc->c, rc ? "aborted" : NULL) != 1 && !rc) {
		snprintf(cp->pc->err, STORE_ERR_MAX, "COPY end: %s", PQerrorMessage(cp->pc->c));
		rc = STORE_ECONN;
	}
	PGresult *r;
	while ((r = PQgetResult(cp->pc->c))) {
		ExecStatusType t = PQresultStatus(r);
		if (t == PGRES_COPY_IN || t == PGRES_COPY_OUT || t == PGRES_COPY_BOTH) {
			/* PQputCopyEnd failed with the connection up (libpq out of memory): libpq
			 * stays in the COPY and returns this result for ever. The connection is
			 * given up; the next transaction makes a new one. */
			PQclear(r);
			if (!rc)
				snprintf(cp->pc->err, STORE_ERR_MAX, "COPY end: %s",
				         PQerrorMessage(cp->pc->c));
			cp->pc->broken = 1;
			rc = STORE_ECONN;
			break;
		}
		if (t != PGRES_COMMAND_OK && !rc)
			rc = map_result(cp->pc, r, "COPY");
		PQclear(r);
	}
	return ok ? rc : STORE_OK;
}

static void pg_copy_free(void *p)
{
	struct pg_copy *cp = p;
	if (!cp)
		return;
	free(cp->buf);
	free(cp);
}

const struct store_backend store__pg = {
    .name = "postgresql",
    .dialect = STORE_PG,
    .open = pg_open,
    .close = pg_close,
    .exec = pg_exec,
    .begin = pg_begin,
    .commit = pg_commit,
    .resolve = pg_resolve,
    .interrupt = pg_interrupt,
    .prepare = pg_prepare,
    .finalize = pg_finalize,
    .bind = pg_bind,
    .step = pg_step,
    .reset = pg_reset,
    .changes = pg_changes,
    .column = pg_column,
    .copy_begin = pg_copy_begin,
    .copy_row = pg_copy_row,
    .copy_end = pg_copy_end,
    .copy_free = pg_copy_free,
};
