/* test_local.c - the user-facing commands: scripts/run-local.sh runs the whole stack and
 * stops it cleanly; scripts/mqtt-sub.sh shows decoded telemetry from it. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "h_bridge.h"
#include "harness.h"

/* run-local's environment for STATE on free ports, and EXTRA (NULL-terminated): env[16] */
static size_t local_env(const char *state, const char *const *extra, char **env)
{
	size_t n = 0;
	env[n++] = h_strf("OUTPOST_LOCAL_DIR=%s", state);
	env[n++] = h_strf("OUTPOST_BUILD_DIR=%s", h_build_dir());
	env[n++] = h_strf("OUTPOST_WSS_PORT=%d", h_free_port());
	env[n++] = h_strf("OUTPOST_MQTTS_PORT=%d", h_free_port());
	env[n++] = h_strf("OUTPOST_INTERNAL_PORT=%d", h_free_port());
	for (; extra && *extra && n < 15; extra++)
		env[n++] = h_strf("%s", *extra);
	env[n] = NULL;
	return n;
}

Test(local, run_local_and_mqtt_sub, .timeout = 180)
{
	char *state = h_tmpdir("local");
	char *script = h_strf("%s/scripts/run-local.sh", h_source_dir());
	char *env[16];
	local_env(state, NULL, env);
	int internal = atoi(strchr(env[4], '=') + 1);
	char *argv[] = {script, "--devices", "3", "--duration", "20", "--no-build", "--no-bootstrap", NULL};
	char *log = h_strf("%s/run-local.out", state);
	pid_t pid = h_spawn(argv, env, log);
	h_track_pid(pid);

	/* while it runs: mqtt-sub.sh prints decoded, signature-checked telemetry */
	h_sleep_ms(8000);
	char *cmd = h_strf("OUTPOST_PKI_DIR=%s/pki OUTPOST_INTERNAL_PORT=%d OUTPOST_BUILD_DIR=%s "
			   "OUTPOST_STORE=sqlite:%s/outpost.db %s/scripts/mqtt-sub.sh --count 2 --timeout 15 "
			   "outpost/v1/+/telemetry",
			   state, internal, h_build_dir(), state, h_source_dir());
	char *out = NULL;
	cr_expect_eq(h_sh(cmd, &out, 40), 0, "%s", out);
	cr_expect(strstr(out, "/telemetry  batch  device-000"), "%s", out);
	cr_expect(strstr(out, "signature ok (device-000"), "%s", out);
	cr_expect(strstr(out, "sim.sensor_0000="), "metric names are shown:\n%s", out);
	free(out);
	free(cmd);
	/* --timeout is a normal end (mosquitto_sub -W exits 27): raw with nothing to show, and
	 * decoded with the retained statuses */
	const char *const timed[][2] = {{"--raw --timeout 2 outpost/v1/nobody/telemetry", ""},
	                                {"--timeout 2 outpost/v1/+/status", "online"}};
	for (size_t i = 0; i < 2; i++) {
		cmd = h_strf("OUTPOST_PKI_DIR=%s/pki OUTPOST_INTERNAL_PORT=%d OUTPOST_BUILD_DIR=%s "
		             "%s/scripts/mqtt-sub.sh %s",
		             state, internal, h_build_dir(), h_source_dir(), timed[i][0]);
		out = NULL;
		cr_expect_eq(h_sh(cmd, &out, 30), 0, "mqtt-sub.sh %s:\n%s", timed[i][0], out);
		cr_expect(strstr(out, timed[i][1]), "mqtt-sub.sh %s:\n%s", timed[i][0], out);
		free(out);
		free(cmd);
	}

	int rc = h_wait_exit(pid, 60000);
	cr_expect_eq(rc, 0, "run-local exited %d; output in %s", rc, log);
	char *text = h_read_file(log, NULL);
	cr_expect(text && strstr(text, "Next commands to try"), "%s", text ? text : "");
	free(text);

	char *store = h_strf("sqlite:%s/outpost.db", state);
	/* the store and the logs are the owner's only */
	char *path = h_strf("%s/outpost.db", state);
	struct stat st;
	cr_expect(stat(path, &st) == 0 && (st.st_mode & 077) == 0, "%s: mode %o", path,
	          (unsigned)st.st_mode & 0777);
	free(path);
	path = h_strf("%s/logs", state);
	cr_expect(stat(path, &st) == 0 && (st.st_mode & 077) == 0, "%s: mode %o", path,
	          (unsigned)st.st_mode & 0777);
	free(path);
	/* the broker's listeners were waited for without connecting to them: a bare TCP
	 * connection is logged as a failed client connection */
	path = h_strf("%s/logs/broker.log", state);
	cr_expect_eq(h_count_in_file(path, "Client connection from"), 0, "see %s", path);
	free(path);
	/* the devices started once the bridge was subscribed: no Birth was lost */
	path = h_strf("%s/logs/device-0001.log", state);
	cr_expect_eq(h_count_in_file(path, "no ack since the Birth"), 0, "see %s", path);
	free(path);
	for (int i = 1; i <= 3; i++) {
		char *sql = h_strf("SELECT readings FROM devices WHERE device_id = 'device-%04d'", i);
		int64_t n = h_store_i64(store, sql, 0);
		cr_expect_gt(n, 0, "device-%04d: %lld readings stored", i, (long long)n);
		free(sql);
	}
	/* nothing it started is still running */
	/* "[/]..." keeps pgrep (and the shell running it) from matching its own command line */
	cmd = h_strf("pgrep -af [/]%s", state + 1);
	out = NULL;
	cr_expect_neq(h_sh(cmd, &out, 10), 0, "processes left behind:\n%s", out);
	free(out);
	free(cmd);
	/* a second run reuses the PKI and the store, and leaves a revoked device out */
	char *ca = h_strf("%s/pki/ca.crt", state);
	char *before = h_read_file(ca, NULL);
	cmd = h_strf("%s/scripts/provision-certs.sh --out %s/pki --revoke device-0002", h_source_dir(),
		     state);
	cr_expect_eq(h_sh(cmd, NULL, 30), 0);
	free(cmd);
	argv[4] = "6";
	pid = h_spawn(argv, env, log);
	h_track_pid(pid);
	cr_expect_eq(h_wait_exit(pid, 60000), 0);
	char *after = h_read_file(ca, NULL);
	cr_expect(before && after && !strcmp(before, after), "the PKI was recreated");
	text = h_read_file(log, NULL);
	cr_expect(text && strstr(text, "device-0002: certificate revoked; not started"), "%s",
		  text ? text : "");
	cr_expect(text && !strstr(text, "device-0001: certificate revoked"), "%s", text ? text : "");
	/* the next commands work from anywhere, with this state directory */
	char *exp = h_strf("export OUTPOST_STORE=%s OUTPOST_PKI_DIR=%s/pki", store, state);
	cr_expect(text && strstr(text, exp), "%s", text ? text : "");
	free(exp);
	free(text);
	int64_t n = h_store_i64(store, "SELECT count(*) FROM devices", 0);
	cr_expect_eq(n, 3, "same store, same devices");

	/* Ctrl-C in a terminal signals the terminal's whole foreground process group: the script
	 * alone hears it, and stops the devices first, then the bridge (SIGTERM, once they are
	 * gone), then the broker */
	char *blog = h_strf("%s/logs/bridge.log", state);
	int connected = h_count_in_file(blog, "connected to");
	argv[4] = "0"; /* until stopped */
	pid = h_spawn(argv, env, log);
	h_track_pid(pid);
	for (int i = 0; i < 300 && h_count_in_file(blog, "connected to") <= connected; i++)
		h_sleep_ms(50);
	h_sleep_ms(3000); /* the devices connect and send */
	int stopped = h_count_in_file(blog, "Terminated: finishing");
	cr_expect_eq(kill(-pid, SIGINT), 0);
	cr_expect_eq(h_wait_exit(pid, 60000), 130);
	cr_expect_eq(h_count_in_file(blog, "Interrupt: finishing"), 0, "see %s", blog);
	cr_expect_eq(h_count_in_file(blog, "Terminated: finishing"), stopped + 1, "see %s", blog);
	cmd = h_strf("pgrep -af [/]%s", state + 1);
	out = NULL;
	cr_expect_neq(h_sh(cmd, &out, 10), 0, "processes left behind:\n%s", out);
	free(out);
	/* an impatient second Ctrl-C while it stops: what is left is killed, nothing outlives
	 * the script (the processes are in sessions of their own: no terminal signal reaches
	 * them) */
	connected = h_count_in_file(blog, "connected to");
	pid = h_spawn(argv, env, log);
	h_track_pid(pid);
	for (int i = 0; i < 300 && h_count_in_file(blog, "connected to") <= connected; i++)
		h_sleep_ms(50);
	h_sleep_ms(1000);
	cr_expect_eq(kill(-pid, SIGINT), 0);
	h_sleep_ms(100);
	cr_expect_eq(kill(-pid, SIGINT), 0);
	cr_expect_eq(h_wait_exit(pid, 60000), 130);
	out = NULL;
	cr_expect_neq(h_sh(cmd, &out, 10), 0, "processes left behind:\n%s", out);
	free(out);
	free(cmd);
	free(blog);
	free(before);
	free(after);
	free(ca);
	free(store);
	for (size_t i = 0; env[i]; i++)
		free(env[i]);
	free(script);
	free(log);
	free(state);
}

