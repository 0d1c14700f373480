/* test_cfg.c - the settings parser: defaults, file, environment, command line, value syntax and
 * the error messages a user sees. */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cfg.h"
#include "harness.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct settings {
	char *broker_host;
	int64_t broker_port;
	int verbose;
	int64_t sample_interval_ms;
	int64_t spool_max;
	int log_level;
	char *device_id;
};

static const char *const levels[] = {"error", "warn", "info", "debug", NULL};

static const struct cfg_opt opts[] = {
	{"broker_host", CFG_STR, offsetof(struct settings, broker_host), 0, 253, "localhost",
	 "broker host name", NULL},
	{"broker_port", CFG_INT, offsetof(struct settings, broker_port), 1, 65535, "8883",
	 "broker port", NULL},
	{"verbose", CFG_BOOL, offsetof(struct settings, verbose), 0, 0, "false", "log more", NULL},
	{"sample_interval", CFG_DURATION, offsetof(struct settings, sample_interval_ms), 1000,
	 86400000, "10s", "time between samples", NULL},
	{"spool_max", CFG_SIZE, offsetof(struct settings, spool_max), 65536, 1LL << 40, "64MiB",
	 "spool size limit", NULL},
	{"log_level", CFG_ENUM, offsetof(struct settings, log_level), 0, 0, "info", "log level",
	 levels},
	{"device_id", CFG_STR, offsetof(struct settings, device_id), 0, 0, NULL, "device id", NULL},
};

#define PREFIX "OPTEST_"

/* Write text to a fresh file; returns its path (caller frees). */
static char *write_conf(const char *text)
{
	char *dir = h_tmpdir("cfg");
	char *path = h_strf("%s/test.conf", dir);
	cr_assert_eq(h_write_text(path, text), 0, "%s", path);
	free(dir);
	return path;
}

static void defaults(struct settings *s)
{
	char err[CFG_ERR_MAX] = "";
	memset(s, 0, sizeof(*s));
	cr_assert_eq(cfg_defaults(opts, N(opts), s, err), 0, "%s", err);
}

Test(cfg, defaults)
{
	struct settings s;
	defaults(&s);
	cr_expect_str_eq(s.broker_host, "localhost");
	cr_expect_eq(s.broker_port, 8883);
	cr_expect_eq(s.verbose, 0);
	cr_expect_eq(s.sample_interval_ms, 10000);
	cr_expect_eq(s.spool_max, 64LL << 20);
	cr_expect_eq(s.log_level, 2);
	cr_expect_null(s.device_id, "no default: stays NULL");
	cfg_free(opts, N(opts), &s);
	cr_expect_null(s.broker_host);
	cfg_free(opts, N(opts), &s); /* twice is harmless */
}

Test(cfg, durations)
{
	struct {
		const char *text;
		int64_t ms;
	} ok[] = {
		{"250ms", 250},	       {"10s", 10000},	     {"5m", 300000},
		{"2h", 7200000},       {"90d", 7776000000LL}, {"10", 10000},
		{"0", 0},	       {"1 s", 1000},	     {"10S", 10000},
		{"3min", 180000},      {"2sec", 2000},	     {"1day", 86400000},
		{"7days", 604800000},  {"1MS", 1},
	};
	for (size_t i = 0; i < N(ok); i++) {
		int64_t v = -1;
		cr_expect_eq(cfg_parse_duration(ok[i].text, &v), 0, "'%s'", ok[i].text);
		cr_expect_eq(v, ok[i].ms, "'%s' = %lld ms, want %lld", ok[i].text, (long long)v,
			     (long long)ok[i].ms);
	}
	const char *bad[] = {"", "ms", "s10", "-5s", "+5s", " 5s", "1.5h", "10x", "5mm", "10 s x",
			     "99999999999999999999", "106751991168d", "0x10s"};
	for (size_t i = 0; i < N(bad); i++) {
		int64_t v = 12345;
		cr_expect_eq(cfg_parse_duration(bad[i], &v), -1, "'%s' must be refused", bad[i]);
		cr_expect_eq(v, 12345, "'%s': output untouched on error", bad[i]);
	}
	int64_t v;
	cr_expect_eq(cfg_parse_duration("106751991167d", &v), 0, "largest whole number of days");
}

