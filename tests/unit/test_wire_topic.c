/* test_wire_topic.c - id rules and the outpost/v1/<id>/... topic tree: build, parse, refuse. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "wire_topic.h"

static const char *const all_suffixes[WIRE_TOPIC_COUNT] = {
	"birth", "telemetry", "ack", "tasks/poll", "tasks", "tasks/result", "status",
};

Test(wire_topic, id_rules)
{
	char id64[WIRE_ID_MAX + 1], id65[WIRE_ID_MAX + 2];
	memset(id64, 'x', WIRE_ID_MAX);
	id64[WIRE_ID_MAX] = '\0';
	memset(id65, 'x', WIRE_ID_MAX + 1);
	id65[WIRE_ID_MAX + 1] = '\0';

	cr_expect_eq(wire_id_check("a"), WIRE_OK);
	cr_expect_eq(wire_id_check("Dev_01-AZ-az-09"), WIRE_OK);
	cr_expect_eq(wire_id_check(id64), WIRE_OK, "exactly %d characters is valid", WIRE_ID_MAX);
	cr_expect_eq(wire_id_check(id65), WIRE_EID, "%d characters is one too many",
		     WIRE_ID_MAX + 1);
	cr_expect_eq(wire_id_check(""), WIRE_EID);
	cr_expect_eq(wire_id_check(NULL), WIRE_EID);

	/* Every character outside [A-Za-z0-9_-] is refused, in any position. */
	size_t accepted = 0;
	for (int c = 1; c < 256; c++) {
		char id[4] = {'a', (char)c, 'b', '\0'};
		int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			 (c >= '0' && c <= '9') || c == '_' || c == '-';
		int rc = wire_id_check(id);
		cr_expect_eq(rc, ok ? WIRE_OK : WIRE_EID, "character 0x%02x", c);
		accepted += rc == WIRE_OK;
	}
	cr_expect_eq(accepted, 26 + 26 + 10 + 2);
	/* MQTT wildcards and separators in particular */
	cr_expect_eq(wire_id_check("+"), WIRE_EID);
	cr_expect_eq(wire_id_check("#"), WIRE_EID);
	cr_expect_eq(wire_id_check("a/b"), WIRE_EID);
	cr_expect_eq(wire_id_check("dev.a"), WIRE_EID);
	cr_expect_eq(wire_id_check("d\xc3\xa9v"), WIRE_EID);
}

Test(wire_topic, id_check_n_uses_the_length)
{
	cr_expect_eq(wire_id_check_n("dev-a", 5), WIRE_OK);
	cr_expect_eq(wire_id_check_n("dev-a/xyz", 5), WIRE_OK, "only the first len bytes count");
	cr_expect_eq(wire_id_check_n("dev\0a", 5), WIRE_EID, "embedded NUL");
	cr_expect_eq(wire_id_check_n("dev-a", 0), WIRE_EID);
	cr_expect_eq(wire_id_check_n(NULL, 3), WIRE_EID);
	char id65[WIRE_ID_MAX + 1];
	memset(id65, 'a', sizeof(id65));
	cr_expect_eq(wire_id_check_n(id65, WIRE_ID_MAX), WIRE_OK);
	cr_expect_eq(wire_id_check_n(id65, WIRE_ID_MAX + 1), WIRE_EID);
}

Test(wire_topic, reserved_prefix_is_not_a_device)
{
	cr_expect_eq(wire_device_id_check("outpost-bridge"), WIRE_EID);
	cr_expect_eq(wire_device_id_check("outpost-operator"), WIRE_EID);
	cr_expect_eq(wire_device_id_check("outpost-"), WIRE_EID);
	/* but the same ids are valid identities */
	cr_expect_eq(wire_id_check("outpost-bridge"), WIRE_OK);
	/* and only the exact prefix is reserved */
	cr_expect_eq(wire_device_id_check("outpost"), WIRE_OK);
	cr_expect_eq(wire_device_id_check("outpost_x"), WIRE_OK);
	cr_expect_eq(wire_device_id_check("Outpost-x"), WIRE_OK);
	cr_expect_eq(wire_device_id_check("my-outpost-1"), WIRE_OK);
	cr_expect_eq(wire_device_id_check("bad id"), WIRE_EID);
	cr_expect_eq(wire_device_id_check(NULL), WIRE_EID);
}

