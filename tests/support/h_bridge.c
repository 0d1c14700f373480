/* h_bridge.c - outpost-bridge processes and store reads for the integration tests. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <criterion/criterion.h>

#include "h_bridge.h"
#include "h_device.h"
#include "h_simdev.h"
#include "store.h"

#define MAX_TRACKED 64
static pid_t tracked[MAX_TRACKED];
static int n_tracked;

/* Only what we started: the pid may have been reused since it exited. */
static int ours(pid_t pid)
{
	char *path = h_strf("/proc/%d/cmdline", (int)pid);
	size_t len = 0;
	char *cmd = h_read_file(path, &len);
	int yes = 0;
	for (size_t i = 0; cmd && i < len; i += strlen(cmd + i) + 1)
		if (strstr(cmd + i, "mosquitto") || strstr(cmd + i, "outpost-bridge") ||
		    strstr(cmd + i, "run-broker.sh"))
			yes = 1;
	free(cmd);
	free(path);
	return yes;
}

static void kill_tracked(void)
{
	for (int i = 0; i < n_tracked; i++)
		if (tracked[i] > 0 && kill(tracked[i], 0) == 0 && ours(tracked[i])) {
			kill(-tracked[i], SIGKILL);
			kill(tracked[i], SIGKILL);
		}
}

void h_track_pid(pid_t pid)
{
	if (!n_tracked)
		atexit(kill_tracked);
	for (int i = 0; i < n_tracked; i++)
		if (tracked[i] == pid)
			return;
	if (n_tracked < MAX_TRACKED)
		tracked[n_tracked++] = pid;
}

void h_broker_up(struct h_broker *b, const char *pki)
{
	h_broker_start(b, pki);
	h_track_pid(b->pid);
}

void h_bridge_init(struct h_bridge *br, const struct h_broker *b, const char *store,
                   const char *tag)
{
	memset(br, 0, sizeof(*br));
	br->broker = b;
	br->dir = h_tmpdir(tag ? tag : "bridge");
	br->log = h_strf("%s/bridge.log", br->dir);
	br->store = store ? strdup(store) : h_strf("sqlite:%s/outpost.db", br->dir);
	br->client_id = h_strf("bridge-%s", strrchr(br->dir, '/') + 1);
}

void h_bridge_arg(struct h_bridge *br, const char *arg)
{
	if (br->n_extra >= 15)
		abort();
	br->extra[br->n_extra++] = strdup(arg);
}

void h_bridge_args_clear(struct h_bridge *br)
{
	for (int i = 0; i < br->n_extra; i++)
		free(br->extra[i]);
	br->n_extra = 0;
}

int h_bridge_log_count(struct h_bridge *br, const char *needle)
{
	return h_count_in_file(br->log, needle);
}

void h_bridge_log_via_pipe(struct h_bridge *br)
{
	br->log_pipe = 1;
}

/* The cat of h_bridge_log_via_pipe ends when the bridge closed its end of the pipe. */
static void reap_cat(struct h_bridge *br)
{
	if (br->cat_pid > 0 && h_wait_exit(br->cat_pid, 5000) < 0)
		h_stop(br->cat_pid, 1000);
	br->cat_pid = 0;
}

