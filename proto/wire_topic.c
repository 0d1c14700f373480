/* wire_topic.c - identifier validation and topic build/parse. */
#include <stdio.h>
#include <string.h>

#include "wire_topic.h"

static const char *const suffixes[WIRE_TOPIC_COUNT] = {
	[WIRE_TOPIC_BIRTH] = "birth",	       [WIRE_TOPIC_TELEMETRY] = "telemetry",
	[WIRE_TOPIC_ACK] = "ack",	       [WIRE_TOPIC_TASKS_POLL] = "tasks/poll",
	[WIRE_TOPIC_TASKS] = "tasks",	       [WIRE_TOPIC_TASKS_RESULT] = "tasks/result",
	[WIRE_TOPIC_STATUS] = "status",
};

static int id_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

int wire_id_check_n(const char *id, size_t len)
{
	if (!id || len == 0 || len > WIRE_ID_MAX)
		return WIRE_EID;
	for (size_t i = 0; i < len; i++)
		if (!id_char(id[i]))
			return WIRE_EID;
	return WIRE_OK;
}

int wire_id_check(const char *id)
{
	if (!id)
		return WIRE_EID;
	return wire_id_check_n(id, strnlen(id, WIRE_ID_MAX + 1));
}

int wire_device_id_check(const char *id)
{
	int rc = wire_id_check(id);
	if (rc)
		return rc;
	if (!strncmp(id, WIRE_RESERVED_PREFIX, sizeof(WIRE_RESERVED_PREFIX) - 1))
		return WIRE_EID;
	return WIRE_OK;
}

const char *wire_topic_suffix(enum wire_topic t)
{
	if ((unsigned)t >= WIRE_TOPIC_COUNT)
		return NULL;
	return suffixes[t];
}

int wire_topic_build(char *buf, size_t cap, enum wire_topic t, const char *id)
{
	const char *suffix = wire_topic_suffix(t);
	if (!buf || !suffix)
		return WIRE_EINVAL;
	if (wire_id_check(id))
		return WIRE_EID;
	int n = snprintf(buf, cap, WIRE_TOPIC_PREFIX "%s/%s", id, suffix);
	if (n < 0 || (size_t)n >= cap)
		return WIRE_ELIMIT;
	return WIRE_OK;
}

int wire_topic_parse(const char *topic, size_t len, char id[WIRE_ID_MAX + 1],
		     enum wire_topic *t)
{
	const size_t plen = sizeof(WIRE_TOPIC_PREFIX) - 1;
	if (!topic || !id || !t || len <= plen || memcmp(topic, WIRE_TOPIC_PREFIX, plen))
		return WIRE_ETOPIC;
	const char *p = topic + plen, *end = topic + len;
	const char *slash = memchr(p, '/', (size_t)(end - p));
	if (!slash || wire_id_check_n(p, (size_t)(slash - p)))
		return WIRE_ETOPIC;
	size_t id_len = (size_t)(slash - p);
	const char *rest = slash + 1;
	size_t rest_len = (size_t)(end - rest);
	for (int i = 0; i < WIRE_TOPIC_COUNT; i++) {
		if (strlen(suffixes[i]) == rest_len && !memcmp(rest, suffixes[i], rest_len)) {
			memcpy(id, p, id_len);
			id[id_len] = '\0';
			*t = (enum wire_topic)i;
			return WIRE_OK;
		}
	}
	return WIRE_ETOPIC;
}
