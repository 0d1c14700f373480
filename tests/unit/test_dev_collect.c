/* test_dev_collect.c - collectors: sim, exec (timeouts, bad output, failures as metrics) and
 * proc (against a fixture /proc tree). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dev_collect.h"
#include "harness.h"

struct got {
	char name[64][64];
	double v[64];
	int n;
};

static int sink(void *ctx, const char *name, const char *unit, double value)
{
	struct got *g = ctx;
	(void)unit;
	if (g->n < 64) {
		snprintf(g->name[g->n], 64, "%s", name);
		g->v[g->n++] = value;
	}
	return 0;
}

static int find(const struct got *g, const char *name, double *v)
{
	for (int i = 0; i < g->n; i++)
		if (!strcmp(g->name[i], name)) {
			*v = g->v[i];
			return 1;
		}
	return 0;
}

static volatile sig_atomic_t stopping;

static struct dev_collect *open_c(const char *list, const char *cmd, int64_t timeout_ms)
{
	struct dev_collect_conf conf = {.list = list,
					.exec_command = cmd,
					.exec_timeout_ms = timeout_ms,
					.sim_metrics = 8,
					.seed = "dev-a",
					.stop = &stopping};
	struct dev_collect *c = NULL;
	const char *why = NULL;
	cr_assert_eq(dev_collect_open(&conf, &c, &why), 0, "%s", why ? why : "");
	return c;
}

Test(dev_collect, sim_is_deterministic_and_quantised)
{
	struct got a = {0}, b = {0};
	struct dev_collect *c1 = open_c("sim", NULL, 0), *c2 = open_c("sim", NULL, 0);
	const char *name, *why;
	cr_expect_eq(dev_collect_sample(c1, sink, &a, &name, &why), 0);
	cr_expect_eq(dev_collect_sample(c2, sink, &b, &name, &why), 0);
	cr_assert_eq(a.n, 8 + 2);
	for (int i = 0; i < a.n; i++) {
		cr_expect_eq(a.v[i], b.v[i]);
		cr_expect_lt(fabs(a.v[i] * 100 - round(a.v[i] * 100)), 1e-6, "%s=%f", a.name[i], a.v[i]);
	}
	double ok;
	cr_expect(find(&a, "collector.sim.ok", &ok) && ok == 1);
	dev_collect_close(c1);
	dev_collect_close(c2);
}

Test(dev_collect, exec_reads_name_value_lines)
{
	struct got g = {0};
	struct dev_collect *c = open_c("exec", "printf 'tank.level 71.5 %%\\n# comment\\npump.on 1\\n'", 2000);
	const char *name, *why;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0);
	double v;
	cr_expect(find(&g, "tank.level", &v) && v == 71.5);
	cr_expect(find(&g, "pump.on", &v) && v == 1);
	cr_expect(find(&g, "collector.exec.ok", &v) && v == 1);
	dev_collect_close(c);
}

/* The command gets the agent's environment with exec_env on top (the proxy variables the agent
 * keeps out of its own), an entry there replacing the agent's variable of that name. */
Test(dev_collect, exec_commands_get_the_extra_environment)
{
	const char *env[] = {"https_proxy=http://proxy:3128", "OUTPOST_T_SHARED=extra", NULL};
	struct dev_collect_conf conf = {.list = "exec",
					.exec_command = "echo env.proxy ${#https_proxy}; "
							"echo env.kept ${#OUTPOST_T_KEPT}; "
							"echo env.shared ${#OUTPOST_T_SHARED}; "
							"echo env.n $(env | grep -c ^OUTPOST_T_S)",
					.exec_timeout_ms = 5000,
					.exec_env = env};
	struct dev_collect *c = NULL;
	const char *name, *why = NULL;
	setenv("OUTPOST_T_KEPT", "abc", 1);
	setenv("OUTPOST_T_SHARED", "agent's own", 1);
	cr_assert_eq(dev_collect_open(&conf, &c, &why), 0, "%s", why ? why : "");
	env[0] = "https_proxy=changed after open"; /* copied at open */
	struct got g = {0};
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0, "%s", why ? why : "");
	double v = -1;
	cr_expect(find(&g, "env.proxy", &v) && v == 17, "https_proxy: %g characters", v);
	cr_expect(find(&g, "env.kept", &v) && v == 3, "the agent's own: %g", v);
	cr_expect(find(&g, "env.shared", &v) && v == 5, "replaced: %g characters", v);
	cr_expect(find(&g, "env.n", &v) && v == 1, "%g entries of one name", v);
	dev_collect_close(c);
	unsetenv("OUTPOST_T_KEPT");
	unsetenv("OUTPOST_T_SHARED");
}