Test(cfg, sizes)
{
	struct {
		const char *text;
		int64_t bytes;
	} ok[] = {
		{"512", 512},
		{"64k", 65536},
		{"64K", 65536},
		{"64KiB", 65536},
		{"64kb", 65536},
		{"64MiB", 64LL << 20},
		{"10MB", 10LL << 20},
		{"1G", 1LL << 30},
		{"1GiB", 1LL << 30},
		{"3b", 3},
		{"4096 k", 4096LL << 10},
		{"8589934591g", 8589934591LL << 30}, /* the largest that fits in int64_t */
	};
	for (size_t i = 0; i < N(ok); i++) {
		int64_t v = -1;
		cr_expect_eq(cfg_parse_size(ok[i].text, &v), 0, "'%s'", ok[i].text);
		cr_expect_eq(v, ok[i].bytes, "'%s' = %lld", ok[i].text, (long long)v);
	}
	const char *bad[] = {"",	"k",	   "1T",	     "-1",
			     "1.5G", "64 KiBs", "8589934591gib0", "8589934592g"};
	for (size_t i = 0; i < N(bad); i++) {
		int64_t v = 777;
		cr_expect_eq(cfg_parse_size(bad[i], &v), -1, "'%s' must be refused", bad[i]);
		cr_expect_eq(v, 777);
	}
}

Test(cfg, booleans)
{
	const char *yes[] = {"1", "true", "yes", "on", "TRUE", "Yes", "ON"};
	const char *no[] = {"0", "false", "no", "off", "False", "NO"};
	const char *bad[] = {"", "2", "maybe", "y", "n", "truee", " true"};
	for (size_t i = 0; i < N(yes); i++) {
		int v = -1;
		cr_expect_eq(cfg_parse_bool(yes[i], &v), 0, "%s", yes[i]);
		cr_expect_eq(v, 1, "%s", yes[i]);
	}
	for (size_t i = 0; i < N(no); i++) {
		int v = -1;
		cr_expect_eq(cfg_parse_bool(no[i], &v), 0, "%s", no[i]);
		cr_expect_eq(v, 0, "%s", no[i]);
	}
	for (size_t i = 0; i < N(bad); i++) {
		int v = -1;
		cr_expect_eq(cfg_parse_bool(bad[i], &v), -1, "'%s'", bad[i]);
		cr_expect_eq(v, -1);
	}
}

Test(cfg, file_with_comments_and_quotes)
{
	char *path = write_conf("# Outpost test configuration\n"
				"   # an indented comment\n"
				"\n"
				"broker_host = broker.example.com   # trailing comment\n"
				"broker_port=1884\t# a tab before the comment\n"
				"  verbose   =   yes  \n"
				"sample-interval = 1500ms\n"
				"spool_max = 1G\n"
				"log_level = debug\n"
				"device_id = \"dev # 1\"  # quoted, with a hash, then a comment\n");
	struct settings s;
	char err[CFG_ERR_MAX] = "";
	defaults(&s);
	cr_assert_eq(cfg_load_file(opts, N(opts), &s, path, err), 0, "%s", err);
	cr_expect_str_eq(s.broker_host, "broker.example.com");
	cr_expect_eq(s.broker_port, 1884);
	cr_expect_eq(s.verbose, 1);
	cr_expect_eq(s.sample_interval_ms, 1500);
	cr_expect_eq(s.spool_max, 1LL << 30);
	cr_expect_eq(s.log_level, 3);
	cr_expect_str_eq(s.device_id, "dev # 1");
	cfg_free(opts, N(opts), &s);
	free(path);

	/* quotes keep spaces and '#'; an unquoted '#' without a space before it is data; the
	 * last occurrence of a key wins; '=' may appear in a value */
	path = write_conf("broker_host = \"  spaced  \"\n"
				"device_id = a#b=c\n"
				"device_id = x=y#z\n"
				"verbose = on\n"
				"verbose = off # changed my mind\n"
				"last_without_newline_is_read = 1\n");
	defaults(&s);
	cr_expect_eq(cfg_load_file(opts, N(opts), &s, path, err), -1);
	cr_expect(strstr(err, ":6: last_without_newline_is_read: unknown setting"), "%s", err);
	cr_expect_str_eq(s.broker_host, "  spaced  ");
	cr_expect_str_eq(s.device_id, "x=y#z");
	cr_expect_eq(s.verbose, 0);
	cfg_free(opts, N(opts), &s);
	free(path);

	/* nothing but a comment after '=' is an empty value (as in the shipped examples) */
	path = write_conf("broker_host =       # empty: the default elsewhere\n"
	                  "device_id =# also empty\n");
	defaults(&s);
	cr_expect_eq(cfg_load_file(opts, N(opts), &s, path, err), 0, "%s", err);
	cr_expect_str_eq(s.broker_host, "");
	cr_expect_str_eq(s.device_id, "");
	cfg_free(opts, N(opts), &s);
	free(path);

	path = write_conf("broker_host = \"\"\nlog_level = error");
	defaults(&s);
	cr_expect_eq(cfg_load_file(opts, N(opts), &s, path, err), 0, "%s", err);
	cr_expect_str_eq(s.broker_host, "", "an empty quoted string");
	cr_expect_eq(s.log_level, 0, "a last line without newline is read");
	cfg_free(opts, N(opts), &s);
	free(path);
}

