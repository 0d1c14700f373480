/* test_bridge_config.c - outpost-bridge refuses a bad configuration at start: exit status 2
 * (usage/config error) within seconds, and one error line naming the file:line and key, the
 * path or the option to fix. Nothing else is needed to run: every case fails before the
 * bridge would reach the broker (a free port nobody listens on). A setting it accepts but
 * warns about (sqlite_sync below full) is said at start. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h_bridge.h"
#include "harness.h"
#include "store.h"

static char *dir;

static void setup(void)
{
	dir = h_tmpdir("bridge-config");
}

static void teardown(void)
{
	free(dir);
}

TestSuite(bridge_config, .init = setup, .fini = teardown);

/* <dir>/name with text; returns its path (caller frees). */
static char *write_file(const char *name, const char *text)
{
	char *path = h_strf("%s/%s", dir, name);
	cr_assert_eq(h_write_text(path, text), 0, "%s", path);
	return path;
}

/* outpost-bridge with a working PKI and store and ARGS (a shell fragment) exits 2 within 10 s
 * (h_sh kills it then: 137) and prints one error line that contains every needle. */
static void expect_refused(const char *args, const char *const *needles)
{
	char *out = NULL;
	char *cmd = h_strf("%s/bridge/outpost-bridge --pki-dir=%s --store=sqlite:%s/outpost.db"
	                   " --broker-port=%d %s",
	                   h_build_dir(), h_pki(), dir, h_free_port(), args);
	long long t0 = h_now_ms();
	int rc = h_sh(cmd, &out, 10);
	cr_expect_eq(rc, 2, "outpost-bridge %s: exit %d after %lld ms, output:\n%s", args, rc,
	             h_now_ms() - t0, out);
	cr_expect_eq(h_count(out, "\n"), 1, "outpost-bridge %s: want one line:\n%s", args, out);
	cr_expect(strstr(out, " outpost-bridge error: "), "outpost-bridge %s:\n%s", args, out);
	for (size_t i = 0; needles[i]; i++)
		cr_expect(strstr(out, needles[i]), "outpost-bridge %s: no '%s' in:\n%s", args,
		          needles[i], out);
	free(out);
	free(cmd);
}

Test(bridge_config, a_config_file_with_an_unknown_key, .timeout = 60)
{
	char *conf = write_file("unknown.conf", "# the bridge\nlog_level = debug\n"
	                                        "broker_prot = 8883\n");
	char *args = h_strf("--config %s", conf);
	char *where = h_strf("%s:3: broker_prot: unknown setting", conf);
	const char *const needles[] = {where, NULL};
	expect_refused(args, needles);
	free(where);
	free(args);
	free(conf);
}

Test(bridge_config, a_config_file_with_a_bad_value, .timeout = 60)
{
	char *conf = write_file("port0.conf", "log_level = info\n\nbroker_port = 0\n");
	char *args = h_strf("--config=%s", conf);
	char *where = h_strf("%s:3: broker_port: must be between 1 and 65535", conf);
	const char *const needles[] = {where, NULL};
	expect_refused(args, needles);
	free(where);
	free(args);
	free(conf);
	/* the same value on the command line */
	const char *const cmdline[] = {"command line: broker_port: must be between 1 and 65535",
	                               NULL};
	expect_refused("--broker-port=0", cmdline);
}

Test(bridge_config, a_store_url_of_an_unknown_kind, .timeout = 60)
{
	const char *const needles[] = {"store: mysql://x: store URL not understood", NULL};
	expect_refused("--store=mysql://x", needles);
}

Test(bridge_config, an_unknown_option, .timeout = 60)
{
	const char *const needles[] = {"command line: --bogus: unknown option", NULL};
	expect_refused("--bogus=1", needles);
	expect_refused("--bogus", needles);
}

Test(bridge_config, a_missing_ca_file, .timeout = 60)
{
	char *ca = h_strf("%s/no-such-ca.crt", dir);
	char *args = h_strf("--ca-file=%s", ca);
	const char *const needles[] = {ca, "cannot read CA certificate", NULL};
	expect_refused(args, needles);
	free(args);
	free(ca);
}

/* sqlite_sync below full is allowed (benchmarks) but said at start: acks then outrun what a
 * power cut keeps. The bridge runs on (no broker here) until h_sh stops it after 3 s. */
