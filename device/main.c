/* main.c - outpost-device: the telemetry agent of one field device. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "dev_agent.h"
#include "dev_config.h"
#include "dev_link.h"
#include "olog.h"

/* Set by TERM, INT and HUP whenever they come, also while the agent is being created: a stop
 * asked for during start-up (spool recovery, the certificate checks) is not lost. */
static volatile sig_atomic_t stopping;
static struct dev_agent *agent;
/* Where our binary was at start, for a `restart` task: /proc/self/exe goes on naming the inode
 * we run from, the old one after a package update renamed a new binary over it. Empty when it
 * could not be read. */
static char self_path[PATH_MAX];

static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
	if (agent)
		dev_agent_stop(agent);
}

static void on_reconnect(int sig)
{
	(void)sig;
	if (agent)
		dev_agent_reconnect(agent);
}

/* A line of config.override the agent ignores (dev_config_load_overrides). */
static void on_override_ignored(void *arg, const char *msg)
{
	(void)arg;
	olog(OLOG_WARN, "%s", msg);
}

static void handled_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
}

/* The process's status. A stop that gave up on a connection attempt (dev_link_free) left its
 * thread in a name lookup: exit() would run the TLS library's cleanup under it. */
static int finish(int status)
{
	if (dev_link_any_abandoned()) {
		fflush(NULL);
		_exit(status);
	}
	return status;
}

/* Before anything that takes time: a USR1 (or a HUP, whose default is to die) coming while the
 * agent starts would otherwise kill it, and a TERM would lose what it was doing. HUP stops
 * like TERM: the agent has no configuration to reload, and a closed terminal must not cost the
 * partial batch. */
static void install_signal_handlers(void)
{
	struct sigaction sa = {0};
	sigset_t handled;
	sigemptyset(&sa.sa_mask);
	/* a blocking read under way goes on (a config file on a FIFO or a slow mount read
	 * "read error" at a HUP); the main loop's poll and the waits are not restarted, so the
	 * stop is still seen at once */
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_reconnect;
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN); /* a file size limit (ulimit -f) is a full disk, not a crash */
	/* a `restart` task executes us with them blocked (main): one that came in between has
	 * been kept pending, and is taken now */
	handled_signals(&handled);
	sigprocmask(SIG_UNBLOCK, &handled, NULL);
}

/* Descriptors 0-2 open, on /dev/null where whatever started us left one closed: the next file
 * opened would take its number (an eventfd, a spool segment) and the log lines would go into it.
 * 0, or -1 if one is closed and /dev/null cannot be opened. */
static int fill_std_fds(void)
{
	for (;;) {
		int fd = open("/dev/null", O_RDWR);
		if (fd > 2) {
			close(fd);
			return 0;
		}
		if (fd < 0) {
			for (int i = 0; i < 3; i++)
				if (fcntl(i, F_GETFD) < 0)
					return -1;
			return 0;
		}
	}
}

/* The path of our binary, as the kernel names it now (before anything could replace it); a
 * binary already replaced is named with " (deleted)" after it: the path is what a restart wants
 * then too. */
static void remember_self_path(void)
{
	static const char deleted[] = " (deleted)";
	ssize_t n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
	if (n <= 0 || self_path[0] != '/') {
		self_path[0] = '\0';
		return;
	}
	self_path[n] = '\0';
	size_t dl = sizeof(deleted) - 1;
	if ((size_t)n > dl && !strcmp(self_path + n - dl, deleted))
		self_path[n - dl] = '\0';
}

/* Execute the binary again, with the same arguments: the file at the path it was started from
 * (a new version, after a package update), else the one we run from. Returns (logged) only
 * when both failed. */
static void exec_self(char **argv)
{
	if (self_path[0]) {
		execv(self_path, argv);
		olog(OLOG_WARN, "restart: cannot execute %s (%s): executing /proc/self/exe, the "
		     "binary this agent was started from", self_path, strerror(errno));
	}
	execv("/proc/self/exe", argv);
	olog(OLOG_ERROR, "restart: cannot execute /proc/self/exe (%s): the agent goes on in this "
	     "process, without restarting", strerror(errno));
}

