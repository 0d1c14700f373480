/* wire_topic.h - identifier rules and the outpost/v1/<id>/... topic tree. */
#ifndef WIRE_TOPIC_H
#define WIRE_TOPIC_H

#include <stddef.h>

#include "wire_err.h"
#include "wire_limits.h"

#define WIRE_TOPIC_PREFIX "outpost/v1/"
#define WIRE_TOPIC_MAX (sizeof(WIRE_TOPIC_PREFIX) + WIRE_ID_MAX + 16)

/* Ids starting with this belong to infrastructure (outpost-bridge, outpost-operator), never
 * to a device. */
#define WIRE_RESERVED_PREFIX "outpost-"

enum wire_topic {
	WIRE_TOPIC_BIRTH,	 /* device -> bridge */
	WIRE_TOPIC_TELEMETRY,	 /* device -> bridge */
	WIRE_TOPIC_ACK,		 /* bridge -> device */
	WIRE_TOPIC_TASKS_POLL,	 /* device -> bridge */
	WIRE_TOPIC_TASKS,	 /* bridge -> device */
	WIRE_TOPIC_TASKS_RESULT, /* device -> bridge */
	WIRE_TOPIC_STATUS,	 /* device will, retained text */
};
#define WIRE_TOPIC_COUNT 7

/* 0 if id matches [A-Za-z0-9_-]{1,64}, else WIRE_EID. wire_id_check_n takes a length and
 * also refuses embedded NULs. */
int wire_id_check(const char *id);
int wire_id_check_n(const char *id, size_t len);

/* wire_id_check plus: not reserved for infrastructure (WIRE_RESERVED_PREFIX). */
int wire_device_id_check(const char *id);

/* The suffix after "outpost/v1/<id>/", e.g. "tasks/poll". */
const char *wire_topic_suffix(enum wire_topic t);

/* Write "outpost/v1/<id>/<suffix>" into buf. WIRE_EID for a bad id, WIRE_ELIMIT if cap is too
 * small, WIRE_EINVAL for an unknown topic. */
int wire_topic_build(char *buf, size_t cap, enum wire_topic t, const char *id);

/* Split an Outpost topic. On success id holds the NUL-terminated device id and *t the kind.
 * WIRE_ETOPIC for anything else: other prefixes, wildcards, extra or empty levels. */
int wire_topic_parse(const char *topic, size_t len, char id[WIRE_ID_MAX + 1],
		     enum wire_topic *t);

#endif