/* Load a one-setting file and return the error text (static). */
static const char *file_error(const char *text, char **path_out)
{
	static char err[CFG_ERR_MAX];
	struct settings s;
	defaults(&s);
	err[0] = '\0';
	char *path = write_conf(text);
	int rc = cfg_load_file(opts, N(opts), &s, path, err);
	cr_expect_eq(rc, -1, "'%s' must be refused", text);
	cfg_free(opts, N(opts), &s);
	*path_out = path;
	return err;
}

Test(cfg, file_errors_name_file_line_and_key)
{
	struct {
		const char *text;
		const char *msg; /* expected after "<path>:" */
	} cases[] = {
		{"# c\n\nbogus = 1\n", "3: bogus: unknown setting"},
		{"broker_port = abc\n", "1: broker_port: expected an integer, got 'abc'"},
		{"broker_port = 12x\n", "1: broker_port: expected an integer, got '12x'"},
		{"broker_port = 0\n", "1: broker_port: must be between 1 and 65535"},
		{"broker_port = 65536\n", "1: broker_port: must be between 1 and 65535"},
		{"broker_port =\n", "1: broker_port: expected an integer, got ''"},
		{"verbose = maybe\n", "1: verbose: expected true or false, got 'maybe'"},
		{"sample_interval = 10x\n",
		 "1: sample_interval: expected a duration like 10s, 5m, 2h, 90d, got '10x'"},
		{"sample_interval = 500ms\n", "1: sample_interval: must be between 1s and 1d"},
		{"sample_interval = 2d\n", "1: sample_interval: must be between 1s and 1d"},
		{"spool_max = lots\n",
		 "1: spool_max: expected a size like 512k, 64MiB, 1G, got 'lots'"},
		{"spool_max = 1k\n", "1: spool_max: must be between 65536 and 1099511627776 bytes"},
		{"spool_max = 2048G\n",
		 "1: spool_max: must be between 65536 and 1099511627776 bytes"},
		{"log_level = loud\n", "1: log_level: 'loud' is not one of: error, warn, info, debug"},
		{"log_level = Debug\n", "1: log_level: 'Debug' is not one of: error, warn, info, debug"},
		{"just some words\n", "1: expected 'key = value'"},
		{"device_id = \"open\n", "1: device_id: missing closing quote"},
		{"device_id = \"a\" b\n", "1: device_id: unexpected text after the closing quote"},
	};
	for (size_t i = 0; i < N(cases); i++) {
		char *path = NULL;
		const char *err = file_error(cases[i].text, &path);
		char *want = h_strf("%s:%s", path, cases[i].msg);
		cr_expect_str_eq(err, want, "for '%s'", cases[i].text);
		free(want);
		free(path);
	}

	/* a string over its maximum length */
	char *host = malloc(300);
	memset(host, 'h', 254);
	host[254] = '\0';
	char *text = h_strf("broker_host = %s\n", host), *path = NULL;
	const char *err = file_error(text, &path);
	cr_expect(strstr(err, ":1: broker_host: longer than 253 characters"), "%s", err);
	free(path);
	free(text);
	host[253] = '\0';
	text = h_strf("broker_host = %s\n", host);
	path = write_conf(text);
	struct settings s;
	char e2[CFG_ERR_MAX] = "";
	defaults(&s);
	cr_expect_eq(cfg_load_file(opts, N(opts), &s, path, e2), 0, "253 characters fit: %s", e2);
	cr_expect_eq(strlen(s.broker_host), 253);
	cfg_free(opts, N(opts), &s);
	free(path);
	free(text);
	free(host);

	/* a line longer than the parser's buffer */
	char *longline = malloc(9000);
	memset(longline, 'x', 8999);
	longline[8999] = '\0';
	text = h_strf("device_id = %s\n", longline);
	err = file_error(text, &path);
	cr_expect(strstr(err, ":1: line longer than"), "%s", err);
	free(path);
	free(text);
	free(longline);

	/* a missing file */
	char missing[] = "/nonexistent-outpost-dir/x.conf";
	char e3[CFG_ERR_MAX] = "";
	defaults(&s);
	cr_expect_eq(cfg_load_file(opts, N(opts), &s, missing, e3), -1);
	cr_expect_str_eq(e3, "/nonexistent-outpost-dir/x.conf: No such file or directory");
	cfg_free(opts, N(opts), &s);
}

