/* brg_reply.h - the bridge's signed answers: Ack and TaskList envelopes (PROTOCOL.md 4, 6). */
#ifndef BRG_REPLY_H
#define BRG_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "brg_commit.h"
#include "wire_sign.h"
#include "wire_topic.h"

/* Build, sign with key and encode the envelope answering r (ACK: device_id = the device,
 * seq = Ack.upto = the frontier; TASKS: seq = the poll's seq). *out is malloc'd, caller frees;
 * topic (WIRE_TOPIC_MAX bytes) receives where to publish. Returns a wire_err. */
int brg_reply_seal(const struct wire_key *key, const struct brg_reply *r, int64_t now_ms,
                   char *topic, uint8_t **out, size_t *len);

#endif
