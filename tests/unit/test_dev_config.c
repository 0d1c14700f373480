/* test_dev_config.c - outpost-device settings: remote set_config overrides are all or nothing,
 * persisted atomically, and survive a restart. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "dev_config.h"
#include "h_fsync.h"
#include "harness.h"

/* Warnings of dev_config_load_overrides, one per line. */
struct warnings {
	char text[4096];
	int n;
};

static void on_warning(void *arg, const char *msg)
{
	struct warnings *w = arg;
	size_t len = strlen(w->text);
	snprintf(w->text + len, sizeof(w->text) - len, "%s\n", msg);
	w->n++;
}

/* As outpost-device starts: its settings (with the options in extra, NULL-terminated, if any),
 * checked, then the overrides of state_dir (warnings into w, if not NULL). */
static void parse_with(struct dev_config *c, const char *state_dir, const char *const *extra,
		       struct warnings *w)
{
	char err[CFG_ERR_MAX] = "";
	char *argv[32] = {"outpost-device", "--config", "/dev/null",	 "--id",
			  "dev-a",	    "--broker-host", "localhost", "--state-dir",
			  (char *)state_dir};
	int argc = 9;
	while (extra && *extra && argc < 31)
		argv[argc++] = (char *)*extra++;
	cr_assert_eq(dev_config_parse(c, argc, argv, err), 0, "%s", err);
	cr_assert_eq(dev_config_check(c, err), 0, "%s", err);
	cr_assert_eq(dev_config_load_overrides(c, w ? on_warning : NULL, w, err), 0, "%s", err);
	cr_assert_eq(dev_config_check(c, err), 0, "%s", err);
}

static void parse(struct dev_config *c, const char *state_dir)
{
	parse_with(c, state_dir, NULL, NULL);
}

Test(dev_config, set_config_is_all_or_nothing_and_survives_a_restart)
{
	char *dir = h_tmpdir("devcfg"), *override = h_strf("%s/config.override", dir);
	struct dev_config c;
	char err[CFG_ERR_MAX] = "";
	parse(&c, dir);
	cr_assert_eq(c.sample_interval_ms, 10000);
	cr_assert_eq(c.batch_interval_ms, 60000);

	/* each pair is fine against the current settings, together they are not (a batch
	 * shorter than a sample): persisted, they would stop the agent from starting again */
	const char *k1[] = {"sample_interval", "batch_interval"}, *v1[] = {"30s", "20s"};
	cr_expect_eq(dev_config_set_overrides(&c, 2, k1, v1, err), -1);
	cr_expect(strstr(err, "batch_interval"), "%s", err);
	cr_expect_eq(c.sample_interval_ms, 10000, "nothing applied");
	cr_expect_null(h_read_file(override, NULL), "nothing persisted");

	/* one bad key spoils the whole task */
	const char *k2[] = {"poll_interval", "broker_host"}, *v2[] = {"7s", "evil.example.com"};
	cr_expect_eq(dev_config_set_overrides(&c, 2, k2, v2, err), -1);
	cr_expect(strstr(err, "not remotely settable"), "%s", err);
	cr_expect_null(h_read_file(override, NULL));

	const char *k3[] = {"sample_interval", "batch_interval"}, *v3[] = {"30s", "2m"};
	cr_assert_eq(dev_config_set_overrides(&c, 2, k3, v3, err), 0, "%s", err);
	cr_expect_eq(c.sample_interval_ms, 30000);
	cr_expect_eq(c.batch_interval_ms, 120000);
	const char *k4[] = {"batch_interval"}, *v4[] = {"90s"};
	cr_assert_eq(dev_config_set_overrides(&c, 1, k4, v4, err), 0, "%s", err);
	char *text = h_read_file(override, NULL);
	cr_assert_not_null(text);
	cr_expect_eq(h_count(text, "batch_interval"), 1, "a key is replaced, not repeated: %s", text);
	free(text);
	dev_config_free(&c);

	parse(&c, dir);
	cr_expect_eq(c.sample_interval_ms, 30000);
	cr_expect_eq(c.batch_interval_ms, 90000);
	dev_config_free(&c);
	free(override);
	free(dir);
}

/* config.override was rewritten but its directory cannot be synced: the next start reads the
 * new file, so the set_config is applied now too and succeeds, saying that a power cut may
 * undo it (refused, it took effect unannounced at the next restart). */