Test(bridge_config, a_relaxed_sqlite_sync_is_warned_about, .timeout = 60)
{
	const char *sync[] = {"normal", "off", "full"};
	for (size_t i = 0; i < 3; i++) {
		char *out = NULL;
		char *cmd = h_strf("%s/bridge/outpost-bridge --pki-dir=%s --store=sqlite:%s/s%zu.db"
		                   " --broker-port=%d --sqlite-sync=%s",
		                   h_build_dir(), h_pki(), dir, i, h_free_port(), sync[i]);
		h_sh(cmd, &out, 3);
		char *want = h_strf("warn: sqlite_sync=%s: a power cut can lose messages already"
		                    " acknowledged", sync[i]);
		cr_expect(strstr(out, "store ") || strstr(out, "broker "), "it ran:\n%s", out);
		if (i < 2)
			cr_expect(strstr(out, want), "--sqlite-sync=%s: no warning in:\n%s", sync[i],
			          out);
		else
			cr_expect(!strstr(out, "sqlite_sync"), "full: no warning:\n%s", out);
		free(want);
		free(cmd);
		free(out);
	}
}

/* A store the bridge cannot use: it exits 1 at once with one error line that says what to fix
 * (where it opened a read-only store file and retried the first write for ever, or exited with
 * "store schema not usable by this program"). */
static void expect_store_refused(const char *run_as, const char *store_dir, const char *url,
                                 const char *needle)
{
	char *out = NULL;
	/* a PKI and binary nobody can read: the build directory may be root's alone */
	char *cmd = h_strf("cp -r %s %s/pki && cp %s/bridge/outpost-bridge %s/ && chown -R"
	                   " 65534:65534 %s/pki && %s %s/outpost-bridge --pki-dir=%s/pki"
	                   " --store=%s --broker-port=%d",
	                   h_pki(), store_dir, h_build_dir(), store_dir, store_dir, run_as,
	                   store_dir, store_dir, url, h_free_port());
	int rc = h_sh(cmd, &out, 10);
	cr_expect_eq(rc, 1, "exit %d, output:\n%s", rc, out);
	cr_expect_eq(h_count(out, "\n"), 1, "want one line:\n%s", out);
	cr_expect(strstr(out, " outpost-bridge error: ") && strstr(out, needle), "no '%s' in:\n%s",
	          needle, out);
	free(out);
	free(cmd);
}

Test(bridge_config, a_store_file_the_bridge_cannot_write, .timeout = 60)
{
	if (geteuid() != 0)
		cr_skip_test("needs root, to run the bridge as another user");
	char tmp[] = "/tmp/outpost-test-ro-XXXXXX";
	cr_assert_not_null(mkdtemp(tmp));
	cr_assert_eq(chmod(tmp, 0755), 0);
	char *url = h_strf("sqlite:%s/s.db", tmp), *db = h_strf("%s/s.db", tmp), err[STORE_ERR_MAX];
	struct store *s = NULL;
	cr_assert_eq(store_open(url, NULL, &s, err), STORE_OK, "%s", err);
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK);
	store_close(s);
	cr_assert_eq(chmod(db, 0444), 0);
	char *run_as = h_strf("chown 65534 %s && setpriv --reuid=65534 --regid=65534 --clear-groups",
	                      tmp);
	char *want = h_strf("store: %s: the store file is read-only to this user (uid 65534): check"
	                    " the owner and mode",
	                    url);
	expect_store_refused(run_as, tmp, url, want);
	free(want);
	free(run_as);
	char *rm = h_strf("rm -rf %s", tmp);
	h_sh(rm, NULL, 30);
	free(rm);
	free(db);
	free(url);
}

Test(bridge_config, a_store_newer_than_the_bridge, .timeout = 60)
{
	char tmp[] = "/tmp/outpost-test-schema-XXXXXX", err[STORE_ERR_MAX];
	cr_assert_not_null(mkdtemp(tmp));
	char *url = h_strf("sqlite:%s/s.db", tmp);
	char *newer = h_strf("INSERT INTO schema_migrations (version, applied_at) VALUES (%d, 0)",
	                     STORE_SCHEMA_VERSION + 1);
	struct store *s = NULL;
	cr_assert_eq(store_open(url, NULL, &s, err), STORE_OK, "%s", err);
	cr_assert_eq(store_migrate(s, NULL, NULL), STORE_OK);
	cr_assert_eq(store_exec(s, newer), STORE_OK);
	store_close(s);
	char *want = h_strf("store %s: store schema %d is newer than this program's %d: upgrade"
	                    " outpost-bridge",
	                    url, STORE_SCHEMA_VERSION + 1, STORE_SCHEMA_VERSION);
	expect_store_refused("", tmp, url, want);
	free(want);
	free(newer);
	free(url);
	char *rm = h_strf("rm -rf %s", tmp);
	h_sh(rm, NULL, 30);
	free(rm);
}