/* The agent ignores SIGPIPE and SIGXFSZ; its command gets the default dispositions back
 * (ignored signals survive exec), so that `yes | head -n1` in it ends quietly. */
Test(dev_collect, exec_commands_get_default_signal_dispositions)
{
	struct sigaction ign = {.sa_handler = SIG_IGN}, old_pipe, old_xfsz;
	sigemptyset(&ign.sa_mask);
	sigaction(SIGPIPE, &ign, &old_pipe);
	sigaction(SIGXFSZ, &ign, &old_xfsz);
	struct got g = {0};
	/* SigIgn bits 12 (SIGPIPE) and 24 (SIGXFSZ) */
	struct dev_collect *c = open_c(
	    "exec",
	    "ign=$(awk '/^SigIgn/ {print $2}' /proc/self/status); "
	    "echo sig.ignored $(( 0x$ign & 0x1001000 ))",
	    5000);
	const char *name, *why;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0);
	double v = -1;
	cr_expect(find(&g, "sig.ignored", &v) && v == 0, "SigIgn bits: %g", v);
	dev_collect_close(c);
	sigaction(SIGPIPE, &old_pipe, NULL);
	sigaction(SIGXFSZ, &old_xfsz, NULL);
}

Test(dev_collect, exec_failures_become_metrics, .timeout = 30)
{
	const char *name = NULL, *why = NULL;
	double v;
	struct {
		const char *cmd;
		const char *reason;
	} cases[] = {
		{"sleep 10", "timed out"},
		{"echo x 1; exit 3", "exited with an error"},
		{"echo 'good 1'; echo 'not a number'", "ignored"},
		{"yes 123456789 | head -c 70000", "64 KiB"},
	};
	struct dev_collect *c = NULL;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct got g = {0};
		c = open_c("exec", cases[i].cmd, 300);
		long long t0 = h_now_ms();
		cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 1, "%s", cases[i].cmd);
		cr_expect_lt(h_now_ms() - t0, 3000, "the time limit holds");
		cr_expect_str_eq(name, "exec");
		cr_expect(why && strstr(why, cases[i].reason), "%s: %s", cases[i].cmd, why);
		cr_expect(find(&g, "collector.exec.ok", &v) && v == 0);
		cr_expect(find(&g, "collector.exec.errors", &v) && v == 1);
		dev_collect_close(c);
	}
}

/* The command gets the agent's stdin, stdout and stderr and nothing else: Paho's broker socket
 * is not close-on-exec, and neither the command nor what it leaves running may hold the live
 * TLS connection. Here descriptors opened as Paho opens its socket, one of them high. */
Test(dev_collect, exec_commands_inherit_only_stdin_stdout_stderr)
{
	int fd = open("/dev/null", O_RDONLY), high = fcntl(fd, F_DUPFD, 200);
	cr_assert_geq(fd, 3);
	cr_assert_geq(high, 200);
	/* a reading per descriptor of the shell; listing them opens one more (3) */
	struct dev_collect *c =
	    open_c("exec", "for f in /proc/$$/fd/*; do echo fd.${f##*/} 1; done", 5000);
	struct got g = {0};
	const char *name, *why = NULL;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0, "%s", why ? why : "");
	double v;
	char fd_name[16], high_name[16];
	snprintf(fd_name, sizeof(fd_name), "fd.%d", fd);
	snprintf(high_name, sizeof(high_name), "fd.%d", high);
	cr_expect(find(&g, "fd.0", &v) && find(&g, "fd.1", &v) && find(&g, "fd.2", &v));
	cr_expect_not(find(&g, fd_name, &v), "the command inherited %s", fd_name);
	cr_expect_not(find(&g, high_name, &v), "the command inherited %s", high_name);
	cr_expect_leq(g.n, 4 + 2, "0, 1, 2, the listing's own, and the collector's two; %d", g.n);
	dev_collect_close(c);
	close(fd);
	close(high);
}

