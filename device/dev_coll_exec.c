/* dev_coll_exec.c - runs a configured command each sample and reads "name value [unit]" lines.
 * Bounded: timeout (the whole process group is killed), 64 KiB of output, 256 readings. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "otime.h"
#include "dev_collect.h"
#include "wire_limits.h"

#define EXEC_MAX_OUTPUT (64 * 1024)
#define EXEC_MAX_READINGS 256
#define EXEC_MAX_VALUE 63 /* characters of a value: more digits than a double holds */

/* The sscanf widths in parse_output: one more than each field may hold. */
_Static_assert(WIRE_MAX_METRIC_NAME == 128 && EXEC_MAX_VALUE == 63 && WIRE_MAX_UNIT == 32,
	       "update the widths of the format in parse_output");

extern char **environ;

struct exec {
	char *command;
	int64_t timeout_ms;
	const volatile sig_atomic_t *stop;
	char **env; /* conf->exec_env copied ("NAME=value"), n_env of them */
	size_t n_env;
	/* A command that had not ended 5 s after its output or the SIGKILL (stuck in the kernel,
	 * D in ps): reaped at a later sample, and no other started until then, so that stuck
	 * processes do not pile up one per sample. 0 if none. */
	pid_t pending;
	char why[160];
};

static void exec_close(void *state);

static int exec_open(const struct dev_collect_conf *conf, void **state)
{
	if (!conf->exec_command || !*conf->exec_command)
		return -1;
	struct exec *e = calloc(1, sizeof(*e));
	if (!e || !(e->command = strdup(conf->exec_command)))
		goto fail;
	while (conf->exec_env && conf->exec_env[e->n_env])
		e->n_env++;
	if (e->n_env && !(e->env = calloc(e->n_env, sizeof(*e->env))))
		goto fail;
	for (size_t i = 0; i < e->n_env; i++)
		if (!(e->env[i] = strdup(conf->exec_env[i])))
			goto fail;
	e->timeout_ms = conf->exec_timeout_ms > 0 ? conf->exec_timeout_ms : 5000;
	e->stop = conf->stop;
	*state = e;
	return 0;
fail:
	exec_close(e);
	return -1;
}

/* 1 if the environment entry var ("NAME=value") names a variable e->env sets. */
static int env_replaced(const struct exec *e, const char *var)
{
	size_t n = strcspn(var, "=");
	for (size_t i = 0; i < e->n_env; i++)
		if (!strncmp(e->env[i], var, n) && e->env[i][n] == '=')
			return 1;
	return 0;
}

/* The command's environment: the agent's with e->env on top; free the array (not the
 * strings) unless it is environ. NULL when out of memory. */
static char **command_env(const struct exec *e)
{
	size_t n = 0, k = 0;
	if (!e->n_env)
		return environ;
	while (environ && environ[n])
		n++;
	char **env = calloc(n + e->n_env + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!env_replaced(e, environ[i]))
			env[k++] = environ[i];
	for (size_t i = 0; i < e->n_env; i++)
		env[k++] = e->env[i];
	return env;
}

static int parse_output(char *buf, dev_sink_fn sink, void *ctx, const char **why)
{
	int n = 0, bad = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		/* a byte more than each field may hold: a longer token is seen and refuses the
		 * line, instead of being cut and its tail read as the next field */
		char name[WIRE_MAX_METRIC_NAME + 2], val[EXEC_MAX_VALUE + 2];
		char unit[WIRE_MAX_UNIT + 2] = "", extra;
		char *end;
		while (*line == ' ' || *line == '\t')
			line++;
		if (!*line || *line == '#')
			continue;
		int k = sscanf(line, "%129s %64s %33s %c", name, val, unit, &extra);
		if (k < 2 || k > 3 || strlen(name) > WIRE_MAX_METRIC_NAME ||
		    strlen(val) > EXEC_MAX_VALUE || strlen(unit) > WIRE_MAX_UNIT) {
			bad++;
			continue;
		}
		double v = strtod(val, &end);
		if (*end || n >= EXEC_MAX_READINGS || sink(ctx, name, unit, v) != 0) {
			bad++;
			continue;
		}
		n++;
	}
	if (bad) {
		*why = "output lines that are not 'name value [unit]' (a field too long, or too"
		       " many lines) were ignored";
		return -1;
	}
	return 0;
}

/* 0 once the command left pending has ended (or was reaped elsewhere); -1 with why while it
 * has not. */