Test(cfg, environment)
{
	struct settings s;
	char err[CFG_ERR_MAX] = "";
	defaults(&s);
	setenv(PREFIX "BROKER_PORT", "1999", 1);
	setenv(PREFIX "BROKER_HOST", "env.example", 1);
	setenv(PREFIX "VERBOSE", "on", 1);
	setenv("OTHER_SAMPLE_INTERVAL", "5s", 1); /* another program's prefix: ignored */
	cr_assert_eq(cfg_load_env(opts, N(opts), &s, PREFIX, err), 0, "%s", err);
	cr_expect_eq(s.broker_port, 1999);
	cr_expect_str_eq(s.broker_host, "env.example");
	cr_expect_eq(s.verbose, 1);
	cr_expect_eq(s.sample_interval_ms, 10000);

	setenv(PREFIX "SAMPLE_INTERVAL", "0s", 1);
	cr_expect_eq(cfg_load_env(opts, N(opts), &s, PREFIX, err), -1);
	cr_expect_str_eq(err, "environment OPTEST_SAMPLE_INTERVAL: sample_interval: "
			      "must be between 1s and 1d");
	cfg_free(opts, N(opts), &s);
}

Test(cfg, set_by_name)
{
	struct settings s;
	char err[CFG_ERR_MAX] = "";
	defaults(&s);
	cr_expect_eq(cfg_set(opts, N(opts), &s, "sample-interval", "5m", "task 7", err), 0, "%s",
		     err);
	cr_expect_eq(s.sample_interval_ms, 300000);
	cr_expect_eq(cfg_set(opts, N(opts), &s, "nope", "1", "task 7", err), -1);
	cr_expect_str_eq(err, "task 7: nope: unknown setting");
	cr_expect_eq(cfg_set(opts, N(opts), &s, "sample_interval", "1y", "task 7", err), -1);
	cr_expect(strstr(err, "task 7: sample_interval: expected a duration"), "%s", err);
	cr_expect_eq(s.sample_interval_ms, 300000, "unchanged after an error");
	cfg_free(opts, N(opts), &s);
}

static int parse(struct settings *s, char **argv, const char *default_config, char *err)
{
	int argc = 0;
	while (argv[argc])
		argc++;
	memset(s, 0, sizeof(*s));
	return cfg_parse(opts, N(opts), s, argc, argv, PREFIX, default_config, err);
}

Test(cfg, precedence_option_env_file_default)
{
	char *path = write_conf("broker_port = 1001\n"
				"sample_interval = 20s\n"
				"log_level = warn\n");
	setenv(PREFIX "BROKER_PORT", "1002", 1);
	setenv(PREFIX "SAMPLE_INTERVAL", "30s", 1);
	struct settings s;
	char err[CFG_ERR_MAX] = "";
	char *argv[] = {"prog", "--config", path, "--broker-port", "1003", NULL};
	cr_assert_eq(parse(&s, argv, NULL, err), 0, "%s", err);
	cr_expect_eq(s.broker_port, 1003, "option beats environment and file");
	cr_expect_eq(s.sample_interval_ms, 30000, "environment beats file");
	cr_expect_eq(s.log_level, 1, "file beats default");
	cr_expect_eq(s.spool_max, 64LL << 20, "default when nothing else");
	cr_expect_str_eq(s.broker_host, "localhost");
	cfg_free(opts, N(opts), &s);

	/* the option wins even when it comes before --config on the command line */
	char *argv2[] = {"prog", "--broker-port=1004", "-c", path, NULL};
	cr_assert_eq(parse(&s, argv2, NULL, err), 0, "%s", err);
	cr_expect_eq(s.broker_port, 1004);
	cfg_free(opts, N(opts), &s);
	free(path);
}

