/* outpostctl.c - the operator CLI on the Outpost store: global options and command dispatch. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "ctl.h"

#ifndef OUTPOSTCTL_DEFAULT_STORE
#define OUTPOSTCTL_DEFAULT_STORE "sqlite:var/local/outpost.db"
#endif
#define CTL_DEFAULT_CONFIG "/etc/outpost/outpostctl.conf"

struct settings {
	char *store;
};

static const struct cfg_opt opts[] = {
    {"store", CFG_STR, offsetof(struct settings, store), 1, 4096, OUTPOSTCTL_DEFAULT_STORE,
     "store URL: sqlite:PATH or postgresql://... (also OUTPOST_STORE)", NULL},
};

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: " CTL_PROG " [--store URL] [--config FILE] COMMAND [ARGS]\n"
	    "The operator's view of an Outpost store (the one outpost-bridge writes).\n\n"
	    "Commands:\n"
	    "  devices [--state S] [--format table|csv|json]\n"
	    "                             every device: state, health, chain, counters (a table\n"
	    "                             shows 1000 rows and says if there are more)\n"
	    "  device show ID             one device: state, rejections by reason, metrics, gaps,\n"
	    "                             recent events\n"
	    "  device quarantine ID [--reason TEXT]\n"
	    "                             drop its messages until released\n"
	    "  device release ID [--reason TEXT]\n"
	    "                             end a quarantine (or a deactivation)\n"
	    "  device revoke ID [--reason TEXT]\n"
	    "                             refuse its key for good (a new key signed by the CA\n"
	    "                             enrols the id again)\n"
	    "                             (a reason: one line of UTF-8, 200 bytes at most)\n"
	    "  readings --device ID [--metric M] [--since T] [--until T] [--limit N]\n"
	    "           [--format csv|json|table]\n"
	    "                             stored readings, oldest first (default csv; a table\n"
	    "                             shows 1000 rows unless --limit says otherwise)\n"
	    "  events [--device ID] [--type T] [--since T] [--limit N] [--format ...]\n"
	    "                             state changes, rejections, gaps, tasks (newest last)\n"
	    "  gaps [--device ID] [--all] [--format ...]\n"
	    "                             missing and dropped seq ranges (--all: also resolved;\n"
	    "                             a table shows 1000 rows and says if there are more)\n"
	    "  prune --before T [--yes]   retention: count (with --yes: delete) readings taken,\n"
	    "                             events logged, gaps resolved and tasks finished before\n"
	    "                             T, in short transactions beside a running bridge; also\n"
	    "                             readings dated in the future, stored before T; T is a\n"
	    "                             day ago at least (90d), a date, @N or now\n"
	    "  task add --device ID --type TYPE [--arg k=v ...] [--expires DURATION]\n"
	    "                             queue a task (ping, set_config, resend, collect_now,\n"
	    "                             restart); prints its id\n"
	    "  task list [--device ID] [--state S] [--limit N] [--format ...]\n"
	    "  task show ID               state, times, arguments and the device's result\n"
	    "  task cancel ID             cancel a task not yet delivered\n"
	    "  decode [--pki DIR] [--cert FILE ...] [--topic T] [FILE]\n"
	    "                             print messages captured with mosquitto_sub -F '%%t %%x'\n"
	    "                             (or one raw payload), verifying signatures when\n"
	    "                             certificates are given; stops at a line over 525312\n"
	    "                             bytes (longer than any message's)\n\n"
	    "Times (T): 2026-11-22T22:00:00Z, 2026-11-22, 90m / 2h / 7d (ago), now, @UNIXSECONDS\n"
	    "(a bare number is none: 90 is refused, write 90d or @90).\n"
	    "Filters (--state, --type) take only the values Outpost writes; others are refused.\n\n"
	    "Options (before or after the command, not as the value of one of its options,\n"
	    "nor after a '--', which ends the options: what follows it is an argument):\n"
	    "  --help, -h               this text\n"
	    "  --version, -V            the version\n"
	    "  --raw                    CSV: text a device sent as stored, control characters\n"
	    "                           included (else shown as \\xNN, \\u00NN, \\u202e...)\n"
	    "  --config FILE, -c FILE   settings file (key: store) [" CTL_DEFAULT_CONFIG
	    " if it exists;\n"
	    "                           also OUTPOST_CONFIG]\n");
	cfg_print_help(out, opts, sizeof(opts) / sizeof(opts[0]), "OUTPOST_");
	fprintf(out, "Exit status: 0 ok, 1 failure (store, not found, refused), 2 usage error.\n");
}

struct ctl_globals {
	char **argv; /* the program, then the global options and their values, for cfg_parse */
	int argc;
	int help, version, settled;
	struct settings set;
};