/* SIGCHLD ignored (a disposition that survives exec, so whatever started the agent may leave
 * it): the kernel reaps the command and its exit status is lost. Unknown is a failure, not an
 * exit 0 whose output is taken. */
Test(dev_collect, exec_an_unknown_exit_status_is_a_failure, .timeout = 30)
{
	struct sigaction ign = {.sa_handler = SIG_IGN}, old;
	sigemptyset(&ign.sa_mask);
	sigaction(SIGCHLD, &ign, &old);
	struct dev_collect *c = open_c("exec", "echo x 1; exit 3", 5000);
	struct got g = {0};
	const char *name, *why = NULL;
	double v;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 1);
	cr_expect(why && strstr(why, "exit status unknown") && strstr(why, "SIGCHLD"), "%s",
		  why ? why : "");
	cr_expect_not(find(&g, "x", &v), "the output of a command that failed was taken");
	cr_expect(find(&g, "collector.exec.ok", &v) && v == 0);
	dev_collect_close(c);
	sigaction(SIGCHLD, &old, NULL);
}

/* While set, the collector's waits for its command see it still running, as for a process stuck
 * in the kernel (D in ps) that even SIGKILL does not end (waitpid is wrapped at link time:
 * tests/CMakeLists.txt). */
static volatile int command_stuck;
pid_t __real_waitpid(pid_t pid, int *status, int options);
pid_t __wrap_waitpid(pid_t pid, int *status, int options);
pid_t __wrap_waitpid(pid_t pid, int *status, int options)
{
	if (command_stuck && (options & WNOHANG))
		return 0;
	return __real_waitpid(pid, status, options);
}

/* A command that does not end even after SIGKILL is kept, not forgotten: no other is started
 * until it has ended (one more stuck process per sample, and a zombie each, piled up), each
 * sample until then failing with why; then it is reaped and sampling goes on. */
Test(dev_collect, exec_starts_no_command_while_one_has_not_ended, .timeout = 60)
{
	char *dir = h_tmpdir("stuck"), *runs = h_strf("%s/runs", dir);
	char *cmd = h_strf("echo run >> '%s'; echo x 1", runs);
	struct dev_collect *c = open_c("exec", cmd, 2000);
	const char *name, *why = NULL;
	double v;
	struct got g = {0};
	command_stuck = 1;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 1);
	cr_expect(why && strstr(why, "did not end within 5 s"), "%s", why ? why : "");
	for (int i = 0; i < 2; i++) {
		memset(&g, 0, sizeof(g));
		why = NULL;
		long long t0 = h_now_ms();
		cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 1);
		cr_expect_lt(h_now_ms() - t0, 500, "it waited for the stuck command");
		cr_expect(why && strstr(why, "has still not ended") && strstr(why, "pid "), "%s",
			  why ? why : "");
		cr_expect(find(&g, "collector.exec.ok", &v) && v == 0);
	}
	cr_expect_eq(h_count_in_file(runs, "run"), 1, "a command was started beside the stuck one");
	command_stuck = 0;
	memset(&g, 0, sizeof(g));
	why = NULL;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0, "%s", why ? why : "");
	cr_expect(find(&g, "x", &v) && v == 1);
	cr_expect_eq(h_count_in_file(runs, "run"), 2);
	cr_expect_eq(waitpid(-1, NULL, WNOHANG), -1, "a child is left unreaped");
	dev_collect_close(c);
	free(cmd);
	free(runs);
	free(dir);
}

static int has_value(const struct got *g, double v)
{
	for (int i = 0; i < g->n; i++)
		if (g->v[i] == v)
			return 1;
	return 0;
}