Test(cfg, config_file_sources)
{
	char *a = write_conf("broker_port = 2001\n"), *b = write_conf("broker_port = 2002\n");
	char *c = write_conf("broker_port = 2003\n");
	struct settings s;
	char err[CFG_ERR_MAX] = "";

	char *none[] = {"prog", NULL};
	cr_assert_eq(parse(&s, none, c, err), 0, "%s", err);
	cr_expect_eq(s.broker_port, 2003, "the default config file is read when it exists");
	cfg_free(opts, N(opts), &s);

	cr_assert_eq(parse(&s, none, "/nonexistent-outpost-dir/x.conf", err), 0, "%s", err);
	cr_expect_eq(s.broker_port, 8883, "a missing default config file is not an error");
	cfg_free(opts, N(opts), &s);

	setenv(PREFIX "CONFIG", b, 1);
	cr_assert_eq(parse(&s, none, c, err), 0, "%s", err);
	cr_expect_eq(s.broker_port, 2002, "OPTEST_CONFIG replaces the default file");
	cfg_free(opts, N(opts), &s);

	char *eq[] = {"prog", h_strf("--config=%s", a), NULL};
	cr_assert_eq(parse(&s, eq, c, err), 0, "%s", err);
	cr_expect_eq(s.broker_port, 2001, "--config beats OPTEST_CONFIG");
	cfg_free(opts, N(opts), &s);
	free(eq[1]);

	char *missing[] = {"prog", "--config", "/nonexistent-outpost-dir/x.conf", NULL};
	cr_expect_eq(parse(&s, missing, c, err), -1, "an explicit config file must exist");
	cr_expect_str_eq(err, "/nonexistent-outpost-dir/x.conf: No such file or directory");
	cfg_free(opts, N(opts), &s);
	free(a);
	free(b);
	free(c);
}

/* The file cfg_parse reads, for the messages of a program's own checks: the default one too
 * (they named no file then), and none when there is none. */
Test(cfg, config_file_names_the_file_read)
{
	char *a = write_conf("broker_port = 2001\n"), *b = write_conf("broker_port = 2002\n");
	char *c = write_conf("broker_port = 2003\n");
	const char *missing = "/nonexistent-outpost-dir/x.conf";
	char *none[] = {"prog", NULL}, *opt[] = {"prog", "-c", a, NULL};
	cr_expect_str_eq(cfg_config_file(1, none, PREFIX, c), c, "the default file");
	cr_expect_null(cfg_config_file(1, none, PREFIX, missing), "no file: none");
	cr_expect_null(cfg_config_file(1, none, PREFIX, NULL));
	setenv(PREFIX "CONFIG", b, 1);
	cr_expect_str_eq(cfg_config_file(1, none, PREFIX, c), b);
	cr_expect_str_eq(cfg_config_file(3, opt, PREFIX, c), a);
	unsetenv(PREFIX "CONFIG");
	free(a);
	free(b);
	free(c);
}

/* A default config file that exists but cannot be read is an error naming it, not a silent
 * start on the defaults (a PostgreSQL bridge would start on a fresh SQLite file). Run as an
 * unprivileged user: root reads any file. */
Test(cfg, an_unreadable_default_config_file_is_an_error)
{
	char *c = write_conf("broker_port = 2003\n");
	cr_assert_eq(chmod(c, 0), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (geteuid() == 0 && (setgid(65534) || setuid(65534)))
			_exit(10);
		struct settings s;
		char err[CFG_ERR_MAX] = "";
		char *none[] = {"prog", NULL};
		int rc = parse(&s, none, c, err);
		_exit(rc == -1 && strstr(err, c) && strstr(err, "Permission denied") ? 0 : 1);
	}
	int st = 0;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
	chmod(c, 0600);
	free(c);
}