int ctl_global_opt(struct ctl *c, int argc, char **argv, int *i)
{
	struct ctl_globals *g = c->g;
	const char *a = argv[*i];
	if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
		g->help = 1;
		return 1;
	}
	if (!strcmp(a, "--version") || !strcmp(a, "-V")) {
		g->version = 1;
		return 1;
	}
	if (!strcmp(a, "--raw")) {
		c->raw = 1;
		return 1;
	}
	if (!strcmp(a, "--store") || !strcmp(a, "--config") || !strcmp(a, "-c")) {
		g->argv[g->argc++] = argv[*i];
		if (*i + 1 < argc) /* else cfg_parse says the value is missing */
			g->argv[g->argc++] = argv[++*i];
		return 1;
	}
	if (!strncmp(a, "--store=", 8) || !strncmp(a, "--config=", 9)) {
		g->argv[g->argc++] = argv[*i];
		return 1;
	}
	return 0;
}

int ctl_settle(struct ctl *c)
{
	struct ctl_globals *g = c->g;
	char err[CFG_ERR_MAX] = "";
	if (g->settled)
		return CTL_OK;
	g->settled = 1;
	if (g->help) {
		usage(stdout);
		return CTL_DONE;
	}
	if (g->version) {
		printf(CTL_PROG " %s\n", OUTPOST_VERSION);
		return CTL_DONE;
	}
	if (cfg_parse(opts, sizeof(opts) / sizeof(opts[0]), &g->set, g->argc, g->argv, "OUTPOST_",
	              CTL_DEFAULT_CONFIG, err))
		return ctl_err(CTL_USAGE, "%s", err);
	c->store_url = g->set.store;
	return CTL_OK;
}

int main(int argc, char **argv)
{
	struct ctl_globals g = {.argv = calloc((size_t)argc + 1, sizeof(char *)), .argc = 1};
	struct ctl c = {.g = &g};
	int i = 1, rc;
	if (!g.argv)
		return CTL_FAIL;
	g.argv[0] = argv[0];
	/* Global options before the command; those after it are read by the command's own
	 * parser (ctl_args), which knows which arguments are the values of its options. */
	while (i < argc && ctl_global_opt(&c, argc, argv, &i))
		i++;
	const char *cmd = i < argc ? argv[i] : NULL;
	int n = i < argc ? argc - i - 1 : 0;
	char **rest = argv + i + (i < argc);
	if (!cmd || cmd[0] == '-' || g.help || g.version) {
		rc = ctl_settle(&c);
		if (rc == CTL_OK && !cmd) {
			usage(stderr);
			rc = CTL_USAGE;
		} else if (rc == CTL_OK) {
			rc = ctl_err(CTL_USAGE, "unknown option '%s' (try --help)", cmd);
		}
	} else if (!strcmp(cmd, "devices")) {
		rc = ctl_cmd_devices(&c, n, rest);
	} else if (!strcmp(cmd, "device")) {
		rc = ctl_cmd_device(&c, n, rest);
	} else if (!strcmp(cmd, "readings")) {
		rc = ctl_cmd_readings(&c, n, rest);
	} else if (!strcmp(cmd, "events")) {
		rc = ctl_cmd_events(&c, n, rest);
	} else if (!strcmp(cmd, "gaps")) {
		rc = ctl_cmd_gaps(&c, n, rest);
	} else if (!strcmp(cmd, "prune")) {
		rc = ctl_cmd_prune(&c, n, rest);
	} else if (!strcmp(cmd, "task")) {
		rc = ctl_cmd_task(&c, n, rest);
	} else if (!strcmp(cmd, "decode")) {
		rc = ctl_cmd_decode(&c, n, rest);
	} else {
		rc = ctl_settle(&c);
		if (rc == CTL_OK)
			rc = ctl_err(CTL_USAGE, "unknown command '%s' (try --help)", cmd);
	}
	if (rc == CTL_DONE)
		rc = CTL_OK;
	/* A write that failed before the last flush (the buffer it emptied is lost) leaves only
	 * the error flag: fflush alone can succeed after it. */
	int werr = fflush(stdout) != 0 ? errno : 0;
	if ((werr || ferror(stdout)) && rc == CTL_OK) {
		/* still exit 1, but a change committed is said: a script that retries on the
		 * failure must not queue the task twice */
		if (c.done[0])
			rc = ctl_err(CTL_FAIL, "%s, but %s could not be written%s%s", c.done,
			             c.done_what, werr ? ": " : "", werr ? strerror(werr) : "");
		else
			rc = ctl_err(CTL_FAIL, "cannot write the output");
	}
	store_close(c.s);
	cfg_free(opts, sizeof(opts) / sizeof(opts[0]), &g.set);
	free(g.argv);
	return rc;
}