Test(local, run_local_refuses_bad_arguments)
{
	char *out = NULL;
	char *cmd = h_strf("%s/scripts/run-local.sh --devices lots", h_source_dir());
	cr_expect_eq(h_sh(cmd, &out, 10), 2);
	cr_expect(strstr(out, "--devices"), "%s", out);
	free(out);
	free(cmd);
	cmd = h_strf("%s/scripts/mqtt-sub.sh --bogus", h_source_dir());
	cr_expect_eq(h_sh(cmd, &out, 10), 2);
	free(out);
	free(cmd);
}

/* run-local (2 devices, for duration_s) started in STATE with EXTRA in its environment */
static pid_t spawn_local(const char *state, const char *const *extra, int duration_s)
{
	char *env[16];
	size_t n = local_env(state, extra, env);
	char *script = h_strf("%s/scripts/run-local.sh", h_source_dir());
	char *dur = h_strf("%d", duration_s);
	char *argv[] = {script, "--devices", "2", "--duration", dur, "--no-build", "--no-bootstrap",
			NULL};
	char *log = h_strf("%s/run-local.out", state);
	pid_t pid = h_spawn(argv, env, log);
	h_track_pid(pid);
	for (size_t i = 0; i < n; i++)
		free(env[i]);
	free(log);
	free(dur);
	free(script);
	return pid;
}

