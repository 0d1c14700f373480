/* h_pg.c - throwaway PostgreSQL clusters for the tests (see h_pg.h). */
#include <fcntl.h>
#include <glob.h>
#include <pwd.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "h_pg.h"
#include "harness.h"

static const char *bindir(void)
{
	static char dir[256];
	if (dir[0])
		return dir;
	glob_t g;
	if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0 && g.gl_pathc) {
		/* The highest version sorts last. */
		snprintf(dir, sizeof(dir), "%s", g.gl_pathv[g.gl_pathc - 1]);
		*strrchr(dir, '/') = '\0';
	}
	globfree(&g);
	return dir;
}

bool h_pg_available(void)
{
	char *p = h_strf("%s/pg_ctl", bindir());
	bool ok = bindir()[0] && access(p, X_OK) == 0;
	free(p);
	return ok;
}

/* Prefix running a command as the postgres user when we are root. */
static const char *as_pg(void)
{
	return getuid() == 0 ? "runuser -u postgres -- " : "";
}

#define TMP_CLUSTER "/tmp/outpost-test-pg-"

/* The cluster lives under the build directory unless the postgres user cannot reach it (as
 * root, a clone under /root, which is 0700): then under /tmp. Returns a new directory. */
static char *cluster_dir(void)
{
	char *dir = h_tmpdir("pg");
	if (getuid() != 0)
		return dir;
	char *cmd = h_strf("chown postgres %s && runuser -u postgres -- test -w %s", dir, dir);
	int rc = h_sh(cmd, NULL, 30);
	free(cmd);
	if (rc == 0)
		return dir;
	rmdir(dir);
	free(dir);
	dir = strdup(TMP_CLUSTER "XXXXXX");
	if (!dir || !mkdtemp(dir))
		abort();
	chmod(dir, 0755);
	fprintf(stderr, "h_pg: the postgres user cannot reach the build directory; cluster in %s\n",
		dir);
	return dir;
}

static void chown_pg(const char *path)
{
	if (getuid() != 0)
		return;
	struct passwd *pw = getpwnam("postgres");
	if (!pw || chown(path, pw->pw_uid, pw->pw_gid) != 0) {
		fprintf(stderr, "h_pg: cannot give %s to the postgres user\n", path);
		abort();
	}
}

/* Clusters still running when the test process exits (an assertion aborted the test before
 * its cleanup) are stopped at exit. */
#define MAX_CLUSTERS 8
static char *clusters[MAX_CLUSTERS];
static int n_clusters;

static void stop_clusters(void)
{
	for (int i = 0; i < n_clusters; i++) {
		char *pid = h_strf("%s/postmaster.pid", clusters[i]);
		if (access(pid, F_OK) == 0) {
			char *cmd = h_strf("%s%s/pg_ctl -D %s -m immediate stop", as_pg(), bindir(),
			                   clusters[i]);
			h_sh(cmd, NULL, 30);
			free(cmd);
		}
		free(pid);
		/* a cluster outside the build directory (cluster_dir) is not left behind */
		if (!strncmp(clusters[i], TMP_CLUSTER, strlen(TMP_CLUSTER))) {
			char *cmd = h_strf("rm -rf %.*s", (int)(strrchr(clusters[i], '/') - clusters[i]),
			                   clusters[i]);
			h_sh(cmd, NULL, 60);
			free(cmd);
		}
	}
}

/* A process killed outright (a test's timeout: criterion and ctest send SIGKILL) runs no atexit
 * handler: a watcher outlives it and stops its clusters once the pipe it reads from, whose only
 * writer is the test process, reaches its end. `setsid -f` puts the watcher in a session of its
 * own, adopted by init (ctest kills the test's process tree); posix_spawn, not fork, as the test
 * process may have threads. It reads the data directories, one a line, and holds no other
 * descriptor of the test's. */
static const char watch_script[] =
    "dirs=$(cat); printf '%s\\n' \"$dirs\" | while IFS= read -r d; do"
    " [ -n \"$d\" ] || continue;"
    " if [ -f \"$d/postmaster.pid\" ]; then $0 \"$1/pg_ctl\" -D \"$d\" -m immediate stop; fi;"
    " case $d in " TMP_CLUSTER "*) rm -rf \"${d%/data}\";; esac; done";
static int watch_fd = -1;

static void watch_start(void)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0) {
		fprintf(stderr, "h_pg: no watcher for the clusters (pipe)\n");
		return;
	}
	const char *runuser = getuid() == 0 ? "runuser -u postgres --" : "env";
	char *argv[] = {"setsid", "-f", "sh", "-c", (char *)watch_script, (char *)runuser,
	                (char *)bindir(), NULL};
	posix_spawn_file_actions_t fa;
	pid_t pid = -1;
	int st = -1, rc = posix_spawn_file_actions_init(&fa);
	if (!rc && !(rc = posix_spawn_file_actions_adddup2(&fa, p[0], 0)) &&
	    !(rc = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0)) &&
	    !(rc = posix_spawn_file_actions_adddup2(&fa, 1, 2)) &&
	    !(rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)))
		rc = posix_spawnp(&pid, "setsid", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	if (!rc && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		watch_fd = p[1];
		return;
	}
	close(p[1]);
	fprintf(stderr, "h_pg: no watcher for the clusters (setsid -f: %s)\n",
	        rc ? strerror(rc) : "failed");
}

