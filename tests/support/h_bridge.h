/* h_bridge.h - run the real outpost-bridge (and outpostctl) against a test broker and store,
 * and read the store back for assertions. */
#ifndef H_BRIDGE_H
#define H_BRIDGE_H

#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

struct h_bridge {
	pid_t pid;
	char *dir;
	char *log;
	char *store; /* store URL */
	char *client_id;
	const struct h_broker *broker;
	char *extra[16]; /* extra "--name=value" arguments (owned) */
	int n_extra;
	int log_pipe;  /* h_bridge_log_via_pipe() */
	pid_t cat_pid; /* the cat appending the pipe to log */
};

/* h_broker_start, and make sure the broker dies with the test process even when an assertion
 * aborts the test before its cleanup (bridges started here are tracked the same way). */
void h_broker_up(struct h_broker *b, const char *pki);

/* Kill pid's process group at exit if it is still running. */
void h_track_pid(pid_t pid);

/* Prepare (store: URL, or NULL for sqlite:<dir>/outpost.db); nothing runs yet. */
void h_bridge_init(struct h_bridge *br, const struct h_broker *b, const char *store,
                   const char *tag);

/* Add --arg (e.g. "--quarantine-after=5") for the next start. */
void h_bridge_arg(struct h_bridge *br, const char *arg);

/* Forget the arguments added so far (the next start runs with the harness's own only). */
void h_bridge_args_clear(struct h_bridge *br);

/* From the next start on, the bridge writes its output into a pipe that a `cat` appends to
 * br->log: a file size limit put on the bridge (prlimit --fsize) then does not stop its log. */
void h_bridge_log_via_pipe(struct h_bridge *br);

/* Start and wait until it subscribed (its log says "connected"); aborts after 15 s. */
void h_bridge_start(struct h_bridge *br);

/* SIGTERM and wait; returns the exit status. */
int h_bridge_stop(struct h_bridge *br);

/* SIGKILL, as a crash. */
void h_bridge_kill(struct h_bridge *br);

void h_bridge_free(struct h_bridge *br);

/* Count lines of the bridge log containing needle. */
int h_bridge_log_count(struct h_bridge *br, const char *needle);

/* Run SQL on a store URL and return column 0 of the first row as int64 (-1 if no row);
 * aborts on a store error. Integer arguments: nargs then values. */
int64_t h_store_i64(const char *url, const char *sql, int nargs, ...);

/* Poll sql (no arguments) on url every 50 ms, for at most timeout_ms, until its value is
 * exactly want (H_EQUAL) or at least want (H_AT_LEAST); returns the last value read. */
enum h_until { H_EQUAL, H_AT_LEAST };
int64_t h_store_wait_i64(const char *url, const char *sql, enum h_until until, int64_t want,
                         int timeout_ms);

/* Run outpostctl with args (a shell fragment, no single quotes) on store url; returns its
 * exit status and output (stdout+stderr unless stderr is redirected) in *out. */
int h_ctl(const char *url, const char *args, char **out);

/* Another process (sqlite3) holds the write lock of the SQLite file db for hold_s seconds
 * (0: 5 s), as a stuck writer would: h_sqlite_lock returns once it holds it, h_sqlite_unlock
 * waits for it to let go (at most hold_s + 10 s). Both take a struct h_sqlite_lock (void *: outage callbacks). */
struct h_sqlite_lock {
	char *db;
	pid_t pid;
	int hold_s;
};
void h_sqlite_lock(void *lock);
void h_sqlite_unlock(void *lock);

struct h_simdev;
struct h_simdev_opts;

/* Assert (criterion) that the store at url holds exactly what simulated device d produced:
 * every sent batch once with all its readings and right values, nothing else, dropped
 * batches as known gaps, and the frontier at the last batch. */
void h_check_simdev(const char *url, struct h_simdev *d, const struct h_simdev_opts *o);

#endif
