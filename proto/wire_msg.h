/* wire_msg.h - decode and encode Envelope bodies (Birth, Ack, TaskPoll, TaskList, TaskResult,
 * and raw Batch) as protobuf-c messages, with every limit checked before allocation.
 * Batches have their own compact codec in wire_batch.h. */
#ifndef WIRE_MSG_H
#define WIRE_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "outpost.pb-c.h"
#include "wire_env.h"
#include "wire_err.h"

/* Decode a body of `kind` (enum wire_kind). Steps: scan the raw bytes against the limits of
 * wire_limits.h (nothing allocated yet), unpack with an allocation budget, then check the
 * rules protobuf cannot express (lengths that must be exact, ranges, uniqueness).
 * On success *out is owned by the caller: free it with wire_msg_free(). */
int wire_msg_decode(uint32_t kind, const uint8_t *body, size_t len, ProtobufCMessage **out,
		    struct wire_diag *diag);

/* Accepts NULL. Frees a message from wire_msg_decode (not one built by the caller). */
void wire_msg_free(void *msg);

/* Pack a caller-built message of `kind` and check that wire_msg_decode would accept it; an
 * encoder never produces what a decoder refuses. *out is malloc'd, caller frees. */
int wire_msg_pack(uint32_t kind, const ProtobufCMessage *msg, uint8_t **out, size_t *len,
		  struct wire_diag *diag);

/* 0 if name is a valid metric name: [A-Za-z0-9_.:/-]{1,WIRE_MAX_METRIC_NAME}. */
int wire_metric_name_check(const char *name);

/* Typed conveniences. */
static inline int wire_birth_decode(const uint8_t *b, size_t n, Outpost__Birth **out,
				    struct wire_diag *d)
{
	return wire_msg_decode(WIRE_KIND_BIRTH, b, n, (ProtobufCMessage **)out, d);
}
static inline int wire_ack_decode(const uint8_t *b, size_t n, Outpost__Ack **out,
				  struct wire_diag *d)
{
	return wire_msg_decode(WIRE_KIND_ACK, b, n, (ProtobufCMessage **)out, d);
}
static inline int wire_task_poll_decode(const uint8_t *b, size_t n, Outpost__TaskPoll **out,
					struct wire_diag *d)
{
	return wire_msg_decode(WIRE_KIND_TASK_POLL, b, n, (ProtobufCMessage **)out, d);
}
static inline int wire_task_list_decode(const uint8_t *b, size_t n, Outpost__TaskList **out,
					struct wire_diag *d)
{
	return wire_msg_decode(WIRE_KIND_TASK_LIST, b, n, (ProtobufCMessage **)out, d);
}
static inline int wire_task_result_decode(const uint8_t *b, size_t n, Outpost__TaskResult **out,
					  struct wire_diag *d)
{
	return wire_msg_decode(WIRE_KIND_TASK_RESULT, b, n, (ProtobufCMessage **)out, d);
}

#endif