/* A token longer than its field (name 128, value 63, unit 32 characters) refuses its line, as
 * any line that is not 'name value [unit]': it is not cut, its tail read as the next field
 * (a 130-character name ending in 12 read as 12 in the unit of the real value, a value of 71
 * digits as its first 63 in the unit of the other 8). Fields of the largest size are fine. */
Test(dev_collect, exec_refuses_lines_with_over_long_tokens)
{
	struct got g = {0};
	struct dev_collect *c = open_c(
	    "exec",
	    "n=$(printf '%0128d' 0 | tr 0 a); u=$(printf '%032d' 0 | tr 0 u); "
	    "echo \"${n}12 5\"; echo \"big.value 1$(printf '%070d' 0)\"; "
	    "echo \"long.unit 3 ${u}u\"; echo \"long.value 4$(printf '%063d' 0)\"; "
	    "echo \"$n 7 $u\"; echo \"max.value 6$(printf '%062d' 0)\"",
	    5000);
	const char *name, *why = NULL;
	double v;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 1);
	cr_expect(why && strstr(why, "ignored"), "%s", why ? why : "");
	cr_expect(find(&g, "collector.exec.ok", &v) && v == 0);
	cr_expect_not(has_value(&g, 12), "a name's tail was read as its value");
	cr_expect_not(has_value(&g, 1e62), "a value's head was read as the value");
	cr_expect_not(find(&g, "big.value", &v), "%g", v);
	cr_expect_not(find(&g, "long.unit", &v), "%g", v);
	cr_expect_not(find(&g, "long.value", &v), "%g", v);
	/* the limits themselves: a 128-character name and 32-character unit, 63 digits */
	cr_expect(has_value(&g, 7), "the line at the name and unit limits was refused");
	cr_expect(find(&g, "max.value", &v) && v == 6e62, "%g", v);
	cr_expect_eq(g.n, 2 + 2, "two readings and the collector's two");
	dev_collect_close(c);
}

Test(dev_collect, unknown_or_incomplete_collectors_are_refused)
{
	struct dev_collect_conf bad = {.list = "proc,gps", .sim_metrics = 1, .seed = "x"};
	struct dev_collect_conf noexec = {.list = "exec", .exec_command = "", .sim_metrics = 1,
					  .seed = "x"};
	struct dev_collect *c;
	const char *why = NULL;
	cr_expect_neq(dev_collect_open(&bad, &c, &why), 0);
	cr_expect(strstr(why, "unknown collector"));
	why = NULL; /* not the reason of the call before */
	cr_expect_neq(dev_collect_open(&noexec, &c, &why), 0);
	cr_expect(why && strstr(why, "exec needs exec_command"), "%s", why ? why : "(no reason)");
}

#define NET_DEV_HEADER                                                                          \
	"Inter-|   Receive  |  Transmit\n face |bytes packets errs drop fifo frame "              \
	"compressed multicast|bytes packets errs drop fifo colls carrier compressed\n"