Test(wire_topic, suffixes)
{
	for (int t = 0; t < WIRE_TOPIC_COUNT; t++)
		cr_expect_str_eq(wire_topic_suffix((enum wire_topic)t), all_suffixes[t]);
	cr_expect_null(wire_topic_suffix((enum wire_topic)WIRE_TOPIC_COUNT));
	cr_expect_null(wire_topic_suffix((enum wire_topic)-1));
}

Test(wire_topic, build_and_parse_round_trip)
{
	char id64[WIRE_ID_MAX + 1];
	memset(id64, 'Z', WIRE_ID_MAX);
	id64[WIRE_ID_MAX] = '\0';
	const char *ids[] = {"a", "dev-a", "device_0001", id64};

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		for (int t = 0; t < WIRE_TOPIC_COUNT; t++) {
			char buf[WIRE_TOPIC_MAX], want[256], id[WIRE_ID_MAX + 1];
			enum wire_topic got = WIRE_TOPIC_COUNT;
			snprintf(want, sizeof(want), "outpost/v1/%s/%s", ids[i], all_suffixes[t]);
			cr_assert_eq(wire_topic_build(buf, sizeof(buf), (enum wire_topic)t, ids[i]),
				     WIRE_OK, "%s", want);
			cr_expect_str_eq(buf, want);
			cr_assert_eq(wire_topic_parse(buf, strlen(buf), id, &got), WIRE_OK, "%s",
				     buf);
			cr_expect_eq(got, (enum wire_topic)t, "%s", buf);
			cr_expect_str_eq(id, ids[i]);
		}
	}
}

Test(wire_topic, build_capacity_is_exact)
{
	const char *want = "outpost/v1/dev-a/tasks/result";
	size_t n = strlen(want);
	char buf[64];
	cr_expect_eq(wire_topic_build(buf, n + 1, WIRE_TOPIC_TASKS_RESULT, "dev-a"), WIRE_OK);
	cr_expect_str_eq(buf, want);
	cr_expect_eq(wire_topic_build(buf, n, WIRE_TOPIC_TASKS_RESULT, "dev-a"), WIRE_ELIMIT,
		     "no room for the NUL");
	cr_expect_eq(wire_topic_build(buf, 0, WIRE_TOPIC_TASKS_RESULT, "dev-a"), WIRE_ELIMIT);
}

Test(wire_topic, build_refuses_bad_input)
{
	char buf[WIRE_TOPIC_MAX], id65[WIRE_ID_MAX + 2];
	memset(id65, 'a', WIRE_ID_MAX + 1);
	id65[WIRE_ID_MAX + 1] = '\0';
	cr_expect_eq(wire_topic_build(buf, sizeof(buf), WIRE_TOPIC_TELEMETRY, "+"), WIRE_EID);
	cr_expect_eq(wire_topic_build(buf, sizeof(buf), WIRE_TOPIC_TELEMETRY, "a/b"), WIRE_EID);
	cr_expect_eq(wire_topic_build(buf, sizeof(buf), WIRE_TOPIC_TELEMETRY, ""), WIRE_EID);
	cr_expect_eq(wire_topic_build(buf, sizeof(buf), WIRE_TOPIC_TELEMETRY, NULL), WIRE_EID);
	cr_expect_eq(wire_topic_build(buf, sizeof(buf), WIRE_TOPIC_TELEMETRY, id65), WIRE_EID);
	cr_expect_eq(wire_topic_build(buf, sizeof(buf), (enum wire_topic)WIRE_TOPIC_COUNT, "dev-a"),
		     WIRE_EINVAL);
	cr_expect_eq(wire_topic_build(NULL, 10, WIRE_TOPIC_TELEMETRY, "dev-a"), WIRE_EINVAL);
}