Test(cfg, an_empty_config_variable_is_an_error)
{
	struct settings s;
	char err[CFG_ERR_MAX] = "";
	char *none[] = {"prog", NULL};
	setenv(PREFIX "CONFIG", "", 1);
	cr_expect_eq(parse(&s, none, NULL, err), -1);
	cr_expect(strstr(err, PREFIX "CONFIG is set but empty"), "%s", err);
	cfg_free(opts, N(opts), &s);
	unsetenv(PREFIX "CONFIG");
	char *eq[] = {"prog", "--config=", NULL};
	cr_expect_eq(parse(&s, eq, NULL, err), -1);
	cr_expect(strstr(err, "--config needs a file"), "%s", err);
	cfg_free(opts, N(opts), &s);
}

Test(cfg, command_line_forms)
{
	struct settings s;
	char err[CFG_ERR_MAX] = "";
	char *argv[] = {"prog",	     "--verbose", "--log-level",    "debug", "--spool_max=1GiB",
			"--device-id", "dev-a",	    "--broker-host=", NULL};
	cr_assert_eq(parse(&s, argv, NULL, err), 0, "%s", err);
	cr_expect_eq(s.verbose, 1, "a bare boolean option means true");
	cr_expect_eq(s.log_level, 3);
	cr_expect_eq(s.spool_max, 1LL << 30);
	cr_expect_str_eq(s.device_id, "dev-a");
	cr_expect_str_eq(s.broker_host, "", "--name= sets an empty value");
	cfg_free(opts, N(opts), &s);

	char *argv2[] = {"prog", "--verbose", "false", NULL};
	cr_assert_eq(parse(&s, argv2, NULL, err), 0, "%s", err);
	cr_expect_eq(s.verbose, 0, "a boolean option takes an explicit value");
	cfg_free(opts, N(opts), &s);

	char *argv3[] = {"prog", "--verbose", NULL};
	cr_assert_eq(parse(&s, argv3, NULL, err), 0, "%s", err);
	cr_expect_eq(s.verbose, 1, "a bare boolean option at the end");
	cfg_free(opts, N(opts), &s);
}

Test(cfg, command_line_errors)
{
	struct {
		char *argv[5];
		const char *msg;
	} cases[] = {
		{{"prog", "--bogus", NULL}, "command line: --bogus: unknown option"},
		{{"prog", "--bogus=1", NULL}, "command line: --bogus: unknown option"},
		{{"prog", "extra", NULL}, "command line: unexpected argument 'extra'"},
		{{"prog", "-x", NULL}, "command line: unexpected argument '-x'"},
		{{"prog", "--broker-port", NULL}, "command line: --broker_port needs a value"},
		{{"prog", "--broker-port=0", NULL},
		 "command line: broker_port: must be between 1 and 65535"},
		{{"prog", "--sample-interval", "forever", NULL},
		 "command line: sample_interval: expected a duration like 10s, 5m, 2h, 90d, got "
		 "'forever'"},
		{{"prog", "--config", NULL}, "command line: --config needs a file"},
	};
	for (size_t i = 0; i < N(cases); i++) {
		struct settings s;
		char err[CFG_ERR_MAX] = "";
		cr_expect_eq(parse(&s, cases[i].argv, NULL, err), -1, "case %zu", i);
		cr_expect_str_eq(err, cases[i].msg, "case %zu", i);
		cfg_free(opts, N(opts), &s);
	}
}

Test(cfg, help_and_version)
{
	struct settings s;
	char err[CFG_ERR_MAX] = "";
	char *h1[] = {"prog", "--help", NULL};
	char *h2[] = {"prog", "--broker-port", "5", "-h", NULL};
	char *v1[] = {"prog", "--version", NULL};
	char *v2[] = {"prog", "-V", NULL};
	char *both[] = {"prog", "--bogus", "--help", NULL};
	cr_expect_eq(parse(&s, h1, NULL, err), 1);
	cr_expect_eq(parse(&s, h2, NULL, err), 1);
	cr_expect_eq(parse(&s, v1, NULL, err), 2);
	cr_expect_eq(parse(&s, v2, NULL, err), 2);
	cr_expect_eq(parse(&s, both, NULL, err), 1, "--help wins over a bad option");
	char *after_bool[] = {"prog", "--verbose", "-h", NULL};
	cr_expect_eq(parse(&s, after_bool, NULL, err), 1, "a bool does not take -h as its value");
	cfg_free(opts, N(opts), &s);
	/* "-h" as the value of an option is that value, not a request for help */
	char *value[] = {"prog", "--device-id", "-h", "--verbose", NULL};
	cr_expect_eq(parse(&s, value, NULL, err), 0, "%s", err);
	cr_expect_str_eq(s.device_id, "-h");
	cr_expect(s.verbose);
	cfg_free(opts, N(opts), &s);

	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	cr_assert_not_null(f);
	cfg_print_help(f, opts, N(opts), PREFIX);
	fclose(f);
	cr_expect(strstr(text, "--broker-port"), "%s", text);
	cr_expect(strstr(text, "--sample-interval"), "%s", text);
	cr_expect(strstr(text, "[8883]"), "defaults shown: %s", text);
	cr_expect(strstr(text, "(error|warn|info|debug)"), "choices shown: %s", text);
	cr_expect(strstr(text, "OPTEST_<NAME>"), "%s", text);
	free(text);
}

