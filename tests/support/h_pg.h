/* h_pg.h - a throwaway PostgreSQL cluster for tests: initdb + pg_ctl under the build
 * directory, on a free loopback port and a private unix socket directory. initdb and postgres
 * refuse to run as root, so as root they run as the `postgres` system user. */
#ifndef H_PG_H
#define H_PG_H

#include <stdbool.h>

struct h_pg {
	char *dir;  /* everything lives here */
	char *data; /* PGDATA */
	char *log;
	char *url; /* postgresql://postgres@127.0.0.1:PORT/postgres */
	int port;
	bool running;
	/* Set before the first start (root only): the server runs in a mount namespace of its
	 * own, with a tmpfs of this many MiB at <dir>/small (postgres's, for a tablespace) that
	 * goes away with the server, even if the test dies. A restart mounts an empty one. */
	int small_disk_mb;
};

/* true if the PostgreSQL server binaries are installed. */
bool h_pg_available(void);

/* Create a cluster (first call on pg) and start it; aborts with the log on failure. Clusters
 * left running are stopped when the test process exits, also when it is killed (a timeout):
 * a watcher process outlives it for that. */
void h_pg_start(struct h_pg *pg);

/* Run a shell command (no quotes, $, backquotes or backslashes) in the server's mount namespace (where <dir>/small
 * is mounted); returns its exit status. */
int h_pg_in_server_ns(struct h_pg *pg, const char *cmd);

/* Stop (fast shutdown); the data stays for a restart with h_pg_start. */
void h_pg_stop(struct h_pg *pg);

/* Stop and remove everything. */
void h_pg_free(struct h_pg *pg);

/* Run SQL with psql against the cluster; returns psql's exit status, output in *out (caller
 * frees) when out is not NULL. sql must not contain single quotes. */
int h_pg_sql(struct h_pg *pg, const char *sql, char **out);

#endif
