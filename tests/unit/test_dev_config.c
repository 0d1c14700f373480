/* test_dev_config.c - outpost-device settings: remote set_config overrides are all or nothing,
 * persisted atomically, and survive a restart. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "dev_config.h"
#include "harness.h"

static void parse(struct dev_config *c, const char *state_dir)
{
	char err[CFG_ERR_MAX] = "";
	char *argv[] = {"outpost-device", "--config", "/dev/null",	 "--id",
			"dev-a",	  "--broker-host", "localhost", "--state-dir",
			(char *)state_dir, NULL};
	cr_assert_eq(dev_config_parse(c, 9, argv, err), 0, "%s", err);
	cr_assert_eq(dev_config_load_overrides(c, err), 0, "%s", err);
	cr_assert_eq(dev_config_check(c, err), 0, "%s", err);
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
