/* wire_env.c - Envelope sealing (protobuf-c pack) and zero-copy decoding. */
#include <stdlib.h>
#include <string.h>

#include "outpost.pb-c.h"
#include "wire_env.h"
#include "wire_internal.h"
#include "wire_topic.h"

static const char *const kind_names[] = {
	[WIRE_KIND_BIRTH] = "birth",	       [WIRE_KIND_BATCH] = "batch",
	[WIRE_KIND_TASK_POLL] = "task_poll",   [WIRE_KIND_TASK_RESULT] = "task_result",
	[WIRE_KIND_ACK] = "ack",	       [WIRE_KIND_TASK_LIST] = "task_list",
};

const char *wire_kind_name(uint32_t kind)
{
	if (kind == 0 || kind > WIRE_KIND_MAX)
		return "unknown";
	return kind_names[kind];
}

int wire_kind_from_device(uint32_t kind)
{
	return kind == WIRE_KIND_BIRTH || kind == WIRE_KIND_BATCH || kind == WIRE_KIND_TASK_POLL ||
	       kind == WIRE_KIND_TASK_RESULT;
}

enum { F_VERSION = 1, F_DEVICE_ID, F_SEQ, F_KIND, F_SENT_AT, F_BODY, F_SIG, F_COUNT };
static const char *const env_field[F_COUNT] = {"?",	"version", "device_id", "seq",
					      "kind", "sent_at_ms", "body",   "sig"};

int wire_env_decode(const uint8_t *buf, size_t len, struct wire_env *out, struct wire_diag *diag)
{
	struct wire__pb r = {buf, buf + len};
	struct wire_env e;
	unsigned seen = 0;
	int rc;

	if (!out || (!buf && len))
		return WIRE_EINVAL;
	if (len > WIRE_MAX_ENVELOPE)
		return wire__fail(diag, WIRE_ELIMIT, "Envelope: %zu bytes, limit %d", len,
				  WIRE_MAX_ENVELOPE);
	memset(&e, 0, sizeof(e));

	while (r.p < r.end) {
		uint32_t num, wt;
		uint64_t v = 0;
		const uint8_t *d = NULL;
		size_t n = 0;

		rc = wire__pb_tag(&r, &num, &wt);
		if (rc)
			return wire__fail(diag, rc, "Envelope: bad field tag");
		/* The envelope is the frame and must be exact: an unknown field would be a part of
		 * the message the signature does not cover. Extensions go in bodies. */
		if (num >= F_COUNT)
			return wire__fail(diag, WIRE_EMALFORMED, "Envelope: unknown field %u", num);
		if (seen & (1u << num))
			return wire__fail(diag, WIRE_EMALFORMED, "Envelope.%s: field repeated",
					  env_field[num]);
		seen |= 1u << num;
		int want_len = num == F_DEVICE_ID || num == F_BODY || num == F_SIG;
		if (wt != (want_len ? WIRE__WT_LEN : WIRE__WT_VARINT))
			return wire__fail(diag, WIRE_EMALFORMED, "Envelope.%s: wrong wire type %u",
					  env_field[num], wt);
		rc = want_len ? wire__pb_bytes(&r, &d, &n) : wire__pb_varint(&r, &v);
		if (rc)
			return wire__fail(diag, rc, "Envelope.%s: %s", env_field[num],
					  wire_strerror(rc));
		switch (num) {
		case F_VERSION:
			if (v != WIRE_VERSION)
				return wire__fail(diag, WIRE_EVERSION, "Envelope.version: %llu, expected %u",
						  (unsigned long long)v, WIRE_VERSION);
			e.version = (uint32_t)v;
			break;
		case F_DEVICE_ID:
			if (n > WIRE_ID_MAX)
				return wire__fail(diag, WIRE_ELIMIT, "Envelope.device_id: %zu bytes, limit %d",
						  n, WIRE_ID_MAX);
			memcpy(e.device_id, d, n);
			e.device_id[n] = '\0';
			if (wire_id_check_n(e.device_id, n))
				return wire__fail(diag, WIRE_EID,
						  "Envelope.device_id: not [A-Za-z0-9_-]{1,64}");
			break;
		case F_SEQ:
			e.seq = v;
			break;
		case F_KIND:
			if (v == 0 || v > WIRE_KIND_MAX)
				return wire__fail(diag, WIRE_EKIND, "Envelope.kind: unknown kind %llu",
						  (unsigned long long)v);
			e.kind = (uint32_t)v;
			break;
		case F_SENT_AT:
			e.sent_at_ms = (int64_t)v;
			break;
		case F_BODY:
			e.body = d;
			e.body_len = n;
			break;
		case F_SIG:
			if (n != WIRE_SIG_LEN)
				return wire__fail(diag, WIRE_EMALFORMED, "Envelope.sig: %zu bytes, expected %d",
						  n, WIRE_SIG_LEN);
			memcpy(e.sig, d, n);
			break;
		}
	}
	/* proto3 omits zero values, but version, device_id, kind and sig are never zero. */
	if (!(seen & (1u << F_VERSION)))
		return wire__fail(diag, WIRE_EVERSION, "Envelope.version: missing");
	if (!(seen & (1u << F_DEVICE_ID)))
		return wire__fail(diag, WIRE_EID, "Envelope.device_id: missing");
	if (!(seen & (1u << F_KIND)))
		return wire__fail(diag, WIRE_EKIND, "Envelope.kind: missing");
	if (!(seen & (1u << F_SIG)))
		return wire__fail(diag, WIRE_EMALFORMED, "Envelope.sig: missing");
	if (!e.body)
		e.body = (const uint8_t *)"";
	*out = e;
	return WIRE_OK;
}