Test(dev_config, a_set_config_written_but_not_yet_durable_is_applied)
{
	char *dir = h_tmpdir("devcfg"), *override = h_strf("%s/config.override", dir);
	struct dev_config c;
	char err[CFG_ERR_MAX] = "";
	parse(&c, dir);
	const char *k[] = {"poll_interval"}, *v[] = {"7s"};
	h_fail_dir_fsync(EIO);
	cr_expect_eq(dev_config_set_overrides(&c, 1, k, v, err), 1, "%s", err);
	h_fail_dir_fsync(0);
	cr_expect(strstr(err, override), "%s", err);
	cr_expect(strstr(err, "a power cut may undo the change"), "%s", err);
	cr_expect_eq(c.poll_interval_ms, 7000, "applied now, as it will be at the next start");
	dev_config_free(&c);
	parse(&c, dir);
	cr_expect_eq(c.poll_interval_ms, 7000);
	dev_config_free(&c);
	free(override);
	free(dir);
}

/* The checks of the settings together name the file the settings came from, also when it is
 * the default one (read without --config or OUTPOST_DEVICE_CONFIG: they said "configuration"). */
Test(dev_config, errors_name_the_default_file_too)
{
	char *dir = h_tmpdir("devcfg"), *path = h_strf("%s/device.conf", dir);
	cr_assert_eq(h_write_text(path, "id = dev-a\nbroker_host = localhost\nbatch_interval = 5s\n"),
	             0);
	unsetenv("OUTPOST_DEVICE_CONFIG");
	struct dev_config c;
	char err[CFG_ERR_MAX] = "";
	char *argv[] = {"outpost-device", NULL};
	cr_assert_eq(dev_config__parse(&c, 1, argv, path, err), 0, "%s", err);
	cr_expect_eq(dev_config_check(&c, err), -1);
	char *want = h_strf("%s: batch_interval: shorter than sample_interval", path);
	cr_expect_str_eq(err, want);
	free(want);
	dev_config_free(&c);

	char *missing = h_strf("%s/missing.conf", dir);
	char *opts[] = {"outpost-device",   "--id", "dev-a", "--broker-host", "localhost",
	                "--batch-interval", "5s",   NULL};
	cr_assert_eq(dev_config__parse(&c, 7, opts, missing, err), 0, "%s", err);
	cr_expect_eq(dev_config_check(&c, err), -1);
	cr_expect_str_eq(err, "configuration: batch_interval: shorter than sample_interval",
	                 "no file read: none named");
	dev_config_free(&c);
	free(missing);
	free(path);
	free(dir);
}

/* The shipped example configuration is read as written: its empty values with a comment
 * (proxy, exec_command, spool_dir) are empty, not the comment's text. */
Test(dev_config, the_shipped_example_reads_as_written)
{
	struct dev_config c;
	char err[CFG_ERR_MAX] = "";
	char *example = h_strf("%s/device/outpost-device.conf.example", h_source_dir());
	char *argv[] = {"outpost-device", "--config", example, NULL};
	memset(&c, 0, sizeof(c));
	cr_assert_eq(dev_config_parse(&c, 3, argv, err), 0, "%s", err);
	cr_expect_str_eq(c.id, "device-0001");
	cr_expect_str_eq(c.proxy, "");
	cr_expect_str_eq(c.exec_command, "");
	cr_expect_str_eq(c.spool_dir, "/var/lib/outpost-device/spool", "empty: the default");
	cr_expect_str_eq(c.state_dir, "/var/lib/outpost-device");
	dev_config_free(&c);
	free(example);
}

/* A set_config was valid against the settings of its time; the configuration changed since
 * (batch_interval = 20s below the sample_interval = 30s the override holds). The agent must
 * start (an unattended device would be bricked): the override that conflicts is ignored, with
 * a warning naming config.override and its line, and the others still apply. The line stays,
 * and applies again once the configuration allows it. */