void h_bridge_start(struct h_bridge *br)
{
	char *argv[40];
	int n = 0, before = h_bridge_log_count(br, "connected to");
	argv[n++] = h_strf("%s/bridge/outpost-bridge", h_build_dir());
	argv[n++] = h_strf("--pki-dir=%s", br->broker->pki);
	argv[n++] = h_strf("--broker-port=%d", br->broker->internal_port);
	argv[n++] = h_strf("--client-id=%s", br->client_id);
	argv[n++] = h_strf("--store=%s", br->store);
	argv[n++] = h_strf("--health-interval=1s");
	argv[n++] = h_strf("--stats-interval=%s",
	                   getenv("H_BRIDGE_STATS") ? getenv("H_BRIDGE_STATS") : "0");
	argv[n++] = h_strf("--retry-max=1s");
	for (int i = 0; i < br->n_extra; i++)
		argv[n++] = strdup(br->extra[i]);
	argv[n] = NULL;
	char *env[] = {NULL}, *out = strdup(br->log);
	if (br->log_pipe) {
		free(out);
		out = h_strf("%s/bridge.fifo", br->dir);
		if (mkfifo(out, 0600) && errno != EEXIST)
			abort();
		char *cat[] = {"cat", out, NULL};
		br->cat_pid = h_spawn(cat, NULL, br->log);
	}
	br->pid = h_spawn(argv, env, out);
	free(out);
	h_track_pid(br->pid);
	for (int i = 0; i < n; i++)
		free(argv[i]);
	long long end = h_now_ms() + 15000;
	while (h_now_ms() < end) {
		if (h_bridge_log_count(br, "connected to") > before) {
			h_sleep_ms(100); /* let the SUBACKs arrive */
			return;
		}
		if (h_wait_exit(br->pid, 0) >= 0)
			break;
		h_sleep_ms(20);
	}
	char *log = h_read_file(br->log, NULL);
	fprintf(stderr, "outpost-bridge did not connect; log %s:\n%s\n", br->log, log ? log : "");
	abort();
}

int h_bridge_stop(struct h_bridge *br)
{
	int rc = br->pid > 0 ? h_stop(br->pid, 30000) : -2;
	br->pid = 0;
	reap_cat(br);
	return rc;
}

void h_bridge_kill(struct h_bridge *br)
{
	if (br->pid > 0) {
		kill(br->pid, SIGKILL);
		h_wait_exit(br->pid, 5000);
	}
	br->pid = 0;
	reap_cat(br);
}

void h_bridge_free(struct h_bridge *br)
{
	if (br->pid > 0)
		h_bridge_stop(br);
	for (int i = 0; i < br->n_extra; i++)
		free(br->extra[i]);
	free(br->dir);
	free(br->log);
	free(br->store);
	free(br->client_id);
	memset(br, 0, sizeof(*br));
}

int64_t h_store_i64(const char *url, const char *sql, int nargs, ...)
{
	struct store *s = NULL;
	struct store_stmt *st = NULL;
	struct store_opts o = STORE_OPTS_INIT;
	char err[STORE_ERR_MAX];
	va_list ap;
	o.create = 0;
	if (store_open(url, &o, &s, err)) {
		fprintf(stderr, "h_store_i64: %s\n", err);
		abort();
	}
	if (store_prepare(s, sql, &st)) {
		fprintf(stderr, "h_store_i64: %s: %s\n", sql, store_errmsg(s));
		abort();
	}
	va_start(ap, nargs);
	for (int i = 0; i < nargs; i++)
		store_bind_i64(st, i + 1, va_arg(ap, int64_t));
	va_end(ap);
	int rc = store_step(st);
	if (rc < 0) {
		fprintf(stderr, "h_store_i64: %s: %s\n", sql, store_errmsg(s));
		abort();
	}
	int64_t v = rc == 1 ? store_col_i64(st, 0) : -1;
	store_stmt_free(st);
	store_close(s);
	return v;
}

int64_t h_store_wait_i64(const char *url, const char *sql, enum h_until until, int64_t want,
                         int timeout_ms)
{
	long long end = h_now_ms() + timeout_ms;
	for (;;) {
		int64_t v = h_store_i64(url, sql, 0);
		if (until == H_EQUAL ? v == want : v >= want)
			return v;
		if (h_now_ms() >= end)
			return v;
		h_sleep_ms(50);
	}
}

int h_ctl(const char *url, const char *args, char **out)
{
	char *cmd = h_strf("%s/bridge/outpostctl --store=%s %s", h_build_dir(), url, args);
	int rc = h_sh(cmd, out, 60);
	free(cmd);
	return rc;
}