/* ... and waited for: its exit status, its output in *out */
static int run_local_env(const char *state, const char *const *extra, int duration_s, char **out)
{
	int rc = h_wait_exit(spawn_local(state, extra, duration_s), 90000);
	char *log = h_strf("%s/run-local.out", state);
	*out = h_read_file(log, NULL);
	if (!*out)
		*out = h_strf("(no output in %s)", log);
	free(log);
	return rc;
}

static void expect_nothing_left(const char *state)
{
	char *cmd = h_strf("pgrep -af [/]%s", state + 1);
	char *out = NULL;
	cr_expect_neq(h_sh(cmd, &out, 10), 0, "processes left behind:\n%s", out);
	free(out);
	free(cmd);
}

/* A bridge that refuses its configuration (status 2) is not started again and again: the
 * script stops, showing the bridge's own words. */
Test(local, run_local_stops_on_a_bridge_that_refuses_its_configuration, .timeout = 120)
{
	const char *const extra[] = {"OUTPOST_BRIDGE_LOG_LEVEL=chatty", NULL};
	char *state = h_tmpdir("local-badbridge"), *out;
	int rc = run_local_env(state, extra, 60, &out);
	cr_expect_eq(rc, 1, "%s", out);
	cr_expect(strstr(out, "the bridge exited (status 2); its last lines"), "%s", out);
	cr_expect(strstr(out, "log_level"), "the bridge's reason is not shown:\n%s", out);
	cr_expect(!strstr(out, "starting a new one"), "%s", out);
	expect_nothing_left(state);
	free(out);
	free(state);
}

/* A device that exits (here: a bad option in its environment) is named, with its log. */
Test(local, run_local_names_a_device_that_exited, .timeout = 120)
{
	const char *const extra[] = {"OUTPOST_DEVICE_RECONNECT_SPREAD=soon", NULL};
	char *state = h_tmpdir("local-baddev"), *out;
	int rc = run_local_env(state, extra, 8, &out);
	cr_expect_eq(rc, 0, "%s", out);
	cr_expect(strstr(out, "device-0001 exited (status 2); see "), "%s", out);
	cr_expect(strstr(out, "device-0002 exited (status 2); see "), "%s", out);
	expect_nothing_left(state);
	free(out);
	free(state);
}

/* The script killed outright (SIGKILL: no clean-up) leaves its processes running, in sessions
 * of their own; the next run names them instead of failing on a busy port. */
Test(local, run_local_names_what_an_earlier_run_left_alive, .timeout = 120)
{
	char *state = h_tmpdir("local-left");
	char *blog = h_strf("%s/logs/bridge.log", state);
	pid_t pid = spawn_local(state, NULL, 0);
	for (int i = 0; i < 600 && !h_count_in_file(blog, "connected to"); i++)
		h_sleep_ms(50);
	cr_assert(h_count_in_file(blog, "connected to"), "the bridge never connected: %s", blog);
	/* the devices started: the broker, the bridge and both in the pid file */
	char *pidfile = h_strf("%s/run.pids", state);
	for (int i = 0; i < 300 && h_count_in_file(pidfile, "\n") < 4; i++)
		h_sleep_ms(50);
	cr_assert_eq(h_count_in_file(pidfile, "\n"), 4, "%s", pidfile);
	free(pidfile);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	h_wait_exit(pid, 10000);
	char *out;
	int rc = run_local_env(state, NULL, 5, &out);
	cr_expect_eq(rc, 1, "%s", out);
	cr_expect(strstr(out, "an earlier run's processes are still alive: "), "%s", out);
	/* what it names is what was left: stopping those leaves nothing */
	char *list = strstr(out, "still alive: ");
	int named = 0;
	for (char *p = list ? list + 13 : NULL; p && *p >= '0' && *p <= '9';) {
		char *end;
		long left = strtol(p, &end, 10);
		if (left > 1)
			named += kill((pid_t)left, SIGKILL) == 0;
		p = *end == ' ' ? end + 1 : NULL;
	}
	cr_expect_eq(named, 4, "broker, bridge and 2 devices: %s", out);
	h_sleep_ms(500);
	expect_nothing_left(state);
	free(out);
	free(blog);
	free(state);
}