Test(dev_config, an_override_the_configuration_no_longer_allows_is_ignored)
{
	char *dir = h_tmpdir("devcfg"), *override = h_strf("%s/config.override", dir);
	struct dev_config c;
	struct warnings w = {"", 0};
	char err[CFG_ERR_MAX] = "";
	parse(&c, dir);
	const char *k1[] = {"sample_interval"}, *v1[] = {"30s"};
	cr_assert_eq(dev_config_set_overrides(&c, 1, k1, v1, err), 0, "%s", err);
	const char *k2[] = {"log_level"}, *v2[] = {"debug"};
	cr_assert_eq(dev_config_set_overrides(&c, 1, k2, v2, err), 0, "%s", err);
	dev_config_free(&c);

	const char *shorter[] = {"--batch-interval", "20s", NULL};
	parse_with(&c, dir, shorter, &w);
	cr_expect_eq(c.sample_interval_ms, 10000, "the conflicting override was applied");
	cr_expect_eq(c.batch_interval_ms, 20000);
	cr_expect_eq(c.log_level, 3, "the other override was dropped too");
	cr_expect_eq(w.n, 1, "%s", w.text);
	char *want = h_strf("%s:1: sample_interval = 30s: ignored: ", override);
	cr_expect(strstr(w.text, want), "%s", w.text);
	cr_expect(strstr(w.text, "batch_interval: shorter than sample_interval"), "%s", w.text);
	free(want);
	dev_config_free(&c);

	/* the line stays: with room for it again, it applies */
	memset(&w, 0, sizeof(w));
	const char *longer[] = {"--batch-interval", "40s", NULL};
	parse_with(&c, dir, longer, &w);
	cr_expect_eq(c.sample_interval_ms, 30000);
	cr_expect_eq(c.log_level, 3);
	cr_expect_eq(w.n, 0, "%s", w.text);
	dev_config_free(&c);

	/* together they are fine, one by one the first would not be: not judged one by one */
	const char *k3[] = {"sample_interval", "batch_interval"}, *v3[] = {"50s", "70s"};
	parse(&c, dir);
	cr_assert_eq(dev_config_set_overrides(&c, 2, k3, v3, err), 0, "%s", err);
	dev_config_free(&c);
	parse_with(&c, dir, longer, &w);
	cr_expect_eq(c.sample_interval_ms, 50000);
	cr_expect_eq(c.batch_interval_ms, 70000);
	cr_expect_eq(w.n, 0, "%s", w.text);
	dev_config_free(&c);
	free(override);
	free(dir);
}

/* config.override holds what set_config may set, nothing else: a line with another setting
 * (identity, trust, the command the exec collector runs) is ignored with a warning naming the
 * file and line, as is a value out of bounds or a line that is no setting. None of them stops
 * the agent. */
Test(dev_config, the_override_file_holds_only_remote_settings)
{
	char *dir = h_tmpdir("devcfg"), *override = h_strf("%s/config.override", dir);
	cr_assert_eq(h_write_text(override, "# by hand\n"
	                                    "broker_host = evil.example.com\n"
	                                    "ca = /tmp/evil-ca.crt\n"
	                                    "exec_command = touch /tmp/owned\n"
	                                    "poll_interval = 7s\n"
	                                    "sample_interval = 1ms\n"
	                                    "not a setting\n"
	                                    "log_level = \"debug\"   # quoted\n"),
	             0);
	struct dev_config c;
	struct warnings w = {"", 0};
	parse_with(&c, dir, NULL, &w);
	cr_expect_str_eq(c.broker_host, "localhost");
	cr_expect_str_eq(c.ca, "/etc/outpost/ca.crt");
	cr_expect_str_eq(c.exec_command, "");
	cr_expect_eq(c.poll_interval_ms, 7000);
	cr_expect_eq(c.sample_interval_ms, 10000);
	cr_expect_eq(c.log_level, 3);
	cr_expect_eq(w.n, 5, "%s", w.text);
	const char *want[] = {
	    ":2: broker_host: ignored: not a setting set_config may change", ":3: ca: ignored",
	    ":4: exec_command: ignored",
	    ":6: sample_interval: must be between 100ms and 1d; the line is ignored",
	    ":7: expected 'key = value'; the line is ignored"};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		char *line = h_strf("%s%s", override, want[i]);
		cr_expect(strstr(w.text, line), "no '%s' in %s", line, w.text);
		free(line);
	}
	cr_expect(strstr(w.text, "(sample_interval, batch_interval, batch_max_readings, "
				 "poll_interval, log_level)"),
		  "%s", w.text);
	dev_config_free(&c);
	free(override);
	free(dir);
}

/* An override file that cannot be read (here a directory in its place) never stops the agent:
 * it starts without the overrides, with a warning naming the file and the error. */
Test(dev_config, an_unreadable_override_file_is_ignored_with_a_warning)
{
	char *dir = h_tmpdir("devcfg"), *override = h_strf("%s/config.override", dir);
	cr_assert_eq(mkdir(override, 0700), 0);
	struct dev_config c;
	struct warnings w = {"", 0};
	parse_with(&c, dir, NULL, &w);
	cr_expect_eq(c.poll_interval_ms, 300000, "the defaults stay");
	cr_expect_eq(w.n, 1, "%s", w.text);
	char *want = h_strf("%s: read error (%s); the agent starts without the overrides",
			    override, strerror(EISDIR));
	cr_expect(strstr(w.text, want), "no '%s' in %s", want, w.text);
	free(want);
	dev_config_free(&c);
	rmdir(override);
	free(override);
	free(dir);
}