void h_check_simdev(const char *url, struct h_simdev *d, const struct h_simdev_opts *o)
{
	struct h_simdev_stats st;
	h_simdev_stats(d, &st);
	char *q = h_strf("SELECT id FROM devices WHERE device_id = '%s'", o->id);
	int64_t dev = h_store_i64(url, q, 0);
	free(q);
	cr_assert_gt(dev, 0, "%s not in the store", o->id);
	int64_t n_sent = 0, sum_seq = 0, n_dropped = 0, last = 0;
	for (int k = 0; k < st.produced; k++) {
		int sent;
		uint64_t seq = h_simdev_batch(d, k, &sent);
		if (sent) {
			n_sent++;
			sum_seq += (int64_t)seq;
		} else {
			n_dropped++;
		}
		last = (int64_t)seq;
	}
	int64_t per = (int64_t)o->rows * o->cols;
	cr_expect_eq(h_store_i64(url,
	                         "SELECT COUNT(*) FROM envelopes WHERE device = ? AND kind = 2", 1,
	                         dev),
	             n_sent, "%s: batches stored", o->id);
	cr_expect_eq(
	    h_store_i64(url,
	                "SELECT COALESCE(SUM(seq), 0) FROM envelopes WHERE device = ? AND kind = 2",
	                1, dev),
	    sum_seq, "%s: seqs stored", o->id);
	cr_expect_eq(h_store_i64(url, "SELECT COUNT(*) FROM readings WHERE device = ?", 1, dev),
	             n_sent * per, "%s: readings stored", o->id);
	cr_expect_eq(
	    h_store_i64(url, "SELECT COUNT(DISTINCT seq) FROM readings WHERE device = ?", 1, dev),
	    n_sent, "%s: batches with readings", o->id);
	cr_expect_eq(
	    h_store_i64(url,
	                "SELECT COUNT(*) FROM readings r JOIN metrics m ON m.id = r.metric WHERE"
	                " r.device = ? AND (ABS(r.value - ((r.seq % 1000000) + ((r.ts - ? -"
	                " r.seq * 1000) / 10) * 0.25 + (CAST(SUBSTR(m.name, 2) AS INTEGER) - 1) *"
	                " 0.001)) > 0.0000001 OR r.ts - ? - r.seq * 1000 >= ? * 10)",
	                4, dev, o->t0_ms, o->t0_ms, (int64_t)o->rows),
	    0, "%s: readings with a wrong value or time", o->id);
	cr_expect_eq(h_store_i64(url, "SELECT frontier FROM devices WHERE id = ?", 1, dev), last,
	             "%s: frontier", o->id);
	cr_expect_eq(
	    h_store_i64(
	        url,
	        "SELECT COALESCE(SUM(count), 0) FROM gaps WHERE device = ? AND reason = 'dropped'",
	        1, dev),
	    n_dropped, "%s: dropped batches recorded", o->id);
	cr_expect_eq(h_store_i64(url,
	                         "SELECT COUNT(*) FROM gaps WHERE device = ? AND reason = "
	                         "'missing' AND resolved_at IS NULL",
	                         1, dev),
	             0, "%s: open missing gaps", o->id);
}

void h_sqlite_lock(void *lock)
{
	struct h_sqlite_lock *l = lock;
	/* sqlite3 says it holds the lock through a child process: its own output to a file is
	 * buffered until it exits */
	char *sleep = h_strf(".shell sleep %d", l->hold_s ? l->hold_s : 5);
	char *argv[] = {"sqlite3", l->db, ".timeout 10000", "BEGIN EXCLUSIVE;", ".shell echo locked",
	                sleep, "COMMIT;", NULL};
	char *log = h_strf("%s.lock.log", l->db);
	l->pid = h_spawn(argv, NULL, log);
	cr_assert(h_log_wait(log, "locked", 1, 10000), "sqlite3 did not take the lock: %s", log);
	free(log);
	free(sleep);
}

void h_sqlite_unlock(void *lock)
{
	struct h_sqlite_lock *l = lock;
	cr_expect_eq(h_wait_exit(l->pid, (l->hold_s ? l->hold_s : 5) * 1000 + 10000), 0,
	             "sqlite3 holding the lock");
}