static void write_file(const char *dir, const char *name, const char *text)
{
	char *p = h_strf("%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	cr_assert_not_null(f, "%s", p);
	fputs(text, f);
	fclose(f);
	free(p);
}

Test(dev_collect, proc_from_a_fixture_tree)
{
	char *root = h_tmpdir("proc");
	char *net = h_strf("%s/net", root);
	mkdir(net, 0755);
	write_file(root, "stat", "cpu  100 0 100 800 0 0 0 0 0 0\n");
	write_file(root, "meminfo", "MemTotal:       1000 kB\nMemFree: 100 kB\nMemAvailable:    250 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n");
	write_file(root, "loadavg", "0.50 0.25 0.10 2/345 6789\n");
	write_file(root, "uptime", "12345.67 100.00\n");
	write_file(root, "net/dev", "Inter-|   Receive  |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n  eth0: 1000 10 1 0 0 0 0 0 2000 20 2 0 0 0 0 0\n");
	write_file(root, "diskstats", "");
	setenv("OUTPOST_PROC_ROOT", root, 1);
	struct dev_collect *c = open_c("proc", NULL, 0);
	struct got g = {0};
	const char *name, *why;
	double v;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0, "%s", why ? why : "");
	cr_expect(find(&g, "mem.total", &v) && v == 1024000);
	cr_expect(find(&g, "mem.used_pct", &v) && v == 75);
	cr_expect(find(&g, "load.1", &v) && v == 0.5);
	cr_expect(find(&g, "procs.total", &v) && v == 345);
	cr_expect(find(&g, "uptime", &v) && v == 12345);
	cr_expect(find(&g, "net.eth0.rx_bytes", &v) && v == 1000);
	cr_expect(find(&g, "net.eth0.errors", &v) && v == 3);
	cr_expect_not(find(&g, "net.lo.rx_bytes", &v), "loopback is skipped");
	cr_expect_not(find(&g, "cpu.user", &v), "CPU needs two samples");

	/* second sample: 100 more user, 300 more idle jiffies -> 25% user */
	write_file(root, "stat", "cpu  200 0 100 1100 0 0 0 0 0 0\n");
	g.n = 0;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0);
	cr_expect(find(&g, "cpu.user", &v) && v == 25, "cpu.user %f", v);
	cr_expect(find(&g, "cpu.idle", &v) && v == 75);
	/* iowait went backwards (the kernel allows it): no time, not 2^64 jiffies of it */
	write_file(root, "stat", "cpu  200 0 100 1100 50 0 0 0 0 0\n");
	g.n = 0;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0);
	write_file(root, "stat", "cpu  300 0 100 1400 40 0 0 0 0 0\n");
	g.n = 0;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0);
	cr_expect(find(&g, "cpu.iowait", &v) && v == 0, "cpu.iowait %f", v);
	cr_expect(find(&g, "cpu.user", &v) && v == 25, "cpu.user %f", v);

	/* a vanished file is a failure reported as a metric, and the rest still comes */
	char *p = h_strf("%s/meminfo", root);
	unlink(p);
	g.n = 0;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 1);
	cr_expect(strstr(why, "meminfo"), "%s", why);
	cr_expect(find(&g, "load.1", &v));
	cr_expect(find(&g, "collector.proc.ok", &v) && v == 0);
	unsetenv("OUTPOST_PROC_ROOT");
	dev_collect_close(c);
	free(p);
	free(net);
	free(root);
}

/* A fixture /proc tree in a fresh directory, net/dev empty but for its header; caller frees. */
static char *proc_fixture(const char *meminfo)
{
	char *root = h_tmpdir("proc");
	char *net = h_strf("%s/net", root);
	cr_assert_eq(mkdir(net, 0755), 0);
	write_file(root, "stat", "cpu  100 0 100 800 0 0 0 0 0 0\n");
	write_file(root, "meminfo", meminfo);
	write_file(root, "loadavg", "0.50 0.25 0.10 2/345 6789\n");
	write_file(root, "uptime", "12345.67 100.00\n");
	write_file(root, "net/dev", NET_DEV_HEADER);
	write_file(root, "diskstats", "");
	free(net);
	return root;
}

/* Container runtimes, hypervisors and overlay networks make interfaces with new names for every
 * container, VM or network: here 20 veths, a calico and a tap interface renamed at every one of
 * 50 samples, beside docker0 and a docker network's bridge. None becomes a metric (each name
 * took three entries of the persisted catalog for good, until it was full). The host's own
 * interfaces are sampled, also those without a device (ppp0, wg0), and also when more than 16
 * container interfaces are listed before them (only 16 are sampled). */