/* broker_host goes into the broker URLs (wss://HOST:PORT/path), the TLS name check and the
 * proxy's CONNECT request: a host name, an IPv4 address or a bare IPv6 address, nothing else
 * (a port in it was dialled as part of the name; a CR or LF reached the CONNECT request). */
Test(dev_config, broker_host_is_a_host_name_or_an_address)
{
	const char *good[] = {"broker.example.com", "localhost", "10.1.2.3", "fd00::1", "::1",
			      "broker-1.site_a.example", "::ffff:10.1.2.3"};
	struct {
		const char *host, *why;
	} bad[] = {
		{"broker.example.com:8883", "the ports are wss_port and mqtts_port"},
		{"[fd00::1]", "without brackets"},
		{"fd00::1::2", "not a host name or IP address"},
		{"broker\r\nX-Evil: 1", "letters, digits"},
		{"evil.example.com\n", "letters, digits"},
		{"two words", "letters, digits"},
		{"wss://broker", "not a host name or IP address"},
		{"broker/mqtt", "letters, digits"},
		{"user@broker", "letters, digits"},
		{"-broker", "starts with"},
		{".broker", "starts with"},
	};
	char err[CFG_ERR_MAX];
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]) + sizeof(bad) / sizeof(bad[0]); i++) {
		int ok = i < sizeof(good) / sizeof(good[0]);
		const char *host = ok ? good[i] : bad[i - sizeof(good) / sizeof(good[0])].host;
		char *argv[] = {"outpost-device", "--config", "/dev/null", "--id", "dev-a",
				"--broker-host", (char *)host, NULL};
		struct dev_config c;
		err[0] = '\0';
		cr_assert_eq(dev_config_parse(&c, 7, argv, err), 0, "%s", err);
		if (ok) {
			cr_expect_eq(dev_config_check(&c, err), 0, "%s: %s", host, err);
		} else {
			const char *why = bad[i - sizeof(good) / sizeof(good[0])].why;
			cr_expect_eq(dev_config_check(&c, err), -1, "%s was taken", host);
			cr_expect(!strncmp(err, "/dev/null: broker_host: ", 24), "%s", err);
			cr_expect(strstr(err, why), "%s: %s", host, err);
			cr_expect_null(strchr(err, '\n'), "the message is one line: %s", err);
		}
		dev_config_free(&c);
	}
}

/* ws_path goes into the WebSocket URL and the HTTP upgrade request: a path from '/' of printable
 * ASCII without spaces (empty is the default, /mqtt); anything else is refused, naming it. */
Test(dev_config, ws_path_is_a_path_of_printable_ascii)
{
	const char *good[] = {"/mqtt", "/", "", "/a/b-c_d.e~f?x=1&y=%20"};
	struct {
		const char *path, *why;
	} bad[] = {
		{"mqtt", "must start with '/'"},
		{"wss://broker/mqtt", "must start with '/'"},
		{"/two words", "only printable ASCII"},
		{"/mqtt\r\nX-Evil: 1", "only printable ASCII"},
		{"/mqtt\t", "only printable ASCII"},
		{"/caf\xc3\xa9", "only printable ASCII"},
		{"/\x7f", "only printable ASCII"},
	};
	size_t ng = sizeof(good) / sizeof(good[0]), nb = sizeof(bad) / sizeof(bad[0]);
	char err[CFG_ERR_MAX];
	for (size_t i = 0; i < ng + nb; i++) {
		int ok = i < ng;
		const char *path = ok ? good[i] : bad[i - ng].path;
		char *argv[] = {"outpost-device", "--config", "/dev/null", "--id", "dev-a",
				"--broker-host", "localhost", "--ws-path", (char *)path, NULL};
		struct dev_config c;
		err[0] = '\0';
		cr_assert_eq(dev_config_parse(&c, 9, argv, err), 0, "%s", err);
		if (ok) {
			cr_expect_eq(dev_config_check(&c, err), 0, "%s: %s", path, err);
		} else {
			cr_expect_eq(dev_config_check(&c, err), -1, "%s was taken", path);
			cr_expect(!strncmp(err, "/dev/null: ws_path: ", 20), "%s", err);
			cr_expect(strstr(err, bad[i - ng].why), "%s: %s", path, err);
			cr_expect_null(strchr(err, '\n'), "the message is one line: %s", err);
		}
		dev_config_free(&c);
	}
}
