/* wire_env.h - the signed Envelope every Outpost message travels in: seal, decode, verify. */
#ifndef WIRE_ENV_H
#define WIRE_ENV_H

#include <stddef.h>
#include <stdint.h>

#include "wire_err.h"
#include "wire_limits.h"
#include "wire_sign.h"

/* Values of outpost.Kind. Part of the signed input: append only. */
enum wire_kind {
	WIRE_KIND_BIRTH = 1,
	WIRE_KIND_BATCH = 2,
	WIRE_KIND_TASK_POLL = 3,
	WIRE_KIND_TASK_RESULT = 4,
	WIRE_KIND_ACK = 5,
	WIRE_KIND_TASK_LIST = 6,
};
#define WIRE_KIND_MAX 6

/* Short lowercase name of a kind ("batch"), "unknown" otherwise. */
const char *wire_kind_name(uint32_t kind);

/* 1 for kinds a device signs, 0 for kinds the bridge signs. */
int wire_kind_from_device(uint32_t kind);

/* A decoded envelope. Caller-allocated; `body` is borrowed from the buffer passed to
 * wire_env_decode and is valid only as long as that buffer. */
struct wire_env {
	uint32_t version;
	uint32_t kind;
	uint64_t seq;
	int64_t sent_at_ms;
	char device_id[WIRE_ID_MAX + 1];
	const uint8_t *body;
	size_t body_len;
	uint8_t sig[WIRE_SIG_LEN];
};

/* Parse an envelope without allocating. Checks: total size <= WIRE_MAX_ENVELOPE, version ==
 * WIRE_VERSION, known kind, device id rules (wire_topic.h), sig exactly 64 bytes, no repeated
 * or unknown fields (the envelope is the frame; bodies may grow). Does NOT verify the
 * signature. */
int wire_env_decode(const uint8_t *buf, size_t len, struct wire_env *out, struct wire_diag *diag);

/* Verify env->sig with pub over the signing input (wire_sign.h). WIRE_ESIG if wrong. */
int wire_env_verify(const struct wire_env *env, const struct wire_pubkey *pub);

/* Sign and encode. Uses version, kind, seq, sent_at_ms, device_id, body, body_len of `env`
 * (its sig is ignored; version 0 means WIRE_VERSION). On success *out is a malloc'd buffer of
 * *out_len bytes the caller frees. WIRE_ELIMIT if the result would exceed WIRE_MAX_ENVELOPE. */
int wire_env_seal(const struct wire_key *key, const struct wire_env *env, uint8_t **out,
		  size_t *out_len);

#endif