Test(dev_collect, container_interfaces_are_not_sampled)
{
	char *root = proc_fixture("MemTotal: 1000 kB\nMemAvailable: 250 kB\n");
	const char *const host[] = {"eth0", "wlan0", "ppp0", "wg0"};
	setenv("OUTPOST_PROC_ROOT", root, 1);
	struct dev_collect *c = open_c("proc", NULL, 0);
	for (unsigned i = 0; i < 50; i++) {
		char text[8192];
		int n = snprintf(text, sizeof(text), "%s", NET_DEV_HEADER);
		for (unsigned k = 0; k < 20; k++)
			n += snprintf(text + n, sizeof(text) - (size_t)n,
				      "veth%03x%04x: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n", k, i);
		n += snprintf(text + n, sizeof(text) - (size_t)n,
			      "docker0: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n"
			      "br-0123456789ab: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n"
			      "cali0123456%04x: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n"
			      "tap%04x-1f: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n", i, i);
		for (size_t k = 0; k < sizeof(host) / sizeof(host[0]); k++)
			n += snprintf(text + n, sizeof(text) - (size_t)n,
				      "%6s: %zu 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n", host[k],
				      1000 + k);
		cr_assert_lt((size_t)n, sizeof(text));
		write_file(root, "net/dev", text);
		struct got g = {0};
		const char *name, *why = NULL;
		cr_assert_eq(dev_collect_sample(c, sink, &g, &name, &why), 0, "%s", why ? why : "");
		int net = 0;
		for (int k = 0; k < g.n; k++)
			net += !strncmp(g.name[k], "net.", 4);
		cr_assert_eq(net, 3 * 4, "sample %u: %d net readings", i, net);
		for (size_t k = 0; k < sizeof(host) / sizeof(host[0]); k++) {
			char *rx = h_strf("net.%s.rx_bytes", host[k]);
			double v = 0;
			cr_assert(find(&g, rx, &v) && v == (double)(1000 + k), "sample %u: %s", i,
				  rx);
			free(rx);
		}
	}
	unsetenv("OUTPOST_PROC_ROOT");
	dev_collect_close(c);
	free(root);
}

/* Linux before 3.14 has no MemAvailable in /proc/meminfo: what is available is estimated from
 * MemFree, Buffers and Cached (it read 0, and mem.used_pct 100). SwapCached is not Cached. */
Test(dev_collect, mem_available_without_a_memavailable_line)
{
	char *root = proc_fixture("MemTotal:       1000 kB\nMemFree:         100 kB\n"
				  "Buffers:          50 kB\nCached:          250 kB\n"
				  "SwapCached:      300 kB\nActive:          400 kB\n"
				  "SwapTotal:       200 kB\nSwapFree:        150 kB\n");
	setenv("OUTPOST_PROC_ROOT", root, 1);
	struct dev_collect *c = open_c("proc", NULL, 0);
	struct got g = {0};
	const char *name, *why = NULL;
	double v = -1;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0, "%s", why ? why : "");
	cr_expect(find(&g, "mem.available", &v) && v == 400 * 1024, "mem.available %g", v);
	cr_expect(find(&g, "mem.used_pct", &v) && v == 60, "mem.used_pct %g", v);
	cr_expect(find(&g, "swap.used", &v) && v == 50 * 1024, "swap.used %g", v);
	unsetenv("OUTPOST_PROC_ROOT");
	dev_collect_close(c);
	free(root);
}

/* The agent is asked to stop while a slow exec command runs: the wait is cut short, so the
 * agent seals its batch well within a service manager's stop timeout. That sample gives
 * nothing, and is no failure: neither collector.exec.ok = 0 nor an error counted (the final
 * batch said the collector had failed). */
Test(dev_collect, a_stop_cuts_a_slow_command_short, .timeout = 30)
{
	struct dev_collect *c = open_c("exec", "sleep 20; echo late 1", 60000);
	struct got g = {0};
	const char *name, *why = NULL;
	double v = -1;
	stopping = 1;
	long long t0 = h_now_ms();
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0, "%s", why ? why : "");
	stopping = 0;
	cr_expect_lt(h_now_ms() - t0, 10000, "waited for the command");
	cr_expect_eq(g.n, 0, "%d readings, the first %s", g.n, g.n ? g.name[0] : "");
	dev_collect_close(c);
	/* a sample that was not cut short still counts its failures */
	c = open_c("exec", "exit 3", 5000);
	stopping = 1;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 0);
	stopping = 0;
	g.n = 0;
	cr_expect_eq(dev_collect_sample(c, sink, &g, &name, &why), 1);
	cr_expect(find(&g, "collector.exec.errors", &v) && v == 1, "errors %g", v);
	dev_collect_close(c);
}