Test(wire_topic, parse_refuses_everything_else)
{
	char id65[WIRE_ID_MAX + 2], long_topic[200];
	memset(id65, 'a', WIRE_ID_MAX + 1);
	id65[WIRE_ID_MAX + 1] = '\0';
	snprintf(long_topic, sizeof(long_topic), "outpost/v1/%s/telemetry", id65);
	const char *bad[] = {
		"",
		"outpost/v1/",
		"outpost/v1/dev-a",
		"outpost/v1/dev-a/",
		"outpost/v1//telemetry",
		"outpost/v2/dev-a/telemetry",
		"Outpost/v1/dev-a/telemetry",
		"/outpost/v1/dev-a/telemetry",
		"xoutpost/v1/dev-a/telemetry",
		"outpost/v1/+/telemetry",
		"outpost/v1/#",
		"outpost/v1/dev-a/#",
		"outpost/v1/dev-a/+",
		"outpost/v1/dev-a/tasks/+",
		"outpost/v1/dev-a/telemetry/",
		"outpost/v1/dev-a/telemetry/x",
		"outpost/v1/dev-a/tasks/",
		"outpost/v1/dev-a/tasks/other",
		"outpost/v1/dev-a/Telemetry",
		"outpost/v1/dev-a//telemetry",
		"outpost/v1/dev.a/telemetry",
		"outpost/v1/dev a/telemetry",
		"outpost/v1/dev-a/poll",
		"outpost/v1/dev-a/result",
		long_topic,
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char id[WIRE_ID_MAX + 1];
		enum wire_topic t;
		cr_expect_eq(wire_topic_parse(bad[i], strlen(bad[i]), id, &t), WIRE_ETOPIC, "'%s'",
			     bad[i]);
	}
	/* embedded NUL inside the given length */
	const char nul[] = "outpost/v1/dev-a/telemetry\0";
	char id[WIRE_ID_MAX + 1];
	enum wire_topic t;
	cr_expect_eq(wire_topic_parse(nul, sizeof(nul) - 1, id, &t), WIRE_ETOPIC);
	const char nul_id[] = "outpost/v1/de\0a/telemetry";
	cr_expect_eq(wire_topic_parse(nul_id, sizeof(nul_id) - 1, id, &t), WIRE_ETOPIC);
	cr_expect_eq(wire_topic_parse(NULL, 0, id, &t), WIRE_ETOPIC);
	cr_expect_eq(wire_topic_parse("outpost/v1/dev-a/ack", 20, NULL, &t), WIRE_ETOPIC);
	cr_expect_eq(wire_topic_parse("outpost/v1/dev-a/ack", 20, id, NULL), WIRE_ETOPIC);
}

Test(wire_topic, parse_reads_only_len_bytes)
{
	/* MQTT topics are not NUL-terminated: the length decides. */
	const char *buf = "outpost/v1/dev-a/tasks/pollXYZ";
	char id[WIRE_ID_MAX + 1];
	enum wire_topic t = WIRE_TOPIC_COUNT;
	cr_expect_eq(wire_topic_parse(buf, strlen(buf) - 3, id, &t), WIRE_OK);
	cr_expect_eq(t, WIRE_TOPIC_TASKS_POLL);
	cr_expect_str_eq(id, "dev-a");
	cr_expect_eq(wire_topic_parse(buf, strlen(buf) - 5, id, &t), WIRE_ETOPIC,
		     "'tasks/p' is not a topic");
	cr_expect_eq(wire_topic_parse(buf, strlen(buf) - 8, id, &t), WIRE_OK, "'tasks'");
	cr_expect_eq(t, WIRE_TOPIC_TASKS);
}

Test(wire_topic, topic_max_fits_the_longest_topic)
{
	char id64[WIRE_ID_MAX + 1], buf[WIRE_TOPIC_MAX];
	memset(id64, 'q', WIRE_ID_MAX);
	id64[WIRE_ID_MAX] = '\0';
	for (int t = 0; t < WIRE_TOPIC_COUNT; t++)
		cr_expect_eq(wire_topic_build(buf, sizeof(buf), (enum wire_topic)t, id64), WIRE_OK,
			     "%s", all_suffixes[t]);
}