static int reap_pending(struct exec *e, const char **why)
{
	int status;
	pid_t w;
	if (!e->pending)
		return 0;
	while ((w = waitpid(e->pending, &status, WNOHANG)) < 0 && errno == EINTR)
		;
	if (w == e->pending || w < 0) {
		e->pending = 0;
		return 0;
	}
	kill(-e->pending, SIGKILL); /* its group: what it left may have got going again */
	snprintf(e->why, sizeof(e->why), "the command started earlier (pid %d) has still not ended "
		 "(stuck in the kernel?): no other is started until it does", (int)e->pending);
	*why = e->why;
	return -1;
}

static int exec_sample(void *state, dev_sink_fn sink, void *ctx, const char **why)
{
	struct exec *e = state;
	int pipefd[2];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	pid_t pid;
	char *argv[] = {"/bin/sh", "-c", e->command, NULL};
	char *buf = NULL;
	size_t len = 0;
	int rc = -1, status = 0, reaped = 0, wait_errno = 0;

	if (reap_pending(e, why))
		return -1;
	char **env = command_env(e);
	if (!env) {
		*why = "out of memory";
		return -1;
	}
	if (pipe2(pipefd, O_CLOEXEC) != 0) {
		if (env != environ)
			free(env);
		*why = "pipe failed";
		return -1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	/* nothing else of the agent's: Paho's broker socket is not close-on-exec, and neither the
	 * command nor what it leaves running may hold the live TLS connection */
	int sp = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
	                                    POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&attr, 0);
	sigset_t none, dflt;
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&attr, &none);
	/* the agent ignores these; the command gets the defaults (`yes | head` ends quietly) */
	sigemptyset(&dflt);
	sigaddset(&dflt, SIGPIPE);
	sigaddset(&dflt, SIGXFSZ);
	posix_spawnattr_setsigdefault(&attr, &dflt);
	if (!sp)
		sp = posix_spawn(&pid, argv[0], &fa, &attr, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (env != environ)
		free(env);
	close(pipefd[1]);
	if (sp != 0) {
		close(pipefd[0]);
		*why = "cannot start /bin/sh";
		return -1;
	}
	buf = malloc(EXEC_MAX_OUTPUT + 1);
	int64_t deadline = otime_mono_ms() + e->timeout_ms;
	int timed_out = 0, too_big = 0, stopped = 0;
	while (buf) {
		int64_t left = deadline - otime_mono_ms();
		if (left <= 0) {
			timed_out = 1;
			break;
		}
		if (e->stop && *e->stop) { /* the agent stops: its batch is sealed, not this wait */
			stopped = 1;
			break;
		}
		struct pollfd p = {pipefd[0], POLLIN, 0};
		int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			continue;
		ssize_t n = read(pipefd[0], buf + len, EXEC_MAX_OUTPUT - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == EXEC_MAX_OUTPUT) {
			too_big = 1;
			break;
		}
	}
	close(pipefd[0]);
	if (timed_out || too_big || stopped || !buf)
		kill(-pid, SIGKILL);
	/* the process exits promptly after EOF or SIGKILL; bound the wait anyway */
	for (int i = 0; i < 500; i++) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			reaped = 1;
			break;
		}
		if (w < 0 && errno != EINTR) {
			wait_errno = errno;
			break;
		}
		if (i == 100)
			kill(-pid, SIGKILL);
		usleep(10000);
	}
	if (!reaped && wait_errno != ECHILD)
		e->pending = pid;
	if (!buf)
		*why = "out of memory";
	else if (timed_out)
		*why = "command timed out";
	else if (stopped)
		rc = DEV_COLLECT_CUT_SHORT; /* not a failure of the command */
	else if (too_big)
		*why = "command printed more than 64 KiB";
	else if (!reaped && wait_errno == ECHILD) /* SIGCHLD ignored: the kernel reaped it */
		*why = "command's exit status unknown: it was reaped elsewhere (is SIGCHLD"
		       " ignored?)";
	else if (!reaped)
		*why = "command's exit status unknown: it did not end within 5 s of its output (no "
		       "other is started until it does)";
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		*why = "command exited with an error";
	else {
		buf[len] = '\0';
		rc = parse_output(buf, sink, ctx, why);
	}
	free(buf);
	return rc;
}

static void exec_close(void *state)
{
	struct exec *e = state;
	if (!e)
		return;
	const char *why;
	(void)reap_pending(e, &why); /* one still not ended stays our child until we exit */
	for (size_t i = 0; e->env && i < e->n_env; i++)
		free(e->env[i]);
	free(e->env);
	free(e->command);
	free(e);
}

const struct dev_collector_ops dev_coll_exec = {"exec", exec_open, exec_sample, exec_close};
