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
};

/* true if the PostgreSQL server binaries are installed. */
bool h_pg_available(void);

/* Create a cluster (first call on pg) and start it; aborts with the log on failure. */
void h_pg_start(struct h_pg *pg);

/* Stop (fast shutdown); the data stays for a restart with h_pg_start. */
void h_pg_stop(struct h_pg *pg);

/* Stop and remove everything. */
void h_pg_free(struct h_pg *pg);

/* Run SQL with psql against the cluster; returns psql's exit status, output in *out (caller
 * frees) when out is not NULL. sql must not contain single quotes. */
int h_pg_sql(struct h_pg *pg, const char *sql, char **out);

#endif
