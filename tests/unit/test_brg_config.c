/* test_brg_config.c - outpost-bridge settings: defaults, derived paths, file/env/option
 * precedence, errors naming where the bad value came from. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brg_config.h"
#include "harness.h"

Test(brg_config, defaults_and_derived_paths)
{
	struct brg_config c;
	char err[CFG_ERR_MAX] = "";
	char *argv[] = {"outpost-bridge", "--pki-dir", "/x/pki", "--config", "/dev/null", NULL};
	cr_assert_eq(brg_config_parse(&c, 5, argv, err), 0, "%s", err);
	cr_expect_eq(c.broker_port, 8884);
	cr_expect_str_eq(c.share_group, "outpost-bridge");
	cr_expect_str_eq(c.former_share_group, "outpost-bridge", "the default group is taken away");
	cr_expect_str_eq(c.ca_file, "/x/pki/ca.crt");
	cr_expect_str_eq(c.key_file, "/x/pki/bridge.key");
	cr_expect(!strncmp(c.client_id, "outpost-bridge-", 15), "%s", c.client_id);
	cr_expect_eq(c.quarantine_after, 5);
	cr_expect_eq(c.deactivate_after_ms, 90LL * 86400000);
	cr_expect_eq(c.sqlite_sync, 2, "full by default: acks survive power cuts");
	brg_config_free(&c);
	char *plain[] = {"outpost-bridge", "--config", "/dev/null", "--share-group=", NULL};
	cr_assert_eq(brg_config_parse(&c, 4, plain, err), 0, "%s", err);
	cr_expect_str_eq(c.share_group, "", "empty: plain subscriptions, one bridge");
	brg_config_free(&c);
}

Test(brg_config, file_env_options_and_errors)
{
	char *dir = h_tmpdir("brgcfg"), *path = h_strf("%s/bridge.conf", dir);
	cr_assert_eq(
	    h_write_text(path, "# test\nstore = sqlite:/tmp/x.db\nworkers = 3\nquarantine_after = 7\n"),
	    0);
	struct brg_config c;
	char err[CFG_ERR_MAX] = "";
	setenv("OUTPOST_BRIDGE_WORKERS", "4", 1);
	char *argv[] = {"outpost-bridge", "--config", path, "--quarantine-after=9", NULL};
	cr_assert_eq(brg_config_parse(&c, 4, argv, err), 0, "%s", err);
	cr_expect_str_eq(c.store, "sqlite:/tmp/x.db");
	cr_expect_eq(c.workers, 4, "environment over file");
	cr_expect_eq(c.quarantine_after, 9, "option over file");
	brg_config_free(&c);
	unsetenv("OUTPOST_BRIDGE_WORKERS");

	cr_assert_eq(h_write_text(path, "workers = 3\nkeepalive = forever\n"), 0);
	char *bad[] = {"outpost-bridge", "--config", path, NULL};
	cr_expect_eq(brg_config_parse(&c, 3, bad, err), -1);
	cr_expect(strstr(err, "bridge.conf:2: keepalive"), "%s", err);
	brg_config_free(&c);
	char *bad2[] = {"outpost-bridge", "--config",  "/dev/null",
	                "--client-id",    "has space", NULL};
	cr_expect_eq(brg_config_parse(&c, 5, bad2, err), -1);
	cr_expect(strstr(err, "client_id"), "%s", err);
	brg_config_free(&c);
	char *bad3[] = {"outpost-bridge", "--config", "/dev/null", "--share-group", "a/b", NULL};
	cr_expect_eq(brg_config_parse(&c, 5, bad3, err), -1);
	cr_expect(strstr(err, "/dev/null: share_group: must not contain"), "%s", err);
	brg_config_free(&c);
	char *bad4[] = {"outpost-bridge", "--config", "/dev/null", "--former-share-group", "a+",
	                NULL};
	cr_expect_eq(brg_config_parse(&c, 5, bad4, err), -1);
	cr_expect(strstr(err, "/dev/null: former_share_group: must not contain"), "%s", err);
	brg_config_free(&c);
	free(path);
	free(dir);
}

/* The checks of the settings together name the file the settings came from, as the parser's
 * own errors do (they named none). */
Test(brg_config, errors_of_settings_together_name_the_file)
{
	char *dir = h_tmpdir("brgcfg"), *path = h_strf("%s/bridge.conf", dir);
	cr_assert_eq(h_write_text(path, "retry_min = 5s\nretry_max = 1s\n"), 0);
	struct brg_config c;
	char err[CFG_ERR_MAX] = "";
	char *argv[] = {"outpost-bridge", "--config", path, NULL};
	cr_expect_eq(brg_config_parse(&c, 3, argv, err), -1);
	char *want = h_strf("%s: retry_max: must not be below retry_min", path);
	cr_expect_str_eq(err, want);
	brg_config_free(&c);
	setenv("OUTPOST_BRIDGE_CONFIG", path, 1);
	char *env[] = {"outpost-bridge", "--client-id", "has space", NULL};
	cr_expect_eq(brg_config_parse(&c, 3, env, err), -1);
	unsetenv("OUTPOST_BRIDGE_CONFIG");
	cr_expect(!strncmp(err, path, strlen(path)) && strstr(err, ": client_id: "), "%s", err);
	brg_config_free(&c);
	free(want);
	free(path);
	free(dir);
}

/* The default client id: the host name as a topic-safe id; long names that differ only
 * past the cut (pod names) stay distinct. */
Test(brg_config, default_client_id_from_the_host_name)
{
	char a[BRG_CLIENT_ID_MAX], b[BRG_CLIENT_ID_MAX];
	brg_config_default_client_id("gw1.example.com", a);
	cr_expect_str_eq(a, "outpost-bridge-gw1-example-com");
	brg_config_default_client_id("outpost-bridge-deployment-7d9f8c6b5d-0000x1", a);
	brg_config_default_client_id("outpost-bridge-deployment-7d9f8c6b5d-0000x2", b);
	cr_expect_str_neq(a, b, "cut to the same prefix, told apart by the hash");
	cr_expect(!strncmp(a, "outpost-bridge-outpost-bridge-deployment-7d9f8-", 47), "%s", a);
	cr_expect_eq(strlen(a), 15 + 31 + 1 + 8, "%s", a);
	char host[256];
	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	brg_config_default_client_id(host, a);
	cr_expect_lt(strlen(a), BRG_CLIENT_ID_MAX);
}