static void track(const char *data)
{
	if (!n_clusters) {
		atexit(stop_clusters);
		watch_start();
	}
	for (int i = 0; i < n_clusters; i++)
		if (!strcmp(clusters[i], data))
			return;
	if (n_clusters < MAX_CLUSTERS)
		clusters[n_clusters++] = strdup(data);
	if (watch_fd >= 0 && dprintf(watch_fd, "%s\n", data) < 0)
		fprintf(stderr, "h_pg: the watcher does not know %s\n", data);
}

void h_pg_start(struct h_pg *pg)
{
	char *out = NULL, *cmd;
	bool first_start = !pg->dir; /* the port is not known to the caller yet */
	if (!pg->dir) {
		if (!h_pg_available()) {
			fprintf(stderr, "h_pg: PostgreSQL server binaries not found\n");
			abort();
		}
		pg->dir = cluster_dir();
		chown_pg(pg->dir);
		pg->data = h_strf("%s/data", pg->dir);
		pg->log = h_strf("%s/postgres.log", pg->dir);
		pg->port = h_free_port();
		pg->url = h_strf("postgresql://postgres@127.0.0.1:%d/postgres", pg->port);
		cmd = h_strf("%s%s/initdb -D %s -A trust -U postgres -E UTF8 --no-sync", as_pg(),
		             bindir(), pg->data);
		if (h_sh(cmd, &out, 120) != 0) {
			fprintf(stderr, "h_pg: %s failed:\n%s\n", cmd, out);
			abort();
		}
		free(out);
		free(cmd);
		track(pg->data); /* before the start: a test killed while it waits is covered too */
	}
	/* A port from h_free_port can still be taken by a test running alongside before the
	 * server binds it: a first start is retried on another port. */
	for (int attempt = 1;; attempt++) {
		cmd = h_strf("%s%s/pg_ctl -D %s -l %s -w -t 60 -o \"-p %d -k %s -c "
			     "listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c "
			     "max_connections=50\" start",
			     as_pg(), bindir(), pg->data, pg->log, pg->port, pg->dir);
		if (pg->small_disk_mb) {
			/* the mount in a namespace of its own, then cmd (split by h_sh's shell, its
			 * quotes and all) run there as the inner shell's arguments */
			char *ns = h_strf("mkdir -p %s/small && unshare -m --propagation private sh -c"
			                  " \"mount -t tmpfs -o size=%dm,mode=0700 tmpfs %s/small &&"
			                  " chown postgres %s/small && exec \\\"\\$@\\\"\" sh %s",
			                  pg->dir, pg->small_disk_mb, pg->dir, pg->dir, cmd);
			free(cmd);
			cmd = ns;
		}
		size_t log_from = h_file_size(pg->log);
		int rc = h_sh(cmd, &out, 90);
		if (rc == 0)
			break;
		char *log = h_read_file_from(pg->log, log_from);
		if (!first_start || attempt == 3 || !log || !strstr(log, "Address already in use")) {
			fprintf(stderr, "h_pg: %s failed:\n%s\n%s\n", cmd, out, log ? log : "");
			abort();
		}
		fprintf(stderr, "h_pg: port %d was taken, starting again on another\n", pg->port);
		free(log);
		free(out);
		free(cmd);
		pg->port = h_free_port();
		free(pg->url);
		pg->url = h_strf("postgresql://postgres@127.0.0.1:%d/postgres", pg->port);
	}
	free(out);
	free(cmd);
	pg->running = true;
}

int h_pg_in_server_ns(struct h_pg *pg, const char *cmd)
{
	char *pidfile = h_strf("%s/postmaster.pid", pg->data), *text = h_read_file(pidfile, NULL);
	int pid = text ? atoi(text) : 0, rc = -1;
	if (pid > 0) {
		char *ns = h_strf("nsenter -t %d -m sh -c \"%s\"", pid, cmd), *out = NULL;
		rc = h_sh(ns, &out, 60);
		free(out);
		free(ns);
	}
	free(text);
	free(pidfile);
	return rc;
}

void h_pg_stop(struct h_pg *pg)
{
	if (!pg->running)
		return;
	char *cmd = h_strf("%s%s/pg_ctl -D %s -w -t 60 -m fast stop", as_pg(), bindir(), pg->data);
	h_sh(cmd, NULL, 90);
	free(cmd);
	pg->running = false;
}

void h_pg_free(struct h_pg *pg)
{
	h_pg_stop(pg);
	if (pg->dir) {
		char *cmd = h_strf("rm -rf %s", pg->dir);
		h_sh(cmd, NULL, 60);
		free(cmd);
	}
	free(pg->dir);
	free(pg->data);
	free(pg->log);
	free(pg->url);
	pg->dir = pg->data = pg->log = pg->url = NULL;
}

int h_pg_sql(struct h_pg *pg, const char *sql, char **out)
{
	char *cmd = h_strf("psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p %d -U postgres -d "
	                   "postgres -c \"%s\"",
	                   pg->port, sql);
	int rc = h_sh(cmd, out, 60);
	free(cmd);
	return rc;
}