static void usage(FILE *out)
{
	fprintf(out, "Usage: outpost-device [--config FILE] [--OPTION VALUE ...]\n"
		     "Samples collectors, keeps an encrypted spool, and uploads signed telemetry to the\n"
		     "Outpost broker over WSS (443) or MQTTS (8883). Never accepts a connection.\n"
		     "Signals: TERM/INT/HUP stop cleanly, USR1 reconnects now.\n"
		     "Exit: 0 ok, 1 runtime failure, 2 usage or configuration error.\n\n"
		     "  --config FILE            settings file [" DEV_DEFAULT_CONFIG "]\n"
		     "  --help, --version\n");
	dev_config_help(out);
}

int main(int argc, char **argv)
{
	struct dev_config cfg;
	char err[CFG_ERR_MAX] = "";
	if (fill_std_fds())
		return 1; /* nowhere to say it */
	remember_self_path();
#ifdef __GLIBC__
	/* Paho's two threads would each get a malloc arena of their own (~0.4 MB resident at the
	 * reference profile) for a few allocations per message: one arena is plenty here. */
	mallopt(M_ARENA_MAX, 1);
#endif
#ifdef __linux__
	/* a `restart` task whose binary path failed re-executes /proc/self/exe, which would
	 * rename us "exe" for ps and pgrep; keep the name operators look for */
	prctl(PR_SET_NAME, "outpost-device", 0, 0, 0);
#endif
	/* ignored, as whatever started us may have left it (it survives exec), the kernel would
	 * reap the exec collector's command and its exit status would be lost */
	signal(SIGCHLD, SIG_DFL);
	install_signal_handlers();
	int rc = dev_config_parse(&cfg, argc, argv, err);

	if (rc == 1) {
		usage(stdout);
		return 0;
	}
	if (rc == 2) {
		printf("outpost-device %s\n", OUTPOST_VERSION);
		return 0;
	}
	/* the configuration alone first, so that its errors name it; then the remote overrides,
	 * which never stop the agent (what does not fit is ignored, with a warning) */
	if (rc || dev_config_check(&cfg, err)) {
		fprintf(stderr, "outpost-device: %s\n", err[0] ? err : "invalid configuration");
		dev_config_free(&cfg);
		return 2;
	}
	olog_init("outpost-device", cfg.id, (enum olog_level)cfg.log_level);
	if (dev_config_load_overrides(&cfg, on_override_ignored, NULL, err)) {
		fprintf(stderr, "outpost-device: %s\n", err);
		dev_config_free(&cfg);
		return 2;
	}
	olog_set_level((enum olog_level)cfg.log_level);

	/* once more after a `restart` task whose execv failed: a device without a service manager
	 * to start it again would be left without an agent */
	for (;;) {
		rc = dev_agent_new(&cfg, &agent, err, sizeof(err));
		if (rc) {
			fprintf(stderr, "outpost-device: %s\n", err);
			dev_config_free(&cfg);
			return finish(rc);
		}
		if (stopping) /* asked to stop while starting: nothing was sampled yet */
			olog(OLOG_INFO, "stopping: asked to before the agent started");
		else
			rc = dev_agent_run(agent);
		struct dev_agent *a = agent;
		uint64_t restart_task = a ? dev_agent_restart_task(a) : 0;
		agent = NULL;
		dev_agent_free(a);
		if (rc != DEV_AGENT_RESTART)
			break;
		/* A `restart` task: become a fresh copy of ourselves, same arguments; unless a stop
		 * came while it was carried out (a service manager stopping us would see the agent
		 * come back, and kill it). From here on the signals wait: one that comes before
		 * execv stays pending through it, and the new image takes it as it starts, where
		 * the default action (the handlers do not survive execv) would have killed it. */
		sigset_t handled;
		handled_signals(&handled);
		sigprocmask(SIG_BLOCK, &handled, NULL);
		if (stopping) {
			olog(OLOG_INFO, "not restarting: asked to stop meanwhile");
			dev_config_free(&cfg);
			return finish(0);
		}
		/* the next agent reports the task succeeded only if it finds this */
		if (dev_agent_restart_mark(&cfg, restart_task))
			olog(OLOG_WARN, "restart: cannot record task %llu in %s/restarting (%s): it "
			     "will be reported as failed", (unsigned long long)restart_task,
			     cfg.state_dir, strerror(errno));
		exec_self(argv);
		/* the agent of this process reports the task failed */
		dev_agent_restart_unmark(&cfg);
		sigprocmask(SIG_UNBLOCK, &handled, NULL);
	}
	dev_config_free(&cfg);
	return finish(rc ? 1 : 0);
}