int wire_env_verify(const struct wire_env *env, const struct wire_pubkey *pub)
{
	uint8_t hdr[WIRE_SIG_HEADER_MAX];
	if (!env || !pub)
		return WIRE_EINVAL;
	int n = wire_sig_header(hdr, env->version, env->device_id, env->seq, env->sent_at_ms,
				env->kind, env->body_len);
	if (n < 0)
		return n;
	return wire_verify_parts(pub, hdr, (size_t)n, env->body, env->body_len, env->sig);
}

int wire_env_seal(const struct wire_key *key, const struct wire_env *env, uint8_t **out,
		  size_t *out_len)
{
	uint8_t hdr[WIRE_SIG_HEADER_MAX], sig[WIRE_SIG_LEN];
	Outpost__Envelope m = OUTPOST__ENVELOPE__INIT;
	uint32_t version = env && env->version ? env->version : WIRE_VERSION;

	if (!key || !env || !out || !out_len || (!env->body && env->body_len))
		return WIRE_EINVAL;
	if (wire_id_check(env->device_id) || env->kind == 0 || env->kind > WIRE_KIND_MAX)
		return WIRE_EINVAL;
	if (env->body_len > WIRE_MAX_BODY)
		return WIRE_ELIMIT;
	int n = wire_sig_header(hdr, version, env->device_id, env->seq, env->sent_at_ms, env->kind,
				env->body_len);
	if (n < 0)
		return n;
	int rc = wire_sign_parts(key, hdr, (size_t)n, env->body, env->body_len, sig);
	if (rc)
		return rc;

	m.version = version;
	m.device_id = (char *)env->device_id;
	m.seq = env->seq;
	m.kind = (Outpost__Kind)env->kind;
	m.sent_at_ms = env->sent_at_ms;
	m.body.data = (uint8_t *)env->body;
	m.body.len = env->body_len;
	m.sig.data = sig;
	m.sig.len = sizeof(sig);
	size_t size = outpost__envelope__get_packed_size(&m);
	if (size > WIRE_MAX_ENVELOPE)
		return WIRE_ELIMIT;
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return WIRE_ENOMEM;
	outpost__envelope__pack(&m, buf);
	*out = buf;
	*out_len = size;
	return WIRE_OK;
}