/* A string with a minimum length: empty is refused wherever it comes from, with its source. */
Test(cfg, a_required_string_must_not_be_empty)
{
	static const struct cfg_opt req[] = {
		{"broker_host", CFG_STR, offsetof(struct settings, broker_host), 1, 253, "localhost",
		 "broker host name", NULL},
	};
	struct settings s;
	char err[CFG_ERR_MAX] = "";
	char *ok[] = {"prog", "--broker-host", "b", NULL}, *empty[] = {"prog", "--broker-host=", NULL};
	memset(&s, 0, sizeof(s));
	cr_expect_eq(cfg_parse(req, N(req), &s, 3, ok, PREFIX, NULL, err), 0, "%s", err);
	cr_expect_str_eq(s.broker_host, "b");
	cfg_free(req, N(req), &s);
	memset(&s, 0, sizeof(s));
	cr_expect_eq(cfg_parse(req, N(req), &s, 2, empty, PREFIX, NULL, err), -1);
	cr_expect_str_eq(err, "command line: broker_host: must not be empty");
	cfg_free(req, N(req), &s);
	memset(&s, 0, sizeof(s));
	setenv(PREFIX "BROKER_HOST", "", 1);
	cr_expect_eq(cfg_parse(req, N(req), &s, 1, ok, PREFIX, NULL, err), -1);
	cr_expect(strstr(err, "environment OPTEST_BROKER_HOST: broker_host: must not be empty"),
		  "%s", err);
	unsetenv(PREFIX "BROKER_HOST");
	cfg_free(req, N(req), &s);
}

/* What a cfg_read_file callback saw: "line-number key=value" or "line-number !reason". */
struct seen {
	char text[2048];
	int stop_at; /* line number at which to stop, 0: never */
};

static int see_line(void *arg, const char *src, const char *key, const char *value, char *err)
{
	struct seen *s = arg;
	const char *line = strrchr(src, ':') + 1;
	size_t len = strlen(s->text);
	if (key)
		snprintf(s->text + len, sizeof(s->text) - len, "%s %s=%s\n", line, key, value);
	else
		snprintf(s->text + len, sizeof(s->text) - len, "%s !%s\n", line,
			 err + strlen(src) + 2); /* after "path:line: " */
	if (atoi(line) == s->stop_at) {
		snprintf(err, CFG_ERR_MAX, "stopped");
		return -1;
	}
	return 0;
}

/* cfg_read_file hands each line to its caller, one that is not "key = value" too (with the
 * reason, as cfg_load_file would give it), and reads on past it when the caller does: past a
 * line longer than the buffer as a whole, counting it as one line. Values are as
 * cfg_load_file applies them: unknown keys and bad values are the caller's to judge. */
Test(cfg, read_file_hands_every_line_to_the_caller)
{
	char *longline = malloc(20000);
	memset(longline, 'x', 19999);
	longline[19999] = '\0';
	char *text = h_strf("# comment\n\nbogus = 1\nno equals sign\ndevice_id = %s\n"
			    "broker_port = \"12 # 3\"  # note\nx = \"open\n"
			    "log_level = debug # note\nlast=1",
			    longline);
	char *path = write_conf(text);
	struct seen s = {"", 0};
	char err[CFG_ERR_MAX] = "";
	cr_expect_eq(cfg_read_file(path, see_line, &s, err), 0, "%s", err);
	cr_expect_str_eq(s.text, "3 bogus=1\n"
				 "4 !expected 'key = value'\n"
				 "5 !line longer than 8190 bytes\n"
				 "6 broker_port=12 # 3\n"
				 "7 !x: missing closing quote\n"
				 "8 log_level=debug\n"
				 "9 last=1\n");
	/* the caller stops the read */
	struct seen stop = {"", 4};
	cr_expect_eq(cfg_read_file(path, see_line, &stop, err), -1);
	cr_expect_str_eq(err, "stopped");
	cr_expect_str_eq(stop.text, "3 bogus=1\n4 !expected 'key = value'\n");
	struct seen stop_long = {"", 5};
	cr_expect_eq(cfg_read_file(path, see_line, &stop_long, err), -1);
	cr_expect_eq(h_count(stop_long.text, "\n"), 3, "%s", stop_long.text);
	cr_expect_eq(cfg_read_file("/nonexistent-outpost-dir/x.conf", see_line, &s, err), -1);
	cr_expect_str_eq(err, "/nonexistent-outpost-dir/x.conf: No such file or directory");
	free(path);
	free(text);
	free(longline);
}

/* A NUL byte in a line (a binary or damaged file) is refused with its place: it neither ends
 * the line early (which took it for a line too long, swallowed the next line and numbered
 * every line after it one too low) nor hides what follows it. */
Test(cfg, a_nul_byte_is_refused_and_later_lines_keep_their_numbers)
{
	static const char text[] = "a=1\nb=2\0junk\nc=3\nd=4\n";
	char *dir = h_tmpdir("cfg"), *path = h_strf("%s/nul.conf", dir);
	cr_assert_eq(h_write_file(path, text, sizeof(text) - 1), 0);
	struct seen s = {"", 0};
	char err[CFG_ERR_MAX] = "";
	cr_expect_eq(cfg_read_file(path, see_line, &s, err), 0, "%s", err);
	cr_expect_str_eq(s.text, "1 a=1\n"
	                         "2 !NUL byte at column 4 (not a text file?)\n"
	                         "3 c=3\n"
	                         "4 d=4\n");

	/* the same for the settings themselves: the read stops there */
	static const char conf[] = "broker_port = 2001\nverbose = yes\0junk\n";
	cr_assert_eq(h_write_file(path, conf, sizeof(conf) - 1), 0);
	struct settings st;
	defaults(&st);
	cr_expect_eq(cfg_load_file(opts, N(opts), &st, path, err), -1);
	char *want = h_strf("%s:2: NUL byte at column 14 (not a text file?)", path);
	cr_expect_str_eq(err, want);
	free(want);
	cfg_free(opts, N(opts), &st);
	free(path);
	free(dir);
}

/* A config file deep in a long directory: the message still names the file, its line and the
 * key, with the reason; the start of the directory path gives way (the path took the 128 bytes
 * meant for it and the line number, and the message was cut before the key). */
Test(cfg, errors_from_a_long_path_keep_file_line_and_key)
{
	char *base = h_tmpdir("cfg"), name[201];
	memset(name, 'd', 200);
	name[200] = '\0';
	char *dir = h_strf("%s/%s", base, name), *path = h_strf("%s/device.conf", dir);
	cr_assert_eq(mkdir(dir, 0700), 0);
	cr_assert_eq(h_write_text(path, "# c\nbroker_port = 0\n"), 0);
	struct settings s;
	char err[CFG_ERR_MAX] = "";
	defaults(&s);
	cr_expect_eq(cfg_load_file(opts, N(opts), &s, path, err), -1);
	cr_expect_str_eq(err, ".../device.conf:2: broker_port: must be between 1 and 65535",
	                 "whole directory names only");
	cfg_free(opts, N(opts), &s);

	/* a name of its own that long: cut anywhere, the line and the key still there */
	char *deep = h_strf("%s/%s.conf", dir, name);
	cr_assert_eq(h_write_text(deep, "bogus = 1\n"), 0);
	defaults(&s);
	cr_expect_eq(cfg_load_file(opts, N(opts), &s, deep, err), -1);
	cr_expect(!strncmp(err, "...d", 4) && strstr(err, "d.conf:1: bogus: unknown setting"), "%s",
	          err);
	cfg_free(opts, N(opts), &s);

	char *missing = h_strf("%s/missing.conf", dir);
	cr_expect_eq(cfg_load_file(opts, N(opts), &s, missing, err), -1);
	cr_expect_str_eq(err, ".../missing.conf: No such file or directory");
	cfg_free(opts, N(opts), &s);
	free(missing);
	free(deep);
	free(path);
	free(dir);
	free(base);
}
